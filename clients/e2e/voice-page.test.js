'use strict';
// The browser demo page's voice flow in headless Chromium with a fake microphone: 按住说话
// records (MediaRecorder), the page sends a WAV to /api/v1/voice, shows the transcript as the
// question and streams the answer; 播放 reads the answer aloud sentence by sentence.

const test = require('node:test');
const assert = require('node:assert/strict');

const { startStack } = require('../helpers/servers.js');
const { CHROMIUM, CHROMIUM_ARGS: BROWSER_ARGS, missing } = require('../helpers/browser.js');

const CI = process.env.CI === 'true';
const CHROMIUM_ARGS = [
  ...BROWSER_ARGS,
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
];

test('demo page: hold to talk, transcript then answer, play it sentence by sentence', { timeout: 120000 }, async (t) => {
  const why = missing();
  if (why && CI) assert.fail(why);
  if (why) return t.skip(why);
  const stack = await startStack({ env: { MPCHAT_WEB_DEMO: 'true', MPCHAT_RATE_LIMIT: '1000/minute' } });
  const { chromium } = require('playwright-core');
  let browser;
  t.after(async () => {
    if (browser) await browser.close();
    await stack.stop();
  });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  const page = await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  await page.goto(stack.base + '/');
  await page.getByTestId('login-code').fill('voice-user');
  await page.getByTestId('login-button').click();
  await page.getByTestId('app-view').waitFor();

  const talk = page.getByTestId('talk-button');
  const box = await talk.boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  const voiceRequest = page.waitForRequest((r) => r.url().includes('/api/v1/voice'));
  await page.mouse.down();
  await page.waitForFunction(() => document.getElementById('talk-button').dataset.state === 'recording');
  await page.waitForTimeout(1200);
  await page.mouse.up();
  const sent = await voiceRequest;
  assert.equal(sent.headers()['content-type'], 'audio/wav');
  // Accepted: the server checked it is a WAV with samples (a wrong or empty body is 400).
  assert.equal((await sent.response()).status(), 200);

  const answer = page.locator('[data-role="assistant"]').last();
  await answer.and(page.locator('[data-state="done"]')).waitFor({ timeout: 30000 });
  const question = page.locator('[data-role="user"]').last();
  assert.equal((await question.getByTestId('message-content').textContent()).trim(), '你好'); // the fake's transcript
  assert.ok((await answer.getByTestId('message-content').textContent()).trim().length > 0);

  await answer.getByTestId('play-button').click();
  await answer.and(page.locator('[data-speech="done"], [data-speech="error"]')).waitFor({ timeout: 30000 });
  assert.equal(await answer.getAttribute('data-speech'), 'done', await page.getByTestId('notice').textContent());
  assert.ok(Number(await answer.getAttribute('data-spoken')) >= 1);
  assert.deepEqual(pageErrors, []);
});
