/** The per-family output parsers. Marker texts are the models' special tokens as the vocabulary spells them. */
import type { ChatPart } from '../types.js';
import { MarkerParser, SectionWriter, type ChatOutputParser, type ToolCallIdFactory } from './engine.js';
import { JsonValueTracker, jsonArrayElementTexts } from './json-text.js';

const THINK_OPEN = '<think>';
const THINK_CLOSE = '</think>';

/** A parser with a text and a reasoning section, each trimmed at the markers around it. */
abstract class SectionedParser extends MarkerParser {
  protected readonly text = new SectionWriter(this.out, 'text-delta');
  protected readonly reasoning = new SectionWriter(this.out, 'reasoning-delta');

  protected closeSections(): void {
    this.text.close();
    this.reasoning.close();
  }
}

/**
 * Qwen3 (and other Hermes-style ChatML models): `<think>…</think>` reasoning, tool calls as
 * `<tool_call>{"name": …, "arguments": {…}}</tool_call>`, turns ended by `<|im_end|>`.
 */
export class Qwen3Parser extends SectionedParser {
  private static readonly CALL_OPEN = '<tool_call>';
  private static readonly CALL_CLOSE = '</tool_call>';
  private static readonly ENDS = ['<|im_end|>', '<|endoftext|>'];
  private static readonly TEXT_MARKERS = [THINK_OPEN, THINK_CLOSE, Qwen3Parser.CALL_OPEN, Qwen3Parser.CALL_CLOSE, ...Qwen3Parser.ENDS];
  private static readonly REASONING_MARKERS = [THINK_CLOSE, ...Qwen3Parser.ENDS];
  private static readonly CALL_MARKERS = [Qwen3Parser.CALL_CLOSE, ...Qwen3Parser.ENDS];

  private state: 'text' | 'reasoning' | 'call';
  private callText = '';

  constructor(createId: ToolCallIdFactory, startsInReasoning: boolean) {
    super(createId);
    this.state = startsInReasoning ? 'reasoning' : 'text';
  }

  protected markers(): readonly string[] {
    if (this.state === 'reasoning') return Qwen3Parser.REASONING_MARKERS;
    if (this.state === 'call') return Qwen3Parser.CALL_MARKERS;
    return Qwen3Parser.TEXT_MARKERS;
  }

  protected consume(text: string): number {
    if (this.state === 'text') this.text.write(text);
    else if (this.state === 'reasoning') this.reasoning.write(text);
    else this.callText += text;
    return text.length;
  }

  protected onMarker(marker: string): void {
    this.closeSections();
    if (this.state === 'call') {
      this.emitJsonToolCall(this.callText);
      this.state = 'text';
    } else if (this.state === 'reasoning') {
      this.state = 'text';
    } else if (marker === THINK_OPEN) {
      this.state = 'reasoning';
    } else if (marker === Qwen3Parser.CALL_OPEN) {
      this.state = 'call';
      this.callText = '';
    }
    // Anything else in text (a stray `</think>` or `</tool_call>`, an end-of-turn token) is dropped.
  }

  protected end(): void {
    this.closeSections();
    if (this.state === 'call') this.emitJsonToolCall(this.callText);
  }
}

/**
 * DeepSeek-V3 / R1 / V3.1: `<think>…</think>` reasoning; tool calls in a
 * `<｜tool▁calls▁begin｜>…<｜tool▁calls▁end｜>` section, each either V3's
 * `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{…}\n```<｜tool▁call▁end｜>` or V3.1's
 * `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{…}<｜tool▁call▁end｜>`.
 */
export class DeepSeekV3Parser extends SectionedParser {
  private static readonly CALLS_BEGIN = '<｜tool▁calls▁begin｜>';
  private static readonly CALLS_END = '<｜tool▁calls▁end｜>';
  private static readonly CALL_BEGIN = '<｜tool▁call▁begin｜>';
  private static readonly CALL_END = '<｜tool▁call▁end｜>';
  private static readonly SEP = '<｜tool▁sep｜>';
  private static readonly EOS = '<｜end▁of▁sentence｜>';
  private static readonly TEXT_MARKERS = [
    THINK_OPEN,
    THINK_CLOSE,
    DeepSeekV3Parser.CALLS_BEGIN,
    DeepSeekV3Parser.CALLS_END,
    DeepSeekV3Parser.CALL_BEGIN,
    DeepSeekV3Parser.CALL_END,
    DeepSeekV3Parser.EOS,
  ];
  private static readonly REASONING_MARKERS = [THINK_CLOSE, DeepSeekV3Parser.EOS];
  private static readonly CALL_MARKERS = [
    DeepSeekV3Parser.CALL_END,
    DeepSeekV3Parser.CALLS_END,
    DeepSeekV3Parser.CALL_BEGIN,
    DeepSeekV3Parser.EOS,
  ];

