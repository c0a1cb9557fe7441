/**
 * Workloads for the simulator (DESIGN §6): trace replay (Mooncake JSONL, Azure LLM inference CSV) and
 * generators (shared-prefix groups, multi-turn sessions, Zipf-hot prefixes), plus rate scaling.
 *
 * A workload is a list of requests sorted by arrival and a deterministic function from a request to its
 * prompt token ids. Tokens are made at arrival and dropped after hashing, so a 12,000-request trace with
 * 12k-token prompts never holds its 580 MB of token ids at once. Token ids come from a counter-based
 * generator keyed by (seed, stream, position): two requests that share a stream prefix get identical
 * tokens, so the router's and the engines' real block hashing sees exactly the sharing the trace describes.
 */
import { readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { fail } from '../errors.js';
import { createRng, type Rng } from '../rng.js';

/** Llama-3's vocabulary size: synthetic token ids are in 0 … VOCAB − 1. */
export const VOCAB = 128_256;
/** Tokens per Mooncake hash_id block (the trace's README). */
export const MOONCAKE_BLOCK_TOKENS = 512;

export interface WorkloadRequest {
  /** Arrival at the router, ms from the start. */
  readonly arrivalMs: number;
  readonly inputTokens: number;
  readonly outputTokens: number;
  /** Session key for session-affinity policies. */
  readonly sessionKey?: string;
  readonly tenant?: string;
  /** Model asked for (default: the model of the fleet's first pool). */
  readonly model?: string;
}

export interface Workload {
  readonly name: string;
  /** Sorted by arrivalMs. */
  readonly requests: readonly WorkloadRequest[];
  /** Prompt token ids of request i (deterministic; length inputTokens). */
  prompt(i: number): Uint32Array;
  /**
   * The token ids the engine will generate for request i, when the workload knows them (a multi-turn
   * session's next prompt contains this answer, so the engine can cache its blocks). Length outputTokens.
   */
  output?(i: number): Uint32Array | undefined;
}

// ---------------------------------------------------------------- token streams

/** MurmurHash3's 32-bit finalizer: a bijection on u32 with full avalanche. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Writes `length` tokens of stream `stream` starting at its position `from` into `out` at `at`. A
 * counter-based generator (in the spirit of Salmon et al.'s Philox/Threefry, SC'11, with a much smaller
 * mixer): token j of a stream is fmix32(base + j) reduced to the vocabulary, base = fmix32(stream ^ key),
 * so any block of any stream is made directly, without generating what comes before it. The reduction
 * takes the top 17 bits modulo VOCAB (ids below 2,816 come twice as often: harmless for synthetic
 * prompts, and the integer path is a third faster than a float multiply-high; the Mooncake replay makes
 * 145 M tokens).
 */
export function fillStream(out: Uint32Array, at: number, key: number, stream: number, from: number, length: number): void {
  const base = (fmix32((stream ^ key) >>> 0) + from) | 0;
  for (let j = 0; j < length; j++) {
    // fmix32, inlined.
    let h = (base + j) | 0;
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    out[at + j] = (h >>> 15) % VOCAB;
  }
}

/** A 32-bit key per (seed, namespace) so streams of different workloads and seeds never coincide. */
function streamKey(seed: number, namespace: number): number {
  return fmix32((fmix32(seed >>> 0) ^ Math.imul(namespace, 0x9e3779b1)) >>> 0);
}

/** Stream namespaces (arbitrary distinct constants). */
const NS_MOONCAKE = 1;
const NS_AZURE = 2;
const NS_SYSTEM = 3;
const NS_QUESTION = 4;
const NS_ANSWER = 5;
const NS_PREFIX = 6;
const NS_SUFFIX = 7;

function checkPositive(what: string, v: unknown, integer = true, min = 1): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) {
    fail('DYSTRO_ERR_INVALID_CONFIG', what, `${integer ? 'an integer' : 'a number'} ≥ ${min}`, v);
  }
  return v;
}

