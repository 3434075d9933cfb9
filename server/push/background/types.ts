/**
 * Background push (issue 20): what wakes an app the phone has suspended. The pieces and who owns what:
 *
 * - the store writes a `push_outbox` row in every committing transaction that changes the mailbox of a user with a
 *   channel (server/store/*), so nothing is lost between a commit and the push;
 * - the composer (compose.ts) takes outbox rows and, in the same unit, queues one message per channel and kind:
 *   "sync now", new-mail alerts (with what the app protection policy and the message's label let it show), the
 *   badge; the reminder clock (reminders.ts) queues calendar reminders when they fall due, and their cancellations;
 * - the drain (drain.ts) claims due messages with a lease, sends them through the gateways (server/push/gateways),
 *   and acts on the outcome: done, channel gone, retry with backoff, rejected; rate limits per device and overall
 *   (limits.ts: this process's buckets with SQLite, where one process drains; windows in the database that every
 *   node's drainer shares with PostgreSQL);
 * - the channel routes (routes.ts) let an app register, list and remove its channels.
 *
 * It runs in the leading process (server/main.ts), woken by this process's commits and polling for other
 * processes' (workers, other nodes, the admin CLI).
 */
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Clock } from '../../clock';
import type { Store } from '../../store/types';
import type { Gateway, PushKind } from '../gateways/types';

/** What a new-mail alert may show (the app protection policy's `notificationContent`, lowered by the message). */
export type PreviewLevel = 'full' | 'senderOnly' | 'none';

export interface BackgroundPushOptions {
  /** Messages sent at once, over all gateways. */
  concurrency: number;
  /**
   * Per device: at most this many messages a minute (a token bucket of that size; PostgreSQL: a one-minute window
   * every node shares); more wait, coalescing.
   */
  perDevicePerMinute: number;
  /** Over all devices: at most this many sends a second (PostgreSQL: over all nodes, a shared window); more wait. */
  globalPerSecond: number;
  /** How long a claim holds a message being sent; after it (a crash), the message is claimed again. */
  leaseMs: number;
  /** Attempts before a message is given up (counting the first). */
  maxAttempts: number;
  /** Retry backoff: base × 2^(attempt − 1), at most max, with jitter; a gateway's Retry-After wins when longer. */
  retryBaseMs: number;
  retryMaxMs: number;
  /** How often the leader looks for work other processes wrote (ms); its own commits wake it at once. */
  pollMs: number;
  /** New-mail alerts per mailbox per pass; more new messages become one summary alert ("5 new messages"). */
  alertsPerPass: number;
  /** Consecutive failures after which a channel is removed as dead even without a "gone" answer. */
  maxChannelFailures: number;
  /** Channels per device (a registration beyond it replaces the device's oldest). */
  maxChannelsPerDevice: number;
}

export const DEFAULT_BACKGROUND_PUSH_OPTIONS: BackgroundPushOptions = {
  concurrency: 64,
  perDevicePerMinute: 30,
  globalPerSecond: 500,
  leaseMs: 30_000,
  maxAttempts: 8,
  retryBaseMs: 1_000,
  retryMaxMs: 5 * 60_000,
  pollMs: 500,
  alertsPerPass: 3,
  maxChannelFailures: 20,
  maxChannelsPerDevice: 5,
};

/** What the composer asks of the rest of the server about a channel's owner (kept as functions: tests inject them). */
export interface BackgroundPushPolicy {
  /** The app protection policy's notification content for this app of this user ('full' when no policy applies). */
  notificationContent(tenantId: string, userId: string, clientId: string): Promise<PreviewLevel>;
  /** Whether a message with this sensitivity label may show its sender and subject in a notification. */
  labelAllowsPreview(tenantId: string, labelId: string): Promise<boolean>;
  /** Whether the device may still be reached: false when blocked, quarantined, wiped, removed or unknown. */
  deviceReachable(userId: string, tenantId: string, deviceId: string): Promise<boolean>;
}

export interface BackgroundPushDeps {
  store: Store;
  clock: Clock;
  log: Logger;
  gateways: Partial<Record<PushKind, Gateway>>;
  policy: BackgroundPushPolicy;
  options?: Partial<BackgroundPushOptions>;
  metrics?: Registry;
}

export interface PassReport {
  /** Outbox entries taken and reminders fired. */
  composed: number;
  /** Messages the gateways accepted. */
  sent: number;
  retried: number;
  /** Channels removed because the gateway said they are gone (or failed too often). */
  gone: number;
  /** Messages given up (rejected, too many attempts, device no longer reachable). */
  dropped: number;
}

export interface BackgroundPush {
  /** Starts the loops in this process (the leader): composer, reminder clock, drain. */
  start(): void;
  /** Something was committed here: compose and drain now rather than at the next poll. */
  kick(): void;
  /** One whole pass (compose, due reminders, drain what is due), resolved when done (tests, the CLI). */
  runOnce(): Promise<PassReport>;
  /** Stops the loops and waits for the sends in flight (their leases cover a send cut short). */
  stop(): Promise<void>;
}
