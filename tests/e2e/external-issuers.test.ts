/**
 * External trusted OIDC issuers end to end: the real server process (server/main.ts) with PIGEON_EXTERNAL_ISSUERS_FILE
 * naming an independent IdP process with its own keys (tests/helpers/external-idp.js), and a second IdP process that
 * is not configured. The trusted IdP's tokens register a device and sync; everything a forger or a misconfigured
 * client could send is refused with 401 `invalid_token`, in the fast lane and through Express alike; the IdP's key
 * rotation is followed without a restart; users are found, created just in time, disabled and revoked in the store
 * the server runs on (a second connection to the same SQLite file, as the admin CLI would be).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';
import { startServer, type RunningServer } from '../helpers/server';
import { startExternalIdp, type ExternalIdp, type MintOptions } from '../helpers/externalIdp';
import { tempDir } from '../helpers/testApp';
import { openSqliteStore, type SqliteStore } from '../../server/store/sqlite';
import { hashPassword } from '../../server/identity/passwords';
import { createUserAdmin } from '../../server/admin/users';
import { systemClock } from '../../server/clock';
import type { Tenant } from '../../server/store/types';

const PASSWORD = 'a password for the built-in sign-in';
const DEVICE = 'external-device-000000000001';

let trusted: ExternalIdp;
let untrusted: ExternalIdp;
let server: RunningServer;
let dataDir: string;
/** A second connection to the server's own store (users are disabled and revoked through it, as the CLI does). */
let store: SqliteStore;
let acme: Tenant;
/** The issuers of the configuration file's second and third entries: the trusted IdP's keys under other names. */
let jitIssuer: string;
let freshIssuer: string;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
}

