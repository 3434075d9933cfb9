/**
 * External trusted OIDC issuers: a company's own identity provider (Keycloak, Entra ID, …) whose access tokens the
 * mailbox API accepts besides the built-in IdP's, so its users sign in where they already do.
 *
 * Trust is per issuer and explicit: a token is looked at only when its `iss` is configured, and then verified with
 * that issuer's published keys (JWKS), its allowed algorithms (asymmetric only: an HMAC "signed" with a public key,
 * or `none`, is refused before any key is looked at), its audience and the time claims. Nothing in the token is
 * believed before the signature checks out, except `iss`, which only picks the configuration to verify against.
 *
 * Configuration (the JSON file PIGEON_EXTERNAL_ISSUERS_FILE names; read and checked at start-up, see
 * `loadExternalIssuers` and `checkExternalIssuerTenants`):
 *
 *   {
 *     "issuers": [
 *       {
 *         "issuer": "https://sso.example.com/realms/staff",   // exact `iss`; https (http only for loopback)
 *         "audience": "pigeon-mail",                            // or a list; the token's `aud` must hold one
 *         "jwksUri": "https://sso.example.com/realms/staff/protocol/openid-connect/certs",  // optional
 *         "tenant": "t_acme",                                   // the Pigeon tenant its users belong to
 *         "usernameClaim": "email",                             // email | preferred_username | upn | sub
 *         "algorithms": ["RS256"],                              // subset of RS256 PS256 ES256 ES384 EdDSA
 *         "justInTime": false,                                  // create unknown users on first sign-in
 *         "scopeClaim": "scope",                                // scope | scp; absent: both are read
 *         "mailScope": "mail.access",                           // absent: every verified token gets `mail`
 *         "adminScope": "mail.admin"                            // absent: no external token is ever `admin`
 *       }
 *     ]
 *   }
 *
 * Without `jwksUri`, the keys' address comes from `<issuer>/.well-known/openid-configuration` (OpenID Connect
 * Discovery), whose `issuer` must be exactly the configured one (otherwise that document describes another issuer).
 *
 * Scopes: an external token carries the IdP's own scope names, in `scope` (Keycloak, RFC 9068) or `scp` (Entra ID;
 * a space-separated string, or a list at some IdPs). They are mapped to Pigeon's: `mail` when `mailScope` is among
 * them (or always, when `mailScope` is not configured: the audience already says the token is for Pigeon), `admin`
 * only when `adminScope` is configured and among them. `admin` is still only honoured for a user whose Pigeon role
 * is admin (requireAdmin checks both), and a user created just in time is never an admin.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { z } from 'zod';
import { createRemoteJWKSet, decodeJwt, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { CLOCK_TOLERANCE_SECONDS } from './accessTokens';
import { ConfigError } from '../config';
import type { Store, User } from '../store/types';

// ---------------------------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------------------------

/** Asymmetric algorithms only: a symmetric one would mean sharing a secret with the IdP, and is the alg-confusion door. */
export const EXTERNAL_ALGORITHMS = ['RS256', 'PS256', 'ES256', 'ES384', 'EdDSA'] as const;
export type ExternalAlgorithm = (typeof EXTERNAL_ALGORITHMS)[number];
export const DEFAULT_EXTERNAL_ALGORITHMS: readonly ExternalAlgorithm[] = ['RS256', 'ES256', 'EdDSA', 'PS256'];

export const USERNAME_CLAIMS = ['email', 'preferred_username', 'upn', 'sub'] as const;
export type UsernameClaim = (typeof USERNAME_CLAIMS)[number];

const LOOPBACK_HOSTS = new Set(['localhost', '[::1]']);
const isLoopback = (host: string) => LOOPBACK_HOSTS.has(host) || /^127(\.\d{1,3}){3}$/.test(host);

/** Why `text` is not acceptable as an issuer or key address, or undefined when it is. */
function urlProblem(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return 'must be an absolute URL';
  }
  // Keys fetched over plain HTTP could be swapped on the way: only a loopback IdP (tests, a local sidecar) may use it.
  if (url.protocol === 'http:' && !isLoopback(url.hostname)) return 'must use https (http is allowed only for a loopback address)';
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'must be an https URL';
  if (url.search || url.hash) return 'must not have a query or a fragment';
  if (url.username || url.password) return 'must not contain credentials';
  return undefined;
}

