/**
 * Benchmark entry point: `npm run bench` (full, < 10 min) or `npm run bench:ci` (`--ci`, < 2 min, gates
 * decide the exit code). `--only=hashing,lookup,quality,heap,index,router,ingest` runs a subset while working on one part.
 *
 * Prints Markdown to stdout (progress to stderr) and writes everything measured to
 * .bench-out/latest.json. Groups: 1 prefix hashing, 2 lookups, 3 quality, 4 heap growth, the prefix
 * index, routing decisions, KV event ingest (bench/ingest.ts: worker pool, ring, drain), the reference
 * proxy's time-to-first-byte overhead and event loop delay (bench/proxy.ts), 5 gates, then a summary
 * table for the README.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { availableBackends } from '../src/kernels/select.ts';
import { evaluateGates, gatesMarkdown, missedGates } from './gates.ts';
import { runHashing } from './hashing.ts';
import { runHeap, type HeapResult } from './heap.ts';
import { runLookups } from './lookup.ts';
import { loadPeers } from './peers.ts';
import { runQuality, type QualityResult } from './quality.ts';
import { runIndexBench, type IndexBenchResult } from './prefix-index.ts';
import { runIngestBench, type IngestBenchResult } from './ingest.ts';
import { runProxyBench, type ProxyBenchGroup } from './proxy.ts';
import { runRouter, type RouterBenchResult } from './router.ts';
import { summaryMarkdown } from './summary.ts';
import { mdTable, parseConfig, type Timing } from './util.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const argv = process.argv.slice(2);

// The heap group needs a callable gc(); rather than asking every caller for a flag, re-run this very
// script under --expose-gc (keeping the tsx loader from execArgv) and pass its exit code through.
// --no-flush-bytecode: V8 otherwise drops the bytecode of functions idle for a few GCs, and the heap
// group's forced GCs would show that as the heap shrinking (or, once re-compiled, growing).
if (typeof (globalThis as { gc?: unknown }).gc !== 'function') {
  if (process.env.DYSTRO_BENCH_RESPAWNED) {
    console.error('bench: globalThis.gc is still missing after re-spawning with --expose-gc');
    process.exit(1);
  }
  const child = spawnSync(process.execPath, [...process.execArgv, '--expose-gc', '--no-flush-bytecode', fileURLToPath(import.meta.url), ...argv], {
    stdio: 'inherit',
    env: { ...process.env, DYSTRO_BENCH_RESPAWNED: '1' },
  });
  process.exit(child.status ?? 1);
}

function gitCommit(): string {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return dirty ? `${sha} (uncommitted changes)` : sha;
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<number> {
  const cfg = parseConfig(argv);
  const startedMs = performance.now();
  const wants = (group: string) => cfg.only.length === 0 || cfg.only.some((g) => group.includes(g));
  const { loaded, attempts } = availableBackends();
  const peers = await loadPeers();
  const cpu = cpus();

  const out = (s: string) => process.stdout.write(s.endsWith('\n') ? s : `${s}\n`);
  out(`# dystro benchmarks (${cfg.ci ? 'ci' : 'full'})\n`);
  out(
    mdTable(
      ['', ''],
      [
        ['date', new Date().toISOString()],
        ['commit', gitCommit()],
        ['Node', `${process.version} (V8 ${process.versions.v8}, N-API ${process.versions.napi}), ${process.platform}/${process.arch}`],
        ['CPU', `${cpu[0]?.model ?? 'unknown'} × ${cpu.length} logical cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`],
        ['backends', attempts.map((a) => (a.loaded ? `${a.backend}: loaded` : `${a.backend}: NOT loaded (${a.reason})`)).join('; ')],
        ['peers', peers.status.map((p) => `${p.name}${p.version ? `@${p.version}` : ''}${p.loaded ? '' : ` NOT loaded (${p.reason})`}`).join(', ')],
        ['method', `median of ${cfg.repeats} interleaved passes of tinybench (${cfg.taskTimeMs} ms a task a pass, calls batched to ~25 µs samples); ns per op`],
      ],
    ),
  );
  if (!loaded.some((k) => k.name === 'wasm')) {
    const why = attempts.find((a) => a.backend === 'wasm')?.reason;
    console.error(`\n*** bench: the wasm backend did not load (${why}). Run npm run build:wasm. ${cfg.ci ? 'This CI run will fail.' : ''} ***\n`);
  }

  const timings: Timing[] = [];
  const groupsRun = new Set<string>();
  const groupMs: Record<string, number> = {};
  const json: Record<string, unknown> = {};
  let quality: QualityResult | undefined;
  let heap: HeapResult | undefined;
  let indexBench: IndexBenchResult | undefined;
  let router: RouterBenchResult | undefined;
  let ingest: IngestBenchResult | undefined;
  let proxy: ProxyBenchGroup | undefined;
  const timedAsync = async <T>(group: string, fn: () => Promise<T>): Promise<T> => {
    process.stderr.write(`bench: ${group} …\n`);
    const t0 = performance.now();
    const r = await fn();
    groupMs[group] = performance.now() - t0;
    groupsRun.add(group);
    process.stderr.write(`bench: ${group} done in ${(groupMs[group] / 1000).toFixed(1)} s\n`);
    return r;
  };
  const timed = <T>(group: string, fn: () => T): T => {
    process.stderr.write(`bench: ${group} …\n`);
    const t0 = performance.now();
    const r = fn();
    groupMs[group] = performance.now() - t0;
    groupsRun.add(group);
    process.stderr.write(`bench: ${group} done in ${(groupMs[group] / 1000).toFixed(1)} s\n`);
    return r;
  };

  if (wants('hashing')) {
    const { result, markdown } = timed('hashing', () => runHashing(loaded, peers, cfg));
    timings.push(...result.timings);
    json.hashing = result;
    out(markdown);
  }
  if (wants('lookup')) {
    const { result, markdown } = timed('lookup', () => runLookups(loaded, peers, cfg));
    timings.push(...result.timings);
    json.lookup = result;
    out(markdown);
  }
  if (wants('quality')) {
    const r = timed('quality', () => runQuality(loaded[0], cfg));
    quality = r.result;
    json.quality = quality;
    out(r.markdown);
  }
  if (wants('heap')) {
    const r = timed('heap', () => runHeap(loaded, cfg));
    heap = r.result;
    json.heap = heap;
    out(r.markdown);
  }

  if (wants('index')) {
    const r = timed('index', () => runIndexBench(loaded, cfg));
    indexBench = r.result;
    json.index = indexBench;
    out(r.markdown);
  }

  if (wants('router')) {
    const r = timed('router', () => runRouter(loaded, cfg));
    router = r.result;
    timings.push(...router.timings);
    json.router = router;
    out(r.markdown);
  }

  if (wants('ingest')) {
    const r = await timedAsync('ingest', () => runIngestBench(cfg));
    ingest = r.result;
    json.ingest = ingest;
    out(r.markdown);
  }

  if (wants('proxy')) {
    const r = await timedAsync('proxy', () => runProxyBench(cfg));
    proxy = r.result;
    json.proxy = proxy;
    out(r.markdown);
  }

  const gates = evaluateGates({ attempts, timings, heap, quality, groupsRun, indexBench, router, ingest, proxy });
  out(gatesMarkdown(gates, cfg.ci));
  out(summaryMarkdown(timings, loaded.map((k) => k.name)));

  const totalMs = performance.now() - startedMs;
  out(`\nRun time: ${(totalMs / 1000).toFixed(1)} s (${Object.entries(groupMs).map(([g, ms]) => `${g} ${(ms / 1000).toFixed(1)} s`).join(', ')}).`);

  const outDir = join(root, '.bench-out');
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, 'latest.json');
  writeFileSync(
    file,
    JSON.stringify(
      {
        mode: cfg.ci ? 'ci' : 'full',
        date: new Date().toISOString(),
        commit: gitCommit(),
        node: process.version,
        v8: process.versions.v8,
        platform: `${process.platform}/${process.arch}`,
        cpu: cpu[0]?.model,
        cores: cpu.length,
        config: cfg,
        backends: attempts,
        peers: peers.status,
        timings,
        ...json,
        gates,
        runTimeMs: { total: totalMs, ...groupMs },
      },
      (_k, v) => (typeof v === 'bigint' ? v.toString() : v),
      2,
    ),
  );
  out(`Results written to ${file}.`);

  const missed = missedGates(gates);
  if (cfg.ci && missed.length) {
    const lines = missed.map((g) => `  - ${g.name}: ${g.value} (limit ${g.limit})${g.detail ? ` — ${g.detail}` : ''}`);
    console.error(`\nbench --ci: ${missed.length} gate(s) missed:\n${lines.join('\n')}`);
    out(`\n**${missed.length} gate(s) missed:**\n${lines.join('\n')}`);
    return 1;
  }
  if (cfg.ci) out('\nAll gates passed.');
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : err);
    process.exit(1);
  },
);
