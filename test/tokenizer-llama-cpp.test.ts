/**
 * node-moe's tokenizers against llama.cpp's (node-llama-cpp 3.21.1) on the same GGUF vocabularies:
 * the four real vocabularies of test/helpers/vocab.ts written as vocabulary-only GGUF files, plus
 * the pre-tokenizers without a public vocabulary here run on them (`tokenizer.ggml.pre`
 * overridden at load time): Qwen3's vocabulary with llama-bpe, olmo, gpt-2, default and
 * deepseek-llm, gpt-oss's with kimi-k2. llama.cpp runs in a child process (it aborts the process
 * on some malformed vocabularies), tokenizing the whole corpus with and without special-token
 * parsing, detokenizing our tokens, and answering which tokens end generation.
 *
 * Where llama.cpp and the reference tokenizers (Hugging Face / tiktoken, see
 * tokenizer-conformance.test.ts) disagree, node-moe follows the reference. Every difference from
 * llama.cpp must be explained by one of the llama.cpp behaviours below, each checked by emulating
 * it (rebuilding our tokenizer with that behaviour and getting llama.cpp's exact output):
 *
 * 1. `normalization` (qwen2): Qwen's tokenizer.json normalizes text to NFC before splitting;
 *    llama.cpp does not normalize, so decomposed accents ("e\u0301", "n\u0303", Å as A+ring,
 *    K as U+212A KELVIN SIGN) tokenize differently. Emulated by turning our NFC step off.
 * 2. `surrogates` (all): a JavaScript string with a lone surrogate (invalid UTF-16) reaches
 *    llama.cpp as U+FFFD through N-API, whereas node-moe and the reference encode the lone
 *    surrogate itself (as the bytes of U+FFFD, but it is neither a letter nor a symbol for the
 *    pre-tokenizer, and SentencePiece has no piece for it). Emulated by making the input
 *    well-formed first.
 * 3. `regex` (gpt-4o, kimi-k2, deepseek-llm): llama.cpp runs approximations of the patterns:
 *    - gpt-4o: its regex engine has no \p{Lu}/\p{Ll}, so the o200k pattern is rewritten with
 *      ASCII-only case classes and without \p{M}: words in Indic, Thai, Khmer, Myanmar, Tamil …
 *      split at every vowel sign and virama ("नमस्ते" → न|म|स|्त|े). It also does not apply tokenizer.json's
 *      `ignore_merges` for gpt-4o (no effect seen on the corpus once the split is emulated).
 *    - kimi-k2: a hand-written splitter: no upper/lower split, no \p{M} in words, Han = the CJK
 *      ideograph blocks only.
 *    - deepseek-llm: U+3000 IDEOGRAPHIC SPACE becomes U+000B before std::wregex runs, so it no
 *      longer matches the punctuation range 　-。 ("  \u3000 " stays one piece).
 *    Emulated by tokenizing with llama.cpp's pattern (as JavaScript) and merges as listed.
 * 4. `retyped` (qwen3, gpt-oss): llama.cpp changes token types by text at load time:
 *    - every token whose text is on its end-of-generation list becomes CONTROL — including Qwen's
 *      normal token "</s>" (which merges form from "</" and "s>"), which llama.cpp then parses as a special token
 *      with `special: true`, skips when detokenizing, and counts as end of generation;
 *    - gpt-oss's `<|start|>`, `<|channel|>`, `<|message|>`, `<|constrain|>` and `<|end|>` become
 *      USER_DEFINED, so llama.cpp finds them in user text even without special-token parsing and
 *      always renders them. node-moe keeps them CONTROL (no injection from user text); chat code
 *      that parses harmony output detokenizes with `special: true`.
 *    Emulated by applying the same retyping to the vocabulary.
 * 5. `spm-space` (detokenize, SentencePiece): llama.cpp strips the leading space of the first
 *    token's piece; Hugging Face's decoder (and node-moe) strips one leading space of the whole
 *    text. They differ when the first token renders nothing (BOS, or a control token without
 *    `special`): [<s>, ▁Hi] is " Hi" in llama.cpp, "Hi" in the reference.
 * 6. `eog` (qwen3): llama.cpp's end-of-generation list matches Qwen's normal "</s>" (see 4);
 *    node-moe skips normal tokens that BPE merges produce. All other EOG ids agree.
 * 7. `clean-spaces` (detokenize; llama-bpe, olmo, gpt-2, default and the other pre-tokenizers
 *    llama.cpp does not exempt): `llama_detokenize` drops the space before . , ! ? and before
 *    's 'm 're 've, and around a lone ' ("x !== y" → "x!== y"). That is lossy; node-moe's
 *    detokenize is the plain concatenation of the token pieces (what llama.cpp itself streams
 *    during generation with token_to_piece, and Hugging Face's decode without
 *    clean_up_tokenization_spaces). Emulated by applying llama.cpp's three passes.
 *
 * Counts on the corpus (2,200 strings, each tokenized with and without special-token parsing; the
 * test prints them): qwen3 normalization 314, retyped 44, both 4 — detokenize identical — EOG
 * differs only in "</s>"; deepseek-v3 surrogates 46, nothing else; gpt-oss regex 502, retyped 33,
 * both 6, detokenize retyped 39; llama2 (Mistral) surrogates 150, detokenize spm-space 18; Qwen3's
 * vocabulary with llama-bpe, olmo, gpt-2 or default: retyped 48 (llama.cpp's hand-written llama3
 * and gpt2 splitters agree with the patterns everywhere), detokenize clean-spaces 375; with
 * deepseek-llm: retyped 45, regex 21, both 3; gpt-oss's vocabulary with kimi-k2: regex 502,
 * retyped 33, both 6, detokenize retyped 39.
 *
 * Nothing else differs: every other corpus string tokenizes and detokenizes to exactly what
 * llama.cpp gives, and BOS, EOS and add_bos agree on every vocabulary.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { beforeAll, describe, expect, it } from 'vitest';
import { createTokenizer, TokenType, writeGguf, type GgufMetadataValue, type Tokenizer } from '../lib/index.js';
import { resolvePreTokenizer, type PreTokenizerSpec } from '../lib/tokenizer/pretokenize.js';
import { createTokenizerWithPreTokenizer } from '../lib/tokenizer/tokenizer.js';
import { tempDir } from './helpers/tmp.js';
import { tokenizerCorpus } from './helpers/tokenizer-corpus.js';
import { realVocabulary, VOCABULARY_FAMILIES, type VocabularyFamily } from './helpers/vocab.js';

interface Job {
  name: string;
  family: VocabularyFamily;
  /** `tokenizer.ggml.pre` override, if any. */
  pre?: string;
}

