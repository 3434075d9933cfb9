/**
 * Access-token authentication for the API: `Authorization: Bearer <token>` (RFC 6750), or `Authorization: DPoP
 * <token>` with a `DPoP` proof header (RFC 9449). Only the `Authorization` header is accepted: a token in the query
 * string ends up in logs and proxies, so it is refused outright (RFC 6750 §2.3 allows refusing it). Every request
 * also checks the user row: a disabled user or a moved session version (password change, "revoke sessions") ends
 * access tokens before their `exp`.
 *
 * DPoP rules:
 * - `DPoP <token>` needs exactly one `DPoP` header, a proof that passes every check of auth/dpop.ts for this request's
 *   method and URI, with `ath` the token's hash and signed by the key the token is bound to: the token must carry
 *   `cnf.jkt` (an unbound token under this scheme is refused: `invalid_token`).
 * - A token bound to a key (any `cnf`) sent as `Bearer` is refused (RFC 9449 §7.2): otherwise binding it would not
 *   protect a stolen token at all.
 * - A `Bearer` token without `cnf` works as it always has; a `DPoP` header beside it is ignored.
 * Failures of the DPoP scheme answer `WWW-Authenticate: DPoP error="…", error_description="…", algs="…"`; those of
 * the Bearer scheme the Bearer challenge as before.
 *
 * External issuers (auth/externalIssuers.ts; README, "External identity providers"): a token the built-in check
 * refuses is looked at again only then, and only for its unverified `iss`: when that names a configured external
 * issuer, the external verifier decides (its keys, algorithms, audience). A built-in token therefore costs exactly
 * what it did (the verified-token cache answers it first), and an external token can never pass the built-in check:
 * that pins `iss` to Pigeon's own issuer and its own key, and start-up refuses an external issuer equal to it.
 * An external token has no Pigeon sign-in behind it (the IdP owns its sessions), so there is no liveness check and
 * no session version in it; instead:
 * - the user is resolved by the issuer's username claim on every request (uncached): a disabled user is refused at
 *   once, like a built-in token's;
 * - "revoke sessions" (and a password change, which revokes them) also ends external tokens issued before it: once a
 *   user's session version has moved (> 0), a token whose `iat` is earlier than the user row's `updatedAt` is refused.
 *   `updatedAt` moves only with the password, the session version and enable/disable (store), so it is the last
 *   revocation or later: at worst a token from before a later enable/disable is refused too, which the app's next
 *   token from its IdP cures. A user whose version never moved (0) has no revocation to compare with: `updatedAt`
 *   is then the creation (a just-in-time user is created by the very token that must pass);
 * - `cnf.jkt` binds it to a DPoP key exactly as a built-in token (the same code below);
 * - its device comes from `X-Device-Id` through the device gate (it carries no `did`).
 */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Express, RequestHandler } from 'express';
import { ApiError, errors } from '../errors';
import type { Store, Role, User } from '../store/types';
import { InvalidAccessToken, type AccessClaims, type AccessTokens } from './accessTokens';
import { createDpopVerifier, DpopReplayMemoryFull, InvalidDpopProof, type DpopVerifier } from './dpop';
import {
  comparableIssuer,
  ExternalUserRefused,
  InvalidExternalToken,
  resolveExternalUser,
  unverifiedIssuer,
  type ExternalAccess,
  type ExternalIssuers,
  type ExternalTokenReason,
} from './externalIssuers';
import { claimedRegion, type Regions } from '../regions';

export interface AuthContext {
  /** The caller's user row, read (and checked: enabled, same tenant and session version) on this request. */
  user: User;
  userId: string;
  tenantId: string;
  role: Role;
  scopes: string[];
  /** The device the call is made for: the token's `did`, else a well-formed `X-Device-Id` (set by the gate). */
  deviceId?: string;
  /**
   * The device the token is bound to: its `did`, or the device its sign-in was bound to later (a refresh with
   * `device_id`). Such a token is judged by that device's state on every route, `/admin` included, whether or not
   * the call carries `X-Device-Id`.
   */
  boundDeviceId?: string;
  /**
   * The sign-in (refresh family) the token belongs to; for an external issuer's token, a stable id of the IdP's
   * session (`ext_…`, from its `sid`, else its `jti`: auth/externalIssuers.ts `externalSessionId`).
   */
  sessionId: string;
  expiresAt: number;
  /**
   * For a token whose sign-in Pigeon did not see (an external issuer's): the app it was issued to (`azp` or
   * `client_id`) and how the user proved who they are (`amr`), for conditional access (server/access/service.ts).
   */
  clientId?: string;
  authMethods?: string[];
}

