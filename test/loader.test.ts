/** How the package finds its addon and fails when it cannot: always a clear error, never a crash. */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { getCpuInfo } from '../lib/index.js';
import { ensureDist, root } from './helpers/build.js';
import { tempDir } from './helpers/tmp.js';

function runNode(code: string, options: { cwd?: string; env?: Record<string, string> } = {}) {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
    cwd: options.cwd ?? root,
    env: { ...process.env, ...options.env },
    encoding: 'utf8',
  });
  return { status: r.status, signal: r.signal, out: `${r.stdout}${r.stderr}` };
}

beforeAll(() => ensureDist(), 300_000);

describe('addon loader', () => {
  it('explains a missing addon with a list of fixes', async () => {
    // A copy of the package with dist/ but neither build/ nor prebuilds/.
    const pkg = path.join(await tempDir(), 'node_modules', 'node-moe');
    mkdirSync(pkg, { recursive: true });
    cpSync(path.join(root, 'dist'), path.join(pkg, 'dist'), { recursive: true });
    cpSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'));
    symlinkSync(path.join(root, 'node_modules'), path.join(pkg, 'node_modules'));
    const r = runNode(
      `import { getCpuInfo, NativeBindingError } from ${JSON.stringify(path.join(pkg, 'dist', 'index.js'))};
       try { getCpuInfo(); console.log('loaded?!'); }
       catch (e) { console.log(e instanceof NativeBindingError, e.code); console.log(e.message); }`,
    );
    expect(r.signal).toBeNull();
    expect(r.out).toMatch(/^true NODE_MOE_BINDING/);
    expect(r.out).toMatch(/could not load its native addon for linux-x64|could not load its native addon/);
    expect(r.out).toMatch(/Possible solutions/);
    expect(r.out).toMatch(/npm rebuild node-moe/);
    expect(r.out).toMatch(/NODE_MOE_BINDING/);
  });

  it('names the file when NODE_MOE_BINDING points nowhere', () => {
    const r = runNode(
      `import { getCpuInfo } from './dist/index.js';
       try { getCpuInfo(); } catch (e) { console.log(e.name + ': ' + e.message); }`,
      { env: { NODE_MOE_BINDING: '/nonexistent/node_moe.node' } },
    );
    expect(r.out).toMatch(/NativeBindingError: .*NODE_MOE_BINDING=\/nonexistent\/node_moe\.node/);
  });

  it('turns a kernel level the CPU lacks into CpuUnsupportedError at first use, not SIGILL', () => {
    const info = getCpuInfo();
    const lacking = (['avx512', 'neon', 'avx2'] as const).find((l) => !info.supported.includes(l))!;
    const r = runNode(
      `import { quantize, CpuUnsupportedError } from './dist/index.js';
       try { await quantize('Q8_0', new Float32Array(32)); console.log('ran?!'); }
       catch (e) { console.log(e instanceof CpuUnsupportedError, e.message); }`,
      { env: { NODE_MOE_CPU: lacking } },
    );
    expect(r.signal).toBeNull();
    expect(r.status).toBe(0);
    expect(r.out).toMatch(/^true /);
    expect(r.out.toLowerCase()).toContain(lacking === 'avx512' ? 'avx-512' : lacking);
  });
});
