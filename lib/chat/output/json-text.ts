/** Small JSON-text helpers for tool calls: where a streamed value ends, and the raw text of members. */

/**
 * Follows a JSON object or array as it streams in and says when it is complete, so a tool call that
 * has no closing marker (Mistral's `[ARGS]{…}`) can be emitted as soon as its arguments end. It only
 * tracks nesting and strings; `JSON.parse` judges validity afterwards.
 */
export class JsonValueTracker {
  private depth = 0;
  private inString = false;
  private escaped = false;
  private started = false;
  /** The value does not start with `{` or `[`: its end cannot be told from its text. */
  unbounded = false;
  /** The closing bracket of the top-level value has been seen. */
  complete = false;

  /**
   * Feeds `text`; returns how many characters belong to the value (all of them unless it completed
   * inside `text`, when the rest is whatever follows it).
   */
  feed(text: string): number {
    for (let i = 0; i < text.length; i++) {
      if (this.complete || this.unbounded) return this.complete ? i : text.length;
      const c = text[i] as string;
      if (!this.started) {
        if (/\s/.test(c)) continue;
        this.started = true;
        if (c !== '{' && c !== '[') {
          this.unbounded = true;
          return text.length;
        }
        this.depth = 1;
        continue;
      }
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === '\\') this.escaped = true;
        else if (c === '"') this.inString = false;
        continue;
      }
      if (c === '"') this.inString = true;
      else if (c === '{' || c === '[') this.depth++;
      else if (c === '}' || c === ']') {
        this.depth--;
        if (this.depth === 0) {
          this.complete = true;
          return i + 1;
        }
      }
    }
    return text.length;
  }
}

/** Index just past the JSON value starting at `start` (whitespace skipped) in valid JSON text. */
function valueEnd(text: string, start: number): number {
  let i = skipSpace(text, start);
  const c = text[i];
  if (c === '"') return stringEnd(text, i);
  if (c === '{' || c === '[') {
    let depth = 0;
    for (; i < text.length; i++) {
      const d = text[i];
      if (d === '"') i = stringEnd(text, i) - 1;
      else if (d === '{' || d === '[') depth++;
      else if (d === '}' || d === ']') {
        depth--;
        if (depth === 0) return i + 1;
      }
    }
    return text.length;
  }
  // number, true, false, null
  while (i < text.length && !/[\s,}\]]/.test(text[i] as string)) i++;
  return i;
}

function stringEnd(text: string, quote: number): number {
  for (let i = quote + 1; i < text.length; i++) {
    if (text[i] === '\\') i++;
    else if (text[i] === '"') return i + 1;
  }
  return text.length;
}

function skipSpace(text: string, i: number): number {
  while (i < text.length && /\s/.test(text[i] as string)) i++;
  return i;
}

/**
 * The raw text of each top-level member of the JSON object `text` (already known to be valid JSON),
 * so a tool call's `rawArguments` can be the arguments exactly as generated.
 */
export function jsonObjectMemberTexts(text: string): Map<string, string> {
  const members = new Map<string, string>();
  let i = skipSpace(text, 0);
  if (text[i] !== '{') return members;
  i++;
  for (;;) {
    i = skipSpace(text, i);
    if (text[i] !== '"') return members;
    const keyEnd = stringEnd(text, i);
    const key = JSON.parse(text.slice(i, keyEnd)) as string;
    i = skipSpace(text, keyEnd);
    if (text[i] !== ':') return members;
    const start = skipSpace(text, i + 1);
    const end = valueEnd(text, start);
    members.set(key, text.slice(start, end));
    i = skipSpace(text, end);
    if (text[i] !== ',') return members;
    i++;
  }
}

/** The raw text of each element of the JSON array `text` (already known to be valid JSON). */
export function jsonArrayElementTexts(text: string): string[] {
  const elements: string[] = [];
  let i = skipSpace(text, 0);
  if (text[i] !== '[') return elements;
  i = skipSpace(text, i + 1);
  if (text[i] === ']') return elements;
  for (;;) {
    const start = skipSpace(text, i);
    const end = valueEnd(text, start);
    elements.push(text.slice(start, end));
    i = skipSpace(text, end);
    if (text[i] !== ',') return elements;
    i++;
  }
}
