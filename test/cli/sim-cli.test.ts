/**
 * The simulator's commands as a user runs them (`node --import tsx src/cli/main.ts …`, the same code
 * as the built `dystro` bin): `--json` gives parseable JSON on stdout with progress kept to stderr,
 * tables by default, reports written where asked, fleet files validated with typed errors and exit
 * code 2, and the command-line policy syntax.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parsePolicies } from '../../src/cli/sim-commands.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'dystro-cli-'));
const SMALL = JSON.stringify({ kind: 'shared-prefix', groups: 8, promptsPerGroup: 4, systemPromptTokens: 2000, questionTokens: 100, outputTokens: 32, ratePerS: 20, rounds: 2, seed: 1 });
const fleetFile = join(dir, 'fleet.json');
writeFileSync(fleetFile, JSON.stringify({ name: 'tiny', model: 'llama-3-8b', pools: [{ id: 'h100', accelerator: 'H100', replicas: 2 }, { id: 'h200', accelerator: 'H200', replicas: 1 }] }));

function dystro(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'main.ts'), ...args], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('simulate --json: the whole result on stdout, nothing else', () => {
  const r = dystro('simulate', '--workload', SMALL, '--fleet', fleetFile, '--policy', 'kv-cost', '--json');
  assert.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.is(out.policy, 'kv-cost');
  assert.is(out.requests.total, 64);
  assert.is(out.replicas, 3);
  assert.equal(out.perReplica.map((x: { pool: string }) => x.pool), ['h100', 'h100', 'h200']);
});

test('simulate: a table by default, a shipped fleet by name, a failure scenario', () => {
  const r = dystro('simulate', '--workload', SMALL, '--fleet', 'h100-h200', '--scenario', 'cache-flush', '--quiet');
  assert.is(r.code, 0, r.stderr);
  assert.ok(r.stdout.startsWith('dystro simulate: predicted-ttft on shared-prefix (h100-h200: 8 × H100 (TP1) + 8 × H200 (TP1), llama-3-8b), seed 1, failures: cache-flush'));
  for (const s of ['goodput', 'TTFT p50 / p90 / p99', 'prefix hit rate']) assert.ok(r.stdout.includes(s), s);
});

test('compare --json with --html and --markdown: parseable JSON, both files written, a verdict', () => {
  const html = join(dir, 'r.html');
  const md = join(dir, 'r.md');
  const r = dystro('compare', '--candidate', 'predicted-ttft', '--baseline', 'round-robin', '--baseline', 'cache-aware{"cacheThreshold":0.5}', '--workload', SMALL, '--fleet', fleetFile, '--seeds', '1,2', '--scenarios', 'replica-loss,pool-loss', '--capacity', '1,2', '--threads', '0', '--html', html, '--markdown', md, '--json');
  assert.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.what.baselines, ['round-robin', 'cache-aware{cacheThreshold:0.5}']);
  assert.equal(out.what.seeds, [1, 2]);
  assert.ok(out.what.command.startsWith('dystro compare --candidate predicted-ttft'));
  assert.ok(['deploy', 'canary', 'hold', 'reject'].includes(out.verdict.decision));
  assert.is(out.scenarios.length, 2 * 3);
  assert.ok(existsSync(html) && readFileSync(html, 'utf8').includes('<svg class="chart" id="ttft-cdf"'));
  assert.ok(readFileSync(md, 'utf8').includes(out.verdict.line));
  assert.ok(r.stderr.includes('wrote the HTML report'));
});

test('sweep: a text table with capacities, through worker threads', () => {
  const r = dystro('sweep', '--policies', 'round-robin,predicted-ttft', '--loads', '1,2', '--workload', SMALL, '--fleet', fleetFile, '--threads', '2', '--quiet');
  assert.is(r.code, 0, r.stderr);
  assert.ok(r.stdout.includes('2 worker threads (piscina)'));
  assert.ok(r.stdout.includes('capacity at ≥ 90% SLO attainment'));
  assert.is((r.stdout.match(/^round-robin/gm) ?? []).length, 3, 'two loads and one capacity row');
});

test('bad input: exit code 2 and a message naming the problem', () => {
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, JSON.stringify({ model: 'llama-3-8b', pools: [{ accelerator: 'H100', replica: 2 }] }));
  let r = dystro('simulate', '--workload', SMALL, '--fleet', bad);
  assert.is(r.code, 2);
  assert.ok(r.stderr.includes('DYSTRO_ERR_INVALID_CONFIG') && r.stderr.includes('did you mean "replicas"'), r.stderr);
  r = dystro('compare', '--candidate', 'predicted-tfft', '--workload', SMALL, '--fleet', fleetFile);
  assert.is(r.code, 2);
  assert.ok(r.stderr.includes('DYSTRO_ERR_UNKNOWN_POLICY') && r.stderr.includes('predicted-ttft'), r.stderr);
  r = dystro('sweep', '--loads', 'fast', '--workload', SMALL);
  assert.is(r.code, 2);
  assert.ok(r.stderr.includes('--loads'));
  r = dystro('simulate', '--fleet', 'h100-h2000', '--workload', SMALL);
  assert.is(r.code, 2);
  assert.ok(r.stderr.includes('did you mean "h100-h200"'), r.stderr);
  r = dystro('compare', '--no-such-flag');
  assert.is(r.code, 2);
});

test('policy syntax: names, lists and JSON parameters', () => {
  assert.equal(parsePolicies(['a,b', 'c']), ['a', 'b', 'c']);
  assert.equal(parsePolicies(['cache-aware{"cacheThreshold":0,"balanceAbsThreshold":1e9},random']), [{ name: 'cache-aware', params: { cacheThreshold: 0, balanceAbsThreshold: 1e9 } }, 'random']);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
