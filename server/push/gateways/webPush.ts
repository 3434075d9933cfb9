/**
 * Web Push (RFC 8030 delivery, RFC 8291 payload encryption, RFC 8292 VAPID) through the `web-push` library.
 *
 * The VAPID JWT is signed here rather than by the library, which signs a new one (ES256) for every message: RFC 8292
 * §2 lets a token be reused until its `exp` (at most 24 h ahead), so one Authorization header per push service (its
 * origin is the token's `aud`) serves every message to that service for VAPID_REUSE_MS (see VapidAuthorizations).
 */
import https from 'node:https';
import { performance } from 'node:perf_hooks';
import webpush, { WebPushError } from 'web-push';
import { appPayload, digestBase64url, PushGatewayConfigError, retryAfterMs, retryOutcome, withDeadline } from './common';
import type { Gateway, PushMessage, PushTarget, SendOutcome } from './types';

export interface VapidDetails {
  /** A mailto: or https: URL the push service can reach the operator at (RFC 8292 §2.1). */
  subject: string;
  /** base64url, uncompressed P-256 point (65 bytes). */
  publicKey: string;
  /** base64url, 32 bytes. */
  privateKey: string;
}

export interface WebPushGatewayOptions {
  vapid: VapidDetails;
  timeoutMs: number;
  /** Extra trust for the push service's certificate (tests). */
  ca?: string | Buffer;
  now?: () => number;
}

/**
 * The largest plaintext that fits the 4096-byte body push services must accept (RFC 8030 §7.2): the aes128gcm
 * header (16 salt + 4 rs + 1 idlen + 65 key) and one record's delimiter byte and 16-byte tag come off.
 */
export const WEB_PUSH_MAX_PLAINTEXT = 4096 - 86 - 1 - 16;

/** New VAPID keys (base64url), for configuration. */
export function generateVapidKeys(): { publicKey: string; privateKey: string } {
  const { publicKey, privateKey } = webpush.generateVAPIDKeys();
  return { publicKey, privateKey };
}

/**
 * The Topic header (RFC 8030 §5.4) allows at most 32 base64url characters, so the collapse key is hashed: equal
 * keys give equal topics, and the key's own content (ids, folder names) does not leave the server.
 */
export function webPushTopic(collapseKey: string): string {
  return digestBase64url(collapseKey).slice(0, 32);
}

/** What the service worker receives: the app payload, with the alert text it shows itself (Web Push has no OS alert). */
export function webPushBody(message: PushMessage): string {
  return JSON.stringify({ ...appPayload(message), ...(message.alert ? { alert: message.alert } : {}) });
}

export function createWebPushGateway(options: WebPushGatewayOptions): Gateway {
  const { vapid, timeoutMs } = options;
  if (!vapid.subject || !vapid.publicKey || !vapid.privateKey) throw new PushGatewayConfigError('web push needs a VAPID subject and key pair');
  const now = options.now ?? Date.now;
  const authorizations = new VapidAuthorizations(now);
  // keepAlive: one TLS connection per push service, reused across messages.
  const agent = new https.Agent({ keepAlive: true, ...(options.ca ? { ca: options.ca } : {}) });

  async function send(target: PushTarget, message: PushMessage, signal?: AbortSignal): Promise<SendOutcome> {
    if (!target.endpoint || !target.p256dh || !target.auth) return { status: 'rejected', reason: 'web push target needs endpoint, p256dh and auth' };
    const body = webPushBody(message);
    if (Buffer.byteLength(body, 'utf8') > WEB_PUSH_MAX_PLAINTEXT) return { status: 'rejected', reason: 'payload too large' };
    const started = performance.now();
    try {
      const authorization = authorizations.forEndpoint(target.endpoint, vapid);
      await withDeadline(timeoutMs, signal, () =>
        webpush.sendNotification({ endpoint: target.endpoint!, keys: { p256dh: target.p256dh!, auth: target.auth! } }, body, {
          TTL: message.ttlSeconds,
          urgency: message.urgency,
          topic: webPushTopic(message.collapseKey),
          contentEncoding: 'aes128gcm',
          // Signed above (reused per push service). null (the library reads it; its types omit it) keeps it from
          // signing one more, even were a process-wide pair set with setVapidDetails.
          vapidDetails: null as unknown as undefined,
          headers: { Authorization: authorization },
          // The socket timeout frees the connection of a service that never answers (the race above returns first).
          timeout: timeoutMs,
          agent,
        }),
      );
      return { status: 'sent', latencyMs: performance.now() - started };
    } catch (error) {
      if (signal?.aborted && error === signal.reason) throw error;
      if (error instanceof WebPushError) return outcomeForStatus(error.statusCode, error.headers?.['retry-after'], error.body, now());
      // A timeout (PushTimeoutError) or a network error: the gateway may answer the next attempt.
      // Network errors (refused, reset, TLS): the service may be back soon.
      return { status: 'retry' };
    }
  }

  return {
    kind: 'webpush',
    send,
    async close() {
      agent.destroy();
    },
  };
}

