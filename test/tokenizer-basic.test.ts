/** The basic tokenizers (SentencePiece-style and byte-level BPE) built from GGUF metadata. */
import { describe, expect, it } from 'vitest';
import { createTokenizer, TokenType } from '../lib/index.js';
import { tinyVocabulary } from './helpers/tiny-llama.js';

function spm() {
  const v = tinyVocabulary();
  return createTokenizer({
    'tokenizer.ggml.model': 'llama',
    'tokenizer.ggml.tokens': v.tokens,
    'tokenizer.ggml.scores': v.scores,
    'tokenizer.ggml.token_type': v.types,
    'tokenizer.ggml.bos_token_id': 1,
    'tokenizer.ggml.eos_token_id': 2,
    'tokenizer.ggml.add_bos_token': true,
  });
}

describe('SentencePiece-style tokenizer', () => {
  it('merges by score, falls back to bytes, and round-trips text', () => {
    const t = spm();
    const v = tinyVocabulary().tokens;
    const ids = t.tokenize('the cat');
    // '▁the' is in the vocabulary but no chain of pair merges reaches it ('▁th' is missing),
    // exactly as in SentencePiece; 'a' has no piece and falls back to its byte.
    expect([...ids].map((i) => v[i])).toEqual(['▁t', 'h', 'e', '▁c', '<0x61>', 't']);
    expect([...t.tokenize('is it')].map((i) => v[i])).toEqual(['▁is', '▁it']);
    for (const text of ['the cat', 'hello wörld 🙂', '  two  spaces', 'a\nb']) {
      expect(t.detokenize(t.tokenize(text))).toBe(text);
    }
    expect(t.tokenize('a', { addBos: true })[0]).toBe(1);
  });

  it('does not parse special-token text unless asked', () => {
    const t = spm();
    const plain = t.tokenize('x</s>');
    expect([...plain]).not.toContain(2);
    expect([...t.tokenize('x</s>', { special: true })]).toContain(2);
    expect(t.detokenize([2])).toBe('');
    expect(t.detokenize([2], { special: true })).toBe('</s>');
    expect(() => t.detokenize([100000])).toThrow(RangeError);
  });
});

describe('byte-level BPE tokenizer', () => {
  it('applies merges by rank over bytes and round-trips any text', () => {
    // Byte-level alphabet (GPT-2 mapping) plus a few merges.
    const alphabet: string[] = [];
    let extra = 0;
    for (let b = 0; b < 256; b++) {
      const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
      alphabet.push(String.fromCodePoint(printable ? b : 256 + extra++));
    }
    const tokens = [...alphabet, 'Ġt', 'he', 'Ġthe', '<|endoftext|>'];
    const t = createTokenizer({
      'tokenizer.ggml.model': 'gpt2',
      'tokenizer.ggml.tokens': tokens,
      'tokenizer.ggml.token_type': Int32Array.from(tokens.map((_, i) => (i === tokens.length - 1 ? TokenType.Control : TokenType.Normal))),
      'tokenizer.ggml.merges': ['Ġ t', 'h e', 'Ġt he'],
    });
    const ids = [...t.tokenize('the the')];
    expect(ids.map((i) => tokens[i])).toEqual(['t', 'he', 'Ġthe']);
    for (const text of ['the the', 'naïve café 日本語 🙂', "don't  stop\n"]) expect(t.detokenize(t.tokenize(text))).toBe(text);
    expect([...t.tokenize('<|endoftext|>', { special: true })]).toEqual([tokens.length - 1]);
    expect([...t.tokenize('<|endoftext|>')]).not.toContain(tokens.length - 1);
  });
});
