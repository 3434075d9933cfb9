/**
 * Two nodes on one PostgreSQL database (issue 14, "Many nodes"): two real server processes (one process each, no
 * workers), their own ports and data directories, one fresh database. What a load balancer in front of them needs:
 *
 * - the key material is the database's (neither data directory gets a key): a token issued by node A works on B, and
 *   a refresh token issued by A is redeemed on B;
 * - a change through node A (an LMTP delivery, an item change through the API) wakes an event stream held on node B
 *   (the database's NOTIFY feed): the latency over 20 changes is printed, and bounded by 1 s as a correctness check;
 * - a device blocked through node A is refused by node B at once (B's hot cache is invalidated by the feed);
 * - an idempotent retry sent to node B replays the answer node A gave, and changes nothing more;
 * - the token endpoint's failure budget is one for both nodes (the counts are in the database);
 * - a purge runs on one node at a time: while a third connection holds the job's advisory lock neither node runs it,
 *   and once it is released exactly one does;
 * - SIGTERM drains each node: streams end, both exit 0, and neither leaves a connection open.
 *
 * And a bad PIGEON_DATABASE_URL, or a database that cannot be reached, stops the start naming the setting, never
 * echoing its password.
 */
import { readEventStream } from '../helpers/eventStream';
import nodemailer from 'nodemailer';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { Client } from 'pg';
import { ROOT, startServer, type RunningServer } from '../helpers/server';
import { freshDatabase, type FreshDatabase } from '../helpers/postgres';
import { hashPassword } from '../../server/identity/passwords';
import { exclusiveLockKey, openPostgresStore } from '../../server/store/postgres';
import { assertNoSecretsInLogs } from '../helpers/secrets';

const PASSWORD = 'two-nodes-password-1';
let database: FreshDatabase;
let a: RunningServer;
let b: RunningServer;
const ids: Record<string, { userId: string; inboxId: string; messageId?: string }> = {};

async function seed(url: string) {
  const store = await openPostgresStore(url, { nodeId: 'test-seed' });
  try {
    const now = Date.now();
    const hash = await hashPassword(PASSWORD, { N: 1024, r: 8, p: 1, keyLength: 32 }); // cheap: many sign-ins below
    const tenant = await store.tenants.create('T', now);
    for (const username of ['alice', 'bob', 'carol', 'victim', 'root']) {
      const user = await store.users.create(
        { tenantId: tenant.id, username, email: `${username}@example.com`, displayName: username, role: username === 'root' ? 'admin' : 'user', passwordHash: hash },
        now,
      );
      await store.mailboxes.create(user.id, now);
      const inboxId = (await store.folders.byKind(user.id, 'inbox'))!.id;
      ids[username] = { userId: user.id, inboxId };
    }
    const alice = ids.alice!;
    alice.messageId = (
      await store.items.create({ userId: alice.userId, folderId: alice.inboxId, type: 'email', receivedAt: now, subject: 'Hello', from: { name: 'B', address: 'b@x' }, preview: 'hi' }, now)
    ).id;
  } finally {
    await store.close();
  }
}

const nodeEnv = (name: string) => ({
  PIGEON_DATABASE_URL: database.url,
  PIGEON_DATABASE_POOL_SIZE: '4',
  PIGEON_NODE_ID: name,
  PIGEON_WORKERS: '1',
  PIGEON_DEVICE_PURGE_INTERVAL: '1s',
  PIGEON_HISTORY_PURGE_INTERVAL: '1s',
  PIGEON_SHUTDOWN_TIMEOUT: '10s',
});

beforeAll(async () => {
  database = await freshDatabase('pigeon_two_nodes');
  // The schema first (as a deployment migrates before it scales out), then both nodes at once: each makes or reads
  // the keys under the same lock.
  await seed(database.url);
  [a, b] = await Promise.all([startServer(nodeEnv('node-a')), startServer(nodeEnv('node-b'))]);
}, 60_000);

afterAll(async () => {
  for (const server of [a, b]) {
    if (server && server.proc.exitCode === null && server.proc.signalCode === null) server.proc.kill('SIGKILL');
  }
  await database?.drop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One request to `server` over a connection of its own. */
function call(server: RunningServer, method: string, p: string, headers: Record<string, string> = {}, body?: string) {
  return new Promise<{ status: number; body: any; headers: Record<string, unknown> }>((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: server.port, method, path: p, headers, ca: server.cert, servername: 'localhost', agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        let parsed: unknown = text || undefined;
        try {
          parsed = text ? JSON.parse(text) : undefined;
        } catch {
          /* not JSON: the assertion says so */
        }
        resolve({ status: res.statusCode!, body: parsed, headers: res.headers });
      });
    });
    req.once('error', reject);
    req.end(body);
  });
}

