/**
 * SLO-aware admission (DESIGN §4): SLO classes with TTFT/TPOT targets and bounded queues, and per-tenant
 * token buckets. The rule: a request is shed only when no eligible replica's predicted TTFT meets its
 * class SLO and the class queue is full — never while some replica could serve it in time. Tenants get
 * fair shares: under contention (some candidate over its SLO) a tenant above its token rate is refused
 * first, so a tenant at 10× its quota cannot push the others past their SLO.
 */
import { fail } from '../errors.js';
import type { Clock } from '../clock.js';
import type { RouteRequest, RoutedDecision, ShedDecision, QueuedDecision, Decision } from './types.js';

export interface SloClassSpec {
  name: string;
  /** Time-to-first-token target, ms. */
  ttftMs: number;
  /** Time-per-output-token target, ms (reported; decode placement is the policies' business). */
  tpotMs?: number;
  /** Higher is served first when queues drain (default 0). */
  priority?: number;
  /** Requests this class may hold waiting (default 0: no queue). */
  queueLimit?: number;
  /** A queued request is shed after this long, ms (default 10,000). */
  queueTimeoutMs?: number;
  /** Route to the best replica even when no SLO can be met and there is no queue (default false). */
  routeOverSlo?: boolean;
}

export interface SloClass extends Required<SloClassSpec> {
  readonly index: number;
}

export interface TenantQuota {
  /** Sustained prompt tokens per second. */
  tokensPerS: number;
  /** Bucket size in tokens (default 10 s of rate). */
  burstTokens?: number;
}

interface Waiting {
  req: RouteRequest;
  enqueuedAtMs: number;
  deadlineMs: number;
  resolve: (d: RoutedDecision | ShedDecision) => void;
}

const DEFAULT_CLASS: SloClassSpec = { name: 'default', ttftMs: Infinity, routeOverSlo: true };

export class Admission {
  readonly classes: readonly SloClass[];
  private readonly byName = new Map<string, SloClass>();
  private readonly queues: Waiting[][];
  private readonly quotas = new Map<string, { rate: number; burst: number; level: number; atMs: number }>();
  /** True while queued requests are being retried: admission must not queue them again. */
  draining = false;
  private retry: ((req: RouteRequest) => Decision) | null = null;

  constructor(
    specs: readonly SloClassSpec[],
    private readonly clock: Clock,
  ) {
    const list = specs.length > 0 ? specs : [DEFAULT_CLASS];
    this.classes = list.map((c, index) => {
      if (c === null || typeof c !== 'object' || typeof c.name !== 'string' || c.name === '') fail('DYSTRO_ERR_INVALID_CONFIG', `sloClasses[${index}].name`, 'a non-empty string', c?.name);
      if (typeof c.ttftMs !== 'number' || !(c.ttftMs > 0)) fail('DYSTRO_ERR_INVALID_CONFIG', `sloClasses[${index}].ttftMs`, 'a number > 0 (Infinity for none)', c.ttftMs);
      const queueLimit = c.queueLimit ?? 0;
      if (!Number.isInteger(queueLimit) || queueLimit < 0) fail('DYSTRO_ERR_INVALID_CONFIG', `sloClasses[${index}].queueLimit`, 'an integer ≥ 0', queueLimit);
      const queueTimeoutMs = c.queueTimeoutMs ?? 10_000;
      if (!(queueTimeoutMs > 0)) fail('DYSTRO_ERR_INVALID_CONFIG', `sloClasses[${index}].queueTimeoutMs`, 'a number > 0', queueTimeoutMs);
      const cls: SloClass = {
        name: c.name,
        ttftMs: c.ttftMs,
        tpotMs: c.tpotMs ?? Infinity,
        priority: c.priority ?? 0,
        queueLimit,
        queueTimeoutMs,
        routeOverSlo: c.routeOverSlo ?? false,
        index,
      };
      if (this.byName.has(cls.name)) fail('DYSTRO_ERR_INVALID_CONFIG', `sloClasses[${index}].name`, 'a name not used by another class', cls.name);
      this.byName.set(cls.name, cls);
      return cls;
    });
    this.queues = this.classes.map(() => []);
  }

