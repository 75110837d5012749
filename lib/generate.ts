/**
 * Text generation: a prompt in, a stream of UTF-8-safe text deltas out, sampled natively token by
 * token (cpp/sampling). A {@link Generation} is an `AsyncIterable<string>` of deltas and also offers
 * the typed parts (`fullStream`), the whole text (`text`) and the summary (`final`).
 */
import { loadBinding } from './binding.js';
import { AbortError, ContextOverflowError } from './errors.js';
import type { NativeGrammar, NativeSampler, NativeSamplerParams } from './native-types.js';
import { responseFormatGrammar, type ResponseFormat } from './structured.js';
import type { Model, Sequence } from './model.js';

/** Sampling settings; every one has llama.cpp's default. */
export interface SamplingOptions {
  /** Softmax temperature; `0` is greedy (always the most likely token). Default `0.8`. */
  temperature?: number;
  /** Keep only the `topK` most likely tokens; `0` turns it off. Default `40`. */
  topK?: number;
  /** Keep the smallest set of tokens whose probabilities add up to `topP`; `1` turns it off. Default `0.95`. */
  topP?: number;
  /** Drop tokens less likely than `minP` times the most likely one; `0` turns it off. Default `0.05`. */
  minP?: number;
  /** Divide positive logits (multiply negative ones) of recently seen tokens by this; `1` is off. Default `1`. */
  repeatPenalty?: number;
  /** Subtract this times a recent token's count from its logit (OpenAI's `frequency_penalty`). Default `0`. */
  frequencyPenalty?: number;
  /** Subtract this from the logit of every recently seen token (OpenAI's `presence_penalty`). Default `0`. */
  presencePenalty?: number;
  /** How many recent tokens (prompt included) the penalties see; `-1`: all. Default `64`. */
  penaltyLastN?: number;
  /** Seed of the sampler's random numbers: the same seed, settings and prompt give the same text. Default: random. */
  seed?: number;
  /** Added to the logits of these tokens before sampling; `-Infinity` bans a token. Default none. */
  logitBias?: Readonly<Record<number, number>>;
}

export interface GenerateOptions extends SamplingOptions {
  /** Stop after this many generated tokens (finish reason `length`). Default `256`. */
  maxTokens?: number;
  /**
   * Stop when the text would contain one of these strings; the stop string itself is never
   * emitted, not even in part. Default none.
   */
  stop?: string | readonly string[];
  /** Stop at the model's end-of-generation tokens (EOS, end of turn). Default `true`. */
  stopAtEndOfGeneration?: boolean;
  /** Parse special-token text in a string prompt (`<|im_start|>`) as those tokens. Default `false`. */
  special?: boolean;
  /** Put the model's BOS token before a string prompt when the model wants one. Default `true`. */
  addBos?: boolean;
  /** Ends the generation: its streams and `final` reject with an `AbortError`. */
  signal?: AbortSignal;
  /** The sequence (KV cache) to generate in, continuing what it holds. Default: a new sequence, disposed at the end. */
  sequence?: Sequence;
  /**
   * What happens when the context is full. Off (`false`, the default): a prompt that does not fit
   * is a `ContextOverflowError`, and a generation that fills the context finishes with `length`
   * (raw reason `context-full`). On: the oldest tokens after the first `keepFirst` are dropped —
   * `dropFraction` of them, and at least enough for the prompt plus room to generate — and the kept
   * tail is evaluated again at its new positions (the text goes on; `usage.droppedTokens` counts
   * what was dropped). `true` is `{ keepFirst: 1, dropFraction: 0.5 }` (BOS kept).
   */
  contextShift?: boolean | ContextShiftOptions;
  /**
   * Constrains the output: `{ type: 'json_schema', schema }` makes it JSON that validates against
   * the schema (a grammar masks the tokens natively at every step; `final.object` is the parsed
   * value), `{ type: 'json_object' }` any JSON object. Unsupported schema keywords throw an
   * `UnsupportedSchemaError` before generation starts. Default `{ type: 'text' }`.
   */
  responseFormat?: ResponseFormat;
}

