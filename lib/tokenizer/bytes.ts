/**
 * Byte-level helpers shared by the tokenizers: GPT-2's byte-to-unicode alphabet (how byte-level
 * BPE vocabularies spell raw bytes) and a UTF-8 encoder that writes into a reusable buffer.
 */

/**
 * GPT-2's byte-to-unicode table: printable Latin-1 bytes stand for themselves, every other byte
 * for a code point from U+0100 up (space is `Ġ`, newline `Ċ`). Byte-level BPE vocabularies store
 * their tokens in this alphabet.
 */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCharCode(printable ? b : 256 + extra++);
  }
  return table;
})();

/** The inverse of {@link BYTE_TO_CHAR} by code point (all of them are below U+0144); -1 elsewhere. */
export const CHAR_TO_BYTE: Int16Array = (() => {
  const table = new Int16Array(0x144).fill(-1);
  BYTE_TO_CHAR.forEach((c, b) => {
    table[c.charCodeAt(0)] = b;
  });
  return table;
})();

/** A growable byte buffer that strings are UTF-8 encoded into without allocating per call. */
export class ByteBuffer {
  bytes = new Uint8Array(256);
  length = 0;

  /** Replaces the contents with the UTF-8 encoding of `text` (lone surrogates become U+FFFD, as TextEncoder does). */
  setUtf8(text: string): void {
    this.length = 0;
    this.appendUtf8(text);
  }

  appendUtf8(text: string): void {
    // Worst case three bytes per UTF-16 unit (a surrogate pair is two units for four bytes).
    this.reserve(this.length + text.length * 3);
    const out = this.bytes;
    let n = this.length;
    for (let i = 0; i < text.length; i++) {
      let c = text.charCodeAt(i);
      if (c < 0x80) {
        out[n++] = c;
        continue;
      }
      if (c < 0x800) {
        out[n++] = 0xc0 | (c >> 6);
        out[n++] = 0x80 | (c & 0x3f);
        continue;
      }
      if (c >= 0xd800 && c <= 0xdfff) {
        const next = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
        if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
          const cp = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
          out[n++] = 0xf0 | (cp >> 18);
          out[n++] = 0x80 | ((cp >> 12) & 0x3f);
          out[n++] = 0x80 | ((cp >> 6) & 0x3f);
          out[n++] = 0x80 | (cp & 0x3f);
          i++;
          continue;
        }
        c = 0xfffd;
      }
      out[n++] = 0xe0 | (c >> 12);
      out[n++] = 0x80 | ((c >> 6) & 0x3f);
      out[n++] = 0x80 | (c & 0x3f);
    }
    this.length = n;
  }

  append(bytes: Uint8Array): void {
    this.reserve(this.length + bytes.length);
    this.bytes.set(bytes, this.length);
    this.length += bytes.length;
  }

  reserve(capacity: number): void {
    if (capacity <= this.bytes.length) return;
    const grown = new Uint8Array(Math.max(capacity, this.bytes.length * 2));
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
  }
}
