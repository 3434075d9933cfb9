/**
 * The hot cache (server/store/cached.ts) over a real SQLite file, through the real app:
 * - a no-change poll runs two SQLite statements: `PRAGMA data_version` and its one read (named below);
 * - every security-relevant change is seen by the very next request — in-process writes through the store's
 *   invalidation feed, and a write through a second connection to the same file (the admin CLI, another worker)
 *   through `data_version`. Each test makes a request first, so the record is in the cache when it changes: without
 *   the feed (or without the data_version check, for the second connection) these tests fail.
 * - the feed itself: after the commit, never for a rollback; nothing cached inside a transaction; bounded memory.
 */
import path from 'node:path';
import request from 'supertest';
import { buildTestApp, signIn, CLIENT_ID, type TestContext } from '../helpers/testApp';
import { openSqliteStore } from '../../server/store/sqlite';
import { withHotCache } from '../../server/store/cached';
import type { Invalidation } from '../../server/store/types';

let ctx: TestContext;
const PW = 'password-for-hot-cache';
let serial = 0;
const newDeviceId = () => `hot-${String(++serial).padStart(4, '0')}-abcdefghijkl`;

beforeAll(async () => {
  ctx = await buildTestApp();
  for (const [username, role] of [['alice', 'user'], ['bob', 'user'], ['root', 'admin']] as const) {
    await ctx.users.addUser({ username, password: PW, role });
  }
});
afterAll(() => ctx.close());

interface Session {
  access: string;
  refresh: string;
  deviceId: string;
  /** The device record's id. */
  id: string;
}

/** Signs in (bound to a fresh device unless `bound: false`) and registers the device. */
async function session(username = 'alice', o: { bound?: boolean; body?: object } = {}): Promise<Session> {
  const deviceId = newDeviceId();
  const t = await signIn(ctx, username, PW, o.bound === false ? {} : { device_id: deviceId });
  const res = await request(ctx.app)
    .post('/v1/devices')
    .set('Authorization', `Bearer ${t.access_token}`)
    .set('X-Device-Id', deviceId)
    .send({ friendlyName: 'phone', deviceType: 'iPhone', deviceModel: 'iPhone15,2', deviceOS: 'iOS 19.1', clientType: 'PigeonMail', ...o.body });
  expect(res.status).toBe(201);
  return { access: t.access_token, refresh: t.refresh_token, deviceId, id: res.body.id };
}

const get = (s: Pick<Session, 'access' | 'deviceId'>, p: string) =>
  request(ctx.app).get(p).set('Authorization', `Bearer ${s.access}`).set('X-Device-Id', s.deviceId);
/** The next request: a hierarchy sync, which needs the user, the sign-in, the device and its access state. */
const poll = (s: Session) => get(s, '/v1/folders/sync');

let adminToken: string;
beforeAll(async () => {
  adminToken = (await signIn(ctx, 'root', PW)).access_token;
});
const admin = {
  post: (p: string, body?: object) => request(ctx.app).post(p).set('Authorization', `Bearer ${adminToken}`).send(body ?? {}),
  put: (p: string, body: object) => request(ctx.app).put(p).set('Authorization', `Bearer ${adminToken}`).send(body),
  delete: (p: string) => request(ctx.app).delete(p).set('Authorization', `Bearer ${adminToken}`),
};
const userId = async (username: string) => (await ctx.store.users.byUsername(username))!.id;

/** Every SQLite statement `fn` runs (better-sqlite3's Statement run/get/all/iterate), whitespace squashed. */
async function statementsOf<T>(fn: () => Promise<T>): Promise<{ result: T; statements: string[] }> {
  const proto = Object.getPrototypeOf(ctx.store.db.prepare('SELECT 1')) as Record<string, (...a: unknown[]) => unknown>;
  const statements: string[] = [];
  const saved = new Map<string, (...a: unknown[]) => unknown>();
  for (const m of ['run', 'get', 'all', 'iterate']) {
    const original = proto[m]!;
    saved.set(m, original);
    proto[m] = function (this: { source: string }, ...args: unknown[]) {
      statements.push(this.source.replace(/\s+/g, ' ').trim());
      return original.apply(this, args);
    };
  }
  try {
    return { result: await fn(), statements };
  } finally {
    for (const [m, original] of saved) proto[m] = original;
  }
}

