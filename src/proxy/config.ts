/**
 * The proxy's configuration (`dystro proxy --config proxy.json`), validated once at start-up (STYLE 3):
 * a typo or a bad value is a DYSTRO_ERR_INVALID_CONFIG naming the field, never a surprise at the first
 * request. Secrets may stay out of the file: the control token by environment variable (`tokenEnv`),
 * API keys by their SHA-256 digest (`sha256`).
 */
import { readFileSync } from 'node:fs';
import { fail } from '../errors.js';
import type { PoolSpec } from '../fleet/fleet.js';
import type { PolicyParams } from '../router/types.js';
import type { SloClassSpec, TenantQuota } from '../router/admission.js';
import { Allowlist } from './address.js';
import { sha256, type Tenant } from './auth.js';
import { OUTLIER_DEFAULTS, type OutlierOptions } from './outlier.js';

export interface KvEventsSpec {
  /** The engine's ZeroMQ PUB endpoint, e.g. tcp://10.0.0.7:5557. */
  endpoint: string;
  /** Its ROUTER replay endpoint (gaps are repaired through it). */
  replayEndpoint?: string;
  topic?: string;
  dpRank?: number;
  /**
   * The tenant salt the engine's cached blocks are hashed under (default "": unsalted). KV events carry
   * token ids, not the salt, so the router can only credit one tenant's requests from one replica's
   * events; requests of other tenants get credit from the router's own (speculative) entries.
   */
  tenant?: string;
}

export interface EngineSpec {
  id: string;
  pool: string;
  /** Base URL, e.g. http://10.0.0.7:8000 (requests go to its /v1/…, load is scraped from its /metrics). */
  address: string;
  kvEvents?: KvEventsSpec;
  /** Bearer key the engine itself requires, if any (never a client's key). */
  apiKey?: string;
}

export interface TenantSpec {
  /** Hash salt (default: the tenant id). Printable ASCII without spaces, ≤ 256 characters. */
  salt?: string;
  sloClass?: string;
  quota?: TenantQuota;
}

export interface KeySpec {
  tenant: string;
  /** The key itself … */
  key?: string;
  /** … or its SHA-256 digest, hex. */
  sha256?: string;
}

export interface ProxyConfig {
  listen?: { host?: string; port?: number };
  control: {
    host?: string;
    port?: number;
    /** Bearer token of the control API (≥ 16 characters), or `tokenEnv`: the variable holding it. */
    token?: string;
    tokenEnv?: string;
    /** Hosts and CIDRs replicas may be registered at through the control API (default: none). */
    allow?: string[];
  };
  pools: PoolSpec[];
  engines?: EngineSpec[];
  tenants?: Record<string, TenantSpec>;
  keys?: KeySpec[];
  /** Tenant of requests without a key; absent: a key is required. */
  anonymousTenant?: string;
  policy?: string | { name: string; params?: PolicyParams };
  router?: {
    blockSize?: number;
    seed?: number;
    sloClasses?: SloClassSpec[];
    sampleCandidates?: number;
    maxPromptTokens?: number;
    requestTimeoutMs?: number;
    backend?: 'auto' | 'wasm' | 'native' | 'js';
  };
  /** "gpt" (cl100k_base) or "bytes": must be the engines' tokenizer for precise prefix matching. */
  tokenizer?: 'gpt' | 'bytes';
  ingest?: { mode?: 'thread' | 'pool'; shards?: number };
  limits?: {
    /** Largest request body, bytes (default 4 MiB): larger is a 413 before it is read. */
    maxBodyBytes?: number;
    /** Time to receive a request's headers, ms (default 10,000). */
    headersTimeoutMs?: number;
    /** Time to receive a request's body, ms (default 30,000): slower is a 408. */
    bodyTimeoutMs?: number;
    /** Time for an engine's response headers, ms (default 60,000). */
    upstreamHeadersTimeoutMs?: number;
    /** Longest silence inside an engine's response body, ms (default 120,000: between two tokens). */
    upstreamBodyTimeoutMs?: number;
    /** Time to connect to an engine, ms (default 2,000). */
    connectTimeoutMs?: number;
    /** Connections per engine (default 128). */
    connectionsPerEngine?: number;
    /** Largest non-streamed engine response, bytes (default 64 MiB). */
    maxResponseBytes?: number;
  };
  retry?: {
    /** Retries of one request at most (default 2). */
    maxRetries?: number;
    /** Retries in flight ≤ max(minConcurrency, budgetRatio × requests in flight) (defaults 0.2 and 3). */
    budgetRatio?: number;
    minConcurrency?: number;
    /** Bodies larger than this (bytes) are never retried (default 262,144). */
    maxBodyBytes?: number;
  };
  outlier?: OutlierOptions;
  scrape?: { intervalMs?: number; timeoutMs?: number };
  /** Header carrying the tenant salt to the engine (default x-dystro-tenant). */
  tenantHeader?: string;
  /** Also set vLLM's `cache_salt` in forwarded bodies (default true). */
  cacheSaltInBody?: boolean;
  /** Add x-dystro-replica / -cached-tokens / -attempts headers to responses (default false: topology stays private). */
  exposeDecision?: boolean;
}

