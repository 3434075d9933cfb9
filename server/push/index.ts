/**
 * Push (protocol.md §8), built once per app in createApp: the bus fed from the store's commit hook, the channel
 * registry, the sync watermarks for ping, and the routes. Device cuts end a device's channels at once (its own
 * mailbox's and the shared mailboxes' it watches).
 *
 * With workers (server/cluster.ts) each process builds its own, and `cluster` (push/clusterBus.ts) joins them: the
 * bus carries every worker's commits to every worker's channels, the registry counts and replaces channels across
 * the workers, and a watermark that moves here is noted by the others too.
 */
import type { Logger } from 'pino';
import { Gauge, type Registry } from 'prom-client';
import type { Clock } from '../clock';
import type { DeviceRecord, Store } from '../store/types';
import type { DeviceService } from '../devices/service';
import type { DeviceSignals } from '../devices/signals';
import type { TokenCodec } from '../sync/tokens';
import { InProcessBus, feedFromStore, type EventBus } from './bus';
import { ChannelRegistry, DEFAULT_PUSH_OPTIONS, recheck, type Channel, type PushContext, type PushOptions } from './channels';
import type { AccessCheck } from '../devices/gate';
import { SyncWatermarks } from './watermarks';
import { pushRoutes } from './routes';

export type { EventBus } from './bus';
export type { PushOptions } from './channels';

export interface PushDeps {
  store: Store;
  clock: Clock;
  devices: DeviceService;
  signals: DeviceSignals;
  codec: TokenCodec;
  log: Logger;
  options?: Partial<PushOptions>;
  /** A multi-node bus; the in-process one when not given. */
  bus?: EventBus;
  /** Worker processes: what push shares with the others (its bus wins over `bus`); one process when not given. */
  cluster?: PushCluster;
  /** Where the channel gauge is registered (the app's metrics registry). */
  metrics?: Registry;
  /** Conditional access, judged again while a channel lives (server/access/service.ts). */
  access?: AccessCheck;
}

/** What push shares with the other worker processes (push/clusterBus.ts). */
export interface PushCluster {
  /** The bus: local subscribers hear this process's commits and every other worker's. */
  bus: EventBus;
  /** A registry whose per-user cap and one-channel-per-device rule hold across the workers. */
  registry(maxPerUser: number): ChannelRegistry;
  /**
   * Joins `watermarks` to the other processes' (their notes arrive through `watermarks.record`); returns what to call
   * when a note of this process moved, so the others learn it.
   */
  watermarks(watermarks: SyncWatermarks): (deviceRecordId: string, folderId: string, modseq: number) => void;
}

