'use strict';
// History page: the caller's conversations, newest first; open one, delete one.

/** @returns {import('../../lib/mpchat').Client} */
function client() {
  return getApp().client;
}

Page({
  data: {
    /** @type {{id: string, title: string, updated_at: string, message_count: number}[]} */
    items: [],
    next: '',
    loading: false,
    error: '',
  },

  onShow() {
    this.load(true);
  },

  onPullDownRefresh() {
    this.load(true);
  },

  onReachBottom() {
    if (this.data.next) this.load(false);
  },

  /** @param {boolean} fresh */
  load(fresh) {
    if (this.data.loading) return;
    this.setData({ loading: true, error: '' });
    client()
      .listConversations({ limit: 20, before: fresh ? undefined : this.data.next })
      .then((page) => {
        this.setData({ items: fresh ? page.items : this.data.items.concat(page.items), next: page.next || '' });
      })
      .catch((err) => this.setData({ error: err.message || '加载失败' }))
      .then(() => {
        this.setData({ loading: false });
        wx.stopPullDownRefresh();
      });
  },

  /** @param {WechatMiniprogram.BaseEvent} e */
  open(e) {
    // The chat page is a tab: switchTab takes no query, so hand the id over through the app.
    getApp().openConversation = e.currentTarget.dataset.id;
    wx.switchTab({ url: '/pages/chat/chat' });
  },

  newConversation() {
    getApp().openConversation = '';
    wx.switchTab({ url: '/pages/chat/chat' });
  },

  /** @param {WechatMiniprogram.BaseEvent} e */
  remove(e) {
    const id = e.currentTarget.dataset.id;
    wx.showModal({
      title: '删除对话',
      content: '删除后消息将从服务器上彻底清除，无法恢复。',
      confirmText: '删除',
      confirmColor: '#e64340',
      success: (res) => {
        if (!res.confirm) return;
        client()
          .deleteConversation(id)
          .then(() => {
            this.setData({ items: this.data.items.filter((c) => c.id !== id) });
            wx.showToast({ title: '已删除', icon: 'success' });
          })
          .catch((err) => wx.showToast({ title: err.message || '删除失败', icon: 'none' }));
      },
    });
  },
});