  private state: 'text' | 'reasoning' | 'call';
  private callText = '';

  constructor(createId: ToolCallIdFactory, startsInReasoning: boolean) {
    super(createId);
    this.state = startsInReasoning ? 'reasoning' : 'text';
  }

  protected markers(): readonly string[] {
    if (this.state === 'reasoning') return DeepSeekV3Parser.REASONING_MARKERS;
    if (this.state === 'call') return DeepSeekV3Parser.CALL_MARKERS;
    return DeepSeekV3Parser.TEXT_MARKERS;
  }

  protected consume(text: string): number {
    if (this.state === 'text') this.text.write(text);
    else if (this.state === 'reasoning') this.reasoning.write(text);
    else this.callText += text;
    return text.length;
  }

  protected onMarker(marker: string): void {
    this.closeSections();
    if (this.state === 'call') {
      this.finishCall();
      // A missing `<｜tool▁call▁end｜>` before the next call: the next call starts right away.
      this.state = marker === DeepSeekV3Parser.CALL_BEGIN ? 'call' : 'text';
      this.callText = '';
    } else if (this.state === 'reasoning') {
      this.state = 'text';
    } else if (marker === THINK_OPEN) {
      this.state = 'reasoning';
    } else if (marker === DeepSeekV3Parser.CALL_BEGIN) {
      this.state = 'call';
      this.callText = '';
    }
    // The section markers only group calls; between calls there is only whitespace.
  }

  protected end(): void {
    this.closeSections();
    if (this.state === 'call') this.finishCall();
  }

