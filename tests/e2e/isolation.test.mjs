// isolation.test.mjs - two tenants on one server: each one's adapters and
// vector stores are its own (the other's answer 404, exactly like ones that
// do not exist, in lists too), the same adapter name means each tenant's own
// adapter, the admin's adapters and stores are shared (usable, not
// changeable by tenants), and retrieval in a request obeys the same rules.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, LORA_DIR, MODEL_ID, callAs } from './server.mjs';

const ADMIN = 'isolation-admin-key';
let srv;
const keys = {};

const api = (key, method, path, body) => callAs(srv.url, key, method, path, body);

const complete = (key, model, extra = {}) => api(key, 'POST', '/v1/completions', {
  model, prompt: 'In the beginning', max_tokens: 12, temperature: 0, ...extra });

before(async () => {
  srv = await startServer(['--admin-key', ADMIN, '--adapter-dir', LORA_DIR]);
  for (const name of ['a', 'b']) {
    const t = await api(ADMIN, 'POST', '/v1/tenants', { name: `tenant-${name}` });
    const k = await api(ADMIN, 'POST', `/v1/tenants/${t.body.id}/keys`);
    keys[name] = k.body.key;
  }
  const load = async (key, name, file) => {
    const r = await api(key, 'POST', '/v1/adapters', { name, path: `kjv-tiny-lora-${file}.gguf` });
    assert.equal(r.status, 200, r.text);
  };
  await load(keys.a, 'style', 'fortunes');
  await load(keys.b, 'style', 'jargon');
  await load(keys.b, 'secret', 'devil');
  await load(ADMIN, 'shared', 'devil');
});
after(async () => {
  const { code } = await srv.stop();
  assert.equal(code, 0, srv.stderr());
});

test("each tenant's 'style' is its own adapter", async () => {
  const a = await complete(keys.a, 'style');
  const b = await complete(keys.b, 'style');
  assert.equal(a.status, 200, a.text);
  assert.equal(b.status, 200, b.text);
  assert.equal(a.body.model, 'style');
  assert.equal(a.headers.get('x-loraserve-adapter-version'), 'style@1');
  assert.notEqual(a.body.choices[0].text, b.body.choices[0].text);
  // the same adapters as the admin sees them by their qualified names
  const list = await api(ADMIN, 'GET', '/v1/adapters');
  const names = list.body.data.map((x) => x.name);
  assert.equal(names.filter((n) => n.endsWith('/style')).length, 2, names.join(','));
});

test("another tenant's adapter is 404, as if it did not exist", async () => {
  const own = await complete(keys.b, 'secret');
  assert.equal(own.status, 200, own.text);
  const other = await complete(keys.a, 'secret');
  const none = await complete(keys.a, 'no-such-adapter');
  assert.equal(other.status, 404);
  assert.equal(none.status, 404);
  assert.equal(other.body.error.code, none.body.error.code);
  assert.equal(other.body.error.message.replace('secret', 'X'),
    none.body.error.message.replace('no-such-adapter', 'X'));
  assert.equal((await api(keys.a, 'GET', '/v1/adapters/secret')).status, 404);
  assert.equal((await api(keys.a, 'GET', '/v1/models/secret')).status, 404);
  assert.equal((await api(keys.a, 'DELETE', '/v1/adapters/secret')).status, 404);
  const qualified = await api(keys.a, 'GET', '/v1/adapters');
  const ids = qualified.body.data.map((x) => x.name).sort();
  assert.deepEqual(ids, ['shared', 'style']);
  const models = await api(keys.a, 'GET', '/v1/models');
  assert.deepEqual(models.body.data.map((m) => m.id).sort(), [MODEL_ID, 'shared', 'style']);
  // no way to name another tenant's adapter by its key
  const bKey = (await api(ADMIN, 'GET', '/v1/adapters')).body.data
    .map((x) => x.name).find((n) => n.endsWith('/secret'));
  assert.equal((await complete(keys.a, bKey)).status, 404);
  assert.equal((await complete(ADMIN, bKey)).status, 200);
});