/** Exponential inter-arrival gaps (a Poisson process), ms. */
function poissonGapMs(rng: Rng, ratePerS: number): number {
  return (-Math.log(1 - rng.float()) / ratePerS) * 1000;
}

function shuffle<T>(items: T[], rng: Rng): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = items[i];
    items[i] = items[j];
    items[j] = t;
  }
}

// ---------------------------------------------------------------- Mooncake

interface MooncakeRow {
  timestamp: number;
  input_length: number;
  output_length: number;
  hash_ids: number[];
}

export interface MooncakeOptions {
  /** JSONL file (default: the conversation trace shipped in src/sim/traces/). */
  path?: string;
  /** Or the JSONL text itself. */
  text?: string;
  /** Seeds the arrival jitter and the token ids (default 1). */
  seed?: number;
  /** First request to keep (default 0) and how many (default all). */
  offset?: number;
  limit?: number;
  /** Spread arrivals uniformly within each ~3 s timestamp bucket (default true; the README says why). */
  jitter?: boolean;
}

/** The shipped Mooncake trace, wherever this module runs from (src/ under tsx, dist/ after a build). */
export function defaultMooncakePath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, 'traces', 'mooncake_conversation_trace.jsonl'), join(here, '..', '..', 'src', 'sim', 'traces', 'mooncake_conversation_trace.jsonl')];
  for (const c of candidates) if (existsSync(c)) return c;
  return candidates[0];
}

/**
 * Mooncake trace replay (kvcache-ai/Mooncake, FAST '25): timestamp ms, input_length, output_length and
 * hash_ids of 512-token prefix blocks. Each hash_id's 512 tokens are a token stream keyed by the id, so
 * identical ids give identical tokens; a partial last block takes the first tokens of its id's stream.
 * Timestamps come in ~3 s buckets; arrivals are spread uniformly (seeded) up to the next bucket.
 */
export function loadMooncake(options: MooncakeOptions = {}): Workload {
  const seed = options.seed ?? 1;
  const text = options.text ?? readFileSync(options.path ?? defaultMooncakePath(), 'utf8');
  let rows: MooncakeRow[] = [];
  let lineNo = 0;
  for (const line of text.split('\n')) {
    lineNo++;
    if (line.trim() === '') continue;
    let row: MooncakeRow;
    try {
      row = JSON.parse(line) as MooncakeRow;
    } catch {
      fail('DYSTRO_ERR_INVALID_CONFIG', `Mooncake trace line ${lineNo}`, 'a JSON object', line.slice(0, 60));
    }
    if (!Number.isFinite(row.timestamp) || !Number.isInteger(row.input_length) || row.input_length < 1 || !Number.isInteger(row.output_length) || !Array.isArray(row.hash_ids)) {
      fail('DYSTRO_ERR_INVALID_CONFIG', `Mooncake trace line ${lineNo}`, '{ timestamp, input_length ≥ 1, output_length, hash_ids: [...] }', line.slice(0, 60));
    }
    if (row.hash_ids.length !== Math.ceil(row.input_length / MOONCAKE_BLOCK_TOKENS)) {
      fail('DYSTRO_ERR_INVALID_CONFIG', `Mooncake trace line ${lineNo} hash_ids.length`, `ceil(input_length / 512) = ${Math.ceil(row.input_length / MOONCAKE_BLOCK_TOKENS)}`, row.hash_ids.length);
    }
    rows.push(row);
  }
  const offset = options.offset ?? 0;
  rows = rows.slice(offset, options.limit !== undefined ? offset + options.limit : undefined);
  // Bucket widths: the gap to the next distinct timestamp (the last bucket takes the median gap).
  const distinct = [...new Set(rows.map((r) => r.timestamp))].sort((a, b) => a - b);
  const gaps = distinct.slice(1).map((t, i) => t - distinct[i]);
  const median = gaps.length ? [...gaps].sort((a, b) => a - b)[gaps.length >> 1] : 0;
  const width = new Map(distinct.map((t, i) => [t, i + 1 < distinct.length ? gaps[i] : median]));
  const rng = createRng(seed);
  const jitter = options.jitter ?? true;
  const t0 = distinct[0] ?? 0;
  const order = rows.map((r, i) => ({ r, arrivalMs: r.timestamp - t0 + (jitter ? rng.float() * width.get(r.timestamp)! : 0), i }));
  order.sort((a, b) => a.arrivalMs - b.arrivalMs || a.i - b.i);
  const key = streamKey(seed, NS_MOONCAKE);
  const requests = order.map(({ r, arrivalMs }) => ({ arrivalMs, inputTokens: r.input_length, outputTokens: Math.max(1, r.output_length) }));
  const ids = order.map(({ r }) => r.hash_ids);
  return {
    name: 'mooncake',
    requests,
    prompt(i) {
      const n = requests[i].inputTokens;
      const out = new Uint32Array(n);
      const blocks = ids[i];
      for (let k = 0; k < blocks.length; k++) {
        const at = k * MOONCAKE_BLOCK_TOKENS;
        fillStream(out, at, key, blocks[k], 0, Math.min(MOONCAKE_BLOCK_TOKENS, n - at));
      }
      return out;
    },
  };
}

