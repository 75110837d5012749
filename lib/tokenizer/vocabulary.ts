/**
 * The vocabulary a GGUF file's `tokenizer.ggml.*` keys describe: token texts and types, the
 * special token ids, whether BOS/EOS are added, and the end-of-generation set — with llama.cpp's
 * defaults where a key is absent.
 */
import type { GgufMetadataValue } from '../gguf/types.js';

/** Token types as stored in `tokenizer.ggml.token_type`. */
export const TokenType = { Normal: 1, Unknown: 2, Control: 3, UserDefined: 4, Unused: 5, Byte: 6 } as const;

export interface Vocabulary {
  /** Token texts by id, as stored (GPT-2 byte alphabet for BPE, `▁` and `<0xXX>` for SentencePiece). */
  readonly tokens: readonly string[];
  /** Token types by id ({@link TokenType}; 1 where the file has no types). */
  readonly types: Int32Array;
  readonly size: number;
  /** Token id by text; the first id wins for a repeated text. */
  readonly idOf: ReadonlyMap<string, number>;
  readonly bos: number | undefined;
  readonly eos: number | undefined;
  readonly unk: number | undefined;
}

export interface VocabularyInfo {
  vocab: Vocabulary;
  /** `tokenizer.ggml.model`. */
  model: string;
  /** `tokenizer.ggml.pre`, if present. */
  pre: string | undefined;
  scores: ArrayLike<number> | undefined;
  merges: readonly string[] | undefined;
  /** `tokenizer.ggml.add_bos_token`, if present. */
  addBos: boolean | undefined;
  /** `tokenizer.ggml.add_eos_token`, if present. */
  addEos: boolean | undefined;
  /** `tokenizer.ggml.add_space_prefix`, if present. */
  addSpacePrefix: boolean | undefined;
  /** `tokenizer.ggml.eot_token_id` / `eom_token_id`, if present. */
  eot: number | undefined;
  eom: number | undefined;
  /** `tokenizer.ggml.fim_{pad,rep,sep}_token_id`, in that order (undefined where absent). */
  fim: (number | undefined)[];
}

function idKey(m: Record<string, GgufMetadataValue>, key: string, size: number): number | undefined {
  const v = m[key];
  const n = typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined;
  return n !== undefined && Number.isInteger(n) && n >= 0 && n < size ? n : undefined;
}

function boolKey(m: Record<string, GgufMetadataValue>, key: string): boolean | undefined {
  const v = m[key];
  return typeof v === 'boolean' ? v : undefined;
}

function isNumberArray(v: unknown): v is ArrayLike<number> {
  return (ArrayBuffer.isView(v) && !(v instanceof DataView)) || (Array.isArray(v) && v.every((x) => typeof x === 'number'));
}

/** Reads the vocabulary keys; throws RangeError/TypeError when they are missing or malformed. */
export function readVocabulary(metadata: Record<string, GgufMetadataValue>): VocabularyInfo {
  const modelKey = metadata['tokenizer.ggml.model'];
  const model = typeof modelKey === 'string' ? modelKey : 'none';
  const tokens = metadata['tokenizer.ggml.tokens'];
  if (!Array.isArray(tokens) || tokens.length === 0 || tokens.some((t) => typeof t !== 'string')) {
    throw new RangeError('the model has no tokenizer.ggml.tokens list');
  }
  const size = tokens.length;
  const rawTypes = metadata['tokenizer.ggml.token_type'];
  const types = new Int32Array(size).fill(TokenType.Normal);
  if (rawTypes !== undefined) {
    if (!isNumberArray(rawTypes) || rawTypes.length !== size) {
      throw new TypeError(`tokenizer.ggml.token_type must be a number array of ${size} entries`);
    }
    for (let i = 0; i < size; i++) types[i] = Number(rawTypes[i]);
  }
  const rawScores = metadata['tokenizer.ggml.scores'];
  if (rawScores !== undefined && (!isNumberArray(rawScores) || rawScores.length !== size)) {
    throw new TypeError(`tokenizer.ggml.scores must be a number array of ${size} entries`);
  }
  const rawMerges = metadata['tokenizer.ggml.merges'];
  if (rawMerges !== undefined && (!Array.isArray(rawMerges) || rawMerges.some((x) => typeof x !== 'string'))) {
    throw new TypeError('tokenizer.ggml.merges must be an array of strings');
  }
  const preKey = metadata['tokenizer.ggml.pre'];
  const idOf = new Map<string, number>();
  (tokens as string[]).forEach((t, i) => {
    if (!idOf.has(t)) idOf.set(t, i);
  });

  // llama.cpp's SentencePiece defaults: BOS 1, EOS 2, UNK 0. (For BPE it defaults both BOS and
  // EOS to 11, GPT-2's ","; we leave them unset instead, so "," never ends generation.)
  const spm = model === 'llama';
  const orDefault = (key: string, fallback: number | undefined) =>
    metadata[key] !== undefined ? idKey(metadata, key, size) : fallback !== undefined && fallback < size ? fallback : undefined;
  const vocab: Vocabulary = {
    tokens: tokens as string[],
    types,
    size,
    idOf,
    bos: orDefault('tokenizer.ggml.bos_token_id', spm ? 1 : undefined),
    eos: orDefault('tokenizer.ggml.eos_token_id', spm ? 2 : undefined),
    unk: orDefault('tokenizer.ggml.unknown_token_id', spm ? 0 : undefined),
  };
  const fim = ['fim_pad', 'fim_rep', 'fim_sep'].map((k) => idKey(metadata, `tokenizer.ggml.${k}_token_id`, size));
  return {
    vocab,
    model,
    pre: typeof preKey === 'string' ? preKey : undefined,
    scores: rawScores as ArrayLike<number> | undefined,
    merges: rawMerges as string[] | undefined,
    addBos: boolKey(metadata, 'tokenizer.ggml.add_bos_token'),
    addEos: boolKey(metadata, 'tokenizer.ggml.add_eos_token'),
    addSpacePrefix: boolKey(metadata, 'tokenizer.ggml.add_space_prefix'),
    eot: idKey(metadata, 'tokenizer.ggml.eot_token_id', size),
    eom: idKey(metadata, 'tokenizer.ggml.eom_token_id', size),
    fim,
  };
}

