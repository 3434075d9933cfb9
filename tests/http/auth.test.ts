import crypto from 'node:crypto';
import request from 'supertest';
import { SignJWT } from 'jose';
import { buildTestApp, passwordGrant, signIn, CLIENT_ID, type TestContext } from '../helpers/testApp';
import { hashPassword } from '../../server/identity/passwords';

let ctx: TestContext;
const ALICE = { username: 'alice', password: 'alice-password-1' };

beforeAll(async () => {
  ctx = await buildTestApp();
  await ctx.users.addUser({ ...ALICE, role: 'user' });
  await ctx.users.addUser({ username: 'root', password: 'root-password-1', role: 'admin' });
});
afterAll(() => ctx.close());

const session = (token: string) => request(ctx.app).get('/v1/session').set('Authorization', `Bearer ${token}`);
const refresh = (refreshToken: string, extra: Record<string, string> = {}) =>
  request(ctx.app).post('/oauth2/token').type('form').send({ grant_type: 'refresh_token', client_id: CLIENT_ID, refresh_token: refreshToken, ...extra });
const familyRows = (token: string) =>
  ctx.store.db.prepare("SELECT count(*) AS n FROM refresh_tokens WHERE revoked_at IS NULL").get() as { n: number };

describe('POST /oauth2/token, password grant', () => {
  test('issues a bearer pair with no-store caching', async () => {
    const res = await passwordGrant(ctx, ALICE.username, ALICE.password);
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body).toMatchObject({ token_type: 'Bearer', expires_in: 3600, refresh_token_expires_in: 90 * 86400, scope: 'mail' });
    expect(res.body.refresh_token).toMatch(/^prt_/);
    const [header, payload] = res.body.access_token.split('.').slice(0, 2).map((p: string) => JSON.parse(Buffer.from(p, 'base64url').toString()));
    expect(header).toMatchObject({ alg: 'EdDSA', typ: 'at+jwt' });
    expect(payload).toMatchObject({ iss: 'https://localhost:8443', aud: 'pigeon-api', scope: 'mail' });
    expect(payload.exp - payload.iat).toBe(3600);
    // Only a hash of the refresh token is stored.
    const stored = ctx.store.db.prepare('SELECT token_hash FROM refresh_tokens').all() as { token_hash: Buffer }[];
    expect(stored.some((r) => r.token_hash.toString('utf8').includes(res.body.refresh_token))).toBe(false);
    expect((await session(res.body.access_token)).status).toBe(200);
  });

  test('wrong password and unknown user are the same invalid_grant', async () => {
    const a = await passwordGrant(ctx, ALICE.username, 'wrong-password');
    const b = await passwordGrant(ctx, 'nobody', 'wrong-password');
    expect(a.status).toBe(400);
    expect(a.body).toEqual({ error: 'invalid_grant', error_description: 'invalid username or password' });
    expect(b.body).toEqual(a.body);
  });

  test('request errors follow RFC 6749 §5.2', async () => {
    const post = (body: Record<string, string>) => request(ctx.app).post('/oauth2/token').type('form').send(body);
    expect((await post({ client_id: CLIENT_ID })).body.error).toBe('invalid_request');
    expect((await post({ grant_type: 'client_credentials', client_id: CLIENT_ID })).body.error).toBe('unsupported_grant_type');
    const badClient = await post({ grant_type: 'password', client_id: 'evil', username: 'alice', password: 'x' });
    expect(badClient.status).toBe(401);
    expect(badClient.body.error).toBe('invalid_client');
    expect((await post({ grant_type: 'password', username: 'alice', password: 'x' })).body.error).toBe('invalid_request');
    expect((await passwordGrant(ctx, ALICE.username, ALICE.password, { scope: 'admin' })).body.error).toBe('invalid_scope');
    expect((await passwordGrant(ctx, ALICE.username, ALICE.password, { device_id: 'short' })).body.error).toBe('invalid_request');
    const json = await request(ctx.app).post('/oauth2/token').send({ grant_type: 'password' });
    expect(json.status).toBe(415);
    expect(json.body.code).toBe('unsupportedMediaType');
  });

  test('an admin gets the admin scope; a device_id is bound into the token', async () => {
    const admin = await signIn(ctx, 'root', 'root-password-1', { device_id: 'device-0123456789abcdef' });
    expect(admin.scope).toBe('mail admin');
    const claims = JSON.parse(Buffer.from(admin.access_token.split('.')[1]!, 'base64url').toString());
    expect(claims.did).toBe('device-0123456789abcdef');
    expect(claims.role).toBe('admin');
  });
});

