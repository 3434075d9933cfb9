/**
 * Certificate sign-in end to end: the real server process with its second HTTPS listener (PIGEON_CERT_SIGNIN_PORT)
 * asking for client certificates made by tests/helpers/pki.ts, driven like a browser without JavaScript: the login
 * page links to the certificate page, which takes the certificate (carrying the interaction cookie to the other
 * port) and sends the browser back to the main listener, which continues as after a password (enrolment or TOTP,
 * consent); the code is exchanged by openid-client and the token works on the API. Then the refusals (revoked,
 * expired, unknown CA, another tenant's CA, disabled user, no certificate, the main listener), the same sign-in with
 * PIGEON_WORKERS=2 (the listener shared between workers, SIGHUP passed on to them), a CRL taken in by a reload on
 * SIGHUP, and the per-address budget of refused certificates.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { startServer, type RunningServer } from '../helpers/server';
import { withPickedPorts } from '../helpers/ports';
import { tempDir } from '../helpers/testApp';
import { disposeTestPki, testPki, type TestPki, type TestUser } from '../helpers/pki';
import { FormClient, enrolmentSecret, formActions, hiddenField, pkceAuthorization, tlsFetch, totp, type PageResponse } from '../helpers/oidcClient';
import { openSqliteStore } from '../../server/store/sqlite';
import { hashPassword } from '../../server/identity/passwords';

// openid-client ships ES modules only: loaded with require() (jest compiles it), typed from its ES-module side.
type OpenIdClient = typeof import('openid-client', { with: { 'resolution-mode': 'import' } });
type Configuration = import('openid-client', { with: { 'resolution-mode': 'import' } }).Configuration;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const oidc = require('openid-client') as OpenIdClient;

const CLIENT_ID = 'pigeon-app';
const REDIRECT = 'http://127.0.0.1:7777/callback';
const DEVICE_ID = 'device-certsignin-0001';
/** Refused certificates one client address may present per window (PIGEON_LOGIN_FAILURES_PER_USER). */
const BUDGET = 15;

/** A running server with certificate sign-in, and the users it was seeded with. */
interface Deployment {
  server: RunningServer;
  issuer: string;
  certPort: number;
  fetch: ReturnType<typeof tlsFetch>;
  users: Record<string, { id: string; tenantId: string }>;
}

let pki: TestPki;
let main: Deployment;

/**
 * Two tenants with known ids for the trust file (which names tenants by id): tenant A's users carry the addresses
 * tenant A's certificates name (bob, the UPN user, disabled); tenant B has a user of its own and no alice.
 */
async function seedTenants(dataDir: string, users: Deployment['users']): Promise<{ tenantA: string; tenantB: string }> {
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  const now = Date.now();
  const tenantA = await store.tenants.create('Tenant A', now);
  const tenantB = await store.tenants.create('Tenant B', now);
  const add = async (tenantId: string, username: string, disabled = false) => {
    const user = await store.users.create(
      { tenantId, username, email: username, displayName: username, role: 'user', passwordHash: await hashPassword('correct horse battery') },
      now,
    );
    await store.mailboxes.create(user.id, now);
    if (disabled) await store.users.setDisabled(user.id, true, now);
    users[username] = { id: user.id, tenantId };
  };
  await add(tenantA.id, pki.emailUser.username);
  await add(tenantA.id, pki.revokedUser.username);
  await add(tenantA.id, pki.expiredUser.username);
  await add(tenantA.id, pki.upnUser.username, true);
  await add(tenantB.id, 'someone@tenant-b.example');
  await store.close();
  return { tenantA: tenantA.id, tenantB: tenantB.id };
}

