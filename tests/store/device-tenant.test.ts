/**
 * devices.tenant_id (schema/sqlite/0018_device_tenant.sql, schema/postgres/0020_device_tenant.sql), on both backends:
 * the store writes the owner's tenant when it makes a device; the migration fills the rows a database had before it
 * (a database migrated to the version before, given rows, then migrated on); a device row with no tenant or another
 * tenant's is refused (SQLite: a trigger; PostgreSQL: NOT NULL); and the inventory's indexes start with the tenant.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { Client } from 'pg';
import { openSqliteStore } from '../../server/store/sqlite';
import { migrate as migrateSqlite, MIGRATIONS_DIR as SQLITE_DIR } from '../../server/store/sqlite/db';
import { openPostgresStore } from '../../server/store/postgres';
import { migrate as migratePostgres, MIGRATIONS_DIR as POSTGRES_DIR } from '../../server/store/postgres/migrate';
import type { Store } from '../../server/store/types';
import { freshDatabase, withClient } from '../helpers/postgres';
import { STORE_BACKENDS } from '../helpers/storeBackends';
import { NOW, description, newTenant, newUser } from './contract/fixtures';

const INVENTORY_INDEXES = ['devices_inventory_client', 'devices_inventory_first_sync', 'devices_inventory_last_sync', 'devices_inventory_model', 'devices_inventory_name'];

/** A copy of `dir`'s migrations before the device tenant's: a database as it was before this change. */
function migrationsBefore(dir: string, into: string): string {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.sql')).sort();
  const at = files.findIndex((f) => /^\d{4}_device_tenant\.sql$/.test(f));
  expect(at).toBeGreaterThan(0);
  for (const f of files.slice(0, at)) fs.copyFileSync(path.join(dir, f), path.join(into, f));
  return into;
}

/** One backend: raw SQL beside a store, and a database migrated to the version before the change. */
interface Backend {
  /** A database at the previous version, given `seed` (raw SQL, the backend's own), then migrated to the current one. */
  migrateOver(seed: string[]): Promise<{ query(sql: string, params?: unknown[]): Promise<Record<string, unknown>[]>; store: Store; close(): Promise<void> }>;
  /** Inserts a device row as no store method does. */
  insertDevice: (userId: string, id: string, tenantId: string | null) => string;
}