  private finishCall(): void {
    const body = this.callText;
    const sep = body.indexOf(DeepSeekV3Parser.SEP);
    if (sep < 0) {
      this.toolCallError(undefined, body, 'the tool call has no <｜tool▁sep｜> between name and arguments');
      return;
    }
    const head = body.slice(0, sep).trim();
    const tail = body.slice(sep + DeepSeekV3Parser.SEP.length);
    let name = head;
    let args = tail;
    // V3/R1 put the call type first (`function`) and the name on the line after the separator.
    if (head === 'function' && !/^\s*[{[]/.test(tail)) {
      const newline = tail.indexOf('\n');
      name = (newline < 0 ? tail : tail.slice(0, newline)).trim();
      args = newline < 0 ? '' : tail.slice(newline + 1);
    }
    this.emitToolCall(name, stripCodeFence(args));
  }
}

/** The content of a Markdown code fence (```json … ```), or the text itself when it is not one. */
function stripCodeFence(text: string): string {
  const fenced = /^\s*```[\w-]*[ \t]*\n?([\s\S]*?)\n?[ \t]*```\s*$/.exec(text);
  return fenced ? (fenced[1] as string) : text;
}

/**
 * Kimi K2: `<think>…</think>` reasoning (K2 Thinking), tool calls in a
 * `<|tool_calls_section_begin|>…<|tool_calls_section_end|>` section, each
 * `<|tool_call_begin|>functions.NAME:INDEX<|tool_call_argument_begin|>{…}<|tool_call_end|>`. The id
 * `functions.NAME:INDEX` becomes the part's id (Kimi's templates render results by it).
 */
export class KimiK2Parser extends SectionedParser {
  private static readonly SECTION_BEGIN = '<|tool_calls_section_begin|>';
  private static readonly SECTION_END = '<|tool_calls_section_end|>';
  private static readonly CALL_BEGIN = '<|tool_call_begin|>';
  private static readonly ARGUMENTS_BEGIN = '<|tool_call_argument_begin|>';
  private static readonly CALL_END = '<|tool_call_end|>';
  private static readonly EOS = '<|im_end|>';
  private static readonly TEXT_MARKERS = [
    THINK_OPEN,
    THINK_CLOSE,
    KimiK2Parser.SECTION_BEGIN,
    KimiK2Parser.SECTION_END,
    KimiK2Parser.CALL_BEGIN,
    KimiK2Parser.ARGUMENTS_BEGIN,
    KimiK2Parser.CALL_END,
    KimiK2Parser.EOS,
  ];
  // K2 Thinking sometimes starts its tool calls without closing the reasoning; the call markers are
  // special tokens, so they cannot be part of reasoning text.
  private static readonly REASONING_MARKERS = [THINK_CLOSE, KimiK2Parser.SECTION_BEGIN, KimiK2Parser.CALL_BEGIN, KimiK2Parser.EOS];
  private static readonly ID_MARKERS = [
    KimiK2Parser.ARGUMENTS_BEGIN,
    KimiK2Parser.CALL_END,
    KimiK2Parser.CALL_BEGIN,
    KimiK2Parser.SECTION_END,
    KimiK2Parser.EOS,
  ];
  private static readonly ARGUMENTS_MARKERS = [KimiK2Parser.CALL_END, KimiK2Parser.CALL_BEGIN, KimiK2Parser.SECTION_END, KimiK2Parser.EOS];

  private state: 'text' | 'reasoning' | 'id' | 'arguments';
  private idText = '';
  private argumentsText = '';

  constructor(createId: ToolCallIdFactory, startsInReasoning: boolean) {
    super(createId);
    this.state = startsInReasoning ? 'reasoning' : 'text';
  }

  protected markers(): readonly string[] {
    switch (this.state) {
      case 'reasoning':
        return KimiK2Parser.REASONING_MARKERS;
      case 'id':
        return KimiK2Parser.ID_MARKERS;
      case 'arguments':
        return KimiK2Parser.ARGUMENTS_MARKERS;
      default:
        return KimiK2Parser.TEXT_MARKERS;
    }
  }

  protected consume(text: string): number {
    if (this.state === 'text') this.text.write(text);
    else if (this.state === 'reasoning') this.reasoning.write(text);
    else if (this.state === 'id') this.idText += text;
    else this.argumentsText += text;
    return text.length;
  }

  protected onMarker(marker: string): void {
    this.closeSections();
    const startCall = () => {
      this.state = 'id';
      this.idText = '';
      this.argumentsText = '';
    };
    switch (this.state) {
      case 'text':
      case 'reasoning':
        if (marker === KimiK2Parser.CALL_BEGIN) startCall();
        else if (marker === THINK_OPEN && this.state === 'text') this.state = 'reasoning';
        else if (this.state === 'reasoning') this.state = 'text';
        return;
      case 'id':
        if (marker === KimiK2Parser.ARGUMENTS_BEGIN) {
          this.state = 'arguments';
          return;
        }
        this.toolCallError(callName(this.idText), this.idText, 'the tool call has no <|tool_call_argument_begin|>');
        break;
      case 'arguments':
        this.finishCall();
        break;
    }
    if (marker === KimiK2Parser.CALL_BEGIN) startCall();
    else this.state = 'text';
  }

  protected end(): void {
    this.closeSections();
    if (this.state === 'arguments') this.finishCall();
    else if (this.state === 'id') this.toolCallError(callName(this.idText), this.idText, 'the tool call has no <|tool_call_argument_begin|>');
  }

  private finishCall(): void {
    const id = this.idText.trim();
    this.emitToolCall(callName(id), this.argumentsText, id === '' ? undefined : id);
  }
}

/** `functions.get_weather:0` → `get_weather`. */
function callName(id: string): string | undefined {
  const name = id
    .trim()
    .replace(/^functions\./, '')
    .replace(/:\d+$/, '');
  return name === '' ? undefined : name;
}

/**
 * Mistral / Mixtral: `[TOOL_CALLS]` followed by a JSON array `[{"name": …, "arguments": {…}}]` (v3) or
 * by `NAME[ARGS]{…}` (v11+, optionally `NAME[CALL_ID]ID[ARGS]{…}`), one `[TOOL_CALLS]` per call;
 * Magistral's `[THINK]…[/THINK]` reasoning; `</s>` ends the turn.
 */
export class MistralParser extends SectionedParser {
  private static readonly TOOL_CALLS = '[TOOL_CALLS]';
  private static readonly ARGS = '[ARGS]';
  private static readonly CALL_ID = '[CALL_ID]';
  private static readonly THINK = '[THINK]';
  private static readonly THINK_END = '[/THINK]';
  private static readonly EOS = '</s>';
  private static readonly TEXT_MARKERS = [MistralParser.TOOL_CALLS, MistralParser.THINK, MistralParser.THINK_END, MistralParser.EOS];
  private static readonly REASONING_MARKERS = [MistralParser.THINK_END, MistralParser.EOS];
  private static readonly CALL_MARKERS = [MistralParser.TOOL_CALLS, MistralParser.EOS];
  private static readonly NAME_MARKERS = [MistralParser.ARGS, MistralParser.CALL_ID, MistralParser.TOOL_CALLS, MistralParser.EOS];
  private static readonly ID_MARKERS = [MistralParser.ARGS, MistralParser.TOOL_CALLS, MistralParser.EOS];

  private state: 'text' | 'reasoning' | 'calls' | 'array' | 'name' | 'id' | 'arguments';
  private callText = '';
  private nameText = '';
  private idText = '';
  private tracker = new JsonValueTracker();

  constructor(createId: ToolCallIdFactory, startsInReasoning: boolean) {
    super(createId);
    this.state = startsInReasoning ? 'reasoning' : 'text';
  }

  protected markers(): readonly string[] {
    switch (this.state) {
      case 'text':
        return MistralParser.TEXT_MARKERS;
      case 'reasoning':
        return MistralParser.REASONING_MARKERS;
      case 'name':
        return MistralParser.NAME_MARKERS;
      case 'id':
        return MistralParser.ID_MARKERS;
      default:
        return MistralParser.CALL_MARKERS;
    }
  }

  protected consume(text: string): number {
    switch (this.state) {
      case 'text':
        this.text.write(text);
        return text.length;
      case 'reasoning':
        this.reasoning.write(text);
        return text.length;
      case 'calls': {
        // Right after [TOOL_CALLS]: a JSON array (v3) or a function name (v11+).
        const first = text.search(/\S/);
        if (first < 0) return text.length;
        this.state = text[first] === '[' ? 'array' : 'name';
        this.callText = '';
        this.nameText = '';
        this.idText = '';
        this.tracker = new JsonValueTracker();
        return first;
      }
      case 'name':
        this.nameText += text;
        return text.length;
      case 'id':
        this.idText += text;
        return text.length;
      default: {
        // array, arguments: the JSON value ends the state when it closes.
        const used = this.tracker.feed(text);
        this.callText += text.slice(0, used);
        if (this.tracker.complete) this.finishJson();
        return used;
      }
    }
  }

  protected onMarker(marker: string): void {
    this.closeSections();
    switch (this.state) {
      case 'text':
        if (marker === MistralParser.TOOL_CALLS) this.state = 'calls';
        else if (marker === MistralParser.THINK) this.state = 'reasoning';
        return;
      case 'reasoning':
        this.state = 'text';
        return;
      case 'name':
      case 'id':
        if (marker === MistralParser.ARGS) {
          this.state = 'arguments';
          this.callText = '';
          this.tracker = new JsonValueTracker();
          return;
        }
        if (marker === MistralParser.CALL_ID) {
          this.state = 'id';
          return;
        }
        this.toolCallError(this.nameText.trim(), this.nameText, 'the tool call has no [ARGS]');
        break;
      case 'array':
      case 'arguments':
        // The JSON never closed (a closed one ends the state in consume).
        this.finishJson();
        break;
    }
    this.state = marker === MistralParser.TOOL_CALLS ? 'calls' : 'text';
  }

  protected end(): void {
    this.closeSections();
    if (this.state === 'array' || this.state === 'arguments') this.finishJson();
    else if (this.state === 'name' || this.state === 'id') this.toolCallError(this.nameText.trim(), this.nameText, 'the tool call has no [ARGS]');
  }

  private finishJson(): void {
    if (this.state === 'arguments') {
      const id = this.idText.trim();
      this.emitToolCall(this.nameText.trim(), this.callText, id === '' ? undefined : id);
    } else {
      this.emitCallArray(this.callText);
    }
    this.state = 'text';
  }

  private emitCallArray(text: string): void {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      // One part for the whole array: its elements cannot be told apart reliably.
      const name = /"name"\s*:\s*"((?:[^"\\]|\\.)*)"/.exec(text)?.[1];
      this.toolCallError(name, text, `malformed JSON in tool calls: ${(error as Error).message}`);
      return;
    }
    if (!Array.isArray(value)) {
      this.emitJsonToolCall(text);
      return;
    }
    for (const element of jsonArrayElementTexts(text.trim())) this.emitJsonToolCall(element);
  }
}

