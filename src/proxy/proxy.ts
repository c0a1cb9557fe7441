/**
 * The reference proxy (DESIGN §7): an OpenAI-compatible front end that embeds the router.
 *
 *   client ─ /v1/completions, /v1/chat/completions ─▶ data plane (data-plane.ts)
 *       API key → tenant → salt;  prompt → token ids (the engines' tokenizer);  router.route()
 *       ─▶ engine (an undici Pool per engine) ─ SSE passed through chunk by chunk ─▶ client
 *   operator ─ bearer token ─▶ control API (control-api.ts): policy, shadow, canary, drain, replicas
 *   engines ─ KV events (ZeroMQ) ─▶ KvEventIngest or IngestPool ─▶ router.index
 *   engines ─ GET /metrics every scrape.intervalMs ─▶ router.updateLoad
 *
 * This class owns the pieces and their lifecycles: the router, the engines (pool, KV subscription,
 * scraping), outlier ejection applied as router health, the retry budget, the two servers and the
 * timers. Control-path changes (registration, removal, drain) run one at a time through a queue, so
 * two registrations of one id cannot interleave their awaits.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Pool } from 'undici';
import { Registry } from 'prom-client';
import { systemClock, type Clock } from '../clock.js';
import { fail } from '../errors.js';
import type { KernelBackend } from '../kernels/abi.js';
import type { ReplicaView } from '../fleet/fleet.js';
import { createRouter, type Router } from '../router/router.js';
import { RouterMetrics } from '../router/metrics.js';
import { KvEventIngest } from '../index/kv-events.js';
import type { ReplicaNamespace } from '../index/replica-state.js';
import { IngestPool } from '../host/ingest-pool.js';
import { tokenizerByName, type Tokenizer } from '../tokenize/index.js';
import { checkEngineUrl, checkZmqEndpoint, guardedLookup, type Allowlist, type Resolver } from './address.js';
import { KeyStore } from './auth.js';
import { resolveConfig, type EngineSpec, type ProxyConfig, type ResolvedConfig } from './config.js';
import { OutlierDetector, RetryBudget } from './outlier.js';
import { ProxyMetrics } from './metrics.js';
import { parseVllmLoad } from './load-scrape.js';
import { handleData } from './data-plane.js';
import { handleControl } from './control-api.js';

/** Structured log lines. Fields never carry prompts, salts, keys or tenant ids (see data-plane.ts). */
export interface Logger {
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, fields?: Record<string, unknown>): void;
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

/** JSON lines on a stream (the CLI's logger). */
export function jsonLogger(write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const log = (level: string) => (event: string, fields: Record<string, unknown> = {}) => write(`${JSON.stringify({ t: new Date().toISOString(), level, event, ...fields })}\n`);
  return { info: log('info'), warn: log('warn'), error: log('error') };
}

export interface ProxyOptions {
  /** Metrics go here (default: a new registry); the router's, the ingest's and the proxy's share it. */
  registry?: Registry;
  clock?: Clock;
  logger?: Logger;
  /** Overrides config.tokenizer (tests). */
  tokenizer?: Tokenizer;
  /** DNS for address checks (tests). */
  resolver?: Resolver;
  kernels?: KernelBackend;
}

export interface EngineState {
  readonly spec: EngineSpec;
  readonly pool: Pool;
  /** Path prefix of the engine's base URL ("" or e.g. "/engine-3"). */
  readonly basePath: string;
  scraping: boolean;
}

/** Why a registration was refused (the control API answers 403 or 400 with it). */
export class RegistrationError extends Error {
  constructor(
    readonly status: 400 | 403 | 404,
    message: string,
  ) {
    super(message);
  }
}

