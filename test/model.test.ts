/** The low-level model API: loading, info, sequences, evaluate semantics and bad input. */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  AbortError,
  ContextOverflowError,
  loadModel,
  ModelDisposedError,
  ModelFormatError,
  readGgufInfo,
  readGgufTensorBytes,
  writeGguf,
} from '../lib/index.js';
import { tempDir } from './helpers/tmp.js';
import { teacherTokens, TINY, writeTinyMoe } from './helpers/tiny-moe.js';

let dir: string;
let qwen: string;
let vocabSize: number;

beforeAll(async () => {
  dir = await tempDir();
  qwen = path.join(dir, 'qwen3moe.gguf');
  ({ vocabSize } = await writeTinyMoe(qwen, { arch: 'qwen3moe', weights: 'F32' }));
});

/** Rewrites `src` with some tensors changed (undefined drops it). */
async function rewrite(src: string, dst: string, change: (name: string) => { shape: number[]; data: Float32Array } | null | undefined) {
  const info = await readGgufInfo(src);
  const tensors = [];
  for (const t of info.tensors) {
    const c = change(t.name);
    if (c === undefined) continue;
    if (c === null) tensors.push({ name: t.name, type: t.type, shape: t.shape, data: await readGgufTensorBytes(src, t.name, info) });
    else tensors.push({ name: t.name, type: 'F32' as const, shape: c.shape, data: c.data });
  }
  await writeGguf(dst, { metadata: info.metadata, metadataTypes: info.metadataTypes, tensors });
}

describe('loadModel', () => {
  it('reports what the model is', async () => {
    await using model = await loadModel(qwen, { threads: 2 });
    const { embd, heads, kvHeads, headDim, experts, used, expertFfn } = TINY;
    expect(model.info).toMatchObject({
      architecture: 'qwen3moe', name: 'tiny-qwen3moe-F32', vocabSize, contextLength: 2048, blockCount: 2,
      embeddingLength: embd, expertCount: experts, expertUsedCount: used, sharedExpertCount: 0,
    });
    const attention = embd * heads * headDim * 2 + embd * kvHeads * headDim * 2 + 2 * headDim + embd;
    const expert = 3 * embd * expertFfn;
    const layer = attention + embd + embd * experts;
    const total = 2 * embd * vocabSize + embd + 2 * (layer + experts * expert);
    expect(model.info.parameterCount).toBe(total);
    expect(model.info.activeParameterCount).toBe(total - 2 * (experts - used) * expert);
    const fileBytes = (await readGgufInfo(qwen)).tensors.reduce((a, t) => a + t.bytes, 0);
    expect(model.info.sizeBytes).toBe(fileBytes);
  });

  it('names the supported architectures for an unknown one', async () => {
    const file = path.join(dir, 'unknown-arch.gguf');
    const info = await readGgufInfo(qwen);
    await writeGguf(file, { metadata: { ...info.metadata, 'general.architecture': 'mamba9' }, metadataTypes: info.metadataTypes, tensors: [] });
    const err = await loadModel(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelFormatError);
    expect(String((err as Error).message)).toMatch(/mamba9/);
    expect(String((err as Error).message)).toMatch(/qwen3moe/);
  });

  it('names a missing tensor, and the expected shape of a mis-shaped one', async () => {
    const missing = path.join(dir, 'missing.gguf');
    await rewrite(qwen, missing, (name) => (name === 'blk.1.ffn_up_exps.weight' ? undefined : null));
    await expect(loadModel(missing)).rejects.toThrow(/blk\.1\.ffn_up_exps\.weight/);
    const misshaped = path.join(dir, 'misshaped.gguf');
    await rewrite(qwen, misshaped, (name) =>
      name === 'blk.0.attn_k.weight' ? { shape: [TINY.embd, 64], data: new Float32Array(TINY.embd * 64) } : null,
    );
    const err = await loadModel(misshaped).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelFormatError);
    expect(String((err as Error).message)).toMatch(/blk\.0\.attn_k\.weight/);
    expect(String((err as Error).message)).toMatch(/256, 128/);
  });

  it('rejects a malformed file with GgufError and bad options with RangeError', async () => {
    const bad = path.join(dir, 'truncated.gguf');
    await writeFile(bad, (await readFile(qwen)).subarray(0, 1000));
    await expect(loadModel(bad)).rejects.toMatchObject({ name: 'GgufError' });
    await expect(loadModel(qwen, { threads: 0 })).rejects.toThrow(RangeError);
    await expect(loadModel(qwen, { contextSize: -1 })).rejects.toThrow(RangeError);
    await expect(loadModel(qwen, { kvCacheType: 'Q3' as never })).rejects.toThrow(RangeError);
  });

  it('reports progress and can be aborted', async () => {
    const seen: number[] = [];
    await using model = await loadModel(qwen, { onProgress: (p) => seen.push(p) });
    expect(model.info.architecture).toBe('qwen3moe');
    await new Promise((r) => setImmediate(r));
    expect(seen.length).toBeGreaterThan(0);
    expect(Math.max(...seen)).toBeLessThanOrEqual(1);
    const controller = new AbortController();
    controller.abort(new Error('stop'));
    await expect(loadModel(qwen, { signal: controller.signal })).rejects.toThrow(/stop/);
    const late = new AbortController();
    const loading = loadModel(qwen, { signal: late.signal, onProgress: () => late.abort() });
    await expect(loading).rejects.toBeInstanceOf(AbortError);
  });
});

