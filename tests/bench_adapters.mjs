// bench_adapters.mjs - "make bench", third part: LoRA adapters on the 110M
// synthetic Q8_0 model that tests/bench.c builds.
//
// 1. Writes rank-16 adapters with seeded random weights (`loraserve
//    mkadapter`) once, into DIR/adapters: 100 on attn_q and attn_v (PEFT's
//    default targets for LLaMA) and 8 on all seven projections, in F32, and
//    F16 copies of the 8 + 8 used for speed (`loraserve quantize ... f16`: an
//    F16 adapter is kept and applied as F16, half the bytes a step reads).
// 2. Throughput: 8 concurrent streaming clients (64 greedy tokens each), each
//    on a different adapter, over 8 clients on the base model: the median of
//    4 back-to-back pairs, so drift on a shared machine hits both. Target
//    >= 0.85.
// 3. Load latency: the POST /v1/adapters round trip of each of the 100
//    adapters, p50 and p99.
// 4. Memory: resident set (VmRSS) of the server with the 100 adapters loaded
//    minus with none, over the adapters' total file size. Target <= 1.1.
// Usage: node tests/bench_adapters.mjs LORASERVE_BIN MODEL.gguf
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { MAX_TOKENS, start, one, level, pct } from './bench_lib.mjs';

const [bin = 'build/loraserve', model = 'build/bench/synth-110m-q8_0.gguf'] =
  process.argv.slice(2);
const dir = join(dirname(model), 'adapters');
const N_MEMORY = 100;
const CLIENTS = 8;
const REPEATS = 4;
const threads = String(cpus().length);

function makeAdapters() {
  mkdirSync(dir, { recursive: true });
  const want = [];
  for (let i = 0; i < N_MEMORY; i++) want.push([`r16-qv-${i}.gguf`, i + 1, 'attn_q,attn_v']);
  for (let i = 0; i < CLIENTS; i++) want.push([`r16-all-${i}.gguf`, 1000 + i, 'all']);
  for (const [file, seed, targets] of want) {
    if (existsSync(join(dir, file))) continue;
    const r = spawnSync(bin, ['mkadapter', join(dir, file), '--model', model, '--rank', '16',
      '--seed', String(seed), '--targets', targets], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`mkadapter ${file}: ${r.stderr}`);
  }
  for (const kind of ['qv', 'all']) {
    for (let i = 0; i < CLIENTS; i++) {
      const f16 = join(dir, `r16-${kind}-f16-${i}.gguf`);
      if (existsSync(f16)) continue;
      const r = spawnSync(bin, ['quantize', join(dir, `r16-${kind}-${i}.gguf`), f16, 'f16'],
        { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`quantize ${f16}: ${r.stderr}`);
    }
  }
}

function rss(pid) {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
}

async function post(url, path, body) {
  const r = await fetch(url + path, { method: 'POST', body: JSON.stringify(body),
    headers: { 'Content-Type': 'application/json' } });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`${path}: ${r.status} ${text}`);
  return text;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2;
}

// Aggregate tok/s of 8 clients on the base and on 8 adapters named by name(k): REPEATS pairs
// of runs back to back (the order alternating), and the median of each and of the ratios, so
// that drift on a shared machine hits both sides alike.
let runs = 0; // every run gets prompts of its own: the prefix cache must not favour a side

async function throughput(url, name) {
  const pairs = [];
  for (let i = 0; i < REPEATS; i++) {
    const runBase = () => level(url, CLIENTS, 2, undefined, 1000 * ++runs);
    const runLora = () => level(url, CLIENTS, 2, (k) => ({ model: name(k) }), 1000 * ++runs);
    const base = i % 2 === 0 ? await runBase() : null;
    const lora = await runLora();
    const b = base ?? await runBase();
    pairs.push({ base: b.tokPerS, lora: lora.tokPerS, ratio: lora.tokPerS / b.tokPerS });
  }
  return { base: median(pairs.map((p) => p.base)), lora: median(pairs.map((p) => p.lora)),
    ratio: median(pairs.map((p) => p.ratio)), all: pairs.map((p) => p.ratio.toFixed(2)) };
}

