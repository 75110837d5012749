/**
 * The grammar IR shared with the native matcher: a byte-level context-free grammar.
 *
 * `rules[r]` is a list of alternatives; an alternative is a sequence of elements; an empty
 * alternative derives the empty string. An element is either one byte out of a set of inclusive
 * ranges, or a reference to another rule. Grammars handed to the native side are checked by
 * {@link checkGrammar}: no left recursion (so no rule derives itself without consuming a byte),
 * every reachable rule can derive some finite byte string, ranges are within 0..255.
 */

/** One grammar element: one byte out of inclusive `ranges` (0..255), or a reference to rule `rule`. */
export type GrammarElement = { kind: 'bytes'; ranges: [number, number][] } | { kind: 'ref'; rule: number };

/** A byte-level context-free grammar; `rules[r]` = alternatives, each a sequence of elements (`[]` = ε). */
export interface GrammarIR {
  root: number;
  rules: GrammarElement[][][];
}

/** A grammar that violates the IR's constraints. `rules` names the rules involved, when known. */
export class GrammarError extends Error {
  /** Indices of the offending rules (a left-recursive cycle, an unproductive rule, …). */
  readonly rules: number[];
  constructor(message: string, rules: number[] = []) {
    super(message);
    this.name = new.target.name;
    this.rules = rules;
  }
}

/** Element kinds in the flat encoding. */
const KIND_BYTES = 0;
const KIND_REF = 1;

/**
 * Flattens a grammar for the native side:
 * `[n_rules, root, per rule: n_alts, per alt: n_elems, per elem: kind (0 bytes, 1 ref), then for
 * bytes: n_ranges, lo0, hi0, …; for ref: the rule index]`.
 * The grammar is checked first ({@link checkGrammar}); a violation throws {@link GrammarError}.
 */
export function encodeGrammar(ir: GrammarIR): Int32Array {
  checkGrammar(ir);
  const out: number[] = [ir.rules.length, ir.root];
  for (const alternatives of ir.rules) {
    out.push(alternatives.length);
    for (const alt of alternatives) {
      out.push(alt.length);
      for (const el of alt) {
        if (el.kind === 'bytes') {
          out.push(KIND_BYTES, el.ranges.length);
          for (const [lo, hi] of el.ranges) out.push(lo, hi);
        } else {
          out.push(KIND_REF, el.rule);
        }
      }
    }
  }
  return Int32Array.from(out);
}

/** Which rules can derive the empty string (fixpoint; a byte element never can). */
export function nullableRules(ir: GrammarIR): boolean[] {
  const nullable = ir.rules.map(() => false);
  for (let changed = true; changed; ) {
    changed = false;
    ir.rules.forEach((alternatives, r) => {
      if (nullable[r]) return;
      if (alternatives.some((alt) => alt.every((el) => el.kind === 'ref' && nullable[el.rule]))) {
        nullable[r] = true;
        changed = true;
      }
    });
  }
  return nullable;
}

/** Which rules can derive at least one finite byte string (fixpoint). */
function productiveRules(ir: GrammarIR): boolean[] {
  const productive = ir.rules.map(() => false);
  for (let changed = true; changed; ) {
    changed = false;
    ir.rules.forEach((alternatives, r) => {
      if (productive[r]) return;
      if (alternatives.some((alt) => alt.every((el) => el.kind === 'bytes' || productive[el.rule]))) {
        productive[r] = true;
        changed = true;
      }
    });
  }
  return productive;
}

/** Rules reachable from the root, in discovery order (root first). */
function reachableRules(ir: GrammarIR): number[] {
  const seen = new Set<number>([ir.root]);
  const order = [ir.root];
  for (let i = 0; i < order.length; i++) {
    for (const alt of ir.rules[order[i]!]!) {
      for (const el of alt) {
        if (el.kind === 'ref' && !seen.has(el.rule)) {
          seen.add(el.rule);
          order.push(el.rule);
        }
      }
    }
  }
  return order;
}

/**
 * Throws {@link GrammarError} unless `ir` meets the contract the native matcher relies on: the root
 * and every reference name an existing rule; every byte element has at least one range, each
 * `lo <= hi` within 0..255; every reachable rule has an alternative and can derive a finite string
 * (so a matcher never walks into a dead end); no left recursion, which also rules out cycles that
 * derive a rule from itself without consuming a byte (a pushdown matcher would loop on them).
 */
