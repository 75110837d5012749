/**
 * The streaming machinery the per-family parsers share: find markers in text that arrives in
 * arbitrary pieces, hold back text that may be the start of a marker, trim format whitespace around
 * markers, and turn a finished tool call's text into a `tool-call` or `tool-call-error` part.
 */
import { jsonObjectMemberTexts } from './json-text.js';
import type { ChatPart } from '../types.js';

/** Makes an id for a tool call the model gave none; `index` counts the parser's tool calls from 0. */
export type ToolCallIdFactory = (name: string, index: number) => string;

/** Collects parts, merging adjacent deltas of the same kind. */
export class PartCollector {
  private parts: ChatPart[] = [];

  delta(type: 'text-delta' | 'reasoning-delta', text: string): void {
    if (text === '') return;
    const last = this.parts[this.parts.length - 1];
    if (last && last.type === type) last.text += text;
    else this.parts.push({ type, text });
  }

  add(part: ChatPart): void {
    this.parts.push(part);
  }

  /** The parts collected since the last call. */
  take(): ChatPart[] {
    const parts = this.parts;
    this.parts = [];
    return parts;
  }
}

/**
 * Writes one kind of delta with the whitespace at both ends of each section dropped: the newlines
 * templates put around markers are format, not content. Trailing whitespace is held until more text
 * follows; {@link close} (at a marker, or the end) drops it.
 */
export class SectionWriter {
  private atStart = true;
  private heldWhitespace = '';

  constructor(
    private readonly out: PartCollector,
    private readonly type: 'text-delta' | 'reasoning-delta',
  ) {}

  write(text: string): void {
    if (this.atStart) {
      text = text.replace(/^\s+/, '');
      if (text === '') return;
      this.atStart = false;
    }
    // Scanned by hand: /\s+$/ backtracks quadratically over long whitespace runs.
    let bodyEnd = text.length;
    while (bodyEnd > 0 && /\s/.test(text[bodyEnd - 1] as string)) bodyEnd--;
    if (bodyEnd > 0) {
      this.out.delta(this.type, this.heldWhitespace + text.slice(0, bodyEnd));
      this.heldWhitespace = '';
    }
    this.heldWhitespace += text.slice(bodyEnd);
  }

  /** Ends the section: held trailing whitespace is dropped and the next text starts a new section. */
  close(): void {
    this.atStart = true;
    this.heldWhitespace = '';
  }
}

/** The earliest occurrence of any marker in `text` (the longest one on a tie). */
function firstMarker(text: string, markers: readonly string[]): { index: number; marker: string } | undefined {
  let best: { index: number; marker: string } | undefined;
  for (const marker of markers) {
    const index = text.indexOf(marker);
    if (index < 0) continue;
    if (!best || index < best.index || (index === best.index && marker.length > best.marker.length)) best = { index, marker };
  }
  return best;
}

/** Length of the longest end of `text` that is the start of some marker (and could still become one). */
function partialMarkerLength(text: string, markers: readonly string[]): number {
  let longest = 0;
  for (const marker of markers) {
    for (let length = Math.min(marker.length - 1, text.length); length > longest; length--) {
      if (text.endsWith(marker.slice(0, length))) {
        longest = length;
        break;
      }
    }
  }
  return longest;
}

/** The public face of every parser. */
export interface ChatOutputParser {
  /** Parses more generated text; returns the parts it completes. */
  push(textDelta: string): ChatPart[];
  /** Ends the output: releases held-back text, ends an unterminated tool call. The parser is done after this. */
  finish(): ChatPart[];
}

/**
 * A parser driven by markers. Each state names the markers it reacts to; text between markers goes
 * to {@link consume}, each marker to {@link onMarker}. A state may also end without a marker
 * (a JSON value that closed): `consume` then uses less than it was given and the rest is parsed again
 * in the new state.
 */
export abstract class MarkerParser implements ChatOutputParser {
  protected readonly out = new PartCollector();
  private pending = '';
  private done = false;
  private toolCallCount = 0;

  constructor(private readonly createId: ToolCallIdFactory) {}

  push(textDelta: string): ChatPart[] {
    if (this.done) throw new Error('the chat output parser was already finished');
    this.pending += textDelta;
    this.drain(false);
    return this.out.take();
  }

  finish(): ChatPart[] {
    if (this.done) return [];
    this.drain(true);
    this.done = true;
    this.end();
    return this.out.take();
  }

