/**
 * The fast path of `decodeKvEventBatch`: reads a well-formed vLLM KV-event payload straight from its
 * msgpack bytes into the typed arrays a batch is made of, with no intermediate JS values. Through
 * msgpackr a 16-token block cost ~270 ns to unpack (an array of 16 numbers, a bigint per hash) plus
 * ~180 ns to validate and copy; here it is one pass over the bytes (bench/ingest.ts has the figures).
 *
 * Contract: for any payload it returns either `null` (not handled: the general decoder in
 * vllm-events.ts decides, and it alone produces rejections) or exactly the batch the general decoder
 * would produce. So it accepts only what it can check completely and bails out on everything else —
 * a rejection of any kind, floats where integers are expected (msgpack allows an integral float64),
 * integers wider than the general decoder takes as numbers, non-ASCII strings (msgpackr's UTF-8 decoder
 * owns the treatment of malformed sequences), extension types, non-string map keys, a key given twice.
 * test/index/vllm-fast-decode.test.ts checks the contract differentially on generated and mutated
 * payloads.
 *
 * Reads past the end of the payload yield `undefined` (typed-array semantics), which every branch treats
 * as a bail-out or as 0; the final position check turns any such read into a bail-out.
 */
import { tierOfMedium } from './records.js';
import {
  DEFAULT_MAX_BLOCKS_PER_EVENT,
  DEFAULT_MAX_EVENTS,
  DEFAULT_MAX_TOKENS_PER_EVENT,
  MAX_EVENT_FIELDS,
  MAX_HASH_BYTES,
  type DecodeLimits,
  type KvEvent,
  type KvEventBatch,
} from './vllm-events.js';

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const LO = LITTLE_ENDIAN ? 0 : 1;
const HI = LITTLE_ENDIAN ? 1 : 0;

/** Thrown inside this module only: "not handled here". */
const BAIL = { bail: true };

// One payload is decoded at a time (synchronously), so the cursor lives in module state.
let buf: Uint8Array = new Uint8Array(0);
let view: DataView = new DataView(new ArrayBuffer(8));
let pos = 0;
let end = 0;
let hashBytes: (bytes: Uint8Array) => bigint = () => 0n;

const GPU = tierOfMedium(null)!;
const TAG_STORED = ascii('BlockStored');
const TAG_REMOVED = ascii('BlockRemoved');
const TAG_CLEARED = ascii('AllBlocksCleared');

/** Per type byte: right shift of the u32 read after it (255: not an unsigned int) and bytes taken. */
const TOKEN_SHIFT = new Uint8Array(256).fill(255);
const TOKEN_SIZE = new Uint8Array(256);
TOKEN_SHIFT[0xcc] = 24;
TOKEN_SIZE[0xcc] = 2;
TOKEN_SHIFT[0xcd] = 16;
TOKEN_SIZE[0xcd] = 3;
TOKEN_SHIFT[0xce] = 0;
TOKEN_SIZE[0xce] = 5;

