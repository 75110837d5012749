/**
 * JSON schema → grammar IR: the reference matcher accepts valid instance texts and rejects invalid
 * ones; seeded random walks through each grammar always end in text that JSON.parse accepts and
 * that ajv (the oracle) and validateJsonSchema both validate; patterns agree with RegExp; unsupported
 * schemas throw UnsupportedSchemaError naming keyword and pointer; validateJsonSchema agrees with
 * ajv; the flat encoding round-trips.
 */
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { describe, expect, it } from 'vitest';
import {
  GrammarError,
  ReferenceMatcher,
  UnsupportedSchemaError,
  checkGrammar,
  compileJsonSchema,
  encodeGrammar,
  jsonObjectGrammar,
  validateJsonSchema,
  type GrammarElement,
  type GrammarIR,
} from '../lib/grammar/index.js';
import { Prng } from './helpers/prng.js';

const addFormats = addFormatsModule.default;
const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function makeAjv(): Ajv2020 {
  const ajv = new Ajv2020({ strict: false, allErrors: false });
  addFormats(ajv);
  return ajv;
}
const ajv = makeAjv();

/** Whether the grammar accepts `text` completely. */
function accepts(ir: GrammarIR, text: string | Uint8Array): boolean {
  const m = new ReferenceMatcher(ir);
  return m.acceptBytes(typeof text === 'string' ? utf8.encode(text) : text) && m.isComplete();
}

/** Byte groups for random walks: each ASCII punctuation byte alone, then digits, letters, other ASCII, non-ASCII. */
function byteGroup(b: number): string {
  if (b >= 0x30 && b <= 0x39) return 'digit';
  if ((b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)) return 'letter';
  if (b >= 0x20 && b < 0x7f) return `p${b}`;
  return b < 0x80 ? 'ascii' : 'high';
}

const CLOSERS = new Set([0x5d, 0x7d]);

/**
 * A random sentence of the grammar: from the start, pick an allowed byte (a byte group uniformly,
 * then a byte in it) until complete. Each walk has a random target length up to `maxTarget`:
 * before it, closing brackets are mostly avoided (so containers fill up and recursion goes deep)
 * and a complete input is ended with probability 0.3; after it, the walk mostly picks the byte
 * that leaves the fewest bytes to completion and stops as soon as it can, so every walk ends (this
 * also finds the needle of an unanchored pattern such as `ab+c`).
 */
function randomWalk(ir: GrammarIR, prng: Prng, maxTarget = 400): Uint8Array {
  const target = Math.round(16 * (maxTarget / 16) ** prng.next());
  const m = new ReferenceMatcher(ir);
  const out: number[] = [];
  for (;;) {
    const allowed = m.allowedBytes();
    const long = out.length >= target;
    if (m.isComplete() && (allowed.length === 0 || long || prng.next() < 0.3)) break;
    if (allowed.length === 0) throw new Error(`dead end after ${JSON.stringify(Buffer.from(out).toString())}`);
    let choices = allowed;
    if (!long && prng.next() < 0.75) {
      const open = allowed.filter((b) => !CLOSERS.has(b));
      if (open.length > 0) choices = open;
    }
    const groups = new Map<string, number[]>();
    for (const b of choices) {
      const g = byteGroup(b);
      groups.set(g, [...(groups.get(g) ?? []), b]);
    }
    const group = [...groups.values()][prng.int(groups.size)]!;
    let b = group[prng.int(group.length)]!;
    if (long && prng.next() < 0.8) {
      let best = Infinity;
      for (const c of allowed) {
        const next = m.clone();
        next.acceptByte(c);
        const left = next.minBytesToComplete();
        if (left < best) [best, b] = [left, c];
      }
    }
    if (!m.acceptByte(b)) throw new Error(`allowed byte ${b} was refused`);
    out.push(b);
    if (out.length > 100_000) throw new Error('walk did not end');
  }
  return Uint8Array.from(out);
}

/** A structural signature of a value: types, object keys, array lengths. */
function shape(v: unknown): string {
  if (v === null) return 'n';
  if (Array.isArray(v)) return `[${v.map(shape).join(',')}]`;
  if (typeof v === 'object') return `{${Object.entries(v as object).map(([k, x]) => `${k}:${shape(x)}`).join(',')}}`;
  if (typeof v === 'number') return Number.isInteger(v) ? 'i' : 'f';
  return (typeof v)[0]!;
}

function depth(v: unknown): number {
  if (Array.isArray(v)) return 1 + Math.max(0, ...v.map(depth));
  if (typeof v === 'object' && v !== null) return 1 + Math.max(0, ...Object.values(v).map(depth));
  return 0;
}

interface Case {
  name: string;
  schema: Record<string, unknown> | boolean;
  /** Texts the grammar accepts (and ajv validates). */
  valid: string[];
  /** Texts the grammar rejects; when they parse, ajv rejects them too (they are invalid instances). */
  invalid: string[];
  /** Valid instances that the grammar rejects by design (output format: whitespace, order, number forms). */
  rejected?: string[];
  /** Minimum number of distinct value shapes among the random walks. */
  shapes: number;
  /** Extra checks on the walks' values (deep branches reached, every alternative taken). */
  coverage?: (values: unknown[]) => void;
}

const NODE = {
  type: 'object',
  properties: {
    value: { type: 'integer' },
    children: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 3 },
  },
  required: ['value'],
  additionalProperties: false,
};

