/**
 * Continuous batching: concurrent requests share forward passes on the model's engine thread, and
 * that changes no result. Each sequence's rows keep the float order of an evaluation of their own
 * (per-segment matmul plans, per-sequence attention), so texts and logits are equal bit for bit.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError, loadModel, type Model } from '../lib/index.js';
import { Prng } from './helpers/prng.js';
import { tempDir } from './helpers/tmp.js';
import { writeTinyMoe, type TinyArch, type TinyWeightType } from './helpers/tiny-moe.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});

function randomPrompts(count: number, vocabSize: number, seed: number, lengths: (i: number) => number): number[][] {
  const prng = new Prng(seed);
  const rand = () => prng.next();
  return Array.from({ length: count }, (_, i) => Array.from({ length: lengths(i) }, () => 1 + Math.floor(rand() * (vocabSize - 1))));
}

async function greedy(model: Model, prompt: number[], maxTokens: number, signal?: AbortSignal): Promise<number[]> {
  const g = model.generate(prompt, { temperature: 0, maxTokens, stopAtEndOfGeneration: false, ...(signal ? { signal } : {}) });
  return (await g.final).tokens;
}

const VARIANTS: [TinyArch, TinyWeightType][] = [
  ['qwen3moe', 'F32'],
  ['llama', 'F32'],
  ['deepseek2', 'F32'],
  ['gpt-oss', 'F32'],
  ['qwen2moe', 'Q4_K_M'],
  ['olmoe', 'Q4_0'],
  ['deepseek2', 'F16'],
];

describe.each(VARIANTS)('batching on %s %s', (arch, weights) => {
  let model: Model;
  let vocabSize: number;
  beforeAll(async () => {
    const file = path.join(dir, `${arch}-${weights}.gguf`);
    ({ vocabSize } = await writeTinyMoe(file, { arch, weights }));
    model = await loadModel(file, { threads: 2, contextSize: 1024, maxConcurrency: 16 });
  });
  afterAll(() => model?.dispose());

  it('16 concurrent greedy generations equal the same 16 run one at a time', async () => {
    // Prompt lengths from 1 token to more than one 512-token chunk, so passes mix decoding rows,
    // short prompts and a chunked long prompt.
    const prompts = randomPrompts(16, vocabSize, 7, (i) => (i === 5 ? 700 : i === 9 ? 1 : 3 + i * 7));
    const sequential: number[][] = [];
    for (const p of prompts) sequential.push(await greedy(model, p, 10));
    const before = model._schedulerStats();
    const concurrent = await Promise.all(prompts.map((p) => greedy(model, p, 10)));
    const after = model._schedulerStats();
    expect(concurrent).toEqual(sequential);
    // The passes really were shared: far fewer passes than requests' steps, many per pass.
    expect(after.maxRequests).toBeGreaterThanOrEqual(8);
    expect(after.mergedPasses - before.mergedPasses).toBeGreaterThan(5);
    expect(after.passes - before.passes).toBeLessThan(16 * 10 / 2);
  });

  it('logits of prompts and of single decoding tokens are bit-identical alone and batched', async () => {
    const prompts = randomPrompts(8, vocabSize, 19, (i) => (i === 2 ? 530 : 2 + i * 5));
    const run = async (prompt: number[]) => {
      const s = model.createSequence();
      try {
        const all = await s.evaluate(prompt, { allLogits: true });
        const next = await s.evaluate([prompt[0]!]);
        const more = await s.evaluate([prompt[1] ?? 3]);
        return [all, next, more].map((l) => Buffer.from(l.buffer, l.byteOffset, l.byteLength));
      } finally {
        await s.dispose();
      }
    };
    const alone = [];
    for (const p of prompts) alone.push(await run(p));
    const batched = await Promise.all(prompts.map(run));
    for (let i = 0; i < prompts.length; i++) {
      for (let j = 0; j < 3; j++) expect(batched[i]![j]!.equals(alone[i]![j]!), `prompt ${i}, evaluation ${j}`).toBe(true);
    }
  });
});

describe('batching keeps every result and isolates requests', () => {
  let model: Model;
  let vocabSize: number;
  beforeAll(async () => {
    const file = path.join(dir, 'iso.gguf');
    ({ vocabSize } = await writeTinyMoe(file, { arch: 'qwen3moe', weights: 'Q4_K_M' }));
    model = await loadModel(file, { threads: 2, contextSize: 1024 });
  });
  afterAll(() => model?.dispose());

  it("a sequence's logits are bit-identical alone and inside passes shared with others", async () => {
    const [prompt, ...others] = randomPrompts(9, vocabSize, 11, (i) => (i === 0 ? 40 : 5 + i));
    const alone = model.createSequence();
    const expected = await alone.evaluate(prompt!, { allLogits: true });
    await alone.dispose();

    const shared = model.createSequence();
    const background = others.map((p) => greedy(model, p!, 30));
    await new Promise((r) => setTimeout(r, 5)); // the others are decoding
    const actual = await shared.evaluate(prompt!, { allLogits: true });
    await Promise.all(background);
    await shared.dispose();
    expect(Buffer.from(actual.buffer).equals(Buffer.from(expected.buffer))).toBe(true);
  });

  it('aborting one request leaves the others exactly as they would be', async () => {
    const prompts = randomPrompts(4, vocabSize, 13, (i) => 6 + i);
    const expected = [];
    for (const p of prompts) expected.push(await greedy(model, p, 24));
    const controller = new AbortController();
    const runs = prompts.map((p, i) => greedy(model, p, 24, i === 1 ? controller.signal : undefined));
    setTimeout(() => controller.abort(), 3);
    const settled = await Promise.allSettled(runs);
    expect(settled[1]!.status).toBe('rejected');
    expect((settled[1] as PromiseRejectedResult).reason).toBeInstanceOf(AbortError);
    for (const i of [0, 2, 3]) expect((settled[i] as PromiseFulfilledResult<number[]>).value).toEqual(expected[i]);
  });

  it('maxConcurrency queues generations beyond the limit, first come first served', async () => {
    const file = path.join(dir, 'iso.gguf');
    const limited = await loadModel(file, { threads: 2, contextSize: 256, maxConcurrency: 2 });
    try {
      const prompts = randomPrompts(5, vocabSize, 17, () => 4);
      const order: number[] = [];
      let peak = 0;
      const runs = prompts.map(async (p, i) => {
        const g = limited.generate(p, { temperature: 0, maxTokens: 6, stopAtEndOfGeneration: false });
        for await (const _ of g) peak = Math.max(peak, limited.activeGenerations.running);
        const r = await g.final;
        order.push(i);
        return r;
      });
      await new Promise((r) => setImmediate(r));
      expect(limited.activeGenerations.waiting).toBeGreaterThan(0);
      const results = await Promise.all(runs);
      expect(peak).toBeLessThanOrEqual(2);
      expect(results.every((r) => r.tokens.length === 6)).toBe(true);
      expect(results.slice(2).every((r) => r.timings.queuedMs > 0)).toBe(true);
      expect(limited.activeGenerations).toEqual({ running: 0, waiting: 0 });

      // An abort while queued removes the request without starting it.
      const first = limited.generate(prompts[0]!, { temperature: 0, maxTokens: 20, stopAtEndOfGeneration: false });
      const second = limited.generate(prompts[1]!, { temperature: 0, maxTokens: 20, stopAtEndOfGeneration: false });
      const controller = new AbortController();
      const queued = limited.generate(prompts[2]!, { maxTokens: 4, signal: controller.signal });
      queued.final.catch(() => {});
      await new Promise((r) => setImmediate(r));
      controller.abort();
      await expect(queued.final).rejects.toBeInstanceOf(AbortError);
      await Promise.all([first.final, second.final]);
    } finally {
      await limited.dispose();
    }
  });
});
