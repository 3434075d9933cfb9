/**
 * Conditional access end to end, over real HTTPS against the real server process and a real SQLite file: policies set
 * through the admin API, users signing in through the real sign-in pages (the authorization code flow, driven by
 * openid-client), device compliance set by a partner's signed requests, and the outcome read where an app meets it —
 * the sign-in's redirect, the token exchange, the refresh, a `/v1` call and an open event stream.
 *
 * One server for the file; every case has users of its own and policies naming only them, so no case's state leaks
 * into another's (the administrator is in no policy).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { httpsCall, type RunningServer } from '../helpers/server';
import { startWithIssuer } from '../helpers/ports';
import { tempDir } from '../helpers/testApp';
import { readEventStream } from '../helpers/eventStream';
import { FormClient, enrolmentSecret, formActions, hiddenField, pkceAuthorization, tlsFetch, totp } from '../helpers/oidcClient';
import { openSqliteStore } from '../../server/store/sqlite';
import { hashPassword } from '../../server/identity/passwords';
import { signPartnerRequest } from '../../server/access/compliancePartner';

// openid-client ships ES modules only: loaded with require() (jest compiles it), typed from its ES-module side.
type OpenIdClient = typeof import('openid-client', { with: { 'resolution-mode': 'import' } });
type Configuration = import('openid-client', { with: { 'resolution-mode': 'import' } }).Configuration;
type Tokens = Awaited<ReturnType<OpenIdClient['authorizationCodeGrant']>>;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const oidc = require('openid-client') as OpenIdClient;

const APP = 'pigeon-app';
const CLI = 'pigeon-cli';
const REDIRECT = 'http://127.0.0.1:7777/callback';
const PASSWORD = 'correct horse battery';
const PARTNER_KEY_ID = 'mdm-e2e-2026';

/** Every user a case needs, each used by that case only. */
const USERNAMES = [
  'admin',
  'mfa-enrolled',
  'mfa-late',
  'approved',
  'device-ok',
  'device-late',
  'apppol-ok',
  'apppol-no',
  'blocked',
  'block-late',
  'report-only',
  'streamer',
  'partner-target',
] as const;
type Username = (typeof USERNAMES)[number];

let server: RunningServer;
let issuer: string;
let fetchTls: ReturnType<typeof tlsFetch>;
let dataDir: string;
let tenantId: string;
/** A tenant the partner does not manage (with a user of its own, so only the partner's rights can refuse it). */
let otherTenantId: string;
const userIds = {} as Record<Username, string>;
const partnerKeys = crypto.generateKeyPairSync('ed25519');
let adminToken: string;

beforeAll(async () => {
  dataDir = tempDir('pigeon-ca-e2e-');
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  const now = Date.now();
  const hash = await hashPassword(PASSWORD); // one hash for all: hashing is the slow part of seeding
  const tenant = await store.tenants.create('Conditional access', now);
  tenantId = tenant.id;
  for (const username of USERNAMES) {
    const user = await store.users.create(
      { tenantId, username, email: `${username}@ca.example`, displayName: username, role: username === 'admin' ? 'admin' : 'user', passwordHash: hash },
      now,
    );
    await store.mailboxes.create(user.id, now);
    userIds[username] = user.id;
  }
  const other = await store.tenants.create('Elsewhere', now);
  otherTenantId = other.id;
  const stranger = await store.users.create({ tenantId: otherTenantId, username: 'stranger', email: 'stranger@else.example', displayName: 'stranger', role: 'user', passwordHash: hash }, now);
  await store.mailboxes.create(stranger.id, now);
  await store.close();

  // The compliance partner: its public key in a PEM file next to the partners file.
  fs.writeFileSync(path.join(dataDir, 'mdm-e2e.pem'), partnerKeys.publicKey.export({ format: 'pem', type: 'spki' }) as string);
  const partnersFile = path.join(dataDir, 'compliance-partners.json');
  fs.writeFileSync(partnersFile, JSON.stringify([{ id: 'mdm-e2e', tenantIds: [tenantId], keys: [{ keyId: PARTNER_KEY_ID, publicKeyFile: 'mdm-e2e.pem' }] }]));

  const started = await startWithIssuer({
    PIGEON_DATA_DIR: dataDir,
    PIGEON_COMPLIANCE_PARTNERS_FILE: partnersFile,
    PIGEON_LOG_LEVEL: process.env.CA_DEBUG ? 'debug' : 'info',
  });
  [server, issuer] = [started, started.issuer];
  fetchTls = tlsFetch(server.cert);

  // The administrator signs in through the same pages (the password grant is off) and gets the admin scope.
  const admin = await signIn('admin', { scope: 'openid offline_access mail admin', deviceId: 'device-admin-console-01' });
  adminToken = admin.tokens.access_token;
  expect(claimsOf(adminToken).scope).toContain('admin');
}, 90_000);

