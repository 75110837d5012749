/**
 * The pre-tokenizers (lib/tokenizer/pretokenize.ts) against independent implementations of the
 * patterns they stand for, on the whole corpus. The independent side builds each documented
 * pattern from its source text — tokenizer.json's `Split` regexes for Qwen2, DeepSeek-V3 and o200k;
 * the tiktoken pattern for Kimi K2 with `v`-flag set operations; the patterns llama.cpp lists for
 * llama-bpe, olmo/gpt-2, default and deepseek-llm — and splits with `String.prototype.split` and a
 * capture group instead of the library's exec loop. The real vocabularies' tokenizations are
 * checked against the reference tokenizers in tokenizer-conformance.test.ts; this file covers the
 * families without a reference vocabulary here (Kimi K2, Llama 3, OLMo, deepseek-llm, default).
 *
 * Where llama.cpp's splitters deviate from these patterns (we follow the patterns; the llama.cpp
 * comparison in tokenizer-llama-cpp.test.ts shows each case on real vocabularies):
 * - kimi-k2: llama.cpp's hand-written splitter (unicode.cpp) treats any run of letters as one
 *   word (no upper/lower split: "HelloWorld" stays whole), leaves \p{M} marks out of words, counts
 *   only the CJK ideograph blocks as Han (not 々 U+3005, 〇 U+3007, the radicals), and lowercases
 *   contractions with its own table ('ſ' is not an 's').
 * - gpt-4o (o200k): llama.cpp's regex engine cannot tell \p{Lu} from \p{Ll}, so its rewritten
 *   pattern distinguishes case only for ASCII and leaves \p{M} out of words (Indic, Thai, Khmer
 *   and Myanmar words split at every vowel sign).
 * - deepseek-llm: llama.cpp maps non-ASCII whitespace to U+000B before running std::wregex, so
 *   U+3000 no longer matches the punctuation range 　-。 and stays with neighbouring spaces.
 * - gpt-2 / olmo: llama.cpp's splitter omits the final `|\s+`; that alternative only ever matches
 *   what the gap between matches would hold anyway, so the pieces are the same.
 * - llama-bpe, qwen2: llama.cpp's hand-written splitters agree with the patterns on the corpus.
 */
import { describe, expect, it } from 'vitest';
import { preTokenize, resolvePreTokenizer, SUPPORTED_PRE_TOKENIZERS } from '../lib/tokenizer/pretokenize.js';
import { tokenizerCorpus } from './helpers/tokenizer-corpus.js';
import { tokenizerFiles, type VocabularyFamily } from './helpers/vocab.js';

const corpus = tokenizerCorpus();

/**
 * Isolated splitting by a sequence of patterns, each applied to every piece the previous ones
 * produced: `split` with the whole pattern in a capture group yields the text between matches and
 * the matches, alternately. The patterns must not contain capture groups of their own.
 */
function isolatedSplit(text: string, patterns: readonly RegExp[]): string[] {
  let pieces = [text];
  for (const pattern of patterns) {
    const splitter = new RegExp(`(${pattern.source})`, pattern.flags);
    pieces = pieces.flatMap((piece) => piece.split(splitter).filter((p) => p !== ''));
  }
  return pieces;
}

/** Every BMP character JavaScript's Unicode case-insensitive matching takes as `letter` (s: s S ſ). */
function caseVariants(letter: string): string[] {
  const re = new RegExp(`^${letter}$`, 'iu');
  const out: string[] = [];
  for (let c = 0; c < 0x10000; c++) if (c < 0xd800 || c > 0xdfff) if (re.test(String.fromCharCode(c))) out.push(String.fromCharCode(c));
  return out;
}

/**
 * Rewrites `(?i:…)` groups (which JavaScript lacks) into case classes: ASCII case only, as
 * transformers.js and llama.cpp do, or full Unicode simple case folding, as Rust's regex crate
 * (tiktoken) does.
 */
function expandCaseInsensitive(pattern: string, folding: 'ascii' | 'unicode'): string {
  return pattern.replace(/\(\?i:([^)]*)\)/g, (_, body: string) => {
    const letters = body.replace(/[a-z]/gi, (ch) => {
      const variants = folding === 'ascii' ? [ch.toLowerCase(), ch.toUpperCase()] : caseVariants(ch);
      return `[${variants.join('')}]`;
    });
    return `(?:${letters})`;
  });
}

/** The `Split` regexes of a family's tokenizer.json, in order. */
function tokenizerJsonPatterns(family: VocabularyFamily): RegExp[] {
  const pre = tokenizerFiles(family).tokenizerJSON['pre_tokenizer'] as { pretokenizers: { type: string; pattern?: { Regex?: string } }[] };
  return pre.pretokenizers
    .filter((p) => p.type === 'Split')
    .map((p) => new RegExp(expandCaseInsensitive(p.pattern!.Regex!, 'ascii'), 'gu'));
}

/** Kimi K2's tiktoken pattern (tokenization_kimi.py), with its `&&` intersections as `v`-flag set operations. */
function kimiPattern(): RegExp {
  const upper = String.raw`[[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]&&[^\p{sc=Han}]]`;
  const lower = String.raw`[[\p{Ll}\p{Lm}\p{Lo}\p{M}]&&[^\p{sc=Han}]]`;
  const contractions = expandCaseInsensitive("(?i:'s|'t|'re|'ve|'m|'ll|'d)", 'unicode');
  const source = [
    String.raw`[\p{sc=Han}]+`,
    String.raw`[^\r\n\p{L}\p{N}]?${upper}*${lower}+${contractions}?`,
    String.raw`[^\r\n\p{L}\p{N}]?${upper}+${lower}*${contractions}?`,
    String.raw`\p{N}{1,3}`,
    String.raw` ?[^\s\p{L}\p{N}]+[\r\n]*`,
    String.raw`\s*[\r\n]+`,
    String.raw`\s+(?!\S)`,
    String.raw`\s+`,
  ].join('|');
  return new RegExp(source, 'gv');
}

