'use strict';
// Where the demo talks to, and how it logs in. Edit these two lines, nothing else.

module.exports = {
  // The mpchat service. In DevTools tick "不校验合法域名" (or keep urlCheck false in
  // project.config.json) to use http://127.0.0.1; on a phone it must be an https legal domain.
  baseUrl: 'http://127.0.0.1:8000',
  // Dev login: with the server in MPCHAT_AUTH_MODE=dev any code is a user, and a fixed code keeps
  // the same user across launches (wx.login codes change every time). Set to '' to use wx.login
  // with a real appid against a server in `wechat` mode.
  devLoginCode: 'demo-user',
};
