'use strict';
/**
 * mpchat mini program SDK: login, streamed chat over wx.request chunks, conversations, quota
 * and credits bought with WeChat Pay.
 *
 * Plain CommonJS with no dependencies, so it runs in the mini program runtime as it is:
 * copy this file (and mpchat.d.ts for editors) into the mini program and `require` it.
 * The wire contract is API.md of the mpchat service (v1.1): an answer outlives its connection, so
 * a cut stream (the ~60 s wx.request limit, the app in the background, a network change) is
 * followed again from the last `seq` it delivered, and the caller sees one uninterrupted answer.
 */

var DEFAULT_STORAGE_KEY = 'mpchat_session';
// WeChat Cloud Run: the login body's `code` (API.md requires one); the service ignores it and
// takes the openid WeChat's gateway injected on wx.cloud.callContainer.
var CLOUD_LOGIN_CODE = 'callContainer';
var DEFAULT_MAX_RETRY_DELAY = 10; // seconds
var DEFAULT_MAX_RETRIES = 2;
// Renew a little before the server would refuse the token, so a chat never starts with one
// that expires half-way through the request.
// Never more than a quarter of the token's lifetime: a short-lived token would otherwise look
// expired from the start and every call would log in again.
var EXPIRY_MARGIN_MS = 60 * 1000;
var EXPIRY_MARGIN_FRACTION = 0.25;
// Resume (seconds): reconnections after a cut, the first at once, then waits doubling from
// DEFAULT_RESUME_DELAY up to DEFAULT_RESUME_MAX_DELAY; at most DEFAULT_RESUME_ATTEMPTS in a row
// without a new event. A stream silent for DEFAULT_IDLE_TIMEOUT (server pings keep it alive) is
// taken as dead; an app hidden DEFAULT_BACKGROUND_TIMEOUT or more has lost its request.
var DEFAULT_RESUME_ATTEMPTS = 6;
var DEFAULT_RESUME_DELAY = 1;
var DEFAULT_RESUME_MAX_DELAY = 10;
var DEFAULT_IDLE_TIMEOUT = 30;
var DEFAULT_BACKGROUND_TIMEOUT = 5;
var INTERRUPTED_MESSAGE = '连接中断，回答不完整';
var RETRYABLE = { rate_limited: true, busy: true };
var REJECTED_MESSAGE = '内容包含不适宜的词语，请修改后再试';
// Buying (seconds): after wx.requestPayment succeeds the order is asked for at once, then after
// waits doubling from DEFAULT_PAY_POLL_DELAY up to DEFAULT_PAY_POLL_MAX_DELAY, until it is paid or
// closed or DEFAULT_PAY_POLL_TIMEOUT has passed (then it is reported still `pending`).
var DEFAULT_PAY_POLL_DELAY = 1;
var DEFAULT_PAY_POLL_MAX_DELAY = 5;
var DEFAULT_PAY_POLL_TIMEOUT = 30;
// Polling goes on through these (the service asks WeChat Pay and may fail for a moment).
var TRANSIENT = { network_error: true, rate_limited: true, busy: true, service_unavailable: true };

// The recorder's formats (wx.getRecorderManager) and the Content-Type each is sent as.
/** @type {Record<string, string>} */
var AUDIO_TYPES = { mp3: 'audio/mpeg', aac: 'audio/aac', wav: 'audio/wav', m4a: 'audio/x-m4a', pcm: 'audio/pcm' };

/**
 * A name for one chat request, unique enough per user: 1 to 64 of [A-Za-z0-9_.:-] (API.md).
 * @returns {string}
 */
function newRequestKey() {
  var r = function () { return Math.random().toString(36).slice(2, 12); };
  return 'c' + Date.now().toString(36) + '-' + r() + r();
}

/** An error with the stable code of API.md (or a client-side one such as `network_error`). */
function MpchatError(code, message, extra) {
  var err = new Error(message || code);
  err.name = 'MpchatError';
  /** @type {any} */ (err).code = code;
  if (extra) {
    for (var k in extra) {
      if (Object.prototype.hasOwnProperty.call(extra, k) && extra[k] !== undefined) {
        /** @type {any} */ (err)[k] = extra[k];
      }
    }
  }
  return err;
}

// ---------------------------------------------------------------------------------------------
// UTF-8 and NDJSON. TextDecoder is missing on some devices, so decode bytes ourselves.

/**
 * Decode UTF-8 bytes the way TextDecoder does (WHATWG): each malformed or truncated sequence
 * becomes one U+FFFD and decoding resumes at the first byte that did not fit.
 * @param {Uint8Array} bytes
 * @returns {string}
 */
function decodeUtf8(bytes) {
  var out = '';
  /** @type {number[]} */
  var units = [];
  var i = 0;
  var n = bytes.length;
  while (i < n) {
    var b0 = bytes[i++];
    var cp = 0xfffd;
    var need = 0;
    var lower = 0x80;
    var upper = 0xbf;
    if (b0 < 0x80) {
      cp = b0;
    } else if (b0 >= 0xc2 && b0 <= 0xdf) {
      need = 1; cp = b0 & 0x1f;
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
      // E0 and ED bounds rule out overlong forms and UTF-16 surrogates.
      if (b0 === 0xe0) lower = 0xa0;
      if (b0 === 0xed) upper = 0x9f;
      need = 2; cp = b0 & 0x0f;
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      if (b0 === 0xf0) lower = 0x90;
      if (b0 === 0xf4) upper = 0x8f;
      need = 3; cp = b0 & 0x07;
    }
    for (var j = 0; j < need; j++) {
      var b = i < n ? bytes[i] : -1;
      if (b < lower || b > upper) {
        cp = 0xfffd;
        break;
      }
      lower = 0x80;
      upper = 0xbf;
      cp = (cp << 6) | (b & 0x3f);
      i++;
    }
    if (cp > 0xffff) {
      cp -= 0x10000;
      units.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
    } else {
      units.push(cp);
    }
    // Flush in slices: fromCharCode.apply has an argument-count limit.
    if (units.length >= 4096) {
      out += String.fromCharCode.apply(null, units);
      units = [];
    }
  }
  return out + String.fromCharCode.apply(null, units);
}

/**
 * Encode a string as UTF-8 (only for tests and fallbacks; the SDK decodes, it never encodes).
 * @param {string} text
 * @returns {Uint8Array}
 */
function encodeUtf8(text) {
  /** @type {number[]} */
  var bytes = [];
  for (var i = 0; i < text.length; i++) {
    var cp = text.charCodeAt(i);
    if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < text.length) {
      var lo = text.charCodeAt(i + 1);
      if (lo >= 0xdc00 && lo <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        i += 1;
      }
    }
    if (cp < 0x80) bytes.push(cp);
    else if (cp < 0x800) bytes.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
    else if (cp < 0x10000) bytes.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
    else bytes.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
  }
  return new Uint8Array(bytes);
}

/**
 * Collects bytes and hands out whole lines. A `\n` byte never occurs inside a multi-byte
 * UTF-8 sequence, so splitting on 0x0A before decoding is always safe.
 */
function LineBuffer() {
  /** @type {Uint8Array[]} */
  this._parts = [];
  this._size = 0;
}

/**
 * @param {ArrayBuffer | Uint8Array} chunk
 * @returns {string[]} the complete lines in this chunk (without `\n`)
 */
