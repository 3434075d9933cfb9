/**
 * Search latency on this machine (`npm run bench:search`): median and p95 of ~200 queries of one to three words,
 * common and rare, some ending in a prefix, through the search service (FTS5 match and bm25 ranking, item reads,
 * window check, views) on two mailboxes:
 *   - the demo mailbox (server/demo/seed.ts, seeded into a fresh temporary store);
 *   - a generated 100,000-message mailbox: Zipf-distributed words from a synthetic vocabulary, so a few words are in
 *     most messages and most words in very few. Built once with store.items.create (the real index path) and cached
 *     in the temp dir; `--rebuild` builds it again.
 * Also the import rate of the fixture mbox with and without batching (one transaction per message vs IMPORT_BATCH).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { openSqliteStore, type SqliteStore } from '../server/store/sqlite';
import type { NewItem } from '../server/store/types';
import { ManualClock } from '../server/clock';
import { seedDemo } from '../server/demo/seed';
import { createSearchService, searchWords } from '../server/search/service';
import { createDelivery } from '../server/mail/delivery';
import { createImporter, mboxFileSource } from '../server/mail/import';
import { SAMPLE_MBOX } from '../fixtures/import/generate';
import { Rng } from '../fixtures/generate';

const BIG = 100_000;
const QUERIES = 200;
const now = Date.UTC(2026, 6, 1);

const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))]!;
const ms = (x: number) => `${x.toFixed(2)} ms`;

function tempStore(prefix: string): { dir: string; store: SqliteStore } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, store: openSqliteStore(path.join(dir, 'pigeon.db')) };
}

// ---------------------------------------------------------------------------------------------------------------
// The generated mailbox

/** Pronounceable, distinct pseudo-words: the vocabulary, most frequent first. */
function vocabulary(size: number): string[] {
  const rng = new Rng('search-bench-vocabulary');
  const onsets = ['b', 'c', 'd', 'f', 'g', 'h', 'k', 'l', 'm', 'n', 'p', 'r', 's', 't', 'v', 'z', 'br', 'st', 'tr', 'pl'];
  const vowels = ['a', 'e', 'i', 'o', 'u', 'ai', 'ou'];
  const words = new Set<string>();
  while (words.size < size) {
    let w = '';
    for (let n = rng.int(2, 4); n > 0; n--) w += rng.pick(onsets) + rng.pick(vowels);
    words.add(w + rng.pick(['', 'n', 's', 'r', 'x']));
  }
  return [...words];
}

