'use strict';
// The demo mini program's chat page (example/pages/chat/chat.js) driven with a fake Page runtime
// and the fake wx: 停止 cancels and leaves no empty bubble, reconnecting is shown, reasoning is
// kept apart and folded, a snapshot replaces the text; the balance, 额度已用完 on a 402, and 购买.

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
function loadPage(client, app = { client }) {
  let config;
  global.Page = (c) => (config = c);
  global.getApp = () => app;
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

// ---- quota and credits ------------------------------------------------------------------------

const QUOTA = { enabled: true, remaining: 1, free_remaining: 1, reset_s: 3600, credits: 0 };
const PAID_QUOTA = { enabled: true, remaining: 1001, free_remaining: 1, reset_s: 3500, credits: 1000 };
const PAYMENT = { timeStamp: '1718000000', nonceStr: 'n', package: 'prepay_id=wx1', signType: 'RSA', paySign: 's' };
const ORDER = { order_id: 'o1', status: 'pending', plan: 'p10', title: '1000 点', price_fen: 1000, credits: 1000, created_at: 'x', paid_at: null };

/** The demo app as app.js wires it: the client's onQuota goes to the page's quotaListener. */
function demo({ chat = () => ({}), me = QUOTA, pay = 'pay' } = {}) {
  const fake = createFakeWx({
    chat,
    api: (option, path) => {
      if (path === '/api/v1/me') return { status: 200, body: { user_id: 'u1', rate_limit: {}, quota: me } };
      if (path === '/api/v1/plans') return { status: 200, body: { items: [{ id: 'p10', title: '1000 点', price_fen: 1000, credits: 1000 }] } };
      if (path === '/api/v1/orders') return { status: 201, body: { ...ORDER, payment: PAYMENT } };
      if (path === '/api/v1/orders/o1') return { status: 200, body: { ...ORDER, status: 'paid', quota: PAID_QUOTA } };
      return { status: 404, body: { error: { code: 'not_found', message: 'x' } } };
    },
  });
  const app = {};
  const payments = [];
  app.client = createClient({
    ...fake.options,
    onQuota: (q) => app.quotaListener && app.quotaListener(q),
    requestPayment: (option) => {
      payments.push(option);
      setImmediate(() => (pay === 'pay' ? option.success({}) : option.fail({ errMsg: 'requestPayment:fail cancel' })));
    },
  });
  const page = loadPage(app.client, app);
  const updates = [];
  const setData = page.setData;
  page.setData = (u) => {
    updates.push(u);
    setData(u);
  };
  page.onLoad({});
  return { fake, page, payments, updates };
}

test('the balance from /me is shown on load, and updated by an answer\'s done.quota', async () => {
  const { page } = demo({
    chat: () => ({ body: ndjson([START, { type: 'delta', text: '好', seq: 1 }, { type: 'done', finish_reason: 'stop', seq: 2, quota: { ...QUOTA, remaining: 0, free_remaining: 0 } }]) }),
  });
  await waitFor(() => page.data.quotaText === '额度 1 · 免费 1');
  assert.equal(page.data.quotaExceeded, false);
  send(page, '你好');
  await waitFor(() => page.data.sending === false && page.data.quotaText === '额度 0');
});

test('a 402 says 额度已用完 and offers 购买; buying a plan pays, polls, and shows the new balance', async () => {
  const { page, payments } = demo({
    chat: () => ({ status: 402, body: ndjson([{ type: 'error', code: 'quota_exceeded', message: '今日额度已用完' }]) }),
    me: { ...QUOTA, remaining: 0, free_remaining: 0 },
  });
  await waitFor(() => page.data.quotaText === '额度 0');
  send(page, '你好');
  await waitFor(() => page.data.sending === false);
  assert.equal(page.data.notice, '额度已用完');
  assert.equal(page.data.quotaExceeded, true);
  assert.deepEqual(page.data.messages.map((m) => m.role), ['user'], 'no empty answer bubble');

  page.openPlans();
  await waitFor(() => page.data.showPlans);
  assert.deepEqual(page.data.plans, [{ id: 'p10', title: '1000 点', credits: 1000, price: '10.00' }]);
  page.buyPlan({ currentTarget: { dataset: { id: 'p10' } } });
  assert.equal(page.data.buying, true);
  assert.equal(page.data.showPlans, false);
  await waitFor(() => page.data.buying === false, 'bought');
  assert.equal(payments.length, 1);
  assert.equal(payments[0].package, 'prepay_id=wx1');
  assert.equal(page.data.notice, '购买成功，额度已到账');
  assert.equal(page.data.quotaExceeded, false);
  assert.equal(page.data.quotaText, '额度 1001 · 免费 1 · 已购 1000');
});

test('a cancelled payment says so and changes nothing', async () => {
  const { page } = demo({ pay: 'cancel' });
  await waitFor(() => page.data.quotaText !== '');
  page.buyPlan({ currentTarget: { dataset: { id: 'p10' } } });
  await waitFor(() => page.data.buying === false);
  assert.equal(page.data.notice, '已取消支付');
  assert.equal(page.data.quotaText, '额度 1 · 免费 1');
});

test('with quotas off no balance and no 购买 are shown', async () => {
  const { page, updates } = demo({ me: { enabled: false } });
  await waitFor(() => updates.some((u) => 'quotaText' in u), 'the quota was shown');
  assert.equal(page.data.quotaText, '');
  assert.equal(page.data.quotaExceeded, false);
});

/**
 * The demo's app.js, loaded as the mini program runtime would (`App()`), with `config.js`'s exports
 * replaced by `config` and `wx` as given; all of it undone after the test. Returns the app.
 */
function loadDemoApp(t, config, wx) {
  const dir = path.join(__dirname, '..', 'miniprogram', 'example');
  const configPath = require.resolve(path.join(dir, 'config.js'));
  const appPath = require.resolve(path.join(dir, 'app.js'));
  const saved = require.cache[configPath];
  require(configPath);
  require.cache[configPath].exports = config;
  global.wx = wx;
  let appConfig;
  global.App = (c) => (appConfig = c);
  global.getApp = () => appConfig;
  t.after(() => {
    delete require.cache[appPath];
    if (saved) require.cache[configPath] = saved;
    else delete require.cache[configPath];
    delete global.wx;
    delete global.App;
  });
  delete require.cache[appPath];
  require(appPath);
  return appConfig;
}

test('app.js with fakeWechatPay: 购买 confirms, then pays the order at the fake WeChat Pay', async (t) => {
  const controls = [];
  const fake = createFakeWx({
    chat: () => ({}),
    api: (option, path) => {
      if (path === '/api/v1/orders') return { status: 201, body: { ...ORDER, payment: PAYMENT } };
      if (path === '/api/v1/orders/o1') return { status: 200, body: { ...ORDER, status: controls.length ? 'paid' : 'pending', quota: PAID_QUOTA } };
      if (option.url === 'http://127.0.0.1:9300/_control/pay') {
        controls.push(option.data);
        return { status: 200, body: { paid: true, statuses: [204] } };
      }
      return { status: 404, body: { error: { code: 'not_found', message: 'x' } } };
    },
  });
  let answers = [true];
  const o = fake.options;
  const appConfig = loadDemoApp(t, { baseUrl: 'https://chat.example.com', devLoginCode: 'demo', fakeWechatPay: 'http://127.0.0.1:9300' }, {
    request: o.request, login: o.login, canIUse: o.canIUse, ...o.storage, onAppShow: o.onAppShow, onAppHide: o.onAppHide,
    showModal: (m) => setImmediate(() => m.success({ confirm: answers.shift(), cancel: false })),
  });
  const told = [];
  appConfig.quotaListener = (q) => told.push(q);

  const result = await appConfig.client.buy('p10');
  assert.equal(result.status, 'paid');
  assert.deepEqual(controls, [{ out_trade_no: 'o1', notify: 'normal' }], 'paid at the fake, for the order the service made');
  assert.deepEqual(told, [PAID_QUOTA], 'onQuota reached the page');

  answers = [false];
  assert.equal((await appConfig.client.buy('p10')).status, 'cancelled', 'declining the dialog is a cancel');
  assert.equal(controls.length, 1);
});

test('app.js with config.cloud: wx.cloud.init on launch, logins through wx.cloud.callContainer', async (t) => {
  const fake = createFakeWx({ chat: () => ({}), api: () => ({ status: 200, body: { user_id: 'u1', quota: null } }) });
  const inits = [];
  const containerCalls = [];
  const o = fake.options;
  const appConfig = loadDemoApp(t, { baseUrl: 'https://chat.example.com', devLoginCode: 'demo', fakeWechatPay: '', cloud: { env: 'prod-1a2b', service: 'mpchat-login' } }, {
    request: o.request, login: o.login, canIUse: o.canIUse, ...o.storage, onAppShow: o.onAppShow, onAppHide: o.onAppHide,
    cloud: {
      init: (...args) => inits.push(args),
      callContainer: (option) => {
        containerCalls.push(option);
        setImmediate(() => option.success({ statusCode: 200, header: {}, data: { token: 'ctok', expires_in: 3600 } }));
      },
    },
  });
  appConfig.onLaunch();
  assert.equal(inits.length, 1);
  await appConfig.client.me();
  assert.equal(containerCalls.length, 1);
  assert.equal(containerCalls[0].header['X-WX-SERVICE'], 'mpchat-login');
  assert.deepEqual(containerCalls[0].config, { env: 'prod-1a2b' });
  assert.equal(fake.logins.length, 0, 'neither wx.login nor the dev code');
  const me = fake.calls.find((c) => c.path === '/api/v1/me');
  assert.equal(me.option.header.Authorization, 'Bearer ctok');
});

test('按住说话 records while held, shows the transcript as the question, streams the answer; 播放 speaks it', async () => {
  const recorder = {
    start(o) { this.format = o.format; },
    stop() { setImmediate(() => this.stopCb({ tempFilePath: 'wxfile://rec.mp3' })); },
    onStop(cb) { this.stopCb = cb; },
    onError() {},
  };
  const played = [];
  const fake = createFakeWx({
    chat: () => assert.fail('no typed chat'),
    api: (option, p) => {
      if (p.startsWith('/api/v1/voice')) {
        return { body: ndjson([{ type: 'transcript', text: '今天几号' }, START, { type: 'delta', text: '今天三十号。', seq: 1 },
          { type: 'done', finish_reason: 'stop', seq: 2 }]) };
      }
      if (p.includes('/speech')) return p.endsWith('sentence=0') ? { status: 200, header: { 'Content-Type': 'audio/wav' }, body: 'RIFF' } : { status: 204, body: '' };
      return { status: 404, body: { error: { code: 'not_found', message: 'x' } } };
    },
  });
  const page = loadPage(createClient({
    ...fake.options,
    getRecorderManager: () => recorder,
    getFileSystemManager: () => ({
      readFile(o) { setImmediate(() => o.success({ data: new ArrayBuffer(8) })); },
      writeFile(o) { setImmediate(() => o.success()); },
    }),
    createInnerAudioContext: () => ({
      play() { played.push(this.src); setImmediate(() => this.ended()); },
      stop() {}, destroy() {}, onEnded(cb) { this.ended = cb; }, onError() {},
    }),
  }));
  page.startTalk();
  assert.equal(page.data.talking, true);
  assert.equal(recorder.format, 'mp3');
  assert.equal(page.data.messages[0].content, '（正在听…）');
  page.endTalk();
  await waitFor(() => !page.data.sending);
  assert.deepEqual(page.data.messages.map((m) => m.content), ['今天几号', '今天三十号。']);
  assert.equal(page.data.messages[1].id, 'm1');
  page.play({ currentTarget: { dataset: { id: 'm1' } } });
  await waitFor(() => played.length === 1);
  assert.ok(fake.calls.some((c) => c.path === '/api/v1/messages/m1/speech?sentence=0'));
});

test('an opened conversation marks where earlier messages were summarised', async () => {
  const items = [
    { id: 'a', role: 'user', content: '我叫小明', status: 'complete', summarized: true },
    { id: 'b', role: 'assistant', content: '你好小明', status: 'complete', summarized: true },
    { id: 'c', role: 'user', content: '我叫什么', status: 'complete', summarized: false },
  ];
  const fake = createFakeWx({
    chat: () => assert.fail('no chat'),
    api: (option, p) => (p.includes('/messages') ? { body: { items, next: null } } : { status: 404, body: { error: { code: 'not_found', message: 'x' } } }),
  });
  const page = loadPage(createClient(fake.options));
  page.open('c1');
  await waitFor(() => page.data.messages.length === 3);
  assert.equal(page.data.summaryEnd, 1);
});
