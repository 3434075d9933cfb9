/**
 * The directory in SQLite (schema/sqlite/0010_directory.sql): directory entries, frequent contacts and people
 * search's index. The folding, the terms, the read statements (with named parameters) and the row mappers are shared
 * with the PostgreSQL store, so both backends find, rank and answer the same.
 *
 * The index. People search must be case- and accent-insensitive and match name words, which no SQL index of `users`
 * gives (folding needs Unicode rules SQL does not have). So the store keeps `directory_terms`: for each user, the
 * folded words of the display name, the whole folded name, the address and the parts of its local part; a search is
 * a range scan of the terms that start with the folded query. Triggers on `users` queue every user whose name,
 * address or tenant changed (and every new or deleted one) in `directory_pending`; `search` first indexes its
 * tenant's queue. Nothing else has to remember to update the index, whichever code or process writes `users`.
 *
 * Nothing here is kept by the hot cache, so writes announce no invalidation.
 */
import type { Sql } from './devices';
import { toUser } from '../rows';
import type { DirectoryEntry, DirectoryPerson, FrequentContact, PeopleMatch, PeopleMatchKind, StoreMethods } from '../types';

type Row = Record<string, unknown>;

/** A user keeps this many of their most recently written addresses. */
export const MAX_FREQUENT_CONTACTS = 500;
/** The longest manager chain read (a deeper org is cut here; a cycle is stopped where it comes back). */
export const MAX_MANAGER_CHAIN = 64;
/** Terms longer than this are cut: a longer query still matches on its first characters' worth. */
const MAX_TERM_LENGTH = 200;

// Folding: what "case- and accent-insensitive" means here.

/** Letters that lose no mark under NFKD but are spelt without it in ASCII. */
const SPECIAL_LETTERS: Record<string, string> = { ß: 'ss', æ: 'ae', œ: 'oe', ø: 'o', đ: 'd', ð: 'd', ł: 'l', þ: 'th', ı: 'i', ħ: 'h', ŧ: 't' };
const SPECIAL = /[ßæœøđðłþıħŧ]/g;

/** Lower case, compatibility-decomposed, without combining marks: "Ångström" and "ANGSTROM" fold alike. */
export function fold(text: string): string {
  // Lower case first: "İ" lowers to "i" plus a combining dot, which the mark removal then drops.
  return text.toLowerCase().normalize('NFKD').replace(/\p{M}+/gu, '').replace(SPECIAL, (c) => SPECIAL_LETTERS[c]!);
}

const NOT_ALPHANUMERIC = /[^\p{L}\p{N}]+/gu;
const cut = (term: string) => term.slice(0, MAX_TERM_LENGTH);

/** The folded words of a name, each without its punctuation ("O'Brien" → "obrien"). */
function nameWords(name: string): string[] {
  return fold(name)
    .split(/\s+/)
    .map((w) => w.replace(NOT_ALPHANUMERIC, ''))
    .filter(Boolean);
}

/** A name's search terms: the whole name, each word, and each part of a word joined by punctuation ("jean-luc"). */
export function nameTerms(name: string): string[] {
  const words = nameWords(name);
  const parts = fold(name).split(NOT_ALPHANUMERIC).filter(Boolean);
  return [...new Set([words.join(' '), ...words, ...parts].filter(Boolean).map(cut))];
}

/** An address's search terms: the whole address and, when its local part has several, each part ("john.smith"). */
export function addressTerms(address: string): string[] {
  const folded = fold(address.trim());
  if (!folded) return [];
  const at = folded.lastIndexOf('@');
  const parts = (at > 0 ? folded.slice(0, at) : folded).split(NOT_ALPHANUMERIC).filter(Boolean);
  return [...new Set([folded, ...(parts.length > 1 ? parts : [])].map(cut))];
}

/** How frequent contacts and the index key an address: trimmed and lower case. */
export const addressKey = (address: string) => address.trim().toLowerCase();

/** The order search sorts people in after rank: the folded words of the display name. */
export const sortNameOf = (displayName: string) => nameWords(displayName).join(' ') || fold(displayName).trim();

