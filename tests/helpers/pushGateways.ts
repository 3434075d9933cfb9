/**
 * Local stand-ins for the three push gateways, written from the published specifications and independent of the
 * gateway clients in server/push/gateways (they share no code with them and use node:crypto, not jose or web-push):
 *
 * - a Web Push service (RFC 8030) that checks the VAPID header (RFC 8292) and decrypts the payload (RFC 8291 over
 *   the aes128gcm content coding of RFC 8188), and hands out subscriptions as a browser would;
 * - an APNs provider API over HTTP/2 + TLS that checks the ES256 provider token and the apns-* headers;
 * - FCM HTTP v1 with its OAuth token endpoint (RFC 7523 JWT bearer grant).
 *
 * Each records what it accepted and what it refused (with the reason), and can be told to answer a given
 * subscription or token with an error, or never to answer it.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import selfsigned from 'selfsigned';

export interface TlsPair {
  cert: string;
  key: string;
}

/** A self-signed certificate for localhost / 127.0.0.1; the clients trust it through their `ca` option. */
export async function localhostCertificate(): Promise<TlsPair> {
  const pems = await selfsigned.generate([{ name: 'commonName', value: 'localhost' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] }],
  });
  return { cert: pems.cert, key: pems.private };
}

export interface Refusal {
  status: number;
  reason: string;
}

export interface CannedAnswer {
  status: number;
  /** APNs `reason`, FCM error code. */
  reason?: string;
  retryAfter?: string;
}

const b64url = (buffer: Buffer | Uint8Array) => Buffer.from(buffer).toString('base64url');
const fromB64url = (text: string) => Buffer.from(text, 'base64url');

interface DecodedJwt {
  header: Record<string, unknown>;
  claims: Record<string, unknown>;
  signingInput: Buffer;
  signature: Buffer;
}

function decodeJwt(jwt: string): DecodedJwt {
  const parts = jwt.split('.');
  if (parts.length !== 3) throw new Error('not a compact JWS');
  const [h, c, s] = parts as [string, string, string];
  return {
    header: JSON.parse(fromB64url(h).toString('utf8')) as Record<string, unknown>,
    claims: JSON.parse(fromB64url(c).toString('utf8')) as Record<string, unknown>,
    signingInput: Buffer.from(`${h}.${c}`, 'ascii'),
    signature: fromB64url(s),
  };
}

/** JWS ES256 signatures are the raw r||s pair (RFC 7518 §3.4), which node calls ieee-p1363. */
function verifyEs256(jwt: DecodedJwt, key: crypto.KeyObject): boolean {
  return jwt.signature.length === 64 && crypto.verify('sha256', jwt.signingInput, { key, dsaEncoding: 'ieee-p1363' }, jwt.signature);
}

function verifyRs256(jwt: DecodedJwt, key: crypto.KeyObject): boolean {
  return crypto.verify('sha256', jwt.signingInput, key, jwt.signature);
}

/** A P-256 public key from its uncompressed point (0x04 || x || y), as VAPID's `k` and the p256dh key carry it. */
function p256PublicKey(point: Buffer): crypto.KeyObject {
  if (point.length !== 65 || point[0] !== 4) throw new Error('not an uncompressed P-256 point');
  return crypto.createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: b64url(point.subarray(1, 33)), y: b64url(point.subarray(33)) }, format: 'jwk' });
}

