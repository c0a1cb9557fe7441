/**
 * The simulator's event queue: a binary min-heap of timed events, ordered by (time, insertion number),
 * so events at the same simulated time run in the order they were scheduled — the property that makes
 * a run a pure function of its seed.
 *
 * Events live in pooled typed arrays indexed by event id (recycled through a free list) and the heap
 * holds ids: a run of millions of engine steps allocates no per-event objects beyond an optional `ref`.
 */
export class EventQueue {
  private time = new Float64Array(1024);
  private order = new Float64Array(1024);
  private kinds = new Uint8Array(1024);
  private args = new Int32Array(1024);
  private refs: unknown[] = new Array(1024);
  private heap = new Int32Array(1024);
  private free: number[] = [];
  private nextId = 0;
  private seq = 0;
  /** Events waiting. */
  size = 0;
  /** Events ever scheduled. */
  scheduled = 0;

  private allocId(): number {
    const reused = this.free.pop();
    if (reused !== undefined) return reused;
    if (this.nextId === this.time.length) {
      const n = this.time.length * 2;
      const grow = <T extends Float64Array | Uint8Array | Int32Array>(a: T, make: (n: number) => T): T => {
        const b = make(n);
        b.set(a as never);
        return b;
      };
      this.time = grow(this.time, (k) => new Float64Array(k));
      this.order = grow(this.order, (k) => new Float64Array(k));
      this.kinds = grow(this.kinds, (k) => new Uint8Array(k));
      this.args = grow(this.args, (k) => new Int32Array(k));
      this.refs.length = n;
    }
    return this.nextId++;
  }

  private less(a: number, b: number): boolean {
    const ta = this.time[a];
    const tb = this.time[b];
    return ta < tb || (ta === tb && this.order[a] < this.order[b]);
  }

  /** Schedules an event of `kind` at `atMs` with an integer argument and an optional reference. */
  push(atMs: number, kind: number, arg = 0, ref: unknown = undefined): void {
    const id = this.allocId();
    this.time[id] = atMs;
    this.order[id] = this.seq++;
    this.kinds[id] = kind;
    this.args[id] = arg;
    this.refs[id] = ref;
    if (this.size === this.heap.length) {
      const h = new Int32Array(this.heap.length * 2);
      h.set(this.heap);
      this.heap = h;
    }
    // Sift up.
    let i = this.size++;
    const heap = this.heap;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(id, heap[p])) break;
      heap[i] = heap[p];
      i = p;
    }
    heap[i] = id;
    this.scheduled++;
  }

  /** Time of the next event (Infinity when empty). */
  peekTime(): number {
    return this.size > 0 ? this.time[this.heap[0]] : Infinity;
  }

  // The fields of the event last popped.
  poppedTime = 0;
  poppedKind = 0;
  poppedArg = 0;
  poppedRef: unknown = undefined;

  /** Removes the next event into popped*; false when empty. */
  pop(): boolean {
    if (this.size === 0) return false;
    const heap = this.heap;
    const top = heap[0];
    this.poppedTime = this.time[top];
    this.poppedKind = this.kinds[top];
    this.poppedArg = this.args[top];
    this.poppedRef = this.refs[top];
    this.refs[top] = undefined;
    this.free.push(top);
    const last = heap[--this.size];
    // Sift down.
    let i = 0;
    const n = this.size;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && this.less(heap[r], heap[l]) ? r : l;
      if (!this.less(heap[c], last)) break;
      heap[i] = heap[c];
      i = c;
    }
    if (n > 0) heap[i] = last;
    return true;
  }
}
