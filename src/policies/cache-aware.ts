/**
 * `cache-aware`: SGLang router's `cache_aware` policy (sgl-project/sglang, sgl-router
 * `src/policies/cache_aware.rs` and `tree.rs`), with the defaults users get from its CLI (DESIGN §9).
 *
 * Algorithm, per request, over every eligible replica of the model (SGLang looks at all workers):
 * 1. load = requests in flight counted by this router (`ctx.inflight.requests`; SGLang's worker
 *    `load()` counter, incremented at dispatch and decremented at completion — engine reports are
 *    not used, so NaN or stale metrics cannot sway it).
 * 2. imbalanced = (max_load − min_load) > balanceAbsThreshold AND max_load > balanceRelThreshold ×
 *    min_load → the min-load worker (the prompt is still inserted under it).
 * 3. else match_rate = matched / prompt length in an approximate tree of the prompts each worker was
 *    sent; match_rate > cacheThreshold → the worker owning the deepest match; else the min-load worker
 *    (older versions chose the smallest tree, which caused a "death spiral"; DESIGN §9).
 * 4. The prompt is inserted under the chosen worker (`onRouted`); least recently used entries go first.
 * Min-load ties break by (load, processed count, slot) as SGLang does (processed = requests ever routed
 * to the replica, `ctx.inflight.processed`), so ties rotate rather than pin the first replica; equally
 * deep matches break the same way (SGLang returns whichever tenant its tree visits first).
 *
 * The approximate tree. SGLang keeps a radix tree of request *characters* per model. Here it is a
 * decision-only PrefixIndex per model (src/index/prefix-index.ts, same kernels as the router's), fed
 * only from this policy's own decisions with the prompt's block hashes: a block of `blockSize` tokens
 * (bytes for text prompts) stands in for SGLang's characters, so match_rate = matched blocks / prompt
 * blocks and a trailing partial block never counts. Entries are speculative with a TTL of ~24.8 days
 * (the kernel's longest: SGLang entries never expire by time), so only the budget evicts. Budget:
 * `maxTreeSize` characters (2^26, SGLang's default, a budget shared by all workers of a model) at 4
 * characters a token (the convention llm-d uses for its approximate index: a 16-token block ≈ 64
 * characters) = maxTreeSize / (4 · blockSize) (block, worker) entries — 1,048,576 at 16-token blocks.
 * SGLang trims down to the budget every `eviction_interval_secs` (60 s) by least-recently-used leaves;
 * the index enforces the same budget on every insert by sampled LRU eviction (oldest insertion first),
 * so it never overshoots between sweeps and there is no interval to set.
 *
 * Parameters (defaults): cacheThreshold 0.3, balanceAbsThreshold 64, balanceRelThreshold 1.5,
 * maxTreeSize 2^26 (characters). A removed or restarted replica's entries are wiped (SGLang removes
 * the tenant when a worker leaves).
 */
import { numberParam } from './registry.js';
import { PrefixIndex, MatchResult } from '../index/prefix-index.js';
import { OP_SPECULATE, RECORD_WORDS } from '../index/records.js';
import type { Clock } from '../clock.js';
import type { FleetSnapshot } from '../fleet/fleet.js';
import type { KernelBackend } from '../kernels/abi.js';
import type { PickContext, Policy, PolicyFactory } from '../router/types.js';

const NAME = 'cache-aware';

/** Characters a token stands for when converting SGLang's character budget to blocks (llm-d: 16 tokens ≈ 64 characters). */
export const CHARS_PER_TOKEN = 4;
/** The longest TTL the index kernel's wrapping u32 millisecond stamps allow (2^31 − 1 ms ≈ 24.8 days). */
export const LONG_TTL_MS = 2 ** 31 - 1;
/** Replica slots the per-model index starts with (grown, losing its contents, if the fleet uses higher slots). */
const MIN_REPLICA_CAPACITY = 4096;

/** The policy, plus read access to its per-model trees (tests, debugging; control path). */
export interface CacheAwarePolicy extends Policy {
  /** The approximate tree (a decision-only PrefixIndex) of a model, keyed by replica slot. */
  tree(model: string): PrefixIndex | undefined;
  /** (block, worker) entries the budget allows per model. */
  readonly maxEntries: number;
}

interface ModelTree {
  index: PrefixIndex;
  match: MatchResult;
}