const CASES: Case[] = [
  {
    name: 'flat object',
    schema: {
      type: 'object',
      title: 'Person',
      properties: {
        name: { type: 'string', description: 'full name' },
        age: { type: 'integer' },
        score: { type: 'number' },
        active: { type: 'boolean' },
        note: { type: 'null' },
      },
      required: ['name', 'age'],
      additionalProperties: false,
    },
    valid: [
      '{"name":"Ann","age":31}',
      '{"name": "Bob", "age": -2, "score": 1.5e3, "active": true, "note": null}',
      '{"name":"","age":0,"score":-0.25}',
      '{"name":"\\u00e9\\n\\"\\/","age":7,"active":false}',
      '{"name":"日本😀","age":1234567890123456,"score":123456789012345.123456789012345E-293}',
    ],
    invalid: [
      '{"name":"Ann"}',
      '{"age":1}',
      '{"name":"A","age":1.5}',
      '{"name":"A","age":1,"extra":1}',
      '{"name":"A","age":01}',
      '{"name":"A","age":1,}',
      '{"name":"A","age":"1"}',
      '{"name":"A","age":1,"note":0}',
    ],
    rejected: [
      // Integers are written without fraction or exponent.
      '{"name":"A","age":1.0}',
      '{"name":"A","age":1e2}',
      // Whitespace other than one space after ':' and ',':
      ' {"name":"A","age":1}',
      '{"name":"A",  "age":1}',
      '{"name" :"A","age":1}',
      '{"name":"A","age":1}\n',
      '{ "name":"A","age":1}',
      // Properties come in declared order:
      '{"age":1,"name":"A"}',
    ],
    shapes: 10,
  },
  {
    name: 'nested order',
    schema: {
      type: 'object',
      properties: {
        id: { type: 'integer', minimum: 1 },
        customer: {
          type: 'object',
          properties: { name: { type: 'string', minLength: 1, maxLength: 20 }, vip: { type: 'boolean' } },
          required: ['name'],
          additionalProperties: false,
        },
        lines: {
          type: 'array',
          minItems: 1,
          maxItems: 4,
          items: {
            type: 'object',
            properties: { sku: { type: 'string', pattern: '^[A-Z]{2}-\\d{3}$' }, qty: { type: 'integer', minimum: 1, maximum: 99 } },
            required: ['sku', 'qty'],
            additionalProperties: false,
          },
        },
        tags: { type: 'array', items: { type: 'string', enum: ['new', 'gift', 'rush'] }, maxItems: 3 },
      },
      required: ['id', 'customer', 'lines'],
      additionalProperties: false,
    },
    valid: [
      '{"id":1,"customer":{"name":"Z"},"lines":[{"sku":"AB-123","qty":99}]}',
      '{"id": 42, "customer": {"name": "Zoë", "vip": true}, "lines": [{"sku": "XY-000", "qty": 1}, {"sku":"QQ-999","qty":50}], "tags": ["gift", "rush"]}',
      '{"id":9007199254740991,"customer":{"name":"aaaaaaaaaaaaaaaaaaaa"},"lines":[{"sku":"AA-111","qty":2}],"tags":[]}',
    ],
    invalid: [
      '{"id":0,"customer":{"name":"Z"},"lines":[{"sku":"AB-123","qty":1}]}',
      '{"id":1,"customer":{"name":"Z"},"lines":[]}',
      '{"id":1,"customer":{"name":"Z"},"lines":[{"sku":"AB-123","qty":1},{"sku":"AB-123","qty":1},{"sku":"AB-123","qty":1},{"sku":"AB-123","qty":1},{"sku":"AB-123","qty":1}]}',
      '{"id":1,"customer":{"name":"Z"},"lines":[{"sku":"AB-123","qty":100}]}',
      '{"id":1,"customer":{"name":"Z"},"lines":[{"sku":"ab-123","qty":1}]}',
      '{"id":1,"customer":{"name":"Z"},"lines":[{"sku":"AB-123","qty":1}],"tags":["old"]}',
      '{"id":1,"customer":{"name":""},"lines":[{"sku":"AB-123","qty":1}]}',
      '{"id":1,"customer":{"name":"aaaaaaaaaaaaaaaaaaaaa"},"lines":[{"sku":"AB-123","qty":1}]}',
      '{"id":1,"customer":{"name":"Z","age":3},"lines":[{"sku":"AB-123","qty":1}]}',
      '{"id":1,"lines":[{"sku":"AB-123","qty":1}]}',
    ],
    shapes: 20,
    coverage: (values) => {
      const counts = new Set(values.map((v) => (v as { lines: unknown[] }).lines.length));
      expect([...counts].sort()).toEqual([1, 2, 3, 4]);
    },
  },
  {
    name: 'recursive tree ($defs)',
    schema: { $ref: '#/$defs/node', $defs: { node: NODE } },
    valid: ['{"value":1}', '{"value":1,"children":[{"value":2,"children":[{"value":3,"children":[]}]},{"value":-4}]}'],
    invalid: ['{"value":1,"children":[{}]}', '{"value":1,"children":[{"value":1},{"value":1},{"value":1},{"value":1}]}', '{"children":[]}'],
    shapes: 50,
    coverage: (values) => expect(Math.max(...values.map(depth))).toBeGreaterThanOrEqual(7),
  },
  {
    name: "recursive list ('#')",
    schema: {
      type: 'object',
      properties: { head: { type: 'string', maxLength: 5 }, tail: { anyOf: [{ $ref: '#' }, { type: 'null' }] } },
      required: ['head', 'tail'],
      additionalProperties: false,
    },
    valid: ['{"head":"a","tail":null}', '{"head":"a","tail":{"head":"bcdef","tail":{"head":"","tail":null}}}'],
    invalid: ['{"head":"a"}', '{"head":"abcdef","tail":null}', '{"head":"a","tail":{"head":"b"}}', '{"head":"a","tail":1}'],
    shapes: 6,
    coverage: (values) => expect(Math.max(...values.map(depth))).toBeGreaterThanOrEqual(4),
  },
  {
    name: 'unions (oneOf, anyOf, type arrays)',
    schema: {
      type: 'object',
      properties: {
        shape: {
          oneOf: [
            { type: 'object', properties: { kind: { const: 'circle' }, r: { type: 'number' } }, required: ['kind', 'r'], additionalProperties: false },
            {
              type: 'object',
              properties: { kind: { const: 'rect' }, w: { type: 'number' }, h: { type: 'number' } },
              required: ['kind', 'w', 'h'],
              additionalProperties: false,
            },
          ],
        },
        label: { type: ['string', 'null'], maxLength: 8 },
        value: { anyOf: [{ type: 'integer', minimum: 0, maximum: 9 }, { type: 'boolean' }, { type: 'string', format: 'date' }] },
      },
      required: ['shape', 'label'],
      additionalProperties: false,
    },
    valid: [
      '{"shape":{"kind":"circle","r":1.5},"label":null}',
      '{"shape": {"kind": "rect", "w": 1, "h": 2e-3}, "label": "12345678", "value": 9}',
      '{"shape":{"kind":"rect","w":1,"h":2},"label":"x","value":"2000-02-28"}',
      '{"shape":{"kind":"circle","r":0},"label":"","value":false}',
    ],
    invalid: [
      '{"shape":{"kind":"circle","w":1,"h":2},"label":null}',
      '{"shape":{"kind":"square","r":1},"label":null}',
      '{"shape":{"kind":"circle","r":1},"label":"123456789"}',
      '{"shape":{"kind":"circle","r":1},"label":null,"value":10}',
      '{"shape":{"kind":"circle","r":1},"label":null,"value":"2000-02-30"}',
      '{"shape":{"kind":"circle","r":1},"label":1}',
    ],
    shapes: 25,
    coverage: (values) => {
      const kinds = new Set(values.map((v) => (v as { shape: { kind: string } }).shape.kind));
      expect(kinds).toEqual(new Set(['circle', 'rect']));
      const valueTypes = new Set(values.map((v) => typeof (v as { value?: unknown }).value));
      expect(valueTypes).toEqual(new Set(['undefined', 'number', 'boolean', 'string']));
    },
  },
  {
    name: 'patterns',
    schema: {
      type: 'object',
      properties: {
        code: { type: 'string', pattern: '^[A-Z]{3}-\\d{2,4}$' },
        word: { type: 'string', pattern: 'ab+c' },
        alt: { type: 'string', pattern: '^(foo|bar)baz?$' },
        mail: { type: 'string', pattern: '^\\w+@\\w+\\.(?:com|org)$' },
        quoted: { type: 'string', pattern: '^["\\\\/]{1,3}$' },
        dot: { type: 'string', pattern: '^.{2,3}$' },
        neg: { type: 'string', pattern: '^[^a-z\\s]+$' },
        greek: { type: 'string', pattern: '^[α-ω]+ü?$' },
        edge: { type: 'string', pattern: '(^x$|^y)' },
      },
      required: ['code', 'word', 'alt', 'mail', 'quoted', 'dot', 'neg', 'greek', 'edge'],
      additionalProperties: false,
    },
    valid: [
      '{"code":"ABC-12","word":"xxabbbcyy","alt":"fooba","mail":"a_1@b.com","quoted":"\\"","dot":"é😀","neg":"ABC123","greek":"αω","edge":"x"}',
      '{"code":"XYZ-1234","word":"abc","alt":"barbaz","mail":"z@q.org","quoted":"\\\\/\\"","dot":"\\t\\u0041b","neg":"\\u00e9!","greek":"βü","edge":"y anything\\n"}',
    ],
    invalid: [
      '{"code":"AB-12","word":"abc","alt":"fooba","mail":"a@b.com","quoted":"/","dot":"ab","neg":"A","greek":"α","edge":"x"}',
      '{"code":"ABC-12","word":"ac","alt":"fooba","mail":"a@b.com","quoted":"/","dot":"ab","neg":"A","greek":"α","edge":"x"}',
      '{"code":"ABC-12","word":"abc","alt":"foobazz","mail":"a@b.com","quoted":"/","dot":"ab","neg":"A","greek":"α","edge":"x"}',
      '{"code":"ABC-12","word":"abc","alt":"fooba","mail":"a@b.net","quoted":"/","dot":"ab","neg":"A","greek":"α","edge":"x"}',
      '{"code":"ABC-12","word":"abc","alt":"fooba","mail":"a@b.com","quoted":"x","dot":"ab","neg":"A","greek":"α","edge":"x"}',
      '{"code":"ABC-12","word":"abc","alt":"fooba","mail":"a@b.com","quoted":"/","dot":"a\\n","neg":"A","greek":"α","edge":"x"}',
      '{"code":"ABC-12","word":"abc","alt":"fooba","mail":"a@b.com","quoted":"/","dot":"ab","neg":"A b","greek":"α","edge":"x"}',
      '{"code":"ABC-12","word":"abc","alt":"fooba","mail":"a@b.com","quoted":"/","dot":"ab","neg":"A","greek":"αa","edge":"x"}',
      '{"code":"ABC-12","word":"abc","alt":"fooba","mail":"a@b.com","quoted":"/","dot":"ab","neg":"A","greek":"α","edge":"xx"}',
    ],
    shapes: 1,
  },
  {
    name: 'formats',
    schema: {
      type: 'object',
      properties: {
        d: { type: 'string', format: 'date' },
        dt: { format: 'date-time' },
        t: { type: 'string', format: 'time' },
        id: { type: 'string', format: 'uuid' },
      },
      required: ['d', 'dt', 't', 'id'],
      additionalProperties: false,
    },
    valid: [
      '{"d":"2024-02-28","dt":"1999-12-28T23:59:59.123456+05:30","t":"00:00:00Z","id":"123e4567-E89B-12d3-a456-426614174000"}',
      '{"d":"0000-01-01","dt":"2020-06-15T12:00:00Z","t":"23:59:59.5-23:59","id":"ffffffff-ffff-ffff-ffff-ffffffffffff"}',
    ],
    invalid: [
      '{"d":"2024-02-30","dt":"2020-06-15T12:00:00Z","t":"00:00:00Z","id":"123e4567-e89b-12d3-a456-426614174000"}',
      '{"d":"2024-13-01","dt":"2020-06-15T12:00:00Z","t":"00:00:00Z","id":"123e4567-e89b-12d3-a456-426614174000"}',
      '{"d":"2024-1-01","dt":"2020-06-15T12:00:00Z","t":"00:00:00Z","id":"123e4567-e89b-12d3-a456-426614174000"}',
      '{"d":"2024-01-01","dt":"2020-06-15T24:00:00Z","t":"00:00:00Z","id":"123e4567-e89b-12d3-a456-426614174000"}',
      '{"d":"2024-01-01","dt":"2020-06-15T12:00:00Z","t":"12:00:00","id":"123e4567-e89b-12d3-a456-426614174000"}',
      '{"d":"2024-01-01","dt":"2020-06-15T12:00:00Z","t":"12:60:00Z","id":"123e4567-e89b-12d3-a456-426614174000"}',
      '{"d":"2024-01-01","dt":"2020-06-15T12:00:00Z","t":"12:00:00Z","id":"123e4567-e89b-12d3-a456-42661417400g"}',
      '{"d":"2024-01-01","dt":"2020-06-15","t":"12:00:00Z","id":"123e4567-e89b-12d3-a456-426614174000"}',
    ],
    shapes: 1,
  },
  {
    name: 'enums and consts',
    schema: {
      type: 'object',
      properties: {
        s: { enum: ['a"b', 'é', 'x\\y', '\n', 'plain'] },
        m: { enum: [1, '1', null, { a: [1, 2] }, [true], 2.5] },
        c: { const: { k: 'v', n: [null] } },
        t: { type: 'string', enum: ['x', 1, 'y'] },
      },
      required: ['s', 'm', 'c', 't'],
      additionalProperties: false,
    },
    valid: [
      '{"s":"a\\"b","m":{"a":[1,2]},"c":{"k":"v","n":[null]},"t":"y"}',
      '{"s": "\\n", "m": 2.5, "c": {"k":"v","n":[null]}, "t": "x"}',
      '{"s":"é","m":null,"c":{"k":"v","n":[null]},"t":"x"}',
    ],
    invalid: [
      '{"s":"a\\"b","m":1,"c":{"k":"v","n":[null]},"t":1}',
      '{"s":"other","m":1,"c":{"k":"v","n":[null]},"t":"x"}',
      '{"s":"plain","m":{"a":[1,2,3]},"c":{"k":"v","n":[null]},"t":"x"}',
      '{"s":"plain","m":1,"c":{"k":"w","n":[null]},"t":"x"}',
      '{"s":"plain","m":true,"c":{"k":"v","n":[null]},"t":"x"}',
    ],
    shapes: 6,
    coverage: (values) => {
      const seen = (k: string) => new Set(values.map((v) => JSON.stringify((v as Record<string, unknown>)[k]))).size;
      expect(seen('s')).toBe(5);
      expect(seen('m')).toBe(6);
      expect(seen('t')).toBe(2);
    },
  },
  {
    name: 'tuples',
    schema: {
      type: 'object',
      properties: {
        point: { type: 'array', prefixItems: [{ type: 'number' }, { type: 'number' }, { type: 'string', maxLength: 4 }], items: false, minItems: 2 },
        row: { type: 'array', prefixItems: [{ type: 'string', format: 'uuid' }, { type: 'boolean' }], items: { type: 'integer' }, minItems: 1, maxItems: 5 },
        head: { type: 'array', prefixItems: [{ const: 'x' }], minItems: 2, maxItems: 3 },
      },
      required: ['point', 'row', 'head'],
      additionalProperties: false,
    },
    valid: [
      '{"point":[1,2],"row":["123e4567-e89b-12d3-a456-426614174000"],"head":["x",{"any":[1]}]}',
      '{"point":[1.5, -2, "abcd"],"row":["123e4567-e89b-12d3-a456-426614174000",true,1,2,3],"head":["x",null,"z"]}',
    ],
    invalid: [
      '{"point":[1],"row":["123e4567-e89b-12d3-a456-426614174000"],"head":["x",1]}',
      '{"point":[1,2,"a",4],"row":["123e4567-e89b-12d3-a456-426614174000"],"head":["x",1]}',
      '{"point":[1,2,"abcde"],"row":["123e4567-e89b-12d3-a456-426614174000"],"head":["x",1]}',
      '{"point":[1,2],"row":[],"head":["x",1]}',
      '{"point":[1,2],"row":["123e4567-e89b-12d3-a456-426614174000",true,1,2,3,4],"head":["x",1]}',
      '{"point":[1,2],"row":["123e4567-e89b-12d3-a456-426614174000",1],"head":["x",1]}',
      '{"point":[1,2],"row":["123e4567-e89b-12d3-a456-426614174000",true,1.5],"head":["x",1]}',
      '{"point":[1,2],"row":["123e4567-e89b-12d3-a456-426614174000"],"head":["y",1]}',
      '{"point":[1,2],"row":["123e4567-e89b-12d3-a456-426614174000"],"head":["x"]}',
    ],
    shapes: 60,
    coverage: (values) => {
      const lengths = (k: string) => new Set(values.map((v) => ((v as Record<string, unknown[]>)[k] ?? []).length));
      expect(lengths('point')).toEqual(new Set([2, 3]));
      expect(lengths('row')).toEqual(new Set([1, 2, 3, 4, 5]));
      expect(lengths('head')).toEqual(new Set([2, 3]));
    },
  },
  {
    name: 'maps',
    schema: {
      type: 'object',
      properties: {
        counts: { type: 'object', additionalProperties: { type: 'integer', minimum: 0 } },
        env: { type: 'object', additionalProperties: { type: 'string', maxLength: 10 }, required: ['PATH'] },
        free: { type: 'object' },
        none: { type: 'object', additionalProperties: false },
      },
      required: ['counts', 'env', 'free', 'none'],
      additionalProperties: false,
    },
    valid: [
      '{"counts":{},"env":{"PATH":"/bin"},"free":{},"none":{}}',
      '{"counts":{"a":1, "b":2,"":0},"env":{"PATH":"/bin","HOME":"/root"},"free":{"x":[1,{"y":null}],"z":"é"},"none":{}}',
    ],
    invalid: [
      '{"counts":{"a":-1},"env":{"PATH":"/bin"},"free":{},"none":{}}',
      '{"counts":{"a":"1"},"env":{"PATH":"/bin"},"free":{},"none":{}}',
      '{"counts":{},"env":{},"free":{},"none":{}}',
      '{"counts":{},"env":{"PATH":"/usr/local/bin"},"free":{},"none":{}}',
      '{"counts":{},"env":{"PATH":"/bin"},"free":[],"none":{}}',
      '{"counts":{},"env":{"PATH":"/bin"},"free":{},"none":{"a":1}}',
    ],
    shapes: 120,
  },
  {
    name: 'integer ranges',
    schema: {
      type: 'object',
      properties: {
        temp: { type: 'integer', minimum: -40, maximum: 125 },
        pct: { exclusiveMinimum: 0, exclusiveMaximum: 100 },
        big: { type: 'integer', minimum: 1000000 },
        neg: { type: 'integer', maximum: -10, minimum: -1000 },
        frac: { type: 'integer', minimum: 0.5, maximum: 3.7 },
      },
      required: ['temp', 'pct', 'big', 'neg', 'frac'],
      additionalProperties: false,
    },
    valid: [
      '{"temp":-40,"pct":1,"big":1000000,"neg":-10,"frac":1}',
      '{"temp":125,"pct":99,"big":9007199254740991,"neg":-1000,"frac":3}',
      '{"temp":0,"pct":50,"big":1234567,"neg":-999,"frac":2}',
    ],
    invalid: [
      '{"temp":-41,"pct":1,"big":1000000,"neg":-10,"frac":1}',
      '{"temp":126,"pct":1,"big":1000000,"neg":-10,"frac":1}',
      '{"temp":0,"pct":0,"big":1000000,"neg":-10,"frac":1}',
      '{"temp":0,"pct":100,"big":1000000,"neg":-10,"frac":1}',
      '{"temp":0,"pct":1,"big":999999,"neg":-10,"frac":1}',
      '{"temp":0,"pct":1,"big":1000000,"neg":-9,"frac":1}',
      '{"temp":0,"pct":1,"big":1000000,"neg":-1001,"frac":1}',
      '{"temp":0,"pct":1,"big":1000000,"neg":-10,"frac":0}',
      '{"temp":0,"pct":1,"big":1000000,"neg":-10,"frac":4}',
      '{"temp":1.5,"pct":1,"big":1000000,"neg":-10,"frac":1}',
    ],
    shapes: 1,
    coverage: (values) => {
      const temps = values.map((v) => (v as { temp: number }).temp);
      expect(Math.min(...temps)).toBeLessThan(0);
      expect(Math.max(...temps)).toBeGreaterThanOrEqual(50);
    },
  },
  {
    name: 'string lengths',
    schema: {
      type: 'object',
      properties: {
        short: { type: 'string', minLength: 2, maxLength: 5 },
        exact: { type: 'string', minLength: 3, maxLength: 3 },
        long: { type: 'string', minLength: 6 },
      },
      required: ['short', 'exact', 'long'],
    },
    valid: [
      '{"short":"é😀","exact":"abc","long":"abcdef"}',
      '{"short":"\\n\\u00e9","exact":"\\"\\\\/","long":"\\u0000\\u001f\\t\\b\\f\\r"}',
      '{"short":"ab\\uFFFF","exact":"日本語","long":"😀😀😀😀😀😀😀"}',
    ],
    invalid: [
      '{"short":"a","exact":"abc","long":"abcdef"}',
      '{"short":"abcdef","exact":"abc","long":"abcdef"}',
      '{"short":"ab","exact":"abcd","long":"abcdef"}',
      '{"short":"ab","exact":"abc","long":"abcde"}',
    ],
    shapes: 1,
  },
  {
    name: 'type arrays with keywords',
    schema: { type: ['string', 'integer', 'null', 'array'], maxLength: 3, minimum: 0, maximum: 5, items: { type: 'boolean' }, maxItems: 2 },
    valid: ['"abc"', '0', '5', 'null', '[]', '[true, false]'],
    invalid: ['"abcd"', '6', '-1', '[true,true,true]', '[1]', 'true', '{}'],
    shapes: 6,
  },
  {
    name: 'definitions, escaped pointers, allOf',
    schema: {
      definitions: {
        'a/b': { type: 'string', enum: ['p', 'q'] },
        'c~d': { type: 'array', items: { $ref: '#/definitions/a~1b' }, maxItems: 2 },
      },
      type: 'object',
      properties: {
        x: { allOf: [{ $ref: '#/definitions/a~1b' }], description: 'pydantic style' },
        y: { $ref: '#/definitions/c~0d' },
        'we"ird\\\n/é': { type: 'boolean' },
      },
      required: ['x', 'y'],
      additionalProperties: false,
    },
    valid: ['{"x":"p","y":[]}', '{"x":"q","y":["p", "q"]}', '{"x":"p","y":[],"we\\"ird\\\\\\n/é":true}'],
    invalid: ['{"x":"r","y":[]}', '{"x":"p","y":["p","p","p"]}', '{"x":"p","y":[],"we\\"ird\\\\\\n/é":1}'],
    rejected: ['{"x":"p","y":[],"we\\"ird\\\\\\u000a/é":true}'],
    shapes: 6,
  },
  {
    name: 'any JSON value',
    schema: { description: 'anything' },
    valid: ['1', '"x"', 'null', '{"a": [1, {"b": false}], "c": "d"}', '[[], {}]', '-0.5E+10'],
    invalid: ['', '[1,]', '{"a"}', 'tru', '1.', '.5', '+1', '01', 'NaN', '"\\x"'],
    rejected: [' 1', '1e1000', '1e294', '1234567890123456.5', '[1 ,2]', '"\\uD83D\\uDE00"'],
    shapes: 50,
    coverage: (values) => {
      expect(new Set(values.map((v) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v)))).toEqual(
        new Set(['null', 'array', 'object', 'number', 'string', 'boolean']),
      );
      expect(Math.max(...values.map(depth))).toBeGreaterThanOrEqual(4);
    },
  },
];

