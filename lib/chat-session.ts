/**
 * Stateful chats for bots: the history and its KV cache are kept between turns, each turn is
 * rendered through the model's chat template, generated with native sampling, and parsed into
 * typed parts (text, reasoning, tool calls) as it streams.
 */
import {
  chatFormatFromMetadata,
  chatTemplateFromMetadata,
  createChatOutputParser,
  promptEndsInReasoning,
  renderChatTemplate,
  type ChatFormat,
  type ChatMessage,
  type ChatMetadata,
  type ChatPart,
  type ChatTemplate,
  type ChatTemplateVariables,
  type ChatTool,
  type ChatToolCallErrorPart,
  type ChatToolCallPart,
} from './chat/index.js';
import {
  parseCompleted,
  runGeneration,
  type FinishReason,
  type GenerateOptions,
  type Generation,
  type GenerationTimings,
  type GenerationUsage,
  type RawFinishReason,
} from './generate.js';
import type { Model, Sequence } from './model.js';
import { StateFormatError } from './errors.js';
import { responseFormatGrammar, toolCallGrammar, toolCallProblem, toolCallTrigger, type ToolChoice } from './structured.js';
import type { NativeGrammar } from './native-types.js';

/** Options of a chat; the generation ones (sampling, `maxTokens`, `stop`, …) are each turn's defaults. */
export interface ChatOptions extends Omit<GenerateOptions, 'sequence' | 'special' | 'addBos' | 'signal'> {
  /** The system message that opens the conversation. Default none. */
  system?: string;
  /** Functions the model may call, rendered through the template. Default none. */
  tools?: readonly ChatTool[];
  /** Tokens the chat's KV cache holds. Default: the model's `contextSize` load option. */
  contextSize?: number;
  /** Extra template variables (`enable_thinking`, `reasoning_effort`, …). Default none. */
  templateVariables?: ChatTemplateVariables;
  /** The chat template: default the file's (`tokenizer.chat_template`), or a built-in one for files without. */
  template?: ChatTemplate;
  /** How to parse the model's output. Default: detected from the file (`chatFormatFromMetadata`). */
  format?: ChatFormat;
  /** Earlier messages to start from (after the system message). Default none. */
  history?: readonly ChatMessage[];
  /**
   * Whether the model must call tools: `auto` (it decides), `required` (the reply is tool calls,
   * syntax and arguments enforced by a grammar — needs a chat format with a known tool-call
   * syntax), `{ name }` (exactly one call of that tool), `none` (tools are left out of the
   * prompt). Default `'auto'`.
   */
  toolChoice?: ToolChoice;
}

export interface SendOptions extends Omit<GenerateOptions, 'sequence' | 'special' | 'addBos'> {
  /** This turn's tools instead of the chat's. Default: the chat's `tools`. */
  tools?: readonly ChatTool[];
  /** This turn's tool choice. Default: the chat's `toolChoice`. */
  toolChoice?: ToolChoice;
}

function toolNameOf(tool: ChatTool): string {
  return 'function' in tool ? tool.function.name : tool.name;
}

/** Why a chat turn ended: as a generation, or `tool-calls` when the model called tools. */
export type ChatFinishReason = FinishReason | 'tool-calls';

/** A part of a chat turn's `fullStream`. */
export type ChatStreamPart =
  | ChatPart
  | { type: 'finish'; finishReason: ChatFinishReason; rawFinishReason: RawFinishReason; usage: GenerationUsage };

export interface ChatTurnResult {
  /** The reply's text (without reasoning or tool-call markup). */
  text: string;
  /** The reasoning the model produced before its answer ('' when none). */
  reasoning: string;
  toolCalls: ChatToolCallPart[];
  /** The generated token ids. */
  tokens: number[];
  /** Tool calls the model wrote but that did not parse. */
  toolCallErrors: ChatToolCallErrorPart[];
  finishReason: ChatFinishReason;
  rawFinishReason: RawFinishReason;
  usage: GenerationUsage;
  timings: GenerationTimings;
  /** The assistant message added to the history. */
  message: ChatMessage;
  /** With a JSON `responseFormat`: the parsed reply, when the generation completed it. */
  object?: unknown;
}

const SAVED_CHAT_FORMAT = 'node-moe-chat/1';

/** The metadata a saved chat's state file carries. */
interface SavedChat {
  format: string;
  history: ChatMessage[];
}

/** A conversation with its own KV cache; see {@link Model.createChat}. */
export class Chat {
  /** The conversation so far (system message first, when there is one). */
  readonly history: ChatMessage[] = [];

  /** The chat template the turns are rendered with. */
  get template(): ChatTemplate {
    return this.#template;
  }
  #model: Model;
  #sequence: Sequence;
  #options: ChatOptions;
  #template: ChatTemplate;
  #format: ChatFormat;
  #busy = false;