/** What a search looks for: the query folded as a name and as an address (null: it cannot be one). */
export interface SearchProbe {
  name: string | null;
  address: string | null;
}

export function searchProbe(text: string): SearchProbe {
  const words = nameWords(text);
  const address = fold(text).trim();
  return {
    name: words.length ? cut(words.join(' ')) : null,
    address: address && !/\s/.test(address) ? cut(address) : null,
  };
}

/**
 * The exclusive upper bound of the terms starting with `prefix`: every such term is below `prefix` followed by the
 * highest code point (U+10FFFF sorts last bytewise, as both backends compare text).
 */
const upperBound = (prefix: string) => `${prefix}\u{10FFFF}`;

/** The probe as the search statement's parameters; a missing probe is an empty range. */
export function probeParams(probe: SearchProbe): { name: string; nameEnd: string; address: string; addressEnd: string } {
  return {
    name: probe.name ?? '',
    nameEnd: probe.name === null ? '' : upperBound(probe.name),
    address: probe.address ?? '',
    addressEnd: probe.address === null ? '' : upperBound(probe.address),
  };
}

/** How a contact outside the tenant's users matches the probe, if it does (as the index would rank a user). */
export function externalMatch(contact: FrequentContact, probe: SearchProbe): PeopleMatchKind | undefined {
  if (probe.name !== null && contact.name) {
    const terms = nameTerms(contact.name);
    if (terms.includes(probe.name)) return 'exactName';
    if (terms.some((t) => t.startsWith(probe.name!))) return 'name';
  }
  if (probe.address !== null && addressTerms(contact.address).some((t) => t.startsWith(probe.address!))) return 'email';
  return undefined;
}

const TIERS: PeopleMatchKind[] = ['exactName', 'name', 'email'];

/** Text in the order both backends compare it (bytewise UTF-8, i.e. by code point). */
const bytewise = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

function rankKey(m: PeopleMatch) {
  const frequent = m.kind === 'user' ? m.frequent : m.contact;
  return {
    frequent,
    tier: TIERS.indexOf(m.match),
    sortName: m.kind === 'user' ? sortNameOf(m.person.user.displayName) : sortNameOf(m.contact.name ?? m.contact.address),
    address: m.kind === 'user' ? addressKey(m.person.user.email) : m.contact.address,
    id: m.kind === 'user' ? m.person.user.id : '',
  };
}

/** The search's order (the statement's ORDER BY, for merging users with external contacts). */
export function comparePeople(a: PeopleMatch, b: PeopleMatch): number {
  const x = rankKey(a);
  const y = rankKey(b);
  if (x.frequent && !y.frequent) return -1;
  if (!x.frequent && y.frequent) return 1;
  if (x.frequent && y.frequent) {
    if (x.frequent.count !== y.frequent.count) return y.frequent.count - x.frequent.count;
    if (x.frequent.lastSentAt !== y.frequent.lastSentAt) return y.frequent.lastSentAt - x.frequent.lastSentAt;
  }
  return x.tier - y.tier || bytewise(x.sortName, y.sortName) || bytewise(x.address, y.address) || bytewise(x.id, y.id);
}

/** The users the statement found (already in order, at most `limit`) with the matching external contacts. */
export function mergeMatches(users: PeopleMatch[], frequentOutside: FrequentContact[], probe: SearchProbe, limit: number): PeopleMatch[] {
  const external: PeopleMatch[] = [];
  for (const contact of frequentOutside) {
    const match = externalMatch(contact, probe);
    if (match) external.push({ kind: 'external', contact, match });
  }
  return [...users, ...external].sort(comparePeople).slice(0, limit);
}

// Re-indexing: a queued user's terms and sort data, computed here for both backends.

export interface IndexedUser {
  userId: string;
  /** Null when the user is no longer in the tenant (deleted or moved): their index rows go. */
  person: { sortName: string; address: string; terms: Array<{ kind: 0 | 1; term: string }> } | null;
}

