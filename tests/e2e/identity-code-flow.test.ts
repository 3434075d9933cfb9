/**
 * The built-in identity provider end to end, over real HTTPS against the real server process and a real SQLite
 * file, driven by openid-client (a certified relying party nobody here wrote): discovery in both modes, the
 * authorization code flow with PKCE through the sign-in pages, refresh rotation and reuse detection, the device
 * flow, TOTP, revocation and introspection, and the refusals (code replay, PKCE downgrade, redirect_uri mismatch,
 * CSRF on the forms).
 */
import { spawnSync } from 'node:child_process';
import { ROOT, storeWithUser, type RunningServer } from '../helpers/server';
import { startWithIssuer } from '../helpers/ports';
import { tempDir } from '../helpers/testApp';
import { FormClient, enrolmentSecret, formActions, hiddenField, pkceAuthorization, tlsFetch, totp } from '../helpers/oidcClient';

// openid-client ships ES modules only: loaded with require() (jest compiles it), typed from its ES-module side.
type OpenIdClient = typeof import('openid-client', { with: { 'resolution-mode': 'import' } });
type Configuration = import('openid-client', { with: { 'resolution-mode': 'import' } }).Configuration;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const oidc = require('openid-client') as OpenIdClient;

const CLIENT_ID = 'pigeon-app';
const REDIRECT = 'http://127.0.0.1:7777/callback';
const OPERATOR_SECRET = 'operator-secret-operator-secret-operator-secret';
const DEVICE_ID = 'device-codeflow-0001';

let server: RunningServer;
let issuer: string;
let fetchTls: ReturnType<typeof tlsFetch>;

beforeAll(async () => {
  const dataDir = tempDir('pigeon-idp-');
  await storeWithUser(dataDir, 'alice', 'correct horse battery'); // enrols in two-step verification below
  await storeWithUser(dataDir, 'bob', 'correct horse battery');
  const started = await startWithIssuer({
    PIGEON_DATA_DIR: dataDir,
    PIGEON_OPERATOR_CLIENT_SECRET: OPERATOR_SECRET,
    PIGEON_LOG_LEVEL: process.env.IDP_DEBUG ? 'debug' : 'info',
  });
  [server, issuer] = [started, started.issuer];
  fetchTls = tlsFetch(server.cert);
}, 90_000);

afterAll(async () => {
  await server?.stop();
});

const discover = (algorithm: 'oidc' | 'oauth2', clientId = CLIENT_ID, auth = oidc.None()) =>
  oidc.discovery(new URL(issuer), clientId, undefined, auth, { [oidc.customFetch]: fetchTls as never, algorithm });

async function config() {
  const c = await discover('oidc');
  c[oidc.customFetch] = fetchTls as never;
  return c;
}

/** Starts an authorization: the URL, the verifier and the state. */
const authorization = (c: Configuration, extra: Record<string, string> = {}) =>
  pkceAuthorization(oidc, c, { redirect_uri: REDIRECT, device_id: DEVICE_ID, ...extra });

/** Walks the pages: password, then (optionally) TOTP or enrolment, then consent; answers the redirect to the app. */
async function signInPages(browser: FormClient, url: URL, opts: { username?: string; password?: string; code?: () => string } = {}) {
  let page = await browser.follow(await browser.get(url.toString()));
  if (page.text.includes('name="password"')) {
    page = await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), username: opts.username ?? 'bob', password: opts.password ?? 'correct horse battery' });
  }
  if (page.text.includes('Set up two-step verification')) {
    const actions = formActions(page.text);
    page = await browser.post(actions[1]!, { csrf: hiddenField(page.text, 'csrf') }); // "Not now"
  } else if (page.text.includes('Two-step verification')) {
    page = await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), code: opts.code!() });
  }
  page = await browser.follow(page);
  expect(page.text).toContain('Allow access');
  const consent = await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf') });
  const landed = await browser.follow(consent);
  if (landed.status !== 303) throw new Error(JSON.stringify(server.logs.filter((l) => l.msg === 'sign-in interaction')) + `expected the redirect to the app, got ${landed.status}: ${landed.text.slice(0, 1500)}`);
  return new URL(landed.location!);
}

