/**
 * Synthetic output tokens for the engine emulator: deterministic, readable, and cheap. The answer to a
 * prompt is a seeded draw of words from a small vocabulary, so the same prompt (and `seed` request
 * parameter) on an emulator started with the same seed streams the same tokens — the way greedy
 * decoding repeats itself — and a test can predict usage and cache behaviour exactly.
 *
 * Every vocabulary entry is one token of the tokenizer that decodes to whole characters, so each
 * streamed chunk is valid text and the completion's token count is exactly what was generated.
 */
import { createRng } from '../rng.js';
import type { Tokenizer } from '../tokenize/index.js';

/** Candidate words: common English with a leading space (BPE vocabularies hold " word" as one token). */
const WORDS =
  ' the of and to in is that for it as with was on be by at this from or an are not have but which one all were they there can more has when will their been if would about into so no out only other some time what up its than also then two may first these most well new made after such where over very just like through each how between many both under same while last down long great never still own another because good place work'.split(
    ' ',
  );
const LETTERS = 'etaoinshrdlucmfwypvbgkqjxz';
/** Fewer whole-word tokens than this and the vocabulary takes letters. */
const MIN_WORDS = 16;

export class OutputSampler {
  /** Token ids of the vocabulary, and their texts. */
  readonly ids: Uint32Array;
  readonly texts: string[];
  private readonly textOf: Map<number, string>;

  constructor(
    readonly tokenizer: Tokenizer,
    readonly seed: number,
  ) {
    const ids: number[] = [];
    const texts: string[] = [];
    const seen = new Set<number>();
    const keep = (candidates: string[], repeats: boolean) => {
      for (const text of candidates) {
        const enc = tokenizer.encode(text);
        // One token that decodes back to the same text: a chunk per token stays valid UTF-8.
        if (enc.length !== 1 || (!repeats && seen.has(enc[0])) || tokenizer.decode(enc) !== text) continue;
        seen.add(enc[0]);
        ids.push(enc[0]);
        texts.push(text);
      }
    };
    keep(WORDS.filter((w) => w.length > 0).map((w) => ` ${w}`), false);
    // A tokenizer with few whole-word tokens (bytes) writes letters, and a space about one draw in six.
    if (ids.length < MIN_WORDS) keep([...LETTERS, ' ', ' ', ' ', ' ', ' '], true);
    if (ids.length === 0) throw new Error(`OutputSampler: the ${tokenizer.name} tokenizer has no single-token word or letter`);
    this.ids = Uint32Array.from(ids);
    this.texts = texts;
    this.textOf = new Map(ids.map((id, i) => [id, texts[i]]));
  }

  /**
   * `count` output ids for a prompt: a function of the emulator's seed, the prompt's ids and the
   * request's own `seed` parameter (absent: 0).
   */
  sample(prompt: Uint32Array, count: number, requestSeed = 0): Uint32Array {
    // FNV-1a over the ids' bytes: a stable 32-bit digest of the prompt (a seed, not a security boundary).
    let h = 0x811c9dc5 ^ this.seed;
    for (let i = 0; i < prompt.length; i++) {
      let t = prompt[i];
      for (let b = 0; b < 4; b++) {
        h = Math.imul(h ^ (t & 0xff), 0x01000193);
        t >>>= 8;
      }
    }
    const rng = createRng((h ^ Math.imul(requestSeed | 0, 0x9e3779b1)) | 0);
    const out = new Uint32Array(count);
    for (let i = 0; i < count; i++) out[i] = this.ids[rng.int(this.ids.length)];
    return out;
  }

  /** The text of one sampled id. */
  text(id: number): string {
    return this.textOf.get(id) ?? this.tokenizer.decode([id]);
  }
}
