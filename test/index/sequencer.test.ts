/** Sequencer: order, duplicates, gaps and replays, restarts, retries on a fake clock, unrecoverable streams. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { FakeClock } from '../../src/clock.ts';
import { Sequencer, type ReplayFrame, type ReplaySource, type SequencerEvent, type SequencerOptions } from '../../src/index/sequencer.ts';
import { ManualTimers } from '../helpers/fake-timers.ts';
import { MemoryPublisher } from '../helpers/vllm-frames.ts';

/** A batch here is just its publisher timestamp, encoded as 8 bytes. */
type Item = { ts: number };
const enc = (ts: number) => new Uint8Array(new Float64Array([ts]).buffer);
const dec = (p: Uint8Array): Item => ({ ts: new Float64Array(p.slice().buffer)[0] });

class Harness {
  readonly clock = new FakeClock(1_000);
  readonly timers = new ManualTimers(this.clock);
  applied: number[] = [];
  wipes: boolean[] = [];
  events: SequencerEvent[] = [];
  ts = 100;
  onApply?: (seq: number) => void;
  readonly seq: Sequencer<Item>;

  constructor(
    options: SequencerOptions = {},
    readonly pub = new MemoryPublisher(),
    source: ReplaySource | null = pub,
  ) {
    this.seq = new Sequencer<Item>(
      {
        decode: dec,
        tsOf: (i) => i.ts,
        apply: (s) => {
          this.applied.push(s);
          this.onApply?.(s);
        },
        wipe: (fromStart) => this.wipes.push(fromStart),
        onEvent: (e) => this.events.push(e),
      },
      { replay: source ?? undefined, timers: this.timers, clock: this.clock, ...options },
    );
  }

  /** Publishes a batch; delivers it live unless `drop`. */
  publish(drop = false): ReplayFrame {
    const f = this.pub.publish(enc(this.ts++));
    if (!drop) this.deliver(f);
    return f;
  }

  deliver(f: ReplayFrame): void {
    this.seq.push(f.seq, dec(f.payload));
  }

  count(e: SequencerEvent): number {
    return this.events.filter((x) => x === e).length;
  }
}

test('in-order frames apply at once; duplicates are dropped and counted', async () => {
  const h = new Harness();
  assert.is(h.seq.state, 'unknown'); // nothing heard yet
  const f0 = h.publish();
  assert.is(h.seq.state, 'synced');
  h.publish();
  h.deliver(f0);
  h.publish();
  h.deliver(f0);
  assert.equal(h.applied, [0, 1, 2]);
  assert.is(h.count('duplicate'), 2);
  assert.is(h.seq.state, 'synced');
  assert.is(h.pub.replaysServed, 0);
});

test('a gap is replayed from the last applied seq; live frames meanwhile wait and are applied once, in order', async () => {
  const h = new Harness();
  h.publish();
  h.publish();
  h.publish(true);
  h.publish(true);
  const f4 = h.publish(); // gap: 2 and 3 missing
  assert.is(h.seq.state, 'replaying');
  const f5 = h.publish(); // arrives during the replay: buffered
  h.deliver(f4); // duplicate of a buffered frame
  assert.equal(h.applied, [0, 1]);
  await h.seq.idle();
  assert.equal(h.applied, [0, 1, 2, 3, 4, 5]);
  assert.is(h.seq.state, 'synced');
  assert.is(h.count('gap'), 1);
  assert.is(h.count('replay-ok'), 1);
  h.deliver(f5);
  assert.equal(h.applied, [0, 1, 2, 3, 4, 5]);
  // f4 twice while buffered, f4 and f5 replayed before their buffered copies, f5 again live.
  assert.is(h.count('duplicate'), 4);
});

test('the first frame of a publisher with seq > 0 asks for a replay from 0', async () => {
  const h = new Harness();
  h.publish(true);
  h.publish(true);
  h.publish();
  await h.seq.idle();
  assert.equal(h.applied, [0, 1, 2]);
  assert.equal(h.wipes, []);
});

test('a reordered pair: the later frame opens a repair, the earlier one is a duplicate afterwards', async () => {
  const h = new Harness();
  h.publish();
  const f1 = h.publish(true);
  h.publish();
  await h.seq.idle();
  h.deliver(f1);
  assert.equal(h.applied, [0, 1, 2]);
  assert.is(h.count('duplicate'), 2); // 2's buffered copy after its replay, then 1

  assert.is(h.count('reset'), 0);
});

test('sequence reset: seq 0 with a newer ts is a restarted publisher (wipe, start over); an old seq 0 is a duplicate', async () => {
  const h = new Harness();
  const f0 = h.publish();
  h.publish();
  h.publish();
  h.deliver(f0);
  assert.equal(h.wipes, []);
  h.pub.restart();
  h.publish();
  assert.equal(h.wipes, [true]);
  assert.equal(h.applied, [0, 1, 2, 0]);
  assert.is(h.count('reset'), 1);
  h.publish();
  assert.equal(h.applied, [0, 1, 2, 0, 1]);
});

test('a restart whose seq 0 was lost: a newer frame with an old seq restarts the stream and replays from 0', async () => {
  const h = new Harness();
  for (let i = 0; i < 5; i++) h.publish();
  h.pub.restart();
  h.publish(true);
  h.publish(); // seq 1 ≤ last 4, but newer than anything seen
  await h.seq.idle();
  assert.equal(h.wipes, [true]);
  assert.equal(h.applied, [0, 1, 2, 3, 4, 0, 1]);
});

