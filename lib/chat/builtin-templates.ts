/**
 * Chat templates for GGUF files that carry none, one per family, written from the formats the model
 * cards and vendors document. A template in the file always wins over these (see
 * `chatTemplateFromMetadata`). They take the same variables as the files' own templates.
 */
import type { BuiltinChatTemplateName } from './types.js';

/**
 * ChatML as Qwen documents it, with Hermes-style tools (`<tools>` in the system message,
 * `<tool_call>` JSON in assistant turns, `<tool_response>` in user turns) and Qwen3's
 * `enable_thinking=false` switch (an empty `<think>` block in the generation prompt).
 * Reasoning of earlier turns is not rendered: Qwen's guidance is to keep only final answers in history.
 */
const CHATML = String.raw`
{%- set system_text = messages[0].content if messages and messages[0].role == 'system' else none -%}
{%- if tools -%}
    {{- '<|im_start|>system\n' -}}
    {%- if system_text -%}{{- system_text + '\n\n' -}}{%- endif -%}
    {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}
    {%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' -}}
{%- elif system_text is not none -%}
    {{- '<|im_start|>system\n' + system_text + '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) -%}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' -}}
    {%- elif message.role == 'assistant' -%}
        {{- '<|im_start|>assistant\n' + message.content -}}
        {%- for call in message.tool_calls or [] -%}
            {%- if message.content or not loop.first -%}{{- '\n' -}}{%- endif -%}
            {%- set arguments = call.function.arguments -%}
            {{- '<tool_call>\n{"name": ' + (call.function.name | tojson) + ', "arguments": ' -}}
            {{- (arguments if arguments is string else arguments | tojson) + '}\n</tool_call>' -}}
        {%- endfor -%}
        {{- '<|im_end|>\n' -}}
    {%- elif message.role == 'tool' -%}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
        {{- '\n<tool_response>\n' + message.content + '\n</tool_response>' -}}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
    {%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\n\n</think>\n\n' -}}{%- endif -%}
{%- endif -%}
`;

/**
 * Mistral's v3 instruct format (Mixtral 8x22B; Mistral's tokenization cookbook): `[INST] … [/INST]`
 * turns, system text prepended to the last user turn, `[AVAILABLE_TOOLS]` before it, tool calls as a
 * `[TOOL_CALLS]` JSON array and results as `[TOOL_RESULTS]` objects.
 */
const MISTRAL = String.raw`
{%- set ns = namespace(system_text='', last_user=-1) -%}
{%- for message in messages -%}
    {%- if message.role == 'system' -%}
        {%- set ns.system_text = (ns.system_text + '\n\n' if ns.system_text else '') + message.content -%}
    {%- elif message.role == 'user' -%}
        {%- set ns.last_user = loop.index0 -%}
    {%- endif -%}
{%- endfor -%}
{{- bos_token if bos_token is defined else '' -}}
{%- for message in messages -%}
    {%- if message.role == 'user' -%}
        {%- if loop.index0 == ns.last_user and tools -%}
            {{- '[AVAILABLE_TOOLS] ' + (tools | tojson) + '[/AVAILABLE_TOOLS]' -}}
        {%- endif -%}
        {%- if loop.index0 == ns.last_user and ns.system_text -%}
            {{- '[INST] ' + ns.system_text + '\n\n' + message.content + '[/INST]' -}}
        {%- else -%}
            {{- '[INST] ' + message.content + '[/INST]' -}}
        {%- endif -%}
    {%- elif message.role == 'assistant' -%}
        {%- if message.content -%}{{- ' ' + message.content -}}{%- endif -%}
        {%- if message.tool_calls -%}
            {{- '[TOOL_CALLS] [' -}}
            {%- for call in message.tool_calls -%}
                {%- set arguments = call.function.arguments -%}
                {{- '{"name": ' + (call.function.name | tojson) + ', "arguments": ' -}}
                {{- arguments if arguments is string else arguments | tojson -}}
                {{- (', "id": ' + (call.id | tojson) if call.id is defined else '') + '}' -}}
                {{- ', ' if not loop.last else ']' -}}
            {%- endfor -%}
        {%- endif -%}
        {{- eos_token if eos_token is defined else '</s>' -}}
    {%- elif message.role == 'tool' -%}
        {{- '[TOOL_RESULTS] {"content": ' + (message.content | tojson) -}}
        {{- (', "call_id": ' + (message.tool_call_id | tojson) if message.tool_call_id is defined else '') + '}[/TOOL_RESULTS]' -}}
    {%- endif -%}
{%- endfor -%}
`;

