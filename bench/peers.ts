/**
 * The peer packages the kernels are compared with, each loaded inside try/catch so a missing one costs
 * its rows (and any gate that needs it fails, saying why) instead of the whole run.
 *
 * Chosen from TOOLCHAIN.md §7: other npm consistent-hash packages are non-deterministic, place points
 * randomly, or take milliseconds a lookup. There is no Maglev or rendezvous package worth measuring.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

export interface PeerStatus {
  readonly name: string;
  readonly version?: string;
  readonly loaded: boolean;
  readonly reason?: string;
}

/** One-shot native XXH3 / XXH64 (xxhash-addon's static hash, vectorised C). */
export interface XxhashAddonPeer {
  xxh3(buf: Buffer): Buffer;
  xxh64(buf: Buffer): Buffer;
}

export interface XxhashWasmPeer {
  h64Raw(bytes: Uint8Array, seed?: bigint): bigint;
}

export interface HashWasmPeer {
  /** A reused hasher (createXXHash64 once): init → update → digest. */
  xxh64(bytes: Uint8Array): Uint8Array;
}

export interface Peers {
  xxhashAddon?: XxhashAddonPeer;
  xxhashWasm?: XxhashWasmPeer;
  hashWasm?: HashWasmPeer;
  HashRing?: typeof import('hashring').default;
  /** @subspace/jump-consistent-hash: the key as 8 big-endian bytes. */
  subspaceJump?: (key: Uint8Array, buckets: number) => number;
  /** jump-gouache: Guava's jump over a number or bigint key (BigNumber arithmetic inside). */
  gouacheJump?: (key: number | bigint, buckets: number) => number;
  readonly status: PeerStatus[];
}

const require = createRequire(import.meta.url);

function versionOf(name: string): string | undefined {
  try {
    const pkgPath = require.resolve(`${name}/package.json`);
    return (JSON.parse(readFileSync(pkgPath, 'utf8')) as { version?: string }).version;
  } catch {
    // Some packages do not export their package.json; walk from the entry point instead.
    try {
      let dir = require.resolve(name);
      for (let k = 0; k < 4; k++) {
        dir = dir.slice(0, dir.lastIndexOf('/'));
        try {
          const pkg = JSON.parse(readFileSync(`${dir}/package.json`, 'utf8')) as { name?: string; version?: string };
          if (pkg.name === name) return pkg.version;
        } catch {
          /* keep walking up */
        }
      }
    } catch {
      /* not installed */
    }
    return undefined;
  }
}

/** Interop for CommonJS/UMD packages: named exports may sit on the namespace or on its default. */
function pick<T>(mod: unknown, key: string): T | undefined {
  const m = mod as Record<string, unknown> & { default?: Record<string, unknown> };
  return (m[key] ?? m.default?.[key]) as T | undefined;
}

export async function loadPeers(): Promise<Peers> {
  const status: PeerStatus[] = [];
  const peers: Peers = { status };
  const attempt = async (name: string, load: () => Promise<void>) => {
    try {
      await load();
      status.push({ name, version: versionOf(name), loaded: true });
    } catch (err) {
      status.push({ name, version: versionOf(name), loaded: false, reason: err instanceof Error ? err.message : String(err) });
    }
  };

  await attempt('xxhash-addon', async () => {
    const mod = await import('xxhash-addon');
    const XXHash3 = pick<typeof import('xxhash-addon').XXHash3>(mod, 'XXHash3');
    const XXHash64 = pick<typeof import('xxhash-addon').XXHash64>(mod, 'XXHash64');
    if (!XXHash3 || !XXHash64) throw new Error('XXHash3 / XXHash64 not exported');
    peers.xxhashAddon = { xxh3: (b) => XXHash3.hash(b), xxh64: (b) => XXHash64.hash(b) };
  });
  await attempt('xxhash-wasm', async () => {
    const mod = await import('xxhash-wasm');
    const init = pick<() => Promise<XxhashWasmPeer>>(mod, 'default') ?? (mod as unknown as () => Promise<XxhashWasmPeer>);
    const api = await init();
    peers.xxhashWasm = { h64Raw: api.h64Raw };
  });
  await attempt('hash-wasm', async () => {
    const { createXXHash64 } = await import('hash-wasm');
    const hasher = await createXXHash64();
    peers.hashWasm = { xxh64: (b) => hasher.init().update(b).digest('binary') };
  });
  await attempt('hashring', async () => {
    const mod = await import('hashring');
    peers.HashRing = (pick(mod, 'default') ?? mod) as typeof import('hashring').default;
  });
  await attempt('@subspace/jump-consistent-hash', async () => {
    const fn = pick<(key: Uint8Array, buckets: number) => number>(await import('@subspace/jump-consistent-hash'), 'jumpConsistentHash');
    if (!fn) throw new Error('jumpConsistentHash not exported');
    peers.subspaceJump = fn;
  });
  await attempt('jump-gouache', async () => {
    const fn = pick<(key: number | bigint, buckets: number) => number>(await import('jump-gouache'), 'jump');
    if (!fn) throw new Error('jump not exported');
    peers.gouacheJump = fn;
  });
  return peers;
}
