/**
 * The web session as API authentication, for `/admin/v1/*` and `/account/v1/*` only (never `/v1/*`, which is the
 * device apps' and needs their device): a request with no Authorization header but the session cookie gets the
 * session's access token as its bearer token, so the one authenticator (auth/authenticate.ts) judges it like any
 * other — revocation, disabled users, session versions, admin scope — and the routes see a normal `call.auth`.
 *
 * CSRF: the cookie is SameSite=Strict already; on top, every unsafe request it authenticates must carry
 * `X-CSRF-Token` equal to the session's (the page reads it from GET /web/session) and an `Origin` equal to the
 * server's own (the issuer's origin); otherwise 403. A request with its own Authorization header is left alone:
 * it carries no ambient credential a forged request could ride on.
 */
import crypto from 'node:crypto';
import type { RequestHandler } from 'express';
import { errors } from '../errors';
import { cookieValue, SESSION_COOKIE, type WebSession } from './session';
import type { WebSessions } from './sessions';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

const sameText = (a: string, b: string) => a.length === b.length && crypto.timingSafeEqual(Buffer.from(a), Buffer.from(b));

/** Throws 403 unless an unsafe request carries the session's CSRF token and comes from our own origin. */
export function checkCsrf(method: string, headers: Record<string, string | string[] | undefined>, session: WebSession, ownOrigin: string): void {
  if (SAFE_METHODS.has(method)) return;
  const origin = headers.origin;
  if (typeof origin !== 'string' || origin !== ownOrigin) throw errors.forbidden('A request from the web pages must come from their own origin.');
  const token = headers['x-csrf-token'];
  if (typeof token !== 'string' || !sameText(token, session.csrf)) throw errors.forbidden('The request lacks the web session\'s CSRF token (X-CSRF-Token).');
}

export function cookieAuthentication(sessions: WebSessions, ownOrigin: string): RequestHandler {
  return async (req, res, next) => {
    if (req.headers.authorization !== undefined || cookieValue(req.headers, SESSION_COOKIE) === undefined) return next();
    const session = await sessions.current(req, res);
    if (!session) throw errors.unauthorized('The web session has ended; sign in again.');
    checkCsrf(req.method, req.headers, session, ownOrigin);
    req.headers.authorization = `Bearer ${session.accessToken}`;
    next();
  };
}
