// soak.mjs - a soak test bounded in time, on loopback only (`make soak`,
// `make soak SOAK_SECONDS=20`, `make soak-asan`).
//
// It starts $LORASERVE_BIN (tests/e2e/server.mjs's startServer: the kjv-tiny
// F32 model, --adapter-dir the LoRA fixtures, --admin-key, 8 slots, a queue
// long enough that nothing is ever refused for room) and makes two tenants
// with a key each, the shared adapters "swap", "swap2" (replaced all along)
// and "stable" (never replaced), an A/B experiment "ab" (the base model /
// "stable"), a shared vector store of KJV verses and a second store of
// tenant alpha's. Then it computes the "single-request answers": each greedy
// request of a fixed table (completions and chat, streamed or not, on the
// base model, "stable", the adapter-dir's kjv-tiny-lora-devil, two adapters
// at once, and vector-mode retrieval over the fixed store), one at a time on
// the idle server.
//
// For SOAK_SECONDS, 64 client loops (alternating between the two tenants'
// keys) mix: the greedy requests, whose output (text and finish reasons) must
// be byte-identical to the single-request answers; requests to the
// experiment, checked against the answer of the variant that served them,
// with feedback; sampled completions and chat (temperature 0.9, n up to 2,
// stop strings, logprobs) on every model including the replaced adapters;
// retrieval (hybrid, keyword, vector; max_tokens kept at most 48, as the
// server's estimate of the room for retrieved chunks can be a dozen tokens
// short) over both stores; streams the client drops after a random
// number of chunks (AbortController); requests that must fail with a given
// 4xx (unknown model, another tenant's store, a bad field); searches,
// embeddings and the list/health/metrics routes. Meanwhile "swap" and "swap2"
// are replaced every 100 ms (alternating files of the lora dir, GGUF and
// PEFT), and documents are ingested without pause into tenant alpha's store
// (ids cycle over a fixed set, so the store's size stays put; a few are
// deleted and come back).
//
// Pass: no 5xx, no unexpected 4xx (each printed with its body), no transport
// error or truncated stream, no wrong greedy output, the server's VmRSS at
// the end at most 10% above the VmRSS after warm-up (taken at 10% of the run;
// not judged under a sanitizer, LORASERVE_SANITIZER), every slot free and
// nothing waiting shortly after the clients stop (/health and /metrics), no
// sanitizer report in the server's stderr, exit status 0 on SIGTERM. The last
// line is the summary:
//   soak: requests=N tokens=N swaps=N disconnects=N 5xx=0 wrong=0 rss_start=XMiB rss_end=YMiB
// and the exit status is 1 if anything failed. SOAK_CLIENTS and SOAK_SEED
// change the number of client loops and the mix's random seed.
import {
  startServer, callAs, health, rssBytes, until, golden, BASE_CASES, LORA_DIR, MODEL_ID,
} from './e2e/server.mjs';

const SECONDS = Number(process.env.SOAK_SECONDS || 60);
const CLIENTS = Number(process.env.SOAK_CLIENTS || 64);
const SEED = Number(process.env.SOAK_SEED || (Date.now() % 1000000));
const SANITIZER = process.env.LORASERVE_SANITIZER || '';
const SLOTS = 8;
const ADMIN = 'soak-admin-key';
const REQUEST_TIMEOUT_MS = SANITIZER ? 300000 : 120000;
const SWAP_EVERY_MS = 100;
const INGEST_IDS = 300;          // the ingest store holds at most this many documents
const INGEST_BATCH = 10;
const DEVIL = 'kjv-tiny-lora-devil';   // loaded from the adapter dir on first use, never replaced
const SWAP_FILES = {
  swap: ['kjv-tiny-lora-fortunes.gguf', 'kjv-tiny-lora-devil.gguf'],
  swap2: ['peft-devil', 'kjv-tiny-lora-jargon.gguf'],
};
const SANITIZER_MARKS = ['ERROR: AddressSanitizer', 'runtime error:', 'WARNING: ThreadSanitizer',
  'ERROR: LeakSanitizer'];