const urlField = z.string().check((ctx) => {
  const problem = urlProblem(ctx.value);
  if (problem) ctx.issues.push({ code: 'custom', message: problem, input: ctx.value });
});

const nonEmpty = z.string().trim().min(1, 'must not be empty');

const algorithm = z.string().check((ctx) => {
  if ((EXTERNAL_ALGORITHMS as readonly string[]).includes(ctx.value)) return;
  const why = /^HS/i.test(ctx.value) || ctx.value.toLowerCase() === 'none'
    ? `${ctx.value} is never accepted from an external issuer (symmetric or unsigned tokens)`
    : `${JSON.stringify(ctx.value)} is not supported`;
  ctx.issues.push({ code: 'custom', message: `${why}; allowed: ${EXTERNAL_ALGORITHMS.join(', ')}`, input: ctx.value });
});

const issuerSchema = z.strictObject({
  issuer: urlField,
  audience: z.union([nonEmpty, z.array(nonEmpty).min(1, 'must list at least one audience')]),
  jwksUri: urlField.optional(),
  tenant: nonEmpty,
  usernameClaim: z.enum(USERNAME_CLAIMS, { error: `must be one of ${USERNAME_CLAIMS.join(', ')}` }).default('email'),
  algorithms: z
    .array(algorithm)
    .min(1, 'must list at least one algorithm')
    .default([...DEFAULT_EXTERNAL_ALGORITHMS])
    .transform((list) => [...new Set(list)] as ExternalAlgorithm[]),
  justInTime: z.boolean().default(false),
  scopeClaim: z.enum(['scope', 'scp'], { error: 'must be "scope" or "scp"' }).optional(),
  mailScope: nonEmpty.optional(),
  adminScope: nonEmpty.optional(),
});

const configSchema = z
  .strictObject({ issuers: z.array(issuerSchema) })
  .check((ctx) => {
    const seen = new Set<string>();
    ctx.value.issuers.forEach((entry, i) => {
      // One configuration per `iss`: two would leave it open which tenant (or audience) a token belongs to.
      if (seen.has(entry.issuer)) {
        ctx.issues.push({ code: 'custom', message: `issuer ${entry.issuer} is configured twice`, path: ['issuers', i, 'issuer'], input: entry.issuer });
      }
      seen.add(entry.issuer);
    });
  });

export type ExternalIssuer = z.output<typeof issuerSchema>;

export class ExternalIssuerConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`external issuers configuration is not valid: ${problems.join('; ')}`);
    this.name = 'ExternalIssuerConfigError';
  }
}

/** Parses and validates the configuration file's text; throws ExternalIssuerConfigError naming every problem. */
export function parseExternalIssuers(text: string): ExternalIssuer[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ExternalIssuerConfigError([`not valid JSON (${(err as Error).message})`]);
  }
  const result = configSchema.safeParse(json);
  if (!result.success) {
    throw new ExternalIssuerConfigError(
      result.error.issues.map((issue) => `${issue.path.length ? issue.path.join('.') : '(root)'}: ${issue.message}`),
    );
  }
  return result.data.issuers;
}

/** The setting that names the file (server/config.ts `externalIssuersFile`): start-up errors name it. */
export const EXTERNAL_ISSUERS_ENV = 'PIGEON_EXTERNAL_ISSUERS_FILE';

/** An issuer URL for comparison: parsed (host case, default port) and without trailing slashes. */
export function comparableIssuer(text: string): string {
  try {
    return new URL(text).href.replace(/\/+$/, '');
  } catch {
    return text;
  }
}

/**
 * Reads and checks the configuration file at start-up (createApp): none configured (`file` empty) is an empty list.
 * Throws ConfigError naming PIGEON_EXTERNAL_ISSUERS_FILE when the file cannot be read, is not valid, or configures
 * one of Pigeon's own issuers (`pigeonIssuers`: this node's and every region's): such a token is the built-in
 * issuer's to verify with Pigeon's keys, and trusting it "externally" as well would let another key set vouch for it.
 */
