/**
 * JSON string characters as grammar rules, and JSON-schema `pattern`s compiled to grammars.
 *
 * A grammar produces the JSON TEXT of a string while a pattern describes its VALUE, so every
 * character is produced in each of its JSON encodings: raw UTF-8 (when JSON allows it raw), a short
 * escape (`\n`, `\"`, …) and `\uXXXX`. Every encoding decodes to exactly one code point — `\u`
 * escapes of surrogates are never produced, so a pair cannot make two escapes one character — which
 * makes "one grammar character" = "one code point" for `minLength` / `maxLength` and for regexes.
 */
import { GrammarBuilder, type GrammarElement } from './ir.js';

/** A set of Unicode code points: sorted, disjoint, non-adjacent inclusive ranges. */
export type CodePointSet = [number, number][];

const MAX_CODE_POINT = 0x10ffff;

/** Sorts and merges ranges into a {@link CodePointSet}. */
export function normalizeSet(ranges: [number, number][]): CodePointSet {
  const sorted = ranges.filter(([lo, hi]) => lo <= hi).sort((a, b) => a[0] - b[0]);
  const out: CodePointSet = [];
  for (const [lo, hi] of sorted) {
    const last = out[out.length - 1];
    if (last && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else out.push([lo, hi]);
  }
  return out;
}

/** Code points not in `set` (within 0..0x10FFFF). */
export function complementSet(set: CodePointSet): CodePointSet {
  const out: CodePointSet = [];
  let next = 0;
  for (const [lo, hi] of set) {
    if (lo > next) out.push([next, lo - 1]);
    next = hi + 1;
  }
  if (next <= MAX_CODE_POINT) out.push([next, MAX_CODE_POINT]);
  return out;
}

/** Code points in both sets. */
export function intersectSets(a: CodePointSet, b: CodePointSet): CodePointSet {
  const out: CodePointSet = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const [alo, ahi] = a[i]!;
    const [blo, bhi] = b[j]!;
    const lo = Math.max(alo, blo);
    const hi = Math.min(ahi, bhi);
    if (lo <= hi) out.push([lo, hi]);
    if (ahi < bhi) i++;
    else j++;
  }
  return out;
}

/** Every code point a string can hold here: all but surrogates (lone surrogates are not text). */
export const ANY_CHAR: CodePointSet = [
  [0, 0xd7ff],
  [0xe000, MAX_CODE_POINT],
];
/** JS regex `.` (without the `s` flag): anything but line terminators. */
const DOT: CodePointSet = complementSet(normalizeSet([[0x0a, 0x0a], [0x0d, 0x0d], [0x2028, 0x2029]]));
const DIGIT: CodePointSet = [[0x30, 0x39]];
const WORD: CodePointSet = normalizeSet([[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]]);
/** JS regex `\s`: WhiteSpace and LineTerminator of ECMA-262. */
const SPACE: CodePointSet = normalizeSet([
  [0x09, 0x0d],
  [0x20, 0x20],
  [0xa0, 0xa0],
  [0x1680, 0x1680],
  [0x2000, 0x200a],
  [0x2028, 0x2029],
  [0x202f, 0x202f],
  [0x205f, 0x205f],
  [0x3000, 0x3000],
  [0xfeff, 0xfeff],
]);
/** Code points JSON allows unescaped in a string: not `"`, not `\`, not a control character below 0x20. */
const RAW_ALLOWED: CodePointSet = intersectSets(
  normalizeSet([[0x20, 0x21], [0x23, 0x5b], [0x5d, MAX_CODE_POINT]]),
  ANY_CHAR,
);
/** Code points with a two-character escape, and the byte after the backslash. */
const SHORT_ESCAPES: [number, number][] = [
  [0x22, 0x22], // "
  [0x5c, 0x5c], // \
  [0x2f, 0x2f], // /
  [0x08, 0x62], // b
  [0x0c, 0x66], // f
  [0x0a, 0x6e], // n
  [0x0d, 0x72], // r
  [0x09, 0x74], // t
];

