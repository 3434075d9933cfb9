/**
 * Scenario 7: push. The server's RSS with 5,000 idle event streams (2,500 users × 2 devices), and delivery → event
 * latency: messages delivered over LMTP to 100 of those users at 50 messages/s, timed from the start of the LMTP
 * transaction to the `changed` event arriving on the user's stream. The latency includes the production coalescing
 * window, because that is what an app sees.
 *
 * The ceiling holds the same number of streams open with Pigeon's exact response head, and writes Pigeon's exact
 * event bytes to a user's stream the moment its LMTP sink has read a message for that user.
 *
 * The world (users, devices, tokens) is made in the store before start-up; access tokens are minted with the
 * server's own key, so no 2,500 password grants are needed.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import nodemailer from 'nodemailer';
import { openSqliteStore } from '../../server/store/sqlite';
import type { Store } from '../../server/store/types';
import { loadConfig } from '../../server/config';
import { loadKeys } from '../../server/auth/keys';
import { createAccessTokens } from '../../server/auth/accessTokens';
import { systemClock } from '../../server/clock';
import { startCeiling } from '../lib/ceiling';
import type { BenchContext, Figure } from '../lib/figure';
import type { Recorded, Target } from '../lib/http';
import { rssMiB, startPigeon, type Pigeon } from '../lib/pigeon';
import { latencySummary, roundSummary } from '../lib/stats';
import { message } from './ingest';

const ISSUER = 'https://pigeon-bench.invalid';
const CHANGERS = 100;
const RATE = 50;
const STORE_RATE = 10;
const DESCRIPTION = { friendlyName: null, deviceType: null, deviceModel: null, deviceOS: null, clientType: null, clientVersion: null, userAgent: null, capabilities: [] };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface BenchUser {
  key: string; // u<i>: the local part of the address, and the stream key the ceiling routes by
  token: string;
  devices: [string, string];
}

/**
 * The users, their devices and live sign-ins, made in `store` (closed afterwards); their access tokens are signed
 * with the key files of `dataDir` (made there when missing: a server on PostgreSQL is pointed at them, KEY_FILES).
 */
async function world(store: Store, dataDir: string, users: number): Promise<BenchUser[]> {
  const now = Date.now();
  const seeded = await store.run(function* (tx) {
    const made: Array<{ id: string; tenantId: string; sv: number; sid: string; key: string; devices: [string, string] }> = [];
    const tenant = yield* tx.tenants.create('Bench', now);
    for (let i = 0; i < users; i++) {
      const user = yield* tx.users.create({ tenantId: tenant.id, username: `u${i}`, email: `u${i}@bench.example`, displayName: `U${i}`, role: 'user', passwordHash: null }, now);
      yield* tx.mailboxes.create(user.id, now);
      const devices: string[] = [];
      for (const d of [0, 1]) devices.push((yield* tx.devices.create(user.id, `bench-u${i}-d${d}-0123456789`, DESCRIPTION, now)).deviceId);
      // A live sign-in for the token to belong to: the API refuses access tokens whose sign-in has ended.
      const sid = crypto.randomUUID();
      yield* tx.refreshTokens.insert({
        id: crypto.randomUUID(), familyId: sid, userId: user.id, deviceId: null, clientId: 'pigeon-app', scope: 'mail',
        tokenHash: crypto.randomBytes(32), createdAt: now, expiresAt: now + 86_400_000,
      });
      made.push({ id: user.id, tenantId: tenant.id, sv: user.sessionVersion, sid, key: `u${i}`, devices: devices as [string, string] });
    }
    return made;
  });
  await store.close();
  const keys = await loadKeys(loadConfig({ PIGEON_DATA_DIR: dataDir }));
  const tokens = createAccessTokens({ keys, clock: systemClock, issuer: ISSUER, audience: 'pigeon-api', ttlSeconds: 7200 });
  return Promise.all(
    seeded.map(async (u) => ({
      key: u.key,
      devices: u.devices,
      token: await tokens.issue({ sub: u.id, tid: u.tenantId, scope: 'mail', sv: u.sv, sid: u.sid, role: 'user' }),
    })),
  );
}

/** The key files `world` signs with, for a server that would otherwise keep its keys in its database. */
const keyFiles = (dataDir: string) => ({
  PIGEON_SIGNING_KEY_FILE: path.join(dataDir, 'keys', 'jwt-signing-key.pem'),
  PIGEON_SECRET_FILE: path.join(dataDir, 'keys', 'server-secret'),
});

interface Stream {
  key: string;
  onEvent?: (at: number, chunk: string) => void;
  head?: Recorded;
  close(): void;
}

