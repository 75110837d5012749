/**
 * Tokenizers read from a GGUF file's `tokenizer.ggml.*` keys: SentencePiece-style (`llama`, score
 * merges with byte fallback) and byte-level BPE (`gpt2`, merges by rank after a pre-tokenizer
 * split). The split here is GPT-2's; the per-family pre-tokenizers (`tokenizer.ggml.pre`) are the
 * tokenizer issue's work.
 */
import type { GgufMetadataValue } from '../gguf/types.js';

/** Token types as stored in `tokenizer.ggml.token_type`. */
export const TokenType = { Normal: 1, Unknown: 2, Control: 3, UserDefined: 4, Unused: 5, Byte: 6 } as const;

export interface TokenizeOptions {
  /**
   * Parse special-token text (e.g. `<|im_start|>`) inside `text` as those tokens. Default `false`:
   * user text can never inject control tokens.
   */
  special?: boolean;
  /** Prepend the model's BOS token when the model asks for it (`add_bos_token`). Default `false`. */
  addBos?: boolean;
}

export interface Tokenizer {
  readonly model: string;
  readonly vocabSize: number;
  readonly bosToken: number | undefined;
  readonly eosToken: number | undefined;
  readonly addBos: boolean;
  tokenize(text: string, options?: TokenizeOptions): Int32Array;
  /** Text of the tokens. Control tokens are left out unless `special` is true. */
  detokenize(tokens: ArrayLike<number>, options?: { special?: boolean }): string;
  /** The raw bytes a token stands for (control tokens: their text). */
  tokenBytes(token: number): Uint8Array;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

function scalar(m: Record<string, GgufMetadataValue>, key: string): number | undefined {
  const v = m[key];
  return typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined;
}

/** Builds the tokenizer a GGUF's metadata describes. */
export function createTokenizer(metadata: Record<string, GgufMetadataValue>): Tokenizer {
  const model = String(metadata['tokenizer.ggml.model'] ?? 'none');
  const tokens = metadata['tokenizer.ggml.tokens'];
  if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== 'string')) {
    throw new RangeError('the model has no tokenizer.ggml.tokens list');
  }
  const types = metadata['tokenizer.ggml.token_type'];
  const typeOf = (id: number) => (ArrayBuffer.isView(types) ? Number((types as Int32Array)[id]) : TokenType.Normal);
  const addBosKey = metadata['tokenizer.ggml.add_bos_token'];
  const common = {
    tokens: tokens as string[],
    typeOf,
    bos: scalar(metadata, 'tokenizer.ggml.bos_token_id'),
    eos: scalar(metadata, 'tokenizer.ggml.eos_token_id'),
    unk: scalar(metadata, 'tokenizer.ggml.unknown_token_id'),
  };
  if (model === 'llama') {
    const scores = metadata['tokenizer.ggml.scores'];
    return new SentencePieceTokenizer(common, scores instanceof Float32Array ? scores : undefined, addBosKey !== false);
  }
  if (model === 'gpt2') {
    const merges = metadata['tokenizer.ggml.merges'];
    return new ByteLevelBpeTokenizer(common, Array.isArray(merges) ? (merges as string[]) : [], addBosKey === true);
  }
  throw new RangeError(`unsupported tokenizer model '${model}' (supported: llama, gpt2)`);
}

interface Common {
  tokens: string[];
  typeOf: (id: number) => number;
  bos: number | undefined;
  eos: number | undefined;
  unk: number | undefined;
}

abstract class BaseTokenizer implements Tokenizer {
  abstract readonly model: string;
  protected readonly ids = new Map<string, number>();
  /** Control and user-defined tokens, longest first, for `special: true` parsing. */
  private readonly specials: [string, number][];

  constructor(protected readonly c: Common, readonly addBos: boolean) {
    c.tokens.forEach((t, i) => {
      if (!this.ids.has(t)) this.ids.set(t, i);
    });
    this.specials = c.tokens
      .map((t, i) => [t, i] as [string, number])
      .filter(([t, i]) => t.length > 0 && (c.typeOf(i) === TokenType.Control || c.typeOf(i) === TokenType.UserDefined))
      .sort((a, b) => b[0].length - a[0].length);
  }
  get vocabSize() { return this.c.tokens.length; }
  get bosToken() { return this.c.bos; }
  get eosToken() { return this.c.eos; }

  protected abstract encodeText(text: string, atStart: boolean): number[];
  abstract tokenBytes(token: number): Uint8Array;

  tokenize(text: string, options: TokenizeOptions = {}): Int32Array {
    const out: number[] = [];
    if (options.addBos && this.addBos && this.c.bos !== undefined) out.push(this.c.bos);
    let start = 0;
    let atStart = true;
    const flush = (end: number) => {
      if (end > start) out.push(...this.encodeText(text.slice(start, end), atStart));
      atStart = false;
    };
    if (options.special) {
      for (let i = 0; i < text.length; ) {
        const hit = this.specials.find(([t]) => text.startsWith(t, i));
        if (!hit) {
          i++;
          continue;
        }
        flush(i);
        out.push(hit[1]);
        i += hit[0].length;
        start = i;
      }
    }
    flush(text.length);
    return Int32Array.from(out);
  }

