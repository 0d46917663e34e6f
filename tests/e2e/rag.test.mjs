// rag.test.mjs - "retrieval" on chat and completions: the best chunks come
// back in the response (the first SSE chunk when streaming), the prompt the
// model saw holds them (echo), it works with an adapter in the same request,
// chunks that do not fit the context are left out, and bad retrieval fields
// are OpenAI errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, post, readEvents, ggufPath } from './server.mjs';

const DOCS = [
  { id: 'ps23', text: 'The LORD is my shepherd; I shall not want. He maketh me to lie down in ' +
    'green pastures: he leadeth me beside the still waters.' },
  { id: 'john11', text: 'Jesus wept. Then said the Jews, Behold how he loved him!' },
  { id: 'ex20', text: 'Thou shalt not kill. Thou shalt not commit adultery. Thou shalt not steal.' },
  { id: 'prov15', text: 'A soft answer turneth away wrath: but grievous words stir up anger.' },
];

let srv, store;
before(async () => {
  srv = await startServer(['--adapter', `jargon=${ggufPath('jargon')}`]);
  store = (await post(srv.url, '/v1/vector_stores', { name: 'rag' })).body.id;
  const a = await post(srv.url, `/v1/vector_stores/${store}/documents`, { documents: DOCS });
  assert.equal(a.status, 200, a.text);
});
after(async () => {
  const { code } = await srv.stop();
  assert.equal(code, 0, srv.stderr());
});

const chat = (extra) => post(srv.url, '/v1/chat/completions', {
  messages: [{ role: 'user', content: 'Who is my shepherd?' }], max_tokens: 8, temperature: 0,
  ...extra,
});

test('chat: the chunks come back and the prompt held them', async () => {
  const r = await chat({ retrieval: { vector_store_ids: [store], top_k: 2, echo: true } });
  assert.equal(r.status, 200, r.text);
  const { chunks, prompt } = r.body.retrieval;
  assert.equal(chunks.length, 2);
  assert.equal(chunks[0].document_id, 'ps23');
  assert.equal(chunks[0].vector_store_id, store);
  assert.match(chunks[0].text, /shepherd/);
  assert.ok(chunks[0].score >= chunks[1].score);
  assert.ok(prompt.includes('[1] (document ps23) The LORD is my shepherd'), prompt);
  assert.ok(prompt.includes(`[2] (document ${chunks[1].document_id})`), prompt);
  assert.ok(prompt.indexOf('[1]') < prompt.indexOf('Who is my shepherd?'));
  assert.equal(r.body.choices.length, 1);
  // without retrieval the usage shows a much shorter prompt
  const plain = await chat({});
  assert.ok(r.body.usage.prompt_tokens > plain.body.usage.prompt_tokens + 20);
  assert.equal(plain.body.retrieval, undefined);
});

