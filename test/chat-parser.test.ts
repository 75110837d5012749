/**
 * Streaming output parsers: each family's output (reasoning, text, tool calls), built from the real
 * templates' conventions, fed whole, one character at a time and in seeded random chunkings, must
 * give the same parts; tool calls come out once and complete; malformed JSON becomes a
 * `tool-call-error` part; text that only looks like a marker passes through.
 */
import { describe, expect, it } from 'vitest';
import {
  builtinChatTemplate,
  createChatOutputParser,
  renderChatTemplate,
  type ChatFormat,
  type ChatMessage,
  type ChatOutputParserOptions,
  type ChatPart,
  type ChatTemplate,
} from '../lib/index.js';
import { CONVERSATION, TOOLS, chunkings, feed, randomChunks, realTemplate } from './helpers/chat-fixtures.js';
import { Prng } from './helpers/prng.js';

/** Deterministic ids, so every chunking yields equal parts. */
const ids: ChatOutputParserOptions = { createToolCallId: (name, index) => `${name}#${index}` };

/** Reasoning and text with characters that start markers (`<`, `[`, `|`) but are none. */
const REASONING = 'The user wants two things: a <b> tag is not a marker, nor is a < b.\nSo: weather, then time.';
const TEXT = 'Let me check [both] for you <3';
const ASSISTANT: ChatMessage = {
  role: 'assistant',
  content: TEXT,
  reasoning: REASONING,
  toolCalls: [
    { name: 'get_weather', arguments: { city: 'Paris', unit: 'celsius' } },
    { name: 'get_time', arguments: { city: 'Tokyo' } },
  ],
};

/**
 * What the model generates for `reply` under `template`: the rendered conversation with the reply,
 * minus the prompt that asks for it (the reply's own turn as the template writes it).
 */
function generatedBy(template: string | ChatTemplate, reply: ChatMessage): string {
  const history = CONVERSATION.slice(0, 4);
  const input = { tools: TOOLS, bosToken: '<s>', eosToken: '</s>' };
  const prompt = renderChatTemplate(template, { ...input, messages: history });
  const full = renderChatTemplate(template, { ...input, messages: [...history, reply], addGenerationPrompt: false });
  if (!full.startsWith(prompt)) throw new Error('the rendered reply does not extend the prompt');
  return full.slice(prompt.length);
}

function toolCall(name: string, args: unknown, rawArguments: string, id: string): ChatPart {
  return { type: 'tool-call', id, name, arguments: args, rawArguments };
}

const WEATHER = { city: 'Paris', unit: 'celsius' };
const TIME = { city: 'Tokyo' };

interface Case {
  label: string;
  format: ChatFormat;
  options?: ChatOutputParserOptions;
  output: string;
  expected: ChatPart[];
}

