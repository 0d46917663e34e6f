// experiments.test.mjs - A/B experiments between the base model and an
// adapter: 1000 simulated users on a 70/30 split land 70±5% / 30±5%, each
// user always on the same variant; the response's model and the
// x-loraserve-variant header name the variant; feedback gives the expected
// means and the Welch test the p-value computed by hand (scipy, below);
// weights change live (canary ramp); another tenant's experiment and
// completions are 404; everything survives a restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, LORA_DIR, MODEL_ID, callAs } from './server.mjs';

const ADMIN = 'experiments-admin-key';
let srv;
let dataDir;
const keys = {};

const api = (key, method, path, body) => callAs(srv.url, key, method, path, body);

const ask = (key, model, user) => api(key, 'POST', '/v1/completions',
  { model, prompt: 'And God said', max_tokens: 1, ...(user ? { user } : {}) });

// Runs fn over items with n at a time.
async function pool(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  }));
  return out;
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'loraserve-exp-'));
  srv = await startServer(['--admin-key', ADMIN, '--adapter-dir', LORA_DIR], { dataDir });
  for (const name of ['a', 'b']) {
    const t = await api(ADMIN, 'POST', '/v1/tenants', { name });
    keys[name] = (await api(ADMIN, 'POST', `/v1/tenants/${t.body.id}/keys`)).body.key;
  }
  const l = await api(keys.a, 'POST', '/v1/adapters',
    { name: 'fortunes', path: 'kjv-tiny-lora-fortunes.gguf' });
  assert.equal(l.status, 200, l.text);
});
after(async () => {
  const { code } = await srv.stop();
  assert.equal(code, 0, srv.stderr());
  rmSync(dataDir, { recursive: true, force: true });
});

const users = Array.from({ length: 1000 }, (_, i) => `user-${i}`);
const placed = new Map();

