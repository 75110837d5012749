/**
 * A `deepseek2` model at Kimi K2's real widths (hidden 7168, 64 heads, q_lora 1536, kv_lora 512,
 * qk 128 + 64 rope, v 128, 384 experts top-8 + 1 shared of 2048, dense FFN 18432, vocabulary
 * 163,840) with one dense and one MoE block, in Q2_K: about 6.6 GB, written in seconds.
 *
 * Generating billions of Gaussian weights in JS would take minutes, so the large Q2_K matrices are
 * random bytes (every scale / code pattern is a valid Q2_K block) with fixed block scales chosen so
 * the dequantized weights have the spread of N(0, 1/n_in); routers, norms and biases are Gaussian.
 */
import { ggmlTypeGeometry, writeGguf, type GgufMetadataInput, type GgufTensorInput } from '../../lib/index.js';
import { Prng } from './prng.js';

export const KIMI = {
  embd: 7168,
  heads: 64,
  qLora: 1536,
  kvLora: 512,
  nope: 128,
  rope: 64,
  v: 128,
  experts: 384,
  used: 8,
  expertFfn: 2048,
  ffn: 18432,
  vocab: 163840,
  layers: 2,
  denseLayers: 1,
} as const;

/** Fills a Q2_K tensor of `rows` rows of `nIn` with random codes and block scales d = dmin = `d`. */
function randomQ2K(nIn: number, rows: number, seed: number): Uint8Array {
  const { blockSize, typeSize } = ggmlTypeGeometry('Q2_K');
  const blocks = (nIn / blockSize) * rows;
  const bytes = new Uint8Array(blocks * typeSize);
  const words = new Uint32Array(bytes.buffer, 0, Math.floor(bytes.length / 4));
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    // xorshift32: fast and good enough for weight bytes
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    words[i] = s;
  }
  // block_q2_K: scales[16] (4-bit scale | 4-bit min), qs[64], d (f16), dmin (f16). A weight is
  // d * scale * q - dmin * min with q in 0..3: about ±45 d, so d ~ 1 / (20 sqrt(n_in)).
  const d = f16Bits(1 / (20 * Math.sqrt(nIn)));
  for (let b = 0; b < blocks; b++) {
    const o = b * typeSize + 80;
    bytes[o] = d & 0xff;
    bytes[o + 1] = d >> 8;
    bytes[o + 2] = d & 0xff;
    bytes[o + 3] = d >> 8;
  }
  return bytes;
}

function f16Bits(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0]!;
  const exp = ((u >>> 23) & 0xff) - 127 + 15;
  const mant = (u >>> 13) & 0x3ff;
  return ((u >>> 16) & 0x8000) | (exp << 10) | mant;
}

