#!/usr/bin/env node
// Writes a small Mixture-of-Experts GGUF file (qwen3moe layout, Q4_K experts, F32 router) with
// node-moe's own writer, then reads it back and prints what it holds.
//   node examples/make-model.mjs [out.gguf]
import { readGgufInfo, writeGguf } from '../dist/index.js';

const out = process.argv[2] ?? 'tiny-qwen3moe.gguf';
const embd = 256, experts = 8, used = 2, expertFfn = 256, layers = 2, vocab = 512, heads = 4, kvHeads = 2, headDim = 64;

let seed = 1;
const random = (n, scale) => {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    a[i] = ((seed / 2 ** 32) * 2 - 1) * scale;
  }
  return a;
};
const ones = (n) => new Float32Array(n).fill(1);

const tensors = [{ name: 'token_embd.weight', type: 'Q8_0', shape: [embd, vocab], data: random(embd * vocab, 1) }];
for (let l = 0; l < layers; l++) {
  const b = `blk.${l}`;
  tensors.push(
    { name: `${b}.attn_norm.weight`, type: 'F32', shape: [embd], data: ones(embd) },
    { name: `${b}.attn_q.weight`, type: 'Q8_0', shape: [embd, heads * headDim], data: random(embd * heads * headDim, 0.06) },
    { name: `${b}.attn_k.weight`, type: 'Q8_0', shape: [embd, kvHeads * headDim], data: random(embd * kvHeads * headDim, 0.06) },
    { name: `${b}.attn_v.weight`, type: 'Q8_0', shape: [embd, kvHeads * headDim], data: random(embd * kvHeads * headDim, 0.06) },
    { name: `${b}.attn_output.weight`, type: 'Q8_0', shape: [heads * headDim, embd], data: random(heads * headDim * embd, 0.06) },
    { name: `${b}.attn_q_norm.weight`, type: 'F32', shape: [headDim], data: ones(headDim) },
    { name: `${b}.attn_k_norm.weight`, type: 'F32', shape: [headDim], data: ones(headDim) },
    { name: `${b}.ffn_norm.weight`, type: 'F32', shape: [embd], data: ones(embd) },
    { name: `${b}.ffn_gate_inp.weight`, type: 'F32', shape: [embd, experts], data: random(embd * experts, 0.1) },
    { name: `${b}.ffn_gate_exps.weight`, type: 'Q4_K', shape: [embd, expertFfn, experts], data: random(embd * expertFfn * experts, 0.06) },
    { name: `${b}.ffn_up_exps.weight`, type: 'Q4_K', shape: [embd, expertFfn, experts], data: random(embd * expertFfn * experts, 0.06) },
    { name: `${b}.ffn_down_exps.weight`, type: 'Q6_K', shape: [expertFfn, embd, experts], data: random(expertFfn * embd * experts, 0.06) },
  );
}
tensors.push(
  { name: 'output_norm.weight', type: 'F32', shape: [embd], data: ones(embd) },
  { name: 'output.weight', type: 'Q6_K', shape: [embd, vocab], data: random(embd * vocab, 0.2) },
);

// A byte-fallback SentencePiece-style vocabulary: control tokens, the 256 bytes, and a few pieces.
const pieces = ['▁', '▁the', '▁a', '▁and', '▁of', '▁to', '▁in', '▁is', '▁it', '▁time', '▁upon', '▁once', 'e', 't', 'o', 'n', 's'];
const tokens = ['<unk>', '<s>', '</s>', ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)];
const tokenTypes = [2, 3, 3, ...new Array(256).fill(6)];
for (const p of pieces) { tokens.push(p); tokenTypes.push(1); }
while (tokens.length < vocab) { tokens.push(`▁w${tokens.length}`); tokenTypes.push(1); }

await writeGguf(out, {
  metadata: {
    'general.architecture': 'qwen3moe',
    'general.name': 'tiny qwen3moe (random weights)',
    'qwen3moe.context_length': 4096,
    'qwen3moe.embedding_length': embd,
    'qwen3moe.block_count': layers,
    'qwen3moe.attention.head_count': heads,
    'qwen3moe.attention.head_count_kv': kvHeads,
    'qwen3moe.attention.key_length': headDim,
    'qwen3moe.attention.value_length': headDim,
    'qwen3moe.attention.layer_norm_rms_epsilon': 1e-6,
    'qwen3moe.rope.freq_base': { type: 'f32', value: 1e6 },
    'qwen3moe.expert_count': experts,
    'qwen3moe.expert_used_count': used,
    'qwen3moe.expert_feed_forward_length': expertFfn,
    'tokenizer.ggml.model': 'llama',
    'tokenizer.ggml.tokens': tokens,
    'tokenizer.ggml.scores': Float32Array.from(tokens, (_, i) => -i),
    'tokenizer.ggml.token_type': Int32Array.from(tokenTypes),
    'tokenizer.ggml.bos_token_id': 1,
    'tokenizer.ggml.eos_token_id': 2,
  },
  tensors,
});

const info = await readGgufInfo(out);
const bytes = info.tensors.reduce((a, t) => a + t.bytes, 0);
console.log(`${out}: GGUF v${info.version}, ${info.tensors.length} tensors, ${(bytes / 2 ** 20).toFixed(1)} MiB of weights`);
console.log(`architecture ${info.metadata['general.architecture']}, ${info.metadata['qwen3moe.expert_count']} experts, top-${info.metadata['qwen3moe.expert_used_count']}`);
for (const t of info.tensors.filter((t) => t.name.startsWith('blk.0.'))) {
  console.log(`  ${t.name.padEnd(28)} ${t.type.padEnd(5)} [${t.shape.join(', ')}]`);
}