/** A server over a fresh store: both tenants' CAs and CRLs trusted, certificate sign-in on a port of its own. */
async function deploy(env: Record<string, string> = {}): Promise<Deployment> {
  const dataDir = tempDir('pigeon-cert-signin-');
  const users: Deployment['users'] = {};
  const { tenantA, tenantB } = await seedTenants(dataDir, users);
  const trustFile = path.join(dataDir, 'client-cert-trust.json');
  fs.writeFileSync(
    trustFile,
    JSON.stringify([
      { tenant: tenantA, caFile: pki.tenantA.certFile, crlFiles: [pki.tenantA.crlFile] },
      { tenant: tenantB, caFile: pki.tenantB.certFile, crlFiles: [pki.tenantB.crlFile] },
    ]),
  );
  return withPickedPorts(2, async (ports) => {
    const [port, certPort] = ports as [number, number];
    const issuer = `https://127.0.0.1:${port}`;
    const server = await startServer({
      PIGEON_DATA_DIR: dataDir,
      PIGEON_PORT: String(port),
      PIGEON_ISSUER: issuer,
      PIGEON_PASSWORD_GRANT: 'false',
      PIGEON_WORKERS: '1',
      PIGEON_CERT_SIGNIN_PORT: String(certPort),
      PIGEON_CLIENT_CERT_TRUST_FILE: trustFile,
      PIGEON_LOGIN_FAILURES_PER_USER: String(BUDGET),
      PIGEON_LOG_LEVEL: process.env.IDP_DEBUG ? 'debug' : 'info',
      ...env,
    });
    return { server, issuer, certPort, fetch: tlsFetch(server.cert), users };
  });
}

beforeAll(async () => {
  pki = testPki();
  main = await deploy();
}, 90_000);

afterAll(async () => {
  await main?.server.stop();
  disposeTestPki();
});

async function config(d: Deployment): Promise<Configuration> {
  const c = await oidc.discovery(new URL(d.issuer), CLIENT_ID, undefined, oidc.None(), { [oidc.customFetch]: d.fetch as never });
  c[oidc.customFetch] = d.fetch as never;
  return c;
}

/** A new browser at the login page of a new authorization: the page, the certificate link, the app's PKCE verifier. */
async function loginPage(d: Deployment, c?: Configuration) {
  c ??= await config(d);
  const { url, verifier, state } = await pkceAuthorization(oidc, c, { redirect_uri: REDIRECT, device_id: DEVICE_ID });
  const browser = new FormClient(d.server.cert, d.issuer);
  const page = await browser.follow(await browser.get(url.toString()));
  expect(page.text).toContain('name="password"');
  const link = /<a href="([^"]+)">Sign in with a certificate<\/a>/.exec(page.text)?.[1]?.replace(/&amp;/g, '&');
  if (!link) throw new Error(`no certificate link on the login page:\n${page.text}`);
  const uid = new URL(page.location ?? link).pathname.split('/')[2]!;
  return { c, browser, page, link, uid, verifier, state };
}

/**
 * A GET as the browser would make it on the certificate listener: the browser's cookies (not port-scoped), the
 * client certificate when given, a fresh TLS connection each time (no resumed session, no pooled socket).
 */
function certificateGet(browser: FormClient, url: string, user?: Pick<TestUser, 'cert' | 'key'>): Promise<PageResponse> {
  return browser.request('GET', url, undefined, {}, { agent: false, ...(user ? { cert: user.cert, key: user.key } : {}) });
}

/** From the page after the first factor: "Not now" to enrolment, or the TOTP code; then Allow. The app's callback. */
async function finishSignIn(browser: FormClient, after: PageResponse, code?: () => string): Promise<URL> {
  let page = after;
  if (page.text.includes('Set up two-step verification')) {
    page = await browser.post(formActions(page.text)[1]!, { csrf: hiddenField(page.text, 'csrf') }); // "Not now"
  } else if (page.text.includes('Two-step verification')) {
    page = await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), code: code!() });
  }
  page = await browser.follow(page);
  expect(page.text).toContain('Allow access');
  const landed = await browser.follow(await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf') }));
  if (landed.status !== 303) throw new Error(`expected the redirect to the app, got ${landed.status}: ${landed.text.slice(0, 1500)}`);
  return new URL(landed.location!);
}

const claimsOf = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;