  /** @internal */
  constructor(model: Model, metadata: ChatMetadata, options: ChatOptions) {
    this.#model = model;
    this.#options = options;
    this.#template = options.template ?? chatTemplateFromMetadata(metadata);
    this.#format = options.format ?? chatFormatFromMetadata(metadata);
    if (options.system !== undefined) this.history.push({ role: 'system', content: options.system });
    this.history.push(...(options.history ?? []));
    this.#sequence = model.createSequence(options.contextSize === undefined ? {} : { contextSize: options.contextSize });
  }

  /**
   * Adds a user message (or other messages, such as tool results) and generates the reply. The
   * prompt's prefix already in the chat's cache (the earlier turns) is not evaluated again
   * (`usage.cachedInputTokens`). The history gains the messages and the reply when the turn
   * completes; an aborted or failed turn leaves it as it was. One turn at a time.
   */
  send(message: string | ChatMessage | readonly ChatMessage[], options: SendOptions = {}): Generation<ChatStreamPart, ChatTurnResult> {
    if (this.#busy) throw new Error('a chat turn is in progress: await its final before sending the next message');
    const added: ChatMessage[] =
      typeof message === 'string' ? [{ role: 'user', content: message }] : Array.isArray(message) ? [...message] : [message as ChatMessage];
    const messages = [...this.history, ...added];
    const choice = options.toolChoice ?? this.#options.toolChoice ?? 'auto';
    const tools = choice === 'none' ? undefined : (options.tools ?? this.#options.tools);
    const grammar = this.#grammarFor(choice, tools ?? [], options.responseFormat ?? this.#options.responseFormat);
    const grammarTrigger = grammar ? undefined : this.#triggerFor(choice, tools ?? []);
    const render = () =>
      renderChatTemplate(this.#template, {
        messages,
        ...(tools && tools.length > 0 ? { tools } : {}),
        ...(this.#options.templateVariables ? { extra: this.#options.templateVariables } : {}),
      });
    let prompt = render();
    let tokens = this.#model.tokenize(prompt, { special: true, addBos: false });
    if (options.contextShift ?? this.#options.contextShift) {
      // Whole turns leave the prompt, oldest first, after the system message, until it fits with
      // room to answer; the history keeps them. (Within a turn the generation shifts tokens.)
      const size = this.#sequence.contextSize;
      const room = Math.min(options.maxTokens ?? this.#options.maxTokens ?? 256, Math.floor(size / 4));
      const first = messages.findIndex((m) => m.role !== 'system');
      while (tokens.length + room >= size && first >= 0 && first < messages.length - added.length) {
        do messages.splice(first, 1);
        while (first < messages.length - added.length && messages[first]!.role !== 'user');
        prompt = render();
        tokens = this.#model.tokenize(prompt, { special: true, addBos: false });
      }
    }
    const parser = createChatOutputParser(this.#format, { startsInReasoning: promptEndsInReasoning(prompt) });
    let text = '';
    let reasoning = '';
    const toolCalls: ChatToolCallPart[] = [];
    const toolCallErrors: ChatToolCallErrorPart[] = [];
    const collect = (parts: ChatPart[]): ChatStreamPart[] => {
      const out: ChatStreamPart[] = [];
      for (const p of parts) {
        if (p.type === 'text-delta') text += p.text;
        else if (p.type === 'reasoning-delta') reasoning += p.text;
        else if (p.type === 'tool-call') {
          // Arguments are checked against the tool's schema; a call that fails becomes an error part.
          const problem = toolCallProblem(p, tools ?? []);
          if (problem) {
            const error: ChatToolCallErrorPart = { type: 'tool-call-error', name: p.name, rawArguments: p.rawArguments, error: problem };
            toolCallErrors.push(error);
            out.push(error);
            continue;
          }
          toolCalls.push(p);
        } else toolCallErrors.push(p);
        out.push(p);
      }
      return out;
    };
    const {
      tools: _tools,
      toolChoice: _choice,
      system: _system,
      contextSize: _context,
      templateVariables: _vars,
      template: _t,
      format: _f,
      history: _h,
      ...sampling
    } = this.#options;
    const { tools: _turnTools, toolChoice: _turnChoice, ...turn } = options;
    const generation = runGeneration<ChatStreamPart, ChatTurnResult>(
      this.#model,
      tokens,
      {
        ...sampling,
        ...turn,
        sequence: this.#sequence,
        reusePrefix: true,
        detokenizeSpecial: true,
        ...(grammar ? { grammar } : {}),
        ...(grammarTrigger ? { grammarTrigger } : {}),
      },
      (delta, end) => collect([...(delta ? parser.push(delta) : []), ...(end ? parser.finish() : [])]),
      (core) => {
        const finishReason: ChatFinishReason = toolCalls.length > 0 ? 'tool-calls' : core.finishReason;
        const reply: ChatMessage = {
          role: 'assistant',
          content: text,
          ...(reasoning ? { reasoning } : {}),
          ...(toolCalls.length > 0 ? { toolCalls: toolCalls.map((c) => ({ id: c.id, name: c.name, arguments: c.arguments as object })) } : {}),
        };
        this.history.push(...added, reply);
        return {
          part: { type: 'finish', finishReason, rawFinishReason: core.rawFinishReason, usage: core.usage },
          result: {
            text,
            reasoning,
            toolCalls,
            tokens: core.tokens,
            toolCallErrors,
            finishReason,
            rawFinishReason: core.rawFinishReason,
            usage: core.usage,
            timings: core.timings,
            message: reply,
            ...(grammar && toolCalls.length === 0 && toolCallErrors.length === 0 ? { object: parseCompleted({ text, rawFinishReason: core.rawFinishReason }) } : {}),
          },
        };
      },
    );
    this.#busy = true;
    generation.final.then(
      () => (this.#busy = false),
      () => (this.#busy = false),
    );
    return generation;
  }

  // The grammar a turn runs under: forced tool calls, or a JSON response format, or none.
  #grammarFor(choice: ToolChoice, tools: readonly ChatTool[], format: SendOptions['responseFormat']) {
    const grammars = this.#model._grammars;
    if (choice === 'required' || typeof choice === 'object') {
      const { name, minCalls = 1, maxCalls = name === undefined ? Infinity : 1 } = typeof choice === 'object' ? choice : {};
      const chosen = name === undefined ? tools : tools.filter((t) => toolNameOf(t) === name);
      if (chosen.length === 0) {
        throw new RangeError(name === undefined ? 'a required tool call needs tools' : `toolChoice names '${name}', which is not among the tools`);
      }
      const key = `tools:${this.#format}:${minCalls}:${maxCalls}:${JSON.stringify(chosen)}`;
      const grammar = grammars.grammar(key, () => toolCallGrammar(this.#format, chosen, minCalls, maxCalls));
      if (!grammar) throw new RangeError(`the chat format '${this.#format}' has no tool-call syntax node-moe knows, so a tool call cannot be forced`);
      return grammar;
    }
    if (format && format.type !== 'text') return grammars.grammar(`format:${JSON.stringify(format)}`, () => responseFormatGrammar(format));
    return undefined;
  }

  // In `auto` mode with tools: once the model opens a tool call, the rest of it follows the grammar.
  #triggerFor(choice: ToolChoice, tools: readonly ChatTool[]): { text: string; grammar: NativeGrammar } | undefined {
    const text = toolCallTrigger(this.#format);
    if (choice !== 'auto' || tools.length === 0 || !text) return undefined;
    const key = `tools-after-trigger:${this.#format}:${JSON.stringify(tools)}`;
    const grammar = this.#model._grammars.grammar(key, () => toolCallGrammar(this.#format, tools, 1, Infinity, true));
    return grammar ? { text, grammar } : undefined;
  }

  /**
   * Saves the conversation — its history and its KV cache — to a file, so that {@link load} (on a
   * chat of the same model, perhaps in another process) goes on where it left off without
   * evaluating the history again. Not during a turn.
   */
  async save(path: string): Promise<void> {
    if (this.#busy) throw new Error('a chat turn is in progress: await its final before saving');
    const metadata: SavedChat = { format: SAVED_CHAT_FORMAT, history: this.history };
    await this.#sequence.saveState(path, { metadata: JSON.stringify(metadata) });
  }

  /**
   * Replaces this chat's history and KV cache with a file written by {@link save}. The chat's own
   * options (system message, tools, sampling) stay; the history, system message included, is the
   * file's. A file of another model or KV cache type is rejected and the chat is left as it was.
   */
  async load(path: string): Promise<void> {
    if (this.#busy) throw new Error('a chat turn is in progress: await its final before loading');
    const { metadata } = await this.#sequence.loadState(path);
    let saved: SavedChat;
    try {
      saved = JSON.parse(metadata) as SavedChat;
    } catch {
      saved = { format: '', history: [] };
    }
    if (saved.format !== SAVED_CHAT_FORMAT || !Array.isArray(saved.history)) {
      this.#sequence.clear();
      throw new StateFormatError(`'${path}' holds a sequence state but not a saved chat`);
    }
    this.history.splice(0, this.history.length, ...saved.history);
  }

  /** Frees the chat's KV cache. */
  async dispose(): Promise<void> {
    await this.#sequence.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
