// vector_stores.test.mjs - /v1/vector_stores through HTTP: a store's
// lifecycle, adding documents, search in every mode with filters and a
// threshold, deleting a document, everything read back after a restart, bad
// input (unknown store, wrong vector size, empty or oversized documents, bad
// filters, wrong methods), and a 10 MB document accepted and chunked when
// --max-body allows it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, post, call } from './server.mjs';

const DOCS = [
  { id: 'gen1', text: 'In the beginning God created the heaven and the earth. And the earth was ' +
    'without form, and void; and darkness was upon the face of the deep.',
  metadata: { book: 'Genesis', chapter: 1, law: true } },
  { id: 'ps23', text: 'The LORD is my shepherd; I shall not want. He maketh me to lie down in ' +
    'green pastures: he leadeth me beside the still waters.', metadata: { book: 'Psalms', chapter: 23 } },
  { id: 'john11', text: 'Jesus wept. Then said the Jews, Behold how he loved him!',
    metadata: { book: 'John', chapter: 11 } },
  { id: 'ex20', text: 'Thou shalt not kill. Thou shalt not commit adultery. Thou shalt not steal.',
    metadata: { book: 'Exodus', chapter: 20, law: true } },
  { text: 'A soft answer turneth away wrath: but grievous words stir up anger.',
    metadata: { book: 'Proverbs', chapter: 15 } },
];

let srv, dataDir, store;
before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'loraserve-vs-'));
  srv = await startServer(['--max-body', String(256 * 1024)], { dataDir });
});
after(async () => {
  const { code } = await srv.stop();
  assert.equal(code, 0, srv.stderr());
  rmSync(dataDir, { recursive: true, force: true });
});

const search = (body) => post(srv.url, `/v1/vector_stores/${store}/search`, body);
const files = (r) => r.body.data.map((d) => d.file_id);

test('a store is created, filled and listed', async () => {
  const c = await post(srv.url, '/v1/vector_stores', { name: 'bible', metadata: { lang: 'en' } });
  assert.equal(c.status, 200, c.text);
  assert.match(c.body.id, /^vs_[0-9a-f]{24}$/);
  assert.equal(c.body.object, 'vector_store');
  assert.equal(c.body.name, 'bible');
  assert.deepEqual(c.body.metadata, { lang: 'en' });
  assert.deepEqual(c.body.chunking_strategy,
    { type: 'static', static: { max_chunk_size_tokens: 800, chunk_overlap_tokens: 400 } });
  store = c.body.id;
  const a = await post(srv.url, `/v1/vector_stores/${store}/documents`, { documents: DOCS });
  assert.equal(a.status, 200, a.text);
  assert.deepEqual(a.body.data.slice(0, 4).map((d) => d.id), ['gen1', 'ps23', 'john11', 'ex20']);
  assert.match(a.body.data[4].id, /^doc_[0-9a-f]{24}$/);
  assert.ok(a.body.data.every((d) => d.chunks === 1));
  const g = await call(srv.url, 'GET', `/v1/vector_stores/${store}`);
  assert.equal(g.body.file_counts.completed, 5);
  assert.ok(g.body.usage_bytes > 5 * 384 * 4);
  const l = await call(srv.url, 'GET', '/v1/vector_stores');
  assert.equal(l.body.object, 'list');
  assert.deepEqual(l.body.data.map((v) => v.id), [store]);
  const d = await call(srv.url, 'GET', `/v1/vector_stores/${store}/documents`);
  assert.equal(d.body.data.length, 5);
  assert.deepEqual(d.body.data[0].metadata, DOCS[0].metadata);
});

