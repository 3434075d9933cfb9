/**
 * Live push channels (event streams and pings) and the rules they share: one live channel per device (a newer one
 * ends the older, so duplicate long-polls from a flaky network never pile up — Z-Push #55), a per-user cap, and the
 * re-check of the caller's right to stay connected.
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
  | 'replaced' // a newer stream or ping of the same device
  | 'cut' // the device was blocked, quarantined, wiped or removed
  | 'revoked' // a re-check failed (an access rule, a password change, a disabled user)
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
  userId: string;
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

export class ChannelRegistry {
  private readonly byDevice = new Map<string, Channel>();
  private readonly perUser = new Map<string, number>();
  /** This process's live channels by user: which to re-check when a user's or a device's record changes. */
  private readonly byUser = new Map<string, Set<Channel>>();
  private closed = false;

  constructor(private readonly maxPerUser: number) {}

  /**
   * Makes `channel` its device's one live channel, ending the older one. Throws 429 when the user already holds
   * the maximum (the device's own older channel does not count: it is about to end) and 503 after shutdown began.
   * Checked before anything is written, so a refused request gets a proper problem response.
   */
  open(channel: Channel): void {
    if (this.closed) throw errors.unavailable('The server is shutting down; reconnect shortly.');
    const { userId, recordId } = channel.caller;
    const older = this.byDevice.get(recordId);
    const held = (this.perUser.get(userId) ?? 0) - (older ? 1 : 0);
    if (held >= this.maxPerUser) throw errors.rateLimited(CAP_RETRY_AFTER_SECONDS);
    older?.end('replaced'); // releases itself
    this.byDevice.set(recordId, channel);
    this.perUser.set(userId, (this.perUser.get(userId) ?? 0) + 1);
    let mine = this.byUser.get(userId);
    if (!mine) this.byUser.set(userId, (mine = new Set()));
    mine.add(channel);
  }

  /** Called by a channel when it ends. A channel that was already replaced is no longer registered: no-op. */
  release(channel: Channel): void {
    const { userId, recordId } = channel.caller;
    if (this.byDevice.get(recordId) !== channel) return;
    this.byDevice.delete(recordId);
    const mine = this.byUser.get(userId);
    mine?.delete(channel);
    if (mine?.size === 0) this.byUser.delete(userId);
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

  /** This process's live channels of a user. */
  channelsOf(userId: string): Channel[] {
    return [...(this.byUser.get(userId) ?? [])];
  }

  /** The live channel of a device record, if this process holds one. */
  channelOfDevice(recordId: string): Channel | undefined {
    return this.byDevice.get(recordId);
  }

  /** Ends the live channel of a device record (a device cut). */
  endDevice(recordId: string, reason: EndReason): void {
    this.byDevice.get(recordId)?.end(reason);
  }

  /** Shutdown: ends every channel and refuses new ones, so a drain does not wait for streams that never end. */
  closeAll(): number {
    this.closed = true;
    const all = [...this.byDevice.values()];
    for (const channel of all) channel.end('shutdown');
    return all.length;
  }

  count(kind?: Channel['kind']): number {
    if (!kind) return this.byDevice.size;
    let n = 0;
    for (const c of this.byDevice.values()) if (c.kind === kind) n++;
    return n;
  }
}

/**
 * Is the caller still allowed to hold a channel? The device gate again (access rules and the organisation default
 * change without a cut signal), the same device record, and the user's session (a password change or "revoke
 * sessions" ends every access token at once; a long-lived stream must not outlive that). Returns the error the
 * gate would answer now, or undefined when all is well. Never rejects.
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
    return undefined;
  } catch (err) {
    if (err instanceof ApiError) return err;
    // The store could not answer: end the channel (the client reconnects) rather than keep an unchecked one.
    ctx.log.error({ err, userId: caller.userId }, 'push re-check failed');
    return errors.unavailable('The server could not check this device; reconnect shortly.');
  }
}
