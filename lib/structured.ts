/**
 * Structured output: JSON-schema and JSON-object response formats and tool-call grammars, compiled
 * (lib/grammar) into byte-level grammars that the native sampler turns into a token mask at every
 * step. Grammars are compiled once per model and schema; each generation gets its own matcher.
 */
import { loadBinding } from './binding.js';
import type { ChatFormat, ChatTool, ChatToolCallPart } from './chat/index.js';
import { compileJsonSchema, encodeGrammar, jsonObjectGrammar, validateJsonSchema, type GrammarElement, type GrammarIR } from './grammar/index.js';
import type { NativeGrammar, NativeGrammarMatcher, NativeTokenSet } from './native-types.js';
import { TokenType, type Tokenizer } from './tokenizer/tokenizer.js';

/** A JSON Schema (draft 2020-12 subset; see the README for what is supported). */
export type JsonSchema = Record<string, unknown> | boolean;

/**
 * How the reply is formatted. `json_schema`: the output is JSON that validates against `schema`
 * (`final.object` holds the parsed value); `json_object`: any JSON object; `text`: unconstrained.
 */
export type ResponseFormat<S extends JsonSchema = JsonSchema> =
  | { type: 'json_schema'; schema: S; name?: string }
  | { type: 'json_object' }
  | { type: 'text' };

/**
 * Whether and how a chat turn calls tools. `auto`: the model decides (calls are parsed from its
 * output); `required`: the reply is one or more tool calls, their syntax and arguments enforced by
 * a grammar; `none`: the tools are left out of the prompt; an object: required calls of the tool
 * `name` (default: any tool), `minCalls` to `maxCalls` of them (defaults: exactly one with a
 * `name`, else one or more).
 */
export type ToolChoice = 'auto' | 'required' | 'none' | { name?: string; minCalls?: number; maxCalls?: number };

const utf8 = new TextEncoder();

/** Composes byte-level grammars: literal text, references, other grammars embedded whole. */
class GrammarBuilder {
  readonly rules: GrammarElement[][][] = [];

  rule(alternatives: GrammarElement[][]): number {
    this.rules.push(alternatives);
    return this.rules.length - 1;
  }

  /** A placeholder rule whose alternatives are set later (for repetition). */
  reserve(): number {
    return this.rule([]);
  }

  define(rule: number, alternatives: GrammarElement[][]): void {
    this.rules[rule] = alternatives;
  }

  /** Copies a grammar in; returns its root rule. */
  embed(ir: GrammarIR): number {
    const base = this.rules.length;
    for (const alternatives of ir.rules) {
      this.rules.push(alternatives.map((alt) => alt.map((e) => (e.kind === 'ref' ? { kind: 'ref', rule: e.rule + base } : e))));
    }
    return ir.root + base;
  }

  literal(text: string): GrammarElement[] {
    return Array.from(utf8.encode(text), (b) => ({ kind: 'bytes', ranges: [[b, b]] }) as GrammarElement);
  }

  ref(rule: number): GrammarElement {
    return { kind: 'ref', rule };
  }

  /** 1 to `max` decimal digits. */
  digits(max: number): GrammarElement[] {
    const digit: GrammarElement = { kind: 'bytes', ranges: [[0x30, 0x39]] };
    let rest = this.rule([[]]);
    for (let i = 1; i < max; i++) rest = this.rule([[digit, this.ref(rest)], []]);
    return [digit, this.ref(rest)];
  }

  build(root: number): GrammarIR {
    return { root, rules: this.rules };
  }
}

/** The grammar of a response format; undefined for `text`. */
export function responseFormatGrammar(format: ResponseFormat | undefined): GrammarIR | undefined {
  if (!format || format.type === 'text') return undefined;
  if (format.type === 'json_object') return jsonObjectGrammar();
  if (format.type === 'json_schema') return compileJsonSchema(format.schema as never);
  throw new TypeError(`unknown responseFormat type '${String((format as { type: unknown }).type)}'`);
}

function toolName(tool: ChatTool): string {
  return 'function' in tool ? tool.function.name : tool.name;
}

function toolParameters(tool: ChatTool): JsonSchema {
  const p = 'function' in tool ? tool.function.parameters : tool.parameters;
  return (p as JsonSchema | undefined) ?? { type: 'object', properties: {} };
}

/**
 * The text that opens a format's tool calls (`<tool_call>` for Qwen3); undefined for formats
 * without a known syntax. In `auto` mode, once the model writes it, the rest of the calls is
 * constrained by {@link toolCallGrammar} with `afterTrigger`.
 */
export function toolCallTrigger(format: ChatFormat): string | undefined {
  switch (format) {
    case 'qwen3':
      return '<tool_call>';
    case 'deepseek-v3':
      return '<｜tool▁calls▁begin｜>';
    case 'kimi-k2':
      return '<|tool_calls_section_begin|>';
    case 'gpt-oss':
      return ' to=functions.';
    case 'mistral':
      return '[TOOL_CALLS]';
    default:
      return undefined;
  }
}

