#!/usr/bin/env node
// node-moe vs llama.cpp (node-llama-cpp, CPU) on the same generated GGUF, same thread count, in one
// process tree, alternating runs. Prints a markdown table and a JSON line of medians and ratios.
//   npm run bench [-- --layers 2 --runs 3 --threads 2 --prefill 512 --decode 64 --model path.gguf]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { getLlama } from 'node-llama-cpp';
import { getCpuInfo, loadModel, readGgufInfo, writeGguf } from '../dist/index.js';

const { values: args } = parseArgs({
  options: {
    layers: { type: 'string', default: '2' },
    runs: { type: 'string', default: '3' },
    threads: { type: 'string', default: String(Math.min(os.availableParallelism(), 2)) },
    prefill: { type: 'string', default: '512' },
    decode: { type: 'string', default: '64' },
    model: { type: 'string' },
  },
});
const threads = Number(args.threads);
const runs = Number(args.runs);
const prefillTokens = Number(args.prefill);
const decodeTokens = Number(args.decode);

// Qwen3-30B-A3B layer shapes in a Q4_K_M-like mix (Q4_K; Q6_K for attn_v, ffn_down_exps, output; F32 router).
const SHAPE = { embd: 2048, heads: 32, kvHeads: 4, headDim: 128, experts: 128, used: 8, expertFfn: 768, vocab: 2048 };

