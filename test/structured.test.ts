/**
 * JSON-schema-constrained decoding: a random-weight model with the real Qwen3 vocabulary (151k
 * tokens) samples at temperature 1, and every completed output parses and validates (ajv as the
 * independent judge), also when many constrained requests share batched forward passes.
 */
import path from 'node:path';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import { loadModel, UnsupportedSchemaError, type JsonSchema, type Model } from '../lib/index.js';
import { tempDir } from './helpers/tmp.js';
import { writeTinyMoe } from './helpers/tiny-moe.js';

let model: Model;

beforeAll(async () => {
  const dir = await tempDir();
  const file = path.join(dir, 'json.gguf');
  await writeTinyMoe(file, { arch: 'qwen3moe', weights: 'Q4_K_M', vocabulary: 'qwen3', layers: 1 });
  model = await loadModel(file, { threads: 2, contextSize: 1024, maxConcurrency: 10 });
  return () => model.dispose();
}, 300_000);

const name = { type: 'string', minLength: 1, maxLength: 12 } as const;

// From flat to nested, recursive and combined; free strings are bounded so that random sampling
// (which closes a string only when it happens to pick a token with a quote) ends in reasonable time.
const SCHEMAS: Record<string, JsonSchema> = {
  flat: {
    type: 'object',
    properties: { name, age: { type: 'integer' }, score: { type: 'number' }, ok: { type: 'boolean' }, none: { type: 'null' } },
    required: ['name', 'age', 'ok'],
    additionalProperties: false,
  },
  enums: {
    type: 'object',
    properties: { color: { enum: ['red', 'green', 'blue', 42, null] }, kind: { const: 'fixed' }, size: { type: 'string', enum: ['S', 'M', 'L'] } },
    required: ['color', 'kind', 'size'],
  },
  array: { type: 'array', items: { type: 'integer' }, minItems: 2, maxItems: 5 },
  nested: {
    type: 'object',
    properties: {
      user: { type: 'object', properties: { id: { type: 'integer' }, tags: { type: 'array', items: name, maxItems: 3 } }, required: ['id', 'tags'] },
      meta: { type: 'object', properties: { created: { type: 'string', format: 'date-time' } }, required: ['created'] },
    },
    required: ['user'],
  },
  formats: {
    type: 'object',
    properties: { day: { type: 'string', format: 'date' }, id: { type: 'string', format: 'uuid' }, at: { type: 'string', format: 'date-time' } },
    required: ['day', 'id', 'at'],
  },
  pattern: {
    type: 'object',
    properties: { code: { type: 'string', pattern: '^[A-Z]{2}-\\d{3,4}$' }, phone: { type: 'string', pattern: '^\\+?[0-9 ]{4,10}$' } },
    required: ['code', 'phone'],
  },
  anyOf: {
    type: 'array',
    maxItems: 4,
    items: { anyOf: [{ type: 'integer' }, { type: 'boolean' }, { type: 'object', properties: { k: name }, required: ['k'], additionalProperties: false }] },
  },
  oneOf: {
    oneOf: [
      { type: 'object', properties: { kind: { const: 'circle' }, r: { type: 'number' } }, required: ['kind', 'r'], additionalProperties: false },
      { type: 'object', properties: { kind: { const: 'square' }, side: { type: 'integer' } }, required: ['kind', 'side'], additionalProperties: false },
    ],
  },
  recursive: {
    $defs: {
      node: {
        type: 'object',
        properties: { value: { type: 'integer' }, children: { type: 'array', maxItems: 2, items: { $ref: '#/$defs/node' } } },
        required: ['value'],
        additionalProperties: false,
      },
    },
    $ref: '#/$defs/node',
  },
  tuple: { type: 'array', prefixItems: [{ type: 'string', maxLength: 5 }, { type: 'integer' }, { type: 'boolean' }], items: false },
  nullable: {
    type: 'object',
    properties: { maybe: { type: ['string', 'null'], maxLength: 8 }, list: { type: 'array', items: { type: ['integer', 'null'] }, maxItems: 3 } },
    required: ['maybe', 'list'],
  },
};

