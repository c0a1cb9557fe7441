/**
 * The data plane: OpenAI-compatible requests in, one routing decision, the engine's answer out.
 *
 * Order of checks (cheapest refusal first, nothing reaches an engine before all pass): path and method
 * (404/405) → API key (401, body unread) → declared size (413, unread) → body within the size limit and
 * the body timeout (413/408) → JSON and required fields (400) → a pool serving the model (404) →
 * tokenize → route (shed: 503 with Retry-After) → engine.
 *
 * Streaming. An SSE response is relayed chunk by chunk as the engine writes it (no buffering; the
 * socket's backpressure is honoured). The response headers go to the client with the first chunk, not
 * before: until then nothing has been committed, and a failure is still retryable. The first chunk is
 * the first token (ticket.onFirstToken: the TTFT the router calibrates on); the end of the stream
 * onEnd; an engine failure after that onError, and the client receives a final SSE `error` event
 * (which the OpenAI clients raise as an APIError) instead of a silently truncated stream; a client that
 * goes away aborts the engine request (onCancel). A non-streamed response is read whole (bounded) and
 * then sent with its length, so an engine dying mid-body gives a clean 502, not half a JSON document;
 * it calls no onFirstToken, because its first byte comes after the whole generation and would teach
 * the TTFT predictor end-to-end latency.
 *
 * Retries happen only before the first byte reaches the client, for failures that say the engine did
 * not take the request (connect errors, resets, 429, 502, 503, 504), within the retry budget, at most
 * retry.maxRetries times, never for bodies over retry.maxBodyBytes, and on another replica: the ones
 * already tried are excluded (router.route(req, { exclude })). A timeout is not retried: the engine
 * may still be working on it.
 *
 * Tenancy. The tenant comes from the API key alone. Its salt goes to the router (`tenant`: the block
 * hashes' namespace), to the engine in `tenantHeader`, and as vLLM's `cache_salt` in the body (a
 * client's own cache_salt is overwritten: a tenant must not pick another tenant's salt). Logs carry
 * request ids, models, replicas, statuses and times; never prompts, keys, salts or tenant ids.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import { DystroError } from '../errors.js';
import type { Decision, RoutedDecision, RouteRequest, ShedDecision } from '../router/types.js';
import { bearerToken, type Tenant } from './auth.js';
import { readBody, sendError, sendJson, writeChunk } from './http-util.js';
import { parseRequest, type ApiError, type ParsedRequest } from './openai.js';
import type { EngineState, Proxy } from './proxy.js';

const ENDPOINTS: Record<string, 'completions' | 'chat' | undefined> = {
  '/v1/completions': 'completions',
  '/v1/chat/completions': 'chat',
};

/** State of one request across its attempts. */
interface Ctx {
  proxy: Proxy;
  res: ServerResponse;
  id: string;
  path: string;
  parsed: ParsedRequest;
  routeReq: RouteRequest;
  /** The body sent to engines (the client's bytes, or re-serialized with the tenant's cache_salt). */
  upstreamBody: Buffer;
  tenant: Tenant;
  clientGone: boolean;
  /** Aborts the current engine attempt. */
  abort: AbortController | null;
  attempts: number;
  replica: string;
  status: number;
  cachedTokens: number;
}

type Failure = 'connect' | 'reset' | 'timeout';

/** An attempt that ended before anything was sent to the client. */
interface NotServed {
  retryable: boolean;
  /** The engine's response, to relay when no retry follows (its body is still unread). */
  response?: Dispatcher.ResponseData;
  /** Or what to answer when there is no response. */
  error?: ApiError;
}

