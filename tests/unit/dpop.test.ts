/**
 * DPoP proofs (server/auth/dpop.ts), one check at a time: a good proof of each allowed algorithm passes and answers
 * its key's thumbprint; each negative case differs from a good proof by the one thing it tests. Proofs are made here
 * with jose's SignJWT (and by hand where jose would refuse to make them), independently of the verifier; thumbprints
 * are computed by hand after RFC 7638.
 */
import crypto from 'node:crypto';
import express from 'express';
import type { IncomingMessage } from 'node:http';
import { SignJWT, exportJWK, generateKeyPair, type JWK, type KeyLike } from 'jose';
import {
  DPOP_ALGORITHMS,
  DpopReplayMemoryFull,
  InvalidDpopProof,
  PROOF_MAX_AGE_SECONDS,
  createDpopVerifier,
  createReplayMemory,
  normalizeHtu,
  type DpopCheck,
} from '../../server/auth/dpop';
import { CLOCK_TOLERANCE_SECONDS } from '../../server/auth/accessTokens';
import { dpopToken, expressOrigin, requestUri, socketOrigin, usesDpopScheme } from '../../server/auth/authenticate';

const START = Date.UTC(2026, 0, 1, 12);
let nowMs = START;
const clock = () => nowMs;
beforeEach(() => {
  nowMs = START;
});

const URI = 'https://mail.example.test/v1/folders/sync';
const ACCESS_TOKEN = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl';
const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
const sha256 = (text: string) => crypto.createHash('sha256').update(text).digest('base64url');

interface Holder {
  alg: string;
  privateKey: KeyLike;
  jwk: JWK;
  /** RFC 7638: SHA-256 of the required members, in lexicographic order, without whitespace. */
  jkt: string;
}

function thumbprint(jwk: JWK): string {
  const required: Record<string, string[]> = { EC: ['crv', 'kty', 'x', 'y'], OKP: ['crv', 'kty', 'x'], RSA: ['e', 'kty', 'n'] };
  const members = required[jwk.kty!]!;
  return sha256(`{${members.map((m) => `"${m}":"${(jwk as unknown as Record<string, string>)[m]}"`).join(',')}}`);
}

async function holder(alg: string): Promise<Holder> {
  const { publicKey, privateKey } = await generateKeyPair(alg, alg.startsWith('RS') || alg.startsWith('PS') ? { modulusLength: 2048 } : {});
  const jwk = await exportJWK(publicKey);
  return { alg, privateKey, jwk, jkt: thumbprint(jwk) };
}

let es: Holder;
let other: Holder;
const holders: Record<string, Holder> = {};
beforeAll(async () => {
  for (const alg of DPOP_ALGORITHMS) holders[alg] = await holder(alg);
  es = holders.ES256!;
  other = await holder('ES256');
});

interface ProofOptions {
  key?: Holder;
  claims?: Record<string, unknown>;
  /** Claims to leave out of the good set. */
  omit?: string[];
  header?: Record<string, unknown>;
}

let jtiCounter = 0;
/** A good proof for GET URI with ACCESS_TOKEN, but for what `o` changes. */
function proof(o: ProofOptions = {}): Promise<string> {
  const key = o.key ?? es;
  const claims: Record<string, unknown> = {
    jti: `proof-${++jtiCounter}-${crypto.randomUUID()}`,
    htm: 'GET',
    htu: URI,
    iat: Math.floor(nowMs / 1000),
    ath: sha256(ACCESS_TOKEN),
    ...o.claims,
  };
  for (const name of o.omit ?? []) delete claims[name];
  return new SignJWT(claims).setProtectedHeader({ alg: key.alg, typ: 'dpop+jwt', jwk: key.jwk, ...o.header }).sign(key.privateKey);
}

const check = (p: string, extra: Partial<DpopCheck> = {}): DpopCheck => ({ proof: p, method: 'GET', uri: URI, accessToken: ACCESS_TOKEN, jkt: es.jkt, ...extra });

/** The verifier's refusal reason, or 'accepted'. */
async function outcome(verifier: ReturnType<typeof createDpopVerifier>, c: DpopCheck): Promise<string> {
  try {
    await verifier.verify(c);
    return 'accepted';
  } catch (err) {
    if (err instanceof InvalidDpopProof) {
      expect(err.error).toBe('invalid_dpop_proof');
      return err.reason;
    }
    throw err;
  }
}

