/**
 * The reference proxy's own cost (group "proxy"): time to first byte through the proxy against the same
 * requests sent straight to the engines, in the same run, at 1,000 streaming requests/s, while the
 * engines publish KV events at 100,000 blocks/s into the proxy's ingest; and the proxy's event loop
 * delay meanwhile.
 *
 * Three processes, so that the proxy's event loop carries only the proxy:
 * - this one: the proxy (src/proxy; KV ingest pooled in worker threads for the gated run, in the
 *   proxy's thread too in full mode), and perf_hooks.monitorEventLoopDelay (1 ms resolution) over each
 *   phase through it, and this process's CPU time;
 * - a child with 4 engine emulators (H100, time scale 0.001: a 32-token prefill and two decode steps
 *   take microseconds of modeled time, so only their timer tick and their HTTP handling remain) and a
 *   synthetic KV publisher per engine (bench/proxy-child.ts: vLLM BlockStored batches every 5 ms,
 *   fresh 16-token-block chains, evictions once each holds 26,000 blocks: a Llama-3-8B H100 engine's
 *   KV capacity, so the index is the size a fleet of four such engines gives it);
 * - a child load generator: open-loop arrivals at the rate (request i at start + i / rate), streamed
 *   /v1/completions of 32 distinct token ids and 2 output tokens; TTFB = send → first body byte.
 *
 * Passes alternate the two paths (direct, proxy; then proxy, direct; …) so that drift on a shared
 * machine hits both alike. Overhead = a quantile through the proxy − the same quantile direct, over all
 * passes pooled (per-pass deltas are reported too). The engines' KV events run during both paths.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { startProxy, type Proxy } from '../src/proxy/proxy.ts';
import type { EnginesInit, EnginesReady, LoadResult, LoadRun } from './proxy-child.ts';
import { mdTable, section, type BenchConfig } from './util.ts';

const here = dirname(fileURLToPath(import.meta.url));
const MODEL = 'llama-3-8b';
const KEY = 'sk-bench-proxy-0000';
const RATE_PER_S = 1000;
const KV_BLOCKS_PER_S = 100_000;
/** monitorEventLoopDelay's sampling interval (ms): each recorded value is that interval plus the delay. */
const ELD_RESOLUTION_MS = 1;
const ENGINES = 4;

export interface PathFigures {
  requests: number;
  errors: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  achievedPerS: number;
}

export interface ProxyBenchResult {
  ratePerS: number;
  kvBlocksPerS: number;
  ingest: 'thread' | 'pool';
  passes: number;
  phaseMs: number;
  direct: PathFigures;
  proxy: PathFigures;
  overheadP50Ms: number;
  overheadP99Ms: number;
  /** Per pass: proxy − direct at p50 and p99. */
  passDeltas: { p50Ms: number; p99Ms: number }[];
  /** The proxy's event loop delay in the phases through it (ms, the sampling interval subtracted): the median phase's p50, the worst phase's p99 and max. */
  eventLoop: { p50Ms: number; p99Ms: number; maxMs: number };
  /** This process's CPU time per proxied request (µs): CPU in proxy phases − in direct phases, ÷ requests. */
  cpuPerRequestUs: number;
  /** This process's CPU share of one core in the direct phases (the KV ingest, scrapes, timers). */
  idleCpuShare: number;
  /** Blocks the proxy's ingest applied per second during the measured phases (stores and removals). */
  kvAppliedPerS: number;
  /** Blocks the engines stored per second over the measured phases. */
  kvPublishedPerS: number;
  /** Longest lateness of a send behind its schedule in the load generator (ms). */
  maxSendLagMs: number;
  /** Full mode: the event loop delay p99 through the proxy with no KV events (ms). */
  eventLoopNoEventsP99Ms?: number;
}

/** A monitorEventLoopDelay percentile as delay in ms (its sampling interval taken out). */
function eldMs(ns: number): number {
  return Math.max(0, ns / 1e6 - ELD_RESOLUTION_MS);
}