// ---------------------------------------------------------------- Azure

export interface AzureOptions {
  /** CSV with header TIMESTAMP,ContextTokens,GeneratedTokens (Azure/AzurePublicDataset, 2023 traces). */
  path?: string;
  text?: string;
  /** Which shipped trace when no path or text is given (default "conv"). */
  trace?: 'code' | 'conv';
  seed?: number;
  offset?: number;
  limit?: number;
  /** A system prompt of this many tokens shared by every request (default 0: the trace has no prefix data). */
  systemPromptTokens?: number;
}

/** "2023-11-16 18:15:46.6805900" as UTC whole-second milliseconds and the fraction in ms (Date.parse takes 3 decimals only). */
function splitAzureTimestamp(s: string): [wholeMs: number, fractionMs: number] {
  const m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?$/.exec(s.trim());
  if (!m) fail('DYSTRO_ERR_INVALID_CONFIG', 'Azure TIMESTAMP', 'YYYY-MM-DD hh:mm:ss[.fraction]', s);
  return [Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]), m[7] ? Number(`0.${m[7]}`) * 1000 : 0];
}

/** Parses an Azure TIMESTAMP as UTC milliseconds (absolute, so below 0.001 ms the double rounds). */
export function parseAzureTimestamp(s: string): number {
  const [whole, frac] = splitAzureTimestamp(s);
  return whole + frac;
}

export function defaultAzurePath(trace: 'code' | 'conv'): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const name = `azure_2023_${trace}.csv`;
  const candidates = [join(here, 'traces', name), join(here, '..', '..', 'src', 'sim', 'traces', name)];
  for (const c of candidates) if (existsSync(c)) return c;
  return candidates[0];
}

/**
 * Azure LLM inference trace replay (Splitwise, ISCA '24): arrival times and lengths only. Prompts are
 * synthetic and unique per request (no prefix information in the trace), after an optional shared
 * system prompt.
 */
