/**
 * Tokenizers built from a GGUF file's `tokenizer.ggml.*` keys, exact to each model family's
 * reference tokenizer (Hugging Face `tokenizer.json` / tiktoken):
 * - `llama`: SentencePiece BPE (Llama 2, Mistral, Mixtral) with byte fallback (spm.ts);
 * - `gpt2`: byte-level BPE with the pre-tokenizer `tokenizer.ggml.pre` names (pretokenize.ts,
 *   bpe.ts): Qwen2/3, DeepSeek V3, Kimi K2, gpt-oss (o200k), Llama 3, OLMo, GPT-2 and more.
 * Special-token text is found first (special.ts); a streaming detokenizer never splits a
 * character (stream.ts).
 */
import type { GgufMetadataValue } from '../gguf/types.js';
import { ByteLevelBpe } from './bpe.js';
import { ByteBuffer, CHAR_TO_BYTE } from './bytes.js';
import { preTokenize, resolvePreTokenizer, type PreTokenizerSpec } from './pretokenize.js';
import { SpecialTokenMatcher } from './special.js';
import { SentencePieceBpe } from './spm.js';
import { createStreamingDetokenizer, type StreamingDetokenizer } from './stream.js';
import { endOfGenerationTokens, readVocabulary, TokenType, type Vocabulary } from './vocabulary.js';

export { TokenType } from './vocabulary.js';
export type { StreamingDetokenizer } from './stream.js';
export { SUPPORTED_PRE_TOKENIZERS } from './pretokenize.js';

export interface TokenizeOptions {
  /**
   * Parse special-token text (e.g. `<|im_start|>`) inside `text` as those tokens. Default `false`:
   * user text can never inject control tokens. User-defined tokens (e.g. Qwen's `<think>`) are
   * parsed either way, as llama.cpp and Hugging Face do.
   */
  special?: boolean;
  /** Prepend the model's BOS token when the model asks for it (`add_bos_token`). Default `false`. */
  addBos?: boolean;
  /** Append the model's EOS token when the model asks for it (`add_eos_token`). Default `false`. */
  addEos?: boolean;
}

export interface DetokenizeOptions {
  /**
   * Render control and unknown tokens as their text (`<|im_end|>`). Default `false`: they are left
   * out, as Hugging Face's `skip_special_tokens` does. User-defined tokens are always rendered;
   * unused (padding) entries never are.
   */
  special?: boolean;
  /**
   * Drop one space at the start of the text: SentencePiece models prefix text with a space when
   * tokenizing, and this undoes it. Default `true` for SentencePiece models that add the prefix
   * (`tokenizer.ggml.add_space_prefix`, itself default `true`), `false` otherwise. Pass `false` when
   * decoding a continuation, where the leading space separates it from the text before.
   */
  stripLeadingSpace?: boolean;
}

export interface Tokenizer {
  /** `tokenizer.ggml.model`: `'llama'` (SentencePiece) or `'gpt2'` (byte-level BPE). */
  readonly model: string;
  /**
   * The pre-tokenizer in use: `tokenizer.ggml.pre` canonicalized (`'llama-bpe'` for `'llama3'`),
   * `'default'` when the key is absent or unknown, and `'default'` for SentencePiece (which has none).
   */
  readonly pre: string;
  /** Number of entries in `tokenizer.ggml.tokens` (padding entries included). */
  readonly vocabSize: number;
  /** `tokenizer.ggml.bos_token_id` (SentencePiece default 1); undefined when the model has none. */
  readonly bosToken: number | undefined;
  /** `tokenizer.ggml.eos_token_id` (SentencePiece default 2); undefined when the model has none. */
  readonly eosToken: number | undefined;
  /** Whether the model wants BOS prepended (`add_bos_token`, else llama.cpp's default for the family). */
  readonly addBos: boolean;
  /** Whether the model wants EOS appended (`add_eos_token`, default `false`). */
  readonly addEos: boolean;
  /** Tokens that end generation: EOS, EOT, EOM and the end-of-turn tokens found by text, as llama.cpp decides. */
  readonly eogTokens: ReadonlySet<number>;
  tokenize(text: string, options?: TokenizeOptions): Int32Array;
  /** Text of the tokens (control tokens left out unless `special`). */
  detokenize(tokens: ArrayLike<number>, options?: DetokenizeOptions): string;
  /** A detokenizer for tokens arriving one at a time; its output, concatenated, equals {@link detokenize}. */
  createDetokenizer(options?: DetokenizeOptions): StreamingDetokenizer;
  /** The raw bytes a token stands for (control and other non-text tokens: the UTF-8 of their text). */
  tokenBytes(token: number): Uint8Array;
  /** The token's text as the vocabulary stores it (`'Ġthe'`, `'▁the'`, `'<0x0A>'`, `'<|im_end|>'`). */
  tokenText(token: number): string;
  /** The token's {@link TokenType}. */
  tokenType(token: number): number;
  /** The id of the token whose stored text is `text`, if any. */
  tokenId(text: string): number | undefined;
}