function ascii(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

/**
 * Decodes one payload, or returns null when the general decoder must decide. `hashOfBytes` maps a
 * bytes block hash to a u64 (the same function the general decoder uses).
 */
export function decodeKvEventBatchFast(payload: Uint8Array, limits: DecodeLimits, hashOfBytes: (bytes: Uint8Array) => bigint): KvEventBatch | null {
  buf = payload;
  pos = 0;
  end = payload.length;
  view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  hashBytes = hashOfBytes;
  tokenUsed = 0;
  hashUsed = 0;
  try {
    const batch = readBatch(limits);
    return pos === end ? batch : null;
  } catch (err) {
    // DataView reads past the end throw RangeError: a truncated payload, the general decoder's case.
    if (err === BAIL || err instanceof RangeError) return null;
    throw err;
  } finally {
    buf = new Uint8Array(0); // do not keep the payload alive
  }
}

function bail(): never {
  throw BAIL;
}

/** Elements of an array header at `pos` (consumed), or −1 when the value is not an array. */
function arrayHeader(): number {
  const b = buf[pos];
  if (b >= 0x90 && b <= 0x9f) {
    pos++;
    return b & 0x0f;
  }
  if (b === 0xdc) {
    const n = view.getUint16(pos + 1);
    pos += 3;
    return n;
  }
  if (b === 0xdd) {
    if (pos + 5 > end) bail();
    const n = view.getUint32(pos + 1);
    pos += 5;
    return n;
  }
  return -1;
}

/** Entries of a map header at `pos` (consumed), or −1. */
function mapHeader(): number {
  const b = buf[pos];
  if (b >= 0x80 && b <= 0x8f) {
    pos++;
    return b & 0x0f;
  }
  if (b === 0xde) {
    const n = view.getUint16(pos + 1);
    pos += 3;
    return n;
  }
  if (b === 0xdf) {
    if (pos + 5 > end) bail();
    const n = view.getUint32(pos + 1);
    pos += 5;
    return n;
  }
  return -1;
}

/** Byte length of a str at `pos` (header consumed), or −1 when the value is not a str. */
function strHeader(): number {
  const b = buf[pos];
  if (b >= 0xa0 && b <= 0xbf) {
    pos++;
    return b & 0x1f;
  }
  if (b === 0xd9) {
    const n = buf[pos + 1];
    pos += 2;
    return n;
  }
  if (b === 0xda) {
    const n = view.getUint16(pos + 1);
    pos += 3;
    return n;
  }
  if (b === 0xdb) {
    if (pos + 5 > end) bail();
    const n = view.getUint32(pos + 1);
    pos += 5;
    return n;
  }
  return -1;
}

/** An ASCII str as a string (anything else bails). */
function readAscii(): string {
  const n = strHeader();
  if (n < 0 || pos + n > end) bail();
  let s = '';
  for (let i = 0; i < n; i++) {
    const c = buf[pos + i];
    if (c >= 0x80) bail();
    s += String.fromCharCode(c);
  }
  pos += n;
  return s;
}

/**
 * Map keys by their bytes: a table per key length of (bytes, id). Building a JS string per key cost an
 * allocation per field of every map-encoded event.
 */
type KeyTable = { bytes: Uint8Array; id: number }[][];

function keyTable(names: readonly string[]): KeyTable {
  const t: KeyTable = [];
  names.forEach((name, id) => (t[name.length] ??= []).push({ bytes: ascii(name), id }));
  return t;
}

const K_TYPE = 0;
const K_HASHES = 1;
const K_PARENT = 2;
const K_TOKENS = 3;
const K_BLOCK_SIZE = 4;
const K_LORA_ID = 5;
const K_MEDIUM = 6;
const K_LORA_NAME = 7;
const K_GROUP = 8;
const K_EXTRA = 9;
const EVENT_KEYS = keyTable(['type', 'block_hashes', 'parent_block_hash', 'token_ids', 'block_size', 'lora_id', 'medium', 'lora_name', 'group_idx', 'extra_keys']);
const K_TS = 0;
const K_EVENTS = 1;
const K_RANK = 2;
const BATCH_KEYS = keyTable(['ts', 'events', 'data_parallel_rank']);

/** The id of the str key at `pos` in `table` (consumed), −1 for another ASCII key; anything else bails. */
function readKey(table: KeyTable): number {
  const n = strHeader();
  if (n < 0 || pos + n > end) bail();
  const candidates = table[n];
  if (candidates !== undefined) {
    for (let c = 0; c < candidates.length; c++) {
      const want = candidates[c].bytes;
      let i = 0;
      while (i < n && buf[pos + i] === want[i]) i++;
      if (i === n) {
        pos += n;
        return candidates[c].id;
      }
    }
  }
  for (let i = 0; i < n; i++) if (buf[pos + i] >= 0x80) bail();
  pos += n;
  return -1;
}

/** Whether the str at `pos` is exactly `tag` (consumed when it is a str at all). */
function strEquals(tag: Uint8Array): boolean {
  const n = strHeader();
  if (n < 0 || pos + n > end) bail();
  let same = n === tag.length;
  for (let i = 0; same && i < n; i++) same = buf[pos + i] === tag[i];
  pos += n;
  return same;
}

function isNil(): boolean {
  if (buf[pos] === 0xc0) {
    pos++;
    return true;
  }
  return false;
}

/**
 * An integer the general decoder sees as a JS number (msgpack ints up to 32 bits; msgpackr gives 64-bit
 * ints as bigint). Anything else bails.
 */
function readSmallInt(): number {
  const b = buf[pos];
  if (b < 0x80) {
    pos++;
    return b;
  }
  if (b >= 0xe0) {
    pos++;
    return b - 0x100;
  }
  let v: number;
  switch (b) {
    case 0xcc:
      v = buf[pos + 1];
      pos += 2;
      break;
    case 0xcd:
      v = view.getUint16(pos + 1);
      pos += 3;
      break;
    case 0xce:
      if (pos + 5 > end) bail();
      v = view.getUint32(pos + 1);
      pos += 5;
      break;
    case 0xd0:
      v = view.getInt8(pos + 1);
      pos += 2;
      break;
    case 0xd1:
      v = view.getInt16(pos + 1);
      pos += 3;
      break;
    case 0xd2:
      if (pos + 5 > end) bail();
      v = view.getInt32(pos + 1);
      pos += 5;
      break;
    default:
      return bail();
  }
  if (v === undefined) bail();
  return v;
}

/** A finite JS number as msgpackr decodes it: float64 or a small int (float32 bails). */
function readNumber(): number {
  if (buf[pos] === 0xcb) {
    if (pos + 9 > end) bail();
    const v = view.getFloat64(pos + 1);
    pos += 9;
    if (!Number.isFinite(v)) bail();
    return v;
  }
  return readSmallInt();
}

/** Skips one value of a field the general decoder ignores (it must still be valid msgpack). */
function skip(depth = 0): void {
  if (depth > 64 || pos >= end) bail();
  const b = buf[pos];
  if (b < 0x80 || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) {
    pos++;
    return;
  }
  let n = arrayHeader();
  if (n >= 0) {
    for (let i = 0; i < n; i++) skip(depth + 1);
    return;
  }
  n = mapHeader();
  if (n >= 0) {
    for (let i = 0; i < 2 * n; i++) skip(depth + 1);
    return;
  }
  n = strHeader();
  if (n >= 0) {
    // Non-ASCII text goes to msgpackr (its decoder decides what malformed UTF-8 becomes).
    for (let i = 0; i < n; i++) if (buf[pos + i] >= 0x80) bail();
    pos += n;
    if (pos > end) bail();
    return;
  }
  switch (b) {
    case 0xcc:
    case 0xd0:
      pos += 2;
      break;
    case 0xcd:
    case 0xd1:
      pos += 3;
      break;
    case 0xce:
    case 0xd2:
    case 0xca:
      pos += 5;
      break;
    case 0xcf:
    case 0xd3:
    case 0xcb:
      pos += 9;
      break;
    case 0xc4:
      pos += 2 + buf[pos + 1];
      break;
    case 0xc5:
      pos += 3 + view.getUint16(pos + 1);
      break;
    case 0xc6:
      if (pos + 5 > end) bail();
      pos += 5 + view.getUint32(pos + 1);
      break;
    default:
      bail(); // extensions, 0xc1
  }
  if (pos > end) bail();
}

/** Writes a block hash at `words[2k]` as its u64 halves; bails where the general decoder would reject. */
function readHashInto(words: Uint32Array, k: number): void {
  const b = buf[pos];
  let lo: number;
  let hi = 0;
  if (b < 0x80) {
    lo = b;
    pos++;
  } else if (b === 0xcf || b === 0xd3) {
    // u64 / i64: the raw bits are the hash (a negative Python hash is its two's complement).
    if (pos + 9 > end) bail();
    hi = view.getUint32(pos + 1);
    lo = view.getUint32(pos + 5);
    pos += 9;
  } else if (b === 0xc4 || b === 0xc5 || b === 0xc6) {
    const h = readBytesHash();
    lo = Number(h & 0xffffffffn);
    hi = Number(h >> 32n);
  } else {
    const v = readSmallInt();
    lo = v >>> 0;
    hi = v < 0 ? 0xffffffff : 0;
  }
  words[2 * k + LO] = lo;
  words[2 * k + HI] = hi;
}

function readBytesHash(): bigint {
  const b = buf[pos];
  let n: number;
  if (b === 0xc4) {
    n = buf[pos + 1];
    pos += 2;
  } else if (b === 0xc5) {
    n = view.getUint16(pos + 1);
    pos += 3;
  } else {
    if (pos + 5 > end) bail();
    n = view.getUint32(pos + 1);
    pos += 5;
  }
  if (n > MAX_HASH_BYTES || pos + n > end) bail();
  const h = BigInt.asUintN(64, hashBytes(buf.subarray(pos, pos + n)));
  pos += n;
  return h;
}

/** A parent hash: null, or a u64 (bigint). */
function readParent(): bigint | null {
  if (isNil()) return null;
  const b = buf[pos];
  if (b === 0xcf || b === 0xd3) {
    if (pos + 9 > end) bail();
    const v = view.getBigUint64(pos + 1);
    pos += 9;
    return v;
  }
  if (b === 0xc4 || b === 0xc5 || b === 0xc6) return readBytesHash();
  return BigInt.asUintN(64, BigInt(readSmallInt()));
}

/**
 * Every event of a batch gets views into two arrays allocated once per batch (its tokens, its hashes),
 * not arrays of its own: an off-heap typed array costs ~0.5 µs to allocate (and GC bookkeeping), more
 * than decoding the 16 blocks of a typical event. Values are decoded into growable scratch arrays and
 * copied into exact-size arrays when the batch is done (finishBatch).
 */
let tokenScratch = new Uint32Array(1 << 14);
let tokenUsed = 0;
/** Hashes as u32 halves ([2i + LO], [2i + HI]), in the layout of a BigUint64Array. */
let hashScratch = new Uint32Array(1 << 12);
let hashUsed = 0;
/** Where the last readHashes / readTokens put its values (index in hashes / tokens) and how many. */
let spanStart = 0;
/** Per decoded event: [hash start, hash count, token start, token count]. */
let spans = new Int32Array(4 * 64);
const NO_HASHES = new BigUint64Array(0);
const NO_TOKENS = new Uint32Array(0);

function reserveHashes(n: number): number {
  if ((hashUsed + n) * 2 > hashScratch.length) {
    const bigger = new Uint32Array(Math.max(hashScratch.length * 2, (hashUsed + n) * 2));
    bigger.set(hashScratch.subarray(0, hashUsed * 2));
    hashScratch = bigger;
  }
  const at = hashUsed;
  hashUsed += n;
  return at;
}

function reserveTokens(n: number): number {
  if (tokenUsed + n > tokenScratch.length) {
    const bigger = new Uint32Array(Math.max(tokenScratch.length * 2, tokenUsed + n));
    bigger.set(tokenScratch.subarray(0, tokenUsed));
    tokenScratch = bigger;
  }
  const at = tokenUsed;
  tokenUsed += n;
  return at;
}

/** Block hashes into the scratch; returns their count (spanStart: the first one's index). */
function readHashes(limits: DecodeLimits): number {
  const n = arrayHeader();
  if (n < 0 || n > (limits.maxBlocksPerEvent ?? DEFAULT_MAX_BLOCKS_PER_EVENT) || n > end - pos) bail();
  const at = reserveHashes(n);
  const words = hashScratch;
  for (let k = 0; k < n; k++) readHashInto(words, at + k);
  spanStart = at;
  return n;
}

/**
 * Token ids (u32): the loop the whole fast path exists for. A token is a positive fixint or a u8/u16/u32
 * after its type byte; the value is the big-endian u32 after the type byte shifted right by 24/16/0 bits
 * (tables below), which avoids a mispredicted branch per token between u16 and u32 ids (a real
 * vocabulary of 128k–150k ids mixes both): 2.8 ns a token against 5.9 with a branch per type, measured
 * on 512-token arrays. Their count is checked by the caller.
 */
function readTokens(limits: DecodeLimits): number {
  const n = arrayHeader();
  if (n < 0 || n > (limits.maxTokensPerEvent ?? DEFAULT_MAX_TOKENS_PER_EVENT) || n > end - pos) bail();
  const at = reserveTokens(n);
  const out = tokenScratch.subarray(at, at + n);
  const b8 = buf;
  const dv = view;
  const last = end - 5; // a 4-byte read after the type byte stays inside the payload up to here
  let p = pos;
  let k = 0;
  for (; k < n && p <= last; k++) {
    const t = b8[p];
    if (t < 0x80) {
      out[k] = t;
      p++;
      continue;
    }
    const shift = TOKEN_SHIFT[t];
    if (shift > 24) return bail(); // negative, wider than 32 bits, a float: the general decoder decides
    out[k] = dv.getUint32(p + 1) >>> shift;
    p += TOKEN_SIZE[t];
  }
  for (; k < n; k++) {
    // The last few bytes of the payload (a map event may end with its token_ids).
    const t = b8[p];
    if (t < 0x80) {
      out[k] = t;
      p++;
    } else if (t === 0xcc && p + 2 <= end) {
      out[k] = b8[p + 1];
      p += 2;
    } else if (t === 0xcd && p + 3 <= end) {
      out[k] = dv.getUint16(p + 1);
      p += 3;
    } else return bail();
  }
  if (p > end) bail();
  pos = p;
  spanStart = at;
  return n;
}

function readTier(): number {
  if (isNil()) return GPU;
  // The common medium without a string: "GPU" is a 3-byte fixstr.
  if (buf[pos] === 0xa3 && buf[pos + 1] === 0x47 && buf[pos + 2] === 0x50 && buf[pos + 3] === 0x55) {
    pos += 4;
    return GPU;
  }
  const tier = tierOfMedium(readAscii());
  if (tier === undefined) bail();
  return tier;
}

function readGroup(): number {
  if (isNil()) return 0;
  const g = readSmallInt();
  if (g < 0 || g > 0xffff) bail();
  return g;
}

function readOptionalInt(): number | null {
  return isNil() ? null : readSmallInt();
}

function readOptionalAscii(): string | null {
  return isNil() ? null : readAscii();
}

/**
 * extra_keys of a BlockStored: returns extra_keys[0][0] when it is a str (the cache salt, if the chain
 * starts here), null for any other shape; every other part is skipped (and checked) as `skip()` would,
 * at the same depths, so exactly the payloads skip() accepts are accepted (saltOf in vllm-events.ts is
 * the general decoder's reading).
 */
function readExtraKeys(): string | null {
  const at = pos;
  const n = arrayHeader();
  if (n <= 0) {
    pos = at;
    skip();
    return null;
  }
  let salt: string | null = null;
  const first = pos;
  const m = arrayHeader();
  if (m > 0) {
    const s = pos;
    if (strHeader() >= 0) {
      pos = s;
      salt = readAscii(); // non-ASCII bails, as skip() does
    } else {
      pos = s;
      skip(2);
    }
    for (let j = 1; j < m; j++) skip(2);
  } else {
    pos = first;
    skip(1);
  }
  for (let k = 1; k < n; k++) skip(1);
  return salt;
}

/** The tag of an event (a str at `pos`, consumed), or bails. */
function readTag(): 'stored' | 'removed' | 'cleared' {
  const at = pos;
  if (strEquals(TAG_STORED)) return 'stored';
  pos = at;
  if (strEquals(TAG_REMOVED)) return 'removed';
  pos = at;
  if (strEquals(TAG_CLEARED)) return 'cleared';
  return bail();
}

// The spans of the event being read (readEvents records them; finishBatch turns them into views).
let evHashStart = 0;
let evHashCount = 0;
let evTokenStart = 0;
let evTokenCount = 0;

function stored(hashStart: number, hashCount: number, parent: bigint | null, tokenStart: number, tokenCount: number, blockSize: number, loraId: number | null, tier: number, loraName: string | null, group: number, extraSalt: string | null, limits: DecodeLimits): KvEvent {
  if (blockSize !== limits.blockSize || tokenCount !== hashCount * blockSize) bail();
  evHashStart = hashStart;
  evHashCount = hashCount;
  evTokenStart = tokenStart;
  evTokenCount = tokenCount;
  return { kind: 'stored', hashes: NO_HASHES, parent, tokens: NO_TOKENS, tier, loraName, loraId, group, salt: parent === null ? extraSalt : null };
}

function removed(hashStart: number, hashCount: number, tier: number, group: number): KvEvent {
  evHashStart = hashStart;
  evHashCount = hashCount;
  evTokenCount = 0;
  return { kind: 'removed', hashes: NO_HASHES, tier, group };
}

function readEvent(limits: DecodeLimits): KvEvent {
  const arity = arrayHeader();
  if (arity >= 0) return readPositionalEvent(arity, limits);
  const entries = mapHeader();
  if (entries >= 0) return readMapEvent(entries, limits);
  return bail();
}

/** `[tag, fields…]` in vLLM's declaration order; trailing fields may be absent, later ones are ignored. */
function readPositionalEvent(arity: number, limits: DecodeLimits): KvEvent {
  if (arity < 1 || arity > MAX_EVENT_FIELDS) bail();
  const tag = readTag();
  if (tag === 'stored') {
    if (arity < 5) bail();
    const hashCount = readHashes(limits);
    const hashStart = spanStart;
    const parent = readParent();
    const tokenCount = readTokens(limits);
    const tokenStart = spanStart;
    const blockSize = readSmallInt();
    const loraId = arity > 5 ? readOptionalInt() : null;
    const tier = arity > 6 ? readTier() : GPU;
    const loraName = arity > 7 ? readOptionalAscii() : null;
    // extra_keys: only the cache salt of a chain's first block is kept (the router hashes the tokens itself)
    const extraSalt = arity > 8 ? readExtraKeys() : null;
    const group = arity > 9 ? readGroup() : 0;
    for (let k = 10; k < arity; k++) skip();
    return stored(hashStart, hashCount, parent, tokenStart, tokenCount, blockSize, loraId, tier, loraName, group, extraSalt, limits);
  }
  if (tag === 'removed') {
    if (arity < 2) bail();
    const hashCount = readHashes(limits);
    const hashStart = spanStart;
    const tier = arity > 2 ? readTier() : GPU;
    const group = arity > 3 ? readGroup() : 0;
    for (let k = 4; k < arity; k++) skip();
    return removed(hashStart, hashCount, tier, group);
  }
  for (let k = 1; k < arity; k++) skip();
  return { kind: 'cleared' };
}

/**
 * `{type, field: value…}` in any order. Each known field is read where it stands (a key given twice:
 * the last wins, as in the general decoder's Map), unknown ones are skipped, and what the tag needs is
 * checked at the end.
 */
function readMapEvent(entries: number, limits: DecodeLimits): KvEvent {
  let tag: 'stored' | 'removed' | 'cleared' | undefined;
  let hashCount = -1;
  let hashStart = 0;
  let parent: bigint | null = null;
  let tokenCount = -1;
  let tokenStart = 0;
  let blockSize: number | undefined;
  let loraId: number | null = null;
  let tier = GPU;
  let loraName: string | null = null;
  let group = 0;
  let extraSalt: string | null = null;
  for (let e = 0; e < entries; e++) {
    switch (readKey(EVENT_KEYS)) {
      case K_TYPE:
        tag = readTag();
        break;
      case K_HASHES:
        hashCount = readHashes(limits);
        hashStart = spanStart;
        break;
      case K_PARENT:
        parent = readParent();
        break;
      case K_TOKENS:
        tokenCount = readTokens(limits);
        tokenStart = spanStart;
        break;
      case K_BLOCK_SIZE:
        blockSize = readSmallInt();
        break;
      case K_LORA_ID:
        loraId = readOptionalInt();
        break;
      case K_MEDIUM:
        tier = readTier();
        break;
      case K_LORA_NAME:
        loraName = readOptionalAscii();
        break;
      case K_GROUP:
        group = readGroup();
        break;
      case K_EXTRA:
        extraSalt = readExtraKeys();
        break;
      default:
        skip();
    }
  }
  if (tag === 'cleared') return { kind: 'cleared' };
  if (hashCount < 0) return bail();
  if (tag === 'removed') return removed(hashStart, hashCount, tier, group);
  if (tag !== 'stored' || tokenCount < 0 || blockSize === undefined) return bail();
  return stored(hashStart, hashCount, parent, tokenStart, tokenCount, blockSize, loraId, tier, loraName, group, extraSalt, limits);
}

function readEvents(limits: DecodeLimits): { events: KvEvent[]; blocks: number } {
  const n = arrayHeader();
  if (n < 0 || n > (limits.maxEvents ?? DEFAULT_MAX_EVENTS) || n > end - pos) bail();
  const events: KvEvent[] = [];
  let blocks = 0;
  if (spans.length < 4 * n) spans = new Int32Array(Math.max(4 * n, spans.length * 2));
  for (let i = 0; i < n; i++) {
    const ev = readEvent(limits);
    if (ev.kind !== 'cleared') {
      blocks += evHashCount;
      spans[4 * i] = evHashStart;
      spans[4 * i + 1] = evHashCount;
      spans[4 * i + 2] = evTokenStart;
      spans[4 * i + 3] = evTokenCount;
    }
    events.push(ev);
  }
  return { events, blocks };
}

/** Gives the batch's events their views: one array of every hash, one of every token, exact size. */
function finishBatch(events: KvEvent[]): void {
  // Only the events of the final `events` array count (a map may name its events twice: the last wins).
  let hashes = 0;
  let tokens = 0;
  for (let i = 0; i < events.length; i++) {
    const ev = events[i];
    if (ev.kind === 'cleared') continue;
    hashes += spans[4 * i + 1];
    tokens += spans[4 * i + 3];
  }
  const allHashes = new BigUint64Array(hashes);
  const hashWords = new Uint32Array(allHashes.buffer);
  const allTokens = new Uint32Array(tokens);
  let h = 0;
  let t = 0;
  for (let i = 0; i < events.length; i++) {
    const ev = events[i];
    if (ev.kind === 'cleared') continue;
    const hs = spans[4 * i];
    const hn = spans[4 * i + 1];
    hashWords.set(hashScratch.subarray(2 * hs, 2 * (hs + hn)), 2 * h);
    ev.hashes = allHashes.subarray(h, h + hn);
    h += hn;
    if (ev.kind === 'stored') {
      const ts = spans[4 * i + 2];
      const tn = spans[4 * i + 3];
      allTokens.set(tokenScratch.subarray(ts, ts + tn), t);
      ev.tokens = allTokens.subarray(t, t + tn);
      t += tn;
    }
  }
}

/** `[ts, events, rank?, …]` or `{ts, events, data_parallel_rank?, …}`. */
function readBatch(limits: DecodeLimits): KvEventBatch {
  let ts: number | undefined;
  let read: { events: KvEvent[]; blocks: number } | undefined;
  let dpRank: number | null = null;
  const fields = arrayHeader();
  if (fields >= 0) {
    if (fields < 2 || fields > MAX_EVENT_FIELDS) bail();
    ts = readNumber();
    read = readEvents(limits);
    if (fields > 2) dpRank = readRank();
    for (let k = 3; k < fields; k++) skip();
  } else {
    const entries = mapHeader();
    if (entries < 0) bail();
    for (let e = 0; e < entries; e++) {
      const key = readKey(BATCH_KEYS);
      if (key === K_TS) ts = readNumber();
      else if (key === K_EVENTS) read = readEvents(limits);
      else if (key === K_RANK) dpRank = readRank();
      else skip();
    }
    if (ts === undefined || read === undefined) bail();
  }
  finishBatch(read.events);
  return { ts, dpRank, events: read.events, blocks: read.blocks };
}

function readRank(): number | null {
  if (isNil()) return null;
  const r = readSmallInt();
  if (r < 0 || r > 0xffff) bail();
  return r;
}
