/**
 * protocol.md §3 over HTTP: the device gate, registration, token binding, the access state machine and its
 * precedence, remote wipe, the admin inventory and audit log, isolation, the device cap, the inactivity purge and
 * coalesced last-seen writes.
 */
import request from 'supertest';
import { buildTestApp, signIn, CLIENT_ID, asCaller, type TestContext } from '../helpers/testApp';
import type { DeviceCut } from '../../server/devices/signals';
import type { Store, TxStore, Unit } from '../../server/store/types';

let ctx: TestContext;
let cuts: DeviceCut[];
const PW = 'password-for-tests';
let serial = 0;
/** A fresh, well-formed device id per call, so tests do not share device records by accident. */
const newDeviceId = (tag = 'dev') => `${tag}-${String(++serial).padStart(4, '0')}-abcdefghijkl`;

beforeAll(async () => {
  ctx = await buildTestApp();
  for (const [username, role] of [['alice', 'user'], ['bob', 'user'], ['root', 'admin']] as const) {
    await ctx.users.addUser({ username, password: PW, role });
  }
});
afterAll(() => ctx.close());
let unsubscribe: () => void;
beforeEach(() => {
  cuts = [];
  unsubscribe = ctx.built.deviceSignals.onCut((c) => cuts.push(c));
});
afterEach(() => unsubscribe());

interface Session {
  access: string;
  refresh: string;
  deviceId: string;
}

async function signInOn(username: string, deviceId = newDeviceId(username)): Promise<Session> {
  const t = await signIn(ctx, username, PW, { device_id: deviceId });
  return { access: t.access_token, refresh: t.refresh_token, deviceId };
}

const as = (s: Pick<Session, 'access'> & { deviceId?: string }) => asCaller(ctx, s);

async function registered(username: string, body: object = {}): Promise<Session & { id: string }> {
  const s = await signInOn(username);
  const res = await as(s).post('/v1/devices', { friendlyName: `${username}'s phone`, deviceType: 'iPhone', deviceModel: 'iPhone15,2', deviceOS: 'iOS 19.1', clientType: 'PigeonMail', clientVersion: '1.0', ...body });
  expect(res.status).toBe(201);
  return { ...s, id: res.body.id };
}

let adminSession: Session;
const admin = () => as({ access: adminSession.access });
beforeAll(async () => {
  adminSession = await signInOn('root');
});

const refresh = (s: Session, deviceId = s.deviceId) =>
  request(ctx.app).post('/oauth2/token').type('form').send({ grant_type: 'refresh_token', client_id: CLIENT_ID, refresh_token: s.refresh, device_id: deviceId });

describe('the device gate', () => {
  test('401 without a token comes first', async () => {
    expect((await request(ctx.app).get('/v1/devices').set('X-Device-Id', newDeviceId())).status).toBe(401);
  });

  test('missing X-Device-Id → 403 deviceNotRegistered; malformed → 400 invalidRequest', async () => {
    const s = await signInOn('alice');
    const missing = await as({ access: s.access }).get('/v1/devices');
    expect(missing.status).toBe(403);
    expect(missing.body.code).toBe('deviceNotRegistered');
    for (const bad of ['short', 'x'.repeat(65), 'has space in it 1234', 'semi;colon-123456789']) {
      const res = await as({ access: (await signIn(ctx, 'alice', PW)).access_token, deviceId: bad }).get('/v1/devices');
      expect(res.status).toBe(400);
      expect(res.body.code).toBe('invalidRequest');
    }
  });

  test('an unregistered device is 403 deviceNotRegistered everywhere except registration and session', async () => {
    const s = await signInOn('alice');
    expect((await as(s).get('/v1/devices')).body.code).toBe('deviceNotRegistered');
    expect((await as(s).delete('/v1/devices/whatever-0000000000')).body.code).toBe('deviceNotRegistered');
    const session = await as(s).get('/v1/session');
    expect(session.status).toBe(200);
    expect(session.body.device).toBeNull();
  });

  test('the same device id under two users is two devices', async () => {
    const b = await registered('bob');
    const a = await signInOn('alice', b.deviceId);
    expect((await as(a).get('/v1/devices')).body.code).toBe('deviceNotRegistered');
    const reg = await as(a).post('/v1/devices', { friendlyName: 'shared id' });
    expect(reg.status).toBe(201);
    expect(reg.body.id).not.toBe(b.id);
  });
});

