/**
 * The reference the KV-event ingest is compared with: plain Maps, no reference counts, no epochs, no
 * sequencing — built from the complete ordered log of what the engines published and the router did.
 * It shares no code with the ingest: router hashes come from xxhash-wasm (an independent XXH64) over
 * the namespace framing and token bytes as DESIGN §3 states them.
 *
 * Engine side, per replica: key (rank, group, engine id) → { router hash, tiers }. A replica holds a
 * router hash on a tier exactly when some key of it does. After each event the model diffs that view
 * and applies each change to its index with the index's documented semantics (kernels/js/prefix-index.ts
 * header): a store sets a tier bit on a live holder (a speculative one becomes precise), or makes a
 * precise holder; a remove clears a bit and drops the holder when no bit is left (a live speculative
 * holder is dropped too); a speculation makes a speculative holder with an expiry unless a precise one
 * is live; a replica wipe drops all its holders; a speculative holder is live while expiry − now > 0.
 *
 * A rank wipe (AllBlocksCleared, a restarted publisher) drops that rank's keys; if the replica then has
 * no key at all it is wiped whole (its speculative holders too), otherwise only the changed tiers go.
 */
import xxhash, { type XXHashAPI } from 'xxhash-wasm';
import type { EventSpec, WireHash } from './vllm-frames.ts';

export interface ModelEntry {
  hash: bigint;
  replica: number;
  tiers: number;
  speculative: boolean;
}

export interface ModelMatch {
  depth: number;
  gpu: number;
  cpu: number;
  disk: number;
}

interface Holder {
  tiers: number;
  /** Expiry (ms) of a speculative holder (tiers 0). */
  expiry: number;
}

interface Key {
  router: bigint;
  tiers: number;
}

let api: XXHashAPI | undefined;
export async function loadModelHasher(): Promise<void> {
  api ??= await xxhash();
}
function h64(bytes: Uint8Array, seed: bigint): bigint {
  if (!api) throw new Error('call loadModelHasher() first');
  return api.h64Raw(bytes, seed);
}

const MEDIUM_TIER: Record<string, number> = { GPU: 0, CPU: 1, DISK: 2 };

export interface ModelNamespace {
  model: string;
  tenant?: string;
}

export class IndexModel {
  readonly index = new Map<bigint, Map<number, Holder>>();
  private readonly keys = new Map<number, Map<string, Key>>();
  orphans = 0;

  constructor(
    readonly blockSize: number,
    readonly ttlMs: number,
    readonly namespaceOf: (replica: number) => ModelNamespace,
  ) {}

  /** The namespace seed: XXH64 seed 0 of [version 1][len u32 LE][model][len][lora][len][tenant]. */
  nsSeed(model: string, lora: string, tenant: string): bigint {
    const enc = new TextEncoder();
    const parts = [model, lora, tenant].map((s) => enc.encode(s));
    const out = new Uint8Array(1 + parts.reduce((n, p) => n + 4 + p.length, 0));
    out[0] = 1;
    let at = 1;
    for (const p of parts) {
      new DataView(out.buffer).setUint32(at, p.length, true);
      out.set(p, at + 4);
      at += 4 + p.length;
    }
    return h64(out, 0n);
  }

  /** Router hashes of a token sequence's full blocks from a seed. */
  chain(tokens: readonly number[], seed: bigint): bigint[] {
    const out: bigint[] = [];
    let h = seed;
    for (let b = 0; (b + 1) * this.blockSize <= tokens.length; b++) {
      const bytes = new Uint8Array(this.blockSize * 4);
      const v = new DataView(bytes.buffer);
      for (let i = 0; i < this.blockSize; i++) v.setUint32(i * 4, tokens[b * this.blockSize + i], true);
      h = h64(bytes, h);
      out.push(h);
    }
    return out;
  }

  static engineId(w: WireHash): bigint {
    if (w instanceof Uint8Array) return h64(w, 0n);
    return BigInt.asUintN(64, BigInt(w));
  }

  private keysOf(replica: number): Map<string, Key> {
    let m = this.keys.get(replica);
    if (!m) this.keys.set(replica, (m = new Map()));
    return m;
  }

  /** Router hash → tiers held, over every key of the replica. */
  private view(replica: number): Map<bigint, number> {
    const v = new Map<bigint, number>();
    for (const k of this.keysOf(replica).values()) v.set(k.router, (v.get(k.router) ?? 0) | k.tiers);
    return v;
  }

  private live(h: Holder, now: number): boolean {
    return h.tiers !== 0 || h.expiry - now > 0;
  }

  private store(replica: number, hash: bigint, tier: number, now: number): void {
    let m = this.index.get(hash);
    if (!m) this.index.set(hash, (m = new Map()));
    const h = m.get(replica);
    if (h && this.live(h, now)) m.set(replica, { tiers: h.tiers | (1 << tier), expiry: 0 });
    else m.set(replica, { tiers: 1 << tier, expiry: 0 });
  }

