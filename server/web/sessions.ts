/**
 * Reading, starting, refreshing and ending web sessions (session.ts holds the cookie format). Shared by the pages
 * (routes.ts) and the cookie authentication of the APIs (cookieAuth.ts).
 */
import crypto from 'node:crypto';
import type { Request, Response } from 'express';
import type { AccessTokens } from '../auth/accessTokens';
import { errors } from '../errors';
import type { Store } from '../store/types';
import type { ProviderPoster, TokenAnswer } from './tokenClient';
import { clearCookie, cookieValue, createSealer, randomToken, setCookie, SESSION_COOKIE, type WebSession } from './session';

/** Refresh a little before expiry, so a call never starts with a token about to die on its way. */
const REFRESH_MARGIN_MS = 60_000;
/** How long a refresh's result is kept for requests still carrying the old cookie (sent before the new one arrived). */
const REFRESH_REMEMBER_MS = 30_000;
/**
 * How long a process's claim of a refresh holds before another may take it over (its holder died). A refresh is one
 * call to the provider in process, milliseconds; taking over a live holder's refresh would present the token twice.
 */
const REFRESH_LEASE_MS = 10_000;
/** How often a request waiting for another process's refresh looks for its result, and how long it waits at most. */
const REFRESH_POLL_MS = 50;
const REFRESH_WAIT_MS = 10_000;

export interface WebSessionsOptions {
  serverSecret: Buffer;
  accessTokens: AccessTokens;
  post: ProviderPoster;
  now(): number;
  refreshTokenTtlSeconds: number;
  /** The store's refreshes, through which worker processes and nodes agree on who refreshes a session. */
  refreshes: Store['webRefresh'];
}

const hashOf = (refreshToken: string) => crypto.createHash('sha256').update(refreshToken).digest('base64url');
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function createWebSessions(o: WebSessionsOptions) {
  const sealer = createSealer(o.serverSecret);
  /**
   * One refresh per refresh token at a time (the page polls and acts at once): refresh tokens rotate, and presenting
   * a used one again counts as theft and ends the sign-in. Two levels: requests of this process join the refresh in
   * flight here (no store round trip); across processes (workers over one SQLite file, PostgreSQL nodes) the store's
   * `webRefresh` rows decide who refreshes and hand its result to the others. Keyed by a hash, never the token.
   */
  const refreshing = new Map<string, Promise<WebSession | undefined>>();
  let purgedAt = 0;

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

  /** A stored result: '' is a failed (or since signed-out) refresh. */
  const opened = (result: string) => (result === '' ? undefined : sealer.open<WebSession>(result));

  /** The refresh this process now holds: done, and its result stored for the others (a failure too, so they stop waiting). */
  async function refreshHeld(req: Request, session: WebSession, key: string): Promise<WebSession | undefined> {
    const answer = await o.post(req, '/oauth2/token', { grant_type: 'refresh_token', refresh_token: session.refreshToken }).catch(() => undefined);
    if (answer?.status === 429) {
      // Refused before it reached the provider (the address's token budget): the token is unused, so this is no
      // failure to remember. The claim ends at once (another call may refresh later) and the session goes on with
      // its access token while that still works.
      await o.refreshes.complete(key, '', null, o.now()).catch(() => false);
      if (session.expiresAt > o.now()) return session;
      throw errors.rateLimited('retryAfter' in answer && typeof answer.retryAfter === 'number' ? answer.retryAfter : 1);
    }
    const result = answer && (await fromTokens(answer, session.csrf).catch(() => undefined));
    const now = o.now();
    const sealed = result ? await sealer.seal(result) : '';
    // The token is rotated whatever happens here: this request answers with its result even if the store fails
    // (the others then wait out their bound and answer 401).
    await o.refreshes.complete(key, sealed, result ? hashOf(result.refreshToken) : null, now + REFRESH_REMEMBER_MS).catch(() => false);
    if (now - purgedAt >= REFRESH_REMEMBER_MS) {
      purgedAt = now;
      await o.refreshes.purge(now).catch(() => 0); // the next purge takes what this one left
    }
    return result;
  }

  /** Claims the refresh in the store; when another process holds it, waits for its result (bounded: then failed). */
  async function refreshShared(req: Request, session: WebSession, key: string): Promise<WebSession | undefined> {
    let row = await o.refreshes.claim(key, o.now(), REFRESH_LEASE_MS);
    for (let polls = 0; ; polls++) {
      if (row === 'claimed') return refreshHeld(req, session, key);
      if (row.result !== null) return opened(row.result);
      if (polls >= REFRESH_WAIT_MS / REFRESH_POLL_MS) return undefined; // its holder is stuck: as a failed refresh
      await sleep(REFRESH_POLL_MS);
      const current = await o.refreshes.read(key);
      // Gone, or its lease lapsed (the holder died before it finished): claim it again.
      row = current && current.expiresAt > o.now() ? current : await o.refreshes.claim(key, o.now(), REFRESH_LEASE_MS);
    }
  }

  function refresh(req: Request, session: WebSession): Promise<WebSession | undefined> {
    const key = hashOf(session.refreshToken);
    let pending = refreshing.get(key);
    if (!pending) {
      pending = refreshShared(req, session, key).finally(() => refreshing.delete(key));
      refreshing.set(key, pending);
    }
    return pending;
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
        const held: WebSession = session;
        session = session.refreshExpiresAt > o.now() ? await refresh(req, session) : undefined;
        // A refresh the token budget refused keeps the session as it was: its cookie stays as it is.
        if (session && session !== held) await write(res, session);
      }
      if (!session) clearCookie(res, SESSION_COOKIE);
      return session;
    },

    /** Signs out: the refresh token is revoked (ending the sign-in and its access tokens) and the cookie cleared. */
    async end(req: Request, res: Response, session: WebSession | undefined): Promise<void> {
      if (session) {
        await o.post(req, '/oauth2/revoke', { token: session.refreshToken, token_type_hint: 'refresh_token' }).catch(() => undefined);
        // A remembered refresh (in any process) must not hand the ended session to an old copy of the cookie. Should
        // the store fail, the revocation above already made that session's tokens worthless.
        await o.refreshes.forget(hashOf(session.refreshToken)).catch(() => 0);
      }
      clearCookie(res, SESSION_COOKIE);
    },

    sealer,
  };
}

export type WebSessions = ReturnType<typeof createWebSessions>;
