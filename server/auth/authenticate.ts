/**
 * Bearer authentication for the API. Only the `Authorization` header is accepted: a token in the query string
 * ends up in logs and proxies, so it is refused outright (RFC 6750 §2.3 allows refusing it). Every request also
 * checks the user row: a disabled user or a moved session version (password change, "revoke sessions") ends
 * access tokens before their `exp`.
 */
import type { RequestHandler } from 'express';
import { errors } from '../errors';
import type { Store, Role } from '../store/types';
import { InvalidAccessToken, type AccessTokens } from './accessTokens';

export interface AuthContext {
  userId: string;
  tenantId: string;
  role: Role;
  scopes: string[];
  /** The device the token is bound to (`did`), if any. */
  deviceId?: string;
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
 * req.query parses the query string on every read (Express 5), and sync tokens make it long: a poll's URL is
 * checked as text and parsed only when it might matter.
 */
function mayCarryAccessToken(url: string): boolean {
  const q = url.indexOf('?');
  return q >= 0 && (url.includes('access_token', q) || url.includes('%', q));
}

export function authenticate(store: Store, accessTokens: AccessTokens): RequestHandler {
  return async (req, _res, next) => {
    if (mayCarryAccessToken(req.url) && req.query && Object.prototype.hasOwnProperty.call(req.query, 'access_token')) {
      throw errors.unauthorized('Access tokens are accepted only in the Authorization header.');
    }
    const header = req.headers.authorization;
    if (!header) throw errors.unauthorized('A bearer access token is required.', '');
    const token = bearerToken(header);
    if (!token) throw errors.unauthorized('The Authorization header must be "Bearer <token>".');
    let claims;
    try {
      claims = await accessTokens.verify(token);
    } catch (err) {
      if (err instanceof InvalidAccessToken) {
        throw errors.unauthorized(err.message === 'expired' ? 'The access token has expired.' : 'The access token is not valid.');
      }
      throw err;
    }
    const user = store.users.byId(claims.sub);
    if (!user || user.disabled || user.tenantId !== claims.tid || user.sessionVersion !== claims.sv) {
      throw errors.unauthorized('The access token has been revoked.');
    }
    req.auth = {
      userId: user.id,
      tenantId: user.tenantId,
      role: user.role,
      scopes: claims.scope.split(' '),
      deviceId: claims.did,
      sessionId: claims.sid,
      expiresAt: claims.exp * 1000,
    };
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