test('1000 users on a 70/30 split: 70±5% / 30±5%, each always on one variant', async () => {
  const c = await api(keys.a, 'POST', '/v1/experiments', { name: 'tone',
    variants: [{ model: MODEL_ID, weight: 70 }, { model: 'fortunes', weight: 30 }],
    sticky: 'user' });
  assert.equal(c.status, 200, c.text);
  assert.equal(c.body.object, 'experiment');
  assert.deepEqual(c.body.variants, [{ model: MODEL_ID, weight: 70 },
    { model: 'fortunes', weight: 30 }]);
  const first = await pool(users, 8, (u) => ask(keys.a, 'tone', u));
  for (const [i, r] of first.entries()) {
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-loraserve-variant'), r.body.model);
    placed.set(users[i], { model: r.body.model, id: r.body.id });
  }
  const base = [...placed.values()].filter((p) => p.model === MODEL_ID).length;
  const lora = [...placed.values()].filter((p) => p.model === 'fortunes').length;
  assert.equal(base + lora, 1000);
  assert.ok(base >= 650 && base <= 750, `${base} on the base model`);
  const again = await pool(users.slice(0, 200), 8, (u) => ask(keys.a, 'tone', u));
  for (const [i, r] of again.entries())
    assert.equal(r.body.model, placed.get(users[i]).model, `${users[i]} moved`);
  const stream = await fetch(`${srv.url}/v1/completions`, { method: 'POST',
    headers: { Authorization: `Bearer ${keys.a}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: 'tone', prompt: 'In', max_tokens: 2, stream: true,
      user: users[0] }) });
  assert.equal(stream.headers.get('x-loraserve-variant'), placed.get(users[0]).model);
  await stream.text();
  const models = await api(keys.a, 'GET', '/v1/models');
  assert.ok(models.body.data.some((m) => m.id === 'tone'));
});

test('without a user, requests are spread at random', async () => {
  const rs = await pool(Array.from({ length: 100 }), 8, () => ask(keys.a, 'tone'));
  const lora = rs.filter((r) => r.body.model === 'fortunes').length;
  assert.ok(lora > 10 && lora < 50, `${lora} of 100 on the adapter`);
});

// The fixed feedback data set and its Welch test, computed with scipy 1.10:
//   a = [0.9, 0.7, 0.8, 1.0, 0.6, 0.75, 0.85, 0.9]   (control: the base model)
//   b = [0.5, 0.6, 0.4, 0.7, 0.55, 0.65]             (fortunes)
//   scipy.stats.ttest_ind(b, a, equal_var=False)
const A = [0.9, 0.7, 0.8, 1.0, 0.6, 0.75, 0.85, 0.9];
const B = [0.5, 0.6, 0.4, 0.7, 0.55, 0.65];
const EXPECTED = { p: 0.0021986068723036734, t: -3.8988297426850305, df: 11.746558466077458,
  lo: -0.38354372208264764, hi: -0.10812294458401905 };  // df and CI: Welch–Satterthwaite, t.ppf

test('feedback gives the expected means and the hand-computed p-value', async () => {
  const ids = (model) => users.map((u) => placed.get(u)).filter((p) => p.model === model)
    .map((p) => p.id);
  const post = (id, score) => api(keys.a, 'POST', '/v1/feedback', { id, score });
  const aIds = ids(MODEL_ID).slice(0, A.length);
  const bIds = ids('fortunes').slice(0, B.length);
  for (const [i, id] of aIds.entries()) {
    const r = await post(id, A[i]);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.variant, MODEL_ID);
  }
  for (const [i, id] of bIds.entries())
    assert.equal((await post(id, B[i])).status, 200);
  const g = await api(keys.a, 'GET', '/v1/experiments/tone');
  assert.equal(g.status, 200, g.text);
  const [va, vb] = g.body.variants;
  const mean = (x) => x.reduce((s, v) => s + v, 0) / x.length;
  assert.equal(va.stats.feedback.count, A.length);
  assert.ok(Math.abs(va.stats.feedback.mean - mean(A)) < 1e-12);
  assert.ok(Math.abs(vb.stats.feedback.mean - mean(B)) < 1e-12);
  assert.ok(va.stats.requests >= 650 && vb.stats.requests >= 250);
  assert.equal(va.stats.errors, 0);
  assert.ok(va.stats.latency.p95 >= va.stats.latency.mean * 0.5);
  assert.ok(va.stats.time_to_first_token.mean > 0);
  assert.ok(vb.stats.completion_tokens >= vb.stats.requests);
  const [cmp] = g.body.comparisons;
  assert.equal(cmp.control, MODEL_ID);
  assert.equal(cmp.variant, 'fortunes');
  assert.ok(Math.abs(cmp.p_value - EXPECTED.p) < 1e-9, `p ${cmp.p_value}`);
  assert.ok(Math.abs(cmp.t - EXPECTED.t) < 1e-9);
  assert.ok(Math.abs(cmp.df - EXPECTED.df) < 1e-9);
  assert.ok(Math.abs(cmp.confidence_interval[0] - EXPECTED.lo) < 1e-9);
  assert.ok(Math.abs(cmp.confidence_interval[1] - EXPECTED.hi) < 1e-9);
  // a score is overwritten, not added; out-of-range and unknown ids are refused
  assert.equal((await post(aIds[0], A[0])).status, 200);
  assert.equal((await api(keys.a, 'GET', '/v1/experiments/tone')).body.variants[0].stats
    .feedback.count, A.length);
  assert.equal((await post(aIds[0], 1.5)).status, 400);
  assert.equal((await post('cmpl-nope', 0.5)).status, 404);
  assert.equal((await api(keys.b, 'POST', '/v1/feedback', { id: aIds[1], score: 0 })).status,
    404, "another tenant's completion");
});

test('weights change live: a canary ramp moves new traffic at once', async () => {
  const p = await api(keys.a, 'PATCH', '/v1/experiments/tone',
    { variants: [{ model: MODEL_ID, weight: 0 }, { model: 'fortunes', weight: 100 }] });
  assert.equal(p.status, 200, p.text);
  const rs = await pool(users.slice(0, 50), 8, (u) => ask(keys.a, 'tone', u));
  assert.ok(rs.every((r) => r.body.model === 'fortunes'));
});

test("another tenant's experiment is 404; bad definitions are 400", async () => {
  assert.equal((await ask(keys.b, 'tone', 'u')).status, 404);
  assert.equal((await api(keys.b, 'GET', '/v1/experiments/tone')).status, 404);
  assert.equal((await api(keys.b, 'DELETE', '/v1/experiments/tone')).status, 404);
  assert.deepEqual((await api(keys.b, 'GET', '/v1/experiments')).body.data, []);
  const bad = [
    [{ name: 'x', variants: [] }, 'variants'],
    [{ name: 'x', variants: [{ model: 'nope', weight: 1 }] }, 'variants'],
    [{ name: 'x', variants: [{ model: 'fortunes', weight: 1 }] }, 'variants'], // a's adapter
    [{ name: 'x', variants: [{ model: MODEL_ID, weight: 0 }] }, 'variants'],
    [{ name: 'x', variants: [{ model: MODEL_ID, weight: -1 }] }, 'variants'],
    [{ name: MODEL_ID, variants: [{ model: MODEL_ID }] }, 'name'],
    [{ name: 'a b', variants: [{ model: MODEL_ID }] }, 'name'],
    [{ name: 'x', variants: [{ model: MODEL_ID }], sticky: 'session' }, 'sticky'],
  ];
  for (const [body, param] of bad) {
    const r = await api(keys.b, 'POST', '/v1/experiments', body);
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.body.error.param, param);
  }
  const dup = await api(keys.a, 'POST', '/v1/experiments', { name: 'tone',
    variants: [{ model: MODEL_ID }] });
  assert.equal(dup.status, 409);
  // the admin's experiments are shared: usable by tenants, not changeable
  const shared = await api(ADMIN, 'POST', '/v1/experiments', { name: 'house',
    variants: [{ model: MODEL_ID, weight: 1 }] });
  assert.equal(shared.status, 200, shared.text);
  const used = await ask(keys.b, 'house', 'u');
  assert.equal(used.status, 200);
  assert.equal((await api(keys.b, 'POST', '/v1/feedback', { id: used.body.id, score: 1 }))
    .status, 200, 'a tenant scores its own request of a shared experiment');
  assert.equal((await api(keys.a, 'POST', '/v1/feedback', { id: used.body.id, score: 0 }))
    .status, 404, "but not another tenant's");
  assert.equal((await api(keys.b, 'PATCH', '/v1/experiments/house',
    { variants: [{ model: MODEL_ID }] })).status, 403);
});

test('experiments and their records survive a restart; DELETE removes them', async () => {
  const before = (await api(keys.a, 'GET', '/v1/experiments/tone')).body;
  assert.equal((await srv.stop()).code, 0);
  srv = await startServer(['--admin-key', ADMIN, '--adapter-dir', LORA_DIR], { dataDir });
  await api(keys.a, 'POST', '/v1/adapters', { name: 'fortunes',
    path: 'kjv-tiny-lora-fortunes.gguf' });
  const after = (await api(keys.a, 'GET', '/v1/experiments/tone')).body;
  assert.deepEqual(after.variants.map((v) => [v.model, v.weight, v.stats.requests,
    v.stats.feedback.count]), before.variants.map((v) => [v.model, v.weight, v.stats.requests,
    v.stats.feedback.count]));
  assert.ok(Math.abs(after.comparisons[0].p_value - EXPECTED.p) < 1e-9);
  const d = await api(keys.a, 'DELETE', '/v1/experiments/tone');
  assert.equal(d.status, 200, d.text);
  assert.equal((await api(keys.a, 'GET', '/v1/experiments/tone')).status, 404);
  assert.equal((await ask(keys.a, 'tone', 'u')).status, 404);
});
