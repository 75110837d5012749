/**
 * llama.cpp (node-llama-cpp 3.21.1, CPU) as the numerical oracle: loads a GGUF file and returns
 * the full next-token distribution after each of the given positions.
 */
import os from 'node:os';
import { getLlama, type Llama, type LlamaContextSequence } from 'node-llama-cpp';
import type { Model } from '../../lib/index.js';

let llamaPromise: Promise<Llama> | undefined;

/** Physical cores as llama.cpp should use them here (never more threads than cores). */
export const ORACLE_THREADS = Math.max(1, Math.min(2, os.availableParallelism()));

export function oracle(): Promise<Llama> {
  llamaPromise ??= getLlama({ gpu: false, logLevel: 'error' as never, maxThreads: ORACLE_THREADS, build: 'never' });
  return llamaPromise;
}

/** Runs `fn` on a fresh one-sequence context of `modelPath` (CPU, ORACLE_THREADS), then frees both. */
async function withContext<T>(
  modelPath: string,
  options: { flashAttention?: boolean; contextSize?: number },
  fn: (sequence: LlamaContextSequence) => Promise<T>,
): Promise<T> {
  const llama = await oracle();
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  try {
    const context = await model.createContext({
      contextSize: options.contextSize ?? 256,
      threads: ORACLE_THREADS,
      sequences: 1,
      ...(options.flashAttention === undefined ? {} : { flashAttention: options.flashAttention }),
    });
    try {
      return await fn(context.getSequence());
    } finally {
      await context.dispose();
    }
  } finally {
    await model.dispose();
  }
}

/**
 * Evaluates `tokens` teacher-forced and returns, for every index in `positions`, the probability
 * of each vocabulary entry being the next token (greedy settings give the full vocabulary).
 */
export async function llamaCppNextTokenProbabilities(
  modelPath: string,
  tokens: readonly number[],
  positions: readonly number[],
  vocabSize: number,
  options: { flashAttention?: boolean; contextSize?: number } = {},
): Promise<Float64Array[]> {
  return withContext(modelPath, options, async (sequence) => {
    const want = new Set(positions);
    const items = tokens.map((t, i) =>
      want.has(i) ? ([t, { generateNext: { probabilities: true, options: { temperature: 0 } } }] as const) : t,
    );
    const results = await sequence.controlledEvaluate(items as never);
    return positions.map((p) => {
      const probabilities = results[p]?.next.probabilities;
      if (!probabilities) throw new Error(`llama.cpp returned no probabilities at position ${p}`);
      const out = new Float64Array(vocabSize);
      for (const [token, prob] of probabilities) out[token as number] = prob;
      return out;
    });
  });
}

/** Greedy continuation of `prompt` by llama.cpp: `count` token ids. */
export async function llamaCppGreedy(
  modelPath: string,
  prompt: readonly number[],
  count: number,
  options: { flashAttention?: boolean } = {},
): Promise<number[]> {
  return withContext(modelPath, options, async (sequence) => {
    const out: number[] = [];
    for await (const token of sequence.evaluate(prompt as number[] as never, { temperature: 0 })) {
      out.push(token as number);
      if (out.length >= count) break;
    }
    return out;
  });
}

/** KL(p ‖ q) in nats, with q floored so a zero in q does not make it infinite. */
export function klDivergence(p: Float64Array, q: Float64Array): number {
  let kl = 0;
  for (let i = 0; i < p.length; i++) {
    if (p[i]! > 0) kl += p[i]! * Math.log(p[i]! / Math.max(q[i]!, 1e-12));
  }
  return kl;
}

/** Probabilities of the logits in `logits[offset .. offset + n)` (softmax in double). */
export function softmax(logits: Float32Array, offset: number, n: number): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[offset + i]!);
  const out = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += out[i] = Math.exp(logits[offset + i]! - max);
  for (let i = 0; i < n; i++) out[i]! /= sum;
  return out;
}

/** node-moe's greedy continuation of `prompt` by hand (evaluate, arg-max, repeat): the reference for temperature 0. */
export async function nodeMoeGreedy(model: Model, prompt: ArrayLike<number>, count: number): Promise<number[]> {
  const seq = model.createSequence({ contextSize: 256 });
  try {
    let logits = await seq.evaluate(prompt);
    const out: number[] = [];
    while (out.length < count) {
      let best = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
      out.push(best);
      if (out.length < count) logits = await seq.evaluate([best]);
    }
    return out;
  } finally {
    await seq.dispose();
  }
}

export function argmax(p: Float64Array): number {
  let best = 0;
  for (let i = 1; i < p.length; i++) if (p[i]! > p[best]!) best = i;
  return best;
}

