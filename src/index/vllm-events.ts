/**
 * vLLM KV-cache events: decoding and validation of one published batch (DESIGN §8). Pure functions of
 * the bytes and a few limits: no index, no sockets, no clock, so the same code can run in an ingest
 * worker thread and hand compact results to the routing thread.
 *
 * Wire facts (read from vLLM's `vllm/distributed/kv_events.py`, not copied):
 * - A ZMQ multipart message is (topic, seq, payload); `seq` is an 8-byte big-endian unsigned integer,
 *   one per batch, counting from 0 per publisher; the replay socket ends a stream with seq = −1 as a
 *   signed 8-byte integer (all bytes 0xFF) and an empty payload.
 * - The payload is msgpack of an `EventBatch(ts, events, data_parallel_rank)`: a positional array
 *   `[ts, events, rank?]` when vLLM encodes it `array_like`, a map `{ts, events, data_parallel_rank?}`
 *   otherwise (recent releases). msgspec omits fields still at their default, so `rank` may be absent.
 * - Events are tagged unions: positional arrays whose first element is the class name
 *   (`["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, lora_name,
 *   extra_keys, group_idx, kv_cache_spec_kind, kv_cache_spec_sliding_window]`, older fields first, later
 *   ones may be absent) or maps with a `type` key naming the class (unknown keys are ignored).
 * - A block hash (`ExternalBlockHash`) is an int or bytes. Ints keep their low 64 bits (a negative
 *   Python hash becomes its two's complement); bytes (vLLM's sha256 hashes, 32 bytes) become a u64 as
 *   XXH64 with seed 0 of the bytes. Engine hashes are opaque ids here: the router hashes the tokens
 *   itself (DESIGN §3), the engine hash only names a block so BlockRemoved can find it.
 *
 * Validation is all-or-nothing per batch: if any part is malformed, the whole batch is rejected with one
 * reason from {@link REJECT_REASONS}, so the index never sees half a batch. Rejections are results,
 * never exceptions: a bad frame from one engine must not stop the subscriber.
 */
import { C1, Unpackr } from 'msgpackr';
import { xxh64 } from '../kernels/js/xxh64.js';
import { tierOfMedium } from './records.js';
import { decodeKvEventBatchFast } from './vllm-fast-decode.js';

/** Why a batch (or a transport frame) was rejected; each has its own counter in the metrics. */
export const REJECT_REASONS = [
  /** The payload is larger than `maxPayloadBytes`. */
  'payload-too-large',
  /** The msgpack ends in the middle of a value. */
  'truncated',
  /** Not msgpack: a reserved byte, bytes after the first value, an unknown extension. */
  'malformed',
  /** Not `[ts, events, rank?]` or `{ts, events, data_parallel_rank?}`; ts not a finite number; rank not an integer ≥ 0. */
  'payload-shape',
  /** More events in one batch than `maxEvents`. */
  'too-many-events',
  /** An event that is neither an array with a string tag nor a map with a string `type`, or a field of the wrong type. */
  'event-shape',
  /** A positional event with fewer fields than its type needs (or more than MAX_EVENT_FIELDS). */
  'event-arity',
  /** A tag other than BlockStored, BlockRemoved, AllBlocksCleared. */
  'unknown-event-type',
  /** A block hash (or parent hash) that is neither an integer nor bytes. */
  'non-integer-hash',
  /** A token id that is not an integer in 0 … 2^32−1. */
  'bad-token',
  /** `token_ids.length` ≠ `block_hashes.length × block_size`. */
  'token-count',
  /** `block_size` differs from the router's block size (the chains would not line up with requests). */
  'block-size',
  /** `token_ids` longer than `maxTokensPerEvent`. */
  'too-many-tokens',
  /** `block_hashes` longer than `maxBlocksPerEvent`. */
  'too-many-blocks',
  /** A `medium` that is not a string naming GPU, CPU or disk memory. */
  'bad-medium',
  /** A ZMQ message that is not (topic, seq, payload). */
  'bad-frame',
  /** A sequence frame that is not 8 bytes, or a sequence number above 2^53 − 1. */
  'bad-sequence',
] as const;

