/**
 * Router metrics on an injected prom-client Registry (never the global one, so two routers in one
 * process do not collide): decisions by policy, pool and outcome; decision time; expected cached
 * tokens; sheds and queue waits by class; TTFT observed; policy swaps; shadow agreement and predicted
 * TTFT deltas; canary state, routed fraction and rollbacks.
 *
 * The shadow and canary gauges are read from the router's Rollout when the registry is scraped
 * (prom-client's collect callback), so the hot path pays for one counter increment at most.
 */
import client from 'prom-client';
import type { Decision } from './types.js';
import type { CanaryState, RolloutSource } from './rollout.js';

const CANARY_STATES: readonly CanaryState[] = ['idle', 'running', 'promoted', 'rolled-back', 'aborted'];

export class RouterMetrics {
  readonly decisions: client.Counter<'policy' | 'pool' | 'outcome' | 'slo_class'>;
  readonly decisionSeconds: client.Histogram<'policy'>;
  readonly cachedTokens: client.Histogram<'policy'>;
  readonly sheds: client.Counter<'slo_class' | 'reason'>;
  readonly ttft: client.Histogram<string>;
  readonly finished: client.Counter<'outcome'>;
  readonly policySwaps: client.Counter<'policy'>;
  readonly shadowDecisions: client.Counter<'shadow' | 'outcome'>;
  readonly shadowAgreement: client.Gauge<'shadow'>;
  readonly shadowTtftDeltaMs: client.Gauge<'shadow' | 'stat'>;
  readonly canaryState: client.Gauge<'policy' | 'state'>;
  readonly canaryRoutedFraction: client.Gauge<'policy'>;
  readonly canaryRollbacks: client.Counter<'policy' | 'metric'>;
  private rollout: RolloutSource | null = null;

  constructor(readonly registry: client.Registry, prefix = 'dystro_') {
    const registers = [registry];
    this.decisions = new client.Counter({ name: `${prefix}decisions_total`, help: 'Routing decisions by policy, pool and outcome', labelNames: ['policy', 'pool', 'outcome', 'slo_class'], registers });
    this.decisionSeconds = new client.Histogram({ name: `${prefix}decision_seconds`, help: 'Time to make one routing decision', labelNames: ['policy'], buckets: [2e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2], registers });
    this.cachedTokens = new client.Histogram({ name: `${prefix}expected_cached_tokens`, help: 'Prompt tokens expected to hit the chosen replica cache', labelNames: ['policy'], buckets: [0, 16, 128, 512, 2048, 8192, 32768, 131072], registers });
    this.sheds = new client.Counter({ name: `${prefix}sheds_total`, help: 'Requests shed by SLO class and reason', labelNames: ['slo_class', 'reason'], registers });
    this.ttft = new client.Histogram({ name: `${prefix}observed_ttft_seconds`, help: 'Observed time to first token (router clock)', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10], registers });
    this.finished = new client.Counter({ name: `${prefix}requests_finished_total`, help: 'Routed requests finished by outcome', labelNames: ['outcome'], registers });
    this.policySwaps = new client.Counter({ name: `${prefix}policy_swaps_total`, help: 'Live policy swaps', labelNames: ['policy'], registers });
    const metrics = this;
    this.shadowDecisions = new client.Counter({ name: `${prefix}shadow_decisions_total`, help: 'Decisions the shadow policy evaluated, by whether it picked the live pick', labelNames: ['shadow', 'outcome'], registers });
    this.shadowAgreement = new client.Gauge({
      name: `${prefix}shadow_agreement_ratio`,
      help: 'Share of decisions where the shadow policy picked the same replica as the live one',
      labelNames: ['shadow'],
      registers,
      collect() {
        this.reset();
        const r = metrics.rollout?.shadowReport();
        if (r?.active && Number.isFinite(r.agreementRate)) this.set({ shadow: r.policy! }, r.agreementRate);
      },
    });
    this.shadowTtftDeltaMs = new client.Gauge({
      name: `${prefix}shadow_predicted_ttft_delta_ms`,
      help: 'Predicted TTFT of the shadow pick minus the live pick, ms (stat: mean, p50, p90)',
      labelNames: ['shadow', 'stat'],
      registers,
      collect() {
        this.reset();
        const r = metrics.rollout?.shadowReport();
        if (!r?.active || r.deltaMs.samples === 0) return;
        for (const stat of ['mean', 'p50', 'p90'] as const) this.set({ shadow: r.policy!, stat }, r.deltaMs[stat]);
      },
    });
    this.canaryState = new client.Gauge({
      name: `${prefix}canary_state`,
      help: 'Canary state: 1 for the current state of the current or last canary policy',
      labelNames: ['policy', 'state'],
      registers,
      collect() {
        this.reset();
        const st = metrics.rollout?.canaryStatus();
        if (!st) return;
        for (const state of CANARY_STATES) this.set({ policy: st.policy ?? '', state }, st.state === state ? 1 : 0);
      },
    });
    this.canaryRoutedFraction = new client.Gauge({
      name: `${prefix}canary_routed_fraction`,
      help: 'Share of routed requests the running canary routed',
      labelNames: ['policy'],
      registers,
      collect() {
        this.reset();
        const st = metrics.rollout?.canaryStatus();
        if (st?.state === 'running') this.set({ policy: st.policy! }, Number.isFinite(st.routedFraction) ? st.routedFraction : 0);
      },
    });
    this.canaryRollbacks = new client.Counter({ name: `${prefix}canary_rollbacks_total`, help: 'Canaries rolled back automatically, by the guard that tripped', labelNames: ['policy', 'metric'], registers });
  }

  /** The router calls this once: the shadow and canary gauges read it at scrape time. */
  attachRollout(source: RolloutSource): void {
    this.rollout = source;
  }

  observeDecision(d: Decision, seconds: number): void {
    this.decisions.inc({ policy: d.policy, pool: d.kind === 'route' ? d.pool.id : '', outcome: d.kind, slo_class: d.sloClass });
    this.decisionSeconds.observe({ policy: d.policy }, seconds);
    if (d.kind === 'route') this.cachedTokens.observe({ policy: d.policy }, d.cachedTokens);
    if (d.kind === 'shed') this.sheds.inc({ slo_class: d.sloClass, reason: d.reason });
  }
}
