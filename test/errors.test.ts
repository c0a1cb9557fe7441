/** Every error code is registered, documented in the README, and thrown with a readable message. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DystroError, ERROR_CODES, describeValue, fail } from '../src/errors.ts';

const root = new URL('..', import.meta.url).pathname;
const readme = readFileSync(join(root, 'README.md'), 'utf8');

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

test('every registered code has a row in the README errors table', () => {
  for (const code of Object.keys(ERROR_CODES)) {
    assert.ok(new RegExp(`^\\|\\s*\`${code}\`\\s*\\|`, 'm').test(readme), `${code} is not documented in README.md`);
  }
});

test('every DYSTRO_ERR_* code used in src/ is registered, and every registered code is used', () => {
  const used = new Set<string>();
  for (const file of sources(join(root, 'src'))) {
    if (file.endsWith('errors.ts')) continue;
    for (const m of readFileSync(file, 'utf8').matchAll(/DYSTRO_ERR_[A-Z_]+/g)) used.add(m[0]);
  }
  for (const code of used) assert.ok(code in ERROR_CODES, `${code} is used but not registered`);
  for (const code of Object.keys(ERROR_CODES)) assert.ok(used.has(code), `${code} is registered but never thrown`);
});

test('messages say what was expected and what came', () => {
  try {
    fail('DYSTRO_ERR_INVALID_WEIGHT', 'weight', 'a finite number > 0', NaN);
  } catch (e) {
    assert.instance(e, DystroError);
    assert.instance(e, Error);
    assert.is((e as DystroError).code, 'DYSTRO_ERR_INVALID_WEIGHT');
    assert.is((e as Error).message, 'Expected `weight` to be a finite number > 0, got `NaN` (number)');
  }
  assert.is(describeValue(5n), '`5n` (bigint)');
  assert.is(describeValue('x'.repeat(50)), '`"' + 'x'.repeat(40) + '…"` (string)');
  assert.is(describeValue([1, 2]), 'an Array of length 2');
  assert.is(describeValue(new Uint8Array(3)), 'a Uint8Array of length 3');
  assert.is(describeValue(null), '`null`');
});

test.run();