function cases(): Case[] {
  const qwenOutput = generatedBy(realTemplate('qwen3'), ASSISTANT);
  // The real DeepSeek-V3 template writes tool calls only for messages without content or
  // reasoning; the reasoning and text R1 generates before them are prepended the way R1 writes them.
  const deepseekCalls = generatedBy(realTemplate('deepseek_v3'), {
    ...ASSISTANT,
    content: '',
    reasoning: undefined,
    toolCalls: ASSISTANT.toolCalls?.map((c) => ({ ...c, arguments: JSON.stringify(c.arguments) })),
  });
  const deepseekOutput = `<think>\n${REASONING}\n</think>\n\n${TEXT}${deepseekCalls}`;
  const deepseekV31Output = generatedBy(builtinChatTemplate('deepseek-v3'), { ...ASSISTANT, reasoning: undefined });
  const kimiOutput = generatedBy(builtinChatTemplate('kimi-k2'), ASSISTANT);
  const mistralOutput = generatedBy(builtinChatTemplate('mistral'), {
    ...ASSISTANT,
    reasoning: undefined,
    toolCalls: ASSISTANT.toolCalls?.map((c, i) => ({ ...c, id: `call0000${i + 1}` })),
  });
  const reasoningPart: ChatPart = { type: 'reasoning-delta', text: REASONING };
  const textPart: ChatPart = { type: 'text-delta', text: TEXT };

  return [
    {
      label: 'qwen3: reasoning, text, two tool calls (real template)',
      format: 'qwen3',
      output: qwenOutput,
      expected: [
        reasoningPart,
        textPart,
        toolCall('get_weather', WEATHER, '{"city": "Paris", "unit": "celsius"}', 'get_weather#0'),
        toolCall('get_time', TIME, '{"city": "Tokyo"}', 'get_time#1'),
      ],
    },
    {
      label: 'qwen3: output that starts inside the reasoning the prompt opened',
      format: 'qwen3',
      options: { ...ids, startsInReasoning: true },
      output: `${REASONING}\n</think>\n\n${TEXT}<|im_end|>`,
      expected: [reasoningPart, textPart],
    },
    {
      label: 'deepseek-v3: R1 reasoning, text, V3 fenced tool calls (real template)',
      format: 'deepseek-v3',
      output: deepseekOutput,
      expected: [
        reasoningPart,
        textPart,
        toolCall('get_weather', WEATHER, '{"city":"Paris","unit":"celsius"}', 'get_weather#0'),
        toolCall('get_time', TIME, '{"city":"Tokyo"}', 'get_time#1'),
      ],
    },
    {
      label: 'deepseek-v3: V3.1 tool calls after a thinking-mode prompt',
      format: 'deepseek-v3',
      options: { ...ids, startsInReasoning: true },
      output: `${REASONING}</think>${deepseekV31Output.replace(/^<｜Assistant｜><\/think>/, '')}`,
      expected: [
        reasoningPart,
        textPart,
        toolCall('get_weather', WEATHER, '{"city": "Paris", "unit": "celsius"}', 'get_weather#0'),
        toolCall('get_time', TIME, '{"city": "Tokyo"}', 'get_time#1'),
      ],
    },
    {
      label: 'kimi-k2: reasoning, text, a tool-call section with model ids',
      format: 'kimi-k2',
      output: kimiOutput,
      expected: [
        reasoningPart,
        textPart,
        toolCall('get_weather', WEATHER, '{"city": "Paris", "unit": "celsius"}', 'functions.get_weather:0'),
        toolCall('get_time', TIME, '{"city": "Tokyo"}', 'functions.get_time:1'),
      ],
    },
    {
      label: 'kimi-k2: tool calls straight out of unclosed reasoning (K2 Thinking does this)',
      format: 'kimi-k2',
      output: `<think>${REASONING}<|tool_calls_section_begin|><|tool_call_begin|>functions.get_time:3<|tool_call_argument_begin|>{"city": "Tokyo"}<|tool_call_end|><|tool_calls_section_end|><|im_end|>`,
      expected: [reasoningPart, toolCall('get_time', TIME, '{"city": "Tokyo"}', 'functions.get_time:3')],
    },
    {
      label: 'mistral: text and a [TOOL_CALLS] JSON array with ids (v3)',
      format: 'mistral',
      output: mistralOutput,
      expected: [
        textPart,
        toolCall('get_weather', WEATHER, '{"city": "Paris", "unit": "celsius"}', 'call00001'),
        toolCall('get_time', TIME, '{"city": "Tokyo"}', 'call00002'),
      ],
    },
    {
      label: 'mistral: [THINK] reasoning and NAME[CALL_ID]ID[ARGS]{…} calls (v11+, Magistral)',
      format: 'mistral',
      output: `[THINK]${REASONING}[/THINK]${TEXT}[TOOL_CALLS]get_weather[CALL_ID]abcDEF123[ARGS]{"city": "Paris", "unit": "celsius"}[TOOL_CALLS]get_time[ARGS]{"city": "Tokyo"}</s>`,
      expected: [
        reasoningPart,
        textPart,
        toolCall('get_weather', WEATHER, '{"city": "Paris", "unit": "celsius"}', 'abcDEF123'),
        toolCall('get_time', TIME, '{"city": "Tokyo"}', 'get_time#1'),
      ],
    },
    {
      label: 'gpt-oss: analysis, a preamble, and a tool call (recipient in the channel header)',
      format: 'gpt-oss',
      output:
        `<|channel|>analysis<|message|>${REASONING}<|end|>` +
        `<|start|>assistant<|channel|>commentary<|message|>${TEXT}<|end|>` +
        '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris","unit":"celsius"}<|call|>',
      expected: [reasoningPart, textPart, toolCall('get_weather', WEATHER, '{"city":"Paris","unit":"celsius"}', 'get_weather#0')],
    },
    {
      label: 'gpt-oss: a tool call with the recipient in the role header, stop token not fed',
      format: 'gpt-oss',
      output: ` to=functions.get_time<|channel|>commentary json<|message|>{"city":"Tokyo"}`,
      expected: [toolCall('get_time', TIME, '{"city":"Tokyo"}', 'get_time#0')],
    },
    {
      label: 'gpt-oss: analysis then the final answer',
      format: 'gpt-oss',
      output: `<|channel|>analysis<|message|>${REASONING}<|end|><|start|>assistant<|channel|>final<|message|>${TEXT}<|return|>`,
      expected: [reasoningPart, textPart],
    },
  ];
}

