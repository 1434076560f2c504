'use strict';
// Chat page: sends a message, renders the answer as it streams, shows the AI label, removes a
// retracted answer, shows a reasoning model's thinking folded apart, says "reconnecting" while the
// SDK resumes a cut stream, and stops an answer with 停止 (the SDK cancels it on the server).
// Opened with ?id=<conversation id> it first loads that conversation.
// Quota: the balance (from /me, then from every answer's `done`, via the client's onQuota), a
// 购买 button that lists the credit packs and buys one (the SDK's buy(): order, payment, polling),
// and "额度已用完" with the same button when a chat is refused with 402.
// Voice: 按住说话 records while held (the SDK's voice()), shows what the service heard, and streams
// the answer like a typed one; 播放 reads an answer aloud sentence by sentence (speak()).
// A conversation whose older turns the model sees only as a summary says so ("较早的消息已被总结").

/** @returns {import('../../lib/mpchat').Client} */
function client() {
  return getApp().client;
}

/** @type {any} the chat or voice handle of the answer being received */
let current = null;
/** @type {{stop(): void} | null} */
let speaking = null;
/** Index of the answer being received in `messages`, or -1. */
let pendingIndex = -1;

/** @param {import('../../lib/mpchat').Quota} q */
function quotaText(q) {
  if (q.enabled === false) return '';
  const parts = ['额度 ' + (q.remaining || 0)];
  if (q.free_remaining) parts.push('免费 ' + q.free_remaining);
  if (q.credits) parts.push('已购 ' + q.credits);
  return parts.join(' · ');
}

/** @type {Record<string, string>} */
const BUY_NOTICES = {
  paid: '购买成功，额度已到账',
  pending: '支付结果确认中，额度稍后到账',
  closed: '订单已关闭，未扣款',
  cancelled: '已取消支付',
};