describe('a good proof', () => {
  test.each([...DPOP_ALGORITHMS])('%s: accepted, answers the RFC 7638 thumbprint of its key', async (alg) => {
    const key = holders[alg]!;
    const verifier = createDpopVerifier({ now: clock });
    expect(await verifier.verify(check(await proof({ key }), { jkt: key.jkt }))).toBe(key.jkt);
  });

  test('without an access token, no ath is needed; without an expected jkt, any key is answered', async () => {
    const verifier = createDpopVerifier({ now: clock });
    expect(await verifier.verify({ proof: await proof({ omit: ['ath'], key: other }), method: 'GET', uri: URI })).toBe(other.jkt);
  });

  test('htu is compared after normalisation; query and fragment are ignored on both sides', async () => {
    const verifier = createDpopVerifier({ now: clock });
    const uri = 'https://mail.example.test/v1/folders/~x/items/sync?token=abc';
    for (const htu of [
      'HTTPS://Mail.Example.TEST:443/v1/folders/%7Ex/items/sync',
      'https://mail.example.test/v1/folders/%7ex/items/./sync#frag',
      'https://mail.example.test/v1/folders/~x/items/sync?other=1',
    ]) {
      expect(await outcome(verifier, check(await proof({ claims: { htu } }), { uri }))).toBe('accepted');
    }
  });

  test('iat at the edges of the window: 60 s back and 5 s ahead', async () => {
    const verifier = createDpopVerifier({ now: clock });
    const now = Math.floor(nowMs / 1000);
    expect(await outcome(verifier, check(await proof({ claims: { iat: now - PROOF_MAX_AGE_SECONDS } })))).toBe('accepted');
    expect(await outcome(verifier, check(await proof({ claims: { iat: now + CLOCK_TOLERANCE_SECONDS } })))).toBe('accepted');
  });
});

