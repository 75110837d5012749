#!/usr/bin/env node
// Configures, builds and runs the native unit tests with plain CMake (no Node headers needed).
//   node scripts/native-tests.mjs               build-native/, Release
//   node scripts/native-tests.mjs --sanitize    build-sanitize/, ASan + UBSan
//   --build-only                                 build, do not run
// The corrupted-GGUF corpus run under the sanitizers lives in test/native.test.ts (npm run test:sanitize).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const sanitize = process.argv.includes('--sanitize');
const buildOnly = process.argv.includes('--build-only');
const buildDir = path.join(root, sanitize ? 'build-sanitize' : 'build-native');

function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...options });
  if (r.status !== 0) {
    console.error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal})`);
    process.exit(r.status || 1);
  }
}

const generator = spawnSync('ninja', ['--version']).status === 0 ? ['-G', 'Ninja'] : [];
if (!existsSync(path.join(buildDir, 'CMakeCache.txt'))) {
  run('cmake', [
    '-S', root, '-B', buildDir, ...generator,
    `-DCMAKE_BUILD_TYPE=${sanitize ? 'RelWithDebInfo' : 'Release'}`,
    `-DNODE_MOE_SANITIZE=${sanitize ? 'ON' : 'OFF'}`,
  ]);
}
run('cmake', ['--build', buildDir, '--parallel', '2']);
if (buildOnly) process.exit(0);
run('ctest', ['--test-dir', buildDir, '--output-on-failure']);
