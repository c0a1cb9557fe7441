/**
 * The engine emulator (DESIGN §7): an HTTP server that answers like a vLLM OpenAI-compatible server,
 * paced by the performance model, with a real block-level prefix cache, vLLM's KV events over ZeroMQ
 * and vLLM's /metrics, plus fault knobs — so the proxy and the router can be exercised end to end
 * without GPUs.
 *
 * HTTP API (node:http):
 *   POST /v1/completions        prompt: a string, token ids, or a one-element array of either
 *   POST /v1/chat/completions   messages → prompt text by the shared template (src/tokenize)
 *       both: max_tokens (chat also max_completion_tokens; default `defaultMaxTokens`, 16), stream,
 *       stream_options.include_usage, seed, n = 1 only. Streams are server-sent events in OpenAI's chunk
 *       format ending with `data: [DONE]`; non-streaming answers carry usage, with
 *       usage.prompt_tokens_details.cached_tokens = prompt tokens served from the prefix cache.
 *       The output is synthetic (output.ts): exactly max_tokens tokens, finish_reason "length".
 *   GET  /v1/models, GET /health (200, empty body, as vLLM), GET /metrics (metrics.ts)
 *
 * Prefix cache namespace. A request's blocks are hashed with the router's chain (PrefixHasher over its
 * token ids, 16-token blocks) seeded by the namespace (model = the served model name, tenant = the
 * `x-dystro-tenant` request header, which the proxy sets from the authenticated tenant; absent = "").
 * Two tenants never share cache blocks. BlockStored reports a tenant as vLLM reports a cache_salt: in
 * extra_keys of the chain's first block.
 *
 * Control API (only when `controlToken` is set; `Authorization: Bearer <token>`, else 401; without a
 * token configured these paths answer 404):
 *   GET  /control/state                 incarnation, next seq, faults, load
 *   POST /control/faults                {slowFactor?, failFraction?, failStatus?: 429|503, dropFraction?, dropNext?}
 *   POST /control/stall                 {ms}: no generation for ms wall milliseconds
 *   POST /control/restart               {downMs?}: new incarnation: requests die, cache empty, seq 0,
 *                                       AllBlocksCleared; with downMs the port refuses connections that long
 *   POST /control/crash                 {mode?: "close"|"hang"|"exit"} (default: the crashMode option)
 *   POST /reset_prefix_cache            vLLM's endpoint: empties the prefix cache (AllBlocksCleared)
 * The same knobs are methods of EngineEmulator.
 *
 * Crash modes: "close" shuts every socket (connections are refused), "hang" keeps the listeners open
 * but never answers, steps nor publishes, "exit" ends the process (exit code 1).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { bearerToken, sha256, tokenMatches as bearerTokenMatches } from '../proxy/auth.js';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { systemClock, type Clock } from '../clock.js';
import { DystroError, fail } from '../errors.js';
import { DEFAULT_BLOCK_SIZE, PrefixHasher } from '../hashing/prefix.js';
import type { KernelBackend } from '../kernels/abi.js';
import { loadKernelsSync } from '../kernels/select.js';
import { engineModel, type EngineModel } from '../model/roofline.js';
import { createRng, type Rng } from '../rng.js';
import { chatPromptText, tokenizerByName, type ChatMessage, type Tokenizer, type TokenizerName } from '../tokenize/index.js';
import { EngineLoop, type LoopRequest } from './engine-loop.js';
import { KvPublisher, encodeEventBatch, type EventEncoding, type HashFormat, type KvEventSpec } from './kv-publisher.js';
import { EmulatorMetrics } from './metrics.js';
import { OutputSampler } from './output.js';

export type CrashMode = 'close' | 'hang' | 'exit';

/** Fault knobs that stay set until changed. */
export interface FaultSettings {
  /** Every engine step takes this many times its modeled time (1 = none). */
  slowFactor: number;
  /** Share of generation requests refused at once with `failStatus` (0 … 1). */
  failFraction: number;
  failStatus: 429 | 503;
  /** Share of KV event batches not sent on PUB (they stay in the replay buffer). */
  dropFraction: number;
  /** The next N KV event batches are not sent on PUB. */
  dropNext: number;
}