LineBuffer.prototype.push = function (chunk) {
  var bytes = chunk instanceof Uint8Array ? chunk : new Uint8Array(chunk);
  /** @type {string[]} */
  var lines = [];
  var start = 0;
  for (var i = 0; i < bytes.length; i++) {
    if (bytes[i] === 0x0a) {
      lines.push(this._take(bytes.subarray(start, i)));
      start = i + 1;
    }
  }
  if (start < bytes.length) {
    // Copy: the runtime may reuse the chunk's buffer after the callback returns.
    this._parts.push(bytes.slice(start));
    this._size += bytes.length - start;
  }
  return lines;
};

/** @returns {string | null} whatever is left without a final `\n`, if anything. */
LineBuffer.prototype.flush = function () {
  if (this._size === 0) return null;
  return this._take(new Uint8Array(0));
};

/** @param {Uint8Array} tail */
LineBuffer.prototype._take = function (tail) {
  if (this._size === 0) return decodeUtf8(tail);
  var all = new Uint8Array(this._size + tail.length);
  var off = 0;
  for (var i = 0; i < this._parts.length; i++) {
    all.set(this._parts[i], off);
    off += this._parts[i].length;
  }
  all.set(tail, off);
  this._parts = [];
  this._size = 0;
  return decodeUtf8(all);
};

/**
 * Turn one NDJSON line into an event; a plain `{"error": {...}}` body counts as an error event.
 * @param {string} line
 * @returns {any | null}
 */
function parseLine(line) {
  var text = line.replace(/^\s+|\s+$/g, '');
  if (!text) return null;
  var obj;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    return { type: 'error', code: 'bad_response', message: '服务返回了无法识别的内容' };
  }
  if (obj && !obj.type && obj.error && typeof obj.error === 'object') {
    return { type: 'error', code: obj.error.code, message: obj.error.message, retry_after: obj.error.retry_after };
  }
  return obj && typeof obj === 'object' ? obj : null;
}

/** @param {any} data @returns {string} */
function bodyText(data) {
  if (data == null) return '';
  if (typeof data === 'string') return data;
  if (data instanceof ArrayBuffer || data instanceof Uint8Array) {
    return decodeUtf8(data instanceof Uint8Array ? data : new Uint8Array(data));
  }
  return JSON.stringify(data);
}

/** @param {any} data @returns {any} */
function bodyJson(data) {
  if (data == null || data === '') return null;
  if (typeof data === 'object' && !(data instanceof ArrayBuffer) && !(data instanceof Uint8Array)) {
    return data;
  }
  try {
    return JSON.parse(bodyText(data));
  } catch (e) {
    return null;
  }
}

/** @param {any} header @param {string} name @returns {any} */
function headerValue(header, name) {
  if (!header) return undefined;
  var lower = name.toLowerCase();
  for (var k in header) {
    if (k.toLowerCase() === lower) return header[k];
  }
  return undefined;
}

/** Map a status without a readable body to the code API.md gives it. */
/** @param {number} status @param {any} header */
function errorFromStatus(status, header) {
  var codes = /** @type {Record<number, string>} */ ({
    400: 'invalid_request', 401: 'unauthorized', 402: 'quota_exceeded', 404: 'not_found',
    413: 'payload_too_large', 429: 'rate_limited', 502: 'upstream_error', 503: 'busy',
    504: 'upstream_timeout'
  });
  var retry = Number(headerValue(header, 'Retry-After'));
  return {
    type: 'error',
    code: codes[status] || (status >= 500 ? 'server_error' : 'http_error'),
    message: '请求失败（' + status + '）',
    retry_after: retry > 0 ? retry : undefined,
    status: status
  };
}

/**
 * A shallow copy of `obj` without the keys set in `skip`.
 * @param {any} obj @param {Record<string, boolean>} skip @returns {any}
 */