function random(n, scale, seed) {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    out[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

async function generateModel(file, layers) {
  const { embd, heads, kvHeads, headDim, experts, used, expertFfn, vocab } = SHAPE;
  const tensors = [];
  let seed = 1;
  const m = (name, shape, type, scale) => tensors.push({ name, shape, type, data: () => random(shape.reduce((a, b) => a * b, 1), scale, seed++) });
  const ones = (name, n) => tensors.push({ name, shape: [n], type: 'F32', data: new Float32Array(n).fill(1) });
  m('token_embd.weight', [embd, vocab], 'Q4_K', 1);
  for (let l = 0; l < layers; l++) {
    const b = `blk.${l}`;
    ones(`${b}.attn_norm.weight`, embd);
    m(`${b}.attn_q.weight`, [embd, heads * headDim], 'Q4_K', 0.02);
    m(`${b}.attn_k.weight`, [embd, kvHeads * headDim], 'Q4_K', 0.02);
    m(`${b}.attn_v.weight`, [embd, kvHeads * headDim], 'Q6_K', 0.02);
    m(`${b}.attn_output.weight`, [heads * headDim, embd], 'Q4_K', 0.02);
    ones(`${b}.attn_q_norm.weight`, headDim);
    ones(`${b}.attn_k_norm.weight`, headDim);
    ones(`${b}.ffn_norm.weight`, embd);
    m(`${b}.ffn_gate_inp.weight`, [embd, experts], 'F32', 0.05);
    m(`${b}.ffn_gate_exps.weight`, [embd, expertFfn, experts], 'Q4_K', 0.02);
    m(`${b}.ffn_up_exps.weight`, [embd, expertFfn, experts], 'Q4_K', 0.02);
    m(`${b}.ffn_down_exps.weight`, [expertFfn, embd, experts], 'Q6_K', 0.02);
  }
  ones('output_norm.weight', embd);
  m('output.weight', [embd, vocab], 'Q6_K', 0.05);
  // llama.cpp's SentencePiece vocabulary needs the 256 byte tokens (it looks up <0x0A> at load).
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [2, 3, 3];
  for (let b = 0; b < 256; b++) { tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`); types.push(6); }
  for (let i = tokens.length; i < vocab; i++) { tokens.push(`▁t${i}`); types.push(1); }
  await writeGguf(file, {
    metadata: {
      'general.architecture': 'qwen3moe', 'general.name': `bench qwen3moe ${layers} layers`,
      'qwen3moe.context_length': 32768, 'qwen3moe.embedding_length': embd, 'qwen3moe.block_count': layers,
      'qwen3moe.feed_forward_length': 6144, 'qwen3moe.attention.head_count': heads, 'qwen3moe.attention.head_count_kv': kvHeads,
      'qwen3moe.attention.key_length': headDim, 'qwen3moe.attention.value_length': headDim,
      'qwen3moe.attention.layer_norm_rms_epsilon': 1e-6, 'qwen3moe.rope.freq_base': { type: 'f32', value: 1e6 },
      'qwen3moe.expert_count': experts, 'qwen3moe.expert_used_count': used, 'qwen3moe.expert_feed_forward_length': expertFfn,
      'tokenizer.ggml.model': 'llama', 'tokenizer.ggml.tokens': tokens, 'tokenizer.ggml.scores': new Float32Array(vocab),
      'tokenizer.ggml.token_type': Int32Array.from(types), 'tokenizer.ggml.bos_token_id': 1, 'tokenizer.ggml.eos_token_id': 2,
    },
    tensors,
  }, { onProgress: (p) => process.stderr.write(`\rgenerating ${file}: ${p.tensorsWritten}/${p.tensorCount}`) });
  process.stderr.write('\n');
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const promptTokens = Array.from({ length: prefillTokens }, (_, i) => 3 + ((i * 7919) % (SHAPE.vocab - 3)));

async function benchNodeMoe(file) {
  const t0 = performance.now();
  const model = await loadModel(file, { threads, contextSize: prefillTokens + decodeTokens + 8 });
  const load = (performance.now() - t0) / 1000;
  const seq = model.createSequence();
  let t = performance.now();
  let logits = await seq.evaluate(promptTokens);
  const prefill = prefillTokens / ((performance.now() - t) / 1000);
  seq.truncate(0);
  await seq.evaluate(promptTokens.slice(0, 16));
  t = performance.now();
  let next = 3;
  for (let i = 0; i < decodeTokens; i++) {
    logits = await seq.evaluate([next]);
    let best = 0;
    for (let j = 1; j < logits.length; j++) if (logits[j] > logits[best]) best = j;
    next = best;
  }
  const decode = decodeTokens / ((performance.now() - t) / 1000);
  await model.dispose();
  return { load, prefill, decode };
}

let llama;
async function benchLlamaCpp(file) {
  llama ??= await getLlama({ gpu: false, logLevel: 'error', maxThreads: threads, build: 'never' });
  const t0 = performance.now();
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  const load = (performance.now() - t0) / 1000;
  const context = await model.createContext({ contextSize: prefillTokens + decodeTokens + 8, threads, batchSize: prefillTokens });
  const seq = context.getSequence();
  let t = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(promptTokens);
  const prefill = prefillTokens / ((performance.now() - t) / 1000);
  await seq.clearHistory();
  await seq.evaluateWithoutGeneratingNewTokens(promptTokens.slice(0, 16));
  t = performance.now();
  let n = 0;
  for await (const _ of seq.evaluate([3], { temperature: 0 })) if (++n >= decodeTokens) break;
  const decode = decodeTokens / ((performance.now() - t) / 1000);
  await context.dispose();
  await model.dispose();
  return { load, prefill, decode };
}

const cacheDir = path.join(os.homedir(), '.cache', 'node-moe-bench');
mkdirSync(cacheDir, { recursive: true });
const file = args.model ?? path.join(cacheDir, `qwen3moe-a3b-shapes-${args.layers}L-q4km-v2.gguf`);
if (!existsSync(file)) await generateModel(file, Number(args.layers));
const info = await readGgufInfo(file);
const sizeGiB = info.tensors.reduce((a, t) => a + t.bytes, 0) / 2 ** 30;

const results = { nodeMoe: [], llamaCpp: [] };
await benchNodeMoe(file); // warm-up: page cache, thread start
await benchLlamaCpp(file);
for (let r = 0; r < runs; r++) {
  results.nodeMoe.push(await benchNodeMoe(file));
  results.llamaCpp.push(await benchLlamaCpp(file));
}
const summary = {};
for (const metric of ['prefill', 'decode', 'load']) {
  const ours = median(results.nodeMoe.map((x) => x[metric]));
  const theirs = median(results.llamaCpp.map((x) => x[metric]));
  summary[metric] = { nodeMoe: ours, llamaCpp: theirs, ratio: metric === 'load' ? theirs / ours : ours / theirs };
}
const cpu = getCpuInfo();
console.log(`\nmodel: ${path.basename(file)} (${sizeGiB.toFixed(2)} GiB), threads ${threads}, ${os.cpus()[0]?.model} (${cpu.active}), median of ${runs}\n`);
console.log('| metric | node-moe | llama.cpp | ratio (node-moe ÷ llama.cpp; load: llama.cpp ÷ node-moe) |');
console.log('| --- | ---: | ---: | ---: |');
console.log(`| prefill ${prefillTokens} tokens, tok/s | ${summary.prefill.nodeMoe.toFixed(1)} | ${summary.prefill.llamaCpp.toFixed(1)} | ${summary.prefill.ratio.toFixed(2)}× |`);
console.log(`| decode ${decodeTokens} tokens, tok/s | ${summary.decode.nodeMoe.toFixed(2)} | ${summary.decode.llamaCpp.toFixed(2)} | ${summary.decode.ratio.toFixed(2)}× |`);
console.log(`| load, s | ${summary.load.nodeMoe.toFixed(2)} | ${summary.load.llamaCpp.toFixed(2)} | ${summary.load.ratio.toFixed(2)}× |`);
console.log(JSON.stringify({ model: path.basename(file), sizeGiB, threads, cpu: cpu.active, runs, summary }));

// Tokenizer throughput against the reference tokenizers (issue: tokenizing 1 MB well under 1 s).
console.log('\n## Tokenizers');
const tokenizerBench = spawnSync(process.execPath, [new URL('./tokenizer.mjs', import.meta.url).pathname, '--mb', '1'], {
  stdio: 'inherit',
});
if (tokenizerBench.status !== 0) process.exitCode = 1;