describe('registration', () => {
  test('201 the first time, 200 after; descriptive fields update, access state never does', async () => {
    const d = await registered('alice');
    await admin().post(`/admin/v1/devices/${d.id}/quarantine`).expect(200);
    const again = await as(d).post('/v1/devices', { friendlyName: 'renamed', clientVersion: '2.0', capabilities: ['rms', 'rms'] });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ id: d.id, friendlyName: 'renamed', clientVersion: '2.0', capabilities: ['rms'], accessState: 'quarantined', accessStateReason: 'individual' });
    await admin().post(`/admin/v1/devices/${d.id}/release`).expect(200);
  });

  test('descriptive headers fill what the body leaves out; the session shows the device', async () => {
    const s = await signInOn('alice');
    const res = await as(s).post('/v1/devices', {}).set('X-Device-Model', 'Pixel 10').set('X-Device-OS', 'Android 17').set('User-Agent', 'PigeonMail/1.0 (Android)');
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ deviceId: s.deviceId, deviceModel: 'Pixel 10', deviceOS: 'Android 17', userAgent: 'PigeonMail/1.0 (Android)', accessState: 'allowed', accessStateReason: 'default', wipeState: 'none' });
    expect(res.body.firstSyncTime).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect((await as(s).get('/v1/session')).body.device).toMatchObject({ id: res.body.id, deviceModel: 'Pixel 10' });
  });

  test('bad bodies are 400 with field errors and register nothing', async () => {
    const s = await signInOn('alice');
    const before = (await ctx.store.devices.listByUser((await ctx.store.users.byUsername('alice'))!.id)).length;
    const bad = await as(s).post('/v1/devices', { friendlyName: 42, accessState: 'allowed', capabilities: ['ok', 'not ok!'] });
    expect(bad.status).toBe(400);
    expect(bad.body.errors.map((e: { field: string }) => e.field).sort()).toEqual(['(root)', 'capabilities.1', 'friendlyName']);
    const noHeader = await as({ access: s.access }).post('/v1/devices', {});
    expect(noHeader.status).toBe(400);
    expect((await ctx.store.devices.listByUser((await ctx.store.users.byUsername('alice'))!.id)).length).toBe(before);
  });
});

describe('token binding', () => {
  test('a token bound to one device is 401 from another', async () => {
    const d = await registered('alice');
    const other = await registered('alice');
    const res = await as({ access: d.access, deviceId: other.deviceId }).get('/v1/devices');
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toContain('invalid_token');
  });

  test('refreshing a device-bound token from another device id is invalid_grant', async () => {
    const d = await registered('alice');
    const res = await refresh(d, newDeviceId('thief'));
    expect(res.body.error).toBe('invalid_grant');
  });
});

