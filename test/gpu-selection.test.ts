/**
 * Choosing between the CPU and CUDA, checkable on a machine without a GPU: the gpu / gpuLayers /
 * experts options, model.info.backend, GpuUnavailableError and OutOfMemoryError, the driver probe
 * in a child process, and the memory planner (planPlacement) on a Kimi K2-sized tensor list. A
 * stand-in probe answer (_setCudaProbeForTesting) drives the loader's planning and the CUDA
 * backend seam as on a GPU machine: the plan is made from the real file, and the backend's
 * factory says it has no forward pass yet.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { bindingPath, loadBinding } from '../lib/binding.js';
import { probeInChild } from '../lib/gpu-probe.js';
import { _setCudaProbeForTesting } from '../lib/gpu.js';
import { getGpuInfo, GpuUnavailableError, loadModel, OutOfMemoryError, type GpuDevice, type LoadModelOptions } from '../lib/index.js';
import type { NativePlacementTensor } from '../lib/native-types.js';
import { ensureDist, root } from './helpers/build.js';
import { tempDir } from './helpers/tmp.js';
import { TINY, writeTinyMoe } from './helpers/tiny-moe.js';

const GiB = 2 ** 30;
let dir: string;
let qwen: string;
let dense: string;

beforeAll(async () => {
  dir = await tempDir();
  qwen = path.join(dir, 'qwen3moe.gguf');
  dense = path.join(dir, 'llama.gguf');
  await writeTinyMoe(qwen, { arch: 'qwen3moe', weights: 'F32', layers: 3 });
  await writeTinyMoe(dense, { arch: 'llama', weights: 'F32' });
});

afterEach(() => _setCudaProbeForTesting(undefined));

const cudaBuild = () => loadBinding().cudaBuild;

/** A device as the probe reports one. */
function device(totalGiB: number, freeGiB: number): GpuDevice {
  return { index: 0, name: 'Test GPU', totalMemory: totalGiB * GiB, freeMemory: freeGiB * GiB, computeCapability: '9.0' };
}

