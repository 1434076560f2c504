'use strict';
// The SDK's voice(): a recording uploaded as the body of POST /api/v1/voice, the transcript,
// then the answer streamed as chat() does; and speak(): an answer played sentence by sentence.

const test = require('node:test');
const assert = require('node:assert/strict');
const { createClient } = require('../miniprogram/mpchat.js');
const { createFakeWx, ndjson, tick } = require('./helpers/fake-wx.js');

const START = { type: 'start', conversation_id: 'c1', message_id: 'm1', model: 'fake-model', ai_generated: true, label: 'AI 生成' };
const VOICE_BODY = ndjson([{ type: 'transcript', text: '明天天气' }, START,
  { type: 'delta', text: '明天晴。' }, { type: 'done', finish_reason: 'stop' }]);

function collect(client, opts) {
  const events = [];
  let handle;
  const finished = new Promise((resolve) => {
    const push = (name) => (ev) => {
      events.push([name, ev]);
      if (name === 'error' || name === 'done') resolve(events);
    };
    handle = client.voice({
      ...opts, onTranscript: push('transcript'), onStart: push('start'), onDelta: push('delta'),
      onDone: push('done'), onError: push('error'),
    });
  });
  return { finished, handle: () => handle };
}

test('voice() uploads a given recording as the body and streams the transcript, then the answer', async () => {
  const fake = createFakeWx({ chat: () => assert.fail('no chat call'), api: () => ({ body: VOICE_BODY }) });
  const client = createClient(fake.options);
  const audio = new Uint8Array([0x49, 0x44, 0x33, 1, 2, 3]).buffer;
  const { finished } = collect(client, { audio, format: 'mp3', conversationId: 'c0' });
  const events = await finished;
  assert.deepEqual(events.map(([n]) => n), ['transcript', 'start', 'delta', 'done']);
  assert.equal(events[0][1].text, '明天天气');
  assert.equal(events.at(-1)[1].text, '明天晴。');
  const call = fake.calls.find((c) => c.path.startsWith('/api/v1/voice'));
  assert.equal(call.path, '/api/v1/voice?conversation_id=c0');
  assert.equal(call.option.method, 'POST');
  assert.equal(call.option.data, audio);
  assert.equal(call.option.header['content-type'], 'audio/mpeg');
  assert.equal(call.option.header.Authorization, 'Bearer tok1');
  assert.equal(call.option.enableChunked, true);
});

test('voice() records with the recorder manager until stop(), then uploads the file', async () => {
  const recorder = {
    started: null,
    start(o) { this.started = o; },
    stop() { setImmediate(() => this.stopCb({ tempFilePath: 'wxfile://rec.aac' })); },
    onStop(cb) { this.stopCb = cb; },
    onError() {},
  };
  const read = [];
  const fake = createFakeWx({ chat: () => assert.fail('no chat call'), api: () => ({ body: VOICE_BODY }) });
  const client = createClient({
    ...fake.options,
    getRecorderManager: () => recorder,
    getFileSystemManager: () => ({
      readFile(o) { read.push(o.filePath); setImmediate(() => o.success({ data: new ArrayBuffer(4) })); },
    }),
  });
  const { finished, handle } = collect(client, { format: 'aac', profile: 'voice' });
  assert.equal(recorder.started.format, 'aac');
  await tick();
  assert.equal(fake.calls.length, 0); // nothing sent while recording
  handle().stop();
  const events = await finished;
  assert.equal(events.at(-1)[0], 'done');
  assert.deepEqual(read, ['wxfile://rec.aac']);
  const call = fake.calls.find((c) => c.path.startsWith('/api/v1/voice'));
  assert.equal(call.path, '/api/v1/voice?profile=voice');
  assert.equal(call.option.header['content-type'], 'audio/aac');
});

test('voice() reports a refused recording with the service code', async () => {
  const fake = createFakeWx({
    chat: () => assert.fail('no chat call'),
    api: () => ({ status: 400, body: { error: { code: 'empty_audio', message: '没有听清，请再说一遍' } } }),
  });
  const client = createClient(fake.options);
  const events = await collect(client, { audio: new ArrayBuffer(1) }).finished;
  assert.equal(events.length, 1);
  assert.equal(events[0][0], 'error');
  assert.equal(events[0][1].code, 'empty_audio');
});

test('speak() plays sentence by sentence, waits for a sentence not yet written, stops at 204', async () => {
  const asked = [];
  let notReady = 1;
  const fake = createFakeWx({
    chat: () => assert.fail('no chat call'),
    api: (option, path) => {
      const n = Number(/sentence=(\d+)/.exec(path)[1]);
      asked.push(n);
      if (n === 1 && notReady-- > 0) return { status: 409, header: { 'Retry-After': '1' }, body: { error: { code: 'not_ready' } } };
      if (n >= 2) return { status: 204, body: '' };
      return { status: 200, header: { 'Content-Type': 'audio/wav' }, body: new Uint8Array([82, 73, 70, 70, n]) };
    },
  });
  const written = [];
  const played = [];
  const player = {
    play() { played.push(this.src); setImmediate(() => this.ended()); },
    stop() {}, destroy() { this.destroyed = true; },
    onEnded(cb) { this.ended = cb; }, onError() {},
  };
  const client = createClient({
    ...fake.options,
    userDataPath: 'wxfile://usr',
    createInnerAudioContext: () => player,
    getFileSystemManager: () => ({
      writeFile(o) { written.push([o.filePath, new Uint8Array(o.data)[4]]); setImmediate(() => o.success()); },
    }),
  });
  const sentences = [];
  const done = new Promise((resolve, reject) => {
    client.speak('m1', { onSentence: (ev) => sentences.push(ev.index), onDone: resolve, onError: reject });
  });
  for (let i = 0; i < 50 && !played.length; i++) await tick();
  assert.deepEqual(played, ['wxfile://usr/mpchat-speech-0.wav']);
  // Sentence 1 was asked for while 0 played, and was not ready: asked again after Retry-After.
  for (let i = 0; i < 50 && !fake.pendingTimers().length; i++) await tick();
  assert.equal(fake.pendingTimers()[0].ms, 1000);
  fake.advance(1000);
  await done;
  assert.deepEqual(sentences, [0, 1]);
  assert.deepEqual(played, ['wxfile://usr/mpchat-speech-0.wav', 'wxfile://usr/mpchat-speech-1.wav']);
  assert.deepEqual(written.map(([, b]) => b), [0, 1]);
  assert.deepEqual(asked, [0, 1, 1, 2]);
  assert.ok(player.destroyed);
  const call = fake.calls.find((c) => c.path.includes('/speech'));
  assert.equal(call.path, '/api/v1/messages/m1/speech?sentence=0');
  assert.equal(call.option.responseType, 'arraybuffer');
});
