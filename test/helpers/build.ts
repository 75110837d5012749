/** Makes sure the built package (dist/, and for packaging prebuilds/) exists before tests use it. */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

export const root = path.resolve(__dirname, '..', '..');

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

function npmRun(script: string): void {
  const r = spawnSync('npm', ['run', script], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`npm run ${script} failed:\n${r.stdout}\n${r.stderr}`);
}

/** Builds dist/ with tsup when it is missing or older than lib/. */
export function ensureDist(): void {
  const entry = path.join(root, 'dist', 'index.js');
  if (!existsSync(entry) || statSync(entry).mtimeMs < newestMtime(path.join(root, 'lib'))) npmRun('build:ts');
}

/** Builds the prebuild for this platform (prebuildify) when missing. */
export function ensurePrebuild(): string {
  const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  const find = () => (existsSync(dir) ? readdirSync(dir).find((f) => f.endsWith('.node')) : undefined);
  if (!find()) npmRun('prebuild');
  const file = find();
  if (!file) throw new Error(`npm run prebuild wrote no .node file into ${dir}`);
  return path.join(dir, file);
}
