/**
 * The PostgreSQL schema keeps the data locality rule of schema/postgres/README.md, read from the catalog of a freshly
 * migrated database: every table but the global ones has a primary key that starts with its distribution key
 * (`user_id` for mailbox data, `tenant_id` for tenant data), every foreign key between distributed tables carries
 * that key on both sides, and no unique index spans distribution keys except the named global ones. This is what
 * sharding by mailbox and tenant (Citus) needs; a new table must be classified here to pass.
 *
 * Also the migrations themselves: the same changes as SQLite's in the same order (and the PostgreSQL-only ones),
 * applied once even by two nodes starting at once, and an edited one refused.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import { MIGRATIONS_DIR, migrate } from '../../server/store/postgres/migrate';
import { MIGRATIONS_DIR as SQLITE_MIGRATIONS_DIR } from '../../server/store/sqlite/db';
import { freshDatabase, type FreshDatabase } from '../helpers/postgres';

/**
 * Not distributed: small tables every node reads whole (Citus reference tables), the migrations' own, the token
 * endpoint's rate-limit counts (keyed by address and username) and the web sessions' refreshes (keyed by a token hash).
 */
const GLOBAL = ['identity_records', 'node_secrets', 'rate_limits', 'schema_migrations', 'tenants', 'web_refreshes'];
/** Migrations with no SQLite counterpart: what they hold lives in files and in memory with SQLite (README.md). */
const POSTGRES_ONLY_MIGRATIONS = ['0006_node_secrets.sql', '0007_rate_limits.sql'];
const TENANT_DATA = [
  'access_config',
  'app_protection_state',
  'audit_log',
  'device_access_rules',
  'device_compliance',
  'directory_entries',
  'directory_frequent',
  'directory_pending',
  'directory_people',
  'directory_terms',
  'protection_config',
  'protection_keys',
  'shared_mailbox_members',
  'shared_mailboxes',
  'sign_in_log',
  'tenant_settings',
  'user_certificates',
  'users',
];
const MAILBOX_DATA = [
  'attachments',
  'auto_replies',
  'blob_chunks',
  'blobs',
  'changes',
  'conversations',
  'devices',
  'diagnostic_incidents',
  'folders',
  'idempotency',
  'ignored_conversations',
  'items',
  'mailbox_settings',
  'mailboxes',
  'mfa_recovery_codes',
  'outbox',
  'push_channels',
  'push_deliveries',
  'push_outbox',
  'push_reminders',
  'refresh_tokens',
  'search_docs',
  'user_mfa',
  'user_risk',
];
/** Unique indexes that span distribution keys on purpose (README.md says why, and what Citus would need instead). */
const GLOBAL_UNIQUE_INDEXES = ['refresh_tokens_hash', 'users_username'];

const keyOf = (table: string) => (TENANT_DATA.includes(table) ? 'tenant_id' : MAILBOX_DATA.includes(table) ? 'user_id' : undefined);

let database: FreshDatabase;
let client: Client;

beforeAll(async () => {
  database = await freshDatabase('pigeon_schema');
  client = new Client({ connectionString: database.url });
  await client.connect();
  await migrate(client);
});

afterAll(async () => {
  await client?.end();
  await database?.drop();
});

const tables = async () =>
  (
    await client.query<{ name: string }>(
      `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1`,
    )
  ).rows.map((r) => r.name);

/** `0008_tenant_region.sql` → `tenant_region`: what a migration does, without its place in its store's history. */
const changeOf = (file: string) => file.replace(/^\d{4}_/, '').replace(/\.sql$/, '');

/**
 * The rule: every SQLite migration has a PostgreSQL one named for the same change, in the same order, and the
 * PostgreSQL-only ones are the named ones. The numbers agree up to the first PostgreSQL-only migration and run ahead
 * after it (SQLite's 0006_tenant_region is PostgreSQL's 0008_tenant_region); a change never gets two names.
 */
test('schema/postgres has the same changes as schema/sqlite in the same order (and its own), all applied', async () => {
  const sql = (dir: string) => fs.readdirSync(dir).filter((f) => f.endsWith('.sql')).sort();
  const postgres = sql(MIGRATIONS_DIR);
  expect(postgres.filter((f) => POSTGRES_ONLY_MIGRATIONS.includes(f)).sort()).toEqual([...POSTGRES_ONLY_MIGRATIONS].sort());
  const shared = postgres.filter((f) => !POSTGRES_ONLY_MIGRATIONS.includes(f));
  expect(shared.map(changeOf)).toEqual(sql(SQLITE_MIGRATIONS_DIR).map(changeOf));
  // Numbered 0001, 0002, ... without gaps or repeats on both sides.
  for (const files of [postgres, sql(SQLITE_MIGRATIONS_DIR)]) {
    expect(files.map((f) => f.slice(0, 4))).toEqual(files.map((_, i) => String(i + 1).padStart(4, '0')));
  }
  const applied = (await client.query<{ name: string }>('SELECT name FROM schema_migrations ORDER BY name')).rows.map((r) => r.name);
  expect(applied).toEqual(sql(MIGRATIONS_DIR));
});

