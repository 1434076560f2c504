// mpchat browser demo: dev login, streamed chat with the AI label, retraction, history, resume of
// a cut stream, stop (cancel), a reasoning model's thinking folded apart, the balance and 购买.
// Plain script, no build step. Talks to the same API as the mini program SDK (API.md v1).
//
// Paying: a browser has no wx.requestPayment. Opened as /?fakepay=<the fake WeChat Pay's address>
// (`mpchat fake-wechatpay`, e.g. /?fakepay=http://127.0.0.1:9300) against a service configured
// with that fake, 购买 makes the order, asks to confirm, "pays" at the fake's /_control/pay (which
// notifies the service as WeChat Pay would) and polls the order until paid, as the SDK's buy() does.
'use strict';

(function () {
  const API = '/api/v1';
  const KEY_TOKEN = 'mpchat.token';
  const KEY_EXPIRES = 'mpchat.expiresAt';
  const KEY_CODE = 'mpchat.code';
  const KEY_CONVERSATION = 'mpchat.conversation';
  const DEFAULT_LABEL = '本内容由 AI 生成';

  const $ = (id) => document.getElementById(id);
  const els = {
    loginView: $('login-view'),
    appView: $('app-view'),
    loginForm: $('login-form'),
    loginCode: $('login-code'),
    whoami: $('whoami'),
    logout: $('logout-button'),
    newConversation: $('new-conversation'),
    list: $('conversation-list'),
    listEmpty: $('conversation-empty'),
    messages: $('messages'),
    notice: $('notice'),
    form: $('chat-form'),
    input: $('chat-input'),
    send: $('send-button'),
    stop: $('stop-button'),
    meta: $('meta'),
    template: $('message-template'),
    quota: $('quota'),
    buy: $('buy-button'),
    exceeded: $('exceeded'),
    exceededBuy: $('exceeded-buy'),
    plans: $('plans'),
    planList: $('plan-list'),
    plansHint: $('plans-hint'),
    plansClose: $('plans-close'),
  };

  const state = {
    conversationId: localStorage.getItem(KEY_CONVERSATION) || '',
    run: null, // the answer being received: its AbortController, message id, last seq, text
    label: DEFAULT_LABEL,
    buying: false,
  };
  // The fake WeChat Pay to "pay" at (?fakepay=http://host:port), or '' (a browser cannot pay).
  const FAKEPAY = fakePayBase();

  function fakePayBase() {
    const value = new URLSearchParams(location.search).get('fakepay') || '';
    try {
      const url = new URL(value);
      return url.protocol === 'http:' || url.protocol === 'https:' ? url.origin : '';
    } catch (e) {
      return '';
    }
  }

  class ApiError extends Error {
    constructor(code, message, status, retryAfter) {
      super(message || code);
      this.code = code;
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  // ---- session ----------------------------------------------------------------------------

  function token() {
    const t = localStorage.getItem(KEY_TOKEN);
    const exp = Number(localStorage.getItem(KEY_EXPIRES) || 0);
    return t && exp > Date.now() ? t : '';
  }

  async function login(code) {
    const res = await fetch(API + '/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ code }),
    });
    const body = await readJson(res);
    if (!res.ok || !body || !body.token) throw errorOf(res, body);
    localStorage.setItem(KEY_TOKEN, body.token);
    localStorage.setItem(KEY_EXPIRES, String(Date.now() + (Number(body.expires_in) || 3600) * 1000));
    localStorage.setItem(KEY_CODE, code);
  }

  function forget() {
    for (const k of [KEY_TOKEN, KEY_EXPIRES, KEY_CONVERSATION]) localStorage.removeItem(k);
  }

  // A 401 means the token expired or the server's key changed: log in again with the same dev
  // code once, then retry; a second 401 goes back to the login form.
  async function authed(path, init, renewed) {
    const headers = Object.assign({}, (init && init.headers) || {}, { Authorization: 'Bearer ' + token() });
    const res = await fetch(API + path, Object.assign({}, init, { headers }));
    if (res.status === 401 && !renewed) {
      const code = localStorage.getItem(KEY_CODE);
      if (code) {
        await login(code);
        return authed(path, init, true);
      }
    }
    if (res.status === 401) {
      forget();
      showLogin();
    }
    return res;
  }

  async function readJson(res) {
    const text = await res.text();
    if (!text) return null;
    try {
      return JSON.parse(text.split('\n')[0]);
    } catch (e) {
      return null;
    }
  }

  function errorOf(res, body) {
    const e = body && (body.error || (body.type === 'error' ? body : null));
    const retry = Number((e && e.retry_after) || res.headers.get('Retry-After')) || undefined;
    return new ApiError((e && e.code) || 'http_' + res.status, (e && e.message) || '请求失败（' + res.status + '）', res.status, retry);
  }

  async function getJson(path) {
    const res = await authed(path);
    const body = await readJson(res);
    if (!res.ok) throw errorOf(res, body);
    return body;
  }

  // ---- views ------------------------------------------------------------------------------

  function showLogin() {
    els.appView.hidden = true;
    els.loginView.hidden = false;
    els.whoami.hidden = true;
    els.logout.hidden = true;
    els.quota.hidden = true;
    els.buy.hidden = true;
    els.exceeded.hidden = true;
    els.plans.hidden = true;
    els.loginCode.value = localStorage.getItem(KEY_CODE) || els.loginCode.value || 'demo-user';
  }

  function showApp() {
    els.loginView.hidden = true;
    els.appView.hidden = false;
    els.whoami.hidden = false;
    els.logout.hidden = false;
    els.whoami.textContent = '用户：' + (localStorage.getItem(KEY_CODE) || '');
  }

  function notice(text) {
    els.notice.textContent = text || '';
    els.notice.hidden = !text;
  }

  function setBusy(busy) {
    els.send.hidden = busy;
    els.stop.hidden = !busy;
    els.input.disabled = busy;
  }

  function addMessage(role, content, label) {
    const node = els.template.content.firstElementChild.cloneNode(true);
    node.dataset.role = role;
    node.classList.add(role);
    node.querySelector('.bubble').textContent = content || '';
    const tag = node.querySelector('.ai-label');
    if (role === 'assistant') {
      tag.textContent = label || state.label;
      tag.hidden = false;
    }
    els.messages.appendChild(node);
    node.scrollIntoView({ block: 'end' });
    return node;
  }

  function selectConversation(id) {
    state.conversationId = id || '';
    if (id) localStorage.setItem(KEY_CONVERSATION, id);
    else localStorage.removeItem(KEY_CONVERSATION);
    for (const li of els.list.children) li.classList.toggle('active', li.dataset.id === id);
  }

  async function loadConversations() {
    const page = await getJson('/conversations?limit=50');
    els.list.textContent = '';
    for (const c of page.items) {
      const li = document.createElement('li');
      li.dataset.id = c.id;
      li.setAttribute('data-testid', 'conversation');
      li.classList.toggle('active', c.id === state.conversationId);

      const open = document.createElement('button');
      open.type = 'button';
      open.className = 'open';
      open.setAttribute('data-testid', 'open-conversation');
      open.textContent = c.title || '（无标题）';
      open.title = c.message_count + ' 条消息 · ' + c.updated_at;
      open.addEventListener('click', () => openConversation(c.id));

      const del = document.createElement('button');
      del.type = 'button';
      del.className = 'delete';
      del.setAttribute('data-testid', 'delete-conversation');
      del.setAttribute('aria-label', '删除对话');
      del.textContent = '删除';
      del.addEventListener('click', () => deleteConversation(c.id));

      li.append(open, del);
      els.list.appendChild(li);
    }
    els.listEmpty.hidden = page.items.length > 0;
  }

  async function openConversation(id) {
    stopChat(false);
    notice('');
    els.messages.textContent = '';
    selectConversation(id);
    try {
      const page = await getJson('/conversations/' + encodeURIComponent(id) + '/messages?limit=50');
      els.messages.textContent = '';
      let streaming = null;
      let divider = null;
      for (const m of page.items) {
        if (m.role === 'system' || m.status === 'retracted') continue;
        const node = addMessage(m.role, m.content);
        node.dataset.state = 'done';
        if (m.role === 'assistant') node.dataset.messageId = m.id;
        if (m.role === 'assistant' && m.status !== 'streaming' && window.mpchatVoice) window.mpchatVoice.addPlay(node);
        if (m.summarized) divider = node; // the model sees these only through a summary
        if (m.role === 'assistant' && m.status === 'streaming') streaming = [node, m.id];
      }
      if (divider) {
        const line = document.createElement('p');
        line.className = 'summary-divider muted';
        line.dataset.testid = 'summary-divider';
        line.textContent = '较早的消息已被总结';
        divider.after(line);
      }
      if (streaming && state.conversationId === id && !state.run) followStreaming(streaming[0], streaming[1]);
    } catch (err) {
      if (err.code === 'not_found') selectConversation('');
      notice(err.message);
    }
  }

  async function deleteConversation(id) {
    if (!window.confirm('删除后消息将从服务器上彻底清除，无法恢复。确定删除？')) return;
    const res = await authed('/conversations/' + encodeURIComponent(id), { method: 'DELETE' });
    if (!res.ok && res.status !== 404) {
      notice(errorOf(res, await readJson(res)).message);
      return;
    }
    if (state.conversationId === id) {
      selectConversation('');
      els.messages.textContent = '';
    }
    await loadConversations();
  }

  function newConversation() {
    stopChat(false);
    selectConversation('');
    els.messages.textContent = '';
    notice('');
    els.input.focus();
  }

  // ---- quota and credits ------------------------------------------------------------------
  // The balance comes from /me, then from every answer's `done.quota` and every order query. A
  // chat refused with 402 shows "额度已用完" with 购买. Buying polls the order like the SDK: at
  // once, then after 1, 2, 4, 5, 5 ... s, for at most 30 s (then "确认中").

  const POLL_DELAYS_MS = [1000, 2000, 4000, 5000];
  const POLL_TIMEOUT_MS = 30000;

  function showQuota(q) {
    if (!q || q.enabled === false) {
      els.quota.hidden = true;
      els.buy.hidden = true;
      return;
    }
    const parts = ['额度 ' + (q.remaining || 0)];
    if (q.free_remaining) parts.push('免费 ' + q.free_remaining);
    if (q.credits) parts.push('已购 ' + q.credits);
    els.quota.textContent = parts.join(' · ');
    els.quota.hidden = false;
    els.buy.hidden = false;
    if ((q.remaining || 0) > 0) els.exceeded.hidden = true;
  }

  async function refreshQuota() {
    try {
      const me = await getJson('/me');
      showQuota(me && me.quota);
    } catch (e) {
      // the balance is optional: older servers, a passing failure
    }
  }

  function quotaExceeded() {
    els.exceeded.hidden = false;
    refreshQuota().then(() => (els.exceeded.hidden = false));
  }

  async function openPlans() {
    if (state.buying) return;
    try {
      const { items } = await getJson('/plans');
      els.planList.textContent = '';
      for (const p of items) {
        const li = document.createElement('li');
        li.setAttribute('data-testid', 'plan');
        const title = document.createElement('span');
        title.className = 'title';
        title.textContent = p.title;
        title.title = p.credits + ' 点';
        const price = document.createElement('span');
        price.className = 'price';
        price.textContent = '¥' + (p.price_fen / 100).toFixed(2);
        const buy = document.createElement('button');
        buy.type = 'button';
        buy.setAttribute('data-testid', 'buy-plan');
        buy.textContent = '购买';
        buy.addEventListener('click', () => buyPlan(p));
        li.append(title, price, buy);
        els.planList.appendChild(li);
      }
      els.plansHint.textContent = !items.length ? '暂未开放购买'
        : FAKEPAY ? '离线演示：支付由 fake WeChat Pay（' + FAKEPAY + '）模拟' : '浏览器里无法调用微信支付；离线演示请在地址后加 ?fakepay=<fake WeChat Pay 地址>';
      els.plansHint.hidden = false;
      els.plans.hidden = false;
    } catch (err) {
      notice(err.message);
    }
  }

  function closePlans() {
    els.plans.hidden = true;
  }

  function sleepMs(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  // Ask for the order until paid or closed, for at most POLL_TIMEOUT_MS; passing failures
  // (network, 429, 5xx, a stalled query) do not end it. Resolves to the last order seen, or null.
  async function pollOrder(orderId) {
    const started = Date.now();
    let last = null;
    for (let i = 0; ; i++) {
      try {
        // A stalled query is given up 5 s after the deadline.
        const left = Math.max(POLL_TIMEOUT_MS - (Date.now() - started), 0);
        const res = await authed('/orders/' + encodeURIComponent(orderId), { signal: AbortSignal.timeout(left + 5000) });
        const body = await readJson(res);
        if (res.ok && body) {
          last = body;
          if (body.quota) showQuota(body.quota);
          if (body.status === 'paid' || body.status === 'closed') return body;
        } else if (res.status < 500 && res.status !== 429) {
          throw errorOf(res, body);
        }
      } catch (err) {
        if (err instanceof ApiError) throw err;
        // a network error: try again
      }
      const left = POLL_TIMEOUT_MS - (Date.now() - started);
      if (left <= 0) return last;
      await sleepMs(Math.min(POLL_DELAYS_MS[Math.min(i, POLL_DELAYS_MS.length - 1)], left));
    }
  }

  async function buyPlan(plan) {
    if (state.buying) return;
    if (!FAKEPAY) {
      notice('浏览器里无法调用微信支付；离线演示请在地址后加 ?fakepay=<fake WeChat Pay 地址>');
      return;
    }
    state.buying = true;
    closePlans();
    els.buy.disabled = els.exceededBuy.disabled = true;
    try {
      const res = await authed('/orders', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ plan: plan.id }),
      });
      const order = await readJson(res);
      if (!res.ok || !order || !order.order_id) throw errorOf(res, order);
      // The payment sheet, simulated: the user confirms, the fake WeChat Pay takes the money and
      // notifies the service.
      if (!window.confirm('模拟支付 ¥' + (plan.price_fen / 100).toFixed(2) + '：' + plan.title + '（fake WeChat Pay）')) {
        notice('已取消支付');
        return;
      }
      notice('正在确认支付…');
      const paid = await fetch(FAKEPAY + '/_control/pay', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ out_trade_no: order.order_id, notify: 'normal' }),
      });
      if (!paid.ok) throw new Error('模拟支付失败（' + paid.status + '）');
      const final = await pollOrder(order.order_id);
      const status = final ? final.status : 'pending';
      if (status === 'paid') els.exceeded.hidden = true;
      notice({ paid: '购买成功，额度已到账', closed: '订单已关闭，未扣款' }[status] || '支付结果确认中，额度稍后到账');
    } catch (err) {
      notice(err.message || '支付失败');
    } finally {
      state.buying = false;
      els.buy.disabled = els.exceededBuy.disabled = false;
    }
  }

  // ---- chat -------------------------------------------------------------------------------
  // An answer outlives its connection (API.md v1.1): every event but `ping` carries `seq`; when a
  // stream is cut after `start`, the page follows the answer again with
  // GET /messages/{id}/events?after=<last seq> and shows "reconnecting" meanwhile. 停止 sends
  // POST /messages/{id}/cancel (closing the connection alone no longer stops an answer).

  const RESUME_ATTEMPTS = 6; // reconnections in a row without a new event
  const RESUME_DELAYS_MS = [0, 1000, 2000, 4000, 8000, 10000];
  const IDLE_TIMEOUT_MS = 30000; // a stream silent this long (pings included) is taken as dead
  const CUT_MESSAGE = '连接中断，回答不完整';

  // Stop listening to the answer in flight. `cancel`: the user's 停止, which stops the answer on
  // the server too; otherwise (switching conversation, logout) the answer goes on and is stored.
  function stopChat(cancel) {
    const run = state.run;
    state.run = null;
    setBusy(false);
    if (!run) return;
    run.stopped = true;
    if (cancel) {
      if (run.messageId) sendCancel(run.messageId);
      else run.cancelWhenStarted = true; // the first line will name the message
      run.answer.dataset.state = 'stopped';
      if (!run.text) {
        run.answer.remove();
        notice('已停止');
      }
    }
    if (!run.cancelWhenStarted) run.controller.abort();
  }

  function sendCancel(messageId) {
    authed('/messages/' + encodeURIComponent(messageId) + '/cancel', { method: 'POST' }).catch(() => {});
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      if (!ms || signal.aborted) return resolve();
      const t = setTimeout(resolve, ms);
      signal.addEventListener('abort', () => {
        clearTimeout(t);
        resolve();
      }, { once: true });
    });
  }

  function newRun(answer) {
    const run = {
      answer,
      bubble: answer.querySelector('.bubble'),
      controller: new AbortController(),
      messageId: answer.dataset.messageId || '',
      lastSeq: -1,
      resumable: false,
      text: '',
      reasoning: '',
      ended: false,
      stopped: false,
      cancelWhenStarted: false,
    };
    return run;
  }

  function showReasoning(run) {
    const box = run.answer.querySelector('.reasoning');
    box.hidden = !run.reasoning;
    box.querySelector('.reasoning-text').textContent = run.reasoning;
  }

  // One event of the answer; events already seen (seq not above the last one) are skipped.
  function handleEvent(run, ev) {
    if (typeof ev.seq === 'number') {
      if (ev.seq <= run.lastSeq) return false;
      run.lastSeq = ev.seq;
    }
    if (run.cancelWhenStarted) {
      if (ev.type === 'start' && ev.message_id) {
        run.cancelWhenStarted = false;
        sendCancel(ev.message_id);
        run.controller.abort();
      }
      return true;
    }
    if (run.stopped) return true;
    const answer = run.answer;
    switch (ev.type) {
      case 'start':
        state.label = ev.label || DEFAULT_LABEL;
        answer.querySelector('.ai-label').textContent = state.label;
        answer.dataset.messageId = ev.message_id;
        answer.dataset.state = 'streaming';
        run.messageId = ev.message_id;
        run.resumable = typeof ev.seq === 'number';
        selectConversation(ev.conversation_id);
        break;
      case 'queued':
        notice('排队中，前面还有 ' + ev.position + ' 位');
        break;
      case 'transcript':
        // Voice: what the service heard is the question.
        if (run.question) run.question.querySelector('.bubble').textContent = ev.text || '';
        break;
      case 'delta':
        run.text += ev.text || '';
        run.bubble.textContent = run.text;
        break;
      case 'snapshot':
        // The exact events are gone: this is the whole answer so far.
        run.text = ev.text || '';
        run.bubble.textContent = run.text;
        break;
      case 'reasoning':
        run.reasoning += ev.text || '';
        showReasoning(run);
        break;
      case 'retract':
        run.ended = true;
        answer.remove();
        notice('该回答未通过内容安全检查，已撤回');
        break;
      case 'done':
        if (ev.finish_reason === 'content_filter' && !run.ended) {
          // Strict mode: the rest was withheld before it was shown; what was shown had passed.
          notice('后续内容未通过内容安全检查，已停止');
          if (!run.text) answer.remove();
        }
        run.ended = true;
        answer.dataset.state = ev.finish_reason === 'cancelled' ? 'stopped' : 'done';
        if (window.mpchatVoice) window.mpchatVoice.addPlay(answer);
        if (ev.quota) showQuota(ev.quota); // servers older than quotas send none
        break;
      case 'error':
        run.ended = true;
        notice(ev.message || '出错了');
        answer.dataset.state = 'error';
        if (!run.text) answer.remove();
        break;
      default:
        return true; // ping, newer event types: ignore
    }
    if (answer.dataset.state === 'reconnecting') {
      answer.dataset.state = 'streaming';
      notice('');
    }
    return true;
  }

  // Read one NDJSON response to its end. Resolves when the body ends (cut or not); rejects on a
  // network error, the stop, or a stream silent for IDLE_TIMEOUT_MS (its own abort).
  async function readStream(run, res, connection) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder(); // stream:true: a chunk may end inside a character
    let buf = '';
    let idle = null;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => connection.abort(), IDLE_TIMEOUT_MS);
    };
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        arm();
        buf += decoder.decode(value || new Uint8Array(0), { stream: !done });
        let nl;
        while ((nl = buf.indexOf('\n')) !== -1) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) handleEvent(run, JSON.parse(line));
          if (run.ended) return;
        }
        if (done) break;
      }
      const rest = buf.trim();
      if (rest) {
        let ev = null;
        try {
          ev = JSON.parse(rest);
        } catch (e) {
          // half a line: the body was cut
        }
        if (ev) handleEvent(run, ev);
      }
    } finally {
      clearTimeout(idle);
      reader.cancel().catch(() => {});
    }
  }

  // A connection of its own, aborted with the run (stop) or by the idle watch.
  function connectionFor(run) {
    const connection = new AbortController();
    if (run.controller.signal.aborted) connection.abort();
    run.controller.signal.addEventListener('abort', () => connection.abort(), { once: true });
    return connection;
  }

  // Follow the answer from run.lastSeq until it ends, reconnecting with backoff. `fresh`: the
  // first connection is not a reconnection (an answer found streaming when a conversation opens).
  async function follow(run, fresh) {
    let failures = 0;
    while (!run.ended && !run.stopped) {
      if (failures >= RESUME_ATTEMPTS) {
        handleEvent(run, { type: 'error', message: CUT_MESSAGE });
        return;
      }
      if (!fresh || failures > 0) {
        run.answer.dataset.state = 'reconnecting';
        notice('连接中断，正在重新连接…');
      }
      await sleep(RESUME_DELAYS_MS[Math.min(failures, RESUME_DELAYS_MS.length - 1)], run.controller.signal);
      failures += 1;
      if (run.stopped) return;
      const before = run.lastSeq;
      const connection = connectionFor(run);
      const after = run.lastSeq >= 0 ? '?after=' + run.lastSeq : '';
      try {
        const res = await authed('/messages/' + encodeURIComponent(run.messageId) + '/events' + after, { signal: connection.signal });
        if (res.status === 404 || res.status === 401 || res.status === 403) {
          handleEvent(run, { type: 'error', message: CUT_MESSAGE });
          return;
        }
        if (res.ok) await readStream(run, res, connection);
      } catch (err) {
        if (run.stopped) return;
        // a network error or the idle watch: try again
      }
      if (run.lastSeq > before) failures = 0;
    }
  }

  // `voice`: a recording (a WAV Blob) to send to /voice instead of typed content.
  async function sendMessage(content, voice) {
    notice('');
    const question = addMessage('user', content);
    const answer = addMessage('assistant', '');
    answer.dataset.state = 'waiting';
    const run = newRun(answer);
    run.question = question;
    state.run = run;
    setBusy(true);

    // The request's name: cut before `start`, it is sent again under it, and the service follows
    // the answer the first copy started if that one arrived (docs/chat.md, Idempotency-Key).
    const key = voice ? null : 'web-' + Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 14);
    try {
      let cut = false;
      for (let attempt = 0; ; attempt += 1) {
        const connection = connectionFor(run);
        let lost = false; // cut before `start`: whether the question arrived is unknown
        try {
          const conv = state.conversationId ? '?conversation_id=' + encodeURIComponent(state.conversationId) : '';
          const res = voice
            ? await authed('/voice' + conv, { method: 'POST', headers: { 'Content-Type': 'audio/wav' }, body: voice, signal: connection.signal })
            : await authed('/chat', {
              method: 'POST',
              headers: { 'Content-Type': 'application/json', 'Idempotency-Key': key },
              body: JSON.stringify({ content, conversation_id: state.conversationId || undefined, stream: true }),
              signal: connection.signal,
            });
          if (!res.ok) {
            const err = errorOf(res, await readJson(res));
            if (err.code === 'quota_exceeded' || res.status === 402) {
              handleEvent(run, { type: 'error', message: '额度已用完' });
              notice(''); // the banner says it, with 购买
              quotaExceeded();
              return;
            }
            const wait = err.retryAfter ? '，请 ' + err.retryAfter + ' 秒后再试' : '';
            handleEvent(run, { type: 'error', message: err.message + wait });
            return;
          }
          await readStream(run, res, connection);
          cut = !run.ended;
          lost = cut && !run.messageId;
        } catch (err) {
          if (run.stopped) return;
          if (!run.messageId) {
            if (!key || attempt + 1 >= RESUME_ATTEMPTS) {
              handleEvent(run, { type: 'error', message: '网络错误：' + err.message });
              return;
            }
            lost = true;
          }
          cut = true;
        }
        if (!lost || run.stopped) break;
        if (!key || attempt + 1 >= RESUME_ATTEMPTS) {
          handleEvent(run, { type: 'error', message: CUT_MESSAGE });
          return;
        }
        run.answer.dataset.state = 'reconnecting';
        notice('连接中断，正在重新发送…');
        await sleep(RESUME_DELAYS_MS[Math.min(attempt, RESUME_DELAYS_MS.length - 1)], run.controller.signal);
        if (run.stopped) return;
      }
      if (cut && !run.stopped) {
        if (run.resumable) await follow(run);
        else handleEvent(run, { type: 'error', message: CUT_MESSAGE });
      }
    } finally {
      if (state.run === run) {
        state.run = null;
        setBusy(false);
        els.input.focus();
      }
      loadConversations().catch(() => {});
    }
  }

  // An answer still being produced when its conversation is opened (a reload mid-answer):
  // follow it from the start to its end.
  async function followStreaming(answer, messageId) {
    answer.dataset.messageId = messageId;
    const run = newRun(answer);
    state.run = run;
    setBusy(true);
    try {
      await follow(run, true);
    } finally {
      if (state.run === run) {
        state.run = null;
        setBusy(false);
      }
      loadConversations().catch(() => {});
    }
  }

  // ---- wiring -----------------------------------------------------------------------------

  els.loginForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const code = els.loginCode.value.trim();
    if (!code) return;
    try {
      await login(code);
      await enter();
    } catch (err) {
      window.alert(err.message);
    }
  });

  els.logout.addEventListener('click', () => {
    stopChat(false);
    forget();
    els.messages.textContent = '';
    showLogin();
  });

  els.newConversation.addEventListener('click', newConversation);
  els.buy.addEventListener('click', openPlans);
  els.exceededBuy.addEventListener('click', openPlans);
  els.plansClose.addEventListener('click', closePlans);
  els.stop.addEventListener('click', () => stopChat(true));

  els.form.addEventListener('submit', (e) => {
    e.preventDefault();
    const content = els.input.value.trim();
    if (!content || state.run) return;
    els.input.value = '';
    sendMessage(content);
  });

  els.input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      els.form.requestSubmit();
    }
  });

  async function enter() {
    showApp();
    refreshQuota();
    await loadConversations();
    if (state.conversationId) await openConversation(state.conversationId);
  }

  async function loadMeta() {
    try {
      const res = await fetch(API + '/meta');
      if (!res.ok) return;
      const m = await res.json();
      if (m.label) state.label = m.label;
      const parts = [
        m.model_name && '模型：' + m.model_name,
        m.filed_model_name && '备案模型：' + m.filed_model_name,
        m.filing_number && '备案号：' + m.filing_number,
      ];
      els.meta.textContent = parts.filter(Boolean).join(' · ');
    } catch (e) {
      // meta is optional: older servers do not have it.
    }
  }

  // For voice.js: send a recording, authenticated calls, whether an answer is under way.
  window.mpchatPage = {
    sendVoice: (blob) => sendMessage('（语音）', blob),
    authed,
    busy: () => !!state.run,
    notice,
  };

  loadMeta();
  if (token()) {
    enter().catch((err) => notice(err.message));
  } else {
    showLogin();
  }
})();
