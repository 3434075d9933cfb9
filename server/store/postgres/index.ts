/**
 * The PostgreSQL implementation of `Store`, for deployments that outgrow one machine: several nodes share one
 * database (and, later, a Citus cluster sharded by mailbox and tenant: schema/postgres/README.md). The SQLite store
 * (server/store/sqlite) is the specification; this one gives the same answers, orders, tie-breaks, counts, tombstones
 * and change-log rows.
 *
 * Transactions. Every method is a step (tx.ts) written once. `run(unit)` takes a pooled connection, BEGINs (READ
 * COMMITTED), drives the unit with each step's query on that connection, COMMITs, and runs the whole unit again (at
 * most 5 times, after a short jittered pause) when PostgreSQL reports a serialization failure or a deadlock; anything
 * else thrown rolls back and reaches the caller (PostgreSQL's errors as the store's own, errors.ts). Isolation comes
 * from row locks rather than from the isolation level: every change to a mailbox updates the mailbox's row (its next
 * modseq), and a write that reads first, or a unit that reads a mailbox's data, takes that row's lock at its first
 * step (tx.ts `lockMailbox`) — so within a mailbox transactions run one at a time, as every transaction does on
 * SQLite under BEGIN IMMEDIATE, while different mailboxes proceed in parallel.
 *
 * A method called on the store itself (`store.items.byId(...)`) is `run` of that one step, except the reads that are
 * one statement (LONE_READS below): they skip BEGIN/COMMIT and go to any pooled connection, where a single statement
 * is atomic and consistent on its own.
 *
 * Feeds. A transaction collects what it changed (`record`, `invalidate`) while it runs; after COMMIT the store's
 * `onInvalidate` and then `onCommit` listeners hear it (never after a rollback), and other nodes hear it through
 * NOTIFY sent inside the transaction (feed.ts).
 *
 * Connections: `synchronous_commit = on` on every one (nothing acknowledged is lost), `lock_timeout` 5 s unless the
 * server or the URL sets one (SQLite's busy_timeout: a lock that does not come answers StoreBusy), statements
 * prepared by name on each connection so the server keeps their plans, BIGINT read as a JS number.
 *
 * Besides the `Store` contract, for the nodes sharing the database: `exclusive` (a job on one node at a time, on a
 * session of its own: exclusive.ts), the shared key material and the token endpoint's rate-limit counts (shared.ts).
 */
import crypto from 'node:crypto';
import { Pool, types as pgTypes, type PoolClient, type PoolConfig, type QueryResult } from 'pg';
import type { Logger } from 'pino';
import { newId } from '../../ids';
import type { CommittedChange, ConnectionPragmas, Invalidation, Store, StoreMethods, TxStore, Unit } from '../types';
import { mapMethods, runAsync, type AsyncMethods } from '../unit';
import { accessSteps } from './access';
import { accountSteps } from './accounts';
import { contentSteps } from './content';
import { identitySteps } from './identity';
import { deviceSteps } from './devices';
import { isConnectionLost, isRetryable, storeError } from './errors';
import { exclusiveRunner } from './exclusive';
import { NOTIFY, feedPayloads, listenToFeed, parseFeedMessage, type FeedListener } from './feed';
import { mailSteps } from './mail';
import { migrate, type MigrationReport } from './migrate';
import { protectionSteps } from './protection';
import { directorySteps } from './directory';
import { mailboxViewSteps } from './mailboxViews';
import { conversationSteps } from './conversations';
import { diagnosticsSteps } from './diagnostics';
import { PG_OUTBOX_UPSERT, pushSteps } from './push';
import { webRefreshSteps } from './webRefresh';
import { sharedCounters, sharedSecrets, type SharedCounters, type SharedSecrets } from './shared';
import { textParam, type Tx } from './tx';

export { MIGRATIONS_DIR, migrate, type MigrationReport } from './migrate';
export { exclusiveLockKey } from './exclusive';
export type { SharedCounters, SharedSecrets, WindowCount } from './shared';

