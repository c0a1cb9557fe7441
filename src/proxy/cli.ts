/**
 * `dystro proxy --config proxy.json`: runs the reference proxy until SIGINT or SIGTERM. Prints one JSON
 * line on stdout once both servers listen ({ data, control, engines, policy }), so a script can wait
 * for it and read the ports it chose (port 0 = a free one); logs go to stderr as JSON lines.
 */
import { parseArgs } from 'node:util';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { DystroError } from '../errors.js';
import { loadConfigFile } from './config.js';
import { jsonLogger, startProxy } from './proxy.js';

export const PROXY_USAGE = `usage: dystro proxy --config proxy.json [options]
  an OpenAI-compatible proxy that routes with the dystro router (README "Reference proxy")
  --config FILE          the configuration (JSON): pools, engines, tenants, keys, policy, ports, control token
  --port P               override listen.port (data plane: /v1/completions, /v1/chat/completions, /v1/models, /metrics)
  --control-port P       override control.port (control API, bearer token)
  --host H               override listen.host
  --check                validate the configuration and exit (0 when valid)`;

function port(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new DystroError('DYSTRO_ERR_INVALID_CONFIG', `Expected \`--${what}\` to be a port in 0 … 65535, got \`${v}\``);
  return n;
}

/** Resolves to 0 once listening (the servers keep the process alive), 2 for bad arguments or config. */
export async function runProxy(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        config: { type: 'string', short: 'c' },
        port: { type: 'string' },
        'control-port': { type: 'string' },
        host: { type: 'string' },
        check: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    console.error(`dystro proxy: ${(err as Error).message}\n${PROXY_USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(PROXY_USAGE);
    return 0;
  }
  if (values.config === undefined) {
    console.error(`dystro proxy: --config is required\n${PROXY_USAGE}`);
    return 2;
  }
  const log = jsonLogger();
  let proxy;
  try {
    const config = loadConfigFile(values.config);
    const p = port(values.port, 'port');
    const cp = port(values['control-port'], 'control-port');
    if (p !== undefined) config.listen.port = p;
    if (cp !== undefined) config.control.port = cp;
    if (values.host !== undefined) config.listen.host = values.host;
    if (values.check) {
      console.log(JSON.stringify({ ok: true, engines: config.engines.length, tenants: config.tenants.size, keys: config.keys.length, policy: config.policy.name }));
      return 0;
    }
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    proxy = await startProxy(config, { registry, logger: log });
  } catch (err) {
    console.error(`dystro proxy: ${err instanceof DystroError ? `${err.code}: ${err.message}` : String((err as Error)?.message ?? err)}`);
    return 2;
  }
  console.log(JSON.stringify({ data: proxy.url, control: proxy.controlUrl, engines: proxy.engineIds(), policy: proxy.router.policyId }));
  const stop = (signal: string) => {
    log.info('stopping', { signal });
    proxy.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  return 0;
}
