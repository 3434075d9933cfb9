/**
 * The three push gateway clients against the spec-written stand-ins in tests/helpers/pushGateways.ts: what arrives
 * (decrypted or parsed, exactly), the headers, coalescing keys, and how each gateway's answers map to outcomes.
 */
import crypto from 'node:crypto';
import { createApnsGateway } from '../../server/push/gateways/apns';
import { createFcmGateway } from '../../server/push/gateways/fcm';
import type { Gateway, PushMessage } from '../../server/push/gateways/types';
import { createWebPushGateway, generateVapidKeys } from '../../server/push/gateways/webPush';
import { decryptWebPush, startApnsService, startFcmService, startWebPushService, type ApnsService, type FcmService, type WebPushService } from '../helpers/pushGateways';

/** Long enough that a loaded CI machine never turns a real answer into a timeout; the silent tests wait it out once. */
const TIMEOUT_MS = 2500;

function message(overrides: Partial<PushMessage> = {}): PushMessage {
  return {
    type: 'sync',
    collapseKey: 'sync:account-1',
    ttlSeconds: 3600,
    urgency: 'normal',
    data: { account: 'account-1', cursor: 'c-42' },
    id: crypto.randomUUID(),
    ...overrides,
  };
}

const newMail = (overrides: Partial<PushMessage> = {}) =>
  message({ type: 'newMail', collapseKey: 'mail:inbox', urgency: 'high', alert: { title: 'Ada Lovelace', body: 'Engine notes' }, badge: 3, data: { folder: 'inbox', messageId: 'm-7' }, ...overrides });

/** A manual clock both the client and the stand-in read, so token ages can be moved. */
function manualClock(start = Date.UTC(2026, 11, 7, 9, 0, 0)) {
  let ms = start;
  return { now: () => ms, advance: (by: number) => void (ms += by) };
}

const minutes = (n: number) => n * 60_000;

describe("the stand-in push service's own decryption (RFC 8291 §5 example)", () => {
  // The published example: the stand-in must read it, or its verdicts on the gateway mean nothing.
  const receiver = () => {
    const ecdh = crypto.createECDH('prime256v1');
    ecdh.setPrivateKey(Buffer.from('q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94', 'base64url'));
    return { ecdh, publicKey: Buffer.from('BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4', 'base64url'), authSecret: Buffer.from('BTBZMqHH6r4Tts7J_aSIgg', 'base64url') };
  };
  const body = Buffer.from(
    'DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN',
    'base64url',
  );

  it('decrypts the example to its plaintext', () => {
    const { plaintext, recordSize } = decryptWebPush(body, receiver());
    expect(plaintext.toString('utf8')).toBe('When I grow up, I want to be a watermelon');
    expect(recordSize).toBe(4096);
  });

  it('refuses a body with one ciphertext bit flipped, and one for another auth secret', () => {
    const tampered = Buffer.from(body);
    tampered[tampered.length - 20]! ^= 1;
    expect(() => decryptWebPush(tampered, receiver())).toThrow();
    expect(() => decryptWebPush(body, { ...receiver(), authSecret: crypto.randomBytes(16) })).toThrow();
  });
});

