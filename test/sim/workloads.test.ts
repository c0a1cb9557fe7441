/**
 * Workloads: Mooncake replay (identical hash_ids give identical tokens, partial last blocks, arrivals
 * jittered within their bucket), Azure CSV parsing, the generators' shapes and sharing, rate scaling.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  MOONCAKE_BLOCK_TOKENS,
  VOCAB,
  describeWorkload,
  llmdPrecisePrefix,
  loadAzure,
  loadMooncake,
  multiTurn,
  parseAzureTimestamp,
  scaleRate,
  sharedPrefix,
  sliceWorkload,
  workloadFromSpec,
  zipfPrefixes,
} from '../../src/sim/workloads.ts';
import { DystroError } from '../../src/errors.ts';

const MOONCAKE = [
  { timestamp: 0, input_length: 1100, output_length: 10, hash_ids: [0, 1, 2] },
  { timestamp: 0, input_length: 700, output_length: 0, hash_ids: [0, 1] },
  { timestamp: 3000, input_length: 1024, output_length: 5, hash_ids: [0, 7] },
  { timestamp: 6000, input_length: 1536, output_length: 5, hash_ids: [0, 1, 9] },
]
  .map((r) => JSON.stringify(r))
  .join('\n');

const same = (a: Uint32Array, b: Uint32Array) => a.length === b.length && a.every((x, i) => x === b[i]);

test('Mooncake: shared hash_ids give identical tokens, others differ; partial blocks are prefixes', () => {
  const w = loadMooncake({ text: MOONCAKE, seed: 4, jitter: false });
  assert.is(w.requests.length, 4);
  const p = w.requests.map((_, i) => w.prompt(i));
  assert.equal(p.map((x) => x.length), [1100, 700, 1024, 1536]);
  const B = MOONCAKE_BLOCK_TOKENS;
  assert.ok(same(p[0].subarray(0, 2 * B), p[3].subarray(0, 2 * B)), 'ids 0, 1 shared');
  assert.ok(same(p[1], p[0].subarray(0, 700)), 'a partial block 1 is the start of block 1');
  assert.ok(same(p[2].subarray(0, B), p[0].subarray(0, B)));
  assert.not.ok(same(p[2].subarray(B, 2 * B), p[0].subarray(B, 2 * B)), 'id 7 is not id 1');
  assert.ok(p.every((x) => x.every((t) => t < VOCAB)));
  assert.is(w.requests[1].outputTokens, 1, 'an output of 0 becomes 1 (an engine always samples one)');
  const other = loadMooncake({ text: MOONCAKE, seed: 5, jitter: false });
  assert.not.ok(same(other.prompt(0), p[0]), 'the seed changes the tokens');
  assert.ok(same(loadMooncake({ text: MOONCAKE, seed: 4, jitter: false }).prompt(3), p[3]), 'deterministic');
});

test('Mooncake: arrivals spread uniformly within each 3 s bucket, sorted, seeded', () => {
  const w = loadMooncake({ text: MOONCAKE, seed: 1 });
  const t = w.requests.map((r) => r.arrivalMs);
  assert.ok(t.every((x, i) => i === 0 || x >= t[i - 1]), 'sorted');
  // Buckets 0, 3000, 6000 (the last gets the median width, 3000).
  for (const x of t) assert.ok(x >= 0 && x < 9000);
  assert.ok(t.filter((x) => x < 3000).length === 2);
  assert.equal(loadMooncake({ text: MOONCAKE, seed: 1 }).requests, w.requests);
  assert.not.equal(loadMooncake({ text: MOONCAKE, seed: 2 }).requests.map((r) => r.arrivalMs), t);
});

test('Mooncake: the shipped trace loads (12,031 requests, 3.4 req/s) and slices', () => {
  const w = loadMooncake();
  const d = describeWorkload(w);
  assert.is(d.requests, 12_031);
  assert.ok(Math.abs(d.ratePerS - 3.4) < 0.05, `rate ${d.ratePerS}`);
  assert.ok(Math.abs(d.inputTokensMean - 12_035) < 5);
  const s = sliceWorkload(w, 100, 200);
  assert.is(s.requests.length, 100);
  assert.is(s.requests[0].arrivalMs, 0);
  assert.ok(same(s.prompt(0), w.prompt(100)));
});

test('Mooncake: malformed lines are typed errors', () => {
  let code: string | undefined;
  try {
    loadMooncake({ text: '{"timestamp": 0, "input_length": 2000, "output_length": 1, "hash_ids": [1]}' });
  } catch (e) {
    code = (e as DystroError).code;
  }
  assert.is(code, 'DYSTRO_ERR_INVALID_CONFIG');
});

test('Azure: timestamps with 7 decimals, lengths, synthetic prompts after an optional shared system prompt', () => {
  assert.ok(Math.abs(parseAzureTimestamp('2023-11-16 18:15:46.6805900') - Date.UTC(2023, 10, 16, 18, 15, 46) - 680.59) < 1e-3);
  const csv = 'TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:50.5,300,0\n2023-11-16 18:15:46.6805900,374,44\n';
  const w = loadAzure({ text: csv, systemPromptTokens: 32 });
  assert.equal(w.requests.map((r) => [Math.round(r.arrivalMs * 1000) / 1000, r.inputTokens, r.outputTokens]), [
    [0, 406, 44],
    [3819.41, 332, 1],
  ]);
  const a = w.prompt(0);
  const b = w.prompt(1);
  assert.ok(same(a.subarray(0, 32), b.subarray(0, 32)), 'shared system prompt');
  assert.not.ok(same(a.subarray(32, 64), b.subarray(32, 64)));
  const conv = loadAzure({ trace: 'conv' });
  assert.is(conv.requests.length, 19_366);
  assert.is(loadAzure({ trace: 'code' }).requests.length, 8_819);
});

test('shared-prefix groups: every prompt is its group context then its own question; llm-d profile shape', () => {
  const w = sharedPrefix({ groups: 3, promptsPerGroup: 4, systemPromptTokens: 100, questionTokens: 20, outputTokens: 7, ratePerS: 10, rounds: 2, seed: 2 });
  assert.is(w.requests.length, 24);
  const groupOf = (i: number) => w.requests[i].sessionKey!.split('u')[0];
  for (let i = 0; i < 24; i++) {
    for (let j = 0; j < 24; j++) {
      const pi = w.prompt(i);
      const pj = w.prompt(j);
      assert.is(same(pi.subarray(0, 100), pj.subarray(0, 100)), groupOf(i) === groupOf(j));
      assert.is(same(pi, pj), w.requests[i].sessionKey === w.requests[j].sessionKey);
    }
  }
  const l = llmdPrecisePrefix(5);
  assert.is(l.requests.length, 750);
  assert.equal([l.requests[0].inputTokens, l.requests[0].outputTokens], [7200, 1000]);
  const d = describeWorkload(l);
  assert.ok(Math.abs(d.ratePerS - 5) < 0.6, `Poisson rate ${d.ratePerS}`);
});

test('multi-turn: each turn extends the previous turn and its answer (known to the workload)', () => {
  const w = multiTurn({ sessions: 3, turns: 3, systemPromptTokens: 50, userTokens: 10, outputTokens: 20, sessionRatePerS: 1, thinkTimeMs: 5000, seed: 1 });
  assert.is(w.requests.length, 9);
  const bySession = new Map<string, number[]>();
  w.requests.forEach((r, i) => bySession.set(r.sessionKey!, [...(bySession.get(r.sessionKey!) ?? []), i]));
  for (const idx of bySession.values()) {
    assert.equal(idx.map((i) => w.requests[i].inputTokens), [60, 90, 120]);
    for (let k = 1; k < idx.length; k++) {
      const prev = w.prompt(idx[k - 1]);
      const answer = w.output!(idx[k - 1])!;
      const cur = w.prompt(idx[k]);
      assert.ok(same(cur.subarray(0, prev.length), prev));
      assert.ok(same(cur.subarray(prev.length, prev.length + answer.length), answer));
    }
  }
});

test('Zipf prefixes: rank 1 is drawn most; prompts of one rank share the prefix', () => {
  const w = zipfPrefixes({ prefixes: 20, exponent: 1.2, prefixTokens: 64, suffixTokens: 16, outputTokens: 4, requests: 2000, ratePerS: 100, seed: 3 });
  const counts = new Map<string, number>();
  for (let i = 0; i < w.requests.length; i++) {
    const k = Array.from(w.prompt(i).subarray(0, 8)).join(',');
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  const sorted = [...counts.values()].sort((a, b) => b - a);
  assert.ok(sorted.length <= 20);
  // P(rank 1) = 1 / H(20, 1.2) ≈ 0.30.
  assert.ok(Math.abs(sorted[0] / 2000 - 0.3) < 0.05, `top share ${sorted[0] / 2000}`);
});

test('scaleRate compresses time and keeps the prompts', () => {
  const w = sharedPrefix({ groups: 2, promptsPerGroup: 2, systemPromptTokens: 16, questionTokens: 16, outputTokens: 2, ratePerS: 1, seed: 1 });
  const f = scaleRate(w, 4);
  w.requests.forEach((r, i) => {
    assert.ok(Math.abs(f.requests[i].arrivalMs - r.arrivalMs / 4) < 1e-9);
    assert.ok(same(f.prompt(i), w.prompt(i)));
  });
});

test('workload specs: plain data builds the same workloads; unknown kinds are typed errors', () => {
  const direct = scaleRate(sharedPrefix({ groups: 2, promptsPerGroup: 2, systemPromptTokens: 32, questionTokens: 16, outputTokens: 2, ratePerS: 5, seed: 9 }), 2);
  const spec = workloadFromSpec({ kind: 'shared-prefix', groups: 2, promptsPerGroup: 2, systemPromptTokens: 32, questionTokens: 16, outputTokens: 2, ratePerS: 5, seed: 9, rateScale: 2 });
  assert.equal(spec.requests, direct.requests);
  assert.ok(same(spec.prompt(3), direct.prompt(3)));
  assert.is(workloadFromSpec({ kind: 'mooncake', limit: 10 }).requests.length, 10);
  let code: string | undefined;
  try {
    workloadFromSpec({ kind: 'mooncak' } as never);
  } catch (e) {
    code = (e as DystroError).code;
  }
  assert.is(code, 'DYSTRO_ERR_INVALID_CONFIG');
});

test.run();