function openStream(target: Target, u: BenchUser, device: 0 | 1): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const s: Stream = { key: u.key, close: () => req.destroy() };
    const req = https.get(
      {
        host: '127.0.0.1', port: target.port, path: '/v1/events', ca: target.cert, servername: 'localhost', agent: false,
        headers: { authorization: `Bearer ${u.token}`, 'x-device-id': u.devices[device], 'x-bench-stream': u.key },
      },
      (res) => {
        if (res.statusCode !== 200) return reject(new Error(`event stream: ${res.statusCode}`));
        res.setEncoding('utf8');
        let first = true;
        res.on('data', (chunk: string) => {
          if (first) {
            // The response head and first bytes, for the ceiling to send exactly the same.
            const headers: Array<[string, string]> = [];
            for (let i = 0; i < res.rawHeaders.length; i += 2) {
              if (!['date', 'connection', 'keep-alive', 'transfer-encoding'].includes(res.rawHeaders[i]!.toLowerCase())) headers.push([res.rawHeaders[i]!, res.rawHeaders[i + 1]!]);
            }
            s.head = { status: 200, headers, body: Buffer.from(chunk), ms: 0 };
            first = false;
            resolve(s);
          }
          if (s.onEvent && chunk.includes('event: changed')) s.onEvent(performance.now(), chunk);
        });
      },
    );
    req.once('error', reject);
  });
}

async function openAll(target: Target, users: BenchUser[]): Promise<Stream[]> {
  const want: Array<[BenchUser, 0 | 1]> = [...users.map((u) => [u, 0] as [BenchUser, 0]), ...users.map((u) => [u, 1] as [BenchUser, 1])];
  const streams: Stream[] = [];
  for (let i = 0; i < want.length; i += 50) streams.push(...(await Promise.all(want.slice(i, i + 50).map(([u, d]) => openStream(target, u, d)))));
  return streams;
}

/** Delivers to the changers at RATE per second for `seconds`; each delivery's time until its user's event. */
async function latencies(lmtpPort: number, streams: Stream[], seconds: number, rate = RATE): Promise<{ ms: number[]; missed: number; failed: number; event?: string }> {
  const ms: number[] = [];
  const waiting = new Map<string, number[]>();
  let event: string | undefined;
  for (const s of streams.slice(0, CHANGERS)) {
    s.onEvent = (at, chunk) => {
      event ??= chunk;
      for (const sent of waiting.get(s.key) ?? []) ms.push(at - sent);
      waiting.set(s.key, []);
    };
  }
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: lmtpPort, lmtp: true, pool: true, maxConnections: 4, maxMessages: Infinity, ignoreTLS: true, secure: false });
  const sends: Array<Promise<boolean>> = [];
  const start = performance.now();
  for (let k = 0; k < rate * seconds; k++) {
    const wait = start + (k * 1000) / rate - performance.now();
    if (wait > 0) await sleep(wait);
    const key = streams[k % CHANGERS]!.key;
    const to = `${key}@bench.example`;
    waiting.set(key, [...(waiting.get(key) ?? []), performance.now()]);
    sends.push(transport.sendMail({ envelope: { from: 'sender@example.org', to: [to] }, raw: message(to, k) }).then((i) => i.accepted.length === 1, () => false));
  }
  const failed = (await Promise.all(sends)).filter((ok) => !ok).length;
  await sleep(2_500); // the last coalescing windows close
  transport.close();
  for (const s of streams) s.onEvent = undefined;
  return { ms, missed: [...waiting.values()].reduce((a, w) => a + w.length, 0), failed, event };
}

