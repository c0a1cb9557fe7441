/**
 * ZeroMQ transport for vLLM KV events (DESIGN §8): a SUB socket on the publisher's PUB endpoint and a
 * replay client for its ROUTER endpoint. Frames are handed on as bytes; decoding and ordering happen
 * elsewhere (vllm-events.ts, sequencer.ts).
 *
 * Replay protocol (vLLM `ZmqEventPublisher._service_replay`): the client sends (empty delimiter,
 * start_seq as 8 bytes big-endian); the ROUTER answers, for every buffered batch with seq ≥ start,
 * (empty, seq 8 bytes, payload), then (empty, −1 as signed 8 bytes, empty payload). A DEALER is the
 * client, as the ROUTER adds and strips the identity frame.
 *
 * Reconnection: ZeroMQ reconnects a SUB (and a DEALER) to a TCP endpoint by itself after the publisher
 * goes away and comes back (`reconnectInterval`, doubling up to `reconnectMaxInterval`); frames published
 * meanwhile are lost, which the sequencer sees as a gap. If a receive fails for any other reason the
 * socket is recreated after `recreateDelayMs`.
 */
import { Dealer, Subscriber } from 'zeromq';
import { END_OF_REPLAY, decodeSeq, encodeSeq } from './vllm-events.js';
import type { ReplayFrame, ReplaySource } from './sequencer.js';

export interface ZmqReplayOptions {
  /** The publisher's ROUTER endpoint, e.g. tcp://10.0.0.7:5558. */
  endpoint: string;
  /** Longest wait for each replay message (ms, default 2,000): a silent publisher fails the replay. */
  timeoutMs?: number;
}

/**
 * A ReplaySource over vLLM's ROUTER socket. Each replay uses a fresh DEALER, closed when the replay ends
 * or fails, so replies to a replay that timed out can never be read as part of the next one.
 */
export class ZmqReplaySource implements ReplaySource {
  readonly endpoint: string;
  readonly timeoutMs: number;

  constructor(options: ZmqReplayOptions) {
    this.endpoint = options.endpoint;
    this.timeoutMs = options.timeoutMs ?? 2_000;
  }

  async *replay(fromSeq: number, signal: AbortSignal): AsyncIterable<ReplayFrame> {
    const dealer = new Dealer({ linger: 0, receiveTimeout: this.timeoutMs, sendTimeout: this.timeoutMs });
    const onAbort = () => dealer.close();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      dealer.connect(this.endpoint);
      await dealer.send([new Uint8Array(0), encodeSeq(fromSeq)]);
      for (;;) {
        const frames = await dealer.receive();
        if (frames.length !== 3 || frames[0].length !== 0) throw new Error(`replay: expected (empty, seq, payload), got ${frames.length} frames`);
        const seq = decodeSeq(frames[1]);
        if (seq === undefined) throw new Error(`replay: bad sequence frame of ${frames[1].length} bytes`);
        if (seq === END_OF_REPLAY) return;
        yield { seq, payload: frames[2] };
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      if (!dealer.closed) dealer.close();
    }
  }
}

export interface ZmqSubscriberOptions {
  /** The publisher's PUB endpoint, e.g. tcp://10.0.0.7:5557 (vLLM's default port 5557, + DP rank). */
  endpoint: string;
  /** Topic prefix (vLLM's default is ""). */
  topic?: string;
  /** Every message received, as its frames (vLLM: topic, seq, payload). An exception goes to onError. */
  onMessage(frames: Uint8Array[]): void;
  /** A receive error that made the subscriber recreate its socket, or an exception from onMessage. */
  onError?(err: unknown): void;
  /** Messages queued in ZeroMQ before it drops (default 100,000, vLLM's PUB high-water mark). */
  receiveHighWaterMark?: number;
  /** ZeroMQ's reconnect interval (ms, default 100) and its cap (default 5,000). */
  reconnectIntervalMs?: number;
  reconnectMaxIntervalMs?: number;
  /** Delay before recreating the socket after an unexpected receive error (ms, default 1,000). */
  recreateDelayMs?: number;
}

/** A SUB socket with a receive loop; `close()` ends the loop and resolves when it has. */
export class ZmqSubscriber {
  readonly endpoint: string;
  readonly topic: string;
  private readonly options: ZmqSubscriberOptions;
  private socket: Subscriber | null = null;
  private loop: Promise<void> | null = null;
  private closed = false;
  private wake: (() => void) | null = null;

  constructor(options: ZmqSubscriberOptions) {
    this.options = options;
    this.endpoint = options.endpoint;
    this.topic = options.topic ?? '';
  }

  /** Connects and starts receiving (connecting is asynchronous in ZeroMQ: a missing publisher is not an error). */
  start(): void {
    if (this.loop || this.closed) return;
    this.loop = this.run();
  }

  private open(): Subscriber {
    const s = new Subscriber({
      linger: 0,
      receiveHighWaterMark: this.options.receiveHighWaterMark ?? 100_000,
      reconnectInterval: this.options.reconnectIntervalMs ?? 100,
      reconnectMaxInterval: this.options.reconnectMaxIntervalMs ?? 5_000,
    });
    s.connect(this.endpoint);
    s.subscribe(this.topic);
    return s;
  }

  private async run(): Promise<void> {
    while (!this.closed) {
      const s = (this.socket = this.open());
      try {
        for (;;) {
          const frames = await s.receive();
          try {
            this.options.onMessage(frames);
          } catch (err) {
            // The handler's failure (say, an index freed under it) is not the socket's: keep receiving.
            this.options.onError?.(err);
          }
        }
      } catch (err) {
        if (this.closed) break;
        this.options.onError?.(err);
      } finally {
        if (!s.closed) s.close();
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.options.recreateDelayMs ?? 1_000);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.socket?.close();
    this.wake?.();
    await this.loop;
  }
}
