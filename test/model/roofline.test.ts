/** The roofline model reproduces DESIGN §5's sanity figures within 10%. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CHIPS, engineModel } from '../../src/model/roofline.ts';
import { DystroError } from '../../src/errors.ts';

function near(got: number, want: number, what: string, tol = 0.1) {
  assert.ok(Math.abs(got - want) <= tol * want, `${what}: got ${got.toPrecision(4)}, want ${want} ± ${tol * 100}%`);
}

test('Llama-3-8B on 1× H100: ~427k KV tokens, ~41k prefill tokens/s at 2k, decode 8.1 / 15.6 ms', () => {
  const e = engineModel('llama-3-8b', 'H100', 1);
  near(e.kvCapacityTokens(), 427_000, 'KV tokens');
  near(e.prefillTokensPerS(2048), 41_000, 'prefill tokens/s');
  near(e.decodeStepS(1, 2048) * 1e3, 8.1, 'decode batch 1');
  near(e.decodeStepS(64, 64 * 2048) * 1e3, 15.6, 'decode batch 64');
});

test('Llama-3-70B on 4× H100: ~448k KV tokens, ~16k prefill tokens/s, decode 22.6 / 27.4 ms', () => {
  const e = engineModel('Llama-3-70B', 'h100', 4);
  near(e.kvCapacityTokens(), 448_000, 'KV tokens');
  near(e.prefillTokensPerS(2048), 16_000, 'prefill tokens/s');
  near(e.decodeStepS(1, 2048) * 1e3, 22.6, 'decode batch 1');
  near(e.decodeStepS(64, 64 * 2048) * 1e3, 27.4, 'decode batch 64');
});

test('cached prefixes make prefill cheaper; faster chips prefill faster; TPU figures are marked uncalibrated', () => {
  const h100 = engineModel('llama-3-8b', 'H100', 1);
  const b200 = engineModel('llama-3-8b', 'B200', 1);
  assert.ok(h100.prefillS(512, 7680) < h100.prefillS(8192, 0) / 4);
  assert.ok(b200.prefillS(8192) < h100.prefillS(8192));
  assert.is(CHIPS['TPU v5e'].calibrated, false);
  assert.is(CHIPS.H100.calibrated, true);
  let code: string | undefined;
  try {
    engineModel('llama-3-70b', 'TPU v5e', 1);
  } catch (e) {
    code = (e as DystroError).code;
  }
  assert.is(code, 'DYSTRO_ERR_INVALID_CONFIG', '70B does not fit on one 16 GB chip');
});

test.run();
