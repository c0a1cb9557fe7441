/**
 * `dystro demo` (`npm run demo`): the real parts end to end on 127.0.0.1, in one process, ending by
 * itself. Four engine emulators in two accelerator pools (2 × H100, 2 × H200, Llama-3-8B, time-scaled),
 * publishing vLLM KV events over ZeroMQ; the reference proxy in front of them with the KV event ingest;
 * and a load generator replaying a slice of the shipped Mooncake conversation trace through real HTTP
 * at a fixed concurrency (streamed /v1/completions, prompts as token ids: each 512-token hash_id of the
 * trace is a fixed token stream, so shared hash_ids are shared prefixes). Midway the policy is swapped
 * through the control API (default round-robin → predicted-ttft). Every second a table shows each
 * replica's in-flight and served requests, its prefix-cache hit rate (usage.prompt_tokens_details
 * .cached_tokens ÷ prompt tokens, as the engines report it) and TTFT p50/p99 per phase; at the end a
 * summary compares the two phases.
 *
 * TTFT is measured by the load generator: from sending the request to the first streamed byte of the
 * body, which the proxy relays when the engine writes its first token. Times are wall milliseconds; the
 * engines run `timeScale` wall ms per modeled ms, so modeled TTFTs are these divided by timeScale.
 *
 * Why one process: the demo must start anywhere with `npm run demo` and leave nothing running. The
 * proxy's own overhead is measured apart, with the load generator in another process (bench/proxy.ts).
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Pool, request } from 'undici';
import { DystroError } from '../errors.js';
import { EngineEmulator } from '../emulator/server.js';
import { startProxy, type Proxy } from '../proxy/proxy.js';
import type { ProxyConfig } from '../proxy/config.js';
import { loadMooncake, type Workload } from '../sim/workloads.js';
import { pct, textTable } from '../sim/summary.js';

export const DEMO_USAGE = `usage: dystro demo [options]
  emulated engines in two pools (2 × H100, 2 × H200), the proxy with KV events, and a load generator
  replaying the Mooncake trace through HTTP; swaps the policy midway; prints a live table and a summary
  --duration S        seconds of load (default 40); the policy is swapped at half of it
  --requests N        trace requests to replay at most (default 6000; the run ends early when all are sent,
                      and the swap comes at half of them if that is sooner)
  --offset K          first trace request (default 0)
  --concurrency C     requests in flight from the load generator (default 12)
  --from P --to P     policies before and after the swap (default round-robin → predicted-ttft)
  --time-scale X      wall ms per modeled engine ms (default 0.1: engines run 10× faster than modeled)
  --max-tokens M      output tokens per request at most (default 32; the trace's own when smaller)
  --max-prompt N      prompt tokens at most (default 32768; longer trace prompts are cut to their prefix)
  --ingest thread|pool   KV event ingest in the proxy's thread (default) or in worker threads
  --interval MS       live table period (default 1000)
  --seed N            trace seed: token streams of the hash_ids (default 1)`;

const MODEL = 'llama-3-8b';
const POOLS = [
  { id: 'h100', accelerator: 'H100' },
  { id: 'h200', accelerator: 'H200' },
] as const;
const REPLICAS_PER_POOL = 2;
const TENANT_SALT = 'demo';

export interface DemoOptions {
  durationS: number;
  requests: number;
  offset: number;
  concurrency: number;
  from: string;
  to: string;
  timeScale: number;
  maxTokens: number;
  maxPrompt: number;
  ingest: 'thread' | 'pool';
  intervalMs: number;
  seed: number;
}

export const DEMO_DEFAULTS: DemoOptions = {
  durationS: 40,
  requests: 6000,
  offset: 0,
  concurrency: 12,
  from: 'round-robin',
  to: 'predicted-ttft',
  timeScale: 0.1,
  maxTokens: 32,
  maxPrompt: 32_768,
  ingest: 'thread',
  intervalMs: 1000,
  seed: 1,
};

/** One phase's (or one replica's within a phase) tallies. */
class Tally {
  requests = 0;
  errors = 0;
  promptTokens = 0;
  cachedTokens = 0;
  readonly ttftMs: number[] = [];
  readonly byPool = new Map<string, number>();