function readBody(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

async function listen(server: http.Server | https.Server | http2.Http2SecureServer): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

// ---------------------------------------------------------------------------------------------------------------
// Web Push
// ---------------------------------------------------------------------------------------------------------------

/** What a browser hands the application server (PushSubscription.toJSON()). */
export interface BrowserSubscription {
  id: string;
  endpoint: string;
  p256dh: string;
  auth: string;
}

export interface ReceivedWebPush {
  subscriptionId: string;
  ttl: number;
  urgency: string;
  topic: string | undefined;
  vapid: { claims: Record<string, unknown>; k: string };
  /** The decrypted payload (UTF-8). */
  plaintext: string;
  /** Size of the encrypted body as sent. */
  bodyBytes: number;
  /** The record size from the aes128gcm header. */
  recordSize: number;
}

export interface WebPushService {
  origin: string;
  ca: string;
  received: ReceivedWebPush[];
  refused: Refusal[];
  /** A new subscription bound to an application server key, with its own P-256 key pair and 16-byte auth secret. */
  subscribe(applicationServerKey: string): BrowserSubscription;
  /** Answers every later push to this subscription with `answer` (404/410 unsubscribe, 429 with Retry-After...). */
  answerWith(subscriptionId: string, answer: CannedAnswer): void;
  /** Accepts the connection for this subscription and never answers. */
  neverAnswer(subscriptionId: string): void;
  close(): Promise<void>;
}

interface SubscriptionState {
  ecdh: crypto.ECDH;
  publicKey: Buffer;
  authSecret: Buffer;
  applicationServerKey: string;
  answer?: CannedAnswer;
  silent?: boolean;
}

/** HKDF as RFC 8291 §3.3 and RFC 8188 §2.2 use it (one block of SHA-256 output is enough for every key here). */
function hkdf(salt: Buffer, ikm: Buffer, info: Buffer, length: number): Buffer {
  const prk = crypto.createHmac('sha256', salt).update(ikm).digest();
  return crypto.createHmac('sha256', prk).update(Buffer.concat([info, Buffer.from([1])])).digest().subarray(0, length);
}

/**
 * Decrypts an aes128gcm body (RFC 8188) whose key comes from the Web Push key agreement (RFC 8291 §3.4): returns the
 * plaintext and the header's record size. Throws on any deviation.
 */
export function decryptWebPush(body: Buffer, subscription: { ecdh: crypto.ECDH; publicKey: Buffer; authSecret: Buffer }): { plaintext: Buffer; recordSize: number } {
  if (body.length < 21) throw new Error('body shorter than the aes128gcm header');
  const salt = body.subarray(0, 16);
  const recordSize = body.readUInt32BE(16);
  const idLength = body[20]!;
  // RFC 8291 §4: the keyid is the application server's ephemeral public key.
  if (idLength !== 65) throw new Error(`keyid is ${idLength} bytes, not a P-256 public key`);
  const serverPublicKey = body.subarray(21, 21 + idLength);
  if (recordSize < 18) throw new Error('record size too small');
  const sharedSecret = subscription.ecdh.computeSecret(serverPublicKey);
  const keyInfo = Buffer.concat([Buffer.from('WebPush: info\0', 'latin1'), subscription.publicKey, serverPublicKey]);
  const ikm = hkdf(subscription.authSecret, sharedSecret, keyInfo, 32);
  const cek = hkdf(salt, ikm, Buffer.from('Content-Encoding: aes128gcm\0', 'latin1'), 16);
  const baseNonce = hkdf(salt, ikm, Buffer.from('Content-Encoding: nonce\0', 'latin1'), 12);
  const ciphertext = body.subarray(21 + idLength);
  if (ciphertext.length === 0) throw new Error('no records');
  const out: Buffer[] = [];
  let sawLast = false;
  for (let offset = 0, seq = 0; offset < ciphertext.length; offset += recordSize, seq += 1) {
    if (sawLast) throw new Error('data after the last record');
    const record = ciphertext.subarray(offset, offset + recordSize);
    if (record.length < 17) throw new Error('truncated record');
    const nonce = Buffer.from(baseNonce);
    // The record sequence number is XORed into the nonce's low bits (RFC 8188 §2.3); a 4096-byte body has far fewer
    // than 2^32 records, so the low 32 bits suffice (JS bitwise operators work on 32 bits).
    nonce.writeUInt32BE((nonce.readUInt32BE(8) ^ seq) >>> 0, 8);
    const decipher = crypto.createDecipheriv('aes-128-gcm', cek, nonce);
    decipher.setAuthTag(record.subarray(record.length - 16));
    const padded = Buffer.concat([decipher.update(record.subarray(0, record.length - 16)), decipher.final()]);
    let end = padded.length - 1;
    while (end >= 0 && padded[end] === 0) end -= 1;
    if (end < 0) throw new Error('record without a padding delimiter');
    const isLast = offset + recordSize >= ciphertext.length;
    const delimiter = padded[end];
    if (delimiter !== (isLast ? 2 : 1)) throw new Error(`padding delimiter ${delimiter} in ${isLast ? 'last' : 'inner'} record`);
    sawLast = delimiter === 2;
    out.push(padded.subarray(0, end));
  }
  return { plaintext: Buffer.concat(out), recordSize };
}

export async function startWebPushService(options: { now?: () => number } = {}): Promise<WebPushService> {
  const now = options.now ?? Date.now;
  const tls = await localhostCertificate();
  const subscriptions = new Map<string, SubscriptionState>();
  const received: ReceivedWebPush[] = [];
  const refused: Refusal[] = [];
  const hanging = new Set<http.ServerResponse>();
  let origin = '';

  const server = https.createServer({ cert: tls.cert, key: tls.key }, async (req, res) => {
    const refuse = (status: number, reason: string) => {
      refused.push({ status, reason });
      res.writeHead(status, { 'content-type': 'text/plain' }).end(reason);
    };
    const body = await readBody(req);
    const match = /^\/push\/([A-Za-z0-9_-]+)$/.exec(req.url ?? '');
    if (req.method !== 'POST' || !match) return refuse(404, 'no such resource');
    const subscription = subscriptions.get(match[1]!);
    if (!subscription) return refuse(404, 'no such subscription');
    if (subscription.silent) {
      hanging.add(res);
      return;
    }
    if (subscription.answer) {
      const { status, retryAfter, reason } = subscription.answer;
      res.writeHead(status, retryAfter ? { 'retry-after': retryAfter } : {}).end(reason ?? '');
      return;
    }

    // RFC 8292 §3: Authorization: vapid t=<JWT>, k=<uncompressed P-256 key, base64url>.
    const authorization = req.headers.authorization ?? '';
    const vapid = /^vapid\s+(.+)$/i.exec(authorization);
    if (!vapid) return refuse(401, 'no vapid authorization');
    const params = new Map(vapid[1]!.split(',').map((part) => {
      const [name, ...value] = part.trim().split('=');
      return [name!.trim().toLowerCase(), value.join('=').trim()] as const;
    }));
    const t = params.get('t');
    const k = params.get('k');
    if (!t || !k) return refuse(401, 'vapid needs t and k');
    let jwt: DecodedJwt;
    try {
      jwt = decodeJwt(t);
      if (jwt.header.alg !== 'ES256') return refuse(401, `vapid alg ${String(jwt.header.alg)}`);
      if (!verifyEs256(jwt, p256PublicKey(fromB64url(k)))) return refuse(401, 'vapid signature does not verify');
    } catch (error) {
      return refuse(401, `vapid unreadable: ${(error as Error).message}`);
    }
    const nowS = Math.floor(now() / 1000);
    const { aud, exp, sub } = jwt.claims;
    if (aud !== origin) return refuse(403, `vapid aud ${String(aud)} is not ${origin}`);
    if (typeof exp !== 'number' || exp <= nowS || exp > nowS + 24 * 3600) return refuse(403, `vapid exp ${String(exp)} not within 24 h`);
    if (typeof sub !== 'string' || !/^(mailto:|https:)/.test(sub)) return refuse(403, 'vapid sub missing');
    // RFC 8292 §4.2: a subscription bound to a key accepts pushes signed with that key only.
    if (k !== subscription.applicationServerKey) return refuse(403, 'vapid key does not match the subscription');

    // RFC 8030 §5.2-5.4 headers.
    const ttlHeader = req.headers.ttl;
    if (typeof ttlHeader !== 'string' || !/^\d+$/.test(ttlHeader)) return refuse(400, 'TTL missing or not a number');
    const urgency = (req.headers.urgency as string | undefined) ?? 'normal';
    if (!['very-low', 'low', 'normal', 'high'].includes(urgency)) return refuse(400, `bad Urgency ${urgency}`);
    const topic = req.headers.topic as string | undefined;
    if (topic !== undefined && !/^[A-Za-z0-9_-]{1,32}$/.test(topic)) return refuse(400, `bad Topic ${topic}`);
    if (req.headers['content-encoding'] !== 'aes128gcm') return refuse(415, `content encoding ${String(req.headers['content-encoding'])}`);
    if (body.length > 4096) return refuse(413, 'payload too large');

    let decrypted: { plaintext: Buffer; recordSize: number };
    try {
      decrypted = decryptWebPush(body, subscription);
    } catch (error) {
      return refuse(400, `cannot decrypt: ${(error as Error).message}`);
    }
    received.push({
      subscriptionId: match[1]!,
      ttl: Number(ttlHeader),
      urgency,
      topic,
      vapid: { claims: jwt.claims, k },
      plaintext: decrypted.plaintext.toString('utf8'),
      bodyBytes: body.length,
      recordSize: decrypted.recordSize,
    });
    res.writeHead(201, { location: `${origin}/message/${crypto.randomUUID()}` }).end();
  });
  const port = await listen(server);
  origin = `https://localhost:${port}`;

  return {
    origin,
    ca: tls.cert,
    received,
    refused,
    subscribe(applicationServerKey) {
      // What a browser does on pushManager.subscribe(): a fresh P-256 key pair and a 16-byte auth secret.
      const ecdh = crypto.createECDH('prime256v1');
      const publicKey = ecdh.generateKeys();
      const authSecret = crypto.randomBytes(16);
      const id = crypto.randomBytes(12).toString('base64url');
      subscriptions.set(id, { ecdh, publicKey, authSecret, applicationServerKey });
      return { id, endpoint: `${origin}/push/${id}`, p256dh: b64url(publicKey), auth: b64url(authSecret) };
    },
    answerWith(subscriptionId, answer) {
      subscriptions.get(subscriptionId)!.answer = answer;
    },
    neverAnswer(subscriptionId) {
      subscriptions.get(subscriptionId)!.silent = true;
    },
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// APNs
// ---------------------------------------------------------------------------------------------------------------

export interface ApnsRequest {
  deviceToken: string;
  headers: Record<string, string>;
  payload: Record<string, unknown>;
  /** The provider token the request carried. */
  jwt: string;
}

export interface ApnsService {
  origin: string;
  ca: string;
  requests: ApnsRequest[];
  refused: Refusal[];
  /** Every distinct provider token seen, in order. */
  providerTokens: string[];
  answerWith(deviceToken: string, answer: CannedAnswer): void;
  neverAnswer(deviceToken: string): void;
  /** Every provider token seen so far is answered 403 ExpiredProviderToken from now on. */
  expireProviderTokens(): void;
  /** Sends GOAWAY on every open connection (as APNs does on maintenance). */
  goAway(): void;
  connections(): number;
  close(): Promise<void>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export async function startApnsService(options: { teamId: string; keyId: string; publicKey: crypto.KeyObject | string; topic: string; now?: () => number }): Promise<ApnsService> {
  const now = options.now ?? Date.now;
  const teamKey = typeof options.publicKey === 'string' ? crypto.createPublicKey(options.publicKey) : options.publicKey;
  const tls = await localhostCertificate();
  const requests: ApnsRequest[] = [];
  const refused: Refusal[] = [];
  const providerTokens: string[] = [];
  const expired = new Set<string>();
  const answers = new Map<string, CannedAnswer>();
  const silent = new Set<string>();
  const sessions = new Set<http2.ServerHttp2Session>();
  let connectionCount = 0;

  const server = http2.createSecureServer({ cert: tls.cert, key: tls.key });
  server.on('session', (session) => {
    connectionCount += 1;
    sessions.add(session);
    session.on('close', () => sessions.delete(session));
  });
  server.on('stream', async (stream, headers) => {
    const apnsId = typeof headers['apns-id'] === 'string' ? headers['apns-id'] : crypto.randomUUID();
    const answer = (status: number, reason?: string, extra: Record<string, string> = {}) => {
      stream.respond({ ':status': status, 'apns-id': apnsId, ...extra, ...(reason ? { 'content-type': 'application/json' } : {}) });
      stream.end(reason ? JSON.stringify(status === 410 ? { reason, timestamp: now() } : { reason }) : undefined);
    };
    const refuse = (status: number, reason: string) => {
      refused.push({ status, reason });
      answer(status, reason);
    };
    const body = await readBody(stream);
    const path = String(headers[':path'] ?? '');
    const match = /^\/3\/device\/([0-9A-Za-z]+)$/.exec(path);
    if (headers[':method'] !== 'POST') return refuse(405, 'MethodNotAllowed');
    if (!match) return refuse(404, 'BadPath');
    const deviceToken = match[1]!;

    // Provider token: authorization: bearer <ES256 JWT with kid; claims iss (team) and iat>.
    const authorization = String(headers.authorization ?? '');
    const bearer = /^bearer (.+)$/.exec(authorization);
    if (!bearer) return refuse(403, 'MissingProviderToken');
    const jwtText = bearer[1]!;
    let jwt: DecodedJwt;
    try {
      jwt = decodeJwt(jwtText);
    } catch {
      return refuse(403, 'InvalidProviderToken');
    }
    if (jwt.header.alg !== 'ES256' || jwt.header.kid !== options.keyId) return refuse(403, 'InvalidProviderToken');
    if (jwt.claims.iss !== options.teamId || typeof jwt.claims.iat !== 'number') return refuse(403, 'InvalidProviderToken');
    if (!verifyEs256(jwt, teamKey)) return refuse(403, 'InvalidProviderToken');
    if (!providerTokens.includes(jwtText)) providerTokens.push(jwtText);
    if (expired.has(jwtText) || now() / 1000 - jwt.claims.iat > 3600) return refuse(403, 'ExpiredProviderToken');

    if (silent.has(deviceToken)) return; // never answers: the stream stays open
    const canned = answers.get(deviceToken);
    if (canned) return answer(canned.status, canned.reason, canned.retryAfter ? { 'retry-after': canned.retryAfter } : {});

    const topic = headers['apns-topic'];
    if (!topic) return refuse(400, 'MissingTopic');
    if (topic !== options.topic) return refuse(400, 'DeviceTokenNotForTopic');
    const pushType = headers['apns-push-type'];
    if (pushType !== 'alert' && pushType !== 'background') return refuse(400, 'InvalidPushType');
    const priority = headers['apns-priority'] ?? '10';
    if (!['1', '5', '10'].includes(String(priority))) return refuse(400, 'BadPriority');
    // Background notifications must be sent with priority 5 (Apple: priority 10 is an error for them).
    if (pushType === 'background' && priority !== '5') return refuse(400, 'BadPriority');
    if (headers['apns-id'] !== undefined && !UUID.test(String(headers['apns-id']))) return refuse(400, 'BadMessageId');
    const collapseId = headers['apns-collapse-id'];
    if (collapseId !== undefined && Buffer.byteLength(String(collapseId), 'utf8') > 64) return refuse(400, 'BadCollapseId');
    const expiration = headers['apns-expiration'];
    if (expiration !== undefined && !/^\d+$/.test(String(expiration))) return refuse(400, 'BadExpirationDate');
    if (body.length === 0) return refuse(400, 'PayloadEmpty');
    if (body.length > 4096) return refuse(413, 'PayloadTooLarge');
    let payload: Record<string, unknown>;
    try {
      payload = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
    } catch {
      return refuse(400, 'BadPayload');
    }
    const aps = payload.aps as Record<string, unknown> | undefined;
    if (!aps || typeof aps !== 'object') return refuse(400, 'BadPayload');
    // A background notification carries content-available and nothing the user would see.
    if (pushType === 'background' && (aps['content-available'] !== 1 || 'alert' in aps || 'sound' in aps)) return refuse(400, 'BadPayload');
    if (pushType === 'alert' && !aps.alert) return refuse(400, 'BadPayload');

    const recorded: Record<string, string> = {};
    for (const [name, value] of Object.entries(headers)) if (!name.startsWith(':') && typeof value === 'string') recorded[name] = value;
    requests.push({ deviceToken, headers: recorded, payload, jwt: jwtText });
    answer(200);
  });
  const port = await listen(server);

  return {
    origin: `https://localhost:${port}`,
    ca: tls.cert,
    requests,
    refused,
    providerTokens,
    answerWith: (deviceToken, answer) => void answers.set(deviceToken, answer),
    neverAnswer: (deviceToken) => void silent.add(deviceToken),
    expireProviderTokens: () => providerTokens.forEach((token) => expired.add(token)),
    goAway: () => sessions.forEach((session) => session.goaway(http2.constants.NGHTTP2_NO_ERROR)),
    connections: () => connectionCount,
    async close() {
      for (const session of sessions) session.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// FCM HTTP v1
// ---------------------------------------------------------------------------------------------------------------

export interface FcmRequest {
  accessToken: string;
  message: Record<string, unknown>;
}

export interface FcmService {
  origin: string;
  tokenUri: string;
  requests: FcmRequest[];
  refused: Refusal[];
  /** Access tokens issued, in order. */
  issued: string[];
  /** Answers messages to this registration token with an FCM error (UNREGISTERED, QUOTA_EXCEEDED, ...). */
  answerWith(registrationToken: string, answer: CannedAnswer & { fieldViolation?: string }): void;
  neverAnswer(registrationToken: string): void;
  /** Every access token issued so far is refused (401) from now on. */
  revokeAccessTokens(): void;
  close(): Promise<void>;
}

const FCM_ERROR_STATUS: Record<number, string> = { 400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED', 404: 'NOT_FOUND', 429: 'RESOURCE_EXHAUSTED', 500: 'INTERNAL', 503: 'UNAVAILABLE' };

export async function startFcmService(options: {
  projectId: string;
  clientEmail: string;
  publicKey: crypto.KeyObject | string;
  /** expires_in of issued access tokens, seconds (Google: 3599). */
  tokenLifetimeSeconds?: number;
  now?: () => number;
}): Promise<FcmService> {
  const now = options.now ?? Date.now;
  const accountKey = typeof options.publicKey === 'string' ? crypto.createPublicKey(options.publicKey) : options.publicKey;
  const lifetime = options.tokenLifetimeSeconds ?? 3599;
  const requests: FcmRequest[] = [];
  const refused: Refusal[] = [];
  const issued: string[] = [];
  const tokens = new Map<string, { expiresAt: number; revoked: boolean }>();
  const answers = new Map<string, CannedAnswer & { fieldViolation?: string }>();
  const silent = new Set<string>();
  const hanging = new Set<http.ServerResponse>();
  let tokenUri = '';

  const json = (res: http.ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}) =>
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...extra }).end(JSON.stringify(body));

  const server = http.createServer(async (req, res) => {
    const body = (await readBody(req)).toString('utf8');
    const url = req.url ?? '';

    if (req.method === 'POST' && url === '/token') {
      const oauthRefuse = (error: string, description: string) => {
        refused.push({ status: 400, reason: `${error}: ${description}` });
        json(res, 400, { error, error_description: description });
      };
      if (!String(req.headers['content-type']).startsWith('application/x-www-form-urlencoded')) return oauthRefuse('invalid_request', 'form body expected');
      const form = new URLSearchParams(body);
      if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer') return oauthRefuse('unsupported_grant_type', String(form.get('grant_type')));
      let jwt: DecodedJwt;
      try {
        jwt = decodeJwt(form.get('assertion') ?? '');
      } catch {
        return oauthRefuse('invalid_grant', 'assertion unreadable');
      }
      if (jwt.header.alg !== 'RS256' || !verifyRs256(jwt, accountKey)) return oauthRefuse('invalid_grant', 'Invalid JWT Signature.');
      const { iss, aud, scope, iat, exp } = jwt.claims;
      const nowS = now() / 1000;
      if (iss !== options.clientEmail) return oauthRefuse('invalid_grant', `iss ${String(iss)}`);
      if (aud !== tokenUri) return oauthRefuse('invalid_grant', `aud ${String(aud)}`);
      if (typeof scope !== 'string' || !scope.split(' ').includes('https://www.googleapis.com/auth/firebase.messaging')) return oauthRefuse('invalid_scope', String(scope));
      if (typeof iat !== 'number' || typeof exp !== 'number') return oauthRefuse('invalid_grant', 'iat and exp required');
      if (exp <= nowS || iat > nowS + 60 || exp - iat > 3600) return oauthRefuse('invalid_grant', 'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.');
      const accessToken = `ya29.${crypto.randomBytes(24).toString('base64url')}`;
      tokens.set(accessToken, { expiresAt: now() + lifetime * 1000, revoked: false });
      issued.push(accessToken);
      return json(res, 200, { access_token: accessToken, expires_in: lifetime, token_type: 'Bearer' });
    }

    const fcmError = (status: number, message: string, errorCode?: string, extra: Record<string, string> = {}, fieldViolation?: string) => {
      const details: unknown[] = [];
      if (errorCode) details.push({ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode });
      if (fieldViolation) details.push({ '@type': 'type.googleapis.com/google.rpc.BadRequest', fieldViolations: [{ field: fieldViolation, description: message }] });
      json(res, status, { error: { code: status, message, status: FCM_ERROR_STATUS[status] ?? 'UNKNOWN', details } }, extra);
    };
    const refuse = (status: number, message: string) => {
      refused.push({ status, reason: message });
      fcmError(status, message);
    };
    if (req.method !== 'POST' || url !== `/v1/projects/${options.projectId}/messages:send`) return refuse(404, `no route ${req.method} ${url}`);
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    const grant = bearer ? tokens.get(bearer[1]!) : undefined;
    if (!bearer || !grant || grant.revoked || grant.expiresAt <= now()) return refuse(401, 'Request had invalid authentication credentials.');
    let message: Record<string, unknown>;
    try {
      message = (JSON.parse(body) as { message: Record<string, unknown> }).message;
    } catch {
      return refuse(400, 'Invalid JSON payload received.');
    }
    if (!message || typeof message !== 'object') return refuse(400, 'message missing');
    const token = message.token;
    if (typeof token !== 'string' || !token) return refuse(400, 'message.token missing');
    const data = message.data as Record<string, unknown> | undefined;
    if (data !== undefined && (typeof data !== 'object' || Object.values(data).some((value) => typeof value !== 'string'))) return refuse(400, 'data values must be strings');
    const android = message.android as Record<string, unknown> | undefined;
    if (android) {
      if (android.ttl !== undefined && !/^\d+(\.\d{1,9})?s$/.test(String(android.ttl))) return refuse(400, `bad ttl ${String(android.ttl)}`);
      if (android.priority !== undefined && !['HIGH', 'NORMAL'].includes(String(android.priority))) return refuse(400, `bad priority ${String(android.priority)}`);
      if (android.collapse_key !== undefined && typeof android.collapse_key !== 'string') return refuse(400, 'bad collapse_key');
    }
    if (Buffer.byteLength(JSON.stringify(data ?? {}), 'utf8') > 4096) return refuse(400, 'message too big');
    if (silent.has(token)) {
      hanging.add(res);
      return;
    }
    const canned = answers.get(token);
    if (canned) {
      return fcmError(canned.status, canned.reason ?? 'error', canned.reason, canned.retryAfter ? { 'retry-after': canned.retryAfter } : {}, canned.fieldViolation);
    }
    requests.push({ accessToken: bearer[1]!, message });
    json(res, 200, { name: `projects/${options.projectId}/messages/${crypto.randomBytes(8).toString('hex')}` });
  });
  const port = await listen(server);
  const origin = `http://127.0.0.1:${port}`;
  tokenUri = `${origin}/token`;

  return {
    origin,
    tokenUri,
    requests,
    refused,
    issued,
    answerWith: (registrationToken, answer) => void answers.set(registrationToken, answer),
    neverAnswer: (registrationToken) => void silent.add(registrationToken),
    revokeAccessTokens: () => tokens.forEach((grant) => (grant.revoked = true)),
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