afterAll(async () => {
  await server?.stop();
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

const claimsOf = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;

const configs = new Map<string, Configuration>();
async function config(clientId = APP): Promise<Configuration> {
  let c = configs.get(clientId);
  if (!c) {
    c = await oidc.discovery(new URL(issuer), clientId, undefined, oidc.None(), { [oidc.customFetch]: fetchTls as never, algorithm: 'oidc' });
    c[oidc.customFetch] = fetchTls as never;
    configs.set(clientId, c);
  }
  return c;
}

// ---------------------------------------------------------------------------------------------------------------
// Signing in through the pages

/** TOTP keys the test holds (as the user's authenticator app would), and the last step each used. */
const authenticators = new Map<Username, { secret: string; lastStep: number }>();

/** A code of a step after the last one used (a code is good once), within the server's window. */
function nextCode(username: Username): string {
  const a = authenticators.get(username)!;
  const step = Math.max(Math.floor(Date.now() / 30_000), a.lastStep + 1);
  a.lastStep = step;
  return totp(a.secret, step * 30_000 + 1_000);
}

interface PageWalk {
  /** The redirect back to the app (a code, or an error). */
  callback: URL;
  /** What the pages asked for on the way. */
  asked: { totp: boolean; enrolment: boolean; enrolmentSkippable: boolean };
}

/**
 * Walks the sign-in pages as a browser without JavaScript does: password, then the TOTP step or enrolment (enrolled
 * as asked: `enrol: 'skip'` presses "Not now", which must be on offer), then consent. Answers the redirect back to
 * the app, whichever way the sign-in ended.
 */
async function walkPages(url: URL, username: Username, opts: { enrol: 'skip' | 'complete' }): Promise<PageWalk> {
  const browser = new FormClient(server.cert, issuer);
  const asked = { totp: false, enrolment: false, enrolmentSkippable: false };
  const back = (res: { status: number; location?: string }) => {
    if (res.status >= 300 && res.status < 400 && res.location && new URL(res.location, issuer).origin !== issuer) return new URL(res.location);
    return undefined;
  };
  let page = await browser.follow(await browser.get(url.toString()));
  expect(page.text).toContain('name="password"');
  page = await browser.follow(await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), username, password: PASSWORD }));
  if (back(page)) return { callback: back(page)!, asked };
  if (page.text.includes('Set up two-step verification')) {
    asked.enrolment = true;
    const actions = formActions(page.text);
    asked.enrolmentSkippable = actions.some((a) => a.endsWith('/enroll/skip'));
    const csrf = hiddenField(page.text, 'csrf');
    if (opts.enrol === 'skip') {
      if (!asked.enrolmentSkippable) throw new Error(`${username}: enrolment offered without "Not now"`);
      page = await browser.post(actions.find((a) => a.endsWith('/enroll/skip'))!, { csrf });
    } else {
      const secret = enrolmentSecret(page.text);
      authenticators.set(username, { secret, lastStep: -1 });
      page = await browser.post(actions[0]!, { csrf, code: nextCode(username) });
      expect(page.text).toContain('recovery codes');
      page = await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf') });
    }
  } else if (page.text.includes('Two-step verification')) {
    asked.totp = true;
    page = await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), code: nextCode(username) });
  }
  page = await browser.follow(page);
  if (back(page)) return { callback: back(page)!, asked };
  expect(page.text).toContain('Allow access');
  const landed = await browser.follow(await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf') }));
  const callback = back(landed);
  if (!callback) throw new Error(`${username}: expected the redirect to the app, got ${landed.status}: ${landed.text.slice(0, 800)}`);
  return { callback, asked };
}

