'use strict';
// The SDK's login, renewal, retries, abort, fallback, local pre-check and JSON calls.

const test = require('node:test');
const assert = require('node:assert/strict');
const { createClient } = require('../miniprogram/mpchat.js');
const { createFakeWx, record, ndjson, tick, drive } = require('./helpers/fake-wx.js');

const START = { type: 'start', conversation_id: 'c1', message_id: 'm1', model: 'fake-model', ai_generated: true, label: 'AI 生成' };
const OK_BODY = ndjson([START, { type: 'delta', text: '好的' }, { type: 'done', finish_reason: 'stop' }]);
const errorLine = (code, extra) => ndjson([{ type: 'error', code, message: code, ...extra }]);

async function waitFor(predicate) {
  for (let i = 0; i < 1000; i++) {
    if (predicate()) return;
    await tick();
  }
  throw new Error('condition not met');
}

test('logs in with wx.login, keeps the token in storage, sends it as a bearer token', async () => {
  const fake = createFakeWx({ chat: () => ({ body: OK_BODY }) });
  const client = createClient({ ...fake.options, storageKey: 'k' });
  const { finished } = record(client, { content: '你好', conversationId: 'c0', profile: 'voice' });
  const events = await finished;
  assert.equal(events.at(-1)[0], 'done');
  const login = fake.calls[0].option;
  assert.equal(login.url, 'https://chat.example.com/api/v1/login');
  assert.deepEqual(login.data, { code: 'code1' });
  assert.equal(fake.store.get('k').token, 'tok1');
  const chat = fake.chatCalls()[0].option;
  assert.equal(chat.header.Authorization, 'Bearer tok1');
  assert.equal(chat.enableChunked, true);
  assert.deepEqual(chat.data, { content: '你好', stream: true, conversation_id: 'c0', profile: 'voice' });

  // A second client (a relaunch) reuses the stored token: no new login.
  const again = createClient({ ...fake.options, storageKey: 'k' });
  await record(again, { content: 'x' }).finished;
  assert.equal(fake.logins.length, 1);
  assert.ok(again.hasSession());
});

test('a 401 renews the token once and retries the chat', async () => {
  const fake = createFakeWx({
    chat: (option, n) => (n === 1 ? { status: 401, body: errorLine('unauthorized') } : { body: OK_BODY }),
  });
  fake.store.set('mpchat_session', { token: 'stale', expiresAt: Date.now() + 3600e3 });
  const client = createClient(fake.options);
  const events = await record(client, { content: 'hi' }).finished;
  assert.deepEqual(events.map(([n]) => n), ['start', 'delta', 'done']);
  const chats = fake.chatCalls();
  assert.equal(chats.length, 2);
  assert.equal(chats[0].option.header.Authorization, 'Bearer stale');
  assert.equal(chats[1].option.header.Authorization, 'Bearer tok1');
  assert.equal(fake.logins.length, 1);
});

test('a second 401 is reported, not retried forever', async () => {
  const fake = createFakeWx({ chat: () => ({ status: 401, body: errorLine('unauthorized') }) });
  const client = createClient(fake.options);
  const events = await record(client, { content: 'hi' }).finished;
  assert.deepEqual(events.map(([n]) => n), ['error']);
  assert.equal(events[0][1].code, 'unauthorized');
  assert.equal(fake.chatCalls().length, 2);
});

test('401 renewal also applies to JSON calls', async () => {
  let n = 0;
  const fake = createFakeWx({
    chat: () => ({}),
    api: (option) => {
      n += 1;
      return n === 1 ? { status: 401, body: { error: { code: 'unauthorized', message: 'x' } } } : { status: 200, body: { items: [], next: null, auth: option.header.Authorization } };
    },
  });
  fake.store.set('mpchat_session', { token: 'stale', expiresAt: Date.now() + 3600e3 });
  const client = createClient(fake.options);
  const page = await client.listConversations({ limit: 5 });
  assert.equal(page.auth, 'Bearer tok1');
  assert.equal(fake.calls.at(-1).option.url, 'https://chat.example.com/api/v1/conversations?limit=5');
});

test('429 is retried after the advised delay, through the injected timer', async () => {
  const fake = createFakeWx({
    chat: (option, n) => (n === 1 ? { status: 429, header: { 'Retry-After': '3' }, body: errorLine('rate_limited', { retry_after: 3 }) } : { body: OK_BODY }),
  });
  const client = createClient(fake.options);
  const { events, finished } = record(client, { content: 'hi' });
  await waitFor(() => fake.timers.length === 1);
  assert.equal(fake.timers[0].ms, 3000);
  assert.deepEqual(events, [['retry', { code: 'rate_limited', attempt: 1, delay: 3 }]]);
  assert.equal(fake.chatCalls().length, 1);
  fake.timers[0].fn();
  await finished;
  assert.deepEqual(events.map(([n]) => n), ['retry', 'start', 'delta', 'done']);
  assert.equal(fake.chatCalls().length, 2);
});

