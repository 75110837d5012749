/**
 * A small JSON-schema validator for parsed values (tool-call arguments, structured output), with
 * no dependencies. It covers what the grammar compiler supports plus a few cheap keywords, with
 * JSON Schema 2020-12 semantics (`$ref` siblings apply, `prefixItems` + `items`). Keywords it does
 * not know are ignored, as JSON Schema does with unknown keywords; formats other than date,
 * date-time, time and uuid are not checked.
 */
import type { JsonSchema } from '../chat/types.js';

/**
 * Validates a parsed JSON value against a schema; returns the errors, empty when valid. Each error
 * starts with the JSON pointer of the offending part of the value (`(root)` for the value itself),
 * e.g. `/items/2: must be integer`. `$ref`s are resolved within `schema` (`#`, `#/$defs/…`, any
 * `#/…` JSON pointer).
 */
export function validateJsonSchema(schema: JsonSchema | boolean, value: unknown): string[] {
  return validateSubschema(schema, schema, value);
}

/**
 * {@link validateJsonSchema} of `schema`, a part of the document `root` against which `$ref`s are
 * resolved (the grammar compiler checks `enum` values with it).
 * @internal
 */
export function validateSubschema(root: JsonSchema | boolean, schema: JsonSchema | boolean, value: unknown): string[] {
  const v = new Validator(root);
  v.check(schema, value, '');
  return v.errors;
}

/** Deep equality of JSON values (object key order does not matter). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((x, i) => jsonEqual(x, bb[i]));
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => Object.hasOwn(b, k) && jsonEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** The JSON Schema type name of a value (`integer` for whole numbers). */
function typeOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

