/**
 * Live push channels (event streams and pings) and the rules they share: one live channel per device and mailbox (a
 * newer one ends the older, so duplicate long-polls from a flaky network never pile up — Z-Push #55 — while a device
 * may watch its own mailbox and a shared one at once), a per-user cap, and the re-check of the caller's right to
 * stay connected.
 */
import type { Logger } from 'pino';
import { ApiError, errors } from '../errors';
import type { Clock } from '../clock';
import type { Store } from '../store/types';
import type { DeviceService } from '../devices/service';
import type { AccessCheck } from '../devices/gate';
import type { AuthContext } from '../auth/authenticate';
import type { EventBus } from './bus';
import type { SyncWatermarks } from './watermarks';

export type EndReason =
  | 'replaced' // a newer stream or ping of the same device for the same mailbox
  | 'cut' // the device was blocked, quarantined, wiped or removed
  | 'revoked' // a re-check failed (an access rule, a password change, a disabled user, a shared mailbox's membership)
  | 'expired' // the access token reached its exp
  | 'shutdown'
  | 'clientGone'
  | 'slowConsumer'
  | 'failed'; // the store could not answer the channel's reads

export interface Channel {
  readonly kind: 'stream' | 'ping';
  readonly caller: Caller;
  /**
   * Ends the channel; safe to call more than once. `problem`: why access ended (a stream sends it as an
   * `accessEnded` event before it ends; a ping answers it).
   */
  end(reason: EndReason, problem?: ApiError): void;
  /** Tells the app something without ending (a stream's `policyChanged` event); a ping has no way to, and ignores it. */
  notify?(event: string, data: Record<string, unknown>): void;
}

/** Who holds a channel: captured from the request when it opens, re-checked while it lives. */
export interface Caller {
  /** The person: the device gate, the session, the token, conditional access and the per-user cap are theirs. */
  userId: string;
  /**
   * The watched mailbox's user id: the caller's own (= userId), or a shared mailbox named by `X-Mailbox`. Every read
   * of mailbox data and the bus subscription use it.
   */
  mailboxId: string;
  tenantId: string;
  deviceId: string;
  /** The device record: a removed and re-registered device is another record, and its old channels must end. */
  recordId: string;
  /** The access token's exp, in ms. */
  expiresAt: number;
  /** The user's session version when the channel opened (the token carried it; authentication checked it). */
  sessionVersion: number;
  /** The caller's authentication, for conditional access's re-evaluation while the channel lives. */
  auth: AuthContext;
  /** The client address the channel was opened from (named locations). */
  ip: string | undefined;
}

export interface PushOptions {
  /** Changes within this window after the first are sent as one event (protocol: about 1 s). */
  coalesceMs: number;
  /** An SSE comment at least this often keeps proxies and NATs from dropping an idle stream (protocol: ≤ 30 s). */
  heartbeatMs: number;
  /** Streams and pings one user may hold open at once. */
  maxChannelsPerUser: number;
  /** The allowed `heartbeatSeconds` of a ping (protocol: 60..1740); tests shorten it. */
  pingSeconds: readonly [number, number];
}

export const DEFAULT_PUSH_OPTIONS: PushOptions = {
  coalesceMs: 1000,
  heartbeatMs: 25_000,
  maxChannelsPerUser: 10,
  pingSeconds: [60, 1740],
};

/** What a channel needs; built once in createPush. */
export interface PushContext {
  store: Store;
  clock: Clock;
  devices: DeviceService;
  bus: EventBus;
  registry: ChannelRegistry;
  watermarks: SyncWatermarks;
  log: Logger;
  options: PushOptions;
  /** Conditional access and app protection, judged again with the device gate (server/access/service.ts). */
  access?: AccessCheck;
}

/** A client over the cap is told to come back later; by then an old stream has usually timed out. */
const CAP_RETRY_AFTER_SECONDS = 30;

/** A channel's slot in the registry: one live channel per device record and watched mailbox. */
export const channelKey = (caller: Pick<Caller, 'recordId' | 'mailboxId'>): string => `${caller.recordId} ${caller.mailboxId}`;

export class ChannelRegistry {
  /** Device record → watched mailbox → its live channel. */
  private readonly byDevice = new Map<string, Map<string, Channel>>();
  private readonly perUser = new Map<string, number>();
  /** This process's live channels by user: which to re-check when a user's or a device's record changes. */
  private readonly byUser = new Map<string, Set<Channel>>();
  /** This process's live channels by watched mailbox: who hears of the mailbox's settings or its deletion. */
  private readonly byMailbox = new Map<string, Set<Channel>>();
  private closed = false;

  constructor(private readonly maxPerUser: number) {}