export class Proxy {
  readonly config: ResolvedConfig;
  readonly router: Router;
  readonly registry: Registry;
  readonly metrics: ProxyMetrics;
  readonly outliers: OutlierDetector;
  readonly budget: RetryBudget;
  readonly keys: KeyStore;
  readonly tokenizer: Tokenizer;
  readonly log: Logger;
  readonly clock: Clock;
  private readonly resolver?: Resolver;
  private readonly engines = new Map<string, EngineState>();
  private ingest: KvEventIngest | IngestPool | null = null;
  private detachIngest: (() => void) | null = null;
  private dataServer: Server | null = null;
  private controlServer: Server | null = null;
  private timers: NodeJS.Timeout[] = [];
  private controlQueue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(config: ResolvedConfig, options: ProxyOptions = {}) {
    this.config = config;
    this.clock = options.clock ?? systemClock;
    this.log = options.logger ?? silentLogger;
    this.registry = options.registry ?? new Registry();
    this.resolver = options.resolver;
    this.metrics = new ProxyMetrics(this.registry);
    this.tokenizer = options.tokenizer ?? tokenizerByName(config.tokenizer);
    this.keys = new KeyStore(config.keys);
    const r = config.router;
    this.router = createRouter({
      pools: config.pools,
      policy: config.policy,
      kernels: options.kernels,
      backend: r.backend,
      blockSize: r.blockSize,
      seed: r.seed,
      sloClasses: r.sloClasses,
      sampleCandidates: r.sampleCandidates,
      maxPromptTokens: r.maxPromptTokens,
      requestTimeoutMs: r.requestTimeoutMs,
      clock: this.clock,
      metrics: new RouterMetrics(this.registry),
    });
    for (const t of config.tenants.values()) if (t.quota) this.router.admission.setQuota(t.salt, t.quota);
    this.budget = new RetryBudget({ ratio: config.retry.budgetRatio, minConcurrency: config.retry.minConcurrency });
    this.outliers = new OutlierDetector(config.outlier, this.clock, {
      onChange: (id, ejected) => this.applyEjection(id, ejected),
      onEject: (id, durationMs) => {
        this.metrics.ejections.inc({ replica: id });
        this.log.warn('ejected', { replica: id, durationMs });
      },
      onPanic: (model, panic) => {
        this.metrics.panic.set({ model }, panic ? 1 : 0);
        this.log.warn(panic ? 'panic' : 'panic-over', { model });
      },
    });
  }

  // ---------------------------------------------------------------- lifecycle

  /** Registers the configured engines (address checks included) and starts both servers and the timers. */
  async start(): Promise<void> {
    for (const spec of this.config.engines) await this.registerEngine(spec, false);
    this.dataServer = createServer({ requestTimeout: this.config.limits.headersTimeoutMs + this.config.limits.bodyTimeoutMs, headersTimeout: this.config.limits.headersTimeoutMs }, (req, res) => {
      handleData(this, req, res).catch((err) => this.internalError(res, err));
    });
    this.controlServer = createServer({ requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => {
      handleControl(this, req, res).catch((err) => this.internalError(res, err));
    });
    await listen(this.dataServer, this.config.listen.port, this.config.listen.host);
    await listen(this.controlServer, this.config.control.port, this.config.control.host);
    // Queue timeouts, tickets a lost request left open, canary guards; expired ejections.
    this.timers.push(setInterval(() => {
      this.router.tick();
      this.outliers.tick();
    }, 100));
    this.timers.push(setInterval(() => this.scrapeAll(), this.config.scrape.intervalMs));
    for (const t of this.timers) t.unref();
    this.scrapeAll();
    this.log.info('listening', { data: this.url, control: this.controlUrl, engines: this.engines.size, policy: this.router.policyId, tokenizer: this.tokenizer.name });
  }

  get url(): string {
    return serverUrl(this.dataServer);
  }
  get controlUrl(): string {
    return serverUrl(this.controlServer);
  }

  /** Stops accepting, ends open connections, closes the engines' pools and the KV event ingest. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    const servers = [this.dataServer, this.controlServer].filter((s): s is Server => s !== null);
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    })));
    await Promise.all([...this.engines.values()].map((e) => e.pool.destroy().catch(() => {})));
    this.engines.clear();
    this.detachIngest?.();
    if (this.ingest) await this.ingest.close();
    this.ingest = null;
  }

  private internalError(res: import('node:http').ServerResponse, err: unknown): void {
    this.log.error('internal', { error: err instanceof Error ? err.message : String(err) });
    if (!res.headersSent && !res.destroyed) {
      res.writeHead(500, { 'content-type': 'application/json', connection: 'close' });
      res.end('{"error":{"message":"internal error","type":"internal_error","param":null,"code":null}}');
    } else res.destroy();
  }

  // ---------------------------------------------------------------- engines

  engine(id: string): EngineState | undefined {
    return this.engines.get(id);
  }

  engineIds(): string[] {
    return [...this.engines.keys()];
  }

  /** Whether any pool serves the model (a request for another model is a 404 before routing). */
  servesModel(model: string): boolean {
    return this.router.fleet.snapshot().pools.some((p) => p.model === model);
  }

  models(): string[] {
    return [...new Set(this.router.fleet.snapshot().pools.map((p) => p.model))];
  }

  /** Runs control-path changes one at a time. */
  serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.controlQueue.then(fn, fn);
    this.controlQueue = run.catch(() => {});
    return run;
  }

