/**
 * Models and sequences: load a GGUF model, evaluate token sequences against it. All long work runs
 * on native threads of node-moe's own (one engine thread per model); the event loop stays free.
 */
import { loadBinding } from './binding.js';
import { AbortError, ModelDisposedError, translateNativeError } from './errors.js';
import { readGgufInfo } from './gguf/read.js';
import { Chat, type ChatOptions } from './chat-session.js';
import type { ChatMetadata } from './chat/index.js';
import { generate, type GenerateOptions, type Generation, type GenerationPart, type GenerationResult } from './generate.js';
import { backendInfo, decideBackend, nativeGpuRequest, parseGpuOptions, type BackendInfo, type ExpertsOption, type GpuOption } from './gpu.js';
import type { NativeCancelFlag, NativeGrammarMatcher, NativeModel, NativeModelInfo, NativeSampler, NativeSequence, PrefixCacheStats } from './native-types.js';
import { ModelGrammars, type InferSchema, type JsonSchema } from './structured.js';
import { createTokenizer, type TokenizeOptions, type Tokenizer } from './tokenizer/tokenizer.js';

/** KV cache element type. */
export type KvCacheType = 'F16' | 'F32' | 'Q8_0';

export interface LoadModelOptions {
  /** Threads for the forward pass. Default: the number of physical cores (never more unless asked). */
  threads?: number;
  /** Default context size (tokens) of new sequences. Default: min(4096, the model's training context). */
  contextSize?: number;
  /** Element type of the KV cache. Default: `'F16'`. */
  kvCacheType?: KvCacheType;
  /** Aborts the load; everything mapped so far is released and the promise rejects with `AbortError`. */
  signal?: AbortSignal;
  /** Called with the load progress, from 0 to 1. */
  onProgress?: (progress: number) => void;
  /**
   * Generations (`generate`, chat `send`) that run at once; the engine merges their tokens into
   * shared forward passes. Further ones wait in a first-come queue (an abort while waiting
   * removes one). Default `16`.
   */
  maxConcurrency?: number;
  /**
   * Bytes of KV rows the prefix cache keeps: prompts' leading tokens (a shared system prompt, a
   * repeated request) are evaluated once and copied into later sequences that start the same way
   * (`usage.cachedInputTokens`). Least recently used blocks go first; `0` turns it off.
   * Default `512 MiB`.
   */
  prefixCacheSize?: number;
  /**
   * Where the model runs. `'auto'`: on a CUDA GPU when this build of node-moe has the CUDA
   * backend, an NVIDIA driver and device answer (probed once per process, in a child process) and
   * the model fits the device's free memory (shrinking the placement as `experts` and `gpuLayers`
   * describe); otherwise on the CPU, with the reason in `model.info.backend.reason`. `'cuda'`: on
   * the GPU exactly as `gpuLayers` / `experts` say, or reject with `GpuUnavailableError` (no CUDA)
   * or `OutOfMemoryError` (does not fit; the message names what would). `false`: the CPU, no probe.
   * Default `'auto'`.
   */
  gpu?: GpuOption;
  /**
   * Layers on the GPU, counted from the last (as llama.cpp's `n_gpu_layers`); the output head goes
   * with them, the rest run on the CPU. Values above the model's block count mean all. With
   * `gpu: 'auto'` an upper bound the planner may lower to fit. Ignored with `gpu: false`.
   * Default: all layers.
   */
  gpuLayers?: number;
  /**
   * Where the routed experts of GPU layers go. `'gpu'`: with their layer. `'cpu'`: they stay in
   * (memory-mapped) CPU memory and run on the CPU kernels while the GPU does attention and shared
   * experts: a model far larger than the GPU runs with little device memory. A number N: the last
   * N MoE layers keep theirs on the GPU, earlier ones use the CPU (N above the MoE layers: all).
   * With `gpu: 'auto'` an upper bound: experts of the first layers move to the CPU first when the
   * model does not fit. Ignored with `gpu: false` and for dense models. Default `'gpu'`.
   */
  experts?: ExpertsOption;
}

