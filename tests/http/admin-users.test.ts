/**
 * The admin API's users, tenant and regions (issue 21): list with q and paging, create (with a password, without
 * one, the CLI's username and password rules as 400s), read one with its MFA state, disable (the user's live token
 * refused at once, sign-in refused, sessions ended) and enable, reset password (given or generated and answered once,
 * every session ended, the new password works, the old does not), revoke sessions, reset MFA; each audited; another
 * tenant's user is 404 exactly as one that exists nowhere; an administrator cannot lock themselves out; a user's
 * token is 403 everywhere here; the tenant and the regions read.
 */
import { buildTestApp, signIn, passwordGrant, asCaller, CLIENT_ID, type TestContext } from '../helpers/testApp';
import { expectToMatchSpec } from '../helpers/openapi';
import request from 'supertest';
import { createAdminService } from '../../server/admin/service';

let ctx: TestContext;
const PW = 'password-for-user-admin';
let root: { id: string; token: string };
let otherTenantUser: string;
const admin = () => asCaller(ctx, { access: root.token });
const U = '/admin/v1/users';

beforeAll(async () => {
  ctx = await buildTestApp();
  ctx.secrets.add(PW);
  const r = await ctx.users.addUser({ username: 'root', password: PW, role: 'admin', email: 'root@users.example' });
  for (const name of ['alice', 'bob', 'carla']) await ctx.users.addUser({ username: name, password: PW, role: 'user', email: `${name}@users.example`, displayName: `${name[0]!.toUpperCase()}${name.slice(1)} Example` });
  const other = await ctx.store.run((tx) => tx.tenants.create('Elsewhere', ctx.clock.now()));
  otherTenantUser = (await ctx.users.addUser({ username: 'outsider', password: PW, role: 'user', tenantId: other.id })).id;
  root = { id: r.id, token: (await signIn(ctx, 'root', PW)).access_token };
});
afterAll(() => ctx.close());

const auditActions = async () => ((await admin().get('/admin/v1/audit?limit=500')).body.entries as Array<{ action: string; targetId: string; details: Record<string, unknown> }>);

