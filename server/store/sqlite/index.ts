/**
 * The SQLite implementation of `Store`. Rows are mapped to domain records at this edge (snake_case → camelCase);
 * statements are prepared once and cached, because preparing costs more than running most of them.
 */
import type { Statement } from 'better-sqlite3';
import { openDatabase, migrate, type Db, type MigrationReport } from './db';
import { newId } from '../../ids';
import { deviceRepositories, type Invalidate } from './devices';
import { mailRepositories, type ChangeRecorder } from './mail';
import { contentRepositories } from './content';
import { identityRepositories } from './identity';
import { accessRepositories } from './access';
import { protectionRepositories } from './protection';
import { directoryRepositories } from './directory';
import { mailboxViewRepositories } from './mailboxViews';
import { conversationRepositories } from './conversations';
import { diagnosticsRepositories } from './diagnostics';
import { pushRepositories, SQLITE_OUTBOX_UPSERT } from './push';
import { webRefreshRepositories } from './webRefresh';
import {
  DEFAULT_REGION,
  type CommittedChange,
  type ConnectionPragmas,
  type Exclusive,
  type Invalidation,
  type NewRefreshToken,
  type NewUser,
  type RefreshTokenRecord,
  type Store,
  type StoreMethods,
  type Tenant,
  type User,
} from '../types';
import { mapMethods, runSync, stepsOf, type AsyncMethods } from '../unit';
import { StoreBusy, StoreFull } from '../errors';
import { toRefresh, toUser } from '../rows';

type Row = Record<string, unknown>;

/** The store's methods as SQLite runs them: synchronous, joining the running transaction if there is one. */
export interface SqliteSync extends StoreMethods {
  /** Runs `fn` in one transaction (nested calls join the outer one). Never pass an async function. */
  transaction<T>(fn: () => T): T;
}

export interface SqliteStore extends Store {
  readonly backend: 'sqlite';
  readonly migrations: MigrationReport;
  /**
   * The same methods, synchronous: for SQLite-only tools and tests that set a file up or inspect it (never for
   * services, which must run on either backend).
   */
  readonly sqlite: SqliteSync;
  /**
   * The underlying handle, for tests that inspect the file directly (never for services). A statement run through
   * it that may write is announced to `onInvalidate` as `all`: the store cannot tell what raw SQL changed.
   */
  readonly db: Db;
}

/**
 * `db` as tests get it: the same connection, but every statement that may write (run, get or all of a statement
 * that is not read-only; any `exec`) calls `wrote` once it has run.
 */