// ---- a seeded random mix (timing still varies between runs)
let rngState = SEED >>> 0;
function rand() {   /* mulberry32 */
  rngState = (rngState + 0x6D2B79F5) >>> 0;
  let t = rngState;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const randInt = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
const pick = (a) => a[Math.floor(rand() * a.length)];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const MiB = (b) => `${(b / 1048576).toFixed(1)}MiB`;

// ---- KJV-like documents
const VERSES = [
  ['Gen 1:1', 'In the beginning God created the heaven and the earth.'],
  ['Gen 1:3', 'And God said, Let there be light: and there was light.'],
  ['Exo 20:13', 'Thou shalt not kill. Thou shalt not commit adultery. Thou shalt not steal.'],
  ['Psa 23:1', 'The LORD is my shepherd; I shall not want. He maketh me to lie down in green ' +
    'pastures: he leadeth me beside the still waters.'],
  ['Pro 15:1', 'A soft answer turneth away wrath: but grievous words stir up anger.'],
  ['Ecc 3:1', 'To every thing there is a season, and a time to every purpose under the heaven.'],
  ['Isa 40:31', 'But they that wait upon the LORD shall renew their strength; they shall mount ' +
    'up with wings as eagles; they shall run, and not be weary.'],
  ['Mat 5:9', 'Blessed are the peacemakers: for they shall be called the children of God.'],
  ['Joh 1:1', 'In the beginning was the Word, and the Word was with God, and the Word was God.'],
  ['Joh 11:35', 'Jesus wept. Then said the Jews, Behold how he loved him!'],
  ['Rom 12:21', 'Be not overcome of evil, but overcome evil with good.'],
  ['1Co 13:4', 'Charity suffereth long, and is kind; charity envieth not; charity vaunteth not ' +
    'itself, is not puffed up.'],
  ['Rut 1:16', 'Whither thou goest, I will go; and where thou lodgest, I will lodge: thy people ' +
    'shall be my people, and thy God my God.'],
  ['Mic 6:8', 'He hath shewed thee, O man, what is good; and what doth the LORD require of ' +
    'thee, but to do justly, and to love mercy, and to walk humbly with thy God?'],
  ['Psa 119:105', 'Thy word is a lamp unto my feet, and a light unto my path.'],
  ['Gen 2:7', 'And the LORD God formed man of the dust of the ground, and breathed into his ' +
    'nostrils the breath of life; and man became a living soul.'],
];
const BIBLE_DOCS = VERSES.map(([ref, text]) => ({ id: ref.replace(/\W+/g, '-'), text,
  metadata: { book: ref.split(' ')[0] } }));
function ingestDoc(n) {
  const [r1, t1] = VERSES[n % VERSES.length];
  const [r2, t2] = VERSES[(n * 7 + 3) % VERSES.length];
  return { id: `doc-${n % INGEST_IDS}`, text: `${t1} ${t2} (${r1}; ${r2}; copy ${n})`,
    metadata: { book: r1.split(' ')[0], n } };
}

// ---- counters
const stats = {
  requests: 0, tokens: 0, swaps: 0, disconnects: 0, fivexx: 0, wrong: 0, checked: 0,
  ingested: 0, deleted: 0, statuses: new Map(), expected4xx: new Map(), failures: [],
};
function fail(what) {
  stats.failures.push(what);
  if (stats.failures.length <= 20) console.log(`soak: FAIL ${what}`);
}
const count = (map, key) => map.set(key, (map.get(key) || 0) + 1);

let srv;
const keys = {};

// One HTTP exchange. Non-streaming: { status, headers, body, text }. Streaming
// (body.stream): { status, headers, events, done, aborted } with the SSE
// events parsed; abortAfter drops the connection after that many events with
// choices. Throws on transport errors (other than our own abort).
async function exchange(key, method, path, body, { abortAfter = Infinity } = {}) {
  const ctrl = new AbortController();
  const signal = AbortSignal.any([ctrl.signal, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]);
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (key) headers.Authorization = `Bearer ${key}`;
  const res = await fetch(srv.url + path, { method, headers, signal,
    body: body === undefined ? undefined : JSON.stringify(body) });
  count(stats.statuses, res.status);
  if (!body?.stream || res.status !== 200) {
    const text = await res.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: res.status, headers: res.headers, body: json, text };
  }
  const dec = new TextDecoder();
  const reader = res.body.getReader();
  const events = [];
  let buf = '';
  let done = false;
  let withChoices = 0;
  try {
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (!block.startsWith('data: ')) throw new Error(`not an SSE data line: ${block}`);
        const data = block.slice(6);
        if (data === '[DONE]') { done = true; continue; }
        if (done) throw new Error(`an event after [DONE]: ${data}`);
        const ev = JSON.parse(data);
        events.push(ev);
        if (ev.choices?.length) withChoices++;
        if (withChoices >= abortAfter && !done) {
          ctrl.abort();
          return { status: 200, headers: res.headers, events, done, aborted: true };
        }
      }
    }
  } finally {
    reader.releaseLock?.();
  }
  if (buf !== '') throw new Error(`a partial SSE event at the end: ${buf}`);
  return { status: 200, headers: res.headers, events, done, aborted: false };
}

