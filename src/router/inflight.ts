/**
 * Router-counted in-flight work per replica slot (Envoy's least_request counts at dispatch too): the
 * freshest load signal there is, since engine reports lag. Counted when a request is routed and
 * returned exactly once when it ends, fails, is cancelled or its replica is removed.
 */
export class InflightTracker {
  /** Requests routed and not finished. */
  readonly requests: Int32Array;
  /** Uncached prompt tokens routed and not yet prefilled (first token not seen). */
  readonly prefillTokens: Float64Array;
  /** KV blocks the in-flight requests will hold (prompt + expected output). */
  readonly activeBlocks: Float64Array;
  /** Requests ever routed to the slot (SGLang's tie-break). */
  readonly processed: Float64Array;
  /** Σ requests over all slots, kept in step (bounded-load caps need the average in O(1)). */
  totalRequests = 0;

  constructor(capacity: number) {
    this.requests = new Int32Array(capacity);
    this.prefillTokens = new Float64Array(capacity);
    this.activeBlocks = new Float64Array(capacity);
    this.processed = new Float64Array(capacity);
  }

  add(slot: number, uncachedTokens: number, blocks: number): void {
    this.requests[slot]++;
    this.totalRequests++;
    this.prefillTokens[slot] += uncachedTokens;
    this.activeBlocks[slot] += blocks;
    this.processed[slot]++;
  }

  /** The prefill of a request finished (first token). */
  prefilled(slot: number, uncachedTokens: number): void {
    this.prefillTokens[slot] = Math.max(0, this.prefillTokens[slot] - uncachedTokens);
  }

  /** A request left (any way). `prefillPending` is its uncached tokens if it never got a first token. */
  finish(slot: number, blocks: number, prefillPending: number): void {
    if (this.requests[slot] > 0) {
      this.requests[slot]--;
      this.totalRequests--;
    }
    this.activeBlocks[slot] = Math.max(0, this.activeBlocks[slot] - blocks);
    if (prefillPending > 0) this.prefillTokens[slot] = Math.max(0, this.prefillTokens[slot] - prefillPending);
    if (this.requests[slot] === 0) {
      // Nothing in flight: clear float drift exactly.
      this.prefillTokens[slot] = 0;
      this.activeBlocks[slot] = 0;
    }
  }

  /** Forgets a slot entirely (replica removed; its tickets become no-ops). */
  reset(slot: number): void {
    this.totalRequests -= this.requests[slot];
    this.requests[slot] = 0;
    this.prefillTokens[slot] = 0;
    this.activeBlocks[slot] = 0;
    this.processed[slot] = 0;
  }

  /** Total in-flight requests (tests: must return to zero). */
  total(): number {
    let t = 0;
    for (let i = 0; i < this.requests.length; i++) t += this.requests[i];
    return t;
  }
}
