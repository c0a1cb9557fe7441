/**
 * Piscina worker of the simulation runner (sweep.ts): runs `simulate` for one job — plain data, so
 * it can cross the thread boundary — and returns the result (structured-cloned back). Progress goes
 * through the MessagePort the task carries, as [requests ended, total], about every 1% of the
 * workload (the simulator's own pace), so the main thread's progress bar moves within long runs.
 * Kernels are loaded once per worker thread and reused by every job it runs.
 */
import type { MessagePort } from 'node:worker_threads';
import { simulate } from './index.js';
import { loadKernelsSync, type BackendChoice } from '../kernels/select.js';
import type { KernelBackend } from '../kernels/abi.js';
import type { SimResult } from './sim.js';
import type { SimJob } from './sweep.js';

const kernelsByBackend = new Map<string, KernelBackend>();

function kernelsFor(backend: BackendChoice | undefined): KernelBackend {
  const key = backend ?? 'auto';
  let k = kernelsByBackend.get(key);
  if (!k) {
    k = loadKernelsSync({ backend }).kernels;
    kernelsByBackend.set(key, k);
  }
  return k;
}

export default function runJob({ job, port }: { job: SimJob; port?: MessagePort }): SimResult {
  try {
    return simulate({
      ...job,
      kernels: kernelsFor(job.backend),
      onProgress: port ? (done, total) => port.postMessage([done, total]) : undefined,
    });
  } finally {
    port?.close();
  }
}
