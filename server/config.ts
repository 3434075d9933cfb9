/**
 * Configuration: one declarative table. Each entry names its environment variable, type, default and one line of
 * documentation; the README's config table is generated from the same list (`npm run admin -- config-doc`).
 * A bad value stops start-up with an error naming the variable. Entries marked `secret` are never logged.
 */
import path from 'node:path';

type Kind = 'string' | 'int' | 'bool' | 'duration' | 'list' | 'enum' | 'url';

interface Entry<K extends Kind = Kind> {
  env: string;
  kind: K;
  default: string;
  doc: string;
  min?: number;
  max?: number;
  choices?: readonly string[];
  /** Never logged nor echoed in an error. A `url` entry is never secret as a whole: only its password is masked. */
  secret?: boolean;
}

export const CONFIG_TABLE = {
  host: { env: 'PIGEON_HOST', kind: 'string', default: 'localhost', doc: 'Address the HTTPS listener binds to.' },
  port: { env: 'PIGEON_PORT', kind: 'int', default: '8443', min: 0, max: 65535, doc: 'HTTPS port (0 picks a free one).' },
  dataDir: { env: 'PIGEON_DATA_DIR', kind: 'string', default: 'data', doc: 'Directory for the SQLite file and generated keys (with PIGEON_DATABASE_URL: only the generated development certificate).' },
  databaseUrl: { env: 'PIGEON_DATABASE_URL', kind: 'url', default: '', doc: 'PostgreSQL to keep everything in (postgres://user:password@host:5432/database); several nodes may share one. Empty: the embedded SQLite file in PIGEON_DATA_DIR. Its password is never logged.' },
  databasePoolSize: { env: 'PIGEON_DATABASE_POOL_SIZE', kind: 'int', default: '10', min: 1, max: 1000, doc: 'PostgreSQL connections each server process keeps (besides one that listens to the commit feed and one for cluster-wide jobs).' },
  region: { env: 'PIGEON_REGION', kind: 'string', default: 'default', doc: 'The region this node serves (1 to 32 of a-z 0-9 -): it creates tenants there and refuses to start on a store holding a tenant of another region (README, "Regions").' },
  regions: { env: 'PIGEON_REGIONS', kind: 'list', default: '', doc: "The public directory of regions, comma-separated `name=https://base-url` (this node's own may be listed, else its base URL is the issuer): a token of a listed region gets 421 wrongRegion naming its base URL; the session and discovery documents show it." },
  nodeId: { env: 'PIGEON_NODE_ID', kind: 'string', default: '', doc: "This node's name among the nodes sharing PIGEON_DATABASE_URL (logs, the commit feed), to which each process adds its worker number and random characters, so no two share one; empty: the host name and process id." },
  tlsCert: { env: 'PIGEON_TLS_CERT', kind: 'string', default: '', doc: 'PEM certificate chain; empty generates a self-signed dev certificate in certs/.' },
  tlsKey: { env: 'PIGEON_TLS_KEY', kind: 'string', default: '', doc: 'PEM private key for PIGEON_TLS_CERT.', secret: true },
  demo: { env: 'PIGEON_DEMO', kind: 'bool', default: 'true', doc: 'Seed the demo tenant when the store has no users.' },
  logLevel: { env: 'PIGEON_LOG_LEVEL', kind: 'enum', default: 'info', choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], doc: 'pino log level.' },
  logPretty: { env: 'PIGEON_LOG_PRETTY', kind: 'bool', default: 'false', doc: 'Human-readable logs (development only; JSON otherwise).' },
  issuer: { env: 'PIGEON_ISSUER', kind: 'string', default: '', doc: 'JWT issuer (`iss`); empty means https://<host>:<port>.' },
  audience: { env: 'PIGEON_AUDIENCE', kind: 'string', default: 'pigeon-api', doc: 'JWT audience (`aud`) the API accepts.' },
  accessTokenTtl: { env: 'PIGEON_ACCESS_TOKEN_TTL', kind: 'duration', default: '1h', min: 60, max: 86400, doc: 'Access token lifetime.' },
  refreshTokenTtl: { env: 'PIGEON_REFRESH_TOKEN_TTL', kind: 'duration', default: '90d', min: 3600, max: 365 * 86400, doc: 'Refresh token lifetime.' },
  refreshRetryGrace: { env: 'PIGEON_REFRESH_RETRY_GRACE', kind: 'duration', default: '10s', min: 0, max: 300, doc: 'Window in which replaying the just-rotated refresh token returns the same successor (lost responses).' },
  signingKeyFile: { env: 'PIGEON_SIGNING_KEY_FILE', kind: 'string', default: '', doc: 'Ed25519 private key (PKCS#8 PEM) that signs access tokens; empty means <data dir>/keys/jwt-signing-key.pem, generated if missing (with PIGEON_DATABASE_URL: kept in the database, one for every node).' },
  secretFile: { env: 'PIGEON_SECRET_FILE', kind: 'string', default: '', doc: 'Server secret for HMACs (refresh and sync tokens); empty means <data dir>/keys/server-secret, generated if missing (with PIGEON_DATABASE_URL: kept in the database, one for every node).' },
  oauthClients: { env: 'PIGEON_OAUTH_CLIENTS', kind: 'list', default: 'pigeon-app,pigeon-cli', doc: 'Comma-separated public OAuth client ids (the apps): authorization code + PKCE, the device flow, and the development password grant.' },
  passwordGrant: { env: 'PIGEON_PASSWORD_GRANT', kind: 'bool', default: '', doc: 'Allow the OAuth password grant (RFC 9700 says not to): for development and the curl walk-through only. Unset: on exactly when PIGEON_DEMO is; the discovery document says which.' },
  oauthRedirectUris: { env: 'PIGEON_OAUTH_REDIRECT_URIS', kind: 'list', default: 'com.pigeon.app:/oauth2redirect,http://127.0.0.1/callback', doc: "Comma-separated redirect URIs the apps (PIGEON_OAUTH_CLIENTS) may use with the authorization code flow; a loopback http URI allows any port (RFC 8252)." },
  organizationName: { env: 'PIGEON_ORGANIZATION_NAME', kind: 'string', default: '', doc: "The name the sign-in pages show before the user is known; empty: the tenant's name when there is one tenant, else Pigeon." },
  mfaRequired: { env: 'PIGEON_MFA_REQUIRED', kind: 'bool', default: 'false', doc: 'Every user must use two-step sign-in (TOTP): one who has not enrolled enrols at the next sign-in. Off: enrolment is offered and may be skipped.' },
  operatorClientSecret: { env: 'PIGEON_OPERATOR_CLIENT_SECRET', kind: 'string', default: '', doc: 'Secret of the confidential client `pigeon-operator`, which may use token introspection (RFC 7662); empty: no such client. At least 32 characters.', secret: true },
  compliancePartnersFile: { env: 'PIGEON_COMPLIANCE_PARTNERS_FILE', kind: 'string', default: '', doc: 'JSON file of device-compliance partners (MDMs) allowed to call PUT /compliance/v1/devices/{deviceId} with signed requests: id, tenantIds, keys (keyId and an Ed25519 or P-256 public key, JWK or PEM); README, "Device compliance". Empty: the compliance API refuses every request.' },
  smimeTrustFile: { env: 'PIGEON_SMIME_TRUST_FILE', kind: 'string', default: '', doc: 'PEM file of the certificate authorities whose S/MIME signatures count as trusted (README, "S/MIME"); empty: a correct signature is reported as untrusted.' },
  complianceGrace: { env: 'PIGEON_COMPLIANCE_GRACE', kind: 'duration', default: '0s', min: 0, max: 30 * 86400, doc: 'How long a device that turns noncompliant keeps counting as compliant for conditional access (time to fix it); 0: access ends at once.' },
  signInLogRetention: { env: 'PIGEON_SIGN_IN_LOG_RETENTION', kind: 'duration', default: '30d', min: 86400, max: 730 * 86400, doc: 'How long the sign-in log (conditional-access results, risk) is kept.' },
  diagnosticsRetention: { env: 'PIGEON_DIAGNOSTICS_RETENTION', kind: 'duration', default: '30d', min: 3600, max: 3650 * 86400, doc: 'How long an uploaded diagnostics bundle (an incident, `POST /v1/diagnostics`) is kept before it is purged (with the history purge and `npm run admin -- diagnostics purge`).' },
  externalIssuersFile: { env: 'PIGEON_EXTERNAL_ISSUERS_FILE', kind: 'string', default: '', doc: 'JSON file of external OIDC issuers whose access tokens the API accepts (issuer, audience, tenant, claim mapping; README, "External identity providers"); empty: only the built-in identity provider.' },
  clientCertTrustFile: { env: 'PIGEON_CLIENT_CERT_TRUST_FILE', kind: 'string', default: '', doc: 'JSON file naming, per tenant, the CAs (and CRLs) whose client certificates may sign users in (README, "Certificate sign-in"); empty: no certificate sign-in.' },
  certSignInPort: { env: 'PIGEON_CERT_SIGNIN_PORT', kind: 'int', default: '8444', min: 0, max: 65535, doc: 'HTTPS port of the listener that asks browsers for a client certificate (only with PIGEON_CLIENT_CERT_TRUST_FILE; 0 picks a free one). A listener of its own, so the API and the other pages never prompt for a certificate.' },
  signInSessionTtl: { env: 'PIGEON_SIGN_IN_SESSION_TTL', kind: 'duration', default: '8h', min: 60, max: 30 * 86400, doc: "How long the identity provider's browser session lasts (a second app signing in on the same browser skips the password in that time)." },
  loginFailuresPerUser: { env: 'PIGEON_LOGIN_FAILURES_PER_USER', kind: 'int', default: '10', min: 1, max: 10000, doc: 'Failed password grants per username from one client address per window before 429.' },
  loginFailuresPerUserGlobal: { env: 'PIGEON_LOGIN_FAILURES_PER_USER_GLOBAL', kind: 'int', default: '20', min: 1, max: 100000, doc: 'Failed password grants per username from all addresses together per window before 429 (a device proving a live sign-in is exempt).' },
  tokenRequestsPerIp: { env: 'PIGEON_TOKEN_REQUESTS_PER_IP', kind: 'int', default: '300', min: 1, max: 1000000, doc: 'Token-endpoint requests per client address per window before 429.' },
  rateLimitWindow: { env: 'PIGEON_RATE_LIMIT_WINDOW', kind: 'duration', default: '15m', min: 1, max: 86400, doc: 'Window of the token-endpoint rate limits.' },
  trustProxy: { env: 'PIGEON_TRUST_PROXY', kind: 'string', default: 'false', doc: "Express 'trust proxy' setting (false, true, a hop count or a subnet list)." },
  maxRequestBytes: { env: 'PIGEON_MAX_REQUEST_BYTES', kind: 'int', default: '1048576', min: 1024, max: 100 * 1024 * 1024, doc: 'Largest JSON or form request body.' },
  maxJsonDepth: { env: 'PIGEON_MAX_JSON_DEPTH', kind: 'int', default: '32', min: 2, max: 1000, doc: 'Deepest nesting of a JSON request body.' },
  workers: { env: 'PIGEON_WORKERS', kind: 'int', default: '0', min: 0, max: 256, doc: 'Server processes sharing the listeners and the store (node:cluster; device cuts, push channels and, with SQLite, commits and limits are carried between them; with PostgreSQL each is a node); 0: one per available core; 1: a single process, no cluster.' },
  shutdownTimeout: { env: 'PIGEON_SHUTDOWN_TIMEOUT', kind: 'duration', default: '30s', min: 1, max: 3600, doc: 'Longest wait for in-flight requests on SIGTERM before connections are cut.' },
  headersTimeout: { env: 'PIGEON_HEADERS_TIMEOUT', kind: 'duration', default: '10s', min: 1, max: 600, doc: 'Time a client has to send its request headers.' },
  requestTimeout: { env: 'PIGEON_REQUEST_TIMEOUT', kind: 'duration', default: '5m', min: 1, max: 86400, doc: 'Time a client has to send a whole request.' },
  keepAliveTimeout: { env: 'PIGEON_KEEPALIVE_TIMEOUT', kind: 'duration', default: '65s', min: 1, max: 3600, doc: 'Idle keep-alive socket lifetime.' },
  changeHistory: { env: 'PIGEON_CHANGE_HISTORY', kind: 'duration', default: '30d', min: 3600, max: 3650 * 86400, doc: 'How long tombstones are kept; sync tokens older than this get 410.' },
  windowTrimAfter: { env: 'PIGEON_WINDOW_TRIM_AFTER', kind: 'duration', default: '24h', min: 1, max: 365 * 86400, doc: 'An item window extended by loadMore is trimmed back to 500 after this long.' },
  historyPurgeInterval: { env: 'PIGEON_HISTORY_PURGE_INTERVAL', kind: 'duration', default: '1h', min: 1, max: 86400, doc: 'How often tombstones older than PIGEON_CHANGE_HISTORY (and day-old idempotency records) are purged.' },
  deviceInactivity: { env: 'PIGEON_DEVICE_INACTIVITY', kind: 'duration', default: '30d', min: 3600, max: 3650 * 86400, doc: 'A device unseen this long loses its partnership (record, sync state and tokens are purged).' },
  devicePurgeInterval: { env: 'PIGEON_DEVICE_PURGE_INTERVAL', kind: 'duration', default: '1h', min: 1, max: 86400, doc: 'How often the server looks for inactive devices to purge.' },
  maxDevicesPerUser: { env: 'PIGEON_MAX_DEVICES_PER_USER', kind: 'int', default: '100', min: 1, max: 100000, doc: 'Devices one user may register.' },
  pushStreamsPerUser: { env: 'PIGEON_PUSH_STREAMS_PER_USER', kind: 'int', default: '10', min: 1, max: 100000, doc: 'Push channels (event streams and waiting pings) one user may hold open at once; one more is 429.' },
  deviceRateLimit: { env: 'PIGEON_DEVICE_RATE_LIMIT', kind: 'int', default: '100', min: 0, max: 1000000, doc: 'Sustained requests per second one device may make (a token bucket); above it 429 with Retry-After. 0 disables.' },
  deviceRateBurst: { env: 'PIGEON_DEVICE_RATE_BURST', kind: 'int', default: '300', min: 1, max: 1000000, doc: 'Requests one device may make in a burst before PIGEON_DEVICE_RATE_LIMIT applies.' },
  shedLagMs: { env: 'PIGEON_SHED_LAG_MS', kind: 'int', default: '200', min: 0, max: 60000, doc: 'Event-loop delay (mean over two 0.5 s windows, in ms) above which new requests are refused with 503 and Retry-After until the process catches up. 0 disables.' },
  fastLane: { env: 'PIGEON_FAST_LANE', kind: 'bool', default: 'true', doc: 'Serve the hot reads (folder and item sync, session) by a lean handler in front of the Express chain, with the same checks and answers; false sends every request through Express.' },
  bodyMinRate: { env: 'PIGEON_BODY_MIN_RATE', kind: 'int', default: '1024', min: 0, max: 100 * 1024 * 1024, doc: 'Bytes per second a request body must keep arriving at (after a 10 s grace); slower clients are disconnected. 0 disables.' },
  mailHostname: { env: 'PIGEON_MAIL_HOSTNAME', kind: 'string', default: 'localhost', doc: 'Name this server uses in mail: LMTP greeting, Received headers, Message-IDs of sent mail, the sender of non-delivery reports.' },
  lmtpEnabled: { env: 'PIGEON_LMTP_ENABLED', kind: 'bool', default: 'true', doc: 'Start the LMTP listener (RFC 2033) that MTAs deliver into.' },
  lmtpHost: { env: 'PIGEON_LMTP_HOST', kind: 'string', default: '127.0.0.1', doc: 'Address the LMTP listener binds to (loopback: only a local MTA may deliver).' },
  lmtpPort: { env: 'PIGEON_LMTP_PORT', kind: 'int', default: '2424', min: 0, max: 65535, doc: 'LMTP port (0 picks a free one).' },
  metricsEnabled: { env: 'PIGEON_METRICS_ENABLED', kind: 'bool', default: 'true', doc: 'Serve Prometheus metrics (`GET /metrics`) on their own plain-HTTP listener; never on the API port.' },
  metricsHost: { env: 'PIGEON_METRICS_HOST', kind: 'string', default: '127.0.0.1', doc: 'Address the metrics listener binds to (loopback: only local scrapers; set PIGEON_METRICS_TOKEN before widening it).' },
  metricsPort: { env: 'PIGEON_METRICS_PORT', kind: 'int', default: '9464', min: 0, max: 65535, doc: 'Metrics port (0 picks a free one).' },
  metricsToken: { env: 'PIGEON_METRICS_TOKEN', kind: 'string', default: '', doc: 'When set, scrapers must send `Authorization: Bearer <token>` (at least 16 characters of A-Z a-z 0-9 . _ ~ + / -); empty: no token.', secret: true },
  maxMessageBytes: { env: 'PIGEON_MAX_MESSAGE_BYTES', kind: 'int', default: '52428800', min: 1024, max: 1024 * 1024 * 1024, doc: 'Largest message accepted by LMTP, import and send (LMTP answers 552 above it, HTTP 413).' },
  duplicateWindow: { env: 'PIGEON_DUPLICATE_WINDOW', kind: 'duration', default: '24h', min: 0, max: 365 * 86400, doc: 'A second delivery of the same Message-ID into the same folder within this time is acknowledged but not stored.' },
  threadSubjectWindow: { env: 'PIGEON_THREAD_SUBJECT_WINDOW', kind: 'duration', default: '7d', min: 0, max: 365 * 86400, doc: 'A reply without thread headers joins the newest conversation with the same subject received within this time.' },
  smtpRelayUrl: { env: 'PIGEON_SMTP_RELAY_URL', kind: 'string', default: '', doc: 'Smarthost for remote recipients of sent mail (smtp://user:pass@host:587 or smtps://...); empty: remote recipients bounce with a non-delivery report.', secret: true },
  outboxRetryBase: { env: 'PIGEON_OUTBOX_RETRY_BASE', kind: 'duration', default: '60s', min: 1, max: 86400, doc: 'First retry delay after a relay failure; each further retry doubles it (at most 1 h).' },
  outboxGiveUpAfter: { env: 'PIGEON_OUTBOX_GIVE_UP_AFTER', kind: 'duration', default: '2d', min: 1, max: 30 * 86400, doc: 'A message the relay has not accepted after this long is given up: the sender gets a non-delivery report.' },
  pushEnabled: { env: 'PIGEON_PUSH_ENABLED', kind: 'bool', default: 'true', doc: 'Background push (README, "Background push"): apps register Web Push, APNs or FCM channels and are woken for new mail, badges and calendar reminders. False: no gateway is configured and registrations are refused.' },
  pushVapidSubject: { env: 'PIGEON_PUSH_VAPID_SUBJECT', kind: 'string', default: '', doc: 'The VAPID subject push services may contact the operator at (RFC 8292: a mailto: or https: URL); empty: mailto:postmaster@<PIGEON_MAIL_HOSTNAME>.' },
  pushVapidPublicKey: { env: 'PIGEON_PUSH_VAPID_PUBLIC_KEY', kind: 'string', default: '', doc: 'The VAPID public key (base64url, an uncompressed P-256 point), set together with PIGEON_PUSH_VAPID_PRIVATE_KEY; empty: a pair generated once and kept (<data dir>/keys/vapid.json, or with PIGEON_DATABASE_URL in the database for every node), so subscriptions survive restarts.' },
  pushVapidPrivateKey: { env: 'PIGEON_PUSH_VAPID_PRIVATE_KEY', kind: 'string', default: '', doc: 'The VAPID private key (base64url, 32 bytes) of PIGEON_PUSH_VAPID_PUBLIC_KEY.', secret: true },
  pushApnsKeyFile: { env: 'PIGEON_PUSH_APNS_KEY_FILE', kind: 'string', default: '', doc: "Apple's token signing key (.p8, PKCS#8 PEM) for APNs, with PIGEON_PUSH_APNS_KEY_ID and PIGEON_PUSH_APNS_TEAM_ID; empty: no APNs." },
  pushApnsKeyId: { env: 'PIGEON_PUSH_APNS_KEY_ID', kind: 'string', default: '', doc: 'The key id (10 characters) of PIGEON_PUSH_APNS_KEY_FILE.' },
  pushApnsTeamId: { env: 'PIGEON_PUSH_APNS_TEAM_ID', kind: 'string', default: '', doc: 'The Apple developer team id (10 characters) the APNs key belongs to.' },
  pushApnsOrigin: { env: 'PIGEON_PUSH_APNS_ORIGIN', kind: 'string', default: 'https://api.push.apple.com', doc: "APNs' production endpoint (channels registered with environment `production`)." },
  pushApnsSandboxOrigin: { env: 'PIGEON_PUSH_APNS_SANDBOX_ORIGIN', kind: 'string', default: 'https://api.sandbox.push.apple.com', doc: "APNs' development endpoint (channels registered with environment `sandbox`)." },
  pushFcmServiceAccountFile: { env: 'PIGEON_PUSH_FCM_SERVICE_ACCOUNT_FILE', kind: 'string', default: '', doc: "A Firebase service account's JSON key (its project_id names the project) for FCM HTTP v1; empty: no FCM." },
  pushFcmOrigin: { env: 'PIGEON_PUSH_FCM_ORIGIN', kind: 'string', default: 'https://fcm.googleapis.com', doc: "FCM's endpoint." },
  pushRatePerDevice: { env: 'PIGEON_PUSH_RATE_PER_DEVICE', kind: 'int', default: '30', min: 1, max: 100000, doc: 'Background pushes one device may be sent per minute; more wait (and coalesce by collapse key).' },
  pushRateGlobal: { env: 'PIGEON_PUSH_RATE_GLOBAL', kind: 'int', default: '500', min: 1, max: 1000000, doc: 'Background pushes per second over all devices; with PostgreSQL over all nodes together (a window shared in the database); more wait.' },
  pushAllowPrivateEndpoints: { env: 'PIGEON_PUSH_ALLOW_PRIVATE_ENDPOINTS', kind: 'bool', default: 'false', doc: 'Accept Web Push endpoints on loopback, private or link-local addresses (tests, a push service on the local network). False: such endpoints are refused at registration, so a client cannot make the server send requests into its own network.' },
} as const satisfies Record<string, Entry>;

