#!/usr/bin/env node
// node-moe vs llama.cpp (node-llama-cpp, CPU, gpu: false) on the same generated GGUF files, same thread count
// (physical cores), same context sizes, alternating engines run by run, each measurement in a child process of
// its own (so that its peak RSS is the engine's). Per model it prints a markdown table of medians and ratios
// (node-moe ÷ llama.cpp) against the performance issue's "must" and "target" columns, and one JSON line:
//   prefill tok/s (512-token prompt); decode tok/s (128 tokens after a 16-token prompt) and decode as a share
//   of the memory-bandwidth limit (bandwidth ÷ active weight bytes per token); decode at 8k context, and its
//   ratio to decode at a short context in the same process; aggregate tok/s of 8 concurrent streams; load time
//   (model + a context ready, mmap, warm page cache: the second load in the process); peak RSS.
// The read bandwidth is measured in the same run (bench/bandwidth.mjs: WebAssembly SIMD workers, one per thread).
// Models (bench/model.mjs, generated once into ~/.cache/node-moe-bench/): qwen3 = Qwen3-30B-A3B layer shapes
// with the Qwen3 vocabulary, 6 layers; kimi = Kimi K2 proportions on deepseek2 with the DeepSeek-V3 vocabulary.
//   node bench/run.mjs [--models qwen3,kimi --runs 3 --threads 2 --prefill 512 --decode 128 --streams 8
//                    --long-context 8192 --long-decode 32 --skip-8k --no-llama-8k --skip-streams --skip-tokenizers
//                    --layers 6 --model other.gguf --json result.json --wait-idle 60 --max-others 0.15 --retries 2
//                    --llama-threads N (llama.cpp's threads, default --threads)]
// (npm run bench runs this, then bench/concurrency.mjs and bench/structured.mjs; `npm run bench -- …` would
// hand the options to the last of them, so run this script directly to pass options.)
// --gpu: both engines on CUDA with every layer on the GPU (node-moe gpu: 'cuda'; node-llama-cpp's prebuilt
// CUDA build, gpuLayers 'max'); the bandwidth rows then still describe the CPU's memory, and the achieved HBM
// bandwidth of the MoE layer comes from the CUDA kernel benchmark (test/gpu/device-check.sh).
// --models '' --model f.gguf benchmarks only f.gguf (--model may be repeated). --no-llama-8k: 8k context with
// node-moe only. A timed run during which other processes used over --max-others of the CPUs is repeated.
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuTimes } from './machine.mjs';

const SELF = fileURLToPath(import.meta.url);

/** Physical cores (distinct physical id / core id pairs of /proc/cpuinfo), else the logical CPUs. */
function physicalCores() {
  try {
    const pairs = new Set();
    let phys = '0';
    for (const line of readFileSync('/proc/cpuinfo', 'utf8').split('\n')) {
      const [k, v] = line.split(':').map((s) => s?.trim());
      if (k === 'physical id') phys = v;
      if (k === 'core id') pairs.add(`${phys}/${v}`);
    }
    if (pairs.size > 0) return pairs.size;
  } catch { /* not Linux */ }
  return os.availableParallelism();
}

const { values: args } = parseArgs({
  options: {
    models: { type: 'string', default: 'qwen3,kimi' },
    model: { type: 'string', multiple: true },
    layers: { type: 'string', default: '6' },
    runs: { type: 'string', default: '3' },
    threads: { type: 'string', default: String(physicalCores()) },
    'llama-threads': { type: 'string' },
    prefill: { type: 'string', default: '512' },
    decode: { type: 'string', default: '128' },
    streams: { type: 'string', default: '8' },
    'stream-prompt': { type: 'string', default: '32' },
    'stream-tokens': { type: 'string', default: '32' },
    'long-context': { type: 'string', default: '8192' },
    'long-decode': { type: 'string', default: '32' },
    'skip-8k': { type: 'boolean', default: false },
    'no-llama-8k': { type: 'boolean', default: false },
    'skip-streams': { type: 'boolean', default: false },
    'skip-tokenizers': { type: 'boolean', default: false },
    'bandwidth-gib': { type: 'string', default: '1' },
    'wait-idle': { type: 'string', default: '60' },
    'max-others': { type: 'string', default: '0.15' },
    retries: { type: 'string', default: '2' },
    json: { type: 'string' },
    gpu: { type: 'boolean', default: false },
    child: { type: 'string' },
  },
});

const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const CLK_TCK = 100; // USER_HZ of /proc/stat on Linux
const loadavg = () => { try { return readFileSync('/proc/loadavg', 'utf8').trim().split(/\s+/).slice(0, 3).map(Number); } catch { return null; } };