export interface EngineEmulatorOptions {
  /** HTTP port (default 0: a free port). */
  port?: number;
  /** HTTP bind address (default 127.0.0.1). */
  host?: string;
  /** KV events PUB port (default 0: a free port; null: no KV events). */
  eventsPort?: number | null;
  /** Replay ROUTER port (default 0: a free port; null: no replay socket). */
  replayPort?: number | null;
  /** ZeroMQ bind address (default: `host`; "*" for every interface). */
  eventsHost?: string;
  /** KV events topic (default "", vLLM's). */
  topic?: string;
  /** Performance model of the model served (roofline MODELS key, default "llama-3-8b"). */
  model?: string;
  /** The model name clients send and /v1/models lists (default: `model`); also the hash namespace's model. */
  servedModelName?: string;
  /** Accelerator (roofline CHIPS key, default "H100"). */
  accelerator?: string;
  /** Tensor parallelism (default 1). */
  tp?: number;
  /** Wall ms per modeled ms (default 1: real time; 0.01 runs 100× fast). */
  timeScale?: number;
  /** KV event encoding: vLLM's positional arrays ("array", default) or tagged maps ("map"). */
  encoding?: EventEncoding;
  /** Block hashes on the wire as integers (default) or 8 bytes. */
  hashFormat?: HashFormat;
  /** "gpt" (cl100k_base, default), "bytes", or a Tokenizer. */
  tokenizer?: TokenizerName | Tokenizer;
  /** Seed of the synthetic output and of the fault draws (default 0). */
  seed?: number;
  /** Tokens per KV block (default 16, the router's and vLLM's). */
  blockSize?: number;
  /** KV cache capacity in blocks (default: the performance model's capacity). */
  kvBlocks?: number;
  maxBatchedTokens?: number;
  maxNumSeqs?: number;
  /** Longest prompt + completion in tokens (default: the KV capacity). */
  maxModelLen?: number;
  /** max_tokens when a request gives none (default 16, OpenAI's completions default). */
  defaultMaxTokens?: number;
  /** data_parallel_rank in the KV event payloads (default 0). */
  dpRank?: number;
  /** Enables the control API with this bearer token. */
  controlToken?: string;
  /** Request header carrying the tenant salt (default "x-dystro-tenant"). */
  tenantHeader?: string;
  faults?: Partial<FaultSettings>;
  /** What crash() does when given no mode (default "close"). */
  crashMode?: CrashMode;
  /** Largest request body in bytes (default 16 MiB). */
  maxBodyBytes?: number;
  clock?: Clock;
  /** Hashing kernels (default: the auto-selected backend). */
  kernels?: KernelBackend;
  /** Where /metrics comes from (default: a registry of its own). */
  registry?: Registry;
}

export interface EmulatorState {
  incarnation: number;
  /** A restart holds the HTTP port closed. */
  down: boolean;
  /** Seq of the next KV event batch (null without KV events). */
  nextSeq: number | null;
  faults: FaultSettings;
  stalled: boolean;
  crashed: CrashMode | null;
  running: number;
  waiting: number;
  kvUsage: number;
  cachedBlocks: number;
  kvBlocks: number;
  blockSize: number;
  timeScale: number;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = status === 404 ? 'NotFoundError' : 'BadRequestError',
  ) {
    super(message);
  }
}

const FAULT_KEYS = ['slowFactor', 'failFraction', 'failStatus', 'dropFraction', 'dropNext'] as const;

function checkFaults(p: Partial<FaultSettings>, where: string): Partial<FaultSettings> {
  if (p === null || typeof p !== 'object' || Array.isArray(p)) fail('DYSTRO_ERR_INVALID_CONFIG', where, 'an object of fault settings', p);
  for (const k of Object.keys(p)) {
    if (!(FAULT_KEYS as readonly string[]).includes(k)) fail('DYSTRO_ERR_INVALID_CONFIG', `${where}.${k}`, `one of ${FAULT_KEYS.join(', ')}`, k);
  }
  const frac = (k: 'failFraction' | 'dropFraction') => {
    const v = p[k];
    if (v !== undefined && (typeof v !== 'number' || !(v >= 0 && v <= 1))) fail('DYSTRO_ERR_INVALID_CONFIG', `${where}.${k}`, 'a number in 0 … 1', v);
  };
  frac('failFraction');
  frac('dropFraction');
  if (p.slowFactor !== undefined && (typeof p.slowFactor !== 'number' || !(p.slowFactor >= 0.01 && p.slowFactor <= 1e6))) {
    fail('DYSTRO_ERR_INVALID_CONFIG', `${where}.slowFactor`, 'a number in 0.01 … 1e6', p.slowFactor);
  }
  if (p.failStatus !== undefined && p.failStatus !== 429 && p.failStatus !== 503) fail('DYSTRO_ERR_INVALID_CONFIG', `${where}.failStatus`, '429 or 503', p.failStatus);
  if (p.dropNext !== undefined && (!Number.isInteger(p.dropNext) || p.dropNext < 0)) fail('DYSTRO_ERR_INVALID_CONFIG', `${where}.dropNext`, 'an integer ≥ 0', p.dropNext);
  return p;
}