/** Writes the model; returns the vocabulary size and the expected parameter counts. */
export async function writeKimiScaleModel(path: string): Promise<{ vocabSize: number; parameters: number; active: number }> {
  const K = KIMI;
  const rng = new Prng(7);
  const tensors: GgufTensorInput[] = [];
  let seed = 1;
  let parameters = 0;
  let inactive = 0;
  const q2k = (name: string, shape: number[]) => {
    const rows = shape.slice(1).reduce((a, b) => a * b, 1);
    const s = seed++;
    parameters += shape[0]! * rows;
    tensors.push({ name, shape, type: 'Q2_K', data: () => randomQ2K(shape[0]!, rows, s) });
  };
  const f32 = (name: string, shape: number[], scale: number, center = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    parameters += n;
    tensors.push({
      name,
      shape,
      type: 'F32',
      data: () => {
        const d = rng.gaussianArray(n, scale);
        if (center) for (let i = 0; i < n; i++) d[i]! += center;
        return d;
      },
    });
  };
  const E = K.embd;
  q2k('token_embd.weight', [E, K.vocab]);
  for (let l = 0; l < K.layers; l++) {
    const b = `blk.${l}`;
    f32(`${b}.attn_norm.weight`, [E], 0.1, 1);
    q2k(`${b}.attn_q_a.weight`, [E, K.qLora]);
    f32(`${b}.attn_q_a_norm.weight`, [K.qLora], 0.1, 1);
    q2k(`${b}.attn_q_b.weight`, [K.qLora, K.heads * (K.nope + K.rope)]);
    q2k(`${b}.attn_kv_a_mqa.weight`, [E, K.kvLora + K.rope]);
    f32(`${b}.attn_kv_a_norm.weight`, [K.kvLora], 0.1, 1);
    // k_b rows are 128 long, less than a 256-block: llama.cpp's quantizer would store them as Q8_0/F16.
    f32(`${b}.attn_k_b.weight`, [K.nope, K.kvLora, K.heads], 1 / Math.sqrt(K.nope));
    q2k(`${b}.attn_v_b.weight`, [K.kvLora, K.v, K.heads]);
    q2k(`${b}.attn_output.weight`, [K.heads * K.v, E]);
    f32(`${b}.ffn_norm.weight`, [E], 0.1, 1);
    if (l < K.denseLayers) {
      q2k(`${b}.ffn_gate.weight`, [E, K.ffn]);
      q2k(`${b}.ffn_up.weight`, [E, K.ffn]);
      q2k(`${b}.ffn_down.weight`, [K.ffn, E]);
      continue;
    }
    f32(`${b}.ffn_gate_inp.weight`, [E, K.experts], 3 / Math.sqrt(E));
    f32(`${b}.exp_probs_b.bias`, [K.experts], 0.3);
    q2k(`${b}.ffn_gate_exps.weight`, [E, K.expertFfn, K.experts]);
    q2k(`${b}.ffn_up_exps.weight`, [E, K.expertFfn, K.experts]);
    q2k(`${b}.ffn_down_exps.weight`, [K.expertFfn, E, K.experts]);
    q2k(`${b}.ffn_gate_shexp.weight`, [E, K.expertFfn]);
    q2k(`${b}.ffn_up_shexp.weight`, [E, K.expertFfn]);
    q2k(`${b}.ffn_down_shexp.weight`, [K.expertFfn, E]);
    inactive += (K.experts - K.used) * 3 * K.expertFfn * E;
  }
  f32('output_norm.weight', [E], 0.1, 1);
  q2k('output.weight', [E, K.vocab]);

  // A SentencePiece-style vocabulary of the full size (llama.cpp needs the 256 byte tokens).
  const tokens: string[] = ['<unk>', '<s>', '</s>'];
  const types: number[] = [2, 3, 3];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(6);
  }
  while (tokens.length < K.vocab) {
    tokens.push(`▁w${tokens.length}`);
    types.push(1);
  }
  const scores = new Float32Array(K.vocab);
  for (let i = 0; i < K.vocab; i++) scores[i] = types[i] === 1 ? -i : 0;

  const k = (key: string) => `deepseek2.${key}`;
  const metadata: Record<string, GgufMetadataInput> = {
    'general.architecture': 'deepseek2',
    'general.name': 'kimi-k2-width',
    [k('context_length')]: 131072,
    [k('embedding_length')]: E,
    [k('block_count')]: K.layers,
    [k('feed_forward_length')]: K.ffn,
    [k('expert_feed_forward_length')]: K.expertFfn,
    [k('attention.head_count')]: K.heads,
    [k('attention.head_count_kv')]: 1,
    [k('attention.key_length')]: K.kvLora + K.rope,
    [k('attention.value_length')]: K.kvLora,
    [k('attention.key_length_mla')]: K.nope + K.rope,
    [k('attention.value_length_mla')]: K.v,
    [k('attention.q_lora_rank')]: K.qLora,
    [k('attention.kv_lora_rank')]: K.kvLora,
    [k('attention.layer_norm_rms_epsilon')]: 1e-6,
    [k('rope.dimension_count')]: K.rope,
    [k('rope.freq_base')]: { type: 'f32', value: 50000 },
    [k('rope.scaling.type')]: 'yarn',
    [k('rope.scaling.factor')]: { type: 'f32', value: 32 },
    [k('rope.scaling.original_context_length')]: 4096,
    [k('rope.scaling.yarn_log_multiplier')]: { type: 'f32', value: 0.1 },
    [k('leading_dense_block_count')]: K.denseLayers,
    [k('expert_count')]: K.experts,
    [k('expert_used_count')]: K.used,
    [k('expert_shared_count')]: 1,
    [k('expert_weights_scale')]: { type: 'f32', value: 2.827 },
    [k('expert_weights_norm')]: true,
    [k('expert_gating_func')]: 2,
    [k('expert_group_count')]: 1,
    [k('expert_group_used_count')]: 1,
    'tokenizer.ggml.model': 'llama',
    'tokenizer.ggml.tokens': tokens,
    'tokenizer.ggml.scores': scores,
    'tokenizer.ggml.token_type': Int32Array.from(types),
    'tokenizer.ggml.bos_token_id': 1,
    'tokenizer.ggml.eos_token_id': 2,
    'tokenizer.ggml.unknown_token_id': 0,
    'tokenizer.ggml.add_bos_token': true,
  };
  await writeGguf(path, { metadata, tensors });
  return { vocabSize: K.vocab, parameters, active: parameters - inactive };
}
