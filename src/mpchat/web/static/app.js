// mpchat browser demo: dev login, streamed chat with the AI label, retraction, history.
// Plain script, no build step. Talks to the same API as the mini program SDK (API.md v1).
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
  };

  const state = {
    conversationId: localStorage.getItem(KEY_CONVERSATION) || '',
    controller: null, // AbortController of the chat in flight
    label: DEFAULT_LABEL,
  };

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
    stopChat();
    notice('');
    els.messages.textContent = '';
    selectConversation(id);
    try {
      const page = await getJson('/conversations/' + encodeURIComponent(id) + '/messages?limit=50');
      els.messages.textContent = '';
      for (const m of page.items) {
        if (m.role === 'system' || m.status === 'retracted') continue;
        addMessage(m.role, m.content).dataset.state = 'done';
      }
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
    stopChat();
    selectConversation('');
    els.messages.textContent = '';
    notice('');
    els.input.focus();
  }

  // ---- chat -------------------------------------------------------------------------------

  function stopChat() {
    if (state.controller) state.controller.abort();
    state.controller = null;
    setBusy(false);
  }

  async function sendMessage(content) {
    notice('');
    addMessage('user', content);
    const answer = addMessage('assistant', '');
    answer.dataset.state = 'waiting';
    const bubble = answer.querySelector('.bubble');
    const controller = new AbortController();
    state.controller = controller;
    setBusy(true);

    let text = '';
    let ended = false;
    const handle = (ev) => {
      switch (ev.type) {
        case 'start':
          state.label = ev.label || DEFAULT_LABEL;
          answer.querySelector('.ai-label').textContent = state.label;
          answer.dataset.messageId = ev.message_id;
          answer.dataset.state = 'streaming';
          selectConversation(ev.conversation_id);
          break;
        case 'queued':
          notice('排队中，前面还有 ' + ev.position + ' 位');
          break;
        case 'delta':
          text += ev.text || '';
          bubble.textContent = text;
          notice('');
          break;
        case 'retract':
          answer.remove();
          notice('该回答未通过内容安全检查，已撤回');
          break;
        case 'done':
          ended = true;
          answer.dataset.state = 'done';
          break;
        case 'error':
          ended = true;
          notice(ev.message || '出错了');
          answer.dataset.state = 'error';
          if (!text) answer.remove();
          break;
        default:
          break; // newer event types: ignore
      }
    };

    try {
      const res = await authed('/chat', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ content, conversation_id: state.conversationId || undefined, stream: true }),
        signal: controller.signal,
      });
      if (!res.ok) {
        const err = errorOf(res, await readJson(res));
        const wait = err.retryAfter ? '，请 ' + err.retryAfter + ' 秒后再试' : '';
        handle({ type: 'error', message: err.message + wait });
        return;
      }
      // Decode with stream:true so a chunk that ends inside a character waits for the rest.
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        buf += decoder.decode(value || new Uint8Array(0), { stream: !done });
        let nl;
        while ((nl = buf.indexOf('\n')) !== -1) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) handle(JSON.parse(line));
        }
        if (done) break;
      }
      if (buf.trim()) handle(JSON.parse(buf));
      if (!ended) handle({ type: 'error', message: '连接中断，回答不完整' });
    } catch (err) {
      if (err.name === 'AbortError') {
        answer.dataset.state = 'stopped';
        if (!text) answer.remove();
      } else {
        handle({ type: 'error', message: '网络错误：' + err.message });
      }
    } finally {
      if (state.controller === controller) {
        state.controller = null;
        setBusy(false);
        els.input.focus();
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
    stopChat();
    forget();
    els.messages.textContent = '';
    showLogin();
  });

  els.newConversation.addEventListener('click', newConversation);
  els.stop.addEventListener('click', stopChat);

  els.form.addEventListener('submit', (e) => {
    e.preventDefault();
    const content = els.input.value.trim();
    if (!content || state.controller) return;
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
    await loadConversations();
    if (state.conversationId) await openConversation(state.conversationId);
  }

  async function loadMeta() {
    try {
      const res = await fetch(API + '/meta');
      if (!res.ok) return;
      const m = await res.json();
      if (m.label) state.label = m.label;
      const parts = [m.model_name && '模型：' + m.model_name, m.filing_number && '备案号：' + m.filing_number];
      els.meta.textContent = parts.filter(Boolean).join(' · ');
    } catch (e) {
      // meta is optional: older servers do not have it.
    }
  }

  loadMeta();
  if (token()) {
    enter().catch((err) => notice(err.message));
  } else {
    showLogin();
  }
})();
