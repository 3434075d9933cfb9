/**
 * The background push engine (server/push/background) over a real SQLite store file, sending through the real
 * gateway clients (server/push/gateways) to the spec-written stand-ins (tests/helpers/pushGateways.ts): what each
 * gateway receives for new mail (and what it must not: no preview of protected or label-restricted mail),
 * coalescing, gone channels, retries with Retry-After, giving up, blocked devices, rate limits, calendar reminders
 * and their cancellation with an injected clock, and a crashed drainer's delivery sent again with the same id.
 */
import crypto from 'node:crypto';
import pino from 'pino';
import { Registry } from 'prom-client';
import { ManualClock } from '../../server/clock';
import type { EventData } from '../../server/calendar/model';
import { createBackgroundPush } from '../../server/push/background';
import { DEFAULT_BACKGROUND_PUSH_OPTIONS, type BackgroundPush, type BackgroundPushOptions, type PreviewLevel } from '../../server/push/background/types';
import { createDrain } from '../../server/push/background/drain';
import { DeviceBuckets, perSecondBucket } from '../../server/push/background/limits';
import { createApnsGateway, createFcmGateway, createWebPushGateway, generateVapidKeys, type Gateway, type PushKind } from '../../server/push/gateways';
import { PUSH_EVENT_KINDS, type DeviceRecord, type Folder, type PushChannelRecord, type Store, type User } from '../../server/store/types';
import { startApnsService, startFcmService, startWebPushService, type ApnsService, type CannedAnswer, type FcmService, type WebPushService, type BrowserSubscription } from '../helpers/pushGateways';
import { openTestStore, STORE_BACKENDS, type StoreBackend, type TestStore } from '../helpers/storeBackends';

const TIMEOUT_MS = 5000;
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const DESCRIPTION = { friendlyName: null, deviceType: null, deviceModel: null, deviceOS: null, clientType: null, clientVersion: null, userAgent: null, capabilities: [] };

const apnsTeam = { teamId: 'TEAM123456', keyId: 'KEY7654321', topic: 'org.pigeon.mail' };
const apnsKeys = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const fcmAccount = { projectId: 'pigeon-test', clientEmail: 'push@pigeon-test.iam.gserviceaccount.com' };
const fcmKeys = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const vapid = { subject: 'mailto:push@pigeon.test', ...generateVapidKeys() };

let webPush: WebPushService;
let apns: ApnsService;
let fcm: FcmService;
let gateways: Record<PushKind, Gateway>;

beforeAll(async () => {
  webPush = await startWebPushService();
  apns = await startApnsService({ ...apnsTeam, publicKey: apnsKeys.publicKey });
  fcm = await startFcmService({ ...fcmAccount, publicKey: fcmKeys.publicKey });
  gateways = {
    webpush: createWebPushGateway({ vapid, timeoutMs: TIMEOUT_MS, ca: webPush.ca }),
    apns: createApnsGateway({ teamId: apnsTeam.teamId, keyId: apnsTeam.keyId, privateKeyPem: apnsKeys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), origin: apns.origin, timeoutMs: TIMEOUT_MS, ca: apns.ca }),
    fcm: createFcmGateway({
      projectId: fcmAccount.projectId,
      serviceAccount: { client_email: fcmAccount.clientEmail, private_key: fcmKeys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), token_uri: fcm.tokenUri },
      origin: fcm.origin,
      timeoutMs: TIMEOUT_MS,
    }),
  };
});

afterAll(async () => {
  for (const gateway of Object.values(gateways ?? {})) await gateway.close();
  await webPush?.close();
  await apns?.close();
  await fcm?.close();
});

/** A policy tests change as they go. */
function testPolicy() {
  const state = {
    content: new Map<string, PreviewLevel>(),
    forbiddenLabels: new Set<string>(),
    blockedDevices: new Set<string>(),
  };
  return {
    state,
    policy: {
      notificationContent: async (_tenant: string, _user: string, clientId: string) => state.content.get(clientId) ?? 'full',
      labelAllowsPreview: async (_tenant: string, labelId: string) => !state.forbiddenLabels.has(labelId),
      deviceReachable: async (_user: string, _tenant: string, deviceId: string) => !state.blockedDevices.has(deviceId),
    },
  };
}

interface World {
  test: TestStore;
  store: Store;
  clock: ManualClock;
  push: BackgroundPush;
  policy: ReturnType<typeof testPolicy>['state'];
  metrics: Registry;
  user: User;
  inbox: Folder;
  calendar: Folder;
  device(name: string): Promise<DeviceRecord>;
  channel(device: DeviceRecord, kind: PushKind, address: string, keys: Record<string, string>, clientId?: string): Promise<PushChannelRecord>;
  webPushChannel(device: DeviceRecord, clientId?: string): Promise<{ channel: PushChannelRecord; subscription: BrowserSubscription }>;
  mail(fields?: { subject?: string; from?: { name: string; address: string }; data?: Record<string, unknown> }): Promise<string>;
}

const worlds: World[] = [];
/** The backend the running block's worlds are built on (the engine's own block runs on both). */
let backend: StoreBackend = 'sqlite';

