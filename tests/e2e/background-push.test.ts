/**
 * Background push end to end (issue 20): the real server process over HTTPS on a real SQLite file, mail delivered
 * over real LMTP, and the three gateways as the spec-written stand-ins of tests/helpers/pushGateways.ts (the Web Push
 * service checks VAPID and decrypts the RFC 8291 payload itself; APNs over HTTP/2 checks the ES256 provider token
 * and the apns-* headers; FCM checks the OAuth grant). The server trusts their certificates through
 * NODE_EXTRA_CA_CERTS, signs for APNs with a generated .p8 key and for FCM with a generated service account.
 *
 * - a device registers a Web Push, an APNs and an FCM channel; a delivered message → each channel gets a newMail
 *   alert showing sender and subject (and nothing of them in `data`) and a "sync now" with the inbox badge;
 * - a message whose sensitivity label forbids a preview, and encrypted S/MIME (protected mail) → an alert that names
 *   no sender and no subject, in nothing any gateway received;
 * - a channel the gateway answers "gone" (Web Push 410, APNs 410 Unregistered, FCM 404 UNREGISTERED) is removed:
 *   GET /v1/push/channels no longer lists it;
 * - the admin blocks a device → its next delivery does not arrive (while the user's other device gets it);
 * - a device wiped (wipe acknowledged) has no channels left and gets nothing.
 */
import crypto from 'node:crypto';
import https from 'node:https';
import path from 'node:path';
import Database from 'better-sqlite3';
import nodemailer from 'nodemailer';
import { startServer, type RunningServer } from '../helpers/server';
import { tempDir } from '../helpers/testApp';
import { startGatewayRig, type ChannelRegistration, type GatewayKind, type GatewayRig, type PushArrival } from '../helpers/pushGateways';
import { openSqliteStore } from '../../server/store/sqlite';
import { createUserAdmin } from '../../server/admin/users';
import { systemClock } from '../../server/clock';

jest.setTimeout(120_000);

const PASSWORDS = { root: 'root-password-20', alice: 'alice-password-20' } as const;
const ALICE_ADDRESS = 'alice@pigeon.example';
const KINDS: GatewayKind[] = ['webpush', 'apns', 'fcm'];
/** Generous for a loaded 2-core CI machine: every wait polls and returns as soon as its condition holds. */
const WAIT_MS = 30_000;
const LABEL_ID = '4b8e1f2a-3c5d-4e6f-9a7b-8c9d0e1f2a3b';
const SITE_ID = '5c9f2a3b-4d6e-4f70-8b8c-9d0e1f2a3b4c';

type Headers = Record<string, string>;
interface Answer {
  status: number;
  body: any;
  headers: Record<string, string | string[] | undefined>;
}

let server: RunningServer;
let rig: GatewayRig;
let dataDir: string;
let admin: Headers;
let applicationServerKey: string;
let inboxId: string;

function call(method: string, p: string, headers: Headers = {}, body?: unknown): Promise<Answer> {
  const text = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  const all = text !== undefined && typeof body !== 'string' ? { ...headers, 'content-type': 'application/json' } : headers;
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: server.port, method, path: p, headers: all, ca: server.cert, servername: 'localhost', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = raw || undefined;
        try {
          parsed = raw ? JSON.parse(raw) : undefined;
        } catch {
          /* not JSON */
        }
        resolve({ status: res.statusCode!, body: parsed, headers: res.headers });
      });
    });
    req.once('error', reject);
    req.end(text);
  });
}

