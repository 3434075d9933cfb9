/**
 * The gateways background push sends through, built from the configuration (README, "Background push"):
 *
 * - Web Push, signed with the VAPID pair of PIGEON_PUSH_VAPID_PUBLIC_KEY / _PRIVATE_KEY; when neither is set, a
 *   pair generated once and kept — with SQLite in <data dir>/keys/vapid.json (mode 0600), with PostgreSQL in the
 *   database's node secrets, one for every node — so the subscriptions browsers made against its public key keep
 *   working across restarts;
 * - APNs, with the .p8 key of PIGEON_PUSH_APNS_KEY_FILE (key id, team id): one client per Apple origin (production
 *   and sandbox), behind one `apns` gateway that picks by the channel's environment;
 * - FCM HTTP v1, with the service account JSON of PIGEON_PUSH_FCM_SERVICE_ACCOUNT_FILE (its project_id names the
 *   project).
 *
 * A gateway that is not configured is absent: registering a channel of its kind is refused (400 naming `kind`), and
 * `GET /v1/push/config` says null for it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, type Config } from '../../config';
import type { SharedKeyStore } from '../../auth/keys';
import { createApnsGateway, createFcmGateway, createWebPushGateway, generateVapidKeys, type FcmServiceAccount, type VapidDetails } from '../gateways';
import type { Gateway, PushKind, PushMessage, PushTarget } from '../gateways/types';

/** How long one send may take before it becomes a retry. */
export const PUSH_GATEWAY_TIMEOUT_MS = 10_000;
/** The name of the generated VAPID pair among the node secrets (PostgreSQL) and its file (SQLite). */
export const VAPID_SECRET_NAME = 'push-vapid-keys';
const VAPID_FILE = 'vapid.json';

/** What `GET /v1/push/config` answers: what the server can deliver through (null: not configured). */
export interface PushConfigView {
  webPush: { applicationServerKey: string } | null;
  apns: { environments: Array<'production' | 'sandbox'> } | null;
  fcm: { projectId: string } | null;
}

export interface PushGatewaySet {
  gateways: Partial<Record<PushKind, Gateway>>;
  view: PushConfigView;
  close(): Promise<void>;
}

export const NO_PUSH_GATEWAYS: PushGatewaySet = {
  gateways: {},
  view: { webPush: null, apns: null, fcm: null },
  close: async () => undefined,
};

export type VapidKeyPair = Pick<VapidDetails, 'publicKey' | 'privateKey'>;

/** A VAPID pair as base64url: the public key an uncompressed P-256 point (65 bytes), the private key 32 bytes. */
export function checkVapidPair(pair: VapidKeyPair): string | undefined {
  const pub = /^[A-Za-z0-9_-]+$/.test(pair.publicKey) ? Buffer.from(pair.publicKey, 'base64url') : Buffer.alloc(0);
  if (pub.length !== 65 || pub[0] !== 4) return 'the public key must be an uncompressed P-256 point (65 bytes) in base64url';
  const priv = /^[A-Za-z0-9_-]+$/.test(pair.privateKey) ? Buffer.from(pair.privateKey, 'base64url') : Buffer.alloc(0);
  if (priv.length !== 32) return 'the private key must be 32 bytes in base64url';
  return undefined;
}

function parseStoredPair(text: string, where: string): VapidKeyPair {
  let pair: VapidKeyPair;
  try {
    const json = JSON.parse(text) as Partial<VapidKeyPair>;
    pair = { publicKey: String(json.publicKey ?? ''), privateKey: String(json.privateKey ?? '') };
  } catch {
    throw new Error(`the generated VAPID key pair (${where}) is not JSON`);
  }
  const problem = checkVapidPair(pair);
  if (problem) throw new Error(`the generated VAPID key pair (${where}): ${problem}`);
  return pair;
}

const newPairText = () => `${JSON.stringify(generateVapidKeys())}\n`;

/** The configured pair, or undefined when none is configured (config.ts checks both or neither is set). */
function configuredPair(config: Config): VapidKeyPair | undefined {
  if (!config.pushVapidPublicKey) return undefined;
  return { publicKey: config.pushVapidPublicKey, privateKey: config.pushVapidPrivateKey };
}

/** The VAPID pair from the configuration or the data directory's file (generated when missing): SQLite's way. */
export function vapidKeysFromFiles(config: Config): VapidKeyPair {
  const configured = configuredPair(config);
  if (configured) return configured;
  const file = path.join(config.dataDir, 'keys', VAPID_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    text = newPairText();
    try {
      // 'wx': never overwrite a pair another process created a moment ago.
      fs.writeFileSync(file, text, { mode: 0o600, flag: 'wx' });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      text = fs.readFileSync(file, 'utf8');
    }
  }
  return parseStoredPair(text, file);
}

