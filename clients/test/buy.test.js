'use strict';
// Quota and credits in the SDK: plans(), buy() (order, wx.requestPayment, polling the order with
// bounded backoff), onQuota (from a chat's `done`, after a 402, after a purchase). Time is the
// fake's clock and timers: no real waits.

const test = require('node:test');
const assert = require('node:assert/strict');
const { createClient } = require('../miniprogram/mpchat.js');
const { createFakeWx, record, ndjson, drive, waitFor } = require('./helpers/fake-wx.js');

const PAYMENT = { timeStamp: '1718000000', nonceStr: 'n0nce', package: 'prepay_id=wx123', signType: 'RSA', paySign: 'c2lnbg==' };
const ORDER = { order_id: 'o1', status: 'pending', plan: 'p10', title: '1000 点', price_fen: 1000, credits: 1000, created_at: '2025-01-01T00:00:00Z', paid_at: null };
const QUOTA_BEFORE = { enabled: true, remaining: 0, free_remaining: 0, reset_s: 3600, credits: 0 };
const QUOTA_AFTER = { enabled: true, remaining: 1000, free_remaining: 0, reset_s: 3590, credits: 1000 };
const START = { type: 'start', conversation_id: 'c1', message_id: 'm1', model: 'fake-model', ai_generated: true, label: 'AI 生成', seq: 0 };

const ok = (body, status = 200) => ({ status, body });
/** The waits between queries (the timers that ran; a stalled query's guard is cleared on its answer). */
const waits = (fake) => fake.timers.filter((t) => !t.cleared).map((t) => t.ms);
const refused = (status, code) => ({ status, body: { error: { code, message: code } } });

/**
 * A fake service for the quota endpoints: `orders` is the list of answers to successive
 * GET /api/v1/orders/o1 (the last one repeats); every call is logged in `log`.
 */
function paymentServer({ orders = [ok({ ...ORDER, status: 'paid', paid_at: '2025-01-01T00:00:05Z', quota: QUOTA_AFTER })], create, me, plans } = {}) {
  const log = [];
  let polls = 0;
  const api = (option, path) => {
    log.push([option.method, path, option.data]);
    if (path === '/api/v1/plans') return plans || ok({ items: [{ id: 'p10', title: '1000 点', price_fen: 1000, credits: 1000 }] });
    if (path === '/api/v1/orders' && option.method === 'POST') return create || ok({ ...ORDER, payment: PAYMENT }, 201);
    if (path === '/api/v1/orders/o1') {
      const answer = orders[Math.min(polls, orders.length - 1)];
      polls += 1;
      return typeof answer === 'function' ? answer() : answer;
    }
    if (path === '/api/v1/me') return me || ok({ user_id: 'u1', rate_limit: { limit: 20, window_s: 60, remaining: 19, reset_s: 60 }, quota: QUOTA_BEFORE });
    return refused(404, 'not_found');
  };
  return { api, log, polls: () => log.filter(([m, p]) => m === 'GET' && p === '/api/v1/orders/o1').length };
}

/** wx.requestPayment that answers as the user does: `pay`, `cancel`, or a failure's errMsg. */
function payer(how) {
  const calls = [];
  const fn = (option) => {
    calls.push(option);
    setImmediate(() => {
      if (how === 'pay') option.success({ errMsg: 'requestPayment:ok' });
      else if (how === 'cancel') option.fail({ errMsg: 'requestPayment:fail cancel' });
      else option.fail({ errMsg: how });
    });
  };
  return { fn, calls };
}

function setup({ how = 'pay', server = paymentServer(), clientOptions = {}, chat } = {}) {
  const fake = createFakeWx({ chat: chat || (() => ({})), api: server.api });
  const payment = payer(how);
  const quotas = [];
  const client = createClient({
    ...fake.options,
    requestPayment: payment.fn,
    onQuota: (quota, info) => quotas.push([info.source, quota]),
    ...clientOptions,
  });
  return { fake, client, server, payment, quotas };
}

