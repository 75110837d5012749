// The benchmark model, shared by the bench scripts (bench/run.mjs has its own copy of the same generator,
// so the cache file is the same whichever script makes it): Qwen3-30B-A3B layer shapes in a Q4_K_M-like mix
// (Q4_K; Q6_K for attn_v, ffn_down_exps, output; F32 router), random weights, a synthetic 2048-token
// SentencePiece vocabulary by default or a real one (tokenizer.ggml.* metadata, e.g. from bench/vocab.mjs).
import os from 'node:os';
import path from 'node:path';
import { readGgufInfo, readGgufTensorBytes, writeGguf } from '../dist/index.js';

export const SHAPE = { embd: 2048, heads: 32, kvHeads: 4, headDim: 128, experts: 128, used: 8, expertFfn: 768, vocab: 2048 };

/** Where generated bench models are cached. */
export const CACHE_DIR = path.join(os.homedir(), '.cache', 'node-moe-bench');

export function random(n, scale, seed) {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    out[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

/**
 * Writes the model to `file`. `vocabulary`: `{ size, metadata, name }` replaces the synthetic vocabulary:
 * token_embd and output get `size` rows, the tokenizer.ggml.* keys are `metadata`, and `name` goes into
 * general.name. Without it the file is exactly bench/run.mjs's. `reuse`: an existing file made by this
 * generator (any vocabulary, at least `layers` layers); tensors of the same name, shape and type are copied
 * from it instead of generated again (the same bytes: each tensor's seed is fixed by its position).
 */
export async function generateModel(file, layers, { vocabulary, reuse } = {}) {
  const { embd, heads, kvHeads, headDim, experts, used, expertFfn } = SHAPE;
  const vocab = vocabulary ? vocabulary.size : SHAPE.vocab;
  const tensors = [];
  const reuseInfo = reuse ? await readGgufInfo(reuse) : undefined;
  const same = (name, shape, type) => {
    const t = reuseInfo?.tensors.find((x) => x.name === name);
    return t && t.type === type && t.shape.length === shape.length && t.shape.every((d, i) => Number(d) === shape[i]);
  };
  let seed = 1;
  const m = (name, shape, type, scale) => {
    const s = seed++;
    tensors.push({
      name, shape, type,
      data: same(name, shape, type) ? () => readGgufTensorBytes(reuse, name, reuseInfo) : () => random(shape.reduce((a, b) => a * b, 1), scale, s),
    });
  };
  const ones = (name, n) => tensors.push({ name, shape: [n], type: 'F32', data: new Float32Array(n).fill(1) });
  m('token_embd.weight', [embd, vocab], 'Q4_K', 1);
  for (let l = 0; l < layers; l++) {
    const b = `blk.${l}`;
    ones(`${b}.attn_norm.weight`, embd);
    m(`${b}.attn_q.weight`, [embd, heads * headDim], 'Q4_K', 0.02);
    m(`${b}.attn_k.weight`, [embd, kvHeads * headDim], 'Q4_K', 0.02);
    m(`${b}.attn_v.weight`, [embd, kvHeads * headDim], 'Q6_K', 0.02);
    m(`${b}.attn_output.weight`, [heads * headDim, embd], 'Q4_K', 0.02);
    ones(`${b}.attn_q_norm.weight`, headDim);
    ones(`${b}.attn_k_norm.weight`, headDim);
    ones(`${b}.ffn_norm.weight`, embd);
    m(`${b}.ffn_gate_inp.weight`, [embd, experts], 'F32', 0.05);
    m(`${b}.ffn_gate_exps.weight`, [embd, expertFfn, experts], 'Q4_K', 0.02);
    m(`${b}.ffn_up_exps.weight`, [embd, expertFfn, experts], 'Q4_K', 0.02);
    m(`${b}.ffn_down_exps.weight`, [expertFfn, embd, experts], 'Q6_K', 0.02);
  }
  ones('output_norm.weight', embd);
  m('output.weight', [embd, vocab], 'Q6_K', 0.05);
  let tokenizer = vocabulary?.metadata;
  if (!tokenizer) {
    // llama.cpp's SentencePiece vocabulary needs the 256 byte tokens (it looks up <0x0A> at load).
    const tokens = ['<unk>', '<s>', '</s>'];
    const types = [2, 3, 3];
    for (let b = 0; b < 256; b++) { tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`); types.push(6); }
    for (let i = tokens.length; i < vocab; i++) { tokens.push(`▁t${i}`); types.push(1); }
    tokenizer = {
      'tokenizer.ggml.model': 'llama', 'tokenizer.ggml.tokens': tokens, 'tokenizer.ggml.scores': new Float32Array(vocab),
      'tokenizer.ggml.token_type': Int32Array.from(types), 'tokenizer.ggml.bos_token_id': 1, 'tokenizer.ggml.eos_token_id': 2,
    };
  }
  await writeGguf(file, {
    metadata: {
      'general.architecture': 'qwen3moe', 'general.name': `bench qwen3moe ${layers} layers${vocabulary?.name ? `, ${vocabulary.name} vocabulary` : ''}`,
      'qwen3moe.context_length': 32768, 'qwen3moe.embedding_length': embd, 'qwen3moe.block_count': layers,
      'qwen3moe.feed_forward_length': 6144, 'qwen3moe.attention.head_count': heads, 'qwen3moe.attention.head_count_kv': kvHeads,
      'qwen3moe.attention.key_length': headDim, 'qwen3moe.attention.value_length': headDim,
      'qwen3moe.attention.layer_norm_rms_epsilon': 1e-6, 'qwen3moe.rope.freq_base': { type: 'f32', value: 1e6 },
      'qwen3moe.expert_count': experts, 'qwen3moe.expert_used_count': used, 'qwen3moe.expert_feed_forward_length': expertFfn,
      ...tokenizer,
    },
    tensors,
  }, { onProgress: (p) => process.stderr.write(`\rgenerating ${file}: ${p.tensorsWritten}/${p.tensorCount}`) });
  process.stderr.write('\n');
}