describe('refresh rotation', () => {
  test('each use rotates; the old token then fails and revokes the family', async () => {
    const first = await signIn(ctx, ALICE.username, ALICE.password);
    const r1 = await refresh(first.refresh_token);
    expect(r1.status).toBe(200);
    expect(r1.body.refresh_token).not.toBe(first.refresh_token);
    const r2 = await refresh(r1.body.refresh_token);
    expect(r2.status).toBe(200);
    // Replaying the first token (rotated long ago relative to the grace) is reuse: the whole family dies.
    ctx.clock.advance(60_000);
    const reuse = await refresh(first.refresh_token);
    expect(reuse.status).toBe(400);
    expect(reuse.body.error).toBe('invalid_grant');
    expect((await refresh(r2.body.refresh_token)).body.error).toBe('invalid_grant');
  });

  test('a retry of the just-rotated token within the grace returns the same successor', async () => {
    const first = await signIn(ctx, ALICE.username, ALICE.password);
    const r1 = await refresh(first.refresh_token);
    const retry = await refresh(first.refresh_token);
    expect(retry.status).toBe(200);
    expect(retry.body.refresh_token).toBe(r1.body.refresh_token);
    // ... and the successor still works, so the client is not signed out.
    expect((await refresh(r1.body.refresh_token)).status).toBe(200);
  });

  test('forged, foreign-client and device-mismatched refresh tokens are invalid_grant', async () => {
    const bound = await signIn(ctx, ALICE.username, ALICE.password, { device_id: 'phone-aaaaaaaaaaaaaaaa' });
    const forged = bound.refresh_token.slice(0, -2) + (bound.refresh_token.endsWith('AA') ? 'BB' : 'AA');
    expect((await refresh(forged)).body.error).toBe('invalid_grant');
    expect((await refresh(bound.refresh_token, { client_id: 'pigeon-cli' })).body.error).toBe('invalid_grant');
    expect((await refresh(bound.refresh_token, { device_id: 'phone-bbbbbbbbbbbbbbbb' })).body.error).toBe('invalid_grant');
    expect((await refresh(bound.refresh_token, { device_id: 'phone-aaaaaaaaaaaaaaaa' })).status).toBe(200);
  });

  test('a refresh token expires after 90 days unused; using it slides the window', async () => {
    const a = await signIn(ctx, ALICE.username, ALICE.password);
    const b = await signIn(ctx, ALICE.username, ALICE.password);
    ctx.clock.advance(89 * 86400_000);
    const kept = await refresh(b.refresh_token);
    expect(kept.status).toBe(200);
    ctx.clock.advance(2 * 86400_000);
    const expired = await refresh(a.refresh_token);
    expect(expired.body).toEqual({ error: 'invalid_grant', error_description: 'refresh token expired' });
    expect((await refresh(kept.body.refresh_token)).status).toBe(200);
  });

  test('a password change revokes every refresh token and every access token', async () => {
    await ctx.users.addUser({ username: 'carol', password: 'carol-password-1', role: 'user' });
    const s1 = await signIn(ctx, 'carol', 'carol-password-1');
    const s2 = await signIn(ctx, 'carol', 'carol-password-1');
    expect((await session(s1.access_token)).status).toBe(200);
    const before = familyRows('').n;
    const { revoked } = await ctx.users.setPassword('carol', 'carol-password-2');
    expect(revoked).toBe(2);
    expect(familyRows('').n).toBe(before - 2);
    expect((await refresh(s1.refresh_token)).body.error).toBe('invalid_grant');
    expect((await refresh(s2.refresh_token)).body.error).toBe('invalid_grant');
    const denied = await session(s2.access_token);
    expect(denied.status).toBe(401);
    expect(denied.headers['www-authenticate']).toContain('error="invalid_token"');
    expect((await passwordGrant(ctx, 'carol', 'carol-password-1')).status).toBe(400);
    expect((await passwordGrant(ctx, 'carol', 'carol-password-2')).status).toBe(200);
  });

  test('admin "revoke sessions" ends refresh and access tokens', async () => {
    const s = await signIn(ctx, ALICE.username, ALICE.password);
    expect(await ctx.users.revokeSessionsOf('alice')).toBeGreaterThan(0);
    expect((await session(s.access_token)).status).toBe(401);
    expect((await refresh(s.refresh_token)).body.error).toBe('invalid_grant');
  });
});