/** A queued user's row (`user_id`, and `display_name` and `email`, null when the user left the tenant) as what to index. */
export function indexedUser(r: Row): IndexedUser {
  const displayName = r.display_name as string | null;
  const email = r.email as string | null;
  return {
    userId: r.user_id as string,
    person:
      displayName === null || email === null
        ? null
        : {
            sortName: sortNameOf(displayName),
            address: addressKey(email),
            terms: [
              ...nameTerms(displayName).map((term) => ({ kind: 0 as const, term })),
              ...addressTerms(email).map((term) => ({ kind: 1 as const, term })),
            ],
          },
  };
}

// Statements shared by both backends (named parameters: PostgreSQL's store numbers them).

export type Dialect = 'sqlite' | 'postgres';

/** A user with their entry: the columns `toPerson` reads. */
const PERSON_COLUMNS = `u.id, u.tenant_id, u.username, u.email, u.display_name, u.role, u.password_hash, u.session_version,
  u.disabled, u.created_at, u.updated_at, e.user_id AS e_user_id, e.title AS e_title, e.department AS e_department,
  e.office AS e_office, e.phone AS e_phone, e.mobile AS e_mobile, e.manager_id AS e_manager_id, e.hidden AS e_hidden,
  e.updated_at AS e_updated_at`;

/**
 * A join of `alias`, the row of `table` in the tenant whose `column`s equal the given expressions of the rows before
 * it: one primary-key lookup per row before, on either backend, whatever the planners' statistics say. Both planners
 * were seen to do far worse when their statistics were stale, right after a bulk of users was added (the first
 * search after an import): taking the tenant's rows for a handful, they read the whole tenant for every row before
 * (over a minute for 10,000 users). So (with the migration's index order, which leaves the primary key the only
 * index that starts with the tenant):
 * - SQLite: CROSS (and LEFT) JOIN keep the written order, and the unary plus (a no-op on the value) keeps `users`'
 *   tenant index out of the choices for a lookup by id;
 * - PostgreSQL: a LATERAL subquery kept apart by OFFSET 0 is planned on its own, with the tenant and the key both
 *   conditions of one index scan, instead of a scan of the tenant repeated under a join filter.
 */
function lookup(dialect: Dialect, join: 'inner' | 'left', table: string, alias: string, keys: Record<string, string>): string {
  const conditions = Object.entries(keys);
  if (dialect === 'postgres') {
    const where = [['tenant_id', '@tenant'], ...conditions].map(([column, value]) => `${column} = ${value}`).join(' AND ');
    return join === 'left'
      ? `LEFT JOIN LATERAL (SELECT * FROM ${table} WHERE ${where} OFFSET 0) ${alias} ON true`
      : `CROSS JOIN LATERAL (SELECT * FROM ${table} WHERE ${where} OFFSET 0) ${alias}`;
  }
  const tenant = table === 'users' ? `+${alias}.tenant_id` : `${alias}.tenant_id`;
  const on = [`${tenant} = @tenant`, ...conditions.map(([column, value]) => `${alias}.${column} = ${value}`)].join(' AND ');
  return `${join === 'left' ? 'LEFT' : 'CROSS'} JOIN ${table} ${alias} ON ${on}`;
}

