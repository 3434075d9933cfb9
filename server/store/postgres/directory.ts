/**
 * The directory in PostgreSQL (schema/postgres/0012_directory.sql). The SQLite store's directory.ts is the
 * specification: its read statements (named parameters, numbered here), folding, terms, ranking and row mappers are
 * used as they are, so both backends find and rank the same people. Nothing of this group is cached: writes announce
 * nothing.
 *
 * Concurrency (READ COMMITTED):
 * - Manager changes of a tenant take the tenant's directory lock (a transaction advisory lock): `putEntry` always,
 *   `managers` in a unit of work. A unit that writes a manager and then reads the chain to refuse a cycle therefore
 *   sees every other change of the tenant's managers committed, and none commits until it ends: two changes that
 *   would each be fine alone but together make a cycle cannot both pass.
 * - Indexing the tenant's queue takes the tenant's index lock (a second search waits, then finds the users indexed)
 *   and claims the queue by deleting it before it reads the users: a change committed after that read queues the user
 *   again (the trigger's insert waits for the claim to commit), so nothing is lost.
 * - Every lookup is written so that a planner with stale statistics cannot turn it into a scan of the tenant per row
 *   (server/store/sqlite/directory.ts, `lookup`; the migration's index order).
 */
import type { Step, TxStore } from '../types';
import {
  MAX_FREQUENT_CONTACTS,
  directorySql,
  indexedUser,
  mergeMatches,
  probeParams,
  searchProbe,
  sentContacts,
  toEntry,
  toFrequent,
  toPerson,
  toUserMatch,
} from '../sqlite/directory';
import { exclusiveLockKey } from './exclusive';
import { rows, type Row, type Tx } from './tx';

const SQL = directorySql('postgres');

const numberedCache = new Map<string, { text: string; names: string[] }>();

/** A statement with `@name` parameters as PostgreSQL takes it: `$1, $2, …` in order of first use, and their values. */
export function numbered(text: string, params: Record<string, unknown>): [string, unknown[]] {
  let compiled = numberedCache.get(text);
  if (!compiled) {
    const names: string[] = [];
    const out = text.replace(/@([A-Za-z]\w*)/g, (_m, name: string) => {
      let i = names.indexOf(name);
      if (i < 0) i = names.push(name) - 1;
      return `$${i + 1}`;
    });
    numberedCache.set(text, (compiled = { text: out, names }));
  }
  return [
    compiled.text,
    compiled.names.map((name) => {
      if (!Object.hasOwn(params, name)) throw new Error(`statement parameter @${name} has no value`);
      return params[name];
    }),
  ];
}

function* named(tx: Tx, text: string, params: Record<string, unknown>): Step<Row[]> {
  return yield* rows(tx, ...numbered(text, params));
}

/** The lock that orders a tenant's manager changes (held until the transaction ends). */
const managersLockKey = (tenantId: string) => exclusiveLockKey(`directory managers ${tenantId}`);
/** The lock that keeps two transactions from indexing one tenant's queue at once. */
const indexLockKey = (tenantId: string) => exclusiveLockKey(`directory index ${tenantId}`);