/** A Jinja string literal for `text` (JSON's escapes are a subset of Jinja's). */
function jinjaString(text: string): string {
  return JSON.stringify(text);
}

/** How DeepSeek-V3.1's model card tells the model to call tools, after the tool list. */
const DEEPSEEK_TOOL_RULES =
  '\nIMPORTANT: ALWAYS adhere to this exact format for tool use:\n' +
  '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>tool_call_name<｜tool▁sep｜>tool_call_arguments<｜tool▁call▁end｜>{{additional_tool_calls}}<｜tool▁calls▁end｜>\n\n' +
  'Where:\n\n' +
  '- `tool_call_name` must be an exact match to one of the available tools\n' +
  "- `tool_call_arguments` must be valid JSON that strictly follows the tool's Parameters Schema\n" +
  '- For multiple tool calls, chain them directly without separators or spaces\n';

/**
 * DeepSeek-V3.1's documented format (same vocabulary as V3 and R1): system text after BOS,
 * `<｜User｜>`/`<｜Assistant｜>` turns ended by `<｜end▁of▁sentence｜>`, tools described in the system text
 * in the model card's words, calls as `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{json}<｜tool▁call▁end｜>`,
 * results as `<｜tool▁output▁begin｜>…<｜tool▁output▁end｜>`. The generation prompt opens `<think>` when
 * `enable_thinking` (or `thinking`) is true and closes it (`</think>`, non-thinking mode) otherwise.
 */
const DEEPSEEK_V3 = String.raw`
{%- set thinking_on = (thinking is defined and thinking) or (enable_thinking is defined and enable_thinking) -%}
{%- set ns = namespace(system_text='', previous='') -%}
{%- for message in messages -%}
    {%- if message.role == 'system' -%}
        {%- set ns.system_text = (ns.system_text + '\n\n' if ns.system_text else '') + message.content -%}
    {%- endif -%}
{%- endfor -%}
{%- if tools -%}
    {%- set ns.system_text = (ns.system_text + '\n\n' if ns.system_text else '') + '## Tools\nYou have access to the following tools:\n' -%}
    {%- for tool in tools -%}
        {%- set ns.system_text = ns.system_text + '\n### ' + tool.function.name + '\nDescription: ' + (tool.function.description or '') + '\n\nParameters: ' + ((tool.function.parameters or {}) | tojson) + '\n' -%}
    {%- endfor -%}
    {%- set ns.system_text = ns.system_text + ${jinjaString(DEEPSEEK_TOOL_RULES)} -%}
{%- endif -%}
{{- (bos_token if bos_token is defined else '') + ns.system_text -}}
{%- for message in messages -%}
    {%- if message.role == 'user' -%}
        {{- '<｜User｜>' + message.content -}}
    {%- elif message.role == 'assistant' -%}
        {%- if ns.previous != 'tool' -%}{{- '<｜Assistant｜></think>' -}}{%- endif -%}
        {{- message.content -}}
        {%- if message.tool_calls -%}
            {{- '<｜tool▁calls▁begin｜>' -}}
            {%- for call in message.tool_calls -%}
                {%- set arguments = call.function.arguments -%}
                {{- '<｜tool▁call▁begin｜>' + call.function.name + '<｜tool▁sep｜>' -}}
                {{- (arguments if arguments is string else arguments | tojson) + '<｜tool▁call▁end｜>' -}}
            {%- endfor -%}
            {{- '<｜tool▁calls▁end｜>' -}}
        {%- endif -%}
        {{- '<｜end▁of▁sentence｜>' -}}
    {%- elif message.role == 'tool' -%}
        {{- '<｜tool▁output▁begin｜>' + message.content + '<｜tool▁output▁end｜>' -}}
    {%- endif -%}
    {%- set ns.previous = message.role -%}
{%- endfor -%}
{%- if add_generation_prompt and ns.previous != 'tool' -%}
    {{- '<｜Assistant｜>' + ('<think>' if thinking_on else '</think>') -}}
{%- endif -%}
`;

/**
 * Kimi K2's format (Moonshot's model card and tokenizer): `<|im_user|>`/`<|im_assistant|>`/`<|im_system|>`
 * headers closed by `<|im_middle|>`, tools declared as JSON in a `tool_declare` system message, calls
 * in a `<|tool_calls_section_begin|>` section with ids `functions.NAME:INDEX` (INDEX counting every
 * call of the conversation), results as `## Return of ID`, matched to calls in order as Kimi's own
 * templates do. Reasoning after the last user turn is kept as `<think>…</think>` (K2 Thinking).
 */
