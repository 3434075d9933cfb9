/**
 * schema/openapi.yaml is the API's contract: (a) it is a well-formed OpenAPI 3.1 document whose error table agrees
 * with server/errors.ts, (b) every response the routes give — happy paths and the main errors — matches it, and so
 * does every answer of the built-in identity provider's endpoints (discovery, keys, the device and code flows,
 * refresh, revocation, introspection, DPoP), (c) it lists exactly the operations the app's route table answers (a
 * new route without documentation fails here) plus the identity provider's, marked `x-pigeon-served-by`, and
 * (d) GET /openapi.yaml serves it byte for byte.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import request from 'supertest';
import YAML from 'yaml';
import type { Express } from 'express';
import { SignJWT, calculateJwkThumbprint, decodeProtectedHeader, exportJWK, generateKeyPair, importJWK, jwtVerify, type JWK } from 'jose';
import { buildTestApp, signIn, passwordGrant, CLIENT_ID, type TestContext } from '../helpers/testApp';
import type { FolderKind, NewItem } from '../../server/store/types';
import { StoreBusy, StoreFull } from '../../server/store/errors';
import {
  HTTP_METHODS,
  SPEC_FILE,
  expectToMatchSpec,
  loadSpec,
  pointer,
  resolvePointer,
  specOperations,
  validateAt,
} from '../helpers/openapi';

const ALICE = { username: 'alice', password: 'alice-password-1' };
const ROOT = { username: 'root', password: 'root-password-1' };
const DEVICE = 'device-0123456789abcdef';
/** The confidential client `pigeon-operator` (introspection). */
const OPERATOR_SECRET = 'operator-secret-of-the-contract-test-0123';

let ctx: TestContext;

beforeAll(async () => {
  ctx = await buildTestApp({ operatorClientSecret: OPERATOR_SECRET });
  await ctx.users.addUser({ ...ALICE, role: 'user' });
  await ctx.users.addUser({ ...ROOT, role: 'admin' });
});
afterAll(() => ctx.close());

const api = () => request(ctx.app);
const bearer = (token: string) => `Bearer ${token}`;
const form = (url: string, body: Record<string, string>) => api().post(url).type('form').send(body);
/**
 * Alice signed in on a registered device, as an app is after its first start (protocol §3: a device-bound token,
 * `X-Device-Id`, and `POST /v1/devices`: 201 the first time, 200 after).
 */
async function onDevice(): Promise<Record<string, string>> {
  const { access_token } = await signIn(ctx, ALICE.username, ALICE.password, { device_id: DEVICE });
  const headers = { Authorization: bearer(access_token), 'X-Device-Id': DEVICE };
  const res = await api().post('/v1/devices').set(headers).send({ friendlyName: 'contract test' });
  expect([200, 201]).toContain(res.status);
  expectToMatchSpec(res, 'post', '/v1/devices');
  return headers;
}
/** An administrator's token (no device: the admin API has no device gate). */
async function asAdmin(): Promise<Record<string, string>> {
  const { access_token } = await signIn(ctx, ROOT.username, ROOT.password);
  return { Authorization: bearer(access_token) };
}
/** Sends the bytes as they are (superagent would otherwise serialize a Buffer as a form). */
const rawForm = (url: string, bytes: Buffer) =>
  api().post(url).type('form').serialize((b: unknown) => b as string).send(bytes as unknown as string);

/** The members a component schema names (its `properties`, through `allOf` and `$ref`). */
function schemaMembers(schema: unknown): string[] {
  const s = schema as { $ref?: string; properties?: Record<string, unknown>; allOf?: unknown[] };
  if (typeof s.$ref === 'string') return schemaMembers(resolvePointer(loadSpec(), decodeURIComponent(s.$ref.slice(1))));
  return [...Object.keys(s.properties ?? {}), ...(s.allOf ?? []).flatMap(schemaMembers)];
}
/**
 * The schemas stay open (clients ignore unknown members, so members can be added), which means validation alone
 * would not notice a member the server sends but the document never mentions. This does.
 */
function expectDocumentedMembers(body: object, ...schemas: string[]): void {
  const known = new Set(schemas.flatMap((name) => schemaMembers(loadSpec().components.schemas[name])));
  expect({ schemas, undocumented: Object.keys(body).filter((k) => !known.has(k)) }).toEqual({ schemas, undocumented: [] });
}

// ---------------------------------------------------------------------------------------------------------------
// (a) the document itself
// ---------------------------------------------------------------------------------------------------------------

/** Every `$ref` in the document with the pointer of the object that holds it. */
function allRefs(node: unknown, at = ''): Array<{ at: string; ref: string }> {
  if (Array.isArray(node)) return node.flatMap((v, i) => allRefs(v, `${at}/${i}`));
  if (node === null || typeof node !== 'object') return [];
  const out: Array<{ at: string; ref: string }> = [];
  for (const [k, v] of Object.entries(node)) {
    if (k === '$ref' && typeof v === 'string') out.push({ at, ref: v });
    else out.push(...allRefs(v, `${at}${pointer(k)}`));
  }
  return out;
}

/** Follows `$ref`s of a non-schema object. */
function derefObject(doc: unknown, node: unknown): Record<string, unknown> {
  let n = node as Record<string, unknown>;
  while (n && typeof n.$ref === 'string') n = resolvePointer(doc, decodeURIComponent(n.$ref.slice(1)));
  return n;
}

/** The ErrorCode union of server/errors.ts, read from the source (a type has no runtime value). */
function serverErrorCodes(): string[] {
  const src = fs.readFileSync(path.join(SERVER_DIR, 'errors.ts'), 'utf8');
  const union = /export type ErrorCode =([^;]*);/.exec(src)?.[1];
  if (!union) throw new Error('ErrorCode union not found in server/errors.ts');
  return [...union.matchAll(/'([A-Za-z]+)'/g)].map((m) => m[1]!);
}

const PROBLEM = pointer('components', 'schemas', 'Problem');
const SERVER_DIR = path.resolve(__dirname, '../../server');
const problemOf = (code: string, status: number) => ({
  type: `urn:pigeon:problem:${code}`,
  title: 'T',
  status,
  detail: 'D',
  code,
  requestId: 'req-1',
  reason: 'tokenExpired',
  wipe: { scope: 'account' },
  region: 'eu',
  baseUrl: 'https://eu.mail.example',
});

