/**
 * The hot cache: the records every authenticated call reads before it does anything — the user row, the sign-in's
 * live head, the device record, the tenant's access rules and default — kept in memory, so a no-change poll costs
 * the SQLite statements of its own answer and one `PRAGMA data_version`.
 *
 * A decorator over `Store` rather than a part of the SQLite store: every caller of the wrapped store gets it without
 * a change (authentication, the device gate, the grant checks, push's re-checks, admin), the SQLite store stays a
 * plain mapping of rows, and a second backend gets the same cache by implementing `onInvalidate` and `dataVersion`.
 *
 * Correct to the request:
 * - In-process writes: the store announces what each committed write changed (`onInvalidate`, emitted after the
 *   commit, at once outside a transaction, never for a rollback) and the entry is dropped synchronously, before the
 *   writer's next line runs — so the very next call reads it afresh. Writes through the unwrapped store count too.
 * - Other connections (the admin CLI, other workers): SQLite's `data_version` moves when another connection
 *   commits. It is read before a cached entry is used, at most once per request and once per turn of the event loop
 *   — a check is reused only if it was made after the request began (`beginRequest`; createApp wraps the
 *   authenticator, the first step of every authenticated request in either lane, with `perRequest`) and in the same
 *   turn (callers that are not requests: timers, push, the token endpoint) — and every entry is dropped when it moved.
 * - Inside a unit of work (`store.run`) nothing is cached or served from the cache: the unit's steps go to the store,
 *   because the unit may have written the very record (it is announced only at its commit), and a rolled-back read
 *   must not be remembered.
 * - A read that was under way when an invalidation arrived (possible on a backend whose reads wait, PostgreSQL) is
 *   answered but not remembered: every invalidation moves a generation counter, and a load stores its result only
 *   if the counter did not move while it waited.
 * - A sign-in's head is kept with its `expiresAt`, compared with the caller's clock on every use.
 *
 * Memory is bounded: each kind is a least-recently-used map with a cap; entries are frozen (shared between calls).
 */
import type { AccessConfigRecord, AccessState, AppProtectionState, DeviceAccessRule, DeviceCompliance, DeviceRecord, Invalidation, SignInLogEntry, Store, User, UserRisk } from './types';

export interface HotCacheLimits {
  users: number;
  signIns: number;
  devices: number;
  tenants: number;
}

/** About 20 MB of device records and 10 MB of users at the most; a sign-in's head is a few dozen bytes. */
export const DEFAULT_HOT_CACHE_LIMITS: HotCacheLimits = { users: 20_000, signIns: 50_000, devices: 20_000, tenants: 1_000 };

export interface HotCacheStats {
  hits: number;
  misses: number;
  /** `data_version` reads, and how many of them found another connection's commit (every entry dropped). */
  versionChecks: number;
  versionMoves: number;
  size: { users: number; signIns: number; devices: number; tenants: number };
}

export interface HotCache {
  /** A new request begins: the next cached read checks `data_version` again. */
  beginRequest(): void;
  /**
   * `fn` with `beginRequest` before each call. createApp wraps the authenticator, which every authenticated request
   * of either lane (Express, http/fastLane.ts) calls first.
   */
  perRequest<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R;
  /** Drops every entry. */
  clear(): void;
  stats(): HotCacheStats;
}

export type CachedStore = Store & { readonly hotCache: HotCache };

/** A map that forgets its least recently used entry beyond `cap` (Map keeps insertion order; a hit re-inserts). */
class Lru<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly cap: number) {}
  get size() {
    return this.map.size;
  }
  get(key: string): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }
  set(key: string, v: V) {
    this.map.delete(key);
    this.map.set(key, v);
    if (this.map.size > this.cap) this.map.delete(this.map.keys().next().value!);
  }
  delete(key: string) {
    this.map.delete(key);
  }
  clear() {
    this.map.clear();
  }
}

/** An answer that was "none" is cached too (an unknown id, a revoked sign-in), as this. */
const NONE = Symbol('none');
type Cached<T> = T | typeof NONE;

type Head = Readonly<{ deviceId: string | null; expiresAt: number }>;
interface TenantAccess {
  rules?: readonly DeviceAccessRule[];
  defaultState?: AccessState;
  /** The conditional-access document (NO_CONFIG: none stored). */
  accessConfig?: AccessConfigRecord;
}

/** "The tenant has no conditional-access document", remembered as this. */
const NO_CONFIG: AccessConfigRecord = Object.freeze({ tenantId: '', version: 0, doc: '', updatedAt: 0 });

const deviceKey = (userId: string, deviceId: string) => `${userId}\n${deviceId}`;

function frozenDevice(d: DeviceRecord): DeviceRecord {
  Object.freeze(d.capabilities);
  Object.freeze(d.viewSettings);
  return Object.freeze(d);
}

