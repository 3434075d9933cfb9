/**
 * The web pages (README, "Web pages"): the admin center under /admin/ and "My devices" at /account/devices, each
 * one static HTML shell (no inline script or style) that loads /web/assets/app.mjs, plus the sign-in round trip
 * (/web/login → the identity provider → /web/callback), GET /web/session and POST /web/logout.
 *
 * The shells are served only to a signed-in browser (others are sent to /web/login), and the admin shell only to
 * an administrator (403 page otherwise); the APIs the pages call check again, on every call.
 */
import crypto from 'node:crypto';
import express, { type Request, type Response } from 'express';
import type { Store } from '../store/types';
import type { AuthContext } from '../auth/authenticate';
import { ApiError, errors } from '../errors';
import { WEB_CALLBACK_PATH, WEB_CLIENT_ID } from './client';
import { loadAssets, serveAssets } from './assets';
import { checkCsrf } from './cookieAuth';
import { clearCookie, cookieValue, LOGIN_COOKIE, LOGIN_TTL_MS, randomToken, SESSION_COOKIE, setCookie, type LoginState, type WebSession } from './session';
import type { WebSessions } from './sessions';
import type { ProviderPoster } from './tokenClient';
import type { TokenBudget } from './tokenBudget';

/** The pages' policy: our own script and style only, API calls to ourselves, nothing framed, no <base>. */
export const WEB_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/** Client-side routes: /admin, /admin/… (but never the API under /admin/v1) and /account/devices. */
// `/admin`, `/admin/` and `/admin/<segments>` (history-API routes of the admin center), never under `/admin/v1` (the
// API) and never with an empty segment (`/admin//v1/audit` must reach the API's 404, not a page).
const ADMIN_SHELL = /^\/admin(?:\/|\/(?!v1(?:\/|$))[A-Za-z0-9_-]+(?:\/[A-Za-z0-9_-]+)*\/?)?$/;
const ACCOUNT_SHELL = /^\/account\/devices\/?$/;
const DEFAULT_RETURN = '/account/devices';

const html = (title: string, body: string, script = true) =>
  `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">` +
  `<title>${title}</title><link rel="stylesheet" href="/web/assets/app.css">` +
  (script ? '<script type="module" src="/web/assets/app.mjs"></script>' : '') +
  `</head><body>${body}</body></html>`;

const SHELL = html('Pigeon', '<div id="app"><main id="main"><p>Loading…</p></main></div><noscript><p class="notice">These pages need JavaScript.</p></noscript>');

/** The sign-in message when the address has spent its token budget (the token endpoint's rate limit). */
const limitedText = (seconds: number) =>
  `Too many sign-ins and session refreshes came from your network address. Try again in ${seconds < 120 ? `${seconds} seconds` : `${Math.ceil(seconds / 60)} minutes`}.`;

function send(res: Response, status: number, page: string) {
  res.status(status).setHeader('Content-Security-Policy', WEB_CSP);
  res.setHeader('Cache-Control', 'no-store');
  res.type('html').send(page);
}

const messagePage = (title: string, text: string, link: { href: string; label: string }) =>
  html(title, `<main id="main" class="message"><h1>${title}</h1><p>${text}</p><p><a href="${link.href}">${link.label}</a></p></main>`, false);

/** Where to go after signing in: only our own page paths, never another site (an open redirect). */
function safeReturn(value: unknown): string {
  return typeof value === 'string' && (ADMIN_SHELL.test(value) || ACCOUNT_SHELL.test(value)) ? value : DEFAULT_RETURN;
}

/** After a path's handlers, like the API's routes (http/table.ts): any other method is 405 with `Allow`. */
const notAllowed =
  (allowed: string[]): express.RequestHandler =>
  () => {
    throw errors.methodNotAllowed(allowed);
  };

export interface WebPagesOptions {
  issuer: string;
  store: Store;
  sessions: WebSessions;
  post: ProviderPoster;
  now(): number;
  /** The API's own check of an access token (auth/authenticate.ts): 401 when it is no longer good. */
  authenticate(accessToken: string): Promise<AuthContext>;
  /** The token endpoint's per-address budget, which the sign-in's code exchange spends (tokenBudget.ts). */
  budget?: TokenBudget;
}

