/**
 * Finds and loads the native addon: `NODE_MOE_BINDING` (an explicit .node path), else a CUDA
 * variant when one is installed and passes a test load (see below), else a local build
 * (`build/Release`), else a prebuild shipped in `prebuilds/<platform>-<arch>/`. Works when npm's
 * install scripts never ran, because a prebuild is just a file in the package.
 *
 * CUDA variants live where node-gyp-build never looks (it would load a file with an unknown tag
 * from `prebuilds/<platform>-<arch>/` on every machine): `prebuilds/<platform>-<arch>/cuda/
 * node-moe.node` in this package, or the optional package `@node-moe/<platform>-<arch>-cuda`
 * (its `node-moe.node`, at node-moe's exact version). The CPU package ships neither, so its
 * default path never meets one. When one is present and `NODE_MOE_GPU` is not `cpu` / `false` /
 * `0`, it is test-loaded in a child process (lib/gpu-probe.ts) and used only if it loads and
 * finds a CUDA device; otherwise the CPU build is loaded and the reason kept for
 * `model.info.backend`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeBindingError } from './errors.js';
import { probeInChildSync, type ProbeOutcome } from './gpu-probe.js';
import type { NativeBinding } from './native-types.js';

const require = createRequire(import.meta.url);
/** Package root: this file lives in dist/ (built) or lib/ (tests), both one level down. */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

let cached: NativeBinding | undefined;
let cachedPath: string | undefined;

/** What happened to a CUDA variant of the addon, when one was found. */
export interface CudaVariantStatus {
  path: string;
  /** It was loaded (its test load found a device). */
  used: boolean;
  /** Its test load's outcome; `reason` says why it was not used. */
  probe: ProbeOutcome;
}
let variantStatus: CudaVariantStatus | undefined;

export function loadBinding(): NativeBinding {
  if (cached) return cached;
  const explicit = process.env.NODE_MOE_BINDING;
  try {
    if (explicit) {
      cachedPath = path.resolve(explicit);
      cached = require(cachedPath) as NativeBinding;
    } else {
      const variant = chooseCudaVariant();
      if (variant) {
        cachedPath = variant;
        cached = require(variant) as NativeBinding;
      } else {
        cached = require('node-gyp-build')(packageRoot) as NativeBinding;
      }
    }
  } catch (cause) {
    throw new NativeBindingError(bindingHelp(cause, explicit), { cause });
  }
  return cached;
}

/** The path of the loaded addon (for the CUDA probe's child process); loads it if needed. */
export function bindingPath(): string {
  loadBinding();
  if (!cachedPath) cachedPath = (require('node-gyp-build/node-gyp-build.js') as { path(dir: string): string }).path(packageRoot);
  return cachedPath;
}

/** The CUDA variant found when the addon was chosen, if any. */
export function cudaVariant(): CudaVariantStatus | undefined {
  return variantStatus;
}

/** `NODE_MOE_GPU=cpu` (or `false`, `0`): never load a CUDA variant. */
export function gpuOptedOut(): boolean {
  return ['cpu', 'false', '0', 'off'].includes((process.env.NODE_MOE_GPU ?? '').toLowerCase());
}

/** The CUDA variants installed for this platform (only their paths; nothing is loaded). */
function cudaVariantCandidates(): string[] {
  const tuple = `${process.platform}-${process.arch}`;
  const found: string[] = [];
  const local = path.join(packageRoot, 'prebuilds', tuple, 'cuda', 'node-moe.node');
  if (existsSync(local)) found.push(local);
  let manifest: string | undefined;
  try {
    manifest = require.resolve(`@node-moe/${tuple}-cuda/package.json`);
  } catch {
    // not installed: the usual case
  }
  if (manifest) {
    try {
      const variant = (JSON.parse(readFileSync(manifest, 'utf8')) as { version?: string }).version;
      const own = (JSON.parse(readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version?: string }).version;
      // An addon of another version may disagree with this lib/ about every native signature.
      const file = path.join(path.dirname(manifest), 'node-moe.node');
      if (variant === own && existsSync(file)) found.push(file);
    } catch {
      // an unreadable manifest is no variant
    }
  }
  return found;
}

/** The first CUDA variant whose test load finds a device, or undefined (the CPU build then). */
function chooseCudaVariant(): string | undefined {
  const candidates = cudaVariantCandidates();
  if (candidates.length === 0) return undefined;
  if (gpuOptedOut()) {
    const reason = `a CUDA variant is installed but NODE_MOE_GPU=${process.env.NODE_MOE_GPU} keeps node-moe on the CPU`;
    variantStatus = { path: candidates[0]!, used: false, probe: { cudaBuild: true, ok: false, reason, driverVersion: 0, devices: [] } };
    return undefined;
  }
  for (const candidate of candidates) {
    const probe = probeInChildSync(candidate);
    const usable = probe.cudaBuild && probe.ok;
    if (usable || !variantStatus) variantStatus = { path: candidate, used: usable, probe };
    if (usable) return candidate;
  }
  return undefined;
}

function bindingHelp(cause: unknown, explicit: string | undefined): string {
  const reason = cause instanceof Error ? cause.message.split('\n')[0] : String(cause);
  const target = `${process.platform}-${process.arch}, Node ${process.versions.node} (N-API ${process.versions.napi})`;
  if (explicit) {
    return `node-moe could not load the addon named by NODE_MOE_BINDING=${explicit}: ${reason}`;
  }
  return [
    `node-moe could not load its native addon for ${target}.`,
    `Reason: ${reason}`,
    'Possible solutions:',
    '- Build it from source (needs python3, make and a C++17 compiler): npm rebuild node-moe',
    '  (if your package manager blocks install scripts: npm install-scripts approve node-moe, then reinstall)',
    '- Or from a clone of node-moe: npm run build:native (node-gyp) or npm run build:cmake (cmake-js)',
    '- Or point NODE_MOE_BINDING at a node_moe.node file you built elsewhere',
  ].join('\n');
}