function hasType(value: unknown, type: string): boolean {
  switch (type) {
    case 'null':
      return value === null;
    case 'boolean':
      return typeof value === 'boolean';
    case 'string':
      return typeof value === 'string';
    case 'number':
      return typeof value === 'number' && Number.isFinite(value);
    case 'integer':
      return typeof value === 'number' && Number.isInteger(value);
    case 'array':
      return Array.isArray(value);
    case 'object':
      return typeof value === 'object' && value !== null && !Array.isArray(value);
    default:
      return false;
  }
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function isDate(s: string): boolean {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  if (!m) return false;
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  if (month < 1 || month > 12 || day < 1) return false;
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  return day <= (month === 2 && leap ? 29 : DAYS_IN_MONTH[month - 1]!);
}

/** RFC 3339 full-time: a time zone is required; a leap second only at 23:59:60 UTC. */
function isTime(s: string): boolean {
  const m = /^(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[zZ]|([+-])(\d{2}):(\d{2}))$/.exec(s);
  if (!m) return false;
  const [hour, minute, second] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const sign = m[4] === '-' ? -1 : 1;
  const [offH, offM] = [Number(m[5] ?? 0), Number(m[6] ?? 0)];
  if (hour > 23 || minute > 59 || offH > 23 || offM > 59) return false;
  if (second <= 59) return true;
  if (second !== 60) return false;
  // Local time minus the offset must be 23:59 UTC (mod one day).
  const utcMinutes = (((hour * 60 + minute - sign * (offH * 60 + offM)) % 1440) + 1440) % 1440;
  return utcMinutes === 23 * 60 + 59;
}

function isDateTime(s: string): boolean {
  const m = /^([^Tt ]*)[Tt ](.*)$/.exec(s);
  return m !== null && isDate(m[1]!) && isTime(m[2]!);
}

const UUID = /^(?:urn:uuid:)?[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}$/i;

const FORMATS: Record<string, (s: string) => boolean> = {
  date: isDate,
  time: isTime,
  'date-time': isDateTime,
  uuid: (s) => UUID.test(s),
};

function pointerSegment(key: string | number): string {
  return `/${String(key).replace(/~/g, '~0').replace(/\//g, '~1')}`;
}

/** Resolves a local `$ref` (`#` or `#/json/pointer`) within `root`; undefined when it does not resolve. */
export function resolveLocalRef(root: unknown, ref: string): JsonSchema | boolean | undefined {
  if (!ref.startsWith('#')) return undefined;
  let fragment: string;
  try {
    fragment = decodeURIComponent(ref.slice(1));
  } catch {
    return undefined;
  }
  if (fragment !== '' && !fragment.startsWith('/')) return undefined;
  let node: unknown = root;
  if (fragment !== '') {
    for (const raw of fragment.slice(1).split('/')) {
      const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
      if (typeof node !== 'object' || node === null || !Object.hasOwn(node, key)) return undefined;
      node = (node as Record<string, unknown>)[key];
    }
  }
  return typeof node === 'boolean' || (typeof node === 'object' && node !== null && !Array.isArray(node))
    ? (node as JsonSchema | boolean)
    : undefined;
}

class Validator {
  readonly errors: string[] = [];
  /** (schema, value) pairs being checked, to stop a `$ref` cycle that consumes no part of the value. */
  private readonly active = new Map<object, Set<unknown>>();
  private readonly regexes = new Map<string, RegExp | null>();

  constructor(private readonly root: JsonSchema | boolean) {}

  private fail(path: string, message: string): void {
    this.errors.push(`${path || '(root)'}: ${message}`);
  }

  /** Whether `value` is valid against `schema`, without recording errors. */
  private valid(schema: unknown, value: unknown, path: string): boolean {
    const before = this.errors.length;
    this.check(schema, value, path);
    const ok = this.errors.length === before;
    this.errors.length = before;
    return ok;
  }

  private regex(pattern: string): RegExp | null {
    let re = this.regexes.get(pattern);
    if (re === undefined) {
      try {
        re = new RegExp(pattern, 'u');
      } catch {
        re = null;
      }
      this.regexes.set(pattern, re);
    }
    return re;
  }

  check(schema: unknown, value: unknown, path: string): void {
    if (schema === true) return;
    if (schema === false) return this.fail(path, 'no value is allowed here (schema false)');
    if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) return this.fail(path, 'invalid schema');
    let values = this.active.get(schema);
    if (values?.has(value)) return this.fail(path, 'circular $ref');
    if (!values) this.active.set(schema, (values = new Set()));
    values.add(value);
    try {
      this.keywords(schema as Record<string, unknown>, value, path);
    } finally {
      values.delete(value);
    }
  }

  private keywords(s: Record<string, unknown>, value: unknown, path: string): void {
    if (typeof s.$ref === 'string') {
      const target = resolveLocalRef(this.root, s.$ref);
      if (target === undefined) this.fail(path, `cannot resolve $ref '${s.$ref}'`);
      else this.check(target, value, path);
    }
    if (s.type !== undefined) {
      const types = Array.isArray(s.type) ? (s.type as unknown[]) : [s.type];
      if (!types.some((t) => typeof t === 'string' && hasType(value, t))) {
        this.fail(path, `must be ${types.join(' or ')} (got ${typeOf(value)})`);
        return; // the other keywords would only repeat the mismatch
      }
    }
    if (Array.isArray(s.enum) && !s.enum.some((e) => jsonEqual(e, value))) {
      this.fail(path, `must be one of ${s.enum.map((e) => JSON.stringify(e)).join(', ')}`);
    }
    if ('const' in s && !jsonEqual(s.const, value)) this.fail(path, `must be ${JSON.stringify(s.const)}`);
    this.combinators(s, value, path);
    if (typeof value === 'string') this.string(s, value, path);
    else if (typeof value === 'number') this.number(s, value, path);
    else if (Array.isArray(value)) this.array(s, value, path);
    else if (typeof value === 'object' && value !== null) this.object(s, value as Record<string, unknown>, path);
  }

  private combinators(s: Record<string, unknown>, value: unknown, path: string): void {
    if (Array.isArray(s.allOf)) for (const sub of s.allOf) this.check(sub, value, path);
    if (Array.isArray(s.anyOf) && !s.anyOf.some((sub) => this.valid(sub, value, path))) {
      this.fail(path, 'must match a schema in anyOf');
    }
    if (Array.isArray(s.oneOf)) {
      const n = s.oneOf.filter((sub) => this.valid(sub, value, path)).length;
      if (n !== 1) this.fail(path, `must match exactly one schema in oneOf (matches ${n})`);
    }
    if ('not' in s && this.valid(s.not, value, path)) this.fail(path, 'must not match the schema in not');
    if ('if' in s) {
      const branch = this.valid(s.if, value, path) ? s.then : s.else;
      if (branch !== undefined) this.check(branch, value, path);
    }
  }

  private string(s: Record<string, unknown>, value: string, path: string): void {
    // Lengths count code points, as JSON Schema does (not UTF-16 units).
    const length = [...value].length;
    if (typeof s.minLength === 'number' && length < s.minLength) this.fail(path, `must have at least ${s.minLength} characters`);
    if (typeof s.maxLength === 'number' && length > s.maxLength) this.fail(path, `must have at most ${s.maxLength} characters`);
    if (typeof s.pattern === 'string') {
      const re = this.regex(s.pattern);
      if (!re) this.fail(path, `invalid pattern ${JSON.stringify(s.pattern)}`);
      else if (!re.test(value)) this.fail(path, `must match pattern ${JSON.stringify(s.pattern)}`);
    }
    if (typeof s.format === 'string') {
      const check = FORMATS[s.format];
      if (check && !check(value)) this.fail(path, `must be a valid ${s.format}`);
    }
  }

  private number(s: Record<string, unknown>, value: number, path: string): void {
    // Draft-4 boolean exclusiveMinimum/exclusiveMaximum make minimum/maximum exclusive.
    if (typeof s.minimum === 'number') {
      if (s.exclusiveMinimum === true ? !(value > s.minimum) : !(value >= s.minimum)) {
        this.fail(path, `must be ${s.exclusiveMinimum === true ? '>' : '>='} ${s.minimum}`);
      }
    }
    if (typeof s.maximum === 'number') {
      if (s.exclusiveMaximum === true ? !(value < s.maximum) : !(value <= s.maximum)) {
        this.fail(path, `must be ${s.exclusiveMaximum === true ? '<' : '<='} ${s.maximum}`);
      }
    }
    if (typeof s.exclusiveMinimum === 'number' && !(value > s.exclusiveMinimum)) this.fail(path, `must be > ${s.exclusiveMinimum}`);
    if (typeof s.exclusiveMaximum === 'number' && !(value < s.exclusiveMaximum)) this.fail(path, `must be < ${s.exclusiveMaximum}`);
    if (typeof s.multipleOf === 'number' && s.multipleOf > 0) {
      const q = value / s.multipleOf;
      // Tolerate binary rounding (0.3 / 0.1 = 2.9999999999999996).
      if (Math.abs(q - Math.round(q)) > 1e-9 * Math.max(1, Math.abs(q))) this.fail(path, `must be a multiple of ${s.multipleOf}`);
    }
  }

  private array(s: Record<string, unknown>, value: unknown[], path: string): void {
    if (typeof s.minItems === 'number' && value.length < s.minItems) this.fail(path, `must have at least ${s.minItems} items`);
    if (typeof s.maxItems === 'number' && value.length > s.maxItems) this.fail(path, `must have at most ${s.maxItems} items`);
    let prefix = 0;
    let rest: unknown = s.items;
    if (Array.isArray(s.prefixItems)) {
      prefix = s.prefixItems.length;
    } else if (Array.isArray(s.items)) {
      // Draft-7 tuple form: items is the prefix, additionalItems the rest.
      prefix = s.items.length;
      rest = s.additionalItems;
    }
    const prefixSchemas = (Array.isArray(s.prefixItems) ? s.prefixItems : Array.isArray(s.items) ? s.items : []) as unknown[];
    value.forEach((item, i) => {
      const sub = i < prefix ? prefixSchemas[i] : rest;
      if (sub !== undefined) this.check(sub, item, path + pointerSegment(i));
    });
    if (s.uniqueItems === true) {
      for (let i = 0; i < value.length; i++) {
        for (let j = i + 1; j < value.length; j++) {
          if (jsonEqual(value[i], value[j])) {
            this.fail(path, `must not contain duplicate items (${i} and ${j})`);
            return;
          }
        }
      }
    }
    if ('contains' in s) {
      const n = value.filter((item, i) => this.valid(s.contains, item, path + pointerSegment(i))).length;
      const min = typeof s.minContains === 'number' ? s.minContains : 1;
      if (n < min) this.fail(path, `must contain at least ${min} matching items`);
      if (typeof s.maxContains === 'number' && n > s.maxContains) this.fail(path, `must contain at most ${s.maxContains} matching items`);
    }
  }

  private object(s: Record<string, unknown>, value: Record<string, unknown>, path: string): void {
    const keys = Object.keys(value);
    if (typeof s.minProperties === 'number' && keys.length < s.minProperties) this.fail(path, `must have at least ${s.minProperties} properties`);
    if (typeof s.maxProperties === 'number' && keys.length > s.maxProperties) this.fail(path, `must have at most ${s.maxProperties} properties`);
    if (Array.isArray(s.required)) {
      for (const name of s.required) {
        if (typeof name === 'string' && !Object.hasOwn(value, name)) this.fail(path, `must have required property ${JSON.stringify(name)}`);
      }
    }
    if (typeof s.dependentRequired === 'object' && s.dependentRequired !== null) {
      for (const [name, needed] of Object.entries(s.dependentRequired as Record<string, unknown>)) {
        if (!Object.hasOwn(value, name) || !Array.isArray(needed)) continue;
        for (const other of needed) {
          if (typeof other === 'string' && !Object.hasOwn(value, other)) {
            this.fail(path, `must have property ${JSON.stringify(other)} when ${JSON.stringify(name)} is present`);
          }
        }
      }
    }
    const properties = (typeof s.properties === 'object' && s.properties !== null ? s.properties : {}) as Record<string, unknown>;
    const patterns = Object.entries(
      (typeof s.patternProperties === 'object' && s.patternProperties !== null ? s.patternProperties : {}) as Record<string, unknown>,
    );
    for (const key of keys) {
      const at = path + pointerSegment(key);
      if ('propertyNames' in s && !this.valid(s.propertyNames, key, at)) this.fail(at, 'property name does not match propertyNames');
      let matched = false;
      if (Object.hasOwn(properties, key)) {
        matched = true;
        this.check(properties[key], value[key], at);
      }
      for (const [pattern, sub] of patterns) {
        const re = this.regex(pattern);
        if (re?.test(key)) {
          matched = true;
          this.check(sub, value[key], at);
        }
      }
      if (!matched && s.additionalProperties !== undefined) {
        if (s.additionalProperties === false) this.fail(at, 'is not an allowed property (additionalProperties false)');
        else this.check(s.additionalProperties, value[key], at);
      }
    }
  }
}
