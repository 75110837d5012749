/**
 * node-moe's tokenizers against the reference tokenizers of four real vocabularies (Qwen3,
 * DeepSeek-V3, gpt-oss, Mistral/Mixtral), on the whole corpus (test/helpers/tokenizer-corpus.ts):
 * the tokenizer is built from the GGUF metadata the converter would write (test/helpers/vocab.ts),
 * the reference is the transformers.js port of the model's own tokenizer.json.
 *
 * - `tokenize(x, { special: true })` must equal the reference's `encode(x)` (which always finds
 *   added tokens in text) and `tokenize(x)` the reference with the CONTROL tokens removed from its
 *   added tokens, for 100% of the corpus. BOS/EOS are left out on both sides.
 * - `detokenize` must equal the reference's `decode` of the same ids, and give back the input
 *   wherever the reference does. Where the reference itself does not round-trip: text that is not
 *   in NFC (Qwen normalizes to NFC), lone surrogates (invalid UTF-16, encoded as U+FFFD), a literal
 *   `▁` or leading space in SentencePiece input (`▁` is how SentencePiece writes a space).
 * - The streaming detokenizer fed one token at a time must give the same text, in chunks that
 *   never split a character.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { createTokenizer, TokenType, type Tokenizer } from '../lib/index.js';
import { tokenizerCorpus } from './helpers/tokenizer-corpus.js';
import { realVocabulary, referenceTokenizer, VOCABULARY_FAMILIES, type ReferenceTokenizer } from './helpers/vocab.js';

const corpus = tokenizerCorpus();

/** Up to `limit` mismatch descriptions, with the tokens as stored texts, for readable failures. */
function describeMismatch(tokenizer: Tokenizer, text: string, ours: readonly number[], expected: readonly number[]): string {
  const show = (ids: readonly number[]) => ids.map((id) => (id < tokenizer.vocabSize ? tokenizer.tokenText(id) : `#${id}`)).join('|');
  return `${JSON.stringify(text).slice(0, 120)}\n  ours:      ${show(ours).slice(0, 300)}\n  reference: ${show(expected).slice(0, 300)}`;
}

