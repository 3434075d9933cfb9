/**
 * Push for shared mailboxes over real HTTPS against a real SQLite store (README, "Shared mailboxes"; protocol.md §8):
 * `GET /v1/events` and `POST /v1/ping` with `X-Mailbox` watch the shared mailbox — its changes only, ids of its own
 * sequence — beside the device's own stream; a newer shared stream replaces only the older shared one; a non-member
 * gets 404 mailboxNotFound and opens nothing; a member removed while watching is told `accessEnded` 404 (at the next
 * re-check, or at once when an admin removes them); a device cut ends every stream of the device; a change of the
 * shared mailbox's settings is told to its members' shared streams.
 *
 * Timings are shortened through createApp's test-only push options, as tests/http/push.test.ts does.
 */
import fs from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import request from 'supertest';
import { createApp, type PigeonApp } from '../../server/app';
import type { Folder } from '../../server/store/types';
import { buildTestApp, signIn, tempDir, type TestContext } from '../helpers/testApp';
import { devCertificate } from '../helpers/server';
import { readEventStream } from '../helpers/eventStream';
import { expectToMatchSpec } from '../helpers/openapi';
import { ChannelRegistry, type Caller, type Channel, type EndReason } from '../../server/push/channels';

const PW = 'password-for-shared-push';
const COALESCE_MS = 50;
const HEARTBEAT_MS = 200;

interface Served {
  app: PigeonApp;
  server: https.Server;
  port: number;
}

let ctx: TestContext;
let tls: { cert: string; key: string };
let fast: Served;
let quiet: Served;
let adminHeaders: Record<string, string>;
let shared: { id: string; email: string };
const ids: Record<string, string> = {};
const streams: Array<ReturnType<typeof readEventStream>> = [];
let serial = 0;

