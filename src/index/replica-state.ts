/**
 * What the router knows about one replica's KV cache, built from its decoded vLLM events, and the index
 * records that keep the PrefixIndex in step with it (DESIGN §2, §3, §8). No index, no sockets: the
 * output is records in a RecordBuffer, applied by whoever owns the index.
 *
 * Engine hashes are opaque ids (vLLM's own hash depends on its hash setting and PYTHONHASHSEED), so the
 * router computes its own chained hash from each BlockStored's token ids — the same chain a request's
 * prompt gets (PrefixHasher): block 0 of a chain is seeded with the replica's namespace seed (model,
 * LoRA adapter, tenant — the request's cache salt when the BlockStored carries one, as vLLM reports a
 * `cache_salt` in the first block's extra_keys, else the replica's configured tenant), a later block
 * with its parent's router hash. The map engine hash → router hash
 * (and the tiers holding the block) is what lets BlockRemoved, which carries engine hashes only, find
 * the router's entry.
 *
 * Keys. One table per replica, keyed by three u32 words: the engine hash's low and high halves and
 * `rank << 16 | group` (data-parallel rank, KV cache group). Ranks are separate engines with separate caches; groups are
 * the KV cache groups of hybrid models, which store the same token blocks under one engine hash.
 *
 * Reference counts. Several keys can name the same router hash (two ranks holding the same prefix, two
 * groups, an engine that hashes extra keys the router does not see). The index holds one entry per
 * (router hash, replica) with a tier mask, so a tier is stored when its first key arrives and removed
 * when its last key goes: counts per tier per router hash decide when a STORE or REMOVE is emitted.
 *
 * Wiping one rank (AllBlocksCleared, a restarted publisher, a lost stream) drops that rank's keys; when
 * nothing of the replica is left, one CLEAR record wipes it in O(1) (speculative entries included, as
 * the cache they guessed at is gone), otherwise per-key REMOVE records keep the other ranks' blocks.
 *
 * Completeness. A rank is complete while its keys mirror its engine's cache exactly: since seq 0, an
 * AllBlocksCleared or a replay from the beginning, with nothing lost. A BlockStored whose parent is
 * unknown in a complete rank means events were lost: the outcome asks for a resync (the caller wipes
 * and replays from seq 0). In an incomplete rank (joined late, a hole in the stream, keys evicted at the
 * cap) such orphans are expected: their blocks cannot be hashed without the prefix's tokens, so they
 * are counted, not indexed.
 *
 * Memory. At most `maxEntries` keys per replica (default 262,144). The maps are open-addressing tables on
 * typed arrays (word-table.ts), not `Map<bigint, …>`: a key costs 41 bytes in the key table and its
 * side arrays plus at most 40 in the reference counts (one per distinct router hash), and the tables
 * double, so between 81 and 162 bytes a key — at most ~42 MB per replica at the default cap. The Map
 * version cost about 170 bytes a key and a microsecond a block in bigint keys and entry objects. At the
 * cap the oldest key (by insertion or last store) is evicted: its index entry is removed with it, so the
 * index never credits a block the router can no longer remove, and the rank becomes incomplete.
 */
import type { PrefixHasher } from '../hashing/prefix.js';
import { OP_CLEAR, OP_REMOVE, OP_STORE, RecordBuffer } from './records.js';
import { WordTable } from './word-table.js';
import type { KvEvent, KvEventBatch } from './vllm-events.js';

export const DEFAULT_MAX_ENTRIES_PER_REPLICA = 262_144;

/** Most tenant seeds cached per LoRA adapter. */
const MAX_SEEDS_PER_LORA = 100_000;

export interface ReplicaNamespace {
  model: string;
  /** Tenant salt shared by every request this replica serves for the router (absent and "" are equal). */
  tenant?: string;
}

export interface ReplicaStateOptions {
  /** The index's replica slot. */
  replica: number;
  hasher: PrefixHasher;
  namespace: ReplicaNamespace;
  /** Most keys kept for this replica (default 262,144, about 45 MB at worst). */
  maxEntries?: number;
  /**
   * Names a LoRA adapter from the deprecated `lora_id` when an event has no `lora_name` (older vLLM).
   * Without it, or when it returns undefined, the id's decimal string is the adapter name.
   */
  loraNameOfId?: (id: number) => string | undefined;
}

/** Counts of what one batch did (summed into metrics by the caller). */
export interface ApplyOutcome {
  events: number;
  storedBlocks: number;
  removedBlocks: number;
  clears: number;
  /** Blocks of BlockStored events whose parent is unknown (not indexed). */
  orphanBlocks: number;
  /** BlockRemoved hashes (or tiers) the map did not hold. */
  unknownRemoved: number;
  /** Keys evicted at the cap. */
  capEvictions: number;
  /** An orphan appeared in a complete rank: events were lost, replay from seq 0. */
  resync: boolean;
}