test('every table is classified: global, tenant data or mailbox data', async () => {
  expect(await tables()).toEqual([...GLOBAL, ...TENANT_DATA, ...MAILBOX_DATA].sort());
});

test('every distributed table\'s primary key starts with its distribution key', async () => {
  const keys = await client.query<{ table: string; first: string }>(
    `SELECT c.conrelid::regclass::text AS table, a.attname AS first
     FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
     WHERE c.contype = 'p' AND c.connamespace = 'public'::regnamespace`,
  );
  const first = new Map(keys.rows.map((r) => [r.table, r.first]));
  for (const table of [...TENANT_DATA, ...MAILBOX_DATA]) {
    expect({ table, first: first.get(table) }).toEqual({ table, first: keyOf(table) });
  }
});

test('every foreign key between distributed tables joins on the distribution key', async () => {
  const fks = await client.query<{ name: string; from: string; to: string; pairs: Array<[string, string]> }>(
    `SELECT c.conname AS name, c.conrelid::regclass::text AS from, c.confrelid::regclass::text AS to,
       (SELECT json_agg(json_build_array(fa.attname, ta.attname) ORDER BY k.i)
        FROM unnest(c.conkey, c.confkey) WITH ORDINALITY AS k(f, t, i)
        JOIN pg_attribute fa ON fa.attrelid = c.conrelid AND fa.attnum = k.f
        JOIN pg_attribute ta ON ta.attrelid = c.confrelid AND ta.attnum = k.t) AS pairs
     FROM pg_constraint c WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace`,
  );
  expect(fks.rows.length).toBeGreaterThan(0);
  for (const fk of fks.rows) {
    // A global table refers to nothing distributed; a distributed table may refer to a global one (a reference table).
    if (GLOBAL.includes(fk.from)) throw new Error(`global table ${fk.from} has a foreign key ${fk.name} to ${fk.to}`);
    if (GLOBAL.includes(fk.to)) continue;
    const key = keyOf(fk.from);
    const problem =
      key !== keyOf(fk.to) ? `joins ${keyOf(fk.from)} data to ${keyOf(fk.to)} data`
      : !fk.pairs.some(([from, to]) => from === key && to === key) ? `does not pair ${key} with ${key}`
      : undefined;
    expect({ fk: `${fk.name} (${fk.from} → ${fk.to})`, problem }).toEqual({ fk: `${fk.name} (${fk.from} → ${fk.to})`, problem: undefined });
  }
});

test('unique indexes of distributed tables start with the distribution key, except the named global ones', async () => {
  const indexes = await client.query<{ name: string; table: string; first: string | null }>(
    `SELECT i.indexrelid::regclass::text AS name, i.indrelid::regclass::text AS table, a.attname AS first
     FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
     LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
     WHERE i.indisunique AND c.relnamespace = 'public'::regnamespace`,
  );
  const spanning = indexes.rows.filter((r) => !GLOBAL.includes(r.table) && r.first !== keyOf(r.table)).map((r) => r.name);
  expect(spanning.sort()).toEqual(GLOBAL_UNIQUE_INDEXES);
});

test('migrating again applies nothing; two nodes migrating one database at once apply each file once', async () => {
  expect((await migrate(client)).applied).toEqual([]);
  const other = await freshDatabase('pigeon_schema_race');
  const clients = [new Client({ connectionString: other.url }), new Client({ connectionString: other.url })];
  try {
    await Promise.all(clients.map((c) => c.connect()));
    const reports = await Promise.all(clients.map((c) => migrate(c)));
    expect([...reports[0]!.applied, ...reports[1]!.applied].sort()).toEqual(reports[0]!.current);
  } finally {
    await Promise.all(clients.map((c) => c.end()));
    await other.drop();
  }
});

test('a landed migration that was edited is refused', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-pg-migrations-'));
  const scratch = await freshDatabase('pigeon_schema_edit');
  const c = new Client({ connectionString: scratch.url });
  try {
    await c.connect();
    fs.writeFileSync(path.join(dir, '0001_a.sql'), 'CREATE TABLE a (x INTEGER);');
    expect((await migrate(c, dir)).applied).toEqual(['0001_a.sql']);
    fs.writeFileSync(path.join(dir, '0001_a.sql'), 'CREATE TABLE a (x INTEGER, y INTEGER);');
    await expect(migrate(c, dir)).rejects.toThrow(/0001_a.sql was edited/);
  } finally {
    await c.end();
    await scratch.drop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
