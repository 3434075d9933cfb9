/**
 * Devices (protocol.md §3): registration, the per-request gate, remote wipe, the user's and the admins' controls,
 * and the inactivity purge. Every app installation is a device record of one user; the same `X-Device-Id` used by
 * two users is two records.
 */
import { RIGHTS_MANAGEMENT } from '../protection/reader';
import { errors } from '../errors';
import type { Clock } from '../clock';
import type { AccessState, DeviceAccessRule, DeviceDescription, DeviceInventoryRow, DeviceInventorySort, DeviceRecord, Step, Store, TxStore, User } from '../store/types';
import { asciiLower, compareCodePoints } from '../store/inventory';
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

// ---- inventory paging (the admin center's device list) ------------------------------------------------------

/** What the inventory sorts by: Get-MobileDevice's columns. `lastSyncTime` is the last successful sync. */
export const DEVICE_SORT_KEYS = ['lastSyncTime', 'firstSyncTime', 'friendlyName', 'user', 'deviceModel', 'clientType', 'accessState'] as const;
export type DeviceSortKey = (typeof DEVICE_SORT_KEYS)[number];
export const DEFAULT_DEVICE_SORT = '-lastSyncTime';

export interface InventoryFilter {
  user?: string;
  clientType?: string;
  deviceModel?: string;
  accessState?: AccessState;
}

export interface InventoryPaging {
  limit?: number;
  cursor?: string;
  /** A DEVICE_SORT_KEYS key, `-` in front for descending. */
  sort?: string;
  q?: string;
}

type SortValue = string | number | null;

export interface ParsedSort {
  raw: string;
  key: DeviceSortKey;
  dir: 1 | -1;
}

export function parseSort(raw: string): ParsedSort {
  const desc = raw.startsWith('-');
  const key = desc ? raw.slice(1) : raw;
  if (!(DEVICE_SORT_KEYS as readonly string[]).includes(key)) {
    throw errors.invalidRequest(`sort must be one of ${DEVICE_SORT_KEYS.join(', ')}, with - in front for descending.`, [{ field: 'sort', message: 'unknown sort key' }]);
  }
  return { raw, key: key as DeviceSortKey, dir: desc ? -1 : 1 };
}

function sortValue(d: DeviceInventoryRow, accessState: string, key: DeviceSortKey): SortValue {
  switch (key) {
    case 'lastSyncTime':
      return d.lastSuccessSyncTime;
    case 'firstSyncTime':
      return d.firstSyncTime;
    // Folded and compared as the store's page query does (server/store/inventory.ts): both paths order alike.
    case 'friendlyName':
      return d.friendlyName === null ? null : asciiLower(d.friendlyName);
    case 'user':
      return asciiLower(d.username);
    case 'deviceModel':
      return d.deviceModel === null ? null : asciiLower(d.deviceModel);
    case 'clientType':
      return d.clientType === null ? null : asciiLower(d.clientType);
    case 'accessState':
      return accessState;
  }
}

/** A total order: null before any value, then the value (text in code point order, as SQL's), then the record id. */
function compareKeyed(ak: SortValue, aid: string, bk: SortValue, bid: string): number {
  if (ak !== bk) {
    if (ak === null) return -1;
    if (bk === null) return 1;
    if (typeof ak === 'string' && typeof bk === 'string') return compareCodePoints(ak, bk);
    if (ak < bk) return -1;
    if (ak > bk) return 1;
  }
  return aid < bid ? -1 : aid > bid ? 1 : 0;
}

/** The cursor: the last row's position (sort, key, id), opaque to clients (base64url JSON). */
function encodeCursor(sort: string, k: SortValue, id: string): string {
  return Buffer.from(JSON.stringify([sort, k, id])).toString('base64url');
}