describe('Web Push gateway (RFC 8030/8291/8292) against the stand-in push service', () => {
  let service: WebPushService;
  let gateway: Gateway;
  const vapid = { subject: 'mailto:push@pigeon.test', ...generateVapidKeys() };

  beforeAll(async () => {
    service = await startWebPushService();
    gateway = createWebPushGateway({ vapid, timeoutMs: TIMEOUT_MS, ca: service.ca });
  });
  afterAll(async () => {
    await gateway.close();
    await service.close();
  });

  const targetFor = (subscription: { endpoint: string; p256dh: string; auth: string }) => ({ kind: 'webpush' as const, ...subscription });

  it('delivers an encrypted payload the service decrypts to exactly the app payload, with VAPID, TTL, Urgency and Topic', async () => {
    const subscription = service.subscribe(vapid.publicKey);
    const sent = newMail({ ttlSeconds: 600 });
    const outcome = await gateway.send(targetFor(subscription), sent);
    expect(service.refused).toEqual([]);
    expect(outcome.status).toBe('sent');
    const received = service.received.filter((push) => push.subscriptionId === subscription.id);
    expect(received).toHaveLength(1);
    const push = received[0]!;
    expect(JSON.parse(push.plaintext)).toEqual({ type: 'newMail', id: sent.id, badge: 3, data: { folder: 'inbox', messageId: 'm-7' }, alert: { title: 'Ada Lovelace', body: 'Engine notes' } });
    expect(push.ttl).toBe(600);
    expect(push.urgency).toBe('high');
    expect(push.topic).toBe(crypto.createHash('sha256').update('mail:inbox').digest('base64url').slice(0, 32));
    expect(push.vapid.k).toBe(vapid.publicKey);
    expect(push.vapid.claims.aud).toBe(service.origin);
    expect(push.vapid.claims.sub).toBe(vapid.subject);
    // The plaintext travels only encrypted.
    expect(push.bodyBytes).toBeGreaterThan(push.plaintext.length);
  });

  it('gives messages with the same collapse key the same Topic, and different keys different ones (always ≤ 32 base64url)', async () => {
    const subscription = service.subscribe(vapid.publicKey);
    const longKey = `reminder:${'x'.repeat(200)}`;
    for (const key of ['sync:a', 'sync:a', 'sync:b', longKey]) {
      expect((await gateway.send(targetFor(subscription), message({ collapseKey: key }))).status).toBe('sent');
    }
    const topics = service.received.filter((push) => push.subscriptionId === subscription.id).map((push) => push.topic!);
    expect(topics).toHaveLength(4);
    expect(topics[0]).toBe(topics[1]);
    expect(topics[2]).not.toBe(topics[0]);
    for (const topic of topics) expect(topic).toMatch(/^[A-Za-z0-9_-]{1,32}$/);
  });

  it('maps 404 and 410 to gone', async () => {
    for (const status of [404, 410]) {
      const subscription = service.subscribe(vapid.publicKey);
      service.answerWith(subscription.id, { status });
      expect(await gateway.send(targetFor(subscription), message())).toEqual({ status: 'gone' });
    }
  });

  it('maps 429 and 5xx to retry, with Retry-After in seconds or as a date', async () => {
    const limited = service.subscribe(vapid.publicKey);
    service.answerWith(limited.id, { status: 429, retryAfter: '120' });
    expect(await gateway.send(targetFor(limited), message())).toEqual({ status: 'retry', afterMs: 120_000 });

    const dated = service.subscribe(vapid.publicKey);
    service.answerWith(dated.id, { status: 503, retryAfter: new Date(Date.now() + 60_000).toUTCString() });
    const outcome = await gateway.send(targetFor(dated), message());
    expect(outcome.status).toBe('retry');
    expect((outcome as { afterMs: number }).afterMs).toBeGreaterThan(55_000);
    expect((outcome as { afterMs: number }).afterMs).toBeLessThanOrEqual(60_000);

    const failing = service.subscribe(vapid.publicKey);
    service.answerWith(failing.id, { status: 500 });
    expect(await gateway.send(targetFor(failing), message())).toEqual({ status: 'retry' });
  });

  it('maps 400 and 413 to rejected, and refuses an oversized payload without sending it', async () => {
    for (const status of [400, 413]) {
      const subscription = service.subscribe(vapid.publicKey);
      service.answerWith(subscription.id, { status });
      const outcome = await gateway.send(targetFor(subscription), message());
      expect(outcome).toMatchObject({ status: 'rejected' });
      expect((outcome as { reason: string }).reason).toContain(String(status));
    }
    const subscription = service.subscribe(vapid.publicKey);
    const before = service.received.length + service.refused.length;
    expect(await gateway.send(targetFor(subscription), message({ data: { blob: 'x'.repeat(5000) } }))).toEqual({ status: 'rejected', reason: 'payload too large' });
    expect(service.received.length + service.refused.length).toBe(before);
  });

  it('is refused when signing with a key the subscription is not bound to', async () => {
    const subscription = service.subscribe(generateVapidKeys().publicKey);
    const outcome = await gateway.send(targetFor(subscription), message());
    expect(outcome).toMatchObject({ status: 'rejected' });
    expect(service.refused.at(-1)).toEqual({ status: 403, reason: 'vapid key does not match the subscription' });
  });

  it('turns a push service that never answers into retry at the timeout, not a hang', async () => {
    const subscription = service.subscribe(vapid.publicKey);
    service.neverAnswer(subscription.id);
    const started = Date.now();
    expect(await gateway.send(targetFor(subscription), message())).toEqual({ status: 'retry' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(TIMEOUT_MS - 20);
    expect(Date.now() - started).toBeLessThan(TIMEOUT_MS + 10_000);
  });

  it("rejects with the caller's reason when the caller aborts", async () => {
    const subscription = service.subscribe(vapid.publicKey);
    service.neverAnswer(subscription.id);
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('shutting down')), 50);
    await expect(gateway.send(targetFor(subscription), message(), controller.signal)).rejects.toThrow('shutting down');
  });
});

