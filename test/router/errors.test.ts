/**
 * Typed errors (STYLE 11): malformed requests and bad options throw a DystroError with a stable code
 * and an "Expected … got …" message; "nothing can serve this" is a decision, never an exception.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DystroError, type ErrorCode } from '../../src/errors.ts';
import { createRouter } from '../../src/router/router.ts';
import { js, makeRouter, pool, prompt, replicas } from './helpers.ts';

function throwsCode(fn: () => unknown, code: ErrorCode, message?: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  assert.instance(err, DystroError, `expected ${code}, nothing was thrown`);
  assert.is((err as DystroError).code, code, (err as Error).message);
  if (message) assert.match((err as Error).message, message);
}

test('bad requests: no model, non-integer tokens, oversized prompt, unknown SLO class, wrong field types', () => {
  const { router } = makeRouter({ count: 2, maxPromptTokens: 4096, sloClasses: [{ name: 'interactive', ttftMs: 500 }, { name: 'batch', ttftMs: 60_000 }] });
  const ok = { model: 'm', prompt: prompt(64, 1) };
  throwsCode(() => router.route({ prompt: prompt(64, 1) } as never), 'DYSTRO_ERR_INVALID_REQUEST', /^Expected `request\.model` to be a non-empty string, got `undefined`/);
  throwsCode(() => router.route({ ...ok, model: '' }), 'DYSTRO_ERR_INVALID_REQUEST');
  throwsCode(() => router.route(null as never), 'DYSTRO_ERR_INVALID_REQUEST');
  throwsCode(() => router.route({ ...ok, prompt: [1, 2, 3.5] }), 'DYSTRO_ERR_INVALID_TOKENS', /request\.prompt\[2\].*`3\.5`/);
  throwsCode(() => router.route({ ...ok, prompt: [1, -1] }), 'DYSTRO_ERR_INVALID_TOKENS');
  throwsCode(() => router.route({ ...ok, prompt: [1, 2 ** 32] }), 'DYSTRO_ERR_INVALID_TOKENS');
  throwsCode(() => router.route({ ...ok, prompt: 42 as never }), 'DYSTRO_ERR_INVALID_TOKENS');
  throwsCode(() => router.route({ ...ok, prompt: new Uint32Array(4097) }), 'DYSTRO_ERR_PROMPT_TOO_LARGE', /at most 4096 tokens, got 4097/);
  throwsCode(() => router.route({ ...ok, prompt: 'x'.repeat(4097) }), 'DYSTRO_ERR_PROMPT_TOO_LARGE');
  throwsCode(() => router.route({ ...ok, priority: 'interactve' }), 'DYSTRO_ERR_INVALID_REQUEST', /one of "interactive", "batch"/);
  throwsCode(() => router.route({ ...ok, expectedOutputTokens: 1.5 }), 'DYSTRO_ERR_INVALID_REQUEST');
  throwsCode(() => router.route({ ...ok, tenant: 7 as never }), 'DYSTRO_ERR_INVALID_REQUEST');
  throwsCode(() => router.route({ ...ok, lora: {} as never }), 'DYSTRO_ERR_INVALID_REQUEST');
  throwsCode(() => router.route({ ...ok, sessionKey: 1 as never }), 'DYSTRO_ERR_INVALID_REQUEST');
  // A request that throws leaves nothing behind; the next one routes.
  const d = router.route({ ...ok, prompt: new Uint32Array(4096), priority: 'batch' });
  assert.is(d.kind, 'route');
  assert.is(router.inflight.total(), 1);
});

test('bad options: typed errors at construction, nothing half-built', () => {
  const base = { kernels: js, pools: [pool('p')], replicas: replicas('p', 2) };
  throwsCode(() => createRouter(undefined as never), 'DYSTRO_ERR_INVALID_CONFIG');
  throwsCode(() => createRouter({ ...base, pools: [] }), 'DYSTRO_ERR_INVALID_CONFIG');
  throwsCode(() => createRouter({ ...base, pools: [{ ...pool('p'), tensorParallel: 0 }] }), 'DYSTRO_ERR_INVALID_CONFIG');
  throwsCode(() => createRouter({ ...base, replicas: [{ id: 'r', pool: 'nope', address: 'x' }] }), 'DYSTRO_ERR_INVALID_CONFIG', /one of "p"/);
  throwsCode(() => createRouter({ ...base, blockSize: 0 }), 'DYSTRO_ERR_BLOCK_SIZE');
  throwsCode(() => createRouter({ ...base, seed: 1.5 }), 'DYSTRO_ERR_INVALID_CONFIG');
  throwsCode(() => createRouter({ ...base, sampleCandidates: -1 }), 'DYSTRO_ERR_INVALID_CONFIG');
  throwsCode(() => createRouter({ ...base, maxPromptTokens: 0 }), 'DYSTRO_ERR_INVALID_CONFIG');
  throwsCode(() => createRouter({ ...base, requestTimeoutMs: 0 }), 'DYSTRO_ERR_INVALID_CONFIG');
  throwsCode(() => createRouter({ ...base, capacity: 0 }), 'DYSTRO_ERR_INVALID_CONFIG');
  throwsCode(() => createRouter({ ...base, policy: 'predicted_ttft' }), 'DYSTRO_ERR_UNKNOWN_POLICY', /did you mean "predicted-ttft"/);
  throwsCode(() => createRouter({ ...base, policy: { name: 'p2c', params: { choices: 'two' } } }), 'DYSTRO_ERR_POLICY_PARAMS', /`choices` of policy "p2c"/);
  throwsCode(() => createRouter({ ...base, policy: { name: 'p2c', params: { choise: 2 } } }), 'DYSTRO_ERR_POLICY_PARAMS', /did you mean "choices"/);
  throwsCode(() => createRouter({ ...base, sloClasses: [{ name: 'a', ttftMs: 0 }] }), 'DYSTRO_ERR_INVALID_CONFIG');
  throwsCode(() => createRouter({ ...base, sloClasses: [{ name: 'a', ttftMs: 100 }, { name: 'a', ttftMs: 200 }] }), 'DYSTRO_ERR_INVALID_CONFIG');
  throwsCode(() => createRouter({ ...base, sloClasses: [{ name: 'a', ttftMs: 100, queueLimit: -1 }] }), 'DYSTRO_ERR_INVALID_CONFIG');
  throwsCode(() => createRouter({ pools: base.pools, backend: 'gpu' as never }), 'DYSTRO_ERR_UNKNOWN_BACKEND');
  throwsCode(() => createRouter({ ...base, index: { maxEntries: 0 } }), 'DYSTRO_ERR_INVALID_CONFIG');
});

test('control-path calls with bad arguments: typed errors and no change', () => {
  const { router } = makeRouter({ count: 2 });
  throwsCode(() => router.drain('nope'), 'DYSTRO_ERR_UNKNOWN_REPLICA');
  throwsCode(() => router.remove('nope'), 'DYSTRO_ERR_UNKNOWN_REPLICA');
  throwsCode(() => router.updateLoad('nope', { running: 1 }), 'DYSTRO_ERR_UNKNOWN_REPLICA');
  throwsCode(() => router.updateLoad('p-0', null as never), 'DYSTRO_ERR_INVALID_ARGUMENT');
  throwsCode(() => router.setHealth('p-0', 'sick' as never), 'DYSTRO_ERR_INVALID_CONFIG');
  throwsCode(() => router.admission.setQuota('t', { tokensPerS: 0 }), 'DYSTRO_ERR_INVALID_CONFIG');
  throwsCode(() => router.shadow('p2c', { choices: 99 }), 'DYSTRO_ERR_POLICY_PARAMS');
  assert.is(router.shadowReport().active, false);
  // Bad load values are sanitized, not thrown: the report says which fields became unknown.
  assert.equal(router.updateLoad('p-0', { running: NaN, kvUsage: 85 }).unknown, ['running', 'kvUsage']);
  assert.is(router.fleet.snapshot().replicas.length, 2);
});

test.run();