export interface PostgresStoreOptions {
  /** Connections in the pool (default 10), besides the one that listens to the feed. */
  poolSize?: number;
  /** This node's name in the feed (default: random); two stores over one database must not share one. */
  nodeId?: string;
  log?: Logger;
}

export interface PostgresStore extends Store {
  readonly backend: 'postgres';
  /** This store's name in the commit feed: notifications it sent come back to it and are told apart by it. */
  readonly nodeId: string;
  readonly migrations: MigrationReport;
  /** Key material every node shares (when no key files are configured): server/auth/keys.ts. */
  readonly secrets: SharedSecrets;
  /** The token endpoint's rate-limit counts, shared by every node. */
  readonly counters: SharedCounters;
}

/**
 * The store's reads that are one statement and take no lock alone: called on the store, they run without
 * BEGIN/COMMIT on any pooled connection (a second statement in one would be a bug, and throws).
 */
const LONE_READS = new Set([
  'tenants.get', 'tenants.list',
  'users.byId', 'users.byUsername', 'users.byEmail', 'users.list', 'users.count',
  'refreshTokens.byHash', 'refreshTokens.byId', 'refreshTokens.liveHead', 'refreshTokens.head',
  'devices.byId', 'devices.byUserAndDeviceId', 'devices.listByUser', 'devices.countByUser', 'devices.list', 'devices.inventoryRows', 'devices.inventoryPage',
  'devices.inventoryCount', 'devices.inactiveSince',
  'deviceAccess.rules', 'deviceAccess.rule', 'deviceAccess.defaultState',
  'audit.list',
  'mailboxes.get',
  'folders.listByUser', 'folders.byId', 'folders.byKind', 'folders.changedSince', 'folders.deletedSince', 'folders.hierarchyState',
  'folders.hierarchyPoll',
  'items.byId', 'items.byIds', 'items.body', 'items.attachments', 'items.findDuplicate', 'items.conversationByMessageIds',
  'items.conversationBySubject', 'items.fromSender', 'items.hasContactAddress',
  'sync.changes', 'sync.boundary', 'sync.range',
  'blobs.size', 'blobs.read',
  'search.query',
  'outbox.byId', 'outbox.due', 'outbox.nextDueAt', 'outbox.list',
  'idempotency.get',
  'access.config', 'access.compliance', 'access.appState', 'access.staleAppStates', 'access.signIns', 'access.signInOfSession',
  'access.signInHistory', 'access.failuresSince', 'access.userRisk',
  'protection.keys', 'protection.config', 'protection.certificates', 'protection.certificatesByEmail',
  'directory.entry', 'directory.person', 'directory.managers', 'directory.reports', 'directory.frequent',
  'conversations.changedSince', 'conversations.boundary', 'conversations.range', 'conversations.get', 'conversations.count',
  'conversations.itemIds', 'conversations.isIgnored',
  'diagnostics.byId', 'diagnostics.listByUser',
  'push.channel', 'push.channelsOfDevice', 'push.channelsOfUser', 'push.countChannels', 'push.outboxSize', 'push.queueSize',
  'push.reminder', 'push.dueReminders',
  'webRefresh.read',
  'mailboxSettings.get', 'autoReplies.pending', 'autoReplies.ofPeriod',
  'sharedMailboxes.get', 'sharedMailboxes.list', 'sharedMailboxes.member', 'sharedMailboxes.members', 'sharedMailboxes.ofMember',
]);

const MAX_ATTEMPTS = 5;

/** The push outbox's upsert ($1–$4) and the feed's notifications ($5) in one statement (a data-modifying WITH always runs whole). */
const OUTBOX_AND_NOTIFY = `WITH outbox AS (${PG_OUTBOX_UPSERT}) ${NOTIFY.replace('$1::text[]', '$5::text[]')}`;
if (!OUTBOX_AND_NOTIFY.includes('$5::text[]')) throw new Error('feed.ts NOTIFY no longer reads $1::text[]: update OUTBOX_AND_NOTIFY');

