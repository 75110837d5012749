/**
 * JSON schema → byte-level grammar ({@link GrammarIR}) for constrained decoding: every complete
 * sentence of the grammar parses with `JSON.parse` and validates against the schema.
 *
 * The grammar describes a subset of the valid instances, chosen so that a model can write it
 * naturally and the grammar stays small:
 * - compact JSON, except that one optional space may follow each `:` and `,` (models like to write
 *   `{"a": 1, "b": 2}`); no other whitespace, none before or after the value;
 * - object properties in the schema's declared order, required ones always, optional ones maybe;
 *   properties that are not declared are never generated (unless the schema is a map:
 *   `additionalProperties` is a schema and there are no `properties`);
 * - numbers with at most 15 integer and 15 fraction digits and an exponent that keeps them finite;
 *   integers with at most 16 digits, or, with bounds, within ±(2^53 - 1) so that every text parses
 *   to exactly the number it spells;
 * - strings with valid UTF-8 only, `\u` escapes of non-surrogates only (one escape = one code point).
 * Anything the compiler cannot enforce exactly throws {@link UnsupportedSchemaError} before a
 * grammar is made, naming every such keyword and where it is.
 */
import type { JsonSchema } from '../chat/types.js';
import { NodeMoeError } from '../errors.js';
import { GrammarBuilder, checkGrammar, findLeftRecursion, pruneGrammar, type GrammarElement, type GrammarIR } from './ir.js';
import {
  ANY_CHAR,
  PatternError,
  largestRepeatBound,
  parsePattern,
  patternRule,
  splitDigitRanges,
  stringCharRule,
  type RegexNode,
} from './regex.js';
import { resolveLocalRef, validateSubschema } from './validate.js';

/** Options of {@link compileJsonSchema}. */
export interface CompileJsonSchemaOptions {
  /**
   * The largest count a repetition is expanded to: `minLength`, `maxLength`, `minItems`,
   * `maxItems` and `{m,n}` in a `pattern`. Every count up to a bound costs a grammar rule, so a
   * larger one throws {@link UnsupportedSchemaError} instead of making a huge grammar.
   * Default: 10000.
   */
  maxRepeat?: number;
}

/** One reason a schema cannot be compiled: a keyword, the JSON pointer of its schema, and why. */
export interface UnsupportedSchemaIssue {
  keyword: string;
  /** JSON pointer of the schema object holding the keyword, e.g. `#/properties/a`. */
  pointer: string;
  reason?: string;
}

function describeIssue(issue: UnsupportedSchemaIssue): string {
  return `unsupported JSON schema keyword '${issue.keyword}' at ${issue.pointer}${issue.reason ? ` (${issue.reason})` : ''}`;
}

/**
 * A JSON schema that the grammar compiler cannot enforce exactly (an unsupported keyword, format,
 * pattern feature or combination) or that matches nothing. Thrown before any grammar is made.
 * The message names each keyword and its JSON pointer, e.g.
 * `unsupported JSON schema keyword 'not' at #/properties/a`.
 */
export class UnsupportedSchemaError extends NodeMoeError {
  /** The offending keywords, one per issue (in the order found). */
  readonly keywords: string[];
  /** Each keyword with the JSON pointer of its schema and the reason. */
  readonly issues: UnsupportedSchemaIssue[];
  constructor(issues: UnsupportedSchemaIssue[], message?: string) {
    super(message ?? issues.map(describeIssue).join('; '), 'NODE_MOE_UNSUPPORTED_SCHEMA');
    this.issues = issues;
    this.keywords = issues.map((i) => i.keyword);
  }
}

/** Keywords that never constrain a value (and the containers of definitions). */
const ANNOTATIONS = new Set([
  'title',
  'description',
  'examples',
  'default',
  '$schema',
  '$id',
  '$comment',
  'deprecated',
  'readOnly',
  'writeOnly',
  '$defs',
  'definitions',
]);
const OBJECT_KEYWORDS = ['properties', 'required', 'additionalProperties'];
const ARRAY_KEYWORDS = ['items', 'prefixItems', 'minItems', 'maxItems'];
const STRING_KEYWORDS = ['minLength', 'maxLength', 'pattern', 'format'];
const BOUND_KEYWORDS = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'];
const COMPOSITION_KEYWORDS = ['$ref', 'allOf', 'anyOf', 'oneOf'];
const KEYWORDS = new Set([
  'type',
  'enum',
  'const',
  ...COMPOSITION_KEYWORDS,
  ...OBJECT_KEYWORDS,
  ...ARRAY_KEYWORDS,
  ...STRING_KEYWORDS,
  ...BOUND_KEYWORDS,
]);
const FORMATS = new Set(['date', 'date-time', 'time', 'uuid']);
const TYPES = ['null', 'boolean', 'object', 'array', 'number', 'integer', 'string'] as const;
type TypeName = (typeof TYPES)[number];

