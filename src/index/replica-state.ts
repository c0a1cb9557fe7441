/**
 * What the router knows about one replica's KV cache, built from its decoded vLLM events, and the index
 * records that keep the PrefixIndex in step with it (DESIGN §2, §3, §8). No index, no sockets: the
 * output is records in a RecordBuffer, applied by whoever owns the index.
 *
 * Engine hashes are opaque ids (vLLM's own hash depends on its hash setting and PYTHONHASHSEED), so the
 * router computes its own chained hash from each BlockStored's token ids — the same chain a request's
 * prompt gets (PrefixHasher): block 0 of a chain is seeded with the replica's namespace seed (model,
 * LoRA adapter, tenant), a later block with its parent's router hash. The map engine hash → router hash
 * (and the tiers holding the block) is what lets BlockRemoved, which carries engine hashes only, find
 * the router's entry.
 *
 * Keys. One map per replica, keyed by (data-parallel rank, KV cache group, engine hash) packed into one
 * bigint: `hash | group << 64 | rank << 96`. Ranks are separate engines with separate caches; groups are
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
 * Memory. At most `maxEntries` keys per replica (default 262,144). A key costs about 170 bytes of V8
 * heap (Map slot, two bigints, the entry object, its share of the reference counts; measured with 200k
 * keys), so the default cap is about 45 MB per replica at worst. At the cap the oldest key (by insertion
 * or last store) is evicted: its index entry is removed with it, so the index never credits a block the
 * router can no longer remove, and the rank becomes incomplete.
 */
import type { PrefixHasher } from '../hashing/prefix.js';
import { OP_CLEAR, OP_REMOVE, OP_STORE, RecordBuffer } from './records.js';
import type { KvEvent, KvEventBatch } from './vllm-events.js';

export const DEFAULT_MAX_ENTRIES_PER_REPLICA = 262_144;

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

interface Entry {
  router: bigint;
  /** Tier bits: 1 GPU, 2 CPU, 4 disk. */
  tiers: number;
}

const U64 = (1n << 64n) - 1n;

function keyOf(rank: number, group: number, hash: bigint): bigint {
  return hash | (BigInt(group) << 64n) | (BigInt(rank) << 96n);
}

function rankOfKey(key: bigint): number {
  return Number(key >> 96n);
}

export class ReplicaState {
  readonly replica: number;
  readonly maxEntries: number;
  private readonly hasher: PrefixHasher;
  private namespace: ReplicaNamespace;
  private readonly loraNameOfId?: (id: number) => string | undefined;
  private readonly entries = new Map<bigint, Entry>();
  /** Per tier: router hash → keys holding it on that tier. */
  private readonly refs: Map<bigint, number>[] = [new Map(), new Map(), new Map()];
  /** Keys per rank (to know when a rank wipe empties the replica). */
  private readonly rankKeys = new Map<number, number>();
  /** Ranks known to be incomplete (absent = complete). */
  private readonly incomplete = new Set<number>();
  private readonly seeds = new Map<string, bigint>();
  private scratch = new BigUint64Array(64);

  constructor(options: ReplicaStateOptions) {
    this.replica = options.replica;
    this.hasher = options.hasher;
    this.namespace = options.namespace;
    this.maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES_PER_REPLICA;
    this.loraNameOfId = options.loraNameOfId;
  }