/** Walk values per case, shared by the validator comparison. */
const walkValues = new Map<string, unknown[]>();

describe('JSON schema grammars', () => {
  for (const c of CASES) {
    describe(c.name, () => {
      const ir = compileJsonSchema(c.schema);
      const validate = ajv.compile(c.schema as object);

      it('accepts valid texts and rejects invalid ones', () => {
        checkGrammar(ir);
        for (const text of c.valid) {
          expect(validate(JSON.parse(text)), `ajv: ${text}`).toBe(true);
          expect(accepts(ir, text), text).toBe(true);
        }
        for (const text of c.invalid) {
          expect(accepts(ir, text), text).toBe(false);
          let value: unknown;
          try {
            value = JSON.parse(text);
          } catch {
            continue;
          }
          expect(validate(value), `ajv should reject ${text}`).toBe(false);
        }
        for (const text of c.rejected ?? []) {
          expect(accepts(ir, text), text).toBe(false);
          expect(validate(JSON.parse(text)), `ajv: ${text}`).toBe(true);
        }
      });

      it('random walks give JSON that ajv and validateJsonSchema accept', () => {
        const prng = new Prng(0x5eed + c.name.length);
        const values: unknown[] = [];
        for (let i = 0; i < 200; i++) {
          const bytes = randomWalk(ir, prng);
          const text = strictUtf8.decode(bytes);
          let value: unknown;
          expect(() => (value = JSON.parse(text)), text).not.toThrow();
          if (!validate(value)) throw new Error(`ajv rejects ${text}: ${JSON.stringify(validate.errors)}`);
          expect(validateJsonSchema(c.schema, value), text).toEqual([]);
          values.push(value);
        }
        walkValues.set(c.name, values);
        expect(new Set(values.map(shape)).size).toBeGreaterThanOrEqual(c.shapes);
        c.coverage?.(values);
      });
    });
  }

  it('jsonObjectGrammar: any JSON object', () => {
    const ir = jsonObjectGrammar();
    const isObject = ajv.compile({ type: 'object' });
    expect(accepts(ir, '{}')).toBe(true);
    expect(accepts(ir, '{"a": {"b": [1, "2", null, true]}, "a": 0}')).toBe(true);
    for (const text of ['[]', '1', '"x"', '{"a":1,}', '{ }', '{"a":1} ']) expect(accepts(ir, text), text).toBe(false);
    const prng = new Prng(7);
    const shapes = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const value = JSON.parse(strictUtf8.decode(randomWalk(ir, prng)));
      expect(isObject(value)).toBe(true);
      shapes.add(shape(value));
    }
    expect(shapes.size).toBeGreaterThan(100);
  });

  it('is deterministic, shares rules, and stays small', () => {
    const schema = CASES[1]!.schema;
    expect(compileJsonSchema(schema)).toEqual(compileJsonSchema(schema));
    // One rule for the string character whatever the number of string properties.
    const many = { type: 'object', properties: Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`p${i}`, { type: 'string' }])) };
    const few = { type: 'object', properties: { p0: { type: 'string' } } };
    expect(compileJsonSchema(many).rules.length - compileJsonSchema(few).rules.length).toBeLessThan(120);
    // Long bounds are chains shared between bounds.
    const long = compileJsonSchema({ type: 'object', properties: { a: { type: 'string', maxLength: 2000 }, b: { type: 'string', maxLength: 1500 } } });
    expect(long.rules.length).toBeLessThan(2100);
    expect(accepts(compileJsonSchema({ type: 'string', minLength: 300, maxLength: 300 }), JSON.stringify('é'.repeat(300)))).toBe(true);
  });
});

