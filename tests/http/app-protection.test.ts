/**
 * App protection over HTTP (issue 16; README "App protection"): an administrator's policy reaches the app through
 * GET /v1/policy (ETag, 304), the app checks in, and the server holds every other /v1 call to the policy: no
 * check-in within the offline grace period → accessBlocked; longer offline than offlineWipeAfterDays, too many PIN
 * failures or a reported violation → selectiveWipeRequested (the account's data only: the device record stays);
 * an app below minAppVersion → appUpgradeRequired. The clock is the test's (ManualClock), so "offline for days"
 * takes no time.
 */
import request from 'supertest';
import { buildTestApp, signIn, CLIENT_ID, asCaller, type TestContext } from '../helpers/testApp';

let ctx: TestContext;
const PW = 'password-for-app-protection';
const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
let serial = 0;
const newDeviceId = (tag: string) => `${tag}-${String(++serial).padStart(4, '0')}-abcdefghijkl`;

interface Session {
  access: string;
  refresh: string;
  deviceId: string;
}

const as = (s: { access: string; deviceId?: string }) => asCaller(ctx, s);

async function signInOn(username: string, deviceId = newDeviceId(username), client = CLIENT_ID): Promise<Session> {
  const t = await signIn(ctx, username, PW, { device_id: deviceId, client_id: client });
  return { access: t.access_token, refresh: t.refresh_token, deviceId };
}

/** Signs in on a new device and registers it (the app's first run). */
async function registered(username: string, clientVersion = '5.0'): Promise<Session & { id: string }> {
  const s = await signInOn(username);
  const res = await as(s).post('/v1/devices', { friendlyName: `${username}'s phone`, deviceType: 'iPhone', deviceOS: 'iOS 19.1', clientType: 'PigeonMail', clientVersion });
  expect(res.status).toBe(201);
  return { ...s, id: res.body.id };
}

const refreshGrant = (s: Session) =>
  request(ctx.app).post('/oauth2/token').type('form').send({ grant_type: 'refresh_token', client_id: CLIENT_ID, refresh_token: s.refresh, device_id: s.deviceId });

const checkIn = (s: Session, body: Partial<{ appVersion: string; osVersion: string; policyEtag: string | null; pinSet: boolean; pinFailures: number; violations: string[] }> = {}) =>
  as(s).post('/v1/policy/check-in', { appVersion: '5.0', osVersion: '19.1', policyEtag: null, pinSet: true, pinFailures: 0, violations: [], ...body });

/** A sync call: what app protection holds back. */
const sync = (s: Session) => as(s).get('/v1/folders/sync');

let adminSession: Session;
const admin = () => as({ access: adminSession.access });
const userId = async (username: string) => (await ctx.store.users.byUsername(username))!.id;

const CORP_MOBILE = {
  id: 'corp-mobile',
  name: 'Corporate mobile apps',
  apps: [CLIENT_ID],
  pinRequired: true,
  blockCopyToUnmanagedApps: true,
  blockSaveAs: true,
  notificationContent: 'senderOnly',
  offlineGracePeriodMinutes: 60,
  offlineWipeAfterDays: 3,
  maxPinAttempts: 5,
};

/** Audit entries of the admin's tenant with this action. */
async function audited(action: string) {
  const res = await admin().get('/admin/v1/audit?limit=500');
  expect(res.status).toBe(200);
  return (res.body.entries as Array<{ action: string; targetId: string | null; details: Record<string, unknown> }>).filter((e) => e.action === action);
}

