/**
 * Every store backend, opened the same way for tests that must hold on both (tests/store/contract/): a fresh store
 * over data of its own, and the few things a test cannot do through the `Store` API — make the store full, hold a
 * lock from another connection, open a second store over the same data — done here, the backend's way, so the tests
 * themselves stay backend-neutral.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import type { Store } from '../../server/store/types';
import { openSqliteStore, type SqliteStore } from '../../server/store/sqlite';
import { openPostgresStore } from '../../server/store/postgres';
import { openDatabase } from '../../server/store/sqlite/db';
import { freshDatabase, withClient } from './postgres';

export const STORE_BACKENDS = ['sqlite', 'postgres'] as const;
export type StoreBackend = (typeof STORE_BACKENDS)[number];

export interface TestStore {
  readonly backend: StoreBackend;
  /** The open store: a new object after `reopen`. */
  readonly store: Store;
  /** Closes every store opened here and deletes the data (the SQLite file, the PostgreSQL database). */
  close(): Promise<void>;
  /** Closes the store and opens the same data again, as a restart does; `store` is then the new one. */
  reopen(): Promise<Store>;
  /** A second store over the same data, as another process or node has (closed by `close`). */
  openAnother(): Promise<Store>;
  /**
   * Makes the store full: every write that needs space fails as on a full disk until `undo()`. SQLite: the file may
   * not grow (`max_page_count`, which fails exactly as a full disk does); PostgreSQL: a trigger on every table
   * raises disk_full (SQLSTATE 53100), since filling a real tablespace needs a file system of its own.
   */
  fill(): Promise<{ undo(): Promise<void> }>;
  /**
   * Another connection takes the write lock a change to `userId`'s mailbox needs and keeps it until `release()`.
   * `store` gives up waiting for a lock after a short time (SQLite: busy_timeout; PostgreSQL: lock_timeout).
   */
  lockElsewhere(userId: string): Promise<{ store: Store; release(): Promise<void> }>;
}

export interface TestStoreOptions {
  /** Names the temporary file or database (lower-case letters, digits, _), to tell them apart when debugging. */
  name?: string;
}

export function openTestStore(backend: StoreBackend, options: TestStoreOptions = {}): Promise<TestStore> {
  return backend === 'sqlite' ? openSqliteTestStore(options) : openPostgresTestStore(options);
}

/** How long a store waits for another connection's lock in `lockElsewhere`, before it answers StoreBusy. */
const SHORT_LOCK_WAIT_MS = 200;

async function openSqliteTestStore(options: TestStoreOptions): Promise<TestStore> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `pigeon-${options.name ?? 'store'}-`));
  const file = path.join(dir, 'pigeon.db');
  let store: SqliteStore = openSqliteStore(file);
  const others: SqliteStore[] = [];
  return {
    backend: 'sqlite',
    get store() {
      return store;
    },
    async close() {
      for (const s of [store, ...others]) await s.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
    async reopen() {
      await store.close();
      store = openSqliteStore(file);
      return store;
    },
    async openAnother() {
      const other = openSqliteStore(file);
      others.push(other);
      return other;
    },
    async fill() {
      // max_page_count is the connection's own setting: it goes on the store's connection. After a checkpoint the
      // file holds every page, and a limit of its current size leaves no page to grow into.
      const db = store.db;
      const before = db.pragma('max_page_count', { simple: true }) as number;
      db.pragma('wal_checkpoint(TRUNCATE)');
      db.pragma(`max_page_count = ${db.pragma('page_count', { simple: true }) as number}`);
      return { undo: async () => void db.pragma(`max_page_count = ${before}`) };
    },
    async lockElsewhere() {
      // SQLite locks the whole file for writing: any other connection's open write transaction holds the lock.
      const holder = openDatabase(file);
      holder.exec('BEGIN IMMEDIATE');
      const db = store.db;
      const before = db.pragma('busy_timeout', { simple: true }) as number;
      db.pragma(`busy_timeout = ${SHORT_LOCK_WAIT_MS}`);
      return {
        store,
        async release() {
          db.pragma(`busy_timeout = ${before}`);
          holder.exec('ROLLBACK');
          holder.close();
        },
      };
    },
  };
}

async function openPostgresTestStore(options: TestStoreOptions): Promise<TestStore> {
  const database = await freshDatabase(`pigeon_${options.name ?? 'store'}`);
  let store: Store;
  try {
    store = await openPostgresStore(database.url);
  } catch (err) {
    await database.drop();
    throw err;
  }
  const others: Store[] = [];
  /** Runs `fn` on an administrator's connection to the test database (outside every store). */
  const admin = <T>(fn: (c: Client) => Promise<T>) => withClient(database.url, fn);
  return {
    backend: 'postgres',
    get store() {
      return store;
    },
    async close() {
      try {
        for (const s of [store, ...others]) await s.close();
      } finally {
        await database.drop();
      }
    },
    async reopen() {
      await store.close();
      store = await openPostgresStore(database.url);
      return store;
    },
    async openAnother() {
      const other = await openPostgresStore(database.url);
      others.push(other);
      return other;
    },
    async fill() {
      await admin(async (c) => {
        await c.query(`CREATE FUNCTION pigeon_test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN RAISE EXCEPTION 'could not extend file: No space left on device (simulated)' USING ERRCODE = 'disk_full'; END $$`);
        for (const table of await userTables(c)) {
          await c.query(`CREATE TRIGGER pigeon_test_disk_full BEFORE INSERT OR UPDATE ON ${table}
            FOR EACH STATEMENT EXECUTE FUNCTION pigeon_test_disk_full()`);
        }
      });
      return {
        undo: () =>
          admin(async (c) => {
            await c.query('DROP FUNCTION pigeon_test_disk_full() CASCADE'); // CASCADE: its triggers with it
          }),
      };
    },
    async lockElsewhere(userId) {
      // Every change to a mailbox takes the next modseq from the mailbox's row: holding that row blocks them all.
      const holder = new Client({ connectionString: database.url });
      await holder.connect();
      let impatient: Store;
      try {
        await holder.query('BEGIN');
        const held = await holder.query('SELECT 1 FROM mailboxes WHERE user_id = $1 FOR UPDATE', [userId]);
        if (held.rowCount !== 1) throw new Error(`lockElsewhere: user ${userId} has no mailbox`);
        // A store of its own whose sessions give up on a lock soon (the store keeps a lock_timeout its URL sets).
        impatient = await openPostgresStore(withSessionOption(database.url, `-c lock_timeout=${SHORT_LOCK_WAIT_MS}`));
      } catch (err) {
        await holder.end();
        throw err;
      }
      return {
        store: impatient,
        async release() {
          await impatient.close();
          await holder.query('ROLLBACK');
          await holder.end();
        },
      };
    },
  };
}

/** The tables of the test database's own schemas (partitions counted with their parent), quoted for SQL. */
async function userTables(c: Client): Promise<string[]> {
  const r = await c.query<{ name: string }>(
    `SELECT format('%I.%I', n.nspname, cl.relname) AS name FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace
     WHERE cl.relkind IN ('r', 'p') AND NOT cl.relispartition
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'`,
  );
  if (r.rows.length === 0) throw new Error('fill: the test database has no tables (did the store not migrate it?)');
  return r.rows.map((row) => row.name);
}

/** `url` with a server setting for every session opened through it (libpq's `options` parameter). */
function withSessionOption(url: string, option: string): string {
  const u = new URL(url);
  const current = u.searchParams.get('options');
  u.searchParams.set('options', current ? `${current} ${option}` : option);
  return u.toString();
}
