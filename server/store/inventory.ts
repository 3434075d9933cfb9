/**
 * The admin inventory's page query (`devices.inventoryPage`, `devices.inventoryCount`), written once for both
 * backends: the filter, the order and the keyset in SQL, so a page costs an index walk instead of the whole tenant.
 *
 * The order is the inventory's (server/devices/service.ts `compareKeyed`): NULL before every value, ties by record
 * id, all of it reversed for descending. Text keys are folded to lower case for ASCII letters only and compared
 * bytewise — what SQLite's lower() and BINARY do, PostgreSQL's nocase() and COLLATE "C" (every text column), and
 * `asciiLower` with `compareCodePoints` in memory, so both paths of the service order alike.
 */
import type { DeviceInventoryFilter, DeviceInventorySort } from './types';

/** Lower case for A-Z only: SQLite's lower() without ICU, the schema's nocase() in PostgreSQL. */
export const asciiLower = (s: string) => s.replace(/[A-Z]+/g, (m) => m.toLowerCase());

/**
 * Strings in code point order, as SQLite (memcmp of UTF-8) and PostgreSQL's "C" collation compare them. JavaScript's
 * `<` compares UTF-16 units, which puts a character beyond U+FFFF (a surrogate pair) before U+E000..U+FFFF.
 */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Surrogates (D800-DFFF) move above E000-FFFF; both move by the same amount within their range.
    if (x >= 0xd800) x += x >= 0xe000 ? -0x800 : 0x2000;
    if (y >= 0xd800) y += y >= 0xe000 ? -0x800 : 0x2000;
    return x < y ? -1 : 1;
  }
  return a.length - b.length < 0 ? -1 : a.length > b.length ? 1 : 0;
}

/** What differs between the backends: the folding function, the sort keys' columns, the substring test, the tenant. */
export interface InventoryDialect {
  fold(expr: string): string;
  /** A devices text column folded as a sort key: what its inventory index holds. */
  sortKey(column: 'friendly_name' | 'device_model' | 'client_type'): string;
  /** The owner's username folded as a sort key (as an index on users holds it, where one does). */
  userKey: string;
  contains(haystack: string, needle: string): string;
  /**
   * The tenant's term, `d.tenant_id = ?`: each inventory index starts with it (schema/sqlite/0018_device_tenant.sql),
   * so a page is a walk of the tenant's own range. `byUser`: one user's devices are asked for, which the user's own
   * index finds; SQLite's planner, with no statistics, would rather walk the tenant's range in order, and `+` keeps
   * it off the tenant's indexes.
   */
  tenant(byUser: boolean): string;
}

/** The page's rows name their owner (`u.username`): users is joined by primary key, one probe per row read. */
const FROM = 'FROM devices d JOIN users u ON u.id = d.user_id';

export const SQLITE_INVENTORY: InventoryDialect = {
  fold: (e) => `lower(${e})`,
  sortKey: (c) => `d.${c}_sort`, // lower(c), a virtual column (schema/sqlite/0016_device_inventory.sql says why)
  userKey: 'lower(u.username)',
  contains: (h, n) => `instr(${h}, ${n}) > 0`,
  tenant: (byUser) => (byUser ? '+d.tenant_id = ?' : 'd.tenant_id = ?'),
};

export const POSTGRES_INVENTORY: InventoryDialect = {
  // lower() of a COLLATE "C" column (every text column is) folds ASCII letters only, as nocase() does at a tenth of
  // its cost per row, which a search pays on every device of the tenant (schema/postgres/0018_device_inventory.sql).
  fold: (e) => `lower(${e})`,
  sortKey: (c) => `lower(d.${c})`,
  userKey: 'nocase(u.username)', // users_username's expression: the order by owner can walk it
  contains: (h, n) => `strpos(${h}, ${n}) > 0`,
  tenant: () => 'd.tenant_id = ?', // the planner has statistics: it finds one user's devices by the user's index
};

/** The expression each sort key orders by, and whether it can be NULL. */
function sortExpr(d: InventoryDialect, key: DeviceInventorySort['key']): { expr: string; nullable: boolean } {
  switch (key) {
    case 'lastSyncTime':
      return { expr: 'd.last_success_sync_time', nullable: true };
    case 'firstSyncTime':
      return { expr: 'd.first_sync_time', nullable: false };
    case 'friendlyName':
      return { expr: d.sortKey('friendly_name'), nullable: true };
    case 'user':
      return { expr: d.userKey, nullable: false };
    case 'deviceModel':
      return { expr: d.sortKey('device_model'), nullable: true };
    case 'clientType':
      return { expr: d.sortKey('client_type'), nullable: true };
  }
}

/** SQL text with `?` parameters in order (PostgreSQL numbers them: `numbered`). */
export interface InventorySql {
  text: string;
  params: unknown[];
}

/** Whether the filter reads users' columns (q searches the owner's username and address). */
const searches = (f: DeviceInventoryFilter): f is DeviceInventoryFilter & { q: string } => f.q !== undefined && f.q !== '';