  private remove(replica: number, hash: bigint, tier: number, now: number): void {
    const m = this.index.get(hash);
    const h = m?.get(replica);
    if (!m || !h) return;
    const left = this.live(h, now) ? h.tiers & ~(1 << tier) : 0;
    if (left === 0) m.delete(replica);
    else m.set(replica, { tiers: left, expiry: 0 });
    if (m.size === 0) this.index.delete(hash);
  }

  private wipeIndex(replica: number): void {
    for (const [hash, m] of this.index) {
      m.delete(replica);
      if (m.size === 0) this.index.delete(hash);
    }
  }

  /** Applies the difference between two views of a replica. */
  private diff(replica: number, before: Map<bigint, number>, after: Map<bigint, number>, now: number): void {
    for (const [r, t] of after) {
      const added = t & ~(before.get(r) ?? 0);
      for (let tier = 0; tier < 3; tier++) if (added & (1 << tier)) this.store(replica, r, tier, now);
    }
    for (const [r, t] of before) {
      const gone = t & ~(after.get(r) ?? 0);
      for (let tier = 0; tier < 3; tier++) if (gone & (1 << tier)) this.remove(replica, r, tier, now);
    }
  }

  /** One published batch of (replica, rank), in the order the router must apply it. */
  batch(replica: number, rank: number, events: readonly EventSpec[], now: number): void {
    for (const e of events) this.event(replica, rank, e, now);
  }

  private event(replica: number, rank: number, e: EventSpec, now: number): void {
    if (e.type === 'AllBlocksCleared') {
      this.wipeRank(replica, rank, now);
      return;
    }
    const keys = this.keysOf(replica);
    const before = this.view(replica);
    const group = e.groupIdx ?? 0;
    const keyOf = (w: WireHash) => `${rank}/${group}/${IndexModel.engineId(w)}`;
    const bit = 1 << MEDIUM_TIER[(e.medium ?? 'GPU').toUpperCase()];
    if (e.type === 'BlockRemoved') {
      for (const w of e.hashes) {
        const k = keys.get(keyOf(w));
        if (!k) continue;
        k.tiers &= ~bit;
        if (k.tiers === 0) keys.delete(keyOf(w));
      }
    } else {
      let seed: bigint;
      if (e.parent === null) {
        const ns = this.namespaceOf(replica);
        const lora = e.loraName ?? (e.loraId === null || e.loraId === undefined ? '' : String(e.loraId));
        seed = this.nsSeed(ns.model, lora, ns.tenant ?? '');
      } else {
        const p = keys.get(keyOf(e.parent));
        if (!p) {
          this.orphans += e.hashes.length;
          return;
        }
        seed = p.router;
      }
      const routers = this.chain(e.tokens, seed);
      e.hashes.forEach((w, i) => {
        const k = keys.get(keyOf(w));
        if (k && k.router === routers[i]) k.tiers |= bit;
        else keys.set(keyOf(w), { router: routers[i], tiers: bit });
      });
    }
    this.diff(replica, before, this.view(replica), now);
  }

  /** A rank's cache is gone (AllBlocksCleared, a restarted publisher). */
  wipeRank(replica: number, rank: number, now: number): void {
    const keys = this.keysOf(replica);
    const before = this.view(replica);
    for (const k of [...keys.keys()]) if (k.startsWith(`${rank}/`)) keys.delete(k);
    if (keys.size === 0) this.wipeIndex(replica);
    else this.diff(replica, before, this.view(replica), now);
  }

  /** A new incarnation of the whole replica. */
  restart(replica: number): void {
    this.keysOf(replica).clear();
    this.wipeIndex(replica);
  }

  speculate(replica: number, hashes: readonly bigint[], now: number): void {
    for (const hash of hashes) {
      let m = this.index.get(hash);
      if (!m) this.index.set(hash, (m = new Map()));
      const h = m.get(replica);
      if (h && h.tiers !== 0) continue; // a precise holder stays precise
      m.set(replica, { tiers: 0, expiry: now + this.ttlMs });
    }
  }

  dump(now: number): ModelEntry[] {
    const out: ModelEntry[] = [];
    for (const [hash, m] of this.index) {
      for (const [replica, h] of m) if (this.live(h, now)) out.push({ hash, replica, tiers: h.tiers, speculative: h.tiers === 0 });
    }
    return out.sort((a, b) => (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : a.replica - b.replica));
  }

  /** Per replica: leading blocks held (live), and how many of those at best on GPU, CPU, disk. */
  match(hashes: readonly bigint[], now: number): Map<number, ModelMatch> {
    const out = new Map<number, ModelMatch>();
    const first = this.index.get(hashes[0]);
    if (!first) return out;
    for (const [replica] of first) {
      const r: ModelMatch = { depth: 0, gpu: 0, cpu: 0, disk: 0 };
      for (const hash of hashes) {
        const h = this.index.get(hash)?.get(replica);
        if (!h || !this.live(h, now)) break;
        r.depth++;
        if (h.tiers & 1) r.gpu++;
        else if (h.tiers & 2) r.cpu++;
        else if (h.tiers & 4) r.disk++;
      }
      if (r.depth > 0) out.set(replica, r);
    }
    return out;
  }
}
