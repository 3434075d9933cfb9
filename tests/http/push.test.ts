/**
 * protocol.md §8 over HTTP: the SSE event stream (delivery and other devices' changes → one coalesced event with
 * exact unread counts, nothing from other mailboxes, heartbeats, Last-Event-ID catch-up), one live channel per
 * device, the per-user cap, channels ending on device cuts, re-check failures, token expiry and shutdown, and the
 * long-poll ping. Streams are read incrementally from a real listening socket (supertest would buffer them).
 *
 * Timings are shortened through createApp's test-only push options (coalescing 50 ms, heartbeat 200 ms, ping
 * heartbeats from 1 s); the 400 for an out-of-range ping heartbeat is checked against the defaults.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import request from 'supertest';
import { createApp, type PigeonApp } from '../../server/app';
import type { Folder } from '../../server/store/types';
import { buildTestApp, signIn, type TestContext } from '../helpers/testApp';
import { expectToMatchSpec } from '../helpers/openapi';

const PW = 'password-for-tests';
const COALESCE_MS = 50;
const HEARTBEAT_MS = 200;

// ------------------------------------------------------------------------------------------------------------------
// An incremental SSE reader on a real socket
// ------------------------------------------------------------------------------------------------------------------

interface SseMessage {
  id?: string;
  event?: string;
  data?: string;
  at: number;
}

class Sse {
  /** Messages with data (dispatched events). */
  readonly events: SseMessage[] = [];
  /** Blocks that only set the id (EventSource dispatches nothing for them). */
  readonly bareIds: string[] = [];
  readonly comments: string[] = [];
  status = 0;
  headers: http.IncomingHttpHeaders = {};
  body = '';
  endedAt?: number;
  readonly ended: Promise<number>;
  private buffer = '';
  private waiters: Array<() => void> = [];
  private req!: http.ClientRequest;
  private endResolve!: (at: number) => void;

  private constructor() {
    this.ended = new Promise((resolve) => (this.endResolve = resolve));
  }

  static open(port: number, headers: Record<string, string>): Promise<Sse> {
    const s = new Sse();
    return new Promise((resolve, reject) => {
      s.req = http.get({ host: '127.0.0.1', port, path: '/v1/events', headers, agent: false }, (res) => {
        s.status = res.statusCode!;
        s.headers = res.headers;
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => s.feed(chunk));
        const finish = () => {
          if (s.endedAt !== undefined) return;
          s.endedAt = Date.now();
          s.endResolve(s.endedAt);
          s.wake();
        };
        res.on('end', finish);
        res.on('close', finish);
        res.on('error', finish);
        resolve(s);
      });
      s.req.once('error', reject);
    });
  }

  private feed(chunk: string) {
    if (this.status !== 200) {
      this.body += chunk;
      return;
    }
    this.buffer += chunk;
    let cut: number;
    while ((cut = this.buffer.indexOf('\n\n')) >= 0) {
      const block = this.buffer.slice(0, cut);
      this.buffer = this.buffer.slice(cut + 2);
      const msg: SseMessage = { at: Date.now() };
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) this.comments.push(line.slice(1).trim());
        else {
          const i = line.indexOf(':');
          const field = i < 0 ? line : line.slice(0, i);
          const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
          if (field === 'id' || field === 'event' || field === 'data') msg[field] = value;
        }
      }
      if (msg.data !== undefined) this.events.push(msg);
      else if (msg.id !== undefined) this.bareIds.push(msg.id);
    }
    this.wake();
  }

  private wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  /** Resolves when `check` holds (re-evaluated on every chunk and at the end), rejects after `ms`. */
  until<T>(check: () => T | undefined | false, ms = 2000, what = 'condition'): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      const test = () => {
        const v = check();
        if (v) {
          clearTimeout(timer);
          resolve(v);
        } else if (this.endedAt !== undefined && what !== 'end') {
          clearTimeout(timer);
          reject(new Error(`stream ended while waiting for ${what}`));
        } else this.waiters.push(test);
      };
      test();
    });
  }

  /** The n-th event (0-based), parsed. */
  async event(n: number, ms = 2000): Promise<{ id: number; type?: string; data: { folders: Record<string, { unreadCount: number }>; hierarchyChanged: boolean }; at: number }> {
    const m = await this.until(() => this.events[n], ms, `event #${n}`);
    return { id: Number(m.id), type: m.event, data: JSON.parse(m.data!), at: m.at };
  }

  waitEnd(ms = 2000): Promise<number> {
    return this.until(() => this.endedAt, ms, 'end');
  }

  close() {
    this.req.destroy();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------------------------------------------------------
// The world: alice (two devices and more), bob, an admin; an app with short push timings on a listening socket
// ------------------------------------------------------------------------------------------------------------------

let ctx: TestContext;
let fast: PigeonApp;
let server: http.Server;
let port: number;
const open: Sse[] = [];
let serial = 0;

interface Dev {
  user: string;
  userId: string;
  deviceId: string;
  recordId: string;
  headers: Record<string, string>;
}

/** Builds a second app over the test context's store, clock and keys, with the given push options. */
function appWith(c: TestContext, push: Parameters<typeof createApp>[0]['push']): PigeonApp {
  return createApp({ config: c.config, store: c.store, keys: c.keys, clock: c.clock, log: pino({ level: 'silent' }), push });
}

async function listen(app: PigeonApp['app']): Promise<{ server: http.Server; port: number }> {
  const s = http.createServer(app);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return { server: s, port: (s.address() as AddressInfo).port };
}

async function device(c: TestContext, app: PigeonApp['app'], user: string, description: object = {}): Promise<Dev> {
  const deviceId = `push-${user}-${String(++serial).padStart(4, '0')}-abcdefgh`;
  const grant = await request(app).post('/oauth2/token').type('form').send({ grant_type: 'password', client_id: 'pigeon-app', username: user, password: PW, device_id: deviceId });
  expect(grant.status).toBe(200);
  const headers = { Authorization: `Bearer ${grant.body.access_token}`, 'X-Device-Id': deviceId };
  const reg = await request(app).post('/v1/devices').set(headers).send({ friendlyName: `${user}'s phone`, deviceOS: 'PushOS 1', ...description });
  expect(reg.status).toBe(201);
  return { user, userId: (await c.store.users.byUsername(user))!.id, deviceId, recordId: reg.body.id, headers };
}

async function stream(d: Pick<Dev, 'headers'>, extra: Record<string, string> = {}, p = port): Promise<Sse> {
  const s = await Sse.open(p, { ...d.headers, ...extra });
  open.push(s);
  return s;
}

const folderOf = async (userId: string, kind: Folder['kind']) => (await ctx.store.folders.byKind(userId, kind))!;
let subjects = 0;
/** A delivery, as LMTP will make it: one item created in its own transaction (and so its own commit). */
async function deliver(userId: string, kind: Folder['kind'] = 'inbox', isRead = false) {
  return ctx.store.items.create(
    { userId, folderId: (await folderOf(userId, kind)).id, type: 'email', receivedAt: Date.now(), subject: `push test ${++subjects}`, isRead, from: { name: 'S', address: 's@example.org' }, preview: 'hi' },
    ctx.clock.now(),
  );
}

let adminHeaders: Record<string, string>;
const adminPost = (app: PigeonApp['app'], path: string, body?: object) => request(app).post(path).set(adminHeaders).send(body ?? {});

beforeAll(async () => {
  ctx = await buildTestApp();
  for (const [username, role] of [['alice', 'user'], ['bob', 'user'], ['root', 'admin']] as const) await ctx.users.addUser({ username, password: PW, role });
  fast = appWith(ctx, { coalesceMs: COALESCE_MS, heartbeatMs: HEARTBEAT_MS, pingSeconds: [1, 1740], maxChannelsPerUser: 50 });
  ({ server, port } = await listen(fast.app));
  adminHeaders = { Authorization: `Bearer ${(await signIn(ctx, 'root', PW)).access_token}` };
});
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});
afterAll(async () => {
  fast.push.close();
  ctx.built.push.close();
  await new Promise((r) => server.close(r));
  await ctx.close();
});