test('503 with only a status and Retry-After is retried; the wait is capped', async () => {
  const fake = createFakeWx({
    chat: (option, n) => (n === 1 ? { status: 503, header: { 'retry-after': '120' }, body: '' } : { body: OK_BODY }),
  });
  const client = createClient({ ...fake.options, maxRetryDelay: 5 });
  const { finished } = record(client, { content: 'hi' });
  await waitFor(() => fake.timers.length === 1);
  assert.equal(fake.timers[0].ms, 5000);
  fake.timers[0].fn();
  assert.equal((await finished).at(-1)[0], 'done');
});

test('retries stop after maxRetries and the error is reported with retry_after', async () => {
  const fake = createFakeWx({ chat: () => ({ status: 503, body: errorLine('busy', { retry_after: 2 }) }) });
  const client = createClient(fake.options);
  const { events, finished } = record(client, { content: 'hi' });
  for (let i = 1; i <= 2; i++) {
    await waitFor(() => fake.timers.length === i);
    fake.timers[i - 1].fn();
  }
  await finished;
  assert.equal(fake.chatCalls().length, 3);
  assert.deepEqual(events.at(-1), ['error', { code: 'busy', message: 'busy', retry_after: 2, status: 503 }]);
});

test('an error after start is reported, not retried (the message was already stored)', async () => {
  const fake = createFakeWx({ chat: () => ({ body: ndjson([START, { type: 'error', code: 'busy', message: 'x', retry_after: 1 }]) }) });
  const client = createClient(fake.options);
  const events = await record(client, { content: 'hi' }).finished;
  assert.deepEqual(events.map(([n]) => n), ['start', 'error']);
  assert.equal(fake.chatCalls().length, 1);
});

test('abort cancels the request task and silences every later callback', async () => {
  const chunks = [ndjson([START]), ndjson([{ type: 'delta', text: 'a' }]), ndjson([{ type: 'delta', text: 'b' }, { type: 'done', finish_reason: 'stop' }])].map((s) => Buffer.from(s));
  const fake = createFakeWx({ chat: () => ({ chunks: chunks.map((c) => new Uint8Array(c)) }) });
  const client = createClient(fake.options);
  const events = [];
  let handle;
  handle = client.chat({
    content: 'hi',
    onStart: (ev) => events.push(['start', ev]),
    onDelta: (ev) => {
      events.push(['delta', ev]);
      handle.abort();
    },
    onDone: (ev) => events.push(['done', ev]),
    onError: (ev) => events.push(['error', ev]),
  });
  await waitFor(() => fake.chatCalls().length === 1);
  await fake.settle();
  assert.equal(fake.chatCalls()[0].aborted, true);
  assert.deepEqual(events.map(([n]) => n), ['start', 'delta']);
  assert.equal(handle.text, 'a');
});

test('abort during a retry wait clears the timer and sends nothing more', async () => {
  const fake = createFakeWx({ chat: () => ({ status: 429, body: errorLine('rate_limited', { retry_after: 1 }) }) });
  const client = createClient(fake.options);
  const { events, handle } = record(client, { content: 'hi' });
  await waitFor(() => fake.timers.length === 1);
  handle.abort();
  assert.equal(fake.timers[0].cleared, true);
  assert.equal(fake.chatCalls().length, 1);
  assert.deepEqual(events.map(([n]) => n), ['retry']);
});

test('without chunked support the SDK asks for stream:false and still emits start/delta/done', async () => {
  const fake = createFakeWx({
    chunked: false,
    chat: () => ({ body: { conversation_id: 'c9', message_id: 'm9', content: '整段回答😀', finish_reason: 'stop', usage: { prompt_tokens: 1, completion_tokens: 2 }, ai_generated: true, label: 'AI 生成' } }),
  });
  const client = createClient(fake.options);
  const events = await record(client, { content: 'hi' }).finished;
  const option = fake.chatCalls()[0].option;
  assert.equal(option.data.stream, false);
  assert.equal(option.enableChunked, undefined);
  assert.deepEqual(events.map(([n]) => n), ['start', 'delta', 'done']);
  assert.equal(events[0][1].conversation_id, 'c9');
  assert.equal(events[0][1].label, 'AI 生成');
  assert.equal(events[2][1].text, '整段回答😀');
});