interface SignInOptions {
  clientId?: string;
  deviceId?: string;
  scope?: string;
  enrol?: 'skip' | 'complete';
}

/** The whole authorization code flow; the token exchange must succeed. */
async function signIn(username: Username, opts: SignInOptions = {}): Promise<{ tokens: Tokens; walk: PageWalk; config: Configuration }> {
  const { walk, exchange, config: c } = await attemptSignIn(username, opts);
  if (walk.callback.searchParams.get('error')) throw new Error(`${username}: sign-in ended with ${walk.callback.searchParams.get('error')}: ${walk.callback.searchParams.get('error_description')}`);
  return { tokens: await exchange(), walk, config: c };
}

/** The flow up to the redirect back to the app; `exchange` redeems the code. */
async function attemptSignIn(username: Username, opts: SignInOptions = {}) {
  const c = await config(opts.clientId ?? APP);
  const { url, verifier, state } = await pkceAuthorization(oidc, c, {
    redirect_uri: REDIRECT,
    device_id: opts.deviceId ?? deviceOf(username),
    ...(opts.scope ? { scope: opts.scope } : {}),
  });
  const walk = await walkPages(url, username, { enrol: opts.enrol ?? 'skip' });
  const exchange = () => oidc.authorizationCodeGrant(c, walk.callback, { pkceCodeVerifier: verifier, expectedState: state });
  return { walk, exchange, config: c };
}

/** The redirect of a sign-in the pages refused: error and description. */
function refusalOf(walk: PageWalk) {
  return { error: walk.callback.searchParams.get('error'), description: walk.callback.searchParams.get('error_description') ?? '', code: walk.callback.searchParams.get('code') };
}

const deviceOf = (username: Username) => `device-${username.replace(/[^a-z]/g, '')}-0001`.padEnd(16, '0');

// ---------------------------------------------------------------------------------------------------------------
// The API

async function api(token: string, deviceId: string, method = 'GET', path = '/v1/session', body?: unknown) {
  const res = await fetchTls(`${issuer}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'x-device-id': deviceId, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, any>) : {}, headers: res.headers };
}

const register = (token: string, deviceId: string) => api(token, deviceId, 'POST', '/v1/devices', { friendlyName: 'e2e phone', deviceType: 'phone', deviceOS: 'iOS 17.4', clientVersion: '4.2.0' });

async function admin(method: string, path: string, body?: unknown) {
  const res = await fetchTls(`${issuer}${path}`, {
    method,
    headers: { authorization: `Bearer ${adminToken}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, any>) : {} };
}

/** A conditional-access policy for exactly these users (created through the admin API). */
async function addPolicy(id: string, users: Username[], outcome: unknown, extra: { state?: 'on' | 'reportOnly'; clientApps?: unknown } = {}) {
  const res = await admin('POST', '/admin/v1/conditional-access/policies', {
    id,
    name: id,
    state: extra.state ?? 'on',
    assignments: { users: { include: { users: users.map((u) => userIds[u]) } }, ...(extra.clientApps ? { clientApps: extra.clientApps } : {}) },
    outcome,
  });
  expect({ id, status: res.status, body: res.body }).toMatchObject({ id, status: 201 });
}

const grant = (...controls: string[]) => ({ grant: { controls, operator: 'and' } });

/** A refresh that conditional access refuses: openid-client rejects with the provider's invalid_grant. */
async function expectRefreshRefused(c: Configuration, refreshToken: string) {
  await expect(oidc.refreshTokenGrant(c, refreshToken)).rejects.toMatchObject({ error: 'invalid_grant' });
}

/** A `/v1` call refused by conditional access with these controls. */
async function expectBlocked(token: string, deviceId: string, controls: string[], policy: string, interactionRequired = false) {
  const res = await api(token, deviceId);
  expect({ status: res.status, code: res.body.code, controls: res.body.controls, interactionRequired: res.body.interactionRequired }).toEqual({
    status: 403,
    code: 'accessBlocked',
    controls,
    interactionRequired,
  });
  expect(res.body.policies).toContain(policy);
}