  /** The markers the current state reacts to. */
  protected abstract markers(): readonly string[];
  /** Text of the current state, marker-free; returns how much of it was used (less only after a state change). */
  protected abstract consume(text: string): number;
  /** A marker of the current state was found. */
  protected abstract onMarker(marker: string): void;
  /** The output ended (everything pending was consumed). */
  protected abstract end(): void;

  private drain(final: boolean): void {
    for (;;) {
      const markers = this.markers();
      const hit = firstMarker(this.pending, markers);
      const end = hit ? hit.index : this.pending.length - (final ? 0 : partialMarkerLength(this.pending, markers));
      const used = this.consume(this.pending.slice(0, end));
      if (used < end) {
        this.pending = this.pending.slice(used);
        continue;
      }
      if (hit) {
        this.pending = this.pending.slice(end + hit.marker.length);
        this.onMarker(hit.marker);
        continue;
      }
      this.pending = this.pending.slice(end);
      return;
    }
  }

  /** Emits a tool call whose arguments are `rawArguments` (JSON text), or an error part. */
  protected emitToolCall(name: string | undefined, rawArguments: string, id?: string): void {
    const raw = rawArguments.trim();
    if (!name) {
      this.out.add({ type: 'tool-call-error', rawArguments: raw, error: 'the tool call has no function name' });
      return;
    }
    const parsed = parseJson(raw);
    if (!parsed.ok) {
      this.out.add({ type: 'tool-call-error', name, rawArguments: raw, error: `malformed JSON arguments: ${parsed.error}` });
      return;
    }
    this.addToolCall(name, parsed.value, raw, id);
  }

  /**
   * Emits a tool call written as one JSON object `{"name": …, "arguments": {…}}` (Qwen3, Mistral's
   * array form), or an error part.
   */
  protected emitJsonToolCall(callText: string): void {
    const raw = callText.trim();
    const parsed = parseJson(raw);
    if (!parsed.ok) {
      const name = /"name"\s*:\s*"((?:[^"\\]|\\.)*)"/.exec(raw)?.[1];
      this.out.add({
        type: 'tool-call-error',
        ...(name === undefined ? {} : { name }),
        rawArguments: raw,
        error: `malformed JSON in tool call: ${parsed.error}`,
      });
      return;
    }
    const call = parsed.value;
    if (call === null || typeof call !== 'object' || Array.isArray(call) || typeof (call as { name?: unknown }).name !== 'string') {
      this.out.add({ type: 'tool-call-error', rawArguments: raw, error: 'the tool call is not an object with a string "name"' });
      return;
    }
    const { name, id } = call as { name: string; id?: unknown };
    const members = jsonObjectMemberTexts(raw);
    const argumentsKey = members.has('arguments') ? 'arguments' : members.has('parameters') ? 'parameters' : undefined;
    let args: unknown = argumentsKey === undefined ? {} : (call as Record<string, unknown>)[argumentsKey];
    let rawArguments = argumentsKey === undefined ? '{}' : (members.get(argumentsKey) as string);
    // Some models write the arguments as a JSON string (OpenAI's wire form): unwrap it.
    if (typeof args === 'string') {
      const inner = parseJson(args);
      if (inner.ok && inner.value !== null && typeof inner.value === 'object') {
        rawArguments = args.trim();
        args = inner.value;
      }
    }
    this.addToolCall(name, args, rawArguments, typeof id === 'string' && id !== '' ? id : undefined);
  }

  /** Emits a tool-call part whose arguments are not JSON (gpt-oss's built-in python tool takes code). */
  protected emitRawToolCall(name: string, rawArguments: string): void {
    const raw = rawArguments.trim();
    this.addToolCall(name, raw, raw, undefined);
  }

  protected toolCallError(name: string | undefined, rawArguments: string, error: string): void {
    this.out.add({ type: 'tool-call-error', ...(name ? { name } : {}), rawArguments: rawArguments.trim(), error });
  }

  private addToolCall(name: string, args: unknown, rawArguments: string, id: string | undefined): void {
    const index = this.toolCallCount++;
    this.out.add({ type: 'tool-call', id: id ?? this.createId(name, index), name, arguments: args, rawArguments });
  }
}

function parseJson(text: string): { ok: true; value: unknown } | { ok: false; error: string } {
  if (text === '') return { ok: false, error: 'empty' };
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (error) {
    return { ok: false, error: error instanceof Error ? error.message : String(error) };
  }
}
