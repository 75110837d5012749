/**
 * Tool calling through real chat templates: forced tool calls (the format's syntax and the
 * arguments' schema enforced by a grammar) come back parsed and validated, runTools runs the
 * handlers and feeds results and errors back through the template, and the conversation goes on.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { AbortError, BUILTIN_CHAT_TEMPLATES, loadModel, renderChatTemplate, runTools, type ChatFormat, type Model, type ToolDefinition } from '../lib/index.js';
import { toolCallProblem, toolCallTrigger } from '../lib/structured.js';
import { tempDir } from './helpers/tmp.js';
import { writeTinyMoe } from './helpers/tiny-moe.js';
import type { VocabularyFamily } from './helpers/vocab.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});

const weatherSchema = {
  type: 'object',
  properties: { city: { type: 'string', enum: ['Paris', 'Oslo', 'Lima'] }, unit: { enum: ['C', 'F'] } },
  required: ['city', 'unit'],
  additionalProperties: false,
} as const;
const addSchema = {
  type: 'object',
  properties: { a: { type: 'integer' }, b: { type: 'integer' } },
  required: ['a', 'b'],
  additionalProperties: false,
} as const;

interface Case {
  label: string;
  vocabulary: VocabularyFamily;
  format: ChatFormat;
  builtin?: 'kimi-k2';
  /** Calls one turn can hold (harmony: one per message). */
  callsPerTurn: number;
  /** The vocabulary has the format's tool-call opening marker as one token (a logit bias can push it). */
  triggerToken: boolean;
}

const CASES: Case[] = [
  { label: 'Qwen3', vocabulary: 'qwen3', format: 'qwen3', callsPerTurn: 2, triggerToken: true },
  { label: 'DeepSeek-V3', vocabulary: 'deepseek-v3', format: 'deepseek-v3', callsPerTurn: 2, triggerToken: true },
  {
    label: 'Kimi K2 (its template on the DeepSeek-V3 vocabulary)',
    vocabulary: 'deepseek-v3',
    format: 'kimi-k2',
    builtin: 'kimi-k2',
    callsPerTurn: 2,
    triggerToken: false,
  },
  { label: 'gpt-oss', vocabulary: 'gpt-oss', format: 'gpt-oss', callsPerTurn: 1, triggerToken: false },
];

