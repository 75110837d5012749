#!/usr/bin/env node
// The machine's read bandwidth, measured in plain JavaScript (no native code): one worker thread per core
// sums its own disjoint slice of one large SharedArrayBuffer (far larger than the last-level cache), all
// slices at once; bandwidth = bytes read ÷ wall time of the slowest worker; the best of several passes.
// A decode step of an MoE model streams its active weights from memory once, so this bounds decode:
// ideal tok/s = bandwidth ÷ active weight bytes per token (bench/run.mjs prints decode as a fraction of it).
//   node bench/bandwidth.mjs [--gib 1 --threads 2 --passes 5]   (prints a JSON line)
// As a module: measureBandwidth(options) runs the probe in this process; probeBandwidth(options) in a
// child process, so the buffer is gone when it returns.
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

// The summing loop, in WebAssembly SIMD (V8 compiles it to 128-bit loads; a plain JS loop over a typed
// array reaches about half the bandwidth a native loop does on this class of machine). The module,
// assembled here byte by byte: (import "env" "mem" (memory 1 65536 shared)) and
//   (func (export "sum") (param $start i32) (param $end i32) (result i64)  ;; [start, end) in bytes, 64-aligned
//     four i64x2 accumulators over v128.load at offsets 0/16/32/48, $i += 64; returns the lanes' total)
function wasmSumModule() {
  const uleb = (n) => { const out = []; do { let b = n & 0x7f; n >>>= 7; if (n) b |= 0x80; out.push(b); } while (n); return out; };
  const section = (id, body) => [id, ...uleb(body.length), ...body];
  const str = (s) => [s.length, ...Buffer.from(s)];
  const I64X2_ADD = [0xfd, 0xce, 0x01];
  const load = (acc, offset) => [0x20, acc, 0x20, 6, 0xfd, 0x00, 0x04, offset, ...I64X2_ADD, 0x21, acc];
  const body = [
    0x02, 0x04, 0x7b, 0x01, 0x7f, // locals: 4 × v128 (2..5), 1 × i32 (6)
    0x20, 0x00, 0x21, 0x06, // $i = $start
    0x02, 0x40, 0x03, 0x40, // block, loop
    0x20, 0x06, 0x20, 0x01, 0x4f, 0x0d, 0x01, // br_if exit ($i >= $end)
    ...load(2, 0), ...load(3, 16), ...load(4, 32), ...load(5, 48),
    0x20, 0x06, 0x41, 0xc0, 0x00, 0x6a, 0x21, 0x06, // $i += 64
    0x0c, 0x00, 0x0b, 0x0b, // br loop; end loop; end block
    0x20, 0x02, 0x20, 0x03, ...I64X2_ADD, 0x20, 0x04, ...I64X2_ADD, 0x20, 0x05, ...I64X2_ADD,
    0x22, 0x02, 0xfd, 0x1d, 0x00, 0x20, 0x02, 0xfd, 0x1d, 0x01, 0x7c, // lane 0 + lane 1
    0x0b,
  ];
  return new WebAssembly.Module(Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 2, 0x7f, 0x7f, 1, 0x7e]),
    ...section(2, [1, ...str('env'), ...str('mem'), 0x02, 0x03, ...uleb(1), ...uleb(65536)]),
    ...section(3, [1, 0]),
    ...section(7, [1, ...str('sum'), 0x00, 0]),
    ...section(10, [1, ...uleb(body.length), ...body]),
  ]));
}

// The same in plain JavaScript (where WebAssembly SIMD is missing): eight independent accumulators, so
// the loop is bound by loads, not by the latency of one add chain.
function sumRangeJs(a, start, end) {
  let s0 = 0n, s1 = 0n, s2 = 0n, s3 = 0n;
  let x0 = 0, x1 = 0, x2 = 0, x3 = 0, x4 = 0, x5 = 0, x6 = 0, x7 = 0;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    x0 += a[i]; x1 += a[i + 1]; x2 += a[i + 2]; x3 += a[i + 3];
    x4 += a[i + 4]; x5 += a[i + 5]; x6 += a[i + 6]; x7 += a[i + 7];
  }
  for (; i < end; i++) x0 += a[i];
  s0 = BigInt(x0 + x1); s1 = BigInt(x2 + x3); s2 = BigInt(x4 + x5); s3 = BigInt(x6 + x7);
  return s0 + s1 + s2 + s3;
}

