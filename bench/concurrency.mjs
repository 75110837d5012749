#!/usr/bin/env node
// Aggregate generation throughput under concurrency: node-moe vs llama.cpp (node-llama-cpp, CPU) on the same
// GGUF file, same thread count, in one process, alternating engines each run. At each concurrency level N,
// N streams with different prompts generate the same number of tokens greedily (end-of-generation ignored);
// aggregate tok/s = all generated tokens / wall time from the start of all N to the end of the last.
// node-moe: N concurrent model.generate calls. llama.cpp: one context with N sequences evaluating concurrently
// (node-llama-cpp batches their decodes). Prints a markdown table and a JSON line of medians and ratios.
//   node bench/concurrency.mjs [--levels 1,4,16 --runs 3 --threads 2 --prompt 32 --gen 32 --layers 2 --model path.gguf]
import { existsSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { getLlama } from 'node-llama-cpp';
import { getCpuInfo, loadModel, readGgufInfo } from '../dist/index.js';
import { cpuBusyShare } from './machine.mjs';
import { generateModel } from './model.mjs';

const { values: args } = parseArgs({
  options: {
    levels: { type: 'string', default: '1,4,16' },
    runs: { type: 'string', default: '3' },
    threads: { type: 'string', default: String(Math.min(os.availableParallelism(), 2)) },
    prompt: { type: 'string', default: '32' },
    gen: { type: 'string', default: '32' },
    layers: { type: 'string', default: '2' },
    model: { type: 'string' },
  },
});
const threads = Number(args.threads);
const runs = Number(args.runs);
const promptLength = Number(args.prompt);
const genTokens = Number(args.gen);
const levels = args.levels.split(',').map(Number);
for (const [name, v] of [['threads', threads], ['runs', runs], ['prompt', promptLength], ['gen', genTokens], ...levels.map((l) => ['levels', l])]) {
  if (!Number.isInteger(v) || v < 1) throw new RangeError(`--${name} must be a positive integer, got ${v}`);
}
// Cells each stream needs (prompt + generated tokens + slack).
const perSequenceContext = promptLength + genTokens + 16;

// The generated model is the one bench/run.mjs makes (same generator, now in bench/model.mjs; same cache file):
// Qwen3-30B-A3B layer shapes in a Q4_K_M-like mix (Q4_K; Q6_K for attn_v, ffn_down_exps, output; F32 router).

// Each measurement is preceded by an untimed batch of the same prompts generating this many tokens.
const WARM_UP_TOKENS = 4;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const cacheDir = path.join(os.homedir(), '.cache', 'node-moe-bench');
mkdirSync(cacheDir, { recursive: true });
const file = args.model ?? path.join(cacheDir, `qwen3moe-a3b-shapes-${args.layers}L-q4km-v2.gguf`);
if (!existsSync(file)) await generateModel(file, Number(args.layers));
const info = await readGgufInfo(file);
const sizeGiB = info.tensors.reduce((a, t) => a + t.bytes, 0) / 2 ** 30;
const vocabSize = Math.min(...[info.tensors.find((t) => t.name === 'token_embd.weight')?.shape[1],
  info.metadata['tokenizer.ggml.tokens']?.length].filter((v) => v > 0));
if (!Number.isFinite(vocabSize) || vocabSize < 4) throw new Error(`${file}: cannot tell the vocabulary size`);

// Different prompts per stream: random ids from the vocabulary (a fixed seed; the first 3 ids, usually
// <unk> <s> </s>, left out), the same for both engines.
function prompts(n) {
  let s = 0x9e3779b9 ^ n;
  const next = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s; };
  return Array.from({ length: n }, () => Array.from({ length: promptLength }, () => 3 + (next() % (vocabSize - 3))));
}
const promptSets = new Map([...new Set([1, ...levels])].map((n) => [n, prompts(n)]));

async function benchNodeMoe(levelsToRun) {
  const model = await loadModel(file, { threads, contextSize: perSequenceContext });
  const out = {};
  try {
    const batch = (n, maxTokens) => Promise.all(promptSets.get(n).map((prompt) =>
      model.generate(prompt, { maxTokens, temperature: 0, stopAtEndOfGeneration: false }).final));
    for (const n of levelsToRun) {
      await batch(n, WARM_UP_TOKENS); // untimed: scratch buffers of this batch shape
      const t = performance.now();
      const results = await batch(n, genTokens);
      const seconds = (performance.now() - t) / 1000;
      const tokens = results.reduce((a, r) => a + r.usage.outputTokens, 0);
      out[n] = { tokens, seconds, tokensPerSecond: tokens / seconds };
    }
  } finally {
    await model.dispose();
  }
  return out;
}