function intOption(v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) fail('DYSTRO_ERR_INVALID_CONFIG', what, `an integer in ${min} … ${max}`, v);
  return v;
}

/** The bearer token compared in constant time (digests first, so lengths do not leak either): the proxy's check. */
function tokenMatches(header: string | undefined, token: string): boolean {
  return bearerTokenMatches(bearerToken(header), sha256(token));
}

function sseData(value: unknown): string {
  return `data: ${JSON.stringify(value)}\n\n`;
}

/** A vLLM-like engine behind an OpenAI-compatible HTTP API. Create with EngineEmulator.start(). */
export class EngineEmulator {
  readonly servedModelName: string;
  readonly blockSize: number;
  readonly kvBlocks: number;
  readonly maxModelLen: number;
  readonly timeScale: number;
  readonly tokenizer: Tokenizer;
  readonly metrics: EmulatorMetrics;
  readonly faults: FaultSettings;
  /** 1 at start, +1 per restart. */
  incarnation = 1;
  private readonly options: EngineEmulatorOptions;
  private readonly engineModel: EngineModel;
  private readonly clock: Clock;
  private readonly hasher: PrefixHasher;
  private readonly seeds = new Map<string, bigint>();
  private readonly sampler: OutputSampler;
  private readonly faultRng: Rng;
  private readonly loop: EngineLoop;
  private readonly server: Server;
  private publisher: KvPublisher | null = null;
  private crashedMode: CrashMode | null = null;
  /** Requests held unanswered while hung. */
  private readonly hung = new Set<ServerResponse>();
  private requestCounter = 0;
  /** The HTTP address once listening (kept while a restart holds the port closed). */
  private bound: AddressInfo | null = null;
  private downTimer: ReturnType<typeof setTimeout> | null = null;
  private closing: Promise<void> | null = null;
  private resolveClosed!: () => void;
  /** Resolves when the emulator has shut down (close() or a crash in "close" mode). */
  readonly closed: Promise<void> = new Promise((r) => (this.resolveClosed = r));
  private readonly encoding: EventEncoding;
  private readonly hashFormat: HashFormat;
  private readonly dpRank: number;