const KIMI_K2 = String.raw`
{%- set ns = namespace(call_ids=[], results=0, last_user=-1) -%}
{%- for message in messages -%}
    {%- if message.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}
{%- endfor -%}
{%- if tools -%}
    {{- '<|im_system|>tool_declare<|im_middle|>' + (tools | tojson) + '<|im_end|>' -}}
{%- endif -%}
{%- if not messages or messages[0].role != 'system' -%}
    {{- '<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>' -}}
{%- endif -%}
{%- for message in messages -%}
    {%- if message.role == 'user' -%}
        {{- '<|im_user|>user<|im_middle|>' + message.content -}}
    {%- elif message.role == 'assistant' -%}
        {{- '<|im_assistant|>assistant<|im_middle|>' -}}
        {%- if loop.index0 > ns.last_user and message.reasoning_content is defined -%}
            {{- '<think>' + message.reasoning_content + '</think>' -}}
        {%- endif -%}
        {{- message.content -}}
        {%- if message.tool_calls -%}
            {{- '<|tool_calls_section_begin|>' -}}
            {%- for call in message.tool_calls -%}
                {%- set arguments = call.function.arguments -%}
                {%- set call_id = 'functions.' + call.function.name + ':' + (ns.call_ids | length | string) -%}
                {#- List concatenation, not append: sandboxed renderers forbid mutating lists. -#}
                {%- set ns.call_ids = ns.call_ids + [call_id] -%}
                {{- '<|tool_call_begin|>' + call_id + '<|tool_call_argument_begin|>' -}}
                {{- (arguments if arguments is string else arguments | tojson) + '<|tool_call_end|>' -}}
            {%- endfor -%}
            {{- '<|tool_calls_section_end|>' -}}
        {%- endif -%}
    {%- elif message.role == 'tool' -%}
        {%- set call_id = ns.call_ids[ns.results] if ns.results < (ns.call_ids | length) else (message.tool_call_id if message.tool_call_id is defined else '') -%}
        {%- set ns.results = ns.results + 1 -%}
        {{- '<|im_system|>tool<|im_middle|>## Return of ' + call_id + '\n' + message.content -}}
    {%- else -%}
        {{- '<|im_system|>system<|im_middle|>' + message.content -}}
    {%- endif -%}
    {{- '<|im_end|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_assistant|>assistant<|im_middle|>' -}}
{%- endif -%}
`;

/**
 * OpenAI's harmony format for gpt-oss (the harmony response-format guide): a system message with
 * date, reasoning effort and channels; a developer message with the instructions and the functions
 * as a TypeScript-like namespace; assistant messages on the `analysis`/`commentary`/`final` channels,
 * tool calls as `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{…}<|call|>` and
 * results from `functions.NAME`. Reasoning is kept only for tool calls of the current turn (the
 * guide's rule). Built-in tools (browser, python) are not described.
 */
