/**
 * Chat-template rendering: the Jinja templates models ship in `tokenizer.chat_template`, rendered with
 * `@huggingface/jinja` and the variables Hugging Face's renderer gives them, from node-moe's own
 * message shape.
 */
import { Environment, Interpreter, Template } from '@huggingface/jinja';
import { ChatTemplateError } from '../errors.js';
import type { BuiltinChatTemplateName, ChatMessage, ChatTool, ChatToolCall } from './types.js';

/** A chat template with where it came from (for error messages) and the special-token texts it needs. */
export interface ChatTemplate {
  /**
   * What to call the template in errors: the metadata key it was read from
   * (`tokenizer.chat_template`, `tokenizer.chat_template.tool_use`) or `built-in <name>`.
   */
  name: string;
  /** The Jinja source. */
  source: string;
  /** Set when node-moe supplied the template because the file has none. */
  builtin?: BuiltinChatTemplateName;
  /** Text of the model's BOS token; the default of {@link RenderChatTemplateInput.bosToken}. */
  bosToken?: string;
  /** Text of the model's EOS token; the default of {@link RenderChatTemplateInput.eosToken}. */
  eosToken?: string;
}

/**
 * Extra template variables. Templates read what they know and ignore the rest; the ones below are
 * the common ones. Values are passed as they are (`undefined` entries are left out).
 */
export interface ChatTemplateVariables {
  /** Qwen3, DeepSeek-V3.1: `false` asks for an answer without reasoning. Template default: reasoning on (Qwen3), off (DeepSeek-V3.1). */
  enable_thinking?: boolean;
  /** gpt-oss: how hard to think. Template default `'medium'`. */
  reasoning_effort?: 'low' | 'medium' | 'high';
  /** gpt-oss: built-in tools to describe (`'browser'`, `'python'`). Template default none. */
  builtin_tools?: string[];
  /** gpt-oss: the first line of the system message. Template default "You are ChatGPT, …". */
  model_identity?: string;
  [name: string]: unknown;
}

/**
 * How tool-call arguments are handed to the template: `'object'` parses JSON text into a value,
 * `'string'` serialises values to JSON text (`JSON.stringify`), `'auto'` does what the template needs:
 * unchanged when it tests `arguments is string`, a string when it concatenates them (the original
 * DeepSeek-V3 template), otherwise a value (the Hugging Face convention: `arguments | tojson`).
 */
export type ToolCallArgumentsMode = 'auto' | 'object' | 'string';

/** What {@link renderChatTemplate} renders. */
export interface RenderChatTemplateInput {
  /** The conversation, oldest first. */
  messages: readonly ChatMessage[];
  /** Functions the model may call. Default none: an empty list counts as none, as templates expect. */
  tools?: readonly ChatTool[];
  /**
   * End the prompt with the header of a new assistant message, so the model's next tokens are its
   * reply. Default `true` (unlike Hugging Face's `false`: prompting for a reply is the usual case here).
   */
  addGenerationPrompt?: boolean;
  /** Text of the BOS token (`bos_token`). Default: the template's {@link ChatTemplate.bosToken}, else undefined. */
  bosToken?: string;
  /** Text of the EOS token (`eos_token`). Default: the template's {@link ChatTemplate.eosToken}, else undefined. */
  eosToken?: string;
  /** More template variables (`enable_thinking`, `reasoning_effort`, …). They cannot replace the ones above. */
  extra?: ChatTemplateVariables;
  /** The time `strftime_now` reports (templates print the current date). Default: now. */
  now?: Date;
  /** See {@link ToolCallArgumentsMode}. Default `'auto'`. */
  toolCallArguments?: ToolCallArgumentsMode;
}

/** Conventions a template expects that differ between families, read from its source. */
interface TemplateConventions {
  /** How tool-call arguments must be passed, in `'auto'` mode. */
  toolCallArguments: 'as-given' | 'object' | 'string';
  /**
   * The template tests `content is none` / `is not none` (DeepSeek-V3 renders tool calls only for
   * `none`, R1's distills render an empty turn after them otherwise), so an assistant message with
   * tool calls and no text must have `content: null`. Other templates want `''` there (Qwen3 calls
   * string methods on it).
   */
  nullContentWithToolCalls: boolean;
}

interface CompiledTemplate {
  template: Template;
  conventions: TemplateConventions;
}

/** Templates are parsed once; a handful stay cached (one model rarely has more than two). */
const COMPILED_CACHE_SIZE = 16;
const compiledCache = new Map<string, CompiledTemplate>();

