'use strict';
// The SDK's `cloud` option (WeChat Cloud Run): logins through wx.cloud.callContainer, never
// wx.login nor wx.request; everything else over wx.request to baseUrl with the token.
// The same flow against real servers: http/cloudrun.test.js.

const test = require('node:test');
const assert = require('node:assert/strict');
const { createClient } = require('../miniprogram/mpchat.js');
const { createFakeWx, record, ndjson } = require('./helpers/fake-wx.js');

const START = { type: 'start', conversation_id: 'c1', message_id: 'm1', model: 'fake-model', ai_generated: true, label: 'AI 生成' };
const OK_BODY = ndjson([START, { type: 'delta', text: '好的' }, { type: 'done', finish_reason: 'stop' }]);
const CLOUD = { env: 'prod-1a2b', service: 'mpchat-login' };

/** A fake wx.cloud.callContainer: answers each login with `answer(n)` (default a new token). */
function fakeCallContainer(answer) {
  const calls = [];
  function callContainer(option) {
    calls.push(option);
    const n = calls.length;
    const res = answer ? answer(n) : { statusCode: 200, header: {}, data: { token: 'ctok' + n, expires_in: 3600 } };
    Promise.resolve().then(() => (res.fail ? option.fail({ errMsg: res.fail }) : option.success(res)));
  }
  return { callContainer, calls };
}

test('cloud: logs in through callContainer, then chats over wx.request with the token', async () => {
  const fake = createFakeWx({ chat: () => ({ body: OK_BODY }) });
  const cc = fakeCallContainer();
  const client = createClient({ ...fake.options, cloud: { ...CLOUD, callContainer: cc.callContainer } });
  const events = await record(client, { content: '你好' }).finished;
  assert.equal(events.at(-1)[0], 'done');
  assert.equal(cc.calls.length, 1);
  const login = cc.calls[0];
  assert.deepEqual(login.config, { env: 'prod-1a2b' });
  assert.equal(login.path, '/api/v1/login');
  assert.equal(login.method, 'POST');
  assert.equal(login.header['X-WX-SERVICE'], 'mpchat-login');
  assert.deepEqual(login.data, { code: 'callContainer' });
  assert.equal(fake.logins.length, 0, 'no wx.login');
  assert.equal(fake.calls.filter((c) => c.path === '/api/v1/login').length, 0, 'no login over wx.request');
  const chat = fake.chatCalls()[0].option;
  assert.equal(chat.url, 'https://chat.example.com/api/v1/chat');
  assert.equal(chat.header.Authorization, 'Bearer ctok1');
  assert.equal(chat.enableChunked, true);
});

test('cloud: a 401 renews the token through callContainer once', async () => {
  const fake = createFakeWx({ chat: (option, n) => (n === 1 ? { status: 401, body: ndjson([{ type: 'error', code: 'unauthorized', message: 'x' }]) } : { body: OK_BODY }) });
  fake.store.set('mpchat_session', { token: 'stale', expiresAt: Date.now() + 3600e3 });
  const cc = fakeCallContainer();
  const client = createClient({ ...fake.options, cloud: { ...CLOUD, callContainer: cc.callContainer } });
  const events = await record(client, { content: 'hi' }).finished;
  assert.deepEqual(events.map(([n]) => n), ['start', 'delta', 'done']);
  assert.equal(cc.calls.length, 1);
  assert.deepEqual(fake.chatCalls().map((c) => c.option.header.Authorization), ['Bearer stale', 'Bearer ctok1']);
});

test('cloud: a refused or failed login is reported with its code', async () => {
  const fake = createFakeWx({ chat: () => ({ body: OK_BODY }) });
  const refused = fakeCallContainer(() => ({ statusCode: 401, header: {}, data: { error: { code: 'unauthorized', message: '请通过 wx.cloud.callContainer 登录' } } }));
  const client = createClient({ ...fake.options, cloud: { ...CLOUD, callContainer: refused.callContainer } });
  const events = await record(client, { content: 'hi' }).finished;
  assert.equal(events.at(-1)[0], 'error');
  assert.equal(events.at(-1)[1].code, 'unauthorized');
  assert.equal(fake.chatCalls().length, 0);

  const down = fakeCallContainer(() => ({ fail: 'cloud.callContainer:fail timeout' }));
  const other = createClient({ ...fake.options, storageKey: 'other', cloud: { ...CLOUD, callContainer: down.callContainer } });
  await assert.rejects(other.login(), (err) => err.code === 'network_error' && /timeout/.test(err.message));
});

test('cloud: env and service are required', () => {
  const fake = createFakeWx({ chat: () => ({ body: OK_BODY }) });
  assert.throws(() => createClient({ ...fake.options, cloud: { env: 'prod-1a2b' } }), /cloud needs env and service/);
});