export function emptyOutcome(): ApplyOutcome {
  return { events: 0, storedBlocks: 0, removedBlocks: 0, clears: 0, orphanBlocks: 0, unknownRemoved: 0, capEvictions: 0, resync: false };
}

const U64 = (1n << 64n) - 1n;

/** Typed-array views read the two u32 halves of a u64 at [2i + LO] and [2i + HI]. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const LO = LITTLE_ENDIAN ? 0 : 1;
const HI = LITTLE_ENDIAN ? 1 : 0;
const NONE = -1;
// Module-local copies: a re-exported binding can compile to a getter call per read in a hot loop.
const STORE = OP_STORE;
const REMOVE = OP_REMOVE;
const CLEAR = OP_CLEAR;

/** The third key word: data-parallel rank and KV cache group (both ≤ 0xffff, checked by the decoder). */
function rankGroup(rank: number, group: number): number {
  return ((rank << 16) | group) >>> 0;
}

function wordsOf(a: BigUint64Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length * 2);
}

export class ReplicaState {
  readonly replica: number;
  readonly maxEntries: number;
  private readonly hasher: PrefixHasher;
  private namespace: ReplicaNamespace;
  private readonly loraNameOfId?: (id: number) => string | undefined;
  /** (engine hash lo, hi, rank << 16 | group) → key id; per key id the values below. */
  private readonly keys = new WordTable();
  private routerLo = new Uint32Array(this.keys.idCapacity);
  private routerHi = new Uint32Array(this.keys.idCapacity);
  /** Tier bits: 1 GPU, 2 CPU, 4 disk. */
  private tiers = new Uint8Array(this.keys.idCapacity);
  /** Eviction order (oldest first): a doubly linked list over key ids, by insertion or last store. */
  private prev = new Int32Array(this.keys.idCapacity);
  private next = new Int32Array(this.keys.idCapacity);
  private head = NONE;
  private tail = NONE;
  /** (router hash lo, hi, 0) → ref id; per ref id and tier, the keys holding it on that tier. */
  private readonly refs = new WordTable();
  private refCounts = new Int32Array(this.refs.idCapacity * 4);
  /** Keys per rank (to know when a rank wipe empties the replica). */
  private readonly rankKeys = new Map<number, number>();
  /** Ranks known to be incomplete (absent = complete). */
  private readonly incomplete = new Set<number>();
  /** Namespace seeds by LoRA adapter, then tenant. */
  private readonly seeds = new Map<string, Map<string, bigint>>();
  private scratch = new BigUint64Array(64);
  private scratchWords = wordsOf(this.scratch);

  constructor(options: ReplicaStateOptions) {
    this.replica = options.replica;
    this.hasher = options.hasher;
    this.namespace = options.namespace;
    this.maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES_PER_REPLICA;
    this.loraNameOfId = options.loraNameOfId;
  }

  /** Keys held (all ranks). */
  get size(): number {
    return this.keys.size;
  }

  isComplete(rank: number): boolean {
    return !this.incomplete.has(rank);
  }

  /** The stream lost events for this rank (a rejected batch, an unrecoverable gap). */
  markIncomplete(rank: number): void {
    this.incomplete.add(rank);
  }

  /** A new namespace invalidates every chain: the caller wipes (restart) when it changes one. */
  setNamespace(ns: ReplicaNamespace): void {
    this.namespace = ns;
    this.seeds.clear();
  }

  /** The router hash a key maps to (tests and debugging). */
  routerHashOf(rank: number, group: number, engineHash: bigint): bigint | undefined {
    const id = this.keys.find(Number(engineHash & 0xffffffffn), Number((engineHash >> 32n) & 0xffffffffn), rankGroup(rank, group));
    return id < 0 ? undefined : (BigInt(this.routerHi[id]) << 32n) | BigInt(this.routerLo[id]);
  }

  /** Applies a decoded batch of `rank`, appending index records to `out`. */
  applyBatch(batch: KvEventBatch, rank: number, out: RecordBuffer, outcome: ApplyOutcome = emptyOutcome()): ApplyOutcome {
    for (const ev of batch.events) this.applyEvent(ev, rank, out, outcome);
    return outcome;
  }