async function world(options: Partial<BackgroundPushOptions> = {}): Promise<World> {
  const test = await openTestStore(backend, { name: 'bgpush' });
  const store = test.store;
  const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
  const { state, policy } = testPolicy();
  const metrics = new Registry();
  const tenant = await store.tenants.create('Pigeon', clock.now());
  const user = await store.users.create({ tenantId: tenant.id, username: 'ada', email: 'ada@pigeon.test', displayName: 'Ada', role: 'user', passwordHash: null }, clock.now());
  await store.mailboxes.create(user.id, clock.now());
  const inbox = (await store.folders.byKind(user.id, 'inbox'))!;
  const calendar = (await store.folders.byKind(user.id, 'calendar'))!;
  const push = createBackgroundPush({
    store,
    clock,
    log: pino({ level: 'silent' }),
    gateways,
    policy,
    metrics,
    options: { retryBaseMs: 1000, retryMaxMs: 10_000, ...options },
  });
  const w: World = {
    test,
    store,
    clock,
    push,
    policy: state,
    metrics,
    user,
    inbox,
    calendar,
    device: (name) => store.devices.create(user.id, name, DESCRIPTION, clock.now()),
    channel: (device, kind, address, keys, clientId = 'pigeon-app') =>
      store.push.putChannel(
        { tenantId: user.tenantId, userId: user.id, deviceRecordId: device.id, deviceId: device.deviceId, clientId, sessionVersion: user.sessionVersion, kind, address, keys, events: [...PUSH_EVENT_KINDS] },
        clock.now(),
      ),
    async webPushChannel(device, clientId) {
      const subscription = webPush.subscribe(vapid.publicKey);
      const channel = await w.channel(device, 'webpush', subscription.endpoint, { p256dh: subscription.p256dh, auth: subscription.auth }, clientId);
      return { channel, subscription };
    },
    async mail(fields = {}) {
      const item = await store.items.create(
        {
          userId: user.id,
          folderId: inbox.id,
          type: 'email',
          receivedAt: clock.now(),
          subject: fields.subject ?? 'Engine notes',
          from: fields.from ?? { name: 'Charles Babbage', address: 'charles@example.com' },
          data: fields.data,
        },
        clock.now(),
      );
      return item.id;
    },
  };
  worlds.push(w);
  return w;
}

afterEach(async () => {
  for (const w of worlds.splice(0)) {
    await w.push.stop();
    await w.test.close();
  }
});

const webPushes = (subscription: BrowserSubscription) =>
  webPush.received.filter((p) => p.subscriptionId === subscription.id).map((p) => ({ ...p, payload: JSON.parse(p.plaintext) as Record<string, unknown> }));
const apnsTo = (token: string) => apns.requests.filter((r) => r.deviceToken === token);
const fcmTo = (token: string) => fcm.requests.filter((r) => r.message.token === token);
const token = () => crypto.randomBytes(16).toString('hex');
const clear = (answer?: CannedAnswer) => answer as CannedAnswer;