/** Zipf (s = 1) sampling by inverse CDF over precomputed cumulative weights. */
function zipf(n: number, rng: Rng): () => number {
  const cumulative = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) cumulative[i] = sum += 1 / (i + 1);
  return () => {
    const x = rng.next() * sum;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cumulative[mid]! < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

const VOCABULARY = vocabulary(30_000);

async function buildBig(rebuild: boolean): Promise<string> {
  const dir = path.join(os.tmpdir(), `pigeon-bench-search-${BIG}-v1`);
  if (!rebuild && fs.existsSync(path.join(dir, 'ready'))) return dir;
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  const store = openSqliteStore(path.join(dir, 'pigeon.db'));
  const tenant = await store.tenants.create('Bench', now);
  const user = await store.users.create({ tenantId: tenant.id, username: 'bench', email: 'bench@example.org', displayName: 'Bench', role: 'user', passwordHash: null }, now);
  await store.mailboxes.create(user.id, now);
  const inbox = (await store.folders.byKind(user.id, 'inbox'))!;
  const archive = (await store.folders.byKind(user.id, 'archive'))!;
  const rng = new Rng('search-bench-mailbox');
  const word = zipf(VOCABULARY.length, rng);
  const words = (n: number) => Array.from({ length: n }, () => VOCABULARY[word()]!).join(' ');
  const senders = Array.from({ length: 500 }, (_, i) => ({ name: `${VOCABULARY[1000 + i]} ${VOCABULARY[2000 + i]}`, address: `${VOCABULARY[3000 + i]}@${VOCABULARY[4000 + (i % 40)]}.example` }));
  const perTransaction = 5_000;
  for (let start = 0; start < BIG; start += perTransaction) {
    // Drawn before the unit: a unit of work only computes and calls its store (it may run more than once).
    const batch: NewItem[] = [];
    for (let i = start; i < Math.min(BIG, start + perTransaction); i++) {
      batch.push({
        userId: user.id,
        folderId: rng.chance(0.7) ? inbox.id : archive.id,
        type: 'email',
        receivedAt: now - (BIG - i) * 60_000,
        subject: words(rng.int(3, 8)),
        from: rng.pick(senders),
        to: [{ name: 'Bench', address: 'bench@example.org' }],
        bodyText: words(rng.int(30, 150)),
        isRead: rng.chance(0.8),
      });
    }
    await store.run(function* (tx) {
      for (const item of batch) yield* tx.items.create(item, now);
    });
    process.stdout.write(`\rbuilding ${Math.min(BIG, start + perTransaction)} / ${BIG}`);
  }
  store.db.exec('ANALYZE');
  await store.close();
  fs.writeFileSync(path.join(dir, 'ready'), '');
  console.log(`\rbuilt ${BIG} messages in ${((performance.now() - t0) / 1000).toFixed(0)} s (${Math.round(fs.statSync(path.join(dir, 'pigeon.db')).size / 1e6)} MB)`);
  return dir;
}

// ---------------------------------------------------------------------------------------------------------------
// Queries and timing

interface Query {
  q: string;
  kind: 'common' | 'rare' | 'mixed';
}

/** Word frequencies of a user's mail (subject and body text), for picking common and rare query words. */
function frequencies(store: SqliteStore, userId: string): Map<string, number> {
  const counts = new Map<string, number>();
  const rows = store.db.prepare(`SELECT subject, body_text, body_html FROM items WHERE user_id = ? AND type = 'email'`).all(userId) as Array<{ subject: string; body_text: string | null; body_html: string | null }>;
  for (const r of rows) {
    for (const w of new Set(searchWords(`${r.subject} ${r.body_text ?? r.body_html ?? ''}`.toLowerCase()))) {
      if (w.length >= 4 && !/^\d+$/.test(w)) counts.set(w, (counts.get(w) ?? 0) + 1);
    }
  }
  return counts;
}

function queries(counts: Map<string, number>, seed: string): Query[] {
  const rng = new Rng(seed);
  const byCount = [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map(([w]) => w);
  const common = byCount.slice(0, 40);
  const rare = byCount.filter((w) => counts.get(w)! <= 3);
  const out: Query[] = [];
  for (let i = 0; i < QUERIES; i++) {
    const kind = (['common', 'rare', 'mixed'] as const)[i % 3]!;
    const n = rng.int(1, 3);
    const ws = Array.from({ length: n }, (_, j) => (kind === 'common' || (kind === 'mixed' && j < n - 1) ? rng.pick(common) : rng.pick(rare)));
    // Every other query is typed half-way: its last word a prefix.
    if (rng.chance(0.5)) ws[n - 1] = ws[n - 1]!.slice(0, Math.max(3, Math.ceil(ws[n - 1]!.length / 2)));
    out.push({ q: ws.join(' '), kind });
  }
  return out;
}

async function run(label: string, store: SqliteStore, userId: string, qs: Query[]) {
  const search = createSearchService({ store });
  for (const q of qs.slice(0, 20)) await search(userId, { q: q.q }); // warm the page cache and statement cache
  const times: Record<Query['kind'] | 'all', number[]> = { all: [], common: [], rare: [], mixed: [] };
  let hits = 0;
  for (const q of qs) {
    const t0 = performance.now();
    hits += (await search(userId, { q: q.q })).length;
    const t = performance.now() - t0;
    times.all.push(t);
    times[q.kind].push(t);
  }
  console.log(`\n${label}: ${qs.length} queries, ${(hits / qs.length).toFixed(1)} results on average (limit 25)`);
  for (const k of ['all', 'common', 'rare', 'mixed'] as const) {
    console.log(`  ${k.padEnd(6)}  median ${ms(quantile(times[k], 0.5)).padStart(10)}   p95 ${ms(quantile(times[k], 0.95)).padStart(10)}   (${times[k].length})`);
  }
}

async function demo() {
  const { dir, store } = tempStore('pigeon-bench-search-demo-');
  try {
    const seeded = await seedDemo(store, { clock: new ManualClock(now) });
    // The demo user with the most mail.
    const [userId] = Object.values(seeded.users)
      .map((id) => [id, store.db.prepare('SELECT count(*) AS n FROM items WHERE user_id = ?').get(id) as { n: number }] as const)
      .sort((a, b) => b[1].n - a[1].n)[0]!;
    const count = (store.db.prepare(`SELECT count(*) AS n FROM items WHERE user_id = ? AND type = 'email'`).get(userId) as { n: number }).n;
    await run(`demo mailbox (${count} messages)`, store, userId, queries(frequencies(store, userId), 'search-bench-demo'));
  } finally {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function big(rebuild: boolean) {
  const dir = await buildBig(rebuild);
  const store = openSqliteStore(path.join(dir, 'pigeon.db'));
  try {
    const userId = (await store.users.byUsername('bench'))!.id;
    // Frequencies from a sample (a full scan of 100,000 bodies only to pick words would dominate the run).
    const counts = new Map<string, number>();
    const rows = store.db.prepare(`SELECT subject, body_text FROM items WHERE user_id = ? AND rowid % 20 = 0`).all(userId) as Array<{ subject: string; body_text: string }>;
    for (const r of rows) for (const w of new Set(searchWords(`${r.subject} ${r.body_text}`))) counts.set(w, (counts.get(w) ?? 0) + 1);
    await run(`generated mailbox (${BIG} messages)`, store, userId, queries(counts, 'search-bench-big'));
  } finally {
    await store.close();
  }
}

/** Messages per second importing the fixture mbox repeatedly, per transaction size. */
async function importRate() {
  console.log('\nimport of the fixture mbox (13 messages) x 100, Message-IDs made unique per round:');
  const original = fs.readFileSync(SAMPLE_MBOX, 'latin1');
  for (const batchSize of [1, 50]) {
    const { dir, store } = tempStore('pigeon-bench-import-');
    try {
      const clock = new ManualClock(Date.UTC(2026, 10, 1));
      const tenant = await store.tenants.create('T', clock.now());
      const user = await store.users.create({ tenantId: tenant.id, username: 'u', email: 'u@example.org', displayName: 'U', role: 'user', passwordHash: null }, clock.now());
      await store.mailboxes.create(user.id, clock.now());
      const delivery = createDelivery({ store, clock, duplicateWindowSeconds: 86400, threadSubjectWindowSeconds: 7 * 86400 });
      const importer = createImporter({ store, clock, delivery, maxMessageBytes: 50 * 1024 * 1024 });
      const file = path.join(dir, 'many.mbox');
      // Rounds differ in their Message-IDs and subjects, so nothing is a duplicate.
      fs.writeFileSync(file, Array.from({ length: 100 }, (_, r) => original.replace(/@import\.pigeon\.test>/g, `.r${r}@import.pigeon.test>`).replace(/^Subject: /gm, `Subject: [${r}] `)).join(''), 'latin1');
      const t0 = performance.now();
      const report = await importer.importAll(await importer.resolveTarget(user), mboxFileSource(file), { batchSize });
      const seconds = (performance.now() - t0) / 1000;
      console.log(`  ${String(batchSize).padStart(2)} per transaction: ${report.stored} stored, ${report.duplicates} duplicates in ${seconds.toFixed(2)} s = ${Math.round((report.stored + report.duplicates) / seconds)} messages/s`);
    } finally {
      await store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
}

async function main() {
  const args = process.argv.slice(2);
  await demo();
  await big(args.includes('--rebuild'));
  await importRate();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
