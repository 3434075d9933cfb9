/**
 * createApp(deps): builds the whole HTTP application from its dependencies. Nothing here is module-level state, so
 * every test builds its own app over its own store, clock and keys.
 */
import type { TLSSocket } from 'node:tls';
import express from 'express';
import helmet from 'helmet';
import compression from 'compression';
import type { Logger } from 'pino';
import { issuerOf, type Config } from './config';
import type { Clock } from './clock';
import type { Store } from './store/types';
import { withHotCache } from './store/cached';
import type { KeyMaterial } from './auth/keys';
import { createAccessTokens } from './auth/accessTokens';
import { createAuthService } from './identity/passwordGrant';
import { createIdentityProvider } from './identity/provider';
import { certificatePageUrl, signInPages } from './identity/interactions';
import type { ClientCertTrust } from './identity/clientCert';
import { addressKey, providerEndpoints, tokenAddressLimit } from './identity/routes';
import { IDENTITY_STYLESHEET } from './identity/style';
import { authenticate, createAuthenticator, expressOrigin, requireAdmin } from './auth/authenticate';
import { createExternalIssuers, loadExternalIssuers } from './auth/externalIssuers';
import { DeviceSignals } from './devices/signals';
import { createDeviceService } from './devices/service';
import { adminDeviceGate, deviceGate } from './devices/gate';
import { createAdminService } from './admin/service';
import { createImporter } from './mail/import';
import { createSearchService } from './search/service';
import { createTokenCodec } from './sync/tokens';
import { createItemSync } from './sync/itemSync';
import { createFolderSync } from './sync/folderSync';
import { createMailService } from './mail/service';
import { createDelivery } from './mail/delivery';
import { createRelay } from './send/relay';
import { createSendService } from './send/service';
import { createConversationService } from './conversations/service';
import { createConversationSync } from './conversations/sync';
import { createResync } from './sync/resync';
import { createMailboxResolver } from './http/mailbox';
import { createMailboxRules } from './mailbox/rules';
import { createAutoReplier } from './mailbox/autoReplier';
import { createMailboxService } from './mailbox/service';
import { createSharedMailboxes } from './mailbox/shared';
import { serveTable } from './http/table';
import { routeTable } from './routes';
import { createDiagnosticsService, UploadLimiter, DIAGNOSTICS_UPLOADS_PER_HOUR } from './diagnostics/service';
import { DeviceLogRing } from './diagnostics/deviceLog';
import { deviceLogOf } from './logger';
import { createBatch } from './mail/batch';
import { createContentService } from './content/service';
import { createIdempotency } from './http/idempotency';
import { createPush, type PushCluster, type PushOptions } from './push';
import { createBackgroundPush } from './push/background';
import { DEFAULT_BACKGROUND_PUSH_OPTIONS, type BackgroundPushOptions } from './push/background/types';
import { buildPushGateways, vapidKeysFromFiles, type PushGatewaySet } from './push/background/gateways';
import { createBackgroundPushPolicy } from './push/background/policy';
import { createChannelService } from './push/background/channelService';
import { backgroundPushRoutes } from './push/background/routes';
import type { Store as RateLimitStore } from 'express-rate-limit';
import { createMetrics, requestId, requestLogger } from './http/requestContext';
import { errorHandler, notFoundHandler } from './http/problem';
import { deviceRateLimit, eventLoopLag, loadShedder, shedCheck, type LagSource } from './http/overload';
import { createFastLane, expressIp } from './http/fastLane';
import { regionsOf } from './regions';
import { createAccessService } from './access/service';
import { createAccessAdmin } from './access/admin';
import { createPartnerVerifier } from './access/compliancePartner';
import { loadCompliancePartners } from './access/partnersFile';
import { createProtectionService } from './protection/service';
import { createSmimeInspector } from './protection/smime';
import { loadSmimeTrust } from './protection/trustFile';
import { createCalendarService } from './calendar/service';
import { createContactService } from './contacts/service';
import { createDirectoryService } from './directory/service';
import { webPages } from './web/routes';
import { createWebSessions } from './web/sessions';
import { cookieAuthentication } from './web/cookieAuth';
import { providerPoster } from './web/tokenClient';
import { tokenBudget } from './web/tokenBudget';

