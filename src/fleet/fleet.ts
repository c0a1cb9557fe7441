/**
 * The fleet: accelerator pools and the replicas in them (DESIGN §5), with membership changes published
 * as immutable snapshots (STYLE 1: validate and build on change, swap one reference; the hot path reads
 * the snapshot and never sees a half-applied change).
 *
 * Every replica has a stable numeric slot (0 … capacity − 1) used by the load table and the prefix
 * index; a removed replica's slot is reused only after its index entries were wiped (listeners get a
 * `removed` change first). Load reports do not rebuild the snapshot: they are written in place into the
 * LoadTable (single writer), since they arrive far more often than membership changes.
 */
import { DystroError, fail } from '../errors.js';
import { systemClock, type Clock } from '../clock.js';
import { checkInteger } from '../hashing/validate.js';
import { LoadTable, type LoadReport, type SanitizeOutcome } from './load.js';

export type Health = 'healthy' | 'unhealthy';

export interface PoolSpec {
  /** Stable pool id, e.g. "h100-tp1". */
  id: string;
  /** Accelerator kind, e.g. "H100", "H200", "TPU v5e" (free text; the performance model knows some). */
  accelerator: string;
  /** Tensor-parallel degree: accelerators per replica. */
  tensorParallel: number;
  /** Model served by every replica of the pool. */
  model: string;
  /** KV-cache capacity of one replica, in blocks. */
  kvCapacityBlocks: number;
  /** Longest prompt + output a replica accepts, in tokens (default: unlimited). */
  maxContextTokens?: number;
  /**
   * Spillover order: the router sends a request to the lowest-ranked pool that has a replica able to
   * meet the request's TTFT SLO (or any replica, without an SLO), and spills to the next rank when that
   * pool is full or down (default 0: every pool on the same footing).
   */
  spilloverRank?: number;
  /** LoRA adapters the pool's replicas can serve (default: none; absent LoRA always allowed). */
  loras?: readonly string[];
}

export interface ReplicaSpec {
  id: string;
  pool: string;
  /** Where the proxy sends requests, e.g. "http://10.0.0.7:8000". */
  address: string;
  health?: Health;
}

export interface PoolView extends Readonly<Omit<PoolSpec, 'loras'>> {
  readonly index: number;
  readonly loras: ReadonlySet<string>;
  readonly maxContextTokens: number;
  readonly spilloverRank: number;
}

export interface ReplicaView {
  readonly id: string;
  readonly slot: number;
  readonly pool: PoolView;
  readonly address: string;
  /** Bumped by restart(): a new process with an empty cache and a new event sequence. */
  readonly incarnation: number;
  readonly health: Health;
  readonly drained: boolean;
}

export interface FleetSnapshot {
  /** Increases by one with every membership change. */
  readonly version: number;
  readonly pools: readonly PoolView[];
  /** Every replica, drained and unhealthy included, in slot order. */
  readonly replicas: readonly ReplicaView[];
  readonly byId: ReadonlyMap<string, ReplicaView>;
  /** Replica by slot (undefined for a free slot). */
  readonly bySlot: readonly (ReplicaView | undefined)[];
}

export type FleetChange =
  | { kind: 'added'; replica: ReplicaView }
  | { kind: 'updated'; replica: ReplicaView; previous: ReplicaView }
  | { kind: 'restarted'; replica: ReplicaView; previous: ReplicaView }
  | { kind: 'removed'; replica: ReplicaView };

export interface FleetOptions {
  pools: readonly PoolSpec[];
  replicas?: readonly ReplicaSpec[];
  /** Replica slots (default 4,096). */
  capacity?: number;
  clock?: Clock;
}

function checkId(value: unknown, what: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 256) fail('DYSTRO_ERR_INVALID_CONFIG', what, 'a non-empty string of at most 256 characters', value);
  return value;
}