export function loadAzure(options: AzureOptions = {}): Workload {
  const seed = options.seed ?? 1;
  const text = options.text ?? readFileSync(options.path ?? defaultAzurePath(options.trace ?? 'conv'), 'utf8');
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const header = lines.shift()?.split(',').map((h) => h.trim());
  const ti = header?.indexOf('TIMESTAMP') ?? -1;
  const ci = header?.indexOf('ContextTokens') ?? -1;
  const gi = header?.indexOf('GeneratedTokens') ?? -1;
  if (ti < 0 || ci < 0 || gi < 0) fail('DYSTRO_ERR_INVALID_CONFIG', 'Azure CSV header', 'TIMESTAMP,ContextTokens,GeneratedTokens', header?.join(','));
  let rows = lines.map((l, n) => {
    const f = l.split(',');
    const input = Number(f[ci]);
    const output = Number(f[gi]);
    if (!Number.isInteger(input) || input < 1 || !Number.isInteger(output) || output < 0) fail('DYSTRO_ERR_INVALID_CONFIG', `Azure CSV line ${n + 2}`, 'integer token counts', l);
    const [whole, frac] = splitAzureTimestamp(f[ti]);
    return { whole, frac, input, output };
  });
  const offset = options.offset ?? 0;
  rows = rows.slice(offset, options.limit !== undefined ? offset + options.limit : undefined);
  rows.sort((a, b) => a.whole - b.whole || a.frac - b.frac);
  // Relative times from whole seconds and fractions apart, so the sub-millisecond digits survive.
  const w0 = rows[0]?.whole ?? 0;
  const f0 = rows[0]?.frac ?? 0;
  const sys = options.systemPromptTokens ?? 0;
  const key = streamKey(seed, NS_AZURE);
  const requests = rows.map((r) => ({ arrivalMs: r.whole - w0 + (r.frac - f0), inputTokens: r.input + sys, outputTokens: Math.max(1, r.output) }));
  return {
    name: `azure-${options.trace ?? 'conv'}`,
    requests,
    prompt(i) {
      const out = new Uint32Array(requests[i].inputTokens);
      if (sys > 0) fillStream(out, 0, key, 0xffffffff, 0, sys);
      fillStream(out, sys, key, i, 0, requests[i].inputTokens - sys);
      return out;
    },
  };
}

// ---------------------------------------------------------------- generators

export interface SharedPrefixOptions {
  /** Prompt groups, each with its own system prompt (llm-d's precise-routing profile: 150). */
  groups: number;
  /** Distinct questions (users) per group (llm-d: 5). */
  promptsPerGroup: number;
  /** Shared context per group, tokens (llm-d: 6,000). */
  systemPromptTokens: number;
  /** Unique question per prompt, tokens (llm-d: 1,200). */
  questionTokens: number;
  /** Output tokens per request (llm-d: 1,000). */
  outputTokens: number;
  /** Offered load, requests/s (Poisson arrivals). */
  ratePerS: number;
  /** Times every prompt is sent (default 1); later rounds repeat the same prompts in a new random order. */
  rounds?: number;
  seed?: number;
}

/**
 * Shared-prefix groups, as SGLang's `generated-shared-prefix` benchmark and llm-d's prefix-aware routing
 * guides: each request is its group's system prompt followed by its own question, sent in random order
 * at Poisson arrivals. llm-d's precise-routing profile is 150 groups × 5 prompts, 6,000-token context,
 * 1,200-token questions, 1,000 output tokens — `llmdPrecisePrefix()` below.
 */
export function sharedPrefix(o: SharedPrefixOptions): Workload {
  const groups = checkPositive('groups', o.groups);
  const per = checkPositive('promptsPerGroup', o.promptsPerGroup);
  const sys = checkPositive('systemPromptTokens', o.systemPromptTokens, true, 0);
  const q = checkPositive('questionTokens', o.questionTokens, true, 0);
  if (sys + q < 1) fail('DYSTRO_ERR_INVALID_CONFIG', 'systemPromptTokens + questionTokens', 'at least 1', sys + q);
  const out = checkPositive('outputTokens', o.outputTokens);
  const rate = checkPositive('ratePerS', o.ratePerS, false, 1e-9);
  const rounds = checkPositive('rounds', o.rounds ?? 1);
  const seed = o.seed ?? 1;
  const rng = createRng(seed);
  const prompts: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const round = Array.from({ length: groups * per }, (_, i) => i);
    shuffle(round, rng);
    prompts.push(...round);
  }
  let t = 0;
  const requests = prompts.map((p) => {
    t += poissonGapMs(rng, rate);
    return { arrivalMs: t, inputTokens: sys + q, outputTokens: out, sessionKey: `g${Math.floor(p / per)}u${p % per}` };
  });
  const sysKey = streamKey(seed, NS_SYSTEM);
  const qKey = streamKey(seed, NS_QUESTION);
  return {
    name: 'shared-prefix',
    requests,
    prompt(i) {
      const p = prompts[i];
      const tokens = new Uint32Array(sys + q);
      fillStream(tokens, 0, sysKey, Math.floor(p / per), 0, sys);
      fillStream(tokens, sys, qKey, p, 0, q);
      return tokens;
    },
  };
}