  classOf(name: string | undefined): SloClass {
    if (name === undefined) return this.classes[0];
    const c = this.byName.get(name);
    if (!c) fail('DYSTRO_ERR_INVALID_REQUEST', 'request.priority', `one of ${this.classes.map((x) => `"${x.name}"`).join(', ')}`, name);
    return c;
  }

  /** Sets (or with null removes) a tenant's quota. */
  setQuota(tenant: string, quota: TenantQuota | null): void {
    if (quota === null) {
      this.quotas.delete(tenant);
      return;
    }
    if (!(quota.tokensPerS > 0) || !Number.isFinite(quota.tokensPerS)) fail('DYSTRO_ERR_INVALID_CONFIG', 'quota.tokensPerS', 'a finite number > 0', quota.tokensPerS);
    const burst = quota.burstTokens ?? quota.tokensPerS * 10;
    if (!(burst > 0)) fail('DYSTRO_ERR_INVALID_CONFIG', 'quota.burstTokens', 'a number > 0', burst);
    this.quotas.set(tenant, { rate: quota.tokensPerS, burst, level: burst, atMs: this.clock.nowMs() });
  }

  private refill(q: { rate: number; burst: number; level: number; atMs: number }, nowMs: number): void {
    if (nowMs > q.atMs) {
      q.level = Math.min(q.burst, q.level + ((nowMs - q.atMs) / 1000) * q.rate);
      q.atMs = nowMs;
    }
  }

  /**
   * 0 when the tenant may proceed; otherwise the ms until its bucket refills enough. Only refuses under
   * contention: with spare capacity everyone is served.
   */
  tenantOverQuota(tenant: string, tokens: number, nowMs: number, contended: boolean): number {
    const q = this.quotas.get(tenant);
    if (!q || !contended) return 0;
    this.refill(q, nowMs);
    if (q.level >= Math.min(tokens, q.burst)) return 0;
    return Math.ceil(((Math.min(tokens, q.burst) - q.level) / q.rate) * 1000);
  }

  /** Charges a routed request's prompt tokens to its tenant. */
  charge(tenant: string, tokens: number, nowMs: number): void {
    const q = this.quotas.get(tenant);
    if (!q) return;
    this.refill(q, nowMs);
    q.level -= tokens;
  }

  queueLength(c: SloClass): number {
    return this.queues[c.index].length;
  }

  totalQueued(): number {
    return this.queues.reduce((s, q) => s + q.length, 0);
  }

  enqueue(c: SloClass, req: RouteRequest, policy: string, retry: (req: RouteRequest) => Decision): QueuedDecision {
    this.retry = retry;
    const now = this.clock.nowMs();
    let resolve!: Waiting['resolve'];
    const ready = new Promise<RoutedDecision | ShedDecision>((r) => (resolve = r));
    this.queues[c.index].push({ req, enqueuedAtMs: now, deadlineMs: now + c.queueTimeoutMs, resolve });
    return { kind: 'queue', policy, sloClass: c.name, ready, position: this.queues[c.index].length };
  }

  /**
   * Capacity may have freed (a request ended): retry queued requests, highest priority class first,
   * FIFO within a class, until one cannot be placed.
   */
  wake(): void {
    if (this.draining || !this.retry || this.totalQueued() === 0) return;
    this.draining = true;
    try {
      const order = [...this.classes].sort((a, b) => b.priority - a.priority);
      for (const c of order) {
        const q = this.queues[c.index];
        while (q.length > 0) {
          const d = this.retry(q[0].req);
          if (d.kind === 'route') {
            q.shift()!.resolve(d);
            continue;
          }
          if (d.kind === 'shed' && (d.reason === 'tenant-over-quota' || d.reason === 'no-eligible-replica')) {
            // Still not placeable for a reason waiting may fix: keep it until its deadline.
          }
          return;
        }
      }
    } finally {
      this.draining = false;
    }
  }

  /** Sheds queued requests whose deadline passed, then retries the rest. */
  tick(): void {
    const now = this.clock.nowMs();
    for (const c of this.classes) {
      const q = this.queues[c.index];
      while (q.length > 0 && q[0].deadlineMs <= now) {
        const w = q.shift()!;
        w.resolve({ kind: 'shed', policy: '', sloClass: c.name, reason: 'queue-timeout', retryAfterMs: 1000 });
      }
    }
    this.wake();
  }
}