describe('access states', () => {
  test('block: 403 deviceBlocked at once, refresh tokens revoked, channels cut; allow restores it', async () => {
    const d = await registered('alice');
    expect((await as(d).get('/v1/devices')).status).toBe(200);
    const blocked = await admin().post(`/admin/v1/devices/${d.id}/block`);
    expect(blocked.body).toMatchObject({ accessState: 'blocked', accessStateReason: 'individual' });
    const res = await as(d).get('/v1/devices');
    expect(res.status).toBe(403);
    expect(res.body).toMatchObject({ code: 'deviceBlocked', accessStateReason: 'individual' });
    expect(cuts).toEqual([expect.objectContaining({ deviceId: d.deviceId, reason: 'blocked' })]);
    expect((await refresh(d)).body.error).toBe('invalid_grant');
    // A fresh sign-in on the blocked device gets no tokens either.
    expect((await request(ctx.app).post('/oauth2/token').type('form').send({ grant_type: 'password', client_id: CLIENT_ID, username: 'alice', password: PW, device_id: d.deviceId })).body.error).toBe('invalid_grant');
    await admin().post(`/admin/v1/devices/${d.id}/allow`).expect(200);
    // The block ended the sign-in: its access token stays dead after the allow; a new sign-in resumes.
    expect((await as(d).get('/v1/devices')).status).toBe(401);
    expect((await as(await signInOn('alice', d.deviceId)).get('/v1/devices')).status).toBe(200);
  });

  test('quarantine: 403 deviceQuarantined, tokens stay valid, release resumes the same session', async () => {
    const d = await registered('alice');
    await admin().post(`/admin/v1/devices/${d.id}/quarantine`).expect(200);
    expect((await as(d).get('/v1/devices')).body.code).toBe('deviceQuarantined');
    expect(cuts.map((c) => c.reason)).toEqual(['quarantined']);
    const r = await refresh(d);
    expect(r.status).toBe(200);
    await admin().post(`/admin/v1/devices/${d.id}/release`).expect(200);
    expect((await as({ access: r.body.access_token, deviceId: d.deviceId }).get('/v1/devices')).status).toBe(200);
  });

  test('precedence: individual decision > rule > default; a rule change applies on the next request', async () => {
    const d = await registered('bob', { clientType: 'LegacyMail', deviceModel: 'Nokia 3310' });
    expect((await as(d).get('/v1/devices')).status).toBe(200);

    await admin().put('/admin/v1/device-access-default', { accessState: 'quarantined' }).expect(200);
    let res = await as(d).get('/v1/devices');
    expect(res.body).toMatchObject({ code: 'deviceQuarantined', accessStateReason: 'default' });

    const allowRule = await admin().post('/admin/v1/device-access-rules', { field: 'deviceModel', match: 'prefix', value: 'nokia', accessState: 'allowed' });
    expect(allowRule.status).toBe(201);
    expect((await as(d).get('/v1/devices')).status).toBe(200);

    // Among matching prefix rules the most restrictive wins; an exact rule beats a prefix rule.
    const blockRule = await admin().post('/admin/v1/device-access-rules', { field: 'clientType', match: 'prefix', value: 'Legacy', accessState: 'blocked' });
    res = await as(d).get('/v1/devices');
    expect(res.body).toMatchObject({ code: 'deviceBlocked', accessStateReason: 'rule' });
    const exact = await admin().post('/admin/v1/device-access-rules', { field: 'deviceModel', match: 'exact', value: 'Nokia 3310', accessState: 'allowed' });
    expect((await as(d).get('/v1/devices')).status).toBe(200);

    await admin().post(`/admin/v1/devices/${d.id}/block`).expect(200);
    expect((await as(d).get('/v1/devices')).body).toMatchObject({ code: 'deviceBlocked', accessStateReason: 'individual' });
    await admin().post(`/admin/v1/devices/${d.id}/allow`).expect(200);

    for (const r of [allowRule, blockRule, exact]) await admin().delete(`/admin/v1/device-access-rules/${r.body.id}`).expect(204);
    await admin().put('/admin/v1/device-access-default', { accessState: 'allowed' }).expect(200);
  });

  test('resync moves the device epoch (its sync tokens will answer 410 deviceReset)', async () => {
    const d = await registered('alice');
    const before = (await ctx.store.devices.byId(d.id))!.epoch;
    await admin().post(`/admin/v1/devices/${d.id}/resync`).expect(200);
    expect((await ctx.store.devices.byId(d.id))!.epoch).toBe(before + 1);
  });
});

