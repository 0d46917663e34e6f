// api.test.mjs - the OpenAI API of loraserve through the official client and
// raw fetch: models, completions and chat (streaming and not), golden greedy
// output and usage, seeds, stop sequences, n, logprobs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  startServer, post, readEvents, golden, BASE_CASES, MODEL_ID, BIN, MODEL,
} from './server.mjs';

let srv;
before(async () => { srv = await startServer(); });
after(async () => {
  const { code } = await srv.stop();
  assert.equal(code, 0, srv.stderr());
});

test('GET /v1/models lists the model', async () => {
  const list = await srv.client.models.list();
  assert.equal(list.data.length, 1);
  assert.equal(list.data[0].id, MODEL_ID);
  assert.equal(list.data[0].object, 'model');
  const one = await srv.client.models.retrieve(MODEL_ID);
  assert.equal(one.id, MODEL_ID);
});

test('LORASERVE_* variables set every flag; a flag wins; the short form serves', async () => {
  const s = await startServer(['--parallel', '3'], {
    short: true,
    env: { LORASERVE_MODEL_ID: 'bible', LORASERVE_PARALLEL: '2', LORASERVE_CTX: '128' },
  });
  try {
    const list = await s.client.models.list();
    assert.equal(list.data[0].id, 'bible');
    assert.equal(list.data[0].max_model_len, 128);
    const h = await (await fetch(`${s.url}/health`)).json();
    assert.equal(h.slots.total, 3);
    const r = await s.client.completions.create({ model: 'bible', prompt: 'In', max_tokens: 2 });
    assert.equal(r.model, 'bible');
  } finally {
    assert.equal((await s.stop()).code, 0, s.stderr());
  }
});

test('a port in use is an error at start, exit status 1', () => {
  const r = spawnSync(BIN, ['serve', '--model', MODEL, '--port', String(srv.port),
    '--data-dir', srv.dataDir], { encoding: 'utf8', timeout: 30000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /cannot listen on 127\.0\.0\.1 port \d+: Address already in use/);
});

test('a bad --kv-type (flag or variable) is refused at start, exit status 2', () => {
  for (const [args, env] of [[['--kv-type', 'f8'], {}], [[], { LORASERVE_KV_TYPE: 'q4' }]]) {
    const r = spawnSync(BIN, ['serve', '--model', MODEL, ...args],
      { encoding: 'utf8', timeout: 30000, env: { ...process.env, ...env } });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /--kv-type must be auto, f16 or f32/);
  }
});

test('GET /health reports the slots', async () => {
  const h = await (await fetch(`${srv.url}/health`)).json();
  assert.equal(h.status, 'ok');
  assert.equal(h.slots.total, 4);
  assert.equal(h.slots.busy, 0);
});

for (const name of BASE_CASES) {
  test(`greedy completion equals golden ${name}`, async () => {
    const g = golden(name);
    const r = await srv.client.completions.create({
      model: MODEL_ID, prompt: g.prompt, max_tokens: g.n_predict, temperature: 0,
    });
    assert.equal(r.object, 'text_completion');
    assert.match(r.id, /^cmpl-/);
    assert.equal(r.model, MODEL_ID);
    assert.equal(typeof r.created, 'number');
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].index, 0);
    assert.equal(r.choices[0].text, g.generated_text);
    assert.equal(r.choices[0].finish_reason, g.finish_reason);
    assert.deepEqual(r.usage, {
      prompt_tokens: g.n_prompt_tokens,
      completion_tokens: g.generated_ids.length,
      total_tokens: g.n_prompt_tokens + g.generated_ids.length,
    });
    // The same prompt as token ids.
    const ids = await srv.client.completions.create({
      model: MODEL_ID, prompt: g.prompt_ids, max_tokens: g.n_predict, temperature: 0,
    });
    assert.equal(ids.choices[0].text, g.generated_text);
    assert.equal(ids.usage.prompt_tokens, g.n_prompt_tokens);
  });
}

