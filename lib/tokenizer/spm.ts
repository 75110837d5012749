/**
 * SentencePiece BPE (`tokenizer.ggml.model = llama`: Llama 2, Mistral, Mixtral): the text, spaces
 * written as `▁`, starts as one symbol per code point; the adjacent pair whose concatenation is
 * the vocabulary piece with the highest score merges first (leftmost among equal scores), until no
 * pair forms a piece. Symbols that are not pieces fall back to their UTF-8 bytes as `<0xXX>` byte
 * tokens. Merge candidates come from a table of every way to cut every piece in two, built once.
 */
import { ByteBuffer } from './bytes.js';
import { MergeQueue, PairTable } from './pair-table.js';
import { TokenType, type Vocabulary } from './vocabulary.js';

/** Texts longer than this (in UTF-16 units) are not cached. */
const MAX_CACHED_TEXT = 64;
const MAX_CACHE_ENTRIES = 50_000;

export class SentencePieceBpe {
  private readonly pairs: PairTable;
  /** Token id of each `<0xXX>` byte token, -1 where missing. */
  private readonly byteToken = new Int32Array(256).fill(-1);
  /** Single code points that occur inside pieces without being pieces themselves, with ids from the vocabulary size up. */
  private readonly extraChars = new Map<string, number>();
  private readonly cache = new Map<string, Int32Array>();
  private readonly bytes = new ByteBuffer();
  private readonly queue = new MergeQueue();
  private ids = new Int32Array(64);
  private next = new Int32Array(64);
  private prev = new Int32Array(64);
  private symbolText: string[] = [];
  /** Whether some piece has a `▁` right after another character (then words are not independent). */
  private readonly piecesCrossWords: boolean;

  constructor(private readonly vocab: Vocabulary, scores: ArrayLike<number> | undefined) {
    for (let id = 0; id < vocab.size; id++) {
      if (vocab.types[id] !== TokenType.Byte) continue;
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(vocab.tokens[id]!);
      if (m && this.byteToken[parseInt(m[1]!, 16)] === -1) this.byteToken[parseInt(m[1]!, 16)] = id;
    }
    // Without scores, earlier pieces win (SentencePiece orders pieces by score).
    const scoreOf = (id: number) => (scores ? Number(scores[id]) : -id);
    const symbolId = (text: string): number => {
      const id = this.vocab.idOf.get(text);
      if (id !== undefined) return id;
      let extra = this.extraChars.get(text);
      if (extra === undefined) {
        extra = vocab.size + this.extraChars.size;
        this.extraChars.set(text, extra);
      }
      return extra;
    };
    const found: number[] = [];
    let crossing = false;
    for (let id = 0; id < vocab.size; id++) {
      // SentencePiece only forms normal and user-defined pieces by merging; control, byte and
      // unused pieces are never the result of a merge.
      const type = vocab.types[id];
      if (type !== TokenType.Normal && type !== TokenType.UserDefined) continue;
      const chars = Array.from(vocab.tokens[id]!);
      if (chars.length < 2) continue;
      if (/[^▁]▁/.test(vocab.tokens[id]!)) crossing = true;
      // A symbol is either a single code point or a piece formed by merges, so a cut is usable when
      // each side is a piece or a single code point.
      let leftText = '';
      for (let cut = 1; cut < chars.length; cut++) {
        leftText += chars[cut - 1];
        const rightText = chars.slice(cut).join('');
        const leftIsSymbol = cut === 1 || this.vocab.idOf.has(leftText);
        const rightIsSymbol = cut === chars.length - 1 || this.vocab.idOf.has(rightText);
        if (!leftIsSymbol || !rightIsSymbol) continue;
        found.push(symbolId(leftText), symbolId(rightText), id);
      }
    }
    this.piecesCrossWords = crossing;
    this.pairs = new PairTable(found.length / 3);
    for (let i = 0; i < found.length; i += 3) this.pairs.add(found[i]!, found[i + 1]!, -scoreOf(found[i + 2]!), found[i + 2]!);
  }

  /** Appends the tokens of `text` (spaces already escaped as `▁`) to `out`. */
  encode(text: string, out: number[]): void {
    if (!this.piecesCrossWords) {
      // No piece continues past a word into the `▁` that starts the next one, so no merge can
      // cross that boundary and the words are independent: encode (and cache) them one by one.
      let start = 0;
      for (let i = 1; i < text.length; i++) {
        if (text.charCodeAt(i) === 0x2581 && text.charCodeAt(i - 1) !== 0x2581) {
          this.encodeWord(text.slice(start, i), out);
          start = i;
        }
      }
      this.encodeWord(start === 0 ? text : text.slice(start), out);
      return;
    }
    this.encodeWord(text, out);
  }

  private encodeWord(text: string, out: number[]): void {
    const cacheable = text.length <= MAX_CACHED_TEXT;
    if (cacheable) {
      const hit = this.cache.get(text);
      if (hit) {
        for (let i = 0; i < hit.length; i++) out.push(hit[i]!);
        return;
      }
    }
    const start = out.length;
    this.encodeUncached(text, out);
    if (cacheable) {
      if (this.cache.size >= MAX_CACHE_ENTRIES) this.cache.clear();
      this.cache.set(text, Int32Array.from(out.slice(start)));
    }
  }

  private encodeUncached(text: string, out: number[]): void {
    const chars = this.symbolText;
    chars.length = 0;
    for (const ch of text) chars.push(ch);
    const n = chars.length;
    if (n === 0) return;
    if (this.ids.length < n) {
      this.ids = new Int32Array(n * 2);
      this.next = new Int32Array(n * 2);
      this.prev = new Int32Array(n * 2);
    }
    const { ids, next, prev, queue, pairs } = this;
    for (let i = 0; i < n; i++) {
      const ch = chars[i]!;
      ids[i] = this.vocab.idOf.get(ch) ?? this.extraChars.get(ch) ?? -2;
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    queue.clear();
    const consider = (left: number, right: number) => {
      if (ids[left]! < 0 || ids[right]! < 0) return;
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
      if (id >= 0 && id < this.vocab.size) {
        out.push(id);
        continue;
      }
      this.pushBytes(chars[i]!, out);
    }
  }

  /**
   * Byte fallback for a symbol that is not a piece: one `<0xXX>` token per UTF-8 byte. If any byte
   * token is missing the symbol becomes the unknown token (once for a run of them), as Hugging
   * Face's `byte_fallback` with `fuse_unk` does.
   */
  private pushBytes(symbol: string, out: number[]): void {
    const bytes = this.bytes;
    bytes.setUtf8(symbol);
    let complete = true;
    for (let i = 0; i < bytes.length; i++) if (this.byteToken[bytes.bytes[i]!]! < 0) complete = false;
    if (complete) {
      for (let i = 0; i < bytes.length; i++) out.push(this.byteToken[bytes.bytes[i]!]!);
      return;
    }
    const unk = this.vocab.unk;
    if (unk !== undefined && out[out.length - 1] !== unk) out.push(unk);
  }
}
