/**
 * What a resync that keeps the app's cache saves (`npm run bench:resync`; issue 19), on the real server over real
 * HTTPS and a real SQLite file: an inbox of 2,000 messages, a device holding the window extended to 1,000 (loadMore),
 * then 20 changes (8 new messages over LMTP, 8 flags, 4 deletes to Deleted Items), and the device starting over in two ways:
 *   (a) full resync: drop the folder, initial sync with loadMore, pages until the 1,000-item window is complete;
 *   (b) cache-keeping resync: POST /v1/folders/{id}/items/resync with the 1,000 ids and change keys it holds.
 * Both answer the same window (checked), both read only (so rounds repeat on the same state). Measured: the bytes
 * of HTTP on the wire (request and response lines, headers and bodies, the answers gzipped as the app accepts
 * them; TLS framing not counted) and the wall time of the whole exchange, medians of ROUNDS rounds, as a table.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import zlib from 'node:zlib';
import nodemailer from 'nodemailer';
import { signIn } from './lib/client';
import { expectStatus, json, send, type Exchange, type Recorded, type Target } from './lib/http';
import { BENCH_USER, benchUser } from './lib/mailbox';
import { openSqliteStore } from '../server/store/sqlite';
import type { NewItem } from '../server/store/types';
import { startPigeon } from './lib/pigeon';
import { median } from './lib/stats';

const ITEMS = 2000;
const ROUNDS = Number(process.env.BENCH_RESYNC_ROUNDS ?? 7);
/** As an app asks for its pages: the most changes a page may carry. */
const MAX_CHANGES = 512;

interface View {
  id: string;
  changeKey: string;
}
interface Page {
  token: string;
  moreAvailable: boolean;
  created: View[];
  updated: View[];
  removed: Array<{ id: string; reason: string }>;
}
interface ResyncAnswer extends Page {
  unchanged: number;
}

/** A request whose body is bytes (a gzipped one), which lib/http's `send` takes as it takes text. */
type BodyExchange = Omit<Exchange, 'body'> & { body?: string | Buffer };