type SchemaObject = Record<string, unknown>;

function isSchemaObject(x: unknown): x is SchemaObject {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** `ptr` extended by one JSON-pointer segment (`~` and `/` escaped). */
function child(ptr: string, segment: string | number): string {
  return `${ptr}/${String(segment).replace(/~/g, '~0').replace(/\//g, '~1')}`;
}

const quote = (keys: string[]) => keys.map((k) => `'${k}'`).join(', ');

/**
 * The types a schema object produces: its `type` (`number` covers `integer`), or, without one, the
 * types its type-specific keywords imply (`{minLength: 1}` → strings; bounds → integers), or
 * undefined = any JSON value. Generating only the implied types is a valid subset: a keyword of
 * another type would not constrain those values anyway.
 */
function schemaTypes(s: SchemaObject): TypeName[] | undefined {
  if (s.type !== undefined) {
    const list = [...new Set((Array.isArray(s.type) ? s.type : [s.type]) as TypeName[])];
    return list.includes('number') ? list.filter((t) => t !== 'integer') : list;
  }
  const inferred: TypeName[] = [];
  if (OBJECT_KEYWORDS.some((k) => k in s)) inferred.push('object');
  if (ARRAY_KEYWORDS.some((k) => k in s)) inferred.push('array');
  if (STRING_KEYWORDS.some((k) => k in s)) inferred.push('string');
  if (BOUND_KEYWORDS.some((k) => k in s)) inferred.push('integer');
  return inferred.length > 0 ? inferred : undefined;
}

const isCount = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 0;

/** First pass: every unsupported keyword, format, pattern or combination in the reachable schema. */
class SchemaChecker {
  readonly issues: UnsupportedSchemaIssue[] = [];
  /** Parsed patterns, for the compiler. */
  readonly patterns = new Map<string, RegexNode>();
  private readonly visited = new Set<object>();

  constructor(
    private readonly root: JsonSchema | boolean,
    private readonly maxRepeat: number,
  ) {}

  private issue(keyword: string, pointer: string, reason?: string): void {
    this.issues.push(reason === undefined ? { keyword, pointer } : { keyword, pointer, reason });
  }

  walk(schema: unknown, ptr: string, parentKeyword: string): void {
    if (typeof schema === 'boolean') return;
    if (!isSchemaObject(schema)) {
      this.issue(parentKeyword, ptr, 'not a schema: a schema is an object or a boolean');
      return;
    }
    if (this.visited.has(schema)) return;
    this.visited.add(schema);
    const s = schema;
    const keys = Object.keys(s);
    const hasEnum = 'enum' in s || 'const' in s;
    for (const key of keys) if (!ANNOTATIONS.has(key) && !KEYWORDS.has(key)) this.issue(key, ptr);

    if ('type' in s) {
      const list = Array.isArray(s.type) ? s.type : [s.type];
      if (list.length === 0) this.issue('type', ptr, 'empty type list');
      for (const t of list) if (!TYPES.includes(t as TypeName)) this.issue('type', ptr, `unknown type ${JSON.stringify(t)}`);
    }
    if ('enum' in s && !Array.isArray(s.enum)) this.issue('enum', ptr, 'must be an array');

    // Combining a composition with other constraints would need schema intersection; enum/const are
    // the exception because their values are simply checked against everything.
    for (const keyword of COMPOSITION_KEYWORDS) {
      if (!(keyword in s) || hasEnum) continue;
      const others = keys.filter((k) => KEYWORDS.has(k) && k !== keyword);
      if (others.length > 0) this.issue(keyword, ptr, `together with ${quote(others)}; only annotations may accompany it`);
    }
    if ('$ref' in s) {
      const ref = s.$ref;
      const target = typeof ref === 'string' ? resolveLocalRef(this.root, ref) : undefined;
      if (typeof ref !== 'string' || !ref.startsWith('#')) {
        this.issue('$ref', ptr, `only local references (#, #/$defs/name, #/definitions/name) are supported: ${JSON.stringify(ref)}`);
      } else if (target === undefined) {
        this.issue('$ref', ptr, `cannot resolve ${JSON.stringify(ref)}`);
      } else {
        this.walk(target, ref, '$ref');
      }
    }
    if ('allOf' in s) {
      if (!Array.isArray(s.allOf) || s.allOf.length === 0) this.issue('allOf', ptr, 'must be a non-empty array');
      else {
        if (s.allOf.length !== 1 && !hasEnum) this.issue('allOf', ptr, `${s.allOf.length} subschemas; only allOf with one is supported`);
        s.allOf.forEach((sub, i) => this.walk(sub, child(child(ptr, 'allOf'), i), 'allOf'));
      }
    }
    for (const keyword of ['anyOf', 'oneOf']) {
      if (!(keyword in s)) continue;
      const list = s[keyword];
      if (!Array.isArray(list) || list.length === 0) this.issue(keyword, ptr, 'must be a non-empty array');
      else list.forEach((sub, i) => this.walk(sub, child(child(ptr, keyword), i), keyword));
    }

    if ('properties' in s) {
      if (!isSchemaObject(s.properties)) this.issue('properties', ptr, 'must be an object');
      else for (const [name, sub] of Object.entries(s.properties)) this.walk(sub, child(child(ptr, 'properties'), name), 'properties');
    }
    if ('required' in s && !(Array.isArray(s.required) && s.required.every((n) => typeof n === 'string'))) {
      this.issue('required', ptr, 'must be an array of strings');
    }
    if ('additionalProperties' in s && typeof s.additionalProperties !== 'boolean') {
      const declared = isSchemaObject(s.properties) && Object.keys(s.properties).length > 0;
      if (declared && !hasEnum) {
        this.issue('additionalProperties', ptr, 'a schema for additional properties is only supported without properties (as a map)');
      }
      this.walk(s.additionalProperties, child(ptr, 'additionalProperties'), 'additionalProperties');
    }

    if ('items' in s) {
      if (Array.isArray(s.items)) this.issue('items', ptr, 'the array (tuple) form is not supported; use prefixItems');
      else this.walk(s.items, child(ptr, 'items'), 'items');
    }
    if ('prefixItems' in s) {
      if (!Array.isArray(s.prefixItems)) this.issue('prefixItems', ptr, 'must be an array');
      else s.prefixItems.forEach((sub, i) => this.walk(sub, child(child(ptr, 'prefixItems'), i), 'prefixItems'));
    }
    for (const keyword of ['minItems', 'maxItems', 'minLength', 'maxLength']) {
      if (!(keyword in s)) continue;
      const n = s[keyword];
      if (!isCount(n)) this.issue(keyword, ptr, 'must be a non-negative integer');
      else if (n > this.maxRepeat && !hasEnum) this.issue(keyword, ptr, `${n} is above the maxRepeat limit ${this.maxRepeat}`);
    }

    if ('pattern' in s) {
      const pattern = s.pattern;
      if (typeof pattern !== 'string') this.issue('pattern', ptr, 'must be a string');
      else if (!hasEnum) {
        try {
          const node = parsePattern(pattern);
          const bound = largestRepeatBound(node);
          if (bound > this.maxRepeat) {
            this.issue('pattern', ptr, `pattern ${JSON.stringify(pattern)}: repetition bound ${bound} is above the maxRepeat limit ${this.maxRepeat}`);
          } else {
            // Compiling into a scratch builder finds misplaced anchors now, before any generation.
            patternRule(new GrammarBuilder(), node);
            this.patterns.set(pattern, node);
          }
        } catch (e) {
          if (!(e instanceof PatternError)) throw e;
          this.issue('pattern', ptr, `pattern ${JSON.stringify(pattern)}: ${e.message}`);
        }
      }
    }
    if ('format' in s && !(typeof s.format === 'string' && FORMATS.has(s.format))) {
      this.issue('format', ptr, `format ${JSON.stringify(s.format)} is not supported (supported: date, date-time, time, uuid)`);
    }
    if (!hasEnum) {
      // A string grammar comes from one of: a format, a pattern, or a length range.
      if ('format' in s) for (const k of ['pattern', 'minLength', 'maxLength']) if (k in s) this.issue(k, ptr, "together with 'format'");
      if ('pattern' in s) for (const k of ['minLength', 'maxLength']) if (k in s) this.issue(k, ptr, "together with 'pattern'");
      const types = schemaTypes(s);
      for (const k of BOUND_KEYWORDS) {
        if (!(k in s)) continue;
        if (typeof s[k] !== 'number') this.issue(k, ptr, 'must be a number (the draft-4 boolean form is not supported)');
        else if (types?.includes('number')) this.issue(k, ptr, 'bounds are only supported on integers, not on type number');
      }
    }
  }
}

const utf8 = new TextEncoder();
const { byte, bytes, ref, literal } = GrammarBuilder;
const text = (s: string) => literal(utf8.encode(s));
const DIGIT = bytes([[0x30, 0x39]]);
const QUOTE = 0x22;
/** Integers with bounds stay within ±(2^53 - 1), where every decimal text parses to itself exactly. */
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** Second pass: grammar rules for the checked schema. Each schema object gets one shared rule. */
class SchemaCompiler {
  readonly b = new GrammarBuilder();
  /** JSON pointer of the schema each schema rule was made for (to name `$ref` cycles). */
  readonly rulePointers = new Map<number, string>();
  /** Why parts of the schema match nothing (reported if the whole schema matches nothing). */
  readonly nothing: UnsupportedSchemaIssue[] = [];
  private readonly bySchema = new Map<object, number>();

  constructor(
    private readonly root: JsonSchema | boolean,
    private readonly patterns: Map<string, RegexNode>,
  ) {}

  /** A rule that matches nothing; pruned later, its reason kept. */
  private never(keyword: string, pointer: string, reason: string): number {
    this.nothing.push({ keyword, pointer, reason });
    return this.b.rule([]);
  }

  /** The rule of a (sub)schema; the same schema object always gives the same rule, so `$ref` recursion is a rule cycle. */
  schema(schema: unknown, ptr: string): number {
    if (schema === true) return this.anyValue();
    if (!isSchemaObject(schema)) return this.never('false', ptr, 'the schema false matches nothing');
    const cached = this.bySchema.get(schema);
    if (cached !== undefined) return cached;
    const r = this.b.reserve();
    this.bySchema.set(schema, r);
    this.rulePointers.set(r, ptr);
    this.b.define(r, this.alternatives(schema, ptr));
    return r;
  }

  private alternatives(s: SchemaObject, ptr: string): GrammarElement[][] {
    if ('enum' in s || 'const' in s) return this.enumeration(s, ptr);
    if (typeof s.$ref === 'string') return [[ref(this.schema(resolveLocalRef(this.root, s.$ref), s.$ref))]];
    if (Array.isArray(s.allOf)) return [[ref(this.schema(s.allOf[0], child(child(ptr, 'allOf'), 0)))]];
    // oneOf is compiled as anyOf: the grammar does not keep branches exclusive.
    for (const keyword of ['anyOf', 'oneOf']) {
      const list = s[keyword];
      if (Array.isArray(list)) return list.map((sub, i) => [ref(this.schema(sub, child(child(ptr, keyword), i)))]);
    }
    const types = schemaTypes(s);
    if (!types) return [[ref(this.anyValue())]];
    return types.map((t) => [ref(this.typed(t, s, ptr))]);
  }

  /** `enum` / `const`: the JSON.stringify text of each value that satisfies the whole schema. */
  private enumeration(s: SchemaObject, ptr: string): GrammarElement[][] {
    const candidates = 'const' in s ? [s.const] : Array.isArray(s.enum) ? s.enum : [];
    const seen = new Set<string>();
    const alts: GrammarElement[][] = [];
    for (const value of candidates) {
      const json = JSON.stringify(value) as string | undefined;
      if (json === undefined || seen.has(json)) continue;
      // The validator applies every sibling keyword (type, bounds, the other of enum/const, …).
      if (validateSubschema(this.root, s, value).length > 0) continue;
      seen.add(json);
      alts.push(text(json));
    }
    if (alts.length === 0) return [[ref(this.never('enum' in s ? 'enum' : 'const', ptr, 'no listed value satisfies the schema'))]];
    return alts;
  }

  private typed(type: TypeName, s: SchemaObject, ptr: string): number {
    switch (type) {
      case 'null':
        return this.b.rule([text('null')]);
      case 'boolean':
        return this.b.rule([text('true'), text('false')]);
      case 'integer':
        return this.integer(s, ptr);
      case 'number':
        return this.number();
      case 'string':
        return this.string(s, ptr);
      case 'array':
        return this.array(s, ptr);
      case 'object':
        return this.object(s, ptr);
    }
  }

  /** An optional single space (after `:` and `,`). */
  private ws(): number {
    return this.b.memoize('ws', () => this.b.rule([[byte(0x20)], []]));
  }

  private separator(): GrammarElement[] {
    return [byte(0x2c), ref(this.ws())];
  }

  private digit(): number {
    return this.b.memoize('digit', () => this.b.rule([[DIGIT]]));
  }

  /** `-?(0|[1-9][0-9]{0,15})` when unbounded; else the decimal texts of the integers in the bounds. */
  private integer(s: SchemaObject, ptr: string): number {
    const bounded = BOUND_KEYWORDS.filter((k) => typeof s[k] === 'number');
    if (bounded.length === 0) {
      return this.b.memoize('integer', () =>
        this.b.rule([
          [ref(this.b.rule([[byte(0x2d)], []])), ref(this.naturalDigits(15))],
        ]),
      );
    }
    let lo = -SAFE;
    let hi = SAFE;
    const num = (k: string) => s[k] as number;
    if (typeof s.minimum === 'number') lo = max(lo, BigInt(Math.ceil(num('minimum'))));
    if (typeof s.exclusiveMinimum === 'number') lo = max(lo, BigInt(Math.floor(num('exclusiveMinimum'))) + 1n);
    if (typeof s.maximum === 'number') hi = min(hi, BigInt(Math.floor(num('maximum'))));
    if (typeof s.exclusiveMaximum === 'number') hi = min(hi, BigInt(Math.ceil(num('exclusiveMaximum'))) - 1n);
    if (lo > hi) return this.never(bounded[0]!, ptr, `no integer between ${lo} and ${hi}`);
    const alts: GrammarElement[][] = [];
    // Negative numbers: '-' then the magnitudes; -0 is never produced (0 covers it).
    if (lo < 0n) for (const seq of decimalRange(hi < 0n ? -hi : 1n, -lo)) alts.push([byte(0x2d), ...seq]);
    if (hi >= 0n) alts.push(...decimalRange(lo > 0n ? lo : 0n, hi));
    return this.b.rule(alts);
  }

  /** `0|[1-9][0-9]{0,extra}`: a natural number without leading zeros. */
  private naturalDigits(extra: number): number {
    return this.b.memoize(`natural:${extra}`, () =>
      this.b.rule([[byte(0x30)], [bytes([[0x31, 0x39]]), ...this.b.repeat(this.digit(), 0, extra)]]),
    );
  }

  /**
   * A JSON number with at most 15 integer digits, at most 15 fraction digits and an exponent of at
   * most 3 digits whose value is at most 293, so that the number stays finite (a double's largest
   * is about 1.8e308 and the mantissa is below 1e15).
   */
  private number(): number {
    return this.b.memoize('number', () => {
      const b = this.b;
      const d = this.digit();
      const minus = b.rule([[byte(0x2d)], []]);
      const fraction = b.rule([[byte(0x2e), DIGIT, ...b.repeat(d, 0, 14)], []]);
      const expDigits = b.rule([
        [DIGIT],
        [DIGIT, DIGIT],
        [bytes([[0x30, 0x31]]), DIGIT, DIGIT],
        [byte(0x32), bytes([[0x30, 0x38]]), DIGIT],
        [byte(0x32), byte(0x39), bytes([[0x30, 0x33]])],
      ]);
      const sign = b.rule([[bytes([[0x2b, 0x2b], [0x2d, 0x2d]])], []]);
      const exponent = b.rule([[bytes([[0x45, 0x45], [0x65, 0x65]]), ref(sign), ref(expDigits)], []]);
      return b.rule([[ref(minus), ref(this.naturalDigits(14)), ref(fraction), ref(exponent)]]);
    });
  }

  private quoted(body: GrammarElement[]): number {
    return this.b.rule([[byte(QUOTE), ...body, byte(QUOTE)]]);
  }

  /** Any JSON string (any number of generic string characters). */
  private anyString(): number {
    return this.b.memoize('string', () => this.quoted([ref(this.b.star(stringCharRule(this.b, ANY_CHAR)))]));
  }

  private string(s: SchemaObject, ptr: string): number {
    if (typeof s.format === 'string') return this.format(s.format);
    if (typeof s.pattern === 'string') {
      const node = this.patterns.get(s.pattern)!;
      return this.b.memoize(`pattern:${s.pattern}`, () => this.quoted([ref(patternRule(this.b, node))]));
    }
    const lo = isCount(s.minLength) ? s.minLength : 0;
    const hi = isCount(s.maxLength) ? s.maxLength : Infinity;
    if (lo > hi) return this.never('minLength', ptr, `minLength ${lo} > maxLength ${hi}`);
    if (lo === 0 && hi === Infinity) return this.anyString();
    return this.quoted(this.b.repeat(stringCharRule(this.b, ANY_CHAR), lo, hi));
  }

  /**
   * Formats as fixed-shape grammars. `date` days are 01..28 so every month of every year is valid
   * without tracking the month; times are 00:00:00..23:59:59 with an optional 1..6-digit fraction and
   * `Z` or a ±HH:MM offset (RFC 3339 requires a zone).
   */
  private format(format: string): number {
    const b = this.b;
    const two = (first: [number, number], second: [number, number]) => [bytes([first]), bytes([second])];
    const hour = () => ref(b.memoize('fmt:hour', () => b.rule([two([0x30, 0x31], [0x30, 0x39]), two([0x32, 0x32], [0x30, 0x33])])));
    const sixty = () => two([0x30, 0x35], [0x30, 0x39]);
    const colon = byte(0x3a);
    const date = (): GrammarElement[] => {
      const month = b.memoize('fmt:month', () => b.rule([two([0x30, 0x30], [0x31, 0x39]), two([0x31, 0x31], [0x30, 0x32])]));
      const day = b.memoize('fmt:day', () =>
        b.rule([two([0x30, 0x30], [0x31, 0x39]), two([0x31, 0x31], [0x30, 0x39]), two([0x32, 0x32], [0x30, 0x38])]),
      );
      return [DIGIT, DIGIT, DIGIT, DIGIT, byte(0x2d), ref(month), byte(0x2d), ref(day)];
    };
    const time = (): GrammarElement[] => {
      const fraction = b.memoize('fmt:fraction', () => b.rule([[byte(0x2e), DIGIT, ...b.repeat(this.digit(), 0, 5)], []]));
      const zone = b.memoize('fmt:zone', () => b.rule([[byte(0x5a)], [bytes([[0x2b, 0x2b], [0x2d, 0x2d]]), hour(), colon, ...sixty()]]));
      return [hour(), colon, ...sixty(), colon, ...sixty(), ref(fraction), ref(zone)];
    };
    return b.memoize(`format:${format}`, () => {
      switch (format) {
        case 'date':
          return this.quoted(date());
        case 'time':
          return this.quoted(time());
        case 'date-time':
          return this.quoted([...date(), byte(0x54), ...time()]);
        default: {
          // uuid: 8-4-4-4-12 hex digits, either case.
          const hex = bytes([[0x30, 0x39], [0x41, 0x46], [0x61, 0x66]]);
          const group = (n: number) => Array.from({ length: n }, () => hex);
          const dash = byte(0x2d);
          return this.quoted([...group(8), dash, ...group(4), dash, ...group(4), dash, ...group(4), dash, ...group(12)]);
        }
      }
    });
  }

  /**
   * `[` elements `]` where element i follows `prefixItems[i]`, later ones `items` (absent: any
   * value); the count is in [minItems, maxItems], and `items: false` caps it at the prefix length.
   */
  private array(s: SchemaObject, ptr: string): number {
    const b = this.b;
    const prefix = Array.isArray(s.prefixItems) ? s.prefixItems : [];
    const lo = isCount(s.minItems) ? s.minItems : 0;
    let hi = isCount(s.maxItems) ? s.maxItems : Infinity;
    if (s.items === false) hi = Math.min(hi, prefix.length);
    if (lo > hi) return this.never('minItems', ptr, `minItems ${lo} is more than the ${hi} items allowed`);
    const element = (i: number) =>
      i < prefix.length ? this.schema(prefix[i], child(child(ptr, 'prefixItems'), i)) : this.schema(s.items ?? true, child(ptr, 'items'));
    // The elements after the first i: a chain of optional ones through the prefix, then a repetition.
    const after = (i: number): GrammarElement[] => {
      if (i >= hi) return [];
      if (i >= prefix.length) {
        const unit = b.rule([[...this.separator(), ref(element(i))]]);
        return b.repeat(unit, Math.max(lo - i, 0), hi - i);
      }
      const alts: GrammarElement[][] = [[...this.separator(), ref(element(i)), ...after(i + 1)]];
      if (i >= lo) alts.push([]);
      return [ref(b.rule(alts))];
    };
    const alts: GrammarElement[][] = [];
    if (lo === 0) alts.push(text('[]'));
    if (hi >= 1) alts.push([byte(0x5b), ref(element(0)), ...after(1), byte(0x5d)]);
    return b.rule(alts);
  }

  private key(name: string): GrammarElement[] {
    return [...text(JSON.stringify(name)), byte(0x3a), ref(this.ws())];
  }

  /**
   * Objects. Declared properties come in declared order, required ones always, optional ones
   * maybe; undeclared ones are never generated. Without declared properties: `{}` when
   * `additionalProperties` is false, a map when it is a schema, any object otherwise.
   */
  private object(s: SchemaObject, ptr: string): number {
    const properties = isSchemaObject(s.properties) ? Object.entries(s.properties) : [];
    const required = new Set(Array.isArray(s.required) ? (s.required as string[]) : []);
    const extra = isSchemaObject(s.additionalProperties) ? s.additionalProperties : undefined;
    if (properties.length === 0 && required.size === 0) {
      if (s.additionalProperties === false) return this.b.rule([text('{}')]);
      if (extra) return this.map(this.schema(extra, child(ptr, 'additionalProperties')), []);
      return this.anyObject();
    }
    if (extra && properties.length === 0) return this.map(this.schema(extra, child(ptr, 'additionalProperties')), [...required]);
    const fields: { name: string; rule: number; required: boolean }[] = [];
    for (const [name, sub] of properties) {
      const isRequired = required.has(name);
      if (sub === false) {
        // A property that may not appear is simply never written, unless it is also required.
        if (isRequired) fields.push({ name, rule: this.never('required', ptr, `required property ${JSON.stringify(name)} has schema false`), required: true });
        continue;
      }
      fields.push({ name, rule: this.schema(sub, child(child(ptr, 'properties'), name)), required: isRequired });
    }
    for (const name of required) {
      if (properties.some(([n]) => n === name)) continue;
      const rule =
        s.additionalProperties === false
          ? this.never('required', ptr, `required property ${JSON.stringify(name)} is not allowed by additionalProperties false`)
          : this.anyValue();
      fields.push({ name, rule, required: true });
    }
    // from(i, wrote): properties i.. after `wrote` (some property written, so the next needs a comma).
    const memo = new Map<string, GrammarElement[]>();
    const from = (i: number, wrote: boolean): GrammarElement[] => {
      if (i === fields.length) return [];
      const key = `${i}:${wrote}`;
      let seq = memo.get(key);
      if (!seq) {
        const f = fields[i]!;
        const present = [...(wrote ? this.separator() : []), ...this.key(f.name), ref(f.rule), ...from(i + 1, true)];
        seq = [ref(this.b.rule(f.required ? [present] : [present, from(i + 1, wrote)]))];
        memo.set(key, seq);
      }
      return seq;
    };
    return this.b.rule([[byte(0x7b), ...from(0, false), byte(0x7d)]]);
  }

  /** `{ "key": value, … }` with any string keys: the `required` keys first, then any entries. */
  private map(value: number, required: string[]): number {
    const b = this.b;
    const entry = b.rule([[ref(this.anyString()), byte(0x3a), ref(this.ws()), ref(value)]]);
    const more = ref(b.star(b.rule([[...this.separator(), ref(entry)]])));
    if (required.length === 0) return b.rule([text('{}'), [byte(0x7b), ref(entry), more, byte(0x7d)]]);
    const fixed = required.flatMap((name, i) => [...(i > 0 ? this.separator() : []), ...this.key(name), ref(value)]);
    return b.rule([[byte(0x7b), ...fixed, more, byte(0x7d)]]);
  }

  /** Any JSON value and any JSON object (mutually recursive, made together). */
  private anyJson(): { value: number; object: number } {
    const b = this.b;
    const value = b.memoize('any:value', () => b.reserve());
    const object = b.memoize('any:object', () => {
      const member = b.rule([[ref(this.anyString()), byte(0x3a), ref(this.ws()), ref(value)]]);
      const object = b.rule([text('{}'), [byte(0x7b), ref(member), ref(b.star(b.rule([[...this.separator(), ref(member)]]))), byte(0x7d)]]);
      const array = b.rule([text('[]'), [byte(0x5b), ref(value), ref(b.star(b.rule([[...this.separator(), ref(value)]]))), byte(0x5d)]]);
      b.define(value, [[ref(object)], [ref(array)], [ref(this.anyString())], [ref(this.number())], text('true'), text('false'), text('null')]);
      return object;
    });
    return { value, object };
  }

  anyValue(): number {
    return this.anyJson().value;
  }

  anyObject(): number {
    return this.anyJson().object;
  }
}

function max(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}

function min(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}

/** Sequences of digit elements for the decimal texts (no leading zeros) of the integers in [lo, hi], lo >= 0. */
function decimalRange(lo: bigint, hi: bigint): GrammarElement[][] {
  const out: GrammarElement[][] = [];
  for (let length = lo.toString().length; length <= hi.toString().length; length++) {
    const first = length === 1 ? 0n : 10n ** BigInt(length - 1);
    const from = max(lo, first);
    const to = min(hi, 10n ** BigInt(length) - 1n);
    if (from > to) continue;
    for (const tuple of splitDigitRanges(from, to, Array(length).fill(10))) {
      out.push(tuple.map(([a, b]) => bytes([[0x30 + a, 0x30 + b]])));
    }
  }
  return out;
}

function compile(schema: JsonSchema | boolean, options: CompileJsonSchemaOptions, rootOf: (c: SchemaCompiler) => number): GrammarIR {
  const maxRepeat = options.maxRepeat ?? 10_000;
  const checker = new SchemaChecker(schema, maxRepeat);
  checker.walk(schema, '#', '(root)');
  if (checker.issues.length > 0) throw new UnsupportedSchemaError(checker.issues);
  const compiler = new SchemaCompiler(schema, checker.patterns);
  const raw = compiler.b.build(rootOf(compiler));
  const cycle = findLeftRecursion(raw);
  if (cycle) {
    const pointers = [...new Set(cycle.map((r) => compiler.rulePointers.get(r)).filter((p): p is string => p !== undefined))];
    throw new UnsupportedSchemaError([
      { keyword: '$ref', pointer: pointers[0] ?? '#', reason: `recursion through ${pointers.join(' -> ')} that consumes no input` },
    ]);
  }
  const ir = pruneGrammar(raw);
  if (!ir) {
    const issues = compiler.nothing.length > 0 ? compiler.nothing : [{ keyword: 'false', pointer: '#' }];
    throw new UnsupportedSchemaError(
      issues,
      `JSON schema matches nothing: ${issues.map((i) => `'${i.keyword}' at ${i.pointer}${i.reason ? ` (${i.reason})` : ''}`).join('; ')}`,
    );
  }
  // The compiler only makes grammars that pass; a failure here is a bug in it, not in the schema.
  checkGrammar(ir);
  return ir;
}

/**
 * Compiles a JSON schema (draft 2020-12 keywords; the subset described in this module's doc) to a
 * byte-level grammar whose every complete sentence is compact-ish JSON (one optional space after
 * `:` and `,`) that validates against the schema. Supported: `type` (also arrays), `enum`, `const`,
 * `properties`, `required`, `additionalProperties` (false/true; a schema only without
 * `properties`), `items`, `prefixItems`, `minItems`, `maxItems`, `minLength`, `maxLength`,
 * `pattern`, `format` (date, date-time, time, uuid), integer `minimum` / `maximum` /
 * `exclusiveMinimum` / `exclusiveMaximum`, `anyOf`, `oneOf` (exclusivity not enforced), `allOf`
 * with one subschema, local `$ref` (recursion included), boolean schemas, and annotations.
 * @throws UnsupportedSchemaError for anything else, before any grammar is made; also when the
 *   schema matches nothing.
 */
export function compileJsonSchema(schema: JsonSchema | boolean, options: CompileJsonSchemaOptions = {}): GrammarIR {
  if (schema === false) {
    throw new UnsupportedSchemaError([{ keyword: 'false', pointer: '#' }], "JSON schema 'false' at # matches nothing");
  }
  return compile(schema, options, (c) => c.schema(schema, '#'));
}

/** The grammar of any JSON object (for `{ type: 'json_object' }`), with the same whitespace rules as {@link compileJsonSchema}. */
export function jsonObjectGrammar(): GrammarIR {
  return compile(true, {}, (c) => c.anyObject());
}