function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function figures(samples: number[], errors: number, achieved: number[]): PathFigures {
  const s = [...samples].sort((a, b) => a - b);
  return { requests: s.length, errors, p50Ms: quantile(s, 0.5), p90Ms: quantile(s, 0.9), p99Ms: quantile(s, 0.99), achievedPerS: achieved.reduce((a, b) => a + b, 0) / Math.max(1, achieved.length) };
}

/** A forked child speaking the bench/proxy-child.ts protocol. */
class Child {
  readonly proc: ChildProcess;
  private waiting: { type: string; resolve: (m: any) => void }[] = [];
  constructor(args: string[]) {
    this.proc = fork(join(here, 'proxy-child.ts'), args, { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.proc.on('message', (m: { type: string }) => {
      const i = this.waiting.findIndex((w) => w.type === m.type);
      if (i >= 0) this.waiting.splice(i, 1)[0].resolve(m);
    });
  }
  next<T>(type: string, timeoutMs = 60_000): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`bench proxy: no "${type}" from the child in ${timeoutMs} ms`)), timeoutMs);
      this.waiting.push({ type, resolve: (m) => (clearTimeout(t), resolve(m as T)) });
    });
  }
  ask<T>(msg: object, reply: string, timeoutMs?: number): Promise<T> {
    const p = this.next<T>(reply, timeoutMs);
    this.proc.send(msg);
    return p;
  }
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    const exited = new Promise<void>((r) => this.proc.once('exit', () => r()));
    this.proc.send({ type: 'stop' });
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(t);
  }
}

async function counterSum(registry: Registry, name: string): Promise<number> {
  const m = await registry.getSingleMetric(name)?.get();
  return m ? m.values.reduce((a, v) => a + v.value, 0) : 0;
}

export interface ProxyBenchGroup {
  /** The run the gates read: pooled KV ingest (worker threads), the mode for high event rates. */
  gated: ProxyBenchResult;
  /** Full mode: the same with the ingest in the proxy's thread. */
  others: ProxyBenchResult[];
}

/** --ci: one run, pooled ingest (~16 s); full: pooled and in-thread ingest, longer passes (~55 s). */
export async function runProxyBench(cfg: BenchConfig): Promise<{ result: ProxyBenchGroup; markdown: string }> {
  const gated = await runOne(cfg, 'pool');
  const others = cfg.ci ? [] : [await runOne(cfg, 'thread')];
  return { result: { gated, others }, markdown: [gated, ...others].map(proxyMarkdown).join('\n') };
}

