/**
 * The admin inventory's paging (issue 21, the admin center's device list): `GET /admin/v1/devices` with `limit`,
 * `cursor`, `sort` and `q` over 120 seeded devices — every sort key, both directions, walked in pages of 50, gives
 * each device exactly once and in order; `q` filters; `total` counts the filtered set; the ETag answers 304 while
 * nothing changed; a device added mid-walk never makes a page repeat one; bad parameters are 400. Plus a timing of a
 * 50-row page among 10,000 devices (printed, not asserted: it is the closing note's figure).
 */
import { performance } from 'node:perf_hooks';
import { buildTestApp, signIn, asCaller, type TestContext } from '../helpers/testApp';
import { expectToMatchSpec } from '../helpers/openapi';
import type { AccessState, DeviceDescription } from '../../server/store/types';

let ctx: TestContext;
const PW = 'password-for-paging-tests';
let adminToken: string;
const L = '/admin/v1/devices';
const admin = () => asCaller(ctx, { access: adminToken });

const USERS = ['amy', 'Bert', 'cleo', 'dmitri', 'eve'];
const MODELS = ['iPhone15,2', 'Pixel 8', 'galaxy S24', null, 'iPad13,1'];
const CLIENTS = ['PigeonMail', 'Outlook', null, 'pigeon-cli'];
const STATES: Array<AccessState | null> = [null, null, 'blocked', 'quarantined', 'allowed'];
let seeded: string[] = [];
let otherTenantDevice: string;

async function seed(n: number, t0: number, prefix: string, users: Array<{ id: string }>, state = true, store = ctx.store): Promise<string[]> {
  const ids: string[] = [];
  await store.run(function* (tx) {
    for (let i = 0; i < n; i++) {
      const description: DeviceDescription = {
        // Some names repeat (ties are ordered by record id), one in three has none.
        friendlyName: i % 3 === 0 ? null : `${prefix} phone ${String(i % 40).padStart(3, '0')}${i % 2 ? ' Work' : ''}`,
        deviceType: 'phone',
        deviceModel: MODELS[i % MODELS.length]!,
        deviceOS: 'OS 1',
        clientType: CLIENTS[i % CLIENTS.length]!,
        clientVersion: '1.0',
        userAgent: null,
        capabilities: [],
      };
      // First-sync times in groups of 7 (ties), last-sync times for most (some null).
      const d = yield* tx.devices.create(users[i % users.length]!.id, `${prefix}-dev-${String(i).padStart(5, '0')}-abcdef`, description, t0 + Math.floor(i / 7) * 1000);
      if (i % 5 !== 0) yield* tx.devices.touch(d.id, t0 + ((i * 7919) % 100_000), t0 + ((i * 7919) % 100_000));
      const s = STATES[i % STATES.length];
      if (state && s) yield* tx.devices.setAdminDecision(d.id, s, t0);
      ids.push(d.id);
    }
  });
  return ids;
}

beforeAll(async () => {
  ctx = await buildTestApp();
  ctx.secrets.add(PW);
  await ctx.users.addUser({ username: 'root', password: PW, role: 'admin', email: 'root@paging.example' });
  const users = [];
  for (const name of USERS) users.push(await ctx.users.addUser({ username: name, password: PW, role: 'user', email: `${name.toLowerCase()}@paging.example` }));
  seeded = await seed(120, ctx.clock.now() - 10_000_000, 'seed', users);
  // Another tenant's device: never in this admin's inventory, whatever the query.
  const other = await ctx.store.run((tx) => tx.tenants.create('Other', ctx.clock.now()));
  const stranger = await ctx.users.addUser({ username: 'stranger', password: PW, role: 'user', tenantId: other.id });
  otherTenantDevice = (await seed(1, ctx.clock.now(), 'seed', [stranger]))[0]!;
  adminToken = (await signIn(ctx, 'root', PW)).access_token;
});
afterAll(() => ctx.close());

type Row = Record<string, unknown> & { id: string };
const SORT_FIELD: Record<string, (d: Row) => string | number | null> = {
  lastSyncTime: (d) => (d.lastSuccessSyncTime === null ? null : Date.parse(d.lastSuccessSyncTime as string)),
  firstSyncTime: (d) => Date.parse(d.firstSyncTime as string),
  friendlyName: (d) => (d.friendlyName as string | null)?.toLowerCase() ?? null,
  user: (d) => (d.username as string).toLowerCase(),
  deviceModel: (d) => (d.deviceModel as string | null)?.toLowerCase() ?? null,
  clientType: (d) => (d.clientType as string | null)?.toLowerCase() ?? null,
  accessState: (d) => d.accessState as string,
};

