/**
 * The shape of the native addon's exports (cpp/napi/). Only lib/ talks to these; users get the
 * typed wrappers in the other modules.
 */
import type { GpuDevice } from './gpu-probe.js';
import type { PlacementSummary, TensorRole } from './gpu.js';

export interface NativeGgufTensorInfo {
  name: string;
  type: string;
  typeId: number;
  shape: number[];
  offset: number;
  fileOffset: number;
  bytes: number;
}

export interface NativeGgufInfo {
  version: number;
  alignment: number;
  dataOffset: number;
  fileSize: number;
  metadata: Record<string, unknown>;
  metadataTypes: Record<string, string>;
  tensors: NativeGgufTensorInfo[];
}

export interface NativeTypeTraits {
  id: number;
  name: string;
  blockSize: number;
  typeSize: number;
  canDequantize: boolean;
  canQuantize: boolean;
}

export interface NativeCpuInfo {
  arch: string;
  best: string;
  active: string;
  supported: string[];
  features: Record<string, boolean>;
}

export interface NativeModelInfo {
  architecture: string;
  name: string;
  vocabSize: number;
  contextLength: number;
  blockCount: number;
  embeddingLength: number;
  expertCount: number;
  expertUsedCount: number;
  sharedExpertCount: number;
  parameterCount: number;
  activeParameterCount: number;
  kvBytesPerToken: number;
  fileType: number;
  sizeBytes: number;
  defaultContextSize: number;
  threads: number;
}

/** Set by JS, polled by native work (model load, evaluation). */
export interface NativeCancelFlag {
  cancel(): void;
}

/** A native sampler (cpp/sampling): picks tokens from logits; remembers recent tokens for penalties. */
export interface NativeSampler {
  accept(tokens: Int32Array): void;
  reset(): void;
}

export interface NativeSamplerParams {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  frequencyPenalty: number;
  presencePenalty: number;
  penaltyLastN: number;
  seed: number;
  /** [token, bias] pairs. */
  logitBias: [number, number][];
}

export interface NativeSequence {
  evaluate(tokens: Int32Array, allLogits: boolean, cancel?: NativeCancelFlag): Promise<{ logits: Float32Array; length: number }>;
  step(
    tokens: Int32Array,
    sampler: NativeSampler,
    cancel?: NativeCancelFlag,
    grammar?: NativeGrammarMatcher,
  ): Promise<{ token: number; probability: number; length: number; grammarComplete?: boolean; grammarCanContinue?: boolean }>;
  truncate(n: number): number;
  length(): number;
  contextSize(): number;
  cacheBytes(): number;
  /** Tokens routed to each expert since the last call, [blockCount * expertCount]; undefined for dense models. */
  takeExpertUsage(): Uint32Array | undefined;
  restorePrefix(tokens: Int32Array): Promise<number>;
  storePrefix(tokens: Int32Array): Promise<number>;
  saveState(path: string, tokens: Int32Array, metadata: string): Promise<void>;
  loadState(path: string): Promise<{ tokens: Int32Array; metadata: string; length: number }>;
  dispose(): void;
}

/** What the model's prefix cache holds and how often it helped. */
export interface PrefixCacheStats {
  /** Requests that looked for a cached prefix. */
  lookups: number;
  /** Lookups that found one. */
  hits: number;
  /** Prompt tokens taken from the cache instead of evaluated. */
  restoredTokens: number;
  /** Blocks held now (each `blockTokens` tokens of KV rows). */
  blocks: number;
  /** Bytes held now. */
  bytes: number;
  /** Blocks dropped to stay within `prefixCacheSize`. */
  evictedBlocks: number;
  blockTokens: number;
}

/** How the engine thread merged requests into forward passes so far. */
export interface NativeSchedulerStats {
  passes: number;
  rows: number;
  mergedPasses: number;
  maxRequests: number;
}

/** Where the loader put a model (cpp/napi/gpu_binding.cc backend_to_js). */
export interface NativeBackend {
  kind: 'cpu' | 'cuda';
  /** Empty when no GPU request reached the loader (lib/ then has the reason). */
  reason: string;
  placement?: PlacementSummary;
}

export interface NativeModel {
  info(): NativeModelInfo;
  backend(): NativeBackend;
  createSequence(contextSize: number): NativeSequence;
  schedulerStats(): NativeSchedulerStats;
  prefixCacheStats(): PrefixCacheStats;
  dispose(): void;
}

