/**
 * The built-in identity provider (IdP): oidc-provider (OpenID Certified), configured for Pigeon's apps.
 *
 * - Public native clients (PIGEON_OAUTH_CLIENTS) use authorization code + PKCE (S256, required) or the device
 *   authorization grant (RFC 8628); refresh tokens rotate on every use and a reused one ends the whole grant.
 * - Access tokens are JWTs (RFC 9068) for one resource, the mailbox API (`<issuer>/v1`, audience
 *   PIGEON_AUDIENCE), signed with the server's Ed25519 key, carrying the claims the API checks on every call: the
 *   tenant, the user's session version, the sign-in (`sid`, the grant id), the device (`did`), the role and the
 *   region. DPoP (RFC 9449) binds them to a key of the app's when it asks (`cnf.jkt`).
 * - The sign-in pages are Pigeon's own (interactions.ts); the provider's records live in the store (adapter.ts).
 * - Operators introspect tokens (RFC 7662) as the confidential client `pigeon-operator`; apps revoke their own
 *   (RFC 7009).
 */
import crypto from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config';
import type { Clock } from '../clock';
import type { Store, User } from '../store/types';
import type { KeyMaterial } from '../auth/keys';
import type { Regions } from '../regions';
import type { AccessService } from '../access/service';
import { storeAdapter } from './adapter';
import { DEVICE_ID_PATTERN } from './passwordGrant';
import { loadOidc, type Configuration, type KoaContextWithOIDC, type Provider } from './oidc';
import { webClientMetadata } from '../web/client';
import { deviceCodeConfirmBody, deviceCodeInputBody, messageBody, page, pageSecurityPolicy } from './pages';

export const OPERATOR_CLIENT_ID = 'pigeon-operator';
export const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

/** The scopes of the mailbox API a user may be granted: `admin` only for administrators. */
export const apiScopesFor = (user: Pick<User, 'role'>): string[] => (user.role === 'admin' ? ['mail', 'admin'] : ['mail']);

export interface DeviceVerdict {
  wipe?: { scope: 'account' };
  refuse?: string;
}

export interface IdentityProviderOptions {
  config: Config;
  store: Store;
  clock: Clock;
  keys: KeyMaterial;
  issuer: string;
  regions: Regions;
  log: Logger;
  /** The device rules for token issuance (devices/service.ts grantCheck): blocked or wiped devices get none. */
  deviceCheck(userId: string, deviceId: string): Promise<DeviceVerdict>;
  /** The name the pages show before a user is known. */
  organizationName(): Promise<string>;
  /** Conditional access (server/access/service.ts), judged at every access token the provider issues. */
  access?: AccessService;
}

export interface IdentityProvider {
  provider: Provider;
  /** The mailbox API's resource indicator (RFC 8707). */
  resource: string;
  /** Hands a request to the provider; `rawBody` replays a body Express has already read. */
  handle(req: IncomingMessage, res: ServerResponse, rawBody?: Buffer): void;
  /** Starts the sign-in record of a new grant (interactions.ts), so the API accepts its tokens. */
  startSignIn(grant: { grantId: string; userId: string; clientId: string; deviceId: string | null; scope: string }): Promise<void>;
}

/** The cookie keys: derived from the server secret, so every node signs and checks the same cookies. */
function cookieKeys(secret: Buffer): string[] {
  return [Buffer.from(crypto.hkdfSync('sha256', secret, Buffer.alloc(0), 'pigeon identity: cookie signing v1', 32)).toString('base64url')];
}