describe('string encoding', () => {
  const ir = compileJsonSchema({ type: 'string' });
  const raw = (bytes: number[]) => accepts(ir, Uint8Array.from([0x22, ...bytes, 0x22]));

  it('accepts each code point raw (when JSON allows) and as \\u escape (BMP, not surrogates)', () => {
    const sample: number[] = [0, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x7e, 0x7f, 0x80, 0x7ff, 0x800, 0xd7ff, 0xd800, 0xdbff, 0xdc00, 0xdfff, 0xe000, 0xfffd, 0xffff, 0x10000, 0x10ffff];
    for (let cp = 0; cp <= 0x10ffff; cp += 997) sample.push(cp);
    for (const cp of sample) {
      const surrogate = cp >= 0xd800 && cp <= 0xdfff;
      const rawAllowed = !surrogate && cp >= 0x20 && cp !== 0x22 && cp !== 0x5c;
      if (!surrogate) expect(raw([...utf8.encode(String.fromCodePoint(cp))]), cp.toString(16)).toBe(rawAllowed);
      if (cp <= 0xffff) {
        const hex = cp.toString(16).padStart(4, '0');
        expect(accepts(ir, `"\\u${hex}"`), hex).toBe(!surrogate);
        expect(accepts(ir, `"\\u${hex.toUpperCase()}"`), hex).toBe(!surrogate);
      }
    }
  });

  it('rejects invalid UTF-8: overlongs, surrogates, above U+10FFFF, stray bytes', () => {
    for (const bad of [[0xc0, 0x80], [0xc1, 0xbf], [0xe0, 0x80, 0x80], [0xe0, 0x9f, 0xbf], [0xed, 0xa0, 0x80], [0xed, 0xbf, 0xbf], [0xf0, 0x80, 0x80, 0x80], [0xf0, 0x8f, 0xbf, 0xbf], [0xf4, 0x90, 0x80, 0x80], [0xf5, 0x80, 0x80, 0x80], [0xff], [0x80], [0xc3], [0xe2, 0x82], [0x0a], [0x09]]) {
      expect(raw(bad), bad.map((b) => b.toString(16)).join(' ')).toBe(false);
    }
    for (const bad of ['"\\a"', '"\\x41"', '"\\u12"', '"\\uD83D\\uDE00"', '"\\\'"', '"\\U0041"']) expect(accepts(ir, bad), bad).toBe(false);
  });

  it('accepts exactly the byte sequences that decode to allowed code points (random sequences)', () => {
    const prng = new Prng(99);
    const leads = [0x00, 0x20, 0x22, 0x41, 0x5c, 0x7f, 0x80, 0xc0, 0xc2, 0xdf, 0xe0, 0xe1, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf4, 0xf5, 0xff];
    for (let i = 0; i < 3000; i++) {
      const n = 1 + prng.int(4);
      const bytes = [prng.next() < 0.5 ? leads[prng.int(leads.length)]! : prng.int(256)];
      for (let k = 1; k < n; k++) bytes.push(prng.next() < 0.7 ? 0x80 + prng.int(64) : prng.int(256));
      let expected = false;
      try {
        const s = strictUtf8.decode(Uint8Array.from(bytes));
        expected = [...s].every((ch) => ch.codePointAt(0)! >= 0x20 && ch !== '"' && ch !== '\\');
      } catch {
        expected = false;
      }
      expect(raw(bytes), bytes.map((b) => b.toString(16)).join(' ')).toBe(expected);
    }
  });
});

