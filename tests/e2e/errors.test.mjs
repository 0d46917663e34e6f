// errors.test.mjs - every refusal is OpenAI's error object with the right
// status, seen through raw fetch and through the openai client's error
// classes: bad JSON, wrong types, invalid UTF-8, body too large, context
// overflow, unknown model, unknown path, wrong method, queue full, shutdown.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import OpenAI from 'openai';
import { startServer, post, health, until } from './server.mjs';

let srv;
before(async () => { srv = await startServer(['--max-body', '4096']); });
after(async () => {
  const { code } = await srv.stop();
  assert.equal(code, 0, srv.stderr());
});

function assertError(r, status, { param = null, code, message } = {}) {
  assert.equal(r.status, status, r.text);
  assert.match(r.headers.get('content-type'), /application\/json/);
  const e = r.body?.error;
  assert.ok(e, `no error object in ${r.text}`);
  assert.deepEqual(Object.keys(e).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(typeof e.message, 'string');
  assert.ok(e.message.length > 0);
  assert.equal(e.type, status === 429 ? 'rate_limit_error'
    : status >= 500 ? 'server_error' : 'invalid_request_error');
  assert.equal(e.param, param);
  if (code !== undefined) assert.equal(e.code, code);
  if (message !== undefined) assert.match(e.message, message);
}

test('malformed JSON is 400', async () => {
  assertError(await post(srv.url, '/v1/completions', '{"prompt": "a",'), 400,
    { code: 'invalid_json' });
  assertError(await post(srv.url, '/v1/chat/completions', ''), 400);
  assertError(await post(srv.url, '/v1/completions', '[1, 2]'), 400);
});

test('wrong types are 400 with the param named', async () => {
  const cases = [
    [{ prompt: 5 }, 'prompt'],
    [{ prompt: 'a', max_tokens: '16' }, 'max_tokens'],
    [{ prompt: 'a', temperature: 'hot' }, 'temperature'],
    [{ prompt: 'a', stop: [1] }, 'stop'],
    [{ prompt: 'a', n: 0 }, 'n'],
    [{ prompt: 'a', stream: 'yes' }, 'stream'],
    [{ prompt: 'a', logit_bias: { x: 1 } }, 'logit_bias'],
    [{ prompt: [1, 99999] }, 'prompt'],
  ];
  for (const [body, param] of cases)
    assertError(await post(srv.url, '/v1/completions', body), 400, { param });
  assertError(await post(srv.url, '/v1/chat/completions', { messages: 'hi' }), 400,
    { param: 'messages' });
  assertError(await post(srv.url, '/v1/chat/completions',
    { messages: [{ role: 'user', content: 7 }] }), 400, { param: 'messages[0].content' });
  assertError(await post(srv.url, '/v1/chat/completions',
    { messages: [{ role: 'wizard', content: 'x' }] }), 400, { param: 'messages' });
  // Unknown fields are ignored.
  const ok = await post(srv.url, '/v1/completions',
    { prompt: 'a', max_tokens: 1, frobnicate: { x: [1] } });
  assert.equal(ok.status, 200);
});

test('the client library sees BadRequestError with the param', async () => {
  await assert.rejects(
    srv.client.completions.create({ prompt: 'a', temperature: 5 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 &&
      e.param === 'temperature' && /temperature/.test(e.message));
});

test('invalid UTF-8 in the body is 400', async () => {
  const raw = Buffer.concat([Buffer.from('{"prompt":"In the '), Buffer.from([0xff, 0xfe]),
    Buffer.from('"}')]);
  assertError(await post(srv.url, '/v1/completions', raw), 400, { code: 'invalid_encoding' });
  const surrogate = Buffer.concat([Buffer.from('{"messages":[{"role":"user","content":"'),
    Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}]}')]);
  assertError(await post(srv.url, '/v1/chat/completions', surrogate), 400);
});

test('a body over --max-body is 413, and the server goes on', async () => {
  const big = JSON.stringify({ prompt: 'x'.repeat(5000) });
  assertError(await post(srv.url, '/v1/completions', big), 413,
    { code: 'request_too_large', message: /4096/ });
  // Far over the limit: refused before the body is read.
  const huge = JSON.stringify({ prompt: 'x'.repeat(200000) });
  const r = await post(srv.url, '/v1/completions', huge).catch((e) => ({ status: 'reset', e }));
  if (r.status !== 'reset') assertError(r, 413);
  await assert.rejects(srv.client.completions.create({ prompt: 'y'.repeat(5000) }),
    (e) => e instanceof OpenAI.APIError && e.status === 413);
  const ok = await post(srv.url, '/v1/completions', { prompt: 'In', max_tokens: 2 });
  assert.equal(ok.status, 200);
});

test('a body sent in chunks over --max-body is 413', async () => {
  // No Content-Length: the limit is checked while the body streams in.
  const chunks = async function* gen() {
    yield Buffer.from('{"prompt":"');
    for (let i = 0; i < 10; i++) yield Buffer.from('y'.repeat(1000));
    yield Buffer.from('"}');
  };
  const r = await fetch(`${srv.url}/v1/completions`, {
    method: 'POST', body: chunks(), duplex: 'half',
    headers: { 'Content-Type': 'application/json' },
  });
  const text = await r.text();
  assertError({ status: r.status, headers: r.headers, body: JSON.parse(text), text }, 413);
});

test('prompt + max_tokens beyond the context is 400 with the numbers', async () => {
  const ids = Array(250).fill(261);
  ids[0] = 1;
  const r = await post(srv.url, '/v1/completions', { prompt: ids, max_tokens: 16 });
  assertError(r, 400, {
    param: 'prompt', code: 'context_length_exceeded',
    message: /context is 256 tokens; the prompt has 250 and max_tokens asks for 16/,
  });
  await assert.rejects(srv.client.completions.create({ prompt: 'a', max_tokens: 300 }),
    (e) => e instanceof OpenAI.BadRequestError && e.code === 'context_length_exceeded');
});

test('an unknown model is 404 model_not_found', async () => {
  const r = await post(srv.url, '/v1/completions', { model: 'gpt-4', prompt: 'a' });
  assertError(r, 404, { param: 'model', code: 'model_not_found', message: /gpt-4/ });
  await assert.rejects(
    srv.client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
  const m = await fetch(`${srv.url}/v1/models/nope`);
  assert.equal(m.status, 404);
});

test('an unknown path is 404, a wrong method 405', async () => {
  const r = await fetch(`${srv.url}/v1/nothing`);
  assertError({ status: r.status, headers: r.headers, body: await r.json() }, 404,
    { message: /GET \/v1\/nothing/ });
  const p = await post(srv.url, '/v1/frobnicate', { prompt: 'a' });
  assertError(p, 404);
  const g = await fetch(`${srv.url}/v1/completions`);
  assert.equal(g.headers.get('allow'), 'POST');
  assertError({ status: g.status, headers: g.headers, body: await g.json() }, 405,
    { code: 'method_not_allowed' });
  const d = await fetch(`${srv.url}/health`, { method: 'DELETE' });
  assert.equal(d.status, 405);
});

test('a full queue is 429', async () => {
  const busy = await startServer(['--parallel', '1', '--queue', '0']);
  try {
    const long = { prompt: 'In the beginning', max_tokens: 200, ignore_eos: true };
    const results = await Promise.all(
      Array.from({ length: 4 }, () => post(busy.url, '/v1/completions', long)));
    const statuses = results.map((r) => r.status).sort();
    assert.ok(statuses.includes(200), statuses.join());
    assert.ok(statuses.includes(429), statuses.join());
    for (const r of results) if (r.status === 429) assertError(r, 429, { code: 'queue_full' });
    const running = post(busy.url, '/v1/completions', long);
    await until(async () => (await health(busy.url)).slots.busy === 1);
    await assert.rejects(busy.client.completions.create(long),
      (e) => e instanceof OpenAI.RateLimitError && e.status === 429);
    assert.equal((await running).status, 200);
  } finally {
    assert.equal((await busy.stop()).code, 0, busy.stderr());
  }
});

// Sends raw HTTP/1.1 requests on one keep-alive socket; resolves each response's text.
function rawClient(port) {
  const sock = net.connect(port, '127.0.0.1');
  let buf = '';
  let waiter = null;
  sock.on('data', (d) => {
    buf += d;
    const m = /\r\n\r\n/.exec(buf);
    const len = /content-length: (\d+)/i.exec(buf);
    if (m && len && buf.length >= m.index + 4 + Number(len[1]) && waiter) {
      const end = m.index + 4 + Number(len[1]);
      const w = waiter;
      waiter = null;
      const out = buf.slice(0, end);
      buf = buf.slice(end);
      w(out);
    }
  });
  return {
    send(text) {
      return new Promise((res) => { waiter = res; sock.write(text); });
    },
    connected: new Promise((res) => sock.on('connect', res)),
    close() { sock.destroy(); },
  };
}

test('while shutting down: new requests are 503, running ones finish, exit 0', async () => {
  const s = await startServer();
  const c = rawClient(s.port);
  await c.connected;
  const first = await c.send('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.match(first, /^HTTP\/1\.1 200/);
  const long = post(s.url, '/v1/completions',
    { prompt: 'In the beginning', max_tokens: 200, ignore_eos: true, temperature: 0 });
  await until(async () => (await health(s.url)).slots.busy === 1);
  s.proc.kill('SIGTERM');
  await until(() => /no new connections/.test(s.stderr()));
  const body = '{"prompt":"a"}';
  const refused = await c.send('POST /v1/completions HTTP/1.1\r\nHost: x\r\n' +
    `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  assert.match(refused, /^HTTP\/1\.1 503/);
  const json = JSON.parse(refused.slice(refused.indexOf('\r\n\r\n') + 4));
  assert.equal(json.error.code, 'shutting_down');
  assert.equal(json.error.type, 'server_error');
  c.close();
  const r = await long;
  assert.equal(r.status, 200);
  assert.equal(r.body.usage.completion_tokens, 200);
  assert.equal(r.body.choices[0].finish_reason, 'length');
  const { code } = await s.exited;
  assert.equal(code, 0, s.stderr());
  await s.stop();
});
