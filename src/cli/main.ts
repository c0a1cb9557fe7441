#!/usr/bin/env node
/**
 * The `dystro` command.
 *   dystro backends            which kernel backends load here, which one `auto` picks, and why
 *   dystro hash [--block N] [--model M] [--tenant T] [--lora L] <text…>
 *                              block hashes of a text prompt (byte mode), one per line, hex
 *   dystro simulate | compare | sweep [options]
 *                              the fleet simulator (sim-commands.ts): one run, a candidate policy
 *                              against baselines with a deploy verdict, policies × load levels
 *   dystro --version
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { availableBackends, describeSelection, loadKernelsSync } from '../kernels/select.js';
import { PrefixHasher } from '../hashing/prefix.js';
import { DystroError } from '../errors.js';
import { SIM_USAGE, compareCommand, simulateCommand, sweepCommand } from './sim-commands.js';

const USAGE = `usage: dystro <command> [options]
commands:
  backends                     list the kernel backends, which load, and the one chosen
  hash [options] <text…>       print the prefix block hashes of a text prompt (UTF-8 byte mode)
      --block N                block size in bytes (default 16)
      --model M --lora L --tenant T   namespace of the chain (model defaults to "default")
      --backend auto|wasm|native|js
  engine [options]             an engine emulator: OpenAI API, vLLM metrics and KV events (--help for options)
  proxy --config FILE          the reference proxy embedding the router (--help for options)
  demo [options]               engines in two pools, the proxy, a trace replay and a live policy swap
  --version                    print the version
${SIM_USAGE}`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

export function main(argv: string[]): number | Promise<number> {
  const [command, ...rest] = argv;
  if (command === '--version' || command === '-v') {
    console.log(version());
    return 0;
  }
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    console.log(USAGE);
    return command === undefined ? 1 : 0;
  }
  if (command === 'backends') {
    const { attempts } = availableBackends();
    for (const a of attempts) console.log(`${a.backend.padEnd(7)} ${a.loaded ? 'loaded' : `unavailable: ${a.reason}`}`);
    console.log(describeSelection(loadKernelsSync()));
    return 0;
  }
  if (command === 'engine') return import('./engine.js').then((m) => m.runEngine(rest));
  if (command === 'proxy') return import('../proxy/cli.js').then((m) => m.runProxy(rest));
  if (command === 'demo') return import('./demo.js').then((m) => m.runDemo(rest));
  if (command === 'hash') {
    const { values, positionals } = parseArgs({
      args: rest,
      allowPositionals: true,
      options: {
        block: { type: 'string', default: '16' },
        model: { type: 'string', default: 'default' },
        lora: { type: 'string', default: '' },
        tenant: { type: 'string', default: '' },
        backend: { type: 'string' },
      },
    });
    const sel = loadKernelsSync({ backend: values.backend as never });
    const hasher = new PrefixHasher(sel.kernels, { blockSize: Number(values.block) });
    const seed = hasher.namespaceSeed({ model: values.model!, lora: values.lora, tenant: values.tenant });
    for (const h of hasher.hashText(positionals.join(' '), seed)) console.log(h.toString(16).padStart(16, '0'));
    return 0;
  }
  if (command === 'simulate') return simulateCommand(rest);
  if (command === 'compare') return compareCommand(rest);
  if (command === 'sweep') return sweepCommand(rest);
  console.error(`dystro: unknown command "${command}"\n${USAGE}`);
  return 2;
}

function onError(err: unknown): void {
  if (err instanceof DystroError) {
    console.error(`dystro: ${err.code}: ${err.message}`);
    process.exitCode = 2;
  } else {
    throw err;
  }
}

try {
  const code = main(process.argv.slice(2));
  if (typeof code === 'number') process.exitCode = code;
  else
    code.then(
      (c) => {
        process.exitCode = c;
      },
      (err: unknown) => {
        try {
          onError(err);
        } catch (e) {
          console.error(e);
          process.exitCode = 1;
        }
      },
    );
} catch (err) {
  onError(err);
}