export function loadExternalIssuers(file: string, pigeonIssuers: readonly string[]): ExternalIssuer[] {
  if (file === '') return [];
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(EXTERNAL_ISSUERS_ENV, `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let issuers: ExternalIssuer[];
  try {
    issuers = parseExternalIssuers(text);
  } catch (err) {
    if (err instanceof ExternalIssuerConfigError) throw new ConfigError(EXTERNAL_ISSUERS_ENV, `${file}: ${err.message}`);
    throw err;
  }
  const own = new Set(pigeonIssuers.map(comparableIssuer));
  for (const entry of issuers) {
    if (own.has(comparableIssuer(entry.issuer))) {
      throw new ConfigError(EXTERNAL_ISSUERS_ENV, `${file}: ${entry.issuer} is Pigeon's own issuer (PIGEON_ISSUER or a region's), not an external one`);
    }
  }
  return issuers;
}

/**
 * The second start-up check, which needs the store (main.ts runs it before listening): every configured tenant must
 * exist, or that issuer's users could never sign in (and just-in-time creation would fail on every token).
 */
export async function checkExternalIssuerTenants(store: Pick<Store, 'tenants'>, issuers: readonly ExternalIssuer[]): Promise<void> {
  for (const entry of issuers) {
    if (!(await store.tenants.get(entry.tenant))) {
      throw new ConfigError(EXTERNAL_ISSUERS_ENV, `issuer ${entry.issuer}: no tenant ${JSON.stringify(entry.tenant)} in the store (see \`npm run admin -- tenant list\`)`);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------------------------

export type ExternalTokenReason =
  | 'malformed'
  | 'unknown_issuer'
  | 'alg_not_allowed'
  /** The `kid` (or key type) is not in the issuer's JWKS, even after refetching it: a retired or foreign key. */
  | 'unknown_key'
  | 'bad_signature'
  | 'wrong_audience'
  | 'expired'
  | 'not_yet_valid'
  | 'missing_claim'
  | 'invalid_claim'
  /** An ID token, refresh token or other JWT that is not an access token. */
  | 'not_access_token'
  /** `email` is the username claim and the IdP says the address is not verified. */
  | 'unverified_email'
  /** Verified, but it grants no Pigeon scope (see mailScope / adminScope). */
  | 'insufficient_scope'
  /** The issuer's keys (or its discovery document) could not be fetched right now: retried on the next token. */
  | 'jwks_unreachable'
  /** The discovery document names another issuer, or no usable `jwks_uri`: a configuration problem. */
  | 'discovery_mismatch';

export class InvalidExternalToken extends Error {
  constructor(
    readonly reason: ExternalTokenReason,
    detail?: string,
  ) {
    super(detail ? `${reason}: ${detail}` : reason);
    this.name = 'InvalidExternalToken';
  }
}

export interface ExternalIdentity {
  issuer: string;
  subject: string;
  /** The configured username claim's value, lower-cased (Pigeon usernames match case-insensitively). */
  username: string;
  /** The Pigeon tenant the issuer's users belong to. */
  tenantId: string;
  /** Pigeon scopes (`mail`, `admin`), mapped from the token's own. */
  scopes: string[];
  /** `exp`, in milliseconds. */
  expiresAt: number;
  jti?: string;
  /** The confirmation claim (RFC 7800), e.g. `{ jkt }` of a DPoP-bound token (RFC 9449), for the caller to check. */
  cnf?: Record<string, unknown>;
  /** `email` and `name` when the token has them (used for a user created just in time). */
  email?: string;
  name?: string;
  /** The app the token was issued to (`client_id` of RFC 9068, else `azp`), for conditional access. */
  clientId?: string;
  /** `amr` (RFC 8176): how the user proved who they are at the IdP; `mfa` among them satisfies an MFA control. */
  authMethods?: string[];
}

export interface ExternalIssuersOptions {
  issuers: readonly ExternalIssuer[];
  /** Milliseconds since the epoch (the server clock; tests move it). */
  now: () => number;
  /** For the discovery document only (jose 5 fetches JWKS with node:http itself). Defaults to the global fetch. */
  fetch?: typeof fetch;
  /** The remote key sets' behaviour; jose's defaults otherwise. */
  jwks?: {
    /** After a fetch, an unknown `kid` does not trigger another one for this long (default 30 s). */
    cooldownMs?: number;
    /** Keys are refetched when older than this, whatever the tokens say (default 10 min). */
    cacheMaxAgeMs?: number;
    /** Per request, JWKS and discovery (default 5 s). */
    timeoutMs?: number;
  };
}

/**
 * The `iss` of a JWT, unverified: only for picking which verifier to ask (this one or the built-in issuer's).
 * Undefined when the text is not a JWT with a string `iss`.
 */
export function unverifiedIssuer(token: string): string | undefined {
  try {
    const { iss } = decodeJwt(token);
    return typeof iss === 'string' ? iss : undefined;
  } catch {
    return undefined;
  }
}

/** The token's scope claim(s) as a list: `scope`/`scp` as a space-separated string, or a list of strings. */
function tokenScopes(payload: JWTPayload, claim: 'scope' | 'scp' | undefined): string[] {
  const names = claim ? [claim] : ['scope', 'scp'];
  const out: string[] = [];
  for (const name of names) {
    const value = payload[name];
    if (typeof value === 'string') out.push(...value.split(' ').filter(Boolean));
    else if (Array.isArray(value)) out.push(...value.filter((v): v is string => typeof v === 'string' && v !== ''));
  }
  return out;
}

/** Pigeon's scopes for an external token's own (see the header comment). */
export function mapExternalScopes(issuer: Pick<ExternalIssuer, 'scopeClaim' | 'mailScope' | 'adminScope'>, payload: JWTPayload): string[] {
  const granted = new Set(tokenScopes(payload, issuer.scopeClaim));
  const scopes: string[] = [];
  if (issuer.mailScope === undefined || granted.has(issuer.mailScope)) scopes.push('mail');
  if (issuer.adminScope !== undefined && granted.has(issuer.adminScope)) scopes.push('admin');
  return scopes;
}

/** Translates jose's errors into reasons; InvalidExternalToken passes through, anything else is a bug and rethrown. */
function classify(err: unknown): unknown {
  if (err instanceof InvalidExternalToken) return err;
  if (err instanceof joseErrors.JWTExpired) return new InvalidExternalToken('expired');
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return new InvalidExternalToken('alg_not_allowed', err.message);
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return new InvalidExternalToken('bad_signature');
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.reason === 'missing') return new InvalidExternalToken('missing_claim', err.claim);
    if (err.claim === 'aud') return new InvalidExternalToken('wrong_audience');
    if (err.claim === 'nbf') return new InvalidExternalToken('not_yet_valid');
    return new InvalidExternalToken('invalid_claim', err.claim);
  }
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid || err instanceof joseErrors.JOSENotSupported) {
    return new InvalidExternalToken('malformed', err.message);
  }
  // A key that does not fit the algorithm (jose checks the key type before verifying).
  if (err instanceof TypeError || err instanceof joseErrors.JOSEError) return new InvalidExternalToken('bad_signature', err.message);
  return err;
}

