/**
 * The public API a proxy uses: what src/index.ts exports, the README's "Router quick start" run as
 * written (only the proxy's own functions stubbed), and the README's policies table kept in step with
 * the registry (every registered policy has a row listing its defaults).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as api from '../../src/index.ts';

const root = new URL('../..', import.meta.url).pathname;
const readme = readFileSync(join(root, 'README.md'), 'utf8');

/** The first ```ts block after `heading` in the README. */
function codeAfter(heading: string): string {
  const at = readme.indexOf(heading);
  assert.ok(at >= 0, `README has no "${heading}"`);
  const m = /```ts\n([\s\S]*?)```/.exec(readme.slice(at));
  assert.ok(m, `no code block after "${heading}"`);
  return m![1];
}

test('src/index.ts exports the router, fleet, index, ingest, registry and their helpers', () => {
  for (const name of ['createRouter', 'Router', 'Fleet', 'PrefixIndex', 'MatchResult', 'KvEventIngest', 'policies', 'PolicyRegistry', 'RouterMetrics', 'FakeClock', 'CANARY_METRICS', 'loadKernels', 'DystroError']) {
    assert.ok(name in api, `${name} is not exported`);
  }
  assert.instance(api.policies, api.PolicyRegistry);
  assert.ok(api.policies.names().includes('predicted-ttft'));
  const router = api.createRouter({ backend: 'js', pools: [{ id: 'p', accelerator: 'H100', tensorParallel: 1, model: 'llama-3-8b', kvCapacityBlocks: 1000 }] });
  assert.instance(router, api.Router);
  assert.instance(router.fleet, api.Fleet);
  assert.instance(router.index, api.PrefixIndex);
});

test('the README quick start runs as written', async () => {
  const quick = codeAfter('## Router quick start');
  const rollout = codeAfter('**Trying a policy on live traffic**');
  assert.ok(quick.trim().split('\n').length <= 10, 'the quick start is at most 10 lines of code');
  const body = quick.replace(/^import .*\n/m, '');
  const dir = mkdtempSync(join(tmpdir(), 'dystro-readme-'));
  const file = join(dir, 'quick-start.ts');
  const src = pathToFileURL(join(root, 'src/index.ts')).href;
  writeFileSync(
    file,
    `import { createRouter } from ${JSON.stringify(src)};
export function run(tokenIds: Uint32Array, forward: Function, reject: Function, setInterval: Function, log: Function) {
${body}
${rollout}
return { router, d };
}
`,
  );
  try {
    const mod = await import(pathToFileURL(file).href);
    const forwarded: { address: string; callbacks: Record<string, () => void> }[] = [];
    const rejected: unknown[] = [];
    const ticks: (() => void)[] = [];
    const logs: unknown[][] = [];
    const tokens = Uint32Array.from({ length: 300 }, (_, i) => (i * 7919) % 151_936);
    const { router, d } = mod.run(
      tokens,
      (address: string, callbacks: Record<string, () => void>) => forwarded.push({ address, callbacks }),
      (...args: unknown[]) => rejected.push(args),
      (fn: () => void) => ticks.push(fn),
      (...args: unknown[]) => logs.push(args),
    );
    assert.is(d.kind, 'route');
    assert.is(forwarded.length, 1);
    assert.match(forwarded[0].address, /^http:\/\/10\.0\.0\.[78]:8000$/);
    assert.is(router.inflight.total(), 1);
    // The proxy calls the detached callbacks.
    forwarded[0].callbacks.onFirstToken();
    forwarded[0].callbacks.onEnd();
    forwarded[0].callbacks.onError();
    assert.is(router.inflight.total(), 0);
    assert.is(ticks.length, 1);
    ticks[0]();
    // The rollout block: shadow and canary of kv-cost {} against the live kv-cost {temperature: 0.5}, promoted.
    assert.equal(router.currentPolicy(), { name: 'kv-cost', params: {} });
    assert.equal(logs, [['promoted', 'promoted by the operator']]);
    assert.is(router.shadowReport().policy, 'kv-cost');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('every registered policy has a README row with its parameters and defaults', () => {
  const section = readme.slice(readme.indexOf('## Policies'));
  for (const name of api.policies.names()) {
    const row = new RegExp(`^\\|\\s*\`${name}\`\\s*\\|.*$`, 'm').exec(section)?.[0];
    assert.ok(row, `policy ${name} has no row in the README policies table`);
    const f = api.policies.get(name)!;
    for (const [key, value] of Object.entries(f.defaults)) {
      assert.ok(row!.includes(`\`${key}\` = ${JSON.stringify(value)}`), `README row of ${name} lacks \`${key}\` = ${JSON.stringify(value)}`);
    }
    if (Object.keys(f.defaults).length === 0) assert.ok(row!.includes('| — |'), `${name} takes no parameters: its row says —`);
  }
});

test.run();
