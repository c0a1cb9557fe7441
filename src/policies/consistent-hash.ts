/**
 * `consistent-hash`: session or prefix affinity by consistent hashing, with optional bounded loads.
 *
 * Algorithm. Every request has a 64-bit key: the hash of its session key when it has one, else the
 * chained hash of its first `prefixBlocks` prompt blocks (block b's hash covers blocks 0 … b, so one
 * array read gives the key; 1 block is `ctx.affinityKey`, SGLang's `prefix_hash` hashes the first 256
 * tokens, i.e. 16 blocks of 16). The key picks a replica of the request's model with one of four
 * methods (`method`), over the model's eligible replicas (healthy, not drained):
 * - `ring`: a ketama-style ring (Karger et al., STOC 1997), `vnodes` digests of 4 points per replica,
 *   points from XXH64 of the replica id so that removing a replica moves only its own keys;
 * - `jump`: jump consistent hash (Lamping & Veach 2014) over the replicas sorted by id — a stable
 *   order, so every router instance with the same membership agrees. Jump numbers its buckets: adding
 *   or removing the *last* replica in that order moves ~1/n of the keys, removing one in the middle
 *   shifts the buckets after it and moves more (the paper's stated limitation);
 * - `maglev`: Maglev hashing (Eisenbud et al., NSDI 2016 §3.4), M = 65,537 (the paper's size);
 * - `rendezvous`: highest random weight (Thaler & Ravishankar 1998).
 * Tables are built per model in `onFleet` (control path) and only read by `pick` (STYLE 1).
 *
 * Bounded loads (`boundedLoad` = c > 1; 0 turns it off): consistent hashing with bounded loads
 * (Mirrokni, Thorup & Zadimoghaddam, SODA 2018). Loads are the router's in-flight request counts;
 * with m = total in flight + 1 (this request) and n replicas, a replica accepts the request while its
 * load + 1 ≤ ceil(c · m / n); otherwise the request walks to the next replica: clockwise on the ring,
 * the next table entry for Maglev (both through the bounded-load kernels, src/kernels/abi.ts), the next
 * replica in the sorted order for jump, the next-highest score for rendezvous (the key's own ranking,
 * so overflow spreads instead of piling on one neighbour). SGLang's consistent hashing accepts the
 * ring's worker while its load ≤ 1.5 × average, hence c = 1.5 is a sensible setting; 1.25 is the
 * paper's (and Vimeo's HAProxy) choice.
 *
 * The same walk skips replicas that cannot take this particular request (a LoRA its pool lacks, a
 * context too long); the chosen slot becomes a candidate through `ctx.candidate(slot)`.
 *
 * Parameters (defaults): method 'ring', boundedLoad 0 (off), prefixBlocks 1, vnodes 40 (ketama's 160
 * points a replica). Sources: the papers above; SGLang sgl-router `consistent_hashing` and
 * `prefix_hash` policies for the LLM-serving use; Envoy's ring hash and Maglev load balancers for
 * table shapes.
 */
import { DystroError } from '../errors.js';
import { HashRing, Maglev, Rendezvous, jumpHash } from '../hashing/consistent.js';
import { NO_NODE, type KernelBackend } from '../kernels/abi.js';
import { lnPortable } from '../kernels/js/index.js';
import { choiceParam, numberParam } from './registry.js';
import type { FleetSnapshot } from '../fleet/fleet.js';
import type { PickContext, Policy, PolicyFactory } from '../router/types.js';

export const CONSISTENT_HASH_METHODS = ['ring', 'jump', 'maglev', 'rendezvous'] as const;
export type ConsistentHashMethod = (typeof CONSISTENT_HASH_METHODS)[number];

const NAME = 'consistent-hash';
const encoder = new TextEncoder();

/** A load factor so large that every replica is under its cap: the walk then only skips ineligible replicas. */
const UNBOUNDED_C = 2 ** 40;

