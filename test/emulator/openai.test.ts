/**
 * The engine emulator through the official OpenAI client (openai 6) on 127.0.0.1, a free port: chat and
 * completions, streaming (server-sent events, `data: [DONE]`) and not, usage counts equal to the shared
 * tokenizer's, deterministic output, prompt-cache credit on a repeated prompt, vLLM-style errors.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import OpenAI from 'openai';
import { startEngineEmulator, type EngineEmulator } from '../../src/emulator/index.ts';
import { byteTokenizer, chatPromptText, gptTokenizer } from '../../src/tokenize/index.ts';
import { engineModel } from '../../src/model/roofline.ts';
import { rooflineStepModel } from '../../src/sim/engine.ts';
import { metric, watchdog } from './harness.ts';

watchdog('emulator/openai');

const MODEL = 'llama-3-8b';
// 36 cl100k tokens: two full blocks and a partial one.
const PROMPT =
  'You are a careful assistant. The quick brown fox jumps over the lazy dog while the committee reviews the quarterly report on inference fleets, prefix caches and routing policies for large language models.';

let emu: EngineEmulator;
let client: OpenAI;

test.before(async () => {
  emu = await startEngineEmulator({ timeScale: 0.02, seed: 7 });
  client = new OpenAI({ baseURL: `${emu.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 10_000 });
});

test.after(async () => {
  await emu.close();
});

test('completions, non-streaming: text, usage from the shared tokenizer, finish_reason length', async () => {
  const r = await client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 12 });
  const promptTokens = gptTokenizer().encode(PROMPT).length;
  assert.is(r.object, 'text_completion');
  assert.is(r.model, MODEL);
  assert.is(r.choices.length, 1);
  assert.is(r.choices[0].finish_reason, 'length');
  assert.ok(r.choices[0].text.length > 0);
  assert.is(gptTokenizer().encode(r.choices[0].text).length, 12, 'the text is the 12 generated tokens');
  assert.equal([r.usage?.prompt_tokens, r.usage?.completion_tokens, r.usage?.total_tokens], [promptTokens, 12, promptTokens + 12]);
});

test('completions, streaming: one chunk per token, [DONE], usage chunk on request, same text as non-streaming', async () => {
  const prompt = `${PROMPT} (streamed)`;
  const whole = await client.completions.create({ model: MODEL, prompt, max_tokens: 9 });
  const stream = await client.completions.create({ model: MODEL, prompt, max_tokens: 9, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let chunks = 0;
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const c of stream) {
    if (c.usage) usage = c.usage;
    if (c.choices.length === 0) continue;
    chunks++;
    text += c.choices[0].text;
    if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
  }
  assert.is(chunks, 9);
  assert.is(finish, 'length');
  assert.is(text, whole.choices[0].text, 'deterministic: the same prompt gives the same answer');
  assert.is(usage?.completion_tokens, 9);
  assert.is(usage?.prompt_tokens, gptTokenizer().encode(prompt).length);
});

test('raw SSE framing: data lines, blank-line separated, ending with data: [DONE]', async () => {
  const res = await fetch(`${emu.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL, prompt: 'hello world', max_tokens: 3, stream: true }),
  });
  assert.is(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  const body = await res.text();
  const events = body.split('\n\n').filter((s) => s.length > 0);
  assert.ok(events.every((e) => e.startsWith('data: ')));
  assert.is(events.at(-1), 'data: [DONE]');
  assert.is(events.length, 4);
});

test('chat, non-streaming and streaming: assistant message, usage counts the templated prompt', async () => {
  const messages = [
    { role: 'system' as const, content: 'You are terse.' },
    { role: 'user' as const, content: PROMPT },
  ];
  const promptTokens = gptTokenizer().encode(chatPromptText(messages)).length;
  const r = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 8 });
  assert.is(r.object, 'chat.completion');
  assert.is(r.choices[0].message.role, 'assistant');
  assert.is(r.choices[0].finish_reason, 'length');
  assert.equal([r.usage?.prompt_tokens, r.usage?.completion_tokens], [promptTokens, 8]);

  const stream = await client.chat.completions.create({ model: MODEL, messages, max_completion_tokens: 8, stream: true, stream_options: { include_usage: true } });
  let content = '';
  let role: string | undefined;
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const c of stream) {
    if (c.usage) usage = c.usage;
    const d = c.choices[0]?.delta;
    if (d?.role) role = d.role;
    if (d?.content) content += d.content;
  }
  assert.is(role, 'assistant');
  assert.is(content, r.choices[0].message.content, 'streamed content equals the non-streamed message');
  assert.equal([usage?.prompt_tokens, usage?.completion_tokens, usage?.total_tokens], [promptTokens, 8, promptTokens + 8]);
});

test('a repeated prompt is served from the prefix cache: cached_tokens and vLLM prefix-cache counters', async () => {
  // A prefix of its own: the other tests' prompts share PROMPT's first blocks.
  const prompt = `Repeat me exactly, please. ${PROMPT}`;
  const n = gptTokenizer().encode(prompt).length;
  const hitsBefore = await metric(emu, 'vllm:prefix_cache_hits_total', { model_name: MODEL });
  const queriesBefore = await metric(emu, 'vllm:prefix_cache_queries_total', { model_name: MODEL });
  const first = await client.completions.create({ model: MODEL, prompt, max_tokens: 4 });
  const second = await client.completions.create({ model: MODEL, prompt, max_tokens: 4 });
  assert.is(first.usage?.prompt_tokens_details?.cached_tokens, 0);
  // vLLM reuses whole blocks and recomputes the last prompt token: ⌊(n − 1)/16⌋ blocks.
  const expected = Math.floor((n - 1) / 16) * 16;
  assert.is(expected, 32, 'two full blocks of the 42-token prompt, the last token recomputed');
  assert.is(second.usage?.prompt_tokens_details?.cached_tokens, expected);
  assert.is((await metric(emu, 'vllm:prefix_cache_hits_total', { model_name: MODEL })) - hitsBefore, expected);
  assert.is((await metric(emu, 'vllm:gpu_prefix_cache_hits_total', { model_name: MODEL })) >= expected, true);
  assert.is((await metric(emu, 'vllm:prefix_cache_queries_total', { model_name: MODEL })) - queriesBefore, 2 * n);
});

test('another tenant (x-dystro-tenant) gets no cache credit for the same prompt', async () => {
  const prompt = `${PROMPT} Tenant isolation.`;
  await client.completions.create({ model: MODEL, prompt, max_tokens: 2 }, { headers: { 'x-dystro-tenant': 'acme' } });
  const other = await client.completions.create({ model: MODEL, prompt, max_tokens: 2 }, { headers: { 'x-dystro-tenant': 'globex' } });
  const same = await client.completions.create({ model: MODEL, prompt, max_tokens: 2 }, { headers: { 'x-dystro-tenant': 'acme' } });
  assert.is(other.usage?.prompt_tokens_details?.cached_tokens, 0);
  assert.ok((same.usage?.prompt_tokens_details?.cached_tokens ?? 0) > 0);
});

test('prompt as token ids; /v1/models; /health; TTFT histogram counts requests', async () => {
  const ids = Array.from(gptTokenizer().encode(PROMPT));
  const r = await client.completions.create({ model: MODEL, prompt: ids, max_tokens: 3 });
  assert.is(r.usage?.prompt_tokens, ids.length);
  const models = await client.models.list();
  assert.equal(
    models.data.map((m) => m.id),
    [MODEL],
  );
  const health = await fetch(`${emu.url}/health`);
  assert.is(health.status, 200);
  assert.is(await health.text(), '');
  assert.ok((await metric(emu, 'vllm:time_to_first_token_seconds_count', { model_name: MODEL })) >= 8);
  assert.ok((await metric(emu, 'vllm:generation_tokens_total')) > 0);
  assert.is(await metric(emu, 'vllm:num_requests_running'), 0);
  assert.is(await metric(emu, 'vllm:cache_config_info', { block_size: '16' }), 1);
});

test('errors as vLLM answers them: unknown model 404, context too long 400, bad body 400, n > 1 400', async () => {
  const err = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (e) {
      return e as InstanceType<typeof OpenAI.APIError>;
    }
    throw new Error('expected an error');
  };
  const missing = await err(client.completions.create({ model: 'gpt-nope', prompt: 'x', max_tokens: 1 }));
  assert.is(missing.status, 404);
  assert.match(missing.message, /does not exist/);
  const tooLong = await err(client.completions.create({ model: MODEL, prompt: 'x', max_tokens: emu.maxModelLen }));
  assert.is(tooLong.status, 400);
  assert.match(tooLong.message, /maximum context length/);
  const twoChoices = await err(client.completions.create({ model: MODEL, prompt: 'x', max_tokens: 1, n: 2 }));
  assert.is(twoChoices.status, 400);
  const res = await fetch(`${emu.url}/v1/completions`, { method: 'POST', body: '{not json' });
  assert.is(res.status, 400);
  assert.is(((await res.json()) as { error: { code: number } }).error.code, 400);
  assert.is((await fetch(`${emu.url}/control/state`)).status, 404, 'no control token: no control API');
});

test('a client that disconnects mid-stream is aborted: the engine drains to idle', async () => {
  const ac = new AbortController();
  const stream = await client.completions.create({ model: MODEL, prompt: `${PROMPT} long answer`, max_tokens: 3000, stream: true }, { signal: ac.signal });
  let got = 0;
  try {
    for await (const _ of stream) {
      if (++got === 3) ac.abort();
    }
  } catch {
    // aborted
  }
  assert.ok(got >= 3);
  const start = Date.now();
  while (emu.state().running > 0 && Date.now() - start < 2000) await new Promise((r) => setTimeout(r, 10));
  assert.is(emu.state().running, 0);
  assert.is(emu.state().waiting, 0);
});

test('pacing: wall time follows the roofline model × timeScale (Llama-3-70B on 4× A100, a 4,000-token prompt)', async () => {
  const timeScale = 0.1;
  const e = await startEngineEmulator({ timeScale, model: 'llama-3-70b', accelerator: 'A100', tp: 4, eventsPort: null });
  try {
    const prompt = Array.from({ length: 4000 }, (_, i) => 1000 + ((i * 7919) % 30_000));
    const out = 20;
    // Chunked prefill (2,048 tokens a step), then out − 1 decode steps, as the sim engine schedules them.
    const m = rooflineStepModel(engineModel('llama-3-70b', 'A100', 4));
    const none = new Float64Array(0);
    let modelS = m.stepS(Float64Array.of(2048), Float64Array.of(0), 1, 0, 0) + m.stepS(Float64Array.of(1952), Float64Array.of(2048), 1, 0, 0);
    for (let i = 1; i < out; i++) modelS += m.stepS(none, none, 0, 1, 4000 + i);
    const t0 = performance.now();
    const res = await fetch(`${e.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ model: 'llama-3-70b', prompt, max_tokens: out }) });
    await res.text();
    const wallMs = performance.now() - t0;
    const wantMs = modelS * 1000 * timeScale;
    assert.ok(wantMs > 100, `${wantMs} ms modeled × scale`);
    assert.ok(wallMs >= wantMs - 2 && wallMs < wantMs + 150, `wall ${wallMs.toFixed(1)} ms, model × timeScale ${wantMs.toFixed(1)} ms`);
  } finally {
    await e.close();
  }
});

test('the byte tokenizer: ids are UTF-8 bytes, output is letters and spaces', async () => {
  const e = await startEngineEmulator({ timeScale: 0.02, tokenizer: 'bytes', eventsPort: null });
  try {
    const c = new OpenAI({ baseURL: `${e.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const r = await c.completions.create({ model: MODEL, prompt: 'héllo wörld', max_tokens: 10 });
    assert.is(r.usage?.prompt_tokens, byteTokenizer().encode('héllo wörld').length);
    assert.match(r.choices[0].text, /^[a-z ]{10}$/);
    assert.is(e.eventsEndpoint, null);
  } finally {
    await e.close();
  }
});

test.run();