  add(r: Finished): void {
    if (!r.ok) {
      this.errors++;
      return;
    }
    this.requests++;
    this.promptTokens += r.promptTokens;
    this.cachedTokens += r.cachedTokens;
    this.ttftMs.push(r.ttftMs);
    this.byPool.set(r.pool, (this.byPool.get(r.pool) ?? 0) + 1);
  }

  get hitRate(): number {
    return this.promptTokens > 0 ? this.cachedTokens / this.promptTokens : NaN;
  }

  quantile(q: number): number {
    if (this.ttftMs.length === 0) return NaN;
    const s = [...this.ttftMs].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor(q * s.length))];
  }
}

interface Finished {
  ok: boolean;
  phase: number;
  replica: string;
  pool: string;
  promptTokens: number;
  cachedTokens: number;
  ttftMs: number;
}

export interface DemoPhaseSummary {
  policy: string;
  requests: number;
  errors: number;
  seconds: number;
  hitRate: number;
  ttftP50Ms: number;
  ttftP90Ms: number;
  ttftP99Ms: number;
  byPool: Record<string, number>;
}

export interface DemoSummary {
  phases: DemoPhaseSummary[];
  swapAtS: number;
  elapsedS: number;
}

const msText = (x: number) => (Number.isFinite(x) ? (x >= 10_000 ? `${(x / 1000).toFixed(1)} s` : `${x.toFixed(0)} ms`) : '—');

/** Runs the demo; `write` receives the live tables and the summary (text with newlines). */
export async function runDemoWith(o: DemoOptions, write: (s: string) => void, signal?: AbortSignal): Promise<DemoSummary> {
  const workload = loadMooncake({ offset: o.offset, limit: o.requests, seed: o.seed });
  if (workload.requests.length === 0) throw new DystroError('DYSTRO_ERR_INVALID_CONFIG', `Expected \`--offset\` to leave trace requests to replay, got ${o.offset}`);
  const engines: EngineEmulator[] = [];
  let proxy: Proxy | null = null;
  let client: Pool | null = null;
  try {
    const ids: { id: string; pool: string }[] = [];
    for (const p of POOLS) {
      for (let i = 0; i < REPLICAS_PER_POOL; i++) {
        engines.push(await EngineEmulator.start({ servedModelName: MODEL, model: MODEL, accelerator: p.accelerator, timeScale: o.timeScale, seed: engines.length }));
        ids.push({ id: `${p.id}-${i}`, pool: p.id });
      }
    }
    const key = `sk-demo-${randomBytes(12).toString('hex')}`;
    const controlToken = randomBytes(24).toString('hex');
    const config: ProxyConfig = {
      listen: { host: '127.0.0.1', port: 0 },
      control: { host: '127.0.0.1', port: 0, token: controlToken },
      pools: POOLS.map((p, k) => ({ id: p.id, accelerator: p.accelerator, tensorParallel: 1, model: MODEL, kvCapacityBlocks: engines[k * REPLICAS_PER_POOL].kvBlocks })),
      engines: engines.map((e, i) => ({
        id: ids[i].id,
        pool: ids[i].pool,
        address: e.url,
        // The engines cache the demo tenant's blocks: their events are hashed in its namespace.
        kvEvents: { endpoint: e.eventsEndpoint!, replayEndpoint: e.replayEndpoint ?? undefined, tenant: TENANT_SALT },
      })),
      tenants: { demo: { salt: TENANT_SALT } },
      keys: [{ key, tenant: 'demo' }],
      policy: o.from,
      ingest: { mode: o.ingest },
      exposeDecision: true,
      scrape: { intervalMs: 250, timeoutMs: 1000 },
      // Long Mooncake prompts as token-id JSON run to a few hundred KB.
      limits: { maxBodyBytes: 16 * 1024 * 1024 },
    };
    proxy = await startProxy(config);
    client = new Pool(proxy.url, { connections: o.concurrency * 2 });
    write(
      `dystro demo: ${engines.length} engine emulators (${POOLS.map((p) => `${REPLICAS_PER_POOL} × ${p.accelerator}`).join(', ')}, ${MODEL}, ${o.timeScale} wall ms per modeled ms), ` +
        `proxy ${proxy.url} (KV events, ${o.ingest} ingest), Mooncake trace requests ${o.offset}…${o.offset + workload.requests.length - 1} ` +
        `at concurrency ${o.concurrency}; ${o.from} for ${(o.durationS / 2).toFixed(0)} s, then ${o.to}\n`,
    );
    return await drive(o, workload, proxy, client, controlToken, key, ids, write, signal);
  } finally {
    await client?.destroy().catch(() => {});
    await proxy?.close();
    await Promise.all(engines.map((e) => e.close()));
  }
}