/** See {@link GenerateOptions.contextShift}. */
export interface ContextShiftOptions {
  /** Tokens at the start that are never dropped (a BOS, a system prompt). Default `1`. */
  keepFirst?: number;
  /** Share of the droppable tokens dropped at each shift, in (0, 1]. Default `0.5`. */
  dropFraction?: number;
}

/** Why a generation ended. */
export type FinishReason = 'stop' | 'length' | 'abort' | 'error';

/** The raw cause behind a {@link FinishReason}. */
export type RawFinishReason = 'eos' | 'stop-string' | 'max-tokens' | 'context-full' | 'grammar-complete' | 'abort' | 'error';

export interface GenerationUsage {
  /** Prompt tokens. */
  inputTokens: number;
  /** Generated tokens. */
  outputTokens: number;
  /** Prompt tokens that were already in the sequence's cache and not evaluated again. */
  cachedInputTokens: number;
  /** Tokens dropped from the start of the context by `contextShift` (0 without it). */
  droppedTokens: number;
}

export interface GenerationTimings {
  /** From the call to the first generated token, in milliseconds. */
  timeToFirstTokenMs: number;
  /** Prompt tokens evaluated per second. */
  promptTokensPerSecond: number;
  /** Generated tokens per second after the first. */
  generationTokensPerSecond: number;
  /** Milliseconds spent waiting for a slot (see the `maxConcurrency` load option). */
  queuedMs: number;
  /**
   * MoE models: tokens routed to each expert of each layer by this request, `[layer][expert]` (a
   * token counts once per expert it is routed to; dense layers are all zeros). The last layer
   * sees only the tokens whose next-token distribution was needed (the prompt's last token, then
   * each generated token), the others every evaluated token. `undefined` for dense models.
   */
  expertUsage?: number[][];
}

export interface GenerationResult {
  text: string;
  /** The generated token ids (the end-of-generation token, if one ended it, included). */
  tokens: number[];
  finishReason: FinishReason;
  rawFinishReason: RawFinishReason;
  usage: GenerationUsage;
  timings: GenerationTimings;
  /** With a JSON `responseFormat`: the parsed output, when the generation completed it (not cut by `maxTokens`). */
  object?: unknown;
}

/** A part of {@link Generation.fullStream}. */
export type GenerationPart =
  | { type: 'text-delta'; text: string }
  | { type: 'finish'; finishReason: FinishReason; rawFinishReason: RawFinishReason; usage: GenerationUsage };

const DEFAULTS = {
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1,
  frequencyPenalty: 0,
  presencePenalty: 0,
  penaltyLastN: 64,
} as const;

/** The native sampler's parameters from the options, checked. */
export function samplerParams(options: SamplingOptions): NativeSamplerParams {
  const number = (name: keyof SamplingOptions, value: number | undefined, fallback: number, ok: (v: number) => boolean) => {
    const v = value ?? fallback;
    if (typeof v !== 'number' || !ok(v)) throw new RangeError(`${name} is out of range: ${String(v)}`);
    return v;
  };
  const logitBias: [number, number][] = [];
  for (const [token, bias] of Object.entries(options.logitBias ?? {})) {
    const id = Number(token);
    if (!Number.isInteger(id) || id < 0 || typeof bias !== 'number' || Number.isNaN(bias)) {
      throw new RangeError(`logitBias needs integer token ids and numeric biases, got ${token}: ${String(bias)}`);
    }
    logitBias.push([id, bias]);
  }
  return {
    temperature: number('temperature', options.temperature, DEFAULTS.temperature, (v) => v >= 0 && Number.isFinite(v)),
    topK: number('topK', options.topK, DEFAULTS.topK, (v) => Number.isInteger(v) && v >= 0),
    topP: number('topP', options.topP, DEFAULTS.topP, (v) => v > 0 && v <= 1),
    minP: number('minP', options.minP, DEFAULTS.minP, (v) => v >= 0 && v <= 1),
    repeatPenalty: number('repeatPenalty', options.repeatPenalty, DEFAULTS.repeatPenalty, (v) => v > 0 && Number.isFinite(v)),
    frequencyPenalty: number('frequencyPenalty', options.frequencyPenalty, DEFAULTS.frequencyPenalty, Number.isFinite),
    presencePenalty: number('presencePenalty', options.presencePenalty, DEFAULTS.presencePenalty, Number.isFinite),
    penaltyLastN: number('penaltyLastN', options.penaltyLastN, DEFAULTS.penaltyLastN, (v) => Number.isInteger(v) && v >= -1),
    seed: number('seed', options.seed, Math.floor(Math.random() * 2 ** 32), (v) => Number.isInteger(v) && v >= 0 && v < 2 ** 53),
    logitBias,
  };
}