function readConventions(source: string): TemplateConventions {
  // `arguments`, optionally followed by the closing quote/bracket of a subscript: ['arguments'].
  const args = String.raw`arguments['"\]]*`;
  let toolCallArguments: TemplateConventions['toolCallArguments'] = 'object';
  if (new RegExp(`${args}\\s+is\\s+(not\\s+)?(string|mapping)`).test(source)) toolCallArguments = 'as-given';
  else if (new RegExp(`${args}\\s*\\|\\s*tojson`).test(source)) toolCallArguments = 'object';
  else if (new RegExp(`${args}\\s*[+~]|[+~]\\s*[\\w.\\[\\]'"]*${args}`).test(source)) toolCallArguments = 'string';
  // `content is none` / `content is not none`, but not `reasoning_content is not none` (Qwen3).
  const nullContentWithToolCalls = /(?<![\w])content['"\]]*\s+is\s+(not\s+)?none/.test(source);
  return { toolCallArguments, nullContentWithToolCalls };
}

function compile(source: string, name: string): CompiledTemplate {
  const cached = compiledCache.get(source);
  if (cached) {
    // Re-insert so the cache evicts the least recently used entry.
    compiledCache.delete(source);
    compiledCache.set(source, cached);
    return cached;
  }
  let template: Template;
  try {
    template = new Template(source);
  } catch (error) {
    throw new ChatTemplateError(`${describe(name)} could not be parsed: ${messageOf(error)}`, {
      templateName: name,
      reason: 'parse',
      cause: error,
    });
  }
  const compiled = { template, conventions: readConventions(source) };
  compiledCache.set(source, compiled);
  if (compiledCache.size > COMPILED_CACHE_SIZE) compiledCache.delete(compiledCache.keys().next().value as string);
  return compiled;
}

function describe(name: string): string {
  return name === '' ? 'chat template' : `chat template "${name}"`;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Thrown by the template's `raise_exception(...)`, to tell it apart from the renderer's own errors. */
class TemplateRaisedError extends Error {}

/**
 * Renders a chat template for a conversation: the prompt text, special tokens written as their text
 * (tokenize it with `special: true`).
 *
 * The template sees what Hugging Face's renderer gives it: `messages` (each `{ role, content,
 * reasoning_content?, thinking?, tool_calls?: [{ id?, type: 'function', function: { name, arguments } }],
 * tool_call_id?, name? }`), `tools` (OpenAI form, or `none`), `add_generation_prompt`, `bos_token`,
 * `eos_token`, `raise_exception`, `strftime_now`, then {@link RenderChatTemplateInput.extra}.
 * Beyond the Jinja subset `@huggingface/jinja` implements, Python's list `append`/`extend`/`insert`/`pop`
 * and dict `pop` work (Kimi K2's template needs them).
 *
 * @param template Jinja source, or a {@link ChatTemplate} (from {@link chatTemplateFromMetadata}).
 * @throws ChatTemplateError when the template does not parse, fails to render, or calls `raise_exception`.
 */
export function renderChatTemplate(template: string | ChatTemplate, input: RenderChatTemplateInput): string {
  const name = typeof template === 'string' ? '' : template.name;
  const source = typeof template === 'string' ? template : template.source;
  const { template: compiled, conventions } = compile(source, name);
  const argumentsMode = input.toolCallArguments ?? 'auto';
  const passArguments = argumentsMode === 'auto' ? conventions.toolCallArguments : argumentsMode;
  const tools = input.tools && input.tools.length > 0 ? input.tools.map(toTemplateTool) : null;
  const bosToken = input.bosToken ?? (typeof template === 'string' ? undefined : template.bosToken);
  const eosToken = input.eosToken ?? (typeof template === 'string' ? undefined : template.eosToken);
  const now = input.now;

  const variables: Record<string, unknown> = {
    ...withoutUndefined(input.extra ?? {}),
    messages: input.messages.map((message) => toTemplateMessage(message, conventions, passArguments)),
    tools,
    add_generation_prompt: input.addGenerationPrompt ?? true,
    raise_exception: (message: unknown) => {
      throw new TemplateRaisedError(String(message));
    },
    strftime_now: (format: unknown) => strftime(now ?? new Date(), String(format)),
  };
  if (bosToken !== undefined) variables.bos_token = bosToken;
  if (eosToken !== undefined) variables.eos_token = eosToken;

  try {
    return run(compiled, variables);
  } catch (error) {
    if (error instanceof TemplateRaisedError) {
      throw new ChatTemplateError(`${describe(name)} raised an error: ${error.message}`, {
        templateName: name,
        reason: 'raised',
        cause: error,
      });
    }
    throw new ChatTemplateError(`${describe(name)} failed to render: ${messageOf(error)}`, {
      templateName: name,
      reason: 'render',
      cause: error,
    });
  }
}

/** A runtime value of the interpreter (the package does not export its classes). */
type RuntimeValue = ReturnType<Environment['set']>;

/** The parts of the interpreter's internals the list-method extension uses. */
interface InterpreterInternals {
  evaluate(node: unknown, environment: Environment): RuntimeValue;
  evaluateArguments(args: unknown[], environment: Environment): [RuntimeValue[], Map<string, RuntimeValue>];
  evaluateCallExpression(expression: CallNode, environment: Environment): RuntimeValue;
}

interface CallNode {
  type: 'CallExpression';
  callee: { type: string; computed?: boolean; object?: unknown; property?: { type: string; value?: unknown } };
  args: unknown[];
}

const MUTATING_METHODS = new Set(['append', 'extend', 'insert', 'pop']);

/**
 * Does what `Template.render` does, on an interpreter that also runs Python's mutating list methods:
 * `@huggingface/jinja` 0.5 has none, and the official Kimi K2 templates queue tool-call ids with
 * `append`/`pop`. Only this interpreter instance is changed; the package's classes are untouched.
 */
function run(template: Template, variables: Record<string, unknown>): string {
  const environment = new Environment();
  // The globals Template.render sets up (setupGlobals is not exported).
  const globals: Record<string, unknown> = {
    false: false,
    true: true,
    none: null,
    False: false,
    True: true,
    None: null,
    range: pythonRange,
  };
  for (const [key, value] of Object.entries({ ...globals, ...variables })) environment.set(key, value);
  const none = environment.lookupVariable('none');
  const interpreter = new Interpreter(environment);
  const internals = interpreter as unknown as InterpreterInternals;
  const evaluateCall = internals.evaluateCallExpression.bind(interpreter);
  internals.evaluateCallExpression = (expression, scope) => {
    const callee = expression.callee;
    const method = callee.property?.value;
    if (callee.type === 'MemberExpression' && !callee.computed && typeof method === 'string' && MUTATING_METHODS.has(method)) {
      const target = internals.evaluate(callee.object, scope);
      if (target.type === 'ArrayValue' || (target.type === 'ObjectValue' && method === 'pop')) {
        const [args] = internals.evaluateArguments(expression.args, scope);
        return applyMutatingMethod(target, method, args, none);
      }
    }
    return evaluateCall(expression, scope);
  };
  return String(interpreter.run(template.parsed).value);
}

function applyMutatingMethod(target: RuntimeValue, method: string, args: RuntimeValue[], none: RuntimeValue): RuntimeValue {
  if (target.type === 'ObjectValue') {
    // dict.pop(key[, default])
    const map = target.value as Map<string, RuntimeValue>;
    const key = String(args[0]?.value);
    const found = map.get(key);
    if (found === undefined) {
      if (args[1] !== undefined) return args[1];
      throw new Error(`KeyError: '${key}'`);
    }
    map.delete(key);
    return found;
  }
  const list = target.value as RuntimeValue[];
  // The interpreter caches `length` on first use; drop the cache so it sees the change.
  (target as unknown as { _builtins?: unknown })._builtins = undefined;
  const index = (value: RuntimeValue | undefined, fallback: number, size: number) => {
    const i = value === undefined ? fallback : Number(value.value);
    return i < 0 ? i + size : i;
  };
  switch (method) {
    case 'append':
      list.push(args[0] ?? none);
      return none;
    case 'extend':
      if (args[0]?.type !== 'ArrayValue') throw new Error('extend() takes a list');
      list.push(...(args[0].value as RuntimeValue[]));
      return none;
    case 'insert': {
      const at = Math.min(Math.max(index(args[0], 0, list.length), 0), list.length);
      list.splice(at, 0, args[1] ?? none);
      return none;
    }
    default: {
      // pop([index])
      const at = index(args[0], -1, list.length);
      if (list.length === 0 || at < 0 || at >= list.length) throw new Error('pop index out of range');
      return list.splice(at, 1)[0] as RuntimeValue;
    }
  }
}

/** Python's `range(stop)` / `range(start, stop[, step])`. */
function pythonRange(...args: number[]): number[] {
  const [start, stop, step] = args.length === 1 ? [0, args[0] ?? 0, 1] : [args[0] ?? 0, args[1] ?? 0, args[2] ?? 1];
  if (step === 0) throw new Error('range() step must not be zero');
  const out: number[] = [];
  for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i);
  return out;
}

const WEEKDAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];