  applyEvent(ev: KvEvent, rank: number, out: RecordBuffer, outcome: ApplyOutcome): void {
    outcome.events++;
    if (ev.kind === 'cleared') {
      // The engine's cache is empty now: whatever we missed before no longer matters.
      this.wipeRank(rank, out, true);
      outcome.clears++;
      return;
    }
    const rg = rankGroup(rank, ev.group);
    const keys = this.keys;
    if (ev.kind === 'removed') {
      const bit = 1 << ev.tier;
      const hw = wordsOf(ev.hashes);
      for (let i = 0; i < ev.hashes.length; i++) {
        const id = keys.find(hw[2 * i + LO], hw[2 * i + HI], rg);
        if (id < 0 || (this.tiers[id] & bit) === 0) {
          outcome.unknownRemoved++;
          continue;
        }
        this.tiers[id] &= ~bit;
        this.unref(this.routerLo[id], this.routerHi[id], ev.tier, out);
        if (this.tiers[id] === 0) this.deleteKey(id);
        outcome.removedBlocks++;
      }
      return;
    }
    // BlockStored
    const n = ev.hashes.length;
    if (n === 0) return;
    let seed: bigint;
    if (ev.parent === null) {
      seed = this.seedOf(ev.loraName, ev.loraId, ev.salt ?? null);
    } else {
      const parent = keys.find(Number(ev.parent & 0xffffffffn), Number((ev.parent >> 32n) & 0xffffffffn), rg);
      if (parent < 0) {
        outcome.orphanBlocks += n;
        if (!this.incomplete.has(rank)) outcome.resync = true;
        return;
      }
      seed = (BigInt(this.routerHi[parent]) << 32n) | BigInt(this.routerLo[parent]);
    }
    if (this.scratch.length < n) {
      this.scratch = new BigUint64Array(Math.max(n, this.scratch.length * 2));
      this.scratchWords = wordsOf(this.scratch);
    }
    this.hasher.hashTokens(ev.tokens, seed, this.scratch);
    const rw = this.scratchWords;
    const hw = wordsOf(ev.hashes);
    const tier = ev.tier;
    const bit = 1 << tier;
    // New keys of this rank, added to rankKeys once per event (a Map update per block showed up), and
    // before anything that removes keys and so reads the count.
    let added = 0;
    for (let i = 0; i < n; i++) {
      const lo = hw[2 * i + LO];
      const hi = hw[2 * i + HI];
      const rlo = rw[2 * i + LO];
      const rhi = rw[2 * i + HI];
      let id = keys.find(lo, hi, rg);
      if (id >= 0 && this.routerLo[id] === rlo && this.routerHi[id] === rhi) {
        if ((this.tiers[id] & bit) === 0) {
          this.tiers[id] |= bit;
          this.ref(rlo, rhi, tier);
        }
        // A store counts as a use: refresh the key's place in the eviction order.
        this.touch(id);
      } else {
        // Absent, or the engine reused the id for other content: the old mapping goes first.
        if (id >= 0 || keys.size >= this.maxEntries) {
          if (added > 0) this.countKeys(rank, added);
          added = 0;
          if (id >= 0) this.dropKey(id, out);
          if (keys.size >= this.maxEntries) outcome.capEvictions += this.evictOldest(out);
        }
        id = keys.insert(lo, hi, rg);
        if (keys.idCapacity > this.tiers.length) this.growKeys();
        this.routerLo[id] = rlo;
        this.routerHi[id] = rhi;
        this.tiers[id] = bit;
        this.append(id);
        added++;
        this.ref(rlo, rhi, tier);
      }
      // Always emitted: a store of a block the index already holds refreshes its LRU stamp there too.
      out.pushWords(STORE, tier, this.replica, rlo, rhi);
    }
    if (added > 0) this.countKeys(rank, added);
    outcome.storedBlocks += n;
  }

  private countKeys(rank: number, added: number): void {
    this.rankKeys.set(rank, (this.rankKeys.get(rank) ?? 0) + added);
  }

  /**
   * Forgets everything `rank` holds. `complete` says whether the events that follow describe its cache
   * from empty (AllBlocksCleared, seq 0, a replay from the beginning) or only from some point on.
   */
  wipeRank(rank: number, out: RecordBuffer, complete: boolean): void {
    const mine = this.rankKeys.get(rank) ?? 0;
    if (mine === this.keys.size) {
      this.wipeAll(out);
    } else if (mine > 0) {
      const k2 = this.keys.k2;
      for (let id = this.head; id !== NONE; ) {
        const following = this.next[id];
        if (k2[id] >>> 16 === rank) this.dropKey(id, out);
        id = following;
      }
    }
    if (complete) this.incomplete.delete(rank);
    else this.incomplete.add(rank);
  }