test('plans() lists the credit packs', async () => {
  const { client, fake } = setup();
  assert.deepEqual(await client.plans(), [{ id: 'p10', title: '1000 点', price_fen: 1000, credits: 1000 }]);
  const call = fake.calls.at(-1).option;
  assert.equal(call.url, 'https://chat.example.com/api/v1/plans');
  assert.equal(call.header.Authorization, 'Bearer tok1');
});

test('plans() is empty when the service sells none', async () => {
  const { client } = setup({ server: paymentServer({ plans: ok({ items: [] }) }) });
  assert.deepEqual(await client.plans(), []);
});

test('buy: order, wx.requestPayment with its parameters, poll until paid; onQuota gets the new balance', async () => {
  const server = paymentServer({ orders: [ok({ ...ORDER, quota: QUOTA_BEFORE }), ok({ ...ORDER, status: 'paid', paid_at: '2025-01-01T00:00:05Z', quota: QUOTA_AFTER })] });
  const { client, fake, payment, quotas } = setup({ server });
  const result = await drive(fake, client.buy('p10'));

  assert.deepEqual(server.log[0], ['POST', '/api/v1/orders', { plan: 'p10' }]);
  assert.equal(payment.calls.length, 1);
  const { success, fail, ...params } = payment.calls[0];
  assert.deepEqual(params, PAYMENT, 'wx.requestPayment gets the order payment parameters as they are');
  assert.equal(typeof success, 'function');
  assert.equal(typeof fail, 'function');

  assert.deepEqual(result, {
    status: 'paid',
    order_id: 'o1',
    order: { ...ORDER, status: 'paid', paid_at: '2025-01-01T00:00:05Z' },
    quota: QUOTA_AFTER,
  });
  assert.equal(server.polls(), 2, 'asked at once (pending), then once more (paid)');
  assert.deepEqual(waits(fake), [1000]);
  assert.equal(fake.pendingTimers().length, 0, 'nothing left scheduled');
  assert.deepEqual(quotas, [['purchase', QUOTA_AFTER]], 'onQuota once, after the purchase');
});

test('buy: an order already paid at the first query needs no wait', async () => {
  const { client, fake, server } = setup();
  const result = await drive(fake, client.buy('p10'));
  assert.equal(result.status, 'paid');
  assert.equal(server.polls(), 1);
  assert.deepEqual(waits(fake), []);
  assert.equal(fake.pendingTimers().length, 0);
});

test('buy: the user cancels the payment sheet: resolves cancelled, no polling, no onQuota', async () => {
  const { client, fake, server, quotas } = setup({ how: 'cancel' });
  const result = await drive(fake, client.buy('p10'));
  assert.deepEqual(result, { status: 'cancelled', order_id: 'o1', order: ORDER });
  assert.equal(server.polls(), 0);
  assert.equal(fake.timers.length, 0);
  assert.deepEqual(quotas, []);
});

test('buy: wx.requestPayment fails (not a cancel): rejects payment_failed with the order id, no polling', async () => {
  const { client, fake, server, quotas } = setup({ how: 'requestPayment:fail 支付环境异常' });
  await assert.rejects(drive(fake, client.buy('p10')), (err) => {
    assert.equal(err.name, 'MpchatError');
    assert.equal(err.code, 'payment_failed');
    assert.equal(err.message, 'requestPayment:fail 支付环境异常');
    assert.equal(err.orderId, 'o1');
    return true;
  });
  assert.equal(server.polls(), 0);
  assert.deepEqual(quotas, []);
});

test('buy: no wx.requestPayment at all is a payment_failed too', async () => {
  const { client, fake } = setup({ clientOptions: { requestPayment: undefined } });
  await assert.rejects(drive(fake, client.buy('p10')), { code: 'payment_failed', orderId: 'o1' });
});

test('buy: an order the service refuses to make rejects with its code; nothing is paid', async () => {
  for (const [status, code] of [[404, 'not_found'], [429, 'rate_limited'], [503, 'service_unavailable']]) {
    const { client, fake, payment } = setup({ server: paymentServer({ create: refused(status, code) }) });
    await assert.rejects(drive(fake, client.buy('nope')), { code, status });
    assert.equal(payment.calls.length, 0);
  }
});

