import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/**
 * A fresh temporary directory for this test file: inside the run's root (test/setup/temp-root.ts),
 * which is removed when the run ends, and removed itself when the file's process exits.
 */
export async function tempDir(prefix = 'node-moe-test-'): Promise<string> {
  const dir = await mkdtemp(path.join(process.env.NODE_MOE_TEST_TMP ?? os.tmpdir(), prefix));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