beforeAll(async () => {
  // Day-long access tokens, so an hour on the clock does not expire them (the test is about app protection).
  ctx = await buildTestApp({ accessTokenTtl: 86_400 });
  for (const [username, role] of [['root', 'admin'], ['alice', 'user'], ['bob', 'user'], ['carol', 'user'], ['dave', 'user'], ['erin', 'user'], ['frank', 'user']] as const) {
    await ctx.users.addUser({ username, password: PW, role });
  }
  adminSession = await signInOn('root');
  // A stricter policy for one group, listed first: the first policy that matches app and groups applies.
  await admin().post('/admin/v1/groups', { id: 'upgraders', name: 'upgraders', members: [await userId('carol')] }).expect(201);
  const strict = await admin().post('/admin/v1/app-protection-policies', { ...CORP_MOBILE, id: 'upgraders-mobile', name: 'Upgraders', groups: ['upgraders'], minAppVersion: '4.2.0' });
  expect(strict.status).toBe(201);
});
afterAll(() => ctx.close());

describe('the policy reaches the app', () => {
  let etag: string;

  test('an admin creates a policy; the app gets it with an ETag, and 304 while it is current', async () => {
    const before = await sync(await registered('alice'));
    expect(before.status).toBe(200);

    const created = await admin().post('/admin/v1/app-protection-policies', CORP_MOBILE);
    expect(created.status).toBe(201);
    expect(created.body).toEqual({ ...CORP_MOBILE, checkInIntervalMinutes: 30 });
    expect(created.headers.etag).toMatch(/^"\d+"$/);
    expect((await audited('appProtectionPolicy.create')).map((e) => e.targetId)).toContain('corp-mobile');

    const d = await registered('alice');
    const res = await as(d).get('/v1/policy');
    expect(res.status).toBe(200);
    expect(res.body.policy).toEqual({ ...CORP_MOBILE, checkInIntervalMinutes: 30 });
    expect(res.headers.etag).toMatch(/^"[A-Za-z0-9_-]{43}"$/);
    expect(res.body.etag).toBe(res.headers.etag);
    etag = String(res.headers.etag);

    const again = await as(d).get('/v1/policy').set('If-None-Match', etag);
    expect(again.status).toBe(304);
    expect(again.headers.etag).toBe(etag);
    expect((await as(d).get('/v1/policy').set('If-None-Match', '"something-else"')).status).toBe(200);
    expect((await as(d).get('/v1/policy').set('If-None-Match', `"x", W/${etag}`)).status).toBe(304);
  });

  test('the group policy listed first applies to its members; other apps get no policy', async () => {
    const c = await registered('carol', '4.3');
    expect((await as(c).get('/v1/policy')).body.policy).toMatchObject({ id: 'upgraders-mobile', minAppVersion: '4.2.0' });
    const cli = await signInOn('alice', newDeviceId('cli'), 'pigeon-cli');
    await as(cli).post('/v1/devices', { friendlyName: 'cli' }).expect(201);
    const none = await as(cli).get('/v1/policy');
    expect(none.status).toBe(200);
    expect(none.body.policy).toBeNull();
    expect(none.headers.etag).not.toBe(etag);
    expect((await sync(cli)).status).toBe(200);
  });

  test('a changed policy has another ETag: the app learns it at GET and at check-in', async () => {
    const d = await registered('alice');
    const first = await as(d).get('/v1/policy');
    const docBefore = Number(JSON.parse(String((await admin().get('/admin/v1/app-protection-policies/corp-mobile')).headers.etag)));
    const put = await admin().put('/admin/v1/app-protection-policies/corp-mobile', { ...CORP_MOBILE, notificationContent: 'none' });
    expect(put.status).toBe(200);
    expect(Number(JSON.parse(String(put.headers.etag)))).toBeGreaterThan(docBefore);
    try {
      const second = await as(d).get('/v1/policy').set('If-None-Match', String(first.headers.etag));
      expect(second.status).toBe(200);
      expect(second.body.policy.notificationContent).toBe('none');
      expect(second.headers.etag).not.toBe(first.headers.etag);
      expect((await as(d).get('/v1/policy').set('If-None-Match', String(second.headers.etag))).status).toBe(304);

      const stale = await checkIn(d, { policyEtag: first.headers.etag });
      expect(stale.status).toBe(200);
      expect(stale.body).toMatchObject({ status: 'ok', policyChanged: true, policyEtag: second.headers.etag });
      const current = await checkIn(d, { policyEtag: second.headers.etag });
      expect(current.body).toMatchObject({ status: 'ok', policyChanged: false });
      expect(current.body.nextCheckInBefore).toBe(ctx.clock.now() + 30 * MINUTE);
    } finally {
      await admin().put('/admin/v1/app-protection-policies/corp-mobile', CORP_MOBILE).expect(200);
    }
    // The same policy again: the same ETag as before the change (a hash of the policy, not a counter).
    expect((await as(d).get('/v1/policy')).headers.etag).toBe(first.headers.etag);
  });
});

