// bad_adapters.test.mjs - every way an adapter can be wrong, through
// POST /v1/adapters and vLLM's /v1/load_lora_adapter: each is a 400 with
// OpenAI's error object and one line saying what is wrong, and afterwards the
// server still serves the base model and its adapters exactly.
//
// The bad files are made here from the good fixtures, in a temporary
// --adapter-dir (so every path is inside the roots, except the ones that test
// the roots).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  startServer, post, call, golden, health, BASE_CASES, BIN, MODEL, SHARED, ggufPath, peftPath,
} from './server.mjs';

// ---- safetensors and PEFT directories ----

function readSafetensors(buf) {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const data = buf.subarray(8 + n);
  const tensors = Object.entries(header).filter(([k]) => k !== '__metadata__')
    .map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape,
      data: Buffer.from(data.subarray(t.data_offsets[0], t.data_offsets[1])) }));
  return tensors.sort((a, b) => (a.name < b.name ? -1 : 1));
}

function writeSafetensors(tensors) {
  const header = { __metadata__: { format: 'pt' } };
  let off = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.data.length] };
    off += t.data.length;
  }
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  return Buffer.concat([len, h, ...tensors.map((t) => t.data)]);
}

const GOOD_CONFIG = readFileSync(join(peftPath('fortunes'), 'adapter_config.json'), 'utf8');
const GOOD_ST = readFileSync(join(peftPath('fortunes'), 'adapter_model.safetensors'));
const Q0_A = 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight';

function peftDir(root, name, { config = GOOD_CONFIG, st = GOOD_ST } = {}) {
  mkdirSync(join(root, name));
  if (config !== null) writeFileSync(join(root, name, 'adapter_config.json'), config);
  if (st !== null) writeFileSync(join(root, name, 'adapter_model.safetensors'), st);
}

// The good tensors with one changed by fn.
function editTensors(fn) {
  const ts = readSafetensors(GOOD_ST);
  fn(ts.find((t) => t.name === Q0_A), ts);
  return writeSafetensors(ts);
}

// ---- The cases ----

let dir;
let srv;
const outsideFile = () => join(dir, '..', `${dir.split('/').at(-1)}-outside.gguf`);

function makeBadFiles() {
  const root = join(dir, 'bad');
  mkdirSync(root);
  peftDir(root, 'truncated', { st: GOOD_ST.subarray(0, GOOD_ST.length >> 1) });
  const huge = Buffer.from(GOOD_ST);
  huge.writeBigUInt64LE(0xffffffffffffff00n, 0);
  peftDir(root, 'header-overflow', { st: huge });
  const hdr = GOOD_ST.subarray(0, 8 + Number(GOOD_ST.readBigUInt64LE(0)));
  peftDir(root, 'data-missing', { st: hdr });
  peftDir(root, 'wrong-shape', { st: editTensors((t) => {
    t.shape = [8, 128];
    t.data = t.data.subarray(0, 8 * 128 * 4);
  }) });
  peftDir(root, 'nan', { st: editTensors((t) => t.data.writeFloatLE(NaN, 12)) });
  peftDir(root, 'bad-json', { config: '{"r": 8, "lora_alpha": 16, "target_modules": [' });
  peftDir(root, 'rank-zero', { config: GOOD_CONFIG.replace('"r": 8', '"r": 0') });
  peftDir(root, 'unknown-module', { st: editTensors((t, ts) => {
    ts.push({ ...t, name: Q0_A.replace('self_attn.q_proj', 'self_attn.rotary_emb') });
  }) });
  peftDir(root, 'no-config', { config: null });
  // GGUF-LoRA files: another architecture, cut short, empty, a model, rank 16 > 8.
  const arch = Buffer.from(readFileSync(ggufPath('fortunes')));
  const at = arch.indexOf('general.architecture') + 'general.architecture'.length + 4 + 8;
  assert.equal(arch.toString('latin1', at, at + 5), 'llama');
  arch.write('qwen2', at, 'latin1');
  writeFileSync(join(root, 'other-arch.gguf'), arch);
  writeFileSync(join(root, 'truncated.gguf'), readFileSync(ggufPath('devil')).subarray(0, 4000));
  writeFileSync(join(root, 'empty.gguf'), '');
  copyFileSync(join(SHARED, 'models', 'kjv-tiny-q8_0.gguf'), join(root, 'model.gguf'));
  const mk = spawnSync(BIN, ['mkadapter', join(root, 'rank16.gguf'), '--model', MODEL,
    '--rank', '16'], { encoding: 'utf8' });
  assert.equal(mk.status, 0, mk.stderr);
  // Outside the roots: a file next to the adapter dir, and a link to it from inside.
  copyFileSync(ggufPath('jargon'), outsideFile());
  symlinkSync(outsideFile(), join(root, 'link-out.gguf'));
}