// ------------------------------------------------------------------------------------------------------------------

describe('GET /v1/events', () => {
  test('answers an event stream: uncompressed, not cached, not buffered by proxies; a bare id first', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const s = await stream(a, { 'Accept-Encoding': 'gzip, br' });
    expect(s.status).toBe(200);
    expect(s.headers['content-type']).toMatch(/^text\/event-stream/);
    expect(s.headers['cache-control']).toBe('no-store');
    expect(s.headers['x-accel-buffering']).toBe('no');
    expect(s.headers['content-encoding']).toBeUndefined();
    const id = await s.until(() => s.bareIds[0], 1000, 'the bare id');
    expect(Number(id)).toBe((await ctx.store.mailboxes.get(a.userId))!.highestModseq);
    expect(s.events).toEqual([]);
    // The metrics listener serves this registry (tests/http/requests.test.ts); the API port has no /metrics.
    expect(await fast.metrics.registry.metrics()).toMatch(/^pigeon_push_channels\{kind="stream"\} [1-9]/m);
  });

  test('HEAD answers the stream headers without opening one', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const res = await request(fast.app).head('/v1/events').set(a.headers);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
    expect(fast.push.count()).toBe(0);
  });

  test('401 without a token, 403 for an unregistered device', async () => {
    expect((await request(fast.app).get('/v1/events')).status).toBe(401);
    const { access_token } = await signIn(ctx, 'alice', PW);
    const res = await request(fast.app).get('/v1/events').set({ Authorization: `Bearer ${access_token}`, 'X-Device-Id': 'never-registered-0000' });
    expect(res.status).toBe(403);
    expect(res.body.code).toBe('deviceNotRegistered');
  });

  test('a delivery → an event within 2 s with the inbox\'s exact unread count and a larger id', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const s = await stream(a);
    const first = Number(await s.until(() => s.bareIds[0], 1000, 'the bare id'));
    const sent = Date.now();
    await deliver(a.userId);
    const e = await s.event(0);
    expect(e.at - sent).toBeLessThan(2000);
    expect(e.type).toBe('changed');
    const inbox = await folderOf(a.userId, 'inbox');
    expect(e.data).toEqual({ folders: { [inbox.id]: { unreadCount: inbox.unreadCount } }, hierarchyChanged: false });
    expect(inbox.unreadCount).toBeGreaterThan(0);
    expect(e.id).toBe((await ctx.store.mailboxes.get(a.userId))!.highestModseq);
    expect(e.id).toBeGreaterThan(first);
  });

  test('a change from another device (mark read over HTTP) → an event on this device\'s stream with the new count', async () => {
    const [phone, laptop] = [await device(ctx, fast.app, 'alice'), await device(ctx, fast.app, 'alice')];
    const item = await deliver(phone.userId);
    const s = await stream(phone);
    await s.until(() => s.bareIds[0], 1000, 'the bare id');
    const before = (await folderOf(phone.userId, 'inbox')).unreadCount;
    const sent = Date.now();
    expect((await request(fast.app).patch(`/v1/items/${item.id}`).set(laptop.headers).send({ isRead: true })).status).toBe(200);
    const e = await s.event(0);
    expect(e.at - sent).toBeLessThan(2000);
    expect(e.data.folders[(await folderOf(phone.userId, 'inbox')).id]).toEqual({ unreadCount: before - 1 });
  });

  test('a burst of changes → one coalesced event naming every folder touched, counts as after the burst', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const s = await stream(a);
    await s.until(() => s.bareIds[0], 1000, 'the bare id');
    const moved = await deliver(a.userId);
    for (let i = 0; i < 5; i++) await deliver(a.userId); // six separate commits, well inside one window
    await ctx.store.items.move(a.userId, moved.id, (await folderOf(a.userId, 'archive')).id, ctx.clock.now());
    const e = await s.event(0);
    await sleep(COALESCE_MS * 6);
    expect(s.events).toHaveLength(1);
    const inbox = await folderOf(a.userId, 'inbox');
    const archive = await folderOf(a.userId, 'archive');
    expect(e.data.folders).toEqual({ [inbox.id]: { unreadCount: inbox.unreadCount }, [archive.id]: { unreadCount: archive.unreadCount } });
    expect(archive.unreadCount).toBeGreaterThan(0);
  });

  test('changes in another user\'s mailbox send nothing; the stream stays live for its own', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const b = await device(ctx, fast.app, 'bob');
    const s = await stream(a);
    await s.until(() => s.bareIds[0], 1000, 'the bare id');
    await deliver(b.userId);
    await deliver(b.userId, 'archive');
    await sleep(COALESCE_MS * 6);
    expect(s.events).toEqual([]);
    await deliver(a.userId, 'drafts');
    const e = await s.event(0);
    expect(Object.keys(e.data.folders)).toEqual([(await folderOf(a.userId, 'drafts')).id]);
    expect(Object.keys(e.data.folders)).not.toContain((await folderOf(b.userId, 'drafts')).id);
  });

  test('folder changes set hierarchyChanged; a deleted folder is not in `folders`', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const s = await stream(a);
    await s.until(() => s.bareIds[0], 1000, 'the bare id');
    const created = await request(fast.app).post('/v1/folders').set(a.headers).send({ displayName: `Push ${serial}` });
    expect(created.status).toBe(201);
    const e1 = await s.event(0);
    expect(e1.data).toEqual({ folders: { [created.body.id]: { unreadCount: 0 } }, hierarchyChanged: true });
    expect((await request(fast.app).delete(`/v1/folders/${created.body.id}`).set(a.headers)).status).toBe(204);
    const e2 = await s.event(1);
    expect(e2.data).toEqual({ folders: {}, hierarchyChanged: true });
    expect(e2.id).toBeGreaterThan(e1.id);
  });

  test('a heartbeat comment arrives while nothing happens', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const s = await stream(a);
    await s.until(() => s.comments.includes('hb'), HEARTBEAT_MS * 5, 'a heartbeat');
    expect(s.events).toEqual([]);
  });

  test('a newer stream of the same device ends the older one; other devices keep theirs', async () => {
    const [a, other] = [await device(ctx, fast.app, 'alice'), await device(ctx, fast.app, 'alice')];
    const older = await stream(a);
    const bystander = await stream(other);
    await older.until(() => older.bareIds[0], 1000, 'the bare id');
    const newer = await stream(a);
    await older.waitEnd(1000);
    await deliver(a.userId);
    await newer.event(0);
    await bystander.event(0);
    expect(newer.endedAt).toBeUndefined();
  });
});