describe('each bad proof is refused with invalid_dpop_proof and its reason', () => {
  const now = () => Math.floor(nowMs / 1000);
  const cases: Array<[string, () => Promise<DpopCheck>, RegExp]> = [
    ['wrong htu (another path)', async () => check(await proof({ claims: { htu: 'https://mail.example.test/v1/session' } })), /"htu" does not match/],
    ['wrong htu (another host)', async () => check(await proof({ claims: { htu: 'https://evil.example.test/v1/folders/sync' } })), /"htu" does not match/],
    ['wrong htu (another scheme)', async () => check(await proof({ claims: { htu: 'http://mail.example.test/v1/folders/sync' } })), /"htu" does not match/],
    ['wrong htu (another port)', async () => check(await proof({ claims: { htu: 'https://mail.example.test:8443/v1/folders/sync' } })), /"htu" does not match/],
    ['htu not a URI', async () => check(await proof({ claims: { htu: 'folders/sync' } })), /"htu" does not match/],
    ['wrong htm', async () => check(await proof({ claims: { htm: 'POST' } })), /"htm" does not match/],
    ['htm in another case', async () => check(await proof({ claims: { htm: 'get' } })), /"htm" does not match/],
    ['stale iat (61 s)', async () => check(await proof({ claims: { iat: now() - PROOF_MAX_AGE_SECONDS - 1 } })), /older than/],
    ['future iat (6 s)', async () => check(await proof({ claims: { iat: now() + CLOCK_TOLERANCE_SECONDS + 1 } })), /in the future/],
    ['iat missing', async () => check(await proof({ omit: ['iat'] })), /"iat"/],
    ['iat not a number', async () => check(await proof({ claims: { iat: String(now()) } })), /not a valid JWT|"iat"/],
    ['jti missing', async () => check(await proof({ omit: ['jti'] })), /"jti"/],
    ['jti too long', async () => check(await proof({ claims: { jti: 'x'.repeat(257) } })), /"jti"/],
    ['ath missing', async () => check(await proof({ omit: ['ath'] })), /needs an "ath"/],
    ['ath of another token', async () => check(await proof({ claims: { ath: sha256(`${ACCESS_TOKEN}x`) } })), /"ath" does not match/],
    ['jkt mismatch: a good proof by another key than the token is bound to', async () => check(await proof({ key: other })), /key other than/],
    ['wrong key: jwk of one key, signed by another', async () => check(await proof({ header: { jwk: other.jwk } }), { jkt: other.jkt }), /signature does not verify/],
    ['typ JWT', async () => check(await proof({ header: { typ: 'JWT' } })), /"typ"/],
    ['no typ', async () => check(await proof({ header: { typ: undefined } })), /"typ"/],
    ['no jwk', async () => check(await proof({ header: { jwk: undefined } })), /no "jwk"/],
    ['private jwk (d)', async () => {
      const { privateKey } = await generateKeyPair('ES256', { extractable: true });
      const priv = await exportJWK(privateKey);
      return check(await new SignJWT({ jti: 'p', htm: 'GET', htu: URI, iat: now(), ath: sha256(ACCESS_TOKEN) }).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: priv }).sign(privateKey));
    }, /not a public key \(it has "d"\)/],
    ['jwk of the wrong kind for alg (EC key, EdDSA)', async () => check(await proof({ key: holders.EdDSA!, header: { jwk: es.jwk } })), /not a key for EdDSA/],
    ['HS256 with a symmetric jwk', async () => {
      const secret = crypto.randomBytes(32);
      return check(await new SignJWT({ jti: 'h', htm: 'GET', htu: URI, iat: now(), ath: sha256(ACCESS_TOKEN) })
        .setProtectedHeader({ alg: 'HS256', typ: 'dpop+jwt', jwk: { kty: 'oct', k: secret.toString('base64url') } as never })
        .sign(secret));
    }, /algorithm must be one of/],
    ['HS256 keyed with the public jwk (algorithm confusion)', async () => {
      const secret = Buffer.from(JSON.stringify(es.jwk));
      return check(await new SignJWT({ jti: 'h', htm: 'GET', htu: URI, iat: now(), ath: sha256(ACCESS_TOKEN) })
        .setProtectedHeader({ alg: 'HS256', typ: 'dpop+jwt', jwk: es.jwk })
        .sign(secret));
    }, /algorithm must be one of/],
    ['alg none, no signature', async () =>
      check(`${b64({ alg: 'none', typ: 'dpop+jwt', jwk: es.jwk })}.${b64({ jti: 'n', htm: 'GET', htu: URI, iat: now(), ath: sha256(ACCESS_TOKEN) })}.`), /compact form/],
    ['alg none, a signature borrowed', async () => {
      const good = (await proof()).split('.');
      return check(`${b64({ alg: 'none', typ: 'dpop+jwt', jwk: es.jwk })}.${good[1]}.${good[2]}`);
    }, /algorithm must be one of/],
    ['payload swapped under a good signature', async () => {
      const good = (await proof()).split('.');
      return check(`${good[0]}.${b64({ jti: 'swap', htm: 'GET', htu: URI, iat: now(), ath: sha256(ACCESS_TOKEN) })}.${good[2]}`);
    }, /signature does not verify/],
    ['two DPoP headers (node joins them with ", ")', async () => check(`${await proof()}, ${await proof()}`), /compact form/],
    ['not a JWT', async () => check('hello'), /compact form/],
    ['too large', async () => check(await proof({ claims: { pad: 'x'.repeat(9000) } })), /too large/],
  ];

  test.each(cases)('%s', async (_name, make, reason) => {
    const verifier = createDpopVerifier({ now: clock });
    expect(await outcome(verifier, await make())).toMatch(reason);
  });

  test('the same proof is accepted once only (replay)', async () => {
    const verifier = createDpopVerifier({ now: clock });
    const p = await proof();
    expect(await outcome(verifier, check(p))).toBe('accepted');
    expect(await outcome(verifier, check(p))).toMatch(/used before/);
    nowMs += 30_000; // still within the window: still a replay
    expect(await outcome(verifier, check(p))).toMatch(/used before/);
    nowMs += 31_000; // beyond it: forgotten, but too old to be accepted anyway
    expect(await outcome(verifier, check(p))).toMatch(/older than/);
  });

  test('a jti is remembered per key: another key may use the same jti', async () => {
    const verifier = createDpopVerifier({ now: clock });
    expect(await outcome(verifier, check(await proof({ claims: { jti: 'same' } })))).toBe('accepted');
    expect(await outcome(verifier, check(await proof({ key: other, claims: { jti: 'same' } }), { jkt: other.jkt }))).toBe('accepted');
    expect(await outcome(verifier, check(await proof({ claims: { jti: 'same' } })))).toMatch(/used before/);
  });

  test('a refused proof is not remembered: the same jti in a good proof is accepted afterwards', async () => {
    const verifier = createDpopVerifier({ now: clock });
    expect(await outcome(verifier, check(await proof({ claims: { jti: 'retry', htm: 'PUT' } })))).toMatch(/"htm"/);
    expect(await outcome(verifier, check(await proof({ claims: { jti: 'retry' } })))).toBe('accepted');
  });
});

