/**
 * Finding special-token text (`<|im_start|>`, `<think>`, `</s>` …) in raw text before any other
 * processing, so such text becomes its token and is never split by the pre-tokenizer.
 *
 * Matching is leftmost-longest, as Hugging Face tokenizers do (a trie walk from each position,
 * keeping the longest token that ends there). llama.cpp instead takes the tokens longest-first
 * and cuts every occurrence of each out of the remaining text; the two differ only when two
 * special tokens overlap in the text, e.g. `<a><ab>` with tokens `<a>` and `a><ab>`.
 */

interface TrieNode {
  next: Map<number, TrieNode>;
  /** Token id of the text ending here, or -1. */
  token: number;
}

/** A piece of text to tokenize normally, or a special token found in the text. */
export type Segment = { text: string; token?: undefined } | { token: number; text?: undefined };

export class SpecialTokenMatcher {
  private readonly root: TrieNode = { next: new Map(), token: -1 };
  private readonly empty: boolean;

  /** `entries`: the token texts and ids to find. An empty text is ignored; for a repeated text the first id wins. */
  constructor(entries: Iterable<readonly [string, number]>) {
    let count = 0;
    for (const [text, id] of entries) {
      if (text.length === 0) continue;
      let node = this.root;
      for (let i = 0; i < text.length; i++) {
        const c = text.charCodeAt(i);
        let child = node.next.get(c);
        if (!child) {
          child = { next: new Map(), token: -1 };
          node.next.set(c, child);
        }
        node = child;
      }
      if (node.token === -1) {
        node.token = id;
        count++;
      }
    }
    this.empty = count === 0;
  }

  /** Splits `text` into plain-text segments (never empty) and special tokens, in order. */
  split(text: string): Segment[] {
    if (this.empty) return text.length ? [{ text }] : [];
    const out: Segment[] = [];
    let plainStart = 0;
    let i = 0;
    while (i < text.length) {
      let node = this.root.next.get(text.charCodeAt(i));
      if (!node) {
        i++;
        continue;
      }
      let matchToken = node.token;
      let matchEnd = node.token === -1 ? -1 : i + 1;
      for (let j = i + 1; j < text.length; j++) {
        const child: TrieNode | undefined = node.next.get(text.charCodeAt(j));
        if (!child) break;
        node = child;
        if (node.token !== -1) {
          matchToken = node.token;
          matchEnd = j + 1;
        }
      }
      if (matchEnd < 0) {
        i++;
        continue;
      }
      if (i > plainStart) out.push({ text: text.slice(plainStart, i) });
      out.push({ token: matchToken });
      i = plainStart = matchEnd;
    }
    if (plainStart < text.length) out.push({ text: plainStart === 0 ? text : text.slice(plainStart) });
    return out;
  }
}