function poolView(spec: PoolSpec, index: number): PoolView {
  if (spec === null || typeof spec !== 'object') fail('DYSTRO_ERR_INVALID_CONFIG', `pools[${index}]`, 'a pool object', spec);
  const where = `pools[${index}]`;
  checkId(spec.id, `${where}.id`);
  checkId(spec.accelerator, `${where}.accelerator`);
  checkId(spec.model, `${where}.model`);
  checkInteger(spec.tensorParallel, `${where}.tensorParallel`, 1, 1024, 'DYSTRO_ERR_INVALID_CONFIG');
  checkInteger(spec.kvCapacityBlocks, `${where}.kvCapacityBlocks`, 1, 2 ** 31, 'DYSTRO_ERR_INVALID_CONFIG');
  const maxContextTokens = spec.maxContextTokens === undefined ? Number.MAX_SAFE_INTEGER : checkInteger(spec.maxContextTokens, `${where}.maxContextTokens`, 1, Number.MAX_SAFE_INTEGER, 'DYSTRO_ERR_INVALID_CONFIG');
  if (spec.loras !== undefined && (!Array.isArray(spec.loras) || spec.loras.some((l) => typeof l !== 'string'))) {
    fail('DYSTRO_ERR_INVALID_CONFIG', `${where}.loras`, 'an array of LoRA adapter names', spec.loras);
  }
  return Object.freeze({
    id: spec.id,
    accelerator: spec.accelerator,
    tensorParallel: spec.tensorParallel,
    model: spec.model,
    kvCapacityBlocks: spec.kvCapacityBlocks,
    maxContextTokens,
    spilloverRank: spec.spilloverRank === undefined ? 0 : checkInteger(spec.spilloverRank, `${where}.spilloverRank`, 0, 1_000_000, 'DYSTRO_ERR_INVALID_CONFIG'),
    loras: new Set(spec.loras ?? []),
    index,
  });
}

export class Fleet {
  readonly load: LoadTable;
  readonly capacity: number;
  private readonly clock: Clock;
  private current: FleetSnapshot;
  private readonly freeSlots: number[] = [];
  private nextSlot = 0;
  private readonly listeners = new Set<(change: FleetChange, snapshot: FleetSnapshot) => void>();

  constructor(options: FleetOptions) {
    if (options === null || typeof options !== 'object') fail('DYSTRO_ERR_INVALID_CONFIG', 'options', 'an object { pools, replicas? }', options);
    if (!Array.isArray(options.pools) || options.pools.length === 0) fail('DYSTRO_ERR_INVALID_CONFIG', 'options.pools', 'a non-empty array of pools', options.pools);
    this.capacity = checkInteger(options.capacity ?? 4096, 'options.capacity', 1, 0xffffe, 'DYSTRO_ERR_INVALID_CONFIG');
    this.clock = options.clock ?? systemClock;
    this.load = new LoadTable(this.capacity);
    const pools = options.pools.map(poolView);
    const ids = new Set<string>();
    for (const p of pools) {
      if (ids.has(p.id)) fail('DYSTRO_ERR_INVALID_CONFIG', 'pools[].id', 'unique pool ids', p.id);
      ids.add(p.id);
    }
    this.current = Object.freeze({ version: 0, pools: Object.freeze(pools), replicas: Object.freeze([]), byId: new Map(), bySlot: Object.freeze([]) });
    for (const r of options.replicas ?? []) this.upsertReplica(r);
  }

  /** The current immutable snapshot (hot path: read it once per decision). */
  snapshot(): FleetSnapshot {
    return this.current;
  }