export function createIdentityProvider(o: IdentityProviderOptions): IdentityProvider {
  const { config, store, clock, keys, issuer } = o;
  const resource = `${issuer}/v1`;
  const signInHash = (grantId: string) => crypto.createHash('sha256').update(`identity-grant:${grantId}`).digest();
  /**
   * The provider itself is built on first use, not at start-up: loading oidc-provider and building its routes
   * takes a few hundred milliseconds, which every restart (and every worker) would otherwise spend before it answers
   * polls that never need it.
   */
  let built: { provider: Provider; callback: ReturnType<Provider['callback']> } | undefined;
  /**
   * Conditional access at issuance: the code exchange (a new sign-in, whose risk is assessed now), a refresh (the
   * sign-in's risk, with what is true now) and the device flow. A refusal is `invalid_grant`, which tells the app
   * to sign in again; the sign-in log says why.
   */
  const judgeIssuance = async (ctx: KoaContextWithOIDC, token: { clientId?: string; grantId?: string }, user: User, deviceId: string | null) => {
    const entities = ctx.oidc.entities as { AuthorizationCode?: { amr?: string[] }; RefreshToken?: { amr?: string[] }; DeviceCode?: { amr?: string[] } };
    const source = entities.RefreshToken ?? entities.AuthorizationCode ?? entities.DeviceCode;
    const verdict = await o.access!.evaluateSignIn({
      user,
      clientId: token.clientId ?? String(ctx.oidc.client?.clientId ?? 'unknown'),
      deviceId,
      ip: ctx.ip || null,
      authMethods: source?.amr ?? [],
      kind: entities.RefreshToken ? 'refresh' : 'interactive',
      sessionId: token.grantId ?? null,
      userAgent: ctx.get('user-agent') || undefined,
    });
    const { decision } = verdict.evaluation;
    if (decision === 'allow') return;
    const why = o.access!.refusal(verdict.evaluation);
    throw new (loadOidc().errors.InvalidGrant)(decision === 'needs' ? 'conditional access requires multi-factor authentication: sign in again interactively' : `conditional access: ${why.message}`);
  };

  const build = () => {
    const { Provider: ProviderClass, errors } = loadOidc();

    const adapter = storeAdapter(store, clock, {
      async grantRevoked(grantId) {
        await store.refreshTokens.revokeFamily(grantId, 'revoked by the identity provider', clock.now());
      },
      async signInLive(accountId, grantId) {
        return (await store.refreshTokens.liveHead(accountId, grantId, clock.now())) !== undefined;
      },
      async refreshed(grantId, expiresAt) {
        await store.refreshTokens.extend(grantId, expiresAt);
      },
    });

    const privateJwk = { ...(keys.signingKey.export({ format: 'jwk' }) as Record<string, unknown>), kid: keys.kid, alg: 'EdDSA', use: 'sig' };
    const clients: Array<NonNullable<Configuration['clients']>[number]> = config.oauthClients.map((clientId) => ({
      client_id: clientId,
      client_name: clientId === 'pigeon-cli' ? 'Pigeon command line' : 'Pigeon',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      redirect_uris: config.oauthRedirectUris,
      grant_types: ['authorization_code', 'refresh_token', DEVICE_CODE_GRANT],
      response_types: ['code'],
      // The server's one key is Ed25519: ID tokens (`openid` scope) are signed with it too.
      id_token_signed_response_alg: 'EdDSA',
    }));
    // The web pages (server/web/): signed in by the server itself, code + PKCE with a derived secret.
    clients.push(webClientMetadata(issuer, keys.serverSecret));
    if (config.operatorClientSecret) {
      clients.push({
        client_id: OPERATOR_CLIENT_ID,
        client_secret: config.operatorClientSecret,
        client_name: 'Pigeon operator',
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: 'EdDSA',
        grant_types: [],
        response_types: [],
        redirect_uris: [],
      });
    }

    const renderPage = (ctx: KoaContextWithOIDC, status: number, title: string, body: string, formTargets: string[] = []) => {
      ctx.status = status;
      ctx.type = 'html';
      ctx.set('Content-Security-Policy', pageSecurityPolicy(formTargets));
      ctx.set('Cache-Control', 'no-store');
      return o.organizationName().then((organization) => {
        ctx.body = page({ title, organization, body });
      });
    };
    /** The hidden xsrf value and action of the provider's own device-flow form (its markup has an inline handler, so Pigeon renders its own). */
    const formParts = (form: string) => ({
      xsrf: /name="xsrf" value="([^"]*)"/.exec(form)?.[1] ?? '',
      action: /action="([^"]*)"/.exec(form)?.[1] ?? '',
    });

    const configuration: Configuration = {
      adapter,
      clients,
      jwks: { keys: [privateJwk as never] },
      findAccount: async (_ctx, sub) => {
        const user = await store.users.byId(sub);
        if (!user || user.disabled) return undefined;
        return {
          accountId: sub,
          claims: () => ({ sub, email: user.email ?? undefined, name: user.displayName, preferred_username: user.username }),
        };
      },
      claims: { openid: ['sub'], email: ['email'], profile: ['name', 'preferred_username'], amr: null, acr: null, auth_time: null, sid: null },
      // OpenID scopes only: `mail` and `admin` are the mailbox API's (resource) scopes, granted per resource.
      scopes: ['openid', 'offline_access', 'email', 'profile'],
      responseTypes: ['code'],
      routes: {
        authorization: '/oauth2/authorize',
        token: '/oauth2/token',
        revocation: '/oauth2/revoke',
        introspection: '/oauth2/introspect',
        jwks: '/.well-known/jwks.json',
        device_authorization: '/oauth2/device_authorization',
        code_verification: '/oauth2/device',
        end_session: '/oauth2/logout',
        userinfo: '/oauth2/userinfo',
        pushed_authorization_request: '/oauth2/par',
        registration: '/oauth2/register',
        backchannel_authentication: '/oauth2/backchannel',
        challenge: '/oauth2/challenge',
        credential: '/oauth2/credential',
      },
      pkce: { required: () => true },
      features: {
        devInteractions: { enabled: false },
        deviceFlow: {
          enabled: true,
          charset: 'base-20',
          mask: '****-****',
          userCodeInputSource: (ctx, form, _out, err) => {
            const error = err ? (err.name === 'NoCodeError' || (err as { userCode?: unknown }).userCode ? 'That code is not valid. Check it and try again.' : 'The sign-in could not continue. Start again on your device.') : undefined;
            const { xsrf, action } = formParts(form);
            return renderPage(ctx, err ? 400 : 200, 'Sign in a device', deviceCodeInputBody({ action, xsrf, error, userCode: typeof ctx.oidc.params?.user_code === 'string' ? ctx.oidc.params.user_code : undefined }));
          },
          userCodeConfirmSource: (ctx, form, client, _info, userCode) => {
            const { xsrf, action } = formParts(form);
            return renderPage(ctx, 200, 'Confirm the device', deviceCodeConfirmBody({ action, xsrf, userCode, clientName: client.clientName ?? client.clientId }));
          },
          successSource: (ctx) => renderPage(ctx, 200, 'Device signed in', messageBody('The device is signed in. You can close this page.')),
        },
        // RFC 7009: a client revokes its own tokens only (another client's token is left alone, answered 200).
        revocation: { enabled: true, allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId },
        // Not offered: apps send their authorization requests in the URL (PAR would need its own rate limits).
        pushedAuthorizationRequests: { enabled: false },
        introspection: {
          enabled: true,
          // Operators only: an app has its own tokens already and no business with anyone else's.
          allowedPolicy: async (ctx) => ctx.oidc.client?.clientId === OPERATOR_CLIENT_ID,
        },
        dPoP: { enabled: true },
        userinfo: { enabled: false },
        rpInitiatedLogout: { enabled: false },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => resource,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx, indicator) => {
            if (indicator !== resource) throw new errors.InvalidTarget();
            return {
              scope: 'mail admin',
              audience: config.audience,
              accessTokenTTL: config.accessTokenTtl,
              accessTokenFormat: 'jwt',
              jwt: { sign: { alg: 'EdDSA' } },
            };
          },
        },
      },
      enabledJWA: { dPoPSigningAlgValues: ['ES256', 'EdDSA', 'RS256', 'PS256'] },
      ttl: {
        AccessToken: config.accessTokenTtl,
        AuthorizationCode: 60,
        DeviceCode: 600,
        Grant: config.refreshTokenTtl,
        IdToken: 3600,
        Interaction: 900,
        RefreshToken: config.refreshTokenTtl,
        Session: config.signInSessionTtl,
      },
      // Every app installation gets refresh tokens (native sync), whatever `offline_access` says; they rotate.
      issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
      rotateRefreshToken: true,
      expiresWithSession: async () => false,
      // Each authorization is a new sign-in of its own (one per app installation, bound to its device id): only the
      // grant this very interaction's consent made is used, never an earlier one of the browser session, so the
      // consent page is shown each time.
      loadExistingGrant: async (ctx) => {
        const grantId = ctx.oidc.result?.consent?.grantId;
        return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
      },
      // The app installation's device id (protocol §3), bound into the sign-in at consent; a malformed one is refused.
      extraParams: {
        device_id: (_ctx, value) => {
          if (value !== undefined && value !== '' && !DEVICE_ID_PATTERN.test(value)) {
            throw new errors.InvalidRequest('device_id must be 16 to 64 characters of A-Z, a-z, 0-9, _ and -');
          }
        },
      },
      extraTokenClaims: async (ctx, token) => {
        if (token.kind !== 'AccessToken' || !token.grantId || !token.accountId) return undefined;
        const user = await store.users.byId(token.accountId);
        if (!user || user.disabled) throw new errors.InvalidGrant('account unavailable');
        const head = await store.refreshTokens.liveHead(user.id, token.grantId, clock.now());
        if (!head) throw new errors.InvalidGrant('the sign-in has ended');
        if (head.deviceId) {
          const verdict = await o.deviceCheck(user.id, head.deviceId);
          if (verdict.refuse) {
            await store.refreshTokens.revokeFamily(token.grantId, verdict.refuse, clock.now());
            await store.identityRecords.revokeByGrantId(token.grantId);
            throw new errors.InvalidGrant(verdict.refuse);
          }
          if (verdict.wipe) (ctx as { state: Record<string, unknown> }).state.wipe = verdict.wipe;
        }
        if (o.access) await judgeIssuance(ctx, token, user, head.deviceId);
        return {
          tid: user.tenantId,
          sv: user.sessionVersion,
          sid: token.grantId,
          role: user.role,
          rgn: o.regions.region,
          ...(head.deviceId ? { did: head.deviceId } : {}),
        };
      },
      interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
      cookies: {
        keys: cookieKeys(keys.serverSecret),
        long: { signed: true, httpOnly: true, sameSite: 'lax' },
        short: { signed: true, httpOnly: true, sameSite: 'lax' },
      },
      clientBasedCORS: () => false,
      renderError: async (ctx, out) => {
        await renderPage(ctx, ctx.status >= 400 ? ctx.status : 400, 'Sign-in problem', messageBody('The sign-in could not continue.', `${out.error}: ${out.error_description ?? ''}`));
      },
      discovery: {
        // Regions (README): this issuer's, and where every region's mailboxes are served.
        pigeon_region: o.regions.region,
        pigeon_regions: o.regions.directory,
        // The password grant is for development only (README); when on, the document says so.
        pigeon_password_grant: config.passwordGrant ? 'enabled for development only' : 'disabled',
        service_documentation: `${issuer}/openapi.yaml`,
      },
    };

    const provider = new ProviderClass(issuer, configuration);
    provider.proxy = config.trustProxy !== 'false';
    // The device rules may ask a device to wipe itself: said in the token response too, as on the password grant.
    provider.use(async (ctx, next) => {
      try {
        await next();
      } catch (err) {
        // oidc-provider 9's error handler, rendering the error page of a refused device-flow form, tries to save a
        // browser session it never stored and throws this; the page is already in place, so it is sent as it is
        // (and a refused form stores nothing).
        if (!(err instanceof TypeError && /persist can only be called on previously persisted Sessions/.test(err.message) && ctx.body)) throw err;
      }
      if (ctx.oidc?.route === 'jwks') ctx.set('Cache-Control', 'public, max-age=300');
      if (ctx.oidc?.route === 'discovery' && config.passwordGrant && ctx.body && typeof ctx.body === 'object') {
        const doc = ctx.body as { grant_types_supported?: string[] };
        doc.grant_types_supported = [...(doc.grant_types_supported ?? []), 'password'];
      }
      const wipe = (ctx.state as { wipe?: unknown }).wipe;
      if (wipe && ctx.oidc?.route === 'token' && ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
        ctx.body = { wipe, ...(ctx.body as object) };
      }
    });
    provider.on('server_error', (_ctx, err) => o.log.error({ err }, 'identity provider error'));

    const callback = provider.callback();
    return { provider, callback };
  };
  const lazy = () => (built ??= build());

  return {
    get provider() {
      return lazy().provider;
    },
    resource,
    handle(req, res, rawBody) {
      const { callback } = lazy();
      if (!rawBody) return void callback(req, res);
      // Express read the body already (the token and revocation endpoints share their rate limits and the
      // development grant with Pigeon's own routes): the provider reads a copy with the same headers and socket.
      const replay = Object.assign(Readable.from([rawBody]), {
        headers: { ...req.headers, 'content-length': String(rawBody.length) },
        rawHeaders: req.rawHeaders,
        method: req.method,
        url: (req as { originalUrl?: string }).originalUrl ?? req.url,
        httpVersion: req.httpVersion,
        httpVersionMajor: req.httpVersionMajor,
        httpVersionMinor: req.httpVersionMinor,
        socket: req.socket,
        connection: req.socket,
      });
      void callback(replay as unknown as IncomingMessage, res);
    },
    async startSignIn(g) {
      const now = clock.now();
      await store.refreshTokens.insert({
        id: crypto.randomBytes(12).toString('base64url'),
        familyId: g.grantId,
        userId: g.userId,
        deviceId: g.deviceId,
        clientId: g.clientId,
        scope: g.scope,
        tokenHash: signInHash(g.grantId),
        createdAt: now,
        expiresAt: now + config.refreshTokenTtl * 1000,
      });
    },
  };
}