export type RejectReason = (typeof REJECT_REASONS)[number];

/** The most fields a positional event may have: vLLM has 12 today; later appended fields are ignored. */
export const MAX_EVENT_FIELDS = 32;
/** Longest bytes hash accepted (vLLM's are 32-byte sha256 digests). */
export const MAX_HASH_BYTES = 1024;

export interface DecodeLimits {
  /** The router's block size in tokens: every BlockStored must use it. */
  blockSize: number;
  /** Largest payload decoded (bytes, default 64 MiB). */
  maxPayloadBytes?: number;
  /** Most events in one batch (default 65,536). */
  maxEvents?: number;
  /** Most token ids in one BlockStored (default 1,048,576: 65,536 blocks of 16). */
  maxTokensPerEvent?: number;
  /** Most block hashes in one event (default 65,536). */
  maxBlocksPerEvent?: number;
  /** Maps a bytes hash to a u64 (default: XXH64 seed 0, the readable JS reference; a kernel may be injected). */
  hashBytes?: (bytes: Uint8Array) => bigint;
}

export const DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_EVENTS = 65_536;
export const DEFAULT_MAX_TOKENS_PER_EVENT = 1_048_576;
export const DEFAULT_MAX_BLOCKS_PER_EVENT = 65_536;

export interface BlockStoredEvent {
  kind: 'stored';
  /** Engine hashes (u64) of the stored blocks, in chain order. */
  hashes: BigUint64Array;
  /** Engine hash of the block before the first one, or null when the chain starts here. */
  parent: bigint | null;
  /** blocks × blockSize token ids. */
  tokens: Uint32Array;
  /** Index tier (TIER_GPU, TIER_CPU, TIER_DISK). */
  tier: number;
  loraName: string | null;
  /** Deprecated in vLLM in favour of lora_name; kept so a caller can map it. */
  loraId: number | null;
  /** KV cache group (hybrid models); 0 when absent. */
  group: number;
  /**
   * The request's cache salt (the tenant) when the chain starts here: vLLM puts a request's `cache_salt`
   * in `extra_keys` of its first block, read as the first element of extra_keys[0] when that is a
   * string. Null when the parent is not null, or extra_keys is absent or has another shape (other
   * shapes are ignored, never rejected).
   */
  salt: string | null;
}

export interface BlockRemovedEvent {
  kind: 'removed';
  hashes: BigUint64Array;
  tier: number;
  group: number;
}

export interface AllBlocksClearedEvent {
  kind: 'cleared';
}

export type KvEvent = BlockStoredEvent | BlockRemovedEvent | AllBlocksClearedEvent;

export interface KvEventBatch {
  /** The publisher's wall-clock time of the batch (seconds since the Unix epoch, float). */
  ts: number;
  /** data_parallel_rank from the payload, or null when absent. */
  dpRank: number | null;
  events: KvEvent[];
  /** Block hashes over all events (for metrics). */
  blocks: number;
}

export type DecodeResult = { ok: true; batch: KvEventBatch } | { ok: false; reason: RejectReason; detail: string };

// Maps as Map objects (no prototype games with keys such as "__proto__"), 64-bit integers as bigint so
// no hash loses bits, no msgpackr record structures.
const unpackr = new Unpackr({ mapsAsObjects: false, useRecords: false, int64AsType: 'bigint' });

class Reject {
  constructor(
    readonly reason: RejectReason,
    readonly detail: string,
  ) {}
}

function reject(reason: RejectReason, detail: string): never {
  throw new Reject(reason, detail);
}

/** Decodes and validates one payload. Never throws on bad input: a rejection names its reason. */
export function decodeKvEventBatch(payload: Uint8Array, limits: DecodeLimits): DecodeResult {
  const maxPayload = limits.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
  if (!(payload instanceof Uint8Array)) return { ok: false, reason: 'payload-shape', detail: 'payload is not bytes' };
  if (payload.length > maxPayload) return { ok: false, reason: 'payload-too-large', detail: `${payload.length} bytes > ${maxPayload}` };
  // Well-formed payloads in the shapes vLLM sends take the byte-level path (vllm-fast-decode.ts); it
  // returns null for anything it does not fully check, and msgpackr below decides those.
  const fast = decodeKvEventBatchFast(payload, limits, limits.hashBytes ?? hashBytesXxh64);
  if (fast !== null) return { ok: true, batch: fast };
  return decodeKvEventBatchGeneral(payload, limits);
}

