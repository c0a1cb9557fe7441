/**
 * `dystro proxy --config …` as a process: validates with --check, refuses a bad config with exit code
 * 2 and no secret in the message, serves the OpenAI client once it prints its endpoints, and exits 0
 * on SIGTERM.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { CONTROL_TOKEN, MODEL, baseConfig, control, openai, startEngines } from './helpers.ts';
import type { Proxy } from '../../src/proxy/proxy.ts';

const MAIN = join(process.cwd(), 'src/cli/main.ts');
const dir = mkdtempSync(join(tmpdir(), 'dystro-proxy-cli-'));

function writeConfig(name: string, value: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, JSON.stringify(value));
  return path;
}

test('--check validates; a bad config exits 2 naming the field, without echoing the token', () => {
  const good = writeConfig('good.json', baseConfig([]));
  const ok = spawnSync(process.execPath, ['--import', 'tsx', MAIN, 'proxy', '--config', good, '--check'], { encoding: 'utf8' });
  assert.is(ok.status, 0, ok.stderr);
  assert.is(JSON.parse(ok.stdout).ok, true);
  const bad = writeConfig('bad.json', { ...baseConfig([]), keys: [{ key: CONTROL_TOKEN, tenant: 'a' }] });
  const r = spawnSync(process.execPath, ['--import', 'tsx', MAIN, 'proxy', '--config', bad], { encoding: 'utf8' });
  assert.is(r.status, 2);
  assert.match(r.stderr, /DYSTRO_ERR_INVALID_CONFIG/);
  assert.not.ok(r.stderr.includes(CONTROL_TOKEN));
  const none = spawnSync(process.execPath, ['--import', 'tsx', MAIN, 'proxy'], { encoding: 'utf8' });
  assert.is(none.status, 2);
  assert.match(none.stderr, /--config is required/);
});

test('dystro proxy serves the OpenAI client and the control API, and exits 0 on SIGTERM', async () => {
  const engines = await startEngines(1);
  const path = writeConfig('run.json', baseConfig(engines));
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'proxy', '--config', path], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c) => (stderr += c));
  try {
    let out = '';
    while (!out.includes('\n')) {
      const [chunk] = (await Promise.race([once(child.stdout, 'data'), once(child, 'exit').then(() => [Buffer.from('')])])) as [Buffer];
      if (chunk.length === 0) throw new Error(`the proxy exited: ${stderr}`);
      out += chunk.toString();
    }
    const started = JSON.parse(out.split('\n')[0]) as { data: string; control: string; engines: string[] };
    assert.equal(started.engines, ['e0']);
    const fake = { url: started.data, controlUrl: started.control } as Proxy;
    const c = await openai(fake).completions.create({ model: MODEL, prompt: 'hello from the command line', max_tokens: 3 });
    assert.is(c.usage?.completion_tokens, 3);
    const st = await control(fake, 'GET', '/policy');
    assert.is(st.status, 200);
    child.kill('SIGTERM');
    const [code] = await once(child, 'exit');
    assert.is(code, 0, stderr);
    assert.match(stderr, /"event":"listening"/);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await Promise.all(engines.map((e) => e.close()));
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
