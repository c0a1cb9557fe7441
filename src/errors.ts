/**
 * One registry of typed errors (after undici's UND_ERR_* and fastify's FST_ERR_*). Every error Dystro
 * throws is a {@link DystroError} whose `code` is a key of {@link ERROR_CODES}; a test checks that
 * each code is documented in the README. Messages say what was expected and what came, in the form
 * "Expected `weight` to be a finite number > 0, got `NaN` (number)".
 */

export const ERROR_CODES = {
  DYSTRO_ERR_INVALID_ARGUMENT: 'An argument has the wrong type or shape.',
  DYSTRO_ERR_INVALID_TOKENS: 'Token ids must be integers in 0 … 2^32−1.',
  DYSTRO_ERR_BLOCK_SIZE: 'The block size must be an integer in 1 … 1024.',
  DYSTRO_ERR_INVALID_SEED: 'A 64-bit seed or key must be a bigint in 0 … 2^64−1.',
  DYSTRO_ERR_EMPTY_NODES: 'A hash table needs at least one node.',
  DYSTRO_ERR_DUPLICATE_NODE: 'Node names in one table must be unique.',
  DYSTRO_ERR_INVALID_WEIGHT: 'A weight must be a finite number > 0.',
  DYSTRO_ERR_LOAD_FACTOR: 'The bounded-load factor c must be a finite number > 1.',
  DYSTRO_ERR_TABLE_SIZE: 'A table size is out of range (for Maglev: a prime ≥ the node count, at most 2^26).',
  DYSTRO_ERR_INVALID_LOADS: 'Loads must be one non-negative integer per node.',
  DYSTRO_ERR_OUTPUT_TOO_SMALL: 'A caller-provided output array is shorter than the result.',
  DYSTRO_ERR_UNKNOWN_BACKEND: 'The backend name is not one of auto, wasm, native, js.',
  DYSTRO_ERR_BACKEND_UNAVAILABLE: 'The requested kernel backend could not be loaded.',
  DYSTRO_ERR_ABI_MISMATCH: 'A compiled backend reports a different ABI version than this host expects.',
  DYSTRO_ERR_TABLE_FREED: 'A hash table was used after free().',
  DYSTRO_ERR_INVALID_CONFIG: 'A configuration value is missing, of the wrong type or out of range.',
  DYSTRO_ERR_UNKNOWN_REPLICA: 'A replica id or slot that the fleet or index does not know.',
  DYSTRO_ERR_INVALID_RECORD: 'An index record with an unknown op, tier or replica.',
  DYSTRO_ERR_INVALID_REQUEST: 'A route request is malformed (missing model, bad prompt, unknown SLO class).',
  DYSTRO_ERR_PROMPT_TOO_LARGE: 'A prompt is longer than the router accepts (maxPromptTokens).',
  DYSTRO_ERR_UNKNOWN_POLICY: 'A policy name that is not registered (the message lists the valid ones and the nearest).',
  DYSTRO_ERR_POLICY_PARAMS: 'A policy parameter that is unknown, of the wrong type or out of range.',
  DYSTRO_ERR_ALREADY_SUBSCRIBED: 'A replica rank already has a KV event subscription.',
  DYSTRO_ERR_INGEST_CLOSED: 'A KV event ingest was used after close().',
  DYSTRO_ERR_OUT_OF_MEMORY: 'A kernel could not grow its memory (the index at its configured size).',
  DYSTRO_ERR_KERNEL: 'A kernel returned a status the host did not expect (a bug: please report it).',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class DystroError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = 'DystroError';
    this.code = code;
    this.details = details;
  }
}

/** Renders a received value for an error message: `NaN` (number), `"abc"` (string), an array (Array(3)). */
export function describeValue(value: unknown): string {
  if (value === null) return '`null`';
  if (value === undefined) return '`undefined`';
  const type = typeof value;
  if (type === 'bigint') return `\`${String(value)}n\` (bigint)`;
  if (type === 'number' || type === 'boolean') return `\`${String(value)}\` (${type})`;
  if (type === 'string') {
    const s = value as string;
    return `\`${JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s)}\` (string)`;
  }
  if (Array.isArray(value)) return `an Array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name} of length ${(value as unknown as { length: number }).length}`;
  if (type === 'function') return 'a function';
  return `an object (${Object.prototype.toString.call(value).slice(8, -1)})`;
}

/** Throws a DystroError with the standard "Expected … got …" message. */
export function fail(code: ErrorCode, what: string, expected: string, got: unknown, details: Record<string, unknown> = {}): never {
  throw new DystroError(code, `Expected \`${what}\` to be ${expected}, got ${describeValue(got)}`, details);
}