/** The general decoder: msgpackr, then validation of the decoded values (every rejection comes from here). */
export function decodeKvEventBatchGeneral(payload: Uint8Array, limits: DecodeLimits): DecodeResult {
  // msgpackr refuses a view into a SharedArrayBuffer ("source must be an ArrayBuffer"): a copy.
  if (payload.buffer instanceof SharedArrayBuffer) payload = new Uint8Array(payload);
  let root: unknown;
  try {
    root = unpackr.unpack(payload);
  } catch (err) {
    const e = err as { incomplete?: boolean; message?: string };
    // msgpackr marks reads past the end `incomplete`; anything else is not msgpack at all.
    if (e.incomplete) return { ok: false, reason: 'truncated', detail: 'the msgpack ends in the middle of a value' };
    return { ok: false, reason: 'malformed', detail: String(e.message ?? err).slice(0, 60) };
  }
  // 0xC1 is the one byte msgpack never uses; msgpackr returns a marker object for it.
  if (root === C1) return { ok: false, reason: 'malformed', detail: 'the reserved byte 0xc1' };
  try {
    return { ok: true, batch: batchOf(root, limits) };
  } catch (err) {
    if (err instanceof Reject) return { ok: false, reason: err.reason, detail: err.detail };
    throw err; // a bug in this file, not bad input
  }
}

function field(m: Map<unknown, unknown>, key: string): unknown {
  return m.get(key);
}

function batchOf(root: unknown, limits: DecodeLimits): KvEventBatch {
  let ts: unknown;
  let events: unknown;
  let rank: unknown;
  if (Array.isArray(root)) {
    if (root.length < 2 || root.length > MAX_EVENT_FIELDS) reject('payload-shape', `batch array of ${root.length} fields (expected [ts, events, rank?])`);
    [ts, events, rank] = root;
  } else if (root instanceof Map) {
    ts = field(root, 'ts');
    events = field(root, 'events');
    rank = field(root, 'data_parallel_rank');
  } else {
    reject('payload-shape', 'batch is neither an array nor a map');
  }
  if (typeof ts !== 'number' || !Number.isFinite(ts)) reject('payload-shape', 'ts is not a finite number');
  if (!Array.isArray(events)) reject('payload-shape', 'events is not an array');
  let dpRank: number | null = null;
  if (rank !== undefined && rank !== null) {
    if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 0 || rank > 0xffff) reject('payload-shape', 'data_parallel_rank is not an integer in 0 … 65535');
    dpRank = rank;
  }
  const maxEvents = limits.maxEvents ?? DEFAULT_MAX_EVENTS;
  if (events.length > maxEvents) reject('too-many-events', `${events.length} events > ${maxEvents}`);
  const out: KvEvent[] = [];
  let blocks = 0;
  for (let i = 0; i < events.length; i++) {
    const ev = eventOf(events[i], i, limits);
    if (ev.kind !== 'cleared') blocks += ev.hashes.length;
    out.push(ev);
  }
  return { ts, dpRank, events: out, blocks };
}

/** The fields of one event by name, from either encoding. */
interface Fields {
  tag: string;
  get(name: string, position: number): unknown;
}

// Positions in the array_like encoding (0 is the tag).
const STORED = { block_hashes: 1, parent_block_hash: 2, token_ids: 3, block_size: 4, lora_id: 5, medium: 6, lora_name: 7, extra_keys: 8, group_idx: 9 };
const REMOVED = { block_hashes: 1, medium: 2, group_idx: 3 };
// Fewest fields (tag included) a positional event of each type needs: through block_size, through
// block_hashes, the tag alone. Fields after these were added by later vLLM releases and may be absent.
const MIN_ARITY: Record<string, number> = { BlockStored: 5, BlockRemoved: 2, AllBlocksCleared: 1 };