export async function handleData(p: Proxy, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const started = performance.now();
  const path = (req.url ?? '/').split('?')[0];
  const method = req.method ?? 'GET';
  if (path === '/metrics' && method === 'GET') {
    const text = await p.registry.metrics();
    res.writeHead(200, { 'content-type': p.registry.contentType });
    res.end(text);
    return;
  }
  if (path === '/healthz' && method === 'GET') return sendJson(res, 200, '{"ok":true}');
  const endpoint = ENDPOINTS[path];
  if (path === '/v1/models') {
    if (method !== 'GET') return sendError(res, { status: 405, message: 'Use GET.', type: 'invalid_request_error' }, { allow: 'GET' });
    if (!authenticate(p, req, res)) return;
    const data = p.models().map((id) => ({ id, object: 'model', created: 0, owned_by: 'dystro' }));
    return sendJson(res, 200, JSON.stringify({ object: 'list', data }));
  }
  if (endpoint === undefined) return sendError(res, { status: 404, message: `No route for ${method} ${path}.`, type: 'invalid_request_error', code: 'not_found' });
  if (method !== 'POST') return sendError(res, { status: 405, message: 'Use POST.', type: 'invalid_request_error' }, { allow: 'POST' }, true);
  const tenant = authenticate(p, req, res);
  if (!tenant) return;

  const id = requestId(req.headers['x-request-id']);
  const done = (status: number) => {
    p.metrics.requests.inc({ endpoint, code: String(status) });
    p.metrics.requestSeconds.observe({ endpoint }, (performance.now() - started) / 1000);
  };
  const limits = p.config.limits;
  const body = await readBody(req, limits.maxBodyBytes, limits.bodyTimeoutMs);
  if (!body.ok) {
    sendError(res, { status: body.status, message: body.message, type: 'invalid_request_error', code: body.status === 413 ? 'request_too_large' : null }, { 'x-request-id': id }, true);
    return done(body.status);
  }
  const parsed = parseRequest(endpoint, body.body);
  if (!parsed.ok) {
    sendError(res, parsed.error, { 'x-request-id': id });
    return done(parsed.error.status);
  }
  const r = parsed.request;
  if (!p.servesModel(r.model)) {
    sendError(res, { status: 404, message: `The model \`${r.model}\` does not exist.`, type: 'invalid_request_error', param: 'model', code: 'model_not_found' }, { 'x-request-id': id });
    return done(404);
  }
  const t0 = performance.now();
  const prompt = typeof r.prompt === 'string' ? p.tokenizer.encode(r.prompt) : r.prompt;
  p.metrics.tokenizeSeconds.observe((performance.now() - t0) / 1000);

  const ctx: Ctx = {
    proxy: p,
    res,
    id,
    path,
    parsed: r,
    routeReq: { model: r.model, tenant: tenant.salt, priority: tenant.sloClass, prompt, expectedOutputTokens: r.expectedOutputTokens, sessionKey: sessionKey(req) },
    upstreamBody: upstreamBody(p, r, body.body, tenant),
    tenant,
    clientGone: false,
    abort: null,
    attempts: 0,
    replica: '',
    status: 0,
    cachedTokens: 0,
  };
  res.on('close', () => {
    if (res.writableFinished) return;
    ctx.clientGone = true;
    ctx.abort?.abort();
  });
  p.budget.requestStarted();
  p.metrics.active.inc();
  try {
    await serve(ctx);
  } finally {
    p.budget.requestFinished();
    p.metrics.active.dec();
    const status = ctx.clientGone && ctx.status === 0 ? 499 : ctx.status;
    done(status);
    p.log.info('request', { id, endpoint, model: r.model, stream: r.stream, status, replica: ctx.replica || undefined, attempts: ctx.attempts, cachedTokens: ctx.cachedTokens, ms: Math.round(performance.now() - started) });
  }
}

/** The tenant of the request's API key; otherwise answers 401 (body unread, connection closed) and returns null. */
function authenticate(p: Proxy, req: IncomingMessage, res: ServerResponse): Tenant | null {
  const key = bearerToken(req.headers.authorization);
  const tenant = key === null ? p.config.anonymousTenant : p.keys.tenantOf(key);
  if (tenant) return tenant;
  p.metrics.authFailures.inc({ plane: 'data' });
  sendError(res, { status: 401, message: key === null ? 'Missing API key (Authorization: Bearer …).' : 'Incorrect API key provided.', type: 'invalid_request_error', code: 'invalid_api_key' }, { 'www-authenticate': 'Bearer' }, true);
  return null;
}

function requestId(h: string | string[] | undefined): string {
  return typeof h === 'string' && /^[\w.:-]{1,128}$/.test(h) ? h : randomUUID();
}

function sessionKey(req: IncomingMessage): string | undefined {
  const h = req.headers['x-dystro-session'];
  return typeof h === 'string' && h.length > 0 && h.length <= 256 ? h : undefined;
}

/** The client's bytes, unless the tenant's cache_salt has to be set (or a client's own one replaced). */
function upstreamBody(p: Proxy, r: ParsedRequest, raw: Buffer, tenant: Tenant): Buffer {
  const has = Object.prototype.hasOwnProperty.call(r.body, 'cache_salt');
  if (!p.config.cacheSaltInBody && !has) return raw;
  const body = { ...r.body };
  if (p.config.cacheSaltInBody) body.cache_salt = tenant.salt;
  else delete body.cache_salt;
  return Buffer.from(JSON.stringify(body));
}

