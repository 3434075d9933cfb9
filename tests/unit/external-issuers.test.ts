/**
 * External trusted issuers against a real, independent IdP process (tests/helpers/external-idp.js) with its own
 * keys, and a second one that is not configured (an untrusted issuer). Users are resolved in a real SQLite store.
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  createExternalIssuers,
  externalOnlyPasswordHash,
  ExternalIssuerConfigError,
  ExternalUserRefused,
  InvalidExternalToken,
  isExternalOnlyPasswordHash,
  mapExternalScopes,
  parseExternalIssuers,
  resolveExternalUser,
  unverifiedIssuer,
  type ExternalIdentity,
  type ExternalIssuer,
  type ExternalIssuersOptions,
} from '../../server/auth/externalIssuers';
import { verifyPassword } from '../../server/identity/passwords';
import { openSqliteStore, type SqliteStore } from '../../server/store/sqlite';
import type { Tenant } from '../../server/store/types';
import { startExternalIdp, type ExternalIdp } from '../helpers/externalIdp';
import { tempDir } from '../helpers/testApp';

let idp: ExternalIdp;
let untrusted: ExternalIdp;
let dir: string;
let store: SqliteStore;
let acme: Tenant;
let globex: Tenant;

beforeAll(async () => {
  [idp, untrusted] = await Promise.all([startExternalIdp(), startExternalIdp()]);
  dir = tempDir('pigeon-external-');
  store = openSqliteStore(path.join(dir, 'pigeon.db'));
  acme = await store.tenants.create('Acme', Date.now());
  globex = await store.tenants.create('Globex', Date.now());
});

afterAll(async () => {
  await Promise.all([idp?.stop(), untrusted?.stop()]);
  await store?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** The trusted IdP's configuration, through the parser (as the server will read it). */
function config(overrides: Record<string, unknown> = {}): ExternalIssuer[] {
  return parseExternalIssuers(
    JSON.stringify({
      issuers: [{ issuer: idp.url, audience: ['pigeon', 'pigeon-web'], tenant: acme.id, adminScope: 'pigeon.admin', ...overrides }],
    }),
  );
}

function verifier(overrides: Record<string, unknown> = {}, options: Partial<ExternalIssuersOptions> = {}) {
  // No cooldown between JWKS fetches unless a test asks for one: rotation tests need the refetch at once.
  return createExternalIssuers({ issuers: config(overrides), now: () => Date.now(), jwks: { cooldownMs: 0 }, ...options });
}

/** The reason a verification was refused with (fails the test when it was not refused, or not with that type). */
async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof InvalidExternalToken) return err.reason;
    throw err;
  }
  throw new Error('the token was accepted');
}

const alice = { sub: 'kc-0001', email: 'Alice@Acme.example', name: 'Alice Liddell' };

describe('configuration', () => {
  test('defaults are filled in', () => {
    const [issuer] = parseExternalIssuers(JSON.stringify({ issuers: [{ issuer: 'https://sso.acme.example/realms/staff', audience: 'pigeon', tenant: 't1' }] }));
    expect(issuer).toEqual({
      issuer: 'https://sso.acme.example/realms/staff',
      audience: 'pigeon',
      tenant: 't1',
      usernameClaim: 'email',
      algorithms: ['RS256', 'ES256', 'EdDSA', 'PS256'],
      justInTime: false,
    });
  });

  test.each([
    ['HMAC algorithms', { algorithms: ['RS256', 'HS256'] }, /algorithms\.1: HS256 is never accepted/],
    ['none', { algorithms: ['none'] }, /algorithms\.0: none is never accepted/],
    ['an unknown algorithm', { algorithms: ['RS1'] }, /algorithms\.0: "RS1" is not supported/],
    ['plain http to a remote host', { issuer: 'http://sso.acme.example' }, /issuer: must use https/],
    ['plain http JWKS to a remote host', { jwksUri: 'http://sso.acme.example/certs' }, /jwksUri: must use https/],
    ['an issuer that is not a URL', { issuer: 'acme' }, /issuer: must be an absolute URL/],
    ['an empty audience list', { audience: [] }, /audience: must list at least one audience/],
    ['a missing tenant', { tenant: undefined }, /issuers\.0\.tenant/],
    ['an unknown username claim', { usernameClaim: 'nickname' }, /usernameClaim: must be one of email, preferred_username, upn, sub/],
    ['a misspelt key', { justInTIme: true }, /justInTIme/],
  ])('refuses %s, saying where', (_what, overrides, message) => {
    const entry = { issuer: 'https://sso.acme.example', audience: 'pigeon', tenant: 't1', ...overrides };
    expect(() => parseExternalIssuers(JSON.stringify({ issuers: [entry] }))).toThrow(message);
  });

  test('plain http is allowed for a loopback issuer, and the same issuer twice is refused', () => {
    expect(parseExternalIssuers(JSON.stringify({ issuers: [{ issuer: 'http://127.0.0.1:8080', audience: 'a', tenant: 't' }] }))).toHaveLength(1);
    const twice = { issuers: [{ issuer: 'https://a.example', audience: 'a', tenant: 't1' }, { issuer: 'https://a.example', audience: 'b', tenant: 't2' }] };
    expect(() => parseExternalIssuers(JSON.stringify(twice))).toThrow(/issuers\.1\.issuer: issuer https:\/\/a\.example is configured twice/);
  });

  test('text that is not JSON is refused with a typed error', () => {
    expect(() => parseExternalIssuers('{issuers: ')).toThrow(ExternalIssuerConfigError);
    expect(() => parseExternalIssuers('{issuers: ')).toThrow(/not valid JSON/);
  });
});