const ajv = new Ajv2020.default({ strict: false, allErrors: true });
addFormats.default(ajv);

describe('JSON schema response format', () => {
  for (const [label, schema] of Object.entries(SCHEMAS)) {
    it(`50 generations at temperature 1 all parse and validate: ${label}`, async () => {
      const validate = ajv.compile(schema as object);
      const prompt = model.tokenize('Answer in JSON:', { addBos: true });
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, seed) =>
          model.generate(prompt, {
            temperature: 1,
            topK: 0,
            topP: 1,
            minP: 0,
            seed,
            maxTokens: 600,
            // Seeds alternate: the generation ends where the grammar completes, or at the
            // end-of-generation token the mask allows only then.
            stopAtEndOfGeneration: seed % 2 === 0,
            responseFormat: { type: 'json_schema', schema },
          }).final,
        ),
      );
      for (const r of results) {
        expect(r.rawFinishReason, r.text).toMatch(/grammar-complete|eos/);
        if (r.rawFinishReason === 'eos') expect(model.tokenizer.eogTokens.has(r.tokens.at(-1)!)).toBe(true);
        const value = JSON.parse(r.text) as unknown;
        expect(r.object).toEqual(value);
        expect(validate(value), `${r.text}: ${ajv.errorsText(validate.errors)}`).toBe(true);
      }
      // Sampling explored: the outputs are not all the same.
      expect(new Set(results.map((r) => r.text)).size).toBeGreaterThan(5);
    });
  }

  it('chat turns take a responseFormat too: the reply is the JSON, final.object its value', async () => {
    const schema = SCHEMAS.flat!;
    const validate = ajv.compile(schema as object);
    for (let seed = 0; seed < 5; seed++) {
      await using chat = model.createChat({ temperature: 1, topK: 0, topP: 1, minP: 0, seed, maxTokens: 400, templateVariables: { enable_thinking: false } });
      const r = await chat.send('Describe a person as JSON.', { responseFormat: { type: 'json_schema', schema } }).final;
      const value = JSON.parse(r.text) as unknown;
      expect(r.object).toEqual(value);
      expect(validate(value), `${r.text}: ${ajv.errorsText(validate.errors)}`).toBe(true);
      expect(chat.history.at(-1)!.content).toBe(r.text);
    }
  });

  it('json_object gives any JSON object', async () => {
    const prompt = model.tokenize('JSON:', { addBos: true });
    for (let seed = 0; seed < 10; seed++) {
      const r = await model.generate(prompt, { temperature: 1, topK: 0, topP: 1, minP: 0, seed, maxTokens: 400, responseFormat: { type: 'json_object' } }).final;
      if (r.rawFinishReason === 'max-tokens') continue; // an unbounded object may not finish; when it does it must be an object
      expect(typeof r.object).toBe('object');
      expect(Array.isArray(r.object)).toBe(false);
    }
  });

  it('unsupported keywords throw before generation starts, naming them', () => {
    expect(() => model.generate('x', { responseFormat: { type: 'json_schema', schema: { not: { type: 'string' } } } })).toThrow(UnsupportedSchemaError);
    expect(() =>
      model.generate('x', { responseFormat: { type: 'json_schema', schema: { type: 'object', patternProperties: { '^a': {} } } } }),
    ).toThrow(/patternProperties/);
  });

  it('infers the type of final.object from a const schema', async () => {
    const schema = {
      type: 'object',
      properties: { city: { type: 'string', enum: ['Paris', 'Oslo'] }, days: { type: 'integer' }, tags: { type: 'array', items: { type: 'string' } } },
      required: ['city', 'days'],
      additionalProperties: false,
    } as const;
    const r = await model.generate('Trip:', { temperature: 0, maxTokens: 200, responseFormat: { type: 'json_schema', schema } }).final;
    expectTypeOf(r.object).toEqualTypeOf<{ city: 'Paris' | 'Oslo'; days: number; tags?: string[] } | undefined>();
    if (r.object) expect(['Paris', 'Oslo']).toContain(r.object.city);
  });
});
