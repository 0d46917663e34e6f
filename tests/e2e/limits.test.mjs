// limits.test.mjs - a tenant's limits: max_concurrent, requests_per_minute
// and tokens_per_minute answer 429 with Retry-After (OpenAI's
// rate_limit_exceeded), and the request succeeds again once that time has
// passed; another tenant and the admin are not held back.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, MODEL_ID, callAs } from './server.mjs';

const ADMIN = 'limits-admin-key';
let srv;

const api = (key, method, path, body) => callAs(srv.url, key, method, path, body);

const tenant = async (name, limits) => {
  const t = await api(ADMIN, 'POST', '/v1/tenants', { name, limits });
  const k = await api(ADMIN, 'POST', `/v1/tenants/${t.body.id}/keys`);
  return k.body.key;
};

const small = (key, extra = {}) => api(key, 'POST', '/v1/completions',
  { model: MODEL_ID, prompt: 'In the beginning', max_tokens: 1, ...extra });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const is429 = (r) => {
  assert.equal(r.status, 429, r.text);
  assert.equal(r.body.error.code, 'rate_limit_exceeded');
  const after = Number(r.headers.get('retry-after'));
  assert.ok(Number.isInteger(after) && after >= 1, `Retry-After ${after}`);
  return after;
};

before(async () => { srv = await startServer(['--admin-key', ADMIN]); });
after(async () => {
  const { code } = await srv.stop();
  assert.equal(code, 0, srv.stderr());
});

test('max_concurrent: a second request while one runs is 429, then fine', async () => {
  const key = await tenant('one-at-a-time', { max_concurrent: 1 });
  const long = fetch(`${srv.url}/v1/completions`, { method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: MODEL_ID, prompt: 'And God said', max_tokens: 200,
      ignore_eos: true, stream: true }) });
  const first = await long;
  assert.equal(first.status, 200);
  const second = await small(key);
  const wait = is429(second);
  assert.match(second.body.error.message, /max_concurrent/);
  assert.equal(wait, 1);
  const other = await small(await tenant('neighbour', {}));
  assert.equal(other.status, 200, 'another tenant is not held back');
  assert.equal((await small(ADMIN)).status, 200, 'nor the admin');
  await first.text();
  await sleep(wait * 1000);
  assert.equal((await small(key)).status, 200);
  const emb = await api(key, 'POST', '/v1/embeddings', { input: 'x' });
  assert.equal(emb.status, 200, 'embeddings count too, and end');
});

test('requests_per_minute: a burst beyond a tenth of a minute waits for Retry-After', async () => {
  const key = await tenant('rpm', { requests_per_minute: 60 });
  let ok = 0;
  let refused = null;
  for (let i = 0; i < 15 && !refused; i++) {
    const r = await small(key);
    if (r.status === 200) ok++;
    else refused = r;
  }
  assert.ok(refused, 'the burst was cut');
  assert.ok(ok >= 10 && ok <= 11, `${ok} requests went through`);
  const wait = is429(refused);
  assert.match(refused.body.error.message, /requests_per_minute/);
  await sleep(wait * 1000 + 100);
  assert.equal((await small(key)).status, 200);
  const emb = await api(key, 'POST', '/v1/embeddings', { input: 'x' });
  assert.ok([200, 429].includes(emb.status));
});

test('tokens_per_minute: a request is charged its prompt and max_tokens; the next one waits',
  async () => {
  const key = await tenant('tpm', { tokens_per_minute: 1200 });  // 200 at once, 20 a second
  const big = await fetch(`${srv.url}/v1/completions`, { method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: MODEL_ID, prompt: 'In the beginning', max_tokens: 230,
      ignore_eos: true, stream: true }) });
  assert.equal(big.status, 200);
  const r = await small(key);
  const wait = is429(r);
  assert.match(r.body.error.message, /tokens_per_minute/);
  assert.ok(wait >= 1 && wait <= 5, `Retry-After ${wait}`);
  await sleep(wait * 1000 + 100);
  assert.equal((await small(key)).status, 200);
  assert.match(await big.text(), /data: \[DONE\]/);
});

test('a PATCH of the limits applies at once', async () => {
  const t = await api(ADMIN, 'POST', '/v1/tenants', { name: 'patched',
    limits: { requests_per_minute: 6 } });
  const k = await api(ADMIN, 'POST', `/v1/tenants/${t.body.id}/keys`);
  assert.equal((await small(k.body.key)).status, 200);
  is429(await small(k.body.key));
  await api(ADMIN, 'PATCH', `/v1/tenants/${t.body.id}`, { limits: { requests_per_minute: 0 } });
  for (let i = 0; i < 5; i++)
    assert.equal((await small(k.body.key)).status, 200);
});
