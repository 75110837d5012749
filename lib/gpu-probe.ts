/**
 * Runs the addon's NVIDIA driver probe (`probeCuda`, cpp/gpu/cuda_driver.cc) in a child process,
 * as node-llama-cpp test-loads its CUDA binaries: loading a CUDA build and initialising the driver
 * happen there first, so a driver that crashes or hangs ends the child, never the user's process.
 * The child is `node -e` loading the same `.node` file; its answer is one JSON line on stdout.
 */
import { spawn, spawnSync, type SpawnOptions } from 'node:child_process';

/** A CUDA device as the driver reports it. */
export interface GpuDevice {
  /** CUDA ordinal (after `CUDA_VISIBLE_DEVICES`). */
  index: number;
  /** E.g. `'NVIDIA H200'`. */
  name: string;
  /** Bytes of device memory. */
  totalMemory: number;
  /** Bytes free when probed (with a CUDA context open, so the context's own share is already taken). */
  freeMemory: number;
  /** `'major.minor'`, e.g. `'9.0'` for Hopper. */
  computeCapability: string;
}

/** What a probe child reported. */
export interface ProbeOutcome {
  /** The probed addon was compiled with the CUDA backend. */
  cudaBuild: boolean;
  /** A driver loaded and at least one device answered. */
  ok: boolean;
  /** One line, when not ok. */
  reason: string;
  /** `cuDriverGetVersion` (13000 for 13.0); 0 when unknown. */
  driverVersion: number;
  devices: GpuDevice[];
}

/** How long a probe may take: cuInit on a machine with several GPUs and persistence mode off takes seconds. */
export const PROBE_TIMEOUT_MS = 30_000;

const MARKER = 'node-moe-cuda-probe:';
// argv[1] is the addon's path. The marker keeps the answer apart from anything a preloaded module
// (NODE_OPTIONS=--require …) prints.
const SCRIPT =
  `const b = require(process.argv[1]); const p = b.probeCuda();` +
  `process.stdout.write('\\n${MARKER}' + JSON.stringify({ cudaBuild: b.cudaBuild === true, ok: p.ok, reason: p.reason,` +
  ` driverVersion: p.driverVersion, devices: p.devices }) + '\\n');`;

function spawnOptions(): SpawnOptions {
  // ELECTRON_RUN_AS_NODE: inside Electron, process.execPath is the app; this makes it a plain node.
  return { env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' }, stdio: ['ignore', 'pipe', 'pipe'], windowsHide: true };
}

function failure(reason: string): ProbeOutcome {
  return { cudaBuild: false, ok: false, reason, driverVersion: 0, devices: [] };
}

/** Turns how the child ended into an outcome; every failure becomes a one-line reason. */
function interpret(
  result: { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; error?: Error | undefined },
  timedOut: boolean,
  timeoutMs: number,
): ProbeOutcome {
  if (timedOut) {
    const limit = timeoutMs < 1000 ? `${timeoutMs} ms` : `${Math.round(timeoutMs / 1000)} s`;
    return failure(`the CUDA probe did not finish within ${limit} (a hung driver?)`);
  }
  if (result.error) return failure(`the CUDA probe could not start: ${result.error.message}`);
  if (result.signal) return failure(`the CUDA probe process was killed by ${result.signal} (a crashing driver or addon)`);
  const line = result.stdout.split('\n').find((l) => l.startsWith(MARKER));
  if (result.status !== 0 || !line) {
    const why = result.stderr.split('\n').find((l) => /Error/.test(l)) ?? result.stderr.trim().split('\n')[0] ?? '';
    return failure(`the addon could not be loaded in the CUDA probe (exit code ${result.status})${why ? `: ${why.trim()}` : ''}`);
  }
  try {
    const parsed = JSON.parse(line.slice(MARKER.length)) as ProbeOutcome;
    return {
      cudaBuild: parsed.cudaBuild === true,
      ok: parsed.ok === true,
      reason: String(parsed.reason ?? ''),
      driverVersion: Number(parsed.driverVersion) || 0,
      devices: Array.isArray(parsed.devices) ? parsed.devices : [],
    };
  } catch {
    return failure('the CUDA probe printed an answer that is not JSON');
  }
}

/** Probes in a child process, blocking: for choosing which addon to load, which is synchronous. */
export function probeInChildSync(bindingPath: string, timeoutMs = PROBE_TIMEOUT_MS): ProbeOutcome {
  const r = spawnSync(process.execPath, ['-e', SCRIPT, bindingPath], {
    ...spawnOptions(),
    encoding: 'utf8',
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
  });
  const timedOut = (r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT';
  const error = timedOut ? undefined : r.error;
  return interpret({ status: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error }, timedOut, timeoutMs);
}

/** Probes in a child process without blocking the event loop. Never rejects. */
export function probeInChild(bindingPath: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<ProbeOutcome> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let settled = false;
    const finish = (outcome: ProbeOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(outcome);
    };
    const child = spawn(process.execPath, ['-e', SCRIPT, bindingPath], spawnOptions());
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (error) => finish(interpret({ status: null, signal: null, stdout, stderr, error }, false, timeoutMs)));
    child.on('close', (status, signal) => finish(interpret({ status, signal, stdout, stderr }, timedOut, timeoutMs)));
  });
}
