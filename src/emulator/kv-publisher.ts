/**
 * KV events as vLLM publishes them (DESIGN §8), for the engine emulator: the msgpack payload in either
 * of vLLM's encodings, and a ZeroMQ PUB socket with a ROUTER replay socket over a buffer of the last
 * 10,000 batches. The layout follows vLLM's `vllm/distributed/kv_events.py` (read, not copied):
 *
 * - Multipart (topic, seq as 8 bytes big-endian, payload); seq counts batches from 0 per incarnation.
 * - Payload `EventBatch(ts, events, data_parallel_rank)`: `[ts, events, rank]` in the array_like
 *   encoding, `{ts, events, data_parallel_rank}` as a map otherwise. Events are tagged: arrays with the
 *   class name first, or maps with a "type" key. msgspec omits fields still at their default (extra_keys,
 *   group_idx, …), and keeps lora_id, medium and lora_name, which have none.
 * - Replay: a client sends (empty, start_seq 8 bytes); the ROUTER answers (empty, seq, payload) for every
 *   buffered batch with seq ≥ start, then (empty, −1 as signed 8 bytes, empty).
 *
 * Fault knobs: `dropNext` and `dropFraction` keep a batch in the replay buffer without sending it on
 * PUB, as a high-water-mark loss would — subscribers see a seq gap that the replay socket can fill.
 */
import { Packr } from 'msgpackr';
import { Publisher, Router } from 'zeromq';
import type { Rng } from '../rng.js';

export type EventEncoding = 'array' | 'map';
/** How block hashes go on the wire: msgpack integers (u64) or 8 bytes big-endian (vLLM's bytes hashes are sha256 digests). */
export type HashFormat = 'int' | 'bytes';

export interface BlockStoredSpec {
  type: 'BlockStored';
  /** Engine hashes of consecutive blocks of one chain. */
  hashes: bigint[];
  /** The engine hash of the block before hashes[0], or null when the chain starts with it. */
  parent: bigint | null;
  /** hashes.length × blockSize token ids. */
  tokens: number[];
  blockSize: number;
  /** Per block, the extra keys the engine hashed in (vLLM: cache_salt, LoRA, multimodal ids), or null. */
  extraKeys: (unknown[] | null)[] | null;
}

export interface BlockRemovedSpec {
  type: 'BlockRemoved';
  hashes: bigint[];
}

export interface AllBlocksClearedSpec {
  type: 'AllBlocksCleared';
}

export type KvEventSpec = BlockStoredSpec | BlockRemovedSpec | AllBlocksClearedSpec;

// Maps with string keys as msgpack maps, no msgpackr record extension: plain msgpack any decoder reads.
const packr = new Packr({ useRecords: false, variableMapSize: true });

function hashValue(h: bigint, format: HashFormat): bigint | Uint8Array {
  if (format === 'int') return h;
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, h, false);
  return b;
}

function eventValue(e: KvEventSpec, encoding: EventEncoding, hashFormat: HashFormat): unknown {
  let fields: [string, unknown][];
  if (e.type === 'BlockStored') {
    fields = [
      ['block_hashes', e.hashes.map((h) => hashValue(h, hashFormat))],
      ['parent_block_hash', e.parent === null ? null : hashValue(e.parent, hashFormat)],
      ['token_ids', e.tokens],
      ['block_size', e.blockSize],
      ['lora_id', null],
      ['medium', 'GPU'],
      ['lora_name', null],
    ];
    if (e.extraKeys !== null) fields.push(['extra_keys', e.extraKeys]);
  } else if (e.type === 'BlockRemoved') {
    fields = [
      ['block_hashes', e.hashes.map((h) => hashValue(h, hashFormat))],
      ['medium', 'GPU'],
    ];
  } else fields = [];
  if (encoding === 'array') return [e.type, ...fields.map(([, v]) => v)];
  return new Map<string, unknown>([['type', e.type], ...fields]);
}

/** One batch's payload bytes. `ts` is wall-clock seconds since the Unix epoch (vLLM's time.time()). */
export function encodeEventBatch(ts: number, events: readonly KvEventSpec[], encoding: EventEncoding, dpRank: number, hashFormat: HashFormat = 'int'): Uint8Array {
  const evs = events.map((e) => eventValue(e, encoding, hashFormat));
  if (encoding === 'array') return packr.pack([ts, evs, dpRank]);
  return packr.pack(
    new Map<string, unknown>([
      ['ts', ts],
      ['events', evs],
      ['data_parallel_rank', dpRank],
    ]),
  );
}

/** Longest wait for a replay client to take the next batch (ms). */
const REPLAY_SEND_TIMEOUT_MS = 5_000;

function be8(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(BigInt(n));
  return b;
}

export interface KvPublisherOptions {
  /** PUB bind address: tcp://*:5557 (vLLM's default), tcp://127.0.0.1:* for a random free port. */
  endpoint: string;
  /** ROUTER bind address for replays; none: no replay socket. */
  replayEndpoint?: string;
  /** Topic frame (vLLM's default is ""). */
  topic?: string;
  /** Batches kept for replay (default 10,000, vLLM's buffer_steps). */
  bufferSteps?: number;
  /** PUB high-water mark in messages (default 100,000, vLLM's). */
  highWaterMark?: number;
  /** Draws for `dropFraction`. */
  rng: Rng;
}

