/**
 * The store contract, the admin inventory's page query (`devices.inventoryPage`, `devices.inventoryCount`), the same
 * on every backend:
 *
 * - the order: NULL before every value ascending and after every value descending, text keys folded for ASCII
 *   letters only and compared by code point (é and É are two keys; a character beyond U+FFFF sorts after U+FFFD),
 *   ties by record id; the keyset resumes exactly after the cursor's (key, id), across the NULLs too;
 * - the filter: the tenant (another tenant's devices never), user, client type, model, and `q` as a plain substring
 *   of the folded name, device id, model, owner's username or address (`%`, `_` and `\` are ordinary characters);
 * - a property: random devices (mixed case, NULLs, LIKE metacharacters, equal keys), filters, orders and page sizes
 *   — walking every page gives exactly the service's in-memory order (server/devices/service.ts
 *   `inventoryInMemory`, the path for the orders the store cannot page), and the count its total;
 * - a property over several tenants whose devices are made interleaved, with equal keys across tenants: each
 *   tenant's walk holds exactly the devices made for its users, in order, whatever the others hold (the pages read
 *   the devices' copy of the tenant, schema/sqlite/0018_device_tenant.sql; the expected order reads the owners').
 */
import fc from 'fast-check';
import type { DeviceInventoryFilter, DeviceInventoryRow, DeviceInventorySort, Store, User } from '../../../server/store/types';
import { DEVICE_SORT_KEYS, inventoryInMemory, parseSort } from '../../../server/devices/service';
import { NOW, description, eachBackend, newTenant, newUser, unique } from './fixtures';

const RUNS = Number(process.env.DEVICE_INVENTORY_RUNS ?? 40);
const STORE_KEYS = DEVICE_SORT_KEYS.filter((k) => k !== 'accessState') as Array<DeviceInventorySort['key']>;
const ALLOWED = { state: 'allowed' as const, reason: 'default' as const };

/** Every page of `limit` in order, each resumed after the previous page's last row as the expected order has it. */
async function walk(store: Store, filter: DeviceInventoryFilter, sortRaw: string, limit: number, emails: Map<string, string>) {
  const sort = parseSort(sortRaw);
  const all = await store.devices.inventoryRows(filter);
  const expected = inventoryInMemory(all.map((d) => ({ d, a: ALLOWED })), { emails, q: filter.q, sort, ordered: true }).page;
  const got: DeviceInventoryRow[] = [];
  let after: { k: string | number | null; id: string } | undefined;
  for (let pages = 0; ; pages++) {
    if (pages > expected.length + 1) throw new Error('the walk does not end');
    const page = await store.devices.inventoryPage(filter, { key: sort.key as DeviceInventorySort['key'], dir: sort.dir }, after, limit);
    expect(page.length).toBeLessThanOrEqual(limit);
    got.push(...page);
    // The next page starts after this one's last row: its key as the in-memory path reads it.
    const last = expected[got.length - 1];
    if (page.length < limit || !last) break;
    after = { k: last.k, id: last.d.id };
  }
  return { got, expected: expected.map((r) => r.d), total: await store.devices.inventoryCount(filter) };
}

const emailsOf = (users: User[]) => new Map(users.map((u) => [u.id, u.email]));

