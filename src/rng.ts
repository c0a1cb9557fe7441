/**
 * Seeded pseudo-random numbers (STYLE 8: randomness is injected). SFC32 (Chris Doty-Humphrey's Small
 * Fast Counting generator, PractRand-clean at 2^32 state words) seeded through SplitMix32, so any
 * integer seed gives a well-mixed state. Everything that draws takes an Rng, so a test replays exactly.
 */
export interface Rng {
  /** Uniform u32. */
  u32(): number;
  /** Uniform in [0, 1) with 32 bits of resolution. */
  float(): number;
  /** Uniform integer in [0, n), n ≤ 2^32 (multiply-high, no modulo bias beyond 2^-32). */
  int(n: number): number;
  /** Uniform unsigned 64-bit bigint (allocates: tests and control path only). */
  u64(): bigint;
  /** The seed it was made from. */
  readonly seed: number;
}

function splitmix32(state: number): [number, number] {
  state = (state + 0x9e3779b9) | 0;
  let z = state;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [state, (z ^ (z >>> 16)) >>> 0];
}

export function createRng(seed: number): Rng {
  if (!Number.isInteger(seed)) throw new TypeError(`Expected \`seed\` to be an integer, got \`${String(seed)}\``);
  let s = seed | 0;
  const words: number[] = [];
  for (let i = 0; i < 4; i++) {
    const [next, out] = splitmix32(s);
    s = next;
    words.push(out);
  }
  let [a, b, c, d] = words;
  const u32 = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
  for (let i = 0; i < 12; i++) u32();
  return {
    seed,
    u32,
    float: () => u32() / 4294967296,
    int: (n: number) => Math.floor((u32() * n) / 4294967296),
    u64: () => (BigInt(u32()) << 32n) | BigInt(u32()),
  };
}
