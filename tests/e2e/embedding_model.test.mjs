// embedding_model.test.mjs - a BERT GGUF given with --embedding-model: listed
// in /v1/models by its file name, /v1/embeddings giving llama.cpp's numbers
// for ../shared/models/embed's goldens (within the README's 1e-4), token ids
// as input, its context enforced, vector stores made with it (long chunks cut
// to its context), and the ways it is refused.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, post, call, SHARED, MODEL_ID } from './server.mjs';

const EMBED = join(SHARED, 'models', 'embed', 'bert-tiny-random-f16.gguf');
const ID = 'bert-tiny-random-f16';
const golden = (name) => JSON.parse(readFileSync(join(SHARED, 'models', 'embed', 'golden',
  `${name}.json`), 'utf8'));
const maxDiff = (a, b) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);

let srv;
before(async () => { srv = await startServer(['--embedding-model', EMBED]); });
after(async () => {
  const { code } = await srv.stop();
  assert.equal(code, 0, srv.stderr());
});

test('/v1/models lists the embedding model by its file name', async () => {
  const list = await srv.client.models.list();
  const ids = list.data.map((m) => m.id);
  assert.ok(ids.includes(MODEL_ID) && ids.includes(ID), ids.join(','));
  const one = await call(srv.url, 'GET', `/v1/models/${ID}`);
  assert.equal(one.status, 200, one.text);
  assert.equal(one.body.max_model_len, 512);
  assert.equal(one.body.dimensions, 256);
  assert.equal(one.body.root, EMBED);
});

test('embeddings match llama.cpp for the golden texts, through the openai client', async () => {
  const names = ['hello_world', 'accents', 'cjk', 'punctuation', 'special_in_text', 'long'];
  const gs = names.map(golden);
  const r = await srv.client.embeddings.create({ model: ID, input: gs.map((g) => g.text) });
  assert.equal(r.model, ID);
  assert.equal(r.data.length, names.length);
  for (const [i, g] of gs.entries()) {
    const d = maxDiff(r.data[i].embedding, g.embedding_mean);
    assert.ok(d <= 1e-4, `${names[i]}: max |diff| ${d}`);
  }
  const tokens = gs.reduce((s, g) => s + g.n_tokens, 0);
  assert.deepEqual(r.usage, { prompt_tokens: tokens, total_tokens: tokens });
});

test('token ids embed as the text does', async () => {
  const g = golden('subwords');
  const byText = await post(srv.url, '/v1/embeddings', { model: ID, input: g.text });
  const byIds = await post(srv.url, '/v1/embeddings', { model: ID, input: g.tokens });
  assert.equal(byIds.status, 200, byIds.text);
  assert.deepEqual(byIds.body.data[0].embedding, byText.body.data[0].embedding);
  assert.equal(byIds.body.usage.prompt_tokens, g.n_tokens);
});

test('inputs beyond its context and wrong dimensions are 400s; it cannot generate', async () => {
  const long = await post(srv.url, '/v1/embeddings', { model: ID, input: 'word '.repeat(600) });
  assert.equal(long.status, 400, long.text);
  assert.equal(long.body.error.code, 'context_length_exceeded');
  assert.match(long.body.error.message, /context \(512\)/);
  const dims = await post(srv.url, '/v1/embeddings', { model: ID, input: 'x', dimensions: 64 });
  assert.equal(dims.status, 400);
  assert.equal(dims.body.error.param, 'dimensions');
  const ids = await post(srv.url, '/v1/embeddings', { model: ID, input: [101, 30522] });
  assert.equal(ids.status, 400);
  const chat = await post(srv.url, '/v1/chat/completions', { model: ID,
    messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
  assert.equal(chat.status, 400, chat.text);
  assert.match(chat.body.error.message, /embedding model/);
  const adapter = await post(srv.url, '/v1/adapters', { name: ID, path: '/tmp/x.gguf' });
  assert.equal(adapter.status, 400, adapter.text);
});

test('a vector store embeds with it; a chunk beyond its context is cut, not refused', async () => {
  const c = await post(srv.url, '/v1/vector_stores', { name: 'bert', embedder: ID,
    chunking_strategy: { type: 'static', static: { max_chunk_size_tokens: 2000,
      chunk_overlap_tokens: 0 } } });
  assert.equal(c.status, 200, c.text);
  assert.equal(c.body.embedder, ID);
  const store = c.body.id;
  const docs = [
    { id: 'wept', text: 'Jesus wept.' },
    { id: 'shepherd', text: 'The LORD is my shepherd; I shall not want.' },
    { id: 'long', text: 'And the earth was without form, and void. '.repeat(120) },
  ];
  const a = await post(srv.url, `/v1/vector_stores/${store}/documents`, { documents: docs });
  assert.equal(a.status, 200, a.text);
  // random weights: only the same text is sure to be nearest (the same vector, cosine 1)
  const s = await post(srv.url, `/v1/vector_stores/${store}/search`,
    { query: 'The LORD is my shepherd; I shall not want.', mode: 'vector' });
  assert.equal(s.status, 200, s.text);
  assert.equal(s.body.data[0].document_id ?? s.body.data[0].file_id, 'shepherd');
  assert.ok(Math.abs(s.body.data[0].score - 1) < 1e-5, `${s.body.data[0].score}`);
  const v = await srv.client.embeddings.create({ model: ID, input: 'Jesus wept.' });
  const byVec = await post(srv.url, `/v1/vector_stores/${store}/search`,
    { query: v.data[0].embedding, mode: 'vector' });
  assert.equal(byVec.status, 200, byVec.text);
  assert.equal(byVec.body.data[0].document_id ?? byVec.body.data[0].file_id, 'wept');
});

test('--embedding-pooling cls gives the golden CLS vectors', async () => {
  const cls = await startServer(['--embedding-model', EMBED, '--embedding-pooling', 'cls']);
  try {
    const g = golden('hello_world');
    const r = await cls.client.embeddings.create({ model: ID, input: g.text });
    const d = maxDiff(r.data[0].embedding, g.embedding_cls);
    assert.ok(d <= 1e-4, `max |diff| ${d}`);
  } finally {
    assert.equal((await cls.stop()).code, 0);
  }
});

test('a file that is not a BERT embedding model stops the server at start', async () => {
  const llama = join(SHARED, 'models', 'kjv-tiny-q8_0.gguf');
  await assert.rejects(startServer(['--embedding-model', llama]), /not a BERT embedding model/);
  await assert.rejects(startServer(['--embedding-model', '/nonexistent/e.gguf']),
    /nonexistent\/e\.gguf/);
  await assert.rejects(startServer(['--embedding-model', EMBED, '--embedding-pooling', 'max']),
    /--embedding-pooling must be mean, cls or last/);
});
