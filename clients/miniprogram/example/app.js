'use strict';
// The demo app: one mpchat client shared by every page (getApp().client).

const { createClient } = require('./lib/mpchat.js');
const config = require('./config.js');

/**
 * With a dev code the SDK "logs in" with that fixed code instead of wx.login, so a dev server
 * keeps the same user (and its history) across launches and token renewals.
 * @param {string} code
 */
function devLogin(code) {
  /** @param {{success?: (res: {code: string}) => void}} option */
  return function (option) {
    if (option.success) option.success({ code: code });
  };
}

/**
 * Offline payments (config.fakeWechatPay, a server configured with `mpchat fake-wechatpay`): no
 * WeChat payment sheet (it cannot pay fake orders), but a confirm dialog, then the fake's
 * `/_control/pay`, which notifies the service as WeChat Pay would. The order id is learned from
 * the service's answer to POST /api/v1/orders, the way WeChat Pay knows an order by its prepay_id.
 * @param {string} base the fake WeChat Pay, e.g. http://127.0.0.1:9300
 */
function fakePayments(base) {
  /** @type {Record<string, string>} */
  const orderOf = {};
  /** @param {any} option */
  function request(option) {
    const success = option.success;
    return wx.request(Object.assign({}, option, {
      /** @param {any} res */
      success(res) {
        const body = res.data;
        if (body && typeof body === 'object' && body.order_id && body.payment) orderOf[body.payment.package] = body.order_id;
        if (success) success(res);
      },
    }));
  }
  /** @param {any} option */
  function requestPayment(option) {
    const fail = (/** @type {string} */ errMsg) => option.fail && option.fail({ errMsg });
    wx.showModal({
      title: '模拟支付',
      content: '离线演示（fake WeChat Pay），确认支付？',
      success(choice) {
        if (!choice.confirm) return fail('requestPayment:fail cancel');
        wx.request({
          url: base + '/_control/pay',
          method: 'POST',
          header: { 'content-type': 'application/json' },
          data: { out_trade_no: orderOf[option.package] || '', notify: 'normal' },
          success(res) {
            if (res.statusCode === 200) option.success && option.success({ errMsg: 'requestPayment:ok' });
            else fail('requestPayment:fail ' + res.statusCode);
          },
          fail: (err) => fail(err.errMsg),
        });
      },
      fail: () => fail('requestPayment:fail cancel'),
    });
  }
  return { request, requestPayment };
}

const fake = config.fakeWechatPay ? fakePayments(config.fakeWechatPay) : null;
// WeChat Cloud Run: log in through wx.cloud.callContainer (config.cloud.env set).
const cloud = config.cloud && config.cloud.env ? config.cloud : undefined;

App({
  client: createClient({
    baseUrl: config.baseUrl,
    login: config.devLoginCode && !cloud ? devLogin(config.devLoginCode) : undefined,
    cloud: cloud,
    // A tiny local list, only to show the pre-check; the server has the real filter.
    wordList: ['测试违禁词'],
    // Every new balance (from /me, an answer's `done`, a purchase, a 402) goes to the page on
    // screen, which shows it.
    onQuota(quota) {
      const app = getApp();
      if (app && app.quotaListener) app.quotaListener(quota);
    },
    request: fake ? fake.request : undefined,
    requestPayment: fake ? fake.requestPayment : undefined,
  }),
  /** @type {((quota: import('./lib/mpchat').Quota) => void) | undefined} */
  quotaListener: undefined,
  onLaunch() {
    // callContainer needs wx.cloud initialised once (any environment: each call names its own).
    if (cloud) wx.cloud.init();
  },
});