/**
 * Splits the integer range [lo, hi] of a mixed-radix number (most significant digit first) into
 * tuples of digit ranges whose cartesian products cover it exactly. Used for UTF-8 sequences,
 * `\u` hex digits and decimal integer ranges.
 */
export function splitDigitRanges(lo: bigint, hi: bigint, radices: number[]): [number, number][][] {
  if (radices.length === 1) return [[[Number(lo), Number(hi)]]];
  const rest = radices.slice(1);
  const base = rest.reduce((p, r) => p * BigInt(r), 1n);
  let loHead = lo / base;
  const loTail = lo % base;
  let hiHead = hi / base;
  const hiTail = hi % base;
  const prefixed = (head: bigint, tails: [number, number][][]) =>
    tails.map((t): [number, number][] => [[Number(head), Number(head)], ...t]);
  if (loHead === hiHead) return prefixed(loHead, splitDigitRanges(loTail, hiTail, rest));
  const out: [number, number][][] = [];
  if (loTail !== 0n) {
    out.push(...prefixed(loHead, splitDigitRanges(loTail, base - 1n, rest)));
    loHead++;
  }
  let last: [number, number][][] = [];
  if (hiTail !== base - 1n) {
    last = prefixed(hiHead, splitDigitRanges(0n, hiTail, rest));
    hiHead--;
  }
  if (loHead <= hiHead) out.push([[Number(loHead), Number(hiHead)], ...rest.map((r): [number, number] => [0, r - 1])]);
  out.push(...last);
  return out;
}

/** UTF-8 lengths: code point range, digit radices (bits per byte), lead byte offset. */
const UTF8_FORMS: { lo: number; hi: number; radices: number[]; lead: number }[] = [
  { lo: 0x80, hi: 0x7ff, radices: [32, 64], lead: 0xc0 },
  { lo: 0x800, hi: 0xffff, radices: [16, 64, 64], lead: 0xe0 },
  { lo: 0x10000, hi: MAX_CODE_POINT, radices: [8, 64, 64, 64], lead: 0xf0 },
];

/**
 * The byte sequences of the UTF-8 encodings of `set` (which must hold no surrogates), as
 * alternatives of byte-range elements. Each length is split within its own range, so overlong
 * forms are never produced.
 */
function utf8Alternatives(set: CodePointSet): GrammarElement[][] {
  const alts: GrammarElement[][] = [];
  const ascii = intersectSets(set, [[0, 0x7f]]);
  if (ascii.length > 0) alts.push([GrammarBuilder.bytes(ascii.map(([lo, hi]) => [lo, hi]))]);
  for (const form of UTF8_FORMS) {
    for (const [lo, hi] of intersectSets(set, [[form.lo, form.hi]])) {
      for (const tuple of splitDigitRanges(BigInt(lo), BigInt(hi), form.radices)) {
        alts.push(tuple.map(([a, b], i) => (i === 0 ? GrammarBuilder.bytes([[form.lead + a, form.lead + b]]) : GrammarBuilder.bytes([[0x80 + a, 0x80 + b]]))));
      }
    }
  }
  return alts;
}

/** Bytes of the hex digits with values a..b, both cases. */
function hexDigitBytes(a: number, b: number): [number, number][] {
  const out: [number, number][] = [];
  if (a <= 9) out.push([0x30 + a, 0x30 + Math.min(b, 9)]);
  if (b >= 10) {
    const lo = Math.max(a, 10) - 10;
    const hi = b - 10;
    out.push([0x41 + lo, 0x41 + hi], [0x61 + lo, 0x61 + hi]);
  }
  return out;
}

function setKey(set: CodePointSet): string {
  return set.map(([lo, hi]) => (lo === hi ? lo.toString(16) : `${lo.toString(16)}-${hi.toString(16)}`)).join(',');
}