function call(method: string, route: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port: server.port, method, path: route, headers, ca: server.cert, servername: 'localhost', agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode!, headers: res.headers, body: text ? JSON.parse(text) : undefined });
        });
      },
    );
    req.once('error', reject);
    req.end(body);
  });
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}`, 'x-device-id': DEVICE });

/**
 * GET /v1/session twice: as the fast lane takes it, and with `If-None-Match` (which the lane declines, so Express
 * serves it). Both must give the same status, challenge and detail; answers the fast lane's.
 */
async function sessionOnBothLanes(headers: Record<string, string>): Promise<Answer> {
  const fast = await call('GET', '/v1/session', headers);
  const express = await call('GET', '/v1/session', { ...headers, 'if-none-match': '"x"' });
  const seen = (a: Answer) => ({ status: a.status, challenge: a.headers['www-authenticate'], retryAfter: a.headers['retry-after'], detail: a.body?.detail });
  expect(seen(express)).toEqual(seen(fast));
  return fast;
}

/** The trusted IdP's token for a user of Acme, with the mail scope the configuration asks for. */
function mint(email: string, options: MintOptions = {}, idp: ExternalIdp = trusted): Promise<string> {
  return idp.mint({ ...options, claims: { sub: `kc-${email}`, email, scope: 'openid mail.access', ...options.claims } });
}

async function addUser(username: string): Promise<void> {
  const user = await store.users.create(
    { tenantId: acme.id, username, email: username, displayName: username, role: 'user', passwordHash: await hashPassword(PASSWORD) },
    Date.now(),
  );
  await store.mailboxes.create(user.id, Date.now());
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

beforeAll(async () => {
  [trusted, untrusted] = await Promise.all([startExternalIdp(), startExternalIdp()]);
  dataDir = tempDir('pigeon-external-e2e-');
  store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  acme = await store.tenants.create('Acme', Date.now());
  for (const name of ['alice@acme.example', 'carol@acme.example', 'dave@acme.example', 'gina@acme.example']) await addUser(name);
  await store.users.setDisabled((await store.users.byUsername('dave@acme.example'))!.id, true, Date.now());

  jitIssuer = `${trusted.url}/jit`;
  freshIssuer = `${trusted.url}/fresh`;
  const file = path.join(dataDir, 'external-issuers.json');
  fs.writeFileSync(
    file,
    JSON.stringify({
      issuers: [
        // Keys found through discovery; users must exist; `mail.access` grants mail.
        { issuer: trusted.url, audience: 'pigeon', tenant: acme.id, mailScope: 'mail.access' },
        // The same keys under another issuer name, with users created on first sign-in.
        { issuer: jitIssuer, jwksUri: `${trusted.url}/jwks`, audience: 'pigeon', tenant: acme.id, justInTime: true },
        // Used only by the outage test: its key set is never fetched before.
        { issuer: freshIssuer, jwksUri: `${trusted.url}/jwks`, audience: 'pigeon', tenant: acme.id },
      ],
    }),
  );
  server = await startServer({ PIGEON_DATA_DIR: dataDir, PIGEON_EXTERNAL_ISSUERS_FILE: file }, 90_000);
}, 120_000);

afterAll(async () => {
  await server?.stop();
  await store?.close();
  await Promise.all([trusted?.stop(), untrusted?.stop()]);
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

test('the server says which external issuers it trusts', () => {
  const line = server.logs.find((l) => l.msg === 'external issuers trusted') as { issuers: Array<{ issuer: string; justInTime: boolean }> } | undefined;
  expect(line?.issuers.map((i) => [i.issuer, i.justInTime])).toEqual([
    [trusted.url, false],
    [jitIssuer, true],
    [freshIssuer, false],
  ]);
});

test("a trusted IdP's token registers a device and syncs, through Express and the fast lane", async () => {
  const token = await mint('Alice@Acme.example', { claims: { sid: 'kc-session-1' } });
  const registered = await call('POST', '/v1/devices', { ...bearer(token), 'content-type': 'application/json' }, '{"friendlyName":"external"}');
  expect(registered.status).toBe(201);
  expect(registered.body.deviceId).toBe(DEVICE);

  const folders = await call('GET', '/v1/folders/sync', bearer(token));
  expect(folders.status).toBe(200);
  expect(folders.body.created.map((f: { kind: string }) => f.kind)).toContain('inbox');

  const session = await sessionOnBothLanes(bearer(token));
  expect(session.status).toBe(200);
  expect(session.body.user).toMatchObject({ username: 'alice@acme.example', tenantId: acme.id, role: 'user' });
  expect(session.body.scopes).toEqual(['mail']);
  expect(session.body.device.deviceId).toBe(DEVICE);
  const exp = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).exp as number;
  expect(session.body.accessTokenExpiresAt).toBe(new Date(exp * 1000).toISOString());
});

test("Pigeon's own tokens still work beside the external ones", async () => {
  const form = new URLSearchParams({ grant_type: 'password', client_id: 'pigeon-app', username: 'alice@acme.example', password: PASSWORD }).toString();
  const granted = await call('POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, form);
  expect(granted.status).toBe(200);
  const session = await sessionOnBothLanes(bearer(granted.body.access_token));
  expect([session.status, session.body.user.username]).toEqual([200, 'alice@acme.example']);
});

describe('refused tokens: 401 invalid_token with a detail that says why', () => {
  const invalidToken = 'Bearer realm="pigeon", error="invalid_token"';

  test.each<[string, () => Promise<string>, RegExp]>([
    ["an untrusted IdP's token", () => mint('alice@acme.example', {}, untrusted), /issuer is not trusted/],
    ["an untrusted IdP's token naming the trusted issuer", () => mint('alice@acme.example', { issuer: trusted.url }, untrusted), /key its issuer does not publish/],
    ['a token for another audience', () => mint('alice@acme.example', { audience: 'another-app' }), /audience/],
    ['an unsigned token (alg none)', () => mint('alice@acme.example', { alg: 'none' }), /signing algorithm/],
    ['HS256 keyed with the IdP’s RSA public key (alg confusion)', () => mint('alice@acme.example', { alg: 'HS256' }), /signing algorithm/],
    ['an expired token', () => mint('alice@acme.example', { expiresIn: -60 }), /expired/],
    ['an ID token', () => mint('alice@acme.example', { claims: { typ: 'ID' } }), /not an access token/],
    ['a tampered token', async () => {
      const [h, p, s] = (await mint('alice@acme.example')).split('.');
      const claims = JSON.parse(Buffer.from(p!, 'base64url').toString());
      return [h, Buffer.from(JSON.stringify({ ...claims, email: 'carol@acme.example' })).toString('base64url'), s].join('.');
    }, /signature/],
  ])('%s', async (_name, make, detail) => {
    const answer = await sessionOnBothLanes(bearer(await make()));
    expect(answer.status).toBe(401);
    expect(answer.headers['www-authenticate']).toBe(invalidToken);
    expect(answer.body.code).toBe('unauthorized');
    expect(answer.body.detail).toMatch(detail);
  });

  test('a token without the configured mail scope is 403 insufficient_scope', async () => {
    const answer = await sessionOnBothLanes(bearer(await mint('alice@acme.example', { claims: { scope: 'openid profile' } })));
    expect(answer.status).toBe(403);
    expect(answer.headers['www-authenticate']).toBe('Bearer realm="pigeon", error="insufficient_scope"');
  });
});

describe('users', () => {
  test('without just-in-time creation, an unknown user is refused (403) and nothing is created', async () => {
    const answer = await sessionOnBothLanes(bearer(await mint('mallory@acme.example')));
    expect(answer.status).toBe(403);
    expect(answer.body.detail).toMatch(/no mailbox here/);
    expect(await store.users.byUsername('mallory@acme.example')).toBeUndefined();
  });

  test('with just-in-time creation (the second issuer), the user is created in its tenant and works', async () => {
    expect(await store.users.byUsername('frank@acme.example')).toBeUndefined();
    const token = await mint('frank@acme.example', { issuer: jitIssuer, claims: { name: 'Frank', scope: undefined } });
    const registered = await call('POST', '/v1/devices', { ...bearer(token), 'content-type': 'application/json' }, '{}');
    expect(registered.status).toBe(201);
    expect((await call('GET', '/v1/folders/sync', bearer(token))).status).toBe(200);
    const session = await sessionOnBothLanes(bearer(token));
    expect(session.body.user).toMatchObject({ username: 'frank@acme.example', displayName: 'Frank', tenantId: acme.id, role: 'user' });
    const user = await store.users.byUsername('frank@acme.example');
    expect(user).toMatchObject({ tenantId: acme.id, role: 'user', disabled: false });
  });

  test('a disabled user is refused, and disabling takes effect at once', async () => {
    const dave = await sessionOnBothLanes(bearer(await mint('dave@acme.example')));
    expect([dave.status, dave.body.detail]).toEqual([401, 'The access token has been revoked.']);

    const token = await mint('gina@acme.example');
    expect((await sessionOnBothLanes(bearer(token))).status).toBe(200);
    const gina = (await store.users.byUsername('gina@acme.example'))!;
    await store.users.setDisabled(gina.id, true, Date.now());
    expect((await sessionOnBothLanes(bearer(token))).status).toBe(401);
    await store.users.setDisabled(gina.id, false, Date.now());
  });

  test('"revoke sessions" ends the external tokens issued before it; later ones work', async () => {
    const before = await mint('carol@acme.example');
    expect((await sessionOnBothLanes(bearer(before))).status).toBe(200);
    await sleep(1100); // `iat` is in whole seconds: the revocation falls in a later second than the token
    expect(await createUserAdmin(store, systemClock).revokeSessionsOf('carol@acme.example')).toBe(0);
    const revoked = await sessionOnBothLanes(bearer(before));
    expect([revoked.status, revoked.body.detail]).toEqual([401, 'The access token has been revoked.']);
    await sleep(1100); // a token of the revocation's own second is refused too (the safe side)
    expect((await sessionOnBothLanes(bearer(await mint('carol@acme.example')))).status).toBe(200);
  });
});

test('a DPoP-bound external token (cnf.jkt) needs its proof, as a built-in one does', async () => {
  const { publicKey, privateKey } = await generateKeyPair('ES256');
  const jwk = await exportJWK(publicKey);
  const token = await mint('alice@acme.example', { claims: { cnf: { jkt: await calculateJwkThumbprint(jwk) } } });

  const asBearer = await sessionOnBothLanes(bearer(token));
  expect(asBearer.status).toBe(401);
  expect(asBearer.headers['www-authenticate']).toMatch(/^Bearer realm="pigeon", error="invalid_token", DPoP algs="/);

  const proof = () =>
    new SignJWT({
      htm: 'GET',
      htu: `https://127.0.0.1:${server.port}/v1/session`,
      ath: crypto.createHash('sha256').update(token).digest('base64url'),
      jti: crypto.randomUUID(),
      iat: Math.floor(Date.now() / 1000),
    })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
      .sign(privateKey);
  const headers = async () => ({ authorization: `DPoP ${token}`, dpop: await proof(), 'x-device-id': DEVICE });
  const fast = await call('GET', '/v1/session', await headers());
  const express = await call('GET', '/v1/session', { ...(await headers()), 'if-none-match': '"x"' });
  expect([fast.status, express.status]).toEqual([200, 200]);
  expect(fast.body.user.username).toBe('alice@acme.example');
  // Without a proof, the DPoP scheme is refused.
  const noProof = await call('GET', '/v1/session', { authorization: `DPoP ${token}`, 'x-device-id': DEVICE });
  expect(noProof.status).toBe(401);
  expect(noProof.headers['www-authenticate']).toMatch(/^DPoP error="invalid_dpop_proof"/);
});