export function createPush(deps: PushDeps) {
  const options: PushOptions = { ...DEFAULT_PUSH_OPTIONS, ...deps.options };
  const bus = deps.cluster?.bus ?? deps.bus ?? new InProcessBus(deps.log);
  const registry = deps.cluster ? deps.cluster.registry(options.maxChannelsPerUser) : new ChannelRegistry(options.maxChannelsPerUser);
  const watermarks = new SyncWatermarks();
  const share = deps.cluster?.watermarks(watermarks);
  const ctx: PushContext = { store: deps.store, clock: deps.clock, devices: deps.devices, bus, registry, watermarks, log: deps.log, options, access: deps.access };

  const unfeed = feedFromStore(deps.store, bus);
  const unsignal = deps.signals.onCut((cut) => {
    registry.endDevice(cut.recordId, 'cut');
    // A quarantined or blocked device keeps its sync tokens (it may be released); an ended partnership does not.
    if (cut.reason === 'wiped' || cut.reason === 'removed' || cut.reason === 'purged') watermarks.forget(cut.recordId);
  });

  // A device's or a user's record changed — here, or on another node (PostgreSQL's commit feed brings other nodes'
  // writes): the channels of that device (or user) held here are checked again at once, so a block, wipe or removal
  // made through another node, or by the admin CLI on PostgreSQL, ends a stream now rather than at its next heartbeat.
  // Cuts made in this process also arrive as signals above; a second check of an ended channel is a no-op.
  const judge = (channel: Channel, policyChanged = false) =>
    void recheck(ctx, channel.caller).then((denied) => {
      if (denied) channel.end('revoked', denied);
      else if (policyChanged) channel.notify?.('policyChanged', {});
    });
  const unwatch = deps.store.onInvalidate((changes) => {
    for (const change of changes) {
      // A tenant's access rules or conditional-access document changed: every channel of the tenant is judged again.
      if (change.kind === 'tenantAccess') {
        for (const channel of registry.channelsOfTenant(change.tenantId)) judge(channel);
        continue;
      }
      if (change.kind !== 'device' && change.kind !== 'user') continue;
      for (const channel of registry.channelsOf(change.userId)) {
        if (change.kind === 'device' && channel.caller.deviceId !== change.deviceId) continue;
        judge(channel);
      }
      // A shared mailbox's own row changed (deleted, say): its members' channels check their membership now.
      if (change.kind !== 'user') continue;
      for (const channel of registry.channelsOfMailbox(change.userId)) if (channel.caller.userId !== change.userId) judge(channel);
    }
  });
  // Conditional access asked for a re-check (here or in another worker): a compliance change, a policy, a risk.
  const unrecheck = deps.signals.onRecheck((scope) => {
    const channels = scope.userId ? registry.channelsOf(scope.userId) : registry.channelsOfTenant(scope.tenantId);
    for (const channel of channels) {
      if (channel.caller.tenantId !== scope.tenantId) continue;
      if (scope.deviceId && channel.caller.deviceId !== scope.deviceId) continue;
      judge(channel, scope.policyChanged);
    }
  });

  if (deps.metrics) {
    new Gauge({
      name: 'pigeon_push_channels',
      help: 'Open push channels by kind (SSE streams, waiting pings).',
      labelNames: ['kind'] as const,
      registers: [deps.metrics],
      collect() {
        this.set({ kind: 'stream' }, registry.count('stream'));
        this.set({ kind: 'ping' }, registry.count('ping'));
      },
    });
  }

  return {
    /** The route table of `GET /v1/events` and `POST /v1/ping`. */
    routes: pushRoutes(ctx),
    bus,
    watermarks,
    options,
    /** Open channels (all, or of one kind). */
    count: (kind?: 'stream' | 'ping') => registry.count(kind),

    /**
     * The item-sync route reports every token it issues: its modseq is how far the device has now synced the
     * folder. The token was just made by this server for this device and folder, so decoding cannot fail here.
     */
    recordSync(device: DeviceRecord, folderId: string, token: string, mailboxId: string): void {
      // A shared mailbox's token is bound to that mailbox; folder ids are unique across mailboxes, so one note book.
      const position = deps.codec.decode(token, 'i', { userId: mailboxId, deviceRecordId: device.id, deviceId: device.deviceId, folderId });
      // Workers: a ping may arrive at another process; it must know this sync too, or it would answer "changed" at
      // once. Only a note that moved is sent, so a no-change poll costs no message.
      if (share && watermarks.get(device.id, folderId) !== position.m) share(device.id, folderId, position.m);
      watermarks.record(device.id, folderId, position.m);
    },

    /**
     * Tells one device's streams something without ending them (a soft reset: `softReset`), or every stream watching
     * a mailbox (`mailboxSettingsChanged`: its owner's, and for a shared mailbox its members'). This process's
     * channels only: a stream held by another worker or node learns it at its next sync (its tokens answer 410
     * viewChanged; settings carry their version).
     */
    notifyDevice(recordId: string, event: string, data: Record<string, unknown>): void {
      for (const channel of registry.channelsOfDevice(recordId)) channel.notify?.(event, data);
    },
    notifyUser(mailboxId: string, event: string, data: Record<string, unknown>): void {
      for (const channel of registry.channelsOfMailbox(mailboxId)) channel.notify?.(event, data);
    },

    /** Shutdown: ends every stream and ping (pings answer `{"changed": []}`) and refuses new ones. */
    close(): number {
      unfeed();
      unsignal();
      unwatch();
      unrecheck();
      return registry.closeAll();
    },
  };
}

export type Push = ReturnType<typeof createPush>;
