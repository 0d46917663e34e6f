// fairness.test.mjs - admission is fair across tenants: tenant A fills the
// server with 32 long requests (4 slots, 28 waiting), then tenant B sends one
// short request. B's time to first token, counted in scheduler iterations
// (the x-loraserve-ttft-iterations header: machine speed does not enter),
// is within 2 iterations of what it is on an idle server, not behind A's
// queue; A's requests all finish, and a preempted one gives the same text as
// when it runs alone.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, MODEL_ID, callAs } from './server.mjs';

const ADMIN = 'fairness-admin-key';
let srv;
const keys = {};

const api = (key, path, body) => callAs(srv.url, key, 'POST', path, body);

const SHORT = { model: MODEL_ID, prompt: 'Jesus wept.', max_tokens: 1, temperature: 0 };
const LONG = { model: MODEL_ID, prompt: 'And God said, Let there be light', max_tokens: 200,
  ignore_eos: true, temperature: 0 };

before(async () => {
  srv = await startServer(['--admin-key', ADMIN, '--parallel', '4', '--queue', '64']);
  for (const name of ['a', 'b']) {
    const t = await api(ADMIN, '/v1/tenants', { name });
    keys[name] = (await api(ADMIN, `/v1/tenants/${t.body.id}/keys`, undefined)).body.key;
  }
});
after(async () => {
  const { code } = await srv.stop();
  assert.equal(code, 0, srv.stderr());
});

test("B's first token comes within 2 iterations of an idle server's, not behind A's queue",
  async () => {
    const idle = await api(keys.b, '/v1/completions', SHORT);
    assert.equal(idle.status, 200);
    const idleIters = Number(idle.headers.get('x-loraserve-ttft-iterations'));
    assert.ok(idleIters >= 1 && idleIters <= 2, `idle: ${idleIters} iterations`);
    const alone = await api(keys.a, '/v1/completions', LONG);
    const aRuns = Array.from({ length: 32 }, () => api(keys.a, '/v1/completions', LONG));
    // wait until A's requests hold every slot and the rest are queued
    for (let i = 0; i < 200; i++) {
      const h = await (await fetch(`${srv.url}/health`)).json();
      if (h.slots.busy === 4 && h.waiting >= 20) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    const h = await (await fetch(`${srv.url}/health`)).json();
    assert.equal(h.slots.busy, 4, JSON.stringify(h));
    const b = await api(keys.b, '/v1/completions', SHORT);
    assert.equal(b.status, 200);
    const bIters = Number(b.headers.get('x-loraserve-ttft-iterations'));
    assert.ok(bIters <= idleIters + 2, `B waited ${bIters} iterations (idle ${idleIters})`);
    assert.equal(b.body.choices[0].text, idle.body.choices[0].text);
    const done = await Promise.all(aRuns);
    for (const r of done) {
      assert.equal(r.status, 200);
      assert.equal(r.body.usage.completion_tokens, 200);
      assert.equal(r.body.choices[0].text, alone.body.choices[0].text);
    }
    const m = await (await fetch(`${srv.url}/metrics`)).text();
    const pre = Number(/^loraserve_preemptions_total (\d+)/m.exec(m)[1]);
    assert.ok(pre >= 1, 'B got its slot by preempting one of A');
  });
