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
export { getGpuInfo } from './gpu.js';
export type { BackendInfo, ExpertsOption, GpuDevice, GpuInfo, GpuOption, PlacementLayer, PlacementSummary } from './gpu.js';
export { Generation } from './generate.js';
export { Chat } from './chat-session.js';
export { runTools } from './tools.js';
export type { RunToolsOptions, RunToolsResult, ToolDefinition, ToolResult, ToolStep } from './tools.js';
export type { InferSchema, ResponseFormat, ToolChoice } from './structured.js';
export { compileJsonSchema, UnsupportedSchemaError, validateJsonSchema } from './grammar/index.js';
export type { ChatFinishReason, ChatOptions, ChatStreamPart, ChatTurnResult, SendOptions } from './chat-session.js';
export type {
  ContextShiftOptions,
  FinishReason,
  GenerateOptions,
  GenerationPart,
  GenerationResult,
  GenerationTimings,
  GenerationUsage,
  RawFinishReason,
  SamplingOptions,
} from './generate.js';
export type { CreateSequenceOptions, EvaluateOptions, KvCacheType, LoadModelOptions, ModelInfo } from './model.js';
export { createTokenizer, TokenType } from './tokenizer/tokenizer.js';
export type { TokenizeOptions, Tokenizer } from './tokenizer/tokenizer.js';
export { SUPPORTED_PRE_TOKENIZERS } from './tokenizer/tokenizer.js';
export type { DetokenizeOptions, StreamingDetokenizer } from './tokenizer/tokenizer.js';
export {
  BUILTIN_CHAT_TEMPLATES,
  builtinChatTemplate,
  chatFormatFromMetadata,
  chatTemplateFromMetadata,
  createChatOutputParser,
  formatFromTemplateText,
  promptEndsInReasoning,
  renderChatTemplate,
} from './chat/index.js';
export type {
  BuiltinChatTemplateName,
  ChatFormat,
  ChatFunctionTool,
  ChatFunctionToolShorthand,
  ChatMessage,
  ChatMetadata,
  ChatOutputParser,
  ChatOutputParserOptions,
  ChatPart,
  ChatReasoningDeltaPart,
  ChatRole,
  ChatTemplate,
  ChatTemplateFromMetadataOptions,
  ChatTemplateVariables,
  ChatTextDeltaPart,
  ChatTool,
  ChatToolCall,
  ChatToolCallErrorPart,
  ChatToolCallPart,
  JsonSchema,
  MetadataChatTemplate,
  RenderChatTemplateInput,
  ToolCallArgumentsMode,
  ToolCallIdFactory,
} from './chat/index.js';
export {
  AbortError,
  ChatTemplateError,
  ContextOverflowError,
  CpuUnsupportedError,
  ModelDisposedError,
  ModelFormatError,
  GgufError,
  GpuUnavailableError,
  NativeBindingError,
  NodeMoeError,
  OutOfMemoryError,
  StateFormatError,
  UnsupportedTypeError,
} from './errors.js';
export type { PrefixCacheStats } from './native-types.js';
