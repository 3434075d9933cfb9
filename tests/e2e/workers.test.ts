/**
 * Workers (PIGEON_WORKERS=2) against the real process, with the production push timings.
 *
 * Each request below goes over a connection of its own, and node:cluster hands connections to the two workers in
 * turn (round-robin), so consecutive requests land on different workers. The tests do not rely on that blindly:
 * every request carries its own X-Request-Id, and the log line of each request names the worker that served it
 * (`worker`), which the tests check afterwards (e.g. "this stream was on the other worker than this block").
 *
 * - A change committed on either worker (HTTP on both, an LMTP delivery) reaches every stream on both, with the same
 *   badge; the change → event latency is printed.
 * - A ping on one worker answers a change committed on the other, and does not answer at once for a sync done on
 *   the other (the watermarks are shared).
 * - A device block on one worker cuts the device's stream on the other, both ways.
 * - The per-user push cap and the one-channel-per-device rule hold across the workers.
 * - The login failure budget is one for both workers: 110 guesses, at least 100 refused (10 allowed in all).
 * - One metrics scrape counts both workers' requests.
 * - The admin CLI's commit (another SQLite connection) is seen by both workers at once.
 * - SIGTERM: both workers drain, streams end at once, the process exits 0 and no worker is left; `ready` came once.
 */
import { readEventStream } from '../helpers/eventStream';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { ROOT, alive, childrenOf, startServer, type RunningServer } from '../helpers/server';
import { hashPassword } from '../../server/identity/passwords';
import { openSqliteStore } from '../../server/store/sqlite';
import { tempDir } from '../helpers/testApp';

const PASSWORD = 'workers-password-1';
const STREAM_CAP = 4;
let server: RunningServer;
let inboxId: string;
let messageId: string;
let workerPids: number[] = [];
/** carol's streams, left open on both workers by the cap test for the shutdown test. */
let openStreams: Array<ReturnType<typeof openStream>> = [];

async function seed(dataDir: string) {
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  const now = Date.now();
  const hash = await hashPassword(PASSWORD, { N: 1024, r: 8, p: 1, keyLength: 32 }); // cheap: many sign-ins below
  const tenant = await store.tenants.create('T', now);
  for (const username of ['alice', 'bob', 'carol', 'dave', 'victim', 'root']) {
    const user = await store.users.create(
      { tenantId: tenant.id, username, email: `${username}@example.com`, displayName: username, role: username === 'root' ? 'admin' : 'user', passwordHash: hash },
      now,
    );
    await store.mailboxes.create(user.id, now);
    if (username === 'alice') {
      inboxId = (await store.folders.byKind(user.id, 'inbox'))!.id;
      messageId = (await store.items.create({ userId: user.id, folderId: inboxId, type: 'email', receivedAt: now, subject: 'Hello', from: { name: 'B', address: 'b@x' }, preview: 'hi' }, now)).id;
    }
  }
  await store.close();
}

beforeAll(async () => {
  const dataDir = tempDir('pigeon-e2e-workers-');
  await seed(dataDir);
  server = await startServer({ PIGEON_DATA_DIR: dataDir, PIGEON_WORKERS: '2', PIGEON_PUSH_STREAMS_PER_USER: String(STREAM_CAP), PIGEON_SHUTDOWN_TIMEOUT: '10s' });
  workerPids = childrenOf(server.proc.pid!).filter((pid) => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('server/main.ts'));
}, 60_000);
afterAll(async () => {
  await server?.stop();
  for (const pid of workerPids) if (alive(pid)) process.kill(pid, 'SIGKILL');
});

let seq = 0;
const rid = (what: string) => `wk-${what}-${++seq}`;

/** One request over a connection of its own, with its own request id. */
function call(method: string, p: string, headers: Record<string, string> = {}, body?: string, requestId = rid('call')) {
  return new Promise<{ status: number; body: any; requestId: string }>((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port: server.port, method, path: p, headers: { ...headers, 'x-request-id': requestId }, ca: server.cert, servername: 'localhost', agent: false },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          let body: unknown = text || undefined;
          try {
            body = text ? JSON.parse(text) : undefined;
          } catch {
            /* not JSON (e.g. a stream where none was expected): the test's own assertion says so */
          }
          resolve({ status: res.statusCode!, body, requestId });
        });
      },
    );
    req.once('error', reject);
    req.end(body);
  });
}

