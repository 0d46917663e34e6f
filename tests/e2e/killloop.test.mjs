// killloop.test.mjs - 20 SIGKILLs at random moments while the server is busy
// with every kind of write it keeps in <data-dir>/loraserve.db:
//   - adapter registration: names replaced in rotation by the GGUF files and
//     PEFT directories of ../shared/models/lora (--adapter-dir), pinned or not,
//     some names deleted and registered again;
//   - A/B experiments created, re-weighted (PATCH) and deleted, with
//     completions routed through them (so a DELETE removes their records too);
//   - documents ingested into a vector store in batches, on two connections;
//   - tenants created and deleted, API keys created and revoked;
//   - completions on the adapters and experiments all along.
// Each kill lands after every kind of write has been answered at least once
// in the round, at a random delay (0-150 ms) with requests of every kind in
// flight, so its timing does not depend on the machine's speed. Then the
// server is started again on the same --data-dir and must come up, and:
//   - `sqlite3 loraserve.db 'PRAGMA integrity_check'` says ok, the FTS5 index
//     agrees with its table, no chunk lacks its document, no document lacks
//     chunks, no API key lacks its tenant;
//   - only whole transactions are there, and every answered one is: for each
//     object the state found is the one of its last answered write or of the
//     write in flight at the kill, never a mix (a batch of documents is all
//     there or not at all, counted by its metadata; an adapter's path, format,
//     sha256 and pin belong together; an experiment has exactly the variants
//     of one of those writes);
//   - every adapter listed serves a request with the version it lists, every
//     experiment listed answers GET /v1/experiments/{name} with all its
//     variants and routes a request to one of them, the store searches, and
//     every key works or is refused as its tenant's state says.
// The seed of the random choices and delays is printed (KILLLOOP_SEED=N replays
// them; the server's own timing still varies from run to run).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { startServer, LORA_DIR, MODEL_ID } from './server.mjs';

const ROUNDS = 20;
const ADMIN = 'killloop-admin-key';
const ARGS = ['--admin-key', ADMIN, '--adapter-dir', LORA_DIR, '--max-body', String(4 << 20)];
const PATHS = ['kjv-tiny-lora-fortunes.gguf', 'kjv-tiny-lora-jargon.gguf',
  'kjv-tiny-lora-devil.gguf', 'peft-fortunes', 'peft-jargon', 'peft-devil'];
const STABLE = ['a0', 'a1'];            // replaced, never deleted: the experiments use them
const ROTATING = ['r0', 'r1'];          // replaced, deleted, registered again
const EXPERIMENTS = ['e0', 'e1', 'e2'];
const BATCH = 40;
const KINDS = ['adapters', 'experiments', 'documents', 'tenants'];
const ABSENT = 'absent';

// Seeded PRNG (mulberry32), so a failing run's timings can be replayed.
const SEED = Number(process.env.KILLLOOP_SEED || (Date.now() % 1e9));
let rs = SEED >>> 0;
function rand() {
  rs = (rs + 0x6d2b79f5) >>> 0;
  let t = rs;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rand() * a.length)];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const WORDS = ('the of and to in that shall lord god he his unto king israel people land ' +
  'house son day came said children city hand father went man david men earth priest').split(' ');
const batchDocs = (b) => Array.from({ length: BATCH }, (_, i) => ({
  id: `b${b}-${i}`,
  text: Array.from({ length: 60 }, (_, k) => WORDS[(b * 31 + i * 7 + k * 13) % WORDS.length])
    .join(' '),
  metadata: { batch: b },
}));

let srv;
const writeErrors = [];     // 5xx answers to writes (no kill involved), for the second test
// One request; { status, headers, body, text }. Throws when the server is gone.
async function req(key, method, path, body) {
  const headers = body === undefined ? {} : { 'Content-Type': 'application/json' };
  if (key) headers.Authorization = `Bearer ${key}`;
  const r = await fetch(srv.url + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(20000),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, body: json, text };
}

// A ledger entry per object: the state of its last answered write (acked) and
// the state the write in flight would leave (inflight, undefined when none).
// After a kill the object must be in one of the two.
const ledger = (acked) => ({ acked, inflight: undefined });
const allowed = (l) => (l.inflight === undefined ? [l.acked] : [l.acked, l.inflight]);