/**
 * Holds back the text that might be the start of a stop string, so that no stop string is ever
 * emitted even in part; finds the first complete one.
 */
class StopMatcher {
  #stops: string[];
  #held = '';
  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
  }
  /** Adds text; returns what can be emitted and whether a stop string was reached. */
  push(text: string): { emit: string; stopped: boolean } {
    const all = this.#held + text;
    let cut = -1;
    for (const stop of this.#stops) {
      const at = all.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.#held = '';
      return { emit: all.slice(0, cut), stopped: true };
    }
    // Keep the longest tail that is a prefix of some stop string.
    let keep = 0;
    for (const stop of this.#stops) {
      for (let n = Math.min(stop.length - 1, all.length); n > keep; n--) {
        if (all.endsWith(stop.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    this.#held = all.slice(all.length - keep);
    return { emit: all.slice(0, all.length - keep), stopped: false };
  }
  /** What was held back, once the text is known to end. */
  flush(): string {
    const rest = this.#held;
    this.#held = '';
    return rest;
  }
}

/**
 * One generation in progress. Iterate it for text deltas, or await `text` / `final`.
 * `Part` / `Result`: what `fullStream` yields and `final` resolves with (chats add reasoning and
 * tool calls to both).
 */
export class Generation<Part extends { type: string } = GenerationPart, Result extends { text: string } = GenerationResult>
  implements AsyncIterable<string>
{
  /** Resolves with the summary when the generation ends; rejects with `AbortError` or the error that ended it. */
  readonly final: Promise<Result>;
  #parts: Part[] = [];
  #done = false;
  #error: unknown;
  #wake: (() => void) | undefined;
  #readers = 0;
  #drained: (() => void) | undefined;

  /** @internal */
  constructor(run: (generation: Generation<Part, Result>) => Promise<Result>) {
    this.final = run(this).then(
      (result) => {
        this.#finish();
        return result;
      },
      (error: unknown) => {
        this.#error = error;
        this.#finish();
        throw error;
      },
    );
    // A caller that only iterates must not see an unhandled rejection on `final`.
    this.final.catch(() => {});
  }

  /** The whole generated text. */
  get text(): Promise<string> {
    return this.final.then((r) => r.text);
  }

  /** Text deltas and a final `finish` part. */
  get fullStream(): AsyncIterable<Part> {
    return { [Symbol.asyncIterator]: () => this.#iterate() };
  }

  [Symbol.asyncIterator](): AsyncIterator<string> {
    const parts = this.#iterate();
    return {
      next: async () => {
        for (;;) {
          const r = await parts.next();
          if (r.done) return { done: true, value: undefined };
          const part = r.value as Part & { text?: string };
          if (part.type === 'text-delta') return { done: false, value: part.text ?? '' };
        }
      },
      return: async () => {
        await parts.return(undefined);
        return { done: true, value: undefined };
      },
    };
  }

  /** @internal Queues a part for the readers; resolves when they want more (backpressure). */
  async _emit(part: Part): Promise<void> {
    this.#parts.push(part);
    this.#wake?.();
    // A reader that falls behind slows this generation only; nobody reading: no limit.
    if (this.#readers > 0 && this.#parts.length > 16) {
      await new Promise<void>((resolve) => (this.#drained = resolve));
    }
  }

  /** @internal The readers stopped early: whoever runs the generation ends it. */
  _onCancel: (() => void) | undefined;

  #finish(): void {
    this.#done = true;
    this.#wake?.();
    this.#drained?.();
  }

  async *#iterate(): AsyncGenerator<Part> {
    this.#readers++;
    let index = 0;
    let completed = false;
    try {
      for (;;) {
        if (index < this.#parts.length) {
          const part = this.#parts[index++]!;
          if (this.#parts.length - index <= 4) {
            this.#drained?.();
            this.#drained = undefined;
          }
          yield part;
          continue;
        }
        if (this.#done) {
          completed = true;
          if (this.#error !== undefined) throw this.#error;
          return;
        }
        await new Promise<void>((resolve) => (this.#wake = resolve));
        this.#wake = undefined;
      }
    } finally {
      this.#readers--;
      if (!completed && !this.#done) this._onCancel?.();
      this.#drained?.();
    }
  }
}

/** Internal knobs of a generation run (chats use them). */
export interface GenerationRunOptions extends GenerateOptions {
  /** Render control tokens' text in the output (chat output parsers read their markers). */
  detokenizeSpecial?: boolean;
  /**
   * The prompt is the whole text the sequence should hold: keep the longest prefix the sequence
   * already has, evaluate only the rest (usage.cachedInputTokens). Needs `sequence`.
   */
  reusePrefix?: boolean;
  /** A compiled grammar that constrains every sampled token. */
  grammar?: NativeGrammar;
  /**
   * A grammar that takes over once the output contains `text` (a tool-call opening marker),
   * constraining what follows it. Ignored when `grammar` is set.
   */
  grammarTrigger?: { text: string; grammar: NativeGrammar };
}

/** Receives the generated text; returns the parts to stream. Called once more with `end = true`. */
export type GenerationSink<Part> = (delta: string, end: boolean) => Part[];

/** The core of {@link generate} and chats: prompt tokens in, sampled tokens out, text through `sink`. */
export function runGeneration<Part extends { type: string }, Result extends { text: string }>(
  model: Model,
  promptTokens: Int32Array,
  options: GenerationRunOptions,
  sink: GenerationSink<Part>,
  finish: (core: GenerationResult) => { part: Part; result: Result },
): Generation<Part, Result> {
  const params = samplerParams(options);
  const maxTokens = options.maxTokens ?? 256;
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new RangeError(`maxTokens must be a positive integer, got ${maxTokens}`);
  const stops = options.stop === undefined ? [] : typeof options.stop === 'string' ? [options.stop] : [...options.stop];
  if (promptTokens.length === 0) throw new RangeError('the prompt has no tokens');
  if (options.reusePrefix && !options.sequence) throw new TypeError('reusePrefix needs a sequence');
  const tokenizer = model.tokenizer;
  const stopAtEog = options.stopAtEndOfGeneration !== false;
  const shift = contextShiftOptions(options.contextShift);

  // Ends the run on break / early return of every reader, as an abort would.
  const cancel = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, cancel.signal]) : cancel.signal;

  return new Generation<Part, Result>(async (gen) => {
    gen._onCancel = () => cancel.abort(new AbortError('the stream was closed before the generation ended'));
    const started = performance.now();
    const release = await model._acquireSlot(signal);
    const queuedMs = performance.now() - started;
    let sequence: Sequence;
    try {
      sequence = options.sequence ?? model.createSequence();
    } catch (error) {
      release();
      throw error;
    }
    const owned = options.sequence === undefined;
    const sampler: NativeSampler = new (loadBinding().Sampler)(params, model.info.vocabSize);
    const specialText = options.detokenizeSpecial === true; // the grammar sees what the text shows
    let grammarMatcher = options.grammar ? await model._grammars.matcher(options.grammar, specialText) : undefined;
    let trigger = options.grammar ? undefined : options.grammarTrigger;
    let seen = ''; // the output so far, for the trigger
    const detokenizer = tokenizer.createDetokenizer({ stripLeadingSpace: false, special: options.detokenizeSpecial === true });
    const matcher = new StopMatcher(stops);
    const tokens: number[] = [];
    let text = '';
    let firstTokenAt = 0;
    let cached = 0;
    let dropped = 0;
    const emitText = async (delta: string, end: boolean) => {
      text += delta;
      for (const part of sink(delta, end)) await gen._emit(part);
    };
    try {
      let pending: Int32Array = promptTokens;
      if (options.reusePrefix) {
        // Keep what the sequence shares with the prompt; at least one prompt token is evaluated.
        const held = sequence.tokens;
        let common = 0;
        const limit = Math.min(held.length, promptTokens.length - 1);
        while (common < limit && held[common] === promptTokens[common]) common++;
        sequence.truncate(common);
        cached = common;
        pending = promptTokens.subarray(common);
      }
      if (pending.length > 1) {
        // Leading tokens another sequence evaluated come from the model's prefix cache.
        const before = sequence.length;
        const content = Int32Array.from([...sequence.tokens, ...pending]);
        const restored = await sequence._restorePrefix(content);
        if (restored > before) {
          cached += restored - before;
          pending = content.subarray(restored);
        }
      }
      if (shift && sequence.length + pending.length >= sequence.contextSize) {
        // Make room for the prompt plus a quarter of the context (or maxTokens) to generate in.
        const room = Math.min(maxTokens, Math.floor(sequence.contextSize / 4));
        const all = [...sequence.tokens, ...pending];
        const keep = Math.min(shift.keepFirst, all.length);
        const droppable = all.length - keep;
        const needed = all.length - (sequence.contextSize - 1 - room);
        const drop = Math.min(droppable - 1, Math.max(needed, Math.floor(droppable * shift.dropFraction)));
        if (drop >= needed && drop > 0) {
          const kept = [...all.slice(0, keep), ...all.slice(keep + drop)];
          let common = 0;
          while (common < sequence.length && common < kept.length - 1 && sequence.tokens[common] === kept[common]) common++;
          sequence.truncate(common);
          cached = Math.min(cached, common);
          pending = Int32Array.from(kept.slice(common));
          dropped += drop;
        }
      }
      if (sequence.length + pending.length >= sequence.contextSize) {
        throw new ContextOverflowError(
          `the prompt of ${promptTokens.length} tokens does not fit the context of ${sequence.contextSize} tokens` +
            (sequence.length > 0 && !options.reusePrefix ? ` (${sequence.length} already used)` : ''),
        );
      }
      sampler.accept(promptTokens);
      sequence._takeExpertUsage(); // counts from here on belong to this request
      let step: ArrayLike<number> = pending;
      let raw: RawFinishReason = 'max-tokens';
      for (;;) {
        const { token, grammarComplete, grammarCanContinue } = await sequence._step(step, sampler, signal, grammarMatcher);
        if (tokens.length === 0) {
          firstTokenAt = performance.now();
          // The prompt is in the cache now: offer its blocks to later requests (off the hot path).
          sequence._storePrefix(Int32Array.from(sequence.tokens)).catch(() => {});
        }
        tokens.push(token);
        if (stopAtEog && tokenizer.eogTokens.has(token)) {
          raw = 'eos';
          break;
        }
        const piece = detokenizer.push(token);
        if (trigger) {
          const from = Math.max(0, seen.length - trigger.text.length);
          seen += piece;
          const at = seen.indexOf(trigger.text, from);
          if (at >= 0) {
            // The grammar takes over after the marker; text already past it must fit the grammar.
            const m = await model._grammars.matcher(trigger.grammar, specialText);
            const rest = seen.slice(at + trigger.text.length);
            if (!rest || m.acceptBytes(new TextEncoder().encode(rest))) grammarMatcher = m;
            trigger = undefined;
          }
        }
        const { emit, stopped } = matcher.push(piece);
        if (emit) await emitText(emit, false);
        if (stopped) {
          raw = 'stop-string';
          break;
        }
        if (grammarMatcher && grammarComplete && !grammarCanContinue) {
          raw = 'grammar-complete'; // the constrained output is whole: nothing else may follow
          break;
        }
        if (tokens.length >= maxTokens) break;
        if (sequence.length + 1 >= sequence.contextSize) {
          if (!shift) {
            raw = 'context-full';
            break;
          }
          // Drop the oldest tokens after the kept start; evaluate the kept tail again, then the token.
          const held = [...sequence.tokens];
          const keep = Math.min(shift.keepFirst, held.length - 1);
          const drop = Math.max(1, Math.floor((held.length - keep) * shift.dropFraction));
          sequence.truncate(keep);
          step = [...held.slice(keep + drop), token];
          dropped += drop;
          continue;
        }
        step = [token];
      }
      const rest = raw === 'stop-string' ? '' : matcher.push(detokenizer.flush()).emit + matcher.flush();
      await emitText(rest, true);
      const finishReason: FinishReason = raw === 'max-tokens' || raw === 'context-full' ? 'length' : 'stop';
      const usage = { inputTokens: promptTokens.length, outputTokens: tokens.length, cachedInputTokens: cached, droppedTokens: dropped };
      const expertUsage = sequence._takeExpertUsage();
      const ended = performance.now();
      const evaluated = promptTokens.length - cached;
      const { part, result } = finish({
        text,
        tokens,
        finishReason,
        rawFinishReason: raw,
        usage,
        timings: {
          timeToFirstTokenMs: firstTokenAt - started,
          promptTokensPerSecond: evaluated / Math.max(1e-3, (firstTokenAt - started) / 1000),
          generationTokensPerSecond: tokens.length > 1 ? (tokens.length - 1) / Math.max(1e-3, (ended - firstTokenAt) / 1000) : 0,
          queuedMs,
          ...(expertUsage ? { expertUsage } : {}),
        },
      });
      await gen._emit(part);
      return result;
    } catch (error) {
      // However the abort surfaced (the signal's reason, a native cancellation), the generation
      // reports one AbortError, with the reason as its cause.
      if (signal.aborted && !(error instanceof AbortError)) {
        throw new AbortError('the generation was aborted', { cause: signal.reason ?? error });
      }
      throw error;
    } finally {
      try {
        if (owned) await sequence.dispose();
      } finally {
        release();
      }
    }
  });
}

function contextShiftOptions(option: GenerateOptions['contextShift']): Required<ContextShiftOptions> | undefined {
  if (option === undefined || option === false) return undefined;
  const { keepFirst = 1, dropFraction = 0.5 } = option === true ? {} : option;
  if (!Number.isInteger(keepFirst) || keepFirst < 0) throw new RangeError(`contextShift.keepFirst must be a non-negative integer, got ${keepFirst}`);
  if (!(dropFraction > 0 && dropFraction <= 1)) throw new RangeError(`contextShift.dropFraction must be in (0, 1], got ${dropFraction}`);
  return { keepFirst, dropFraction };
}

/** Runs a generation on `model` (see {@link Model.generate}). */
export function generate(model: Model, prompt: string | ArrayLike<number>, options: GenerateOptions = {}): Generation {
  const format = options.responseFormat;
  const grammar = model._grammars.grammar(`format:${JSON.stringify(format ?? null)}`, () => responseFormatGrammar(format));
  const json = format !== undefined && format.type !== 'text';
  const promptTokens =
    typeof prompt === 'string'
      ? model.tokenizer.tokenize(prompt, { special: options.special === true, addBos: options.addBos !== false })
      : Int32Array.from(prompt);
  return runGeneration<GenerationPart, GenerationResult>(
    model,
    promptTokens,
    grammar ? { ...options, grammar } : options,
    (delta) => (delta ? [{ type: 'text-delta', text: delta }] : []),
    (core) => ({
      part: { type: 'finish', finishReason: core.finishReason, rawFinishReason: core.rawFinishReason, usage: core.usage },
      result: json ? { ...core, object: parseCompleted(core) } : core,
    }),
  );
}

/** The JSON value of a constrained generation that ran to its end; undefined when it was cut short. */
export function parseCompleted(core: { text: string; rawFinishReason: RawFinishReason }): unknown {
  if (core.rawFinishReason !== 'grammar-complete' && core.rawFinishReason !== 'eos' && core.rawFinishReason !== 'stop-string') {
    return undefined;
  }
  try {
    return JSON.parse(core.text) as unknown;
  } catch {
    return undefined;
  }
}