function fieldsOf(raw: unknown, i: number): Fields {
  if (Array.isArray(raw)) {
    const tag = raw[0];
    if (typeof tag !== 'string') reject('event-shape', `events[${i}] has no string tag`);
    const min = MIN_ARITY[tag];
    if (min === undefined) reject('unknown-event-type', `events[${i}] is ${JSON.stringify(tag.slice(0, 40))}`);
    if (raw.length < min || raw.length > MAX_EVENT_FIELDS) reject('event-arity', `events[${i}] (${tag}) has ${raw.length} fields, needs ${min} … ${MAX_EVENT_FIELDS}`);
    return { tag, get: (_name, position) => raw[position] };
  }
  if (raw instanceof Map) {
    const tag = raw.get('type');
    if (typeof tag !== 'string') reject('event-shape', `events[${i}] map has no string "type"`);
    if (MIN_ARITY[tag] === undefined) reject('unknown-event-type', `events[${i}] is ${JSON.stringify(tag.slice(0, 40))}`);
    return { tag, get: (name) => raw.get(name) };
  }
  return reject('event-shape', `events[${i}] is neither an array nor a map`);
}

function eventOf(raw: unknown, i: number, limits: DecodeLimits): KvEvent {
  const f = fieldsOf(raw, i);
  if (f.tag === 'AllBlocksCleared') return { kind: 'cleared' };
  if (f.tag === 'BlockRemoved') {
    const hashes = hashList(f.get('block_hashes', REMOVED.block_hashes), i, limits);
    return { kind: 'removed', hashes, tier: tierOf(f.get('medium', REMOVED.medium), i), group: groupOf(f.get('group_idx', REMOVED.group_idx), i) };
  }
  // BlockStored
  const hashes = hashList(f.get('block_hashes', STORED.block_hashes), i, limits);
  const parentRaw = f.get('parent_block_hash', STORED.parent_block_hash);
  const parent = parentRaw === undefined || parentRaw === null ? null : hashOf(parentRaw, `events[${i}].parent_block_hash`, limits);
  const blockSize = f.get('block_size', STORED.block_size);
  if (typeof blockSize !== 'number' || !Number.isInteger(blockSize)) reject('event-shape', `events[${i}].block_size is not an integer`);
  if (blockSize !== limits.blockSize) reject('block-size', `events[${i}].block_size is ${blockSize}, the router's is ${limits.blockSize}`);
  const tokens = tokenList(f.get('token_ids', STORED.token_ids), i, hashes.length * blockSize, limits);
  const loraId = f.get('lora_id', STORED.lora_id);
  if (loraId !== undefined && loraId !== null && (typeof loraId !== 'number' || !Number.isInteger(loraId))) reject('event-shape', `events[${i}].lora_id is not an integer`);
  const loraName = f.get('lora_name', STORED.lora_name);
  if (loraName !== undefined && loraName !== null && typeof loraName !== 'string') reject('event-shape', `events[${i}].lora_name is not a string`);
  return {
    kind: 'stored',
    hashes,
    parent,
    tokens,
    tier: tierOf(f.get('medium', STORED.medium), i),
    loraName: (loraName as string | null | undefined) ?? null,
    loraId: (loraId as number | null | undefined) ?? null,
    group: groupOf(f.get('group_idx', STORED.group_idx), i),
    salt: parent === null ? saltOf(f.get('extra_keys', STORED.extra_keys)) : null,
  };
}

/** The cache salt in a chain's first block: extra_keys[0][0] when it is a string; null for any other shape. */
export function saltOf(extraKeys: unknown): string | null {
  if (!Array.isArray(extraKeys) || extraKeys.length === 0) return null;
  const first: unknown = extraKeys[0];
  if (!Array.isArray(first) || first.length === 0) return null;
  return typeof first[0] === 'string' ? first[0] : null;
}

function tierOf(medium: unknown, i: number): number {
  const tier = tierOfMedium(medium);
  if (tier === undefined) reject('bad-medium', `events[${i}].medium is ${typeof medium === 'string' ? JSON.stringify(medium.slice(0, 40)) : typeof medium}`);
  return tier;
}