const NON_ASCII = /[^\x00-\x7f]/;

/** Builds the tokenizer a GGUF's metadata describes. Throws RangeError/TypeError for a missing or malformed vocabulary. */
export function createTokenizer(metadata: Record<string, GgufMetadataValue>): Tokenizer {
  const info = readVocabulary(metadata);
  if (info.model !== 'llama' && info.model !== 'gpt2') {
    throw new RangeError(`unsupported tokenizer model '${info.model}' (supported: llama, gpt2)`);
  }
  return new GgufTokenizer(info);
}

/**
 * @internal A byte-level BPE tokenizer with a given pre-tokenizer instead of the one
 * `tokenizer.ggml.pre` names; for tests that emulate other implementations' splitting.
 */
export function createTokenizerWithPreTokenizer(metadata: Record<string, GgufMetadataValue>, preTokenizer: PreTokenizerSpec): Tokenizer {
  const info = readVocabulary(metadata);
  if (info.model !== 'gpt2') throw new RangeError('a pre-tokenizer applies to byte-level BPE (gpt2) vocabularies only');
  return new GgufTokenizer(info, preTokenizer);
}

class GgufTokenizer implements Tokenizer {
  readonly model: string;
  readonly pre: string;
  readonly addBos: boolean;
  readonly addEos: boolean;
  readonly eogTokens: ReadonlySet<number>;
  readonly bosToken: number | undefined;
  private readonly vocab: Vocabulary;
  private readonly addSpacePrefix: boolean;
  private readonly spec: PreTokenizerSpec | undefined;
  private readonly bpe: ByteLevelBpe | undefined;
  private readonly spm: SentencePieceBpe | undefined;
  /** Control, unknown and user-defined tokens: found in text with `special: true`. */
  private readonly allSpecials: SpecialTokenMatcher;
  /** User-defined tokens only: found in text always. */
  private readonly userDefined: SpecialTokenMatcher;
  private readonly rendered: (Uint8Array | undefined)[];

  constructor(info: ReturnType<typeof readVocabulary>, preTokenizer?: PreTokenizerSpec) {
    const { vocab } = info;
    this.vocab = vocab;
    this.model = info.model;
    this.eogTokens = endOfGenerationTokens(info);
    this.rendered = new Array(vocab.size);
    const specials: [string, number][] = [];
    const userDefined: [string, number][] = [];
    for (let id = 0; id < vocab.size; id++) {
      const type = vocab.types[id];
      if (type === TokenType.UserDefined) userDefined.push([vocab.tokens[id]!, id]);
      if (type === TokenType.UserDefined || type === TokenType.Control || type === TokenType.Unknown) specials.push([vocab.tokens[id]!, id]);
    }
    this.allSpecials = new SpecialTokenMatcher(specials);
    this.userDefined = new SpecialTokenMatcher(userDefined);
    if (info.model === 'llama') {
      this.pre = 'default';
      this.addBos = info.addBos ?? true;
      this.addEos = info.addEos ?? false;
      this.addSpacePrefix = info.addSpacePrefix ?? true;
      this.bosToken = vocab.bos;
      this.spm = new SentencePieceBpe(vocab, info.scores);
    } else {
      const spec = preTokenizer ?? resolvePreTokenizer(info.pre);
      this.spec = spec;
      this.pre = spec.name;
      this.addBos = info.addBos ?? spec.addBosDefault;
      this.addEos = info.addEos ?? false;
      // llama.cpp reads add_space_prefix for SentencePiece only.
      this.addSpacePrefix = false;
      this.bosToken = spec.noBos ? undefined : vocab.bos;
      this.bpe = new ByteLevelBpe(vocab, info.merges, {
        ignoreMerges: spec.ignoreMerges,
        tiktokenRanks: spec.tiktokenRanks === true || info.merges === undefined,
      });
    }
  }

  get vocabSize(): number {
    return this.vocab.size;
  }
  get eosToken(): number | undefined {
    return this.vocab.eos;
  }