/** llm-d's precise prefix-cache routing profile (150 groups × 5, 6,000 + 1,200 tokens in, 1,000 out). */
export function llmdPrecisePrefix(ratePerS: number, seed = 1, rounds = 1): Workload {
  return sharedPrefix({ groups: 150, promptsPerGroup: 5, systemPromptTokens: 6000, questionTokens: 1200, outputTokens: 1000, ratePerS, rounds, seed });
}

export interface MultiTurnOptions {
  sessions: number;
  turns: number;
  /** System prompt shared by every session, tokens. */
  systemPromptTokens: number;
  /** New user tokens per turn. */
  userTokens: number;
  /** Answer tokens per turn (generated; the next turn's prompt contains them). */
  outputTokens: number;
  /** Session starts per second (Poisson). */
  sessionRatePerS: number;
  /** Mean gap between a session's turns, ms (open loop: includes the answer's own latency). */
  thinkTimeMs: number;
  seed?: number;
}

/**
 * Multi-turn chat sessions: turn k's prompt is the system prompt, every earlier (question, answer) pair
 * and the new question, so each turn extends the previous turn's sequence. The answers' token ids are
 * known to the workload (`output`), so an engine caches the blocks of an answer it generated and the
 * next turn can hit them — as in a real chat whose client sends the transcript back. Open loop: turn
 * times are drawn up front (exponential gaps with the given mean), not after each answer arrives.
 */
export function multiTurn(o: MultiTurnOptions): Workload {
  const sessions = checkPositive('sessions', o.sessions);
  const turns = checkPositive('turns', o.turns);
  const sys = checkPositive('systemPromptTokens', o.systemPromptTokens, true, 0);
  const user = checkPositive('userTokens', o.userTokens);
  const ans = checkPositive('outputTokens', o.outputTokens);
  const rate = checkPositive('sessionRatePerS', o.sessionRatePerS, false, 1e-9);
  const think = checkPositive('thinkTimeMs', o.thinkTimeMs, false, 0);
  const seed = o.seed ?? 1;
  const rng = createRng(seed);
  const list: { arrivalMs: number; session: number; turn: number }[] = [];
  let start = 0;
  for (let s = 0; s < sessions; s++) {
    start += poissonGapMs(rng, rate);
    let t = start;
    for (let k = 0; k < turns; k++) {
      if (k > 0) t += think > 0 ? -Math.log(1 - rng.float()) * think : 0;
      list.push({ arrivalMs: t, session: s, turn: k });
    }
  }
  list.sort((a, b) => a.arrivalMs - b.arrivalMs || a.session - b.session || a.turn - b.turn);
  const sysKey = streamKey(seed, NS_SYSTEM);
  const qKey = streamKey(seed, NS_QUESTION);
  const aKey = streamKey(seed, NS_ANSWER);
  const inputOf = (k: number) => sys + k * (user + ans) + user;
  const requests = list.map((x) => ({ arrivalMs: x.arrivalMs, inputTokens: inputOf(x.turn), outputTokens: ans, sessionKey: `s${x.session}` }));
  return {
    name: 'multi-turn',
    requests,
    prompt(i) {
      const { session, turn } = list[i];
      const out = new Uint32Array(inputOf(turn));
      fillStream(out, 0, sysKey, 0, 0, sys);
      let at = sys;
      for (let k = 0; k <= turn; k++) {
        const id = session * turns + k;
        fillStream(out, at, qKey, id, 0, user);
        at += user;
        if (k < turn) {
          fillStream(out, at, aKey, id, 0, ans);
          at += ans;
        }
      }
      return out;
    },
    output(i) {
      const { session, turn } = list[i];
      const out = new Uint32Array(ans);
      fillStream(out, 0, aKey, session * turns + turn, 0, ans);
      return out;
    },
  };
}