/** Python's `datetime.strftime` in the C locale (local time), for the directives templates use. */
export function strftime(date: Date, format: string): string {
  const pad = (n: number, width = 2) => String(n).padStart(width, '0');
  const hours12 = date.getHours() % 12 === 0 ? 12 : date.getHours() % 12;
  const startOfYear = new Date(date.getFullYear(), 0, 1);
  const dayOfYear = Math.round((new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime() - startOfYear.getTime()) / 86_400_000) + 1;
  // `%-d` (glibc's no-padding flag, which Python on Linux passes through) drops the leading zero.
  return format.replace(/%(-?)([a-zA-Z%])/g, (whole, noPad: string, directive: string) => {
    const text = directiveText(directive);
    if (text === undefined) return whole;
    return noPad ? text.replace(/^[0 ]+(?=.)/, '') : text;
  });
  function directiveText(directive: string): string | undefined {
    switch (directive) {
      case 'Y': return String(date.getFullYear());
      case 'y': return pad(date.getFullYear() % 100);
      case 'm': return pad(date.getMonth() + 1);
      case 'd': return pad(date.getDate());
      case 'e': return String(date.getDate()).padStart(2, ' ');
      case 'H': return pad(date.getHours());
      case 'I': return pad(hours12);
      case 'M': return pad(date.getMinutes());
      case 'S': return pad(date.getSeconds());
      case 'p': return date.getHours() < 12 ? 'AM' : 'PM';
      case 'j': return pad(dayOfYear, 3);
      case 'A': return WEEKDAYS[date.getDay()];
      case 'a': return WEEKDAYS[date.getDay()]?.slice(0, 3);
      case 'B': return MONTHS[date.getMonth()];
      case 'b': return MONTHS[date.getMonth()]?.slice(0, 3);
      case '%': return '%';
      default: return undefined;
    }
  }
}

