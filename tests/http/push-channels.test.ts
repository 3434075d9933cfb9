/**
 * Background push channels over HTTP (issue 20), in process over a real SQLite file:
 * - `GET /v1/push/config` says what the server delivers through (the generated VAPID key; null for APNs and FCM
 *   when they are not configured, their settings when they are);
 * - `POST /v1/push/channels` registers each kind (201), refreshes the same address of the same device (200, same
 *   id), records the caller's app and session version, keeps at most maxChannelsPerDevice (the oldest goes), and
 *   refuses with 400 naming the field: http or internal endpoints (SSRF), keys that could not encrypt, tokens of the
 *   wrong shape, unknown events and members, a kind whose gateway is not configured; an unregistered device is 403;
 * - `GET` lists the calling device's channels only; `DELETE` removes one (204), another device's or user's is 404;
 * - device cuts: a wiped device's channels are deleted;
 * - end to end in process: mail delivered to the user reaches a Web Push stand-in (tests/helpers/pushGateways.ts,
 *   which checks the VAPID signature and decrypts the RFC 8291 payload) through the app createApp builds, as a
 *   silent sync and a new-mail alert showing sender and subject and nothing of them in `data`.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import { buildTestApp, signIn, asCaller, tempDir, type TestContext } from '../helpers/testApp';
import { startGatewayRig, startWebPushService, type GatewayRig, type WebPushService } from '../helpers/pushGateways';
import { createApp } from '../../server/app';
import { loadConfig } from '../../server/config';
import { ManualClock } from '../../server/clock';
import { loadKeys } from '../../server/auth/keys';
import { openSqliteStore, type SqliteStore } from '../../server/store/sqlite';
import { createUserAdmin } from '../../server/admin/users';
import { createLogger } from '../../server/logger';
import { generateVapidKeys } from '../../server/push/gateways';
import { buildPushGateways, type PushGatewaySet } from '../../server/push/background/gateways';
import { isInternalHost } from '../../server/push/background/channelService';

const PW = 'password-for-push-channel-tests';
let serial = 0;
const newDeviceId = (tag: string) => `${tag}-${String(++serial).padStart(4, '0')}-abcdefghijkl`;

interface Session {
  access: string;
  deviceId: string;
  recordId: string;
}

/** A browser's subscription at a public push service (nothing is sent there in these tests). */
function subscription(endpoint = `https://push.example.net/wpush/${crypto.randomUUID()}`) {
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.generateKeys();
  return { kind: 'webpush', endpoint, keys: { p256dh: ecdh.getPublicKey().toString('base64url'), auth: crypto.randomBytes(16).toString('base64url') } };
}

async function registered(ctx: TestContext, username: string): Promise<Session> {
  const deviceId = newDeviceId(username);
  const t = await signIn(ctx, username, PW, { device_id: deviceId });
  const res = await asCaller(ctx, { access: t.access_token, deviceId }).post('/v1/devices', { friendlyName: `${username}'s phone`, deviceModel: 'Pixel 9', clientType: 'PigeonMail', clientVersion: '2.1' });
  expect(res.status).toBe(201);
  return { access: t.access_token, deviceId, recordId: res.body.id as string };
}

