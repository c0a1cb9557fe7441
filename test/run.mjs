#!/usr/bin/env node
// Runs every test file under test/ (files named *.test.ts) with uvu, one process per file so a file that
// throws on import cannot hide the others, then prints one closing line "N passed, N failed" counting
// every test of every suite (uvu prints only its own Total/Passed lines). Exit code: 0 when all passed.
// Usage: node test/run.mjs [substring filter …]
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const uvuBin = join(root, 'node_modules', 'uvu', 'bin.js');
const filters = process.argv.slice(2);
/** Longest a single test file may run (ms); DYSTRO_TEST_FILE_TIMEOUT_MS overrides. */
const FILE_TIMEOUT_MS = Number(process.env.DYSTRO_TEST_FILE_TIMEOUT_MS ?? 180_000);

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return name === 'fixtures' ? [] : walk(p);
    return name.endsWith('.test.ts') ? [p] : [];
  });
}

const files = walk(join(root, 'test'))
  .map((p) => relative(root, p))
  .filter((p) => filters.length === 0 || filters.some((f) => p.includes(f)))
  .sort();

const strip = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');
let passed = 0;
let failed = 0;
let skipped = 0;
const broken = [];
for (const file of files) {
  const started = Date.now();
  const base = file.split(/[\\/]/).pop();
  const pattern = `^${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', uvuBin, dirname(file), pattern], {
    cwd: root,
    env: { ...process.env, FORCE_COLOR: '0' },
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    // A hung file (a socket that never answers) must not hang CI: it is killed and counted as failed.
    timeout: FILE_TIMEOUT_MS,
    killSignal: 'SIGKILL',
  });
  if (r.error && r.error.code === 'ETIMEDOUT') {
    failed += 1;
    broken.push(file);
    console.log(`✗ ${file}: killed after ${FILE_TIMEOUT_MS / 1000} s without finishing\n${strip(`${r.stdout ?? ''}${r.stderr ?? ''}`).trim()}`);
    continue;
  }
  const out = strip(`${r.stdout ?? ''}${r.stderr ?? ''}`);
  const total = Number(/Total:\s+(\d+)/.exec(out)?.[1] ?? NaN);
  const ok = Number(/Passed:\s+(\d+)/.exec(out)?.[1] ?? NaN);
  const skip = Number(/Skipped:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  if (Number.isNaN(total) || Number.isNaN(ok)) {
    // The file died before uvu could summarise it: count it as one failure and show why.
    failed += 1;
    broken.push(file);
    console.log(`✗ ${file} (${secs}s): did not run to completion (exit ${r.status})\n${out.trim()}`);
    continue;
  }
  passed += ok;
  skipped += skip;
  const bad = total - ok - skip;
  failed += bad;
  if (bad > 0 || r.status !== 0) {
    if (bad === 0) failed += 1;
    broken.push(file);
    console.log(`✗ ${file} (${secs}s): ${ok}/${total} passed\n${out.trim()}`);
  } else {
    console.log(`✓ ${file} (${secs}s): ${ok} passed${skip ? `, ${skip} skipped` : ''}`);
  }
}
if (files.length === 0) {
  console.log('no test files matched');
  failed += 1;
}
if (broken.length) console.log(`failing files: ${broken.join(', ')}`);
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed === 0 ? 0 : 1);
