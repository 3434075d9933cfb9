/**
 * DPoP-bound access tokens (RFC 9449) at the mailbox API, over the production HTTPS listener: every case runs against
 * two apps over one store, keys and clock — one with the fast lane, one without — so the lane (server/http/fastLane.ts)
 * and the Express chain are held to the same rules, and must give the same status and challenge. Proofs are made here
 * with jose (SignJWT, generateKeyPair), independently of the server's verifier; a bound token is the app's own token
 * re-issued with `cnf.jkt`, as the identity provider will mint it.
 */
import crypto from 'node:crypto';
import https from 'node:https';
import fs from 'node:fs';
import request from 'supertest';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK, type KeyLike } from 'jose';
import { buildTestApp, signIn, type TestContext } from '../helpers/testApp';
import { devCertificate } from '../helpers/server';
import { createApp } from '../../server/app';
import type { Config } from '../../server/config';
import { createLogger } from '../../server/logger';
import { withFastLane } from '../../server/http/fastLane';
import { listenHttps, type HttpsHandle } from '../../server/httpsServer';

const PW = 'password-for-dpop-tests';
const DEVICE = 'dpop-device-000000000001';
const ALGS = 'algs="ES256 EdDSA RS256 PS256"';

interface Side {
  name: string;
  built: ReturnType<typeof createApp>;
  https: HttpsHandle;
}

interface Holder {
  privateKey: KeyLike;
  jwk: JWK;
  jkt: string;
}

let ctx: TestContext;
let tls: { cert: string; key: string };
let fast: Side;
let slow: Side;
let holder: Holder;
let stranger: Holder;
/** Alice's tokens: her own (no cnf), and the same re-issued bound to `holder`'s key. */
const tok = { unbound: '', bound: '' };
let inboxId = '';

async function side(name: string, config: Partial<Config>): Promise<Side> {
  const log = createLogger({ logLevel: 'error', logPretty: false }, { write: () => {} });
  const built = createApp({ config: { ...ctx.config, ...config }, store: ctx.store, keys: ctx.keys, clock: ctx.clock, log, lag: { lagMs: () => 0, stop() {} } });
  const server = await listenHttps(withFastLane(built.app, built.fastLane), tls, { ...ctx.config, host: '127.0.0.1', port: 0 });
  return { name, built, https: server };
}

async function newHolder(alg = 'ES256'): Promise<Holder> {
  const { publicKey, privateKey } = await generateKeyPair(alg);
  const jwk = await exportJWK(publicKey);
  return { privateKey, jwk, jkt: await calculateJwkThumbprint(jwk) };
}

const ath = (token: string) => crypto.createHash('sha256').update(token).digest('base64url');

/** A proof as a client makes it; `htu` defaults to the side's own URL for `path` (query left out). */
function proofFor(s: Side, o: { method?: string; path: string; token: string; key?: Holder; alg?: string; htu?: string; jti?: string }): Promise<string> {
  const key = o.key ?? holder;
  const htu = o.htu ?? `https://127.0.0.1:${s.https.port}${o.path.split('?')[0]}`;
  return new SignJWT({ htm: o.method ?? 'GET', htu, ath: ath(o.token), jti: o.jti ?? crypto.randomUUID(), iat: Math.floor(ctx.clock.now() / 1000) })
    .setProtectedHeader({ alg: o.alg ?? 'ES256', typ: 'dpop+jwt', jwk: key.jwk })
    .sign(key.privateKey);
}

interface Answer {
  status: number;
  challenge: string | undefined;
  body: Record<string, unknown>;
}

function send(s: Side, r: { method?: string; path: string; headers: Record<string, string | string[]>; body?: string }): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port: s.https.port, method: r.method ?? 'GET', path: r.path, headers: r.headers, ca: tls.cert, servername: 'localhost', agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode!, challenge: res.headers['www-authenticate'], body: text ? JSON.parse(text) : {} });
        });
      },
    );
    req.once('error', reject);
    req.end(r.body);
  });
}

