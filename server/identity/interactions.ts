/**
 * The sign-in pages of the built-in identity provider, at /interaction/<uid>: password (or a client certificate),
 * then TOTP when the user has it (enrolment when the tenant requires it, else offered), then consent, which makes
 * the grant and its sign-in record. Plain HTML forms (pages.ts); Express parses them.
 *
 * Defences:
 * - CSRF: every form carries a token bound to the interaction (an HMAC of its uid under a key derived from the
 *   server secret), and a POST whose Origin is another site is refused. The interaction itself is tied to the
 *   browser by oidc-provider's signed cookie, so a form replayed from another browser has no interaction to finish.
 * - Guessing: failed passwords count per (username, client address) and, more slowly, per username from all
 *   addresses together — but a browser holding the user's "known device" cookie (set after a complete sign-in of
 *   that user) is held only to a budget of its own, so nobody can lock a user out of the browsers they already use.
 *   TOTP failures count per user. Over budget: 429 with Retry-After, and the password is not even checked.
 * - Between the steps, what the user has proven is kept server-side (an identity record keyed by the interaction),
 *   never in a form field.
 *
 * Certificate sign-in (README, "Certificate sign-in") is an alternative first factor. Browsers ask the user for a
 * client certificate on every connection to a listener that requests one, so it has a listener of its own (main.ts,
 * PIGEON_CERT_SIGNIN_PORT, same host and server certificate) serving only GET /interaction/<uid>/certificate
 * (`certificateRoutes`). The interaction cookie reaches it (cookies are scoped by host, not port). The page
 * identifies the certificate OpenSSL verified in the handshake (clientCert.ts), finds the user it names in the tenant
 * whose CA issued it, records that first factor (amr `x509`) in the pending step and sends the browser back to
 * /interaction/<uid> on the main listener, which continues exactly as after a password: TOTP when the user has
 * enrolled, enrolment offered (or required), consent. Continuing on the main listener keeps every form on the
 * issuer's origin (the CSRF and Origin checks stay as they are) and stops the certificate prompts. A certificate does
 * not count as a second factor: its key usually sits in the same browser or operating system that holds the
 * session, and the server cannot tell a smart card from a file, so an enrolled user still gives a TOTP code.
 * Refusals (no certificate, unknown CA, revoked, expired, no such user in that tenant, disabled) are explained on the
 * page with a link back to the password form, logged, and counted per client address like failed passwords.
 */
import crypto from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import express, { type Request, type Response, type Router } from 'express';
import { rateLimit, ipKeyGenerator, type Store as RateLimitStore } from 'express-rate-limit';
import type { Logger } from 'pino';
import type { Config } from '../config';
import type { Clock } from '../clock';
import type { Store, User } from '../store/types';
import { DEVICE_ID_PATTERN } from './passwordGrant';
import { verifyPassword } from './passwords';
import { createMfa } from './mfa';
import { identifyClientCertificate, type ClientCertTrust } from './clientCert';
import { apiScopesFor, type IdentityProvider } from './provider';
import type { AccessService } from '../access/service';
import {
  consentBody,
  enrollBody,
  escapeHtml,
  loginBody,
  messageBody,
  mfaBody,
  page,
  pageSecurityPolicy,
  recoveryCodesBody,
} from './pages';

export interface InteractionOptions {
  idp: IdentityProvider;
  config: Config;
  store: Store;
  clock: Clock;
  log: Logger;
  serverSecret: Buffer;
  issuer: string;
  organizationName(user?: User): Promise<string>;
  rateLimitStore?: (name: string) => RateLimitStore;
  /** Conditional access: asked after the first factor (block, or require MFA) and told of failed passwords. */
  access?: AccessService;
  /** Where certificate sign-in starts (a listener that asks for a client certificate), if configured. */
  certificateUrl?: (uid: string) => string;
  /**
   * The client-certificate trust the TLS context of this connection was built with (main.ts reloads it); with
   * `certificateUrl`, turns certificate sign-in on (`certificateRoutes`).
   */
  clientCertTrust?: (socket: TLSSocket) => ClientCertTrust;
}

