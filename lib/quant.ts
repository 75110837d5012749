/**
 * Quantize and dequantize raw tensor data in any ggml block format, with the native kernels
 * (scalar reference, AVX2, AVX-512 or NEON, chosen at run time).
 */
import { loadBinding } from './binding.js';
import { translateNativeError } from './errors.js';
import { ggmlTypeGeometry, type GgmlTypeName } from './ggml-types.js';

/** A CPU kernel level. `scalar` is the portable reference every SIMD kernel is tested against. */
export type CpuKernelLevel = 'scalar' | 'avx2' | 'avx512' | 'neon';

export interface KernelOptions {
  /**
   * Kernel level to run. Default: the best level this CPU supports, or the `NODE_MOE_CPU`
   * environment variable when set. Asking for a level the CPU lacks throws `CpuUnsupportedError`.
   */
  isa?: CpuKernelLevel;
}

export interface CpuInfo {
  /** Architecture the addon was built for (`x64`, `arm64`). */
  arch: string;
  /** Best kernel level this CPU runs. */
  best: CpuKernelLevel;
  /** Level used by default (best, or `NODE_MOE_CPU`). */
  active: CpuKernelLevel;
  /** Every level this CPU runs. */
  supported: CpuKernelLevel[];
  /** Raw feature flags (cpuid bits confirmed by the OS's register-state support). */
  features: Record<string, boolean>;
}

export interface GgmlTypeSupport {
  id: number;
  name: GgmlTypeName;
  blockSize: number;
  typeSize: number;
  /** node-moe can read (dequantize and compute with) tensors of this type. */
  canDequantize: boolean;
  /** node-moe can write tensors of this type (`quantize`, `writeGguf`). */
  canQuantize: boolean;
}

function call<T>(fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    throw translateNativeError(error);
  }
}

/** Encodes `data` as `type` on a native thread. `data.length` must be a multiple of the type's block size. */
export async function quantize(type: GgmlTypeName, data: Float32Array, options: KernelOptions = {}): Promise<Uint8Array> {
  const { id } = ggmlTypeGeometry(type);
  try {
    return await loadBinding().quantize(id, data, options.isa);
  } catch (error) {
    throw translateNativeError(error);
  }
}

/** Like {@link quantize}, on the calling thread: for small inputs only. */
export function quantizeSync(type: GgmlTypeName, data: Float32Array, options: KernelOptions = {}): Uint8Array {
  const { id } = ggmlTypeGeometry(type);
  return call(() => loadBinding().quantizeSync(id, data, options.isa));
}

/** Decodes `count` values of `type` from `bytes` on a native thread. */
export async function dequantize(
  type: GgmlTypeName,
  bytes: Uint8Array,
  count: number,
  options: KernelOptions = {},
): Promise<Float32Array> {
  const { id } = ggmlTypeGeometry(type);
  try {
    return await loadBinding().dequantize(id, bytes, count, options.isa);
  } catch (error) {
    throw translateNativeError(error);
  }
}

/** Like {@link dequantize}, on the calling thread: for small inputs only. */
export function dequantizeSync(type: GgmlTypeName, bytes: Uint8Array, count: number, options: KernelOptions = {}): Float32Array {
  const { id } = ggmlTypeGeometry(type);
  return call(() => loadBinding().dequantizeSync(id, bytes, count, options.isa));
}

/** What the CPU offers and which kernel level node-moe uses. */
export function getCpuInfo(): CpuInfo {
  return call(() => loadBinding().cpuInfo()) as CpuInfo;
}

/** Every ggml type node-moe knows, with what it can do with each. */
export function getGgmlTypeSupport(): GgmlTypeSupport[] {
  return call(() => loadBinding().typeTraits()) as GgmlTypeSupport[];
}
