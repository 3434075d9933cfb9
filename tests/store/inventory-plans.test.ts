/**
 * The admin inventory's page walks only the tenant's own devices (SQLite): `EXPLAIN QUERY PLAN` of the statements
 * the store runs (server/store/inventory.ts builds them; nothing here is a copy) on a store with several tenants,
 * as the server runs it (no statistics) and after ANALYZE.
 *
 * - An order on a devices column, with or without a cursor, a NULL cursor, an exact filter or a search: every read
 *   of devices is `SEARCH d USING INDEX devices_inventory_<that order's> (tenant_id=?…)`, a range of the tenant's
 *   own part of the index (schema/sqlite/0018_device_tenant.sql). Before, the indexes were (key, id) over every
 *   tenant's devices and a small tenant's page walked the others' rows.
 * - One user's devices: the user's own index, whatever the order.
 * - The count without a search: the tenant's range of an index alone, no users.
 */
import fs from 'node:fs';
import path from 'node:path';
import { openSqliteStore, type SqliteStore } from '../../server/store/sqlite';
import { INVENTORY_COLUMNS } from '../../server/store/rows';
import { SQLITE_INVENTORY, inventoryCountSql, inventoryPageSql, type InventorySql } from '../../server/store/inventory';
import type { DeviceInventoryFilter, DeviceInventorySort } from '../../server/store/types';
import { tempDir } from '../helpers/testApp';
import { NOW, description } from './contract/fixtures';

const INDEX: Record<Exclude<DeviceInventorySort['key'], 'user'>, string> = {
  lastSyncTime: 'devices_inventory_last_sync',
  firstSyncTime: 'devices_inventory_first_sync',
  friendlyName: 'devices_inventory_name',
  deviceModel: 'devices_inventory_model',
  clientType: 'devices_inventory_client',
};

let dir: string;
let store: SqliteStore;
let tenants: string[];
let someUser: string;

beforeAll(async () => {
  dir = tempDir('pigeon-inventory-plans-');
  store = openSqliteStore(path.join(dir, 'pigeon.db'));
  tenants = [];
  for (let t = 0; t < 3; t++) {
    const tenant = await store.tenants.create(`plans-${t}`, NOW);
    tenants.push(tenant.id);
    for (let u = 0; u < 8; u++) {
      const username = `plans-${t}-${u}`;
      const user = await store.users.create({ tenantId: tenant.id, username, email: `${username}@x.test`, displayName: username, role: 'user', passwordHash: null }, NOW);
      someUser ??= user.id;
      for (let i = 0; i < 6; i++) {
        const d = await store.devices.create(user.id, `d${i}`, description({ friendlyName: i % 3 ? `Phone ${i}` : null, deviceModel: i % 2 ? 'Pixel' : null, clientType: 'Pigeon' }), NOW + i);
        if (i % 2) await store.devices.touch(d.id, NOW + 10, NOW + i);
      }
    }
  }
});

afterAll(async () => {
  await store?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const plan = (q: InventorySql) =>
  (store.db.prepare(`EXPLAIN QUERY PLAN ${q.text}`).all(...q.params) as { detail: string }[]).map((r) => r.detail);

/** The plan's reads of devices: each line that names `d`. */
const devicesReads = (lines: string[]) => lines.filter((l) => /^(SEARCH|SCAN) d\b/.test(l));

const KEYS = Object.keys(INDEX) as Array<keyof typeof INDEX>;
/** No cursor, a value's and a NULL's (the keyset resumes in either segment; a first sync time is never NULL). */
const cursors = (key: keyof typeof INDEX) => [
  undefined,
  { k: key.endsWith('Time') ? NOW + 3 : 'phone', id: 'm' },
  ...(key === 'firstSyncTime' ? [] : [{ k: null, id: 'm' }]),
];

describe.each([
  ['as the server runs it', false],
  ['after ANALYZE', true],
])('inventory plans, %s', (_name, analyze) => {
  beforeAll(() => {
    if (analyze) store.db.exec('ANALYZE');
  });
  afterAll(() => {
    if (analyze) store.db.exec('DELETE FROM sqlite_stat1; ANALYZE sqlite_schema'); // no statistics again
  });

  const filters = (): DeviceInventoryFilter[] => [
    { tenantId: tenants[1]! },
    { tenantId: tenants[1]!, clientType: 'Pigeon', deviceModel: 'Pixel' },
    { tenantId: tenants[1]!, q: 'phone' },
  ];

  test.each(KEYS)('the order by %s walks the tenant\'s range of its own index', (key) => {
    for (const f of filters()) {
      for (const dir of [1, -1] as const) {
        for (const cursor of cursors(key)) {
          const lines = plan(inventoryPageSql(SQLITE_INVENTORY, INVENTORY_COLUMNS, f, { key, dir }, cursor, 25));
          const reads = devicesReads(lines);
          const context = { filter: f, dir, cursor, plan: lines };
          expect({ ...context, ok: reads.length > 0 }).toEqual({ ...context, ok: true });
          for (const read of reads) {
            expect({ ...context, read }).toEqual({ ...context, read: expect.stringMatching(new RegExp(`^SEARCH d USING INDEX ${INDEX[key]} \\(tenant_id=\\?`)) });
          }
        }
      }
    }
  });

  test('one user\'s devices are read by the user\'s index, in every order', () => {
    for (const key of [...KEYS, 'user' as const]) {
      const lines = plan(inventoryPageSql(SQLITE_INVENTORY, INVENTORY_COLUMNS, { tenantId: tenants[0]!, userId: someUser }, { key, dir: 1 }, undefined, 25));
      for (const read of devicesReads(lines)) expect({ key, read }).toEqual({ key, read: expect.stringMatching(/^SEARCH d USING (COVERING )?INDEX sqlite_autoindex_devices_\d \(user_id=\?\)/) });
    }
    const count = plan(inventoryCountSql(SQLITE_INVENTORY, { tenantId: tenants[0]!, userId: someUser }));
    expect(devicesReads(count)).toEqual([expect.stringMatching(/^SEARCH d USING (COVERING )?INDEX sqlite_autoindex_devices_\d \(user_id=\?\)/)]);
  });

  test('the count without a search reads the tenant\'s range of one index and no users', () => {
    const lines = plan(inventoryCountSql(SQLITE_INVENTORY, { tenantId: tenants[2]! }));
    expect(lines).toEqual([expect.stringMatching(/^SEARCH d USING COVERING INDEX devices_inventory_\w+ \(tenant_id=\?\)$/)]);
    const filtered = plan(inventoryCountSql(SQLITE_INVENTORY, { tenantId: tenants[2]!, clientType: 'Pigeon' }));
    expect(filtered).toEqual([expect.stringMatching(/^SEARCH d USING (COVERING )?INDEX devices_inventory_\w+ \(tenant_id=\?\)$/)]);
  });
});