describe('every chunking gives the same parts', () => {
  for (const [index, testCase] of cases().entries()) {
    it(testCase.label, () => {
      for (const { label, chunks } of chunkings(testCase.output, 1000 + index)) {
        const parts = feed(createChatOutputParser(testCase.format, testCase.options ?? ids), chunks);
        expect(parts, label).toEqual(testCase.expected);
      }
    });
  }
});

describe('streaming', () => {
  it('holds back text that may start a marker and emits a split tool call once, complete', () => {
    const parser = createChatOutputParser('qwen3', ids);
    expect(parser.push('Hello <')).toEqual([{ type: 'text-delta', text: 'Hello' }]);
    expect(parser.push('tool_')).toEqual([]);
    expect(parser.push('call>\n{"name": "f", "argu')).toEqual([]);
    expect(parser.push('ments": {"x": 1}}\n</tool')).toEqual([]);
    expect(parser.push('_call>')).toEqual([toolCall('f', { x: 1 }, '{"x": 1}', 'f#0')]);
    expect(parser.push('<|im_end|>')).toEqual([]);
    expect(parser.finish()).toEqual([]);
  });

  it('releases a held-back marker prefix when the output ends', () => {
    const parser = createChatOutputParser('qwen3', ids);
    expect(parser.push('a < b, and <thi')).toEqual([{ type: 'text-delta', text: 'a < b, and' }]);
    expect(parser.finish()).toEqual([{ type: 'text-delta', text: ' <thi' }]);
  });

  it('streams reasoning and text as they arrive, without the template’s newlines', () => {
    const parser = createChatOutputParser('qwen3', ids);
    expect(parser.push('<think>\nStep one')).toEqual([{ type: 'reasoning-delta', text: 'Step one' }]);
    expect(parser.push('.\nStep two.\n')).toEqual([{ type: 'reasoning-delta', text: '.\nStep two.' }]);
    expect(parser.push('</think>\n\nThe answer')).toEqual([{ type: 'text-delta', text: 'The answer' }]);
    expect(parser.push(' is 42.')).toEqual([{ type: 'text-delta', text: ' is 42.' }]);
    expect(parser.finish()).toEqual([]);
  });

  it('ends an unterminated tool call at finish()', () => {
    const qwen = createChatOutputParser('qwen3', ids);
    expect(qwen.push('<tool_call>\n{"name": "f", "arguments": {}}')).toEqual([]);
    expect(qwen.finish()).toEqual([toolCall('f', {}, '{}', 'f#0')]);
    const kimi = createChatOutputParser('kimi-k2', ids);
    expect(kimi.push('<|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{"a": [1]}')).toEqual([]);
    expect(kimi.finish()).toEqual([toolCall('f', { a: [1] }, '{"a": [1]}', 'functions.f:0')]);
  });

  it('emits a Mistral [ARGS] call as soon as its JSON closes', () => {
    const parser = createChatOutputParser('mistral', ids);
    expect(parser.push('[TOOL_CALLS]f[ARGS]{"s": "}]\\"", "n": {')).toEqual([]);
    expect(parser.push('}}')).toEqual([toolCall('f', { s: '}]"', n: {} }, '{"s": "}]\\"", "n": {}}', 'f#0')]);
  });

  it('throws when pushed to after finish()', () => {
    const parser = createChatOutputParser('qwen3', ids);
    parser.finish();
    expect(() => parser.push('x')).toThrow();
    expect(parser.finish()).toEqual([]);
  });

  it('makes 9-character alphanumeric ids by default (the form Mistral templates require)', () => {
    const parts = feed(createChatOutputParser('qwen3'), ['<tool_call>{"name": "f", "arguments": {}}</tool_call><tool_call>{"name": "g", "arguments": {}}</tool_call>']);
    const callIds = parts.map((p) => (p.type === 'tool-call' ? p.id : ''));
    expect(callIds).toHaveLength(2);
    for (const id of callIds) expect(id).toMatch(/^[A-Za-z0-9]{9}$/);
    expect(callIds[0]).not.toBe(callIds[1]);
  });
});

