// The benchmark models, shared by the bench scripts. generateModel: Qwen3-30B-A3B layer shapes in a
// Q4_K_M-like mix (Q4_K; Q6_K for attn_v, ffn_down_exps, output; F32 router), random weights, a synthetic
// 2048-token SentencePiece vocabulary by default or a real one (tokenizer.ggml.* metadata, e.g. from
// bench/vocab.mjs); bench/concurrency.mjs and bench/structured.mjs use it. generateKimiModel: Kimi K2's
// proportions on deepseek2 in the same mix. BENCH_MODELS / ensureBenchModel: bench/run.mjs's two models,
// generated once into CACHE_DIR. activeWeightBytes: the weight bytes one decoded token reads.
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { quantize, readGgufInfo, readGgufTensorBytes, writeGguf } from '../dist/index.js';
import { family, ggufMetadata } from './vocab.mjs';

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

// ---------------------------------------------------------------------------------------------------------
// The performance benchmark's models (bench/run.mjs): generated once, cached in CACHE_DIR.

/**
 * Kimi K2's proportions on `deepseek2` at a 2048 hidden width: MLA with q_lora 1536 / kv_lora 512, 16 heads
 * of 128 + 64 rope dims (values 128, as DeepSeek-V3), 384 experts top-8 + 1 shared expert of 512, sigmoid
 * routing with a selection bias, one expert group, normalized top-k, routed scaling 2.827, YaRN like Kimi K2,
 * 1 dense leading block (FFN 6144: Kimi's 18432 would add nothing but size) + 3 MoE blocks. The keys and
 * tensors are test/helpers/tiny-moe.ts's 'deepseek2' variant (test/helpers/kimi-scale.ts at Kimi's widths).
 */
export const KIMI_SHAPE = {
  embd: 2048, heads: 16, qLora: 1536, kvLora: 512, nope: 128, rope: 64, v: 128,
  experts: 384, used: 8, expertFfn: 512, shared: 1, ffn: 6144, layers: 4, denseLayers: 1, vocab: 2048,
};

/** Q4_K_M-like types as test/helpers/tiny-moe.ts picks them: Q6_K for attn_v(_b), ffn_down(_exps|_shexp), output; Q4_K else. */
export function q4kmType(name, rowLength) {
  const type = /attn_v|ffn_down|^output\./.test(name) ? 'Q6_K' : 'Q4_K';
  if (rowLength % 256 === 0) return type;
  // llama.cpp's quantizer falls back for rows that do not fill 256-blocks (llama-quant.cpp): Q4_K → Q5_0, Q6_K → Q8_0.
  return type === 'Q4_K' ? 'Q5_0' : 'Q8_0';
}