/** BIGINT (int8, OID 20) as a JS number: times, modseqs, sizes and counts all fit in 2^53. */
const INT8_OID = 20;
const parseInt8 = (text: string) => Number(text);
const storeTypes: NonNullable<PoolConfig['types']> = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary' ? parseInt8 : pgTypes.getTypeParser(oid, format)) as typeof pgTypes.getTypeParser,
};

/**
 * Run on every new pooled connection before its first use: durability is not negotiable, a lock wait is bounded
 * unless the operator chose a bound (role, database or URL settings win).
 */
const CONNECTION_SETUP = `SELECT set_config('synchronous_commit', 'on', false),
  CASE WHEN current_setting('lock_timeout') = '0' THEN set_config('lock_timeout', '5000', false) END`;

/** What one transaction changed, announced after it commits. */
interface Pending {
  /** Per mailbox: the highest modseq, the lowest (the push outbox's span starts before it), the folders. */
  commits: Map<string, { modseq: number; lowest: number; folderIds: Set<string>; hierarchyChanged: boolean }>;
  invalidations: Map<string, Invalidation>;
  locked: Set<string>;
}

const newPending = (): Pending => ({ commits: new Map(), invalidations: new Map(), locked: new Set() });

const invalidationKey = (change: Invalidation) =>
  change.kind === 'user' ? `u ${change.userId}`
  : change.kind === 'signIn' ? `s ${change.familyId}`
  : change.kind === 'device' ? `d ${change.userId} ${change.deviceId}`
  : change.kind === 'tenantAccess' ? `t ${change.tenantId}`
  : 'all';

