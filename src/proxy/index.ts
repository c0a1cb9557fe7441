/**
 * The reference proxy's public API (DESIGN §7), kept out of the package's main entry so that embedding
 * the router does not load HTTP servers, connection pools and tokenizers: import it from this module.
 */
export { Proxy, RegistrationError, jsonLogger, silentLogger, startProxy } from './proxy.js';
export type { EngineState, Logger, ProxyOptions } from './proxy.js';
export { loadConfigFile, resolveConfig } from './config.js';
export type { EngineSpec, KeySpec, KvEventsSpec, ProxyConfig, ResolvedConfig, TenantSpec } from './config.js';
export { Allowlist, checkEngineUrl, checkHost, checkZmqEndpoint, isRefusedAddress } from './address.js';
export type { Resolver } from './address.js';
export { OutlierDetector, RetryBudget, OUTLIER_DEFAULTS } from './outlier.js';
export type { OutlierListeners, OutlierOptions, RetryBudgetOptions } from './outlier.js';
export { ProxyMetrics } from './metrics.js';
export { parseVllmLoad } from './load-scrape.js';
export { runProxy } from './cli.js';