/** Polls `probe` until it answers something truthy; fails with `what` after `ms`. */
async function waitFor<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, ms = WAIT_MS): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > until) throw new Error(`waited ${ms} ms for ${what}\n${diagnostics()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** What a failed wait shows: what each gateway took and refused, and the server's push log lines. */
function diagnostics(): string {
  const counts = rig.arrivals().reduce<Record<string, number>>((acc, a) => ((acc[`${a.kind} ${a.type}`] = (acc[`${a.kind} ${a.type}`] ?? 0) + 1), acc), {});
  const refused = { webpush: rig.webPush.refused, apns: rig.apns.refused, fcm: rig.fcm.refused };
  const lines = server.logs.filter((l) => Number(l.level) >= 40 || (l.msg !== 'request' && /push|gateway|channel/i.test(JSON.stringify(l)))).slice(-15).map((l) => JSON.stringify(l).slice(0, 600));
  const rows = readDb((db) => db.prepare('SELECT c.kind, d.collapse_key, d.state, d.attempts, d.not_before - ? AS dueInMs FROM push_deliveries d JOIN push_channels c ON c.id = d.channel_id').all(Date.now()));
  return `arrived: ${JSON.stringify(counts)}\nrefused: ${JSON.stringify(refused).slice(0, 1500)}\nqueue: ${JSON.stringify(rows).slice(0, 1500)}\nserver log:\n${lines.join('\n')}\n${server.stderr.join('').slice(-1500)}`;
}

interface Device {
  name: string;
  headers: Headers;
  /** The device record's id (admin routes). */
  recordId: string;
  channels: Partial<Record<GatewayKind, ChannelRegistration & { id: string }>>;
}

/** alice signs in on a new device (password grant) and registers it. */
async function signIn(name: string, user: keyof typeof PASSWORDS = 'alice'): Promise<Device> {
  const deviceId = `e2e-bgpush-${name}-${crypto.randomBytes(6).toString('hex')}`;
  const form = new URLSearchParams({ grant_type: 'password', client_id: 'pigeon-app', username: user, password: PASSWORDS[user], device_id: deviceId }).toString();
  const token = await call('POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, form);
  expect(token.status).toBe(200);
  const headers = { authorization: `Bearer ${token.body.access_token}`, 'x-device-id': deviceId };
  const registered = await call('POST', '/v1/devices', headers, { friendlyName: `${name} (e2e)` });
  expect(registered.status).toBe(201);
  return { name, headers, recordId: registered.body.id, channels: {} };
}

/** Registers one channel of `kind` for the device, as its app would. */
async function register(device: Device, kind: GatewayKind): Promise<ChannelRegistration & { id: string }> {
  const channel = rig.channel(kind, applicationServerKey);
  const res = await call('POST', '/v1/push/channels', device.headers, channel.body);
  if (res.status !== 201) throw new Error(`POST /v1/push/channels (${kind}) answered ${res.status}: ${JSON.stringify(res.body)}`);
  expect(res.body).toMatchObject({ id: expect.any(String), kind });
  const registered = { ...channel, id: res.body.id as string };
  device.channels[kind] = registered;
  return registered;
}

async function listChannels(device: Device): Promise<Array<{ id: string; kind: string }>> {
  const res = await call('GET', '/v1/push/channels', device.headers);
  expect(res.status).toBe(200);
  return (Array.isArray(res.body) ? res.body : res.body.channels) as Array<{ id: string; kind: string }>;
}

/** What arrived for one channel of the device (since `after`, epoch ms). */
function arrivalsOf(device: Device, kind: GatewayKind, after = 0): PushArrival[] {
  const address = device.channels[kind]?.address;
  return rig.arrivals().filter((a) => a.kind === kind && a.address === address && a.at > after);
}

function lmtp(raw: string) {
  const transport = nodemailer.createTransport({ lmtp: true, host: '127.0.0.1', port: server.lmtpPort!, ignoreTLS: true });
  return transport.sendMail({ envelope: { from: 'sender@example.org', to: [ALICE_ADDRESS] }, raw }).finally(() => transport.close());
}

interface Mail {
  messageId: string;
  senderName: string;
  senderAddress: string;
  subject: string;
  extraHeaders?: string[];
  /** Instead of a text body: the whole Content-Type and body (encrypted S/MIME). */
  content?: { contentType: string; body: string; transferEncoding?: string };
}

function mail(tag: string, extra: Partial<Mail> = {}): Mail {
  const unique = crypto.randomBytes(4).toString('hex');
  return {
    messageId: `<${tag}-${unique}@example.org>`,
    senderName: `Ada Lovelace ${unique}`,
    senderAddress: `ada.${unique}@example.org`,
    subject: `Engine notes ${tag} ${unique}`,
    ...extra,
  };
}

function rawOf(m: Mail): string {
  const content = m.content ?? { contentType: 'text/plain; charset=utf-8', body: `The analytical engine weaves algebraic patterns (${m.subject}).` };
  return [
    `From: "${m.senderName}" <${m.senderAddress}>`,
    `To: Alice <${ALICE_ADDRESS}>`,
    `Subject: ${m.subject}`,
    `Message-ID: ${m.messageId}`,
    `Date: ${new Date().toUTCString()}`,
    ...(m.extraHeaders ?? []),
    'MIME-Version: 1.0',
    `Content-Type: ${content.contentType}`,
    ...(content.transferEncoding ? [`Content-Transfer-Encoding: ${content.transferEncoding}`] : []),
    '',
    content.body,
    '',
  ].join('\r\n');
}

/** Delivers `m` over LMTP (250 for alice) and answers its item id, read from a fresh inbox sync. */
async function deliver(m: Mail, reader: Device): Promise<string> {
  const info = await lmtp(rawOf(m));
  expect(info.accepted).toEqual([ALICE_ADDRESS]);
  const page = await call('GET', `/v1/folders/${inboxId}/items/sync?maxChanges=500`, reader.headers);
  expect(page.status).toBe(200);
  const item = (page.body.created as Array<{ id: string; internetMessageId: string }>).find((i) => i.internetMessageId === m.messageId);
  if (!item) throw new Error(`${m.messageId} is not in the inbox after its delivery`);
  return item.id;
}

async function inboxUnread(device: Device): Promise<number> {
  const res = await call('GET', '/v1/folders/sync', device.headers);
  expect(res.status).toBe(200);
  return (res.body.created as Array<{ id: string; unreadCount: number }>).find((f) => f.id === inboxId)!.unreadCount;
}

/** A read-only look at the live SQLite file (the server keeps writing). */
function readDb<T>(fn: (db: Database.Database) => T): T {
  const db = new Database(path.join(dataDir, 'pigeon.db'), { readonly: true, fileMustExist: true });
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

/** The delivery queue and the outbox. */
const queue = () =>
  readDb((db) => ({
    outbox: (db.prepare('SELECT count(*) AS n FROM push_outbox').get() as { n: number }).n,
    deliveries: (db.prepare('SELECT count(*) AS n FROM push_deliveries').get() as { n: number }).n,
  }));

const channelRowsOfDevice = (recordId: string) =>
  readDb((db) => (db.prepare('SELECT count(*) AS n FROM push_channels WHERE device_record_id = ?').get(recordId) as { n: number }).n);

/** Everything queued has gone out (or was dropped): nothing in the outbox, nothing in the delivery queue. */
const drained = () => waitFor('the push queue to drain', () => {
  const q = queue();
  return q.outbox === 0 && q.deliveries === 0;
});

/** The newMail alert for `itemId` on each of the device's channels (waits for all three). */
async function alertsFor(device: Device, itemId: string, after: number): Promise<Record<GatewayKind, PushArrival>> {
  const out = {} as Record<GatewayKind, PushArrival>;
  for (const kind of KINDS) {
    out[kind] = await waitFor(`the ${kind} newMail alert for ${itemId} on ${device.name}`, () =>
      arrivalsOf(device, kind, after).find((a) => a.type === 'newMail' && a.data.itemId === itemId),
    );
  }
  return out;
}

async function seed(dir: string) {
  const store = openSqliteStore(path.join(dir, 'pigeon.db'));
  try {
    const users = createUserAdmin(store, systemClock);
    await users.addUser({ username: 'root', password: PASSWORDS.root, email: 'root@pigeon.example', role: 'admin' });
    const alice = await users.addUser({ username: 'alice', password: PASSWORDS.alice, email: ALICE_ADDRESS, displayName: 'Alice', role: 'user' });
    inboxId = (await store.folders.byKind(alice.id, 'inbox'))!.id;
  } finally {
    await store.close();
  }
}

let phone: Device;

beforeAll(async () => {
  dataDir = tempDir('pigeon-e2e-bgpush-');
  await seed(dataDir);
  rig = await startGatewayRig();
  server = await startServer({
    PIGEON_DATA_DIR: dataDir,
    ...rig.env,
    PIGEON_DEVICE_RATE_LIMIT: '0',
    PIGEON_PUSH_RATE_PER_DEVICE: '600',
  });
  const rootDeviceId = `e2e-bgpush-root-${crypto.randomBytes(6).toString('hex')}`;
  const form = new URLSearchParams({ grant_type: 'password', client_id: 'pigeon-app', username: 'root', password: PASSWORDS.root, device_id: rootDeviceId }).toString();
  const token = await call('POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, form);
  expect(token.status).toBe(200);
  admin = { authorization: `Bearer ${token.body.access_token}`, 'x-device-id': rootDeviceId };
  phone = await signIn('phone');
  const config = await call('GET', '/v1/push/config', phone.headers);
  expect(config.status).toBe(200);
  applicationServerKey = config.body.webPush.applicationServerKey;
});

afterAll(async () => {
  await server?.stop();
  await rig?.close();
});

test('GET /v1/push/config names the three gateways, with the VAPID key for Web Push', async () => {
  const config = await call('GET', '/v1/push/config', phone.headers);
  expect(config.status).toBe(200);
  expect(config.body.webPush.applicationServerKey).toBe(applicationServerKey);
  // An uncompressed P-256 point, base64url: what PushManager.subscribe() takes.
  expect(Buffer.from(applicationServerKey, 'base64url')).toHaveLength(65);
  expect(config.body.apns).not.toBeNull();
  expect(config.body.fcm).not.toBeNull();
});

test('a device registers Web Push, APNs and FCM channels; a delivered message reaches each as a newMail alert and a sync', async () => {
  for (const kind of KINDS) await register(phone, kind);
  const listed = await listChannels(phone);
  expect(listed.map((c) => c.kind).sort()).toEqual([...KINDS].sort());

  const t0 = Date.now() - 1;
  const m = mail('plain');
  const itemId = await deliver(m, phone);
  const alerts = await alertsFor(phone, itemId, t0);
  const unread = await inboxUnread(phone);
  for (const kind of KINDS) {
    const alert = alerts[kind];
    expect(alert.alert).toEqual({ title: m.senderName, body: m.subject });
    expect(alert.data).toEqual({ type: 'newMail', itemId, folderId: inboxId });
    expect(alert.messageId).toEqual(expect.any(String));
    // What the app's code receives never holds the preview itself.
    expect(JSON.stringify(alert.data)).not.toContain(m.subject);
    expect(JSON.stringify(alert.data)).not.toContain(m.senderName);
    // And a "sync now" that carries the inbox's unread count as the badge.
    const sync = await waitFor(`a ${kind} sync with badge ${unread}`, () => arrivalsOf(phone, kind, t0).find((a) => a.type === 'sync' && a.badge === unread));
    expect(sync.alert).toBeUndefined();
    expect(sync.data).toEqual({ type: 'sync' });
  }
  // The gateways' own framing: Web Push urgency and TTL; APNs alert vs background push types (the stand-in refuses
  // a background push with priority 10 or with an alert); FCM priorities.
  const web = rig.webPush.received.filter((r) => r.at > t0 && `${rig.webPush.origin}/push/${r.subscriptionId}` === phone.channels.webpush!.address);
  expect(web.find((r) => JSON.parse(r.plaintext).type === 'newMail')).toMatchObject({ urgency: 'high', ttl: 86_400 });
  expect(web.find((r) => JSON.parse(r.plaintext).type === 'sync')).toMatchObject({ urgency: 'normal' });
  const apns = rig.apns.requests.filter((r) => r.at > t0 && r.deviceToken === phone.channels.apns!.address);
  expect(apns.find((r) => r.payload.type === 'newMail')!.headers).toMatchObject({ 'apns-push-type': 'alert', 'apns-collapse-id': `mail:${itemId}` });
  expect(apns.find((r) => r.payload.type === 'sync')!.headers).toMatchObject({ 'apns-push-type': 'background', 'apns-priority': '5' });
  const fcm = rig.fcm.requests.filter((r) => r.at > t0 && r.message.token === phone.channels.fcm!.address);
  expect((fcm.find((r) => (r.message.data as Record<string, string>).type === 'newMail')!.message.android as Record<string, unknown>).priority).toBe('HIGH');
  expect([...rig.webPush.refused, ...rig.apns.refused, ...rig.fcm.refused]).toEqual([]);
});

/** Delivers `m` and checks that its alerts arrived and that nothing any gateway received names its sender or subject. */
async function expectNoPreview(m: Mail) {
  const t0 = Date.now() - 1;
  const itemId = await deliver(m, phone);
  const alerts = await alertsFor(phone, itemId, t0);
  for (const kind of KINDS) expect(alerts[kind].alert).toEqual({ title: 'New message', body: '' });
  await drained();
  const secrets = [m.subject, m.senderName, m.senderAddress, m.subject.split(' ').at(-1)!, m.senderName.split(' ').at(-1)!];
  const since = rig.arrivals().filter((a) => a.at > t0);
  expect(since.length).toBeGreaterThanOrEqual(KINDS.length);
  for (const arrival of since) for (const secret of secrets) expect(arrival.everything).not.toContain(secret);
  expect([...rig.webPush.refused, ...rig.apns.refused, ...rig.fcm.refused]).toEqual([]);
}

test('a message whose sensitivity label forbids previews: the alert names neither sender nor subject, anywhere', async () => {
  const current = await call('GET', '/admin/v1/protection', admin);
  expect(current.status).toBe(200);
  const label = { id: LABEL_ID, name: 'Highly Confidential', priority: 10, colour: '#aa0000', tooltip: 'No previews', notificationPreview: false };
  const put = await call('PUT', '/admin/v1/protection', { ...admin, 'if-match': String(current.headers.etag) }, { ...current.body, labels: [...(current.body.labels ?? []), label] });
  if (put.status !== 200) throw new Error(`PUT /admin/v1/protection with a label's notificationPreview answered ${put.status}: ${JSON.stringify(put.body)}`);
  const header = `msip_labels: MSIP_Label_${LABEL_ID}_Enabled=true; MSIP_Label_${LABEL_ID}_Method=Privileged; MSIP_Label_${LABEL_ID}_Name=Highly Confidential; MSIP_Label_${LABEL_ID}_SiteId=${SITE_ID}`;
  await expectNoPreview(mail('labelled', { extraHeaders: [header] }));
});