describe('APNs gateway (HTTP/2, ES256 provider token) against the stand-in', () => {
  const teamId = 'TEAM123456';
  const keyId = 'KEY7654321';
  const topic = 'org.pigeon.mail';
  const keys = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const privateKeyPem = keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  let service: ApnsService;
  let clock: ReturnType<typeof manualClock>;
  let gateway: Gateway;

  beforeEach(async () => {
    clock = manualClock();
    service = await startApnsService({ teamId, keyId, publicKey: keys.publicKey, topic, now: clock.now });
    gateway = createApnsGateway({ teamId, keyId, privateKeyPem, origin: service.origin, timeoutMs: TIMEOUT_MS, ca: service.ca, now: clock.now });
  });
  afterEach(async () => {
    await gateway.close();
    await service.close();
  });

  const target = (token = 'a1b2c3d4e5f6') => ({ kind: 'apns' as const, token, topic });

  it('sends a silent sync as a background push with priority 5 and exact headers and payload', async () => {
    const sent = message({ ttlSeconds: 900 });
    expect(await gateway.send(target(), sent)).toMatchObject({ status: 'sent' });
    expect(service.refused).toEqual([]);
    expect(service.requests).toHaveLength(1);
    const request = service.requests[0]!;
    expect(request.deviceToken).toBe('a1b2c3d4e5f6');
    expect(request.headers).toMatchObject({
      'apns-push-type': 'background',
      'apns-topic': topic,
      'apns-priority': '5',
      'apns-expiration': String(Math.floor(clock.now() / 1000) + 900),
      'apns-id': sent.id,
      'apns-collapse-id': 'sync:account-1',
    });
    expect(request.payload).toEqual({ aps: { 'content-available': 1 }, type: 'sync', id: sent.id, data: { account: 'account-1', cursor: 'c-42' } });
  });

  it('sends new mail as an alert with priority 10, alert text, badge and sound', async () => {
    const sent = newMail();
    expect(await gateway.send(target(), sent)).toMatchObject({ status: 'sent' });
    const request = service.requests[0]!;
    expect(request.headers['apns-push-type']).toBe('alert');
    expect(request.headers['apns-priority']).toBe('10');
    expect(request.payload).toEqual({ aps: { alert: { title: 'Ada Lovelace', body: 'Engine notes' }, badge: 3, sound: 'default' }, type: 'newMail', id: sent.id, badge: 3, data: { folder: 'inbox', messageId: 'm-7' } });
  });

  it('keeps collapse ids within 64 bytes (a longer key is hashed, stably) and derives a UUID apns-id from other ids', async () => {
    const longKey = `reminder:${'é'.repeat(40)}`;
    await gateway.send(target(), message({ collapseKey: longKey, id: 'msg-1' }));
    await gateway.send(target(), message({ collapseKey: longKey, id: 'msg-1' }));
    await gateway.send(target(), message({ collapseKey: 'reminder:other', id: 'msg-2' }));
    expect(service.refused).toEqual([]);
    const [first, second, third] = service.requests.map((request) => request.headers);
    expect(Buffer.byteLength(first!['apns-collapse-id']!, 'utf8')).toBeLessThanOrEqual(64);
    expect(first!['apns-collapse-id']).toBe(second!['apns-collapse-id']);
    expect(third!['apns-collapse-id']).toBe('reminder:other');
    expect(first!['apns-id']).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(first!['apns-id']).toBe(second!['apns-id']);
    expect(third!['apns-id']).not.toBe(first!['apns-id']);
  });

  it('reuses the provider token and one connection, and renews the token after 40 minutes', async () => {
    await gateway.send(target(), message());
    clock.advance(minutes(39));
    await gateway.send(target(), message());
    expect(service.providerTokens).toHaveLength(1);
    clock.advance(minutes(2));
    await gateway.send(target(), message());
    expect(service.refused).toEqual([]);
    expect(service.providerTokens).toHaveLength(2);
    expect(service.requests.map((request) => request.jwt)).toEqual([service.providerTokens[0], service.providerTokens[0], service.providerTokens[1]]);
    const iat = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()).iat as number;
    expect(iat(service.providerTokens[1]!) - iat(service.providerTokens[0]!)).toBe(41 * 60);
    expect(service.connections()).toBe(1);
  });

  it('renews the token and retries once on 403 ExpiredProviderToken', async () => {
    await gateway.send(target(), message());
    service.expireProviderTokens();
    expect(await gateway.send(target(), message())).toMatchObject({ status: 'sent' });
    expect(service.providerTokens).toHaveLength(2);
    expect(service.refused).toEqual([{ status: 403, reason: 'ExpiredProviderToken' }]);
    expect(service.requests.at(-1)!.jwt).toBe(service.providerTokens[1]);
  });

  it('maps 410 Unregistered and 400 BadDeviceToken to gone, 429/500/503 to retry, other 4xx to rejected', async () => {
    service.answerWith('dead01', { status: 410, reason: 'Unregistered' });
    service.answerWith('bad01', { status: 400, reason: 'BadDeviceToken' });
    service.answerWith('busy01', { status: 429, reason: 'TooManyRequests', retryAfter: '30' });
    service.answerWith('down01', { status: 500, reason: 'InternalServerError' });
    service.answerWith('down02', { status: 503, reason: 'ServiceUnavailable' });
    service.answerWith('topic01', { status: 400, reason: 'DeviceTokenNotForTopic' });
    expect(await gateway.send(target('dead01'), message())).toEqual({ status: 'gone' });
    expect(await gateway.send(target('bad01'), message())).toEqual({ status: 'gone' });
    expect(await gateway.send(target('busy01'), message())).toEqual({ status: 'retry', afterMs: 30_000 });
    expect(await gateway.send(target('down01'), message())).toEqual({ status: 'retry' });
    expect(await gateway.send(target('down02'), message())).toEqual({ status: 'retry' });
    expect(await gateway.send(target('topic01'), message())).toEqual({ status: 'rejected', reason: 'APNs answered 400 DeviceTokenNotForTopic' });
  });

  it('refuses an oversized payload before sending', async () => {
    expect(await gateway.send(target(), message({ data: { blob: 'x'.repeat(4100) } }))).toEqual({ status: 'rejected', reason: 'payload too large' });
    expect(service.requests).toHaveLength(0);
    expect(service.refused).toHaveLength(0);
  });

  it('shares one provider token and one connection among concurrent sends', async () => {
    const outcomes = await Promise.all(Array.from({ length: 20 }, () => gateway.send(target(), message())));
    expect(outcomes.every((outcome) => outcome.status === 'sent')).toBe(true);
    expect(service.requests).toHaveLength(20);
    expect(service.providerTokens).toHaveLength(1);
    expect(service.connections()).toBe(1);
  });

  it('maps an unreachable server to retry', async () => {
    const origin = service.origin;
    await gateway.close();
    await service.close();
    gateway = createApnsGateway({ teamId, keyId, privateKeyPem, origin, timeoutMs: TIMEOUT_MS, ca: service.ca, now: clock.now });
    expect(await gateway.send(target(), message())).toEqual({ status: 'retry' });
  });

  it('reconnects after GOAWAY', async () => {
    await gateway.send(target(), message());
    service.goAway();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await gateway.send(target(), message())).toMatchObject({ status: 'sent' });
    expect(service.connections()).toBe(2);
    expect(service.requests).toHaveLength(2);
  });

  it('turns a server that never answers into retry at the timeout, and the connection stays usable', async () => {
    service.neverAnswer('silent01');
    const started = Date.now();
    expect(await gateway.send(target('silent01'), message())).toEqual({ status: 'retry' });
    expect(Date.now() - started).toBeLessThan(TIMEOUT_MS + 10_000);
    expect(await gateway.send(target(), message())).toMatchObject({ status: 'sent' });
    expect(service.connections()).toBe(1);
  });
});

