/**
 * The control API: authentication (401 and no state change for a missing, wrong or data-plane
 * credential; the compare runs on equal-length digests through crypto.timingSafeEqual), the address
 * allowlist for registrations (link-local, metadata and unlisted addresses refused, before anything
 * changes), the operations themselves (policy, shadow, canary, drain, registration, removal), and a
 * policy swapped again and again under load without a request lost or duplicated.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { timingSafeEqual } from 'node:crypto';
import { sha256, tokenMatches } from '../../src/proxy/auth.ts';
import type { Proxy } from '../../src/proxy/proxy.ts';
import type { Resolver } from '../../src/proxy/address.ts';
import { CONTROL_TOKEN, KEY_A, MODEL, baseConfig, control, engineSuccesses, inflightTotals, metricSum, openai, start, startEngines, text, until } from './helpers.ts';

/** Everything a control call could change, to compare before and after a refused one. */
function stateOf(p: Proxy): unknown {
  const snap = p.router.fleet.snapshot();
  return {
    policy: p.router.currentPolicy(),
    shadow: p.router.shadowReport().active,
    canary: p.router.canaryStatus().state,
    version: snap.version,
    replicas: snap.replicas.map((r) => [r.id, r.address, r.drained, r.health]),
    engines: p.engineIds(),
  };
}

test('no token, a wrong token or a data-plane key: 401 on every action and nothing changes', async () => {
  const engines = await startEngines(2);
  const proxy = await start(baseConfig(engines));
  try {
    const before = stateOf(proxy);
    const wrong = [null, 'x'.repeat(CONTROL_TOKEN.length), CONTROL_TOKEN.slice(0, -1), `${CONTROL_TOKEN}x`, KEY_A, '', CONTROL_TOKEN.toUpperCase()];
    const actions: [Parameters<typeof control>[1], string, unknown][] = [
      ['PUT', '/policy', { name: 'round-robin' }],
      ['PUT', '/shadow', { name: 'kv-cost' }],
      ['PUT', '/canary', { name: 'kv-cost', fraction: 0.5 }],
      ['POST', '/canary/promote', {}],
      ['PUT', '/replicas/e9', { pool: 'h100', address: engines[0].url }],
      ['DELETE', '/replicas/e0', undefined],
      ['PUT', '/replicas/e1/drain', {}],
      ['GET', '/replicas', undefined],
      ['GET', '/policy', undefined],
    ];
    for (const token of wrong) {
      for (const [method, path, body] of actions) {
        const r = await control(proxy, method, path, body, token);
        assert.is(r.status, 401, `${method} ${path} with ${token === null ? 'no token' : 'a wrong token'}`);
        assert.is(r.json.error.code, 'unauthorized');
      }
    }
    // Other schemes and shapes of the header.
    const { request } = await import('undici');
    for (const authorization of [`Basic ${CONTROL_TOKEN}`, `Bearer${CONTROL_TOKEN}`, `Bearer ${CONTROL_TOKEN} extra`, `Token ${CONTROL_TOKEN}`]) {
      const r = await request(`${proxy.controlUrl}/policy`, { method: 'PUT', headers: { authorization, 'content-type': 'application/json' }, body: '{"name":"round-robin"}' });
      await r.body.dump();
      assert.is(r.statusCode, 401, authorization.slice(0, 12));
    }
    assert.equal(stateOf(proxy), before, 'no state change');
    assert.is(await metricSum(proxy, 'dystro_proxy_auth_failures_total', { plane: 'control' }), wrong.length * actions.length + 4);
    // The control token is not accepted on the data plane either (checked in proxy.test.ts), and the
    // right token works.
    const ok = await control(proxy, 'GET', '/policy');
    assert.is(ok.status, 200);
    assert.is(ok.json.live.name, 'predicted-ttft');
  } finally {
    await proxy.close();
    await Promise.all(engines.map((e) => e.close()));
  }
});