type Table = typeof CONFIG_TABLE;
type ValueOf<E> = E extends { kind: 'int' | 'duration' }
  ? number
  : E extends { kind: 'bool' }
    ? boolean
    : E extends { kind: 'list' }
      ? string[]
      : string;

export type Config = { -readonly [K in keyof Table]: ValueOf<Table[K]> };

export class ConfigError extends Error {
  constructor(
    readonly env: string,
    message: string,
  ) {
    super(`${env}: ${message}`);
    this.name = 'ConfigError';
  }
}

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** Durations are written `90d`, `1h`, `15m`, `10s` or plain seconds; the value is in seconds. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d{1,9})([smhd]?)$/.exec(text.trim());
  if (!m) return undefined;
  return Number(m[1]) * DURATION_UNITS[m[2] || 's']!;
}

function parseValue(key: string, entry: Entry, raw: string): unknown {
  const fail = (why: string): never => {
    throw new ConfigError(entry.env, entry.secret ? why : `${why} (got ${JSON.stringify(raw)})`);
  };
  switch (entry.kind) {
    case 'string':
      return raw;
    case 'url':
      return raw === '' ? raw : checkDatabaseUrl(entry.env, raw);
    case 'list':
      return raw
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
    case 'bool': {
      const v = raw.trim().toLowerCase();
      if (['1', 'true', 'yes', 'on'].includes(v)) return true;
      if (['0', 'false', 'no', 'off'].includes(v)) return false;
      return fail('expected true or false');
    }
    case 'enum':
      if (!entry.choices?.includes(raw)) fail(`expected one of ${entry.choices?.join(', ')}`);
      return raw;
    case 'int':
    case 'duration': {
      const n = entry.kind === 'int' ? (/^-?\d{1,15}$/.test(raw.trim()) ? Number(raw) : undefined) : parseDuration(raw);
      if (n === undefined) return fail(entry.kind === 'int' ? 'expected a whole number' : 'expected a duration like 30s, 15m, 1h or 90d');
      if (entry.min !== undefined && n < entry.min) fail(`must be at least ${entry.min}`);
      if (entry.max !== undefined && n > entry.max) fail(`must be at most ${entry.max}`);
      return n;
    }
  }
  return fail(`unknown kind for ${key}`);
}

