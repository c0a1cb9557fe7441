/** Registers every built-in policy in the default registry. */
import { defaultRegistry } from './registry.js';
import { leastRequest, p2c, random, roundRobin } from './baseline.js';
import { predictedTtft } from './predicted-ttft.js';
import { consistentHash } from './consistent-hash.js';
import { cacheAware } from './cache-aware.js';
import { kvCost } from './kv-cost.js';
import { weightedScorers } from './weighted-scorers.js';

for (const f of [roundRobin, random, leastRequest, p2c, predictedTtft, consistentHash, cacheAware, kvCost, weightedScorers]) defaultRegistry.register(f);

export { defaultRegistry };