/** A VAPID JWT is signed to expire this long after it is made (RFC 8292 §2: at most 24 h)... */
export const VAPID_TTL_MS = 12 * 3600_000;
/** ... and reused for this long, so a message never carries one about to expire (clocks of push services drift). */
export const VAPID_REUSE_MS = 11 * 3600_000;
/** Push services remembered at once; beyond it the oldest is forgotten (it is signed again when next used). */
export const VAPID_CACHE_LIMIT = 1000;

/**
 * VAPID Authorization headers, one per push service origin and VAPID pair, each signed once and reused for
 * VAPID_REUSE_MS. An entry is keyed by the public key and subject it was signed with as well, so a changed pair never
 * reuses a token of the old one. Bounded (VAPID_CACHE_LIMIT, oldest first: a Map keeps insertion order).
 */
export class VapidAuthorizations {
  private readonly entries = new Map<string, { header: string; reuseUntil: number }>();
  /** Signatures made (tests, and to see the reuse work). */
  signed = 0;

  constructor(private readonly now: () => number = Date.now) {}

  /** The push service a subscription's endpoint belongs to: its origin (scheme, host and a non-default port). */
  static audienceOf(endpoint: string): string {
    return new URL(endpoint).origin;
  }

  forEndpoint(endpoint: string, vapid: VapidDetails): string {
    return this.forAudience(VapidAuthorizations.audienceOf(endpoint), vapid);
  }

  forAudience(audience: string, vapid: VapidDetails): string {
    const { subject, publicKey, privateKey } = vapid;
    const key = `${publicKey}\u0000${subject}\u0000${audience}`;
    const nowMs = this.now();
    const cached = this.entries.get(key);
    if (cached && nowMs < cached.reuseUntil) return cached.header;
    if (cached) this.entries.delete(key);
    // The library builds the header as it would itself for aes128gcm: `vapid t=<JWT>, k=<public key>` (RFC 8292 §3).
    const expiration = Math.floor((nowMs + VAPID_TTL_MS) / 1000);
    const header = webpush.getVapidHeaders(audience, subject, publicKey, privateKey, 'aes128gcm', expiration).Authorization;
    this.signed += 1;
    while (this.entries.size >= VAPID_CACHE_LIMIT) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { header, reuseUntil: nowMs + VAPID_REUSE_MS });
    return header;
  }

  get size(): number {
    return this.entries.size;
  }
}

function outcomeForStatus(status: number, retryAfter: string | undefined, body: string, nowMs: number): SendOutcome {
  if (status === 404 || status === 410) return { status: 'gone' };
  if (status === 429 || status >= 500) return retryOutcome(retryAfterMs(retryAfter, nowMs));
  // 400, 413 and any other 4xx (401/403: VAPID refused) are permanent for this message.
  return { status: 'rejected', reason: `push service answered ${status}${body ? `: ${body.slice(0, 200)}` : ''}` };
}