/** createApp over the test context's store, clock and keys with these push timings, listening on HTTPS. */
async function serve(push: Parameters<typeof createApp>[0]['push']): Promise<Served> {
  const app = createApp({ config: ctx.config, store: ctx.store, keys: ctx.keys, clock: ctx.clock, log: pino({ level: 'silent' }), push });
  const server = https.createServer({ cert: tls.cert, key: tls.key }, app.app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { app, server, port: (server.address() as AddressInfo).port };
}

interface Dev {
  userId: string;
  recordId: string;
  headers: Record<string, string>;
}

async function device(user: string, on: Served = fast): Promise<Dev> {
  const deviceId = `shared-push-${user}-${String(++serial).padStart(4, '0')}-abcdefgh`;
  const t = await signIn(ctx, user, PW, { device_id: deviceId });
  const headers = { Authorization: `Bearer ${t.access_token}`, 'X-Device-Id': deviceId };
  const reg = await request(on.app.app).post('/v1/devices').set(headers).send({ friendlyName: `${user}'s phone` });
  expect(reg.status).toBe(201);
  return { userId: ids[user]!, recordId: reg.body.id, headers };
}

const inShared = (d: Dev) => ({ ...d.headers, 'X-Mailbox': shared.email });

function open(headers: Record<string, string>, on: Served = fast) {
  const s = readEventStream({ port: on.port, cert: tls.cert }, headers);
  streams.push(s);
  return s;
}

/** The stream's blocks parsed: `id`, `event`, `data`. */
function parsed(s: ReturnType<typeof readEventStream>) {
  return s.blocks.map((b) => {
    const m: Record<string, string> = {};
    for (const line of b.text.split('\n')) {
      const i = line.indexOf(': ');
      if (i > 0) m[line.slice(0, i)] = line.slice(i + 2);
    }
    return m;
  });
}
const bareId = (s: ReturnType<typeof readEventStream>) => s.until(() => parsed(s).find((m) => m.id && !m.event)?.id, 2000, 'the bare id');
const changed = async (s: ReturnType<typeof readEventStream>, n: number) => {
  const e = await s.event(n);
  const m = /^id: (\d+)\n.*\ndata: (.*)$/s.exec(e.text)!;
  return { id: Number(m[1]), data: JSON.parse(m[2]!) as { folders: Record<string, { unreadCount: number }>; hierarchyChanged: boolean } };
};

/** A call over HTTPS (supertest would not cross the real socket), JSON in and out. */
function call(on: Served, method: string, path: string, headers: Record<string, string>, body?: object) {
  return new Promise<{ status: number; type: string; body: any }>((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port: on.port, method, path, headers: { ...headers, ...(body ? { 'Content-Type': 'application/json' } : {}) }, ca: tls.cert, servername: 'localhost', agent: false },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type']), body: text ? JSON.parse(text) : undefined }));
      },
    );
    req.once('error', reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

const folderOf = async (userId: string, kind: Folder['kind']) => (await ctx.store.folders.byKind(userId, kind))!;
let subjects = 0;
/** A delivery, as LMTP makes it: one item created in its own transaction. */
async function deliver(userId: string, kind: Folder['kind'] = 'inbox') {
  return ctx.store.items.create(
    { userId, folderId: (await folderOf(userId, kind)).id, type: 'email', receivedAt: Date.now(), subject: `shared push ${++subjects}`, from: { name: 'S', address: 's@example.org' }, preview: 'hi' },
    ctx.clock.now(),
  );
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const member = (user: string, on: Served = fast) =>
  request(on.app.app).put(`/admin/v1/shared-mailboxes/${shared.id}/members/${ids[user]}`).set(adminHeaders).send({ fullAccess: true }).expect(200);

beforeAll(async () => {
  ctx = await buildTestApp();
  const certs = await devCertificate(tempDir('pigeon-shared-push-tls-'));
  tls = { cert: certs.cert, key: fs.readFileSync(certs.keyFile, 'utf8') };
  for (const [user, role] of [['root', 'admin'], ['alice', 'user'], ['bob', 'user'], ['mallory', 'user']] as const) {
    ids[user] = (await ctx.users.addUser({ username: user, password: PW, role, email: `${user}@push.test` })).id;
  }
  fast = await serve({ coalesceMs: COALESCE_MS, heartbeatMs: HEARTBEAT_MS, pingSeconds: [1, 1740], maxChannelsPerUser: 50 });
  // Heartbeats (and so re-checks) a minute away: only a signal can end these streams within the test's second.
  quiet = await serve({ coalesceMs: COALESCE_MS, heartbeatMs: 60_000, pingSeconds: [1, 1740], maxChannelsPerUser: 50 });
  adminHeaders = { Authorization: `Bearer ${(await signIn(ctx, 'root', PW)).access_token}` };
  const created = await request(fast.app.app).post('/admin/v1/shared-mailboxes').set(adminHeaders).send({ email: 'support@push.test', displayName: 'Support' });
  expect(created.status).toBe(201);
  shared = created.body;
  await member('alice');
});
afterEach(async () => {
  for (const s of streams.splice(0)) s.close();
  await member('alice'); // a test may have removed her
  // Each test starts with no channel open, so the counts it reads are its own.
  for (let i = 0; i < 100 && fast.app.push.count() + quiet.app.push.count() > 0; i++) await sleep(20);
  expect(fast.app.push.count() + quiet.app.push.count()).toBe(0); // the registry's books go back to nothing
});
afterAll(async () => {
  for (const s of [fast, quiet]) {
    s.app.push.close();
    await new Promise((r) => s.server.close(r));
  }
  ctx.built.push.close();
  await ctx.close();
});

test('a shared stream hears the shared mailbox only; the own stream of the same device stays open and hears only its own', async () => {
  const a = await device('alice');
  const own = open(a.headers);
  const sh = open(inShared(a));
  expect(await own.ready).toBe(200);
  expect(await sh.ready).toBe(200);
  expect(Number(await bareId(sh))).toBe((await ctx.store.mailboxes.get(shared.id))!.highestModseq);
  await bareId(own);

  await deliver(shared.id);
  const e = await changed(sh, 0);
  const inbox = await folderOf(shared.id, 'inbox');
  expect(e.data).toEqual({ folders: { [inbox.id]: { unreadCount: inbox.unreadCount } }, hierarchyChanged: false });
  expect(inbox.unreadCount).toBeGreaterThan(0);
  expect(e.id).toBe((await ctx.store.mailboxes.get(shared.id))!.highestModseq);

  await deliver(a.userId);
  const o = await changed(own, 0);
  expect(Object.keys(o.data.folders)).toEqual([(await folderOf(a.userId, 'inbox')).id]);
  await sleep(COALESCE_MS * 6);
  expect(own.events()).toHaveLength(1); // the shared delivery never reached the own stream
  expect(sh.events()).toHaveLength(1); // nor the own delivery the shared one
  expect(fast.app.push.count('stream')).toBeGreaterThanOrEqual(2);
});

test('a change of the shared mailbox\'s settings reaches its members\' shared streams, not their own', async () => {
  const a = await device('alice');
  const own = open(a.headers);
  const sh = open(inShared(a));
  await bareId(own);
  await bareId(sh);
  const put = await request(fast.app.app).put('/v1/mailbox/settings/junk').set(inShared(a)).send({ safeSenders: ['partner.example'], blockedSenders: [] });
  expect(put.status).toBe(200);
  const told = await sh.until(() => parsed(sh).find((m) => m.event === 'mailboxSettingsChanged'), 2000, 'mailboxSettingsChanged');
  expect(JSON.parse(told.data!)).toEqual({ version: expect.any(Number) });
  await sleep(COALESCE_MS * 4);
  expect(parsed(own).some((m) => m.event === 'mailboxSettingsChanged')).toBe(false);
});

test('a second shared stream of the same device replaces the first; the own stream is not touched', async () => {
  const a = await device('alice');
  const own = open(a.headers);
  const first = open(inShared(a));
  await bareId(own);
  await bareId(first);
  const second = open(inShared(a));
  expect(await second.ready).toBe(200);
  await first.ended(2000);
  await deliver(shared.id);
  await changed(second, 0);
  await deliver(a.userId);
  await changed(own, 0); // still open
});

test('Last-Event-ID on a shared stream catches up against the shared mailbox\'s own modseq', async () => {
  const a = await device('alice');
  const s1 = open(inShared(a));
  const last = await bareId(s1);
  s1.close();
  await deliver(shared.id, 'archive');
  await deliver(a.userId); // the own mailbox moves too: not this stream's business
  const s2 = open({ ...inShared(a), 'Last-Event-ID': last });
  const e = await changed(s2, 0);
  const archive = await folderOf(shared.id, 'archive');
  expect(e.data).toEqual({ folders: { [archive.id]: { unreadCount: archive.unreadCount } }, hierarchyChanged: true });
  expect(e.id).toBe((await ctx.store.mailboxes.get(shared.id))!.highestModseq);
  // Resuming at the shared mailbox's current id: nothing to catch up, only the bare id.
  const s3 = open({ ...inShared(a), 'Last-Event-ID': String(e.id) });
  expect(Number(await bareId(s3))).toBe(e.id);
  await sleep(COALESCE_MS * 4);
  expect(s3.events()).toEqual([]);
});

test('a shared ping answers when the shared Inbox changes; the own Inbox is not its folder', async () => {
  const a = await device('alice');
  const inbox = (await folderOf(shared.id, 'inbox')).id;
  const ownInbox = (await folderOf(a.userId, 'inbox')).id;
  const sync = await call(fast, 'GET', `/v1/folders/${inbox}/items/sync`, inShared(a));
  expect(sync.status).toBe(200);
  // The sync of the shared folder is the ping's "synced up to" note: nothing changed since, so it waits out its
  // heartbeat (without the note it would answer "changed" at once, and the app would sync in a loop).
  const idle = await call(fast, 'POST', '/v1/ping', inShared(a), { folderIds: [inbox], heartbeatSeconds: 1 });
  expect(idle.status).toBe(200);
  expect(idle.body).toEqual({ changed: [] });

  const waiting = call(fast, 'POST', '/v1/ping', inShared(a), { folderIds: [inbox], heartbeatSeconds: 10 });
  await sleep(150);
  await deliver(a.userId); // the own Inbox: not watched by this ping
  await sleep(150);
  await deliver(shared.id);
  const res = await waiting;
  expect(res.status).toBe(200);
  expect(res.body).toEqual({ changed: [inbox] });

  for (const [headers, id] of [[inShared(a), ownInbox], [a.headers, inbox]] as const) {
    const refused = await call(fast, 'POST', '/v1/ping', headers, { folderIds: [id], heartbeatSeconds: 1 });
    expect(refused.status).toBe(404);
    expect(refused.body.code).toBe('folderNotFound');
  }
});

test('a non-member with X-Mailbox gets 404 mailboxNotFound on both routes, and nothing is opened or replaced', async () => {
  const m = await device('mallory');
  const own = open(m.headers);
  await bareId(own);
  const before = fast.app.push.count();
  const inbox = (await folderOf(shared.id, 'inbox')).id;
  const events = await call(fast, 'GET', '/v1/events', { ...m.headers, 'X-Mailbox': shared.email });
  const ping = await call(fast, 'POST', '/v1/ping', { ...m.headers, 'X-Mailbox': shared.id }, { folderIds: [inbox], heartbeatSeconds: 1 });
  for (const res of [events, ping]) {
    expect(res.status).toBe(404);
    expect(res.type).toMatch(/^application\/problem\+json/);
    expect(res.body.code).toBe('mailboxNotFound');
  }
  const spec = await request(fast.app.app).get('/v1/events').set({ ...m.headers, 'X-Mailbox': shared.email });
  expectToMatchSpec(spec, 'get', '/v1/events');
  expect(fast.app.push.count()).toBe(before);
  await deliver(m.userId);
  await changed(own, 0); // mallory's own stream was not replaced
});

test('a member removed while watching: accessEnded 404 mailboxNotFound at the next re-check', async () => {
  await member('bob');
  const b = await device('bob');
  const own = open(b.headers);
  const s = open(inShared(b));
  await bareId(own);
  await bareId(s);
  // Straight in the store: no signal, only the heartbeat's re-check can notice.
  await ctx.store.run(function* (tx) {
    yield* tx.sharedMailboxes.removeMember(shared.id, ids.bob!);
  });
  await s.ended(HEARTBEAT_MS * 10);
  const ended = parsed(s).find((m) => m.event === 'accessEnded');
  expect(JSON.parse(ended!.data!)).toMatchObject({ status: 404, code: 'mailboxNotFound' });
  await sleep(HEARTBEAT_MS * 2);
  await deliver(b.userId);
  await changed(own, 0); // the own stream lives on
});

test('an admin removing a member ends their shared stream and waiting shared ping at once', async () => {
  const a = await device('alice', quiet);
  const s = open(inShared(a), quiet);
  await bareId(s);
  const other = await device('alice', quiet);
  const inbox = (await folderOf(shared.id, 'inbox')).id;
  const sync = await call(quiet, 'GET', `/v1/folders/${inbox}/items/sync`, inShared(other));
  const waiting = call(quiet, 'POST', '/v1/ping', inShared(other), { folderIds: [inbox], heartbeatSeconds: 30 });
  await sleep(150);
  await request(quiet.app.app).delete(`/admin/v1/shared-mailboxes/${shared.id}/members/${ids.alice}`).set(adminHeaders).expect(200);
  await s.ended(1000);
  expect(JSON.parse(parsed(s).find((m) => m.event === 'accessEnded')!.data!)).toMatchObject({ status: 404, code: 'mailboxNotFound' });
  const ping = await waiting;
  expect(ping.status).toBe(404);
  expect(ping.body.code).toBe('mailboxNotFound');
});

test.each([['block'], ['wipe']])('admin %s ends both the own and the shared stream of the device at once', async (action) => {
  const a = await device('alice', quiet);
  const own = open(a.headers, quiet);
  const sh = open(inShared(a), quiet);
  await bareId(own);
  await bareId(sh);
  expect((await request(quiet.app.app).post(`/admin/v1/devices/${a.recordId}/${action}`).set(adminHeaders).send({})).status).toBe(200);
  await own.ended(1000);
  await sh.ended(1000);
  expect(quiet.app.push.count()).toBe(0);
});

test('the registry: one channel per device and mailbox, the cap over all of them, a device cut ends them all, exact books', () => {
  const registry = new ChannelRegistry(3);
  const ended: string[] = [];
  const channel = (name: string, recordId: string, mailboxId: string): Channel => {
    const c: Channel = {
      kind: 'stream',
      caller: { userId: 'u1', mailboxId, recordId } as Caller,
      end: (reason: EndReason) => {
        ended.push(`${name} ${reason}`);
        registry.release(c);
      },
    };
    return c;
  };
  const own = channel('own', 'd1', 'u1');
  const sharedA = channel('sharedA', 'd1', 'm1');
  registry.open(own);
  registry.open(sharedA);
  expect(registry.count()).toBe(2);
  registry.open(channel('sharedB', 'd1', 'm1')); // the same pair: replaces sharedA only
  expect(ended).toEqual(['sharedA replaced']);
  registry.release(sharedA); // already replaced: a no-op
  expect(registry.count()).toBe(2);
  registry.open(channel('other', 'd2', 'm1'));
  expect(() => registry.open(channel('over', 'd3', 'u1'))).toThrow(expect.objectContaining({ status: 429 }));
  registry.endDevice('d1', 'cut');
  expect(ended.slice(1).sort()).toEqual(['own cut', 'sharedB cut']);
  expect(registry.channelsOfDevice('d1')).toEqual([]);
  expect(registry.channelsOfMailbox('m1').map((c) => c.caller.recordId)).toEqual(['d2']);
  expect(registry.channelsOf('u1')).toHaveLength(1);
  registry.endDevice('d2', 'cut');
  expect([registry.count(), registry.channelsOf('u1').length, registry.channelsOfMailbox('m1').length, registry.channelsOfMailbox('u1').length]).toEqual([0, 0, 0, 0]);
  registry.open(channel('again', 'd1', 'u1')); // the per-user count went back to 0: three fit again
  registry.open(channel('again2', 'd1', 'm1'));
  registry.open(channel('again3', 'd2', 'm1'));
  expect(registry.count()).toBe(3);
});