export interface AppDeps {
  config: Config;
  store: Store;
  keys: KeyMaterial;
  clock: Clock;
  log: Logger;
  /** Where device cut-offs are announced (the push module listens); a fresh one when not given. */
  deviceSignals?: DeviceSignals;
  /** Push timings and the ping range, for tests only (production uses the protocol's values and the config). */
  push?: Partial<PushOptions>;
  /** Where the load shedder reads event-loop delay; a live monitor when not given (tests inject their own). */
  lag?: LagSource;
  /** One of several worker processes (server/cluster.ts, wired in main.ts); one process when not given. */
  cluster?: AppCluster;
  /** Certificate sign-in (PIGEON_CLIENT_CERT_TRUST_FILE): main.ts runs its listener with `certificateApp`. */
  certificateSignIn?: CertificateSignInDeps;
  /**
   * The per-device log lines a diagnostics upload attaches (server/diagnostics/deviceLog.ts): by default the ring
   * `log` feeds (server/logger.ts createLogger), or an empty one for a logger made otherwise.
   */
  deviceLog?: DeviceLogRing;
  /**
   * Background push (server/push/background/): the gateways — by default built from the config, with the VAPID pair
   * of the config or the data directory (main.ts passes the ones built with the database's pair under PostgreSQL;
   * tests pass stand-ins' trust) — and options (tests). The loops run only once `start()` is called (main.ts).
   */
  backgroundPush?: { gateways?: PushGatewaySet; options?: Partial<BackgroundPushOptions> };
}

export interface CertificateSignInDeps {
  /** The trust the connection's TLS context was built with (main.ts reloads it). */
  trustFor(socket: TLSSocket): ClientCertTrust;
  /** The certificate listener's port (asked when a login page is shown, so once it listens). */
  port(): number;
}

/** What a worker shares with the others through the primary. */
export interface AppCluster {
  /** Push's change feed, channel registry and watermarks across the workers. */
  push: PushCluster;
  /** Counts of the token endpoint's rate limits, kept in the primary. */
  rateLimitStore(name: string): RateLimitStore;
  /** A send queued mail: the leader's relay is woken (this worker's relay runs only if it is the leader). */
  outboxQueued(): void;
}

function trustProxySetting(value: string): boolean | number | string {
  if (value === 'true') return true;
  if (value === 'false') return false;
  if (/^\d+$/.test(value)) return Number(value);
  return value;
}

