/**
 * Reading, starting, refreshing and ending web sessions (session.ts holds the cookie format). Shared by the pages
 * (routes.ts) and the cookie authentication of the APIs (cookieAuth.ts).
 */
import crypto from 'node:crypto';
import type { Request, Response } from 'express';
import type { AccessTokens } from '../auth/accessTokens';
import type { ProviderPoster, TokenAnswer } from './tokenClient';
import { clearCookie, cookieValue, createSealer, randomToken, setCookie, SESSION_COOKIE, type WebSession } from './session';

/** Refresh a little before expiry, so a call never starts with a token about to die on its way. */
const REFRESH_MARGIN_MS = 60_000;
/** How long a refresh's result is kept for requests still carrying the old cookie (sent before the new one arrived). */
const REFRESH_REMEMBER_MS = 30_000;

export interface WebSessionsOptions {
  serverSecret: Buffer;
  accessTokens: AccessTokens;
  post: ProviderPoster;
  now(): number;
  refreshTokenTtlSeconds: number;
}

export function createWebSessions(o: WebSessionsOptions) {
  const sealer = createSealer(o.serverSecret);
  /**
   * One refresh per refresh token at a time (the page polls and acts at once): refresh tokens rotate, and presenting
   * a used one again counts as theft and ends the sign-in. Per process; keyed by a hash, never the token itself.
   */
  const refreshing = new Map<string, { pending: Promise<WebSession | undefined>; result?: WebSession }>();

  async function write(res: Response, session: WebSession) {
    setCookie(res, SESSION_COOKIE, await sealer.seal(session), { maxAgeMs: session.refreshExpiresAt - o.now(), sameSite: 'Strict' });
  }

  /** A session from a token answer (code exchange or refresh); undefined when the answer is not a success. */
  async function fromTokens(answer: TokenAnswer, csrf: string): Promise<WebSession | undefined> {
    const { access_token: accessToken, refresh_token: refreshToken } = answer.body;
    if (answer.status !== 200 || typeof accessToken !== 'string' || typeof refreshToken !== 'string') return undefined;
    const claims = await o.accessTokens.verify(accessToken);
    return {
      accessToken,
      refreshToken,
      expiresAt: claims.exp * 1000,
      refreshExpiresAt: o.now() + o.refreshTokenTtlSeconds * 1000,
      userId: claims.sub,
      role: claims.role,
      csrf,
    };
  }

  async function refresh(req: Request, session: WebSession): Promise<WebSession | undefined> {
    const key = crypto.createHash('sha256').update(session.refreshToken).digest('base64url');
    let entry = refreshing.get(key);
    if (!entry) {
      const started: { pending: Promise<WebSession | undefined>; result?: WebSession } = {
        pending: o
          .post(req, '/oauth2/token', { grant_type: 'refresh_token', refresh_token: session.refreshToken })
          .then((answer) => fromTokens(answer, session.csrf))
          .then((result) => (started.result = result), () => undefined),
      };
      entry = started;
      refreshing.set(key, entry);
      setTimeout(() => refreshing.delete(key), REFRESH_REMEMBER_MS).unref();
    }
    return entry.pending;
  }

  return {
    /** Starts a session from the code exchange's answer; undefined when the exchange failed. */
    async start(res: Response, answer: TokenAnswer): Promise<WebSession | undefined> {
      const session = await fromTokens(answer, randomToken());
      if (session) await write(res, session);
      return session;
    },

    /**
     * The request's session, refreshed (and the cookie rewritten) when its access token is near expiry; undefined,
     * and the cookie cleared, when there is none or it can no longer be refreshed.
     */
    async current(req: Request, res: Response): Promise<WebSession | undefined> {
      const jwe = cookieValue(req.headers, SESSION_COOKIE);
      if (!jwe) return undefined;
      let session = await sealer.open<WebSession>(jwe);
      if (session && session.expiresAt - o.now() < REFRESH_MARGIN_MS) {
        session = session.refreshExpiresAt > o.now() ? await refresh(req, session) : undefined;
        if (session) await write(res, session);
      }
      if (!session) clearCookie(res, SESSION_COOKIE);
      return session;
    },

    /** Signs out: the refresh token is revoked (ending the sign-in and its access tokens) and the cookie cleared. */
    async end(req: Request, res: Response, session: WebSession | undefined): Promise<void> {
      if (session) {
        await o.post(req, '/oauth2/revoke', { token: session.refreshToken, token_type_hint: 'refresh_token' }).catch(() => undefined);
        // A remembered refresh must not hand the ended session to an old copy of the cookie.
        for (const [key, entry] of refreshing) if (entry.result?.refreshToken === session.refreshToken) refreshing.delete(key);
      }
      clearCookie(res, SESSION_COOKIE);
    },

    sealer,
  };
}

export type WebSessions = ReturnType<typeof createWebSessions>;