// [path, param, what the one-line message must say]
const CASES = [
  ['bad/truncated', 'path', /adapter_model\.safetensors: .* are not within the data/],
  ['bad/header-overflow', 'path', /safetensors: header length \d+ is above the limit/],
  ['bad/data-missing', 'path', /are not within the data \(0 bytes\)/],
  ['bad/wrong-shape', 'path', /lora_A is \(8, 128\).* another base model/],
  ['bad/nan', 'path', /blk\.0\.attn_q: adapter weights hold NaN/],
  ['bad/bad-json', 'path', /bad-json\/adapter_config\.json: /],
  ['bad/rank-zero', 'path', /adapter_config\.json: r must be a positive integer \(got 0\)/],
  ['bad/unknown-module', 'path', /rotary_emb is not one loraserve can adapt/],
  ['bad/no-config', 'path', /not a PEFT adapter directory \(no adapter_config\.json\)/],
  ['bad/other-arch.gguf', 'path', /another architecture/],
  ['bad/truncated.gguf', 'path', /truncated\.gguf: .*truncated/],
  ['bad/empty.gguf', 'path', /empty\.gguf: truncated reading magic/],
  ['bad/model.gguf', 'path', /not a LoRA adapter/],
  ['bad/rank16.gguf', 'path', /rank 16 is out of range \[1, 8\]/],
  ['bad/no-such-file.gguf', 'path', /no such file/],
  ['/etc/passwd', 'path', /^\/etc\/passwd: not inside the adapter roots/],
  ['/etc/no-such-file', 'path', /^\/etc\/no-such-file: not inside the adapter roots/],
  ['../x-outside.gguf', 'path', /not inside the adapter roots/],
  ['bad/link-out.gguf', 'path', /not inside the adapter roots/],
];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'loraserve-bad-'));
  makeBadFiles();
  srv = await startServer(['--adapter-dir', dir, '--max-lora-rank', '8',
    '--adapter', `fortunes=${ggufPath('fortunes')}`, '--adapter', `devil=${peftPath('devil')}`]);
});
after(async () => {
  const { code } = await srv.stop();
  rmSync(outsideFile(), { force: true });
  rmSync(dir, { recursive: true, force: true });
  assert.equal(code, 0, srv.stderr());
});

function checkError(r, param, what, label) {
  assert.equal(r.status, 400, `${label}: ${r.text}`);
  const e = r.body?.error;
  assert.ok(e, `${label}: not an error object: ${r.text}`);
  assert.deepEqual(Object.keys(e).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(e.type, 'invalid_request_error');
  assert.equal(e.param, param, label);
  assert.equal(typeof e.code, 'string');
  assert.ok(!e.message.includes('\n'), `${label}: one line: ${e.message}`);
  assert.match(e.message, what, label);
}

test(`${CASES.length} bad adapters through POST /v1/adapters are each a clear 400`, async () => {
  for (const [path, param, what] of CASES) {
    const p = path.startsWith('../') ? outsideFile().replace(/^.*\//, '../') : path;
    const r = await call(srv.url, 'POST', '/v1/adapters', { name: 'bad', path: p });
    checkError(r, param, what, path);
  }
});

test('the same through vLLM\'s /v1/load_lora_adapter, with absolute paths', async () => {
  for (const [path, , what] of CASES) {
    const p = path.startsWith('/') ? path : path.startsWith('../') ? outsideFile()
      : join(dir, path);
    const r = await post(srv.url, '/v1/load_lora_adapter', { lora_name: 'bad', lora_path: p });
    checkError(r, 'path', what, path);
  }
});

test('outside the roots, an existing and a missing file get the same answer', async () => {
  const a = await call(srv.url, 'POST', '/v1/adapters', { name: 'x', path: outsideFile() });
  const b = await call(srv.url, 'POST', '/v1/adapters',
    { name: 'x', path: `${outsideFile()}.missing` });
  assert.equal(a.status, b.status);
  assert.equal(a.body.error.code, b.body.error.code);
  assert.equal(a.body.error.message.replace(outsideFile(), 'P'),
    b.body.error.message.replace(`${outsideFile()}.missing`, 'P'));
});

test('bad requests to the management API are 400s too', async () => {
  const cases = [
    [{ path: 'bad/nan' }, 'name'], [{ name: 'x' }, 'path'], [{ name: 5, path: 'x' }, 'name'],
    [{ name: 'x', path: 'bad/nan', pin: 'yes' }, 'pin'], [{ name: '.hidden', path: 'x' }, 'name'],
  ];
  for (const [body, param] of cases) {
    const r = await call(srv.url, 'POST', '/v1/adapters', body);
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.error.param, param);
  }
  assert.equal((await post(srv.url, '/v1/adapters', '{"name":')).status, 400);
  assert.equal((await post(srv.url, '/v1/adapters', '[1]')).status, 400);
  assert.equal((await post(srv.url, '/v1/unload_lora_adapter', {})).status, 400);
});

test('a bad file never replaces a good adapter, and the server serves on', async () => {
  const r = await call(srv.url, 'POST', '/v1/adapters', { name: 'fortunes', path: 'bad/nan' });
  assert.equal(r.status, 400);
  const list = (await call(srv.url, 'GET', '/v1/adapters')).body.data;
  assert.deepEqual(list.map((e) => [e.name, e.version, e.status]),
    [['devil', 1, 'loaded'], ['fortunes', 1, 'loaded']]);
  for (const p of BASE_CASES) {
    for (const [config, model] of [['base', undefined], ['lora-fortunes', 'fortunes'],
      ['lora-devil', 'devil']]) {
      const g = golden(p, config);
      const res = await post(srv.url, '/v1/completions',
        { model, prompt: g.prompt, max_tokens: 32, temperature: 0 });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.choices[0].text, g.generated_text, `${config} ${p}`);
    }
  }
  const h = await health(srv.url);
  assert.equal(h.status, 'ok');
  assert.equal(h.adapters.registered, 2);
  assert.equal(h.adapters.live, 2);
  assert.equal(h.adapters.live_bytes, h.adapters.resident_bytes);
});
