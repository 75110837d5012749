/**
 * The streaming detokenizer on the cases that make streaming hard: characters whose UTF-8 bytes
 * arrive in several tokens (SentencePiece byte tokens, byte-level BPE tokens that end inside a
 * character, emoji ZWJ sequences), invalid byte sequences, SentencePiece's leading space, and
 * control tokens. Its output, joined, must equal `detokenize` of the same tokens.
 */
import { describe, expect, it } from 'vitest';
import { createTokenizer, type Tokenizer } from '../lib/index.js';
import { realVocabulary } from './helpers/vocab.js';
import { tinyVocabulary } from './helpers/tiny-llama.js';

function spm(): Tokenizer {
  const v = tinyVocabulary();
  return createTokenizer({
    'tokenizer.ggml.model': 'llama',
    'tokenizer.ggml.tokens': v.tokens,
    'tokenizer.ggml.scores': v.scores,
    'tokenizer.ggml.token_type': v.types,
  });
}

/** Feeds `ids` one at a time; returns every chunk, the flush last. */
function stream(tokenizer: Tokenizer, ids: ArrayLike<number>, options: { special?: boolean; stripLeadingSpace?: boolean } = {}): string[] {
  const d = tokenizer.createDetokenizer(options);
  const chunks = Array.from(ids, (id) => d.push(id));
  chunks.push(d.flush());
  return chunks;
}

describe('streaming detokenizer', () => {
  it('holds SentencePiece byte tokens back until their character is complete', () => {
    const t = spm();
    const byte = (b: number) => t.tokenId(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)!;
    // 😀 is F0 9F 98 80: nothing comes out until the fourth byte.
    const ids = [t.tokenId('▁a')!, ...[0xf0, 0x9f, 0x98, 0x80].map(byte), t.tokenId('▁the')!];
    expect(stream(t, ids)).toEqual(['a', '', '', '', '😀', ' the', '']);
    expect(t.detokenize(ids)).toBe('a😀 the');
  });

  it('gives U+FFFD exactly where detokenize does for invalid or truncated sequences', () => {
    const t = spm();
    const byte = (b: number) => t.tokenId(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)!;
    const cases = [
      [0xf0, 0x9f], // truncated at the end: U+FFFD on flush
      [0xe6, 0x41], // a lead byte followed by ASCII: U+FFFD then 'A'
      [0xff, 0x80, 0x41], // bytes that never start a character
      [0xed, 0xa0, 0x80], // an encoded surrogate
      [0xe6, 0x97, 0xa5, 0xe6], // a complete character then a dangling lead byte
    ];
    for (const bytes of cases) {
      const ids = bytes.map(byte);
      const chunks = stream(t, ids);
      expect(chunks.join('')).toBe(t.detokenize(ids));
      expect(chunks.join('')).toBe(new TextDecoder().decode(Uint8Array.from(bytes)));
    }
    expect(stream(t, [0xf0, 0x9f].map(byte))).toEqual(['', '', '\ufffd']);
  });

  it('strips SentencePiece’s prefix space once, from the first text that comes out', () => {
    const t = spm();
    const ids = t.tokenize('the cat', { addBos: true, special: true });
    expect(stream(t, ids).join('')).toBe('the cat');
    expect(t.detokenize(ids)).toBe('the cat');
    // With special tokens rendered, the text starts with <s>, so no space is stripped.
    expect(stream(t, ids, { special: true }).join('')).toBe(t.detokenize(ids, { special: true }));
    expect(t.detokenize(ids, { special: true })).toBe('<s> the cat');
    // A continuation keeps its leading space.
    const more = t.tokenize('the cat').slice(3);
    expect(stream(t, more, { stripLeadingSpace: false }).join('')).toBe(' cat');
  });

  it('flush resets it for a new stream', () => {
    const t = spm();
    const d = t.createDetokenizer();
    const [first, second] = [t.tokenize('is it'), t.tokenize('it is')];
    const a = Array.from(first, (id) => d.push(id)).join('') + d.flush();
    const b = Array.from(second, (id) => d.push(id)).join('') + d.flush();
    expect([a, b]).toEqual(['is it', 'it is']);
  });

  it('byte-level BPE tokens that end inside a character (Qwen3 vocabulary)', () => {
    const t = createTokenizer(realVocabulary('qwen3'));
    let partial = 0;
    for (const text of ['👨‍👩‍👧‍👦 family', '🇯🇵🇩🇪 flags', '𠀀𠀁𪚥 rare CJK', 'ṷṓ ǰ ᾼ', 'नमस्ते दुनिया', 'mixed 日本語 and 👍🏽 text']) {
      const ids = t.tokenize(text);
      partial += Array.from(ids).filter((id) => new TextDecoder().decode(t.tokenBytes(id)).includes('\ufffd')).length;
      const chunks = stream(t, ids);
      expect(chunks.join('')).toBe(text);
      for (const chunk of chunks) expect(chunk).not.toContain('\ufffd');
    }
    // Many of these tokens are partial characters, so the detokenizer really had to hold bytes back.
    expect(partial).toBeGreaterThan(10);
  });

  it('renders control tokens only with special, user-defined ones always (Qwen3 vocabulary)', () => {
    const t = createTokenizer(realVocabulary('qwen3'));
    const ids = t.tokenize('<|im_start|>assistant\n<think>\nok</think><|im_end|>', { special: true });
    expect(stream(t, ids).join('')).toBe('assistant\n<think>\nok</think>');
    expect(stream(t, ids, { special: true }).join('')).toBe('<|im_start|>assistant\n<think>\nok</think><|im_end|>');
  });

  it('rejects token ids outside the vocabulary', () => {
    const t = spm();
    const d = t.createDetokenizer();
    expect(() => d.push(t.vocabSize)).toThrow(RangeError);
    expect(() => d.push(-1)).toThrow(RangeError);
    expect(() => d.push(1.5)).toThrow(RangeError);
  });
});