let llama;
async function benchLlamaCpp(levelsToRun) {
  llama ??= await getLlama({ gpu: false, logLevel: 'error', maxThreads: threads, build: 'never' });
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  const out = {};
  try {
    for (const n of levelsToRun) {
      // contextSize is per sequence in node-llama-cpp (the context holds sequences × contextSize cells).
      const context = await model.createContext({
        sequences: n, contextSize: perSequenceContext, threads, batchSize: Math.min(512, Math.max(n * promptLength, 32)),
      });
      try {
        const sequences = Array.from({ length: n }, () => context.getSequence());
        const batch = (maxTokens) => Promise.all(sequences.map(async (seq, i) => {
          let count = 0;
          // yieldEogToken: an end-of-generation token is yielded and generation continues past it.
          for await (const _ of seq.evaluate(promptSets.get(n)[i], { temperature: 0, yieldEogToken: true })) {
            if (++count >= maxTokens) break;
          }
          return count;
        }));
        await batch(WARM_UP_TOKENS); // untimed: the context's first decodes of this batch shape
        await Promise.all(sequences.map((seq) => seq.clearHistory()));
        const t = performance.now();
        const counts = await batch(genTokens);
        const seconds = (performance.now() - t) / 1000;
        const tokens = counts.reduce((a, b) => a + b, 0);
        out[n] = { tokens, seconds, tokensPerSecond: tokens / seconds };
      } finally {
        await context.dispose();
      }
    }
  } finally {
    await model.dispose();
  }
  return out;
}

const busyBefore = await cpuBusyShare();
const started = performance.now();
// Warm-up: page cache, thread start.
await benchNodeMoe([1]);
await benchLlamaCpp([1]);
const results = { nodeMoe: [], llamaCpp: [] };
const fmt = (x) => levels.map((n) => `${n}: ${x[n].tokensPerSecond.toFixed(1)}`).join(', ');
for (let r = 0; r < runs; r++) {
  // Alternate which engine goes first.
  if (r % 2 === 0) {
    results.nodeMoe.push(await benchNodeMoe(levels));
    results.llamaCpp.push(await benchLlamaCpp(levels));
  } else {
    results.llamaCpp.push(await benchLlamaCpp(levels));
    results.nodeMoe.push(await benchNodeMoe(levels));
  }
  process.stderr.write(`run ${r + 1}/${runs} tok/s by streams: node-moe ${fmt(results.nodeMoe.at(-1))}; llama.cpp ${fmt(results.llamaCpp.at(-1))}\n`);
}

const expected = (n) => n * genTokens;
const summary = {};
for (const n of levels) {
  const ours = median(results.nodeMoe.map((x) => x[n].tokensPerSecond));
  const theirs = median(results.llamaCpp.map((x) => x[n].tokensPerSecond));
  const shortfall = [...results.nodeMoe, ...results.llamaCpp].some((x) => x[n].tokens !== expected(n));
  summary[n] = { nodeMoe: ours, llamaCpp: theirs, ratio: ours / theirs, ...(shortfall ? { tokensShort: true } : {}) };
}
const cpu = getCpuInfo();
console.log(`\nmodel: ${path.basename(file)} (${sizeGiB.toFixed(2)} GiB), threads ${threads}, ${os.cpus()[0]?.model} (${cpu.active}), ` +
  `${promptLength}-token prompts, ${genTokens} generated tokens per stream, greedy, median of ${runs}, ` +
  `CPUs busy before the start ${busyBefore === null ? 'unknown' : `${(busyBefore * 100).toFixed(0)}%`}\n`);
console.log('| concurrent streams | node-moe, tok/s | llama.cpp, tok/s | ratio (node-moe ÷ llama.cpp) |');
console.log('| ---: | ---: | ---: | ---: |');
for (const n of levels) {
  const s = summary[n];
  console.log(`| ${n} | ${s.nodeMoe.toFixed(2)} | ${s.llamaCpp.toFixed(2)} | ${s.ratio.toFixed(2)}× |`);
}
if (busyBefore !== null && busyBefore > 0.2) {
  console.log(`\nwarning: other processes kept ${(busyBefore * 100).toFixed(0)}% of the CPUs busy before the start; spinning thread ` +
    'pools (llama.cpp\'s most) slow down sharply when preempted: rerun on an idle machine.');
}
for (const n of levels) {
  if (summary[n].tokensShort) console.log(`\nnote: at ${n} streams some run generated other than ${expected(n)} tokens; tok/s counts what was generated.`);
}
console.log(JSON.stringify({
  model: path.basename(file), sizeGiB, threads, cpu: cpu.active, runs, promptTokens: promptLength, generatedTokens: genTokens,
  seconds: (performance.now() - started) / 1000, cpuBusyBefore: busyBefore, summary,
}));