export function webPages(o: WebPagesOptions): express.Router {
  const { sessions } = o;
  const router = express.Router();
  const ownOrigin = new URL(o.issuer).origin;
  const redirectUri = `${o.issuer}${WEB_CALLBACK_PATH}`;

  router.use('/web/assets', serveAssets(loadAssets()));

  const limited = (res: Response, seconds: number, link = { href: '/web/login', label: 'Sign in again' }) => {
    res.setHeader('Retry-After', String(seconds));
    send(res, 429, messagePage('Too many sign-ins', limitedText(seconds), link));
  };

  const shell = (adminOnly: boolean) => async (req: Request, res: Response) => {
    // A session whose token has expired while its address's budget is spent waits (429), its cookie kept.
    const session = await sessions.current(req, res).catch((err: unknown) => {
      if (err instanceof ApiError && err.status === 429) return limited(res, Number(err.headers['Retry-After']) || 1, { href: req.path, label: 'Try again' });
      throw err;
    });
    if (res.headersSent) return;
    if (!session) return res.redirect(302, `/web/login?returnTo=${encodeURIComponent(req.path)}`);
    if (adminOnly && session.role !== 'admin') {
      return send(res, 403, messagePage('Not an administrator', 'The admin center is for administrators of your organization.', { href: DEFAULT_RETURN, label: 'Go to My devices' }));
    }
    send(res, 200, SHELL);
  };

  // Authorization code + PKCE (S256) as the pigeon-web client; the verifier and state wait in a sealed cookie.
  const login = async (req: Request, res: Response) => {
    // Said before the sign-in pages rather than after them: their code exchange would be refused.
    const wait = (await o.budget?.wait(req)) ?? 0;
    if (wait > 0) return limited(res, wait);
    const verifier = randomToken();
    const started: LoginState = { verifier, state: randomToken(16), returnTo: safeReturn(req.query.returnTo), expiresAt: o.now() + LOGIN_TTL_MS };
    setCookie(res, LOGIN_COOKIE, await sessions.sealer.seal(started), { maxAgeMs: LOGIN_TTL_MS, sameSite: 'Lax' });
    const url = new URL(`${o.issuer}/oauth2/authorize`);
    url.search = new URLSearchParams({
      client_id: WEB_CLIENT_ID,
      response_type: 'code',
      redirect_uri: redirectUri,
      // `admin` is granted only to administrators (the consent step filters it), so every user asks the same.
      scope: 'openid offline_access mail admin',
      code_challenge: crypto.createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
      state: started.state,
    }).toString();
    res.setHeader('Cache-Control', 'no-store');
    res.redirect(302, url.toString());
  };

  const callback = async (req: Request, res: Response) => {
    const jwe = cookieValue(req.headers, LOGIN_COOKIE);
    const started = jwe ? await sessions.sealer.open<LoginState>(jwe) : undefined;
    clearCookie(res, LOGIN_COOKIE, 'Lax');
    const again = { href: '/web/login', label: 'Sign in again' };
    if (!started || started.expiresAt < o.now() || req.query.state !== started.state) {
      return send(res, 400, messagePage('Sign-in problem', 'This sign-in has expired or was not started here.', again));
    }
    if (typeof req.query.code !== 'string') {
      return send(res, 400, messagePage('Sign-in problem', 'The sign-in did not complete.', again));
    }
    const answer = await o.post(req, '/oauth2/token', { grant_type: 'authorization_code', code: req.query.code, redirect_uri: redirectUri, code_verifier: started.verifier });
    if (answer.status === 429) return limited(res, answer.retryAfter ?? 1);
    if (!(await sessions.start(res, answer))) return send(res, 400, messagePage('Sign-in problem', 'The sign-in could not be completed.', again));
    res.setHeader('Cache-Control', 'no-store');
    res.redirect(303, started.returnTo);
  };

  /**
   * The pages people navigate to (HTML, not API operations: schema/openapi.yaml describes them in its introduction,
   * *Web pages*, as it does the sign-in pages), found by one table rather than as routes of the API's kind.
   */
  const pages: Array<[RegExp, (req: Request, res: Response) => unknown]> = [
    [/^\/$/, (_req, res) => res.redirect(302, DEFAULT_RETURN)],
    [ADMIN_SHELL, shell(true)],
    [ACCOUNT_SHELL, shell(false)],
    [/^\/web\/login$/, login],
    [new RegExp(`^${WEB_CALLBACK_PATH}$`), callback],
    [/^\/web\/signed-out$/, (_req, res) => send(res, 200, messagePage('Signed out', 'You are signed out of Pigeon.', { href: '/web/login', label: 'Sign in again' }))],
  ];
  router.use(async (req, res, next) => {
    const page = req.method === 'GET' || req.method === 'HEAD' ? pages.find(([path]) => path.test(req.path)) : undefined;
    if (!page) return next();
    await page[1](req, res);
  });

  // What the page needs to know about its session; never a token, only the CSRF token it must echo.
  router.route('/web/session').get(async (req, res) => {
    const session = await sessions.current(req, res);
    if (!session) throw errors.unauthorized('Not signed in.');
    // Judged as the API judges it (revoked sign-in, disabled user, moved session version), not by the cookie alone.
    const { user } = await o.authenticate(session.accessToken);
    const tenant = await o.store.tenants.get(user.tenantId);
    res.setHeader('Cache-Control', 'no-store');
    res.json({
      user: { id: user.id, username: user.username, displayName: user.displayName },
      role: user.role,
      csrfToken: session.csrf,
      tenant: { id: user.tenantId, name: tenant?.name ?? null },
    });
  }).all(notAllowed(['GET', 'HEAD']));

  router.route('/web/logout').post(async (req, res) => {
    const session = await sessions.current(req, res).catch(async (err: unknown) => {
      // An expired token on an address whose budget is spent cannot be refreshed, but signing out must still work:
      // the cookie's own session is checked and its refresh token revoked.
      if (!(err instanceof ApiError && err.status === 429)) throw err;
      const jwe = cookieValue(req.headers, SESSION_COOKIE);
      return jwe ? sessions.sealer.open<WebSession>(jwe) : undefined;
    });
    if (session) checkCsrf(req.method, req.headers, session, ownOrigin);
    await sessions.end(req, res, session);
    res.status(204).end();
  }).all(notAllowed(['POST']));

  return router;
}
