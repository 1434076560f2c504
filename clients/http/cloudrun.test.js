'use strict';
// WeChat Cloud Run end to end: two real `mpchat serve` on one database, as deployed
// (docs/deployment.md): the login service (`MPCHAT_CLOUDRUN_HEADER_AUTH=login`, public access off)
// reached only through a fake `wx.cloud.callContainer` that acts as WeChat's gateway (drops the
// client's X-WX-* headers, injects X-WX-OPENID), and the public service (`off`, the default)
// reached by `wx.request` over real HTTP with chunks. The SDK's `cloud` option must log in through
// the gateway, stream the answer from the public service with the token, and renew the token the
// same way; a forged X-WX-OPENID sent to the public service must identify nobody.

const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { createClient } = require('../miniprogram/mpchat.js');
const { startStack, missingServer } = require('../helpers/servers.js');

const CI = process.env.CI === 'true';
const ENV = 'prod-test-1a2b';
const SERVICE = 'mpchat-login';
const PIECES = ['云托管', '登录后，', '回答经公网域名', '分块送达。'];

const servers = { stack: null, why: '' };

test.before(async () => {
  servers.why = missingServer();
  if (servers.why) return;
  servers.stack = await startStack({
    env: {
      MPCHAT_AUTH_MODE: 'cloudrun',
      MPCHAT_WECHAT_SECURITY: 'false', // no api.weixin.qq.com here
      MPCHAT_RATE_LIMIT: '1000/minute',
      MPCHAT_LOGIN_RATE_LIMIT: '1000/minute',
    },
    sibling: { MPCHAT_CLOUDRUN_HEADER_AUTH: 'login' },
  });
});

test.after(async () => {
  if (servers.stack) await servers.stack.stop();
});

function prerequisites(t) {
  if (servers.why && CI) assert.fail(servers.why);
  if (servers.why) t.skip(servers.why);
  return !servers.why;
}

/** wx.request over node's http; with enableChunked, each piece node reads is one chunk. */
function createHttpWx() {
  const log = { requests: [], chunks: 0 };
  function request(option) {
    log.requests.push(option);
    const body = option.data === undefined ? undefined : typeof option.data === 'string' ? option.data : JSON.stringify(option.data);
    const headers = { ...option.header };
    if (body !== undefined) headers['content-length'] = Buffer.byteLength(body);
    const req = http.request(new URL(option.url), { method: option.method || 'GET', headers });
    let chunkCb = null;
    let aborted = false;
    req.on('response', (res) => {
      const parts = [];
      res.on('data', (d) => {
        if (option.enableChunked && chunkCb) {
          log.chunks += 1;
          chunkCb({ data: new Uint8Array(d).slice().buffer });
        } else parts.push(d);
      });
      res.on('end', () => {
        if (aborted) return;
        if (option.enableChunked) return option.success({ statusCode: res.statusCode, header: res.headers, data: new ArrayBuffer(0) });
        const text = Buffer.concat(parts).toString('utf8');
        let data = text;
        try {
          data = JSON.parse(text);
        } catch (e) {
          // left as text, as wx does
        }
        option.success({ statusCode: res.statusCode, header: res.headers, data });
      });
    });
    req.on('error', (err) => {
      if (!aborted) option.fail({ errMsg: 'request:fail ' + err.message });
    });
    if (body !== undefined) req.write(body);
    req.end();
    return {
      abort() {
        aborted = true;
        req.destroy();
      },
      onChunkReceived(cb) {
        chunkCb = cb;
      },
      onHeadersReceived() {},
    };
  }
  return { request, log };
}

/**
 * wx.cloud.callContainer as WeChat's gateway: only for this environment and service, the
 * caller's own X-WX-* headers dropped, the signed-in user's X-WX-OPENID (and appid, env) added.
 */
function createGateway(loginBase, user) {
  const calls = [];
  function callContainer(option) {
    calls.push(option);
    (async () => {
      if (!option.config || option.config.env !== ENV) throw new Error('no such environment');
      if (option.header['X-WX-SERVICE'] !== SERVICE) throw new Error('no such service');
      const headers = {};
      for (const [k, v] of Object.entries(option.header)) if (!/^x-wx-/i.test(k)) headers[k] = v;
      Object.assign(headers, { 'X-WX-OPENID': user.openid, 'X-WX-APPID': 'wx0000000000000000', 'X-WX-ENV': ENV, 'X-WX-SOURCE': 'wx_client' });
      const res = await fetch(loginBase + option.path, { method: option.method, headers, body: JSON.stringify(option.data) });
      const text = await res.text();
      let data = text;
      try {
        data = JSON.parse(text);
      } catch (e) {
        // left as text
      }
      option.success({ statusCode: res.status, header: Object.fromEntries(res.headers), data });
    })().catch((err) => option.fail({ errMsg: 'cloud.callContainer:fail ' + err.message }));
  }
  return { callContainer, calls };
}

