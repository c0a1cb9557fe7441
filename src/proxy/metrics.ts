/**
 * The proxy's own metrics, on the same prom-client registry as the router's (RouterMetrics) and the
 * KV event ingest's, so one `/metrics` scrape shows the whole path. Labels are bounded: endpoint,
 * status code, replica id (the fleet), outcome names; never a tenant, a key or anything from a prompt.
 */
import client from 'prom-client';

export class ProxyMetrics {
  readonly requests: client.Counter<'endpoint' | 'code'>;
  readonly requestSeconds: client.Histogram<'endpoint'>;
  readonly active: client.Gauge;
  readonly attempts: client.Counter<'replica' | 'outcome'>;
  readonly retries: client.Counter<'outcome'>;
  readonly ejections: client.Counter<'replica'>;
  readonly ejected: client.Gauge<'replica'>;
  readonly panic: client.Gauge<'model'>;
  readonly scrapes: client.Counter<'replica' | 'outcome'>;
  readonly authFailures: client.Counter<'plane'>;
  readonly control: client.Counter<'action' | 'code'>;
  readonly tokenizeSeconds: client.Histogram;

  constructor(registry: client.Registry, prefix = 'dystro_proxy_') {
    const registers = [registry];
    this.requests = new client.Counter({ name: `${prefix}requests_total`, help: 'Requests answered, by endpoint and status code', labelNames: ['endpoint', 'code'], registers });
    this.requestSeconds = new client.Histogram({ name: `${prefix}request_seconds`, help: 'Time from request to the end of the response', labelNames: ['endpoint'], buckets: [0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers });
    this.active = new client.Gauge({ name: `${prefix}active_requests`, help: 'Requests being served (body read, not yet answered)', registers });
    this.attempts = new client.Counter({ name: `${prefix}upstream_attempts_total`, help: 'Engine attempts by outcome (ok, http_4xx, http_429, http_5xx, connect, reset, timeout, cancelled, midstream)', labelNames: ['replica', 'outcome'], registers });
    this.retries = new client.Counter({ name: `${prefix}retries_total`, help: 'Retry decisions: retried, or why not (budget, body_too_large, max_retries, client_gone, no_replica)', labelNames: ['outcome'], registers });
    this.ejections = new client.Counter({ name: `${prefix}ejections_total`, help: 'Outlier ejections', labelNames: ['replica'], registers });
    this.ejected = new client.Gauge({ name: `${prefix}ejected`, help: '1 while a replica is ejected and the ejection applies (its model not in panic)', labelNames: ['replica'], registers });
    this.panic = new client.Gauge({ name: `${prefix}panic`, help: '1 while too few of a model\'s replicas are un-ejected and ejection is ignored', labelNames: ['model'], registers });
    this.scrapes = new client.Counter({ name: `${prefix}load_scrapes_total`, help: 'Engine /metrics scrapes by outcome', labelNames: ['replica', 'outcome'], registers });
    this.authFailures = new client.Counter({ name: `${prefix}auth_failures_total`, help: 'Requests refused for a missing or wrong credential, by plane (data, control)', labelNames: ['plane'], registers });
    this.control = new client.Counter({ name: `${prefix}control_requests_total`, help: 'Control API requests by action and status code', labelNames: ['action', 'code'], registers });
    this.tokenizeSeconds = new client.Histogram({ name: `${prefix}tokenize_seconds`, help: 'Time to tokenize a prompt', buckets: [1e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.02, 0.1], registers });
  }
}