test('chat stream: the first chunk carries the chunks; the rest as usual', async () => {
  const res = await fetch(`${srv.url}/v1/chat/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'why did Jesus weep' }],
      max_tokens: 6, temperature: 0, stream: true,
      retrieval: { vector_store_ids: [store], top_k: 1, mode: 'keyword' } }),
  });
  const { events } = await readEvents(res);
  assert.deepEqual(events[0].choices, []);
  assert.equal(events[0].retrieval.chunks[0].document_id, 'john11');
  assert.equal(events[1].choices[0].delta.role, 'assistant');
  assert.equal(events.at(-1), '[DONE]');
  const stream = await srv.client.chat.completions.create({
    messages: [{ role: 'user', content: 'turn away wrath' }], max_tokens: 4, stream: true,
    retrieval: { vector_store_ids: [store], top_k: 1 },
  });
  let text = '';
  for await (const ch of stream) text += ch.choices[0]?.delta?.content ?? '';
  assert.equal(typeof text, 'string');
});

test('completions with retrieval, and with an adapter in the same request', async () => {
  const r = await post(srv.url, '/v1/completions', {
    prompt: 'Thou shalt not steal', max_tokens: 4, temperature: 0, model: 'jargon',
    retrieval: { vector_store_ids: [store], top_k: 1, echo: true },
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.model, 'jargon');
  assert.match(r.headers.get('x-loraserve-adapter-version'), /^jargon@1$/);
  assert.equal(r.body.retrieval.chunks[0].document_id, 'ex20');
  assert.match(r.body.retrieval.prompt, /\[1\] \(document ex20\)[\s\S]*Thou shalt not steal$/);
});

test('chunks that would not fit the context are left out', async () => {
  // The test model's context is 256 tokens; ask for 200 of them for the answer.
  const r = await chat({ max_tokens: 200, retrieval: { vector_store_ids: [store], top_k: 4 } });
  assert.equal(r.status, 200, r.text);
  assert.ok(r.body.retrieval.chunks.length < 4, JSON.stringify(r.body.retrieval.chunks));
  assert.ok(r.body.usage.prompt_tokens + 200 <= 256);
});

test('at the edge of the context, a chunk is kept only if the whole prompt still fits', async () => {
  // the model's context is 256; these sizes leave a few tokens more or less than a chunk needs,
  // where an estimate of the prompt (no BOS, the chat template's tokens) used to err
  for (const max of [160, 170, 180, 190, 200, 210, 220]) {
    const c = await post(srv.url, '/v1/completions', { prompt: 'And what is a hacker?',
      max_tokens: max, retrieval: { vector_store_ids: [store], top_k: 2 } });
    assert.equal(c.status, 200, `completion, max_tokens ${max}: ${c.text}`);
    const m = await post(srv.url, '/v1/chat/completions', { max_tokens: max - 80, messages: [
      { role: 'user', content: 'What is a computer program?' },
      { role: 'assistant', content: 'A thing of the LORD.' },
      { role: 'user', content: 'And what is a hacker?' }],
    retrieval: { vector_store_ids: [store], top_k: 2 } });
    assert.equal(m.status, 200, `chat, max_tokens ${max - 80}: ${m.text}`);
    for (const r of [c, m])
      assert.ok(r.body.usage.prompt_tokens + r.body.usage.completion_tokens <= 256);
  }
});

test("a store's context template frames the chunks", async () => {
  const c = await post(srv.url, '/v1/vector_stores', { name: 'framed',
    context_template: 'SOURCES BEGIN{chunks}SOURCES END. Answer briefly.' });
  assert.equal(c.status, 200, c.text);
  assert.equal(c.body.context_template, 'SOURCES BEGIN{chunks}SOURCES END. Answer briefly.');
  await post(srv.url, `/v1/vector_stores/${c.body.id}/documents`, { documents: DOCS });
  const r = await chat({ retrieval: { vector_store_ids: [c.body.id], top_k: 1, echo: true } });
  assert.match(r.body.retrieval.prompt,
    /SOURCES BEGIN\n\[1\] \(document ps23\) The LORD is my shepherd[^]*SOURCES END\. Answer briefly\./);
  const bad = await post(srv.url, '/v1/vector_stores', { context_template: 'no placeholder' });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.param, 'context_template');
});

test('bad retrieval fields are OpenAI errors', async () => {
  const cases = [
    [{ retrieval: { vector_store_ids: ['vs_nope'] } }, 404],
    [{ retrieval: { vector_store_ids: [] } }, 400],
    [{ retrieval: { vector_store_ids: [store], top_k: 0 } }, 400],
    [{ retrieval: { vector_store_ids: [store], mode: 'magic' } }, 400],
    [{ retrieval: 'yes' }, 400],
    [{ retrieval: { vector_store_ids: [store] }, messages: [{ role: 'system', content: 'x' }] }, 400],
  ];
  for (const [extra, status] of cases) {
    const r = await chat(extra);
    assert.equal(r.status, status, `${JSON.stringify(extra)}: ${r.text}`);
    assert.equal(typeof r.body.error.message, 'string');
  }
  const multi = await post(srv.url, '/v1/completions', { prompt: ['a', 'b'],
    retrieval: { vector_store_ids: [store] } });
  assert.equal(multi.status, 400);
});