// The text and finish reasons of a completion or chat answer, by choice.
function output(r) {
  const texts = [];
  const finish = [];
  if (r.events) {
    for (const ev of r.events) {
      for (const c of ev.choices ?? []) {
        texts[c.index] = (texts[c.index] ?? '') + (c.text ?? c.delta?.content ?? '');
        if (c.finish_reason) finish[c.index] = c.finish_reason;
      }
    }
  } else {
    for (const c of r.body.choices) {
      texts[c.index] = c.text ?? c.message?.content ?? '';
      finish[c.index] = c.finish_reason;
    }
  }
  return JSON.stringify({ texts, finish });
}

function completionTokens(r) {
  if (!r.events) return r.body?.usage?.completion_tokens ?? 0;
  const usage = r.events.find((e) => e.usage)?.usage;
  if (usage) return usage.completion_tokens;
  return r.events.filter((e) => e.choices?.some((c) => c.text || c.delta?.content)).length;
}

// Judges one answer: 5xx, unexpected 4xx, truncated streams, error events.
// expect: the 4xx status the request was made to get (null: must succeed).
function judge(what, req, r, expect = null) {
  if (r.status >= 500) {
    stats.fivexx++;
    fail(`${r.status} on ${what}: ${JSON.stringify(req)} -> ${r.text}`);
    return false;
  }
  if (expect !== null) {
    if (r.status === expect) { count(stats.expected4xx, expect); return false; }
    fail(`expected ${expect}, got ${r.status} on ${what}: ${JSON.stringify(req)} -> ` +
      `${r.text ?? '(stream)'}`);
    return false;
  }
  if (r.status !== 200) {
    fail(`unexpected ${r.status} on ${what}: ${JSON.stringify(req)} -> ${r.text}`);
    return false;
  }
  if (r.events) {
    const err = r.events.find((e) => e.error);
    if (err) { fail(`error event on ${what}: ${JSON.stringify(req)} -> ${JSON.stringify(err)}`); return false; }
    if (!r.done && !r.aborted) { fail(`stream without [DONE] on ${what}: ${JSON.stringify(req)}`); return false; }
  }
  return true;
}

// An inference request from a client loop (counted in requests= and tokens=).
async function infer(what, key, path, body, { expect = null, abortAfter = Infinity } = {}) {
  stats.requests++;
  let r;
  try {
    r = await exchange(key, 'POST', path, body, { abortAfter });
  } catch (e) {
    fail(`transport error on ${what}: ${JSON.stringify(body)} -> ${e?.name}: ${e?.message} ` +
      `${e?.cause ?? ''}`);
    return null;
  }
  if (r.aborted) stats.disconnects++;
  if (!judge(what, body, r, expect)) return null;
  stats.tokens += completionTokens(r);
  return r;
}

