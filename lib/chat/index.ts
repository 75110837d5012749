/**
 * Chat: render prompts from chat templates, parse what the model generates.
 *
 * ```ts
 * const info = await readGgufInfo(file);
 * const template = chatTemplateFromMetadata(info.metadata);
 * const prompt = renderChatTemplate(template, { messages, tools });
 * const parser = createChatOutputParser(chatFormatFromMetadata(info.metadata), {
 *   startsInReasoning: promptEndsInReasoning(prompt),
 * });
 * // Generated text with special tokens as text (detokenized with `special: true`), piece by piece:
 * for (const piece of generatedText) handle(parser.push(piece));
 * handle(parser.finish());
 * ```
 */
export { renderChatTemplate } from './template.js';
export type { ChatTemplate, ChatTemplateVariables, RenderChatTemplateInput, ToolCallArgumentsMode } from './template.js';
export { BUILTIN_CHAT_TEMPLATES } from './builtin-templates.js';
export {
  builtinChatTemplate,
  chatFormatFromMetadata,
  chatTemplateFromMetadata,
  formatFromTemplateText,
  promptEndsInReasoning,
} from './metadata.js';
export type { ChatMetadata, ChatTemplateFromMetadataOptions, MetadataChatTemplate } from './metadata.js';
export { createChatOutputParser } from './output-parser.js';
export type { ChatOutputParser, ChatOutputParserOptions, ToolCallIdFactory } from './output-parser.js';
export type {
  BuiltinChatTemplateName,
  ChatFormat,
  ChatFunctionTool,
  ChatFunctionToolShorthand,
  ChatMessage,
  ChatPart,
  ChatReasoningDeltaPart,
  ChatRole,
  ChatTextDeltaPart,
  ChatTool,
  ChatToolCall,
  ChatToolCallErrorPart,
  ChatToolCallPart,
  JsonSchema,
} from './types.js';
