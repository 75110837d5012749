/**
 * Generation under load: the event loop stays responsive while eight streams generate (the forward
 * passes run on the model's engine thread, not on the JS thread or the libuv pool), and a thousand
 * short generations do not grow the process's memory.
 */
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel, ModelDisposedError, type Model } from '../lib/index.js';
import { tempDir } from './helpers/tmp.js';
import { writeTinyMoe } from './helpers/tiny-moe.js';

let model: Model;
let file: string;

beforeAll(async () => {
  const dir = await tempDir();
  file = path.join(dir, 'load.gguf');
  await writeTinyMoe(file, { arch: 'qwen3moe', weights: 'Q4_K_M' });
  model = await loadModel(file, { threads: 2, contextSize: 128 });
  return () => model.dispose();
});

describe('generation under load', () => {
  it('keeps the event loop p99 delay under 50 ms while 8 streams generate', async () => {
    const histogram = monitorEventLoopDelay({ resolution: 5 });
    histogram.enable();
    const texts = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        let text = '';
        for await (const delta of model.generate('the cat', { maxTokens: 48, seed: i, stopAtEndOfGeneration: false })) text += delta;
        return text;
      }),
    );
    histogram.disable();
    const p99ms = histogram.percentile(99) / 1e6;
    console.log(`event loop delay while 8 streams generate: p99 ${p99ms.toFixed(1)} ms, max ${(histogram.max / 1e6).toFixed(1)} ms`);
    expect(texts.every((t) => t.length > 0)).toBe(true);
    expect(p99ms).toBeLessThan(50);
  });

  it('1,000 short generations do not grow the resident memory', async () => {
    const run = async (n: number) => {
      for (let i = 0; i < n; i++) await model.generate('the cat', { maxTokens: 2, temperature: 0 }).final;
    };
    await run(100); // warm-up: allocator pools, JIT, the engine's scratch buffers
    const before = process.memoryUsage().rss;
    await run(1000);
    const grown = (process.memoryUsage().rss - before) / 2 ** 20;
    console.log(`RSS after 1,000 generations: ${grown >= 0 ? '+' : ''}${grown.toFixed(1)} MiB`);
    // Each generation allocates and frees a KV cache (128 KiB here): a leak would show as 128 MiB.
    expect(grown).toBeLessThan(64);
  });

  it('dispose() during generation ends every stream, running or queued, with ModelDisposedError and frees the memory', async () => {
    const round = async () => {
      const m = await loadModel(file, { threads: 2, contextSize: 2048, maxConcurrency: 3 });
      const runs = Array.from({ length: 5 }, async (_, i) => {
        let text = '';
        for await (const delta of m.generate('the cat', { maxTokens: 1000, seed: i, stopAtEndOfGeneration: false })) text += delta;
        return text;
      });
      await new Promise((r) => setTimeout(r, 30));
      expect(m.activeGenerations).toEqual({ running: 3, waiting: 2 });
      const ended = Promise.allSettled(runs);
      await m.dispose();
      const settled = await ended;
      for (const s of settled) {
        expect(s.status).toBe('rejected');
        expect((s as PromiseRejectedResult).reason).toBeInstanceOf(ModelDisposedError);
      }
      expect(() => m.generate('the cat')).toThrow(ModelDisposedError);
    };
    await round(); // warm-up
    const before = process.memoryUsage().rss;
    for (let i = 0; i < 10; i++) await round();
    const grown = (process.memoryUsage().rss - before) / 2 ** 20;
    console.log(`RSS after 10 load / generate / dispose rounds: ${grown >= 0 ? '+' : ''}${grown.toFixed(1)} MiB`);
    // Each round maps the model and allocates three 2048-token caches (~6 MiB in all): kept, they would add 60 MiB.
    expect(grown).toBeLessThan(30);
  });

  it('a reader that stops reading holds back its own generation only', async () => {
    const seq = model.createSequence();
    const options = { maxTokens: 100, temperature: 0, stopAtEndOfGeneration: false } as const;
    const slow = model.generate('the cat', { ...options, sequence: seq });
    const fast = model.generate('the dog', options);
    const reader = slow[Symbol.asyncIterator]();
    await reader.next(); // reading has started; now it pauses
    const done = await fast.final;
    expect(done.usage.outputTokens).toBe(100);
    // While the other generation ran to its end, this one stopped after filling its small buffer
    // (16 parts) instead of generating its 100 tokens.
    const held = seq.length;
    expect(held).toBeLessThan(50);
    for (let r = await reader.next(); !r.done; r = await reader.next());
    expect((await slow.final).usage.outputTokens).toBe(100);
    await seq.dispose();
  });
});
