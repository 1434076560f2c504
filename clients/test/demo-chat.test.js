'use strict';
// The demo mini program's chat page (example/pages/chat/chat.js) driven with a fake Page runtime
// and the fake wx: 停止 cancels and leaves no empty bubble, reconnecting is shown, reasoning is
// kept apart and folded, a snapshot replaces the text.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { createClient } = require('../miniprogram/example/lib/mpchat.js');
const { createFakeWx, ndjson, drive, waitFor } = require('./helpers/fake-wx.js');

const PAGE = path.join(__dirname, '..', 'miniprogram', 'example', 'pages', 'chat', 'chat.js');
const START = { type: 'start', conversation_id: 'c1', message_id: 'm1', model: 'm', ai_generated: true, label: 'AI 生成', seq: 0 };

/** Apply a setData path such as `messages[3].content` to a plain object. */
function setPath(obj, key, value) {
  const parts = key.match(/[^.[\]]+/g);
  let o = obj;
  for (let i = 0; i < parts.length - 1; i++) o = o[parts[i]];
  o[parts.at(-1)] = value;
}

/** Load the page with a fake Page()/getApp(); returns a page instance. */
function loadPage(client) {
  let config;
  global.Page = (c) => (config = c);
  global.getApp = () => ({ client });
  delete require.cache[require.resolve(PAGE)];
  require(PAGE);
  const page = Object.create(config);
  page.data = JSON.parse(JSON.stringify(config.data));
  page.setData = (update) => {
    for (const [k, v] of Object.entries(update)) setPath(page.data, k, v);
  };
  return page;
}

function send(page, text) {
  page.setData({ input: text });
  page.send();
}

test('停止 before the first word: cancel is sent, no empty bubble is left, the page says 已停止', async () => {
  const fake = createFakeWx({ chat: () => ({ body: ndjson([START]), end: 'hang' }) });
  const page = loadPage(createClient(fake.options));
  send(page, '你好');
  await waitFor(() => page.data.label === 'AI 生成');
  assert.equal(page.data.messages.length, 2);
  page.stop();
  await waitFor(() => fake.cancels.length === 1);
  assert.deepEqual(fake.cancels, ['m1']);
  assert.deepEqual(page.data.messages.map((m) => m.role), ['user']);
  assert.equal(page.data.sending, false);
  assert.equal(page.data.notice, '已停止');
});

test('停止 after some words keeps them, marked stopped', async () => {
  const fake = createFakeWx({ chat: () => ({ body: ndjson([START, { type: 'delta', text: '半句', seq: 1 }]), end: 'hang' }) });
  const page = loadPage(createClient(fake.options));
  send(page, '你好');
  await waitFor(() => page.data.messages[1].content === '半句');
  page.stop();
  await waitFor(() => fake.cancels.length === 1);
  assert.deepEqual(page.data.messages[1], { id: 'm1', role: 'assistant', content: '半句', pending: false, stopped: true });
});

test('a cut shows reconnecting, then the answer goes on; reasoning is kept apart, folded', async () => {
  const fake = createFakeWx({
    chat: () => ({ body: ndjson([START, { type: 'reasoning', text: '想', seq: 1 }, { type: 'delta', text: '一', seq: 2 }]), end: { fail: 'request:fail -103:net::ERR_CONNECTION_ABORTED' } }),
    events: () => ({ body: ndjson([{ type: 'snapshot', text: '一二', seq: 3 }, { type: 'delta', text: '三', seq: 4 }, { type: 'done', finish_reason: 'stop', seq: 5 }]), end: 'hang' }),
  });
  const notices = [];
  const page = loadPage(createClient(fake.options));
  const setData = page.setData;
  let settled;
  const ended = new Promise((resolve) => (settled = resolve));
  page.setData = (u) => {
    if ('notice' in u) notices.push(u.notice);
    setData(u);
    if (u.sending === false) settled();
  };
  send(page, '你好');
  await drive(fake, ended);
  assert.ok(notices.includes('连接中断，正在重新连接…'), JSON.stringify(notices));
  assert.equal(page.data.notice, '');
  const answer = page.data.messages[1];
  assert.equal(answer.content, '一二三');
  assert.equal(answer.reasoning, '想');
  assert.equal(answer.pending, false);
  assert.ok(!answer.showReasoning, 'folded at first');
  page.toggleReasoning({ currentTarget: { dataset: { index: 1 } } });
  assert.equal(page.data.messages[1].showReasoning, true);
});

test('leaving the page stops listening without cancelling the answer', async () => {
  const fake = createFakeWx({ chat: () => ({ body: ndjson([START]), end: 'hang' }) });
  const page = loadPage(createClient(fake.options));
  send(page, '你好');
  await waitFor(() => page.data.label === 'AI 生成');
  page.onUnload();
  await fake.settle();
  assert.equal(fake.chatCalls()[0].aborted, true);
  assert.deepEqual(fake.cancels, []);
});

test('strict mode: an answer stopped by the check keeps what was shown and says why', async () => {
  const fake = createFakeWx({
    chat: () => ({ body: ndjson([START, { type: 'delta', text: '第一句。', seq: 1 }, { type: 'done', finish_reason: 'content_filter', seq: 2 }]) }),
  });
  const page = loadPage(createClient(fake.options));
  send(page, '你好');
  await waitFor(() => page.data.sending === false);
  assert.equal(page.data.messages[1].content, '第一句。');
  assert.equal(page.data.notice, '后续内容未通过内容安全检查，已停止');
});
