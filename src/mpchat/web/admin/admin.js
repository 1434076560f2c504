/* mpchat operator's console: every number on it comes from /admin/v1/ (docs/operations.md).
 * The token is asked for once and kept in this tab's sessionStorage; no build step. */
'use strict';
(() => {
  const KEY = 'mpchat.admin.token';
  const $ = (id) => document.getElementById(id);
  const COLORS = ['#07c160', '#576b95', '#fa9d3b', '#e64340', '#10aeff', '#7d52a8', '#888'];
  const PHASES = { first_delta: '首字', input_wechat: '微信检查', queue: '排队',
    provider_first_token: '模型首 token', overhead: 'mpchat 自身' };
  const RANGES = { '24h': [1, 'hour'], '7d': [7, 'hour'], '30d': [30, 'day'] };
  let plots = [];
  let currentUser = null;

  async function api(path, options = {}) {
    const r = await fetch('/admin/v1' + path, { ...options,
      headers: { Authorization: 'Bearer ' + sessionStorage.getItem(KEY) } });
    if (r.status === 204) return null;
    const body = await r.json();
    if (!r.ok) throw Object.assign(new Error(body.error ? body.error.message : r.status),
      { status: r.status, code: body.error && body.error.code });
    return body;
  }

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  const fmt = (v) => (v === null || v === undefined ? '–' : typeof v === 'number'
    ? (Number.isInteger(v) ? v.toLocaleString('zh-CN') : v.toFixed(1)) : String(v));

  function cards(target, items) {
    target.replaceChildren(...items.map(([label, value, id]) => {
      const card = el('div', undefined, 'card');
      card.append(el('div', label, 'label'), el('div', fmt(value), 'value'));
      if (id) card.dataset.testid = id;
      return card;
    }));
  }

  function table(target, head, rows) {
    const tr = el('tr');
    head.forEach((h) => tr.append(el('th', h)));
    target.replaceChildren(tr, ...rows.map((cells) => {
      const row = el('tr');
      cells.forEach((c) => row.append(c instanceof Node ? wrap(c) : el('td', fmt(c))));
      return row;
    }));
  }
  const wrap = (node) => { const td = el('td'); td.append(node); return td; };

  function plot(target, t, named, label) {
    const names = Object.keys(named);
    const width = Math.max(300, target.clientWidth || 440);
    const series = [{}, ...names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length],
      width: 2, spanGaps: true }))];
    const chart = new uPlot({ width, height: 200, series, legend: { show: true },
      axes: [{}, { label, size: 60 }], scales: { x: { time: true } } },
    [t, ...names.map((n) => named[n])], target);
    target.dataset.points = String(names.reduce((sum, n) =>
      sum + named[n].filter((v) => v !== null && v !== 0).length, 0));
    plots.push(chart);
  }

  async function overview() {
    const [days, step] = RANGES[$('range').value];
    const since = new Date(Date.now() - days * 86400e3).toISOString();
    const [s, series] = await Promise.all([api('/summary?since=' + encodeURIComponent(since)),
      api(`/series?step=${step}&since=${encodeURIComponent(since)}`)]);
    const errors = Object.values(s.errors).reduce((a, b) => a + b, 0);
    cards($('cards'), [['对话', s.chats, 'card-chats'], ['拒绝（回答之前）', s.refused],
      ['错误', errors, 'card-errors'], ['用户', s.users],
      ['prompt tokens', s.prompt_tokens], ['completion tokens', s.completion_tokens],
      ['费用（额度单位）', s.cost], ['首字 p50 ms', s.phases_ms.first_delta.p50],
      ['首字 p95 ms', s.phases_ms.first_delta.p95, 'card-p95']]);
    plots.forEach((p) => p.destroy());
    plots = [];
    plot($('plot-chats'), series.t, { 对话: series.chats }, '次');
    plot($('plot-errors'), series.t, Object.keys(series.errors).length ? series.errors
      : { 无错误: series.t.map(() => 0) }, '次');
    const latency = {};
    for (const [phase, name] of Object.entries(PHASES)) latency[name] = series.p95_ms[phase];
    plot($('plot-latency'), series.t, latency, 'ms');
    plot($('plot-tokens'), series.t, Object.keys(series.tokens).length ? series.tokens
      : { tokens: series.t.map(() => 0) }, 'tokens');
    table($('top-users'), ['用户', '对话', 'tokens', '费用', '错误'], s.top_users.map((u) =>
      [userLink(u.user_id), u.chats, u.tokens, u.cost, u.errors]));
  }

  function userLink(id) {
    const a = el('a', id, 'id');
    a.dataset.user = id;
    a.addEventListener('click', () => { show('users'); openUser(id); });
    return a;
  }

  async function providers() {
    const { items } = await api('/providers');
    table($('providers'), ['名称', '模型', '优先级', '熔断器', '进行中', '排队', '并发上限',
      '成功', '可重试失败', '被拒'], items.map((p) => [p.name, p.model, p.priority, p.breaker,
      p.in_flight, p.queued, p.max_concurrency, p.attempts.ok || 0, p.attempts.retryable || 0,
      p.attempts.rejected || 0]));
  }

  async function searchUsers() {
    const { items } = await api('/users?q=' + encodeURIComponent($('user-q').value.trim()));
    table($('users'), ['用户', '注册', '登录会话', '状态'], items.map((u) => [userLink(u.id),
      new Date(u.created_at).toLocaleString('zh-CN'), u.sessions, u.blocked_at ? '已停用' : '正常']));
  }

  async function openUser(id) {
    currentUser = id;
    const [user, usage] = await Promise.all([api('/users/' + id), api(`/users/${id}/usage`)]);
    $('user-detail').hidden = false;
    $('user-title').textContent = '用户 ' + id;
    $('user-state').textContent = user.blocked_at
      ? '已停用（' + new Date(user.blocked_at).toLocaleString('zh-CN') + '）'
      : `正常，${user.sessions} 个登录会话`;
    const s = usage.summary;
    cards($('user-cards'), [['30 天对话', s.chats], ['拒绝', s.refused],
      ['tokens', s.prompt_tokens + s.completion_tokens], ['费用', s.cost],
      ['首字 p95 ms', s.phases_ms.first_delta.p95]]);
  }

  async function act(path, done) {
    try {
      await api(`/users/${currentUser}/${path}`, { method: path === 'sessions' ? 'DELETE' : 'POST' });
      $('user-notice').textContent = done;
      await openUser(currentUser);
    } catch (err) {
      $('user-notice').textContent = err.code === 'forbidden' ? '只读令牌不能执行此操作' : err.message;
    }
  }

  async function audit(form) {
    const query = new URLSearchParams([...new FormData(form)].filter(([, v]) => v));
    const { items } = await api('/audit?' + query);
    table($('audit'), ['时间', '检查', '阶段', '结论', '规则', '用户（哈希）', '摘录'],
      items.map((e) => [new Date(e.created_at).toLocaleString('zh-CN'), e.check, e.stage,
        e.verdict, e.rule, e.user.slice(0, 12), e.excerpt]));
  }

  async function keys() {
    const { items } = await api('/keys?all=true');
    table($('keys'), ['名称', '前缀', '状态', '模型', 'rpm', 'tpm', '额度', '已用 tokens', '到期'],
      items.map((k) => [k.name, k.prefix, k.status, k.models ? k.models.join(', ') : '全部', k.rpm,
        k.tpm, k.quota, k.used_tokens, k.expires_at ? new Date(k.expires_at).toLocaleString('zh-CN') : '–']));
  }

  function show(tab) {
    document.querySelectorAll('.tabs button').forEach((b) =>
      b.classList.toggle('active', b.dataset.tab === tab));
    for (const name of ['overview', 'providers', 'users', 'audit', 'keys']) $('tab-' + name).hidden = name !== tab;
    const load = { overview, providers, users: searchUsers, keys, audit: () => audit($('audit-filter')) };
    load[tab]().catch(failed);
  }

  function failed(err) {
    if (err.status === 401) { sessionStorage.removeItem(KEY); enter(); }
    console.error(err);
  }

  async function enter() {
    const signedIn = Boolean(sessionStorage.getItem(KEY));
    $('login-view').hidden = signedIn;
    $('console').hidden = !signedIn;
    for (const id of ['range', 'refresh', 'logout']) $(id).hidden = !signedIn;
    if (signedIn) show('overview');
  }

  $('login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $('token').value.trim());
    try {
      await api('/providers');
      $('login-error').hidden = true;
      $('token').value = '';
      enter();
    } catch (err) {
      sessionStorage.removeItem(KEY);
      $('login-error').textContent = err.status === 401 ? '令牌无效' : String(err.message);
      $('login-error').hidden = false;
    }
  });
  $('logout').addEventListener('click', () => { sessionStorage.removeItem(KEY); enter(); });
  $('range').addEventListener('change', () => show('overview'));
  $('refresh').addEventListener('click', () => show(document.querySelector('.tabs .active').dataset.tab));
  document.querySelectorAll('.tabs button').forEach((b) =>
    b.addEventListener('click', () => show(b.dataset.tab)));
  $('user-search').addEventListener('submit', (e) => { e.preventDefault(); searchUsers().catch(failed); });
  $('audit-filter').addEventListener('submit', (e) => { e.preventDefault(); audit(e.target).catch(failed); });
  $('block').addEventListener('click', () => act('block', '已停用：此用户的每个请求（登录除外）都会得到 403 blocked'));
  $('unblock').addEventListener('click', () => act('unblock', '已恢复'));
  $('revoke').addEventListener('click', () => act('sessions', '已注销此用户的全部登录'));
  enter();
})();