  /** Keys held (all ranks). */
  get size(): number {
    return this.entries.size;
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
    return this.entries.get(keyOf(rank, group, engineHash))?.router;
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
    if (ev.kind === 'removed') {
      const bit = 1 << ev.tier;
      for (let i = 0; i < ev.hashes.length; i++) {
        const key = keyOf(rank, ev.group, ev.hashes[i]);
        const e = this.entries.get(key);
        if (!e || (e.tiers & bit) === 0) {
          outcome.unknownRemoved++;
          continue;
        }
        e.tiers &= ~bit;
        this.unref(e.router, ev.tier, out);
        if (e.tiers === 0) this.deleteKey(key);
        outcome.removedBlocks++;
      }
      return;
    }
    // BlockStored
    const n = ev.hashes.length;
    if (n === 0) return;
    let seed: bigint;
    if (ev.parent === null) {
      seed = this.seedOf(ev.loraName, ev.loraId);
    } else {
      const parent = this.entries.get(keyOf(rank, ev.group, ev.parent));
      if (!parent) {
        outcome.orphanBlocks += n;
        if (!this.incomplete.has(rank)) outcome.resync = true;
        return;
      }
      seed = parent.router;
    }
    if (this.scratch.length < n) this.scratch = new BigUint64Array(Math.max(n, this.scratch.length * 2));
    const routers = this.hasher.hashTokens(ev.tokens, seed, this.scratch);
    const bit = 1 << ev.tier;
    for (let i = 0; i < n; i++) {
      const key = keyOf(rank, ev.group, ev.hashes[i]);
      const r = routers[i];
      const e = this.entries.get(key);
      if (e && e.router === r) {
        if ((e.tiers & bit) === 0) {
          e.tiers |= bit;
          this.ref(r, ev.tier);
        }
        // A store counts as a use: refresh the key's place in the eviction order.
        this.entries.delete(key);
        this.entries.set(key, e);
      } else {
        // Absent, or the engine reused the id for other content: the old mapping goes first.
        if (e) this.dropKey(key, e, out);
        if (this.entries.size >= this.maxEntries) outcome.capEvictions += this.evictOldest(out);
        this.entries.set(key, { router: r, tiers: bit });
        this.rankKeys.set(rank, (this.rankKeys.get(rank) ?? 0) + 1);
        this.ref(r, ev.tier);
      }
      // Always emitted: a store of a block the index already holds refreshes its LRU stamp there too.
      out.push(OP_STORE, ev.tier, this.replica, r);
      outcome.storedBlocks++;
    }
  }

  /**
   * Forgets everything `rank` holds. `complete` says whether the events that follow describe its cache
   * from empty (AllBlocksCleared, seq 0, a replay from the beginning) or only from some point on.
   */
  wipeRank(rank: number, out: RecordBuffer, complete: boolean): void {
    const mine = this.rankKeys.get(rank) ?? 0;
    if (mine === this.entries.size) {
      this.wipeAll(out);
    } else if (mine > 0) {
      for (const [key, e] of this.entries) if (rankOfKey(key) === rank) this.dropKey(key, e, out);
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
    this.entries.clear();
    for (const m of this.refs) m.clear();
    this.rankKeys.clear();
    out.push(OP_CLEAR, 0, this.replica, 0n);
  }

  private seedOf(loraName: string | null, loraId: number | null): bigint {
    const lora = loraName ?? (loraId === null ? '' : (this.loraNameOfId?.(loraId) ?? String(loraId)));
    let s = this.seeds.get(lora);
    if (s === undefined) {
      s = this.hasher.namespaceSeed({ model: this.namespace.model, lora, tenant: this.namespace.tenant ?? '' }) & U64;
      this.seeds.set(lora, s);
    }
    return s;
  }

  private ref(router: bigint, tier: number): void {
    const m = this.refs[tier];
    m.set(router, (m.get(router) ?? 0) + 1);
  }

  private unref(router: bigint, tier: number, out: RecordBuffer): void {
    const m = this.refs[tier];
    const c = (m.get(router) ?? 0) - 1;
    if (c > 0) {
      m.set(router, c);
      return;
    }
    m.delete(router);
    out.push(OP_REMOVE, tier, this.replica, router);
  }

  /** Removes a key and every tier it held. */
  private dropKey(key: bigint, e: Entry, out: RecordBuffer): void {
    for (let tier = 0; tier < 3; tier++) if ((e.tiers & (1 << tier)) !== 0) this.unref(e.router, tier, out);
    this.deleteKey(key);
  }

  private deleteKey(key: bigint): void {
    this.entries.delete(key);
    const rank = rankOfKey(key);
    const c = (this.rankKeys.get(rank) ?? 1) - 1;
    if (c > 0) this.rankKeys.set(rank, c);
    else this.rankKeys.delete(rank);
  }

  /** Evicts the oldest key (Map order = insertion or last store). Returns 1. */
  private evictOldest(out: RecordBuffer): number {
    const first = this.entries.entries().next();
    if (first.done) return 0;
    const [key, e] = first.value;
    this.dropKey(key, e, out);
    this.incomplete.add(rankOfKey(key));
    return 1;
  }
}