/**
 * The rule for one JSON-encoded string character whose value is in `set`: raw UTF-8 where JSON
 * allows it, the short escapes, and `\uXXXX` (either hex case) for BMP code points. Memoized per
 * set; `stringCharRule(b, ANY_CHAR)` is the generic JSON string character. An empty set gives a
 * rule without alternatives (matches nothing; pruned later).
 */
export function stringCharRule(b: GrammarBuilder, set: CodePointSet): number {
  const chars = intersectSets(set, ANY_CHAR);
  return b.memoize(`char:${setKey(chars)}`, () => {
    const alts = utf8Alternatives(intersectSets(chars, RAW_ALLOWED));
    const escapes: GrammarElement[][] = [];
    const short = SHORT_ESCAPES.filter(([cp]) => intersectSets(chars, [[cp, cp]]).length > 0).map(([, byte]) => byte);
    if (short.length > 0) escapes.push([GrammarBuilder.bytes(normalizeSet(short.map((x): [number, number] => [x, x])))]);
    for (const [lo, hi] of intersectSets(chars, [[0, 0xffff]])) {
      for (const tuple of splitDigitRanges(BigInt(lo), BigInt(hi), [16, 16, 16, 16])) {
        escapes.push([GrammarBuilder.byte(0x75), ...tuple.map(([x, y]) => GrammarBuilder.bytes(hexDigitBytes(x, y)))]);
      }
    }
    if (escapes.length > 0) alts.push([GrammarBuilder.byte(0x5c), GrammarBuilder.ref(b.rule(escapes))]);
    return b.rule(alts);
  });
}

/** A pattern feature the compiler does not support (or a pattern that is not a valid `u`-mode regex). */
export class PatternError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A parsed regex. `group` is a parenthesized (or top-level) alternation; `start`/`end` are `^`/`$`. */
export type RegexNode =
  | { type: 'chars'; set: CodePointSet }
  | { type: 'seq'; items: RegexNode[] }
  | { type: 'group'; alts: RegexNode[] }
  | { type: 'repeat'; node: RegexNode; min: number; max: number }
  | { type: 'start' }
  | { type: 'end' };

const SYNTAX = new Set(Array.from('^$\\.*+?()[]{}|/', (c) => c.codePointAt(0)!));

/** Recursive-descent parser of `u`-mode regex syntax (the pattern was already accepted by `new RegExp(p, 'u')`). */
class RegexParser {
  private readonly cps: number[];
  private i = 0;
  constructor(private readonly pattern: string) {
    this.cps = Array.from(pattern, (c) => c.codePointAt(0)!);
  }

  parse(): RegexNode {
    const node = this.alternation();
    if (this.i < this.cps.length) throw new PatternError(`unexpected '${String.fromCodePoint(this.cps[this.i]!)}'`);
    return node;
  }

  private peek(offset = 0): number | undefined {
    return this.cps[this.i + offset];
  }

  private eat(c: string): boolean {
    if (this.peek() === c.codePointAt(0)) {
      this.i++;
      return true;
    }
    return false;
  }

  private alternation(): RegexNode {
    const alts = [this.sequence()];
    while (this.eat('|')) alts.push(this.sequence());
    return { type: 'group', alts };
  }

  private sequence(): RegexNode {
    const items: RegexNode[] = [];
    for (let c = this.peek(); c !== undefined && c !== 0x7c && c !== 0x29; c = this.peek()) items.push(this.quantified());
    return { type: 'seq', items };
  }

  private quantified(): RegexNode {
    const atom = this.atom();
    let min: number;
    let max: number;
    if (this.eat('*')) [min, max] = [0, Infinity];
    else if (this.eat('+')) [min, max] = [1, Infinity];
    else if (this.eat('?')) [min, max] = [0, 1];
    else if (this.peek() === 0x7b) {
      this.i++;
      min = this.integer();
      max = min;
      if (this.eat(',')) max = this.peek() === 0x7d ? Infinity : this.integer();
      if (!this.eat('}')) throw new PatternError('malformed quantifier');
    } else return atom;
    this.eat('?'); // lazy quantifiers match the same strings as greedy ones
    if (atom.type === 'start' || atom.type === 'end') throw new PatternError('quantified anchor');
    return { type: 'repeat', node: atom, min, max };
  }