describe('POST /oauth2/revoke', () => {
  test('revoking a refresh token ends its family; unknown tokens answer 200 too', async () => {
    const s = await signIn(ctx, ALICE.username, ALICE.password);
    const r1 = await refresh(s.refresh_token);
    const revoke = (token: string) => request(ctx.app).post('/oauth2/revoke').type('form').send({ token, client_id: CLIENT_ID });
    expect((await revoke(s.refresh_token)).status).toBe(200);
    expect((await refresh(r1.body.refresh_token)).body.error).toBe('invalid_grant');
    expect((await revoke('prt_nonsense')).status).toBe(200);
    const missing = await request(ctx.app).post('/oauth2/revoke').type('form').send({ client_id: CLIENT_ID });
    expect(missing.body.error).toBe('invalid_request');
  });

  test('revoking an access token ends the sign-in it came from', async () => {
    const s = await signIn(ctx, ALICE.username, ALICE.password);
    await request(ctx.app).post('/oauth2/revoke').type('form').send({ token: s.access_token, client_id: CLIENT_ID }).expect(200);
    expect((await refresh(s.refresh_token)).body.error).toBe('invalid_grant');
  });
});

describe('forged access tokens: each is 401 with WWW-Authenticate invalid_token', () => {
  let good: string;
  let claims: Record<string, unknown>;
  beforeAll(async () => {
    good = (await signIn(ctx, 'root', 'root-password-1')).access_token;
    claims = JSON.parse(Buffer.from(good.split('.')[1]!, 'base64url').toString());
  });
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const sign = (payload: Record<string, unknown>, header: Record<string, unknown> = { alg: 'EdDSA', typ: 'at+jwt' }, key = ctx.keys.signingKey) =>
    new SignJWT(payload).setProtectedHeader(header as { alg: string }).sign(key);

  const cases: Array<[string, () => Promise<string>]> = [
    ['alg none', async () => `${b64({ alg: 'none', typ: 'at+jwt' })}.${b64(claims)}.`],
    ['wrong key', async () => sign(claims, undefined, crypto.generateKeyPairSync('ed25519').privateKey)],
    ['HS256 keyed with the public key (algorithm confusion)', async () =>
      sign(claims, { alg: 'HS256', typ: 'at+jwt' }, crypto.createSecretKey(Buffer.from(ctx.keys.publicKey.export({ type: 'spki', format: 'pem' }))) as never)],
    ['payload swapped under the original signature', async () => {
      const [h, , s] = good.split('.');
      return `${h}.${b64({ ...claims, sub: 'someone-else', scope: 'mail admin' })}.${s}`;
    }],
    ['signature stripped', async () => good.split('.').slice(0, 2).join('.') + '.'],
    ['missing exp', async () => {
      const { exp: _exp, ...rest } = claims;
      return sign(rest);
    }],
    ['expired', async () => sign({ ...claims, iat: Math.floor(ctx.clock.now() / 1000) - 7200, exp: Math.floor(ctx.clock.now() / 1000) - 3600 })],
    ['wrong aud', async () => sign({ ...claims, aud: 'another-api' })],
    ['wrong iss', async () => sign({ ...claims, iss: 'https://evil.example' })],
    ['wrong typ', async () => sign(claims, { alg: 'EdDSA', typ: 'JWT' })],
    ['refresh token used as access token', async () => (await signIn(ctx, 'root', 'root-password-1')).refresh_token],
  ];

  test.each(cases)('%s', async (_name, make) => {
    const token = await make();
    const res = await session(token);
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toContain('error="invalid_token"');
    expect(res.headers['content-type']).toContain('application/problem+json');
    expect(res.body.code).toBe('unauthorized');
  });

  test('the unforged token is accepted (the cases above fail for their forgery alone)', async () => {
    expect((await session(await sign(claims))).status).toBe(200);
  });

  test('a token in the query string', async () => {
    const res = await request(ctx.app).get(`/v1/session?access_token=${good}`);
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toContain('error="invalid_token"');
    const both = await request(ctx.app).get(`/v1/session?access_token=${good}`).set('Authorization', `Bearer ${good}`);
    expect(both.status).toBe(401);
  });

  test('no token at all is 401 with a bare Bearer challenge', async () => {
    const res = await request(ctx.app).get('/v1/session');
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toMatch(/^Bearer/);
  });
});