const GPT_OSS = String.raw`
{%- macro ts_type(schema) -%}
    {%- if schema.enum -%}
        {%- for value in schema.enum -%}{{- value | tojson -}}{{- ' | ' if not loop.last else '' -}}{%- endfor -%}
    {%- elif schema.type == 'string' -%}string
    {%- elif schema.type == 'number' or schema.type == 'integer' -%}number
    {%- elif schema.type == 'boolean' -%}boolean
    {%- elif schema.type == 'array' -%}
        {%- if schema['items'] -%}{{- ts_type(schema['items']) -}}[]{%- else -%}any[]{%- endif -%}
    {%- elif schema.type == 'object' and schema.properties -%}
        {{- '{\n' -}}
        {%- for key, value in schema.properties.items() -%}
            {{- key + ('' if key in (schema.required or []) else '?') + ': ' + ts_type(value) + (',\n' if not loop.last else '\n') -}}
        {%- endfor -%}
        {{- '}' -}}
    {%- elif schema.type == 'object' -%}object
    {%- else -%}any
    {%- endif -%}
{%- endmacro -%}
{%- set effort = reasoning_effort if reasoning_effort is defined else 'medium' -%}
{{- '<|start|>system<|message|>' + (model_identity if model_identity is defined else 'You are ChatGPT, a large language model trained by OpenAI.') + '\n' -}}
{{- 'Knowledge cutoff: 2024-06\nCurrent date: ' + strftime_now('%Y-%m-%d') + '\n\nReasoning: ' + effort + '\n\n' -}}
{{- '# Valid channels: analysis, commentary, final. Channel must be included for every message.' -}}
{%- if tools -%}{{- "\nCalls to these tools must go to the commentary channel: 'functions'." -}}{%- endif -%}
{{- '<|end|>' -}}
{%- set ns = namespace(instructions='', last_final=-1, last_call='') -%}
{%- for message in messages -%}
    {%- if message.role == 'system' -%}
        {%- set ns.instructions = (ns.instructions + '\n\n' if ns.instructions else '') + message.content -%}
    {%- elif message.role == 'assistant' and not message.tool_calls -%}
        {%- set ns.last_final = loop.index0 -%}
    {%- endif -%}
{%- endfor -%}
{%- if ns.instructions or tools -%}
    {{- '<|start|>developer<|message|>' -}}
    {%- if ns.instructions -%}{{- '# Instructions\n\n' + ns.instructions + '\n\n' -}}{%- endif -%}
    {%- if tools -%}
        {{- '# Tools\n\n## functions\n\nnamespace functions {\n\n' -}}
        {%- for tool in tools -%}
            {%- set fn = tool.function -%}
            {%- if fn.description -%}{{- '// ' + fn.description + '\n' -}}{%- endif -%}
            {{- 'type ' + fn.name + ' = ' -}}
            {%- if fn.parameters and fn.parameters.properties -%}
                {{- '(_: {\n' -}}
                {%- for key, value in fn.parameters.properties.items() -%}
                    {%- if value.description -%}{{- '// ' + value.description + '\n' -}}{%- endif -%}
                    {{- key + ('' if key in (fn.parameters.required or []) else '?') + ': ' + ts_type(value) -}}
                    {%- if value.default is defined -%}{{- ', // default: ' + (value.default | tojson) + '\n' -}}{%- else -%}{{- ',\n' -}}{%- endif -%}
                {%- endfor -%}
                {{- '}) => any;\n\n' -}}
            {%- else -%}
                {{- '() => any;\n\n' -}}
            {%- endif -%}
        {%- endfor -%}
        {{- '} // namespace functions' -}}
    {%- endif -%}
    {{- '<|end|>' -}}
{%- endif -%}
{%- for message in messages -%}
    {%- if message.role == 'user' -%}
        {{- '<|start|>user<|message|>' + message.content + '<|end|>' -}}
    {%- elif message.role == 'assistant' and message.tool_calls -%}
        {%- if loop.index0 > ns.last_final and message.reasoning_content is defined and message.reasoning_content -%}
            {{- '<|start|>assistant<|channel|>analysis<|message|>' + message.reasoning_content + '<|end|>' -}}
        {%- endif -%}
        {%- if message.content -%}
            {{- '<|start|>assistant<|channel|>commentary<|message|>' + message.content + '<|end|>' -}}
        {%- endif -%}
        {%- for call in message.tool_calls -%}
            {%- set arguments = call.function.arguments -%}
            {{- '<|start|>assistant<|channel|>commentary to=functions.' + call.function.name + ' <|constrain|>json<|message|>' -}}
            {{- (arguments if arguments is string else arguments | tojson) + '<|call|>' -}}
            {%- set ns.last_call = call.function.name -%}
        {%- endfor -%}
    {%- elif message.role == 'assistant' -%}
        {{- '<|start|>assistant<|channel|>final<|message|>' + message.content + '<|end|>' -}}
    {%- elif message.role == 'tool' -%}
        {%- set tool_ns = namespace(name=message.name if message.name is defined else '') -%}
        {%- if not tool_ns.name and message.tool_call_id is defined -%}
            {%- for earlier in messages[:loop.index0] -%}
                {%- for call in earlier.tool_calls or [] -%}
                    {%- if call.id is defined and call.id == message.tool_call_id -%}{%- set tool_ns.name = call.function.name -%}{%- endif -%}
                {%- endfor -%}
            {%- endfor -%}
        {%- endif -%}
        {{- '<|start|>functions.' + (tool_ns.name or ns.last_call) + ' to=assistant<|channel|>commentary<|message|>' + message.content + '<|end|>' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|start|>assistant' -}}{%- endif -%}
`;

/** The built-in templates, by name. */
export const BUILTIN_CHAT_TEMPLATES: Readonly<Record<BuiltinChatTemplateName, string>> = Object.freeze({
  chatml: CHATML.trim(),
  mistral: MISTRAL.trim(),
  'deepseek-v3': DEEPSEEK_V3.trim(),
  'kimi-k2': KIMI_K2.trim(),
  'gpt-oss': GPT_OSS.trim(),
});
