// tenants.test.mjs - --admin-key, tenants and their keys: the admin API
// (create, list, get, patch, delete, keys), Bearer keys on every route but
// /health (401 without or with a wrong or revoked key, 403 for a tenant's
// key on the admin API), the openai client with a tenant's key, keys that
// survive a restart, and the open mode without an admin key.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { startServer, MODEL_ID, callAs } from './server.mjs';

const ADMIN = 'admin-secret-for-tests';
let srv;
let dataDir;

const api = (method, path, key, body) => callAs(srv.url, key, method, path, body);

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'loraserve-tenants-'));
  srv = await startServer(['--admin-key', ADMIN], { dataDir });
});
after(async () => {
  const { code } = await srv.stop();
  assert.equal(code, 0, srv.stderr());
  rmSync(dataDir, { recursive: true, force: true });
});

test('every route but /health needs a key; the admin key opens them', async () => {
  assert.equal((await api('GET', '/health')).status, 200);
  const none = await api('GET', '/v1/models');
  assert.equal(none.status, 401);
  assert.equal(none.body.error.code, 'missing_api_key');
  assert.equal(none.headers.get('www-authenticate'), 'Bearer');
  const wrong = await api('GET', '/v1/models', 'sk-000000000000-' + '0'.repeat(40));
  assert.equal(wrong.status, 401);
  assert.equal(wrong.body.error.code, 'invalid_api_key');
  const basic = await fetch(`${srv.url}/v1/models`, { headers: { Authorization: `Basic ${ADMIN}` } });
  assert.equal(basic.status, 401);
  const ok = await api('GET', '/v1/models', ADMIN);
  assert.equal(ok.status, 200);
  const post = await api('POST', '/v1/completions', null, { prompt: 'In', max_tokens: 1 });
  assert.equal(post.status, 401);
  assert.ok(!srv.stderr().includes(ADMIN), 'the admin key is never printed');
});

test('the admin makes a tenant and a key; the key works with the openai client', async () => {
  const t = await api('POST', '/v1/tenants', ADMIN, { name: 'team-a',
    limits: { max_concurrent: 4, requests_per_minute: 600, tokens_per_minute: 100000 } });
  assert.equal(t.status, 200, t.text);
  assert.match(t.body.id, /^ten_[0-9a-f]{16}$/);
  assert.equal(t.body.object, 'tenant');
  assert.deepEqual(t.body.limits, { max_concurrent: 4, requests_per_minute: 600,
    tokens_per_minute: 100000 });
  const k = await api('POST', `/v1/tenants/${t.body.id}/keys`, ADMIN);
  assert.equal(k.status, 200, k.text);
  assert.match(k.body.id, /^key_[0-9a-f]{12}$/);
  assert.equal(k.body.tenant_id, t.body.id);
  const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: k.body.key, maxRetries: 0 });
  const c = await client.completions.create({ model: MODEL_ID, prompt: 'In the beginning',
    max_tokens: 2 });
  assert.equal(c.choices.length, 1);
  const bad = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'sk-nope', maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => e.status === 401);
  // the key's secret is shown once: the tenant's card counts keys, never shows them
  const g = await api('GET', `/v1/tenants/${t.body.id}`, ADMIN);
  assert.equal(g.body.keys, 1);
  assert.ok(!g.text.includes(k.body.key));
  const l = await api('GET', '/v1/tenants', ADMIN);
  assert.ok(l.body.data.some((x) => x.id === t.body.id && x.name === 'team-a'));
  assert.ok(!srv.stderr().includes(k.body.key), 'keys are never printed');
});

test("a tenant's key cannot use the admin API", async () => {
  const t = await api('POST', '/v1/tenants', ADMIN, { name: 'team-b' });
  const k = await api('POST', `/v1/tenants/${t.body.id}/keys`, ADMIN);
  for (const [m, p, body] of [['GET', '/v1/tenants'], ['POST', '/v1/tenants', { name: 'x' }],
    ['PATCH', `/v1/tenants/${t.body.id}`, { limits: { max_concurrent: 99 } }],
    ['POST', `/v1/tenants/${t.body.id}/keys`], ['DELETE', `/v1/tenants/${t.body.id}`]]) {
    const r = await api(m, p, k.body.key, body);
    assert.equal(r.status, 403, `${m} ${p}: ${r.text}`);
    assert.equal(r.body.error.code, 'permission_denied');
  }
  const still = await api('GET', `/v1/tenants/${t.body.id}`, ADMIN);
  assert.equal(still.body.limits.max_concurrent, 0);
});