test("the IdP's keys unreachable: 503 with Retry-After (not 401), and the same token works once they are back", async () => {
  const token = await mint('alice@acme.example', { issuer: freshIssuer });
  await trusted.settings({ outage: true });
  try {
    const answer = await sessionOnBothLanes(bearer(token));
    expect(answer.status).toBe(503);
    expect(Number(answer.headers['retry-after'])).toBeGreaterThan(0);
    expect(answer.body.code).toBe('unavailable');
  } finally {
    await trusted.settings({ outage: false });
  }
  expect((await sessionOnBothLanes(bearer(token))).status).toBe(200);
});

// Last: after it, the trusted IdP signs with a key only this test's server has fetched.
test('a key rotation at the IdP is followed without restarting Pigeon; the removed key is refused', async () => {
  const old = await mint('alice@acme.example');
  expect((await sessionOnBothLanes(bearer(old))).status).toBe(200);
  const { kid } = await trusted.rotate();
  const rotated = await mint('alice@acme.example');
  expect(JSON.parse(Buffer.from(rotated.split('.')[0]!, 'base64url').toString()).kid).toBe(kid);
  const fetches = (await trusted.stats()).jwksFetches;
  // An unknown key id makes the server fetch the keys again, but at most once per 30 s (jose's cooldown, which
  // spares the IdP a fetch per forged token): within that window since its last fetch, the new key is not known yet.
  let answer: Answer;
  const deadline = Date.now() + 45_000;
  for (;;) {
    answer = await call('GET', '/v1/session', bearer(rotated));
    if (answer.status !== 401 || Date.now() > deadline) break;
    expect(answer.body.detail).toMatch(/key its issuer does not publish/);
    await sleep(1000);
  }
  expect(answer.status).toBe(200);
  expect((await sessionOnBothLanes(bearer(rotated))).status).toBe(200);
  // However many tokens were refused meanwhile, the keys were fetched once (discovery's address is remembered).
  expect((await trusted.stats()).jwksFetches).toBe(fetches + 1);
  // The old key is gone from the JWKS the server now holds: its token is refused.
  const refused = await sessionOnBothLanes(bearer(old));
  expect([refused.status, refused.body.detail]).toEqual([401, 'The access token is signed with a key its issuer does not publish.']);
  expect(server.proc.exitCode).toBeNull(); // the same process all along
}, 60_000);

