/**
 * The OAuth endpoints Pigeon shares with its identity provider (token, revocation) and the provider's own paths.
 */
import type { Request, RequestHandler, Response } from 'express';
import { rateLimit, ipKeyGenerator, type Options as RateLimitOptions, type RateLimitRequestHandler, type Store as RateLimitStore } from 'express-rate-limit';
import { errors, oauthErrors } from '../errors';
import type { Call, Route } from '../http/table';
import type { AuthService, GrantRequestContext } from './passwordGrant';
import type { AccessTokens } from '../auth/accessTokens';
import { bearerToken } from '../auth/authenticate';
import type { IdentityProvider } from './provider';

export interface AuthRoutesOptions {
  auth: AuthService;
  accessTokens: AccessTokens;
  /** The built-in identity provider, which shares the token and revocation endpoints. */
  idp: Pick<IdentityProvider, 'handle'>;
  maxRequestBytes: number;
  loginFailuresPerUser: number;
  loginFailuresPerUserGlobal: number;
  tokenRequestsPerIp: number;
  rateLimitWindowSeconds: number;
  passwordGrant: boolean;
  /**
   * Where each limiter keeps its counts, by limiter name; express-rate-limit's in-process MemoryStore when not given.
   * Workers count in the primary (server/cluster.ts), so N workers never mean N times the budget.
   */
  rateLimitStore?: (name: string) => RateLimitStore;
  /**
   * The per-address budget of the token and revocation endpoints, when the caller shares it with the web pages'
   * in-process token calls (web/tokenBudget.ts); built here from the options above when not given.
   */
  addressLimit?: RateLimitRequestHandler;
}

/** The key of the per-address budget: the client address (an IPv6 address by its /56). */
export const addressKey = (req: Request): string => ipKeyGenerator(req.ip ?? 'unknown');

/**
 * The token and revocation endpoints' budget per client address: generous, so a NAT full of legitimate users is not
 * locked out. One instance serves the endpoints and the web pages' token calls, which the server makes in process
 * for the browser (web/tokenClient.ts): a sign-in or refresh through the pages costs what a direct call would.
 */