/** One model's table, immutable once built (STYLE 1); `pick` only reads it and its scratch. */
class ModelTable {
  readonly n: number;
  /** Replica slot of each node id (node ids are positions in the id-sorted list). */
  readonly slots: Int32Array;
  /** Pool index of each node (per-request eligibility is a pool property: LoRA, context length). */
  readonly pools: Int32Array;
  readonly ring?: HashRing;
  readonly maglev?: Maglev;
  readonly rendezvous?: Rendezvous;
  /** Rendezvous node hashes split in 32-bit halves (the walk ranks nodes without bigint arithmetic). */
  readonly hashHi?: Uint32Array;
  readonly hashLo?: Uint32Array;
  // Scratch for the bounded walk (one pick at a time: the router is single-threaded).
  readonly loads: Uint32Array;
  readonly work: Uint32Array;
  readonly shares: Float64Array;
  readonly keys = new BigUint64Array(1);
  readonly out = new Int32Array(1);
  readonly order: Int32Array;
  readonly scoreOf: Float64Array;
  readonly byScoreDesc: (a: number, b: number) => number;

  constructor(
    readonly kernels: KernelBackend,
    readonly method: ConsistentHashMethod,
    readonly signature: string,
    ids: readonly string[],
    slots: readonly number[],
    pools: readonly number[],
    vnodes: number,
  ) {
    this.n = ids.length;
    this.slots = Int32Array.from(slots);
    this.pools = Int32Array.from(pools);
    this.loads = new Uint32Array(this.n);
    this.work = new Uint32Array(this.n);
    this.shares = new Float64Array(this.n);
    this.order = new Int32Array(this.n);
    this.scoreOf = new Float64Array(this.n);
    this.byScoreDesc = (a, b) => this.scoreOf[b] - this.scoreOf[a] || a - b;
    if (method === 'ring') this.ring = new HashRing(kernels, ids, { hash: 'xxh64', vnodes });
    else if (method === 'maglev') this.maglev = new Maglev(kernels, ids);
    else if (method === 'rendezvous') {
      this.rendezvous = new Rendezvous(kernels, ids);
      this.hashHi = new Uint32Array(this.n);
      this.hashLo = new Uint32Array(this.n);
      ids.forEach((id, i) => {
        // The same node hash the Rendezvous table uses (src/hashing/consistent.ts): XXH64(id, seed 0).
        const h = kernels.xxh64(encoder.encode(id), 0n);
        this.hashHi![i] = Number(h >> 32n);
        this.hashLo![i] = Number(h & 0xffffffffn);
      });
    }
  }

  /** The key's home node (NO_NODE only for an empty table, which is never built). */
  home(key: bigint): number {
    switch (this.method) {
      case 'ring':
        return this.ring!.lookup(key);
      case 'maglev':
        return this.maglev!.lookup(key);
      case 'rendezvous':
        return this.rendezvous!.lookup(key);
      default:
        return jumpHash(this.kernels, key, this.n);
    }
  }

  free(): void {
    this.ring?.free();
    this.maglev?.free();
    this.rendezvous?.free();
  }
}

// ---------------------------------------------------------------- rendezvous ranking without bigints

const mulOut = new Uint32Array(2);

/** Low 64 bits of (aHi:aLo) · (bHi:bLo) into mulOut = [hi, lo]; exact, in 16-bit limbs. */
function mul64(aHi: number, aLo: number, bHi: number, bLo: number): void {
  const a0 = aLo & 0xffff;
  const a1 = aLo >>> 16;
  const b0 = bLo & 0xffff;
  const b1 = bLo >>> 16;
  const p00 = a0 * b0;
  const p01 = a0 * b1;
  const p10 = a1 * b0;
  const p11 = a1 * b1;
  const mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
  const lo = (((mid & 0xffff) << 16) | (p00 & 0xffff)) >>> 0;
  // High word of aLo · bLo, then the cross terms (mod 2^32).
  const carry = p11 + Math.floor(p01 / 65536) + Math.floor(p10 / 65536) + Math.floor(mid / 65536);
  mulOut[0] = (carry + Math.imul(aHi, bLo) + Math.imul(aLo, bHi)) >>> 0;
  mulOut[1] = lo;
}

/**
 * The weighted-rendezvous score of src/kernels/abi.ts at weight 1, computed on 32-bit halves:
 * x = SplitMix64 finalizer of (key XOR node hash), u = (2·(x >> 12) + 1) · 2^−53, score = 1 / −ln(u)
 * with the ABI's portable logarithm — bit-identical to the kernels, so the ranking agrees with lookup.
 */
