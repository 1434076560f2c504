'use strict';
// A fake of the few wx APIs the SDK uses: request (with chunks), login, storage, timers, a clock,
// the app's show/hide events. Not a test file; node --test runs it as an empty one, which is harmless.
//
// A response spec (what `chat`, `events`, `cancel`, `api` return):
//   {status?, header?, body? | chunks?: Uint8Array[], noChunks?, fail?: errMsg (before anything),
//    end?: undefined (success after the chunks) | {fail: errMsg} (fail after the chunks)
//          | 'hang' (nothing more until the test kills it or the SDK aborts it)}

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
 * @param {(option: any, n: number) => any} opts.chat  answers POST /api/v1/chat
 * @param {(option: any, n: number, q: {id: string, after: number | null}) => any} [opts.events]
 *   answers GET /api/v1/messages/{id}/events?after=
 * @param {(option: any, id: string) => any} [opts.cancel]  answers POST .../cancel (default 204)
 * @param {(option: any, path: string) => any} [opts.api]  answers any other call
 * @param {boolean} [opts.chunked]  what canIUse('request.object.enableChunked') says
 */
function createFakeWx(opts) {
  const calls = [];
  const logins = [];
  const store = new Map();
  const timers = [];
  const cancels = [];
  const showListeners = [];
  const hideListeners = [];
  let clock = Date.now();
  let chatCount = 0;
  let eventsCount = 0;
  let tokenCount = 0;
  const settled = [];

  function request(option) {
    let killed;
    const call = {
      option,
      aborted: false,
      ended: false,
      // kill(errMsg): the runtime fails it now; kill(null): it dies without any callback (iOS).
      kill: (errMsg) => killed({ errMsg }),
      killed: new Promise((resolve) => (killed = resolve)),
    };
    calls.push(call);
    let chunkCb = null;
    const task = {
      abort() {
        if (call.aborted) return;
        call.aborted = true;
        killed({ errMsg: 'request:fail abort' });
      },
      onChunkReceived(cb) {
        chunkCb = cb;
        // push(bytes): more of the body, for a request left hanging by its spec.
        call.push = (body) => chunkCb({ data: toArrayBuffer(toBytes(body)) });
      },
      onHeadersReceived() {},
    };
    const path = option.url.replace(/^https?:\/\/[^/]+/, '');
    call.path = path;
    let spec;
    let m;
    if (path === '/api/v1/login') {
      tokenCount += 1;
      spec = opts.login ? opts.login(option, tokenCount) : { status: 200, body: { token: 'tok' + tokenCount, expires_in: 3600 } };
    } else if (path === '/api/v1/chat') {
      chatCount += 1;
      spec = opts.chat(option, chatCount);
    } else if ((m = /^\/api\/v1\/messages\/([^/?]+)\/events(?:\?after=(-?\d+))?$/.exec(path)) && opts.events) {
      eventsCount += 1;
      spec = opts.events(option, eventsCount, { id: decodeURIComponent(m[1]), after: m[2] === undefined ? null : Number(m[2]) });
    } else if ((m = /^\/api\/v1\/messages\/([^/?]+)\/cancel$/.exec(path)) && option.method === 'POST') {
      cancels.push(decodeURIComponent(m[1]));
      spec = opts.cancel ? opts.cancel(option, decodeURIComponent(m[1])) : { status: 204, body: '' };
    } else {
      spec = opts.api ? opts.api(option, path) : { status: 404, body: { error: { code: 'not_found', message: 'x' } } };
    }
    let reachedHang;
    const hanging = new Promise((resolve) => (reachedHang = resolve));
    const done = (async () => {
      const end = (fn) => {
        call.ended = true;
        return fn();
      };
      const fail = (errMsg) => end(() => (errMsg === null ? undefined : option.fail({ errMsg })));
      const raced = async (p) => {
        // Wait for p unless the request is killed or aborted first.
        let k = null;
        await Promise.race([p, call.killed.then((v) => (k = v))]);
        return k;
      };
      let k = await raced(tick());
      if (k) return fail(k.errMsg);
      if (spec.fail) return fail(spec.fail);
      const status = spec.status || 200;
      const header = spec.header || {};
      const chunks = spec.chunks || [toBytes(spec.body)];
      if (option.enableChunked && chunkCb && !spec.noChunks) {
        for (const c of chunks) {
          chunkCb({ data: toArrayBuffer(c) });
          k = await raced(tick());
          if (k) return fail(k.errMsg);
        }
        if (spec.end === 'hang') {
          reachedHang();
          const how = await call.killed;
          return fail(how.errMsg);
        }
        if (spec.end && spec.end.fail) return fail(spec.end.fail);
        return end(() => option.success({ statusCode: status, header, data: new ArrayBuffer(0) }));
      }
      if (spec.end === 'hang') {
        reachedHang();
        const how = await call.killed;
        return fail(how.errMsg);
      }
      if (spec.end && spec.end.fail) return fail(spec.end.fail);
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
      return end(() => option.success({ statusCode: status, header, data }));
    })();
    settled.push(Promise.race([done, hanging]));
    return task;
  }

  function login(option) {
    logins.push(option);
    setImmediate(() => option.success({ code: 'code' + logins.length, errMsg: 'login:ok' }));
  }

  const pending = () => timers.filter((t) => !t.cleared && !t.fired).sort((a, b) => a.due - b.due || a.id - b.id);

  /** Fire one timer (moving the clock to its due time). */
  function fire(t) {
    if (t.due > clock) clock = t.due;
    t.fired = true;
    t.fn();
  }

  const fake = {
    calls,
    logins,
    store,
    timers,
    cancels,
    chatCalls: () => calls.filter((c) => c.option.url.endsWith('/api/v1/chat')),
    eventCalls: () => calls.filter((c) => c.path.includes('/events')),
    inflight: () => calls.filter((c) => !c.ended && !c.aborted),
    settle: async () => {
      while (settled.length) await settled.shift();
    },
    now: () => clock,
    pendingTimers: pending,
    /** Move the clock on by ms, firing every timer that falls due on the way, in order. */
    advance(ms) {
      const until = clock + ms;
      for (;;) {
        const next = pending()[0];
        if (!next || next.due > until) break;
        fire(next);
      }
      clock = until;
    },
    /** Fire the earliest pending timer; false when there is none. */
    fireNext() {
      const next = pending()[0];
      if (!next) return false;
      fire(next);
      return true;
    },
    hide() {
      for (const fn of hideListeners) fn({});
    },
    show() {
      for (const fn of showListeners) fn({ scene: 1001 });
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
        const t = { id: timers.length, fn, ms, due: clock + ms, cleared: false, fired: false };
        timers.push(t);
        return t;
      },
      clearTimeout: (t) => {
        t.cleared = true;
      },
      now: () => clock,
      onAppShow: (fn) => showListeners.push(fn),
      onAppHide: (fn) => hideListeners.push(fn),
    },
  };
  return fake;
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
      onReasoning: push('reasoning'),
      onRetract: push('retract'),
      onDone: push('done'),
      onError: push('error'),
      onRetry: push('retry'),
      onReconnect: push('reconnect'),
      onReconnected: push('reconnected'),
      ...(chatOpts && chatOpts.withSnapshot ? { onSnapshot: push('snapshot') } : {}),
    });
  });
  return { events, finished, get handle() { return handle; } };
}

/** Wait (on the event loop, not on time) until predicate() holds. */
async function waitFor(predicate, what) {
  for (let i = 0; i < 2000; i++) {
    if (predicate()) return;
    await tick();
  }
  throw new Error('condition not met: ' + (what || predicate));
}

/**
 * Run the event loop until `finished` resolves; whenever nothing is left to do but a timer,
 * fire the earliest one (time is the fake clock's, so no test waits for real time).
 */
async function drive(fake, finished) {
  let done = false;
  finished.then(() => (done = true), () => (done = true));
  for (let i = 0; i < 10000; i++) {
    await fake.settle();
    for (let j = 0; j < 5 && !done; j++) await tick();
    if (done) return finished;
    if (!fake.fireNext()) {
      await tick();
      if (done) return finished;
      if (!fake.fireNext()) throw new Error('stuck: nothing in flight, no timer pending');
    }
  }
  throw new Error('drive: too many steps');
}

module.exports = { createFakeWx, record, ndjson, splitAt, toBytes, tick, waitFor, drive };
