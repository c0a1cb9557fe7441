/**
 * Fleet configuration files for the simulator and the CLI (`--fleet`): a small JSON file naming the
 * pools — accelerator, tensor-parallel degree, replicas, model — that `simulate`, `compare` and `sweep`
 * run a workload on. Validated once here, with typed errors that name the field and the nearest valid
 * key, so a typo in a file fails before minutes of simulation rather than after.
 *
 *   { "name": "h100-h200", "model": "llama-3-8b",
 *     "pools": [ { "id": "h100", "accelerator": "H100", "tensorParallel": 1, "replicas": 8 },
 *                { "id": "h200", "accelerator": "H200", "replicas": 8 } ] }
 *
 * A top-level `model` is the default of every pool. Shipped examples live in src/sim/fleets/ and can be
 * named without a path (`--fleet h100-h200`).
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DystroError, describeValue, fail } from '../errors.js';
import { nearest } from '../policies/registry.js';
import { CHIPS, MODELS } from '../model/roofline.js';
import type { PoolConfig } from './sim.js';

export interface FleetConfig {
  name: string;
  description?: string;
  /** Plain data only (no step models): the pools cross thread boundaries in sweeps. */
  pools: PoolConfig[];
  /** Where the fleet came from (a file path, or "inline"). */
  source: string;
}

const TOP_KEYS = ['name', 'description', 'model', 'pools'] as const;
const POOL_KEYS = ['id', 'accelerator', 'tensorParallel', 'model', 'replicas', 'kvCapacityBlocks', 'maxBatchedTokens', 'maxNumSeqs'] as const;

function checkKeys(obj: Record<string, unknown>, known: readonly string[], where: string): void {
  for (const key of Object.keys(obj)) {
    if (!known.includes(key)) {
      const near = nearest(key, known);
      throw new DystroError('DYSTRO_ERR_INVALID_CONFIG', `Unknown key \`${key}\` in ${where}; valid: ${known.join(', ')}${near ? ` (did you mean "${near}"?)` : ''}`, { key, valid: known, nearest: near });
    }
  }
}

function positiveInt(v: unknown, what: string, min = 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) fail('DYSTRO_ERR_INVALID_CONFIG', what, `an integer ≥ ${min}`, v);
  return v;
}