const json = (headers: Record<string, string>) => ({ ...headers, 'content-type': 'application/json' });
const form = { 'content-type': 'application/x-www-form-urlencoded' };

async function signIn(username: string, deviceId?: string) {
  const res = await call('POST', '/oauth2/token', form, `grant_type=password&client_id=pigeon-app&username=${username}&password=${PASSWORD}${deviceId ? `&device_id=${deviceId}` : ''}`);
  expect(res.status).toBe(200);
  return res.body.access_token as string;
}

/** A registered device of `username`: its headers and its record id. */
async function device(username: string, name: string): Promise<{ headers: Record<string, string>; id: string }> {
  const deviceId = `e2e-workers-${username}-${name}-0123456789`;
  const headers = { authorization: `Bearer ${await signIn(username, deviceId)}`, 'x-device-id': deviceId };
  const registered = await call('POST', '/v1/devices', json(headers), '{"friendlyName":"e2e"}');
  expect(registered.status).toBe(201);
  return { headers, id: registered.body.id };
}

/** The worker that served a request, from its log line (written when its response closed). */
async function workerOf(requestId: string): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const line = server.logs.find((l) => l.msg === 'request' && l.requestId === requestId);
    if (line) return line.worker as number;
    await new Promise((r) => setTimeout(r, 30));
  }
  throw new Error(`no request log line for ${requestId}`);
}

/** An event stream read as it arrives, over a connection of its own. */
function openStream(headers: Record<string, string>, requestId = rid('stream')) {
  const stream = readEventStream(server, { ...headers, 'x-request-id': requestId }, ` on ${requestId}`);
  return {
    ...stream,
    requestId,
    /** Open and registered: the first block (the bare `id:`) has arrived. */
    opened: async () => {
      expect(await stream.ready).toBe(200);
      await stream.until(() => stream.blocks[0], 3000, 'first block');
    },
  };
}

const badge = (text: string) => JSON.parse(/data: (.*)/.exec(text)![1]!).folders[inboxId]?.unreadCount as number;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a change committed on either worker (HTTP, LMTP) reaches every stream on both, with the same badge', async () => {
  const readers = [];
  for (let i = 0; i < STREAM_CAP; i++) readers.push(await device('alice', `reader${i}`));
  const writer = await device('alice', 'writer');
  const streams = [];
  for (const r of readers) {
    const s = openStream(r.headers);
    await s.opened();
    streams.push(s);
  }
  const latencies: Record<'http' | 'lmtp', number[]> = { http: [], lmtp: [] };
  const changes: string[] = [];
  let accepted = 0; // when the LMTP client had the 250
  // Four PATCHes (over four connections, so both workers commit) and an LMTP delivery; each after the coalescing
  // window of the previous event, so each is sent at once rather than gathered with the next.
  const rounds: Array<{ change: () => Promise<void>; unread: number; kind: 'http' | 'lmtp' }> = [true, false, true, false].map((isRead) => ({
    kind: 'http',
    unread: isRead ? 0 : 1,
    change: async () => {
      const res = await call('PATCH', `/v1/items/${messageId}`, json(writer.headers), JSON.stringify({ isRead }), rid('patch'));
      expect(res.status).toBe(200);
      changes.push(res.requestId);
    },
  }));
  rounds.push({
    kind: 'lmtp',
    unread: 2,
    change: async () => {
      const transport = nodemailer.createTransport({ lmtp: true, host: '127.0.0.1', port: server.lmtpPort, ignoreTLS: true });
      const raw = 'From: b@example.org\r\nTo: alice@example.com\r\nSubject: over LMTP\r\nMessage-ID: <workers-1@example.org>\r\n\r\nHello\r\n';
      await transport.sendMail({ envelope: { from: 'b@example.org', to: ['alice@example.com'] }, raw }).finally(() => transport.close());
      accepted = Date.now();
    },
  });
  for (const [n, round] of rounds.entries()) {
    const sent = Date.now();
    await round.change();
    const events = await Promise.all(streams.map((s) => s.event(n)));
    for (const e of events) {
      latencies[round.kind].push(e.at - sent);
      expect(badge(e.text)).toBe(round.unread);
    }
    await sleep(1100);
  }
  for (const s of streams) s.close();
  const streamWorkers = await Promise.all(streams.map((s) => workerOf(s.requestId)));
  const changeWorkers = await Promise.all(changes.map(workerOf));
  expect(new Set(streamWorkers).size).toBe(2);
  expect(new Set(changeWorkers).size).toBe(2);
  // Reported, not a target of this test (the benchmark measures delivery → event under load): from the start of
  // the change (the PATCH request, the LMTP session) to the event's arrival on each stream.
  const summary = (ms: number[]) => {
    const sorted = [...ms].sort((a, b) => a - b);
    return `median ${sorted[Math.floor(sorted.length / 2)]} ms, max ${sorted[sorted.length - 1]} ms over ${sorted.length} events`;
  };
  const lmtpEvents = await Promise.all(streams.map((s) => s.event(rounds.length - 1)));
  const afterAccept = lmtpEvents.map((e) => e.at - accepted);
  process.stdout.write(
    `workers: PATCH → event ${summary(latencies.http)}; LMTP session start → event ${summary(latencies.lmtp)} ` +
      `(${Math.min(...afterAccept)}..${Math.max(...afterAccept)} ms after the client had the 250)\n`,
  );
  expect(Math.max(...latencies.http, ...latencies.lmtp)).toBeLessThan(2000);
}, 30_000);

