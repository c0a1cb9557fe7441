/**
 * The simulator's commands: `dystro simulate`, `dystro compare`, `dystro sweep` (DESIGN §6). Options
 * are parsed with node:util parseArgs (no CLI framework: three commands with flat flags do not need
 * one); progress goes to stderr, results to stdout — a table by default, Markdown with
 * `--format markdown`, or JSON with `--json` for scripts — and reports to files (`--html`, `--markdown`).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DystroError, fail } from '../errors.js';
import { loadFleet, describeFleet, shippedFleets, type FleetConfig } from '../sim/fleet-config.js';
import { simulate } from '../sim/index.js';
import { compare, renderCompare, SCENARIO_NAMES, type CompareOptions, type ScenarioName } from '../sim/compare.js';
import { sweep, renderSweep, baseRate, specAt, type SimExtras } from '../sim/sweep.js';
import { compareHtml, sweepHtml } from '../sim/report-html.js';
import { markdownTable, ms, num, pct, textTable, type PolicyRef } from '../sim/summary.js';
import { WORKLOAD_KINDS, type WorkloadSpec } from '../sim/workloads.js';
import type { FailureScenario } from '../sim/sim.js';
import { Progress } from './progress.js';

export const SIM_USAGE = `simulator commands (workload and fleet options are shared):
  simulate [options]           one run: a policy on a workload and fleet
      --policy P               policy (default predicted-ttft); P{"param":value} for parameters
      --seed N                 seed of the workload and the router (default 1)
      --scenario NAME          add a failure: ${SCENARIO_NAMES.join(', ')}
  compare [options]            a candidate against baselines: gain, blast radius, failures, verdict
      --candidate P            the policy to deploy (default predicted-ttft)
      --baseline P[,P…]        one or more baselines (repeatable; default round-robin)
      --seeds 1,2              seeds, every policy runs each (default 1,2)
      --rate-scale X|knee      load: × the workload's own rate, or knee = where the reference's
                               TTFT p90 first misses the SLO (default 1)
      --knee-reference P       reference of the knee (default round-robin)
      --scenarios a,b|none     failure scenarios (default all: ${SCENARIO_NAMES.join(', ')})
      --capacity 0.5,1,2|none  also sweep these multiples of the load for each policy's capacity
      --html FILE              write the self-contained HTML report with SVG charts
  sweep [options]              policies × load levels in parallel (worker threads)
      --policies P,P…          policies (default round-robin,cache-aware,kv-cost,weighted-scorers,predicted-ttft)
      --loads 1,2,4            rate scales (default 1,2,4,8)
      --seeds 1                seeds (default 1)
      --html FILE              write an HTML report (attainment, goodput, TTFT p90 against load)
  workload:
      --trace T                mooncake (shipped conversation trace), azure-conv, azure-code,
                               or a path to a Mooncake .jsonl or an Azure .csv (default mooncake)
      --workload SPEC          instead: a workload spec as JSON text or a JSON file
                               ({"kind": "${WORKLOAD_KINDS.join('" | "')}", …})
      --limit N --offset N     keep requests offset … offset+N−1 of a trace
  fleet and model:
      --fleet F                fleet JSON file, or a shipped one: ${shippedFleets().join(', ')} (default h100x16)
      --slo-ttft MS --slo-tpot MS   SLO targets (default 2000 and 100)
      --sim JSON               extra simulator options ({"events": {"delayMs": 50}, "router": {…}})
      --backend auto|wasm|native|js
  output:
      --json                   the result as JSON on stdout (no table)
      --format text|markdown   stdout table format (default text)
      --markdown FILE          also write the Markdown report to FILE
      --threads N              worker threads (default: one per core; 0 = run in this thread)
      --quiet                  no progress on stderr`;

const COMMON = {
  trace: { type: 'string' },
  workload: { type: 'string' },
  limit: { type: 'string' },
  offset: { type: 'string' },
  fleet: { type: 'string' },
  'slo-ttft': { type: 'string' },
  'slo-tpot': { type: 'string' },
  sim: { type: 'string' },
  backend: { type: 'string' },
  json: { type: 'boolean' },
  format: { type: 'string' },
  markdown: { type: 'string' },
  html: { type: 'string' },
  threads: { type: 'string' },
  quiet: { type: 'boolean' },
} as const;

type Values = Record<string, string | boolean | string[] | undefined>;

function parse(args: string[], extra: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>): Values {
  try {
    return parseArgs({ args, allowPositionals: false, strict: true, options: { ...COMMON, ...extra } }).values as Values;
  } catch (e) {
    throw new DystroError('DYSTRO_ERR_INVALID_ARGUMENT', `${(e as Error).message}\n\n${SIM_USAGE}`);
  }
}

function str(v: Values, key: string): string | undefined {
  const x = v[key];
  return typeof x === 'string' ? x : undefined;
}

function number(v: Values, key: string, min = -Infinity): number | undefined {
  const s = str(v, key);
  if (s === undefined) return undefined;
  const n = Number(s);
  if (s.trim() === '' || !Number.isFinite(n) || n < min) fail('DYSTRO_ERR_INVALID_ARGUMENT', `--${key}`, `a number ≥ ${min}`, s);
  return n;
}

function integer(v: Values, key: string, min = 0): number | undefined {
  const n = number(v, key, min);
  if (n !== undefined && !Number.isInteger(n)) fail('DYSTRO_ERR_INVALID_ARGUMENT', `--${key}`, `an integer ≥ ${min}`, n);
  return n;
}

function numberList(s: string, what: string): number[] {
  const xs = s.split(',').map((x) => x.trim()).filter((x) => x !== '');
  const out = xs.map(Number);
  if (out.length === 0 || out.some((x) => !Number.isFinite(x) || x <= 0)) fail('DYSTRO_ERR_INVALID_ARGUMENT', what, 'a comma-separated list of numbers > 0', s);
  return out;
}

function json(text: string, what: string): unknown {
  const src = text.trim().startsWith('{') || text.trim().startsWith('[') ? text : existsSync(text) ? readFileSync(text, 'utf8') : null;
  if (src === null) fail('DYSTRO_ERR_INVALID_ARGUMENT', what, 'JSON text or the path of a JSON file', text);
  try {
    return JSON.parse(src);
  } catch (e) {
    throw new DystroError('DYSTRO_ERR_INVALID_ARGUMENT', `Expected \`${what}\` to be valid JSON: ${(e as Error).message}`);
  }
}

/**
 * Policies from the command line: names separated by commas (outside braces), each optionally with
 * its parameters as a JSON object: `cache-aware{"cacheThreshold":0},round-robin`.
 */
