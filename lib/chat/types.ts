/** Types shared by chat-template rendering and model-output parsing. */

/** Who wrote a message. `tool` messages carry the result of a tool call back to the model. */
export type ChatRole = 'system' | 'user' | 'assistant' | 'tool';

/** A tool call the assistant made, as it goes back into the prompt. */
export interface ChatToolCall {
  /**
   * The call's id, when the format has one: Kimi K2 ids look like `functions.get_weather:0`, Mistral
   * templates require 9 alphanumeric characters. Default: none (the template decides what to render).
   */
  id?: string;
  /** The function's name. */
  name: string;
  /**
   * The arguments: a JSON value (normally an object) or its JSON text. Templates disagree on which
   * they want; {@link RenderChatTemplateInput.toolCallArguments} converts between the two.
   */
  arguments: unknown;
}

/** One message of a conversation. */
export interface ChatMessage {
  role: ChatRole;
  /** The message text. For an assistant message that only calls tools, `''`. */
  content: string;
  /**
   * An assistant message's reasoning (chain of thought). Rendered as `reasoning_content` (Qwen3,
   * DeepSeek, Kimi K2) and `thinking` (gpt-oss); each template decides whether to keep it.
   */
  reasoning?: string;
  /** Tool calls of an assistant message, in order. */
  toolCalls?: ChatToolCall[];
  /** For a `tool` message: the id of the call this is the result of. */
  toolCallId?: string;
  /** For a `tool` message: the name of the function that produced it (some templates show it). */
  name?: string;
}

/** A JSON Schema object describing a function's parameters. */
export type JsonSchema = Record<string, unknown>;

/** A function the model may call, in the OpenAI form templates expect. */
export interface ChatFunctionTool {
  type: 'function';
  function: {
    name: string;
    description?: string;
    /** JSON Schema of the arguments object. */
    parameters?: JsonSchema;
    [key: string]: unknown;
  };
}

/** Shorthand for a {@link ChatFunctionTool}: `{ name, description, parameters }`. */
export interface ChatFunctionToolShorthand {
  name: string;
  description?: string;
  parameters?: JsonSchema;
}

/** A tool definition: the OpenAI form or its shorthand. */
export type ChatTool = ChatFunctionTool | ChatFunctionToolShorthand;

/** Generated text that is part of the answer. */
export interface ChatTextDeltaPart {
  type: 'text-delta';
  text: string;
}

/** Generated text that is part of the model's reasoning. */
export interface ChatReasoningDeltaPart {
  type: 'reasoning-delta';
  text: string;
}

/** A complete tool call. Emitted once, when the whole call has been generated. */
export interface ChatToolCallPart {
  type: 'tool-call';
  /** The id the model gave the call (Kimi K2, Mistral), else a generated one. */
  id: string;
  name: string;
  /** The parsed arguments (normally an object). */
  arguments: unknown;
  /** The arguments' JSON text exactly as generated, without surrounding whitespace. */
  rawArguments: string;
}

/** A tool call that could not be parsed (malformed JSON, missing name). Never thrown. */
export interface ChatToolCallErrorPart {
  type: 'tool-call-error';
  /** The function name, when it could be recovered. */
  name?: string;
  /** The text that failed to parse, without surrounding whitespace. */
  rawArguments: string;
  /** Why it failed. */
  error: string;
}

/** One piece of parsed model output. */
export type ChatPart = ChatTextDeltaPart | ChatReasoningDeltaPart | ChatToolCallPart | ChatToolCallErrorPart;

/** The output conventions of a model family; see {@link createChatOutputParser}. */
export type ChatFormat = 'plain' | 'qwen3' | 'deepseek-v3' | 'kimi-k2' | 'mistral' | 'gpt-oss';

/** The families node-moe has a built-in chat template for (used only when a file has none). */
export type BuiltinChatTemplateName = 'chatml' | 'mistral' | 'deepseek-v3' | 'kimi-k2' | 'gpt-oss';
