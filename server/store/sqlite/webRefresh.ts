/**
 * Web-session refreshes in SQLite (schema/sqlite/0015_web_refresh.sql): the rows through which the worker processes
 * over one file agree on who refreshes a web session's refresh token (server/web/sessions.ts). The row mapper and
 * the statements' shape are shared with the PostgreSQL store. Nothing here is cached: writes announce nothing.
 */
import type { Sql } from './devices';
import type { StoreMethods, WebRefreshRecord } from '../types';

type Row = Record<string, unknown>;

export const WEB_REFRESH_COLUMNS = 'key, claimed_at, result, expires_at';

/**
 * The keys of the rows whose result leads to the session `successor` names: the row that refreshed into it, the row
 * that refreshed into that one's old session (its successor is that row's key), and so on back.
 */
export const FORGET_CHAIN = (param: string) =>
  `WITH RECURSIVE chain(key) AS (
     SELECT key FROM web_refreshes WHERE successor = ${param}
     UNION SELECT w.key FROM web_refreshes w JOIN chain c ON w.successor = c.key
   ) SELECT key FROM chain`;

export const toWebRefresh = (r: Row): WebRefreshRecord => ({
  key: r.key as string,
  claimedAt: Number(r.claimed_at),
  result: (r.result as string | null) ?? null,
  expiresAt: Number(r.expires_at),
});

export function webRefreshRepositories(sql: Sql, transaction: <T>(fn: () => T) => T): Pick<StoreMethods, 'webRefresh'> {
  const read = (key: string) => {
    const r = sql(`SELECT ${WEB_REFRESH_COLUMNS} FROM web_refreshes WHERE key = ?`).get(key) as Row | undefined;
    return r && toWebRefresh(r);
  };
  return {
    webRefresh: {
      claim(key, now, leaseMs) {
        // Under the write lock (a transaction of its own when called alone): another process's claim of the same key
        // waits for it, then finds the row and is not `claimed`.
        return transaction(() => {
          const taken = sql(
            `INSERT INTO web_refreshes (key, claimed_at, result, successor, expires_at) VALUES (?, ?, NULL, NULL, ?)
             ON CONFLICT (key) DO UPDATE SET claimed_at = excluded.claimed_at, result = NULL, successor = NULL, expires_at = excluded.expires_at
             WHERE web_refreshes.expires_at <= ?
             RETURNING key`,
          ).get(key, now, now + leaseMs, now);
          return taken ? 'claimed' : read(key)!;
        });
      },
      complete(key, result, successor, expiresAt) {
        return sql('UPDATE web_refreshes SET result = ?, successor = ?, expires_at = ? WHERE key = ?').run(result, successor, expiresAt, key).changes === 1;
      },
      read,
      forget(successor) {
        return sql(`UPDATE web_refreshes SET result = '', successor = NULL WHERE key IN (${FORGET_CHAIN('?')})`).run(successor).changes;
      },
      purge(now) {
        return sql('DELETE FROM web_refreshes WHERE expires_at <= ?').run(now).changes;
      },
    },
  };
}
