// adapters.test.mjs - LoRA adapters through the HTTP API: every golden adapter
// configuration in both formats (GGUF-LoRA and PEFT), a batch mixing the base
// and every adapter, the selection rules, /v1/models and /v1/adapters, the
// management endpoints (ours and vLLM's), first use from --adapter-dir, the
// memory budget, and adapters registered before a restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  startServer, post, call, golden, health, until, BASE_CASES, MODEL, MODEL_ID, ADAPTERS,
  ggufPath, peftPath,
} from './server.mjs';

// The golden configurations: the request fields that select each, by format.
// A format's adapters are named "fortunes" (GGUF) or "fortunes-peft" (PEFT).
const CONFIGS = [
  ...ADAPTERS.map((a) => ({ config: `lora-${a}`, fields: (n) => ({ model: n(a) }) })),
  { config: 'lora-fortunes-scale0.5', fields: (n) => ({ model: n('fortunes'), lora_scale: 0.5 }) },
  {
    config: 'lora-fortunes1.0+jargon0.5',
    fields: (n) => ({
      adapters: [{ name: n('fortunes'), scale: 1.0 }, { name: n('jargon'), scale: 0.5 }],
    }),
  },
];
const FORMATS = { gguf: (a) => a, peft: (a) => `${a}-peft` };

let srv;
let adapterDir;
before(async () => {
  // --adapter-dir holds a copy of jargon under another name, for first use.
  adapterDir = mkdtempSync(join(tmpdir(), 'loraserve-adapters-'));
  copyFileSync(ggufPath('jargon'), join(adapterDir, 'dir-jargon.gguf'));
  copyFileSync(ggufPath('fortunes'), join(adapterDir, 'dir-fortunes.gguf'));
  cpSync(peftPath('devil'), join(adapterDir, 'dir-devil'), { recursive: true });
  const flags = ADAPTERS.flatMap((a) => ['--adapter', `${a}=${ggufPath(a)}`,
    '--adapter', `${a}-peft=${peftPath(a)}`]);
  srv = await startServer([...flags, '--adapter-dir', adapterDir, '--parallel', '8',
    '--queue', '128']);
});
after(async () => {
  const { code } = await srv.stop();
  rmSync(adapterDir, { recursive: true, force: true });
  assert.equal(code, 0, srv.stderr());
});

// One greedy completion of a golden prompt: { text, finish, model, version header }.
async function complete(fields, prompt, extra = {}) {
  const r = await post(srv.url, '/v1/completions',
    { prompt, max_tokens: 32, temperature: 0, ...fields, ...extra });
  assert.equal(r.status, 200, r.text);
  return {
    text: r.body.choices[0].text,
    finish: r.body.choices[0].finish_reason,
    model: r.body.model,
    version: r.headers.get('x-loraserve-adapter-version'),
  };
}

test('/v1/models lists the base and every adapter with parent = the base', async () => {
  const list = await srv.client.models.list();
  const ids = list.data.map((m) => m.id);
  assert.equal(ids[0], MODEL_ID);
  for (const a of ADAPTERS) {
    for (const name of [a, `${a}-peft`]) {
      const m = list.data.find((x) => x.id === name);
      assert.ok(m, `${name} in ${ids}`);
      assert.equal(m.object, 'model');
      assert.equal(m.parent, MODEL_ID);
      assert.equal(m.owned_by, 'loraserve');
      assert.equal(typeof m.created, 'number');
      assert.match(m.root, name.endsWith('-peft') ? /peft-\w+$/ : /kjv-tiny-lora-\w+\.gguf$/);
    }
  }
  const one = await srv.client.models.retrieve('devil-peft');
  assert.equal(one.parent, MODEL_ID);
  await assert.rejects(srv.client.models.retrieve('no-such-adapter'), { status: 404 });
});

test('GET /v1/adapters: version, format, hash, rank, targets, bytes of each', async () => {
  const r = await call(srv.url, 'GET', '/v1/adapters');
  assert.equal(r.status, 200);
  assert.equal(r.body.object, 'list');
  const f = r.body.data.find((e) => e.name === 'fortunes');
  const p = r.body.data.find((e) => e.name === 'fortunes-peft');
  assert.equal(f.version, 1);
  assert.equal(f.format, 'gguf');
  assert.equal(p.format, 'peft');
  assert.equal(f.sha256, golden('short-genesis', 'lora-fortunes').adapters[0].gguf_sha256);
  assert.equal(f.rank, 8);
  assert.equal(f.alpha, 16);
  assert.deepEqual(f.targets, ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate',
    'ffn_up', 'ffn_down']);
  assert.equal(f.status, 'loaded');
  assert.equal(f.pinned, false);
  assert.ok(f.bytes > 900000 && f.bytes === p.bytes);
  assert.equal(f.users, 0);
  for (const k of ['created_at', 'updated_at', 'last_used_at'])
    assert.equal(typeof f[k], 'number');
  assert.match(f.path, /kjv-tiny-lora-fortunes\.gguf$/);
  const one = await call(srv.url, 'GET', '/v1/adapters/jargon-peft');
  assert.equal(one.body.name, 'jargon-peft');
  assert.equal((await call(srv.url, 'GET', '/v1/adapters/nope')).status, 404);
});