const JOBS: Job[] = [
  ...VOCABULARY_FAMILIES.map((family) => ({ name: family, family })),
  ...['llama-bpe', 'olmo', 'gpt-2', 'default', 'deepseek-llm'].map((pre) => ({ name: `qwen3 vocabulary, pre ${pre}`, family: 'qwen3' as const, pre })),
  { name: 'gpt-oss vocabulary, pre kimi-k2', family: 'gpt-oss', pre: 'kimi-k2' },
];

interface LlamaCppAnswers {
  plain: number[][];
  special: number[][];
  /** Detokenized `detokenize` inputs, with and without special tokens rendered. */
  detokenizedPlain: string[];
  detokenizedSpecial: string[];
  eog: boolean[];
  bos: number | null;
  eos: number | null;
  addBos: boolean;
}

/**
 * The child: runs llama.cpp over every request on stdin, answers as JSON on stdout. It runs from a
 * file (node-llama-cpp forks a binary check that inherits the parent's exec arguments, so `-e`
 * will not do), importing node-llama-cpp by absolute URL.
 */
const childScript = (llamaCppUrl: string, answerFile: string) => `
import { writeFileSync } from 'node:fs';
import { getLlama } from ${JSON.stringify(llamaCppUrl)};
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
// Decoded once: a chunk boundary can fall inside a multi-byte character.
const requests = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error', maxThreads: 1 });
const answers = [];
for (const r of requests) {
  const model = await llama.loadModel({
    modelPath: r.path, vocabOnly: true,
    ...(r.pre ? { metadataOverrides: { tokenizer: { ggml: { pre: r.pre } } } } : {}),
  });
  const ids = (x) => Array.from(x, Number);
  answers.push({
    plain: r.texts.map((t) => ids(model.tokenize(t, false))),
    special: r.texts.map((t) => ids(model.tokenize(t, true))),
    detokenizedPlain: r.detokenize.map((t) => model.detokenize(t, false)),
    detokenizedSpecial: r.detokenize.map((t) => model.detokenize(t, true)),
    eog: r.candidates.map((t) => model.isEogToken(t)),
    bos: model.tokens.bos, eos: model.tokens.eos, addBos: model.tokens.shouldPrependBosToken,
  });
  await model.dispose();
}
// llama.cpp prints to stdout (e.g. metadata overrides), so the answers go to a file.
writeFileSync(${JSON.stringify(answerFile)}, JSON.stringify(answers));
await llama.dispose();
`;

