/**
 * The engine emulator's /metrics, under vLLM's metric names (vllm/v1/metrics/loggers.py, V1 engine),
 * with vLLM's labels (model_name, engine) and histogram buckets, so a scraper or a proxy written for
 * vLLM reads the emulator unchanged. Both the current names and the deprecated ones still published
 * by 0.9–0.10 are exported:
 *
 *   vllm:num_requests_running / vllm:num_requests_waiting          gauges, requests
 *   vllm:kv_cache_usage_perc (vllm:gpu_cache_usage_perc)           gauge, fraction 0 … 1 of KV blocks in use
 *   vllm:prefix_cache_queries_total (vllm:gpu_prefix_cache_…)      counter, prompt tokens looked up
 *   vllm:prefix_cache_hits_total (vllm:gpu_prefix_cache_…)         counter, prompt tokens found cached
 *   vllm:prompt_tokens_total / vllm:generation_tokens_total        counters, tokens
 *   vllm:num_preemptions_total                                     counter
 *   vllm:request_success_total{finished_reason}                    counter
 *   vllm:time_to_first_token_seconds, vllm:time_per_output_token_seconds,
 *   vllm:e2e_request_latency_seconds                               histograms, wall seconds
 *   vllm:cache_config_info{block_size, num_gpu_blocks, …}          gauge = 1
 *
 * Times are wall-clock seconds, as a client measures them: with a timeScale other than 1, divide by it
 * for the modeled time. A restart starts every counter again from 0, as a new vLLM process would.
 * Emulator-only series are named dystro_emulator_*.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { EngineLoop } from './engine-loop.js';
import type { KvPublisher } from './kv-publisher.js';

const TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0];
const TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];
const E2E_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0];

export interface EmulatorMetricsSource {
  loop(): EngineLoop;
  publisher(): KvPublisher | null;
  incarnation(): number;
}

export class EmulatorMetrics {
  readonly registry: Registry;
  private readonly labels: { model_name: string; engine: string };
  readonly prefixQueries: Counter<'model_name' | 'engine'>[];
  readonly prefixHits: Counter<'model_name' | 'engine'>[];
  readonly promptTokens: Counter<'model_name' | 'engine'>;
  readonly generationTokens: Counter<'model_name' | 'engine'>;
  readonly preemptions: Counter<'model_name' | 'engine'>;
  readonly success: Counter<'model_name' | 'engine' | 'finished_reason'>;
  readonly ttft: Histogram<'model_name' | 'engine'>;
  readonly tpot: Histogram<'model_name' | 'engine'>;
  readonly e2e: Histogram<'model_name' | 'engine'>;
  readonly refused: Counter<'status'>;

  constructor(modelName: string, blockSize: number, kvBlocks: number, source: EmulatorMetricsSource, registry = new Registry()) {
    this.registry = registry;
    const registers = [registry];
    const labelNames = ['model_name', 'engine'] as const;
    const labels = (this.labels = { model_name: modelName, engine: '0' });
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.set(labels, read());
        },
      });
    gauge('vllm:num_requests_running', 'Number of requests in model execution batches.', () => source.loop().load().running);
    gauge('vllm:num_requests_waiting', 'Number of requests waiting to be processed.', () => source.loop().load().waiting);
    gauge('vllm:kv_cache_usage_perc', 'KV-cache usage. 1 means 100 percent usage.', () => source.loop().load().kvUsage);
    gauge('vllm:gpu_cache_usage_perc', 'GPU KV-cache usage. 1 means 100 percent usage. DEPRECATED: Use vllm:kv_cache_usage_perc instead.', () => source.loop().load().kvUsage);
    const counter = (name: string, help: string) => new Counter({ name, help, labelNames, registers });
    this.prefixQueries = [
      counter('vllm:prefix_cache_queries_total', 'Prefix cache queries, in terms of number of queried tokens.'),
      counter('vllm:gpu_prefix_cache_queries_total', 'GPU prefix cache queries, in terms of number of queried tokens. DEPRECATED: Use vllm:prefix_cache_queries instead.'),
    ];
    this.prefixHits = [
      counter('vllm:prefix_cache_hits_total', 'Prefix cache hits, in terms of number of cached tokens.'),
      counter('vllm:gpu_prefix_cache_hits_total', 'GPU prefix cache hits, in terms of number of cached tokens. DEPRECATED: Use vllm:prefix_cache_hits instead.'),
    ];
    this.promptTokens = counter('vllm:prompt_tokens_total', 'Number of prefill tokens processed.');
    this.generationTokens = counter('vllm:generation_tokens_total', 'Number of generation tokens processed.');
    this.preemptions = counter('vllm:num_preemptions_total', 'Cumulative number of preemption from the engine.');
    this.success = new Counter({ name: 'vllm:request_success_total', help: 'Count of successfully processed requests.', labelNames: [...labelNames, 'finished_reason'], registers });
    this.ttft = new Histogram({ name: 'vllm:time_to_first_token_seconds', help: 'Histogram of time to first token in seconds.', buckets: TTFT_BUCKETS, labelNames, registers });
    this.tpot = new Histogram({ name: 'vllm:time_per_output_token_seconds', help: 'Histogram of time per output token in seconds.', buckets: TPOT_BUCKETS, labelNames, registers });
    this.e2e = new Histogram({ name: 'vllm:e2e_request_latency_seconds', help: 'Histogram of e2e request latency in seconds.', buckets: E2E_BUCKETS, labelNames, registers });
    const info = new Gauge({
      name: 'vllm:cache_config_info',
      help: 'Information of the LLMEngine CacheConfig',
      labelNames: ['block_size', 'num_gpu_blocks', 'enable_prefix_caching', 'engine'],
      registers,
    });
    info.set({ block_size: String(blockSize), num_gpu_blocks: String(kvBlocks), enable_prefix_caching: 'True', engine: '0' }, 1);
    this.refused = new Counter({ name: 'dystro_emulator_refused_total', help: 'Requests refused by the failure fault knob, by HTTP status', labelNames: ['status'], registers });
    const pub = (read: (p: KvPublisher) => number) => () => {
      const p = source.publisher();
      return p ? read(p) : 0;
    };
    const plain = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    plain('dystro_emulator_kv_batches_published', 'KV event batches given a sequence number in this incarnation (sent or dropped)', pub((p) => p.stats.published));
    plain('dystro_emulator_kv_batches_dropped', 'KV event batches kept from PUB by the drop fault knob', pub((p) => p.stats.dropped));
    plain('dystro_emulator_kv_replays', 'Replay requests served by the ROUTER socket', pub((p) => p.stats.replays));
    plain('dystro_emulator_kv_next_seq', 'Sequence number of the next KV event batch', pub((p) => p.seq));
    plain('dystro_emulator_incarnation', 'Engine incarnation (1 at start, +1 per restart)', () => source.incarnation());
    plain('dystro_emulator_cached_blocks', 'Blocks in the prefix cache', () => source.loop().load().cachedBlocks);
  }

  admitted(promptTokens: number, hitTokens: number): void {
    for (const c of this.prefixQueries) c.inc(this.labels, promptTokens);
    for (const c of this.prefixHits) c.inc(this.labels, hitTokens);
  }

  firstToken(ttftS: number, promptTokens: number): void {
    this.ttft.observe(this.labels, ttftS);
    this.promptTokens.inc(this.labels, promptTokens);
  }

  generated(n: number): void {
    this.generationTokens.inc(this.labels, n);
  }

  /** `n` tokens that arrived together after the previous ones, `perTokenS` apart on average. */
  interToken(perTokenS: number, n: number): void {
    for (let i = 0; i < n; i++) this.tpot.observe(this.labels, perTokenS);
  }

  finished(reason: 'length' | 'stop' | 'abort', e2eS: number): void {
    this.success.inc({ ...this.labels, finished_reason: reason });
    this.e2e.observe(this.labels, e2eS);
  }

  preempted(n: number): void {
    this.preemptions.inc(this.labels, n);
  }

  /** A new incarnation: counters and histograms from 0 (gauges read live state). */
  reset(): void {
    for (const m of [...this.prefixQueries, ...this.prefixHits, this.promptTokens, this.generationTokens, this.preemptions, this.success, this.ttft, this.tpot, this.e2e]) m.reset();
  }
}