for (const [format, name] of Object.entries(FORMATS)) {
  for (const { config, fields } of CONFIGS) {
    test(`golden: ${config} (${format}) for every prompt`, async () => {
      const f = fields(name);
      const expectVersion = (f.adapters ? f.adapters.map((a) => a.name) : [f.model])
        .map((n) => `${n}@1`).join(',');
      for (const p of BASE_CASES) {
        const g = golden(p, config);
        const r = await complete(f, g.prompt);
        assert.equal(r.text, g.generated_text, `${config} ${format} ${p}`);
        assert.equal(r.finish, g.finish_reason, `${config} ${format} ${p}`);
        assert.equal(r.model, f.model ?? MODEL_ID);
        assert.equal(r.version, expectVersion);
      }
    });
  }
}

test('a stream and a chat through an adapter; responses name the model asked for', async () => {
  const g = golden('short-moses', 'lora-devil');
  const { data: stream, response } = await srv.client.completions.create({
    model: 'devil-peft', prompt: g.prompt, max_tokens: 32, temperature: 0, stream: true,
  }).withResponse();
  assert.equal(response.headers.get('x-loraserve-adapter-version'), 'devil-peft@1');
  let text = '';
  for await (const chunk of stream) {
    assert.equal(chunk.model, 'devil-peft');
    text += chunk.choices[0]?.text ?? '';
  }
  assert.equal(text, g.generated_text);
  const messages = [{ role: 'user', content: 'In the beginning' }];
  const a = await srv.client.chat.completions.create({ model: 'jargon', messages,
    max_tokens: 16, temperature: 0 });
  const b = await srv.client.chat.completions.create({ model: 'jargon-peft', messages,
    max_tokens: 16, temperature: 0 });
  assert.equal(a.model, 'jargon');
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
});

test('a batch mixing the base and every adapter gives each its lone output', async () => {
  const jobs = [];
  for (const p of BASE_CASES) {
    jobs.push({ fields: {}, g: golden(p) });
    for (const name of Object.values(FORMATS))
      for (const { config, fields } of CONFIGS)
        jobs.push({ fields: fields(name), g: golden(p, config) });
  }
  assert.equal(jobs.length, 55);
  const out = await Promise.all(jobs.map(({ fields, g }) => complete(fields, g.prompt)));
  for (const [i, { g }] of jobs.entries()) assert.equal(out[i].text, g.generated_text, `job ${i}`);
});

test('unknown adapters are 404 model_not_found; the selection rules are 400s', async () => {
  const bad = async (fields, status, param) => {
    const r = await post(srv.url, '/v1/completions', { prompt: 'In', max_tokens: 2, ...fields });
    assert.equal(r.status, status, r.text);
    assert.equal(r.body.error.param, param);
    return r.body.error;
  };
  let e = await bad({ model: 'gpt-4' }, 404, 'model');
  assert.equal(e.code, 'model_not_found');
  e = await bad({ adapters: [{ name: 'fortunes' }, { name: 'no-such' }] }, 404, 'model');
  assert.match(e.message, /no-such/);
  await bad({ model: '../etc/passwd' }, 404, 'model');
  await bad({ model: 'devil', adapters: ['fortunes'] }, 400, 'model');
  await bad({ adapters: ['fortunes'], lora_scale: 0.5 }, 400, 'lora_scale');
  await bad({ adapters: ['fortunes', 'fortunes'] }, 400, 'adapters');
  await bad({ adapters: [{ name: 'fortunes', scale: 'big' }] }, 400, 'adapters');
  await bad({ model: 'fortunes', lora_scale: 100 }, 400, 'lora_scale');
  // model may name one of the adapters listed; the response says what was asked for.
  const g = golden('short-genesis', 'lora-fortunes1.0+jargon0.5');
  const r = await complete({ model: 'jargon', adapters: [{ name: 'fortunes', scale: 1 },
    { name: 'jargon', scale: 0.5 }] }, g.prompt);
  assert.equal(r.text, g.generated_text);
  assert.equal(r.model, 'jargon');
  // An empty list is the base model; scale 0 is the base model too.
  const b = golden('short-genesis');
  assert.equal((await complete({ adapters: [] }, b.prompt)).text, b.generated_text);
  assert.equal((await complete({ model: 'devil', lora_scale: 0 }, b.prompt)).text,
    b.generated_text);
});

