/**
 * Devices (protocol.md §3): registration, the per-request gate, remote wipe, the user's and the admins' controls,
 * and the inactivity purge. Every app installation is a device record of one user; the same `X-Device-Id` used by
 * two users is two records.
 */
import { errors } from '../errors';
import type { Clock } from '../clock';
import type { AccessState, DeviceDescription, DeviceRecord, Store, User } from '../store/types';
import { effectiveAccess, type EffectiveAccess } from './access';
import type { CutReason, DeviceSignals } from './signals';

export const DEVICE_ID_PATTERN = /^[A-Za-z0-9_-]{16,64}$/;

/**
 * Last-seen times are buffered in memory and written by `flushLastSeen` (a timer, once a minute, in one
 * transaction for all devices): no request — a sync poll least of all — costs a write for them. A crash loses at
 * most a minute of last-seen precision, never data.
 */
export const LAST_SEEN_FLUSH_MS = 60_000;

export const WIPE = { scope: 'account' } as const;

export interface DeviceServiceOptions {
  store: Store;
  clock: Clock;
  signals: DeviceSignals;
  maxDevicesPerUser: number;
  inactivityMs: number;
}

export interface Actor {
  id: string | null;
  name: string;
  tenantId: string;
}

export type AdminAction = 'allow' | 'block' | 'quarantine' | 'release' | 'wipe' | 'resync';

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export function createDeviceService(opts: DeviceServiceOptions) {
  const { store, clock, signals } = opts;
  /** record id → last-seen times not yet written. */
  const pendingSeen = new Map<string, { attempt: number; success: number | null }>();

  function flushLastSeen(): number {
    if (pendingSeen.size === 0) return 0;
    const batch = [...pendingSeen.entries()];
    pendingSeen.clear();
    store.transaction(() => {
      for (const [id, seen] of batch) store.devices.touch(id, seen.attempt, seen.success);
    });
    return batch.length;
  }

  function access(device: DeviceRecord, tenantId: string): EffectiveAccess {
    return effectiveAccess(device, store.deviceAccess.rules(tenantId), store.deviceAccess.defaultState(tenantId));
  }

  /** The device as the API shows it: what Exchange's Get-MobileDevice shows, plus the wipe's timestamps. */
  function view(device: DeviceRecord, tenantId: string, username?: string) {
    const a = access(device, tenantId);
    return {
      id: device.id,
      deviceId: device.deviceId,
      userId: device.userId,
      ...(username !== undefined ? { username } : {}),
      friendlyName: device.friendlyName,
      deviceType: device.deviceType,
      deviceModel: device.deviceModel,
      deviceOS: device.deviceOS,
      clientType: device.clientType,
      clientVersion: device.clientVersion,
      userAgent: device.userAgent,
      capabilities: device.capabilities,
      firstSyncTime: iso(device.firstSyncTime),
      lastSyncAttemptTime: iso(device.lastSyncAttemptTime),
      lastSuccessSyncTime: iso(device.lastSuccessSyncTime),
      accessState: a.state,
      accessStateReason: a.reason,
      wipeState: device.wipeState,
      wipeRequestedAt: iso(device.wipeRequestedAt),
      wipeAcknowledgedAt: iso(device.wipeAcknowledgedAt),
    };
  }

  function audit(actor: Actor, action: string, targetType: string, targetId: string | null, details: Record<string, unknown> = {}) {
    store.audit.append({ tenantId: actor.tenantId, at: clock.now(), actorId: actor.id, actorName: actor.name, action, targetType, targetId, details });
  }

  function cut(device: DeviceRecord, reason: CutReason) {
    signals.cut({ userId: device.userId, deviceId: device.deviceId, recordId: device.id, reason });
  }

  /** Ends a device's partnership: its tokens, its channels, its record (and with it its sync state). */
  function removeRecord(device: DeviceRecord, reason: CutReason) {
    store.transaction(() => {
      store.refreshTokens.revokeForDevice(device.userId, device.deviceId, `device ${reason}`, clock.now());
      store.devices.delete(device.id);
    });
    pendingSeen.delete(device.id);
    cut(device, reason);
  }

  /** Whether a request may proceed for this device (its wipe and access state); the record when it may. */
  function admit(device: DeviceRecord, tenantId: string, o: { allowPendingWipe?: boolean }): DeviceRecord {
    if (device.wipeState === 'pending' && !o.allowPendingWipe) {
      throw errors.wipeRequested(WIPE);
    }
    if (device.wipeState === 'acknowledged' || device.wipeState === 'failed') {
      throw errors.deviceWiped();
    }
    if (device.wipeState === 'none') {
      const a = access(device, tenantId);
      if (a.state === 'blocked') throw errors.deviceBlocked(a.reason);
      if (a.state === 'quarantined') throw errors.deviceQuarantined(a.reason);
    }
    return device;
  }

  /** The admin's own tenant only: another tenant's device is simply not found. */
  function adminDevice(actor: Actor, id: string): DeviceRecord {
    const device = store.devices.byId(id);
    const owner = device && store.users.byId(device.userId);
    if (!device || !owner || owner.tenantId !== actor.tenantId) throw errors.notFound('No such device.');
    return device;
  }

  return {
    view,
    access,

    /**
     * Checks that a request may proceed for this device and returns its record. `allowPendingWipe` is for the wipe
     * acknowledgement itself, the one call a device with a pending wipe must still be able to make.
     */
    gate(userId: string, tenantId: string, deviceId: string, o: { allowPendingWipe?: boolean } = {}): DeviceRecord {
      const device = store.devices.byUserAndDeviceId(userId, deviceId);
      if (!device) throw errors.deviceNotRegistered();
      return admit(device, tenantId, o);
    },

    /** The gate for calls that need no registered device: undefined when it is not registered (one read, not two). */
    gateIfRegistered(userId: string, tenantId: string, deviceId: string): DeviceRecord | undefined {
      const device = store.devices.byUserAndDeviceId(userId, deviceId);
      return device && admit(device, tenantId, {});
    },

    /** Notes that the device was seen (buffered; see LAST_SEEN_FLUSH_MS). */
    touch(device: DeviceRecord, success: boolean): void {
      const now = clock.now();
      const prior = pendingSeen.get(device.id);
      pendingSeen.set(device.id, { attempt: now, success: success ? now : (prior?.success ?? null) });
    },

    flushLastSeen,

    register(user: User, deviceId: string, description: DeviceDescription): { device: DeviceRecord; created: boolean } {
      return store.transaction(() => {
        const existing = store.devices.byUserAndDeviceId(user.id, deviceId);
        if (existing) {
          if (existing.wipeState === 'pending') {
            throw errors.wipeRequested(WIPE);
          }
          if (existing.wipeState !== 'none') {
            throw errors.deviceWiped('This device has been wiped; an administrator must remove it before it can register again.');
          }
          // Descriptive fields only: re-registering never changes the access state or the wipe.
          store.devices.updateDescription(existing.id, description, clock.now());
          return { device: store.devices.byId(existing.id)!, created: false };
        }
        if (store.devices.countByUser(user.id) >= opts.maxDevicesPerUser) {
          throw errors.deviceLimitReached(opts.maxDevicesPerUser);
        }
        return { device: store.devices.create(user.id, deviceId, description, clock.now()), created: true };
      });
    },

    listOwn(userId: string): DeviceRecord[] {
      return store.devices.listByUser(userId);
    },

    /** The user removes one of their devices. A pending wipe cannot be escaped this way (409), nor a done one (403). */
    removeOwn(userId: string, deviceId: string): void {
      const device = store.devices.byUserAndDeviceId(userId, deviceId);
      if (!device) throw errors.notFound('No such device.');
      if (device.wipeState === 'pending') throw errors.wipePending();
      if (device.wipeState !== 'none') {
        throw errors.deviceWiped('A wiped device can be removed only by an administrator.');
      }
      removeRecord(device, 'removed');
    },

    /** The device confirms the wipe: every token bound to it dies, its sync state is dropped, it stays wiped. */
    acknowledgeWipe(device: DeviceRecord, status: 'ok' | 'failed'): DeviceRecord {
      if (device.wipeState !== 'pending') throw errors.invalidRequest('No wipe is pending for this device.');
      const now = clock.now();
      store.transaction(() => {
        store.devices.setWipe(device.id, status === 'ok' ? 'acknowledged' : 'failed', { acknowledgedAt: now }, now);
        store.devices.bumpEpoch(device.id, now);
        store.refreshTokens.revokeForDevice(device.userId, device.deviceId, 'device wiped', now);
      });
      cut(device, 'wiped');
      return store.devices.byId(device.id)!;
    },

    /** A refresh or password grant for a device-bound token: blocked or wiped devices get no tokens. */
    grantCheck(userId: string, deviceId: string): { wipe?: typeof WIPE; refuse?: string } {
      const device = store.devices.byUserAndDeviceId(userId, deviceId);
      if (!device) return {};
      if (device.wipeState === 'pending') return { wipe: WIPE };
      if (device.wipeState !== 'none') return { refuse: 'this device has been wiped' };
      const owner = store.users.byId(userId);
      if (owner && access(device, owner.tenantId).state === 'blocked') return { refuse: 'this device is blocked' };
      return {};
    },

    // ---- administration -------------------------------------------------------------------------------------

    inventory(actor: Actor, filter: { user?: string; clientType?: string; deviceModel?: string; accessState?: AccessState }) {
      flushLastSeen(); // admins see current last-seen times
      let userId: string | undefined;
      if (filter.user !== undefined) {
        const u = store.users.byUsername(filter.user) ?? store.users.byId(filter.user);
        if (!u || u.tenantId !== actor.tenantId) return [];
        userId = u.id;
      }
      return store.devices
        .list({ tenantId: actor.tenantId, userId, clientType: filter.clientType, deviceModel: filter.deviceModel })
        .map((d) => view(d, actor.tenantId, d.username))
        .filter((v) => filter.accessState === undefined || v.accessState === filter.accessState);
    },

    adminDevice(actor: Actor, id: string) {
      return view(adminDevice(actor, id), actor.tenantId);
    },

    act(actor: Actor, id: string, action: AdminAction) {
      const device = adminDevice(actor, id);
      const now = clock.now();
      store.transaction(() => {
        switch (action) {
          case 'allow':
          case 'release': // releasing from quarantine is an individual allow, so a quarantine rule no longer applies
            store.devices.setAdminDecision(device.id, 'allowed', now);
            break;
          case 'block':
            store.devices.setAdminDecision(device.id, 'blocked', now);
            store.refreshTokens.revokeForDevice(device.userId, device.deviceId, 'device blocked', now);
            break;
          case 'quarantine': // tokens stay valid, so the device resumes as soon as it is released
            store.devices.setAdminDecision(device.id, 'quarantined', now);
            break;
          case 'wipe':
            if (device.wipeState !== 'none') throw errors.invalidRequest(`A wipe is already ${device.wipeState === 'pending' ? 'pending' : 'done'} for this device.`);
            store.devices.setWipe(device.id, 'pending', { requestedAt: now, requestedBy: actor.name }, now);
            break;
          case 'resync':
            store.devices.bumpEpoch(device.id, now);
            break;
        }
        audit(actor, `device.${action}`, 'device', device.id, { userId: device.userId, deviceId: device.deviceId });
      });
      if (action === 'block') cut(device, 'blocked');
      if (action === 'quarantine') cut(device, 'quarantined');
      if (action === 'wipe') cut(device, 'wipeRequested');
      return view(store.devices.byId(device.id)!, actor.tenantId);
    },

    /** An admin removes a device record. A pending wipe is never cancelled by removal (409); a wiped one may go. */
    removeByAdmin(actor: Actor, id: string): void {
      const device = adminDevice(actor, id);
      if (device.wipeState === 'pending') throw errors.wipePending();
      store.transaction(() => {
        audit(actor, 'device.remove', 'device', device.id, { userId: device.userId, deviceId: device.deviceId, wipeState: device.wipeState });
        removeRecord(device, 'removed');
      });
    },

    audit,

    /** Purges partnerships unseen for the inactivity period (never one with a wipe pending). */
    purgeInactive(): DeviceRecord[] {
      flushLastSeen(); // a device seen a moment ago must not be purged on stale times
      const cutoff = clock.now() - opts.inactivityMs;
      const stale = store.devices.inactiveSince(cutoff);
      for (const device of stale) {
        const owner = store.users.byId(device.userId);
        store.transaction(() => {
          if (owner) audit({ id: null, name: 'system', tenantId: owner.tenantId }, 'device.purge', 'device', device.id, { userId: device.userId, deviceId: device.deviceId, reason: 'inactive' });
          removeRecord(device, 'purged');
        });
      }
      return stale;
    },
  };
}

export type DeviceService = ReturnType<typeof createDeviceService>;
