/**
 * Bearer authentication for the API. Only the `Authorization` header is accepted: a token in the query string
 * ends up in logs and proxies, so it is refused outright (RFC 6750 §2.3 allows refusing it). Every request also
 * checks the user row: a disabled user or a moved session version (password change, "revoke sessions") ends
 * access tokens before their `exp`.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { RequestHandler } from 'express';
import { errors } from '../errors';
import type { Store, Role, User } from '../store/types';
import { InvalidAccessToken, type AccessTokens } from './accessTokens';
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
  /** The sign-in (refresh family) the token belongs to. */
  sessionId: string;
  expiresAt: number;
}

export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/i.exec(header.trim());
  return m?.[1];
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

/** Authenticates one request from its URL (for the query-string check) and headers; throws 401 when it cannot (421 for another region's token). */
export type Authenticator = (url: string, headers: IncomingHttpHeaders) => Promise<AuthContext>;

/**
 * 421 wrongRegion when the token's region is another one of the directory (README, "Regions"); nothing when it is
 * this node's, names no region (a token from before regions is this region's) or names one the directory does not
 * list (then the token is judged here like any other, and fails). The base URL comes from this node's directory.
 */
function misdirected(regions: Regions | undefined, rgn: string | undefined): void {
  if (!regions || rgn === undefined || rgn === regions.region || !Object.hasOwn(regions.directory, rgn)) return;
  throw errors.wrongRegion(rgn, regions.directory[rgn]!);
}

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
): Authenticator {
  return async (url, headers) => {
    if (mayCarryAccessToken(url) && new URLSearchParams(url.slice(url.indexOf('?') + 1)).has('access_token')) {
      throw errors.unauthorized('Access tokens are accepted only in the Authorization header.');
    }
    const header = headers.authorization;
    if (!header) throw errors.unauthorized('A bearer access token is required.', '');
    const token = bearerToken(header);
    if (!token) throw errors.unauthorized('The Authorization header must be "Bearer <token>".');
    let claims;
    try {
      claims = await accessTokens.verify(token);
    } catch (err) {
      if (err instanceof InvalidAccessToken) {
        misdirected(regions, claimedRegion(token));
        throw errors.unauthorized(err.message === 'expired' ? 'The access token has expired.' : 'The access token is not valid.');
      }
      throw err;
    }
    misdirected(regions, claims.rgn);
    // A verified token of a region the directory does not list was not issued for this node's mailboxes either.
    if (regions && claims.rgn !== undefined && claims.rgn !== regions.region) throw errors.unauthorized('The access token is not valid.');
    // One read after the other, not both at once: the first is what checks the hot cache's data version for this
    // request (server/store/cached.ts), and two at once would both check it.
    const user = await store.users.byId(claims.sub);
    if (!user || user.disabled || user.tenantId !== claims.tid || user.sessionVersion !== claims.sv) {
      throw errors.unauthorized('The access token has been revoked.');
    }
    // The sign-in the token came from must still be live: a wipe acknowledgement, a block, a removed device, reuse
    // detection and RFC 7009 revocation end its access tokens now, not at their `exp` — and for good, whatever
    // happens to the device record afterwards.
    const signIn = await store.refreshTokens.liveHead(user.id, claims.sid, now());
    if (!signIn) {
      // A device-bound token whose device is blocked or wiped says so (403 with the device's code), which tells the
      // app more than a bare 401 would; either way the token is refused.
      if (claims.did !== undefined) await judgeDevice?.(user.id, user.tenantId, claims.did);
      throw errors.unauthorized('The access token has been revoked.');
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

/** The Express form of the authenticator: `req.auth` for the handlers after it. */
export function authenticate(authenticator: Authenticator): RequestHandler {
  return async (req, _res, next) => {
    req.auth = await authenticator(req.url, req.headers);
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