describe('sequences', () => {
  it('evaluate appends: [a,b,c] then [d] equals [a,b,c,d]', async () => {
    await using model = await loadModel(qwen, { threads: 2 });
    const tokens = teacherTokens(12, vocabSize);
    const whole = model.createSequence({ contextSize: 64 });
    const all = await whole.evaluate(tokens, { allLogits: true });
    expect(all.length).toBe(tokens.length * vocabSize);
    const last = await model.createSequence({ contextSize: 64 }).evaluate(tokens);
    // As llama.cpp, the last layer runs on the output rows only, so a one-row product takes
    // ggml_vec_dot's order where twelve rows take tinyBLAS's: equal up to fp32 rounding.
    const lastOfAll = all.subarray((tokens.length - 1) * vocabSize);
    for (let i = 0; i < vocabSize; i++) expect(last[i]).toBeCloseTo(lastOfAll[i]!, 4);
    const parts = model.createSequence({ contextSize: 64 });
    await parts.evaluate(tokens.slice(0, 5));
    await parts.evaluate(tokens.slice(5, 11));
    const tail = await parts.evaluate(tokens.slice(11));
    expect(parts.length).toBe(tokens.length);
    for (let i = 0; i < vocabSize; i++) expect(tail[i]).toBeCloseTo(last[i]!, 4);
  });

  it('truncate rewinds the cache', async () => {
    await using model = await loadModel(qwen, { threads: 2 });
    const tokens = teacherTokens(10, vocabSize);
    const seq = model.createSequence({ contextSize: 32 });
    const first = await seq.evaluate(tokens.slice(0, 6));
    await seq.evaluate(tokens.slice(6));
    seq.truncate(5);
    expect(seq.length).toBe(5);
    const again = await seq.evaluate(tokens.slice(5, 6));
    for (let i = 0; i < vocabSize; i++) expect(again[i]).toBeCloseTo(first[i]!, 4);
    seq.clear();
    expect(seq.length).toBe(0);
    expect(() => seq.truncate(1)).toThrow(RangeError);
  });

  it('refuses tokens outside the vocabulary and overflowing the context, staying usable', async () => {
    await using model = await loadModel(qwen, { threads: 2 });
    const seq = model.createSequence({ contextSize: 8 });
    await expect(seq.evaluate([1, vocabSize])).rejects.toThrow(RangeError);
    await expect(seq.evaluate([-1])).rejects.toThrow(RangeError);
    await seq.evaluate([1, 2, 3, 4, 5]);
    await expect(seq.evaluate([6, 7, 8, 9])).rejects.toBeInstanceOf(ContextOverflowError);
    expect(seq.length).toBe(5);
    const logits = await seq.evaluate([6, 7, 8]);
    expect(logits.length).toBe(vocabSize);
    expect(seq.length).toBe(8);
  });

  it('aborts an evaluation through its signal', async () => {
    await using model = await loadModel(qwen, { threads: 2 });
    const seq = model.createSequence({ contextSize: 2048 });
    const controller = new AbortController();
    const running = seq.evaluate(teacherTokens(2000, vocabSize), { signal: controller.signal });
    setTimeout(() => controller.abort(), 5);
    await expect(running).rejects.toBeInstanceOf(AbortError);
    expect(seq.length).toBeLessThan(2000);
    await seq.evaluate([1]);
  });

  it('dispose during an evaluation ends it cleanly; the disposed model refuses further use', async () => {
    const model = await loadModel(qwen, { threads: 2 });
    const seq = model.createSequence({ contextSize: 2048 });
    const running = seq.evaluate(teacherTokens(2000, vocabSize));
    await model.dispose();
    await expect(running).rejects.toBeInstanceOf(ModelDisposedError);
    expect(() => model.createSequence()).toThrow(ModelDisposedError);
    expect(() => seq.truncate(0)).toThrow(ModelDisposedError);
    await model.dispose();
  });
});