describe('(a) the OpenAPI document', () => {
  test('parses cleanly as OpenAPI 3.1.0', () => {
    const parsed = YAML.parseDocument(fs.readFileSync(SPEC_FILE, 'utf8'), { uniqueKeys: true });
    expect(parsed.errors).toEqual([]);
    expect(parsed.warnings).toEqual([]);
    const doc = loadSpec();
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.info.title).toBe('Pigeon native sync API');
    expect(typeof doc.info.version).toBe('string');
    expect(doc.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer', bearerFormat: 'JWT' });
  });

  test('every $ref is local and resolves', () => {
    const doc = loadSpec();
    const refs = allRefs(doc);
    expect(refs.length).toBeGreaterThan(50);
    const broken = refs.filter(({ ref }) => !ref.startsWith('#/') || resolvePointer(doc, decodeURIComponent(ref.slice(1))) === undefined);
    expect(broken).toEqual([]);
  });

  test('every schema in components compiles under JSON Schema 2020-12', () => {
    const doc = loadSpec();
    for (const name of Object.keys(doc.components.schemas)) {
      expect(() => validateAt(pointer('components', 'schemas', name), {})).not.toThrow();
    }
  });

  test('operations have unique ids, and every response documents X-Request-Id as required', () => {
    const doc = loadSpec();
    const ids = specOperations().map(({ method, path: p }) => doc.paths[p][method].operationId);
    expect(ids.every((id) => typeof id === 'string' && id.length > 0)).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    const missing: string[] = [];
    const responses = [
      ...specOperations().flatMap(({ method, path: p }) =>
        Object.entries(doc.paths[p][method].responses).map(([status, r]) => [`${method} ${p} ${status}`, r] as const),
      ),
      ...Object.entries(doc.components.responses).map(([name, r]) => [`components ${name}`, r] as const),
    ];
    for (const [where, r] of responses) {
      const response = derefObject(doc, r);
      expect(typeof response.description).toBe('string');
      const header = derefObject(doc, (response.headers as Record<string, unknown> | undefined)?.['X-Request-Id']);
      if (!header || header.required !== true) missing.push(where);
    }
    expect(missing).toEqual([]);
  });

  test('the Problem code enum is exactly the ErrorCode list of server/errors.ts', () => {
    const doc = loadSpec();
    expect([...doc.components.schemas.ErrorCode.enum].sort()).toEqual(serverErrorCodes().sort());
  });

  test('the Problem schema ties every code to exactly one status', () => {
    for (const code of serverErrorCodes()) {
      const statuses: number[] = [];
      for (let status = 400; status <= 599; status++) {
        if (validateAt(PROBLEM, problemOf(code, status)).length === 0) statuses.push(status);
      }
      expect({ code, statuses: statuses.length }).toEqual({ code, statuses: 1 });
    }
    expect(validateAt(PROBLEM, { ...problemOf('resyncRequired', 410), reason: undefined })).not.toEqual([]);
    const { wipe: _wipe, ...noWipe } = problemOf('wipeRequested', 403);
    expect(validateAt(PROBLEM, noWipe)).not.toEqual([]);
    const { baseUrl: _baseUrl, ...noBaseUrl } = problemOf('wrongRegion', 421);
    expect(validateAt(PROBLEM, noBaseUrl)).not.toEqual([]);
  });

  test('every `new ApiError(status, code, ...)` in server/ uses the status the document gives its code', () => {
    const files = (fs.readdirSync(SERVER_DIR, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts'));
    const uses: Array<{ at: string; code: string; status: number }> = [];
    for (const f of files) {
      const src = fs.readFileSync(path.join(SERVER_DIR, f), 'utf8');
      for (const m of src.matchAll(/new ApiError\(\s*(\d{3})\s*,\s*'([A-Za-z]+)'/g)) {
        uses.push({ at: f, status: Number(m[1]), code: m[2]! });
      }
    }
    expect(uses.length).toBeGreaterThanOrEqual(10);
    const wrong = uses.filter(({ code, status }) => validateAt(PROBLEM, problemOf(code, status)).length > 0);
    expect(wrong).toEqual([]);
  });

  test('expectToMatchSpec rejects what the document does not allow', async () => {
    const good = await api().get('/healthz');
    expect(() => expectToMatchSpec(good, 'get', '/healthz')).not.toThrow();
    const fake = (over: Record<string, unknown>) => ({ ...good, headers: { ...good.headers }, ...over }) as unknown as request.Response;
    expect(() => expectToMatchSpec(fake({ text: '{"status":"nope"}', body: { status: 'nope' } }), 'get', '/healthz')).toThrow(/const/);
    expect(() => expectToMatchSpec(fake({ status: 201 }), 'get', '/healthz')).toThrow(/status 201 is not documented/);
    expect(() => expectToMatchSpec(fake({ headers: { 'content-type': 'text/html' } }), 'get', '/healthz')).toThrow(/media type text\/html/);
    expect(() => expectToMatchSpec(fake({ headers: { 'content-type': 'application/json' } }), 'get', '/healthz')).toThrow(/X-Request-Id is missing/);
    expect(() => expectToMatchSpec(good, 'post', '/healthz')).toThrow(/only 405/);
    expect(() => expectToMatchSpec(good, 'get', '/undocumented')).toThrow(/not a documented path/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// (b) real responses
// ---------------------------------------------------------------------------------------------------------------

describe('(b) POST /oauth2/token', () => {
  const T = '/oauth2/token';
  const check = (res: request.Response) => expectToMatchSpec(res, 'post', T);

  test('password grant: 200 with a token response', async () => {
    const res = await passwordGrant(ctx, ALICE.username, ALICE.password);
    expect(res.status).toBe(200);
    check(res);
  });

  test('password grant bound to a device, with the admin scope: 200', async () => {
    const res = await passwordGrant(ctx, ROOT.username, ROOT.password, { device_id: DEVICE, scope: 'mail admin' });
    expect(res.status).toBe(200);
    expect(res.body.scope).toBe('mail admin');
    check(res);
  });

  test('refresh grant, its retry within the grace, and reuse afterwards', async () => {
    const first = await signIn(ctx, ALICE.username, ALICE.password);
    const refresh = () => form(T, { grant_type: 'refresh_token', client_id: CLIENT_ID, refresh_token: first.refresh_token });
    const r1 = await refresh();
    expect(r1.status).toBe(200);
    check(r1);
    const retry = await refresh();
    expect(retry.status).toBe(200);
    expect(retry.body.refresh_token).toBe(r1.body.refresh_token);
    check(retry);
    ctx.clock.advance(60_000);
    const reuse = await refresh();
    expect(reuse.status).toBe(400);
    expect(reuse.body.error).toBe('invalid_grant');
    check(reuse);
  });

  test.each([
    ['wrong password', 'invalid_grant', { grant_type: 'password', client_id: CLIENT_ID, username: 'alice', password: 'wrong' }],
    ['no grant_type', 'invalid_request', { client_id: CLIENT_ID }],
    ['unknown grant_type', 'unsupported_grant_type', { grant_type: 'client_credentials', client_id: CLIENT_ID }],
    ['scope beyond the user', 'invalid_scope', { grant_type: 'password', client_id: CLIENT_ID, username: 'alice', password: ALICE.password, scope: 'admin' }],
    ['bad device_id', 'invalid_request', { grant_type: 'password', client_id: CLIENT_ID, username: 'alice', password: ALICE.password, device_id: 'short' }],
    ['no client_id', 'invalid_request', { grant_type: 'refresh_token', refresh_token: 'prt_x' }],
    ['unknown refresh token', 'invalid_grant', { grant_type: 'refresh_token', client_id: CLIENT_ID, refresh_token: 'prt_nonsense' }],
  ])('%s: 400 %s', async (_name, error, body) => {
    const res = await form(T, body as Record<string, string>);
    expect(res.status).toBe(400);
    expect(res.body.error).toBe(error);
    check(res);
  });

  test('unknown client: 401 invalid_client', async () => {
    const res = await form(T, { grant_type: 'password', client_id: 'evil', username: 'alice', password: 'x' });
    expect(res.status).toBe(401);
    expect(res.body.error).toBe('invalid_client');
    check(res);
  });

  test('a body that is not UTF-8: 400 problem+json', async () => {
    const res = await rawForm(T, Buffer.from('grant_type=password&username=\xff\xfe', 'latin1'));
    expect(res.status).toBe(400);
    expect(res.body.code).toBe('invalidRequest');
    check(res);
  });

  test('more than 50 parameters: 400 problem+json', async () => {
    const res = await api().post(T).type('form').send('grant_type=password&' + Array.from({ length: 60 }, (_, i) => `p${i}=1`).join('&'));
    expect(res.status).toBe(400);
    expect(res.body.code).toBe('invalidRequest');
    check(res);
  });

  test('a JSON body, or a charset other than UTF-8: 415', async () => {
    const json = await api().post(T).send({ grant_type: 'password' });
    expect(json.status).toBe(415);
    check(json);
    const utf16 = await api().post(T).set('Content-Type', 'application/x-www-form-urlencoded; charset=utf-16').send('grant_type=password');
    expect(utf16.status).toBe(415);
    check(utf16);
  });

  test('a body over the limit: 413', async () => {
    const res = await api().post(T).type('form').send(`grant_type=password&password=${'x'.repeat(ctx.config.maxRequestBytes)}`);
    expect(res.status).toBe(413);
    check(res);
  });

  test('out of disk: 507', async () => {
    const spy = jest.spyOn(ctx.store.refreshTokens, 'insert').mockRejectedValue(new StoreFull());
    try {
      const res = await passwordGrant(ctx, ALICE.username, ALICE.password);
      expect(res.status).toBe(507);
      check(res);
    } finally {
      spy.mockRestore();
    }
  });
});

describe('(b) POST /oauth2/revoke', () => {
  const R = '/oauth2/revoke';
  const check = (res: request.Response) => expectToMatchSpec(res, 'post', R);

  test('a refresh token, an access token and an unknown token: 200 {}', async () => {
    const s = await signIn(ctx, ALICE.username, ALICE.password);
    for (const token of [s.refresh_token, (await signIn(ctx, ALICE.username, ALICE.password)).access_token, 'prt_unknown']) {
      const res = await form(R, { token, client_id: CLIENT_ID });
      expect(res.status).toBe(200);
      expect(res.body).toEqual({});
      check(res);
    }
  });

  test('no token: 400 invalid_request; unknown client: 401 invalid_client', async () => {
    const missing = await form(R, { client_id: CLIENT_ID });
    expect(missing.status).toBe(400);
    check(missing);
    const client = await form(R, { token: 'prt_x', client_id: 'evil' });
    expect(client.status).toBe(401);
    check(client);
  });

  test('a JSON body: 415', async () => {
    const res = await api().post(R).send({ token: 'x', client_id: CLIENT_ID });
    expect(res.status).toBe(415);
    check(res);
  });
});

describe('(b) rate limits on the OAuth endpoints', () => {
  test('per-user failures and per-address requests: 429 with Retry-After', async () => {
    const rl = await buildTestApp({ loginFailuresPerUser: 1, tokenRequestsPerIp: 3 });
    try {
      await rl.users.addUser({ ...ALICE, role: 'user' });
      const first = await passwordGrant(rl, ALICE.username, 'wrong-1');
      expect(first.status).toBe(400);
      expectToMatchSpec(first, 'post', '/oauth2/token');
      const second = await passwordGrant(rl, ALICE.username, 'wrong-2');
      expect(second.status).toBe(429);
      expectToMatchSpec(second, 'post', '/oauth2/token');
      const revoke = () => request(rl.app).post('/oauth2/revoke').type('form').send({ token: 'prt_x', client_id: CLIENT_ID });
      const ok = await revoke();
      expect(ok.status).toBe(200);
      expectToMatchSpec(ok, 'post', '/oauth2/revoke');
      const limited = await revoke();
      expect(limited.status).toBe(429);
      expectToMatchSpec(limited, 'post', '/oauth2/revoke');
    } finally {
      await rl.close();
    }
  });
});

describe('(b) GET /v1/session', () => {
  const S = '/v1/session';
  const check = (res: request.Response) => expectToMatchSpec(res, 'get', S);

  test('without a device, and from a registered device: 200', async () => {
    const plain = await signIn(ctx, ALICE.username, ALICE.password);
    const a = await api().get(S).set('Authorization', bearer(plain.access_token));
    expect(a.status).toBe(200);
    expect(a.body.device).toBeNull();
    check(a);
    const b = await api().get(S).set(await onDevice());
    expect(b.status).toBe(200);
    expect(b.body.device).toMatchObject({ deviceId: DEVICE, accessState: 'allowed', wipeState: 'none' });
    check(b);
    expectDocumentedMembers(b.body.device, 'Device');
    const admin = await signIn(ctx, ROOT.username, ROOT.password);
    const c = await api().get(S).set('Authorization', bearer(admin.access_token));
    expect(c.status).toBe(200);
    expect(c.body.scopes).toEqual(['mail', 'admin']);
    check(c);
  });

  test('no token, a malformed header, a bad token, a token in the query string: 401', async () => {
    const { access_token } = await signIn(ctx, ALICE.username, ALICE.password);
    const cases = [
      api().get(S),
      api().get(S).set('Authorization', 'Basic YWxpY2U6eA=='),
      api().get(S).set('Authorization', bearer('not.a.token')),
      api().get(`${S}?access_token=${access_token}`),
      api().get(`${S}?access_token=${access_token}`).set('Authorization', bearer(access_token)),
    ];
    for (const pending of cases) {
      const res = await pending;
      expect(res.status).toBe(401);
      check(res);
    }
  });

  test('a token whose sessions were revoked: 401', async () => {
    await ctx.users.addUser({ username: 'dave', password: 'dave-password-1', role: 'user' });
    const { access_token } = await signIn(ctx, 'dave', 'dave-password-1');
    await ctx.users.revokeSessionsOf('dave');
    const res = await api().get(S).set('Authorization', bearer(access_token));
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toContain('error="invalid_token"');
    check(res);
  });

  test('a bug: 500 internal; a busy store: 503 with Retry-After', async () => {
    const { access_token } = await signIn(ctx, ALICE.username, ALICE.password);
    const spy = jest.spyOn(ctx.store.users, 'byId');
    try {
      spy.mockRejectedValue(new Error('boom'));
      const bug = await api().get(S).set('Authorization', bearer(access_token));
      expect(bug.status).toBe(500);
      expect(bug.text).not.toContain('boom');
      check(bug);
      spy.mockRejectedValue(new StoreBusy());
      const busy = await api().get(S).set('Authorization', bearer(access_token));
      expect(busy.status).toBe(503);
      check(busy);
    } finally {
      spy.mockRestore();
    }
  });
});

// ---- devices (protocol §3) -------------------------------------------------------------------------------------

let deviceSerial = 0;
/** A fresh, well-formed device id per call, so a test that blocks or wipes a device never touches another's. */
const newDeviceId = () => `contract-${String(++deviceSerial).padStart(4, '0')}-0123456789`;

interface Phone {
  deviceId: string;
  /** The device record id (what the admin API uses). */
  id: string;
  headers: Record<string, string>;
  refresh: string;
}

/** Alice signed in on a fresh device, registered with `body` (validated) unless `register` is false. */
async function phone(body: Record<string, unknown> = {}, register = true): Promise<Phone> {
  const deviceId = newDeviceId();
  const t = await signIn(ctx, ALICE.username, ALICE.password, { device_id: deviceId });
  const headers = { Authorization: bearer(t.access_token), 'X-Device-Id': deviceId };
  let id = '';
  if (register) {
    const res = await api().post('/v1/devices').set(headers).send(body);
    expect(res.status).toBe(201);
    expectToMatchSpec(res, 'post', '/v1/devices');
    id = res.body.id;
  }
  return { deviceId, id, headers, refresh: t.refresh_token };
}

const refreshOn = (p: Phone) =>
  form('/oauth2/token', { grant_type: 'refresh_token', client_id: CLIENT_ID, refresh_token: p.refresh, device_id: p.deviceId });
const passwordOn = (p: Phone) => passwordGrant(ctx, ALICE.username, ALICE.password, { device_id: p.deviceId });

// ---- the identity provider (protocol §2) ------------------------------------------------------------------------

/** The operations the identity provider answers itself (`x-pigeon-served-by: identity-provider`). */
const providerOperations = () => specOperations().filter(({ method, path: p }) => loadSpec().paths[p][method]['x-pigeon-served-by'] === 'identity-provider');
const operator = () => ({ Authorization: `Basic ${Buffer.from(`pigeon-operator:${OPERATOR_SECRET}`).toString('base64')}` });
const claimsOf = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
const hiddenField = (html: string, name: string) => new RegExp(`name="${name}" value="([^"]*)"`).exec(html)?.[1] ?? '';
const formActions = (html: string) => [...html.matchAll(/<form method="post" action="([^"]*)"/g)].map((m) => m[1]!.replace(/&amp;/g, '&'));
/** An absolute URL of the provider's (its issuer's origin, or the test server's) as a path on the app under test. */
const local = (url: string) => {
  const u = new URL(url, 'http://pigeon.invalid');
  return u.pathname + u.search;
};
/** PKCE (RFC 7636): a verifier and its S256 challenge. */
function pkce() {
  const verifier = crypto.randomBytes(32).toString('base64url');
  return { verifier, challenge: crypto.createHash('sha256').update(verifier).digest('base64url') };
}

/**
 * The sign-in pages as a person goes through them in a browser (a cookie-keeping agent): the password, "Not now" to
 * two-step enrolment, Allow. Follows redirects within the provider and its pages; answers the first response that
 * leaves them (the redirect to the app) or is no sign-in page (the device flow's last page).
 */
async function walkSignIn(agent: ReturnType<typeof request.agent>, first: request.Response, who = ALICE): Promise<request.Response> {
  let res = first;
  for (let step = 0; step < 12; step++) {
    if (res.status === 303) {
      const next = new URL(String(res.headers.location), 'http://pigeon.invalid');
      if (!/^\/(interaction|oauth2)\//.test(next.pathname)) return res;
      res = await agent.get(next.pathname + next.search);
      continue;
    }
    const title = /<h1>([^<]*)<\/h1>/.exec(res.text ?? '')?.[1];
    const csrf = hiddenField(res.text, 'csrf');
    const actions = formActions(res.text);
    if (title === 'Sign in') res = await agent.post(actions[0]!).type('form').send({ csrf, username: who.username, password: who.password });
    else if (title === 'Set up two-step verification') res = await agent.post(actions[1]!).type('form').send({ csrf }); // Not now
    else if (title === 'Allow access') res = await agent.post(actions[0]!).type('form').send({ csrf });
    else return res;
  }
  throw new Error('the sign-in pages did not come to an end');
}

/**
 * The device flow (RFC 8628) end to end against `target` (the app, or a listening server when DPoP proofs must name
 * its URL): the app asks for codes, a person types the user code on the verification page and signs in, the app
 * redeems the device code (with `redeemTwice`, once more: refused, and the sign-in ends). Every answer of a documented
 * operation is checked against the document on the way.
 */
async function deviceFlow(target: Parameters<typeof request>[0], o: { deviceId: string; proof?: () => Promise<string>; redeemTwice?: boolean }) {
  const started = await request(target).post('/oauth2/device_authorization').type('form').send({ client_id: 'pigeon-cli', scope: 'openid offline_access mail', device_id: o.deviceId });
  expect(started.status).toBe(200);
  expectToMatchSpec(started, 'post', '/oauth2/device_authorization');
  expectDocumentedMembers(started.body, 'DeviceAuthorizationResponse');
  const poll = () => {
    let req = request(target).post('/oauth2/token').type('form');
    return o.proof ? o.proof().then((p) => req.set('DPoP', p).send({ grant_type: DEVICE_CODE, client_id: 'pigeon-cli', device_code: started.body.device_code })) : req.send({ grant_type: DEVICE_CODE, client_id: 'pigeon-cli', device_code: started.body.device_code });
  };
  const pending = await poll();
  expect(pending.status).toBe(400);
  expect(pending.body.error).toBe('authorization_pending');
  expectToMatchSpec(pending, 'post', '/oauth2/token');

  const browser = request.agent(target);
  const page = await browser.get(local(started.body.verification_uri));
  expect(page.status).toBe(200);
  expectToMatchSpec(page, 'get', '/oauth2/device');
  const confirm = await browser.post(local(formActions(page.text)[0]!)).type('form').send({ xsrf: hiddenField(page.text, 'xsrf'), user_code: started.body.user_code });
  expect(confirm.status).toBe(200);
  expectToMatchSpec(confirm, 'post', '/oauth2/device');
  expect(confirm.text).toContain(started.body.user_code);
  const confirmed = await browser.post(local(formActions(confirm.text)[0]!)).type('form').send({ xsrf: hiddenField(confirm.text, 'xsrf'), user_code: started.body.user_code, confirm: 'yes' });
  expect(confirmed.status).toBe(303);
  expectToMatchSpec(confirmed, 'post', '/oauth2/device');
  const done = await walkSignIn(browser, confirmed);
  expect(done.text).toContain('Device signed in');

  const tokens = await poll();
  expect(tokens.status).toBe(200);
  expectToMatchSpec(tokens, 'post', '/oauth2/token');
  expectDocumentedMembers(tokens.body, 'TokenResponse');
  if (o.redeemTwice) {
    // A device code is good once; presenting it again ends the sign-in it made (as a replayed code does).
    const spent = await poll();
    expect(spent.status).toBe(400);
    expect(spent.body.error).toBe('invalid_grant');
    expectToMatchSpec(spent, 'post', '/oauth2/token');
  }
  return tokens.body as { access_token: string; refresh_token: string; id_token?: string; token_type: string; scope: string };
}

const DEVICE_CODE = 'urn:ietf:params:oauth:grant-type:device_code';

describe('(b) the identity provider: discovery and keys', () => {
  const DOCS = ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server'];

  test('both discovery documents: the same document, with what the issue requires', async () => {
    // One listener, so both documents name the same origin (the provider builds its endpoint URLs from the request).
    const server = http.createServer(ctx.app).listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const [oidc, oauth] = await Promise.all(DOCS.map((p) => request(origin).get(p))).finally(() => server.close());
    for (const [res, p] of [[oidc!, DOCS[0]!], [oauth!, DOCS[1]!]] as const) {
      expect(res.status).toBe(200);
      expectToMatchSpec(res, 'get', p);
      expect(res.body.authorization_endpoint).toBe(`${origin}/oauth2/authorize`);
      expect(res.body.response_types_supported).toEqual(['code']);
      expect(res.body.code_challenge_methods_supported).toEqual(['S256']);
      expect(res.body.grant_types_supported).toEqual(expect.arrayContaining(['authorization_code', 'refresh_token', DEVICE_CODE]));
      // This app has the development password grant on (tests/helpers/testApp.ts): the document says so.
      expect(res.body.grant_types_supported).toContain('password');
      expect(res.body.pigeon_password_grant).toBe('enabled for development only');
      expect(res.body.pigeon_region).toBe(ctx.config.region);
      expect(Object.keys(res.body.pigeon_regions)).toContain(ctx.config.region);
      expect(res.body.dpop_signing_alg_values_supported).toEqual(expect.arrayContaining(['ES256', 'EdDSA']));
    }
    expect(oauth!.body).toEqual(oidc!.body);
  });

  test('with the password grant off, the documents do not offer it, and it is unsupported_grant_type', async () => {
    const off = await buildTestApp({}, { PIGEON_PASSWORD_GRANT: 'false' });
    try {
      await off.users.addUser({ ...ALICE, role: 'user' });
      for (const p of DOCS) {
        const res = await request(off.app).get(p);
        expect(res.status).toBe(200);
        expectToMatchSpec(res, 'get', p);
        expect(res.body.grant_types_supported).not.toContain('password');
        expect(res.body.pigeon_password_grant).toBe('disabled');
      }
      const grant = await passwordGrant(off, ALICE.username, ALICE.password);
      expect(grant.status).toBe(400);
      expect(grant.body.error).toBe('unsupported_grant_type');
      expectToMatchSpec(grant, 'post', '/oauth2/token');
    } finally {
      await off.close();
    }
  });

  test('every endpoint the discovery document advertises is an operation of this document', async () => {
    const res = await api().get(DOCS[0]!);
    const advertised = Object.entries(res.body as Record<string, unknown>).filter(([k, v]) => (k.endsWith('_endpoint') || k === 'jwks_uri') && typeof v === 'string');
    expect(advertised.length).toBeGreaterThanOrEqual(6);
    const paths = loadSpec().paths;
    const undocumented = advertised.filter(([, url]) => !paths[new URL(url as string).pathname]).map(([k, url]) => `${k}: ${url}`);
    expect(undocumented).toEqual([]);
  });

  test('service_documentation points at this document', async () => {
    const res = await api().get(DOCS[0]!);
    const served = await api().get(new URL(res.body.service_documentation).pathname);
    expect({ url: res.body.service_documentation, status: served.status, type: served.headers['content-type'] }).toEqual({
      url: res.body.service_documentation,
      status: 200,
      type: expect.stringMatching(/^application\/yaml/),
    });
  });

  test('GET /.well-known/jwks.json: one public EdDSA key, the one that signs every access token', async () => {
    const res = await api().get('/.well-known/jwks.json');
    expect(res.status).toBe(200);
    expectToMatchSpec(res, 'get', '/.well-known/jwks.json');
    const body = JSON.parse(res.text) as { keys: Array<JWK & { kid: string }> };
    expect(body.keys).toHaveLength(1);
    const [jwk] = body.keys;
    expect(jwk).toMatchObject({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig' });
    expect(jwk).not.toHaveProperty('d');
    const key = await importJWK(jwk!, 'EdDSA');
    // The development grant's token and the identity provider's: both verify by that key, under its kid.
    const development = (await signIn(ctx, ALICE.username, ALICE.password)).access_token;
    const provider = (await deviceFlow(ctx.app, { deviceId: newDeviceId() })).access_token;
    for (const token of [development, provider]) {
      expect(decodeProtectedHeader(token)).toMatchObject({ alg: 'EdDSA', typ: 'at+jwt', kid: jwk!.kid });
      await expect(jwtVerify(token, key)).resolves.toBeDefined();
    }
  });
});

describe('(b) the identity provider: the device flow, refresh rotation, revocation and introspection', () => {
  test('the device flow: codes, the verification page, polling, tokens with the documented claims that the API accepts', async () => {
    const deviceId = newDeviceId();
    const tokens = await deviceFlow(ctx.app, { deviceId });
    expect(tokens.token_type).toBe('Bearer');
    expect(tokens.scope).toBe('mail');
    expect(typeof tokens.id_token).toBe('string'); // `openid` was asked for
    const claims = claimsOf(tokens.access_token);
    // The claims the document lists (bearerAuth); `cnf` only on a DPoP-bound token (below).
    for (const claim of ['iss', 'aud', 'sub', 'tid', 'sv', 'sid', 'did', 'scope', 'rgn', 'client_id', 'role', 'jti', 'iat', 'exp']) {
      expect({ claim, present: claim in claims }).toEqual({ claim, present: true });
    }
    expect(claims).toMatchObject({ aud: ctx.config.audience, did: deviceId, scope: 'mail', client_id: 'pigeon-cli', rgn: ctx.config.region });
    expect(claims).not.toHaveProperty('cnf');
    const session = await api().get('/v1/session').set('Authorization', bearer(tokens.access_token)).set('X-Device-Id', deviceId);
    expect(session.status).toBe(200);
    expectToMatchSpec(session, 'get', '/v1/session');
  });

  test('a device code redeemed twice: refused, and the sign-in it made ends', async () => {
    const deviceId = newDeviceId();
    const tokens = await deviceFlow(ctx.app, { deviceId, redeemTwice: true });
    const session = await api().get('/v1/session').set('Authorization', bearer(tokens.access_token)).set('X-Device-Id', deviceId);
    expect(session.status).toBe(401);
    expectToMatchSpec(session, 'get', '/v1/session');
  });

  test('refresh rotates; a reused refresh token ends the whole sign-in; revocation answers 200 with an empty body', async () => {
    const T = '/oauth2/token';
    const first = await deviceFlow(ctx.app, { deviceId: newDeviceId() });
    const refresh = (token: string) => form(T, { grant_type: 'refresh_token', client_id: 'pigeon-cli', refresh_token: token });
    const second = await refresh(first.refresh_token);
    expect(second.status).toBe(200);
    expectToMatchSpec(second, 'post', T);
    expect(second.body.refresh_token).not.toBe(first.refresh_token);
    const reused = await refresh(first.refresh_token);
    expect(reused.status).toBe(400);
    expect(reused.body.error).toBe('invalid_grant');
    expectToMatchSpec(reused, 'post', T);
    // The sign-in ended with every token of it: the newest refresh token, and the access token.
    expect((await refresh(second.body.refresh_token)).body.error).toBe('invalid_grant');
    expect((await api().get('/v1/session').set('Authorization', bearer(second.body.access_token))).status).toBe(401);

    const other = await deviceFlow(ctx.app, { deviceId: newDeviceId() });
    const revoked = await form('/oauth2/revoke', { token: other.refresh_token, client_id: 'pigeon-cli' });
    expect(revoked.status).toBe(200);
    expect(revoked.text).toBe('');
    expectToMatchSpec(revoked, 'post', '/oauth2/revoke');
    expect((await refresh(other.refresh_token)).body.error).toBe('invalid_grant');
  });

  test('a grant for a device with a pending wipe carries `wipe`', async () => {
    const deviceId = newDeviceId();
    const tokens = await deviceFlow(ctx.app, { deviceId });
    const registered = await api().post('/v1/devices').set({ Authorization: bearer(tokens.access_token), 'X-Device-Id': deviceId }).send({});
    expect(registered.status).toBe(201);
    expect((await api().post(`/admin/v1/devices/${registered.body.id}/wipe`).set(await asAdmin())).status).toBe(200);
    const res = await form('/oauth2/token', { grant_type: 'refresh_token', client_id: 'pigeon-cli', refresh_token: tokens.refresh_token });
    expect(res.status).toBe(200);
    expect(res.body.wipe).toEqual({ scope: 'account' });
    expectToMatchSpec(res, 'post', '/oauth2/token');
    expectDocumentedMembers(res.body, 'TokenResponse');
  });

  test('introspection: the operator sees a refresh token; anyone else learns nothing; an access token is not introspected', async () => {
    const I = '/oauth2/introspect';
    const check = (res: request.Response) => expectToMatchSpec(res, 'post', I);
    const tokens = await deviceFlow(ctx.app, { deviceId: newDeviceId() });
    const seen = await api().post(I).set(operator()).type('form').send({ token: tokens.refresh_token });
    expect(seen.status).toBe(200);
    expect(seen.body).toMatchObject({ active: true, client_id: 'pigeon-cli', sub: claimsOf(tokens.access_token).sub });
    check(seen);
    expectDocumentedMembers(seen.body, 'IntrospectionResponse');
    const unknown = await api().post(I).set(operator()).type('form').send({ token: 'not-a-token' });
    expect(unknown.body).toEqual({ active: false });
    check(unknown);
    const app = await form(I, { token: tokens.refresh_token, client_id: 'pigeon-cli' });
    expect(app.status).toBe(200);
    expect(app.body).toEqual({ active: false });
    check(app);
    const jwt = await api().post(I).set(operator()).type('form').send({ token: tokens.access_token });
    expect(jwt.status).toBe(400);
    expect(jwt.body.error).toBe('unsupported_token_type');
    check(jwt);
    const anonymous = await form(I, { token: tokens.refresh_token });
    expect(anonymous.status).toBe(400);
    expect(anonymous.body.error).toBe('invalid_request');
    check(anonymous);
    const wrongSecret = await api().post(I).auth('pigeon-operator', 'x'.repeat(40)).type('form').send({ token: tokens.refresh_token });
    expect(wrongSecret.status).toBe(401);
    expect(wrongSecret.body.error).toBe('invalid_client');
    expect(wrongSecret.headers['www-authenticate']).toMatch(/^Basic /);
    check(wrongSecret);
  });

  test('the verification page refuses a code that is not valid; device authorization refuses an unknown client and a foreign resource', async () => {
    const browser = request.agent(ctx.app);
    const page = await browser.get('/oauth2/device');
    const wrongCode = await browser.post(local(formActions(page.text)[0]!)).type('form').send({ xsrf: hiddenField(page.text, 'xsrf'), user_code: 'BCDF-GHJK' });
    expect(wrongCode.status).toBe(400);
    expect(wrongCode.headers['content-type']).toMatch(/^text\/html/);
    expectToMatchSpec(wrongCode, 'post', '/oauth2/device');
    const D = '/oauth2/device_authorization';
    const evil = await form(D, { client_id: 'evil', scope: 'mail' });
    expect(evil.status).toBe(401);
    expect(evil.body.error).toBe('invalid_client');
    expectToMatchSpec(evil, 'post', D);
    const target = await form(D, { client_id: 'pigeon-cli', scope: 'mail', resource: 'https://evil.example/' });
    expect(target.status).toBe(400);
    expect(target.body.error).toBe('invalid_target');
    expectToMatchSpec(target, 'post', D);
    const json = await api().post(D).send({ client_id: 'pigeon-cli' });
    expect(json.status).toBe(400);
    expect(json.body.error).toBe('invalid_request');
    expectToMatchSpec(json, 'post', D);
  });
});

describe('(b) the identity provider: the authorization code flow with PKCE', () => {
  const A = '/oauth2/authorize';
  const REDIRECT = 'http://127.0.0.1/callback';
  const authorizeUrl = (over: Record<string, string | undefined> = {}) => {
    const q: Record<string, string | undefined> = { client_id: CLIENT_ID, response_type: 'code', redirect_uri: REDIRECT, scope: 'openid offline_access mail', state: 'st-1', code_challenge_method: 'S256', ...over };
    return `${A}?${new URLSearchParams(Object.entries(q).filter((e): e is [string, string] => e[1] !== undefined)).toString()}`;
  };

  test('authorize (a loopback redirect URI, any port), sign in on the pages, redeem the code once with its verifier: tokens bound to device_id', async () => {
    const { verifier, challenge } = pkce();
    const deviceId = newDeviceId();
    const redirectUri = 'http://127.0.0.1:53682/callback';
    const browser = request.agent(ctx.app);
    const start = await browser.get(authorizeUrl({ code_challenge: challenge, device_id: deviceId, redirect_uri: redirectUri }));
    expect(start.status).toBe(303);
    expect(start.headers.location).toMatch(/^\/interaction\//);
    expectToMatchSpec(start, 'get', A);
    const back = await walkSignIn(browser, start);
    expect(back.status).toBe(303);
    const redirect = new URL(String(back.headers.location));
    expect(redirect.origin + redirect.pathname).toBe(redirectUri);
    expect(redirect.searchParams.get('state')).toBe('st-1');
    expect(redirect.searchParams.get('iss')).toBeTruthy();
    const redeem = (codeVerifier: string) =>
      form('/oauth2/token', { grant_type: 'authorization_code', client_id: CLIENT_ID, code: redirect.searchParams.get('code')!, redirect_uri: redirectUri, code_verifier: codeVerifier });
    const wrong = await redeem(pkce().verifier);
    expect(wrong.status).toBe(400);
    expect(wrong.body.error).toBe('invalid_grant');
    expectToMatchSpec(wrong, 'post', '/oauth2/token');
    const tokens = await redeem(verifier);
    expect(tokens.status).toBe(200);
    expectToMatchSpec(tokens, 'post', '/oauth2/token');
    expectDocumentedMembers(tokens.body, 'TokenResponse');
    expect(tokens.body.token_type).toBe('Bearer');
    expect(typeof tokens.body.id_token).toBe('string');
    expect(claimsOf(tokens.body.access_token)).toMatchObject({ did: deviceId, client_id: CLIENT_ID, scope: 'mail' });
    const headers = { Authorization: bearer(tokens.body.access_token), 'X-Device-Id': deviceId };
    expect((await api().get('/v1/session').set(headers)).status).toBe(200);
    const again = await redeem(verifier);
    expect(again.status).toBe(400);
    expect(again.body.error).toBe('invalid_grant');
    expectToMatchSpec(again, 'post', '/oauth2/token');
    expect((await api().get('/v1/session').set(headers)).status).toBe(401); // a replayed code ends the sign-in
  });

  test('PKCE cannot be left out or downgraded (the error goes back to the app); a bad client or redirect URI gets the error page, never a redirect', async () => {
    const { challenge } = pkce();
    for (const over of [{ code_challenge: undefined }, { code_challenge: challenge, code_challenge_method: 'plain' }, { code_challenge: challenge, code_challenge_method: undefined }]) {
      const res = await api().get(authorizeUrl(over));
      expect(res.status).toBe(303);
      expectToMatchSpec(res, 'get', A);
      const to = new URL(String(res.headers.location));
      expect(to.origin + to.pathname).toBe(REDIRECT);
      expect(to.searchParams.get('error')).toBe('invalid_request');
    }
    for (const over of [{ redirect_uri: 'https://evil.example/callback' }, { redirect_uri: 'http://localhost/callback' }, { client_id: 'evil' }]) {
      const res = await api().get(authorizeUrl({ code_challenge: challenge, ...over }));
      expect(res.status).toBe(400);
      expect(res.headers.location).toBeUndefined();
      expectToMatchSpec(res, 'get', A);
    }
  });
});

describe('(b) the identity provider: DPoP', () => {
  let server: http.Server;
  let base = '';
  beforeAll(async () => {
    server = http.createServer(ctx.app).listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise((resolve) => server.close(resolve)));

  test('a proof at the token endpoint binds the tokens; the API takes them only as DPoP, with the documented challenges', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256');
    const jwk = await exportJWK(publicKey);
    const proof = (method: string, url: string, token?: string) =>
      new SignJWT({ htm: method, htu: url, jti: crypto.randomUUID(), iat: Math.floor(Date.now() / 1000), ...(token ? { ath: crypto.createHash('sha256').update(token).digest('base64url') } : {}) })
        .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
        .sign(privateKey);
    const deviceId = newDeviceId();
    const tokens = await deviceFlow(base, { deviceId, proof: () => proof('POST', `${base}/oauth2/token`) });
    expect(tokens.token_type).toBe('DPoP');
    expect(claimsOf(tokens.access_token).cnf).toEqual({ jkt: await calculateJwkThumbprint(jwk) });

    const S = '/v1/session';
    const session = (headers: Record<string, string>) => request(base).get(S).set({ 'X-Device-Id': deviceId, ...headers });
    const ok = await session({ Authorization: `DPoP ${tokens.access_token}`, DPoP: await proof('GET', `${base}${S}`, tokens.access_token) });
    expect(ok.status).toBe(200);
    expectToMatchSpec(ok, 'get', S);
    const cases: Array<[string, Record<string, string>, RegExp]> = [
      ['no proof', { Authorization: `DPoP ${tokens.access_token}` }, /^DPoP error="invalid_dpop_proof", error_description="[^"]*", algs="ES256 EdDSA RS256 PS256"$/],
      ['a proof for another URL', { Authorization: `DPoP ${tokens.access_token}`, DPoP: await proof('GET', `${base}/v1/devices`, tokens.access_token) }, /^DPoP error="invalid_dpop_proof"/],
      ['the bound token as a bearer token', { Authorization: `Bearer ${tokens.access_token}` }, /^Bearer realm="pigeon", error="invalid_token", DPoP algs="ES256 EdDSA RS256 PS256"$/],
      ['an unbound token under the DPoP scheme', { Authorization: `DPoP ${(await signIn(ctx, ALICE.username, ALICE.password)).access_token}`, DPoP: await proof('GET', `${base}${S}`) }, /^DPoP error="invalid_token"/],
    ];
    for (const [what, headers, challenge] of cases) {
      const res = await session(headers);
      expect({ what, status: res.status }).toEqual({ what, status: 401 });
      expect({ what, challenge: res.headers['www-authenticate'] }).toEqual({ what, challenge: expect.stringMatching(challenge) });
      expect(res.body.error).toBe(/error="([a-z_]+)"/.exec(String(res.headers['www-authenticate']))![1]);
      expectToMatchSpec(res, 'get', S);
      expectDocumentedMembers(res.body, 'Problem');
    }

    // The refresh token is bound too: no proof, or a bad one, and it does not refresh.
    const T = '/oauth2/token';
    const refresh = () => request(base).post(T).type('form');
    const unproven = await refresh().send({ grant_type: 'refresh_token', client_id: 'pigeon-cli', refresh_token: tokens.refresh_token });
    expect(unproven.status).toBe(400);
    expect(unproven.body.error).toBe('invalid_grant');
    expectToMatchSpec(unproven, 'post', T);
    const badProof = await refresh().set('DPoP', 'a.b.c').send({ grant_type: 'refresh_token', client_id: 'pigeon-cli', refresh_token: tokens.refresh_token });
    expect(badProof.status).toBe(400);
    expect(badProof.body.error).toBe('invalid_dpop_proof');
    expectToMatchSpec(badProof, 'post', T);
    const proven = await refresh().set('DPoP', await proof('POST', `${base}${T}`)).send({ grant_type: 'refresh_token', client_id: 'pigeon-cli', refresh_token: tokens.refresh_token });
    expect(proven.status).toBe(200);
    expect(proven.body.token_type).toBe('DPoP');
    expectToMatchSpec(proven, 'post', T);
  });
});

describe('(b) devices: POST /v1/devices', () => {
  const D = '/v1/devices';
  const check = (res: request.Response) => expectToMatchSpec(res, 'post', D);

  test('201 the first time, 200 on re-registration (every descriptive field replaced)', async () => {
    const p = await phone({}, false);
    const full = {
      friendlyName: "Alice's iPhone",
      deviceType: 'iPhone',
      deviceModel: 'iPhone15,2',
      deviceOS: 'iOS 19.1',
      clientType: 'PigeonMail',
      clientVersion: '1.4.0',
      capabilities: ['rms'],
    };
    const first = await api().post(D).set(p.headers).send(full);
    expect(first.status).toBe(201);
    expect(first.body).toMatchObject({ ...full, deviceId: p.deviceId, accessState: 'allowed', accessStateReason: 'default', wipeState: 'none' });
    check(first);
    expectDocumentedMembers(first.body, 'Device');
    const again = await api().post(D).set(p.headers).send({ friendlyName: 'renamed', capabilities: ['rms', 'rms'] });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ id: first.body.id, friendlyName: 'renamed', deviceType: null, capabilities: ['rms'] });
    check(again);
  });

  test('the descriptive headers fill what the body leaves out; no body at all is a registration too', async () => {
    const p = await phone({}, false);
    const res = await api()
      .post(D)
      .set(p.headers)
      .set({ 'X-Device-Type': 'Android', 'X-Device-Model': 'Pixel 10', 'X-Device-OS': 'Android 17', 'User-Agent': 'PigeonMail/1.0 (Android)' })
      .send({ deviceOS: 'Android 17.1' });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ deviceType: 'Android', deviceModel: 'Pixel 10', deviceOS: 'Android 17.1', userAgent: 'PigeonMail/1.0 (Android)' });
    check(res);
    const bare = await api().post(D).set(p.headers);
    expect(bare.status).toBe(200);
    check(bare);
  });

  test('400: unknown members, bad fields, bad JSON, X-Device-Id missing or malformed', async () => {
    const p = await phone({}, false);
    const unknown = await api().post(D).set(p.headers).send({ accessState: 'allowed' });
    expect(unknown.status).toBe(400);
    expect(unknown.body.errors).toContainEqual(expect.objectContaining({ field: '(root)' }));
    check(unknown);
    const bad = await api().post(D).set(p.headers).send({ friendlyName: 42, deviceModel: 'a\u0001b', capabilities: ['ok', 'not ok!'] });
    expect(bad.status).toBe(400);
    expect(bad.body.errors.map((e: { field: string }) => e.field).sort()).toEqual(['capabilities.1', 'deviceModel', 'friendlyName']);
    check(bad);
    const json = await api().post(D).set(p.headers).set('Content-Type', 'application/json').send('{"friendlyName":');
    expect(json.status).toBe(400);
    check(json);
    const { access_token } = await signIn(ctx, ALICE.username, ALICE.password); // a token bound to no device
    const missing = await api().post(D).set('Authorization', bearer(access_token)).send({});
    expect(missing.status).toBe(400);
    expect(missing.body.errors).toEqual([{ field: 'X-Device-Id', message: 'required' }]);
    check(missing);
    const malformed = await api().post(D).set({ Authorization: bearer(access_token), 'X-Device-Id': 'short' }).send({});
    expect(malformed.status).toBe(400);
    check(malformed);
    expect(await ctx.store.devices.byUserAndDeviceId((await ctx.store.users.byUsername('alice'))!.id, p.deviceId)).toBeUndefined();
  });

  test('401 without a token or with a token bound to another device; 413; 415', async () => {
    const p = await phone({}, false);
    const anonymous = await api().post(D).set('X-Device-Id', p.deviceId).send({});
    expect(anonymous.status).toBe(401);
    check(anonymous);
    const other = await api().post(D).set({ ...p.headers, 'X-Device-Id': newDeviceId() }).send({});
    expect(other.status).toBe(401);
    expect(other.headers['www-authenticate']).toContain('error="invalid_token"');
    check(other);
    const big = await api().post(D).set(p.headers).send({ friendlyName: 'x'.repeat(ctx.config.maxRequestBytes) });
    expect(big.status).toBe(413);
    check(big);
    const text = await api().post(D).set(p.headers).type('text/plain').send('friendlyName=x');
    expect(text.status).toBe(415);
    check(text);
  });

  test('403 deviceLimitReached', async () => {
    const small = await buildTestApp({ maxDevicesPerUser: 1 });
    try {
      await small.users.addUser({ ...ALICE, role: 'user' });
      const register = async () => {
        const deviceId = newDeviceId();
        const t = await signIn(small, ALICE.username, ALICE.password, { device_id: deviceId });
        return request(small.app).post(D).set({ Authorization: bearer(t.access_token), 'X-Device-Id': deviceId }).send({});
      };
      expect((await register()).status).toBe(201);
      const res = await register();
      expect(res.status).toBe(403);
      expect(res.body.code).toBe('deviceLimitReached');
      check(res);
    } finally {
      await small.close();
    }
  });
});

describe('(b) devices: GET /v1/devices and the device gate', () => {
  test('200: the caller\'s own devices', async () => {
    const p = await phone({ friendlyName: 'listed' });
    const res = await api().get('/v1/devices').set(p.headers);
    expect(res.status).toBe(200);
    expect(res.body.devices.map((d: { id: string }) => d.id)).toContain(p.id);
    expectToMatchSpec(res, 'get', '/v1/devices');
    for (const d of res.body.devices) expectDocumentedMembers(d, 'Device');
    const head = await api().head('/v1/devices').set(p.headers);
    expect(head.status).toBe(200);
    expectToMatchSpec(head, 'head', '/v1/devices');
  });

  test('403 deviceNotRegistered (no X-Device-Id, or an unregistered one), 400 malformed, 401 on every gated route', async () => {
    const unregistered = await phone({}, false);
    const { access_token } = await signIn(ctx, ALICE.username, ALICE.password);
    const noHeader = { Authorization: bearer(access_token) };
    const malformed = { Authorization: bearer(access_token), 'X-Device-Id': 'not a device id' };
    const gated = [
      ['get', '/v1/devices', '/v1/devices'],
      ['post', '/v1/devices/current/wipe-ack', '/v1/devices/current/wipe-ack'],
      ['delete', `/v1/devices/${DEVICE}`, '/v1/devices/{deviceId}'],
      ['get', '/v1/not-a-route', '/v1/not-a-route'],
    ] as const;
    for (const [method, url, template] of gated) {
      for (const headers of [unregistered.headers, noHeader]) {
        const res = await api()[method](url).set(headers).send(method === 'post' ? { status: 'ok' } : undefined);
        expect({ url, status: res.status, code: res.body.code }).toEqual({ url, status: 403, code: 'deviceNotRegistered' });
        expectToMatchSpec(res, method, template);
      }
      const bad = await api()[method](url).set(malformed);
      expect({ url, status: bad.status }).toEqual({ url, status: 400 });
      expectToMatchSpec(bad, method, template);
      const stranger = await api()[method](url).set({ ...unregistered.headers, 'X-Device-Id': DEVICE });
      expect({ url, status: stranger.status }).toEqual({ url, status: 401 });
      expectToMatchSpec(stranger, method, template);
      const anonymous = await api()[method](url).set('X-Device-Id', DEVICE);
      expect({ url, status: anonymous.status }).toEqual({ url, status: 401 });
      expectToMatchSpec(anonymous, method, template);
    }
  });

  test('an administrator blocks, quarantines, releases: 403 with accessStateReason; grants follow the state', async () => {
    const admin = await asAdmin();
    const p = await phone({ deviceModel: 'Contract Gate Model' });
    const other = await phone();
    const act = async (action: string) => {
      const res = await api().post(`/admin/v1/devices/${p.id}/${action}`).set(admin);
      expect(res.status).toBe(200);
      expectToMatchSpec(res, 'post', '/admin/v1/devices/{id}/{action}');
      return res;
    };
    /** Every gated operation from the device answers `code` (with this reason), the session call included. */
    const expectGate = async (code: string, accessStateReason: string) => {
      const calls = [
        ['get', '/v1/devices', '/v1/devices', api().get('/v1/devices')],
        ['delete', `/v1/devices/${other.deviceId}`, '/v1/devices/{deviceId}', api().delete(`/v1/devices/${other.deviceId}`)],
        ['post', '/v1/devices/current/wipe-ack', '/v1/devices/current/wipe-ack', api().post('/v1/devices/current/wipe-ack')],
      ] as const;
      for (const [method, url, template, pending] of calls) {
        const res = await pending.set(p.headers).send(method === 'post' ? { status: 'ok' } : undefined);
        expect({ url, status: res.status, code: res.body.code, accessStateReason: res.body.accessStateReason }).toEqual({ url, status: 403, code, accessStateReason });
        expectToMatchSpec(res, method, template);
        expectDocumentedMembers(res.body, 'Problem');
      }
      // The session call needs no registration, but a registered device is held to its state there too.
      const session = await api().get('/v1/session').set(p.headers);
      expect(session.body).toMatchObject({ status: 403, code, accessStateReason });
      expectToMatchSpec(session, 'get', '/v1/session');
    };

    expect((await act('block')).body).toMatchObject({ accessState: 'blocked', accessStateReason: 'individual' });
    await expectGate('deviceBlocked', 'individual');
    // The block ended the device's sign-in: even re-registration with its token is refused, with the device's code.
    const rereg = await api().post('/v1/devices').set(p.headers).send({ deviceModel: 'Contract Gate Model' });
    expect(rereg.status).toBe(403);
    expect(rereg.body.code).toBe('deviceBlocked');
    expectToMatchSpec(rereg, 'post', '/v1/devices');
    // Block revoked the device's refresh tokens; a new sign-in on it gets none either.
    for (const grant of [await refreshOn(p), await passwordOn(p)]) {
      expect(grant.status).toBe(400);
      expect(grant.body.error).toBe('invalid_grant');
      expectToMatchSpec(grant, 'post', '/oauth2/token');
    }
    expect((await act('allow')).body).toMatchObject({ accessState: 'allowed', accessStateReason: 'individual' });
    const allowed = await api().get('/v1/devices').set(p.headers);
    expect(allowed.status).toBe(401); // its sign-in ended with the block; allowing the device does not revive it
    expectToMatchSpec(allowed, 'get', '/v1/devices');

    // Quarantine keeps the tokens: a refresh still succeeds, and the device resumes once released.
    const fresh = await passwordOn(p);
    expect(fresh.status).toBe(200);
    const q: Phone = { ...p, refresh: fresh.body.refresh_token };
    expect((await act('quarantine')).body).toMatchObject({ accessState: 'quarantined', accessStateReason: 'individual' });
    await expectGate('deviceQuarantined', 'individual');
    const r = await refreshOn(q);
    expect(r.status).toBe(200);
    expect(r.body.wipe).toBeUndefined();
    expectToMatchSpec(r, 'post', '/oauth2/token');
    expect((await act('release')).body).toMatchObject({ accessState: 'allowed', accessStateReason: 'individual' });
    const resumed = await api().get('/v1/devices').set({ ...p.headers, Authorization: bearer(r.body.access_token) });
    expect(resumed.status).toBe(200);
    expectToMatchSpec(resumed, 'get', '/v1/devices');
  });

  test('403 by an access rule and by the organisation default (accessStateReason rule, default)', async () => {
    const admin = await asAdmin();
    const p = await phone({ deviceModel: 'Contract Rule Model', clientType: 'ContractRuleClient' });
    const other = await phone();
    const gateOf = async (headers: Record<string, string>) => {
      const res = await api().get('/v1/devices').set(headers);
      expectToMatchSpec(res, 'get', '/v1/devices');
      return res;
    };
    const rule = await api()
      .post('/admin/v1/device-access-rules')
      .set(admin)
      .send({ field: 'deviceModel', match: 'exact', value: 'contract rule model', accessState: 'quarantined' });
    expect(rule.status).toBe(201);
    expectToMatchSpec(rule, 'post', '/admin/v1/device-access-rules');
    try {
      expect((await gateOf(p.headers)).body).toMatchObject({ status: 403, code: 'deviceQuarantined', accessStateReason: 'rule' });
      expect((await gateOf(other.headers)).status).toBe(200);
      const put = await api().put('/admin/v1/device-access-default').set(admin).send({ accessState: 'blocked' });
      expect(put.status).toBe(200);
      expectToMatchSpec(put, 'put', '/admin/v1/device-access-default');
      // The rule still decides for its device; the default for the other one.
      expect((await gateOf(p.headers)).body).toMatchObject({ code: 'deviceQuarantined', accessStateReason: 'rule' });
      expect((await gateOf(other.headers)).body).toMatchObject({ status: 403, code: 'deviceBlocked', accessStateReason: 'default' });
      const inventory = await api().get(`/admin/v1/devices?user=alice&accessState=blocked`).set(admin);
      expect(inventory.body.devices.map((d: { id: string }) => d.id)).toContain(other.id);
      expectToMatchSpec(inventory, 'get', '/admin/v1/devices');
    } finally {
      await api().put('/admin/v1/device-access-default').set(admin).send({ accessState: 'allowed' }).expect(200);
      await api().delete(`/admin/v1/device-access-rules/${rule.body.id}`).set(admin).expect(204);
    }
    expect((await gateOf(p.headers)).status).toBe(200);
  });
});

describe('(b) devices: remote wipe and removal', () => {
  const ACK = '/v1/devices/current/wipe-ack';
  const checkAck = (res: request.Response) => expectToMatchSpec(res, 'post', ACK);

  test('wipe-ack without a pending wipe, or with a bad body: 400; a form body: 415', async () => {
    const p = await phone();
    for (const body of [{ status: 'ok' }, { status: 'maybe' }, { status: 'ok', extra: 1 }, {}]) {
      const res = await api().post(ACK).set(p.headers).send(body);
      expect(res.status).toBe(400);
      checkAck(res);
    }
    const text = await api().post(ACK).set(p.headers).type('form').send({ status: 'ok' });
    expect(text.status).toBe(415);
    checkAck(text);
  });

  test('pending: 403 wipeRequested (with wipe) but for the acknowledgement; grants carry wipe; removal is 409', async () => {
    const admin = await asAdmin();
    const p = await phone();
    const other = await phone();
    const wipe = await api().post(`/admin/v1/devices/${p.id}/wipe`).set(admin);
    expect(wipe.status).toBe(200);
    expect(wipe.body).toMatchObject({ wipeState: 'pending', wipeRequestedAt: expect.any(String), wipeAcknowledgedAt: null });
    expectToMatchSpec(wipe, 'post', '/admin/v1/devices/{id}/{action}');

    const gated = [
      ['get', '/v1/devices', '/v1/devices'],
      ['delete', `/v1/devices/${other.deviceId}`, '/v1/devices/{deviceId}'],
      ['post', '/v1/devices', '/v1/devices'], // registration: not gated, but refused while a wipe is pending
      ['get', '/v1/not-a-route', '/v1/not-a-route'],
    ] as const;
    for (const [method, url, template] of gated) {
      const res = await api()[method](url).set(p.headers).send(method === 'post' ? {} : undefined);
      expect({ url, status: res.status, code: res.body.code, wipe: res.body.wipe }).toEqual({ url, status: 403, code: 'wipeRequested', wipe: { scope: 'account' } });
      expectToMatchSpec(res, method, template);
    }
    const session = await api().get('/v1/session').set(p.headers);
    expect(session.body).toMatchObject({ status: 403, code: 'wipeRequested', wipe: { scope: 'account' } });
    expectToMatchSpec(session, 'get', '/v1/session');

    for (const grant of [await refreshOn(p), await passwordOn(p)]) {
      expect(grant.status).toBe(200);
      expect(grant.body.wipe).toEqual({ scope: 'account' });
      expectToMatchSpec(grant, 'post', '/oauth2/token');
    }

    const userDelete = await api().delete(`/v1/devices/${p.deviceId}`).set(other.headers);
    expect(userDelete.status).toBe(409);
    expect(userDelete.body.code).toBe('wipePending');
    expectToMatchSpec(userDelete, 'delete', '/v1/devices/{deviceId}');
    const adminDelete = await api().delete(`/admin/v1/devices/${p.id}`).set(admin);
    expect(adminDelete.status).toBe(409);
    expectToMatchSpec(adminDelete, 'delete', '/admin/v1/devices/{id}');
    const again = await api().post(`/admin/v1/devices/${p.id}/wipe`).set(admin);
    expect(again.status).toBe(400);
    expectToMatchSpec(again, 'post', '/admin/v1/devices/{id}/{action}');

    // The acknowledgement: 200, then the device is wiped everywhere until an administrator removes it.
    const ack = await api().post(ACK).set(p.headers).send({ status: 'ok' });
    expect(ack.status).toBe(200);
    expect(ack.body).toMatchObject({ id: p.id, wipeState: 'acknowledged', wipeAcknowledgedAt: expect.any(String) });
    checkAck(ack);
    expectDocumentedMembers(ack.body, 'Device');

    const wiped = [
      ['get', '/v1/devices', '/v1/devices'],
      ['post', ACK, ACK],
      ['post', '/v1/devices', '/v1/devices'],
      ['delete', `/v1/devices/${other.deviceId}`, '/v1/devices/{deviceId}'],
    ] as const;
    for (const [method, url, template] of wiped) {
      const res = await api()[method](url).set(p.headers).send(method === 'post' ? (url === ACK ? { status: 'ok' } : {}) : undefined);
      expect({ url, status: res.status, code: res.body.code }).toEqual({ url, status: 403, code: 'deviceWiped' });
      expectToMatchSpec(res, method, template);
    }
    // Another device of the user cannot remove the wiped one either: only an administrator can.
    const byUser = await api().delete(`/v1/devices/${p.deviceId}`).set(other.headers);
    expect(byUser.status).toBe(403);
    expect(byUser.body.code).toBe('deviceWiped');
    expectToMatchSpec(byUser, 'delete', '/v1/devices/{deviceId}');
    for (const grant of [await passwordOn(p)]) {
      expect(grant.body.error).toBe('invalid_grant');
      expectToMatchSpec(grant, 'post', '/oauth2/token');
    }
    const done = await api().post(`/admin/v1/devices/${p.id}/wipe`).set(admin);
    expect(done.status).toBe(400);
    expectToMatchSpec(done, 'post', '/admin/v1/devices/{id}/{action}');

    const removed = await api().delete(`/admin/v1/devices/${p.id}`).set(admin);
    expect(removed.status).toBe(204);
    expectToMatchSpec(removed, 'delete', '/admin/v1/devices/{id}');
    // The pre-wipe token never works again; a new sign-in on the same device id registers afresh.
    const stale = await api().post('/v1/devices').set(p.headers).send({});
    expect(stale.status).toBe(401);
    expectToMatchSpec(stale, 'post', '/v1/devices');
    const t = await signIn(ctx, ALICE.username, ALICE.password, { device_id: p.deviceId });
    const reregistered = await api().post('/v1/devices').set({ ...p.headers, Authorization: bearer(t.access_token) }).send({});
    expect(reregistered.status).toBe(201);
    expectToMatchSpec(reregistered, 'post', '/v1/devices');
  });

  test('a failed wipe is wipeState failed', async () => {
    const admin = await asAdmin();
    const p = await phone();
    await api().post(`/admin/v1/devices/${p.id}/wipe`).set(admin).expect(200);
    const ack = await api().post(ACK).set(p.headers).send({ status: 'failed' });
    expect(ack.status).toBe(200);
    expect(ack.body.wipeState).toBe('failed');
    checkAck(ack);
  });

  test('DELETE /v1/devices/{deviceId}: 204 for one\'s own device, then 404', async () => {
    const a = await phone();
    const b = await phone();
    const res = await api().delete(`/v1/devices/${b.deviceId}`).set(a.headers);
    expect(res.status).toBe(204);
    expectToMatchSpec(res, 'delete', '/v1/devices/{deviceId}');
    const gone = await api().delete(`/v1/devices/${b.deviceId}`).set(a.headers);
    expect(gone.status).toBe(404);
    expectToMatchSpec(gone, 'delete', '/v1/devices/{deviceId}');
    const after = await api().get('/v1/devices').set(b.headers);
    expect(after.status).toBe(401); // removing a device ends its sign-in
    expectToMatchSpec(after, 'get', '/v1/devices');
    const t = await signIn(ctx, ALICE.username, ALICE.password, { device_id: b.deviceId });
    const unregistered = await api().get('/v1/devices').set({ ...b.headers, Authorization: bearer(t.access_token) });
    expect(unregistered.body.code).toBe('deviceNotRegistered');
    expectToMatchSpec(unregistered, 'get', '/v1/devices');
  });
});

// ---- sync and app changes (protocol §4–§6) ---------------------------------------------------------------------

const FOLDER_SYNC = '/v1/folders/sync';
const ITEM_SYNC = '/v1/folders/{folderId}/items/sync';
const FOLDERS = '/v1/folders';
const FOLDER = '/v1/folders/{folderId}';
const ITEM = '/v1/items/{itemId}';
const MOVE = '/v1/items/{itemId}/move';
const BATCH = '/v1/batch';

/** A user of their own (so folder and item counts are exactly what a test makes), signed in on a registered device. */
interface MailUser {
  username: string;
  password: string;
  userId: string;
  deviceId: string;
  /** The device record id (what the admin API uses). */
  deviceRecordId: string;
  headers: Record<string, string>;
  folder(kind: FolderKind): string;
}

let mailUserSerial = 0;
async function mailUser(): Promise<MailUser> {
  const username = `mailer${++mailUserSerial}`;
  const password = `${username}-password-1`;
  const user = await ctx.users.addUser({ username, password, role: 'user' });
  const deviceId = newDeviceId();
  const t = await signIn(ctx, username, password, { device_id: deviceId });
  const headers = { Authorization: bearer(t.access_token), 'X-Device-Id': deviceId };
  const reg = await api().post('/v1/devices').set(headers).send({ friendlyName: 'sync contract test' });
  expect(reg.status).toBe(201);
  // The well-known folders' ids never change: read once, so tests name them without a round trip.
  const wellKnown = new Map((await ctx.store.folders.listByUser(user.id)).map((f) => [f.kind, f.id]));
  return {
    username,
    password,
    userId: user.id,
    deviceId,
    deviceRecordId: reg.body.id,
    headers,
    folder: (kind) => wellKnown.get(kind)!,
  };
}
/** Another registered device of the same user. */
async function secondDevice(u: MailUser): Promise<Record<string, string>> {
  const deviceId = newDeviceId();
  const t = await signIn(ctx, u.username, u.password, { device_id: deviceId });
  const headers = { Authorization: bearer(t.access_token), 'X-Device-Id': deviceId };
  expect((await api().post('/v1/devices').set(headers).send({})).status).toBe(201);
  return headers;
}
/** A fresh access token for the same device (after the clock moved past the old one's expiry). */
async function signInAgain(u: MailUser): Promise<void> {
  const t = await signIn(ctx, u.username, u.password, { device_id: u.deviceId });
  u.headers = { ...u.headers, Authorization: bearer(t.access_token) };
}

let receivedAt = Date.UTC(2026, 2, 1, 8);
/** Delivers a message straight into the store (one minute newer than the previous one). */
function deliver(u: MailUser, folderId: string, over: Partial<NewItem> = {}) {
  receivedAt += 60_000;
  return ctx.store.items.create(
    {
      userId: u.userId,
      folderId,
      type: 'email',
      receivedAt,
      subject: `Message ${receivedAt}`,
      from: { name: 'Bob Builder', address: 'bob@example.test' },
      preview: 'Can we fix it?',
      ...over,
    },
    ctx.clock.now(),
  );
}

const ITEM_SCHEMA: Record<string, string> = { email: 'EmailItem', event: 'EventItem', contact: 'ContactItem' };
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Every member of an item (and of its parts) is one the document names. */
function expectDocumentedItem(item: Json): void {
  expectDocumentedMembers(item, ITEM_SCHEMA[item.type]!);
  if (item.body) expectDocumentedMembers(item.body, 'ItemBody');
  for (const a of item.attachments ?? []) expectDocumentedMembers(a, 'AttachmentSummary');
}

/** One item sync page, checked against the document (and for one id at most once per page). */
async function itemSync(u: MailUser, folderId: string, query: Record<string, string | number> = {}): Promise<Json> {
  const qs = new URLSearchParams(Object.entries(query).map(([k, v]): [string, string] => [k, String(v)])).toString();
  const res = await api().get(`/v1/folders/${folderId}/items/sync${qs ? `?${qs}` : ''}`).set(u.headers);
  expect(res.status).toBe(200);
  expectToMatchSpec(res, 'get', ITEM_SYNC);
  const page = res.body as Json;
  expectDocumentedMembers(page, 'ItemSyncPage');
  expectDocumentedMembers(page.window, 'SyncWindow');
  page.created.forEach(expectDocumentedItem);
  for (const p of page.updated) expectDocumentedMembers(p, 'ItemPatch');
  for (const r of page.removed) expectDocumentedMembers(r, 'RemovedItem');
  const ids = [...page.created, ...page.updated, ...page.removed].map((e: Json) => e.id);
  expect(new Set(ids).size).toBe(ids.length);
  if (page.moreAvailable) expect(page.token).not.toBe(query.token);
  return page;
}

/** Follows item sync pages to `moreAvailable: false`, applying them to `held`; returns the final page. */
async function itemSyncToEnd(u: MailUser, folderId: string, held: Map<string, Json>, query: Record<string, string | number> = {}) {
  let q = { ...query };
  let pages = 0;
  for (;;) {
    const page = await itemSync(u, folderId, q);
    pages++;
    for (const r of page.removed) held.delete(r.id);
    for (const c of page.created) held.set(c.id, c);
    for (const p of page.updated) held.set(p.id, { ...held.get(p.id), ...p });
    if (!page.moreAvailable) return { page, pages };
    const { loadMore: _l, ...rest } = q;
    q = { ...rest, token: page.token };
  }
}

async function folderSync(u: MailUser, query: Record<string, string | number> = {}): Promise<Json> {
  const qs = new URLSearchParams(Object.entries(query).map(([k, v]): [string, string] => [k, String(v)])).toString();
  const res = await api().get(`${FOLDER_SYNC}${qs ? `?${qs}` : ''}`).set(u.headers);
  expect(res.status).toBe(200);
  expectToMatchSpec(res, 'get', FOLDER_SYNC);
  expectDocumentedMembers(res.body, 'FolderSyncPage');
  for (const f of [...res.body.created, ...res.body.updated]) expectDocumentedMembers(f, 'Folder');
  return res.body;
}

/** A token with one character of its payload changed (its MAC no longer matches). */
function altered(token: string): string {
  const [v, payload, mac] = token.split('.') as [string, string, string];
  const i = Math.floor(payload.length / 2);
  return `${v}.${payload.slice(0, i)}${payload[i] === 'A' ? 'B' : 'A'}${payload.slice(i + 1)}.${mac}`;
}

describe('(b) sync: GET /v1/folders/sync and folder changes', () => {
  test('initial hierarchy sync (whole, and paged), then created, updated and deleted folders', async () => {
    const u = await mailUser();
    const initial = await folderSync(u);
    expect(initial).toMatchObject({ moreAvailable: false, updated: [], deleted: [] });
    expect(initial.created.map((f: Json) => f.kind).sort()).toEqual(
      ['archive', 'calendar', 'contacts', 'deletedItems', 'drafts', 'inbox', 'junkEmail', 'outbox', 'sentItems'],
    );
    const head = await api().head(FOLDER_SYNC).set(u.headers);
    expect(head.status).toBe(200);
    expectToMatchSpec(head, 'head', FOLDER_SYNC);

    // Paged: every page but the last says moreAvailable, with a token that moved on.
    const seen: string[] = [];
    let page = await folderSync(u, { maxChanges: 4 });
    seen.push(...page.created.map((f: Json) => f.id));
    while (page.moreAvailable) {
      const token: string = page.token;
      page = await folderSync(u, { maxChanges: 4, token });
      expect(page.token).not.toBe(token);
      seen.push(...page.created.map((f: Json) => f.id));
    }
    expect(seen.sort()).toEqual(initial.created.map((f: Json) => f.id).sort());

    const created = await api().post(FOLDERS).set(u.headers).send({ displayName: '  Projects ' });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ parentId: null, displayName: 'Projects', kind: 'mail', totalCount: 0, unreadCount: 0 });
    expectToMatchSpec(created, 'post', FOLDERS);
    expectDocumentedMembers(created.body, 'Folder');
    const projects: string = created.body.id;
    const child = await api().post(FOLDERS).set(u.headers).send({ displayName: '2026', parentId: projects });
    expect(child.status).toBe(201);
    expect(child.body.parentId).toBe(projects);
    expectToMatchSpec(child, 'post', FOLDERS);
    await deliver(u, u.folder('inbox')); // changes the inbox's counts

    const next = await folderSync(u, { token: initial.token });
    expect(next.created.map((f: Json) => f.id).sort()).toEqual([projects, child.body.id].sort());
    expect(next.updated).toEqual([expect.objectContaining({ id: u.folder('inbox'), totalCount: 1, unreadCount: 1 })]);
    expect(next.deleted).toEqual([]);

    const renamed = await api().patch(`/v1/folders/${projects}`).set(u.headers).send({ displayName: 'Projects 2026' });
    expect(renamed.status).toBe(200);
    expect(renamed.body).toMatchObject({ id: projects, displayName: 'Projects 2026' });
    expectToMatchSpec(renamed, 'patch', FOLDER);
    const moved = await api().patch(`/v1/folders/${child.body.id}`).set(u.headers).send({ parentId: null, displayName: 'Q1' });
    expect(moved.status).toBe(200);
    expect(moved.body).toMatchObject({ id: child.body.id, parentId: null, displayName: 'Q1' });
    expectToMatchSpec(moved, 'patch', FOLDER);
    const back = await api().patch(`/v1/folders/${child.body.id}`).set(u.headers).send({ parentId: projects });
    expect(back.status).toBe(200);
    expectToMatchSpec(back, 'patch', FOLDER);

    const changed = await folderSync(u, { token: next.token });
    expect(changed.created).toEqual([]);
    expect(changed.updated.map((f: Json) => f.id).sort()).toEqual([projects, child.body.id].sort());

    // Deleting a folder deletes its subfolders (and their items) too.
    await deliver(u, child.body.id);
    const deleted = await api().delete(`/v1/folders/${projects}`).set(u.headers);
    expect(deleted.status).toBe(204);
    expectToMatchSpec(deleted, 'delete', FOLDER);
    const gone = await folderSync(u, { token: changed.token });
    expect(gone.deleted.sort()).toEqual([projects, child.body.id].sort());
    const quiet = await folderSync(u, { token: gone.token });
    expect(quiet).toMatchObject({ moreAvailable: false, created: [], updated: [], deleted: [] });
  });

  test('folder changes: 400 for bad bodies, duplicate names, bad parents and cycles; 404; 409 folderProtected; 415', async () => {
    const u = await mailUser();
    const a = await api().post(FOLDERS).set(u.headers).send({ displayName: 'Alpha' });
    expect(a.status).toBe(201);
    const b = await api().post(FOLDERS).set(u.headers).send({ displayName: 'Beta', parentId: a.body.id });
    expect(b.status).toBe(201);

    const badCreates: Array<[object, string]> = [
      [{ displayName: 'alpha' }, 'displayName'], // siblings' names are unique regardless of case
      [{ displayName: '   ' }, 'displayName'],
      [{ displayName: 'x\u0001y' }, 'displayName'],
      [{ displayName: 'x'.repeat(256) }, 'displayName'],
      [{}, 'displayName'],
      [{ displayName: 'Gamma', color: 'red' }, '(root)'],
      [{ displayName: 'Gamma', parentId: 'no-such-folder' }, 'parentId'],
      [{ displayName: 'Gamma', parentId: u.folder('calendar') }, 'parentId'],
    ];
    for (const [body, field] of badCreates) {
      const res = await api().post(FOLDERS).set(u.headers).send(body);
      expect({ body, status: res.status, fields: res.body.errors?.map((e: Json) => e.field) }).toEqual({ body, status: 400, fields: expect.arrayContaining([field]) });
      expectToMatchSpec(res, 'post', FOLDERS);
    }
    const badUpdates: Array<[string, object]> = [
      [a.body.id, { parentId: b.body.id }], // under its own child
      [a.body.id, { parentId: a.body.id }],
      [a.body.id, {}],
      [b.body.id, { displayName: 'Alpha', parentId: null }], // Alpha exists at the top level
      [a.body.id, { kind: 'inbox' }],
    ];
    for (const [id, body] of badUpdates) {
      const res = await api().patch(`/v1/folders/${id}`).set(u.headers).send(body);
      expect({ body, status: res.status }).toEqual({ body, status: 400 });
      expectToMatchSpec(res, 'patch', FOLDER);
    }

    for (const kind of ['inbox', 'deletedItems', 'calendar'] as const) {
      const rename = await api().patch(`/v1/folders/${u.folder(kind)}`).set(u.headers).send({ displayName: 'Mine' });
      expect({ kind, status: rename.status, code: rename.body.code }).toEqual({ kind, status: 409, code: 'folderProtected' });
      expectToMatchSpec(rename, 'patch', FOLDER);
      const del = await api().delete(`/v1/folders/${u.folder(kind)}`).set(u.headers);
      expect({ kind, status: del.status, code: del.body.code }).toEqual({ kind, status: 409, code: 'folderProtected' });
      expectToMatchSpec(del, 'delete', FOLDER);
    }

    const stranger = await mailUser();
    for (const id of ['no-such-folder', stranger.folder('inbox')]) {
      const patch = await api().patch(`/v1/folders/${id}`).set(u.headers).send({ displayName: 'Mine' });
      expect({ id, status: patch.status, code: patch.body.code }).toEqual({ id, status: 404, code: 'folderNotFound' });
      expectToMatchSpec(patch, 'patch', FOLDER);
      const del = await api().delete(`/v1/folders/${id}`).set(u.headers);
      expect({ id, status: del.status, code: del.body.code }).toEqual({ id, status: 404, code: 'folderNotFound' });
      expectToMatchSpec(del, 'delete', FOLDER);
    }

    const formBody = await api().post(FOLDERS).set(u.headers).type('form').send({ displayName: 'Gamma' });
    expect(formBody.status).toBe(415);
    expectToMatchSpec(formBody, 'post', FOLDERS);
    const formPatch = await api().patch(`/v1/folders/${a.body.id}`).set(u.headers).type('form').send({ displayName: 'Gamma' });
    expect(formPatch.status).toBe(415);
    expectToMatchSpec(formPatch, 'patch', FOLDER);
    const big = await api().post(FOLDERS).set(u.headers).send({ displayName: 'x'.repeat(ctx.config.maxRequestBytes) });
    expect(big.status).toBe(413);
    expectToMatchSpec(big, 'post', FOLDERS);
    const anonymous = await api().get(FOLDER_SYNC);
    expect(anonymous.status).toBe(401);
    expectToMatchSpec(anonymous, 'get', FOLDER_SYNC);
    // An unbound token without X-Device-Id names no device (a bound one is served as its device).
    const unbound = await signIn(ctx, ALICE.username, ALICE.password);
    const unregistered = await api().get(FOLDER_SYNC).set('Authorization', bearer(unbound.access_token));
    expect(unregistered.status).toBe(403);
    expectToMatchSpec(unregistered, 'get', FOLDER_SYNC);
  });

  test('GET /v1/folders/sync: 400 for bad parameters; 400 invalidToken for forged, altered and foreign tokens', async () => {
    const u = await mailUser();
    const { token } = await folderSync(u);
    for (const q of ['maxChanges=0', 'maxChanges=513', 'maxChanges=ten', 'token=', `token=a&token=b`]) {
      const res = await api().get(`${FOLDER_SYNC}?${q}`).set(u.headers);
      expect({ q, status: res.status, code: res.body.code }).toEqual({ q, status: 400, code: 'invalidRequest' });
      expectToMatchSpec(res, 'get', FOLDER_SYNC);
    }
    const itemToken = (await itemSync(u, u.folder('inbox'))).token;
    const otherDevice = await secondDevice(u);
    const foreign = [
      ['forged', 'not-a-token', u.headers],
      ['forged with the right shape', 'p1.e30.AAAAAAAAAAAAAAAAAAAAAA', u.headers],
      ['altered', altered(token), u.headers],
      ['an item token', itemToken, u.headers],
      ["another device's", token, otherDevice],
      ["another user's", token, (await mailUser()).headers],
    ] as const;
    for (const [what, t, headers] of foreign) {
      const res = await api().get(FOLDER_SYNC).query({ token: t }).set(headers);
      expect({ what, status: res.status, code: res.body.code }).toEqual({ what, status: 400, code: 'invalidToken' });
      expectToMatchSpec(res, 'get', FOLDER_SYNC);
      expectDocumentedMembers(res.body, 'Problem');
    }
  });
});

describe('(b) sync: GET /v1/folders/{folderId}/items/sync', () => {
  test('initial and incremental sync of a mail folder: created, updated, removed (deleted, moved); bodies; retries; a quiet poll', async () => {
    const u = await mailUser();
    const inbox = u.folder('inbox');
    const archive = u.folder('archive');
    const m1 = await deliver(u, inbox, {
      subject: 'Quarterly numbers',
      to: [{ name: 'Carol', address: 'carol@example.test' }],
      cc: [{ name: 'Dave', address: 'dave@example.test' }],
      replyTo: [{ name: 'Bob (work)', address: 'bob@work.example.test' }],
      sentAt: receivedAt - 5_000,
      importance: 'high',
      categories: ['Finance'],
      conversationId: 'conv-1',
      internetMessageId: '<q1@example.test>',
      bodyHtml: '<p>Grüße — the numbers are in.</p>',
      attachments: [
        { name: 'q1.pdf', contentType: 'application/pdf', isInline: false, contentId: null, content: Buffer.from('%PDF-1.7') },
        { name: 'logo.png', contentType: 'image/png', isInline: true, contentId: 'logo@x', content: Buffer.from([0x89, 0x50]) },
      ],
    });
    const m2 = await deliver(u, inbox, { bodyText: 'short', isRead: true });
    const m3 = await deliver(u, inbox, { from: null });

    const withBodies = await itemSync(u, inbox, { bodyBytes: 12 });
    expect(withBodies).toMatchObject({ moreAvailable: false, updated: [], removed: [], window: { size: 500, max: 1000, itemsInFolder: 3, hasOlder: false } });
    expect(withBodies.created.map((i: Json) => i.id)).toEqual([m3.id, m2.id, m1.id]); // newest first
    const first = withBodies.created[2];
    expect(first).toMatchObject({ type: 'email', folderId: inbox, hasAttachments: true, body: { contentType: 'html', truncated: true } });
    expect(Buffer.byteLength(first.body.content)).toBeLessThanOrEqual(12);
    expect(withBodies.created[1].body).toEqual({ contentType: 'text', content: 'short', truncated: false });

    const initial = await itemSync(u, inbox);
    expect(initial.created.every((i: Json) => i.body === undefined)).toBe(true);

    // Changes of every kind: a delivery, an edit from the app, a delete for good, a move.
    const m4 = await deliver(u, inbox);
    const flag = await api().patch(`/v1/items/${m2.id}`).set(u.headers).send({ isFlagged: true });
    expect(flag.status).toBe(200);
    expect((await api().delete(`/v1/items/${m3.id}?permanent=true`).set(u.headers)).status).toBe(204);
    expect((await api().post(`/v1/items/${m1.id}/move`).set(u.headers).send({ destinationFolderId: archive })).status).toBe(200);

    const inc = await itemSync(u, inbox, { token: initial.token });
    expect(inc.created.map((i: Json) => i.id)).toEqual([m4.id]);
    expect(inc.updated).toEqual([{ id: m2.id, isFlagged: true, isRead: true, categories: [], inferenceClassification: 'focused', changeKey: flag.body.changeKey }]);
    expect(inc.removed).toEqual(expect.arrayContaining([{ id: m3.id, reason: 'deleted' }, { id: m1.id, reason: 'moved' }]));
    expect(inc.removed).toHaveLength(2);
    expect(inc.window).toEqual({ size: 500, max: 1000, itemsInFolder: 2, hasOlder: false });

    // Retrying a token is safe: the same answer again.
    const retry = await itemSync(u, inbox, { token: initial.token });
    expect({ created: retry.created, updated: retry.updated, removed: retry.removed }).toEqual({ created: inc.created, updated: inc.updated, removed: inc.removed });
    // Nothing changed since: an empty page.
    const quiet = await itemSync(u, inbox, { token: inc.token });
    expect(quiet).toMatchObject({ moreAvailable: false, created: [], updated: [], removed: [] });
    // The moved item arrives in its new folder with the same id.
    const moved = await itemSync(u, archive);
    expect(moved.created).toEqual([expect.objectContaining({ id: m1.id, folderId: archive, categories: ['Finance'] })]);

    // Paged: one entry per page, each with an advanced token, converging on what the inbox holds.
    const held = new Map<string, Json>();
    const { pages } = await itemSyncToEnd(u, inbox, held, { maxChanges: 1 });
    expect(pages).toBe(2);
    expect([...held.keys()].sort()).toEqual([m2.id, m4.id].sort());
    const head = await api().head(`/v1/folders/${inbox}/items/sync`).set(u.headers);
    expect(head.status).toBe(200);
    expectToMatchSpec(head, 'head', ITEM_SYNC);
  });

  test('the window: the newest 500, loadMore to 1000, new mail evicts the oldest, an extended window is trimmed after 24 h', async () => {
    const u = await mailUser();
    const folder = await api().post(FOLDERS).set(u.headers).send({ displayName: 'Bulk' });
    expect(folder.status).toBe(201);
    const bulk: string = folder.body.id;
    const items = [];
    for (let i = 0; i < 502; i++) items.push(await deliver(u, bulk)); // oldest first

    const held = new Map<string, Json>();
    const initial = await itemSyncToEnd(u, bulk, held, { maxChanges: 512 });
    expect(initial.page.window).toEqual({ size: 500, max: 1000, itemsInFolder: 502, hasOlder: true });
    expect(held.size).toBe(500);
    expect(held.has(items[0]!.id) || held.has(items[1]!.id)).toBe(false);

    // A new message pushes the oldest held one out: evicted, not deleted.
    const newest = await deliver(u, bulk);
    const pushed = await itemSync(u, bulk, { token: initial.page.token });
    expect(pushed.created.map((i: Json) => i.id)).toEqual([newest.id]);
    expect(pushed.removed).toEqual([{ id: items[2]!.id, reason: 'evicted' }]);
    expect(pushed.window).toEqual({ size: 500, max: 1000, itemsInFolder: 503, hasOlder: true });

    // Load more: the window grows by 500 (to the max), and the three older items arrive.
    const more = await itemSync(u, bulk, { token: pushed.token, loadMore: 1 });
    expect(more.created.map((i: Json) => i.id).sort()).toEqual([items[0]!.id, items[1]!.id, items[2]!.id].sort());
    expect(more.window).toEqual({ size: 1000, max: 1000, itemsInFolder: 503, hasOlder: false });
    const again = await itemSync(u, bulk, { token: more.token, loadMore: 'true' });
    expect(again.window.size).toBe(1000);
    expect(again.created).toEqual([]);

    // After the trim interval the window shrinks back to 500: the dropped items are evicted.
    ctx.clock.advance(ctx.config.windowTrimAfter * 1000 + 1000);
    await signInAgain(u); // the old access token has expired meanwhile
    const trimmed = await itemSync(u, bulk, { token: again.token });
    expect(trimmed.removed.map((r: Json) => r.id).sort()).toEqual([items[0]!.id, items[1]!.id, items[2]!.id].sort());
    expect(trimmed.removed.every((r: Json) => r.reason === 'evicted')).toBe(true);
    expect(trimmed.window).toEqual({ size: 500, max: 1000, itemsInFolder: 503, hasOlder: true });

    // A deletion inside the window pulls the next older item in.
    expect((await api().delete(`/v1/items/${newest.id}?permanent=1`).set(u.headers)).status).toBe(204);
    const pulled = await itemSync(u, bulk, { token: trimmed.token });
    expect(pulled.removed).toEqual([{ id: newest.id, reason: 'deleted' }]);
    expect(pulled.created.map((i: Json) => i.id)).toEqual([items[2]!.id]);
  });

  test('calendar and contacts folders have no window; events and contacts are items of their own type', async () => {
    const u = await mailUser();
    const calendar = u.folder('calendar');
    const contacts = u.folder('contacts');
    const event = (start: string, subject: string) =>
      ctx.store.items.create(
        {
          userId: u.userId,
          folderId: calendar,
          type: 'event',
          receivedAt: Date.parse(start),
          subject,
          isRead: true,
          data: {
            start,
            end: new Date(Date.parse(start) + 3600_000).toISOString(),
            timeZone: 'Europe/Berlin',
            location: 'Room Orion',
            organizer: { name: 'Carol Nguyen', address: 'carol@example.test' },
            attendees: [{ name: 'Dave Kim', address: 'dave@example.test', response: 'accepted' }],
            isAllDay: false,
            isCancelled: false,
          },
        },
        ctx.clock.now(),
      );
    const e1 = await event('2026-04-01T09:00:00.000Z', 'Sprint planning');
    const e2 = await event('2026-04-02T09:00:00.000Z', 'Retro');
    const c1 = await ctx.store.items.create(
      {
        userId: u.userId,
        folderId: contacts,
        type: 'contact',
        receivedAt: Date.UTC(2026, 0, 1),
        subject: 'Carol Nguyen',
        isRead: true,
        data: {
          givenName: 'Carol',
          surname: 'Nguyen',
          emailAddresses: [{ name: 'Carol Nguyen', address: 'carol@example.test' }],
          phones: [{ type: 'mobile', number: '+1 555 0100' }],
          company: 'Example',
          jobTitle: 'Product Manager',
        },
      },
      ctx.clock.now(),
    );

    const cal = await itemSync(u, calendar, { loadMore: 1, bodyBytes: 100 });
    expect(cal.window).toEqual({ size: 2, max: null, itemsInFolder: 2, hasOlder: false });
    expect(cal.created.map((i: Json) => i.id).sort()).toEqual([e1.id, e2.id].sort());
    expect(cal.created[0]).toMatchObject({ type: 'event', folderId: calendar, location: 'Room Orion', isAllDay: false });
    const con = await itemSync(u, contacts);
    expect(con.created).toEqual([expect.objectContaining({ id: c1.id, type: 'contact', displayName: 'Carol Nguyen', givenName: 'Carol' })]);

    // Events have no isRead: their `updated` entries carry isFlagged, categories and changeKey.
    const flag = await api().patch(`/v1/items/${e1.id}`).set(u.headers).send({ isFlagged: true, categories: ['Team'] });
    expect(flag.status).toBe(200);
    expect(flag.body).toMatchObject({ id: e1.id, type: 'event', isFlagged: true, categories: ['Team'] });
    expectToMatchSpec(flag, 'patch', ITEM);
    expectDocumentedItem(flag.body);
    const read = await api().patch(`/v1/items/${e1.id}`).set(u.headers).send({ isRead: true });
    expect(read.status).toBe(400);
    expectToMatchSpec(read, 'patch', ITEM);
    const inc = await itemSync(u, calendar, { token: cal.token });
    // An event's `updated` entry is the whole item (its content is edited as a whole).
    expect(inc.updated).toEqual([expect.objectContaining({ id: e1.id, type: 'event', subject: 'Sprint planning', isFlagged: true, categories: ['Team'], changeKey: flag.body.changeKey })]);

    // Events and contacts are deleted for good.
    const del = await api().delete(`/v1/items/${c1.id}`).set(u.headers);
    expect(del.status).toBe(204);
    expectToMatchSpec(del, 'delete', ITEM);
    expect((await itemSync(u, contacts, { token: con.token })).removed).toEqual([{ id: c1.id, reason: 'deleted' }]);
  });

  test('400 for bad parameters; 400 invalidToken for forged, altered and foreign tokens; 404 folderNotFound', async () => {
    const u = await mailUser();
    const inbox = u.folder('inbox');
    await deliver(u, inbox);
    const { token } = await itemSync(u, inbox);
    const url = `/v1/folders/${inbox}/items/sync`;
    for (const q of ['maxChanges=0', 'maxChanges=513', 'loadMore=yes', 'bodyBytes=65537', 'bodyBytes=-1', 'token=', 'token=a&token=b']) {
      const res = await api().get(`${url}?${q}`).set(u.headers);
      expect({ q, status: res.status, code: res.body.code }).toEqual({ q, status: 400, code: 'invalidRequest' });
      expectToMatchSpec(res, 'get', ITEM_SYNC);
    }
    const archiveToken = (await itemSync(u, u.folder('archive'))).token;
    const hierarchyToken = (await folderSync(u)).token;
    const otherDevice = await secondDevice(u);
    const other = await mailUser();
    const cases = [
      ['forged', 'not-a-token', u.headers, inbox],
      ['of an old version', `p0.${token.split('.').slice(1).join('.')}`, u.headers, inbox],
      ['altered', altered(token), u.headers, inbox],
      ["another folder's", archiveToken, u.headers, inbox],
      ['a hierarchy token', hierarchyToken, u.headers, inbox],
      ["another device's", token, otherDevice, inbox],
      ["another user's", token, other.headers, other.folder('inbox')],
    ] as const;
    for (const [what, t, headers, folderId] of cases) {
      const res = await api().get(`/v1/folders/${folderId}/items/sync`).query({ token: t }).set(headers);
      expect({ what, status: res.status, code: res.body.code }).toEqual({ what, status: 400, code: 'invalidToken' });
      expectToMatchSpec(res, 'get', ITEM_SYNC);
    }
    for (const folderId of ['no-such-folder', other.folder('inbox')]) {
      const res = await api().get(`/v1/folders/${folderId}/items/sync`).set(u.headers);
      expect({ folderId, status: res.status, code: res.body.code }).toEqual({ folderId, status: 404, code: 'folderNotFound' });
      expectToMatchSpec(res, 'get', ITEM_SYNC);
    }
  });
});

describe('(b) item changes: PATCH, move and DELETE /v1/items/{itemId}', () => {
  test('PATCH: 200 with the item; If-Match; 412 conflict with the server\'s item; 400; 404; 415', async () => {
    const u = await mailUser();
    const m = await deliver(u, u.folder('inbox'));
    const res = await api().patch(`/v1/items/${m.id}`).set(u.headers).send({ isRead: true, categories: ['Blue', 'Red'], inferenceClassification: 'other' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: m.id, isRead: true, categories: ['Blue', 'Red'], inferenceClassification: 'other' });
    expect(res.body.changeKey).not.toBe(m.changeKey);
    expectToMatchSpec(res, 'patch', ITEM);
    expectDocumentedItem(res.body);

    const current: string = res.body.changeKey;
    const nothing = await api().patch(`/v1/items/${m.id}`).set(u.headers).send({});
    expect(nothing.status).toBe(200);
    expect(nothing.body.changeKey).toBe(current); // a patch that changes nothing writes nothing
    expectToMatchSpec(nothing, 'patch', ITEM);
    const quoted = await api().patch(`/v1/items/${m.id}`).set(u.headers).set('If-Match', `"${current}"`).send({ isFlagged: true });
    expect(quoted.status).toBe(200);
    expectToMatchSpec(quoted, 'patch', ITEM);

    const stale = await api().patch(`/v1/items/${m.id}`).set(u.headers).set('If-Match', current).send({ isRead: false });
    expect(stale.status).toBe(412);
    expect(stale.body).toMatchObject({ code: 'conflict', item: { id: m.id, isRead: true, isFlagged: true, changeKey: quoted.body.changeKey } });
    expectToMatchSpec(stale, 'patch', ITEM);
    expectDocumentedMembers(stale.body, 'ConflictProblem');
    expectDocumentedItem(stale.body.item);

    for (const body of [{ isRead: 'yes' }, { color: 'red' }, { categories: [''] }, { categories: ['x\u0007'] }, { inferenceClassification: 'spam' }]) {
      const bad = await api().patch(`/v1/items/${m.id}`).set(u.headers).send(body);
      expect({ body, status: bad.status }).toEqual({ body, status: 400 });
      expectToMatchSpec(bad, 'patch', ITEM);
    }
    const longIfMatch = await api().patch(`/v1/items/${m.id}`).set(u.headers).set('If-Match', 'x'.repeat(65)).send({ isRead: true });
    expect(longIfMatch.status).toBe(400);
    expectToMatchSpec(longIfMatch, 'patch', ITEM);
    const other = await mailUser();
    for (const id of ['no-such-item', (await deliver(other, other.folder('inbox'))).id]) {
      const missing = await api().patch(`/v1/items/${id}`).set(u.headers).send({ isRead: true });
      expect({ id, status: missing.status, code: missing.body.code }).toEqual({ id, status: 404, code: 'itemNotFound' });
      expectToMatchSpec(missing, 'patch', ITEM);
    }
    const formBody = await api().patch(`/v1/items/${m.id}`).set(u.headers).type('form').send({ isRead: 'true' });
    expect(formBody.status).toBe(415);
    expectToMatchSpec(formBody, 'patch', ITEM);
  });

  test('move: 200 with the same id; 400 for the wrong kind of folder or a bad body; 404 item or folder', async () => {
    const u = await mailUser();
    const m = await deliver(u, u.folder('inbox'));
    const url = `/v1/items/${m.id}/move`;
    const res = await api().post(url).set(u.headers).send({ destinationFolderId: u.folder('archive') });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: m.id, folderId: u.folder('archive') });
    expectToMatchSpec(res, 'post', MOVE);
    expectDocumentedItem(res.body);
    const same = await api().post(url).set(u.headers).send({ destinationFolderId: u.folder('archive') });
    expect(same.status).toBe(200);
    expect(same.body.changeKey).toBe(res.body.changeKey);
    expectToMatchSpec(same, 'post', MOVE);

    for (const body of [{ destinationFolderId: u.folder('calendar') }, { destinationFolderId: u.folder('contacts') }, {}, { destinationFolderId: '' }, { destinationFolderId: u.folder('inbox'), extra: 1 }]) {
      const bad = await api().post(url).set(u.headers).send(body);
      expect({ body, status: bad.status }).toEqual({ body, status: 400 });
      expectToMatchSpec(bad, 'post', MOVE);
    }
    const noFolder = await api().post(url).set(u.headers).send({ destinationFolderId: 'no-such-folder' });
    expect(noFolder.body).toMatchObject({ status: 404, code: 'folderNotFound' });
    expectToMatchSpec(noFolder, 'post', MOVE);
    const noItem = await api().post('/v1/items/no-such-item/move').set(u.headers).send({ destinationFolderId: u.folder('archive') });
    expect(noItem.body).toMatchObject({ status: 404, code: 'itemNotFound' });
    expectToMatchSpec(noItem, 'post', MOVE);
  });

  test('DELETE: 200 moved to Deleted Items, then 204 for good; permanent; 400; 404', async () => {
    const u = await mailUser();
    const m = await deliver(u, u.folder('inbox'));
    const first = await api().delete(`/v1/items/${m.id}`).set(u.headers);
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ id: m.id, folderId: u.folder('deletedItems') });
    expectToMatchSpec(first, 'delete', ITEM);
    expectDocumentedItem(first.body);
    const second = await api().delete(`/v1/items/${m.id}`).set(u.headers);
    expect(second.status).toBe(204);
    expect(second.text).toBe('');
    expectToMatchSpec(second, 'delete', ITEM);
    const gone = await api().delete(`/v1/items/${m.id}`).set(u.headers);
    expect(gone.body).toMatchObject({ status: 404, code: 'itemNotFound' });
    expectToMatchSpec(gone, 'delete', ITEM);

    const p = await deliver(u, u.folder('inbox'));
    const bad = await api().delete(`/v1/items/${p.id}?permanent=maybe`).set(u.headers);
    expect(bad.status).toBe(400);
    expectToMatchSpec(bad, 'delete', ITEM);
    const permanent = await api().delete(`/v1/items/${p.id}?permanent=true`).set(u.headers);
    expect(permanent.status).toBe(204);
    expectToMatchSpec(permanent, 'delete', ITEM);
    expect(await ctx.store.items.byId(u.userId, p.id)).toBeUndefined();
  });
});

describe('(b) POST /v1/batch', () => {
  test('mixed successes and failures in one 200; a repeated batch replays its successes; 400 for a bad batch', async () => {
    const u = await mailUser();
    const inbox = u.folder('inbox');
    const [a, b, c, d] = [await deliver(u, inbox), await deliver(u, inbox), await deliver(u, inbox), await deliver(u, inbox)];
    const e = await ctx.store.items.create({ userId: u.userId, folderId: u.folder('calendar'), type: 'event', receivedAt, subject: 'Standup', isRead: true, data: {} }, ctx.clock.now());
    const operations = [
      { opId: 'op-update', op: 'update', id: a.id, isRead: true, categories: ['Done'] },
      { opId: 'op-stale', op: 'update', id: b.id, ifMatch: 'stale', isFlagged: true },
      { opId: 'op-move', op: 'move', id: c.id, destinationFolderId: u.folder('archive') },
      { opId: 'op-move-nowhere', op: 'move', id: d.id, destinationFolderId: 'no-such-folder' },
      { opId: 'op-move-event', op: 'move', id: e.id, destinationFolderId: inbox },
      { opId: 'op-trash', op: 'delete', id: d.id },
      { opId: 'op-delete-event', op: 'delete', id: e.id },
      { opId: 'op-missing', op: 'delete', id: 'no-such-item' },
      { opId: 'op-unknown', op: 'explode', id: a.id },
      { op: 'update', id: a.id },
    ];
    const res = await api().post(BATCH).set(u.headers).send({ operations });
    expect(res.status).toBe(200);
    expectToMatchSpec(res, 'post', BATCH);
    expectDocumentedMembers(res.body, 'BatchResponse');
    const summary = (body: Json) => body.results.map((r: Json) => [r.opId, r.status, r.problem?.code ?? null, r.replayed ?? false]);
    expect(summary(res.body)).toEqual([
      ['op-update', 200, null, false],
      ['op-stale', 412, 'conflict', false],
      ['op-move', 200, null, false],
      ['op-move-nowhere', 404, 'folderNotFound', false],
      ['op-move-event', 400, 'invalidRequest', false],
      ['op-trash', 200, null, false],
      ['op-delete-event', 204, null, false],
      ['op-missing', 404, 'itemNotFound', false],
      ['op-unknown', 400, 'invalidRequest', false],
      ['#9', 400, 'invalidRequest', false],
    ]);
    for (const r of res.body.results) {
      expectDocumentedMembers(r, r.problem ? 'BatchFailure' : 'BatchSuccess');
      if (r.item) expectDocumentedItem(r.item);
    }
    expect(res.body.results[5].item).toMatchObject({ id: d.id, folderId: u.folder('deletedItems') });

    // The same batch again: the successes are not applied again but answered as they were, with `replayed`.
    const again = await api().post(BATCH).set(u.headers).send({ operations });
    expect(again.status).toBe(200);
    expectToMatchSpec(again, 'post', BATCH);
    // Failures run again (the event is gone by now, so moving it is 404 this time).
    expect(summary(again.body)).toEqual([
      ['op-update', 200, null, true],
      ['op-stale', 412, 'conflict', false],
      ['op-move', 200, null, true],
      ['op-move-nowhere', 404, 'folderNotFound', false],
      ['op-move-event', 404, 'itemNotFound', false],
      ['op-trash', 200, null, true],
      ['op-delete-event', 204, null, true],
      ['op-missing', 404, 'itemNotFound', false],
      ['op-unknown', 400, 'invalidRequest', false],
      ['#9', 400, 'invalidRequest', false],
    ]);
    expect(again.body.results[0].item).toEqual(res.body.results[0].item);
    expect((await ctx.store.items.byId(u.userId, d.id))!.folderId).toBe(u.folder('deletedItems')); // not deleted for good by the replay

    const reused = await api().post(BATCH).set(u.headers).send({ operations: [{ opId: 'op-update', op: 'update', id: a.id, isFlagged: true }] });
    expect(summary(reused.body)).toEqual([['op-update', 400, 'invalidRequest', false]]);
    expectToMatchSpec(reused, 'post', BATCH);

    const tooMany = Array.from({ length: 501 }, (_, i) => ({ opId: `bulk-${i}`, op: 'update', id: a.id, isRead: true }));
    for (const body of [{}, { operations: [] }, { operations: tooMany }, { operations: [operations[0]], atomic: true }, { operations: 'all' }]) {
      const bad = await api().post(BATCH).set(u.headers).send(body);
      expect(bad.status).toBe(400);
      expectToMatchSpec(bad, 'post', BATCH);
    }
    const formBody = await api().post(BATCH).set(u.headers).type('form').send({ operations: 'x' });
    expect(formBody.status).toBe(415);
    expectToMatchSpec(formBody, 'post', BATCH);
  });
});

describe('(b) Idempotency-Key on mutating calls', () => {
  test('a replay answers the first answer with Idempotent-Replayed and changes nothing; another request with the key is 400', async () => {
    const u = await mailUser();
    const key = (name: string) => `${u.username}-${name}-6f1c2a`;

    const create = () => api().post(FOLDERS).set(u.headers).set('Idempotency-Key', key('create')).send({ displayName: 'Receipts' });
    const first = await create();
    expect(first.status).toBe(201);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    expectToMatchSpec(first, 'post', FOLDERS);
    const replay = await create();
    expect(replay.status).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toEqual(first.body);
    expectToMatchSpec(replay, 'post', FOLDERS);
    expect((await ctx.store.folders.listByUser(u.userId)).filter((f) => f.displayName === 'Receipts')).toHaveLength(1);
    const reused = await api().post(FOLDERS).set(u.headers).set('Idempotency-Key', key('create')).send({ displayName: 'Invoices' });
    expect(reused.status).toBe(400);
    expect(reused.body.errors).toEqual([{ field: 'Idempotency-Key', message: 'reused' }]);
    expectToMatchSpec(reused, 'post', FOLDERS);

    const m = await deliver(u, u.folder('inbox'));
    const calls = [
      ['patch', ITEM, () => api().patch(`/v1/items/${m.id}`).send({ isFlagged: true }), 200],
      ['post', MOVE, () => api().post(`/v1/items/${m.id}/move`).send({ destinationFolderId: u.folder('archive') }), 200],
      ['post', BATCH, () => api().post(BATCH).send({ operations: [{ opId: key('batch-op'), op: 'update', id: m.id, isRead: true }] }), 200],
      ['patch', FOLDER, () => api().patch(`/v1/folders/${first.body.id}`).send({ displayName: 'Receipts 2026' }), 200],
      ['delete', ITEM, () => api().delete(`/v1/items/${m.id}?permanent=true`), 204],
      ['delete', FOLDER, () => api().delete(`/v1/folders/${first.body.id}`), 204],
    ] as const;
    for (const [method, template, call, status] of calls) {
      const k = key(`${method}-${template}`);
      const once = await call().set(u.headers).set('Idempotency-Key', k);
      expect({ template, status: once.status }).toEqual({ template, status });
      expectToMatchSpec(once, method, template);
      const twice = await call().set(u.headers).set('Idempotency-Key', k);
      expect({ template, status: twice.status, replayed: twice.headers['idempotent-replayed'], body: twice.text }).toEqual({ template, status, replayed: 'true', body: once.text });
      expectToMatchSpec(twice, method, template);
    }

    // Failures are not kept: the retry runs again.
    const missing = () => api().patch('/v1/items/no-such-item').set(u.headers).set('Idempotency-Key', key('missing')).send({ isRead: true });
    for (const res of [await missing(), await missing()]) {
      expect(res.status).toBe(404);
      expect(res.headers['idempotent-replayed']).toBeUndefined();
      expectToMatchSpec(res, 'patch', ITEM);
    }
    for (const bad of ['has space', 'x'.repeat(201)]) {
      const res = await api().post(FOLDERS).set(u.headers).set('Idempotency-Key', bad).send({ displayName: 'Malformed' });
      expect(res.status).toBe(400);
      expect(res.body.errors).toEqual([{ field: 'Idempotency-Key', message: 'malformed' }]);
      expectToMatchSpec(res, 'post', FOLDERS);
    }
  });
});

describe('(b) sync: 410 resyncRequired', () => {
  test('deviceReset after an administrator\'s resync, mailboxReset after a mailbox reset, tokenExpired after the history is purged', async () => {
    const admin = await asAdmin();
    const u = await mailUser();
    const inbox = u.folder('inbox');
    await deliver(u, inbox);
    const tokens = async () => ({ item: (await itemSync(u, inbox)).token as string, hierarchy: (await folderSync(u)).token as string });
    const expectGone = async (t: { item: string; hierarchy: string }, reason: string) => {
      const item = await api().get(`/v1/folders/${inbox}/items/sync`).query({ token: t.item }).set(u.headers);
      expect({ status: item.status, code: item.body.code, reason: item.body.reason }).toEqual({ status: 410, code: 'resyncRequired', reason });
      expectToMatchSpec(item, 'get', ITEM_SYNC);
      expectDocumentedMembers(item.body, 'Problem');
      const hierarchy = await api().get(FOLDER_SYNC).query({ token: t.hierarchy }).set(u.headers);
      expect({ status: hierarchy.status, code: hierarchy.body.code, reason: hierarchy.body.reason }).toEqual({ status: 410, code: 'resyncRequired', reason });
      expectToMatchSpec(hierarchy, 'get', FOLDER_SYNC);
    };

    const beforeResync = await tokens();
    const resync = await api().post(`/admin/v1/devices/${u.deviceRecordId}/resync`).set(admin);
    expect(resync.status).toBe(200);
    expectToMatchSpec(resync, 'post', '/admin/v1/devices/{id}/{action}');
    await expectGone(beforeResync, 'deviceReset');

    const beforeReset = await tokens(); // a sync from no token works again at once
    await ctx.store.mailboxes.resetEpoch(u.userId);
    await expectGone(beforeReset, 'mailboxReset');

    const beforePurge = await tokens();
    await deliver(u, inbox);
    await api().post(FOLDERS).set(u.headers).send({ displayName: 'After the token' }).expect(201);
    ctx.clock.advance(1000);
    await ctx.store.mailboxes.purgeHistory(ctx.clock.now());
    await expectGone(beforePurge, 'tokenExpired');
  });
});

// ---- push: the event stream and the long-poll ------------------------------------------------------------------

describe('(b) push: GET /v1/events and POST /v1/ping', () => {
  const EVENTS = '/v1/events';
  const PING = '/v1/ping';

  test('GET /v1/events: the stream\'s headers and its bare id and `changed` event are what the document says', async () => {
    const u = await mailUser();
    const inbox = u.folder('inbox');
    const server = http.createServer(ctx.app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      // supertest would wait for the end of a stream that never ends: read it from the socket instead.
      const { res, text } = await new Promise<{ res: http.IncomingMessage; text: string }>((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, path: EVENTS, headers: { ...u.headers, 'Accept-Encoding': 'gzip' }, agent: false }, (res) => {
          let received = '';
          const timer = setTimeout(() => reject(new Error(`no event in 3 s: ${JSON.stringify(received)}`)), 3000);
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            received += chunk;
            if (received.startsWith('id: ') && !received.includes('event: ') && received.endsWith('\n\n')) deliver(u, inbox).catch(reject);
            if (/event: changed\ndata: .*\n\n$/.test(received)) {
              clearTimeout(timer);
              req.destroy();
              resolve({ res, text: received });
            }
          });
        });
        req.once('error', reject);
      });
      const fake = { status: res.statusCode, headers: res.headers, text, body: {} } as unknown as request.Response;
      expectToMatchSpec(fake, 'get', EVENTS);
      const data = JSON.parse(/data: (.*)\n/.exec(text)![1]!);
      expect(validateAt(pointer('components', 'schemas', 'ChangedEvent'), data)).toEqual([]);
      expectDocumentedMembers(data, 'ChangedEvent');
      expect(data).toEqual({ folders: { [inbox]: { unreadCount: 1 } }, hierarchyChanged: false });
    } finally {
      await new Promise((r) => server.close(r));
    }
    const head = await api().head(EVENTS).set(u.headers);
    expect(head.status).toBe(200);
    expectToMatchSpec(head, 'head', EVENTS);
    const anonymous = await api().get(EVENTS);
    expect(anonymous.status).toBe(401);
    expectToMatchSpec(anonymous, 'get', EVENTS);
  });

  test('the documented stream pattern rejects what is not an event stream', () => {
    const at = pointer('paths', EVENTS, 'get', 'responses', '200', 'content', 'text/event-stream', 'schema');
    expect(validateAt(at, 'id: 4\n\nid: 5\nevent: changed\ndata: {"folders":{},"hierarchyChanged":true}\n\n: hb\n\n')).toEqual([]);
    for (const bad of ['id: 4\n', 'event: changed\ndata: {}\n\n', 'id: x\n\n', 'id: 5\nevent: other\ndata: {}\n\n']) {
      expect(validateAt(at, bad)).not.toEqual([]);
    }
  });

  test('POST /v1/ping: 200, and 400 / 404 / 415 as documented', async () => {
    const u = await mailUser();
    const inbox = u.folder('inbox');
    const ok = await api().post(PING).set(u.headers).send({ folderIds: [inbox], heartbeatSeconds: 60 });
    expect(ok.status).toBe(200); // this device never synced the inbox: it counts as changed, at once
    expect(ok.body).toEqual({ changed: [inbox] });
    expectToMatchSpec(ok, 'post', PING);
    expectDocumentedMembers(ok.body, 'PingResponse');
    for (const body of [{ folderIds: [inbox], heartbeatSeconds: 1741 }, { folderIds: [inbox] }, { folderIds: 'inbox', heartbeatSeconds: 60 }]) {
      const bad = await api().post(PING).set(u.headers).send(body);
      expect(bad.status).toBe(400);
      expectToMatchSpec(bad, 'post', PING);
    }
    const missing = await api().post(PING).set(u.headers).send({ folderIds: ['not-a-folder'], heartbeatSeconds: 60 });
    expect(missing.status).toBe(404);
    expectToMatchSpec(missing, 'post', PING);
    const text = await api().post(PING).set(u.headers).type('text/plain').send('inbox');
    expect(text.status).toBe(415);
    expectToMatchSpec(text, 'post', PING);
  });
});

