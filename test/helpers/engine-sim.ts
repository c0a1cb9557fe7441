/**
 * A toy vLLM engine cache that emits plausible KV events from a seeded Rng: new chains (from the root or
 * extending a cached block, inheriting its LoRA adapter and KV cache group), offloads of cached blocks to
 * CPU (a BlockStored of the same block with medium "CPU"), evictions per tier, AllBlocksCleared. Block
 * ids take every wire form vLLM can send: small ints, u64 above 2^63, negative int64, 32 bytes. A block's
 * tokens are one of `vocab` fixed blocks, so different chains (and ranks) often hash to the same router
 * blocks under different engine ids.
 */
import type { Rng } from '../../src/rng.ts';
import type { ClearedSpec, RemovedSpec, StoredSpec, WireHash } from './vllm-frames.ts';

export interface SimBlock {
  id: WireHash;
  tokens: number[];
  parent: SimBlock | null;
  loraName: string | null;
  loraId: number | null;
  group: number;
  /** Media holding it: 'GPU', 'CPU'. */
  tiers: Set<string>;
}

export class EngineSim {
  blocks: SimBlock[] = [];

  constructor(
    readonly rng: Rng,
    readonly blockSize: number,
    readonly vocab = 3,
  ) {}

  private newId(): WireHash {
    switch (this.rng.int(4)) {
      case 0:
        return this.rng.u32();
      case 1:
        return this.rng.u64() | (1n << 63n); // needs msgpack uint64
      case 2:
        return BigInt.asIntN(64, this.rng.u64() | (1n << 63n)); // a negative Python hash
      default:
        return Uint8Array.from({ length: 32 }, () => this.rng.int(256));
    }
  }

  /** One of `vocab` fixed blocks, the same in every simulator, so chains often coincide. */
  private blockTokens(): number[] {
    const k = this.rng.int(this.vocab);
    return Array.from({ length: this.blockSize }, (_, i) => k * 100 + i);
  }

  private pick<T>(xs: readonly T[]): T {
    return xs[this.rng.int(xs.length)];
  }

  /** A new chain of 1 … 3 blocks, or (one time in five) an offload of a GPU block to CPU. */
  store(): StoredSpec {
    // Only blocks whose parent is still cached: vLLM names the parent, and an evicted one is unknown.
    const onGpuOnly = this.blocks.filter((b) => b.tiers.has('GPU') && !b.tiers.has('CPU') && (b.parent === null || this.blocks.includes(b.parent)));
    if (onGpuOnly.length > 0 && this.rng.int(5) === 0) {
      const b = this.pick(onGpuOnly);
      b.tiers.add('CPU');
      return this.spec([b], b.parent, 'CPU');
    }
    const parent = this.blocks.length > 0 && this.rng.int(5) < 3 ? this.pick(this.blocks) : null;
    const n = 1 + this.rng.int(3);
    const lora = parent ? { name: parent.loraName, id: parent.loraId } : this.pick([{ name: null, id: null }, { name: 'adapter-a', id: 1 }, { name: null, id: 7 }]);
    const group = parent ? parent.group : this.rng.int(7) === 0 ? 1 : 0;
    const made: SimBlock[] = [];
    let prev = parent;
    for (let i = 0; i < n; i++) {
      const b: SimBlock = {
        id: this.newId(),
        tokens: this.blockTokens(),
        parent: prev,
        loraName: lora.name,
        loraId: lora.id,
        group,
        tiers: new Set(['GPU']),
      };
      made.push(b);
      prev = b;
    }
    this.blocks.push(...made);
    return this.spec(made, parent, this.rng.int(4) === 0 ? null : 'GPU');
  }

  private spec(blocks: SimBlock[], parent: SimBlock | null, medium: string | null): StoredSpec {
    const first = blocks[0];
    return {
      type: 'BlockStored',
      hashes: blocks.map((b) => b.id),
      parent: parent ? parent.id : null,
      tokens: blocks.flatMap((b) => b.tokens),
      blockSize: this.blockSize,
      loraId: first.loraId,
      medium,
      loraName: first.loraName,
      groupIdx: first.group === 0 && this.rng.int(2) === 0 ? null : first.group,
    };
  }

  /** Evicts 1 … 3 blocks of one group from one medium, or null when nothing is cached. */
  remove(): RemovedSpec | null {
    if (this.blocks.length === 0) return null;
    const medium = this.rng.int(3) === 0 ? 'CPU' : 'GPU';
    const group = this.pick(this.blocks).group;
    const candidates = this.blocks.filter((b) => b.group === group && b.tiers.has(medium));
    if (candidates.length === 0) return null;
    const chosen = new Set<SimBlock>();
    const k = 1 + this.rng.int(3);
    for (let i = 0; i < k; i++) chosen.add(this.pick(candidates));
    for (const b of chosen) b.tiers.delete(medium);
    this.blocks = this.blocks.filter((b) => b.tiers.size > 0);
    return { type: 'BlockRemoved', hashes: [...chosen].map((b) => b.id), medium, groupIdx: group === 0 ? null : group };
  }

  clear(): ClearedSpec {
    this.blocks = [];
    return { type: 'AllBlocksCleared' };
  }

  /** The engine restarted: its cache is empty (it says nothing). */
  restart(): void {
    this.blocks = [];
  }

  /** The token ids of a cached block's whole chain (a prompt that should hit it), with its LoRA adapter. */
  promptTo(b: SimBlock): { tokens: number[]; lora: string } {
    const chain: SimBlock[] = [];
    for (let x: SimBlock | null = b; x; x = x.parent) chain.unshift(x);
    return { tokens: chain.flatMap((x) => x.tokens), lora: b.loraName ?? (b.loraId === null ? '' : String(b.loraId)) };
  }
}