async function runOne(cfg: BenchConfig, ingest: 'thread' | 'pool'): Promise<ProxyBenchResult> {
  const passes = cfg.ci ? 2 : 4;
  const phaseMs = cfg.ci ? 3_000 : 5_000;
  const engines = new Child(['engines', JSON.stringify({ count: ENGINES, timeScale: 0.001, accelerator: 'H100', cacheBlocks: 26_000 } satisfies EnginesInit)]);
  const load = new Child(['load']);
  let proxy: Proxy | null = null;
  try {
    const [ready] = await Promise.all([engines.next<EnginesReady>('ready'), load.next('ready')]);
    const registry = new Registry();
    proxy = await startProxy(
      {
        listen: { host: '127.0.0.1', port: 0 },
        control: { host: '127.0.0.1', port: 0, token: 'bench-control-token-0000' },
        pools: [{ id: 'h100', accelerator: 'H100', tensorParallel: 1, model: MODEL, kvCapacityBlocks: 26_000 }],
        engines: ready.urls.map((url, i) => ({ id: `e${i}`, pool: 'h100', address: url, kvEvents: ready.events[i] })),
        keys: [{ key: KEY, tenant: 'bench' }],
        tenants: { bench: {} },
        ingest: { mode: ingest },
      },
      { registry },
    );
    const proxyUrl = proxy.url;
    let requestNo = 0;
    const runPath = (targets: string[], headers: Record<string, string>, durationMs: number) => {
      const msg: LoadRun = { type: 'run', id: requestNo, targets, headers, model: MODEL, ratePerS: RATE_PER_S, durationMs, promptTokens: 32, maxTokens: 2, firstRequest: requestNo };
      requestNo += Math.ceil((RATE_PER_S * durationMs) / 1000) + 1;
      return load.ask<LoadResult>(msg, 'result', durationMs + 60_000);
    };
    const direct = () => runPath(ready.urls, {}, phaseMs);
    const viaProxy = () => runPath([proxyUrl], { authorization: `Bearer ${KEY}` }, phaseMs);

    await engines.ask({ type: 'events', blocksPerS: KV_BLOCKS_PER_S }, 'events-set');
    // Warm-up: JIT, connection pools, the ingest's tables (not measured).
    await runPath(ready.urls, {}, 1_000);
    await runPath([proxyUrl], { authorization: `Bearer ${KEY}` }, 1_500);

    // One monitor per phase: a re-enabled monitor's first sample would span the phase it was off for.
    const eld: { p50Ms: number; p99Ms: number; maxMs: number }[] = [];
    const cpu = { proxyUs: 0, proxyMs: 0, directUs: 0, directMs: 0 };
    const timedCpu = async (which: 'proxy' | 'direct', fn: () => Promise<LoadResult>): Promise<LoadResult> => {
      const c0 = process.cpuUsage();
      const w0 = performance.now();
      const r = await fn();
      const c = process.cpuUsage(c0);
      cpu[`${which}Us`] += c.user + c.system;
      cpu[`${which}Ms`] += performance.now() - w0;
      return r;
    };
    const d: LoadResult[] = [];
    const p: LoadResult[] = [];
    const passDeltas: { p50Ms: number; p99Ms: number }[] = [];
    const applied0 = await counterSum(registry, 'dystro_kv_blocks_applied_total');
    const stored0 = (await engines.ask<{ storedBlocks: number }>({ type: 'stats' }, 'stats')).storedBlocks;
    const t0 = performance.now();
    for (let k = 0; k < passes; k++) {
      const order = k % 2 === 0 ? ['direct', 'proxy'] : ['proxy', 'direct'];
      let dk: LoadResult | null = null;
      let pk: LoadResult | null = null;
      for (const which of order) {
        if (which === 'direct') d.push((dk = await timedCpu('direct', direct)));
        else {
          const h = monitorEventLoopDelay({ resolution: ELD_RESOLUTION_MS });
          h.enable();
          p.push((pk = await timedCpu('proxy', viaProxy)));
          h.disable();
          eld.push({ p50Ms: eldMs(h.percentile(50)), p99Ms: eldMs(h.percentile(99)), maxMs: eldMs(h.max) });
        }
      }
      const fd = figures(dk!.ttfbMs, dk!.errors, [dk!.achievedPerS]);
      const fp = figures(pk!.ttfbMs, pk!.errors, [pk!.achievedPerS]);
      passDeltas.push({ p50Ms: fp.p50Ms - fd.p50Ms, p99Ms: fp.p99Ms - fd.p99Ms });
    }
    const wallS = (performance.now() - t0) / 1000;
    const applied = (await counterSum(registry, 'dystro_kv_blocks_applied_total')) - applied0;
    const stored = (await engines.ask<{ storedBlocks: number }>({ type: 'stats' }, 'stats')).storedBlocks - stored0;
    const fd = figures(d.flatMap((r) => r.ttfbMs), d.reduce((a, r) => a + r.errors, 0), d.map((r) => r.achievedPerS));
    const fp = figures(p.flatMap((r) => r.ttfbMs), p.reduce((a, r) => a + r.errors, 0), p.map((r) => r.achievedPerS));
    const result: ProxyBenchResult = {
      ratePerS: RATE_PER_S,
      kvBlocksPerS: KV_BLOCKS_PER_S,
      ingest,
      passes,
      phaseMs,
      direct: fd,
      proxy: fp,
      overheadP50Ms: fp.p50Ms - fd.p50Ms,
      overheadP99Ms: fp.p99Ms - fd.p99Ms,
      passDeltas,
      // Over the phases: the median phase's p50, the worst phase's p99 and max.
      eventLoop: { p50Ms: [...eld.map((x) => x.p50Ms)].sort((a, b) => a - b)[eld.length >> 1], p99Ms: Math.max(...eld.map((x) => x.p99Ms)), maxMs: Math.max(...eld.map((x) => x.maxMs)) },
      // The direct phases' CPU rate, scaled to the proxy phases' length, is what this process spends anyway.
      cpuPerRequestUs: (cpu.proxyUs - (cpu.directUs * cpu.proxyMs) / cpu.directMs) / Math.max(1, fp.requests + fp.errors),
      idleCpuShare: cpu.directUs / 1000 / cpu.directMs,
      kvAppliedPerS: applied / wallS,
      kvPublishedPerS: stored / wallS,
      maxSendLagMs: Math.max(...d.map((r) => r.maxSendLagMs), ...p.map((r) => r.maxSendLagMs)),
    };
    if (!cfg.ci) {
      // The same load with the engines silent: what the KV ingest adds to the loop delay.
      await engines.ask({ type: 'events', blocksPerS: 0 }, 'events-set');
      const quiet = monitorEventLoopDelay({ resolution: ELD_RESOLUTION_MS });
      quiet.enable();
      await viaProxy();
      quiet.disable();
      result.eventLoopNoEventsP99Ms = eldMs(quiet.percentile(99));
    }
    return result;
  } finally {
    await proxy?.close();
    await Promise.all([engines.stop(), load.stop()]);
  }
}