test('streamed greedy completion equals golden, with a usage chunk', async () => {
  const g = golden('short-moses');
  const stream = await srv.client.completions.create({
    prompt: g.prompt, max_tokens: 32, temperature: 0, stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, 'text_completion');
    if (chunk.choices.length === 0) {
      usage = chunk.usage;
      continue;
    }
    assert.equal(chunk.usage, null);
    text += chunk.choices[0].text;
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  assert.ok(chunks > 3);
  assert.equal(text, g.generated_text);
  assert.equal(finish, 'length');
  assert.deepEqual(usage, { prompt_tokens: 10, completion_tokens: 32, total_tokens: 42 });
});

test('SSE bytes are exactly OpenAI\'s: role chunk, deltas, finish, usage, [DONE]', async () => {
  const r = await fetch(`${srv.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      messages: [{ role: 'user', content: 'In the beginning' }], max_tokens: 8,
      temperature: 0, stream: true, stream_options: { include_usage: true },
    }),
  });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/event-stream/);
  const { text, events } = await readEvents(r);
  assert.ok(text.endsWith('data: [DONE]\n\n'));
  assert.equal(events.at(-1), '[DONE]');
  const chunks = events.slice(0, -1);
  const first = chunks[0];
  assert.equal(first.object, 'chat.completion.chunk');
  assert.match(first.id, /^chatcmpl-/);
  assert.deepEqual(first.choices[0].delta, { role: 'assistant', content: '' });
  assert.ok(chunks.every((c) => c.id === first.id));
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 8);
  const fin = chunks.at(-2);
  assert.deepEqual(fin.choices[0].delta, {});
  assert.equal(fin.choices[0].finish_reason, 'length');
  for (const c of chunks.slice(1, -2)) {
    assert.equal(typeof c.choices[0].delta.content, 'string');
    assert.equal(c.choices[0].finish_reason, null);
    assert.equal(c.usage, null);
  }
});

test('chat completion, streaming and not, agree', async () => {
  const messages = [
    { role: 'system', content: 'You answer in the words of the King James Bible.' },
    { role: 'user', content: 'Who made the heaven and the earth?' },
  ];
  const r = await srv.client.chat.completions.create({
    model: MODEL_ID, messages, max_tokens: 24, temperature: 0,
  });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(r.choices[0].message.content.length > 0);
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 10);
  const stream = await srv.client.chat.completions.create({
    model: MODEL_ID, messages, max_tokens: 24, temperature: 0, stream: true,
  });
  let content = '';
  let role = null;
  let finish = null;
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    if (c.delta.role) role = c.delta.role;
    if (c.delta.content) content += c.delta.content;
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.equal(role, 'assistant');
  assert.equal(content, r.choices[0].message.content);
  assert.equal(finish, r.choices[0].finish_reason);
});

test('the same seed gives the same text; other seeds differ', async () => {
  const ask = (seed) => srv.client.completions.create({
    prompt: 'And the LORD said', max_tokens: 24, temperature: 0.8, seed,
  }).then((r) => r.choices[0].text);
  const a = await ask(42);
  const b = await ask(42);
  assert.equal(a, b);
  const others = await Promise.all([1, 2, 3, 4].map(ask));
  assert.ok(others.some((t) => t !== a), 'four other seeds all gave the same text');
});

test('stop sequences never reach the client, across token boundaries', async () => {
  const g = golden('short-genesis');
  // " the earth" spans tokens " the" and " earth"; the first match is cut.
  for (const stream of [false, true]) {
    const body = {
      prompt: g.prompt, max_tokens: 32, temperature: 0, stream, stop: ['he ear', 'zzz'],
    };
    const r = await post(srv.url, '/v1/completions', body);
    assert.equal(r.status, 200);
    let text = '';
    let finish = null;
    if (stream) {
      const events = r.text.split('\n\n').filter((b) => b && b !== 'data: [DONE]')
        .map((b) => JSON.parse(b.slice(6)));
      for (const e of events) {
        text += e.choices[0].text;
        finish = e.choices[0].finish_reason || finish;
      }
    } else {
      text = r.body.choices[0].text;
      finish = r.body.choices[0].finish_reason;
    }
    const cut = g.generated_text.indexOf('he ear');
    assert.equal(text, g.generated_text.slice(0, cut));
    assert.equal(finish, 'stop');
    assert.ok(!r.text.includes('he ear'));
  }
});

test('a stop string as a plain string; usage counts the tokens up to the stop', async () => {
  const r = await srv.client.completions.create({
    prompt: 'In the beginning', max_tokens: 32, temperature: 0, stop: ',',
  });
  assert.equal(r.choices[0].text, ' of the earth is a God');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.usage.completion_tokens, 7);
});

test('n and several prompts give one choice each, indexed in order', async () => {
  const prompts = [golden('short-genesis').prompt, golden('short-modern').prompt];
  const r = await srv.client.completions.create({
    prompt: prompts, max_tokens: 32, temperature: 0, n: 2,
  });
  assert.equal(r.choices.length, 4);
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2, 3]);
  assert.equal(r.choices[0].text, golden('short-genesis').generated_text);
  assert.equal(r.choices[1].text, golden('short-genesis').generated_text);
  assert.equal(r.choices[2].text, golden('short-modern').generated_text);
  assert.equal(r.usage.completion_tokens, 4 * 32);
  const s = await srv.client.chat.completions.create({
    messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8, temperature: 1, n: 3, seed: 7,
  });
  assert.equal(s.choices.length, 3);
});

test('logprobs in OpenAI\'s shapes', async () => {
  const g = golden('short-genesis');
  const r = await srv.client.completions.create({
    prompt: g.prompt, max_tokens: 4, temperature: 0, logprobs: 3,
  });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 4);
  assert.equal(lp.tokens.join(''), r.choices[0].text);
  assert.equal(lp.token_logprobs.length, 4);
  assert.equal(lp.top_logprobs.length, 4);
  assert.equal(Object.keys(lp.top_logprobs[0]).length, 3);
  assert.deepEqual(lp.text_offset.slice(0, 2), [0, lp.tokens[0].length]);
  // logprob = logit - logsumexp of the golden first position.
  const want = g.top5_first[0].logit - g.logsumexp_first;
  assert.ok(Math.abs(lp.token_logprobs[0] - want) < 1e-3, `${lp.token_logprobs[0]} vs ${want}`);
  const c = await srv.client.chat.completions.create({
    messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3, temperature: 0,
    logprobs: true, top_logprobs: 2,
  });
  const content = c.choices[0].logprobs.content;
  assert.equal(content.length, 3);
  assert.equal(typeof content[0].token, 'string');
  assert.ok(content[0].logprob <= 0);
  assert.ok(Array.isArray(content[0].bytes));
  assert.equal(content[0].top_logprobs.length, 2);
});

test('ignore_eos and logit_bias reach the sampler', async () => {
  const r = await srv.client.completions.create({
    prompt: 'In the beginning', max_tokens: 8, temperature: 0,
    logit_bias: { 271: -100 }, ignore_eos: true,
  });
  assert.notEqual(r.choices[0].text.slice(0, 3), ' of');
  assert.equal(r.usage.completion_tokens, 8);
});