/**
 * The grammar of a reply that consists of `minCalls` to `maxCalls` (unbounded: Infinity) tool calls
 * in the chat format's syntax, each naming one of `tools` with arguments that validate against its
 * parameters schema; with `afterTrigger`, of what follows {@link toolCallTrigger}'s text. Undefined
 * for formats without a known tool-call syntax. gpt-oss (harmony) has one call per message, so at
 * most one.
 */
export function toolCallGrammar(
  format: ChatFormat,
  tools: readonly ChatTool[],
  minCalls = 1,
  maxCalls = Infinity,
  afterTrigger = false,
): GrammarIR | undefined {
  if (!(Number.isInteger(minCalls) && minCalls >= 1 && maxCalls >= minCalls && (maxCalls === Infinity || Number.isInteger(maxCalls)))) {
    throw new RangeError(`tool calls must be 1 <= minCalls <= maxCalls, got ${minCalls}..${maxCalls}`);
  }
  if (tools.length === 0) throw new RangeError('a forced tool call needs at least one tool');
  if (format === 'plain') return undefined;
  const g = new GrammarBuilder();
  const argumentRules = tools.map((tool) => g.embed(compileJsonSchema(toolParameters(tool) as never)));
  // One alternative per tool: its call with its own arguments grammar.
  const trigger = afterTrigger ? (toolCallTrigger(format) ?? '') : '';
  // The opening text of the first call (Qwen3, gpt-oss) or of the section, from after the trigger.
  const open = (text: string) => g.literal(trigger && text.includes(trigger) ? text.slice(text.indexOf(trigger) + trigger.length) : text);
  const literal = (text: string) => g.literal(text);
  const call = (index: GrammarElement[], first = false): number =>
    g.rule(
      tools.map((tool, i) => {
        const name = toolName(tool);
        const args = g.ref(argumentRules[i]!);
        switch (format) {
          case 'qwen3':
            return [
              ...(first ? open : literal)(`<tool_call>\n{"name": ${JSON.stringify(name)}, "arguments": `),
              args,
              ...g.literal('}\n</tool_call>'),
            ];
          case 'deepseek-v3':
            return [...g.literal(`<｜tool▁call▁begin｜>function<｜tool▁sep｜>${name}\n\`\`\`json\n`), args, ...g.literal('\n```<｜tool▁call▁end｜>')];
          case 'kimi-k2':
            return [...g.literal(`<|tool_call_begin|>functions.${name}:`), ...index, ...g.literal('<|tool_call_argument_begin|>'), args, ...g.literal('<|tool_call_end|>')];
          case 'gpt-oss':
            return [...(first ? open : literal)(`<|channel|>commentary to=functions.${name} <|constrain|>json<|message|>`), args];
          case 'mistral':
            return [...g.literal(`{"name": ${JSON.stringify(name)}, "arguments": `), args, ...g.literal('}')];
          default:
            return [];
        }
      }),
    );
  const first = call(g.literal('0'), true);
  if (format === 'gpt-oss') {
    if (minCalls > 1) throw new RangeError('gpt-oss calls one tool per message: minCalls must be 1');
    return g.build(first); // harmony: the message ends at <|call|>
  }
  // calls ::= call_0 (separator call_i)* with minCalls..maxCalls calls; a bounded count names each
  // call's index exactly (Kimi K2's ids), an unbounded one allows indices of up to three digits.
  const separator = format === 'qwen3' ? g.literal('\n') : format === 'mistral' ? g.literal(', ') : [];
  let more = g.rule([[]]);
  if (maxCalls === Infinity) {
    const again = [...separator, g.ref(call(g.digits(3)))];
    more = g.reserve();
    g.define(more, [[...again, g.ref(more)], []]);
    for (let i = 1; i < minCalls; i++) more = g.rule([[...again, g.ref(more)]]);
  } else {
    for (let i = maxCalls - 1; i >= 1; i--) {
      const again = [...separator, g.ref(call(g.literal(String(i))))];
      more = g.rule(i < minCalls ? [[...again, g.ref(more)]] : [[...again, g.ref(more)], []]);
    }
  }
  const calls: GrammarElement[] = [g.ref(first), g.ref(more)];
  switch (format) {
    case 'deepseek-v3':
      return g.build(g.rule([[...open('<｜tool▁calls▁begin｜>'), ...calls, ...g.literal('<｜tool▁calls▁end｜>')]]));
    case 'kimi-k2':
      return g.build(g.rule([[...open('<|tool_calls_section_begin|>'), ...calls, ...g.literal('<|tool_calls_section_end|>')]]));
    case 'mistral':
      return g.build(g.rule([[...open('[TOOL_CALLS]['), ...calls, ...g.literal(']')]]));
    default:
      return g.build(g.rule([calls]));
  }
}

/**
 * Why a parsed tool call cannot be run, or undefined when it can: the tool is not among `tools`, or
 * its arguments do not validate against the tool's parameters schema.
 */
