/**
 * The agent tool loop: send a message, run the tools the model calls, feed their results (or
 * errors) back as tool messages, and go on until the model answers without calling a tool.
 */
import type { Chat, ChatFinishReason, ChatTurnResult, SendOptions } from './chat-session.js';
import type { ChatMessage, ChatTool, ChatToolCallErrorPart, ChatToolCallPart } from './chat/index.js';
import { AbortError } from './errors.js';
import type { GenerationUsage } from './generate.js';
import type { InferSchema, JsonSchema, ToolChoice } from './structured.js';

/** A tool the loop can run. */
export interface ToolDefinition<S extends JsonSchema = JsonSchema> {
  /** What the tool does (shown to the model). Default none. */
  description?: string;
  /** JSON schema of the arguments object; calls are constrained to it (when forced) and checked against it. */
  schema: S;
  /**
   * Runs the call. Its return value goes back to the model as the tool message (strings as they
   * are, anything else as JSON); a throw goes back as an error message the model can react to.
   */
  handler: (args: InferSchema<S>, context: { toolCallId: string; name: string; signal?: AbortSignal }) => unknown;
}

export interface RunToolsOptions extends Omit<SendOptions, 'tools' | 'toolChoice'> {
  /** The first message of the loop (a user message, or tool results). Default: none, the chat goes on from its history. */
  message?: string | ChatMessage | readonly ChatMessage[];
  /** The tools, by name. */
  tools: Record<string, ToolDefinition<any>>;
  /** Model turns at most; the loop ends with `max-steps` after the last. Default `8`. */
  maxSteps?: number;
  /** Tool choice of every turn, or of turn `step` (0-based). Default `'auto'`. */
  toolChoice?: ToolChoice | ((step: number) => ToolChoice);
}

/** The outcome of one tool call. */
export interface ToolResult {
  toolCallId: string;
  name: string;
  /** The handler's return value. */
  result?: unknown;
  /** Why the call failed: its arguments did not parse or validate, the tool is unknown, or the handler threw. */
  error?: string;
}

/** One model turn of the loop. */
export interface ToolStep {
  text: string;
  reasoning: string;
  toolCalls: ChatToolCallPart[];
  toolCallErrors: ChatToolCallErrorPart[];
  toolResults: ToolResult[];
  finishReason: ChatFinishReason;
  usage: GenerationUsage;
}

export interface RunToolsResult {
  /** The final answer's text (the last turn's). */
  text: string;
  steps: ToolStep[];
  /** The last turn's finish reason, or `max-steps` when the loop ran out of turns while tools were still called. */
  finishReason: ChatFinishReason | 'max-steps';
  /** Tokens over every turn. */
  usage: GenerationUsage;
  /** The last turn's result. */
  final: ChatTurnResult;
}

function content(value: unknown): string {
  return typeof value === 'string' ? value : (JSON.stringify(value) ?? 'null');
}

/**
 * Runs the tool loop on a chat: call → handler → tool result message → continue, at most
 * `maxSteps` model turns. Aborting `signal` stops it with an `AbortError` (the history keeps the
 * completed turns). Handlers of one turn run concurrently; their results go back in call order.
 */
export async function runTools(chat: Chat, options: RunToolsOptions): Promise<RunToolsResult> {
  const { message, tools, maxSteps = 8, toolChoice = 'auto', ...sendOptions } = options;
  if (!Number.isInteger(maxSteps) || maxSteps < 1) throw new RangeError(`maxSteps must be a positive integer, got ${maxSteps}`);
  const definitions: ChatTool[] = Object.entries(tools).map(([name, t]) => ({
    name,
    ...(t.description === undefined ? {} : { description: t.description }),
    parameters: t.schema as Record<string, unknown>,
  }));
  const signal = sendOptions.signal;
  const steps: ToolStep[] = [];
  const usage: GenerationUsage = { inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, droppedTokens: 0 };
  let next: string | ChatMessage | readonly ChatMessage[] = message ?? [];
  for (let step = 0; ; step++) {
    if (signal?.aborted) throw new AbortError('the tool loop was aborted', { cause: signal.reason });
    const choice = typeof toolChoice === 'function' ? toolChoice(step) : toolChoice;
    const final = await chat.send(next as never, { ...sendOptions, tools: definitions, toolChoice: choice }).final;
    for (const k of Object.keys(usage) as (keyof GenerationUsage)[]) usage[k] += final.usage[k];

    const results = await Promise.all([
      ...final.toolCalls.map(async (call): Promise<ToolResult> => {
        const tool = tools[call.name];
        try {
          const result = await tool!.handler(call.arguments as never, { toolCallId: call.id, name: call.name, ...(signal ? { signal } : {}) });
          return { toolCallId: call.id, name: call.name, result };
        } catch (error) {
          if (error instanceof AbortError) throw error;
          if (signal?.aborted) throw new AbortError('the tool loop was aborted', { cause: signal.reason ?? error });
          return { toolCallId: call.id, name: call.name, error: error instanceof Error ? error.message : String(error) };
        }
      }),
      ...final.toolCallErrors.map(
        async (e, i): Promise<ToolResult> => ({ toolCallId: `invalid-call-${step}-${i}`, name: e.name ?? '', error: e.error }),
      ),
    ]);
    steps.push({
      text: final.text,
      reasoning: final.reasoning,
      toolCalls: final.toolCalls,
      toolCallErrors: final.toolCallErrors,
      toolResults: results,
      finishReason: final.finishReason,
      usage: final.usage,
    });
    if (results.length === 0) return { text: final.text, steps, finishReason: final.finishReason, usage, final };
    if (step + 1 >= maxSteps) return { text: final.text, steps, finishReason: 'max-steps', usage, final };
    next = results.map(
      (r): ChatMessage => ({
        role: 'tool',
        toolCallId: r.toolCallId,
        name: r.name,
        content: r.error === undefined ? content(r.result) : `Error: ${r.error}`,
      }),
    );
  }
}