test('a restart that looks like an ordinary gap is caught by the replay overlap (seq = last with another ts)', async () => {
  const h = new Harness();
  for (let i = 0; i < 3; i++) h.publish(); // last = 2
  h.pub.restart();
  for (let i = 0; i < 4; i++) h.publish(true); // new 0 … 3 lost
  h.publish(); // new 4: looks like a gap after 2
  await h.seq.idle();
  assert.equal(h.wipes, [true]);
  assert.equal(h.applied, [0, 1, 2, 0, 1, 2, 3, 4]);
  assert.is(h.count('reset'), 1);
});

test('a frame from an earlier incarnation (seq ahead, ts behind) is dropped as stale', async () => {
  const h = new Harness();
  h.publish();
  h.publish();
  const old = h.pub.publish(enc(50)); // seq 2 but older than what was applied
  h.deliver(old);
  assert.equal(h.applied, [0, 1]);
  assert.is(h.count('stale'), 1);
});

test('a failed replay is retried with exponential backoff on the injected timers; the live path never waits', async () => {
  const h = new Harness({ backoffMs: 100, maxAttempts: 5 });
  h.publish();
  h.pub.failReplays = 3;
  h.publish(true);
  h.publish(); // gap
  await h.seq.idle();
  assert.is(h.pub.replaysServed, 1);
  assert.is(h.timers.nextDelay(), 100);
  h.publish(); // live frames keep arriving and are buffered, never blocked
  assert.is(h.seq.buffered, 2);
  h.timers.advance(99);
  assert.is(h.pub.replaysServed, 1);
  h.timers.advance(1);
  await h.seq.idle();
  assert.is(h.pub.replaysServed, 2);
  assert.is(h.timers.nextDelay(), 200);
  h.timers.advance(200);
  await h.seq.idle();
  assert.is(h.timers.nextDelay(), 400);
  h.timers.advance(400);
  await h.seq.idle();
  assert.equal(h.applied, [0, 1, 2, 3]);
  assert.is(h.seq.state, 'synced');
  assert.is(h.count('replay-failed'), 3);
  assert.is(h.count('replay-ok'), 1);
});

test('after maxAttempts failures the stream is wiped and marked unknown; the frames at hand are applied as new events', async () => {
  const h = new Harness({ backoffMs: 10, maxAttempts: 3 });
  h.publish();
  h.pub.failReplays = 100;
  h.publish(true);
  h.publish();
  for (let i = 0; i < 3; i++) {
    await h.seq.idle();
    h.timers.advance(1000);
  }
  await h.seq.idle();
  assert.is(h.pub.replaysServed, 3);
  assert.equal(h.wipes, [false]);
  assert.equal(h.applied, [0, 2]);
  assert.is(h.count('give-up'), 1);
  assert.is(h.timers.pending, 0);
  h.publish();
  assert.equal(h.applied, [0, 2, 3]);
});

test('unknown until new events arrive: a resync whose replay fails leaves nothing to apply', async () => {
  const h = new Harness({ backoffMs: 10, maxAttempts: 2 });
  let ask = true;
  h.onApply = (s) => {
    if (s === 1 && ask) {
      ask = false;
      assert.is(h.seq.requestResync(), true);
      assert.is(h.seq.requestResync(), false); // one per cooldown
    }
  };
  h.publish();
  h.pub.failReplays = 100;
  h.publish();
  assert.equal(h.wipes, [true]);
  await h.seq.idle();
  h.timers.advance(1000);
  await h.seq.idle();
  assert.equal(h.wipes, [true, false]);
  assert.is(h.seq.state, 'unknown');
  h.publish();
  assert.is(h.seq.state, 'synced');
  assert.equal(h.applied, [0, 1, 2]);
});

test('a hole (the publisher no longer holds the first seq asked for) wipes, marks unknown, applies the rest', async () => {
  const h = new Harness({}, new MemoryPublisher(2));
  h.publish();
  for (let i = 0; i < 4; i++) h.publish(true); // seq 1 … 4 lost
  h.publish(); // the buffer now holds 4 and 5 only
  await h.seq.idle();
  assert.equal(h.applied, [0, 4, 5]);
  assert.equal(h.wipes, [false]);
  assert.is(h.count('hole'), 1);
  assert.is(h.seq.state, 'synced');
});

test('the live buffer is bounded: an overflow during a stuck replay gives up and applies what it holds', async () => {
  let release!: () => void;
  const stuck: ReplaySource = {
    async *replay(_from, signal) {
      await new Promise<void>((r) => {
        release = r;
        signal.addEventListener('abort', () => r());
      });
    },
  };
  const h = new Harness({ maxBuffered: 3 }, new MemoryPublisher(), stuck);
  h.publish();
  h.publish(true);
  for (let i = 0; i < 4; i++) h.publish();
  assert.is(h.count('overflow'), 1);
  assert.equal(h.wipes, [false]);
  assert.equal(h.applied, [0, 2, 3, 4, 5]);
  release();
  await h.seq.idle();
  assert.equal(h.applied, [0, 2, 3, 4, 5]);
  assert.is(h.seq.state, 'synced');
});

test('restart() by the owner stops a running replay: nothing from it is applied', async () => {
  const h = new Harness();
  h.publish();
  h.publish(true);
  h.publish();
  h.seq.restart();
  await h.seq.idle();
  assert.equal(h.applied, [0]);
  assert.equal(h.wipes, [true]);
  assert.is(h.seq.lastSeq, -1);
  h.seq.restart(false);
  assert.equal(h.wipes, [true]);
});

test('without a replay source a gap gives up at once', async () => {
  const h = new Harness({}, new MemoryPublisher(), null);
  h.publish();
  h.publish(true);
  h.publish();
  await h.seq.idle();
  assert.equal(h.applied, [0, 2]);
  assert.equal(h.wipes, [false]);
  assert.is(h.seq.requestResync(), false);
});

test.run();