eachBackend('device inventory paging', (t) => {
  test('the order: NULLs first ascending and last descending, ASCII folding, code point order, ties by id', async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const amy = await newUser(store, { tenantId: tenant.id, username: `Amy-${unique('o')}` });
    const names = ['b', 'B', null, 'a', 'É', 'é', 'Z', '\uFFFD', '\u{1D49C}', null, 'A'];
    const ids = new Map<string, string>();
    for (const [i, name] of names.entries()) {
      const d = await store.devices.create(amy.id, `d${i}`, description({ friendlyName: name }), NOW);
      ids.set(d.id, name ?? 'null');
    }
    const { got, expected, total } = await walk(store, { tenantId: tenant.id }, 'friendlyName', 3, new Map());
    expect(got.map((d) => d.id)).toEqual(expected.map((d) => d.id));
    expect(total).toBe(names.length);
    // Folded keys in order: null null a a b b z É é U+FFFD U+1D49C (each pair by record id).
    const keys = got.map((d) => d.friendlyName?.replace(/[A-Z]/g, (c) => c.toLowerCase()) ?? null);
    expect(keys).toEqual([null, null, 'a', 'a', 'b', 'b', 'z', 'É', 'é', '\uFFFD', '\u{1D49C}']);
    const pairs = [got.slice(0, 2), got.slice(2, 4), got.slice(4, 6)].map((p) => p.map((d) => d.id));
    for (const p of pairs) expect(p).toEqual([...p].sort());
    const down = await walk(store, { tenantId: tenant.id }, '-friendlyName', 4, new Map());
    expect(down.got.map((d) => d.id)).toEqual([...got].reverse().map((d) => d.id));
  });

  test('the keyset resumes after (key, id) exactly, also from a NULL key; an empty remainder is no rows', async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const user = await newUser(store, { tenantId: tenant.id });
    const made = [];
    for (let i = 0; i < 6; i++) {
      const d = await store.devices.create(user.id, `k${i}`, description(), NOW + i);
      if (i % 3 !== 0) await store.devices.touch(d.id, NOW + 10, NOW + (i % 2)); // two NULLs, ties on 0 and 1
      made.push(d);
    }
    const f = { tenantId: tenant.id };
    const asc = await store.devices.inventoryPage(f, { key: 'lastSyncTime', dir: 1 }, undefined, 10);
    expect(asc.slice(0, 2).map((d) => d.lastSuccessSyncTime)).toEqual([null, null]);
    for (let i = 0; i < asc.length; i++) {
      const r = asc[i]!;
      const rest = await store.devices.inventoryPage(f, { key: 'lastSyncTime', dir: 1 }, { k: r.lastSuccessSyncTime, id: r.id }, 10);
      expect(rest.map((d) => d.id)).toEqual(asc.slice(i + 1).map((d) => d.id));
    }
    const desc = await store.devices.inventoryPage(f, { key: 'lastSyncTime', dir: -1 }, undefined, 10);
    expect(desc.map((d) => d.id)).toEqual([...asc].reverse().map((d) => d.id));
    for (let i = 0; i < desc.length; i++) {
      const r = desc[i]!;
      const rest = await store.devices.inventoryPage(f, { key: 'lastSyncTime', dir: -1 }, { k: r.lastSuccessSyncTime, id: r.id }, 2);
      expect(rest.map((d) => d.id)).toEqual(desc.slice(i + 1, i + 3).map((d) => d.id));
    }
  });

  test('the filters: tenant, user, client type, model, and q as a plain substring (LIKE metacharacters are text)', async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const tag = unique('f');
    const amy = await newUser(store, { tenantId: tenant.id, username: `amy-${tag}`, email: `Amy.100%_Sure@Example.test` });
    const bob = await newUser(store, { tenantId: tenant.id, username: `BOB-${tag}` });
    const stranger = await newUser(store, { username: `stranger-${tag}` });
    const a1 = await store.devices.create(amy.id, 'a1', description({ friendlyName: 'Work\\Phone', clientType: 'Pigeon', deviceModel: 'X_1' }), NOW);
    const a2 = await store.devices.create(amy.id, 'a2', description({ friendlyName: '50% off', clientType: 'pigeon', deviceModel: 'X1' }), NOW);
    const b1 = await store.devices.create(bob.id, 'B1-Dev', description({ friendlyName: null, clientType: null, deviceModel: null }), NOW);
    await store.devices.create(stranger.id, 's1', description({ friendlyName: 'Work\\Phone 50% X_1' }), NOW);
    const ids = async (f: Omit<DeviceInventoryFilter, 'tenantId'>) => {
      const filter = { tenantId: tenant.id, ...f };
      const rows = await store.devices.inventoryPage(filter, { key: 'firstSyncTime', dir: 1 }, undefined, 50);
      expect(await store.devices.inventoryCount(filter)).toBe(rows.length);
      return rows.map((d) => d.id).sort();
    };
    const sorted = (...xs: string[]) => xs.sort();
    expect(await ids({})).toEqual(sorted(a1.id, a2.id, b1.id));
    expect(await ids({ userId: bob.id })).toEqual([b1.id]);
    expect(await ids({ userId: stranger.id })).toEqual([]);
    expect(await ids({ clientType: 'pigeon' })).toEqual([a2.id]); // the filters are exact, as in memory
    expect(await ids({ deviceModel: 'X_1', clientType: 'Pigeon' })).toEqual([a1.id]);
    expect(await ids({ q: '%' })).toEqual(sorted(a1.id, a2.id)); // a2's name; amy's address holds one too
    expect(await ids({ q: '0% O' })).toEqual([a2.id]);
    expect(await ids({ q: 'x_' })).toEqual([a1.id]); // not "x, any character": X1 does not match
    expect(await ids({ q: 'k\\p' })).toEqual([a1.id]);
    expect(await ids({ q: '_sure@' })).toEqual(sorted(a1.id, a2.id)); // the owner's address
    expect(await ids({ q: 'bob-' })).toEqual([b1.id]); // the owner's username
    expect(await ids({ q: 'b1-d' })).toEqual([b1.id]); // the device id
    expect(await ids({ q: '' })).toEqual(sorted(a1.id, a2.id, b1.id));
    expect(await ids({ q: 'stranger' })).toEqual([]);
  });

  test('property: every page walk equals the in-memory order, and the count its total', async () => {
    const { store } = t();
    const chars = ['a', 'A', 'b', 'B', 'z', '%', '_', '\\', ' ', 'é', 'É', '\uFFFD', '\u{1D49C}', '0'];
    const text = fc.array(fc.constantFrom(...chars), { maxLength: 3 }).map((a) => a.join(''));
    const maybe = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: null, freq: 3 });
    const models = ['Pixel', 'PIXEL', 'pixel%', 'iPhone_1', 'é'];
    const device = fc.record({
      owner: fc.nat(2),
      id: text,
      friendlyName: maybe(text),
      deviceModel: maybe(fc.constantFrom(...models)),
      clientType: maybe(fc.constantFrom('Pigeon', 'pigeon', 'Outlook')),
      first: fc.nat(3),
      last: maybe(fc.nat(3)),
    });
    const scenario = fc.record({
      owners: fc.array(fc.record({ name: fc.constantFrom('amy', 'AMY', 'Bo_b', 'c%'), email: text }), { minLength: 3, maxLength: 3 }),
      devices: fc.array(device, { maxLength: 14 }),
      userIndex: fc.option(fc.nat(2), { nil: undefined, freq: 3 }),
      clientType: fc.option(fc.constantFrom('Pigeon', 'pigeon', 'Outlook'), { nil: undefined, freq: 4 }),
      deviceModel: fc.option(fc.constantFrom(...models), { nil: undefined, freq: 4 }),
      q: fc.option(text, { nil: undefined }),
      sort: fc.constantFrom(...STORE_KEYS.flatMap((k) => [k, `-${k}`])),
      limit: fc.integer({ min: 1, max: 6 }),
    });
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        const tenant = await newTenant(store);
        const users: User[] = [];
        for (const o of s.owners) {
          const username = `${o.name}-${unique('p')}`;
          users.push(await newUser(store, { tenantId: tenant.id, username, email: `${o.email}@${username}` }));
        }
        for (const [i, d] of s.devices.entries()) {
          const made = await store.devices.create(users[d.owner]!.id, `${d.id}-${i}`, description({ friendlyName: d.friendlyName, deviceModel: d.deviceModel, clientType: d.clientType }), NOW + d.first);
          if (d.last !== null) await store.devices.touch(made.id, NOW + 9, NOW + d.last);
        }
        const filter: DeviceInventoryFilter = {
          tenantId: tenant.id,
          ...(s.userIndex !== undefined ? { userId: users[s.userIndex]!.id } : {}),
          ...(s.clientType !== undefined ? { clientType: s.clientType } : {}),
          ...(s.deviceModel !== undefined ? { deviceModel: s.deviceModel } : {}),
          ...(s.q !== undefined ? { q: s.q } : {}),
        };
        const { got, expected, total } = await walk(store, filter, s.sort, s.limit, emailsOf(users));
        expect(got.map((d) => d.id)).toEqual(expected.map((d) => d.id));
        expect(got).toEqual(expected);
        expect(total).toBe(expected.length);
      }),
      { numRuns: RUNS },
    );
  }, 120_000);

  test('property: tenants interleaved, each tenant\'s pages hold exactly its own devices in order', async () => {
    const { store } = t();
    const maybe = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: null, freq: 3 });
    const scenario = fc.record({
      devices: fc.array(
        fc.record({
          tenant: fc.nat(3),
          owner: fc.nat(1),
          friendlyName: maybe(fc.constantFrom('a', 'A', 'b', 'z')),
          clientType: maybe(fc.constantFrom('Pigeon', 'pigeon')),
          first: fc.nat(2),
          last: maybe(fc.nat(2)),
        }),
        { maxLength: 24 },
      ),
      sort: fc.constantFrom(...STORE_KEYS.flatMap((k) => [k, `-${k}`])),
      limit: fc.integer({ min: 1, max: 5 }),
    });
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        const tenants = await Promise.all([0, 1, 2, 3].map(() => newTenant(store)));
        const owners: User[][] = [];
        for (const tenant of tenants) {
          owners.push([await newUser(store, { tenantId: tenant.id }), await newUser(store, { tenantId: tenant.id })]);
        }
        const made: string[][] = tenants.map(() => []);
        for (const [i, d] of s.devices.entries()) {
          const owner = owners[d.tenant]![d.owner]!;
          const device = await store.devices.create(owner.id, `m-${i}`, description({ friendlyName: d.friendlyName, clientType: d.clientType }), NOW + d.first);
          if (d.last !== null) await store.devices.touch(device.id, NOW + 9, NOW + d.last);
          made[d.tenant]!.push(device.id);
        }
        for (const [i, tenant] of tenants.entries()) {
          const { got, expected, total } = await walk(store, { tenantId: tenant.id }, s.sort, s.limit, emailsOf(owners[i]!));
          expect(got.map((d) => d.id)).toEqual(expected.map((d) => d.id));
          expect(got.map((d) => d.id).sort()).toEqual([...made[i]!].sort());
          expect(total).toBe(made[i]!.length);
        }
      }),
      { numRuns: Math.max(10, Math.round(RUNS / 4)) },
    );
  }, 120_000);
});
