/**
 * A deterministic corpus for tokenizer conformance: hand-written strings for every kind of text
 * that trips pre-tokenizers (prose, code, numbers, whitespace runs, contractions, CJK, RTL and
 * Indic scripts, emoji sequences, accents in NFC and NFD, special-token look-alikes, control
 * characters), then seeded random combinations of them.
 */
import { Prng } from './prng.js';

const PROSE = [
  'The quick brown fox jumps over the lazy dog.',
  'It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.',
  'Mixture-of-Experts models route each token to a few experts; the router picks the top-k by score.',
  'Hello, world! How are you doing today? I\'m fine, thanks.',
  '"Quoted text," she said. (Parenthetical remark.) [Bracketed] {braced} <angled>',
  'Mr. Smith paid $3.50 for 2 apples at 10:30 a.m. on Jan. 5th, 2024 — a bargain!',
  'E-mail: someone@example.com; URL: https://example.org/path?query=1&x=y#frag',
  'Semicolons; colons: dashes — en–dashes… ellipses... and “curly quotes” ‘too’.',
  'UPPERCASE WORDS AND lowercase words AND MiXeD CaSe WoRdS and CamelCaseIdentifiers like HTTPServerError.',
  'A sentence ending with spaces.   ',
  '   A sentence starting with spaces.',
  'Tabs\tbetween\twords\tand\t\tdouble tabs.',
  'Line one\nLine two\n\nLine four after a blank line\n\n\n\nAfter three blank lines',
  'Windows\r\nline\r\nendings\r\n',
  'Old Mac\rline endings\r',
  '# Markdown heading\n\n- item one\n- item two\n\n**bold** and _italic_ and `code`.',
  '| col a | col b |\n|-------|-------|\n| 1     | 2     |',
  '<html><body><p class="x">Hello &amp; welcome</p></body></html>',
  '{"key": "value", "list": [1, 2.5, -3e10, true, null], "nested": {"a": "b"}}',
  'The formula $E = mc^2$ and \\frac{a}{b} in LaTeX; x_i^2 + y_j^2 = z^2.',
  'Question?! Exclamation!!! Interrobang‽ Multiple???',
  'a b c d e f g h i j k l m n o p q r s t u v w x y z',
  'A B C D E F G H I J K L M N O P Q R S T U V W X Y Z',
];

const CODE = [
  'function add(a, b) {\n  return a + b;\n}\n',
  'const x = [1, 2, 3].map((n) => n * 2).filter(Boolean);',
  'def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n',
  'class Foo:\n\tdef __init__(self):\n\t\tself.x = 0\n\n\tdef bar(self):\n\t\treturn self.x\n',
  '#include <stdio.h>\n\nint main(int argc, char **argv) {\n\tprintf("Hello, %s!\\n", argv[0]);\n\treturn 0;\n}\n',
  'for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }',
  'if (x !== undefined && y >= 0 || z <= -1) { z ??= 42; w ||= "default"; }',
  '    // indented comment\n    /* block\n       comment */\n',
  'SELECT id, name FROM users WHERE age > 21 ORDER BY name DESC LIMIT 10;',
  'git commit -m "Fix: handle \\r\\n in parser" && git push origin main',
  'x = {"a": 1}; y = x["a"] ** 2 // 3 % 4',
  'fn main() { let v: Vec<u8> = vec![0; 16]; println!("{:?}", v); }',
  '<?php echo $var; ?>  @decorator  #define MAX(a,b) ((a)>(b)?(a):(b))',
  'return a<<2 | b>>>1 & ~c ^ d;',
  '        deeply    indented    with    spaces',
  '\t\t\tdeeply\ttabbed',
  'snake_case_name = camelCaseName + PascalCaseName - SCREAMING_CASE_NAME',
  "path = r'C:\\Users\\name\\file.txt'",
  '=> -> <- <=> !== === ++ -- ** // ... :: ;; ,,',
];

const NUMBERS = [
  '0', '7', '42', '123', '1234', '12345', '123456', '1234567', '12345678901234567890',
  '3.14159265358979', '1,234,567', '1,234,567.89', '-0.001', '+1e-10', '6.022e23', '1/2', '3:45', '50%',
  '2024-01-15T10:30:00Z', '+1 (555) 123-4567', '0xDEADBEEF', '0b101010', '192.168.0.1', 'v1.2.3-beta.4',
  'Call 911 or 112.', 'Pi is approximately 3.14, e is 2.718.', 'Room 101, floor 7, building 12345.',
  '١٢٣٤٥', '१२३४५', '一二三', '①②③', 'Ⅻ', '½ ¾ ⅞', '²³¹', '１２３４５', '٣.١٤',
];

