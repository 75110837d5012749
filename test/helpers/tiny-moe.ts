/**
 * Tiny models of every supported architecture, generated with writeGguf from a seed: the test
 * fixtures of the engine and its conformance gate against llama.cpp. Widths are multiples of 256
 * so every block type fits; routers and norms stay F32 as real converters keep them. Output and
 * router scales are large enough that next-token distributions are peaked and expert choices are
 * rarely near-ties, so agreement between engines means something.
 */
import { writeGguf, type GgmlTypeName, type GgufMetadataInput, type GgufTensorInput } from '../../lib/index.js';
import { Prng } from './prng.js';
import { tinyVocabulary } from './tiny-llama.js';

export type TinyArch = 'llama' | 'llama-moe' | 'qwen2moe' | 'qwen3moe' | 'olmoe';

/** One type for every weight matrix, or `'Q4_K_M'`: Q4_K with Q6_K for attn_v, ffn_down(_exps) and output. */
export type TinyWeightType = GgmlTypeName | 'Q4_K_M';

export interface TinyMoeOptions {
  arch: TinyArch;
  weights: TinyWeightType;
  seed?: number;
  layers?: number;
  /** Store output.weight (default) or leave it out so the token embedding is reused (tied). */
  tiedOutput?: boolean;
}

export const TINY = { embd: 256, heads: 4, kvHeads: 2, headDim: 64, ffn: 512, expertFfn: 256, experts: 8, used: 2, sharedFfn: 256 } as const;

export async function writeTinyMoe(path: string, options: TinyMoeOptions): Promise<{ vocabSize: number }> {
  const { arch, weights, seed = 1, layers = 2, tiedOutput = false } = options;
  const ggufArch = arch === 'llama-moe' ? 'llama' : arch;
  const { embd, headDim, expertFfn, experts, used, ffn, sharedFfn } = TINY;
  // OLMoE has no GQA in practice; keep heads == kv heads there.
  const heads = TINY.heads;
  const kvHeads = arch === 'olmoe' ? heads : TINY.kvHeads;
  const vocab = tinyVocabulary();
  const nVocab = vocab.tokens.length;
  const rng = new Prng(seed);
  const tensors: GgufTensorInput[] = [];

  const typeFor = (name: string): GgmlTypeName => {
    if (weights !== 'Q4_K_M') return weights;
    return /attn_v|ffn_down|^output\./.test(name) ? 'Q6_K' : 'Q4_K';
  };
  const matrix = (name: string, shape: number[], scale: number) =>
    tensors.push({ name, shape, type: typeFor(name), data: rng.gaussianArray(shape.reduce((a, b) => a * b, 1), scale) });
  const f32 = (name: string, shape: number[], scale: number, center = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = rng.gaussianArray(n, scale);
    for (let i = 0; i < n; i++) data[i]! += center;
    tensors.push({ name, shape, type: 'F32', data });
  };

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
  Object.assign(metadata, {
    'tokenizer.ggml.model': 'llama',
    'tokenizer.ggml.tokens': vocab.tokens,
    'tokenizer.ggml.scores': vocab.scores,
    'tokenizer.ggml.token_type': vocab.types,
    'tokenizer.ggml.bos_token_id': 1,
    'tokenizer.ggml.eos_token_id': 2,
    'tokenizer.ggml.unknown_token_id': 0,
    'tokenizer.ggml.add_bos_token': true,
  });
  await writeGguf(path, { metadata, tensors });
  return { vocabSize: nVocab };
}

/** A fixed teacher-forcing sequence: BOS then `length - 1` pseudo-random ids from the vocabulary. */
export function teacherTokens(length: number, vocabSize: number, seed = 5): number[] {
  const rng = new Prng(seed);
  return [1, ...Array.from({ length: length - 1 }, () => 3 + rng.int(vocabSize - 3))];
}
