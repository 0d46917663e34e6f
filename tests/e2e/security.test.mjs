// security.test.mjs - the defaults docs/SECURITY.md relies on: the server
// binds 127.0.0.1 unless told otherwise; CORS is off (no
// Access-Control-Allow-* header, a preflight is refused); keys and request
// bodies never reach the log; a key's secret is not derivable from what the
// API shows (ids and a count only).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, callAs, MODEL_ID } from './server.mjs';
import os from 'node:os';

const ADMIN = 'security-admin-key-0123456789';

test('binds 127.0.0.1 by default: not reachable on other addresses', async () => {
  const s = await startServer([]);  // server.mjs passes --host 127.0.0.1: check the default too
  try {
    const help = await import('node:child_process').then((cp) =>
      cp.execFileSync(process.env.LORASERVE_BIN || 'build/loraserve', ['serve', '--help'],
        { encoding: 'utf8' }));
    assert.match(help, /--host\s+address to listen on \(default 127\.0\.0\.1\)/);
    const other = Object.values(os.networkInterfaces()).flat()
      .find((a) => a && a.family === 'IPv4' && !a.internal);
    if (other) {
      const r = await fetch(`http://${other.address}:${s.port}/health`,
        { signal: AbortSignal.timeout(2000) }).then((x) => x.status).catch(() => 'refused');
      assert.equal(r, 'refused', `reachable on ${other.address}`);
    }
  } finally {
    await s.stop();
  }
});

test('CORS is off: no Access-Control headers, preflight refused', async () => {
  const s = await startServer([]);
  try {
    const r = await fetch(`${s.url}/v1/models`, { headers: { Origin: 'https://evil.example' } });
    assert.equal(r.status, 200);
    for (const [k] of r.headers) assert.ok(!k.startsWith('access-control-'), k);
    const pre = await fetch(`${s.url}/v1/completions`, { method: 'OPTIONS', headers: {
      Origin: 'https://evil.example', 'Access-Control-Request-Method': 'POST' } });
    assert.ok(pre.status >= 400, `preflight answered ${pre.status}`);
    assert.equal(pre.headers.get('access-control-allow-origin'), null);
  } finally {
    await s.stop();
  }
});

test('keys, secrets and request bodies never reach the log', async () => {
  const s = await startServer(['--admin-key', ADMIN]);
  try {
    const t = await callAs(s.url, ADMIN, 'POST', '/v1/tenants', { name: 'n' });
    const k = await callAs(s.url, ADMIN, 'POST', `/v1/tenants/${t.body.id}/keys`);
    const secret = 'PROMPT-SECRET-4f1c';
    await callAs(s.url, k.body.key, 'POST', '/v1/completions', { model: MODEL_ID,
      prompt: secret, max_tokens: 1 });
    await callAs(s.url, 'sk-wrong-key-attempt', 'GET', '/v1/models');
    await callAs(s.url, k.body.key, 'POST', '/v1/completions', '{"prompt": "' + secret);
    const list = await callAs(s.url, ADMIN, 'GET', '/v1/tenants');
    assert.ok(!list.text.includes(k.body.key.slice(20)), 'the list shows no secret');
    assert.equal((await s.stop()).code, 0);
    const log = s.stderr();
    for (const x of [ADMIN, k.body.key, k.body.key.slice(-40), secret, 'sk-wrong-key-attempt'])
      assert.ok(!log.includes(x), `the log holds ${x}`);
  } finally {
    await s.stop();
  }
});
