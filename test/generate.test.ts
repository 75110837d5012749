/**
 * model.generate: native sampling token by token, streamed as UTF-8-safe deltas, with stop strings,
 * token limits, end-of-generation tokens, abort and the usage / timing summary.
 */
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { AbortError, ContextOverflowError, loadModel, type Model } from '../lib/index.js';
import { nodeMoeGreedy } from './helpers/llama-cpp.js';
import { tempDir } from './helpers/tmp.js';
import { writeTinyMoe } from './helpers/tiny-moe.js';

let model: Model;
let vocabSize: number;

beforeAll(async () => {
  const dir = await tempDir();
  const file = path.join(dir, 'gen.gguf');
  ({ vocabSize } = await writeTinyMoe(file, { arch: 'qwen3moe', weights: 'F32' }));
  model = await loadModel(file, { threads: 2, contextSize: 128 });
  return () => model.dispose();
});

const PROMPT = 'the cat and the';

describe('generate', () => {
  it('greedy generation picks the arg-max at every step and streams its text', async () => {
    const prompt = model.tokenize(PROMPT, { addBos: true });
    const expected = await nodeMoeGreedy(model, prompt, 12);
    const generation = model.generate(prompt, { temperature: 0, maxTokens: 12, stopAtEndOfGeneration: false });
    let streamed = '';
    for await (const delta of generation) streamed += delta;
    const result = await generation.final;
    expect(result.tokens).toEqual(expected);
    expect(result.finishReason).toBe('length');
    expect(result.rawFinishReason).toBe('max-tokens');
    expect(streamed).toBe(result.text);
    // A continuation keeps its leading space (SentencePiece models would strip it from a whole text).
    expect(result.text).toBe(model.tokenizer.detokenize(expected, { stripLeadingSpace: false }));
    expect(result.usage).toEqual({ inputTokens: prompt.length, outputTokens: 12, cachedInputTokens: 0, droppedTokens: 0 });
    expect(result.timings.timeToFirstTokenMs).toBeGreaterThan(0);
    expect(result.timings.generationTokensPerSecond).toBeGreaterThan(0);
  });

  it('the same seed gives the same text; other seeds other texts', async () => {
    const run = (seed: number) => model.generate(PROMPT, { temperature: 1.5, topK: 0, topP: 1, minP: 0, seed, maxTokens: 24 }).final;
    const a = await run(7);
    const b = await run(7);
    expect(b.tokens).toEqual(a.tokens);
    const others = await Promise.all([8, 9, 10].map((s) => run(s)));
    expect(others.some((o) => o.tokens.join() !== a.tokens.join())).toBe(true);
  });

  it('never emits a stop string, not even in part', async () => {
    const full = await model.generate(PROMPT, { temperature: 0, maxTokens: 24, stopAtEndOfGeneration: false }).final;
    expect(full.text.length).toBeGreaterThan(8);
    const stop = full.text.slice(5, 8);
    const generation = model.generate(PROMPT, { temperature: 0, maxTokens: 24, stop: ['zzzz-never', stop], stopAtEndOfGeneration: false });
    const deltas: string[] = [];
    for await (const d of generation) deltas.push(d);
    const result = await generation.final;
    expect(result.finishReason).toBe('stop');
    expect(result.rawFinishReason).toBe('stop-string');
    expect(result.text).toBe(full.text.slice(0, full.text.indexOf(stop)));
    expect(deltas.join('')).toBe(result.text);
    expect(deltas.join('')).not.toContain(stop);
  });

  it('stops at an end-of-generation token', async () => {
    const eos = model.tokenizer.eosToken!;
    const result = await model.generate(PROMPT, { temperature: 0, logitBias: { [eos]: 1e4 } }).final;
    expect(result.tokens).toEqual([eos]);
    expect(result).toMatchObject({ text: '', finishReason: 'stop', rawFinishReason: 'eos' });
  });

  it('logit bias bans a token', async () => {
    const greedy = await model.generate(PROMPT, { temperature: 0, maxTokens: 1 }).final;
    const banned = await model.generate(PROMPT, { temperature: 0, maxTokens: 1, logitBias: { [greedy.tokens[0]!]: -Infinity } }).final;
    expect(banned.tokens[0]).not.toBe(greedy.tokens[0]);
  });

  it('fullStream yields the deltas and a finish part', async () => {
    const parts = [];
    for await (const part of model.generate(PROMPT, { temperature: 0, maxTokens: 5 }).fullStream) parts.push(part);
    const finish = parts.at(-1)!;
    expect(finish).toMatchObject({ type: 'finish', finishReason: 'length' });
    expect(parts.slice(0, -1).every((p) => p.type === 'text-delta')).toBe(true);
  });

  it('an abort signal ends the stream and final with an AbortError', async () => {
    const controller = new AbortController();
    const generation = model.generate(PROMPT, { temperature: 0, maxTokens: 100, signal: controller.signal, stopAtEndOfGeneration: false });
    let n = 0;
    await expect(
      (async () => {
        for await (const _ of generation.fullStream) if (++n === 3) controller.abort();
      })(),
    ).rejects.toBeInstanceOf(AbortError);
    await expect(generation.final).rejects.toBeInstanceOf(AbortError);
  });

  it('breaking out of for await ends the generation', async () => {
    const generation = model.generate(PROMPT, { temperature: 0, maxTokens: 100, stopAtEndOfGeneration: false });
    for await (const _ of generation) break;
    await expect(generation.final).rejects.toBeInstanceOf(AbortError);
  });

  it('a prompt longer than the context is a ContextOverflowError; the context end finishes with length', async () => {
    const long = Array.from({ length: 200 }, (_, i) => 3 + (i % (vocabSize - 3)));
    await expect(model.generate(long).final).rejects.toBeInstanceOf(ContextOverflowError);
    const seq = model.createSequence({ contextSize: 20 });
    const result = await model.generate(PROMPT, { temperature: 0, maxTokens: 100, sequence: seq, stopAtEndOfGeneration: false }).final;
    expect(result.finishReason).toBe('length');
    expect(result.rawFinishReason).toBe('context-full');
    await seq.dispose();
  });

  it('contextShift drops the oldest tokens and goes on, for a full context and for a long prompt', async () => {
    const seq = model.createSequence({ contextSize: 40 });
    const prompt = model.tokenize(PROMPT, { addBos: true });
    const result = await model.generate(prompt, { temperature: 0, maxTokens: 90, sequence: seq, stopAtEndOfGeneration: false, contextShift: true }).final;
    expect(result.rawFinishReason).toBe('max-tokens');
    expect(result.usage.outputTokens).toBe(90);
    expect(result.usage.droppedTokens).toBeGreaterThan(60);
    // The BOS stays first; the sequence holds the tail of prompt + generation that fits.
    expect(seq.tokens[0]).toBe(prompt[0]);
    expect(seq.length).toBeLessThan(40);
    expect(seq.tokens.slice(-5)).toEqual(result.tokens.slice(-6, -1));
    await seq.dispose();

    const long = Array.from({ length: 200 }, (_, i) => 3 + (i % (vocabSize - 3)));
    const shifted = await model.generate(long, { temperature: 0, maxTokens: 4, contextShift: { keepFirst: 2 }, stopAtEndOfGeneration: false }).final;
    expect(shifted.usage.outputTokens).toBe(4);
    expect(shifted.usage.droppedTokens).toBeGreaterThanOrEqual(200 - 127);
    // What is generated continues the kept tokens: the same as evaluating them directly.
    const kept = [...long.slice(0, 2), ...long.slice(2 + shifted.usage.droppedTokens)];
    expect(shifted.tokens).toEqual(await nodeMoeGreedy(model, Int32Array.from(kept), 4));
    expect(() => model.generate(PROMPT, { contextShift: { dropFraction: 0 } })).toThrow(RangeError);
  });

  it('reports per-layer expert usage of the request (MoE) and none for a dense model', async () => {
    const prompt = model.tokenize(PROMPT, { addBos: true });
    const n = 7;
    const result = await model.generate(prompt, { temperature: 0, maxTokens: n, stopAtEndOfGeneration: false }).final;
    const usage = result.timings.expertUsage!;
    const { blockCount, expertCount, expertUsedCount } = model.info;
    expect(usage.length).toBe(blockCount);
    const sum = (row: number[]) => row.reduce((a, b) => a + b, 0);
    for (let l = 0; l < blockCount; l++) {
      expect(usage[l]!.length).toBe(expertCount);
      // Every evaluated token is routed in the first layers; the last layer routes only the rows
      // whose logits are read (the prompt's last token, then each step's token).
      const tokens = l + 1 < blockCount ? prompt.length + n - 1 : n;
      expect(sum(usage[l]!)).toBe(tokens * expertUsedCount);
    }
    expect(usage.flat().filter((c) => c > 0).length).toBeGreaterThan(1);

    const dir = await tempDir();
    const file = path.join(dir, 'dense.gguf');
    await writeTinyMoe(file, { arch: 'llama', weights: 'F32' });
    await using dense = await loadModel(file, { threads: 2, contextSize: 64 });
    const plain = await dense.generate([1, 5, 6], { maxTokens: 2 }).final;
    expect(plain.timings.expertUsage).toBeUndefined();
  });

  it('rejects out-of-range options before starting', () => {
    expect(() => model.generate(PROMPT, { topP: 0 })).toThrow(RangeError);
    expect(() => model.generate(PROMPT, { temperature: -1 })).toThrow(RangeError);
    expect(() => model.generate(PROMPT, { maxTokens: 0 })).toThrow(RangeError);
    expect(() => model.generate(PROMPT, { logitBias: { [-1]: 1 } })).toThrow(RangeError);
  });
});