function memoryStorage() {
  const store = new Map();
  return {
    store,
    getStorageSync: (k) => store.get(k),
    setStorageSync: (k, v) => store.set(k, v),
    removeStorageSync: (k) => store.delete(k),
  };
}

function cloudClient(stack, openid) {
  const user = { openid };
  const wx = createHttpWx();
  const gateway = createGateway(stack.sibling, user);
  const storage = memoryStorage();
  const client = createClient({
    baseUrl: stack.base,
    request: wx.request,
    storage,
    cloud: { env: ENV, service: SERVICE, callContainer: gateway.callContainer },
  });
  return { client, wx, gateway, storage };
}

function chat(client, content) {
  return new Promise((resolve) => {
    const deltas = [];
    client.chat({
      content,
      onDelta: (ev) => deltas.push(ev.text),
      onDone: (ev) => resolve({ done: ev, deltas }),
      onError: (err) => resolve({ error: err, deltas }),
    });
  });
}

test('a forged X-WX-OPENID sent to the public service identifies nobody', async (t) => {
  if (!prerequisites(t)) return;
  const forged = { 'content-type': 'application/json', 'X-WX-OPENID': 'o-someone-else' };
  const login = await fetch(servers.stack.base + '/api/v1/login', { method: 'POST', headers: forged, body: '{"code":"x"}' });
  assert.equal(login.status, 401);
  assert.equal((await login.json()).error.code, 'unauthorized');
  const me = await fetch(servers.stack.base + '/api/v1/me', { headers: forged });
  assert.equal(me.status, 401);
});

test('the SDK logs in through callContainer and streams from the public domain', async (t) => {
  if (!prerequisites(t)) return;
  const stack = servers.stack;
  const alice = cloudClient(stack, 'o-alice-cloudrun-0123456789');
  await stack.script([{ text: PIECES, trickle: 0.05 }]);
  const result = await chat(alice.client, '你好');
  assert.ok(result.done, JSON.stringify(result.error));
  assert.equal(result.done.text, PIECES.join(''));
  assert.ok(result.deltas.length >= 2 && alice.wx.log.chunks >= 2, 'streamed in pieces, not one body');

  // One login, through the gateway; every wx.request went to the public service.
  assert.equal(alice.gateway.calls.length, 1);
  assert.deepEqual(alice.wx.log.requests.filter((o) => o.url.endsWith('/api/v1/login')), []);
  assert.ok(alice.wx.log.requests.every((o) => o.url.startsWith(stack.base + '/')));
  const chatRequest = alice.wx.log.requests.find((o) => o.url.endsWith('/api/v1/chat'));
  assert.equal(chatRequest.enableChunked, true);
  assert.match(chatRequest.header.Authorization, /^Bearer /);

  // The stored answer is what was streamed; another openid is another user.
  const conversations = await alice.client.listConversations();
  const messages = await alice.client.listMessages(conversations.items[0].id);
  assert.equal(messages.items.at(-1).content, PIECES.join(''));
  const bob = cloudClient(stack, 'o-bob-cloudrun-0123456789');
  assert.notEqual((await bob.client.me()).user_id, (await alice.client.me()).user_id);
  assert.deepEqual((await bob.client.listConversations()).items, []);
});

test('a token the service no longer accepts is renewed through callContainer', async (t) => {
  if (!prerequisites(t)) return;
  const stack = servers.stack;
  const carol = cloudClient(stack, 'o-carol-cloudrun-0123456789');
  const first = (await carol.client.me()).user_id;
  assert.equal(carol.gateway.calls.length, 1);
  // The session ends on the server (logout from elsewhere): the stored token is refused.
  const { token } = carol.storage.store.get('mpchat_session');
  const out = await fetch(stack.base + '/api/v1/logout', { method: 'POST', headers: { Authorization: 'Bearer ' + token } });
  assert.equal(out.status, 204);
  assert.equal((await carol.client.me()).user_id, first);
  assert.equal(carol.gateway.calls.length, 2, 'logged in again through the gateway');
  assert.notEqual(carol.storage.store.get('mpchat_session').token, token);
});