test(`kill loop: ${ROUNDS} SIGKILLs during adapter, experiment, document and tenant writes`,
  { timeout: 180000 }, async () => {
    const t0 = Date.now();
    console.log(`# kill loop seed ${SEED} (KILLLOOP_SEED=${SEED} replays its choices and delays)`);
    const dataDir = mkdtempSync(join(tmpdir(), 'loraserve-killloop-'));
    const db = join(dataDir, 'loraserve.db');
    srv = await startServer(ARGS, { dataDir });
    try {
      // ---- Setup (no kill yet): a tenant and its key, the adapters' sha256, a store.
      const main = (await req(ADMIN, 'POST', '/v1/tenants', { name: 'main' })).body;
      const KEY = (await req(ADMIN, 'POST', `/v1/tenants/${main.id}/keys`)).body.key;
      assert.ok(KEY, 'no key for the main tenant');
      const SHA = {};
      for (const p of PATHS) {
        const r = await req(KEY, 'POST', '/v1/adapters', { name: 'probe', path: p });
        assert.equal(r.status, 200, r.text);
        SHA[p] = r.body.sha256;
      }
      assert.equal((await req(KEY, 'DELETE', '/v1/adapters/probe')).status, 200);
      const adapters = {};
      const version = {};
      for (const n of [...STABLE, ...ROTATING]) {
        const state = { path: pick(PATHS), pin: false };
        const r = await req(KEY, 'POST', '/v1/adapters', { name: n, ...state });
        assert.equal(r.status, 200, r.text);
        adapters[n] = ledger(JSON.stringify(state));
        version[n] = r.body.version;
      }
      const experiments = Object.fromEntries(EXPERIMENTS.map((n) => [n, ledger(ABSENT)]));
      const vs = (await req(KEY, 'POST', '/v1/vector_stores', { name: 'killloop' })).body.id;
      assert.ok(vs);
      const batches = new Map();          // batch number -> 'acked' | 'inflight'
      let nextBatch = 0;
      // Tenants: the one being churned (or null), its known keys, and the keys and
      // tenants whose revocation or deletion was answered (they must stay refused).
      let churn = null;                   // { name, id, keys: Map(id -> secret), unknownKeys }
      let churnOp = null;                 // the write in flight: { type, name?, keyId? }
      let churnNo = 0;
      const refused = [];                 // secrets that must get 401

      let seq = 0;                        // makes every experiment write's variants unique
      const variantsFor = (s) => {
        const models = [MODEL_ID, 'a0', 'a1'];
        const n = 1 + (s % 3);
        return Array.from({ length: n }, (_, i) => ({ model: models[(s + i) % 3],
          weight: 10 * s + i + 1 }));
      };

      let clean = 0;
      const failures = [];
      writeErrors.length = 0;
      const inflightAtKill = Object.fromEntries(KINDS.map((k) => [k, 0]));
      let round = 0;
      for (; round < ROUNDS; round++) {
        // ---- Load: every kind of write, back to back, until the kill.
        let stop = false;
        const acks = Object.fromEntries(KINDS.map((k) => [k, 0]));
        const pending = Object.fromEntries(KINDS.map((k) => [k, 0]));
        const unexpected = [];
        const stopped = Object.fromEntries(KINDS.map((k) => [k, false]));
        // A 5xx answer to a write: recorded, and its outcome left unknown (as if it
        // were still in flight at the kill); the adapter, experiment or tenant worker
        // then rests until the kill (its ledger holds one unknown write at most),
        // the batch workers go on (each batch is an object of its own).
        const writeError = (what, r) => {
          writeErrors.push(`round ${round}: ${what}: ${r.status} ${r.text}`);
        };
        // Runs one write of a kind, counted in pending while it is in flight.
        const write = async (kind, fn) => {
          pending[kind]++;
          try {
            const r = await fn();
            pending[kind]--;
            return r;
          } catch (e) {
            pending[kind]--;
            throw e;
          }
        };
        const adapterWorker = async () => {
          while (!stop) {
            const n = pick([...STABLE, ...ROTATING]);
            const l = adapters[n];
            const del = ROTATING.includes(n) && l.acked !== ABSENT && rand() < 0.3;
            const state = del ? ABSENT : JSON.stringify({ path: pick(PATHS), pin: rand() < 0.3 });
            l.inflight = state;
            const r = await write('adapters', () => (del ? req(KEY, 'DELETE', `/v1/adapters/${n}`)
              : req(KEY, 'POST', '/v1/adapters', { name: n, ...JSON.parse(state) })));
            if (r.status >= 500) return writeError(`adapter ${n}`, r);  // outcome unknown
            l.inflight = undefined;
            if (r.status !== 200) { unexpected.push(`adapter ${n}: ${r.status} ${r.text}`); continue; }
            l.acked = state;
            if (!del) version[n] = r.body.version;
            acks.adapters++;
          }
        };
        const experimentWorker = async () => {
          while (!stop) {
            const n = pick(EXPERIMENTS);
            const l = experiments[n];
            const s = ++seq;
            let r;
            if (l.acked === ABSENT) {
              const variants = variantsFor(s);
              l.inflight = JSON.stringify(variants);
              r = await write('experiments', () => req(KEY, 'POST', '/v1/experiments',
                { name: n, variants, sticky: 'none' }));
            } else if (rand() < 0.25) {
              l.inflight = ABSENT;
              r = await write('experiments', () => req(KEY, 'DELETE', `/v1/experiments/${n}`));
            } else {
              const variants = variantsFor(s);
              l.inflight = JSON.stringify(variants);
              r = await write('experiments', () => req(KEY, 'PATCH', `/v1/experiments/${n}`,
                { variants }));
            }
            if (r.status >= 500) return writeError(`experiment ${n}`, r);
            const state = l.inflight;
            l.inflight = undefined;
            if (r.status !== 200) { unexpected.push(`experiment ${n}: ${r.status} ${r.text}`); continue; }
            l.acked = state;
            acks.experiments++;
          }
        };
        const ingestWorker = async () => {
          while (!stop) {
            const b = nextBatch++;
            batches.set(b, 'inflight');
            const r = await write('documents', () => req(KEY, 'POST',
              `/v1/vector_stores/${vs}/documents`, { documents: batchDocs(b) }));
            if (r.status >= 500) {                  // outcome unknown: whole or nothing
              writeError(`batch ${b}`, r);
              continue;
            }
            if (r.status !== 200) {
              batches.delete(b);
              unexpected.push(`batch ${b}: ${r.status} ${r.text}`);
              continue;
            }
            batches.set(b, 'acked');
            acks.documents++;
          }
        };
        const tenantWorker = async () => {
          while (!stop) {
            let r;
            if (churn === null) {
              const name = `churn-${churnNo++}`;
              churnOp = { type: 'create', name };
              r = await write('tenants', () => req(ADMIN, 'POST', '/v1/tenants', { name }));
              if (r.status === 200) churn = { name, id: r.body.id, keys: new Map(), unknownKeys: 0 };
            } else if (churn.keys.size + churn.unknownKeys < 2 || rand() < 0.3) {
              churnOp = { type: 'key' };
              r = await write('tenants', () => req(ADMIN, 'POST', `/v1/tenants/${churn.id}/keys`));
              if (r.status === 200) churn.keys.set(r.body.id, r.body.key);
            } else if (churn.keys.size > 0 && rand() < 0.6) {
              const keyId = pick([...churn.keys.keys()]);
              churnOp = { type: 'revoke', keyId };
              r = await write('tenants', () => req(ADMIN, 'DELETE',
                `/v1/tenants/${churn.id}/keys/${keyId}`));
              if (r.status === 200) {
                refused.push(churn.keys.get(keyId));
                churn.keys.delete(keyId);
              }
            } else {
              churnOp = { type: 'delete' };
              r = await write('tenants', () => req(ADMIN, 'DELETE', `/v1/tenants/${churn.id}`));
              if (r.status === 200) {
                refused.push(...churn.keys.values());
                churn = null;
              }
            }
            if (r.status >= 500) return writeError(`tenant ${churnOp.type}`, r);
            const op = churnOp;
            churnOp = null;
            if (r.status !== 200) { unexpected.push(`tenant ${op.type}: ${r.status} ${r.text}`); continue; }
            acks.tenants++;
          }
        };
        const trafficWorker = async () => {
          while (!stop) {
            const model = pick([MODEL_ID, ...STABLE, ...EXPERIMENTS]);
            await req(KEY, 'POST', '/v1/completions', { model, prompt: 'In the beginning',
              max_tokens: 4, user: `u${Math.floor(rand() * 50)}` });
          }
        };
        const guard = (kind, fn) => fn().catch(() => { /* the server was killed */ })
          .finally(() => { if (kind) stopped[kind] = true; });
        const workers = [['adapters', adapterWorker], ['experiments', experimentWorker],
          ['documents', ingestWorker], ['documents', ingestWorker], ['tenants', tenantWorker],
          [null, trafficWorker]].map(([k, fn]) => guard(k, fn));

        // ---- The kill: once each kind has been answered, after a random delay.
        const deadline = Date.now() + 15000;
        while (KINDS.some((k) => acks[k] === 0 && !stopped[k]) && Date.now() < deadline) await sleep(5);
        const progressed = KINDS.every((k) => acks[k] > 0 || stopped[k]);
        await sleep(rand() * 150);
        for (const k of KINDS) if (pending[k] > 0) inflightAtKill[k]++;
        srv.proc.kill('SIGKILL');
        stop = true;
        await srv.exited;
        await Promise.all(workers);

        // ---- Restart on the same data directory and check everything.
        const problems = [...unexpected];
        if (!progressed) problems.push(`no progress before the kill: ${JSON.stringify(acks)}`);
        try {
          srv = await startServer(ARGS, { dataDir });
        } catch (e) {
          failures.push(`round ${round}: the server does not start again: ${e.message}`);
          srv = null;
          break;
        }
        try {
          await verify(problems);
        } catch (e) {
          problems.push(`check failed: ${e.stack || e.message}`);
        }
        if (problems.length === 0) clean++;
        else failures.push(`round ${round}:\n  ${problems.join('\n  ')}`);
        console.log(`# round ${round}: ${problems.length ? 'NOT clean' : 'clean'}; ` +
          `${batches.size} whole batches, adapters ${[...STABLE, ...ROTATING].filter((n) =>
            adapters[n].acked !== ABSENT).length}, experiments ${EXPERIMENTS.filter((n) =>
            experiments[n].acked !== ABSENT).length}, churn tenant ${churn ? churn.name : '-'}`);
      }

      // ---- What a restart must find. Throws on a broken invariant, pushes the
      // rest to problems; then makes what it found the new acknowledged state.
      async function verify(problems) {
        const bad = (m) => problems.push(m);
        // The database file itself.
        const sql = (q) => execFileSync('sqlite3', ['-cmd', '.timeout 10000', db, q],
          { encoding: 'utf8' }).trim();
        const ic = sql('PRAGMA integrity_check;');
        if (ic !== 'ok') bad(`integrity_check: ${ic}`);
        try {
          sql("INSERT INTO vs_chunks_fts(vs_chunks_fts) VALUES('integrity-check');");
        } catch (e) {
          bad(`FTS5 integrity-check: ${e.stderr || e.message}`);
        }
        const orphans = sql('SELECT count(*) FROM vs_chunks c WHERE NOT EXISTS (SELECT 1 FROM' +
          ' vs_documents d WHERE d.store = c.store AND d.id = c.document);');
        if (orphans !== '0') bad(`${orphans} chunks without their document`);
        const short = sql('SELECT count(*) FROM vs_documents d WHERE n_chunks != (SELECT count(*)' +
          ' FROM vs_chunks c WHERE c.store = d.store AND c.document = d.id);');
        if (short !== '0') bad(`${short} documents whose chunks are not all there`);
        const keyless = sql('SELECT count(*) FROM api_keys k WHERE NOT EXISTS (SELECT 1 FROM' +
          ' tenants t WHERE t.no = k.tenant_no);');
        if (keyless !== '0') bad(`${keyless} API keys of no tenant`);

        // Adapters: each in one of its allowed states, whole, and serving.
        const listed = await req(KEY, 'GET', '/v1/adapters');
        assert.equal(listed.status, 200, listed.text);
        const byName = new Map(listed.body.data.map((a) => [a.name, a]));
        for (const name of byName.keys()) {
          if (!adapters[name]) bad(`adapter ${name} listed, never registered`);
        }
        for (const [name, l] of Object.entries(adapters)) {
          const a = byName.get(name);
          const seen = a ? JSON.stringify({ path: basename(a.path), pin: a.pinned }) : ABSENT;
          if (!allowed(l).includes(seen)) {
            bad(`adapter ${name}: found ${seen}, expected one of ${allowed(l).join(' | ')}`);
          }
          if (a) {
            const p = basename(a.path);
            if (a.sha256 !== SHA[p]) bad(`adapter ${name}: sha256 ${a.sha256} is not ${p}'s`);
            if (a.format !== (p.startsWith('peft-') ? 'peft' : 'gguf')) bad(`adapter ${name}: format ${a.format} for ${p}`);
            if (a.status === 'failed') bad(`adapter ${name}: failed: ${a.error}`);
            if (l.acked !== ABSENT && version[name] && a.version < version[name]) {
              bad(`adapter ${name}: version ${a.version} below the answered ${version[name]}`);
            }
            const r = await req(KEY, 'POST', '/v1/completions',
              { model: name, prompt: 'In the beginning', max_tokens: 2 });
            if (r.status !== 200) bad(`adapter ${name} does not serve: ${r.status} ${r.text}`);
            else if (r.headers.get('x-loraserve-adapter-version') !== `${name}@${a.version}`) {
              bad(`adapter ${name}: served ${r.headers.get('x-loraserve-adapter-version')}, ` +
                `listed version ${a.version}`);
            }
            version[name] = a.version;
          }
          l.acked = seen;
          l.inflight = undefined;
        }

        // Experiments: exactly the variants of one write, answering and routing.
        const exps = await req(KEY, 'GET', '/v1/experiments');
        assert.equal(exps.status, 200, exps.text);
        const expByName = new Map(exps.body.data.map((x) => [x.name, x]));
        for (const name of expByName.keys()) {
          if (!experiments[name]) bad(`experiment ${name} listed, never created`);
        }
        for (const [name, l] of Object.entries(experiments)) {
          const x = expByName.get(name);
          const seen = x ? JSON.stringify(x.variants) : ABSENT;
          if (!allowed(l).includes(seen)) {
            bad(`experiment ${name}: found ${seen}, expected one of ${allowed(l).join(' | ')}`);
          }
          if (x) {
            const g = await req(KEY, 'GET', `/v1/experiments/${name}`);
            if (g.status !== 200) bad(`GET /v1/experiments/${name}: ${g.status} ${g.text}`);
            else {
              const got = JSON.stringify(g.body.variants.map((v) => ({ model: v.model, weight: v.weight })));
              if (got !== seen) bad(`experiment ${name}: GET has ${got}, the list ${seen}`);
              if (!g.body.variants.every((v) => v.stats && typeof v.stats.requests === 'number')) {
                bad(`experiment ${name}: a variant without its figures: ${g.text}`);
              }
            }
            const r = await req(KEY, 'POST', '/v1/completions',
              { model: name, prompt: 'In the beginning', max_tokens: 2 });
            const models = x.variants.filter((v) => v.weight > 0).map((v) => v.model);
            if (r.status !== 200) bad(`experiment ${name} does not route: ${r.status} ${r.text}`);
            else if (!models.includes(r.headers.get('x-loraserve-variant'))) {
              bad(`experiment ${name} routed to ${r.headers.get('x-loraserve-variant')}`);
            }
          }
          l.acked = seen;
          l.inflight = undefined;
        }

        // Documents: whole batches only, every answered one there, and a search.
        const docs = await req(KEY, 'GET', `/v1/vector_stores/${vs}/documents`);
        assert.equal(docs.status, 200, docs.text);
        const per = new Map();
        for (const d of docs.body.data) {
          const b = d.metadata && d.metadata.batch;
          per.set(b, (per.get(b) || 0) + 1);
        }
        for (const [b, n] of per) {
          if (!batches.has(b)) bad(`documents of batch ${b}, which was never sent`);
          if (n !== BATCH) bad(`batch ${b}: ${n} of ${BATCH} documents (a half transaction)`);
        }
        for (const [b, s] of batches) {
          if (s === 'acked' && per.get(b) !== BATCH) bad(`batch ${b} was answered 200 but is gone`);
          if (per.get(b) === BATCH) batches.set(b, 'acked');
          else batches.delete(b);
        }
        const s = await req(KEY, 'POST', `/v1/vector_stores/${vs}/search`,
          { query: 'king david', max_num_results: 5 });
        if (s.status !== 200) bad(`search: ${s.status} ${s.text}`);
        else if (per.size > 0 && s.body.data.length === 0) bad('search finds nothing');

        // Tenants and keys.
        const works = async (key) => (await req(key, 'GET', '/v1/models')).status;
        if (await works(KEY) !== 200) bad("the main tenant's key no longer works");
        const tenants = await req(ADMIN, 'GET', '/v1/tenants');
        assert.equal(tenants.status, 200, tenants.text);
        const churned = tenants.body.data.filter((t) => t.name.startsWith('churn-'));
        const op = churnOp;
        churnOp = null;
        for (const t of churned) {
          const known = (churn && t.id === churn.id) || (op && op.type === 'create' && t.name === op.name);
          if (!known) bad(`tenant ${t.name} (${t.id}) is there but was deleted or never made`);
        }
        if (churn) {
          const t = churned.find((x) => x.id === churn.id);
          if (!t && !(op && op.type === 'delete')) bad(`tenant ${churn.name} is gone`);
          if (t) {
            const n = churn.keys.size + churn.unknownKeys;
            const ok = [n];
            if (op && op.type === 'key') ok.push(n + 1);
            if (op && op.type === 'revoke') ok.push(n - 1);
            if (!ok.includes(t.keys)) bad(`tenant ${churn.name}: ${t.keys} keys, expected ${ok}`);
            for (const [id, secret] of churn.keys) {
              const st = await works(secret);
              const mayGo = op && op.type === 'revoke' && op.keyId === id;
              if (st === 401 && mayGo) {
                churn.keys.delete(id);
                refused.push(secret);
              } else if (st !== 200) bad(`tenant ${churn.name}: key ${id} answers ${st}`);
            }
            if (op && op.type === 'revoke' && churn.keys.has(op.keyId) && t.keys !== n) {
              bad(`tenant ${churn.name}: the key count fell but the key still works`);
            }
            churn.unknownKeys = t.keys - churn.keys.size;
          } else {
            for (const secret of churn.keys.values()) {
              refused.push(secret);
              if (await works(secret) !== 401) bad(`a key of deleted tenant ${churn.name} works`);
            }
            churn = null;
          }
        } else if (op && op.type === 'create') {
          const t = churned.find((x) => x.name === op.name);
          if (t && t.keys !== 0) bad(`new tenant ${t.name} has ${t.keys} keys`);
          if (t) churn = { name: t.name, id: t.id, keys: new Map(), unknownKeys: 0 };
        }
        for (const secret of refused) {
          const st = await works(secret);
          if (st !== 401) bad(`a revoked or deleted key answers ${st}`);
        }
      }

      // ---- The end: a clean stop, the file checked once more.
      if (srv) {
        const { code } = await srv.stop();
        if (code !== 0) failures.push(`the last server exited with ${code}`);
        const ic = execFileSync('sqlite3', [db, 'PRAGMA integrity_check;'], { encoding: 'utf8' });
        if (ic.trim() !== 'ok') failures.push(`final integrity_check: ${ic}`);
      }
      for (const e of writeErrors) console.log(`# a write answered 5xx (no kill involved): ${e}`);
      const secs = ((Date.now() - t0) / 1000).toFixed(1);
      console.log(`# in flight at the kills: ${KINDS.map((k) => `${k} ${inflightAtKill[k]}/${round}`).join(', ')}`);
      console.log(`kill loop: ${clean}/${ROUNDS} restarts clean (${secs} s, seed ${SEED})`);
      if (failures.length === 0 && existsSync(dataDir)) rmSync(dataDir, { recursive: true, force: true });
      else console.log(`# data directory kept: ${dataDir}`);
      assert.deepEqual(failures, [], `kill loop: ${clean}/${ROUNDS} clean`);
      assert.equal(clean, ROUNDS);
    } finally {
      // Never leave a server behind, whatever failed.
      if (srv && srv.proc.exitCode === null && srv.proc.signalCode === null) srv.proc.kill('SIGKILL');
    }
  });

// Apart from the kills, every answered write must be a 2xx: while other modules
// write to loraserve.db a batch of documents used to fail with 500 (a deferred
// "BEGIN" meeting SQLITE_BUSY, which the busy timeout does not cover); all
// changes now start with BEGIN IMMEDIATE.
test('every write of the kill loop that was answered got a 2xx', () => {
  assert.deepEqual(writeErrors, []);
});
