'use strict';
// The browser demo page against a real mpchat and the fake provider, in headless Chromium.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { ROOT, MPCHAT, startStack } = require('../helpers/servers.js');

const CHROMIUM = '/usr/bin/chromium';
const SCREENSHOT = path.join(ROOT, 'docs', 'img', 'demo-page.png');
const CI = process.env.CI === 'true';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

function missing() {
  if (!fs.existsSync(CHROMIUM)) return 'chromium is not installed at ' + CHROMIUM;
  if (!fs.existsSync(MPCHAT)) return 'no .venv/bin/mpchat (run make in the project root first)';
  return '';
}

const servers = { base: '', stack: null };

test.before(async () => {
  if (missing()) return;
  // Several spaced deltas, so the answer visibly streams in.
  servers.stack = await startStack({
    upstreamArgs: ['--chunks', '6', '--gap-ms', '60'],
    env: { MPCHAT_WEB_DEMO: 'true', MPCHAT_RATE_LIMIT: '1000/minute' },
  });
  servers.base = servers.stack.base;
});

test.after(async () => {
  if (servers.stack) await servers.stack.stop();
});

/** Skip when a prerequisite is missing; fail instead under CI=true. */
function prerequisites(t) {
  const why = missing();
  if (why && CI) assert.fail(why);
  if (why) t.skip(why);
  return !why;
}

test('demo page: login, streamed answer with label, reload keeps history, delete', { timeout: 120000 }, async (t) => {
  if (!prerequisites(t)) return;
  const { chromium } = require('playwright-core');
  const base = servers.base;
  let browser;
  t.after(async () => {
    if (browser) await browser.close();
  });

  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  const page = await browser.newPage({ viewport: { width: 1100, height: 720 } });
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));

  await page.goto(base + '/');
  await page.getByTestId('login-view').waitFor();
  assert.equal(await page.getByTestId('login-code').inputValue(), 'demo-user');
  await page.getByTestId('login-code').fill('e2e-user');
  await page.getByTestId('login-button').click();
  await page.getByTestId('app-view').waitFor();

  // Count every change of the answer's text to see it arrive in pieces.
  await page.evaluate(() => {
    window.__answerTexts = [];
    new MutationObserver(() => {
      const last = document.querySelector('[data-role="assistant"]:last-of-type [data-testid="message-content"]');
      if (last && last.textContent && window.__answerTexts.at(-1) !== last.textContent) window.__answerTexts.push(last.textContent);
    }).observe(document.getElementById('messages'), { subtree: true, childList: true, characterData: true });
  });

  await page.getByTestId('chat-input').fill('你好，请介绍一下你自己');
  const chatResponse = page.waitForResponse((r) => r.url().endsWith('/api/v1/chat'));
  await page.getByTestId('send-button').click();
  const answer = page.locator('[data-role="assistant"]').last();
  await answer.and(page.locator('[data-state="done"]')).waitFor({ timeout: 30000 });

  const answerText = (await answer.getByTestId('message-content').textContent()).trim();
  assert.ok(answerText.length > 0, 'the answer has text');
  const seen = await page.evaluate(() => window.__answerTexts);
  assert.ok(seen.length >= 2, `the answer streamed in pieces: ${JSON.stringify(seen)}`);
  assert.equal(seen.at(-1).trim(), answerText);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i].startsWith(seen[i - 1]), 'each piece extends the text');

  const wire = (await (await chatResponse).text()).split('\n').filter(Boolean).map((l) => JSON.parse(l));
  assert.equal(wire[0].type, 'start');
  assert.ok(wire.filter((e) => e.type === 'delta').length >= 2, 'several deltas on the wire');
  const label = (await answer.getByTestId('ai-label').textContent()).trim();
  assert.ok(wire[0].label, 'the server sent a label');
  assert.equal(label, wire[0].label, 'the page shows the label the server sent');
  assert.ok(await answer.getByTestId('ai-label').isVisible());
  await page.getByTestId('conversation').first().waitFor();
  assert.equal(await page.getByTestId('conversation').count(), 1);

  // A reload keeps the session (localStorage) and shows the same conversation.
  await page.reload();
  await page.getByTestId('app-view').waitFor();
  assert.ok(await page.getByTestId('login-view').isHidden());
  await page.getByTestId('conversation').first().waitFor();
  assert.equal(await page.getByTestId('conversation').count(), 1);
  await page.locator('[data-role="assistant"]').first().waitFor();
  const history = await page.getByTestId('message').evaluateAll((nodes) =>
    nodes.map((n) => [n.dataset.role, n.querySelector('[data-testid="message-content"]').textContent.trim()]),
  );
  assert.deepEqual(history, [['user', '你好，请介绍一下你自己'], ['assistant', answerText]]);

  fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT });

  // Delete it: gone from the list, from the page, and from the server.
  page.once('dialog', (d) => d.accept());
  await page.getByTestId('delete-conversation').first().click();
  await page.getByTestId('conversation').first().waitFor({ state: 'detached' });
  assert.equal(await page.getByTestId('message').count(), 0);
  const left = await page.evaluate(async () => {
    const res = await fetch('/api/v1/conversations', { headers: { Authorization: 'Bearer ' + localStorage.getItem('mpchat.token') } });
    return (await res.json()).items.length;
  });
  assert.equal(left, 0);
  assert.deepEqual(pageErrors, []);
});