export interface ZipfPrefixOptions {
  /** Distinct hot prefixes. */
  prefixes: number;
  /** Zipf exponent s: prefix of rank r is drawn with probability ∝ 1 / r^s (default 1). */
  exponent?: number;
  prefixTokens: number;
  /** Unique tokens after the prefix. */
  suffixTokens: number;
  outputTokens: number;
  requests: number;
  ratePerS: number;
  seed?: number;
}

/** Requests whose prefix is drawn from a Zipf law over `prefixes` hot prefixes, then a unique suffix. */
export function zipfPrefixes(o: ZipfPrefixOptions): Workload {
  const n = checkPositive('prefixes', o.prefixes);
  const s = o.exponent ?? 1;
  if (!(s >= 0) || !Number.isFinite(s)) fail('DYSTRO_ERR_INVALID_CONFIG', 'exponent', 'a finite number ≥ 0', s);
  const pre = checkPositive('prefixTokens', o.prefixTokens, true, 0);
  const suf = checkPositive('suffixTokens', o.suffixTokens, true, 0);
  if (pre + suf < 1) fail('DYSTRO_ERR_INVALID_CONFIG', 'prefixTokens + suffixTokens', 'at least 1', pre + suf);
  const out = checkPositive('outputTokens', o.outputTokens);
  const count = checkPositive('requests', o.requests);
  const rate = checkPositive('ratePerS', o.ratePerS, false, 1e-9);
  const seed = o.seed ?? 1;
  const rng = createRng(seed);
  const cdf = new Float64Array(n);
  let total = 0;
  for (let r = 0; r < n; r++) cdf[r] = total += 1 / Math.pow(r + 1, s);
  const ranks = new Int32Array(count);
  let t = 0;
  const requests: WorkloadRequest[] = [];
  for (let i = 0; i < count; i++) {
    const u = rng.float() * total;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid] > u) hi = mid;
      else lo = mid + 1;
    }
    ranks[i] = lo;
    t += poissonGapMs(rng, rate);
    requests.push({ arrivalMs: t, inputTokens: pre + suf, outputTokens: out });
  }
  const pKey = streamKey(seed, NS_PREFIX);
  const sKey = streamKey(seed, NS_SUFFIX);
  return {
    name: 'zipf-prefixes',
    requests,
    prompt(i) {
      const tokens = new Uint32Array(pre + suf);
      fillStream(tokens, 0, pKey, ranks[i], 0, pre);
      fillStream(tokens, pre, sKey, i, 0, suf);
      return tokens;
    },
  };
}

// ---------------------------------------------------------------- transforms

/**
 * Time compression: arrivals divided by `factor` (2 = twice the offered load), prompts unchanged. The
 * way to sweep load on a fixed trace.
 */
export function scaleRate(w: Workload, factor: number): Workload {
  if (typeof factor !== 'number' || !(factor > 0) || !Number.isFinite(factor)) fail('DYSTRO_ERR_INVALID_CONFIG', 'rate factor', 'a finite number > 0', factor);
  const requests = w.requests.map((r) => ({ ...r, arrivalMs: r.arrivalMs / factor }));
  return { name: w.name, requests, prompt: (i) => w.prompt(i), output: w.output ? (i) => w.output!(i) : undefined };
}

/**
 * A load ramp on a fixed request list: the requests are cut into `factors.length` stages of equal count,
 * and the gaps between arrivals in stage k are divided by factors[k] (2 = twice the offered load), as
 * the llm-d benchmarks step their QPS up through stages. The first arrival keeps its time.
 */
export function rampRate(w: Workload, factors: readonly number[]): Workload {
  if (!Array.isArray(factors) || factors.length === 0) fail('DYSTRO_ERR_INVALID_CONFIG', 'rate ramp', 'a non-empty array of factors', factors);
  for (const f of factors) if (typeof f !== 'number' || !(f > 0) || !Number.isFinite(f)) fail('DYSTRO_ERR_INVALID_CONFIG', 'rate ramp factor', 'a finite number > 0', f);
  const n = w.requests.length;
  let t = n > 0 ? w.requests[0].arrivalMs : 0;
  const requests = w.requests.map((r, i) => {
    if (i > 0) t += (r.arrivalMs - w.requests[i - 1].arrivalMs) / factors[Math.min(factors.length - 1, Math.floor((i * factors.length) / n))];
    return { ...r, arrivalMs: t };
  });
  return { name: w.name, requests, prompt: (i) => w.prompt(i), output: w.output ? (i) => w.output!(i) : undefined };
}

