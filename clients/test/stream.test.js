'use strict';
// The NDJSON stream gives the same events however the bytes are cut into chunks.

const test = require('node:test');
const assert = require('node:assert/strict');
const { createClient, decodeUtf8, encodeUtf8, LineBuffer } = require('../miniprogram/mpchat.js');
const { createFakeWx, record, ndjson, splitAt, toBytes } = require('./helpers/fake-wx.js');

const EVENTS = [
  { type: 'start', conversation_id: 'c1', message_id: 'm1', model: 'fake-model', ai_generated: true, label: '本回答由 AI 生成' },
  { type: 'queued', position: 1 },
  { type: 'delta', text: '你好，' },
  { type: 'delta', text: '世界🌏！emoji 👨‍👩‍👧 and ñ' },
  { type: 'delta', text: '𠮷野家 — “引号” ©' },
  { type: 'done', finish_reason: 'stop', usage: { prompt_tokens: 3, completion_tokens: 9 } },
];
const BYTES = toBytes(ndjson(EVENTS));
const FULL_TEXT = '你好，世界🌏！emoji 👨‍👩‍👧 and ñ𠮷野家 — “引号” ©';

// A small deterministic PRNG so a failure can be replayed.
function mulberry32(seed) {
  return function () {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function runWithChunks(chunks) {
  const fake = createFakeWx({ chat: () => ({ chunks }) });
  const client = createClient(fake.options);
  const { finished } = record(client, { content: 'hi' });
  return finished;
}

test('decodeUtf8 agrees with TextDecoder on random bytes, malformed ones included', () => {
  const rand = mulberry32(42);
  const td = new TextDecoder();
  for (let t = 0; t < 20000; t++) {
    const a = new Uint8Array(Math.floor(rand() * 10));
    for (let i = 0; i < a.length; i++) {
      const r = rand();
      a[i] = r < 0.3 ? Math.floor(rand() * 128) : r < 0.6 ? 0x80 + Math.floor(rand() * 64) : 0xc0 + Math.floor(rand() * 64);
    }
    assert.equal(decodeUtf8(a), td.decode(a), `bytes ${Array.from(a)}`);
  }
  assert.equal(decodeUtf8(encodeUtf8(FULL_TEXT)), FULL_TEXT);
});

test('LineBuffer returns whole lines at every split point', () => {
  const text = ndjson(EVENTS);
  for (let k = 0; k <= BYTES.length; k++) {
    const buf = new LineBuffer();
    const lines = [...buf.push(BYTES.subarray(0, k)), ...buf.push(BYTES.subarray(k))];
    assert.deepEqual(lines, text.split('\n').slice(0, -1));
    assert.equal(buf.flush(), null);
  }
});

test('the same events and text whatever the chunk boundaries', async () => {
  const reference = await runWithChunks([BYTES]);
  assert.deepEqual(reference.map(([name]) => name), ['start', 'queued', 'delta', 'delta', 'delta', 'done']);
  assert.equal(reference[0][1].label, '本回答由 AI 生成');
  assert.equal(reference.at(-1)[1].text, FULL_TEXT);

  // Every single cut point.
  for (let k = 0; k <= BYTES.length; k++) {
    assert.deepEqual(await runWithChunks(splitAt(BYTES, [k])), reference, `cut at ${k}`);
  }
  // One byte per chunk.
  assert.deepEqual(await runWithChunks(Array.from(BYTES, (b) => Uint8Array.of(b))), reference);
  // Many random cuts, many times.
  const rand = mulberry32(7);
  for (let t = 0; t < 300; t++) {
    const cuts = new Set();
    const n = 1 + Math.floor(rand() * 12);
    for (let i = 0; i < n; i++) cuts.add(Math.floor(rand() * (BYTES.length + 1)));
    const offsets = [...cuts].sort((a, b) => a - b);
    assert.deepEqual(await runWithChunks(splitAt(BYTES, offsets)), reference, `cuts ${offsets}`);
  }
});

test('a last line without a newline is still read', async () => {
  const body = toBytes(ndjson(EVENTS).replace(/\n$/, ''));
  const events = await runWithChunks(splitAt(body, [body.length - 3]));
  assert.equal(events.at(-1)[0], 'done');
});

test('retract clears the text; the answer is rebuilt from later deltas only', async () => {
  const body = toBytes(
    ndjson([EVENTS[0], { type: 'delta', text: '不该' }, { type: 'retract', reason: 'output_rejected' }, { type: 'done', finish_reason: 'content_filter' }]),
  );
  const events = await runWithChunks([body]);
  assert.deepEqual(events.map(([n]) => n), ['start', 'delta', 'retract', 'done']);
  assert.equal(events.at(-1)[1].text, '');
});

test('a stream that ends after start without done reports interrupted', async () => {
  const body = toBytes(ndjson([EVENTS[0], EVENTS[2]]));
  const events = await runWithChunks([body]);
  assert.deepEqual(events.map(([n]) => n), ['start', 'delta', 'error']);
  assert.equal(events.at(-1)[1].code, 'interrupted');
});
