/**
 * Shared set-up for the router tests: a seeded router on the js backend and a FakeClock, and a modeled
 * engine that reports back through the tickets the way a proxy would (first token after the predicted
 * time, end after the modeled decode), driven by an event queue on the same fake clock.
 */
import { FakeClock } from '../../src/clock.ts';
import { loadBackend } from '../../src/kernels/select.ts';
import { createRouter, type Router, type RouterOptions } from '../../src/router/router.ts';
import { createRng, type Rng } from '../../src/rng.ts';
import type { PoolSpec, ReplicaSpec } from '../../src/fleet/fleet.ts';
import type { Decision, RoutedDecision } from '../../src/router/types.ts';

export const js = loadBackend('js');

export function pool(id: string, extra: Partial<PoolSpec> = {}): PoolSpec {
  return { id, accelerator: 'H100', tensorParallel: 1, model: 'm', kvCapacityBlocks: 100_000, ...extra };
}

export function replicas(poolId: string, count: number, prefix = poolId): ReplicaSpec[] {
  return Array.from({ length: count }, (_, i) => ({ id: `${prefix}-${i}`, pool: poolId, address: `http://${prefix}-${i}:8000` }));
}

/**
 * A router with `count` replicas in one pool whose prefill rate is fixed at `prefillTokensPerS` (a
 * pool-rate override: predictions are then (queued + uncached) ÷ rate, easy to reason about).
 */
export function makeRouter(opts: Partial<RouterOptions> & { count?: number; prefillTokensPerS?: number } = {}): { router: Router; clock: FakeClock } {
  const clock = (opts.clock as FakeClock | undefined) ?? new FakeClock(1_000_000);
  const pools = opts.pools ?? [pool('p')];
  const rate = opts.prefillTokensPerS ?? 10_000;
  const poolRates = opts.poolRates ?? Object.fromEntries(pools.map((p) => [p.id, { prefillTokensPerS: rate, decodeStepS: 0 }]));
  const router = createRouter({
    kernels: js,
    seed: 7,
    ...opts,
    clock,
    pools,
    poolRates,
    replicas: opts.replicas ?? replicas(pools[0].id, opts.count ?? 4),
  });
  return { router, clock };
}

/** A prompt of `tokens` token ids; `family` picks a shared prefix (same family: same leading tokens). */
export function prompt(tokens: number, family: number, rng?: Rng): Uint32Array {
  const p = new Uint32Array(tokens);
  const shared = Math.floor(tokens / 2);
  for (let i = 0; i < tokens; i++) p[i] = i < shared || !rng ? (family * 7919 + i * 31) % 151_936 : rng.int(151_936);
  return p;
}

interface Event {
  at: number;
  seq: number;
  fn: () => void;
}

/** A min-heap of timed callbacks on the fake clock. */
export class EventQueue {
  private heap: Event[] = [];
  private seq = 0;
  constructor(readonly clock: FakeClock) {}

  at(time: number, fn: () => void): void {
    const e = { at: Math.max(time, this.clock.nowMs()), seq: this.seq++, fn };
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(h[p], h[i])) break;
      [h[p], h[i]] = [h[i], h[p]];
      i = p;
    }
  }

  get size(): number {
    return this.heap.length;
  }

  /** Runs every event due at or before `time` in order, moving the clock to each; ends at `time`. */
  runUntil(time: number): void {
    while (this.heap.length > 0 && this.heap[0].at <= time) {
      const e = this.pop();
      this.clock.set(Math.max(this.clock.nowMs(), e.at));
      e.fn();
    }
    if (time > this.clock.nowMs()) this.clock.set(time);
  }

  /** Runs everything left. */
  drain(): void {
    while (this.heap.length > 0) {
      const e = this.pop();
      this.clock.set(Math.max(this.clock.nowMs(), e.at));
      e.fn();
    }
  }

  private pop(): Event {
    const h = this.heap;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && less(h[l], h[m])) m = l;
        if (r < h.length && less(h[r], h[m])) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i], h[m]];
        i = m;
      }
    }
    return top;
  }
}

function less(a: Event, b: Event): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

/**
 * The modeled engine: a routed request's first token comes `predictedTtftMs × slowdown(replica)` after
 * routing, its end `decodeMs` later. Observed TTFTs are recorded per tenant and per deciding policy.
 */
export class ModeledEngine {
  readonly observed = new Map<string, number[]>();
  readonly byPolicy = new Map<string, number[]>();
  constructor(
    readonly events: EventQueue,
    readonly decodeMs = 50,
    readonly slowdown: (replicaId: string) => number = () => 1,
  ) {}

  serve(d: RoutedDecision, tenant = ''): void {
    const start = this.events.clock.nowMs();
    const first = start + d.predictedTtftMs * this.slowdown(d.replica.id);
    this.events.at(first, () => {
      d.ticket.onFirstToken();
      const ttft = this.events.clock.nowMs() - start;
      push(this.observed, tenant, ttft);
      push(this.byPolicy, d.policy, ttft);
    });
    this.events.at(first + this.decodeMs, () => d.ticket.onEnd(16));
  }

  /** Serves a decision, or a queued one once it resolves. */
  handle(d: Decision, tenant = '', onShed?: (reason: string) => void): void {
    if (d.kind === 'route') this.serve(d, tenant);
    else if (d.kind === 'shed') onShed?.(d.reason);
    else d.ready.then((r) => (r.kind === 'route' ? this.serve(r, tenant) : onShed?.(r.reason)));
  }
}

function push(m: Map<string, number[]>, k: string, v: number): void {
  const l = m.get(k);
  if (l) l.push(v);
  else m.set(k, [v]);
}

/** Sum of every in-flight counter of a router: requests, prefill tokens, KV blocks. */
export function inflightTotals(router: Router): { requests: number; prefillTokens: number; blocks: number } {
  const f = router.inflight;
  let requests = 0;
  let prefillTokens = 0;
  let blocks = 0;
  for (let i = 0; i < f.requests.length; i++) {
    requests += f.requests[i];
    prefillTokens += f.prefillTokens[i];
    blocks += f.activeBlocks[i];
  }
  return { requests, prefillTokens, blocks };
}

export function quantile(values: readonly number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

export { createRng };