  private integer(): number {
    const start = this.i;
    while (this.peek() !== undefined && this.peek()! >= 0x30 && this.peek()! <= 0x39) this.i++;
    if (start === this.i) throw new PatternError('malformed quantifier');
    return Number(String.fromCodePoint(...this.cps.slice(start, this.i)));
  }

  private atom(): RegexNode {
    const c = this.cps[this.i++]!;
    switch (c) {
      case 0x5e: // ^
        return { type: 'start' };
      case 0x24: // $
        return { type: 'end' };
      case 0x2e: // .
        return { type: 'chars', set: DOT };
      case 0x5b: // [
        return { type: 'chars', set: this.characterClass() };
      case 0x28: {
        // (
        if (this.eat('?')) {
          if (this.eat(':')) {
            // non-capturing group
          } else if (this.peek() === 0x3c && this.peek(1) !== 0x3d && this.peek(1) !== 0x21) {
            // (?<name>…): a named capturing group; the name does not change what matches
            while (this.peek() !== undefined && this.peek() !== 0x3e) this.i++;
            this.i++;
          } else {
            throw new PatternError('lookaround assertions are not supported');
          }
        }
        const group = this.alternation();
        if (!this.eat(')')) throw new PatternError('unbalanced parenthesis');
        return group;
      }
      case 0x5c: // backslash
        return this.atomEscape();
      default:
        if (c === 0x2a || c === 0x2b || c === 0x3f || c === 0x7b || c === 0x7d || c === 0x5d || c === 0x29) {
          throw new PatternError(`unexpected '${String.fromCodePoint(c)}'`);
        }
        return { type: 'chars', set: [[c, c]] };
    }
  }

  private atomEscape(): RegexNode {
    const c = this.peek();
    if (c === 0x62 || c === 0x42) throw new PatternError('word boundary assertions are not supported');
    if (c !== undefined && c >= 0x31 && c <= 0x39) throw new PatternError('backreferences are not supported');
    if (c === 0x6b) throw new PatternError('backreferences are not supported');
    return { type: 'chars', set: this.escape(false) };
  }

