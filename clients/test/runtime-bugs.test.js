'use strict';
// What a runtime that reports failures as WeChat does exposed in the SDK (each test failed before
// its fix): errMsgs that contain "abort", bodies cut mid-line reported as success, a 429 longer
// than the retry cap, retractions in the non-chunked fallback, short-lived tokens.

const test = require('node:test');
const assert = require('node:assert/strict');
const { createClient } = require(process.env.MPCHAT_SDK || '../miniprogram/mpchat.js');
const { createFakeWx, record, ndjson, drive, waitFor } = require('./helpers/fake-wx.js');

const START = { type: 'start', conversation_id: 'c1', message_id: 'm1', model: 'fake-model', ai_generated: true, label: 'AI 生成', seq: 0 };
const D1 = { type: 'delta', text: '前半', seq: 1 };
const D2 = { type: 'delta', text: '后半', seq: 2 };
const DONE = { type: 'done', finish_reason: 'stop', seq: 3 };
const unseq = (evs) => evs.map(({ seq, ...e }) => e);
// Android reports a cut connection like this; "abort" in it is not the caller's abort.
const ANDROID_CUT = 'request:fail -103:net::ERR_CONNECTION_ABORTED';

test('ERR_CONNECTION_ABORTED after start is a cut: the chat resumes and ends (it used to hang forever)', async () => {
  const fake = createFakeWx({ chat: () => ({ body: ndjson([START, D1]), end: { fail: ANDROID_CUT } }), events: () => ({ body: ndjson([D2, DONE]) }) });
  const { events, finished } = record(createClient(fake.options), { content: 'hi' });
  await drive(fake, finished);
  assert.equal(events.at(-1)[0], 'done');
  assert.equal(events.at(-1)[1].text, '前半后半');
});

test('ERR_CONNECTION_ABORTED ends the chat with an error whenever it cannot be resumed', async () => {
  for (const [spec, code, options] of [
    [{ fail: ANDROID_CUT }, 'network_error', {}], // before start
    [{ body: ndjson([START, D1]), end: { fail: ANDROID_CUT } }, 'interrupted', { resumeAttempts: 0 }],
    [{ body: ndjson(unseq([START, D1])), end: { fail: ANDROID_CUT } }, 'interrupted', {}], // a server without resume
  ]) {
    const fake = createFakeWx({ chat: () => spec });
    const { events, finished } = record(createClient({ ...fake.options, ...options }), { content: 'hi' });
    await drive(fake, finished);
    assert.equal(events.at(-1)[0], 'error', JSON.stringify(spec));
    assert.equal(events.at(-1)[1].code, code);
  }
});

test('a body cut mid-line but reported as success is a cut, not bad_response', async () => {
  const cut = ndjson([START, D1]) + '{"type":"delta","te';
  // With resume: the rest is fetched.
  let fake = createFakeWx({ chat: () => ({ body: cut }), events: (o, n, q) => ({ body: ndjson([D1, D2, DONE].filter((e) => e.seq > q.after)) }) });
  let r = record(createClient(fake.options), { content: 'hi' });
  await drive(fake, r.finished);
  assert.equal(r.events.at(-1)[1].text, '前半后半');
  assert.match(fake.eventCalls()[0].option.url, /after=1$/);
  // Without seq (no resume): interrupted, the code apps already explain as a cut connection.
  fake = createFakeWx({ chat: () => ({ body: ndjson(unseq([START, D1])) + '{"type":"delta","te' }) });
  r = record(createClient(fake.options), { content: 'hi' });
  await drive(fake, r.finished);
  assert.equal(r.events.at(-1)[1].code, 'interrupted');
  // Also when the runtime buffered the body (no chunk callback).
  fake = createFakeWx({ chat: () => ({ body: ndjson(unseq([START, D1])) + '{"type":"delta","te', noChunks: true }) });
  r = record(createClient(fake.options), { content: 'hi' });
  await drive(fake, r.finished);
  assert.equal(r.events.at(-1)[1].code, 'interrupted');
});

test('a whole last line without its newline still counts (not taken for a cut)', async () => {
  const fake = createFakeWx({ chat: () => ({ body: ndjson([START, D1, D2, DONE]).replace(/\n$/, '') }), events: () => assert.fail('no resume') });
  const { events, finished } = record(createClient(fake.options), { content: 'hi' });
  await drive(fake, finished);
  assert.equal(events.at(-1)[0], 'done');
});