  /**
   * Adds or updates an engine. Addresses are checked (refused always; `fromApi`: against the control
   * allowlist too) before anything changes. An address change gets a new connection pool; a changed
   * KV event endpoint a new subscription.
   */
  async registerEngine(spec: EngineSpec, fromApi: boolean): Promise<ReplicaView> {
    if (this.closed) throw new RegistrationError(400, 'the proxy is closed');
    const allow: Allowlist | null = fromApi ? this.config.control.allow : null;
    const pool = this.router.fleet.snapshot().pools.find((p) => p.id === spec.pool);
    if (!pool) throw new RegistrationError(400, `unknown pool "${spec.pool}"`);
    const checked = await checkEngineUrl(spec.address, allow, this.resolver);
    if (!checked.ok) throw new RegistrationError(403, `address refused: ${checked.reason}`);
    if (spec.kvEvents) {
      for (const ep of [spec.kvEvents.endpoint, spec.kvEvents.replayEndpoint]) {
        if (ep === undefined) continue;
        const c = await checkZmqEndpoint(ep, allow, this.resolver);
        if (!c.ok) throw new RegistrationError(403, `KV event endpoint refused: ${c.reason}`);
      }
    }
    const before = this.engines.get(spec.id);
    const url = checked.url;
    const view = this.router.upsertReplica({ id: spec.id, pool: spec.pool, address: url.href.replace(/\/$/, '') });
    let state = before;
    if (!before || before.spec.address !== spec.address) {
      state = {
        spec,
        basePath: url.pathname.replace(/\/$/, ''),
        scraping: false,
        pool: new Pool(url.origin, {
          connections: this.config.limits.connectionsPerEngine,
          headersTimeout: this.config.limits.upstreamHeadersTimeoutMs,
          bodyTimeout: this.config.limits.upstreamBodyTimeoutMs,
          connect: { timeout: this.config.limits.connectTimeoutMs, lookup: guardedLookup },
        }),
      };
      // Requests still running on the old pool finish there; close() waits for them.
      if (before) before.pool.close().catch(() => {});
    } else {
      state = { ...before, spec };
    }
    this.engines.set(spec.id, state);
    this.outliers.upsert(spec.id, pool.model, view.drained);
    const oldKv = before?.spec.kvEvents;
    if (JSON.stringify(oldKv) !== JSON.stringify(spec.kvEvents)) {
      const ingest = this.ensureIngest(spec.kvEvents !== undefined);
      if (ingest && oldKv) await ingest.unsubscribe(view.slot);
      if (ingest && spec.kvEvents) {
        const k = spec.kvEvents;
        await ingest.subscribe(view.slot, { endpoint: k.endpoint, replayEndpoint: k.replayEndpoint, topic: k.topic, dpRank: k.dpRank });
      }
    }
    this.log.info(before ? 'engine-updated' : 'engine-added', { replica: spec.id, pool: spec.pool, address: view.address, kvEvents: spec.kvEvents !== undefined });
    return view;
  }

  /** Removes an engine: no new requests; running ones finish on its pool, which then closes. */
  removeEngine(id: string): void {
    const e = this.engines.get(id);
    if (!e) throw new RegistrationError(404, `unknown replica "${id}"`);
    this.engines.delete(id);
    this.router.remove(id); // the router also unsubscribes its KV events (attachIngest)
    this.outliers.remove(id);
    this.metrics.ejected.remove({ replica: id });
    e.pool.close().catch(() => {});
    this.log.info('engine-removed', { replica: id });
  }

  drain(id: string, drained: boolean): ReplicaView {
    if (!this.engines.has(id)) throw new RegistrationError(404, `unknown replica "${id}"`);
    const view = this.router.drain(id, drained);
    this.outliers.upsert(id, view.pool.model, drained);
    this.log.info(drained ? 'engine-drained' : 'engine-undrained', { replica: id });
    return view;
  }

