/**
 * deepseek2 (MLA) and gpt-oss beyond the conformance gate: KV-cache sizes, the older attn_kv_b form
 * against the MLA form of the same weights, the sliding-window ring past its length against
 * llama.cpp, rewinding a sliding-window sequence, and bad metadata naming the key at fault.
 */
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel, ModelFormatError } from '../lib/index.js';
import { argmax, klDivergence, llamaCppNextTokenProbabilities, ORACLE_THREADS, softmax } from './helpers/llama-cpp.js';
import { tempDir } from './helpers/tmp.js';
import { TINY_MLA, TINY_OSS, teacherTokens, writeTinyMoe, type TinyArch } from './helpers/tiny-moe.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});

describe('KV cache per token', () => {
  // Measured: what one more token adds to a sequence's cache (F16), against a multi-head cache of
  // the same attention (every head's key of qk_nope + rope and value of v_head values).
  const cases: { arch: TinyArch; layers: number; fullLayers: number }[] = [
    { arch: 'deepseek2-lite', layers: 27, fullLayers: 27 },
    { arch: 'deepseek2', layers: 3, fullLayers: 3 },
    { arch: 'deepseek2-kvb', layers: 3, fullLayers: 3 },
    { arch: 'gpt-oss', layers: 4, fullLayers: 2 },
  ];
  for (const { arch, layers, fullLayers } of cases) {
    it(arch, async () => {
      const file = path.join(dir, `kv-${arch}.gguf`);
      await writeTinyMoe(file, { arch, weights: 'F16' });
      await using model = await loadModel(file, { threads: 1 });
      const perToken = model.info.kvBytesPerToken;
      if (arch === 'gpt-oss') {
        // Full-attention layers store K and V of the KV heads; sliding-window layers hold a ring.
        expect(perToken).toBe(fullLayers * 2 * TINY_OSS.kvHeads * TINY_OSS.headDim * 2);
        const seq = model.createSequence({ contextSize: 4096 });
        const ring = TINY_OSS.window + 64 + 512;
        const swaLayers = layers - fullLayers;
        expect(seq.kvCacheBytes).toBe(4096 * perToken + swaLayers * ring * 2 * TINY_OSS.kvHeads * TINY_OSS.headDim * 2);
        console.log(`gpt-oss tiny: ${perToken} B/token (full layers) + ${swaLayers} sliding-window rings of ${ring} rows`);
        await seq.dispose();
        return;
      }
      const { heads, kvLora, nope, rope, v } = TINY_MLA;
      expect(perToken).toBe(layers * (kvLora + rope) * 2);
      const multiHead = layers * heads * (nope + rope + v) * 2;
      console.log(`${arch} tiny: ${perToken} B/token (MLA) vs ${multiHead} (multi-head): ${(multiHead / perToken).toFixed(1)}x`);
      expect(multiHead / perToken).toBeGreaterThanOrEqual(10);
      const seq = model.createSequence({ contextSize: 100 });
      expect(seq.kvCacheBytes).toBe(100 * perToken);
      await seq.dispose();
    });
  }
});

describe('deepseek2 in the older attn_kv_b form', () => {
  it('computes exactly what the MLA form of its weights computes, with the compact cache', async () => {
    // The older file (quantized attn_kv_b) and its MLA twin (k_b / v_b split from the stored values).
    const older = path.join(dir, 'older-kvb.gguf');
    const twin = path.join(dir, 'older-kvb-mla.gguf');
    const { vocabSize } = await writeTinyMoe(older, { arch: 'deepseek2-kvb', weights: 'Q4_K_M' });
    await writeTinyMoe(twin, { arch: 'deepseek2-kvb-mla', weights: 'Q4_K_M' });
    const tokens = teacherTokens(32, vocabSize);
    const run = async (file: string) => {
      await using model = await loadModel(file, { threads: ORACLE_THREADS });
      const seq = model.createSequence({ contextSize: 64 });
      return { logits: await seq.evaluate(tokens, { allLogits: true }), perToken: model.info.kvBytesPerToken };
    };
    const a = await run(older);
    const b = await run(twin);
    expect(a.perToken).toBe(b.perToken);
    expect(Buffer.from(a.logits.buffer).equals(Buffer.from(b.logits.buffer))).toBe(true);
  });
});