// ---------------------------------------------------------------------------------------------------------------
// The compliance partner

interface PartnerCall {
  deviceId: string;
  body: string;
  headers: Record<string, string>;
}

/** A partner request signed with the partner's key (`sign` overrides options; `send` what goes out instead). */
function partnerRequest(deviceId: string, statement: Record<string, unknown>, sign: Partial<Parameters<typeof signPartnerRequest>[0]> = {}): PartnerCall {
  const body = JSON.stringify(statement);
  const headers = { 'content-type': 'application/json' };
  const signed = signPartnerRequest({
    method: 'PUT',
    url: `${issuer}/compliance/v1/devices/${deviceId}`,
    headers,
    body,
    keyId: PARTNER_KEY_ID,
    privateKey: partnerKeys.privateKey,
    ...sign,
  });
  return { deviceId, body, headers: { ...headers, ...signed.headers } };
}

const sendPartner = (req: PartnerCall, body = req.body, headers = req.headers) => httpsCall(server, 'PUT', `/compliance/v1/devices/${req.deviceId}`, headers, body);

/** The partner says `state` of the user's device; must be accepted. */
async function setCompliance(username: Username, deviceId: string, state: 'compliant' | 'noncompliant', reasons: string[] = []) {
  const res = await sendPartner(partnerRequest(deviceId, { tenantId, user: `${username}@ca.example`, state, reasons }));
  expect({ status: res.status, state: res.body?.state }).toEqual({ status: 200, state });
  return res;
}

// ---------------------------------------------------------------------------------------------------------------