/** Copies plain objects and arrays without `undefined` members (the template would see them as defined). */
function withoutUndefined<T>(value: T): T {
  if (Array.isArray(value)) return value.map(withoutUndefined) as T;
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const out: Record<string, unknown> = {};
    for (const [key, member] of Object.entries(value)) if (member !== undefined) out[key] = withoutUndefined(member);
    return out as T;
  }
  return value;
}

function toTemplateTool(tool: ChatTool): unknown {
  if ('function' in tool && (tool as { type?: unknown }).type === 'function') return withoutUndefined(tool);
  const { name, description, parameters } = tool as { name: string; description?: string; parameters?: unknown };
  return withoutUndefined({ type: 'function', function: { name, description, parameters } });
}

function toTemplateArguments(value: unknown, mode: 'as-given' | 'object' | 'string'): unknown {
  if (mode === 'string') return typeof value === 'string' ? value : JSON.stringify(value ?? {});
  if (mode === 'object' && typeof value === 'string') {
    try {
      return JSON.parse(value) as unknown;
    } catch {
      return value; // not JSON: the template shows it as text
    }
  }
  return withoutUndefined(value);
}

function toTemplateToolCall(call: ChatToolCall, mode: 'as-given' | 'object' | 'string'): unknown {
  return {
    ...(call.id === undefined ? {} : { id: call.id }),
    type: 'function',
    function: { name: call.name, arguments: toTemplateArguments(call.arguments, mode) },
  };
}

function toTemplateMessage(
  message: ChatMessage,
  conventions: TemplateConventions,
  argumentsMode: 'as-given' | 'object' | 'string',
): Record<string, unknown> {
  const toolCalls = message.toolCalls && message.toolCalls.length > 0 ? message.toolCalls : undefined;
  // Accept null content from OpenAI-shaped callers; templates want a string.
  const content = (message.content as string | null | undefined) ?? '';
  const out: Record<string, unknown> = {
    role: message.role,
    content: toolCalls && content === '' && conventions.nullContentWithToolCalls ? null : content,
  };
  if (message.reasoning !== undefined) {
    out.reasoning_content = message.reasoning;
    out.thinking = message.reasoning;
  }
  if (toolCalls) out.tool_calls = toolCalls.map((call) => toTemplateToolCall(call, argumentsMode));
  if (message.toolCallId !== undefined) out.tool_call_id = message.toolCallId;
  if (message.name !== undefined) out.name = message.name;
  return out;
}
