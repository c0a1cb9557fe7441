/**
 * Small fleets for policy tests: a router on the js backend with a FakeClock and a fixed seed, prompts
 * built from deterministic token streams, and helpers to read a prompt's block hashes or set load.
 */
import { createRouter, type Router, type RouterOptions } from '../../src/router/router.ts';
import { FakeClock } from '../../src/clock.ts';
import { loadBackend } from '../../src/kernels/select.ts';
import { PolicyRegistry } from '../../src/policies/registry.ts';
import { defaultRegistry } from '../../src/policies/index.ts';
import type { PoolSpec } from '../../src/fleet/fleet.ts';
import type { Decision, Policy, PolicyFactory, RoutedDecision, RouteRequest } from '../../src/router/types.ts';

export const MODEL = 'llama-3-8b';
export const js = loadBackend('js');

export function pool(id = 'h100', extra: Partial<PoolSpec> = {}): PoolSpec {
  return { id, accelerator: 'H100', tensorParallel: 1, model: MODEL, kvCapacityBlocks: 26_000, ...extra };
}

export interface FixtureOptions extends Partial<Omit<RouterOptions, 'pools' | 'replicas'>> {
  /** Replica count (ids r0 … r(n−1), all in the first pool) or explicit ids → pool. */
  replicas: number | Record<string, string>;
  pools?: PoolSpec[];
}

export function fixture(o: FixtureOptions): { router: Router; clock: FakeClock } {
  const clock = (o.clock as FakeClock | undefined) ?? new FakeClock(1_000_000);
  const pools = o.pools ?? [pool()];
  const ids: [string, string][] = typeof o.replicas === 'number' ? Array.from({ length: o.replicas }, (_, i) => [`r${i}`, pools[0].id]) : Object.entries(o.replicas);
  const router = createRouter({
    seed: 7,
    ...o,
    kernels: js,
    clock,
    pools,
    replicas: ids.map(([id, p], i) => ({ id, pool: p, address: `http://10.0.0.${i}:8000` })),
  });
  return { router, clock };
}

/** A prompt of `tokens` tokens, distinct per `stream` (token t of stream s is s·100,003 + t). */
export function prompt(stream: number, tokens: number): Uint32Array {
  const p = new Uint32Array(tokens);
  for (let t = 0; t < tokens; t++) p[t] = (stream * 100_003 + t) >>> 0;
  return p;
}

/** `head` followed by `tail`. */
export function concat(head: Uint32Array, tail: Uint32Array): Uint32Array {
  const p = new Uint32Array(head.length + tail.length);
  p.set(head);
  p.set(tail, head.length);
  return p;
}

/** The block hashes the router computes for this prompt (no LoRA, no tenant). */
export function hashesOf(router: Router, tokens: Uint32Array, model = MODEL): BigUint64Array {
  const seed = router.hasher.namespaceSeed({ model });
  return router.hasher.hashTokens(tokens, seed);
}

export function routed(d: Decision): RoutedDecision {
  if (d.kind !== 'route') throw new Error(`expected a routed decision, got ${d.kind}${d.kind === 'shed' ? ` (${d.reason})` : ''}`);
  return d;
}

/** Routes and immediately ends the request (in-flight counts return to where they were). */
export function routeAndEnd(router: Router, req: RouteRequest): RoutedDecision {
  const d = routed(router.route(req));
  d.ticket.onFirstToken();
  d.ticket.onEnd();
  return d;
}

export function slotOf(router: Router, id: string): number {
  return router.fleet.replica(id).slot;
}

/** Sets the router's own in-flight request count of a replica (test set-up; bypasses tickets). */
export function setInflight(router: Router, id: string, requests: number, prefillTokens = 0, activeBlocks = 0): void {
  const s = slotOf(router, id);
  router.inflight.requests[s] = requests;
  router.inflight.prefillTokens[s] = prefillTokens;
  router.inflight.activeBlocks[s] = activeBlocks;
}

/** A registry that builds `factory` and hands the created policy to `grab` (tests read its state). */
export function capturingRegistry<P extends Policy>(factory: PolicyFactory, grab: (p: P) => void): PolicyRegistry {
  const reg = new PolicyRegistry();
  for (const name of defaultRegistry.names()) reg.register(defaultRegistry.get(name)!);
  reg.register({
    ...factory,
    create(params, env) {
      const p = factory.create(params, env) as P;
      grab(p);
      return p;
    },
  });
  return reg;
}

/** Share of each key in `counts` over `total`. */
export function shares(counts: Map<string, number>, total: number): Map<string, number> {
  return new Map([...counts].map(([k, v]) => [k, v / total]));
}

export function count<K>(m: Map<K, number>, k: K): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}