test('protected mail (encrypted S/MIME): the alert names neither sender nor subject, anywhere', async () => {
  const envelope = crypto.randomBytes(600).toString('base64').replace(/.{76}/g, '$&\r\n');
  await expectNoPreview(
    mail('encrypted', {
      content: { contentType: 'application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"', transferEncoding: 'base64', body: envelope },
      extraHeaders: ['Content-Disposition: attachment; filename="smime.p7m"'],
    }),
  );
});

test('a channel the gateway reports gone (Web Push 410, APNs 410 Unregistered, FCM UNREGISTERED) is removed', async () => {
  const tablet = await signIn('tablet');
  for (const kind of KINDS) await register(tablet, kind);
  rig.webPush.answerWith(tablet.channels.webpush!.handle, { status: 410 });
  rig.apns.answerWith(tablet.channels.apns!.handle, { status: 410, reason: 'Unregistered' });
  rig.fcm.answerWith(tablet.channels.fcm!.handle, { status: 404, reason: 'UNREGISTERED' });
  expect((await listChannels(tablet)).length).toBe(3);
  const t0 = Date.now() - 1;
  const itemId = await deliver(mail('gone'), phone);
  await alertsFor(phone, itemId, t0); // the other device still gets it
  const left = await waitFor('the gone channels to be removed', async () => {
    const channels = await listChannels(tablet);
    return channels.length === 0 ? channels : undefined;
  });
  expect(left).toEqual([]);
  expect(channelRowsOfDevice(tablet.recordId)).toBe(0);
  for (const kind of KINDS) expect(arrivalsOf(tablet, kind)).toEqual([]);
});

