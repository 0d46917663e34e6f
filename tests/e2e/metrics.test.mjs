// metrics.test.mjs - GET /metrics: the text parses as Prometheus' exposition
// format (a small parser below checks every line, HELP/TYPE, label syntax,
// histogram buckets), the counters move as requests run (per model, adapter
// and tenant), and vLLM's series that the Gateway API Inference Extension
// reads are there under their exact names, with the running adapters listed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, LORA_DIR, MODEL_ID, callAs } from './server.mjs';

const ADMIN = 'metrics-admin-key';
let srv;
let key;

const api = (key, method, path, body) => callAs(srv.url, key, method, path, body);

// Parses the text format: { families: {name: {type, help}}, samples: [{name, labels, value}] }.
// Throws on any line that is not a comment, a sample or blank.
function parseProm(text) {
  const families = {};
  const samples = [];
  const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
  const sampleRe = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)(?: (-?\\d+))?$`);
  const labelRe = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)/;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let m;
    if ((m = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line))) {
      const f = families[m[2]] ??= {};
      if (m[1] === 'TYPE') {
        assert.ok(['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3]), line);
        assert.equal(f.type, undefined, `TYPE twice: ${line}`);
        f.type = m[3];
      } else {
        f.help = m[3];
      }
      continue;
    }
    assert.ok(!line.startsWith('#'), `unknown comment: ${line}`);
    m = sampleRe.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels = {};
    let rest = m[2] ?? '';
    while (rest.length > 0) {
      const l = labelRe.exec(rest);
      assert.ok(l, `bad labels in: ${line}`);
      labels[l[1]] = l[2].replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
      rest = rest.slice(l[0].length);
    }
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    assert.ok(!Number.isNaN(value) || m[3] === 'NaN', `bad value: ${line}`);
    const base = m[1].replace(/_(bucket|sum|count)$/, '');
    assert.ok(families[m[1]]?.type || families[base]?.type === 'histogram',
      `sample before its TYPE: ${line}`);
    samples.push({ name: m[1], labels, value });
  }
  return { families, samples };
}

const scrape = async () => parseProm((await api(null, 'GET', '/metrics')).text);
const value = (p, name, labels = {}) => p.samples.filter((s) => s.name === name &&
  Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  .reduce((sum, s) => sum + s.value, 0);

before(async () => {
  srv = await startServer(['--admin-key', ADMIN, '--adapter-dir', LORA_DIR]);
  const t = await api(ADMIN, 'POST', '/v1/tenants', { name: 'metered' });
  key = (await api(ADMIN, 'POST', `/v1/tenants/${t.body.id}/keys`)).body.key;
  await api(key, 'POST', '/v1/adapters', { name: 'jargon', path: 'kjv-tiny-lora-jargon.gguf' });
});
after(async () => {
  const { code } = await srv.stop();
  assert.equal(code, 0, srv.stderr());
});

test('/metrics needs no key and parses as Prometheus text', async () => {
  const r = await api(null, 'GET', '/metrics');
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  const p = parseProm(r.text);
  for (const [name, type] of [['loraserve_requests_total', 'counter'],
    ['loraserve_request_latency_seconds', 'histogram'], ['loraserve_queue_depth', 'gauge'],
    ['loraserve_kv_cache_usage_ratio', 'gauge'], ['loraserve_adapter_loads_total', 'counter'],
    ['vllm:num_requests_waiting', 'gauge'], ['vllm:num_requests_running', 'gauge'],
    ['vllm:kv_cache_usage_perc', 'gauge'], ['vllm:cache_config_info', 'gauge'],
    ['vllm:lora_requests_info', 'gauge']])
    assert.equal(p.families[name]?.type, type, name);
  const info = p.samples.find((s) => s.name === 'vllm:cache_config_info');
  assert.equal(info.labels.block_size, '16');
  assert.ok(Number(info.labels.num_gpu_blocks) > 0);
  const usage = value(p, 'vllm:kv_cache_usage_perc');
  assert.ok(usage >= 0 && usage <= 1);
  assert.equal(value(p, 'loraserve_adapters_registered'), 1);
});

test('counters move as requests run, by model and tenant', async () => {
  const before = await scrape();
  for (let i = 0; i < 3; i++) {
    const r = await api(key, 'POST', '/v1/completions', { model: 'jargon', prompt: 'In the',
      max_tokens: 4, ignore_eos: true });
    assert.equal(r.status, 200, r.text);
  }
  const bad = await api(key, 'POST', '/v1/completions', { model: 'nope', prompt: 'x' });
  assert.equal(bad.status, 404);
  await api(ADMIN, 'POST', '/v1/completions', { model: MODEL_ID, prompt: 'In', max_tokens: 2 });
  const vs = await api(key, 'POST', '/v1/vector_stores', { name: 'm' });
  await api(key, 'POST', `/v1/vector_stores/${vs.body.id}/search`, { query: 'x' });
  const after = await scrape();
  const d = (name, labels) => value(after, name, labels) - value(before, name, labels);
  const tenant = after.samples.find((s) => s.name === 'loraserve_requests_total' &&
    s.labels.model === 'jargon').labels.tenant;
  assert.match(tenant, /^ten_/);
  assert.equal(d('loraserve_requests_total', { model: 'jargon', status: '200' }), 3);
  assert.equal(d('loraserve_requests_total', { model: 'unknown', status: '404' }), 1);
  assert.equal(d('loraserve_requests_total', { model: MODEL_ID, tenant: 'admin' }), 1);
  assert.equal(d('loraserve_generation_tokens_total', { model: 'jargon' }), 12);
  assert.ok(d('loraserve_prompt_tokens_total', { model: 'jargon' }) >= 3);
  assert.equal(d('loraserve_request_latency_seconds_count', { model: 'jargon' }), 3);
  const inf = after.samples.find((s) => s.name === 'loraserve_request_latency_seconds_bucket' &&
    s.labels.model === 'jargon' && s.labels.le === '+Inf');
  assert.equal(inf.value, value(after, 'loraserve_request_latency_seconds_count',
    { model: 'jargon' }));
  assert.ok(d('loraserve_scheduler_iterations_total') >= 12);
  assert.equal(d('loraserve_retrieval_searches_total'), 1);
  assert.ok(value(after, 'loraserve_adapter_loads_total') >= 1);
  assert.ok(value(after, 'loraserve_adapter_memory_bytes') > 0);
});

test('while requests run: running/waiting gauges and the running adapters', async () => {
  const long = Array.from({ length: 6 }, () => fetch(`${srv.url}/v1/completions`, {
    method: 'POST', headers: { Authorization: `Bearer ${key}`,
      'Content-Type': 'application/json' },
    body: JSON.stringify({ model: 'jargon', prompt: 'And God said', max_tokens: 200,
      ignore_eos: true, stream: true }) }));
  const streams = await Promise.all(long);
  let p = await scrape();
  for (let i = 0; i < 100 && value(p, 'vllm:kv_cache_usage_perc') === 0; i++) {
    await new Promise((r) => setTimeout(r, 20));  // admitted at the scheduler's next step
    p = await scrape();
  }
  assert.ok(value(p, 'vllm:num_requests_running') >= 1);
  assert.equal(value(p, 'vllm:num_requests_running') + value(p, 'vllm:num_requests_waiting'),
    value(p, 'loraserve_running_sequences') + value(p, 'loraserve_queue_depth'));
  const lora = p.samples.find((s) => s.name === 'vllm:lora_requests_info');
  assert.equal(lora.labels.running_lora_adapters, 'jargon');
  assert.ok(Number(lora.labels.max_lora) >= 1);
  assert.ok(Math.abs(lora.value - Date.now() / 1000) < 60, 'the value is the update time');
  assert.ok(value(p, 'vllm:kv_cache_usage_perc') > 0);
  await Promise.all(streams.map((s) => s.text()));
});
