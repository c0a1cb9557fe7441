/**
 * Group 2: consistent-hash lookups per backend (single key and batches of 1,024, reported per key),
 * bounded-load assignment, and Maglev table builds, with the npm peers doing the same job.
 *
 * Single-key calls go through what an application calls: `kernels.jump(key, n)` and the table objects'
 * `lookup` (which validates the key, then calls the kernel). Batches go through the front-ends'
 * `lookupBatch` / `jumpHashBatch` with a preallocated output. Keys are a fixed set of 1,024 random
 * 64-bit values held as bigints already (a BigUint64Array read would allocate a BigInt per key and
 * measure that instead).
 *
 * Peers: hashring is ketama-compatible with our ring's default placement (the same nodes win, checked
 * below); `.find(position)` is the same job as our lookup (hash given), `.get(string)` adds md5 and an
 * LRU cache, defeated here by cycling through 16,384 distinct keys (its cache holds 5,000).
 * @subspace/jump-consistent-hash and jump-gouache implement jump with BigInt / BigNumber arithmetic.
 * There is no Maglev or rendezvous package worth measuring, so Maglev is compared with the fastest
 * consistent-hash lookup a user could pick instead (hashring `.get`).
 */
import type { KernelBackend } from '../src/kernels/abi.ts';
import { HashRing, Maglev, MAGLEV_OFFSET_SEED, MAGLEV_SKIP_SEED, Rendezvous, jumpHashBatch } from '../src/hashing/consistent.ts';
import type { Peers } from './peers.ts';
import {
  compileLoop,
  mdTable,
  randomKeys,
  rngFor,
  runTimings,
  section,
  timingTable,
  type BenchConfig,
  type PeerSelector,
  type TaskSpec,
  type Timing,
} from './util.ts';

export const BATCH_KEYS = 1024;
export const RING_POINTS_PER_NODE = 160;
export const LOAD_FACTOR_C = 1.25;
const STRING_KEYS = 16384;

const n = (x: number) => x.toLocaleString('en-US');
export const opJump = (buckets: number, batch = false) => `jump ${n(buckets)} buckets${batch ? ', batch' : ''}`;
export const opRing = (nodes: number, batch = false) => `ring ${n(nodes)}×${RING_POINTS_PER_NODE}${batch ? ', batch' : ''}`;
export const opRingString = (nodes: number) => `ring ${n(nodes)}×${RING_POINTS_PER_NODE}, string key (md5)`;
export const opMaglev = (nodes: number, size: number, batch = false) => `Maglev ${n(nodes)} (M=${n(size)})${batch ? ', batch' : ''}`;
export const opRendezvous = (nodes: number, batch = false) => `rendezvous ${n(nodes)}${batch ? ', batch' : ''}`;
export const opBounded = (kind: 'ring' | 'Maglev') => `bounded ${kind} 1,000, ${n(BATCH_KEYS)} keys, c=${LOAD_FACTOR_C}`;
export const OP_MAGLEV_BUILD_KERNEL = 'Maglev build M=65,537, 1,000 nodes (kernel)';
export const OP_MAGLEV_BUILD_FRONTEND = 'Maglev build M=65,537, 1,000 nodes (new Maglev)';

export const PEER_HASHRING_FIND = 'hashring .find (hash given)';
export const PEER_HASHRING_GET = 'hashring .get (md5, uncached)';
export const PEER_SUBSPACE = '@subspace/jump-consistent-hash';
export const PEER_GOUACHE = 'jump-gouache';

export const JUMP_SIZES = [16, 1000, 10000];
export const MAGLEV_SIZES: readonly { nodes: number; size: number }[] = [
  { nodes: 16, size: 65537 },
  { nodes: 1000, size: 65537 },
  { nodes: 10000, size: 655373 },
];
export const RENDEZVOUS_SIZES = [16, 100];

/** Which peer rows count as "the same job" for a lookup operation (batches compare with single-key peers). */
export const lookupPeers: PeerSelector = (op) => {
  const base = op.replace(/, batch$/, '');
  const jump = /^jump ([\d,]+) buckets$/.exec(base);
  if (jump) return (t) => t.op === base;
  const ring = /^ring ([\d,]+)×\d+(, string key \(md5\))?$/.exec(base);
  if (ring) return ring[2] ? (t) => t.op === opRing(Number(ring[1].replace(/,/g, ''))) && t.impl === PEER_HASHRING_GET : (t) => t.op === base;
  const mag = /^Maglev ([\d,]+) /.exec(base);
  if (mag) return (t) => t.op === opRing(Number(mag[1].replace(/,/g, ''))) && t.impl === PEER_HASHRING_GET;
  return () => false;
};