export function checkGrammar(ir: GrammarIR): void {
  const n = ir.rules.length;
  if (!Number.isInteger(ir.root) || ir.root < 0 || ir.root >= n) throw new GrammarError(`root ${ir.root} is not a rule`);
  ir.rules.forEach((alternatives, r) => {
    for (const alt of alternatives) {
      for (const el of alt) {
        if (el.kind === 'ref') {
          if (!Number.isInteger(el.rule) || el.rule < 0 || el.rule >= n) {
            throw new GrammarError(`rule ${r} refers to missing rule ${el.rule}`, [r]);
          }
        } else if (el.kind === 'bytes') {
          if (el.ranges.length === 0) throw new GrammarError(`rule ${r} has a byte element without ranges`, [r]);
          for (const [lo, hi] of el.ranges) {
            if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 0 || hi > 255 || lo > hi) {
              throw new GrammarError(`rule ${r} has a bad byte range [${lo}, ${hi}]`, [r]);
            }
          }
        } else {
          throw new GrammarError(`rule ${r} has an element of unknown kind`, [r]);
        }
      }
    }
  });
  const reachable = reachableRules(ir);
  const productive = productiveRules(ir);
  for (const r of reachable) {
    if (ir.rules[r]!.length === 0) throw new GrammarError(`rule ${r} has no alternatives`, [r]);
    if (!productive[r]) throw new GrammarError(`rule ${r} derives no finite byte string`, [r]);
  }
  const cycle = findLeftRecursion(ir);
  if (cycle) throw new GrammarError(`left recursion through rules ${cycle.join(' -> ')}`, cycle);
}

/**
 * A cycle of the "can start with" relation (A -> B when B appears in an alternative of A after only
 * nullable elements) as rule indices, first = last; undefined when there is none. Such a cycle is
 * exactly left recursion, which includes every way for a rule to derive itself without consuming a byte.
 */
export function findLeftRecursion(ir: GrammarIR): number[] | undefined {
  const nullable = nullableRules(ir);
  const edges = ir.rules.map((alternatives) => {
    const targets = new Set<number>();
    for (const alt of alternatives) {
      for (const el of alt) {
        if (el.kind === 'bytes') break;
        targets.add(el.rule);
        if (!nullable[el.rule]) break;
      }
    }
    return [...targets];
  });
  // Iterative DFS with colours (0 new, 1 on the stack, 2 done) so deep grammars do not overflow the JS stack.
  const colour = new Uint8Array(ir.rules.length);
  for (let start = 0; start < ir.rules.length; start++) {
    if (colour[start] !== 0) continue;
    const path: number[] = [start];
    const next: number[] = [0];
    colour[start] = 1;
    while (path.length > 0) {
      const r = path[path.length - 1]!;
      const i = next[next.length - 1]!;
      const targets = edges[r]!;
      if (i === targets.length) {
        colour[r] = 2;
        path.pop();
        next.pop();
        continue;
      }
      next[next.length - 1] = i + 1;
      const t = targets[i]!;
      if (colour[t] === 1) return [...path.slice(path.indexOf(t)), t];
      if (colour[t] === 0) {
        colour[t] = 1;
        path.push(t);
        next.push(0);
      }
    }
  }
  return undefined;
}

/**
 * Drops what can never take part in a match: alternatives that refer to rules deriving no finite
 * string, then forwarding rules and rules the root cannot reach; renumbers the rest (root becomes
 * rule 0). The language is unchanged. Returns
 * undefined when the root itself derives nothing (the grammar matches nothing).
 */
export function pruneGrammar(ir: GrammarIR): GrammarIR | undefined {
  const productive = productiveRules(ir);
  if (!productive[ir.root]) return undefined;
  const kept = ir.rules.map((alternatives) =>
    alternatives.filter((alt) => alt.every((el) => el.kind === 'bytes' || productive[el.rule])),
  );
  // A rule that is just another rule (one alternative, one reference) is skipped: compilers make
  // many such forwarding rules (a $ref, a schema wrapped in allOf) and they only lengthen stacks.
  const alias = (r: number): number => {
    const seen = new Set<number>();
    for (;;) {
      const alts = kept[r]!;
      const only = alts.length === 1 && alts[0]!.length === 1 ? alts[0]![0]! : undefined;
      if (only?.kind !== 'ref' || seen.has(r)) return r;
      seen.add(r);
      r = only.rule;
    }
  };
  const resolved: GrammarIR = {
    root: alias(ir.root),
    rules: kept.map((alternatives) =>
      alternatives.map((alt) => alt.map((el): GrammarElement => (el.kind === 'ref' ? { kind: 'ref', rule: alias(el.rule) } : el))),
    ),
  };
  const order = reachableRules(resolved);
  const index = new Map(order.map((r, i) => [r, i]));
  return {
    root: 0,
    rules: order.map((r) =>
      resolved.rules[r]!.map((alt) =>
        alt.map((el): GrammarElement => (el.kind === 'ref' ? { kind: 'ref', rule: index.get(el.rule)! } : el)),
      ),
    ),
  };
}