  tokenize(text: string, options: TokenizeOptions = {}): Int32Array {
    if (typeof text !== 'string') throw new TypeError('tokenize expects a string');
    const out: number[] = [];
    if (options.addBos && this.addBos && this.bosToken !== undefined) out.push(this.bosToken);
    for (const segment of (options.special ? this.allSpecials : this.userDefined).split(text)) {
      if (segment.token !== undefined) out.push(segment.token);
      else if (this.spm) this.encodeSentencePiece(segment.text, out);
      else this.encodeByteLevel(segment.text, out);
    }
    if (options.addEos && this.addEos && this.vocab.eos !== undefined) out.push(this.vocab.eos);
    return Int32Array.from(out);
  }

  private encodeByteLevel(text: string, out: number[]): void {
    const spec = this.spec!;
    // Hugging Face normalizes each piece of text between special tokens on its own.
    const normalized = spec.normalize && NON_ASCII.test(text) ? text.normalize(spec.normalize) : text;
    for (const word of preTokenize(normalized, spec)) this.bpe!.encodeWord(word, out);
  }

  private encodeSentencePiece(text: string, out: number[]): void {
    // Every piece of text (at the start or after a special token) gets the space prefix, as in
    // llama.cpp and in Hugging Face's `Prepend("▁")` normalizer for Llama / Mistral.
    const escaped = ((this.addSpacePrefix ? ' ' : '') + text).replaceAll(' ', '▁');
    this.spm!.encode(escaped, out);
  }

  detokenize(tokens: ArrayLike<number>, options: DetokenizeOptions = {}): string {
    const special = options.special === true;
    const buffer = new ByteBuffer();
    for (let i = 0; i < tokens.length; i++) buffer.append(this.render(tokens[i]!, special));
    const text = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true }).decode(buffer.bytes.subarray(0, buffer.length));
    return this.stripsLeadingSpace(options) && text.charCodeAt(0) === 0x20 ? text.slice(1) : text;
  }

  createDetokenizer(options: DetokenizeOptions = {}): StreamingDetokenizer {
    const special = options.special === true;
    return createStreamingDetokenizer((token) => this.render(token, special), this.stripsLeadingSpace(options));
  }

  private stripsLeadingSpace(options: DetokenizeOptions): boolean {
    return options.stripLeadingSpace ?? (this.spm !== undefined && this.addSpacePrefix);
  }

  private checkToken(token: number): void {
    if (!Number.isInteger(token) || token < 0 || token >= this.vocab.size) {
      throw new RangeError(`token ${token} is outside the vocabulary (size ${this.vocab.size})`);
    }
  }

  private static readonly EMPTY = new Uint8Array(0);

  /** The bytes `token` contributes to detokenized text. */
  private render(token: number, special: boolean): Uint8Array {
    this.checkToken(token);
    const type = this.vocab.types[token];
    if (type === TokenType.Unused) return GgufTokenizer.EMPTY;
    if (!special && (type === TokenType.Control || type === TokenType.Unknown)) return GgufTokenizer.EMPTY;
    return this.tokenBytes(token);
  }

  tokenBytes(token: number): Uint8Array {
    this.checkToken(token);
    const cached = this.rendered[token];
    if (cached) return cached;
    const text = this.vocab.tokens[token]!;
    const type = this.vocab.types[token];
    let bytes: Uint8Array;
    const byteToken = type === TokenType.Byte ? /^<0x([0-9A-Fa-f]{2})>$/.exec(text) : null;
    if (byteToken) {
      bytes = Uint8Array.of(parseInt(byteToken[1]!, 16));
    } else if (type !== TokenType.Normal) {
      bytes = new TextEncoder().encode(text);
    } else if (this.spm) {
      bytes = new TextEncoder().encode(text.replaceAll('▁', ' '));
    } else {
      bytes = byteLevelBytes(text);
    }
    this.rendered[token] = bytes;
    return bytes;
  }

  tokenText(token: number): string {
    this.checkToken(token);
    return this.vocab.tokens[token]!;
  }

  tokenType(token: number): number {
    this.checkToken(token);
    return this.vocab.types[token]!;
  }

  tokenId(text: string): number | undefined {
    return this.vocab.idOf.get(text);
  }
}

/** Bytes of a byte-level BPE token; a character outside GPT-2's byte alphabet stands for its own UTF-8. */
function byteLevelBytes(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const code = ch.codePointAt(0)!;
    const byte = code < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[code]! : -1;
    if (byte >= 0) out.push(byte);
    else out.push(...new TextEncoder().encode(ch));
  }
  return Uint8Array.from(out);
}