describe('the replay memory', () => {
  test('full of live entries: the next proof is refused (never a live entry evicted), and replays stay caught', async () => {
    const verifier = createDpopVerifier({ now: clock, replay: createReplayMemory(2) });
    const first = await proof();
    expect(await outcome(verifier, check(first))).toBe('accepted');
    expect(await outcome(verifier, check(await proof()))).toBe('accepted');
    await expect(verifier.verify(check(await proof()))).rejects.toBeInstanceOf(DpopReplayMemoryFull);
    expect(await outcome(verifier, check(first))).toMatch(/used before/);
  });

  test('expired entries make room', async () => {
    const memory = createReplayMemory(2);
    const verifier = createDpopVerifier({ now: clock, replay: memory });
    expect(await outcome(verifier, check(await proof()))).toBe('accepted');
    expect(await outcome(verifier, check(await proof()))).toBe('accepted');
    nowMs += (PROOF_MAX_AGE_SECONDS + 1) * 1000;
    expect(await outcome(verifier, check(await proof()))).toBe('accepted');
    expect(memory.size).toBe(1);
  });

  test('an entry lives until its iat leaves the window, not a fixed time after arrival', () => {
    const memory = createReplayMemory(10);
    expect(memory.remember('k a', 10_000, 0)).toBe('fresh');
    expect(memory.remember('k a', 10_000, 9_999)).toBe('replay');
    expect(memory.remember('k a', 20_000, 10_000)).toBe('fresh');
  });
});

describe('normalisation and the request URI', () => {
  test.each([
    ['HTTPS://EXAMPLE.test:443/a/b', 'https://example.test/a/b'],
    ['http://example.test:80/a', 'http://example.test/a'],
    ['https://example.test:8443/a?q=1#f', 'https://example.test:8443/a'],
    ['https://example.test', 'https://example.test/'],
    ['https://example.test/a/../b/%7e/%2f', 'https://example.test/b/~/%2F'],
  ])('%s → %s', (input, expected) => {
    expect(normalizeHtu(input)).toBe(expected);
  });

  test.each(['ftp://example.test/a', 'https://user:pw@example.test/a', '/relative', 'not a uri'])('%s is no htu', (input) => {
    expect(normalizeHtu(input)).toBeUndefined();
  });

  test('requestUri joins origin and path, drops the query, refuses a bad Host', () => {
    expect(requestUri({ protocol: 'https', host: 'mail.example.test:8443' }, '/v1/folders/sync?token=x')).toBe('https://mail.example.test:8443/v1/folders/sync');
    expect(requestUri({ protocol: 'https', host: undefined }, '/v1/session')).toBeUndefined();
    expect(requestUri({ protocol: 'https', host: 'evil.test/v1?' }, '/v1/session')).toBeUndefined();
    expect(requestUri({ protocol: 'https', host: 'ignored' }, 'https://abs.example.test/v1/session?q')).toBe('https://abs.example.test/v1/session');
  });

  test('the scheme helpers', () => {
    expect(dpopToken('DPoP abc.def.ghi')).toBe('abc.def.ghi');
    expect(dpopToken('dpop abc')).toBe('abc');
    expect(dpopToken('Bearer abc')).toBeUndefined();
    expect(usesDpopScheme({ authorization: ' DPoP abc' })).toBe(true);
    expect(usesDpopScheme({ authorization: 'Bearer abc' })).toBe(false);
    expect(usesDpopScheme({})).toBe(false);
  });

  test("expressOrigin reads a bare request as Express's req.protocol and req.host do (trust proxy honoured)", () => {
    const raw = (encrypted: boolean) =>
      ({
        headers: { host: 'internal:8443', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'mail.example.test' },
        socket: { encrypted, remoteAddress: '10.0.0.1' },
      }) as unknown as IncomingMessage;
    const trusting = express();
    trusting.set('trust proxy', true);
    const behind = expressOrigin(trusting)(raw(false));
    expect([behind.protocol, behind.host]).toEqual(['https', 'mail.example.test']);
    const direct = express();
    direct.set('trust proxy', false);
    const plain = expressOrigin(direct)(raw(false));
    expect([plain.protocol, plain.host]).toEqual(['http', 'internal:8443']);
    const tls = socketOrigin(raw(true));
    expect([tls.protocol, tls.host]).toEqual(['https', 'internal:8443']);
  });
});
