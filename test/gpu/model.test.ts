/**
 * The CUDA forward pass (cuda/backend.cu) against the CPU's, on the tiny models of every
 * architecture: the same 64-token teacher-forced sequence through gpu: 'cuda' and gpu: false must
 * give the same next-token distributions within the conformance gate's tolerances (the GPU is not
 * bit-exact: fp32 matrix-vector products, half-precision tensor-core tiles for larger batches,
 * flash-attention numerics):
 *  - the arg-max agrees at >= 98% of positions and wherever the CPU's top two differ by >= 0.05 nats;
 *  - mean KL(CPU ‖ GPU) <= 1e-3 for float weights, <= 5e-3 for quantized ones.
 * Then the hybrid placements (routed experts in CPU memory: experts 'cpu', experts 1), 8 sequences
 * batched into shared passes against the same run one at a time, and the state paths the CPU cache
 * serves (saveState / loadState both ways between GPU and CPU, a state loaded over other device
 * rows, truncation, the prefix cache).
 *
 * Runs only with a CUDA build of the addon (npm run build:cuda, then NODE_MOE_BINDING pointing at
 * build-cuda/Release/node_moe.node) on a machine with a device; otherwise the file says why and
 * skips.
 */
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadBinding } from '../../lib/binding.js';
import { getGpuInfo, loadModel, type LoadModelOptions, type Model } from '../../lib/index.js';
import { argmax, klDivergence, softmax } from '../helpers/llama-cpp.js';
import { tempDir } from '../helpers/tmp.js';
import { teacherTokens, writeTinyMoe, type TinyArch, type TinyWeightType } from '../helpers/tiny-moe.js';

async function cudaStatus(): Promise<{ ok: boolean; reason: string }> {
  let cudaBuild = false;
  try {
    cudaBuild = loadBinding().cudaBuild === true;
  } catch (error) {
    return { ok: false, reason: `the addon does not load: ${(error as Error).message}` };
  }
  if (!cudaBuild) {
    return { ok: false, reason: 'the addon is not a CUDA build (npm run build:cuda; NODE_MOE_BINDING=build-cuda/Release/node_moe.node)' };
  }
  const info = await getGpuInfo();
  return info.available ? { ok: true, reason: '' } : { ok: false, reason: info.reason || 'no CUDA device found' };
}

const status = await cudaStatus();
if (!status.ok) console.log(`test/gpu/model.test.ts skipped: ${status.reason}`);

const ARCHS: TinyArch[] = ['llama', 'llama-moe', 'qwen2moe', 'qwen3moe', 'olmoe', 'deepseek2-lite', 'deepseek2', 'deepseek2-kvb', 'gpt-oss'];
const WEIGHTS: TinyWeightType[] = ['F32', 'F16', 'Q8_0', 'Q4_K_M'];
const FLOAT_WEIGHTS = new Set<TinyWeightType>(['F32', 'F16', 'BF16']);
const SEQUENCE_LENGTH = 64;
const NEAR_TIE = 0.05;
const MIN_ARGMAX_AGREEMENT = 0.98;
const KL_BOUND_FLOAT = 1e-3;
const KL_BOUND_QUANTIZED = 5e-3;
const CONTEXT = 256;
const THREADS = 4;

/** The conformance gate between a reference's logits and ours, row by row ([rows, vocab] each). */
function expectClose(reference: Float32Array, ours: Float32Array, vocabSize: number, quantized: boolean, label: string): void {
  expect(ours.length).toBe(reference.length);
  const rows = reference.length / vocabSize;
  let agree = 0;
  let klSum = 0;
  const disagreements: string[] = [];
  for (let r = 0; r < rows; r++) {
    const ref = softmax(reference, r * vocabSize, vocabSize);
    const got = softmax(ours, r * vocabSize, vocabSize);
    expect(Number.isFinite(got[0]!), `${label}: row ${r} is not finite`).toBe(true);
    klSum += klDivergence(ref, got);
    const [p1, p2] = [...ref].sort((a, b) => b - a);
    if (argmax(ref) === argmax(got)) agree++;
    else if (Math.log(p1! / p2!) >= NEAR_TIE) disagreements.push(`row ${r}: reference ${argmax(ref)} (${p1!.toFixed(3)}), ours ${argmax(got)}`);
  }
  const meanKl = klSum / rows;
  console.log(`${label}: mean KL ${meanKl.toExponential(2)}, arg-max agreement ${agree}/${rows}`);
  expect(meanKl, label).toBeLessThanOrEqual(quantized ? KL_BOUND_QUANTIZED : KL_BOUND_FLOAT);
  expect(disagreements, label).toEqual([]);
  expect(agree / rows, label).toBeGreaterThanOrEqual(MIN_ARGMAX_AGREEMENT);
}

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});