function groupOf(g: unknown, i: number): number {
  if (g === undefined || g === null) return 0;
  if (typeof g !== 'number' || !Number.isInteger(g) || g < 0 || g > 0xffff) reject('event-shape', `events[${i}].group_idx is not an integer in 0 … 65535`);
  return g;
}

/** An engine hash as a u64, or undefined when it is neither an integer nor bytes. */
export function engineHashOf(v: unknown, hashBytes: (bytes: Uint8Array) => bigint = hashBytesXxh64): bigint | undefined {
  if (typeof v === 'bigint') return BigInt.asUintN(64, v);
  // Integers that fit 53 bits arrive as numbers; anything else a number carries is not an exact integer.
  if (typeof v === 'number') return Number.isSafeInteger(v) ? BigInt.asUintN(64, BigInt(v)) : undefined;
  if (v instanceof Uint8Array && v.length <= MAX_HASH_BYTES) return hashBytes(v);
  return undefined;
}

/** The default bytes → u64 map: XXH64 with seed 0. */
export function hashBytesXxh64(bytes: Uint8Array): bigint {
  return xxh64(bytes, 0n);
}

function hashOf(v: unknown, what: string, limits: DecodeLimits): bigint {
  const h = engineHashOf(v, limits.hashBytes);
  if (h === undefined) reject('non-integer-hash', `${what} is ${v instanceof Uint8Array ? `${v.length} bytes` : typeof v}`);
  return h;
}

function hashList(v: unknown, i: number, limits: DecodeLimits): BigUint64Array {
  if (!Array.isArray(v)) reject('event-shape', `events[${i}].block_hashes is not an array`);
  const max = limits.maxBlocksPerEvent ?? DEFAULT_MAX_BLOCKS_PER_EVENT;
  if (v.length > max) reject('too-many-blocks', `events[${i}] has ${v.length} block hashes > ${max}`);
  const out = new BigUint64Array(v.length);
  for (let k = 0; k < v.length; k++) out[k] = hashOf(v[k], `events[${i}].block_hashes[${k}]`, limits);
  return out;
}

function tokenList(v: unknown, i: number, expected: number, limits: DecodeLimits): Uint32Array {
  if (!Array.isArray(v)) reject('event-shape', `events[${i}].token_ids is not an array`);
  const max = limits.maxTokensPerEvent ?? DEFAULT_MAX_TOKENS_PER_EVENT;
  // The limit first: a huge array is refused before a single element is looked at.
  if (v.length > max) reject('too-many-tokens', `events[${i}] has ${v.length} token ids > ${max}`);
  if (v.length !== expected) reject('token-count', `events[${i}] has ${v.length} token ids, blocks × block_size = ${expected}`);
  const out = new Uint32Array(v.length);
  for (let k = 0; k < v.length; k++) {
    const t = v[k];
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t > 0xffffffff) reject('bad-token', `events[${i}].token_ids[${k}] is not an integer in 0 … 2^32−1`);
    out[k] = t;
  }
  return out;
}

// ---------- transport frames ----------

/** The replay stream's end marker: seq −1 as a signed 64-bit big-endian integer. */
export const END_OF_REPLAY = -1;

/**
 * Reads an 8-byte big-endian sequence frame: a seq in 0 … 2^53−1, END_OF_REPLAY for the replay end
 * marker, or undefined for anything else (wrong length, a seq JavaScript numbers cannot hold exactly).
 */
export function decodeSeq(frame: Uint8Array): number | undefined {
  if (!(frame instanceof Uint8Array) || frame.length !== 8) return undefined;
  const v = new DataView(frame.buffer, frame.byteOffset, 8).getBigInt64(0, false);
  if (v === -1n) return END_OF_REPLAY;
  if (v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  return Number(v);
}

/** An 8-byte big-endian sequence frame (END_OF_REPLAY gives the signed −1 marker). */
export function encodeSeq(seq: number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigInt64(0, BigInt(seq), false);
  return out;
}
