/**
 * The prefix cache (a prompt's leading blocks evaluated once, copied into later sequences) and
 * saved sequence / chat state (history + KV rows in a file, restored without evaluating again).
 */
import { writeFile, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, StateFormatError, type Model } from '../lib/index.js';
import { Prng } from './helpers/prng.js';
import { tempDir } from './helpers/tmp.js';
import { writeTinyMoe, type TinyArch } from './helpers/tiny-moe.js';

let dir: string;
let chatFile: string; // a tiny Qwen3-MoE with the real Qwen3 tokenizer and chat template
beforeAll(async () => {
  dir = await tempDir();
  chatFile = path.join(dir, 'chat.gguf');
  await writeTinyMoe(chatFile, { arch: 'qwen3moe', weights: 'Q4_K_M', vocabulary: 'qwen3' });
}, 300_000);

function randomTokens(n: number, vocabSize: number, seed: number): number[] {
  const prng = new Prng(seed);
  return Array.from({ length: n }, () => 1 + Math.floor(prng.next() * (vocabSize - 1)));
}

async function greedy(model: Model, prompt: number[], maxTokens = 12) {
  return model.generate(prompt, { temperature: 0, maxTokens, stopAtEndOfGeneration: false }).final;
}

const bytesOf = (l: Float32Array) => Buffer.from(l.buffer, l.byteOffset, l.byteLength);

describe.each<[TinyArch]>([['qwen3moe'], ['deepseek2'], ['gpt-oss']])('prefix cache on %s', (arch) => {
  let file: string;
  let model: Model;
  let plain: Model;
  let vocabSize: number;
  beforeAll(async () => {
    file = path.join(dir, `${arch}.gguf`);
    ({ vocabSize } = await writeTinyMoe(file, { arch, weights: 'F32' }));
    model = await loadModel(file, { threads: 2, contextSize: 512 });
    plain = await loadModel(file, { threads: 2, contextSize: 512, prefixCacheSize: 0 });
  });
  afterAll(async () => {
    await model?.dispose();
    await plain?.dispose();
  });

  it('a shared prefix is evaluated once: later requests restore its blocks and generate the same text', async () => {
    const shared = randomTokens(100, vocabSize, 1);
    const first = await greedy(model, [...shared, ...randomTokens(10, vocabSize, 2)]);
    expect(first.usage.cachedInputTokens).toBe(0);
    const { blockTokens } = model.prefixCacheStats;
    const prompt = [...shared, ...randomTokens(12, vocabSize, 3)];
    const second = await greedy(model, prompt);
    // Every whole block of the common 100 tokens comes from the cache.
    expect(second.usage.cachedInputTokens).toBe(Math.floor(100 / blockTokens) * blockTokens);
    expect(second.tokens).toEqual((await greedy(plain, prompt)).tokens);
    expect((await greedy(plain, prompt)).usage.cachedInputTokens).toBe(0);
    const stats = model.prefixCacheStats;
    expect(stats.hits).toBeGreaterThanOrEqual(1);
    expect(stats.restoredTokens).toBeGreaterThanOrEqual(second.usage.cachedInputTokens);
    expect(plain.prefixCacheStats.blocks).toBe(0);
  });
});

describe('prefix cache across chats and its budget', () => {
  it('a second chat with the same system prompt starts from the cache; the budget evicts the oldest blocks', async () => {
    const file = chatFile;
    await using model = await loadModel(file, { threads: 2, contextSize: 512 });
    const system = 'You are a helpful assistant who answers briefly and politely, in plain words. '.repeat(4);
    const options = { system, temperature: 0, maxTokens: 6, templateVariables: { enable_thinking: false } };
    await using a = model.createChat(options);
    const r1 = await a.send('Hello!').final;
    expect(r1.usage.cachedInputTokens).toBe(0);
    await using b = model.createChat(options);
    const r2 = await b.send('Good morning.').final;
    expect(r2.usage.cachedInputTokens).toBeGreaterThanOrEqual(64);

    const perBlock = model.prefixCacheStats.bytes / model.prefixCacheStats.blocks;
    await using small = await loadModel(file, { threads: 2, contextSize: 512, prefixCacheSize: Math.floor(perBlock * 2.5) });
    const vocab = small.info.vocabSize;
    for (let i = 0; i < 3; i++) await greedy(small, randomTokens(70, vocab, 10 + i), 2);
    const stats = small.prefixCacheStats;
    expect(stats.bytes).toBeLessThanOrEqual(perBlock * 2.5);
    expect(stats.blocks).toBe(2);
    expect(stats.evictedBlocks).toBe(4);
    // The most recent prompt's blocks are the ones kept.
    const again = await greedy(small, randomTokens(70, vocab, 12), 2);
    expect(again.usage.cachedInputTokens).toBe(64);
  });
});