function decodeCursor(cursor: string, sort: string, key: DeviceSortKey): { k: SortValue; id: string } {
  const bad = () => errors.invalidRequest('cursor is not one this list answered (start again without it).', [{ field: 'cursor', message: 'not a cursor of this list' }]);
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  if (!Array.isArray(parsed) || parsed.length !== 3) throw bad();
  const [s, k, id] = parsed as unknown[];
  if (s !== sort) throw errors.invalidRequest('cursor belongs to another sort order (start again without it).', [{ field: 'cursor', message: 'another sort order' }]);
  // The key's type is the sort key's: the store compares it with a column (a time is a whole number of ms).
  const timed = key === 'lastSyncTime' || key === 'firstSyncTime';
  if (typeof id !== 'string' || !(k === null || (timed ? Number.isSafeInteger(k) : typeof k === 'string'))) throw bad();
  return { k: k as SortValue, id };
}

type Keyed<R> = { d: R; a: EffectiveAccess; k: SortValue };

/**
 * The inventory decided in memory, for what the store cannot page (an access state is computed from the tenant's
 * rules, not stored): filters `rows` by access state and `q` (`emails`: the owners' addresses by user id), orders
 * them when `ordered`, and answers the `limit` after `after` (every row without `limit`), the filtered total, and
 * whether more follow. The store's page query (`devices.inventoryPage`) answers the same pages.
 */
export function inventoryInMemory<R extends DeviceInventoryRow>(
  rows: Array<{ d: R; a: EffectiveAccess }>,
  o: { emails: ReadonlyMap<string, string>; q?: string; accessState?: AccessState; sort: ParsedSort; after?: { k: SortValue; id: string }; limit?: number; ordered: boolean },
): { page: Array<Keyed<R>>; total: number; more: boolean } {
  const { sort, after, limit } = o;
  if (o.accessState !== undefined) rows = rows.filter(({ a }) => a.state === o.accessState);
  if (o.q !== undefined && o.q !== '') {
    // ASCII case folding, as the store's query folds (server/store/inventory.ts).
    const needle = asciiLower(o.q);
    rows = rows.filter(({ d }) =>
      [d.friendlyName, d.deviceId, d.deviceModel, d.username].some((f) => f !== null && asciiLower(f).includes(needle)) ||
      asciiLower(o.emails.get(d.userId) ?? '').includes(needle),
    );
  }
  const total = rows.length;
  let keyed = rows.map((r) => ({ ...r, k: sortValue(r.d, r.a.state, sort.key) }));
  if (o.ordered || after !== undefined) keyed.sort((x, y) => sort.dir * compareKeyed(x.k, x.d.id, y.k, y.d.id));
  if (after) keyed = keyed.filter((r) => sort.dir * compareKeyed(r.k, r.d.id, after.k, after.id) > 0);
  if (limit === undefined) return { page: keyed, total, more: false };
  return { page: keyed.slice(0, limit), total, more: keyed.length > limit };
}

