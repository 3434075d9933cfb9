/**
 * The web pages' token calls under the token endpoint's per-address rate limit. The server exchanges the code and
 * refreshes for the browser in process (tokenClient.ts), so these calls never pass the endpoint's limiter: here
 * they are counted by that same limiter (identity/routes.ts, `tokenAddressLimit`), under the browser's address, so
 * signing in or refreshing through the pages costs what the same call made directly would — no more budget for
 * whoever drives the pages, and a limited address is limited here too.
 */
import type { IncomingMessage } from 'node:http';
import type { Request, Response } from 'express';
import type { RateLimitRequestHandler } from 'express-rate-limit';
import { ApiError, errors } from '../errors';
import { cookieValue, SESSION_COOKIE, type WebSession } from './session';
import type { WebSessions } from './sessions';

export interface TokenBudget {
  /** Counts one token-endpoint call from the request's address: 0 when it may go ahead, else the seconds to wait. */
  spend(via: IncomingMessage): Promise<number>;
  /** Without counting anything: 0 when the next call from the request's address may go ahead, else the seconds to wait. */
  wait(via: IncomingMessage): Promise<number>;
}

/** The limiter's own bookkeeping (headers, `req.rateLimit`) goes to throwaway objects, never the browser's answer. */
const scratchResponse = () => ({ headersSent: true, writableEnded: false, statusCode: 200, setHeader() {}, append() {}, once() {} });

export function tokenBudget(limit: RateLimitRequestHandler, key: (req: Request) => string, max: number): TokenBudget {
  return {
    spend: (via) =>
      new Promise((resolve, reject) => {
        // A fresh object per call whose prototype is the browser's request (its address, trust-proxy setting and
        // headers are read through it): the limiter's per-request bookkeeping stays off the real request.
        const req = Object.create(via) as Request;
        void limit(req, scratchResponse() as unknown as Response, (err?: unknown) => {
          if (err instanceof ApiError && err.status === 429) resolve(Number(err.headers['Retry-After']) || 1);
          else if (err) reject(err);
          else resolve(0);
        });
      }),
    async wait(via) {
      const info = await limit.getKey(key(via as Request));
      const reset = info?.resetTime?.getTime() ?? 0;
      // The limiter refuses a call once it would make the count exceed `max`.
      return info && info.totalHits >= max && reset > Date.now() ? Math.max(1, Math.ceil((reset - Date.now()) / 1000)) : 0;
    },
  };
}

/**
 * Ahead of a refresh: when the address's budget is spent, a session whose access token still works keeps it (and its
 * cookie) instead of being refreshed — a refused refresh would otherwise end the session (sessions.ts drops a
 * session whose refresh fails) — and one whose access token has expired is answered 429 with its cookie kept, so it
 * refreshes once the window has passed. Looked at only when the token is near its end: PEEK_MARGIN_MS is at least
 * the margin at which sessions.ts refreshes, so no refresh starts without this look, and the budget's store (shared
 * between processes and nodes) is not asked on every request.
 */
const PEEK_MARGIN_MS = 5 * 60_000;

export function withTokenBudget(sessions: WebSessions, budget: TokenBudget, now: () => number): WebSessions {
  return {
    ...sessions,
    async current(req: Request, res: Response): Promise<WebSession | undefined> {
      const jwe = cookieValue(req.headers, SESSION_COOKIE);
      const held = jwe ? await sessions.sealer.open<WebSession>(jwe) : undefined;
      if (held && held.expiresAt - now() < PEEK_MARGIN_MS && held.refreshExpiresAt > now()) {
        const wait = await budget.wait(req);
        if (wait > 0) {
          if (held.expiresAt > now()) return held;
          throw errors.rateLimited(wait);
        }
      }
      return sessions.current(req, res);
    },
  };
}
