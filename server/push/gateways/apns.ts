/**
 * Apple Push Notification service: HTTP/2 with token-based (ES256 JWT) provider authentication.
 */
import http2 from 'node:http2';
import { performance } from 'node:perf_hooks';
import { importPKCS8, SignJWT, type KeyLike } from 'jose';
import { appPayload, digestBase64url, isVisible, PushGatewayConfigError, retryAfterMs, retryOutcome, uuidFor, withDeadline } from './common';
import type { Gateway, PushMessage, PushTarget, SendOutcome } from './types';

export interface ApnsGatewayOptions {
  teamId: string;
  keyId: string;
  /** The .p8 signing key (PKCS#8 PEM, P-256). */
  privateKeyPem: string;
  /** https://api.push.apple.com (sandbox: https://api.sandbox.push.apple.com) or a test URL. */
  origin: string;
  timeoutMs: number;
  /** Extra trust for the server's certificate (tests). */
  ca?: string | Buffer;
  now?: () => number;
}

/**
 * Apple refuses provider tokens older than an hour (ExpiredProviderToken) and renewals more often than every 20
 * minutes (TooManyProviderTokenUpdates): 40 minutes sits between the two.
 */
export const APNS_TOKEN_RENEW_MS = 40 * 60_000;
export const APNS_MAX_PAYLOAD_BYTES = 4096;
export const APNS_MAX_COLLAPSE_ID_BYTES = 64;

/** apns-collapse-id: the key itself when it fits in 64 bytes, else its digest (43 characters). */
export function apnsCollapseId(collapseKey: string): string {
  return Buffer.byteLength(collapseKey, 'utf8') <= APNS_MAX_COLLAPSE_ID_BYTES ? collapseKey : digestBase64url(collapseKey);
}

/** The JSON body: `aps` (content-available for background, alert/badge/sound for visible) beside the app payload. */
export function apnsPayload(message: PushMessage): Record<string, unknown> {
  const aps = isVisible(message)
    ? { ...(message.alert ? { alert: { title: message.alert.title, body: message.alert.body } } : {}), ...(message.badge !== undefined ? { badge: message.badge } : {}), sound: 'default' }
    : { 'content-available': 1 };
  return { ...appPayload(message), aps };
}