export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/i.exec(header.trim());
  return m?.[1];
}

/** The token of an `Authorization: DPoP <token>` header (the scheme name is case-insensitive, as Bearer's). */
export function dpopToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^DPoP ([A-Za-z0-9\-._~+/]+=*)$/i.exec(header.trim());
  return m?.[1];
}

/** Whether the request uses the DPoP scheme: a look at the first characters, nothing allocated. */
export function usesDpopScheme(headers: IncomingHttpHeaders): boolean {
  const header = headers.authorization;
  return header !== undefined && /^\s*dpop /i.test(header);
}

/**
 * The scheme and authority the client addressed: Express's `req.protocol` and `req.host` (with the app's trust-proxy
 * setting) have exactly this shape, as getters, so they are computed only when read — only for a DPoP proof's `htu`.
 */
export interface RequestOrigin {
  readonly protocol: string;
  readonly host: string | undefined;
}

/**
 * The request's absolute URI as the client addressed it, without query or fragment: origin + path of an origin-form
 * target, or an absolute-form target as given. Undefined without a usable Host.
 */
export function requestUri(origin: RequestOrigin, url: string): string | undefined {
  const end = url.search(/[?#]/);
  const target = end < 0 ? url : url.slice(0, end);
  if (!target.startsWith('/')) return target;
  const { host } = origin;
  if (!host || /[\s/?#@\\]/.test(host)) return undefined;
  return `${origin.protocol}://${host}${target}`;
}

/**
 * A bare request's origin as Express would read it: the app's own `protocol` and `host` getters (its trust-proxy
 * setting) over the raw request, as `expressIp` in http/fastLane.ts does for the address.
 */
export function expressOrigin(app: Express): (req: IncomingMessage) => RequestOrigin {
  return (req) => Object.create(app.request, { headers: { value: req.headers }, socket: { value: req.socket }, connection: { value: req.socket } }) as RequestOrigin;
}

/** The origin from the listener and the Host header alone: what Express answers when no proxy is trusted. */
export function socketOrigin(req: IncomingMessage): RequestOrigin {
  return { protocol: (req.socket as TLSSocket).encrypted ? 'https' : 'http', host: req.headers.host };
}

/** Read by nothing: what a Bearer request passes (the authenticator reads the origin only for the DPoP scheme). */
const UNREAD_ORIGIN: RequestOrigin = Object.freeze({
  get protocol(): string {
    throw new Error('the request origin is read only for the DPoP scheme');
  },
  get host(): string {
    throw new Error('the request origin is read only for the DPoP scheme');
  },
});

/**
 * The origin for a bare request (the fast lane): made only for the DPoP scheme, so a Bearer poll allocates nothing.
 */
export function originForAuth(req: IncomingMessage, originOf: (req: IncomingMessage) => RequestOrigin): RequestOrigin {
  return usesDpopScheme(req.headers) ? originOf(req) : UNREAD_ORIGIN;
}

/**
 * Whether the query string could name `access_token`: the name itself, or any percent-escape (which could spell it).
 * Sync tokens make a poll's query string long: it is checked as text and parsed only when it might matter.
 */
function mayCarryAccessToken(url: string): boolean {
  const q = url.indexOf('?');
  return q >= 0 && (url.includes('access_token', q) || url.includes('%', q));
}

/** Rejects with the device's own refusal (blocked, quarantined, wiped, wipe pending) when its record says so. */
export type DeviceJudge = (userId: string, tenantId: string, deviceId: string) => Promise<void>;

/**
 * Authenticates one request from its method, URL (the target as received: for the query-string check and a DPoP
 * proof's `htu`), headers and origin (read only for the DPoP scheme); throws 401 when it cannot (421 for another
 * region's token, 503 when the DPoP replay memory is full).
 */
export type Authenticator = (method: string, url: string, headers: IncomingHttpHeaders, origin: RequestOrigin) => Promise<AuthContext>;

/**
 * 421 wrongRegion when the token's region is another one of the directory (README, "Regions"); nothing when it is
 * this node's, names no region (a token from before regions is this region's) or names one the directory does not
 * list (then the token is judged here like any other, and fails). The base URL comes from this node's directory.
 */
function misdirected(regions: Regions | undefined, rgn: string | undefined): void {
  if (!regions || rgn === undefined || rgn === regions.region || !Object.hasOwn(regions.directory, rgn)) return;
  throw errors.wrongRegion(rgn, regions.directory[rgn]!);
}

/** Access tokens of external trusted OIDC issuers (auth/externalIssuers.ts), for `createAuthenticator`. */
export interface ExternalTokens {
  issuers: ExternalIssuers;
  /** Pigeon's own issuer: a refused token naming neither it nor an external issuer is told its issuer is not trusted. */
  ownIssuer: string;
}

/** What each refusal of an external token tells the client (reasons answered otherwise are left out). */
const EXTERNAL_REFUSALS: Record<Exclude<ExternalTokenReason, 'jwks_unreachable' | 'discovery_mismatch' | 'insufficient_scope'>, string> = {
  malformed: 'The access token is not a well-formed JWT.',
  unknown_issuer: "The access token's issuer is not trusted here.",
  alg_not_allowed: "The access token's signing algorithm is not accepted for its issuer.",
  unknown_key: 'The access token is signed with a key its issuer does not publish.',
  bad_signature: "The access token's signature is not valid.",
  wrong_audience: 'The access token is not meant for this server (audience).',
  expired: 'The access token has expired.',
  not_yet_valid: 'The access token is not valid yet.',
  missing_claim: 'The access token lacks a required claim.',
  invalid_claim: 'The access token has a claim that is not valid.',
  not_access_token: 'The token is not an access token.',
  unverified_email: 'The identity provider has not verified the email address the access token names.',
};

/**
 * The bearer check, free of any HTTP framework so the Express chain and the fast lane (http/fastLane.ts) run the
 * very same code. With `regions`, a token of another region gets 421 wrongRegion: from its verified claim, or, when
 * this node cannot verify it (another region's node may sign with other keys), from its unverified one — which then
 * only picks which public directory entry the answer shows. That costs nothing on the hot path: the token is read
 * again only when it failed verification.
 */
export function createAuthenticator(
  store: Store,
  accessTokens: AccessTokens,
  now: () => number,
  judgeDevice?: DeviceJudge,
  regions?: Regions,
  dpop: DpopVerifier = createDpopVerifier({ now }),
  external?: ExternalTokens,
): Authenticator {
  const algs = dpop.algorithms;
  /** The refusal of a bad or revoked token, in the challenge of the scheme it came with. */
  const refused = (isDpop: boolean, detail: string) => (isDpop ? errors.dpopUnauthorized(detail, 'invalid_token', algs) : errors.unauthorized(detail));
  const badProof = (detail: string) => errors.dpopUnauthorized(detail, 'invalid_dpop_proof', algs);
  const ownIssuer = external && comparableIssuer(external.ownIssuer);

  /** The one `DPoP` header's proof (node joins repeated headers with ", ", which a compact JWS never contains). */
  function proofOf(headers: IncomingHttpHeaders): string {
    const value: unknown = headers.dpop;
    if (value === undefined) throw badProof('The DPoP scheme needs a DPoP header with a proof.');
    if (typeof value !== 'string' || value.includes(',')) throw badProof('Exactly one DPoP header is allowed.');
    return value.trim();
  }

  /**
   * The token's binding, the same for built-in and external tokens: under the DPoP scheme it must be bound
   * (`cnf.jkt`) and the proof must pass for this request and that key; as a bearer token it must not be bound at all.
   */
  async function checkBinding(cnf: { jkt?: unknown } | undefined, token: string, proof: string | undefined, method: string, url: string, origin: RequestOrigin): Promise<void> {
    if (proof !== undefined) {
      const jkt = cnf?.jkt;
      if (typeof jkt !== 'string') throw refused(true, 'The access token is not bound to a DPoP key; send it as "Bearer <token>".');
      const uri = requestUri(origin, url);
      if (uri === undefined) throw badProof('The request has no usable Host, so the proof\'s "htu" cannot be checked.');
      try {
        await dpop.verify({ proof, method, uri, accessToken: token, jkt });
      } catch (err) {
        if (err instanceof InvalidDpopProof) throw badProof(err.reason);
        if (err instanceof DpopReplayMemoryFull) throw errors.unavailable('Too many DPoP proofs to check at once; retry shortly.', 1);
        throw err;
      }
    } else if (cnf !== undefined) {
      // A key-bound token is no bearer token (RFC 9449 §7.2): whoever holds only the token must not get in.
      throw errors.dpopBoundAsBearer(algs);
    }
  }

  /** The answer to an external token the verifier refused: 401 for the token, 403 for its scopes, 503 for the IdP. */
  function externalRefusal(err: InvalidExternalToken, isDpop: boolean): ApiError {
    switch (err.reason) {
      case 'jwks_unreachable':
        // The token may well be good: the client should retry, not sign in again (jose retries the fetch on the next token).
        return errors.unavailable("The access token's identity provider could not be reached to check its keys; retry shortly.", 5);
      case 'discovery_mismatch':
        return errors.unavailable("The access token's identity provider does not match its configuration here; an administrator must correct it.", 60);
      case 'insufficient_scope': {
        const detail = 'The access token grants no access to mail here (scope).';
        return new ApiError(403, 'forbidden', detail, { error: 'insufficient_scope' }, {
          'WWW-Authenticate': isDpop ? `DPoP error="insufficient_scope", algs="${algs.join(' ')}"` : 'Bearer realm="pigeon", error="insufficient_scope"',
        });
      }
      default:
        return refused(isDpop, EXTERNAL_REFUSALS[err.reason]);
    }
  }

  /** An external issuer's token: verified by its issuer's keys, bound as it says, its user resolved (module comment). */
  async function externalContext(ext: ExternalTokens, token: string, proof: string | undefined, method: string, url: string, origin: RequestOrigin): Promise<AuthContext> {
    const isDpop = proof !== undefined;
    let access: ExternalAccess;
    try {
      access = await ext.issuers.verifyAccess(token);
    } catch (err) {
      if (err instanceof InvalidExternalToken) throw externalRefusal(err, isDpop);
      throw err;
    }
    const { identity } = access;
    // Before the user: a stolen bound token (or a bad proof) must not even create a user just in time.
    await checkBinding(identity.cnf, token, proof, method, url, origin);
    let user: User;
    try {
      user = await resolveExternalUser(store, identity, access.issuer.justInTime, now());
    } catch (err) {
      if (!(err instanceof ExternalUserRefused)) throw err;
      if (err.reason === 'disabled') throw refused(isDpop, 'The access token has been revoked.');
      // The token is good, the person simply has no mailbox here: 403, so an app does not sign in again and again.
      throw errors.forbidden(
        err.reason === 'unknown_user'
          ? "The identity provider's user has no mailbox here (and its issuer does not create users on first sign-in)."
          : "The identity provider's user cannot be signed in to a mailbox here.",
      );
    }
    // "Revoke sessions" (or a password change) ends the external tokens issued before it (module comment).
    if (user.sessionVersion > 0 && access.issuedAt < user.updatedAt) throw refused(isDpop, 'The access token has been revoked.');
    return {
      user,
      userId: user.id,
      tenantId: user.tenantId,
      role: user.role,
      scopes: identity.scopes,
      sessionId: access.sessionId,
      expiresAt: identity.expiresAt,
      ...(identity.clientId ? { clientId: identity.clientId } : {}),
      ...(identity.authMethods ? { authMethods: identity.authMethods } : {}),
    };
  }

  return async (method, url, headers, origin) => {
    if (mayCarryAccessToken(url) && new URLSearchParams(url.slice(url.indexOf('?') + 1)).has('access_token')) {
      throw errors.unauthorized('Access tokens are accepted only in the Authorization header.');
    }
    const header = headers.authorization;
    if (!header) throw errors.unauthorized('A bearer access token is required.', '');
    let token = bearerToken(header);
    let proof: string | undefined;
    if (!token) {
      token = dpopToken(header);
      if (!token) throw errors.unauthorized('The Authorization header must be "Bearer <token>" or "DPoP <token>".');
      proof = proofOf(headers);
    }
    const isDpop = proof !== undefined;
    let claims: Readonly<AccessClaims>;
    try {
      claims = await accessTokens.verify(token);
    } catch (err) {
      if (err instanceof InvalidAccessToken) {
        // Only now is the token read for its issuer: built-in tokens never pay for external issuers.
        const iss = external && unverifiedIssuer(token);
        if (iss && external.issuers.handles(iss)) return externalContext(external, token, proof, method, url, origin);
        misdirected(regions, claimedRegion(token));
        if (iss && comparableIssuer(iss) !== ownIssuer) throw refused(isDpop, "The access token's issuer is not trusted here.");
        throw refused(isDpop, err.message === 'expired' ? 'The access token has expired.' : 'The access token is not valid.');
      }
      throw err;
    }
    misdirected(regions, claims.rgn);
    // A verified token of a region the directory does not list was not issued for this node's mailboxes either.
    if (regions && claims.rgn !== undefined && claims.rgn !== regions.region) throw refused(isDpop, 'The access token is not valid.');
    // Guarded, so a plain bearer token (the hot path) does not even wait a turn for the check.
    if (proof !== undefined || claims.cnf !== undefined) await checkBinding(claims.cnf, token, proof, method, url, origin);
    // One read after the other, not both at once: the first is what checks the hot cache's data version for this
    // request (server/store/cached.ts), and two at once would both check it.
    const user = await store.users.byId(claims.sub);
    if (!user || user.disabled || user.tenantId !== claims.tid || user.sessionVersion !== claims.sv) {
      throw refused(isDpop, 'The access token has been revoked.');
    }
    // The sign-in the token came from must still be live: a wipe acknowledgement, a block, a removed device, reuse
    // detection and RFC 7009 revocation end its access tokens now, not at their `exp` — and for good, whatever
    // happens to the device record afterwards.
    const signIn = await store.refreshTokens.liveHead(user.id, claims.sid, now());
    if (!signIn) {
      // A device-bound token whose device is blocked or wiped says so (403 with the device's code), which tells the
      // app more than a bare 401 would; either way the token is refused.
      if (claims.did !== undefined) await judgeDevice?.(user.id, user.tenantId, claims.did);
      throw refused(isDpop, 'The access token has been revoked.');
    }
    return {
      user,
      userId: user.id,
      tenantId: user.tenantId,
      role: user.role,
      scopes: claims.scope.split(' '),
      deviceId: claims.did,
      boundDeviceId: claims.did ?? signIn.deviceId ?? undefined,
      sessionId: claims.sid,
      expiresAt: claims.exp * 1000,
    };
  };
}

/**
 * The Express form of the authenticator: `req.auth` for the handlers after it. The URL is `originalUrl` (the mount
 * path included: a proof's `htu` names the whole path); the request is its own origin (`protocol` and `host`).
 */
export function authenticate(authenticator: Authenticator): RequestHandler {
  return async (req, _res, next) => {
    req.auth = await authenticator(req.method, req.originalUrl, req.headers, req);
    next();
  };
}

/** Admin routes: the token must carry the `admin` scope and the user must (still) be an admin. */
export const requireAdmin: RequestHandler = (req, _res, next) => {
  if (req.auth?.role !== 'admin' || !req.auth.scopes.includes('admin')) {
    throw errors.forbidden('This needs an administrator.');
  }
  next();
};