describe('malformed tool calls become tool-call-error parts', () => {
  const after = 'Sorry, retrying.';
  const malformed: [ChatFormat, string, ChatPart][] = [
    [
      'qwen3',
      `<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par}\n</tool_call>\n${after}`,
      { type: 'tool-call-error', name: 'get_weather', rawArguments: '{"name": "get_weather", "arguments": {"city": "Par}', error: '' },
    ],
    [
      'qwen3',
      `<tool_call>{"arguments": {}}</tool_call>${after}`,
      { type: 'tool-call-error', rawArguments: '{"arguments": {}}', error: '' },
    ],
    [
      'deepseek-v3',
      `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n\`\`\`json\n{"city": }\n\`\`\`<｜tool▁call▁end｜><｜tool▁calls▁end｜>${after}`,
      { type: 'tool-call-error', name: 'get_weather', rawArguments: '{"city": }', error: '' },
    ],
    [
      'deepseek-v3',
      `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather {"city": "Paris"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>${after}`,
      { type: 'tool-call-error', rawArguments: 'get_weather {"city": "Paris"}', error: '' },
    ],
    [
      'kimi-k2',
      `<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"city"<|tool_call_end|><|tool_calls_section_end|>${after}`,
      { type: 'tool-call-error', name: 'get_weather', rawArguments: '{"city"', error: '' },
    ],
    [
      'mistral',
      `[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}</s>${after}`,
      { type: 'tool-call-error', name: 'get_weather', rawArguments: '[{"name": "get_weather", "arguments": {"city": "Paris"}', error: '' },
    ],
    [
      'mistral',
      `[TOOL_CALLS]get_weather[ARGS]{"city": Paris}${after}`,
      { type: 'tool-call-error', name: 'get_weather', rawArguments: '{"city": Paris}', error: '' },
    ],
    [
      'gpt-oss',
      `<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": 'Paris'}<|call|><|start|>assistant<|channel|>final<|message|>${after}`,
      { type: 'tool-call-error', name: 'get_weather', rawArguments: `{"city": 'Paris'}`, error: '' },
    ],
  ];

  it.each(malformed)('%s: %s', (format, output, expectedError) => {
    for (const { label, chunks } of chunkings(output, 7, 10)) {
      const parts = feed(createChatOutputParser(format, ids), chunks);
      expect(parts, label).toHaveLength(2);
      const [error, text] = parts;
      expect(error, label).toMatchObject({ ...expectedError, error: expect.any(String) });
      expect((error as { error: string }).error.length).toBeGreaterThan(0);
      expect(text, label).toEqual({ type: 'text-delta', text: after });
    }
  });
});