const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '—');

export function proxyMarkdown(r: ProxyBenchResult): string {
  let md = section(`Proxy: time to first byte through the proxy against direct to the engines (${r.ingest} KV ingest)`);
  md += `\n${r.ratePerS.toLocaleString('en-US')} streaming requests/s open loop from a separate process, ${ENGINES} engine emulators in another (time scale 0.001), KV events at ${r.kvBlocksPerS.toLocaleString('en-US')} blocks/s into the proxy (${r.ingest} ingest); ${r.passes} passes × ${r.phaseMs / 1000} s per path, alternating. TTFB = send → first body byte, ms.\n\n`;
  md += mdTable(
    ['path', 'requests', 'errors', 'sent/s', 'p50', 'p90', 'p99'],
    [
      ['direct to the engines', r.direct.requests.toLocaleString('en-US'), String(r.direct.errors), r.direct.achievedPerS.toFixed(0), f2(r.direct.p50Ms), f2(r.direct.p90Ms), f2(r.direct.p99Ms)],
      ['through the proxy', r.proxy.requests.toLocaleString('en-US'), String(r.proxy.errors), r.proxy.achievedPerS.toFixed(0), f2(r.proxy.p50Ms), f2(r.proxy.p90Ms), f2(r.proxy.p99Ms)],
      ['overhead (proxy − direct)', '', '', '', f2(r.overheadP50Ms), '', f2(r.overheadP99Ms)],
    ],
    ['l', 'r', 'r', 'r', 'r', 'r', 'r'],
  );
  md += `\nPer pass, overhead p50 / p99: ${r.passDeltas.map((x) => `${f2(x.p50Ms)} / ${f2(x.p99Ms)}`).join('; ')} ms.\n`;
  md += `Proxy process CPU: ${r.cpuPerRequestUs.toFixed(0)} µs per proxied request, ${(100 * r.idleCpuShare).toFixed(0)}% of a core without requests (KV ingest, scrapes, timers).\n`;
  md += `Proxy event loop delay in its phases (monitorEventLoopDelay, ${ELD_RESOLUTION_MS} ms sampling interval subtracted; worst phase for p99 and max): p50 ${f2(r.eventLoop.p50Ms)} ms, p99 ${f2(r.eventLoop.p99Ms)} ms, max ${f2(r.eventLoop.maxMs)} ms`;
  md += r.eventLoopNoEventsP99Ms !== undefined ? ` (p99 with the engines' KV events off: ${f2(r.eventLoopNoEventsP99Ms)} ms).\n` : '.\n';
  md += `KV events: engines stored ${Math.round(r.kvPublishedPerS).toLocaleString('en-US')} blocks/s; the proxy applied ${Math.round(r.kvAppliedPerS).toLocaleString('en-US')} blocks/s (stores and evictions). Load generator's worst send lag behind schedule: ${f2(r.maxSendLagMs)} ms.\n`;
  return md;
}