/**
 * gpt-oss harmony. The generated text starts after the prompt's `<|start|>assistant`, so it begins
 * with a message header. Each message is `HEADER<|message|>BODY` ended by `<|end|>`, `<|return|>` or
 * `<|call|>`, the next one starting with `<|start|>assistant`. The header's channel decides the body:
 * `analysis` is reasoning, `final` (and `commentary` without a recipient: a preamble shown to the
 * user) is text, and a recipient `to=functions.NAME` makes it a tool call's JSON arguments.
 */
export class HarmonyParser extends SectionedParser {
  private static readonly START = '<|start|>';
  private static readonly MESSAGE = '<|message|>';
  private static readonly CHANNEL = '<|channel|>';
  private static readonly ENDS = ['<|end|>', '<|return|>', '<|call|>'];
  private static readonly HEADER_MARKERS = [HarmonyParser.MESSAGE, HarmonyParser.START, ...HarmonyParser.ENDS];
  // A body also ends at `<|start|>`/`<|channel|>` should the model skip the end token.
  private static readonly BODY_MARKERS = [...HarmonyParser.ENDS, HarmonyParser.START, HarmonyParser.CHANNEL];
  private static readonly BETWEEN_MARKERS = [HarmonyParser.START, HarmonyParser.CHANNEL, ...HarmonyParser.ENDS];