/** The certificate sign-in page of an interaction: the issuer's host, the certificate listener's port. */
export function certificatePageUrl(issuer: string, port: number, uid: string): string {
  const url = new URL(`/interaction/${encodeURIComponent(uid)}/certificate`, issuer);
  url.port = String(port);
  return url.href;
}

export interface SignInPages {
  /** The sign-in pages of the main listener. */
  routes: Router;
  /** The certificate sign-in page, for the certificate listener only; undefined when not configured. */
  certificateRoutes: Router | undefined;
}

/** What the browser has proven so far in one interaction, kept in the store between the steps. */
interface Pending {
  userId: string;
  amr: string[];
  /**
   * `certificate`: a certificate proved the first factor on the certificate listener, the main listener continues;
   * `mfa`: a code is due; `enroll`: the user is enrolling (sealed secret kept here until confirmed).
   */
  step: 'certificate' | 'mfa' | 'enroll' | 'codes' | 'done';
  sealedSecret?: string;
  /** Enrolment cannot be skipped: the server requires MFA, or conditional access does for this sign-in. */
  mfaDemanded?: boolean;
  recoveryCodes?: string[];
  recoveryHashes?: string[];
}

const PENDING_MODEL = 'PigeonSignInStep';
const KNOWN_DEVICE_COOKIE = 'pigeon_known_device';
/** The certificate listener redirects to the main one at once: its record need not live long. */
const CERTIFICATE_STEP_TTL_MS = 2 * 60_000;