describe('a no-change poll runs two SQLite statements', () => {
  const DATA_VERSION = 'PRAGMA data_version';
  const FOLDER_READ = /^SELECT \*, \(SELECT highest_modseq FROM mailboxes WHERE user_id = @u\) AS mailbox_highest_modseq, .* FROM folders WHERE id = @id AND user_id = @u$/;
  const HIERARCHY_POLL = /^SELECT user_id, highest_modseq, purged_modseq, epoch, EXISTS \(SELECT 1 FROM folders .*\) AS changed FROM mailboxes WHERE user_id = @u$/;

  test('item sync: data_version and the folder row (which carries its mailbox and the hierarchy state)', async () => {
    const s = await session('bob');
    const folders = await poll(s).expect(200);
    const inbox = folders.body.created.find((f: { kind: string }) => f.kind === 'inbox').id as string;
    const url = (token?: string) => `/v1/folders/${inbox}/items/sync${token ? `?token=${encodeURIComponent(token)}` : ''}`;
    let token = (await get(s, url()).expect(200)).body.token as string;
    token = (await get(s, url(token)).expect(200)).body.token;

    for (let i = 0; i < 3; i++) {
      const { result, statements } = await statementsOf(() => get(s, url(token)));
      expect(result.status).toBe(200);
      expect(result.body).toMatchObject({ token, moreAvailable: false, created: [], updated: [], removed: [] });
      expect(statements).toHaveLength(2);
      expect(statements[0]).toBe(DATA_VERSION);
      expect(statements[1]).toMatch(FOLDER_READ);
    }
    // The hierarchy state answered from that read is the one folders.hierarchyState computes.
    expect((await get(s, url(token))).body.hierarchyState).toBe(await ctx.store.folders.hierarchyState(await userId('bob')));

    // A change to the folder is seen by the next poll (which then reads what it must).
    await ctx.store.items.create({ userId: await userId('bob'), folderId: inbox, type: 'email', receivedAt: ctx.clock.now(), subject: 'new' }, ctx.clock.now());
    const changed = await get(s, url(token)).expect(200);
    expect(changed.body.created.map((c: { subject: string }) => c.subject)).toEqual(['new']);
  });

  test('folder sync: data_version and one hierarchy-poll read', async () => {
    const s = await session('bob');
    let token = (await poll(s).expect(200)).body.token as string;
    token = (await get(s, `/v1/folders/sync?token=${encodeURIComponent(token)}`).expect(200)).body.token;
    for (let i = 0; i < 3; i++) {
      const { result, statements } = await statementsOf(() => get(s, `/v1/folders/sync?token=${encodeURIComponent(token)}`));
      expect(result.status).toBe(200);
      expect(result.body).toMatchObject({ moreAvailable: false, created: [], updated: [], deleted: [] });
      expect(statements).toHaveLength(2);
      expect(statements[0]).toBe(DATA_VERSION);
      expect(statements[1]).toMatch(HIERARCHY_POLL);
      token = result.body.token;
    }
    // A new folder is seen by the next poll.
    await ctx.store.folders.create(await userId('bob'), { displayName: 'Hot', parentId: null }, ctx.clock.now());
    const changed = await get(s, `/v1/folders/sync?token=${encodeURIComponent(token)}`).expect(200);
    expect(changed.body.created.map((f: { displayName: string }) => f.displayName)).toEqual(['Hot']);
  });
});

