'use strict';
// Start a real mpchat (`mpchat serve`, dev auth) and a fake provider (`mpchat fake-upstream`) on
// free ports with a temporary data dir, for the e2e and real-HTTP tests; on request a config file
// (MPCHAT_CONFIG: quotas, plans) and the fake WeChat Pay (`mpchat fake-wechatpay`) as well.

const fs = require('node:fs');
const os = require('node:os');
const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');

const ROOT = path.resolve(__dirname, '..', '..');
const MPCHAT = path.join(ROOT, '.venv', 'bin', 'mpchat');

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// This checkout's server code and web page first: the venv may be another checkout's (a git
// worktree sharing it through a symlink), whose editable install points at that checkout's src.
const PYTHONPATH = [path.join(ROOT, 'src'), process.env.PYTHONPATH].filter(Boolean).join(path.delimiter);

/** Start a child process; keep its output for the failure message. */
function start(args, env) {
  const child = spawn(MPCHAT, args, { env: { ...process.env, PYTHONPATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.log = '';
  child.stdout.on('data', (d) => (child.log += d));
  child.stderr.on('data', (d) => (child.log += d));
  return child;
}

async function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/**
 * Poll until `url` answers 200, the child dies, or the time runs out. With `banner`, the answer
 * counts only once the child's log has it (uvicorn's "Uvicorn running on <origin>"): the port
 * was free when picked, but another process (a test's server) may have taken it meanwhile, and
 * its 200 must not pass for this child's.
 */
async function waitReady(url, child, seconds, banner) {
  const until = Date.now() + seconds * 1000;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`${url}: the process exited (${child.exitCode}):\n${child.log}`);
    try {
      const res = await fetch(url);
      if (res.ok && (!banner || child.log.includes(banner))) return;
    } catch (e) {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${url} did not answer 200 within ${seconds}s:\n${child.log}`);
}

/** `NAME=value` lines (the fake WeChat Pay's wechatpay.env) as an object. */
function parseEnv(text) {
  const out = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]] = m[2];
  }
  return out;
}

/**
 * Start `mpchat fake-wechatpay` with its keys in `dir`, notifying `notifyUrl`. Resolves to
 * {child, base, env: the MPCHAT_WECHATPAY_* settings the service needs (from the wechatpay.env it
 * writes)}. Rejects, with the child stopped, when it does not come up.
 */
async function startWeChatPay(dir, notifyUrl) {
  const port = await freePort();
  const child = start(['fake-wechatpay', '--host', '127.0.0.1', '--port', String(port), '--dir', dir, '--notify-url', notifyUrl], {});
  const base = `http://127.0.0.1:${port}`;
  try {
    // It writes wechatpay.env before it serves its first request.
    await waitReady(base + '/_control/orders', child, 60);
  } catch (err) {
    await stop(child);
    throw err;
  }
  const env = parseEnv(fs.readFileSync(path.join(dir, 'wechatpay.env'), 'utf8'));
  return { child, base, env };
}

/**
 * Start the fake provider and mpchat. Returns {base, upstream: base URL of the fake's /v1 and
 * /_control, stop()}; with `wechatpay`, also `wechatpay` (the fake WeChat Pay's base URL) and
 * `pay(orderId, notify)`.
 * @param {{upstreamArgs?: string[], env?: Record<string, string>, config?: string, wechatpay?: boolean, sibling?: Record<string, string>}} [options]
 *   `config`: the text of an MPCHAT_CONFIG file (TOML: `[quota]`, `[[plans]]`); `wechatpay`:
 *   start `mpchat fake-wechatpay` and point the service at it (its notifications go to the
 *   service's /api/v1/pay/wechat/notify); `sibling`: a second `mpchat serve` on the same data
 *   dir (database and keys) with these variables on top, started once the first is ready; its
 *   base URL is `stack.sibling` (two Cloud Run services of one deployment).
 */
async function startStack(options = {}) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpchat-clients-'));
  const fakePort = await freePort();
  const port = await freePort();
  const upstream = start(['fake-upstream', '--host', '127.0.0.1', '--port', String(fakePort), ...(options.upstreamArgs || [])], {});
  const extra = {};
  if (options.config !== undefined) {
    const file = path.join(dataDir, 'mpchat.toml');
    fs.writeFileSync(file, options.config);
    extra.MPCHAT_CONFIG = file;
  }
  let pay = null;
  if (options.wechatpay) {
    try {
      pay = await startWeChatPay(path.join(dataDir, 'wechatpay'), `http://127.0.0.1:${port}/api/v1/pay/wechat/notify`);
    } catch (err) {
      await stop(upstream);
      fs.rmSync(dataDir, { recursive: true, force: true });
      throw err;
    }
    Object.assign(extra, pay.env);
  }
  const env = {
    MPCHAT_HOST: '127.0.0.1',
    MPCHAT_PORT: String(port),
    MPCHAT_DATA_DIR: dataDir,
    MPCHAT_UPSTREAM_BASE_URL: `http://127.0.0.1:${fakePort}/v1`,
    MPCHAT_UPSTREAM_API_KEY: 'test',
    MPCHAT_UPSTREAM_MODEL: 'fake-model',
    MPCHAT_ENV: 'development',
    MPCHAT_AUTH_MODE: 'dev',
    ...extra,
    ...(options.env || {}),
  };
  const server = start(['serve'], env);
  let sibling = null;
  const stack = {
    base: `http://127.0.0.1:${port}`,
    env,
    upstream: `http://127.0.0.1:${fakePort}`,
    wechatpay: pay ? pay.base : null,
    sibling: null,
    server,
    fake: upstream,
    async stop() {
      await stop(sibling);
      await stop(server);
      await stop(upstream);
      if (pay) await stop(pay.child);
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
    /**
     * The user pays order `orderId` at the fake WeChat Pay (its `/_control/pay`), which then
     * notifies the service as `notify` says (`normal`, `twice`, `none`, `late`, ...). Resolves to
     * the fake's answer ({paid, statuses: the service's HTTP statuses}).
     */
    async pay(orderId, notify = 'normal') {
      if (!pay) throw new Error('startStack: no fake WeChat Pay (wechatpay: true)');
      const res = await fetch(pay.base + '/_control/pay', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ out_trade_no: orderId, notify }),
      });
      if (!res.ok) throw new Error('fake-wechatpay pay: HTTP ' + res.status + ' ' + (await res.text()));
      return res.json();
    },
    /** Run `mpchat <args>` against the same database; resolves to its stdout (rejects on exit != 0). */
    cli(args) {
      return new Promise((resolve, reject) => {
        const child = start(args, env);
        let out = '';
        child.stdout.on('data', (d) => (out += d));
        child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`mpchat ${args.join(' ')}: exit ${code}\n${child.log}`))));
      });
    },
    /** Script the fake provider's next answers (its `/_control/script`). */
    async script(steps) {
      const res = await fetch(`http://127.0.0.1:${fakePort}/_control/script`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(steps),
      });
      if (!res.ok) throw new Error('fake-upstream script: HTTP ' + res.status);
    },
  };
  try {
    await waitReady(`http://127.0.0.1:${fakePort}/v1/models`, upstream, 30);
    await waitReady(`${stack.base}/healthz`, server, 60, 'Uvicorn running on ' + stack.base);
    if (options.sibling) {
      // A port taken between its pick and the bind: the sibling exits, and gets another one.
      for (let attempt = 1; ; attempt++) {
        const siblingPort = await freePort();
        sibling = start(['serve'], { ...env, ...options.sibling, MPCHAT_PORT: String(siblingPort) });
        stack.sibling = `http://127.0.0.1:${siblingPort}`;
        try {
          await waitReady(`${stack.sibling}/healthz`, sibling, 60, 'Uvicorn running on ' + stack.sibling);
          break;
        } catch (err) {
          if (attempt >= 3 || !/address already in use/i.test(sibling.log)) throw err;
        }
      }
    }
  } catch (err) {
    await stack.stop();
    throw err;
  }
  return stack;
}

/**
 * Whether this mpchat numbers its events (API v1.1 resume): '' when it does, else why not.
 * Costs one short chat of a `probe` user.
 */
async function resumeMissing(base) {
  const login = await (await fetch(base + '/api/v1/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"code":"probe"}' })).json();
  const res = await fetch(base + '/api/v1/chat', {
    method: 'POST',
    headers: { 'content-type': 'application/json', Authorization: 'Bearer ' + login.token },
    body: JSON.stringify({ content: 'probe' }),
  });
  const first = JSON.parse((await res.text()).split('\n')[0]);
  return typeof first.seq === 'number' ? '' : 'this mpchat has no resume yet (its `start` carries no seq)';
}

function missingServer() {
  return fs.existsSync(MPCHAT) ? '' : 'no .venv/bin/mpchat (run make in the project root first)';
}

module.exports = { ROOT, MPCHAT, freePort, start, stop, waitReady, startStack, startWeChatPay, missingServer, resumeMissing };
