// bench_server.mjs - "make bench", second half: the HTTP server under load.
//
// Starts `loraserve serve` on the 110M synthetic Q8_0 model that tests/bench.c
// builds, then runs 1, 8 and 32 concurrent streaming clients (greedy, 64
// tokens each, ignore_eos, distinct ~40-token prompts) and prints a markdown
// table: aggregate generated tokens/s, time to first token p50/p99, and the
// 8-client / 1-client throughput ratio (continuous batching should make it
// well above 1: target >= 3). Each level is measured in steady state: one
// unmeasured round at that concurrency first (it maps the cache pages the
// level's sequences will use).
// Usage: node tests/bench_server.mjs LORASERVE_BIN MODEL.gguf
import { cpus } from 'node:os';
import { MAX_TOKENS, start, one, level } from './bench_lib.mjs';

const [bin = 'build/loraserve', model = 'build/bench/synth-110m-q8_0.gguf'] =
  process.argv.slice(2);
const LEVELS = [1, 8, 32];

const srv = await start(bin, model, ['--parallel', '32', '--queue', '64', '--ctx', '256',
  '--threads', String(cpus().length)]);
try {
  await one(srv.url, 0);   // warm up: page the weights in
  const rows = [];
  for (const c of LEVELS) {
    await level(srv.url, c, 1); // warm-up round, not counted
    rows.push(await level(srv.url, c, c === 1 ? 4 : c === 8 ? 2 : 1));
  }
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
  await srv.stop();
}