/** Validates a parsed fleet file (or an equivalent object) into pools the simulator takes. */
export function parseFleet(data: unknown, source = 'inline'): FleetConfig {
  const top = Array.isArray(data) ? { pools: data } : data;
  if (top === null || typeof top !== 'object') fail('DYSTRO_ERR_INVALID_CONFIG', `fleet (${source})`, 'an object { pools: [...] } or an array of pools', data);
  const t = top as Record<string, unknown>;
  checkKeys(t, TOP_KEYS, `fleet (${source})`);
  if (!Array.isArray(t.pools) || t.pools.length === 0) fail('DYSTRO_ERR_INVALID_CONFIG', `fleet.pools (${source})`, 'a non-empty array of pools', t.pools);
  if (t.model !== undefined && typeof t.model !== 'string') fail('DYSTRO_ERR_INVALID_CONFIG', 'fleet.model', 'a model name', t.model);
  const ids = new Set<string>();
  const chipNames = Object.keys(CHIPS);
  const modelNames = Object.keys(MODELS);
  const pools = (t.pools as unknown[]).map((p, i): PoolConfig => {
    const where = `fleet.pools[${i}]`;
    if (p === null || typeof p !== 'object' || Array.isArray(p)) fail('DYSTRO_ERR_INVALID_CONFIG', where, 'a pool { accelerator, replicas, model? }', p);
    const q = p as Record<string, unknown>;
    checkKeys(q, POOL_KEYS, `${where} (${source})`);
    const accelerator = q.accelerator;
    if (typeof accelerator !== 'string' || !chipNames.includes(accelerator)) {
      const near = typeof accelerator === 'string' ? nearest(accelerator, chipNames) : undefined;
      throw new DystroError('DYSTRO_ERR_INVALID_CONFIG', `Expected \`${where}.accelerator\` to be one of ${chipNames.join(', ')}, got ${describeValue(accelerator)}${near ? ` (did you mean "${near}"?)` : ''}`);
    }
    const model = q.model ?? t.model;
    if (typeof model !== 'string' || !modelNames.includes(model.toLowerCase())) {
      fail('DYSTRO_ERR_INVALID_CONFIG', `${where}.model (or fleet.model)`, `one of ${modelNames.join(', ')}`, model);
    }
    const tensorParallel = positiveInt(q.tensorParallel ?? 1, `${where}.tensorParallel`);
    const replicas = positiveInt(q.replicas, `${where}.replicas`, 0);
    const id = q.id === undefined ? `${accelerator.toLowerCase().replace(/\s+/g, '')}-tp${tensorParallel}` : q.id;
    if (typeof id !== 'string' || id === '' || id.includes('/')) fail('DYSTRO_ERR_INVALID_CONFIG', `${where}.id`, 'a non-empty string without "/"', id);
    if (ids.has(id)) fail('DYSTRO_ERR_INVALID_CONFIG', `${where}.id`, 'unique pool ids', id);
    ids.add(id);
    const pool: PoolConfig = { id, accelerator, tensorParallel, model: model.toLowerCase(), replicas };
    if (q.kvCapacityBlocks !== undefined) pool.kvCapacityBlocks = positiveInt(q.kvCapacityBlocks, `${where}.kvCapacityBlocks`);
    if (q.maxBatchedTokens !== undefined) pool.maxBatchedTokens = positiveInt(q.maxBatchedTokens, `${where}.maxBatchedTokens`);
    if (q.maxNumSeqs !== undefined) pool.maxNumSeqs = positiveInt(q.maxNumSeqs, `${where}.maxNumSeqs`);
    return pool;
  });
  if (pools.every((p) => p.replicas === 0)) fail('DYSTRO_ERR_INVALID_CONFIG', `fleet (${source})`, 'at least one replica', 0);
  const models = new Set(pools.map((p) => p.model));
  if (models.size > 1) fail('DYSTRO_ERR_INVALID_CONFIG', `fleet (${source}) models`, 'one model for every pool (the workloads ask for one model)', [...models].join(', '));
  const name = typeof t.name === 'string' && t.name !== '' ? t.name : source === 'inline' ? 'fleet' : basename(source).replace(/\.json$/, '');
  const description = typeof t.description === 'string' ? t.description : undefined;
  return { name, description, pools, source };
}

/** The directory of the shipped example fleets (src/sim/fleets/, from src/ under tsx or from dist/). */
export function shippedFleetsDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, 'fleets'), join(here, '..', '..', 'src', 'sim', 'fleets')];
  for (const c of candidates) if (existsSync(c)) return c;
  return candidates[0];
}

/** Names of the shipped example fleets. */
export function shippedFleets(): string[] {
  const dir = shippedFleetsDir();
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort() : [];
}

/** A fleet file by path, or a shipped example by name (`h100-h200`). */
export function loadFleet(pathOrName: string): FleetConfig {
  let path = pathOrName;
  if (!existsSync(path)) {
    const shipped = join(shippedFleetsDir(), pathOrName.endsWith('.json') ? basename(pathOrName) : `${pathOrName}.json`);
    if (existsSync(shipped)) path = shipped;
    else {
      const names = shippedFleets();
      const near = nearest(pathOrName, names);
      throw new DystroError('DYSTRO_ERR_INVALID_CONFIG', `No fleet file \`${pathOrName}\`: give a path to a JSON file or one of the shipped fleets (${names.join(', ')})${near ? ` (did you mean "${near}"?)` : ''}`);
    }
  }
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new DystroError('DYSTRO_ERR_INVALID_CONFIG', `Fleet file \`${path}\` is not valid JSON: ${(e as Error).message}`);
  }
  return parseFleet(data, path);
}

/** "8 × H100 (TP1) + 8 × H200 (TP1), llama-3-8b" */
export function describeFleet(pools: readonly PoolConfig[]): string {
  const parts = pools.map((p) => `${p.replicas} × ${p.accelerator} (TP${p.tensorParallel ?? 1}${p.kvCapacityBlocks ? `, ${p.kvCapacityBlocks} KV blocks` : ''})`);
  return `${parts.join(' + ')}, ${pools[0]?.model ?? '?'}`;
}