/** llama.cpp answers the whole corpus for every vocabulary in well under a minute; a hang fails the test instead. */
const CHILD_TIMEOUT_MS = 240_000;

async function runLlamaCpp(dir: string, requests: unknown[]): Promise<LlamaCppAnswers[]> {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const llamaCpp = createRequire(path.join(root, 'package.json')).resolve('node-llama-cpp');
  const script = path.join(dir, 'llama-cpp-tokenize.mjs');
  const answerFile = path.join(dir, 'llama-cpp-answers.json');
  await writeFile(script, childScript(pathToFileURL(llamaCpp).href, answerFile));
  await new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, [script], { cwd: root, stdio: ['pipe', 'ignore', 'pipe'], timeout: CHILD_TIMEOUT_MS });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    child.on('error', reject);
    child.on('close', (code, signal) => (code === 0 ? resolve() : reject(new Error(`llama.cpp child exited with ${code ?? signal}: ${err}`))));
    child.stdin.end(JSON.stringify(requests));
  });
  return JSON.parse(await readFile(answerFile, 'utf8')) as LlamaCppAnswers[];
}

/** llama.cpp's end-of-generation texts (llama-vocab.cpp), for the retyping emulation. */
const LLAMA_CPP_EOG_TEXTS = [
  '<|eot_id|>', '<|im_end|>', '<|end|>', '<|return|>', '<|call|>', '<|flush|>', '<|calls|>', '<end_of_turn>', '<|endoftext|>',
  '</s>', '<|eom_id|>', '<EOT>', '_<EOT>', '[EOT]', '[EOS]', '<|end_of_text|>', '<end_of_utterance>', '<eos>', '<turn|>',
  '<|tool_response>', '<｜end▁of▁sentence｜>', '[e~[',
];

/** The patterns llama.cpp actually runs where it approximates the model's (behaviour 3), as JavaScript regexes. */
function llamaCppPatterns(pre: string): RegExp[] | undefined {
  const contractions = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
  const han = String.raw`[\u4E00-\u9FFF\u3400-\u4DBF\u{20000}-\u{2A6DF}\u{2A700}-\u{2EBEF}\uF900-\uFAFF\u{2F800}-\u{2FA1F}]`;
  switch (pre) {
    case 'gpt-4o':
      return [new RegExp(
        String.raw`[^\r\n\p{L}\p{N}]?(?:(?=[\p{L}])[^a-z])*(?:(?=[\p{L}])[^A-Z])+${contractions}?|[^\r\n\p{L}\p{N}]?(?:(?=[\p{L}])[^a-z])+(?:(?=[\p{L}])[^A-Z])*${contractions}?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
        'gu',
      )];
    case 'kimi-k2':
      return [new RegExp(
        String.raw`${han}+|[^\r\n\p{L}\p{N}]?(?:(?!${han})\p{L})+${contractions}?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
        'gu',
      )];
    case 'deepseek-llm': {
      const ours = resolvePreTokenizer('deepseek-llm').regexes;
      // The punctuation regex without U+3000, which llama.cpp has turned into U+000B by then.
      return ours.map((r) => (r.source.includes('\\u3000-\\u3002') ? new RegExp(r.source.replace('\\u3000-\\u3002', '\\u3001-\\u3002'), r.flags) : r));
    }
    default:
      return undefined;
  }
}