const WHITESPACE = [
  ' ', '  ', '   ', '    ', '        ', '\t', '\t\t', '\n', '\n\n', '\n\n\n', '\r\n', '\r\n\r\n', ' \n ', '\n \n',
  'a  b', 'a   b', 'a\t b', 'a \tb', 'a\n b', 'a \nb', 'a\n\n b', 'trailing ', 'trailing  ', ' leading', '  leading',
  'x\u00a0y', 'x\u3000y', 'x\u2009y', 'x\u200by', 'x\u2028y', 'x\u0085y', 'x\ufeffy', '\u00a0\u00a0', ' \u3000 ',
  'end with newline\n', 'end with newlines\n\n', 'spaces then newline   \n', 'newline then spaces\n   ', ' \t \n \r\n ',
];

const CONTRACTIONS = [
  "don't", "DON'T", "I'M", "I'm", "we'll", "WE'LL", "you're", "they've", "she'd", "it's", "IT'S", "'s", "'S",
  "'s at start", "'tis the season", "rock 'n' roll", "the '90s", "O'Reilly's", "'ll", "'re'", "can't won't shouldn't",
  "He said 'hello' and 'goodbye'", "it’s (curly)", "don’t", "l'homme", "aujourd'hui", "'x", "''", "'''", "a'b'c'd",
  "it'ſ", "THE DOG'S BONE", "James' car", "'ve 've 'VE", "'d'd'd",
];

const CJK = [
  '你好，世界！', '我爱北京天安门。', '机器学习是人工智能的一个分支。', '混合专家模型（MoE）在大语言模型中很常见。',
  '日本語のテキストです。', 'ひらがなとカタカナとカンジ', '東京は日本の首都です。', '人々は毎日働いています。',
  'ｶﾀｶﾅ半角', 'ラーメンが好き！', '〇〇年々〻', '한국어 텍스트입니다.', '안녕하세요, 세계!', '서울특별시',
  '中文English混合text', '日本語とEnglishのmix', '한국어와 English 혼합', '「かぎかっこ」『二重』【隅付き】',
  '𠀀𠀁𪚥', '漢字、かな、カナ。', '⺀⺁⼀⼁', '龘靐齉', '中文123数字', '第1章　はじめに',
];

const OTHER_SCRIPTS = [
  'مرحبا بالعالم', 'اللغة العربية جميلة.', 'السلام عليكم ١٢٣', 'नमस्ते दुनिया', 'हिन्दी भाषा बहुत सुंदर है।', 'क्षत्रिय',
  'Привет, мир!', 'Съешь же ещё этих мягких французских булок.', 'ПРИВЕТ МИР', 'Γειά σου κόσμε!', 'Ελληνικά: αβγδε ΑΒΓΔΕ',
  'ΆΈΉΊΌΎΏ άέήίόύώ ΐΰ', 'שלום עולם', 'สวัสดีชาวโลก', 'ภาษาไทย', 'Tiếng Việt có dấu: ắằẳẵặ', 'ქართული ენა', 'Հայերեն',
  'ᐃᓄᒃᑎᑐᑦ', 'ᚠᚢᚦᚨᚱᚲ', 'አማርኛ', 'ಕನ್ನಡ', 'தமிழ்', 'বাংলা', 'ગુજરાતી', 'ਪੰਜਾਬੀ', 'සිංහල', 'မြန်မာ', 'ខ្មែរ', 'ລາວ', 'ᠮᠣᠩᠭᠣᠯ',
];

const EMOJI = [
  '😀', '👍', '👍🏽', '👍🏿', '❤️', '❤', '🇺🇸', '🇯🇵🇩🇪', '🏳️‍🌈', '👨‍👩‍👧‍👦', '👩🏽‍💻', '🧑‍🚀', '1️⃣', '#️⃣', '©️', '™',
  'I love 🍕 and 🍣!', '🔥🔥🔥', '😂😂', '✨ sparkle ✨', '🤖: beep boop', '🫠🫡🪿', '👁️‍🗨️', '🏴󠁧󠁢󠁳󠁣󠁴󠁿', '🧔🏻‍♂️', 'a😀b', '😀 😀',
];