function copyWithout(obj, skip) {
  /** @type {Record<string, any>} */
  var out = {};
  for (var k in obj) {
    if (Object.prototype.hasOwnProperty.call(obj, k) && !skip[k]) out[k] = obj[k];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Local pre-check.

/** @param {string} text */
function normalizeForCheck(text) {
  var s = String(text);
  if (typeof s.normalize === 'function') s = s.normalize('NFKC');
  return s.toLowerCase().replace(/\s+/g, '');
}

/** @param {string[] | undefined} words */
function buildPrecheck(words) {
  var list = (words || []).map(normalizeForCheck).filter(function (w) { return w.length > 0; });
  /** @param {string} content */
  return function (content) {
    var s = normalizeForCheck(content);
    for (var i = 0; i < list.length; i++) {
      if (s.indexOf(list[i]) !== -1) return true;
    }
    return false;
  };
}

// ---------------------------------------------------------------------------------------------
// The client.

/** @returns {WechatMiniprogram.Wx | undefined} */
function globalWx() {
  return typeof wx !== 'undefined' ? wx : undefined;
}

/**
 * @param {import('./mpchat').ClientOptions} options
 * @returns {import('./mpchat').Client}
 */
function createClient(options) {
  if (!options || !options.baseUrl) throw new Error('mpchat: baseUrl is required');
  var baseUrl = String(options.baseUrl).replace(/\/+$/, '');
  var storageKey = options.storageKey || DEFAULT_STORAGE_KEY;
  var maxRetryDelay = options.maxRetryDelay != null ? options.maxRetryDelay : DEFAULT_MAX_RETRY_DELAY;
  var maxRetries = options.maxRetries != null ? options.maxRetries : DEFAULT_MAX_RETRIES;
  var w = globalWx();
  // Typed as wx defines them, so tsc checks every option the SDK passes.
  /** @type {typeof wx.request | undefined} */
  var request = /** @type {any} */ (options.request) || (w && w.request.bind(w));
  /** @type {typeof wx.login | undefined} */
  var login = /** @type {any} */ (options.login) || (w && w.login.bind(w));
  var canIUse = options.canIUse || (w && w.canIUse.bind(w));
  var storage = options.storage || (w ? {
    getStorageSync: w.getStorageSync.bind(w),
    setStorageSync: w.setStorageSync.bind(w),
    removeStorageSync: w.removeStorageSync.bind(w)
  } : {});
  var schedule = options.setTimeout || function (fn, ms) { return setTimeout(fn, ms); };
  var unschedule = options.clearTimeout || function (id) { clearTimeout(id); };
  var now = options.now || function () { return Date.now(); };
  /** @param {any} v @param {number} d */
  function seconds(v, d) { return v != null && Number(v) >= 0 ? Number(v) : d; }
  var resumeAttempts = seconds(options.resumeAttempts, DEFAULT_RESUME_ATTEMPTS);
  var resumeDelay = seconds(options.resumeDelay, DEFAULT_RESUME_DELAY);
  var resumeMaxDelay = seconds(options.resumeMaxDelay, DEFAULT_RESUME_MAX_DELAY);
  var idleTimeoutMs = seconds(options.idleTimeout, DEFAULT_IDLE_TIMEOUT) * 1000;
  var backgroundTimeoutMs = seconds(options.backgroundTimeout, DEFAULT_BACKGROUND_TIMEOUT) * 1000;
  /** @type {typeof wx.onAppShow | undefined} */
  var onAppShow = /** @type {any} */ (options.onAppShow) || (w && typeof w.onAppShow === 'function' ? w.onAppShow.bind(w) : undefined);
  /** @type {typeof wx.onAppHide | undefined} */
  var onAppHide = /** @type {any} */ (options.onAppHide) || (w && typeof w.onAppHide === 'function' ? w.onAppHide.bind(w) : undefined);
  /** @type {typeof wx.requestPayment | undefined} */
  var requestPayment = /** @type {any} */ (options.requestPayment) || (w && typeof w.requestPayment === 'function' ? w.requestPayment.bind(w) : undefined);
  var payPollDelayMs = seconds(options.payPollDelay, DEFAULT_PAY_POLL_DELAY) * 1000;
  var payPollMaxDelayMs = seconds(options.payPollMaxDelay, DEFAULT_PAY_POLL_MAX_DELAY) * 1000;
  var payPollTimeoutMs = seconds(options.payPollTimeout, DEFAULT_PAY_POLL_TIMEOUT) * 1000;
  var onQuota = options.onQuota;
  // Voice (docs/voice.md): the recorder, files and audio player, injectable for tests.
  var getRecorderManager = options.getRecorderManager || (w && typeof w.getRecorderManager === 'function' ? w.getRecorderManager.bind(w) : undefined);
  var getFileSystemManager = options.getFileSystemManager || (w && typeof w.getFileSystemManager === 'function' ? w.getFileSystemManager.bind(w) : undefined);
  var createInnerAudioContext = options.createInnerAudioContext || (w && typeof w.createInnerAudioContext === 'function' ? w.createInnerAudioContext.bind(w) : undefined);
  var userDataPath = options.userDataPath || (w && w.env && w.env.USER_DATA_PATH) || '';
  var isRejected = buildPrecheck(options.wordList);
  if (typeof request !== 'function') throw new Error('mpchat: no wx.request and no request option');
  // WeChat Cloud Run (docs/deployment.md): logins go through wx.cloud.callContainer to a service
  // without public access, where the platform says who the user is; everything else, streamed,
  // goes with the token to baseUrl (the public service's ICP-filed domain).
  var cloud = options.cloud || null;
  if (cloud && (!cloud.env || !cloud.service)) throw new Error('mpchat: cloud needs env and service');
  /** @type {any} */
  var callContainer = cloud && (cloud.callContainer ||
    (w && w.cloud && typeof w.cloud.callContainer === 'function' ? w.cloud.callContainer.bind(w.cloud) : undefined));
  var doRequest = request;

  /** @type {{token: string, expiresAt: number, ttl?: number} | null} */
  var session = null;
  /** @type {Promise<string> | null} */
  var loggingIn = null;

  // The app's visibility (wx.onAppHide / wx.onAppShow), watched from the first chat on.
  var appHidden = false;
  var hiddenAt = 0;
  var lifecycleHooked = false;
  /** @type {{onShow: (hiddenForMs: number) => void}[]} */
  var activeChats = [];

  function hookLifecycle() {
    if (lifecycleHooked) return;
    lifecycleHooked = true;
    if (typeof onAppHide === 'function') {
      onAppHide(function () {
        appHidden = true;
        hiddenAt = now();
      });
    }
    if (typeof onAppShow === 'function') {
      onAppShow(function () {
        var hiddenFor = appHidden ? now() - hiddenAt : 0;
        appHidden = false;
        var chats = activeChats.slice();
        for (var i = 0; i < chats.length; i++) chats[i].onShow(hiddenFor);
      });
    }
  }

  /** @param {{expiresAt: number, ttl?: number} | null} s */
  function fresh(s) {
    if (!s) return false;
    var margin = EXPIRY_MARGIN_MS;
    if (s.ttl && s.ttl > 0) margin = Math.min(margin, s.ttl * EXPIRY_MARGIN_FRACTION);
    return s.expiresAt - margin > now();
  }

  function readSession() {
    if (session) return session;
    try {
      var stored = storage.getStorageSync ? storage.getStorageSync(storageKey) : null;
      if (stored && typeof stored.token === 'string') session = stored;
    } catch (e) {
      session = null;
    }
    return session;
  }

  /** @param {{token: string, expiresAt: number, ttl?: number} | null} value */
  function writeSession(value) {
    session = value;
    try {
      if (value && storage.setStorageSync) storage.setStorageSync(storageKey, value);
      if (!value && storage.removeStorageSync) storage.removeStorageSync(storageKey);
    } catch (e) {
      // Storage full or unavailable: the session still lives in memory for this launch.
    }
  }

  /** @returns {Promise<string>} */
  function wxLoginCode() {
    return new Promise(function (resolve, reject) {
      if (typeof login !== 'function') {
        reject(MpchatError('login_failed', 'wx.login 不可用'));
        return;
      }
      /** @type {WechatMiniprogram.LoginOption} */
      var loginOption = {
        /** @param {any} res */
        success: function (res) {
          if (res && res.code) resolve(res.code);
          else reject(MpchatError('login_failed', '登录失败：没有拿到 code'));
        },
        /** @param {any} err */
        fail: function (err) {
          reject(MpchatError('login_failed', (err && err.errMsg) || '登录失败'));
        }
      };
      login(loginOption);
    });
  }

  /**
   * POST /api/v1/login through wx.cloud.callContainer: WeChat's gateway adds X-WX-OPENID.
   * @param {string} code
   * @returns {Promise<any>}
   */
  function sendCloudLogin(code) {
    return new Promise(function (resolve, reject) {
      if (!cloud || typeof callContainer !== 'function') {
        reject(MpchatError('login_failed', 'wx.cloud.callContainer 不可用'));
        return;
      }
      callContainer({
        config: { env: cloud.env },
        path: '/api/v1/login',
        method: 'POST',
        header: { 'X-WX-SERVICE': cloud.service, 'content-type': 'application/json' },
        data: { code: code },
        success: resolve,
        /** @param {any} err */
        fail: function (err) {
          reject(MpchatError('network_error', (err && err.errMsg) || '网络错误'));
        }
      });
    });
  }

  /**
   * Exchange a code for a session token. With `code` given (dev login, tests) wx.login is skipped;
   * with the `cloud` option the login goes through wx.cloud.callContainer instead, without wx.login.
   * @param {string} [code]
   * @returns {Promise<string>}
   */
  function doLogin(code) {
    if (loggingIn && code === undefined) return loggingIn;
    var sent = cloud ? sendCloudLogin(code !== undefined ? code : CLOUD_LOGIN_CODE)
      : (code !== undefined ? Promise.resolve(code) : wxLoginCode()).then(function (c) {
        return send('POST', '/api/v1/login', { code: c }, null);
      });
    var p = sent.then(function (res) {
      var body = bodyJson(res.data);
      if (res.statusCode !== 200 || !body || typeof body.token !== 'string') {
        throw responseError(res, body);
      }
      var ttl = Number(body.expires_in) > 0 ? Number(body.expires_in) * 1000 : 3600 * 1000;
      writeSession({ token: body.token, expiresAt: now() + ttl, ttl: ttl });
      return body.token;
    });
    if (code === undefined) {
      loggingIn = p;
      var clear = function () { loggingIn = null; };
      p.then(clear, clear);
    }
    return p;
  }

  /** @returns {Promise<string>} */
  function ensureToken() {
    var s = readSession();
    if (s && fresh(s)) return Promise.resolve(s.token);
    return doLogin();
  }

  /**
   * @param {'GET' | 'POST' | 'DELETE'} method @param {string} path @param {any} data @param {string | null} token
   * @returns {Promise<any>}
   */
  function send(method, path, data, token) {
    return new Promise(function (resolve, reject) {
      /** @type {Record<string, string>} */
      var header = { 'content-type': 'application/json' };
      if (token) header.Authorization = 'Bearer ' + token;
      /** @type {WechatMiniprogram.RequestOption} */
      var req = {
        url: baseUrl + path,
        method: method,
        data: data === null ? undefined : data,
        header: header,
        dataType: 'json',
        responseType: 'text',
        success: resolve,
        /** @param {any} err */
        fail: function (err) {
          reject(MpchatError('network_error', (err && err.errMsg) || '网络错误'));
        }
      };
      doRequest(req);
    });
  }

  /** @param {any} res @param {any} body */
  function responseError(res, body) {
    var e = body && body.error ? body.error : parseLine(bodyText(res.data).split('\n')[0] || '');
    var fallback = errorFromStatus(res.statusCode, res.header);
    return MpchatError((e && e.code) || fallback.code, (e && e.message) || fallback.message, {
      status: res.statusCode,
      retryAfter: (e && e.retry_after) || fallback.retry_after
    });
  }

  /**
   * An authenticated JSON call: logs in when needed, renews once on 401.
   * @param {'GET' | 'POST' | 'DELETE'} method @param {string} path @param {any} [data] @param {boolean} [optionalAuth]
   * @returns {Promise<any>}
   */
  function call(method, path, data, optionalAuth) {
    /** @param {boolean} renewed @returns {Promise<any>} */
    function attempt(renewed) {
      var s = optionalAuth && !renewed ? readSession() : null;
      var tokenP = optionalAuth && !renewed ? Promise.resolve(s ? s.token : null) : ensureToken();
      return tokenP.then(function (token) {
        return send(method, path, data === undefined ? null : data, token);
      }).then(function (res) {
        if (res.statusCode === 401 && !renewed) {
          writeSession(null);
          return attempt(true);
        }
        if (res.statusCode < 200 || res.statusCode >= 300) throw responseError(res, bodyJson(res.data));
        return res.statusCode === 204 ? null : bodyJson(res.data);
      });
    }
    return attempt(false);
  }

  /** @param {Record<string, any> | undefined} q */
  function query(q) {
    var parts = [];
    for (var k in q || {}) {
      var v = /** @type {any} */ (q)[k];
      if (v !== undefined && v !== null && v !== '') parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(v));
    }
    return parts.length ? '?' + parts.join('&') : '';
  }

  function chunkedSupported() {
    if (typeof canIUse !== 'function') return true;
    try {
      return canIUse('request.object.enableChunked') !== false;
    } catch (e) {
      return true;
    }
  }

  // ---- quota and credits ----

  /**
   * Hand a quota the SDK just learned to the app's `onQuota`.
   * @param {any} quota @param {import('./mpchat').QuotaSource} source
   */
  function tellQuota(quota, source) {
    if (typeof onQuota !== 'function' || !quota || typeof quota !== 'object') return;
    try {
      onQuota(quota, { source: source });
    } catch (e) {
      if (typeof console !== 'undefined') console.error('mpchat: callback onQuota threw', e);
    }
  }

  /** A chat was refused with 402: tell `onQuota`, with the balance as /me has it now. */
  function quotaExceeded() {
    call('GET', '/api/v1/me').then(function (body) {
      return body && body.quota && typeof body.quota === 'object' ? body.quota : {};
    }, function () {
      return {};
    }).then(function (quota) {
      var told = copyWithout(quota, {});
      told.enabled = true;
      told.exceeded = true;
      tellQuota(told, 'exceeded');
    });
  }

  /** @returns {Promise<any>} */
  function me() {
    return call('GET', '/api/v1/me').then(function (body) {
      if (body) tellQuota(body.quota, 'me');
      return body;
    });
  }

  /** @param {string} orderId @returns {Promise<any>} */
  function getOrder(orderId) {
    return call('GET', '/api/v1/orders/' + encodeURIComponent(orderId));
  }

  /**
   * wx.requestPayment with the order's parameters: resolves true when paid on the phone, false
   * when the user cancelled; rejects `payment_failed` otherwise.
   * @param {any} payment @param {string} orderId @returns {Promise<boolean>}
   */
  function pay(payment, orderId) {
    return new Promise(function (resolve, reject) {
      if (typeof requestPayment !== 'function') {
        reject(MpchatError('payment_failed', 'wx.requestPayment 不可用', { orderId: orderId }));
        return;
      }
      /** @type {WechatMiniprogram.RequestPaymentOption} */
      var option = {
        timeStamp: String(payment.timeStamp),
        nonceStr: payment.nonceStr,
        package: payment.package,
        signType: payment.signType || 'RSA',
        paySign: payment.paySign,
        // Not proof of payment: only the service, told by WeChat Pay, knows; the order is polled.
        success: function () { resolve(true); },
        /** @param {any} err */
        fail: function (err) {
          var msg = (err && err.errMsg) || '';
          // `requestPayment:fail cancel`: the user closed the payment sheet; nothing was paid.
          if (/cancel/i.test(msg)) resolve(false);
          else reject(MpchatError('payment_failed', msg || '支付失败', { orderId: orderId }));
        }
      };
      try {
        requestPayment(option);
      } catch (e) {
        reject(MpchatError('payment_failed', (e && /** @type {any} */ (e).message) || '支付失败', { orderId: orderId }));
      }
    });
  }

  /**
   * Ask for the order until it is paid or closed, with growing waits, for at most payPollTimeout
   * (then it is still `pending`). Passing failures (network, 429, 5xx) do not end the polling; a
   * query left unanswered (a stalled connection) is given up payPollMaxDelay after the deadline.
   * @param {string} orderId @param {any} order the order as created
   * @returns {Promise<import('./mpchat').BuyResult>}
   */
  function pollOrder(orderId, order) {
    return new Promise(function (resolve, reject) {
      var started = now();
      var wait = payPollDelayMs;
      var last = order;
      var over = false;
      /** @type {any} */
      var quota;
      /** @type {any} */
      var guard = null;

      function unguard() {
        if (guard !== null) unschedule(guard);
        guard = null;
      }

      /** @param {import('./mpchat').BuyResult['status']} status */
      function finish(status) {
        if (over) return;
        over = true;
        unguard();
        /** @type {import('./mpchat').BuyResult} */
        var result = { status: status, order_id: orderId, order: copyWithout(last, { quota: true, payment: true }) };
        if (quota) result.quota = quota;
        resolve(result);
        if (quota) tellQuota(quota, 'purchase');
      }

      function next() {
        var left = payPollTimeoutMs - (now() - started);
        if (left <= 0) {
          finish('pending');
          return;
        }
        var delay = Math.min(wait, left);
        wait = Math.min(wait * 2, payPollMaxDelayMs);
        schedule(poll, delay);
      }

      function poll() {
        if (over) return;
        var left = Math.max(payPollTimeoutMs - (now() - started), 0);
        guard = schedule(function () {
          guard = null;
          finish('pending');
        }, left + payPollMaxDelayMs);
        getOrder(orderId).then(function (body) {
          if (over) return;
          unguard();
          if (body && typeof body.status === 'string') {
            last = body;
            if (body.quota && typeof body.quota === 'object') quota = body.quota;
            if (body.status === 'paid' || body.status === 'closed') {
              finish(body.status);
              return;
            }
          }
          next();
        }, function (err) {
          if (over) return;
          unguard();
          if (TRANSIENT[/** @type {'busy'} */ (err.code)] || err.status >= 500) {
            next();
            return;
          }
          over = true;
          reject(err);
        });
      }

      poll();
    });
  }

  /** @param {string} planId @returns {Promise<import('./mpchat').BuyResult>} */
  function buy(planId) {
    return call('POST', '/api/v1/orders', { plan: planId }).then(function (order) {
      if (!order || typeof order.order_id !== 'string' || !order.payment) {
        throw MpchatError('bad_response', '服务返回了无法识别的内容');
      }
      var orderId = order.order_id;
      return pay(order.payment, orderId).then(function (paid) {
        if (paid) return pollOrder(orderId, order);
        return { status: 'cancelled', order_id: orderId, order: copyWithout(order, { quota: true, payment: true }) };
      });
    });
  }

  /**
   * @param {import('./mpchat').ChatOptions} opts
   * @returns {import('./mpchat').ChatHandle}
   */
  function chat(opts) {
    hookLifecycle();
    // Only the caller's abort() sets this: a runtime's "abort" in an errMsg is a cut, not a stop.
    var aborted = false;
    var finished = false;
    // Aborted before `start` named the message: the request stays open, unseen, until it does,
    // so that the cancel endpoint can stop the answer (a closed connection no longer stops it).
    var cancelWhenStarted = false;
    /** @type {any} */
    var conn = null; // the connection being read: {task, kind, dead, started, lines, ...}
    /** @type {any} */
    var timer = null; // a retry or reconnect wait
    /** @type {any} */
    var idleTimer = null;
    var lastActivity = 0;
    var retries = 0;
    var renewed = false;
    var text = '';
    var reasoning = '';
    var conversationId = opts && opts.conversationId;
    /** @type {string | null} */
    var messageId = null;
    var lastSeq = -1; // the highest `seq` seen; -1: none yet
    var resumable = false; // `start` carried a seq: this server resumes
    var retracted = false;
    var failures = 0; // reconnections since the last new event
    var resumeRenewed = false;
    var waitingForShow = false;
    var listener = { onShow: onAppShown };
    // The request's name (Idempotency-Key): a copy sent again after a cut before `start` follows
    // the answer the first one started, if it arrived, instead of asking twice (docs/clients.md).
    /** @type {string | null} */
    var requestKey = null;

    /** @param {string} name @param {any} [arg] */
    function emit(name, arg) {
      if (aborted || finished) return;
      var cb = /** @type {any} */ (opts)[name];
      if (typeof cb !== 'function') return;
      try {
        cb(arg);
      } catch (e) {
        // An app's callback must not break the stream for the next events.
        if (typeof console !== 'undefined') console.error('mpchat: callback ' + name + ' threw', e);
      }
    }

    function cleanup() {
      if (timer !== null) unschedule(timer);
      timer = null;
      clearIdle();
      var i = activeChats.indexOf(listener);
      if (i !== -1) activeChats.splice(i, 1);
    }

    /** The last callback of a chat: onDone or onError. @param {string} name @param {any} arg */
    function end(name, arg) {
      if (aborted || finished) return;
      emit(name, arg);
      finished = true;
      if (name === 'onError' && arg && arg.code === 'quota_exceeded') quotaExceeded();
      // The server ends the response after its last event: stop listening, let it close by itself.
      if (conn) conn.dead = true;
      conn = null;
      cleanup();
    }

    /** @param {any} err */
    function fail(err) {
      end('onError', err);
    }

    /** Stop reading a connection; its callbacks are ignored from now on. @param {any} c */
    function closeConn(c) {
      if (!c || c.dead) return;
      c.dead = true;
      if (conn === c) conn = null;
      clearIdle();
      if (c.task && typeof c.task.abort === 'function') c.task.abort();
    }

    function sendCancel() {
      if (!messageId) return;
      call('POST', '/api/v1/messages/' + encodeURIComponent(messageId) + '/cancel').then(null, function () {
        // Nothing to tell: the caller has stopped listening. The answer ends by itself anyway.
      });
    }

    var handle = {
      /** @param {{cancel?: boolean}} [how] */
      abort: function (how) {
        if (aborted || finished) return;
        aborted = true;
        cleanup();
        var cancel = !(how && how.cancel === false);
        if (messageId) {
          if (conn) closeConn(conn);
          if (cancel) sendCancel();
        } else if (cancel && conn && conn.kind === 'chat' && conn.streaming) {
          cancelWhenStarted = true;
        } else if (conn) {
          closeConn(conn);
        }
      },
      get text() { return text; },
      get reasoning() { return reasoning; },
      get messageId() { return messageId; }
    };

    var audio = opts && /** @type {any} */ (opts).audio;
    if (!audio) requestKey = newRequestKey();
    if (!audio && (!opts || typeof opts.content !== 'string' || !opts.content.trim())) {
      Promise.resolve().then(function () {
        fail({ code: 'invalid_request', message: '请输入内容' });
      });
      return handle;
    }
    if (!audio && isRejected(opts.content)) {
      Promise.resolve().then(function () {
        fail({ code: 'content_rejected', message: REJECTED_MESSAGE, local: true });
      });
      return handle;
    }
    activeChats.push(listener);

    /** @param {any} ev */
    function dispatch(ev) {
      if (!ev || finished || aborted) return;
      if (typeof ev.seq === 'number') {
        // Resumed streams may repeat what was already shown: each event counts once.
        if (ev.seq <= lastSeq) return;
        lastSeq = ev.seq;
        failures = 0;
        resumeRenewed = false;
      }
      switch (ev.type) {
        case 'start':
          conversationId = ev.conversation_id;
          messageId = ev.message_id || null;
          resumable = typeof ev.seq === 'number' && !!messageId;
          emit('onStart', ev);
          break;
        case 'queued':
          emit('onQueued', ev);
          break;
        case 'transcript':
          emit('onTranscript', { text: ev.text || '' });
          break;
        case 'delta':
          text += ev.text || '';
          emit('onDelta', { text: ev.text || '', full: text });
          break;
        case 'reasoning':
          reasoning += ev.text || '';
          emit('onReasoning', { text: ev.text || '', full: reasoning });
          break;
        case 'snapshot':
          // The exact events are gone: this is the whole answer so far, replacing what was shown.
          text = typeof ev.text === 'string' ? ev.text : '';
          if (typeof (/** @type {any} */ (opts)).onSnapshot === 'function') emit('onSnapshot', { text: text });
          else emit('onDelta', { text: text, full: text, reset: true });
          break;
        case 'retract':
          text = '';
          retracted = true;
          emit('onRetract', ev);
          break;
        case 'done':
          end('onDone', {
            finish_reason: ev.finish_reason, usage: ev.usage, quota: ev.quota, timings: ev.timings,
            text: text, reasoning: reasoning
          });
          // Servers older than quotas send no `quota`: nothing to tell then.
          tellQuota(ev.quota, 'chat');
          break;
        case 'error':
          fail({ code: ev.code, message: ev.message, retry_after: ev.retry_after, status: ev.status });
          break;
        default:
          // `ping` and event types newer than this SDK: ignore them.
          break;
      }
    }

    // ---- idle watch: a stream that says nothing (not even a ping) for idleTimeout is dead ----

    function clearIdle() {
      if (idleTimer !== null) unschedule(idleTimer);
      idleTimer = null;
    }

    function armIdle() {
      if (!(idleTimeoutMs > 0) || idleTimer !== null || !resumable) return;
      idleTimer = schedule(checkIdle, idleTimeoutMs);
    }

    function checkIdle() {
      idleTimer = null;
      if (aborted || finished || !conn || !conn.started) return;
      var quiet = now() - lastActivity;
      if (quiet >= idleTimeoutMs) {
        closeConn(conn);
        connectionLost('idle');
      } else {
        idleTimer = schedule(checkIdle, idleTimeoutMs - quiet);
      }
    }

    // ---- resume ----

    /**
     * The connection ended (or was given up) without `done`, `retract` or `error`.
     * @param {string} reason @param {number} [retryAfter]
     */
    function connectionLost(reason, retryAfter) {
      clearIdle();
      if (aborted || finished) return;
      if (retracted) {
        // A follower's stream may end at `retract`: the answer is over.
        dispatch({ type: 'done', finish_reason: 'content_filter' });
        return;
      }
      if (!resumable || resumeAttempts <= 0) {
        fail({ code: 'interrupted', message: INTERRUPTED_MESSAGE });
        return;
      }
      if (appHidden) {
        // WeChat cuts a hidden app's requests: reconnect when it is shown again.
        waitingForShow = true;
        return;
      }
      scheduleResume(reason, retryAfter);
    }

    /**
     * Counts one more attempt in a row and returns its wait (seconds): the first is immediate (the
     * ~60 s cut is routine), then the waits double from resumeDelay up to resumeMaxDelay.
     */
    function nextWait() {
      failures += 1;
      return failures === 1 ? 0 : Math.min(resumeDelay * Math.pow(2, failures - 2), resumeMaxDelay);
    }

    /** @param {string} reason @param {number} [retryAfter] */
    function scheduleResume(reason, retryAfter) {
      if (failures >= resumeAttempts) {
        fail({ code: 'interrupted', message: INTERRUPTED_MESSAGE });
        return;
      }
      var wait = nextWait();
      if (retryAfter && retryAfter > wait) wait = Math.min(retryAfter, resumeMaxDelay);
      emit('onReconnect', { attempt: failures, delay: wait, reason: reason });
      timer = schedule(function () {
        timer = null;
        resume();
      }, wait * 1000);
    }

    function resume() {
      if (aborted || finished) return;
      ensureToken().then(function (token) {
        if (!aborted && !finished) open('resume', token);
      }, function (err) {
        fail({ code: err.code || 'login_failed', message: err.message, status: err.status });
      });
    }

    /** @param {number} hiddenForMs */
    function onAppShown(hiddenForMs) {
      if (aborted || finished) return;
      if (waitingForShow) {
        waitingForShow = false;
        if (messageId) scheduleResume('background');
        else sendAgain('background');
      } else if (conn && hiddenForMs >= backgroundTimeoutMs) {
        // Hidden that long, the request is dead even when no callback said so (iOS).
        if (conn.started && resumable) {
          closeConn(conn);
          connectionLost('background');
        } else if (!conn.started && conn.kind === 'chat' && requestKey && !cancelWhenStarted) {
          closeConn(conn);
          sendAgain('background');
        }
      }
    }

    /**
     * The chat request was cut before `start`: whether the question arrived is unknown, so it is
     * sent again under the same key (the server follows the first copy's answer if there is one),
     * with the resume's waits; without a key (voice), the caller is told.
     * @param {string} reason @param {string} [message]
     */
    function sendAgain(reason, message) {
      if (aborted || finished) return;
      if (!requestKey) {
        fail({ code: 'network_error', message: message || '网络错误' });
        return;
      }
      if (appHidden) {
        waitingForShow = true; // WeChat cuts a hidden app's requests: send when it is shown
        return;
      }
      if (failures >= resumeAttempts) {
        fail({ code: 'network_error', message: message || '网络错误' });
        return;
      }
      var wait = nextWait();
      emit('onReconnect', { attempt: failures, delay: wait, reason: reason });
      timer = schedule(function () {
        timer = null;
        run();
      }, wait * 1000);
    }

    /**
     * Ends an attempt that failed before `start`: renew, retry after the advised delay, or give up.
     * @param {any} err
     */
    function endBeforeStart(err) {
      if (aborted || finished) return;
      if (err.code === 'unauthorized' || err.status === 401) {
        if (!renewed) {
          renewed = true;
          writeSession(null);
          run();
          return;
        }
      } else if (RETRYABLE[/** @type {'busy'} */ (err.code)] && retries < maxRetries) {
        var advised = Math.max(Number(err.retry_after) || 0, 0);
        // A rate limit says when it lifts: retrying sooner is certain to be refused again.
        if (!(err.code === 'rate_limited' && advised > maxRetryDelay)) {
          retries += 1;
          var wait = Math.min(advised || 1, maxRetryDelay);
          emit('onRetry', { code: err.code, attempt: retries, delay: wait });
          timer = schedule(function () {
            timer = null;
            run();
          }, wait * 1000);
          return;
        }
      }
      fail({ code: err.code, message: err.message, retry_after: err.retry_after, status: err.status });
    }

    /** A resumed connection answered with an HTTP error. @param {any} err */
    function resumeRefused(err) {
      if (err.status === 401 && !resumeRenewed) {
        resumeRenewed = true;
        writeSession(null);
        resume();
        return;
      }
      if (err.status === 401 || err.status === 403 || err.status === 404 || err.status === 400) {
        // The answer cannot be followed (deleted, another user's, blocked): it stays incomplete.
        fail({ code: 'interrupted', message: INTERRUPTED_MESSAGE, status: err.status, cause: err.code });
        return;
      }
      connectionLost('status', Number(err.retry_after) || 0);
    }

    // ---- one connection: the chat request itself, or a resumed follower of its events ----

    /** @param {'chat' | 'resume'} kind @param {string} token @param {boolean} [streaming] */
    function open(kind, token, streaming) {
      var c = {
        task: /** @type {any} */ (null), kind: kind, streaming: kind === 'resume' || !!streaming,
        dead: false, started: kind === 'resume', lines: new LineBuffer(), chunksSeen: false,
        early: /** @type {any} */ (null), sawSeq: false, reconnected: false
      };
      conn = c;
      lastActivity = now();

      /** @param {any} ev */
      function onEvent(ev) {
        if (!ev) return;
        if (cancelWhenStarted) {
          // Aborted before `start`: read on only to learn the message id, then cancel.
          if (ev.type === 'start' && ev.message_id) {
            messageId = ev.message_id;
            cancelWhenStarted = false;
            closeConn(c);
            sendCancel();
          }
          return;
        }
        if (typeof ev.seq === 'number') c.sawSeq = true;
        else if (ev.type === 'error' && (kind === 'chat' ? !c.started : !c.sawSeq)) {
          // An HTTP error body (before `start`, or refusing a resume): judged with the status.
          c.early = c.early || ev;
          return;
        }
        if (ev.type === 'start') {
          c.started = true;
          if (kind === 'resume') return; // replayed without `after`: nothing new in it
        }
        if (kind === 'resume' && !c.reconnected) {
          c.reconnected = true;
          emit('onReconnected', { attempt: failures });
        }
        dispatch(ev);
        if (c.started && !c.dead) armIdle();
      }

      /** @param {ArrayBuffer | Uint8Array} chunk */
      function feed(chunk) {
        lastActivity = now();
        var got = c.lines.push(chunk);
        for (var i = 0; i < got.length && !c.dead; i++) onEvent(parseLine(got[i]));
      }

      /** @param {any} res */
      function complete(res) {
        if (c.dead) return;
        var status = res.statusCode;
        if (!c.streaming) {
          completePlain(res);
          return;
        }
        if (!c.chunksSeen && res.data) {
          // No chunk callback fired: this runtime buffered the whole body.
          feed(typeof res.data === 'string' ? encodeUtf8(res.data) : res.data);
        }
        if (c.dead) return;
        var rest = c.lines.flush();
        var cut = false;
        if (rest !== null && rest.replace(/\s+/g, '')) {
          // A last line without `\n` counts when it is whole; otherwise the body was cut mid-line
          // (reported as success on some devices).
          var ev = null;
          try {
            ev = JSON.parse(rest);
          } catch (e) {
            cut = true;
          }
          if (ev) onEvent(parseLine(rest));
        }
        if (c.dead) return;
        c.dead = true;
        conn = null;
        clearIdle();
        if (aborted || finished) return;
        var err = c.early;
        if (status !== 200 || (err && !c.sawSeq)) {
          err = err || errorFromStatus(status, res.header);
          if (!err.status) err.status = status;
          if (!err.retry_after) err.retry_after = errorFromStatus(status, res.header).retry_after;
          if (kind === 'resume') resumeRefused(err);
          else if (!c.started) endBeforeStart(err);
          else connectionLost('cut');
          return;
        }
        if (!c.started) {
          // 200 and no `start`: cut before the answer began (empty or half a line), or not ours.
          if ((cut || rest === null) && kind === 'chat' && requestKey) sendAgain('cut');
          else if (cut || rest === null) fail({ code: 'interrupted', message: INTERRUPTED_MESSAGE, status: status });
          else fail({ code: 'bad_response', message: '服务返回了无法识别的内容', status: status });
          return;
        }
        // The connection ended without `done`: WeChat cuts requests at ~60 s or in the background.
        connectionLost('cut');
      }

      /** The `stream: false` fallback: one JSON body (or, from some servers, NDJSON lines). @param {any} res */
      function completePlain(res) {
        c.dead = true;
        conn = null;
        if (aborted || finished) return;
        var status = res.statusCode;
        var body = bodyJson(res.data);
        if (status === 200 && body && typeof body.content === 'string') {
          dispatch({
            type: 'start', conversation_id: body.conversation_id, message_id: body.message_id,
            model: body.model, ai_generated: body.ai_generated !== false, label: body.label
          });
          if (body.content) dispatch({ type: 'delta', text: body.content });
          if (body.finish_reason === 'content_filter') dispatch({ type: 'retract', reason: 'content_safety' });
          dispatch({ type: 'done', finish_reason: body.finish_reason, usage: body.usage, quota: body.quota });
          return;
        }
        if (body && body.error && typeof body.error === 'object') {
          var e = body.error;
          endBeforeStart({ code: e.code || errorFromStatus(status, res.header).code, message: e.message,
            retry_after: e.retry_after || errorFromStatus(status, res.header).retry_after, status: status });
          return;
        }
        // Not the JSON answer: read it as NDJSON lines (wx may have parsed a one-line body already).
        var lines = bodyText(res.data).split('\n');
        var started = false;
        /** @type {any} */
        var early = null;
        for (var i = 0; i < lines.length && !finished; i++) {
          var ev = parseLine(lines[i]);
          if (!ev) continue;
          if (ev.type === 'error' && !started) {
            early = early || ev;
            continue;
          }
          if (ev.type === 'start') started = true;
          dispatch(ev);
        }
        if (finished || aborted) return;
        if (!started) {
          var err = early || errorFromStatus(status, res.header);
          if (status === 200 && !early) err = { code: 'bad_response', message: '服务返回了无法识别的内容' };
          err.status = status;
          if (!err.retry_after) err.retry_after = errorFromStatus(status, res.header).retry_after;
          endBeforeStart(err);
          return;
        }
        if (retracted) dispatch({ type: 'done', finish_reason: 'content_filter' });
        else fail({ code: 'interrupted', message: INTERRUPTED_MESSAGE });
      }

      /** @type {WechatMiniprogram.RequestOption} */
      var req;
      if (kind === 'chat' && audio) {
        // Voice: the recording as the body; the answer's stream (or errors) as for a chat.
        req = {
          url: baseUrl + '/api/v1/voice' + query({ conversation_id: conversationId, profile: opts.profile }),
          method: 'POST',
          data: audio,
          header: { 'content-type': /** @type {any} */ (opts).audioType || 'audio/mpeg', Authorization: 'Bearer ' + token },
          responseType: c.streaming ? 'arraybuffer' : 'text',
          dataType: 'ndjson',
          success: complete
        };
      } else if (kind === 'chat') {
        /** @type {Record<string, any>} */
        var data = { content: opts.content, stream: c.streaming };
        if (conversationId) data.conversation_id = conversationId;
        if (opts.profile) data.profile = opts.profile;
        /** @type {Record<string, string>} */
        var header = { 'content-type': 'application/json', Authorization: 'Bearer ' + token };
        if (requestKey) header['Idempotency-Key'] = requestKey;
        req = {
          url: baseUrl + '/api/v1/chat',
          method: 'POST',
          data: data,
          header: header,
          responseType: c.streaming ? 'arraybuffer' : 'text',
          dataType: c.streaming ? 'ndjson' : 'json',
          success: complete
        };
      } else {
        req = {
          url: baseUrl + '/api/v1/messages/' + encodeURIComponent(/** @type {string} */ (messageId)) + '/events?after=' + lastSeq,
          method: 'GET',
          header: { Authorization: 'Bearer ' + token },
          responseType: 'arraybuffer',
          dataType: 'ndjson',
          success: complete
        };
      }
      /** @param {any} err */
      req.fail = function (err) {
        if (c.dead) return;
        c.dead = true;
        conn = null;
        clearIdle();
        if (aborted || finished) return;
        // Whatever the errMsg says ("abort" included: Android's ERR_CONNECTION_ABORTED), this is a
        // failure of the connection, never the caller's abort (that one is `aborted`).
        var msg = (err && err.errMsg) || '网络错误';
        if (c.started) connectionLost('network');
        else if (kind === 'chat' && !cancelWhenStarted) sendAgain('network', msg);
        else fail({ code: 'network_error', message: msg });
      };
      if (c.streaming) req.enableChunked = true;
      c.task = doRequest(req);
      if (c.streaming && c.task && typeof c.task.onChunkReceived === 'function') {
        c.task.onChunkReceived(function (/** @type {any} */ res) {
          if (c.dead) return;
          c.chunksSeen = true;
          if (res && res.data) feed(res.data);
        });
      }
      if (c.dead && c.task && typeof c.task.abort === 'function') c.task.abort();
      else if (kind === 'resume') armIdle();
    }

    function run() {
      if (aborted || finished) return;
      var streaming = opts.stream !== false && chunkedSupported();
      ensureToken().then(function (token) {
        if (!aborted && !finished) open('chat', token, streaming);
      }, function (err) {
        fail({ code: err.code || 'login_failed', message: err.message, status: err.status });
      });
    }

    run();
    return handle;
  }

  // ---- voice: a recording in, the answer read aloud (docs/voice.md) ----

  /**
   * Record with wx.getRecorderManager until `stop()` (or take `opts.audio`), upload the recording
   * (binary body) to `POST /api/v1/voice`, and stream the answer as `chat()` does, after
   * `onTranscript`.
   * @param {import('./mpchat').VoiceOptions} opts
   * @returns {import('./mpchat').VoiceHandle}
   */
  function voice(opts) {
    var format = (opts && opts.format) || 'mp3';
    /** @type {any} */
    var inner = null;
    var stopped = false;
    /** @type {any} */
    var recorder = null;
    /** @param {any} err */
    function failed(err) {
      if (opts && typeof opts.onError === 'function') opts.onError(err);
    }
    /** @param {ArrayBuffer} data */
    function upload(data) {
      if (stopped) return;
      var chatOpts = /** @type {any} */ (copyWithout(opts, { audio: true, format: true }));
      chatOpts.audio = data;
      chatOpts.audioType = AUDIO_TYPES[format] || 'audio/mpeg';
      inner = chat(chatOpts);
    }
    var handle = {
      stop: function () {
        if (recorder) recorder.stop();
      },
      /** @param {{cancel?: boolean}} [how] */
      abort: function (how) {
        stopped = true;
        if (inner) inner.abort(how);
        else if (recorder) recorder.stop();
      },
      get text() { return inner ? inner.text : ''; },
      get messageId() { return inner ? inner.messageId : null; }
    };
    if (opts && opts.audio) {
      upload(opts.audio);
      return handle;
    }
    if (typeof getRecorderManager !== 'function' || typeof getFileSystemManager !== 'function') {
      Promise.resolve().then(function () { failed({ code: 'record_failed', message: '录音不可用' }); });
      return handle;
    }
    recorder = getRecorderManager();
    var files = getFileSystemManager;
    recorder.onStop(function (/** @type {any} */ res) {
      if (stopped) return;
      files().readFile({
        filePath: res.tempFilePath,
        success: function (/** @type {any} */ r) { upload(r.data); },
        fail: function (/** @type {any} */ err) { failed({ code: 'record_failed', message: (err && err.errMsg) || '读取录音失败' }); }
      });
    });
    recorder.onError(function (/** @type {any} */ err) {
      failed({ code: 'record_failed', message: (err && err.errMsg) || '录音失败' });
    });
    recorder.start({ format: format, sampleRate: 16000, numberOfChannels: 1, duration: 60000 });
    return handle;
  }

  /**
   * An authenticated binary GET: logs in when needed, renews once on 401.
   * @param {string} path @returns {Promise<any>}
   */
  function getBinary(path) {
    /** @param {boolean} renewed @returns {Promise<any>} */
    function attempt(renewed) {
      return ensureToken().then(function (token) {
        return new Promise(function (resolve, reject) {
          doRequest({
            url: baseUrl + path, method: 'GET', header: { Authorization: 'Bearer ' + token },
            responseType: 'arraybuffer', success: resolve,
            fail: function (/** @type {any} */ err) { reject(MpchatError('network_error', (err && err.errMsg) || '网络错误')); }
          });
        });
      }).then(function (/** @type {any} */ res) {
        if (res.statusCode === 401 && !renewed) {
          writeSession(null);
          return attempt(true);
        }
        return res;
      });
    }
    return attempt(false);
  }

  /**
   * Read an answer aloud sentence by sentence (`GET .../speech?sentence=N`), also while it still
   * streams: the next sentence is fetched while one plays; `not_ready` is asked again after its
   * `Retry-After`; 204 ends playback.
   * @param {string} messageId @param {import('./mpchat').SpeakOptions} [opts]
   * @returns {{stop(): void}}
   */
  function speak(messageId, opts) {
    opts = opts || {};
    var stopped = false;
    /** @type {Record<number, Promise<string | null>>} */
    var fetched = {};
    var player = typeof createInnerAudioContext === 'function' ? createInnerAudioContext() : null;
    var n = 0;
    /** @param {string} name @param {any} [arg] */
    function tell(name, arg) {
      var cb = /** @type {any} */ (opts)[name];
      if (typeof cb === 'function') cb(arg);
    }
    function finish() {
      if (stopped) return;
      stopped = true;
      if (player) player.destroy();
    }
    /** @param {number} i @returns {Promise<string | null>} */
    function fetch(i) {
      var path = '/api/v1/messages/' + encodeURIComponent(messageId) + '/speech?sentence=' + i;
      return getBinary(path).then(function (res) {
        if (res.statusCode === 204) return null;
        if (res.statusCode === 409) {
          var wait = Number(headerValue(res.header, 'retry-after')) || 1;
          return new Promise(function (resolve) { schedule(function () { resolve(null); }, wait * 1000); }).then(function () {
            return stopped ? null : fetch(i);
          });
        }
        if (res.statusCode !== 200) throw responseError(res, bodyJson(res.data));
        var type = headerValue(res.header, 'content-type') || 'audio/mpeg';
        var file = userDataPath + '/mpchat-speech-' + i + (/wav/.test(type) ? '.wav' : '.mp3');
        return new Promise(function (resolve, reject) {
          if (typeof getFileSystemManager !== 'function') { reject(MpchatError('play_failed', '文件系统不可用')); return; }
          getFileSystemManager().writeFile({
            filePath: file, data: res.data,
            success: function () { resolve(file); },
            fail: function (/** @type {any} */ err) { reject(MpchatError('play_failed', (err && err.errMsg) || '写入失败')); }
          });
        });
      });
    }
    /** @param {number} i */
    function ahead(i) {
      if (!fetched[i]) fetched[i] = fetch(i);
      return fetched[i];
    }
    function next() {
      if (stopped) return;
      var i = n;
      ahead(i).then(function (file) {
        if (stopped) return;
        if (file === null) {
          tell('onDone');
          finish();
          return;
        }
        ahead(i + 1); // while this one plays
        tell('onSentence', { index: i });
        /** @type {any} */ (player).src = file;
        /** @type {any} */ (player).play();
      }, function (err) {
        if (stopped) return;
        tell('onError', { code: err.code, message: err.message, status: err.status });
        finish();
      });
    }
    if (!player) {
      Promise.resolve().then(function () { tell('onError', { code: 'play_failed', message: '播放不可用' }); });
      return { stop: function () {} };
    }
    player.onEnded(function () {
      n += 1;
      next();
    });
    player.onError(function (/** @type {any} */ err) {
      if (stopped) return;
      tell('onError', { code: 'play_failed', message: (err && err.errMsg) || '播放失败' });
      finish();
    });
    next();
    return {
      stop: function () {
        if (stopped) return;
        if (player) player.stop();
        finish();
      }
    };
  }

  return {
    login: function (code) { return doLogin(code).then(function () { return undefined; }); },
    logout: function () { writeSession(null); },
    hasSession: function () {
      var s = readSession();
      return fresh(s);
    },
    chat: chat,
    voice: voice,
    speak: speak,
    listConversations: function (q) { return call('GET', '/api/v1/conversations' + query(q)); },
    listMessages: function (conversationId, q) {
      return call('GET', '/api/v1/conversations/' + encodeURIComponent(conversationId) + '/messages' + query(q));
    },
    deleteConversation: function (conversationId) {
      return call('DELETE', '/api/v1/conversations/' + encodeURIComponent(conversationId)).then(function () { return undefined; });
    },
    deleteMyData: function () { return call('DELETE', '/api/v1/me/data').then(function () { return undefined; }); },
    me: me,
    plans: function () {
      return call('GET', '/api/v1/plans').then(function (body) { return (body && body.items) || []; });
    },
    buy: buy,
    order: function (orderId) {
      return getOrder(orderId).then(function (body) {
        if (body) tellQuota(body.quota, 'order');
        return body;
      });
    },
    meta: function () { return call('GET', '/api/v1/meta', undefined, true); }
  };
}

module.exports = {
  createClient: createClient,
  MpchatError: MpchatError,
  decodeUtf8: decodeUtf8,
  encodeUtf8: encodeUtf8,
  LineBuffer: LineBuffer,
  parseLine: parseLine
};