/**
 * Runs one case against both apps (the request made per app: a proof names its port) and checks they answer alike;
 * `lane` is whether the fast lane must take the fast app's request. Answers the fast app's answer.
 */
async function onBoth(make: (s: Side) => Promise<Parameters<typeof send>[1]>, lane: boolean): Promise<Answer> {
  const a = await send(slow, await make(slow));
  const before = fast.built.fastLane!.served;
  const b = await send(fast, await make(fast));
  expect(fast.built.fastLane!.served - before).toBe(lane ? 1 : 0);
  // A refusal may name the request URI, which names the app's own port.
  const alike = (r: Answer, s: Side) => JSON.parse(JSON.stringify({ status: r.status, challenge: r.challenge, detail: r.body.detail }).split(`:${s.https.port}/`).join(':<port>/'));
  expect(alike(b, fast)).toEqual(alike(a, slow));
  return b;
}

const dpopHeaders = (token: string, proof: string | string[]) => ({ Authorization: `DPoP ${token}`, DPoP: proof, 'X-Device-Id': DEVICE });

beforeAll(async () => {
  ctx = await buildTestApp();
  await ctx.users.addUser({ username: 'alice', password: PW, role: 'user' });
  ctx.secrets.add(PW);
  const cert = await devCertificate(ctx.dir);
  tls = { cert: cert.cert, key: fs.readFileSync(cert.keyFile, 'utf8') };
  slow = await side('express', { fastLane: false });
  fast = await side('fast lane', { fastLane: true });
  holder = await newHolder();
  stranger = await newHolder();

  const t = await signIn(ctx, 'alice', PW, { device_id: DEVICE });
  tok.unbound = t.access_token;
  const reg = await request(ctx.app).post('/v1/devices').set({ Authorization: `Bearer ${tok.unbound}`, 'X-Device-Id': DEVICE }).send({ friendlyName: 'phone' });
  expect(reg.status).toBe(201);
  const claims = JSON.parse(Buffer.from(tok.unbound.split('.')[1]!, 'base64url').toString());
  expect(claims.cnf).toBeUndefined();
  const { sub, tid, scope, sv, sid, role, did } = claims;
  tok.bound = await ctx.built.accessTokens.issue({ sub, tid, scope, sv, sid, role, did, cnf: { jkt: holder.jkt } });
  const alice = (await ctx.store.users.byUsername('alice'))!;
  inboxId = (await ctx.store.folders.byKind(alice.id, 'inbox'))!.id;
});

afterAll(async () => {
  for (const s of [slow, fast]) await s?.https.drain(1000);
  await ctx?.close();
});

