/**
 * Engine load from the engines' own Prometheus endpoints (DESIGN §2: "load reports or /metrics
 * scrape"), with vLLM's metric names:
 *
 *   vllm:num_requests_running   requests in the running batch            → running
 *   vllm:num_requests_waiting   requests queued                          → waiting
 *   vllm:kv_cache_usage_perc    KV-cache blocks in use, a fraction 0 … 1 → kvUsage
 *   vllm:gpu_cache_usage_perc   the same under its older name (vLLM < 0.10); used when the new one is absent
 *
 * Despite "_perc", vLLM exports a fraction (1.0 = full). A data-parallel engine exports one series per
 * rank (label `engine`): counts are summed and usage averaged, as one replica of the router is the whole
 * engine. Whatever comes in is sanitized by the router (NaN, negatives, out-of-range: src/fleet/load.ts).
 */
import type { LoadReport } from '../fleet/load.js';

const RUNNING = 'vllm:num_requests_running';
const WAITING = 'vllm:num_requests_waiting';
const KV_NEW = 'vllm:kv_cache_usage_perc';
const KV_OLD = 'vllm:gpu_cache_usage_perc';
const WANTED = new Set([RUNNING, WAITING, KV_NEW, KV_OLD]);

/** Index just past a sample line's label set `{…}` starting at `i` (quotes and escapes honoured), or −1. */
function skipLabels(line: string, i: number): number {
  let quoted = false;
  for (let k = i + 1; k < line.length; k++) {
    const c = line[k];
    if (quoted) {
      if (c === '\\') k++;
      else if (c === '"') quoted = false;
    } else if (c === '"') quoted = true;
    else if (c === '}') return k + 1;
  }
  return -1;
}

/**
 * Sums (counts) or averages (usage) the wanted series of a Prometheus text exposition. Fields whose
 * metric is absent are left out of the report (the router keeps them unknown).
 */
export function parseVllmLoad(text: string): LoadReport {
  const sum = new Map<string, number>();
  const count = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.length === 0 || line[0] === '#') continue;
    let end = 0;
    while (end < line.length && line[end] !== '{' && line[end] !== ' ' && line[end] !== '\t') end++;
    const name = line.slice(0, end);
    if (!WANTED.has(name)) continue;
    let i = end;
    if (line[i] === '{') {
      i = skipLabels(line, i);
      if (i < 0) continue;
    }
    const fields = line.slice(i).trim().split(/\s+/);
    const value = fields[0] === '+Inf' ? Infinity : fields[0] === '-Inf' ? -Infinity : Number(fields[0]);
    if (fields[0] === undefined || fields[0] === '' || Number.isNaN(value)) continue;
    sum.set(name, (sum.get(name) ?? 0) + value);
    count.set(name, (count.get(name) ?? 0) + 1);
  }
  const report: LoadReport = {};
  if (sum.has(RUNNING)) report.running = sum.get(RUNNING);
  if (sum.has(WAITING)) report.waiting = sum.get(WAITING);
  const kv = sum.has(KV_NEW) ? KV_NEW : sum.has(KV_OLD) ? KV_OLD : null;
  if (kv !== null) report.kvUsage = sum.get(kv)! / count.get(kv)!;
  return report;
}
