// readme.test.mjs - every curl line in README.md works as printed.
//
// README's ```sh blocks are read in order: a block that starts the server
// (`build/loraserve serve ...`) sets the server for the curl blocks after it.
// Each such server is started as printed (on a free port instead of 8080,
// with a temporary data directory), and each curl line runs through bash with
// only the port changed; a line NAME=$(...) runs once, and later lines of its
// block see $NAME. A line without -i must answer 2xx with JSON (a
// stream ending in [DONE]; vLLM's text for its adapter endpoints; Prometheus
// text for /metrics); a line
// with -i shows an HTTP response, OpenAI's error object when it is 4xx/5xx.
// The server's flag table lists exactly the flags and variables of
// `loraserve serve --help`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { startServer, BIN } from './server.mjs';

// [{ serve: argv after `serve`, curls: [line] }] in README order; an assignment
// line NAME=$(...) is kept as a curl entry starting with NAME=.
function sections() {
  const blocks = [...readFileSync('README.md', 'utf8').matchAll(/```sh\n([\s\S]*?)```/g)]
    .map((m) => m[1].split('\n').filter((l) => l.trim() !== ''));
  const out = [];
  let cur = null;
  for (const lines of blocks) {
    const serve = lines.map((l) => /(?:^|&& )build\/loraserve serve (.*)$/.exec(l)).find(Boolean);
    if (serve) {
      cur = { serve: serve[1].trim().split(/\s+/), curls: [] };
      out.push(cur);
    }
    for (const l of lines.filter((x) => x.startsWith('curl ') || /^[A-Z_]+=\$\(curl /.test(x)))
      cur.curls.push(l);
  }
  return out.filter((s) => s.curls.length > 0);
}

// Runs one printed curl line against port (env: the block's assignments so far);
// returns { status, headers, body }.
function run(line, port, env) {
  const cmd = `${line.replaceAll('127.0.0.1:8080', `127.0.0.1:${port}`)} -sS -w '\\n%{http_code}'`;
  const out = execFileSync('bash', ['-c', cmd], {
    encoding: 'utf8', timeout: 60000, env: { ...process.env, ...env },
  });
  const at = out.lastIndexOf('\n');
  let body = out.slice(0, at), headers = '';
  if (/ -i /.test(line)) {
    const split = body.indexOf('\r\n\r\n');
    headers = body.slice(0, split);
    body = body.slice(split + 4);
  }
  return { status: Number(out.slice(at + 1)), headers, body };
}

// A stream ends in [DONE]; an error is OpenAI's object; vLLM's adapter endpoints answer text.
function checkBody(line, r) {
  if (r.body.startsWith('data: '))
    assert.match(r.body, /data: \[DONE\]\n\n$/, line);
  else if (r.status >= 400)
    assert.equal(typeof JSON.parse(r.body).error?.message, 'string', line);
  else if (/load_lora_adapter/.test(line))
    assert.match(r.body, /^Success: /, line);
  else if (/\/metrics/.test(line))
    assert.match(r.body, /^# HELP \S+ /, line);
  else
    assert.equal(typeof JSON.parse(r.body), 'object', line);
}

test('README: the server commands and curl lines work as printed', async (t) => {
  const secs = sections();
  assert.ok(secs.length >= 2 && secs.every((s) => s.serve.includes('--model')));
  for (const s of secs) {
    const at = s.serve.indexOf('--model');
    const model = s.serve[at + 1];
    const srv = await startServer(s.serve.filter((_, i) => i !== at && i !== at + 1),
      { model });
    try {
      const env = {};
      for (const line of s.curls) {
        const set = /^([A-Z_]+)=\$\((.*)\)$/.exec(line);
        if (set) {
          env[set[1]] = execFileSync('bash', ['-c', set[2].replaceAll('127.0.0.1:8080',
            `127.0.0.1:${srv.port}`)], { encoding: 'utf8', env: { ...process.env, ...env } }).trim();
          assert.ok(env[set[1]] !== '', line);
          continue;
        }
        await t.test(line.slice(0, 90), () => {
          const r = run(line, srv.port, env);
          if (!/ -i /.test(line))
            assert.ok(r.status >= 200 && r.status < 300, `${r.status}: ${r.body}`);
          else
            assert.match(r.headers, /^HTTP\/1\.1 \d{3}/);
          checkBody(line, r);
        });
      }
    } finally {
      await srv.stop();
    }
  }
});

test('README: the flag table is loraserve serve --help, flag for flag', () => {
  const help = execFileSync(BIN, ['serve', '--help'], { encoding: 'utf8' });
  const longFlags = (s) => (s.match(/--[a-z0-9-]+/g) || []).sort().join(' ');
  const fromHelp = {};  // variable -> its entry's long flags
  let flags = null;
  for (const line of help.split('\n')) {
    if (/^ {2}-/.test(line)) flags = longFlags(line.slice(0, 29));
    const v = /\[(LORASERVE_[A-Z_]+)\]/.exec(line);
    if (v && flags !== null) fromHelp[v[1]] = flags;
  }
  const fromReadme = {};
  const rows = /^\| (`--[^|]*)\| `(LORASERVE_[A-Z_]+)`/gm;
  for (const m of readFileSync('README.md', 'utf8').matchAll(rows)) {
    fromReadme[m[2]] = longFlags(m[1]);
  }
  assert.ok(Object.keys(fromHelp).length >= 20, 'the variables were read from --help');
  assert.deepEqual(fromReadme, fromHelp);
});
