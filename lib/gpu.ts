/**
 * Where a model runs: the CPU or a CUDA GPU. This module makes the decisions that need no model:
 * is the loaded addon a CUDA build, does a driver answer and which device it has (probed once per
 * process, in a child process: lib/gpu-probe.ts). The loader (cpp/gpu/select.cc) then plans the
 * model's memory on that device and starts the CUDA backend, or explains why it did not.
 */
import { bindingPath, cudaVariant, gpuOptedOut, loadBinding } from './binding.js';
import { GpuUnavailableError } from './errors.js';
import { probeInChild, type GpuDevice, type ProbeOutcome } from './gpu-probe.js';
import type { NativeBackend, NativeGpuRequest } from './native-types.js';

export type { GpuDevice } from './gpu-probe.js';

/** `'auto'`: CUDA when available and the model fits, else the CPU; `'cuda'`: CUDA or an error; `false`: the CPU. */
export type GpuOption = 'auto' | 'cuda' | false;

/** Where routed experts go: with their layers on the GPU, in CPU memory, or on the GPU for this many (the last) MoE layers. */
export type ExpertsOption = 'gpu' | 'cpu' | number;

/** What a tensor is for, as the planner sees it. */
export type TensorRole = 'token_embd' | 'output' | 'norm' | 'attention' | 'shared_expert' | 'routed_experts' | 'dense_ffn' | 'router';

/** One layer of a placement. */
export interface PlacementLayer {
  /** Attention, norms, router, shared expert / dense FFN and KV cache are on the GPU. */
  gpu: boolean;
  /** Where its routed experts are; `'none'` for a dense layer. */
  experts: 'gpu' | 'cpu' | 'none';
  /** Weight bytes on the GPU. */
  gpuBytes: number;
  /** Weight bytes computed from CPU memory. */
  cpuBytes: number;
  /** KV-cache bytes (on the layer's device) for the planned context. */
  kvBytes: number;
}

/** How a model's memory is split between the GPU and the CPU. All sizes in bytes. */
export interface PlacementSummary {
  /** The GPU part fits in `availableBytes`. */
  fits: boolean;
  /** One line: what is where, or why nothing fits. */
  summary: string;
  blockCount: number;
  /** Layers on the GPU, the last ones (`blockCount - gpuLayers` … `blockCount - 1`). */
  gpuLayers: number;
  /** Layers with routed experts. */
  moeLayers: number;
  /** MoE layers whose routed experts are on the GPU (the last ones). */
  expertLayersOnGpu: number;
  /** The output head (and output norm) is on the GPU. */
  outputOnGpu: boolean;
  /** What the GPU must hold: weights + KV cache + compute scratch. */
  gpuBytes: number;
  weightsGpuBytes: number;
  /** Weights the CPU computes from (memory-mapped; not copied). */
  weightsCpuBytes: number;
  kvGpuBytes: number;
  kvCpuBytes: number;
  /** Estimated device scratch of one forward chunk. */
  computeBytes: number;
  /** The device's free memory when probed. */
  freeMemory: number;
  /** Kept free: 5% of the device's memory + 512 MiB. */
  reserveBytes: number;
  /** `freeMemory - reserveBytes`. */
  availableBytes: number;
  layers: PlacementLayer[];
}

/** Where a loaded model runs (`model.info.backend`). */
export interface BackendInfo {
  kind: 'cpu' | 'cuda';
  /** Why, in one line: e.g. `'no NVIDIA driver (libcuda.so.1 not found)'`, or the placement on the GPU. */
  reason: string;
  /** The CUDA device that was used, or considered and not used. */
  device?: GpuDevice;
  /** The memory plan, when a device was planned for (with `kind: 'cpu'`: the plan that could not be used). */
  placement?: PlacementSummary;
}

/** What {@link getGpuInfo} reports. */
export interface GpuInfo {
  /** The loaded addon was compiled with the CUDA backend. */
  cudaBuild: boolean;
  /** node-moe can use CUDA here: a CUDA build, a driver and at least one device. */
  available: boolean;
  /** Why not, in one line (empty when available). */
  reason: string;
  /** The driver's CUDA version, e.g. `'13.0'`, when a driver answered. */
  driverVersion?: string;
  /** The devices the driver reports (also with a CPU build, for diagnostics). */
  devices: GpuDevice[];
}

/** Validated GPU options. @internal */
export interface GpuRequest {
  mode: 'off' | 'auto' | 'cuda';
  gpuLayers?: number;
  experts?: 'gpu' | 'cpu' | number;
}

function show(value: unknown): string {
  return typeof value === 'string' ? `'${value}'` : String(value);
}

/** Checks `gpu`, `gpuLayers` and `experts`; throws RangeError naming the allowed values. @internal */
export function parseGpuOptions(options: { gpu?: unknown; gpuLayers?: unknown; experts?: unknown }): GpuRequest {
  const { gpu = 'auto', gpuLayers, experts } = options;
  if (gpu !== 'auto' && gpu !== 'cuda' && gpu !== false) {
    throw new RangeError(`gpu must be 'auto', 'cuda' or false, got ${show(gpu)}`);
  }
  const request: GpuRequest = { mode: gpu === false ? 'off' : gpu };
  if (gpuLayers !== undefined) {
    if (typeof gpuLayers !== 'number' || !Number.isSafeInteger(gpuLayers) || gpuLayers < 0) {
      throw new RangeError(`gpuLayers must be an integer >= 0, got ${show(gpuLayers)}`);
    }
    if (gpu === 'cuda' && gpuLayers === 0) {
      throw new RangeError("gpuLayers: 0 with gpu: 'cuda' puts nothing on the GPU; use gpu: false to run on the CPU");
    }
    request.gpuLayers = gpuLayers;
  }
  if (experts !== undefined) {
    const ok = experts === 'gpu' || experts === 'cpu' || (typeof experts === 'number' && Number.isSafeInteger(experts) && experts >= 0);
    if (!ok) throw new RangeError(`experts must be 'gpu', 'cpu' or a number of layers >= 0, got ${show(experts)}`);
    request.experts = experts as 'gpu' | 'cpu' | number;
  }
  return request;
}

