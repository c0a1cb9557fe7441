/**
 * The reference proxy end to end: the official OpenAI client → proxy (router inside) → engine
 * emulators, all on 127.0.0.1. Streaming and non-streaming, completions and chat; refusals that must
 * never reach an engine (malformed, oversized, slow or unauthenticated bodies); tenancy (prefix credit
 * stays inside a tenant, whatever the body or headers claim); shedding; metrics and load scraping; and
 * logs free of prompts, keys and salts. Every server is closed at the end of its test.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { request as httpRequest } from 'node:http';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { APIError } from 'openai';
import type { EngineEmulator } from '../../src/emulator/index.ts';
import type { Proxy } from '../../src/proxy/proxy.ts';
import type { Decision } from '../../src/router/types.ts';
import {
  CONTROL_TOKEN, KEY_A, KEY_B, MODEL, SALT_A, SALT_B, baseConfig, captureLogger, control, engineSuccesses, inflightTotals, metricSum, openai, post, start, startEngines, syncEvents, text, until,
} from './helpers.ts';

async function setup(n = 2, extra: Parameters<typeof baseConfig>[1] = {}, engineOptions = {}, logger = captureLogger()): Promise<{ engines: EngineEmulator[]; proxy: Proxy; logger: ReturnType<typeof captureLogger>; close: () => Promise<void> }> {
  const engines = await startEngines(n, engineOptions);
  const proxy = await start(baseConfig(engines, extra), { logger });
  return {
    engines,
    proxy,
    logger,
    close: async () => {
      await proxy.close();
      await Promise.all(engines.map((e) => e.close()));
    },
  };
}

async function assertIdle(proxy: Proxy): Promise<void> {
  await until('requests to finish', async () => (await metricSum(proxy, 'dystro_proxy_active_requests')) === 0);
  assert.equal(inflightTotals(proxy.router), { requests: 0, prefillTokens: 0, blocks: 0 }, 'router in-flight counts back to zero');
  assert.is(proxy.router.openTicketCount(), 0, 'no ticket left open');
}

test('completions and chat, streamed and not, through the official client', async () => {
  const { proxy, close } = await setup();
  try {
    const client = openai(proxy);
    const c = await client.completions.create({ model: MODEL, prompt: text(60), max_tokens: 8 });
    assert.is(c.choices.length, 1);
    assert.ok(c.choices[0].text.length > 0);
    assert.is(c.usage?.completion_tokens, 8);

    const chat = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: text(30) }], max_tokens: 6 });
    assert.is(chat.choices[0].message.role, 'assistant');
    assert.ok((chat.choices[0].message.content ?? '').length > 0);

    const s = await client.completions.create({ model: MODEL, prompt: text(40, 1), max_tokens: 12, stream: true });
    let chunks = 0;
    let streamed = '';
    for await (const ch of s) {
      chunks++;
      streamed += ch.choices[0]?.text ?? '';
    }
    assert.ok(chunks >= 2, `several chunks (${chunks})`);
    assert.ok(streamed.length > 0);

    const cs = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hello' }], max_tokens: 5, stream: true, stream_options: { include_usage: true } });
    let content = '';
    let usage = 0;
    for await (const ch of cs) {
      content += ch.choices[0]?.delta?.content ?? '';
      if (ch.usage) usage = ch.usage.completion_tokens;
    }
    assert.ok(content.length > 0);
    assert.is(usage, 5);

    const models = await client.models.list();
    assert.equal(models.data.map((m) => m.id), [MODEL]);
    assert.is(await metricSum(proxy, 'dystro_proxy_requests_total', { code: '200' }), 4);
    await assertIdle(proxy);
  } finally {
    await close();
  }
});

test('SSE chunks reach the client as the engine writes them, not at the end', async () => {
  // Real time (timeScale 1): a Llama-3-8B decode step on an H100 is ~8 ms, so 40 tokens take ~300 ms.
  const { proxy, close } = await setup(1, {}, { timeScale: 1 });
  try {
    const s = await openai(proxy).completions.create({ model: MODEL, prompt: text(20), max_tokens: 40, stream: true });
    const arrivals: number[] = [];
    for await (const ch of s) if (ch.choices[0]?.text) arrivals.push(performance.now());
    assert.ok(arrivals.length >= 10, `chunks: ${arrivals.length}`);
    const spanMs = arrivals[arrivals.length - 1] - arrivals[0];
    assert.ok(spanMs > 150, `first and last chunk ${spanMs.toFixed(0)} ms apart: the stream was relayed as it came`);
    const distinct = new Set(arrivals.map((t) => Math.round(t / 5))).size;
    assert.ok(distinct >= 8, `chunks arrived at ${distinct} distinct times`);
    await assertIdle(proxy);
  } finally {
    await close();
  }
});

test('malformed JSON, missing fields and wrong types are 400 and reach no engine', async () => {
  const { proxy, engines, close } = await setup();
  try {
    const cases: [string, string, string | null][] = [
      ['/v1/completions', '{"model": "llama-3-8b", "prompt": ', null],
      ['/v1/completions', '[1, 2, 3]', null],
      ['/v1/completions', JSON.stringify({ prompt: 'hi' }), 'model'],
      ['/v1/completions', JSON.stringify({ model: MODEL }), 'prompt'],
      ['/v1/completions', JSON.stringify({ model: MODEL, prompt: { text: 'hi' } }), 'prompt'],
      ['/v1/completions', JSON.stringify({ model: MODEL, prompt: [1, -2] }), 'prompt'],
      ['/v1/completions', JSON.stringify({ model: MODEL, prompt: 'hi', stream: 'yes' }), 'stream'],
      ['/v1/completions', JSON.stringify({ model: MODEL, prompt: 'hi', max_tokens: -1 }), 'max_tokens'],
      ['/v1/chat/completions', JSON.stringify({ model: MODEL, messages: [] }), 'messages'],
      ['/v1/chat/completions', JSON.stringify({ model: MODEL, messages: [{ content: 'no role' }] }), 'messages'],
      ['/v1/chat/completions', JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: 'x' }] }] }), 'messages'],
      ['/v1/chat/completions', 'not json at all', null],
    ];
    for (const [path, body, param] of cases) {
      const r = await post(proxy, path, body);
      assert.is(r.status, 400, `${path} ${body.slice(0, 50)}`);
      assert.is(r.json.error.type, 'invalid_request_error');
      if (param !== null) assert.is(r.json.error.param, param, body);
    }
    // The official client's own typed error for one of them.
    try {
      await openai(proxy).completions.create({ model: MODEL, prompt: 'hi', max_tokens: -5 });
      assert.unreachable('a 400 was expected');
    } catch (err) {
      assert.instance(err, APIError);
      assert.is((err as APIError).status, 400);
    }
    assert.is(await metricSum(proxy, 'dystro_proxy_upstream_attempts_total'), 0, 'no engine attempt');
    assert.is(await metricSum(proxy, 'dystro_decisions_total'), 0, 'no routing decision');
    for (const e of engines) assert.is(await engineSuccesses(e), 0);
    await assertIdle(proxy);
  } finally {
    await close();
  }
});

test('oversized bodies are 413, declared or chunked, and reach no engine; a body too slow is 408', async () => {
  const { proxy, close } = await setup(1, { limits: { maxBodyBytes: 64 * 1024, bodyTimeoutMs: 300 } });
  try {
    try {
      await openai(proxy).completions.create({ model: MODEL, prompt: 'x'.repeat(2_000_000) });
      assert.unreachable('a 413 was expected');
    } catch (err) {
      assert.instance(err, APIError);
      assert.is((err as APIError).status, 413);
    }
    // No Content-Length: the body is counted as it comes and cut off past the limit.
    const chunked = Readable.from((function* () {
      yield Buffer.from(`{"model":"${MODEL}","prompt":"`);
      for (let i = 0; i < 40; i++) yield Buffer.alloc(4096, 0x61);
      yield Buffer.from('"}');
    })());
    const r = await request(`${proxy.url}/v1/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEY_A}`, 'content-type': 'application/json' }, body: chunked });
    assert.is(r.statusCode, 413);
    assert.is(JSON.parse(await r.body.text()).error.code, 'request_too_large');

    // Headers and half a body, then silence: 408 after bodyTimeoutMs.
    const status = await new Promise<number>((resolve, reject) => {
      const u = new URL(`${proxy.url}/v1/completions`);
      const req = httpRequest({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { authorization: `Bearer ${KEY_A}`, 'content-type': 'application/json', 'content-length': 1000 } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
        req.destroy();
      });
      req.on('error', reject);
      req.write('{"model": "llama-3-8b", ');
    });
    assert.is(status, 408);
    assert.is(await metricSum(proxy, 'dystro_proxy_upstream_attempts_total'), 0, 'no engine attempt');
    await assertIdle(proxy);
  } finally {
    await close();
  }
});

test('a missing or wrong API key is 401 before the body is read; the control token is not a data key', async () => {
  const { proxy, close } = await setup(1);
  try {
    for (const auth of [undefined, 'Bearer sk-not-a-key-000', `Bearer ${CONTROL_TOKEN}`, `Basic ${KEY_A}`, `Bearer ${KEY_A}x`]) {
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (auth) headers.authorization = auth;
      const r = await request(`${proxy.url}/v1/completions`, { method: 'POST', headers, body: JSON.stringify({ model: MODEL, prompt: 'hello' }) });
      assert.is(r.statusCode, 401, String(auth));
      assert.is(r.headers['www-authenticate'], 'Bearer');
      assert.is(JSON.parse(await r.body.text()).error.code, 'invalid_api_key');
    }
    try {
      await openai(proxy, 'sk-wrong-key-123').chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] });
      assert.unreachable('a 401 was expected');
    } catch (err) {
      assert.is((err as APIError).status, 401);
    }
    assert.is(await metricSum(proxy, 'dystro_proxy_auth_failures_total', { plane: 'data' }), 6);
    assert.is(await metricSum(proxy, 'dystro_proxy_upstream_attempts_total'), 0);
  } finally {
    await close();
  }
});

test('tenancy: a repeated prompt gets prefix credit within its tenant and none in another, whatever the body or headers claim', async () => {
  const { proxy, engines, close } = await setup(1);
  try {
    // With KV events attached, a replica whose stream has not synced yet gets no prefix credit at all.
    await syncEvents(proxy, engines[0], 'e0');
    const decisions: Decision[] = [];
    proxy.router.onDecision((_ctx, d) => decisions.push(d));
    const prompt = text(200, 42); // a few hundred tokens: many 16-token blocks
    const tokens = proxy.tokenizer.encode(prompt).length;
    const fullBlocks = Math.floor(tokens / 16) * 16;
    const ask = async (key: string, extraBody: Record<string, unknown> = {}, headers: Record<string, string> = {}) => {
      const { data, response } = await openai(proxy, key).completions.create({ model: MODEL, prompt, max_tokens: 4, ...extraBody } as never, { headers }).withResponse();
      const d = decisions[decisions.length - 1];
      assert.is(d.kind, 'route');
      return { router: d.kind === 'route' ? d.cachedTokens : -1, header: Number(response.headers.get('x-dystro-cached-tokens')), engine: (data as { usage?: { prompt_tokens_details?: { cached_tokens?: number } } }).usage?.prompt_tokens_details?.cached_tokens ?? -1 };
    };
    const a1 = await ask(KEY_A);
    assert.equal(a1, { router: 0, header: 0, engine: 0 }, 'first time: nothing cached anywhere');
    const a2 = await ask(KEY_A);
    assert.is(a2.router, fullBlocks, 'same tenant, same prompt: the router credits every full block');
    assert.is(a2.header, fullBlocks);
    assert.ok(a2.engine >= fullBlocks - 16, `and the engine's cache hits (${a2.engine} of ${tokens})`);
    // Tenant B, same prompt, same (only) engine: no credit from the router, no hit in the engine.
    const b1 = await ask(KEY_B);
    assert.equal(b1, { router: 0, header: 0, engine: 0 }, 'another tenant gets none');
    // B's own repeat does get B's credit, and B's engine hit.
    const b2 = await ask(KEY_B);
    assert.is(b2.router, fullBlocks);
    assert.ok(b2.engine >= fullBlocks - 16);
    // A caches another prompt; B claiming A's salt in the body (vLLM's cache_salt) and in the tenant
    // header gets none of it: the salt comes from the API key alone.
    const other = text(200, 43);
    await ask(KEY_A, { prompt: other });
    const spoof = await ask(KEY_B, { prompt: other, cache_salt: SALT_A }, { 'x-dystro-tenant': SALT_A });
    assert.equal(spoof, { router: 0, header: 0, engine: 0 }, 'a salt claimed by the client changes nothing');
    await assertIdle(proxy);
  } finally {
    await close();
  }
});

test('nothing able to serve: 503 with Retry-After within 50 ms; an unknown model is 404', async () => {
  const { proxy, close } = await setup(2);
  try {
    proxy.drain('e0', true);
    proxy.drain('e1', true);
    const body = JSON.stringify({ model: MODEL, prompt: text(50), max_tokens: 4 });
    await post(proxy, '/v1/completions', body); // warm the connection and the tokenizer
    const t0 = performance.now();
    const r = await post(proxy, '/v1/completions', body);
    const ms = performance.now() - t0;
    assert.is(r.status, 503);
    assert.ok(Number(r.headers['retry-after']) >= 1, `Retry-After: ${String(r.headers['retry-after'])}`);
    assert.is(r.json.error.code, 'no-eligible-replica');
    assert.ok(ms < 50, `answered in ${ms.toFixed(1)} ms`);
    try {
      await openai(proxy).completions.create({ model: MODEL, prompt: 'hi', max_tokens: 2 });
      assert.unreachable('a 503 was expected');
    } catch (err) {
      assert.is((err as APIError).status, 503);
    }
    const nf = await post(proxy, '/v1/completions', JSON.stringify({ model: 'no-such-model', prompt: 'hi' }));
    assert.is(nf.status, 404);
    assert.is(nf.json.error.code, 'model_not_found');
    assert.is(await metricSum(proxy, 'dystro_proxy_upstream_attempts_total'), 0);
    // Undrained, it serves again.
    proxy.drain('e1', false);
    const ok = await post(proxy, '/v1/completions', body);
    assert.is(ok.status, 200);
    assert.is(ok.headers['x-dystro-replica'], 'e1');
    await assertIdle(proxy);
  } finally {
    await close();
  }
});

test('/metrics has the router, ingest and proxy metrics; engine load is scraped into the router; KV events sync', async () => {
  const { proxy, close } = await setup(2);
  try {
    await openai(proxy).completions.create({ model: MODEL, prompt: text(100), max_tokens: 4 });
    const r = await request(`${proxy.url}/metrics`);
    const body = await r.body.text();
    for (const name of ['dystro_decisions_total', 'dystro_decision_seconds', 'dystro_proxy_requests_total', 'dystro_proxy_upstream_attempts_total', 'dystro_kv_batches_applied_total', 'dystro_proxy_load_scrapes_total']) {
      assert.ok(body.includes(name), name);
    }
    const slots = ['e0', 'e1'].map((id) => proxy.router.fleet.snapshot().byId.get(id)!.slot);
    await until('load scraped', () => slots.every((s) => Number.isFinite(proxy.router.fleet.load.updatedAtMs[s])));
    for (const s of slots) {
      assert.is(proxy.router.fleet.load.waiting[s], 0);
      assert.ok(proxy.router.fleet.load.kvUsage[s] >= 0 && proxy.router.fleet.load.kvUsage[s] <= 1);
    }
    // The engine that served the request published BlockStored: its index state is synced.
    await until('KV events applied', async () => (await metricSum(proxy, 'dystro_kv_batches_applied_total')) > 0);
    const served = (await control(proxy, 'GET', '/replicas')).json.replicas.filter((x: { kvEvents: { state: string } }) => x.kvEvents.state === 'synced');
    assert.ok(served.length >= 1);
  } finally {
    await close();
  }
});

for (const mode of ['thread', 'pool'] as const) {
  test(`KV events (${mode} ingest): a prefix the engine cached without the router's help gets precise credit`, async () => {
    const engines = await startEngines(2);
    // Both engines' cached blocks belong to tenant A's salt; e1 publishes its events to the router.
    const config = baseConfig(engines, { ingest: { mode } });
    config.engines = config.engines!.map((e) => ({ ...e, kvEvents: { ...e.kvEvents!, tenant: SALT_A } }));
    const proxy = await start(config);
    try {
      const prompt = text(150, 77);
      const tokens = proxy.tokenizer.encode(prompt).length;
      // Straight to e1, bypassing the proxy: the router makes no decision, so no speculative entry.
      const direct = async (p: string) => {
        const r = await request(`${engines[1].url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-dystro-tenant': SALT_A }, body: JSON.stringify({ model: MODEL, prompt: p, max_tokens: 2 }) });
        assert.is(r.statusCode, 200);
        await r.body.dump();
      };
      const slot = proxy.router.fleet.snapshot().byId.get('e1')!.slot;
      await syncEvents(proxy, engines[1], 'e1');
      const warm = proxy.router.index.stats().entries;
      await direct(prompt);
      await until('the BlockStored batch to reach the index', () => proxy.router.index.stats().entries >= warm + Math.floor(tokens / 16) && proxy.indexState(slot) === 'synced', 10_000);
      const { response, data } = await openai(proxy).completions.create({ model: MODEL, prompt, max_tokens: 2 }).withResponse();
      assert.is(response.headers.get('x-dystro-replica'), 'e1', 'routed to the engine holding the prefix');
      assert.is(Number(response.headers.get('x-dystro-cached-tokens')), Math.floor(tokens / 16) * 16);
      assert.ok((data.usage?.prompt_tokens_details?.cached_tokens ?? 0) > 0, 'and the engine did hit its cache');
      const replicas = (await control(proxy, 'GET', '/replicas')).json.replicas as { id: string; kvEvents: { state: string } }[];
      assert.is(replicas.find((r) => r.id === 'e1')!.kvEvents.state, 'synced');
      await assertIdle(proxy);
    } finally {
      await proxy.close();
      await Promise.all(engines.map((e) => e.close()));
    }
  });
}

test("SLO classes come from the tenant: an unmeetable class is shed at once, a queued request times out into a 503", async () => {
  const engines = await startEngines(1);
  const config = baseConfig(engines, {
    router: { seed: 7, sloClasses: [{ name: 'normal', ttftMs: 60_000 }, { name: 'instant', ttftMs: 0.001 }, { name: 'patient', ttftMs: 0.001, queueLimit: 4, queueTimeoutMs: 150 }] },
    tenants: { a: { salt: SALT_A, sloClass: 'instant' }, b: { salt: SALT_B, sloClass: 'patient' } },
  });
  const proxy = await start(config);
  try {
    const body = JSON.stringify({ model: MODEL, prompt: text(40), max_tokens: 2 });
    const a = await post(proxy, '/v1/completions', body);
    assert.is(a.status, 503);
    assert.is(a.json.error.code, 'slo-unmeetable');
    assert.ok(Number(a.headers['retry-after']) >= 1);
    const t0 = performance.now();
    const b = await post(proxy, '/v1/completions', body, { authorization: `Bearer ${KEY_B}` });
    const waited = performance.now() - t0;
    assert.is(b.status, 503);
    assert.is(b.json.error.code, 'queue-timeout');
    assert.ok(waited >= 100, `queued for ${waited.toFixed(0)} ms before the timeout`);
    assert.is(await metricSum(proxy, 'dystro_proxy_upstream_attempts_total'), 0);
    await assertIdle(proxy);
  } finally {
    await proxy.close();
    await Promise.all(engines.map((e) => e.close()));
  }
});

test('logs carry request ids and replicas, never prompts, keys, salts or tokens', async () => {
  const logger = captureLogger();
  const { proxy, close } = await setup(1, {}, {}, logger);
  try {
    const secretPrompt = 'the launch code is 0000-SECRET-PROMPT';
    await openai(proxy).completions.create({ model: MODEL, prompt: secretPrompt, max_tokens: 2 });
    await openai(proxy, KEY_B).chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: secretPrompt }], max_tokens: 2, stream: true }).then(async (s) => {
      for await (const _ of s) void _;
    });
    await post(proxy, '/v1/completions', 'not json', { authorization: 'Bearer sk-guessed-key-777' });
    await control(proxy, 'PUT', '/policy', { name: 'round-robin' }, 'wrong-token-guess-123456');
    await control(proxy, 'PUT', '/policy', { name: 'round-robin' });
    const all = logger.lines.join('\n');
    assert.ok(logger.lines.some((l) => l.includes('"event":"request"')), 'requests are logged');
    for (const secret of [secretPrompt, 'SECRET', KEY_A, KEY_B, 'sk-guessed-key-777', SALT_A, SALT_B, CONTROL_TOKEN, 'wrong-token-guess-123456', '"a"', '"b"']) {
      assert.not.ok(all.includes(secret), `the logs contain ${secret}`);
    }
  } finally {
    await close();
  }
});

test.run();
