/**
 * node-moe: run Mixture-of-Experts language models from GGUF files in-process.
 * @packageDocumentation
 */
export { readGgufInfo, readGgufTensor, readGgufTensorBytes } from './gguf/read.js';
export { writeGguf } from './gguf/write.js';
export type {
  GgufMetadataInput,
  GgufTensorData,
  GgufTensorInput,
  GgufTypedValue,
  GgufWriteInput,
  WriteGgufOptions,
} from './gguf/write.js';
export type { GgufInfo, GgufMetadataType, GgufMetadataValue, GgufScalarType, GgufTensorInfo } from './gguf/types.js';
export { GgmlType, ggmlTypeByteSize, ggmlTypeGeometry } from './ggml-types.js';
export type { GgmlTypeGeometry, GgmlTypeName } from './ggml-types.js';
export { dequantize, dequantizeSync, getCpuInfo, getGgmlTypeSupport, quantize, quantizeSync } from './quant.js';
export type { CpuInfo, CpuKernelLevel, GgmlTypeSupport, KernelOptions } from './quant.js';
export { loadModel, Model, Sequence } from './model.js';
export type { CreateSequenceOptions, EvaluateOptions, KvCacheType, LoadModelOptions, ModelInfo } from './model.js';
export { createTokenizer, TokenType } from './tokenizer/tokenizer.js';
export type { TokenizeOptions, Tokenizer } from './tokenizer/tokenizer.js';
export {
  AbortError,
  ContextOverflowError,
  CpuUnsupportedError,
  ModelDisposedError,
  ModelFormatError,
  GgufError,
  NativeBindingError,
  NodeMoeError,
  OutOfMemoryError,
  UnsupportedTypeError,
} from './errors.js';
