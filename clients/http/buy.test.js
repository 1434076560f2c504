'use strict';
// The SDK's purchase flow end to end: a real `mpchat serve` with quotas and a plan, paying
// through `mpchat fake-wechatpay` (its keys generated into the stack's temp dir, its settings
// handed to the service, its notifications sent to the service's /api/v1/pay/wechat/notify).
// The SDK runs in node with a fake `wx`: `request` is real HTTP (fetch), and `requestPayment`
// checks paySign as WeChat does, then "pays" at the fake's control API, which notifies the
// service. buy() must resolve `paid`, and /me's credits rise by the plan's credits, exactly once
// (also when the notification comes twice, or never and the service finds the payment by asking).

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { createClient } = require('../miniprogram/mpchat.js');
const { startStack, missingServer } = require('../helpers/servers.js');

const CI = process.env.CI === 'true';
const ADMIN = 'admin-token-clients-buy-0123456789';
const PLAN = { id: 'p10', title: '1000 点', price_fen: 1000, credits: 1000 };
const CONFIG = `
[quota]
free_units = 1
[quota.prices]
default = { per_message = 1 }
[[plans]]
id = "${PLAN.id}"
title = "${PLAN.title}"
price_fen = ${PLAN.price_fen}
credits = ${PLAN.credits}
`;
// Without MPCHAT_WECHAT_APPID, orders name this placeholder appid (docs/quota.md).
const APPID = 'wx0000000000000000';

const servers = { stack: null, why: '' };

test.before(async () => {
  servers.why = missingServer();
  if (servers.why) return;
  servers.stack = await startStack({
    config: CONFIG,
    wechatpay: true,
    env: { MPCHAT_ADMIN_TOKEN: ADMIN, MPCHAT_RATE_LIMIT: '1000/minute' },
  });
  const res = await fetch(servers.stack.base + '/api/v1/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"code":"probe"}' });
  const { token } = await res.json();
  const plans = await fetch(servers.stack.base + '/api/v1/plans', { headers: { Authorization: 'Bearer ' + token } });
  if (plans.status !== 200 || !(await plans.json()).items.length) servers.why = 'this mpchat sells no credits (no payments yet)';
});

test.after(async () => {
  if (servers.stack) await servers.stack.stop();
});

function prerequisites(t) {
  if (servers.why && CI) assert.fail(servers.why);
  if (servers.why) t.skip(servers.why);
  return !servers.why;
}

/**
 * A fake wx over real HTTP. `request` is fetch (JSON calls only: buying needs no chunks); it
 * notes which order each prepay_id belongs to, as WeChat Pay knows it. `requestPayment` checks
 * the signature like WeChat (RSA-SHA256 by the merchant key over appId, timeStamp, nonceStr,
 * package), then does what `user()` says: `{notify}` pays at the fake (which notifies the service
 * that way), `cancel` closes the sheet.
 */
function createHttpWx(stack, user) {
  const orderOf = new Map(); // package ("prepay_id=...") -> order id
  const merchantKey = crypto.createPublicKey(fs.readFileSync(stack.env.MPCHAT_WECHATPAY_PRIVATE_KEY));
  const log = { payments: [], notified: [] };

  function request(option) {
    (async () => {
      try {
        const hasBody = option.data !== undefined && option.method !== 'GET';
        const res = await fetch(option.url, {
          method: option.method || 'GET',
          headers: option.header,
          body: hasBody ? JSON.stringify(option.data) : undefined,
        });
        const text = await res.text();
        let data = text;
        try {
          data = JSON.parse(text);
        } catch (e) {
          // left as text, as wx does
        }
        if (data && data.payment && data.order_id) orderOf.set(data.payment.package, data.order_id);
        option.success({ statusCode: res.status, header: Object.fromEntries(res.headers), data });
      } catch (err) {
        option.fail({ errMsg: 'request:fail ' + err.message });
      }
    })();
    return { abort() {} };
  }

  function requestPayment(option) {
    (async () => {
      log.payments.push(option);
      const message = `${APPID}\n${option.timeStamp}\n${option.nonceStr}\n${option.package}\n`;
      const signed = option.signType === 'RSA' && crypto.verify('sha256', Buffer.from(message), merchantKey, Buffer.from(option.paySign, 'base64'));
      const orderId = orderOf.get(option.package);
      if (!signed || !orderId) return option.fail({ errMsg: 'requestPayment:fail 支付验证签名失败' });
      const how = user(orderId);
      if (how === 'cancel') return option.fail({ errMsg: 'requestPayment:fail cancel' });
      const answer = await stack.pay(orderId, how.notify);
      log.notified.push([orderId, how.notify, answer.statuses]);
      option.success({ errMsg: 'requestPayment:ok' });
    })().catch((err) => option.fail({ errMsg: 'requestPayment:fail ' + err.message }));
  }

  return { request, requestPayment, log };
}

