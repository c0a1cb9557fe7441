/**
 * The simulated engine on crafted sequences: prefix-cache hits, the one-token recompute cap, LRU eviction
 * of unreferenced blocks with a finished request's blocks freed tail-first (vLLM's order), the STORE /
 * REMOVE / CLEAR records it emits, chunked prefill, preemption when KV runs out, and decode fast-forward
 * giving the same times as stepping one by one.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EngineRequest, SimEngine, rooflineStepModel, type EngineListener, type StepModel } from '../../src/sim/engine.ts';
import { OP_CLEAR, OP_REMOVE, OP_STORE, RECORD_WORDS } from '../../src/index/records.ts';
import { engineModel } from '../../src/model/roofline.ts';

const BS = 16;
/** Every step takes 10 ms, whatever it holds. */
const constant: StepModel = { stepS: () => 0.01 };

/** Hash pairs (lo, hi) = (id, 7) for the given block ids. */
function chain(...ids: number[]): Uint32Array {
  const h = new Uint32Array(2 * ids.length);
  ids.forEach((id, k) => {
    h[2 * k] = id;
    h[2 * k + 1] = 7;
  });
  return h;
}

function req(tokens: number, output: number, ids: number[], tag = 'r'): EngineRequest {
  return new EngineRequest(tokens, output, chain(...ids), ids.length, tag);
}

/** Drives one engine to idle, as the simulator would; returns the events seen. */
function drive(e: SimEngine, startMs = 0): { t: number; first: Map<unknown, number>; end: Map<unknown, number> } {
  const first = new Map<unknown, number>();
  const end = new Map<unknown, number>();
  const l: EngineListener = { firstToken: (r, t) => first.set(r.tag, t), finished: (r, t) => end.set(r.tag, t) };
  let t = startMs;
  for (let guard = 0; guard < 100_000; guard++) {
    const ms = e.beginStep(t);
    if (ms === 0) break;
    t += ms;
    e.endStep(t, l);
  }
  return { t, first, end };
}

function records(e: SimEngine): { op: number; lo: number }[] {
  const r = e.takeRecords();
  const out: { op: number; lo: number }[] = [];
  if (!r) return out;
  for (let i = 0; i < r.length; i += RECORD_WORDS) out.push({ op: r[i] & 0xff, lo: r[i + 2] });
  return out;
}

test('a repeated prefix hits the cache; a full hit still computes one token (vLLM recomputes the last)', () => {
  const e = new SimEngine({ id: 'e', slot: 3, blockSize: BS, kvBlocks: 64, stepModel: constant });
  const a = req(64, 1, [1, 2, 3, 4]);
  e.submit(a);
  drive(e);
  assert.is(a.hitTokens, 0);
  const stores = records(e);
  assert.equal(stores.map((x) => x.op), [OP_STORE, OP_STORE, OP_STORE, OP_STORE]);
  assert.equal(stores.map((x) => x.lo), [1, 2, 3, 4]);
  const b = req(64, 1, [1, 2, 3, 9]);
  e.submit(b);
  drive(e);
  assert.is(b.hitTokens, 48, 'three shared blocks');
  const same = req(64, 1, [1, 2, 3, 4]);
  e.submit(same);
  drive(e);
  assert.is(same.hitTokens, 48, 'capped at floor((64 − 1) / 16) blocks');
  const longer = req(70, 1, [1, 2, 3, 4]);
  e.submit(longer);
  drive(e);
  assert.is(longer.hitTokens, 64, 'a partial last block leaves tokens to compute');
});

test('unreferenced blocks are evicted least recently freed first, a finished request tail-first', () => {
  const e = new SimEngine({ id: 'e', slot: 0, blockSize: BS, kvBlocks: 8, stepModel: constant });
  // A takes blocks 0–3 (free queue [4..7]); freed tail-first → [4,5,6,7, a3,a2,a1,a0].
  e.submit(req(64, 1, [1, 2, 3, 4], 'A'));
  drive(e);
  // C takes 4–7; freed → [a3,a2,a1,a0, c3,c2,c1,c0].
  e.submit(req(64, 1, [11, 12, 13, 14], 'C'));
  drive(e);
  records(e);
  assert.is(e.cachedBlocks(), 8);
  // D needs two blocks: it evicts A's last two blocks, not its first.
  e.submit(req(32, 1, [21, 22], 'D'));
  drive(e);
  const recs = records(e);
  assert.equal(recs.filter((x) => x.op === OP_REMOVE).map((x) => x.lo), [4, 3]);
  assert.equal(recs.filter((x) => x.op === OP_STORE).map((x) => x.lo), [21, 22]);
  for (const [id, cached] of [[1, true], [2, true], [3, false], [4, false], [11, true], [14, true], [21, true]] as const) {
    assert.is(e.isCached(id, 7), cached, `block ${id}`);
  }
  // A again hits its surviving first half.
  const again = req(64, 1, [1, 2, 3, 4], 'A2');
  e.submit(again);
  drive(e);
  assert.is(again.hitTokens, 32);
  // Touched blocks left the free queue and A2 freed them last: the next allocation evicts C's, not A's head.
  records(e);
  e.submit(req(16, 1, [31], 'E'));
  drive(e);
  assert.ok(e.isCached(1, 7) && e.isCached(2, 7));
});

