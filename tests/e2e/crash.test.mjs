// crash.test.mjs - SIGKILL in the middle of a large ingest, three times: after
// each restart every batch of documents is there whole or not at all, the
// store searches, and the database passes PRAGMA integrity_check (sqlite3,
// from deploy/debian-packages-test).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, post, call } from './server.mjs';

const BATCH = 200;
const WORDS = 'the of and to in that shall lord god he his unto king israel people land ' +
  'house son day came said children city hand father went man david men earth priest';
const words = WORDS.split(' ');

function batch(b) {
  return Array.from({ length: BATCH }, (_, i) => ({
    id: `b${b}-${i}`,
    text: Array.from({ length: 120 }, (_, k) => words[(b * 31 + i * 7 + k * 13) % words.length])
      .join(' '),
    metadata: { batch: b },
  }));
}

test('batches survive SIGKILL mid-ingest whole or not at all', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'loraserve-crash-'));
  const args = ['--max-body', String(4 << 20)];
  let srv = await startServer(args, { dataDir });
  const store = (await post(srv.url, '/v1/vector_stores', { name: 'crash' })).body.id;
  let next = 0;
  try {
    for (let round = 0; round < 3; round++) {
      // Batches back to back on two connections; once one has been answered (however
      // slow the build), the kill lands 50-200 ms later, inside the batches in flight.
      let answered = 0;
      const send = async () => {
        for (;;) {
          const b = next++;
          try {
            await post(srv.url, `/v1/vector_stores/${store}/documents`, { documents: batch(b) });
            answered++;
          } catch {
            return;     // the server is gone
          }
        }
      };
      const running = [send(), send()];
      while (answered === 0) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 50 + 75 * round));
      srv.proc.kill('SIGKILL');
      await srv.exited;
      await Promise.all(running);
      srv = await startServer(args, { dataDir });
      const docs = (await call(srv.url, 'GET', `/v1/vector_stores/${store}/documents`)).body.data;
      const per = new Map();
      for (const d of docs) {
        const b = d.id.split('-')[0];
        per.set(b, (per.get(b) || 0) + 1);
      }
      for (const [b, n] of per) assert.equal(n, BATCH, `batch ${b}: ${n} of ${BATCH} documents`);
      assert.ok(per.size >= 1, `round ${round}: no batch committed`);
      const s = await post(srv.url, `/v1/vector_stores/${store}/search`,
        { query: 'king david', max_num_results: 5 });
      assert.equal(s.status, 200, s.text);
      assert.equal(s.body.data.length, 5);
      console.log(`# round ${round}: ${per.size} whole batches of ${next} started`);
    }
  } finally {
    const { code } = await srv.stop();
    assert.equal(code, 0);
  }
  const check = execFileSync('sqlite3', [join(dataDir, 'loraserve.db'), 'PRAGMA integrity_check;'],
    { encoding: 'utf8' });
  assert.equal(check.trim(), 'ok');
  rmSync(dataDir, { recursive: true, force: true });
});
