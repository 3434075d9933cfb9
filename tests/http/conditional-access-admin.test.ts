/**
 * Conditional access over HTTP (issue 16): the admin API (policies, named locations, groups, approved client apps:
 * validation, ETags and If-Match, audit, roles, tenant isolation), enforcement at the password grant and on /v1
 * calls (continuous evaluation), report-only results in the sign-in log (filters, paging), What If agreeing with
 * real sign-ins, an admin's word on user risk, and failed passwords raising sign-in risk.
 */
import fc from 'fast-check';
import request from 'supertest';
import { buildTestApp, CLIENT_ID, asCaller, type TestContext } from '../helpers/testApp';

let ctx: TestContext;
const PW = 'password-for-conditional-access';
const OTHER_CLIENT = 'pigeon-cli';
/** What every sign-in of this file sends: a platform the server reads as iOS (no registered device to say so). */
const USER_AGENT = 'PigeonMail/5.0 (iPhone; iOS 19.1)';
const UA_PLATFORM = 'ios';
let serial = 0;
const newDeviceId = (tag: string) => `${tag}-${String(++serial).padStart(4, '0')}-abcdefghijkl`;

const POLICIES = '/admin/v1/conditional-access/policies';
const LOCATIONS = '/admin/v1/named-locations';
const GROUPS = '/admin/v1/groups';
const APP_POLICIES = '/admin/v1/app-protection-policies';
const APPROVED = '/admin/v1/approved-client-apps';
const WHAT_IF = '/admin/v1/conditional-access/what-if';

const as = (s: { access: string; deviceId?: string }) => asCaller(ctx, s, { 'User-Agent': USER_AGENT });

/** The password grant as an app sends it (fixed User-Agent); answers the raw response. */
const grant = (username: string, extra: Record<string, string> = {}, password = PW) => {
  ctx.secrets.add(password); // the log scan at close() makes sure no password was logged
  // Sign-ins in one millisecond have no order in the log (newest first by time, then by id): keep them apart.
  ctx.clock.advance(1);
  return request(ctx.app)
    .post('/oauth2/token')
    .type('form')
    .set('User-Agent', USER_AGENT)
    .send({ grant_type: 'password', client_id: CLIENT_ID, username, password, ...extra });
};

async function session(username: string, deviceId?: string) {
  const res = await grant(username, deviceId ? { device_id: deviceId } : {});
  if (res.status !== 200) throw new Error(`sign-in of ${username} failed: ${res.status} ${JSON.stringify(res.body)}`);
  return { access: res.body.access_token as string, refresh: res.body.refresh_token as string, deviceId };
}

/** Signs in on a new device and registers it, so /v1 sync calls pass the device gate. */
async function onDevice(username: string) {
  const s = await session(username, newDeviceId(username));
  await as(s).post('/v1/devices', { friendlyName: `${username}'s phone`, deviceType: 'iPhone', deviceOS: 'iOS 19.1', clientVersion: '5.0' }).expect(201);
  return s;
}

let root: { access: string };
const admin = () => as(root);
const ids: Record<string, string> = {};

const blockAll = (id: string, state: 'on' | 'off' | 'reportOnly' = 'on', extra: object = {}) => ({
  id,
  name: `Block ${id}`,
  state,
  assignments: { users: { include: 'all', exclude: { users: [ids.root] } }, ...extra },
  outcome: { block: true },
});

const etagOf = (res: { headers: Record<string, string> }) => Number(JSON.parse(res.headers.etag!));

/** Puts the tenant's document back to empty (policies before the locations they name). */
async function resetAccess() {
  for (const [path, list] of [[POLICIES, 'policies'], [APP_POLICIES, 'appProtectionPolicies'], [LOCATIONS, 'namedLocations'], [GROUPS, 'groups']] as const) {
    const res = await admin().get(path).expect(200);
    for (const entry of res.body[list] as Array<{ id: string }>) await admin().delete(`${path}/${encodeURIComponent(entry.id)}`).expect(204);
  }
  await admin().put(APPROVED, { clientIds: [] }).expect(200);
}

async function auditActions(since: number) {
  const res = await admin().get('/admin/v1/audit?limit=500').expect(200);
  return (res.body.entries as Array<{ seq: number; action: string; targetId: string | null }>).filter((e) => e.seq > since).reverse();
}
const lastAuditSeq = async () => ((await admin().get('/admin/v1/audit?limit=1').expect(200)).body.entries[0]?.seq as number | undefined) ?? 0;

