// tls.test.mjs - deploy/nginx-tls.conf as printed, in front of a real
// loraserve: nginx -t accepts it; plain HTTP redirects to HTTPS; over TLS the
// API answers with HSTS, the Authorization header reaches loraserve, a stream
// arrives token by token while loraserve is still generating (nothing holds
// it back: no gzip although the client accepts it, which any buffering or
// compression in the file would break), a client that goes away frees its slot, a body over
// client_max_body_size is refused by nginx, and /metrics is served to
// loopback. Only the listen ports, the upstream port and the certificate
// paths are changed (each change must match, so an edited file fails here).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import https from 'node:https';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, health, until, MODEL_ID } from './server.mjs';

const HOST = 'llm.example.com';
const ADMIN = 'tls-admin-key';

const freePort = () => new Promise((res) => {
  const srv = createServer().listen(0, '127.0.0.1', () => {
    const { port } = srv.address();
    srv.close(() => res(port));
  });
});

function replaceOnce(text, from, to) {
  assert.ok(text.includes(from), `deploy/nginx-tls.conf no longer has "${from}"`);
  return text.replace(from, to);
}

// The site file with test ports and certificates, inside a main config of its own.
function nginxConfig(dir, upstream, httpPort, tlsPort) {
  let site = readFileSync('deploy/nginx-tls.conf', 'utf8');
  site = replaceOnce(site, 'server 127.0.0.1:8080;', `server 127.0.0.1:${upstream};`);
  site = replaceOnce(site, 'listen 80;', `listen 127.0.0.1:${httpPort};`);
  site = replaceOnce(site, 'listen [::]:80;', '');
  site = replaceOnce(site, 'listen 443 ssl http2;', `listen 127.0.0.1:${tlsPort} ssl http2;`);
  site = replaceOnce(site, 'listen [::]:443 ssl http2;', '');
  site = replaceOnce(site, `/etc/letsencrypt/live/${HOST}/fullchain.pem`, join(dir, 'cert.pem'));
  site = replaceOnce(site, `/etc/letsencrypt/live/${HOST}/privkey.pem`, join(dir, 'key.pem'));
  writeFileSync(join(dir, 'site.conf'), site);
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((t) => `${t}_temp_path ${join(dir, t)};`).join('\n  ');
  writeFileSync(join(dir, 'nginx.conf'), `${process.getuid() === 0 ? 'user root;' : ''}
worker_processes 1;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} info;
events {}
http {
  access_log off;
  ${temp}
  include ${join(dir, 'site.conf')};
}
`);
  return join(dir, 'nginx.conf');
}

function tlsRequest(port, method, path, { body, headers = {}, onData } = {}) {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, method, path, servername: HOST,
      rejectUnauthorized: false, headers: { Host: HOST, ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; if (onData) onData(d, req, res); });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }));
      res.on('error', reject);
      res.on('aborted', () => resolve({ status: res.statusCode, headers: res.headers, text,
        aborted: true }));
    });
    req.on('error', (e) => (req.destroyed && e.code === 'ECONNRESET' ? resolve({}) : reject(e)));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

test('deploy/nginx-tls.conf terminates TLS in front of loraserve and streams', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'loraserve-tls-'));
  chmodSync(dir, 0o755);
  const s = await startServer(['--admin-key', ADMIN, '--ctx', '2048']);
  let nginx;
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt',
      'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', `/CN=${HOST}`,
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'pipe' });
    const [httpPort, tlsPort] = [await freePort(), await freePort()];
    const conf = nginxConfig(dir, new URL(s.url).port, httpPort, tlsPort);
    // -e: the error log from the start (not the packaged path, unwritable without root).
    const opts = ['-e', join(dir, 'error.log'), '-c', conf];
    execFileSync('nginx', ['-t', '-q', ...opts], { stdio: 'pipe' });   // throws on a bad file
    nginx = spawn('nginx', [...opts, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let nginxErr = '';
    nginx.stderr.on('data', (d) => { nginxErr += d; });
    await until(async () => fetch(`http://127.0.0.1:${httpPort}/`, { redirect: 'manual' })
      .then(() => true, () => false));
    // Accept-Encoding as the OpenAI clients send it.
    const auth = { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json',
      'Accept-Encoding': 'gzip, deflate' };

    await t.test('plain HTTP answers only with a redirect to HTTPS', async () => {
      const r = await new Promise((res, rej) => http.get({ host: '127.0.0.1', port: httpPort,
        path: '/v1/models', headers: { Host: HOST } }, res).on('error', rej));
      r.resume();
      assert.equal(r.statusCode, 301);
      assert.equal(r.headers.location, `https://${HOST}/v1/models`);
    });

    await t.test('over TLS the key reaches loraserve, and HSTS is set', async () => {
      const none = await tlsRequest(tlsPort, 'GET', '/v1/models');
      assert.equal(none.status, 401, 'no key: loraserve itself answers');
      const r = await tlsRequest(tlsPort, 'POST', '/v1/completions', { headers: auth,
        body: JSON.stringify({ model: MODEL_ID, prompt: 'In the beginning', max_tokens: 8 }) });
      assert.equal(r.status, 200, r.text);
      assert.equal(JSON.parse(r.text).usage.completion_tokens, 8);
      assert.match(r.headers['strict-transport-security'], /max-age=\d+/);
    });

    await t.test('a stream arrives while loraserve is still generating', async () => {
      let firstBusy = null;
      let firstPiece = null;
      const r = await tlsRequest(tlsPort, 'POST', '/v1/completions', {
        headers: auth,
        body: JSON.stringify({ model: MODEL_ID, prompt: 'And God said', max_tokens: 600,
          ignore_eos: true, stream: true }),
        onData: (d, req, res) => {
          if (firstPiece !== null) return;
          firstPiece = d;
          res.pause();
          health(s.url).then((h) => { firstBusy = h.slots.busy; res.resume(); });
        },
      });
      assert.equal(r.status, 200);
      assert.match(r.text, /data: \[DONE\]\n\n$/);
      assert.ok(firstPiece.length < 4096, `the first read held ${firstPiece.length} bytes`);
      assert.equal(firstBusy, 1, 'the first tokens came before the generation ended');
    });

    await t.test('a client that goes away through nginx frees its slot', async () => {
      await tlsRequest(tlsPort, 'POST', '/v1/completions', {
        headers: auth,
        body: JSON.stringify({ model: MODEL_ID, prompt: 'And God said', max_tokens: 1500,
          ignore_eos: true, stream: true }),
        onData: (d, req) => req.destroy(),
      });
      await until(async () => (await health(s.url)).slots.busy === 0, 20000);
    });

    await t.test('a body over client_max_body_size stops at nginx (413)', async () => {
      const r = await tlsRequest(tlsPort, 'POST', '/v1/completions', { headers: auth,
        body: JSON.stringify({ model: MODEL_ID, prompt: 'x'.repeat(1100000) }) });
      assert.equal(r.status, 413);
    });

    await t.test('/metrics is served to loopback without a key', async () => {
      const r = await tlsRequest(tlsPort, 'GET', '/metrics');
      assert.equal(r.status, 200);
      assert.match(r.text, /^loraserve_requests_total/m);
    });
    assert.doesNotMatch(nginxErr + readFileSync(join(dir, 'error.log'), 'utf8'),
      /\[(emerg|alert|crit)\]/);
  } finally {
    if (nginx && nginx.exitCode === null) {
      const gone = new Promise((r) => nginx.on('exit', r));
      nginx.kill('SIGQUIT');
      await gone;
    }
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