describe('rate limits on the token endpoint', () => {
  test('110 sign-ins of different users in a minute are not throttled', async () => {
    const rl = await buildTestApp();
    try {
      // A cheap hash keeps this test fast; verification reads the cost from the stored string.
      const hash = await hashPassword('load-password', { N: 1024, r: 8, p: 1, keyLength: 32 });
      const tenant = await rl.store.tenants.create('T', rl.clock.now());
      for (let i = 0; i < 110; i++) {
        await rl.store.users.create({ tenantId: tenant.id, username: `u${i}`, email: `u${i}@x`, displayName: `U${i}`, role: 'user', passwordHash: hash }, rl.clock.now());
      }
      const statuses: number[] = [];
      for (let i = 0; i < 110; i++) statuses.push((await passwordGrant(rl, `u${i}`, 'load-password')).status);
      expect(statuses.filter((s) => s === 200)).toHaveLength(110);
    } finally {
      await rl.close();
    }
  });

  test('at least 90 of 110 wrong-password attempts on one user are throttled, with JSON 429 and Retry-After', async () => {
    const rl = await buildTestApp();
    try {
      const hash = await hashPassword('right-password', { N: 1024, r: 8, p: 1, keyLength: 32 });
      const tenant = await rl.store.tenants.create('T', rl.clock.now());
      await rl.store.users.create({ tenantId: tenant.id, username: 'victim', email: 'v@x', displayName: 'V', role: 'user', passwordHash: hash }, rl.clock.now());
      let throttled = 0;
      let sample: request.Response | undefined;
      for (let i = 0; i < 110; i++) {
        const res = await passwordGrant(rl, i % 2 ? 'VICTIM' : 'victim', `guess-${i}`);
        if (res.status === 429) {
          throttled++;
          sample = res;
        } else expect(res.status).toBe(400);
      }
      expect(throttled).toBeGreaterThanOrEqual(90);
      expect(sample!.headers['retry-after']).toMatch(/^\d+$/);
      expect(sample!.headers['content-type']).toContain('json');
      expect(sample!.body.code).toBe('rateLimited');
    } finally {
      await rl.close();
    }
  });
});

