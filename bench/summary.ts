/**
 * The closing table, sized for the README: the headline operations, one row per backend, with ns/op and
 * how many times faster than the js reference and than the fastest peer doing the same job.
 */
import { BATCH_PROMPTS, OP_BATCH_KERNEL, OP_HASH_BYTES, opHashTokens } from './hashing.ts';
import { OP_MAGLEV_BUILD_KERNEL, lookupPeers, opBounded, opJump, opMaglev, opRendezvous, opRing } from './lookup.ts';
import { bestPeer, findTiming, fmtNs, fmtTimes, mdTable, samePeerOp, type Timing } from './util.ts';

interface Headline {
  readonly label: string;
  readonly op: string;
  readonly unit: string;
}

const HEADLINES: readonly Headline[] = [
  { label: 'prefix hash, 8,192 tokens', op: opHashTokens(8192), unit: 'call' },
  { label: 'prefix hash, 131,072 tokens', op: opHashTokens(131072), unit: 'call' },
  { label: 'prefix hash, 32 KiB of text bytes', op: OP_HASH_BYTES, unit: 'call' },
  { label: `prefix hash batch, ${BATCH_PROMPTS} × 2,048 tokens`, op: OP_BATCH_KERNEL, unit: 'call' },
  { label: 'jump, 1,000 buckets', op: opJump(1000), unit: 'key' },
  { label: 'jump, 1,000 buckets, batch', op: opJump(1000, true), unit: 'key' },
  { label: 'ring, 1,000 nodes × 160', op: opRing(1000), unit: 'key' },
  { label: 'ring, 1,000 nodes × 160, batch', op: opRing(1000, true), unit: 'key' },
  { label: 'Maglev, 1,000 nodes', op: opMaglev(1000, 65537), unit: 'key' },
  { label: 'Maglev, 1,000 nodes, batch', op: opMaglev(1000, 65537, true), unit: 'key' },
  { label: 'rendezvous, 16 nodes', op: opRendezvous(16), unit: 'key' },
  { label: 'rendezvous, 16 nodes, batch', op: opRendezvous(16, true), unit: 'key' },
  { label: 'bounded loads over a ring, c = 1.25', op: opBounded('ring'), unit: 'key' },
  { label: 'bounded loads over Maglev, c = 1.25', op: opBounded('Maglev'), unit: 'key' },
  { label: 'Maglev build, M = 65,537, 1,000 nodes', op: OP_MAGLEV_BUILD_KERNEL, unit: 'build' },
];

export function summaryMarkdown(timings: readonly Timing[], backendOrder: readonly string[]): string {
  const rows: string[][] = [];
  for (const h of HEADLINES) {
    const select = h.op.startsWith('hash') ? samePeerOp(h.op) : lookupPeers(h.op);
    const peer = bestPeer(timings, select);
    const js = findTiming(timings, h.op, 'js');
    for (const b of backendOrder) {
      const t = findTiming(timings, h.op, b);
      if (!t) continue;
      rows.push([
        h.label,
        b,
        `${fmtNs(t.nsPerOp)}/${h.unit}`,
        js && b !== 'js' ? fmtTimes(js.nsPerOp / t.nsPerOp) : '—',
        peer ? `${fmtTimes(peer.nsPerOp / t.nsPerOp)} (${peer.impl}, ${fmtNs(peer.nsPerOp)})` : '—',
      ]);
    }
  }
  let md = '\n## Summary (for the README)\n\n';
  md += mdTable(['operation', 'backend', 'time', 'vs js', 'vs best peer'], rows, ['l', 'l', 'r', 'r', 'l']);
  md += '\n\n"vs" columns: how many times faster (peer or js time ÷ this time), from the same run. Hashing peers do a one-shot hash of the same bytes (no per-block chain); Maglev has no npm peer and is compared with hashring .get.\n';
  return md;
}