/** The statements in a backend's dialect (they differ only in how they join: `lookup`). */
export function directorySql(dialect: Dialect) {
  const join = (kind: 'inner' | 'left', table: string, alias: string, keys: Record<string, string>) => lookup(dialect, kind, table, alias, keys);
  /** The person's entry, for rows that have `u`. */
  const entryOfU = join('left', 'directory_entries', 'e', { user_id: 'u.id' });
  return {
    entry: 'SELECT * FROM directory_entries WHERE tenant_id = @tenant AND user_id = @user',
    // Both keys are given: either planner looks `users` up by its key (SQLite once the tenant index is out of reach).
    person: `SELECT ${PERSON_COLUMNS} FROM users u
      ${entryOfU}
      WHERE ${dialect === 'sqlite' ? '+u.tenant_id' : 'u.tenant_id'} = @tenant AND u.id = @user`,
    /**
     * Up the chain until the top (a NULL manager ends it: `<>` and the lookup are false for NULL), the depth limit,
     * or back at the user (a cycle, which the caller then refuses).
     */
    managers: `WITH RECURSIVE chain (user_id, depth) AS (
        SELECT manager_id, 1 FROM directory_entries WHERE tenant_id = @tenant AND user_id = @user
        UNION ALL
        SELECT up.manager_id, c.depth + 1 FROM chain c
        ${join('inner', 'directory_entries', 'up', { user_id: 'c.user_id' })}
        WHERE c.user_id <> @user AND c.depth < ${MAX_MANAGER_CHAIN}
      )
      SELECT ${PERSON_COLUMNS} FROM chain c
      ${join('inner', 'users', 'u', { id: 'c.user_id' })}
      ${entryOfU}
      ORDER BY c.depth`,
    reports: `SELECT ${PERSON_COLUMNS} FROM directory_entries r
      ${join('inner', 'users', 'u', { id: 'r.user_id' })}
      ${entryOfU}
      WHERE r.tenant_id = @tenant AND r.manager_id = @manager
      ORDER BY u.display_name, u.id`,
    frequent: `SELECT address, name, sent_count, last_sent_at FROM directory_frequent WHERE tenant_id = @tenant AND user_id = @user
      ORDER BY sent_count DESC, last_sent_at DESC, address`,
    /** Whether the tenant has users waiting to be indexed (one index probe, every search). */
    pendingAny: 'SELECT 1 AS pending FROM directory_pending WHERE tenant_id = @tenant LIMIT 1',
    /** The tenant's queued users with what to index of them (SQLite's; PostgreSQL claims the queue first). */
    pending: `SELECT q.user_id, u.display_name, u.email FROM directory_pending q
      ${join('left', 'users', 'u', { id: 'q.user_id' })}
      WHERE q.tenant_id = @tenant`,
    /**
     * The users matching the probe, ranked (the caller's frequent contacts first, then by tier, name, address, id):
     * two range scans of the terms' primary key (tenant, kind, term), then one key lookup per match in each table.
     */
    search: `WITH hits AS (
        SELECT user_id, CASE WHEN term = @name THEN 0 ELSE 1 END AS tier FROM directory_terms
        WHERE tenant_id = @tenant AND kind = 0 AND term >= @name AND term < @nameEnd
        UNION ALL
        SELECT user_id, 2 AS tier FROM directory_terms
        WHERE tenant_id = @tenant AND kind = 1 AND term >= @address AND term < @addressEnd
      ), matched AS (SELECT user_id, min(tier) AS tier FROM hits GROUP BY user_id)
      SELECT ${PERSON_COLUMNS}, m.tier AS tier, f.address AS f_address, f.name AS f_name, f.sent_count AS f_count,
        f.last_sent_at AS f_last
      FROM matched m
      ${join('inner', 'directory_people', 'p', { user_id: 'm.user_id' })}
      ${join('inner', 'users', 'u', { id: 'm.user_id' })}
      ${entryOfU}
      ${join('left', 'directory_frequent', 'f', { user_id: '@caller', address: 'p.address' })}
      WHERE NOT coalesce(e.hidden, FALSE)
      ORDER BY f.sent_count IS NULL, f.sent_count DESC, f.last_sent_at DESC, m.tier, p.sort_name, p.address, u.id
      LIMIT @limit`,
    /**
     * The caller's frequent contacts that are no user of the tenant (a user's address is in `directory_people`): one
     * lookup of the address index per contact (on PostgreSQL a LATERAL subquery that names the tenant through the
     * contact's row, so no constant tempts it into a scan of the tenant's people per contact).
     */
    frequentOutside:
      dialect === 'sqlite'
        ? `SELECT f.address, f.name, f.sent_count, f.last_sent_at FROM directory_frequent f
          WHERE f.tenant_id = @tenant AND f.user_id = @caller
            AND NOT EXISTS (SELECT 1 FROM directory_people p WHERE p.address = f.address AND p.tenant_id = f.tenant_id)`
        : `SELECT f.address, f.name, f.sent_count, f.last_sent_at FROM directory_frequent f
          LEFT JOIN LATERAL (SELECT 1 AS found FROM directory_people p WHERE p.address = f.address AND p.tenant_id = f.tenant_id
            LIMIT 1) known ON true
          WHERE f.tenant_id = @tenant AND f.user_id = @caller AND known.found IS NULL`,
  } as const;
}