/** Routes, waits out a queue decision, and answers a shed; returns the routed decision or null. */
async function decide(ctx: Ctx, decision: Decision): Promise<RoutedDecision | null> {
  let d: Decision = decision;
  if (d.kind === 'queue') d = await d.ready;
  if (d.kind === 'route') {
    if (ctx.clientGone) {
      d.ticket.onCancel();
      return null;
    }
    return d;
  }
  answerShed(ctx, d);
  return null;
}

function answerShed(ctx: Ctx, d: ShedDecision): void {
  const retryAfterS = Math.max(1, Math.ceil(d.retryAfterMs / 1000));
  ctx.status = 503;
  sendError(ctx.res, { status: 503, message: `No replica can serve this request now (${d.reason}); retry after ${retryAfterS} s.`, type: 'service_unavailable', code: d.reason }, { 'retry-after': String(retryAfterS), 'x-request-id': ctx.id });
}

async function serve(ctx: Ctx): Promise<void> {
  const p = ctx.proxy;
  let first: Decision;
  try {
    first = p.router.route(ctx.routeReq);
  } catch (err) {
    if (!(err instanceof DystroError)) throw err;
    ctx.status = 400;
    const tooLong = err.code === 'DYSTRO_ERR_PROMPT_TOO_LARGE';
    return sendError(ctx.res, { status: 400, message: tooLong ? 'The prompt is longer than this service accepts.' : err.message, type: 'invalid_request_error', code: tooLong ? 'context_length_exceeded' : null }, { 'x-request-id': ctx.id });
  }
  let d = await decide(ctx, first);
  const tried = new Set<string>();
  let holdsRetry = false;
  try {
    while (d !== null) {
      tried.add(d.replica.id);
      ctx.attempts++;
      ctx.replica = d.replica.id;
      ctx.cachedTokens = d.cachedTokens;
      const failed = await attempt(ctx, d);
      if (failed === null) return;
      // Nothing has reached the client: retry elsewhere, or answer with what the engine said.
      const refused = noRetryReason(ctx, failed, holdsRetry);
      if (refused !== null) {
        if (refused !== 'not_retryable') p.metrics.retries.inc({ outcome: refused });
        return await answerFailure(ctx, failed);
      }
      holdsRetry = true;
      // The router skips the replicas this request already failed on (a queued retry keeps that too).
      const next = p.router.route(ctx.routeReq, { exclude: [...tried] });
      if (next.kind === 'shed') {
        p.metrics.retries.inc({ outcome: 'no_replica' });
        return await answerFailure(ctx, failed);
      }
      p.metrics.retries.inc({ outcome: 'retried' });
      await failed.response?.body.dump().catch(() => {});
      d = await decide(ctx, next);
    }
  } finally {
    if (holdsRetry) p.budget.retryFinished();
  }
}

/** Why a failed attempt is not retried, or null when it may be (a budget slot is then taken and held). */
function noRetryReason(ctx: Ctx, failed: NotServed, holdsRetry: boolean): string | null {
  const p = ctx.proxy;
  if (!failed.retryable) return 'not_retryable';
  if (ctx.clientGone) return 'client_gone';
  if (ctx.attempts > p.config.retry.maxRetries) return 'max_retries';
  if (ctx.upstreamBody.length > p.config.retry.maxBodyBytes) return 'body_too_large';
  if (!holdsRetry && !p.budget.tryRetry()) return 'budget';
  return null;
}

function classify(err: unknown): Failure {
  const code = (err as { code?: string } | null)?.code ?? '';
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return 'timeout';
  if (['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EDYSTROREFUSED', 'UND_ERR_CLOSED', 'UND_ERR_DESTROYED'].includes(code)) return 'connect';
  return 'reset';
}

function upstreamHeaders(ctx: Ctx, e: EngineState): Record<string, string> {
  const h: Record<string, string> = {
    'content-type': 'application/json',
    accept: ctx.parsed.stream ? 'text/event-stream' : 'application/json',
    'x-request-id': ctx.id,
    [ctx.proxy.config.tenantHeader]: ctx.tenant.salt,
  };
  if (e.spec.apiKey) h.authorization = `Bearer ${e.spec.apiKey}`;
  return h;
}

