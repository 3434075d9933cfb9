/**
 * The mailboxes the suite measures: one user ("bench") whose inbox holds N messages, generated deterministically
 * (same subjects, senders, dates, read and flag states on every machine) with bulk SQL — going through the delivery
 * path would take hours for a million. The result is an ordinary Pigeon store: migrated by the store itself, items
 * with their change-log rows, folder counts, planner statistics.
 *
 * `--store pg` builds the same mailbox (the same rows, from the same seeded generator) in a PostgreSQL database.
 *
 * Built SQLite mailboxes are cached under the temp dir, keyed by N, the migrations' text and GENERATOR_VERSION, so a schema
 * change (or a change here) rebuilds them and an unchanged one is reused between runs. Each run works on a copy.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Client } from 'pg';
import { openSqliteStore } from '../../server/store/sqlite';
import { openPostgresStore } from '../../server/store/postgres';
import { MIGRATIONS_DIR } from '../../server/store/sqlite/db';
import { hashPassword } from '../../server/identity/passwords';
import type { Store } from '../../server/store/types';

/** Bump when the generated content changes: cached mailboxes of an older version are rebuilt. */
export const GENERATOR_VERSION = 1;

export const BENCH_USER = { username: 'bench', password: 'bench-password-0001', email: 'bench@bench.example' };