export function createDeviceService(opts: DeviceServiceOptions) {
  const { store, clock, signals } = opts;
  /** record id → last-seen times not yet written. */
  const pendingSeen = new Map<string, { attempt: number; success: number | null }>();
  /** The previous flush's write: flushes write one after another, so an older batch never lands after a newer one. */
  let previousFlush: Promise<unknown> = Promise.resolve();

  /**
   * Writes the buffered last-seen times; resolves with how many devices it wrote once they (and every earlier
   * flush's) are committed, so a caller that flushes before reading last-seen times reads current ones.
   */
  function flushLastSeen(): Promise<number> {
    const batch = [...pendingSeen.entries()];
    pendingSeen.clear();
    const write = previousFlush.then(() =>
      batch.length === 0
        ? undefined
        : store.run(function* (tx) {
            for (const [id, seen] of batch) yield* tx.devices.touch(id, seen.attempt, seen.success);
          }),
    );
    previousFlush = write.catch(() => undefined); // a failed flush is its caller's to report; the next one still runs
    return write.then(() => batch.length);
  }

  /** A tenant's access rules and default: what a device's effective access is decided by. */
  interface TenantAccess {
    rules: DeviceAccessRule[];
    defaultState: AccessState;
  }

  // One read after the other: the first may check the hot cache's data version (server/store/cached.ts), and two
  // reads at once would both check it.
  async function tenantAccess(tenantId: string): Promise<TenantAccess> {
    const rules = await store.deviceAccess.rules(tenantId);
    return { rules, defaultState: await store.deviceAccess.defaultState(tenantId) };
  }

  async function access(device: DeviceRecord, tenantId: string): Promise<EffectiveAccess> {
    const t = await tenantAccess(tenantId);
    return effectiveAccess(device, t.rules, t.defaultState);
  }

  /** The device as the API shows it: what Exchange's Get-MobileDevice shows, plus the wipe's timestamps. */
  function viewOf(device: DeviceRecord, a: EffectiveAccess, username?: string) {
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

  async function view(device: DeviceRecord, tenantId: string, username?: string) {
    return viewOf(device, await access(device, tenantId), username);
  }

  /** `view` of each device of one tenant (its access rules read once). */
  async function views(devices: ReadonlyArray<DeviceRecord & { username?: string }>, tenantId: string) {
    const t = await tenantAccess(tenantId);
    return devices.map((d) => viewOf(d, effectiveAccess(d, t.rules, t.defaultState), d.username));
  }

  /**
   * What conditional access knows of the device, for admins: its MDM's last word on compliance and its app's
   * standing with the app protection policy (server/access/).
   */
  async function withAccessState<V extends object>(v: V, device: DeviceRecord, tenantId: string) {
    const [compliance, app] = await Promise.all([store.access.compliance(tenantId, device.userId, device.deviceId), store.access.appState(tenantId, device.userId, device.deviceId)]);
    return {
      ...v,
      compliance: compliance
        ? { state: compliance.state, reasons: compliance.reasons, expiresAt: iso(compliance.expiresAt), partner: compliance.partner, noncompliantSince: iso(compliance.noncompliantSince), updatedAt: iso(compliance.updatedAt) }
        : { state: 'unknown' as const, reasons: [], expiresAt: null, partner: null, noncompliantSince: null, updatedAt: null },
      appProtection: app
        ? { policyId: app.policyId, lastCheckInAt: iso(app.lastCheckInAt), appVersion: app.appVersion, osVersion: app.osVersion, selectiveWipe: app.selectiveWipe, selectiveWipeReason: app.selectiveWipeReason }
        : null,
    };
  }

  /** Appends one audit entry inside the caller's unit, so it commits (or rolls back) with the change it records. */
  function* audit(
    tx: TxStore,
    actor: Actor,
    now: number,
    action: string,
    targetType: string,
    targetId: string | null,
    details: Record<string, unknown> = {},
  ): Step<void> {
    yield* tx.audit.append({ tenantId: actor.tenantId, at: now, actorId: actor.id, actorName: actor.name, action, targetType, targetId, details });
  }

  function cut(device: DeviceRecord, reason: CutReason) {
    signals.cut({ userId: device.userId, deviceId: device.deviceId, recordId: device.id, reason });
  }

  /** Ends a device's partnership in the store: its tokens, its record (and with it its sync state). */
  function* removeRecord(tx: TxStore, device: DeviceRecord, reason: CutReason, now: number): Step<void> {
    yield* tx.refreshTokens.revokeForDevice(device.userId, device.deviceId, `device ${reason}`, now);
    yield* tx.devices.delete(device.id);
  }

  /** After `removeRecord` committed: its buffered last-seen times go, and so do its live channels. */
  function removed(device: DeviceRecord, reason: CutReason) {
    pendingSeen.delete(device.id);
    cut(device, reason);
  }

  /** Whether a request may proceed for this device (its wipe and access state); the record when it may. */
  async function admit(device: DeviceRecord, tenantId: string, o: { allowPendingWipe?: boolean }): Promise<DeviceRecord> {
    if (device.wipeState === 'pending' && !o.allowPendingWipe) {
      throw errors.wipeRequested(WIPE);
    }
    if (device.wipeState === 'acknowledged' || device.wipeState === 'failed') {
      throw errors.deviceWiped();
    }
    if (device.wipeState === 'none') {
      const a = await access(device, tenantId);
      if (a.state === 'blocked') throw errors.deviceBlocked(a.reason);
      if (a.state === 'quarantined') throw errors.deviceQuarantined(a.reason);
    }
    return device;
  }

  /** The admin's own tenant only: another tenant's device is simply not found. */
  function inTenant(actor: Actor, device: DeviceRecord | undefined, owner: User | undefined): DeviceRecord {
    if (!device || !owner || owner.tenantId !== actor.tenantId) throw errors.notFound('No such device.');
    return device;
  }

  async function adminDevice(actor: Actor, id: string): Promise<DeviceRecord> {
    const device = await store.devices.byId(id);
    return inTenant(actor, device, device && (await store.users.byId(device.userId)));
  }

  /** `adminDevice` inside a unit: what the unit then does is decided on the record as it is in that transaction. */
  function* adminDeviceIn(tx: TxStore, actor: Actor, id: string): Step<DeviceRecord> {
    const device = yield* tx.devices.byId(id);
    return inTenant(actor, device, device && (yield* tx.users.byId(device.userId)));
  }

  return {
    view,
    views,
    access,

    /**
     * Checks that a request may proceed for this device and returns its record. `allowPendingWipe` is for the wipe
     * acknowledgement itself, the one call a device with a pending wipe must still be able to make.
     */
    async gate(userId: string, tenantId: string, deviceId: string, o: { allowPendingWipe?: boolean } = {}): Promise<DeviceRecord> {
      const device = await store.devices.byUserAndDeviceId(userId, deviceId);
      if (!device) throw errors.deviceNotRegistered();
      return admit(device, tenantId, o);
    },

    /** The gate for calls that need no registered device: undefined when it is not registered (one read, not two). */
    async gateIfRegistered(userId: string, tenantId: string, deviceId: string): Promise<DeviceRecord | undefined> {
      const device = await store.devices.byUserAndDeviceId(userId, deviceId);
      return device && admit(device, tenantId, {});
    },

    /** Notes that the device was seen (buffered; see LAST_SEEN_FLUSH_MS). */
    touch(device: DeviceRecord, success: boolean): void {
      const now = clock.now();
      const prior = pendingSeen.get(device.id);
      pendingSeen.set(device.id, { attempt: now, success: success ? now : (prior?.success ?? null) });
    },

    flushLastSeen,

    register(user: User, deviceId: string, description: DeviceDescription): Promise<{ device: DeviceRecord; created: boolean }> {
      const now = clock.now();
      const max = opts.maxDevicesPerUser;
      return store.run(function* (tx) {
        const existing = yield* tx.devices.byUserAndDeviceId(user.id, deviceId);
        if (existing) {
          if (existing.wipeState === 'pending') {
            throw errors.wipeRequested(WIPE);
          }
          if (existing.wipeState !== 'none') {
            throw errors.deviceWiped('This device has been wiped; an administrator must remove it before it can register again.');
          }
          // Descriptive fields only: re-registering never changes the access state or the wipe.
          yield* tx.devices.updateDescription(existing.id, description, now);
          // What the device may see of protected mail depends on this capability (server/protection/): when it
          // changes, the device's replica was built for the other answer, so its tokens must start over (410).
          if (existing.capabilities.includes(RIGHTS_MANAGEMENT) !== description.capabilities.includes(RIGHTS_MANAGEMENT)) {
            yield* tx.devices.bumpEpoch(existing.id, now);
          }
          return { device: (yield* tx.devices.byId(existing.id))!, created: false };
        }
        if ((yield* tx.devices.countByUser(user.id)) >= max) {
          throw errors.deviceLimitReached(max);
        }
        return { device: yield* tx.devices.create(user.id, deviceId, description, now), created: true };
      });
    },

    listOwn(userId: string): Promise<DeviceRecord[]> {
      return store.devices.listByUser(userId);
    },

    /** The user removes one of their devices. A pending wipe cannot be escaped this way (409), nor a done one (403). */
    async removeOwn(userId: string, deviceId: string): Promise<void> {
      const now = clock.now();
      // The check and the removal in one unit: a wipe requested meanwhile is never escaped.
      const device = await store.run(function* (tx) {
        const device = yield* tx.devices.byUserAndDeviceId(userId, deviceId);
        if (!device) throw errors.notFound('No such device.');
        if (device.wipeState === 'pending') throw errors.wipePending();
        if (device.wipeState !== 'none') {
          throw errors.deviceWiped('A wiped device can be removed only by an administrator.');
        }
        yield* removeRecord(tx, device, 'removed', now);
        return device;
      });
      removed(device, 'removed');
    },

    /**
     * The user wipes one of their own devices (a lost phone; "My devices", server/web/accountRoutes.ts): the same
     * pending wipe an admin's is, audited with the user as the actor. Another user's device is not found.
     */
    async wipeOwn(user: User, recordId: string) {
      const now = clock.now();
      const actor: Actor = { id: user.id, name: user.username, tenantId: user.tenantId };
      const updated = await store.run(function* (tx) {
        const device = yield* tx.devices.byId(recordId);
        if (!device || device.userId !== user.id) throw errors.notFound('No such device.');
        if (device.wipeState !== 'none') throw errors.invalidRequest(`A wipe is already ${device.wipeState === 'pending' ? 'pending' : 'done'} for this device.`);
        yield* tx.devices.setWipe(device.id, 'pending', { requestedAt: now, requestedBy: user.username }, now);
        yield* audit(tx, actor, now, 'device.wipe', 'device', device.id, { userId: device.userId, deviceId: device.deviceId, requestedBy: 'owner' });
        return (yield* tx.devices.byId(device.id))!;
      });
      cut(updated, 'wipeRequested');
      return view(updated, user.tenantId);
    },

    /** The device confirms the wipe: every token bound to it dies, its sync state is dropped, it stays wiped. */
    async acknowledgeWipe(device: DeviceRecord, status: 'ok' | 'failed'): Promise<DeviceRecord> {
      if (device.wipeState !== 'pending') throw errors.invalidRequest('No wipe is pending for this device.');
      const now = clock.now();
      const acknowledged = await store.run(function* (tx) {
        yield* tx.devices.setWipe(device.id, status === 'ok' ? 'acknowledged' : 'failed', { acknowledgedAt: now }, now);
        yield* tx.devices.bumpEpoch(device.id, now);
        yield* tx.refreshTokens.revokeForDevice(device.userId, device.deviceId, 'device wiped', now);
        return (yield* tx.devices.byId(device.id))!;
      });
      cut(device, 'wiped');
      return acknowledged;
    },

    /** A refresh or password grant for a device-bound token: blocked or wiped devices get no tokens. */
    async grantCheck(userId: string, deviceId: string): Promise<{ wipe?: typeof WIPE; refuse?: string }> {
      const device = await store.devices.byUserAndDeviceId(userId, deviceId);
      if (!device) return {};
      if (device.wipeState === 'pending') return { wipe: WIPE };
      if (device.wipeState !== 'none') return { refuse: 'this device has been wiped' };
      const owner = await store.users.byId(userId);
      if (owner && (await access(device, owner.tenantId)).state === 'blocked') return { refuse: 'this device is blocked' };
      return {};
    },

    // ---- administration -------------------------------------------------------------------------------------

    /**
     * The admin inventory (`GET /admin/v1/devices`): every device of the admin's tenant with its owner's username,
     * filtered by `user` (a username or id; one not of the tenant: nothing), `clientType`, `deviceModel`, the
     * effective `accessState` and `q` (a substring of the friendly name, device id, model, or the owner's username or
     * address, ASCII letters in either case); sorted by `sort` (DEVICE_SORT_KEYS, `-` for descending, text keys
     * ASCII case folded, ties by record id); one page of `limit` after `cursor` (keyset: a device added or removed
     * meanwhile never repeats or skips one). `total` counts the whole filtered set; `nextCursor` is null on the last
     * page. Without `limit` every device is answered, in store order unless `sort` is given, as before paging existed.
     *
     * A page whose order and filters are all stored columns (every sort but `accessState`, no `accessState` filter)
     * is one keyset query in the store (`devices.inventoryPage`, an index walk for the orders on device columns) and
     * a count; its access states are decided for its own devices only (the tenant's rules read once), whose full
     * record, compliance and app protection state are then read by id. Any other page reads the light rows of every
     * device (`devices.inventoryRows`) and decides in memory (`inventoryInMemory`); the two answer the same pages and
     * read each other's cursors.
     */
    async inventoryPage(actor: Actor, filter: InventoryFilter & InventoryPaging) {
      await flushLastSeen(); // admins see current last-seen times
      const sort = parseSort(filter.sort ?? DEFAULT_DEVICE_SORT);
      const after = filter.cursor === undefined ? undefined : decodeCursor(filter.cursor, sort.raw, sort.key);
      let userId: string | undefined;
      if (filter.user !== undefined) {
        const u = (await store.users.byUsername(filter.user)) ?? (await store.users.byId(filter.user));
        if (!u || u.tenantId !== actor.tenantId) return { devices: [], total: 0, nextCursor: null };
        userId = u.id;
      }
      const limit = filter.limit;
      const storeFilter = { tenantId: actor.tenantId, userId, clientType: filter.clientType, deviceModel: filter.deviceModel };
      const t = await tenantAccess(actor.tenantId);
      const decide = <R extends DeviceInventoryRow>(d: R) => ({ d, a: effectiveAccess(d, t.rules, t.defaultState) });
      let result: { page: Array<Keyed<DeviceInventoryRow | (DeviceRecord & { username: string })>>; total: number; more: boolean };
      if (limit !== undefined && sort.key !== 'accessState' && filter.accessState === undefined) {
        const query = { ...storeFilter, q: filter.q };
        const storeSort: DeviceInventorySort = { key: sort.key, dir: sort.dir };
        // One row more than the page tells whether another page follows.
        const found = await store.devices.inventoryPage(query, storeSort, after, limit + 1);
        const total = await store.devices.inventoryCount(query);
        const page = found.slice(0, limit).map((d) => ({ ...decide(d), k: sortValue(d, '', sort.key) }));
        result = { page, total, more: found.length > limit };
      } else {
        // A page reads the light rows of every device and the full records of its own; no limit reads every record.
        const found: Array<DeviceInventoryRow | (DeviceRecord & { username: string })> =
          limit !== undefined ? await store.devices.inventoryRows(storeFilter) : await store.devices.list(storeFilter);
        const emails =
          filter.q !== undefined && filter.q !== ''
            ? new Map((await store.users.list()).filter((u) => u.tenantId === actor.tenantId).map((u) => [u.id, u.email]))
            : new Map<string, string>();
        result = inventoryInMemory(found.map(decide), {
          emails,
          q: filter.q,
          accessState: filter.accessState,
          sort,
          after,
          limit,
          ordered: limit !== undefined || filter.sort !== undefined,
        });
      }
      const last = result.page[result.page.length - 1];
      const nextCursor = result.more && last ? encodeCursor(sort.raw, last.k, last.d.id) : null;
      const shown = [];
      for (const { d, a } of result.page) {
        const record = 'epoch' in d ? d : await store.devices.byId(d.id);
        if (!record) continue; // removed since the rows were read
        shown.push(await withAccessState(viewOf(record, a, d.username), record, actor.tenantId));
      }
      return { devices: shown, total: result.total, nextCursor };
    },

    async adminDevice(actor: Actor, id: string) {
      const device = await adminDevice(actor, id);
      return withAccessState(await view(device, actor.tenantId), device, actor.tenantId);
    },

    async act(actor: Actor, id: string, action: AdminAction) {
      const now = clock.now();
      // The record is read in the unit that acts on it: a wipe is requested once, never twice.
      const { device, updated } = await store.run(function* (tx) {
        const device = yield* adminDeviceIn(tx, actor, id);
        switch (action) {
          case 'allow':
          case 'release': // releasing from quarantine is an individual allow, so a quarantine rule no longer applies
            yield* tx.devices.setAdminDecision(device.id, 'allowed', now);
            break;
          case 'block':
            yield* tx.devices.setAdminDecision(device.id, 'blocked', now);
            yield* tx.refreshTokens.revokeForDevice(device.userId, device.deviceId, 'device blocked', now);
            break;
          case 'quarantine': // tokens stay valid, so the device resumes as soon as it is released
            yield* tx.devices.setAdminDecision(device.id, 'quarantined', now);
            break;
          case 'wipe':
            if (device.wipeState !== 'none') throw errors.invalidRequest(`A wipe is already ${device.wipeState === 'pending' ? 'pending' : 'done'} for this device.`);
            yield* tx.devices.setWipe(device.id, 'pending', { requestedAt: now, requestedBy: actor.name }, now);
            break;
          case 'resync':
            yield* tx.devices.bumpEpoch(device.id, now);
            break;
        }
        yield* audit(tx, actor, now, `device.${action}`, 'device', device.id, { userId: device.userId, deviceId: device.deviceId });
        return { device, updated: (yield* tx.devices.byId(device.id))! };
      });
      if (action === 'block') cut(device, 'blocked');
      if (action === 'quarantine') cut(device, 'quarantined');
      if (action === 'wipe') cut(device, 'wipeRequested');
      return view(updated, actor.tenantId);
    },

    /** An admin removes a device record. A pending wipe is never cancelled by removal (409); a wiped one may go. */
    async removeByAdmin(actor: Actor, id: string): Promise<void> {
      const now = clock.now();
      const device = await store.run(function* (tx) {
        const device = yield* adminDeviceIn(tx, actor, id);
        if (device.wipeState === 'pending') throw errors.wipePending();
        yield* audit(tx, actor, now, 'device.remove', 'device', device.id, { userId: device.userId, deviceId: device.deviceId, wipeState: device.wipeState });
        yield* removeRecord(tx, device, 'removed', now);
        return device;
      });
      removed(device, 'removed');
    },

    audit,

    /** Purges partnerships unseen for the inactivity period (never one with a wipe pending). */
    async purgeInactive(): Promise<DeviceRecord[]> {
      await flushLastSeen(); // a device seen a moment ago must not be purged on stale times
      const cutoff = clock.now() - opts.inactivityMs;
      const stale = await store.devices.inactiveSince(cutoff);
      for (const device of stale) {
        const now = clock.now();
        await store.run(function* (tx) {
          const owner = yield* tx.users.byId(device.userId);
          if (owner) yield* audit(tx, { id: null, name: 'system', tenantId: owner.tenantId }, now, 'device.purge', 'device', device.id, { userId: device.userId, deviceId: device.deviceId, reason: 'inactive' });
          yield* removeRecord(tx, device, 'purged', now);
        });
        removed(device, 'purged');
      }
      return stale;
    },
  };
}

export type DeviceService = ReturnType<typeof createDeviceService>;
