'use strict';
// A fake of the few wx APIs the SDK uses: request (with chunks), login, storage, timers.
// Not a test file; node --test runs it as an empty one, which is harmless.

const { encodeUtf8 } = require('../../miniprogram/mpchat.js');

const tick = () => new Promise((resolve) => setImmediate(resolve));

function toBytes(body) {
  if (body == null) return new Uint8Array(0);
  if (body instanceof Uint8Array) return body;
  return encodeUtf8(typeof body === 'string' ? body : JSON.stringify(body));
}

function toArrayBuffer(bytes) {
  // A fresh buffer per chunk, as the runtime hands out.
  return bytes.slice().buffer;
}

/** Split bytes at the given offsets (sorted, within range). */
function splitAt(bytes, offsets) {
  const out = [];
  let prev = 0;
  for (const off of offsets) {
    out.push(bytes.subarray(prev, off));
    prev = off;
  }
  out.push(bytes.subarray(prev));
  return out;
}

function ndjson(events) {
  return events.map((e) => JSON.stringify(e) + '\n').join('');
}

/**
 * @param {object} opts
 * @param {(option: any, n: number) => any} opts.chat  answers POST /api/v1/chat:
 *   {status?, header?, body?, chunks?: Uint8Array[], noChunks?: boolean, fail?: string}
 * @param {(option: any, n: number) => any} [opts.api]  answers any other call
 * @param {boolean} [opts.chunked]  what canIUse('request.object.enableChunked') says
 */
function createFakeWx(opts) {
  const calls = [];
  const logins = [];
  const store = new Map();
  const timers = [];
  let chatCount = 0;
  let tokenCount = 0;
  const settled = [];

  function request(option) {
    const call = { option, aborted: false };
    calls.push(call);
    let chunkCb = null;
    const task = {
      abort() {
        if (call.aborted) return;
        call.aborted = true;
      },
      onChunkReceived(cb) {
        chunkCb = cb;
      },
      onHeadersReceived() {},
    };
    const path = option.url.replace(/^https?:\/\/[^/]+/, '');
    let spec;
    if (path === '/api/v1/login') {
      tokenCount += 1;
      spec = opts.login ? opts.login(option, tokenCount) : { status: 200, body: { token: 'tok' + tokenCount, expires_in: 3600 } };
    } else if (path === '/api/v1/chat') {
      chatCount += 1;
      spec = opts.chat(option, chatCount);
    } else {
      spec = opts.api ? opts.api(option, path) : { status: 404, body: { error: { code: 'not_found', message: 'x' } } };
    }
    const done = (async () => {
      await tick();
      if (call.aborted) return option.fail({ errMsg: 'request:fail abort' });
      if (spec.fail) return option.fail({ errMsg: spec.fail });
      const status = spec.status || 200;
      const header = spec.header || {};
      const chunks = spec.chunks || [toBytes(spec.body)];
      if (option.enableChunked && chunkCb && !spec.noChunks) {
        for (const c of chunks) {
          chunkCb({ data: toArrayBuffer(c) });
          await tick();
          if (call.aborted) return option.fail({ errMsg: 'request:fail abort' });
        }
        return option.success({ statusCode: status, header, data: new ArrayBuffer(0) });
      }
      const whole = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
      let off = 0;
      for (const c of chunks) {
        whole.set(c, off);
        off += c.length;
      }
      let data;
      if (option.responseType === 'arraybuffer') data = toArrayBuffer(whole);
      else {
        data = new TextDecoder().decode(whole);
        if (option.dataType === 'json') {
          try {
            data = JSON.parse(data);
          } catch (e) {
            // wx leaves a body that is not JSON as a string.
          }
        }
      }
      return option.success({ statusCode: status, header, data });
    })();
    settled.push(done);
    return task;
  }

  function login(option) {
    logins.push(option);
    setImmediate(() => option.success({ code: 'code' + logins.length, errMsg: 'login:ok' }));
  }

  return {
    calls,
    logins,
    store,
    timers,
    chatCalls: () => calls.filter((c) => c.option.url.endsWith('/api/v1/chat')),
    settle: async () => {
      while (settled.length) await settled.shift();
    },
    options: {
      baseUrl: 'https://chat.example.com/',
      request,
      login,
      canIUse: () => opts.chunked !== false,
      storage: {
        getStorageSync: (k) => (store.has(k) ? store.get(k) : ''),
        setStorageSync: (k, v) => store.set(k, v),
        removeStorageSync: (k) => store.delete(k),
      },
      setTimeout: (fn, ms) => {
        const t = { fn, ms, cleared: false };
        timers.push(t);
        return t;
      },
      clearTimeout: (t) => {
        t.cleared = true;
      },
    },
  };
}

/** Run one chat and collect its events until done/error (or until `until` resolves). */
function record(client, chatOpts) {
  const events = [];
  let handle;
  const finished = new Promise((resolve) => {
    const push = (name) => (ev) => {
      events.push([name, ev]);
      if (name === 'error' || name === 'done') resolve(events);
    };
    handle = client.chat({
      ...chatOpts,
      onStart: push('start'),
      onQueued: push('queued'),
      onDelta: push('delta'),
      onRetract: push('retract'),
      onDone: push('done'),
      onError: push('error'),
      onRetry: push('retry'),
    });
  });
  return { events, finished, handle };
}

module.exports = { createFakeWx, record, ndjson, splitAt, toBytes, tick };