function reportingHandle(db: Db, wrote: () => void): Db {
  const statement = (stmt: Statement): Statement => {
    if (stmt.readonly) return stmt;
    const proxy: Statement = new Proxy(stmt, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target) as unknown;
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          const result = (value as (...a: unknown[]) => unknown).apply(target, args);
          if (result === target) return proxy; // pluck(), raw(), bind()…: keep reporting on the chained statement
          if (prop === 'run' || prop === 'get' || prop === 'all') wrote();
          return result;
        };
      },
    });
    return proxy;
  };
  const handle: Db = new Proxy(db, {
    get(target, prop) {
      if (prop === 'prepare') return (text: string) => statement(target.prepare(text));
      if (prop === 'exec') {
        return (text: string) => {
          target.exec(text);
          wrote();
          return handle;
        };
      }
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  return handle;
}

export function openSqliteStore(file: string): SqliteStore {
  const db = openDatabase(file);
  const migrations = migrate(db);
  const cache = new Map<string, Statement>();
  const sql = (text: string): Statement => {
    let s = cache.get(text);
    if (!s) {
      s = db.prepare(text);
      cache.set(text, s);
    }
    return s;
  };

  const toTenant = (r: Row): Tenant => ({ id: r.id as string, name: r.name as string, region: r.region as string, createdAt: r.created_at as number });

  /** Reports the sign-ins a refresh-token write changed (its `RETURNING family_id` rows); answers how many rows. */
  const changedSignIns = (rows: unknown[]): number => {
    for (const familyId of new Set((rows as { family_id: string }[]).map((r) => r.family_id))) invalidate({ kind: 'signIn', familyId });
    return rows.length;
  };

  // Changes made in the running transaction, announced to onCommit listeners once it commits.
  // `lowest` is the first modseq the transaction took for the user: the push outbox's span starts before it.
  const pending = new Map<string, { modseq: number; lowest: number; folderIds: Set<string>; hierarchyChanged: boolean }>();
  const listeners = new Set<(changes: CommittedChange[]) => void>();
  const record: ChangeRecorder = (userId, modseq, folderIds, hierarchy) => {
    let p = pending.get(userId);
    if (!p) pending.set(userId, (p = { modseq, lowest: modseq, folderIds: new Set(), hierarchyChanged: false }));
    p.modseq = Math.max(p.modseq, modseq);
    p.lowest = Math.min(p.lowest, modseq);
    for (const f of folderIds) if (f) p.folderIds.add(f);
    p.hierarchyChanged ||= hierarchy;
  };

  // Writes to the records the hot cache keeps, announced to onInvalidate listeners once the transaction commits (at
  // once outside a transaction). Keyed by what they name, so a transaction that touches one device twice says so once.
  const pendingInvalid = new Map<string, Invalidation>();
  const invalidationListeners = new Set<(changes: Invalidation[]) => void>();
  const announce = (changes: Invalidation[]) => {
    for (const listener of invalidationListeners) listener(changes);
  };
  const invalidate: Invalidate = (change) => {
    if (!db.inTransaction) return announce([change]);
    const key =
      change.kind === 'user' ? `u ${change.userId}`
      : change.kind === 'signIn' ? `s ${change.familyId}`
      : change.kind === 'device' ? `d ${change.userId} ${change.deviceId}`
      : change.kind === 'tenantAccess' ? `t ${change.tenantId}`
      : 'all';
    pendingInvalid.set(key, change);
  };
  /** A write through the raw test handle: announced now, and again at the commit of a transaction it is part of. */
  const rawWrite = () => {
    announce([{ kind: 'all' }]);
    if (db.inTransaction) pendingInvalid.set('all', { kind: 'all' });
  };

  /**
   * The push outbox (push.ts), written last inside the committing transaction for every mailbox it changed whose
   * user has a push channel: a commit and the note that it needs pushing are one. A user without a channel costs one
   * probe of push_channels_user.
   */
  const writePushOutbox = () => {
    if (pending.size === 0) return;
    const upsert = sql(SQLITE_OUTBOX_UPSERT);
    const at = Date.now();
    for (const [userId, p] of pending) upsert.run({ user: userId, from: p.lowest - 1, to: p.modseq, at });
  };
  const committing = <T>(fn: () => T) => () => {
    const result = fn();
    writePushOutbox();
    return result;
  };

  const transaction = <T>(fn: () => T): T => {
    if (db.inTransaction) return fn();
    let result: T;
    try {
      // IMMEDIATE: the write lock is taken at BEGIN, where busy_timeout waits for it. A deferred transaction that
      // reads first and writes later cannot wait when another connection (a second worker process, the admin CLI)
      // committed in between: SQLite answers SQLITE_BUSY at once, and a delivery or an app change would fail.
      result = db.transaction(committing(fn)).immediate();
    } catch (err) {
      pending.clear(); // rolled back: nothing happened
      pendingInvalid.clear();
      throw err;
    }
    // The cache first: a commit listener that reads a device or a user must not be answered from before the commit.
    if (pendingInvalid.size) {
      const changes = [...pendingInvalid.values()];
      pendingInvalid.clear();
      announce(changes);
    }
    if (pending.size) {
      const changes = [...pending.entries()].map(([userId, p]) => ({ userId, modseq: p.modseq, folderIds: [...p.folderIds], hierarchyChanged: p.hierarchyChanged }));
      pending.clear();
      for (const listener of listeners) listener(changes);
    }
    return result;
  };

  const store: SqliteSync = {
    transaction,
    tenants: {
      create(name, now, region = DEFAULT_REGION) {
        const tenant: Tenant = { id: newId(), name, region, createdAt: now };
        sql('INSERT INTO tenants (id, name, region, created_at) VALUES (?, ?, ?, ?)').run(tenant.id, name, region, now);
        invalidate({ kind: 'tenantAccess', tenantId: tenant.id });
        return tenant;
      },
      get(id) {
        const r = sql('SELECT * FROM tenants WHERE id = ?').get(id) as Row | undefined;
        return r && toTenant(r);
      },
      list() {
        return (sql('SELECT * FROM tenants ORDER BY created_at, id').all() as Row[]).map(toTenant);
      },
      setRegion(id, region) {
        const changed = sql('UPDATE tenants SET region = ? WHERE id = ?').run(region, id).changes === 1;
        if (changed) invalidate({ kind: 'tenantAccess', tenantId: id });
        return changed;
      },
    },

    users: {
      create(u: NewUser, now) {
        const id = newId();
        sql(
          `INSERT INTO users (id, tenant_id, username, email, display_name, role, password_hash, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(id, u.tenantId, u.username, u.email, u.displayName, u.role, u.passwordHash, now, now);
        invalidate({ kind: 'user', userId: id });
        return store.users.byId(id)!;
      },
      byId(id) {
        const r = sql('SELECT * FROM users WHERE id = ?').get(id) as Row | undefined;
        return r && toUser(r);
      },
      byUsername(username) {
        const r = sql('SELECT * FROM users WHERE username = ?').get(username) as Row | undefined;
        return r && toUser(r);
      },
      byEmail(email) {
        return (sql('SELECT * FROM users WHERE email = ? COLLATE NOCASE ORDER BY created_at').all(email) as Row[]).map(toUser);
      },
      list() {
        return (sql('SELECT * FROM users ORDER BY username').all() as Row[]).map(toUser);
      },
      count() {
        return (sql('SELECT count(*) AS n FROM users').get() as { n: number }).n;
      },
      setPassword(id, passwordHash, now) {
        sql('UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?').run(passwordHash, now, id);
        invalidate({ kind: 'user', userId: id });
      },
      bumpSessionVersion(id, now) {
        sql('UPDATE users SET session_version = session_version + 1, updated_at = ? WHERE id = ?').run(now, id);
        invalidate({ kind: 'user', userId: id });
      },
      setDisabled(id, disabled, now) {
        sql('UPDATE users SET disabled = ?, updated_at = ? WHERE id = ?').run(disabled ? 1 : 0, now, id);
        invalidate({ kind: 'user', userId: id });
      },
    },

    refreshTokens: {
      insert(t: NewRefreshToken) {
        sql(
          `INSERT INTO refresh_tokens (id, family_id, user_id, device_id, client_id, scope, token_hash, created_at, expires_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(t.id, t.familyId, t.userId, t.deviceId, t.clientId, t.scope, t.tokenHash, t.createdAt, t.expiresAt);
        invalidate({ kind: 'signIn', familyId: t.familyId });
      },
      byHash(hash) {
        const r = sql('SELECT * FROM refresh_tokens WHERE token_hash = ?').get(hash) as Row | undefined;
        return r && toRefresh(r);
      },
      byId(id) {
        const r = sql('SELECT * FROM refresh_tokens WHERE id = ?').get(id) as Row | undefined;
        return r && toRefresh(r);
      },
      markRotated(id, replacedBy, now) {
        return (
          changedSignIns(
            sql(
              `UPDATE refresh_tokens SET rotated_at = ?, replaced_by = ? WHERE id = ? AND rotated_at IS NULL AND revoked_at IS NULL
               RETURNING family_id`,
            ).all(now, replacedBy, id),
          ) === 1
        );
      },
      revokeFamily(familyId, reason, now) {
        return changedSignIns(
          sql(
            'UPDATE refresh_tokens SET revoked_at = ?, revoked_reason = ? WHERE family_id = ? AND revoked_at IS NULL RETURNING family_id',
          ).all(now, reason, familyId),
        );
      },
      revokeAllForUser(userId, reason, now) {
        return changedSignIns(
          sql(
            'UPDATE refresh_tokens SET revoked_at = ?, revoked_reason = ? WHERE user_id = ? AND revoked_at IS NULL RETURNING family_id',
          ).all(now, reason, userId),
        );
      },
      revokeForDevice(userId, deviceId, reason, now) {
        // Whole families: a sign-in bound to the device on a later refresh still has older, unbound rows.
        return changedSignIns(
          sql(
            `UPDATE refresh_tokens SET revoked_at = ?, revoked_reason = ?
             WHERE revoked_at IS NULL AND family_id IN
               (SELECT family_id FROM refresh_tokens WHERE user_id = ? AND device_id = ?)
             RETURNING family_id`,
          ).all(now, reason, userId, deviceId),
        );
      },
      extend(familyId, expiresAt) {
        return (
          changedSignIns(
            sql(
              `UPDATE refresh_tokens SET expires_at = ?
               WHERE family_id = ? AND revoked_at IS NULL AND rotated_at IS NULL AND expires_at < ? RETURNING family_id`,
            ).all(expiresAt, familyId, expiresAt),
          ) > 0
        );
      },
      liveHead(userId, familyId, now) {
        const head = store.refreshTokens.head(userId, familyId);
        return head && head.expiresAt > now ? head : undefined;
      },
      // The family id is unique on its own here (the user id is PostgreSQL's key).
      head(_userId, familyId) {
        // The predicate repeats the partial index's, so the planner uses it (tests/sync/query-plans.test.ts).
        const r = sql(
          `SELECT device_id, expires_at FROM refresh_tokens INDEXED BY refresh_tokens_live_head
           WHERE family_id = ? AND revoked_at IS NULL AND rotated_at IS NULL`,
        ).get(familyId) as { device_id: string | null; expires_at: number } | undefined;
        return r && { deviceId: r.device_id, expiresAt: r.expires_at };
      },

    },

    ...deviceRepositories(sql, invalidate),

    ...mailRepositories(sql, transaction, record),
    ...contentRepositories(sql),
    ...identityRepositories(sql),
    ...accessRepositories(sql, invalidate),
    ...protectionRepositories(sql, transaction),
    ...directoryRepositories(sql, transaction),
    ...mailboxViewRepositories(sql),
    ...conversationRepositories(sql),
    ...diagnosticsRepositories(sql),
    ...pushRepositories(sql, transaction),
    ...webRefreshRepositories(sql, transaction),
  };

  // Cluster-wide jobs: one process per file runs them (the leader), so only this store's own overlap is refused.
  const runningTasks = new Map<string, Promise<unknown>>();
  async function exclusive<T>(task: string, fn: () => Promise<T>, options: { wait?: boolean } = {}): Promise<Exclusive<T>> {
    for (let running = runningTasks.get(task); running; running = runningTasks.get(task)) {
      if (!options.wait) return { ran: false };
      await running.catch(() => undefined);
    }
    const run = fn();
    runningTasks.set(task, run);
    try {
      return { ran: true, value: await run };
    } finally {
      runningTasks.delete(task);
    }
  }

  const steps = stepsOf(store);
  const asyncMethods = mapMethods<AsyncMethods>(store, (_g, _n, fn) => (...args: never[]) => answer(() => fn(...args)));

  return {
    ...asyncMethods,
    backend: 'sqlite',
    db: reportingHandle(db, rawWrite),
    migrations,
    sqlite: store,
    run: (unit) => answer(() => transaction(() => runSync(unit(steps)))),
    onCommit(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    onInvalidate(listener) {
      invalidationListeners.add(listener);
      return () => invalidationListeners.delete(listener);
    },
    dataVersion: () => answer(() => sql('PRAGMA data_version').pluck().get() as number),
    ping: () => answer(() => void sql('SELECT 1').get()),
    exclusive,
    close: () => answer(() => {
      if (!db.open) return;
      db.pragma('optimize'); // refresh planner statistics where SQLite thinks they are stale (cheap, recommended at close)
      db.pragma('wal_checkpoint(TRUNCATE)');
      db.close();
    }),
    connectionPragmas: () => answer((): ConnectionPragmas[] => [
        {
          journalMode: String(db.pragma('journal_mode', { simple: true })),
          synchronous: Number(db.pragma('synchronous', { simple: true })),
          foreignKeys: Number(db.pragma('foreign_keys', { simple: true })),
          busyTimeout: Number(db.pragma('busy_timeout', { simple: true })),
        },
      ]),

  };
}

/** `fn()`'s answer as a promise; SQLite's failures become the store's own (server/store/errors.ts). */
function answer<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(storeError(err));
  }
}

function storeError(err: unknown): unknown {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'SQLITE_FULL') return new StoreFull('The database or disk is full.', { cause: err });
  if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') return new StoreBusy('The database is locked; retry shortly.', { cause: err });
  return err;
}