const SQL = directorySql('sqlite');

// Rows as records.

const text = (v: unknown) => (v === null || v === undefined ? null : (v as string));
const flag = (v: unknown) => v === true || v === 1;

export const toEntry = (r: Row): DirectoryEntry => ({
  tenantId: r.tenant_id as string,
  userId: r.user_id as string,
  title: text(r.title),
  department: text(r.department),
  office: text(r.office),
  phone: text(r.phone),
  mobile: text(r.mobile),
  managerId: text(r.manager_id),
  hiddenFromDirectory: flag(r.hidden),
  updatedAt: Number(r.updated_at),
});

/** A row of PERSON_COLUMNS. */
export const toPerson = (r: Row): DirectoryPerson => ({
  user: toUser(r),
  entry:
    r.e_user_id === null || r.e_user_id === undefined
      ? null
      : {
          tenantId: r.tenant_id as string,
          userId: r.e_user_id as string,
          title: text(r.e_title),
          department: text(r.e_department),
          office: text(r.e_office),
          phone: text(r.e_phone),
          mobile: text(r.e_mobile),
          managerId: text(r.e_manager_id),
          hiddenFromDirectory: flag(r.e_hidden),
          updatedAt: Number(r.e_updated_at),
        },
});

export const toFrequent = (r: Row): FrequentContact => ({
  address: r.address as string,
  name: text(r.name),
  count: Number(r.sent_count),
  lastSentAt: Number(r.last_sent_at),
});

/** A row of the search statement. */
export const toUserMatch = (r: Row): PeopleMatch => ({
  kind: 'user',
  person: toPerson(r),
  match: TIERS[Number(r.tier)]!,
  frequent:
    r.f_address === null || r.f_address === undefined
      ? null
      : { address: r.f_address as string, name: text(r.f_name), count: Number(r.f_count), lastSentAt: Number(r.f_last) },
});

/**
 * The contacts a `recordSent` call counts: keyed, each address once (its last non-empty name wins), in address order
 * (two concurrent calls then lock their rows in one order, PostgreSQL).
 */
export function sentContacts(contacts: Array<{ address: string; name: string | null }>): Array<{ address: string; name: string | null }> {
  const byAddress = new Map<string, string | null>();
  for (const c of contacts) {
    const address = addressKey(c.address);
    if (!address) continue;
    const name = c.name?.trim() || null;
    byAddress.set(address, name ?? byAddress.get(address) ?? null);
  }
  return [...byAddress]
    .sort(([a], [b]) => bytewise(a, b))
    .map(([address, name]) => ({ address, name }));
}