export function parsePolicies(values: readonly string[]): PolicyRef[] {
  const out: PolicyRef[] = [];
  for (const value of values) {
    let depth = 0;
    let start = 0;
    const items: string[] = [];
    for (let i = 0; i <= value.length; i++) {
      const ch = value[i];
      if (ch === '{') depth++;
      else if (ch === '}') depth--;
      if (i === value.length || (ch === ',' && depth === 0)) {
        const item = value.slice(start, i).trim();
        if (item) items.push(item);
        start = i + 1;
      }
    }
    for (const item of items) {
      const brace = item.indexOf('{');
      if (brace < 0) {
        out.push(item);
        continue;
      }
      const name = item.slice(0, brace).trim();
      const params = json(item.slice(brace), `parameters of ${name}`);
      if (params === null || typeof params !== 'object' || Array.isArray(params)) fail('DYSTRO_ERR_INVALID_ARGUMENT', `parameters of ${name}`, 'a JSON object', params);
      out.push({ name, params: params as Record<string, number | string | boolean> });
    }
  }
  return out;
}

/** The workload spec from --trace / --workload / --limit / --offset. */
export function workloadSpec(v: Values): WorkloadSpec {
  const limit = integer(v, 'limit', 1);
  const offset = integer(v, 'offset', 0);
  const w = str(v, 'workload');
  let spec: WorkloadSpec;
  if (w !== undefined) {
    if (str(v, 'trace') !== undefined) fail('DYSTRO_ERR_INVALID_ARGUMENT', '--trace and --workload', 'one of them', 'both');
    spec = json(w, '--workload') as WorkloadSpec;
    if (spec === null || typeof spec !== 'object' || !WORKLOAD_KINDS.includes((spec as { kind: (typeof WORKLOAD_KINDS)[number] }).kind)) {
      fail('DYSTRO_ERR_INVALID_ARGUMENT', '--workload', `a spec { "kind": ${WORKLOAD_KINDS.map((k) => `"${k}"`).join(' | ')}, … }`, spec);
    }
  } else {
    const t = str(v, 'trace') ?? 'mooncake';
    if (t === 'mooncake') spec = { kind: 'mooncake' };
    else if (t === 'azure-conv' || t === 'azure-code') spec = { kind: 'azure', trace: t === 'azure-conv' ? 'conv' : 'code' };
    else if (t.endsWith('.jsonl') && existsSync(t)) spec = { kind: 'mooncake', path: resolve(t) };
    else if (t.endsWith('.csv') && existsSync(t)) spec = { kind: 'azure', path: resolve(t) };
    else fail('DYSTRO_ERR_INVALID_ARGUMENT', '--trace', 'mooncake, azure-conv, azure-code, or the path of a Mooncake .jsonl or Azure .csv file', t);
  }
  if (limit !== undefined || offset !== undefined) {
    if (spec.kind !== 'mooncake' && spec.kind !== 'azure') fail('DYSTRO_ERR_INVALID_ARGUMENT', '--limit/--offset', 'a trace workload (mooncake or azure)', spec.kind);
    spec = { ...spec, ...(limit !== undefined ? { limit } : {}), ...(offset !== undefined ? { offset } : {}) };
  }
  return spec;
}

