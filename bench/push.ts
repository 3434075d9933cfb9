/**
 * Background push latency and cost (`npm run bench:push`; issue 20), on the real server process over real HTTPS and
 * a real SQLite file, with the three gateways as the local stand-ins of tests/helpers/pushGateways.ts (Web Push
 * decrypting every payload, APNs over HTTP/2 checking every provider token, FCM over TLS with its OAuth grant; they
 * answer at once, so what is measured is the server's part):
 *
 * - 1,000 registered channels: 200 users × 5 devices, one channel each, a mix of Web Push, APNs and FCM;
 * - 50 changes a second for 20 s, to the users in a shuffled round-robin (each user changes every 4 s): half are new
 *   mail over LMTP (a "sync now" and a newMail alert per channel), half flag changes over the API (a "sync now");
 * - commit → gateway latency: from the change's timestamp in the store (`changes.at`, the committing unit's clock,
 *   the same machine clock the stand-ins read) to the stand-in having the whole message, per message, p50/p99;
 * - messages per change, and the server's CPU time per message: the server process's CPU time (/proc/<pid>/stat)
 *   over the run, less what the same changes cost for 200 users without channels (measured first, 10 s at the same
 *   rate on the same server), divided by the messages.
 *
 * Prints a table and writes its figures (ids `backgroundPush.*`) into bench/results.json, replacing older ones.
 * Settings: BENCH_PUSH_USERS (200), BENCH_PUSH_DEVICES (5), BENCH_PUSH_RATE (50/s), BENCH_PUSH_SECONDS (20),
 * BENCH_PUSH_BASELINE_SECONDS (10); PIGEON_WORKERS (1 here: commits in the leading process, as with one core).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import nodemailer from 'nodemailer';
import { expectStatus, forget, json, type Target } from './lib/http';
import { prng } from './lib/mailbox';
import { FORM } from './lib/client';
import { cpuMs, startPigeon, type Pigeon } from './lib/pigeon';
import { percentile } from './lib/stats';
import { describeMachine } from './lib/machine';
import type { Figure } from './lib/figure';
import { arrivalClock, startGatewayRig, type GatewayKind, type GatewayRig, type PushArrival } from '../tests/helpers/pushGateways';
import { openSqliteStore } from '../server/store/sqlite';
import { hashPassword } from '../server/identity/passwords';
import { ROOT } from '../tests/helpers/server';

const USERS = Number(process.env.BENCH_PUSH_USERS ?? 200);
const DEVICES = Number(process.env.BENCH_PUSH_DEVICES ?? 5);
const RATE = Number(process.env.BENCH_PUSH_RATE ?? 50);
const SECONDS = Number(process.env.BENCH_PUSH_SECONDS ?? 20);
const BASELINE_SECONDS = Number(process.env.BENCH_PUSH_BASELINE_SECONDS ?? 10);
const WORKERS = process.env.PIGEON_WORKERS ?? '1';
const KINDS: GatewayKind[] = ['webpush', 'apns', 'fcm'];
const DOMAIN = 'push.bench.example';
/** Sign-in is not what is measured: cheap scrypt parameters for the bench users (the hash names its own). */
const CHEAP_SCRYPT = { N: 1024, r: 8, p: 1, keyLength: 32 };

interface BenchUser {
  username: string;
  password: string;
  email: string;
  itemId: string;
  /** Each signed-in device's headers (the first makes the API changes). */
  devices: Array<Record<string, string>>;
  channels: Array<{ kind: GatewayKind; address: string }>;
  flagged: boolean;
}

interface Change {
  user: BenchUser;
  kind: 'lmtp' | 'flag';
  subject?: string;
  startedAt: number;
  ackedAt?: number;
  /** The change's timestamp in the store (filled in after the run). */
  commitAt?: number;
  error?: string;
}

const log = (line: string) => console.log(`[bench:push] ${line}`);

async function pool<T>(items: T[], concurrency: number, fn: (item: T, index: number) => Promise<void>) {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]!, i);
    }
  }));
}