function client(stack, code, user, extra = {}) {
  const wx = createHttpWx(stack, user);
  const quotas = [];
  const c = createClient({
    baseUrl: stack.base,
    request: wx.request,
    requestPayment: wx.requestPayment,
    login: (o) => o.success({ code }),
    storage: {},
    onQuota: (quota, info) => quotas.push([info.source, quota]),
    // Seconds, scaled down: the service asks WeChat Pay at most every 2 s per order.
    payPollDelay: 0.2,
    payPollMaxDelay: 1,
    payPollTimeout: 20,
    ...extra,
  });
  return { client: c, wx, quotas };
}

async function ledger(stack, userId) {
  const res = await fetch(`${stack.base}/admin/v1/users/${encodeURIComponent(userId)}/quota?limit=100`, { headers: { Authorization: 'Bearer ' + ADMIN } });
  assert.equal(res.status, 200);
  return (await res.json()).ledger;
}

test('buy(): the order is paid at the fake WeChat Pay, notified twice, credited once', { timeout: 60000 }, async (t) => {
  if (!prerequisites(t)) return;
  const stack = servers.stack;
  const { client: c, wx, quotas } = client(stack, 'buyer-twice', () => ({ notify: 'twice' }));

  assert.deepEqual(await c.plans(), [PLAN]);
  const before = await c.me();
  assert.deepEqual(before.quota, { enabled: true, remaining: 1, free_remaining: 1, reset_s: before.quota.reset_s, credits: 0 });

  const result = await c.buy(PLAN.id);
  assert.equal(result.status, 'paid', JSON.stringify(result));
  assert.equal(result.order.status, 'paid');
  assert.equal(result.order.credits, PLAN.credits);
  assert.equal(result.quota.credits, PLAN.credits);
  assert.equal(result.quota.remaining, 1 + PLAN.credits);
  assert.deepEqual(wx.log.notified, [[result.order_id, 'twice', [204, 204]]], 'the service accepted both notifications');
  assert.deepEqual(quotas.map(([source]) => source), ['me', 'purchase']);
  assert.deepEqual(quotas[1][1], result.quota);

  const after = await c.me();
  assert.equal(after.quota.credits - before.quota.credits, PLAN.credits, 'credited by the plan');
  const purchases = (await ledger(stack, after.user_id)).filter((row) => row.kind === 'purchase');
  assert.deepEqual(purchases.map((row) => [row.order_id, row.amount]), [[result.order_id, PLAN.credits]], 'exactly once');

  // The order as the SDK sees it later, too.
  const order = await c.order(result.order_id);
  assert.equal(order.status, 'paid');
  assert.equal(order.quota.credits, PLAN.credits);
});

test('buy(): no notification at all: the polling finds the payment (the service asks WeChat Pay)', { timeout: 60000 }, async (t) => {
  if (!prerequisites(t)) return;
  const stack = servers.stack;
  const { client: c, wx } = client(stack, 'buyer-silent', () => ({ notify: 'none' }));
  const before = await c.me();
  const result = await c.buy(PLAN.id);
  assert.equal(result.status, 'paid', JSON.stringify(result));
  assert.deepEqual(wx.log.notified, [[result.order_id, 'none', []]]);
  const after = await c.me();
  assert.equal(after.quota.credits - before.quota.credits, PLAN.credits);
  const purchases = (await ledger(stack, after.user_id)).filter((row) => row.kind === 'purchase');
  assert.equal(purchases.length, 1);
});

test('buy(): the user cancels the payment sheet: cancelled, nothing credited, the order stays pending', { timeout: 60000 }, async (t) => {
  if (!prerequisites(t)) return;
  const stack = servers.stack;
  const { client: c, quotas } = client(stack, 'buyer-cancel', () => 'cancel');
  const result = await c.buy(PLAN.id);
  assert.equal(result.status, 'cancelled');
  assert.equal(result.order.status, 'pending');
  assert.deepEqual(quotas, []);
  const me = await c.me();
  assert.equal(me.quota.credits, 0);
  assert.equal((await c.order(result.order_id)).status, 'pending');
});
