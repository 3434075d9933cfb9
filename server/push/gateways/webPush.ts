/**
 * Web Push (RFC 8030 delivery, RFC 8291 payload encryption, RFC 8292 VAPID) through the `web-push` library.
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
  // keepAlive: one TLS connection per push service, reused across messages.
  const agent = new https.Agent({ keepAlive: true, ...(options.ca ? { ca: options.ca } : {}) });

  async function send(target: PushTarget, message: PushMessage, signal?: AbortSignal): Promise<SendOutcome> {
    if (!target.endpoint || !target.p256dh || !target.auth) return { status: 'rejected', reason: 'web push target needs endpoint, p256dh and auth' };
    const body = webPushBody(message);
    if (Buffer.byteLength(body, 'utf8') > WEB_PUSH_MAX_PLAINTEXT) return { status: 'rejected', reason: 'payload too large' };
    const started = performance.now();
    try {
      await withDeadline(timeoutMs, signal, () =>
        webpush.sendNotification({ endpoint: target.endpoint!, keys: { p256dh: target.p256dh!, auth: target.auth! } }, body, {
          TTL: message.ttlSeconds,
          urgency: message.urgency,
          topic: webPushTopic(message.collapseKey),
          contentEncoding: 'aes128gcm',
          vapidDetails: vapid,
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

function outcomeForStatus(status: number, retryAfter: string | undefined, body: string, nowMs: number): SendOutcome {
  if (status === 404 || status === 410) return { status: 'gone' };
  if (status === 429 || status >= 500) return retryOutcome(retryAfterMs(retryAfter, nowMs));
  // 400, 413 and any other 4xx (401/403: VAPID refused) are permanent for this message.
  return { status: 'rejected', reason: `push service answered ${status}${body ? `: ${body.slice(0, 200)}` : ''}` };
}