async function seed(dataDir: string, prefix: string, count: number): Promise<BenchUser[]> {
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  try {
    const now = Date.now();
    const tenant = (await store.tenants.list())[0] ?? (await store.tenants.create('Push bench', now));
    const users: BenchUser[] = [];
    for (let i = 0; i < count; i++) {
      const username = `${prefix}${i}`;
      const password = `${prefix}-password-${i}-0001`;
      const email = `${username}@${DOMAIN}`;
      const user = await store.users.create({ tenantId: tenant.id, username, email, displayName: username, role: 'user', passwordHash: await hashPassword(password, CHEAP_SCRYPT) }, now);
      await store.mailboxes.create(user.id, now);
      const inbox = (await store.folders.byKind(user.id, 'inbox'))!;
      const item = await store.items.create({ userId: user.id, folderId: inbox.id, type: 'email', receivedAt: now - 60_000, subject: 'Seeded', from: { name: 'Seed', address: 'seed@example.org' }, preview: 'seeded', isRead: true }, now);
      users.push({ username, password, email, itemId: item.id, devices: [], channels: [], flagged: false });
    }
    return users;
  } finally {
    await store.close();
  }
}

async function signIn(target: Target, u: BenchUser, n: number): Promise<Record<string, string>> {
  const deviceId = `bench-push-${u.username}-${n}-${crypto.randomBytes(3).toString('hex')}`;
  const form = new URLSearchParams({ grant_type: 'password', client_id: 'pigeon-app', username: u.username, password: u.password, device_id: deviceId });
  const token = json<{ access_token: string }>(await expectStatus(target, { method: 'POST', path: '/oauth2/token', headers: FORM, body: form.toString() }, 200));
  const headers = { authorization: `Bearer ${token.access_token}`, 'x-device-id': deviceId };
  await expectStatus(target, { method: 'POST', path: '/v1/devices', headers: { ...headers, 'content-type': 'application/json' }, body: '{"friendlyName":"bench"}' }, [200, 201]);
  return headers;
}


function shuffled<T>(xs: T[], random: () => number): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

function lmtpDeliver(port: number, to: string, subject: string) {
  const raw = [`From: "Bench Sender" <sender@example.org>`, `To: <${to}>`, `Subject: ${subject}`, `Message-ID: <${crypto.randomUUID()}@example.org>`,
    `Date: ${new Date().toUTCString()}`, 'MIME-Version: 1.0', 'Content-Type: text/plain; charset=utf-8', '', `A message for the push bench: ${subject}.`, ''].join('\r\n');
  const transport = nodemailer.createTransport({ lmtp: true, host: '127.0.0.1', port, ignoreTLS: true });
  return transport.sendMail({ envelope: { from: 'sender@example.org', to: [to] }, raw }).finally(() => transport.close());
}

/** `seconds` of changes at RATE a second, open loop (a slow answer does not slow the schedule), to `users` in turn. */
async function drive(pigeon: Pigeon, users: BenchUser[], seconds: number, tag: string, seedValue: number): Promise<Change[]> {
  const order = shuffled(users, prng(seedValue));
  const total = Math.round(seconds * RATE);
  const changes: Change[] = [];
  const inFlight: Array<Promise<void>> = [];
  const t0 = arrivalClock() + 50;
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / RATE;
    const wait = due - arrivalClock();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const user = order[i % order.length]!;
    const round = Math.floor(i / order.length);
    const kind: Change['kind'] = (i + round) % 2 === 0 ? 'lmtp' : 'flag';
    const change: Change = { user, kind, startedAt: arrivalClock() };
    changes.push(change);
    const work = async () => {
      if (kind === 'lmtp') {
        change.subject = `bench ${tag} ${i} ${crypto.randomBytes(3).toString('hex')}`;
        const info = await lmtpDeliver(pigeon.lmtpPort!, user.email, change.subject);
        if (!info.accepted.includes(user.email)) throw new Error(`LMTP refused ${user.email}: ${info.response}`);
      } else {
        user.flagged = !user.flagged;
        await expectStatus(pigeon, { method: 'PATCH', path: `/v1/items/${user.itemId}`, headers: { ...user.devices[0]!, 'content-type': 'application/json' }, body: JSON.stringify({ isFlagged: user.flagged }) }, 200);
      }
      change.ackedAt = arrivalClock();
    };
    inFlight.push(work().catch((err: Error) => void (change.error = err.message)));
  }
  await Promise.all(inFlight);
  return changes;
}

