'use strict';
// The browser demo page's balance and 购买 against a real mpchat with quotas and a plan, paying at
// `mpchat fake-wechatpay` (the page opened with ?fakepay=<its address>), in headless Chromium.

const test = require('node:test');
const assert = require('node:assert/strict');

const { startStack } = require('../helpers/servers.js');
const { CHROMIUM, CHROMIUM_ARGS, missing } = require('../helpers/browser.js');

const CI = process.env.CI === 'true';
const CONFIG = `
[quota]
free_units = 1
[quota.prices]
default = { per_message = 1 }
[[plans]]
id = "p10"
title = "1000 点"
price_fen = 1000
credits = 1000
`;

const servers = { stack: null };

test.before(async () => {
  if (missing()) return;
  servers.stack = await startStack({
    config: CONFIG,
    wechatpay: true,
    env: { MPCHAT_WEB_DEMO: 'true', MPCHAT_RATE_LIMIT: '1000/minute' },
  });
});

test.after(async () => {
  if (servers.stack) await servers.stack.stop();
});

test('demo page: balance, 额度已用完 on a 402, 购买 paid at the fake WeChat Pay, the new balance', { timeout: 120000 }, async (t) => {
  const why = missing();
  if (why && CI) assert.fail(why);
  if (why) return t.skip(why);
  const stack = servers.stack;
  const { chromium } = require('playwright-core');
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1100, height: 720 } });
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));

  await page.goto(stack.base + '/?fakepay=' + encodeURIComponent(stack.wechatpay));
  await page.getByTestId('login-code').fill('buy-user');
  await page.getByTestId('login-button').click();
  await page.getByTestId('app-view').waitFor();
  const quota = page.getByTestId('quota');
  await quota.waitFor();
  assert.equal((await quota.textContent()).trim(), '额度 1 · 免费 1');

  // A chat refused with 402, played by the browser's network layer with the service's body (the
  // test does not depend on how, or whether, this service charges chats).
  await page.route('**/api/v1/chat', (route) => route.fulfill({
    status: 402,
    contentType: 'application/x-ndjson',
    body: JSON.stringify({ type: 'error', code: 'quota_exceeded', message: '额度不足' }) + '\n',
  }));
  await page.getByTestId('chat-input').fill('你好');
  await page.getByTestId('send-button').click();
  await page.getByTestId('quota-exceeded').waitFor();
  assert.equal(await page.locator('[data-role="assistant"]').count(), 0, 'no empty answer left');
  await page.unroute('**/api/v1/chat');

  // 购买额度 -> the plans -> 购买 -> the simulated payment sheet -> paid.
  await page.getByTestId('exceeded-buy').click();
  const plan = page.getByTestId('plan');
  await plan.first().waitFor();
  assert.equal(await plan.count(), 1);
  assert.match(await plan.first().textContent(), /1000 点.*¥10\.00/);
  let sheet = '';
  page.once('dialog', (d) => {
    sheet = d.message();
    d.accept();
  });
  await page.getByTestId('buy-plan').click();
  await page.waitForFunction(() => document.querySelector('[data-testid="notice"]').textContent === '购买成功，额度已到账', null, { timeout: 40000 });
  assert.match(sheet, /¥10\.00/);
  assert.equal((await quota.textContent()).trim(), '额度 1001 · 免费 1 · 已购 1000');
  assert.ok(await page.getByTestId('quota-exceeded').isHidden());

  // The service agrees: credited once, the order paid.
  const me = await page.evaluate(async () => {
    const res = await fetch('/api/v1/me', { headers: { Authorization: 'Bearer ' + localStorage.getItem('mpchat.token') } });
    return res.json();
  });
  assert.equal(me.quota.credits, 1000);

  // A cancelled payment sheet changes nothing.
  await page.getByTestId('buy-button').click();
  await plan.first().waitFor();
  page.once('dialog', (d) => d.dismiss());
  await page.getByTestId('buy-plan').click();
  await page.waitForFunction(() => document.querySelector('[data-testid="notice"]').textContent === '已取消支付');
  assert.equal((await quota.textContent()).trim(), '额度 1001 · 免费 1 · 已购 1000');
  assert.deepEqual(pageErrors, []);
});