describe('push channels (Web Push configured, APNs and FCM not)', () => {
  let ctx: TestContext;
  let alice: Session;
  let alice2: Session;
  let bob: Session;
  const as = (s: { access: string; deviceId?: string }) => asCaller(ctx, s);

  beforeAll(async () => {
    ctx = await buildTestApp();
    for (const username of ['alice', 'bob', 'root']) await ctx.users.addUser({ username, password: PW, role: username === 'root' ? 'admin' : 'user' });
    alice = await registered(ctx, 'alice');
    alice2 = await registered(ctx, 'alice');
    bob = await registered(ctx, 'bob');
  });
  afterAll(() => ctx.close());

  test('GET /v1/push/config: the generated VAPID key, kept in the data directory; no APNs, no FCM', async () => {
    const res = await as(alice).get('/v1/push/config');
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body).toEqual({ webPush: { applicationServerKey: expect.any(String) }, apns: null, fcm: null });
    const key = Buffer.from(res.body.webPush.applicationServerKey as string, 'base64url');
    expect(key.length).toBe(65);
    expect(key[0]).toBe(4);
    const kept = JSON.parse(fs.readFileSync(path.join(ctx.config.dataDir, 'keys', 'vapid.json'), 'utf8'));
    expect(kept.publicKey).toBe(res.body.webPush.applicationServerKey);
    expect((fs.statSync(path.join(ctx.config.dataDir, 'keys', 'vapid.json')).mode & 0o777).toString(8)).toBe('600');
  });

  test('register (201), refresh (200, same id), list, delete (204); the view never shows the Web Push keys', async () => {
    const body = subscription();
    const created = await as(alice).post('/v1/push/channels', body);
    expect(created.status).toBe(201);
    expect(created.body).toEqual({
      id: expect.any(String),
      kind: 'webpush',
      address: body.endpoint,
      keys: {},
      events: ['sync', 'newMail', 'badge', 'reminder'],
      createdAt: expect.any(String),
      updatedAt: expect.any(String),
      lastSuccessAt: null,
    });
    expect(JSON.stringify(created.body)).not.toContain(body.keys.auth);

    ctx.clock.advance(1000);
    const refreshed = await as(alice).post('/v1/push/channels', { ...subscription(body.endpoint), events: ['sync', 'badge'] });
    expect(refreshed.status).toBe(200);
    expect(refreshed.body.id).toBe(created.body.id);
    expect(refreshed.body.events).toEqual(['sync', 'badge']);
    expect(Date.parse(refreshed.body.updatedAt)).toBeGreaterThan(Date.parse(refreshed.body.createdAt));

    const list = await as(alice).get('/v1/push/channels');
    expect(list.status).toBe(200);
    expect(list.body.channels.map((c: { id: string }) => c.id)).toEqual([created.body.id]);
    // Another device of the same user lists its own channels only.
    expect((await as(alice2).get('/v1/push/channels')).body).toEqual({ channels: [] });

    expect((await as(alice).delete(`/v1/push/channels/${created.body.id}`)).status).toBe(204);
    expect((await as(alice).delete(`/v1/push/channels/${created.body.id}`)).status).toBe(404);
    expect((await as(alice).get('/v1/push/channels')).body).toEqual({ channels: [] });
  });

  test("the channel records the caller's app (clientId) and the user's session version", async () => {
    const res = await as(alice).post('/v1/push/channels', subscription());
    expect(res.status).toBe(201);
    const user = (await ctx.store.users.byUsername('alice'))!;
    const stored = (await ctx.store.push.channel(user.id, res.body.id))!;
    expect(stored).toMatchObject({ clientId: 'pigeon-app', sessionVersion: user.sessionVersion, deviceRecordId: alice.recordId, deviceId: alice.deviceId, userId: user.id, tenantId: user.tenantId });
    expect(stored.keys).toEqual({ p256dh: expect.any(String), auth: expect.any(String) });
    await as(alice).delete(`/v1/push/channels/${res.body.id}`);
  });

  test("another device's or another user's channel is 404, exactly as one that exists nowhere; nothing is deleted", async () => {
    const mine = await as(alice).post('/v1/push/channels', subscription());
    expect(mine.status).toBe(201);
    const nowhere = await as(bob).delete('/v1/push/channels/NoSuchChannel000');
    for (const other of [bob, alice2]) {
      const res = await as(other).delete(`/v1/push/channels/${mine.body.id}`);
      expect({ status: res.status, code: res.body.code }).toEqual({ status: nowhere.status, code: nowhere.body.code });
      expect(res.status).toBe(404);
      expect(res.text).not.toContain(mine.body.address);
    }
    expect((await as(alice).get('/v1/push/channels')).body.channels.map((c: { id: string }) => c.id)).toContain(mine.body.id);
    await as(alice).delete(`/v1/push/channels/${mine.body.id}`);
  });

  test('an address registered by another user moves to the new owner', async () => {
    const body = subscription();
    const first = await as(alice).post('/v1/push/channels', body);
    expect(first.status).toBe(201);
    const moved = await as(bob).post('/v1/push/channels', subscription(body.endpoint));
    expect(moved.status).toBe(201);
    expect(moved.body.id).not.toBe(first.body.id);
    expect((await as(alice).get('/v1/push/channels')).body.channels).toEqual([]);
    await as(bob).delete(`/v1/push/channels/${moved.body.id}`);
  });

  test('at most 5 channels per device: a sixth replaces the oldest', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      ctx.clock.advance(10);
      const res = await as(alice2).post('/v1/push/channels', subscription());
      expect(res.status).toBe(201);
      ids.push(res.body.id);
    }
    const left = (await as(alice2).get('/v1/push/channels')).body.channels.map((c: { id: string }) => c.id);
    expect(left).toEqual(ids.slice(1));
    for (const id of left) await as(alice2).delete(`/v1/push/channels/${id}`);
  });

  test('400 naming the field: endpoints that are not https or name internal addresses, bad keys, events, members', async () => {
    const good = subscription();
    const curveless = Buffer.concat([Buffer.from([4]), Buffer.alloc(64, 7)]).toString('base64url');
    const cases: Array<[string, unknown, string]> = [
      ['http endpoint', { ...good, endpoint: 'http://push.example.net/x' }, 'endpoint'],
      ['not a URL', { ...good, endpoint: 'push.example.net/x' }, 'endpoint'],
      ['loopback', { ...good, endpoint: 'https://127.0.0.1:8443/x' }, 'endpoint'],
      ['localhost', { ...good, endpoint: 'https://localhost/x' }, 'endpoint'],
      ['IPv6 loopback', { ...good, endpoint: 'https://[::1]/x' }, 'endpoint'],
      ['private', { ...good, endpoint: 'https://10.1.2.3/x' }, 'endpoint'],
      ['link-local metadata', { ...good, endpoint: 'https://169.254.169.254/latest/meta-data' }, 'endpoint'],
      ['IPv4-mapped private', { ...good, endpoint: 'https://[::ffff:192.168.1.1]/x' }, 'endpoint'],
      ['a single-label host', { ...good, endpoint: 'https://intranet/x' }, 'endpoint'],
      ['credentials', { ...good, endpoint: 'https://user:pw@push.example.net/x' }, 'endpoint'],
      ['p256dh of 33 bytes', { ...good, keys: { ...good.keys, p256dh: crypto.randomBytes(33).toString('base64url') } }, 'keys.p256dh'],
      ['p256dh not on the curve', { ...good, keys: { ...good.keys, p256dh: curveless } }, 'keys.p256dh'],
      ['p256dh not base64url', { ...good, keys: { ...good.keys, p256dh: '!!!' } }, 'keys.p256dh'],
      ['auth of 15 bytes', { ...good, keys: { ...good.keys, auth: crypto.randomBytes(15).toString('base64url') } }, 'keys.auth'],
      ['no keys', { kind: 'webpush', endpoint: good.endpoint }, 'keys'],
      ['an unknown event', { ...good, events: ['sync', 'spam'] }, 'events.1'],
      ['a repeated event', { ...good, events: ['sync', 'sync'] }, 'events'],
      ['no events', { ...good, events: [] }, 'events'],
      ['an unknown kind', { ...good, kind: 'sms' }, 'kind'],
      ['an unknown member', { ...good, userId: 'someone-else' }, '(root)'],
      ['an APNs member on Web Push', { ...good, address: 'ab'.repeat(32) }, '(root)'],
    ];
    for (const [name, body, field] of cases) {
      const res = await as(alice).post('/v1/push/channels', body as object);
      expect({ name, status: res.status, code: res.body.code }).toEqual({ name, status: 400, code: 'invalidRequest' });
      expect({ name, fields: (res.body.errors as Array<{ field: string }>).map((e) => e.field) }).toEqual({ name, fields: expect.arrayContaining([field]) });
    }
    expect((await as(alice).get('/v1/push/channels')).body.channels).toEqual([]);
  });

  test('a kind whose gateway is not configured is 400 naming kind', async () => {
    for (const body of [
      { kind: 'apns', address: 'ab'.repeat(32), keys: { topic: 'org.pigeon.mail', environment: 'sandbox' } },
      { kind: 'fcm', address: 'fcm-token:APA91b-xyz' },
    ]) {
      const res = await as(alice).post('/v1/push/channels', body);
      expect({ status: res.status, code: res.body.code, fields: res.body.errors?.map((e: { field: string }) => e.field) }).toEqual({ status: 400, code: 'invalidRequest', fields: ['kind'] });
    }
  });

  test('a device that is not registered is 403 deviceNotRegistered; no token is 401', async () => {
    const t = await signIn(ctx, 'alice', PW);
    const res = await as({ access: t.access_token, deviceId: newDeviceId('unregistered') }).post('/v1/push/channels', subscription());
    expect({ status: res.status, code: res.body.code }).toEqual({ status: 403, code: 'deviceNotRegistered' });
    expect((await request(ctx.app).post('/v1/push/channels').send(subscription())).status).toBe(401);
  });

  test("a wiped device's channels are deleted", async () => {
    const carol = await (async () => {
      await ctx.users.addUser({ username: 'carol', password: PW, role: 'user' });
      return registered(ctx, 'carol');
    })();
    const channel = await as(carol).post('/v1/push/channels', subscription());
    expect(channel.status).toBe(201);
    const user = (await ctx.store.users.byUsername('carol'))!;
    const root = await signIn(ctx, 'root', PW);
    expect((await as({ access: root.access_token }).post(`/admin/v1/devices/${carol.recordId}/wipe`)).status).toBeLessThan(300);
    // A wipe requested: the channel stays (nothing is sent: the device is not reachable) until the wipe is done.
    expect((await as(carol).post('/v1/devices/current/wipe-ack', { status: 'ok' })).status).toBeLessThan(300);
    for (let i = 0; i < 50 && (await ctx.store.push.channelsOfUser(user.id)).length > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(await ctx.store.push.channelsOfUser(user.id)).toEqual([]);
  });

  test('isInternalHost: public names and addresses pass, internal ones do not', () => {
    for (const host of ['push.example.net', 'fcm.googleapis.com', '8.8.8.8', '[2001:4860:4860::8888]']) expect({ host, internal: isInternalHost(host) }).toEqual({ host, internal: false });
    for (const host of ['localhost', 'a.localhost', 'printer.local', '127.0.0.1', '10.0.0.1', '172.16.5.4', '192.168.0.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '[::1]', '[fe80::1]', '[fd00::1]', 'intranet']) {
      expect({ host, internal: isInternalHost(host) }).toEqual({ host, internal: true });
    }
  });
});