describe('the very next request sees every security-relevant change', () => {
  test('block, quarantine and allow a device (admin actions)', async () => {
    const s = await session();
    await poll(s).expect(200);
    expect((await admin.post(`/admin/v1/devices/${s.id}/quarantine`)).status).toBe(200);
    expect((await poll(s)).body.code).toBe('deviceQuarantined');
    expect((await admin.post(`/admin/v1/devices/${s.id}/allow`)).status).toBe(200);
    await poll(s).expect(200);
    expect((await admin.post(`/admin/v1/devices/${s.id}/block`)).status).toBe(200);
    const blocked = await poll(s);
    expect(blocked.status).toBe(403);
    expect(blocked.body.code).toBe('deviceBlocked'); // the sign-in ended too; the device's state says why
  });

  test('a device blocked through the store (the decision alone: the sign-in stays live)', async () => {
    const s = await session('alice', { bound: false });
    await poll(s).expect(200);
    await ctx.store.devices.setAdminDecision(s.id, 'blocked', ctx.clock.now());
    expect((await poll(s)).body.code).toBe('deviceBlocked');
    await ctx.store.devices.setAdminDecision(s.id, null, ctx.clock.now());
    await poll(s).expect(200);
  });

  test('an access rule created, changed and deleted; the tenant default changed', async () => {
    const model = `HotModel-${serial}`;
    const s = await session('alice', { body: { deviceModel: model } });
    await poll(s).expect(200);
    const rule = await admin.post('/admin/v1/device-access-rules', { field: 'deviceModel', match: 'exact', value: model, accessState: 'blocked' });
    expect(rule.status).toBe(201);
    const blocked = await poll(s);
    expect(blocked.body).toMatchObject({ code: 'deviceBlocked', accessStateReason: 'rule' });
    expect((await admin.put(`/admin/v1/device-access-rules/${rule.body.id}`, { field: 'deviceModel', match: 'exact', value: model, accessState: 'quarantined' })).status).toBe(200);
    expect((await poll(s)).body.code).toBe('deviceQuarantined');
    expect((await admin.delete(`/admin/v1/device-access-rules/${rule.body.id}`)).status).toBe(204);
    await poll(s).expect(200);

    expect((await admin.put('/admin/v1/device-access-default', { accessState: 'quarantined' })).status).toBe(200);
    try {
      expect((await poll(s)).body).toMatchObject({ code: 'deviceQuarantined', accessStateReason: 'default' });
    } finally {
      expect((await admin.put('/admin/v1/device-access-default', { accessState: 'allowed' })).status).toBe(200);
    }
    await poll(s).expect(200);
  });

  test('a wipe requested, then acknowledged', async () => {
    const s = await session();
    await poll(s).expect(200);
    expect((await admin.post(`/admin/v1/devices/${s.id}/wipe`)).status).toBe(200);
    expect((await poll(s)).body.code).toBe('wipeRequested');
    const ack = await request(ctx.app).post('/v1/devices/current/wipe-ack').set('Authorization', `Bearer ${s.access}`).set('X-Device-Id', s.deviceId).send({ status: 'ok' });
    expect(ack.status).toBe(200);
    expect((await poll(s)).body.code).toBe('deviceWiped');
  });

  test('a device removed by its user: its record is gone at once', async () => {
    const s = await session('alice', { bound: false }); // an unbound sign-in outlives the device record
    await poll(s).expect(200);
    expect((await request(ctx.app).delete(`/v1/devices/${s.deviceId}`).set('Authorization', `Bearer ${s.access}`).set('X-Device-Id', s.deviceId)).status).toBe(204);
    expect((await poll(s)).body.code).toBe('deviceNotRegistered');
  });

  test('a device removed by an admin', async () => {
    const s = await session('alice', { bound: false });
    await poll(s).expect(200);
    expect((await admin.delete(`/admin/v1/devices/${s.id}`)).status).toBe(204);
    expect((await poll(s)).body.code).toBe('deviceNotRegistered');
  });

  test('a user disabled, and enabled again', async () => {
    const s = await session('bob');
    await poll(s).expect(200);
    await ctx.store.users.setDisabled(await userId('bob'), true, ctx.clock.now());
    try {
      expect((await poll(s)).status).toBe(401);
    } finally {
      await ctx.store.users.setDisabled(await userId('bob'), false, ctx.clock.now());
    }
    await poll(s).expect(200);
  });

  test('a user disabled by raw SQL through the test handle (announced as "everything")', async () => {
    const s = await session('bob');
    await poll(s).expect(200);
    const bobId = await userId('bob');
    ctx.store.db.prepare('UPDATE users SET disabled = 1 WHERE id = ?').run(bobId);
    try {
      expect((await poll(s)).status).toBe(401);
    } finally {
      ctx.store.db.prepare('UPDATE users SET disabled = 0 WHERE id = ?').run(bobId);
    }
    await poll(s).expect(200);
  });

  test('a password change and "revoke sessions" (session version and sign-ins)', async () => {
    const a = await session('bob');
    await poll(a).expect(200);
    await ctx.users.setPassword('bob', PW);
    expect((await poll(a)).status).toBe(401);
    const b = await session('bob');
    await poll(b).expect(200);
    await ctx.users.revokeSessionsOf('bob');
    expect((await poll(b)).status).toBe(401);
  });

  test('the session version alone (bumpSessionVersion)', async () => {
    const s = await session('bob');
    await poll(s).expect(200);
    await ctx.store.users.bumpSessionVersion(await userId('bob'), ctx.clock.now());
    expect((await poll(s)).status).toBe(401);
  });

  test('RFC 7009 revocation, of the refresh token and of the access token', async () => {
    const a = await session('alice', { bound: false });
    await poll(a).expect(200);
    const byRefresh = await request(ctx.app).post('/oauth2/revoke').type('form').send({ token: a.refresh, client_id: CLIENT_ID });
    expect(byRefresh.status).toBe(200);
    expect((await poll(a)).status).toBe(401);

    const b = await session('alice', { bound: false });
    await poll(b).expect(200);
    const byAccess = await request(ctx.app).post('/oauth2/revoke').type('form').send({ token: b.access, client_id: CLIENT_ID });
    expect(byAccess.status).toBe(200);
    expect((await poll(b)).status).toBe(401);
  });

  test('refresh-token reuse ends the sign-in: its current access token is refused at once', async () => {
    const s = await session('alice', { bound: false });
    const refresh = (token: string) => request(ctx.app).post('/oauth2/token').type('form').send({ grant_type: 'refresh_token', client_id: CLIENT_ID, refresh_token: token });
    const rotated = await refresh(s.refresh);
    expect(rotated.status).toBe(200);
    const current = { ...s, access: rotated.body.access_token as string };
    await poll(current).expect(200);
    ctx.clock.advance((ctx.config.refreshRetryGrace + 1) * 1000);
    expect((await refresh(s.refresh)).status).toBe(400); // the rotated token again, after the grace: reuse
    expect((await poll(current)).status).toBe(401);
  });

  test('a write through a second connection to the same file (another process): seen through data_version', async () => {
    const s = await session('alice', { bound: false });
    const bob = await session('bob');
    await poll(s).expect(200);
    await poll(bob).expect(200);
    const other = openSqliteStore(path.join(ctx.dir, 'pigeon.db'));
    try {
      await other.devices.setAdminDecision(s.id, 'blocked', ctx.clock.now());
      expect((await poll(s)).body.code).toBe('deviceBlocked');
      await other.devices.setAdminDecision(s.id, null, ctx.clock.now());
      await poll(s).expect(200);
      // What the admin CLI's revoke-sessions does, from its own process.
      const bobId = await userId('bob');
      const now = ctx.clock.now();
      await other.run(function* (tx) {
        yield* tx.refreshTokens.revokeAllForUser(bobId, 'revoked by admin', now);
        yield* tx.users.bumpSessionVersion(bobId, now);
      });
      expect((await poll(bob)).status).toBe(401);
      await poll(s).expect(200); // everything was dropped, nothing lost
    } finally {
      await other.close();
    }
  });
});