/** The request id and, when configured, the decision (replica, expected cached tokens, attempts). */
function decisionHeaders(ctx: Ctx): Record<string, string> {
  const h: Record<string, string> = { 'x-request-id': ctx.id };
  if (ctx.proxy.config.exposeDecision && ctx.attempts > 0) {
    h['x-dystro-replica'] = ctx.replica;
    h['x-dystro-cached-tokens'] = String(ctx.cachedTokens);
    h['x-dystro-attempts'] = String(ctx.attempts);
  }
  return h;
}

/** Headers of a relayed engine response: the engine's content type and Retry-After, and decisionHeaders. */
function clientHeaders(ctx: Ctx, upstream: Dispatcher.ResponseData, extra: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { ...decisionHeaders(ctx), ...extra };
  const ct = upstream.headers['content-type'];
  if (typeof ct === 'string') h['content-type'] = ct;
  const ra = upstream.headers['retry-after'];
  if (typeof ra === 'string') h['retry-after'] = ra;
  return h;
}

/**
 * How one attempt ended, told once each to the router (the ticket), the outlier detector and the
 * attempt counter.
 */
class AttemptEnd {
  constructor(
    private readonly p: Proxy,
    private readonly d: RoutedDecision,
  ) {}

  private count(outcome: string): void {
    this.p.metrics.attempts.inc({ replica: this.d.replica.id, outcome });
  }

  /** The first chunk reached the client: the TTFT the router calibrates on. */
  firstToken(): void {
    this.d.ticket.onFirstToken();
  }

  /** Served in full: a success for ejection. */
  ok(): void {
    this.d.ticket.onEnd();
    this.p.outliers.success(this.d.replica.id);
    this.count('ok');
  }

  /** The engine failed: counts toward ejection. */
  failed(kind: 'engine' | 'connect' | 'timeout' | 'http', outcome: string): void {
    this.d.ticket.onError(kind);
    this.p.outliers.failure(this.d.replica.id);
    this.count(outcome);
  }

  /** A 429: an error for the router; for ejection a failure when fast, neutral when slow. */
  tooManyRequests(elapsedMs: number): void {
    this.d.ticket.onError('http');
    this.p.outliers.tooManyRequests(this.d.replica.id, elapsedMs);
    this.count('http_429');
  }

  /** Another 4xx: the request's fault, not the engine's (neutral for ejection). */
  clientError(): void {
    this.d.ticket.onEnd();
    this.count('http_4xx');
  }

  /** A response larger than the proxy relays: an error, but no sign of an unhealthy engine. */
  tooLarge(): void {
    this.d.ticket.onError('engine');
    this.count('too_large');
  }

  cancelled(): null {
    this.d.ticket.onCancel();
    this.count('cancelled');
    return null;
  }
}

/**
 * One engine attempt. Returns null when the request is finished (served, relayed, or the client went
 * away), or what happened when nothing was sent to the client.
 */
async function attempt(ctx: Ctx, d: RoutedDecision): Promise<NotServed | null> {
  const p = ctx.proxy;
  const e = p.engine(d.replica.id);
  if (!e) {
    // Removed between the decision and now.
    d.ticket.onCancel();
    return { retryable: true, error: { status: 503, message: 'The chosen engine left the fleet.', type: 'service_unavailable' } };
  }
  const end = new AttemptEnd(p, d);
  const ac = new AbortController();
  ctx.abort = ac;
  const t0 = p.clock.nowMs();
  d.ticket.onStart();
  let res: Dispatcher.ResponseData;
  try {
    res = await e.pool.request({ path: `${e.basePath}${ctx.path}`, method: 'POST', headers: upstreamHeaders(ctx, e), body: ctx.upstreamBody, signal: ac.signal });
  } catch (err) {
    if (ctx.clientGone) return end.cancelled();
    const kind = classify(err);
    end.failed(kind === 'reset' ? 'engine' : kind, kind);
    if (kind === 'timeout') return { retryable: false, error: { status: 504, message: 'The engine did not answer in time.', type: 'timeout' } };
    if (kind === 'connect') return { retryable: true, error: { status: 503, message: 'No engine could be reached.', type: 'service_unavailable' } };
    return { retryable: true, error: { status: 502, message: 'The engine closed the connection.', type: 'upstream_error' } };
  }
  const status = res.statusCode;
  if (status >= 200 && status < 300) {
    const ct = String(res.headers['content-type'] ?? '');
    return ct.includes('text/event-stream') ? relayStream(ctx, end, res) : relayWhole(ctx, end, res);
  }
  if (status === 429) {
    end.tooManyRequests(p.clock.nowMs() - t0);
    return { retryable: true, response: res };
  }
  if (status >= 500) {
    end.failed('http', 'http_5xx');
    return { retryable: status === 502 || status === 503 || status === 504, response: res };
  }
  end.clientError();
  return { retryable: false, response: res };
}