export const cacheAware: PolicyFactory = {
  name: NAME,
  description: 'SGLang cache_aware: min-load when both balance thresholds trip, else the deepest prefix match in an approximate per-model tree of routed prompts when it covers more than cacheThreshold of the prompt, else min-load.',
  defaults: { cacheThreshold: 0.3, balanceAbsThreshold: 64, balanceRelThreshold: 1.5, maxTreeSize: 2 ** 26 },
  create(params, env): CacheAwarePolicy {
    const cacheThreshold = numberParam(NAME, params, 'cacheThreshold', 0, 1);
    const absThreshold = numberParam(NAME, params, 'balanceAbsThreshold', 0, 1e9);
    const relThreshold = numberParam(NAME, params, 'balanceRelThreshold', 0, 1e9);
    const maxTreeSize = numberParam(NAME, params, 'maxTreeSize', 1, 2 ** 40, true);
    const kernels: KernelBackend = env.kernels;
    const maxEntries = Math.max(1, Math.min(2 ** 31, Math.floor(maxTreeSize / (CHARS_PER_TOKEN * env.blockSize))));

    // The index reads time through this clock; the policy sets it from ctx.nowMs (the router's clock).
    let nowMs = 0;
    const clock: Clock = { nowMs: () => nowMs };
    let replicaCapacity = MIN_REPLICA_CAPACITY;
    const trees = new Map<string, ModelTree>();
    /** Who occupied each slot at the last fleet change (id and incarnation), to wipe replaced ones. */
    const slotId: (string | undefined)[] = [];
    const slotIncarnation: number[] = [];
    const slotModel: (string | undefined)[] = [];
    let records = new Uint32Array(RECORD_WORDS * 256);

    const newTree = (): ModelTree => {
      const index = new PrefixIndex(kernels, { maxEntries, replicaCapacity, speculativeTtlMs: LONG_TTL_MS, clock });
      return { index, match: index.newMatchResult() };
    };

    const onFleet = (snapshot: FleetSnapshot): void => {
      let maxSlot = -1;
      for (const r of snapshot.replicas) maxSlot = Math.max(maxSlot, r.slot);
      if (maxSlot >= replicaCapacity) {
        // Rare (fleets beyond 4,096 slots): a bigger index, starting empty like a new SGLang router.
        while (replicaCapacity <= maxSlot) replicaCapacity *= 2;
        for (const t of trees.values()) t.index.free();
        trees.clear();
      }
      for (const pool of snapshot.pools) if (!trees.has(pool.model)) trees.set(pool.model, newTree());
      // A slot whose replica left, restarted or changed model: its entries describe a cache that is gone.
      const seen = Math.max(slotId.length, maxSlot + 1);
      for (let slot = 0; slot < seen; slot++) {
        const r = snapshot.bySlot[slot];
        const before = slotId[slot];
        if (before !== undefined && (!r || r.id !== before || r.incarnation !== slotIncarnation[slot] || r.pool.model !== slotModel[slot])) {
          const t = trees.get(slotModel[slot]!);
          if (t && slot < replicaCapacity) t.index.clear(slot);
        }
        slotId[slot] = r?.id;
        slotIncarnation[slot] = r?.incarnation ?? 0;
        slotModel[slot] = r?.pool.model;
      }
    };
    onFleet(env.fleet);

    /** (load, processed, slot) lexicographic: is candidate a before b? */
    const before = (ctx: PickContext, a: number, b: number): boolean => {
      const sa = ctx.slots[a];
      const sb = ctx.slots[b];
      const la = ctx.inflight.requests[sa];
      const lb = ctx.inflight.requests[sb];
      if (la !== lb) return la < lb;
      const pa = ctx.inflight.processed[sa];
      const pb = ctx.inflight.processed[sb];
      if (pa !== pb) return pa < pb;
      return sa < sb;
    };

    return {
      name: NAME,
      scoreOrder: 'none',
      maxEntries,
      tree: (model) => trees.get(model)?.index,
      onFleet,
      pick(ctx) {
        nowMs = ctx.nowMs;
        // SGLang compares every worker's load: make every eligible replica a candidate.
        const e = ctx.eligible;
        for (let k = 0; k < e.length; k++) ctx.candidate(e[k]);
        const n = ctx.n;
        if (n === 0) return -1;

        let maxLoad = -Infinity;
        let minLoad = Infinity;
        let minIdx = 0;
        for (let i = 0; i < n; i++) {
          const load = ctx.inflight.requests[ctx.slots[i]];
          ctx.scores[i] = load;
          if (load > maxLoad) maxLoad = load;
          if (load < minLoad) minLoad = load;
          if (i > 0 && before(ctx, i, minIdx)) minIdx = i;
        }
        if (maxLoad - minLoad > absThreshold && maxLoad > relThreshold * minLoad) return minIdx;

        const tree = trees.get(ctx.request.model);
        if (!tree || ctx.promptBlocks === 0) return minIdx; // empty prompt: match rate 0
        const m = tree.index.match(ctx.hashes, tree.match, ctx.promptBlocks);
        let best = -1;
        let bestDepth = 0;
        for (let k = 0; k < m.count; k++) {
          const slot = m.replica(k);
          const depth = m.depth(k);
          if (depth < bestDepth) continue;
          const i = ctx.candidate(slot); // the candidate index, or −1 for a replica that cannot serve it now
          if (i < 0) continue;
          if (depth > bestDepth || best < 0 || before(ctx, i, best)) {
            best = i;
            bestDepth = depth;
          }
        }
        return best >= 0 && bestDepth / ctx.promptBlocks > cacheThreshold ? best : minIdx;
      },
      onRouted(ctx, chosen) {
        nowMs = ctx.nowMs;
        const tree = trees.get(ctx.request.model);
        const blocks = ctx.promptBlocks;
        if (!tree || blocks === 0) return;
        const slot = ctx.slots[chosen];
        if (slot >= replicaCapacity) return;
        if (records.length < blocks * RECORD_WORDS) records = new Uint32Array(Math.max(blocks, 2 * (records.length / RECORD_WORDS)) * RECORD_WORDS);
        for (let b = 0; b < blocks; b++) {
          const h = ctx.hashes[b];
          const at = b * RECORD_WORDS;
          records[at] = OP_SPECULATE;
          records[at + 1] = slot;
          records[at + 2] = Number(h & 0xffffffffn);
          records[at + 3] = Number(h >> 32n);
        }
        tree.index.apply(records, blocks);
      },
    };
  },
};