async function api(d: Deployment, token: string, method = 'GET', path = '/v1/session', body?: unknown) {
  const res = await d.fetch(`${d.issuer}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'x-device-id': DEVICE_ID, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: await res.text() };
}

async function waitForLogs(d: Deployment, msg: string, after: number, count = 1, timeoutMs = 10_000): Promise<Array<Record<string, unknown>>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const found = d.server.logs.slice(after).filter((l) => l.msg === msg);
    if (found.length >= count) return found;
    if (Date.now() > until) throw new Error(`no "${msg}" in the server log`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const waitForLog = async (d: Deployment, msg: string, after: number) => (await waitForLogs(d, msg, after))[0]!;

/** A certificate sign-in of `user` from the login page to tokens (enrolment declined), and the API call it allows. */
async function signInWithCertificate(d: Deployment, user: TestUser) {
  const { c, browser, link, uid, verifier, state } = await loginPage(d);
  const taken = await certificateGet(browser, link, user);
  expect(taken.status).toBe(303);
  expect(taken.location).toBe(`${d.issuer}/interaction/${uid}`);
  const next = await browser.follow(taken);
  expect(next.text).toContain('Set up two-step verification'); // as after a password: the user has not enrolled
  expect(next.text).toContain(user.username);
  const callback = await finishSignIn(browser, next);
  expect(callback.origin + callback.pathname).toBe(REDIRECT);
  const tokens = await oidc.authorizationCodeGrant(c, callback, { pkceCodeVerifier: verifier, expectedState: state });
  const registered = await api(d, tokens.access_token, 'POST', '/v1/devices', { friendlyName: 'cert sign-in', deviceType: 'phone', clientType: 'native' });
  expect([200, 201]).toContain(registered.status);
  const session = await api(d, tokens.access_token);
  expect(session.status).toBe(200);
  expect(session.body).toContain(user.username);
  return { uid, tokens };
}

describe('signing in with a certificate', () => {
  test('the login page links to the certificate listener of the issuer’s host', async () => {
    const { link, uid } = await loginPage(main);
    expect(link).toBe(`https://127.0.0.1:${main.certPort}/interaction/${uid}/certificate`);
    expect(main.server.logs.find((l) => l.msg === 'certificate sign-in listening')).toMatchObject({ port: main.certPort });
  });

  test('certificate → back on the main listener → enrolment offered → consent → code → the token works on the API', async () => {
    const { uid, tokens } = await signInWithCertificate(main, pki.emailUser);
    const alice = main.users[pki.emailUser.username]!;
    expect(claimsOf(tokens.access_token)).toMatchObject({ iss: main.issuer, sub: alice.id, tid: alice.tenantId, did: DEVICE_ID, scope: 'mail' });
    expect(tokens.claims()?.sub).toBe(alice.id);
    expect(main.server.logs.find((l) => l.msg === 'certificate sign-in: first factor accepted' && l.uid === uid)).toMatchObject({
      userId: alice.id,
      tenantId: alice.tenantId,
      usernameFrom: 'email',
    });
  });

  test('a certificate is not a second factor: a user who enrolled is asked for the TOTP code after it', async () => {
    // Enrol during a certificate sign-in.
    let { browser, link } = await loginPage(main);
    let page = await browser.follow(await certificateGet(browser, link, pki.emailUser));
    const secret = enrolmentSecret(page.text);
    page = await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), code: totp(secret) });
    expect(page.text).toContain('recovery codes');
    page = await browser.follow(await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf') }));
    expect(page.text).toContain('Allow access');

    // The next certificate sign-in asks for the code (the one used at enrolment is spent: the next step's).
    const next = await loginPage(main);
    ({ browser, link } = next);
    page = await browser.follow(await certificateGet(browser, link, pki.emailUser));
    expect(page.text).toContain('Two-step verification');
    const wrong = await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), code: '000000' });
    expect(wrong.status).toBe(401);
    const callback = await finishSignIn(browser, wrong, () => totp(secret, Date.now() + 30_000));
    const tokens = await oidc.authorizationCodeGrant(next.c, callback, { pkceCodeVerifier: next.verifier, expectedState: next.state });
    expect(claimsOf(tokens.access_token).sub).toBe(main.users[pki.emailUser.username]!.id);
  });
});