/** Builds the config from an environment; unknown `PIGEON_*` variables are errors too (a typo must not pass silently). */
export function loadConfig(env: Record<string, string | undefined> = process.env, overrides: Partial<Config> = {}): Config {
  const known = new Set<string>(Object.values(CONFIG_TABLE).map((e) => e.env));
  for (const name of Object.keys(env)) {
    if (name.startsWith('PIGEON_') && !known.has(name)) throw new ConfigError(name, 'unknown setting');
  }
  const out: Record<string, unknown> = {};
  for (const [key, entry] of Object.entries(CONFIG_TABLE) as [string, Entry][]) {
    const raw = env[entry.env];
    if (key === 'passwordGrant' && (raw === undefined || raw === '')) continue; // follows PIGEON_DEMO, below
    out[key] = parseValue(key, entry, raw === undefined || raw === '' ? entry.default : raw);
  }
  out.passwordGrant ??= out.demo;
  const config = { ...(out as Config), ...overrides };
  config.dataDir = path.resolve(config.dataDir);
  // A bearer token: URL- and header-safe characters, long enough not to be guessed. Never echoed (it is a secret).
  if (config.metricsToken && !/^[A-Za-z0-9._~+/-]{16,}=*$/.test(config.metricsToken)) {
    throw new ConfigError('PIGEON_METRICS_TOKEN', 'must be at least 16 characters of A-Z a-z 0-9 . _ ~ + / -');
  }
  if (config.operatorClientSecret && config.operatorClientSecret.length < 32) {
    throw new ConfigError('PIGEON_OPERATOR_CLIENT_SECRET', 'must be at least 32 characters');
  }
  checkRegions(config);
  checkPush(config);
  return config;
}