/**
 * A point to measure from: the machine's CPU time, this process's (all its threads), the clock. othersSince(p):
 * the share of all CPUs that other processes used since p (machine busy time minus ours, over wall time × CPUs);
 * null for spans under half a second.
 */
const cpuPoint = () => ({ times: cpuTimes(), own: process.cpuUsage(), t: performance.now() });
function othersSince(p) {
  const q = cpuPoint();
  // Under half a second, /proc/stat's 10 ms ticks say little.
  if (!p.times || !q.times || q.t - p.t < 500) return null;
  const busy = (q.times.busy - p.times.busy) / CLK_TCK;
  const own = (q.own.user - p.own.user + q.own.system - p.own.system) / 1e6;
  return Math.min(1, Math.max(0, (busy - own) / (((q.t - p.t) / 1000) * os.availableParallelism())));
}

// ---------------------------------------------------------------------------------------------------------
// Child process: one engine, one job, one JSON line on stdout.

function procStatus() {
  try {
    const out = {};
    for (const line of readFileSync('/proc/self/status', 'utf8').split('\n')) {
      const m = /^(VmHWM|VmRSS|RssAnon|RssFile|RssShmem):\s+(\d+) kB/.exec(line);
      if (m) out[m[1]] = Number(m[2]) * 1024;
    }
    return out;
  } catch { return {}; }
}
/** Peak resident set of this process so far, bytes (VmHWM; getrusage's maxRSS elsewhere). */
const peakRss = () => procStatus().VmHWM ?? process.resourceUsage().maxRSS * 1024;

const argmax = (logits) => {
  let best = 0;
  for (let j = 1; j < logits.length; j++) if (logits[j] > logits[best]) best = j;
  return best;
};

/** The engines behind one interface: load(), then sequences that prefill, decode greedily and truncate. */
async function openEngine(spec) {
  const { threads, file } = spec;
  if (spec.engine === 'node-moe') {
    const { loadModel } = await import('../dist/index.js');
    return {
      async load(contextSize) {
        // No prefix cache: repeated prompts must be evaluated again, as llama.cpp's cleared sequences are.
        // --gpu: every layer and expert on the GPU; a machine without one fails here, with the reason.
        const model = await loadModel(file, { threads, contextSize, prefixCacheSize: 0, gpu: spec.gpu ? 'cuda' : false });
        return {
          sequence(size) {
            const seq = model.createSequence({ contextSize: size });
            let last = 3;
            return {
              async prefill(tokens) { last = argmax(await seq.evaluate(tokens)); },
              async decode(n) {
                for (let i = 0; i < n; i++) last = argmax(await seq.evaluate([last]));
                return n;
              },
              truncate(n) { seq.truncate(n); },
              get length() { return seq.length; },
              dispose: () => seq.dispose(),
            };
          },
          async streams(prompts, maxTokens) {
            const results = await Promise.all(prompts.map((p) =>
              model.generate(p, { maxTokens, temperature: 0, stopAtEndOfGeneration: false }).final));
            return results.reduce((a, r) => a + r.usage.outputTokens, 0);
          },
          dispose: () => model.dispose(),
        };
      },
    };
  }
  const { getLlama } = await import('node-llama-cpp');
  // --gpu: node-llama-cpp's prebuilt CUDA build (@node-llama-cpp/linux-x64-cuda), every layer offloaded.
  const llama = await getLlama({ gpu: spec.gpu ? 'cuda' : false, logLevel: 'error', maxThreads: threads, build: 'never' });
  return {
    async load(contextSize) {
      const model = await llama.loadModel({ modelPath: file, gpuLayers: spec.gpu ? 'max' : 0 });
      const contexts = new Set();
      let streamContext;
      const context = async (options) => {
        const c = await model.createContext({ threads, ...options });
        contexts.add(c);
        return c;
      };
      return {
        // A context per sequence: sequences sharing a context share its KV cells, and each decode would
        // attend over the longest one's cells.
        async sequence(size) {
          const ctx = await context({ contextSize: size, batchSize: Math.min(512, size) });
          const seq = ctx.getSequence();
          let last = 3;
          return {
            // No logits for the prompt (node-moe computes the last token's: one row of the output head).
            async prefill(tokens) { await seq.evaluateWithoutGeneratingNewTokens(tokens); },
            async decode(n) {
              // Each step evaluates the previous token and samples the next (greedy, in llama.cpp).
              let count = 0;
              for await (const t of seq.evaluate([last], { temperature: 0, yieldEogToken: true })) {
                last = t;
                if (++count >= n) break;
              }
              return count;
            },
            async truncate(n) {
              if (seq.nextTokenIndex > n) await seq.eraseContextTokenRanges([{ start: n, end: seq.nextTokenIndex }]);
            },
            get length() { return seq.nextTokenIndex; },
            async dispose() { contexts.delete(ctx); await ctx.dispose(); },
          };
        },
        // concurrency.mjs's way: one context with N sequences, their decodes batched by node-llama-cpp; made by
        // the first (untimed) call and reused, its sequences cleared, by the next.
        async streams(prompts, maxTokens, contextSize) {
          const n = prompts.length;
          if (streamContext?.n !== n) {
            for (const c of contexts) await c.dispose();
            contexts.clear();
            const ctx = await context({
              sequences: n, contextSize,
              batchSize: Math.min(512, Math.max(n * prompts[0].length, 32)),
            });
            streamContext = { n, seqs: Array.from({ length: n }, () => ctx.getSequence()) };
          }
          const { seqs } = streamContext;
          const counts = await Promise.all(seqs.map(async (seq, i) => {
            let count = 0;
            for await (const _ of seq.evaluate(prompts[i], { temperature: 0, yieldEogToken: true })) if (++count >= maxTokens) break;
            await seq.clearHistory();
            return count;
          }));
          return counts.reduce((a, b) => a + b, 0);
        },
        async dispose() {
          for (const c of contexts) await c.dispose();
          await model.dispose();
        },
      };
    },
  };
}

