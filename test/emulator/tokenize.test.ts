/**
 * The shared tokenizer interface (src/tokenize): round trips, the chat template, the byte tokenizer, and
 * the synthetic output vocabulary built on them.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { byteTokenizer, chatPromptText, gptTokenizer, tokenizerByName } from '../../src/tokenize/index.ts';
import { OutputSampler } from '../../src/emulator/output.ts';
import { DystroError } from '../../src/errors.ts';

test('gptTokenizer: cl100k_base ids (golden), round trip, special-token text stays text', () => {
  const g = gptTokenizer();
  assert.is(g.name, 'cl100k_base');
  assert.is(g, gptTokenizer(), 'one instance');
  // cl100k_base: "Hello" 9906, " world" 1917 (tiktoken's published ids).
  assert.equal(Array.from(g.encode('Hello world')), [9906, 1917]);
  const text = 'Prefix caches ♥ routers <|endoftext|> done';
  const ids = g.encode(text);
  assert.instance(ids, Uint32Array);
  assert.is(g.decode(ids), text);
  assert.not.ok(ids.includes(100257), 'the <|endoftext|> special id never appears');
  assert.is(g.decode([9906, 4_000_000]), 'Hello\ufffd', 'an unknown id decodes as U+FFFD');
});

test('byteTokenizer: UTF-8 bytes', () => {
  const b = byteTokenizer();
  assert.equal(Array.from(b.encode('aé')), [0x61, 0xc3, 0xa9]);
  assert.is(b.decode(b.encode('héllo wörld ✓')), 'héllo wörld ✓');
  assert.is(tokenizerByName('bytes').name, 'bytes');
  assert.throws(() => tokenizerByName('sentencepiece'), (e: unknown) => e instanceof DystroError && e.code === 'DYSTRO_ERR_INVALID_CONFIG');
});

test('chatPromptText: the documented template; an earlier turn is a prefix of the next', () => {
  const turn1 = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: [{ type: 'text', text: 'Hi ' }, { type: 'text', text: 'there' }] },
  ];
  assert.is(chatPromptText(turn1), '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n');
  const turn2 = [...turn1, { role: 'assistant', content: 'Hello.' }, { role: 'user', content: 'More?' }];
  const p1 = chatPromptText(turn1);
  assert.ok(chatPromptText(turn2).startsWith(p1.slice(0, p1.lastIndexOf('<|im_start|>assistant'))));
  assert.throws(() => chatPromptText([]), (e: unknown) => e instanceof DystroError && e.code === 'DYSTRO_ERR_INVALID_REQUEST');
  assert.throws(() => chatPromptText([{ role: 'user', content: [{ type: 'image_url' }] }]), /type: "text"/);
});

test('OutputSampler: single-token words (gpt), letters and spaces (bytes); deterministic per prompt and seed', () => {
  const g = new OutputSampler(gptTokenizer(), 1);
  assert.ok(g.ids.length >= 80, `${g.ids.length} words`);
  for (let i = 0; i < g.ids.length; i++) assert.is(gptTokenizer().decode([g.ids[i]]), g.texts[i]);
  const p = Uint32Array.from([1, 2, 3]);
  assert.equal(g.sample(p, 20), g.sample(p, 20));
  assert.not.equal(g.sample(p, 20), g.sample(Uint32Array.from([1, 2, 4]), 20));
  assert.not.equal(g.sample(p, 20), g.sample(p, 20, 42), 'the request seed changes the answer');
  assert.not.equal(g.sample(p, 20), new OutputSampler(gptTokenizer(), 2).sample(p, 20), 'so does the emulator seed');
  const b = new OutputSampler(byteTokenizer(), 1);
  const text = Array.from(b.sample(p, 200), (id) => b.text(id)).join('');
  assert.match(text, /^[a-z ]{200}$/);
  assert.ok(text.includes(' '));
});

test.run();
