/**
 * The mailboxes the suite measures: one user ("bench") whose inbox holds N messages, generated deterministically
 * (same subjects, senders, dates, read and flag states on every machine) with bulk SQL — going through the delivery
 * path would take hours for a million. The result is an ordinary Pigeon store: migrated by the store itself, items
 * with their change-log rows, folder counts, planner statistics.
 *
 * Built mailboxes are cached under the temp dir, keyed by N, the migrations' text and GENERATOR_VERSION, so a schema
 * change (or a change here) rebuilds them and an unchanged one is reused between runs. Each run works on a copy.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { openSqliteStore } from '../../server/store/sqlite';
import { MIGRATIONS_DIR } from '../../server/store/sqlite/db';
import { hashPassword } from '../../server/auth/passwords';

/** Bump when the generated content changes: cached mailboxes of an older version are rebuilt. */
export const GENERATOR_VERSION = 1;

export const BENCH_USER = { username: 'bench', password: 'bench-password-0001', email: 'bench@bench.example' };

/** Mulberry32: a tiny seeded PRNG, so "random" flags and senders are the same on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function schemaFingerprint(): string {
  const h = crypto.createHash('sha256').update(`generator ${GENERATOR_VERSION}\n`);
  for (const f of fs.readdirSync(MIGRATIONS_DIR).filter((n) => n.endsWith('.sql')).sort()) {
    h.update(f).update(fs.readFileSync(path.join(MIGRATIONS_DIR, f)));
  }
  return h.digest('hex').slice(0, 12);
}

const SENDERS = ['Ada Lovelace', 'Grace Hopper', 'Alan Turing', 'Edsger Dijkstra', 'Barbara Liskov', 'Donald Knuth', 'Frances Allen', 'Ken Thompson'];
const WORDS = 'quarterly report meeting notes invoice travel plans review draft release schedule budget proposal lunch follow-up question update'.split(' ');
/** Messages arrive a minute apart, the newest at this instant (fixed, so every build is the same). */
const NEWEST = Date.UTC(2026, 0, 1);

async function build(n: number, dir: string): Promise<void> {
  const store = openSqliteStore(path.join(dir, 'pigeon.db'));
  const now = NEWEST;
  const tenant = await store.tenants.create('Bench', now);
  const user = await store.users.create(
    { tenantId: tenant.id, username: BENCH_USER.username, email: BENCH_USER.email, displayName: 'Bench User', role: 'user', passwordHash: await hashPassword(BENCH_USER.password) },
    now,
  );
  await store.mailboxes.create(user.id, now);
  const inbox = (await store.folders.byKind(user.id, 'inbox'))!;
  const db = store.db;
  let modseq = (await store.mailboxes.get(user.id))!.highestModseq;
  const insertItem = db.prepare(
    `INSERT INTO items (id, user_id, folder_id, type, received_at, modseq, placed_modseq, change_key, is_read, is_flagged, subject,
       from_json, to_json, preview, body_size, conversation_id, internet_message_id, sent_at, created_at)
     VALUES (?, ?, ?, 'email', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const insertChange = db.prepare(
    `INSERT INTO changes (user_id, modseq, at, object_type, object_id, op, folder_id, received_at) VALUES (?, ?, ?, 'item', ?, 'created', ?, ?)`,
  );
  const to = JSON.stringify([{ name: 'Bench User', address: BENCH_USER.email }]);
  const random = prng(n);
  let unread = 0;
  const chunk = 50_000;
  for (let start = 0; start < n; start += chunk) {
    db.transaction(() => {
      for (let i = start; i < Math.min(n, start + chunk); i++) {
        modseq++;
        const id = `b${String(i).padStart(15, '0')}`;
        const received = NEWEST - (n - 1 - i) * 60_000;
        const name = SENDERS[Math.floor(random() * SENDERS.length)]!;
        const from = JSON.stringify({ name, address: `${name.split(' ')[0]!.toLowerCase()}@example.org` });
        const subject = `${WORDS[Math.floor(random() * WORDS.length)]} ${WORDS[Math.floor(random() * WORDS.length)]} #${i}`;
        const preview = `Hello, about the ${subject}: ${WORDS.join(' ')}`.slice(0, 200);
        const isRead = random() < 0.7 ? 1 : 0;
        unread += 1 - isRead;
        const conversation = `c${Math.floor(i / 3)}`;
        insertItem.run(id, user.id, inbox.id, received, modseq, modseq, String(modseq), isRead, random() < 0.05 ? 1 : 0, subject, from, to, preview,
          2048 + Math.floor(random() * 30_000), conversation, `<${id}@bench.example>`, received - 30_000, now);
        insertChange.run(user.id, modseq, now, id, inbox.id, received);
      }
    })();
  }
  db.prepare('UPDATE mailboxes SET highest_modseq = ? WHERE user_id = ?').run(modseq, user.id);
  db.prepare('UPDATE folders SET total_count = ?, unread_count = ?, modseq = ?, content_modseq = ? WHERE id = ?').run(n, unread, modseq, modseq, inbox.id);
  db.exec('ANALYZE');
  await store.close();
}

/** The cached store for N items (built when missing or outdated), and how long that took (0 when cached). */
export async function cachedMailbox(n: number, log: (line: string) => void): Promise<{ file: string; buildMs: number }> {
  const prefix = `pigeon-bench-mailbox-${n}-`;
  const dir = path.join(os.tmpdir(), `${prefix}${schemaFingerprint()}`);
  const file = path.join(dir, 'pigeon.db');
  if (fs.existsSync(path.join(dir, 'complete'))) return { file, buildMs: 0 };
  // Mailboxes of an older schema or generator are of no further use: they only hold disk space.
  for (const old of fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith(prefix))) fs.rmSync(path.join(os.tmpdir(), old), { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  log(`building the ${n.toLocaleString('en')}-item mailbox (cached for later runs) ...`);
  const t0 = performance.now();
  await build(n, dir);
  fs.writeFileSync(path.join(dir, 'complete'), '');
  const buildMs = performance.now() - t0;
  log(`  built in ${(buildMs / 1000).toFixed(1)} s, ${Math.round(fs.statSync(file).size / 2 ** 20)} MiB`);
  return { file, buildMs };
}

/** A fresh data dir holding a copy of the cached store (scenarios change it; the cache stays pristine). */
export function workingCopy(file: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-bench-run-'));
  fs.copyFileSync(file, path.join(dir, 'pigeon.db'));
  return dir;
}