describe('verification', () => {
  test('a trusted token verifies and maps to the identity', async () => {
    const external = verifier();
    expect(external.handles(idp.url)).toBe(true);
    const token = await idp.mint({ claims: { ...alice, scope: 'openid profile', cnf: { jkt: 'thumbprint' } } });
    const identity = await external.verify(token);
    const payload = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number; jti: string };
    expect(identity).toEqual({
      issuer: idp.url,
      subject: 'kc-0001',
      username: 'alice@acme.example',
      tenantId: acme.id,
      scopes: ['mail'],
      expiresAt: payload.exp * 1000,
      jti: payload.jti,
      cnf: { jkt: 'thumbprint' },
      email: 'Alice@Acme.example',
      name: 'Alice Liddell',
    });
  });

  test.each(['PS256', 'ES256', 'EdDSA'])('%s tokens verify too', async (alg) => {
    const identity = await verifier().verify(await idp.mint({ alg, claims: alice }));
    expect(identity.subject).toBe('kc-0001');
  });

  test('the configured username claim is the username', async () => {
    const token = await idp.mint({ claims: { sub: 'S-9', preferred_username: 'BOB', upn: 'robert@acme.example' } });
    expect((await verifier({ usernameClaim: 'preferred_username' }).verify(token)).username).toBe('bob');
    expect((await verifier({ usernameClaim: 'upn' }).verify(token)).username).toBe('robert@acme.example');
    expect((await verifier({ usernameClaim: 'sub' }).verify(token)).username).toBe('s-9');
    expect(await refusal(verifier().verify(token))).toBe('missing_claim'); // no email claim
  });

  test('admin only with the configured admin scope, from scope or scp', async () => {
    const external = verifier();
    const viaScp = await external.verify(await idp.mint({ claims: { ...alice, scp: 'pigeon.admin mail.read' } }));
    expect(viaScp.scopes).toEqual(['mail', 'admin']);
    const viaScope = await external.verify(await idp.mint({ claims: { ...alice, scope: 'openid pigeon.admin' } }));
    expect(viaScope.scopes).toEqual(['mail', 'admin']);
    // `admin` as the IdP's own scope name means nothing: only the configured value grants it.
    const lookalike = await external.verify(await idp.mint({ claims: { ...alice, scope: 'admin' } }));
    expect(lookalike.scopes).toEqual(['mail']);
    // Reading only `scope`: an `scp` claim is ignored.
    const scopeOnly = verifier({ scopeClaim: 'scope' });
    expect((await scopeOnly.verify(await idp.mint({ claims: { ...alice, scp: 'pigeon.admin' } }))).scopes).toEqual(['mail']);
  });

  test('with a mail scope configured, a token without it grants nothing', async () => {
    const external = verifier({ mailScope: 'pigeon.mail' });
    expect(await refusal(external.verify(await idp.mint({ claims: { ...alice, scope: 'openid' } })))).toBe('insufficient_scope');
    expect((await external.verify(await idp.mint({ claims: { ...alice, scp: ['pigeon.mail'] } }))).scopes).toEqual(['mail']);
    expect(mapExternalScopes({ mailScope: 'm', adminScope: 'a' }, { scope: 'a m' })).toEqual(['mail', 'admin']);
    expect(mapExternalScopes({ mailScope: 'm', adminScope: 'a' }, { scope: 'a' })).toEqual(['admin']);
  });

  test('a token of an issuer that is not configured is refused', async () => {
    const external = verifier();
    const token = await untrusted.mint({ claims: alice });
    expect(unverifiedIssuer(token)).toBe(untrusted.url);
    expect(external.handles(untrusted.url)).toBe(false);
    expect(await refusal(external.verify(token))).toBe('unknown_issuer');
    expect((await untrusted.stats()).jwksFetches).toBe(0); // not even asked for its keys
  });

  test('an untrusted IdP claiming the trusted issuer is refused by the signature', async () => {
    const external = verifier();
    await external.verify(await idp.mint({ claims: alice })); // the trusted keys are known
    const forged = await untrusted.mint({ claims: alice, issuer: idp.url });
    expect(await refusal(external.verify(forged))).toBe('unknown_key');
    // Naming one of the trusted keys does not help: the signature does not match it.
    const trustedKid = JSON.parse(Buffer.from((await idp.mint({ claims: alice })).split('.')[0]!, 'base64url').toString()).kid;
    const named = await untrusted.mint({ claims: alice, issuer: idp.url, kid: trustedKid });
    expect(await refusal(external.verify(named))).toBe('bad_signature');
  });

  test('a token for another audience is refused', async () => {
    const token = await idp.mint({ claims: alice, audience: 'some-other-api' });
    expect(await refusal(verifier().verify(token))).toBe('wrong_audience');
    // Any of the configured audiences will do.
    expect((await verifier().verify(await idp.mint({ claims: alice, audience: 'pigeon-web' }))).subject).toBe('kc-0001');
  });

  test('alg confusion: HS256 keyed with the RSA public key, and none, are refused', async () => {
    const external = verifier();
    const hmac = await idp.mint({ alg: 'HS256', claims: alice });
    expect(await refusal(external.verify(hmac))).toBe('alg_not_allowed');
    const unsigned = await idp.mint({ alg: 'none', claims: alice });
    expect(unsigned.endsWith('.')).toBe(true);
    expect(await refusal(external.verify(unsigned))).toBe('alg_not_allowed');
    // An algorithm the IdP can sign with but the configuration does not list is refused the same way.
    const ecOnly = verifier({ algorithms: ['ES256'] });
    expect(await refusal(ecOnly.verify(await idp.mint({ alg: 'RS256', claims: alice })))).toBe('alg_not_allowed');
    expect((await ecOnly.verify(await idp.mint({ alg: 'ES256', claims: alice }))).subject).toBe('kc-0001');
  });

  test('expired tokens, missing time claims and tokens from the future are refused', async () => {
    const external = verifier();
    expect(await refusal(external.verify(await idp.mint({ claims: alice, expiresIn: -60 })))).toBe('expired');
    // Within the clock tolerance it is still good.
    expect((await external.verify(await idp.mint({ claims: alice, expiresIn: -2 }))).subject).toBe('kc-0001');
    expect(await refusal(external.verify(await idp.mint({ claims: alice, omit: ['exp'] })))).toBe('missing_claim');
    expect(await refusal(external.verify(await idp.mint({ claims: alice, omit: ['iat'] })))).toBe('missing_claim');
    expect(await refusal(external.verify(await idp.mint({ claims: { email: alice.email } })))).toBe('missing_claim'); // no sub
    const future = Math.floor(Date.now() / 1000) + 3600;
    expect(await refusal(external.verify(await idp.mint({ claims: { ...alice, iat: future } })))).toBe('not_yet_valid');
    // The verifier's clock decides, not the machine's.
    const late = verifier({}, { now: () => Date.now() + 3600_000 });
    expect(await refusal(late.verify(await idp.mint({ claims: alice })))).toBe('expired');
  });

  test('ID tokens and unverified addresses are refused', async () => {
    const external = verifier();
    expect(await refusal(external.verify(await idp.mint({ claims: { ...alice, typ: 'ID' } })))).toBe('not_access_token');
    expect(await refusal(external.verify(await idp.mint({ claims: alice, typ: 'dpop+jwt' })))).toBe('not_access_token');
    expect((await external.verify(await idp.mint({ claims: { ...alice, typ: 'Bearer' }, typ: 'at+jwt' }))).subject).toBe('kc-0001');
    expect(await refusal(external.verify(await idp.mint({ claims: { ...alice, email_verified: false } })))).toBe('unverified_email');
  });

  test('text that is not a JWT is refused as malformed', async () => {
    expect(await refusal(verifier().verify('not.a.jwt'))).toBe('malformed');
    expect(unverifiedIssuer('garbage')).toBeUndefined();
  });
});

