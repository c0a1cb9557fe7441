/** Backend selection: precedence, typos, and the fallback order when WebAssembly is missing. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { availableBackends, loadBackend, loadKernelsSync } from '../src/kernels/select.ts';
import { ABI_VERSION } from '../src/kernels/abi.ts';
import { DystroError } from '../src/errors.ts';
import { code } from './helpers/errors.ts';

const root = new URL('..', import.meta.url).pathname;
const { attempts } = availableBackends();
const loaded = (name: string) => attempts.some((a) => a.backend === name && a.loaded);


test('auto picks wasm, then native, then js, and reports why others did not load', () => {
  const sel = loadKernelsSync({ env: {} });
  const expected = loaded('wasm') ? 'wasm' : loaded('native') ? 'native' : 'js';
  assert.is(sel.name, expected);
  assert.is(sel.requested, 'auto');
  assert.is(sel.source, 'default');
  assert.is(sel.kernels.abiVersion(), ABI_VERSION);
  for (const a of sel.attempts) if (!a.loaded) assert.type(a.reason, 'string');
});

test('DYSTRO_BACKEND overrides the option; the option overrides auto', () => {
  const a = loadKernelsSync({ backend: loaded('wasm') ? 'wasm' : 'auto', env: { DYSTRO_BACKEND: 'js' } });
  assert.is(a.name, 'js');
  assert.is(a.source, 'env');
  const b = loadKernelsSync({ backend: 'js', env: {} });
  assert.is(b.name, 'js');
  assert.is(b.source, 'option');
  const c = loadKernelsSync({ env: { DYSTRO_BACKEND: ' JS ' } });
  assert.is(c.name, 'js');
});

test('a typo in the name is a typed error, from the option or the environment', () => {
  assert.is(code(() => loadKernelsSync({ backend: 'wsam' as never, env: {} })), 'DYSTRO_ERR_UNKNOWN_BACKEND');
  assert.is(code(() => loadKernelsSync({ env: { DYSTRO_BACKEND: 'gpu' } })), 'DYSTRO_ERR_UNKNOWN_BACKEND');
  assert.is(code(() => loadBackend('cuda' as never)), 'DYSTRO_ERR_UNKNOWN_BACKEND');
});

function probe(args: string[], env: Record<string, string> = {}) {
  const script = "import('./src/kernels/select.ts').then(m => { const s = m.loadKernelsSync(); console.log(JSON.stringify({ name: s.name, attempts: s.attempts, wasm: typeof WebAssembly })); })";
  const r = spawnSync(process.execPath, [...args, '--import', 'tsx', '-e', script], { cwd: root, encoding: 'utf8', env: { ...process.env, DYSTRO_BACKEND: '', ...env } });
  assert.is(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { name: string; attempts: { backend: string; loaded: boolean; reason?: string }[]; wasm: string };
}

test('under node --jitless (no WebAssembly) auto falls back to native, then to js', () => {
  const jitless = probe(['--jitless']);
  assert.is(jitless.wasm, 'undefined');
  assert.is(jitless.attempts[0].backend, 'wasm');
  assert.is(jitless.attempts[0].loaded, false);
  assert.is(jitless.name, loaded('native') ? 'native' : 'js');
  const noNative = probe(['--jitless'], { DYSTRO_NO_NATIVE: '1' });
  assert.is(noNative.name, 'js');
  assert.match(noNative.attempts[1].reason ?? '', /DYSTRO_NO_NATIVE/);
});

test('asking for a backend that does not load throws with the reason, never falls back', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', "import('./src/kernels/select.ts').then(m => { try { m.loadKernelsSync({ backend: 'native' }); console.log('loaded'); } catch (e) { console.log(e.code); } })"], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, DYSTRO_BACKEND: '', DYSTRO_NO_NATIVE: '1' },
  });
  assert.is(r.stdout.trim(), 'DYSTRO_ERR_BACKEND_UNAVAILABLE');
});

test.run();
