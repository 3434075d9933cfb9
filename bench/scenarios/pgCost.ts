/**
 * Where PostgreSQL's share of a request goes (`--store pg|both`): one Pigeon process (PIGEON_WORKERS=1) on the bench
 * database through the counting proxy (lib/pgWire.ts), sent each kind of request a number of times one after
 * another, and per request:
 *   - statements by kind and round trips (BEGIN, the mailbox lock, reads, writes, NOTIFY, COMMIT), and the time
 *     from each round trip's last message to PostgreSQL's ReadyForQuery, summed;
 *   - transactions committed, WAL flushes (fsync: synchronous_commit=on) and WAL bytes, from pg_stat_database and
 *     pg_stat_wal (server-wide; commits in other databases meanwhile are reported beside them);
 *   - CPU of the Pigeon process and of the database's backends (/proc).
 * The proxy adds its own hop to every round trip, measured too (`SELECT $1` direct and through it), so its share
 * can be taken out; the timed figures of the run come from direct connections.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import nodemailer from 'nodemailer';
import { Client } from 'pg';
import { openPostgresStore } from '../../server/store/postgres';
import { FORM, signIn, syncPath, syncToEnd, type SignedIn } from '../lib/client';
import { expectStatus, json, send, type Exchange } from '../lib/http';
import { BENCH_USER } from '../lib/mailbox';
import { cpuMs, startPigeon, type Pigeon } from '../lib/pigeon';
import { countsSince, startWireProxy, type StatementKind, type WireCounts } from '../lib/pgWire';
import { pgDelta, STATS_SETTLE_MS, type BenchDatabase, type PgMeter } from '../lib/postgres';
import { median } from '../lib/stats';
import { message } from './ingest';
import { changeHundred } from './sync';

export interface RequestCost {
  label: string;
  requests: number;
  /** Mean time per request as the client saw it (through the proxy). */
  clientMs: number;
  roundTrips: number;
  /** Time per request in round trips to PostgreSQL, as the proxy saw them. */
  pgMs: number;
  byKind: Partial<Record<StatementKind, { count: number; ms: number }>>;
  /** The statements of one request, most time first (per request). */
  statements: Array<{ text: string; count: number; ms: number }>;
  commits: number;
  walSyncs: number;
  walBytes: number;
  /** Commits in the server's other databases over the same stretch (when not 0, the WAL figures include others'). */
  otherCommits: number;
  nodeCpuMs: number;
  pgCpuMs: number;
}

export interface PgCost {
  /** Median `SELECT $1` round trip on one connection, direct and through the proxy, ms. */
  roundTripMs: { direct: number; proxied: number };
  /** Median time from sending `SELECT pg_notify(…)` (autocommit) to another connection's LISTEN receiving it, ms. */
  notifyMs: number;
  /** What the server does with no requests, per STATS_SETTLE_MS (its timers; the baseline of every row). */
  idle: RequestCost;
  costs: RequestCost[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The median `SELECT $1` round trip on one connection (a prepared statement, as the store sends them), ms. */
async function roundTrip(url: string, n: number): Promise<number> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    const q = { name: 'bench_one', text: 'SELECT $1::int AS one', values: [1] };
    for (let i = 0; i < 200; i++) await c.query(q);
    const ms: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await c.query(q);
      ms.push(performance.now() - t0);
    }
    return median(ms);
  } finally {
    await c.end();
  }
}

/** The commit feed's hop between two nodes: NOTIFY on one connection, the notification arriving on another. */
async function notifyHop(url: string, n: number): Promise<number> {
  const listener = new Client({ connectionString: url });
  const sender = new Client({ connectionString: url });
  await listener.connect();
  await sender.connect();
  try {
    await listener.query('LISTEN pigeon_bench_hop');
    const ms: number[] = [];
    for (let i = 0; i < n; i++) {
      const heard = new Promise((resolve) => listener.once('notification', resolve));
      const t0 = performance.now();
      await sender.query({ name: 'bench_notify', text: `SELECT pg_notify('pigeon_bench_hop', $1)`, values: [String(i)] });
      await heard;
      ms.push(performance.now() - t0);
    }
    return median(ms);
  } finally {
    await listener.end();
    await sender.end();
  }
}