function readDb<T>(dataDir: string, fn: (db: Database.Database) => T): T {
  const db = new Database(path.join(dataDir, 'pigeon.db'), { readonly: true, fileMustExist: true });
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

async function waitDrained(dataDir: string, rig: GatewayRig, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  let quietSince = Date.now();
  let seen = rig.arrivals().length;
  for (;;) {
    const q = readDb(dataDir, (db) => ({
      outbox: (db.prepare('SELECT count(*) AS n FROM push_outbox').get() as { n: number }).n,
      deliveries: (db.prepare('SELECT count(*) AS n FROM push_deliveries').get() as { n: number }).n,
    }));
    const n = rig.arrivals().length;
    if (n !== seen) {
      seen = n;
      quietSince = Date.now();
    }
    if (q.outbox === 0 && q.deliveries === 0 && rig.inFlight() === 0 && Date.now() - quietSince > 500) return;
    if (Date.now() > until) throw new Error(`the push queue did not drain in ${timeoutMs} ms (${JSON.stringify(q)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Each change's timestamp in the store: the earliest `changes.at` of its user within its request's span. */
function commitTimes(dataDir: string, changes: Change[]): void {
  const byUser = readDb(dataDir, (db) => {
    const rows = db.prepare('SELECT u.username AS username, c.at AS at FROM changes c JOIN users u ON u.id = c.user_id WHERE c.at >= ? ORDER BY c.at').all(Math.floor(changes[0]!.startedAt) - 5) as Array<{ username: string; at: number }>;
    const map = new Map<string, number[]>();
    for (const r of rows) map.set(r.username, [...(map.get(r.username) ?? []), r.at]);
    return map;
  });
  for (const c of changes) {
    if (c.ackedAt === undefined) continue;
    const ats = byUser.get(c.user.username) ?? [];
    c.commitAt = ats.find((at) => at >= Math.floor(c.startedAt) - 1 && at <= c.ackedAt! + 1);
  }
}

interface Measured {
  sync: number[];
  /** The sync latencies split by what changed. */
  syncAfter: { lmtp: number[]; flag: number[] };
  newMail: number[];
  missing: { sync: number; newMail: number };
  messages: number;
  byType: Record<string, number>;
  byKind: Record<string, number>;
}

function measure(changes: Change[], arrivals: PushArrival[]): Measured {
  const byChannel = new Map<string, PushArrival[]>();
  for (const a of arrivals) byChannel.set(`${a.kind} ${a.address}`, [...(byChannel.get(`${a.kind} ${a.address}`) ?? []), a]);
  const out: Measured = { sync: [], syncAfter: { lmtp: [], flag: [] }, newMail: [], missing: { sync: 0, newMail: 0 }, messages: arrivals.length, byType: {}, byKind: {} };
  for (const a of arrivals) {
    out.byType[a.type ?? '?'] = (out.byType[a.type ?? '?'] ?? 0) + 1;
    out.byKind[a.kind] = (out.byKind[a.kind] ?? 0) + 1;
  }
  for (const c of changes) {
    if (c.commitAt === undefined) continue;
    for (const ch of c.user.channels) {
      const list = byChannel.get(`${ch.kind} ${ch.address}`) ?? [];
      // Its user's next change is RATE/USERS seconds later: the first sync from its commit on is the one it caused.
      const sync = list.find((a) => a.type === 'sync' && a.at >= c.commitAt! - 1);
      if (sync) {
        out.sync.push(Math.max(0, sync.at - c.commitAt));
        out.syncAfter[c.kind].push(Math.max(0, sync.at - c.commitAt));
      }
      else out.missing.sync++;
      if (c.kind === 'lmtp') {
        const alert = list.find((a) => a.type === 'newMail' && a.alert?.body === c.subject);
        if (alert) out.newMail.push(Math.max(0, alert.at - c.commitAt));
        else out.missing.newMail++;
      }
    }
  }
  return out;
}

const ms = (x: number) => (Number.isFinite(x) ? `${x.toFixed(1)} ms` : 'n/a');

async function main() {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-bench-push-'));
  let pigeon: Pigeon | undefined;
  let rig: GatewayRig | undefined;
  const startedAt = new Date();
  try {
    log(`seeding ${USERS} users with channels and ${USERS} without`);
    const pushUsers = await seed(dataDir, 'push', USERS);
    const plainUsers = await seed(dataDir, 'plain', USERS);
    rig = await startGatewayRig({ dir: fs.mkdtempSync(path.join(dataDir, 'rig-')) });
    pigeon = await startPigeon(dataDir, { env: { ...rig.env, PIGEON_WORKERS: WORKERS } });
    const server = pigeon;

    log(`signing in ${USERS * DEVICES} devices and registering their channels`);
    const first = await signIn(server, pushUsers[0]!, 99);
    const config = json<{ webPush: { applicationServerKey: string } | null; apns: unknown; fcm: unknown }>(await expectStatus(server, { method: 'GET', path: '/v1/push/config', headers: first }, 200));
    if (!config.webPush || !config.apns || !config.fcm) throw new Error(`the server does not deliver through all three gateways: ${JSON.stringify(config)}`);
    const slots = pushUsers.flatMap((u, ui) => Array.from({ length: DEVICES }, (_, d) => ({ u, kind: KINDS[(ui * DEVICES + d) % KINDS.length]!, d })));
    await pool(slots, 8, async ({ u, kind, d }) => {
      const headers = await signIn(server, u, d);
      u.devices[d] = headers;
      const channel = rig!.channel(kind, config.webPush!.applicationServerKey);
      await expectStatus(server, { method: 'POST', path: '/v1/push/channels', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(channel.body) }, 201);
      u.channels.push({ kind, address: channel.address });
    });
    await pool(plainUsers, 8, async (u) => void (u.devices[0] = await signIn(server, u, 0)));
    const channelCount = pushUsers.reduce((n, u) => n + u.channels.length, 0);
    await new Promise((r) => setTimeout(r, 2000));

    // ---- baseline: the same changes to users without channels ----
    log(`baseline: ${RATE} changes/s for ${BASELINE_SECONDS} s to users without channels`);
    const cpuA0 = cpuMs(server.pid!);
    const baseline = await drive(server, plainUsers, BASELINE_SECONDS, 'plain', 1);
    await new Promise((r) => setTimeout(r, 1000));
    const cpuA = cpuMs(server.pid!) - cpuA0;
    const baselineDone = baseline.filter((c) => c.ackedAt !== undefined).length;
    if (rig.arrivals().length !== 0) throw new Error(`${rig.arrivals().length} messages arrived for users without channels`);

    // ---- the run ----
    log(`run: ${RATE} changes/s for ${SECONDS} s over ${channelCount} channels`);
    const loadBefore = os.loadavg();
    const cpuB0 = cpuMs(server.pid!);
    const changes = await drive(server, pushUsers, SECONDS, 'push', 2);
    await waitDrained(dataDir, rig, 120_000);
    const cpuB = cpuMs(server.pid!) - cpuB0;
    const failed = changes.filter((c) => c.error);
    commitTimes(dataDir, changes);
    const arrivals = rig.arrivals();
    const m = measure(changes, arrivals);
    const done = changes.length - failed.length;
    const cpuPerChangeBaseline = cpuA / Math.max(1, baselineDone);
    const pushCpu = cpuB - cpuPerChangeBaseline * done;
    const perMessage = pushCpu / Math.max(1, m.messages);
    const refused = [...rig.webPush.refused, ...rig.apns.refused, ...rig.fcm.refused];

    const writeMs = (kind?: Change['kind']) => changes.filter((c) => c.ackedAt !== undefined && (!kind || c.kind === kind)).map((c) => c.ackedAt! - c.startedAt);
    const p50p99 = (xs: number[]) => `${ms(percentile(xs, 50))} / ${ms(percentile(xs, 99))}`;
    const rows: Array<[string, string]> = [
      ['channels (Web Push / APNs / FCM)', `${channelCount} (${KINDS.map((k) => pushUsers.reduce((n, u) => n + u.channels.filter((c) => c.kind === k).length, 0)).join(' / ')})`],
      ['changes (new mail over LMTP / flag over the API)', `${done} of ${changes.length} (${changes.filter((c) => c.kind === 'lmtp').length} / ${changes.filter((c) => c.kind === 'flag').length}) in ${SECONDS} s`],
      ['write acknowledged (LMTP 250 / API 200), p50 / p99', `${p50p99(writeMs('lmtp'))} / ${p50p99(writeMs('flag'))}`],
      ['commit → gateway, sync, p50 / p99', `${ms(percentile(m.sync, 50))} / ${ms(percentile(m.sync, 99))} (${m.sync.length} messages, ${m.missing.sync} missing)`],
      ['  of which after new mail / after a flag, p50 / p99', `${p50p99(m.syncAfter.lmtp)} / ${p50p99(m.syncAfter.flag)}`],
      ['commit → gateway, newMail, p50 / p99', `${ms(percentile(m.newMail, 50))} / ${ms(percentile(m.newMail, 99))} (${m.newMail.length} messages, ${m.missing.newMail} missing)`],
      ['commit → gateway, all, p50 / p99 / max', `${ms(percentile([...m.sync, ...m.newMail], 50))} / ${ms(percentile([...m.sync, ...m.newMail], 99))} / ${ms(Math.max(...m.sync, ...m.newMail))}`],
      ['messages', `${m.messages} (${Object.entries(m.byType).map(([k, v]) => `${v} ${k}`).join(', ')}; ${Object.entries(m.byKind).map(([k, v]) => `${v} ${k}`).join(', ')})`],
      ['messages per change', (m.messages / Math.max(1, done)).toFixed(2)],
      ['server CPU, run (incl. drain)', `${Math.round(cpuB)} ms (${(cpuB / Math.max(1, done)).toFixed(2)} ms per change)`],
      ['server CPU, same changes without channels', `${Math.round(cpuA)} ms for ${baselineDone} changes (${cpuPerChangeBaseline.toFixed(2)} ms per change)`],
      ['server CPU per message (run − baseline) / messages', `${perMessage.toFixed(3)} ms`],
      ['server CPU per message, everything / messages', `${(cpuB / Math.max(1, m.messages)).toFixed(3)} ms`],
      ['gateways refused', String(refused.length)],
    ];
    console.log(`\nBackground push: ${USERS} users × ${DEVICES} devices, ${RATE} changes/s for ${SECONDS} s; HTTPS, SQLite, PIGEON_WORKERS=${WORKERS}; stand-in gateways answering at once`);
    console.log('| | |\n|---|---|');
    for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);
    const intervalMs = (USERS / RATE) * 1000;
    if (percentile(m.sync, 99) > intervalMs / 2) {
      console.log(`\nnote: sync latencies near each user's change interval (${intervalMs} ms) are lower bounds: a late sync for one change can be taken for the next one's (newMail alerts are matched exactly, by subject)`);
    }
    console.log(`load average before / after: ${loadBefore.map((x) => x.toFixed(2)).join(' ')} / ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} (${os.cpus().length} cores)`);
    if (failed.length) console.log(`\n${failed.length} changes failed, e.g. ${failed[0]!.error}`);
    if (refused.length) console.log(`refused, e.g. ${JSON.stringify(refused[0])}`);

    const notes = { users: USERS, devices: DEVICES, channels: channelCount, changesPerSecond: RATE, seconds: SECONDS, changes: done, failedChanges: failed.length, messages: m.messages, workers: WORKERS, loadAverage: Number(loadBefore[0]!.toFixed(2)) };
    const figures: Figure[] = [
      { id: 'backgroundPush.latency.sync', scenario: 7, label: `commit → gateway, sync (${RATE} changes/s, ${channelCount} channels)`, unit: 'ms', better: 'lower',
        pigeon: { median: percentile(m.sync, 50), p95: percentile(m.sync, 95), p99: percentile(m.sync, 99), rounds: [percentile(m.sync, 50)], samples: m.sync.length }, notes: { ...notes, missing: m.missing.sync } },
      { id: 'backgroundPush.latency.newMail', scenario: 7, label: `commit → gateway, newMail alert (${RATE} changes/s, ${channelCount} channels)`, unit: 'ms', better: 'lower',
        pigeon: { median: percentile(m.newMail, 50), p95: percentile(m.newMail, 95), p99: percentile(m.newMail, 99), rounds: [percentile(m.newMail, 50)], samples: m.newMail.length }, notes: { ...notes, missing: m.missing.newMail } },
      { id: 'backgroundPush.messagesPerChange', scenario: 7, label: 'background push messages per change (5 devices per user)', unit: 'ratio', better: 'lower',
        pigeon: { median: m.messages / Math.max(1, done), rounds: [m.messages / Math.max(1, done)] }, notes },
      { id: 'backgroundPush.cpuPerMessage', scenario: 7, label: 'server CPU per background push message (less the changes\' own cost)', unit: 'ms', better: 'lower',
        pigeon: { median: perMessage, rounds: [perMessage], cpuMsPerOp: perMessage }, notes: { ...notes, cpuRunMs: Math.round(cpuB), cpuBaselineMsPerChange: Number(cpuPerChangeBaseline.toFixed(3)) } },
    ];
    const file = path.join(ROOT, 'bench', 'results.json');
    const results = fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as { figures?: Figure[]; pushBench?: unknown }) : { figures: [] };
    results.figures = [...(results.figures ?? []).filter((f) => !f.id.startsWith('backgroundPush.')), ...figures];
    results.pushBench = { startedAt: startedAt.toISOString(), command: 'npm run bench:push', machine: describeMachine() };
    fs.writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
    log(`figures written to ${path.relative(process.cwd(), file)}`);
  } finally {
    if (pigeon) forget(pigeon);
    await pigeon?.stop();
    await rig?.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