/** Background push: the VAPID pair both or neither, well-formed; the APNs key with its ids; https origins. */
function checkPush(config: Config): void {
  if (Boolean(config.pushVapidPublicKey) !== Boolean(config.pushVapidPrivateKey)) {
    throw new ConfigError(config.pushVapidPublicKey ? 'PIGEON_PUSH_VAPID_PRIVATE_KEY' : 'PIGEON_PUSH_VAPID_PUBLIC_KEY', 'set both VAPID keys, or neither (a pair is then generated)');
  }
  if (config.pushVapidPublicKey) {
    const pub = Buffer.from(config.pushVapidPublicKey, 'base64url');
    if (!/^[A-Za-z0-9_-]+$/.test(config.pushVapidPublicKey) || pub.length !== 65 || pub[0] !== 4) {
      throw new ConfigError('PIGEON_PUSH_VAPID_PUBLIC_KEY', `expected an uncompressed P-256 point (65 bytes) in base64url (got ${JSON.stringify(config.pushVapidPublicKey)})`);
    }
    if (!/^[A-Za-z0-9_-]+$/.test(config.pushVapidPrivateKey) || Buffer.from(config.pushVapidPrivateKey, 'base64url').length !== 32) {
      throw new ConfigError('PIGEON_PUSH_VAPID_PRIVATE_KEY', 'expected 32 bytes in base64url');
    }
  }
  if (config.pushVapidSubject && !/^(mailto:[^\s@]+@[^\s@]+|https:\/\/\S+)$/.test(config.pushVapidSubject)) {
    throw new ConfigError('PIGEON_PUSH_VAPID_SUBJECT', `expected a mailto: or https: URL (got ${JSON.stringify(config.pushVapidSubject)})`);
  }
  if (config.pushApnsKeyFile) {
    for (const [env, value] of [['PIGEON_PUSH_APNS_KEY_ID', config.pushApnsKeyId], ['PIGEON_PUSH_APNS_TEAM_ID', config.pushApnsTeamId]] as const) {
      if (!/^[A-Z0-9]{10}$/.test(value)) throw new ConfigError(env, `expected the 10 characters (A-Z 0-9) Apple gives it, needed with PIGEON_PUSH_APNS_KEY_FILE (got ${JSON.stringify(value)})`);
    }
  }
  for (const [env, value] of [
    ['PIGEON_PUSH_APNS_ORIGIN', config.pushApnsOrigin],
    ['PIGEON_PUSH_APNS_SANDBOX_ORIGIN', config.pushApnsSandboxOrigin],
    ['PIGEON_PUSH_FCM_ORIGIN', config.pushFcmOrigin],
  ] as const) {
    let url: URL | undefined;
    try {
      url = new URL(value);
    } catch {
      url = undefined;
    }
    if (!url || url.protocol !== 'https:' || url.username || url.password || url.search || url.hash || (url.pathname !== '/' && url.pathname !== '')) {
      throw new ConfigError(env, `expected an https:// origin without a path, credentials, query or fragment (got ${JSON.stringify(value)})`);
    }
  }
}