test("the admin's adapters are shared: tenants use them, cannot change them", async () => {
  const use = await complete(keys.a, 'shared');
  assert.equal(use.status, 200, use.text);
  const admin = await complete(ADMIN, 'shared');
  assert.equal(use.body.choices[0].text, admin.body.choices[0].text);
  // deleting 'shared' as a tenant addresses the tenant's own (absent) 'shared'
  assert.equal((await api(keys.a, 'DELETE', '/v1/adapters/shared')).status, 404);
  assert.equal((await complete(keys.b, 'shared')).status, 200);
  // a tenant's own adapter of the same name shadows the shared one, for it alone
  const mine = await api(keys.a, 'POST', '/v1/adapters', { name: 'shared',
    path: 'kjv-tiny-lora-fortunes.gguf' });
  assert.equal(mine.status, 200, mine.text);
  const a2 = await complete(keys.a, 'shared');
  const b2 = await complete(keys.b, 'shared');
  assert.notEqual(a2.body.choices[0].text, b2.body.choices[0].text);
  assert.equal(b2.body.choices[0].text, admin.body.choices[0].text);
});

test("vector stores: another tenant's is 404 everywhere; a shared one is read-only", async () => {
  const mk = async (key, name) => {
    const c = await api(key, 'POST', '/v1/vector_stores', { name });
    assert.equal(c.status, 200, c.text);
    const d = await api(key, 'POST', `/v1/vector_stores/${c.body.id}/documents`,
      { documents: [{ id: 'd1', text: `The secret word of ${name} is pomegranate.` }] });
    assert.equal(d.status, 200, d.text);
    return c.body.id;
  };
  const aStore = await mk(keys.a, 'a-notes');
  const shared = await mk(ADMIN, 'handbook');
  const paths = [['GET', `/v1/vector_stores/${aStore}`], ['DELETE', `/v1/vector_stores/${aStore}`],
    ['GET', `/v1/vector_stores/${aStore}/documents`],
    ['POST', `/v1/vector_stores/${aStore}/documents`, { documents: [{ text: 'x' }] }],
    ['DELETE', `/v1/vector_stores/${aStore}/documents/d1`],
    ['POST', `/v1/vector_stores/${aStore}/search`, { query: 'secret word' }]];
  for (const [m, p, body] of paths) {
    const r = await api(keys.b, m, p, body);
    const missing = await api(keys.b, m, p.replace(aStore, 'vs_000000000000000000000000'), body);
    assert.equal(r.status, 404, `${m} ${p}: ${r.text}`);
    assert.equal(r.body.error.message.replace(aStore, 'X'),
      missing.body.error.message.replace('vs_000000000000000000000000', 'X'));
  }
  const listB = await api(keys.b, 'GET', '/v1/vector_stores');
  assert.deepEqual(listB.body.data.map((v) => v.id), [shared]);
  const listA = await api(keys.a, 'GET', '/v1/vector_stores');
  assert.deepEqual(listA.body.data.map((v) => v.id).sort(), [aStore, shared].sort());
  const search = await api(keys.b, 'POST', `/v1/vector_stores/${shared}/search`,
    { query: 'secret word' });
  assert.equal(search.status, 200, search.text);
  const write = await api(keys.b, 'POST', `/v1/vector_stores/${shared}/documents`,
    { documents: [{ text: 'vandalism' }] });
  assert.equal(write.status, 403, write.text);
  assert.equal((await api(keys.b, 'DELETE', `/v1/vector_stores/${shared}`)).status, 403);
  // retrieval in a request: own and shared stores work, another tenant's is 404
  const rag = (key, store) => api(key, 'POST', '/v1/chat/completions', { model: MODEL_ID,
    messages: [{ role: 'user', content: 'What is the secret word?' }], max_tokens: 2,
    retrieval: { vector_store_ids: [store] } });
  assert.equal((await rag(keys.a, aStore)).status, 200);
  assert.equal((await rag(keys.b, shared)).status, 200);
  const denied = await rag(keys.b, aStore);
  assert.equal(denied.status, 404, denied.text);
  assert.ok(!denied.text.includes('pomegranate'));
  // the admin sees and may change everything
  assert.equal((await api(ADMIN, 'GET', `/v1/vector_stores/${aStore}`)).status, 200);
});
