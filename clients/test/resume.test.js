'use strict';
// Resume: an answer outlives its connection (API.md "Answers outlive the connection"). The SDK
// follows `seq`, reconnects to /messages/{id}/events?after=<last seq> on every kind of cut, and
// the caller sees one answer, each piece exactly once. Time is the fake's clock: no real waits.

const test = require('node:test');
const assert = require('node:assert/strict');
const { createClient } = require('../miniprogram/mpchat.js');
const { createFakeWx, record, ndjson, splitAt, toBytes, waitFor, drive } = require('./helpers/fake-wx.js');

// A small deterministic PRNG so a failure can be replayed (the seed is in the message).
function mulberry32(seed) {
  return function () {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const START = { type: 'start', conversation_id: 'c1', message_id: 'm1', model: 'fake-model', ai_generated: true, label: 'AI 生成' };
const PIECES = ['你好，', '世界🌏！', 'emoji 👨‍👩‍👧 ', 'and ñ', '𠮷野家', ' — “引号” ©', '第七段', '，第八段', '……', '最后一段。'];
const THOUGHTS = ['先想一想', '，再回答'];

/** The answer's events, numbered as the server numbers them. */
function answer() {
  const evs = [START];
  for (const t of THOUGHTS) evs.push({ type: 'reasoning', text: t });
  evs.push({ type: 'queued', position: 1 });
  for (const t of PIECES) evs.push({ type: 'delta', text: t });
  evs.push({ type: 'done', finish_reason: 'stop', usage: { prompt_tokens: 3, completion_tokens: 30 } });
  return evs.map((e, seq) => ({ ...e, seq }));
}
const EVENTS = answer();
const LAST = EVENTS.length - 1;
const TEXT = PIECES.join('');
const textUpTo = (seq) => EVENTS.filter((e) => e.type === 'delta' && e.seq <= seq).map((e) => e.text).join('');
const line = (ev) => toBytes(ndjson([ev]));

/** What the caller shows: onDelta appends, onSnapshot (or onDelta with reset) replaces. */
function display(events) {
  let shown = '';
  for (const [name, ev] of events) {
    if (name === 'delta') shown = ev.reset ? ev.text : shown + ev.text;
    if (name === 'snapshot') shown = ev.text;
    if (name === 'retract') shown = '';
  }
  return shown;
}

/**
 * A scripted server: the chat and every resumed stream are cut at random byte offsets, a few
 * times per answer, ending in every way a device reports a cut. Resumed streams sometimes repeat
 * events already sent, and sometimes stand a snapshot in for events "no longer kept".
 */
function scripted(seed, { cuts = 4, snapshots = true, duplicates = true } = {}) {
  const rand = mulberry32(seed);
  const log = { afters: [], endings: [], snapshot: false };
  let cutsLeft = cuts;
  const startLen = line(EVENTS[0]).length;

  function respond(events, isChat) {
    const bytes = toBytes(ndjson(events));
    let body = bytes;
    let end;
    if (cutsLeft > 0 && rand() < 0.7) {
      cutsLeft -= 1;
      // The chat is cut after `start` (a cut before it is reported, not resumed: tested apart).
      const from = isChat ? startLen : 0;
      const off = from + Math.floor(rand() * (bytes.length - from));
      body = bytes.subarray(0, off);
      const how = Math.floor(rand() * 4);
      end = [undefined, { fail: 'request:fail -103:net::ERR_CONNECTION_ABORTED' }, { fail: 'request:fail timeout' }, 'hang'][how];
      log.endings.push(['success-cut', 'aborted', 'timeout', 'silent'][how]);
    }
    const offsets = new Set();
    const n = Math.floor(rand() * 4);
    for (let i = 0; i < n; i++) offsets.add(Math.floor(rand() * (body.length + 1)));
    return { chunks: splitAt(body, [...offsets].sort((a, b) => a - b)), end };
  }

  return {
    log,
    chat: () => respond(EVENTS, true),
    events: (option, n, { id, after }) => {
      assert.equal(id, 'm1');
      log.afters.push(after);
      let evs = EVENTS.filter((e) => e.seq > after);
      if (snapshots && rand() < 0.25 && after < LAST - 1) {
        // The exact events are gone: the text so far (up to seq k), then the live ones.
        const k = after + 1 + Math.floor(rand() * (LAST - 1 - after));
        log.snapshot = true;
        evs = [{ type: 'snapshot', text: textUpTo(k), seq: k }, ...EVENTS.filter((e) => e.seq > k)];
      }
      if (duplicates && rand() < 0.5) {
        // Some already delivered events again (a replay from an earlier point).
        const from = Math.max(0, after - Math.floor(rand() * 4));
        evs = [...EVENTS.filter((e) => e.seq > from && e.seq <= after), ...evs];
      }
      return respond(evs, false);
    },
  };
}

test('cut at random byte offsets several times during one answer: the caller sees it whole, once', async () => {
  let resumedTotal = 0;
  const endings = new Set();
  for (let seed = 1; seed <= 150; seed++) {
    const server = scripted(seed);
    const fake = createFakeWx({ chat: server.chat, events: server.events });
    const client = createClient(fake.options);
    const withSnapshot = seed % 2 === 0; // both ways of replacing the text
    const { events, finished } = record(client, { content: 'hi', withSnapshot });
    await drive(fake, finished);
    const msg = `seed ${seed}: ${server.log.endings} afters ${server.log.afters}`;
    const names = events.map(([n]) => n);
    assert.equal(names.at(-1), 'done', msg + ' ' + JSON.stringify(events.at(-1)));
    assert.equal(names.filter((n) => n === 'done' || n === 'error').length, 1, msg);
    assert.equal(names.filter((n) => n === 'start').length, 1, msg);
    assert.equal(events.at(-1)[1].text, TEXT, msg);
    assert.equal(display(events), TEXT, msg);
    if (!server.log.snapshot) {
      // Without a snapshot, each delta arrives once and in order.
      assert.deepEqual(events.filter(([n]) => n === 'delta').map(([, e]) => e.text), PIECES, msg);
      assert.equal(events.at(-1)[1].reasoning, THOUGHTS.join(''), msg);
    }
    // Every resume asks after the last seq the caller had, never going back.
    for (let i = 1; i < server.log.afters.length; i++) assert.ok(server.log.afters[i] >= server.log.afters[i - 1], msg);
    assert.equal(fake.chatCalls().length, 1, 'the question is sent once: ' + msg);
    assert.equal(fake.eventCalls().length, server.log.afters.length);
    resumedTotal += server.log.afters.length;
    server.log.endings.forEach((e) => endings.add(e));
  }
  assert.ok(resumedTotal > 200, `resumed ${resumedTotal} times in all`);
  assert.deepEqual([...endings].sort(), ['aborted', 'silent', 'success-cut', 'timeout']);
});

test('resume asks after the last seq delivered, with the same bearer token', async () => {
  const fake = createFakeWx({
    chat: () => ({ body: ndjson(EVENTS.slice(0, 5)), end: { fail: 'request:fail timeout' } }),
    events: () => ({ body: ndjson(EVENTS.slice(5)) }),
  });
  const client = createClient(fake.options);
  const { events, finished } = record(client, { content: 'hi' });
  await drive(fake, finished);
  const resumed = fake.eventCalls();
  assert.equal(resumed.length, 1);
  assert.equal(resumed[0].option.url, 'https://chat.example.com/api/v1/messages/m1/events?after=4');
  assert.equal(resumed[0].option.method, 'GET');
  assert.equal(resumed[0].option.enableChunked, true);
  assert.equal(resumed[0].option.header.Authorization, 'Bearer tok1');
  const names = events.map(([n]) => n);
  assert.deepEqual(names.slice(0, 4), ['start', 'reasoning', 'reasoning', 'queued']);
  assert.deepEqual(events.find(([n]) => n === 'reconnect')[1], { attempt: 1, delay: 0, reason: 'network' });
  assert.ok(names.indexOf('reconnected') > names.indexOf('reconnect'));
  assert.equal(events.at(-1)[1].text, TEXT);
});

test('reasoning goes to onReasoning, never into the answer', async () => {
  const fake = createFakeWx({ chat: () => ({ body: ndjson(EVENTS) }) });
  const { events, finished, handle } = record(createClient(fake.options), { content: 'hi' });
  await finished;
  assert.deepEqual(events.filter(([n]) => n === 'reasoning').map(([, e]) => e), [
    { text: '先想一想', full: '先想一想' },
    { text: '，再回答', full: '先想一想，再回答' },
  ]);
  assert.equal(events.at(-1)[1].text, TEXT);
  assert.equal(handle.reasoning, '先想一想，再回答');
  assert.equal(handle.text, TEXT);
  assert.equal(handle.messageId, 'm1');
});

test('duplicates and older seq are ignored, also within one stream; pings are ignored', async () => {
  const body = ndjson([
    EVENTS[0], { type: 'ping' }, EVENTS[4], EVENTS[4], EVENTS[0], EVENTS[5], EVENTS[4], { type: 'ping' }, EVENTS[6],
  ]);
  const fake = createFakeWx({
    chat: () => ({ body, end: { fail: 'request:fail -103:net::ERR_CONNECTION_ABORTED' } }),
    // The resumed stream starts from an earlier point than asked.
    events: () => ({ body: ndjson(EVENTS.slice(3)) }),
  });
  const { events, finished } = record(createClient(fake.options), { content: 'hi' });
  await drive(fake, finished);
  const deltas = events.filter(([n]) => n === 'delta').map(([, e]) => e.text);
  assert.deepEqual(deltas, PIECES);
  assert.equal(events.filter(([n]) => n === 'start').length, 1);
  assert.equal(events.at(-1)[1].text, TEXT);
});

test('a snapshot replaces the text: onSnapshot, or onDelta with reset when there is none', async () => {
  for (const withSnapshot of [true, false]) {
    const fake = createFakeWx({
      chat: () => ({ body: ndjson(EVENTS.slice(0, 6)) + '{"type":"delta","te', end: undefined }),
      events: (o, n, { after }) => {
        assert.equal(after, 5);
        return { body: ndjson([{ type: 'snapshot', text: textUpTo(9), seq: 9 }, ...EVENTS.slice(10)]) };
      },
    });
    const { events, finished } = record(createClient(fake.options), { content: 'hi', withSnapshot });
    await drive(fake, finished);
    const replaced = withSnapshot ? events.find(([n]) => n === 'snapshot') : events.find(([n, e]) => n === 'delta' && e.reset);
    assert.ok(replaced, JSON.stringify(events));
    assert.equal(replaced[1].text, textUpTo(9));
    if (!withSnapshot) assert.equal(replaced[1].full, textUpTo(9));
    assert.equal(display(events), TEXT);
    assert.equal(events.at(-1)[1].text, TEXT);
  }
});

test('an older snapshot than what was shown is ignored (its seq is already past)', async () => {
  const fake = createFakeWx({
    chat: () => ({ body: ndjson(EVENTS.slice(0, 10)), end: { fail: 'request:fail timeout' } }),
    events: () => ({ body: ndjson([{ type: 'snapshot', text: textUpTo(7), seq: 7 }, ...EVENTS.slice(10)]) }),
  });
  const { events, finished } = record(createClient(fake.options), { content: 'hi', withSnapshot: true });
  await drive(fake, finished);
  assert.equal(events.filter(([n]) => n === 'snapshot').length, 0);
  assert.equal(display(events), TEXT);
});

test('app hidden for 10 s mid-answer, WeChat fails the request: the SDK waits for onAppShow, then resumes', async () => {
  const fake = createFakeWx({
    chat: () => ({ body: ndjson(EVENTS.slice(0, 7)), end: 'hang' }),
    events: () => ({ body: ndjson(EVENTS.slice(7)) }),
  });
  const client = createClient(fake.options);
  const { events, finished } = record(client, { content: 'hi' });
  await waitFor(() => events.filter(([n]) => n === 'delta').length === 3);
  fake.hide();
  fake.advance(5000);
  // WeChat kills the hidden app's request after 5 s.
  fake.chatCalls()[0].kill('request:fail interrupted');
  await fake.settle();
  await waitFor(() => fake.chatCalls()[0].ended);
  fake.advance(5000);
  assert.equal(fake.eventCalls().length, 0, 'no reconnection while hidden');
  assert.ok(!events.some(([n]) => n === 'error' || n === 'reconnect'));
  fake.show();
  await drive(fake, finished);
  assert.equal(fake.eventCalls().length, 1);
  assert.match(fake.eventCalls()[0].option.url, /after=6$/);
  assert.deepEqual(events.find(([n]) => n === 'reconnect')[1], { attempt: 1, delay: 0, reason: 'background' });
  assert.equal(events.at(-1)[0], 'done');
  assert.equal(display(events), TEXT);
});

test('app hidden for 10 s, the request died without a callback (iOS): on show the SDK drops it and resumes', async () => {
  const fake = createFakeWx({
    chat: () => ({ body: ndjson(EVENTS.slice(0, 8)), end: 'hang' }),
    events: () => ({ body: ndjson(EVENTS.slice(8)) }),
  });
  const { events, finished } = record(createClient(fake.options), { content: 'hi' });
  await waitFor(() => events.filter(([n]) => n === 'delta').length === 4);
  fake.hide();
  fake.advance(10000);
  assert.equal(fake.eventCalls().length, 0);
  fake.show();
  await drive(fake, finished);
  assert.equal(fake.chatCalls()[0].aborted, true, 'the dead request is let go');
  assert.match(fake.eventCalls()[0].option.url, /after=7$/);
  assert.equal(display(events), TEXT);
  assert.equal(events.at(-1)[1].text, TEXT);
});

test('hidden for less than backgroundTimeout: the connection is kept, nothing is resumed', async () => {
  const fake = createFakeWx({ chat: () => ({ body: ndjson(EVENTS.slice(0, 8)), end: 'hang' }), events: () => assert.fail('no resume') });
  const { events, finished } = record(createClient(fake.options), { content: 'hi' });
  await waitFor(() => events.filter(([n]) => n === 'delta').length === 4);
  fake.hide();
  fake.advance(2000);
  fake.show();
  assert.equal(fake.chatCalls()[0].aborted, false);
  fake.chatCalls()[0].push(ndjson(EVENTS.slice(8)));
  await finished;
  assert.equal(events.at(-1)[1].text, TEXT);
});

test('the backgroundTimeout option sets how long hidden means cut', async () => {
  const fake = createFakeWx({ chat: () => ({ body: ndjson(EVENTS.slice(0, 8)), end: 'hang' }), events: () => ({ body: ndjson(EVENTS.slice(8)) }) });
  const { events, finished } = record(createClient({ ...fake.options, backgroundTimeout: 1 }), { content: 'hi' });
  await waitFor(() => events.filter(([n]) => n === 'delta').length === 4);
  fake.hide();
  fake.advance(1500);
  fake.show();
  await drive(fake, finished);
  assert.equal(fake.eventCalls().length, 1);
  assert.equal(display(events), TEXT);
});

test('a silent stream is resumed after idleTimeout; pings keep it alive', async () => {
  const fake = createFakeWx({ chat: () => ({ body: ndjson(EVENTS.slice(0, 6)), end: 'hang' }), events: () => ({ body: ndjson(EVENTS.slice(6)) }) });
  const { events, finished } = record(createClient({ ...fake.options, idleTimeout: 30 }), { content: 'hi' });
  await waitFor(() => events.some(([n]) => n === 'delta'));
  fake.advance(20000);
  fake.chatCalls()[0].push(ndjson([{ type: 'ping' }]));
  fake.advance(20000); // 40 s since start, 20 s since the ping
  assert.equal(fake.eventCalls().length, 0);
  assert.equal(fake.chatCalls()[0].aborted, false);
  fake.advance(10000); // 30 s of silence
  assert.equal(fake.chatCalls()[0].aborted, true);
  await drive(fake, finished);
  assert.match(fake.eventCalls()[0].option.url, /after=5$/);
  assert.equal(events.find(([n]) => n === 'reconnect')[1].reason, 'idle');
  assert.equal(display(events), TEXT);
});

test('bounded attempts with bounded backoff, then onError interrupted', async () => {
  const fake = createFakeWx({
    chat: () => ({ body: ndjson(EVENTS.slice(0, 6)), end: { fail: 'request:fail timeout' } }),
    events: (o, n) => (n % 2 ? { fail: 'request:fail -101:net::ERR_CONNECTION_RESET' } : { status: 503, body: ndjson([{ type: 'error', code: 'service_unavailable', message: 'x' }]) }),
  });
  const { events, finished } = record(createClient({ ...fake.options, resumeAttempts: 5, resumeDelay: 1, resumeMaxDelay: 3 }), { content: 'hi' });
  await drive(fake, finished);
  assert.equal(fake.eventCalls().length, 5);
  assert.deepEqual(events.filter(([n]) => n === 'reconnect').map(([, e]) => e.delay), [0, 1, 2, 3, 3]);
  assert.deepEqual(events.at(-1), ['error', { code: 'interrupted', message: '连接中断，回答不完整' }]);
  assert.equal(display(events), textUpTo(5), 'what was shown stays');
});

test('attempts count from the last progress: a long answer may be cut many times', async () => {
  // Each connection brings one new event, then is cut: 14 cuts, more than resumeAttempts.
  const fake = createFakeWx({
    chat: () => ({ body: ndjson(EVENTS.slice(0, 1)), end: { fail: 'request:fail timeout' } }),
    events: (o, n, { after }) => ({ body: ndjson(EVENTS.slice(after + 1, after + 2)), end: after + 1 < LAST ? { fail: 'request:fail timeout' } : undefined }),
  });
  const { events, finished } = record(createClient({ ...fake.options, resumeAttempts: 2 }), { content: 'hi' });
  await drive(fake, finished);
  assert.equal(fake.eventCalls().length, LAST);
  assert.equal(events.at(-1)[1].text, TEXT);
});

test('a resumed stream answering 401 renews the token once and goes on', async () => {
  const fake = createFakeWx({
    chat: () => ({ body: ndjson(EVENTS.slice(0, 6)), end: { fail: 'request:fail timeout' } }),
    events: (o, n) => (n === 1 ? { status: 401, body: ndjson([{ type: 'error', code: 'unauthorized', message: 'x' }]) } : { body: ndjson(EVENTS.slice(6)) }),
  });
  const { events, finished } = record(createClient(fake.options), { content: 'hi' });
  await drive(fake, finished);
  const [first, second] = fake.eventCalls();
  assert.equal(first.option.header.Authorization, 'Bearer tok1');
  assert.equal(second.option.header.Authorization, 'Bearer tok2');
  assert.equal(fake.logins.length, 2);
  assert.equal(events.at(-1)[1].text, TEXT);
});

test('a resume refused for good (404: deleted meanwhile) ends at once with interrupted', async () => {
  const fake = createFakeWx({
    chat: () => ({ body: ndjson(EVENTS.slice(0, 6)), end: { fail: 'request:fail timeout' } }),
    events: () => ({ status: 404, body: ndjson([{ type: 'error', code: 'not_found', message: '不存在' }]) }),
  });
  const { events, finished } = record(createClient(fake.options), { content: 'hi' });
  await drive(fake, finished);
  assert.equal(fake.eventCalls().length, 1);
  assert.deepEqual(events.at(-1), ['error', { code: 'interrupted', message: '连接中断，回答不完整', status: 404, cause: 'not_found' }]);
});

test('a busy resume waits the advised retry_after, capped by resumeMaxDelay', async () => {
  const fake = createFakeWx({
    chat: () => ({ body: ndjson(EVENTS.slice(0, 6)), end: { fail: 'request:fail timeout' } }),
    events: (o, n) => (n === 1 ? { status: 503, header: { 'Retry-After': '4' }, body: '' } : { body: ndjson(EVENTS.slice(6)) }),
  });
  const { events, finished } = record(createClient(fake.options), { content: 'hi' });
  await drive(fake, finished);
  assert.deepEqual(events.filter(([n]) => n === 'reconnect').map(([, e]) => [e.delay, e.reason]), [[0, 'network'], [4, 'status']]);
  assert.equal(events.at(-1)[1].text, TEXT);
});

test('a cut before start sends the request again under the same key, and follows what it answers', async () => {
  for (const spec of [
    { body: '{"type":"sta', end: undefined }, // half a line, reported as success
    { body: '', end: undefined },
    { body: '{"type":"sta', end: { fail: 'request:fail -103:net::ERR_CONNECTION_ABORTED' } },
  ]) {
    // The second copy is answered with the first's answer from its start (the server replays it).
    const fake = createFakeWx({ chat: (o, n) => (n === 1 ? spec : { body: ndjson(EVENTS) }),
      events: () => assert.fail('no resume without a message id') });
    const { events, finished } = record(createClient(fake.options), { content: 'hi' });
    await drive(fake, finished);
    assert.equal(events.at(-1)[0], 'done', JSON.stringify(spec));
    assert.equal(display(events), TEXT);
    assert.deepEqual(events.filter(([n]) => n === 'reconnect').map(([, e]) => e.attempt), [1]);
    const chats = fake.calls.filter((c) => c.path === '/api/v1/chat');
    assert.equal(chats.length, 2);
    assert.equal(chats[0].option.header['Idempotency-Key'], chats[1].option.header['Idempotency-Key']);
    assert.equal(fake.eventCalls().length, 0);
  }
});

test('a cut before start is reported when sending again is off (resumeAttempts: 0)', async () => {
  for (const spec of [
    { body: '{"type":"sta', end: undefined },
    { body: '{"type":"sta', end: { fail: 'request:fail -103:net::ERR_CONNECTION_ABORTED' } },
  ]) {
    const fake = createFakeWx({ chat: () => spec });
    const { events, finished } = record(createClient({ ...fake.options, resumeAttempts: 0 }), { content: 'hi' });
    await drive(fake, finished);
    assert.deepEqual(events.map(([n]) => n), ['error']);
    assert.equal(events[0][1].code, 'network_error');
  }
});

test('hidden before start: the request is sent again when the app is shown', async () => {
  const fake = createFakeWx({ chat: (o, n) => (n === 1 ? { body: '', end: 'hang' } : { body: ndjson(EVENTS) }) });
  const { events, finished } = record(createClient(fake.options), { content: 'hi' });
  await waitFor(() => fake.calls.some((c) => c.path === '/api/v1/chat'));
  fake.hide();
  fake.advance(10000);
  fake.show();
  await drive(fake, finished);
  assert.equal(display(events), TEXT);
  assert.equal(fake.calls.filter((c) => c.path === '/api/v1/chat').length, 2);
});

test('a server without seq (older than v1.1) is not resumed: interrupted as before', async () => {
  const plain = EVENTS.map(({ seq, ...e }) => e);
  const fake = createFakeWx({ chat: () => ({ body: ndjson(plain.slice(0, 6)), end: { fail: 'request:fail timeout' } }), events: () => assert.fail('no resume') });
  const { events, finished } = record(createClient(fake.options), { content: 'hi' });
  await drive(fake, finished);
  assert.equal(events.at(-1)[1].code, 'interrupted');
});

test('resumeAttempts: 0 turns resume off', async () => {
  const fake = createFakeWx({ chat: () => ({ body: ndjson(EVENTS.slice(0, 6)), end: { fail: 'request:fail timeout' } }), events: () => assert.fail('no resume') });
  const { events, finished } = record(createClient({ ...fake.options, resumeAttempts: 0 }), { content: 'hi' });
  await drive(fake, finished);
  assert.equal(events.at(-1)[1].code, 'interrupted');
});

test('a follower stream that ends at retract ends the answer as retracted', async () => {
  const fake = createFakeWx({
    chat: () => ({ body: ndjson(EVENTS.slice(0, 6)), end: { fail: 'request:fail timeout' } }),
    events: () => ({ body: ndjson([{ type: 'retract', reason: 'content_safety', seq: 6 }]) }),
  });
  const { events, finished } = record(createClient(fake.options), { content: 'hi' });
  await drive(fake, finished);
  assert.deepEqual(events.slice(-2).map(([n]) => n), ['retract', 'done']);
  assert.equal(events.at(-1)[1].finish_reason, 'content_filter');
  assert.equal(events.at(-1)[1].text, '');
  assert.equal(fake.eventCalls().length, 1);
});

test('abort after start sends cancel for the message, stops reading, and no callback fires', async () => {
  const fake = createFakeWx({ chat: () => ({ body: ndjson(EVENTS.slice(0, 6)), end: 'hang' }) });
  const { events, handle } = record(createClient(fake.options), { content: 'hi' });
  await waitFor(() => events.some(([n]) => n === 'delta'));
  handle.abort();
  await waitFor(() => fake.cancels.length === 1);
  await fake.settle();
  assert.deepEqual(fake.cancels, ['m1']);
  const cancel = fake.calls.find((c) => c.path.endsWith('/cancel'));
  assert.equal(cancel.option.method, 'POST');
  assert.equal(cancel.option.header.Authorization, 'Bearer tok1');
  assert.equal(fake.chatCalls()[0].aborted, true);
  const seen = events.length;
  fake.advance(120000); // no idle watch, no reconnection after an abort
  assert.equal(fake.pendingTimers().length, 0);
  assert.equal(events.length, seen);
  assert.equal(fake.eventCalls().length, 0);
});

test('abort while reconnecting cancels the wait and the answer', async () => {
  const fake = createFakeWx({
    chat: () => ({ body: ndjson(EVENTS.slice(0, 6)), end: { fail: 'request:fail timeout' } }),
    events: () => ({ fail: 'request:fail timeout' }),
  });
  const { events, handle } = record(createClient(fake.options), { content: 'hi' });
  await waitFor(() => events.filter(([n]) => n === 'reconnect').length === 1);
  fake.fireNext();
  await waitFor(() => events.filter(([n]) => n === 'reconnect').length === 2);
  handle.abort();
  await waitFor(() => fake.cancels.length === 1);
  assert.equal(fake.pendingTimers().length, 0);
  assert.equal(fake.eventCalls().length, 1);
  assert.ok(!events.some(([n]) => n === 'error' || n === 'done'));
});

test('abort before start reads on, unseen, until start names the message, then cancels it', async () => {
  const fake = createFakeWx({ chat: () => ({ chunks: [toBytes(ndjson([{ type: 'queued', position: 2 }])), toBytes(ndjson(EVENTS.slice(0, 3)))], end: 'hang' }) });
  const client = createClient(fake.options);
  const events = [];
  const handle = client.chat({
    content: 'hi',
    onStart: (ev) => events.push(['start', ev]),
    onQueued: (ev) => {
      events.push(['queued', ev]);
      handle.abort();
    },
    onDone: (ev) => events.push(['done', ev]),
    onError: (ev) => events.push(['error', ev]),
  });
  await waitFor(() => fake.cancels.length === 1);
  assert.deepEqual(fake.cancels, ['m1']);
  assert.equal(fake.chatCalls()[0].aborted, true);
  assert.deepEqual(events.map(([n]) => n), ['queued']);
});

test('abort({cancel: false}) only stops listening: no cancel is sent (leaving a page)', async () => {
  const fake = createFakeWx({ chat: () => ({ body: ndjson(EVENTS.slice(0, 6)), end: 'hang' }) });
  const { events, handle } = record(createClient(fake.options), { content: 'hi' });
  await waitFor(() => events.some(([n]) => n === 'delta'));
  handle.abort({ cancel: false });
  await fake.settle();
  assert.equal(fake.chatCalls()[0].aborted, true);
  assert.deepEqual(fake.cancels, []);
  assert.equal(fake.pendingTimers().length, 0);
});