describe('remote wipe', () => {
  test('pending: every /v1 call and the refresh grant carry the wipe; deletion cannot cancel it', async () => {
    const d = await registered('alice');
    const w = await admin().post(`/admin/v1/devices/${d.id}/wipe`);
    expect(w.body).toMatchObject({ wipeState: 'pending', wipeRequestedAt: expect.any(String) });
    expect(cuts.map((c) => c.reason)).toEqual(['wipeRequested']);

    const res = await as(d).get('/v1/devices');
    expect(res.status).toBe(403);
    expect(res.body).toMatchObject({ code: 'wipeRequested', wipe: { scope: 'account' } });
    // The session call, which needs no registration, still tells a registered device of its wipe.
    expect((await as(d).get('/v1/session')).body).toMatchObject({ code: 'wipeRequested', wipe: { scope: 'account' } });
    const r = await refresh(d);
    expect(r.status).toBe(200);
    expect(r.body.wipe).toEqual({ scope: 'account' });

    const other = await registered('alice');
    expect((await as(other).delete(`/v1/devices/${d.deviceId}`)).status).toBe(409);
    expect((await admin().delete(`/admin/v1/devices/${d.id}`)).body.code).toBe('wipePending');
    expect((await admin().post(`/admin/v1/devices/${d.id}/wipe`)).status).toBe(400);
    expect((await ctx.store.devices.byId(d.id))!.wipeState).toBe('pending');
  });

  test('ack: every token dies, sync state is dropped, the device stays wiped until an admin removes it', async () => {
    const d = await registered('alice');
    expect((await as(d).post('/v1/devices/current/wipe-ack', { status: 'ok' })).status).toBe(400); // nothing pending
    await admin().post(`/admin/v1/devices/${d.id}/wipe`).expect(200);
    const epoch = (await ctx.store.devices.byId(d.id))!.epoch;
    expect((await as(d).post('/v1/devices/current/wipe-ack', { status: 'maybe' })).status).toBe(400);
    const ack = await as(d).post('/v1/devices/current/wipe-ack', { status: 'ok' });
    expect(ack.status).toBe(200);
    expect(ack.body).toMatchObject({ wipeState: 'acknowledged', wipeAcknowledgedAt: expect.any(String) });
    expect((await ctx.store.devices.byId(d.id))!.epoch).toBe(epoch + 1);
    expect(cuts.map((c) => c.reason)).toEqual(['wipeRequested', 'wiped']);

    expect((await refresh(d)).body.error).toBe('invalid_grant');
    expect((await as(d).get('/v1/devices')).body.code).toBe('deviceWiped');
    expect((await as(d).post('/v1/devices', {})).body.code).toBe('deviceWiped');
    const fresh = await request(ctx.app).post('/oauth2/token').type('form').send({ grant_type: 'password', client_id: CLIENT_ID, username: 'alice', password: PW, device_id: d.deviceId });
    expect(fresh.body.error).toBe('invalid_grant');
    const other = await registered('alice');
    expect((await as(other).delete(`/v1/devices/${d.deviceId}`)).body.code).toBe('deviceWiped');

    const inventory = await admin().get('/admin/v1/devices?user=alice');
    expect(inventory.body.devices.find((x: { id: string }) => x.id === d.id)).toMatchObject({ wipeState: 'acknowledged' });

    await admin().delete(`/admin/v1/devices/${d.id}`).expect(204);
    const again = await signInOn('alice', d.deviceId);
    expect((await as(again).post('/v1/devices', {})).status).toBe(201);
    expect((await as(again).get('/v1/devices')).status).toBe(200);
  });

  test('a failed wipe is recorded as failed and also ends the device', async () => {
    const d = await registered('bob');
    await admin().post(`/admin/v1/devices/${d.id}/wipe`).expect(200);
    expect((await as(d).post('/v1/devices/current/wipe-ack', { status: 'failed' })).body.wipeState).toBe('failed');
    expect((await as(d).get('/v1/devices')).body.code).toBe('deviceWiped');
  });
});

describe('the user\'s devices', () => {
  test('GET lists only one\'s own; DELETE removes the partnership and its tokens', async () => {
    const a1 = await registered('alice');
    const a2 = await registered('alice');
    const b = await registered('bob');
    const mine = (await as(a1).get('/v1/devices')).body.devices.map((d: { id: string }) => d.id);
    expect(mine).toEqual(expect.arrayContaining([a1.id, a2.id]));
    expect(mine).not.toContain(b.id);
    // Bob cannot remove Alice's device (his lookup finds nothing): 404.
    expect((await as(b).delete(`/v1/devices/${a2.deviceId}`)).status).toBe(404);
    expect((await as(a1).delete(`/v1/devices/${a2.deviceId}`)).status).toBe(204);
    expect(cuts.map((c) => c.reason)).toEqual(['removed']);
    // Its sign-in ended with the partnership: the old token is refused; a new sign-in must register again.
    expect((await as(a2).get('/v1/devices')).status).toBe(401);
    expect((await as(await signInOn('alice', a2.deviceId)).get('/v1/devices')).body.code).toBe('deviceNotRegistered');
    expect((await refresh(a2)).body.error).toBe('invalid_grant');
    expect((await as(a1).delete(`/v1/devices/${a2.deviceId}`)).status).toBe(404);
  });

  test('the device cap: 403 deviceLimitReached (configurable)', async () => {
    const small = await buildTestApp({ maxDevicesPerUser: 3 });
    try {
      await small.users.addUser({ username: 'hoarder', password: PW, role: 'user' });
      const register = async () => {
        const deviceId = newDeviceId('hoard');
        const t = await signIn(small, 'hoarder', PW, { device_id: deviceId });
        return request(small.app).post('/v1/devices').set('Authorization', `Bearer ${t.access_token}`).set('X-Device-Id', deviceId).send({});
      };
      for (let i = 0; i < 3; i++) expect((await register()).status).toBe(201);
      const res = await register();
      expect(res.status).toBe(403);
      expect(res.body.code).toBe('deviceLimitReached');
      expect(await small.store.devices.countByUser((await small.store.users.byUsername('hoarder'))!.id)).toBe(3);
    } finally {
      await small.close();
    }
  });
});