type Behaviour = 'normalization' | 'surrogates' | 'regex' | 'retyped' | 'spm-space';

/** Our tokenizer with a set of llama.cpp's behaviours switched on. */
function emulate(metadata: Record<string, GgufMetadataValue>, behaviours: ReadonlySet<Behaviour>): Tokenizer {
  let meta = metadata;
  if (behaviours.has('retyped')) {
    const tokens = meta['tokenizer.ggml.tokens'] as string[];
    const types = Int32Array.from(meta['tokenizer.ggml.token_type'] as Int32Array);
    const has = (t: string) => tokens.includes(t);
    tokens.forEach((text, id) => {
      if (LLAMA_CPP_EOG_TEXTS.includes(text) && types[id] !== TokenType.Control) types[id] = TokenType.Control;
      if (['<|channel|>', '<|message|>', '<|start|>', '<|constrain|>'].includes(text)) types[id] = TokenType.UserDefined;
      if (text === '<|end|>' && has('<|return|>') && has('<|call|>')) types[id] = TokenType.UserDefined;
    });
    meta = { ...meta, 'tokenizer.ggml.token_type': types };
  }
  if (meta['tokenizer.ggml.model'] !== 'gpt2') return createTokenizer(meta);
  const spec: PreTokenizerSpec = resolvePreTokenizer(meta['tokenizer.ggml.pre'] as string);
  const patterns = behaviours.has('regex') ? llamaCppPatterns(spec.name) : undefined;
  return createTokenizerWithPreTokenizer(meta, {
    ...spec,
    ...(behaviours.has('normalization') ? { normalize: undefined } : {}),
    ...(patterns ? { regexes: patterns, ignoreMerges: false, tiktokenRanks: false } : {}),
  });
}

/** All subsets of `items`, smallest first. */
function subsets<T>(items: readonly T[]): T[][] {
  const all: T[][] = [[]];
  for (const item of items) for (const s of all.slice()) all.push([...s, item]);
  return all.sort((a, b) => a.length - b.length);
}

/**
 * llama.cpp's `clean_spaces` post-processing of `llama_detokenize` (behaviour 7), on for the
 * pre-tokenizers it does not exempt (llama-bpe, olmo, gpt-2, default …): drop the space before
 * ? ! . , — then around a lone ' — then before 's 'm 're 've.
 */
function llamaCppCleanSpaces(text: string): string {
  // Three in-place compaction passes over the UTF-8 bytes, reading the partly rewritten buffer
  // exactly as llama_vocab::impl::detokenize does.
  const t = Buffer.from(text, 'utf8');
  const [SPACE, QUOTE] = [0x20, 0x27];
  const code = (c: string) => c.charCodeAt(0);
  let total = t.length;
  let n = total;
  total = n ? 1 : 0;
  for (let i = 1; i < n; i++) {
    const x = t[i]!;
    if (t[i - 1] === SPACE && [code('?'), code('!'), code('.'), code(',')].includes(x)) total--;
    t[total++] = x;
  }
  n = total;
  total = n ? 1 : 0;
  for (let i = 1; i < n; i++) {
    const x = t[i]!;
    if (x === QUOTE && i + 1 < n && t[i - 1] === SPACE && t[i + 1] === SPACE) {
      total--;
      t[++i] = 0;
    }
    t[total++] = x;
  }
  n = total;
  total = n ? 1 : 0;
  for (let i = 1; i < n; i++) {
    const x = t[i]!;
    if (t[i - 1] === SPACE && x === QUOTE && i + 1 < n) {
      const x1 = t[i + 1];
      if (x1 === code('s') || x1 === code('m')) total--;
      else if (i + 2 < n && ((x1 === code('r') && t[i + 2] === code('e')) || (x1 === code('v') && t[i + 2] === code('e')))) total--;
    }
    t[total++] = x;
  }
  return new TextDecoder('utf-8', { ignoreBOM: true }).decode(t.subarray(0, total));
}

