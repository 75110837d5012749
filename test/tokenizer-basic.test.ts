/** The basic tokenizers (SentencePiece-style and byte-level BPE) built from GGUF metadata. */
import { describe, expect, it, vi } from 'vitest';
import { createTokenizer, TokenType, type GgufMetadataValue } from '../lib/index.js';
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

/** A byte-level BPE vocabulary: the 256 byte tokens of GPT-2's alphabet, then `extra` tokens with their types. */
function byteLevel(extra: [string, number][], metadata: Record<string, GgufMetadataValue> = {}) {
  const alphabet: string[] = [];
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    alphabet.push(String.fromCodePoint(printable ? b : 256 + shifted++));
  }
  const tokens = [...alphabet, ...extra.map(([t]) => t)];
  const types = Int32Array.from([...alphabet.map(() => TokenType.Normal), ...extra.map(([, type]) => type)]);
  const tokenizer = createTokenizer({ 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': tokens, 'tokenizer.ggml.token_type': types, ...metadata });
  return { tokenizer, id: (text: string) => tokens.indexOf(text), tokens };
}

describe('tokenizer metadata rules', () => {
  it('falls back to the default pre-tokenizer for an unknown tokenizer.ggml.pre, warning once', () => {
    const spy = vi.spyOn(process, 'emitWarning').mockImplementation(() => {});
    try {
      const a = byteLevel([], { 'tokenizer.ggml.pre': 'no-such-pre-tokenizer', 'tokenizer.ggml.merges': [] }).tokenizer;
      byteLevel([], { 'tokenizer.ggml.pre': 'no-such-pre-tokenizer', 'tokenizer.ggml.merges': [] });
      expect(a.pre).toBe('default');
      expect(a.detokenize(a.tokenize('still works, 123'))).toBe('still works, 123');
      expect(spy).toHaveBeenCalledTimes(1);
      expect(String(spy.mock.calls[0]![0])).toContain("unknown tokenizer.ggml.pre 'no-such-pre-tokenizer'");
      // No pre key at all is llama.cpp's 'default', silently.
      expect(byteLevel([], { 'tokenizer.ggml.merges': [] }).tokenizer.pre).toBe('default');
      expect(byteLevel([], { 'tokenizer.ggml.pre': 'llama3', 'tokenizer.ggml.merges': [] }).tokenizer.pre).toBe('llama-bpe');
      expect(spy).toHaveBeenCalledTimes(1);
    } finally {
      spy.mockRestore();
    }
  });

  it('add_bos_token / add_eos_token: the file wins, else llama.cpp defaults per family', () => {
    const bpe = (pre: string, extra: Record<string, GgufMetadataValue> = {}) =>
      byteLevel([['<s>', TokenType.Control], ['</s>', TokenType.Control]], { 'tokenizer.ggml.pre': pre, 'tokenizer.ggml.merges': [], 'tokenizer.ggml.bos_token_id': 256, 'tokenizer.ggml.eos_token_id': 257, ...extra }).tokenizer;
    expect([bpe('qwen2').addBos, bpe('qwen2').addEos]).toEqual([false, false]);
    expect(bpe('llama-bpe').addBos).toBe(true);
    expect(bpe('llama-bpe', { 'tokenizer.ggml.add_bos_token': false }).addBos).toBe(false);
    const withEos = bpe('qwen2', { 'tokenizer.ggml.add_eos_token': true, 'tokenizer.ggml.add_bos_token': true });
    expect([...withEos.tokenize('a', { addBos: true, addEos: true })]).toEqual([256, withEos.tokenId('a'), 257]);
    expect([...withEos.tokenize('a')]).toEqual([withEos.tokenId('a')]);
    // SentencePiece: add BOS, not EOS, BOS 1 / EOS 2 / UNK 0 by default.
    const v = tinyVocabulary();
    const s = createTokenizer({ 'tokenizer.ggml.model': 'llama', 'tokenizer.ggml.tokens': v.tokens, 'tokenizer.ggml.scores': v.scores, 'tokenizer.ggml.token_type': v.types });
    expect([s.addBos, s.addEos, s.bosToken, s.eosToken]).toEqual([true, false, 1, 2]);
  });

  it('end-of-generation tokens: EOS, EOT/EOM ids, end-of-turn texts, and harmony’s <|end|> rule', () => {
    const vocab: [string, number][] = [['<|im_end|>', TokenType.Control], ['<|endoftext|>', TokenType.Control], ['<|fim_pad|>', TokenType.Control], ['<x>', TokenType.Control], ['<|eot_id|>', TokenType.Control]];
    const { tokenizer, id } = byteLevel(vocab, { 'tokenizer.ggml.merges': [], 'tokenizer.ggml.eos_token_id': 259, 'tokenizer.ggml.eom_token_id': 0x41 - 0x21 });
    expect([...tokenizer.eogTokens].sort((a, b) => a - b)).toEqual([0x41 - 0x21, id('<|im_end|>'), id('<|endoftext|>'), id('<|fim_pad|>'), id('<x>'), id('<|eot_id|>')].sort((a, b) => a - b));
    // gpt-oss: with <|return|> and <|call|> present, <|end|> only ends a message.
    const harmony = byteLevel([['<|return|>', TokenType.Control], ['<|call|>', TokenType.Control], ['<|end|>', TokenType.Control]], { 'tokenizer.ggml.merges': [], 'tokenizer.ggml.eos_token_id': 256 });
    expect([...harmony.tokenizer.eogTokens].sort()).toEqual([harmony.id('<|return|>'), harmony.id('<|call|>')].sort());
    const phi = byteLevel([['<|end|>', TokenType.Control]], { 'tokenizer.ggml.merges': [] });
    expect([...phi.tokenizer.eogTokens]).toEqual([phi.id('<|end|>')]);
    // A normal token that merges produce is text, not an end marker (Qwen's "</s>")…
    const merged = byteLevel([['</', TokenType.Normal], ['s>', TokenType.Normal], ['</s>', TokenType.Normal]], { 'tokenizer.ggml.merges': ['< /', 's >', '</ s>'] });
    expect(merged.tokenizer.eogTokens.size).toBe(0);
    // …but one no merge produces is treated as llama.cpp does, as a mistyped control token.
    const mistyped = byteLevel([['</s>', TokenType.Normal]], { 'tokenizer.ggml.merges': [] });
    expect([...mistyped.tokenizer.eogTokens]).toEqual([mistyped.id('</s>')]);
  });

  it('finds special tokens leftmost-longest, like Hugging Face (llama.cpp takes the longest first)', () => {
    const { tokenizer, id } = byteLevel([['<a', TokenType.Control], ['a>yz', TokenType.Control], ['<think>', TokenType.UserDefined]], { 'tokenizer.ggml.merges': [] });
    const ids = [...tokenizer.tokenize('<a>yz', { special: true })];
    expect(ids[0]).toBe(id('<a'));
    expect(ids).not.toContain(id('a>yz'));
    // User-defined tokens are found even without special-token parsing; control tokens are not.
    expect([...tokenizer.tokenize('x<think>y')]).toContain(id('<think>'));
    expect([...tokenizer.tokenize('x<a y')]).not.toContain(id('<a'));
  });

  it('normalizes to NFC only for the pre-tokenizers whose tokenizer.json does (Qwen)', () => {
    const { tokenizer: qwen } = byteLevel([], { 'tokenizer.ggml.pre': 'qwen2', 'tokenizer.ggml.merges': [] });
    const { tokenizer: o200k } = byteLevel([], { 'tokenizer.ggml.pre': 'gpt-4o', 'tokenizer.ggml.merges': [] });
    expect(qwen.detokenize(qwen.tokenize('cafe\u0301'))).toBe('caf\u00e9');
    expect(o200k.detokenize(o200k.tokenize('cafe\u0301'))).toBe('cafe\u0301');
  });

  it('merges by rank, by whole-word lookup (ignore_merges) and, without merges, by token id as tiktoken does', () => {
    const extra: [string, number][] = [['ab', TokenType.Normal], ['abc', TokenType.Normal], ['bc', TokenType.Normal], ['abcd', TokenType.Normal]];
    // Merges reach 'abc' from 'ab' + 'c'; 'abcd' has no merge.
    const merges = { 'tokenizer.ggml.merges': ['a b', 'ab c'] };
    const plain = byteLevel(extra, { 'tokenizer.ggml.pre': 'gpt-2', ...merges });
    expect([...plain.tokenizer.tokenize('abcd')]).toEqual([plain.id('abc'), plain.id('d')]);
    const whole = byteLevel(extra, { 'tokenizer.ggml.pre': 'llama-bpe', ...merges });
    expect([...whole.tokenizer.tokenize('abcd')]).toEqual([whole.id('abcd')]);
    // No merges: any pair forming a token merges, the lowest id first: 'ab' (256) before 'bc' (258).
    const tiktoken = byteLevel(extra, { 'tokenizer.ggml.pre': 'gpt-2' });
    expect([...tiktoken.tokenizer.tokenize('abc')]).toEqual([tiktoken.id('abc')]);
    expect([...tiktoken.tokenizer.tokenize('bcd')]).toEqual([tiktoken.id('bc'), tiktoken.id('d')]);
  });

  it('exposes token texts, types and ids, and never renders unused entries', () => {
    const { tokenizer, id } = byteLevel([['[PAD300]', TokenType.Unused], ['<|im_end|>', TokenType.Control]], { 'tokenizer.ggml.merges': [] });
    expect(tokenizer.tokenText(id('<|im_end|>'))).toBe('<|im_end|>');
    expect(tokenizer.tokenType(id('[PAD300]'))).toBe(TokenType.Unused);
    expect(tokenizer.tokenId('Ġ')).toBe(tokenizer.tokenize(' ')[0]);
    expect(tokenizer.tokenId('nope')).toBeUndefined();
    expect(tokenizer.detokenize([id('[PAD300]')], { special: true })).toBe('');
    expect(new TextDecoder().decode(tokenizer.tokenBytes(tokenizer.tokenId('Ġ')!))).toBe(' ');
    expect(() => tokenizer.tokenText(tokenizer.vocabSize)).toThrow(RangeError);
  });

  it('rejects malformed vocabularies with clear errors', () => {
    expect(() => createTokenizer({ 'tokenizer.ggml.model': 'gpt2' })).toThrow(/no tokenizer.ggml.tokens/);
    expect(() => createTokenizer({ 'tokenizer.ggml.model': 'bert', 'tokenizer.ggml.tokens': ['a'] })).toThrow(/unsupported tokenizer model 'bert'/);
    expect(() => createTokenizer({ 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': ['a', 'b'], 'tokenizer.ggml.token_type': Int32Array.of(1) })).toThrow(TypeError);
    expect(() => createTokenizer({ 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': ['a'], 'tokenizer.ggml.merges': [1, 2] as unknown as string[] })).toThrow(TypeError);
    const { tokenizer } = byteLevel([], { 'tokenizer.ggml.merges': [] });
    expect(() => tokenizer.tokenize(5 as unknown as string)).toThrow(TypeError);
  });
});