describe('Last-Event-ID', () => {
  async function lastId(d: Dev): Promise<string> {
    const s = await stream(d);
    const id = await s.until(() => s.bareIds[0], 1000, 'the bare id');
    s.close();
    await s.waitEnd();
    return id;
  }

  test('after missed changes: one event at once naming exactly the folders that changed', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const item = await deliver(a.userId, 'junkEmail');
    const id = await lastId(a);
    // While away: a flag in junk (content only) and a delivery to drafts (content and counts).
    await ctx.store.items.update(a.userId, item.id, { isFlagged: true }, ctx.clock.now());
    const flagged = await stream(a, { 'Last-Event-ID': id });
    const e = await flagged.event(0, 1000);
    expect(e.data).toEqual({ folders: { [(await folderOf(a.userId, 'junkEmail')).id]: { unreadCount: (await folderOf(a.userId, 'junkEmail')).unreadCount } }, hierarchyChanged: false });
    expect(e.id).toBe((await ctx.store.mailboxes.get(a.userId))!.highestModseq);
    flagged.close();

    const connectedAt = Date.now();
    await deliver(a.userId, 'drafts');
    const s = await stream(a, { 'Last-Event-ID': String(e.id) });
    const caught = await s.event(0, 1000);
    expect(caught.at - connectedAt).toBeLessThan(COALESCE_MS * 4); // at once, not after a coalescing window
    const drafts = await folderOf(a.userId, 'drafts');
    expect(caught.data.folders).toEqual({ [drafts.id]: { unreadCount: drafts.unreadCount } });
    // Counts moved: afterwards the rows cannot tell that from a rename, so the hierarchy is reported as changed.
    expect(caught.data.hierarchyChanged).toBe(true);
  });

  test('nothing missed: no event, only the current id', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const id = await lastId(a);
    const s = await stream(a, { 'Last-Event-ID': id });
    expect(await s.until(() => s.bareIds[0], 1000, 'the bare id')).toBe(id);
    await sleep(COALESCE_MS * 4);
    expect(s.events).toEqual([]);
  });

  test('a folder deleted while away: hierarchyChanged', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const created = await request(fast.app).post('/v1/folders').set(a.headers).send({ displayName: `Gone ${serial}` });
    const id = await lastId(a);
    expect((await request(fast.app).delete(`/v1/folders/${created.body.id}`).set(a.headers)).status).toBe(204);
    const s = await stream(a, { 'Last-Event-ID': id });
    const e = await s.event(0, 1000);
    expect(e.data).toEqual({ folders: {}, hierarchyChanged: true });
  });

  test.each([['garbage'], ['99999999999'], ['-1']])('an id the server cannot compare (%s): every folder, hierarchyChanged', async (bad) => {
    const a = await device(ctx, fast.app, 'alice');
    const s = await stream(a, { 'Last-Event-ID': bad });
    const e = await s.event(0, 1000);
    expect(e.data.hierarchyChanged).toBe(true);
    expect(Object.keys(e.data.folders).sort()).toEqual((await ctx.store.folders.listByUser(a.userId)).map((f) => f.id).sort());
  });
});