export function rendezvousScore32(keyHi: number, keyLo: number, nodeHi: number, nodeLo: number): number {
  let hi = (keyHi ^ nodeHi) >>> 0;
  let lo = (keyLo ^ nodeLo) >>> 0;
  // z ^= z >> 30; z *= 0xbf58476d1ce4e5b9
  lo = (lo ^ ((lo >>> 30) | (hi << 2))) >>> 0;
  hi = (hi ^ (hi >>> 30)) >>> 0;
  mul64(hi, lo, 0xbf58476d, 0x1ce4e5b9);
  hi = mulOut[0];
  lo = mulOut[1];
  // z ^= z >> 27; z *= 0x94d049bb133111eb
  lo = (lo ^ ((lo >>> 27) | (hi << 5))) >>> 0;
  hi = (hi ^ (hi >>> 27)) >>> 0;
  mul64(hi, lo, 0x94d049bb, 0x133111eb);
  hi = mulOut[0];
  lo = mulOut[1];
  // z ^= z >> 31
  lo = (lo ^ ((lo >>> 31) | (hi << 1))) >>> 0;
  hi = (hi ^ (hi >>> 31)) >>> 0;
  const k = hi * 1048576 + (lo >>> 12); // x >> 12: 52 bits, exact in a double
  const u = (2 * k + 1) * 2 ** -53;
  return 1 / (0 - lnPortable(u));
}

// ---------------------------------------------------------------- the policy

/** Would node j stay within the bounded-load cap with this request added? */
function underCap(ctx: PickContext, t: ModelTable, j: number, cap: number): boolean {
  return ctx.inflight.requests[t.slots[j]] + 1 <= cap;
}