describe('the cache and the feed', () => {
  let aliceId = '';
  beforeAll(async () => {
    aliceId = await userId('alice');
  });
  const uid = () => aliceId;

  test('the feed speaks after the commit, never for a rollback, and at once outside a transaction', async () => {
    const seen: Invalidation[][] = [];
    const off = ctx.store.onInvalidate((c) => seen.push(c));
    const now = ctx.clock.now();
    try {
      await ctx.store.run(function* (tx) {
        yield* tx.users.bumpSessionVersion(uid(), now);
        yield* tx.users.setPassword(uid(), (yield* tx.users.byId(uid()))!.passwordHash!, now);
        expect(seen).toEqual([]); // not before the commit
      });
      expect(seen).toEqual([[{ kind: 'user', userId: uid() }]]); // once per record
      seen.length = 0;
      await expect(
        ctx.store.run(function* (tx) {
          yield* tx.users.bumpSessionVersion(uid(), now);
          throw new Error('rolled back');
        }),
      ).rejects.toThrow('rolled back');
      expect(seen).toEqual([]);
      await ctx.store.users.bumpSessionVersion(uid(), now);
      expect(seen).toEqual([[{ kind: 'user', userId: uid() }]]);
    } finally {
      off();
    }
  });

  test('every write to a cached record reports it', async () => {
    const s = await session('alice');
    const seen: Invalidation[] = [];
    const off = ctx.store.onInvalidate((c) => seen.push(...c));
    const now = ctx.clock.now();
    const device = { kind: 'device', userId: uid(), deviceId: s.deviceId };
    const tenantId = (await ctx.store.users.byId(uid()))!.tenantId;
    try {
      // Reported by the time the write's promise settles (SQLite: before the call returns).
      const expectReport = async (write: () => Promise<unknown>, change: object) => {
        seen.length = 0;
        await write();
        expect(seen).toContainEqual(change);
      };
      const rec = (await ctx.store.devices.byId(s.id))!;
      await expectReport(() => ctx.store.devices.updateDescription(s.id, rec, now), device);
      await expectReport(() => ctx.store.devices.setAdminDecision(s.id, null, now), device);
      await expectReport(() => ctx.store.devices.setWipe(s.id, 'none', {}, now), device);
      await expectReport(() => ctx.store.devices.bumpEpoch(s.id, now), device);
      await expectReport(() => ctx.store.devices.touch(s.id, now, now), device);
      const family = { kind: 'signIn', familyId: 'family-hot-1' };
      await expectReport(
        () => ctx.store.refreshTokens.insert({ id: 'rt-hot-1', familyId: 'family-hot-1', userId: uid(), deviceId: s.deviceId, clientId: CLIENT_ID, scope: 'mail', tokenHash: Buffer.from('hot-1'), createdAt: now, expiresAt: now + 1000 }),
        family,
      );
      await expectReport(() => ctx.store.refreshTokens.insert({ id: 'rt-hot-2', familyId: 'family-hot-1', userId: uid(), deviceId: s.deviceId, clientId: CLIENT_ID, scope: 'mail', tokenHash: Buffer.from('hot-2'), createdAt: now, expiresAt: now + 1000 }), family);
      await expectReport(async () => expect(await ctx.store.refreshTokens.markRotated('rt-hot-1', 'rt-hot-2', now)).toBe(true), family);
      await expectReport(async () => expect(await ctx.store.refreshTokens.revokeFamily('family-hot-1', 'test', now)).toBe(2), family); // both rows: the rotated one too
      await ctx.store.refreshTokens.insert({ id: 'rt-hot-3', familyId: 'family-hot-3', userId: uid(), deviceId: s.deviceId, clientId: CLIENT_ID, scope: 'mail', tokenHash: Buffer.from('hot-3'), createdAt: now, expiresAt: now + 1000 });
      await expectReport(() => ctx.store.refreshTokens.revokeForDevice(uid(), s.deviceId, 'test', now), { kind: 'signIn', familyId: 'family-hot-3' });
      await ctx.store.refreshTokens.insert({ id: 'rt-hot-4', familyId: 'family-hot-4', userId: uid(), deviceId: null, clientId: CLIENT_ID, scope: 'mail', tokenHash: Buffer.from('hot-4'), createdAt: now, expiresAt: now + 1000 });
      await expectReport(() => ctx.store.refreshTokens.revokeAllForUser(uid(), 'test', now), { kind: 'signIn', familyId: 'family-hot-4' });
      const user = { kind: 'user', userId: uid() };
      const passwordHash = (await ctx.store.users.byId(uid()))!.passwordHash!;
      await expectReport(() => ctx.store.users.setPassword(uid(), passwordHash, now), user);
      await expectReport(() => ctx.store.users.bumpSessionVersion(uid(), now), user);
      await expectReport(() => ctx.store.users.setDisabled(uid(), false, now), user);
      const tenant = { kind: 'tenantAccess', tenantId };
      let ruleId = '';
      await expectReport(async () => (ruleId = (await ctx.store.deviceAccess.createRule(tenantId, { field: 'deviceModel', match: 'exact', value: 'x', accessState: 'allowed', description: '' }, now)).id), tenant);
      await expectReport(() => ctx.store.deviceAccess.updateRule(tenantId, ruleId, { field: 'deviceModel', match: 'exact', value: 'y', accessState: 'allowed', description: '' }, now), tenant);
      await expectReport(() => ctx.store.deviceAccess.deleteRule(tenantId, ruleId), tenant);
      await expectReport(() => ctx.store.deviceAccess.setDefaultState(tenantId, 'allowed', now), tenant);
      await expectReport(() => ctx.store.devices.delete(s.id), device);
      let created = '';
      await expectReport(async () => (created = (await ctx.store.devices.create(uid(), s.deviceId, rec, now)).id), device);
      await ctx.store.devices.delete(created);
    } finally {
      off();
    }
  });

  test('a sign-in head is kept with its expiry, checked against the caller\'s clock on every use', async () => {
    const cached = withHotCache(ctx.store);
    const now = ctx.clock.now();
    await ctx.store.refreshTokens.insert({ id: 'rt-exp-1', familyId: 'family-exp', userId: uid(), deviceId: null, clientId: CLIENT_ID, scope: 'mail', tokenHash: Buffer.from('exp-1'), createdAt: now, expiresAt: now + 1000 });
    expect(await cached.refreshTokens.liveHead(uid(), 'family-exp', now)).toMatchObject({ deviceId: null });
    expect(await cached.refreshTokens.liveHead(uid(), 'family-exp', now + 999)).toBeDefined();
    expect(await cached.refreshTokens.liveHead(uid(), 'family-exp', now + 1000)).toBeUndefined();
    expect(await cached.refreshTokens.liveHead(uid(), 'family-exp', now)).toBeDefined(); // a clock set back: live again, as in SQL
    expect(cached.hotCache.stats()).toMatchObject({ misses: 1, hits: 3 });
  });

  test('inside a transaction nothing is served from or kept in the cache', async () => {
    const cached = withHotCache(ctx.store);
    expect((await cached.users.byId(uid()))!.disabled).toBe(false);
    const now = ctx.clock.now();
    await expect(
      cached.run(function* (tx) {
        yield* tx.users.setDisabled(uid(), true, now);
        expect((yield* tx.users.byId(uid()))!.disabled).toBe(true); // the unit's own write
        throw new Error('rolled back');
      }),
    ).rejects.toThrow('rolled back');
    expect((await cached.users.byId(uid()))!.disabled).toBe(false);
  });

  test('cached records are frozen: one caller cannot change what the next one sees', async () => {
    const cached = withHotCache(ctx.store);
    const user = (await cached.users.byId(uid()))!;
    expect(Object.isFrozen(user)).toBe(true);
    expect(await cached.users.byId(uid())).toBe(user);
  });

  test('memory is bounded: each kind forgets its least recently used entries beyond its cap', async () => {
    const cached = withHotCache(ctx.store, { devices: 2, users: 1 });
    const ids = [await session('alice'), await session('alice'), await session('alice')].map((s) => s.deviceId);
    for (const id of ids) await cached.devices.byUserAndDeviceId(uid(), id);
    await cached.devices.byUserAndDeviceId(uid(), 'unregistered-device-0001'); // "none" is an entry too
    await cached.users.byId(uid());
    await cached.users.byId(await userId('bob'));
    expect(cached.hotCache.stats().size).toMatchObject({ devices: 2, users: 1 });
  });

  test('another connection\'s commit drops every entry at the next check', async () => {
    const cached = withHotCache(ctx.store);
    await cached.users.byId(uid());
    const other = openSqliteStore(path.join(ctx.dir, 'pigeon.db'));
    try {
      cached.hotCache.beginRequest();
      await cached.users.byId(uid());
      expect(cached.hotCache.stats()).toMatchObject({ hits: 1, versionMoves: 0 });
      await other.users.setDisabled(uid(), true, ctx.clock.now());
      cached.hotCache.beginRequest();
      expect((await cached.users.byId(uid()))!.disabled).toBe(true);
      expect(cached.hotCache.stats()).toMatchObject({ hits: 1, versionMoves: 1 });
    } finally {
      await other.users.setDisabled(uid(), false, ctx.clock.now());
      await other.close();
    }
  });
});