export function directoryRepositories(sql: Sql, transaction: <T>(fn: () => T) => T): Pick<StoreMethods, 'directory'> {
  /** Indexes the tenant's queued users (in one transaction; nothing to do is one index probe). */
  const catchUp = (tenantId: string) => {
    if (!sql(SQL.pendingAny).get({ tenant: tenantId })) return;
    // One IMMEDIATE transaction: no other writer can queue a user between the read and the removal of the queue.
    transaction(() => {
      const queued = (sql(SQL.pending).all({ tenant: tenantId }) as Row[]).map(indexedUser);
      const removeTerms = sql('DELETE FROM directory_terms WHERE tenant_id = ? AND user_id = ?');
      const removePerson = sql('DELETE FROM directory_people WHERE tenant_id = ? AND user_id = ?');
      for (const u of queued) {
        removeTerms.run(tenantId, u.userId);
        removePerson.run(tenantId, u.userId);
      }
      // In key order, so a bulk of new users (the first search after the migration or an import) fills the index
      // page by page rather than all over it.
      const terms = queued.flatMap((u) => (u.person ? u.person.terms.map((t) => ({ ...t, userId: u.userId })) : []));
      terms.sort((a, b) => a.kind - b.kind || (a.term < b.term ? -1 : a.term > b.term ? 1 : 0));
      const addTerm = sql('INSERT OR IGNORE INTO directory_terms (tenant_id, kind, term, user_id) VALUES (?, ?, ?, ?)');
      for (const t of terms) addTerm.run(tenantId, t.kind, t.term, t.userId);
      const addPerson = sql('INSERT INTO directory_people (tenant_id, user_id, sort_name, address) VALUES (?, ?, ?, ?)');
      for (const u of queued) if (u.person) addPerson.run(tenantId, u.userId, u.person.sortName, u.person.address);
      sql('DELETE FROM directory_pending WHERE tenant_id = ?').run(tenantId);
    });
  };

  return {
    directory: {
      entry(tenantId, userId) {
        const r = sql(SQL.entry).get({ tenant: tenantId, user: userId }) as Row | undefined;
        return r && toEntry(r);
      },
      putEntry(e) {
        sql(
          `INSERT INTO directory_entries (tenant_id, user_id, title, department, office, phone, mobile, manager_id, hidden, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (tenant_id, user_id) DO UPDATE SET title = excluded.title, department = excluded.department,
             office = excluded.office, phone = excluded.phone, mobile = excluded.mobile, manager_id = excluded.manager_id,
             hidden = excluded.hidden, updated_at = excluded.updated_at`,
        ).run(e.tenantId, e.userId, e.title, e.department, e.office, e.phone, e.mobile, e.managerId, e.hiddenFromDirectory ? 1 : 0, e.updatedAt);
      },
      person(tenantId, userId) {
        const r = sql(SQL.person).get({ tenant: tenantId, user: userId }) as Row | undefined;
        return r && toPerson(r);
      },
      // SQLite writers take turns anyway (BEGIN IMMEDIATE): a check and its write are never raced.
      managers(tenantId, userId) {
        return (sql(SQL.managers).all({ tenant: tenantId, user: userId }) as Row[]).map(toPerson);
      },
      reports(tenantId, managerId) {
        return (sql(SQL.reports).all({ tenant: tenantId, manager: managerId }) as Row[]).map(toPerson);
      },
      recordSent(tenantId, userId, contacts, now) {
        const counted = sentContacts(contacts);
        if (!counted.length) return;
        transaction(() => {
          const count = sql(
            `INSERT INTO directory_frequent (tenant_id, user_id, address, name, sent_count, last_sent_at) VALUES (?, ?, ?, ?, 1, ?)
             ON CONFLICT (tenant_id, user_id, address) DO UPDATE SET sent_count = sent_count + 1,
               last_sent_at = max(last_sent_at, excluded.last_sent_at), name = coalesce(excluded.name, name)`,
          );
          for (const c of counted) count.run(tenantId, userId, c.address, c.name, now);
          // Keep the most recent ones; the others would rank last anyway.
          sql(
            `DELETE FROM directory_frequent WHERE tenant_id = @tenant AND user_id = @user AND address IN (
               SELECT address FROM directory_frequent WHERE tenant_id = @tenant AND user_id = @user
               ORDER BY last_sent_at DESC, sent_count DESC, address LIMIT -1 OFFSET ${MAX_FREQUENT_CONTACTS})`,
          ).run({ tenant: tenantId, user: userId });
        });
      },
      frequent(tenantId, userId) {
        return (sql(SQL.frequent).all({ tenant: tenantId, user: userId }) as Row[]).map(toFrequent);
      },
      search(tenantId, callerId, query, limit) {
        const probe = searchProbe(query);
        if ((probe.name === null && probe.address === null) || limit <= 0) return [];
        catchUp(tenantId);
        const users = (sql(SQL.search).all({ tenant: tenantId, caller: callerId, limit, ...probeParams(probe) }) as Row[]).map(toUserMatch);
        const outside = (sql(SQL.frequentOutside).all({ tenant: tenantId, caller: callerId }) as Row[]).map(toFrequent);
        return mergeMatches(users, outside, probe, limit);
      },
    },
  };
}
