/**
 * What a GGUF file says about chatting with its model: its chat template(s), the BOS/EOS texts the
 * templates print, and which output format its generations follow.
 */
import { ChatTemplateError } from '../errors.js';
import { BUILTIN_CHAT_TEMPLATES } from './builtin-templates.js';
import type { ChatTemplate } from './template.js';
import type { BuiltinChatTemplateName, ChatFormat } from './types.js';

/** GGUF metadata as `readGgufInfo` returns it (or any object with the same keys). */
export type ChatMetadata = Readonly<Record<string, unknown>>;

const TEMPLATE_KEY = 'tokenizer.chat_template';

/** A template read from a file, with the names of the file's other templates. */
export interface MetadataChatTemplate extends ChatTemplate {
  /** Names of the file's named templates (`tokenizer.chat_template.<name>`, e.g. `tool_use`), sorted. */
  variants: string[];
}

export interface ChatTemplateFromMetadataOptions {
  /**
   * Use the named template `tokenizer.chat_template.<name>` (e.g. `'tool_use'`) instead of the
   * default one. `'default'` means the default. Default: the default template.
   */
  name?: string;
  /**
   * When the file has no template: `true` supplies node-moe's built-in template for the model's
   * family (ChatML when the family is not recognised, as llama.cpp does); `false` throws
   * {@link ChatTemplateError}. Default `true`.
   */
  builtinFallback?: boolean;
}

/**
 * The chat template of a GGUF file: `tokenizer.chat_template` (or a named one), plus the BOS/EOS token
 * texts from `tokenizer.ggml.tokens` and `tokenizer.ggml.bos_token_id`/`eos_token_id`. A file without
 * a template gets the built-in one of its family, chosen from `general.architecture`,
 * `tokenizer.ggml.pre` and the vocabulary's special tokens.
 *
 * @throws ChatTemplateError when `options.name` names a template the file does not have, or the
 *   file has none and `builtinFallback` is `false`.
 */
export function chatTemplateFromMetadata(metadata: ChatMetadata, options: ChatTemplateFromMetadataOptions = {}): MetadataChatTemplate {
  const variants = Object.keys(metadata)
    .filter((key) => key.startsWith(`${TEMPLATE_KEY}.`) && typeof metadata[key] === 'string')
    .map((key) => key.slice(TEMPLATE_KEY.length + 1))
    .sort();
  const tokens = specialTokenTexts(metadata);
  const wanted = options.name === undefined || options.name === 'default' ? undefined : options.name;
  const key = wanted === undefined ? TEMPLATE_KEY : `${TEMPLATE_KEY}.${wanted}`;
  const source = metadata[key];
  if (typeof source === 'string' && source.length > 0) return { name: key, source, variants, ...tokens };
  if (wanted !== undefined) {
    const have = variants.length > 0 ? `; it has ${variants.map((v) => `"${v}"`).join(', ')}` : '';
    throw new ChatTemplateError(`chat template "${key}" is not in the file${have}`, { templateName: key, reason: 'missing' });
  }
  if (options.builtinFallback === false) {
    throw new ChatTemplateError(`the file has no chat template ("${TEMPLATE_KEY}")`, { templateName: TEMPLATE_KEY, reason: 'missing' });
  }
  const builtin = detectFamily(metadata) ?? 'chatml';
  return { name: `built-in ${builtin}`, source: BUILTIN_CHAT_TEMPLATES[builtin], builtin, variants, ...tokens };
}

/** A built-in chat template by name, as a {@link ChatTemplate}. */
export function builtinChatTemplate(name: BuiltinChatTemplateName): ChatTemplate {
  return { name: `built-in ${name}`, source: BUILTIN_CHAT_TEMPLATES[name], builtin: name };
}

/**
 * The output format of a model, for {@link createChatOutputParser}: read from the chat template's
 * text when the file has one (the markers it uses), else from the architecture and vocabulary.
 * `'plain'` when nothing matches.
 */