describe('push channels with APNs and FCM configured (their stand-ins\' settings)', () => {
  let rig: GatewayRig;
  let ctx: TestContext;
  let alice: Session;

  beforeAll(async () => {
    rig = await startGatewayRig();
    const env = Object.fromEntries(Object.entries(rig.env).filter(([k]) => k.startsWith('PIGEON_')));
    ctx = await buildTestApp({}, env);
    await ctx.users.addUser({ username: 'alice', password: PW, role: 'user' });
    alice = await registered(ctx, 'alice');
  });
  afterAll(async () => {
    await ctx?.built.pushGateways.close();
    await ctx?.close();
    await rig?.close();
  });

  test('GET /v1/push/config names the APNs environments and the FCM project', async () => {
    const res = await asCaller(ctx, alice).get('/v1/push/config');
    expect(res.body).toEqual({ webPush: { applicationServerKey: expect.any(String) }, apns: { environments: ['production', 'sandbox'] }, fcm: { projectId: 'pigeon-push-test' } });
  });

  test('each kind registers (201) and refreshes (200); loopback Web Push endpoints are allowed by the setting', async () => {
    const config = await asCaller(ctx, alice).get('/v1/push/config');
    for (const kind of ['webpush', 'apns', 'fcm'] as const) {
      const channel = rig.channel(kind, config.body.webPush.applicationServerKey);
      const created = await asCaller(ctx, alice).post('/v1/push/channels', channel.body);
      expect({ kind, status: created.status }).toEqual({ kind, status: 201 });
      expect(created.body).toMatchObject({ kind, address: channel.address });
      if (kind === 'apns') expect(created.body.keys).toEqual({ topic: rig.apnsTopic, environment: 'sandbox' });
      const again = await asCaller(ctx, alice).post('/v1/push/channels', channel.body);
      expect({ kind, status: again.status, id: again.body.id }).toEqual({ kind, status: 200, id: created.body.id });
    }
  });

  test('APNs and FCM tokens of the wrong shape are 400 naming address', async () => {
    const apns = (address: string) => ({ kind: 'apns', address, keys: { topic: rig.apnsTopic } });
    const fcm = (address: string) => ({ kind: 'fcm', address });
    for (const body of [apns('ab'.repeat(31) + 'a'), apns('zz'.repeat(32)), apns('ab'.repeat(101)), fcm(''), fcm('has a space'), fcm('x'.repeat(4097)), fcm('tab\there')]) {
      const res = await asCaller(ctx, alice).post('/v1/push/channels', body);
      expect({ status: res.status, fields: [...new Set(res.body.errors?.map((e: { field: string }) => e.field))] }).toEqual({ status: 400, fields: ['address'] });
    }
    const badTopic = await asCaller(ctx, alice).post('/v1/push/channels', { kind: 'apns', address: 'ab'.repeat(32), keys: { topic: 'not a bundle id' } });
    expect(badTopic.body.errors?.map((e: { field: string }) => e.field)).toEqual(['keys.topic']);
  });
});