/** The validated configuration with every default filled in. */
export interface ResolvedConfig {
  listen: { host: string; port: number };
  control: { host: string; port: number; tokenDigest: Buffer; allow: Allowlist };
  pools: PoolSpec[];
  engines: EngineSpec[];
  tenants: Map<string, Tenant & { quota?: TenantQuota }>;
  keys: [digestHex: string, tenant: Tenant][];
  anonymousTenant: Tenant | null;
  policy: { name: string; params: PolicyParams };
  router: NonNullable<ProxyConfig['router']>;
  tokenizer: 'gpt' | 'bytes';
  ingest: { mode: 'thread' | 'pool'; shards: number };
  limits: Required<NonNullable<ProxyConfig['limits']>>;
  retry: Required<NonNullable<ProxyConfig['retry']>>;
  outlier: Required<OutlierOptions>;
  scrape: { intervalMs: number; timeoutMs: number };
  tenantHeader: string;
  cacheSaltInBody: boolean;
  exposeDecision: boolean;
}

const TOP_KEYS = [
  'listen', 'control', 'pools', 'engines', 'tenants', 'keys', 'anonymousTenant', 'policy', 'router', 'tokenizer', 'ingest',
  'limits', 'retry', 'outlier', 'scrape', 'tenantHeader', 'cacheSaltInBody', 'exposeDecision', '$schema', 'comment',
];

function obj(v: unknown, what: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail('DYSTRO_ERR_INVALID_CONFIG', what, 'an object', v);
  return v as Record<string, unknown>;
}

function knownKeys(o: Record<string, unknown>, what: string, keys: readonly string[]): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) fail('DYSTRO_ERR_INVALID_CONFIG', `${what}.${k}`, `one of the known keys (${keys.join(', ')})`, k);
}

function int(v: unknown, what: string, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || (v as number) < min || (v as number) > max) fail('DYSTRO_ERR_INVALID_CONFIG', what, `an integer in ${min} … ${max}`, v);
  return v as number;
}

function num(v: unknown, what: string, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) fail('DYSTRO_ERR_INVALID_CONFIG', what, `a number in ${min} … ${max}`, v);
  return v;
}

function str(v: unknown, what: string, dflt?: string): string {
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'string' || v.length === 0) fail('DYSTRO_ERR_INVALID_CONFIG', what, 'a non-empty string', v);
  return v;
}

/** Header-safe: visible ASCII, no spaces (a salt travels in a header). */
const SAFE = /^[\x21-\x7e]{1,256}$/;