  /** The code points of an escape after its backslash; `inClass`: `\b` is backspace and `\-` a hyphen. */
  private escape(inClass: boolean): CodePointSet {
    const c = this.cps[this.i++];
    if (c === undefined) throw new PatternError('trailing backslash');
    const one = (cp: number): CodePointSet => [[cp, cp]];
    switch (String.fromCodePoint(c)) {
      case 'd':
        return DIGIT;
      case 'D':
        return complementSet(DIGIT);
      case 'w':
        return WORD;
      case 'W':
        return complementSet(WORD);
      case 's':
        return SPACE;
      case 'S':
        return complementSet(SPACE);
      case 't':
        return one(0x09);
      case 'n':
        return one(0x0a);
      case 'v':
        return one(0x0b);
      case 'f':
        return one(0x0c);
      case 'r':
        return one(0x0d);
      case '0':
        return one(0);
      case 'b':
        if (inClass) return one(0x08);
        break;
      case '-':
        if (inClass) return one(0x2d);
        break;
      case 'c': {
        const letter = this.cps[this.i++];
        if (letter === undefined) throw new PatternError('malformed \\c escape');
        return one(letter % 32);
      }
      case 'x':
        return one(this.hex(2));
      case 'u': {
        if (this.eat('{')) {
          const start = this.i;
          while (this.peek() !== undefined && this.peek() !== 0x7d) this.i++;
          const cp = parseInt(String.fromCodePoint(...this.cps.slice(start, this.i)), 16);
          this.i++;
          return one(cp);
        }
        const unit = this.hex(4);
        // In u-mode an escaped surrogate pair is one code point.
        if (unit >= 0xd800 && unit <= 0xdbff && this.peek() === 0x5c && this.peek(1) === 0x75) {
          const save = this.i;
          this.i += 2;
          const low = /^[0-9a-fA-F]{4}$/.test(String.fromCodePoint(...this.cps.slice(this.i, this.i + 4))) ? this.hex(4) : -1;
          if (low >= 0xdc00 && low <= 0xdfff) return one(0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00));
          this.i = save;
        }
        return one(unit);
      }
      case 'p':
      case 'P':
        throw new PatternError('Unicode property escapes are not supported');
      default:
        if (SYNTAX.has(c)) return one(c);
    }
    throw new PatternError(`unsupported escape '\\${String.fromCodePoint(c)}'`);
  }

  private hex(digits: number): number {
    const text = String.fromCodePoint(...this.cps.slice(this.i, this.i + digits));
    if (!new RegExp(`^[0-9a-fA-F]{${digits}}$`).test(text)) throw new PatternError('malformed hex escape');
    this.i += digits;
    return parseInt(text, 16);
  }

  private characterClass(): CodePointSet {
    const negated = this.eat('^');
    const ranges: [number, number][] = [];
    const single = (set: CodePointSet) => (set.length === 1 && set[0]![0] === set[0]![1] ? set[0]![0] : undefined);
    while (!this.eat(']')) {
      if (this.peek() === undefined) throw new PatternError('unterminated character class');
      const first = this.classAtom();
      if (this.peek() === 0x2d && this.peek(1) !== undefined && this.peek(1) !== 0x5d) {
        this.i++;
        const second = this.classAtom();
        const lo = single(first);
        const hi = single(second);
        if (lo === undefined || hi === undefined || lo > hi) throw new PatternError('malformed class range');
        ranges.push([lo, hi]);
      } else {
        ranges.push(...first);
      }
    }
    const set = normalizeSet(ranges);
    return negated ? complementSet(set) : set;
  }

  private classAtom(): CodePointSet {
    const c = this.cps[this.i++]!;
    if (c === 0x5c) return this.escape(true);
    return [[c, c]];
  }
}

/**
 * Parses a JSON-schema `pattern` (ECMA-262 syntax, `u` flag). Throws {@link PatternError} for
 * syntax the pattern compiler does not support (lookarounds, backreferences, word boundaries,
 * Unicode property escapes) or an invalid pattern.
 */
export function parsePattern(pattern: string): RegexNode {
  try {
    new RegExp(pattern, 'u');
  } catch (e) {
    throw new PatternError(`not a valid regular expression (${(e as Error).message})`);
  }
  return new RegexParser(pattern).parse();
}

/** Largest finite bound of a repetition in a parsed pattern (0 when none). */
export function largestRepeatBound(node: RegexNode): number {
  switch (node.type) {
    case 'seq':
      return Math.max(0, ...node.items.map(largestRepeatBound));
    case 'group':
      return Math.max(0, ...node.alts.map(largestRepeatBound));
    case 'repeat':
      return Math.max(node.min, node.max === Infinity ? 0 : node.max, largestRepeatBound(node.node));
    default:
      return 0;
  }
}

function nullable(node: RegexNode): boolean {
  switch (node.type) {
    case 'chars':
      return false;
    case 'seq':
      return node.items.every(nullable);
    case 'group':
      return node.alts.some(nullable);
    case 'repeat':
      return node.min === 0 || nullable(node.node);
    default:
      return true;
  }
}

/**
 * The same language minus the empty string (undefined when nothing is left). Repeating a node
 * that matches ε would make a grammar rule that derives itself without consuming a byte; since
 * `x{m,n}` with ε in x equals `(x minus ε){0,n}`, repetitions are compiled over this.
 */