function noCudaBuildReason(): string {
  return (
    `this build of node-moe has no CUDA backend (install the CUDA variant @node-moe/${process.platform}-${process.arch}-cuda, ` +
    'or build one from source with npm run build:cuda and point NODE_MOE_BINDING at it)'
  );
}

// Per process: one probe per addon file (the answer does not change while the process lives,
// except free memory, which the CUDA backend checks again before allocating).
const probes = new Map<string, Promise<ProbeOutcome>>();
let testOverride: ProbeOutcome | undefined;

/** The CUDA situation of the loaded addon. Probes (once) only a CUDA build unless `always`. */
async function cudaStatus(always = false): Promise<ProbeOutcome> {
  if (testOverride) return testOverride;
  const binding = loadBinding();
  const variant = cudaVariant();
  if (variant && (variant.used || !binding.cudaBuild)) {
    // The test load that chose the addon already probed (and found no device, if it was rejected).
    return { ...variant.probe, cudaBuild: binding.cudaBuild };
  }
  if (!binding.cudaBuild && !always) {
    return { cudaBuild: false, ok: false, reason: noCudaBuildReason(), driverVersion: 0, devices: [] };
  }
  const file = bindingPath();
  let probe = probes.get(file);
  if (!probe) {
    probe = probeInChild(file);
    probes.set(file, probe);
  }
  const outcome = await probe;
  return { ...outcome, cudaBuild: binding.cudaBuild };
}

/** What node-moe can use here. */
function availability(s: ProbeOutcome): { ok: true; device: GpuDevice } | { ok: false; reason: string } {
  if (!s.cudaBuild) {
    return { ok: false, reason: s.reason && cudaVariant() ? s.reason : noCudaBuildReason() };
  }
  if (gpuOptedOut() && !testOverride) return { ok: false, reason: `NODE_MOE_GPU=${process.env.NODE_MOE_GPU} keeps node-moe on the CPU` };
  if (!s.ok) return { ok: false, reason: s.reason };
  // The first device: CUDA_VISIBLE_DEVICES chooses which one that is.
  const device = s.devices[0];
  return device ? { ok: true, device } : { ok: false, reason: 'no CUDA device found' };
}

/**
 * Whether CUDA can be used, and the driver's devices. The driver is probed in a child process
 * (once per process), so a broken driver cannot crash the caller. With a CPU build of the addon,
 * `available` is false and the devices are still listed.
 */
export async function getGpuInfo(): Promise<GpuInfo> {
  const s = await cudaStatus(true);
  const a = availability(s);
  const v = s.driverVersion;
  return {
    cudaBuild: s.cudaBuild,
    available: a.ok,
    reason: a.ok ? '' : a.reason,
    ...(v > 0 ? { driverVersion: `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}` } : {}),
    devices: s.devices,
  };
}

/** The decision lib/ can make before loading. @internal */
export type BackendDecision = { kind: 'cpu'; reason: string } | { kind: 'cuda'; device: GpuDevice };

/**
 * CPU or a CUDA device for a load. `gpu: 'cuda'` without CUDA throws GpuUnavailableError before
 * anything is loaded. @internal
 */
export async function decideBackend(request: GpuRequest): Promise<BackendDecision> {
  if (request.mode === 'off') return { kind: 'cpu', reason: 'the CPU was asked for (gpu: false)' };
  if (request.gpuLayers === 0) return { kind: 'cpu', reason: 'gpuLayers: 0 keeps every layer on the CPU' };
  const a = availability(await cudaStatus());
  if (a.ok) return { kind: 'cuda', device: a.device };
  if (request.mode === 'cuda') throw new GpuUnavailableError(a.reason);
  return { kind: 'cpu', reason: a.reason };
}

/** The `gpu` load option of the native loader for a CUDA decision. @internal */
export function nativeGpuRequest(request: GpuRequest, device: GpuDevice): NativeGpuRequest {
  return {
    mode: request.mode === 'cuda' ? 'cuda' : 'auto',
    device: device.index,
    deviceName: device.name,
    freeMemory: device.freeMemory,
    totalMemory: device.totalMemory,
    ...(request.gpuLayers === undefined ? {} : { gpuLayers: request.gpuLayers }),
    ...(request.experts === undefined ? {} : { experts: request.experts }),
  };
}

/** `model.info.backend` from the decision and what the native loader did with it. @internal */
export function backendInfo(decision: BackendDecision, native: NativeBackend): BackendInfo {
  if (decision.kind === 'cpu') return Object.freeze({ kind: 'cpu', reason: decision.reason });
  return Object.freeze({
    kind: native.kind,
    reason: native.reason,
    device: Object.freeze({ ...decision.device }),
    ...(native.placement ? { placement: Object.freeze(native.placement) } : {}),
  });
}

/**
 * Replaces the probe's answer (tests: a CUDA device on a machine without one, to drive the
 * loader's planning and its backend seam); `undefined` restores the real probe. @internal
 */
export function _setCudaProbeForTesting(outcome: Partial<ProbeOutcome> & { devices: GpuDevice[] } | undefined): void {
  testOverride = outcome && { cudaBuild: true, ok: outcome.devices.length > 0, reason: '', driverVersion: 13000, ...outcome };
}
