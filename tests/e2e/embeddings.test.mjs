// embeddings.test.mjs - POST /v1/embeddings with the official openai client
// (which asks for base64 and decodes it) and raw requests: shapes, usage,
// float and base64 agreeing, dimensions, unit length, a question nearest its
// verse, the served model's own embeddings (text and token ids), and every
// refusal as OpenAI's error object.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, post } from './server.mjs';

let srv;
before(async () => { srv = await startServer(['--embedding-dim', '256']); });
after(async () => {
  const { code } = await srv.stop();
  assert.equal(code, 0, srv.stderr());
});

const dot = (a, b) => a.reduce((s, x, i) => s + x * b[i], 0);

test('the openai client embeds a string and an array', async () => {
  const one = await srv.client.embeddings.create({ model: 'hash', input: 'Jesus wept.' });
  assert.equal(one.object, 'list');
  assert.equal(one.model, 'hash');
  assert.equal(one.data.length, 1);
  assert.equal(one.data[0].object, 'embedding');
  assert.equal(one.data[0].index, 0);
  assert.equal(one.data[0].embedding.length, 256);
  assert.ok(Math.abs(dot(one.data[0].embedding, one.data[0].embedding) - 1) < 1e-5);
  assert.deepEqual(one.usage, { prompt_tokens: 2, total_tokens: 2 });

  const many = await srv.client.embeddings.create({
    model: 'hash', input: ['In the beginning God created the heaven and the earth.', 'Jesus wept.'],
  });
  assert.deepEqual(many.data.map((d) => d.index), [0, 1]);
  assert.deepEqual(many.data[1].embedding, one.data[0].embedding);
  assert.equal(many.usage.prompt_tokens, 12);
});

test('float and base64 carry the same vector; dimensions picks the size', async () => {
  const body = { input: 'The LORD is my shepherd; I shall not want.' };
  const f = await post(srv.url, '/v1/embeddings', { ...body, encoding_format: 'float' });
  const b = await post(srv.url, '/v1/embeddings', { ...body, encoding_format: 'base64' });
  assert.equal(f.status, 200, f.text);
  assert.equal(b.status, 200, b.text);
  const bytes = Buffer.from(b.body.data[0].embedding, 'base64');
  const decoded = Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4));
  assert.deepEqual(decoded, f.body.data[0].embedding.map((x) => Math.fround(x)));
  const small = await srv.client.embeddings.create({ input: body.input, dimensions: 32 });
  assert.equal(small.data[0].embedding.length, 32);
  assert.ok(Math.abs(dot(small.data[0].embedding, small.data[0].embedding) - 1) < 1e-5);
});

test('a question lands nearest the verse with its words', async () => {
  const verses = [
    'In the beginning God created the heaven and the earth.',
    'The LORD is my shepherd; I shall not want.',
    'Blessed are the meek: for they shall inherit the earth.',
    'A soft answer turneth away wrath: but grievous words stir up anger.',
  ];
  const r = await srv.client.embeddings.create({
    input: [...verses, 'who will inherit the earth', 'how is wrath turned away'],
  });
  const v = r.data.map((d) => d.embedding);
  const best = (q) => verses.map((_, i) => dot(q, v[i])).reduce((b, s, i, a) => (s > a[b] ? i : b), 0);
  assert.equal(best(v[4]), 2);
  assert.equal(best(v[5]), 3);
});

test('the served model embeds too: its hidden states, pooled, unit length', async () => {
  const r = await srv.client.embeddings.create({ model: 'kjv-tiny-f32',
    input: ['In the beginning God created the heaven and the earth.', 'Jesus wept.'] });
  assert.equal(r.model, 'kjv-tiny-f32');
  assert.equal(r.data.length, 2);
  const [a, b] = r.data.map((d) => d.embedding);
  assert.ok(a.length >= 64, `${a.length} dimensions`);
  const hashed = await srv.client.embeddings.create({ model: 'hash', input: 'Jesus wept.' });
  assert.notDeepEqual(hashed.data[0].embedding, b);
  assert.ok(Math.abs(dot(a, a) - 1) < 1e-4 && Math.abs(dot(b, b) - 1) < 1e-4);
  assert.ok(r.usage.prompt_tokens > 10);
  const again = await post(srv.url, '/v1/embeddings', { model: 'kjv-tiny-f32', input: 'Jesus wept.',
    encoding_format: 'float' });
  assert.deepEqual(again.body.data[0].embedding.map((x) => Math.fround(x)), b);
  const ids = await post(srv.url, '/v1/embeddings', { model: 'kjv-tiny-f32', input: [1, 1043, 261],
    encoding_format: 'float' });
  assert.equal(ids.status, 200, ids.text);
  assert.equal(ids.body.usage.prompt_tokens, 3);
});

test('bad requests are OpenAI errors', async () => {
  const cases = [
    [{ input: 'x', model: 'text-embedding-3-small' }, 404, 'model', 'model_not_found'],
    [{ input: 'x', model: 'kjv-tiny-f32', dimensions: 8 }, 400, 'dimensions', 'invalid_value'],
    [{ input: 'the '.repeat(300), model: 'kjv-tiny-f32' }, 400, 'input', 'context_length_exceeded'],
    [{ input: [[1, 99999]], model: 'kjv-tiny-f32' }, 400, 'input', 'invalid_value'],
    [{}, 400, 'input', 'missing_required_parameter'],
    [{ input: '' }, 400, 'input', 'invalid_value'],
    [{ input: [] }, 400, 'input', 'invalid_value'],
    [{ input: ['a', ''] }, 400, 'input', 'invalid_value'],
    [{ input: [1, 2, 3] }, 400, 'input', 'invalid_value'],
    [{ input: [[1, 2]] }, 400, 'input', 'invalid_value'],
    [{ input: { text: 'a' } }, 400, 'input', 'invalid_type'],
    [{ input: Array(2049).fill('a') }, 400, 'input', 'invalid_value'],
    [{ input: 'x', encoding_format: 'hex' }, 400, 'encoding_format', 'invalid_value'],
    [{ input: 'x', dimensions: 0 }, 400, 'dimensions', 'invalid_value'],
    [{ input: 'x', dimensions: 8193 }, 400, 'dimensions', 'invalid_value'],
    [{ input: 'x', dimensions: 1.5 }, 400, 'dimensions', 'invalid_value'],
    [{ input: 'x', model: 7 }, 400, 'model', 'invalid_type'],
  ];
  for (const [body, status, param, code] of cases) {
    const r = await post(srv.url, '/v1/embeddings', body);
    assert.equal(r.status, status, `${JSON.stringify(body).slice(0, 60)}: ${r.text}`);
    assert.equal(r.body.error.param, param);
    assert.equal(r.body.error.code, code);
  }
  const bad = await post(srv.url, '/v1/embeddings', '{"input": "x",');
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.code, 'invalid_json');
  await assert.rejects(srv.client.embeddings.create({ model: 'nope', input: 'x' }),
    (e) => e.status === 404);
});

test('a bad --embedding-dim stops the server at start', async () => {
  await assert.rejects(startServer(['--embedding-dim', '0']), /--embedding-dim must be 1..8192/);
});
