/**
 * vitest globalSetup: one temporary root per test run, removed when the run ends, whatever happens
 * to the worker processes (tests write multi-GB model files; a leak fills the disk).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export default async function setup(): Promise<() => Promise<void>> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'node-moe-tests-'));
  process.env.NODE_MOE_TEST_TMP = root; // inherited by the worker processes
  return () => rm(root, { recursive: true, force: true });
}