const seconds = (t) => (performance.now() - t) / 1000;

async function runChild(spec) {
  const engine = await openEngine(spec);
  const out = { engine: spec.engine, job: spec.job, others: {} };
  const { promptTokens, longTokens, streamPrompts } = spec;
  /** Times fn; out.others[name]: the share of the CPUs other processes used meanwhile. */
  const timed = async (name, fn) => {
    const p = cpuPoint();
    const value = await fn();
    const s = (performance.now() - p.t) / 1000;
    out.others[name] = othersSince(p);
    return { value, s };
  };
  if (spec.job === 'warmup') {
    const m = await engine.load(256);
    const seq = await m.sequence(256);
    await seq.prefill(promptTokens.slice(0, 64));
    await seq.decode(4);
    await seq.dispose();
    await m.dispose();
  } else if (spec.job === 'base') {
    const ctx = spec.prefill + spec.decode + 32;
    // Load twice: the first maps the file (and starts the engine's threads), the second is timed.
    const t = performance.now();
    let m = await engine.load(ctx);
    let seq = await m.sequence(ctx);
    out.firstLoadS = seconds(t);
    await seq.dispose();
    await m.dispose();
    out.loadS = (await timed('load', async () => { m = await engine.load(ctx); seq = await m.sequence(ctx); })).s;
    // Untimed prefill first: the mapping's page faults and the scratch buffers of a 512-row pass.
    await seq.prefill(promptTokens);
    await seq.truncate(0);
    out.prefillTokPerS = promptTokens.length / (await timed('prefill', () => seq.prefill(promptTokens))).s;
    await seq.truncate(0);
    await seq.prefill(promptTokens.slice(0, 16));
    await seq.decode(2); // untimed: the first single-row passes
    await seq.truncate(16);
    const d = await timed('decode', () => seq.decode(spec.decode));
    out.decodeTokPerS = d.value / d.s;
    out.decodeTokens = d.value;
    Object.assign(out, { peakRssBytes: peakRss(), status: procStatus() });
    await seq.dispose();
    if (spec.streams > 0) {
      // Cells per stream: prompt + generated tokens + slack (llama.cpp; node-moe's sequences have the load's size).
      const cells = streamPrompts[0].length + spec.streamTokens + 16;
      await m.streams(streamPrompts.map((p) => p.map((x) => x + 1)), 4, cells); // untimed, other prompts
      const r = await timed('streams', () => m.streams(streamPrompts, spec.streamTokens, cells));
      out.streamsTokPerS = r.value / r.s;
      out.streamsTokens = r.value;
    }
    await m.dispose();
  } else if (spec.job === 'long') {
    // Decode at a short and at a long context in the same process, in pairs, after one fill. A pair during
    // which other processes used more than maxOthers of the CPUs is measured again (up to 3 times).
    const m = await engine.load(spec.longContext);
    const short = await m.sequence(spec.prefill + spec.longDecode + 32);
    const long = await m.sequence(spec.longContext);
    await short.prefill(promptTokens.slice(0, 16));
    await short.decode(2);
    out.fillTokens = longTokens.length;
    out.fillTokPerS = longTokens.length / (await timed('fill', () => long.prefill(longTokens))).s;
    await long.decode(2);
    out.shortTokPerS = [];
    out.longTokPerS = [];
    out.repeatedPairs = 0;
    for (let r = 0; r < spec.longRuns; r++) {
      for (let attempt = 0; ; attempt++) {
        const pair = [];
        const p = cpuPoint(); // over the pair: a short decode alone can be too brief to judge
        for (const [seq, start, name] of [[short, 16, `short${r}`], [long, longTokens.length, `long${r}`]]) {
          await seq.truncate(start);
          const x = await timed(name, () => seq.decode(spec.longDecode));
          pair.push(x.value / x.s);
        }
        const worst = othersSince(p) ?? 0;
        out.others[`pair${r}`] = worst;
        if (worst <= spec.maxOthers || attempt >= 3) {
          out.shortTokPerS.push(pair[0]);
          out.longTokPerS.push(pair[1]);
          if (worst > spec.maxOthers) out.contendedPairs = (out.contendedPairs ?? 0) + 1;
          break;
        }
        out.repeatedPairs++;
        await new Promise((resolve) => setTimeout(resolve, 2000));
      }
    }
    out.peakRssBytes = peakRss();
    await short.dispose();
    await long.dispose();
    await m.dispose();
  }
  const u = process.resourceUsage();
  out.cpuSeconds = (u.userCPUTime + u.systemCPUTime) / 1e6;
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

if (args.child) {
  await runChild(JSON.parse(readFileSync(args.child, 'utf8')));
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------------------
// Parent: models, bandwidth, the alternating runs, the tables.

const { getCpuInfo, readGgufInfo } = await import('../dist/index.js');
const { BENCH_MODELS, activeWeightBytes, ensureBenchModel } = await import('./model.mjs');
const { probeBandwidth } = await import('./bandwidth.mjs');

const int = (name) => {
  const v = Number(args[name]);
  if (!Number.isInteger(v) || v < 0) throw new RangeError(`--${name} must be a non-negative integer, got ${args[name]}`);
  return v;
};
const threads = int('threads');
// llama.cpp's thread count (default: the same); the issue's comparison uses the same for both.
const llamaThreads = args['llama-threads'] === undefined ? threads : int('llama-threads');
const runs = int('runs');
const prefill = int('prefill');
const decode = int('decode');
const streams = args['skip-streams'] ? 0 : int('streams');
const streamPrompt = int('stream-prompt');
const streamTokens = int('stream-tokens');
const longContext = int('long-context');
const longDecode = int('long-decode');
const layers = int('layers');
const doLong = !args['skip-8k'] && longContext > 0;
const llamaLong = doLong && !args['no-llama-8k'];
if (threads < 1 || runs < 1 || prefill < 16 || decode < 1 || longDecode < 1) {
  throw new RangeError('--threads, --runs, --decode, --long-decode must be >= 1 and --prefill >= 16');
}

// The issue's bars (ratios node-moe ÷ llama.cpp; 8k ÷ short is node-moe's own).
const BARS = {
  prefill: { must: 2, target: 3, higher: true },
  decode: { must: 1.2, target: 1.4, higher: true },
  bandwidth: { target: 0.8, higher: true },
  long: { must: 0.75, target: 0.85, higher: true },
  streams: { must: 1.5, target: 2, higher: true },
  rss: { must: 1.05, target: 1.0, higher: false },
  load: { must: 1.0, target: 0.5, higher: false },
};

/** Share of all CPUs busy over the next second (this process idles meanwhile); null elsewhere than Linux. */
async function busyShare() {
  const a = cpuTimes();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const b = cpuTimes();
  return a && b && b.total > a.total ? (b.busy - a.busy) / (b.total - a.total) : null;
}
const waitIdleS = Number(args['wait-idle']);
let waitedS = 0;
/** Before a timed child: waits (up to --wait-idle seconds) while other processes keep over 15% of the CPUs busy. */
async function waitForIdle() {
  const t = performance.now();
  let busy = await busyShare();
  while (busy !== null && busy > 0.15 && seconds(t) < waitIdleS) busy = await busyShare();
  const waited = seconds(t) - 1;
  if (waited > 1) process.stderr.write(`  (waited ${waited.toFixed(0)} s for other processes' load to drop; now ${((busy ?? 0) * 100).toFixed(0)}% busy)\n`);
  waitedS += waited;
  return busy;
}

const specFile = path.join(os.tmpdir(), `node-moe-bench-${process.pid}.json`);
/**
 * Runs one child job (a timed one after waitForIdle); adds `othersShare`: the share of all CPUs that other
 * processes used while it ran (the machine's busy time minus the child's own CPU time, over wall time × CPUs).
 */
async function child(spec) {
  if (spec.job !== 'warmup') spec = { ...spec, busyBefore: await waitForIdle() };
  writeFileSync(specFile, JSON.stringify({ threads: spec.engine === 'llama.cpp' ? llamaThreads : threads, maxOthers, gpu: args.gpu, ...spec }));
  const before = cpuTimes();
  const t = performance.now();
  const r = spawnSync(process.execPath, [SELF, '--child', specFile], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 900_000, maxBuffer: 1 << 24,
  });
  if (r.stderr) process.stderr.write(r.stderr.replace(/^/gm, '    | '));
  const wall = seconds(t);
  const after = cpuTimes();
  const line = r.stdout?.trim().split('\n').at(-1);
  if (r.status !== 0 || !line?.startsWith('{')) {
    const why = (r.stderr ?? '').split('\n').find((l) => /^[A-Za-z]*Error( \[\w+\])?: /.test(l)) ?? r.stderr?.trim().split('\n').at(-1) ?? '';
    throw new Error(`${spec.engine} ${spec.job} on ${path.basename(spec.file)} failed (status ${r.status}${r.signal ? `, ${r.signal}` : ''}): ${why.trim()}`);
  }
  const out = JSON.parse(line);
  out.wallS = wall;
  out.busyBefore = spec.busyBefore;
  if (before && after && after.total > before.total) {
    const busyS = (after.busy - before.busy) / CLK_TCK;
    out.othersShare = Math.min(1, Math.max(0, (busyS - out.cpuSeconds) / (wall * os.availableParallelism())));
  }
  return out;
}

const maxOthers = Number(args['max-others']);
const retries = Number(args.retries);
let repeated = 0;
/**
 * A timed child; repeated (up to --retries times, after waiting for the load to drop) when other processes
 * used more than --max-others of the CPUs while it ran: on 2 cores that slows llama.cpp's spinning threads
 * several-fold and makes a ratio meaningless. The last attempt counts either way (flagged `contended`).
 */
async function timedChild(spec) {
  for (let attempt = 1; ; attempt++) {
    const x = await child(spec);
    x.attempts = attempt;
    if (x.contendedPairs) x.contended = true;
    // The worst timed segment decides (a burst of load can hide in a whole run's average).
    // (A long job repeats its own pairs; its fill rate is not a bar.)
    const othersMax = spec.job === 'long' ? 0 : Math.max(0, ...Object.values(x.others ?? {}).map((v) => v ?? 0));
    x.othersMax = othersMax;
    if (!(othersMax > maxOthers)) return x;
    if (attempt > retries) { x.contended = true; return x; }
    repeated++;
    process.stderr.write(`  (${spec.engine} ${spec.job}: other processes used up to ${(othersMax * 100).toFixed(0)}% of the CPUs during a timed part, ` +
      `${x.wallS.toFixed(0)} s: repeating it)\n`);
  }
}

/** Reads the file once through (it will then be in the page cache, if it fits). */
function readThrough(file) {
  const fd = openSync(file, 'r');
  const buf = Buffer.allocUnsafe(16 << 20);
  try { while (readSync(fd, buf, 0, buf.length, null) > 0); } finally { closeSync(fd); }
}

/** Prompts with ids in [3, limit): limit keeps them ordinary tokens of any vocabulary used here. */
function tokens(n, seed, limit) {
  let s = (0x9e3779b9 ^ seed) >>> 0 || 1;
  return Array.from({ length: n }, () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return 3 + (s % (limit - 3)); });
}

