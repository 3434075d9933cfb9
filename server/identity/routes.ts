/**
 * The OAuth endpoints and the issuer's discovery documents.
 */
import type { Request, RequestHandler, Response } from 'express';
import { rateLimit, ipKeyGenerator, type Options as RateLimitOptions, type Store as RateLimitStore } from 'express-rate-limit';
import { errors, oauthErrors } from '../errors';
import type { Route } from '../http/table';
import type { AuthService } from './service';
import type { AccessTokens } from './accessTokens';
import { bearerToken } from './authenticate';
import type { KeyMaterial } from './keys';
import type { Regions } from '../regions';

export interface AuthRoutesOptions {
  auth: AuthService;
  accessTokens: AccessTokens;
  keys: KeyMaterial;
  issuer: string;
  /** This node's region and the public directory, shown in the discovery document. */
  regions: Regions;
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

export function authRoutes(o: AuthRoutesOptions): Route[] {
  const windowMs = o.rateLimitWindowSeconds * 1000;
  const limited: RateLimitOptions['handler'] = (req, _res, next, options) => {
    const reset = (req as { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime?.getTime() ?? Date.now() + options.windowMs;
    next(errors.rateLimited(Math.max(1, Math.ceil((reset - Date.now()) / 1000))));
  };
  // Per client address: generous, so a NAT full of legitimate users is not locked out.
  const perAddress = rateLimit({
    windowMs,
    limit: o.tokenRequestsPerIp,
    standardHeaders: 'draft-6',
    legacyHeaders: false,
    keyGenerator: (req) => ipKeyGenerator(req.ip ?? 'unknown'),
    handler: limited,
    store: o.rateLimitStore?.('address'),
  });
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

  return [
    {
      method: 'POST',
      path: '/oauth2/token',
      body: 'form',
      bodyLimit: o.maxRequestBytes,
      before: [noStore, perAddress],
      // The failure budgets key on the form's username and on the proof of a live sign-in, so they follow the body.
      after: [checkProof, perUserAndAddress, perUser, perProvenSignIn],
      handler: async (call) => {
        const params = call.body as Record<string, unknown>;
        switch (params.grant_type) {
          case 'password':
            return { headers: NO_STORE, body: await o.auth.passwordGrant(params) };
          case 'refresh_token':
            return { headers: NO_STORE, body: await o.auth.refreshGrant(params) };
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
    {
      method: 'GET',
      path: '/.well-known/openid-configuration',
      handler: () => ({
        body: {
          issuer: o.issuer,
          token_endpoint: `${o.issuer}/oauth2/token`,
          revocation_endpoint: `${o.issuer}/oauth2/revoke`,
          jwks_uri: `${o.issuer}/.well-known/jwks.json`,
          grant_types_supported: [...(o.passwordGrant ? ['password'] : []), 'refresh_token'],
          response_types_supported: [],
          token_endpoint_auth_methods_supported: ['none'],
          scopes_supported: ['mail', 'admin'],
          id_token_signing_alg_values_supported: ['EdDSA'],
          subject_types_supported: ['public'],
          // Regions (README): this issuer's, and where every region's mailboxes are served.
          pigeon_region: o.regions.region,
          pigeon_regions: o.regions.directory,
        },
      }),
    },
    {
      method: 'GET',
      path: '/.well-known/jwks.json',
      handler: () => ({ headers: { 'Cache-Control': 'public, max-age=300' }, body: { keys: [o.keys.publicJwk] } }),
    },
  ];
}