test('--adapter-dir: a request for an unknown name loads DIR/NAME on first use', async () => {
  // Several requests at once for names not loaded yet: all wait for one load each.
  const gj = golden('short-moses', 'lora-jargon');
  const gd = golden('long-kjv', 'lora-devil');
  const out = await Promise.all([
    complete({ model: 'dir-jargon' }, gj.prompt), complete({ model: 'dir-jargon' }, gj.prompt),
    complete({ model: 'dir-devil' }, gd.prompt), complete({ model: 'dir-devil' }, gd.prompt),
  ]);
  assert.deepEqual(out.map((o) => o.text), [gj.generated_text, gj.generated_text,
    gd.generated_text, gd.generated_text]);
  assert.equal(out[0].version, 'dir-jargon@1');
  const list = (await call(srv.url, 'GET', '/v1/adapters')).body.data.map((e) => e.name);
  assert.ok(list.includes('dir-jargon') && list.includes('dir-devil'));
  // A name with no file in the directory is still unknown, and stays so.
  const r = await post(srv.url, '/v1/completions', { model: 'dir-none', prompt: 'In' });
  assert.equal(r.status, 404);
  assert.equal(r.body.error.code, 'model_not_found');
});

test('a client that hangs up while its adapter loads leaves no ref behind', async () => {
  copyFileSync(ggufPath('fortunes'), join(adapterDir, 'dir-late.gguf'));
  const ctl = new AbortController();
  const q = fetch(`${srv.url}/v1/completions`, {
    method: 'POST', signal: ctl.signal, headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: 'dir-late', prompt: 'In', max_tokens: 200, stream: true }),
  }).catch(() => null);
  setTimeout(() => ctl.abort(), 2);
  await q;
  // The load may finish after the hang-up (then dir-late is registered): either way, once it
  // is done every version alive is a registered one and no request holds any.
  await until(async () => {
    const h = await health(srv.url);
    return h.slots.busy === 0 && h.waiting === 0 && h.requests === 1 &&
      h.adapters.live === h.adapters.loaded;
  });
  const all = (await call(srv.url, 'GET', '/v1/adapters')).body.data;
  assert.ok(all.every((e) => e.users === 0), JSON.stringify(all.map((e) => [e.name, e.users])));
  const h = await health(srv.url);
  assert.equal(h.adapters.live_bytes, h.adapters.resident_bytes);
});

test('POST /v1/adapters loads and replaces (version + 1); DELETE unloads', async () => {
  const g = (cfg) => golden('short-genesis', cfg);
  let r = await call(srv.url, 'POST', '/v1/adapters', { name: 'swap', path: 'dir-jargon.gguf' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.name, 'swap');
  assert.equal(r.body.version, 1);
  assert.equal(r.body.status, 'loaded');
  assert.equal((await complete({ model: 'swap' }, g('lora-jargon').prompt)).text,
    g('lora-jargon').generated_text);
  r = await call(srv.url, 'POST', '/v1/adapters', { name: 'swap', path: ggufPath('devil') });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.version, 2);
  const d = await complete({ model: 'swap' }, g('lora-devil').prompt);
  assert.equal(d.text, g('lora-devil').generated_text);
  assert.equal(d.version, 'swap@2');
  // The same content again keeps its version.
  r = await call(srv.url, 'POST', '/v1/adapters', { name: 'swap', path: ggufPath('devil'),
    pin: true });
  assert.equal(r.body.version, 2);
  assert.equal(r.body.pinned, true);
  r = await call(srv.url, 'DELETE', '/v1/adapters/swap');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body, { id: 'swap', object: 'adapter', deleted: true });
  assert.equal((await post(srv.url, '/v1/completions', { model: 'swap', prompt: 'In' })).status,
    404);
  r = await call(srv.url, 'DELETE', '/v1/adapters/swap');
  assert.equal(r.status, 404);
  assert.equal(r.body.error.code, 'adapter_not_found');
  assert.equal((await call(srv.url, 'PUT', '/v1/adapters', {})).status, 405);
  r = await call(srv.url, 'POST', '/v1/adapters', { name: MODEL_ID, path: ggufPath('devil') });
  assert.equal(r.status, 400);
  // The --adapter paths are roots one file each: the model beside them is not.
  r = await call(srv.url, 'POST', '/v1/adapters', { name: 'm', path: MODEL });
  assert.equal(r.status, 400);
  assert.equal(r.body.error.code, 'path_not_allowed');
  r = await call(srv.url, 'POST', '/v1/adapters', { name: 'bad name', path: ggufPath('devil') });
  assert.equal(r.status, 400);
  assert.equal(r.body.error.param, 'name');
});