  detokenize(tokens: ArrayLike<number>, options: { special?: boolean } = {}): string {
    const parts: Uint8Array[] = [];
    for (let i = 0; i < tokens.length; i++) {
      const id = tokens[i]!;
      if (id < 0 || id >= this.c.tokens.length) throw new RangeError(`token ${id} is outside the vocabulary (size ${this.c.tokens.length})`);
      const type = this.c.typeOf(id);
      if (!options.special && (type === TokenType.Control || type === TokenType.Unknown || type === TokenType.Unused)) continue;
      parts.push(this.tokenBytes(id));
    }
    return this.finishText(utf8Decoder.decode(Buffer.concat(parts)));
  }

  protected finishText(text: string): string {
    return text;
  }
}

/** SentencePiece BPE as llama.cpp runs it: merge the adjacent pair with the best vocabulary score. */
class SentencePieceTokenizer extends BaseTokenizer {
  readonly model = 'llama';
  private readonly byteTokens = new Int32Array(256).fill(-1);

  constructor(c: Common, private readonly scores: Float32Array | undefined, addBos: boolean) {
    super(c, addBos);
    c.tokens.forEach((t, i) => {
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(t);
      if (m && c.typeOf(i) === TokenType.Byte) this.byteTokens[parseInt(m[1]!, 16)] = i;
    });
  }

  protected encodeText(text: string, atStart: boolean): number[] {
    const normalized = (atStart ? ' ' : '') + text;
    const symbols = Array.from(normalized.replaceAll(' ', '▁'));
    // Greedy best-score merging; fine for the short texts tests and prompts use.
    for (;;) {
      let best = -1;
      let bestScore = -Infinity;
      for (let i = 0; i + 1 < symbols.length; i++) {
        const id = this.ids.get(symbols[i]! + symbols[i + 1]!);
        if (id === undefined) continue;
        const score = this.scores ? this.scores[id]! : -id;
        if (score > bestScore) {
          bestScore = score;
          best = i;
        }
      }
      if (best < 0) break;
      symbols.splice(best, 2, symbols[best]! + symbols[best + 1]!);
    }
    const out: number[] = [];
    for (const s of symbols) {
      const id = this.ids.get(s);
      if (id !== undefined) {
        out.push(id);
        continue;
      }
      for (const byte of utf8.encode(s)) {
        const b = this.byteTokens[byte]!;
        if (b >= 0) out.push(b);
        else if (this.c.unk !== undefined) out.push(this.c.unk);
      }
    }
    return out;
  }

  tokenBytes(token: number): Uint8Array {
    const t = this.c.tokens[token]!;
    if (this.c.typeOf(token) === TokenType.Byte) {
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(t);
      if (m) return Uint8Array.of(parseInt(m[1]!, 16));
    }
    return utf8.encode(t.replaceAll('▁', ' '));
  }

  protected override finishText(text: string): string {
    return text.startsWith(' ') ? text.slice(1) : text;
  }
}

/** GPT-2 byte-to-unicode table: printable bytes map to themselves, the rest to U+0100 and up. */
function byteUnicodeTables(): { toChar: string[]; toByte: Map<string, number> } {
  const toChar: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    toChar[b] = String.fromCodePoint(printable ? b : 256 + extra++);
  }
  return { toChar, toByte: new Map(toChar.map((c, b) => [c, b])) };
}

const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

class ByteLevelBpeTokenizer extends BaseTokenizer {
  readonly model = 'gpt2';
  private readonly ranks = new Map<string, number>();
  private readonly tables = byteUnicodeTables();

  constructor(c: Common, merges: string[], addBos: boolean) {
    super(c, addBos);
    merges.forEach((m, i) => this.ranks.set(m, i));
  }

  protected encodeText(text: string): number[] {
    const out: number[] = [];
    for (const piece of text.match(GPT2_SPLIT) ?? []) {
      const symbols = Array.from(utf8.encode(piece), (b) => this.tables.toChar[b]!);
      for (;;) {
        let best = -1;
        let bestRank = Infinity;
        for (let i = 0; i + 1 < symbols.length; i++) {
          const rank = this.ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
          if (rank !== undefined && rank < bestRank) {
            bestRank = rank;
            best = i;
          }
        }
        if (best < 0) break;
        symbols.splice(best, 2, symbols[best]! + symbols[best + 1]!);
      }
      for (const s of symbols) {
        const id = this.ids.get(s);
        if (id !== undefined) out.push(id);
        else for (const ch of s) out.push(this.ids.get(ch) ?? this.c.unk ?? 0);
      }
    }
    return out;
  }

  tokenBytes(token: number): Uint8Array {
    const t = this.c.tokens[token]!;
    const type = this.c.typeOf(token);
    if (type === TokenType.Control || type === TokenType.UserDefined) return utf8.encode(t);
    const bytes: number[] = [];
    for (const ch of t) {
      const b = this.tables.toByte.get(ch);
      if (b === undefined) bytes.push(...utf8.encode(ch));
      else bytes.push(b);
    }
    return Uint8Array.from(bytes);
  }
}