const ACCESS_TOKEN_HEADER_TYPES = new Set(['jwt', 'at+jwt', 'application/at+jwt']);

export function createExternalIssuers(opts: ExternalIssuersOptions) {
  const { now } = opts;
  const fetchImpl = opts.fetch ?? fetch;
  const timeoutMs = opts.jwks?.timeoutMs ?? 5000;
  const byIssuer = new Map(opts.issuers.map((i) => [i.issuer, i]));
  /** Each issuer's key set once known: created on the first token, so an unused or unreachable IdP costs nothing at start. */
  const keySets = new Map<string, ReturnType<typeof createRemoteJWKSet>>();
  /** A discovery under way, shared by the tokens that arrive meanwhile (a failed one is forgotten: the next token retries). */
  const discovering = new Map<string, Promise<URL>>();

  async function discoverJwksUri(issuer: ExternalIssuer): Promise<URL> {
    const address = `${issuer.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    let doc: unknown;
    try {
      const res = await fetchImpl(address, { headers: { accept: 'application/json' }, redirect: 'error', signal: AbortSignal.timeout(timeoutMs) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      doc = await res.json();
    } catch (err) {
      throw new InvalidExternalToken('jwks_unreachable', `discovery for ${issuer.issuer} failed (${(err as Error).message})`);
    }
    const { issuer: named, jwks_uri: jwksUri } = (doc ?? {}) as { issuer?: unknown; jwks_uri?: unknown };
    if (named !== issuer.issuer) {
      throw new InvalidExternalToken('discovery_mismatch', `the discovery document of ${issuer.issuer} names issuer ${JSON.stringify(named)}`);
    }
    const problem = typeof jwksUri === 'string' ? urlProblem(jwksUri) : 'is missing';
    if (problem) throw new InvalidExternalToken('discovery_mismatch', `the discovery document's jwks_uri ${problem}`);
    return new URL(jwksUri as string);
  }

  async function keySetOf(issuer: ExternalIssuer): Promise<ReturnType<typeof createRemoteJWKSet>> {
    const known = keySets.get(issuer.issuer);
    if (known) return known;
    let uri: URL;
    if (issuer.jwksUri) {
      uri = new URL(issuer.jwksUri);
    } else {
      let pending = discovering.get(issuer.issuer);
      if (!pending) {
        pending = discoverJwksUri(issuer).finally(() => discovering.delete(issuer.issuer));
        discovering.set(issuer.issuer, pending);
      }
      uri = await pending;
    }
    // Another token may have finished discovery first: keep the one set, so its cache and cooldown are shared.
    const set =
      keySets.get(issuer.issuer) ??
      createRemoteJWKSet(uri, {
        cooldownDuration: opts.jwks?.cooldownMs,
        cacheMaxAge: opts.jwks?.cacheMaxAgeMs,
        timeoutDuration: timeoutMs,
      });
    keySets.set(issuer.issuer, set);
    return set;
  }

  /** jose's key lookup, with "no such key" told apart from "could not fetch the keys". */
  function keyLookup(issuer: ExternalIssuer): JWTVerifyGetKey {
    return async (header, token) => {
      const keySet = await keySetOf(issuer);
      try {
        return await keySet(header, token);
      } catch (err) {
        if (err instanceof joseErrors.JWKSNoMatchingKey) throw new InvalidExternalToken('unknown_key', `no key ${header.kid ?? '(no kid)'} for ${header.alg}`);
        if (err instanceof joseErrors.JWKSMultipleMatchingKeys) throw new InvalidExternalToken('unknown_key', 'several keys match and the token names none');
        // Timeouts, refused connections, non-200 answers, unparseable key sets: jose does not remember a failed
        // fetch, so the next token tries again.
        throw new InvalidExternalToken('jwks_unreachable', `keys of ${issuer.issuer}: ${(err as Error).message}`);
      }
    };
  }

  function identityOf(issuer: ExternalIssuer, payload: JWTPayload): ExternalIdentity {
    const raw = payload[issuer.usernameClaim];
    if (typeof raw !== 'string' || raw.trim() === '') throw new InvalidExternalToken('missing_claim', issuer.usernameClaim);
    // An address the IdP has not verified is whatever its user typed in: not an identity to map onto a mailbox.
    if (issuer.usernameClaim === 'email' && payload.email_verified === false) throw new InvalidExternalToken('unverified_email');
    const scopes = mapExternalScopes(issuer, payload);
    if (scopes.length === 0) throw new InvalidExternalToken('insufficient_scope');
    const identity: ExternalIdentity = {
      issuer: issuer.issuer,
      subject: payload.sub!,
      username: raw.trim().toLowerCase(),
      tenantId: issuer.tenant,
      scopes,
      expiresAt: payload.exp! * 1000,
    };
    if (typeof payload.jti === 'string') identity.jti = payload.jti;
    if (payload.cnf && typeof payload.cnf === 'object' && !Array.isArray(payload.cnf)) identity.cnf = payload.cnf as Record<string, unknown>;
    if (typeof payload.email === 'string') identity.email = payload.email;
    if (typeof payload.name === 'string') identity.name = payload.name;
    const client = typeof payload.client_id === 'string' ? payload.client_id : typeof payload.azp === 'string' ? payload.azp : undefined;
    if (client) identity.clientId = client;
    if (Array.isArray(payload.amr)) identity.authMethods = payload.amr.filter((m): m is string => typeof m === 'string').slice(0, 20);
    return identity;
  }

  /** Every check of an external access token; answers its configuration and verified payload. */
  async function verified(token: string): Promise<{ issuer: ExternalIssuer; payload: JWTPayload }> {
    const iss = unverifiedIssuer(token);
    if (iss === undefined) throw new InvalidExternalToken('malformed', 'not a JWT with an iss claim');
    const issuer = byIssuer.get(iss);
    if (!issuer) throw new InvalidExternalToken('unknown_issuer', iss);
    const nowMs = now();
    let payload: JWTPayload;
    try {
      const verified = await jwtVerify(token, keyLookup(issuer), {
        algorithms: issuer.algorithms,
        issuer: issuer.issuer,
        audience: issuer.audience,
        requiredClaims: ['exp', 'iat', 'sub'],
        currentDate: new Date(nowMs),
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
      });
      payload = verified.payload;
      const typ = verified.protectedHeader.typ;
      if (typ !== undefined && !ACCESS_TOKEN_HEADER_TYPES.has(typ.toLowerCase())) throw new InvalidExternalToken('not_access_token', `typ ${typ}`);
    } catch (err) {
      throw classify(err);
    }
    // Keycloak marks its ID tokens `typ: ID` (and refresh tokens `Refresh`) in the payload; access tokens `Bearer`.
    if (payload.typ !== undefined && (typeof payload.typ !== 'string' || payload.typ.toLowerCase() !== 'bearer')) {
      throw new InvalidExternalToken('not_access_token', `payload typ ${String(payload.typ)}`);
    }
    // jose checks `exp` with the tolerance but never an `iat` from the future (same rule as accessTokens.ts).
    if (typeof payload.iat !== 'number' || payload.iat > nowMs / 1000 + CLOCK_TOLERANCE_SECONDS) {
      throw new InvalidExternalToken('not_yet_valid', 'issued in the future');
    }
    if (typeof payload.sub !== 'string' || payload.sub === '') throw new InvalidExternalToken('missing_claim', 'sub');
    return { issuer, payload };
  }

  return {
    /** Whether `iss` (read unverified from a token) is a configured external issuer. */
    handles(iss: string): boolean {
      return byIssuer.has(iss);
    },

    /** Verifies an external access token; throws InvalidExternalToken with the reason. */
    async verify(token: string): Promise<ExternalIdentity> {
      const { issuer, payload } = await verified(token);
      return identityOf(issuer, payload);
    },

    /**
     * What the API's authenticator needs of an external access token (auth/authenticate.ts): the identity, its
     * issuer's configuration (just-in-time creation), when it was issued and the session it stands for.
     */
    async verifyAccess(token: string): Promise<ExternalAccess> {
      const { issuer, payload } = await verified(token);
      const identity = identityOf(issuer, payload);
      const sid = typeof payload.sid === 'string' && payload.sid !== '' ? payload.sid : undefined;
      return { identity, issuer, issuedAt: payload.iat! * 1000, sessionId: externalSessionId(issuer.issuer, sid, identity.jti, token) };
    },
  };
}