  /** The ingest, created on first need: until an engine has KV events, the router runs without one. */
  private ensureIngest(needed: boolean): KvEventIngest | IngestPool | null {
    if (this.ingest || !needed) return this.ingest;
    const common = {
      namespace: (slot: number) => this.namespaceOf(slot),
      blockSize: this.router.blockSize,
      registry: this.registry,
      onError: (slot: number, err: unknown) => this.log.warn('kv-events', { replica: this.router.fleet.snapshot().bySlot[slot]?.id ?? slot, error: err instanceof Error ? err.message : String(err) }),
    };
    this.ingest = this.config.ingest.mode === 'pool' ? new IngestPool(this.router.index, { ...common, shards: this.config.ingest.shards }) : new KvEventIngest(this.router.index, common);
    this.detachIngest = this.router.attachIngest(this.ingest, { onError: common.onError });
    return this.ingest;
  }

  /** The KV event state of a replica slot ('unknown' without an ingest: no events heard). */
  indexState(slot: number): 'synced' | 'replaying' | 'unknown' {
    return this.ingest ? this.ingest.replicaState(slot) : 'unknown';
  }

  private namespaceOf(slot: number): ReplicaNamespace {
    const r = this.router.fleet.snapshot().bySlot[slot];
    const e = r ? this.engines.get(r.id) : undefined;
    return { model: r?.pool.model ?? '', tenant: e?.spec.kvEvents?.tenant ?? '' };
  }

  /** Outlier ejection as router health (the detector already applied the cap and the panic rule). */
  private applyEjection(id: string, ejected: boolean): void {
    if (!this.router.fleet.snapshot().byId.has(id)) return;
    this.router.setHealth(id, ejected ? 'unhealthy' : 'healthy');
    this.metrics.ejected.set({ replica: id }, ejected ? 1 : 0);
    this.log.info(ejected ? 'ejection-applied' : 'ejection-lifted', { replica: id });
  }

  // ---------------------------------------------------------------- load

  /** One scrape of every engine's /metrics (an engine still answering the last one is skipped). */
  private scrapeAll(): void {
    for (const [id, e] of this.engines) {
      if (e.scraping) continue;
      e.scraping = true;
      this.scrape(id, e).finally(() => {
        e.scraping = false;
      });
    }
  }

  private async scrape(id: string, e: EngineState): Promise<void> {
    const timeoutMs = this.config.scrape.timeoutMs;
    try {
      const res = await e.pool.request({ path: `${e.basePath}/metrics`, method: 'GET', headersTimeout: timeoutMs, bodyTimeout: timeoutMs, signal: AbortSignal.timeout(timeoutMs) });
      if (res.statusCode !== 200) {
        await res.body.dump();
        this.metrics.scrapes.inc({ replica: id, outcome: 'http_error' });
        return;
      }
      const text = await res.body.text();
      if (this.engines.get(id) !== e) return; // removed or re-registered meanwhile
      this.router.updateLoad(id, parseVllmLoad(text));
      this.metrics.scrapes.inc({ replica: id, outcome: 'ok' });
    } catch {
      if (this.engines.get(id) === e && !this.closed) this.metrics.scrapes.inc({ replica: id, outcome: 'error' });
    }
  }
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function serverUrl(server: Server | null): string {
  const a = server?.address() as AddressInfo | null | undefined;
  if (!a) return '';
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return `http://${host}:${a.port}`;
}

/** Validates a configuration (or takes a resolved one), builds the proxy and starts it. */
export async function startProxy(config: ProxyConfig | ResolvedConfig, options: ProxyOptions = {}): Promise<Proxy> {
  const resolved = isResolved(config) ? config : resolveConfig(config);
  const proxy = new Proxy(resolved, options);
  try {
    await proxy.start();
  } catch (err) {
    await proxy.close();
    if (err instanceof RegistrationError) fail('DYSTRO_ERR_INVALID_CONFIG', 'config.engines', 'engines at allowed addresses', err.message);
    throw err;
  }
  return proxy;
}

function isResolved(c: ProxyConfig | ResolvedConfig): c is ResolvedConfig {
  return (c as ResolvedConfig).control?.tokenDigest instanceof Buffer;
}

