/**
 * Detokenizing a stream of tokens one at a time. A character can span several tokens (byte
 * tokens, or a byte-level BPE token ending inside a multi-byte character), so bytes of an
 * unfinished UTF-8 sequence are held back until the sequence completes; invalid bytes become
 * U+FFFD exactly where decoding all tokens at once would put one. Concatenating everything
 * `push` and `flush` return equals `detokenize` of all the tokens.
 */

/** Turns tokens into text incrementally; see {@link Tokenizer.createDetokenizer}. */
export interface StreamingDetokenizer {
  /** Adds one token; returns the text that is now complete (often '', never a partial character). */
  push(token: number): string;
  /** Ends the stream: returns what is still held back (a truncated character becomes U+FFFD) and resets the detokenizer for a new stream. */
  flush(): string;
}

/**
 * `render`: the bytes a token contributes (empty for a skipped token).
 * `stripLeadingSpace`: drop one space at the very start of the text (SentencePiece's space prefix).
 */
export function createStreamingDetokenizer(
  render: (token: number) => Uint8Array,
  stripLeadingSpace: boolean,
): StreamingDetokenizer {
  let decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
  let started = false;
  const finish = (text: string): string => {
    if (started || text.length === 0) return text;
    started = true;
    return stripLeadingSpace && text.charCodeAt(0) === 0x20 ? text.slice(1) : text;
  };
  return {
    push(token: number): string {
      const bytes = render(token);
      return bytes.length === 0 ? '' : finish(decoder.decode(bytes, { stream: true }));
    },
    flush(): string {
      const rest = finish(decoder.decode());
      decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
      started = false;
      return rest;
    },
  };
}