export function withHotCache(store: Store, limits: Partial<HotCacheLimits> = {}): CachedStore {
  const cap = { ...DEFAULT_HOT_CACHE_LIMITS, ...limits };
  const users = new Lru<Cached<User>>(cap.users);
  const signIns = new Lru<Cached<Head>>(cap.signIns);
  const devices = new Lru<Cached<DeviceRecord>>(cap.devices);
  const tenants = new Lru<TenantAccess>(cap.tenants);
  // Conditional access's per-call reads (server/access/service.ts): a device's compliance and app standing, a
  // user's risk, a session's sign-in. Invalidated with the device, the user and the sign-in they belong to.
  const compliance = new Lru<Cached<DeviceCompliance>>(cap.devices);
  const appStates = new Lru<Cached<AppProtectionState>>(cap.devices);
  const userRisks = new Lru<Cached<UserRisk>>(cap.users);
  const sessionSignIns = new Lru<Cached<SignInLogEntry>>(cap.signIns);
  const counts = { hits: 0, misses: 0, versionChecks: 0, versionMoves: 0 };

  const clear = () => {
    users.clear();
    signIns.clear();
    devices.clear();
    tenants.clear();
    compliance.clear();
    appStates.clear();
    userRisks.clear();
    sessionSignIns.clear();
  };

  // Moves on every invalidation: a load that saw it move while it waited does not remember its (possibly older) answer.
  let generation = 0;
  const unsubscribe = store.onInvalidate((changes: Invalidation[]) => {
    generation++;
    for (const c of changes) {
      switch (c.kind) {
        case 'user':
          users.delete(c.userId);
          userRisks.delete(c.userId);
          break;
        case 'signIn':
          signIns.delete(c.familyId);
          sessionSignIns.delete(c.familyId);
          break;
        case 'device':
          devices.delete(deviceKey(c.userId, c.deviceId));
          compliance.delete(deviceKey(c.userId, c.deviceId));
          appStates.delete(deviceKey(c.userId, c.deviceId));
          break;
        case 'tenantAccess':
          tenants.delete(c.tenantId);
          break;
        case 'all':
          clear();
          break;
      }
    }
  });

  // Another connection's commits: `data_version` is read before the first cached read of a request and of a turn of
  // the event loop, and everything goes when it moved.
  let version: number | undefined;
  let checked = false;
  let turnEnd: ReturnType<typeof setImmediate> | undefined;
  const endTurn = () => {
    checked = false;
    turnEnd = undefined;
  };
  const validate = async () => {
    if (checked) return;
    counts.versionChecks++;
    const v = await store.dataVersion();
    if (version !== undefined && v !== version) {
      counts.versionMoves++;
      generation++;
      clear();
    }
    version = v;
    checked = true;
    if (!turnEnd) {
      turnEnd = setImmediate(endTurn);
      turnEnd.unref();
    }
  };

  // The store's own reads, as they were when wrapped. One replaced since (a test double, instrumentation) is called
  // on every read instead: the cache fronts the store's reads, never a substitute for them.
  const own = {
    userById: store.users.byId,
    head: store.refreshTokens.head,
    liveHead: store.refreshTokens.liveHead,
    device: store.devices.byUserAndDeviceId,
    rules: store.deviceAccess.rules,
    defaultState: store.deviceAccess.defaultState,
    accessConfig: store.access.config,
    compliance: store.access.compliance,
    appState: store.access.appState,
    userRisk: store.access.userRisk,
    signInOfSession: store.access.signInOfSession,
  };

  /** The cached answer for `key`, or `load()`'s (remembered unless an invalidation arrived while it loaded). */
  async function cached<V>(lru: Lru<Cached<V>>, key: string, load: () => Promise<V | undefined>, freeze: (v: V) => V = (v) => Object.freeze(v) as V): Promise<V | undefined> {
    await validate();
    const hit = lru.get(key);
    if (hit !== undefined) {
      counts.hits++;
      return hit === NONE ? undefined : hit;
    }
    counts.misses++;
    const before = generation;
    const v = await load();
    if (generation === before) lru.set(key, v === undefined ? NONE : freeze(v));
    return v;
  }

  async function tenantAccess<K extends keyof TenantAccess>(tenantId: string, field: K, load: () => Promise<NonNullable<TenantAccess[K]>>): Promise<NonNullable<TenantAccess[K]>> {
    await validate();
    const entry = tenants.get(tenantId) ?? {};
    const hit = entry[field];
    if (hit !== undefined) {
      counts.hits++;
      return hit as NonNullable<TenantAccess[K]>;
    }
    counts.misses++;
    const before = generation;
    const v = await load();
    if (generation === before) tenants.set(tenantId, { ...(tenants.get(tenantId) ?? {}), [field]: v });
    return v;
  }

  const hotCache: HotCache = {
    beginRequest() {
      checked = false;
    },
    perRequest: (fn) => (...args) => {
      hotCache.beginRequest();
      return fn(...args);
    },
    clear,
    stats: () => ({ ...counts, size: { users: users.size, signIns: signIns.size, devices: devices.size, tenants: tenants.size } }),
  };

  const users$: Pick<Store['users'], 'byId'> = {
    byId(id) {
      if (store.users.byId !== own.userById) return store.users.byId(id);
      return cached(users, id, () => store.users.byId(id));
    },
  };
  const refreshTokens$: Pick<Store['refreshTokens'], 'liveHead'> = {
    liveHead(userId, familyId, now) {
      if (store.refreshTokens.liveHead !== own.liveHead || store.refreshTokens.head !== own.head) {
        return store.refreshTokens.liveHead(userId, familyId, now);
      }
      return cached<Head>(signIns, familyId, () => store.refreshTokens.head(userId, familyId)).then((head) => (head && head.expiresAt > now ? head : undefined));
    },
  };
  const devices$: Pick<Store['devices'], 'byUserAndDeviceId'> = {
    byUserAndDeviceId(userId, deviceId) {
      if (store.devices.byUserAndDeviceId !== own.device) return store.devices.byUserAndDeviceId(userId, deviceId);
      return cached(devices, deviceKey(userId, deviceId), () => store.devices.byUserAndDeviceId(userId, deviceId), frozenDevice);
    },
  };
  const deviceAccess$: Pick<Store['deviceAccess'], 'rules' | 'defaultState'> = {
    rules(tenantId) {
      if (store.deviceAccess.rules !== own.rules) return store.deviceAccess.rules(tenantId);
      return tenantAccess(tenantId, 'rules', async () => Object.freeze((await store.deviceAccess.rules(tenantId)).map((r) => Object.freeze(r)))) as Promise<DeviceAccessRule[]>;
    },
    defaultState(tenantId) {
      if (store.deviceAccess.defaultState !== own.defaultState) return store.deviceAccess.defaultState(tenantId);
      return tenantAccess(tenantId, 'defaultState', () => store.deviceAccess.defaultState(tenantId));
    },
  };

  // Keys: tenant, user and device ids never contain a newline, so `user\ndevice` is unambiguous (deviceKey).
  const access$: Pick<Store['access'], 'config' | 'compliance' | 'appState' | 'userRisk' | 'signInOfSession'> = {
    config(tenantId) {
      if (store.access.config !== own.accessConfig) return store.access.config(tenantId);
      return tenantAccess(tenantId, 'accessConfig', async () => Object.freeze((await store.access.config(tenantId)) ?? NO_CONFIG)).then((r) => (r === NO_CONFIG ? undefined : r));
    },
    compliance(tenantId, userId, deviceId) {
      if (store.access.compliance !== own.compliance) return store.access.compliance(tenantId, userId, deviceId);
      // Keyed by user and device: a user belongs to one tenant, and the record says which (checked by the reader).
      return cached(compliance, deviceKey(userId, deviceId), () => store.access.compliance(tenantId, userId, deviceId)).then((r) => (r && r.tenantId === tenantId ? r : undefined));
    },
    appState(tenantId, userId, deviceId) {
      if (store.access.appState !== own.appState) return store.access.appState(tenantId, userId, deviceId);
      return cached(appStates, deviceKey(userId, deviceId), () => store.access.appState(tenantId, userId, deviceId)).then((r) => (r && r.tenantId === tenantId ? r : undefined));
    },
    userRisk(userId) {
      if (store.access.userRisk !== own.userRisk) return store.access.userRisk(userId);
      return cached(userRisks, userId, () => store.access.userRisk(userId));
    },
    signInOfSession(sessionId) {
      if (store.access.signInOfSession !== own.signInOfSession) return store.access.signInOfSession(sessionId);
      return cached(sessionSignIns, sessionId, () => store.access.signInOfSession(sessionId));
    },
  };

  /**
   * `target` with `overrides` in front; everything else is read from `target` when used, not copied, so a method
   * replaced on the wrapped store later (a test's spy) is the one called.
   */
  const front = <T extends object>(target: T, overrides: Partial<Record<keyof T | string, unknown>>): T =>
    new Proxy(target, { get: (t, prop) => (Object.hasOwn(overrides, prop) ? overrides[prop as keyof T] : Reflect.get(t, prop)) });

  return front(store as CachedStore, {
    hotCache,
    close() {
      unsubscribe();
      if (turnEnd) clearImmediate(turnEnd);
      clear();
      return store.close();
    },
    users: front(store.users, users$),
    refreshTokens: front(store.refreshTokens, refreshTokens$),
    devices: front(store.devices, devices$),
    deviceAccess: front(store.deviceAccess, deviceAccess$),
    access: front(store.access, access$),
  });
}