describe('policy × sign-in over real HTTPS', () => {
  test('require MFA: an enrolled user completes TOTP and gets tokens; refresh and /v1 work', async () => {
    // Enrols while nothing requires it (the optional enrolment), then the policy demands MFA.
    await signIn('mfa-enrolled', { enrol: 'complete' });
    await addPolicy('mfa-enrolled', ['mfa-enrolled'], grant('mfa'));
    const { tokens, walk, config: c } = await signIn('mfa-enrolled');
    expect(walk.asked.totp).toBe(true);
    expect(claimsOf(tokens.access_token).sub).toBe(userIds['mfa-enrolled']);
    const deviceId = deviceOf('mfa-enrolled');
    expect((await register(tokens.access_token, deviceId)).status).toBe(201);
    expect((await api(tokens.access_token, deviceId)).status).toBe(200);
    const refreshed = await oidc.refreshTokenGrant(c, tokens.refresh_token!);
    expect((await api(refreshed.access_token, deviceId, 'GET', '/v1/folders/sync')).status).toBe(200);
  });

  test('require MFA: a password-only sign-in is refused at refresh and on /v1 (interaction required); enrolment is then mandatory', async () => {
    const deviceId = deviceOf('mfa-late');
    // Signed in with a password only, before any policy.
    const { tokens, walk, config: c } = await signIn('mfa-late', { enrol: 'skip' });
    expect(walk.asked).toEqual({ totp: false, enrolment: true, enrolmentSkippable: true });
    expect((await register(tokens.access_token, deviceId)).status).toBe(201);
    expect((await api(tokens.access_token, deviceId)).status).toBe(200);

    await addPolicy('mfa-late', ['mfa-late'], grant('mfa'));
    await expectRefreshRefused(c, tokens.refresh_token!);
    await expectBlocked(tokens.access_token, deviceId, ['mfa'], 'mfa-late', true);

    // Signing in again: enrolment is offered without "Not now", and a forged skip is refused.
    const c2 = await config();
    const { url } = await pkceAuthorization(oidc, c2, { redirect_uri: REDIRECT, device_id: deviceId });
    const browser = new FormClient(server.cert, issuer);
    let page = await browser.follow(await browser.get(url.toString()));
    page = await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), username: 'mfa-late', password: PASSWORD });
    expect(page.text).toContain('Set up two-step verification');
    expect(page.text).toContain('requires a second step');
    expect(formActions(page.text)).toHaveLength(1);
    const skipAction = formActions(page.text)[0]!.replace(/\/enroll$/, '/enroll/skip');
    const skipped = await browser.post(skipAction, { csrf: hiddenField(page.text, 'csrf') });
    expect(skipped.status).toBe(400);
    expect(skipped.location).toBeUndefined();

    // Enrolling completes the sign-in: tokens, and /v1 works again.
    const again = await signIn('mfa-late', { enrol: 'complete' });
    expect(again.walk.asked.enrolment).toBe(true);
    expect(again.walk.asked.enrolmentSkippable).toBe(false);
    expect((await api(again.tokens.access_token, deviceId)).status).toBe(200);
    await oidc.refreshTokenGrant(again.config, again.tokens.refresh_token!);
  });

  test('require an approved client app: the approved app signs in; another app is refused; un-approving ends refresh and /v1', async () => {
    expect((await admin('PUT', '/admin/v1/approved-client-apps', { clientIds: [APP] })).status).toBe(200);
    expect((await admin('GET', '/admin/v1/approved-client-apps')).body).toEqual({ clientIds: [APP] });
    await addPolicy('approved-app', ['approved'], grant('approvedClientApp'));
    const deviceId = deviceOf('approved');

    const { tokens, config: c } = await signIn('approved', { clientId: APP });
    expect((await register(tokens.access_token, deviceId)).status).toBe(201);
    expect((await api(tokens.access_token, deviceId)).status).toBe(200);

    // The command-line client is not approved: the pages end the sign-in with access_denied, and no code.
    const cli = await attemptSignIn('approved', { clientId: CLI, deviceId: 'device-approved-cli-01' });
    const refused = refusalOf(cli.walk);
    expect(refused).toMatchObject({ error: 'access_denied', code: null });
    expect(refused.description).toMatch(/approved client app/);

    // The admin takes the app off the list: the next refresh and the next call are refused.
    expect((await admin('PUT', '/admin/v1/approved-client-apps', { clientIds: [] })).status).toBe(200);
    await expectRefreshRefused(c, tokens.refresh_token!);
    await expectBlocked(tokens.access_token, deviceId, ['approvedClientApp'], 'approved-app');
    expect((await admin('PUT', '/admin/v1/approved-client-apps', { clientIds: [APP, CLI] })).status).toBe(200);
    const { tokens: after } = await signIn('approved', { clientId: CLI, deviceId: 'device-approved-cli-01' });
    expect(claimsOf(after.access_token).client_id).toBe(CLI);
  });

  test('require a compliant device: compliant before the sign-in → tokens; noncompliant after → refresh and /v1 refused', async () => {
    await addPolicy('compliant-ok', ['device-ok'], grant('compliantDevice'));
    const deviceId = deviceOf('device-ok');
    await setCompliance('device-ok', deviceId, 'compliant');
    const { tokens, config: c } = await signIn('device-ok');
    expect((await register(tokens.access_token, deviceId)).status).toBe(201);
    expect((await api(tokens.access_token, deviceId)).status).toBe(200);
    const refreshed = await oidc.refreshTokenGrant(c, tokens.refresh_token!);

    await setCompliance('device-ok', deviceId, 'noncompliant', ['osOutdated']);
    await expectRefreshRefused(c, refreshed.refresh_token!);
    await expectBlocked(refreshed.access_token, deviceId, ['compliantDevice'], 'compliant-ok');
  });

  test('require a compliant device: a device the partner never reported is refused at sign-in; reported compliant, it signs in', async () => {
    await addPolicy('compliant-late', ['device-late'], grant('compliantDevice'));
    const deviceId = deviceOf('device-late');
    const first = await attemptSignIn('device-late');
    const refused = refusalOf(first.walk);
    expect(refused).toMatchObject({ error: 'access_denied', code: null });
    expect(refused.description).toMatch(/compliant/);

    await setCompliance('device-late', deviceId, 'compliant');
    const { tokens } = await signIn('device-late');
    expect((await register(tokens.access_token, deviceId)).status).toBe(201);
    expect((await api(tokens.access_token, deviceId)).status).toBe(200);
    // Another device of the same user is not covered by this one's compliance.
    const other = await attemptSignIn('device-late', { deviceId: 'device-late-other-01' });
    expect(refusalOf(other.walk).error).toBe('access_denied');

    // The token exchange judges again: a device that turns noncompliant between the pages and the exchange gets no tokens.
    const pending = await attemptSignIn('device-late');
    expect(pending.walk.callback.searchParams.get('code')).toBeTruthy();
    await setCompliance('device-late', deviceId, 'noncompliant', ['jailbroken']);
    await expect(pending.exchange()).rejects.toMatchObject({ error: 'invalid_grant' });
    const log = await admin('GET', `/admin/v1/sign-ins?userId=${userIds['device-late']}&decision=block&limit=1`);
    expect(log.body.signIns[0]).toMatchObject({ kind: 'interactive', deviceId, policyResults: expect.arrayContaining([expect.objectContaining({ policyId: 'compliant-late', result: 'failure', unmetControls: ['compliantDevice'] })]) });
  });

  test('require an app protection policy: a targeted app signs in, must check in before it syncs; an untargeted app is refused', async () => {
    expect((await admin('POST', '/admin/v1/groups', { id: 'protected-apps', name: 'protected-apps', members: [userIds['apppol-ok'], userIds['apppol-no']] })).status).toBe(201);
    const created = await admin('POST', '/admin/v1/app-protection-policies', {
      id: 'mail-app',
      name: 'Mail app',
      apps: [APP],
      groups: ['protected-apps'],
      pinRequired: true,
      blockCopyToUnmanagedApps: true,
      blockSaveAs: true,
      notificationContent: 'senderOnly',
      offlineGracePeriodMinutes: 720,
      offlineWipeAfterDays: 90,
    });
    expect(created.status).toBe(201);
    await addPolicy('app-protection', ['apppol-ok', 'apppol-no'], grant('appProtectionPolicy'));

    const deviceId = deviceOf('apppol-ok');
    const { tokens, config: c } = await signIn('apppol-ok', { clientId: APP });
    // The app registers, fetches its policy and checks in; only then does it sync.
    expect((await register(tokens.access_token, deviceId)).status).toBe(201);
    await expectBlocked(tokens.access_token, deviceId, ['appProtectionPolicy'], 'app-protection');
    const policy = await api(tokens.access_token, deviceId, 'GET', '/v1/policy');
    expect(policy.status).toBe(200);
    expect(policy.body.policy).toMatchObject({ id: 'mail-app', pinRequired: true });
    const checkIn = await api(tokens.access_token, deviceId, 'POST', '/v1/policy/check-in', { appVersion: '4.2.0', osVersion: '17.4', policyEtag: policy.body.etag, pinSet: true, pinFailures: 0, violations: [] });
    expect(checkIn.status).toBe(200);
    expect(checkIn.body).toMatchObject({ status: 'ok', policyChanged: false });
    expect((await api(tokens.access_token, deviceId)).status).toBe(200);
    expect((await api(tokens.access_token, deviceId, 'GET', '/v1/folders/sync')).status).toBe(200);
    const refreshed = await oidc.refreshTokenGrant(c, tokens.refresh_token!);
    expect((await api(refreshed.access_token, deviceId)).status).toBe(200);

    // The command-line client has no app protection policy: it cannot satisfy the control.
    const cli = await attemptSignIn('apppol-no', { clientId: CLI });
    const refused = refusalOf(cli.walk);
    expect(refused).toMatchObject({ error: 'access_denied', code: null });
    expect(refused.description).toMatch(/app protection/);
  });

  test('a block policy: a sign-in it covers is refused and logged; one it does not cover passes; adding it later ends refresh and /v1', async () => {
    // Blocks the command-line client only.
    await addPolicy('block-cli', ['blocked'], { block: true }, { clientApps: { include: [CLI] } });
    const refused = refusalOf((await attemptSignIn('blocked', { clientId: CLI })).walk);
    expect(refused).toMatchObject({ error: 'access_denied', code: null });
    expect(refused.description).toMatch(/blocks/);
    const { tokens } = await signIn('blocked', { clientId: APP });
    expect((await register(tokens.access_token, deviceOf('blocked'))).status).toBe(201);
    expect((await api(tokens.access_token, deviceOf('blocked'))).status).toBe(200);
    const log = await admin('GET', `/admin/v1/sign-ins?userId=${userIds.blocked}&decision=block`);
    expect(log.status).toBe(200);
    expect(log.body.signIns).toEqual([expect.objectContaining({ clientId: CLI, decision: 'block', policyResults: expect.arrayContaining([expect.objectContaining({ policyId: 'block-cli', result: 'failure' })]) })]);

    // Signed in first, blocked afterwards.
    const late = await signIn('block-late');
    const deviceId = deviceOf('block-late');
    expect((await register(late.tokens.access_token, deviceId)).status).toBe(201);
    await addPolicy('block-late', ['block-late'], { block: true });
    await expectRefreshRefused(late.config, late.tokens.refresh_token!);
    await expectBlocked(late.tokens.access_token, deviceId, ['block'], 'block-late');
  });
});

