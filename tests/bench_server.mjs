// bench_server.mjs - "make bench", second half: the HTTP server under load.
//
// Starts `loraserve serve` on the 110M synthetic Q8_0 model that tests/bench.c
// builds, then runs 1, 8 and 32 concurrent streaming clients (greedy, 64
// tokens each, ignore_eos, distinct ~40-token prompts) and prints a markdown
// table: aggregate generated tokens/s, time to first token p50/p99, and the
// 8-client / 1-client throughput ratio (continuous batching should make it
// well above 1: target >= 3). Each level is measured in steady state: one
// unmeasured round at that concurrency first (it maps the cache pages the
// level's sequences will use); one and eight clients are measured in turn,
// three times, and the table shows medians.
// Usage: node tests/bench_server.mjs LORASERVE_BIN MODEL.gguf
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { MAX_TOKENS, start, one, level } from './bench_lib.mjs';

const VOCAB = ('time year people way day man thing woman life child world school state family ' +
  'student group country problem hand part place case week company system program question ' +
  'work government number night point home water room mother area money story fact month lot ' +
  'right study book eye job word business issue side kind head house service friend father ' +
  'power hour game line end member law car city community name president team minute idea').split(' ');

// Prefix cache: time to first token of a request whose ~512-token prefix an
// earlier request computed, against the first request's (median of 3 pairs,
// each with a prefix of its own).
async function prefixTtft(bin, model) {
  const srv = await start(bin, model, ['--parallel', '4', '--ctx', '1024',
    '--threads', String(cpus().length)]);
  try {
    await one(srv.url, 0);
    const ratios = [], firsts = [], seconds = [];
    for (let p = 0; p < 3; p++) {
      const words = [];
      for (let k = 0; k < 470; k++) words.push(VOCAB[(k * 7 + p * 13 + (k >> 3)) % VOCAB.length]);
      const prefix = `Document ${p}: ${words.join(' ')}.`;
      const a = await one(srv.url, 0, { prompt: `${prefix} Question one?`, max_tokens: 4 });
      const b = await one(srv.url, 0, { prompt: `${prefix} Question two?`, max_tokens: 4 });
      firsts.push(a.ttft);
      seconds.push(b.ttft);
      ratios.push(a.ttft / b.ttft);
    }
    const med = (v) => [...v].sort((x, y) => x - y)[1];
    return { first: med(firsts), second: med(seconds), ratio: med(ratios) };
  } finally {
    await srv.stop();
  }
}

const [bin = 'build/loraserve', model = 'build/bench/synth-110m-q8_0.gguf'] =
  process.argv.slice(2);
const PAIRS = 3;

// The median of xs by key.
function median(xs, key) {
  return [...xs].sort((a, b) => key(a) - key(b))[Math.floor(xs.length / 2)];
}

const srv = await start(bin, model, ['--parallel', '32', '--queue', '64', '--ctx', '256',
  '--threads', String(cpus().length)]);
const rows = [];
let ratio;
try {
  await one(srv.url, 0);   // warm up: page the weights in
  for (const c of [1, 8, 32])
    await level(srv.url, c, 1, undefined, 100000 + c * 100); // warm-up, other prompts
  // One client and eight measured in turn, PAIRS times: a shared host's speed drifts
  // over seconds, and each pair sees about the same machine; medians of each.
  const ones = [], eights = [], ratios = [];
  for (let p = 0; p < PAIRS; p++) {
    ones.push(await level(srv.url, 1, 4, undefined, 1000 + p * 100));
    eights.push(await level(srv.url, 8, 2, undefined, 2000 + p * 100));
    ratios.push(eights[p].tokPerS / ones[p].tokPerS);
  }
  rows.push(median(ones, (r) => r.tokPerS), median(eights, (r) => r.tokPerS));
  rows.push(await level(srv.url, 32, 1));
  ratio = median(ratios, (x) => x);
  console.log(`\nServer: ${MAX_TOKENS} streamed tokens per request, ${cpus().length} threads, ` +
    `model ${model}; 1 and 8 clients: medians of ${PAIRS} runs measured in turn\n`);
  console.log('| clients | requests | aggregate tok/s | TTFT p50 ms | TTFT p99 ms |');
  console.log('| ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows)
    console.log(`| ${r.c} | ${r.n} | ${r.tokPerS.toFixed(1)} | ${r.p50.toFixed(1)} | ` +
      `${r.p99.toFixed(1)} |`);
  console.log(`\n8 clients / 1 client aggregate tok/s: ${ratio.toFixed(2)}x, median of the ` +
    `${PAIRS} pairs (${ratios.map((x) => x.toFixed(2)).join(', ')}; target >= 3x)`);
} finally {
  await srv.stop();
}
const pc = await prefixTtft(bin, model);
writeFileSync(join(dirname(model), 'results-server.json'), JSON.stringify({
  levels: rows.map((r) => ({ clients: r.c, tokPerS: r.tokPerS, p50: r.p50, p99: r.p99 })),
  ratio8: ratio,
  prefix: pc,
}));
console.log(`prefix cache: time to first token with a ~512-token prefix computed before ` +
  `${pc.second.toFixed(1)} ms, without ${pc.first.toFixed(1)} ms: ${pc.ratio.toFixed(1)}x ` +
  `sooner (target >= 5x)`);