async function signInsOf(query: string) {
  const res = await admin().get(`/admin/v1/sign-ins?${query}`);
  expect(res.status).toBe(200);
  return res.body as { signIns: Array<Record<string, any>>; next?: string };
}

/** The address this test's requests come from, as the server sees it (read from the sign-in log). */
let clientIp: string;

beforeAll(async () => {
  ctx = await buildTestApp({
    accessTokenTtl: 86_400,
    // Refused sign-ins count as failed password grants for the throttles; this file makes hundreds on purpose.
    loginFailuresPerUser: 10_000,
    loginFailuresPerUserGlobal: 100_000,
    tokenRequestsPerIp: 1_000_000,
  });
  expect(ctx.config.oauthClients).toEqual(expect.arrayContaining([CLIENT_ID, OTHER_CLIENT]));
  for (const [username, role] of [
    ['root', 'admin'],
    ['alice', 'user'],
    ['bob', 'user'],
    ['carol', 'user'],
    ['dave', 'user'],
    ['hank', 'user'],
    ['ivy', 'user'],
  ] as const) {
    ids[username] = (await ctx.users.addUser({ username, password: PW, role })).id;
  }
  root = await session('root');
  const first = await signInsOf(`userId=${ids.root}&limit=1`);
  clientIp = first.signIns[0]!.ip;
  expect(clientIp).toMatch(/^(::ffff:)?127\.0\.0\.1$/);
});
afterAll(() => ctx.close());

