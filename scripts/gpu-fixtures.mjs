#!/usr/bin/env node
// Writes the tiny models of every architecture that test/gpu/test_cuda_model runs GPU vs CPU, into
// test/gpu/fixtures/ (ignored by git): NAME.gguf plus NAME.tokens, the 64 teacher-forced token ids
// (whitespace-separated). They are made here, with the project's GGUF writer, so that a GPU machine
// without Node.js can run the whole-model check: carry test/gpu/fixtures there.
//   node scripts/gpu-fixtures.mjs
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'test/gpu/fixtures');
// The writer is TypeScript (test/helpers): bundle it for this Node.js, which runs no TypeScript itself.
// Inside the tree, so that its imports of the project's dependencies resolve from node_modules.
const bundle = path.join(root, 'node_modules', '.cache', `node-moe-gpu-fixtures-${process.pid}.mjs`);
await build({
  entryPoints: [path.join(root, 'test/helpers/tiny-moe.ts')],
  bundle: true, platform: 'node', format: 'esm', outfile: bundle, packages: 'external', logLevel: 'error',
});
// The bundle lives elsewhere than lib/, so name the addon this tree built (the writer quantizes with it).
process.env.NODE_MOE_BINDING ??= ['build/Release', 'build-cmake/Release']
  .map((dir) => path.join(root, dir, 'node_moe.node')).find((file) => existsSync(file));
const { writeTinyMoe, teacherTokens } = await import(bundle);
rmSync(bundle, { force: true });

// Every architecture, the float path on two of them and each weight family at least once, in about 41 MB:
// the lent GPU machine takes at most 64 MiB of files that git does not track.
const MODELS = [
  ['llama', 'F16'], ['llama', 'Q4_K_M'], ['llama-moe', 'Q8_0'], ['qwen2moe', 'Q4_K_M'], ['qwen3moe', 'F16'],
  ['qwen3moe', 'Q4_K_M'], ['olmoe', 'Q8_0'], ['deepseek2', 'Q4_K_M'], ['deepseek2-kvb', 'Q4_K_M'], ['gpt-oss', 'MXFP4'],
];
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
for (const [arch, weights] of MODELS) {
  const name = `${arch}-${weights}`;
  const { vocabSize } = await writeTinyMoe(path.join(out, `${name}.gguf`), { arch, weights });
  writeFileSync(path.join(out, `${name}.tokens`), teacherTokens(64, vocabSize).join(' ') + '\n');
}
const count = MODELS.length;
console.log(`${count} models in ${path.relative(process.cwd(), out) || out}`);