function fleetOf(v: Values): FleetConfig {
  return loadFleet(str(v, 'fleet') ?? 'h100x16');
}

function sloOf(v: Values): { ttftMs: number; tpotMs: number } {
  return { ttftMs: number(v, 'slo-ttft', 1) ?? 2000, tpotMs: number(v, 'slo-tpot', 1) ?? 100 };
}

function extrasOf(v: Values): SimExtras {
  const s = str(v, 'sim');
  const extras = (s !== undefined ? json(s, '--sim') : {}) as SimExtras;
  if (extras === null || typeof extras !== 'object' || Array.isArray(extras)) fail('DYSTRO_ERR_INVALID_ARGUMENT', '--sim', 'a JSON object of simulator options', extras);
  const backend = str(v, 'backend');
  return backend ? { ...extras, backend: backend as SimExtras['backend'] } : extras;
}

function formatOf(v: Values): 'text' | 'markdown' {
  const f = str(v, 'format') ?? 'text';
  if (f !== 'text' && f !== 'markdown') fail('DYSTRO_ERR_INVALID_ARGUMENT', '--format', 'text or markdown', f);
  return f;
}

/** The command line as typed (for the reports' "what was run"). */
function commandLine(name: string, args: readonly string[]): string {
  return ['dystro', name, ...args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`))].join(' ');
}

function write(path: string, text: string, what: string, quiet: boolean): void {
  writeFileSync(path, text);
  if (!quiet) process.stderr.write(`dystro: wrote ${what} to ${path}\n`);
}

// ---------------------------------------------------------------- simulate

export async function simulateCommand(args: string[]): Promise<number> {
  const v = parse(args, { policy: { type: 'string' }, seed: { type: 'string' }, scenario: { type: 'string', multiple: true }, 'rate-scale': { type: 'string' } });
  const policies = parsePolicies([str(v, 'policy') ?? 'predicted-ttft']);
  if (policies.length !== 1) fail('DYSTRO_ERR_INVALID_ARGUMENT', '--policy', 'one policy', str(v, 'policy'));
  const seed = integer(v, 'seed', 0) ?? 1;
  const fleet = fleetOf(v);
  const scale = number(v, 'rate-scale', 1e-9) ?? 1;
  const spec = specAt(workloadSpec(v), scale, seed);
  const base = baseRate(spec);
  const failures: FailureScenario[] = [];
  for (const name of (v.scenario as string[] | undefined) ?? []) {
    if (!SCENARIO_NAMES.includes(name as ScenarioName)) fail('DYSTRO_ERR_INVALID_ARGUMENT', '--scenario', SCENARIO_NAMES.join(', '), name);
    const atMs = Math.round((base.spanS * 1000) / 3);
    if (name === 'replica-loss') failures.push({ kind: 'replica-loss', atMs, replica: 0, detectAfterMs: 2000 });
    else if (name === 'pool-loss') failures.push({ kind: 'pool-loss', atMs, pool: fleet.pools[0].id!, detectAfterMs: 2000 });
    else if (name === 'cache-flush') failures.push({ kind: 'cache-flush', atMs });
    else failures.push({ kind: 'event-delay', atMs, durationMs: atMs, delayMs: 5000 });
  }
  const quiet = Boolean(v.quiet) || Boolean(v.json);
  const progress = new Progress(process.stderr, !quiet);
  const p = policies[0];
  const r = simulate({
    ...extrasOf(v),
    fleet: fleet.pools,
    workload: spec,
    policy: typeof p === 'string' ? p : { name: p.name, params: p.params },
    seed,
    slo: sloOf(v),
    failures,
    onProgress: (d, t) => progress.update(t ? d / t : 1, `simulating ${base.requests} requests`, `${d}/${t}`),
  });
  progress.done();
  if (v.json) {
    process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
    return 0;
  }
  const md = formatOf(v) === 'markdown';
  const c = r.prefix.ceilings;
  const rows = [
    ['requests', `${r.requests.total} (${r.requests.completed} completed, ${r.requests.shed} shed, ${r.requests.failed} failed, ${r.requests.retries} retries)`],
    ['offered load', `${num(base.ratePerS)} req/s over ${num(base.spanS, 0)} s (rate scale ×${scale})`],
    ['goodput', `${num(r.goodputRps)} req/s; ${pct(r.sloAttainment)} of requests within TTFT ${r.slo.ttftMs} ms and TPOT ${r.slo.tpotMs} ms`],
    ['TTFT p50 / p90 / p99', `${ms(r.ttftMs.p50)} / ${ms(r.ttftMs.p90)} / ${ms(r.ttftMs.p99)}`],
    ['TPOT p50 / p90 / p99', `${ms(r.tpotMs.p50)} / ${ms(r.tpotMs.p90)} / ${ms(r.tpotMs.p99)}`],
    ['prefix hit rate', `${pct(r.prefix.hitRate)} (router expected ${pct(r.prefix.expectedHitRate)}); ceilings: global LRU ${c ? pct(c.globalLru) : '—'}, infinite ${c ? pct(c.infinite) : '—'}`],
    ['skew (max / mean)', `requests ${num(r.skew.requests)}, busy time ${num(r.skew.busy)}`],
    ['engine', `${r.engine.steps} steps, ${r.engine.preemptions} preemptions, ${r.engine.evictions} evictions`],
    ['simulator', `${num(r.makespanS, 0)} s simulated in ${(r.perf.wallMs / 1000).toFixed(2)} s wall (${r.backend} kernels); route() p50 ${r.perf.decisionUs.p50} µs`],
  ];
  const head = `dystro simulate: ${r.policy} on ${r.workload} (${fleet.name}: ${describeFleet(fleet.pools)}), seed ${seed}${failures.length ? `, failures: ${failures.map((f) => f.kind).join(', ')}` : ''}`;
  const body = (md ? markdownTable : textTable)(['figure', 'value'], rows);
  process.stdout.write(`${head}\n\n${body}\n`);
  return 0;
}

// ---------------------------------------------------------------- compare

export async function compareCommand(args: string[]): Promise<number> {
  const v = parse(args, {
    candidate: { type: 'string' },
    baseline: { type: 'string', multiple: true },
    seeds: { type: 'string' },
    'rate-scale': { type: 'string' },
    'knee-reference': { type: 'string' },
    scenarios: { type: 'string' },
    capacity: { type: 'string' },
  });
  const cand = parsePolicies([str(v, 'candidate') ?? 'predicted-ttft']);
  if (cand.length !== 1) fail('DYSTRO_ERR_INVALID_ARGUMENT', '--candidate', 'one policy', str(v, 'candidate'));
  const baselines = parsePolicies((v.baseline as string[] | undefined) ?? ['round-robin']);
  const seeds = str(v, 'seeds') ? numberList(str(v, 'seeds')!, '--seeds') : [1, 2];
  if (seeds.some((s) => !Number.isInteger(s))) fail('DYSTRO_ERR_INVALID_ARGUMENT', '--seeds', 'integers', str(v, 'seeds'));
  const rs = str(v, 'rate-scale');
  const rateScale: CompareOptions['rateScale'] = rs === undefined ? 1 : rs === 'knee' ? 'knee' : numberList(rs, '--rate-scale')[0];
  const sc = str(v, 'scenarios');
  const scenarios = sc === undefined ? undefined : sc === 'none' ? [] : sc.split(',').map((s) => s.trim()) as ScenarioName[];
  for (const s of scenarios ?? []) if (!SCENARIO_NAMES.includes(s)) fail('DYSTRO_ERR_INVALID_ARGUMENT', '--scenarios', `names from ${SCENARIO_NAMES.join(', ')}, or none`, s);
  const cap = str(v, 'capacity');
  const capacity = cap === undefined || cap === 'none' ? false : numberList(cap, '--capacity');
  const fleet = fleetOf(v);
  const threads = integer(v, 'threads', 0);
  const quiet = Boolean(v.quiet);
  const progress = new Progress(process.stderr, !quiet);
  const kneeRef = str(v, 'knee-reference');
  const r = await compare({
    candidate: cand[0],
    baselines,
    workload: workloadSpec(v),
    fleet: fleet.pools,
    fleetName: fleet.name,
    seeds,
    slo: sloOf(v),
    rateScale,
    knee: kneeRef ? { reference: parsePolicies([kneeRef])[0] } : undefined,
    scenarios,
    capacity,
    sim: extrasOf(v),
    threads,
    command: commandLine('compare', args),
    onProgress: (f, d, t, phase) => progress.update(f, phase, `(${d}/${t} runs)`),
  });
  progress.done();
  if (str(v, 'html')) write(str(v, 'html')!, compareHtml(r), 'the HTML report', quiet);
  if (str(v, 'markdown')) write(str(v, 'markdown')!, renderCompare(r, 'markdown'), 'the Markdown report', quiet);
  if (v.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  else process.stdout.write(renderCompare(r, formatOf(v)));
  return 0;
}

// ---------------------------------------------------------------- sweep

export async function sweepCommand(args: string[]): Promise<number> {
  const v = parse(args, { policies: { type: 'string', multiple: true }, loads: { type: 'string' }, seeds: { type: 'string' } });
  const policies = parsePolicies((v.policies as string[] | undefined) ?? ['round-robin,cache-aware,kv-cost,weighted-scorers,predicted-ttft']);
  const loads = numberList(str(v, 'loads') ?? '1,2,4,8', '--loads');
  const seeds = numberList(str(v, 'seeds') ?? '1', '--seeds');
  const fleet = fleetOf(v);
  const quiet = Boolean(v.quiet);
  const progress = new Progress(process.stderr, !quiet);
  const r = await sweep({
    policies,
    loads,
    workload: workloadSpec(v),
    fleet: fleet.pools,
    fleetName: fleet.name,
    seeds,
    slo: sloOf(v),
    sim: extrasOf(v),
    threads: integer(v, 'threads', 0),
    onProgress: (f, d, t) => progress.update(f, 'sweep', `(${d}/${t} runs)`),
  });
  progress.done();
  if (str(v, 'html')) write(str(v, 'html')!, sweepHtml(r), 'the HTML report', quiet);
  if (str(v, 'markdown')) write(str(v, 'markdown')!, renderSweep(r, 'markdown'), 'the Markdown report', quiet);
  if (v.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  else process.stdout.write(renderSweep(r, formatOf(v)));
  return 0;
}
