/**
 * `dystro engine`: runs an engine emulator (src/emulator/) until SIGINT or SIGTERM, or until a crash
 * fault ends it. Prints one JSON line on start with its endpoints, so a script can wait for it and read
 * the ports it chose (port 0 = a free one).
 */
import { parseArgs } from 'node:util';
import { DystroError } from '../errors.js';
import { startEngineEmulator, type CrashMode, type EngineEmulatorOptions } from '../emulator/index.js';
import type { EventEncoding, HashFormat } from '../emulator/kv-publisher.js';

export const ENGINE_USAGE = `usage: dystro engine [options]
  an OpenAI-compatible vLLM emulator paced by the performance model, with a prefix cache, KV events and faults
  --port P                 HTTP port (default 8000, vLLM's; 0 = a free one)
  --host H                 HTTP bind address (default 127.0.0.1; 0.0.0.0 for every interface)
  --events-port E          KV events ZeroMQ PUB port (default 5557, vLLM's)
  --replay-port R          KV events replay ROUTER port (default 5558)
  --no-events              publish no KV events
  --topic T                KV events topic (default "")
  --model M                performance model: llama-3-8b (default), llama-3-70b
  --served-model-name N    model name clients send (default: --model)
  --accelerator A          H100 (default), A100, H200, B200, "TPU v5e", …
  --tp N                   tensor parallelism (default 1)
  --time-scale X           wall seconds per modeled second (default 1; 0.01 = 100x faster)
  --encoding array|map     KV event encoding (default array)
  --hash-format int|bytes  block hashes on the wire (default int)
  --tokenizer gpt|bytes    cl100k_base BPE (default) or UTF-8 bytes
  --seed N                 seed of the synthetic output and fault draws (default 0)
  --kv-blocks N            KV cache capacity in 16-token blocks (default: the model's)
  --block-size N           tokens per block (default 16)
  --max-num-seqs N         running requests at most (default 256)
  --max-num-batched-tokens N  tokens per step (default 2048)
  --max-model-len N        longest prompt + completion (default: the KV capacity)
  --default-max-tokens N   max_tokens when a request has none (default 16)
  --control-token T        enables the control API (also DYSTRO_CONTROL_TOKEN)
  --crash-mode close|hang|exit   what a crash does (default exit)
  --fail-fraction F --fail-status 429|503 --slow F --drop-fraction F   faults from the start`;

function num(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new DystroError('DYSTRO_ERR_INVALID_CONFIG', `Expected \`--${what}\` to be a number, got \`${v}\``);
  return n;
}

function describe(err: unknown): string {
  return err instanceof DystroError ? `${err.code}: ${err.message}` : String((err as Error)?.message ?? err);
}

/**
 * Parses the arguments and starts the emulator; the open sockets keep the process alive until it
 * closes. Resolves to the exit code so far: 0 once listening, 2 for bad arguments or a failed start
 * (printed without a stack). A later crash in "close" mode sets exit code 1.
 */
export async function runEngine(args: string[]): Promise<number> {
  try {
    return await start(args);
  } catch (err) {
    console.error(`dystro engine: ${describe(err)}\n${ENGINE_USAGE}`);
    return 2;
  }
}

async function start(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      port: { type: 'string', default: '8000' },
      host: { type: 'string', default: '127.0.0.1' },
      'events-port': { type: 'string', default: '5557' },
      'replay-port': { type: 'string', default: '5558' },
      'no-events': { type: 'boolean', default: false },
      topic: { type: 'string', default: '' },
      model: { type: 'string', default: 'llama-3-8b' },
      'served-model-name': { type: 'string' },
      accelerator: { type: 'string', default: 'H100' },
      tp: { type: 'string', default: '1' },
      'time-scale': { type: 'string', default: '1' },
      encoding: { type: 'string', default: 'array' },
      'hash-format': { type: 'string', default: 'int' },
      tokenizer: { type: 'string', default: 'gpt' },
      seed: { type: 'string', default: '0' },
      'kv-blocks': { type: 'string' },
      'block-size': { type: 'string' },
      'max-num-seqs': { type: 'string' },
      'max-num-batched-tokens': { type: 'string' },
      'max-model-len': { type: 'string' },
      'default-max-tokens': { type: 'string' },
      'control-token': { type: 'string' },
      'crash-mode': { type: 'string', default: 'exit' },
      'fail-fraction': { type: 'string' },
      'fail-status': { type: 'string' },
      slow: { type: 'string' },
      'drop-fraction': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(ENGINE_USAGE);
    return 0;
  }
  const noEvents = values['no-events'];
  const faults: EngineEmulatorOptions['faults'] = {};
  if (values['fail-fraction'] !== undefined) faults.failFraction = num(values['fail-fraction'], 'fail-fraction');
  if (values['fail-status'] !== undefined) faults.failStatus = num(values['fail-status'], 'fail-status') as 429 | 503;
  if (values.slow !== undefined) faults.slowFactor = num(values.slow, 'slow');
  if (values['drop-fraction'] !== undefined) faults.dropFraction = num(values['drop-fraction'], 'drop-fraction');
  const options: EngineEmulatorOptions = {
    port: num(values.port, 'port'),
    host: values.host,
    eventsPort: noEvents ? null : num(values['events-port'], 'events-port'),
    replayPort: noEvents ? null : num(values['replay-port'], 'replay-port'),
    topic: values.topic,
    model: values.model,
    servedModelName: values['served-model-name'],
    accelerator: values.accelerator,
    tp: num(values.tp, 'tp'),
    timeScale: num(values['time-scale'], 'time-scale'),
    encoding: values.encoding as EventEncoding,
    hashFormat: values['hash-format'] as HashFormat,
    tokenizer: values.tokenizer as 'gpt' | 'bytes',
    seed: num(values.seed, 'seed'),
    kvBlocks: num(values['kv-blocks'], 'kv-blocks'),
    blockSize: num(values['block-size'], 'block-size'),
    maxNumSeqs: num(values['max-num-seqs'], 'max-num-seqs'),
    maxBatchedTokens: num(values['max-num-batched-tokens'], 'max-num-batched-tokens'),
    maxModelLen: num(values['max-model-len'], 'max-model-len'),
    defaultMaxTokens: num(values['default-max-tokens'], 'default-max-tokens'),
    controlToken: values['control-token'] ?? process.env.DYSTRO_CONTROL_TOKEN,
    crashMode: values['crash-mode'] as CrashMode,
    faults,
  };
  let e;
  try {
    e = await startEngineEmulator(options);
  } catch (err) {
    console.error(`dystro engine: ${describe(err)}`);
    return 2;
  }
  console.log(
    JSON.stringify({
      engine: 'dystro-emulator',
      url: e.url,
      model: e.servedModelName,
      events: e.eventsEndpoint,
      replay: e.replayEndpoint,
      kvBlocks: e.kvBlocks,
      blockSize: e.blockSize,
      timeScale: e.timeScale,
      tokenizer: e.tokenizer.name,
      control: options.controlToken !== undefined,
    }),
  );
  const stop = () => void e.close();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  void e.closed.then(() => {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    // A crash in "close" mode ends the process with a failure, as a dying engine would.
    if (e.state().crashed) process.exitCode = 1;
  });
  return 0;
}