function nonEmpty(node: RegexNode): RegexNode | undefined {
  switch (node.type) {
    case 'chars':
      return node;
    case 'seq': {
      // ab…z minus ε: a non-empty a then the rest, or an empty a then (b…z minus ε), and so on.
      const alts: RegexNode[] = [];
      for (let i = 0; i < node.items.length; i++) {
        const head = nonEmpty(node.items[i]!);
        if (head) alts.push({ type: 'seq', items: [head, ...node.items.slice(i + 1)] });
        if (!nullable(node.items[i]!)) break;
      }
      return alts.length > 0 ? { type: 'group', alts } : undefined;
    }
    case 'group': {
      const alts = node.alts.map(nonEmpty).filter((a): a is RegexNode => a !== undefined);
      return alts.length > 0 ? { type: 'group', alts } : undefined;
    }
    case 'repeat': {
      if (node.max === 0) return undefined;
      if (!nullable(node.node)) return { ...node, min: Math.max(node.min, 1) };
      const inner = nonEmpty(node.node);
      return inner && { type: 'repeat', node: inner, min: 1, max: node.max };
    }
    default:
      return undefined;
  }
}

/**
 * Compiles a parsed pattern to the rule for the JSON text between the quotes of every string value
 * that `new RegExp(pattern, 'u').test(value)` accepts. Patterns are unanchored, so an alternative
 * that does not start with `^` gets any characters before it, one that does not end with `$` any
 * after it. Anchors are only allowed at the edges (also inside a group at an edge, e.g.
 * `(^a$|^b$)`); elsewhere they throw {@link PatternError}.
 */
export function patternRule(b: GrammarBuilder, node: RegexNode): number {
  const anyChars = () => GrammarBuilder.ref(b.star(stringCharRule(b, ANY_CHAR)));

  const compile = (n: RegexNode, atStart: boolean, atEnd: boolean): GrammarElement[] => {
    switch (n.type) {
      case 'chars':
        return [GrammarBuilder.ref(stringCharRule(b, n.set))];
      case 'group':
        return [GrammarBuilder.ref(b.rule(n.alts.map((alt) => compile(alt, atStart, atEnd))))];
      case 'seq':
        return sequence(n.items, atStart, atEnd);
      case 'repeat': {
        const inner = nullable(n.node) ? nonEmpty(n.node) : n.node;
        if (!inner) return [];
        const x = b.ruleOf(compile(inner, false, false));
        return b.repeat(x, nullable(n.node) ? 0 : n.min, n.max);
      }
      default:
        throw new PatternError(`'${n.type === 'start' ? '^' : '$'}' is only supported at the start or end of the pattern`);
    }
  };

  const sequence = (items: RegexNode[], atStart: boolean, atEnd: boolean): GrammarElement[] => {
    let first = 0;
    let last = items.length; // exclusive
    let anchoredStart = !atStart;
    let anchoredEnd = !atEnd;
    if (atStart && items[0]?.type === 'start') {
      anchoredStart = true;
      first = 1;
    }
    if (atEnd && last > first && items[last - 1]?.type === 'end') {
      anchoredEnd = true;
      last--;
    }
    // A bare group at an edge decides the anchoring of each of its alternatives itself.
    const startGroup = !anchoredStart && items[first]?.type === 'group' && first < last;
    const endGroup = !anchoredEnd && items[last - 1]?.type === 'group' && last > first;
    const middle: GrammarElement[] = [];
    for (let i = first; i < last; i++) {
      middle.push(...compile(items[i]!, startGroup && i === first, endGroup && i === last - 1));
    }
    const before = !anchoredStart && !startGroup;
    const after = !anchoredEnd && !endGroup;
    // One run of arbitrary characters is enough when nothing sits between the two.
    if (before && after && middle.length === 0) return [anyChars()];
    return [...(before ? [anyChars()] : []), ...middle, ...(after ? [anyChars()] : [])];
  };

  return b.ruleOf(compile(node, true, true));
}