function compare(a: Row, b: Row, key: string): number {
  const [x, y] = [SORT_FIELD[key]!(a), SORT_FIELD[key]!(b)];
  if (x !== y) {
    if (x === null) return -1;
    if (y === null) return 1;
    return x < y ? -1 : 1;
  }
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

async function walk(query: string, limit = 50): Promise<{ rows: Row[]; pages: number; totals: number[] }> {
  const rows: Row[] = [];
  const totals: number[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const res = await admin().get(`${L}?limit=${limit}&${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    expect(res.status).toBe(200);
    if (pages === 0) expectToMatchSpec(res, 'get', L);
    expect(res.body.devices.length).toBeLessThanOrEqual(limit);
    rows.push(...res.body.devices);
    totals.push(res.body.total);
    cursor = res.body.nextCursor;
    pages++;
    expect(pages).toBeLessThan(20);
  } while (cursor !== null);
  return { rows, pages, totals };
}

describe('paging', () => {
  test.each(Object.keys(SORT_FIELD).flatMap((k) => [k, `-${k}`]))('sort=%s: pages of 50 give every device once, in order', async (sort) => {
    const { rows, pages, totals } = await walk(`sort=${encodeURIComponent(sort)}`);
    expect(pages).toBe(3);
    expect(totals).toEqual([120, 120, 120]);
    const ids = rows.map((d) => d.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort()).toEqual([...seeded].sort());
    const key = sort.replace(/^-/, '');
    const dir = sort.startsWith('-') ? -1 : 1;
    for (let i = 1; i < rows.length; i++) {
      const c = dir * compare(rows[i - 1]!, rows[i]!, key);
      if (c >= 0) throw new Error(`${sort}: row ${i} (${JSON.stringify(SORT_FIELD[key]!(rows[i]!))}) is not after row ${i - 1} (${JSON.stringify(SORT_FIELD[key]!(rows[i - 1]!))})`);
    }
  });

  test('the default order is -lastSyncTime; odd page sizes end exactly; the last page says nextCursor null', async () => {
    const first = await admin().get(`${L}?limit=50`);
    const explicit = await admin().get(`${L}?limit=50&sort=-lastSyncTime`);
    expect(first.body.devices.map((d: Row) => d.id)).toEqual(explicit.body.devices.map((d: Row) => d.id));
    const exact = await walk('sort=user', 40);
    expect(exact.pages).toBe(3); // 120 / 40: the third page is full and the last
    const one = await walk('sort=friendlyName', 120);
    expect(one.pages).toBe(1);
    expect(one.rows).toHaveLength(120);
  });

  test('without limit: every device, as before (plus total, nextCursor null)', async () => {
    const res = await admin().get(L);
    expect(res.status).toBe(200);
    expect(res.body.devices).toHaveLength(120);
    expect(res.body.total).toBe(120);
    expect(res.body.nextCursor).toBeNull();
    expect(res.body.devices.map((d: Row) => d.id)).not.toContain(otherTenantDevice);
    expectToMatchSpec(res, 'get', L);
  });

  test('a device added mid-walk never makes a page repeat or skip one that was there', async () => {
    const first = await admin().get(`${L}?limit=50&sort=firstSyncTime`);
    // A new device sorts last (latest first sync) and one sorts into the page already seen (earliest).
    const [amy] = await Promise.all([ctx.store.users.byUsername('amy')]);
    const added = await seed(1, ctx.clock.now() - 20_000_000, 'mid', [amy!], false);
    try {
      const rest: Row[] = [];
      let cursor: string | null = first.body.nextCursor;
      while (cursor) {
        const res = await admin().get(`${L}?limit=50&sort=firstSyncTime&cursor=${encodeURIComponent(cursor)}`);
        rest.push(...res.body.devices);
        cursor = res.body.nextCursor;
      }
      const ids = [...first.body.devices, ...rest].map((d: Row) => d.id);
      expect(new Set(ids).size).toBe(ids.length);
      for (const id of seeded) expect(ids).toContain(id);
      expect(ids).not.toContain(added[0]); // it sorts before the cursor: the next walk sees it
    } finally {
      await ctx.store.run((tx) => tx.devices.delete(added[0]!));
    }
  });
});

describe('q and the filters', () => {
  test('q is a case-insensitive substring of name, device id, model, username or address', async () => {
    const all = (await admin().get(L)).body.devices as Row[];
    const expectQ = async (q: string, pred: (d: Row) => boolean) => {
      const res = await admin().get(`${L}?q=${encodeURIComponent(q)}&limit=500&sort=user`);
      expect(res.status).toBe(200);
      const want = all.filter(pred).map((d) => d.id).sort();
      expect({ q, ids: res.body.devices.map((d: Row) => d.id).sort() }).toEqual({ q, ids: want });
      expect(res.body.total).toBe(want.length);
      return res;
    };
    expect((await expectQ('PHONE 007', (d) => String(d.friendlyName ?? '').toLowerCase().includes('phone 007'))).body.total).toBeGreaterThan(0);
    await expectQ('dev-00042', (d) => String(d.deviceId).includes('dev-00042'));
    expect((await expectQ('PIXEL', (d) => d.deviceModel === 'Pixel 8')).body.total).toBe(24);
    expect((await expectQ('bert', (d) => d.username === 'Bert')).body.total).toBe(24);
    // By address: cleo@paging.example (her username alone does not hold "@paging").
    expect((await expectQ('CLEO@PAGING', (d) => d.username === 'cleo')).body.total).toBe(24);
    expect((await expectQ('no such thing', () => false)).body.nextCursor).toBeNull();
    // The other tenant's device matches "seed" too, and is never shown.
    const seedRes = await admin().get(`${L}?q=seed`);
    expect(seedRes.body.total).toBe(120);
  });

  test('q pages with the filters: total is the filtered set, every page of it once', async () => {
    const { rows, totals } = await walk('q=work&accessState=blocked&sort=-friendlyName', 5);
    const all = ((await admin().get(`${L}?accessState=blocked`)).body.devices as Row[]).filter((d) => String(d.friendlyName ?? '').toLowerCase().includes('work'));
    expect(totals.every((t) => t === all.length)).toBe(true);
    expect(rows.map((d) => d.id).sort()).toEqual(all.map((d) => d.id).sort());
    const byUser = await walk('user=eve&clientType=Outlook&sort=deviceModel', 3);
    expect(byUser.rows.every((d) => d.username === 'eve' && d.clientType === 'Outlook')).toBe(true);
    expect(byUser.rows.length).toBeGreaterThan(0);
  });
});

describe('the ETag', () => {
  test('an unchanged list is 304 without a body; a change (an admin action) gives a new ETag', async () => {
    const url = `${L}?limit=50&sort=-lastSyncTime`;
    const first = await admin().get(url);
    const etag = first.headers.etag as string;
    expect(etag).toMatch(/^"[A-Za-z0-9_-]+"$/);
    expect(first.headers['cache-control']).toBe('private, no-cache');
    const again = await admin().get(url).set('If-None-Match', etag);
    expect(again.status).toBe(304);
    expect(again.text ?? '').toBe('');
    expect(again.headers.etag).toBe(etag);
    expectToMatchSpec(again, 'get', L);
    expect((await admin().get(url).set('If-None-Match', `"other", W/${etag}`)).status).toBe(304);
    expect((await admin().get(url).set('If-None-Match', '"something-else"')).status).toBe(200);
    // Another query is another answer.
    expect((await admin().get(`${L}?limit=49&sort=-lastSyncTime`).set('If-None-Match', etag)).status).toBe(200);

    const target = first.body.devices[0] as Row;
    const blocked = await admin().post(`${L}/${target.id}/${target.accessState === 'blocked' ? 'allow' : 'block'}`);
    expect(blocked.status).toBe(200);
    const changed = await admin().get(url).set('If-None-Match', etag);
    expect(changed.status).toBe(200);
    expect(changed.headers.etag).not.toBe(etag);
    // Back as it was (the other tests' expectations): the individual decision as seeded.
    await ctx.store.run((tx) => tx.devices.setAdminDecision(target.id, (STATES[seeded.indexOf(target.id) % STATES.length] ?? null) as AccessState | null, ctx.clock.now()));
  });
});

describe('bad parameters', () => {
  test.each([
    ['limit=0'],
    ['limit=501'],
    ['limit=abc'],
    ['sort=color'],
    ['sort=--user'],
    ['cursor=not-a-cursor'],
    ['cursor='],
    [`q=${'x'.repeat(201)}`],
    ['q=a&q=b'],
  ])('%s → 400', async (q) => {
    const res = await admin().get(`${L}?${q}`);
    expect({ q, status: res.status, code: res.body.code }).toEqual({ q, status: 400, code: 'invalidRequest' });
    expectToMatchSpec(res, 'get', L);
  });

  test("a cursor of another sort order is 400 (not silently another list's position)", async () => {
    const first = await admin().get(`${L}?limit=10&sort=user`);
    const res = await admin().get(`${L}?limit=10&sort=friendlyName&cursor=${encodeURIComponent(first.body.nextCursor)}`);
    expect({ status: res.status, code: res.body.code }).toEqual({ status: 400, code: 'invalidRequest' });
  });

  test("a cursor whose key is not of its order's type is 400 (the store compares it with a column)", async () => {
    const forged = (sort: string, k: unknown) => Buffer.from(JSON.stringify([sort, k, 'some-id'])).toString('base64url');
    for (const [sort, k] of [['-lastSyncTime', 'abc'], ['firstSyncTime', 1.5], ['friendlyName', 5]] as const) {
      const res = await admin().get(`${L}?limit=10&sort=${sort}&cursor=${forged(sort, k)}`);
      expect({ sort, status: res.status, code: res.body.code }).toEqual({ sort, status: 400, code: 'invalidRequest' });
    }
    expect((await admin().get(`${L}?limit=10&sort=-lastSyncTime&cursor=${forged('-lastSyncTime', null)}`)).status).toBe(200);
  });

  test('a user is refused (403), with or without paging', async () => {
    const user = await signIn(ctx, 'amy', PW);
    const res = await asCaller(ctx, { access: user.access_token }).get(`${L}?limit=10`);
    expect({ status: res.status, code: res.body.code }).toEqual({ status: 403, code: 'forbidden' });
  });
});

describe('10,000 devices', () => {
  test('a page of 50 (timing printed, not asserted)', async () => {
    const bulk = await buildTestApp();
    try {
      await bulk.users.addUser({ username: 'root', password: PW, role: 'admin' });
      const users = [];
      for (let i = 0; i < 50; i++) users.push(await bulk.users.addUser({ username: `user${i}`, password: PW, role: 'user' }));
      const t0 = performance.now();
      await seed(10_000, bulk.clock.now() - 50_000_000, 'bulk', users, true, bulk.store);
      const seeding = performance.now() - t0;
      const token = (await signIn(bulk, 'root', PW)).access_token;
      const as = asCaller(bulk, { access: token });
      const time = async (url: string, etag?: string) => {
        const s = performance.now();
        const res = await (etag ? as.get(url).set('If-None-Match', etag) : as.get(url));
        return { ms: Math.round(performance.now() - s), res };
      };
      await time(`${L}?limit=50`); // warm-up (the first read fills the hot cache)
      const runs = [];
      for (let i = 0; i < 5; i++) runs.push((await time(`${L}?limit=50`)).ms);
      const page = await time(`${L}?limit=50`);
      expect(page.res.body.devices).toHaveLength(50);
      expect(page.res.body.total).toBe(10_000);
      const middle = (await as.get(`${L}?limit=500&sort=friendlyName`)).body.nextCursor as string;
      const deep = await time(`${L}?limit=50&sort=friendlyName&cursor=${encodeURIComponent(middle)}`);
      expect(deep.res.body.devices).toHaveLength(50);
      const search = await time(`${L}?limit=50&q=phone%20017`);
      const notModified = await time(`${L}?limit=50`, page.res.headers.etag as string);
      expect(notModified.res.status).toBe(304);
      const all = await time(L);
      expect(all.res.body.devices).toHaveLength(10_000);
      process.stdout.write(
        `admin inventory, 10,000 devices (SQLite, in-process): seeding ${Math.round(seeding)} ms; page of 50 ` +
          `(-lastSyncTime) ${runs.join('/')} ms; page after 500 by friendlyName ${deep.ms} ms; q search ${search.ms} ms; ` +
          `304 revalidation ${notModified.ms} ms; page bytes ${page.res.text.length}; unpaged (all 10,000) ${all.ms} ms, ${all.res.text.length} bytes\n`,
      );
    } finally {
      await bulk.close();
    }
  }, 120_000);
});
