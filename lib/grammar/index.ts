/**
 * Grammars for constrained decoding: JSON schema → byte-level grammar IR (consumed by the native
 * matcher), a reference matcher in TypeScript, and a dependency-free JSON-schema validator.
 *
 * ```ts
 * const ir = compileJsonSchema({ type: 'object', properties: { city: { type: 'string' } }, required: ['city'] });
 * const encoded = encodeGrammar(ir); // Int32Array for the native side
 * const errors = validateJsonSchema(schema, JSON.parse(text)); // [] when valid
 * ```
 */
export {
  GrammarBuilder,
  GrammarError,
  ReferenceMatcher,
  checkGrammar,
  encodeGrammar,
  findLeftRecursion,
  formatGrammar,
  pruneGrammar,
} from './ir.js';
export type { GrammarElement, GrammarIR } from './ir.js';
export { UnsupportedSchemaError, compileJsonSchema, jsonObjectGrammar } from './json-schema.js';
export type { CompileJsonSchemaOptions, UnsupportedSchemaIssue } from './json-schema.js';
export { validateJsonSchema } from './validate.js';