/** The synthetic SentencePiece vocabulary generateModel uses (llama.cpp needs the 256 byte tokens). */
function syntheticVocabulary(size) {
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [2, 3, 3];
  for (let b = 0; b < 256; b++) { tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`); types.push(6); }
  for (let i = tokens.length; i < size; i++) { tokens.push(`▁t${i}`); types.push(1); }
  return {
    'tokenizer.ggml.model': 'llama', 'tokenizer.ggml.tokens': tokens, 'tokenizer.ggml.scores': new Float32Array(size),
    'tokenizer.ggml.token_type': Int32Array.from(types), 'tokenizer.ggml.bos_token_id': 1, 'tokenizer.ggml.eos_token_id': 2,
  };
}

/**
 * Random uniform weights of standard deviation `std` quantized to `type`, generated and quantized in slices of
 * whole rows (a 384-expert tensor is 1.6 GB of floats), two slices at a time on the addon's threads.
 */
async function quantizedRandom(shape, type, std, seed) {
  const rowLength = shape[0];
  const rows = shape.slice(1).reduce((a, b) => a * b, 1);
  const amplitude = std * Math.sqrt(3);
  if (type === 'F32') return random(rowLength * rows, amplitude, seed);
  const rowsPerSlice = Math.max(1, Math.floor((4 << 20) / rowLength));
  const slices = Math.ceil(rows / rowsPerSlice);
  const parts = new Array(slices);
  const one = async (i) => {
    const n = Math.min(rowsPerSlice, rows - i * rowsPerSlice) * rowLength;
    parts[i] = await quantize(type, random(n, amplitude, (seed * 7919 + i * 104729) >>> 0));
  };
  for (let i = 0; i < slices; i += 2) await Promise.all([one(i), ...(i + 1 < slices ? [one(i + 1)] : [])]);
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/**
 * Writes the Kimi-K2-proportioned deepseek2 model to `file` (KIMI_SHAPE; `shape` overrides fields).
 * `vocabulary`: `{ size, metadata, name }` (tokenizer.ggml.* keys, e.g. bench/vocab.mjs's DeepSeek-V3);
 * default: generateModel's synthetic 2048-token vocabulary. `reuse`: a file made by this generator; its
 * quantized tensors of the same name, shape and type are copied instead of generated again (the same bytes:
 * seeds are fixed by position), F32 ones (norms, routers, biases: cheap) are always generated.
 * Routing: the router's logits have a standard deviation of about 1 and the selection bias 0.01, so the
 * token-dependent scores decide the top-8 and a prompt's tokens spread over the experts as in a trained,
 * load-balanced model (a large bias would pick the same few experts for every token).
 */
export async function generateKimiModel(file, { vocabulary, shape = {}, reuse } = {}) {
  const K = { ...KIMI_SHAPE, ...shape };
  const E = K.embd;
  const vocab = vocabulary ? vocabulary.size : K.vocab;
  const tensors = [];
  const reuseInfo = reuse ? await readGgufInfo(reuse) : undefined;
  const same = (name, dims, type) => {
    const t = reuseInfo?.tensors.find((x) => x.name === name);
    return t && t.type === type && t.shape.length === dims.length && t.shape.every((d, i) => Number(d) === dims[i]);
  };
  let seed = 1;
  const matrix = (name, dims, std) => {
    const s = seed++;
    const type = q4kmType(name, dims[0]);
    tensors.push({
      name, shape: dims, type,
      data: same(name, dims, type) ? () => readGgufTensorBytes(reuse, name, reuseInfo) : () => quantizedRandom(dims, type, std, s),
    });
  };
  const f32 = (name, dims, std, center = 0) => {
    const s = seed++;
    tensors.push({
      name, shape: dims, type: 'F32',
      data: () => {
        const d = random(dims.reduce((a, b) => a * b, 1), std * Math.sqrt(3), s);
        if (center) for (let i = 0; i < d.length; i++) d[i] += center;
        return d;
      },
    });
  };
  matrix('token_embd.weight', [E, vocab], 1);
  for (let l = 0; l < K.layers; l++) {
    const b = `blk.${l}`;
    f32(`${b}.attn_norm.weight`, [E], 0.1, 1);
    matrix(`${b}.attn_q_a.weight`, [E, K.qLora], 1 / Math.sqrt(E));
    f32(`${b}.attn_q_a_norm.weight`, [K.qLora], 0.1, 1);
    matrix(`${b}.attn_q_b.weight`, [K.qLora, K.heads * (K.nope + K.rope)], 1 / Math.sqrt(K.qLora));
    matrix(`${b}.attn_kv_a_mqa.weight`, [E, K.kvLora + K.rope], 1 / Math.sqrt(E));
    f32(`${b}.attn_kv_a_norm.weight`, [K.kvLora], 0.1, 1);
    // The MLA form, as convert_hf_to_gguf.py writes DeepSeek-V3 / Kimi K2: attn_kv_b split per head into
    // k_b {nope, kv_lora, heads} (rows of 128: Q5_0 in this mix, as llama.cpp's fallback) and v_b {kv_lora, v, heads}.
    matrix(`${b}.attn_k_b.weight`, [K.nope, K.kvLora, K.heads], 1 / Math.sqrt(K.kvLora));
    matrix(`${b}.attn_v_b.weight`, [K.kvLora, K.v, K.heads], 1 / Math.sqrt(K.kvLora));
    matrix(`${b}.attn_output.weight`, [K.heads * K.v, E], 1 / Math.sqrt(K.heads * K.v));
    f32(`${b}.ffn_norm.weight`, [E], 0.1, 1);
    if (l < K.denseLayers) {
      matrix(`${b}.ffn_gate.weight`, [E, K.ffn], 1 / Math.sqrt(E));
      matrix(`${b}.ffn_up.weight`, [E, K.ffn], 1 / Math.sqrt(E));
      matrix(`${b}.ffn_down.weight`, [K.ffn, E], 1 / Math.sqrt(K.ffn));
      continue;
    }
    f32(`${b}.ffn_gate_inp.weight`, [E, K.experts], 1 / Math.sqrt(E));
    f32(`${b}.exp_probs_b.bias`, [K.experts], 0.01);
    matrix(`${b}.ffn_gate_exps.weight`, [E, K.expertFfn, K.experts], 1 / Math.sqrt(E));
    matrix(`${b}.ffn_up_exps.weight`, [E, K.expertFfn, K.experts], 1 / Math.sqrt(E));
    matrix(`${b}.ffn_down_exps.weight`, [K.expertFfn, E, K.experts], 1 / Math.sqrt(K.expertFfn));
    matrix(`${b}.ffn_gate_shexp.weight`, [E, K.expertFfn * K.shared], 1 / Math.sqrt(E));
    matrix(`${b}.ffn_up_shexp.weight`, [E, K.expertFfn * K.shared], 1 / Math.sqrt(E));
    matrix(`${b}.ffn_down_shexp.weight`, [K.expertFfn * K.shared, E], 1 / Math.sqrt(K.expertFfn * K.shared));
  }
  f32('output_norm.weight', [E], 0.1, 1);
  matrix('output.weight', [E, vocab], 6 / Math.sqrt(E));

  const k = (key) => `deepseek2.${key}`;
  await writeGguf(file, {
    metadata: {
      'general.architecture': 'deepseek2',
      'general.name': `bench kimi-k2 proportions ${K.denseLayers}+${K.layers - K.denseLayers} layers${vocabulary?.name ? `, ${vocabulary.name} vocabulary` : ''}`,
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
      [k('expert_shared_count')]: K.shared,
      [k('expert_weights_scale')]: { type: 'f32', value: 2.827 },
      [k('expert_weights_norm')]: true,
      [k('expert_gating_func')]: 2,
      [k('expert_group_count')]: 1,
      [k('expert_group_used_count')]: 1,
      ...(vocabulary?.metadata ?? syntheticVocabulary(vocab)),
    },
    tensors,
  }, { onProgress: (p) => process.stderr.write(`\rgenerating ${file}: ${p.tensorsWritten}/${p.tensorCount}`) });
  process.stderr.write('\n');
}

/**
 * Active weight bytes per token of a GGUF file (from readGgufInfo): every tensor's bytes, except routed-expert
 * tensors (`_exps`), of which expert_used_count / expert_count are read, and the token embedding, of which one
 * row is read (unless it is also the output head: no output.weight).
 */
export function activeWeightBytes(info) {
  const arch = info.metadata['general.architecture'];
  const experts = Number(info.metadata[`${arch}.expert_count`] ?? 0);
  const used = Number(info.metadata[`${arch}.expert_used_count`] ?? 0);
  const tied = !info.tensors.some((t) => t.name === 'output.weight');
  let total = 0;
  let all = 0;
  for (const t of info.tensors) {
    const bytes = Number(t.bytes);
    all += bytes;
    if (/_exps\b|_exps\./.test(t.name) && experts > 0) total += (bytes * used) / experts;
    else if (t.name === 'token_embd.weight' && !tied) total += bytes / Number(t.shape[1]);
    else total += bytes;
  }
  return { active: total, total: all };
}

/** `file`, written by `write(partialPath)` first when it does not exist (no truncated file after an interrupted run). */
export async function ensureFile(file, write) {
  if (existsSync(file)) return file;
  mkdirSync(path.dirname(file), { recursive: true });
  const partial = `${file}.partial`;
  await write(partial);
  renameSync(partial, file);
  return file;
}

/**
 * The benchmark models by name. qwen3: Qwen3-30B-A3B layer shapes (generateModel) with Qwen3's real
 * 151,936-token vocabulary, `layers` layers (default 6, about 2.7 GiB; its first layers are copied from
 * bench/structured.mjs's 2-layer file when that exists: same generator, same seeds). kimi: generateKimiModel
 * with the DeepSeek-V3 vocabulary (129,280 tokens; Kimi K2's own is 163,840), about 2.6 GiB.
 */
export const BENCH_MODELS = {
  qwen3: {
    title: 'Qwen3-30B-A3B shapes',
    file: ({ layers = 6 } = {}) => path.join(CACHE_DIR, `qwen3moe-a3b-shapes-${layers}L-q4km-qwen3vocab-v1.gguf`),
    async write(file, { layers = 6 } = {}) {
      const qwen3 = family('qwen3');
      const smaller = path.join(CACHE_DIR, 'qwen3moe-a3b-shapes-2L-q4km-qwen3vocab-v1.gguf');
      await generateModel(file, layers, {
        vocabulary: { size: qwen3.vocabSize, metadata: ggufMetadata(qwen3), name: 'Qwen3' },
        reuse: existsSync(smaller) ? smaller : undefined,
      });
    },
  },
  kimi: {
    title: 'Kimi K2 proportions (deepseek2)',
    file: () => path.join(CACHE_DIR, 'deepseek2-kimi-k2-proportions-1d3m-q4km-dsv3vocab-v1.gguf'),
    async write(file) {
      const dsv3 = family('deepseek-v3');
      await generateKimiModel(file, { vocabulary: { size: dsv3.vocabSize, metadata: ggufMetadata(dsv3), name: 'DeepSeek-V3' } });
    },
  },
};

/** The cached file of BENCH_MODELS[name], generated first when missing. */
export function ensureBenchModel(name, options = {}) {
  const m = BENCH_MODELS[name];
  if (!m) throw new RangeError(`unknown benchmark model '${name}' (have ${Object.keys(BENCH_MODELS).join(', ')})`);
  return ensureFile(m.file(options), (partial) => m.write(partial, options));
}
