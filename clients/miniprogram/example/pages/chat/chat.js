'use strict';
// Chat page: sends a message, renders the answer as it streams, shows the AI label, removes a
// retracted answer. Opened with ?id=<conversation id> it first loads that conversation.

/** @returns {import('../../lib/mpchat').Client} */
function client() {
  return getApp().client;
}

/** @type {import('../../lib/mpchat').ChatHandle | null} */
let current = null;

Page({
  data: {
    /** @type {{id: string, role: string, content: string, pending?: boolean}[]} */
    messages: [],
    input: '',
    label: '',
    conversationId: '',
    sending: false,
    notice: '',
    scrollTo: '',
  },

  /** @param {Record<string, string | undefined>} query */
  onLoad(query) {
    if (query.id) this.open(query.id);
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
    if (current) current.abort();
    current = null;
  },

  /** @param {string} id */
  open(id) {
    if (current) current.abort();
    this.setData({ conversationId: id, messages: [], notice: '', sending: false });
    client()
      .listMessages(id, { limit: 50 })
      .then((page) => {
        const messages = page.items
          .filter((m) => m.role !== 'system' && m.status !== 'retracted')
          .map((m) => ({ id: m.id, role: m.role, content: m.content }));
        this.setData({ messages, scrollTo: messages.length ? 'm' + (messages.length - 1) : '' });
      })
      .catch((err) => this.setData({ notice: err.message || '加载失败' }));
  },

  newConversation() {
    if (current) current.abort();
    this.setData({ conversationId: '', messages: [], notice: '', label: '', sending: false });
  },

  /** @param {WechatMiniprogram.Input} e */
  onInput(e) {
    this.setData({ input: e.detail.value });
  },

  send() {
    const content = this.data.input.trim();
    if (!content || this.data.sending) return;
    const messages = this.data.messages.concat(
      { id: 'u' + Date.now(), role: 'user', content },
      { id: 'a' + Date.now(), role: 'assistant', content: '', pending: true },
    );
    const index = messages.length - 1;
    const key = 'messages[' + index + ']';
    this.setData({ messages, input: '', sending: true, notice: '', scrollTo: 'm' + index });
    let retracted = false;

    current = client().chat({
      content,
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
        // One path update per delta: the view layer gets only the changed text.
        this.setData({ [key + '.content']: ev.full, notice: '' });
      },
      onRetract: () => {
        retracted = true;
        const rest = this.data.messages.filter((_, i) => i !== index);
        this.setData({ messages: rest, notice: '该回答未通过内容安全检查，已撤回' });
      },
      onDone: () => finish(''),
      onError: (err) => finish(err.message || '出错了'),
    });

    /** @param {string} notice */
    const finish = (notice) => {
      current = null;
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
  },

  stop() {
    if (current) current.abort();
    current = null;
    this.setData({ sending: false });
  },
});
