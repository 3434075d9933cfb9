/**
 * Push across worker processes (server/cluster.ts): what one worker's channels must learn from the others.
 *
 * - The change feed (SQLite). `ClusterBus` publishes each commit to this process's subscribers at once, then sends
 *   it to the primary, which relays it to every other worker, where it reaches their subscribers as if committed
 *   there. A message is a `CommittedChange` (a user id, a modseq, folder ids): the subscriber reads what it needs
 *   from its own SQLite connection, which sees the commit (it was committed before it was published). With
 *   PostgreSQL every worker is a node whose store hears every other node's commits (LISTEN/NOTIFY), so the bus stays
 *   in the process (`commitsFromStore`): relaying them as well would deliver each twice.
 * - Channels. The per-user cap and the one-live-channel-per-device-and-mailbox rule hold across the workers (a
 *   channel's `r` in these messages is its channelKey, device record and mailbox, which the primary only compares):
 *   `ClusterChannelRegistry` tells the primary of each channel it opens and releases; the primary keeps the book of
 *   every worker's channels (`ChannelBook`), tells a worker when its channel of a device was replaced by one opened
 *   elsewhere, and relays each open and release to the others, so every worker counts a user's channels everywhere
 *   when it checks the cap. That view trails the other workers by one IPC hop (well under a millisecond): opens that
 *   race on different workers within it can pass the cap together, by at most one each.
 * - Ping watermarks. A device may sync on one worker and ping on another; without the first one's note the ping
 *   would answer "changed" at once (a spurious sync, and with several connections it can repeat). A note that moved
 *   is sent to the others (a no-change poll moves nothing, so costs nothing). Notes from two workers that race for
 *   the same device and folder may land in either order; both are recent syncs of that device, and a note lower
 *   than the truth only costs one extra sync.
 *
 * Device cuts travel the same way through `DeviceSignals`' relay (server/devices/signals.ts, wired in main.ts).
 * A lost message costs at most a late sync: every event only says "something changed", and streams re-check the
 * device at each heartbeat.
 */
import type { Logger } from 'pino';
import { errors } from '../errors';
import type { CommittedChange } from '../store/types';
import { InProcessBus, type ChangeListener, type EventBus } from './bus';
import { ChannelRegistry, channelKey, type Channel } from './channels';
import type { SyncWatermarks } from './watermarks';
import type { PushCluster } from './index';

/** A worker's side of the IPC channel to the primary (server/cluster.ts); tests use an in-memory one. */
export interface ClusterLink {
  /** Sends to the primary; never throws (a message that cannot go is dropped). */
  send(message: ClusterMessage): void;
  /** Calls `fn` for each message of this type from the primary. */
  on(type: string, fn: (message: ClusterMessage) => void): void;
}

/** Every message between the processes names its type in `pigeon` (other IPC users, like prom-client, do not). */
export interface ClusterMessage {
  pigeon: string;
  [field: string]: unknown;
}

/** A channel held by another worker, as the primary told of it. */
export interface RemoteChannel {
  worker: number;
  userId: string;
  /** The id the holding worker gave it (ids are per worker). */
  id: number;
}

/** The same as channels.ts: a client over the cap is told to come back when an old stream has likely ended. */
const CAP_RETRY_AFTER_SECONDS = 30;

/** The store's commits of every worker, to this worker's subscribers. */
export class ClusterBus implements EventBus {
  private readonly local: InProcessBus;

  constructor(
    private readonly link: ClusterLink,
    log?: Logger,
  ) {
    this.local = new InProcessBus(log);
    link.on('change', (m) => this.local.publish(m.change as CommittedChange));
  }

  publish(change: CommittedChange): void {
    this.local.publish(change);
    this.link.send({ pigeon: 'change', change });
  }

  subscribe(userId: string, fn: ChangeListener): () => void {
    return this.local.subscribe(userId, fn);
  }

  get users(): number {
    return this.local.users;
  }
}

function add(map: Map<string, number>, key: string, n: number): void {
  const v = (map.get(key) ?? 0) + n;
  if (v > 0) map.set(key, v);
  else map.delete(key);
}

/**
 * The channel registry of one worker that also counts the others' channels. The base class keeps this process's
 * channels (one per device, the older ended when a newer opens here); this one checks the cap against every
 * worker's, and ends a channel here when the primary says the device opened a newer one elsewhere.
 */
export class ClusterChannelRegistry extends ChannelRegistry {
  private readonly mine = new Map<string, { channel: Channel; id: number }>();
  private readonly minePerUser = new Map<string, number>();
  private readonly remote = new Map<string, RemoteChannel>();
  private readonly remotePerUser = new Map<string, number>();
  private seq = 0;
  private closing = false;

  constructor(
    private readonly cap: number,
    private readonly link: ClusterLink,
  ) {
    super(Number.MAX_SAFE_INTEGER); // the cap is checked here, across the workers
    link.on('ch+', (m) => this.remoteOpened(String(m.r), { worker: Number(m.w), userId: String(m.u), id: Number(m.id) }));
    link.on('ch-', (m) => this.remoteReleased(String(m.r), Number(m.w), Number(m.id)));
    link.on('ch-end', (m) => {
      const entry = this.mine.get(String(m.r));
      if (entry && entry.id === Number(m.id)) entry.channel.end('replaced');
    });
    link.on('ch-snap', (m) => {
      this.remote.clear();
      this.remotePerUser.clear();
      for (const [worker, userId, recordId, id] of m.entries as Array<[number, string, string, number]>) this.remoteOpened(recordId, { worker, userId, id });
    });
    link.on('ch-gone', (m) => {
      for (const [recordId, c] of [...this.remote]) if (c.worker === Number(m.w)) this.remoteReleased(recordId, c.worker, c.id);
    });
  }