describe('check-in', () => {
  test('an app that never checked in is blocked after the grace period, except from the policy and check-in', async () => {
    const d = await registered('bob');
    expect((await sync(d)).status).toBe(200); // the grace period counts from registration
    ctx.clock.advance(61 * MINUTE);
    const blocked = await sync(d);
    expect(blocked.status).toBe(403);
    expect(blocked.body).toMatchObject({ code: 'accessBlocked', controls: ['appProtectionPolicy'], policies: ['corp-mobile'], interactionRequired: false });
    expect((await as(d).get('/v1/folders')).body.code).toBe('accessBlocked');

    const policy = await as(d).get('/v1/policy');
    expect(policy.status).toBe(200);
    const ok = await checkIn(d, { policyEtag: policy.body.etag });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ status: 'ok', policyEtag: policy.body.etag, policyChanged: false });
    expect((await sync(d)).status).toBe(200);

    const inventory = await admin().get(`/admin/v1/devices/${d.id}`);
    expect(inventory.body.appProtection).toMatchObject({ policyId: 'corp-mobile', appVersion: '5.0', selectiveWipe: 'none', lastCheckInAt: new Date(ctx.clock.now()).toISOString() });
  });

  test('PIN failures at maxPinAttempts request a selective wipe; one fewer does not', async () => {
    const d = await registered('erin');
    const under = await checkIn(d, { pinFailures: 4 });
    expect(under.status).toBe(200);
    const over = await checkIn(d, { pinFailures: 5 });
    expect(over.status).toBe(403);
    expect(over.body.code).toBe('selectiveWipeRequested');
    expect(over.body.reason).toMatch(/^maxPinAttempts/);
    // Every other call is refused the same way until the app acknowledges; a clean check-in does not undo it.
    expect((await sync(d)).body).toMatchObject({ code: 'selectiveWipeRequested', reason: over.body.reason });
    expect((await checkIn(d)).body.code).toBe('selectiveWipeRequested');
    expect((await as(d).get('/v1/policy')).status).toBe(200);
    expect((await audited('appProtection.selectiveWipe')).filter((e) => e.targetId === d.deviceId)).toHaveLength(1);
  });

  test('a reported violation requests a selective wipe', async () => {
    const d = await registered('frank');
    expect((await checkIn(d)).status).toBe(200);
    const res = await checkIn(d, { violations: ['jailbroken'] });
    expect(res.status).toBe(403);
    expect(res.body).toMatchObject({ code: 'selectiveWipeRequested' });
    expect(res.body.reason).toMatch(/^violations: jailbroken/);
    expect((await sync(d)).body.code).toBe('selectiveWipeRequested');
    expect((await admin().get(`/admin/v1/devices/${d.id}`)).body).toMatchObject({ wipeState: 'none', appProtection: { selectiveWipe: 'pending' } });
  });

  test('an app below minAppVersion must upgrade: at check-in and on every other call', async () => {
    const d = await registered('carol', '1.0');
    const before = await sync(d); // the registered version counts until the app checks in
    expect(before.status).toBe(403);
    expect(before.body).toMatchObject({ code: 'appUpgradeRequired', minimumVersion: '4.2.0', currentVersion: '1.0' });

    const old = await checkIn(d, { appVersion: '4.1.9' });
    expect(old.status).toBe(403);
    expect(old.body).toMatchObject({ code: 'appUpgradeRequired', minimumVersion: '4.2.0', currentVersion: '4.1.9' });
    expect((await sync(d)).body).toMatchObject({ code: 'appUpgradeRequired', currentVersion: '4.1.9' });
    expect((await as(d).get('/v1/policy')).status).toBe(200);

    const upgraded = await checkIn(d, { appVersion: '4.2' });
    expect(upgraded.status).toBe(200);
    expect((await sync(d)).status).toBe(200);
  });
});