/** The VAPID pair: configured, else the one every node shares in the database (`shared`), else the file's. */
export async function loadVapidKeys(config: Config, shared?: SharedKeyStore): Promise<VapidKeyPair> {
  const configured = configuredPair(config);
  if (configured) return configured;
  if (!shared) return vapidKeysFromFiles(config);
  return parseStoredPair(await shared.getOrCreate(VAPID_SECRET_NAME, newPairText), 'node_secrets in the database');
}

/** The VAPID subject: configured, else the postmaster of the mail host name. */
export function vapidSubject(config: Pick<Config, 'pushVapidSubject' | 'mailHostname'>): string {
  return config.pushVapidSubject || `mailto:postmaster@${config.mailHostname}`;
}

/** One `apns` gateway over two Apple origins: the client of each ignores `target.environment`, so this picks. */
export function apnsByEnvironment(production: Gateway, sandbox: Gateway): Gateway {
  return {
    kind: 'apns',
    send: (target: PushTarget, message: PushMessage, signal?: AbortSignal) => (target.environment === 'sandbox' ? sandbox : production).send(target, message, signal),
    close: async () => {
      await Promise.all([production.close(), sandbox.close()]);
    },
  };
}

function readFile(env: string, file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(env, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** The FCM service account file: its project and the credentials the gateway signs its token requests with. */
export function readFcmServiceAccount(file: string): { projectId: string; serviceAccount: FcmServiceAccount } {
  const env = 'PIGEON_PUSH_FCM_SERVICE_ACCOUNT_FILE';
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(readFile(env, file)) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(env, `${file} is not JSON`);
  }
  const field = (name: string) => (typeof json[name] === 'string' && json[name] ? (json[name] as string) : undefined);
  const projectId = field('project_id');
  const clientEmail = field('client_email');
  const privateKey = field('private_key');
  const tokenUri = field('token_uri') ?? 'https://oauth2.googleapis.com/token';
  if (!projectId || !clientEmail || !privateKey) throw new ConfigError(env, `${file} is not a service account key (project_id, client_email and private_key are needed)`);
  return { projectId, serviceAccount: { client_email: clientEmail, private_key: privateKey, token_uri: tokenUri } };
}

export interface BuildGatewayOptions {
  /** The VAPID pair (loadVapidKeys); without it there is no Web Push. */
  vapid?: VapidKeyPair;
  /** Extra trust for the gateways' certificates (tests; production trusts Node's own store, NODE_EXTRA_CA_CERTS). */
  ca?: string | Buffer;
  /** FCM's HTTP client (tests). */
  fetch?: typeof fetch;
}

/** Builds the configured gateways. A bad key file is a ConfigError naming its setting. */
export function buildPushGateways(config: Config, options: BuildGatewayOptions = {}): PushGatewaySet {
  if (!config.pushEnabled) return NO_PUSH_GATEWAYS;
  const gateways: Partial<Record<PushKind, Gateway>> = {};
  const view: PushConfigView = { webPush: null, apns: null, fcm: null };
  const ca = options.ca ? { ca: options.ca } : {};

  if (options.vapid) {
    const problem = checkVapidPair(options.vapid);
    if (problem) throw new ConfigError('PIGEON_PUSH_VAPID_PUBLIC_KEY', problem);
    gateways.webpush = createWebPushGateway({ vapid: { subject: vapidSubject(config), ...options.vapid }, timeoutMs: PUSH_GATEWAY_TIMEOUT_MS, ...ca });
    view.webPush = { applicationServerKey: options.vapid.publicKey };
  }

  if (config.pushApnsKeyFile) {
    const privateKeyPem = readFile('PIGEON_PUSH_APNS_KEY_FILE', config.pushApnsKeyFile);
    if (!/-----BEGIN PRIVATE KEY-----/.test(privateKeyPem)) throw new ConfigError('PIGEON_PUSH_APNS_KEY_FILE', `${config.pushApnsKeyFile} is not a PKCS#8 PEM key (.p8)`);
    const apns = (origin: string) =>
      createApnsGateway({ teamId: config.pushApnsTeamId, keyId: config.pushApnsKeyId, privateKeyPem, origin, timeoutMs: PUSH_GATEWAY_TIMEOUT_MS, ...ca });
    gateways.apns = apnsByEnvironment(apns(config.pushApnsOrigin), apns(config.pushApnsSandboxOrigin));
    view.apns = { environments: ['production', 'sandbox'] };
  }

  if (config.pushFcmServiceAccountFile) {
    const { projectId, serviceAccount } = readFcmServiceAccount(config.pushFcmServiceAccountFile);
    gateways.fcm = createFcmGateway({ projectId, serviceAccount, origin: config.pushFcmOrigin, timeoutMs: PUSH_GATEWAY_TIMEOUT_MS, ...(options.fetch ? { fetch: options.fetch } : {}) });
    view.fcm = { projectId };
  }

  return {
    gateways,
    view,
    close: async () => {
      await Promise.all(Object.values(gateways).map((g) => g.close()));
    },
  };
}