/** The filter's terms; `tenant` is the tenant's term (`d.tenant(…)` unless the walk starts from the owners). */
function where(f: DeviceInventoryFilter, d: InventoryDialect, tenant: string, params: unknown[]): string {
  const terms = [tenant];
  params.push(f.tenantId);
  if (f.userId !== undefined) terms.push('d.user_id = ?') && params.push(f.userId);
  if (f.clientType !== undefined) terms.push('d.client_type = ?') && params.push(f.clientType);
  if (f.deviceModel !== undefined) terms.push('d.device_model = ?') && params.push(f.deviceModel);
  if (searches(f)) {
    // A plain substring test on folded text: no LIKE pattern, so `%`, `_` and `\` in q are ordinary characters.
    const cols = ['d.friendly_name', 'd.device_id', 'd.device_model', 'u.username', 'u.email'];
    terms.push(`(${cols.map((c) => d.contains(d.fold(c), '?')).join(' OR ')})`);
    for (let i = 0; i < cols.length; i++) params.push(asciiLower(f.q));
  }
  return terms.join(' AND ');
}

export function inventoryCountSql(d: InventoryDialect, f: DeviceInventoryFilter): InventorySql {
  const params: unknown[] = [];
  // Without a search the count is of the tenant's range of one devices index, and needs no owner.
  const from = searches(f) ? FROM : 'FROM devices d';
  return { text: `SELECT count(*) AS n ${from} WHERE ${where(f, d, d.tenant(f.userId !== undefined), params)}`, params };
}

/**
 * One page: at most `limit` rows after `after` (the last row's key and id) in `sort`'s order. The order is two
 * segments, the rows whose key is NULL (first ascending, last descending) and the others; each is one range of an
 * index on (tenant_id, key, id) and is read as its own LIMITed query, so neither costs more than a page whatever the
 * cursor, nor anything for other tenants' devices.
 * Within a segment the keys are all NULL or none is: where a backend puts NULLs never matters, and one index serves
 * both directions.
 */
export function inventoryPageSql(
  d: InventoryDialect,
  columns: string,
  f: DeviceInventoryFilter,
  sort: DeviceInventorySort,
  after: { k: string | number | null; id: string } | undefined,
  limit: number,
): InventorySql {
  const { expr, nullable } = sortExpr(d, sort.key);
  const dir = sort.dir === 1 ? 'ASC' : 'DESC';
  const beyond = sort.dir === 1 ? '>' : '<';
  const params: unknown[] = [];
  // The order by owner sorts the tenant's devices by a users column whatever the filter: it starts from the tenant's
  // users (users_tenant), each user's devices by their own index, which reads fewer rows than the tenant's range of
  // devices with a probe of users for each (SQLite: 1 ms against 7 for a tenant of 1,000 devices). The devices'
  // copy of the tenant and the owner's are the same (schema/sqlite/0018_device_tenant.sql).
  const tenant = sort.key === 'user' ? 'u.tenant_id = ?' : d.tenant(f.userId !== undefined);
  const segment = (seg: number, cond: string, condParams: unknown[]) => {
    const filter = where(f, d, tenant, params);
    params.push(...condParams, limit);
    return `SELECT * FROM (SELECT ${seg} AS inv_seg, ${expr} AS inv_k, ${columns} ${FROM} WHERE ${filter} AND ${cond}
      ORDER BY ${expr} ${dir}, d.id ${dir} LIMIT ?) s${seg}`;
  };
  const nullSeg = (seg: number) => {
    if (!nullable) return null;
    if (after === undefined || (after.k !== null && sort.dir === -1)) return segment(seg, `${expr} IS NULL`, []);
    if (after.k === null) return segment(seg, `${expr} IS NULL AND d.id ${beyond} ?`, [after.id]);
    return null; // ascending, past the NULLs already
  };
  const valueSeg = (seg: number) => {
    if (after === undefined || (after.k === null && sort.dir === 1)) return segment(seg, `${expr} IS NOT NULL`, []);
    if (after.k === null) return null; // descending, the NULLs come last: nothing after them but NULLs
    return segment(seg, `(${expr}, d.id) ${beyond} (?, ?)`, [after.k, after.id]);
  };
  const parts = (sort.dir === 1 ? [nullSeg(0), valueSeg(1)] : [valueSeg(0), nullSeg(1)]).filter((p): p is string => p !== null);
  if (parts.length === 0) return { text: `SELECT ${columns} ${FROM} WHERE 1 = 0`, params: [] };
  const text = `SELECT * FROM (${parts.join(' UNION ALL ')}) page ORDER BY inv_seg, inv_k ${dir}, id ${dir} LIMIT ?`;
  params.push(limit);
  return { text, params };
}

/** `?` parameters as PostgreSQL's `$1`, `$2`, … (the inventory's SQL has no other question mark). */
export const numbered = (text: string) => {
  let n = 0;
  return text.replace(/\?/g, () => `$${++n}`);
};