describe('text that only looks like markup passes through unchanged', () => {
  const TRICKY = 'if a < b and c <d> then x<-y; 1 <= 2, <tool or <|x|> [brackets] [TOOL and </s or <｜x｜> <think';
  const formats: ChatFormat[] = ['plain', 'qwen3', 'deepseek-v3', 'kimi-k2', 'mistral', 'gpt-oss'];

  it.each(formats)('%s', (format) => {
    // gpt-oss text always sits in a message; the others start in text.
    const output = format === 'gpt-oss' ? `<|channel|>final<|message|>${TRICKY}` : TRICKY;
    for (const { label, chunks } of chunkings(output, 99, 10)) {
      expect(feed(createChatOutputParser(format, ids), chunks), label).toEqual([{ type: 'text-delta', text: TRICKY }]);
    }
  });

  it('plain passes whitespace and markers through too', () => {
    const text = '  <think>\nhi</think>\n';
    expect(feed(createChatOutputParser('plain'), Array.from(text))).toEqual([{ type: 'text-delta', text }]);
  });
});

describe('random markup (seeded fuzz)', () => {
  // Markers of every family, their halves, JSON pieces, whitespace and marker-like characters.
  const PIECES = [
    '<think>', '</think>', '<tool_call>', '</tool_call>', '<|im_end|>', '<tool_', 'call>',
    '<｜tool▁calls▁begin｜>', '<｜tool▁call▁begin｜>', '<｜tool▁sep｜>', '<｜tool▁call▁end｜>', '<｜tool▁calls▁end｜>', '<｜end▁of▁sentence｜>', '<｜tool▁',
    '<|tool_calls_section_begin|>', '<|tool_call_begin|>', '<|tool_call_argument_begin|>', '<|tool_call_end|>', '<|tool_calls_section_end|>',
    '[TOOL_CALLS]', '[ARGS]', '[CALL_ID]', '[THINK]', '[/THINK]', '</s>', '[TOOL',
    '<|start|>', 'assistant', '<|channel|>', 'analysis', 'final', 'commentary', ' to=functions.f', ' <|constrain|>json', '<|message|>', '<|end|>', '<|call|>', '<|return|>',
    '{"name": "f", "arguments": {"a": [1, "}"]}}', '[{"name": "g", "arguments": {}}]', '{"a": 1}', '{', '}', '"', 'function', 'f', '\n```json\n', '```',
    ' ', '\n', '  \n', 'text', 'more words', '<', '[', '|', 'é', '😀',
  ];
  const formats: ChatFormat[] = ['qwen3', 'deepseek-v3', 'kimi-k2', 'mistral', 'gpt-oss'];

  it.each(formats)('%s: never throws, and chunking never changes the parts', (format) => {
    const prng = new Prng(formats.indexOf(format) + 1);
    for (let n = 0; n < 150; n++) {
      let output = '';
      const length = 1 + prng.int(40);
      for (let i = 0; i < length; i++) output += PIECES[prng.int(PIECES.length)];
      const options = { ...ids, startsInReasoning: prng.int(2) === 1 };
      const whole = feed(createChatOutputParser(format, options), [output]);
      for (const chunks of [Array.from(output), randomChunks(output, prng, 6)]) {
        expect(feed(createChatOutputParser(format, options), chunks), JSON.stringify(output)).toEqual(whole);
      }
      // Sections come out trimmed.
      for (const part of whole) {
        if (part.type === 'text-delta' || part.type === 'reasoning-delta') expect(part.text).not.toMatch(/^\s|\s$/);
      }
    }
  });
});