async function speed() {
  const srv = await start(bin, model, ['--parallel', '32', '--queue', '64', '--ctx', '256',
    '--threads', threads, '--adapter-dir', dir]);
  try {
    await one(srv.url, 0);      // page the weights in
    for (let k = 0; k < CLIENTS; k++) {    // first use loads them; not what is measured here
      await one(srv.url, 0, { model: `r16-qv-${k}`, max_tokens: 1 });
      await one(srv.url, 0, { model: `r16-all-${k}`, max_tokens: 1 });
      await one(srv.url, 0, { model: `r16-qv-f16-${k}`, max_tokens: 1 });
      await one(srv.url, 0, { model: `r16-all-f16-${k}`, max_tokens: 1 });
    }
    const qv = await throughput(srv.url, (k) => `r16-qv-${k}`);
    const all = await throughput(srv.url, (k) => `r16-all-${k}`);
    const qv16 = await throughput(srv.url, (k) => `r16-qv-f16-${k}`);
    const all16 = await throughput(srv.url, (k) => `r16-all-f16-${k}`);
    return { qv, all, qv16, all16 };
  } finally {
    await srv.stop();
  }
}

// Loads the 100 adapters one by one into a fresh server: latencies and the RSS they add.
async function memory() {
  const srv = await start(bin, model, ['--parallel', '4', '--ctx', '256', '--threads', threads,
    '--adapter-dir', dir]);
  try {
    await one(srv.url, 0);
    await new Promise((res) => setTimeout(res, 1500));
    const rss0 = rss(srv.proc.pid);
    const ms = [];
    let bytes = 0;
    for (let i = 0; i < N_MEMORY; i++) {
      const t0 = performance.now();
      await post(srv.url, '/v1/adapters', { name: `m${i}`, path: `r16-qv-${i}.gguf` });
      ms.push(performance.now() - t0);
      bytes += statSync(join(dir, `r16-qv-${i}.gguf`)).size;
    }
    await new Promise((res) => setTimeout(res, 2500));   // the trim timer's tick
    const grew = rss(srv.proc.pid) - rss0;
    ms.sort((a, b) => a - b);
    return { p50: pct(ms, 50), p99: pct(ms, 99), grew, bytes, file: bytes / N_MEMORY };
  } finally {
    await srv.stop();
  }
}

makeAdapters();
const { qv, all, qv16, all16 } = await speed();
const mem = await memory();
const mb = (x) => (x / 1e6).toFixed(1);
console.log(`\nAdapters: rank 16, ${CLIENTS} concurrent streaming clients, ${MAX_TOKENS} tokens ` +
  `each, ${threads} threads, model ${model}\n`);
console.log('| adapters (rank 16) | file MB | base tok/s | adapters tok/s | ratio |');
console.log('| --- | ---: | ---: | ---: | ---: |');
const size = (f) => mb(statSync(join(dir, f)).size);
const rows = [['attn_q, attn_v', 'r16-qv-0.gguf', qv],
  ['all 7 projections', 'r16-all-0.gguf', all],
  ['attn_q, attn_v, F16', 'r16-qv-f16-0.gguf', qv16],
  ['all 7 projections, F16', 'r16-all-f16-0.gguf', all16]];
for (const [what, file, r] of rows) {
  console.log(`| ${what} | ${size(file)} | ${r.base.toFixed(1)} | ${r.lora.toFixed(1)} | ` +
    `${r.ratio.toFixed(2)} |`);
}
console.log(`\n${CLIENTS} clients on ${CLIENTS} different adapters / on the base model: ` +
  `${qv.ratio.toFixed(2)} (target >= 0.85; pairs ${qv.all.join(' ')}; all projections ` +
  `${all.all.join(' ')}; F16 ${qv16.all.join(' ')} and ${all16.all.join(' ')})`);
console.log(`adapter load (POST /v1/adapters, ${mb(mem.file)} MB file): p50 ` +
  `${mem.p50.toFixed(1)} ms, p99 ${mem.p99.toFixed(1)} ms`);
console.log(`resident memory with ${N_MEMORY} adapters - with none: ${mb(mem.grew)} MB for ` +
  `${mb(mem.bytes)} MB of files: ${(mem.grew / mem.bytes).toFixed(3)} (target <= 1.1)`);
writeFileSync(join(dirname(model), 'results-adapters.json'), JSON.stringify({
  qv, all, qv16, all16, load: { p50: mem.p50, p99: mem.p99 }, rss: mem.grew / mem.bytes,
}));