/** What a loaded model is. */
export interface ModelInfo {
  /** `general.architecture`, e.g. `'qwen3moe'`. */
  architecture: string;
  /** `general.name`, or `''`. */
  name: string;
  vocabSize: number;
  /** Training context length. */
  contextLength: number;
  blockCount: number;
  embeddingLength: number;
  /** Routed experts per MoE layer (0 for dense models). */
  expertCount: number;
  /** Experts each token is routed to. */
  expertUsedCount: number;
  sharedExpertCount: number;
  /** Every weight of the model. */
  parameterCount: number;
  /** Weights one token uses: dense parts, routers, shared experts and `expertUsedCount` routed experts per MoE layer. */
  activeParameterCount: number;
  /**
   * KV-cache bytes one more token adds to a sequence (at the load's `kvCacheType`). Sliding-window
   * layers, which keep a fixed ring of recent tokens, are not counted. MLA models (deepseek2) store
   * one compressed row per layer: `(kv_lora_rank + rope dims) × 2` bytes at F16.
   */
  kvBytesPerToken: number;
  /** `general.file_type`, or 0. */
  fileType: number;
  /** Bytes of tensor data. */
  sizeBytes: number;
  /** Where the model runs and why: `{ kind: 'cpu' | 'cuda', reason, device?, placement? }`. */
  backend: BackendInfo;
}

export interface CreateSequenceOptions {
  /** Tokens this sequence can hold. Default: the model's `contextSize` load option. */
  contextSize?: number;
}

export interface EvaluateOptions {
  /** Return the logits after every token (`n_tokens * vocabSize` values) instead of only the last. Default `false`. */
  allLogits?: boolean;
  /** Aborts between layers; the sequence keeps what was evaluated before the abort. */
  signal?: AbortSignal;
}

function cancelFlagFor(signal: AbortSignal | undefined): { flag?: NativeCancelFlag; done: () => void } {
  if (!signal) return { done: () => {} };
  signal.throwIfAborted();
  const flag = loadBinding().createCancelFlag();
  const onAbort = () => flag.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  return { flag, done: () => signal.removeEventListener('abort', onAbort) };
}

function translate(error: unknown, signal?: AbortSignal, path?: string): unknown {
  const e = translateNativeError(error, path === undefined ? {} : { path });
  if (e instanceof AbortError && signal?.aborted) return new AbortError(e.message, { cause: signal.reason });
  return e;
}

/** A token sequence with its own KV cache. Evaluations of one sequence run in call order. */
export class Sequence {
  #native: NativeSequence | undefined;
  #model: Model;
  #length = 0;
  #history: number[] = [];
  #queue: Promise<unknown> = Promise.resolve();
  #pending = 0;
  #cancelAll = new Set<NativeCancelFlag>();

  /** @internal */
  constructor(model: Model, native: NativeSequence) {
    this.#model = model;
    this.#native = native;
  }

  /** Tokens in the cache. */
  get length(): number {
    return this.#length;
  }

  /** The token ids in the cache, oldest first. */
  get tokens(): readonly number[] {
    return this.#history;
  }

  get contextSize(): number {
    return this.#live().contextSize();
  }

  /** Bytes this sequence's KV cache holds allocated (its pages are committed as they are written). */
  get kvCacheBytes(): number {
    return this.#live().cacheBytes();
  }

  get disposed(): boolean {
    return this.#native === undefined;
  }

  #live(): NativeSequence {
    if (!this.#native) throw new ModelDisposedError('the sequence was disposed');
    return this.#native;
  }

