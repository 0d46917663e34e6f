// corpus.test.mjs - retrieval quality on real text: 240 short documents, the
// first five verses of chapters 1-4 of 60 books of the King James Bible (from
// Debian's bible-kjv package), and 20 held questions, each built from a
// document's third verse: its four most distinctive words (those in the
// fewest documents), in a question's frame. With the hash
// embedder in hybrid mode the right document must be in the top 3 for every
// question; vector and keyword modes are reported alongside. (bible-kjv is in
// deploy/debian-packages-test, which make deps and .ci/run install.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startServer, post } from './server.mjs';

const BOOKS = ['Gen', 'Exo', 'Lev', 'Num', 'Deu', 'Jos', 'Jdg', 'Rut', '1Sa', '2Sa', '1Ki',
  '2Ki', '1Ch', '2Ch', 'Ezr', 'Neh', 'Est', 'Job', 'Psa', 'Pro', 'Ecc', 'Son', 'Isa', 'Jer',
  'Lam', 'Eze', 'Dan', 'Hos', 'Joe', 'Amo', 'Mic', 'Zec', 'Mal', 'Mat', 'Mar', 'Luk', 'Joh',
  'Act', 'Rom', '1Co', '2Co', 'Gal', 'Eph', 'Phi', 'Col', '1Th', '1Ti', '2Ti', 'Heb', 'Jam',
  '1Pe', '1Jo', 'Rev', 'Nah', 'Hab', 'Zep', 'Hag', '2Pe', '2Th', 'Tit'];
const STOP = new Set(('a an and are as at be but by for from he her him his i in is it my not ' +
  'of on or shall she that the their them they thee this thou thy to unto up was we were which ' +
  'with ye you').split(' '));

// [{ id, text, verses: [..] }] from the bible program's formatted output.
function corpus() {
  const specs = BOOKS.flatMap((b) => [1, 2, 3, 4].map((c) => `${b}${c}:1-5`));
  const out = execFileSync('bible', ['-l10000', ...specs], { encoding: 'utf8' });
  const docs = [];
  let cur = null;
  for (const line of out.split('\n')) {
    const head = /^(\S.*) (\d+)$/.exec(line);
    const verse = /^\s+\d+ (.*)$/.exec(line);
    if (head) {
      cur = { id: `${head[1].replace(/\s+/g, '')}-${head[2]}`, verses: [] };
      docs.push(cur);
    } else if (verse && cur) {
      cur.verses.push(verse[1]);
    }
  }
  for (const d of docs) d.text = d.verses.join(' ');
  return docs.filter((d) => d.verses.length >= 3);
}

const words = (text) => text.toLowerCase().match(/[a-z]+/g).filter((w) => !STOP.has(w));

// A question from verse 3's most distinctive words: the four found in the
// fewest documents of the corpus, in the verse's order.
function question(doc, df) {
  const w = [...new Set(words(doc.verses[2]))];
  const rare = new Set([...w].sort((a, b) => df.get(a) - df.get(b) || a.localeCompare(b))
    .slice(0, 4));
  return `Where does it speak of ${w.filter((x) => rare.has(x)).join(' ')}?`;
}

function docFreq(all) {
  const df = new Map();
  for (const d of all)
    for (const w of new Set(words(d.text))) df.set(w, (df.get(w) || 0) + 1);
  return df;
}

let srv, store, docs;
before(async () => {
  docs = corpus();
  srv = await startServer(['--max-body', String(4 << 20)]);
  const c = await post(srv.url, '/v1/vector_stores', { name: 'kjv' });
  store = c.body.id;
  const a = await post(srv.url, `/v1/vector_stores/${store}/documents`, {
    documents: docs.map((d) => ({ id: d.id, text: d.text, metadata: { book: d.id.split('-')[0] } })),
  });
  assert.equal(a.status, 200, a.text);
});
after(async () => {
  const { code } = await srv.stop();
  assert.equal(code, 0, srv.stderr());
});

test('240 passages; 20 held questions each find their passage in the top 3 (hybrid)', async () => {
  assert.ok(docs.length >= 200, `${docs.length} documents`);
  const held = docs.filter((_, i) => i % 12 === 5).slice(0, 20);
  const df = docFreq(docs);
  assert.equal(held.length, 20);
  const hits = { vector: 0, keyword: 0, hybrid: 0 };
  const misses = [];
  for (const d of held) {
    const q = question(d, df);
    for (const mode of Object.keys(hits)) {
      const r = await post(srv.url, `/v1/vector_stores/${store}/search`,
        { query: q, mode, max_num_results: 3 });
      assert.equal(r.status, 200, r.text);
      const found = r.body.data.some((h) => h.file_id === d.id);
      hits[mode] += found;
      if (!found && mode === 'hybrid') misses.push(`${d.id}: "${q}" -> ` +
        r.body.data.map((h) => h.file_id).join(', '));
    }
  }
  console.log(`# top-3 hits of 20: ${JSON.stringify(hits)}`);
  assert.deepEqual(misses, []);
});