test('concurrent writes on both workers all succeed: LMTP deliveries and app changes wait for the lock, none fails', async () => {
  // Before write transactions took their lock at BEGIN (IMMEDIATE), a transaction that read and then wrote while
  // the other worker committed got SQLITE_BUSY at once: LMTP answered 451 and the peers harness stopped loading.
  const dave = await device('dave', 'concurrent');
  const folders = await call('GET', '/v1/folders/sync', dave.headers);
  const daveInbox = folders.body.created.find((f: { kind: string }) => f.kind === 'inbox');
  const created = await Promise.all(
    Array.from({ length: 12 }, (_, i) => call('POST', '/v1/folders', { ...dave.headers, 'content-type': 'application/json' }, JSON.stringify({ displayName: `F${i}` }))),
  );
  expect(created.map((r) => r.status)).toEqual(created.map(() => 201));
  // Several LMTP connections at once (a pool), so both workers take deliveries.
  const lmtpOptions = { lmtp: true, host: '127.0.0.1', port: server.lmtpPort, ignoreTLS: true, pool: true, maxConnections: 6 };
  const transport = nodemailer.createTransport(lmtpOptions as Parameters<typeof nodemailer.createTransport>[0]);
  const deliveries = Array.from({ length: 60 }, (_, i) =>
    transport.sendMail({
      envelope: { from: 'b@example.org', to: ['dave@example.com'] },
      raw: `From: b@example.org\r\nTo: dave@example.com\r\nSubject: load ${i}\r\nMessage-ID: <workers-load-${i}@example.org>\r\n\r\nBody ${i}\r\n`,
    }),
  );
  const renames = created.map((r, i) =>
    call('PATCH', `/v1/folders/${r.body.id}`, { ...dave.headers, 'content-type': 'application/json' }, JSON.stringify({ displayName: `G${i}` })),
  );
  const [sent, renamed] = await Promise.all([Promise.allSettled(deliveries), Promise.all(renames)]);
  transport.close();
  const refused = sent.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason).slice(0, 120));
  expect(refused).toEqual([]);
  expect(renamed.map((r) => r.status)).toEqual(renamed.map(() => 200));
  const after = await call('GET', '/v1/folders/sync', dave.headers);
  expect(after.body.created.find((f: { id: string }) => f.id === daveInbox.id).totalCount).toBe(daveInbox.totalCount + 60);
});