/** The methods of every group, as steps over `tx`. */
const stepsOver = (tx: Tx): TxStore => ({ ...accountSteps(tx), ...deviceSteps(tx), ...mailSteps(tx), ...contentSteps(tx), ...identitySteps(tx), ...accessSteps(tx), ...protectionSteps(tx), ...directorySteps(tx), ...mailboxViewSteps(tx), ...conversationSteps(tx), ...diagnosticsSteps(tx), ...pushSteps(tx), ...webRefreshSteps(tx) }) as TxStore;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function openPostgresStore(url: string, options: PostgresStoreOptions = {}): Promise<PostgresStore> {
  const nodeId = options.nodeId ?? newId();
  const log = options.log;
  const connection: PoolConfig = { connectionString: url, types: storeTypes, fallback_application_name: 'pigeon' };
  const pool = new Pool({ ...connection, max: options.poolSize ?? 10, onConnect: (client) => client.query(CONNECTION_SETUP) });
  // An idle pooled connection that breaks is reported here; the pool drops it and the next call opens another.
  pool.on('error', (err) => log?.warn({ err }, 'an idle PostgreSQL connection failed'));
  // The pool listens for errors of idle connections only. A connection that fails while checked out (the server
  // terminated it, the network dropped) emits 'error' too, and with no listener that would end the process: this one
  // logs it, and the query in flight rejects on its own (StoreUnavailable; the connection is then released broken).
  pool.on('connect', (client) => client.on('error', (err) => log?.warn({ err }, 'a PostgreSQL connection failed while in use')));
  const fail = (err: unknown): never => {
    throw storeError(err);
  };

  let migrations: MigrationReport;
  let feed: FeedListener;
  try {
    const client = await pool.connect();
    try {
      migrations = await migrate(client);
    } finally {
      client.release();
    }
    feed = await listenToFeed(
      { ...connection, fallback_application_name: 'pigeon feed' },
      { received: (payload) => foreign(payload), reconnected: () => foreign(JSON.stringify({ node: '', all: true })) },
      log,
    );
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw storeError(err);
  }

  // Prepared statements are named after their text: one name per text, the same on every connection.
  const names = new Map<string, string>();
  const nameOf = (text: string) => {
    let name = names.get(text);
    if (!name) names.set(text, (name = `pigeon_${crypto.createHash('sha1').update(text).digest('hex').slice(0, 24)}`));
    return name;
  };
  const statement = (text: string, values: readonly unknown[]) => ({ name: nameOf(text), text, values: values.map(textParam) });

  const commitListeners = new Set<(changes: CommittedChange[]) => void>();
  const invalidationListeners = new Set<(changes: Invalidation[]) => void>();
  /** The cache first: a commit listener that reads a device or a user must not be answered from before the commit. */
  const announce = (invalidations: Invalidation[], commits: CommittedChange[]) => {
    if (invalidations.length) for (const listener of invalidationListeners) listener(invalidations);
    if (commits.length) for (const listener of commitListeners) listener(commits);
  };

  // Other nodes' commits, as the feed delivers them.
  let foreignNotifications = 0;
  const foreign = (payload: string | undefined) => {
    const message = parseFeedMessage(payload);
    if (message.node === nodeId) return;
    foreignNotifications++;
    try {
      if (message.all) announce([{ kind: 'all' }], []);
      else announce(message.invalidations ?? [], message.commits ?? []);
    } catch (err) {
      log?.error({ err }, 'a feed listener threw');
    }
  };

  const txOf = (query: Tx['query'], unit: boolean, pending: Pending): Tx => ({
    query,
    unit,
    locked: pending.locked,
    record(userId, modseq, folderIds, hierarchy) {
      let p = pending.commits.get(userId);
      if (!p) pending.commits.set(userId, (p = { modseq, lowest: modseq, folderIds: new Set(), hierarchyChanged: false }));
      p.modseq = Math.max(p.modseq, modseq);
      p.lowest = Math.min(p.lowest, modseq);
      for (const f of folderIds) if (f) p.folderIds.add(f);
      p.hierarchyChanged ||= hierarchy;
    },
    invalidate(change) {
      pending.invalidations.set(invalidationKey(change), change);
    },
  });

  /** One attempt at `unit` in a transaction of its own. */
  async function attempt<T>(unit: Unit<T>, inUnit: boolean): Promise<T> {
    const client: PoolClient = await pool.connect().catch(fail);
    const pending = newPending();
    const query = (text: string, values: readonly unknown[]): Promise<QueryResult> => client.query(statement(text, values)).catch(fail);
    let result: T;
    let commits: CommittedChange[];
    let invalidations: Invalidation[];
    try {
      await client.query('BEGIN ISOLATION LEVEL READ COMMITTED').catch(fail);
      result = await runAsync(unit(stepsOver(txOf(query, inUnit, pending))));
      commits = [...pending.commits].map(([userId, p]) => ({ userId, modseq: p.modseq, folderIds: [...p.folderIds], hierarchyChanged: p.hierarchyChanged }));
      invalidations = [...pending.invalidations.values()];
      const payloads = feedPayloads(nodeId, commits, invalidations);
      if (pending.commits.size) {
        // The push outbox (push.ts), in the transaction, for every mailbox it changed: in the same statement as the
        // feed's notifications, so a commit that changed a mailbox sends no more statements than before.
        const users = [...pending.commits.keys()].sort();
        const changed = users.map((u) => pending.commits.get(u)!);
        const outbox = [users, changed.map((p) => p.lowest - 1), changed.map((p) => p.modseq), Date.now()];
        if (payloads.length) await query(OUTBOX_AND_NOTIFY, [...outbox, payloads]);
        else await query(PG_OUTBOX_UPSERT, outbox);
      } else if (payloads.length) await query(NOTIFY, [payloads]);
      const committed = await client.query('COMMIT').catch(fail);
      // PostgreSQL answers COMMIT of a transaction in which a statement failed with ROLLBACK: a unit that caught
      // the failure and went on must not look committed.
      if (committed.command !== 'COMMIT') throw new Error('The transaction was rolled back: one of its statements failed.');
    } catch (err) {
      let broken = isConnectionLost(err);
      if (!broken) broken = await client.query('ROLLBACK').then(() => false, () => true);
      client.release(broken);
      throw err;
    }
    client.release();
    announce(invalidations, commits);
    return result;
  }

  /** `unit` as one transaction, run again on a serialization failure or a deadlock. */
  async function transact<T>(unit: Unit<T>, inUnit: boolean): Promise<T> {
    for (let attempts = 1; ; attempts++) {
      try {
        return await attempt(unit, inUnit);
      } catch (err) {
        if (!isRetryable(err) || attempts >= MAX_ATTEMPTS) throw err;
        log?.debug({ err, attempts }, 'transaction lost a race; running it again');
        await sleep(5 * 2 ** attempts * (0.5 + Math.random()));
      }
    }
  }

  /** A one-statement read on any pooled connection, without a transaction around it. */
  function lone<T>(unit: Unit<T>): Promise<T> {
    let sent = false;
    const query = (text: string, values: readonly unknown[]): Promise<QueryResult> => {
      if (sent) throw new Error('A lone read sent a second statement: it must run in a transaction (remove it from LONE_READS).');
      sent = true;
      return pool.query(statement(text, values)).catch(fail);
    };
    return runAsync(unit(stepsOver(txOf(query, false, newPending()))));
  }

  // The async face: each method a transaction of its own (or a lone read).
  const shape = stepsOver(txOf(() => Promise.reject(new Error('not connected')), false, newPending()));
  for (const key of LONE_READS) {
    const [group, name] = key.split('.') as [keyof TxStore, string];
    if (typeof (shape[group] as unknown as Record<string, unknown> | undefined)?.[name] !== 'function') throw new Error(`LONE_READS names no method ${key}`);
  }
  const asyncMethods = mapMethods<AsyncMethods>(shape as unknown as StoreMethods, (group, name) => {
    const call = (tx: TxStore, args: unknown[]) => (tx[group] as unknown as Record<string, (...a: unknown[]) => ReturnType<Unit<unknown>>>)[name]!(...args);
    return LONE_READS.has(`${group}.${name}`)
      ? (...args: unknown[]) => lone((tx) => call(tx, args))
      : (...args: unknown[]) => transact((tx) => call(tx, args), false);
  });

  // Cluster-wide jobs hold their advisory locks on a session of their own (exclusive.ts).
  const jobs = exclusiveRunner({ ...connection, fallback_application_name: 'pigeon jobs' }, fail, log);

  let closing: Promise<void> | undefined;

  return {
    ...asyncMethods,
    backend: 'postgres',
    nodeId,
    migrations,
    secrets: sharedSecrets(pool, fail),
    counters: sharedCounters(pool, fail),
    exclusive: jobs.exclusive,
    run: (unit) => transact(unit, true),
    onCommit(listener) {
      commitListeners.add(listener);
      return () => commitListeners.delete(listener);
    },
    onInvalidate(listener) {
      invalidationListeners.add(listener);
      return () => invalidationListeners.delete(listener);
    },
    dataVersion: async () => foreignNotifications,
    ping: async () => {
      await pool.query('SELECT 1').catch(fail);
    },
    close: () =>
      (closing ??= (async () => {
        await jobs.close();
        await feed.close();
        await pool.end();
      })()),
    connectionPragmas: async (): Promise<ConnectionPragmas[]> => {
      const r = await pool
        .query<{ name: string; setting: string }>(`SELECT name, setting FROM pg_settings WHERE name IN ('synchronous_commit', 'lock_timeout')`)
        .catch(fail);
      const setting = (name: string) => r.rows.find((row) => row.name === name)?.setting;
      return [
        {
          journalMode: 'postgres',
          // SQLite's FULL (2) is what every synchronous_commit but `off` gives: the commit is flushed before it is acknowledged.
          synchronous: setting('synchronous_commit') === 'off' ? 0 : 2,
          foreignKeys: 1,
          busyTimeout: Number(setting('lock_timeout') ?? 0),
        },
      ];
    },
  };
}
