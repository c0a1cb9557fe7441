/**
 * Tokenizers behind one small interface (DESIGN §7): the proxy and the engine emulator turn the same
 * request into the same token ids, so the router's chained block hashes of a prompt (PrefixHasher
 * .hashTokens over these ids) equal the hashes the emulator's KV events carry for it.
 *
 * - `gptTokenizer()`: a real BPE tokenizer (gpt-tokenizer, pure JavaScript) with the cl100k_base
 *   encoding. cl100k and not o200k: the models the performance model knows are Llama 3, whose tokenizer
 *   keeps cl100k's 100,000 BPE ranks and adds 28,000, so cl100k's token counts are the closer stand-in
 *   (o200k is GPT-4o's); it also loads faster (about 80 ms against 120 ms here, 30 MB less memory).
 *   Loaded on the first call, so importing this module costs nothing.
 * - `byteTokenizer()`: UTF-8 bytes as ids (0 … 255), no dependency. Its ids hash with hashTokens like
 *   any ids (4 bytes a token), which is not the router's byte mode (hashText, 1 byte a byte): a proxy
 *   pairing with an emulator on `bytes` tokenizes with byteTokenizer() and hashes the ids.
 *
 * Special-token text such as "<|endoftext|>" in a prompt is encoded as ordinary text, never as the
 * special token, so a user cannot inject control tokens (and the result never throws on such text).
 */
import { createRequire } from 'node:module';
import { DystroError, fail } from '../errors.js';

export interface Tokenizer {
  /** Stable name, e.g. "cl100k_base" or "bytes" (logged, shown in /v1/models). */
  readonly name: string;
  encode(text: string): Uint32Array;
  /** Text of the ids; an id the vocabulary lacks decodes as U+FFFD, never throws. */
  decode(ids: ArrayLike<number>): string;
}

export type TokenizerName = 'gpt' | 'bytes';

interface BpeModule {
  encode(text: string, options?: { allowedSpecial?: Set<string>; disallowedSpecial?: Set<string> }): number[];
  decode(ids: Iterable<number>): string;
}

let cl100k: BpeModule | null = null;
let gptSingleton: Tokenizer | null = null;

/** A real BPE tokenizer: gpt-tokenizer's cl100k_base (see the module comment for why cl100k). */
export function gptTokenizer(): Tokenizer {
  if (gptSingleton) return gptSingleton;
  // The CommonJS build through require: synchronous and lazy (an ESM import would be one or the other).
  cl100k ??= createRequire(import.meta.url)('gpt-tokenizer/cjs/encoding/cl100k_base') as BpeModule;
  const bpe = cl100k;
  const plain = { allowedSpecial: new Set<string>(), disallowedSpecial: new Set<string>() };
  gptSingleton = {
    name: 'cl100k_base',
    encode: (text) => {
      if (typeof text !== 'string') fail('DYSTRO_ERR_INVALID_ARGUMENT', 'text', 'a string', text);
      return Uint32Array.from(bpe.encode(text, plain));
    },
    decode: (ids) => {
      try {
        return bpe.decode(Array.from(ids));
      } catch {
        // An id outside the vocabulary: decode what can be decoded, one id at a time.
        let out = '';
        for (const id of Array.from(ids)) {
          try {
            out += bpe.decode([id]);
          } catch {
            out += '\ufffd';
          }
        }
        return out;
      }
    },
  };
  return gptSingleton;
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

/** UTF-8 bytes as token ids (one id per byte, 0 … 255). */
export function byteTokenizer(): Tokenizer {
  return {
    name: 'bytes',
    encode: (text) => {
      if (typeof text !== 'string') fail('DYSTRO_ERR_INVALID_ARGUMENT', 'text', 'a string', text);
      return Uint32Array.from(utf8Encoder.encode(text));
    },
    decode: (ids) => {
      const bytes = new Uint8Array(ids.length);
      for (let i = 0; i < ids.length; i++) bytes[i] = ids[i] <= 0xff ? ids[i] : 0x3f; // '?' for a non-byte id
      return utf8Decoder.decode(bytes);
    },
  };
}

/** The tokenizer for a CLI name: "gpt" (cl100k_base) or "bytes". */
export function tokenizerByName(name: string): Tokenizer {
  if (name === 'gpt' || name === 'cl100k_base') return gptTokenizer();
  if (name === 'bytes') return byteTokenizer();
  return fail('DYSTRO_ERR_INVALID_CONFIG', 'tokenizer', '"gpt" or "bytes"', name);
}

/** One chat message as the OpenAI API carries it (content a string or text parts). */
export interface ChatMessage {
  role: string;
  content?: string | readonly { type: string; text?: string }[] | null;
  name?: string;
}

/**
 * The prompt text of a chat, by a fixed ChatML-style template (the one both the proxy and the emulator
 * use, so both tokenize the same text):
 *
 *   for each message:  "<|im_start|>" + role + "\n" + content + "<|im_end|>\n"
 *   then:              "<|im_start|>assistant\n"
 *
 * Content given as parts joins the `text` of its "text" parts with no separator; other part types are
 * refused (an emulator has no images). The markers are plain text to the tokenizers here (see the module
 * comment). A real engine applies its model's own template; this one only has to be shared and stable:
 * every earlier turn of a conversation is a prefix of the next turn's prompt text.
 */
export function chatPromptText(messages: readonly ChatMessage[]): string {
  if (!Array.isArray(messages) || messages.length === 0) fail('DYSTRO_ERR_INVALID_REQUEST', 'messages', 'a non-empty array of { role, content }', messages);
  let out = '';
  messages.forEach((m, i) => {
    if (m === null || typeof m !== 'object' || typeof m.role !== 'string' || m.role.length === 0) {
      fail('DYSTRO_ERR_INVALID_REQUEST', `messages[${i}].role`, 'a non-empty string', m?.role);
    }
    out += `<|im_start|>${m.role}\n${contentText(m.content, i)}<|im_end|>\n`;
  });
  return `${out}<|im_start|>assistant\n`;
}

function contentText(content: ChatMessage['content'], i: number): string {
  if (content === undefined || content === null) return '';
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) fail('DYSTRO_ERR_INVALID_REQUEST', `messages[${i}].content`, 'a string or an array of text parts', content);
  let out = '';
  content.forEach((p, k) => {
    if (p === null || typeof p !== 'object' || p.type !== 'text' || typeof p.text !== 'string') {
      throw new DystroError('DYSTRO_ERR_INVALID_REQUEST', `Expected \`messages[${i}].content[${k}]\` to be a { type: "text", text } part, got ${JSON.stringify(p).slice(0, 60)}`);
    }
    out += p.text;
  });
  return out;
}
