/**
 * The simulator's data structures against plain oracles on seeded random operation streams: the
 * block-hash table (backward-shift deletion), the hash set, the LRU set, and the event heap's order
 * (time, then insertion).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BlockHashSet, BlockHashTable, LruBlockSet } from '../../src/sim/block-table.ts';
import { EventQueue } from '../../src/sim/event-queue.ts';
import { createRng } from '../../src/rng.ts';

const key = (lo: number, hi: number) => `${lo >>> 0}:${hi >>> 0}`;

test('BlockHashTable matches a Map under random set / insertIfAbsent / delete, with small keys that cluster', () => {
  const rng = createRng(11);
  const table = new BlockHashTable(8);
  const oracle = new Map<string, number>();
  // Small key space: many collisions, long probe runs, wrap-around, growth.
  for (let i = 0; i < 60_000; i++) {
    const lo = rng.int(600);
    const hi = rng.int(3) === 0 ? 0xffffffff : rng.int(4);
    const k = key(lo, hi);
    const op = rng.int(4);
    if (op === 0) {
      table.set(lo, hi, i);
      oracle.set(k, i);
    } else if (op === 1) {
      const got = table.insertIfAbsent(lo, hi, i);
      assert.is(got, oracle.has(k) ? oracle.get(k)! : -1);
      if (!oracle.has(k)) oracle.set(k, i);
    } else if (op === 2) {
      assert.is(table.delete(lo, hi), oracle.has(k) ? oracle.get(k)! : -1);
      oracle.delete(k);
    } else {
      assert.is(table.get(lo, hi), oracle.has(k) ? oracle.get(k)! : -1);
    }
    assert.is(table.size, oracle.size);
  }
  for (const [k, v] of oracle) {
    const [lo, hi] = k.split(':').map(Number);
    assert.is(table.get(lo, hi), v);
  }
});

test('BlockHashSet holds what was added (the zero hash included) across growth', () => {
  const rng = createRng(5);
  const set = new BlockHashSet(4);
  const oracle = new Set<string>();
  for (let i = 0; i < 20_000; i++) {
    const lo = rng.int(3000);
    const hi = rng.int(2);
    if (rng.int(2) === 0) {
      set.add(lo, hi);
      oracle.add(key(lo, hi));
    } else assert.is(set.has(lo, hi), oracle.has(key(lo, hi)));
  }
  set.add(0, 0);
  assert.ok(set.has(0, 0));
  oracle.add(key(0, 0));
  assert.is(set.size, oracle.size);
});

test('LruBlockSet evicts exactly what a naive LRU list evicts', () => {
  const rng = createRng(9);
  const cap = 50;
  const lru = new LruBlockSet(cap);
  const naive: string[] = []; // least recent first
  for (let i = 0; i < 20_000; i++) {
    const lo = rng.int(120);
    const k = key(lo, 1);
    const at = naive.indexOf(k);
    if (rng.int(5) === 0 && at < 0) {
      lru.insert(lo, 1);
      naive.push(k);
    } else {
      lru.touch(lo, 1);
      if (at >= 0) naive.splice(at, 1);
      naive.push(k);
    }
    if (naive.length > cap) naive.shift();
    assert.is(lru.size, naive.length);
    const probe = rng.int(120);
    assert.is(lru.has(probe, 1), naive.includes(key(probe, 1)));
  }
});

test('EventQueue pops by (time, insertion) like a naive list, across growth and id reuse', () => {
  const rng = createRng(3);
  const q = new EventQueue();
  const pending: { t: number; seq: number }[] = [];
  let seq = 0;
  for (let round = 0; round < 60; round++) {
    for (let i = 0; i < 100; i++) {
      const t = round * 10 + rng.int(20); // many equal times, some earlier than already popped ones
      q.push(t, 1, seq, { seq });
      pending.push({ t, seq: seq++ });
    }
    const pops = round === 59 ? pending.length : 60;
    for (let i = 0; i < pops; i++) {
      let best = 0;
      for (let j = 1; j < pending.length; j++) if (pending[j].t < pending[best].t || (pending[j].t === pending[best].t && pending[j].seq < pending[best].seq)) best = j;
      const want = pending.splice(best, 1)[0];
      assert.ok(q.pop());
      assert.is(q.poppedTime, want.t);
      assert.is(q.poppedArg, want.seq);
      assert.is((q.poppedRef as { seq: number }).seq, want.seq);
    }
  }
  assert.is(q.size, 0);
  assert.not.ok(q.pop());
  assert.is(q.peekTime(), Infinity);
});

test.run();