describe('admin API', () => {
  test('a user token on every admin route → 403 forbidden', async () => {
    const u = as({ access: (await signIn(ctx, 'alice', PW)).access_token });
    const d = await registered('alice');
    const calls = [
      u.get('/admin/v1/devices'),
      u.get(`/admin/v1/devices/${d.id}`),
      u.delete(`/admin/v1/devices/${d.id}`),
      ...['allow', 'block', 'quarantine', 'release', 'wipe', 'resync'].map((a) => u.post(`/admin/v1/devices/${d.id}/${a}`)),
      u.get('/admin/v1/device-access-rules'),
      u.post('/admin/v1/device-access-rules', { field: 'deviceOS', match: 'exact', value: 'x', accessState: 'blocked' }),
      u.get('/admin/v1/device-access-rules/x'),
      u.put('/admin/v1/device-access-rules/x', {}),
      u.delete('/admin/v1/device-access-rules/x'),
      u.get('/admin/v1/device-access-default'),
      u.put('/admin/v1/device-access-default', { accessState: 'blocked' }),
      u.get('/admin/v1/audit'),
    ];
    for (const res of await Promise.all(calls)) {
      expect(res.status).toBe(403);
      expect(res.body.code).toBe('forbidden');
    }
    expect(await ctx.store.devices.byId(d.id)).toMatchObject({ adminDecision: null, wipeState: 'none' });
    expect(await ctx.store.deviceAccess.defaultState((await ctx.store.users.byUsername('alice'))!.tenantId)).toBe('allowed');
  });

  test('admin routes need a token: 401 first', async () => {
    expect((await request(ctx.app).get('/admin/v1/devices')).status).toBe(401);
  });

  test('inventory shows Get-MobileDevice fields and filters by user, clientType, deviceModel, accessState', async () => {
    await ctx.users.addUser({ username: 'dana', password: PW, role: 'user' });
    const d1 = await registered('dana', { clientType: 'Outlook', deviceModel: 'SM-S928B' });
    const d2 = await registered('dana', { clientType: 'PigeonMail', deviceModel: 'iPhone16,1' });
    await admin().post(`/admin/v1/devices/${d2.id}/block`).expect(200);
    const all = (await admin().get('/admin/v1/devices?user=dana')).body.devices;
    expect(all).toHaveLength(2);
    for (const key of ['id', 'username', 'friendlyName', 'deviceId', 'deviceOS', 'deviceModel', 'deviceType', 'clientType', 'userAgent', 'firstSyncTime', 'lastSyncAttemptTime', 'lastSuccessSyncTime', 'accessState', 'accessStateReason', 'wipeState']) {
      expect(all[0]).toHaveProperty(key);
    }
    const ids = async (q: string) => (await admin().get(`/admin/v1/devices?user=dana&${q}`)).body.devices.map((d: { id: string }) => d.id);
    expect(await ids('clientType=Outlook')).toEqual([d1.id]);
    expect(await ids('deviceModel=iPhone16,1')).toEqual([d2.id]);
    expect(await ids('accessState=blocked')).toEqual([d2.id]);
    expect((await admin().get('/admin/v1/devices?accessState=banana')).status).toBe(400);
    expect((await admin().get('/admin/v1/devices?user=a&user=b')).status).toBe(400);
    expect((await admin().post(`/admin/v1/devices/${d1.id}/explode`)).status).toBe(404);
    expect((await admin().post('/admin/v1/devices/no-such-device/block')).status).toBe(404);
  });

  test('rules CRUD validates input and 404s unknown ids', async () => {
    const bad = await admin().post('/admin/v1/device-access-rules', { field: 'color', match: 'fuzzy', value: '', accessState: 'maybe' });
    expect(bad.status).toBe(400);
    expect(bad.body.errors.map((e: { field: string }) => e.field).sort()).toEqual(['accessState', 'field', 'match', 'value']);
    const created = await admin().post('/admin/v1/device-access-rules', { field: 'deviceOS', match: 'prefix', value: 'Android 9', accessState: 'blocked', description: 'too old' });
    expect(created.status).toBe(201);
    expect((await admin().get(`/admin/v1/device-access-rules/${created.body.id}`)).body).toMatchObject({ value: 'Android 9', description: 'too old' });
    const updated = await admin().put(`/admin/v1/device-access-rules/${created.body.id}`, { field: 'deviceOS', match: 'prefix', value: 'Android 8', accessState: 'quarantined' });
    expect(updated.body).toMatchObject({ value: 'Android 8', accessState: 'quarantined' });
    expect((await admin().get('/admin/v1/device-access-rules')).body.rules.map((r: { id: string }) => r.id)).toContain(created.body.id);
    await admin().delete(`/admin/v1/device-access-rules/${created.body.id}`).expect(204);
    expect((await admin().get(`/admin/v1/device-access-rules/${created.body.id}`)).status).toBe(404);
    expect((await admin().put(`/admin/v1/device-access-rules/${created.body.id}`, { field: 'deviceOS', match: 'prefix', value: 'x', accessState: 'allowed' })).status).toBe(404);
    expect((await admin().delete(`/admin/v1/device-access-rules/${created.body.id}`)).status).toBe(404);
    expect((await admin().put('/admin/v1/device-access-default', { accessState: 'nope' })).status).toBe(400);
  });

  test('every admin action is in the audit log: who, what, when, which device', async () => {
    const d = await registered('bob');
    await admin().post(`/admin/v1/devices/${d.id}/quarantine`).expect(200);
    await admin().post(`/admin/v1/devices/${d.id}/release`).expect(200);
    const log = (await admin().get('/admin/v1/audit?limit=2')).body;
    expect(log.entries).toEqual([
      expect.objectContaining({ action: 'device.release', actorName: 'root', targetType: 'device', targetId: d.id, at: expect.any(String) }),
      expect.objectContaining({ action: 'device.quarantine', actorName: 'root', targetId: d.id, details: { userId: expect.any(String), deviceId: d.deviceId } }),
    ]);
    const older = (await admin().get(`/admin/v1/audit?limit=2&before=${log.next}`)).body.entries;
    expect(older[0].seq).toBeLessThan(log.entries[1].seq);
  });

  test('an admin of another tenant sees none of these devices', async () => {
    const d = await registered('alice');
    const other = await ctx.store.tenants.create('Other Org', ctx.clock.now());
    await ctx.users.addUser({ username: 'otheradmin', password: PW, role: 'admin', tenantId: other.id });
    const o = as({ access: (await signIn(ctx, 'otheradmin', PW)).access_token });
    expect((await o.get('/admin/v1/devices')).body.devices).toEqual([]);
    expect((await o.get('/admin/v1/devices?user=alice')).body.devices).toEqual([]);
    expect((await o.post(`/admin/v1/devices/${d.id}/block`)).status).toBe(404);
    expect((await o.delete(`/admin/v1/devices/${d.id}`)).status).toBe(404);
    expect((await ctx.store.devices.byId(d.id))!.adminDecision).toBeNull();
  });
});