const SQLITE: Backend = {
  async migrateOver(seed) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-device-tenant-'));
    const file = path.join(dir, 'pigeon.db');
    const db = new Database(file);
    migrateSqlite(db, migrationsBefore(SQLITE_DIR, fs.mkdtempSync(path.join(dir, 'm-'))));
    db.pragma('foreign_keys = OFF'); // lets the seed hold a device whose user is gone
    for (const s of seed) db.exec(s);
    db.close();
    const store = openSqliteStore(file); // migrates on
    return {
      store,
      query: async (sql, params = []) => {
        const st = store.db.prepare(sql);
        return st.reader ? (st.all(...params) as Record<string, unknown>[]) : (st.run(...params), []);
      },
      close: async () => {
        await store.close();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  },
  insertDevice: (userId, id, tenantId) =>
    `INSERT INTO devices (id, user_id, device_id, first_sync_time, created_at, updated_at${tenantId === null ? '' : ', tenant_id'})
     VALUES ('${id}', '${userId}', '${id}', 0, 0, 0${tenantId === null ? '' : `, '${tenantId}'`})`,
};

const POSTGRES: Backend = {
  async migrateOver(seed) {
    const database = await freshDatabase('pigeon_device_tenant');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-device-tenant-pg-'));
    await withClient(database.url, async (c) => {
      await migratePostgres(c, migrationsBefore(POSTGRES_DIR, dir));
      for (const s of seed) await c.query(s);
    });
    fs.rmSync(dir, { recursive: true, force: true });
    const store = await openPostgresStore(database.url); // migrates on
    const client = new Client({ connectionString: database.url });
    await client.connect();
    return {
      store,
      query: async (sql, params = []) => (await client.query(sql, params)).rows,
      close: async () => {
        await client.end();
        await store.close();
        await database.drop();
      },
    };
  },
  insertDevice: (userId, id, tenantId) =>
    `INSERT INTO devices (user_id, id, device_id, first_sync_time, created_at, updated_at${tenantId === null ? '' : ', tenant_id'})
     VALUES ('${userId}', '${id}', '${id}', 0, 0, 0${tenantId === null ? '' : `, '${tenantId}'`})`,
};

const SEED = (b: Backend) => [
  "INSERT INTO tenants (id, name, created_at) VALUES ('ta', 'A', 0), ('tb', 'B', 0)",
  `INSERT INTO users (id, tenant_id, username, email, display_name, role, created_at, updated_at)
   VALUES ('ua1', 'ta', 'ua1', 'ua1@x.test', 'A1', 'user', 0, 0), ('ua2', 'ta', 'ua2', 'ua2@x.test', 'A2', 'user', 0, 0),
          ('ub1', 'tb', 'ub1', 'ub1@x.test', 'B1', 'user', 0, 0)`,
  b.insertDevice('ua1', 'd-a1', null),
  b.insertDevice('ua2', 'd-a2', null),
  b.insertDevice('ub1', 'd-b1', null),
  b.insertDevice('ub1', 'd-b2', null),
  b.insertDevice('gone', 'd-orphan', null), // its user is gone: in no tenant's inventory, before and after
];

describe.each(STORE_BACKENDS)('%s store: devices name their tenant', (name) => {
  const backend = name === 'sqlite' ? SQLITE : POSTGRES;
  let db: Awaited<ReturnType<Backend['migrateOver']>>;
  beforeAll(async () => {
    db = await backend.migrateOver(SEED(backend));
  });
  afterAll(() => db?.close());

  const tenants = async () =>
    Object.fromEntries((await db.query('SELECT id, tenant_id FROM devices ORDER BY id')).map((r) => [r.id as string, r.tenant_id as string]));

  test('the migration fills the rows that were there with their owner\'s tenant', async () => {
    expect(await tenants()).toEqual({ 'd-a1': 'ta', 'd-a2': 'ta', 'd-b1': 'tb', 'd-b2': 'tb', 'd-orphan': '' });
    const page = await db.store.devices.inventoryPage({ tenantId: 'tb' }, { key: 'firstSyncTime', dir: 1 }, undefined, 10);
    expect(page.map((d) => d.id)).toEqual(['d-b1', 'd-b2']);
    expect(await db.store.devices.inventoryCount({ tenantId: 'ta' })).toBe(2);
    expect(await db.store.devices.inventoryCount({ tenantId: 'tb' })).toBe(2);
  });

  test('every inventory index starts with the tenant', async () => {
    const rows =
      name === 'sqlite'
        ? await db.query(
            `SELECT il.name AS name, ii.name AS first FROM pragma_index_list('devices') il, pragma_index_xinfo(il.name) ii
             WHERE il.name LIKE 'devices_inventory_%' AND ii.seqno = 0`,
          )
        : await db.query(
            `SELECT i.indexrelid::regclass::text AS name, a.attname AS first FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
             WHERE i.indrelid = 'devices'::regclass AND i.indexrelid::regclass::text LIKE 'devices_inventory_%'`,
          );
    expect(rows.map((r) => [r.name, r.first]).sort()).toEqual(INVENTORY_INDEXES.map((i) => [i, 'tenant_id']));
  });

  test('a device made for a user gets the user\'s tenant', async () => {
    const [t1, t2] = [await newTenant(db.store), await newTenant(db.store)];
    const [u1, u2] = [await newUser(db.store, { tenantId: t1.id }), await newUser(db.store, { tenantId: t2.id })];
    const d1 = await db.store.devices.create(u1.id, 'phone', description(), NOW);
    const d2 = await db.store.devices.create(u2.id, 'phone', description(), NOW);
    const t = await tenants();
    expect([t[d1.id], t[d2.id]]).toEqual([t1.id, t2.id]);
  });

  // The refusal's message, read without instanceof: better-sqlite3's errors may come from another test file's realm
  // (its native half is loaded once per worker), and then jest's toThrow does not see them as errors.
  const refusal = (insert: string) => db.query(insert).then(() => 'accepted', (e: { message?: unknown }) => String(e.message));

  test('a device row without its owner\'s tenant is refused', async () => {
    const missing = name === 'sqlite' ? /owner's tenant/ : /null value in column "tenant_id"/;
    expect(await refusal(backend.insertDevice('ua1', 'd-none', null))).toMatch(missing);
    if (name === 'sqlite') {
      // SQLite's column has a default (it could not be added without one): the trigger refuses '' and a wrong tenant.
      expect(await refusal(backend.insertDevice('ua1', 'd-wrong', 'tb'))).toMatch(/owner's tenant/);
      expect(await refusal(backend.insertDevice('ua1', 'd-empty', ''))).toMatch(/owner's tenant/);
    }
    await db.query(backend.insertDevice('ua1', 'd-right', 'ta'));
    expect((await tenants())['d-right']).toBe('ta');
    expect(await tenants()).not.toHaveProperty('d-none');
  });
});
