'use strict';
// The browser demo page against a real mpchat and the fake provider, in headless Chromium.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const { ROOT, startStack, resumeMissing } = require('../helpers/servers.js');
const { CHROMIUM, CHROMIUM_ARGS, missing, screenshot } = require('../helpers/browser.js');

const SCREENSHOT = path.join(ROOT, 'docs', 'img', 'demo-page.png');
const CI = process.env.CI === 'true';

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

  // The chat's bytes as the page received them, teed off its fetch: Playwright's own
  // response.text() may find a streamed body already gone (a flaky read), this cannot.
  await page.addInitScript(() => {
    const original = window.fetch;
    window.__wire = [];
    window.fetch = async (...args) => {
      const response = await original(...args);
      const url = typeof args[0] === 'string' ? args[0] : args[0].url;
      if (!url.endsWith('/api/v1/chat') || !response.body) return response;
      const [mine, theirs] = response.body.tee();
      new Response(mine).text().then((text) => window.__wire.push(text));
      return new Response(theirs, { status: response.status, statusText: response.statusText, headers: response.headers });
    };
  });
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

  assert.equal((await chatResponse).status(), 200);
  await page.waitForFunction(() => window.__wire.length > 0);
  const wire = (await page.evaluate(() => window.__wire[0])).split('\n').filter(Boolean).map((l) => JSON.parse(l));
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

  await screenshot(page, SCREENSHOT);

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