const claimsOf = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
const headerOf = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[0]!, 'base64url').toString()) as Record<string, unknown>;

async function api(token: string, method = 'GET', path = '/v1/session', body?: unknown, scheme = 'Bearer', extraHeaders: Record<string, string> = {}) {
  const res = await fetchTls(`${issuer}${path}`, {
    method,
    headers: { authorization: `${scheme} ${token}`, 'x-device-id': DEVICE_ID, ...(body ? { 'content-type': 'application/json' } : {}), ...extraHeaders },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

describe('discovery', () => {
  test('openid-client reads the OpenID document and the RFC 8414 one; both advertise only what is true', async () => {
    const asOidc = (await discover('oidc')).serverMetadata();
    const asOauth = (await discover('oauth2')).serverMetadata();
    for (const m of [asOidc, asOauth]) {
      expect(m.issuer).toBe(issuer);
      expect(m.authorization_endpoint).toBe(`${issuer}/oauth2/authorize`);
      expect(m.token_endpoint).toBe(`${issuer}/oauth2/token`);
      expect(m.code_challenge_methods_supported).toEqual(['S256']);
      expect(m.response_types_supported).toEqual(['code']);
      expect(m.grant_types_supported).toEqual(expect.arrayContaining(['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code']));
      expect(m.grant_types_supported).not.toContain('password'); // off unless the development flag is on
      expect(m.dpop_signing_alg_values_supported).toEqual(expect.arrayContaining(['ES256', 'EdDSA']));
      expect(m.introspection_endpoint).toBe(`${issuer}/oauth2/introspect`);
      expect(m.revocation_endpoint).toBe(`${issuer}/oauth2/revoke`);
      expect(m.pigeon_password_grant).toBe('disabled');
    }
    expect(asOidc.id_token_signing_alg_values_supported).toEqual(['EdDSA']);
    const jwks = (await (await fetchTls(`${issuer}/.well-known/jwks.json`, {})).json()) as { keys: Array<Record<string, unknown>> };
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).not.toHaveProperty('d'); // the public half only
  });
});

describe('authorization code + PKCE', () => {
  test('sign in through the pages, exchange the code, use the token, refresh with rotation; reuse ends the sign-in', async () => {
    const c = await config();
    const { url, verifier, state } = await authorization(c);
    const browser = new FormClient(server.cert, issuer);
    const started = performance.now();
    const callback = await signInPages(browser, url);
    expect(callback.origin + callback.pathname).toBe(REDIRECT);
    const tokens = await oidc.authorizationCodeGrant(c, callback, { pkceCodeVerifier: verifier, expectedState: state });
    const codeFlowMs = performance.now() - started;
    expect(tokens.token_type.toLowerCase()).toBe('bearer');
    expect(tokens.refresh_token).toBeTruthy();
    expect(headerOf(tokens.access_token)).toMatchObject({ typ: 'at+jwt', alg: 'EdDSA' });
    const claims = claimsOf(tokens.access_token);
    expect(claims).toMatchObject({ iss: issuer, aud: 'pigeon-api', did: DEVICE_ID, scope: 'mail', client_id: CLIENT_ID });
    expect(typeof claims.sid).toBe('string');
    expect(tokens.claims()?.sub).toBe(claims.sub); // an ID token for the same user

    const registered = await api(tokens.access_token, 'POST', '/v1/devices', { friendlyName: 'code flow', deviceType: 'phone', clientType: 'native' });
    expect([200, 201]).toContain(registered.status);
    expect((await api(tokens.access_token)).status).toBe(200);

    const t0 = performance.now();
    const refreshed = await oidc.refreshTokenGrant(c, tokens.refresh_token!);
    const refreshMs = performance.now() - t0;
    expect(refreshed.refresh_token).not.toBe(tokens.refresh_token);
    expect(claimsOf(refreshed.access_token)).toMatchObject({ sid: claims.sid, did: DEVICE_ID });
    expect((await api(refreshed.access_token)).status).toBe(200);
    console.log(`identity timings: code flow through the pages ${codeFlowMs.toFixed(0)} ms, refresh ${refreshMs.toFixed(0)} ms`);

    // The rotated token comes back: the provider revokes the grant, and the sign-in ends with every token of it.
    await expect(oidc.refreshTokenGrant(c, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    await expect(oidc.refreshTokenGrant(c, refreshed.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    const after = await api(refreshed.access_token);
    expect(after.status).toBe(401);
    expect(after.headers.get('www-authenticate')).toMatch(/^Bearer .*error="invalid_token"/);
  });

  test('a code is good once: a replay is refused', async () => {
    const c = await config();
    const { url, verifier, state } = await authorization(c);
    const callback = await signInPages(new FormClient(server.cert, issuer), url);
    await oidc.authorizationCodeGrant(c, callback, { pkceCodeVerifier: verifier, expectedState: state });
    await expect(oidc.authorizationCodeGrant(c, callback, { pkceCodeVerifier: verifier, expectedState: state })).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  test('PKCE cannot be downgraded: plain, a missing challenge or a missing or wrong verifier are refused', async () => {
    const c = await config();
    const browser = new FormClient(server.cert, issuer);
    for (const params of [{ code_challenge_method: 'plain', code_challenge: 'a'.repeat(43) }, { code_challenge: '', code_challenge_method: '' }]) {
      const url = new URL(`${issuer}/oauth2/authorize`);
      url.search = new URLSearchParams({ client_id: CLIENT_ID, response_type: 'code', redirect_uri: REDIRECT, scope: 'openid mail', state: 's', ...params }).toString();
      for (const [k, v] of [...url.searchParams]) if (v === '') url.searchParams.delete(k);
      const res = await browser.get(url.toString());
      expect(res.status).toBe(303);
      const back = new URL(res.location!);
      expect(back.origin + back.pathname).toBe(REDIRECT);
      expect(back.searchParams.get('error')).toBe('invalid_request');
    }
    // A code bound to a challenge cannot be redeemed without its verifier, or with another one.
    const token = (params: Record<string, string>) =>
      fetchTls(`${issuer}/oauth2/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(params).toString() }).then(async (r) => ({ status: r.status, body: (await r.json()) as { error?: string } }));
    for (const verifierFor of [() => undefined, () => oidc.randomPKCECodeVerifier()]) {
      const { url } = await authorization(c);
      const callback = await signInPages(new FormClient(server.cert, issuer), url);
      const code = callback.searchParams.get('code')!;
      const verifier = verifierFor();
      const res = await token({ grant_type: 'authorization_code', client_id: CLIENT_ID, code, redirect_uri: REDIRECT, ...(verifier ? { code_verifier: verifier } : {}) });
      expect(res.status).toBe(400);
      expect(res.body.error).toBe('invalid_grant');
    }
  });

  test('an unregistered redirect_uri is refused on the provider\'s own page, never redirected to', async () => {
    const browser = new FormClient(server.cert, issuer);
    for (const redirect of ['https://evil.example/callback', 'http://127.0.0.1:7777/other', 'com.pigeon.app:/elsewhere']) {
      const url = new URL(`${issuer}/oauth2/authorize`);
      url.search = new URLSearchParams({ client_id: CLIENT_ID, response_type: 'code', redirect_uri: redirect, scope: 'openid mail', code_challenge: 'x'.repeat(43), code_challenge_method: 'S256' }).toString();
      const res = await browser.get(url.toString());
      expect(res.status).toBe(400);
      expect(res.location).toBeUndefined();
      expect(res.text).toContain('redirect_uri');
    }
    // A loopback redirect may use any port (RFC 8252 §7.3).
    const c = await config();
    const { url } = await authorization(c, { redirect_uri: 'http://127.0.0.1:40123/callback' });
    const res = await browser.get(url.toString());
    expect(res.status).toBe(303);
    expect(res.location).toMatch(/^\/interaction\//);
  });

  test('the sign-in forms refuse a post without the CSRF token, or from another site', async () => {
    const c = await config();
    const { url } = await authorization(c);
    const browser = new FormClient(server.cert, issuer);
    const page = await browser.follow(await browser.get(url.toString()));
    const action = formActions(page.text)[0]!;
    const csrf = hiddenField(page.text, 'csrf');
    const good = { username: 'bob', password: 'correct horse battery' };
    expect((await browser.post(action, good)).status).toBe(403);
    expect((await browser.post(action, { ...good, csrf: csrf.slice(1) + 'A' })).status).toBe(403);
    expect((await browser.post(action, { ...good, csrf }, { origin: 'https://evil.example' })).status).toBe(403);
    // The same form from a browser without the interaction's cookie is refused too.
    expect((await new FormClient(server.cert, issuer).post(action, { ...good, csrf })).status).toBe(400);
    const res = await browser.post(action, { ...good, csrf });
    expect(res.status).toBe(200);
    expect(res.text).toContain('two-step');
  });

  test('a wrong password re-renders the form with an error and 401; the page has a strict CSP', async () => {
    const c = await config();
    const { url } = await authorization(c);
    const browser = new FormClient(server.cert, issuer);
    const page = await browser.follow(await browser.get(url.toString()));
    expect(page.headers['content-security-policy']).toMatch(/default-src 'none'/);
    expect(page.headers['content-security-policy']).not.toMatch(/unsafe-inline/);
    expect(page.text).not.toMatch(/<script|\son[a-z]+=/i);
    const res = await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), username: 'bob', password: 'wrong' });
    expect(res.status).toBe(401);
    expect(res.text).toContain('role="alert"');
  });
});

describe('DPoP (RFC 9449): tokens bound to the app\'s key', () => {
  test('openid-client gets DPoP-bound tokens; the API takes them only with a fresh proof of that key', async () => {
    const c = await config();
    const dpop = oidc.getDPoPHandle(c, await oidc.randomDPoPKeyPair('ES256'));
    const { url, verifier, state } = await authorization(c);
    const callback = await signInPages(new FormClient(server.cert, issuer), url);
    const tokens = await oidc.authorizationCodeGrant(c, callback, { pkceCodeVerifier: verifier, expectedState: state }, undefined, { DPoP: dpop });
    expect(tokens.token_type.toLowerCase()).toBe('dpop');
    const jkt = (claimsOf(tokens.access_token).cnf as { jkt?: string } | undefined)?.jkt;
    expect(jkt).toMatch(/^[A-Za-z0-9_-]{43}$/);

    // With a proof (made by openid-client, with `ath`): accepted.
    const headers = new Headers({ 'x-device-id': DEVICE_ID, 'content-type': 'application/json' });
    const registered = await oidc.fetchProtectedResource(c, tokens.access_token, new URL(`${issuer}/v1/devices`), 'POST', JSON.stringify({ friendlyName: 'dpop' }), headers, { DPoP: dpop });
    expect([200, 201]).toContain(registered.status);
    const session = await oidc.fetchProtectedResource(c, tokens.access_token, new URL(`${issuer}/v1/session`), 'GET', undefined, new Headers({ 'x-device-id': DEVICE_ID }), { DPoP: dpop });
    expect(session.status).toBe(200);

    // The same token as a plain bearer token (a thief without the key): refused.
    const stolen = await api(tokens.access_token);
    expect(stolen.status).toBe(401);
    expect(stolen.headers.get('www-authenticate')).toMatch(/invalid_token/);
    // A proof of another key, or a proof replayed: refused with the DPoP challenge.
    const other = oidc.getDPoPHandle(c, await oidc.randomDPoPKeyPair('ES256'));
    // (openid-client throws on a 401 with a challenge; the answer is on the error.)
    const refused = (await oidc
      .fetchProtectedResource(c, tokens.access_token, new URL(`${issuer}/v1/session`), 'GET', undefined, new Headers({ 'x-device-id': DEVICE_ID }), { DPoP: other })
      .then(() => undefined, (err: { response?: Response }) => err.response))!;
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toMatch(/^DPoP .*error="invalid_dpop_proof"/);
    let proof = '';
    const capture = tlsFetch(server.cert);
    c[oidc.customFetch] = (async (u: string, o: { headers?: Record<string, string> | Headers }) => {
      proof = new Headers(o.headers).get('dpop') ?? proof;
      return capture(u, o as never);
    }) as never;
    expect((await oidc.fetchProtectedResource(c, tokens.access_token, new URL(`${issuer}/v1/session`), 'GET', undefined, new Headers({ 'x-device-id': DEVICE_ID }), { DPoP: dpop })).status).toBe(200);
    const replay = await api(tokens.access_token, 'GET', '/v1/session', undefined, 'DPoP', { dpop: proof });
    expect(replay.status).toBe(401);
    expect(replay.headers.get('www-authenticate')).toMatch(/^DPoP .*error="invalid_dpop_proof"/);
    // The refresh is bound too: without the key, the provider refuses it.
    await expect(oidc.refreshTokenGrant(await config(), tokens.refresh_token!)).rejects.toBeTruthy();
    const refreshed = await oidc.refreshTokenGrant(c, tokens.refresh_token!, undefined, { DPoP: dpop });
    expect((claimsOf(refreshed.access_token).cnf as { jkt: string }).jkt).toBe(jkt);
  });
});

describe('two-step verification', () => {
  test('enrol with a TOTP app, then every sign-in asks for a code; a code is good once; a recovery code works once', async () => {
    const c = await config();
    // Enrol: the page shows the key; the code is computed here, independently of the server.
    let { url } = await authorization(c);
    const browser = new FormClient(server.cert, issuer);
    let page = await browser.follow(await browser.get(url.toString()));
    page = await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), username: 'alice', password: 'correct horse battery' });
    const secret = enrolmentSecret(page.text);
    page = await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), code: totp(secret) });
    expect(page.text).toContain('recovery codes');
    const codes = [...page.text.matchAll(/<li><code>([a-z0-9-]+)<\/code><\/li>/g)].map((m) => m[1]!);
    expect(codes).toHaveLength(10);
    page = await browser.follow(await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf') }));
    expect(page.text).toContain('Allow access');

    // Next sign-in (a new browser): the code is asked for. The code just used at enrolment is refused (good once).
    ({ url } = await authorization(c));
    const second = new FormClient(server.cert, issuer);
    page = await second.follow(await second.get(url.toString()));
    page = await second.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), username: 'alice', password: 'correct horse battery' });
    expect(page.text).toContain('Two-step verification');
    const used = await second.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), code: totp(secret) });
    expect(used.status).toBe(401);
    const recovery = await second.post(formActions(used.text)[0]!, { csrf: hiddenField(used.text, 'csrf'), code: codes[0]!.toUpperCase() });
    expect(recovery.status).toBe(303);
    expect((await second.follow(recovery)).text).toContain('Allow access');

    // The same recovery code a second time is refused; a fresh TOTP code (the next step) is accepted.
    ({ url } = await authorization(c));
    const third = new FormClient(server.cert, issuer);
    page = await third.follow(await third.get(url.toString()));
    page = await third.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), username: 'alice', password: 'correct horse battery' });
    expect((await third.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), code: codes[0]! })).status).toBe(401);
    const next = await third.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), code: totp(secret, Date.now() + 30_000) });
    expect(next.status).toBe(303);
  });
});

/** From the login page of an interaction: bob's password, "not now" to enrolment, Allow; answers the page after. */
async function signInAndConsent(browser: FormClient, login: Awaited<ReturnType<FormClient['get']>>) {
  let page = await browser.post(formActions(login.text)[0]!, { csrf: hiddenField(login.text, 'csrf'), username: 'bob', password: 'correct horse battery' });
  if (page.text.includes('Set up two-step verification')) page = await browser.post(formActions(page.text)[1]!, { csrf: hiddenField(page.text, 'csrf') });
  page = await browser.follow(page);
  expect(page.text).toContain('Allow access');
  return browser.follow(await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf') }));
}

describe('device authorization grant (RFC 8628)', () => {
  test('a CLI gets a user code, the user signs in in a browser, the CLI polls and gets tokens', async () => {
    const c = await config();
    const started = await oidc.initiateDeviceAuthorization(c, { scope: 'openid offline_access mail', device_id: 'device-cli-00000001' });
    expect(started.user_code).toMatch(/^[A-Z]{4}-[A-Z]{4}$/);
    const browser = new FormClient(server.cert, issuer);
    let page = await browser.get(started.verification_uri);
    expect(page.status).toBe(200);
    page = await browser.follow(await browser.post(formActions(page.text)[0]!, { xsrf: hiddenField(page.text, 'xsrf'), user_code: started.user_code }));
    expect(page.text).toContain(started.user_code);
    page = await browser.follow(await browser.post(formActions(page.text)[0]!, { xsrf: hiddenField(page.text, 'xsrf'), user_code: started.user_code, confirm: 'yes' }));
    page = await signInAndConsent(browser, page);
    expect(page.text).toContain('Device signed in');
    const tokens = await oidc.pollDeviceAuthorizationGrant(c, started);
    expect(claimsOf(tokens.access_token)).toMatchObject({ did: 'device-cli-00000001', scope: 'mail' });
    expect(tokens.refresh_token).toBeTruthy();
    // The code is spent: redeeming it again is refused.
    const again = await fetchTls(`${issuer}/oauth2/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:device_code', client_id: CLIENT_ID, device_code: started.device_code }).toString(),
    });
    expect(again.status).toBe(400);
    expect(((await again.json()) as { error: string }).error).toBe('invalid_grant');
  });
});

describe('revocation and introspection', () => {
  test('operators introspect (RFC 7662); apps may not; RFC 7009 revocation of a refresh token ends the sign-in', async () => {
    const c = await config();
    const { url, verifier, state } = await authorization(c, { scope: 'offline_access mail' });
    const callback = await signInPages(new FormClient(server.cert, issuer), url);
    const tokens = await oidc.authorizationCodeGrant(c, callback, { pkceCodeVerifier: verifier, expectedState: state });
    const operator = await discover('oauth2', 'pigeon-operator', oidc.ClientSecretBasic(OPERATOR_SECRET));
    operator[oidc.customFetch] = fetchTls as never;
    const seen = await oidc.tokenIntrospection(operator, tokens.refresh_token!);
    expect(seen).toMatchObject({ active: true, client_id: CLIENT_ID, sub: claimsOf(tokens.access_token).sub });
    expect((await oidc.tokenIntrospection(operator, 'not-a-token')).active).toBe(false);
    // The app itself learns nothing from introspection.
    expect((await oidc.tokenIntrospection(c, tokens.refresh_token!)).active).toBe(false);
    // A wrong operator secret is refused outright.
    const impostor = await discover('oauth2', 'pigeon-operator', oidc.ClientSecretBasic('x'.repeat(40)));
    impostor[oidc.customFetch] = fetchTls as never;
    await expect(oidc.tokenIntrospection(impostor, tokens.refresh_token!)).rejects.toMatchObject({ status: 401 });

    expect((await api(tokens.access_token)).status).not.toBe(401);
    await oidc.tokenRevocation(c, tokens.refresh_token!);
    await expect(oidc.refreshTokenGrant(c, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    expect((await api(tokens.access_token)).status).toBe(401); // the sign-in ended, and its access tokens with it
    expect((await oidc.tokenIntrospection(operator, tokens.refresh_token!)).active).toBe(false);
  });
});

describe('a password change ends every sign-in (the last test: it changes bob\'s password)', () => {
  test('set-password through the admin tool: the refresh token and the access token stop working at once', async () => {
    const c = await config();
    const { url, verifier, state } = await authorization(c);
    const tokens = await oidc.authorizationCodeGrant(c, await signInPages(new FormClient(server.cert, issuer), url), { pkceCodeVerifier: verifier, expectedState: state });
    expect((await api(tokens.access_token)).status).not.toBe(401);
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'server/cli/admin.ts', 'set-password', '--username', 'bob', '--password', 'a brand new passphrase'], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, PIGEON_DATA_DIR: server.dataDir },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(run.status).toBe(0);
    expect((await api(tokens.access_token)).status).toBe(401);
    await expect(oidc.refreshTokenGrant(c, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    // The new password signs in again.
    const again = await authorization(c);
    const callback = await signInPages(new FormClient(server.cert, issuer), again.url, { password: 'a brand new passphrase' });
    expect(callback.searchParams.get('code')).toBeTruthy();
  });
});