/** Requests from..to−1 (arrivals shifted to start at 0). */
export function sliceWorkload(w: Workload, from: number, to = w.requests.length): Workload {
  const t0 = w.requests[from]?.arrivalMs ?? 0;
  const requests = w.requests.slice(from, to).map((r) => ({ ...r, arrivalMs: r.arrivalMs - t0 }));
  return { name: w.name, requests, prompt: (i) => w.prompt(i + from), output: w.output ? (i) => w.output!(i + from) : undefined };
}

/** Offered load figures of a workload (for reports). */
export function describeWorkload(w: Workload): { requests: number; spanS: number; ratePerS: number; inputTokensMean: number; outputTokensMean: number } {
  const n = w.requests.length;
  const span = n > 1 ? (w.requests[n - 1].arrivalMs - w.requests[0].arrivalMs) / 1000 : 0;
  let inp = 0;
  let out = 0;
  for (const r of w.requests) {
    inp += r.inputTokens;
    out += r.outputTokens;
  }
  return { requests: n, spanS: span, ratePerS: span > 0 ? n / span : 0, inputTokensMean: n ? inp / n : 0, outputTokensMean: n ? out / n : 0 };
}

// ---------------------------------------------------------------- declarative specs

/** A workload as plain data (JSON configuration files, the CLI, sweeps). */
export type WorkloadSpec = (
  | ({ kind: 'mooncake' } & Omit<MooncakeOptions, 'text'>)
  | ({ kind: 'azure' } & Omit<AzureOptions, 'text'>)
  | ({ kind: 'shared-prefix' } & SharedPrefixOptions)
  | { kind: 'llm-d-precise-prefix'; ratePerS: number; seed?: number; rounds?: number }
  | ({ kind: 'multi-turn' } & MultiTurnOptions)
  | ({ kind: 'zipf-prefixes' } & ZipfPrefixOptions)
) & {
  /** Time compression applied after loading: 2 = twice the offered load. */
  rateScale?: number;
  /** Then a load ramp in stages of equal request count (`rampRate`): [1, 2, 3] triples the load by the last third. */
  rateRamp?: number[];
};

export const WORKLOAD_KINDS = ['mooncake', 'azure', 'shared-prefix', 'llm-d-precise-prefix', 'multi-turn', 'zipf-prefixes'] as const;

/** Builds a workload from its spec (typed errors for an unknown kind or bad fields). */
export function workloadFromSpec(spec: WorkloadSpec): Workload {
  if (spec === null || typeof spec !== 'object') fail('DYSTRO_ERR_INVALID_CONFIG', 'workload', `a workload or a spec { kind: ${WORKLOAD_KINDS.join(' | ')}, … }`, spec);
  let w: Workload;
  switch (spec.kind) {
    case 'mooncake':
      w = loadMooncake(spec);
      break;
    case 'azure':
      w = loadAzure(spec);
      break;
    case 'shared-prefix':
      w = sharedPrefix(spec);
      break;
    case 'llm-d-precise-prefix':
      w = llmdPrecisePrefix(spec.ratePerS, spec.seed, spec.rounds);
      break;
    case 'multi-turn':
      w = multiTurn(spec);
      break;
    case 'zipf-prefixes':
      w = zipfPrefixes(spec);
      break;
    default:
      fail('DYSTRO_ERR_INVALID_CONFIG', 'workload.kind', `one of ${WORKLOAD_KINDS.join(', ')}`, (spec as { kind?: unknown }).kind);
  }
  if (spec.rateScale !== undefined && spec.rateScale !== 1) w = scaleRate(w, spec.rateScale);
  return spec.rateRamp !== undefined ? rampRate(w, spec.rateRamp) : w;
}