  private state: 'header' | 'body' | 'between' = 'header';
  private header = '';
  private body: { kind: 'text' | 'reasoning' } | { kind: 'tool'; recipient: string } = { kind: 'text' };
  private argumentsText = '';

  protected markers(): readonly string[] {
    if (this.state === 'header') return HarmonyParser.HEADER_MARKERS;
    if (this.state === 'body') return HarmonyParser.BODY_MARKERS;
    return HarmonyParser.BETWEEN_MARKERS;
  }

  protected consume(text: string): number {
    if (this.state === 'header') this.header += text;
    else if (this.state === 'between') this.text.write(text);
    else if (this.body.kind === 'tool') this.argumentsText += text;
    else if (this.body.kind === 'reasoning') this.reasoning.write(text);
    else this.text.write(text);
    return text.length;
  }

  protected onMarker(marker: string): void {
    this.closeSections();
    if (this.state === 'header') {
      if (marker === HarmonyParser.MESSAGE) {
        this.startBody();
      } else {
        // A header cut short: start over at `<|start|>`, else wait for the next message.
        this.state = marker === HarmonyParser.START ? 'header' : 'between';
        this.header = '';
      }
      return;
    }
    if (this.state === 'body') this.finishBody();
    if (marker === HarmonyParser.START || marker === HarmonyParser.CHANNEL) {
      this.state = 'header';
      this.header = marker === HarmonyParser.CHANNEL ? marker : '';
    } else {
      this.state = 'between';
    }
  }

  protected end(): void {
    this.closeSections();
    if (this.state === 'body') this.finishBody();
    // Output that never reached `<|message|>` and has no harmony tokens is the model ignoring the format.
    else if (this.state === 'header' && !this.header.includes('<|')) this.text.write(this.header);
  }

  private startBody(): void {
    const header = this.header;
    const recipient = /\bto=([^\s<]+)/.exec(header)?.[1];
    const channel = /<\|channel\|>\s*([\w-]+)/.exec(header)?.[1];
    if (recipient !== undefined && recipient !== 'assistant') this.body = { kind: 'tool', recipient };
    else this.body = { kind: channel === 'analysis' ? 'reasoning' : 'text' };
    this.argumentsText = '';
    this.state = 'body';
  }

  private finishBody(): void {
    if (this.body.kind !== 'tool') return;
    const { recipient } = this.body;
    if (recipient.startsWith('functions.')) {
      this.emitToolCall(recipient.slice('functions.'.length), this.argumentsText);
      return;
    }
    // Built-in tools: `browser.*` takes JSON, `python` takes code.
    try {
      JSON.parse(this.argumentsText);
      this.emitToolCall(recipient, this.argumentsText);
    } catch {
      this.emitRawToolCall(recipient, this.argumentsText);
    }
  }
}

/** No format: every character is text, as generated. */
export class PlainParser implements ChatOutputParser {
  private done = false;

  push(textDelta: string): ChatPart[] {
    if (this.done) throw new Error('the chat output parser was already finished');
    return textDelta === '' ? [] : [{ type: 'text-delta', text: textDelta }];
  }

  finish(): ChatPart[] {
    this.done = true;
    return [];
  }
}
