/**
 * The web pages' token calls under the token endpoint's per-address rate limit. The server exchanges the code and
 * refreshes for the browser in process (tokenClient.ts), so these calls never pass the endpoint's limiter: here
 * they are counted by that same limiter (identity/routes.ts, `tokenAddressLimit`), under the browser's address, so
 * signing in or refreshing through the pages costs what the same call made directly would — no more budget for
 * whoever drives the pages, and a limited address is limited here too. A refresh refused this way never reached the
 * provider, so its token is unused: sessions.ts keeps a session whose access token still works, else answers 429.
 */
import type { IncomingMessage } from 'node:http';
import type { Request, Response } from 'express';
import type { RateLimitRequestHandler } from 'express-rate-limit';
import { ApiError } from '../errors';

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