describe('report-only', () => {
  test('a report-only block never blocks; the sign-in log shows what it would have done', async () => {
    await addPolicy('report-only-block', ['report-only'], { block: true }, { state: 'reportOnly' });
    const { tokens, config: c } = await signIn('report-only');
    const deviceId = deviceOf('report-only');
    expect((await register(tokens.access_token, deviceId)).status).toBe(201);
    expect((await api(tokens.access_token, deviceId)).status).toBe(200);
    await oidc.refreshTokenGrant(c, tokens.refresh_token!);

    const log = await admin('GET', `/admin/v1/sign-ins?userId=${userIds['report-only']}`);
    expect(log.status).toBe(200);
    const entries = log.body.signIns as Array<{ decision: string; kind: string; policyResults: Array<{ policyId: string; result: string }> }>;
    expect(entries.length).toBeGreaterThanOrEqual(2); // the code exchange and the refresh
    for (const entry of entries) {
      expect(entry.decision).toBe('allow');
      expect(entry.policyResults).toContainEqual(expect.objectContaining({ policyId: 'report-only-block', state: 'reportOnly', result: 'reportOnlyFailure' }));
    }
    expect(entries.map((e) => e.kind)).toEqual(expect.arrayContaining(['interactive', 'refresh']));
  });
});