/** A region's name: short, lower-case, safe in a URL, a log line and a file name. */
const REGION_NAME = /^[a-z0-9-]{1,32}$/;

/** PIGEON_REGION and PIGEON_REGIONS: well-formed names and base URLs, each region listed once. */
function checkRegions(config: Config): void {
  if (!REGION_NAME.test(config.region)) {
    throw new ConfigError('PIGEON_REGION', `expected 1 to 32 of a-z 0-9 - (got ${JSON.stringify(config.region)})`);
  }
  regionDirectory(config);
}

/**
 * The directory of regions, name → base URL (no trailing slash), from PIGEON_REGIONS, with this node's own region
 * added at the issuer's URL when the list does not name it. A bad entry is a ConfigError naming it.
 */
export function regionDirectory(config: Pick<Config, 'region' | 'regions' | 'issuer' | 'host' | 'port'>): Record<string, string> {
  const env = 'PIGEON_REGIONS';
  const directory: Record<string, string> = {};
  for (const entry of config.regions) {
    const eq = entry.indexOf('=');
    const name = eq < 0 ? entry : entry.slice(0, eq).trim();
    const raw = eq < 0 ? '' : entry.slice(eq + 1).trim();
    if (eq < 0) throw new ConfigError(env, `expected name=https://base-url, comma-separated (got ${JSON.stringify(entry)})`);
    if (!REGION_NAME.test(name)) throw new ConfigError(env, `region names are 1 to 32 of a-z 0-9 - (got ${JSON.stringify(name)})`);
    if (Object.hasOwn(directory, name)) throw new ConfigError(env, `region ${name} is listed twice`);
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new ConfigError(env, `region ${name}: expected an https:// base URL (got ${JSON.stringify(raw)})`);
    }
    if (url.protocol !== 'https:' || url.username || url.password || url.search || url.hash || raw.includes('?') || raw.includes('#')) {
      throw new ConfigError(env, `region ${name}: expected an https:// base URL without credentials, query or fragment (got ${JSON.stringify(raw)})`);
    }
    directory[name] = url.toString().replace(/\/+$/, '');
  }
  directory[config.region] ??= issuerOf(config);
  return directory;
}

