// bench_lib.mjs - what the server benchmarks share: starting `loraserve serve`,
// one streaming request with its time to first token, and c concurrent
// clients sending requests back to back.
import { spawn } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const MAX_TOKENS = 64;

// Starts the server with extra flags; resolves to { url, proc, stop() } once it listens.
export async function start(bin, model, args = []) {
  const dataDir = mkdtempSync(join(tmpdir(), 'loraserve-bench-'));
  const proc = spawn(bin, ['serve', '--model', model, '--port', '0', '--data-dir', dataDir,
    ...args], { stdio: ['ignore', 'inherit', 'pipe'] });
  let err = '';
  const exited = new Promise((res) => proc.on('exit', (code) => res(code)));
  const port = await new Promise((res, rej) => {
    proc.stderr.on('data', (d) => {
      err += d;
      const m = /listening on http:\/\/[^:]+:(\d+)/.exec(err);
      if (m) res(Number(m[1]));
    });
    proc.on('exit', (code) => rej(new Error(`server exited with ${code}: ${err}`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    proc,
    async stop() {
      proc.kill('SIGTERM');
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

const words = ('the of and to in is that for it as was with be by on not he this are or his ' +
  'from at which but have an they you were her she there been one all we their').split(' ');

export function prompt(i) {
  const w = [];
  for (let k = 0; k < 40; k++) w.push(words[(i * 7 + k * 13) % words.length]);
  return `Request ${i}: ${w.join(' ')}`;
}

// One streaming request (extra: more body fields, e.g. model): time to first token and tokens.
// Plain node:http with a keep-alive agent: the client shares the server's cores, so it
// should cost them as little as it can (fetch costs about twice the CPU per event).
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

export function one(url, i, extra = {}) {
  const body = JSON.stringify({
    prompt: prompt(i), max_tokens: MAX_TOKENS, temperature: 0, ignore_eos: true,
    stream: true, stream_options: { include_usage: true }, ...extra,
  });
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}/v1/completions`, {
      method: 'POST', agent,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
    }, (res) => {
      res.setEncoding('utf8');
      let buf = '', ttft = null, tokens = 0;
      if (res.statusCode !== 200) {
        res.on('data', (d) => { buf += d; });
        res.on('end', () => reject(new Error(`status ${res.statusCode}: ${buf}`)));
        return;
      }
      res.on('data', (d) => {
        buf += d;
        let at;
        while ((at = buf.indexOf('\n\n')) >= 0) {
          const line = buf.slice(0, at);
          buf = buf.slice(at + 2);
          if (line === 'data: [DONE]') continue;
          const ev = JSON.parse(line.slice(6));
          if (ev.usage) tokens = ev.usage.completion_tokens;
          if (ttft === null && ev.choices.length > 0 && ev.choices[0].text !== '')
            ttft = performance.now() - t0;
        }
      });
      res.on('end', () => resolve({ ttft, tokens, end: performance.now() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

// c clients, each sending `rounds` requests back to back; extra(k) gives client k's fields.
// Prompts are numbered from base, so runs with bases far apart share no prompt (and the
// prefix cache gives them nothing).
export async function level(url, c, rounds, extra = () => ({}), base = c * 100) {
  const t0 = performance.now();
  const results = [];
  await Promise.all(Array.from({ length: c }, async (_, k) => {
    for (let r = 0; r < rounds; r++)
      results.push(await one(url, base + k * rounds + r, extra(k)));
  }));
  const wall = (performance.now() - t0) / 1000;
  const tokens = results.reduce((a, x) => a + x.tokens, 0);
  const ttfts = results.map((x) => x.ttft).sort((a, b) => a - b);
  return {
    c, n: results.length, tokPerS: tokens / wall, p50: pct(ttfts, 50), p99: pct(ttfts, 99),
  };
}