/** Mulberry32: a tiny seeded PRNG, so "random" flags and senders are the same on every run. */
export function prng(seed: number): () => number {
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

/** One generated message: its `items` row and the `changes` row that created it. */
export interface BenchMessage {
  id: string;
  receivedAt: number;
  modseq: number;
  isRead: boolean;
  isFlagged: boolean;
  subject: string;
  fromJson: string;
  preview: string;
  bodySize: number;
  conversationId: string;
  internetMessageId: string;
  sentAt: number;
}

export const BENCH_TO_JSON = JSON.stringify([{ name: 'Bench User', address: BENCH_USER.email }]);
/** The instant every generated row says it was created at. */
export const BENCH_NOW = NEWEST;

/**
 * The N messages of the bench mailbox, oldest first, with modseqs from `firstModseq` + 1: the same on every machine
 * and for every backend (the PRNG is seeded by N), so the SQLite and PostgreSQL mailboxes hold the same mail.
 */
export function* benchMessages(n: number, firstModseq: number): Generator<BenchMessage> {
  const random = prng(n);
  let modseq = firstModseq;
  for (let i = 0; i < n; i++) {
    modseq++;
    const id = `b${String(i).padStart(15, '0')}`;
    const received = NEWEST - (n - 1 - i) * 60_000;
    const name = SENDERS[Math.floor(random() * SENDERS.length)]!;
    const fromJson = JSON.stringify({ name, address: `${name.split(' ')[0]!.toLowerCase()}@example.org` });
    const subject = `${WORDS[Math.floor(random() * WORDS.length)]} ${WORDS[Math.floor(random() * WORDS.length)]} #${i}`;
    const preview = `Hello, about the ${subject}: ${WORDS.join(' ')}`.slice(0, 200);
    const isRead = random() < 0.7;
    const isFlagged = random() < 0.05;
    const bodySize = 2048 + Math.floor(random() * 30_000);
    yield { id, receivedAt: received, modseq, isRead, isFlagged, subject, fromJson, preview, bodySize, conversationId: `c${Math.floor(i / 3)}`, internetMessageId: `<${id}@bench.example>`, sentAt: received - 30_000 };
  }
}

/** The bench user, their mailbox and inbox, made through the Store API (the same on every backend). */
export async function benchUser(store: Store): Promise<{ userId: string; inboxId: string; modseq: number }> {
  const now = NEWEST;
  const tenant = await store.tenants.create('Bench', now);
  const user = await store.users.create(
    { tenantId: tenant.id, username: BENCH_USER.username, email: BENCH_USER.email, displayName: 'Bench User', role: 'user', passwordHash: await hashPassword(BENCH_USER.password) },
    now,
  );
  await store.mailboxes.create(user.id, now);
  const inbox = (await store.folders.byKind(user.id, 'inbox'))!;
  return { userId: user.id, inboxId: inbox.id, modseq: (await store.mailboxes.get(user.id))!.highestModseq };
}

async function build(n: number, dir: string): Promise<void> {
  const store = openSqliteStore(path.join(dir, 'pigeon.db'));
  const now = NEWEST;
  const { userId, inboxId, modseq: first } = await benchUser(store);
  const db = store.db;
  const insertItem = db.prepare(
    `INSERT INTO items (id, user_id, folder_id, type, received_at, modseq, placed_modseq, change_key, is_read, is_flagged, subject,
       from_json, to_json, preview, body_size, conversation_id, internet_message_id, sent_at, created_at)
     VALUES (?, ?, ?, 'email', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const insertChange = db.prepare(
    `INSERT INTO changes (user_id, modseq, at, object_type, object_id, op, folder_id, received_at) VALUES (?, ?, ?, 'item', ?, 'created', ?, ?)`,
  );
  let unread = 0;
  let modseq = first;
  const chunk = 50_000;
  const messages = benchMessages(n, first);
  for (let start = 0; start < n; start += chunk) {
    db.transaction(() => {
      for (let i = start; i < Math.min(n, start + chunk); i++) {
        const m = messages.next().value as BenchMessage;
        modseq = m.modseq;
        unread += m.isRead ? 0 : 1;
        insertItem.run(m.id, userId, inboxId, m.receivedAt, m.modseq, m.modseq, String(m.modseq), m.isRead ? 1 : 0, m.isFlagged ? 1 : 0, m.subject, m.fromJson,
          BENCH_TO_JSON, m.preview, m.bodySize, m.conversationId, m.internetMessageId, m.sentAt, now);
        insertChange.run(userId, m.modseq, now, m.id, inboxId, m.receivedAt);
      }
    })();
  }
  db.prepare('UPDATE mailboxes SET highest_modseq = ? WHERE user_id = ?').run(modseq, userId);
  db.prepare('UPDATE folders SET total_count = ?, unread_count = ?, modseq = ?, content_modseq = ? WHERE id = ?').run(n, unread, modseq, modseq, inboxId);
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

/**
 * The same N-item mailbox in a PostgreSQL database (empty; the store migrates it): the user, mailbox and inbox
 * through the Store API, the messages and their change-log rows in bulk, then VACUUM ANALYZE — planner statistics
 * and the visibility map a settled table has, as ANALYZE gives the SQLite file. Not cached: 10,000 rows take seconds.
 */
export async function buildPostgresMailbox(url: string, n: number, log: (line: string) => void): Promise<{ buildMs: number }> {
  const t0 = performance.now();
  const store = await openPostgresStore(url, { poolSize: 2 });
  let user: Awaited<ReturnType<typeof benchUser>>;
  try {
    user = await benchUser(store);
  } finally {
    await store.close();
  }
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    const { userId, inboxId } = user;
    const all = [...benchMessages(n, user.modseq)];
    const chunk = 5_000;
    await client.query('BEGIN');
    for (let start = 0; start < all.length; start += chunk) {
      const ms = all.slice(start, start + chunk);
      const col = <K extends keyof BenchMessage>(k: K) => ms.map((m) => m[k]);
      await client.query(
        `INSERT INTO items (user_id, folder_id, type, to_json, created_at, id, received_at, modseq, placed_modseq, change_key, is_read, is_flagged,
           subject, from_json, preview, body_size, conversation_id, internet_message_id, sent_at)
         SELECT $1, $2, 'email', $3::jsonb, $4, u.id, u.received_at, u.modseq, u.modseq, u.modseq::text, u.is_read, u.is_flagged,
           u.subject, u.from_json::jsonb, u.preview, u.body_size, u.conversation_id, u.internet_message_id, u.sent_at
         FROM unnest($5::text[], $6::bigint[], $7::bigint[], $8::boolean[], $9::boolean[], $10::text[], $11::text[], $12::text[], $13::bigint[],
           $14::text[], $15::text[], $16::bigint[]) AS u(id, received_at, modseq, is_read, is_flagged, subject, from_json, preview, body_size,
           conversation_id, internet_message_id, sent_at)`,
        [userId, inboxId, BENCH_TO_JSON, BENCH_NOW, col('id'), col('receivedAt'), col('modseq'), col('isRead'), col('isFlagged'), col('subject'),
          col('fromJson'), col('preview'), col('bodySize'), col('conversationId'), col('internetMessageId'), col('sentAt')],
      );
      await client.query(
        `INSERT INTO changes (user_id, modseq, at, object_type, object_id, op, folder_id, received_at)
         SELECT $1, u.modseq, $2, 'item', u.id, 'created', $3, u.received_at FROM unnest($4::bigint[], $5::text[], $6::bigint[]) AS u(modseq, id, received_at)`,
        [userId, BENCH_NOW, inboxId, col('modseq'), col('id'), col('receivedAt')],
      );
    }
    const last = all.at(-1)?.modseq ?? user.modseq;
    const unread = all.filter((m) => !m.isRead).length;
    await client.query('UPDATE mailboxes SET highest_modseq = $1 WHERE user_id = $2', [last, userId]);
    await client.query('UPDATE folders SET total_count = $1, unread_count = $2, modseq = $3, content_modseq = $3 WHERE user_id = $4 AND id = $5', [n, unread, last, userId, inboxId]);
    await client.query('COMMIT');
    await client.query('VACUUM (ANALYZE)');
  } finally {
    await client.end();
  }
  const buildMs = performance.now() - t0;
  log(`  PostgreSQL mailbox of ${n.toLocaleString('en')} items built in ${(buildMs / 1000).toFixed(1)} s`);
  return { buildMs };
}