export function checkEngineSpec(v: unknown, what: string): EngineSpec {
  const e = obj(v, what);
  knownKeys(e, what, ['id', 'pool', 'address', 'kvEvents', 'apiKey']);
  const spec: EngineSpec = { id: str(e.id, `${what}.id`), pool: str(e.pool, `${what}.pool`), address: str(e.address, `${what}.address`) };
  if (e.apiKey !== undefined) spec.apiKey = str(e.apiKey, `${what}.apiKey`);
  if (e.kvEvents !== undefined) {
    const k = obj(e.kvEvents, `${what}.kvEvents`);
    knownKeys(k, `${what}.kvEvents`, ['endpoint', 'replayEndpoint', 'topic', 'dpRank', 'tenant']);
    spec.kvEvents = { endpoint: str(k.endpoint, `${what}.kvEvents.endpoint`) };
    if (k.replayEndpoint !== undefined) spec.kvEvents.replayEndpoint = str(k.replayEndpoint, `${what}.kvEvents.replayEndpoint`);
    if (k.topic !== undefined) {
      if (typeof k.topic !== 'string') fail('DYSTRO_ERR_INVALID_CONFIG', `${what}.kvEvents.topic`, 'a string', k.topic);
      spec.kvEvents.topic = k.topic;
    }
    if (k.dpRank !== undefined) spec.kvEvents.dpRank = int(k.dpRank, `${what}.kvEvents.dpRank`, 0, 0xffff, 0);
    if (k.tenant !== undefined) {
      if (typeof k.tenant !== 'string') fail('DYSTRO_ERR_INVALID_CONFIG', `${what}.kvEvents.tenant`, 'a string', k.tenant);
      spec.kvEvents.tenant = k.tenant;
    }
  }
  return spec;
}

/**
 * Validates a configuration. `env` resolves `control.tokenEnv` (default process.env). Throws a
 * DystroError (DYSTRO_ERR_INVALID_CONFIG) for the first problem found.
 */