/** Bytes llama.cpp's SentencePiece detokenize gives (behaviour 5): only the first token's leading space goes. */
function llamaCppSpmDetokenize(tokenizer: Tokenizer, ids: readonly number[], special: boolean): string {
  const parts: Uint8Array[] = [];
  ids.forEach((id, i) => {
    const type = tokenizer.tokenType(id);
    const hidden = type === TokenType.Unused || (!special && (type === TokenType.Control || type === TokenType.Unknown));
    let bytes = hidden ? new Uint8Array(0) : tokenizer.tokenBytes(id);
    if (i === 0 && bytes[0] === 0x20) bytes = bytes.subarray(1);
    parts.push(bytes);
  });
  return new TextDecoder('utf-8', { ignoreBOM: true }).decode(Buffer.concat(parts));
}

/** The text N-API hands llama.cpp: lone surrogates replaced by U+FFFD. */
const wellFormed = (text: string) => text.replace(/\p{Cs}/gu, '\ufffd');

const corpus = tokenizerCorpus();
let answers: LlamaCppAnswers[];
const metadataOf = (job: Job) => ({ ...realVocabulary(job.family), ...(job.pre ? { 'tokenizer.ggml.pre': job.pre } : {}) });
const tokenizers = new Map<string, Tokenizer>();
const tokenizerOf = (job: Job) => {
  let t = tokenizers.get(job.name);
  if (!t) tokenizers.set(job.name, (t = createTokenizer(metadataOf(job))));
  return t;
};
/** Token ids whose end-of-generation status is compared: every non-normal token and normal ones with an EOG text. */
const eogCandidates = (t: Tokenizer) =>
  Array.from({ length: t.vocabSize }, (_, id) => id).filter((id) => t.tokenType(id) !== TokenType.Normal || LLAMA_CPP_EOG_TEXTS.includes(t.tokenText(id)));

beforeAll(async () => {
  const dir = await tempDir('node-moe-tokenizer-');
  const files = new Map<VocabularyFamily, string>();
  for (const family of VOCABULARY_FAMILIES) {
    const file = path.join(dir, `${family}.gguf`);
    // A vocabulary-only file: llama.cpp loads the hyper-parameters and the vocabulary, no tensors.
    await writeGguf(file, {
      metadata: {
        'general.architecture': 'llama',
        'llama.context_length': 512,
        'llama.embedding_length': 64,
        'llama.block_count': 1,
        'llama.feed_forward_length': 128,
        'llama.attention.head_count': 1,
        'llama.attention.layer_norm_rms_epsilon': 1e-5,
        ...realVocabulary(family),
      },
      tensors: [],
    });
    files.set(family, file);
  }
  answers = await runLlamaCpp(
    dir,
    JOBS.map((job) => {
      const t = tokenizerOf(job);
      return {
        path: files.get(job.family),
        pre: job.pre,
        texts: corpus,
        detokenize: corpus.map((text) => [...t.tokenize(text, { special: true })]),
        candidates: eogCandidates(t),
      };
    }),
  );
}, CHILD_TIMEOUT_MS + 60_000);