export async function pgCost(log: (line: string) => void, db: BenchDatabase, meter: PgMeter, quick: boolean): Promise<PgCost> {
  const proxy = await startWireProxy(db.url);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-bench-pgcost-'));
  let pigeon: Pigeon | undefined;
  try {
    const roundTripMs = { direct: await roundTrip(db.url, 2_000), proxied: await roundTrip(proxy.url, 2_000) };
    const notifyMs = await notifyHop(db.url, 500);
    log(`  SELECT $1 round trip: ${roundTripMs.direct.toFixed(3)} ms direct, ${roundTripMs.proxied.toFixed(3)} ms through the proxy; NOTIFY → LISTEN ${notifyMs.toFixed(3)} ms`);
    pigeon = await startPigeon(dataDir, { databaseUrl: proxy.url, env: { PIGEON_WORKERS: '1' } });
    const server = pigeon;
    const app = await signIn(server, BENCH_USER, 'bench-app-device-00002');
    let { token } = await syncToEnd(server, app);

    await sleep(STATS_SETTLE_MS);
    let reading = await meter.read();
    /** Runs `n` requests (`one(i)` each) and attributes what the proxy and PostgreSQL saw to them. */
    const stretch = async (label: string, n: number, one: (i: number) => Promise<unknown>, idle = false): Promise<RequestCost> => {
      log(`  ${label}: ${n} requests ...`);
      const counts0 = proxy.counts();
      const cpu0 = cpuMs(server.pid!);
      const t0 = performance.now();
      for (let i = 0; i < n; i++) await one(i);
      const clientMs = (performance.now() - t0) / Math.max(1, n);
      const counts = countsSince(counts0, proxy.counts());
      const nodeCpu = cpuMs(server.pid!) - cpu0;
      // The backends' CPU now (current), the commit and WAL counters once the backends have reported them.
      const pgCpu = pgDelta(reading, await meter.read()).backendCpuMs;
      await sleep(STATS_SETTLE_MS);
      const next = await meter.read();
      const d = pgDelta(reading, next);
      reading = next;
      return costOf(label, n, idle ? NaN : clientMs, counts, d, nodeCpu, pgCpu);
    };

    const idle = await stretch(`idle, per ${STATS_SETTLE_MS / 1000} s`, 1, () => sleep(STATS_SETTLE_MS), true);
    const costs: RequestCost[] = [];
    const scale = quick ? 1 : 2;
    const get = (x: Exchange) => expectStatus(server, x, 200);
    costs.push(await stretch('no-change poll', 200 * scale, () => get({ method: 'GET', path: syncPath(app, { token }), headers: app.headers })));
    costs.push(await stretch('GET /v1/session', 200 * scale, () => get({ method: 'GET', path: '/v1/session', headers: app.headers })));
    costs.push(
      await stretch('initial 500-item window', 25 * scale, () =>
        get({ method: 'GET', path: syncPath(app, { maxChanges: 512 }), headers: { ...app.headers, 'accept-encoding': 'gzip' } }),
      ),
    );

    // The incremental sync: 100 changes by another node (not through the proxy), then the same sync replayed.
    const synced = await syncToEnd(server, app);
    await changeHundred(await openPostgresStore(db.url, { poolSize: 2 }), app.inboxId, [...synced.held].sort().reverse());
    await sleep(500); // the commit feed reaches the server
    const incremental: Exchange = { method: 'GET', path: syncPath(app, { token: synced.token, maxChanges: 512 }), headers: app.headers };
    costs.push(await stretch('incremental after 100 changes', 50 * scale, () => get(incremental)));
    token = (await syncToEnd(server, app, synced.token)).token;

    const kept = [...synced.held].sort().reverse()[0]!; // changeHundred changed this one and deleted others
    costs.push(await stretch('PATCH /v1/items/{id} (flag)', 100 * scale, (i) => flag(server, app, kept, i % 2 === 0)));
    costs.push(await stretch('token refresh (rotation)', 50 * scale, refresher(server, app)));

    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: server.lmtpPort!, lmtp: true, pool: true, maxConnections: 1, maxMessages: Infinity, ignoreTLS: true, secure: false });
    try {
      costs.push(
        await stretch('LMTP delivery, 10 KB', 100 * scale, async (i) => {
          const info = await transport.sendMail({ envelope: { from: 'sender@example.org', to: [BENCH_USER.email] }, raw: message(BENCH_USER.email, 1_000_000 + i) });
          if (info.accepted.length !== 1) throw new Error('LMTP delivery refused');
        }),
      );
    } finally {
      transport.close();
    }
    return { roundTripMs, notifyMs, idle, costs };
  } finally {
    await pigeon?.stop();
    await proxy.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

async function flag(server: Pigeon, app: SignedIn, itemId: string, on: boolean): Promise<void> {
  const body = JSON.stringify({ isFlagged: on });
  await expectStatus(server, { method: 'PATCH', path: `/v1/items/${itemId}`, headers: { ...app.headers, 'content-type': 'application/json' }, body }, 200);
}

/** Token refreshes, each presenting the successor the previous one returned. */
function refresher(server: Pigeon, app: SignedIn): () => Promise<void> {
  let current = app.refreshToken;
  return async () => {
    const body = `grant_type=refresh_token&client_id=pigeon-app&refresh_token=${encodeURIComponent(current)}`;
    const r = await send(server, { method: 'POST', path: '/oauth2/token', headers: FORM, body });
    if (r.status !== 200) throw new Error(`token refresh: ${r.status} ${r.body.toString('utf8').slice(0, 200)}`);
    current = json<{ refresh_token: string }>(r).refresh_token;
  };
}

function costOf(label: string, n: number, clientMs: number, c: WireCounts, d: ReturnType<typeof pgDelta>, nodeCpu: number, pgCpu: number): RequestCost {
  const per = (x: number) => x / Math.max(1, n);
  const byKind: RequestCost['byKind'] = {};
  for (const [k, v] of Object.entries(c.byKind)) byKind[k as StatementKind] = { count: per(v.count), ms: per(v.ms) };
  const statements = Object.entries(c.byText)
    .map(([text, v]) => ({ text, count: per(v.count), ms: per(v.ms) }))
    .sort((a, b) => b.ms - a.ms);
  return {
    label,
    requests: n,
    clientMs,
    roundTrips: per(c.roundTrips),
    pgMs: per(c.ms),
    byKind,
    statements,
    commits: per(d.commits),
    walSyncs: per(d.walSyncs),
    walBytes: per(d.walBytes),
    otherCommits: d.otherCommits,
    nodeCpuMs: per(nodeCpu),
    pgCpuMs: per(pgCpu),
  };
}
