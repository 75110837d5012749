// What the benchmark scripts read about the machine itself (Linux /proc; null elsewhere).
import { readFileSync } from 'node:fs';

/** Jiffies the whole machine spent busy (and in total), from /proc/stat; null elsewhere. */
export function cpuTimes() {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    return { total, busy: total - f[3] - f[4] };
  } catch { return null; }
}

/**
 * Share of the CPUs busy over one second (a benchmark's own process is idle while it waits here); null
 * elsewhere. The load average would still count a benchmark that just ended.
 */
export async function cpuBusyShare() {
  const a = cpuTimes();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const b = cpuTimes();
  return a && b && b.total > a.total ? (b.busy - a.busy) / (b.total - a.total) : null;
}