describe('continuous evaluation', () => {
  test('a device turned noncompliant loses its open event stream (accessEnded) within seconds, and its next call', async () => {
    await addPolicy('stream-compliant', ['streamer'], grant('compliantDevice'));
    const deviceId = deviceOf('streamer');
    await setCompliance('streamer', deviceId, 'compliant');
    const { tokens } = await signIn('streamer');
    const headers = { authorization: `Bearer ${tokens.access_token}`, 'x-device-id': deviceId };
    expect((await register(tokens.access_token, deviceId)).status).toBe(201);

    const stream = readEventStream(server, headers, ' (streamer)');
    try {
      expect(await stream.ready).toBe(200);
      await stream.until(() => stream.blocks[0], 5_000, 'the stream\'s first block');
      await setCompliance('streamer', deviceId, 'noncompliant', ['encryptionOff']);
      const answeredAt = Date.now();
      const ended = await stream.until(() => stream.blocks.find((b) => b.text.includes('event: accessEnded')), 10_000, 'accessEnded');
      const latency = ended.at - answeredAt;
      console.log(`continuous evaluation: accessEnded ${latency} ms after the compliance PUT's response`);
      expect(latency).toBeLessThan(5_000);
      const data = JSON.parse(/^data: (.*)$/m.exec(ended.text)![1]!) as Record<string, unknown>;
      expect(data).toMatchObject({ code: 'accessBlocked', controls: ['compliantDevice'], policies: ['stream-compliant'] });
      await stream.ended(5_000);
    } finally {
      stream.close();
    }
    await expectBlocked(tokens.access_token, deviceId, ['compliantDevice'], 'stream-compliant');
  });
});