/** A verified external access token as the authenticator uses it (see `verifyAccess`). */
export interface ExternalAccess {
  identity: ExternalIdentity;
  issuer: ExternalIssuer;
  /** `iat`, in milliseconds: compared with the user's last revocation (README, "External identity providers"). */
  issuedAt: number;
  /** A stable id of the IdP's session the token belongs to (see `externalSessionId`). */
  sessionId: string;
}

/**
 * The session id of an external token: the IdP's own session (`sid`, which Keycloak and Entra put in their access
 * tokens: every token of one sign-in shares it), else the token's `jti`, else the token itself — hashed together with
 * the issuer, so two IdPs' ids never collide and Pigeon's own sign-in ids (`sid` of its tokens) are never matched.
 */
export function externalSessionId(issuer: string, sid: string | undefined, jti: string | undefined, token: string): string {
  const basis = sid !== undefined ? `sid\n${sid}` : jti !== undefined ? `jti\n${jti}` : `token\n${token}`;
  return `ext_${crypto.createHash('sha256').update(`${issuer}\n${basis}`).digest('base64url').slice(0, 32)}`;
}

export type ExternalIssuers = ReturnType<typeof createExternalIssuers>;

// ---------------------------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------------------------

export type ExternalUserReason = 'unknown_user' | 'other_tenant' | 'disabled' | 'unknown_tenant' | 'unusable_username';

