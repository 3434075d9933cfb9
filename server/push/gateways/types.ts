/**
 * One interface over the three push gateways (Web Push, APNs, FCM HTTP v1), so the delivery queue treats them alike:
 * it hands a target and a message to `send` and acts on the outcome (done, drop the channel, try later, give up).
 */
export type PushKind = 'webpush' | 'apns' | 'fcm';

export interface PushTarget {
  kind: PushKind;
  /* webpush */
  endpoint?: string;
  p256dh?: string;
  auth?: string;
  /* apns, fcm */
  token?: string;
  /* apns */
  topic?: string;
  environment?: 'production' | 'sandbox';
}

export interface PushMessage {
  /** What the app is told: a silent "sync now", a visible alert, a badge, a reminder or its cancellation. */
  type: 'sync' | 'newMail' | 'badge' | 'reminder' | 'reminderCancel';
  /** Coalescing: a newer message with the same key replaces an older one not yet shown (Topic / apns-collapse-id /
   * collapse_key). */
  collapseKey: string;
  ttlSeconds: number;
  urgency: 'very-low' | 'low' | 'normal' | 'high';
  /** The app's payload (JSON): what the app needs, never more — the lead decides what goes in (no preview of
   * protected mail etc.). */
  data: Record<string, unknown>;
  /** Visible alert text (newMail, reminder) or none (sync, badge, reminderCancel). */
  alert?: { title: string; body: string };
  badge?: number;
  /** Unique per message: apns-id, and logged for tracing. */
  id: string;
}

export type SendOutcome =
  | { status: 'sent'; latencyMs: number }
  /** 404/410, Unregistered, BadDeviceToken, UNREGISTERED: the channel is dead, remove it. */
  | { status: 'gone' }
  /** Retry-After, 429, 5xx, timeouts, network errors: try again later (not before afterMs when given). */
  | { status: 'retry'; afterMs?: number }
  /** 400 payload / permanent: never retry. */
  | { status: 'rejected'; reason: string };

export interface Gateway {
  kind: PushKind;
  /**
   * Delivers one message. Gateway answers become outcomes and never throw; only the caller's own `signal` aborting
   * the send makes it reject (with the signal's reason), since then the caller knows why.
   */
  send(target: PushTarget, message: PushMessage, signal?: AbortSignal): Promise<SendOutcome>;
  close(): Promise<void>;
}
