/**
 * Opening a SQLite connection the way Pigeon needs it, and applying the numbered migrations in schema/sqlite/.
 * This folder is the only place that imports better-sqlite3.
 */
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import Database from 'better-sqlite3';

export type Db = Database.Database;

export const MIGRATIONS_DIR = path.resolve(__dirname, '../../../schema/sqlite');

/**
 * WAL for concurrent readers; `synchronous=FULL` on every connection because better-sqlite3's build quietly uses
 * NORMAL under WAL, which loses acknowledged commits on power loss (field-notes.md: 224 of 224 lost).
 */
export function openDatabase(file: string, options: { readonly?: boolean } = {}): Db {
  if (file !== ':memory:') fs.mkdirSync(path.dirname(file), { recursive: true });
  const db = new Database(file, { readonly: options.readonly ?? false });
  if (!options.readonly) db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  return db;
}

export interface MigrationReport {
  applied: string[];
  current: string[];
}

/**
 * Applies every migration not yet recorded, each in its own transaction, in file-name order. A landed migration
 * whose text changed is refused: migrations are history and are never edited.
 */
export function migrate(db: Db, dir = MIGRATIONS_DIR, now = Date.now()): MigrationReport {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    name TEXT PRIMARY KEY, checksum TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`);
  const files = fs
    .readdirSync(dir)
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort();
  const done = new Map(
    (db.prepare('SELECT name, checksum FROM schema_migrations').all() as { name: string; checksum: string }[]).map(
      (r) => [r.name, r.checksum],
    ),
  );
  const applied: string[] = [];
  for (const name of files) {
    const sql = fs.readFileSync(path.join(dir, name), 'utf8');
    const checksum = crypto.createHash('sha256').update(sql).digest('hex');
    const prior = done.get(name);
    if (prior !== undefined) {
      if (prior !== checksum) throw new Error(`migration ${name} was edited after it was applied`);
      continue;
    }
    db.transaction(() => {
      db.exec(sql);
      db.prepare('INSERT INTO schema_migrations (name, checksum, applied_at) VALUES (?, ?, ?)').run(name, checksum, now);
    })();
    applied.push(name);
  }
  return { applied, current: files };
}