const fmtRate = (x) => (!Number.isFinite(x) ? '—' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const fmtFixed = (x) => (Number.isFinite(x) ? x.toFixed(2) : '—');
const fmtPercent = (x) => (Number.isFinite(x) ? `${(x * 100).toFixed(0)}%` : '—');
const fmtSeconds = (x) => (!Number.isFinite(x) ? '—' : x < 0.1 ? x.toFixed(3) : x.toFixed(2));
const fmtRatio = (x) => (Number.isFinite(x) ? `${x.toFixed(2)}×` : '—');
function bar(value, b, kind, unit = '×') {
  if (b?.[kind] === undefined) return '—';
  const limit = b[kind];
  const ok = b.higher ? value >= limit : value <= limit;
  const shown = unit === '%' ? `${(limit * 100).toFixed(0)}%` : `${limit}${unit}`;
  return `${b.higher ? '≥' : '≤'} ${shown} ${Number.isFinite(value) ? (ok ? '✓' : '✗') : ''}`.trim();
}

const started = performance.now();
const cpu = getCpuInfo();
const cpuName = os.cpus()[0]?.model ?? 'unknown CPU';
const load0 = loadavg();
process.stderr.write(`node-moe bench: ${cpuName}, ${os.availableParallelism()} CPUs, ${threads} threads, kernels ${cpu.active}, ` +
  `load average ${load0?.join(' ') ?? 'unknown'}\n`);

const bandwidth = [probeBandwidth({ gib: Number(args['bandwidth-gib']), threads, passes: 5 })];
process.stderr.write(`read bandwidth: ${(bandwidth[0].bytesPerSecond / 1e9).toFixed(1)} GB/s (${threads} threads, ${bandwidth[0].method})\n`);

const selected = [];
for (const name of args.models.split(',').map((s) => s.trim()).filter(Boolean)) {
  if (!(name in BENCH_MODELS)) throw new RangeError(`--models: unknown model '${name}' (have ${Object.keys(BENCH_MODELS).join(', ')})`);
  selected.push({ name, title: BENCH_MODELS[name].title, file: await ensureBenchModel(name, { layers }) });
}
for (const file of args.model ?? []) selected.push({ name: path.basename(file, '.gguf'), title: '--model', file: path.resolve(file) });

// A child that fails (an engine refusing a model, a crash) leaves its cells empty ('—'); the others go on.
const failures = [];
async function attempt(fn, what) {
  try {
    return await fn();
  } catch (error) {
    failures.push({ what, error: String(error?.message ?? error).slice(0, 2000) });
    process.stderr.write(`  ${what} failed: ${String(error?.message ?? error).slice(0, 500)}\n`);
    return undefined;
  }
}

const results = [];
for (const m of selected) {
  const info = await readGgufInfo(m.file);
  const arch = info.metadata['general.architecture'];
  const vocab = Math.min(...[Number(info.tensors.find((t) => t.name === 'token_embd.weight')?.shape[1]),
    info.metadata['tokenizer.ggml.tokens']?.length].filter((v) => v > 0));
  const limit = Math.min(vocab, 100_000);
  const trained = Number(info.metadata[`${arch}.context_length`] ?? Infinity);
  const { active, total } = activeWeightBytes(info);
  const base = {
    file: m.file, prefill, decode, streams, streamTokens,
    promptTokens: Array.from({ length: prefill }, (_, i) => 3 + ((i * 7919) % (Math.min(limit, 2048) - 3))),
    streamPrompts: Array.from({ length: streams }, (_, i) => tokens(streamPrompt, 1000 + i, limit)),
  };
  process.stderr.write(`\n${m.title}: ${path.basename(m.file)} (${(total / 2 ** 30).toFixed(2)} GiB, ` +
    `${(active / 2 ** 20).toFixed(0)} MiB of weights read per token)\n`);
  readThrough(m.file);
  bandwidth.push(probeBandwidth({ gib: Number(args['bandwidth-gib']), threads, passes: 5 }));
  for (const engine of ['node-moe', 'llama.cpp']) await attempt(() => child({ ...base, engine, job: 'warmup' }), `${m.name}: ${engine} warm-up`);
  const per = { 'node-moe': [], 'llama.cpp': [] };
  for (let r = 0; r < runs; r++) {
    for (const engine of r % 2 === 0 ? ['node-moe', 'llama.cpp'] : ['llama.cpp', 'node-moe']) {
      const x = await attempt(() => timedChild({ ...base, engine, job: 'base' }), `${m.name}: ${engine} run ${r + 1}`);
      if (!x) continue;
      per[engine].push(x);
      process.stderr.write(`  run ${r + 1}/${runs} ${engine.padEnd(9)}: load ${x.loadS.toFixed(2)} s, prefill ${fmtRate(x.prefillTokPerS)} tok/s, ` +
        `decode ${fmtRate(x.decodeTokPerS)} tok/s${streams ? `, ${streams} streams ${fmtRate(x.streamsTokPerS)} tok/s` : ''}, ` +
        `peak RSS ${(x.peakRssBytes / 2 ** 30).toFixed(2)} GiB, others' CPU ${((x.othersShare ?? NaN) * 100).toFixed(0)}% ` +
        `(timed parts: at most ${((x.othersMax ?? NaN) * 100).toFixed(0)}%), ${x.wallS.toFixed(0)} s\n`);
    }
  }
  const long = {};
  // Tokens in the long prompt: the context size less room for the decoded tokens.
  const fill = Math.min(longContext, trained) - longDecode - 16;
  if (doLong) {
    for (const engine of llamaLong ? ['node-moe', 'llama.cpp'] : ['node-moe']) {
      const x = await attempt(() => timedChild({
        ...base, engine, job: 'long', longContext: fill + longDecode + 16, longDecode, longRuns: runs, longTokens: tokens(fill, 7, limit),
      }), `${m.name}: ${engine} long context`);
      if (!x) continue;
      long[engine] = x;
      process.stderr.write(`  ${engine.padEnd(9)} at ${fill} tokens: fill ${fmtRate(x.fillTokPerS)} tok/s, decode ${x.longTokPerS.map(fmtRate).join(', ')} tok/s ` +
        `(short context: ${x.shortTokPerS.map(fmtRate).join(', ')}), others' CPU ${((x.othersShare ?? NaN) * 100).toFixed(0)}%` +
        `${x.repeatedPairs ? `, ${x.repeatedPairs} pair(s) measured again under load` : ''}, ${x.wallS.toFixed(0)} s\n`);
    }
  }

  const med = (engine, key) => median(per[engine].map((x) => x[key]));
  const pair = (key, scale = 1) => {
    const a = med('node-moe', key) * scale;
    const b = med('llama.cpp', key) * scale;
    return { nodeMoe: a, llamaCpp: b, ratio: a / b };
  };
  const summary = {
    prefill: pair('prefillTokPerS'),
    decode: pair('decodeTokPerS'),
    load: pair('loadS'),
    peakRss: pair('peakRssBytes', 1 / 2 ** 30),
  };
  if (streams) summary.streams = pair('streamsTokPerS');
  if (doLong) {
    const l = (engine, key) => (long[engine] ? median(long[engine][key]) : NaN);
    summary.long = { nodeMoe: l('node-moe', 'longTokPerS'), llamaCpp: l('llama.cpp', 'longTokPerS') };
    summary.long.ratio = summary.long.nodeMoe / summary.long.llamaCpp;
    // The median of each pair's ratio (a pair: short, then long, back to back).
    const pairs = (engine) => (long[engine] ? median(long[engine].longTokPerS.map((x, i) => x / long[engine].shortTokPerS[i])) : NaN);
    summary.longVsShort = { nodeMoe: pairs('node-moe'), llamaCpp: pairs('llama.cpp') };
    summary.fill = { nodeMoe: long['node-moe']?.fillTokPerS ?? NaN, llamaCpp: long['llama.cpp']?.fillTokPerS ?? NaN, tokens: fill };
  }
  const timed = [...per['node-moe'], ...per['llama.cpp'], ...Object.values(long)];
  const others = timed.map((x) => x.othersShare).filter((x) => x !== undefined);
  results.push({
    name: m.name, title: m.title, model: path.basename(m.file), architecture: arch, sizeGiB: total / 2 ** 30,
    activeBytesPerToken: active, vocab, summary,
    othersCpuShare: { median: median(others), max: others.length ? Math.max(...others) : null, contended: timed.filter((x) => x.contended).length },
    raw: { ...per, long },
  });
}

bandwidth.push(probeBandwidth({ gib: Number(args['bandwidth-gib']), threads, passes: 5 }));
const bw = Math.max(...bandwidth.map((b) => b.bytesPerSecond));
const load1 = loadavg();

console.log(`\n## node-moe vs llama.cpp (CPU)\n\n${cpuName}, ${os.availableParallelism()} CPUs, ${threads} threads (physical cores)` +
  `${llamaThreads !== threads ? ` (llama.cpp: ${llamaThreads})` : ''}, ` +
  `kernels ${cpu.active}; read bandwidth ${(bw / 1e9).toFixed(1)} GB/s (best of ${bandwidth.map((b) => (b.bytesPerSecond / 1e9).toFixed(1)).join(' / ')} ` +
  `GB/s: at the start, before each model, at the end; ${threads} threads, ${bandwidth[0].method}); median of ${runs} alternating runs in child processes after a warm-up; ` +
  `load average ${load0?.join(' ') ?? '?'} at the start, ${load1?.join(' ') ?? '?'} at the end` +
  `${waitedS > 1 ? `; waited ${waitedS.toFixed(0)} s in all for other processes' load to drop` : ''}` +
  `${repeated ? `; ${repeated} run(s) repeated because other processes used over ${(maxOthers * 100).toFixed(0)}% of the CPUs during them` : ''}; ` +
  `${((performance.now() - started) / 60000).toFixed(1)} min.`);
for (const r of results) {
  const s = r.summary;
  r.idealDecodeTokPerS = bw / r.activeBytesPerToken;
  s.bandwidthShare = { nodeMoe: s.decode.nodeMoe / r.idealDecodeTokPerS, llamaCpp: s.decode.llamaCpp / r.idealDecodeTokPerS };
  const rows = [
    [`prefill, ${prefill}-token prompt, tok/s`, fmtRate(s.prefill.nodeMoe), fmtRate(s.prefill.llamaCpp), fmtRatio(s.prefill.ratio), bar(s.prefill.ratio, BARS.prefill, 'must'), bar(s.prefill.ratio, BARS.prefill, 'target')],
    [`decode, ${decode} tokens, tok/s`, fmtRate(s.decode.nodeMoe), fmtRate(s.decode.llamaCpp), fmtRatio(s.decode.ratio), bar(s.decode.ratio, BARS.decode, 'must'), bar(s.decode.ratio, BARS.decode, 'target')],
    [`decode ÷ bandwidth limit (${(bw / 1e9).toFixed(1)} GB/s ÷ ${(r.activeBytesPerToken / 2 ** 20).toFixed(0)} MiB/token = ${fmtRate(r.idealDecodeTokPerS)} tok/s)`,
      fmtPercent(s.bandwidthShare.nodeMoe), fmtPercent(s.bandwidthShare.llamaCpp), '—', '—', bar(s.bandwidthShare.nodeMoe, BARS.bandwidth, 'target', '%')],
  ];
  if (s.long) {
    rows.push([`decode at ${s.fill.tokens} tokens of context, tok/s`, fmtRate(s.long.nodeMoe), fmtRate(s.long.llamaCpp), fmtRatio(s.long.ratio), '—', '—']);
    rows.push([`decode at ${s.fill.tokens} ÷ at 16 tokens of context (same process, ${longDecode} tokens)`, fmtFixed(s.longVsShort.nodeMoe), fmtFixed(s.longVsShort.llamaCpp),
      '—', bar(s.longVsShort.nodeMoe, BARS.long, 'must', ''), bar(s.longVsShort.nodeMoe, BARS.long, 'target', '')]);
  }
  if (s.streams) {
    rows.push([`aggregate, ${streams} concurrent streams (${streamPrompt}-token prompts, ${streamTokens} tokens each), tok/s`, fmtRate(s.streams.nodeMoe), fmtRate(s.streams.llamaCpp),
      fmtRatio(s.streams.ratio), bar(s.streams.ratio, BARS.streams, 'must'), bar(s.streams.ratio, BARS.streams, 'target')]);
  }
  rows.push(['load (mmap, warm page cache; model + a context), s', fmtSeconds(s.load.nodeMoe), fmtSeconds(s.load.llamaCpp), fmtRatio(s.load.ratio), bar(s.load.ratio, BARS.load, 'must'), bar(s.load.ratio, BARS.load, 'target')]);
  rows.push([`peak RSS (load, prefill, decode), GiB`, fmtFixed(s.peakRss.nodeMoe), fmtFixed(s.peakRss.llamaCpp), fmtRatio(s.peakRss.ratio), bar(s.peakRss.ratio, BARS.rss, 'must'), bar(s.peakRss.ratio, BARS.rss, 'target')]);
  console.log(`\n### ${r.title}: ${r.model} (${r.sizeGiB.toFixed(2)} GiB, vocabulary ${r.vocab.toLocaleString('en-US')})\n`);
  console.log('| metric | node-moe | llama.cpp | ratio | must | target |');
  console.log('| --- | ---: | ---: | ---: | :---: | :---: |');
  for (const row of rows) console.log(`| ${row.join(' | ')} |`);
  const o = r.othersCpuShare;
  if (o.max !== null) {
    console.log(`\nOther processes used ${(o.median * 100).toFixed(0)}% of the CPUs during the timed runs (median; at most ${(o.max * 100).toFixed(0)}%)` +
      `${o.contended ? `; ${o.contended} run(s) stayed above ${(maxOthers * 100).toFixed(0)}% after ${retries} repeats: the machine was not idle, ` +
        'those numbers are low (llama.cpp\'s spinning threads suffer most); rerun on an idle machine' : ''}.`);
  }
}
if (failures.length) {
  console.log(`\n${failures.length} measurement(s) failed (their cells show —):`);
  for (const f of failures) console.log(`- ${f.what}: ${f.error.split('\n')[0]}`);
  process.exitCode = 1;
}
try { unlinkSync(specFile); } catch { /* none written */ }
const summaryJson = {
  bench: 'run', cpu: cpuName, cpus: os.availableParallelism(), kernels: cpu.active, threads, llamaThreads, runs, prefill, decode, streams,
  streamPrompt, streamTokens, longContext: doLong ? longContext : 0, bandwidthBytesPerSecond: bw, bandwidth,
  loadavg: { start: load0, end: load1 }, waitedForIdleS: waitedS, repeatedRuns: repeated, failures, seconds: (performance.now() - started) / 1000,
  models: results.map(({ raw, ...r }) => r),
};
console.log(JSON.stringify(summaryJson));
if (args.json) writeFileSync(args.json, JSON.stringify({ ...summaryJson, models: results }, null, 2));

// Tokenizer throughput against the reference tokenizers (issue: tokenizing 1 MB well under 1 s).
if (!args['skip-tokenizers']) {
  console.log('\n## Tokenizers');
  const tokenizerBench = spawnSync(process.execPath, [new URL('./tokenizer.mjs', import.meta.url).pathname, '--mb', '1'], { stdio: 'inherit' });
  if (tokenizerBench.status !== 0) process.exitCode = 1;
}