describe('end to end in process: a message delivered to the user reaches a Web Push stand-in', () => {
  let webPush: WebPushService;
  let store: SqliteStore;
  let dir: string;
  let gateways: PushGatewaySet;
  let built: ReturnType<typeof createApp>;

  beforeAll(async () => {
    webPush = await startWebPushService();
    dir = tempDir();
    const config = loadConfig({ PIGEON_DATA_DIR: dir, PIGEON_DEMO: 'false', PIGEON_PASSWORD_GRANT: 'true', PIGEON_PUSH_ALLOW_PRIVATE_ENDPOINTS: 'true', PIGEON_MAIL_HOSTNAME: 'mail.push.test' });
    store = openSqliteStore(path.join(dir, 'pigeon.db'));
    const keys = await loadKeys(config);
    const clock = new ManualClock(Date.now());
    const log = createLogger({ logLevel: 'silent', logPretty: false });
    gateways = buildPushGateways(config, { vapid: generateVapidKeys(), ca: webPush.ca });
    built = createApp({ config, store, keys, clock, log, lag: { lagMs: () => 0, stop() {} }, backgroundPush: { gateways } });
    await createUserAdmin(store, clock).addUser({ username: 'dora', password: PW, role: 'user', email: 'dora@push.test' });
  });
  afterAll(async () => {
    await built?.backgroundPush.stop();
    await gateways?.close();
    await store?.close();
    await webPush?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('sync (silent, badge) and a new-mail alert with sender and subject, nothing of them in data', async () => {
    // What signIn and asCaller read of a test context: the app, and where the passwords used are noted.
    const ctx = { app: built.app, secrets: new Set<string>() } as unknown as TestContext;
    const dora = await registered(ctx, 'dora');
    const config = await asCaller(ctx, dora).get('/v1/push/config');
    expect(config.body.webPush.applicationServerKey).toBe(gateways.view.webPush!.applicationServerKey);
    const sub = webPush.subscribe(config.body.webPush.applicationServerKey);
    const reg = await asCaller(ctx, dora).post('/v1/push/channels', { kind: 'webpush', endpoint: sub.endpoint, keys: { p256dh: sub.p256dh, auth: sub.auth }, expirationTime: null });
    expect(reg.status).toBe(201);

    const user = (await store.users.byUsername('dora'))!;
    const raw = Buffer.from(
      ['From: Quentin Sender <quentin@example.org>', 'To: dora@push.test', 'Subject: Quarterly figures', 'Message-ID: <push-e2e-1@example.org>', 'Date: Mon, 07 Dec 2026 08:00:00 +0000', 'Content-Type: text/plain', '', 'The figures.', ''].join('\r\n'),
    );
    const [result] = await built.delivery.deliver(await built.delivery.prepare(raw), [{ userId: user.id }], { duplicates: 'live' });
    expect(result!.itemId).toBeTruthy();

    const report = await built.backgroundPush.runOnce();
    expect(report.sent).toBeGreaterThanOrEqual(2);
    expect(webPush.refused).toEqual([]);
    const received = webPush.received.filter((r) => r.subscriptionId === sub.id).map((r) => ({ ...r, payload: JSON.parse(r.plaintext) as Record<string, unknown> }));
    const sync = received.find((r) => r.payload.type === 'sync');
    const alert = received.find((r) => r.payload.type === 'newMail');
    expect(sync).toBeDefined();
    expect(alert).toBeDefined();
    expect(sync!.urgency).toBe('normal');
    expect(alert!.urgency).toBe('high');
    expect(alert!.payload.alert).toEqual({ title: 'Quentin Sender', body: 'Quarterly figures' });
    // The VAPID subject defaults to the postmaster of the mail host name.
    expect(alert!.vapid.claims.sub).toBe('mailto:postmaster@mail.push.test');
    const { alert: _shown, ...rest } = alert!.payload;
    expect(JSON.stringify(rest)).not.toMatch(/Quentin|Quarterly|quentin@example\.org/);
    expect(JSON.stringify(sync!.payload)).not.toMatch(/Quentin|Quarterly/);
    const channel = (await store.push.channel(user.id, reg.body.id))!;
    expect(channel.lastSuccessAt).not.toBeNull();
  });
});