describe('streams end when the device may no longer hold them', () => {
  // Device cuts are checked on an app whose heartbeat (and so its re-check) is a minute away: only the cut signal
  // can end these streams within the second the tests allow.
  let quiet: PigeonApp;
  let quietPort: number;
  let quietServer: http.Server;
  beforeAll(async () => {
    quiet = appWith(ctx, { coalesceMs: COALESCE_MS, heartbeatMs: 60_000 });
    ({ server: quietServer, port: quietPort } = await listen(quiet.app));
  });
  afterAll(async () => {
    quiet.push.close();
    await new Promise((r) => quietServer.close(r));
  });

  test.each([['block'], ['quarantine'], ['wipe']])('admin %s → the stream ends at once and reconnecting is 403', async (action) => {
    const a = await device(ctx, quiet.app, 'alice');
    const s = await stream(a, {}, quietPort);
    await s.until(() => s.bareIds[0], 1000, 'the bare id');
    const t0 = Date.now();
    expect((await adminPost(quiet.app, `/admin/v1/devices/${a.recordId}/${action}`)).status).toBe(200);
    await s.waitEnd(1000);
    expect(s.endedAt! - t0).toBeLessThan(500);
    const again = await stream(a, {}, quietPort);
    expect(again.status).toBe(403);
    expect(JSON.parse(again.body).code).toBe({ block: 'deviceBlocked', quarantine: 'deviceQuarantined', wipe: 'wipeRequested' }[action]);
  });

  test('the user removes the device → its stream ends at once', async () => {
    const [a, other] = [await device(ctx, quiet.app, 'alice'), await device(ctx, quiet.app, 'alice')];
    const s = await stream(a, {}, quietPort);
    await s.until(() => s.bareIds[0], 1000, 'the bare id');
    expect((await request(quiet.app).delete(`/v1/devices/${a.deviceId}`).set(other.headers)).status).toBe(204);
    await s.waitEnd(1000);
  });

  test('an access rule (which fires no cut) ends the stream at the next re-check', async () => {
    const a = await device(ctx, fast.app, 'alice', { deviceOS: 'RuleOS 7' });
    const s = await stream(a);
    await s.until(() => s.bareIds[0], 1000, 'the bare id');
    const rule = await adminPost(fast.app, '/admin/v1/device-access-rules', { field: 'deviceOS', match: 'prefix', value: 'RuleOS', accessState: 'blocked' });
    expect(rule.status).toBe(201);
    try {
      await s.waitEnd(HEARTBEAT_MS * 5);
    } finally {
      await request(fast.app).delete(`/admin/v1/device-access-rules/${rule.body.id}`).set(adminHeaders);
    }
  });

  test('"revoke sessions" (the session version moves) ends the stream at the next re-check', async () => {
    await ctx.users.addUser({ username: 'carol', password: PW, role: 'user' });
    const c = await device(ctx, fast.app, 'carol');
    const s = await stream(c);
    await s.until(() => s.bareIds[0], 1000, 'the bare id');
    await ctx.store.users.bumpSessionVersion(c.userId, ctx.clock.now());
    await s.waitEnd(HEARTBEAT_MS * 5);
  });

  test('the stream ends at the access token\'s exp', async () => {
    const short = await buildTestApp({ accessTokenTtl: 1 });
    try {
      await short.users.addUser({ username: 'dave', password: PW, role: 'user' });
      const app = appWith(short, { heartbeatMs: 60_000 }); // no re-check in between: the exp timer alone ends it
      const { server: srv, port: p } = await listen(app.app);
      try {
        const d = await device(short, app.app, 'dave');
        const exp = JSON.parse(Buffer.from(d.headers.Authorization!.split('.')[1]!, 'base64url').toString()).exp as number;
        const openedAt = Date.now();
        const s = await stream(d, {}, p);
        expect(s.status).toBe(200);
        const endedAt = await s.waitEnd(2500);
        // The token's time runs on the test's manual clock; the stream ends when that much real time has passed.
        const due = exp * 1000 - short.clock.now();
        expect(due).toBeLessThanOrEqual(1000);
        expect(endedAt - openedAt).toBeGreaterThanOrEqual(due - 50);
        expect(endedAt - openedAt).toBeLessThan(due + 500);
        expect(app.push.count()).toBe(0);
      } finally {
        app.push.close();
        short.built.push.close();
        await new Promise((r) => srv.close(r));
      }
    } finally {
      await short.close();
    }
  });

  test('a per-user cap on live channels: one more is 429 rateLimited with Retry-After (PIGEON_PUSH_STREAMS_PER_USER)', async () => {
    const capped = await buildTestApp({ pushStreamsPerUser: 2 });
    try {
      await capped.users.addUser({ username: 'erin', password: PW, role: 'user' });
      const { server: srv, port: p } = await listen(capped.app);
      try {
        const [d1, d2, d3] = [await device(capped, capped.app, 'erin'), await device(capped, capped.app, 'erin'), await device(capped, capped.app, 'erin')];
        const s1 = await stream(d1, {}, p);
        await stream(d2, {}, p);
        expect(s1.status).toBe(200);
        const over = await request(capped.app).get('/v1/events').set(d3.headers);
        expect(over.status).toBe(429);
        expect(over.body.code).toBe('rateLimited');
        expect(Number(over.headers['retry-after'])).toBeGreaterThan(0);
        expectToMatchSpec(over, 'get', '/v1/events');
        const overPing = await request(capped.app).post('/v1/ping').set(d3.headers).send({ folderIds: [(await capped.store.folders.byKind(d3.userId, 'inbox'))!.id], heartbeatSeconds: 60 });
        expect(overPing.status).toBe(429);
        // A device replacing its own stream is not over the cap.
        const again = await stream(d1, {}, p);
        expect(again.status).toBe(200);
        await s1.waitEnd();
        // Shutdown ends every channel and refuses new ones.
        expect(capped.built.push.close()).toBe(2);
        await again.waitEnd();
        const after = await request(capped.app).get('/v1/events').set(d1.headers);
        expect(after.status).toBe(503);
      } finally {
        for (const s of open.splice(0)) s.close();
        await new Promise((r) => srv.close(r));
      }
    } finally {
      await capped.close();
    }
  });
});