describe('patterns agree with RegExp (u flag)', () => {
  const PATTERNS = [
    '^[A-Z]{3}-\\d{2,4}$',
    'ab+c',
    '^(foo|bar)baz?$',
    '^.{2,3}$',
    '^[^a-z\\s]+$',
    '(^x$|^y)',
    'a|^b',
    '^(a|b)*c$',
    '^(a?b?)*$',
    '^(?:a{2}|b){1,3}$',
    'x$',
    '^$',
    '',
    '^[\\w.-]+$',
    '^\\S\\s\\S$',
    '^[\\-\\]a]+$',
    '^\\u00e9\\x41\\n$',
    '^[α-ω]+ü?$',
    '^😀.$',
    '^[^"\\\\]+$',
    '^["\\\\]$',
    '^(?<w>\\w+) (a|)+$',
    '^a{0}b$',
    '^\\d+(\\.\\d+)?$',
    '^[\\u0000-\\u001f]$',
    '\\/',
    '^[^\\n]$',
    '^[\\s\\S]$',
    '^.$',
    '^\\cJ\\t[\\b]$',
    '^a+?b*?$',
    '^\\u{1F600}\\uD83D\\uDE00$',
    '(?:^|-)ab(?:-|$)',
  ];
  const ALPHABET = Array.from('abcxyzfoAZ-12._ \n\r\t"\\/éüαω😀\u2028\u0000\u001f\u0008');

  /** JSON text of `s` with each BMP character randomly written as a \u escape instead. */
  function jsonText(s: string, prng: Prng): string {
    return `"${[...s]
      .map((ch) => {
        const cp = ch.codePointAt(0)!;
        if (cp <= 0xffff && prng.next() < 0.3) {
          const hex = cp.toString(16).padStart(4, '0');
          return `\\u${prng.next() < 0.5 ? hex : hex.toUpperCase()}`;
        }
        return JSON.stringify(ch).slice(1, -1);
      })
      .join('')}"`;
  }

  for (const pattern of PATTERNS) {
    it(JSON.stringify(pattern), () => {
      const ir = compileJsonSchema({ type: 'string', pattern });
      const re = new RegExp(pattern, 'u');
      const prng = new Prng(pattern.length * 31 + 5);
      const samples: string[] = [];
      // Strings the grammar produces must match; their one-character edits test both directions.
      for (let i = 0; i < 60; i++) {
        const s = JSON.parse(strictUtf8.decode(randomWalk(ir, prng, 48))) as string;
        expect(re.test(s), JSON.stringify(s)).toBe(true);
        const chars = [...s];
        const at = prng.int(chars.length + 1);
        const ch = ALPHABET[prng.int(ALPHABET.length)]!;
        samples.push(s, [...chars.slice(0, at), ch, ...chars.slice(at)].join(''), [...chars.slice(0, at), ...chars.slice(at + 1)].join(''));
        if (chars.length > 0) samples.push([...chars.slice(0, at), ch, ...chars.slice(at + 1)].join(''));
      }
      for (let i = 0; i < 150; i++) samples.push(Array.from({ length: prng.int(6) }, () => ALPHABET[prng.int(ALPHABET.length)]).join(''));
      for (const s of samples) {
        expect(accepts(ir, jsonText(s, prng)), `${JSON.stringify(s)} vs ${pattern}`).toBe(re.test(s));
      }
    });
  }
});

