/**
 * A KV-event publisher over real ZeroMQ sockets on 127.0.0.1 (random free ports), behaving the way vLLM's
 * ZmqEventPublisher does: PUB frames (topic, seq, payload); a ROUTER answering a replay request (empty,
 * start_seq) with (empty, seq, payload) for every buffered seq ≥ start, then (empty, −1, empty); 10,000
 * batches kept. `publish(…, drop)` keeps a batch in the replay buffer only, as a high-water-mark loss.
 * Plus `until`, a bounded poll on real time (never a fixed sleep).
 */
import { Publisher, Router } from 'zeromq';

const be8 = (n: number) => {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(BigInt(n));
  return b;
};

export class TestPublisher {
  readonly pub = new Publisher({ linger: 0, sendHighWaterMark: 100_000 });
  readonly router = new Router({ linger: 0 });
  readonly buffer: { seq: number; payload: Uint8Array }[] = [];
  seq = 0;
  replays = 0;
  private serving: Promise<void> | null = null;

  constructor(readonly topic = 'kv') {}

  async start(): Promise<void> {
    await this.pub.bind('tcp://127.0.0.1:*');
    await this.router.bind('tcp://127.0.0.1:*');
    this.serving = this.serve();
  }

  get endpoint(): string {
    return this.pub.lastEndpoint!;
  }
  get replayEndpoint(): string {
    return this.router.lastEndpoint!;
  }

  /** Publishes the next batch; `drop` keeps it in the replay buffer only (as a high-water-mark loss). */
  async publish(payload: Uint8Array, drop = false): Promise<number> {
    const seq = this.seq++;
    this.buffer.push({ seq, payload });
    if (this.buffer.length > 10_000) this.buffer.shift();
    if (!drop) await this.pub.send([this.topic, be8(seq), payload]);
    return seq;
  }

  async sendRaw(frames: (string | Uint8Array)[]): Promise<void> {
    await this.pub.send(frames);
  }

  private async serve(): Promise<void> {
    try {
      for await (const frames of this.router) {
        if (frames.length !== 3 || frames[2].length !== 8) continue;
        const [id, , start] = frames;
        const from = Number(start.readBigUInt64BE(0));
        this.replays++;
        for (const f of this.buffer.slice()) if (f.seq >= from) await this.router.send([id, '', be8(f.seq), f.payload]);
        await this.router.send([id, '', be8(-1), '']);
      }
    } catch {
      // closed
    }
  }

  async close(): Promise<void> {
    this.pub.close();
    this.router.close();
    await this.serving;
  }
}

export async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 8000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

