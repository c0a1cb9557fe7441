/**
 * Policies registered by stable name (DESIGN §4). Creating one validates its parameters; an unknown
 * name or parameter is a typed error listing the valid ones with the nearest match, and the caller's
 * current policy stays in place.
 */
import { DystroError, describeValue } from '../errors.js';
import type { Policy, PolicyEnv, PolicyFactory, PolicyParams } from '../router/types.js';

/** Levenshtein distance (small strings: names and parameter keys). */
export function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length];
}

export function nearest(word: string, choices: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of choices) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(best.length / 3)) ? best : undefined;
}

export class PolicyRegistry {
  private readonly factories = new Map<string, PolicyFactory>();

  register(factory: PolicyFactory): this {
    this.factories.set(factory.name, factory);
    return this;
  }

  names(): string[] {
    return [...this.factories.keys()].sort();
  }

  get(name: string): PolicyFactory | undefined {
    return this.factories.get(name);
  }

  /** Validates the name and parameters, then builds the policy. */
  create(name: unknown, params: unknown, env: PolicyEnv): Policy {
    const names = this.names();
    if (typeof name !== 'string' || !this.factories.has(name)) {
      const near = typeof name === 'string' ? nearest(name, names) : undefined;
      throw new DystroError(
        'DYSTRO_ERR_UNKNOWN_POLICY',
        `Expected \`policy\` to be one of ${names.join(', ')}, got ${describeValue(name)}${near ? ` (did you mean "${near}"?)` : ''}`,
        { valid: names, nearest: near },
      );
    }
    const factory = this.factories.get(name)!;
    const p = (params ?? {}) as PolicyParams;
    if (typeof p !== 'object' || Array.isArray(p)) {
      throw new DystroError('DYSTRO_ERR_POLICY_PARAMS', `Expected the parameters of "${name}" to be an object, got ${describeValue(params)}`);
    }
    const known = Object.keys(factory.defaults);
    for (const key of Object.keys(p)) {
      if (!known.includes(key)) {
        const near = nearest(key, known);
        throw new DystroError(
          'DYSTRO_ERR_POLICY_PARAMS',
          `Unknown parameter \`${key}\` for policy "${name}"; valid: ${known.join(', ') || '(none)'}${near ? ` (did you mean "${near}"?)` : ''}`,
          { policy: name, valid: known, nearest: near },
        );
      }
    }
    return factory.create({ ...factory.defaults, ...p }, env);
  }
}

/** Parameter checks for factories: typed errors naming the policy and the parameter. */
export function numberParam(policy: string, params: PolicyParams, key: string, min: number, max: number, integer = false): number {
  const v = params[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    throw new DystroError('DYSTRO_ERR_POLICY_PARAMS', `Expected \`${key}\` of policy "${policy}" to be ${integer ? 'an integer' : 'a number'} in ${min} … ${max}, got ${describeValue(v)}`, { policy, key });
  }
  return v;
}

export function choiceParam<T extends string>(policy: string, params: PolicyParams, key: string, choices: readonly T[]): T {
  const v = params[key];
  if (typeof v !== 'string' || !choices.includes(v as T)) {
    throw new DystroError('DYSTRO_ERR_POLICY_PARAMS', `Expected \`${key}\` of policy "${policy}" to be one of ${choices.join(', ')}, got ${describeValue(v)}`, { policy, key });
  }
  return v as T;
}

export const defaultRegistry = new PolicyRegistry();