test('buy: the order is closed: resolves closed at once, polling stops early', async () => {
  const server = paymentServer({ orders: [ok({ ...ORDER, quota: QUOTA_BEFORE }), ok({ ...ORDER, status: 'closed', quota: QUOTA_BEFORE })] });
  const { client, fake, quotas } = setup({ server });
  const result = await drive(fake, client.buy('p10'));
  assert.equal(result.status, 'closed');
  assert.equal(result.order.status, 'closed');
  assert.equal(server.polls(), 2);
  assert.equal(fake.pendingTimers().length, 0, 'no query left scheduled');
  assert.deepEqual(quotas, [['purchase', QUOTA_BEFORE]]);
});

test('buy: polling backs off (1, 2, 4, 5, 5 ... s) and ends pending at payPollTimeout', async () => {
  const server = paymentServer({ orders: [ok({ ...ORDER, quota: QUOTA_BEFORE })] });
  const { client, fake, quotas } = setup({ server });
  let paidAt = null;
  const p = client.buy('p10');
  await waitFor(() => server.polls() === 1);
  paidAt = fake.now();
  const result = await drive(fake, p);
  assert.deepEqual(waits(fake), [1000, 2000, 4000, 5000, 5000, 5000, 5000, 3000]);
  assert.equal(fake.pendingTimers().length, 0);
  assert.equal(fake.now() - paidAt, 30000, 'the last query is at the deadline, not after it');
  assert.equal(server.polls(), 9);
  assert.equal(result.status, 'pending');
  assert.deepEqual(result.order, ORDER);
  assert.deepEqual(result.quota, QUOTA_BEFORE);
  assert.deepEqual(quotas, [['purchase', QUOTA_BEFORE]]);
});

test('buy: the polling options bound it', async () => {
  const server = paymentServer({ orders: [ok({ ...ORDER, quota: QUOTA_BEFORE })] });
  const { client, fake } = setup({ server, clientOptions: { payPollDelay: 0.5, payPollMaxDelay: 1, payPollTimeout: 3 } });
  const result = await drive(fake, client.buy('p10'));
  assert.equal(result.status, 'pending');
  assert.deepEqual(waits(fake), [500, 1000, 1000, 500]);
  assert.equal(server.polls(), 5);
});

test('buy: a query that never answers is given up payPollMaxDelay after the deadline', async () => {
  const pending = ok({ ...ORDER, quota: QUOTA_BEFORE });
  const server = paymentServer({ orders: [pending, pending, { end: 'hang' }] });
  const { client, fake } = setup({ server });
  const started = fake.now();
  const result = await drive(fake, client.buy('p10'));
  assert.equal(result.status, 'pending');
  assert.deepEqual(result.quota, QUOTA_BEFORE);
  assert.equal(server.polls(), 3, 'no query after the stalled one');
  assert.equal(fake.now() - started, 35000, 'payPollTimeout (30 s) + payPollMaxDelay (5 s)');
  assert.equal(fake.pendingTimers().length, 0);
});

test('buy: passing failures of a query (network, 503, 429) do not end the polling; paid afterwards', async () => {
  const server = paymentServer({
    orders: [
      { fail: 'request:fail timeout' },
      refused(503, 'service_unavailable'),
      refused(429, 'rate_limited'),
      { status: 502, body: '' },
      ok({ ...ORDER, status: 'paid', quota: QUOTA_AFTER }),
    ],
  });
  const { client, fake } = setup({ server });
  const result = await drive(fake, client.buy('p10'));
  assert.equal(result.status, 'paid');
  assert.deepEqual(result.quota, QUOTA_AFTER);
  assert.equal(server.polls(), 5);
});

test('buy: only failures until the deadline: pending, with the order as created', async () => {
  const server = paymentServer({ orders: [{ fail: 'request:fail timeout' }] });
  const { client, fake, quotas } = setup({ server, clientOptions: { payPollTimeout: 4 } });
  const result = await drive(fake, client.buy('p10'));
  assert.deepEqual(result, { status: 'pending', order_id: 'o1', order: ORDER });
  assert.deepEqual(quotas, []);
});

test('buy: a query refused for good (404) rejects', async () => {
  const server = paymentServer({ orders: [refused(404, 'not_found')] });
  const { client, fake } = setup({ server });
  await assert.rejects(drive(fake, client.buy('p10')), { code: 'not_found', status: 404 });
  assert.equal(fake.pendingTimers().length, 0);
});