const GPT2_PATTERN = String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`;

/** The patterns llama.cpp lists in llama-vocab.cpp (deepseek-llm's from DeepSeek LLM's tokenizer.json). */
const DOCUMENTED: Record<string, readonly string[]> = {
  'llama-bpe': [expandCaseInsensitive(String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`, 'ascii')],
  olmo: [GPT2_PATTERN],
  'gpt-2': [GPT2_PATTERN],
  default: [String.raw`[\p{P}\$\+<=>\^~\|]+`, GPT2_PATTERN, String.raw`\p{N}+`, '[0-9][0-9][0-9]'],
  'deepseek-llm': [
    '[\r\n]',
    // Latin, Greek, Cyrillic, Armenian, Georgian, Cherokee … cased letters; written with escapes
    // because several range ends (U+1FD3, U+1FDB, U+2126, U+212A) are not in normal form.
    String.raw`\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377` +
      String.raw`\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5` +
      String.raw`\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d` +
      String.raw`\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4` +
      String.raw`\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115` +
      String.raw`\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184` +
      String.raw`\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e` +
      String.raw`\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\u{10400}-\u{1044f}\u{104b0}-\u{104d3}` +
      String.raw`\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+`,
    String.raw`\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+`,
    String.raw`\s+$`,
    String.raw`[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+`,
    String.raw`\p{N}+`,
  ],
};

function expectSameSplits(pre: string, patterns: readonly RegExp[]): void {
  expect(SUPPORTED_PRE_TOKENIZERS).toContain(pre);
  const spec = resolvePreTokenizer(pre);
  const mismatches: string[] = [];
  let pieces = 0;
  for (const text of corpus) {
    const ours = preTokenize(text, spec);
    const expected = isolatedSplit(text, patterns);
    pieces += ours.length;
    if (JSON.stringify(ours) !== JSON.stringify(expected) && mismatches.length < 5) {
      mismatches.push(`${JSON.stringify(text)}\n  ours:     ${JSON.stringify(ours)}\n  expected: ${JSON.stringify(expected)}`);
    }
  }
  expect(mismatches).toEqual([]);
  expect(pieces).toBeGreaterThan(50_000);
}

describe('pre-tokenizers split the corpus as their documented patterns do', () => {
  it.each([
    ['qwen2', 'qwen3'],
    ['deepseek-v3', 'deepseek-v3'],
    ['gpt-4o', 'gpt-oss'],
  ] as const)("%s: the Split regexes of the model's tokenizer.json", (pre, family) => {
    expectSameSplits(pre, tokenizerJsonPatterns(family));
  });

  it("kimi-k2: Kimi K2's tiktoken pattern with v-flag set intersection", () => {
    expectSameSplits('kimi-k2', [kimiPattern()]);
  });

  it.each(Object.keys(DOCUMENTED))('%s: the pattern llama.cpp documents', (pre) => {
    expectSameSplits(pre, DOCUMENTED[pre]!.map((p) => new RegExp(p, 'gu')));
  });
});

describe('pre-tokenizer details', () => {
  const split = (pre: string, text: string) => preTokenize(text, resolvePreTokenizer(pre));

  it('kimi-k2 keeps Han runs apart, splits at case changes and attaches marks to words', () => {
    expect(split('kimi-k2', '日本語のテキスト')).toEqual(['日本語', 'のテキスト']);
    expect(split('kimi-k2', '人々')).toEqual(['人々']); // 々 is Han by script
    expect(split('kimi-k2', 'HelloWorld')).toEqual(['Hello', 'World']);
    expect(split('kimi-k2', "DON'T it'ſ")).toEqual(["DON'T", " it'ſ"]);
    expect(split('kimi-k2', 'नमस्ते')).toEqual(['नमस्ते']);
    expect(split('kimi-k2', '1234567')).toEqual(['123', '456', '7']);
  });

  it('gpt-4o splits at lower-to-upper case changes in any script and keeps marks in words', () => {
    expect(split('gpt-4o', 'HTTPServerError')).toEqual(['HTTPServer', 'Error']);
    expect(split('gpt-4o', 'ΑθήναΑθήνα')).toEqual(['Αθήνα', 'Αθήνα']);
    expect(split('gpt-4o', 'ខ្មែរ')).toEqual(['ខ្មែរ']);
  });

  it('the Qwen and Llama 3 families differ only in digit grouping', () => {
    expect(split('qwen2', 'x 12345')).toEqual(['x', ' ', '1', '2', '3', '4', '5']);
    expect(split('llama-bpe', 'x 12345')).toEqual(['x', ' ', '123', '45']);
  });

  it('deepseek-v3 groups digits by three and keeps CJK runs and punctuation-led words apart', () => {
    expect(split('deepseek-v3', '1234567')).toEqual(['123', '456', '7']);
    expect(split('deepseek-v3', '日本語のテキスト。')).toEqual(['日本語のテキスト', '。']);
    expect(split('deepseek-v3', '.net (x)')).toEqual(['.net', ' (', 'x', ')']);
  });

  it('an empty string has no pieces', () => {
    for (const pre of ['qwen2', 'gpt-4o', 'kimi-k2', 'deepseek-llm', 'default']) expect(split(pre, '')).toEqual([]);
  });
});
