/**
 * The HTML reports: self-contained (nothing to fetch: no URL, script, stylesheet link or image source),
 * escaped, with the SVG charts; and rendered by headless Chromium — a screenshot that is not blank and
 * a DOM dump that holds the charts. Chromium is Debian's `chromium` package (/usr/bin/chromium); this
 * file installs nothing: without it the rendering test says why and is skipped.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { spawnSync } from 'node:child_process';
import { inflateSync } from 'node:zlib';
import { compare, type CompareResult } from '../../src/sim/compare.ts';
import { sweep } from '../../src/sim/sweep.ts';
import { compareHtml, escapeHtml, lineChart, logTicks, niceTicks, sweepHtml } from '../../src/sim/report-html.ts';
import type { WorkloadSpec } from '../../src/sim/workloads.ts';

/** Debian's chromium; DYSTRO_CHROMIUM points elsewhere (or at a missing path, to see the skip). */
const CHROMIUM = process.env.DYSTRO_CHROMIUM ?? '/usr/bin/chromium';
const workload: WorkloadSpec = { kind: 'shared-prefix', groups: 12, promptsPerGroup: 4, systemPromptTokens: 3000, questionTokens: 200, outputTokens: 48, ratePerS: 20, rounds: 2, seed: 1 };
const fleet = [
  { id: 'h100', accelerator: 'H100', model: 'llama-3-8b', replicas: 2 },
  { id: 'h200', accelerator: 'H200', model: 'llama-3-8b', replicas: 2 },
];

let report: CompareResult;
async function getReport(): Promise<CompareResult> {
  report ??= await compare({ candidate: 'predicted-ttft', baselines: ['cache-aware', 'round-robin'], workload, fleet, seeds: [1, 2], capacity: [0.5, 1, 2], threads: 0, sim: { timelineBucketMs: 1000 } });
  return report;
}

