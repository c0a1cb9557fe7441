/** Fleet membership snapshots and load sanitizing. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Fleet } from '../../src/fleet/fleet.ts';
import { sanitizeField } from '../../src/fleet/load.ts';
import { FakeClock } from '../../src/clock.ts';
import { DystroError } from '../../src/errors.ts';
import { code } from '../helpers/errors.ts';

const pools = [
  { id: 'h100', accelerator: 'H100', tensorParallel: 1, model: 'llama-3-8b', kvCapacityBlocks: 26_000 },
  { id: 'h200', accelerator: 'H200', tensorParallel: 1, model: 'llama-3-8b', kvCapacityBlocks: 52_000, loras: ['sql'] },
];


test('snapshots are immutable and swapped on each membership change', () => {
  const fleet = new Fleet({ pools, replicas: [{ id: 'a', pool: 'h100', address: 'http://127.0.0.1:9001' }] });
  const s1 = fleet.snapshot();
  fleet.upsertReplica({ id: 'b', pool: 'h200', address: 'http://127.0.0.1:9002' });
  const s2 = fleet.snapshot();
  assert.is(s1.replicas.length, 1);
  assert.is(s2.replicas.length, 2);
  assert.is(s2.version, s1.version + 1);
  assert.ok(Object.isFrozen(s2) && Object.isFrozen(s2.replicas) && Object.isFrozen(s2.replicas[0]));
  assert.is(s2.byId.get('b')!.pool.id, 'h200');
  assert.ok(s2.byId.get('b')!.pool.loras.has('sql'));
  fleet.drain('a');
  assert.is(fleet.snapshot().byId.get('a')!.drained, true);
  assert.is(s2.byId.get('a')!.drained, false, 'old snapshot unchanged');
});

test('restart bumps the incarnation and forgets load; remove frees the slot after listeners ran', () => {
  const clock = new FakeClock(100);
  const fleet = new Fleet({ pools, clock, capacity: 2 });
  const changes: string[] = [];
  fleet.onChange((c) => changes.push(`${c.kind}:${c.replica.id}`));
  const a = fleet.upsertReplica({ id: 'a', pool: 'h100', address: 'x' });
  fleet.upsertReplica({ id: 'b', pool: 'h100', address: 'y' });
  fleet.updateLoad('a', { running: 3, waiting: 1, kvUsage: 0.5, prefillTokens: 1000 });
  assert.equal(fleet.load.read(a.slot).unknown, []);
  const r = fleet.restart('a');
  assert.is(r.incarnation, 1);
  assert.is(r.slot, a.slot);
  assert.equal(fleet.load.read(a.slot).unknown, ['running', 'waiting', 'prefillTokens', 'kvUsage']);
  assert.is(code(() => fleet.upsertReplica({ id: 'c', pool: 'h100', address: 'z' })), 'DYSTRO_ERR_INVALID_CONFIG');
  fleet.remove('a');
  const c = fleet.upsertReplica({ id: 'c', pool: 'h100', address: 'z' });
  assert.is(c.slot, a.slot, 'slot reused after removal');
  assert.equal(changes, ['added:a', 'added:b', 'restarted:a', 'removed:a', 'added:c']);
  assert.is(code(() => fleet.drain('a')), 'DYSTRO_ERR_UNKNOWN_REPLICA');
  assert.is(code(() => fleet.updateLoad('zzz', { running: 1 })), 'DYSTRO_ERR_UNKNOWN_REPLICA');
});

test('load reports are sanitized: NaN and ±Infinity unknown, negatives clamped, percentages refused', () => {
  const fleet = new Fleet({ pools, replicas: [{ id: 'a', pool: 'h100', address: 'x' }] });
  const out = fleet.updateLoad('a', { running: NaN, waiting: -3, prefillTokens: Infinity, kvUsage: 85 });
  assert.equal(out.unknown.sort(), ['kvUsage', 'prefillTokens', 'running']);
  assert.equal(out.clamped, ['waiting']);
  const l = fleet.load.read(0);
  assert.is(l.running, Infinity);
  assert.is(l.waiting, 0);
  assert.is(l.kvUsage, Infinity);
  // Unknown compares as worse than any known load, so it never attracts traffic.
  assert.ok(l.running > 1e9);
  assert.equal(sanitizeField('kvUsage', 1.02), { value: 1, state: 'clamped' });
  assert.equal(sanitizeField('kvUsage', -0.01), { value: 0, state: 'clamped' });
  assert.equal(sanitizeField('running', 2.7), { value: 2, state: 'clamped' });
  assert.equal(sanitizeField('running', '3' as never), { value: Infinity, state: 'unknown' });
  assert.equal(sanitizeField('waiting', 5e9), { value: Infinity, state: 'unknown' });
  // Absent fields keep their previous value.
  fleet.updateLoad('a', { running: 4 });
  assert.is(fleet.load.read(0).waiting, 0);
  assert.is(fleet.load.read(0).running, 4);
});

test('invalid configuration is refused with typed errors', () => {
  assert.is(code(() => new Fleet({ pools: [] })), 'DYSTRO_ERR_INVALID_CONFIG');
  assert.is(code(() => new Fleet({ pools: [{ ...pools[0], tensorParallel: 0 }] })), 'DYSTRO_ERR_INVALID_CONFIG');
  assert.is(code(() => new Fleet({ pools: [{ ...pools[0], kvCapacityBlocks: NaN }] })), 'DYSTRO_ERR_INVALID_CONFIG');
  assert.is(code(() => new Fleet({ pools: [pools[0], pools[0]] })), 'DYSTRO_ERR_INVALID_CONFIG');
  assert.is(code(() => new Fleet({ pools, replicas: [{ id: 'a', pool: 'tpu', address: 'x' }] })), 'DYSTRO_ERR_INVALID_CONFIG');
  assert.is(code(() => new Fleet({ pools, replicas: [{ id: '', pool: 'h100', address: 'x' }] })), 'DYSTRO_ERR_INVALID_CONFIG');
  const f = new Fleet({ pools });
  assert.is(code(() => f.setHealth('nope', 'healthy')), 'DYSTRO_ERR_UNKNOWN_REPLICA');
  assert.is(code(() => f.updateLoad('nope', null as never)), 'DYSTRO_ERR_INVALID_ARGUMENT');
});

test.run();