describe('gpt-oss sliding window', () => {
  it('keeps agreeing with llama.cpp after the ring of a sliding-window layer wraps', async () => {
    const file = path.join(dir, 'oss-long.gguf');
    const { vocabSize } = await writeTinyMoe(file, { arch: 'gpt-oss', weights: 'F32' });
    // The ring holds window + 64 + 512 = 592 rows: 700 tokens wrap it.
    const tokens = teacherTokens(700, vocabSize, 9);
    const positions = [0, 100, 591, 592, 600, 650, 699];
    const reference = await llamaCppNextTokenProbabilities(file, tokens, positions, vocabSize, {
      flashAttention: false,
      contextSize: 1024,
    });
    await using model = await loadModel(file, { threads: ORACLE_THREADS });
    const seq = model.createSequence({ contextSize: 1024 });
    const logits = await seq.evaluate(tokens, { allLogits: true });
    let klSum = 0;
    for (const [i, p] of positions.entries()) {
      const ours = softmax(logits, p * vocabSize, vocabSize);
      klSum += klDivergence(reference[i]!, ours);
      expect(argmax(ours), `position ${p}`).toBe(argmax(reference[i]!));
    }
    expect(klSum / positions.length).toBeLessThanOrEqual(1e-3);

    // Rewinding within the ring works; past it the keys are gone, and that is a clear error.
    seq.truncate(650);
    expect(seq.length).toBe(650);
    expect(() => seq.truncate(10)).toThrow(/sliding-window/);
    expect(seq.length).toBe(650);
  });
});

describe('bad metadata names the key', () => {
  const cases: { name: string; arch: TinyArch; edit: (m: Record<string, unknown>) => void; key: RegExp }[] = [
    {
      name: 'an MLA row width that is not kv_lora_rank + rope',
      arch: 'deepseek2',
      edit: (m) => (m['deepseek2.attention.key_length'] = TINY_MLA.kvLora + TINY_MLA.rope + 32),
      key: /deepseek2\.attention\.key_length\b/,
    },
    {
      name: 'a value width that is not kv_lora_rank',
      arch: 'deepseek2',
      edit: (m) => (m['deepseek2.attention.value_length'] = TINY_MLA.kvLora / 2),
      key: /deepseek2\.attention\.value_length\b/,
    },
    {
      name: 'a missing kv_lora_rank',
      arch: 'deepseek2',
      edit: (m) => delete m['deepseek2.attention.kv_lora_rank'],
      key: /deepseek2\.attention\.kv_lora_rank/,
    },
    {
      name: 'a qk head no wider than its rope part',
      arch: 'deepseek2',
      edit: (m) => (m['deepseek2.attention.key_length_mla'] = TINY_MLA.rope),
      key: /deepseek2\.attention\.key_length_mla/,
    },
    {
      name: 'expert groups that do not divide the experts',
      arch: 'deepseek2',
      edit: (m) => (m['deepseek2.expert_group_count'] = 3),
      key: /deepseek2\.expert_group_count/,
    },
    {
      name: 'groups that leave fewer experts than top-k',
      arch: 'deepseek2',
      edit: (m) => {
        m['deepseek2.expert_group_count'] = 8; // 2 experts per group, 1 group: 2 < top-4
        m['deepseek2.expert_group_used_count'] = 1;
      },
      key: /deepseek2\.expert_group_used_count/,
    },
    {
      name: 'a top-k larger than the experts',
      arch: 'deepseek2',
      edit: (m) => (m['deepseek2.expert_used_count'] = TINY_MLA.experts + 1),
      key: /deepseek2\.expert_used_count/,
    },
    {
      name: 'an unknown gating function',
      arch: 'deepseek2',
      edit: (m) => (m['deepseek2.expert_gating_func'] = 9),
      key: /deepseek2\.expert_gating_func/,
    },
    {
      name: 'a missing sliding window',
      arch: 'gpt-oss',
      edit: (m) => delete m['gpt-oss.attention.sliding_window'],
      key: /gpt-oss\.attention\.sliding_window/,
    },
  ];
  for (const { name, arch, edit, key } of cases) {
    it(name, async () => {
      const file = path.join(dir, `bad-${name.replaceAll(' ', '-')}.gguf`);
      await writeTinyMoe(file, { arch, weights: 'F16', layers: 2, editMetadata: edit });
      const err = await loadModel(file).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ModelFormatError);
      expect((err as Error).message).toMatch(key);
    });
  }

  it('a tensor of the wrong shape names the tensor and both shapes', async () => {
    const file = path.join(dir, 'bad-shape.gguf');
    await writeTinyMoe(file, {
      arch: 'deepseek2',
      weights: 'F16',
      layers: 2,
      editMetadata: (m) => (m['deepseek2.attention.q_lora_rank'] = TINY_MLA.qLora * 2),
    });
    const err = await loadModel(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelFormatError);
    expect((err as Error).message).toMatch(/attn_q_a\.weight.*\[256, 128\].*expected \[256, 256\]/);
  });
});