export async function pushFigures(ctx: BenchContext): Promise<Figure[]> {
  const users = ctx.quick ? 500 : 2500;
  const seconds = ctx.quick ? 8 : 20;
  const rss: Figure = { id: 'push.rss', scenario: 7, label: `RSS with ${(users * 2).toLocaleString('en')} idle event streams`, unit: 'MiB', better: 'lower' };
  const latency: Figure = { id: 'push.latency', scenario: 7, label: 'delivery → event latency (LMTP, 50 msg/s)', unit: 'ms', better: 'lower' };
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-bench-push-'));
  try {
    ctx.log(`  push world: ${users.toLocaleString('en')} users × 2 devices ...`);
    const people = await world(openSqliteStore(path.join(dataDir, 'pigeon.db')), dataDir, users);
    const pigeon = await startPigeon(dataDir, { env: { PIGEON_ISSUER: ISSUER }, cpuProfDir: ctx.cpuProfDir });
    let streams: Stream[] = [];
    let pigeonEvent: string | undefined;
    let pigeonLatency: Awaited<ReturnType<typeof latencies>> | undefined;
    let pigeonRss: { idle: number; open: number };
    try {
      await sleep(2_000);
      const idle = rssMiB(pigeon.proc.pid!);
      const t0 = performance.now();
      streams = await openAll(pigeon, people);
      ctx.log(`  ${streams.length} streams open on pigeon in ${Math.round(performance.now() - t0)} ms`);
      await sleep(3_000);
      pigeonRss = { idle, open: rssMiB(pigeon.proc.pid!) };
      if (pigeon.lmtpPort) {
        pigeonLatency = await latencies(pigeon.lmtpPort, streams, seconds);
        pigeonEvent = pigeonLatency.event;
      }
    } finally {
      await pigeon.stop(); // its drain ends every stream
    }

    const ceiling = await startCeiling(pigeon);
    try {
      await ceiling.replay({ method: 'GET', path: '/v1/events', headers: {} }, streams[0]!.head!, { stream: true });
      if (pigeonEvent) await ceiling.setEvent(pigeonEvent);
      await sleep(1_000);
      const idle = rssMiB(ceiling.proc.pid!);
      const open = await openAll(ceiling, people);
      await sleep(3_000);
      const ceilingRss = { idle, open: rssMiB(ceiling.proc.pid!) };
      rss.pigeon = roundSummary([pigeonRss.open]);
      rss.ceiling = roundSummary([ceilingRss.open]);
      rss.ratio = pigeonRss.open / ceilingRss.open;
      const perStream = (r: { idle: number; open: number }) => Math.round(((r.open - r.idle) * 1024) / (users * 2));
      rss.notes = { pigeonIdleMiB: Math.round(pigeonRss.idle), ceilingIdleMiB: Math.round(ceilingRss.idle), pigeonKiBPerStream: perStream(pigeonRss), ceilingKiBPerStream: perStream(ceilingRss) };

      if (!pigeonLatency) {
        latency.skipped = 'not available: the server logged no LMTP port';
      } else {
        if (pigeonLatency.failed || pigeonLatency.missed) throw new Error(`push: ${pigeonLatency.failed} deliveries failed, ${pigeonLatency.missed} got no event`);
        const c = await latencies(ceiling.lmtpPort, open, seconds);
        if (c.failed || c.missed) throw new Error(`push ceiling: ${c.failed} deliveries failed, ${c.missed} got no event`);
        latency.pigeon = latencySummary([pigeonLatency.ms]);
        latency.ceiling = latencySummary([c.ms]);
        latency.ratio = latency.pigeon.median / latency.ceiling.median;
        latency.notes = { deliveries: RATE * seconds, coalescingWindowMs: 1000 };
      }
    } finally {
      await ceiling.stop();
    }
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
  return [rss, latency];
}

/**
 * `--store`: delivery → event latency on one backend, without a ceiling. 100 users with two streams each, deliveries
 * over LMTP as above but at 10 msg/s (STORE_RATE): what is measured is the way of a change to the streams, not how
 * many deliveries a loaded machine takes before they queue (ingest measures that); each user's deliveries are 10 s
 * apart, beyond the 1 s coalescing window, so every delivery is its own event. On PostgreSQL twice: streams on the node that stores the message, and — what several
 * nodes add — streams on node B while node A, a second server process on the same database, takes the deliveries:
 * B hears A's commit through the commit feed (NOTIFY). SQLite has no second node (one file, one machine: its worker
 * processes share commits through the primary), so it has the one-node figure only.
 */
export async function storePushFigures(
  ctx: Pick<BenchContext, 'quick' | 'log'>,
  side: { store: string; name: string; open: (dataDir: string) => Promise<Store>; start: (dataDir: string, env: Record<string, string>) => Promise<Pigeon>; nodes: 1 | 2 },
): Promise<Figure[]> {
  const seconds = ctx.quick ? 12 : 30;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-bench-push-'));
  const started: Pigeon[] = [];
  const figures: Figure[] = [];
  const measure = async (id: string, label: string, deliverTo: Pigeon, streamsOn: Pigeon) => {
    const figure: Figure = { id, scenario: 7, label, unit: 'ms', better: 'lower' };
    ctx.log(`  ${label} ...`);
    const streams = await openAll(streamsOn, people);
    try {
      await sleep(1_000);
      const r = await latencies(deliverTo.lmtpPort!, streams, seconds, STORE_RATE);
      if (r.failed || r.missed) throw new Error(`push (${label}): ${r.failed} deliveries failed, ${r.missed} got no event`);
      figure.pigeon = latencySummary([r.ms]);
      figure.notes = { deliveries: STORE_RATE * seconds, messagesPerSecond: STORE_RATE, events: r.ms.length, coalescingWindowMs: 1000 };
    } finally {
      for (const s of streams) s.close();
    }
    figures.push(figure);
  };
  let people: BenchUser[] = [];
  try {
    people = await world(await side.open(dataDir), dataDir, CHANGERS);
    const env = { PIGEON_ISSUER: ISSUER, ...keyFiles(dataDir) };
    const a = await side.start(dataDir, env);
    started.push(a);
    if (!a.lmtpPort) throw new Error('push: the server logged no LMTP port');
    await measure(`push.latency.${side.store}`, `delivery → event latency, one node (LMTP, ${STORE_RATE} msg/s) — ${side.name}`, a, a);
    if (side.nodes === 2) {
      const b = await side.start(dataDir, env);
      started.push(b);
      await measure(`push.latency.twoNodes.${side.store}`, `delivery on node A → event on node B (${STORE_RATE} msg/s) — ${side.name}`, a, b);
    }
  } finally {
    for (const p of started) await p.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
  return figures;
}
