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

App({
  client: createClient({
    baseUrl: config.baseUrl,
    login: config.devLoginCode ? devLogin(config.devLoginCode) : undefined,
    // A tiny local list, only to show the pre-check; the server has the real filter.
    wordList: ['测试违禁词'],
  }),
});