describe('issue 12, defect 5: guessing is capped, but nobody can lock a user out', () => {
  let rl: TestContext;
  const VICTIM = { username: 'victim', password: 'right-password-5' };
  beforeEach(async () => {
    // Client addresses come from X-Forwarded-For here, as behind a proxy, so one test can speak from many.
    rl = await buildTestApp({ trustProxy: 'true' });
    const hash = await hashPassword(VICTIM.password, { N: 1024, r: 8, p: 1, keyLength: 32 });
    const tenant = await rl.store.tenants.create('T', rl.clock.now());
    for (const username of ['victim', 'mallory']) {
      await rl.store.users.create({ tenantId: tenant.id, username, email: `${username}@x`, displayName: username, role: 'user', passwordHash: hash }, rl.clock.now());
    }
    rl.secrets.add(VICTIM.password);
  });
  afterEach(() => rl.close());

  const grant = (from: string, password: string, extra: Record<string, string> = {}, username = VICTIM.username) =>
    request(rl.app).post('/oauth2/token').set('X-Forwarded-For', from).type('form')
      .send({ grant_type: 'password', client_id: CLIENT_ID, username, password, ...extra });
  const guesses = async (n: number, from: (i: number) => string, extra: Record<string, string> = {}) => {
    const statuses: number[] = [];
    for (let i = 0; i < n; i++) statuses.push((await grant(from(i), `guess-${i}`, extra)).status);
    expect(statuses.every((s) => s === 400 || s === 429)).toBe(true);
    return statuses.filter((s) => s === 429).length;
  };

  test('110 guesses from one address: at least 90 refused, and the real user still signs in from elsewhere', async () => {
    expect(await guesses(110, () => '203.0.113.7')).toBeGreaterThanOrEqual(90);
    // Before: the username itself was locked for 15 minutes, for everyone.
    const real = await grant('198.51.100.20', VICTIM.password);
    expect(real.status).toBe(200);
    // A typo of the real user's is an ordinary failure, not a 429.
    expect((await grant('198.51.100.20', 'typo')).status).toBe(400);
  });

  test('110 guesses spread over 110 addresses: at least 90 refused; a device holding a live sign-in still gets in', async () => {
    const before = (await grant('198.51.100.30', VICTIM.password, { device_id: 'victim-phone-0123456789' })).body;
    expect(before.refresh_token).toMatch(/^prt_/);
    expect(await guesses(110, (i) => `203.0.113.${i + 1}`)).toBeGreaterThanOrEqual(90);
    // The per-username budget is spent: a new device of the user's waits like the attacker (the documented cost)…
    const fresh = await grant('198.51.100.31', VICTIM.password);
    expect(fresh.status).toBe(429);
    expect(fresh.headers['retry-after']).toMatch(/^\d+$/);
    // …but the phone that holds a live sign-in proves it and signs in again.
    const phone = await grant('198.51.100.30', VICTIM.password, { refresh_token: before.refresh_token, device_id: 'victim-phone-0123456789' });
    expect(phone.status).toBe(200);
    // A proof is no licence to guess: it has a budget of its own (10 failures).
    const withProof = await guesses(15, () => '198.51.100.30', { refresh_token: phone.body.refresh_token });
    expect(withProof).toBeGreaterThanOrEqual(5);
  });

  test('no exemption for a proof that is not a live sign-in of this user', async () => {
    const mallory = (await grant('198.51.100.40', VICTIM.password, {}, 'mallory')).body;
    const own = (await grant('198.51.100.41', VICTIM.password)).body;
    const rotated = own.refresh_token as string;
    const next = await request(rl.app).post('/oauth2/token').type('form').send({ grant_type: 'refresh_token', client_id: CLIENT_ID, refresh_token: rotated });
    expect(next.status).toBe(200);
    expect(await guesses(40, (i) => `203.0.113.${i + 1}`)).toBeGreaterThanOrEqual(20);
    for (const proof of [mallory.refresh_token, rotated, 'prt_AAAAAAAAAAAAAAAA.' + 'A'.repeat(43)]) {
      expect((await grant('198.51.100.42', VICTIM.password, { refresh_token: proof })).status).toBe(429);
    }
    // The live one is accepted.
    expect((await grant('198.51.100.42', VICTIM.password, { refresh_token: next.body.refresh_token })).status).toBe(200);
  });
});

describe('device binding through refresh', () => {
  test('a device_id on a refresh binds a sign-in that was not bound; once bound it stays bound', async () => {
    const s = await signIn(ctx, ALICE.username, ALICE.password);
    const bound = await refresh(s.refresh_token, { device_id: 'laptop-0123456789abcdef' });
    expect(bound.status).toBe(200);
    const claims = JSON.parse(Buffer.from(bound.body.access_token.split('.')[1], 'base64url').toString());
    expect(claims.did).toBe('laptop-0123456789abcdef');
    expect((await refresh(bound.body.refresh_token, { device_id: 'other-0123456789abcdef' })).body.error).toBe('invalid_grant');
  });
});