  override open(channel: Channel): void {
    const { userId } = channel.caller;
    // Keyed by device record and mailbox (channelKey): the primary's book replaces only a channel of the same pair.
    const key = channelKey(channel.caller);
    if (!this.closing) {
      const older = this.mine.has(key) || this.remote.has(key);
      const held = (this.minePerUser.get(userId) ?? 0) + (this.remotePerUser.get(userId) ?? 0) - (older ? 1 : 0);
      if (held >= this.cap) throw errors.rateLimited(CAP_RETRY_AFTER_SECONDS);
    }
    super.open(channel); // 503 once shutdown began; ends this process's older channel of the pair (→ release)
    const id = ++this.seq;
    this.mine.set(key, { channel, id });
    add(this.minePerUser, userId, 1);
    this.link.send({ pigeon: 'ch+', u: userId, r: key, id });
  }

  override release(channel: Channel): void {
    const { userId } = channel.caller;
    const key = channelKey(channel.caller);
    super.release(channel);
    const entry = this.mine.get(key);
    if (entry?.channel !== channel) return;
    this.mine.delete(key);
    add(this.minePerUser, userId, -1);
    this.link.send({ pigeon: 'ch-', r: key, id: entry.id });
  }

  override closeAll(): number {
    this.closing = true;
    return super.closeAll();
  }

  /** Channels of other workers this one knows of (for tests). */
  get remoteCount(): number {
    return this.remote.size;
  }

  private remoteOpened(recordId: string, c: RemoteChannel): void {
    const prev = this.remote.get(recordId);
    if (prev) add(this.remotePerUser, prev.userId, -1);
    this.remote.set(recordId, c);
    add(this.remotePerUser, c.userId, 1);
  }

  private remoteReleased(recordId: string, worker: number, id: number): void {
    const prev = this.remote.get(recordId);
    if (!prev || prev.worker !== worker || prev.id !== id) return; // already replaced by a newer one
    this.remote.delete(recordId);
    add(this.remotePerUser, prev.userId, -1);
  }
}

/**
 * The primary's book of every worker's push channels: the newest channel of each device record and where it is.
 * `open` answers the older channel to end when it lives on another worker (its own worker already ended it).
 */
export class ChannelBook {
  private readonly byRecord = new Map<string, RemoteChannel>();

  open(worker: number, userId: string, recordId: string, id: number): { worker: number; id: number } | undefined {
    const prev = this.byRecord.get(recordId);
    this.byRecord.set(recordId, { worker, userId, id });
    return prev && prev.worker !== worker ? { worker: prev.worker, id: prev.id } : undefined;
  }

  release(worker: number, recordId: string, id: number): void {
    const entry = this.byRecord.get(recordId);
    if (entry && entry.worker === worker && entry.id === id) this.byRecord.delete(recordId);
  }

  /** A worker exited: its channels are gone. */
  gone(worker: number): void {
    for (const [recordId, c] of [...this.byRecord]) if (c.worker === worker) this.byRecord.delete(recordId);
  }

  /** Every channel not held by `except`, for a worker that just started: [worker, userId, recordId, id]. */
  entries(except: number): Array<[number, string, string, number]> {
    const out: Array<[number, string, string, number]> = [];
    for (const [recordId, c] of this.byRecord) if (c.worker !== except) out.push([c.worker, c.userId, recordId, c.id]);
    return out;
  }

  get size(): number {
    return this.byRecord.size;
  }
}

export interface PushClusterOptions {
  /**
   * The store already tells this process of every other process's commits (PostgreSQL's feed): the bus then only
   * publishes locally, and commits do not travel through the primary.
   */
  commitsFromStore?: boolean;
}

/** Push's share of a worker's link: the bus, the cross-worker registry and the watermark notes. */
export function createPushCluster(link: ClusterLink, log?: Logger, options: PushClusterOptions = {}): PushCluster {
  const bus = options.commitsFromStore ? new InProcessBus(log) : new ClusterBus(link, log);
  return {
    bus,
    registry: (maxPerUser) => new ClusterChannelRegistry(maxPerUser, link),
    watermarks(watermarks: SyncWatermarks) {
      link.on('wm', (m) => watermarks.record(String(m.r), String(m.f), Number(m.m)));
      return (deviceRecordId, folderId, modseq) => link.send({ pigeon: 'wm', r: deviceRecordId, f: folderId, m: modseq });
    },
  };
}

/**
 * One process's push in the shape of a cluster's: what createPush builds when it is given none (a node without
 * workers that shares PostgreSQL with other nodes needs an `AppCluster` for the shared rate limits, not for push).
 */
export function processPush(log?: Logger): PushCluster {
  return { bus: new InProcessBus(log), registry: (maxPerUser) => new ChannelRegistry(maxPerUser), watermarks: () => () => undefined };
}
