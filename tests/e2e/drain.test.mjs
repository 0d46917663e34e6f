// drain.test.mjs - POST /drain (the admin's): no new work (503 "draining",
// /health 503 so probes and balancers move away) while a running stream
// finishes; DELETE /drain takes work again; a tenant may not drain; SIGTERM
// after a drain still finishes what runs and exits 0; the shutdown deadline
// (--shutdown-timeout) cuts a request that runs past it; --drain N keeps
// serving N seconds after SIGTERM with /health 503 and closing connections,
// then stops like a plain SIGTERM; a second signal during it stops at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, callAs, until, BIN, MODEL, MODEL_ID } from './server.mjs';

const ADMIN = 'drain-admin-key';
const LONG = { model: MODEL_ID, prompt: 'In the beginning', max_tokens: 200, ignore_eos: true,
  stream: true };

const stream = (s, key, body = LONG) => fetch(`${s.url}/v1/completions`, { method: 'POST',
  body: JSON.stringify(body),
  headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' } });

test('a drain refuses new work while running requests finish, and ends', async () => {
  const s = await startServer(['--admin-key', ADMIN]);
  try {
    const t = await callAs(s.url, ADMIN, 'POST', '/v1/tenants', { name: 't' });
    const key = (await callAs(s.url, ADMIN, 'POST', `/v1/tenants/${t.body.id}/keys`)).body.key;
    const running = await stream(s, key);
    assert.equal(running.status, 200);
    assert.equal((await callAs(s.url, key, 'POST', '/drain')).status, 403);
    const d = await callAs(s.url, ADMIN, 'POST', '/drain');
    assert.equal(d.status, 200, d.text);
    assert.equal(d.body.draining, true);
    const refused = await callAs(s.url, key, 'POST', '/v1/completions',
      { model: MODEL_ID, prompt: 'x', max_tokens: 1 });
    assert.equal(refused.status, 503);
    assert.equal(refused.body.error.code, 'draining');
    const health = await fetch(`${s.url}/health`);
    assert.equal(health.status, 503);
    assert.equal((await health.json()).status, 'draining');
    assert.equal((await fetch(`${s.url}/metrics`)).status, 200, 'metrics are still read');
    const text = await running.text();
    assert.match(text, /data: \[DONE\]\n\n$/);
    assert.match(text, /"finish_reason":"length"/, 'it ran to its max_tokens');
    assert.match(s.stderr(), /draining: no new work/);
    assert.equal((await callAs(s.url, ADMIN, 'DELETE', '/drain')).body.draining, false);
    assert.equal((await fetch(`${s.url}/health`)).status, 200);
    const ok = await callAs(s.url, key, 'POST', '/v1/completions',
      { model: MODEL_ID, prompt: 'x', max_tokens: 1 });
    assert.equal(ok.status, 200);
    // drained, then SIGTERM: what runs still finishes and the exit is clean
    const last = await stream(s, key);
    await callAs(s.url, ADMIN, 'POST', '/drain');
    s.proc.kill('SIGTERM');
    assert.match(await last.text(), /data: \[DONE\]\n\n$/);
    const { code } = await s.exited;
    assert.equal(code, 0, s.stderr());
  } finally {
    await s.stop();
  }
});

test('the shutdown deadline cuts what runs past it; the exit is still 0', async () => {
  const s = await startServer(['--shutdown-timeout', '0', '--ctx', '256']);
  try {
    const r = await stream(s, 'none', { ...LONG, max_tokens: 240 });
    assert.equal(r.status, 200);
    s.proc.kill('SIGTERM');
    const text = await r.text().catch(() => '');
    const { code } = await s.exited;
    assert.equal(code, 0, s.stderr());
    assert.match(s.stderr(), /shutdown deadline passed/);
    assert.ok(!/"finish_reason":"length"/.test(text), 'the stream was cut before its end');
  } finally {
    await s.stop();
  }
});

test('--drain: after SIGTERM it serves on with /health 503, then closes and exits 0', async () => {
  const s = await startServer(['--drain', '3']);
  try {
    const running = await stream(s, 'none');
    assert.equal(running.status, 200);
    const signalled = Date.now();
    s.proc.kill('SIGTERM');
    await until(() => /draining for 3 s/.test(s.stderr()));
    const health = await fetch(`${s.url}/health`);
    assert.equal(health.status, 503, 'readiness fails at once');
    assert.equal((await health.json()).status, 'shutting_down');
    const late = await fetch(`${s.url}/v1/completions`, { method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: MODEL_ID, prompt: 'And God said', max_tokens: 4 }) });
    assert.equal(late.status, 200, 'a request sent while balancers catch up is served');
    assert.equal(late.headers.get('connection'), 'close', 'its client reconnects elsewhere');
    assert.equal((await late.json()).usage.completion_tokens, 4);
    assert.ok(Date.now() - signalled < 3000, 'that happened within the drain');
    assert.match(await running.text(), /"finish_reason":"length"[^]*data: \[DONE\]\n\n$/);
    const { code } = await s.exited;
    assert.equal(code, 0, s.stderr());
    assert.ok(Date.now() - signalled >= 3000, 'the listener stayed open for --drain');
    assert.match(s.stderr(), /drain over: no new connections/);
    await assert.rejects(fetch(`${s.url}/health`), 'the listener is closed');
  } finally {
    await s.stop();
  }
});

test('--drain: a second signal stops at once', async () => {
  const s = await startServer(['--drain', '600']);
  try {
    s.proc.kill('SIGTERM');
    await until(() => /draining for 600 s/.test(s.stderr()));
    s.proc.kill('SIGTERM');
    const { code } = await s.exited;
    assert.equal(code, 0, s.stderr());
    assert.match(s.stderr(), /second signal; stopping now/);
  } finally {
    await s.stop();
  }
});

test('--drain out of range is refused with one line', async () => {
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync(BIN, ['serve', '--model', MODEL, '--drain', '-1'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.equal(r.stderr.trim(), 'loraserve serve: --drain must be 0..3600 (see --help)');
});