describe('start-up refuses a bad configuration, naming PIGEON_EXTERNAL_ISSUERS_FILE', () => {
  test('an invalid file, Pigeon’s own issuer, a tenant that does not exist', async () => {
    const dirs = [0, 1, 2].map(() => tempDir('pigeon-external-bad-'));
    const write = (dir: string, config: unknown) => {
      const file = path.join(dir, 'issuers.json');
      fs.writeFileSync(file, typeof config === 'string' ? config : JSON.stringify(config));
      return file;
    };
    const own = 'https://mail.acme.example';
    const files = [
      write(dirs[0]!, { issuers: [{ issuer: trusted.url, audience: 'pigeon', tenant: 't1', algorithms: ['HS256'] }] }),
      write(dirs[1]!, { issuers: [{ issuer: `${own}/`, audience: 'pigeon', tenant: 't1' }] }),
      write(dirs[2]!, { issuers: [{ issuer: trusted.url, audience: 'pigeon', tenant: 't_nowhere' }] }),
    ];
    try {
      const starts = await Promise.allSettled(
        // The last as a cluster's primary, which checks before it forks any worker.
        files.map((file, i) =>
          startServer({ PIGEON_DATA_DIR: dirs[i]!, PIGEON_ISSUER: own, PIGEON_EXTERNAL_ISSUERS_FILE: file, PIGEON_WORKERS: i === 2 ? '2' : '1' }, 90_000),
        ),
      );
      const why = starts.map((s) => (s.status === 'rejected' ? String((s.reason as Error).message) : 'started'));
      for (const s of starts) if (s.status === 'fulfilled') await s.value.stop();
      expect(why[0]).toMatch(/exited with 2 .*bad configuration: PIGEON_EXTERNAL_ISSUERS_FILE: .*HS256 is never accepted/s);
      expect(why[1]).toMatch(/exited with 2 .*bad configuration: PIGEON_EXTERNAL_ISSUERS_FILE: .*Pigeon's own issuer/s);
      expect(why[2]).toMatch(/exited with 2 .*bad configuration: PIGEON_EXTERNAL_ISSUERS_FILE: .*no tenant "t_nowhere"/s);
    } finally {
      for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
