/**
 * Byte-level BPE (`tokenizer.ggml.model = gpt2`): each pre-tokenized word is UTF-8 encoded, its
 * bytes become the single-byte tokens of GPT-2's byte alphabet, and adjacent symbols merge by the
 * rank of the pair in `tokenizer.ggml.merges` — lowest rank first, leftmost first among equal
 * ranks — until no listed pair is left. Symbols live in a linked list over typed arrays and
 * candidate merges in a priority queue, so a word of n bytes takes O(n log n); finished words are
 * cached, since text repeats its words.
 */
import { BYTE_TO_CHAR, ByteBuffer, CHAR_TO_BYTE } from './bytes.js';
import { MergeQueue, PairTable } from './pair-table.js';
import type { Vocabulary } from './vocabulary.js';

/** Words longer than this (in UTF-16 units) are not cached: they rarely repeat. */
const MAX_CACHED_WORD = 64;
/** The cache is dropped and refilled when it holds this many words, bounding its memory. */
const MAX_CACHE_ENTRIES = 100_000;

export interface ByteLevelBpeOptions {
  /** A word that is itself a token becomes that token without merging (`ignore_merges`). */
  ignoreMerges: boolean;
  /**
   * Rank merges by the id of the token they produce, allowing any split (tiktoken's algorithm);
   * used for tiktoken vocabularies and whenever the file has no merges.
   */
  tiktokenRanks: boolean;
}

export class ByteLevelBpe {
  private readonly pairs: PairTable;
  /** Token id of each byte's alphabet character (-1 when the vocabulary lacks it). */
  private readonly byteToken = new Int32Array(256).fill(-1);
  /**
   * Strings a merge produces or consumes that are not tokens get ids from the vocabulary size up,
   * so merging never needs strings; their text is kept to fall back to bytes at the end.
   */
  private readonly extraTexts: string[] = [];
  private readonly cache = new Map<string, Int32Array>();
  private readonly bytes = new ByteBuffer();
  private readonly queue = new MergeQueue();
  private ids = new Int32Array(64);
  private next = new Int32Array(64);
  private prev = new Int32Array(64);

  constructor(
    private readonly vocab: Vocabulary,
    merges: readonly string[] | undefined,
    private readonly options: ByteLevelBpeOptions,
  ) {
    for (let b = 0; b < 256; b++) this.byteToken[b] = vocab.idOf.get(BYTE_TO_CHAR[b]!) ?? -1;
    const extraIds = new Map<string, number>();
    const idFor = (text: string): number => {
      const id = vocab.idOf.get(text);
      if (id !== undefined) return id;
      let extra = extraIds.get(text);
      if (extra === undefined) {
        extra = vocab.size + this.extraTexts.length;
        extraIds.set(text, extra);
        this.extraTexts.push(text);
      }
      return extra;
    };
    // Single bytes the vocabulary lacks still take part in merges under their own ids.
    for (let b = 0; b < 256; b++) if (this.byteToken[b] === -1) this.byteToken[b] = idFor(BYTE_TO_CHAR[b]!);

    if (options.tiktokenRanks || !merges) {
      this.pairs = tiktokenPairs(vocab);
      return;
    }
    this.pairs = new PairTable(merges.length);
    for (let rank = 0; rank < merges.length; rank++) {
      const merge = merges[rank]!;
      // llama.cpp splits at the first space after the first character, so a left part may start with one.
      const space = merge.indexOf(' ', 1);
      if (space < 0) continue;
      const left = merge.slice(0, space);
      const right = merge.slice(space + 1);
      this.pairs.add(idFor(left), idFor(right), rank, idFor(left + right));
    }
  }

  /** Appends the tokens of one pre-tokenized word to `out`. */
  encodeWord(word: string, out: number[]): void {
    const cacheable = word.length <= MAX_CACHED_WORD;
    if (cacheable) {
      const hit = this.cache.get(word);
      if (hit) {
        for (let i = 0; i < hit.length; i++) out.push(hit[i]!);
        return;
      }
    }
    const start = out.length;
    this.encodeUncached(word, out);
    if (cacheable) {
      if (this.cache.size >= MAX_CACHE_ENTRIES) this.cache.clear();
      this.cache.set(word, Int32Array.from(out.slice(start)));
    }
  }

  private encodeUncached(word: string, out: number[]): void {
    const bytes = this.bytes;
    bytes.setUtf8(word);
    const n = bytes.length;
    if (n === 0) return;
    if (this.options.ignoreMerges && n > 1) {
      let text = '';
      for (let i = 0; i < n; i++) text += BYTE_TO_CHAR[bytes.bytes[i]!];
      const whole = this.vocab.idOf.get(text);
      if (whole !== undefined) {
        out.push(whole);
        return;
      }
    }
    if (this.ids.length < n) {
      this.ids = new Int32Array(n * 2);
      this.next = new Int32Array(n * 2);
      this.prev = new Int32Array(n * 2);
    }
    const { ids, next, prev, queue, pairs } = this;
    for (let i = 0; i < n; i++) {
      ids[i] = this.byteToken[bytes.bytes[i]!]!;
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    queue.clear();
    const consider = (left: number, right: number) => {
      const slot = pairs.find(ids[left]!, ids[right]!);
      if (slot >= 0) queue.push(pairs.priorityAt(slot), left, right, ids[left]!, ids[right]!);
    };
    for (let i = 0; i + 1 < n; i++) consider(i, i + 1);
    while (queue.length > 0) {
      const left = queue.topLeft;
      const right = queue.topRight;
      const leftId = queue.topLeftId;
      const rightId = queue.topRightId;
      queue.pop();
      // A stale candidate: one side has merged since it was queued (ids[] of a merged-away symbol is -1).
      if (ids[left] !== leftId || ids[right] !== rightId || next[left] !== right) continue;
      ids[left] = pairs.resultAt(pairs.find(leftId, rightId));
      ids[right] = -1;
      const after = next[right]!;
      next[left] = after;
      if (after >= 0) prev[after] = left;
      if (prev[left]! >= 0) consider(prev[left]!, left);
      if (after >= 0) consider(left, after);
    }
    for (let i = 0; i >= 0; i = next[i]!) {
      const id = ids[i]!;
      if (id < this.vocab.size) {
        out.push(id);
        continue;
      }
      // Not a token (a merge produced text the vocabulary lacks): its bytes one by one, skipping
      // bytes that have no token, as llama.cpp does.
      for (const ch of this.extraTexts[id - this.vocab.size]!) {
        const code = ch.charCodeAt(0);
        const byte = code < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[code]! : -1;
        const token = byte >= 0 ? this.byteToken[byte]! : -1;
        if (token >= 0 && token < this.vocab.size) out.push(token);
      }
    }
  }
}

/**
 * The merges tiktoken would make: for every normal token, every way to cut it into two tokens is
 * a merge into it, ranked by the token's id (tiktoken's rank).
 */
function tiktokenPairs(vocab: Vocabulary): PairTable {
  const found: number[] = [];
  for (let id = 0; id < vocab.size; id++) {
    if (vocab.types[id] !== 1) continue;
    const text = vocab.tokens[id]!;
    for (let cut = 1; cut < text.length; cut++) {
      const left = vocab.idOf.get(text.slice(0, cut));
      if (left === undefined) continue;
      const right = vocab.idOf.get(text.slice(cut));
      if (right !== undefined) found.push(left, right, id);
    }
  }
  const table = new PairTable(found.length / 3);
  for (let i = 0; i < found.length; i += 3) table.add(found[i]!, found[i + 1]!, found[i + 2]!, found[i + 2]!);
  return table;
}
