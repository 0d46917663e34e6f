// slow_clients.test.mjs - limits on connections: a client that dribbles its
// headers ("slowloris") or its body is cut off after --request-timeout while
// others are served; a long answer is not (the clock stops while a request is
// answered); headers over libmicrohttpd's buffer get 431; connections beyond
// --max-connections get 503 too_many_connections and are closed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startServer, post, MODEL_ID } from './server.mjs';

let srv;
before(async () => {
  srv = await startServer(['--request-timeout', '2', '--max-connections', '6']);
});
after(async () => {
  const { code } = await srv.stop();
  assert.equal(code, 0, srv.stderr());
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const connect = () => new Promise((res, rej) => {
  const c = net.connect(srv.port, '127.0.0.1', () => res(c));
  c.on('error', rej);
});
// Resolves with the milliseconds until the server closes c (from t0).
const closedAfter = (c, t0) => new Promise((res) => c.on('close', () => res(Date.now() - t0)));

test('a client dribbling its headers or its body is cut off; others are served', async () => {
  const t0 = Date.now();
  const headers = await connect();
  const body = await connect();
  const hClosed = closedAfter(headers, t0);
  const bClosed = closedAfter(body, t0);
  headers.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\n`);
  body.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
    'Content-Length: 1000\r\n\r\n{"prompt": "');
  const drip = setInterval(() => {
    if (!headers.destroyed) headers.write('X-Slow: 1\r\n');
    if (!body.destroyed) body.write('a');
  }, 200);
  const ok = await post(srv.url, '/v1/completions', { model: MODEL_ID, prompt: 'In',
    max_tokens: 2 });
  assert.equal(ok.status, 200, 'served while the slow ones wait');
  const [h, b] = await Promise.all([hClosed, bClosed]);
  clearInterval(drip);
  assert.ok(h >= 1900 && h < 6000, `headers cut after ${h} ms`);
  assert.ok(b >= 1900 && b < 6000, `body cut after ${b} ms`);
  assert.match(srv.stderr(), /closed \d+ connections that sent no whole request within 2 s/);
});

test('an answer that takes longer than the request timeout is not cut', async () => {
  // embeddings by the served model: sized from a first timing to take about 3 s
  const text = 'And God said, Let there be light: and there was light. '.repeat(12);
  const embed = (n) => post(srv.url, '/v1/embeddings', { model: MODEL_ID,
    input: Array(n).fill(text) });
  let t0 = Date.now();
  assert.equal((await embed(16)).status, 200);
  const n = Math.min(1400, Math.ceil(16 * 3000 / Math.max(1, Date.now() - t0))); // < --max-body
  t0 = Date.now();
  const r = await embed(n);
  const took = Date.now() - t0;
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.data.length, n);
  assert.ok(took > 2000 || n === 1400, `it took ${took} ms for ${n} inputs`);
});

test('headers larger than the buffer get 431', async () => {
  const r = await fetch(`${srv.url}/v1/models`, { headers: { 'X-Big': 'a'.repeat(100000) } });
  assert.equal(r.status, 431);
});

test('connections beyond --max-connections get 503 and are closed', async () => {
  const idle = [];
  for (let i = 0; i < 6; i++) idle.push(await connect());
  await sleep(100);
  const r = await new Promise((res) => {
    const c = net.connect(srv.port, '127.0.0.1', () =>
      c.write(`GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n`));
    let data = '';
    c.on('data', (d) => { data += d; });
    c.on('close', () => res(data));
  });
  assert.match(r, /^HTTP\/1\.1 503/);
  assert.match(r, /too_many_connections/);
  assert.match(r, /[Cc]onnection: close/);
  for (const c of idle) c.destroy();
  await sleep(200);
  const again = await fetch(`${srv.url}/v1/models`);
  assert.equal(again.status, 200);
});