test('a ping on one worker: no spurious answer for a sync done on the other; answers a change committed on the other', async () => {
  const phone = await device('alice', 'pinger');
  const sync = await call('GET', `/v1/folders/${inboxId}/items/sync?maxChanges=100`, phone.headers, undefined, rid('sync'));
  expect(sync.status).toBe(200);
  expect(sync.body.moreAvailable).toBe(false);
  let answered: { status: number; body: any; at: number } | undefined;
  const pingId = rid('ping');
  const ping = call('POST', '/v1/ping', json(phone.headers), JSON.stringify({ folderIds: [inboxId], heartbeatSeconds: 60 }), pingId).then((r) => (answered = { ...r, at: Date.now() }));
  await sleep(700);
  expect(answered).toBeUndefined(); // it waits: the other worker's sync is known here
  const changed = Date.now();
  const patch = await call('PATCH', `/v1/items/${messageId}`, json(phone.headers), '{"isFlagged":true}', rid('patch'));
  expect(patch.status).toBe(200);
  await ping;
  expect(answered!.status).toBe(200);
  expect(answered!.body).toEqual({ changed: [inboxId] });
  expect(answered!.at - changed).toBeLessThan(2000);
  const [syncWorker, pingWorker, patchWorker] = await Promise.all([workerOf(sync.requestId), workerOf(pingId), workerOf(patch.requestId)]);
  expect(pingWorker).not.toBe(syncWorker);
  expect(pingWorker).not.toBe(patchWorker);
}, 30_000);

test('a device block on one worker cuts the stream on the other, both ways', async () => {
  const admin = { authorization: `Bearer ${await signIn('root')}` };
  const a = await device('bob', 'a');
  const b = await device('bob', 'b');
  const sa = openStream(a.headers);
  await sa.opened();
  const sb = openStream(b.headers);
  await sb.opened();
  await call('GET', '/.well-known/jwks.json'); // one connection between: each block below lands on the other worker
  const blockA = await call('POST', `/admin/v1/devices/${a.id}/block`, admin, undefined, rid('block'));
  expect(blockA.status).toBe(200);
  await sa.ended(2000);
  const blockB = await call('POST', `/admin/v1/devices/${b.id}/block`, admin, undefined, rid('block'));
  expect(blockB.status).toBe(200);
  await sb.ended(2000);
  const [wa, wb, wBlockA, wBlockB] = await Promise.all([workerOf(sa.requestId), workerOf(sb.requestId), workerOf(blockA.requestId), workerOf(blockB.requestId)]);
  expect(wa).not.toBe(wb);
  expect(wBlockA).not.toBe(wa);
  expect(wBlockB).not.toBe(wb);
  expect((await call('GET', '/v1/devices', a.headers)).status).toBe(403);
}, 30_000);

test('the per-user push cap and one channel per device hold across the workers', async () => {
  const devices = [];
  for (let i = 0; i <= STREAM_CAP; i++) devices.push(await device('carol', `d${i}`));
  const streams = [];
  for (const d of devices.slice(0, STREAM_CAP)) {
    const s = openStream(d.headers);
    await s.opened();
    streams.push(s);
  }
  // One more device, on either worker: 429, though each worker holds only half of the cap.
  const refused = [];
  for (let i = 0; i < 2; i++) {
    const res = await call('GET', '/v1/events', devices[STREAM_CAP]!.headers, undefined, rid('over-cap'));
    expect(res.status).toBe(429);
    refused.push(res.requestId);
  }
  expect(new Set(await Promise.all(refused.map(workerOf))).size).toBe(2);
  // The first device again, on the other worker than its stream: the older stream ends, the newer is not refused.
  await call('GET', '/.well-known/jwks.json');
  const again = openStream(devices[0]!.headers);
  await again.opened();
  await streams[0]!.ended(2000);
  streams[0] = again;
  openStreams = streams; // left open for the shutdown test below: streams on both workers
}, 30_000);