/** One exchange's bytes on the wire: request line, headers and body; status line, headers and body as sent. */
function wireBytes(x: BodyExchange, r: Recorded): { up: number; down: number } {
  const reqHead = `${x.method} ${x.path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: keep-alive\r\n${Object.entries(x.headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
  const up = Buffer.byteLength(reqHead) + (x.body === undefined ? 0 : Buffer.byteLength(x.body) + `content-length: ${Buffer.byteLength(x.body)}\r\n`.length);
  const resHead = `HTTP/1.1 ${r.status} OK\r\n${r.headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
  return { up, down: Buffer.byteLength(resHead) + r.body.length };
}

interface Measured {
  up: number;
  down: number;
  ms: number;
  requests: number;
  /** What the device holds afterwards: id → change key. */
  held: Map<string, string>;
}

async function exchange(target: Target, x: BodyExchange, m: Measured): Promise<Recorded> {
  const r = await expectStatus(target, x as Exchange, 200);
  const w = wireBytes(x, r);
  m.up += w.up;
  m.down += w.down;
  m.requests++;
  return r;
}

/** (a) Drop everything, sync from no token with loadMore, page until the window is complete. */
async function fullResync(target: Target, headers: Record<string, string>, syncPath: string): Promise<Measured> {
  const m: Measured = { up: 0, down: 0, ms: 0, requests: 0, held: new Map() };
  const t0 = performance.now();
  let token: string | undefined;
  for (;;) {
    const q = new URLSearchParams({ maxChanges: String(MAX_CHANGES) });
    if (token) q.set('token', token);
    else q.set('loadMore', '1');
    const page = json<Page>(await exchange(target, { method: 'GET', path: `${syncPath}?${q}`, headers }, m));
    for (const r of page.removed) m.held.delete(r.id);
    for (const c of [...page.created, ...page.updated]) m.held.set(c.id, c.changeKey);
    token = page.token;
    if (!page.moreAvailable) break;
  }
  m.ms = performance.now() - t0;
  return m;
}

/** (b) Send what the device holds (gzipped when `gzip`: body-parser inflates it); apply the difference. */
async function cacheKeepingResync(target: Target, headers: Record<string, string>, resyncPath: string, cache: Map<string, string>, gzip = false): Promise<Measured> {
  const m: Measured = { up: 0, down: 0, ms: 0, requests: 0, held: new Map(cache) };
  const t0 = performance.now();
  const text = JSON.stringify({ held: [...cache].map(([id, changeKey]) => ({ id, changeKey })), loadMore: true });
  const body = gzip ? zlib.gzipSync(text) : text;
  const sent = { ...headers, 'content-type': 'application/json', ...(gzip ? { 'content-encoding': 'gzip' } : {}) };
  const r = await exchange(target, { method: 'POST', path: resyncPath, headers: sent, body }, m);
  const answer = json<ResyncAnswer>(r);
  for (const x of answer.removed) m.held.delete(x.id);
  for (const c of [...answer.created, ...answer.updated]) m.held.set(c.id, c.changeKey);
  m.ms = performance.now() - t0;
  return m;
}

const kb = (b: number) => `${(b / 1024).toFixed(1)} KiB`;

/** Mulberry32: the same "random" mail on every run. */
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

const FIRST = 'Ada Grace Alan Edsger Barbara Donald Frances Ken Margaret Dennis John Radia Leslie Tim Sophie Hedy Katherine Annie Niklaus Bjarne Guido Linus Anders Yukihiro'.split(' ');
const LAST = 'Lovelace Hopper Turing Dijkstra Liskov Knuth Allen Thompson Hamilton Ritchie Backus Perlman Lamport Berners-Lee Wilson Lamarr Johnson Easley Wirth Stroustrup Rossum Torvalds Hejlsberg Matsumoto'.split(' ');
const DOMAINS = 'example.org example.com example.net partner.example vendor.example'.split(' ');
const WORDS = (
  'the of and to in is for on that with as at by from this we be are you it your our will have can not all please ' +
  'quarterly report meeting notes invoice travel plans review draft release schedule budget proposal lunch follow-up ' +
  'question update agenda minutes contract renewal customer feedback roadmap hiring interview offsite workshop training ' +
  'deadline approval sign-off estimate forecast revenue pipeline launch campaign design mockup prototype feature request ' +
  'bug fix deploy outage incident postmortem security audit compliance policy vacation reminder invitation calendar ' +
  'thanks regards attached summary next steps action items decision options tomorrow monday friday morning afternoon ' +
  'call slides numbers figures team project client partner vendor shipment delivery order payment receipt expense'
).split(' ');

/**
 * An inbox of `n` messages with the variety of real mail: random ids (as the store makes them), senders, recipients
 * and previews drawn from a vocabulary. Not the suite's cached bench mailbox: its sequential ids and one repeated
 * preview compress about 18×, which would flatter both the full download and the held list.
 */
async function buildInbox(dir: string, n: number): Promise<void> {
  const store = openSqliteStore(path.join(dir, 'pigeon.db'));
  try {
    const { userId, inboxId } = await benchUser(store);
    const random = prng(n);
    const pick = <T>(xs: T[]) => xs[Math.floor(random() * xs.length)]!;
    const person = () => {
      const [first, last] = [pick(FIRST), pick(LAST)];
      return { name: `${first} ${last}`, address: `${first.toLowerCase()}.${last.toLowerCase()}@${pick(DOMAINS)}` };
    };
    const words = (k: number) => Array.from({ length: k }, () => pick(WORDS)).join(' ');
    const newest = Date.UTC(2026, 0, 1);
    for (let i = 0; i < n; i++) {
      const receivedAt = newest - (n - 1 - i) * 60_000;
      const text = `${words(20 + Math.floor(random() * 60))}.`;
      const item: NewItem = {
        userId, folderId: inboxId, type: 'email', receivedAt, sentAt: receivedAt - 30_000,
        subject: `${words(2 + Math.floor(random() * 5))}`, from: person(),
        to: [{ name: 'Bench User', address: BENCH_USER.email }, ...Array.from({ length: Math.floor(random() * 3) }, person)],
        cc: random() < 0.3 ? [person()] : [], preview: text.slice(0, 255), bodyText: text,
        isRead: random() < 0.7, isFlagged: random() < 0.05, importance: random() < 0.05 ? 'high' : 'normal',
        conversationId: `conv-${Math.floor(i / 3)}`, internetMessageId: `<${i}.${Math.floor(random() * 1e9)}@${pick(DOMAINS)}>`,
      };
      await store.items.create(item, receivedAt);
    }
  } finally {
    await store.close();
  }
}

async function main() {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-bench-resync-'));
  let server: Awaited<ReturnType<typeof startPigeon>> | undefined;
  try {
    await buildInbox(dataDir, ITEMS);
    // No trim of the extended window while the bench runs (the suite's own setting trims it after 1 s).
    const pigeon = await startPigeon(dataDir, { env: { PIGEON_WINDOW_TRIM_AFTER: '24h' } });
    server = pigeon;
    const s = await signIn(pigeon, BENCH_USER, 'bench-resync-device-0001');
    const headers = { ...s.headers, 'accept-encoding': 'gzip' };
    const resyncPath = `/v1/folders/${s.inboxId}/items/resync`;
    const probe = await send(pigeon, { method: 'POST', path: resyncPath, headers: { ...headers, 'content-type': 'application/json' }, body: '{"held":[]}' });
    if (probe.status === 404 || probe.status === 405) throw new Error(`POST ${resyncPath} answered ${probe.status}: the resync route is not registered in this pigeon`);

    // The device holds the extended window.
    const before = await fullResync(pigeon, headers, s.inboxSync);
    if (before.held.size !== 1000) throw new Error(`the device holds ${before.held.size} items, not a 1,000-item window`);

    // 20 changes while the device is away: 8 new messages, 8 flags, 4 deletes (inside the window).
    const ids = [...before.held.keys()];
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: pigeon.lmtpPort!, lmtp: true, ignoreTLS: true, secure: false });
    for (let i = 0; i < 8; i++) {
      const raw = `From: News <news@example.org>\r\nTo: ${BENCH_USER.email}\r\nSubject: while away ${i}\r\nMessage-ID: <away-${i}-${Date.now()}@example.org>\r\nDate: ${new Date().toUTCString()}\r\n\r\nNew while the device was away.\r\n`;
      const info = await transport.sendMail({ envelope: { from: 'news@example.org', to: [BENCH_USER.email] }, raw });
      if (info.accepted.length !== 1) throw new Error('LMTP delivery refused');
    }
    transport.close();
    for (const at of [3, 40, 120, 250, 400, 600, 800, 990]) {
      await expectStatus(pigeon, { method: 'PATCH', path: `/v1/items/${ids[at]}`, headers: { ...headers, 'content-type': 'application/json' }, body: '{"isFlagged":true}' }, 200);
    }
    for (const at of [10, 300, 700, 999]) await expectStatus(pigeon, { method: 'DELETE', path: `/v1/items/${ids[at]}`, headers }, [200, 204]);

    // Warm-up, and the check that both ways end at the same window.
    const full0 = await fullResync(pigeon, headers, s.inboxSync);
    const kept0 = await cacheKeepingResync(pigeon, headers, resyncPath, before.held);
    const same = full0.held.size === kept0.held.size && [...full0.held].every(([id, key]) => kept0.held.get(id) === key);
    if (!same) throw new Error('the cache-keeping resync did not end at the window a full resync ends at');
    const answer = json<ResyncAnswer>(await expectStatus(pigeon, { method: 'POST', path: resyncPath, headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ held: [...before.held].map(([id, changeKey]) => ({ id, changeKey })), loadMore: true }) }, 200));
    const reasons = answer.removed.reduce<Record<string, number>>((acc, r) => ((acc[r.reason] = (acc[r.reason] ?? 0) + 1), acc), {});

    // As an app asks (answers gzipped), and without compression at all (what the JSON itself weighs).
    const plain = { ...s.headers, 'accept-encoding': 'identity' };
    const variants: Array<[string, () => Promise<Measured>]> = [
      ['(a) full: initial sync + loadMore pages', () => fullResync(pigeon, headers, s.inboxSync)],
      ['(b) keeping the cache: ids + change keys', () => cacheKeepingResync(pigeon, headers, resyncPath, before.held)],
      ['(b) same, the held list sent gzipped', () => cacheKeepingResync(pigeon, headers, resyncPath, before.held, true)],
      ['(a) full, nothing compressed', () => fullResync(pigeon, plain, s.inboxSync)],
      ['(b) keeping the cache, nothing compressed', () => cacheKeepingResync(pigeon, plain, resyncPath, before.held)],
    ];
    const results = variants.map(() => [] as Measured[]);
    for (let i = 0; i < ROUNDS; i++) for (const [v, [, measure]] of variants.entries()) results[v]!.push(await measure());
    const row = (label: string, xs: Measured[]) => {
      const up = median(xs.map((x) => x.up));
      const down = median(xs.map((x) => x.down));
      return `| ${label} | ${xs[0]!.requests} | ${kb(up)} | ${kb(down)} | ${kb(up + down)} | ${median(xs.map((x) => x.ms)).toFixed(1)} ms |`;
    };
    console.log(`\n${ITEMS.toLocaleString('en')}-item inbox, 1,000-item window, 20 changes (8 new, 8 flagged, 4 deleted to Deleted Items); medians of ${ROUNDS} rounds, HTTPS, SQLite`);
    console.log(
      `cache-keeping answer: ${answer.created.length} created, ${answer.updated.length} updated, ` +
        `${answer.removed.length} removed (${Object.entries(reasons).map(([k, v]) => `${v} ${k}`).join(', ')}), ${answer.unchanged} unchanged\n`,
    );
    console.log('| resync | requests | sent | received | on the wire | time |');
    console.log('|---|---|---|---|---|---|');
    for (const [v, [label]] of variants.entries()) console.log(row(label, results[v]!));
  } finally {
    await server?.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