/** Readable text of a grammar (GBNF-like, for debugging and error messages). */
export function formatGrammar(ir: GrammarIR): string {
  const byte = (b: number) =>
    b >= 0x21 && b <= 0x7e && b !== 0x5c && b !== 0x5d && b !== 0x2d && b !== 0x5e ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  const element = (el: GrammarElement) =>
    el.kind === 'ref'
      ? `r${el.rule}`
      : `[${el.ranges.map(([lo, hi]) => (lo === hi ? byte(lo) : `${byte(lo)}-${byte(hi)}`)).join('')}]`;
  return ir.rules
    .map((alternatives, r) => {
      const body = alternatives.map((alt) => (alt.length === 0 ? 'ε' : alt.map(element).join(' '))).join(' | ');
      return `${r === ir.root ? 'root=' : ''}r${r} ::= ${body}`;
    })
    .join('\n');
}

/** A matcher stack frame: position `pos` in alternative `alt` of rule `rule`, over `parent`. */
interface Frame {
  readonly rule: number;
  readonly alt: number;
  readonly pos: number;
  readonly parent: Frame | null;
  /** Unique per (rule, alt, pos, parent): frames are interned so stacks compare by id. */
  readonly id: number;
}

/**
 * A straightforward pushdown interpreter of a {@link GrammarIR}, used by tests as the reference for
 * the native matcher. It keeps the set of all parse stacks whose top is a byte element (every
 * ambiguity followed at once); frames are shared and interned, so the set stays small even for
 * recursive grammars. A reference as the last element of an alternative replaces its frame (a tail
 * call), which keeps right-recursive repetition (`R ::= x R | ε`) at constant depth.
 */
export class ReferenceMatcher {
  private readonly rules: GrammarElement[][][];
  /** Interned frames, shared by clones (frames are immutable). */
  private readonly frames: Map<string, Frame>;
  /** Shortest byte length each rule derives; computed on first use, shared by clones. */
  private shortest: { rules: number[]; suffix: Map<number, number> } | undefined;
  private stacks: Frame[];
  private complete: boolean;

  /** Checks the grammar ({@link checkGrammar}) and starts at its root. */
  constructor(ir: GrammarIR) {
    checkGrammar(ir);
    this.rules = ir.rules;
    this.frames = new Map();
    const out = new Map<number, Frame>();
    const seen = new Set<string>();
    const state = { complete: false };
    this.rules[ir.root]!.forEach((_, alt) => this.expand(ir.root, alt, 0, null, out, seen, state));
    this.stacks = [...out.values()];
    this.complete = state.complete;
  }

  /** Consumes byte `b` if the grammar allows it here; otherwise returns false and changes nothing. */
  acceptByte(b: number): boolean {
    const out = new Map<number, Frame>();
    const seen = new Set<string>();
    const state = { complete: false };
    for (const top of this.stacks) {
      const el = this.rules[top.rule]![top.alt]![top.pos]!;
      if (el.kind === 'bytes' && el.ranges.some(([lo, hi]) => b >= lo && b <= hi)) {
        this.expand(top.rule, top.alt, top.pos + 1, top.parent, out, seen, state);
      }
    }
    if (out.size === 0 && !state.complete) return false;
    this.stacks = [...out.values()];
    this.complete = state.complete;
    return true;
  }

  /** Consumes `bytes` in order; stops at the first byte that is not allowed and returns false (the bytes before it stay consumed). */
  acceptBytes(bytes: Iterable<number>): boolean {
    for (const b of bytes) if (!this.acceptByte(b)) return false;
    return true;
  }

  /** Whether the input so far is a complete sentence of the grammar. */
  isComplete(): boolean {
    return this.complete;
  }

