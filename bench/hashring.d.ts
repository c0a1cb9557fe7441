/**
 * Types for the parts of the `hashring` package (3.x, ketama-compatible, no bundled types) the benchmark
 * uses as a peer.
 */
declare module 'hashring' {
  interface HashRingNode {
    value: number;
    server: string;
  }
  class HashRing {
    constructor(servers: string[] | Record<string, { weight?: number; vnodes?: number }>, algorithm?: string, options?: Record<string, unknown>);
    /** The server for a string key: md5 of the key, then find(); results go through a 5,000-entry LRU cache. */
    get(key: string): string | undefined;
    /** Index into `ring` of the first point ≥ hashValue (0 when wrapping). */
    find(hashValue: number): number;
    /** Sorted ring points. */
    ring: HashRingNode[];
  }
  export default HashRing;
}
