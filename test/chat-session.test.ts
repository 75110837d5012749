/**
 * model.createChat: turns rendered through the file's chat template (a tiny Qwen3-MoE with the real
 * Qwen3 tokenizer and template), KV reuse between turns, parsed streaming parts, history bookkeeping.
 */
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { AbortError, ContextOverflowError, loadModel, type ChatStreamPart, type Model } from '../lib/index.js';
import { tempDir } from './helpers/tmp.js';
import { writeTinyMoe } from './helpers/tiny-moe.js';

let model: Model;

beforeAll(async () => {
  const dir = await tempDir();
  const file = path.join(dir, 'chat.gguf');
  await writeTinyMoe(file, { arch: 'qwen3moe', weights: 'Q4_K_M', vocabulary: 'qwen3' });
  model = await loadModel(file, { threads: 2, contextSize: 512 });
  return () => model.dispose();
}, 300_000);

describe('chat', () => {
  it('keeps the history, reuses the cache between turns and streams parsed parts', async () => {
    await using chat = model.createChat({ system: 'You are terse.', temperature: 0, maxTokens: 12, templateVariables: { enable_thinking: false } });
    const first = chat.send('Hello there!');
    const parts: ChatStreamPart[] = [];
    for await (const part of first.fullStream) parts.push(part);
    const r1 = await first.final;
    expect(parts.at(-1)).toMatchObject({ type: 'finish', finishReason: r1.finishReason });
    const text = parts.filter((p) => p.type === 'text-delta').map((p) => (p as { text: string }).text).join('');
    expect(text).toBe(r1.text);
    expect(r1.usage.cachedInputTokens).toBe(0);
    expect(chat.history.map((m) => m.role)).toEqual(['system', 'user', 'assistant']);
    expect(chat.history[2]).toBe(r1.message);

    const r2 = await chat.send('And again?').final;
    // The system prompt and the first user turn were evaluated once.
    expect(r2.usage.cachedInputTokens).toBeGreaterThan(r1.usage.inputTokens / 2);
    expect(r2.usage.inputTokens).toBeGreaterThan(r1.usage.inputTokens);
    expect(chat.history.map((m) => m.role)).toEqual(['system', 'user', 'assistant', 'user', 'assistant']);
  });

  it('a reply equals a plain generation from the rendered prompt', async () => {
    await using chat = model.createChat({ temperature: 0, maxTokens: 8, templateVariables: { enable_thinking: false } });
    const reply = await chat.send('What is 2 + 2?').final;
    const prompt = model.tokenize(
      '<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n',
      { special: true },
    );
    const plain = await model.generate(prompt, { temperature: 0, maxTokens: 8 }).final;
    expect(reply.usage.inputTokens).toBe(prompt.length);
    expect(reply.tokens).toEqual(plain.tokens);
  });

  it('an aborted turn leaves the history as it was', async () => {
    await using chat = model.createChat({ temperature: 0, maxTokens: 50, stopAtEndOfGeneration: false });
    const controller = new AbortController();
    const turn = chat.send('Tell me a long story.', { signal: controller.signal });
    let n = 0;
    await expect(
      (async () => {
        for await (const _ of turn.fullStream) if (++n === 2) controller.abort();
      })(),
    ).rejects.toBeInstanceOf(AbortError);
    await expect(turn.final).rejects.toBeInstanceOf(AbortError);
    expect(chat.history).toEqual([]);
    // The chat is usable again.
    const next = await chat.send('Short, then.', { maxTokens: 3 }).final;
    expect(chat.history).toHaveLength(2);
    expect(next.usage.outputTokens).toBeLessThanOrEqual(3);
  });

  it('one turn at a time', async () => {
    await using chat = model.createChat({ temperature: 0, maxTokens: 4 });
    const turn = chat.send('One');
    expect(() => chat.send('Two')).toThrow(/in progress/);
    await turn.final;
  });

  it('contextShift drops whole old turns (after the system message) to fit; the history keeps them', async () => {
    await using chat = model.createChat({
      system: 'You are terse.',
      temperature: 0,
      maxTokens: 8,
      contextSize: 160,
      contextShift: true,
      templateVariables: { enable_thinking: false },
    });
    const long = 'Tell me about the sea and the sky and the mountains and the rivers. '.repeat(4);
    for (let turn = 0; turn < 5; turn++) {
      const r = await chat.send(`${turn}: ${long}`).final;
      expect(r.usage.inputTokens).toBeLessThan(160);
    }
    expect(chat.history.filter((m) => m.role === 'user').length).toBe(5);
    expect(chat.history[0]!.role).toBe('system');

    await using strict = model.createChat({ system: 'You are terse.', maxTokens: 4, contextSize: 140, templateVariables: { enable_thinking: false } });
    const r1 = await strict.send(long).final;
    expect(r1.usage.inputTokens * 2).toBeGreaterThan(140);
    await expect(strict.send(long).final).rejects.toBeInstanceOf(ContextOverflowError);
  });
});