if (!isMainThread && workerData?.bandwidthProbe) {
  // A worker: on each 'go', sums its slice [start, end) (bytes) and answers with the sum (so the loop
  // cannot be dropped) and its own time.
  const { memory, module, start, end } = workerData;
  let sum;
  if (module) {
    const { exports } = new WebAssembly.Instance(module, { env: { mem: memory } });
    sum = () => exports.sum(start, end);
  } else {
    const a = new Float64Array(memory.buffer);
    sum = () => sumRangeJs(a, start / 8, end / 8);
  }
  parentPort.on('message', (m) => {
    if (m === 'stop') { parentPort.close(); return; }
    const t = performance.now();
    const s = sum();
    parentPort.postMessage({ sum: s, ms: performance.now() - t });
  });
}

/**
 * Read bandwidth in bytes/s, measured here: `threads` workers (default: one per core) sum disjoint slices
 * of a `gib` GiB buffer (at most 3.9) together, `passes` times after two untimed passes (compilation);
 * also one worker alone. `method`: 'wasm' (WebAssembly SIMD, the default where it compiles) or 'js'.
 */
export async function measureBandwidth({ gib = 1, threads = os.availableParallelism(), passes = 5, method } = {}) {
  let module;
  if (method !== 'js') {
    try { module = wasmSumModule(); } catch (e) { if (method === 'wasm') throw e; }
  }
  const pages = Math.max(1, Math.min(65535, Math.round((gib * 2 ** 30) / 65536)));
  const bytes = pages * 65536;
  const memory = module
    ? new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true })
    : { buffer: new SharedArrayBuffer(bytes) };
  if (module) new BigInt64Array(memory.buffer).fill(1n); else new Float64Array(memory.buffer).fill(1); // touch every page
  const elements = BigInt(bytes / 8);
  const cut = (w) => Math.floor((bytes / 64) * w / threads) * 64;
  const workers = Array.from({ length: threads }, (_, w) => new Worker(fileURLToPath(import.meta.url), {
    workerData: { bandwidthProbe: true, memory, module, start: cut(w), end: cut(w + 1) },
  }));
  const pass = (ws) => {
    const t = performance.now();
    return Promise.all(ws.map((w) => new Promise((resolve) => { w.once('message', resolve); w.postMessage('go'); })))
      .then((r) => ({ ms: performance.now() - t, sum: r.reduce((x, y) => x + BigInt(y.sum), 0n) }));
  };
  try {
    await pass(workers); // untimed: compilation (and V8's tier-up of the wasm function) in every worker
    await pass(workers);
    const all = [];
    for (let p = 0; p < passes; p++) {
      const r = await pass(workers);
      if (r.sum !== elements) throw new Error(`bandwidth probe: wrong sum ${r.sum} (expected ${elements})`);
      all.push(bytes / (r.ms / 1000));
    }
    // One worker alone over its own slice (single-thread bandwidth, for reference).
    const single = [];
    for (let p = 0; p < Math.min(passes, 3); p++) {
      const r = await pass([workers[0]]);
      single.push(cut(1) / (r.ms / 1000));
    }
    return {
      bytesPerSecond: Math.max(...all), passes: all, singleThreadBytesPerSecond: Math.max(...single),
      threads, bufferBytes: bytes, method: module ? 'wasm-simd' : 'js',
    };
  } finally {
    for (const w of workers) w.postMessage('stop');
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

/** measureBandwidth in a child process (its buffer does not stay in the caller's heap). */
export function probeBandwidth(options = {}) {
  const argv = [fileURLToPath(import.meta.url), '--json'];
  for (const [k, v] of Object.entries(options)) if (v !== undefined) argv.push(`--${k}`, String(v));
  const r = spawnSync(process.execPath, argv, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bandwidth probe failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1));
}

if (isMainThread && process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values: args } = parseArgs({
    options: {
      gib: { type: 'string', default: '1' },
      threads: { type: 'string', default: String(os.availableParallelism()) },
      passes: { type: 'string', default: '5' },
      method: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const r = await measureBandwidth({ gib: Number(args.gib), threads: Number(args.threads), passes: Number(args.passes), method: args.method });
  if (!args.json) {
    console.log(`read bandwidth: ${(r.bytesPerSecond / 1e9).toFixed(1)} GB/s with ${r.threads} threads ` +
      `(passes ${r.passes.map((x) => (x / 1e9).toFixed(1)).join(', ')}), ${(r.singleThreadBytesPerSecond / 1e9).toFixed(1)} GB/s with one ` +
      `(${(r.bufferBytes / 2 ** 30).toFixed(2)} GiB buffer, ${r.method})`);
  }
  console.log(JSON.stringify(r));
}