describe.each(CASES)('tool calls: $label', ({ vocabulary, format, builtin, callsPerTurn, triggerToken }) => {
  let model: Model;
  beforeAll(async () => {
    const file = path.join(dir, `${vocabulary}.gguf`);
    if (!existsSync(file)) await writeTinyMoe(file, { arch: 'qwen3moe', weights: 'Q4_K_M', vocabulary, layers: 1 });
    model = await loadModel(file, { threads: 2, contextSize: 2048 });
    return () => model.dispose();
  }, 300_000);

  const chatOptions = () => ({
    system: 'You call tools.',
    temperature: 1,
    seed: 3,
    maxTokens: 300,
    format,
    templateVariables: { enable_thinking: false },
    ...(builtin ? { template: { name: `built-in ${builtin}`, source: BUILTIN_CHAT_TEMPLATES[builtin] } } : {}),
  });

  it('runTools: forced calls run their handlers, a handler error is fed back, then the model answers', async () => {
    await using chat = model.createChat(chatOptions());
    const seen: unknown[] = [];
    const tools: Record<string, ToolDefinition> = {
      get_weather: {
        description: 'The weather in a city',
        schema: weatherSchema,
        handler: (args) => {
          seen.push(args);
          return { temperature: 21, sky: 'clear' };
        },
      },
      add: {
        description: 'Adds two integers',
        schema: addSchema,
        handler: (args) => {
          seen.push(args);
          throw new Error('the adder is broken');
        },
      },
    };
    const result = await runTools(chat, {
      message: 'What is the weather in Paris, and what is 2 + 3?',
      tools,
      maxSteps: 3,
      // Random weights never call a tool on their own: force the first turn's calls, then let it answer.
      toolChoice: (step) => (step === 0 ? { minCalls: callsPerTurn, maxCalls: callsPerTurn } : 'none'),
    });
    const [first, last] = [result.steps[0]!, result.steps.at(-1)!];
    expect(first.toolCalls.length).toBe(callsPerTurn);
    expect(first.toolCallErrors).toEqual([]);
    expect(first.finishReason).toBe('tool-calls');
    for (const call of first.toolCalls) {
      expect(['get_weather', 'add']).toContain(call.name);
      const schema = call.name === 'add' ? addSchema : weatherSchema;
      expect(Object.keys(call.arguments as object).sort()).toEqual([...schema.required].sort());
    }
    expect(seen).toEqual(first.toolCalls.map((c) => c.arguments));
    expect(first.toolResults.map((r) => r.name)).toEqual(first.toolCalls.map((c) => c.name));
    expect(result.steps.length).toBe(2);
    expect(last.toolCalls).toEqual([]);
    expect(result.finishReason).not.toBe('max-steps');

    // The history holds the call(s), the tool results (an error as an error) and the answer, and the
    // template renders the results back into the next prompt.
    const roles = chat.history.map((m) => m.role);
    expect(roles).toEqual(['system', 'user', 'assistant', ...Array(callsPerTurn).fill('tool'), 'assistant']);
    const toolMessages = chat.history.filter((m) => m.role === 'tool');
    for (const [i, m] of toolMessages.entries()) {
      expect(m.content).toBe(first.toolCalls[i]!.name === 'add' ? 'Error: the adder is broken' : '{"temperature":21,"sky":"clear"}');
    }
    const prompt = renderChatTemplate(chat.template, {
      messages: chat.history,
      tools: Object.entries(tools).map(([name, t]) => ({ name, description: t.description, parameters: t.schema as Record<string, unknown> })),
    });
    for (const m of toolMessages) expect(prompt).toContain(m.content.includes('broken') ? 'the adder is broken' : '"sky":"clear"');
  });

  it('an abort during a handler ends the loop with an AbortError; the completed turn stays in the history', async () => {
    await using chat = model.createChat(chatOptions());
    const controller = new AbortController();
    const run = runTools(chat, {
      message: 'Weather?',
      signal: controller.signal,
      toolChoice: { name: 'get_weather' },
      tools: {
        get_weather: {
          schema: weatherSchema,
          handler: async (_args, { signal }) => {
            controller.abort();
            signal?.throwIfAborted();
          },
        },
      },
    });
    await expect(run).rejects.toBeInstanceOf(AbortError);
    expect(chat.history.map((m) => m.role)).toEqual(['system', 'user', 'assistant']);
  });

  // Only where the vocabulary has the opening marker as one token, which a logit bias can push.
  (triggerToken ? it : () => {})("auto: once the model opens a tool call (here pushed by a logit bias), the grammar constrains the rest", async () => {
    const trigger = toolCallTrigger(format)!;
    const id = model.tokenizer.tokenId(trigger);
    expect(id).toBeDefined();
    await using chat = model.createChat(chatOptions());
    const tools = [{ name: 'get_weather', parameters: weatherSchema as never }];
    // A random model would not end its turn by itself: a smaller bias on the end-of-generation tokens
    // ends it once the grammar allows it (inside the call the grammar masks them).
    const bias: Record<number, number> = { [id!]: 60 };
    for (const eog of model.tokenizer.eogTokens) bias[eog] = 30;
    const r = await chat.send('Weather in Lima?', { tools, toolChoice: 'auto', logitBias: bias, maxTokens: 400 }).final;
    // The turn ends at an end-of-generation token, or where the grammar allows nothing more.
    expect(r.rawFinishReason).toMatch(/^(eos|grammar-complete)$/);
    expect(r.toolCallErrors).toEqual([]);
    expect(r.toolCalls.length).toBeGreaterThanOrEqual(1);
    for (const call of r.toolCalls) expect(toolCallProblem(call, tools)).toBeUndefined();
    expect(r.finishReason).toBe('tool-calls');
    // Without the grammar the same random model writes no valid call after the marker.
    await using free = model.createChat({ ...chatOptions(), format: 'plain' });
    const raw = await free.send('Weather in Lima?', { tools, toolChoice: 'auto', logitBias: { [id!]: 60 }, maxTokens: 60 }).final;
    expect(raw.text.includes('"arguments"')).toBe(false);
  });

  it('{ name } forces exactly one call of that tool', async () => {
    await using chat = model.createChat(chatOptions());
    const r = await chat.send('Weather in Oslo?', { toolChoice: { name: 'get_weather' }, tools: [{ name: 'get_weather', parameters: weatherSchema as never }] }).final;
    expect(r.toolCalls.length).toBe(1);
    expect(r.toolCalls[0]!.name).toBe('get_weather');
    expect(['Paris', 'Oslo', 'Lima']).toContain((r.toolCalls[0]!.arguments as { city: string }).city);
    expect(r.finishReason).toBe('tool-calls');
  });
});

describe('tool-call validation', () => {
  it('names the unknown tool or the arguments that do not match', () => {
    const tools = [{ name: 'get_weather', parameters: weatherSchema as never }];
    expect(toolCallProblem({ name: 'get_weather', arguments: { city: 'Oslo', unit: 'C' } }, tools)).toBeUndefined();
    expect(toolCallProblem({ name: 'nope', arguments: {} }, tools)).toMatch(/no tool named 'nope'/);
    expect(toolCallProblem({ name: 'get_weather', arguments: { city: 'Rome', unit: 'C' } }, tools)).toMatch(/do not match/);
    expect(toolCallProblem({ name: 'get_weather', arguments: { city: 'Oslo' } }, tools)).toMatch(/unit/);
  });
});