const ACCENTED = [
  'café', 'naïve', 'résumé', 'Zürich', 'São Paulo', 'Ångström', 'façade', 'jalapeño', 'Ærøskøbing', 'Łódź', 'Dvořák',
  'straße', 'STRASSE', 'İstanbul', 'ıi', 'ǅemal', '\ufb01nance \ufb02ow', 'Ｆｕｌｌｗｉｄｔｈ', '\u00b5 vs \u03bc', '\u212a vs K', '\u2126 vs \u03a9', '\u212b vs \u00c5',
  // NFD (decomposed) forms: e + combining acute etc.
  'cafe\u0301', 'nai\u0308ve', 'A\u030angstro\u0308m', 'n\u0303', 'e\u0301\u0301\u0301', '\u0301leading mark', 'Z\u0336a\u0336l\u0336g\u0336o\u0336',
  'ḱṷṓn', 'ɐɔʎ ʇxǝʇ', 'ŉ', 'ǰ', 'ᾳ ᾼ', 'Ŀl',
];

const SPECIAL_LOOKALIKES = [
  '<|im_start|>', '<|im_end|>', '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n', '<|endoftext|>',
  '<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>', '<｜User｜>Hi<｜Assistant｜>', '</s>', '<s>', '<unk>', '<s>[INST] hi [/INST]',
  '<think>', '</think>', '<think>reasoning</think>answer', '<tool_call>{"name": "f"}</tool_call>', '<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>',
  '<|start|>assistant<|channel|>final<|message|>Hi<|end|>', '<|return|>', '<|call|>', '<|constrain|>json', '<|startoftext|>',
  '<|im_sta', 'rt|>', '<|<|im_end|>|>', '<<|im_end|>>', '<|im_end|><|im_end|>', 'x<|im_end|>y', '< |im_end| >', '<|IM_END|>',
  '<|reserved_200000|>', '<｜place▁holder▁no▁7｜>', '<｜tool▁calls▁begin｜>', '[INST]', '<<SYS>>', '<|eot_id|>', '<0x41>', '▁▁', '▁hello',
  'Ġhello', 'Ċ', 'text</s>more', '<s><s></s></s>', '<|endoftext|><|endoftext|>', '<think></think>', '<tool_call>\n</tool_call>',
];

const EDGE = [
  '', 'a', 'A', '.', '!', '?', '-', '_', '~', '`', '\\', '"', "'", '\x00', '\x01', '\x1b[31mred\x1b[0m', '\x7f', 'tab\x0bvt\x0cff',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', '!!!!!!!!!!!!', '--------------------------------', '================', '................',
  '________', '****', '~~~~', '////', '\\\\\\\\', '<<<<>>>>', '(((())))', '[[[[]]]]', '{{{{}}}}', '🙂🙂🙂🙂🙂🙂🙂🙂',
  '\ud800', 'a\udc00b', '\ufffd', '\uffff', '\u{10ffff}', '\u{e0001}', '\u{1d400}\u{1d401}', '\u{1f600}\u{fe0f}',
];

const FRAGMENT_LISTS = [PROSE, CODE, NUMBERS, WHITESPACE, CONTRACTIONS, CJK, OTHER_SCRIPTS, EMOJI, ACCENTED, SPECIAL_LOOKALIKES, EDGE];
const SEPARATORS = ['', ' ', ' ', ' ', '\n', '\n\n', '\t', ', ', '. ', '  ', '\r\n', '-', '/', "'", ' \n'];

let corpusCache: readonly string[] | undefined;

/**
 * The corpus: every hand-written string, a few long documents, then seeded random combinations
 * of fragments from all categories (2,000+ strings in all, the same on every run).
 */
export function tokenizerCorpus(): readonly string[] {
  if (corpusCache) return corpusCache;
  const out: string[] = FRAGMENT_LISTS.flat();
  const rng = new Prng(20240611);
  const pick = <T>(list: readonly T[]): T => list[rng.int(list.length)]!;
  // Long documents: many fragments in a row, as a prompt would be.
  for (let d = 0; d < 12; d++) {
    let doc = '';
    while (doc.length < 3000) doc += pick(pick(FRAGMENT_LISTS)) + pick(SEPARATORS);
    out.push(doc);
  }
  while (out.length < 2200) {
    const parts = 2 + rng.int(5);
    let s = '';
    for (let p = 0; p < parts; p++) {
      let fragment = pick(pick(FRAGMENT_LISTS));
      // Sometimes cut a fragment at a random code unit, to make odd boundaries (and lone surrogates).
      if (rng.next() < 0.15 && fragment.length > 2) fragment = fragment.slice(rng.int(fragment.length));
      s += (p > 0 ? pick(SEPARATORS) : '') + fragment;
    }
    out.push(s);
  }
  corpusCache = out;
  return out;
}

/** Every `step`-th corpus string, for slower oracles. */
export function corpusSample(count: number): string[] {
  const corpus = tokenizerCorpus();
  const step = Math.max(1, Math.floor(corpus.length / count));
  return corpus.filter((_, i) => i % step === 0).slice(0, count);
}