export function toolCallProblem(call: Pick<ChatToolCallPart, 'name' | 'arguments'>, tools: readonly ChatTool[]): string | undefined {
  const tool = tools.find((t) => toolName(t) === call.name);
  if (!tool) return `there is no tool named '${call.name}'`;
  const errors = validateJsonSchema(toolParameters(tool) as never, call.arguments);
  return errors.length > 0 ? `the arguments do not match the tool's parameters: ${errors.join('; ')}` : undefined;
}

/** Per-model grammar state: the token sets (built once) and compiled grammars (by key). */
export class ModelGrammars {
  #tokenizer: Tokenizer;
  #tokens: [Promise<NativeTokenSet> | undefined, Promise<NativeTokenSet> | undefined] = [undefined, undefined];
  #compiled = new Map<string, NativeGrammar>();

  constructor(tokenizer: Tokenizer) {
    this.#tokenizer = tokenizer;
  }

  /**
   * The model's token bytes for grammar masks. Plain text (`generate`) leaves control tokens out of
   * the output, so a grammar never allows them; chats show their text (`<tool_call>`,
   * `<｜tool▁sep｜>`), so with `specialText` a grammar may produce a marker as the model's own
   * special token. End-of-generation tokens are only ever allowed where the grammar can end.
   */
  tokenSet(specialText = false): Promise<NativeTokenSet> {
    const slot = specialText ? 1 : 0;
    const cached = this.#tokens[slot];
    if (cached) return cached;
    const t = this.#tokenizer;
    const n = t.vocabSize;
    const parts: Uint8Array[] = [];
    const offsets = new Uint32Array(n + 1);
    const special = new Uint8Array(n);
    let at = 0;
    for (let id = 0; id < n; id++) {
      const type = t.tokenType(id);
      const usable = type === TokenType.Normal || type === TokenType.Byte || (specialText && type !== TokenType.Unused);
      special[id] = usable ? 0 : 1;
      const bytes = usable ? t.tokenBytes(id) : new Uint8Array(0);
      parts.push(bytes);
      at += bytes.length;
      offsets[id + 1] = at;
    }
    const all = new Uint8Array(at);
    for (let id = 0, o = 0; id < n; o += parts[id]!.length, id++) all.set(parts[id]!, o);
    const set = new (loadBinding().TokenSet)();
    const built = set.build(all, offsets, special, Int32Array.from(t.eogTokens)).then(() => set);
    this.#tokens[slot] = built;
    return built;
  }

  /**
   * The native grammar `build()` makes, compiled once per key; undefined when build returns none.
   * Throws what the compiler throws (UnsupportedSchemaError) synchronously, before any generation.
   */
  grammar(key: string, build: () => GrammarIR | undefined): NativeGrammar | undefined {
    let grammar = this.#compiled.get(key);
    if (!grammar) {
      const ir = build();
      if (!ir) return undefined;
      grammar = new (loadBinding().Grammar)(encodeGrammar(ir));
      if (this.#compiled.size >= 64) this.#compiled.delete(this.#compiled.keys().next().value!);
      this.#compiled.set(key, grammar);
    }
    return grammar;
  }

  /** A fresh matcher (the state of one generation) of a compiled grammar; see {@link tokenSet}. */
  async matcher(grammar: NativeGrammar, specialText = false): Promise<NativeGrammarMatcher> {
    return new (loadBinding().GrammarMatcher)(grammar, await this.tokenSet(specialText));
  }
}

type Simplify<T> = { [K in keyof T]: T[K] } & {};
type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/**
 * The TypeScript type of values a `const` JSON schema describes (types, properties / required,
 * items, enum, const, anyOf / oneOf); `unknown` where it cannot tell.
 */
export type InferSchema<S> = S extends true | Record<string, never>
  ? Json
  : S extends { const: infer C }
    ? C
    : S extends { enum: readonly (infer E)[] }
      ? E
      : S extends { anyOf: readonly (infer A)[] }
        ? InferSchema<A>
        : S extends { oneOf: readonly (infer A)[] }
          ? InferSchema<A>
          : S extends { type: readonly (infer T)[] }
            ? InferSchema<Omit<S, 'type'> & { type: T }>
            : S extends { type: 'string' }
              ? string
              : S extends { type: 'number' | 'integer' }
                ? number
                : S extends { type: 'boolean' }
                  ? boolean
                  : S extends { type: 'null' }
                    ? null
                    : S extends { type: 'array'; items: infer I }
                      ? InferSchema<I>[]
                      : S extends { type: 'array' }
                        ? Json[]
                        : S extends { type: 'object'; properties: infer P }
                          ? Simplify<
                              {
                                -readonly [K in keyof P as K extends RequiredOf<S> ? K : never]: InferSchema<P[K]>;
                              } & {
                                -readonly [K in keyof P as K extends RequiredOf<S> ? never : K]?: InferSchema<P[K]>;
                              }
                            >
                          : S extends { type: 'object' }
                            ? Record<string, Json>
                            : unknown;

type RequiredOf<S> = S extends { required: readonly (infer R)[] } ? R : never;
