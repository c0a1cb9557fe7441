/**
 * SimEngine.abort, the hook the emulator uses when a client goes away: a running request (even one in
 * the step in flight) or a waiting one leaves, its blocks return to the free queue, blocks it cached stay
 * cached, and the engine serves the rest as before.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EngineRequest, SimEngine, type StepModel } from '../../src/sim/engine.ts';
import { jsBackend } from '../../src/kernels/js/index.ts';
import { PrefixHasher } from '../../src/hashing/prefix.ts';

const BS = 16;
const flat: StepModel = { stepS: () => 0.01 };
const hasher = new PrefixHasher(jsBackend, { blockSize: BS });
const seed = hasher.namespaceSeed({ model: 'm' });

function request(first: number, promptTokens: number, outputTokens: number): EngineRequest {
  const tokens = Uint32Array.from({ length: promptTokens }, (_, i) => first + i);
  const h = hasher.hashTokens(tokens, seed);
  return new EngineRequest(promptTokens, outputTokens, new Uint32Array(h.buffer, 0, 2 * h.length), h.length, null);
}

const listener = { firstToken() {}, finished() {} };

test('abort a running request during its step: blocks freed, cached prefix kept, endStep skips it', () => {
  const e = new SimEngine({ id: 'e', slot: 0, blockSize: BS, kvBlocks: 32, stepModel: flat, fastForward: false });
  const a = request(100, 64, 10);
  const b = request(5000, 40, 10);
  e.submit(a);
  e.submit(b);
  let t = 0;
  t += e.beginStep(t);
  e.endStep(t, listener); // both prefilled: a's 4 blocks and b's 2 cached
  assert.is(e.cachedBlocks(), 6);
  t += e.beginStep(t); // a decode step for both is in flight
  assert.ok(e.abort(a));
  assert.not.ok(e.abort(a), 'a request leaves once');
  assert.equal(e.running, [b]);
  e.endStep(t, listener);
  assert.is(a.generated, 1, 'the aborted request sampled nothing more');
  assert.is(b.generated, 2);
  assert.is(e.freeCount, 32 - b.nBlocks);
  assert.is(e.cachedBlocks(), 6, 'what it cached stays cached');
  // Its prompt is still a full hit for the next request with the same tokens.
  const again = request(100, 64, 1);
  e.submit(again);
  e.beginStep(t);
  assert.is(again.hitTokens, 48, 'three of four blocks reused (the last prompt token is recomputed)');
});

test('abort a waiting request: it leaves the queue, the others keep their order', () => {
  const e = new SimEngine({ id: 'e', slot: 0, blockSize: BS, kvBlocks: 64, stepModel: flat, fastForward: false, maxNumSeqs: 1 });
  const rs = [request(1, 20, 2), request(1000, 20, 2), request(2000, 20, 2), request(3000, 20, 2)];
  for (const r of rs) e.submit(r);
  e.beginStep(0);
  assert.is(e.waiting.length, 3);
  assert.ok(e.abort(rs[2]));
  assert.equal([e.waiting.at(0), e.waiting.at(1)], [rs[1], rs[3]]);
  assert.is(e.waiting.length, 2);
  assert.ok(rs[2].gone);
});

test.run();