test('the admin blocks a device: its next delivery does not arrive, the other device still gets it', async () => {
  const laptop = await signIn('laptop');
  for (const kind of KINDS) await register(laptop, kind);
  // Reachable before the block: a delivery reaches it.
  let t0 = Date.now() - 1;
  let itemId = await deliver(mail('before-block'), phone);
  await alertsFor(laptop, itemId, t0);
  await drained();

  const blocked = await call('POST', `/admin/v1/devices/${laptop.recordId}/block`, admin);
  expect(blocked.status).toBe(200);
  expect(blocked.body).toMatchObject({ accessState: 'blocked' });
  t0 = Date.now() - 1;
  itemId = await deliver(mail('after-block'), phone);
  await alertsFor(phone, itemId, t0);
  await drained();
  for (const kind of KINDS) expect(arrivalsOf(laptop, kind, t0)).toEqual([]);
});

test('a wiped device: its channels are gone and it gets nothing', async () => {
  const old = await signIn('old-phone');
  for (const kind of KINDS) await register(old, kind);
  expect(channelRowsOfDevice(old.recordId)).toBe(3);
  const wipe = await call('POST', `/admin/v1/devices/${old.recordId}/wipe`, admin);
  expect(wipe.status).toBe(200);
  const t0 = Date.now() - 1;
  const ack = await call('POST', '/v1/devices/current/wipe-ack', old.headers, { status: 'ok' });
  expect(ack.status).toBe(200);
  await waitFor('the wiped device\'s channels to be deleted', () => channelRowsOfDevice(old.recordId) === 0);

  const itemId = await deliver(mail('after-wipe'), phone);
  await alertsFor(phone, itemId, t0);
  await drained();
  for (const kind of KINDS) expect(arrivalsOf(old, kind, t0)).toEqual([]);
});
