/**
 * What the nodes sharing one database keep there besides the store's data: the key material (when no key files are
 * configured) and the token endpoint's rate-limit counts. Neither is part of the `Store` contract (SQLite keeps keys
 * in files and counts in the cluster's primary): main.ts uses them when the store is PostgreSQL.
 */
import type { Pool } from 'pg';
import { exclusiveLockKey } from './exclusive';

/** Named secrets, created once for every node. Values are never logged. */
export interface SharedSecrets {
  /** The secret called `name`: the one in the database, or, when there is none yet, `create()`'s, stored for all. */
  getOrCreate(name: string, create: () => string): Promise<string>;
}

/** A counter in a fixed window, as express-rate-limit's stores keep them. */
export interface WindowCount {
  hits: number;
  /** When the window ends (ms since the epoch, the database's clock). */
  resetAt: number;
}

/** Counts per limiter (`name`) and key, each in its own window; every node counts in the same rows. */
export interface SharedCounters {
  /** Counts one more hit (the first of a new window when the last one ended) and answers the count. */
  increment(name: string, key: string, windowMs: number): Promise<WindowCount>;
  decrement(name: string, key: string): Promise<void>;
  get(name: string, key: string): Promise<WindowCount | undefined>;
  reset(name: string, key: string): Promise<void>;
  /** Deletes the rows of ended windows; answers how many went. */
  sweep(): Promise<number>;
}

/** Now on the database's clock, which every node shares (theirs may drift apart). */
const NOW_MS = `(extract(epoch FROM statement_timestamp()) * 1000)::bigint`;

export function sharedSecrets(pool: Pool, fail: (err: unknown) => never): SharedSecrets {
  return {
    async getOrCreate(name, create) {
      const client = await pool.connect().catch(fail);
      let broken = false;
      try {
        await client.query('BEGIN');
        // One node creates, the others wait here and read what it created.
        await client.query('SELECT pg_advisory_xact_lock($1::bigint)', [exclusiveLockKey(`secret ${name}`)]);
        const found = await client.query<{ value: string }>('SELECT value FROM node_secrets WHERE name = $1', [name]);
        let value = found.rows[0]?.value;
        if (value === undefined) {
          value = create();
          await client.query(`INSERT INTO node_secrets (name, value, created_at) VALUES ($1, $2, ${NOW_MS})`, [name, value]);
        }
        await client.query('COMMIT');
        return value;
      } catch (err) {
        broken = await client.query('ROLLBACK').then(() => false, () => true);
        return fail(err);
      } finally {
        client.release(broken);
      }
    },
  };
}

export function sharedCounters(pool: Pool, fail: (err: unknown) => never): SharedCounters {
  const row = (r: { hits: number; reset_at: number } | undefined): WindowCount | undefined =>
    r ? { hits: Number(r.hits), resetAt: Number(r.reset_at) } : undefined;
  return {
    async increment(name, key, windowMs) {
      // One statement: concurrent increments from any node serialize on the row, none is lost.
      const r = await pool
        .query<{ hits: number; reset_at: number }>(
          `INSERT INTO rate_limits AS r (name, key, hits, reset_at) VALUES ($1, $2, 1, ${NOW_MS} + $3::bigint)
           ON CONFLICT (name, key) DO UPDATE SET
             hits = CASE WHEN r.reset_at <= ${NOW_MS} THEN 1 ELSE r.hits + 1 END,
             reset_at = CASE WHEN r.reset_at <= ${NOW_MS} THEN ${NOW_MS} + $3::bigint ELSE r.reset_at END
           RETURNING hits, reset_at`,
          [name, key, Math.max(1, Math.round(windowMs))],
        )
        .catch(fail);
      return row(r.rows[0])!;
    },
    async decrement(name, key) {
      await pool
        .query(`UPDATE rate_limits SET hits = hits - 1 WHERE name = $1 AND key = $2 AND hits > 0 AND reset_at > ${NOW_MS}`, [name, key])
        .catch(fail);
    },
    async get(name, key) {
      const r = await pool
        .query<{ hits: number; reset_at: number }>(`SELECT hits, reset_at FROM rate_limits WHERE name = $1 AND key = $2 AND reset_at > ${NOW_MS}`, [name, key])
        .catch(fail);
      return row(r.rows[0]);
    },
    async reset(name, key) {
      await pool.query('DELETE FROM rate_limits WHERE name = $1 AND key = $2', [name, key]).catch(fail);
    },
    async sweep() {
      const r = await pool.query(`DELETE FROM rate_limits WHERE reset_at <= ${NOW_MS}`).catch(fail);
      return r.rowCount ?? 0;
    },
  };
}