export const consistentHash: PolicyFactory = {
  name: NAME,
  description: 'Ring, jump, Maglev or rendezvous hashing of the session key (else the prompt prefix) over the model’s replicas; optional bounded loads (Mirrokni et al.).',
  defaults: { method: 'ring', boundedLoad: 0, prefixBlocks: 1, vnodes: 40 },
  create(params, env): Policy {
    const method = choiceParam(NAME, params, 'method', CONSISTENT_HASH_METHODS);
    const c = numberParam(NAME, params, 'boundedLoad', 0, 1e6);
    if (c !== 0 && !(c > 1)) {
      throw new DystroError('DYSTRO_ERR_POLICY_PARAMS', `Expected \`boundedLoad\` of policy "${NAME}" to be 0 (off) or a number > 1, got \`${c}\` (number)`, { policy: NAME, key: 'boundedLoad' });
    }
    const prefixBlocks = numberParam(NAME, params, 'prefixBlocks', 1, 1 << 20, true);
    const vnodes = numberParam(NAME, params, 'vnodes', 1, 1 << 12, true);
    const kernels = env.kernels;

    let tables = new Map<string, ModelTable>();
    // Per-pick pool eligibility, stamped by a generation (no clearing between picks).
    let poolGen = new Uint32Array(16);
    let poolOk = new Uint8Array(16);
    let gen = 0;

    const rebuild = (snapshot: FleetSnapshot): void => {
      const byModel = new Map<string, { id: string; slot: number; pool: number }[]>();
      for (const r of snapshot.replicas) {
        if (r.drained || r.health !== 'healthy') continue;
        let list = byModel.get(r.pool.model);
        if (!list) byModel.set(r.pool.model, (list = []));
        list.push({ id: r.id, slot: r.slot, pool: r.pool.index });
      }
      const next = new Map<string, ModelTable>();
      for (const [model, list] of byModel) {
        list.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
        const signature = list.map((r) => `${r.id}\u0000${r.slot}\u0000${r.pool}`).join('\u0001');
        const old = tables.get(model);
        if (old && old.signature === signature) {
          next.set(model, old);
          continue;
        }
        next.set(model, new ModelTable(kernels, method, signature, list.map((r) => r.id), list.map((r) => r.slot), list.map((r) => r.pool), vnodes));
      }
      for (const [model, old] of tables) if (next.get(model) !== old) old.free();
      tables = next;
      if (poolGen.length < snapshot.pools.length) {
        poolGen = new Uint32Array(snapshot.pools.length);
        poolOk = new Uint8Array(snapshot.pools.length);
      }
    };
    rebuild(env.fleet);

    /** Can node j's pool serve this request? Learned once per pool per pick through ctx.candidate. */
    const poolServes = (ctx: PickContext, t: ModelTable, j: number): boolean => {
      const p = t.pools[j];
      if (poolGen[p] !== gen) {
        poolGen[p] = gen;
        poolOk[p] = ctx.candidate(t.slots[j]) >= 0 ? 1 : 0;
      }
      return poolOk[p] === 1;
    };

    /** Least-loaded node that can serve the request (every node over its cap, or the walk found none). */
    const leastLoaded = (ctx: PickContext, t: ModelTable): number => {
      let best = -1;
      let bestLoad = Infinity;
      let ties = 0;
      for (let j = 0; j < t.n; j++) {
        if (!poolServes(ctx, t, j)) continue;
        const load = ctx.inflight.requests[t.slots[j]];
        if (load < bestLoad) {
          bestLoad = load;
          best = j;
          ties = 1;
        } else if (load === bestLoad && ctx.rng.int(++ties) === 0) best = j;
      }
      return best < 0 ? -1 : ctx.candidate(t.slots[best]);
    };

    return {
      name: NAME,
      scoreOrder: 'none',
      onFleet: rebuild,
      pick(ctx) {
        const t = tables.get(ctx.request.model);
        if (!t || t.n === 0) return -1;
        gen = (gen + 1) >>> 0 || 1;
        let key = ctx.affinityKey;
        if (ctx.request.sessionKey === undefined && prefixBlocks > 1 && ctx.promptBlocks > 1) key = ctx.hashes[Math.min(prefixBlocks, ctx.promptBlocks) - 1];
        const home = t.home(key);
        if (home < 0) return -1;

        // Bounded loads: cap = ceil((c · m) · share) with m = in flight + this request, share = 1/n —
        // the kernels' exact expression, so the fast path and the kernel walk agree at the boundary.
        const share = 1 / t.n;
        let total = 0;
        if (c > 0) for (let j = 0; j < t.n; j++) total += ctx.inflight.requests[t.slots[j]];
        const cap = c > 0 ? Math.ceil(c * (total + 1) * share) : Infinity;

        // Fast path: the home replica can take it.
        if (underCap(ctx, t, home, cap) && poolServes(ctx, t, home)) {
          const i = ctx.candidate(t.slots[home]);
          if (i >= 0) return i;
        }

        if (t.method === 'ring' || t.method === 'maglev') {
          // Walk clockwise / along the table through the bounded-load kernel; replicas that cannot
          // serve this request get share 0 (cap 0), so the walk passes them.
          for (let j = 0; j < t.n; j++) {
            t.loads[j] = ctx.inflight.requests[t.slots[j]];
            t.shares[j] = poolServes(ctx, t, j) ? share : 0;
          }
          t.keys[0] = key;
          for (let attempt = 0; attempt < t.n; attempt++) {
            t.work.set(t.loads); // the kernel adds this request's load in place
            if (t.ring) t.ring.assignBounded(t.keys, t.work, c > 0 ? c : UNBOUNDED_C, t.out);
            else t.maglev!.assignBounded(t.keys, t.work, c > 0 ? c : UNBOUNDED_C, t.out);
            const j = t.out[0];
            if (j === NO_NODE) break;
            const i = ctx.candidate(t.slots[j]);
            if (i >= 0) return i;
            t.shares[j] = 0; // ineligible after all: walk past it
          }
          return leastLoaded(ctx, t);
        }

        if (t.method === 'jump') {
          for (let k = 1; k < t.n; k++) {
            const j = (home + k) % t.n;
            if (!underCap(ctx, t, j, cap) || !poolServes(ctx, t, j)) continue;
            const i = ctx.candidate(t.slots[j]);
            if (i >= 0) return i;
          }
          return leastLoaded(ctx, t);
        }

        // Rendezvous: the key's ranking, highest score first (the home is first; skip it).
        const keyHi = Number(key >> 32n);
        const keyLo = Number(key & 0xffffffffn);
        for (let j = 0; j < t.n; j++) {
          t.order[j] = j;
          t.scoreOf[j] = rendezvousScore32(keyHi, keyLo, t.hashHi![j], t.hashLo![j]);
        }
        t.order.sort(t.byScoreDesc);
        for (let k = 0; k < t.n; k++) {
          const j = t.order[k];
          if (j === home || !underCap(ctx, t, j, cap) || !poolServes(ctx, t, j)) continue;
          const i = ctx.candidate(t.slots[j]);
          if (i >= 0) return i;
        }
        return leastLoaded(ctx, t);
      },
    };
  },
};