  /** Called after every membership change, with the new snapshot (e.g. to wipe a replica's index entries). */
  onChange(listener: (change: FleetChange, snapshot: FleetSnapshot) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  pool(id: string): PoolView {
    const p = this.current.pools.find((x) => x.id === id);
    if (!p) fail('DYSTRO_ERR_INVALID_CONFIG', 'pool', `one of ${this.current.pools.map((x) => `"${x.id}"`).join(', ')}`, id);
    return p;
  }

  replica(id: string): ReplicaView {
    const r = this.current.byId.get(id);
    if (!r) fail('DYSTRO_ERR_UNKNOWN_REPLICA', 'replica', 'the id of a replica in the fleet', id);
    return r;
  }

  /** Adds a replica or updates its pool, address or health (a pool change keeps the slot). */
  upsertReplica(spec: ReplicaSpec): ReplicaView {
    if (spec === null || typeof spec !== 'object') fail('DYSTRO_ERR_INVALID_CONFIG', 'replica', 'a replica object { id, pool, address }', spec);
    checkId(spec.id, 'replica.id');
    checkId(spec.address, 'replica.address');
    const pool = this.pool(checkId(spec.pool, 'replica.pool'));
    const health = spec.health ?? 'healthy';
    if (health !== 'healthy' && health !== 'unhealthy') fail('DYSTRO_ERR_INVALID_CONFIG', 'replica.health', '"healthy" or "unhealthy"', health);
    const previous = this.current.byId.get(spec.id);
    if (previous) {
      const next = Object.freeze({ ...previous, pool, address: spec.address, health });
      this.publish(next, { kind: 'updated', replica: next, previous });
      return next;
    }
    const slot = this.takeSlot();
    this.load.reset(slot);
    const view: ReplicaView = Object.freeze({ id: spec.id, slot, pool, address: spec.address, incarnation: 0, health, drained: false });
    this.publish(view, { kind: 'added', replica: view });
    return view;
  }

  /** Stops new traffic to a replica (in-flight requests finish); `undrain` reverses it. */
  drain(id: string, drained = true): ReplicaView {
    const previous = this.replica(id);
    if (previous.drained === drained) return previous;
    const next = Object.freeze({ ...previous, drained });
    this.publish(next, { kind: 'updated', replica: next, previous });
    return next;
  }

  setHealth(id: string, health: Health): ReplicaView {
    const previous = this.replica(id);
    if (health !== 'healthy' && health !== 'unhealthy') fail('DYSTRO_ERR_INVALID_CONFIG', 'health', '"healthy" or "unhealthy"', health);
    if (previous.health === health) return previous;
    const next = Object.freeze({ ...previous, health });
    this.publish(next, { kind: 'updated', replica: next, previous });
    return next;
  }

  /** A new incarnation: empty cache, new event sequence, load unknown until its next report. */
  restart(id: string): ReplicaView {
    const previous = this.replica(id);
    const next = Object.freeze({ ...previous, incarnation: previous.incarnation + 1 });
    this.load.reset(previous.slot);
    this.publish(next, { kind: 'restarted', replica: next, previous });
    return next;
  }

  remove(id: string): void {
    const gone = this.replica(id);
    const byId = new Map(this.current.byId);
    byId.delete(id);
    const bySlot = [...this.current.bySlot];
    bySlot[gone.slot] = undefined;
    this.swap(byId, bySlot);
    this.load.reset(gone.slot);
    this.emit({ kind: 'removed', replica: gone });
    // Listeners have wiped the slot's state: it may be reused now.
    this.freeSlots.push(gone.slot);
  }

  /** Writes a load report for a replica (sanitized; see load.ts). */
  updateLoad(id: string, report: LoadReport): SanitizeOutcome {
    if (report === null || typeof report !== 'object') fail('DYSTRO_ERR_INVALID_ARGUMENT', 'report', 'an object { running?, waiting?, prefillTokens?, kvUsage? }', report);
    return this.load.apply(this.replica(id).slot, report, this.clock.nowMs());
  }

  private takeSlot(): number {
    const reused = this.freeSlots.shift();
    if (reused !== undefined) return reused;
    if (this.nextSlot >= this.capacity) {
      throw new DystroError('DYSTRO_ERR_INVALID_CONFIG', `The fleet is full: all ${this.capacity} replica slots are in use (raise options.capacity)`, { capacity: this.capacity });
    }
    return this.nextSlot++;
  }

  private publish(view: ReplicaView, change: FleetChange): void {
    const byId = new Map(this.current.byId);
    byId.set(view.id, view);
    const bySlot = [...this.current.bySlot];
    bySlot[view.slot] = view;
    this.swap(byId, bySlot);
    this.emit(change);
  }

  private swap(byId: Map<string, ReplicaView>, bySlot: (ReplicaView | undefined)[]): void {
    const replicas = bySlot.filter((r): r is ReplicaView => r !== undefined);
    this.current = Object.freeze({
      version: this.current.version + 1,
      pools: this.current.pools,
      replicas: Object.freeze(replicas),
      byId,
      bySlot: Object.freeze(bySlot),
    });
  }

  private emit(change: FleetChange): void {
    for (const l of this.listeners) l(change, this.current);
  }
}