export function createApnsGateway(options: ApnsGatewayOptions): Gateway {
  const { teamId, keyId, origin, timeoutMs } = options;
  if (!teamId || !keyId || !options.privateKeyPem) throw new PushGatewayConfigError('APNs needs a team id, key id and signing key');
  const now = options.now ?? Date.now;
  let signingKey: Promise<KeyLike> | undefined;
  let token: { jwt: string; issuedAt: number } | undefined;
  let tokenInFlight: Promise<string> | undefined;
  let session: http2.ClientHttp2Session | undefined;
  let closed = false;

  function providerToken(forceRenew: boolean): Promise<string> {
    if (!forceRenew && token && now() - token.issuedAt < APNS_TOKEN_RENEW_MS) return Promise.resolve(token.jwt);
    // Concurrent sends share one renewal: Apple counts renewals.
    tokenInFlight ??= (async () => {
      signingKey ??= importPKCS8(options.privateKeyPem, 'ES256');
      const issuedAt = now();
      const jwt = await new SignJWT({ iss: teamId, iat: Math.floor(issuedAt / 1000) })
        .setProtectedHeader({ alg: 'ES256', kid: keyId })
        .sign(await signingKey);
      token = { jwt, issuedAt };
      return jwt;
    })().finally(() => {
      tokenInFlight = undefined;
    });
    return tokenInFlight;
  }

  /** The one HTTP/2 connection Apple asks providers to keep open, replaced after GOAWAY or an error. */
  function connection(): http2.ClientHttp2Session {
    if (session && !session.closed && !session.destroyed) return session;
    const fresh = http2.connect(origin, options.ca ? { ca: options.ca } : {});
    const forget = () => {
      if (session === fresh) session = undefined;
    };
    fresh.on('goaway', forget);
    fresh.on('close', forget);
    // A session error also fails its open streams (each send maps that to retry); the next send reconnects.
    fresh.on('error', forget);
    session = fresh;
    return fresh;
  }

  function post(target: PushTarget, message: PushMessage, body: string, jwt: string, signal: AbortSignal): Promise<{ status: number; reason?: string; retryAfter?: string }> {
    return new Promise((resolve, reject) => {
      let stream: http2.ClientHttp2Stream;
      try {
        stream = connection().request({
          ':method': 'POST',
          ':path': `/3/device/${encodeURIComponent(target.token!)}`,
          authorization: `bearer ${jwt}`,
          'apns-push-type': isVisible(message) ? 'alert' : 'background',
          'apns-topic': target.topic!,
          'apns-priority': isVisible(message) ? '10' : '5',
          // 0 means "deliver now or never"; a positive TTL is an absolute UNIX time.
          'apns-expiration': String(message.ttlSeconds > 0 ? Math.floor(now() / 1000) + message.ttlSeconds : 0),
          'apns-id': uuidFor(message.id),
          'apns-collapse-id': apnsCollapseId(message.collapseKey),
          'content-type': 'application/json',
        });
      } catch (error) {
        reject(error);
        return;
      }
      const onAbort = () => stream.close(http2.constants.NGHTTP2_CANCEL);
      signal.addEventListener('abort', onAbort, { once: true });
      let status = 0;
      let retryAfter: string | undefined;
      const chunks: Buffer[] = [];
      stream.on('response', (headers) => {
        status = Number(headers[':status']);
        const value = headers['retry-after'];
        retryAfter = Array.isArray(value) ? value[0] : value;
      });
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        signal.removeEventListener('abort', onAbort);
        let reason: string | undefined;
        try {
          const text = Buffer.concat(chunks).toString('utf8');
          if (text) reason = (JSON.parse(text) as { reason?: string }).reason;
        } catch {
          reason = undefined;
        }
        resolve({ status, ...(reason !== undefined ? { reason } : {}), ...(retryAfter !== undefined ? { retryAfter } : {}) });
      });
      stream.on('error', (error) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      });
      stream.end(body);
    });
  }

  async function send(target: PushTarget, message: PushMessage, signal?: AbortSignal): Promise<SendOutcome> {
    if (closed) return { status: 'retry' };
    if (!target.token || !target.topic) return { status: 'rejected', reason: 'APNs target needs a device token and topic' };
    const body = JSON.stringify(apnsPayload(message));
    if (Buffer.byteLength(body, 'utf8') > APNS_MAX_PAYLOAD_BYTES) return { status: 'rejected', reason: 'payload too large' };
    const started = performance.now();
    try {
      return await withDeadline(timeoutMs, signal, async (deadline) => {
        let answer = await post(target, message, body, await providerToken(false), deadline);
        if (answer.status === 403 && answer.reason === 'ExpiredProviderToken') {
          // Our clock and Apple's disagree, or the token outlived its hour: renew once, then give the answer as is.
          answer = await post(target, message, body, await providerToken(true), deadline);
        }
        return outcomeFor(answer, now(), started);
      });
    } catch (error) {
      if (signal?.aborted && error === signal.reason) throw error;
      // A timeout (PushTimeoutError) or a network error: the gateway may answer the next attempt.
      // Connection refused or reset, stream cancelled by GOAWAY: the next attempt opens a new connection.
      return { status: 'retry' };
    }
  }

  return {
    kind: 'apns',
    send,
    async close() {
      closed = true;
      const open = session;
      session = undefined;
      if (open && !open.closed) await new Promise<void>((resolve) => open.close(() => resolve()));
    },
  };
}

function outcomeFor(answer: { status: number; reason?: string; retryAfter?: string }, nowMs: number, started: number): SendOutcome {
  const { status, reason } = answer;
  if (status === 200) return { status: 'sent', latencyMs: performance.now() - started };
  // The stream ended without a response (connection going away): nothing was decided.
  if (!status) return { status: 'retry' };
  if (status === 410) return { status: 'gone' };
  if (status === 400 && (reason === 'BadDeviceToken' || reason === 'Unregistered')) return { status: 'gone' };
  if (status === 429 || status >= 500) return retryOutcome(retryAfterMs(answer.retryAfter, nowMs));
  return { status: 'rejected', reason: `APNs answered ${status}${reason ? ` ${reason}` : ''}` };
}