Page({
  data: {
    /** @type {{id: string, role: string, content: string, pending?: boolean, reasoning?: string, showReasoning?: boolean, stopped?: boolean}[]} */
    messages: [],
    input: '',
    label: '',
    conversationId: '',
    sending: false,
    notice: '',
    scrollTo: '',
    /** The operator's filing (备案) line from /api/v1/meta, shown under the messages. */
    filing: '',
    /** The balance line ('' while unknown or with quotas off). */
    quotaText: '',
    /** A chat was refused with 402: say so and offer to buy. */
    quotaExceeded: false,
    /** @type {{id: string, title: string, credits: number, price: string}[]} */
    plans: [],
    showPlans: false,
    buying: false,
    /** 按住说话 is held: recording. */
    talking: false,
    /** Index of the last message the model sees only through the summary; -1: none. */
    summaryEnd: -1,
  },

  /** @param {Record<string, string | undefined>} query */
  onLoad(query) {
    // The client's onQuota (app.js) hands every new balance to the page on screen.
    getApp().quotaListener = (/** @type {import('../../lib/mpchat').Quota} */ q) => this.showQuota(q);
    client().me().catch(() => {
      // No balance shown: the page works without it.
    });
    if (query.id) this.open(query.id);
    this.loadFiling();
  },

  loadFiling() {
    client()
      .meta()
      .then((m) => {
        const parts = [
          m.filed_model_name && '备案模型：' + m.filed_model_name,
          m.filing_number && '备案号：' + m.filing_number,
        ];
        this.setData({ filing: parts.filter(Boolean).join(' · ') });
      })
      .catch(() => {}); // optional: older servers have no meta, and the chat works without it
  },

  /** @param {import('../../lib/mpchat').Quota} q */
  showQuota(q) {
    /** @type {Record<string, any>} */
    const update = { quotaText: quotaText(q) };
    if (q.exceeded) update.quotaExceeded = true;
    else if (q.enabled === false || (q.remaining || 0) > 0) update.quotaExceeded = false;
    this.setData(update);
  },

  // 购买: list the credit packs; tapping one buys it.
  openPlans() {
    if (this.data.buying) return;
    client()
      .plans()
      .then((plans) => {
        if (!plans.length) {
          this.setData({ notice: '暂未开放购买' });
          return;
        }
        const shown = plans.map((p) => ({ id: p.id, title: p.title, credits: p.credits, price: (p.price_fen / 100).toFixed(2) }));
        this.setData({ plans: shown, showPlans: true });
      })
      .catch((err) => this.setData({ notice: err.message || '加载失败' }));
  },

  closePlans() {
    this.setData({ showPlans: false });
  },

  /** @param {WechatMiniprogram.BaseEvent} e */
  buyPlan(e) {
    const id = String(e.currentTarget.dataset.id);
    if (this.data.buying) return;
    this.setData({ buying: true, showPlans: false, notice: '正在支付…' });
    client()
      .buy(id)
      .then(
        (result) => {
          /** @type {Record<string, any>} */
          const update = { buying: false, notice: BUY_NOTICES[result.status] || '' };
          if (result.status === 'paid') update.quotaExceeded = false;
          this.setData(update);
        },
        (err) => this.setData({ buying: false, notice: err.message || '支付失败' }),
      );
  },

  onShow() {
    // The history page hands over a conversation to open (tab pages take no query).
    const app = getApp();
    if (app.openConversation !== undefined) {
      const id = app.openConversation;
      app.openConversation = undefined;
      if (id) this.open(id);
      else this.newConversation();
    }
  },

  onUnload() {
    // Leaving is not stopping: the answer goes on, is stored, and shows up in the history.
    if (current) current.abort({ cancel: false });
    current = null;
  },

  /** @param {string} id */
  open(id) {
    if (current) current.abort({ cancel: false });
    this.setData({ conversationId: id, messages: [], notice: '', sending: false });
    client()
      .listMessages(id, { limit: 50 })
      .then((page) => {
        const items = page.items.filter((m) => m.role !== 'system' && m.status !== 'retracted');
        const messages = items.map((m) => ({ id: m.id, role: m.role, content: m.content }));
        let summaryEnd = -1;
        items.forEach((m, i) => {
          if (m.summarized) summaryEnd = i;
        });
        this.setData({ messages, summaryEnd, scrollTo: messages.length ? 'm' + (messages.length - 1) : '' });
      })
      .catch((err) => this.setData({ notice: err.message || '加载失败' }));
  },

  newConversation() {
    if (current) current.abort({ cancel: false });
    this.setData({ conversationId: '', messages: [], notice: '', label: '', sending: false, summaryEnd: -1 });
  },

  /** @param {WechatMiniprogram.Input} e */
  onInput(e) {
    this.setData({ input: e.detail.value });
  },

  send() {
    const content = this.data.input.trim();
    if (!content || this.data.sending) return;
    current = client().chat({ content, ...this.beginAnswer(content) });
  },

  // 按住说话: record while held; on release the SDK uploads the recording and streams the answer.
  startTalk() {
    if (this.data.sending) return;
    this.setData({ talking: true }); // first: the held button stays while sending turns true
    const callbacks = this.beginAnswer('（正在听…）');
    const userKey = 'messages[' + (this.data.messages.length - 2) + '].content';
    current = client().voice({
      ...callbacks,
      format: 'mp3',
      onTranscript: (ev) => this.setData({ [userKey]: ev.text }),
    });
  },

  endTalk() {
    if (!this.data.talking) return;
    this.setData({ talking: false });
    if (current && typeof current.stop === 'function') current.stop();
  },

  /** 播放: read the answer aloud, sentence by sentence. @param {WechatMiniprogram.BaseEvent} e */
  play(e) {
    const id = String(e.currentTarget.dataset.id);
    if (speaking) speaking.stop();
    speaking = client().speak(id, {
      onDone: () => {
        speaking = null;
      },
      onError: (err) => {
        speaking = null;
        this.setData({ notice: err.message || '播放失败' });
      },
    });
  },

  /**
   * Show the question and an empty answer; the callbacks that fill the answer in.
   * @param {string} content
   */
  beginAnswer(content) {
    const messages = this.data.messages.concat(
      { id: 'u' + Date.now(), role: 'user', content },
      { id: 'a' + Date.now(), role: 'assistant', content: '', pending: true },
    );
    const index = messages.length - 1;
    const key = 'messages[' + index + ']';
    this.setData({ messages, input: '', sending: true, notice: '', scrollTo: 'm' + index });
    let retracted = false;
    pendingIndex = index;

    const callbacks = {
      conversationId: this.data.conversationId || undefined,
      onStart: (ev) => {
        this.setData({ label: ev.label, conversationId: ev.conversation_id, [key + '.id']: ev.message_id });
      },
      onQueued: (ev) => {
        this.setData({ notice: '排队中，前面还有 ' + ev.position + ' 位' });
      },
      onRetry: (info) => {
        this.setData({ notice: '服务繁忙，' + info.delay + ' 秒后重试' });
      },
      onDelta: (ev) => {
        // One path update per delta: the view layer gets only the changed text. `full` is the
        // whole answer, so a snapshot after a resume (ev.reset) needs nothing special here.
        this.setData({ [key + '.content']: ev.full, notice: '' });
      },
      onReasoning: (ev) => {
        // The model's thinking: kept apart from the answer, folded until tapped.
        this.setData({ [key + '.reasoning']: ev.full });
      },
      onReconnect: () => {
        this.setData({ notice: '连接中断，正在重新连接…' });
      },
      onReconnected: () => {
        this.setData({ notice: '' });
      },
      onRetract: () => {
        retracted = true;
        const rest = this.data.messages.filter((_, i) => i !== index);
        this.setData({ messages: rest, notice: '该回答未通过内容安全检查，已撤回' });
      },
      // Strict mode ends an answer whose rest failed the check with content_filter and no
      // retract: what was shown had passed and stays.
      onDone: (ev) => finish(ev.finish_reason === 'content_filter' ? '后续内容未通过内容安全检查，已停止' : ''),
      onError: (err) => {
        if (err.code === 'quota_exceeded') this.setData({ quotaExceeded: true });
        finish(err.code === 'quota_exceeded' ? '额度已用完' : err.message || '出错了');
      },
    };

    /** @param {string} notice */
    const finish = (notice) => {
      current = null;
      pendingIndex = -1;
      /** @type {Record<string, any>} */
      const update = { sending: false };
      if (notice) update.notice = notice;
      const answer = this.data.messages[index];
      if (!retracted && answer) {
        // An answer that never got a word is dropped rather than left empty.
        if (answer.content) update[key + '.pending'] = false;
        else update.messages = this.data.messages.filter((_, i) => i !== index);
      }
      this.setData(update);
    };
    return callbacks;
  },

  /** @param {WechatMiniprogram.BaseEvent} e */
  toggleReasoning(e) {
    const index = Number(e.currentTarget.dataset.index);
    const item = this.data.messages[index];
    if (item) this.setData({ ['messages[' + index + '].showReasoning']: !item.showReasoning });
  },

  // 停止: the SDK sends the cancel endpoint (a closed connection no longer stops the answer) and
  // fires no callback afterwards, so the page settles the answer's bubble itself.
  stop() {
    if (current) current.abort();
    current = null;
    /** @type {Record<string, any>} */
    const update = { sending: false, notice: '' };
    const index = pendingIndex;
    const answer = index >= 0 ? this.data.messages[index] : undefined;
    if (answer && answer.pending) {
      if (answer.content) {
        update['messages[' + index + '].pending'] = false;
        update['messages[' + index + '].stopped'] = true;
      } else {
        // Stopped before the first word: no empty "…" bubble left behind.
        update.messages = this.data.messages.filter((_, i) => i !== index);
        update.notice = '已停止';
      }
    }
    pendingIndex = -1;
    this.setData(update);
  },
});