test('a 429 whose retry_after exceeds maxRetryDelay is reported at once, not retried early', async () => {
  const fake = createFakeWx({
    chat: () => ({ status: 429, header: { 'Retry-After': '120' }, body: ndjson([{ type: 'error', code: 'rate_limited', message: '太快了', retry_after: 120 }]) }),
  });
  const { events, finished } = record(createClient({ ...fake.options, maxRetryDelay: 10 }), { content: 'hi' });
  await finished;
  assert.deepEqual(events, [['error', { code: 'rate_limited', message: '太快了', retry_after: 120, status: 429 }]]);
  assert.equal(fake.chatCalls().length, 1);
  assert.equal(fake.timers.length, 0);
});

test('a 429 within the cap is still retried after retry_after', async () => {
  const fake = createFakeWx({
    chat: (o, n) => (n === 1 ? { status: 429, body: ndjson([{ type: 'error', code: 'rate_limited', message: 'x', retry_after: 10 }]) } : { body: ndjson([START, D1, DONE]) }),
  });
  const { events, finished } = record(createClient({ ...fake.options, maxRetryDelay: 10 }), { content: 'hi' });
  await drive(fake, finished);
  assert.deepEqual(events[0], ['retry', { code: 'rate_limited', attempt: 1, delay: 10 }]);
  assert.equal(events.at(-1)[0], 'done');
});

test('non-chunked fallback: a retracted answer (finish_reason content_filter) reaches onRetract', async () => {
  const fake = createFakeWx({
    chunked: false,
    chat: () => ({ body: { conversation_id: 'c9', message_id: 'm9', content: '', finish_reason: 'content_filter', usage: {}, ai_generated: true, label: 'AI 生成' } }),
  });
  const { events, finished } = record(createClient(fake.options), { content: 'hi' });
  await finished;
  assert.deepEqual(events.map(([n]) => n), ['start', 'retract', 'done']);
  assert.equal(events.at(-1)[1].finish_reason, 'content_filter');
});

test('non-chunked fallback: NDJSON lines with a retract (one line wx already parsed, or several) reach onRetract', async () => {
  const lines = [START, D1, { type: 'retract', reason: 'content_safety', seq: 2 }, { type: 'done', finish_reason: 'content_filter', seq: 3 }];
  const fake = createFakeWx({ chunked: false, chat: () => ({ body: ndjson(lines) }) });
  const { events, finished } = record(createClient(fake.options), { content: 'hi' });
  await finished;
  assert.deepEqual(events.map(([n]) => n), ['start', 'delta', 'retract', 'done']);
  assert.equal(events.at(-1)[1].text, '');
});

test('a token lifetime shorter than the renewal margin does not make every call log in again', async () => {
  const fake = createFakeWx({
    chat: () => ({ body: ndjson([START, D1, DONE]) }),
    login: (o, n) => ({ status: 200, body: { token: 'tok' + n, expires_in: 30 } }),
    api: () => ({ status: 200, body: {} }),
  });
  const client = createClient(fake.options);
  await record(client, { content: 'hi' }).finished;
  await client.me();
  assert.ok(client.hasSession());
  await record(client, { content: 'again' }).finished;
  assert.equal(fake.logins.length, 1, 'one login for three calls within the lifetime');
  // Near the end of the lifetime (within a quarter of it) the token is renewed before use.
  fake.advance(23000);
  await client.me();
  assert.equal(fake.logins.length, 2);
  assert.equal(fake.calls.at(-1).option.header.Authorization, 'Bearer tok2');
});

test('a normal lifetime keeps the full one-minute margin', async () => {
  const fake = createFakeWx({ chat: () => ({}), api: () => ({ status: 200, body: {} }) });
  const client = createClient(fake.options);
  await client.me(); // expires_in 3600
  fake.advance(3600e3 - 61e3);
  await client.me();
  assert.equal(fake.logins.length, 1);
  fake.advance(2e3);
  await client.me();
  assert.equal(fake.logins.length, 2);
});

test('the caller abort() still silences everything (own abort is a flag, not an errMsg)', async () => {
  const fake = createFakeWx({ chat: () => ({ body: ndjson([START, D1]), end: 'hang' }) });
  const { events, handle } = record(createClient(fake.options), { content: 'hi' });
  await waitFor(() => events.some(([n]) => n === 'delta'));
  handle.abort();
  await fake.settle();
  await waitFor(() => fake.cancels.length === 1);
  assert.deepEqual(events.map(([n]) => n), ['start', 'delta']);
});
