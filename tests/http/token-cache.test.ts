/**
 * The caches of checked tokens (bench, scenario 1):
 * - access tokens (server/auth/accessTokens.ts): a token seen before skips only the signature check. Expiry, a clock
 *   that says "issued in the future", session-version revocation, a disabled user and the device binding must all
 *   still end a token that is in the cache;
 * - sync tokens (server/sync/tokens.ts): a text whose MAC was checked once is not checked again, but who may use it
 *   (user, device, partnership, folder, kind) is, on every call;
 * - the query-string check of authenticate, which parses the query only when it could name `access_token`.
 */
import crypto from 'node:crypto';
import request from 'supertest';
import { createAccessTokens, CLOCK_TOLERANCE_SECONDS, InvalidAccessToken } from '../../server/auth/accessTokens';
import { ManualClock } from '../../server/clock';
import { createTokenCodec, type ItemToken } from '../../server/sync/tokens';
import { ApiError } from '../../server/errors';
import { buildTestApp, signIn, type TestContext } from '../helpers/testApp';

let ctx: TestContext;
const ALICE = { username: 'alice', password: 'alice-password-cache-1' };

beforeAll(async () => {
  ctx = await buildTestApp();
  await ctx.users.addUser({ ...ALICE, role: 'user' });
});
afterAll(() => ctx.close());

function tokens(clock: ManualClock, verifiedCacheSize?: number) {
  return createAccessTokens({ keys: ctx.keys, clock, issuer: 'https://issuer.test', audience: 'pigeon-api', ttlSeconds: 3600, verifiedCacheSize });
}
const CLAIMS = { sub: 'user-1', tid: 'tenant-1', scope: 'mail', sv: 1, sid: 'sid-1', role: 'user' as const };