/**
 * wx.request on top of fetch: chunks go to onChunkReceived as ArrayBuffers, as on a phone.
 * Just enough of wx.request for the SDK.
 */
function fetchRequest(option) {
  const controller = new AbortController();
  let chunkCb = null;
  (async () => {
    try {
      const res = await fetch(option.url, {
        method: option.method || 'GET',
        headers: option.header,
        body: option.data === undefined ? undefined : JSON.stringify(option.data),
        signal: controller.signal,
      });
      const header = Object.fromEntries(res.headers.entries());
      if (option.enableChunked && chunkCb) {
        const reader = res.body.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          chunkCb({ data: value.slice().buffer });
        }
        option.success({ statusCode: res.status, header, data: new ArrayBuffer(0) });
        return;
      }
      const text = await res.text();
      let data = text;
      if (option.responseType === 'arraybuffer') data = new TextEncoder().encode(text).buffer;
      else if (option.dataType === 'json') {
        try {
          data = JSON.parse(text);
        } catch (e) {
          // left as text, as wx does
        }
      }
      option.success({ statusCode: res.status, header, data });
    } catch (err) {
      option.fail({ errMsg: 'request:fail ' + err.message });
    }
  })();
  return { abort: () => controller.abort(), onChunkReceived: (cb) => (chunkCb = cb) };
}

test('the mini program SDK against the real service', { timeout: 60000 }, async (t) => {
  if (!prerequisites(t)) return;
  const { createClient } = require('../miniprogram/mpchat.js');
  const store = new Map();
  // A forged token in storage: the SDK must renew it on the first 401.
  store.set('mpchat_session', { token: 'forged', expiresAt: Date.now() + 3600e3 });
  const client = createClient({
    baseUrl: servers.base,
    request: fetchRequest,
    login: (o) => o.success({ code: 'sdk-user' }),
    canIUse: () => true,
    storage: { getStorageSync: (k) => store.get(k), setStorageSync: (k, v) => store.set(k, v), removeStorageSync: (k) => store.delete(k) },
  });
  const events = [];
  await new Promise((resolve) => {
    client.chat({
      content: '流式 SDK 测试 🚀',
      onStart: (ev) => events.push(['start', ev]),
      onDelta: (ev) => events.push(['delta', ev]),
      onDone: (ev) => resolve(events.push(['done', ev])),
      onError: (err) => resolve(events.push(['error', err])),
    });
  });
  assert.equal(events.at(-1)[0], 'done', JSON.stringify(events.at(-1)));
  const [, startEv] = events[0];
  assert.ok(startEv.label && startEv.ai_generated === true && startEv.conversation_id);
  assert.ok(events.filter(([n]) => n === 'delta').length >= 2);
  assert.notEqual(store.get('mpchat_session').token, 'forged');

  const list = await client.listConversations({ limit: 10 });
  assert.deepEqual(list.items.map((c) => c.id), [startEv.conversation_id]);
  const messages = await client.listMessages(startEv.conversation_id);
  assert.deepEqual(messages.items.map((m) => [m.role, m.content]), [['user', '流式 SDK 测试 🚀'], ['assistant', events.at(-1)[1].text]]);
  await client.deleteConversation(startEv.conversation_id);
  await assert.rejects(client.listMessages(startEv.conversation_id), (err) => err.code === 'not_found' && err.status === 404);

  // Same thing without streaming (a device without chunked transfer).
  const plain = createClient({ baseUrl: servers.base, request: fetchRequest, login: (o) => o.success({ code: 'sdk-user' }), canIUse: () => false, storage: {} });
  const got = await new Promise((resolve) => {
    const seen = [];
    plain.chat({ content: 'no stream', onStart: (ev) => seen.push(ev), onDone: (ev) => resolve([seen, ev]), onError: (err) => resolve([seen, err]) });
  });
  assert.ok(got[1].text, JSON.stringify(got[1]));
  assert.ok(got[0][0].label);
});
