/**
 * `dystro demo` as a user runs it (`node --import tsx src/cli/main.ts demo …`, the code of the built bin
 * and of `npm run demo`), shortened by its flags: it must end by itself (the process exits: every
 * engine, socket and timer closed), swap the policy midway through the control API, print the live
 * table and end with a summary of both phases with every request answered. Bad flags exit 2.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDemoArgs, summaryText } from '../../src/cli/demo.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

function dystro(...args: string[]): { code: number | null; stdout: string; stderr: string; ms: number } {
  const t0 = Date.now();
  // A demo that did not end by itself is killed here and fails the test.
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'main.ts'), ...args], { cwd: root, encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0 };
}

test('a shortened demo ends by itself with a summary of both phases', () => {
  const r = dystro('demo', '--duration', '5', '--requests', '400', '--concurrency', '6', '--interval', '1000');
  assert.is(r.code, 0, `exit ${r.code}\n${r.stderr}\n${r.stdout.slice(-2000)}`);
  const out = r.stdout;
  assert.match(out, /^dystro demo: 4 engine emulators \(2 × H100, 2 × H200, llama-3-8b/);
  assert.match(out, /policy swapped round-robin → predicted-ttft through the control API/);
  // Live tables: one row per replica and the fleet, each second.
  for (const id of ['h100-0', 'h100-1', 'h200-0', 'h200-1']) assert.match(out, new RegExp(`\\n${id}\\s+\\d+`));
  assert.ok((out.match(/^t = /gm) ?? []).length >= 4, 'a table about every second');
  const summary = out.slice(out.lastIndexOf('Summary ('));
  assert.ok(summary.length > 0 && out.trimEnd().endsWith('TTFT is wall time)'), out.slice(-800));
  const rows = [...summary.matchAll(/^phase (\d): (\S+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)%/gm)];
  assert.equal(rows.map((m) => [m[1], m[2]]), [['1', 'round-robin'], ['2', 'predicted-ttft']]);
  for (const m of rows) {
    assert.ok(Number(m[3]) > 20, `phase ${m[1]} answered ${m[3]} requests`);
    assert.is(Number(m[4]), 0, `phase ${m[1]} errors`);
  }
  assert.match(summary, /h100 \d+% · h200 \d+%/);
  assert.ok(r.ms < 30_000, `ended ${r.ms} ms after start`);
});

test('bad flags exit 2 naming the flag; --help exits 0', () => {
  const bad = dystro('demo', '--concurrency', '0');
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /--concurrency/);
  const help = dystro('demo', '--help');
  assert.is(help.code, 0);
  assert.match(help.stdout, /usage: dystro demo/);
  assert.throws(() => parseDemoArgs(['--ingest', 'fast']), /--ingest/);
  assert.is(parseDemoArgs(['--duration', '6']) !== 'help' && (parseDemoArgs(['--duration', '6']) as { durationS: number }).durationS, 6);
});

test('the summary compares the phases, and says so when the swap never came', () => {
  const phase = (policy: string, requests: number, p50: number) => ({ policy, requests, errors: 0, seconds: 10, hitRate: 0.1, ttftP50Ms: p50, ttftP90Ms: 2 * p50, ttftP99Ms: 3 * p50, byPool: { h100: requests / 2, h200: requests / 2 } });
  const both = summaryText({ swapAtS: 10, elapsedS: 20, phases: [phase('round-robin', 100, 80), phase('predicted-ttft', 120, 40)] });
  assert.match(both, /predicted-ttft against round-robin: TTFT p50 0\.50×, p99 0\.50×, hit rate 10\.0% vs 10\.0%, throughput 1\.20×/);
  const one = summaryText({ swapAtS: NaN, elapsedS: 3, phases: [phase('round-robin', 30, 80), { ...phase('predicted-ttft', 0, NaN), seconds: 0 }] });
  assert.match(one, /policy swapped at — \(never\)/);
  assert.not.match(one, /against/);
});

test.run();