export function directorySteps(tx: Tx): Pick<TxStore, 'directory'> {
  /** The tenant's manager lock, once per transaction (`tx.locked` also holds mailbox ids, which have no spaces). */
  function* lockManagers(tenantId: string): Step<void> {
    const key = `directory managers ${tenantId}`;
    if (tx.locked.has(key)) return;
    yield* rows(tx, 'SELECT pg_advisory_xact_lock($1::bigint)', [managersLockKey(tenantId)]);
    tx.locked.add(key);
  }

  /** Indexes the tenant's queued users. */
  function* catchUp(tenantId: string): Step<void> {
    const [any] = yield* named(tx, SQL.pendingAny, { tenant: tenantId });
    if (!any) return;
    yield* rows(tx, 'SELECT pg_advisory_xact_lock($1::bigint)', [indexLockKey(tenantId)]);
    // Claimed after the lock: whoever held it has committed, and what they indexed is gone from the queue.
    const ids = (yield* rows<{ user_id: string }>(tx, 'DELETE FROM directory_pending WHERE tenant_id = $1 RETURNING user_id', [tenantId])).map((r) => r.user_id);
    if (!ids.length) return;
    const found = yield* rows(tx, 'SELECT id AS user_id, display_name, email FROM users WHERE tenant_id = $1 AND id = ANY($2::text[])', [tenantId, ids]);
    const byId = new Map(found.map((r) => [r.user_id as string, r]));
    // A queued user not found here was deleted or moved to another tenant: their index rows go.
    const queued = ids.map((id) => indexedUser(byId.get(id) ?? { user_id: id, display_name: null, email: null }));
    yield* rows(tx, 'DELETE FROM directory_terms WHERE user_id = ANY($2::text[]) AND tenant_id = $1', [tenantId, ids]);
    yield* rows(tx, 'DELETE FROM directory_people WHERE tenant_id = $1 AND user_id = ANY($2::text[])', [tenantId, ids]);
    const present = queued.filter((u) => u.person !== null);
    const terms = present.flatMap((u) => u.person!.terms.map((t) => ({ ...t, userId: u.userId })));
    // In key order, so a bulk of new users fills the index page by page rather than all over it.
    terms.sort((a, b) => a.kind - b.kind || (a.term < b.term ? -1 : a.term > b.term ? 1 : 0));
    if (terms.length) {
      yield* rows(
        tx,
        `INSERT INTO directory_terms (tenant_id, kind, term, user_id)
         SELECT $1, t.kind, t.term, t.user_id FROM unnest($2::smallint[], $3::text[], $4::text[]) AS t(kind, term, user_id)
         ON CONFLICT DO NOTHING`,
        [tenantId, terms.map((t) => t.kind), terms.map((t) => t.term), terms.map((t) => t.userId)],
      );
    }
    if (present.length) {
      yield* rows(
        tx,
        `INSERT INTO directory_people (tenant_id, user_id, sort_name, address)
         SELECT $1, p.user_id, p.sort_name, p.address FROM unnest($2::text[], $3::text[], $4::text[]) AS p(user_id, sort_name, address)`,
        [tenantId, present.map((u) => u.userId), present.map((u) => u.person!.sortName), present.map((u) => u.person!.address)],
      );
    }
  }

  return {
    directory: {
      *entry(tenantId, userId) {
        const [r] = yield* named(tx, SQL.entry, { tenant: tenantId, user: userId });
        return r && toEntry(r);
      },
      *putEntry(e) {
        yield* lockManagers(e.tenantId);
        yield* rows(
          tx,
          `INSERT INTO directory_entries (tenant_id, user_id, title, department, office, phone, mobile, manager_id, hidden, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT (tenant_id, user_id) DO UPDATE SET title = excluded.title, department = excluded.department,
             office = excluded.office, phone = excluded.phone, mobile = excluded.mobile, manager_id = excluded.manager_id,
             hidden = excluded.hidden, updated_at = excluded.updated_at`,
          [e.tenantId, e.userId, e.title, e.department, e.office, e.phone, e.mobile, e.managerId, e.hiddenFromDirectory, e.updatedAt],
        );
      },
      *person(tenantId, userId) {
        const [r] = yield* named(tx, SQL.person, { tenant: tenantId, user: userId });
        return r && toPerson(r);
      },
      *managers(tenantId, userId) {
        if (tx.unit) yield* lockManagers(tenantId);
        return (yield* named(tx, SQL.managers, { tenant: tenantId, user: userId })).map(toPerson);
      },
      *reports(tenantId, managerId) {
        return (yield* named(tx, SQL.reports, { tenant: tenantId, manager: managerId })).map(toPerson);
      },
      *recordSent(tenantId, userId, contacts, now) {
        const counted = sentContacts(contacts);
        if (!counted.length) return;
        yield* rows(
          tx,
          `INSERT INTO directory_frequent AS f (tenant_id, user_id, address, name, sent_count, last_sent_at)
           SELECT $1, $2, c.address, c.name, 1, $5 FROM unnest($3::text[], $4::text[]) AS c(address, name)
           ON CONFLICT (tenant_id, user_id, address) DO UPDATE SET sent_count = f.sent_count + 1,
             last_sent_at = greatest(f.last_sent_at, excluded.last_sent_at), name = coalesce(excluded.name, f.name)`,
          [tenantId, userId, counted.map((c) => c.address), counted.map((c) => c.name), now],
        );
        yield* rows(
          tx,
          `DELETE FROM directory_frequent WHERE tenant_id = $1 AND user_id = $2 AND address IN (
             SELECT address FROM directory_frequent WHERE tenant_id = $1 AND user_id = $2
             ORDER BY last_sent_at DESC, sent_count DESC, address OFFSET ${MAX_FREQUENT_CONTACTS})`,
          [tenantId, userId],
        );
      },
      *frequent(tenantId, userId) {
        return (yield* named(tx, SQL.frequent, { tenant: tenantId, user: userId })).map(toFrequent);
      },
      *search(tenantId, callerId, query, limit) {
        const probe = searchProbe(query);
        if ((probe.name === null && probe.address === null) || limit <= 0) return [];
        yield* catchUp(tenantId);
        const users = (yield* named(tx, SQL.search, { tenant: tenantId, caller: callerId, limit, ...probeParams(probe) })).map(toUserMatch);
        const outside = (yield* named(tx, SQL.frequentOutside, { tenant: tenantId, caller: callerId })).map(toFrequent);
        return mergeMatches(users, outside, probe, limit);
      },
    },
  };
}