describe('refusals', () => {
  /** Presents `user`'s certificate (or none) on a fresh interaction; checks the page links back to its password form. */
  async function refused(user: TestUser | undefined, status: number, text: RegExp) {
    const { browser, link, uid } = await loginPage(main);
    const before = main.server.logs.length;
    const res = await certificateGet(browser, link, user);
    expect({ status: res.status, location: res.location }).toEqual({ status, location: undefined });
    expect(res.text).toMatch(text);
    expect(res.text).toContain(`href="${main.issuer}/interaction/${uid}"`);
    expect(res.headers['content-security-policy']).toMatch(/default-src 'none'/);
    // Nothing was proven: the main listener still shows the password form.
    const back = await browser.get(`${main.issuer}/interaction/${uid}`);
    expect(back.text).toContain('name="password"');
    return waitForLog(main, 'certificate sign-in refused', before);
  }

  test('a revoked certificate (on its CA’s CRL)', async () => {
    expect(await refused(pki.revokedUser, 403, /has been revoked/)).toMatchObject({ reason: 'revoked', verifyError: 'CERT_REVOKED' });
  });

  test('an expired certificate', async () => {
    expect(await refused(pki.expiredUser, 403, /has expired \(on 2021-01-01\)/)).toMatchObject({ reason: 'expired' });
  });

  test('a certificate from a CA no tenant trusts', async () => {
    expect(await refused(pki.selfSigned, 403, /not issued by a certificate authority/)).toMatchObject({ reason: 'unknown-ca' });
  });

  test('tenant B’s certificate naming a tenant-A username', async () => {
    const logged = await refused(pki.tenantBUser, 403, /no account alice@tenant-a\.example in the organisation that issued this certificate/);
    expect(logged).toMatchObject({ reason: 'no-such-user', tenantId: main.users['someone@tenant-b.example']!.tenantId });
  });

  test('a valid certificate of a disabled user', async () => {
    expect(await refused(pki.upnUser, 403, /account is disabled/)).toMatchObject({ reason: 'disabled', userId: main.users[pki.upnUser.username]!.id, usernameFrom: 'upn' });
  });

  test('no certificate', async () => {
    expect(await refused(undefined, 401, /No certificate was presented/)).toMatchObject({ reason: 'none-presented' });
  });

  test('the certificate page on the main listener, which never asks for a certificate', async () => {
    const { browser, uid, link } = await loginPage(main);
    const onMain = `${main.issuer}/interaction/${uid}/certificate`;
    for (const res of [await browser.get(onMain), await certificateGetOnMain(browser, onMain)]) {
      expect(res.status).toBe(403);
      expect(res.location).toBeUndefined();
      expect(res.text).toContain(`href="${link}"`);
    }
    expect((await browser.get(`${main.issuer}/interaction/${uid}`)).text).toContain('name="password"');
  });

  /** The same with a client certificate at hand (the main listener does not ask for it, so it is never sent). */
  const certificateGetOnMain = (browser: FormClient, url: string) => certificateGet(browser, url, pki.emailUser);

  test('the certificate listener serves the certificate page and its stylesheet, nothing else', async () => {
    const base = `https://127.0.0.1:${main.certPort}`;
    const style = await main.fetch(`${base}/idp/static/style.css`, {});
    expect(style.status).toBe(200);
    for (const other of ['/v1/session', '/oauth2/token', '/.well-known/openid-configuration', '/interaction/x']) {
      expect((await main.fetch(`${base}${other}`, {})).status).toBe(404);
    }
  });
});