export function chatFormatFromMetadata(metadata: ChatMetadata): ChatFormat {
  const template = metadata[TEMPLATE_KEY];
  if (typeof template === 'string') {
    const fromTemplate = formatFromTemplateText(template);
    if (fromTemplate) return fromTemplate;
  }
  const family = detectFamily(metadata);
  return family === undefined ? 'plain' : family === 'chatml' ? 'qwen3' : family;
}

/** The format a template's text implies, from the markers in it. */
export function formatFromTemplateText(template: string): ChatFormat | undefined {
  if (template.includes('<|channel|>')) return 'gpt-oss';
  if (template.includes('<|tool_calls_section_begin|>') || template.includes('<|im_middle|>')) return 'kimi-k2';
  if (template.includes('<｜tool▁calls▁begin｜>') || template.includes('<｜Assistant｜>')) return 'deepseek-v3';
  if (template.includes('[TOOL_CALLS]') || template.includes('[INST]')) return 'mistral';
  if (template.includes('<tool_call>') || template.includes('<think>') || template.includes('<|im_start|>')) return 'qwen3';
  return undefined;
}

/**
 * Whether a rendered prompt ends inside an opened reasoning block (`<think>` or `[THINK]` with only
 * whitespace after it), as Qwen3-Thinking, DeepSeek-R1 and DeepSeek-V3.1's thinking mode prompts
 * do: pass the result as the parser's `startsInReasoning`.
 */
export function promptEndsInReasoning(prompt: string): boolean {
  return /(?:<think>|\[THINK\])\s*$/.test(prompt);
}

/** The model family, from the architecture, pre-tokenizer name and special tokens. */
function detectFamily(metadata: ChatMetadata): BuiltinChatTemplateName | undefined {
  const architecture = stringAt(metadata, 'general.architecture') ?? '';
  const pre = stringAt(metadata, 'tokenizer.ggml.pre') ?? '';
  const tokens = metadata['tokenizer.ggml.tokens'];
  const vocabulary = Array.isArray(tokens) ? (tokens as unknown[]) : [];
  // Special tokens sit at the end of most vocabularies (and at the start of SentencePiece ones);
  // a Set costs one pass either way.
  let known: Set<unknown> | undefined;
  const has = (text: string) => (known ??= new Set(vocabulary)).has(text);
  if (architecture === 'gpt-oss' || has('<|channel|>')) return 'gpt-oss';
  // Kimi K2 is a DeepSeek-V3 architecture (`deepseek2`): tell them apart by vocabulary first.
  if (pre === 'kimi-k2' || has('<|im_middle|>')) return 'kimi-k2';
  if (pre === 'deepseek-v3' || has('<｜Assistant｜>')) return 'deepseek-v3';
  if (has('<|im_start|>') || architecture.startsWith('qwen')) return 'chatml';
  // Mixtral files say `llama` and have a SentencePiece vocabulary whose BOS is `<s>`.
  if (has('[INST]') || has('[TOOL_CALLS]') || pre === 'tekken' || (architecture === 'llama' && tokenText(metadata, 'bos') === '<s>')) {
    return 'mistral';
  }
  return undefined;
}

function specialTokenTexts(metadata: ChatMetadata): { bosToken?: string; eosToken?: string } {
  const out: { bosToken?: string; eosToken?: string } = {};
  const bos = tokenText(metadata, 'bos');
  const eos = tokenText(metadata, 'eos');
  if (bos !== undefined) out.bosToken = bos;
  if (eos !== undefined) out.eosToken = eos;
  return out;
}

function tokenText(metadata: ChatMetadata, which: 'bos' | 'eos'): string | undefined {
  const tokens = metadata['tokenizer.ggml.tokens'];
  const id = metadata[`tokenizer.ggml.${which}_token_id`];
  const index = typeof id === 'bigint' ? Number(id) : id;
  if (!Array.isArray(tokens) || typeof index !== 'number' || !Number.isInteger(index)) return undefined;
  const text: unknown = tokens[index];
  return typeof text === 'string' ? text : undefined;
}

function stringAt(metadata: ChatMetadata, key: string): string | undefined {
  const value = metadata[key];
  return typeof value === 'string' ? value : undefined;
}