describe('verify with the cache', () => {
  test('a second verification of the same token is a cache hit with the same claims', async () => {
    const clock = new ManualClock();
    const t = tokens(clock);
    const token = await t.issue(CLAIMS);
    const first = await t.verify(token);
    const second = await t.verify(token);
    expect(t.stats()).toMatchObject({ hits: 1, misses: 1, size: 1 });
    expect(second).toEqual(first);
    expect(second.sub).toBe('user-1');
    expect(Object.isFrozen(second)).toBe(true);
  });

  test('a cached token still expires: past exp plus the tolerance it is refused, and forgotten', async () => {
    const clock = new ManualClock();
    const t = tokens(clock);
    const token = await t.issue(CLAIMS);
    await t.verify(token);
    clock.advance((3600 + CLOCK_TOLERANCE_SECONDS - 1) * 1000);
    await expect(t.verify(token)).resolves.toMatchObject({ sub: 'user-1' }); // inside the tolerance
    clock.advance(2000);
    await expect(t.verify(token)).rejects.toThrow(new InvalidAccessToken('expired'));
    expect(t.stats()).toMatchObject({ hits: 2, size: 0 });
    await expect(t.verify(token)).rejects.toThrow('expired'); // verified afresh: still expired
  });

  test('a clock set back before a cached token was issued refuses it as issued in the future', async () => {
    const clock = new ManualClock();
    const t = tokens(clock);
    const token = await t.issue(CLAIMS);
    await t.verify(token);
    clock.advance(-(CLOCK_TOLERANCE_SECONDS + 2) * 1000);
    await expect(t.verify(token)).rejects.toThrow('issued in the future');
    expect(t.stats().hits).toBe(1);
  });

  test('the cache is keyed by the exact text: an altered token is verified and refused', async () => {
    const clock = new ManualClock();
    const t = tokens(clock);
    const token = await t.issue(CLAIMS);
    await t.verify(token);
    const [h, p, s] = token.split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...payload, sub: 'user-2' })).toString('base64url')}.${s}`;
    await expect(t.verify(forged)).rejects.toThrow(InvalidAccessToken);
    await expect(t.verify(`${token}x`)).rejects.toThrow(InvalidAccessToken);
    expect(t.stats()).toMatchObject({ hits: 0, misses: 3, size: 1 });
  });

  test('the cache is bounded: past capacity the oldest token is forgotten (and simply verified again)', async () => {
    const clock = new ManualClock();
    const t = tokens(clock, 3);
    const issued = await Promise.all([1, 2, 3, 4].map((n) => t.issue({ ...CLAIMS, sid: `sid-${n}` })));
    for (const token of issued) await t.verify(token);
    expect(t.stats().size).toBe(3);
    await t.verify(issued[3]!); // newest: a hit
    await t.verify(issued[0]!); // oldest: was dropped, a miss
    expect(t.stats()).toMatchObject({ hits: 1, misses: 5, size: 3 });
  });

  test('size 0 turns the cache off', async () => {
    const t = tokens(new ManualClock(), 0);
    const token = await t.issue(CLAIMS);
    await t.verify(token);
    await t.verify(token);
    expect(t.stats()).toMatchObject({ hits: 0, misses: 2, size: 0 });
  });
});

describe('what the server can revoke still ends a cached token', () => {
  const session = (token: string, deviceId?: string) => {
    const r = request(ctx.app).get('/v1/session').set('Authorization', `Bearer ${token}`);
    return deviceId ? r.set('X-Device-Id', deviceId) : r;
  };

  test('session-version revocation ("revoke sessions", password change): 401 at once', async () => {
    const { access_token } = await signIn(ctx, ALICE.username, ALICE.password);
    expect((await session(access_token)).status).toBe(200);
    const before = ctx.built.accessTokens.stats().hits;
    expect((await session(access_token)).status).toBe(200);
    expect(ctx.built.accessTokens.stats().hits).toBe(before + 1); // the second call came from the cache
    await ctx.store.users.bumpSessionVersion((await ctx.store.users.byUsername(ALICE.username))!.id, ctx.clock.now());
    const res = await session(access_token);
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toMatch(/invalid_token/);
  });

  test('a disabled user: 401 at once', async () => {
    const { access_token } = await signIn(ctx, ALICE.username, ALICE.password);
    expect((await session(access_token)).status).toBe(200);
    expect((await session(access_token)).status).toBe(200);
    const id = (await ctx.store.users.byUsername(ALICE.username))!.id;
    ctx.store.db.prepare('UPDATE users SET disabled = 1 WHERE id = ?').run(id);
    try {
      expect((await session(access_token)).status).toBe(401);
    } finally {
      ctx.store.db.prepare('UPDATE users SET disabled = 0 WHERE id = ?').run(id);
    }
  });

  test('device binding: a cached token bound to one device is refused from another', async () => {
    const deviceId = `cache-device-${crypto.randomUUID().slice(0, 8)}`;
    const { access_token } = await signIn(ctx, ALICE.username, ALICE.password, { device_id: deviceId });
    expect((await session(access_token, deviceId)).status).toBe(200);
    expect((await session(access_token, deviceId)).status).toBe(200);
    const other = await session(access_token, 'another-device-0000000');
    expect(other.status).toBe(401);
    expect(other.body.code).toBe('unauthorized');
  });

  test('expiry through the API: a cached token is refused once the clock passes exp', async () => {
    const { access_token } = await signIn(ctx, ALICE.username, ALICE.password);
    expect((await session(access_token)).status).toBe(200);
    expect((await session(access_token)).status).toBe(200);
    ctx.clock.advance((ctx.config.accessTokenTtl + CLOCK_TOLERANCE_SECONDS + 1) * 1000);
    const res = await session(access_token);
    expect(res.status).toBe(401);
    expect(res.body.detail).toMatch(/expired/);
  });
});

describe('remembered sync tokens', () => {
  const position = (): ItemToken => ({ k: 'i', u: 'user-1', d: 'rec-1', di: 'device-000000000001', f: 'folder-1', e: 'epoch', de: 0, m: 7, l: [1000, 'item-1'], s: 500, x: 0, z: 1, h: 7 });
  const who = { userId: 'user-1', deviceRecordId: 'rec-1', deviceId: 'device-000000000001', folderId: 'folder-1' };
  const failure = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      return err instanceof ApiError ? `${err.status} ${err.code}` : String(err);
    }
    return 'accepted';
  };

  test('a token this codec made decodes from memory to the same position, and the caller cannot change it', () => {
    const codec = createTokenCodec(crypto.randomBytes(32));
    const mine = position();
    const text = codec.encode(mine);
    mine.m = 99; // the caller's object is not the remembered one
    expect(codec.rememberedCount()).toBe(1);
    const decoded = codec.decode(text, 'i', who);
    expect(decoded).toEqual(position());
    expect(Object.isFrozen(decoded)).toBe(true);
  });

  test('who may use a remembered token is checked on every call', () => {
    const codec = createTokenCodec(crypto.randomBytes(32));
    const text = codec.encode(position());
    expect(failure(() => codec.decode(text, 'i', who))).toBe('accepted');
    expect(failure(() => codec.decode(text, 'i', { ...who, userId: 'user-2' }))).toBe('400 invalidToken');
    expect(failure(() => codec.decode(text, 'i', { ...who, deviceId: 'device-000000000002' }))).toBe('400 invalidToken');
    expect(failure(() => codec.decode(text, 'i', { ...who, folderId: 'folder-2' }))).toBe('400 invalidToken');
    expect(failure(() => codec.decode(text, 'h', who))).toBe('400 invalidToken');
    expect(failure(() => codec.decode(text, 'i', { ...who, deviceRecordId: 'rec-2' }))).toBe('410 resyncRequired');
  });

  test('an altered text is checked (and refused), whatever is remembered; another key does not know the text', () => {
    const codec = createTokenCodec(crypto.randomBytes(32));
    const text = codec.encode(position());
    const [v, payload, sig] = text.split('.') as [string, string, string];
    const forged = `${v}.${Buffer.from(JSON.stringify({ ...position(), u: 'user-2' })).toString('base64url')}.${sig}`;
    expect(failure(() => codec.decode(forged, 'i', { ...who, userId: 'user-2' }))).toBe('400 invalidToken');
    expect(failure(() => codec.decode(`${v}.${payload}.${sig.slice(1)}A`, 'i', who))).toBe('400 invalidToken');
    expect(failure(() => createTokenCodec(crypto.randomBytes(32)).decode(text, 'i', who))).toBe('400 invalidToken');
    expect(codec.rememberedCount()).toBe(1);
  });

  test('memory is bounded, and a forgotten token is simply checked again', () => {
    const codec = createTokenCodec(crypto.randomBytes(32), 2);
    const texts = [1, 2, 3].map((m) => codec.encode({ ...position(), m, h: m }));
    expect(codec.rememberedCount()).toBe(2);
    expect(codec.decode(texts[0]!, 'i', who).m).toBe(1); // forgotten, verified again
    expect(codec.rememberedCount()).toBe(2);
  });
});

describe('a token in the query string, however it is spelled', () => {
  test('percent-escaped names are refused too', async () => {
    const { access_token } = await signIn(ctx, ALICE.username, ALICE.password);
    for (const name of ['access_token', 'access%5Ftoken', '%61ccess_token']) {
      const res = await request(ctx.app).get(`/v1/session?${name}=${access_token}`).set('Authorization', `Bearer ${access_token}`);
      expect({ name, status: res.status }).toEqual({ name, status: 401 });
    }
    const plain = await request(ctx.app).get('/v1/session?x=1').set('Authorization', `Bearer ${access_token}`);
    expect(plain.status).toBe(200);
  });
});
