/**
 * Shared set-up for the proxy tests: engine emulators (src/emulator) on 127.0.0.1, a proxy config over
 * them, the official OpenAI client pointed at the proxy, a control-API caller, and the checks every
 * test ends with (in-flight counts back to zero).
 */
import OpenAI from 'openai';
import { request } from 'undici';
import { EngineEmulator, type EngineEmulatorOptions } from '../../src/emulator/index.ts';
import { startProxy, type Logger, type Proxy, type ProxyOptions } from '../../src/proxy/proxy.ts';
import type { ProxyConfig } from '../../src/proxy/config.ts';
import { loadBackend } from '../../src/kernels/select.ts';
export { inflightTotals } from '../router/helpers.ts';
export { until } from '../helpers/zmq-publisher.ts';

export const CONTROL_TOKEN = 'control-token-3f9c2a7d41e8b6';
export const KEY_A = 'sk-tenant-a-9d3e1f';
export const KEY_B = 'sk-tenant-b-47c0aa';
export const SALT_A = 'salt-a-5e2b77';
export const SALT_B = 'salt-b-c813d0';
export const MODEL = 'llama-3-8b';
export const js = loadBackend('js');

export const POOL = { id: 'h100', accelerator: 'H100', tensorParallel: 1, model: MODEL, kvCapacityBlocks: 20_000 };

/** Emulators serving MODEL, 20× faster than modeled unless told otherwise. */
export async function startEngines(n: number, options: EngineEmulatorOptions = {}): Promise<EngineEmulator[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => EngineEmulator.start({ servedModelName: MODEL, timeScale: 0.05, seed: i, ...options })));
}

export function engineSpecs(engines: EngineEmulator[], kvEvents = true): NonNullable<ProxyConfig['engines']> {
  return engines.map((e, i) => ({
    id: `e${i}`,
    pool: POOL.id,
    address: e.url,
    ...(kvEvents && e.eventsEndpoint ? { kvEvents: { endpoint: e.eventsEndpoint, replayEndpoint: e.replayEndpoint ?? undefined } } : {}),
  }));
}

export function baseConfig(engines: EngineEmulator[], extra: Partial<ProxyConfig> = {}): ProxyConfig {
  return {
    listen: { port: 0 },
    control: { port: 0, token: CONTROL_TOKEN, allow: ['127.0.0.1/32'] },
    pools: [POOL],
    engines: engineSpecs(engines),
    tenants: { a: { salt: SALT_A }, b: { salt: SALT_B } },
    keys: [
      { key: KEY_A, tenant: 'a' },
      { key: KEY_B, tenant: 'b' },
    ],
    router: { seed: 7 },
    exposeDecision: true,
    scrape: { intervalMs: 200, timeoutMs: 500 },
    ...extra,
  };
}

/** Log lines a test can search (for secrets that must not be there). */
export function captureLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const log = (level: string) => (event: string, fields: Record<string, unknown> = {}) => lines.push(JSON.stringify({ level, event, ...fields }));
  return { lines, info: log('info'), warn: log('warn'), error: log('error') };
}

export function start(config: ProxyConfig, options: ProxyOptions = {}): Promise<Proxy> {
  return startProxy(config, { kernels: js, ...options });
}

export function openai(proxy: Proxy, apiKey = KEY_A): OpenAI {
  // No client retries: the tests count what the proxy does.
  return new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey, maxRetries: 0, timeout: 20_000 });
}

/** A control-API call; `token` null sends no Authorization header. */
export async function control(proxy: Proxy, method: 'GET' | 'PUT' | 'POST' | 'DELETE', path: string, body?: unknown, token: string | null = CONTROL_TOKEN): Promise<{ status: number; json: any }> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const res = await request(`${proxy.controlUrl}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.body.text();
  return { status: res.statusCode, json: text ? JSON.parse(text) : null };
}

/** A raw data-plane POST (bodies the OpenAI client would never send). */
export async function post(proxy: Proxy, path: string, body: string | Buffer, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, unknown>; json: any }> {
  const res = await request(`${proxy.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY_A}`, ...headers }, body });
  const text = await res.body.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.statusCode, headers: res.headers, json };
}

/** Sum of a metric's samples (optionally those whose labels include `match`). */
export async function metricSum(proxy: Proxy, name: string, match: Record<string, string> = {}): Promise<number> {
  const m = await proxy.registry.getSingleMetric(name)?.get();
  if (!m) return 0;
  return m.values.filter((v) => Object.entries(match).every(([k, x]) => (v.labels as Record<string, unknown>)[k] === x)).reduce((s, v) => s + v.value, 0);
}

/** Requests an emulator finished (vLLM's request_success_total). */
export async function engineSuccesses(e: EngineEmulator): Promise<number> {
  const text = await e.metrics.registry.metrics();
  let n = 0;
  for (const line of text.split('\n')) if (line.startsWith('vllm:request_success_total')) n += Number(line.split(' ').pop());
  return n;
}

/**
 * Waits until the proxy's KV event stream from engine `id` is synced. A SUB socket still connecting
 * misses what is published meanwhile (ZeroMQ's slow joiner) and a lost first batch is only noticed at
 * the next one, so this sends small requests straight to the engine (bypassing the router, under a
 * salt no test tenant uses) until a batch gets through.
 */
export async function syncEvents(proxy: Proxy, engine: EngineEmulator, id: string): Promise<void> {
  const slot = proxy.router.fleet.snapshot().byId.get(id)!.slot;
  for (let i = 0; proxy.indexState(slot) !== 'synced'; i++) {
    if (i >= 100) throw new Error(`the KV event stream of ${id} never synced`);
    const r = await request(`${engine.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-dystro-tenant': 'warm-up' }, body: JSON.stringify({ model: MODEL, prompt: text(20, 1000 + i), max_tokens: 1 }) });
    await r.body.dump();
    await new Promise((res) => setTimeout(res, 30));
  }
}

/** A prompt of about `words` words, distinct per `seed`. */
export function text(words: number, seed = 0): string {
  const vocab = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliet', 'kilo', 'lima'];
  const out: string[] = [`seed${seed}`];
  for (let i = 0; i < words; i++) out.push(vocab[(i * 7 + seed * 13) % vocab.length]);
  return out.join(' ');
}