async function tinyModel(arch: TinyArch, weights: TinyWeightType): Promise<{ file: string; vocabSize: number }> {
  const file = path.join(dir, `${arch}-${weights}.gguf`);
  const { vocabSize } = await writeTinyMoe(file, { arch, weights });
  return { file, vocabSize };
}

async function teacherForced(model: Model, tokens: number[]): Promise<Float32Array> {
  const seq = model.createSequence({ contextSize: CONTEXT });
  try {
    return await seq.evaluate(tokens, { allLogits: true });
  } finally {
    await seq.dispose();
  }
}

async function loadCuda(file: string, options: LoadModelOptions = {}): Promise<Model> {
  const model = await loadModel(file, { gpu: 'cuda', threads: THREADS, contextSize: CONTEXT, ...options });
  expect(model.info.backend.kind).toBe('cuda');
  return model;
}

/** CPU logits of a model file, computed once per file. */
const cpuLogits = new Map<string, Promise<Float32Array>>();
function cpuReference(file: string, tokens: number[]): Promise<Float32Array> {
  const key = `${file}:${tokens.join(',')}`;
  let p = cpuLogits.get(key);
  if (!p) {
    p = (async () => {
      await using cpu = await loadModel(file, { gpu: false, threads: THREADS, contextSize: CONTEXT });
      return teacherForced(cpu, tokens);
    })();
    cpuLogits.set(key, p);
  }
  return p;
}