// ------------------------------------------------------------------------------------------------------------------

describe('POST /v1/ping', () => {
  const ping = (d: Dev, body: object, app = fast.app) => request(app).post('/v1/ping').set(d.headers).send(body);
  /** Syncs a folder to its end, which is what sets the device's watermark for ping. */
  async function syncFolder(d: Dev, folderId: string) {
    let token: string | undefined;
    for (;;) {
      const res = await request(fast.app).get(`/v1/folders/${folderId}/items/sync${token ? `?token=${encodeURIComponent(token)}` : ''}`).set(d.headers);
      expect(res.status).toBe(200);
      token = res.body.token;
      if (!res.body.moreAvailable) return;
    }
  }

  test('heartbeatSeconds outside 60..1740 (the defaults) → 400 naming the range', async () => {
    const a = await device(ctx, ctx.app, 'alice');
    const inbox = (await folderOf(a.userId, 'inbox')).id;
    for (const heartbeatSeconds of [59, 1741, 0]) {
      const res = await ping(a, { folderIds: [inbox], heartbeatSeconds }, ctx.app);
      expect(res.status).toBe(400);
      expect(res.body.code).toBe('invalidRequest');
      expect(res.body.detail).toMatch(/60 and 1740/);
      expect(res.body.errors).toEqual([{ field: 'heartbeatSeconds', message: 'must be between 60 and 1740' }]);
    }
    for (const body of [{}, { folderIds: [], heartbeatSeconds: 60 }, { folderIds: [inbox], heartbeatSeconds: 60.5 }, { folderIds: [inbox], heartbeatSeconds: 60, extra: 1 }]) {
      expect((await ping(a, body, ctx.app)).status).toBe(400);
    }
    // In range with the defaults: answers (at once, since this device never synced the inbox).
    expect((await ping(a, { folderIds: [inbox], heartbeatSeconds: 60 }, ctx.app)).body).toEqual({ changed: [inbox] });
  });

  test('an unknown folder, or another user\'s, is 404 folderNotFound', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const bobs = (await folderOf((await ctx.store.users.byUsername('bob'))!.id, 'inbox')).id;
    for (const id of ['no-such-folder', bobs]) {
      const res = await ping(a, { folderIds: [(await folderOf(a.userId, 'inbox')).id, id], heartbeatSeconds: 60 });
      expect(res.status).toBe(404);
      expect(res.body.code).toBe('folderNotFound');
    }
  });

  test('answers at once for folders changed since the device last synced them (or never synced here)', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const [inbox, drafts] = [(await folderOf(a.userId, 'inbox')).id, (await folderOf(a.userId, 'drafts')).id];
    await syncFolder(a, inbox);
    const t0 = Date.now();
    const res = await ping(a, { folderIds: [inbox, drafts], heartbeatSeconds: 5 });
    expect(res.body).toEqual({ changed: [drafts] }); // drafts was never synced by this device
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(res.headers['cache-control']).toBe('no-store');
    await syncFolder(a, drafts);
    await deliver(a.userId);
    expect((await ping(a, { folderIds: [inbox, drafts], heartbeatSeconds: 5 })).body).toEqual({ changed: [inbox] });
  });

  test('returns early when a watched folder changes; a change elsewhere does not answer it', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const inbox = (await folderOf(a.userId, 'inbox')).id;
    await syncFolder(a, inbox);
    const t0 = Date.now();
    const pending = ping(a, { folderIds: [inbox], heartbeatSeconds: 10 }).then((r) => ({ r, at: Date.now() }));
    await sleep(150);
    await deliver(a.userId, 'archive'); // not watched
    await deliver((await ctx.store.users.byUsername('bob'))!.id); // not this mailbox
    await sleep(150);
    const changedAt = Date.now();
    await deliver(a.userId);
    const { r, at } = await pending;
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ changed: [inbox] });
    expect(at).toBeGreaterThanOrEqual(changedAt);
    expect(at - t0).toBeLessThan(2000);
    expectToMatchSpec(r, 'post', '/v1/ping');
  });

  test('answers {"changed":[]} at the heartbeat when nothing changes', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const inbox = (await folderOf(a.userId, 'inbox')).id;
    await syncFolder(a, inbox);
    const t0 = Date.now();
    const res = await ping(a, { folderIds: [inbox], heartbeatSeconds: 1 });
    const took = Date.now() - t0;
    expect(res.body).toEqual({ changed: [] });
    expect(took).toBeGreaterThanOrEqual(950);
    expect(took).toBeLessThan(2500);
  });

  test('a second ping from the same device ends the first with {"changed":[]}; the second keeps waiting', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const inbox = (await folderOf(a.userId, 'inbox')).id;
    await syncFolder(a, inbox);
    const first = ping(a, { folderIds: [inbox], heartbeatSeconds: 10 }).then((r) => ({ r, at: Date.now() }));
    await sleep(150);
    const t1 = Date.now();
    const second = ping(a, { folderIds: [inbox], heartbeatSeconds: 10 }).then((r) => ({ r, at: Date.now() }));
    const one = await first;
    expect(one.r.body).toEqual({ changed: [] });
    expect(one.at - t1).toBeLessThan(1000);
    expect(fast.push.count('ping')).toBeGreaterThanOrEqual(1);
    await deliver(a.userId);
    expect((await second).r.body).toEqual({ changed: [inbox] });
  });

  test('a stream and a ping of one device: each newer one ends the older', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const inbox = (await folderOf(a.userId, 'inbox')).id;
    await syncFolder(a, inbox);
    const s = await stream(a);
    await s.until(() => s.bareIds[0], 1000, 'the bare id');
    const waiting = ping(a, { folderIds: [inbox], heartbeatSeconds: 10 }).then((r) => r); // .then sends it now
    await s.waitEnd(1000);
    await sleep(50);
    const s2 = await stream(a);
    expect((await waiting).body).toEqual({ changed: [] });
    expect(s2.status).toBe(200);
  });

  test('a waiting ping of a device that gets blocked is answered at once with the gate\'s 403', async () => {
    const a = await device(ctx, fast.app, 'alice');
    const inbox = (await folderOf(a.userId, 'inbox')).id;
    await syncFolder(a, inbox);
    const waiting = ping(a, { folderIds: [inbox], heartbeatSeconds: 10 }).then((r) => ({ r, at: Date.now() }));
    await sleep(150);
    const t0 = Date.now();
    expect((await adminPost(fast.app, `/admin/v1/devices/${a.recordId}/block`)).status).toBe(200);
    const { r, at } = await waiting;
    expect(r.status).toBe(403);
    expect(r.body.code).toBe('deviceBlocked');
    expect(at - t0).toBeLessThan(500);
    expectToMatchSpec(r, 'post', '/v1/ping');
  });
});