  private constructor(options: EngineEmulatorOptions) {
    this.options = options;
    const tp = options.tp ?? 1;
    this.engineModel = engineModel(options.model ?? 'llama-3-8b', options.accelerator ?? 'H100', tp);
    this.servedModelName = options.servedModelName ?? options.model ?? 'llama-3-8b';
    if (typeof this.servedModelName !== 'string' || this.servedModelName.length === 0) fail('DYSTRO_ERR_INVALID_CONFIG', 'servedModelName', 'a non-empty string', this.servedModelName);
    this.blockSize = intOption(options.blockSize ?? DEFAULT_BLOCK_SIZE, 'blockSize', 1, 1024);
    this.kvBlocks = intOption(options.kvBlocks ?? Math.floor(this.engineModel.kvCapacityTokens() / this.blockSize), 'kvBlocks', 1, 2 ** 26);
    this.maxModelLen = intOption(options.maxModelLen ?? this.kvBlocks * this.blockSize, 'maxModelLen', 2, 2 ** 31);
    this.timeScale = options.timeScale ?? 1;
    if (typeof this.timeScale !== 'number' || !(this.timeScale > 0) || !Number.isFinite(this.timeScale)) fail('DYSTRO_ERR_INVALID_CONFIG', 'timeScale', 'a finite number > 0', this.timeScale);
    this.encoding = options.encoding ?? 'array';
    if (this.encoding !== 'array' && this.encoding !== 'map') fail('DYSTRO_ERR_INVALID_CONFIG', 'encoding', '"array" or "map"', this.encoding);
    this.hashFormat = options.hashFormat ?? 'int';
    if (this.hashFormat !== 'int' && this.hashFormat !== 'bytes') fail('DYSTRO_ERR_INVALID_CONFIG', 'hashFormat', '"int" or "bytes"', this.hashFormat);
    this.dpRank = intOption(options.dpRank ?? 0, 'dpRank', 0, 0xffff);
    const seed = intOption(options.seed ?? 0, 'seed', -(2 ** 31), 2 ** 32 - 1);
    if (options.controlToken !== undefined && (typeof options.controlToken !== 'string' || options.controlToken.length < 8)) {
      fail('DYSTRO_ERR_INVALID_CONFIG', 'controlToken', 'a string of at least 8 characters', options.controlToken);
    }
    if (options.crashMode !== undefined && !['close', 'hang', 'exit'].includes(options.crashMode)) fail('DYSTRO_ERR_INVALID_CONFIG', 'crashMode', '"close", "hang" or "exit"', options.crashMode);
    this.faults = { slowFactor: 1, failFraction: 0, failStatus: 503, dropFraction: 0, dropNext: 0, ...checkFaults(options.faults ?? {}, 'faults') };
    this.tokenizer = typeof options.tokenizer === 'object' && options.tokenizer !== null ? options.tokenizer : tokenizerByName(options.tokenizer ?? 'gpt');
    this.clock = options.clock ?? systemClock;
    this.hasher = new PrefixHasher(options.kernels ?? loadKernelsSync().kernels, { blockSize: this.blockSize });
    this.sampler = new OutputSampler(this.tokenizer, seed);
    this.faultRng = createRng(seed ^ 0x6a09e667);
    this.loop = new EngineLoop({
      engineModel: this.engineModel,
      blockSize: this.blockSize,
      kvBlocks: this.kvBlocks,
      maxBatchedTokens: options.maxBatchedTokens,
      maxNumSeqs: options.maxNumSeqs,
      timeScale: this.timeScale,
      clock: this.clock,
      onEvents: (events) => this.publish(events),
      onPreemptions: (n) => this.metrics.preempted(n),
    });
    this.loop.slowFactor = this.faults.slowFactor;
    this.metrics = new EmulatorMetrics(this.servedModelName, this.blockSize, this.kvBlocks, { loop: () => this.loop, publisher: () => this.publisher, incarnation: () => this.incarnation }, options.registry ?? new Registry());
    this.server = createServer((req, res) => this.handle(req, res));
    // Streams can be long; the emulator has no business timing out its own clients.
    this.server.requestTimeout = 0;
    this.server.headersTimeout = 60_000;
    this.server.keepAliveTimeout = 65_000;
  }

  /** Starts the HTTP server and the KV event sockets. */
  static async start(options: EngineEmulatorOptions = {}): Promise<EngineEmulator> {
    const e = new EngineEmulator(options);
    await e.listen();
    return e;
  }