describe.skipIf(!status.ok)('CUDA forward pass vs the CPU', () => {
  for (const arch of ARCHS) {
    const weights = arch === 'gpt-oss' ? [...WEIGHTS, 'MXFP4' as TinyWeightType] : WEIGHTS;
    for (const w of weights) {
      it(`${arch} ${w}: teacher-forced logits`, async () => {
        const { file, vocabSize } = await tinyModel(arch, w);
        const tokens = teacherTokens(SEQUENCE_LENGTH, vocabSize);
        const reference = await cpuReference(file, tokens);
        await using gpu = await loadCuda(file);
        expectClose(reference, await teacherForced(gpu, tokens), vocabSize, !FLOAT_WEIGHTS.has(w), `${arch} ${w}`);
        // Decoding token by token (matrix-vector kernels, flash-decoding splits) agrees as well.
        const seq = gpu.createSequence({ contextSize: CONTEXT });
        const stepwise = new Float32Array(SEQUENCE_LENGTH * vocabSize);
        await seq.evaluate(tokens.slice(0, 16), { allLogits: true }).then((l) => stepwise.set(l, 0));
        for (let i = 16; i < SEQUENCE_LENGTH; i++) stepwise.set(await seq.evaluate([tokens[i]!]), i * vocabSize);
        await seq.dispose();
        expectClose(reference, stepwise, vocabSize, !FLOAT_WEIGHTS.has(w), `${arch} ${w} decode`);
      });
    }
  }

  describe('hybrid: routed experts in CPU memory', () => {
    const cases: [TinyArch, TinyWeightType][] = [
      ['qwen3moe', 'F32'],
      ['qwen3moe', 'Q4_K_M'],
      ['deepseek2', 'F32'],
      ['deepseek2', 'Q4_K_M'],
      ['qwen2moe', 'Q8_0'],
      ['gpt-oss', 'MXFP4'],
    ];
    for (const [arch, w] of cases) {
      for (const experts of ['cpu', 1] as const) {
        it(`${arch} ${w}, experts: ${experts}`, async () => {
          const { file, vocabSize } = await tinyModel(arch, w);
          const tokens = teacherTokens(SEQUENCE_LENGTH, vocabSize);
          const reference = await cpuReference(file, tokens);
          await using gpu = await loadCuda(file, { experts });
          const layers = gpu.info.backend.placement!.layers;
          const moe = layers.filter((l) => l.experts !== 'none');
          if (experts === 'cpu') expect(moe.every((l) => l.experts === 'cpu')).toBe(true);
          else expect(moe.map((l) => l.experts)).toEqual([...moe.slice(1).map(() => 'cpu'), 'gpu']);
          expectClose(reference, await teacherForced(gpu, tokens), vocabSize, !FLOAT_WEIGHTS.has(w), `${arch} ${w} experts ${experts}`);
          // Decoding rows too (one row per pass through the CPU experts).
          const seq = gpu.createSequence({ contextSize: CONTEXT });
          await seq.evaluate(tokens.slice(0, 60));
          const tail = new Float32Array(4 * vocabSize);
          for (let i = 60; i < 64; i++) tail.set(await seq.evaluate([tokens[i]!]), (i - 60) * vocabSize);
          await seq.dispose();
          expectClose(reference.subarray(60 * vocabSize), tail, vocabSize, !FLOAT_WEIGHTS.has(w), `${arch} ${w} experts ${experts} decode`);
        });
      }
    }
  });

  describe('expert usage counts', () => {
    for (const [arch, experts] of [['qwen3moe', 'gpu'], ['deepseek2', 'gpu'], ['deepseek2', 'cpu']] as const) {
      it(`${arch} experts: ${experts}: the GPU routes (nearly) as the CPU`, async () => {
        const { file, vocabSize } = await tinyModel(arch, 'F32');
        const tokens = teacherTokens(SEQUENCE_LENGTH, vocabSize);
        const usage = async (options: LoadModelOptions) => {
          await using model = await loadModel(file, { threads: THREADS, contextSize: CONTEXT, ...options });
          const seq = model.createSequence();
          await seq.evaluate(tokens, { allLogits: true });
          return seq._takeExpertUsage()!;
        };
        const cpu = await usage({ gpu: false });
        const gpu = await usage({ gpu: 'cuda', experts });
        expect(gpu.length).toBe(cpu.length);
        let differ = 0;
        let total = 0;
        for (let l = 0; l < cpu.length; l++) {
          const sumCpu = cpu[l]!.reduce((a, b) => a + b, 0);
          expect(gpu[l]!.reduce((a, b) => a + b, 0)).toBe(sumCpu);
          total += sumCpu;
          for (let e = 0; e < cpu[l]!.length; e++) differ += Math.abs(cpu[l]![e]! - gpu[l]![e]!);
        }
        expect(total).toBeGreaterThan(0);
        expect(differ / total).toBeLessThanOrEqual(0.05);
      });
    }
  });

  describe('batching: 8 sequences in shared passes', () => {
    for (const [arch, w] of [['qwen3moe', 'F32'], ['deepseek2', 'Q4_K_M'], ['gpt-oss', 'F32'], ['qwen2moe', 'F16']] as const) {
      it(`${arch} ${w}: batched equals one at a time`, async () => {
        const { file, vocabSize } = await tinyModel(arch, w);
        await using gpu = await loadCuda(file, { maxConcurrency: 16 });
        const prompts = Array.from({ length: 8 }, (_, i) => teacherTokens(3 + i * 9, vocabSize, 100 + i));
        const run = async (prompt: number[]): Promise<Float32Array[]> => {
          const seq = gpu.createSequence();
          try {
            const all = await seq.evaluate(prompt, { allLogits: true });
            const next = await seq.evaluate([prompt[1]!]);
            const more = await seq.evaluate([prompt[2]!]);
            return [all, next, more];
          } finally {
            await seq.dispose();
          }
        };
        const alone: Float32Array[][] = [];
        for (const p of prompts) alone.push(await run(p));
        const before = gpu._schedulerStats();
        const batched = await Promise.all(prompts.map(run));
        const after = gpu._schedulerStats();
        expect(after.mergedPasses - before.mergedPasses).toBeGreaterThan(0);
        for (let i = 0; i < prompts.length; i++) {
          for (let j = 0; j < 3; j++) {
            expectClose(alone[i]![j]!, batched[i]![j]!, vocabSize, !FLOAT_WEIGHTS.has(w), `${arch} ${w} sequence ${i} part ${j}`);
          }
        }
      });
    }
  });

  describe('state: the CPU cache rows of a GPU sequence', () => {
    for (const [arch, w] of [['qwen3moe', 'F32'], ['deepseek2', 'F16'], ['gpt-oss', 'F32'], ['llama', 'Q8_0']] as const) {
      it(`${arch} ${w}: saveState / loadState between GPU and CPU, over other rows, after truncation`, async () => {
        const { file, vocabSize } = await tinyModel(arch, w);
        const quantized = !FLOAT_WEIGHTS.has(w);
        const tokens = teacherTokens(SEQUENCE_LENGTH, vocabSize);
        const other = teacherTokens(SEQUENCE_LENGTH, vocabSize, 77);
        const reference = await cpuReference(file, tokens);
        const tail = reference.subarray(40 * vocabSize);
        await using gpu = await loadCuda(file);
        await using cpu = await loadModel(file, { gpu: false, threads: THREADS, contextSize: CONTEXT });
        const fromGpu = path.join(dir, `${arch}-${w}-gpu.state`);
        const fromCpu = path.join(dir, `${arch}-${w}-cpu.state`);

        // A GPU sequence's state: its first 40 tokens, saved, then the rest.
        const a = gpu.createSequence();
        await a.evaluate(tokens.slice(0, 40));
        await a.saveState(fromGpu, { metadata: 'gpu' });
        const continued = await a.evaluate(tokens.slice(40), { allLogits: true });
        expectClose(tail, continued, vocabSize, quantized, `${arch} ${w} continued`);

        // ... loaded into a fresh GPU sequence, and into one whose device rows hold other tokens.
        const b = gpu.createSequence();
        expect((await b.loadState(fromGpu)).metadata).toBe('gpu');
        expectClose(continued, await b.evaluate(tokens.slice(40), { allLogits: true }), vocabSize, quantized, `${arch} ${w} loaded on GPU`);
        const c = gpu.createSequence();
        await c.evaluate(other);
        await c.loadState(fromGpu);
        expectClose(continued, await c.evaluate(tokens.slice(40), { allLogits: true }), vocabSize, quantized, `${arch} ${w} loaded over rows`);

        // ... loaded on the CPU.
        const d = cpu.createSequence();
        await d.loadState(fromGpu);
        expectClose(tail, await d.evaluate(tokens.slice(40), { allLogits: true }), vocabSize, quantized, `${arch} ${w} GPU state on CPU`);

        // A CPU state loaded on the GPU.
        const e = cpu.createSequence();
        await e.evaluate(tokens.slice(0, 40));
        await e.saveState(fromCpu);
        const f = gpu.createSequence();
        await f.loadState(fromCpu);
        expectClose(tail, await f.evaluate(tokens.slice(40), { allLogits: true }), vocabSize, quantized, `${arch} ${w} CPU state on GPU`);

        // Truncation: other tokens after position 40 are replaced by the right ones.
        const g = gpu.createSequence();
        await g.evaluate([...tokens.slice(0, 40), ...other.slice(0, 20)]);
        g.truncate(40);
        expectClose(tail, await g.evaluate(tokens.slice(40), { allLogits: true }), vocabSize, quantized, `${arch} ${w} truncated`);
        for (const s of [a, b, c, d, e, f, g]) await s.dispose();
      });
    }

    it('gpt-oss past its sliding-window rings: long chunks, and a state whose rings dropped old rows', async () => {
      // A context above window + 64 + 512 keeps real rings (smaller ones collapse into plain rows).
      const context = 2048;
      const { file, vocabSize } = await tinyModel('gpt-oss', 'F32');
      const tokens = teacherTokens(1216, vocabSize, 31);
      const head = tokens.slice(0, 1200);
      const rest = tokens.slice(1200);
      await using cpu = await loadModel(file, { gpu: false, threads: THREADS, contextSize: context });
      const c = cpu.createSequence();
      const reference = await c.evaluate(head, { allLogits: true });
      const referenceRest = await c.evaluate(rest, { allLogits: true });
      await using gpu = await loadCuda(file, { contextSize: context });
      const a = gpu.createSequence();
      expectClose(reference, await a.evaluate(head, { allLogits: true }), vocabSize, false, 'gpt-oss rings, 1200 tokens');
      const state = path.join(dir, 'gpt-oss-rings.state');
      await a.saveState(state);
      const continued = await a.evaluate(rest, { allLogits: true });
      expectClose(referenceRest, continued, vocabSize, false, 'gpt-oss rings, continued');
      const b = gpu.createSequence();
      await b.loadState(state);
      expectClose(continued, await b.evaluate(rest, { allLogits: true }), vocabSize, false, 'gpt-oss rings, state on GPU');
      const d = cpu.createSequence();
      await d.loadState(state);
      expectClose(referenceRest, await d.evaluate(rest, { allLogits: true }), vocabSize, false, 'gpt-oss rings, GPU state on CPU');
      for (const s of [a, b, c, d]) await s.dispose();
    });

    it('the prefix cache restores rows a GPU sequence wrote', async () => {
      const { file, vocabSize } = await tinyModel('qwen3moe', 'F32');
      await using gpu = await loadCuda(file);
      const prompt = teacherTokens(100, vocabSize, 9);
      const first = await gpu.generate(prompt, { temperature: 0, maxTokens: 8, stopAtEndOfGeneration: false }).final;
      const second = await gpu.generate(prompt, { temperature: 0, maxTokens: 8, stopAtEndOfGeneration: false }).final;
      expect(second.usage.cachedInputTokens).toBeGreaterThan(0);
      expect(second.tokens).toEqual(first.tokens);
      await using cpu = await loadModel(file, { gpu: false, threads: THREADS, contextSize: CONTEXT });
      const onCpu = await cpu.generate(prompt, { temperature: 0, maxTokens: 8, stopAtEndOfGeneration: false }).final;
      expect(first.tokens).toEqual(onCpu.tokens);
    });
  });
});