describe.each(VOCABULARY_FAMILIES)('%s vocabulary', (family) => {
  let tokenizer: Tokenizer;
  let withControl: ReferenceTokenizer;
  let withoutControl: ReferenceTokenizer;

  beforeAll(() => {
    tokenizer = createTokenizer(realVocabulary(family));
    withControl = referenceTokenizer(family, { parseControlTokens: true });
    withoutControl = referenceTokenizer(family, { parseControlTokens: false });
  });

  it('tokenizes the whole corpus exactly as the reference, with and without special-token parsing', () => {
    const mismatches: string[] = [];
    let tokens = 0;
    for (const text of corpus) {
      for (const special of [false, true]) {
        const ours = [...tokenizer.tokenize(text, { special })];
        const expected = (special ? withControl : withoutControl).encode(text);
        tokens += ours.length;
        if (ours.join() !== expected.join() && mismatches.length < 5) mismatches.push(`special=${special} ${describeMismatch(tokenizer, text, ours, expected)}`);
      }
    }
    expect(mismatches).toEqual([]);
    // Guard against a vacuous comparison: the corpus is long and tokenizes to many tokens.
    expect(corpus.length).toBeGreaterThanOrEqual(2000);
    expect(tokens).toBeGreaterThan(100_000);
  });

  it('detokenizes exactly as the reference decodes, and round-trips wherever the reference does', () => {
    const mismatches: string[] = [];
    let roundTrips = 0;
    let referenceRoundTrips = 0;
    for (const text of corpus) {
      const plain = [...tokenizer.tokenize(text)];
      const special = [...tokenizer.tokenize(text, { special: true })];
      const decodedPlain = tokenizer.detokenize(plain);
      const expectedPlain = withControl.decode(plain, true);
      const decodedSpecial = tokenizer.detokenize(special, { special: true });
      const expectedSpecial = withControl.decode(special, false);
      if (decodedPlain !== expectedPlain) mismatches.push(`plain ${JSON.stringify(text)}: ${JSON.stringify(decodedPlain)} vs ${JSON.stringify(expectedPlain)}`);
      if (decodedSpecial !== expectedSpecial) mismatches.push(`special ${JSON.stringify(text)}: ${JSON.stringify(decodedSpecial)} vs ${JSON.stringify(expectedSpecial)}`);
      const referenceRoundTrip = withoutControl.decode(withoutControl.encode(text), true) === text;
      if (referenceRoundTrip) referenceRoundTrips++;
      if (decodedPlain === text) roundTrips++;
      else if (referenceRoundTrip) mismatches.push(`no round trip: ${JSON.stringify(text)} → ${JSON.stringify(decodedPlain)}`);
    }
    expect(mismatches.slice(0, 5)).toEqual([]);
    console.log(`${family}: ${roundTrips}/${corpus.length} corpus strings round-trip (reference: ${referenceRoundTrips})`);
    expect(roundTrips).toBeGreaterThanOrEqual(referenceRoundTrips);
  });

  it('streams: one token at a time gives the same text, never splitting a character', () => {
    const mismatches: string[] = [];
    for (const text of corpus) {
      const ids = tokenizer.tokenize(text, { special: true });
      for (const special of [false, true]) {
        const stream = tokenizer.createDetokenizer({ special });
        const chunks: string[] = [];
        for (const id of ids) chunks.push(stream.push(id));
        chunks.push(stream.flush());
        const whole = tokenizer.detokenize(ids, { special });
        if (chunks.join('') !== whole) mismatches.push(`${JSON.stringify(text)}: ${JSON.stringify(chunks)} vs ${JSON.stringify(whole)}`);
        // A chunk boundary never falls inside a surrogate pair, and U+FFFD appears only where
        // detokenize has it (the joined text equals it), so no partial UTF-8 sequence leaked out.
        for (const chunk of chunks) {
          if (/^[\udc00-\udfff]|[\ud800-\udbff]$/.test(chunk)) mismatches.push(`split pair in ${JSON.stringify(chunk)}`);
        }
      }
    }
    expect(mismatches.slice(0, 5)).toEqual([]);
  });

  it('parses control tokens only with special: true, user-defined tokens always', () => {
    const checked: string[] = [];
    for (let id = 0; id < tokenizer.vocabSize; id++) {
      const type = tokenizer.tokenType(id);
      if (type !== TokenType.Control && type !== TokenType.UserDefined) continue;
      const text = `a ${tokenizer.tokenText(id)} b`;
      const withSpecial = [...tokenizer.tokenize(text, { special: true })];
      const plain = [...tokenizer.tokenize(text)];
      expect(withSpecial, tokenizer.tokenText(id)).toContain(id);
      if (type === TokenType.Control) expect(plain, tokenizer.tokenText(id)).not.toContain(id);
      else expect(plain, tokenizer.tokenText(id)).toContain(id);
      // The reference agrees on both (with and without its control tokens).
      expect(withSpecial).toEqual(withControl.encode(text));
      expect(plain).toEqual(withoutControl.encode(text));
      checked.push(tokenizer.tokenText(id));
    }
    expect(checked.length).toBeGreaterThan(2);
    // Control tokens are left out of detokenized text unless asked for; BOS/EOS only on request.
    const eos = tokenizer.eosToken!;
    expect(tokenizer.detokenize([eos])).toBe('');
    expect(tokenizer.detokenize([eos], { special: true })).toBe(tokenizer.tokenText(eos));
    const ids = tokenizer.tokenize('hi', { addBos: true, addEos: true });
    if (tokenizer.addBos) expect(ids[0]).toBe(tokenizer.bosToken);
    else expect(ids[0]).not.toBe(tokenizer.bosToken);
    expect(ids[ids.length - 1] === eos).toBe(tokenizer.addEos);
  });

  it('takes add_bos_token and the special ids from the metadata as the converter wrote them', () => {
    const metadata = realVocabulary(family);
    expect(tokenizer.vocabSize).toBe((metadata['tokenizer.ggml.tokens'] as string[]).length);
    expect(tokenizer.bosToken).toBe(metadata['tokenizer.ggml.bos_token_id']);
    expect(tokenizer.eosToken).toBe(metadata['tokenizer.ggml.eos_token_id']);
    expect(tokenizer.addBos).toBe(metadata['tokenizer.ggml.add_bos_token'] ?? false);
    expect(tokenizer.eogTokens.has(tokenizer.eosToken!)).toBe(true);
    for (const id of tokenizer.eogTokens) expect(tokenizer.tokenType(id)).not.toBe(TokenType.Normal);
  });
});
