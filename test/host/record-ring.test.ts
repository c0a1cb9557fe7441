/** The SPSC record ring: order, wrap-around, back-pressure, and a real producer thread. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Worker } from 'node:worker_threads';
import { RecordRing } from '../../src/host/record-ring.ts';

function records(from: number, n: number): Uint32Array {
  const r = new Uint32Array(n * 4);
  for (let i = 0; i < n; i++) r.set([1, from + i, (from + i) * 7, 0xffffffff - i], i * 4);
  return r;
}

test('records come out in order across many wrap-arounds; a full ring refuses after its timeout', () => {
  const ring = new RecordRing(16);
  assert.is(ring.capacity, 16);
  const out = new Uint32Array(64 * 4);
  let next = 0;
  let seen = 0;
  for (let round = 0; round < 100; round++) {
    const n = 1 + (round % 13);
    assert.is(ring.push(records(next, n), n, 0), n);
    next += n;
    const got = ring.drain(out, 64);
    for (let i = 0; i < got; i++) assert.is(out[i * 4 + 1], seen + i);
    seen += got;
  }
  assert.is(seen, next);
  assert.is(ring.push(records(0, 20), 20, 0), 16, 'only the free space is written when nobody drains');
  assert.is(ring.size(), 16);
  assert.is(ring.drain(out, 5), 5, 'drain is bounded by max');
  assert.is(ring.size(), 11);
});

test('a producer thread and this thread exchange 200,000 records without loss or reordering', async () => {
  const ring = new RecordRing(1024);
  const total = 200_000;
  const src = `
    const { workerData } = require('node:worker_threads');
    const buf = workerData.buffer; const header = new Int32Array(buf, 0, 16);
    const cap = Atomics.load(header, 2); const words = new Uint32Array(buf, 64, cap * 4);
    let sent = 0;
    while (sent < ${total}) {
      const head = Atomics.load(header, 0) >>> 0, tail = Atomics.load(header, 1) >>> 0;
      const free = cap - ((head - tail) >>> 0);
      if (free === 0) { Atomics.wait(header, 1, tail | 0, 5); continue; }
      const n = Math.min(free, ${total} - sent, 100);
      for (let i = 0; i < n; i++) { const d = ((head + i) & (cap - 1)) * 4; words[d] = 1; words[d + 1] = sent + i; words[d + 2] = 0; words[d + 3] = 0; }
      Atomics.store(header, 0, (head + n) | 0);
      sent += n;
    }`;
  const worker = new Worker(src, { eval: true, workerData: { buffer: ring.buffer } });
  const out = new Uint32Array(512 * 4);
  let expected = 0;
  const started = Date.now();
  while (expected < total && Date.now() - started < 20_000) {
    const n = ring.drain(out, 512);
    for (let i = 0; i < n; i++) {
      if (out[i * 4 + 1] !== expected) assert.unreachable(`record ${out[i * 4 + 1]} where ${expected} was due`);
      expected++;
    }
    if (n === 0) await new Promise((r) => setImmediate(r));
  }
  await worker.terminate();
  assert.is(expected, total);
});

test.run();
