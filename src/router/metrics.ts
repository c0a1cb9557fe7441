/**
 * Router metrics on an injected prom-client Registry (never the global one, so two routers in one
 * process do not collide): decisions by policy, pool and outcome; decision time; expected cached
 * tokens; sheds and queue waits by class; TTFT observed; policy swaps.
 */
import client from 'prom-client';
import type { Decision } from './types.js';

export class RouterMetrics {
  readonly decisions: client.Counter<'policy' | 'pool' | 'outcome' | 'slo_class'>;
  readonly decisionSeconds: client.Histogram<'policy'>;
  readonly cachedTokens: client.Histogram<'policy'>;
  readonly sheds: client.Counter<'slo_class' | 'reason'>;
  readonly ttft: client.Histogram<string>;
  readonly finished: client.Counter<'outcome'>;
  readonly policySwaps: client.Counter<'policy'>;

  constructor(readonly registry: client.Registry, prefix = 'dystro_') {
    const registers = [registry];
    this.decisions = new client.Counter({ name: `${prefix}decisions_total`, help: 'Routing decisions by policy, pool and outcome', labelNames: ['policy', 'pool', 'outcome', 'slo_class'], registers });
    this.decisionSeconds = new client.Histogram({ name: `${prefix}decision_seconds`, help: 'Time to make one routing decision', labelNames: ['policy'], buckets: [2e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2], registers });
    this.cachedTokens = new client.Histogram({ name: `${prefix}expected_cached_tokens`, help: 'Prompt tokens expected to hit the chosen replica cache', labelNames: ['policy'], buckets: [0, 16, 128, 512, 2048, 8192, 32768, 131072], registers });
    this.sheds = new client.Counter({ name: `${prefix}sheds_total`, help: 'Requests shed by SLO class and reason', labelNames: ['slo_class', 'reason'], registers });
    this.ttft = new client.Histogram({ name: `${prefix}observed_ttft_seconds`, help: 'Observed time to first token (router clock)', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10], registers });
    this.finished = new client.Counter({ name: `${prefix}requests_finished_total`, help: 'Routed requests finished by outcome', labelNames: ['outcome'], registers });
    this.policySwaps = new client.Counter({ name: `${prefix}policy_swaps_total`, help: 'Live policy swaps', labelNames: ['policy'], registers });
  }

  observeDecision(d: Decision, seconds: number): void {
    this.decisions.inc({ policy: d.policy, pool: d.kind === 'route' ? d.pool.id : '', outcome: d.kind, slo_class: d.sloClass });
    this.decisionSeconds.observe({ policy: d.policy }, seconds);
    if (d.kind === 'route') this.cachedTokens.observe({ policy: d.policy }, d.cachedTokens);
    if (d.kind === 'shed') this.sheds.inc({ slo_class: d.sloClass, reason: d.reason });
  }
}