export interface NativeLoadOptions {
  threads?: number;
  contextSize?: number;
  kvCacheType?: string;
  prefixCacheSize?: number;
  /** A probed CUDA device to plan the model onto (absent: the CPU, decided in lib/gpu.ts). */
  gpu?: NativeGpuRequest;
}

export interface NativeGpuRequest {
  mode: 'auto' | 'cuda';
  device: number;
  deviceName: string;
  freeMemory: number;
  totalMemory: number;
  /** Bytes kept free on the device; default 5% of totalMemory + 512 MiB. */
  reserveBytes?: number;
  gpuLayers?: number;
  experts?: 'gpu' | 'cpu' | number;
}

/** The driver probe's answer (cpp/gpu/cuda_driver.h CudaProbe). */
export interface NativeCudaProbe {
  ok: boolean;
  reason: string;
  driverVersion: number;
  devices: GpuDevice[];
}

/** One tensor of a planPlacement input; layer and role default to what the GGUF name says. */
export interface NativePlacementTensor {
  name: string;
  bytes: number;
  layer?: number;
  role?: TensorRole;
}

/** planPlacement's input (cpp/runtime/placement.h PlacementInput + PlacementOptions). */
export interface NativePlacementInput {
  tensors: NativePlacementTensor[];
  blockCount: number;
  /** [blockCount] KV-cache bytes of each layer. */
  kvBytes?: number[];
  computeBytes?: number;
  freeMemory: number;
  totalMemory?: number;
  reserveBytes?: number;
  /** 'auto' (default): shrink until it fits; 'cuda': exactly these options. */
  mode?: 'auto' | 'cuda';
  gpuLayers?: number;
  experts?: 'gpu' | 'cpu' | number;
}

export interface NativePlacement extends PlacementSummary {
  tensors: (Required<NativePlacementTensor> & { device: 'gpu' | 'cpu' })[];
  /** The out-of-memory message gpu: 'cuda' gives this plan, when it does not fit. */
  error?: string;
}

/** A compiled grammar (lib/grammar's IR, parsed natively). */
export type NativeGrammar = object;

/** A model's token bytes for grammar masks. */
export interface NativeTokenSet {
  build(bytes: Uint8Array, offsets: Uint32Array, special: Uint8Array, eog: Int32Array): Promise<void>;
  size(): number;
}

/** The grammar state of one constrained generation. */
export interface NativeGrammarMatcher {
  isComplete(): boolean;
  canContinue(): boolean;
  acceptToken(token: number): boolean;
  acceptBytes(bytes: Uint8Array): boolean;
  reset(): void;
}

export interface NativeBinding {
  Grammar: new (ir: Int32Array) => NativeGrammar;
  TokenSet: new () => NativeTokenSet;
  GrammarMatcher: new (grammar: NativeGrammar, tokens: NativeTokenSet) => NativeGrammarMatcher;
  loadModel(path: string, options: NativeLoadOptions, onProgress?: (progress: number) => void, cancel?: NativeCancelFlag): Promise<NativeModel>;
  createCancelFlag(): NativeCancelFlag;
  Sampler: new (params: NativeSamplerParams, vocabSize: number) => NativeSampler;
  napiVersion: number;
  readGgufInfo(path: string): Promise<NativeGgufInfo>;
  readGgufTensor(path: string, name: string, isa?: string): Promise<Float32Array>;
  quantize(typeId: number, data: Float32Array, isa?: string): Promise<Uint8Array>;
  quantizeSync(typeId: number, data: Float32Array, isa?: string): Uint8Array;
  dequantize(typeId: number, data: Uint8Array, count: number, isa?: string): Promise<Float32Array>;
  dequantizeSync(typeId: number, data: Uint8Array, count: number, isa?: string): Float32Array;
  cpuInfo(): NativeCpuInfo;
  typeTraits(): NativeTypeTraits[];
  /** The addon was compiled with NODE_MOE_CUDA (the CUDA variant). */
  cudaBuild: boolean;
  /** Asks the NVIDIA driver for its devices (dlopen; `library` replaces libcuda.so.1). Run it in a child process. */
  probeCuda(library?: string): NativeCudaProbe;
  planPlacement(input: NativePlacementInput): NativePlacement;
}
