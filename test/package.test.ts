/**
 * The published tarball works for a user who installs it offline with install scripts blocked
 * (pnpm/Bun defaults, npm's allowScripts): the prebuild inside it is found without any build step.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { writeGguf } from '../lib/index.js';
import { ensureDist, ensurePrebuild, root } from './helpers/build.js';
import { tempDir } from './helpers/tmp.js';

function run(cmd: string, args: string[], cwd: string) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false' } });
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}`, stdout: r.stdout };
}

let tarball: string;
let consumer: string;
let model: string;

beforeAll(async () => {
  ensureDist();
  ensurePrebuild();
  const dir = await tempDir();
  const pack = run('npm', ['pack', '--json', '--pack-destination', dir], root);
  expect(pack.ok, pack.out).toBe(true);
  const [{ filename, files }] = JSON.parse(pack.stdout) as [{ filename: string; files: { path: string }[] }];
  tarball = path.join(dir, filename);
  const paths = files.map((f) => f.path);
  expect(paths).toContain('dist/index.js');
  expect(paths).toContain('dist/index.cjs');
  expect(paths).toContain('dist/index.d.ts');
  expect(paths.some((p) => /^prebuilds\/linux-x64\/node-moe\.glibc\.node$/.test(p))).toBe(true);
  expect(paths.some((p) => p.startsWith('build/') || p.startsWith('test/'))).toBe(false);

  consumer = path.join(dir, 'consumer');
  spawnSync('mkdir', ['-p', consumer]);
  writeFileSync(path.join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
  const install = run('npm', ['install', '--offline', '--ignore-scripts', '--no-audit', '--no-fund', tarball], consumer);
  expect(install.ok, install.out).toBe(true);
  model = path.join(dir, 'model.gguf');
  await writeGguf(model, {
    metadata: { 'general.architecture': 'llama', 'general.name': 'packaged' },
    tensors: [{ name: 'w', type: 'F16', shape: [32, 2], data: new Float32Array(64).fill(0.5) }],
  });
}, 600_000);

describe('npm pack → install --offline --ignore-scripts', () => {
  it('installs without compiling anything', () => {
    const installed = path.join(consumer, 'node_modules', 'node-moe');
    expect(existsSync(path.join(installed, 'build'))).toBe(false);
    expect(existsSync(path.join(installed, 'prebuilds', 'linux-x64', 'node-moe.glibc.node'))).toBe(true);
  });

  it('readGgufInfo works from CommonJS', () => {
    const r = run(
      process.execPath,
      ['-e', `require('node-moe').readGgufInfo(${JSON.stringify(model)}).then(i => console.log(i.metadata['general.name'], i.tensors[0].type, i.tensors[0].shape.join('x')))`],
      consumer,
    );
    expect(r.out.trim()).toBe('packaged F16 32x2');
  });

  it('readGgufInfo and readGgufTensor work from ESM', () => {
    const r = run(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { readGgufInfo, readGgufTensor } from 'node-moe';
         const info = await readGgufInfo(${JSON.stringify(model)});
         const w = await readGgufTensor(${JSON.stringify(model)}, 'w');
         console.log(info.version, w.length, w[0]);`,
      ],
      consumer,
    );
    expect(r.out.trim()).toBe('3 64 0.5');
  });
});