describe('a DPoP-bound token', () => {
  test('with a good proof: folder sync answers 200 (served by the fast lane on the fast app)', async () => {
    const path = '/v1/folders/sync';
    const r = await onBoth(async (s) => ({ path, headers: dpopHeaders(tok.bound, await proofFor(s, { path, token: tok.bound })) }), true);
    expect(r.status).toBe(200);
    expect(Array.isArray(r.body.created)).toBe(true);
  });

  test('with a good proof: item sync with a query (htu without it) answers 200', async () => {
    const path = `/v1/folders/${inboxId}/items/sync?maxChanges=1`;
    const r = await onBoth(async (s) => ({ path, headers: dpopHeaders(tok.bound, await proofFor(s, { path, token: tok.bound })) }), true);
    expect(r.status).toBe(200);
  });

  test('with a good proof on an Express-only route: POST /v1/folders answers 201 (htm POST)', async () => {
    let n = 0;
    const r = await onBoth(
      async (s) => ({
        method: 'POST',
        path: '/v1/folders',
        headers: { ...dpopHeaders(tok.bound, await proofFor(s, { method: 'POST', path: '/v1/folders', token: tok.bound })), 'Content-Type': 'application/json' },
        body: JSON.stringify({ displayName: `DPoP folder ${++n}` }),
      }),
      false,
    );
    expect(r.status).toBe(201);
  });

  test('a replayed proof: 401 with the DPoP challenge', async () => {
    const path = '/v1/folders/sync';
    const proofs = new Map<Side, string>();
    const first = async (s: Side) => {
      proofs.set(s, await proofFor(s, { path, token: tok.bound }));
      return { path, headers: dpopHeaders(tok.bound, proofs.get(s)!) };
    };
    expect((await onBoth(first, true)).status).toBe(200);
    const again = await onBoth(async (s) => ({ path, headers: dpopHeaders(tok.bound, proofs.get(s)!) }), true);
    expect(again.status).toBe(401);
    expect(again.challenge).toMatch(/^DPoP error="invalid_dpop_proof", error_description="[^"]*used before[^"]*"/);
    expect(again.challenge).toContain(ALGS);
    expect(again.body).toMatchObject({ code: 'unauthorized', error: 'invalid_dpop_proof' });
    expect(again.body.detail).toMatch(/used before/);
  });

  const refusals: Array<[string, string, (s: Side) => Promise<Parameters<typeof send>[1]>, RegExp]> = [
    ['wrong htu (another path)', 'invalid_dpop_proof', async (s) => ({ path: '/v1/folders/sync', headers: dpopHeaders(tok.bound, await proofFor(s, { path: '/v1/session', token: tok.bound })) }), /"htu" does not match/],
    ['wrong htu (another host)', 'invalid_dpop_proof', async (s) => ({ path: '/v1/folders/sync', headers: dpopHeaders(tok.bound, await proofFor(s, { path: '/v1/folders/sync', token: tok.bound, htu: `https://localhost:${s.https.port}/v1/folders/sync` })) }), /"htu" does not match/],
    ['wrong htm', 'invalid_dpop_proof', async (s) => ({ path: '/v1/folders/sync', headers: dpopHeaders(tok.bound, await proofFor(s, { method: 'POST', path: '/v1/folders/sync', token: tok.bound })) }), /"htm" does not match/],
    ['a proof signed by another key', 'invalid_dpop_proof', async (s) => ({ path: '/v1/folders/sync', headers: dpopHeaders(tok.bound, await proofFor(s, { path: '/v1/folders/sync', token: tok.bound, key: stranger })) }), /key other than/],
    ['a proof for another token (ath)', 'invalid_dpop_proof', async (s) => ({ path: '/v1/folders/sync', headers: dpopHeaders(tok.bound, await proofFor(s, { path: '/v1/folders/sync', token: tok.unbound })) }), /"ath" does not match/],
    ['no DPoP header', 'invalid_dpop_proof', async () => ({ path: '/v1/folders/sync', headers: { Authorization: `DPoP ${tok.bound}`, 'X-Device-Id': DEVICE } }), /needs a DPoP header/],
    ['two DPoP headers', 'invalid_dpop_proof', async (s) => ({
      path: '/v1/folders/sync',
      headers: dpopHeaders(tok.bound, [await proofFor(s, { path: '/v1/folders/sync', token: tok.bound }), await proofFor(s, { path: '/v1/folders/sync', token: tok.bound })]),
    }), /Exactly one DPoP header/],
    ['an unbound token under the DPoP scheme', 'invalid_token', async (s) => ({ path: '/v1/folders/sync', headers: dpopHeaders(tok.unbound, await proofFor(s, { path: '/v1/folders/sync', token: tok.unbound })) }), /not bound to a DPoP key/],
    ['a forged token under the DPoP scheme', 'invalid_token', async (s) => {
      const forged = `${tok.bound.slice(0, -4)}AAAA`;
      return { path: '/v1/folders/sync', headers: dpopHeaders(forged, await proofFor(s, { path: '/v1/folders/sync', token: forged })) };
    }, /not valid/],
  ];

  test.each(refusals)('%s: 401, DPoP error="%s"', async (_name, error, make, detail) => {
    const r = await onBoth(make, true);
    expect(r.status).toBe(401);
    expect(r.challenge).toMatch(new RegExp(`^DPoP error="${error}", error_description="[^"]+", ${ALGS}$`));
    expect(r.body).toMatchObject({ code: 'unauthorized', error });
    expect(r.body.detail).toMatch(detail);
  });

  test('a refusal on an Express-only route is the same: POST with a proof for GET', async () => {
    const r = await onBoth(
      async (s) => ({
        method: 'POST',
        path: '/v1/folders',
        headers: { ...dpopHeaders(tok.bound, await proofFor(s, { path: '/v1/folders', token: tok.bound })), 'Content-Type': 'application/json' },
        body: JSON.stringify({ displayName: 'never made' }),
      }),
      false,
    );
    expect(r.status).toBe(401);
    expect(r.challenge).toMatch(/^DPoP error="invalid_dpop_proof"/);
  });

  test('sent as a Bearer token: 401 (RFC 9449 §7.2), the Bearer challenge with a DPoP one beside it', async () => {
    const r = await onBoth(async () => ({ path: '/v1/folders/sync', headers: { Authorization: `Bearer ${tok.bound}`, 'X-Device-Id': DEVICE } }), true);
    expect(r.status).toBe(401);
    expect(r.challenge).toBe(`Bearer realm="pigeon", error="invalid_token", DPoP ${ALGS}`);
    expect(r.body.detail).toMatch(/bound to a DPoP key/);
  });

  test('sent as a Bearer token with a good proof beside it: still 401', async () => {
    const path = '/v1/folders/sync';
    const r = await onBoth(async (s) => ({ path, headers: { Authorization: `Bearer ${tok.bound}`, DPoP: await proofFor(s, { path, token: tok.bound }), 'X-Device-Id': DEVICE } }), true);
    expect(r.status).toBe(401);
  });
});