test('search: every mode finds the passage; filters and a threshold narrow it', async () => {
  for (const mode of ['vector', 'keyword', 'hybrid']) {
    const r = await search({ query: 'who is my shepherd', mode, max_num_results: 3 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.object, 'vector_store.search_results.page');
    assert.equal(r.body.search_query, 'who is my shepherd');
    assert.equal(r.body.data[0].file_id, 'ps23', mode);
    assert.deepEqual(r.body.data[0].attributes, DOCS[1].metadata);
    assert.match(r.body.data[0].content[0].text, /shepherd/);
    assert.ok(r.body.data.length <= 3);
  }
  const f = await search({ query: 'the earth', filters: { type: 'and', filters: [
    { type: 'eq', key: 'law', value: true }, { type: 'gte', key: 'chapter', value: 20 }] } });
  assert.deepEqual(files(f), ['ex20']);
  const inn = await search({ query: 'the earth', mode: 'vector',
    filters: { type: 'in', key: 'book', value: ['John', 'Psalms'] } });
  assert.deepEqual(files(inn).sort(), ['john11', 'ps23']);
  const th = await search({ query: 'who is my shepherd', mode: 'vector',
    ranking_options: { score_threshold: 0.99 } });
  assert.deepEqual(th.body.data, []);
  const emb = await post(srv.url, '/v1/embeddings', { input: 'the still waters', encoding_format: 'float' });
  const byVec = await search({ query: emb.body.data[0].embedding, max_num_results: 1 });
  assert.deepEqual(files(byVec), ['ps23']);
});

test('a deleted document is gone from every mode', async () => {
  const d = await call(srv.url, 'DELETE', `/v1/vector_stores/${store}/documents/john11`);
  assert.equal(d.status, 200, d.text);
  assert.deepEqual(d.body, { id: 'john11', object: 'vector_store.document.deleted', deleted: true });
  for (const mode of ['vector', 'keyword', 'hybrid'])
    assert.ok(!files(await search({ query: 'Jesus wept', mode })).includes('john11'), mode);
  const again = await call(srv.url, 'DELETE', `/v1/vector_stores/${store}/documents/john11`);
  assert.equal(again.status, 404);
});

test('bad input is an OpenAI error', async () => {
  const cases = [
    [`/v1/vector_stores/vs_nope/search`, { query: 'x' }, 404],
    [`/v1/vector_stores/vs_nope/documents`, { documents: [{ text: 'x' }] }, 404],
    [`/v1/vector_stores/${store}/search`, { query: [0.5, 0.5] }, 400],
    [`/v1/vector_stores/${store}/search`, { query: '' }, 400],
    [`/v1/vector_stores/${store}/search`, { query: 'x', max_num_results: 51 }, 400],
    [`/v1/vector_stores/${store}/search`, { query: 'x', mode: 'fuzzy' }, 400],
    [`/v1/vector_stores/${store}/search`, { query: 'x', filters: { type: 'like' } }, 400],
    [`/v1/vector_stores/${store}/search`, { query: 'x', filters: { type: 'eq', key: 'a' } }, 400],
    [`/v1/vector_stores/${store}/documents`, { documents: [] }, 400],
    [`/v1/vector_stores/${store}/documents`, { documents: [{ text: '' }] }, 400],
    [`/v1/vector_stores/${store}/documents`, { documents: [{ text: '   \n' }] }, 400],
    [`/v1/vector_stores/${store}/documents`, { documents: [{ id: 'a b', text: 'x' }] }, 400],
    ['/v1/vector_stores', { chunking_strategy: { type: 'static',
      static: { max_chunk_size_tokens: 100, chunk_overlap_tokens: 100 } } }, 400],
    ['/v1/vector_stores', { metadata: 'x' }, 400],
  ];
  for (const [path, body, status] of cases) {
    const r = await post(srv.url, path, body);
    assert.equal(r.status, status, `${path} ${JSON.stringify(body)}: ${r.text}`);
    assert.equal(typeof r.body.error.message, 'string');
  }
  const big = await post(srv.url, `/v1/vector_stores/${store}/documents`,
    { documents: [{ text: 'word '.repeat(60000) }] });
  assert.equal(big.status, 413);
  const m = await call(srv.url, 'POST', `/v1/vector_stores/${store}`);
  assert.equal(m.status, 405);
  assert.equal(m.headers.get('allow'), 'GET, DELETE');
  assert.equal((await call(srv.url, 'GET', `/v1/vector_stores/${store}/nothing`)).status, 404);
});

test('stores and documents survive a restart; a deleted store is gone', async () => {
  const { code } = await srv.stop();
  assert.equal(code, 0);
  srv = await startServer(['--max-body', String(256 * 1024)], { dataDir });
  const r = await search({ query: 'thou shalt not steal', max_num_results: 1 });
  assert.deepEqual(files(r), ['ex20']);
  const g = await call(srv.url, 'GET', `/v1/vector_stores/${store}`);
  assert.equal(g.body.file_counts.completed, 4);
  const d = await call(srv.url, 'DELETE', `/v1/vector_stores/${store}`);
  assert.deepEqual(d.body, { id: store, object: 'vector_store.deleted', deleted: true });
  assert.equal((await call(srv.url, 'GET', `/v1/vector_stores/${store}`)).status, 404);
  assert.equal((await search({ query: 'x' })).status, 404);
});

test('a 10 MB document is accepted and chunked when --max-body allows it', async () => {
  const big = await startServer(['--max-body', String(16 << 20)]);
  try {
    const id = (await post(big.url, '/v1/vector_stores', { name: 'big' })).body.id;
    const words = ('and the lord said unto moses go down charge the people lest they break ' +
      'through unto the lord to gaze and many of them perish').split(' ');
    const text = Array.from({ length: 2_200_000 }, (_, i) => words[(i * 7 + (i >> 4)) % words.length])
      .join(' ');
    assert.ok(text.length >= 10_000_000);
    const r = await post(big.url, `/v1/vector_stores/${id}/documents`,
      { documents: [{ id: 'big', text: `${text} shepherd` }] });
    assert.equal(r.status, 200, r.text.slice(0, 300));
    assert.ok(r.body.data[0].chunks > 5000, `${r.body.data[0].chunks} chunks`);
    const s = await post(big.url, `/v1/vector_stores/${id}/search`,
      { query: 'shepherd', mode: 'keyword', max_num_results: 1 });
    assert.equal(s.body.data[0].file_id, 'big');
    assert.match(s.body.data[0].content[0].text, /shepherd$/);
  } finally {
    await big.stop();
  }
});

test("a store can embed with the served model; an unknown embedder is refused", async () => {
  const c = await post(srv.url, '/v1/vector_stores', { name: 'by-model', embedder: 'kjv-tiny-f32' });
  assert.equal(c.status, 200, c.text);
  assert.equal(c.body.embedder, 'kjv-tiny-f32');
  assert.ok(c.body.dimensions >= 64 && c.body.dimensions !== 384);
  const a = await post(srv.url, `/v1/vector_stores/${c.body.id}/documents`, { documents: DOCS });
  assert.equal(a.status, 200, a.text);
  const r = await post(srv.url, `/v1/vector_stores/${c.body.id}/search`,
    { query: DOCS[1].text, mode: 'vector', max_num_results: 1 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.data[0].file_id, 'ps23');     // its own text is nearest
  assert.ok(r.body.data[0].score > 0.99, `${r.body.data[0].score}`);
  const bad = await post(srv.url, '/v1/vector_stores', { embedder: 'bert' });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.param, 'embedder');
});