// ---- the greedy table: fixed requests and their single-request answers
const COMPLETION_PROMPTS = BASE_CASES.map((c) => golden(c).prompt);
const CHAT_MESSAGES = [
  [{ role: 'user', content: 'Who is my shepherd?' }],
  [{ role: 'system', content: 'You speak as the King James Bible.' },
    { role: 'user', content: 'Who made the heaven and the earth?' }],
  [{ role: 'user', content: 'In the beginning' }],
  [{ role: 'user', content: 'What is a computer program?' },
    { role: 'assistant', content: 'A thing of the LORD.' },
    { role: 'user', content: 'And what is a hacker?' }],
];
const GREEDY_MODELS = [{ model: MODEL_ID }, { model: 'stable' }, { model: DEVIL },
  { adapters: [{ name: 'stable', scale: 1 }, { name: DEVIL, scale: 0.5 }] }];
const greedy = [];   /* { what, path, body, answer } */
function greedyTable(bibleStore) {
  const g = { temperature: 0, ignore_eos: false };
  for (const stream of [false, true]) {
    const s = stream ? { stream: true, stream_options: { include_usage: true } } : {};
    for (const m of GREEDY_MODELS) {
      for (const [i, prompt] of COMPLETION_PROMPTS.entries())
        greedy.push({ what: `greedy completion ${BASE_CASES[i]}`, path: '/v1/completions',
          body: { ...m, prompt, max_tokens: 24 + (i % 3) * 8, ...g, ...s } });
      for (const [i, messages] of CHAT_MESSAGES.entries())
        greedy.push({ what: `greedy chat ${i}`, path: '/v1/chat/completions',
          body: { ...m, messages, max_tokens: 20 + i * 4, ...g, ...s } });
    }
    const retrieval = { vector_store_ids: [bibleStore], top_k: 2, mode: 'vector' };
    for (const [i, prompt] of ['Who is my shepherd', 'Thou shalt not steal'].entries())
      greedy.push({ what: `greedy retrieval completion ${i}`, path: '/v1/completions',
        body: { prompt, max_tokens: 16, retrieval, ...g, ...s } });
    for (const m of [{}, { model: 'stable' }])
      greedy.push({ what: `greedy retrieval chat ${m.model ?? 'base'}`, path: '/v1/chat/completions',
        body: { ...m, messages: CHAT_MESSAGES[0], max_tokens: 16, retrieval, ...g, ...s } });
  }
}
// the experiment's variants, answered by the greedy table's non-streaming base / stable entries
const experimentChecks = () => greedy.filter((e) => !e.body.stream && e.path === '/v1/completions'
  && (e.body.model === MODEL_ID || e.body.model === 'stable') && !e.body.retrieval);

// ---- what the client loops do
const SAMPLED_MODELS = [MODEL_ID, 'swap', 'swap2', 'stable', DEVIL, 'ab'];
const SHORT_PROMPTS = COMPLETION_PROMPTS.filter((p) => p.length < 60);
const OPS = [
  [30, opGreedy], [8, opExperiment], [15, opSampled], [12, opRetrieval], [20, opDisconnect],
  [5, opExpected4xx], [10, opMisc],
];
const OPS_TOTAL = OPS.reduce((s, [w]) => s + w, 0);
function pickOp() {
  let x = rand() * OPS_TOTAL;
  for (const [w, op] of OPS) if ((x -= w) < 0) return op;
  return OPS[0][1];
}

async function opGreedy(c) {
  const e = pick(greedy);
  const r = await infer(e.what, c.key, e.path, e.body);
  if (!r) return;
  stats.checked++;
  const got = output(r);
  if (got !== e.answer) {
    stats.wrong++;
    fail(`wrong output (tenant ${c.tenant}) on ${e.what}: ${JSON.stringify(e.body)}\n` +
      `  single-request answer: ${e.answer}\n  under load:            ${got}`);
  }
}

async function opExperiment(c) {
  const e = pick(experimentChecks());
  const body = { ...e.body, model: 'ab' };
  const r = await infer('experiment', c.key, e.path, body);
  if (!r) return;
  const variant = r.headers.get('x-loraserve-variant');
  const ref = greedy.find((x) => x.path === e.path && !x.body.stream && x.body.model === variant
    && x.body.prompt === e.body.prompt && x.body.max_tokens === e.body.max_tokens && !x.body.retrieval);
  if (!ref) {
    fail(`experiment answered by an unknown variant ${variant}: ${r.text}`);
    return;
  }
  stats.checked++;
  const got = output(r);
  if (got !== ref.answer) {
    stats.wrong++;
    fail(`wrong output (tenant ${c.tenant}) on experiment variant ${variant}: ` +
      `${JSON.stringify(body)}\n  single-request answer: ${ref.answer}\n  under load: ${got}`);
  }
  const f = await exchange(c.key, 'POST', '/v1/feedback', { id: r.body.id, score: rand() });
  judge('feedback', { id: r.body.id }, f);
}