export interface BuildTime {
  readonly what: string;
  readonly impl: string;
  readonly ms: number;
}

export interface LookupResult {
  readonly timings: Timing[];
  /** One-sample wall times of the table builds done for this group (ms). */
  readonly builds: BuildTime[];
  readonly warnings: string[];
  readonly notes: string[];
}

function time<T>(fn: () => T): { value: T; ms: number } {
  const t0 = performance.now();
  const value = fn();
  return { value, ms: performance.now() - t0 };
}

export function runLookups(backends: readonly KernelBackend[], peers: Peers, cfg: BenchConfig): { result: LookupResult; markdown: string } {
  const keys = randomKeys(BATCH_KEYS, 'lookup.keys');
  const keyList = Array.from(keys);
  const out = new Int32Array(BATCH_KEYS);
  const positions = keyList.map((k) => Number(k & 0xffffffffn));
  const keyBytes = keyList.map((k) => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, k, false);
    return b;
  });
  const stringKeys = Array.from({ length: STRING_KEYS }, (_, i) => `session-${i}-${(i * 2654435761) >>> 0}`);
  const tasks: TaskSpec[] = [];
  const builds: BuildTime[] = [];
  const warnings: string[] = [];
  const notes: string[] = [];
  const tables: { free(): void }[] = [];

  const single = (op: string, k: KernelBackend, statement: string, env: Record<string, unknown>): TaskSpec => ({
    op,
    impl: k.name,
    kind: 'backend',
    unit: 'key',
    unitsPerCall: 1,
    loop: compileLoop(`${op} ${k.name}`, statement, env),
  });
  const batch = (op: string, k: KernelBackend, statement: string, env: Record<string, unknown>): TaskSpec => ({
    op,
    impl: k.name,
    kind: 'backend',
    unit: 'key',
    unitsPerCall: BATCH_KEYS,
    loop: compileLoop(`${op} ${k.name}`, statement, env),
  });
  const peer = (op: string, impl: string, statement: string, env: Record<string, unknown>): TaskSpec => ({
    op,
    impl,
    kind: 'peer',
    unit: 'key',
    unitsPerCall: 1,
    loop: compileLoop(`${op} ${impl}`, statement, env),
  });

  // --- jump ------------------------------------------------------------------------------------------
  for (const buckets of JUMP_SIZES) {
    const ref = backends[0] ? keyList.map((key) => backends[0].jump(key, buckets)) : [];
    for (const k of backends) {
      tasks.push(single(opJump(buckets), k, 'sink[i & 63] = k.jump(keys[(base + i) & 1023], buckets);', { k, keys: keyList, buckets }));
      tasks.push(batch(opJump(buckets, true), k, 'sink[i & 63] = jumpHashBatch(k, keys, buckets, out);', { k, keys, buckets, out, jumpHashBatch }));
    }
    if (peers.subspaceJump) {
      const f = peers.subspaceJump;
      const diff = keyBytes.filter((b, i) => f(b, buckets) !== ref[i]).length;
      if (diff) warnings.push(`${PEER_SUBSPACE} disagrees with our jump on ${diff}/${BATCH_KEYS} keys at ${buckets} buckets`);
      tasks.push(peer(opJump(buckets), PEER_SUBSPACE, 'sink[i & 63] = f(keys[(base + i) & 1023], buckets);', { f, keys: keyBytes, buckets }));
    }
    if (peers.gouacheJump) {
      const f = peers.gouacheJump;
      const diff = keyList.filter((key, i) => f(key, buckets) !== ref[i]).length;
      if (diff) notes.push(`jump-gouache (Guava's variant) picks a different bucket than the reference jump for ${diff}/${BATCH_KEYS} keys at ${buckets} buckets.`);
      tasks.push(peer(opJump(buckets), PEER_GOUACHE, 'sink[i & 63] = f(keys[(base + i) & 1023], buckets);', { f, keys: keyList, buckets }));
    }
  }

  // --- ring ------------------------------------------------------------------------------------------
  const ringSizes = cfg.largeRings ? [16, 1000, 10000] : [16, 1000];
  // One throwaway build first, so the first timed build does not also pay for compiling md5 and sort paths.
  new HashRing(backends[0], Array.from({ length: 64 }, (_, i) => `warm-${i}`)).free();
  const rings1000 = new Map<string, HashRing>();
  for (const nodes of ringSizes) {
    const names = Array.from({ length: nodes }, (_, i) => `node-${i}`);
    let refNames: (string | undefined)[] | undefined;
    for (const k of backends) {
      const { value: ring, ms } = time(() => new HashRing(k, names));
      tables.push(ring);
      builds.push({ what: `HashRing ${n(nodes)}×${RING_POINTS_PER_NODE} (new HashRing: md5 + sort + index)`, impl: k.name, ms });
      const got = keyList.map((key) => ring.nameOf(ring.lookup(key)));
      if (!refNames) refNames = got;
      else {
        const diff = got.filter((g, i) => g !== refNames![i]).length;
        if (diff) warnings.push(`${k.name} ring ${nodes} disagrees with ${backends[0].name} on ${diff}/${BATCH_KEYS} keys`);
      }
      if (nodes === 1000) rings1000.set(k.name, ring);
      tasks.push(single(opRing(nodes), k, 'sink[i & 63] = t.lookup(keys[(base + i) & 1023]);', { t: ring, keys: keyList }));
      tasks.push(batch(opRing(nodes, true), k, 'sink[i & 63] = t.lookupBatch(keys, out);', { t: ring, keys, out }));
      if (nodes === 1000) {
        // The job hashring's .get does: a string key through md5 to a node.
        tasks.push(single(opRingString(nodes), k, 'sink[i & 63] = t.lookup(t.keyOf(strs[(base + i) & mask]));', { t: ring, strs: stringKeys, mask: STRING_KEYS - 1 }));
      }
    }
    if (peers.HashRing) {
      const HR = peers.HashRing;
      const { value: hr, ms } = time(() => new HR(names));
      builds.push({ what: `HashRing ${n(nodes)}×${RING_POINTS_PER_NODE} (new HashRing: md5 + sort + index)`, impl: 'hashring', ms });
      if (refNames) {
        const diff = positions.filter((p, i) => hr.ring[hr.find(p)].server !== refNames![i]).length;
        if (diff) warnings.push(`hashring .find disagrees with our ring (${nodes} nodes) on ${diff}/${BATCH_KEYS} keys: not the same job`);
      }
      tasks.push(peer(opRing(nodes), PEER_HASHRING_FIND, 'sink[i & 63] = hr.ring[hr.find(pos[(base + i) & 1023])].server;', { hr, pos: positions }));
      tasks.push(peer(opRing(nodes), PEER_HASHRING_GET, 'sink[i & 63] = hr.get(strs[(base + i) & mask]);', { hr, strs: stringKeys, mask: STRING_KEYS - 1 }));
    }
  }

  // --- Maglev ----------------------------------------------------------------------------------------
  const maglevs1000 = new Map<string, Maglev>();
  for (const { nodes, size } of MAGLEV_SIZES) {
    const names = Array.from({ length: nodes }, (_, i) => `node-${i}`);
    let ref: Int32Array | undefined;
    for (const k of backends) {
      const { value: m, ms } = time(() => new Maglev(k, names, { size }));
      tables.push(m);
      builds.push({ what: `Maglev ${n(nodes)} nodes, M=${n(size)} (new Maglev)`, impl: k.name, ms });
      const got = m.lookupBatch(keys, new Int32Array(BATCH_KEYS));
      if (!ref) ref = got;
      else if (got.some((g, i) => g !== ref![i])) warnings.push(`${k.name} Maglev ${nodes} disagrees with ${backends[0].name}`);
      if (nodes === 1000) maglevs1000.set(k.name, m);
      tasks.push(single(opMaglev(nodes, size), k, 'sink[i & 63] = t.lookup(keys[(base + i) & 1023]);', { t: m, keys: keyList }));
      tasks.push(batch(opMaglev(nodes, size, true), k, 'sink[i & 63] = t.lookupBatch(keys, out);', { t: m, keys, out }));
    }
  }

  // --- rendezvous ------------------------------------------------------------------------------------
  for (const nodes of RENDEZVOUS_SIZES) {
    const names = Array.from({ length: nodes }, (_, i) => `node-${i}`);
    for (const k of backends) {
      const r = new Rendezvous(k, names);
      tables.push(r);
      tasks.push(single(opRendezvous(nodes), k, 'sink[i & 63] = t.lookup(keys[(base + i) & 1023]);', { t: r, keys: keyList }));
      tasks.push(batch(opRendezvous(nodes, true), k, 'sink[i & 63] = t.lookupBatch(keys, out);', { t: r, keys, out }));
    }
  }

  // --- bounded loads ---------------------------------------------------------------------------------
  // A fleet in steady state: loads spread over 48 … 80 (mean 64) before the batch arrives, so with c =
  // 1.25 the cap is ≈ 80 and the walk past a full node is exercised without dominating. The snapshot is
  // restored before every call so each call does the same work.
  const rng = rngFor('lookup.loads');
  const loadsSnapshot = Uint32Array.from({ length: 1000 }, () => 48 + rng.int(33));
  for (const k of backends) {
    const loads = new Uint32Array(1000);
    const ring = rings1000.get(k.name);
    const m = maglevs1000.get(k.name);
    const env = { loads, snap: loadsSnapshot, keys, out, c: LOAD_FACTOR_C };
    if (ring) tasks.push(batch(opBounded('ring'), k, 'loads.set(snap); sink[i & 63] = t.assignBounded(keys, loads, c, out);', { ...env, t: ring }));
    if (m) tasks.push(batch(opBounded('Maglev'), k, 'loads.set(snap); sink[i & 63] = t.assignBounded(keys, loads, c, out);', { ...env, t: m }));
  }

  // --- Maglev build (kernel alone, and the front-end that also hashes names) --------------------------
  {
    const names = Array.from({ length: 1000 }, (_, i) => `node-${i}`);
    const size = 65537;
    const ref = backends[0];
    const enc = new TextEncoder();
    const offsets = Uint32Array.from(names, (s) => Number(ref.xxh64(enc.encode(s), MAGLEV_OFFSET_SEED) % BigInt(size)));
    const skips = Uint32Array.from(names, (s) => Number(ref.xxh64(enc.encode(s), MAGLEV_SKIP_SEED) % BigInt(size - 1)) + 1);
    // Equal weights, as the front-end passes them (the heaviest node gets 2^20 credits a round).
    const weights = new Uint32Array(names.length).fill(1 << 20);
    for (const k of backends) {
      const buildTask = (op: string, statement: string): TaskSpec => ({
        op,
        impl: k.name,
        kind: 'backend',
        unit: 'build',
        unitsPerCall: 1,
        loop: compileLoop(`${op} ${k.name}`, statement, { k, offsets, skips, weights, size, names, Maglev, opts: { size } }),
      });
      tasks.push(buildTask(OP_MAGLEV_BUILD_KERNEL, 'const t = k.maglevBuild(offsets, skips, weights, size); if (typeof t === "number") throw new Error("maglevBuild " + t); k.free(t); sink[i & 63] = t;'));
      tasks.push(buildTask(OP_MAGLEV_BUILD_FRONTEND, 'const m = new Maglev(k, names, opts); m.free(); sink[i & 63] = m;'));
    }
  }

  const timings = runTimings('lookup', tasks, cfg);
  for (const t of tables) t.free();

  let md = section('2. Consistent-hash lookups (ns per key; batches of 1,024 keys reported per key)');
  md += `\nSingle-key calls pass a bigint key; "batch" passes a BigUint64Array of ${n(BATCH_KEYS)} keys and a preallocated Int32Array. hashring .get cycles through ${n(STRING_KEYS)} distinct string keys so its 5,000-entry LRU cache never hits. "vs best peer" compares with the fastest peer doing the same job (Maglev: hashring .get at the same node count).\n\n`;
  md += timingTable(timings, lookupPeers);
  md += '\n\nTable builds done for this group (one sample each, ms):\n\n';
  md += mdTable(
    ['table', 'implementation', 'build'],
    builds.map((b) => [b.what, b.impl, `${b.ms.toFixed(1)} ms`]),
    ['l', 'l', 'r'],
  );
  if (warnings.length) md += `\n\n**Mismatches:**\n${warnings.map((w) => `- ${w}`).join('\n')}`;
  if (notes.length) md += `\n\n${notes.map((w) => `- ${w}`).join('\n')}`;
  return { result: { timings, builds, warnings, notes }, markdown: md + '\n' };
}