// The prefix cache keys K and V by tokens and adapters: the same 145-token prompt
// under the base, adapter A, A at scale 0.5, and A replaced by other weights
// (same name) each gives its own golden; only an exact repeat is served from it.
test('the prefix cache never reuses across adapters, versions or scales', async () => {
  const prompt = golden('long-kjv').prompt_ids;
  const hits = async () => (await health(srv.url)).prefix_cache.hit_tokens;
  const load = async (path) => {
    const r = await call(srv.url, 'POST', '/v1/adapters', { name: 'swapme', path });
    assert.equal(r.status, 200, r.text);
  };
  await load(ggufPath('fortunes'));
  const steps = [
    [{}, 'base', null], [{}, 'base', 144], /* an earlier test may have cached the first */
    [{ model: 'swapme' }, 'lora-fortunes', 0], [{ model: 'swapme' }, 'lora-fortunes', 144],
    [{ model: 'swapme', lora_scale: 0.5 }, 'lora-fortunes-scale0.5', 0],
    ['replace', null, 0],
    [{ model: 'swapme' }, 'lora-jargon', 0], [{ model: 'swapme' }, 'lora-jargon', 144],
  ];
  for (const [fields, config, want] of steps) {
    if (fields === 'replace') {
      await load(ggufPath('jargon'));
      continue;
    }
    const before = await hits();
    const got = await complete(fields, prompt);
    assert.equal(got.text, golden('long-kjv', config).generated_text, config);
    if (want !== null)
      assert.equal(await hits() - before, want, `${config}: positions from the cache`);
  }
  assert.equal((await call(srv.url, 'DELETE', '/v1/adapters/swapme')).status, 200);
});

test('vLLM\'s /v1/load_lora_adapter and /v1/unload_lora_adapter', async () => {
  let r = await post(srv.url, '/v1/load_lora_adapter',
    { lora_name: 'vllm-devil', lora_path: peftPath('devil') });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.text, "Success: LoRA adapter 'vllm-devil' added successfully.");
  assert.match(r.headers.get('content-type'), /^text\/plain/);
  const g = golden('short-modern', 'lora-devil');
  assert.equal((await complete({ model: 'vllm-devil' }, g.prompt)).text, g.generated_text);
  r = await post(srv.url, '/v1/load_lora_adapter',
    { lora_name: 'vllm-devil', lora_path: peftPath('jargon') });
  assert.equal(r.status, 400);
  assert.match(r.body.error.message, /has already been loaded/);
  r = await post(srv.url, '/v1/load_lora_adapter',
    { lora_name: 'vllm-devil', lora_path: peftPath('jargon'), load_inplace: true });
  assert.equal(r.status, 200, r.text);
  assert.equal((await complete({ model: 'vllm-devil' }, g.prompt)).version, 'vllm-devil@2');
  r = await post(srv.url, '/v1/load_lora_adapter', { lora_name: 'x' });
  assert.equal(r.status, 400);
  assert.equal(r.body.error.message, "Both 'lora_name' and 'lora_path' must be provided.");
  r = await post(srv.url, '/v1/unload_lora_adapter', { lora_name: 'vllm-devil' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.text, "Success: LoRA adapter 'vllm-devil' removed successfully.");
  r = await post(srv.url, '/v1/unload_lora_adapter', { lora_name: 'vllm-devil' });
  assert.equal(r.status, 404);
  assert.equal(r.body.error.message, "The lora adapter 'vllm-devil' cannot be found.");
});

