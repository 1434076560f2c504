'use strict';
// What the Chromium tests share: Debian's browser (never downloaded at run time), the flags it
// runs with on these machines (without the background-networking ones its connections to the
// closed network are refused by the dozen), what is missing to run at all, and the screenshot.

const fs = require('node:fs');
const path = require('node:path');
const assert = require('node:assert/strict');
const { MPCHAT } = require('./servers.js');

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** Why a browser test cannot run here ('' when it can). */
function missing() {
  if (!fs.existsSync(CHROMIUM)) return 'chromium is not installed at ' + CHROMIUM;
  if (!fs.existsSync(MPCHAT)) return 'no .venv/bin/mpchat (run make in the project root first)';
  return '';
}

/**
 * Take the page's screenshot, which must be a PNG. The picture in the docs (`file`) is rewritten
 * only when asked (MPCHAT_UPDATE_SCREENSHOTS=1), so a test run leaves the checkout as it was.
 */
async function screenshot(page, file, options) {
  const png = await page.screenshot(options);
  assert.equal(png.subarray(1, 4).toString('latin1'), 'PNG');
  if (process.env.MPCHAT_UPDATE_SCREENSHOTS === '1') {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, png);
  }
}

module.exports = { CHROMIUM, CHROMIUM_ARGS, missing, screenshot };
