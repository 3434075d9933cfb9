/**
 * The numbered migrations in schema/postgres/ (the same names as schema/sqlite/), applied in order, each in its own
 * transaction, recorded in `schema_migrations` with a checksum. Several nodes may start at once: each migration's
 * transaction first takes one advisory lock, so exactly one node applies it and the others find it recorded.
 */
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import type { ClientBase } from 'pg';

export const MIGRATIONS_DIR = path.resolve(__dirname, '../../../schema/postgres');

/** The advisory lock every migration transaction takes (an arbitrary constant: "pigeon" in ASCII). */
const MIGRATION_LOCK = 0x706967656f6e;

export interface MigrationReport {
  /** The files this call applied. */
  applied: string[];
  /** Every migration file there is. */
  current: string[];
}

/**
 * Applies every migration not yet recorded. A landed migration whose text changed is refused: migrations are
 * history and are never edited.
 */
export async function migrate(client: ClientBase, dir = MIGRATIONS_DIR, now = Date.now()): Promise<MigrationReport> {
  const files = fs
    .readdirSync(dir)
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort();
  const applied: string[] = [];
  for (const name of files) {
    const sql = fs.readFileSync(path.join(dir, name), 'utf8');
    const checksum = crypto.createHash('sha256').update(sql).digest('hex');
    await client.query('BEGIN');
    try {
      await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        name TEXT COLLATE "C" PRIMARY KEY, checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)`);
      const prior = await client.query<{ checksum: string }>('SELECT checksum FROM schema_migrations WHERE name = $1', [name]);
      if (prior.rows[0]) {
        if (prior.rows[0].checksum !== checksum) throw new Error(`migration ${name} was edited after it was applied`);
        await client.query('COMMIT');
        continue;
      }
      await client.query(sql);
      await client.query('INSERT INTO schema_migrations (name, checksum, applied_at) VALUES ($1, $2, $3)', [name, checksum, now]);
      await client.query('COMMIT');
      applied.push(name);
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }
  return { applied, current: files };
}
