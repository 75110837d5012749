/**
 * Pre-tokenizers of byte-level BPE vocabularies: how text is cut into words before BPE merges run
 * inside each word, chosen by the GGUF key `tokenizer.ggml.pre`.
 *
 * Each pre-tokenizer is the regex (or sequence of regexes) of the model's Hugging Face
 * `tokenizer.json` / tiktoken pattern, written for JavaScript's regex engine. A sequence applies
 * each regex to every piece the previous ones produced, keeping both the matches and the text
 * between them as pieces (Hugging Face's `Split` with behavior `Isolated`; llama.cpp's
 * `unicode_regex_split`). Where llama.cpp approximates a pattern (its hand-written splitters, its
 * ASCII-only casing classes for `gpt-4o`) we follow the model's own pattern instead; the test
 * files list the differences this makes.
 *
 * JavaScript has no `(?i:…)` group, so the contractions `'s 't 're 've 'm 'll 'd` are spelled out
 * with case classes, exactly as transformers.js and llama.cpp rewrite them.
 */

/** How a `tokenizer.ggml.pre` value tokenizes. */
export interface PreTokenizerSpec {
  /** Canonical name of the pre-tokenizer (llama.cpp's name for the family). */
  readonly name: string;
  /** Regexes applied in sequence; each must have the `g` flag. */
  readonly regexes: readonly RegExp[];
  /** Unicode normalization applied to text before splitting (the model's `tokenizer.json` normalizer). */
  readonly normalize?: 'NFC';
  /**
   * A word that is itself a vocabulary token becomes that token without running merges
   * (Hugging Face BPE `ignore_merges`; tiktoken always does this).
   */
  readonly ignoreMerges: boolean;
  /**
   * Merge any adjacent pair whose concatenation is a token, lowest token id first, instead of
   * following the merges list: tiktoken's algorithm, where a token's id is its merge rank.
   */
  readonly tiktokenRanks?: boolean;
  /** `add_bos_token` when the file does not say (llama.cpp sets it for llama3, tekken, chameleon). */
  readonly addBosDefault: boolean;
  /** The family has no BOS token (llama.cpp clears it for glm4 / chatglm-bpe). */
  readonly noBos?: boolean;
}

/** `'s 't 're 've 'm 'll 'd` in either case (the `(?i:…)` group of the original patterns). */
const CONTRACTIONS = "'(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])";
/**
 * The same for patterns whose reference is tiktoken / Rust `regex`, where `(?i)` uses Unicode
 * simple case folding and so `s` also matches `ſ` (U+017F LATIN SMALL LETTER LONG S).
 */
const CONTRACTIONS_FOLDED = "'(?:[sS\u017F]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])";

const GPT2 = `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`;
const LLAMA3 = `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;
const QWEN2 = `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;
const QWEN35 = `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;
const UPPER = '[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]';
const LOWER = '[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]';
/** o200k (gpt-4o, gpt-oss, Llama 4): words split at lower→upper case changes. */
const GPT4O =
  `[^\\r\\n\\p{L}\\p{N}]?${UPPER}*${LOWER}+(?:${CONTRACTIONS})?|[^\\r\\n\\p{L}\\p{N}]?${UPPER}+${LOWER}*(?:${CONTRACTIONS})?` +
  `|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;
/** Tekken (Mistral Nemo / Pixtral): the o200k shape with single digits and no contractions. */
const TEKKEN =
  `[^\\r\\n\\p{L}\\p{N}]?${UPPER}*${LOWER}+|[^\\r\\n\\p{L}\\p{N}]?${UPPER}+${LOWER}*` +
  `|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;
/**
 * Kimi K2's tiktoken pattern: Han runs are words of their own, and the letter classes of the
 * o200k-style alternatives exclude Han (`[…&&[^\p{Han}]]` there; a negative lookahead here).
 * `\p{Han}` of Rust's regex crate is the Script property, `\p{sc=Han}` in JavaScript.
 */
const KIMI_UPPER = `(?:(?!\\p{sc=Han})${UPPER})`;
const KIMI_LOWER = `(?:(?!\\p{sc=Han})${LOWER})`;
const KIMI_K2 =
  `\\p{sc=Han}+` +
  `|[^\\r\\n\\p{L}\\p{N}]?${KIMI_UPPER}*${KIMI_LOWER}+(?:${CONTRACTIONS_FOLDED})?` +
  `|[^\\r\\n\\p{L}\\p{N}]?${KIMI_UPPER}+${KIMI_LOWER}*(?:${CONTRACTIONS_FOLDED})?` +
  `|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;