describe('start-up', () => {
  test('a trust file naming a tenant the store does not have stops the start (exit 2, the problem named)', async () => {
    const dataDir = tempDir('pigeon-cert-signin-bad-');
    const trustFile = path.join(dataDir, 'client-cert-trust.json');
    fs.writeFileSync(trustFile, JSON.stringify([{ tenant: 't_missing', caFile: pki.tenantA.certFile }]));
    await expect(startServer({ PIGEON_DATA_DIR: dataDir, PIGEON_CLIENT_CERT_TRUST_FILE: trustFile, PIGEON_CERT_SIGNIN_PORT: '0' })).rejects.toThrow(
      /exited with 2 before ready: pigeon: bad configuration: PIGEON_CLIENT_CERT_TRUST_FILE: .*no tenant "t_missing" in the store/,
    );
  });
});

describe('with workers (PIGEON_WORKERS=2)', () => {
  let workers: Deployment;
  beforeAll(async () => {
    workers = await deploy({ PIGEON_WORKERS: '2', PIGEON_SHUTDOWN_TIMEOUT: '10s' });
  }, 90_000);
  afterAll(async () => {
    await workers?.server.stop();
  });

  test('every worker serves the certificate listener; a sign-in through it works; SIGHUP reaches each worker', async () => {
    const listening = await waitForLogs(workers, 'certificate sign-in listening', 0, 2);
    expect(new Set(listening.map((l) => l.worker)).size).toBe(2);
    expect(listening.every((l) => l.port === workers.certPort)).toBe(true);
    // Fresh connections: the primary hands them to either worker; each sign-in crosses both listeners.
    for (let i = 0; i < 2; i++) {
      const { tokens } = await signInWithCertificate(workers, pki.emailUser);
      expect(claimsOf(tokens.access_token).sub).toBe(workers.users[pki.emailUser.username]!.id);
    }
    const before = workers.server.logs.length;
    workers.server.proc.kill('SIGHUP');
    const reloaded = await waitForLogs(workers, 'client certificate trust reloaded', before, 2);
    expect(new Set(reloaded.map((l) => l.worker)).size).toBe(2);
    const { browser, link } = await loginPage(workers);
    expect((await certificateGet(browser, link, pki.revokedUser)).status).toBe(403);
    expect(workers.server.proc.exitCode).toBeNull();
  });
});

describe('trust reload and budget', () => {
  test('SIGHUP takes a new CRL in: a certificate revoked since is refused', async () => {
    const dir = path.dirname(pki.tenantA.certFile);
    const ca = ['-config', 'ca.cnf', '-cert', 'ca.pem', '-keyfile', 'ca.key'];
    for (const args of [['ca', ...ca, '-revoke', pki.emailUser.certFile], ['ca', ...ca, '-gencrl', '-out', pki.tenantA.crlFile]]) {
      const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
      expect(r.status).toBe(0);
    }
    // Not yet reloaded: the listener still has the old CRL.
    let { browser, link } = await loginPage(main);
    expect((await certificateGet(browser, link, pki.emailUser)).status).toBe(303);

    const before = main.server.logs.length;
    main.server.proc.kill('SIGHUP');
    expect(await waitForLog(main, 'client certificate trust reloaded', before)).toMatchObject({ why: 'SIGHUP', crls: 2 });
    ({ browser, link } = await loginPage(main));
    const res = await certificateGet(browser, link, pki.emailUser);
    expect(res.status).toBe(403);
    expect(res.text).toContain('has been revoked');
    expect(main.server.proc.exitCode).toBeNull(); // SIGHUP reloads; it does not end the server
  });

  test('refused certificates count per client address: over the budget even a good one waits (429)', async () => {
    const { browser, link } = await loginPage(main);
    let res: PageResponse | undefined;
    for (let i = 0; i <= BUDGET; i++) {
      res = await certificateGet(browser, link);
      if (res.status === 429) break;
      expect(res.status).toBe(401);
    }
    expect(res!.status).toBe(429);
    expect(Number(res!.headers['retry-after'])).toBeGreaterThan(0);
    expect((await certificateGet(browser, link, pki.upnUser)).status).toBe(429);
  });
});