/** The sign-in pages: the main listener's, and the certificate listener's when certificate sign-in is configured. */
export function signInPages(o: InteractionOptions): SignInPages {
  const { idp, config, store, clock } = o;
  const router = express.Router();
  const csrfKey = Buffer.from(crypto.hkdfSync('sha256', o.serverSecret, Buffer.alloc(0), 'pigeon identity: csrf v1', 32));
  const knownKey = Buffer.from(crypto.hkdfSync('sha256', o.serverSecret, Buffer.alloc(0), 'pigeon identity: known device v1', 32));
  const csrfFor = (uid: string) => crypto.createHmac('sha256', csrfKey).update(uid).digest('base64url');
  const knownDeviceFor = (userId: string) => `${userId}.${crypto.createHmac('sha256', knownKey).update(userId).digest('base64url')}`;
  const mfa = createMfa({ serverSecret: o.serverSecret, issuerName: 'Pigeon', now: () => clock.now() });
  const secureCookies = o.issuer.startsWith('https:');

  const render = async (res: Response, status: number, title: string, body: string, user?: User, formTargets: string[] = []) => {
    res.status(status);
    res.setHeader('Content-Security-Policy', pageSecurityPolicy(formTargets));
    res.setHeader('Cache-Control', 'no-store');
    res.type('html').send(page({ title, organization: await o.organizationName(user), body }));
  };

  /** Where a finished sign-in redirects to: allowed in form-action, since browsers apply it along the redirects. */
  const redirectTargets = (redirectUri: unknown): string[] => {
    if (typeof redirectUri !== 'string') return [];
    try {
      const u = new URL(redirectUri);
      return [u.protocol === 'http:' || u.protocol === 'https:' ? u.origin : u.protocol];
    } catch {
      return [];
    }
  };

  const pendingOf = async (uid: string): Promise<Pending | undefined> => {
    const rec = await store.identityRecords.find(PENDING_MODEL, uid);
    return rec && (rec.expiresAt === null || rec.expiresAt > clock.now()) ? (rec.payload as unknown as Pending) : undefined;
  };
  const savePending = (uid: string, pending: Pending, ttlMs = 15 * 60_000) =>
    store.identityRecords.upsert({
      model: PENDING_MODEL,
      id: uid,
      payload: pending as unknown as Record<string, unknown>,
      grantId: null,
      userCode: null,
      uid: null,
      expiresAt: clock.now() + ttlMs,
      consumedAt: null,
    });

  const limited = (req: Request, res: Response) => {
    const reset = (req as { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime?.getTime() ?? clock.now() + config.rateLimitWindow * 1000;
    const seconds = Math.max(1, Math.ceil((reset - Date.now()) / 1000));
    res.setHeader('Retry-After', String(seconds));
    void render(res, 429, 'Too many attempts', messageBody('Too many failed attempts. Wait a while, then try again.', `Try again in ${Math.ceil(seconds / 60)} minute(s).`));
  };
  const knownDevice = (req: Request): string | undefined => {
    const cookie = /(?:^|;\s*)pigeon_known_device=([^;]+)/.exec(req.headers.cookie ?? '')?.[1];
    if (!cookie) return undefined;
    const userId = cookie.split('.')[0]!;
    const expected = Buffer.from(knownDeviceFor(userId));
    const given = Buffer.from(cookie);
    return given.length === expected.length && crypto.timingSafeEqual(given, expected) ? userId : undefined;
  };
  const username = (req: Request) => String(req.body?.username ?? '').toLowerCase();
  const failures = (name: string, limit: number, key: (req: Request) => string, applies: (req: Request) => boolean) =>
    rateLimit({
      windowMs: config.rateLimitWindow * 1000,
      limit,
      standardHeaders: false,
      legacyHeaders: false,
      skipSuccessfulRequests: true,
      skip: (req) => !applies(req),
      keyGenerator: key,
      handler: limited,
      store: o.rateLimitStore?.(name),
    });
  // The known-device exemption holds only for the user the cookie names.
  const exempt = (req: Request) => {
    const known = knownDevice(req);
    return known !== undefined && known === (req as { signInUserId?: string }).signInUserId;
  };
  const perUserAndAddress = failures('signin-user-address', config.loginFailuresPerUser, (req) => `user:${username(req)}|${ipKeyGenerator(req.ip ?? 'unknown')}`, (req) => !exempt(req));
  const perUser = failures('signin-user', config.loginFailuresPerUserGlobal, (req) => `user:${username(req)}`, (req) => !exempt(req));
  const perKnownDevice = failures('signin-known-device', config.loginFailuresPerUser, (req) => `known:${knownDevice(req)}`, exempt);
  const perMfaUser = failures('signin-mfa', config.loginFailuresPerUser, (req) => `mfa:${(req as { signInUserId?: string }).signInUserId}`, () => true);
  // Refused certificates count per client address (there is no username before a certificate names one).
  const perCertificateAddress = failures('signin-certificate-address', config.loginFailuresPerUser, (req) => `cert:${ipKeyGenerator(req.ip ?? 'unknown')}`, () => true);

  const form = express.urlencoded({ extended: false, limit: '16kb', parameterLimit: 20 });

  /** Same-origin forms only (the CSRF token is the main defence; this refuses a cross-site post outright). */
  const checkForm = async (req: Request, res: Response, uid: string): Promise<boolean> => {
    const origin = req.headers.origin;
    const sameSite = !origin || origin === 'null' ? req.headers['sec-fetch-site'] !== 'cross-site' : origin === new URL(o.issuer).origin;
    const token = typeof req.body?.csrf === 'string' ? Buffer.from(req.body.csrf) : Buffer.alloc(0);
    const expected = Buffer.from(csrfFor(uid));
    if (sameSite && token.length === expected.length && crypto.timingSafeEqual(token, expected)) return true;
    await render(res, 403, 'Sign-in problem', messageBody('This form has expired or did not come from this site. Go back to the app and start the sign-in again.'));
    return false;
  };

  const details = async (req: Request, res: Response) => {
    try {
      return await idp.provider.interactionDetails(req, res);
    } catch {
      await render(res, 400, 'Sign-in problem', messageBody('This sign-in has expired or was started in another browser. Go back to the app and start again.'));
      return undefined;
    }
  };

  const clientName = async (clientId: string) => (await idp.provider.Client.find(clientId))?.clientName ?? clientId;

  const showLogin = async (res: Response, uid: string, clientId: string, status = 200, error?: string, typed?: string) =>
    render(
      res,
      status,
      'Sign in',
      loginBody({ action: `/interaction/${uid}/login`, csrf: csrfFor(uid), clientName: await clientName(clientId), username: typed, error, certificateUrl: o.certificateUrl?.(uid) }),
    );

  const showConsent = async (res: Response, uid: string, interaction: Awaited<ReturnType<IdentityProvider['provider']['interactionDetails']>>, user: User) => {
    const requested = String(interaction.params.scope ?? '').split(' ').filter(Boolean);
    const api = apiScopesFor(user);
    const shown = requested.filter((s) => api.includes(s) || s === 'offline_access');
    await render(
      res,
      200,
      'Allow access',
      consentBody({
        action: `/interaction/${uid}/consent`,
        abortAction: `/interaction/${uid}/abort`,
        csrf: csrfFor(uid),
        clientName: await clientName(String(interaction.params.client_id)),
        username: user.username,
        scopes: shown.length ? shown : api,
        deviceId: typeof interaction.params.device_id === 'string' ? interaction.params.device_id : undefined,
      }),
      user,
      redirectTargets(interaction.params.redirect_uri),
    );
  };

  /**
   * Conditional access after the first factor, before anything else is asked: a blocked sign-in ends here (the app
   * gets access_denied with the reason), and one that needs MFA must do it (enrolment cannot be skipped). The token
   * exchange judges again with what was proven in the end (provider.ts); only a refusal is logged here.
   */
  const judgeSignIn = async (req: Request, res: Response, user: User, amr: string[]): Promise<'allow' | 'needs' | 'ended'> => {
    if (!o.access) return 'allow';
    const interaction = await idp.provider.Interaction.find(req.params.uid as string);
    const deviceId = typeof interaction?.params.device_id === 'string' ? interaction.params.device_id : null;
    const verdict = await o.access.evaluateSignIn(
      { user, clientId: String(interaction?.params.client_id ?? 'unknown'), deviceId, ip: req.ip ?? null, authMethods: amr, kind: 'interactive', sessionId: null, userAgent: req.get('user-agent') },
      { logAllowed: false },
    );
    const { decision } = verdict.evaluation;
    if (decision !== 'block') return decision;
    await store.identityRecords.destroy(PENDING_MODEL, req.params.uid as string);
    await idp.provider.interactionFinished(req, res, { error: 'access_denied', error_description: o.access.refusal(verdict.evaluation).message }, { mergeWithLastSubmission: false });
    return 'ended';
  };

  /** After the first factor: the second, or enrolment, or done. */
  const afterFirstFactor = async (req: Request, res: Response, uid: string, user: User, amr: string[]) => {
    const judged = await judgeSignIn(req, res, user, amr);
    if (judged === 'ended') return;
    const mfaDemanded = config.mfaRequired || judged === 'needs';
    const enrolled = await store.mfa.get(user.id);
    if (enrolled) {
      await savePending(uid, { userId: user.id, amr, step: 'mfa' });
      return render(res, 200, 'Two-step verification', mfaBody({ action: `/interaction/${uid}/mfa`, csrf: csrfFor(uid), username: user.username }), user);
    }
    if (amr.includes('mfa')) return finishLogin(req, res, user, amr);
    const enrollment = mfa.newEnrollment(user.username);
    await savePending(uid, { userId: user.id, amr, step: 'enroll', sealedSecret: enrollment.sealedSecret, mfaDemanded });
    return render(
      res,
      200,
      'Set up two-step verification',
      enrollBody({
        action: `/interaction/${uid}/enroll`,
        csrf: csrfFor(uid),
        username: user.username,
        secretBase32: enrollment.secretBase32,
        otpauthUri: enrollment.otpauthUri,
        required: mfaDemanded,
        skipAction: mfaDemanded ? undefined : `/interaction/${uid}/enroll/skip`,
      }),
      user,
    );
  };

  const finishLogin = async (req: Request, res: Response, user: User, amr: string[]) => {
    await store.identityRecords.destroy(PENDING_MODEL, req.params.uid as string);
    res.cookie(KNOWN_DEVICE_COOKIE, knownDeviceFor(user.id), {
      httpOnly: true,
      secure: secureCookies,
      sameSite: 'lax',
      path: '/interaction',
      maxAge: 365 * 86400_000,
    });
    await idp.provider.interactionFinished(req, res, { login: { accountId: user.id, amr, remember: true } }, { mergeWithLastSubmission: false });
  };

  router.get('/interaction/:uid', async (req, res) => {
    const interaction = await details(req, res);
    if (!interaction) return;
    const uid = interaction.uid;
    o.log.debug({ uid, prompt: interaction.prompt.name, reasons: interaction.prompt.reasons, details: interaction.prompt.details }, 'sign-in interaction');
    if (interaction.prompt.name === 'login') {
      // Back from the certificate listener with the first factor proven: on as after a password.
      const pending = await pendingOf(uid);
      const certified = pending?.step === 'certificate' ? await store.users.byId(pending.userId) : undefined;
      if (pending && certified && !certified.disabled) return afterFirstFactor(req, res, uid, certified, pending.amr);
      return showLogin(res, uid, String(interaction.params.client_id));
    }
    const user = interaction.session?.accountId ? await store.users.byId(interaction.session.accountId) : undefined;
    if (!user || user.disabled) return showLogin(res, uid, String(interaction.params.client_id));
    return showConsent(res, uid, interaction, user);
  });

  router.post('/interaction/:uid/login', form, async (req, res, next) => {
    const interaction = await details(req, res);
    if (!interaction || !(await checkForm(req, res, interaction.uid))) return;
    const typed = typeof req.body.username === 'string' ? req.body.username.trim() : '';
    const password = typeof req.body.password === 'string' ? req.body.password : '';
    const candidate = typed ? await store.users.byUsername(typed.toLowerCase()) : undefined;
    (req as { signInUserId?: string }).signInUserId = candidate?.id;
    // The budgets run before the password is checked: over budget, it is not checked at all.
    const budgets = [perUserAndAddress, perUser, perKnownDevice];
    const run = (i: number): void => {
      if (i === budgets.length) return void check().catch(next);
      budgets[i]!(req, res, (err?: unknown) => (err ? next(err) : run(i + 1)));
    };
    const check = async () => {
      // Always hash, so an unknown user costs as much as a wrong password (no enumeration by timing).
      const ok = await verifyPassword(password, candidate?.passwordHash ?? null);
      if (!candidate || !ok || candidate.disabled || !typed || !password) {
        // A wrong password for a real user feeds sign-in risk (the failed-attempt burst).
        if (candidate && !candidate.disabled && o.access) {
          await o.access.recordFailure(candidate, { clientId: String(interaction.params.client_id), deviceId: typeof interaction.params.device_id === 'string' ? interaction.params.device_id : null, ip: req.ip ?? null, authMethods: ['pwd'] });
        }
        return showLogin(res, interaction.uid, String(interaction.params.client_id), 401, 'The username or password is not right.', typed);
      }
      return afterFirstFactor(req, res, interaction.uid, candidate, ['pwd']);
    };
    run(0);
  });

  router.post('/interaction/:uid/mfa', form, async (req, res, next) => {
    const interaction = await details(req, res);
    if (!interaction || !(await checkForm(req, res, interaction.uid))) return;
    const pending = await pendingOf(interaction.uid);
    const user = pending?.step === 'mfa' ? await store.users.byId(pending.userId) : undefined;
    if (!pending || !user || user.disabled) return showLogin(res, interaction.uid, String(interaction.params.client_id), 400, 'Sign in again.');
    (req as { signInUserId?: string }).signInUserId = user.id;
    perMfaUser(req, res, (err?: unknown) => {
      if (err) return next(err);
      void (async () => {
        const code = String(req.body.code ?? '').trim();
        const enrolled = await store.mfa.get(user.id);
        let ok = false;
        if (enrolled && /^\d[\d ]*$/.test(code)) {
          const result = mfa.verifyTotp(enrolled.sealedSecret, code, enrolled.lastStep);
          // The step is recorded only if no one used it meanwhile: two posts of one code cannot both pass.
          ok = result.ok && (await store.mfa.useStep(user.id, result.step));
        } else if (enrolled) {
          const hash = mfa.recoveryCodeHash(code);
          ok = hash !== null && (await store.mfa.useRecoveryCode(user.id, hash, clock.now()));
        }
        if (!ok) {
          return render(res, 401, 'Two-step verification', mfaBody({ action: `/interaction/${interaction.uid}/mfa`, csrf: csrfFor(interaction.uid), username: user.username, error: 'That code is not right. Try the newest code from your app.' }), user);
        }
        return finishLogin(req, res, user, [...pending.amr, 'otp', 'mfa']);
      })().catch(next);
    });
  });

  router.post('/interaction/:uid/enroll', form, async (req, res) => {
    const interaction = await details(req, res);
    if (!interaction || !(await checkForm(req, res, interaction.uid))) return;
    const pending = await pendingOf(interaction.uid);
    const user = pending?.step === 'enroll' && pending.sealedSecret ? await store.users.byId(pending.userId) : undefined;
    if (!pending || !user || !pending.sealedSecret) return showLogin(res, interaction.uid, String(interaction.params.client_id), 400, 'Sign in again.');
    const result = mfa.verifyTotp(pending.sealedSecret, String(req.body.code ?? ''), null);
    if (!result.ok) {
      return render(res, 401, 'Set up two-step verification', messageBody('That code is not right. Sign in again to start over.'), user);
    }
    const codes = mfa.newRecoveryCodes();
    await store.mfa.enroll(user.id, pending.sealedSecret, codes.hashes, clock.now());
    await store.mfa.useStep(user.id, result.step);
    await savePending(interaction.uid, { userId: user.id, amr: [...pending.amr, 'otp', 'mfa'], step: 'codes' });
    return render(res, 200, 'Save your recovery codes', recoveryCodesBody({ action: `/interaction/${interaction.uid}/enroll/done`, csrf: csrfFor(interaction.uid), codes: codes.codes }), user);
  });

  const continueAfterEnrolment = (skip: boolean) => async (req: Request, res: Response) => {
    const interaction = await details(req, res);
    if (!interaction || !(await checkForm(req, res, interaction.uid))) return;
    const pending = await pendingOf(interaction.uid);
    const allowed = skip ? pending?.step === 'enroll' && !config.mfaRequired && !pending.mfaDemanded : pending?.step === 'codes';
    const user = allowed && pending ? await store.users.byId(pending.userId) : undefined;
    if (!pending || !user || user.disabled) return showLogin(res, interaction.uid, String(interaction.params.client_id), 400, 'Sign in again.');
    return finishLogin(req, res, user, pending.amr);
  };
  router.post('/interaction/:uid/enroll/skip', form, continueAfterEnrolment(true));
  router.post('/interaction/:uid/enroll/done', form, continueAfterEnrolment(false));

  router.post('/interaction/:uid/consent', form, async (req, res) => {
    const interaction = await details(req, res);
    if (!interaction || !(await checkForm(req, res, interaction.uid))) return;
    const accountId = interaction.session?.accountId;
    const user = accountId ? await store.users.byId(accountId) : undefined;
    if (interaction.prompt.name !== 'consent' || !user || user.disabled) return showLogin(res, interaction.uid, String(interaction.params.client_id), 400, 'Sign in again.');
    const clientId = String(interaction.params.client_id);
    const requested = String(interaction.params.scope ?? '').split(' ').filter(Boolean);
    const api = apiScopesFor(user).filter((s) => requested.includes(s));
    const grant = new idp.provider.Grant({ accountId: user.id, clientId });
    grant.addOIDCScope(requested.filter((s) => ['openid', 'offline_access', 'email', 'profile'].includes(s)).join(' '));
    if (api.length) grant.addResourceScope(idp.resource, api.join(' '));
    // An API scope the user may not have (`admin` for a non-admin) is refused, not left open: the provider would
    // otherwise ask for consent to it again and again (the web pages ask every user for `mail admin`).
    const refused = requested.filter((s) => (s === 'mail' || s === 'admin') && !api.includes(s));
    if (refused.length) grant.rejectResourceScope(idp.resource, refused.join(' '));
    const grantId = await grant.save();
    const deviceId = typeof interaction.params.device_id === 'string' && DEVICE_ID_PATTERN.test(interaction.params.device_id) ? interaction.params.device_id : null;
    await idp.startSignIn({ grantId, userId: user.id, clientId, deviceId, scope: api.join(' ') });
    res.setHeader('Content-Security-Policy', pageSecurityPolicy(redirectTargets(interaction.params.redirect_uri)));
    await idp.provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  });

  router.post('/interaction/:uid/abort', form, async (req, res) => {
    const interaction = await details(req, res);
    if (!interaction || !(await checkForm(req, res, interaction.uid))) return;
    await store.identityRecords.destroy(PENDING_MODEL, interaction.uid);
    res.setHeader('Content-Security-Policy', pageSecurityPolicy(redirectTargets(interaction.params.redirect_uri)));
    await idp.provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'The user cancelled the sign-in.' }, { mergeWithLastSubmission: false });
  });

  /** The password form of an interaction, on the main listener (absolute: the certificate pages are on another port). */
  const passwordPageUrl = (uid: string) => new URL(`/interaction/${encodeURIComponent(uid)}`, o.issuer).href;
  const linkBack = (uid: string, text = 'Sign in with your username and password instead') =>
    `<p class="alt"><a href="${escapeHtml(passwordPageUrl(uid))}">${escapeHtml(text)}</a></p>`;

  // The main listener never asks for a certificate, so a certificate page there has nothing to read: refused, with
  // the way to the real one.
  router.get('/interaction/:uid/certificate', async (req, res) => {
    const uid = String(req.params.uid);
    const where = o.certificateUrl && o.clientCertTrust ? o.certificateUrl(uid) : undefined;
    o.log.info({ uid, ip: req.ip }, 'certificate sign-in refused: asked on the main listener');
    await render(
      res,
      where ? 403 : 404,
      'Certificate not accepted',
      where
        ? `${messageBody('Certificate sign-in has an address of its own.')}<p class="alt"><a href="${escapeHtml(where)}">Sign in with a certificate</a></p>${linkBack(uid)}`
        : `${messageBody('Certificate sign-in is not set up on this server.')}${linkBack(uid)}`,
    );
  });

  const certificateRoutes = o.certificateUrl && o.clientCertTrust ? certificateRouter(o.clientCertTrust) : undefined;

  function certificateRouter(trustFor: (socket: TLSSocket) => ClientCertTrust): Router {
    const certificates = express.Router();
    certificates.get('/interaction/:uid/certificate', perCertificateAddress, async (req, res) => {
      const interaction = await details(req, res);
      if (!interaction) return;
      const uid = interaction.uid;
      const refuse = async (status: 401 | 403, reason: string, message: string, logged: Record<string, unknown> = {}) => {
        o.log.warn({ uid, ip: req.ip, reason, ...logged }, 'certificate sign-in refused');
        await render(res, status, 'Certificate not accepted', `${messageBody(message)}${linkBack(uid)}`);
      };
      // The cookie names the interaction; a page address naming another one is a stale or forged link.
      if (req.params.uid !== uid) return refuse(403, 'other-interaction', 'This sign-in link belongs to another sign-in. Go back to the app and start again.');
      res.setHeader('Cache-Control', 'no-store');
      // Already signed in (a second tab, the back button): the main listener shows where the sign-in stands.
      if (interaction.prompt.name !== 'login') return void res.redirect(303, passwordPageUrl(uid));

      const socket = req.socket as TLSSocket;
      const identity = identifyClientCertificate(socket, trustFor(socket));
      if (!identity.ok) {
        // No certificate: the user may not have one (401, try another way); anything else was a certificate refused.
        return refuse(identity.reason === 'none-presented' ? 401 : 403, identity.reason, identity.message, {
          verifyError: identity.verifyError,
          detail: identity.detail,
          certificate: identity.certificate,
        });
      }
      const logged = { tenantId: identity.tenantId, usernameFrom: identity.usernameFrom, certificate: identity.certificate };
      const user = await store.users.byUsername(identity.username);
      // Only a user of the tenant whose CA issued the certificate: another tenant's CA never vouches for them. The
      // page says the same for both cases, so it does not tell who has an account elsewhere.
      if (!user || user.tenantId !== identity.tenantId) {
        return refuse(403, 'no-such-user', `There is no account ${identity.username} in the organisation that issued this certificate.`, {
          ...logged,
          detail: user ? `the user is in tenant ${user.tenantId}` : 'no user has this username',
        });
      }
      if (user.disabled) return refuse(403, 'disabled', 'This account is disabled. Ask your administrator.', { ...logged, userId: user.id });

      await savePending(uid, { userId: user.id, amr: ['x509'], step: 'certificate' }, CERTIFICATE_STEP_TTL_MS);
      o.log.info({ uid, userId: user.id, ...logged }, 'certificate sign-in: first factor accepted');
      res.redirect(303, passwordPageUrl(uid));
    });
    return certificates;
  }

  return { routes: router, certificateRoutes };
}