describe('on this machine (no GPU lent to the test, or a CPU build)', () => {
  it('probeCuda answers with ok:false and a one-line reason when there is no driver', () => {
    const b = loadBinding();
    const missing = b.probeCuda('libnode-moe-no-such-driver.so.1');
    expect(missing).toEqual({ ok: false, reason: 'no NVIDIA driver (libnode-moe-no-such-driver.so.1 not found)', driverVersion: 0, devices: [] });
    const here = b.probeCuda();
    if (!here.ok) expect(here.reason).toMatch(/^(no NVIDIA driver|the NVIDIA driver|cuInit failed|no CUDA device|device \d)/);
    else expect(here.devices.length).toBeGreaterThan(0);
  });

  // Why CUDA is not used here: no CUDA backend in a CPU build; the driver probe's reason in a CUDA
  // build (NODE_MOE_BINDING=build-cuda/...) on a machine without a driver or device.
  const expectedReason = (): RegExp | string | undefined => {
    if (!cudaBuild()) return /^this build of node-moe has no CUDA backend \(install the CUDA variant @node-moe\/.*-cuda/;
    const probe = loadBinding().probeCuda();
    return probe.ok ? undefined : probe.reason;
  };

  it("gpu: 'auto' (the default) loads on the CPU with the reason in model.info.backend", async () => {
    await using model = await loadModel(qwen, { threads: 2 });
    const reason = expectedReason();
    expect(model.info.backend.kind).toBe('cpu');
    if (reason === undefined) {
      // A CUDA build on a GPU machine: planned for the device, and the seam said no (for now).
      expect(model.info.backend.reason).toBe("this build's CUDA backend has no forward pass yet");
      expect(model.info.backend.placement?.fits).toBe(true);
    } else {
      expect(model.info.backend.reason).toMatch(reason);
      expect(model.info.backend.placement).toBeUndefined();
    }
    expect(Object.isFrozen(model.info.backend)).toBe(true);
    const logits = await model.createSequence().evaluate([1, 5, 9]);
    expect(logits.length).toBe(model.info.vocabSize);
  });

  it("gpu: 'cuda' rejects with GpuUnavailableError, loads nothing, and the process goes on", async () => {
    const reason = expectedReason() ?? "this build's CUDA backend has no forward pass yet";
    const error = await loadModel(qwen, { gpu: 'cuda' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GpuUnavailableError);
    expect((error as GpuUnavailableError).code).toBe('NODE_MOE_GPU_UNAVAILABLE');
    expect((error as GpuUnavailableError).reason).toMatch(reason);
    expect((error as Error).message).toMatch(/^CUDA is not available: /);
    // Without CUDA nothing about the file was even read: a missing one gives the same error.
    if (expectedReason() !== undefined) {
      await expect(loadModel(path.join(dir, 'missing.gguf'), { gpu: 'cuda' })).rejects.toBeInstanceOf(GpuUnavailableError);
    }
    await using model = await loadModel(qwen, { gpu: false, threads: 2 });
    expect(model.info.backend).toEqual({ kind: 'cpu', reason: 'the CPU was asked for (gpu: false)' });
  });

  it('getGpuInfo reports the build and the driver without loading anything', async () => {
    const info = await getGpuInfo();
    expect(info.cudaBuild).toBe(cudaBuild());
    if (!info.available) expect(info.reason.length).toBeGreaterThan(0);
    if (!cudaBuild()) expect(info.reason).toMatch(/no CUDA backend/);
    else if (!info.available) expect(info.reason).toBe(expectedReason());
    expect(Array.isArray(info.devices)).toBe(true);
  });

  it('the probe child reports the driver, a file that is no addon, and a timeout as reasons', async () => {
    const real = await probeInChild(bindingPath());
    expect(real.cudaBuild).toBe(cudaBuild());
    if (!real.ok) expect(real.reason.length).toBeGreaterThan(0);
    const bogus = path.join(dir, 'not-an-addon.node');
    writeFileSync(bogus, 'this is not a shared library');
    const broken = await probeInChild(bogus);
    expect(broken.ok).toBe(false);
    expect(broken.reason).toMatch(/^the addon could not be loaded in the CUDA probe \(exit code 1\)/);
    const slow = await probeInChild(bindingPath(), 1);
    expect(slow.reason).toBe('the CUDA probe did not finish within 1 ms (a hung driver?)');
  });
});

describe('option validation', () => {
  const bad: [string, LoadModelOptions, RegExp][] = [
    ['gpu: vulkan', { gpu: 'vulkan' as never }, /gpu must be 'auto', 'cuda' or false, got 'vulkan'/],
    ['gpu: true', { gpu: true as never }, /gpu must be 'auto', 'cuda' or false, got true/],
    ['gpuLayers: -1', { gpuLayers: -1 }, /gpuLayers must be an integer >= 0, got -1/],
    ['gpuLayers: 1.5', { gpuLayers: 1.5 }, /gpuLayers must be an integer >= 0, got 1.5/],
    ['gpuLayers: NaN', { gpuLayers: Number.NaN }, /gpuLayers must be an integer >= 0, got NaN/],
    ["gpuLayers: '3'", { gpuLayers: '3' as never }, /gpuLayers must be an integer >= 0, got '3'/],
    ['experts: all', { experts: 'all' as never }, /experts must be 'gpu', 'cpu' or a number of layers >= 0, got 'all'/],
    ['experts: -2', { experts: -2 }, /experts must be 'gpu', 'cpu' or a number of layers >= 0, got -2/],
    ['experts: 2.5', { experts: 2.5 }, /got 2.5/],
    ["gpu: 'cuda', gpuLayers: 0", { gpu: 'cuda', gpuLayers: 0 }, /gpuLayers: 0 with gpu: 'cuda' puts nothing on the GPU/],
  ];
  for (const [name, options, message] of bad) {
    it(`${name} is a RangeError before anything is loaded`, async () => {
      // Even with a device "present", and for a file that does not exist: validation comes first.
      _setCudaProbeForTesting({ devices: [device(80, 79)] });
      const error = await loadModel(path.join(dir, 'missing.gguf'), options).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(RangeError);
      expect((error as Error).message).toMatch(message);
    });
  }

  it("gpuLayers: 0 with gpu: 'auto' stays on the CPU and says why; gpu: false ignores the other options", async () => {
    _setCudaProbeForTesting({ devices: [device(80, 79)] });
    await using a = await loadModel(qwen, { gpuLayers: 0, threads: 2 });
    expect(a.info.backend).toEqual({ kind: 'cpu', reason: 'gpuLayers: 0 keeps every layer on the CPU' });
    await using b = await loadModel(qwen, { gpu: false, gpuLayers: 2, experts: 'cpu', threads: 2 });
    expect(b.info.backend.kind).toBe('cpu');
  });
});

describe('with a CUDA device reported by the probe (stand-in answer)', () => {
  // The seam's stand-in exists in CPU builds only: a CUDA build starts its real backend on the
  // stand-in device (test/gpu/ tests that build where a device exists).
  it.skipIf(cudaBuild())("gpu: 'cuda' with a plan that fits reaches the backend seam, which has no forward pass yet", async () => {
    _setCudaProbeForTesting({ devices: [device(80, 79)] });
    const error = await loadModel(qwen, { gpu: 'cuda', threads: 2 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GpuUnavailableError);
    expect((error as GpuUnavailableError).reason).toBe("this build's CUDA backend has no forward pass yet");
  });

  it.skipIf(cudaBuild())("gpu: 'auto' falls back to the CPU with that reason and shows the plan it made", async () => {
    const d = device(80, 79);
    _setCudaProbeForTesting({ devices: [d] });
    await using model = await loadModel(qwen, { threads: 2, contextSize: 512 });
    const { backend } = model.info;
    expect(backend.kind).toBe('cpu');
    expect(backend.reason).toBe("this build's CUDA backend has no forward pass yet");
    expect(backend.device).toEqual(d);
    const p = backend.placement!;
    expect(p.fits).toBe(true);
    expect(p).toMatchObject({ blockCount: 3, gpuLayers: 3, moeLayers: 3, expertLayersOnGpu: 3, outputOnGpu: true, freeMemory: d.freeMemory });
    expect(p.reserveBytes).toBe(Math.floor(d.totalMemory / 20) + 512 * 2 ** 20);
    expect(p.availableBytes).toBe(d.freeMemory - p.reserveBytes);
    // KV: K and V rows of kvHeads x headDim F16 values for the 512 positions of the context.
    const kvLayer = 512 * 2 * TINY.kvHeads * TINY.headDim * 2;
    expect(p.layers.map((l) => l.kvBytes)).toEqual([kvLayer, kvLayer, kvLayer]);
    expect(p.kvGpuBytes).toBe(3 * kvLayer);
    expect(p.gpuBytes).toBe(p.weightsGpuBytes + p.kvGpuBytes + p.computeBytes);
    // Everything but the token embedding (which stays in the mapping for its row lookups).
    const embd = TINY.embd * model.info.vocabSize * 4;
    expect(p.weightsCpuBytes).toBe(embd);
    expect(p.weightsGpuBytes).toBe(model.info.sizeBytes - embd);
    expect(p.summary).toMatch(/^3 of 3 layers on the GPU, routed experts with them: /);
    // The model works (on the CPU).
    expect((await model.createSequence().evaluate([1, 2, 3])).length).toBe(model.info.vocabSize);
  });

  it('gpuLayers and experts shape the plan; with auto they are upper bounds', async () => {
    _setCudaProbeForTesting({ devices: [device(80, 79)] });
    await using hybrid = await loadModel(qwen, { threads: 2, experts: 'cpu', kvCacheType: 'F32', contextSize: 256 });
    const h = hybrid.info.backend.placement!;
    expect(h).toMatchObject({ gpuLayers: 3, expertLayersOnGpu: 0 });
    expect(h.layers.map((l) => l.experts)).toEqual(['cpu', 'cpu', 'cpu']);
    expect(h.layers[0]!.kvBytes).toBe(256 * 2 * TINY.kvHeads * TINY.headDim * 4);
    await using one = await loadModel(qwen, { threads: 2, experts: 1 });
    expect(one.info.backend.placement!.layers.map((l) => l.experts)).toEqual(['cpu', 'cpu', 'gpu']);
    await using last = await loadModel(qwen, { threads: 2, gpuLayers: 1 });
    const l = last.info.backend.placement!;
    expect(l.layers.map((x) => x.gpu)).toEqual([false, false, true]);
    expect(l.kvCpuBytes).toBe(2 * l.layers[0]!.kvBytes);
    await using many = await loadModel(qwen, { threads: 2, gpuLayers: 999, experts: 999 });
    expect(many.info.backend.placement).toMatchObject({ gpuLayers: 3, expertLayersOnGpu: 3 });
    await using plain = await loadModel(dense, { threads: 2 });
    expect(plain.info.backend.placement).toMatchObject({ moeLayers: 0, expertLayersOnGpu: 0, gpuLayers: 2 });
    expect(plain.info.backend.placement!.layers.every((x) => x.experts === 'none')).toBe(true);
  });

  it("a model that does not fit: 'cuda' rejects with OutOfMemoryError naming the bytes, 'auto' uses the CPU", async () => {
    // 1 GiB device, 600 MiB free: the reserve (5% + 512 MiB) leaves ~49 MiB, less than the scratch alone.
    const small: GpuDevice = { ...device(1, 0), freeMemory: 600 * 2 ** 20 };
    _setCudaProbeForTesting({ devices: [small] });
    const error = await loadModel(qwen, { gpu: 'cuda', threads: 2 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OutOfMemoryError);
    const oom = error as OutOfMemoryError;
    expect(oom.neededBytes).toBeGreaterThan(oom.availableBytes!);
    expect(oom.availableBytes).toBe(small.freeMemory - (Math.floor(small.totalMemory / 20) + 512 * 2 ** 20));
    expect(oom.message).toMatch(/the model does not fit in GPU memory: the plan \(3 of 3 layers on the GPU, routed experts with them\) needs .* available/);
    expect(oom.message).toMatch(/Try experts: 'cpu' or fewer gpuLayers; but not even 1 layer with its experts in CPU memory fits .*use gpu: false/);

    await using model = await loadModel(qwen, { threads: 2 });
    expect(model.info.backend.kind).toBe('cpu');
    expect(model.info.backend.reason).toMatch(/^the model does not fit on the GPU: even 1 layer with its experts in CPU memory needs /);
    expect(model.info.backend.placement).toMatchObject({ fits: false, gpuLayers: 0, gpuBytes: 0 });
  });

  it('a device that reports no memory free, and no device at all', async () => {
    _setCudaProbeForTesting({ devices: [device(80, 0)] });
    await using model = await loadModel(qwen, { threads: 2 });
    expect(model.info.backend.reason).toMatch(/0 B available \(0 B free/);
    _setCudaProbeForTesting({ ok: false, reason: 'cuInit failed: CUDA_ERROR_NO_DEVICE', devices: [] });
    await using cpu = await loadModel(qwen, { threads: 2 });
    expect(cpu.info.backend).toEqual({ kind: 'cpu', reason: 'cuInit failed: CUDA_ERROR_NO_DEVICE' });
    await expect(loadModel(qwen, { gpu: 'cuda' })).rejects.toMatchObject({ name: 'GpuUnavailableError', reason: 'cuInit failed: CUDA_ERROR_NO_DEVICE' });
  });
});

/** Kimi K2's tensor list (61 layers, the first dense, 384 experts of 2048, MLA) at Q4_K's 0.5625 bytes per weight. */
function kimiTensors(): NativePlacementTensor[] {
  const q4 = (n: number) => Math.round(n * 0.5625);
  const E = 7168;
  const t: NativePlacementTensor[] = [{ name: 'token_embd.weight', bytes: q4(E * 163840) }];
  for (let l = 0; l < 61; l++) {
    const b = `blk.${l}`;
    t.push({ name: `${b}.attn_norm.weight`, bytes: E * 4 });
    t.push({ name: `${b}.attn_q_a.weight`, bytes: q4(E * 1536) }, { name: `${b}.attn_q_b.weight`, bytes: q4(1536 * 64 * 192) });
    t.push({ name: `${b}.attn_kv_a_mqa.weight`, bytes: q4(E * 576) }, { name: `${b}.attn_output.weight`, bytes: q4(64 * 128 * E) });
    t.push({ name: `${b}.attn_k_b.weight`, bytes: q4(128 * 512 * 64) }, { name: `${b}.attn_v_b.weight`, bytes: q4(512 * 128 * 64) });
    t.push({ name: `${b}.ffn_norm.weight`, bytes: E * 4 });
    if (l === 0) {
      for (const p of ['gate', 'up', 'down']) t.push({ name: `${b}.ffn_${p}.weight`, bytes: q4(E * 18432) });
      continue;
    }
    t.push({ name: `${b}.ffn_gate_inp.weight`, bytes: E * 384 * 4 });
    for (const p of ['gate', 'up', 'down']) {
      t.push({ name: `${b}.ffn_${p}_exps.weight`, bytes: q4(E * 2048 * 384) });
      t.push({ name: `${b}.ffn_${p}_shexp.weight`, bytes: q4(E * 2048) });
    }
  }
  t.push({ name: 'output_norm.weight', bytes: E * 4 }, { name: 'output.weight', bytes: q4(E * 163840) });
  return t;
}

describe('planPlacement (native planner) on a 1T-parameter model', () => {
  const input = () => ({
    tensors: kimiTensors(),
    blockCount: 61,
    kvBytes: new Array<number>(61).fill(4096 * 576 * 2),
    computeBytes: 1.5 * GiB,
    freeMemory: 140e9,
    totalMemory: 141e9,
  });

  it('on a 141 GB H200, auto keeps every layer on the GPU and moves the first layers experts to the CPU', () => {
    const p = loadBinding().planPlacement(input());
    expect(p.fits).toBe(true);
    expect(p.gpuLayers).toBe(61);
    expect(p.moeLayers).toBe(60);
    expect(p.expertLayersOnGpu).toBeGreaterThan(0);
    expect(p.expertLayersOnGpu).toBeLessThan(60);
    expect(p.gpuBytes).toBeLessThanOrEqual(p.availableBytes);
    const device = (name: string) => p.tensors.find((t) => t.name === name)!.device;
    expect(device('blk.1.ffn_up_exps.weight')).toBe('cpu');
    expect(device('blk.1.attn_q_b.weight')).toBe('gpu');
    expect(device('blk.1.ffn_up_shexp.weight')).toBe('gpu');
    expect(device('blk.60.ffn_up_exps.weight')).toBe('gpu');
    expect(device('token_embd.weight')).toBe('cpu');
    expect(p.tensors.find((t) => t.name === 'blk.60.ffn_gate_inp.weight')).toMatchObject({ layer: 60, role: 'router' });
    const expertsOnGpu = p.layers.filter((l) => l.experts === 'gpu').length;
    expect(expertsOnGpu).toBe(p.expertLayersOnGpu);
    expect(p.layers[0]!.experts).toBe('none');
    expect(p.error).toBeUndefined();
  });

  it("explicit ('cuda') plans: all experts on the GPU does not fit and says what would; experts 'cpu' fits", () => {
    const auto = loadBinding().planPlacement(input());
    const all = loadBinding().planPlacement({ ...input(), mode: 'cuda' });
    expect(all.fits).toBe(false);
    expect(all.gpuBytes).toBeGreaterThan(500 * GiB);
    expect(all.error).toContain("Try experts: 'cpu' or fewer gpuLayers");
    expect(all.error).toContain(`the largest plan that fits is { experts: ${auto.expertLayersOnGpu} }`);
    const hybrid = loadBinding().planPlacement({ ...input(), mode: 'cuda', experts: 'cpu' });
    expect(hybrid).toMatchObject({ fits: true, gpuLayers: 61, expertLayersOnGpu: 0 });
    expect(hybrid.gpuBytes).toBeLessThan(16 * GiB);
    const some = loadBinding().planPlacement({ ...input(), mode: 'cuda', experts: 5, gpuLayers: 30 });
    expect(some).toMatchObject({ fits: true, gpuLayers: 30, expertLayersOnGpu: 5 });
    expect(some.layers.map((l, i) => (l.gpu ? i : -1)).filter((i) => i >= 0)[0]).toBe(31);
  });

  it('rejects malformed input with typed errors', () => {
    const b = loadBinding();
    expect(() => b.planPlacement({ ...input(), kvBytes: [1, 2] })).toThrow(/kv_bytes has 2 entries for 61 layers/);
    expect(() => b.planPlacement({ ...input(), experts: 'all' as never })).toThrow(/experts must be 'gpu', 'cpu' or a number/);
    expect(() => b.planPlacement({ ...input(), freeMemory: -1 })).toThrow(/freeMemory must be an integer >= 0/);
    expect(() => b.planPlacement({ ...input(), tensors: [{ name: 'x', bytes: 1, role: 'weights' as never }] })).toThrow(/unknown role/);
  });
});

// The CPU package's loader: run against a CPU build (its own addon plays both the CPU prebuild and
// the variant the test load refuses).
describe.skipIf(cudaBuild())('CUDA variants of the addon (in a packaged copy, in child processes)', () => {
  // A copy of the package with its CPU prebuild and, where node-gyp-build never looks, a "CUDA
  // variant": here the same CPU addon, which the test load rejects (it has no CUDA backend, and
  // this machine may have no driver), so the CPU prebuild is loaded with the test load's reason.
  let pkg: string;
  beforeAll(async () => {
    ensureDist();
    pkg = path.join(await tempDir(), 'node_modules', 'node-moe');
    const tuple = `${process.platform}-${process.arch}`;
    mkdirSync(path.join(pkg, 'prebuilds', tuple, 'cuda'), { recursive: true });
    cpSync(path.join(root, 'dist'), path.join(pkg, 'dist'), { recursive: true });
    cpSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'));
    symlinkSync(path.join(root, 'node_modules'), path.join(pkg, 'node_modules'));
    cpSync(bindingPath(), path.join(pkg, 'prebuilds', tuple, 'node-moe.glibc.node'));
    cpSync(bindingPath(), path.join(pkg, 'prebuilds', tuple, 'cuda', 'node-moe.node'));
  }, 300_000);

  function run(env: Record<string, string> = {}): { info: { cudaBuild: boolean; reason: string }; backend: { kind: string; reason: string } } {
    const code = `import { getGpuInfo, loadModel } from ${JSON.stringify(path.join(pkg, 'dist', 'index.js'))};
      const info = await getGpuInfo();
      const model = await loadModel(${JSON.stringify(qwen)}, { threads: 1 });
      console.log(JSON.stringify({ info, backend: model.info.backend }));
      await model.dispose();`;
    const { NODE_MOE_BINDING: _explicit, ...inherited } = process.env;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { env: { ...inherited, ...env }, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout.trim().split('\n').pop()!);
  }

  it('a variant that finds no CUDA device is not loaded; the CPU prebuild runs with the reason', () => {
    const { info, backend } = run();
    expect(info.cudaBuild).toBe(false);
    expect(backend.kind).toBe('cpu');
    const probe = loadBinding().probeCuda();
    // Without a driver the test load's reason; on a GPU machine the variant (a CPU addon) was refused for lacking CUDA.
    expect(backend.reason).toBe(probe.ok ? info.reason : probe.reason);
    expect(info.reason).toBe(backend.reason);
  });

  it('a variant that cannot even be loaded is refused in the child; node-gyp-build never picks it up', () => {
    const variant = path.join(pkg, 'prebuilds', `${process.platform}-${process.arch}`, 'cuda', 'node-moe.node');
    writeFileSync(variant, 'not a shared library');
    try {
      const { backend } = run();
      expect(backend.kind).toBe('cpu');
      expect(backend.reason).toMatch(/^the addon could not be loaded in the CUDA probe \(exit code 1\)/);
    } finally {
      cpSync(bindingPath(), variant);
    }
  });

  it('NODE_MOE_GPU=cpu keeps a CUDA variant from being loaded at all', () => {
    const { backend } = run({ NODE_MOE_GPU: 'cpu' });
    expect(backend).toEqual({ kind: 'cpu', reason: 'a CUDA variant is installed but NODE_MOE_GPU=cpu keeps node-moe on the CPU' });
  });
});