  private async listen(): Promise<void> {
    const o = this.options;
    const host = o.host ?? '127.0.0.1';
    const zmqHost = o.eventsHost ?? (host === '0.0.0.0' || host === '::' ? '*' : host);
    const zport = (p: number | null | undefined, what: string) => (p === null ? null : p === undefined || p === 0 ? '*' : String(intOption(p, what, 1, 65535)));
    const ev = zport(o.eventsPort, 'eventsPort');
    const rp = zport(o.replayPort, 'replayPort');
    try {
      if (ev !== null) {
        this.publisher = new KvPublisher({
          endpoint: `tcp://${zmqHost}:${ev}`,
          replayEndpoint: rp === null ? undefined : `tcp://${zmqHost}:${rp}`,
          topic: o.topic ?? '',
          rng: createRng((o.seed ?? 0) ^ 0xbb67ae85),
        });
        this.publisher.dropFraction = this.faults.dropFraction;
        this.publisher.dropNext = this.faults.dropNext;
        await this.publisher.start();
      }
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen(intOption(o.port ?? 0, 'port', 0, 65535), host, () => {
          this.server.off('error', reject);
          this.bound = this.server.address() as AddressInfo;
          resolve();
        });
      });
    } catch (err) {
      await this.publisher?.close();
      this.loop.stop();
      throw err;
    }
  }

  get port(): number {
    return this.bound!.port;
  }

  /** http://host:port (no trailing slash); the OpenAI base URL is this + "/v1". */
  get url(): string {
    const a = this.bound!;
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${a.port}`;
  }

  /** The PUB endpoint to connect a subscriber to (null without KV events). */
  get eventsEndpoint(): string | null {
    return this.publisher ? connectable(this.publisher.endpoint) : null;
  }

  get replayEndpoint(): string | null {
    const r = this.publisher?.replayEndpoint;
    return r ? connectable(r) : null;
  }

  /** Changes fault knobs (validated; the others keep their values). Returns all of them. */
  setFaults(p: Partial<FaultSettings>): FaultSettings {
    checkFaults(p, 'faults');
    Object.assign(this.faults, p);
    this.loop.slowFactor = this.faults.slowFactor;
    if (this.publisher) {
      this.publisher.dropFraction = this.faults.dropFraction;
      if (p.dropNext !== undefined) this.publisher.dropNext = p.dropNext;
    }
    return this.faultsNow();
  }

  private faultsNow(): FaultSettings {
    // dropNext counts down as batches are dropped: report what is left.
    return { ...this.faults, dropNext: this.publisher?.dropNext ?? this.faults.dropNext };
  }

  /** No generation for `ms` wall ms (requests keep arriving and queue). */
  stall(ms: number): void {
    if (typeof ms !== 'number' || !(ms > 0) || ms > 2 ** 31 - 1) fail('DYSTRO_ERR_INVALID_CONFIG', 'stall ms', 'a number of milliseconds in (0, 2^31)', ms);
    this.loop.stall(ms);
  }

  /**
   * A new incarnation, as if the process restarted: requests in flight die (their connections reset),
   * the cache is empty, counters start from 0, the KV event seq starts again at 0 with an empty replay
   * buffer, and the first batch of the new incarnation is AllBlocksCleared. Idle keep-alive connections
   * close too (a request racing that close fails before any response byte). With `downMs` > 0 the HTTP
   * port refuses connections for that many wall ms first.
   */
  restart(downMs = 0): void {
    if (typeof downMs !== 'number' || !(downMs >= 0) || downMs > 2 ** 31 - 1) fail('DYSTRO_ERR_INVALID_CONFIG', 'restart downMs', 'a number of milliseconds in [0, 2^31)', downMs);
    if (this.crashedMode || this.closing || this.downTimer) return;
    this.incarnation++;
    this.loop.restart();
    this.metrics.reset();
    this.publisher?.reset();
    if (downMs === 0) {
      this.publish([{ type: 'AllBlocksCleared' }]);
      this.server.closeIdleConnections();
      return;
    }
    // Down while the "process" starts again (a real one loads its weights for seconds): the port
    // refuses connections, then the same port listens again and the new incarnation announces itself.
    const { port, address } = this.bound!;
    this.server.close();
    this.server.closeAllConnections();
    this.downTimer = setTimeout(() => {
      this.downTimer = null;
      if (this.closing) return;
      const onError = (err: Error) => {
        console.error(`engine emulator: could not listen again on ${address}:${port} after a restart: ${err.message}`);
        void this.close();
      };
      this.server.once('error', onError);
      this.server.listen(port, address, () => {
        this.server.off('error', onError);
        this.publish([{ type: 'AllBlocksCleared' }]);
      });
    }, downMs);
  }

  /** True while a restart with down time keeps the port closed. */
  get down(): boolean {
    return this.downTimer !== null;
  }

  /** Empties the prefix cache (vLLM's /reset_prefix_cache): AllBlocksCleared. */
  resetPrefixCache(): void {
    this.loop.resetPrefixCache();
  }

  /** The engine dies ("close": every socket shut; "hang": no answer, no step, no event; "exit": the process exits). */
  async crash(mode: CrashMode = this.options.crashMode ?? 'close'): Promise<void> {
    if (this.crashedMode || this.closing) return;
    this.crashedMode = mode;
    if (mode === 'hang') {
      this.loop.stall(2 ** 31 - 1);
      return;
    }
    if (mode === 'exit') {
      this.loop.stop();
      process.exit(1);
    }
    await this.close();
  }

  state(): EmulatorState {
    const l = this.loop.load();
    return {
      incarnation: this.incarnation,
      down: this.down,
      nextSeq: this.publisher ? this.publisher.seq : null,
      faults: this.faultsNow(),
      stalled: this.loop.stalled,
      crashed: this.crashedMode,
      running: l.running,
      waiting: l.waiting,
      kvUsage: l.kvUsage,
      cachedBlocks: l.cachedBlocks,
      kvBlocks: this.kvBlocks,
      blockSize: this.blockSize,
      timeScale: this.timeScale,
    };
  }

  /** Stops everything: requests in flight are cut, sockets closed. Resolves when all is closed. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = (async () => {
      this.loop.stop();
      if (this.downTimer) clearTimeout(this.downTimer);
      this.downTimer = null;
      for (const res of this.hung) res.destroy();
      this.hung.clear();
      const serverClosed = new Promise<void>((r) => this.server.close(() => r()));
      this.server.closeAllConnections();
      await Promise.all([serverClosed, this.publisher?.close()]);
      this.resolveClosed();
    })();
    return this.closing;
  }

  // ------------------------------------------------------------ KV events

  private publish(events: KvEventSpec[]): void {
    if (!this.publisher || this.crashedMode) return;
    this.publisher.publish(encodeEventBatch(this.clock.nowMs() / 1000, events, this.encoding, this.dpRank, this.hashFormat));
  }

  /** Resolves when every KV batch so far was handed to ZeroMQ (tests). */
  async eventsFlushed(): Promise<void> {
    await this.publisher?.flushed();
  }

  // ------------------------------------------------------------ HTTP

  private handle(req: IncomingMessage, res: ServerResponse): void {
    if (this.crashedMode === 'hang') {
      this.hung.add(res);
      res.on('close', () => this.hung.delete(res));
      return;
    }
    this.route(req, res).catch((err: unknown) => {
      if (err instanceof HttpError) this.error(res, err.status, err.message, err.type);
      else if (err instanceof DystroError) this.error(res, 400, err.message);
      else this.error(res, 500, `internal error: ${String((err as Error)?.message ?? err)}`, 'InternalServerError');
    });
  }

  private error(res: ServerResponse, status: number, message: string, type = 'BadRequestError', headers: Record<string, string> = {}): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const body = JSON.stringify({ error: { message, type, param: null, code: status } });
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers });
    res.end(body);
  }

  private json(res: ServerResponse, status: number, value: unknown): void {
    const body = JSON.stringify(value);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    const method = req.method ?? 'GET';
    if (path === '/health' && (method === 'GET' || method === 'HEAD')) {
      res.writeHead(200, { 'content-length': 0 });
      res.end();
      return;
    }
    if (path === '/v1/models' && method === 'GET') {
      this.json(res, 200, {
        object: 'list',
        data: [{ id: this.servedModelName, object: 'model', created: Math.floor(Date.now() / 1000), owned_by: 'vllm', root: this.servedModelName, parent: null, max_model_len: this.maxModelLen }],
      });
      return;
    }
    if (path === '/metrics' && method === 'GET') {
      const text = await this.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
      res.end(text);
      return;
    }
    if (path === '/v1/completions' || path === '/v1/chat/completions') {
      if (method !== 'POST') throw new HttpError(405, `${method} is not allowed on ${path}`, 'MethodNotAllowed');
      const body = await this.readJson(req);
      this.generate(path === '/v1/chat/completions' ? 'chat' : 'completion', body, req, res);
      return;
    }
    if (path.startsWith('/control/') || path === '/reset_prefix_cache') {
      await this.control(path, method, req, res);
      return;
    }
    throw new HttpError(404, `No route ${method} ${path}`);
  }

  private async readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
    const limit = this.options.maxBodyBytes ?? 16 * 1024 * 1024;
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > limit) throw new HttpError(413, `Request body larger than ${limit} bytes`);
      chunks.push(c as Buffer);
    }
    if (size === 0) return {};
    let v: unknown;
    try {
      v = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      throw new HttpError(400, 'The request body is not valid JSON');
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new HttpError(400, 'The request body must be a JSON object');
    return v as Record<string, unknown>;
  }

  // ------------------------------------------------------------ control

  private async control(path: string, method: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const token = this.options.controlToken;
    if (token === undefined) throw new HttpError(404, `No route ${method} ${path} (the control API is disabled: no control token)`);
    if (!tokenMatches(req.headers.authorization, token)) {
      this.error(res, 401, 'A valid control token is required (Authorization: Bearer <token>)', 'AuthenticationError', { 'www-authenticate': 'Bearer' });
      return;
    }
    if (path === '/control/state' && method === 'GET') {
      this.json(res, 200, this.state());
      return;
    }
    if (method !== 'POST') throw new HttpError(405, `${method} is not allowed on ${path}`, 'MethodNotAllowed');
    const body = await this.readJson(req);
    switch (path) {
      case '/control/faults':
        this.json(res, 200, { faults: this.setFaults(body as Partial<FaultSettings>) });
        return;
      case '/control/stall':
        this.stall(body.ms as number);
        this.json(res, 200, { stalled: true, ms: body.ms });
        return;
      case '/control/restart': {
        const downMs = (body.downMs as number | undefined) ?? 0;
        if (downMs === 0) {
          this.restart();
          this.json(res, 200, { incarnation: this.incarnation });
          return;
        }
        if (typeof downMs !== 'number' || !(downMs > 0) || downMs > 2 ** 31 - 1) throw new HttpError(400, `Expected \`downMs\` to be a number of milliseconds in [0, 2^31), got ${JSON.stringify(downMs)}`);
        // Answer first: going down closes this connection with the rest.
        res.on('finish', () => this.restart(downMs));
        this.json(res, 200, { incarnation: this.incarnation + 1, downMs });
        return;
      }
      case '/reset_prefix_cache':
        this.resetPrefixCache();
        this.json(res, 200, { reset: true });
        return;
      case '/control/crash': {
        const mode = (body.mode as CrashMode | undefined) ?? this.options.crashMode ?? 'close';
        if (!['close', 'hang', 'exit'].includes(mode)) throw new HttpError(400, `Expected \`mode\` to be "close", "hang" or "exit", got ${JSON.stringify(mode)}`);
        // Answer first: the crash takes this connection down with the rest.
        res.on('finish', () => void this.crash(mode));
        this.json(res, 200, { crashing: mode });
        return;
      }
    }
    throw new HttpError(404, `No route ${method} ${path}`);
  }

  // ------------------------------------------------------------ generation

  private seedOf(tenant: string): bigint {
    let s = this.seeds.get(tenant);
    if (s === undefined) {
      s = this.hasher.namespaceSeed({ model: this.servedModelName, tenant });
      if (this.seeds.size < 100_000) this.seeds.set(tenant, s);
    }
    return s;
  }

  private promptIds(kind: 'completion' | 'chat', body: Record<string, unknown>): Uint32Array {
    if (kind === 'chat') {
      if (!Array.isArray(body.messages)) throw new HttpError(400, 'Expected `messages` to be a non-empty array');
      return this.tokenizer.encode(chatPromptText(body.messages as ChatMessage[]));
    }
    let p = body.prompt;
    if (Array.isArray(p) && p.length === 1 && (typeof p[0] === 'string' || Array.isArray(p[0]))) p = p[0];
    if (typeof p === 'string') return this.tokenizer.encode(p);
    if (Array.isArray(p) && p.every((t) => typeof t === 'number')) {
      const ids = new Uint32Array(p.length);
      p.forEach((t, i) => {
        if (!Number.isInteger(t) || t < 0 || t > 0xffffffff) throw new HttpError(400, `Expected \`prompt[${i}]\` to be a token id in 0 … 2^32−1, got ${t}`);
        ids[i] = t;
      });
      return ids;
    }
    throw new HttpError(400, 'Expected `prompt` to be a string, an array of token ids, or a one-element array of either (the emulator serves one prompt per request)');
  }

  private maxTokensOf(kind: 'completion' | 'chat', body: Record<string, unknown>): number {
    const v = (kind === 'chat' ? (body.max_completion_tokens ?? body.max_tokens) : body.max_tokens) ?? this.options.defaultMaxTokens ?? 16;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new HttpError(400, `Expected \`max_tokens\` to be an integer ≥ 1, got ${JSON.stringify(v)}`);
    return v;
  }

  private generate(kind: 'completion' | 'chat', body: Record<string, unknown>, req: IncomingMessage, res: ServerResponse): void {
    if (body.model !== this.servedModelName) throw new HttpError(404, `The model \`${String(body.model)}\` does not exist.`);
    if (body.n !== undefined && body.n !== null && body.n !== 1) throw new HttpError(400, 'The emulator generates one choice per request (n = 1)');
    if (this.faults.failFraction > 0 && this.faultRng.float() < this.faults.failFraction) {
      const status = this.faults.failStatus;
      this.metrics.refused.inc({ status: String(status) });
      this.error(res, status, status === 429 ? 'Too many requests (emulated fault)' : 'Service unavailable (emulated fault)', status === 429 ? 'RateLimitError' : 'ServiceUnavailableError', { 'retry-after': '1' });
      return;
    }
    const stream = body.stream === true;
    const includeUsage = stream && (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
    const prompt = this.promptIds(kind, body);
    if (prompt.length === 0) throw new HttpError(400, 'The prompt is empty');
    const maxTokens = this.maxTokensOf(kind, body);
    if (prompt.length + maxTokens > this.maxModelLen || !this.loop.fits(prompt.length, maxTokens)) {
      throw new HttpError(
        400,
        `This model's maximum context length is ${Math.min(this.maxModelLen, this.kvBlocks * this.blockSize)} tokens. However, you requested ${prompt.length + maxTokens} tokens (${prompt.length} in the messages, ${maxTokens} in the completion). Please reduce the length of the messages or completion.`,
      );
    }
    const th = req.headers[this.options.tenantHeader ?? 'x-dystro-tenant'];
    const tenant = (Array.isArray(th) ? th[0] : th) ?? '';
    if (tenant.length > 256) throw new HttpError(400, 'The tenant header is longer than 256 characters');
    const requestSeed = typeof body.seed === 'number' && Number.isInteger(body.seed) ? body.seed : 0;
    const output = this.sampler.sample(prompt, maxTokens, requestSeed);
    const tokens = new Uint32Array(prompt.length + output.length);
    tokens.set(prompt);
    tokens.set(output, prompt.length);
    const hashes = this.hasher.hashTokens(tokens, this.seedOf(tenant));

    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${this.incarnation}-${(++this.requestCounter).toString(16)}`;
    const created = Math.floor(Date.now() / 1000);
    const model = this.servedModelName;
    const arrivalMs = this.clock.nowMs();
    let lastTokenMs = NaN;
    let hitTokens = 0;
    let done = false;
    let text = '';
    const usage = () => ({
      prompt_tokens: prompt.length,
      completion_tokens: maxTokens,
      total_tokens: prompt.length + maxTokens,
      prompt_tokens_details: { cached_tokens: hitTokens },
    });
    const chunk = (choice: Record<string, unknown>) => ({ id, object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', created, model, choices: [{ index: 0, ...choice, logprobs: null }] });

    // The client may have gone while its body was read: nothing to serve (req itself is destroyed
    // once fully read, so its socket is what tells).
    if (res.destroyed || !res.socket || res.socket.destroyed) return;
    res.setHeader('x-request-id', id);
    if (stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      res.flushHeaders();
    }
    const metrics = this.metrics;
    const clock = this.clock;
    const q: LoopRequest = {
      tokens,
      promptTokens: prompt.length,
      outputTokens: maxTokens,
      hashes,
      salt: tenant,
      onAdmitted: (hit) => {
        hitTokens = hit;
        metrics.admitted(prompt.length, hit);
      },
      onTokens: (from, to) => {
        const now = clock.nowMs();
        if (from === 0) metrics.firstToken((now - arrivalMs) / 1000, prompt.length);
        else metrics.interToken((now - lastTokenMs) / 1000 / (to - from), to - from);
        metrics.generated(to - from);
        lastTokenMs = now;
        if (!stream) {
          for (let i = from; i < to; i++) text += this.sampler.text(output[i]);
          return;
        }
        let out = '';
        if (from === 0 && kind === 'chat') out += sseData(chunk({ delta: { role: 'assistant', content: '' }, finish_reason: null }));
        for (let i = from; i < to; i++) {
          const t = this.sampler.text(output[i]);
          const finish = i === maxTokens - 1 ? 'length' : null;
          out += sseData(kind === 'chat' ? chunk({ delta: { content: t }, finish_reason: finish }) : chunk({ text: t, finish_reason: finish, stop_reason: null }));
        }
        res.write(out);
      },
      onFinish: () => {
        done = true;
        metrics.finished('length', (clock.nowMs() - arrivalMs) / 1000);
        if (stream) {
          let out = '';
          if (includeUsage) out += sseData({ id, object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', created, model, choices: [], usage: usage() });
          res.end(`${out}data: [DONE]\n\n`);
          return;
        }
        const choice =
          kind === 'chat'
            ? { index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: 'length', stop_reason: null }
            : { index: 0, text, logprobs: null, finish_reason: 'length', stop_reason: null };
        this.json(res, 200, { id, object: kind === 'chat' ? 'chat.completion' : 'text_completion', created, model, choices: [choice], usage: usage() });
      },
      onKilled: () => {
        done = true;
        // The process "died": the connection resets, as it would.
        res.destroy();
      },
    };
    const handle = this.loop.submit(q);
    res.on('close', () => {
      if (!done) {
        done = true;
        this.loop.abort(handle);
      }
    });
  }
}

/** A bound endpoint as a client would connect to it (a wildcard bind is reached on the loopback). */
function connectable(endpoint: string): string {
  return endpoint.replace('://0.0.0.0:', '://127.0.0.1:').replace('://*:', '://127.0.0.1:');
}

/** Starts an engine emulator (see EngineEmulator). */
export function startEngineEmulator(options: EngineEmulatorOptions = {}): Promise<EngineEmulator> {
  return EngineEmulator.start(options);
}
