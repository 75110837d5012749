/**
 * Generates tiny dense `llama` GGUF models with writeGguf: seeded random weights, a small
 * SentencePiece-style vocabulary (control tokens, 256 byte tokens, a few pieces), every weight
 * matrix stored as one chosen type. Widths are multiples of 256 so every block type fits.
 */
import { dequantizeSync, quantizeSync, writeGguf, type GgmlTypeName, type GgufTensorInput } from '../../lib/index.js';
import { Prng } from './prng.js';

export interface TinyLlamaOptions {
  /** Type of every 2-D weight (norms stay F32, as converters keep them). */
  weightType: GgmlTypeName;
  /**
   * Store every weight as F32, but with the values it gets after quantizing to this type and
   * dequantizing with node-moe's kernels: the F32 twin of a `weightType: roundTrip` model.
   */
  roundTrip?: GgmlTypeName;
  seed?: number;
  embd?: number;
  ffn?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
}

export function tinyVocabulary(): { tokens: string[]; scores: Float32Array; types: Int32Array } {
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [2, 3, 3];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(6);
  }
  const pieces = ['▁', '▁the', '▁a', '▁and', '▁of', '▁to', '▁in', '▁is', '▁it', '▁that', 'e', 't', 'o', 'n', 's', 'h', 'r'];
  for (const c of 'abcdefghijklmnopqrstuvwxyz') pieces.push(`▁${c}`);
  for (const p of pieces) {
    if (!tokens.includes(p)) {
      tokens.push(p);
      types.push(1);
    }
  }
  const scores = new Float32Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) scores[i] = types[i] === 1 ? -i : 0;
  return { tokens, scores, types: Int32Array.from(types) };
}

export async function writeTinyLlama(path: string, options: TinyLlamaOptions): Promise<void> {
  const { weightType, roundTrip, seed = 1, embd = 256, ffn = 512, layers = 2, heads = 4, kvHeads = 2 } = options;
  const vocab = tinyVocabulary();
  const nVocab = vocab.tokens.length;
  const headDim = embd / heads;
  const rng = new Prng(seed);
  const tensors: GgufTensorInput[] = [];
  const weight = (name: string, nIn: number, nOut: number, scale: number) => {
    let data = rng.gaussianArray(nIn * nOut, scale);
    if (roundTrip) data = dequantizeSync(roundTrip, quantizeSync(roundTrip, data), data.length);
    tensors.push({ name, shape: [nIn, nOut], type: weightType, data });
  };
  const norm = (name: string) => {
    const data = new Float32Array(embd);
    for (let i = 0; i < embd; i++) data[i] = 1 + 0.1 * rng.gaussian();
    tensors.push({ name, shape: [embd], type: 'F32', data });
  };
  weight('token_embd.weight', embd, nVocab, 1);
  for (let l = 0; l < layers; l++) {
    norm(`blk.${l}.attn_norm.weight`);
    weight(`blk.${l}.attn_q.weight`, embd, embd, 1 / Math.sqrt(embd));
    weight(`blk.${l}.attn_k.weight`, embd, kvHeads * headDim, 1 / Math.sqrt(embd));
    weight(`blk.${l}.attn_v.weight`, embd, kvHeads * headDim, 1 / Math.sqrt(embd));
    weight(`blk.${l}.attn_output.weight`, embd, embd, 1 / Math.sqrt(embd));
    norm(`blk.${l}.ffn_norm.weight`);
    weight(`blk.${l}.ffn_gate.weight`, embd, ffn, 1 / Math.sqrt(embd));
    weight(`blk.${l}.ffn_up.weight`, embd, ffn, 1 / Math.sqrt(embd));
    weight(`blk.${l}.ffn_down.weight`, ffn, embd, 1 / Math.sqrt(ffn));
  }
  norm('output_norm.weight');
  // A larger output scale makes next-token distributions peaked, so comparisons mean something.
  weight('output.weight', embd, nVocab, 6 / Math.sqrt(embd));

  await writeGguf(path, {
    metadata: {
      'general.architecture': 'llama',
      'general.name': `tiny-llama-${weightType}`,
      'llama.context_length': 512,
      'llama.embedding_length': embd,
      'llama.block_count': layers,
      'llama.feed_forward_length': ffn,
      'llama.attention.head_count': heads,
      'llama.attention.head_count_kv': kvHeads,
      'llama.rope.dimension_count': headDim,
      'llama.attention.layer_norm_rms_epsilon': 1e-5,
      'tokenizer.ggml.model': 'llama',
      'tokenizer.ggml.tokens': vocab.tokens,
      'tokenizer.ggml.scores': vocab.scores,
      'tokenizer.ggml.token_type': vocab.types,
      'tokenizer.ggml.bos_token_id': 1,
      'tokenizer.ggml.eos_token_id': 2,
      'tokenizer.ggml.unknown_token_id': 0,
      'tokenizer.ggml.add_bos_token': true,
    },
    tensors,
  });
}