export class ExternalUserRefused extends Error {
  constructor(
    readonly reason: ExternalUserReason,
    detail?: string,
  ) {
    super(detail ? `${reason}: ${detail}` : reason);
    this.name = 'ExternalUserRefused';
  }
}

/** What the admin CLI accepts as a username (server/admin/users.ts): a just-in-time user is held to the same. */
const USERNAME_PATTERN = /^[A-Za-z0-9._@+-]{1,128}$/;

/**
 * The salt of every "no password" hash below: 16 bytes, so the value has scrypt's exact shape and a password check
 * against it costs a real scrypt run (a fast refusal would tell a password guesser the account is external).
 */
const EXTERNAL_ONLY_SALT = Buffer.from('external-only-id').toString('base64');

/**
 * A password hash for a user who signs in only through an external issuer: scrypt's format with a random 32-byte
 * "hash" that is the hash of no known password, so verifyPassword runs its full cost and answers false.
 */
export function externalOnlyPasswordHash(): string {
  return `scrypt$16384$8$1$${EXTERNAL_ONLY_SALT}$${crypto.randomBytes(32).toString('base64')}`;
}

export function isExternalOnlyPasswordHash(hash: string | null): boolean {
  return hash !== null && hash.split('$')[4] === EXTERNAL_ONLY_SALT;
}