describe('the admin API', () => {
  beforeEach(resetAccess);

  test('policies: create, read, replace, delete; ETag grows; If-Match; 404; duplicates; every change audited', async () => {
    const since = await lastAuditSeq();
    const policy = {
      id: 'require-mfa',
      name: 'Require MFA for everyone',
      state: 'off',
      assignments: { users: { include: 'all' }, clientApps: { include: [CLIENT_ID] } },
      outcome: { grant: { controls: ['mfa'], operator: 'and' } },
    };
    const created = await admin().post(POLICIES, policy);
    expect(created.status).toBe(201);
    expect(created.body).toEqual(policy);
    expect(created.headers.location).toBe(`${POLICIES}/require-mfa`);
    const v1 = etagOf(created);

    const list = await admin().get(POLICIES);
    expect(list.body.policies).toEqual([policy]);
    expect(etagOf(list)).toBe(v1);
    const one = await admin().get(`${POLICIES}/require-mfa`);
    expect(one.status).toBe(200);
    expect(one.body).toEqual(policy);
    expect(one.headers.etag).toBe(`"${v1}"`);

    // A second entry with the same id is a bad document (400, field `id`), not a race.
    const duplicate = await admin().post(POLICIES, policy);
    expect(duplicate.status).toBe(400);
    expect(duplicate.body.errors).toEqual([expect.objectContaining({ field: 'id' })]);
    expect((await admin().get(`${POLICIES}/nope`)).status).toBe(404);
    expect((await admin().put(`${POLICIES}/nope`, { ...policy, id: 'nope' })).status).toBe(404);
    expect((await admin().delete(`${POLICIES}/nope`)).status).toBe(404);

    // PUT takes the id from the path; the state changes.
    const { id: _id, ...withoutId } = policy;
    const replaced = await admin().put(`${POLICIES}/require-mfa`, { ...withoutId, state: 'reportOnly' }).set('If-Match', `"${v1}"`);
    expect(replaced.status).toBe(200);
    expect(replaced.body.state).toBe('reportOnly');
    const v2 = etagOf(replaced);
    expect(v2).toBeGreaterThan(v1);

    const stale = await admin().put(`${POLICIES}/require-mfa`, { ...policy, state: 'on' }).set('If-Match', `"${v1}"`);
    expect(stale.status).toBe(412);
    expect(stale.body.code).toBe('conflict');
    expect((await admin().delete(`${POLICIES}/require-mfa`).set('If-Match', `"${v1}"`)).status).toBe(412);
    expect((await admin().get(`${POLICIES}/require-mfa`)).body.state).toBe('reportOnly');
    // A tag that names no version can only fail to match (RFC 9110).
    expect((await admin().put(`${POLICIES}/require-mfa`, policy).set('If-Match', 'garbage')).status).toBe(412);

    const deleted = await admin().delete(`${POLICIES}/require-mfa`).set('If-Match', `"${v2}"`);
    expect(deleted.status).toBe(204);
    expect(etagOf(deleted)).toBeGreaterThan(v2);
    expect((await admin().get(`${POLICIES}/require-mfa`)).status).toBe(404);

    // Only the three changes that landed are in the audit log, in order.
    expect((await auditActions(since)).map((e) => [e.action, e.targetId])).toEqual([
      ['accessPolicy.create', 'require-mfa'],
      ['accessPolicy.update', 'require-mfa'],
      ['accessPolicy.delete', 'require-mfa'],
    ]);
  });

  test('bad documents are 400 with field errors and change nothing', async () => {
    const before = etagOf(await admin().get(POLICIES));
    const since = await lastAuditSeq();
    const bad = await admin().post(POLICIES, { id: 'bad', name: 'Bad', state: 'maybe', assignments: { users: { include: 'all' } }, outcome: { block: true, grant: { controls: ['mfa'], operator: 'and' } } });
    expect(bad.status).toBe(400);
    expect(bad.body.code).toBe('invalidRequest');
    const fields = (bad.body.errors as Array<{ field: string }>).map((e) => e.field);
    expect(fields).toEqual(expect.arrayContaining(['state', 'outcome']));

    const missingLocation = await admin().post(POLICIES, blockAll('block-nowhere', 'on', { locations: { include: ['no-such-place'] } }));
    expect(missingLocation.status).toBe(400);
    expect(missingLocation.body.errors).toEqual([expect.objectContaining({ field: expect.stringMatching(/assignments\.locations\.include\.0$/), message: expect.stringContaining('no-such-place') })]);

    const badRange = await admin().post(LOCATIONS, { id: 'office', name: 'Office', trusted: true, ranges: ['10.0.0.0/8', '300.1.2.3/24'] });
    expect(badRange.status).toBe(400);
    expect(badRange.body.errors.map((e: { field: string }) => e.field)).toEqual(['ranges.1']);

    const badApp = await admin().post(APP_POLICIES, { id: 'a', name: 'A', apps: 'all', pinRequired: false, blockCopyToUnmanagedApps: false, blockSaveAs: false, notificationContent: 'full', offlineGracePeriodMinutes: 2880, offlineWipeAfterDays: 1 });
    expect(badApp.status).toBe(400);
    expect(badApp.body.errors.map((e: { field: string }) => e.field)).toEqual(['offlineWipeAfterDays']);

    expect((await admin().post(GROUPS, { id: 'g', name: 'G', members: 'everyone' })).status).toBe(400);
    expect((await admin().put(APPROVED, { clientIds: [''] })).status).toBe(400);
    // A body whose id differs from the path's.
    expect((await admin().put(`${POLICIES}/x`, blockAll('y'))).status).toBe(400);

    expect(etagOf(await admin().get(POLICIES))).toBe(before);
    expect(await auditActions(since)).toEqual([]);
  });

  test('named locations, groups and approved apps; a location still in use cannot be deleted', async () => {
    const since = await lastAuditSeq();
    const office = { id: 'office', name: 'Office', trusted: true, ranges: ['192.0.2.0/24', '2001:db8::/32'] };
    const created = await admin().post(LOCATIONS, office);
    expect(created.status).toBe(201);
    expect(created.body).toEqual(office);
    expect((await admin().post(LOCATIONS, office)).status).toBe(400);
    expect((await admin().get(LOCATIONS)).body.namedLocations).toEqual([office]);

    await admin().post(POLICIES, blockAll('block-outside', 'off', { locations: { include: ['any'], exclude: ['office'] } })).expect(201);
    const inUse = await admin().delete(`${LOCATIONS}/office`);
    expect(inUse.status).toBe(400);
    expect(inUse.body.errors[0].field).toMatch(/assignments\.locations\.exclude\.0$/);
    expect((await admin().get(`${LOCATIONS}/office`)).status).toBe(200);

    const moved = await admin().put(`${LOCATIONS}/office`, { ...office, ranges: ['198.51.100.0/24'] });
    expect(moved.status).toBe(200);
    expect(moved.body.ranges).toEqual(['198.51.100.0/24']);

    const group = await admin().post(GROUPS, { id: 'sales', name: 'Sales', members: [ids.alice] });
    expect(group.status).toBe(201);
    const v = etagOf(group);
    const grown = await admin().put(`${GROUPS}/sales`, { name: 'Sales', members: [ids.alice, ids.bob] }).set('If-Match', `"${v}"`);
    expect(grown.status).toBe(200);
    expect((await admin().get(GROUPS)).body.groups).toEqual([{ id: 'sales', name: 'Sales', members: [ids.alice, ids.bob] }]);

    expect((await admin().get(APPROVED)).body).toEqual({ clientIds: [] });
    const approved = await admin().put(APPROVED, { clientIds: [CLIENT_ID, CLIENT_ID] });
    expect(approved.status).toBe(200);
    expect(approved.body).toEqual({ clientIds: [CLIENT_ID] });
    expect(etagOf(approved)).toBeGreaterThan(etagOf(grown));
    expect((await admin().put(APPROVED, { clientIds: [] }).set('If-Match', `"${v}"`)).status).toBe(412);

    await admin().delete(`${POLICIES}/block-outside`).expect(204);
    await admin().delete(`${LOCATIONS}/office`).expect(204);
    await admin().delete(`${GROUPS}/sales`).expect(204);
    await admin().put(APPROVED, { clientIds: [] }).expect(200);

    expect((await auditActions(since)).map((e) => e.action)).toEqual([
      'namedLocation.create',
      'accessPolicy.create',
      'namedLocation.update',
      'group.create',
      'group.update',
      'approvedClientApps.update',
      'accessPolicy.delete',
      'namedLocation.delete',
      'group.delete',
      'approvedClientApps.update',
    ]);
  });

  test('a user who is not an administrator gets 403 everywhere', async () => {
    const alice = as(await session('alice'));
    for (const call of [
      alice.get(POLICIES),
      alice.post(POLICIES, blockAll('sneaky')),
      alice.get(LOCATIONS),
      alice.get(GROUPS),
      alice.put(APPROVED, { clientIds: [] }),
      alice.post(WHAT_IF, { userId: ids.alice, clientId: CLIENT_ID, platform: 'ios', ip: '127.0.0.1' }),
      alice.get('/admin/v1/sign-ins'),
      alice.post(`/admin/v1/users/${ids.alice}/risk`, { action: 'dismiss' }),
    ]) {
      expect((await call).status).toBe(403);
    }
    expect((await admin().get(`${POLICIES}/sneaky`)).status).toBe(404);
  });

  test("an admin of another tenant sees and changes none of this tenant's configuration", async () => {
    await admin().post(POLICIES, blockAll('tenant-a-only', 'off')).expect(201);
    await admin().post(GROUPS, { id: 'a-group', name: 'A group', members: [ids.alice] }).expect(201);
    const other = await ctx.store.tenants.create('Other Org', ctx.clock.now());
    await ctx.users.addUser({ username: 'badmin', password: PW, role: 'admin', tenantId: other.id });
    const b = as(await session('badmin'));
    try {
      const list = await b.get(POLICIES);
      expect(list.status).toBe(200);
      expect(list.body.policies).toEqual([]);
      expect((await b.get(GROUPS)).body.groups).toEqual([]);
      expect((await b.get(`${POLICIES}/tenant-a-only`)).status).toBe(404);
      expect((await b.put(`${POLICIES}/tenant-a-only`, blockAll('tenant-a-only'))).status).toBe(404);
      expect((await b.delete(`${POLICIES}/tenant-a-only`)).status).toBe(404);
      // Its own policy of the same id is its own.
      expect((await b.post(POLICIES, blockAll('tenant-a-only', 'reportOnly'))).status).toBe(201);
      expect((await b.post(WHAT_IF, { userId: ids.alice, clientId: CLIENT_ID, platform: 'ios', ip: clientIp })).status).toBe(400);
      expect((await b.post(`/admin/v1/users/${ids.alice}/risk`, { action: 'confirm' })).status).toBe(404);
      expect((await b.get(`/admin/v1/sign-ins?userId=${ids.alice}`)).body.signIns).toEqual([]);
      const audit = await b.get('/admin/v1/audit?limit=500');
      expect((audit.body.entries as Array<{ targetId: string }>).map((e) => e.targetId)).toEqual(['tenant-a-only']);

      expect((await admin().get(`${POLICIES}/tenant-a-only`)).body.state).toBe('off');
      expect(await ctx.store.access.userRisk(ids.alice!)).toBeUndefined();
      // Tenant B's report-only block never shows in tenant A's sign-ins.
      await session('alice');
      const latest = (await signInsOf(`userId=${ids.alice}&limit=1`)).signIns[0]!;
      expect(latest.policyResults.map((r: { policyId: string; state: string }) => r.state)).toEqual(['off']);
    } finally {
      await resetAccess();
    }
  });
});

