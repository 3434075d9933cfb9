/** Pieces the three gateways share: the app payload, Retry-After, payload limits, timeouts. */
import crypto from 'node:crypto';
import type { PushMessage, SendOutcome } from './types';

/** A gateway was configured wrongly (missing key, bad origin): a start-up error, not a delivery outcome. */
export class PushGatewayConfigError extends Error {
  override readonly name = 'PushGatewayConfigError';
}

/** The gateway's own deadline passed: the send becomes a `retry`, unlike the caller's abort. */
export class PushTimeoutError extends Error {
  override readonly name = 'PushTimeoutError';
}

/**
 * What the app receives, the same fields on every gateway (each wraps it in its own envelope): the message type, its
 * id (for tracing and deduplication on the device), the badge if any, and the lead's data.
 */
export function appPayload(message: PushMessage): { type: PushMessage['type']; id: string; badge?: number; data: Record<string, unknown> } {
  return { type: message.type, id: message.id, ...(message.badge !== undefined ? { badge: message.badge } : {}), data: message.data };
}

/** Whether the message shows something to the user (alert) or only wakes the app (background). */
export function isVisible(message: PushMessage): boolean {
  return message.type === 'newMail' || message.type === 'reminder';
}

/**
 * Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, as milliseconds from `nowMs`; undefined when absent
 * or unreadable (the queue then applies its own backoff).
 */
export function retryAfterMs(value: string | string[] | undefined | null, nowMs: number): number | undefined {
  const raw = Array.isArray(value) ? value[0] : value;
  if (!raw) return undefined;
  const trimmed = raw.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - nowMs);
}

export function retryOutcome(afterMs: number | undefined): SendOutcome {
  return afterMs === undefined ? { status: 'retry' } : { status: 'retry', afterMs };
}

/** A short, stable, base64url digest of a string: for header values with a length or alphabet limit. */
export function digestBase64url(value: string): string {
  return crypto.createHash('sha256').update(value, 'utf8').digest('base64url');
}

/**
 * Runs `work` with a signal that aborts at the gateway's deadline or when the caller's signal does. The deadline
 * rejects with PushTimeoutError (→ retry); the caller's abort rejects with the caller's reason (rethrown).
 */
export async function withDeadline<T>(timeoutMs: number, callerSignal: AbortSignal | undefined, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  callerSignal?.throwIfAborted();
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const onCallerAbort = () => controller.abort(callerSignal!.reason);
  callerSignal?.addEventListener('abort', onCallerAbort, { once: true });
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new PushTimeoutError(`no answer within ${timeoutMs} ms`);
      controller.abort(error);
      reject(error);
    }, timeoutMs);
  });
  const aborted = new Promise<never>((_, reject) => {
    controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true });
  });
  // Some clients (web-push) cannot be cancelled: racing makes the send return at the deadline regardless.
  deadline.catch(() => undefined);
  aborted.catch(() => undefined);
  try {
    return await Promise.race([work(controller.signal), deadline, aborted]);
  } finally {
    clearTimeout(timer);
    callerSignal?.removeEventListener('abort', onCallerAbort);
  }
}

/**
 * A UUID for apns-id: the message id itself when it is one (so logs line up), else one derived from it (stable, so
 * a retried message keeps its apns-id).
 */
export function uuidFor(id: string): string {
  if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) return id.toLowerCase();
  const hex = crypto.createHash('sha256').update(id, 'utf8').digest('hex');
  // Shaped as a version 8 (custom) UUID, RFC 9562 §5.8.
  const variant = ((parseInt(hex[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-8${hex.slice(13, 16)}-${variant}${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}