test('buy: an onQuota that throws does not break the purchase', async (t) => {
  t.mock.method(console, 'error', () => {});
  const { client, fake } = setup({ clientOptions: { onQuota: () => { throw new Error('app bug'); } } });
  assert.equal((await drive(fake, client.buy('p10'))).status, 'paid');
});

test('order(id) is one query; its quota goes to onQuota', async () => {
  const { client, quotas } = setup();
  const order = await client.order('o1');
  assert.equal(order.status, 'paid');
  assert.deepEqual(quotas, [['order', QUOTA_AFTER]]);
});

test('me() exposes the quota and hands it to onQuota', async () => {
  const { client, quotas } = setup();
  const me = await client.me();
  assert.deepEqual(me.quota, QUOTA_BEFORE);
  assert.deepEqual(quotas, [['me', QUOTA_BEFORE]]);
});

test('onQuota from a chat: done.quota, after onDone; a done without quota tells nothing', async () => {
  const withQuota = ndjson([START, { type: 'delta', text: '好', seq: 1 }, { type: 'done', finish_reason: 'stop', seq: 2, quota: QUOTA_AFTER }]);
  const without = ndjson([START, { type: 'done', finish_reason: 'stop', seq: 1 }]);
  let recorded = null;
  const seenAtQuota = [];
  const { client, quotas } = setup({
    chat: (option, n) => ({ body: n === 1 ? withQuota : without }),
    clientOptions: { onQuota: (q, info) => { seenAtQuota.push(recorded.events.map(([name]) => name)); quotas.push([info.source, q]); } },
  });
  recorded = record(client, { content: '你好' });
  const events = await recorded.finished;
  assert.deepEqual(events.at(-1)[1].quota, QUOTA_AFTER, 'onDone still carries the quota');
  assert.deepEqual(quotas, [['chat', QUOTA_AFTER]]);
  assert.deepEqual(seenAtQuota, [['start', 'delta', 'done']], 'onQuota comes after onDone');
  recorded = record(client, { content: '再来' });
  await recorded.finished;
  assert.deepEqual(quotas, [['chat', QUOTA_AFTER]], 'no quota, no call');
});

test('onQuota from a 402: onError gets quota_exceeded, onQuota the balance from /me, exceeded', async () => {
  const server = paymentServer();
  const { client, fake, quotas } = setup({
    server,
    chat: () => ({ status: 402, body: ndjson([{ type: 'error', code: 'quota_exceeded', message: '额度已用完' }]) }),
  });
  const events = await record(client, { content: '你好' }).finished;
  assert.deepEqual(events, [['error', { code: 'quota_exceeded', message: '额度已用完', retry_after: undefined, status: 402 }]]);
  assert.equal(fake.chatCalls().length, 1, 'a 402 is not retried');
  await waitFor(() => quotas.length === 1);
  assert.deepEqual(quotas, [['exceeded', { ...QUOTA_BEFORE, exceeded: true }]]);
  assert.ok(server.log.some(([m, p]) => m === 'GET' && p === '/api/v1/me'));
});

test('onQuota from a 402 with only the status, and /me failing: still told, exceeded', async () => {
  const server = paymentServer({ me: refused(503, 'service_unavailable') });
  const { client, quotas } = setup({ server, chat: () => ({ status: 402, body: '' }) });
  const events = await record(client, { content: '你好' }).finished;
  assert.equal(events[0][1].code, 'quota_exceeded');
  await waitFor(() => quotas.length === 1);
  assert.deepEqual(quotas, [['exceeded', { enabled: true, exceeded: true }]]);
});

test('onQuota from a 402 in the non-streaming fallback', async () => {
  const { client, quotas } = setup({
    chat: () => ({ status: 402, body: { error: { code: 'quota_exceeded', message: '额度已用完' } } }),
    clientOptions: { canIUse: () => false },
  });
  const events = await record(client, { content: '你好' }).finished;
  assert.equal(events[0][1].code, 'quota_exceeded');
  await waitFor(() => quotas.length === 1);
  assert.equal(quotas[0][0], 'exceeded');
});
