/**
 * Worker side of ThreadedCeilings (ceilings.ts): receives chunks of [blocks, promptTokens, hashes…]
 * records in arrival order, runs them through HitCeilings, and on `end` writes the totals into the
 * shared buffer and wakes the simulator.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { CEILING_FLAGS, HitCeilings, feed } from './ceilings.js';

const { blockSize, capacity, shared } = workerData as { blockSize: number; capacity: number; shared: SharedArrayBuffer };
const flags = new Int32Array(shared, 0, 2);
const out = new Float64Array(shared, 8, 4);
const ceilings = new HitCeilings(blockSize, capacity);
Atomics.store(flags, CEILING_FLAGS.S_STARTED, 1);

parentPort!.on('message', (m: { kind: 'chunk'; words: Int32Array } | { kind: 'end' }) => {
  try {
    if (m.kind === 'chunk') {
      feed(ceilings, m.words);
      return;
    }
    const r = ceilings.result();
    out[0] = r.promptTokens;
    out[1] = r.infiniteHitTokens;
    out[2] = r.globalLruHitTokens;
    Atomics.store(flags, CEILING_FLAGS.S_DONE, 1);
  } catch {
    Atomics.store(flags, CEILING_FLAGS.S_DONE, 2);
  }
  Atomics.notify(flags, CEILING_FLAGS.S_DONE);
  if (m.kind === 'end') parentPort!.close();
});
