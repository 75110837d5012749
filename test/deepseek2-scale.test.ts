/**
 * deepseek2 at Kimi K2's real widths (hidden 7168, 384 experts top-8, 64 heads, kv_lora 512, q_lora
 * 1536, vocabulary 163,840), one dense and one MoE block in Q2_K (about 6.6 GB): node-moe loads it,
 * reports its parameter counts and KV-cache size right, and agrees with llama.cpp on the next-token
 * distributions of a short teacher-forced sequence.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, readGgufInfo, type Model } from '../lib/index.js';
import { argmax, klDivergence, llamaCppNextTokenProbabilities, ORACLE_THREADS, softmax } from './helpers/llama-cpp.js';
import { KIMI, writeKimiScaleModel } from './helpers/kimi-scale.js';
import { tempDir } from './helpers/tmp.js';

const KL_BOUND_QUANTIZED = 5e-3; // the conformance gate's bound for quantized weights
const NEAR_TIE = 0.05;

describe('deepseek2 at Kimi K2 width', () => {
  let file: string;
  let expected: { vocabSize: number; parameters: number; active: number };
  let model: Model;

  beforeAll(async () => {
    const dir = await tempDir();
    file = path.join(dir, 'kimi-width.gguf');
    expected = await writeKimiScaleModel(file);
    model = await loadModel(file, { threads: ORACLE_THREADS, contextSize: 64 });
  }, 900_000);

  afterAll(async () => {
    await model?.dispose();
  });

  it('reports the architecture, parameter counts and the compressed KV cache', async () => {
    const info = model.info;
    expect(info.architecture).toBe('deepseek2');
    expect(info.embeddingLength).toBe(KIMI.embd);
    expect(info.vocabSize).toBe(KIMI.vocab);
    expect(info.expertCount).toBe(KIMI.experts);
    expect(info.expertUsedCount).toBe(KIMI.used);
    expect(info.sharedExpertCount).toBe(1);
    // Independently: every element of every tensor in the file, and that minus the 376 routed
    // experts a token does not use in the MoE block.
    const gguf = await readGgufInfo(file);
    const elements = gguf.tensors.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
    expect(info.parameterCount).toBe(elements);
    expect(info.parameterCount).toBe(expected.parameters);
    expect(info.activeParameterCount).toBe(expected.active);
    // One F16 row of kv_lora + rope = 576 values per token and layer ...
    expect(info.kvBytesPerToken).toBe(KIMI.layers * (KIMI.kvLora + KIMI.rope) * 2);
    // ... against 64 heads x (192 key + 128 value) values for the same attention as multi-head.
    const multiHead = KIMI.layers * KIMI.heads * (KIMI.nope + KIMI.rope + KIMI.v) * 2;
    console.log(`Kimi K2 width: ${info.kvBytesPerToken} KV bytes/token (MLA) vs ${multiHead} (multi-head), ${(multiHead / info.kvBytesPerToken).toFixed(1)}x`);
    expect(multiHead / info.kvBytesPerToken).toBeGreaterThanOrEqual(10);
  });

  it('agrees with llama.cpp on the next-token distributions', async () => {
    const tokens = [1, 300, 4000, 77777, 163000, 12345];
    const positions = tokens.map((_, i) => i);
    const reference = await llamaCppNextTokenProbabilities(file, tokens, positions, KIMI.vocab, { flashAttention: false });
    const seq = model.createSequence({ contextSize: 64 });
    const logits = await seq.evaluate(tokens, { allLogits: true });
    expect(seq.kvCacheBytes).toBe(64 * KIMI.layers * (KIMI.kvLora + KIMI.rope) * 2);
    let klSum = 0;
    for (const p of positions) {
      const ref = reference[p]!;
      const ours = softmax(logits, p * KIMI.vocab, KIMI.vocab);
      klSum += klDivergence(ref, ours);
      const [p1, p2] = [...ref].sort((a, b) => b - a);
      if (Math.log(p1! / p2!) >= NEAR_TIE) expect(argmax(ours), `position ${p}`).toBe(argmax(ref));
    }
    const meanKl = klSum / positions.length;
    console.log(`Kimi K2 width: mean KL ${meanKl.toExponential(2)} over ${positions.length} positions`);
    expect(meanKl).toBeLessThanOrEqual(KL_BOUND_QUANTIZED);
    await seq.dispose();
  }, 900_000);
});