/** Everything that would make a browser fetch something. */
function externalRefs(html: string): string[] {
  const found: string[] = [];
  for (const re of [/https?:\/\//gi, /\b(?:src|href|xlink:href)\s*=/gi, /url\s*\(/gi, /<script/gi, /<link/gi, /<img/gi, /<iframe/gi, /@import/gi, /\/\/[a-z0-9.-]+\.[a-z]{2,}/gi]) {
    for (const m of html.matchAll(re)) found.push(m[0]);
  }
  return found;
}

test('compare report: one self-contained page with the three kinds of chart', async () => {
  const html = compareHtml(await getReport());
  assert.ok(html.startsWith('<!DOCTYPE html>'));
  assert.equal(externalRefs(html), [], 'nothing to fetch');
  assert.ok(html.includes('<svg class="chart" id="ttft-cdf"'));
  assert.ok(html.includes('<svg class="chart" id="hit-rate"'));
  assert.ok(html.includes('<svg class="chart" id="capacity"'));
  for (const p of ['predicted-ttft', 'cache-aware', 'round-robin']) assert.ok(html.includes(`id="replica-load-${p}"`), `per-replica load of ${p}`);
  assert.ok((html.match(/<path d="M/g) ?? []).length >= 3 + 3 + 3 + 3 * 4, 'a line per policy per chart and per replica');
  assert.ok(html.includes(`verdict: ${escapeHtml(report.verdict.line)}`));
  assert.not.ok(/NaN|undefined|Infinity/.test(html.replace(/<title>[^<]*<\/title>/g, '')), 'no broken numbers');
});

test('sweep report: self-contained, attainment, goodput and TTFT against load', async () => {
  const r = await sweep({ policies: ['round-robin', 'predicted-ttft'], loads: [1, 2], workload, fleet, threads: 0 });
  const html = sweepHtml(r);
  assert.equal(externalRefs(html), []);
  for (const id of ['attainment', 'goodput', 'ttft-p90']) assert.ok(html.includes(`<svg class="chart" id="${id}"`), id);
});

test('text in the page is escaped; chart helpers', () => {
  const svg = lineChart({ title: '<b>&"x"', xLabel: 'x', yLabel: 'y', series: [{ name: '<script>', color: '#000', points: [[1, 1], [2, 3]] }] });
  assert.not.ok(svg.includes('<b>') || svg.includes('<script>'));
  assert.ok(svg.includes('&lt;b&gt;&amp;&quot;x&quot;'));
  assert.equal(niceTicks(0, 1, 5), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.equal(niceTicks(0, 37, 4), [0, 10, 20, 30]);
  assert.equal(logTicks(10, 1000), [10, 20, 50, 100, 200, 500, 1000]);
  assert.equal(logTicks(1, 1e5), [1, 10, 100, 1000, 10000, 100000]);
});

// ---------------------------------------------------------------- PNG check

/** Decodes an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) into rows of pixels. */
function decodePng(buf: Buffer): { width: number; height: number; channels: number; pixels: Uint8Array } {
  assert.equal([...buf.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10], 'PNG signature');
  let at = 8;
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Buffer[] = [];
  while (at < buf.length) {
    const len = buf.readUInt32BE(at);
    const type = buf.toString('latin1', at + 4, at + 8);
    const data = buf.subarray(at + 8, at + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      assert.is(data[8], 8, 'bit depth 8');
      channels = data[9] === 6 ? 4 : data[9] === 2 ? 3 : 0;
      assert.ok(channels > 0, `colour type ${data[9]}`);
      assert.is(data[12], 0, 'not interlaced');
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    at += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const pixels = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? pixels[y * stride + x - channels] : 0;
      const b = y > 0 ? pixels[(y - 1) * stride + x] : 0;
      const c = x >= channels && y > 0 ? pixels[(y - 1) * stride + x - channels] : 0;
      let v = line[x];
      if (filter === 1) v += a;
      else if (filter === 2) v += b;
      else if (filter === 3) v += (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      pixels[y * stride + x] = v & 255;
    }
  }
  return { width, height, channels, pixels };
}

function chromium(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(CHROMIUM, args, { encoding: 'utf8', timeout: 60_000, maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

test('headless Chromium renders the report: a screenshot that is not blank, a DOM with the SVG charts', async () => {
  if (!existsSync(CHROMIUM)) {
    // CI installs chromium (.ci/run) and sets DYSTRO_REQUIRE_CHROMIUM, so there a missing browser fails.
    if (process.env.DYSTRO_REQUIRE_CHROMIUM === '1') assert.unreachable(`${CHROMIUM} is missing but DYSTRO_REQUIRE_CHROMIUM=1`);
    console.log(`  skipped: ${CHROMIUM} is missing (Debian: apt-get install -y chromium); the report's content is checked above`);
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'dystro-html-'));
  try {
    const file = join(dir, 'report.html');
    writeFileSync(file, compareHtml(await getReport()));
    const common = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--hide-scrollbars'];
    const png = join(dir, 'report.png');
    const shot = chromium([...common, `--user-data-dir=${join(dir, 'profile-1')}`, '--window-size=1360,2000', `--screenshot=${png}`, pathToFileURL(file).href]);
    assert.ok(existsSync(png), `no screenshot (exit ${shot.status}): ${shot.stderr.slice(-500)}`);
    const size = statSync(png).size;
    assert.ok(size > 30_000, `screenshot of ${size} bytes: too small for tables and charts`);
    const img = decodePng(readFileSync(png));
    assert.is(img.width, 1360);
    let ink = 0;
    const colours = new Set<number>();
    for (let i = 0; i < img.pixels.length; i += img.channels) {
      const [r, g, b] = [img.pixels[i], img.pixels[i + 1], img.pixels[i + 2]];
      if (r < 200 || g < 200 || b < 200) ink++;
      if (colours.size < 5000) colours.add((r << 16) | (g << 8) | b);
    }
    const share = ink / (img.width * img.height);
    assert.ok(share > 0.005, `only ${(100 * share).toFixed(3)}% of the pixels are drawn: blank page`);
    assert.ok(colours.size > 50, `${colours.size} colours: the charts' lines are missing`);
    const dom = chromium([...common, `--user-data-dir=${join(dir, 'profile-2')}`, '--dump-dom', pathToFileURL(file).href]);
    assert.is(dom.status, 0, dom.stderr.slice(-500));
    const svgs = dom.stdout.match(/<svg class="chart"/g) ?? [];
    assert.ok(svgs.length >= 3 + 3, `${svgs.length} charts in the rendered DOM`);
    for (const id of ['ttft-cdf', 'hit-rate', 'capacity', 'replica-load-predicted-ttft']) assert.ok(dom.stdout.includes(`id="${id}"`), id);
    console.log(`  chromium: ${img.width}×${img.height} screenshot, ${(size / 1024).toFixed(0)} KiB, ${(100 * share).toFixed(1)}% inked, ${colours.size} colours; ${svgs.length} SVG charts in the DOM`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