// ---- the admin API ---------------------------------------------------------------------------------------------

describe('(b) the admin API', () => {
  let admin: Record<string, string>;
  beforeAll(async () => {
    admin = await asAdmin();
  });
  const adminOps = () => specOperations().filter((o) => o.path.startsWith('/admin/'));
  const urlOf = (template: string) => template.replace('{id}', 'some-record-id').replace('{action}', 'block');

  test('every admin operation: 401 without a token, 403 forbidden with a user\'s token', async () => {
    const ops = adminOps();
    expect(ops.length).toBe(62); // issue 21: +10 (users, tenant, regions)
    const { access_token } = await signIn(ctx, ALICE.username, ALICE.password, { device_id: DEVICE });
    const user = { Authorization: bearer(access_token), 'X-Device-Id': DEVICE };
    for (const { method, path: template } of ops) {
      const m = method as 'get' | 'post' | 'put' | 'delete';
      const anonymous = await api()[m](urlOf(template));
      expect({ method, template, status: anonymous.status }).toEqual({ method, template, status: 401 });
      expectToMatchSpec(anonymous, method, template);
      const forbidden = await api()[m](urlOf(template)).set(user).send(m === 'put' || m === 'post' ? { accessState: 'blocked' } : undefined);
      expect({ method, template, status: forbidden.status, code: forbidden.body.code }).toEqual({ method, template, status: 403, code: 'forbidden' });
      expectToMatchSpec(forbidden, method, template);
    }
    expect(await ctx.store.deviceAccess.defaultState((await ctx.store.users.byUsername('alice'))!.tenantId)).toBe('allowed');
  });

  test('GET /admin/v1/devices: the inventory, filters, 400 for bad filters', async () => {
    const p = await phone({ clientType: 'InventoryClient', deviceModel: 'Inventory Model 1' });
    const L = '/admin/v1/devices';
    const all = await api().get(L).set(admin);
    expect(all.status).toBe(200);
    expect(all.body.devices).toContainEqual(expect.objectContaining({ id: p.id, username: 'alice', deviceId: p.deviceId }));
    expectToMatchSpec(all, 'get', L);
    for (const d of all.body.devices) expectDocumentedMembers(d, 'AdminDevice');
    for (const q of ['user=alice&clientType=InventoryClient', 'deviceModel=Inventory%20Model%201&accessState=allowed', `user=${(await ctx.store.users.byUsername('alice'))!.id}&clientType=InventoryClient`]) {
      const res = await api().get(`${L}?${q}`).set(admin);
      expect({ q, ids: res.body.devices.map((d: { id: string }) => d.id) }).toEqual({ q, ids: [p.id] });
      expectToMatchSpec(res, 'get', L);
    }
    const nobody = await api().get(`${L}?user=nobody`).set(admin);
    expect(nobody.body).toEqual({ devices: [], total: 0, nextCursor: null });
    expectToMatchSpec(nobody, 'get', L);
    for (const q of ['accessState=banana', 'user=a&user=b', 'color=red']) {
      const res = await api().get(`${L}?${q}`).set(admin);
      expect({ q, status: res.status }).toEqual({ q, status: 400 });
      expectToMatchSpec(res, 'get', L);
    }
    const head = await api().head(L).set(admin);
    expect(head.status).toBe(200);
    expectToMatchSpec(head, 'head', L);
  });

  test('GET /admin/v1/devices/{id}: 200, 404', async () => {
    const p = await phone();
    const T = '/admin/v1/devices/{id}';
    const res = await api().get(`/admin/v1/devices/${p.id}`).set(admin);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: p.id, deviceId: p.deviceId, userId: (await ctx.store.users.byUsername('alice'))!.id });
    expectToMatchSpec(res, 'get', T);
    expectDocumentedMembers(res.body, 'Device');
    const missing = await api().get('/admin/v1/devices/no-such-record').set(admin);
    expect(missing.status).toBe(404);
    expectToMatchSpec(missing, 'get', T);
  });

  test('POST /admin/v1/devices/{id}/{action}: each action 200; unknown action or device 404', async () => {
    const p = await phone();
    const T = '/admin/v1/devices/{id}/{action}';
    const expected: Record<string, object> = {
      block: { accessState: 'blocked', accessStateReason: 'individual' },
      allow: { accessState: 'allowed', accessStateReason: 'individual' },
      quarantine: { accessState: 'quarantined', accessStateReason: 'individual' },
      release: { accessState: 'allowed', accessStateReason: 'individual' },
      resync: { accessState: 'allowed', wipeState: 'none' },
      wipe: { wipeState: 'pending' },
    };
    const epoch = (await ctx.store.devices.byId(p.id))!.epoch;
    for (const [action, state] of Object.entries(expected)) {
      const res = await api().post(`/admin/v1/devices/${p.id}/${action}`).set(admin);
      expect({ action, status: res.status, body: res.body }).toEqual({ action, status: 200, body: expect.objectContaining(state) });
      expectToMatchSpec(res, 'post', T);
    }
    expect((await ctx.store.devices.byId(p.id))!.epoch).toBe(epoch + 1);
    for (const url of [`/admin/v1/devices/${p.id}/explode`, '/admin/v1/devices/no-such-record/block']) {
      const res = await api().post(url).set(admin);
      expect({ url, status: res.status }).toEqual({ url, status: 404 });
      expectToMatchSpec(res, 'post', T);
    }
  });

  test('DELETE /admin/v1/devices/{id}: 204, then 404', async () => {
    const p = await phone();
    const res = await api().delete(`/admin/v1/devices/${p.id}`).set(admin);
    expect(res.status).toBe(204);
    expectToMatchSpec(res, 'delete', '/admin/v1/devices/{id}');
    const gone = await api().delete(`/admin/v1/devices/${p.id}`).set(admin);
    expect(gone.status).toBe(404);
    expectToMatchSpec(gone, 'delete', '/admin/v1/devices/{id}');
  });

  test('device access rules: list, create, read, replace, delete; 400, 404, 415', async () => {
    const C = '/admin/v1/device-access-rules';
    const T = '/admin/v1/device-access-rules/{id}';
    const bad = await api().post(C).set(admin).send({ field: 'color', match: 'fuzzy', value: '', accessState: 'maybe', extra: true });
    expect(bad.status).toBe(400);
    expect(bad.body.errors.map((e: { field: string }) => e.field).sort()).toEqual(['(root)', 'accessState', 'field', 'match', 'value']);
    expectToMatchSpec(bad, 'post', C);
    const form415 = await api().post(C).set(admin).type('form').send({ field: 'deviceOS' });
    expect(form415.status).toBe(415);
    expectToMatchSpec(form415, 'post', C);

    const input = { field: 'deviceOS', match: 'prefix', value: 'ContractOS 1', accessState: 'blocked', description: 'contract test' };
    const created = await api().post(C).set(admin).send(input);
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject(input);
    expectToMatchSpec(created, 'post', C);
    expectDocumentedMembers(created.body, 'DeviceAccessRule');
    const url = `${C}/${created.body.id}`;

    const list = await api().get(C).set(admin);
    expect(list.status).toBe(200);
    expect(list.body.rules.map((r: { id: string }) => r.id)).toContain(created.body.id);
    expectToMatchSpec(list, 'get', C);
    const one = await api().get(url).set(admin);
    expect(one.status).toBe(200);
    expectToMatchSpec(one, 'get', T);

    const replaced = await api().put(url).set(admin).send({ field: 'userAgent', match: 'exact', value: 'ContractAgent/1', accessState: 'quarantined' });
    expect(replaced.status).toBe(200);
    expect(replaced.body).toMatchObject({ id: created.body.id, field: 'userAgent', description: '' });
    expectToMatchSpec(replaced, 'put', T);
    const badPut = await api().put(url).set(admin).send({ field: 'userAgent' });
    expect(badPut.status).toBe(400);
    expectToMatchSpec(badPut, 'put', T);

    const deleted = await api().delete(url).set(admin);
    expect(deleted.status).toBe(204);
    expectToMatchSpec(deleted, 'delete', T);
    const calls = [
      ['get', api().get(url)],
      ['put', api().put(url).send(input)],
      ['delete', api().delete(url)],
    ] as const;
    for (const [method, pending] of calls) {
      const res = await pending.set(admin);
      expect({ method, status: res.status }).toEqual({ method, status: 404 });
      expectToMatchSpec(res, method, T);
    }
  });

  test('the organisation default: GET, PUT; 400 for a bad body', async () => {
    const T = '/admin/v1/device-access-default';
    const get = await api().get(T).set(admin);
    expect(get.status).toBe(200);
    expect(get.body).toEqual({ accessState: 'allowed' });
    expectToMatchSpec(get, 'get', T);
    const put = await api().put(T).set(admin).send({ accessState: 'allowed' });
    expect(put.status).toBe(200);
    expectToMatchSpec(put, 'put', T);
    for (const body of [{ accessState: 'nope' }, { accessState: 'allowed', extra: 1 }, {}]) {
      const res = await api().put(T).set(admin).send(body);
      expect(res.status).toBe(400);
      expectToMatchSpec(res, 'put', T);
    }
  });

  test('GET /admin/v1/audit: pages newest first with next; 400 for bad parameters', async () => {
    const A = '/admin/v1/audit';
    const first = await api().get(`${A}?limit=2`).set(admin);
    expect(first.status).toBe(200);
    expect(first.body.entries).toHaveLength(2);
    expect(first.body.next).toBe(first.body.entries[1].seq);
    expectToMatchSpec(first, 'get', A);
    for (const e of first.body.entries) expectDocumentedMembers(e, 'AuditEntry');
    const older = await api().get(`${A}?limit=2&before=${first.body.next}`).set(admin);
    expect(older.status).toBe(200);
    expect(older.body.entries[0].seq).toBeLessThan(first.body.next);
    expectToMatchSpec(older, 'get', A);
    const all = await api().get(`${A}?limit=500`).set(admin);
    expect(all.body.next).toBeNull();
    expect(all.body.entries.map((e: { action: string }) => e.action)).toEqual(expect.arrayContaining(['device.wipe', 'rule.create', 'default.set']));
    expectToMatchSpec(all, 'get', A);
    for (const q of ['limit=0', 'limit=501', 'before=abc', 'page=2']) {
      const res = await api().get(`${A}?${q}`).set(admin);
      expect({ q, status: res.status }).toEqual({ q, status: 400 });
      expectToMatchSpec(res, 'get', A);
    }
  });
});