export function resolveConfig(input: unknown, env: Record<string, string | undefined> = process.env): ResolvedConfig {
  const c = obj(input, 'config');
  knownKeys(c, 'config', TOP_KEYS);

  const listen = c.listen === undefined ? {} : obj(c.listen, 'config.listen');
  knownKeys(listen, 'config.listen', ['host', 'port']);
  const control = obj(c.control, 'config.control');
  knownKeys(control, 'config.control', ['host', 'port', 'token', 'tokenEnv', 'allow']);
  let token: string | undefined;
  if (control.token !== undefined) token = str(control.token, 'config.control.token');
  else if (control.tokenEnv !== undefined) token = env[str(control.tokenEnv, 'config.control.tokenEnv')];
  if (typeof token !== 'string' || token.length < 16) {
    fail('DYSTRO_ERR_INVALID_CONFIG', 'config.control.token', 'a bearer token of at least 16 characters (or control.tokenEnv naming a variable that holds one)', token === undefined ? undefined : '(hidden)');
  }
  if (/\s/.test(token)) fail('DYSTRO_ERR_INVALID_CONFIG', 'config.control.token', 'a token without white space', '(hidden)');
  const allowRaw = control.allow ?? [];
  if (!Array.isArray(allowRaw)) fail('DYSTRO_ERR_INVALID_CONFIG', 'config.control.allow', 'an array of CIDRs and host names', allowRaw);
  let allow: Allowlist;
  try {
    allow = new Allowlist(allowRaw as string[]);
  } catch (err) {
    return fail('DYSTRO_ERR_INVALID_CONFIG', 'config.control.allow', (err as Error).message.replace(/^Expected an allowlist entry to be /, ''), allowRaw);
  }

  if (!Array.isArray(c.pools) || c.pools.length === 0) fail('DYSTRO_ERR_INVALID_CONFIG', 'config.pools', 'a non-empty array of pools', c.pools);
  const enginesRaw = c.engines ?? [];
  if (!Array.isArray(enginesRaw)) fail('DYSTRO_ERR_INVALID_CONFIG', 'config.engines', 'an array of engines', enginesRaw);
  const engines = enginesRaw.map((e, i) => checkEngineSpec(e, `config.engines[${i}]`));

  // Tenants and keys.
  const tenants = new Map<string, Tenant & { quota?: TenantQuota }>();
  const tenantsRaw = c.tenants === undefined ? {} : obj(c.tenants, 'config.tenants');
  const tenantOf = (id: string, spec: Record<string, unknown>, what: string) => {
    knownKeys(spec, what, ['salt', 'sloClass', 'quota']);
    if (!SAFE.test(id)) fail('DYSTRO_ERR_INVALID_CONFIG', what, 'a tenant id of visible ASCII characters without spaces', id);
    const salt = spec.salt === undefined ? id : str(spec.salt, `${what}.salt`);
    if (!SAFE.test(salt)) fail('DYSTRO_ERR_INVALID_CONFIG', `${what}.salt`, 'visible ASCII characters without spaces, at most 256', '(hidden)');
    const t: Tenant & { quota?: TenantQuota } = { id, salt };
    if (spec.sloClass !== undefined) (t as { sloClass?: string }).sloClass = str(spec.sloClass, `${what}.sloClass`);
    if (spec.quota !== undefined) t.quota = obj(spec.quota, `${what}.quota`) as unknown as TenantQuota;
    return t;
  };
  for (const [id, spec] of Object.entries(tenantsRaw)) tenants.set(id, tenantOf(id, obj(spec, `config.tenants.${id}`), `config.tenants.${id}`));
  const salts = new Map<string, string>();
  for (const t of tenants.values()) {
    const other = salts.get(t.salt);
    if (other !== undefined) fail('DYSTRO_ERR_INVALID_CONFIG', `config.tenants.${t.id}.salt`, `a salt no other tenant uses (tenant "${other}" has the same): they would share cache credit`, '(hidden)');
    salts.set(t.salt, t.id);
  }
  const tenantById = (id: unknown, what: string) => {
    const name = str(id, what);
    // A tenant named only by keys gets the defaults (its id as the salt).
    if (!tenants.has(name)) {
      const t = tenantOf(name, {}, what);
      if (salts.has(t.salt)) fail('DYSTRO_ERR_INVALID_CONFIG', what, `a tenant whose default salt (its id) is not another tenant's salt`, name);
      tenants.set(name, t);
      salts.set(t.salt, name);
    }
    return tenants.get(name)!;
  };
  const keysRaw = c.keys ?? [];
  if (!Array.isArray(keysRaw)) fail('DYSTRO_ERR_INVALID_CONFIG', 'config.keys', 'an array of { key | sha256, tenant }', keysRaw);
  const keys: [string, Tenant][] = [];
  const seen = new Set<string>();
  keysRaw.forEach((k, i) => {
    const what = `config.keys[${i}]`;
    const o = obj(k, what);
    knownKeys(o, what, ['key', 'sha256', 'tenant']);
    let digest: string;
    if (o.key !== undefined && o.sha256 === undefined) {
      const key = str(o.key, `${what}.key`);
      if (key.length < 8 || /\s/.test(key)) fail('DYSTRO_ERR_INVALID_CONFIG', `${what}.key`, 'a key of at least 8 characters without white space', '(hidden)');
      digest = sha256(key).toString('hex');
    } else if (o.sha256 !== undefined && o.key === undefined) {
      if (typeof o.sha256 !== 'string' || !/^[0-9a-f]{64}$/i.test(o.sha256)) fail('DYSTRO_ERR_INVALID_CONFIG', `${what}.sha256`, 'a SHA-256 digest in hex (64 characters)', o.sha256);
      digest = o.sha256.toLowerCase();
    } else {
      return fail('DYSTRO_ERR_INVALID_CONFIG', what, 'exactly one of `key` and `sha256`', Object.keys(o).join(','));
    }
    if (seen.has(digest)) fail('DYSTRO_ERR_INVALID_CONFIG', what, 'a key listed once', '(hidden)');
    seen.add(digest);
    keys.push([digest, tenantById(o.tenant, `${what}.tenant`)]);
  });
  const tokenDigest = sha256(token);
  if (seen.has(tokenDigest.toString('hex'))) fail('DYSTRO_ERR_INVALID_CONFIG', 'config.control.token', 'a token distinct from every data-plane API key', '(hidden)');
  const anonymousTenant = c.anonymousTenant === undefined ? null : tenantById(c.anonymousTenant, 'config.anonymousTenant');

  const policy = c.policy === undefined ? { name: 'predicted-ttft', params: {} } : typeof c.policy === 'string' ? { name: c.policy, params: {} } : (() => {
    const p = obj(c.policy, 'config.policy');
    knownKeys(p, 'config.policy', ['name', 'params']);
    return { name: str(p.name, 'config.policy.name'), params: p.params === undefined ? {} : obj(p.params, 'config.policy.params') };
  })();

  const router = c.router === undefined ? {} : obj(c.router, 'config.router');
  knownKeys(router, 'config.router', ['blockSize', 'seed', 'sloClasses', 'sampleCandidates', 'maxPromptTokens', 'requestTimeoutMs', 'backend']);
  for (const t of tenants.values()) {
    const classes = (router.sloClasses as SloClassSpec[] | undefined) ?? [];
    if (t.sloClass !== undefined && !classes.some((cl) => cl?.name === t.sloClass)) {
      fail('DYSTRO_ERR_INVALID_CONFIG', `config.tenants.${t.id}.sloClass`, `one of the router's sloClasses (${classes.map((cl) => `"${cl?.name}"`).join(', ') || 'none configured'})`, t.sloClass);
    }
  }
  const tokenizer = c.tokenizer ?? 'gpt';
  if (tokenizer !== 'gpt' && tokenizer !== 'bytes') fail('DYSTRO_ERR_INVALID_CONFIG', 'config.tokenizer', '"gpt" or "bytes"', tokenizer);
  const ingest = c.ingest === undefined ? {} : obj(c.ingest, 'config.ingest');
  knownKeys(ingest, 'config.ingest', ['mode', 'shards']);
  const mode = ingest.mode ?? 'thread';
  if (mode !== 'thread' && mode !== 'pool') fail('DYSTRO_ERR_INVALID_CONFIG', 'config.ingest.mode', '"thread" or "pool"', mode);

  const limits = c.limits === undefined ? {} : obj(c.limits, 'config.limits');
  knownKeys(limits, 'config.limits', ['maxBodyBytes', 'headersTimeoutMs', 'bodyTimeoutMs', 'upstreamHeadersTimeoutMs', 'upstreamBodyTimeoutMs', 'connectTimeoutMs', 'connectionsPerEngine', 'maxResponseBytes']);
  const retry = c.retry === undefined ? {} : obj(c.retry, 'config.retry');
  knownKeys(retry, 'config.retry', ['maxRetries', 'budgetRatio', 'minConcurrency', 'maxBodyBytes']);
  const outlier = c.outlier === undefined ? {} : obj(c.outlier, 'config.outlier');
  knownKeys(outlier, 'config.outlier', Object.keys(OUTLIER_DEFAULTS));
  const scrape = c.scrape === undefined ? {} : obj(c.scrape, 'config.scrape');
  knownKeys(scrape, 'config.scrape', ['intervalMs', 'timeoutMs']);
  const tenantHeader = str(c.tenantHeader, 'config.tenantHeader', 'x-dystro-tenant').toLowerCase();
  if (!/^[a-z0-9-]+$/.test(tenantHeader)) fail('DYSTRO_ERR_INVALID_CONFIG', 'config.tenantHeader', 'a header name', tenantHeader);
  const bool = (v: unknown, what: string, dflt: boolean) => {
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') fail('DYSTRO_ERR_INVALID_CONFIG', what, 'true or false', v);
    return v;
  };
  const hostOf = (v: unknown, what: string) => str(v, what, '127.0.0.1');
  const DAY = 86_400_000;
  return {
    listen: { host: hostOf(listen.host, 'config.listen.host'), port: int(listen.port, 'config.listen.port', 0, 65535, 8080) },
    control: { host: hostOf(control.host, 'config.control.host'), port: int(control.port, 'config.control.port', 0, 65535, 8081), tokenDigest, allow },
    pools: c.pools as PoolSpec[],
    engines,
    tenants,
    keys,
    anonymousTenant,
    policy,
    router: router as ResolvedConfig['router'],
    tokenizer,
    ingest: { mode, shards: int(ingest.shards, 'config.ingest.shards', 1, 64, 1) },
    limits: {
      maxBodyBytes: int(limits.maxBodyBytes, 'config.limits.maxBodyBytes', 1, 2 ** 31 - 1, 4 * 1024 * 1024),
      headersTimeoutMs: int(limits.headersTimeoutMs, 'config.limits.headersTimeoutMs', 1, DAY, 10_000),
      bodyTimeoutMs: int(limits.bodyTimeoutMs, 'config.limits.bodyTimeoutMs', 1, DAY, 30_000),
      upstreamHeadersTimeoutMs: int(limits.upstreamHeadersTimeoutMs, 'config.limits.upstreamHeadersTimeoutMs', 1, DAY, 60_000),
      upstreamBodyTimeoutMs: int(limits.upstreamBodyTimeoutMs, 'config.limits.upstreamBodyTimeoutMs', 1, DAY, 120_000),
      connectTimeoutMs: int(limits.connectTimeoutMs, 'config.limits.connectTimeoutMs', 1, DAY, 2_000),
      connectionsPerEngine: int(limits.connectionsPerEngine, 'config.limits.connectionsPerEngine', 1, 65_536, 128),
      maxResponseBytes: int(limits.maxResponseBytes, 'config.limits.maxResponseBytes', 1, 2 ** 31 - 1, 64 * 1024 * 1024),
    },
    retry: {
      maxRetries: int(retry.maxRetries, 'config.retry.maxRetries', 0, 10, 2),
      budgetRatio: num(retry.budgetRatio, 'config.retry.budgetRatio', 0, 1, 0.2),
      minConcurrency: int(retry.minConcurrency, 'config.retry.minConcurrency', 0, 1_000_000, 3),
      maxBodyBytes: int(retry.maxBodyBytes, 'config.retry.maxBodyBytes', 0, 2 ** 31 - 1, 256 * 1024),
    },
    outlier: {
      consecutiveFailures: int(outlier.consecutiveFailures, 'config.outlier.consecutiveFailures', 1, 1_000_000, OUTLIER_DEFAULTS.consecutiveFailures),
      maxEjectionPercent: num(outlier.maxEjectionPercent, 'config.outlier.maxEjectionPercent', 0, 100, OUTLIER_DEFAULTS.maxEjectionPercent),
      baseEjectionMs: int(outlier.baseEjectionMs, 'config.outlier.baseEjectionMs', 1, DAY, OUTLIER_DEFAULTS.baseEjectionMs),
      maxEjectionMs: int(outlier.maxEjectionMs, 'config.outlier.maxEjectionMs', 1, DAY, OUTLIER_DEFAULTS.maxEjectionMs),
      panicThresholdPercent: num(outlier.panicThresholdPercent, 'config.outlier.panicThresholdPercent', 0, 100, OUTLIER_DEFAULTS.panicThresholdPercent),
      fast429Ms: int(outlier.fast429Ms, 'config.outlier.fast429Ms', 0, DAY, OUTLIER_DEFAULTS.fast429Ms),
    },
    scrape: { intervalMs: int(scrape.intervalMs, 'config.scrape.intervalMs', 10, DAY, 1_000), timeoutMs: int(scrape.timeoutMs, 'config.scrape.timeoutMs', 1, DAY, 1_000) },
    tenantHeader,
    cacheSaltInBody: bool(c.cacheSaltInBody, 'config.cacheSaltInBody', true),
    exposeDecision: bool(c.exposeDecision, 'config.exposeDecision', false),
  };
}

/** Reads and validates a JSON config file. */
export function loadConfigFile(path: string, env: Record<string, string | undefined> = process.env): ResolvedConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    return fail('DYSTRO_ERR_INVALID_CONFIG', 'config file', 'a readable file', path, { cause: (err as Error).message });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return fail('DYSTRO_ERR_INVALID_CONFIG', 'config file', `valid JSON (${(err as Error).message})`, path);
  }
  return resolveConfig(json, env);
}
