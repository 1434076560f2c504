'use strict';
// The official `openai` npm package against a real `mpchat serve`, unchanged but for its baseURL
// and an API key issued the way the acceptance suite issues one:
// `mpchat keys create --name acc --quiet` prints only the key, on its last line.

const test = require('node:test');
const assert = require('node:assert/strict');
const { default: OpenAI } = require('openai');
const { startStack, missingServer } = require('../helpers/servers.js');

const CI = process.env.CI === 'true';
const TEXT = Array.from({ length: 20 }, (_, i) => `片段${i} `).join('');
const ASK = [{ role: 'user', content: '你好' }];

async function issueKey(stack, ...options) {
  const out = await stack.cli(['keys', 'create', '--name', 'acc', '--quiet', ...options]);
  const lines = out.trim().split('\n');
  return lines[lines.length - 1].trim();
}

test('the openai npm package works unchanged', { timeout: 120_000 }, async (t) => {
  const missing = missingServer();
  if (missing) {
    if (CI) assert.fail(missing);
    t.skip(missing);
    return;
  }
  const stack = await startStack();
  try {
    const key = await issueKey(stack);
    assert.match(key, /^sk-mp-/);
    const client = new OpenAI({ apiKey: key, baseURL: `${stack.base}/v1`, maxRetries: 0 });

    await t.test('completion with usage', async () => {
      const completion = await client.chat.completions.create({ model: 'fake-model', messages: ASK });
      assert.equal(completion.choices[0].message.content, TEXT);
      assert.equal(completion.choices[0].finish_reason, 'stop');
      assert.equal(completion.usage.completion_tokens, 20);
    });

    await t.test('stream with usage', async () => {
      const stream = await client.chat.completions.create({ model: 'fake-model', messages: ASK, stream: true, stream_options: { include_usage: true } });
      let text = '';
      let usage = null;
      let finish = null;
      for await (const chunk of stream) {
        if (chunk.choices.length) {
          text += chunk.choices[0].delta.content || '';
          finish = chunk.choices[0].finish_reason || finish;
        }
        if (chunk.usage) usage = chunk.usage;
      }
      assert.equal(text, TEXT);
      assert.equal(finish, 'stop');
      assert.equal(usage.completion_tokens, 20);
    });

    await t.test('models', async () => {
      const ids = [];
      for await (const model of client.models.list()) ids.push(model.id);
      assert.deepEqual(ids, ['fake-model', 'default']);
    });

    await t.test('errors are the SDK\'s own', async () => {
      const wrong = new OpenAI({ apiKey: 'sk-mp-wrong', baseURL: `${stack.base}/v1`, maxRetries: 0 });
      await assert.rejects(wrong.chat.completions.create({ model: 'fake-model', messages: ASK }), OpenAI.AuthenticationError);
      await assert.rejects(client.chat.completions.create({ model: 'nope', messages: ASK }), (err) => err instanceof OpenAI.NotFoundError && err.code === 'model_not_found');
      await assert.rejects(client.chat.completions.create({ model: 'fake-model', messages: ASK, n: 2 }), OpenAI.BadRequestError);
    });

    await t.test('429 carries the retry-after the SDK retries by', async () => {
      const limitedKey = await issueKey(stack, '--rpm', '1');
      const limited = new OpenAI({ apiKey: limitedKey, baseURL: `${stack.base}/v1`, maxRetries: 0 });
      await limited.chat.completions.create({ model: 'fake-model', messages: ASK });
      await assert.rejects(limited.chat.completions.create({ model: 'fake-model', messages: ASK }), (err) => {
        assert.ok(err instanceof OpenAI.RateLimitError);
        assert.ok(Number(err.headers.get('retry-after')) > 0);
        return true;
      });
    });
  } finally {
    await stack.stop();
  }
});
