/**
 * Web-session refreshes in PostgreSQL (schema/postgres/0017_web_refresh.sql; the SQLite store's webRefresh.ts is the
 * specification, and its row mapper is used here): how the nodes agree on who refreshes a web session's refresh
 * token. A global table; nothing here takes a mailbox lock.
 */
import type { TxStore } from '../types';
import { FORGET_CHAIN, WEB_REFRESH_COLUMNS, toWebRefresh } from '../sqlite/webRefresh';
import { rowCount, rows, type Tx } from './tx';

export function webRefreshSteps(tx: Tx): Pick<TxStore, 'webRefresh'> {
  function* read(key: string) {
    const [r] = yield* rows(tx, `SELECT ${WEB_REFRESH_COLUMNS} FROM web_refreshes WHERE key = $1`, [key]);
    return r && toWebRefresh(r);
  }
  return {
    webRefresh: {
      *claim(key, now, leaseMs) {
        // Of concurrent inserts of one key, the later waits for the earlier's commit and then takes the conflict
        // path, whose WHERE holds only for an expired row: exactly one claimer gets a row back.
        for (;;) {
          const taken = yield* rows(
            tx,
            `INSERT INTO web_refreshes (key, claimed_at, result, successor, expires_at) VALUES ($1, $2, NULL, NULL, $3)
             ON CONFLICT (key) DO UPDATE SET claimed_at = excluded.claimed_at, result = NULL, successor = NULL, expires_at = excluded.expires_at
             WHERE web_refreshes.expires_at <= $2
             RETURNING key`,
            [key, now, now + leaseMs],
          );
          if (taken.length > 0) return 'claimed' as const;
          const current = yield* read(key);
          if (current) return current;
          // Purged between the two statements (READ COMMITTED): claim again.
        }
      },
      *complete(key, result, successor, expiresAt) {
        return (yield* rowCount(tx, 'UPDATE web_refreshes SET result = $2, successor = $3, expires_at = $4 WHERE key = $1', [key, result, successor, expiresAt])) === 1;
      },
      read,
      *forget(successor) {
        return yield* rowCount(tx, `UPDATE web_refreshes SET result = '', successor = NULL WHERE key IN (${FORGET_CHAIN('$1')})`, [successor]);
      },
      *purge(now) {
        return yield* rowCount(tx, 'DELETE FROM web_refreshes WHERE expires_at <= $1', [now]);
      },
    },
  };
}
