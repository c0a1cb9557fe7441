/**
 * Which engine addresses the proxy may connect to. A replica registered through the control API names
 * a URL the proxy will then send prompts to and scrape: without a check, whoever holds the control
 * token could point it at a cloud metadata service (169.254.169.254 and friends) and read credentials
 * through the proxy's responses, or at any internal host (server-side request forgery).
 *
 * Two lists:
 *  - refused, always (config-file engines too): link-local 169.254.0.0/16 and fe80::/10 (where every
 *    major cloud puts its metadata service), the other known metadata addresses (Alibaba 100.100.100.200,
 *    Oracle 192.0.0.192, AWS's IPv6 fd00:ec2::254), "this network" 0.0.0.0/8 and :: (connecting there
 *    reaches the local host on Linux), and the metadata host names;
 *  - allowed, for control-API registrations: CIDRs ("10.0.0.0/8", "::1/128"), single addresses, host
 *    names ("engine-0.internal") and suffix wildcards ("*.engines.internal").
 * A host name is allowed when it is listed by name or when every address it resolves to is inside an
 * allowed CIDR; either way none of its addresses may be refused. Names are resolved again at every
 * connect (`guardedLookup`), so a name that later resolves to a refused address (DNS rebinding) fails
 * to connect instead of reaching it. IPv4-mapped IPv6 (::ffff:169.254.169.254) counts as its IPv4.
 */
import { BlockList, isIP } from 'node:net';
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';

export type AddressCheck = { ok: true; url: URL } | { ok: false; reason: string };

/** Resolves a host name to all its addresses (injected in tests). */
export type Resolver = (hostname: string) => Promise<readonly { address: string; family: number }[]>;

const REFUSED_V4: readonly [string, number][] = [
  ['169.254.0.0', 16],
  ['100.100.100.200', 32],
  ['192.0.0.192', 32],
  ['0.0.0.0', 8],
];
const REFUSED_V6: readonly [string, number][] = [
  ['fe80::', 10],
  ['fd00:ec2::254', 128],
  ['::', 128],
];
const REFUSED_NAMES = new Set(['metadata', 'metadata.google.internal', 'metadata.goog', 'instance-data', 'instance-data.ec2.internal', 'metadata.azure.com']);

const refused = new BlockList();
for (const [net, prefix] of REFUSED_V4) refused.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of REFUSED_V6) refused.addSubnet(net, prefix, 'ipv6');

function family(address: string): 'ipv4' | 'ipv6' | null {
  const v = isIP(address);
  return v === 4 ? 'ipv4' : v === 6 ? 'ipv6' : null;
}

/** URL host names keep IPv6 literals in brackets; node:net wants them bare. */
function bareHost(hostname: string): string {
  return hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
}

/** True when an IP address (either family) is on the refused list. */
export function isRefusedAddress(address: string): boolean {
  const f = family(address);
  return f === null ? false : refused.check(address, f);
}

function isRefusedName(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/\.$/, '');
  return REFUSED_NAMES.has(h);
}

export const defaultResolver: Resolver = (hostname) =>
  new Promise((resolve, reject) => dnsLookup(hostname, { all: true, verbatim: true }, (err, addrs) => (err ? reject(err) : resolve(addrs))));

/** The allowlist of the control API, compiled once. */
export class Allowlist {
  private readonly cidrs = new BlockList();
  private readonly names = new Set<string>();
  private readonly suffixes: string[] = [];
  readonly entries: readonly string[];

  /** Throws a TypeError naming the first entry that is neither a CIDR, an address nor a host name. */
  constructor(entries: readonly string[]) {
    this.entries = [...entries];
    for (const raw of entries) {
      if (typeof raw !== 'string' || raw.length === 0 || raw.length > 253) throw new TypeError(`Expected an allowlist entry to be a CIDR, an address or a host name, got ${JSON.stringify(raw)}`);
      const entry = raw.trim().toLowerCase();
      const slash = entry.indexOf('/');
      if (slash >= 0) {
        const net = bareHost(entry.slice(0, slash));
        const prefix = Number(entry.slice(slash + 1));
        const f = family(net);
        if (f === null || !Number.isInteger(prefix) || prefix < 0 || prefix > (f === 'ipv4' ? 32 : 128)) throw new TypeError(`Expected a CIDR such as 10.0.0.0/8, got ${JSON.stringify(raw)}`);
        this.cidrs.addSubnet(net, prefix, f);
      } else if (family(bareHost(entry)) !== null) {
        const a = bareHost(entry);
        this.cidrs.addAddress(a, family(a)!);
      } else if (entry.startsWith('*.') && /^[a-z0-9.-]+$/.test(entry.slice(2))) {
        this.suffixes.push(entry.slice(1));
      } else if (/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(entry)) {
        this.names.add(entry.replace(/\.$/, ''));
      } else {
        throw new TypeError(`Expected an allowlist entry to be a CIDR, an address or a host name, got ${JSON.stringify(raw)}`);
      }
    }
  }