describe('offline too long: selective wipe', () => {
  test('grace period → blocked; offlineWipeAfterDays → selective wipe of the app data only; acknowledged → signed out', async () => {
    const d = await registered('dave');
    const policy = await as(d).get('/v1/policy');
    expect((await checkIn(d, { policyEtag: policy.body.etag })).status).toBe(200);
    const checkedInAt = ctx.clock.now();

    ctx.clock.advance(60 * MINUTE); // exactly the grace period: still fine
    expect((await sync(d)).status).toBe(200);
    ctx.clock.advance(1 * MINUTE);
    expect((await sync(d)).body).toMatchObject({ code: 'accessBlocked', controls: ['appProtectionPolicy'] });

    ctx.clock.set(checkedInAt + 3 * DAY + MINUTE);
    // The day-long access token has expired meanwhile; the app refreshes (its sign-in is still good).
    const refreshed = await refreshGrant(d);
    expect(refreshed.status).toBe(200);
    const s: Session = { ...d, access: refreshed.body.access_token, refresh: refreshed.body.refresh_token };
    adminSession = await signInOn('root'); // so has the admin's
    const wipe = await sync(s);
    expect(wipe.status).toBe(403);
    expect(wipe.body.code).toBe('selectiveWipeRequested');
    expect(wipe.body.reason).toMatch(/^offline/);

    const entries = (await audited('appProtection.selectiveWipe')).filter((e) => e.targetId === d.deviceId);
    expect(entries).toHaveLength(1);
    expect(String(entries[0]!.details.reason)).toMatch(/^offline/);
    // A selective wipe is not a full wipe: the device record is untouched, only the app's standing records it.
    const inventory = await admin().get(`/admin/v1/devices/${d.id}`);
    expect(inventory.status).toBe(200);
    expect(inventory.body).toMatchObject({ wipeState: 'none', appProtection: { selectiveWipe: 'pending' } });
    expect(inventory.body.appProtection.selectiveWipeReason).toMatch(/^offline/);

    // Still refused on the next call, and not requested twice; the policy stays readable.
    expect((await sync(s)).body.code).toBe('selectiveWipeRequested');
    expect((await audited('appProtection.selectiveWipe')).filter((e) => e.targetId === d.deviceId)).toHaveLength(1);
    expect((await as(s).get('/v1/policy')).status).toBe(200);

    const ack = await as(s).post('/v1/policy/selective-wipe-ack');
    expect(ack.status).toBe(204);
    expect((await audited('appProtection.selectiveWipeAck')).map((e) => e.targetId)).toContain(d.deviceId);
    // The account's data is gone from the app, and so is its sign-in.
    expect((await sync(s)).status).toBe(401);
    expect((await refreshGrant(s)).status).toBe(400);
    expect((await admin().get(`/admin/v1/devices/${d.id}`)).body).toMatchObject({ wipeState: 'none', appProtection: { selectiveWipe: 'acknowledged' } });

    // A fresh sign-in on the same device must check in before it syncs again.
    const again = await signInOn('dave', d.deviceId);
    const before = await sync(again);
    expect(before.status).toBe(403);
    expect(before.body.code).toBe('accessBlocked');
    expect((await checkIn(again, { policyEtag: policy.body.etag })).status).toBe(200);
    expect((await sync(again)).status).toBe(200);
  });

  test('an acknowledgement with no wipe pending is refused', async () => {
    const d = await registered('alice');
    const res = await as(d).post('/v1/policy/selective-wipe-ack');
    expect(res.status).toBe(400);
    expect((await sync(d)).status).toBe(200);
  });
});
