// bench_server.mjs - "make bench", second half: the HTTP server under load.
//
// Starts `loraserve serve` on the 110M synthetic Q8_0 model that tests/bench.c
// builds, then runs 1, 8 and 32 concurrent streaming clients (greedy, 64
// tokens each, ignore_eos, distinct ~40-token prompts) and prints a markdown
// table: aggregate generated tokens/s, time to first token p50/p99, and the
// 8-client / 1-client throughput ratio (continuous batching should make it
// well above 1: target >= 3).
// Usage: node tests/bench_server.mjs LORASERVE_BIN MODEL.gguf
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';

const [bin = 'build/loraserve', model = 'build/bench/synth-110m-q8_0.gguf'] =
  process.argv.slice(2);
const MAX_TOKENS = 64;
const LEVELS = [1, 8, 32];

async function start() {
  const dataDir = mkdtempSync(join(tmpdir(), 'loraserve-bench-'));
  const proc = spawn(bin, ['serve', '--model', model, '--port', '0', '--parallel', '32',
    '--queue', '64', '--ctx', '256', '--threads', String(cpus().length),
    '--data-dir', dataDir], { stdio: ['ignore', 'inherit', 'pipe'] });
  let err = '';
  const port = await new Promise((res, rej) => {
    proc.stderr.on('data', (d) => {
      err += d;
      const m = /listening on http:\/\/[^:]+:(\d+)/.exec(err);
      if (m) res(Number(m[1]));
    });
    proc.on('exit', (code) => rej(new Error(`server exited with ${code}: ${err}`)));
  });
  const exited = new Promise((res) => proc.on('exit', (code) => res(code)));
  return { url: `http://127.0.0.1:${port}`, proc, exited, dataDir };
}

const words = ('the of and to in is that for it as was with be by on not he this are or his ' +
  'from at which but have an they you were her she there been one all we their').split(' ');

function prompt(i) {
  const w = [];
  for (let k = 0; k < 40; k++) w.push(words[(i * 7 + k * 13) % words.length]);
  return `Request ${i}: ${w.join(' ')}`;
}

// One streaming request: time to first token and tokens generated.
async function one(url, i) {
  const t0 = performance.now();
  const r = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      prompt: prompt(i), max_tokens: MAX_TOKENS, temperature: 0, ignore_eos: true,
      stream: true, stream_options: { include_usage: true },
    }),
  });
  if (r.status !== 200) throw new Error(`status ${r.status}: ${await r.text()}`);
  let ttft = null;
  let tokens = 0;
  let buf = '';
  const dec = new TextDecoder();
  for await (const part of r.body) {
    buf += dec.decode(part, { stream: true });
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
  }
  return { ttft, tokens, end: performance.now() };
}

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

// c clients, each sending requests back to back until `rounds` each are done.
async function level(url, c, rounds) {
  const t0 = performance.now();
  const results = [];
  await Promise.all(Array.from({ length: c }, async (_, k) => {
    for (let r = 0; r < rounds; r++) results.push(await one(url, k * rounds + r + c * 100));
  }));
  const wall = (performance.now() - t0) / 1000;
  const tokens = results.reduce((a, x) => a + x.tokens, 0);
  const ttfts = results.map((x) => x.ttft).sort((a, b) => a - b);
  return { c, n: results.length, tokPerS: tokens / wall, p50: pct(ttfts, 50), p99: pct(ttfts, 99) };
}

const srv = await start();
try {
  await one(srv.url, 0);   // warm up: page the weights in
  const rows = [];
  for (const c of LEVELS) rows.push(await level(srv.url, c, c === 1 ? 4 : c === 8 ? 2 : 1));
  console.log(`\nServer: ${MAX_TOKENS} streamed tokens per request, ${cpus().length} threads, ` +
    `model ${model}\n`);
  console.log('| clients | requests | aggregate tok/s | TTFT p50 ms | TTFT p99 ms |');
  console.log('| ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows)
    console.log(`| ${r.c} | ${r.n} | ${r.tokPerS.toFixed(1)} | ${r.p50.toFixed(1)} | ` +
      `${r.p99.toFixed(1)} |`);
  const ratio = rows[1].tokPerS / rows[0].tokPerS;
  console.log(`\n8 clients / 1 client aggregate tok/s: ${ratio.toFixed(2)}x (target >= 3x)`);
} finally {
  srv.proc.kill('SIGTERM');
  await srv.exited;
  rmSync(srv.dataDir, { recursive: true, force: true });
}