// Wraps the page's fetch (before any script of the page runs): the planned responses of
// /api/v1/chat and /messages/{id}/events are cut at a byte offset, `bytes` past their `lines`-th
// line, as a dropped connection would (the body errors, the connection is closed).
const CUT_FETCH = () => {
  window.__cutPlan = { chat: [], events: [] };
  window.__cuts = [];
  const realFetch = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    const res = await realFetch(input, init);
    const url = typeof input === 'string' ? input : input.url;
    const kind = /\/api\/v1\/chat$/.test(url) ? 'chat' : /\/events(\?|$)/.test(url) ? 'events' : '';
    const plan = kind ? window.__cutPlan[kind].shift() : null;
    if (!plan || !res.body) return res;
    const reader = res.body.getReader();
    let seen = 0;
    let lines = 0;
    let cutAt = plan.lines === 0 ? plan.bytes : Infinity; // lines 0: before the first line
    const body = new ReadableStream({
      async pull(ctrl) {
        const { value, done } = await reader.read();
        if (done) return ctrl.close();
        for (let i = 0; i < value.length && cutAt === Infinity; i++) {
          if (value[i] === 10 && ++lines === plan.lines) cutAt = seen + i + 1 + plan.bytes;
        }
        if (seen + value.length > cutAt) {
          if (cutAt > seen) ctrl.enqueue(value.slice(0, cutAt - seen));
          reader.cancel().catch(() => {});
          window.__cuts.push([kind, url, cutAt]);
          ctrl.error(new TypeError('network error (cut by the test)'));
          return;
        }
        seen += value.length;
        ctrl.enqueue(value);
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    });
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
};

async function storedMessages(page) {
  return page.evaluate(async () => {
    const auth = { headers: { Authorization: 'Bearer ' + localStorage.getItem('mpchat.token') } };
    const id = localStorage.getItem('mpchat.conversation');
    return (await (await fetch('/api/v1/conversations/' + id + '/messages?limit=50', auth)).json()).items;
  });
}

/** Poll the stored conversation until `predicate(items)` holds (the server settles asynchronously). */
async function waitStored(page, predicate, what) {
  const until = Date.now() + 20000;
  let items;
  while (Date.now() < until) {
    items = await storedMessages(page);
    if (predicate(items)) return items;
    await page.waitForTimeout(100);
  }
  throw new Error(what + ': ' + JSON.stringify(items));
}

test('demo page: resumes a cut stream from the last seq, reasoning folded apart, 停止 cancels', { timeout: 120000 }, async (t) => {
  if (!prerequisites(t)) return;
  const why = await resumeMissing(servers.base);
  if (why && CI) assert.fail(why);
  if (why) return t.skip(why);
  const { chromium } = require('playwright-core');
  let browser;
  t.after(async () => {
    if (browser) await browser.close();
  });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  const page = await browser.newPage({ viewport: { width: 1100, height: 720 } });
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  const urls = [];
  page.on('request', (r) => urls.push([r.method(), r.url()]));
  await page.addInitScript(CUT_FETCH);

  await page.goto(servers.base + '/');
  await page.getByTestId('login-code').fill('e2e-resume');
  await page.getByTestId('login-button').click();
  await page.getByTestId('app-view').waitFor();
  await page.evaluate(() => {
    window.__states = [];
    new MutationObserver(() => {
      const last = document.querySelector('[data-role="assistant"]:last-of-type');
      if (last && window.__states.at(-1) !== last.dataset.state) window.__states.push(last.dataset.state);
    }).observe(document.getElementById('messages'), { subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'] });
  });

  // 1. Cut twice at random byte offsets: the chat after its 4th line, the first resume after its 2nd.
  const pieces = Array.from({ length: 24 }, (_, i) => `第${i}段🌏，`);
  await servers.stack.script([{ text: pieces, trickle: 0.06, reasoning: ['先想一想，', '再回答。'] }]);
  const offsets = [Math.floor(Math.random() * 40), Math.floor(Math.random() * 40)];
  await page.evaluate((o) => {
    window.__cutPlan.chat.push({ lines: 4, bytes: o[0] });
    window.__cutPlan.events.push({ lines: 2, bytes: o[1] });
  }, offsets);
  await page.getByTestId('chat-input').fill('断点续传');
  await page.getByTestId('send-button').click();
  const answer = page.locator('[data-role="assistant"]').last();
  await answer.and(page.locator('[data-state="done"]')).waitFor({ timeout: 30000 });
  const cuts = await page.evaluate(() => window.__cuts);
  assert.deepEqual(cuts.map(([kind]) => kind), ['chat', 'events'], JSON.stringify(cuts));
  const resumes = urls.filter(([, u]) => u.includes('/events')).map(([, u]) => new URL(u).searchParams.get('after'));
  assert.equal(resumes.length, 2, JSON.stringify(urls));
  assert.ok(resumes.every((a) => /^\d+$/.test(a)) && Number(resumes[1]) >= Number(resumes[0]), JSON.stringify(resumes));
  const states = await page.evaluate(() => window.__states);
  assert.ok(states.includes('reconnecting'), JSON.stringify(states));
  const shown = await answer.getByTestId('message-content').textContent();
  assert.equal(shown, pieces.join(''));
  const reasoning = answer.getByTestId('reasoning');
  assert.ok(await reasoning.isVisible());
  assert.equal(await reasoning.evaluate((d) => d.open), false, 'folded');
  assert.equal(await reasoning.locator('.reasoning-text').textContent(), '先想一想，再回答。');
  let stored = await waitStored(page, (items) => items.at(-1).status === 'complete', 'stored complete');
  assert.equal(stored.at(-1).content, shown, 'the page shows the stored answer, each piece once');
  assert.ok(await page.getByTestId('notice').isHidden());

  // 2. 停止 mid-answer: the cancel endpoint; the shown part stays, the stored answer is truncated.
  await servers.stack.script([{ text: pieces, trickle: 0.2 }]);
  await page.getByTestId('chat-input').fill('停一下');
  await page.getByTestId('send-button').click();
  const second = page.locator('[data-role="assistant"]').last();
  await second.getByTestId('message-content').filter({ hasText: '第1段' }).waitFor();
  const cancel = page.waitForResponse((r) => r.url().endsWith('/cancel'));
  await page.getByTestId('stop-button').click();
  assert.equal((await cancel).status(), 204);
  assert.equal(await second.getAttribute('data-state'), 'stopped');
  stored = await waitStored(page, (items) => items.at(-1).status !== 'streaming', 'stored settled');
  assert.equal(stored.at(-1).status, 'truncated');
  const kept = await second.getByTestId('message-content').textContent();
  assert.ok(stored.at(-1).content.startsWith(kept) && stored.at(-1).content.length < pieces.join('').length, JSON.stringify([kept, stored.at(-1)]));

  // 3. 停止 before the first word: no empty bubble, "已停止", the question stays unanswered.
  await servers.stack.script([{ hang: true }]);
  await page.getByTestId('chat-input').fill('还没开口');
  await page.getByTestId('send-button').click();
  const third = page.locator('[data-role="assistant"]').last();
  await third.and(page.locator('[data-state="streaming"]')).waitFor();
  const cancel2 = page.waitForResponse((r) => r.url().endsWith('/cancel'));
  await page.getByTestId('stop-button').click();
  assert.equal((await cancel2).status(), 204);
  assert.equal(await page.getByTestId('notice').textContent(), '已停止');
  const bubbles = await page.getByTestId('message').evaluateAll((nodes) => nodes.map((n) => n.dataset.role));
  assert.deepEqual(bubbles, ['user', 'assistant', 'user', 'assistant', 'user']);
  stored = await waitStored(page, (items) => items.at(-1).role === 'user' && items.at(-1).status === 'unanswered', 'question unanswered');

  // 4. Cut before `start`: the page cannot know whether its question arrived, so it sends it again
  // under the same Idempotency-Key; the service follows the first copy's answer: asked once.
  const keys = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && r.url().endsWith('/api/v1/chat')) keys.push(r.headers()['idempotency-key']);
  });
  await servers.stack.script([{ text: pieces, trickle: 0.03 }]);
  await page.evaluate(() => window.__cutPlan.chat.push({ lines: 0, bytes: 0 }));
  await page.getByTestId('chat-input').fill('开始之前断开');
  await page.getByTestId('send-button').click();
  const fourth = page.locator('[data-role="assistant"]').last();
  await fourth.and(page.locator('[data-state="done"]')).waitFor({ timeout: 30000 });
  assert.equal(await fourth.getByTestId('message-content').textContent(), pieces.join(''));
  assert.equal(keys.length, 2, JSON.stringify(keys));
  assert.ok(/^[A-Za-z0-9_.:-]{1,64}$/.test(keys[0]) && keys[0] === keys[1], JSON.stringify(keys));
  stored = await waitStored(page, (items) => items.at(-1).status === 'complete', 'stored complete');
  assert.deepEqual(stored.slice(-2).map((m) => [m.role, m.content]), [['user', '开始之前断开'], ['assistant', pieces.join('')]]);
  assert.equal(stored.filter((m) => m.content === '开始之前断开').length, 1, 'asked once');
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