describe('coalescing is a throttle: the first change goes out at once, later ones at most one window after it', () => {
  const WINDOW_MS = 1500;
  let slow: PigeonApp;
  let slowPort: number;
  let slowServer: http.Server;
  beforeAll(async () => {
    slow = appWith(ctx, { coalesceMs: WINDOW_MS, heartbeatMs: 60_000 });
    ({ server: slowServer, port: slowPort } = await listen(slow.app));
  });
  afterAll(async () => {
    slow.push.close();
    await new Promise((r) => slowServer.close(r));
  });

  test('a delivery after a quiet spell is announced in well under the window; the next change waits for it', async () => {
    const a = await device(ctx, slow.app, 'alice');
    const s = await stream(a, {}, slowPort);
    await s.until(() => s.bareIds[0], 1000, 'the bare id');
    const t0 = Date.now();
    await deliver(a.userId);
    const first = await s.event(0, WINDOW_MS);
    expect(first.at - t0).toBeLessThan(WINDOW_MS / 3);
    await deliver(a.userId, 'archive');
    await deliver(a.userId, 'drafts');
    const second = await s.event(1, WINDOW_MS * 3);
    // The two later changes share one event, sent about a window after the first.
    expect(second.at - first.at).toBeGreaterThanOrEqual(WINDOW_MS - 100);
    expect(Object.keys(second.data.folders).sort()).toEqual([(await folderOf(a.userId, 'archive')).id, (await folderOf(a.userId, 'drafts')).id].sort());
  });
});