test('PATCH changes limits; a revoked key and a deleted tenant stop working at once', async () => {
  const t = await api('POST', '/v1/tenants', ADMIN, { name: 'team-c' });
  const p = await api('PATCH', `/v1/tenants/${t.body.id}`, ADMIN,
    { limits: { tokens_per_minute: 5000 } });
  assert.equal(p.status, 200, p.text);
  assert.deepEqual(p.body.limits, { max_concurrent: 0, requests_per_minute: 0,
    tokens_per_minute: 5000 });
  const k1 = await api('POST', `/v1/tenants/${t.body.id}/keys`, ADMIN);
  const k2 = await api('POST', `/v1/tenants/${t.body.id}/keys`, ADMIN);
  assert.notEqual(k1.body.key, k2.body.key);
  assert.equal((await api('GET', '/v1/models', k1.body.key)).status, 200);
  const d = await api('DELETE', `/v1/tenants/${t.body.id}/keys/${k1.body.id}`, ADMIN);
  assert.deepEqual(d.body, { id: k1.body.id, object: 'api_key.deleted', deleted: true });
  assert.equal((await api('GET', '/v1/models', k1.body.key)).status, 401);
  assert.equal((await api('GET', '/v1/models', k2.body.key)).status, 200);
  const again = await api('DELETE', `/v1/tenants/${t.body.id}/keys/${k1.body.id}`, ADMIN);
  assert.equal(again.status, 404);
  const dt = await api('DELETE', `/v1/tenants/${t.body.id}`, ADMIN);
  assert.equal(dt.status, 200, dt.text);
  assert.equal((await api('GET', '/v1/models', k2.body.key)).status, 401);
  assert.equal((await api('GET', `/v1/tenants/${t.body.id}`, ADMIN)).status, 404);
});

test('bad admin requests are OpenAI errors', async () => {
  const t = await api('POST', '/v1/tenants', ADMIN, { name: 'team-d' });
  const cases = [
    ['POST', '/v1/tenants', {}, 400, 'name'],
    ['POST', '/v1/tenants', { name: '' }, 400, 'name'],
    ['POST', '/v1/tenants', { name: 'x'.repeat(257) }, 400, 'name'],
    ['POST', '/v1/tenants', { name: 'x', limits: { max_concurrent: -1 } }, 400,
      'limits.max_concurrent'],
    ['POST', '/v1/tenants', { name: 'x', limits: { rpm: 5 } }, 400, 'limits'],
    ['POST', '/v1/tenants', { name: 'x', limits: [] }, 400, 'limits'],
    ['PATCH', `/v1/tenants/${t.body.id}`, { name: 'renamed' }, 400, 'name'],
    ['PATCH', `/v1/tenants/${t.body.id}`, { limits: { tokens_per_minute: 1.5 } }, 400,
      'limits.tokens_per_minute'],
    ['GET', '/v1/tenants/ten_0000000000000000', undefined, 404, null],
    ['POST', '/v1/tenants/ten_0000000000000000/keys', undefined, 404, null],
    ['DELETE', `/v1/tenants/${t.body.id}/keys/key_000000000000`, undefined, 404, null],
    ['PUT', `/v1/tenants/${t.body.id}`, {}, 405, null],
    ['GET', `/v1/tenants/${t.body.id}/keys/x/y`, undefined, 404, null],
  ];
  for (const [m, p, body, status, param] of cases) {
    const r = await api(m, p, ADMIN, body);
    assert.equal(r.status, status, `${m} ${p} ${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.body.error.param, param, r.text);
  }
  const junk = await fetch(`${srv.url}/v1/tenants`, { method: 'POST',
    headers: { Authorization: `Bearer ${ADMIN}` }, body: '{"name":' });
  assert.equal(junk.status, 400);
});

test('tenants and keys survive a restart', async () => {
  const t = await api('POST', '/v1/tenants', ADMIN, { name: 'kept',
    limits: { max_concurrent: 3 } });
  const k = await api('POST', `/v1/tenants/${t.body.id}/keys`, ADMIN);
  assert.equal((await srv.stop()).code, 0);
  srv = await startServer(['--admin-key', ADMIN], { dataDir });
  assert.equal((await api('GET', '/v1/models', k.body.key)).status, 200);
  const g = await api('GET', `/v1/tenants/${t.body.id}`, ADMIN);
  assert.equal(g.body.name, 'kept');
  assert.equal(g.body.limits.max_concurrent, 3);
  // a different admin key: the old one no longer opens anything
  assert.equal((await srv.stop()).code, 0);
  srv = await startServer(['--admin-key', 'another'], { dataDir });
  assert.equal((await api('GET', '/v1/models', ADMIN)).status, 401);
  assert.equal((await api('GET', '/v1/models', k.body.key)).status, 200);
  assert.equal((await srv.stop()).code, 0);
  srv = await startServer([], { dataDir, env: { LORASERVE_ADMIN_KEY: ADMIN } });
  assert.equal((await api('GET', '/v1/models', ADMIN)).status, 200);
});

test('without --admin-key the server is open and says so; there are no tenants', async () => {
  const open = await startServer([]);
  try {
    assert.match(open.stderr(), /no --admin-key: the API is open/);
    const r = await fetch(`${open.url}/v1/models`);
    assert.equal(r.status, 200);
    const t = await fetch(`${open.url}/v1/tenants`, { method: 'POST',
      headers: { 'Content-Type': 'application/json' }, body: '{"name":"x"}' });
    assert.equal(t.status, 400);
    assert.equal((await t.json()).error.code, 'auth_disabled');
  } finally {
    assert.equal((await open.stop()).code, 0);
  }
});