export interface KvPublisherStats {
  /** Batches given a seq (sent or dropped). */
  published: number;
  /** Batches kept from PUB by a fault knob. */
  dropped: number;
  /** Replay requests served. */
  replays: number;
  /** Sends that failed (the socket closed under them). */
  sendErrors: number;
  /** Replays abandoned (the client went away or stopped reading). */
  replayErrors: number;
}

/** vLLM's ZmqEventPublisher, in-process: PUB frames, a replay ROUTER, a bounded replay buffer. */
export class KvPublisher {
  private readonly pub: Publisher;
  private readonly router: Router | null;
  private readonly topic: string;
  private readonly capacity: number;
  private readonly rng: Rng;
  /** Replay ring: seqs and payloads, oldest at `head`. */
  private readonly ringSeq: number[] = [];
  private readonly ringPayload: Uint8Array[] = [];
  private head = 0;
  /** The next batch's seq. */
  seq = 0;
  /** Share of batches kept from PUB (0 … 1). */
  dropFraction = 0;
  /** The next this many batches are kept from PUB. */
  dropNext = 0;
  readonly stats: KvPublisherStats = { published: 0, dropped: 0, replays: 0, sendErrors: 0, replayErrors: 0 };
  private sending: Promise<void> = Promise.resolve();
  private serving: Promise<void> | null = null;
  private closed = false;

  constructor(private readonly options: KvPublisherOptions) {
    this.topic = options.topic ?? '';
    this.capacity = options.bufferSteps ?? 10_000;
    this.rng = options.rng;
    this.pub = new Publisher({ linger: 0, sendHighWaterMark: options.highWaterMark ?? 100_000 });
    // A ROUTER drops what exceeds a peer's high-water mark (1,000 messages) unless `mandatory`: then a
    // send waits for the client to read, so a 10,000-batch replay arrives whole; a client that stops
    // reading for `sendTimeout` ms loses the rest of its replay (it sees no end marker and retries).
    this.router = options.replayEndpoint ? new Router({ linger: 0, mandatory: true, sendTimeout: REPLAY_SEND_TIMEOUT_MS }) : null;
  }

  async start(): Promise<void> {
    await this.pub.bind(this.options.endpoint);
    if (this.router) {
      await this.router.bind(this.options.replayEndpoint!);
      this.serving = this.serve();
    }
  }

  /** The bound PUB endpoint (with the port chosen when bound to *). */
  get endpoint(): string {
    return this.pub.lastEndpoint ?? this.options.endpoint;
  }

  get replayEndpoint(): string | null {
    return this.router ? (this.router.lastEndpoint ?? this.options.replayEndpoint!) : null;
  }

  /** Batches held for replay. */
  get buffered(): number {
    return this.ringSeq.length;
  }

  /** Gives the payload the next seq, buffers it and sends it unless a drop knob keeps it back. */
  publish(payload: Uint8Array): { seq: number; dropped: boolean } {
    const seq = this.seq++;
    if (this.ringSeq.length < this.capacity) {
      this.ringSeq.push(seq);
      this.ringPayload.push(payload);
    } else {
      this.ringSeq[this.head] = seq;
      this.ringPayload[this.head] = payload;
      this.head = (this.head + 1) % this.capacity;
    }
    this.stats.published++;
    let dropped = false;
    if (this.dropNext > 0) {
      this.dropNext--;
      dropped = true;
    } else if (this.dropFraction > 0 && this.rng.float() < this.dropFraction) dropped = true;
    if (dropped) {
      this.stats.dropped++;
      return { seq, dropped };
    }
    // zeromq.js allows one send in progress per socket: sends queue behind each other, in seq order.
    const frames = [this.topic, be8(seq), payload];
    this.sending = this.sending.then(async () => {
      if (this.closed) return;
      try {
        await this.pub.send(frames);
      } catch {
        this.stats.sendErrors++;
      }
    });
    return { seq, dropped };
  }

  /** A new incarnation: seqs start again at 0 and the replay buffer is empty. */
  reset(): void {
    this.seq = 0;
    this.ringSeq.length = 0;
    this.ringPayload.length = 0;
    this.head = 0;
  }

  /** Resolves once every batch published so far was handed to ZeroMQ. */
  flushed(): Promise<void> {
    return this.sending;
  }

  private snapshotFrom(start: number): { seq: number; payload: Uint8Array }[] {
    const out: { seq: number; payload: Uint8Array }[] = [];
    const n = this.ringSeq.length;
    for (let i = 0; i < n; i++) {
      const at = (this.head + i) % n;
      if (this.ringSeq[at] >= start) out.push({ seq: this.ringSeq[at], payload: this.ringPayload[at] });
    }
    return out;
  }

  private async serve(): Promise<void> {
    const router = this.router!;
    try {
      for await (const frames of router) {
        // (identity, empty delimiter, start_seq): anything else is ignored, as vLLM does.
        if (frames.length !== 3 || frames[2].length !== 8) continue;
        const [id, , start] = frames;
        const from = Number(start.readBigUInt64BE(0));
        this.stats.replays++;
        try {
          for (const f of this.snapshotFrom(from)) await router.send([id, '', be8(f.seq), f.payload]);
          await router.send([id, '', be8(-1), '']);
        } catch {
          // The client went away or stopped reading: its replay is abandoned, the next one is served.
          this.stats.replayErrors++;
          if (this.closed) return;
        }
      }
    } catch {
      // The socket closed (shutdown or crash).
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.pub.close();
    this.router?.close();
    await this.sending;
    await this.serving;
  }
}
