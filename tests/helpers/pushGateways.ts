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
 * subscription or token with an error, or never to answer it. What it accepted carries its arrival time (`at`, epoch
 * ms with a fraction), the message id the app payload names (`messageId`) and whether the answer reached a live
 * connection (`answered`); an answer delay (`answerDelayMs`, fixed or a [min, max] range) holds accepted messages
 * "in flight" for a while, as a distant gateway does (`inFlight()` counts them): the end-to-end and crash tests and
 * the push benchmark measure and kill against that.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import selfsigned from 'selfsigned';

export interface TlsPair {
  cert: string;
  key: string;
}

/**
 * A self-signed certificate for localhost / 127.0.0.1; the clients trust it through their `ca` option (or a server
 * process through NODE_EXTRA_CA_CERTS). Each stand-in's has its own subject: a trust store finds an anchor by its
 * subject name, so three anchors all named CN=localhost would hide two of them.
 */
export async function localhostCertificate(commonName = 'localhost'): Promise<TlsPair> {
  const pems = await selfsigned.generate([{ name: 'commonName', value: commonName }], {
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

/** How long an accepted message waits for its answer: ms, a uniform [min, max] range in ms, or none. */
export type AnswerDelay = number | [number, number] | undefined;

function delayFor(delay: AnswerDelay): number {
  if (delay === undefined) return 0;
  if (typeof delay === 'number') return delay;
  return delay[0] + Math.random() * (delay[1] - delay[0]);
}

/** Epoch milliseconds with a sub-millisecond fraction: arrival times the tests compare with their own commits. */
export const arrivalClock = () => performance.timeOrigin + performance.now();

/** What every accepted message records besides its gateway's own fields. */
export interface Arrival {
  /** When the whole request had arrived (arrivalClock()). */
  at: number;
  /** The app payload's `id` (the delivery's id): a message sent again after a crash carries the same. */
  messageId: string | undefined;
  /** The answer was written to a connection still open (false while delayed, or when the sender went away). */
  answered: boolean;
  /** When it was (arrivalClock()). */
  answeredAt?: number;
}

/** Waits `ms` (none: at once), then answers through `respond` unless `gone()`; tracks the arrival's fate. */
async function answerLater(arrival: Arrival, delay: AnswerDelay, pending: { count: number }, gone: () => boolean, respond: () => void): Promise<void> {
  const ms = delayFor(delay);
  pending.count += 1;
  try {
    if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
    if (gone()) return;
    try {
      respond();
      arrival.answered = true;
      arrival.answeredAt = arrivalClock();
    } catch {
      /* the sender went away meanwhile (killed): the message stays unanswered */
    }
  } finally {
    pending.count -= 1;
  }
}

const payloadId = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);

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

export interface ReceivedWebPush extends Arrival {
  subscriptionId: string;
  ttl: number;
  urgency: string;
  topic: string | undefined;
  /** The VAPID token's claims, its key, and the token itself (`t`: to see a token reused). */
  vapid: { claims: Record<string, unknown>; k: string; t: string };
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
  /** From now on, accepted messages are answered after this delay. */
  setAnswerDelay(delay: AnswerDelay): void;
  /** Accepted messages whose answer is still to come (delayed). */
  inFlight(): number;
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

export async function startWebPushService(options: { now?: () => number; answerDelayMs?: AnswerDelay } = {}): Promise<WebPushService> {
  const now = options.now ?? Date.now;
  let answerDelay = options.answerDelayMs;
  const pending = { count: 0 };
  const tls = await localhostCertificate('Pigeon test Web Push service');
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
    const plaintext = decrypted.plaintext.toString('utf8');
    let messageId: string | undefined;
    try {
      messageId = payloadId((JSON.parse(plaintext) as Record<string, unknown>).id);
    } catch {
      /* not JSON: no id */
    }
    const arrival: ReceivedWebPush = {
      at: arrivalClock(),
      messageId,
      answered: false,
      subscriptionId: match[1]!,
      ttl: Number(ttlHeader),
      urgency,
      topic,
      vapid: { claims: jwt.claims, k, t },
      plaintext,
      bodyBytes: body.length,
      recordSize: decrypted.recordSize,
    };
    received.push(arrival);
    await answerLater(arrival, answerDelay, pending, () => res.destroyed || req.socket.destroyed, () => {
      res.writeHead(201, { location: `${origin}/message/${crypto.randomUUID()}` }).end();
    });
  });
  const port = await listen(server);
  origin = `https://localhost:${port}`;

  return {
    origin,
    ca: tls.cert,
    received,
    refused,
    setAnswerDelay: (delay) => void (answerDelay = delay),
    inFlight: () => pending.count,
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

export interface ApnsRequest extends Arrival {
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
  /** From now on, accepted notifications are answered after this delay. */
  setAnswerDelay(delay: AnswerDelay): void;
  /** Accepted notifications whose answer is still to come (delayed). */
  inFlight(): number;
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

export async function startApnsService(options: { teamId: string; keyId: string; publicKey: crypto.KeyObject | string; topic: string; now?: () => number; answerDelayMs?: AnswerDelay }): Promise<ApnsService> {
  const now = options.now ?? Date.now;
  let answerDelay = options.answerDelayMs;
  const pending = { count: 0 };
  const teamKey = typeof options.publicKey === 'string' ? crypto.createPublicKey(options.publicKey) : options.publicKey;
  const tls = await localhostCertificate('Pigeon test APNs');
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
    const arrival: ApnsRequest = { at: arrivalClock(), messageId: payloadId(payload.id), answered: false, deviceToken, headers: recorded, payload, jwt: jwtText };
    requests.push(arrival);
    await answerLater(arrival, answerDelay, pending, () => stream.destroyed || stream.closed, () => answer(200));
  });
  const port = await listen(server);

  return {
    origin: `https://localhost:${port}`,
    ca: tls.cert,
    requests,
    refused,
    providerTokens,
    setAnswerDelay: (delay) => void (answerDelay = delay),
    inFlight: () => pending.count,
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

export interface FcmRequest extends Arrival {
  accessToken: string;
  message: Record<string, unknown>;
}

export interface FcmService {
  origin: string;
  tokenUri: string;
  /** The certificate to trust when started with `tls`. */
  ca?: string;
  requests: FcmRequest[];
  refused: Refusal[];
  /** Access tokens issued, in order. */
  issued: string[];
  /** From now on, accepted messages are answered after this delay. */
  setAnswerDelay(delay: AnswerDelay): void;
  /** Accepted messages whose answer is still to come (delayed). */
  inFlight(): number;
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
  answerDelayMs?: AnswerDelay;
  /** Serve over HTTPS with a self-signed localhost certificate (`ca`), as the real endpoints are; plain HTTP when not. */
  tls?: boolean;
}): Promise<FcmService> {
  const now = options.now ?? Date.now;
  let answerDelay = options.answerDelayMs;
  const pending = { count: 0 };
  const tls = options.tls ? await localhostCertificate('Pigeon test FCM') : undefined;
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

  const handler = async (req: http.IncomingMessage, res: http.ServerResponse) => {
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
    const appData = message.data as Record<string, unknown> | undefined;
    const arrival: FcmRequest = { at: arrivalClock(), messageId: payloadId(appData?.id), answered: false, accessToken: bearer[1]!, message };
    requests.push(arrival);
    await answerLater(arrival, answerDelay, pending, () => res.destroyed || req.socket.destroyed, () => {
      json(res, 200, { name: `projects/${options.projectId}/messages/${crypto.randomBytes(8).toString('hex')}` });
    });
  };
  const server = tls ? https.createServer({ cert: tls.cert, key: tls.key }, handler) : http.createServer(handler);
  const port = await listen(server);
  const origin = tls ? `https://localhost:${port}` : `http://127.0.0.1:${port}`;
  tokenUri = `${origin}/token`;

  return {
    origin,
    tokenUri,
    ...(tls ? { ca: tls.cert } : {}),
    requests,
    refused,
    issued,
    setAnswerDelay: (delay) => void (answerDelay = delay),
    inFlight: () => pending.count,
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

// ---------------------------------------------------------------------------------------------------------------
// The three together, for a server process (end-to-end tests, the crash test, bench/push.ts)
// ---------------------------------------------------------------------------------------------------------------

export type GatewayKind = 'webpush' | 'apns' | 'fcm';

/** One accepted message, whatever gateway took it, read back into the app's terms. */
export interface PushArrival extends Arrival {
  kind: GatewayKind;
  /** The channel's address as the server stores it: the Web Push endpoint, the APNs device token, the FCM token. */
  address: string;
  type: string | undefined;
  /** The app's data (FCM carries it as a JSON string: parsed back). */
  data: Record<string, unknown>;
  badge: number | undefined;
  alert: { title: string; body: string } | undefined;
  /** The payload exactly as the gateway delivers it to the device (decrypted for Web Push): duplicates must match. */
  payload: string;
  /** Everything the gateway received for it (headers included): where a leak would show. */
  everything: string;
}

export interface ChannelRegistration {
  kind: GatewayKind;
  /** The address the server will store (what PushArrival.address names). */
  address: string;
  /** The POST /v1/push/channels body. */
  body: Record<string, unknown>;
  /** Web Push: the stand-in's subscription id (answerWith/neverAnswer take it); APNs/FCM: the token. */
  handle: string;
}

export interface GatewayRig {
  webPush: WebPushService;
  apns: ApnsService;
  fcm: FcmService;
  /** The APNs topic (bundle id) the stand-in accepts. */
  apnsTopic: string;
  /** The server's environment: endpoints, credentials (files in `dir`), trust of the stand-ins' certificates. */
  env: Record<string, string>;
  dir: string;
  /** A channel of this kind as an app registers it (Web Push needs the server's applicationServerKey). */
  channel(kind: GatewayKind, applicationServerKey?: string): ChannelRegistration;
  /** Every accepted message so far, over the three, in arrival order. */
  arrivals(): PushArrival[];
  setAnswerDelay(delay: AnswerDelay): void;
  inFlight(): number;
  close(): Promise<void>;
}

const RIG_APNS = { teamId: 'PGNTEAM123', keyId: 'PGNKEY4567', topic: 'org.pigeon.mail' };
const RIG_FCM_PROJECT = 'pigeon-push-test';

function recordsOf(rig: Pick<GatewayRig, 'webPush' | 'apns' | 'fcm'>): PushArrival[] {
  const out: PushArrival[] = [];
  const origin = rig.webPush.origin;
  for (const r of rig.webPush.received) {
    let parsed: Record<string, unknown> = {};
    try {
      parsed = JSON.parse(r.plaintext) as Record<string, unknown>;
    } catch {
      /* not JSON */
    }
    out.push({
      kind: 'webpush', address: `${origin}/push/${r.subscriptionId}`, at: r.at, messageId: r.messageId, answered: r.answered, answeredAt: r.answeredAt,
      type: parsed.type as string | undefined, data: (parsed.data as Record<string, unknown>) ?? {}, badge: parsed.badge as number | undefined,
      alert: parsed.alert as PushArrival['alert'], payload: r.plaintext, everything: JSON.stringify(r),
    });
  }
  for (const r of rig.apns.requests) {
    const aps = (r.payload.aps ?? {}) as Record<string, unknown>;
    const alert = aps.alert as PushArrival['alert'] | undefined;
    out.push({
      kind: 'apns', address: r.deviceToken, at: r.at, messageId: r.messageId, answered: r.answered, answeredAt: r.answeredAt,
      type: r.payload.type as string | undefined, data: (r.payload.data as Record<string, unknown>) ?? {},
      badge: (r.payload.badge ?? aps.badge) as number | undefined, alert: alert ? { title: alert.title, body: alert.body } : undefined,
      payload: JSON.stringify(r.payload), everything: JSON.stringify({ headers: r.headers, payload: r.payload }),
    });
  }
  for (const r of rig.fcm.requests) {
    const data = (r.message.data ?? {}) as Record<string, string>;
    const android = (r.message.android ?? {}) as Record<string, unknown>;
    const notification = (android.notification ?? r.message.notification) as PushArrival['alert'] | undefined;
    let appData: Record<string, unknown> = {};
    try {
      appData = data.data ? (JSON.parse(data.data) as Record<string, unknown>) : {};
    } catch {
      /* not JSON */
    }
    out.push({
      kind: 'fcm', address: String(r.message.token), at: r.at, messageId: r.messageId, answered: r.answered, answeredAt: r.answeredAt,
      type: data.type, data: appData, badge: data.badge === undefined ? undefined : Number(data.badge),
      alert: notification ? { title: notification.title, body: notification.body } : undefined,
      payload: JSON.stringify(r.message), everything: JSON.stringify(r.message),
    });
  }
  return out.sort((a, b) => a.at - b.at);
}

/**
 * Starts the three stand-ins (FCM over TLS too), writes the APNs signing key (.p8) and the FCM service-account file
 * into a temporary folder with the stand-ins' certificates in one CA file, and answers the server's environment:
 * PIGEON_PUSH_* pointing at the stand-ins, private endpoints allowed, NODE_EXTRA_CA_CERTS for the certificates.
 */
export async function startGatewayRig(options: { answerDelayMs?: AnswerDelay; dir?: string } = {}): Promise<GatewayRig> {
  const dir = options.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-push-rig-'));
  const apnsKey = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const fcmKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const clientEmail = `pigeon-push@${RIG_FCM_PROJECT}.iam.gserviceaccount.com`;
  const webPush = await startWebPushService({ answerDelayMs: options.answerDelayMs });
  const apns = await startApnsService({ ...RIG_APNS, publicKey: apnsKey.publicKey, answerDelayMs: options.answerDelayMs });
  const fcm = await startFcmService({ projectId: RIG_FCM_PROJECT, clientEmail, publicKey: fcmKey.publicKey, answerDelayMs: options.answerDelayMs, tls: true });

  const keyFile = path.join(dir, `AuthKey_${RIG_APNS.keyId}.p8`);
  fs.writeFileSync(keyFile, apnsKey.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
  const accountFile = path.join(dir, 'fcm-service-account.json');
  const account = {
    type: 'service_account', project_id: RIG_FCM_PROJECT, private_key_id: crypto.randomBytes(20).toString('hex'),
    private_key: fcmKey.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, client_email: clientEmail,
    client_id: '100000000000000000001', auth_uri: 'https://accounts.google.com/o/oauth2/auth', token_uri: fcm.tokenUri,
  };
  fs.writeFileSync(accountFile, JSON.stringify(account, null, 2), { mode: 0o600 });
  const caFile = path.join(dir, 'gateways-ca.pem');
  fs.writeFileSync(caFile, [webPush.ca, apns.ca, fcm.ca!].join('\n'));

  const env: Record<string, string> = {
    PIGEON_PUSH_ENABLED: 'true',
    PIGEON_PUSH_ALLOW_PRIVATE_ENDPOINTS: 'true',
    PIGEON_PUSH_APNS_KEY_FILE: keyFile,
    PIGEON_PUSH_APNS_KEY_ID: RIG_APNS.keyId,
    PIGEON_PUSH_APNS_TEAM_ID: RIG_APNS.teamId,
    PIGEON_PUSH_APNS_ORIGIN: apns.origin,
    PIGEON_PUSH_APNS_SANDBOX_ORIGIN: apns.origin,
    PIGEON_PUSH_FCM_SERVICE_ACCOUNT_FILE: accountFile,
    PIGEON_PUSH_FCM_ORIGIN: fcm.origin,
    NODE_EXTRA_CA_CERTS: caFile,
  };

  const rig: GatewayRig = {
    webPush, apns, fcm, apnsTopic: RIG_APNS.topic, env, dir,
    channel(kind, applicationServerKey) {
      if (kind === 'webpush') {
        if (!applicationServerKey) throw new Error('a Web Push channel needs the server\'s applicationServerKey');
        const s = webPush.subscribe(applicationServerKey);
        return { kind, address: s.endpoint, handle: s.id, body: { kind, endpoint: s.endpoint, keys: { p256dh: s.p256dh, auth: s.auth } } };
      }
      if (kind === 'apns') {
        const token = crypto.randomBytes(32).toString('hex');
        return { kind, address: token, handle: token, body: { kind, address: token, keys: { topic: RIG_APNS.topic, environment: 'sandbox' } } };
      }
      const token = `${crypto.randomBytes(16).toString('base64url')}:APA91b${crypto.randomBytes(96).toString('base64url')}`;
      return { kind, address: token, handle: token, body: { kind, address: token } };
    },
    arrivals: () => recordsOf(rig),
    setAnswerDelay(delay) {
      webPush.setAnswerDelay(delay);
      apns.setAnswerDelay(delay);
      fcm.setAnswerDelay(delay);
    },
    inFlight: () => webPush.inFlight() + apns.inFlight() + fcm.inFlight(),
    async close() {
      await Promise.all([webPush.close(), apns.close(), fcm.close()]);
      if (!options.dir) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return rig;
}
