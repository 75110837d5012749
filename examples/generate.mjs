#!/usr/bin/env node
// Makes a small Mixture-of-Experts model with node-moe's own GGUF writer (qwen3moe layout, random
// weights, so the text is gibberish: this shows the machinery, not a trained model), loads it and
// streams a generation from it (model.generate, sampled natively).
//   node examples/generate.mjs ["prompt"] [tokens]
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../dist/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const file = path.join(os.tmpdir(), 'node-moe-example-qwen3moe.gguf');
if (!existsSync(file)) execFileSync(process.execPath, [path.join(here, 'make-model.mjs'), file], { stdio: 'inherit' });

const prompt = process.argv[2] ?? 'Once upon a time';
const count = Number(process.argv[3] ?? 24);
const model = await loadModel(file); // TypeScript: `await using model = …` disposes it for you
const { architecture, expertCount, expertUsedCount, parameterCount, activeParameterCount } = model.info;
console.log(`${architecture}: ${expertCount} experts, top-${expertUsedCount}, ${parameterCount} parameters (${activeParameterCount} active per token)`);

process.stdout.write(prompt);
const generation = model.generate(prompt, { maxTokens: count, temperature: 0.8, seed: 1, stopAtEndOfGeneration: false });
for await (const delta of generation) process.stdout.write(delta);
const { usage, timings } = await generation.final;
console.log(`\n(${usage.outputTokens} tokens, ${timings.generationTokensPerSecond.toFixed(1)} tokens/s after the first)`);
await model.dispose();