describe.each(JOBS.map((job, index) => ({ ...job, index })))('llama.cpp on the $name', (job) => {
  it('tokenizes identically except for the documented llama.cpp behaviours', () => {
    const answer = answers[job.index]!;
    const ours = tokenizerOf(job);
    const metadata = metadataOf(job);
    const candidates: Behaviour[] = ['surrogates', 'normalization', 'regex', 'retyped'];
    const emulations = new Map<string, Tokenizer>();
    const emulated = (set: Behaviour[]) => {
      const key = set.filter((b) => b !== 'surrogates').join('+');
      let t = emulations.get(key);
      if (!t) emulations.set(key, (t = emulate(metadata, new Set(set))));
      return t;
    };
    const counts: Record<string, number> = {};
    const unexplained: string[] = [];
    corpus.forEach((text, i) => {
      for (const special of [false, true]) {
        const theirs = (special ? answer.special : answer.plain)[i]!.join();
        if ([...ours.tokenize(text, { special })].join() === theirs) continue;
        const explanation = subsets(candidates).find((set) => {
          if (set.length === 0) return false;
          const input = set.includes('surrogates') ? wellFormed(text) : text;
          return [...emulated(set).tokenize(input, { special })].join() === theirs;
        });
        const key = explanation ? explanation.join('+') : 'unexplained';
        counts[key] = (counts[key] ?? 0) + 1;
        if (!explanation && unexplained.length < 5) {
          unexplained.push(`special=${special} ${JSON.stringify(text).slice(0, 150)}\n  ours:  ${[...ours.tokenize(text, { special })].map((id) => ours.tokenText(id)).join('|').slice(0, 300)}\n  llama: ${(special ? answer.special : answer.plain)[i]!.map((id) => ours.tokenText(id)).join('|').slice(0, 300)}`);
        }
      }
    });
    console.log(`${job.name}: tokenize differences from llama.cpp over ${corpus.length * 2} tokenizations by cause: ${JSON.stringify(counts)}`);
    expect(unexplained).toEqual([]);
  });

  it('detokenizes identically except for the documented llama.cpp behaviours', () => {
    const answer = answers[job.index]!;
    const ours = tokenizerOf(job);
    const retyped = emulate(metadataOf(job), new Set(['retyped']));
    const spm = ours.model === 'llama';
    const counts: Record<string, number> = {};
    const unexplained: string[] = [];
    corpus.forEach((text, i) => {
      const ids = [...ours.tokenize(text, { special: true })];
      for (const special of [false, true]) {
        const theirs = (special ? answer.detokenizedSpecial : answer.detokenizedPlain)[i]!;
        if (ours.detokenize(ids, { special }) === theirs) continue;
        let cause = 'unexplained';
        if (retyped.detokenize(ids, { special }) === theirs) cause = 'retyped';
        else if (spm && llamaCppSpmDetokenize(ours, ids, special) === theirs) cause = 'spm-space';
        else if (!spm && llamaCppCleanSpaces(ours.detokenize(ids, { special })) === theirs) cause = 'clean-spaces';
        counts[cause] = (counts[cause] ?? 0) + 1;
        if (cause === 'unexplained' && unexplained.length < 5) {
          unexplained.push(`special=${special} ${JSON.stringify(text).slice(0, 120)}: ours ${JSON.stringify(ours.detokenize(ids, { special }))}, llama.cpp ${JSON.stringify(theirs)}`);
        }
      }
    });
    console.log(`${job.name}: detokenize differences from llama.cpp by cause: ${JSON.stringify(counts)}`);
    expect(unexplained).toEqual([]);
  });

  it('agrees on BOS, EOS, add_bos and the end-of-generation tokens', () => {
    const answer = answers[job.index]!;
    const ours = tokenizerOf(job);
    expect(ours.bosToken ?? null).toBe(answer.bos);
    expect(ours.eosToken ?? null).toBe(answer.eos);
    expect(ours.addBos).toBe(answer.addBos);
    const differences = eogCandidates(ours).filter((id, k) => ours.eogTokens.has(id) !== answer.eog[k]);
    // Only normal tokens that merges produce (Qwen's "</s>"), which llama.cpp's text list catches (behaviour 6).
    for (const id of differences) {
      expect(ours.tokenType(id), ours.tokenText(id)).toBe(TokenType.Normal);
      expect(answer.eog[eogCandidates(ours).indexOf(id)]).toBe(true);
    }
    if (differences.length) console.log(`${job.name}: end-of-generation differences: ${differences.map((id) => `${id} ${JSON.stringify(ours.tokenText(id))}`).join(', ')}`);
    expect(answer.eog.filter(Boolean).length).toBeGreaterThan(0);
  });
});
