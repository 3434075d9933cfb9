/**
 * The Web Push gateway signs one VAPID JWT per push service and reuses it (RFC 8292 §2 allows it until `exp`):
 * against the stand-in push service, which verifies every token (signature, aud, exp within 24 h, sub) on the same
 * injected clock as the gateway.
 */
import crypto from 'node:crypto';
import type { Gateway, PushMessage } from '../../server/push/gateways/types';
import { createWebPushGateway, generateVapidKeys, VAPID_CACHE_LIMIT, VAPID_REUSE_MS, VAPID_TTL_MS, VapidAuthorizations } from '../../server/push/gateways/webPush';
import { startWebPushService, type BrowserSubscription, type WebPushService } from '../helpers/pushGateways';

const TIMEOUT_MS = 2500;
const vapid = { subject: 'mailto:push@pigeon.test', ...generateVapidKeys() };

/** Starts at the real time: web-push refuses an `exp` more than 24 h after the real clock. */
function manualClock(start = Date.now()) {
  let ms = start;
  return { now: () => ms, advance: (by: number) => void (ms += by) };
}

const message = (): PushMessage => ({ type: 'sync', collapseKey: 'sync', ttlSeconds: 60, urgency: 'normal', data: {}, id: crypto.randomUUID() });
const target = (s: BrowserSubscription) => ({ kind: 'webpush' as const, endpoint: s.endpoint, p256dh: s.p256dh, auth: s.auth });

describe('VAPID token reuse', () => {
  const clock = manualClock();
  let one: WebPushService;
  let gateway: Gateway;

  beforeAll(async () => {
    one = await startWebPushService({ now: clock.now });
    gateway = createWebPushGateway({ vapid, timeoutMs: TIMEOUT_MS, ca: one.ca, now: clock.now });
  });
  afterAll(async () => {
    await gateway?.close();
    await one?.close();
  });

  async function tokenOf(service: WebPushService, subscription: BrowserSubscription): Promise<{ t: string; claims: Record<string, unknown> }> {
    expect(await gateway.send(target(subscription), message())).toMatchObject({ status: 'sent' });
    const pushes = service.received.filter((p) => p.subscriptionId === subscription.id);
    return pushes[pushes.length - 1]!.vapid;
  }

  it('sends the same token to one push service until the reuse window ends, then a new one', async () => {
    const a1 = one.subscribe(vapid.publicKey);
    const a2 = one.subscribe(vapid.publicKey);

    const first = await tokenOf(one, a1);
    expect(first.claims).toMatchObject({ aud: one.origin, sub: vapid.subject, exp: Math.floor((clock.now() + VAPID_TTL_MS) / 1000) });
    // Another subscription of the same service: the same token (not just the same claims: ES256 signatures differ).
    expect((await tokenOf(one, a2)).t).toBe(first.t);
    expect((await tokenOf(one, a1)).t).toBe(first.t);

    // Just before the window ends the old token is still sent, and the service still accepts it.
    clock.advance(VAPID_REUSE_MS - 1000);
    expect((await tokenOf(one, a1)).t).toBe(first.t);
    clock.advance(1000);
    const renewed = await tokenOf(one, a1);
    expect(renewed.t).not.toBe(first.t);
    expect(renewed.claims.exp).toBe(Math.floor((clock.now() + VAPID_TTL_MS) / 1000));
    expect((await tokenOf(one, a2)).t).toBe(renewed.t);
    expect(one.refused).toEqual([]);
  });
});

describe('VapidAuthorizations', () => {
  const token = (header: string) => /^vapid t=([^,]+), k=(.+)$/.exec(header)!;

  it('signs one token per push service', () => {
    const cache = new VapidAuthorizations(() => 1_000_000);
    const a = cache.forEndpoint('https://push-a.example/sub/1', vapid);
    expect(cache.forEndpoint('https://push-a.example/sub/2', vapid)).toBe(a);
    const b = cache.forEndpoint('https://push-b.example/sub/1', vapid);
    expect(b).not.toBe(a);
    const claims = (header: string) => JSON.parse(Buffer.from(token(header)[1]!.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
    expect(claims(a)).toEqual({ aud: 'https://push-a.example', exp: Math.floor((1_000_000 + VAPID_TTL_MS) / 1000), sub: vapid.subject });
    expect(claims(b).aud).toBe('https://push-b.example');
    expect(cache.signed).toBe(2);
  });

  it('never reuses a token of another VAPID pair or subject', () => {
    const cache = new VapidAuthorizations(() => 1_000_000);
    const other = { subject: vapid.subject, ...generateVapidKeys() };
    const a = cache.forAudience('https://push.example', vapid);
    const b = cache.forAudience('https://push.example', other);
    const c = cache.forAudience('https://push.example', { ...vapid, subject: 'mailto:other@pigeon.test' });
    expect(new Set([a, b, c]).size).toBe(3);
    expect(token(a)[2]).toBe(vapid.publicKey);
    expect(token(b)[2]).toBe(other.publicKey);
    expect(cache.forAudience('https://push.example', vapid)).toBe(a);
    expect(cache.signed).toBe(3);
  });

  it('names the push service by its origin', () => {
    expect(VapidAuthorizations.audienceOf('https://push.example:8443/wpush/v2/abc?x=1')).toBe('https://push.example:8443');
    expect(VapidAuthorizations.audienceOf('https://push.example:443/abc')).toBe('https://push.example');
  });

  it('keeps at most VAPID_CACHE_LIMIT services, forgetting the oldest', () => {
    const cache = new VapidAuthorizations(() => 1_000_000);
    for (let i = 0; i <= VAPID_CACHE_LIMIT; i++) cache.forAudience(`https://push-${i}.example`, vapid);
    expect(cache.size).toBe(VAPID_CACHE_LIMIT);
    expect(cache.signed).toBe(VAPID_CACHE_LIMIT + 1);
    cache.forAudience(`https://push-${VAPID_CACHE_LIMIT}.example`, vapid); // the newest: still there
    expect(cache.signed).toBe(VAPID_CACHE_LIMIT + 1);
    cache.forAudience('https://push-0.example', vapid); // the oldest: signed again
    expect(cache.signed).toBe(VAPID_CACHE_LIMIT + 2);
  });
});