const json = (headers: Record<string, string>) => ({ ...headers, 'content-type': 'application/json' });
const form = { 'content-type': 'application/x-www-form-urlencoded' };

async function tokens(server: RunningServer, username: string, deviceId?: string) {
  const res = await call(server, 'POST', '/oauth2/token', form, `grant_type=password&client_id=pigeon-app&username=${username}&password=${PASSWORD}${deviceId ? `&device_id=${deviceId}` : ''}`);
  expect(res.status).toBe(200);
  return res.body as { access_token: string; refresh_token: string };
}

/** A device of `username` registered through `server`: its headers and its record id. */
async function device(server: RunningServer, username: string, name: string) {
  const deviceId = `e2e-two-nodes-${username}-${name}-0123456789`;
  const headers = { authorization: `Bearer ${(await tokens(server, username, deviceId)).access_token}`, 'x-device-id': deviceId };
  const registered = await call(server, 'POST', '/v1/devices', json(headers), '{"friendlyName":"e2e"}');
  expect(registered.status).toBe(201);
  return { headers, id: registered.body.id as string };
}

/** An event stream on `server`, read as it arrives. */
function openStream(server: RunningServer, headers: Record<string, string>) {
  const stream = readEventStream(server, headers);
  return {
    ...stream,
    opened: async () => {
      expect(await stream.ready).toBe(200);
      await stream.until(() => stream.blocks[0], 3000, 'first block');
    },
  };
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

test('the keys are the database\'s: a token issued by node A works on node B, and A\'s refresh token is redeemed on B', async () => {
  for (const server of [a, b]) expect(fs.existsSync(path.join(server.dataDir, 'keys'))).toBe(false);
  const issued = await tokens(a, 'alice');
  const session = await call(b, 'GET', '/v1/session', { authorization: `Bearer ${issued.access_token}` });
  expect(session.status).toBe(200);
  expect(session.body.user.username).toBe('alice');
  const refreshed = await call(b, 'POST', '/oauth2/token', form, `grant_type=refresh_token&client_id=pigeon-app&refresh_token=${encodeURIComponent(issued.refresh_token)}`);
  expect(refreshed.status).toBe(200);
  expect((await call(a, 'GET', '/v1/session', { authorization: `Bearer ${refreshed.body.access_token}` })).status).toBe(200);
  const [jwksA, jwksB] = await Promise.all([call(a, 'GET', '/.well-known/jwks.json'), call(b, 'GET', '/.well-known/jwks.json')]);
  expect(jwksB.body).toEqual(jwksA.body);
});

test('changes through node A (LMTP, the API) wake event streams held on node B', async () => {
  const aliceReader = await device(a, 'alice', 'reader');
  const aliceWriter = await device(a, 'alice', 'writer');
  const bobReader = await device(a, 'bob', 'reader');
  const streams = { alice: openStream(b, aliceReader.headers), bob: openStream(b, bobReader.headers) };
  await Promise.all(Object.values(streams).map((s) => s.opened()));
  const latencies: number[] = [];
  const seen = { alice: 0, bob: 0 };
  // Alternately an item change of alice's through A's API and a delivery to bob through A's LMTP: each stream hears
  // of a change every ~1.1 s, past push's coalescing window, so each change is an event of its own, sent at once.
  for (let i = 0; i < 20; i++) {
    const who = i % 2 === 0 ? 'alice' : 'bob';
    const sent = Date.now();
    if (who === 'alice') {
      const res = await call(a, 'PATCH', `/v1/items/${ids.alice!.messageId}`, json(aliceWriter.headers), JSON.stringify({ isRead: i % 4 === 0 }));
      expect(res.status).toBe(200);
    } else {
      const transport = nodemailer.createTransport({ lmtp: true, host: '127.0.0.1', port: a.lmtpPort, ignoreTLS: true });
      const raw = `From: x@example.org\r\nTo: bob@example.com\r\nSubject: n${i}\r\nMessage-ID: <two-nodes-${i}@example.org>\r\n\r\nHello\r\n`;
      await transport.sendMail({ envelope: { from: 'x@example.org', to: ['bob@example.com'] }, raw }).finally(() => transport.close());
    }
    const event = await streams[who].event(seen[who]++);
    latencies.push(event.at - sent);
    await sleep(550);
  }
  for (const s of Object.values(streams)) s.close();
  const sorted = [...latencies].sort((x, y) => x - y);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
  process.stdout.write(
    `two nodes: change through A → event on B over ${sorted.length} changes: median ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${sorted.at(-1)} ms\n`,
  );
  // Every change crossed the nodes (an event per change, each well inside the stream's heartbeat). The p99 < 1 s
  // target is the benchmark's (`npm run bench -- --store pg`), never a timed assertion on a shared CI machine.
  expect(sorted.at(-1)!).toBeLessThan(10_000);
}, 40_000);

test('a device blocked through node A loses its event stream on node B at once, not at the next heartbeat', async () => {
  const admin = { authorization: `Bearer ${(await tokens(a, 'root')).access_token}` };
  const tablet = await device(a, 'carol', 'tablet');
  const stream = openStream(b, tablet.headers);
  await stream.opened();
  const blockedAt = Date.now();
  expect((await call(a, 'POST', `/admin/v1/devices/${tablet.id}/block`, admin)).status).toBe(200);
  // The heartbeat's re-check would end it within 25 s; B re-checks the device when A's commit notification names it.
  const endedAt = await stream.ended(5000);
  process.stdout.write(`two nodes: block through A ended B's stream after ${endedAt - blockedAt} ms\n`);
});

test('a device blocked through node A is refused by node B as soon as its commit notification arrives', async () => {
  const admin = { authorization: `Bearer ${(await tokens(a, 'root')).access_token}` };
  const phone = await device(a, 'carol', 'phone');
  // B has the device (and its sign-in) in its hot cache.
  for (let i = 0; i < 2; i++) expect((await call(b, 'GET', '/v1/devices', phone.headers)).status).toBe(200);
  const blocked = await call(a, 'POST', `/admin/v1/devices/${phone.id}/block`, admin);
  expect(blocked.status).toBe(200);
  // B learns of the block from A's commit notification, which normally arrives before this next request does; on a
  // loaded machine it may be a moment later, so B is asked again for up to 5 s. Without the feed B's cached device
  // would be served for good and this would never turn 403.
  const blockedAt = Date.now();
  let after = await call(b, 'GET', '/v1/devices', phone.headers);
  while (after.status === 200 && Date.now() - blockedAt < 5000) {
    await sleep(20);
    after = await call(b, 'GET', '/v1/devices', phone.headers);
  }
  process.stdout.write(`two nodes: block through A refused on B after ${Date.now() - blockedAt} ms\n`);
  expect(after.status).toBe(403);
});

test('an idempotent retry sent to node B replays the answer node A gave', async () => {
  const phone = await device(a, 'alice', 'sender');
  const headers = json({ ...phone.headers, 'idempotency-key': 'two-nodes-send-1' });
  const message = JSON.stringify({ to: [{ address: 'bob@example.com' }], subject: 'Once only', body: { contentType: 'text', content: 'x' } });
  const first = await call(a, 'POST', '/v1/messages/send', headers, message);
  expect(first.status).toBe(202);
  const retry = await call(b, 'POST', '/v1/messages/send', headers, message);
  expect(retry.status).toBe(202);
  expect(retry.body).toEqual(first.body);
  expect(retry.headers['idempotent-replayed']).toBe('true');
  const bob = await device(b, 'bob', 'counter');
  const found = await call(b, 'GET', '/v1/search?q=Once', bob.headers);
  expect(found.status).toBe(200);
  expect(JSON.stringify(found.body).match(/Once only/g)).toHaveLength(1);
});

test('the login failure budget is one for both nodes', async () => {
  const statuses: number[] = [];
  for (let i = 0; i < 24; i++) {
    const res = await call(i % 2 ? a : b, 'POST', '/oauth2/token', form, `grant_type=password&client_id=pigeon-app&username=victim&password=guess-${i}`);
    statuses.push(res.status);
  }
  expect(statuses.every((s) => s === 400 || s === 429)).toBe(true);
  // 10 failures per user and address (PIGEON_LOGIN_FAILURES_PER_USER) for both nodes together, not 10 on each.
  expect(statuses.filter((s) => s === 400)).toHaveLength(10);
});

test('a purge runs on one node at a time: not while another session holds its lock, then on exactly one node', async () => {
  const store = await openPostgresStore(database.url, { nodeId: 'test-inspector', poolSize: 1 });
  const holder = new Client({ connectionString: database.url });
  await holder.connect();
  try {
    await holder.query('SELECT pg_advisory_lock($1::bigint)', [exclusiveLockKey('device-purge')]);
    const longAgo = Date.now() - 40 * 86400_000; // beyond PIGEON_DEVICE_INACTIVITY (30 d)
    const description = { friendlyName: 'stale', deviceType: null, deviceModel: null, deviceOS: null, clientType: null, clientVersion: null, userAgent: null, capabilities: [] };
    const stale = await store.devices.create(ids.carol!.userId, 'e2e-two-nodes-stale-0123456789', description, longAgo);
    await sleep(2500); // both nodes' purge timers (1 s) came round, and found the job taken
    expect(await store.devices.byId(stale.id)).toBeDefined();
    await holder.query('SELECT pg_advisory_unlock($1::bigint)', [exclusiveLockKey('device-purge')]);
    await until('the stale device to be purged', async () => (await store.devices.byId(stale.id)) === undefined);
    await sleep(1500); // the other node's next turn finds nothing left
    const purges = [a, b].map((server) => server.logs.filter((l) => l.msg === 'inactive devices purged' && JSON.stringify(l.purged).includes(stale.id)).length);
    expect(purges.sort()).toEqual([0, 1]);
  } finally {
    await holder.end();
    await store.close();
  }
}, 20_000);

test('SIGTERM drains each node: streams end, both exit 0, no connection left open', async () => {
  const onA = await device(a, 'bob', 'last-a');
  const onB = await device(b, 'bob', 'last-b');
  const streams = [openStream(a, onA.headers), openStream(b, onB.headers)];
  await Promise.all(streams.map((s) => s.opened()));
  const t0 = Date.now();
  a.proc.kill('SIGTERM');
  b.proc.kill('SIGTERM');
  await Promise.all(streams.map((s) => s.ended(5000)));
  const exits = await Promise.all([a.exited, b.exited]);
  expect(exits.map(({ code, signal }) => ({ code, signal }))).toEqual([{ code: 0, signal: null }, { code: 0, signal: null }]);
  expect(Math.max(...exits.map((e) => e.at)) - t0).toBeLessThan(8000);
  for (const server of [a, b]) expect(server.logs.filter((l) => l.msg === 'stopped')).toHaveLength(1);
  const left = await (async () => {
    const c = new Client({ connectionString: database.url });
    await c.connect();
    try {
      const r = await c.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE 'pigeon%'`,
      );
      return r.rows[0]!.n;
    } finally {
      await c.end();
    }
  })();
  expect(left).toBe(0);
  // Neither node logged the database password (nor any token or password of the tests).
  const dbPassword = decodeURIComponent(new URL(database.url).password);
  for (const server of [a, b]) {
    assertNoSecretsInLogs([...server.logs.map((l) => JSON.stringify(l)), ...server.stderr], [dbPassword, PASSWORD], 'a node\'s log');
    await server.stop();
  }
}, 20_000);

test('a bad PIGEON_DATABASE_URL, or an unreachable database, stops the start without echoing the password', async () => {
  const start = (url: string) =>
    new Promise<{ code: number | null; output: string }>((resolve) => {
      const proc = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], {
        cwd: ROOT,
        env: { PATH: process.env.PATH, HOME: process.env.HOME, PIGEON_DATABASE_URL: url, PIGEON_WORKERS: '1', PIGEON_PORT: '0', PIGEON_LMTP_ENABLED: 'false', PIGEON_METRICS_ENABLED: 'false' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      proc.stdout!.on('data', (c: Buffer) => (output += c.toString('utf8')));
      proc.stderr!.on('data', (c: Buffer) => (output += c.toString('utf8')));
      proc.once('exit', (code) => resolve({ code, output }));
    });
  const [wrongScheme, unreachable] = await Promise.all([
    start('mysql://pigeon:hunter2-secret@127.0.0.1/pigeon'),
    start('postgres://pigeon:hunter2-secret@127.0.0.1:1/pigeon'), // nothing listens on port 1
  ]);
  expect(wrongScheme.code).toBe(2);
  expect(wrongScheme.output).toContain('PIGEON_DATABASE_URL: expected a postgres:// or postgresql:// URL');
  expect(unreachable.code).toBe(1);
  expect(unreachable.output).toContain('failed to start');
  for (const { output } of [wrongScheme, unreachable]) expect(output).not.toContain('hunter2-secret');
  expect(unreachable.output).toContain('postgres://pigeon:***@127.0.0.1:1/pigeon'); // the log's `starting` line
}, 20_000);