  /** The bytes that may come next, ascending. */
  allowedBytes(): number[] {
    const allowed = new Uint8Array(256);
    for (const top of this.stacks) {
      const el = this.rules[top.rule]![top.alt]![top.pos]!;
      if (el.kind === 'bytes') for (const [lo, hi] of el.ranges) allowed.fill(1, lo, hi + 1);
    }
    const out: number[] = [];
    allowed.forEach((a, b) => a && out.push(b));
    return out;
  }

  /** An independent copy of this matcher in its current state. */
  clone(): ReferenceMatcher {
    // A shallow copy is independent: stacks are replaced, never mutated, and frames are immutable.
    return Object.assign(Object.create(ReferenceMatcher.prototype) as ReferenceMatcher, this);
  }

  /**
   * The fewest bytes that complete the input from here (0 when it is complete already; Infinity
   * when nothing can, which a checked grammar never reaches). Lets a caller steer toward an end.
   */
  minBytesToComplete(): number {
    if (this.complete) return 0;
    const shortest = this.shortestLengths();
    let best = Infinity;
    for (const top of this.stacks) best = Math.min(best, this.remaining(top.rule, top.alt, top.pos, top.parent, shortest));
    return best;
  }

  /** Shortest derivation length of every rule (fixpoint over alternatives). */
  private shortestLengths(): { rules: number[]; suffix: Map<number, number> } {
    if (!this.shortest) {
      const len = this.rules.map(() => Infinity);
      for (let changed = true; changed; ) {
        changed = false;
        this.rules.forEach((alternatives, r) => {
          for (const alt of alternatives) {
            let sum = 0;
            for (const el of alt) sum += el.kind === 'bytes' ? 1 : len[el.rule]!;
            if (sum < len[r]!) {
              len[r] = sum;
              changed = true;
            }
          }
        });
      }
      this.shortest = { rules: len, suffix: new Map() };
    }
    return this.shortest;
  }

  /** Shortest length of elements pos.. of rule/alt, then of what each parent has left. */
  private remaining(rule: number, alt: number, pos: number, parent: Frame | null, shortest: { rules: number[]; suffix: Map<number, number> }): number {
    let sum = 0;
    for (const el of this.rules[rule]![alt]!.slice(pos)) sum += el.kind === 'bytes' ? 1 : shortest.rules[el.rule]!;
    if (!parent) return sum;
    let rest = shortest.suffix.get(parent.id);
    if (rest === undefined) {
      rest = this.remaining(parent.rule, parent.alt, parent.pos + 1, parent.parent, shortest);
      shortest.suffix.set(parent.id, rest);
    }
    return sum + rest;
  }

  private frame(rule: number, alt: number, pos: number, parent: Frame | null): Frame {
    const key = `${rule},${alt},${pos},${parent ? parent.id : -1}`;
    let f = this.frames.get(key);
    if (!f) {
      f = { rule, alt, pos, parent, id: this.frames.size };
      this.frames.set(key, f);
    }
    return f;
  }

  /**
   * Closes position `pos` of `rule`/`alt` over `parent`: pops finished alternatives, descends into
   * references, and collects the stacks whose top is a byte element. Terminates because the grammar
   * has no left recursion; `seen` prunes positions reached twice through nullable paths.
   */
  private expand(
    rule: number,
    alt: number,
    pos: number,
    parent: Frame | null,
    out: Map<number, Frame>,
    seen: Set<string>,
    state: { complete: boolean },
  ): void {
    const key = `${rule},${alt},${pos},${parent ? parent.id : -1}`;
    if (seen.has(key)) return;
    seen.add(key);
    const seq = this.rules[rule]![alt]!;
    if (pos === seq.length) {
      if (parent === null) state.complete = true;
      else this.expand(parent.rule, parent.alt, parent.pos + 1, parent.parent, out, seen, state);
      return;
    }
    const el = seq[pos]!;
    if (el.kind === 'bytes') {
      const f = this.frame(rule, alt, pos, parent);
      out.set(f.id, f);
      return;
    }
    const cont = pos === seq.length - 1 ? parent : this.frame(rule, alt, pos, parent);
    // A continuation that is the parent itself resumes at parent.pos + 1, like any popped frame.
    this.rules[el.rule]!.forEach((_, a) => this.expand(el.rule, a, 0, cont, out, seen, state));
  }
}

/**
 * Builds a {@link GrammarIR}: rules are deduplicated by structure, and helpers that many parts of a
 * grammar use (repetitions of a rule, the JSON string character, …) are memoized by key, so a
 * compiled schema shares them instead of repeating them.
 */