/** Accepts the user only when they belong to the issuer's tenant and are enabled. */
function admit(user: User, identity: ExternalIdentity): User {
  // Usernames are unique across the whole store: the same name in another tenant is another person, never a match.
  if (user.tenantId !== identity.tenantId) throw new ExternalUserRefused('other_tenant', identity.username);
  if (user.disabled) throw new ExternalUserRefused('disabled', identity.username);
  return user;
}

/**
 * The Pigeon user an external identity signs in as: the user of that username in the issuer's tenant; with
 * `justInTime`, one created (with a mailbox, role `user`, no usable password) when there is none. Throws
 * ExternalUserRefused otherwise.
 */
export async function resolveExternalUser(store: Store, identity: ExternalIdentity, justInTime: boolean, now: number): Promise<User> {
  const existing = await store.users.byUsername(identity.username);
  if (existing) return admit(existing, identity);
  if (!justInTime) throw new ExternalUserRefused('unknown_user', identity.username);
  if (!USERNAME_PATTERN.test(identity.username)) throw new ExternalUserRefused('unusable_username', identity.username);
  const email = identity.email ?? (identity.username.includes('@') ? identity.username : `${identity.username}@localhost`);
  const created = await store
    .run(function* (tx) {
      if (!(yield* tx.tenants.get(identity.tenantId))) throw new ExternalUserRefused('unknown_tenant', identity.tenantId);
      // Another request of the same user may have created it since the read above.
      const again = yield* tx.users.byUsername(identity.username);
      if (again) return again;
      const user = yield* tx.users.create(
        {
          tenantId: identity.tenantId,
          username: identity.username,
          email,
          displayName: identity.name ?? identity.username,
          role: 'user',
          passwordHash: externalOnlyPasswordHash(),
        },
        now,
      );
      yield* tx.mailboxes.create(user.id, now);
      return user;
    })
    .catch(async (err: unknown) => {
      if (err instanceof ExternalUserRefused) throw err;
      // PostgreSQL: a concurrent first sign-in may have won the unique username; then it is that user.
      const winner = await store.users.byUsername(identity.username);
      if (winner) return winner;
      throw err;
    });
  return admit(created, identity);
}