export function tokenAddressLimit(o: { tokenRequestsPerIp: number; rateLimitWindowSeconds: number; rateLimitStore?: (name: string) => RateLimitStore }): RateLimitRequestHandler {
  return rateLimit({
    windowMs: o.rateLimitWindowSeconds * 1000,
    limit: o.tokenRequestsPerIp,
    standardHeaders: 'draft-6',
    legacyHeaders: false,
    keyGenerator: addressKey,
    handler: (req, _res, next, options) => {
      const reset = (req as { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime?.getTime() ?? Date.now() + options.windowMs;
      next(errors.rateLimited(Math.max(1, Math.ceil((reset - Date.now()) / 1000))));
    },
    store: o.rateLimitStore?.('address'),
  });
}

/** Token responses must never be cached (RFC 6749 §5.1). */
const NO_STORE = { 'Cache-Control': 'no-store', Pragma: 'no-cache' } as const;

/**
 * The same headers on every answer of the OAuth endpoints, failures included: a 413 or 415 from the form parser, a
 * 429 from a limiter and an OAuth error all end in the error handler, which sets `Cache-Control: no-store` but not
 * `Pragma`, so they are set here before anything can fail.
 */
const noStore: RequestHandler = (_req, res, next) => {
  for (const [name, value] of Object.entries(NO_STORE)) res.setHeader(name, value);
  next();
};

/** The development grant's requests: the password grant and refreshes of its `prt_` refresh tokens. */
export const developmentGrant = (body: Record<string, unknown>): boolean =>
  body.grant_type === 'password' || (body.grant_type === 'refresh_token' && typeof body.refresh_token === 'string' && body.refresh_token.startsWith('prt_'));

/** Revocations Pigeon answers itself: the development grant's refresh tokens, and access tokens (JWTs). */
export const pigeonRevocation = (body: Record<string, unknown>): boolean =>
  typeof body.token === 'string' && (body.token.startsWith('prt_') || body.token.split('.').length === 3);

/**
 * The identity provider's own endpoints, answered by oidc-provider directly (no Express body parsing): the
 * authorization endpoint and its resumption, the device flow, introspection, discovery in both forms (OpenID and
 * RFC 8414, the same document) and the keys.
 */
export function providerEndpoints(
  idp: Pick<IdentityProvider, 'handle'>,
  limits: { tokenRequestsPerIp: number; rateLimitWindowSeconds: number; rateLimitStore?: (name: string) => RateLimitStore },
): RequestHandler {
  // Their POSTs (device authorization, the device form, introspection) count against the same per-address budget
  // as the token endpoint's: each device authorization stores a record.
  const perAddress = rateLimit({
    windowMs: limits.rateLimitWindowSeconds * 1000,
    limit: limits.tokenRequestsPerIp,
    standardHeaders: 'draft-6',
    legacyHeaders: false,
    keyGenerator: (req) => ipKeyGenerator(req.ip ?? 'unknown'),
    handler: (req, _res, next, options) => {
      const reset = (req as { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime?.getTime() ?? Date.now() + options.windowMs;
      next(errors.rateLimited(Math.max(1, Math.ceil((reset - Date.now()) / 1000))));
    },
    store: limits.rateLimitStore?.('identity-address'),
  });
  const paths = /^\/(?:oauth2\/(?:authorize|device_authorization|device|introspect)(?:\/|$)|\.well-known\/(?:openid-configuration|oauth-authorization-server|jwks\.json)$)/;
  return (req, res, next) => {
    if (!paths.test(req.path)) return next();
    if (req.path === '/.well-known/oauth-authorization-server') req.url = '/.well-known/openid-configuration';
    if (req.method !== 'POST') return idp.handle(req, res);
    perAddress(req, res, (err?: unknown) => (err ? next(err) : idp.handle(req, res)));
  };
}

export function authRoutes(o: AuthRoutesOptions): Route[] {
  const windowMs = o.rateLimitWindowSeconds * 1000;
  const limited: RateLimitOptions['handler'] = (req, _res, next, options) => {
    const reset = (req as { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime?.getTime() ?? Date.now() + options.windowMs;
    next(errors.rateLimited(Math.max(1, Math.ceil((reset - Date.now()) / 1000))));
  };
  const perAddress = o.addressLimit ?? tokenAddressLimit(o);
  // Failed password grants (only failures count). A guessing run is capped per (username, client address), and a
  // run spread over many addresses by a slower budget per username; neither can lock the user out of a device that
  // proves it already holds a live sign-in of theirs (its refresh token on the grant) — such a device has a budget
  // of its own, so a stolen refresh token is no way to guess the password either.
  const passwordGrant = (req: Request) => req.body?.grant_type === 'password' && typeof req.body?.username === 'string';
  const username = (req: Request) => String(req.body.username).toLowerCase();
  const proof = (res: Response) => res.locals.provenSignIn as string | undefined;
  const failures = (name: string, limit: number, key: (req: Request, res: Response) => string, applies: (req: Request, res: Response) => boolean) => {
    return rateLimit({
      windowMs,
      limit,
      standardHeaders: false,
      legacyHeaders: false,
      skipSuccessfulRequests: true,
      skip: (req, res) => !passwordGrant(req) || !applies(req, res),
      keyGenerator: key,
      handler: limited,
      store: o.rateLimitStore?.(name),
    });
  };
  const perUserAndAddress = failures('failures-user-address', o.loginFailuresPerUser, (req) => `user:${username(req)}|${ipKeyGenerator(req.ip ?? 'unknown')}`, (_req, res) => !proof(res));
  const perUser = failures('failures-user', o.loginFailuresPerUserGlobal, (req) => `user:${username(req)}`, (_req, res) => !proof(res));
  const perProvenSignIn = failures('failures-sign-in', o.loginFailuresPerUser, (_req, res) => `sign-in:${proof(res)}`, (_req, res) => !!proof(res));
  const checkProof: RequestHandler = async (req, res, next) => {
    if (passwordGrant(req)) res.locals.provenSignIn = await o.auth.provenSignIn(req.body as Record<string, unknown>);
    next();
  };

  /**
   * The token and revocation endpoints are shared: the identity provider (oidc-provider) answers every request but
   * the development grant's — `password`, and `refresh_token` with one of its `prt_` tokens — and revocation of those
   * tokens and of access tokens (a JWT names its sign-in, which Pigeon ends itself). Both go through the same rate
   * limits first; the provider reads the same body again.
   */
  const toProvider = (pigeons: (body: Record<string, unknown>) => boolean): RequestHandler => (req, res, next) => {
    if (pigeons((req.body ?? {}) as Record<string, unknown>)) return next();
    o.idp.handle(req, res, (req as { rawBody?: Buffer }).rawBody ?? Buffer.alloc(0));
  };

  const grantContext = (call: Call): GrantRequestContext => ({
    ip: call.ip,
    userAgent: typeof call.headers['user-agent'] === 'string' ? call.headers['user-agent'] : undefined,
  });

  return [
    {
      method: 'POST',
      path: '/oauth2/token',
      body: 'form',
      bodyLimit: o.maxRequestBytes,
      before: [noStore, perAddress],
      // The failure budgets key on the form's username and on the proof of a live sign-in, so they follow the body.
      after: [toProvider(developmentGrant), checkProof, perUserAndAddress, perUser, perProvenSignIn],
      handler: async (call) => {
        const params = call.body as Record<string, unknown>;
        switch (params.grant_type) {
          case 'password':
            return { headers: NO_STORE, body: await o.auth.passwordGrant(params, grantContext(call)) };
          case 'refresh_token':
            return { headers: NO_STORE, body: await o.auth.refreshGrant(params, grantContext(call)) };
          case undefined:
          case '':
            throw oauthErrors.invalidRequest('grant_type is required');
          default:
            throw oauthErrors.unsupportedGrantType(`unsupported grant_type ${JSON.stringify(String(params.grant_type)).slice(0, 60)}`);
        }
      },
    },
    {
      method: 'POST',
      path: '/oauth2/revoke',
      body: 'form',
      bodyLimit: o.maxRequestBytes,
      before: [noStore, perAddress],
      after: [toProvider(pigeonRevocation)],
      handler: async (call) => {
        const params = call.body as Record<string, unknown>;
        let sid: string | undefined;
        const token = typeof params.token === 'string' ? params.token : '';
        if (!token.startsWith('prt_') && bearerToken(`Bearer ${token}`)) {
          sid = await o.accessTokens.verify(token).then((c) => c.sid, () => undefined);
        }
        await o.auth.revoke(params, sid);
        return { status: 200, headers: NO_STORE, body: {} };
      },
    },
  ];
}