describe('keys', () => {
  test('a key rotation is followed without recreating the verifier; a removed key is refused', async () => {
    const external = verifier();
    const before = await idp.mint({ claims: alice });
    await external.verify(before);
    const fetches = (await idp.stats()).jwksFetches;
    await external.verify(await idp.mint({ claims: alice })); // cached keys: no fetch
    expect((await idp.stats()).jwksFetches).toBe(fetches);

    const { kid, previous } = await idp.rotate();
    expect(kid).not.toBe(previous);
    const after = await idp.mint({ claims: alice });
    expect(JSON.parse(Buffer.from(after.split('.')[0]!, 'base64url').toString()).kid).toBe(kid);
    expect((await external.verify(after)).subject).toBe('kc-0001'); // unknown kid → refetch → found
    expect((await idp.stats()).jwksFetches).toBe(fetches + 1);
    // The old key is no longer published: a token it signed is refused (after the verifier looked again).
    expect(await refusal(external.verify(before))).toBe('unknown_key');
  });

  test('a retired key kept in the JWKS still verifies its tokens', async () => {
    const external = verifier();
    const before = await idp.mint({ claims: alice });
    await external.verify(before);
    await idp.rotate({ keep: true });
    expect((await external.verify(await idp.mint({ claims: alice }))).subject).toBe('kc-0001');
    expect((await external.verify(before)).subject).toBe('kc-0001');
  });

  test('unknown key ids do not make the verifier refetch within the cooldown', async () => {
    const external = verifier({}, { jwks: { cooldownMs: 60_000 } });
    await external.verify(await idp.mint({ claims: alice }));
    const fetches = (await idp.stats()).jwksFetches;
    for (const kid of ['nope-1', 'nope-2', 'nope-3']) {
      expect(await refusal(external.verify(await idp.mint({ claims: alice, kid })))).toBe('unknown_key');
    }
    expect((await idp.stats()).jwksFetches).toBe(fetches);
  });

  test('an unreachable IdP is reported as such, and not remembered once it is back', async () => {
    // Keys found through discovery (no jwksUri): both fetches go through the outage.
    const external = verifier();
    const token = await idp.mint({ claims: alice });
    await idp.settings({ outage: true });
    try {
      expect(await refusal(external.verify(token))).toBe('jwks_unreachable');
      expect(await refusal(external.verify(token))).toBe('jwks_unreachable');
    } finally {
      await idp.settings({ outage: false });
    }
    expect((await external.verify(token)).subject).toBe('kc-0001');

    // With a configured jwksUri, the key set itself is what fails and then recovers.
    const direct = verifier({ jwksUri: `${idp.url}/jwks` }, { jwks: { cooldownMs: 60_000 } });
    await idp.settings({ outage: true });
    try {
      expect(await refusal(direct.verify(token))).toBe('jwks_unreachable');
    } finally {
      await idp.settings({ outage: false });
    }
    expect((await direct.verify(token)).subject).toBe('kc-0001');
  });

  test('a JWKS address where nothing listens is unreachable, not an invalid token', async () => {
    const stopped = await startExternalIdp();
    await stopped.stop();
    const external = verifier({ jwksUri: `${stopped.url}/jwks` });
    expect(await refusal(external.verify(await idp.mint({ claims: alice })))).toBe('jwks_unreachable');
  });

  test('a discovery document naming another issuer is refused', async () => {
    const external = verifier();
    await idp.settings({ discoveryIssuer: 'https://evil.example' });
    try {
      expect(await refusal(external.verify(await idp.mint({ claims: alice })))).toBe('discovery_mismatch');
    } finally {
      await idp.settings({ discoveryIssuer: null });
    }
  });
});

