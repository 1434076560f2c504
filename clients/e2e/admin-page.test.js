'use strict';
// The operator's console (/admin) against a real mpchat and the fake provider, in headless
// Chromium: log in with the token, see non-empty plots after scripted traffic, block a user
// and see their next chat refused; the overview's screenshot goes into docs/img/.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const { ROOT, startStack } = require('../helpers/servers.js');
const { CHROMIUM, CHROMIUM_ARGS, missing, screenshot } = require('../helpers/browser.js');

const SCREENSHOT = path.join(ROOT, 'docs', 'img', 'admin-console.png');
const CI = process.env.CI === 'true';
const TOKEN = 'e2e-admin-token-0123456789';

const servers = { base: '', stack: null };

test.before(async () => {
  if (missing()) return;
  servers.stack = await startStack({
    upstreamArgs: ['--chunks', '4', '--gap-ms', '5'],
    env: { MPCHAT_ADMIN_TOKEN: TOKEN, MPCHAT_RATE_LIMIT: '1000/minute' },
  });
  servers.base = servers.stack.base;
});

test.after(async () => {
  if (servers.stack) await servers.stack.stop();
});

function prerequisites(t) {
  const why = missing();
  if (why && CI) assert.fail(why);
  if (why) t.skip(why);
  return !why;
}

async function login(code) {
  const r = await fetch(servers.base + '/api/v1/login', { method: 'POST',
    headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ code }) });
  assert.equal(r.status, 200);
  const { token } = await r.json();
  const me = await (await fetch(servers.base + '/api/v1/me',
    { headers: { Authorization: 'Bearer ' + token } })).json();
  return { token, id: me.user_id };
}

async function chat(token, content) {
  const r = await fetch(servers.base + '/api/v1/chat', { method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + token },
    body: JSON.stringify({ content, stream: false }) });
  return { status: r.status, body: await r.json() };
}

test('admin page: token login, plots after traffic, block a user', { timeout: 120000 }, async (t) => {
  if (!prerequisites(t)) return;
  const { chromium } = require('playwright-core');
  const users = [await login('ops-alice'), await login('ops-bob'), await login('ops-carol')];
  for (let i = 0; i < 7; i += 1) {
    const { status } = await chat(users[i % 3].token, '你好 ' + i);
    assert.equal(status, 200);
  }
  // One answer the provider refuses: an upstream_error in the errors plot.
  await fetch(servers.stack.upstream + '/_control/script', { method: 'POST',
    headers: { 'Content-Type': 'application/json' }, body: JSON.stringify([{ status: 400 }]) });
  assert.equal((await chat(users[2].token, '出错吧')).status, 502);

  let browser;
  t.after(async () => { if (browser) await browser.close(); });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const problems = [];
  page.on('pageerror', (err) => problems.push(err.message));
  // A CSP violation is a console error ("Refused to ..."); the wrong token's 401 and the
  // favicon's 404 are expected.
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) problems.push(msg.text());
  });

  const response = await page.goto(servers.base + '/admin');
  assert.match(response.headers()['content-security-policy'], /script-src 'self';/);
  await page.getByTestId('login-view').waitFor();
  await page.getByTestId('token').fill('wrong-token');
  await page.getByTestId('login').click();
  await page.getByTestId('login-error').waitFor();
  await page.getByTestId('token').fill(TOKEN);
  await page.getByTestId('login').click();
  await page.getByTestId('console').waitFor();
  await page.waitForFunction(() => document.querySelectorAll('.uplot canvas').length === 4);
  assert.equal(await page.getByTestId('card-chats').locator('.value').textContent(), '8');
  assert.equal(await page.getByTestId('card-errors').locator('.value').textContent(), '1');
  for (const id of ['plot-chats', 'plot-errors', 'plot-latency', 'plot-tokens']) {
    const points = Number(await page.getByTestId(id).getAttribute('data-points'));
    assert.ok(points > 0, id + ' is empty');
  }
  assert.ok(await page.evaluate(() => sessionStorage.getItem('mpchat.admin.token')));
  await screenshot(page, SCREENSHOT, { fullPage: true });

  // Block bob from his user page; his next chat is refused and reaches no provider.
  const bob = users[1];
  await page.getByTestId('tab-users').click();
  await page.getByTestId('user-q').fill(bob.id.slice(0, 10));
  await page.getByTestId('user-search').click();
  await page.getByTestId('users').locator(`a[data-user="${bob.id}"]`).click();
  await page.getByTestId('user-detail').waitFor();
  await page.getByTestId('block').click();
  await page.waitForFunction(() => document.querySelector('[data-testid="user-state"]').textContent.startsWith('已停用'));
  const refused = await chat(bob.token, '还能聊吗');
  assert.equal(refused.status, 403);
  assert.equal(refused.body.error.code, 'blocked');
  assert.equal((await chat(users[0].token, '我呢')).status, 200);
  await page.getByTestId('unblock').click();
  await page.waitForFunction(() => document.querySelector('[data-testid="user-state"]').textContent.startsWith('正常'));
  assert.equal((await chat(bob.token, '回来了')).status, 200);

  await page.getByTestId('tab-audit').click();
  await page.getByTestId('audit').locator('th').first().waitFor();
  await page.getByTestId('tab-keys').click();
  await page.getByTestId('keys').locator('th').first().waitFor();
  assert.deepEqual(problems, []);
});
