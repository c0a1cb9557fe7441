/**
 * The control API, on its own port (bind it to an operators' network, never the public one) and with
 * its own bearer token, distinct from every data-plane key (config validation refuses a token equal to
 * a key). Every request is authenticated first: without the token, or with a wrong one, the answer is
 * 401 before the body is read, so nothing can change state. The compare is constant-time (auth.ts).
 *
 *   GET    /policy                 live policy, shadow report, canary status
 *   PUT    /policy                 { name, params? }                          router.setPolicy
 *   PUT    /shadow                 { name, params?, seed? }                   router.shadow
 *   DELETE /shadow                                                            router.stopShadow
 *   PUT    /canary                 { name, params?, fraction, guard?, seed? } router.canary
 *   POST   /canary/promote                                                    router.promoteCanary
 *   DELETE /canary                                                            router.abortCanary
 *   GET    /replicas               every replica: pool, address, health, drain, ejection, load, in flight
 *   PUT    /replicas/{id}          { pool, address, kvEvents?, apiKey? }      register or update (allowlist)
 *   DELETE /replicas/{id}                                                     remove
 *   PUT    /replicas/{id}/drain    stop new traffic;  DELETE …/drain: resume
 *
 * Answers are JSON; errors are { error: { code, message } } with 400 (bad input, with the router's
 * typed error code), 403 (address refused), 404, 405 or 401.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { DystroError } from '../errors.js';
import type { PolicyParams } from '../router/types.js';
import { bearerToken, tokenMatches } from './auth.js';
import { checkEngineSpec } from './config.js';
import { readBody, sendJson } from './http-util.js';
import { RegistrationError, type Proxy } from './proxy.js';

const MAX_CONTROL_BODY = 64 * 1024;
const KNOWN = ['policy', 'shadow', 'canary', 'replicas'];

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function reply(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}, close = false): void {
  sendJson(res, status, JSON.stringify(value), headers, close);
}

export async function handleControl(p: Proxy, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const method = req.method ?? 'GET';
  const path = (req.url ?? '/').split('?')[0];
  if (!tokenMatches(bearerToken(req.headers.authorization), p.config.control.tokenDigest)) {
    p.metrics.authFailures.inc({ plane: 'control' });
    p.metrics.control.inc({ action: 'unauthenticated', code: '401' });
    p.log.warn('control-unauthorized', { method, path: path.slice(0, 64), remote: req.socket.remoteAddress });
    return reply(res, 401, { error: { code: 'unauthorized', message: 'A valid control token is required (Authorization: Bearer …).' } }, { 'www-authenticate': 'Bearer' }, true);
  }
  let segments: string[];
  try {
    segments = path.split('/').filter((s) => s.length > 0).map(decodeURIComponent);
  } catch {
    return reply(res, 400, { error: { code: 'invalid_path', message: 'The path is not valid percent-encoding.' } });
  }
  // Metric label: the action, from a fixed set (replica ids and unknown paths stay out of it).
  const [head, second, third] = segments;
  const action = KNOWN.includes(head ?? '') ? `${method} /${head}${head === 'canary' && second === 'promote' ? '/promote' : third === 'drain' ? '/drain' : ''}` : 'other';
  try {
    const body = method === 'PUT' || method === 'POST' ? await jsonBody(req) : {};
    const { status, value } = await route(p, method, segments, body);
    p.metrics.control.inc({ action, code: String(status) });
    reply(res, status, value);
  } catch (err) {
    const e = toHttpError(err);
    p.metrics.control.inc({ action, code: String(e.status) });
    p.log.warn('control-refused', { action, status: e.status, code: e.code, message: e.message });
    reply(res, e.status, { error: { code: e.code, message: e.message } }, {}, e.status === 413);
  }
}

function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof RegistrationError) return new HttpError(err.status, err.status === 403 ? 'address_refused' : err.status === 404 ? 'not_found' : 'invalid', err.message);
  if (err instanceof DystroError) return new HttpError(err.code === 'DYSTRO_ERR_UNKNOWN_REPLICA' ? 404 : 400, err.code, err.message);
  throw err;
}

async function jsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const r = await readBody(req, MAX_CONTROL_BODY, 10_000);
  if (!r.ok) throw new HttpError(r.status, 'invalid_body', r.message);
  if (r.body.length === 0) return {};
  let v: unknown;
  try {
    v = JSON.parse(r.body.toString('utf8'));
  } catch {
    throw new HttpError(400, 'invalid_json', 'The body is not valid JSON.');
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new HttpError(400, 'invalid_body', 'The body must be a JSON object.');
  return v as Record<string, unknown>;
}

function str(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length === 0) throw new HttpError(400, 'invalid_body', `\`${what}\` must be a non-empty string.`);
  return v;
}

function params(v: unknown): PolicyParams {
  if (v === undefined) return {};
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new HttpError(400, 'invalid_body', '`params` must be an object.');
  return v as PolicyParams;
}

function seedOf(v: unknown): { seed?: number } {
  return v === undefined ? {} : { seed: v as number };
}

async function route(p: Proxy, method: string, seg: string[], body: Record<string, unknown>): Promise<{ status: number; value: unknown }> {
  const r = p.router;
  const policyState = () => ({ live: r.currentPolicy(), shadow: r.shadowReport(), canary: r.canaryStatus() });
  const [head, id, sub] = seg;
  if (head === 'policy' && seg.length === 1) {
    if (method === 'GET') return { status: 200, value: policyState() };
    if (method === 'PUT') {
      r.setPolicy(str(body.name, 'name'), params(body.params));
      p.log.info('policy-set', { policy: r.policyId });
      return { status: 200, value: policyState() };
    }
  }
  if (head === 'shadow' && seg.length === 1) {
    if (method === 'PUT') {
      r.shadow(str(body.name, 'name'), params(body.params), seedOf(body.seed));
      p.log.info('shadow-started', { policy: body.name });
      return { status: 200, value: policyState() };
    }
    if (method === 'DELETE') return { status: 200, value: { report: r.stopShadow() } };
  }
  if (head === 'canary') {
    if (seg.length === 1 && method === 'PUT') {
      const status = r.canary(str(body.name, 'name'), params(body.params), body.fraction as number, body.guard as never, seedOf(body.seed));
      p.log.info('canary-started', { policy: body.name, fraction: body.fraction });
      return { status: 200, value: status };
    }
    if (seg.length === 1 && method === 'DELETE') return { status: 200, value: r.abortCanary() };
    if (seg.length === 2 && id === 'promote' && method === 'POST') return { status: 200, value: r.promoteCanary() };
  }
  if (head === 'replicas') {
    if (seg.length === 1 && method === 'GET') return { status: 200, value: { replicas: listReplicas(p) } };
    if (seg.length === 2 && method === 'PUT') {
      const spec = checkEngineSpec({ ...body, id }, 'replica');
      const view = await p.serialize(() => p.registerEngine(spec, true));
      return { status: 200, value: describe(p, view.id) };
    }
    if (seg.length === 2 && method === 'DELETE') {
      await p.serialize(async () => p.removeEngine(id));
      return { status: 200, value: { removed: id } };
    }
    if (seg.length === 3 && sub === 'drain' && (method === 'PUT' || method === 'DELETE')) {
      await p.serialize(async () => p.drain(id, method === 'PUT'));
      return { status: 200, value: describe(p, id) };
    }
  }
  const known = KNOWN.includes(head ?? '');
  throw new HttpError(known ? 405 : 404, known ? 'method_not_allowed' : 'not_found', `No control action for ${method} /${seg.join('/')}.`);
}

function listReplicas(p: Proxy): unknown[] {
  return p.router.fleet.snapshot().replicas.map((r) => describe(p, r.id));
}

/** A replica as the control API shows it (never the engine's API key). */
function describe(p: Proxy, id: string): unknown {
  const r = p.router.fleet.snapshot().byId.get(id);
  if (!r) return { id, removed: true };
  const load = p.router.fleet.load;
  const e = p.engine(id);
  return {
    id: r.id,
    pool: r.pool.id,
    model: r.pool.model,
    address: r.address,
    slot: r.slot,
    health: r.health,
    drained: r.drained,
    ejected: p.outliers.ejected(id),
    kvEvents: e?.spec.kvEvents ? { endpoint: e.spec.kvEvents.endpoint, replayEndpoint: e.spec.kvEvents.replayEndpoint, state: p.indexState(r.slot) } : null,
    load: { running: load.running[r.slot], waiting: load.waiting[r.slot], kvUsage: load.kvUsage[r.slot], updatedAtMs: load.updatedAtMs[r.slot] },
    inflight: p.router.inflight.requests[r.slot],
  };
}