export class GrammarBuilder {
  readonly rules: GrammarElement[][][] = [];
  private readonly byStructure = new Map<string, number>();
  private readonly memo = new Map<string, number>();

  /** One byte from inclusive ranges. */
  static bytes(ranges: [number, number][]): GrammarElement {
    return { kind: 'bytes', ranges };
  }

  /** Exactly byte `b`. */
  static byte(b: number): GrammarElement {
    return { kind: 'bytes', ranges: [[b, b]] };
  }

  /** A reference to rule `rule`. */
  static ref(rule: number): GrammarElement {
    return { kind: 'ref', rule };
  }

  /** The bytes of `bytes` in order, one element each. */
  static literal(bytes: Uint8Array | number[]): GrammarElement[] {
    return Array.from(bytes, (b) => GrammarBuilder.byte(b));
  }

  /** A rule with these alternatives (an existing identical rule is reused). `[]` = matches nothing. */
  rule(alternatives: GrammarElement[][]): number {
    const key = JSON.stringify(alternatives);
    let r = this.byStructure.get(key);
    if (r === undefined) {
      r = this.rules.push(alternatives) - 1;
      this.byStructure.set(key, r);
    }
    return r;
  }

  /** A rule with one alternative, or the rule itself when the sequence is a lone reference. */
  ruleOf(sequence: GrammarElement[]): number {
    const only = sequence.length === 1 ? sequence[0]! : undefined;
    return only?.kind === 'ref' ? only.rule : this.rule([sequence]);
  }

  /** A rule whose alternatives are set later with {@link define} (for recursion). */
  reserve(): number {
    return this.rules.push([]) - 1;
  }

  /** Sets the alternatives of a reserved rule. */
  define(rule: number, alternatives: GrammarElement[][]): void {
    this.rules[rule] = alternatives;
  }

  /** The rule `build` makes, made once per `key`. */
  memoize(key: string, build: () => number): number {
    let r = this.memo.get(key);
    if (r === undefined) {
      r = build();
      this.memo.set(key, r);
    }
    return r;
  }

  /** `x*` as `R ::= x R | ε`. `x` must not derive the empty string (that would be an ε-cycle). */
  star(x: number): number {
    return this.memoize(`star:${x}`, () => {
      const r = this.reserve();
      this.define(r, [[GrammarBuilder.ref(x), GrammarBuilder.ref(r)], []]);
      return r;
    });
  }

  /** Exactly `n >= 1` copies of `x`, as a chain `E_n ::= x E_(n-1)` shared by every count. */
  private exactly(x: number, n: number): number {
    let r = x;
    for (let k = 2; k <= n; k++) {
      const prev = r;
      r = this.memoize(`exactly:${x}:${k}`, () => this.rule([[GrammarBuilder.ref(x), GrammarBuilder.ref(prev)]]));
    }
    return r;
  }

  /** Up to `n >= 1` copies of `x`, as nested optionals `U_n ::= x U_(n-1) | ε` shared by every bound. */
  private upTo(x: number, n: number): number {
    let r = this.memoize(`upto:${x}:1`, () => this.rule([[GrammarBuilder.ref(x)], []]));
    for (let k = 2; k <= n; k++) {
      const prev = r;
      r = this.memoize(`upto:${x}:${k}`, () => this.rule([[GrammarBuilder.ref(x), GrammarBuilder.ref(prev)], []]));
    }
    return r;
  }

  /**
   * `x{min,max}` as a sequence (`max` may be Infinity): `min` copies (inline when few, else a shared
   * chain), then nested optionals up to `max` or a star. `x` must not derive ε when `max` is Infinity.
   */
  repeat(x: number, min: number, max: number): GrammarElement[] {
    const out: GrammarElement[] = [];
    if (min > 0 && min <= 4) for (let i = 0; i < min; i++) out.push(GrammarBuilder.ref(x));
    else if (min > 4) out.push(GrammarBuilder.ref(this.exactly(x, min)));
    if (max === Infinity) out.push(GrammarBuilder.ref(this.star(x)));
    else if (max > min) out.push(GrammarBuilder.ref(this.upTo(x, max - min)));
    return out;
  }

  /** The grammar rooted at `root`, as built (not pruned). */
  build(root: number): GrammarIR {
    return { root, rules: this.rules };
  }
}