test('stream:false errors are read from the JSON body', async () => {
  const fake = createFakeWx({ chunked: false, chat: () => ({ status: 402, body: { error: { code: 'quota_exceeded', message: '额度用完了' } } }) });
  const events = await record(createClient(fake.options), { content: 'hi' }).finished;
  assert.deepEqual(events, [['error', { code: 'quota_exceeded', message: '额度用完了', retry_after: undefined, status: 402 }]]);
});

test('a runtime that buffers the whole body (no chunk callback) gives the same events', async () => {
  const streamed = await record(createClient(createFakeWx({ chat: () => ({ body: OK_BODY }) }).options), { content: 'hi' }).finished;
  const fake = createFakeWx({ chat: () => ({ body: OK_BODY, noChunks: true }) });
  const buffered = await record(createClient(fake.options), { content: 'hi' }).finished;
  assert.equal(fake.chatCalls()[0].option.enableChunked, true);
  assert.deepEqual(buffered, streamed);
});

test('the local word list rejects before any request', async () => {
  const fake = createFakeWx({ chat: () => ({ body: OK_BODY }) });
  const client = createClient({ ...fake.options, wordList: ['Bad Word', '违禁'] });
  const events = await record(client, { content: 'this is a BADWORD!' }).finished;
  assert.equal(events[0][1].code, 'content_rejected');
  assert.equal(events[0][1].local, true);
  const zh = await record(client, { content: '违 禁 品' }).finished;
  assert.equal(zh[0][1].code, 'content_rejected');
  assert.equal(fake.calls.length, 0);
  assert.equal((await record(client, { content: 'a good word' }).finished).at(-1)[0], 'done');
});

test('a network failure is reported as network_error once sending again has not helped', async () => {
  const fake = createFakeWx({ chat: () => ({ fail: 'request:fail timeout' }) });
  const { events, finished } = record(createClient({ ...fake.options, resumeAttempts: 2 }), { content: 'hi' });
  await drive(fake, finished);
  assert.deepEqual(events.map(([n]) => n), ['reconnect', 'reconnect', 'error']);
  assert.equal(events.at(-1)[1].code, 'network_error');
  const chats = fake.calls.filter((c) => c.path === '/api/v1/chat');
  assert.equal(chats.length, 3);
  // Every copy carries the same key, so the server stores the question once.
  const keys = chats.map((c) => c.option.header['Idempotency-Key']);
  assert.match(keys[0], /^[A-Za-z0-9_.:-]{1,64}$/);
  assert.deepEqual(new Set(keys).size, 1);
});

test('JSON calls hit the documented paths and map errors to MpchatError', async () => {
  const seen = [];
  const fake = createFakeWx({
    chat: () => ({}),
    api: (option, path) => {
      seen.push([option.method, path]);
      if (path.startsWith('/api/v1/conversations/missing')) return { status: 404, body: { error: { code: 'not_found', message: '不存在' } } };
      if (option.method === 'DELETE') return { status: 204, body: '' };
      return { status: 200, body: { ok: path } };
    },
  });
  const client = createClient(fake.options);
  assert.deepEqual(await client.listMessages('c 1', { limit: 50, before: 'x' }), { ok: '/api/v1/conversations/c%201/messages?limit=50&before=x' });
  assert.equal(await client.deleteConversation('c1'), undefined);
  assert.equal(await client.deleteMyData(), undefined);
  assert.deepEqual(await client.me(), { ok: '/api/v1/me' });
  assert.deepEqual(await client.meta(), { ok: '/api/v1/meta' });
  await assert.rejects(client.listMessages('missing'), (err) => err.code === 'not_found' && err.status === 404);
  assert.deepEqual(seen.slice(0, 5), [
    ['GET', '/api/v1/conversations/c%201/messages?limit=50&before=x'],
    ['DELETE', '/api/v1/conversations/c1'],
    ['DELETE', '/api/v1/me/data'],
    ['GET', '/api/v1/me'],
    ['GET', '/api/v1/meta'],
  ]);
});

test('concurrent calls share one login', async () => {
  const fake = createFakeWx({ chat: () => ({}), api: () => ({ status: 200, body: {} }) });
  const client = createClient(fake.options);
  await Promise.all([client.me(), client.listConversations(), client.me()]);
  assert.equal(fake.logins.length, 1);
});

test('an explicit code (dev login) skips wx.login', async () => {
  const fake = createFakeWx({ chat: () => ({}) });
  const client = createClient(fake.options);
  await client.login('demo-user');
  assert.equal(fake.logins.length, 0);
  assert.deepEqual(fake.calls[0].option.data, { code: 'demo-user' });
  assert.ok(client.hasSession());
  client.logout();
  assert.ok(!client.hasSession());
});