describe.each<[TinyArch, number]>([
  ['qwen3moe', 40],
  ['deepseek2', 40],
  ['gpt-oss', 700], // longer than the sliding-window ring
])('saved state on %s (%i tokens)', (arch, length) => {
  let file: string;
  let model: Model;
  let vocabSize: number;
  beforeAll(async () => {
    file = path.join(dir, `state-${arch}.gguf`);
    ({ vocabSize } = await writeTinyMoe(file, { arch, weights: 'F16' }));
    model = await loadModel(file, { threads: 2, contextSize: 1024, prefixCacheSize: 0 });
  });
  afterAll(() => model?.dispose());

  it('a restored sequence continues bit for bit like the original', async () => {
    const tokens = randomTokens(length, vocabSize, 5);
    await using original = model.createSequence();
    await original.evaluate(tokens);
    const saved = path.join(dir, `${arch}.state`);
    await original.saveState(saved, { metadata: 'hello' });
    await using restored = model.createSequence();
    await restored.evaluate([7, 8, 9]); // replaced by the file's contents
    expect(await restored.loadState(saved)).toEqual({ metadata: 'hello' });
    expect(restored.length).toBe(length);
    expect(restored.tokens).toEqual(tokens);
    for (const next of [[11], [12, 13, 14], [15]]) {
      const a = await original.evaluate(next, { allLogits: true });
      const b = await restored.evaluate(next, { allLogits: true });
      expect(bytesOf(b).equals(bytesOf(a))).toBe(true);
    }
  });
});

describe('saved chats and bad state files', () => {
  it('a saved chat goes on in a new chat without evaluating its history again', async () => {
    await using model = await loadModel(chatFile, { threads: 2, contextSize: 512, prefixCacheSize: 0 });
    const options = { system: 'You are terse.', temperature: 0, maxTokens: 8, templateVariables: { enable_thinking: false } };
    await using chat = model.createChat(options);
    await chat.send('Hi there!').final;
    await chat.send('What is the sea?').final;
    const saved = path.join(dir, 'chat.state');
    await chat.save(saved);

    await using restored = model.createChat({ ...options, system: 'ignored: the file has the history' });
    await restored.load(saved);
    expect(restored.history).toEqual(chat.history);
    const a = await chat.send('And the sky?').final;
    const b = await restored.send('And the sky?').final;
    expect(b.tokens).toEqual(a.tokens);
    expect(b.usage.cachedInputTokens).toBe(a.usage.cachedInputTokens);
    expect(b.usage.cachedInputTokens).toBeGreaterThan(20);
  });

  it('another model, a damaged file, a file too large for the context: StateFormatError, the sequence unchanged', async () => {
    const file = path.join(dir, 'state-qwen3moe.gguf');
    await using model = await loadModel(file, { threads: 2, contextSize: 256, prefixCacheSize: 0 });
    await using other = await loadModel(chatFile, { threads: 2, contextSize: 256 });
    const vocab = model.info.vocabSize;
    await using source = model.createSequence();
    await source.evaluate(randomTokens(50, vocab, 9));
    const good = path.join(dir, 'good.state');
    await source.saveState(good);

    await using target = model.createSequence({ contextSize: 64 });
    await target.evaluate([5, 6, 7]);
    const before = await target.evaluate([8]);
    target.truncate(3);
    const expectUnchanged = async () => {
      expect(target.tokens).toEqual([5, 6, 7]);
      expect(bytesOf(await target.evaluate([8])).equals(bytesOf(before))).toBe(true);
      target.truncate(3);
    };

    await using foreign = other.createSequence();
    await expect(foreign.loadState(good)).rejects.toThrow(/another model or KV cache type/);
    const truncated = path.join(dir, 'truncated.state');
    const bytes = await readFile(good);
    await writeFile(truncated, bytes.subarray(0, bytes.length - 100));
    await expect(target.loadState(truncated)).rejects.toBeInstanceOf(StateFormatError);
    await expectUnchanged();
    const notState = path.join(dir, 'not.state');
    await writeFile(notState, 'hello, world, this is not a state file at all');
    await expect(target.loadState(notState)).rejects.toThrow(/not a node-moe state file/);
    await expectUnchanged();
    await using tiny = model.createSequence({ contextSize: 32 });
    await expect(tiny.loadState(good)).rejects.toThrow(/do not fit the context of 32/);
    await expect(target.loadState(path.join(dir, 'missing.state'))).rejects.toThrow(/cannot open/);
    await expectUnchanged();
    await expect(model.createChat().load(good)).rejects.toBeInstanceOf(StateFormatError);
    expect((await stat(good)).size).toBeGreaterThan(50 * 4);
  });
});