test('the token compare hashes both sides and calls timingSafeEqual on two 32-byte digests, whatever is presented', () => {
  const expected = sha256(CONTROL_TOKEN);
  const calls: [number, number][] = [];
  const spy = (a: Buffer, b: Buffer) => {
    calls.push([a.length, b.length]);
    return timingSafeEqual(a, b);
  };
  const inputs: [string | null, boolean][] = [
    [CONTROL_TOKEN, true],
    [null, false],
    ['', false],
    ['a', false],
    [CONTROL_TOKEN.slice(0, 8), false],
    [`${CONTROL_TOKEN}${'z'.repeat(10_000)}`, false],
    [CONTROL_TOKEN.replace(/.$/, '!'), false],
  ];
  for (const [presented, want] of inputs) assert.is(tokenMatches(presented, expected, spy), want, String(presented).slice(0, 20));
  assert.is(calls.length, inputs.length, 'one compare per check, including a missing token');
  for (const [a, b] of calls) assert.equal([a, b], [32, 32]);
});

test('registrations: link-local, metadata and unlisted addresses are refused (403) before anything changes', async () => {
  const engines = await startEngines(2);
  // Names resolve through this map (no real DNS in tests).
  const dns: Record<string, string[]> = { 'rebind.example': ['127.0.0.1', '169.254.169.254'], 'far.example': ['10.1.2.3'], 'engine.test': ['127.0.0.1'] };
  const resolver: Resolver = async (host) => {
    const list = dns[host];
    if (!list) throw Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' });
    return list.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
  const proxy = await start(baseConfig(engines.slice(0, 1), { control: { port: 0, token: CONTROL_TOKEN, allow: ['127.0.0.1/32', 'engine.test'] } }), { resolver });
  try {
    const before = stateOf(proxy);
    const refused: [string, Record<string, unknown>][] = [
      ['http://169.254.169.254/', {}],
      ['http://169.254.169.254:80/latest/meta-data', {}],
      ['http://169.254.10.20:8000', {}],
      ['http://[fe80::1]:8000', {}],
      ['http://[febf::abcd]:8000', {}],
      ['http://[::ffff:169.254.169.254]:80', {}],
      ['http://[fd00:ec2::254]/', {}],
      ['http://100.100.100.200/', {}],
      ['http://metadata.google.internal/', {}],
      ['http://METADATA.GOOGLE.INTERNAL./', {}],
      ['http://0.0.0.0:8000', {}],
      ['http://10.0.0.5:8000', {}], // not in the allowlist
      ['http://[::1]:8000', {}], // loopback, but only 127.0.0.1/32 is allowed
      ['http://far.example:8000', {}], // resolves outside the allowlist
      ['http://rebind.example:8000', {}], // one of its addresses is the metadata service
      ['http://nowhere.example:8000', {}], // does not resolve
      ['ftp://127.0.0.1:21', {}],
      ['http://user:pw@127.0.0.1:8000', {}],
      [engines[1].url, { kvEvents: { endpoint: 'tcp://169.254.169.254:5557' } }],
      [engines[1].url, { kvEvents: { endpoint: 'tcp://10.0.0.5:5557' } }],
      [engines[1].url, { kvEvents: { endpoint: 'ipc:///tmp/x' } }],
    ];
    for (const [address, extra] of refused) {
      const r = await control(proxy, 'PUT', '/replicas/intruder', { pool: 'h100', address, ...extra });
      assert.is(r.status, 403, address);
      assert.is(r.json.error.code, 'address_refused', address);
    }
    // Malformed registrations are 400s, and an unknown pool too.
    assert.is((await control(proxy, 'PUT', '/replicas/x', { pool: 'h100' })).status, 400);
    assert.is((await control(proxy, 'PUT', '/replicas/x', { pool: 'nope', address: engines[1].url })).status, 400);
    assert.is((await control(proxy, 'PUT', '/replicas/x', { pool: 'h100', address: engines[1].url, extra: 1 })).status, 400);
    assert.equal(stateOf(proxy), before, 'nothing changed');

    // Allowed: by name, and by CIDR (the second emulator, which then serves traffic).
    assert.is((await control(proxy, 'PUT', '/replicas/named', { pool: 'h100', address: 'http://engine.test:9' })).status, 200);
    assert.is((await control(proxy, 'DELETE', '/replicas/named')).status, 200);
    const reg = await control(proxy, 'PUT', '/replicas/e1', { pool: 'h100', address: engines[1].url, kvEvents: { endpoint: engines[1].eventsEndpoint, replayEndpoint: engines[1].replayEndpoint } });
    assert.is(reg.status, 200);
    assert.is(reg.json.id, 'e1');
    assert.is((await control(proxy, 'PUT', '/replicas/e0/drain')).json.drained, true);
    const { response } = await openai(proxy).completions.create({ model: MODEL, prompt: text(30), max_tokens: 3 }).withResponse();
    assert.is(response.headers.get('x-dystro-replica'), 'e1');
  } finally {
    await proxy.close();
    await Promise.all(engines.map((e) => e.close()));
  }
});

test('policy, shadow, canary, drain and removal through the control API', async () => {
  const engines = await startEngines(3);
  const proxy = await start(baseConfig(engines));
  try {
    let r = await control(proxy, 'PUT', '/policy', { name: 'round-robin' });
    assert.is(r.status, 200);
    assert.is(proxy.router.policyId, 'round-robin');
    r = await control(proxy, 'PUT', '/policy', { name: 'round-robbin' });
    assert.is(r.status, 400);
    assert.is(r.json.error.code, 'DYSTRO_ERR_UNKNOWN_POLICY');
    r = await control(proxy, 'PUT', '/policy', { name: 'kv-cost', params: { temprature: 1 } });
    assert.is(r.status, 400);
    assert.is(r.json.error.code, 'DYSTRO_ERR_POLICY_PARAMS');
    assert.is(proxy.router.policyId, 'round-robin', 'refused swaps leave the policy in place');
    r = await control(proxy, 'PUT', '/policy', { name: 'kv-cost', params: { temperature: 0.5 } });
    assert.equal(r.json.live, { name: 'kv-cost', params: { temperature: 0.5 } });

    r = await control(proxy, 'PUT', '/shadow', { name: 'least-request', seed: 3 });
    assert.is(r.status, 200);
    const client = openai(proxy);
    for (let i = 0; i < 4; i++) await client.completions.create({ model: MODEL, prompt: text(20, i), max_tokens: 2 });
    r = await control(proxy, 'GET', '/policy');
    assert.is(r.json.shadow.active, true);
    assert.is(r.json.shadow.decisions, 4);
    r = await control(proxy, 'DELETE', '/shadow');
    assert.is(r.json.report.decisions, 4);

    r = await control(proxy, 'PUT', '/canary', { name: 'round-robin', fraction: 0.5, guard: { metric: 'ttft-p90-ratio', max: 3, minSamples: 1000 } });
    assert.is(r.status, 200);
    assert.is(r.json.state, 'running');
    assert.is((await control(proxy, 'PUT', '/canary', { name: 'round-robin', fraction: 2 })).status, 400);
    assert.is(proxy.router.canaryStatus().state, 'running', 'a refused canary leaves the running one');
    for (let i = 0; i < 6; i++) await client.completions.create({ model: MODEL, prompt: text(20, 10 + i), max_tokens: 2 });
    r = await control(proxy, 'POST', '/canary/promote');
    assert.is(r.json.state, 'promoted');
    assert.is(proxy.router.policyId, 'round-robin');

    // Drain e0 and e1: everything goes to e2; undrain; remove e2.
    await control(proxy, 'PUT', '/replicas/e0/drain');
    await control(proxy, 'PUT', '/replicas/e1/drain');
    for (let i = 0; i < 3; i++) {
      const { response } = await client.completions.create({ model: MODEL, prompt: text(20, 20 + i), max_tokens: 2 }).withResponse();
      assert.is(response.headers.get('x-dystro-replica'), 'e2');
    }
    await control(proxy, 'DELETE', '/replicas/e0/drain');
    await control(proxy, 'DELETE', '/replicas/e1/drain');
    r = await control(proxy, 'DELETE', '/replicas/e2');
    assert.equal(r.json, { removed: 'e2' });
    assert.is((await control(proxy, 'DELETE', '/replicas/e2')).status, 404);
    assert.is((await control(proxy, 'PUT', '/replicas/e2/drain')).status, 404);
    r = await control(proxy, 'GET', '/replicas');
    assert.equal(r.json.replicas.map((x: { id: string; drained: boolean }) => [x.id, x.drained]), [['e0', false], ['e1', false]]);
    for (let i = 0; i < 4; i++) {
      const { response } = await client.completions.create({ model: MODEL, prompt: text(20, 30 + i), max_tokens: 2 }).withResponse();
      assert.ok(['e0', 'e1'].includes(response.headers.get('x-dystro-replica') ?? ''));
    }
    assert.is((await control(proxy, 'GET', '/nothing')).status, 404);
    assert.is((await control(proxy, 'POST', '/policy', {})).status, 405);
  } finally {
    await proxy.close();
    await Promise.all(engines.map((e) => e.close()));
  }
});

test('policy swapped every few ms under load: every request answered once, none lost or duplicated', async () => {
  const engines = await startEngines(3);
  const proxy = await start(baseConfig(engines));
  try {
    const client = openai(proxy);
    const policies = ['round-robin', 'least-request', 'kv-cost', 'p2c', 'cache-aware', 'weighted-scorers', 'consistent-hash', 'random', 'predicted-ttft'];
    let swapping = true;
    let swaps = 0;
    const swapper = (async () => {
      while (swapping) {
        const r = await control(proxy, 'PUT', '/policy', { name: policies[swaps % policies.length] });
        assert.is(r.status, 200);
        swaps++;
        await new Promise((res) => setTimeout(res, 3));
      }
    })();
    const N = 120;
    const results = await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        // Shared prefixes (families of 8) so cache-aware policies have something to chase.
        const prompt = `${text(60, i % 8)} request ${i}`;
        if (i % 2 === 0) {
          const c = await client.completions.create({ model: MODEL, prompt, max_tokens: 6 });
          return c.usage?.completion_tokens ?? -1;
        }
        const s = await client.completions.create({ model: MODEL, prompt, max_tokens: 6, stream: true, stream_options: { include_usage: true } });
        let n = -1;
        for await (const ch of s) if (ch.usage) n = ch.usage.completion_tokens;
        return n;
      }),
    );
    swapping = false;
    await swapper;
    assert.ok(swaps >= 5, `policy swapped ${swaps} times during the run`);
    assert.equal(results, new Array(N).fill(6), 'every request got its full answer');
    let served = 0;
    for (const e of engines) served += await engineSuccesses(e);
    assert.is(served, N, 'the engines served each request exactly once');
    assert.is(await metricSum(proxy, 'dystro_proxy_upstream_attempts_total'), N);
    assert.is(await metricSum(proxy, 'dystro_proxy_retries_total'), 0);
    assert.is(await metricSum(proxy, 'dystro_proxy_requests_total', { code: '200' }), N);
    await until('requests to finish', async () => (await metricSum(proxy, 'dystro_proxy_active_requests')) === 0);
    assert.equal(inflightTotals(proxy.router), { requests: 0, prefillTokens: 0, blocks: 0 });
  } finally {
    await proxy.close();
    await Promise.all(engines.map((e) => e.close()));
  }
});

test.run();