  /**
   * Appends `tokens` and returns the logits after the last one (`Float32Array(vocabSize)`), or after
   * every one with `allLogits`. Evaluating `[a, b, c]` then `[d]` equals evaluating `[a, b, c, d]`.
   * A token outside the vocabulary is a `RangeError`; going past `contextSize` a
   * `ContextOverflowError`; in both cases nothing is evaluated.
   */
  evaluate(tokens: ArrayLike<number>, options: EvaluateOptions = {}): Promise<Float32Array> {
    return this.#enqueue(tokens, options.signal, async (native, ids, cancel) => {
      const { logits, length } = await native.evaluate(ids, options.allLogits === true, cancel);
      this.#setLength(length, ids);
      return logits;
    });
  }

  /**
   * Appends `tokens`, runs the forward pass and picks the next token with `sampler` from the last
   * logits, natively (the logits never reach JS). The picked token is not appended. Used by
   * {@link Model.generate}.
   * @internal
   */
  _step(
    tokens: ArrayLike<number>,
    sampler: NativeSampler,
    signal?: AbortSignal,
    grammar?: NativeGrammarMatcher,
  ): Promise<{ token: number; probability: number; grammarComplete?: boolean; grammarCanContinue?: boolean }> {
    return this.#enqueue(tokens, signal, async (native, ids, cancel) => {
      const { length, ...result } = await native.step(ids, sampler, cancel, grammar);
      this.#setLength(length, ids);
      return result;
    });
  }

  // The cache now holds `length` tokens: the ones before plus (some of) `appended`.
  #setLength(length: number, appended: Int32Array): void {
    const before = this.#length;
    for (let i = 0; before + i < length && i < appended.length; i++) this.#history[before + i] = appended[i]!;
    this.#history.length = length;
    this.#length = length;
  }

  // Runs one native job on this sequence after the ones before it, with the token checks, abort
  // wiring and length bookkeeping every job needs.
  #enqueue<T>(
    tokens: ArrayLike<number>,
    signal: AbortSignal | undefined,
    job: (native: NativeSequence, ids: Int32Array, cancel: NativeCancelFlag) => Promise<T>,
  ): Promise<T> {
    const native = this.#live();
    const ids = tokens instanceof Int32Array ? tokens : Int32Array.from(tokens as ArrayLike<number>);
    const vocab = this.#model.info.vocabSize;
    for (const id of ids) {
      if (id < 0 || id >= vocab) return Promise.reject(new RangeError(`token ${id} is outside the vocabulary (size ${vocab})`));
    }
    this.#pending++;
    const run = async () => {
      let done = () => {};
      let internal: NativeCancelFlag | undefined;
      try {
        const cancel = cancelFlagFor(signal);
        done = cancel.done;
        internal = cancel.flag ?? loadBinding().createCancelFlag();
        this.#cancelAll.add(internal);
        if (!this.#native) throw new ModelDisposedError('the sequence was disposed');
        return await job(native, ids, internal!).catch((e: unknown) => {
          throw translate(e, signal);
        });
      } catch (error) {
        if (error instanceof AbortError) this.#setLength(native.length(), ids);
        if (error instanceof AbortError && !this.#native) throw new ModelDisposedError('the sequence was disposed during evaluation', { cause: error });
        throw error;
      } finally {
        if (internal) this.#cancelAll.delete(internal);
        done();
        this.#pending--;
      }
    };
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => {});
    return result;
  }

  /**
   * Tokens routed to each expert of each layer since the last call (`[layer][expert]`; a token
   * counts once per expert it was routed to); `undefined` for dense models.
   * @internal
   */
  _takeExpertUsage(): number[][] | undefined {
    const flat = this.#live().takeExpertUsage();
    if (!flat) return undefined;
    const experts = this.#model.info.expertCount;
    const layers: number[][] = [];
    for (let l = 0; l < flat.length / experts; l++) layers.push(Array.from(flat.subarray(l * experts, (l + 1) * experts)));
    return layers;
  }

  /**
   * Writes the sequence (its tokens and every cached KV row) to a file that {@link loadState} of a
   * sequence of the same model and KV cache type restores. `metadata` is stored alongside. Waits
   * for running evaluations of this sequence.
   */
  saveState(path: string, options: { metadata?: string } = {}): Promise<void> {
    return this.#serial((native) => native.saveState(path, Int32Array.from(this.#history), options.metadata ?? ''));
  }

  /**
   * Replaces the sequence's contents with a file written by {@link saveState}; resolves with the
   * metadata saved with it. A file of another model or KV type, a truncated one or one that does
   * not fit the context is rejected (the sequence is then unchanged).
   */
  loadState(path: string): Promise<{ metadata: string }> {
    return this.#serial(async (native) => {
      const { tokens, metadata, length } = await native.loadState(path);
      this.#history = Array.from(tokens);
      this.#length = length;
      return { metadata };
    });
  }

  /** @internal Extends the sequence from the model's prefix cache; resolves with the new length. */
  _restorePrefix(tokens: Int32Array): Promise<number> {
    return this.#serial(async (native) => {
      const length = await native.restorePrefix(tokens);
      this.#setLength(length, tokens.subarray(this.#length));
      return length;
    });
  }

  /** @internal Adds the prompt's blocks this sequence holds to the model's prefix cache. */
  _storePrefix(tokens: Int32Array): Promise<number> {
    return this.#serial((native) => native.storePrefix(tokens));
  }

  // Runs a native job after the ones before it (no token checks, no cancellation).
  #serial<T>(job: (native: NativeSequence) => Promise<T>): Promise<T> {
    let native: NativeSequence;
    try {
      native = this.#live();
    } catch (error) {
      return Promise.reject(error);
    }
    this.#pending++;
    const run = async () => {
      try {
        if (!this.#native) throw new ModelDisposedError('the sequence was disposed');
        return await job(native).catch((e: unknown) => {
          throw translateNativeError(e);
        });
      } finally {
        this.#pending--;
      }
    };
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => {});
    return result;
  }

  /** Drops cached tokens from position `n` on. Throws if an evaluation of this sequence is running. */
  truncate(n: number): void {
    const native = this.#live();
    if (this.#pending > 0) throw new Error('cannot truncate a sequence while it is being evaluated');
    this.#length = native.truncate(n);
    this.#history.length = this.#length;
  }

  /** Empties the sequence (same as `truncate(0)`). */
  clear(): void {
    this.truncate(0);
  }

  /** Cancels a running evaluation, waits for it and frees the sequence's cache. */
  async dispose(): Promise<void> {
    if (!this.#native) return;
    for (const flag of this.#cancelAll) flag.cancel();
    const native = this.#native;
    this.#native = undefined;
    await this.#queue;
    native.dispose();
    this.#model._forget(this);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/** A loaded model. Dispose it (or use `await using`) to unmap its weights. */
export class Model {
  #native: NativeModel | undefined;
  #tokenizer: Tokenizer;
  #metadata: ChatMetadata;
  #sequences = new Set<Sequence>();
  #maxConcurrency: number;
  #running = 0;
  #waiting: { start: () => void; cancel: (reason: unknown) => void }[] = [];
  /** @internal Compiled grammars and the token set of structured output. */
  readonly _grammars: ModelGrammars;
  /** What the model is. */
  readonly info: ModelInfo;

  /** @internal */
  constructor(native: NativeModel, tokenizer: Tokenizer, metadata: ChatMetadata, backend: BackendInfo, maxConcurrency = 16) {
    this.#native = native;
    this.#maxConcurrency = maxConcurrency;
    this._grammars = new ModelGrammars(tokenizer);
    this.#tokenizer = tokenizer;
    this.#metadata = metadata;
    // The native info also carries engine settings (default context, threads) that are not model facts.
    const { defaultContextSize: _context, threads: _threads, ...info }: NativeModelInfo = native.info();
    this.info = Object.freeze({ ...info, backend });
  }

  get disposed(): boolean {
    return this.#native === undefined;
  }

  /** The model's tokenizer. */
  get tokenizer(): Tokenizer {
    return this.#tokenizer;
  }

  #live(): NativeModel {
    if (!this.#native) throw new ModelDisposedError();
    return this.#native;
  }

  /** Token ids of `text`. Special-token text is not parsed as special unless `special: true`. */
  tokenize(text: string, options?: TokenizeOptions): Int32Array {
    this.#live();
    return this.#tokenizer.tokenize(text, options);
  }

  /** Text of `tokens`. */
  detokenize(tokens: ArrayLike<number>, options?: { special?: boolean }): string {
    this.#live();
    return this.#tokenizer.detokenize(tokens, options);
  }

  /**
   * Generates text after `prompt` (text, or token ids), sampling natively token by token. The
   * result is an `AsyncIterable<string>` of UTF-8-safe deltas, with `fullStream`, `text` and
   * `final` (text, finish reason, usage, timings).
   */
  generate<const S extends JsonSchema>(
    prompt: string | ArrayLike<number>,
    options: GenerateOptions & { responseFormat: { type: 'json_schema'; schema: S } },
  ): Generation<GenerationPart, GenerationResult & { object: InferSchema<S> | undefined }>;
  generate(prompt: string | ArrayLike<number>, options?: GenerateOptions): Generation;
  generate(prompt: string | ArrayLike<number>, options?: GenerateOptions): Generation {
    this.#live();
    return generate(this, prompt, options);
  }

  /**
   * A conversation that keeps its history and KV cache between turns: `chat.send('Hi!')` renders
   * the model's chat template, generates the reply and streams text, reasoning and tool-call parts.
   */
  createChat(options: ChatOptions = {}): Chat {
    this.#live();
    return new Chat(this, this.#metadata, options);
  }

  /** A new, empty sequence with its own KV cache. */
  createSequence(options: CreateSequenceOptions = {}): Sequence {
    const native = this.#live();
    const size = options.contextSize ?? 0;
    if (!Number.isInteger(size) || size < 0) throw new RangeError(`contextSize must be a positive integer, got ${size}`);
    let handle: NativeSequence;
    try {
      handle = native.createSequence(size);
    } catch (error) {
      throw translateNativeError(error);
    }
    const sequence = new Sequence(this, handle);
    this.#sequences.add(sequence);
    return sequence;
  }

  /** Generations running now, and waiting for a slot (see `maxConcurrency`). */
  get activeGenerations(): { running: number; waiting: number } {
    return { running: this.#running, waiting: this.#waiting.length };
  }

  /**
   * Waits for a generation slot; resolves with its release function. Rejects with an AbortError
   * when `signal` aborts while waiting, with ModelDisposedError when the model is disposed.
   * @internal
   */
  _acquireSlot(signal?: AbortSignal): Promise<() => void> {
    this.#live();
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#running--;
      const next = this.#waiting.shift();
      if (next) next.start();
    };
    if (this.#running < this.#maxConcurrency && this.#waiting.length === 0) {
      this.#running++;
      return Promise.resolve(release);
    }
    return new Promise((resolve, reject) => {
      const entry = {
        start: () => {
          signal?.removeEventListener('abort', onAbort);
          this.#running++;
          resolve(release);
        },
        cancel: (reason: unknown) => {
          signal?.removeEventListener('abort', onAbort);
          reject(reason);
        },
      };
      const onAbort = () => {
        const i = this.#waiting.indexOf(entry);
        if (i >= 0) this.#waiting.splice(i, 1);
        entry.cancel(new AbortError('the generation was aborted while waiting for a slot', { cause: signal?.reason }));
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiting.push(entry);
    });
  }

  /** What the prefix cache holds and how often it helped (see the `prefixCacheSize` load option). */
  get prefixCacheStats(): PrefixCacheStats {
    return this.#live().prefixCacheStats();
  }

  /**
   * How the engine merged requests into forward passes so far (tests and benchmarks).
   * @internal
   */
  _schedulerStats(): { passes: number; rows: number; mergedPasses: number; maxRequests: number } {
    return this.#live().schedulerStats();
  }

  /** @internal */
  _forget(sequence: Sequence): void {
    this.#sequences.delete(sequence);
  }

  /** Cancels running evaluations, disposes every sequence and releases the weights. */
  async dispose(): Promise<void> {
    if (!this.#native) return;
    const native = this.#native;
    this.#native = undefined;
    for (const waiting of this.#waiting.splice(0)) waiting.cancel(new ModelDisposedError('the model was disposed before the generation started'));
    await Promise.all([...this.#sequences].map((s) => s.dispose()));
    native.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/**
 * Loads a GGUF model. Parsing, validation and preparation run off the JS thread. Where it runs
 * (CPU or CUDA, see the `gpu` option) is in `model.info.backend`.
 */
export async function loadModel(path: string, options: LoadModelOptions = {}): Promise<Model> {
  const { threads, contextSize, kvCacheType, signal, onProgress, maxConcurrency, prefixCacheSize } = options;
  const gpuRequest = parseGpuOptions(options);
  if (prefixCacheSize !== undefined && (!Number.isSafeInteger(prefixCacheSize) || prefixCacheSize < 0)) {
    throw new RangeError(`prefixCacheSize must be a byte count >= 0, got ${prefixCacheSize}`);
  }
  if (maxConcurrency !== undefined && (!Number.isInteger(maxConcurrency) || maxConcurrency < 1)) {
    throw new RangeError(`maxConcurrency must be a positive integer, got ${maxConcurrency}`);
  }
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 1 || threads > 1024)) {
    throw new RangeError(`threads must be an integer from 1 to 1024, got ${threads}`);
  }
  if (contextSize !== undefined && (!Number.isInteger(contextSize) || contextSize < 1)) {
    throw new RangeError(`contextSize must be a positive integer, got ${contextSize}`);
  }
  if (kvCacheType !== undefined && !['F16', 'F32', 'Q8_0'].includes(kvCacheType)) {
    throw new RangeError(`kvCacheType must be 'F16', 'F32' or 'Q8_0', got ${String(kvCacheType)}`);
  }
  // Before anything is read: 'cuda' without CUDA rejects here with GpuUnavailableError.
  const decision = await decideBackend(gpuRequest);
  const { flag, done } = cancelFlagFor(signal);
  try {
    const infoPromise = readGgufInfo(path);
    infoPromise.catch(() => {}); // awaited below; if the native load fails first, its error is the one to report
    const gpu = decision.kind === 'cuda' ? { gpu: nativeGpuRequest(gpuRequest, decision.device) } : {};
    const native = await loadBinding()
      .loadModel(path, { threads, contextSize, kvCacheType, ...(prefixCacheSize === undefined ? {} : { prefixCacheSize }), ...gpu }, onProgress, flag)
      .catch((e: unknown) => {
        throw translate(e, signal, path);
      });
    let tokenizer: Tokenizer;
    let metadata: ChatMetadata;
    try {
      metadata = (await infoPromise).metadata as ChatMetadata;
      tokenizer = createTokenizer(metadata as never);
    } catch (error) {
      native.dispose();
      throw error;
    }
    return new Model(native, tokenizer, metadata, backendInfo(decision, native.backend()), maxConcurrency);
  } finally {
    done();
  }
}
