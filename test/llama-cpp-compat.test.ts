/**
 * Files written by writeGguf load in llama.cpp, for every weight type llama.cpp computes with, and
 * llama.cpp reads back exactly the values node-moe meant: a model stored as type T gives llama.cpp
 * the next-token distributions of its F32 twin holding node-moe's own dequantization of the same
 * bytes. A disagreement about the block layout (a nibble order, a scale packing, a sign) would
 * change the weights and the distributions; what remains is llama.cpp's quantization of the
 * activations (to F16, BF16, Q8_0, Q8_1 or Q8_K) inside its matrix products.
 */
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { GgmlTypeName } from '../lib/index.js';
import { argmax, klDivergence, llamaCppNextTokenProbabilities } from './helpers/llama-cpp.js';
import { tempDir } from './helpers/tmp.js';
import { tinyVocabulary, writeTinyLlama } from './helpers/tiny-llama.js';

// Mean KL(F32 twin ‖ type-T model) over the checked positions, per type, both run by llama.cpp.
const MEAN_KL_BOUND: Partial<Record<GgmlTypeName, number>> = {
  F16: 1e-4, BF16: 2e-3, Q8_0: 5e-3, Q4_0: 5e-3, Q4_1: 5e-3, Q5_0: 5e-3, Q5_1: 5e-3,
  Q2_K: 5e-3, Q3_K: 5e-3, Q4_K: 5e-3, Q5_K: 5e-3, Q6_K: 5e-3, MXFP4: 5e-3,
};
// Q8_K and Q8_1 are activation formats: llama.cpp has no matrix product with them as weights.
const TYPES = Object.keys(MEAN_KL_BOUND) as GgmlTypeName[];

const PROMPT = [1, ...Array.from({ length: 23 }, (_, i) => 3 + ((i * 37 + 11) % 256))];
const POSITIONS = [4, 8, 12, 16, 20, 23];
const VOCAB = tinyVocabulary().tokens.length;

let dir: string;
let unrelated: Float64Array[];
let original: Float64Array[];

beforeAll(async () => {
  dir = await tempDir();
  const other = path.join(dir, 'other-seed.gguf');
  await writeTinyLlama(other, { weightType: 'F32', seed: 99 });
  unrelated = await llamaCppNextTokenProbabilities(other, PROMPT, POSITIONS, VOCAB);
  const f32 = path.join(dir, 'original-f32.gguf');
  await writeTinyLlama(f32, { weightType: 'F32' });
  original = await llamaCppNextTokenProbabilities(f32, PROMPT, POSITIONS, VOCAB);
}, 300_000);

describe('llama.cpp reads writeGguf output as node-moe wrote it', () => {
  it.each(TYPES)('%s', async (type) => {
    const quantized = path.join(dir, `tiny-${type}.gguf`);
    const twin = path.join(dir, `tiny-${type}-twin.gguf`);
    await writeTinyLlama(quantized, { weightType: type });
    await writeTinyLlama(twin, { weightType: 'F32', roundTrip: type });
    const expected = await llamaCppNextTokenProbabilities(twin, PROMPT, POSITIONS, VOCAB);
    const got = await llamaCppNextTokenProbabilities(quantized, PROMPT, POSITIONS, VOCAB);
    const meanKl = (ps: Float64Array[], qs: Float64Array[]) => ps.reduce((a, p, i) => a + klDivergence(p, qs[i]!), 0) / ps.length;
    const kl = meanKl(expected, got);
    // The distributions are peaked and differ from an unrelated model's, so agreement means something.
    for (const p of expected) expect(p[argmax(p)]!).toBeGreaterThan(0.2);
    expect(meanKl(expected, unrelated)).toBeGreaterThan(1);
    console.log(`${type}: mean KL vs F32 twin ${kl.toExponential(2)} (bound ${MEAN_KL_BOUND[type]}), vs unquantized original ${meanKl(original, got).toExponential(2)}`);
    expect(kl).toBeLessThanOrEqual(MEAN_KL_BOUND[type]!);
    // For the coarse types the twin must explain the weight error: the type-T model is much closer
    // to its twin than to the unquantized original. (For F16, BF16 and Q8_0 the weight error is
    // already below llama.cpp's activation rounding, so there is nothing to separate.)
    if (!['F16', 'BF16', 'Q8_0'].includes(type)) expect(kl).toBeLessThan(meanKl(original, got) / 5);
  });
});
