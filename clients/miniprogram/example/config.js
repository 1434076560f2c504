'use strict';
// Where the demo talks to, how it logs in, and how it pays. Edit these lines, nothing else.

module.exports = {
  // The mpchat service. In DevTools tick "不校验合法域名" (or keep urlCheck false in
  // project.config.json) to use http://127.0.0.1; on a phone it must be an https legal domain.
  baseUrl: 'http://127.0.0.1:8000',
  // Dev login: with the server in MPCHAT_AUTH_MODE=dev any code is a user, and a fixed code keeps
  // the same user across launches (wx.login codes change every time). Set to '' to use wx.login
  // with a real appid against a server in `wechat` mode.
  devLoginCode: 'demo-user',
  // Offline payments: with the server paying through `mpchat fake-wechatpay` (docs/quota.md), the
  // fake's address, e.g. 'http://127.0.0.1:9300'; 购买 then "pays" there after a confirm dialog
  // instead of WeChat's payment sheet. '' uses wx.requestPayment (a real merchant and appid).
  fakeWechatPay: '',
  // WeChat Cloud Run (docs/deployment.md): the environment id and the login service (public access
  // off, MPCHAT_CLOUDRUN_HEADER_AUTH=login). With `env` set, logins go through
  // wx.cloud.callContainer and devLoginCode is not used; baseUrl is then the public service's
  // ICP-filed domain, where answers stream.
  cloud: { env: '', service: 'mpchat-login' },
};
