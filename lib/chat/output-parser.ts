/** Streaming parsers for what chat models generate: reasoning, answer text and tool calls, each family in its own markup. */
import { randomInt } from 'node:crypto';
import type { ChatOutputParser, ToolCallIdFactory } from './output/engine.js';
import { DeepSeekV3Parser, HarmonyParser, KimiK2Parser, MistralParser, PlainParser, Qwen3Parser } from './output/formats.js';
import type { ChatFormat } from './types.js';

export type { ChatOutputParser, ToolCallIdFactory };

export interface ChatOutputParserOptions {
  /**
   * The prompt already opened the reasoning block (Qwen3-Thinking's `<think>\n`, DeepSeek-R1's and
   * V3.1 thinking mode's `<think>`, Magistral's `[THINK]`), so the output starts as reasoning and the
   * first `</think>` ends it. `promptEndsInReasoning(prompt)` tells. Ignored by `'gpt-oss'` and
   * `'plain'`. Default `false`.
   */
  startsInReasoning?: boolean;
  /**
   * Makes the id of a tool call the model gave none (`name`, and `index`: the parser's tool calls
   * counted from 0). Default: 9 random letters and digits, the form Mistral's templates require of ids.
   */
  createToolCallId?: ToolCallIdFactory;
}

const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

function randomToolCallId(): string {
  let id = '';
  for (let i = 0; i < 9; i++) id += ID_ALPHABET[randomInt(ID_ALPHABET.length)];
  return id;
}

/**
 * A streaming parser of one model output in `format` (see {@link chatFormatFromMetadata}). Feed
 * the generated text with `push()` as it arrives, then call `finish()` once; each call returns the
 * parts it completed. One parser per generated message.
 *
 * **What to feed.** The text of every generated token, in order, with special tokens written as
 * their vocabulary text (node-moe's tokenizer: detokenize with `special: true`): the markers
 * (`<think>`, `<|channel|>`, `<｜tool▁sep｜>`, …) are special tokens, and a detokenizer that drops
 * them leaves nothing to parse. Pieces may be cut anywhere, even inside a marker (whole characters
 * are the detokenizer's business). The stop token may be fed or not: end-of-turn tokens
 * (`<|im_end|>`, `<｜end▁of▁sentence｜>`, `</s>`, `<|return|>`, `<|call|>`) are consumed like markers.
 * For `'gpt-oss'`, the output starts after the prompt's final `<|start|>assistant`.
 *
 * **What comes out.**
 * - Markers never appear in parts. Text that could be the start of a marker (`<`, `<tool_`,
 *   `[TOOL`) is held back until the next piece decides, and released by `finish()`.
 * - `text-delta` and `reasoning-delta` parts carry the content between markers with the whitespace
 *   at both ends of each section dropped: templates put newlines around markers (`<think>\n`,
 *   `\n</think>\n\n`, `\n<tool_call>`), and those are format, not content. Trailing whitespace
 *   is therefore held until more text follows it. Whitespace inside a section is kept. `'plain'`
 *   passes everything through untouched.
 * - Adjacent deltas of one kind are merged within one `push()` result, not across calls;
 *   concatenating every delta of a kind gives its full text.
 * - A `tool-call` part is emitted once, complete, when its closing marker (or the end of its JSON
 *   value, or the end of the output) has arrived. A call that does not parse becomes a
 *   `tool-call-error` part; nothing is thrown.
 */
export function createChatOutputParser(format: ChatFormat, options: ChatOutputParserOptions = {}): ChatOutputParser {
  const createId = options.createToolCallId ?? randomToolCallId;
  const startsInReasoning = options.startsInReasoning ?? false;
  switch (format) {
    case 'plain':
      return new PlainParser();
    case 'qwen3':
      return new Qwen3Parser(createId, startsInReasoning);
    case 'deepseek-v3':
      return new DeepSeekV3Parser(createId, startsInReasoning);
    case 'kimi-k2':
      return new KimiK2Parser(createId, startsInReasoning);
    case 'mistral':
      return new MistralParser(createId, startsInReasoning);
    case 'gpt-oss':
      return new HarmonyParser(createId);
    default:
      throw new RangeError(`unknown chat output format: ${String(format)}`);
  }
}