  /** Forgets everything (a new incarnation of the replica): one CLEAR record. Every rank becomes complete. */
  wipe(out: RecordBuffer): void {
    this.wipeAll(out);
    this.incomplete.clear();
  }

  private wipeAll(out: RecordBuffer): void {
    this.keys.clear();
    this.refs.clear();
    this.head = this.tail = NONE;
    this.rankKeys.clear();
    out.pushWords(CLEAR, 0, this.replica, 0, 0);
  }

  /** The seed of a chain's block 0: the event's salt is its tenant, the configured tenant when it has none. */
  private seedOf(loraName: string | null, loraId: number | null, salt: string | null): bigint {
    const lora = loraName ?? (loraId === null ? '' : (this.loraNameOfId?.(loraId) ?? String(loraId)));
    const tenant = salt ?? this.namespace.tenant ?? '';
    let byTenant = this.seeds.get(lora);
    if (byTenant === undefined) this.seeds.set(lora, (byTenant = new Map()));
    let s = byTenant.get(tenant);
    if (s === undefined) {
      s = this.hasher.namespaceSeed({ model: this.namespace.model, lora, tenant }) & U64;
      // Salts come from requests: the cache stays bounded (past the cap a seed is computed each time).
      if (byTenant.size < MAX_SEEDS_PER_LORA) byTenant.set(tenant, s);
    }
    return s;
  }

  private ref(lo: number, hi: number, tier: number): void {
    let id = this.refs.find(lo, hi, 0);
    if (id < 0) {
      id = this.refs.insert(lo, hi, 0);
      if (this.refs.idCapacity * 4 > this.refCounts.length) {
        const bigger = new Int32Array(this.refs.idCapacity * 4);
        bigger.set(this.refCounts);
        this.refCounts = bigger;
      }
      this.refCounts.fill(0, id * 4, id * 4 + 4);
    }
    this.refCounts[id * 4 + tier]++;
  }

  private unref(lo: number, hi: number, tier: number, out: RecordBuffer): void {
    const id = this.refs.find(lo, hi, 0);
    if (id >= 0) {
      const c = this.refCounts;
      const at = id * 4;
      if (--c[at + tier] > 0) return;
      c[at + tier] = 0;
      if (c[at] === 0 && c[at + 1] === 0 && c[at + 2] === 0) this.refs.remove(id);
    }
    out.pushWords(REMOVE, tier, this.replica, lo, hi);
  }

  /** Removes a key and every tier it held. */
  private dropKey(id: number, out: RecordBuffer): void {
    const t = this.tiers[id];
    for (let tier = 0; tier < 3; tier++) if ((t & (1 << tier)) !== 0) this.unref(this.routerLo[id], this.routerHi[id], tier, out);
    this.deleteKey(id);
  }

  private deleteKey(id: number): void {
    const rank = this.keys.k2[id] >>> 16;
    this.unlink(id);
    this.keys.remove(id);
    const c = (this.rankKeys.get(rank) ?? 1) - 1;
    if (c > 0) this.rankKeys.set(rank, c);
    else this.rankKeys.delete(rank);
  }

  /** Evicts the oldest key. Returns 1 (0 when empty). */
  private evictOldest(out: RecordBuffer): number {
    const id = this.head;
    if (id === NONE) return 0;
    const rank = this.keys.k2[id] >>> 16;
    this.dropKey(id, out);
    this.incomplete.add(rank);
    return 1;
  }

  private append(id: number): void {
    this.prev[id] = this.tail;
    this.next[id] = NONE;
    if (this.tail === NONE) this.head = id;
    else this.next[this.tail] = id;
    this.tail = id;
  }

  private unlink(id: number): void {
    const p = this.prev[id];
    const n = this.next[id];
    if (p === NONE) this.head = n;
    else this.next[p] = n;
    if (n === NONE) this.tail = p;
    else this.prev[n] = p;
  }

  private touch(id: number): void {
    if (id === this.tail) return;
    this.unlink(id);
    this.append(id);
  }

  private growKeys(): void {
    const n = this.keys.idCapacity;
    const grow = <T extends Uint32Array | Int32Array | Uint8Array>(a: T, make: (n: number) => T): T => {
      const b = make(n);
      b.set(a);
      return b;
    };
    this.routerLo = grow(this.routerLo, (k) => new Uint32Array(k));
    this.routerHi = grow(this.routerHi, (k) => new Uint32Array(k));
    this.tiers = grow(this.tiers, (k) => new Uint8Array(k));
    this.prev = grow(this.prev, (k) => new Int32Array(k));
    this.next = grow(this.next, (k) => new Int32Array(k));
  }
}
