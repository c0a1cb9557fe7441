/**
 * The proxy's pieces without sockets: address checks, keys and tokens, configuration validation,
 * outlier ejection and the retry budget on a FakeClock, vLLM load parsing, and request bodies.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Allowlist, checkEngineUrl, checkHost, checkZmqEndpoint, guardedLookup, isRefusedAddress, type Resolver } from '../../src/proxy/address.ts';
import { KeyStore, bearerToken, sha256 } from '../../src/proxy/auth.ts';
import { resolveConfig, type ProxyConfig } from '../../src/proxy/config.ts';
import { OutlierDetector, RetryBudget } from '../../src/proxy/outlier.ts';
import { parseVllmLoad } from '../../src/proxy/load-scrape.ts';
import { parseRequest } from '../../src/proxy/openai.ts';
import { FakeClock } from '../../src/clock.ts';
import { DystroError } from '../../src/errors.ts';

const noDns: Resolver = async () => {
  throw new Error('ENOTFOUND');
};
const dns = (map: Record<string, string[]>): Resolver => async (h) => {
  if (!map[h]) throw new Error('ENOTFOUND');
  return map[h].map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
};

test('refused addresses: link-local, metadata, this-network, in both families and IPv4-mapped', () => {
  for (const a of ['169.254.169.254', '169.254.0.1', '169.254.255.255', '100.100.100.200', '192.0.0.192', '0.0.0.0', '0.1.2.3', 'fe80::1', 'febf:ffff::1', 'fd00:ec2::254', '::', '::ffff:169.254.169.254', '::ffff:a9fe:a9fe']) {
    assert.ok(isRefusedAddress(a), a);
  }
  for (const a of ['127.0.0.1', '10.0.0.1', '169.253.255.255', '169.255.0.0', '100.100.100.201', 'fec0::1', '::1', '2001:db8::1', 'not an ip']) {
    assert.not.ok(isRefusedAddress(a), a);
  }
});

test('allowlist: CIDRs, single addresses, names and suffix wildcards; bad entries throw', async () => {
  const allow = new Allowlist(['10.0.0.0/8', '192.168.1.7', '::1/128', 'engine-0.internal', '*.engines.example']);
  assert.ok(allow.allowsAddress('10.200.3.4'));
  assert.ok(allow.allowsAddress('192.168.1.7'));
  assert.not.ok(allow.allowsAddress('192.168.1.8'));
  assert.ok(allow.allowsAddress('::1'));
  assert.ok(allow.allowsName('ENGINE-0.internal.'));
  assert.ok(allow.allowsName('a.b.engines.example'));
  assert.not.ok(allow.allowsName('engines.example'), 'the wildcard needs a label before the suffix');
  assert.not.ok(allow.allowsName('evilengines.example'));
  for (const bad of ['10.0.0.0/33', '::/129', 'not a host!', '', '1.2.3.4/x']) assert.throws(() => new Allowlist([bad]), /Expected/, bad);

  const r = dns({ 'engine-0.internal': ['10.0.0.9'], 'x.engines.example': ['203.0.113.5'], 'inside.example': ['10.1.1.1', '10.2.2.2'], 'mixed.example': ['10.1.1.1', '203.0.113.9'], 'meta.example': ['10.1.1.1', '169.254.169.254'] });
  assert.equal(await checkHost('engine-0.internal', allow, r), { ok: true });
  assert.equal(await checkHost('x.engines.example', allow, r), { ok: true }, 'listed by name: its addresses need not be in a CIDR');
  assert.equal(await checkHost('inside.example', allow, r), { ok: true }, 'every address inside an allowed CIDR');
  assert.is((await checkHost('mixed.example', allow, r)).ok, false);
  assert.is((await checkHost('meta.example', allow, r)).ok, false, 'a refused address among them');
  assert.is((await checkHost('gone.example', allow, r)).ok, false);
  assert.is((await checkHost('metadata.google.internal', null, r)).ok, false, 'refused without an allowlist too');
  assert.is((await checkHost('10.9.9.9', null, noDns)).ok, true, 'config engines: only the refused list applies');
});

test('engine URLs and ZeroMQ endpoints', async () => {
  const allow = new Allowlist(['127.0.0.0/8']);
  assert.is((await checkEngineUrl('http://127.0.0.1:8000', allow, noDns)).ok, true);
  assert.is((await checkEngineUrl('https://127.0.0.2/base', allow, noDns)).ok, true);
  for (const bad of ['127.0.0.1:8000', 'file:///etc/passwd', 'http://u:p@127.0.0.1', 'http://127.0.0.1/?q=1', 'http://127.0.0.1/#x', 'gopher://127.0.0.1']) {
    assert.is((await checkEngineUrl(bad, allow, noDns)).ok, false, bad);
  }
  assert.is((await checkZmqEndpoint('tcp://127.0.0.1:5557', allow, noDns)).ok, true);
  for (const bad of ['tcp://*:5557', 'ipc:///tmp/s', 'inproc://x', 'tcp://127.0.0.1', 'tcp://127.0.0.1:0', 'tcp://127.0.0.1:70000', 'tcp://169.254.169.254:5557']) {
    assert.is((await checkZmqEndpoint(bad, allow, noDns)).ok, false, bad);
  }
});

test('guardedLookup refuses metadata names and addresses at connect time', async () => {
  const look = (host: string) => new Promise<{ err: NodeJS.ErrnoException | null; addr: unknown }>((resolve) => guardedLookup(host, {}, (err, addr) => resolve({ err, addr })));
  assert.is((await look('metadata.google.internal')).err?.code, 'EDYSTROREFUSED');
  const local = await look('localhost');
  assert.is(local.err, null);
  assert.ok(typeof local.addr === 'string');
});

test('bearer tokens and API keys by digest', () => {
  assert.is(bearerToken('Bearer abc'), 'abc');
  assert.is(bearerToken('bearer abc'), 'abc');
  assert.is(bearerToken('Bearer  abc  '), 'abc');
  for (const h of [undefined, '', 'Basic abc', 'Bearer', 'Bearer a b', 'Bearerabc']) assert.is(bearerToken(h), null, String(h));
  const t = { id: 'a', salt: 's' };
  const keys = new KeyStore([[sha256('sk-one').toString('hex'), t]]);
  assert.is(keys.tenantOf('sk-one'), t);
  assert.is(keys.tenantOf('sk-one '), undefined);
  assert.is(keys.tenantOf(null), undefined);
});

const TOKEN = 'a-control-token-of-some-length';
function cfg(extra: Record<string, unknown> = {}): ProxyConfig {
  return { control: { token: TOKEN }, pools: [{ id: 'p', accelerator: 'H100', tensorParallel: 1, model: 'm', kvCapacityBlocks: 100 }], ...extra } as ProxyConfig;
}
function configError(c: unknown, env: Record<string, string> = {}): string {
  try {
    resolveConfig(c, env);
  } catch (err) {
    assert.instance(err, DystroError);
    assert.is((err as DystroError).code, 'DYSTRO_ERR_INVALID_CONFIG');
    return (err as Error).message;
  }
  assert.unreachable('expected a config error');
  return '';
}

test('config: defaults, secrets by environment and digest, and the errors that name the field', () => {
  const r = resolveConfig(cfg({ keys: [{ key: 'sk-aaaaaaaa', tenant: 'x' }, { sha256: sha256('sk-bbbbbbbb').toString('hex'), tenant: 'y' }], tenants: { y: { salt: 'pepper' } } }));
  assert.is(r.listen.port, 8080);
  assert.is(r.control.port, 8081);
  assert.is(r.control.host, '127.0.0.1');
  assert.is(r.tenants.get('x')!.salt, 'x', 'salt defaults to the tenant id');
  assert.is(r.tenants.get('y')!.salt, 'pepper');
  assert.is(r.keys.length, 2);
  assert.is(r.retry.budgetRatio, 0.2);
  assert.is(r.outlier.maxEjectionPercent, 10);
  assert.is(r.tenantHeader, 'x-dystro-tenant');
  assert.is(resolveConfig({ ...cfg(), control: { tokenEnv: 'TOK' } }, { TOK: TOKEN }).control.tokenDigest.length, 32);

  assert.match(configError({ ...cfg(), control: {} }), /control\.token/);
  assert.match(configError({ ...cfg(), control: { token: 'short' } }), /at least 16/);
  assert.match(configError({ ...cfg(), control: { tokenEnv: 'NOPE' } }), /control\.token/);
  const leaked = configError(cfg({ keys: [{ key: TOKEN, tenant: 'x' }] }));
  assert.match(leaked, /distinct from every data-plane API key/);
  assert.not.ok(leaked.includes(TOKEN), 'the token is not echoed');
  assert.match(configError(cfg({ tenants: { x: { salt: 's1' }, y: { salt: 's1' } } })), /no other tenant uses/);
  assert.match(configError(cfg({ keys: [{ key: 'sk-aaaaaaaa', tenant: 'x' }, { key: 'sk-aaaaaaaa', tenant: 'y' }] })), /listed once/);
  assert.match(configError(cfg({ keys: [{ key: 'sk-aaaaaaaa', sha256: 'ab', tenant: 'x' }] })), /exactly one/);
  assert.match(configError(cfg({ lisen: {} })), /config\.lisen/);
  assert.match(configError(cfg({ control: { token: TOKEN, allow: ['10.0.0.0/40'] } })), /allow/);
  assert.match(configError(cfg({ tenants: { x: { sloClass: 'gold' } } })), /sloClass/);
  assert.match(configError(cfg({ retry: { budgetRatio: 2 } })), /budgetRatio/);
  assert.match(configError(cfg({ engines: [{ id: 'e', pool: 'p' }] })), /address/);
  assert.match(configError(cfg({ tokenizer: 'llama' })), /tokenizer/);
  assert.match(configError(cfg({ tenants: { 'with space': {} } })), /tenant id/);
});

test('outlier ejection: consecutive failures, fast and slow 429s, the cap, expiry with growing duration, panic', () => {
  const clock = new FakeClock(1_000);
  const changes: string[] = [];
  const panics: string[] = [];
  const d = new OutlierDetector({ consecutiveFailures: 3, baseEjectionMs: 1_000, maxEjectionMs: 2_500, maxEjectionPercent: 10, panicThresholdPercent: 50, fast429Ms: 100 }, clock, {
    onChange: (id, e) => changes.push(`${id}:${e ? 'out' : 'in'}`),
    onPanic: (g, p) => panics.push(`${g}:${p}`),
  });
  for (const id of ['a', 'b', 'c', 'd']) d.upsert(id, 'm');
  d.failure('a');
  d.failure('a');
  d.success('a'); // a success resets the run
  d.failure('a');
  d.failure('a');
  assert.is(d.ejected('a'), false);
  d.tooManyRequests('a', 500); // slow 429: neutral
  assert.is(d.ejected('a'), false);
  d.tooManyRequests('a', 5); // fast 429: the third failure
  assert.is(d.ejected('a'), true);
  assert.equal(changes, ['a:out']);
  // Cap: 10% of 4 is 0.4, at least one: b cannot be ejected while a is.
  for (let i = 0; i < 5; i++) d.failure('b');
  assert.is(d.ejected('b'), false);
  // Expiry after 1 s; the next ejection lasts 2 s, then 2.5 s (the maximum).
  clock.advance(999);
  d.tick();
  assert.is(d.ejected('a'), true);
  clock.advance(1);
  d.tick();
  assert.is(d.ejected('a'), false);
  assert.equal(changes, ['a:out', 'a:in']);
  for (let i = 0; i < 3; i++) d.failure('a');
  clock.advance(1_999);
  d.tick();
  assert.is(d.ejected('a'), true, 'the second ejection lasts 2 s');
  clock.advance(1);
  d.tick();
  assert.is(d.ejected('a'), false);
  for (let i = 0; i < 3; i++) d.failure('a');
  clock.advance(2_499);
  d.tick();
  assert.is(d.ejected('a'), true, 'the third would last 3 s; capped at 2.5 s');
  clock.advance(1);
  d.tick();
  assert.is(d.ejected('a'), false);
  // Un-ejected for long enough, the multiplier decays back: 1 s again.
  clock.advance(10_000);
  for (let i = 0; i < 3; i++) d.failure('a');
  clock.advance(1_000);
  d.tick();
  assert.is(d.ejected('a'), false, 'decayed to the base duration');

  // Panic: two replicas of a model, threshold 60 %: ejecting one leaves 50 % → ignored.
  const clock2 = new FakeClock(0);
  const applied: string[] = [];
  const p = new OutlierDetector({ consecutiveFailures: 1, panicThresholdPercent: 60 }, clock2, { onChange: (id, e) => applied.push(`${id}:${e}`), onPanic: (g, on) => panics.push(`${g}:${on}`) });
  p.upsert('x', 'm2');
  p.upsert('y', 'm2');
  p.failure('x');
  assert.is(p.ejected('x'), true);
  assert.is(p.effectiveEjected('x'), false);
  assert.is(p.panic('m2'), true);
  assert.equal(applied, []);
  // A third replica: 2 of 3 un-ejected (67 %) ends the panic and the ejection applies.
  p.upsert('z', 'm2');
  assert.is(p.panic('m2'), false);
  assert.is(p.effectiveEjected('x'), true);
  assert.equal(applied, ['x:true']);
  // Drained replicas do not count as serving: draining z brings the panic back.
  p.upsert('z', 'm2', true);
  assert.is(p.panic('m2'), true);
  assert.equal(applied, ['x:true', 'x:false']);
  p.remove('x');
  assert.is(p.panic('m2'), false);
  assert.equal(panics, ['m2:true', 'm2:false', 'm2:true', 'm2:false']);
});

test('retry budget: max(minConcurrency, ratio × requests in flight)', () => {
  const b = new RetryBudget({ ratio: 0.2, minConcurrency: 2 });
  for (let i = 0; i < 5; i++) b.requestStarted();
  assert.ok(b.tryRetry());
  assert.ok(b.tryRetry());
  assert.not.ok(b.tryRetry(), 'floor 2 > 0.2 × 5');
  for (let i = 0; i < 15; i++) b.requestStarted();
  assert.ok(b.tryRetry(), '0.2 × 20 = 4');
  assert.ok(b.tryRetry());
  assert.not.ok(b.tryRetry());
  b.retryFinished();
  assert.ok(b.tryRetry());
  assert.is(b.activeRetries, 4);
  const none = new RetryBudget({ ratio: 0, minConcurrency: 0 });
  none.requestStarted();
  assert.not.ok(none.tryRetry());
});

test('vLLM load from /metrics: sums counts over ranks, averages usage, prefers the new KV name', () => {
  const text = [
    '# HELP vllm:num_requests_running Number of requests in model execution batches.',
    '# TYPE vllm:num_requests_running gauge',
    'vllm:num_requests_running{engine="0",model_name="m"} 3.0',
    'vllm:num_requests_running{engine="1",model_name="m"} 2.0',
    'vllm:num_requests_waiting{engine="0",model_name="m \\"quoted} name\\""} 4',
    'vllm:gpu_cache_usage_perc{engine="0"} 0.9',
    'vllm:kv_cache_usage_perc{engine="0"} 0.5',
    'vllm:kv_cache_usage_perc{engine="1"} 0.25 1712345678000',
    'vllm:num_requests_running_other 99',
    'garbage line',
    'vllm:num_requests_waiting{engine="1"} NaN',
  ].join('\n');
  assert.equal(parseVllmLoad(text), { running: 5, waiting: 4, kvUsage: 0.375 });
  assert.equal(parseVllmLoad('vllm:gpu_cache_usage_perc 0.7\n'), { kvUsage: 0.7 });
  assert.equal(parseVllmLoad(''), {});
});

test('request bodies: what each endpoint needs; expected output from max_tokens, n and batches', () => {
  const ok = (endpoint: 'completions' | 'chat', body: unknown) => {
    const r = parseRequest(endpoint, Buffer.from(JSON.stringify(body)));
    if (!r.ok) throw new Error(r.error.message);
    return r.request;
  };
  assert.is(ok('completions', { model: 'm', prompt: 'hi' }).prompt, 'hi');
  assert.equal(Array.from(ok('completions', { model: 'm', prompt: [1, 2, 3] }).prompt as Uint32Array), [1, 2, 3]);
  const batch = ok('completions', { model: 'm', prompt: ['a', 'b'], max_tokens: 5, n: 2 });
  assert.is(batch.prompt, 'a');
  assert.is(batch.expectedOutputTokens, 20);
  assert.is(ok('completions', { model: 'm', prompt: [[5, 6]], stream: true }).stream, true);
  const chat = ok('chat', { model: 'm', messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }] }], max_completion_tokens: 7 });
  assert.is(chat.prompt, '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n');
  assert.is(chat.expectedOutputTokens, 7);
  const bad = (endpoint: 'completions' | 'chat', raw: string) => {
    const r = parseRequest(endpoint, Buffer.from(raw));
    assert.is(r.ok, false, raw);
    return r.ok ? null : r.error;
  };
  assert.is(bad('completions', '{')!.code, 'invalid_json');
  assert.is(bad('completions', '"str"')!.status, 400);
  assert.is(bad('completions', '{"model":"m","prompt":[]}')!.param, 'prompt');
  assert.is(bad('completions', '{"model":"m","prompt":[1.5]}')!.param, 'prompt');
  assert.is(bad('completions', '{"model":"m","prompt":[4294967296]}')!.param, 'prompt');
  assert.is(bad('completions', '{"model":"m","prompt":"x","n":0}')!.param, 'n');
  assert.is(bad('chat', '{"model":"m","messages":"hi"}')!.param, 'messages');
  assert.is(bad('chat', '{"model":"","messages":[{"role":"user","content":"x"}]}')!.param, 'model');
});

test.run();