function sampledBody(chat, maxTokens) {
  const b = { model: pick(SAMPLED_MODELS), max_tokens: maxTokens, temperature: 0.9,
    seed: randInt(0, 1e6) };
  if (rand() < 0.3) b.top_k = randInt(1, 40);
  if (rand() < 0.2) b.stop = ['.', ' the LORD'];
  if (rand() < 0.3) b.n = 2;
  if (rand() < 0.1) b.presence_penalty = 0.5;
  if (chat) {
    b.messages = pick(CHAT_MESSAGES);
    if (rand() < 0.2) { b.logprobs = true; b.top_logprobs = 3; }
  } else {
    b.prompt = pick(COMPLETION_PROMPTS);
    if (rand() < 0.2) b.logprobs = 3;
  }
  if (rand() < 0.5) { b.stream = true; if (rand() < 0.5) b.stream_options = { include_usage: true }; }
  return b;
}

async function opSampled(c) {
  const chat = rand() < 0.5;
  await infer('sampled', c.key, chat ? '/v1/chat/completions' : '/v1/completions',
    sampledBody(chat, randInt(4, 64)));
}

async function opRetrieval(c) {
  const chat = rand() < 0.5;
  const stores = c.tenant === 'alpha' && rand() < 0.5 ? [c.stores.ingest] : [c.stores.bible];
  if (c.tenant === 'alpha' && rand() < 0.2) stores.push(c.stores.bible);
  const b = { model: pick([MODEL_ID, 'swap', 'stable']), max_tokens: randInt(4, 32),
    temperature: pick([0, 0.8]),
    retrieval: { vector_store_ids: stores, top_k: randInt(1, 4), mode: pick(['hybrid', 'keyword',
      'vector']), echo: rand() < 0.3 } };
  if (chat) b.messages = [{ role: 'user', content: pick(VERSES)[1].split(' ').slice(0, 6).join(' ') }];
  else b.prompt = pick(VERSES)[1].split(' ').slice(0, 5).join(' ');
  if (rand() < 0.5) b.stream = true;
  await infer('retrieval', c.key, chat ? '/v1/chat/completions' : '/v1/completions', b);
}

async function opDisconnect(c) {
  const chat = rand() < 0.5;
  const b = sampledBody(chat, chat ? randInt(64, 140) : randInt(64, 160));   /* chat: 100-token prompts */
  if (!chat) b.prompt = pick(SHORT_PROMPTS);
  if (rand() < 0.3) b.temperature = 0;
  delete b.n;
  b.stream = true;
  // retrieval keeps max_tokens at most 48: the server's estimate of the context's room
  // can be short by a dozen tokens (a 400 context_length_exceeded; see the report)
  if (rand() < 0.2) b.retrieval = { vector_store_ids: [c.stores.bible], top_k: 1 };
  if (b.retrieval) b.max_tokens = randInt(16, 48);
  await infer('disconnect', c.key, chat ? '/v1/chat/completions' : '/v1/completions', b,
    { abortAfter: randInt(1, 24) });
}

async function opExpected4xx(c) {
  const k = randInt(0, 3);
  if (k === 0) {
    await infer('unknown model', c.key, '/v1/completions',
      { model: 'no-such-model', prompt: 'In the beginning', max_tokens: 4 }, { expect: 404 });
  } else if (k === 1) {
    // beta may not read alpha's store; alpha may not use an unknown one
    const store = c.tenant === 'beta' ? c.stores.other : 'vs_000000000000000000000000';
    await infer('another tenant\'s store', c.key, '/v1/chat/completions',
      { messages: CHAT_MESSAGES[0], max_tokens: 4, retrieval: { vector_store_ids: [store] } },
      { expect: 404 });
  } else if (k === 2) {
    await infer('bad temperature', c.key, '/v1/completions',
      { prompt: 'In the beginning', max_tokens: 4, temperature: 7, stream: rand() < 0.5 },
      { expect: 400 });
  } else {
    await infer('context exceeded', c.key, '/v1/completions',
      { prompt: COMPLETION_PROMPTS[4], max_tokens: 250 }, { expect: 400 });
  }
}