describe('an unbound Bearer token works as before', () => {
  test('200, with or without a DPoP header beside it (ignored)', async () => {
    const path = '/v1/folders/sync';
    expect((await onBoth(async () => ({ path, headers: { Authorization: `Bearer ${tok.unbound}`, 'X-Device-Id': DEVICE } }), true)).status).toBe(200);
    const withHeader = await onBoth(async () => ({ path, headers: { Authorization: `Bearer ${tok.unbound}`, DPoP: 'not-even-a-proof', 'X-Device-Id': DEVICE } }), true);
    expect(withHeader.status).toBe(200);
  });

  test('a bad Bearer token keeps the Bearer challenge of today', async () => {
    const r = await onBoth(async () => ({ path: '/v1/folders/sync', headers: { Authorization: 'Bearer not.a.token', 'X-Device-Id': DEVICE } }), true);
    expect(r.status).toBe(401);
    expect(r.challenge).toBe('Bearer realm="pigeon", error="invalid_token"');
  });
});

describe('the URI a proof must name is the one the client addressed', () => {
  const forwarded = { 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'mail.example.test' };
  const proofForForwarded = (token: string) => proofFor(fast, { path: '/v1/devices', token, htu: 'https://mail.example.test/v1/devices' });

  test('behind a trusted proxy (trust proxy: loopback), the forwarded scheme and host', async () => {
    const log = createLogger({ logLevel: 'error', logPretty: false }, { write: () => {} });
    const behind = createApp({ config: { ...ctx.config, trustProxy: 'loopback', fastLane: false }, store: ctx.store, keys: ctx.keys, clock: ctx.clock, log, lag: { lagMs: () => 0, stop() {} } });
    const res = await request(behind.app).get('/v1/devices').set({ ...dpopHeaders(tok.bound, await proofForForwarded(tok.bound)), ...forwarded });
    expect(res.status).toBe(200);
  });

  test('without a trusted proxy, forwarded headers are ignored: the same proof is refused', async () => {
    const res = await request(ctx.app).get('/v1/devices').set({ ...dpopHeaders(tok.bound, await proofForForwarded(tok.bound)), ...forwarded });
    expect(res.status).toBe(401);
    expect(res.body.detail).toMatch(/"htu" does not match the request URI http:\/\/127\.0\.0\.1:\d+\/v1\/devices/);
  });
});
