/**
 * Credentials: data-plane API keys (each maps to a tenant) and the control API's bearer token.
 *
 * The control token is compared in constant time: both sides are hashed to SHA-256 digests first, so
 * crypto.timingSafeEqual always compares 32 bytes with 32 bytes whatever was presented (a direct
 * compare would throw on a length mismatch, and an early-exit compare leaks the length of the matching
 * prefix through its timing). A missing header is hashed too, so it costs the same work.
 *
 * API keys are found by their digest in a Map. Hashing first is what makes that safe: the lookup's
 * timing depends on the digest, which an attacker cannot steer toward a valid key's digest, never on
 * how many leading characters of a real key were guessed. The config may hold the digest instead of
 * the key (`sha256`), so the file need not contain secrets at all.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

export function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerToken(header: string | string[] | undefined): string | null {
  if (typeof header !== 'string') return null;
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  return m ? m[1] : null;
}

/**
 * Whether `presented` is the token whose digest is `expected` (32 bytes). `equal` is injectable only so
 * a test can watch it being called with two 32-byte digests for every input.
 */
export function tokenMatches(presented: string | null, expected: Buffer, equal: (a: Buffer, b: Buffer) => boolean = timingSafeEqual): boolean {
  const digest = sha256(presented ?? '');
  const same = equal(digest, expected);
  return presented !== null && same;
}

export interface Tenant {
  /** Tenant id (config key): fairness quotas and SLO class are configured by it. */
  readonly id: string;
  /**
   * The salt that seeds this tenant's prefix block hashes (the router's `tenant`) and that the engine
   * gets in a header and as vLLM's `cache_salt`: different salts never share cache credit.
   */
  readonly salt: string;
  /** SLO class of the tenant's requests (the router's `priority`); undefined: the router's first class. */
  readonly sloClass?: string;
}

export class KeyStore {
  private readonly byDigest = new Map<string, Tenant>();

  /** `digests`: hex SHA-256 digests of keys → tenant. */
  constructor(entries: Iterable<readonly [digestHex: string, tenant: Tenant]>) {
    for (const [d, t] of entries) this.byDigest.set(d, t);
  }

  get size(): number {
    return this.byDigest.size;
  }

  /** The tenant of a presented key, or undefined. */
  tenantOf(key: string | null): Tenant | undefined {
    if (key === null) return undefined;
    return this.byDigest.get(sha256(key).toString('hex'));
  }

  hasDigest(digest: Buffer): boolean {
    return this.byDigest.has(digest.toString('hex'));
  }
}