describe('users', () => {
  const identity = (username: string, tenantId = acme.id): ExternalIdentity => ({
    issuer: 'https://sso.acme.example',
    subject: `sub-${username}`,
    username,
    tenantId,
    scopes: ['mail'],
    expiresAt: Date.now() + 60_000,
  });

  async function refusedFor(promise: Promise<unknown>): Promise<string> {
    try {
      await promise;
    } catch (err) {
      if (err instanceof ExternalUserRefused) return err.reason;
      throw err;
    }
    throw new Error('the user was admitted');
  }

  test('an existing user of the tenant is found by username, whatever its case', async () => {
    const carol = await store.users.create(
      { tenantId: acme.id, username: 'Carol@Acme.example', email: 'carol@acme.example', displayName: 'Carol', role: 'user', passwordHash: null },
      Date.now(),
    );
    const verified = await verifier().verify(await idp.mint({ claims: { sub: 'kc-carol', email: 'CAROL@acme.example' } }));
    expect((await resolveExternalUser(store, verified, false, Date.now())).id).toBe(carol.id);
  });

  test('without just-in-time creation, an unknown user is refused and nothing is created', async () => {
    const before = await store.users.count();
    expect(await refusedFor(resolveExternalUser(store, identity('dave@acme.example'), false, Date.now()))).toBe('unknown_user');
    expect(await store.users.count()).toBe(before);
  });

  test('with just-in-time creation, the user is created in the issuer tenant, with a mailbox and no usable password', async () => {
    const now = Date.now();
    const erin = { ...identity('erin@acme.example'), name: 'Erin' };
    const user = await resolveExternalUser(store, erin, true, now);
    expect(user).toMatchObject({ tenantId: acme.id, username: 'erin@acme.example', email: 'erin@acme.example', displayName: 'Erin', role: 'user', disabled: false });
    expect(await store.mailboxes.get(user.id)).toBeDefined();
    expect(isExternalOnlyPasswordHash(user.passwordHash)).toBe(true);
    expect(await verifyPassword('erin@acme.example', user.passwordHash)).toBe(false);
    expect(await verifyPassword('', user.passwordHash)).toBe(false);
    // The next sign-in finds the same user.
    expect((await resolveExternalUser(store, erin, true, now)).id).toBe(user.id);
  });

  test('a user of another tenant with the same username is not matched, nor shadowed by a new one', async () => {
    const frank = await store.users.create(
      { tenantId: globex.id, username: 'frank@shared.example', email: 'frank@shared.example', displayName: 'Frank', role: 'admin', passwordHash: null },
      Date.now(),
    );
    const before = await store.users.count();
    expect(await refusedFor(resolveExternalUser(store, identity('frank@shared.example', acme.id), false, Date.now()))).toBe('other_tenant');
    expect(await refusedFor(resolveExternalUser(store, identity('frank@shared.example', acme.id), true, Date.now()))).toBe('other_tenant');
    expect(await store.users.count()).toBe(before);
    // In its own tenant, it is matched.
    expect((await resolveExternalUser(store, identity('frank@shared.example', globex.id), false, Date.now())).id).toBe(frank.id);
  });

  test('a disabled user is refused', async () => {
    const gina = await store.users.create(
      { tenantId: acme.id, username: 'gina@acme.example', email: 'gina@acme.example', displayName: 'Gina', role: 'user', passwordHash: null },
      Date.now(),
    );
    await store.users.setDisabled(gina.id, true, Date.now());
    expect(await refusedFor(resolveExternalUser(store, identity('gina@acme.example'), true, Date.now()))).toBe('disabled');
  });

  test('just-in-time creation refuses an unknown tenant and a username the server could not hold', async () => {
    expect(await refusedFor(resolveExternalUser(store, identity('hank@acme.example', 'no-such-tenant'), true, Date.now()))).toBe('unknown_tenant');
    expect(await refusedFor(resolveExternalUser(store, identity('hank smith'), true, Date.now()))).toBe('unusable_username');
  });

  test('external-only password hashes differ from one another and have scrypt’s shape', () => {
    const a = externalOnlyPasswordHash();
    const b = externalOnlyPasswordHash();
    expect(a).not.toBe(b);
    expect(a.split('$')).toHaveLength(6);
    expect(a.startsWith('scrypt$')).toBe(true);
    expect(isExternalOnlyPasswordHash(null)).toBe(false);
  });
});