/** SSE: waits for the first chunk (still retryable before it), then relays chunk by chunk. */
async function relayStream(ctx: Ctx, end: AttemptEnd, res: Dispatcher.ResponseData): Promise<NotServed | null> {
  const it = res.body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let next: IteratorResult<Buffer>;
  try {
    next = await it.next();
  } catch {
    if (ctx.clientGone) return end.cancelled();
    // The engine failed before its first byte: nothing reached the client, so this is still retryable.
    end.failed('engine', 'reset');
    return { retryable: true, error: { status: 502, message: 'The engine closed the connection.', type: 'upstream_error' } };
  }
  const out = ctx.res;
  if (ctx.clientGone) {
    res.body.destroy();
    return end.cancelled();
  }
  ctx.status = res.statusCode;
  out.writeHead(res.statusCode, clientHeaders(ctx, res, { 'cache-control': 'no-cache' }));
  if (!next.done) {
    end.firstToken();
    try {
      while (!next.done) {
        const wait = writeChunk(out, next.value);
        if (wait) await wait;
        if (ctx.clientGone) break;
        next = await it.next();
      }
    } catch {
      if (ctx.clientGone) return end.cancelled();
      // After the first byte: no retry. The client gets an SSE error event and the end of the stream.
      end.failed('engine', 'midstream');
      ctx.proxy.log.warn('engine-failed-midstream', { id: ctx.id, replica: ctx.replica });
      const event = { error: { message: 'The engine failed while streaming the response.', type: 'upstream_error', param: null, code: 'engine_failed' } };
      out.end(`data: ${JSON.stringify(event)}\n\n`);
      return null;
    }
    if (ctx.clientGone) {
      res.body.destroy();
      return end.cancelled();
    }
  }
  // (An empty stream ends here too, with no first token to report.)
  end.ok();
  out.end();
  return null;
}

/** A non-streamed 2xx: read whole (bounded), then sent with its length. */
async function relayWhole(ctx: Ctx, end: AttemptEnd, res: Dispatcher.ResponseData): Promise<NotServed | null> {
  const max = ctx.proxy.config.limits.maxResponseBytes;
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const c of res.body as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > max) {
        res.body.destroy();
        end.tooLarge();
        return { retryable: false, error: { status: 502, message: 'The engine response is larger than this proxy relays.', type: 'upstream_error' } };
      }
      chunks.push(c);
    }
  } catch {
    if (ctx.clientGone) return end.cancelled();
    // Nothing reached the client yet: retryable like a failure before the response.
    end.failed('engine', 'reset');
    return { retryable: true, error: { status: 502, message: 'The engine failed while sending the response.', type: 'upstream_error' } };
  }
  if (ctx.clientGone) return end.cancelled();
  end.ok();
  ctx.status = res.statusCode;
  const body = Buffer.concat(chunks, size);
  ctx.res.writeHead(res.statusCode, { ...clientHeaders(ctx, res), 'content-length': String(body.length) });
  ctx.res.end(body);
  return null;
}

/** No retry follows: relays the engine's error response, or answers the failure. */
async function answerFailure(ctx: Ctx, failed: NotServed): Promise<void> {
  if (ctx.clientGone) {
    await failed.response?.body.dump().catch(() => {});
    return;
  }
  if (failed.response) {
    const res = failed.response;
    let body: Buffer;
    try {
      body = Buffer.from(await res.body.arrayBuffer());
    } catch {
      body = Buffer.from(JSON.stringify({ error: { message: `The engine answered ${res.statusCode}.`, type: 'upstream_error', param: null, code: null } }));
    }
    ctx.status = res.statusCode;
    ctx.res.writeHead(res.statusCode, { ...clientHeaders(ctx, res), 'content-length': String(body.length) });
    ctx.res.end(body);
    return;
  }
  const e = failed.error ?? { status: 502, message: 'The engine failed.', type: 'upstream_error' };
  ctx.status = e.status;
  // "Nothing could serve it": the client may come back shortly (a 503 always says when).
  sendError(ctx.res, e, e.status === 503 ? { ...decisionHeaders(ctx), 'retry-after': '1' } : decisionHeaders(ctx));
}