describe('UnsupportedSchemaError', () => {
  const CASES_: [string, unknown, string, string][] = [
    ['not', { type: 'object', properties: { a: { not: { type: 'string' } } } }, 'not', '#/properties/a'],
    ['if/then/else', { if: { type: 'string' }, then: { minLength: 1 }, else: { type: 'null' } }, 'if', '#'],
    ['patternProperties', { type: 'object', patternProperties: { '^x': { type: 'string' } } }, 'patternProperties', '#'],
    ['dependentRequired', { type: 'object', properties: { a: { type: 'object', dependentRequired: { a: ['b'] } } } }, 'dependentRequired', '#/properties/a'],
    ['number minimum', { type: 'object', properties: { n: { type: 'number', minimum: 0 } } }, 'minimum', '#/properties/n'],
    ['number exclusiveMaximum', { type: ['number', 'null'], exclusiveMaximum: 3 }, 'exclusiveMaximum', '#'],
    ['lookahead pattern', { type: 'string', pattern: '^(?=a)b' }, 'pattern', '#'],
    ['negative lookbehind in $defs', { $defs: { x: { type: 'string', pattern: '(?<!a)b' } }, $ref: '#/$defs/x' }, 'pattern', '#/$defs/x'],
    ['backreference', { type: 'array', items: { type: 'string', pattern: '(a)\\1' } }, 'pattern', '#/items'],
    ['word boundary', { type: 'string', pattern: '\\bword' }, 'pattern', '#'],
    ['unicode property', { type: 'string', pattern: '^\\p{L}+$' }, 'pattern', '#'],
    ['anchor in the middle', { type: 'string', pattern: 'a^b' }, 'pattern', '#'],
    ['invalid regex', { type: 'string', pattern: '(' }, 'pattern', '#'],
    ['format email', { type: 'object', properties: { e: { type: 'string', format: 'email' } } }, 'format', '#/properties/e'],
    ['allOf with two', { allOf: [{ type: 'string' }, { minLength: 1 }] }, 'allOf', '#'],
    ['anyOf with siblings', { type: 'object', anyOf: [{ required: ['a'] }] }, 'anyOf', '#'],
    ['$ref with siblings', { $defs: { s: { type: 'string' } }, $ref: '#/$defs/s', maxLength: 3 }, '$ref', '#'],
    ['additionalProperties schema with properties', { type: 'object', properties: { a: { type: 'string' } }, additionalProperties: { type: 'string' } }, 'additionalProperties', '#'],
    ['items array', { type: 'array', items: [{ type: 'string' }] }, 'items', '#'],
    ['remote $ref', { $ref: 'https://example.com/s.json' }, '$ref', '#'],
    ['missing $ref', { type: 'object', properties: { a: { $ref: '#/$defs/missing' } } }, '$ref', '#/properties/a'],
    ['left recursion', { anyOf: [{ $ref: '#' }, { type: 'null' }] }, '$ref', '#'],
    ['false', false, 'false', '#'],
    ['required property false', { type: 'object', properties: { a: false }, required: ['a'] }, 'required', '#'],
    ['empty integer range', { type: 'object', properties: { n: { type: 'integer', minimum: 5, maximum: 4 } }, required: ['n'] }, 'minimum', '#/properties/n'],
    ['pattern with minLength', { type: 'string', minLength: 3, pattern: 'a' }, 'minLength', '#'],
    ['format with maxLength', { type: 'string', format: 'date', maxLength: 3 }, 'maxLength', '#'],
    ['huge maxLength', { type: 'string', maxLength: 1_000_000 }, 'maxLength', '#'],
    ['huge pattern repeat', { type: 'string', pattern: 'a{20000}' }, 'pattern', '#'],
    ['uniqueItems', { type: 'array', uniqueItems: true }, 'uniqueItems', '#'],
    ['unknown keyword', { type: 'object', properties: { a: { type: 'string', nullable: true } } }, 'nullable', '#/properties/a'],
    ['unknown type', { type: 'date' }, 'type', '#'],
    ['draft-4 exclusiveMinimum', { type: 'integer', minimum: 1, exclusiveMinimum: true }, 'exclusiveMinimum', '#'],
    ['enum matching nothing', { type: 'integer', enum: ['a', 1.5] }, 'enum', '#'],
    ['pointer escapes', { type: 'object', properties: { 'a/b~c': { multipleOf: 2 } } }, 'multipleOf', '#/properties/a~1b~0c'],
  ];
  for (const [name, schema, keyword, pointer] of CASES_) {
    it(name, () => {
      let error: unknown;
      try {
        compileJsonSchema(schema as never);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(UnsupportedSchemaError);
      const e = error as UnsupportedSchemaError;
      expect(e.keywords).toContain(keyword);
      expect(e.issues.some((i) => i.keyword === keyword && i.pointer === pointer), e.message).toBe(true);
      expect(e.message).toContain(`'${keyword}' at ${pointer}`);
      expect(e.code).toBe('NODE_MOE_UNSUPPORTED_SCHEMA');
    });
  }

  it('maxRepeat bounds the expansions', () => {
    expect(() => compileJsonSchema({ type: 'string', maxLength: 20 }, { maxRepeat: 10 })).toThrow(/'maxLength' at # \(20 is above the maxRepeat limit 10\)/);
    expect(() => compileJsonSchema({ type: 'array', minItems: 11 }, { maxRepeat: 10 })).toThrow(UnsupportedSchemaError);
    expect(accepts(compileJsonSchema({ type: 'string', pattern: '^a{10}$' }, { maxRepeat: 10 }), '"aaaaaaaaaa"')).toBe(true);
  });

  it('names every issue at once, before generating anything', () => {
    const schema = {
      type: 'object',
      properties: { a: { not: {} }, b: { type: 'number', maximum: 3 }, c: { type: 'string', format: 'uri' }, d: { $ref: '#/$defs/x' } },
      $defs: { x: { type: 'string', pattern: '(?=x)' } },
    };
    expect(() => compileJsonSchema(schema)).toThrow(
      /keyword 'not' at #\/properties\/a.*keyword 'maximum' at #\/properties\/b.*keyword 'format' at #\/properties\/c.*keyword 'pattern' at #\/\$defs\/x/,
    );
  });

  it('accepts annotations and unsupported keywords in unreferenced definitions', () => {
    const ir = compileJsonSchema({
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      $id: 'https://example.com/person',
      $comment: 'c',
      title: 't',
      description: 'd',
      examples: ['x'],
      default: 'x',
      deprecated: false,
      readOnly: false,
      writeOnly: false,
      $defs: { unused: { not: {} } },
      type: 'string',
    });
    expect(accepts(ir, '"x"')).toBe(true);
  });
});

describe('validateJsonSchema', () => {
  const KEYS = ['a', 'b', 'name', 'age', 'id', 'kind', 'value', 'children', 'head', 'tail', 'x', 'y', 'PATH', 'temp', 's', 'm', 'c', 't', 'point', 'row'];
  const STRINGS = ['', 'a', 'abc', 'circle', 'rect', 'p', 'q', 'x', 'é😀', '2024-02-29', '2023-02-29', '2000-02-30', '12:00:00Z', '23:59:60Z', '23:59:60+01:00', '2020-01-01T00:00:00Z', '2020-01-01t00:00:00.5-01:00', '123e4567-e89b-12d3-a456-426614174000', 'AB-123', 'ABC-12', 'a"b', 'new'];

  function randomValue(prng: Prng, depthLeft: number): unknown {
    const k = prng.int(depthLeft > 0 ? 8 : 5);
    switch (k) {
      case 0:
        return null;
      case 1:
        return prng.next() < 0.5;
      case 2:
        return prng.int(300) - 100;
      case 3:
        return Math.round((prng.next() * 200 - 100) * 4) / 4;
      case 4:
        return STRINGS[prng.int(STRINGS.length)];
      case 5:
      case 6: {
        const o: Record<string, unknown> = {};
        for (let i = prng.int(4); i > 0; i--) o[KEYS[prng.int(KEYS.length)]!] = randomValue(prng, depthLeft - 1);
        return o;
      }
      default:
        return Array.from({ length: prng.int(5) }, () => randomValue(prng, depthLeft - 1));
    }
  }

  /** One random edit somewhere in `v`: replace a part, add or drop a key or item, nudge a number or string. */
  function mutate(v: unknown, prng: Prng): unknown {
    if (prng.next() < 0.2) return randomValue(prng, 2);
    if (Array.isArray(v)) {
      const out = [...v];
      const r = prng.next();
      if (out.length > 0 && r < 0.5) out[prng.int(out.length)] = mutate(out[prng.int(out.length)], prng);
      else if (r < 0.75) out.push(out.length > 0 && prng.next() < 0.5 ? out[0] : randomValue(prng, 1));
      else out.pop();
      return out;
    }
    if (typeof v === 'object' && v !== null) {
      const out: Record<string, unknown> = { ...(v as Record<string, unknown>) };
      const keys = Object.keys(out);
      const r = prng.next();
      if (keys.length > 0 && r < 0.5) {
        const key = keys[prng.int(keys.length)]!;
        out[key] = mutate(out[key], prng);
      } else if (keys.length > 0 && r < 0.75) delete out[keys[prng.int(keys.length)]!];
      else out[KEYS[prng.int(KEYS.length)]!] = randomValue(prng, 1);
      return out;
    }
    if (typeof v === 'number') return [v + 1, -v, v + 0.5, v * 1000, 0][prng.int(5)];
    if (typeof v === 'string') return [v + 'x', v.slice(1), v.toUpperCase(), STRINGS[prng.int(STRINGS.length)]][prng.int(4)];
    return randomValue(prng, 1);
  }

  /** Keywords beyond the grammar subset that the validator also implements. */
  const EXTRA: Record<string, unknown>[] = [
    { not: { type: 'string' } },
    { type: 'array', uniqueItems: true, items: { type: ['integer', 'string', 'null', 'boolean', 'object'] } },
    { type: 'integer', multipleOf: 3, minimum: -50, exclusiveMaximum: 90 },
    { type: 'number', minimum: -10.5, maximum: 10.25 },
    { type: 'object', minProperties: 1, maxProperties: 2 },
    { type: 'object', patternProperties: { '^[a-c]$': { type: 'integer' } }, additionalProperties: { type: 'string' } },
    { if: { type: 'object', required: ['kind'] }, then: { required: ['value'] }, else: { type: ['array', 'null'] } },
    { type: 'array', contains: { type: 'integer', minimum: 0 }, minContains: 2, maxContains: 3 },
    { type: 'object', dependentRequired: { a: ['b'] }, propertyNames: { pattern: '^[a-z]+$' } },
    { oneOf: [{ type: 'integer' }, { type: 'number', minimum: 0 }] },
    { allOf: [{ type: 'string' }, { minLength: 2 }, { maxLength: 5 }] },
    { type: 'string', format: 'date-time' },
    { type: 'string', format: 'time' },
    { type: 'string', format: 'date' },
    { $defs: { t: { type: 'array', items: { $ref: '#/$defs/t' } } }, $ref: '#/$defs/t', maxItems: 2 },
  ];

  it('agrees with ajv on random valid and invalid values', () => {
    const prng = new Prng(1234);
    let checked = 0;
    let valid = 0;
    const compare = (schema: Record<string, unknown> | boolean, value: unknown) => {
      const expected = ajv.validate(schema as object, value) as boolean;
      const errors = validateJsonSchema(schema, value);
      if ((errors.length === 0) !== expected) {
        throw new Error(`disagree on ${JSON.stringify(value)} against ${JSON.stringify(schema)}: ajv ${expected}, ours ${JSON.stringify(errors)}`);
      }
      checked++;
      if (expected) valid++;
    };
    for (const c of CASES) {
      const values = walkValues.get(c.name) ?? [];
      for (const v of values.slice(0, 60)) {
        compare(c.schema, v);
        for (let i = 0; i < 3; i++) compare(c.schema, mutate(v, prng));
      }
      for (let i = 0; i < 60; i++) compare(c.schema, randomValue(prng, 3));
    }
    for (const schema of EXTRA) for (let i = 0; i < 300; i++) compare(schema, randomValue(prng, 3));
    expect(checked).toBeGreaterThan(7000);
    // Both outcomes are well represented.
    expect(valid).toBeGreaterThan(checked * 0.2);
    expect(valid).toBeLessThan(checked * 0.8);
  });

  it('reports where and why', () => {
    const schema = CASES[1]!.schema;
    const errors = validateJsonSchema(schema, { id: 0, customer: { name: '', x: 1 }, lines: [{ sku: 'ab', qty: 1.5 }], tags: ['old'] });
    expect(errors).toEqual([
      '/id: must be >= 1',
      '/customer/name: must have at least 1 characters',
      '/customer/x: is not an allowed property (additionalProperties false)',
      '/lines/0/sku: must match pattern "^[A-Z]{2}-\\\\d{3}$"',
      '/lines/0/qty: must be integer (got number)',
      '/tags/0: must be one of "new", "gift", "rush"',
    ]);
    expect(validateJsonSchema({ type: 'object', required: ['a'] }, {})).toEqual(['(root): must have required property "a"']);
    expect(validateJsonSchema({ $ref: '#' }, 1)).toEqual(['(root): circular $ref']);
    expect(validateJsonSchema(true, 1)).toEqual([]);
    expect(validateJsonSchema(false, 1)).toHaveLength(1);
  });
});

describe('grammar IR', () => {
  function decodeGrammar(a: Int32Array): GrammarIR {
    let i = 0;
    const next = () => {
      if (i >= a.length) throw new Error('truncated');
      return a[i++]!;
    };
    const nRules = next();
    const root = next();
    const rules: GrammarElement[][][] = [];
    for (let r = 0; r < nRules; r++) {
      const alts: GrammarElement[][] = [];
      for (let nAlts = next(); nAlts > 0; nAlts--) {
        const seq: GrammarElement[] = [];
        for (let nElems = next(); nElems > 0; nElems--) {
          const kind = next();
          if (kind === 0) {
            const ranges: [number, number][] = [];
            for (let n = next(); n > 0; n--) ranges.push([next(), next()]);
            seq.push({ kind: 'bytes', ranges });
          } else {
            expect(kind).toBe(1);
            seq.push({ kind: 'ref', rule: next() });
          }
        }
        alts.push(seq);
      }
      rules.push(alts);
    }
    expect(i).toBe(a.length);
    return { root, rules };
  }

  it('encodeGrammar round-trips', () => {
    const hand: GrammarIR = {
      root: 1,
      rules: [
        [[{ kind: 'bytes', ranges: [[0x30, 0x39], [0x61, 0x66]] }]],
        [[{ kind: 'ref', rule: 0 }, { kind: 'ref', rule: 2 }], []],
        [[{ kind: 'bytes', ranges: [[0x2c, 0x2c]] }, { kind: 'ref', rule: 1 }]],
      ],
    };
    expect(Array.from(encodeGrammar(hand))).toEqual([3, 1, 1, 1, 0, 2, 0x30, 0x39, 0x61, 0x66, 2, 2, 1, 0, 1, 2, 0, 1, 2, 0, 1, 0x2c, 0x2c, 1, 1]);
    for (const ir of [hand, jsonObjectGrammar(), ...CASES.map((c) => compileJsonSchema(c.schema))]) {
      expect(decodeGrammar(encodeGrammar(ir))).toEqual(ir);
    }
  });

  it('checkGrammar rejects what the native side rejects', () => {
    const bytes = (lo: number, hi: number): GrammarElement => ({ kind: 'bytes', ranges: [[lo, hi]] });
    const ref = (rule: number): GrammarElement => ({ kind: 'ref', rule });
    const bad: [string, GrammarIR][] = [
      ['left recursion', { root: 0, rules: [[[ref(0), bytes(0x61, 0x61)], [bytes(0x62, 0x62)]]] }],
      ['ε-cycle', { root: 0, rules: [[[ref(1), ref(0)], [bytes(0x61, 0x61)]], [[]]] }],
      ['indirect', { root: 0, rules: [[[ref(1)]], [[ref(0)], [bytes(0x61, 0x61)]]] }],
      ['range', { root: 0, rules: [[[bytes(0x62, 0x61)]]] }],
      ['range above 255', { root: 0, rules: [[[bytes(0, 256)]]] }],
      ['missing rule', { root: 0, rules: [[[ref(3)]]] }],
      ['no alternatives', { root: 0, rules: [[[ref(1)], [bytes(0x61, 0x61)]], []] }],
      ['unproductive', { root: 0, rules: [[[bytes(0x61, 0x61), ref(1)]], [[bytes(0x61, 0x61), ref(1)]]] }],
      ['bad root', { root: 2, rules: [[[]]] }],
    ];
    for (const [name, ir] of bad) {
      expect(() => checkGrammar(ir), name).toThrow(GrammarError);
      expect(() => encodeGrammar(ir), name).toThrow(GrammarError);
    }
    // Right recursion and nullable rules are fine.
    checkGrammar({ root: 0, rules: [[[bytes(0x61, 0x61), ref(0)], []]] });
  });

  it('ReferenceMatcher: refused bytes change nothing; allowedBytes is exact', () => {
    const ir = compileJsonSchema({ type: 'object', properties: { a: { type: 'boolean' } }, required: ['a'] });
    const m = new ReferenceMatcher(ir);
    expect(m.allowedBytes()).toEqual([0x7b]);
    expect(m.acceptByte(0x20)).toBe(false);
    expect(m.acceptBytes(utf8.encode('{"a":'))).toBe(true);
    expect(m.allowedBytes()).toEqual([0x20, 0x66, 0x74]);
    expect(m.acceptByte(0x78)).toBe(false);
    expect(m.acceptBytes(utf8.encode('true'))).toBe(true);
    expect(m.isComplete()).toBe(false);
    expect(m.allowedBytes()).toEqual([0x7d]);
    expect(m.acceptByte(0x7d)).toBe(true);
    expect(m.isComplete()).toBe(true);
    expect(m.allowedBytes()).toEqual([]);
    // Deep recursion keeps working (nested arrays of any JSON).
    const any = compileJsonSchema(true);
    const deep = '['.repeat(500) + ']'.repeat(500);
    expect(accepts(any, deep)).toBe(true);
  });
});
