#!/usr/bin/env node
// Makes a small Mixture-of-Experts model with node-moe's own GGUF writer (qwen3moe layout, random
// weights, so the text is gibberish: this shows the machinery, not a trained model), loads it and
// generates text greedily with the low-level sequence API.
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

const sequence = model.createSequence({ contextSize: 256 });
const generated = [];
let logits = await sequence.evaluate(model.tokenize(prompt, { addBos: true }));
const start = performance.now();
for (let i = 0; i < count; i++) {
  let best = 0;
  for (let t = 1; t < logits.length; t++) if (logits[t] > logits[best]) best = t;
  generated.push(best);
  logits = await sequence.evaluate([best]);
}
const seconds = (performance.now() - start) / 1000;
console.log(`${prompt}${model.detokenize(generated)}`);
console.log(`(${count} tokens in ${seconds.toFixed(2)} s, ${(count / seconds).toFixed(1)} tokens/s)`);
await model.dispose();