describe('enforcement', () => {
  beforeEach(resetAccess);
  afterAll(resetAccess);

  test('an MFA policy for a group refuses its members the password grant; others sign in', async () => {
    await admin().post(GROUPS, { id: 'finance', name: 'Finance', members: [ids.bob] }).expect(201);
    await admin()
      .post(POLICIES, { id: 'finance-mfa', name: 'Finance needs MFA', state: 'on', assignments: { users: { include: { groups: ['finance'] } } }, outcome: { grant: { controls: ['mfa'], operator: 'and' } } })
      .expect(201);
    const bob = await grant('bob');
    expect(bob.status).toBe(400);
    expect(bob.body.error).toBe('invalid_grant');
    expect(bob.body.error_description).toMatch(/multi-factor/);
    expect((await grant('alice')).status).toBe(200);

    const logged = (await signInsOf(`userId=${ids.bob}&limit=1`)).signIns[0]!;
    expect(logged).toMatchObject({ decision: 'needs', sessionId: null, clientId: CLIENT_ID, policyResults: [{ policyId: 'finance-mfa', result: 'failure', unmetControls: ['mfa'] }] });
  });

  test('a report-only policy never blocks; its result is in the sign-in log', async () => {
    await admin().post(POLICIES, blockAll('would-block', 'reportOnly')).expect(201);
    const res = await grant('carol');
    expect(res.status).toBe(200);
    const entry = (await signInsOf(`userId=${ids.carol}&limit=1`)).signIns[0]!;
    expect(entry).toMatchObject({ decision: 'allow', kind: 'password', policyResults: [{ policyId: 'would-block', state: 'reportOnly', applied: true, result: 'reportOnlyFailure' }] });
    expect(entry.at).toBe(new Date(ctx.clock.now()).toISOString());
    // And on calls: a report-only block does not stop the token's use.
    const s = await onDevice('carol');
    expect((await as(s).get('/v1/folders/sync')).status).toBe(200);
  });

  test('a block policy for a named location blocks sign-ins from it, and only from it', async () => {
    await admin().post(LOCATIONS, { id: 'loopback', name: 'This machine', trusted: false, ranges: ['127.0.0.0/8', '::ffff:127.0.0.0/104'] }).expect(201);
    await admin().post(LOCATIONS, { id: 'elsewhere', name: 'Somewhere else', trusted: false, ranges: ['203.0.113.0/24'] }).expect(201);
    await admin().post(POLICIES, blockAll('block-elsewhere', 'on', { locations: { include: ['elsewhere'] } })).expect(201);
    expect((await grant('dave')).status).toBe(200);

    await admin().post(POLICIES, blockAll('block-loopback', 'on', { locations: { include: ['loopback'] } })).expect(201);
    const res = await grant('dave');
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: 'invalid_grant' });
    expect(res.body.error_description).toMatch(/^conditional access/);
    const entry = (await signInsOf(`userId=${ids.dave}&limit=1`)).signIns[0]!;
    expect(entry.decision).toBe('block');
    expect(entry.ip).toBe(clientIp);
    expect(entry.policyResults.map((r: { policyId: string; result: string }) => [r.policyId, r.result])).toEqual([
      ['block-elsewhere', 'notApplied'],
      ['block-loopback', 'failure'],
    ]);

    // Excluding the location (everywhere but here) lets the sign-in through.
    await admin().put(`${POLICIES}/block-loopback`, blockAll('block-loopback', 'on', { locations: { include: ['any'], exclude: ['loopback'] } })).expect(200);
    expect((await grant('dave')).status).toBe(200);
  });

  test('a policy switched on while a token is live refuses its next call (no new token needed)', async () => {
    const s = await onDevice('alice');
    await admin().post(POLICIES, blockAll('block-sync', 'off', { clientApps: { include: [CLIENT_ID] } })).expect(201);
    expect((await as(s).get('/v1/folders/sync')).status).toBe(200);

    await admin().put(`${POLICIES}/block-sync`, blockAll('block-sync', 'on', { clientApps: { include: [CLIENT_ID] } })).expect(200);
    const refused = await as(s).get('/v1/folders/sync');
    expect(refused.status).toBe(403);
    expect(refused.body).toMatchObject({ code: 'accessBlocked', controls: ['block'], policies: ['block-sync'], interactionRequired: false });
    // Its refresh is refused too.
    const refresh = await request(ctx.app).post('/oauth2/token').type('form').send({ grant_type: 'refresh_token', client_id: CLIENT_ID, refresh_token: s.refresh, device_id: s.deviceId });
    expect(refresh.status).toBe(400);
    expect(refresh.body.error).toBe('invalid_grant');

    // An MFA requirement instead: the app is told to sign in again interactively.
    await admin().put(`${POLICIES}/block-sync`, { ...blockAll('block-sync', 'on'), outcome: { grant: { controls: ['mfa'], operator: 'or' } } }).expect(200);
    expect((await as(s).get('/v1/folders/sync')).body).toMatchObject({ code: 'accessBlocked', controls: ['mfa'], interactionRequired: true });

    await admin().put(`${POLICIES}/block-sync`, blockAll('block-sync', 'off')).expect(200);
    expect((await as(s).get('/v1/folders/sync')).status).toBe(200);
  });

  test('the sign-in log: filters and cursor paging', async () => {
    await admin().post(GROUPS, { id: 'blocked', name: 'Blocked', members: [ids.bob] }).expect(201);
    await admin().post(POLICIES, { ...blockAll('block-bob'), assignments: { users: { include: { groups: ['blocked'] } } } }).expect(201);
    const since = ctx.clock.now() + 1;
    ctx.clock.advance(1000);
    const made: Array<{ user: string; client: string; ok: boolean }> = [];
    for (let i = 0; i < 7; i++) {
      const user = i % 3 === 0 ? 'bob' : 'alice';
      const client = i % 2 === 0 ? CLIENT_ID : OTHER_CLIENT;
      const res = await grant(user, { client_id: client });
      made.push({ user, client, ok: res.status === 200 });
      if (i % 2 === 1) ctx.clock.advance(10); // some share a millisecond, some do not
    }
    expect(made.filter((m) => !m.ok).map((m) => m.user)).toEqual(['bob', 'bob', 'bob']);

    const all = await signInsOf(`since=${since}`);
    expect(all.signIns).toHaveLength(7);
    expect(all.next).toBeUndefined();
    const times = all.signIns.map((e) => Date.parse(e.at));
    expect([...times].sort((a, b) => b - a)).toEqual(times); // newest first

    expect((await signInsOf(`since=${since}&decision=block`)).signIns.map((e) => e.userId)).toEqual([ids.bob, ids.bob, ids.bob]);
    expect((await signInsOf(`since=${since}&userId=${ids.alice}`)).signIns).toHaveLength(4);
    const cli = (await signInsOf(`since=${since}&clientId=${OTHER_CLIENT}`)).signIns;
    expect(cli.map((e) => e.clientId)).toEqual([OTHER_CLIENT, OTHER_CLIENT, OTHER_CLIENT]);
    expect((await signInsOf(`since=${since}&userId=${ids.alice}&clientId=${CLIENT_ID}&decision=allow`)).signIns).toHaveLength(2);

    // Pages of 2: every entry exactly once, in the same order as the single page.
    const paged: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await signInsOf(`since=${since}&limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.signIns.length).toBeLessThanOrEqual(2);
      paged.push(...page.signIns.map((e) => e.id));
      cursor = page.next;
      pages++;
    } while (cursor && pages < 10);
    expect(pages).toBe(4);
    expect(paged).toEqual(all.signIns.map((e) => e.id));

    expect((await admin().get('/admin/v1/sign-ins?cursor=nonsense')).status).toBe(400);
    expect((await admin().get('/admin/v1/sign-ins?decision=maybe')).status).toBe(400);
  });
});

describe('What If', () => {
  afterAll(resetAccess);

  const USERS = ['alice', 'bob', 'carol'] as const;
  const CLIENTS = [CLIENT_ID, OTHER_CLIENT] as const;
  const GROUP_IDS = ['g1', 'g2'] as const;
  const LOCATION_REFS = ['any', 'trusted', 'here', 'away'] as const;

  /** Present now and then: every condition a policy sets can only narrow it, and narrow ones rarely apply. */
  const sometimes = <T>(arb: fc.Arbitrary<T>) => fc.oneof({ arbitrary: fc.constant(undefined), weight: 2 }, { arbitrary: arb, weight: 1 });
  const subjects = fc.record(
    { users: fc.subarray([...USERS], { minLength: 1 }), groups: fc.subarray([...GROUP_IDS], { minLength: 1 }) },
    { requiredKeys: [] },
  );
  const policyArb = (id: string) =>
    fc
      .record({
        state: fc.oneof({ arbitrary: fc.constant('on' as const), weight: 3 }, fc.constant('off' as const), fc.constant('reportOnly' as const)),
        users: fc.record({
          include: fc.oneof({ arbitrary: fc.constant('all' as const), weight: 2 }, subjects.filter((s) => Object.keys(s).length > 0)),
          exclude: sometimes(subjects),
        }),
        clientApps: sometimes(fc.record({ include: fc.oneof(fc.constant('all' as const), fc.subarray([...CLIENTS], { minLength: 1 })), exclude: sometimes(fc.subarray([...CLIENTS])) })),
        platforms: sometimes(
          fc.record({ include: fc.oneof(fc.constant('all' as const), fc.subarray(['ios', 'android', 'web'] as const, { minLength: 1 })), exclude: sometimes(fc.subarray(['ios', 'android'] as const)) }),
        ),
        locations: sometimes(fc.record({ include: fc.subarray([...LOCATION_REFS], { minLength: 1 }), exclude: sometimes(fc.subarray(['trusted', 'here', 'away'] as const)) })),
        outcome: fc.oneof(
          fc.constant({ block: true as const }),
          fc.record({ grant: fc.record({ controls: fc.subarray(['mfa', 'approvedClientApp', 'compliantDevice'] as const, { minLength: 1 }), operator: fc.constantFrom('and' as const, 'or' as const) }) }),
        ),
      })
      .map((p) => {
        const userIds = (s?: { users?: string[]; groups?: string[] }) => s && { ...s, ...(s.users ? { users: s.users.map((u) => ids[u]!) } : {}) };
        const drop = <T extends object>(o: T) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
        const assignments = drop({
          users: drop({ include: p.users.include === 'all' ? 'all' : userIds(p.users.include), exclude: userIds(p.users.exclude) }),
          clientApps: p.clientApps && drop(p.clientApps),
          platforms: p.platforms && drop(p.platforms),
          locations: p.locations && drop(p.locations),
        });
        return { id, name: `Policy ${id}`, state: p.state, assignments, outcome: p.outcome };
      });

  const scenario = fc.record({
    policies: fc.integer({ min: 1, max: 4 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => policyArb(`p${i}`)))),
    groups: fc.record({ g1: fc.subarray([...USERS]), g2: fc.subarray([...USERS]) }),
    approved: fc.subarray([...CLIENTS]),
    hereTrusted: fc.boolean(),
    user: fc.constantFrom(...USERS),
    client: fc.constantFrom(...CLIENTS),
  });

  test('the What If decision is the password grant’s outcome, for random policy sets', async () => {
    await resetAccess();
    await admin().post(GROUPS, { id: 'g1', name: 'G1', members: [] }).expect(201);
    await admin().post(GROUPS, { id: 'g2', name: 'G2', members: [] }).expect(201);
    // The test client's address is in "here" (both forms a dual-stack socket may report), never in "away".
    await admin().post(LOCATIONS, { id: 'here', name: 'Here', trusted: false, ranges: ['127.0.0.0/8', '::ffff:127.0.0.0/104'] }).expect(201);
    await admin().post(LOCATIONS, { id: 'away', name: 'Away', trusted: true, ranges: ['203.0.113.0/24'] }).expect(201);
    const failures: string[] = [];
    const decisions = new Map<string, number>();

    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        const policies = await admin().get(POLICIES).expect(200);
        for (const p of policies.body.policies as Array<{ id: string }>) await admin().delete(`${POLICIES}/${p.id}`).expect(204);
        for (const g of GROUP_IDS) await admin().put(`${GROUPS}/${g}`, { name: g.toUpperCase(), members: s.groups[g].map((u) => ids[u]!) }).expect(200);
        await admin().put(`${LOCATIONS}/here`, { name: 'Here', trusted: s.hereTrusted, ranges: ['127.0.0.0/8', '::ffff:127.0.0.0/104'] }).expect(200);
        await admin().put(APPROVED, { clientIds: s.approved }).expect(200);
        for (const p of s.policies) await admin().post(POLICIES, p).expect(201);

        const whatIf = await admin().post(WHAT_IF, { userId: ids[s.user], clientId: s.client, platform: UA_PLATFORM, ip: clientIp, mfa: false });
        expect(whatIf.status).toBe(200);
        const real = await grant(s.user, { client_id: s.client });
        const decision = whatIf.body.decision as string;
        decisions.set(decision, (decisions.get(decision) ?? 0) + 1);
        const agrees =
          decision === 'allow'
            ? real.status === 200
            : real.status === 400 && real.body.error === 'invalid_grant' && new RegExp(decision === 'needs' ? '^conditional access requires multi-factor' : '^conditional access: ').test(real.body.error_description);
        if (!agrees) {
          failures.push(`What If said ${decision}, the grant answered ${real.status} ${JSON.stringify(real.body)} for ${JSON.stringify(s)}`);
        }
        expect(agrees).toBe(true);
        // The real sign-in was judged by the same policies: its logged results are What If's.
        const logged = (await signInsOf(`userId=${ids[s.user]}&limit=1`)).signIns[0]!;
        expect(logged.policyResults).toEqual(whatIf.body.results);
      }),
      { numRuns: 30 },
    ).catch((err) => {
      throw new Error(`${failures.join('\n')}\n${(err as Error).message}`);
    });
    // The runs were not all one answer (the property would then say little).
    expect(decisions.size).toBeGreaterThan(1);
  });
});

describe('user risk', () => {
  afterAll(resetAccess);

  test("an administrator's confirmed risk applies at once to calls and sign-ins; dismissing lifts it", async () => {
    await resetAccess();
    const s = await onDevice('hank');
    await admin().post(POLICIES, { ...blockAll('block-high-risk'), assignments: { users: { include: 'all', exclude: { users: [ids.root] } }, signInRisk: ['high'] } }).expect(201);
    expect((await as(s).get('/v1/folders/sync')).status).toBe(200);
    const since = await lastAuditSeq();

    const confirmed = await admin().post(`/admin/v1/users/${ids.hank}/risk`, { action: 'confirm' });
    expect(confirmed.status).toBe(200);
    expect(confirmed.body).toMatchObject({ userId: ids.hank, state: 'confirmed', at: new Date(ctx.clock.now()).toISOString() });
    const refused = await as(s).get('/v1/folders/sync');
    expect(refused.status).toBe(403);
    expect(refused.body).toMatchObject({ code: 'accessBlocked', policies: ['block-high-risk'] });
    const signInNow = await grant('hank');
    expect(signInNow.status).toBe(400);
    expect(signInNow.body.error).toBe('invalid_grant');
    expect((await admin().post(WHAT_IF, { userId: ids.hank, clientId: CLIENT_ID, platform: 'ios', ip: clientIp })).body.decision).toBe('block');
    // Other users are not affected.
    expect((await grant('ivy')).status).toBe(200);

    ctx.clock.advance(1000);
    const dismissed = await admin().post(`/admin/v1/users/${ids.hank}/risk`, { action: 'dismiss' });
    expect(dismissed.body).toMatchObject({ userId: ids.hank, state: 'dismissed' });
    expect((await as(s).get('/v1/folders/sync')).status).toBe(200);
    expect((await grant('hank')).status).toBe(200);

    expect((await auditActions(since)).map((e) => [e.action, e.targetId])).toEqual([
      ['userRisk.confirm', ids.hank],
      ['userRisk.dismiss', ids.hank],
    ]);
    expect((await admin().post('/admin/v1/users/nobody/risk', { action: 'confirm' })).status).toBe(404);
    expect((await admin().post(`/admin/v1/users/${ids.hank}/risk`, { action: 'forgive' })).status).toBe(400);
  });

  test('a burst of wrong passwords makes the next sign-in from a new device risky', async () => {
    await resetAccess();
    await admin().post(POLICIES, { ...blockAll('block-risky'), assignments: { users: { include: 'all', exclude: { users: [ids.root] } }, signInRisk: ['medium', 'high'] } }).expect(201);
    await grant('ivy', { device_id: newDeviceId('ivy') }).expect(200); // some history, so "new device" means something
    ctx.clock.advance(60_000);
    for (let i = 0; i < 5; i++) expect((await grant('ivy', {}, `wrong-password-${i}`)).status).toBe(400);
    const failed = await signInsOf(`userId=${ids.ivy}&decision=failure`);
    expect(failed.signIns).toHaveLength(5);

    const device = newDeviceId('ivy');
    const risky = await grant('ivy', { device_id: device });
    expect(risky.status).toBe(400);
    expect(risky.body.error).toBe('invalid_grant');
    const entry = (await signInsOf(`userId=${ids.ivy}&deviceId=${device}`)).signIns[0]!;
    expect(entry.decision).toBe('block');
    const signals = (entry.riskSignals as Array<{ signal: string; weight: number }>).map((s) => s.signal);
    expect(signals).toEqual(expect.arrayContaining(['failedAttemptBurst', 'newDevice']));
    expect(entry.riskSignals).toContainEqual({ signal: 'failedAttemptBurst', weight: 40 });
    expect(['medium', 'high']).toContain(entry.riskLevel);
    expect(entry.riskScore).toBeGreaterThanOrEqual(60);

    // Past the 15-minute window the burst no longer counts: only the new device does (low risk: let through).
    ctx.clock.advance(16 * 60_000);
    expect((await grant('ivy', { device_id: device })).status).toBe(200);
    const later = (await signInsOf(`userId=${ids.ivy}&deviceId=${device}&limit=1`)).signIns[0]!;
    expect(later).toMatchObject({ decision: 'allow', riskLevel: 'low', riskSignals: [{ signal: 'newDevice', weight: 20 }] });
  });
});