describe('list and read', () => {
  test('the tenant\'s users only, by username; q; paging with total and nextCursor', async () => {
    const all = await admin().get(U);
    expect(all.status).toBe(200);
    expectToMatchSpec(all, 'get', U);
    expect(all.body.users.map((u: { username: string }) => u.username)).toEqual(['alice', 'bob', 'carla', 'root']);
    expect(all.body.total).toBe(4);
    expect(all.body.nextCursor).toBeNull();
    expect(JSON.stringify(all.body)).not.toMatch(/passwordHash|sessionVersion|scrypt/);
    expect(JSON.stringify(all.body)).not.toContain(otherTenantUser);

    const q = await admin().get(`${U}?q=EXAMPLE`); // display names and addresses
    expect(q.body.total).toBe(4);
    expect((await admin().get(`${U}?q=carla`)).body.users.map((u: { username: string }) => u.username)).toEqual(['carla']);
    expect((await admin().get(`${U}?q=outsider`)).body).toEqual({ users: [], total: 0, nextCursor: null });

    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res = await admin().get(`${U}?limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      expect(res.status).toBe(200);
      expect(res.body.total).toBe(4);
      seen.push(...res.body.users.map((u: { username: string }) => u.username));
      cursor = res.body.nextCursor;
      pages++;
    } while (cursor && pages < 5);
    expect(seen).toEqual(['alice', 'bob', 'carla', 'root']);
    expect(pages).toBe(2);
    for (const bad of ['limit=0', 'limit=501', 'cursor=', 'q=a&q=b', 'role=admin']) {
      const res = await admin().get(`${U}?${bad}`);
      expect({ bad, status: res.status }).toEqual({ bad, status: 400 });
    }
  });

  test('one user, with MFA state; another tenant\'s user is 404 exactly as one that exists nowhere', async () => {
    const alice = (await ctx.store.users.byUsername('alice'))!;
    const res = await admin().get(`${U}/${alice.id}`);
    expect(res.status).toBe(200);
    expectToMatchSpec(res, 'get', `${U}/{id}`);
    expect(res.body).toMatchObject({ id: alice.id, username: 'alice', email: 'alice@users.example', role: 'user', disabled: false, hasPassword: true, mfa: { enrolled: false, enrolledAt: null, recoveryCodesLeft: 0 } });
    const foreign = await admin().get(`${U}/${otherTenantUser}`);
    const nowhere = await admin().get(`${U}/NoSuchUser000000`);
    expect({ status: foreign.status, code: foreign.body.code }).toEqual({ status: 404, code: 'notFound' });
    expect({ status: nowhere.status, code: nowhere.body.code, detail: nowhere.body.detail }).toEqual({ status: 404, code: 'notFound', detail: foreign.body.detail });
    expectToMatchSpec(foreign, 'get', `${U}/{id}`);
  });
});

describe('create', () => {
  test('with a password: the user signs in, has a mailbox, is audited', async () => {
    const res = await admin().post(U, { username: 'dora', email: 'dora@users.example', displayName: 'Dora Explorer', role: 'user', password: 'dora-initial-pw' });
    ctx.secrets.add('dora-initial-pw');
    expect(res.status).toBe(201);
    expectToMatchSpec(res, 'post', U);
    expect(res.body).toMatchObject({ username: 'dora', email: 'dora@users.example', displayName: 'Dora Explorer', role: 'user', disabled: false, hasPassword: true });
    const stored = (await ctx.store.users.byId(res.body.id))!;
    expect(stored.tenantId).toBe((await ctx.store.users.byId(root.id))!.tenantId);
    await signIn(ctx, 'dora', 'dora-initial-pw');
    expect((await auditActions()).find((e) => e.action === 'user.create' && e.targetId === res.body.id)?.details).toEqual({ username: 'dora', role: 'user', password: true });
    expect(JSON.stringify(await auditActions())).not.toContain('dora-initial-pw');
  });

  test('a password of exactly 8 characters, 5 of them emoji (13 UTF-16 units), is taken and signs in', async () => {
    const res = await admin().post(U, { username: 'gina', role: 'user', password: '\u{1F600}\u{1F601}\u{1F602}\u{1F603}🐦bir' });
    expect(res.status).toBe(201);
    expect((await passwordGrant(ctx, res.body.username, '\u{1F600}\u{1F601}\u{1F602}\u{1F603}🐦bir')).status).toBe(200);
  });

  test('without a password: an account that cannot sign in with one until reset; role admin; defaults', async () => {
    const res = await admin().post(U, { username: 'ellen@users.example', role: 'admin' });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ username: 'ellen@users.example', email: 'ellen@users.example', displayName: 'ellen@users.example', role: 'admin', hasPassword: false });
    ctx.secrets.add('anything-at-all');
    expect((await passwordGrant(ctx, 'ellen@users.example', 'anything-at-all')).status).toBe(400);
  });

  test.each([
    [{ username: 'has space', password: 'long-enough-pw' }, 'username'],
    [{ username: 'x'.repeat(129), password: 'long-enough-pw' }, 'username'],
    [{ username: 'alice', password: 'long-enough-pw' }, 'username'],
    [{ username: 'frank', password: 'short' }, 'password'],
    // 5 characters in 8 UTF-16 units (found by the fuzz suite): the policy counts characters, as the document does
    [{ username: 'frank', password: '\u0000\u{10000}\u0000\u{10000}\u{10000}' }, 'password'],
    [{ username: 'frank', password: '\u{1F600}'.repeat(1025) }, 'password'],
    [{ username: 'frank', password: 'long-enough-pw', role: 'owner' }, 'role'],
    [{ username: 'frank', email: 'not-an-address' }, 'email'],
    [{ username: 'frank', tenantId: 'x' }, 'tenantId'],
    [{}, 'username'],
  ])('%j → 400 naming %s', async (body, field) => {
    const res = await admin().post(U, body);
    expect({ status: res.status, code: res.body.code }).toEqual({ status: 400, code: 'invalidRequest' });
    expect(JSON.stringify(res.body)).toContain(field);
    expectToMatchSpec(res, 'post', U);
  });
});

describe('the lifecycle', () => {
  test('disable: the live token is refused at once, sign-in and refresh fail; enable lets a new sign-in in', async () => {
    const bob = (await ctx.store.users.byUsername('bob'))!;
    const session = await signIn(ctx, 'bob', PW);
    const bobApi = asCaller(ctx, { access: session.access_token });
    expect((await bobApi.get('/v1/session')).status).toBe(200);

    const res = await admin().post(`${U}/${bob.id}/disable`);
    expect(res.status).toBe(200);
    expectToMatchSpec(res, 'post', `${U}/{id}/disable`);
    expect(res.body).toMatchObject({ id: bob.id, disabled: true });
    expect((await bobApi.get('/v1/session')).status).toBe(401);
    expect((await passwordGrant(ctx, 'bob', PW)).status).toBe(400);
    const refresh = await request(ctx.app).post('/oauth2/token').type('form').send({ grant_type: 'refresh_token', client_id: CLIENT_ID, refresh_token: session.refresh_token });
    expect(refresh.status).toBe(400);

    const enabled = await admin().post(`${U}/${bob.id}/enable`);
    expect(enabled.body).toMatchObject({ id: bob.id, disabled: false });
    // The sessions ended with the disable stay ended; a new sign-in works.
    const again = await request(ctx.app).post('/oauth2/token').type('form').send({ grant_type: 'refresh_token', client_id: CLIENT_ID, refresh_token: session.refresh_token });
    expect(again.status).toBe(400);
    await signIn(ctx, 'bob', PW);
    const actions = (await auditActions()).filter((e) => e.targetId === bob.id).map((e) => e.action);
    expect(actions).toEqual(expect.arrayContaining(['user.disable', 'user.enable']));
  });

  test('reset-password with a password: every session ends, the old password fails, the new one works', async () => {
    const carla = (await ctx.store.users.byUsername('carla'))!;
    const s1 = await signIn(ctx, 'carla', PW);
    const s2 = await signIn(ctx, 'carla', PW);
    const res = await admin().post(`${U}/${carla.id}/reset-password`, { password: 'carla-new-password' });
    ctx.secrets.add('carla-new-password');
    expect(res.status).toBe(200);
    expectToMatchSpec(res, 'post', `${U}/{id}/reset-password`);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body).toEqual({ revokedSessions: 2 });
    for (const s of [s1, s2]) expect((await asCaller(ctx, { access: s.access_token }).get('/v1/session')).status).toBe(401);
    expect((await passwordGrant(ctx, 'carla', PW)).status).toBe(400);
    await signIn(ctx, 'carla', 'carla-new-password');
    const entry = (await auditActions()).find((e) => e.action === 'user.resetPassword' && e.targetId === carla.id);
    expect(entry?.details).toEqual({ username: 'carla', generated: false });
  });

  test('reset-password without one: a generated password, answered once, that signs in', async () => {
    const ellen = (await ctx.store.users.byUsername('ellen@users.example'))!;
    const res = await admin().post(`${U}/${ellen.id}/reset-password`);
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body.password).toMatch(/^[A-Za-z0-9_-]{20}$/);
    ctx.secrets.add(res.body.password);
    await signIn(ctx, 'ellen@users.example', res.body.password);
    expect((await admin().get(`${U}/${ellen.id}`)).body).not.toHaveProperty('password');
    expect((await admin().get(`${U}/${ellen.id}`)).body.hasPassword).toBe(true);
    expect(JSON.stringify(await auditActions())).not.toContain(res.body.password);
  });

  test('reset-password: the policy as the CLI\'s (400), unknown members refused', async () => {
    const carla = (await ctx.store.users.byUsername('carla'))!;
    for (const body of [{ password: 'short' }, { password: 12345678 }, { password: 'long-enough-pw', userId: carla.id }]) {
      const res = await admin().post(`${U}/${carla.id}/reset-password`, body);
      expect({ body, status: res.status, code: res.body.code }).toEqual({ body, status: 400, code: 'invalidRequest' });
    }
  });

  test('revoke-sessions ends every session (tokens refused at once); audited', async () => {
    const alice = (await ctx.store.users.byUsername('alice'))!;
    const s = await signIn(ctx, 'alice', PW);
    expect((await asCaller(ctx, { access: s.access_token }).get('/v1/session')).status).toBe(200);
    const res = await admin().post(`${U}/${alice.id}/revoke-sessions`);
    expect(res.status).toBe(200);
    expectToMatchSpec(res, 'post', `${U}/{id}/revoke-sessions`);
    expect(res.body.revokedSessions).toBeGreaterThanOrEqual(1);
    expect((await asCaller(ctx, { access: s.access_token }).get('/v1/session')).status).toBe(401);
    await signIn(ctx, 'alice', PW); // the password still works
    expect((await auditActions()).some((e) => e.action === 'user.revokeSessions' && e.targetId === alice.id)).toBe(true);
  });

  test('reset-mfa removes the enrolment (and says whether there was one)', async () => {
    const alice = (await ctx.store.users.byUsername('alice'))!;
    await ctx.store.run((tx) => tx.mfa.enroll(alice.id, 'sealed-secret-for-test', ['h1', 'h2'], ctx.clock.now()));
    expect((await admin().get(`${U}/${alice.id}`)).body.mfa).toMatchObject({ enrolled: true, recoveryCodesLeft: 2 });
    const res = await admin().post(`${U}/${alice.id}/reset-mfa`);
    expect(res.status).toBe(200);
    expectToMatchSpec(res, 'post', `${U}/{id}/reset-mfa`);
    expect(res.body).toEqual({ removed: true });
    expect(await ctx.store.mfa.get(alice.id)).toBeUndefined();
    expect((await admin().post(`${U}/${alice.id}/reset-mfa`)).body).toEqual({ removed: false });
    expect((await auditActions()).filter((e) => e.action === 'user.resetMfa' && e.targetId === alice.id).map((e) => e.details.enrolled)).toEqual([false, true]);
  });

  test("an administrator cannot disable, reset or revoke their own account here (400, nothing changed)", async () => {
    for (const action of ['disable', 'reset-password', 'revoke-sessions', 'reset-mfa']) {
      const res = await admin().post(`${U}/${root.id}/${action}`);
      expect({ action, status: res.status, code: res.body.code }).toEqual({ action, status: 400, code: 'invalidRequest' });
    }
    expect((await admin().get(`${U}/${root.id}`)).status).toBe(200); // still signed in
  });
});

describe('confinement and roles', () => {
  test.each(['disable', 'enable', 'reset-password', 'revoke-sessions', 'reset-mfa'])("%s of another tenant's user: 404 as one that exists nowhere, nothing changed", async (action) => {
    const before = (await ctx.store.users.byId(otherTenantUser))!;
    const foreign = await admin().post(`${U}/${otherTenantUser}/${action}`);
    const nowhere = await admin().post(`${U}/NoSuchUser000000/${action}`);
    expect({ status: foreign.status, code: foreign.body.code }).toEqual({ status: 404, code: 'notFound' });
    expect({ status: nowhere.status, code: nowhere.body.code, detail: nowhere.body.detail }).toEqual({ status: 404, code: 'notFound', detail: foreign.body.detail });
    expect(await ctx.store.users.byId(otherTenantUser)).toEqual(before);
  });

  test("a user's token is 403 on every users, tenant and regions operation; nothing changed", async () => {
    const alice = (await ctx.store.users.byUsername('alice'))!;
    const user = asCaller(ctx, { access: (await signIn(ctx, 'alice', PW)).access_token });
    const usersBefore = JSON.stringify(await ctx.store.users.list());
    const calls = [
      user.get(U),
      user.post(U, { username: 'mallory', password: 'mallory-password' }),
      user.get(`${U}/${alice.id}`),
      ...['disable', 'enable', 'reset-password', 'revoke-sessions', 'reset-mfa'].map((a) => user.post(`${U}/${root.id}/${a}`)),
      user.get('/admin/v1/tenant'),
      user.get('/admin/v1/regions'),
    ];
    for (const res of await Promise.all(calls)) expect({ status: res.status, code: res.body.code }).toEqual({ status: 403, code: 'forbidden' });
    expect(JSON.stringify(await ctx.store.users.list())).toBe(usersBefore);
  });
});

describe('the audit log pages by cursor too', () => {
  test('nextCursor is next as a string; cursor continues as before does; a bad cursor is 400', async () => {
    const first = await admin().get('/admin/v1/audit?limit=2');
    expect(first.status).toBe(200);
    expectToMatchSpec(first, 'get', '/admin/v1/audit');
    expect(first.body.nextCursor).toBe(String(first.body.next));
    const byCursor = await admin().get(`/admin/v1/audit?limit=2&cursor=${first.body.nextCursor}`);
    const byBefore = await admin().get(`/admin/v1/audit?limit=2&before=${first.body.next}`);
    expect(byCursor.body).toEqual(byBefore.body);
    expect(byCursor.body.entries[0].seq).toBeLessThan(first.body.next);
    const all = await admin().get('/admin/v1/audit?limit=500');
    expect(all.body).toMatchObject({ next: null, nextCursor: null });
    for (const bad of ['cursor=abc', 'cursor=0', 'cursor=', 'cursor=-1']) {
      const res = await admin().get(`/admin/v1/audit?${bad}`);
      expect({ bad, status: res.status }).toEqual({ bad, status: 400 });
    }
  });
});

describe('tenant and regions', () => {
  test('GET /admin/v1/tenant: the admin\'s own tenant', async () => {
    const tenantId = (await ctx.store.users.byId(root.id))!.tenantId;
    const t = (await ctx.store.tenants.get(tenantId))!;
    const res = await admin().get('/admin/v1/tenant');
    expect(res.status).toBe(200);
    expectToMatchSpec(res, 'get', '/admin/v1/tenant');
    expect(res.body).toEqual({ id: t.id, name: t.name, region: t.region, createdAt: new Date(t.createdAt).toISOString() });
  });

  test('GET /admin/v1/regions: the directory, the tenant\'s and the node\'s region marked', async () => {
    const res = await admin().get('/admin/v1/regions');
    expect(res.status).toBe(200);
    expectToMatchSpec(res, 'get', '/admin/v1/regions');
    const tenantId = (await ctx.store.users.byId(root.id))!.tenantId;
    const region = (await ctx.store.tenants.get(tenantId))!.region;
    expect(res.body.tenantRegion).toBe(region);
    expect(res.body.regions).toContainEqual(expect.objectContaining({ name: region, tenant: true }));
  });

  test("with the node's regions (server/regions.ts) the whole directory is told, sorted, the node's and the tenant's marked", async () => {
    const tenantId = (await ctx.store.users.byId(root.id))!.tenantId;
    const own = (await ctx.store.tenants.get(tenantId))!.region;
    const directory = { [own]: 'https://own.example', 'a-other': 'https://a.example', 'z-other': 'https://z.example' };
    const service = createAdminService({ store: ctx.store, clock: ctx.clock, audit: ctx.built.devices.audit, regions: { region: own, baseUrl: 'https://own.example', directory } });
    expect(await service.regions(tenantId)).toEqual({
      tenantRegion: own,
      nodeRegion: own,
      regions: Object.keys(directory)
        .sort()
        .map((name) => ({ name, baseUrl: directory[name], tenant: name === own, node: name === own })),
    });
  });
});
