'use strict';
// The demo's copy of the SDK (example/lib) is the SDK, byte for byte; the demo project is complete.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..', 'miniprogram');
const example = path.join(root, 'example');

for (const name of ['mpchat.js', 'mpchat.d.ts']) {
  test(`example/lib/${name} is a copy of ${name} (run \`make -C clients sync\`)`, () => {
    assert.equal(fs.readFileSync(path.join(example, 'lib', name), 'utf8'), fs.readFileSync(path.join(root, name), 'utf8'));
  });
}

test('every page in app.json has its four files and the appid is the tourist one', () => {
  const app = JSON.parse(fs.readFileSync(path.join(example, 'app.json'), 'utf8'));
  for (const page of app.pages) {
    for (const ext of ['js', 'json', 'wxml', 'wxss']) {
      assert.ok(fs.existsSync(path.join(example, `${page}.${ext}`)), `${page}.${ext}`);
    }
  }
  const project = JSON.parse(fs.readFileSync(path.join(example, 'project.config.json'), 'utf8'));
  assert.equal(project.appid, 'touristappid');
  assert.ok(fs.existsSync(path.join(example, project.miniprogramRoot, 'app.json')));
});