async function drive(o: DemoOptions, w: Workload, proxy: Proxy, client: Pool, controlToken: string, key: string, ids: readonly { id: string; pool: string }[], write: (s: string) => void, signal?: AbortSignal): Promise<DemoSummary> {
  const policies = [o.from, o.to];
  const phases = [new Tally(), new Tally()];
  const perReplica = ids.map(() => [new Tally(), new Tally()]);
  const index = new Map(ids.map((r, i) => [r.id, i]));
  const started = performance.now();
  const phaseStart = [started, NaN];
  const phaseEnd = [NaN, NaN];
  let phase = 0;
  let next = 0;
  let sent = 0;
  let stopping = false;
  let swapAtS = NaN;
  const halfRequests = Math.ceil(w.requests.length / 2);
  const elapsedS = () => (performance.now() - started) / 1000;

  const one = async (i: number, ph: number): Promise<void> => {
    const ids32 = w.prompt(i);
    const prompt = ids32.length > o.maxPrompt ? ids32.subarray(0, o.maxPrompt) : ids32;
    const maxTokens = Math.min(o.maxTokens, w.requests[i].outputTokens);
    const body = `{"model":"${MODEL}","prompt":[${prompt.join(',')}],"max_tokens":${maxTokens},"stream":true,"stream_options":{"include_usage":true}}`;
    const t0 = performance.now();
    const f: Finished = { ok: false, phase: ph, replica: '', pool: '', promptTokens: prompt.length, cachedTokens: 0, ttftMs: NaN };
    try {
      const res = await client.request({ path: '/v1/completions', method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body });
      f.replica = String(res.headers['x-dystro-replica'] ?? '');
      if (res.statusCode !== 200) {
        await res.body.dump();
      } else {
        let text = '';
        for await (const chunk of res.body) {
          if (Number.isNaN(f.ttftMs)) f.ttftMs = performance.now() - t0;
          text += chunk;
        }
        // The usage chunk (stream_options.include_usage) comes last, before [DONE].
        const at = text.lastIndexOf('"usage":');
        const m = at >= 0 ? /"cached_tokens":(\d+)/.exec(text.slice(at)) : null;
        f.cachedTokens = m ? Number(m[1]) : 0;
        f.ok = at >= 0 && !text.includes('"error"');
      }
    } catch {
      f.ok = false;
    }
    const r = index.get(f.replica);
    f.pool = r !== undefined ? ids[r].pool : '';
    phases[ph].add(f);
    if (r !== undefined) perReplica[r][ph].add(f);
  };

  const worker = async (): Promise<void> => {
    while (!stopping && next < w.requests.length) {
      const i = next++;
      sent++;
      await one(i, phase);
    }
  };

  const swap = async (): Promise<void> => {
    phase = 1;
    phaseEnd[0] = phaseStart[1] = performance.now();
    swapAtS = elapsedS();
    const t0 = performance.now();
    const res = await request(`${proxy.controlUrl}/policy`, { method: 'PUT', headers: { authorization: `Bearer ${controlToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: o.to }) });
    const answer = await res.body.text();
    if (res.statusCode !== 200) throw new DystroError('DYSTRO_ERR_INVALID_CONFIG', `The control API refused the policy swap to "${o.to}": ${res.statusCode} ${answer.slice(0, 200)}`);
    write(`\n>>> ${swapAtS.toFixed(1)} s: policy swapped ${o.from} → ${o.to} through the control API (PUT /policy, ${(performance.now() - t0).toFixed(1)} ms); requests in flight finish where they were routed\n\n`);
  };

  const tty = Boolean((process.stdout as { isTTY?: boolean }).isTTY);
  let drawnLines = 0;
  const draw = async (): Promise<void> => {
    let replicas: { id: string; inflight: number; load: { running: number; waiting: number }; kvEvents: { state: string } | null; health: string; ejected: boolean }[] = [];
    try {
      const res = await request(`${proxy.controlUrl}/replicas`, { headers: { authorization: `Bearer ${controlToken}` } });
      replicas = ((await res.body.json()) as { replicas: typeof replicas }).replicas;
    } catch {
      // a closing proxy: draw what the load generator knows
    }
    const byId = new Map(replicas.map((r) => [r.id, r]));
    const rows = ids.map((r, k) => {
      const v = byId.get(r.id);
      const t = perReplica[k][phase];
      return [
        r.id,
        v ? String(v.inflight) : '—',
        v ? `${v.load.running}/${v.load.waiting}` : '—',
        String(perReplica[k][0].requests + perReplica[k][1].requests),
        v?.kvEvents?.state ?? '—',
        pct(t.hitRate),
        msText(t.quantile(0.5)),
        msText(t.quantile(0.99)),
      ];
    });
    const all = phases[phase];
    rows.push(['all', '', '', String(phases[0].requests + phases[1].requests), '', pct(all.hitRate), msText(all.quantile(0.5)), msText(all.quantile(0.99))]);
    const head = `t = ${elapsedS().toFixed(1)} s  phase ${phase + 1}: ${policies[phase]}  sent ${sent}, answered ${phases[0].requests + phases[1].requests}, errors ${phases[0].errors + phases[1].errors}`;
    const table = textTable(['replica', 'in flight', 'run/wait', 'served', 'KV events', `hit rate (ph ${phase + 1})`, 'TTFT p50', 'TTFT p99'], rows);
    const text = `${head}\n${table}\n`;
    if (tty && drawnLines > 0) write(`\x1b[${drawnLines}F\x1b[J`);
    write(tty ? text : `${text}\n`);
    drawnLines = tty ? text.split('\n').length - 1 : 0;
  };

  const onAbort = () => (stopping = true);
  signal?.addEventListener('abort', onAbort, { once: true });
  const workers = Array.from({ length: o.concurrency }, () => worker());
  const all = Promise.all(workers);
  let finished = false;
  void all.then(() => (finished = true));
  const durationMs = o.durationS * 1000;
  // The clock: swap at half the duration (or half the requests), stop at the duration, redraw each interval.
  let lastDraw = performance.now();
  while (!finished && !stopping) {
    await new Promise((r) => setTimeout(r, 50));
    const t = performance.now() - started;
    if (phase === 0 && (t >= durationMs / 2 || sent >= halfRequests)) {
      if (drawnLines > 0) drawnLines = 0; // keep the last table of phase 1 on screen
      await draw();
      drawnLines = 0;
      await swap();
    }
    if (t >= durationMs) stopping = true;
    if (performance.now() - lastDraw >= o.intervalMs) {
      lastDraw = performance.now();
      await draw();
    }
  }
  stopping = true;
  await all;
  if (phase === 0) phaseEnd[0] = performance.now();
  else phaseEnd[1] = performance.now();
  signal?.removeEventListener('abort', onAbort);
  await draw();

  const summary: DemoSummary = {
    swapAtS,
    elapsedS: elapsedS(),
    phases: phases.map((t, k) => ({
      policy: policies[k],
      requests: t.requests,
      errors: t.errors,
      seconds: Number.isNaN(phaseStart[k]) ? 0 : ((Number.isNaN(phaseEnd[k]) ? performance.now() : phaseEnd[k]) - phaseStart[k]) / 1000,
      hitRate: t.hitRate,
      ttftP50Ms: t.quantile(0.5),
      ttftP90Ms: t.quantile(0.9),
      ttftP99Ms: t.quantile(0.99),
      byPool: Object.fromEntries(POOLS.map((p) => [p.id, t.byPool.get(p.id) ?? 0])),
    })),
  };
  write(`\n${summaryText(summary)}\n`);
  return summary;
}

/** The final comparison of the two phases. */
export function summaryText(s: DemoSummary): string {
  const rows = s.phases
    .filter((p) => p.seconds > 0)
    .map((p, k) => {
      const served = Object.values(p.byPool).reduce((a, b) => a + b, 0);
      return [
        `phase ${k + 1}: ${p.policy}`,
        String(p.requests),
        String(p.errors),
        p.seconds > 0 ? (p.requests / p.seconds).toFixed(1) : '—',
        pct(p.hitRate),
        msText(p.ttftP50Ms),
        msText(p.ttftP90Ms),
        msText(p.ttftP99Ms),
        Object.entries(p.byPool).map(([pool, n]) => `${pool} ${served ? Math.round((100 * n) / served) : 0}%`).join(' · '),
      ];
    });
  let out = `Summary (${s.elapsedS.toFixed(1)} s; policy swapped at ${Number.isFinite(s.swapAtS) ? `${s.swapAtS.toFixed(1)} s` : '— (never)'})\n`;
  out += textTable(['phase', 'requests', 'errors', 'req/s', 'hit rate', 'TTFT p50', 'TTFT p90', 'TTFT p99', 'requests by pool'], rows);
  const [a, b] = s.phases;
  if (a.requests > 0 && b.requests > 0) {
    out += `\n${b.policy} against ${a.policy}: TTFT p50 ${(b.ttftP50Ms / a.ttftP50Ms).toFixed(2)}×, p99 ${(b.ttftP99Ms / a.ttftP99Ms).toFixed(2)}×, hit rate ${pct(b.hitRate)} vs ${pct(a.hitRate)}, throughput ${(b.requests / b.seconds / (a.requests / a.seconds)).toFixed(2)}×`;
    out += '\n(the phases replay consecutive parts of the trace, and phase 2 starts with the caches phase 1 left; TTFT is wall time)';
  }
  return out;
}

function numberOption(v: string | undefined, what: string, min: number, max: number, integer: boolean): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    throw new DystroError('DYSTRO_ERR_INVALID_CONFIG', `Expected \`--${what}\` to be ${integer ? 'an integer' : 'a number'} in ${min} … ${max}, got \`${v}\``);
  }
  return n;
}

export function parseDemoArgs(args: string[]): DemoOptions | 'help' {
  const { values } = parseArgs({
    args,
    options: {
      duration: { type: 'string' },
      requests: { type: 'string' },
      offset: { type: 'string' },
      concurrency: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      'time-scale': { type: 'string' },
      'max-tokens': { type: 'string' },
      'max-prompt': { type: 'string' },
      ingest: { type: 'string' },
      interval: { type: 'string' },
      seed: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return 'help';
  const d = DEMO_DEFAULTS;
  const ingest = values.ingest ?? d.ingest;
  if (ingest !== 'thread' && ingest !== 'pool') throw new DystroError('DYSTRO_ERR_INVALID_CONFIG', `Expected \`--ingest\` to be "thread" or "pool", got \`${ingest}\``);
  return {
    durationS: numberOption(values.duration, 'duration', 1, 86_400, false) ?? d.durationS,
    requests: numberOption(values.requests, 'requests', 1, 1_000_000, true) ?? d.requests,
    offset: numberOption(values.offset, 'offset', 0, 1_000_000, true) ?? d.offset,
    concurrency: numberOption(values.concurrency, 'concurrency', 1, 1024, true) ?? d.concurrency,
    from: values.from ?? d.from,
    to: values.to ?? d.to,
    timeScale: numberOption(values['time-scale'], 'time-scale', 0.001, 100, false) ?? d.timeScale,
    maxTokens: numberOption(values['max-tokens'], 'max-tokens', 1, 100_000, true) ?? d.maxTokens,
    maxPrompt: numberOption(values['max-prompt'], 'max-prompt', 16, 1 << 20, true) ?? d.maxPrompt,
    ingest,
    intervalMs: numberOption(values.interval, 'interval', 50, 60_000, true) ?? d.intervalMs,
    seed: numberOption(values.seed, 'seed', 0, 2 ** 31 - 1, true) ?? d.seed,
  };
}

/** The CLI entry: 0 after the summary, 2 for bad arguments, 1 when the run itself failed. SIGINT ends the load early. */
export async function runDemo(args: string[]): Promise<number> {
  let options: DemoOptions | 'help';
  try {
    options = parseDemoArgs(args);
  } catch (err) {
    console.error(`dystro demo: ${err instanceof DystroError ? `${err.code}: ${err.message}` : (err as Error).message}\n${DEMO_USAGE}`);
    return 2;
  }
  if (options === 'help') {
    console.log(DEMO_USAGE);
    return 0;
  }
  const ac = new AbortController();
  const onSignal = () => ac.abort();
  process.once('SIGINT', onSignal);
  try {
    const s = await runDemoWith(options, (text) => process.stdout.write(text), ac.signal);
    return s.phases.some((p) => p.requests > 0) ? 0 : 1;
  } catch (err) {
    console.error(`dystro demo: ${err instanceof DystroError ? `${err.code}: ${err.message}` : String((err as Error)?.stack ?? err)}`);
    return err instanceof DystroError ? 2 : 1;
  } finally {
    process.off('SIGINT', onSignal);
  }
}
