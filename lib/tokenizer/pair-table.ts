/**
 * An open-addressing hash table from a pair of symbol ids to a merge: the merge's priority and the
 * id of the symbol it produces. Both tokenizers look a pair up for every adjacent pair they
 * consider, hundreds of thousands of times per megabyte, so the table lives in typed arrays and a
 * lookup allocates nothing.
 */
export class PairTable {
  private readonly lefts: Int32Array;
  private readonly rights: Int32Array;
  private readonly priorities: Float64Array;
  private readonly results: Int32Array;
  private readonly mask: number;
  private count = 0;

  /** `capacity`: the most entries it will hold. */
  constructor(capacity: number) {
    let size = 16;
    while (size < capacity * 2) size *= 2;
    this.mask = size - 1;
    this.lefts = new Int32Array(size).fill(-1);
    this.rights = new Int32Array(size);
    this.priorities = new Float64Array(size);
    this.results = new Int32Array(size);
  }

  get size(): number {
    return this.count;
  }

  private slot(left: number, right: number): number {
    let h = Math.imul(left, 0x9e3779b1) ^ Math.imul(right + 0x7f4a7c15, 0x85ebca6b);
    h ^= h >>> 15;
    let i = h & this.mask;
    while (this.lefts[i] !== -1 && (this.lefts[i] !== left || this.rights[i] !== right)) i = (i + 1) & this.mask;
    return i;
  }

  /**
   * Adds the merge of `left` then `right` into `result` with `priority` (lower merges first),
   * unless the pair is already there: the first entry of a pair wins, as in a merges list where a
   * repeated pair keeps its first rank.
   */
  add(left: number, right: number, priority: number, result: number): void {
    const i = this.slot(left, right);
    if (this.lefts[i] !== -1) return;
    if (this.count * 2 >= this.lefts.length) throw new RangeError('PairTable is full');
    this.lefts[i] = left;
    this.rights[i] = right;
    this.priorities[i] = priority;
    this.results[i] = result;
    this.count++;
  }

  /** The slot holding the pair, or -1; read it with {@link priorityAt} and {@link resultAt}. */
  find(left: number, right: number): number {
    const i = this.slot(left, right);
    return this.lefts[i] === -1 ? -1 : i;
  }

  priorityAt(slot: number): number {
    return this.priorities[slot]!;
  }

  resultAt(slot: number): number {
    return this.results[slot]!;
  }
}

/**
 * A binary min-heap of candidate merges ordered by (priority, left position): the lowest priority
 * first and, among equals, the leftmost — the order both llama.cpp and Hugging Face apply merges
 * in. Storage is reused between words.
 */
export class MergeQueue {
  private priority = new Float64Array(64);
  private left = new Int32Array(64);
  private right = new Int32Array(64);
  private leftId = new Int32Array(64);
  private rightId = new Int32Array(64);
  length = 0;

  clear(): void {
    this.length = 0;
  }

  private before(a: number, b: number): boolean {
    const pa = this.priority[a]!;
    const pb = this.priority[b]!;
    return pa < pb || (pa === pb && this.left[a]! < this.left[b]!);
  }

  private swap(a: number, b: number): void {
    const p = this.priority[a]!;
    this.priority[a] = this.priority[b]!;
    this.priority[b] = p;
    let t = this.left[a]!;
    this.left[a] = this.left[b]!;
    this.left[b] = t;
    t = this.right[a]!;
    this.right[a] = this.right[b]!;
    this.right[b] = t;
    t = this.leftId[a]!;
    this.leftId[a] = this.leftId[b]!;
    this.leftId[b] = t;
    t = this.rightId[a]!;
    this.rightId[a] = this.rightId[b]!;
    this.rightId[b] = t;
  }

  private grow(): void {
    const n = this.priority.length * 2;
    const g = <T extends Float64Array | Int32Array>(a: T, make: (n: number) => T): T => {
      const out = make(n);
      out.set(a);
      return out;
    };
    this.priority = g(this.priority, (k) => new Float64Array(k));
    this.left = g(this.left, (k) => new Int32Array(k));
    this.right = g(this.right, (k) => new Int32Array(k));
    this.leftId = g(this.leftId, (k) => new Int32Array(k));
    this.rightId = g(this.rightId, (k) => new Int32Array(k));
  }

  push(priority: number, left: number, right: number, leftId: number, rightId: number): void {
    if (this.length === this.priority.length) this.grow();
    let i = this.length++;
    this.priority[i] = priority;
    this.left[i] = left;
    this.right[i] = right;
    this.leftId[i] = leftId;
    this.rightId[i] = rightId;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  /** Removes the first entry; read it beforehand with the `top*` getters. */
  pop(): void {
    const last = --this.length;
    if (last === 0) return;
    this.swap(0, last);
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= last) break;
      const r = l + 1;
      const child = r < last && this.before(r, l) ? r : l;
      if (!this.before(child, i)) break;
      this.swap(i, child);
      i = child;
    }
  }

  get topLeft(): number {
    return this.left[0]!;
  }
  get topRight(): number {
    return this.right[0]!;
  }
  get topLeftId(): number {
    return this.leftId[0]!;
  }
  get topRightId(): number {
    return this.rightId[0]!;
  }
}