test('the login failure budget is one for both workers: 110 guesses, at least 100 refused', async () => {
  const statuses: number[] = [];
  const ids: string[] = [];
  for (let i = 0; i < 110; i++) {
    const res = await call('POST', '/oauth2/token', form, `grant_type=password&client_id=pigeon-app&username=${i % 2 ? 'VICTIM' : 'victim'}&password=guess-${i}`, rid('guess'));
    statuses.push(res.status);
    ids.push(res.requestId);
  }
  expect(statuses.every((s) => s === 400 || s === 429)).toBe(true);
  const refused = statuses.filter((s) => s === 429).length;
  expect(refused).toBeGreaterThanOrEqual(90); // the issue's bar; per-worker counts would give exactly 90
  expect(refused).toBeGreaterThanOrEqual(100); // one budget of 10 (PIGEON_LOGIN_FAILURES_PER_USER) for both workers
  expect(new Set(await Promise.all(ids.slice(-4).map(workerOf))).size).toBe(2);

  // One scrape of the primary's metrics listener counts every worker's requests.
  const metricsPort = server.logs.find((l) => l.msg === 'ready')!.metricsPort as number;
  const text = await new Promise<string>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: metricsPort, path: '/metrics' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
    }).once('error', reject);
  });
  const counted = (status: number) =>
    text
      .split('\n')
      .filter((l) => l.startsWith('pigeon_http_requests_total{') && l.includes('route="/oauth2/token"') && l.includes(`status="${status}"`))
      .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
  expect(counted(429)).toBe(refused);
  expect(counted(400)).toBe(110 - refused);
  expect(text).toMatch(/^pigeon_workers 2$/m);
}, 30_000);

test('the admin CLI commits beside the workers: revoke-sessions ends the access tokens on both at once', async () => {
  const d = await device('dave', 'phone');
  const before = [await call('GET', '/v1/session', d.headers), await call('GET', '/v1/session', d.headers)];
  expect(before.map((r) => r.status)).toEqual([200, 200]);
  const cli = spawn(process.execPath, ['--import', 'tsx', 'server/cli/admin.ts', 'revoke-sessions', '--username', 'dave'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, PIGEON_DATA_DIR: server.dataDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  cli.stdout!.on('data', (c: Buffer) => (out += c.toString('utf8')));
  cli.stderr!.on('data', (c: Buffer) => (out += c.toString('utf8')));
  expect(await new Promise((resolve) => cli.once('exit', resolve))).toBe(0);
  expect(out).toContain('access tokens end now');
  const after = [await call('GET', '/v1/session', d.headers), await call('GET', '/v1/session', d.headers)];
  expect(after.map((r) => r.status)).toEqual([401, 401]);
  expect(new Set(await Promise.all(after.map((r) => workerOf(r.requestId)))).size).toBe(2);
}, 30_000);

test('SIGTERM: both workers drain, streams end at once, exit 0 with no worker left; ready was logged once', async () => {
  expect(workerPids).toHaveLength(2);
  const streams = openStreams;
  expect(streams).toHaveLength(STREAM_CAP);
  const t0 = Date.now();
  server.proc.kill('SIGTERM');
  await Promise.all(streams.map((s) => s.ended(5000)));
  const { code, signal, at } = await server.exited;
  expect({ code, signal }).toEqual({ code: 0, signal: null });
  expect(at - t0).toBeLessThan(8000); // streams do not hold the drain for the shutdown timeout (10 s)
  await sleep(100);
  expect(workerPids.filter(alive)).toEqual([]);
  expect(server.logs.filter((l) => l.msg === 'ready')).toHaveLength(1);
  const stopped = server.logs.filter((l) => l.msg === 'stopped');
  expect(stopped.map((l) => l.worker ?? 'primary').sort()).toEqual([1, 2, 'primary']);
  expect(server.logs.filter((l) => l.msg === 'draining').map((l) => l.signal)).toEqual(['SIGTERM', 'SIGTERM', 'SIGTERM']);
}, 30_000);