test('a cache flush forgets every hash and emits CLEAR; blocks in use stay allocated', () => {
  const e = new SimEngine({ id: 'e', slot: 5, blockSize: BS, kvBlocks: 32, stepModel: constant });
  e.submit(req(64, 1, [1, 2, 3, 4]));
  drive(e);
  records(e);
  e.flushCache();
  const recs = e.takeRecords()!;
  assert.is(recs.length, RECORD_WORDS);
  assert.is(recs[0] & 0xff, OP_CLEAR);
  assert.is(recs[1], 5, 'the record carries the router slot');
  assert.is(e.cachedBlocks(), 0);
  const b = req(64, 1, [1, 2, 3, 4]);
  e.submit(b);
  drive(e);
  assert.is(b.hitTokens, 0);
});

test('chunked prefill: a long prompt takes ceil(P / budget) steps; decodes ride along in every step', () => {
  const e = new SimEngine({ id: 'e', slot: 0, blockSize: BS, kvBlocks: 4096, stepModel: constant, maxBatchedTokens: 2048, fastForward: false });
  const decoding = req(100, 50, [], 'd');
  e.submit(decoding);
  e.beginStep(0);
  e.endStep(10, { firstToken() {}, finished() {} });
  const long = req(5000, 1, [], 'long');
  e.submit(long);
  const { first, end } = drive(e, 10);
  // 5,000 tokens with one decode per step: budgets of 2,047 → 3 steps.
  assert.is(first.get('long'), 10 + 3 * 10);
  assert.is(end.get('d'), 10 + 49 * 10, 'the decode never stalled');
});

test('preemption by recompute when KV runs out: the newest running request goes back to the queue, both finish', () => {
  const e = new SimEngine({ id: 'e', slot: 0, blockSize: BS, kvBlocks: 12, stepModel: constant, fastForward: false });
  const a = req(80, 60, [], 'a'); // 5 blocks, grows to 9
  const b = req(80, 60, [], 'b');
  e.submit(a);
  e.submit(b);
  const { end } = drive(e);
  assert.ok(e.stats.preemptions >= 1, 'KV for both (18 blocks) exceeds 12');
  assert.ok(b.preemptions >= 1 && a.preemptions === 0, 'the later admitted one is preempted');
  assert.ok(end.has('a') && end.has('b'));
  assert.is(a.generated, 60);
  assert.is(b.generated, 60);
  assert.is(e.freeCount, 12, 'every block back');
});

test('decode fast-forward gives the times of stepping one by one, also when a request arrives mid-run', () => {
  const model = rooflineStepModel(engineModel('llama-3-8b', 'H100', 1));
  const run = (fastForward: boolean) => {
    const e = new SimEngine({ id: 'e', slot: 0, blockSize: BS, kvBlocks: 4096, stepModel: model, fastForward });
    const first = new Map<unknown, number>();
    const end = new Map<unknown, number>();
    const l: EngineListener = { firstToken: (r, t) => first.set(r.tag, t), finished: (r, t) => end.set(r.tag, t) };
    e.submit(req(1000, 300, [], 'x'));
    e.submit(req(300, 120, [], 'y'));
    let t = 0;
    let stepEnd = e.beginStep(0);
    let arrived = false;
    for (let guard = 0; guard < 100_000; guard++) {
      // A third request arrives at 700 ms, in the middle of a decode run.
      if (!arrived && stepEnd > 700) {
        arrived = true;
        e.submit(req(500, 10, [], 'z'));
        const cut = e.interrupt(700);
        if (cut >= 0) stepEnd = cut;
      }
      t = stepEnd;
      e.endStep(t, l);
      const ms = e.beginStep(t);
      if (ms === 0) break;
      stepEnd = t + ms;
    }
    return { first, end, steps: e.stats.steps, busy: e.stats.busyMs };
  };
  const slow = run(false);
  const fast = run(true);
  for (const k of ['x', 'y', 'z']) {
    assert.ok(Math.abs(slow.first.get(k)! - fast.first.get(k)!) < 1e-6, `first token of ${k}`);
    assert.ok(Math.abs(slow.end.get(k)! - fast.end.get(k)!) < 1e-6, `end of ${k}: ${slow.end.get(k)} vs ${fast.end.get(k)}`);
  }
  assert.is(fast.steps, slow.steps);
  assert.ok(Math.abs(fast.busy - slow.busy) < 1e-6);
});

test('the roofline step model reduces to EngineModel.decodeStepS and, compute-bound, to prefillStepS', () => {
  const em = engineModel('llama-3-8b', 'H100', 1);
  const m = rooflineStepModel(em);
  const none = new Float64Array(0);
  assert.ok(Math.abs(m.stepS(none, none, 0, 64, 64 * 2048) - em.decodeStepS(64, 64 * 2048)) < 1e-12);
  const news = Float64Array.of(2048);
  const cached = Float64Array.of(1000);
  assert.ok(Math.abs(m.stepS(news, cached, 1, 0, 0) - em.prefillStepS([2048], [1000])) < 1e-12);
});

test.run();
