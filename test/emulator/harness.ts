/**
 * Shared pieces of the engine emulator tests: a watchdog (open sockets must never hang a test file), a
 * /metrics reader, a raw KV-event subscriber that keeps every frame it receives, the router's hashes of a
 * prompt, and `until` (a bounded poll on real time, never a fixed sleep).
 */
import { Subscriber } from 'zeromq';
import { jsBackend } from '../../src/kernels/js/index.ts';
import { PrefixHasher } from '../../src/hashing/prefix.ts';
import { decodeKvEventBatch, decodeSeq, type KvEventBatch } from '../../src/index/vllm-events.ts';
import type { EngineEmulator } from '../../src/emulator/index.ts';

export { until } from '../helpers/zmq-publisher.ts';

/** Ends the process if the file runs past `ms` (a socket left open would otherwise hang the runner). */
export function watchdog(name: string, ms = 20_000): void {
  setTimeout(() => {
    console.error(`${name}: watchdog fired after ${ms} ms (a socket was left open?)`);
    process.exit(1);
  }, ms).unref();
}

/** The router's chained block hashes of token ids (16-token blocks, the emulator's namespace). */
export function routerHashes(tokens: Uint32Array, model: string, tenant = ''): BigUint64Array {
  const h = new PrefixHasher(jsBackend, { blockSize: 16 });
  return h.hashTokens(tokens, h.namespaceSeed({ model, tenant }));
}

/** Sum of a metric's samples whose labels include `labels`, from Prometheus text. */
export async function metric(e: EngineEmulator, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${e.url}/metrics`)).text();
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.length === 0) continue;
    const m = /^([^{\s]+)(?:\{([^}]*)\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) {
      sum += Number(m[3]);
      found = true;
    }
  }
  if (!found) throw new Error(`metric ${name} ${JSON.stringify(labels)} not found`);
  return sum;
}

export interface Frame {
  topic: string;
  seq: number;
  payload: Uint8Array;
  batch: KvEventBatch;
}

/** A SUB socket on the emulator's PUB endpoint that keeps every frame, decoded with the router's decoder. */
export class FrameTap {
  readonly frames: Frame[] = [];
  readonly rejected: string[] = [];
  private readonly sub = new Subscriber({ linger: 0 });
  private loop: Promise<void> | null = null;

  constructor(endpoint: string, topic = '') {
    this.sub.connect(endpoint);
    this.sub.subscribe(topic);
    this.loop = (async () => {
      try {
        for await (const [topicFrame, seqFrame, payload] of this.sub) {
          const d = decodeKvEventBatch(payload, { blockSize: 16 });
          if (!d.ok) {
            this.rejected.push(`${d.reason}: ${d.detail}`);
            continue;
          }
          this.frames.push({ topic: topicFrame.toString(), seq: decodeSeq(seqFrame)!, payload, batch: d.batch });
        }
      } catch {
        // closed
      }
    })();
  }

  seqs(): number[] {
    return this.frames.map((f) => f.seq);
  }

  async close(): Promise<void> {
    this.sub.close();
    await this.loop;
  }
}