// Literal non-ASCII ranges are written as regex escapes: some of their end points (e.g. U+1FD3,
// U+212A) are not in Unicode normal form, and an editor or a copy could silently normalize them.
const DEEPSEEK_V3 = [
  String.raw`\p{N}{1,3}`,
  String.raw`[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+`,
  String.raw`[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_` + '`' + String.raw`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
];
const DEEPSEEK_LLM_LETTERS =
  String.raw`A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF\u0370-\u0373` +
  String.raw`\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F` +
  String.raw`\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77` +
  String.raw`\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D` +
  String.raw`\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4` +
  String.raw`\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139` +
  String.raw`\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D` +
  String.raw`\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A` +
  String.raw`\uFF41-\uFF5A\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}` +
  String.raw`\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}`;
const CJK_HANGUL = String.raw`[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+`;
const DEEPSEEK_LLM = [
  String.raw`[\r\n]`,
  String.raw`\s?[` + DEEPSEEK_LLM_LETTERS + ']+',
  String.raw`\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+`,
  String.raw`\s+$`,
  CJK_HANGUL,
  String.raw`\p{N}+`,
];
const DEEPSEEK_CODER = [String.raw`[\r\n]`, String.raw`\s?\p{L}+`, String.raw`\s?\p{P}+`, CJK_HANGUL, String.raw`\p{N}`];
/** llama.cpp's pre-tokenizer for `default` and for a BPE file without `tokenizer.ggml.pre`. */
const LLAMA_CPP_DEFAULT = ['[\\p{P}\\$\\+<=>\\^~\\|]+', GPT2, '\\p{N}+', '[0-9][0-9][0-9]'];
const FALCON = ['[\\p{P}\\$\\+<=>\\^~\\|`]+', GPT2, '[0-9][0-9][0-9]'];
const STARCODER = ['\\p{N}', GPT2];
const BAILINGMOE = `'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+`;
const SEED_CODER = `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;
const EXAONE_MOE = `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+`;
const MINICPM5 = ['\\p{N}{1,3}', `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`];

interface Family {
  names: readonly string[];
  patterns: readonly string[];
  normalize?: 'NFC';
  ignoreMerges?: boolean;
  tiktokenRanks?: boolean;
  addBosDefault?: boolean;
  noBos?: boolean;
}

/** `tokenizer.ggml.pre` values by family, following llama.cpp's table (`llama-vocab.cpp`). */
const FAMILIES: readonly Family[] = [
  { names: ['default'], patterns: LLAMA_CPP_DEFAULT },
  // Llama 3 and friends: tiktoken-derived vocabularies whose tokenizer.json sets ignore_merges.
  {
    names: ['llama-bpe', 'llama3', 'llama-v3', 'falcon3', 'falcon-h1', 'pixtral', 'midm-2.0', 'lfm2', 'jina-v5-nano'],
    patterns: [LLAMA3],
    ignoreMerges: true,
    addBosDefault: true,
  },
  { names: ['dbrx', 'smaug-bpe'], patterns: [LLAMA3] },
  { names: ['glm4', 'chatglm-bpe'], patterns: [LLAMA3], noBos: true },
  // Qwen's tokenizer.json normalizes to NFC before splitting.
  { names: ['qwen2', 'deepseek-r1-qwen'], patterns: [QWEN2], normalize: 'NFC' },
  { names: ['qwen35'], patterns: [QWEN35], normalize: 'NFC' },
  { names: ['stablelm2', 'hunyuan', 'solar-open', 'megrez', 'kormo', 'f2llmv2', 'grok-2'], patterns: [QWEN2] },
  { names: ['deepseek-v3', 'hunyuan-dense', 'joyai-llm'], patterns: DEEPSEEK_V3 },
  { names: ['deepseek-llm'], patterns: DEEPSEEK_LLM },
  { names: ['deepseek-coder'], patterns: DEEPSEEK_CODER },
  // o200k (gpt-oss, Llama 4, MiniMax): tiktoken vocabularies, ignore_merges in their tokenizer.json.
  { names: ['gpt-4o', 'llama4', 'kanana2', 'talkie', 'minimax-m2'], patterns: [GPT4O], ignoreMerges: true },
  { names: ['tekken'], patterns: [TEKKEN], ignoreMerges: true, addBosDefault: true },
  // Kimi K2 ships a tiktoken model: the whole-word lookup and rank-ordered merges are tiktoken's.
  { names: ['kimi-k2'], patterns: [KIMI_K2], ignoreMerges: true, tiktokenRanks: true },
  {
    names: [
      'gpt-2', 'gpt2', 'olmo', 'mpt', 'phi-2', 'jina-es', 'jina-de', 'gigachat', 'jina-v2-es', 'jina-v2-de', 'a.x-4.0',
      'mellum', 'modern-bert', 'jina-v1-en', 'jina-v2-code', 'roberta-bpe', 'jais', 'trillion', 'granite-docling', 'exaone4',
    ],
    patterns: [GPT2],
  },
  { names: ['starcoder', 'refact', 'command-r', 'smollm', 'codeshell', 'exaone', 'minerva-7b', 'mellum2'], patterns: STARCODER },
  { names: ['falcon'], patterns: FALCON },
  { names: ['bailingmoe', 'bailingmoe2', 'llada-moe'], patterns: [BAILINGMOE] },
  { names: ['seed-coder'], patterns: [SEED_CODER] },
  { names: ['exaone-moe'], patterns: [EXAONE_MOE] },
  { names: ['minicpm5'], patterns: MINICPM5, ignoreMerges: true },
  { names: ['laguna'], patterns: ['[^\\n]+|[\\n]+', QWEN2] },
];

const SPECS = new Map<string, PreTokenizerSpec>();
for (const family of FAMILIES) {
  const regexes = family.patterns.map((p) => new RegExp(p, 'gu'));
  for (const name of family.names) {
    SPECS.set(name, {
      name: family.names[0]!,
      regexes,
      ...(family.normalize ? { normalize: family.normalize } : {}),
      ignoreMerges: family.ignoreMerges ?? false,
      ...(family.tiktokenRanks ? { tiktokenRanks: true } : {}),
      addBosDefault: family.addBosDefault ?? false,
      ...(family.noBos ? { noBos: true } : {}),
    });
  }
}

/** The `tokenizer.ggml.pre` values this tokenizer implements. */
export const SUPPORTED_PRE_TOKENIZERS: readonly string[] = [...SPECS.keys()];

const warnedPre = new Set<string>();

/**
 * The pre-tokenizer for a `tokenizer.ggml.pre` value. A missing value means `default`, as in
 * llama.cpp; an unknown one falls back to `default` with a process warning (once per name) rather
 * than failing to load the model.
 */
export function resolvePreTokenizer(pre: string | undefined): PreTokenizerSpec {
  const spec = SPECS.get(pre ?? 'default');
  if (spec) return spec;
  if (!warnedPre.has(pre!)) {
    warnedPre.add(pre!);
    process.emitWarning(
      `node-moe: unknown tokenizer.ggml.pre '${pre}'; tokenizing with the 'default' pre-tokenizer, which may not match the model's tokenizer`,
      { code: 'NODE_MOE_UNKNOWN_PRE_TOKENIZER' },
    );
  }
  return SPECS.get('default')!;
}

/** Appends to `out` the pieces `regex` cuts `text` into: each match, and the text between matches. */
function splitOne(text: string, regex: RegExp, out: string[]): void {
  regex.lastIndex = 0;
  let last = 0;
  for (;;) {
    const m = regex.exec(text);
    if (m === null) break;
    const start = m.index;
    const match = m[0];
    if (match.length === 0) {
      // An empty match cuts nothing; step past it (by a whole code point) so exec makes progress.
      const c = text.charCodeAt(start);
      regex.lastIndex = start + (c >= 0xd800 && c <= 0xdbff ? 2 : 1);
      continue;
    }
    if (start > last) out.push(text.slice(last, start));
    out.push(match);
    last = start + match.length;
  }
  if (last < text.length) out.push(last === 0 ? text : text.slice(last));
}

/** Cuts `text` into the words BPE runs on. */
export function preTokenize(text: string, spec: PreTokenizerSpec): string[] {
  let pieces: string[] = [];
  splitOne(text, spec.regexes[0]!, pieces);
  for (let r = 1; r < spec.regexes.length; r++) {
    const next: string[] = [];
    for (const piece of pieces) splitOne(piece, spec.regexes[r]!, next);
    pieces = next;
  }
  return pieces;
}