/** The config as it may be logged: secrets masked, a URL's password too. */
export function redactedConfig(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, entry] of Object.entries(CONFIG_TABLE) as [keyof Config, Entry][]) {
    const value = config[key];
    out[key] = entry.secret && value ? '[redacted]' : entry.kind === 'url' && typeof value === 'string' ? redactUrl(value) : value;
  }
  return out;
}

/** What stands in for a masked password (characters a URL keeps as they are). */
const REDACTED = '***';

/**
 * `url` as it may be logged: its password (user-info or `?password=`) replaced. Text that is no URL at all is
 * replaced whole, since where a password would be in it cannot be told.
 */
export function redactUrl(url: string): string {
  if (url === '') return url;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return REDACTED;
  }
  if (u.password) u.password = REDACTED;
  if (u.searchParams.has('password')) u.searchParams.set('password', REDACTED);
  return u.toString();
}

/**
 * PIGEON_DATABASE_URL: a postgres:// or postgresql:// URL (libpq's form; the host may instead come as `?host=` for a
 * Unix socket). A bad one is refused naming what is wrong, showing the value with its password masked.
 */
function checkDatabaseUrl(env: string, raw: string): string {
  const shown = redactUrl(raw);
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new ConfigError(env, 'expected a URL like postgres://user:password@host:5432/database (a password with @ : / ? # or % in it must be percent-encoded)');
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') {
    throw new ConfigError(env, `expected a postgres:// or postgresql:// URL (got ${JSON.stringify(shown)}); leave it empty for the embedded SQLite file`);
  }
  if (!u.hostname && !u.searchParams.get('host')) {
    throw new ConfigError(env, `names no host (got ${JSON.stringify(shown)})`);
  }
  if (u.port && !(Number(u.port) >= 1 && Number(u.port) <= 65535)) throw new ConfigError(env, `bad port (got ${JSON.stringify(shown)})`);
  try {
    decodeURIComponent(u.username);
    decodeURIComponent(u.password);
    decodeURIComponent(u.pathname);
  } catch {
    throw new ConfigError(env, `bad percent-encoding in the user, password or database name (got ${JSON.stringify(shown)})`);
  }
  return raw;
}

/** Markdown table for the README. */
export function configMarkdown(): string {
  const rows = (Object.values(CONFIG_TABLE) as Entry[]).map(
    (e) => `| \`${e.env}\` | ${e.kind} | ${e.default === '' ? '(empty)' : '`' + e.default + '`'} | ${e.doc} |`,
  );
  return ['| variable | type | default | meaning |', '|---|---|---|---|', ...rows].join('\n');
}

export function issuerOf(config: Pick<Config, 'issuer' | 'host' | 'port'>): string {
  return config.issuer || `https://${config.host}:${config.port}`;
}