export function createApp(deps: AppDeps) {
  const { config, keys, clock, log } = deps;
  const store = withHotCache(deps.store); // users, sign-ins, devices and access rules from memory (store/cached.ts)
  const issuer = issuerOf(config);
  // The region this node serves and the public directory of the others (README, "Regions").
  const regions = regionsOf(config);
  const accessTokens = createAccessTokens({
    keys,
    clock,
    issuer,
    audience: config.audience,
    ttlSeconds: config.accessTokenTtl,
    region: regions.region,
  });
  const deviceSignals = deps.deviceSignals ?? new DeviceSignals();
  const devices = createDeviceService({
    store,
    clock,
    signals: deviceSignals,
    maxDevicesPerUser: config.maxDevicesPerUser,
    inactivityMs: config.deviceInactivity * 1000,
  });
  // Conditional access, app protection and device compliance (server/access/): judged at every token issuance and
  // refresh and, after the device gate, on every /v1 call and live push channel.
  const access = createAccessService({ store, clock, log, signals: deviceSignals, complianceGraceMs: config.complianceGrace * 1000 });
  const accessCheck = access.checkCall;
  const auth = createAuthService({
    store,
    clock,
    accessTokens,
    serverSecret: keys.serverSecret,
    refreshTtlSeconds: config.refreshTokenTtl,
    refreshRetryGraceSeconds: config.refreshRetryGrace,
    clients: config.oauthClients,
    passwordGrant: config.passwordGrant,
    deviceCheck: devices.grantCheck,
    access,
  });
  const metrics = createMetrics();
  /** The name the sign-in pages show: configured, else the user's tenant's, else the only tenant's, else Pigeon. */
  const organizationName = async (user?: { tenantId: string }) => {
    if (config.organizationName) return config.organizationName;
    if (user) return (await store.tenants.get(user.tenantId))?.name ?? 'Pigeon';
    const tenants = await store.tenants.list();
    return tenants.length === 1 ? tenants[0]!.name : 'Pigeon';
  };
  // The built-in identity provider (server/identity/): sign-in pages, authorization code + PKCE, device flow.
  const idp = createIdentityProvider({
    config,
    store,
    clock,
    keys,
    issuer,
    regions,
    log,
    deviceCheck: devices.grantCheck,
    organizationName: () => organizationName(),
    access,
  });

  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', trustProxySetting(config.trustProxy));
  app.set('etag', false); // API responses carry their own validators where they mean something
  app.set('query parser', 'simple'); // no nested objects from `a[b]=c`: a query value is a string or string[]

  app.use(requestId);
  app.use(requestLogger(log));
  app.use(metrics.middleware);
  const lag = deps.lag ?? eventLoopLag();
  const shedding = { maxLagMs: config.shedLagMs, lag };
  app.use(loadShedder(shedding));
  const securityHeaders = helmet({
    hsts: { maxAge: 63072000, includeSubDomains: true, preload: false }, // two years (Mozilla)
    contentSecurityPolicy: { directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
  });
  app.use(securityHeaders);
  // compression's default filter skips YAML (not in its compressible list); the API description is large and text.
  // An event stream must never be compressed: gzip would hold each small event back until its buffer fills.
  const compress = compression({
    threshold: 1024,
    filter: (req, res) => {
      const type = String(res.getHeader('Content-Type') ?? '');
      if (type.startsWith('text/event-stream')) return false;
      return /yaml/.test(type) || compression.filter(req, res);
    },
  });
  app.use(compress);

  // The services behind the routes.
  const codec = createTokenCodec(keys.serverSecret);
  const syncItems = createItemSync({ store, clock, codec, trimAfterMs: config.windowTrimAfter * 1000 });
  const syncFolders = createFolderSync({ store, codec });
  const mail = createMailService({ store, clock });
  // Information protection (server/protection/): what delivery stores of protected, S/MIME and labelled mail, what
  // each device may see of it, and the labels and protection of what is sent. A bad S/MIME trust file stops start-up.
  const protection = createProtectionService({
    store,
    clock,
    log,
    serverSecret: keys.serverSecret,
    smime: createSmimeInspector({ trustAnchorsPem: loadSmimeTrust(config.smimeTrustFile) }),
    // Delivery is built below with this service's inspector; a protected copy is prepared by it like any message.
    prepare: (raw) => delivery.prepare(raw),
  });
  // The one delivery path: LMTP (main.ts), import (CLI and admin API) and local recipients of sent mail.
  const delivery = createDelivery({
    store,
    clock,
    duplicateWindowSeconds: config.duplicateWindow,
    threadSubjectWindowSeconds: config.threadSubjectWindow,
    // What a message is (protected, S/MIME, labelled; a meeting message) before it is stored, and a meeting
    // message's effect on the recipient's calendar in the same transaction (calendar is built below: used later).
    inspect: async (raw, parsed) => {
      const inspected = await protection.inspect(raw, parsed);
      return { parsed: inspected.parsed, data: { ...inspected.data, ...(await calendar.inspect(raw, inspected.parsed)) } };
    },
    beforeStore: (tx, userId, message, now) => calendar.beforeStore(tx, userId, message, now),
    // Junk lists, ignored conversations, Focused Inbox and automatic replies (server/mailbox/rules.ts); a claimed
    // automatic reply is sent by the replier once the delivery has committed.
    rules: {
      route: (tx, userId, message, conversationId) => mailboxRules.route(tx, userId, message, conversationId),
      afterStore: function* (tx, userId, message, itemId, decision, now) {
        // Only a claim wakes the replier: ordinary deliveries add no work after their commit.
        const claimed = yield* mailboxRules.afterStore(tx, userId, message, itemId, decision, now);
        if (claimed) autoReplier.kick();
        return claimed;
      },
    },
  });
  const mailboxRules = createMailboxRules();
  // Push: fed by the store's commit hook; the item-sync route tells it how far each device synced (for ping).
  const push = createPush({
    store,
    clock,
    devices,
    signals: deviceSignals,
    codec,
    log,
    metrics: metrics.registry,
    options: { maxChannelsPerUser: config.pushStreamsPerUser, ...deps.push },
    cluster: deps.cluster?.push,
    access: accessCheck,
  });
  // Background push (server/push/background/): channels apps register at Web Push, APNs or FCM, woken by what the
  // store's commits write to the push outbox. main.ts starts its loops in the leading process and kicks them on
  // commits; a device cut ends its deliveries (blocked, quarantined, wipe requested) or its channels (wiped, removed).
  const pushGateways = deps.backgroundPush?.gateways ?? buildPushGateways(config, { vapid: config.pushEnabled ? vapidKeysFromFiles(config) : undefined });
  const backgroundPushOptions: BackgroundPushOptions = {
    ...DEFAULT_BACKGROUND_PUSH_OPTIONS,
    perDevicePerMinute: config.pushRatePerDevice,
    globalPerSecond: config.pushRateGlobal,
    ...deps.backgroundPush?.options,
  };
  const backgroundPush = createBackgroundPush({
    store,
    clock,
    log,
    gateways: pushGateways.gateways,
    policy: createBackgroundPushPolicy({ access, protection, devices }),
    options: backgroundPushOptions,
    metrics: metrics.registry,
  });
  const pushChannels = createChannelService({
    store,
    clock,
    config: pushGateways.view,
    maxChannelsPerDevice: backgroundPushOptions.maxChannelsPerDevice,
    allowPrivateEndpoints: config.pushAllowPrivateEndpoints,
  });
  deviceSignals.onCut((cut) => {
    const ends = cut.reason === 'wiped' || cut.reason === 'removed' || cut.reason === 'purged';
    const work = ends ? store.push.deleteChannelsOfDevice(cut.userId, cut.recordId) : store.push.dropDeliveriesOfDevice(cut.userId, cut.recordId);
    work.then(
      (n) => {
        if (n) log.info({ userId: cut.userId, deviceId: cut.deviceId, reason: cut.reason, [ends ? 'channels' : 'deliveries']: n }, ends ? 'background push channels of the device deleted' : 'queued background pushes of the device dropped');
      },
      (err: unknown) => log.error({ err, userId: cut.userId, deviceId: cut.deviceId, reason: cut.reason }, 'background push: the device cut could not be applied'),
    );
  });
  // Sent mail: local recipients through `delivery`, remote ones into the outbox for the relay worker (main.ts
  // starts it; tests run its passes by hand).
  const relay = createRelay({ store, clock, delivery, log, config });
  const cluster = deps.cluster;
  const onQueued = cluster
    ? () => {
        relay.kick();
        cluster.outboxQueued();
      }
    : relay.kick;
  // The directory (server/directory/): people search ranks the addresses a user writes to first.
  const directory = createDirectoryService({ store, clock });
  const send = createSendService({ store, clock, delivery, config, onQueued, protection, onSent: directory.recordSent });
  // Calendars (server/calendar/): events through the API, the calendar view, meetings kept in step over mail.
  const calendar = createCalendarService({ store, clock, log, send, hostname: config.mailHostname });
  const autoReplier = createAutoReplier({ store, clock, send, log, hostname: config.mailHostname });
  // Mailbox settings (server/mailbox/): a change is announced on the user's push streams.
  const mailboxService = createMailboxService({ store, clock, onSettingsChanged: (userId, version) => push.notifyUser(userId, 'mailboxSettingsChanged', { version }) });
  const importer = createImporter({ store, clock, delivery, maxMessageBytes: config.maxMessageBytes });

  // A token whose sign-in has ended but whose device is blocked or wiped is told so by the device's own code.
  const judgeDevice = async (userId: string, tenantId: string, deviceId: string) => void (await devices.gateIfRegistered(userId, tenantId, deviceId));
  const now = () => clock.now();
  // Every /v1 path, known or not, needs a token and passes the device gate: unauthenticated or unregistered
  // callers learn nothing about which routes exist. /admin needs an administrator, held to the same device rules.
  const deviceLimit = deviceRateLimit({ ratePerSecond: config.deviceRateLimit, burst: config.deviceRateBurst });
  // External trusted OIDC issuers (README, "External identity providers"): a bad file, or one naming Pigeon's own
  // issuer, stops start-up here (ConfigError); main.ts checks their tenants against the store before listening.
  const externalIssuers = loadExternalIssuers(config.externalIssuersFile, [issuer, ...Object.values(regions.directory)]);
  const external = { issuers: createExternalIssuers({ issuers: externalIssuers, now }), ownIssuer: issuer };
  // A token of another region gets 421 wrongRegion with that region's base URL, on /v1 and /admin and in the fast lane.
  const authenticator = store.hotCache.perRequest(createAuthenticator(store, accessTokens, now, judgeDevice, regions, undefined, external));
  // The identity provider's pages and endpoints: the provider answers its own paths; the sign-in pages are Pigeon's.
  const stylesheet: express.RequestHandler = (_req, res) => {
    res.setHeader('Cache-Control', 'public, max-age=3600');
    res.type('css').send(IDENTITY_STYLESHEET);
  };
  app.get('/idp/static/style.css', stylesheet);
  app.use(providerEndpoints(idp, { tokenRequestsPerIp: config.tokenRequestsPerIp, rateLimitWindowSeconds: config.rateLimitWindow, rateLimitStore: deps.cluster?.rateLimitStore }));
  const certificateSignIn = deps.certificateSignIn;
  const signIn = signInPages({
    idp,
    config,
    store,
    clock,
    log,
    serverSecret: keys.serverSecret,
    issuer,
    organizationName,
    access,
    rateLimitStore: deps.cluster?.rateLimitStore,
    ...(certificateSignIn
      ? { certificateUrl: (uid: string) => certificatePageUrl(issuer, certificateSignIn.port(), uid), clientCertTrust: certificateSignIn.trustFor }
      : {}),
  });
  app.use(signIn.routes);
  // The web pages (server/web/): shells, assets and the sign-in round trip, before the API mounts below (/admin/ is
  // a page, /admin/v1 the API). Their session cookie authenticates /admin/v1 and /account/v1 only, never /v1.
  // The token endpoint's per-address budget, shared with the pages' in-process code exchanges and refreshes.
  const tokenLimit = tokenAddressLimit({ tokenRequestsPerIp: config.tokenRequestsPerIp, rateLimitWindowSeconds: config.rateLimitWindow, rateLimitStore: deps.cluster?.rateLimitStore });
  const webBudget = tokenBudget(tokenLimit, addressKey, config.tokenRequestsPerIp);
  const webPost = providerPoster(idp, keys.serverSecret, webBudget);
  const webSessions = createWebSessions({ serverSecret: keys.serverSecret, accessTokens, post: webPost, now, refreshTokenTtlSeconds: config.refreshTokenTtl, refreshes: store.webRefresh });
  const webAuthenticate = (token: string) => authenticator('GET', '/web/session', { authorization: `Bearer ${token}` }, { protocol: 'https', host: undefined });
  app.use(webPages({ issuer, store, sessions: webSessions, post: webPost, now, authenticate: webAuthenticate, budget: webBudget }));
  const webCookie = cookieAuthentication(webSessions, new URL(issuer).origin);
  app.use('/admin/v1', webCookie);
  app.use('/account/v1', webCookie, authenticate(authenticator));
  app.use('/v1', authenticate(authenticator), deviceGate(devices, accessCheck), deviceLimit);
  app.use('/admin', authenticate(authenticator), requireAdmin, adminDeviceGate(devices));

  const adminService = createAdminService({ store, clock, audit: devices.audit, regions });
  // Diagnostics uploads (server/diagnostics/): incidents kept for PIGEON_DIAGNOSTICS_RETENTION, 5 uploads per device per hour.
  const diagnostics = createDiagnosticsService({
    store,
    clock,
    devices,
    deviceLog: deps.deviceLog ?? deviceLogOf(log) ?? new DeviceLogRing(),
    retentionMs: config.diagnosticsRetention * 1000,
  });
  // Every route, from the one table (server/routes.ts), through the one adapter (http/table.ts).
  const routes = routeTable({
    config,
    regions,
    ready: store,
    auth: {
      auth,
      accessTokens,
      idp,
      maxRequestBytes: config.maxRequestBytes,
      loginFailuresPerUser: config.loginFailuresPerUser,
      loginFailuresPerUserGlobal: config.loginFailuresPerUserGlobal,
      tokenRequestsPerIp: config.tokenRequestsPerIp,
      rateLimitWindowSeconds: config.rateLimitWindow,
      passwordGrant: config.passwordGrant,
      rateLimitStore: deps.cluster?.rateLimitStore,
      addressLimit: tokenLimit,
    },
    devices,
    sync: {
      mail,
      batch: createBatch({ store, clock, mail }),
      content: createContentService(store, protection),
      protection,
      syncItems,
      syncFolders,
      onItemsSynced: push.recordSync,
    },
    push: push.routes,
    backgroundPush: backgroundPushRoutes({ channels: pushChannels, config: pushGateways.view, clientIdOf: async (auth) => (await access.facts(auth)).clientId }),
    search: createSearchService({ store }),
    protection: { protection, store, clock, admin: adminService },
    calendar,
    contacts: createContactService({ store, clock }),
    directory,
    mailbox: {
      mailbox: mailboxService,
      store,
      clock,
      // A soft reset: the device's own stream hears it at once (its tokens answer 410 viewChanged from now on).
      onSoftReset: (device) => push.notifyDevice(device.id, 'softReset', { reason: 'viewChanged', epoch: device.epoch }),
      protection,
    },
    shared: createSharedMailboxes({ store, clock, audit: devices.audit, signals: deviceSignals }),
    conversations: {
      conversations: createConversationService({ store, clock, mail }),
      syncConversations: createConversationSync({ store, clock, codec, trimAfterMs: config.windowTrimAfter * 1000 }),
    },
    resync: createResync({ store, clock, codec }),
    diagnostics: { diagnostics, admin: adminService, limiter: new UploadLimiter(DIAGNOSTICS_UPLOADS_PER_HOUR, clock) },
    send,
    admin: adminService,
    importer,
    appPolicy: { access, store, clock, signals: deviceSignals },
    accessAdmin: createAccessAdmin({ store, clock, signals: deviceSignals }),
    compliance: {
      store,
      clock,
      log,
      signals: deviceSignals,
      issuer,
      // A bad partners file stops start-up here (ConfigError), as a bad external-issuers file does.
      verifier: config.compliancePartnersFile ? createPartnerVerifier({ partners: loadCompliancePartners(config.compliancePartnersFile), now }) : undefined,
    },
  });
  const idempotency = createIdempotency(store, clock);
  app.use(serveTable(routes, { maxRequestBytes: config.maxRequestBytes, maxJsonDepth: config.maxJsonDepth, idempotency, mailboxes: createMailboxResolver(store) }));

  app.use(notFoundHandler);
  app.use(errorHandler(log));

  // The hot reads without the Express chain, by the same code (http/fastLane.ts); the listener tries it first.
  const fastLane = config.fastLane
    ? createFastLane({ routes, authenticator, devices, deviceLimit, shed: shedCheck(shedding), metrics, log, securityHeaders, compression: compress, ipOf: expressIp(app), originOf: expressOrigin(app), accessCheck })
    : undefined;

  // The certificate listener's application: the certificate page (and the stylesheet its page links), nothing else.
  // No proxy can sit in front of it (it would end the TLS connection and with it the certificate), so the client
  // address is the socket's and forwarded headers are never believed.
  let certificateApp: express.Express | undefined;
  if (signIn.certificateRoutes) {
    certificateApp = express();
    certificateApp.disable('x-powered-by');
    certificateApp.set('trust proxy', false);
    certificateApp.set('etag', false);
    certificateApp.set('query parser', 'simple');
    certificateApp.use(requestId, requestLogger(log), securityHeaders);
    certificateApp.get('/idp/static/style.css', stylesheet);
    certificateApp.use(signIn.certificateRoutes);
    certificateApp.use(notFoundHandler);
    certificateApp.use(errorHandler(log));
  }

  return { app, certificateApp, fastLane, auth, idp, accessTokens, metrics, devices, deviceSignals, access, protection, calendar, mail, delivery, syncItems, syncFolders, push, lag, deviceLimit, relay, send, externalIssuers, autoReplier, mailboxService, diagnostics, backgroundPush, pushGateways, pushChannels };
}

export type PigeonApp = ReturnType<typeof createApp>;