describe.each(STORE_BACKENDS)('background push engine (%s store, real gateway clients, stand-in gateways)', (storeBackend) => {
  beforeAll(() => {
    backend = storeBackend;
  });
  afterAll(() => {
    backend = 'sqlite';
  });

  it('delivers new mail to a Web Push, an APNs and an FCM channel, each with the preview its app may show', async () => {
    const w = await world();
    w.policy.content.set('locked-app', 'none');
    const phone = await w.device('phone-0001');
    const open = await w.webPushChannel(phone, 'pigeon-app');
    const locked = await w.webPushChannel(phone, 'locked-app');
    const apnsToken = token();
    await w.channel(phone, 'apns', apnsToken, { topic: apnsTeam.topic, environment: 'production' });
    const fcmToken = token();
    await w.channel(phone, 'fcm', fcmToken, {});
    const itemId = await w.mail();

    const report = await w.push.runOnce();
    expect(report).toMatchObject({ composed: 1, retried: 0, gone: 0, dropped: 0 });
    expect(report.sent).toBe(8); // sync + one alert, for each of four channels
    expect(webPush.refused).toEqual([]);
    expect(apns.refused).toEqual([]);
    expect(fcm.refused).toEqual([]);

    const full = webPushes(open.subscription);
    expect(full.map((p) => p.payload.type).sort()).toEqual(['newMail', 'sync']);
    const alert = full.find((p) => p.payload.type === 'newMail')!;
    expect(alert.payload).toMatchObject({ alert: { title: 'Charles Babbage', body: 'Engine notes' }, data: { type: 'newMail', itemId, folderId: w.inbox.id }, badge: 1 });
    expect(alert.urgency).toBe('high');
    const sync = full.find((p) => p.payload.type === 'sync')!;
    expect(sync.payload).toMatchObject({ data: { type: 'sync' }, badge: 1 });
    expect(sync.urgency).toBe('normal');
    expect(sync.ttl).toBe(86400);

    const hidden = webPushes(locked.subscription);
    expect(hidden.map((p) => p.payload.type).sort()).toEqual(['newMail', 'sync']);
    expect(hidden.find((p) => p.payload.type === 'newMail')!.payload.alert).toEqual({ title: 'New message', body: '' });
    for (const push of hidden) expect(push.plaintext).not.toMatch(/Engine|Charles|charles@/);

    const apnsAlert = apnsTo(apnsToken).find((r) => r.headers['apns-push-type'] === 'alert')!;
    expect(apnsAlert.payload).toMatchObject({ aps: { alert: { title: 'Charles Babbage', body: 'Engine notes' } }, type: 'newMail' });
    expect(apnsAlert.headers['apns-collapse-id']).toBe(`mail:${itemId}`);
    expect(apnsTo(apnsToken).find((r) => r.headers['apns-push-type'] === 'background')!.headers['apns-collapse-id']).toBe('sync');
    const fcmAlert = fcmTo(fcmToken).find((r) => (r.message.data as Record<string, string>).type === 'newMail')!;
    expect((fcmAlert.message.android as Record<string, unknown>).notification).toMatchObject({ title: 'Charles Babbage', body: 'Engine notes' });
    expect(fcmTo(fcmToken)).toHaveLength(2);

    expect(await w.store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
    expect(await w.store.push.outboxSize()).toBe(0);
    const text = await w.metrics.metrics();
    expect(text).toMatch(/pigeon_push_delivery_seconds_count\{kind="webpush",type="newMail"\} 2/);
    expect(text).toMatch(/pigeon_push_deliveries_total\{outcome="sent",kind="apns",type="sync"\} 1/);
  });

  it('shows no sender or subject of protected mail or mail under a label that forbids it, through any gateway', async () => {
    const w = await world();
    w.policy.forbiddenLabels.add('label-confidential');
    const phone = await w.device('phone-0002');
    const web = await w.webPushChannel(phone);
    const apnsToken = token();
    await w.channel(phone, 'apns', apnsToken, { topic: apnsTeam.topic, environment: 'production' });
    const fcmToken = token();
    await w.channel(phone, 'fcm', fcmToken, {});
    await w.mail({ subject: 'Merger terms', from: { name: 'Grace Hopper', address: 'grace@example.com' }, data: { protection: { owner: 'grace@example.com', template: { id: 't', name: 'Do not forward' } } } });
    await w.mail({ subject: 'Salary review', from: { name: 'Alan Turing', address: 'alan@example.com' }, data: { label: { id: 'label-confidential', name: 'Confidential' } } });
    await w.mail({ subject: 'Sealed offer', from: { name: 'Edsger Dijkstra', address: 'edsger@example.com' }, data: { smime: { kind: 'encrypted', signature: null } } });

    const report = await w.push.runOnce();
    expect(report.sent).toBe(12); // sync + three alerts per channel
    const everything = JSON.stringify([webPushes(web.subscription).map((p) => p.plaintext), apnsTo(apnsToken), fcmTo(fcmToken)]);
    for (const secret of ['Merger', 'Grace', 'grace@', 'Salary', 'Alan', 'alan@', 'Sealed', 'Edsger', 'edsger@']) expect(everything).not.toContain(secret);
    const alerts = webPushes(web.subscription).filter((p) => p.payload.type === 'newMail');
    expect(alerts).toHaveLength(3);
    for (const alert of alerts) expect(alert.payload.alert).toEqual({ title: 'New message', body: '' });
  });

  it('coalesces: ten changes before a pass make one sync message per channel', async () => {
    const w = await world();
    const phone = await w.device('phone-0003');
    const web = await w.webPushChannel(phone);
    const apnsToken = token();
    await w.channel(phone, 'apns', apnsToken, { topic: apnsTeam.topic, environment: 'production' });
    const itemId = await w.mail();
    await w.push.runOnce();
    const before = { web: webPushes(web.subscription).length, apns: apnsTo(apnsToken).length };
    for (let i = 0; i < 10; i++) await w.store.items.update(w.user.id, itemId, { isFlagged: i % 2 === 0 }, w.clock.now());
    expect(await w.store.push.outboxSize()).toBe(1);

    const report = await w.push.runOnce();
    expect(report).toMatchObject({ composed: 1, sent: 2 });
    const web2 = webPushes(web.subscription).slice(before.web);
    expect(web2.map((p) => p.payload.type)).toEqual(['sync']);
    expect(apnsTo(apnsToken).slice(before.apns).map((r) => r.payload.type)).toEqual(['sync']);
  });

  it('summarises new mail beyond alertsPerPass in one alert', async () => {
    const w = await world({ alertsPerPass: 2 });
    const phone = await w.device('phone-0004');
    const web = await w.webPushChannel(phone);
    for (let i = 0; i < 5; i++) await w.mail({ subject: `Message ${i}` });
    await w.push.runOnce();
    const alerts = webPushes(web.subscription).filter((p) => p.payload.type === 'newMail');
    expect(alerts).toHaveLength(3);
    expect(alerts.filter((p) => (p.payload.data as Record<string, unknown>).itemId !== undefined)).toHaveLength(2);
    expect(alerts.find((p) => (p.payload.data as Record<string, unknown>).count === 5)!.payload.alert).toEqual({ title: '5 new messages', body: '' });
  });

  it('removes a channel the gateway says is gone (Web Push 410, APNs Unregistered, FCM UNREGISTERED)', async () => {
    const w = await world();
    const phone = await w.device('phone-0005');
    const web = await w.webPushChannel(phone);
    webPush.answerWith(web.subscription.id, { status: 410 });
    const apnsToken = token();
    const apnsChannel = await w.channel(phone, 'apns', apnsToken, { topic: apnsTeam.topic, environment: 'production' });
    apns.answerWith(apnsToken, { status: 410, reason: 'Unregistered' });
    const fcmToken = token();
    const fcmChannel = await w.channel(phone, 'fcm', fcmToken, {});
    fcm.answerWith(fcmToken, { status: 404, reason: 'UNREGISTERED' });
    await w.mail();

    const report = await w.push.runOnce();
    expect(report.gone).toBeGreaterThanOrEqual(3);
    expect(await w.store.push.channel(w.user.id, web.channel.id)).toBeUndefined();
    expect(await w.store.push.channel(w.user.id, apnsChannel.id)).toBeUndefined();
    expect(await w.store.push.channel(w.user.id, fcmChannel.id)).toBeUndefined();
    expect(await w.store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
  });

  it('retries after 429 and 503 no sooner than Retry-After, then delivers', async () => {
    const w = await world();
    const phone = await w.device('phone-0006');
    const web = await w.webPushChannel(phone);
    webPush.answerWith(web.subscription.id, { status: 429, retryAfter: '120' });
    const fcmToken = token();
    const fcmChannel = await w.channel(phone, 'fcm', fcmToken, {});
    fcm.answerWith(fcmToken, { status: 503, reason: 'UNAVAILABLE', retryAfter: '30' });
    await w.mail();

    const first = await w.push.runOnce();
    expect(first).toMatchObject({ sent: 0, retried: 4 });
    expect(await w.store.push.queueSize()).toEqual({ queued: 4, sending: 0 });
    expect((await w.store.push.channel(w.user.id, fcmChannel.id))!.failures).toBe(2);
    webPush.answerWith(web.subscription.id, clear());
    fcm.answerWith(fcmToken, clear());

    w.clock.advance(29_000);
    expect(await w.push.runOnce()).toMatchObject({ sent: 0, retried: 0 });
    w.clock.advance(2_000); // 31 s: FCM's Retry-After is over, Web Push's is not
    expect(await w.push.runOnce()).toMatchObject({ sent: 2 });
    expect(fcmTo(fcmToken)).toHaveLength(2);
    expect(webPushes(web.subscription)).toHaveLength(0);
    expect((await w.store.push.channel(w.user.id, fcmChannel.id))!.failures).toBe(0);
    w.clock.advance(90_000); // 121 s
    expect(await w.push.runOnce()).toMatchObject({ sent: 2 });
    expect(webPushes(web.subscription).map((p) => p.payload.type).sort()).toEqual(['newMail', 'sync']);
    expect(await w.store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
  });

  it('gives a message up after maxAttempts', async () => {
    const w = await world({ maxAttempts: 3, alertsPerPass: 0 });
    const phone = await w.device('phone-0007');
    const apnsToken = token();
    const channel = await w.channel(phone, 'apns', apnsToken, { topic: apnsTeam.topic, environment: 'production' });
    apns.answerWith(apnsToken, { status: 503, reason: 'ServiceUnavailable' });
    await w.store.items.update(w.user.id, await w.mail(), { isRead: true }, w.clock.now());
    // alertsPerPass 0 and a read message: a summary alert is not owed (nothing unread and new) — only the sync.
    const reports = [];
    for (let i = 0; i < 3; i++) {
      reports.push(await w.push.runOnce());
      w.clock.advance(10_000);
    }
    expect(reports.map((r) => [r.retried, r.dropped])).toEqual([[1, 0], [1, 0], [0, 1]]);
    expect(await w.store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
    // The channel stays (failures < maxChannelFailures), with its failures counted.
    expect((await w.store.push.channel(w.user.id, channel.id))!.failures).toBe(3);
  });

  it('sends nothing to a blocked device and drops its queue', async () => {
    const w = await world();
    const blocked = await w.device('phone-blocked');
    const other = await w.device('phone-other');
    const web = await w.webPushChannel(blocked);
    const fine = await w.webPushChannel(other);
    webPush.answerWith(web.subscription.id, { status: 503, retryAfter: '300' });
    await w.mail();
    expect(await w.push.runOnce()).toMatchObject({ retried: 2, sent: 2 });
    expect(await w.store.push.queueSize()).toEqual({ queued: 2, sending: 0 });

    webPush.answerWith(web.subscription.id, clear());
    w.policy.blockedDevices.add('phone-blocked');
    await w.mail({ subject: 'Second' });
    await w.push.runOnce();
    expect(await w.store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
    w.clock.advance(10 * MINUTE);
    await w.push.runOnce();
    expect(webPushes(web.subscription)).toHaveLength(0);
    expect(webPushes(fine.subscription).filter((p) => p.payload.type === 'newMail')).toHaveLength(2);
  });

  it('drops what is queued for a device blocked after it was queued (the drain checks)', async () => {
    const w = await world();
    const phone = await w.device('phone-late-block');
    const web = await w.webPushChannel(phone);
    webPush.answerWith(web.subscription.id, { status: 503 });
    await w.mail();
    await w.push.runOnce();
    webPush.answerWith(web.subscription.id, clear());
    w.policy.blockedDevices.add('phone-late-block');
    w.clock.advance(MINUTE);
    const report = await w.push.runOnce();
    expect(report.dropped).toBeGreaterThanOrEqual(1);
    expect(await w.store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
    expect(webPushes(web.subscription)).toHaveLength(0);
  });

  it('defers what is over the per-device rate limit (not dropped) and sends it when tokens are back', async () => {
    const w = await world({ perDevicePerMinute: 2, alertsPerPass: 3 });
    const phone = await w.device('phone-0008');
    const web = await w.webPushChannel(phone);
    for (let i = 0; i < 3; i++) await w.mail({ subject: `Message ${i}` });
    const first = await w.push.runOnce();
    expect(first).toMatchObject({ sent: 2, dropped: 0 });
    expect(await w.store.push.queueSize()).toEqual({ queued: 2, sending: 0 });
    w.clock.advance(30_000);
    // SQLite: this process's token bucket (one token back after 30 s). PostgreSQL: the one-minute window every node
    // shares (nothing until it ends, then the next two).
    expect(await w.push.runOnce()).toMatchObject({ sent: backend === 'postgres' ? 0 : 1 });
    w.clock.advance(30_000);
    expect(await w.push.runOnce()).toMatchObject({ sent: backend === 'postgres' ? 2 : 1 });
    expect(webPushes(web.subscription)).toHaveLength(4);
    expect(await w.store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
  });

  it('defers over the global per-second limit', async () => {
    const w = await world({ globalPerSecond: 1, alertsPerPass: 0 });
    const phones = [await w.device('phone-g1'), await w.device('phone-g2'), await w.device('phone-g3')];
    const subs = [];
    for (const phone of phones) subs.push(await w.webPushChannel(phone));
    await w.store.items.update(w.user.id, await w.mail(), { isRead: true }, w.clock.now());
    expect(await w.push.runOnce()).toMatchObject({ sent: 1, dropped: 0 });
    w.clock.advance(1000);
    expect(await w.push.runOnce()).toMatchObject({ sent: 1 });
    w.clock.advance(1000);
    expect(await w.push.runOnce()).toMatchObject({ sent: 1 });
    for (const sub of subs) expect(webPushes(sub.subscription).map((p) => p.payload.type)).toEqual(['sync']);
  });

  function event(start: number, overrides: Partial<EventData> = {}): EventData {
    return {
      uid: crypto.randomUUID(),
      sequence: 0,
      start: new Date(start).toISOString(),
      end: new Date(start + HOUR).toISOString(),
      timeZone: 'UTC',
      isAllDay: false,
      location: null,
      organizer: null,
      attendees: [],
      reminderMinutesBeforeStart: 15,
      recurrence: null,
      exceptions: [],
      showAs: 'busy',
      isCancelled: false,
      responseStatus: 'organizer',
      lastItipStamp: null,
      ...overrides,
    };
  }

  it('fires a reminder at its due time (injected clock), and cancels it when the event is deleted', async () => {
    const w = await world();
    const phone = await w.device('phone-0009');
    const apnsToken = token();
    await w.channel(phone, 'apns', apnsToken, { topic: apnsTeam.topic, environment: 'production' });
    const start = w.clock.now() + 2 * HOUR;
    const item = await w.store.items.create({ userId: w.user.id, folderId: w.calendar.id, type: 'event', receivedAt: start, subject: 'Standup', data: event(start) as unknown as Record<string, unknown> }, w.clock.now());
    await w.push.runOnce();
    expect(await w.store.push.reminder(w.user.id, item.id)).toEqual({ userId: w.user.id, itemId: item.id, occurrenceStart: start, dueAt: start - 15 * MINUTE, sentAt: null, shown: null });
    const reminders = () => apnsTo(apnsToken).filter((r) => r.payload.type === 'reminder' || r.payload.type === 'reminderCancel');

    w.clock.set(start - 15 * MINUTE - 1000);
    await w.push.runOnce();
    expect(reminders()).toHaveLength(0);
    w.clock.set(start - 15 * MINUTE);
    const fired = await w.push.runOnce();
    expect(fired).toMatchObject({ composed: 1, sent: 1 });
    expect(reminders()).toHaveLength(1);
    const reminder = reminders()[0]!;
    expect(reminder.payload).toMatchObject({ aps: { alert: { title: 'Standup', body: `Starts at ${new Date(start).toISOString()}` } }, type: 'reminder', data: { type: 'reminder', itemId: item.id, start: new Date(start).toISOString() } });
    expect(reminder.headers['apns-collapse-id']).toBe(`reminder:${item.id}`);
    expect(reminder.headers['apns-expiration']).toBeDefined();
    expect((await w.store.push.reminder(w.user.id, item.id))!.sentAt).toBe(start - 15 * MINUTE);
    // Another pass sends it no more.
    w.clock.advance(MINUTE);
    await w.push.runOnce();
    expect(reminders()).toHaveLength(1);

    await w.store.items.delete(w.user.id, item.id, w.clock.now());
    await w.push.runOnce();
    expect(reminders().map((r) => r.payload.type)).toEqual(['reminder', 'reminderCancel']);
    const cancel = reminders()[1]!;
    expect(cancel.headers['apns-push-type']).toBe('background');
    expect(cancel.headers['apns-collapse-id']).toBe(`reminder:${item.id}`);
    expect(cancel.payload).toMatchObject({ type: 'reminderCancel', data: { type: 'reminderCancel', itemId: item.id } });
    expect(await w.store.push.reminder(w.user.id, item.id)).toBeUndefined();
  });

  it("moves a recurring event's reminder to its next occurrence when it fires, and shows no subject when the policy says none", async () => {
    const w = await world();
    w.policy.content.set('pigeon-app', 'none');
    const phone = await w.device('phone-0010');
    const web = await w.webPushChannel(phone);
    const start = w.clock.now() + HOUR;
    const data = event(start, { recurrence: { rrule: 'FREQ=DAILY;COUNT=3', exdates: [], rdates: [] } });
    const item = await w.store.items.create({ userId: w.user.id, folderId: w.calendar.id, type: 'event', receivedAt: start, subject: 'Daily sync', data: data as unknown as Record<string, unknown> }, w.clock.now());
    await w.push.runOnce();
    w.clock.set(start - 15 * MINUTE);
    await w.push.runOnce();
    const fired = webPushes(web.subscription).filter((p) => p.payload.type === 'reminder');
    expect(fired).toHaveLength(1);
    expect(fired[0]!.payload.alert).toEqual({ title: 'Upcoming event', body: `Starts at ${new Date(start).toISOString()}` });
    expect(fired[0]!.plaintext).not.toContain('Daily sync');
    const next = start + 24 * HOUR;
    expect(await w.store.push.reminder(w.user.id, item.id)).toEqual({
      userId: w.user.id,
      itemId: item.id,
      occurrenceStart: next,
      dueAt: next - 15 * MINUTE,
      sentAt: null,
      shown: { occurrenceStart: start, dueAt: start - 15 * MINUTE, until: start + HOUR },
    });
    w.clock.set(next - 15 * MINUTE);
    await w.push.runOnce();
    expect(webPushes(web.subscription).filter((p) => p.payload.type === 'reminder')).toHaveLength(2);
  });

  it("cancels a recurring event's reminder already shown when the series moves while that occurrence is on, and not after it", async () => {
    const w = await world();
    const phone = await w.device('phone-0013');
    const apnsToken = token();
    await w.channel(phone, 'apns', apnsToken, { topic: apnsTeam.topic, environment: 'production' });
    const reminders = () => apnsTo(apnsToken).filter((r) => r.payload.type === 'reminder' || r.payload.type === 'reminderCancel');
    const start = w.clock.now() + HOUR;
    const daily = event(start, { recurrence: { rrule: 'FREQ=DAILY;COUNT=5', exdates: [], rdates: [] } });
    const item = await w.store.items.create({ userId: w.user.id, folderId: w.calendar.id, type: 'event', receivedAt: start, subject: 'Daily sync', data: daily as unknown as Record<string, unknown> }, w.clock.now());
    await w.push.runOnce();
    w.clock.set(start - 15 * MINUTE);
    await w.push.runOnce();
    expect(reminders().map((r) => r.payload.type)).toEqual(['reminder']);
    expect((await w.store.push.reminder(w.user.id, item.id))!.occurrenceStart).toBe(start + DAY); // moved on

    // During the first occurrence, the organiser moves the whole series an hour later: the first occurrence the
    // phone shows is gone, so it is cancelled; the next reminder is the moved first occurrence's, not yet due.
    w.clock.set(start + 10 * MINUTE);
    const later = { ...daily, start: new Date(start + HOUR).toISOString(), end: new Date(start + 2 * HOUR).toISOString() };
    await w.store.items.replace(w.user.id, item.id, { subject: 'Daily sync', bodyText: null, receivedAt: start + HOUR, data: later as unknown as Record<string, unknown> }, w.clock.now());
    await w.push.runOnce();
    expect(reminders().map((r) => r.payload.type)).toEqual(['reminder', 'reminderCancel']);
    const cancel = reminders()[1]!;
    expect(cancel.headers['apns-collapse-id']).toBe(`reminder:${item.id}`);
    expect(cancel.payload).toMatchObject({ type: 'reminderCancel', data: { type: 'reminderCancel', itemId: item.id } });
    expect(await w.store.push.reminder(w.user.id, item.id)).toMatchObject({ occurrenceStart: start + HOUR, sentAt: null, shown: null });

    // The moved occurrence's reminder fires; once that occurrence has ended, deleting the series owes nothing.
    w.clock.set(start + 45 * MINUTE);
    await w.push.runOnce();
    expect(reminders().map((r) => r.payload.type)).toEqual(['reminder', 'reminderCancel', 'reminder']);
    w.clock.set(start + 2 * HOUR);
    await w.store.items.delete(w.user.id, item.id, w.clock.now());
    await w.push.runOnce();
    expect(reminders().map((r) => r.payload.type)).toEqual(['reminder', 'reminderCancel', 'reminder']);
    expect(await w.store.push.reminder(w.user.id, item.id)).toBeUndefined();
  });

  it('sends a delivery whose drainer crashed mid-send again, with the same id, once its lease lapses', async () => {
    const w = await world({ leaseMs: 30_000, alertsPerPass: 0 });
    const phone = await w.device('phone-0011');
    const web = await w.webPushChannel(phone);
    // Composed, first attempt answered 503: the delivery waits in the queue.
    webPush.answerWith(web.subscription.id, { status: 503 });
    await w.store.items.update(w.user.id, await w.mail(), { isRead: true }, w.clock.now());
    expect(await w.push.runOnce()).toMatchObject({ retried: 1 });
    webPush.answerWith(web.subscription.id, clear());
    w.clock.advance(20_000);

    // Another drainer claims it and dies before completing.
    const [claimed] = await w.store.push.claim(w.clock.now(), 10, 30_000);
    expect(claimed).toBeDefined();
    expect(await w.store.push.queueSize()).toEqual({ queued: 0, sending: 1 });
    w.clock.advance(29_000);
    expect(await w.push.runOnce()).toMatchObject({ sent: 0 });
    expect(webPushes(web.subscription)).toHaveLength(0);

    w.clock.advance(2_000); // past the lease
    expect(await w.push.runOnce()).toMatchObject({ sent: 1 });
    const received = webPushes(web.subscription);
    expect(received).toHaveLength(1);
    expect(received[0]!.payload.id).toBe(claimed!.delivery.id);
    expect(await w.store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
  });

  it("wakes a shared mailbox's full-access members with a silent sync naming it, and nobody else", async () => {
    const w = await world();
    const now = w.clock.now();
    const shared = await w.store.run(function* (tx) {
      const mailbox = yield* tx.users.create(
        { tenantId: w.user.tenantId, username: '#shared:support@pigeon.test', email: 'support@pigeon.test', displayName: 'Support', role: 'user', passwordHash: null },
        now,
      );
      yield* tx.mailboxes.create(mailbox.id, now);
      yield* tx.sharedMailboxes.create(mailbox.id, now);
      return mailbox;
    });
    const sharedInbox = (await w.store.folders.byKind(shared.id, 'inbox'))!;
    const sharedCalendar = (await w.store.folders.byKind(shared.id, 'calendar'))!;
    const member = (rights: { fullAccess: boolean; sendAs?: boolean }) =>
      w.store.sharedMailboxes.putMember({ mailboxId: shared.id, memberId: w.user.id, fullAccess: rights.fullAccess, sendAs: rights.sendAs ?? false, sendOnBehalf: false, createdAt: now, updatedAt: now });
    const deliverToShared = (subject: string) =>
      w.store.items.create({ userId: shared.id, folderId: sharedInbox.id, type: 'email', receivedAt: w.clock.now(), subject, from: { name: 'Customer', address: 'c@example.com' } }, w.clock.now());

    const phone = await w.device('phone-0014');
    const web = await w.webPushChannel(phone);
    // Not a member yet: a change in the shared mailbox is not even noted for push.
    await deliverToShared('Before joining');
    expect(await w.store.push.outboxSize()).toBe(0);

    await member({ fullAccess: true });
    const item = await deliverToShared('Where is my order?');
    await w.store.items.create({ userId: shared.id, folderId: sharedCalendar.id, type: 'event', receivedAt: w.clock.now() + HOUR, subject: 'Team call', data: event(w.clock.now() + HOUR) as unknown as Record<string, unknown> }, w.clock.now());
    expect(await w.store.push.outboxSize()).toBe(1);
    await w.push.runOnce();
    const got = webPushes(web.subscription);
    expect(got.map((p) => p.payload.type)).toEqual(['sync']);
    expect(got[0]!.payload).toMatchObject({ type: 'sync', data: { type: 'sync', mailbox: shared.id } });
    expect(got[0]!.payload.badge).toBeUndefined(); // the badge is the member's own Inbox
    expect(got[0]!.plaintext).not.toContain('Where is my order?');
    expect(got[0]!.plaintext).not.toContain(item.id);
    // No reminder is kept for the shared calendar (nobody would get it).
    expect(await w.store.push.dueReminders(w.clock.now() + DAY, 10)).toEqual([]);

    // The member's own change and the shared one in the same pass: two syncs, neither collapsing the other.
    await w.mail();
    await deliverToShared('Second question');
    await w.push.runOnce();
    const second = webPushes(web.subscription).slice(1);
    expect(second.filter((p) => p.payload.type === 'sync').map((p) => (p.payload.data as { mailbox?: string }).mailbox ?? 'own').sort()).toEqual(['own', shared.id].sort());

    // Rights without full access (send-as alone is refused by the API; a row saying fullAccess false reads nothing):
    // nothing more, and nothing is noted.
    const before = webPushes(web.subscription).length;
    await member({ fullAccess: false });
    await deliverToShared('After leaving');
    expect(await w.store.push.outboxSize()).toBe(0);
    await w.push.runOnce();
    expect(webPushes(web.subscription)).toHaveLength(before);

    // A full-access member again, but the device is blocked or wiped: its channel gets nothing.
    await member({ fullAccess: true });
    w.policy.blockedDevices.add(phone.deviceId);
    await deliverToShared('While wiped');
    await w.push.runOnce();
    expect(webPushes(web.subscription)).toHaveLength(before);
  });

  it('runs on its own once started: a kick composes and drains at once; stop waits for the pass', async () => {
    const w = await world({ pollMs: 60_000 });
    const phone = await w.device('phone-0012');
    const web = await w.webPushChannel(phone);
    w.push.start();
    await w.mail();
    for (let i = 0; i < 10; i++) w.push.kick();
    const deadline = Date.now() + 10_000;
    while (webPushes(web.subscription).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(webPushes(web.subscription).map((p) => p.payload.type).sort()).toEqual(['newMail', 'sync']);
    await w.push.stop();
    expect(await w.store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
  });
});

describe('the drain under load: pipelined, results recorded in batches (server/push/background/drain.ts)', () => {
  /** A gateway whose answers the test holds: each send waits for `release(address)` unless its address is free. */
  function stubGateway() {
    const sent: Array<{ address: string; id: string }> = [];
    const held = new Map<string, Array<() => void>>();
    const slow = new Set<string>();
    const gateway: Gateway = {
      kind: 'webpush',
      async send(target, message) {
        const address = target.endpoint!;
        if (slow.has(address)) await new Promise<void>((resolve) => held.set(address, [...(held.get(address) ?? []), resolve]));
        sent.push({ address, id: message.id });
        return { status: 'sent', latencyMs: 1 };
      },
      async close() {},
    };
    return {
      gateway,
      sent,
      slow,
      held,
      release(address: string) {
        slow.delete(address);
        for (const resolve of held.get(address)?.splice(0) ?? []) resolve();
      },
    };
  }

  /** The store, counting units, claims and writes made outside a unit; `failUnits` makes every unit throw. */
  function counting(store: Store) {
    const counts = { units: 0, claims: 0, claimLimits: [] as number[], directWrites: 0, failUnits: false };
    const writes = new Set(['complete', 'release', 'noteResult', 'deleteChannel', 'dropDeliveriesOfDevice']);
    const push = new Proxy(store.push, {
      get(target, key: string) {
        const value = (target as unknown as Record<string, unknown>)[key];
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          if (key === 'claim') (counts.claims += 1), counts.claimLimits.push(args[1] as number);
          if (writes.has(key)) counts.directWrites += 1;
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const wrapped = new Proxy(store, {
      get(target, key: string) {
        if (key === 'push') return push;
        if (key === 'run')
          return (unit: Parameters<Store['run']>[0]) => {
            counts.units += 1;
            if (counts.failUnits) return Promise.reject(new Error('disk full'));
            // Claims made inside a unit (a flush claims into the slots it frees) are counted too.
            return target.run((tx) =>
              unit({
                ...tx,
                push: {
                  ...tx.push,
                  claim: (now: number, limit: number, leaseMs: number) => ((counts.claims += 1), counts.claimLimits.push(limit), tx.push.claim(now, limit, leaseMs)),
                },
              }),
            );
          };
        const value = (target as unknown as Record<string, unknown>)[key];
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    return { store: wrapped as Store, counts };
  }

  async function setup(options: Partial<BackgroundPushOptions> = {}, channelCount = 3) {
    const w = await world();
    const stub = stubGateway();
    const { store, counts } = counting(w.store);
    const all: BackgroundPushOptions = { ...DEFAULT_BACKGROUND_PUSH_OPTIONS, ...options };
    const drain = createDrain({
      store,
      clock: w.clock,
      log: pino({ level: 'silent' }),
      gateways: { webpush: stub.gateway },
      policy: testPolicy().policy,
      options: all,
      deviceBuckets: new DeviceBuckets(all.perDevicePerMinute),
      globalBucket: perSecondBucket(all.globalPerSecond, w.clock.now()),
    });
    const channels: PushChannelRecord[] = [];
    for (let i = 0; i < channelCount; i++) {
      const device = await w.device(`drain-phone-${i}`);
      channels.push(await w.channel(device, 'webpush', `https://push.example/ch-${i}`, { p256dh: 'p', auth: 'a' }));
    }
    let n = 0;
    const enqueue = async (channel: PushChannelRecord, count = 1) => {
      const ids: string[] = [];
      for (let i = 0; i < count; i++) {
        const id = `delivery-${++n}`;
        ids.push(id);
        const collapseKey = `mail:${n}`;
        await w.store.push.enqueue(
          [{ id, userId: w.user.id, channelId: channel.id, collapseKey, message: { type: 'newMail', collapseKey, ttlSeconds: 60, urgency: 'high', data: {} }, notBefore: w.clock.now() + n, originAt: w.clock.now() }],
          w.clock.now(),
        );
      }
      return ids;
    };
    return { w, stub, drain, counts, channels, enqueue, channel: (id: string) => w.store.push.channel(w.user.id, id) };
  }

  it('records the results of sends that finish together in one unit, with no write outside it', async () => {
    const { w, drain, counts, channels, enqueue } = await setup();
    for (const channel of channels) await enqueue(channel, 2);
    w.clock.advance(1000);
    const outcomes = await drain.drainDue();
    expect(outcomes).toEqual(Array(6).fill('sent'));
    // One claim of 64 (got 6: nothing more is due, so no claim after), then ONE unit for the six results.
    expect(counts).toMatchObject({ claims: 1, claimLimits: [64], units: 1, directWrites: 0 });
    expect(await w.store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
  });

  it("writes a success to its channel only when it had failures or its lastSuccessAt is over a minute old", async () => {
    const { w, drain, channels, enqueue, channel } = await setup({}, 1);
    const [ch] = channels;
    await enqueue(ch!);
    w.clock.advance(1000);
    await drain.drainDue();
    const firstOk = (await channel(ch!.id))!.lastSuccessAt;
    expect(firstOk).toBe(w.clock.now()); // never succeeded before: written

    w.clock.advance(30_000);
    await enqueue(ch!);
    w.clock.advance(1000);
    expect(await drain.drainDue()).toEqual(['sent']);
    expect((await channel(ch!.id))!.lastSuccessAt).toBe(firstOk); // 31 s later: skipped

    await w.store.push.noteResult(w.user.id, ch!.id, false, w.clock.now()); // a failure (another drainer's)
    await enqueue(ch!);
    w.clock.advance(1000);
    expect(await drain.drainDue()).toEqual(['sent']);
    expect(await channel(ch!.id)).toMatchObject({ failures: 0, lastSuccessAt: w.clock.now() }); // had a failure: written
    const secondOk = w.clock.now();

    w.clock.advance(61_000);
    await enqueue(ch!);
    w.clock.advance(1000);
    expect(await drain.drainDue()).toEqual(['sent']);
    expect((await channel(ch!.id))!.lastSuccessAt).toBe(w.clock.now()); // over a minute: written
    expect(w.clock.now()).toBeGreaterThan(secondOk);
  });

  it('keeps `concurrency` sends in flight: a slow send holds one slot, the others go on being claimed and sent', async () => {
    const { w, stub, drain, counts, channels, enqueue } = await setup({ concurrency: 2 }, 2);
    const [slow, fast] = channels;
    stub.slow.add(slow!.address);
    const [slowId] = await enqueue(slow!); // claimed first (soonest)
    const fastIds = await enqueue(fast!, 5);
    w.clock.advance(1000);
    const draining = drain.drainDue();
    const deadline = Date.now() + 5000;
    while (stub.sent.length < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    // Every fast delivery was sent and recorded while the slow one is still at its gateway.
    expect(stub.sent.map((s) => s.id)).toEqual(fastIds);
    expect(stub.held.get(slow!.address)).toHaveLength(1);
    // ... and recorded (the last result within the flush window).
    while ((await w.store.push.queueSize()).sending > 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(await w.store.push.queueSize()).toEqual({ queued: 0, sending: 1 });
    // Claims ask for the slots that are free (never more than 2 held at once): the first for 2, then 1 at a time.
    expect(counts.claimLimits[0]).toBe(2);
    expect(counts.claimLimits.slice(1).every((limit) => limit === 1)).toBe(true);
    expect(counts.claims).toBeGreaterThanOrEqual(2);
    stub.release(slow!.address);
    expect(await draining).toEqual(Array(6).fill('sent'));
    expect(stub.sent.at(-1)!.id).toBe(slowId);
    expect(await w.store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
  });

  it('a result that could not be recorded is a lapsed lease: the delivery goes again with the same id', async () => {
    const { w, stub, drain, counts, channels, enqueue } = await setup({ leaseMs: 30_000 }, 2);
    const ids = [...(await enqueue(channels[0]!)), ...(await enqueue(channels[1]!))];
    w.clock.advance(1000);
    counts.failUnits = true;
    expect(await drain.drainDue()).toEqual([]); // sent, but nothing recorded (the batch, then each alone, failed)
    expect(stub.sent.map((s) => s.id)).toEqual(ids);
    expect(await w.store.push.queueSize()).toEqual({ queued: 0, sending: 2 });
    counts.failUnits = false;
    w.clock.advance(29_000);
    expect(await drain.drainDue()).toEqual([]); // still leased
    w.clock.advance(2_000);
    expect(await drain.drainDue()).toEqual(['sent', 'sent']);
    expect(stub.sent.map((s) => s.id)).toEqual([...ids, ...ids]);
    expect(await w.store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
  });
});