describe('FCM HTTP v1 gateway (service account, RFC 7523) against the stand-in', () => {
  const projectId = 'pigeon-test';
  const clientEmail = 'push@pigeon-test.iam.gserviceaccount.com';
  const keys = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const privateKey = keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  let service: FcmService;
  let clock: ReturnType<typeof manualClock>;
  let gateway: Gateway;

  beforeEach(async () => {
    clock = manualClock();
    service = await startFcmService({ projectId, clientEmail, publicKey: keys.publicKey, now: clock.now });
    gateway = createFcmGateway({
      projectId,
      serviceAccount: { client_email: clientEmail, private_key: privateKey, token_uri: service.tokenUri },
      origin: service.origin,
      timeoutMs: TIMEOUT_MS,
      now: clock.now,
    });
  });
  afterEach(async () => {
    await gateway.close();
    await service.close();
  });

  const target = (token = 'fcm-token-1') => ({ kind: 'fcm' as const, token });

  it('sends a data message with string-only data, collapse key, TTL and priority', async () => {
    const sent = message({ ttlSeconds: 900, urgency: 'normal' });
    expect(await gateway.send(target(), sent)).toMatchObject({ status: 'sent' });
    expect(service.refused).toEqual([]);
    expect(service.requests).toHaveLength(1);
    expect(service.requests[0]!.accessToken).toBe(service.issued[0]);
    expect(service.requests[0]!.message).toEqual({
      token: 'fcm-token-1',
      data: { type: 'sync', id: sent.id, data: JSON.stringify({ account: 'account-1', cursor: 'c-42' }) },
      android: { collapse_key: 'sync:account-1', ttl: '900s', priority: 'NORMAL' },
    });
  });

  it('sends new mail with HIGH priority and a notification', async () => {
    const sent = newMail();
    expect(await gateway.send(target(), sent)).toMatchObject({ status: 'sent' });
    expect(service.requests[0]!.message).toEqual({
      token: 'fcm-token-1',
      data: { type: 'newMail', id: sent.id, badge: '3', data: JSON.stringify({ folder: 'inbox', messageId: 'm-7' }) },
      android: { collapse_key: 'mail:inbox', ttl: '3600s', priority: 'HIGH', notification: { title: 'Ada Lovelace', body: 'Engine notes', notification_count: 3 } },
    });
  });

  it('reuses the access token until shortly before it expires, then fetches a new one', async () => {
    await gateway.send(target(), message());
    clock.advance(minutes(50));
    await gateway.send(target(), message());
    expect(service.issued).toHaveLength(1);
    clock.advance(minutes(6)); // 56 min: within 5 minutes of the 3599 s lifetime
    await gateway.send(target(), message());
    expect(service.issued).toHaveLength(2);
    expect(service.requests.map((request) => request.accessToken)).toEqual([service.issued[0], service.issued[0], service.issued[1]]);
    expect(service.refused).toEqual([]);
  });

  it('shares one access token among concurrent sends', async () => {
    const outcomes = await Promise.all(Array.from({ length: 10 }, () => gateway.send(target(), message())));
    expect(outcomes.every((outcome) => outcome.status === 'sent')).toBe(true);
    expect(service.requests).toHaveLength(10);
    expect(service.issued).toHaveLength(1);
  });

  it('fetches a new access token once on 401', async () => {
    await gateway.send(target(), message());
    service.revokeAccessTokens();
    expect(await gateway.send(target(), message())).toMatchObject({ status: 'sent' });
    expect(service.issued).toHaveLength(2);
    expect(service.refused.filter((refusal) => refusal.status === 401)).toHaveLength(1);
    expect(service.requests.at(-1)!.accessToken).toBe(service.issued[1]);
  });

  it('maps UNREGISTERED and an invalid token to gone, 429/503/500 to retry with Retry-After, other errors to rejected', async () => {
    service.answerWith('dead', { status: 404, reason: 'UNREGISTERED' });
    service.answerWith('malformed', { status: 400, reason: 'INVALID_ARGUMENT', fieldViolation: 'message.token' });
    service.answerWith('badttl', { status: 400, reason: 'INVALID_ARGUMENT', fieldViolation: 'message.android.ttl' });
    service.answerWith('quota', { status: 429, reason: 'QUOTA_EXCEEDED', retryAfter: '45' });
    service.answerWith('down', { status: 503, reason: 'UNAVAILABLE' });
    service.answerWith('broken', { status: 500, reason: 'INTERNAL' });
    expect(await gateway.send(target('dead'), message())).toEqual({ status: 'gone' });
    expect(await gateway.send(target('malformed'), message())).toEqual({ status: 'gone' });
    expect(await gateway.send(target('badttl'), message())).toMatchObject({ status: 'rejected' });
    expect(await gateway.send(target('quota'), message())).toEqual({ status: 'retry', afterMs: 45_000 });
    expect(await gateway.send(target('down'), message())).toEqual({ status: 'retry' });
    expect(await gateway.send(target('broken'), message())).toEqual({ status: 'retry' });
  });

  it('gives up (rejected) when the token endpoint refuses the assertion', async () => {
    const wrongKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const misconfigured = createFcmGateway({
      projectId,
      serviceAccount: { client_email: clientEmail, private_key: wrongKey, token_uri: service.tokenUri },
      origin: service.origin,
      timeoutMs: TIMEOUT_MS,
      now: clock.now,
    });
    const outcome = await misconfigured.send(target(), message());
    expect(outcome).toMatchObject({ status: 'rejected' });
    expect((outcome as { reason: string }).reason).toContain('invalid_grant');
    expect(service.issued).toHaveLength(0);
  });

  it('turns a server that never answers into retry at the timeout', async () => {
    service.neverAnswer('silent');
    const started = Date.now();
    expect(await gateway.send(target('silent'), message())).toEqual({ status: 'retry' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(TIMEOUT_MS - 20);
    expect(Date.now() - started).toBeLessThan(TIMEOUT_MS + 10_000);
  });
});