async function opMisc(c) {
  const k = randInt(0, 5);
  let req;
  let r;
  try {
    if (k === 0) {
      req = ['POST', `/v1/vector_stores/${c.tenant === 'alpha' ? c.stores.ingest : c.stores.bible}/search`,
        { query: pick(VERSES)[1].split(' ').slice(0, 4).join(' '), max_num_results: 5,
          mode: pick(['hybrid', 'vector', 'keyword']) }];
    } else if (k === 1) {
      req = ['POST', '/v1/embeddings', { model: 'hash', input: [pick(VERSES)[1], pick(VERSES)[1]] }];
    } else if (k === 2) {
      req = ['GET', '/v1/adapters'];
    } else if (k === 3) {
      req = ['GET', '/v1/models'];
    } else if (k === 4) {
      req = ['GET', '/health'];
    } else {
      req = ['GET', '/metrics'];
    }
    r = await exchange(c.key, ...req);
  } catch (e) {
    fail(`transport error on ${req[0]} ${req[1]}: ${e?.name}: ${e?.message} ${e?.cause ?? ''}`);
    return;
  }
  judge(`${req[0]} ${req[1]}`, req[2] ?? null, r);
}

async function clientLoop(i, deadline, stores) {
  const tenant = i % 2 === 0 ? 'alpha' : 'beta';
  const c = { key: keys[tenant], tenant, stores: { ...stores,
    other: stores.ingest /* alpha's: another tenant's for beta */ } };
  while (Date.now() < deadline) {
    try {
      await pickOp()(c);
    } catch (e) {
      fail(`client ${i}: ${e?.stack ?? e}`);
    }
  }
}

// ---- background load: adapter replacement and ingestion
async function swapper(running) {
  for (let n = 1; running(); n++) {
    const t0 = Date.now();
    for (const [name, files] of Object.entries(SWAP_FILES)) {
      const body = { name, path: files[n % 2] };
      try {
        const r = await exchange(ADMIN, 'POST', '/v1/adapters', body);
        if (judge('adapter replace', body, r)) stats.swaps++;
      } catch (e) {
        fail(`transport error on adapter replace ${JSON.stringify(body)}: ${e?.message} ${e?.cause ?? ''}`);
      }
    }
    await sleep(Math.max(0, SWAP_EVERY_MS - (Date.now() - t0)));
  }
}

async function ingester(store, running, start) {
  for (let n = start; running(); n += INGEST_BATCH) {
    const documents = Array.from({ length: INGEST_BATCH }, (_, j) => ingestDoc(n + j));
    try {
      const r = await exchange(keys.alpha, 'POST', `/v1/vector_stores/${store}/documents`,
        { documents });
      if (judge('ingest', { documents: `${documents.length} from doc ${n}` }, r))
        stats.ingested += documents.length;
      if ((n / INGEST_BATCH) % 10 === 0) {
        const id = `doc-${randInt(0, INGEST_IDS - 1)}`;
        const d = await exchange(keys.alpha, 'DELETE', `/v1/vector_stores/${store}/documents/${id}`);
        if (d.status === 404) count(stats.expected4xx, 404);   /* deleted before, not yet back */
        else if (judge('document delete', { id }, d)) stats.deleted++;
      }
    } catch (e) {
      fail(`transport error on ingest: ${e?.message} ${e?.cause ?? ''}`);
    }
  }
}

