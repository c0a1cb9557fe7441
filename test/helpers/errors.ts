/** The `code` of the DystroError a call throws (the assertion fails if it throws nothing or something else). */
import * as assert from 'uvu/assert';
import { DystroError } from '../../src/errors.ts';

export function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    assert.instance(e, DystroError);
    return (e as DystroError).code;
  }
  assert.unreachable('expected a DystroError');
}
