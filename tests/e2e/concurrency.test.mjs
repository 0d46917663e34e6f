// concurrency.test.mjs - continuous batching is invisible in results, a
// client that goes away frees its slot, and SIGTERM lets a running stream
// finish before the server exits 0.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, post, health, golden, BASE_CASES } from './server.mjs';

let srv;
before(async () => { srv = await startServer(['--parallel', '8']); });
after(async () => {
  const { code } = await srv.stop();
  assert.equal(code, 0, srv.stderr());
});

const PROMPTS = [
  ...BASE_CASES.map((n) => golden(n).prompt),
  'And God said, Let there be light',
  'The LORD is my shepherd',
  'Blessed are the meek',
  'In my Father\'s house are many mansions',
  'For God so loved the world',
  'Vanity of vanities, saith the Preacher',
  'The computer and the telephone',
  'Thou shalt not',
  'And Moses went up',
  'Praise ye the LORD. Praise God in his sanctuary',
  'How are you today?',
];

const greedy = (prompt) => post(srv.url, '/v1/completions',
  { prompt, max_tokens: 32, temperature: 0 }).then((r) => {
  assert.equal(r.status, 200, r.text);
  return r.body.choices[0].text;
});

test('16 concurrent greedy requests return what each returns alone', async () => {
  assert.equal(PROMPTS.length, 16);
  const alone = [];
  for (const p of PROMPTS) alone.push(await greedy(p));
  for (const [i, name] of BASE_CASES.entries())
    assert.equal(alone[i], golden(name).generated_text, name);
  const together = await Promise.all(PROMPTS.map(greedy));
  assert.deepEqual(together, alone);
  // And once more with streams, mixed with non-streaming requests.
  const mixed = await Promise.all(PROMPTS.map(async (prompt, i) => {
    if (i % 2 === 0) return greedy(prompt);
    const stream = await srv.client.completions.create(
      { prompt, max_tokens: 32, temperature: 0, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
    return text;
  }));
  assert.deepEqual(mixed, alone);
});

async function waitIdle(url, ms) {
  const t0 = Date.now();
  for (;;) {
    const h = await health(url);
    if (h.slots.busy === 0 && h.waiting === 0) return Date.now() - t0;
    if (Date.now() - t0 > ms) throw new Error(`slots still busy: ${JSON.stringify(h)}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('a client that aborts a stream frees its slot', async () => {
  // A long generation (1000 tokens in a 1024 context) that the client drops early.
  const s = await startServer(['--parallel', '1', '--ctx', '1024']);
  try {
    const ac = new AbortController();
    const r = await fetch(`${s.url}/v1/completions`, {
      method: 'POST', signal: ac.signal, headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ prompt: 'In', max_tokens: 1000, ignore_eos: true, stream: true }),
    });
    const reader = r.body.getReader();
    const { value } = await reader.read();
    assert.match(Buffer.from(value).toString(), /^data: /);
    const t0 = Date.now();
    ac.abort();
    await waitIdle(s.url, 5000);
    const freedMs = Date.now() - t0;
    // The slot is free again: the next request runs at once.
    const next = await post(s.url, '/v1/completions', { prompt: 'In the', max_tokens: 4 });
    assert.equal(next.status, 200);
    // Freed long before 1000 tokens could have been generated.
    const t1 = Date.now();
    await post(s.url, '/v1/completions', { prompt: 'In', max_tokens: 200, ignore_eos: true });
    const per200 = Date.now() - t1;
    assert.ok(freedMs < per200 * 2, `freed after ${freedMs} ms; 200 tokens take ${per200} ms`);
  } finally {
    assert.equal((await s.stop()).code, 0, s.stderr());
  }
});

test('a non-streaming client that hangs up frees its slot', async () => {
  const s = await startServer(['--parallel', '1', '--ctx', '1024']);
  try {
    const ac = new AbortController();
    const pending = fetch(`${s.url}/v1/completions`, {
      method: 'POST', signal: ac.signal, headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ prompt: 'In', max_tokens: 1000, ignore_eos: true }),
    }).catch((e) => e);
    for (let i = 0; (await health(s.url)).slots.busy === 0; i++) {
      assert.ok(i < 200, 'the request never started');
      await new Promise((r) => setTimeout(r, 5));
    }
    ac.abort();
    assert.equal((await pending).name, 'AbortError');
    await waitIdle(s.url, 5000);
  } finally {
    assert.equal((await s.stop()).code, 0, s.stderr());
  }
});

test('SIGTERM: a running stream finishes, then the server exits 0', async () => {
  const s = await startServer();
  const stream = await s.client.completions.create({
    prompt: 'In the beginning', max_tokens: 200, ignore_eos: true, temperature: 0,
    stream: true, stream_options: { include_usage: true },
  });
  let usage = null;
  let n = 0;
  for await (const chunk of stream) {
    if (n++ === 1) s.proc.kill('SIGTERM');
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(usage.completion_tokens, 200);
  const { code, signal } = await s.exited;
  assert.equal(signal, null);
  assert.equal(code, 0, s.stderr());
  assert.match(s.stderr(), /stopped/);
  // Nothing listens any more.
  await assert.rejects(fetch(`${s.url}/health`));
  await s.stop();
});
