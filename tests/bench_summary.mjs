// bench_summary.mjs - the last step of "make bench": one table of every figure
// the issues set a target for, each with its ratio, from the results-*.json
// files the engine, server, adapters and retrieval benchmarks wrote in this
// run. llama.cpp's figures are those of ../shared/bench/peers.md (measured on
// this kind of machine: 2-vCPU Zen 5; where it gives a range, the upper end).
// Usage: node tests/bench_summary.mjs BENCH_DIR
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2] || 'build/bench';
const load = (name) => JSON.parse(readFileSync(join(dir, `results-${name}.json`), 'utf8'));
const engine = load('engine');
const server = load('server');
const adapters = load('adapters');
const retrieval = load('retrieval');
const LLAMA = { // peers.md: llama-bench -p 128 -n 64 -t 2, and llama-server with 8 adapters
  f16: { pp: 1533, tg: 193 }, q8_0: { pp: 1217, tg: 253 }, q4_0: { pp: 2099, tg: 344 },
  q4_k_m: { pp: 1391, tg: 333 }, serverAdapters8: 86,
};

const rows = [];
const row = (figure, value, unit, ratio, target, what) =>
  rows.push({ figure, value: `${value} ${unit}`, ratio, target, what,
    ok: ratio >= target ? 'yes' : 'no' });
for (const t of ['q8_0', 'q4_0']) {
  const m = engine.models[t];
  row(`decode ${t}, bandwidth`, (m.bytes * m.tg / 1e9).toFixed(1), 'GB/s',
    m.bytes * m.tg / 1e9 / engine.read, t === 'q8_0' ? 0.7 : 0.6, 'of read bandwidth');
}
for (const t of ['f16', 'q8_0', 'q4_0', 'q4_k_m']) {
  const m = engine.models[t];
  row(`decode ${t}`, m.tg.toFixed(1), 'tok/s', m.tg / LLAMA[t].tg, 1, 'of llama.cpp');
}
for (const t of ['f16', 'q8_0']) {
  const m = engine.models[t];
  row(`prefill pp128 ${t}`, m.pp.toFixed(0), 'tok/s', m.pp / LLAMA[t].pp, 1, 'of llama.cpp');
}
const at = (c) => server.levels.find((l) => l.clients === c).tokPerS;
row('server, 8 clients / 1 client', at(8).toFixed(1), 'tok/s', server.ratio8 ?? at(8) / at(1), 3,
  'of one client');
row('8 clients on 8 adapters', adapters.qv.lora.toFixed(1), 'tok/s',
  adapters.qv.lora / LLAMA.serverAdapters8, 2.5, 'of llama-server');
row('8 adapters / no adapter', adapters.qv.lora.toFixed(1), 'tok/s', adapters.qv.ratio, 0.9,
  'of our base');
row('prefix cache, 512-token prefix', server.prefix.second.toFixed(1), 'ms TTFT',
  server.prefix.ratio, 5, 'sooner than cold');
// Retrieval (issue 5): p50 <= 5 ms at recall@10 >= 0.95 for 100k chunks of dimension 384.
row(`vector search, ${retrieval.chunks / 1000}k chunks, p50`, retrieval.p50.toFixed(2), 'ms',
  5 / retrieval.p50, 1, 'of the 5 ms budget');
row('vector search recall@10', retrieval.recall.toFixed(3), '', retrieval.recall / 0.95, 1,
  'of 0.95');

console.log(`\nSummary, ${engine.date}, ${engine.threads} threads, read bandwidth ` +
  `${engine.read.toFixed(1)} GB/s (110M synthetic model; llama.cpp from peers.md)\n`);
console.log('| figure | value | ratio | target | met |');
console.log('| --- | ---: | ---: | ---: | :---: |');
for (const r of rows)
  console.log(`| ${r.figure} | ${r.value} | ${r.ratio.toFixed(2)} ${r.what} | >= ${r.target} | ` +
    `${r.ok} |`);