/**
 * Counts `devices.touch` writes, whether made on the store (a transaction of their own) or as a step of a unit of
 * work (`store.run`); both still write.
 */
function countTouches(store: Store) {
  let steps = 0;
  const direct = jest.spyOn(store.devices, 'touch');
  const run = store.run.bind(store);
  const units = jest.spyOn(store, 'run').mockImplementation(<T>(unit: Unit<T>) =>
    run((tx) => {
      const touch: TxStore['devices']['touch'] = (...args) => {
        steps++;
        return tx.devices.touch(...args);
      };
      return unit({ ...tx, devices: { ...tx.devices, touch } });
    }),
  );
  return {
    calls: () => direct.mock.calls.length + steps,
    restore() {
      direct.mockRestore();
      units.mockRestore();
    },
  };
}

describe('last-seen times and inactivity', () => {
  test('last-seen times cost no write per request: buffered, then one write per device per flush', async () => {
    const d = await registered('alice');
    await ctx.built.devices.flushLastSeen();
    const touches = countTouches(ctx.store);
    try {
      for (let i = 0; i < 10; i++) {
        ctx.clock.advance(1_000);
        await as(d).get('/v1/devices').expect(200);
      }
      expect(touches.calls()).toBe(0);
      expect(await ctx.built.devices.flushLastSeen()).toBe(1);
      expect(touches.calls()).toBe(1);
      const rec = (await ctx.store.devices.byId(d.id))!;
      expect(rec.lastSuccessSyncTime).toBe(ctx.clock.now());
      expect(rec.lastSyncAttemptTime).toBe(ctx.clock.now());
      // A failed call moves the attempt time only.
      ctx.clock.advance(5_000);
      await as(d).get('/v1/devices?x=1').set('X-Device-Id', d.deviceId).expect(200);
      await as(d).post('/v1/devices/current/wipe-ack', { status: 'ok' }).expect(400);
      await ctx.built.devices.flushLastSeen();
      expect(touches.calls()).toBe(2);
      expect(await ctx.built.devices.flushLastSeen()).toBe(0);
    } finally {
      touches.restore();
    }
  });

  test('devices unseen for 30 days are purged with their tokens; a pending wipe is never purged', async () => {
    const stale = await registered('bob');
    const wiping = await registered('bob');
    await admin().post(`/admin/v1/devices/${wiping.id}/wipe`).expect(200);
    ctx.clock.advance(29 * 86400_000);
    const fresh = await registered('bob');
    ctx.clock.advance(2 * 86400_000);
    const purged = (await ctx.built.devices.purgeInactive()).map((d) => d.id);
    expect(purged).toContain(stale.id);
    expect(purged).not.toContain(fresh.id);
    expect(purged).not.toContain(wiping.id);
    expect(await ctx.store.devices.byId(stale.id)).toBeUndefined();
    expect(await ctx.store.devices.byId(wiping.id)).toBeDefined();
    expect((await refresh(stale)).body.error).toBe('invalid_grant');
    adminSession = await signInOn('root'); // a month passed: the old access token has expired
    const audit = (await admin().get('/admin/v1/audit?limit=500')).body;
    expect(audit.entries).toContainEqual(expect.objectContaining({ action: 'device.purge', actorName: 'system', targetId: stale.id }));
  });
});