test('--max-adapter-memory: LRU eviction, pins, and 503 when nothing can go', async () => {
  // Room for two kjv adapters (933888 bytes each), not three.
  const s = await startServer(['--adapter-dir', adapterDir, '--max-adapter-memory', '2M']);
  try {
    const load = (name, path, pin) => call(s.url, 'POST', '/v1/adapters', { name, path, pin });
    assert.equal((await load('a', 'dir-fortunes.gguf', true)).status, 200);
    assert.equal((await load('b', 'dir-jargon.gguf', true)).status, 200);
    let r = await load('c', 'dir-devil', false);
    assert.equal(r.status, 503, r.text);
    assert.equal(r.body.error.code, 'adapter_memory_full');
    assert.match(r.body.error.message, /--max-adapter-memory/);
    assert.equal((await load('a', 'dir-fortunes.gguf', false)).status, 200);   // unpin
    assert.equal((await load('c', 'dir-devil', false)).status, 200);           // evicts a
    const st = Object.fromEntries((await call(s.url, 'GET', '/v1/adapters')).body.data
      .map((e) => [e.name, e.status]));
    assert.deepEqual(st, { a: 'evicted', b: 'loaded', c: 'loaded' });
    // Using a loads it again (evicting c, the least recently used unpinned one).
    const g = golden('short-moses', 'lora-fortunes');
    r = await post(s.url, '/v1/completions', { model: 'a', prompt: g.prompt, max_tokens: 32,
      temperature: 0 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.choices[0].text, g.generated_text);
    const h = await health(s.url);
    assert.equal(h.adapters.max_memory, 2 * 1024 * 1024);
    assert.ok(h.adapters.resident_bytes <= 2 * 1024 * 1024);
  } finally {
    assert.equal((await s.stop()).code, 0, s.stderr());
  }
});

test('adapters registered by POST before a restart are listed and used after it', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'loraserve-persist-'));
  const args = ['--adapter-dir', adapterDir];
  try {
    let s = await startServer(args, { dataDir });
    let r = await call(s.url, 'POST', '/v1/adapters', { name: 'kept', path: 'dir-jargon.gguf' });
    assert.equal(r.status, 200, r.text);
    r = await call(s.url, 'POST', '/v1/adapters', { name: 'kept', path: 'dir-devil' });
    assert.equal(r.body.version, 2);
    r = await post(s.url, '/v1/load_lora_adapter',
      { lora_name: 'kept2', lora_path: join(adapterDir, 'dir-jargon.gguf') });
    assert.equal(r.status, 200, r.text);
    assert.equal((await s.stop()).code, 0, s.stderr());

    s = await startServer(args, { dataDir });
    try {
      const list = (await call(s.url, 'GET', '/v1/adapters')).body.data;
      const kept = list.find((e) => e.name === 'kept');
      assert.equal(kept.version, 2);
      assert.equal(kept.format, 'peft');
      assert.equal(kept.status, 'evicted');   // loaded again on first use
      const ids = (await s.client.models.list()).data.map((m) => m.id);
      assert.ok(ids.includes('kept') && ids.includes('kept2'), ids.join());
      const g = golden('short-genesis', 'lora-devil');
      const gj = golden('short-genesis', 'lora-jargon');
      const [a, b] = await Promise.all([
        post(s.url, '/v1/completions', { model: 'kept', prompt: g.prompt, max_tokens: 32,
          temperature: 0 }),
        post(s.url, '/v1/completions', { model: 'kept2', prompt: gj.prompt, max_tokens: 32,
          temperature: 0 })]);
      assert.equal(a.body.choices[0].text, g.generated_text);
      assert.equal(a.headers.get('x-loraserve-adapter-version'), 'kept@2');
      assert.equal(b.body.choices[0].text, gj.generated_text);
    } finally {
      assert.equal((await s.stop()).code, 0, s.stderr());
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('LORASERVE_ADAPTER takes a comma-separated list; --adapter replaces it', async () => {
  const env = {
    LORASERVE_ADAPTER: `e1=${ggufPath('fortunes')},e2=${peftPath('jargon')}`,
    LORASERVE_MAX_ADAPTER_MEMORY: '64M', LORASERVE_MAX_LORA_RANK: '8',
  };
  let s = await startServer([], { env });
  try {
    const ids = (await s.client.models.list()).data.map((m) => m.id);
    assert.deepEqual(ids, [MODEL_ID, 'e1', 'e2']);
    assert.equal((await health(s.url)).adapters.max_memory, 64 * 2 ** 20);
  } finally {
    assert.equal((await s.stop()).code, 0, s.stderr());
  }
  s = await startServer(['--adapter', `f1=${ggufPath('devil')}`], { env });
  try {
    const ids = (await s.client.models.list()).data.map((m) => m.id);
    assert.deepEqual(ids, [MODEL_ID, 'f1']);
  } finally {
    assert.equal((await s.stop()).code, 0, s.stderr());
  }
});

test('an --adapter that cannot be loaded stops the start with its reason', async () => {
  await assert.rejects(startServer(['--adapter', `x=${MODEL}`]),
    /--adapter x: .*not a LoRA adapter/);
  await assert.rejects(startServer(['--adapter', 'no-equals-sign']), /expected NAME=PATH/);
});