  /**
   * Makes `channel` the one live channel of its device for its mailbox, ending the older one. Throws 429 when the
   * user already holds the maximum (the older channel it replaces does not count: it is about to end) and 503 after
   * shutdown began. Checked before anything is written, so a refused request gets a proper problem response.
   */
  open(channel: Channel): void {
    if (this.closed) throw errors.unavailable('The server is shutting down; reconnect shortly.');
    const { userId, recordId, mailboxId } = channel.caller;
    const older = this.byDevice.get(recordId)?.get(mailboxId);
    const held = (this.perUser.get(userId) ?? 0) - (older ? 1 : 0);
    if (held >= this.maxPerUser) throw errors.rateLimited(CAP_RETRY_AFTER_SECONDS);
    older?.end('replaced'); // releases itself
    let device = this.byDevice.get(recordId);
    if (!device) this.byDevice.set(recordId, (device = new Map()));
    device.set(mailboxId, channel);
    this.perUser.set(userId, (this.perUser.get(userId) ?? 0) + 1);
    addTo(this.byUser, userId, channel);
    addTo(this.byMailbox, mailboxId, channel);
  }

  /** Called by a channel when it ends. A channel that was already replaced is no longer registered: no-op. */
  release(channel: Channel): void {
    const { userId, recordId, mailboxId } = channel.caller;
    const device = this.byDevice.get(recordId);
    if (device?.get(mailboxId) !== channel) return;
    device.delete(mailboxId);
    if (device.size === 0) this.byDevice.delete(recordId);
    removeFrom(this.byUser, userId, channel);
    removeFrom(this.byMailbox, mailboxId, channel);
    const n = (this.perUser.get(userId) ?? 1) - 1;
    if (n > 0) this.perUser.set(userId, n);
    else this.perUser.delete(userId);
  }

  /** This process's live channels of a tenant's users (a policy of the tenant changed). */
  channelsOfTenant(tenantId: string): Channel[] {
    const out: Channel[] = [];
    for (const set of this.byUser.values()) for (const c of set) if (c.caller.tenantId === tenantId) out.push(c);
    return out;
  }

  /** This process's live channels of a user (whatever mailbox they watch). */
  channelsOf(userId: string): Channel[] {
    return [...(this.byUser.get(userId) ?? [])];
  }

  /** This process's live channels watching a mailbox (its owner's and its members'). */
  channelsOfMailbox(mailboxId: string): Channel[] {
    return [...(this.byMailbox.get(mailboxId) ?? [])];
  }

  /** The live channels of a device record this process holds (its own mailbox's and shared ones'). */
  channelsOfDevice(recordId: string): Channel[] {
    return [...(this.byDevice.get(recordId)?.values() ?? [])];
  }

  /** Ends every live channel of a device record (a device cut). */
  endDevice(recordId: string, reason: EndReason): void {
    for (const channel of this.channelsOfDevice(recordId)) channel.end(reason);
  }

  /** Shutdown: ends every channel and refuses new ones, so a drain does not wait for streams that never end. */
  closeAll(): number {
    this.closed = true;
    const all = this.all();
    for (const channel of all) channel.end('shutdown');
    return all.length;
  }

  count(kind?: Channel['kind']): number {
    return this.all().filter((c) => !kind || c.kind === kind).length;
  }

  private all(): Channel[] {
    const out: Channel[] = [];
    for (const device of this.byDevice.values()) out.push(...device.values());
    return out;
  }
}

function addTo(map: Map<string, Set<Channel>>, key: string, channel: Channel): void {
  let set = map.get(key);
  if (!set) map.set(key, (set = new Set()));
  set.add(channel);
}

function removeFrom(map: Map<string, Set<Channel>>, key: string, channel: Channel): void {
  const set = map.get(key);
  set?.delete(channel);
  if (set?.size === 0) map.delete(key);
}

/**
 * Is the caller still allowed to hold a channel? The device gate again (access rules and the organisation default
 * change without a cut signal), the same device record, the user's session (a password change or "revoke
 * sessions" ends every access token at once; a long-lived stream must not outlive that), and for a shared mailbox
 * the membership (removed, no full access any more, or the mailbox gone: 404 mailboxNotFound, as the resolver
 * answers). Returns the error the gate would answer now, or undefined when all is well. Never rejects.
 */
export async function recheck(ctx: PushContext, caller: Caller): Promise<ApiError | undefined> {
  try {
    const device = await ctx.devices.gate(caller.userId, caller.tenantId, caller.deviceId);
    if (device.id !== caller.recordId) return errors.deviceNotRegistered();
    const user = await ctx.store.users.byId(caller.userId);
    if (!user || user.disabled || user.sessionVersion !== caller.sessionVersion) {
      return errors.unauthorized('The access token has been revoked.');
    }
    if (ctx.clock.now() >= caller.expiresAt) return errors.unauthorized('The access token has expired.');
    if (ctx.access) await ctx.access({ auth: caller.auth, device, method: 'GET', path: '/events', ip: caller.ip });
    if (caller.mailboxId !== caller.userId && !(await ctx.store.sharedMailboxes.member(caller.mailboxId, caller.userId))?.fullAccess) {
      return errors.mailboxNotFound();
    }
    return undefined;
  } catch (err) {
    if (err instanceof ApiError) return err;
    // The store could not answer: end the channel (the client reconnects) rather than keep an unchecked one.
    ctx.log.error({ err, userId: caller.userId }, 'push re-check failed');
    return errors.unavailable('The server could not check this device; reconnect shortly.');
  }
}