  allowsAddress(address: string): boolean {
    const f = family(address);
    return f !== null && this.cidrs.check(address, f);
  }

  allowsName(hostname: string): boolean {
    const h = hostname.toLowerCase().replace(/\.$/, '');
    if (this.names.has(h)) return true;
    for (const s of this.suffixes) if (h.endsWith(s) && h.length > s.length) return true;
    return false;
  }
}

/**
 * Checks a host (a name or an IP literal): refused addresses and names always; with an allowlist, the
 * host must be allowed by name or by every resolved address.
 */
export async function checkHost(hostname: string, allow: Allowlist | null, resolve: Resolver = defaultResolver): Promise<{ ok: true } | { ok: false; reason: string }> {
  const host = bareHost(hostname);
  if (host.length === 0) return { ok: false, reason: 'the address has no host' };
  if (isRefusedName(host)) return { ok: false, reason: 'a cloud metadata host name is never an engine' };
  if (family(host) !== null) {
    if (isRefusedAddress(host)) return { ok: false, reason: 'link-local and cloud metadata addresses are never engines' };
    if (allow && !allow.allowsAddress(host)) return { ok: false, reason: 'the address is not in the allowlist' };
    return { ok: true };
  }
  let addrs: readonly { address: string }[];
  try {
    addrs = await resolve(host);
  } catch {
    return { ok: false, reason: 'the host name does not resolve' };
  }
  if (addrs.length === 0) return { ok: false, reason: 'the host name does not resolve' };
  if (addrs.some((a) => isRefusedAddress(a.address))) return { ok: false, reason: 'the host name resolves to a link-local or cloud metadata address' };
  if (allow && !allow.allowsName(host) && !addrs.every((a) => allow.allowsAddress(a.address))) return { ok: false, reason: 'the host is not in the allowlist' };
  return { ok: true };
}

/** An engine's HTTP base URL: http(s), no credentials, query or fragment; then checkHost. */
export async function checkEngineUrl(address: string, allow: Allowlist | null, resolve?: Resolver): Promise<AddressCheck> {
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    return { ok: false, reason: 'not a URL' };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return { ok: false, reason: 'only http and https engines are supported' };
  if (url.username !== '' || url.password !== '') return { ok: false, reason: 'credentials in the URL are not accepted' };
  if (url.search !== '' || url.hash !== '') return { ok: false, reason: 'a query or fragment in an engine URL is not accepted' };
  const host = await checkHost(url.hostname, allow, resolve);
  return host.ok ? { ok: true, url } : host;
}

/** A ZeroMQ endpoint of an engine's KV events: tcp://host:port only (no ipc, inproc or wildcard binds). */
export async function checkZmqEndpoint(endpoint: string, allow: Allowlist | null, resolve?: Resolver): Promise<{ ok: true } | { ok: false; reason: string }> {
  const m = /^tcp:\/\/(\[[0-9a-fA-F:.]+\]|[^:/[\]*]+):(\d{1,5})$/.exec(endpoint);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) return { ok: false, reason: 'expected tcp://host:port' };
  return checkHost(m[1], allow, resolve);
}

/**
 * A `lookup` for sockets (undici's connector passes it to net.connect): resolves as usual and fails the
 * connect when an address is refused, so a name that starts resolving to a metadata address after it
 * was registered (DNS rebinding) is never reached.
 */
export function guardedLookup(hostname: string, options: LookupOptions, callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void): void {
  if (isRefusedName(hostname)) {
    callback(Object.assign(new Error(`refused host ${hostname}`), { code: 'EDYSTROREFUSED' }), '', 0);
    return;
  }
  dnsLookup(hostname, { ...options, all: true }, (err, addrs) => {
    if (err) return callback(err, '', 0);
    const list = addrs as LookupAddress[];
    if (list.some((a) => isRefusedAddress(a.address))) {
      return callback(Object.assign(new Error(`refused address for ${hostname}`), { code: 'EDYSTROREFUSED' }), '', 0);
    }
    if (options.all) return callback(null, list);
    callback(null, list[0].address, list[0].family);
  });
}
