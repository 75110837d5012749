import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { MUTANT_COUNT, writeMutantCorpus, writeSeedFiles } from './helpers/gguf-corpus.js';
import { tempDir } from './helpers/tmp.js';

const root = path.resolve(__dirname, '..');

function build(sanitize: boolean): string {
  const args = ['scripts/native-tests.mjs', '--build-only', ...(sanitize ? ['--sanitize'] : [])];
  const r = spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8' });
  expect(r.status, r.stdout + r.stderr).toBe(0);
  return path.join(root, sanitize ? 'build-sanitize' : 'build-native');
}

/** Runs a native test binary and returns its "N passed, N failed" counts. */
function runNative(binary: string, args: string[] = []): { passed: number; failed: number; output: string } {
  const r = spawnSync(binary, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 });
  const output = `${r.stdout}\n${r.stderr}`;
  const summary = /(\d+) passed, (\d+) failed\s*$/m.exec(r.stdout);
  expect(r.signal, output).toBeNull();
  expect(summary, output).not.toBeNull();
  expect(r.status, output).toBe(0);
  return { passed: Number(summary![1]), failed: Number(summary![2]), output };
}

for (const sanitize of [false, true]) {
  describe(sanitize ? 'native tests under ASan/UBSan' : 'native tests', () => {
    let buildDir: string;
    beforeAll(() => {
      buildDir = build(sanitize);
    }, 900_000);

    for (const name of ['test_quant', 'test_gguf', 'test_matmul', 'test_ops', 'test_sampling', 'test_kv', 'test_grammar', 'test_placement']) {
      it(name, () => {
        const { passed, failed } = runNative(path.join(buildDir, name));
        expect(failed).toBe(0);
        expect(passed).toBeGreaterThan(0);
      }, 600_000);
    }

    if (sanitize) {
      it(`gguf_corpus_check reads the ${MUTANT_COUNT}-file corrupted corpus clean`, async () => {
        const dir = await tempDir();
        const seeds = await writeSeedFiles(path.join(dir, 'corpus'));
        await writeMutantCorpus(path.join(dir, 'corpus'), seeds, MUTANT_COUNT);
        const { passed, failed, output } = runNative(path.join(buildDir, 'gguf_corpus_check'), [path.join(dir, 'corpus')]);
        expect(failed, output).toBe(0);
        expect(passed).toBe(MUTANT_COUNT + seeds.length);
      }, 600_000);
    }
  });
}