describe('issue 12: a device-bound token is judged by its device, header or not, /admin included', () => {
  const noHeader = (s: Session) => as({ access: s.access });

  test('defect 1: after a wipe-ack and the record\'s removal, the pre-wipe token never works again', async () => {
    const d = await registered('alice');
    await admin().post(`/admin/v1/devices/${d.id}/wipe`).expect(200);
    await as(d).post('/v1/devices/current/wipe-ack', { status: 'ok' }).expect(200);
    expect((await as(d).get('/v1/folders/sync')).body.code).toBe('deviceWiped');
    await admin().delete(`/admin/v1/devices/${d.id}`).expect(204);

    // The probe's sequence: the same token re-registered (201) and synced (200) until its exp. Now: 401, everywhere.
    for (const call of [as(d).post('/v1/devices', { friendlyName: 'back again' }), as(d).get('/v1/folders/sync'), as(d).get('/v1/session'), noHeader(d).get('/v1/session')]) {
      const res = await call;
      expect(res.status).toBe(401);
      expect(res.body.code).toBe('unauthorized');
    }
    expect(await ctx.store.devices.byUserAndDeviceId((await ctx.store.users.byUsername('alice'))!.id, d.deviceId)).toBeUndefined();
    // Still dead an hour minus a minute later (just before its exp), and its refresh token too.
    ctx.clock.advance(59 * 60_000);
    expect((await as(d).post('/v1/devices', {})).status).toBe(401);
    expect((await refresh(d)).body.error).toBe('invalid_grant');
    // A new sign-in may register the same device id again.
    adminSession = await signInOn('root');
    const again = await signInOn('alice', d.deviceId);
    expect((await as(again).post('/v1/devices', {})).status).toBe(201);
  });

  test('defect 1: a sign-in bound on a later refresh dies whole, its earlier unbound access tokens included', async () => {
    const deviceId = newDeviceId('late');
    const t = await signIn(ctx, 'bob', PW); // no device_id: unbound
    const bound = await refresh({ access: t.access_token, refresh: t.refresh_token, deviceId });
    expect(bound.status).toBe(200);
    const early: Session = { access: t.access_token, refresh: t.refresh_token, deviceId };
    const late: Session = { access: bound.body.access_token, refresh: bound.body.refresh_token, deviceId };
    const reg = await as(late).post('/v1/devices', {});
    expect(reg.status).toBe(201);
    // The early token belongs to a sign-in now bound to this device: it may not speak for another one.
    expect((await as({ access: early.access, deviceId: newDeviceId('other') }).get('/v1/session')).status).toBe(401);
    await admin().post(`/admin/v1/devices/${reg.body.id}/wipe`).expect(200);
    await as(late).post('/v1/devices/current/wipe-ack', { status: 'ok' }).expect(200);
    await admin().delete(`/admin/v1/devices/${reg.body.id}`).expect(204);
    for (const s of [early, late]) {
      expect((await as(s).post('/v1/devices', {})).status).toBe(401);
      expect((await noHeader(s).get('/v1/session')).status).toBe(401);
    }
  });

  test('defect 2: without X-Device-Id a bound token still meets its device\'s pending wipe, wipe, or block', async () => {
    const pending = await registered('alice');
    await admin().post(`/admin/v1/devices/${pending.id}/wipe`).expect(200);
    for (const path of ['/v1/session', '/v1/folders/sync', '/v1/devices']) {
      const res = await noHeader(pending).get(path);
      expect(res.status).toBe(403);
      expect(res.body).toMatchObject({ code: 'wipeRequested', wipe: { scope: 'account' } });
    }
    // The acknowledgement itself works without the header too (the token names the device).
    await noHeader(pending).post('/v1/devices/current/wipe-ack', { status: 'ok' }).expect(200);
    for (const path of ['/v1/session', '/v1/folders/sync']) {
      const res = await noHeader(pending).get(path);
      expect(res.status).toBe(403);
      expect(res.body.code).toBe('deviceWiped');
    }

    const blocked = await registered('alice');
    await admin().post(`/admin/v1/devices/${blocked.id}/block`).expect(200);
    for (const path of ['/v1/session', '/v1/folders/sync']) {
      const res = await noHeader(blocked).get(path);
      expect(res.status).toBe(403);
      expect(res.body.code).toBe('deviceBlocked');
    }
    // An allowed, registered device's token without the header is served as that device.
    const fine = await registered('alice');
    expect((await noHeader(fine).get('/v1/folders/sync')).status).toBe(200);
    const session = await noHeader(fine).get('/v1/session');
    expect(session.status).toBe(200);
    expect(session.body.device).toMatchObject({ id: fine.id, deviceId: fine.deviceId });
  });

  test('defect 3: an admin token bound to a blocked, wipe-pending or wiped device is refused on /admin', async () => {
    await ctx.users.addUser({ username: 'root2', password: PW, role: 'admin' });
    const victim = await registered('bob');
    const adminDevice = async () => {
      const s = await signInOn('root2');
      const res = await as(s).post('/v1/devices', {});
      expect(res.status).toBe(201);
      return { ...s, id: res.body.id as string };
    };

    const blocked = await adminDevice();
    expect((await as(blocked).get('/admin/v1/devices')).status).toBe(200);
    await admin().post(`/admin/v1/devices/${blocked.id}/block`).expect(200);
    for (const s of [blocked, { access: blocked.access }]) {
      const res = await as(s).post(`/admin/v1/devices/${victim.id}/block`);
      expect(res.status).toBe(403);
      expect(res.body.code).toBe('deviceBlocked');
    }

    const wiping = await adminDevice();
    await admin().post(`/admin/v1/devices/${wiping.id}/wipe`).expect(200);
    const pendingRes = await as({ access: wiping.access }).get('/admin/v1/devices');
    expect(pendingRes.status).toBe(403);
    expect(pendingRes.body.code).toBe('wipeRequested');
    await as(wiping).post('/v1/devices/current/wipe-ack', { status: 'ok' }).expect(200);
    for (const s of [wiping, { access: wiping.access }]) {
      const res = await as(s).post(`/admin/v1/devices/${victim.id}/block`);
      expect(res.status).toBe(403);
      expect(res.body.code).toBe('deviceWiped');
    }
    // After the record goes, the sign-in it ended stays ended.
    await admin().delete(`/admin/v1/devices/${wiping.id}`).expect(204);
    expect((await as({ access: wiping.access }).post(`/admin/v1/devices/${victim.id}/block`)).status).toBe(401);
    expect((await ctx.store.devices.byId(victim.id))!.adminDecision).toBeNull();
  });
});