/** Token texts that end generation (llama.cpp's list, `llama-vocab.cpp`). */
const EOG_TEXTS = new Set([
  '<|eot_id|>', '<|im_end|>', '<|end|>', '<|return|>', '<|call|>', '<|flush|>', '<|calls|>', '<end_of_turn>',
  '<|endoftext|>', '</s>', '<|eom_id|>', '<EOT>', '_<EOT>', '[EOT]', '[EOS]', '<|end_of_text|>', '<end_of_utterance>',
  '<eos>', '<turn|>', '<|tool_response>', '<｜end▁of▁sentence｜>', '[e~[',
]);
/** Texts of the fill-in-the-middle pad, repo and file-separator tokens, found by text when the file has no id for them. */
const FIM_EOG_TEXTS = [['<|fim_pad|>', '<fim-pad>', '<fim_pad>', '<PAD>', '[PAD]'], ['<|fim_repo|>', '<|repo_name|>', '<fim-repo>', '<REPO>', '<reponame>'], ['<|file_sep|>']];

/**
 * The end-of-generation set as llama.cpp builds it: EOS, EOT, EOM and the FIM pad/repo/file-sep
 * tokens (from the file, else found by text), plus every token whose text is in llama.cpp's list
 * (except normal tokens that BPE merges produce, see below).
 * When `<|return|>` and `<|call|>` (or `<|calls|>` and `<|flush|>`) are present, `<|end|>` only
 * ends a message, not the generation (gpt-oss's harmony format), so it is left out; likewise
 * `</s>` when `<|tool_response>` is present (Gemma 4).
 */
export function endOfGenerationTokens(info: VocabularyInfo): Set<number> {
  const { vocab } = info;
  const eog = new Set<number>();
  FIM_EOG_TEXTS.forEach((texts, kind) => {
    const id = info.fim[kind] ?? texts.map((t) => vocab.idOf.get(t)).find((x) => x !== undefined);
    if (id !== undefined) eog.add(id);
  });
  // One deviation from llama.cpp: a normal token that a merge produces is ordinary text, not a
  // mistyped control token (Qwen's vocabulary has a normal "</s>", from "</" + "s>"), so it does not
  // end generation.
  const mergeResults = new Set<string>();
  if (info.merges) {
    const candidates = new Set([...EOG_TEXTS].filter((t) => vocab.types[vocab.idOf.get(t) ?? -1] === TokenType.Normal));
    if (candidates.size > 0) {
      for (const m of info.merges) {
        const space = m.indexOf(' ', 1);
        const merged = space < 0 ? m : m.slice(0, space) + m.slice(space + 1);
        if (candidates.has(merged)) mergeResults.add(merged);
      }
    }
  }
  for (const [text, id] of vocab.idOf) if (EOG_TEXTS.has(text) && !mergeResults.has(text)) eog.add(id);
  for (const id of [vocab.eos, info.eot, info.eom]) if (id !== undefined) eog.add(id);
  const withText = (text: string) => [...eog].find((id) => vocab.tokens[id] === text);
  const end = withText('<|end|>');
  const call = withText('<|call|>') ?? withText('<|calls|>');
  if (end !== undefined && call !== undefined && (withText('<|return|>') !== undefined || withText('<|flush|>') !== undefined)) {
    eog.delete(end);
  }
  const s = withText('</s>');
  if (s !== undefined && withText('<|tool_response>') !== undefined) eog.delete(s);
  return eog;
}