describe('(b) operational endpoints', () => {
  test('GET and HEAD /healthz', async () => {
    const res = await api().get('/healthz');
    expect(res.status).toBe(200);
    expectToMatchSpec(res, 'get', '/healthz');
    const head = await api().head('/healthz');
    expect(head.status).toBe(200);
    expectToMatchSpec(head, 'head', '/healthz');
  });

  test('GET /readyz: 200, and 503 with Retry-After when the store does not answer', async () => {
    const ok = await api().get('/readyz');
    expect(ok.status).toBe(200);
    expectToMatchSpec(ok, 'get', '/readyz');
    const spy = jest.spyOn(ctx.store, 'ping').mockRejectedValue(new Error('disk gone'));
    try {
      const down = await api().get('/readyz');
      expect(down.status).toBe(503);
      expectToMatchSpec(down, 'get', '/readyz');
    } finally {
      spy.mockRestore();
    }
  });

  test('GET /metrics is not part of the API (its own listener): 404 problem+json, and not in the document', async () => {
    const res = await api().get('/metrics');
    expect(res.status).toBe(404);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(loadSpec().paths['/metrics']).toBeUndefined();
  });

  test('responses under 1 KiB are not compressed', async () => {
    const res = await api().get('/healthz').set('Accept-Encoding', 'gzip');
    expect(res.headers['content-encoding']).toBeUndefined();
    expectToMatchSpec(res, 'get', '/healthz');
  });

  test('GET /openapi.yaml', async () => {
    const res = await api().get('/openapi.yaml').buffer(true);
    expect(res.status).toBe(200);
    expectToMatchSpec(res, 'get', '/openapi.yaml');
  });
});