describe('the compliance partner API', () => {
  const deviceId = 'device-partner-target-01';
  const statement = () => ({ tenantId, user: 'partner-target@ca.example', state: 'compliant', reasons: [] });
  const refusal = (res: { status: number; body: any }) => ({ status: res.status, code: res.body?.code, reason: res.body?.reason });

  test('a signed request is stored; the same request again is a replay', async () => {
    const req = partnerRequest(deviceId, statement());
    const first = await sendPartner(req);
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ deviceId, userId: userIds['partner-target'], state: 'compliant', partner: 'mdm-e2e' });
    expect(refusal(await sendPartner(req))).toEqual({ status: 401, code: 'unauthorized', reason: 'replayed' });
  });

  test('unsigned, badly signed, stale and digest-mismatched requests are refused with 401', async () => {
    const body = JSON.stringify(statement());
    expect(refusal(await httpsCall(server, 'PUT', `/compliance/v1/devices/${deviceId}`, { 'content-type': 'application/json' }, body))).toEqual({ status: 401, code: 'unauthorized', reason: 'unsigned' });

    // Signed by a key that is not the partner's, under the partner's key id.
    const impostor = crypto.generateKeyPairSync('ed25519');
    expect(refusal(await sendPartner(partnerRequest(deviceId, statement(), { privateKey: impostor.privateKey })))).toEqual({ status: 401, code: 'unauthorized', reason: 'bad_signature' });
    // The partner's signature, for another device (the target URI is covered).
    const elsewhere = partnerRequest('device-partner-other-01', statement());
    expect(refusal(await sendPartner({ ...elsewhere, deviceId }))).toEqual({ status: 401, code: 'unauthorized', reason: 'bad_signature' });

    const stale = partnerRequest(deviceId, statement(), { created: Math.floor(Date.now() / 1000) - 3600 });
    expect(refusal(await sendPartner(stale))).toEqual({ status: 401, code: 'unauthorized', reason: 'stale' });

    // Signed over one body, sent with another: the Content-Digest (signed) does not match what arrived.
    const signed = partnerRequest(deviceId, statement());
    const swapped = JSON.stringify({ ...statement(), state: 'noncompliant' });
    expect(refusal(await sendPartner(signed, swapped))).toEqual({ status: 401, code: 'unauthorized', reason: 'digest_mismatch' });
  });

  test('a tenant the partner does not manage is 403; bad fields are 400', async () => {
    const foreign = await sendPartner(partnerRequest(deviceId, { ...statement(), tenantId: otherTenantId, user: 'stranger@else.example' }));
    expect({ status: foreign.status, code: foreign.body?.code }).toEqual({ status: 403, code: 'forbidden' });

    for (const bad of [{ state: 'mostly' }, { reasons: 'osOutdated' }, { expiresAt: 'tomorrow' }, { tenantId: 7 }, { unexpected: true }]) {
      const res = await sendPartner(partnerRequest(deviceId, { ...statement(), ...bad }));
      expect({ bad, status: res.status, code: res.body?.code }).toEqual({ bad, status: 400, code: 'invalidRequest' });
    }
    // Signed, but not JSON at all.
    const garbage = '{"tenantId":';
    const signed = signPartnerRequest({ method: 'PUT', url: `${issuer}/compliance/v1/devices/${deviceId}`, headers: { 'content-type': 'application/json' }, body: garbage, keyId: PARTNER_KEY_ID, privateKey: partnerKeys.privateKey });
    const notJson = await httpsCall(server, 'PUT', `/compliance/v1/devices/${deviceId}`, { 'content-type': 'application/json', ...signed.headers }, garbage);
    expect({ status: notJson.status, code: notJson.body?.code }).toEqual({ status: 400, code: 'invalidRequest' });
  });

  test('the admin device inventory shows what the partner said', async () => {
    const list = await admin('GET', '/admin/v1/devices');
    expect(list.status).toBe(200);
    const device = (list.body.devices as Array<Record<string, any>>).find((d) => d.deviceId === deviceOf('device-ok'));
    expect(device).toBeDefined();
    expect(device!.compliance).toMatchObject({ state: 'noncompliant', reasons: ['osOutdated'], partner: 'mdm-e2e' });
  });
});

describe('the server (last)', () => {
  test('logged no errors along the way', () => {
    expect(server.logs.length).toBeGreaterThan(0);
    const errorsLogged = server.logs.filter((l) => typeof l.level === 'number' && l.level >= 50);
    expect(errorsLogged).toEqual([]);
  });
});