async function metricsValue(name) {
  const text = await (await fetch(`${srv.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
  return line ? Number(line.trim().split(/\s+/).at(-1)) : NaN;
}

async function must(what, p) {
  const r = await p;
  if (r.status !== 200) throw new Error(`${what}: ${r.status} ${r.text}`);
  return r.body;
}

async function main() {
  const t0 = Date.now();
  console.log(`soak: ${SECONDS} s, ${CLIENTS} clients, seed ${SEED}, ${process.env.LORASERVE_BIN ??
    'build/loraserve'}${SANITIZER ? ` (sanitizer: ${SANITIZER})` : ''}`);
  srv = await startServer(['--admin-key', ADMIN, '--adapter-dir', LORA_DIR,
    '--parallel', String(SLOTS), '--queue', '1024', '--shutdown-timeout', '30'],
  { timeoutMs: SANITIZER ? 180000 : 60000 });
  const api = (key, method, path, body) => callAs(srv.url, key, method, path, body);
  let ok = false;
  try {
    // tenants, shared adapters, the experiment, the stores
    for (const name of ['alpha', 'beta']) {
      const t = await must('tenant', api(ADMIN, 'POST', '/v1/tenants', { name }));
      keys[name] = (await must('key', api(ADMIN, 'POST', `/v1/tenants/${t.id}/keys`))).key;
    }
    for (const [name, files] of Object.entries(SWAP_FILES))
      await must(name, api(ADMIN, 'POST', '/v1/adapters', { name, path: files[0] }));
    await must('stable', api(ADMIN, 'POST', '/v1/adapters',
      { name: 'stable', path: 'kjv-tiny-lora-jargon.gguf' }));
    await must('experiment', api(ADMIN, 'POST', '/v1/experiments', { name: 'ab', sticky: 'none',
      variants: [{ model: MODEL_ID, weight: 50 }, { model: 'stable', weight: 50 }] }));
    const bible = (await must('store', api(ADMIN, 'POST', '/v1/vector_stores', { name: 'bible' }))).id;
    await must('bible docs', api(ADMIN, 'POST', `/v1/vector_stores/${bible}/documents`,
      { documents: BIBLE_DOCS }));
    const ingest = (await must('store', api(keys.alpha, 'POST', '/v1/vector_stores',
      { name: 'ingest', chunking_strategy: { type: 'static', static: { max_chunk_size_tokens: 48,
        chunk_overlap_tokens: 8 } } }))).id;
    for (let n = 0; n < INGEST_IDS; n += 100)   // the store at its full size from the start
      await must('ingest', api(keys.alpha, 'POST', `/v1/vector_stores/${ingest}/documents`,
        { documents: Array.from({ length: 100 }, (_, j) => ingestDoc(n + j)) }));

    // the single-request answers, one at a time on the idle server
    greedyTable(bible);
    for (const e of greedy) {
      const r = await exchange(keys.alpha, 'POST', e.path, e.body);
      if (r.status !== 200 || (r.events && !r.done))
        throw new Error(`single request ${e.what}: ${r.status} ${r.text ?? ''}`);
      e.answer = output(r);
    }
    // each twice more, by the other tenant: the table itself must be stable
    for (const e of greedy) {
      const r = await exchange(keys.beta, 'POST', e.path, e.body);
      if (r.status !== 200 || output(r) !== e.answer) {
        stats.wrong++;
        fail(`single request not repeatable: ${e.what} ${JSON.stringify(e.body)}\n  first: ` +
          `${e.answer}\n  again: ${r.status} ${r.text ?? output(r)}`);
      }
    }
    const tSetup = Date.now();
    console.log(`soak: setup ${((tSetup - t0) / 1000).toFixed(1)} s, ${greedy.length} greedy ` +
      `requests in the table`);

    // the run
    const start = Date.now();
    const deadline = start + SECONDS * 1000;
    let clientsDone = false;
    const running = () => !clientsDone;
    let rssStart = NaN;
    const rssSamples = [];
    const sampler = setInterval(() => {
      try { rssSamples.push([((Date.now() - start) / 1000).toFixed(1), rssBytes(srv.proc.pid)]); }
      catch { /* exited */ }
    }, 1000);
    const warm = setTimeout(() => { rssStart = rssBytes(srv.proc.pid); }, SECONDS * 100);
    const background = Promise.all([swapper(running), ingester(ingest, running, INGEST_IDS)]);
    await Promise.all(Array.from({ length: CLIENTS }, (_, i) => clientLoop(i, deadline,
      { bible, ingest })));
    clientsDone = true;
    await background;
    clearTimeout(warm);
    clearInterval(sampler);
    const tRun = Date.now();
    console.log(`soak: clients ran ${((tRun - start) / 1000).toFixed(1)} s; ${stats.checked} greedy ` +
      `checks, ${stats.ingested} documents ingested, ${stats.deleted} deleted`);

    // all slots free shortly after the clients stop
    let h;
    try {
      await until(async () => {
        h = await health(srv.url);
        return h.slots.busy === 0 && h.waiting === 0;
      }, SANITIZER ? 30000 : 5000);
    } catch {
      fail(`slots still busy after the clients stopped: ${JSON.stringify(h)}`);
    }
    const running1 = await metricsValue('vllm:num_requests_running');
    const waiting1 = await metricsValue('vllm:num_requests_waiting');
    if (running1 !== 0 || waiting1 !== 0)
      fail(`/metrics: vllm:num_requests_running ${running1}, vllm:num_requests_waiting ${waiting1}`);
    const rssEnd = rssBytes(srv.proc.pid);
    if (Number.isNaN(rssStart)) rssStart = rssSamples[0]?.[1] ?? NaN;
    const growth = rssEnd / rssStart - 1;
    console.log(`soak: RSS after warm-up ${MiB(rssStart)}, at the end ${MiB(rssEnd)} ` +
      `(${(growth * 100).toFixed(1)}%); samples: ${rssSamples.map(([t, b]) => `${t}s=${(b / 1048576)
        .toFixed(0)}`).join(' ')}`);
    if (SANITIZER) console.log(`soak: RSS not judged under ${SANITIZER}`);
    else if (!(growth <= 0.10))   /* less at the end (idle, buffers freed) is no leak */
      fail(`RSS at the end ${MiB(rssEnd)} more than 10% above ${MiB(rssStart)} after warm-up`);
    console.log(`soak: adapters ${JSON.stringify(h?.adapters)}, prefix cache ` +
      `${JSON.stringify(h?.prefix_cache)}`);

    const statuses = [...stats.statuses].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}=${n}`);
    const expected = [...stats.expected4xx].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}=${n}`);
    const n4xx = [...stats.statuses].filter(([s]) => s >= 400 && s < 500).reduce((a, [, n]) => a + n, 0);
    const e4xx = [...stats.expected4xx].reduce((a, [, n]) => a + n, 0);
    console.log(`soak: statuses ${statuses.join(' ')}; 4xx ${n4xx}: expected ${e4xx} ` +
      `(${expected.join(' ') || 'none'}), unexpected ${n4xx - e4xx}`);
    ok = true;
    return { rssStart, rssEnd };
  } finally {
    const { code, signal } = await srv.stop();
    const err = srv.stderr();
    if (code !== 0) fail(`the server exited with ${code ?? signal} on SIGTERM`);
    const marks = SANITIZER_MARKS.filter((m) => err.includes(m));
    if (marks.length) fail(`sanitizer report in the server's stderr (${marks.join(', ')})`);
    if (!ok || code !== 0 || marks.length || stats.failures.length)
      console.log(`soak: the server's stderr (last 8000 characters):\n${err.slice(-8000)}`);
  }
}

const T0 = Date.now();
let result = {};
try {
  result = await main();
} catch (e) {
  fail(`soak aborted: ${e?.stack ?? e}`);
}
console.log(`soak: ${((Date.now() - T0) / 1000).toFixed(1)} s in all, ${stats.failures.length} failures`);
if (stats.failures.length > 20) console.log(`soak: ... ${stats.failures.length - 20} more failures`);
console.log(`soak: requests=${stats.requests} tokens=${stats.tokens} swaps=${stats.swaps} ` +
  `disconnects=${stats.disconnects} 5xx=${stats.fivexx} wrong=${stats.wrong} ` +
  `rss_start=${((result.rssStart ?? NaN) / 1048576).toFixed(0)}MiB ` +
  `rss_end=${((result.rssEnd ?? NaN) / 1048576).toFixed(0)}MiB`);
process.exit(stats.failures.length ? 1 : 0);