describe('(b) request ids, unknown routes and wrong methods', () => {
  test('a sane X-Request-Id is echoed (also in problem bodies); an insane one is replaced', async () => {
    const sane = await api().get('/nope').set('X-Request-Id', 'client-req.42:a_b');
    expect(sane.headers['x-request-id']).toBe('client-req.42:a_b');
    expect(sane.body.requestId).toBe('client-req.42:a_b');
    expectToMatchSpec(sane, 'get', '/nope');
    const insane = await api().get('/healthz').set('X-Request-Id', 'has spaces and <tags>');
    expect(insane.headers['x-request-id']).not.toBe('has spaces and <tags>');
    expectToMatchSpec(insane, 'get', '/healthz');
  });

  test('unknown routes: 404 (401 under /v1 without a token)', async () => {
    for (const [method, url] of [['get', '/nope'], ['post', '/oauth2/nope'], ['delete', '/.well-known/nope']] as const) {
      const res = await api()[method](url);
      expect(res.status).toBe(404);
      expectToMatchSpec(res, method, url);
    }
    const authed = await api().get('/v1/nope').set(await onDevice());
    expect(authed.status).toBe(404);
    expectToMatchSpec(authed, 'get', '/v1/nope');
    const anonymous = await api().get('/v1/nope');
    expect(anonymous.status).toBe(401);
    expectToMatchSpec(anonymous, 'get', '/v1/nope');
  });

  test('every documented path answers 405 with the documented methods in Allow for any other method', async () => {
    const headers = await onDevice();
    const admin = await asAdmin(); // /admin paths check the role before routing
    const doc = loadSpec();
    const provider = new Set(providerOperations().map((o) => o.path));
    const paths = Object.keys(doc.paths).filter((p) => !provider.has(p));
    expect(paths.length).toBeGreaterThan(0);
    for (const p of paths) {
      const documented = HTTP_METHODS.filter((m) => doc.paths[p][m]);
      const candidates = ['get', 'post', 'put', 'patch', 'delete'] as const;
      const wrong = candidates.filter((m) => !documented.includes(m));
      for (const method of [...wrong, 'options' as const]) {
        const res = await api()[method](p).set(p.startsWith('/admin/') ? admin : headers);
        expect({ method, path: p, status: res.status }).toEqual({ method, path: p, status: 405 });
        expectToMatchSpec(res, method, p);
      }
    }
  });

  test("the identity provider's paths answer 404 (plain text, no Allow) for a method they do not have, as the introduction says", async () => {
    const doc = loadSpec();
    const paths = [...new Set(providerOperations().map((o) => o.path))];
    expect(paths.length).toBeGreaterThanOrEqual(6);
    for (const p of paths) {
      const documented = HTTP_METHODS.filter((m) => doc.paths[p][m]);
      for (const method of (['get', 'post', 'put', 'patch', 'delete', 'options'] as const).filter((m) => !documented.includes(m))) {
        const res = await api()[method](p);
        expect({ method, path: p, status: res.status, type: res.headers['content-type'], allow: res.headers.allow }).toEqual({
          method,
          path: p,
          status: 404,
          type: expect.stringMatching(/^text\/plain/),
          allow: undefined,
        });
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// (c) the document lists exactly the routes the app answers
// ---------------------------------------------------------------------------------------------------------------

interface RouteLayer {
  route?: { path: unknown; methods: Record<string, boolean | undefined> };
  handle?: { stack?: RouteLayer[] };
  name?: string;
  slash?: boolean;
  rawPath?: unknown;
}

/** Walks the express 5 router stack: every (method, path) a route declares, nested routers included. */
function appOperations(app: Express): Array<{ method: string; path: string }> {
  const out: Array<{ method: string; path: string }> = [];
  const walk = (stack: RouteLayer[], prefix: string) => {
    for (const layer of stack) {
      if (layer.route) {
        const paths = Array.isArray(layer.route.path) ? layer.route.path : [layer.route.path];
        const methods = Object.keys(layer.route.methods).filter((m) => m !== '_all' && layer.route!.methods[m]);
        // A route with nothing but `.all()` is an endpoint of its own, not a 405 catch-all: it must be documented.
        if (methods.length === 0 && layer.route.methods._all) methods.push('all');
        for (const p of paths) {
          if (typeof p !== 'string') throw new Error(`route path ${String(p)} is not a string; this check cannot compare it`);
          for (const method of methods) out.push({ method, path: prefix + p });
        }
      } else if (layer.handle?.stack) {
        const mount = layer.slash ? '' : layer.rawPath;
        if (typeof mount !== 'string') throw new Error(`router mounted at ${String(mount)}: this check cannot compare it`);
        walk(layer.handle.stack, prefix + mount.replace(/\/$/, ''));
      } else if (layer.name === 'mounted_app') {
        throw new Error('a mounted sub-app: its routes cannot be listed; mount a Router instead');
      }
    }
  };
  walk((app as unknown as { router: { stack: RouteLayer[] } }).router.stack, '');
  return out;
}

/** `/v1/items/:id` → `/v1/items/{id}` */
const toTemplate = (p: string) => p.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
const key = (o: { method: string; path: string }) => `${o.method.toUpperCase()} ${o.path}`;

/**
 * The sign-in pages of the identity provider (server/identity/interactions.ts) and their stylesheet: HTML for people,
 * which the document's introduction describes (*Sign-in*) but does not list as operations of the API.
 */
const SIGN_IN_PAGES = /^\/(interaction\/|idp\/static\/)/;

describe('(c) route table', () => {
  test("the operations in the document, but for the identity provider's, are exactly the routes of the app (but for the sign-in pages)", () => {
    const fromApp = new Set(appOperations(ctx.app).filter((o) => !SIGN_IN_PAGES.test(o.path)).map((o) => key({ method: o.method, path: toTemplate(o.path) })));
    const provider = new Set(providerOperations().map(key));
    const fromSpec = new Set(specOperations().map(key).filter((k) => !provider.has(k)));
    expect(fromApp.size).toBeGreaterThanOrEqual(9);
    const undocumented = [...fromApp].filter((k) => !fromSpec.has(k)).sort();
    const unrouted = [...fromSpec].filter((k) => !fromApp.has(k)).sort();
    expect({ undocumented, unrouted }).toEqual({ undocumented: [], unrouted: [] });
  });

  test('the walk sees routes of nested routers and ignores the 405 catch-alls and the implied HEAD', () => {
    const ops = appOperations(ctx.app);
    expect(ops).toContainEqual({ method: 'get', path: '/v1/session' });
    expect(ops).toContainEqual({ method: 'post', path: '/oauth2/token' });
    expect(ops.some((o) => o.method === 'head' || o.method === '_all' || o.method === 'all')).toBe(false);
  });

  test('what is set aside is the sign-in pages, which the introduction describes', () => {
    const pages = appOperations(ctx.app).filter((o) => SIGN_IN_PAGES.test(o.path));
    expect(pages).toContainEqual({ method: 'get', path: '/interaction/:uid' });
    expect(pages).toContainEqual({ method: 'post', path: '/interaction/:uid/login' });
    expect(pages.every((o) => o.method === 'get' || o.method === 'post')).toBe(true);
    expect(loadSpec().info.description).toContain('`/interaction/<uid>`');
  });

  test("every operation marked identity-provider is the provider's: no route of the table, and the provider answers it", async () => {
    const ops = providerOperations();
    expect(ops.map(key).sort()).toEqual(
      expect.arrayContaining(['GET /oauth2/authorize', 'POST /oauth2/device_authorization', 'POST /oauth2/introspect', 'GET /.well-known/openid-configuration', 'GET /.well-known/oauth-authorization-server', 'GET /.well-known/jwks.json']),
    );
    const routes = new Set(appOperations(ctx.app).map((o) => key({ method: o.method, path: toTemplate(o.path) })));
    for (const op of ops) {
      expect({ op: key(op), inRouteTable: routes.has(key(op)) }).toEqual({ op: key(op), inRouteTable: false });
      const res = op.method === 'post' ? await api().post(op.path).type('form').send('') : await api().get(op.path);
      // Pigeon's own 404 (no such route) would be problem+json; the provider answers with its own status and type.
      expect({ op: key(op), type: res.headers['content-type'] }).toEqual({ op: key(op), type: expect.not.stringMatching(/problem\+json/) });
      expect({ op: key(op), serverError: res.status >= 500 }).toEqual({ op: key(op), serverError: false });
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// (d) the served document
// ---------------------------------------------------------------------------------------------------------------

describe('(d) GET /openapi.yaml', () => {
  test.each([['identity'], ['gzip']])('serves exactly the bytes of schema/openapi.yaml (Accept-Encoding: %s)', async (encoding) => {
    const res = await api().get('/openapi.yaml').set('Accept-Encoding', encoding).responseType('blob'); // body as raw bytes
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/yaml/);
    expect(Buffer.isBuffer(res.body)).toBe(true);
    expect((res.body as Buffer).equals(fs.readFileSync(SPEC_FILE))).toBe(true);
  });
});
