/**
 * Regions (README, "Regions"; issue 14): two regions, `eu` on a SQLite file and `us` on a PostgreSQL database, each
 * an app of its own over its own store with its own keys, and one public directory naming both.
 *
 * - A full workload in each (devices, delivery, folder and item sync, item changes, search, mail from an eu user to
 *   a us user's address, admin actions), then every row of every table of each store is read: none carries the
 *   other region's tenant id or any of its user ids.
 * - A token of one region sent to the other's node: 421 wrongRegion with the directory's base URL, on the Express
 *   chain, in the fast lane and on /admin; session and discovery documents name the region.
 * - A node refuses a store holding a tenant of another region (a real process); the admin CLI refuses `tenant
 *   create` for a foreign region and relabels a store created before regions with `region adopt`.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import request from 'supertest';
import { SignJWT } from 'jose';
import { Client } from 'pg';
import { createApp } from '../../server/app';
import { loadConfig, ConfigError, type Config } from '../../server/config';
import { ManualClock } from '../../server/clock';
import { loadKeys, type KeyMaterial } from '../../server/auth/keys';
import { createLogger } from '../../server/logger';
import { withFastLane } from '../../server/http/fastLane';
import { createUserAdmin } from '../../server/admin/users';
import { openSqliteStore, type SqliteStore } from '../../server/store/sqlite';
import { openPostgresStore, type PostgresStore } from '../../server/store/postgres';
import { checkStoreRegion, WrongRegionStore } from '../../server/regions';
import { runAdmin } from '../../server/cli/admin';
import { freshDatabase, type FreshDatabase } from '../helpers/postgres';
import { tempDir, CLIENT_ID } from '../helpers/testApp';
import { startServer } from '../helpers/server';
import { expectToMatchSpec } from '../helpers/openapi';

const DIRECTORY = { eu: 'https://eu.mail.test', us: 'https://us.mail.test' };
const REGIONS_ENV = `eu=${DIRECTORY.eu}, us=${DIRECTORY.us}/`;
type RegionName = keyof typeof DIRECTORY;

interface Region {
  name: RegionName;
  dir: string;
  config: Config;
  store: SqliteStore | PostgresStore;
  keys: KeyMaterial;
  clock: ManualClock;
  built: ReturnType<typeof createApp>;
  /** The app as the listener serves it: the fast lane first, then Express. */
  server: http.Server;
  tenantId: string;
  /** username → user id */
  users: Record<string, string>;
  /** Reads every row of every table of this region's store (raw SQL). */
  dump(): Promise<Array<{ table: string; row: Record<string, unknown> }>>;
}

let eu: Region;
let us: Region;
let database: FreshDatabase;

async function openRegion(name: RegionName, store: SqliteStore | PostgresStore, dir: string, dump: Region['dump']): Promise<Region> {
  // A relay nothing listens at: mail to the other region is queued for it (and stays queued), as remote mail is.
  const config = loadConfig({
    PIGEON_DATA_DIR: dir,
    PIGEON_DEMO: 'false',
    PIGEON_PASSWORD_GRANT: 'true',
    PIGEON_REGION: name,
    PIGEON_REGIONS: REGIONS_ENV,
    PIGEON_ISSUER: DIRECTORY[name],
    PIGEON_SMTP_RELAY_URL: 'smtp://127.0.0.1:9',
  });
  const keys = await loadKeys(config, store.backend === 'postgres' ? store.secrets : undefined);
  const clock = new ManualClock(Date.now());
  const log = createLogger({ logLevel: 'silent', logPretty: false });
  const built = createApp({ config, store, keys, clock, log, lag: { lagMs: () => 0, stop() {} } });
  const server = http.createServer(withFastLane(built.app, built.fastLane));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  // The tenant of this region, created as the admin CLI's `tenant create` does, and its users.
  const tenant = await store.tenants.create(`${name} Org`, clock.now(), name);
  const admin = createUserAdmin(store, clock, { region: name });
  const users: Record<string, string> = {};
  for (const [username, role] of [[`${name}-admin`, 'admin'], [`${name}-anna`, 'user'], [`${name}-ben`, 'user']] as const) {
    const user = await admin.addUser({ username, password: `${username}-password-1`, role, email: `${username}@${name}.mail.test`, tenantId: tenant.id });
    users[username] = user.id;
  }
  return { name, dir, config, store, keys, clock, built, server, tenantId: tenant.id, users, dump };
}

beforeAll(async () => {
  const euDir = tempDir('pigeon-region-eu-');
  const euStore = openSqliteStore(path.join(euDir, 'pigeon.db'));
  eu = await openRegion('eu', euStore, euDir, async () => {
    const tables = (euStore.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").all() as Array<{ name: string }>).map((t) => t.name);
    return tables.flatMap((table) => (euStore.db.prepare(`SELECT * FROM "${table}"`).all() as Array<Record<string, unknown>>).map((row) => ({ table, row })));
  });
  database = await freshDatabase('pigeon_region_us');
  const usStore = await openPostgresStore(database.url, { poolSize: 4, nodeId: 'region-us' });
  us = await openRegion('us', usStore, tempDir('pigeon-region-us-'), async () => {
    const client = new Client({ connectionString: database.url });
    await client.connect();
    try {
      const tables = (await client.query<{ name: string }>("SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")).rows.map((t) => t.name);
      const out: Array<{ table: string; row: Record<string, unknown> }> = [];
      for (const table of tables) for (const row of (await client.query(`SELECT * FROM "${table}"`)).rows) out.push({ table, row });
      return out;
    } finally {
      await client.end();
    }
  });
}, 60_000);

afterAll(async () => {
  for (const r of [eu, us]) {
    if (!r) continue;
    await new Promise((resolve) => r.server.close(resolve));
    await r.store.close();
    fs.rmSync(r.dir, { recursive: true, force: true });
  }
  await database?.drop();
});

const api = (r: Region) => request(r.server);

async function signIn(r: Region, username: string, deviceId?: string) {
  const res = await api(r)
    .post('/oauth2/token')
    .type('form')
    .send({ grant_type: 'password', client_id: CLIENT_ID, username, password: `${username}-password-1`, ...(deviceId ? { device_id: deviceId } : {}), ...(username.endsWith('admin') ? { scope: 'mail admin' } : {}) });
  expect(res.status).toBe(200);
  return res.body as { access_token: string; refresh_token: string };
}

const message = (from: string, to: string, subject: string, text: string) =>
  Buffer.from(
    [`From: ${from}`, `To: ${to}`, `Subject: ${subject}`, `Message-ID: <${subject.replace(/\W+/g, '-')}-${Date.now()}@mail.test>`, 'Date: Mon, 2 Feb 2026 10:00:00 +0000', 'Content-Type: text/plain; charset=utf-8', '', text, ''].join('\r\n'),
  );

/** A full workload of one region through its HTTP API; answers what the sent message's subject was. */
async function workload(r: Region, other: Region): Promise<string> {
  const anna = `${r.name}-anna`;
  const device = `${r.name}-device-0123456789`;
  const { access_token } = await signIn(r, anna, device);
  const h = { Authorization: `Bearer ${access_token}`, 'X-Device-Id': device };
  expect((await api(r).post('/v1/devices').set(h).send({ friendlyName: `${r.name} phone` })).status).toBe(201);
  const admin = await signIn(r, `${r.name}-admin`);
  const ah = { Authorization: `Bearer ${admin.access_token}` };

  // Delivery (the LMTP path, through the admin import route) of a few messages to anna.
  for (let i = 0; i < 3; i++) {
    const raw = message(`friend${i}@elsewhere.test`, `${anna}@${r.name}.mail.test`, `${r.name} hello ${i}`, `Greetings number ${i} from the ${r.name} workload`);
    const res = await api(r).post(`/admin/v1/users/${r.users[anna]}/messages`).set(ah).set('Content-Type', 'message/rfc822').send(raw);
    expect(res.status).toBe(201);
  }
  // Folder and item sync, then changes to items.
  const folders = await api(r).get('/v1/folders/sync').set(h);
  expect(folders.status).toBe(200);
  const inbox = folders.body.created.find((f: { kind: string }) => f.kind === 'inbox');
  const created = await api(r).post('/v1/folders').set(h).send({ displayName: `${r.name} projects` });
  expect(created.status).toBe(201);
  const items = await api(r).get(`/v1/folders/${inbox.id}/items/sync`).set(h);
  expect(items.status).toBe(200);
  expect(items.body.created).toHaveLength(3);
  const [first, second] = items.body.created as Array<{ id: string }>;
  expect((await api(r).patch(`/v1/items/${first!.id}`).set(h).send({ isRead: true, isFlagged: true })).status).toBe(200);
  expect((await api(r).post(`/v1/items/${second!.id}/move`).set(h).send({ destinationFolderId: created.body.id })).status).toBe(200);
  const again = await api(r).get(`/v1/folders/${inbox.id}/items/sync`).query({ token: items.body.token }).set(h);
  expect(again.status).toBe(200);
  // Search.
  const found = await api(r).get('/v1/search').query({ q: 'greetings' }).set(h);
  expect(found.status).toBe(200);
  expect(found.body.results.length).toBeGreaterThan(0);
  // Mail to a user of the other region: not a local recipient here, so it leaves as remote mail.
  const subject = `from ${r.name} to ${other.name}`;
  const sent = await api(r)
    .post('/v1/messages/send')
    .set(h)
    .send({ to: [{ address: `${other.name}-ben@${other.name}.mail.test` }, { address: `${r.name}-ben@${r.name}.mail.test` }], subject, body: { contentType: 'text', content: `Across the ocean: crossing${r.name}.` } });
  expect(sent.status).toBe(202);
  await r.built.relay.runOnce();
  // Admin actions.
  const devices = await api(r).get('/admin/v1/devices').set(ah);
  expect(devices.status).toBe(200);
  const record = devices.body.devices[0];
  expect((await api(r).post(`/admin/v1/devices/${record.id}/quarantine`).set(ah)).status).toBe(200);
  expect((await api(r).post(`/admin/v1/devices/${record.id}/allow`).set(ah)).status).toBe(200);
  expect(
    (await api(r).post('/admin/v1/device-access-rules').set(ah).send({ field: 'deviceModel', match: 'exact', value: `${r.name} model`, accessState: 'blocked' })).status,
  ).toBe(201);
  expect((await api(r).get('/admin/v1/audit').set(ah)).status).toBe(200);
  return subject;
}

/** Every value of a row as text (ids may sit in any text column, JSON and byte columns included). */
const texts = (row: Record<string, unknown>) =>
  Object.entries(row).map(([column, v]) => ({ column, text: Buffer.isBuffer(v) ? v.toString('latin1') : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v) }));

/** The rows of `r`'s store that name any of `ids` (in a tenant_id/user_id column or inside any other value). */
async function rowsNaming(r: Region, ids: string[]) {
  const found: Array<{ table: string; column: string; id: string }> = [];
  for (const { table, row } of await r.dump()) {
    for (const { column, text } of texts(row)) for (const id of ids) if (text.includes(id)) found.push({ table, column, id });
  }
  return found;
}

describe('a full workload in each region leaves no row of one region in the other\'s store', () => {
  let subjects: string[];
  beforeAll(async () => {
    subjects = [await workload(eu, us), await workload(us, eu)];
  }, 60_000);

  test('the workloads ran: each store holds its own tenant, users, items, devices and audit', async () => {
    for (const r of [eu, us]) {
      const own = await rowsNaming(r, [r.tenantId, ...Object.values(r.users)]);
      const tables = new Set(own.map((f) => f.table));
      for (const t of ['tenants', 'users', 'mailboxes', 'folders', 'items', 'devices', 'refresh_tokens', 'audit_log', 'device_access_rules', 'outbox']) {
        expect({ region: r.name, table: t, has: tables.has(t) }).toEqual({ region: r.name, table: t, has: true });
      }
      expect((await r.store.tenants.list()).map((t) => t.region)).toEqual([r.name]);
    }
  });

  test('no table of either store carries the other region\'s tenant id or user ids', async () => {
    for (const [r, other] of [[eu, us], [us, eu]] as const) {
      expect({ region: r.name, foreign: await rowsNaming(r, [other.tenantId, ...Object.values(other.users)]) }).toEqual({ region: r.name, foreign: [] });
    }
  });

  test('mail to the other region left as remote mail: the local recipient got it, the foreign one is queued, not written', async () => {
    for (const [r, other, subject] of [[eu, us, subjects[0]!], [us, eu, subjects[1]!]] as const) {
      const outbox = await r.store.outbox.list(r.users[`${r.name}-anna`]!);
      expect(outbox.flatMap((e) => e.recipients)).toContain(`${other.name}-ben@${other.name}.mail.test`);
      expect(outbox.flatMap((e) => e.recipients)).not.toContain(`${r.name}-ben@${r.name}.mail.test`);
      const localBen = r.users[`${r.name}-ben`]!;
      expect((await r.store.search.query(localBen, [`crossing${r.name}`], { limit: 10 })).length).toBe(1);
      const foreignBen = other.users[`${other.name}-ben`]!;
      expect(await other.store.search.query(foreignBen, [`crossing${r.name}`], { limit: 10 })).toEqual([]);
      expect(subject).toContain(r.name);
    }
  });
});

describe('a request for a mailbox of another region', () => {
  test('an eu token at the us node: 421 wrongRegion with eu\'s base URL from us\'s directory (Express, fast lane, /admin)', async () => {
    const { access_token } = await signIn(eu, 'eu-anna');
    const admin = await signIn(eu, 'eu-admin');
    const expected = { status: 421, code: 'wrongRegion', region: 'eu', baseUrl: DIRECTORY.eu };
    for (const [method, url, token] of [
      ['get', '/v1/session', access_token], // the fast lane
      ['get', '/v1/folders/sync', access_token], // the fast lane
      ['get', '/v1/devices', access_token], // Express
      ['post', '/v1/messages/send', access_token],
      ['get', '/admin/v1/devices', admin.access_token],
    ] as const) {
      const res = await api(us)[method](url).set('Authorization', `Bearer ${token}`).set('X-Device-Id', 'eu-device-0123456789');
      expect({ url, ...res.body }).toMatchObject({ url, ...expected });
      expect(res.status).toBe(421);
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
      if (url === '/v1/session') expectToMatchSpec(res, 'get', '/v1/session');
    }
    // The eu node itself serves it.
    expect((await api(eu).get('/v1/session').set('Authorization', `Bearer ${access_token}`)).status).toBe(200);
  });

  test('the base URL is the directory\'s, whatever the token says; an unlisted or absent region is judged here', async () => {
    // Times from the apps' own (manual) clock, not the wall clock: a token the apps would judge issued in the future
    // or expired would be refused for that, not for its region.
    const forged = async (claims: Record<string, unknown>, keys: KeyMaterial, issuer: string, sub = 'nobody') => {
      const iat = Math.floor(us.clock.now() / 1000);
      return new SignJWT(JSON.parse(JSON.stringify({ tid: 't', scope: 'mail', sv: 0, sid: 's', role: 'user', ...claims })))
        .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: keys.kid })
        .setIssuer(issuer)
        .setAudience('pigeon-api')
        .setSubject(sub)
        .setJti('j')
        .setIssuedAt(iat)
        .setExpirationTime(iat + 3600)
        .sign(keys.signingKey);
    };
    // Signed by nobody us knows, naming eu (and a base URL of its own, which is ignored): us's entry for eu.
    const euSigned = await forged({ rgn: 'eu', baseUrl: 'https://evil.test' }, eu.keys, DIRECTORY.eu);
    const a = await api(us).get('/v1/session').set('Authorization', `Bearer ${euSigned}`);
    expect(a.status).toBe(421);
    expect(a.body.baseUrl).toBe(DIRECTORY.eu);
    expect(JSON.stringify(a.body)).not.toContain('evil');
    // A region the directory does not list: an ordinary 401.
    const mars = await api(us).get('/v1/session').set('Authorization', `Bearer ${await forged({ rgn: 'mars' }, us.keys, DIRECTORY.us)}`);
    expect(mars.status).toBe(401);
    // A token from before regions (no `rgn`) is this region's: the same claims as a fresh one, without `rgn`, served.
    const { access_token } = await signIn(us, 'us-anna');
    const claims = JSON.parse(Buffer.from(access_token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
    expect(claims.rgn).toBe('us');
    const legacy = await forged({ tid: claims.tid, sid: claims.sid, sv: claims.sv, rgn: undefined, sub: undefined }, us.keys, DIRECTORY.us, String(claims.sub));
    const old = await api(us).get('/v1/session').set('Authorization', `Bearer ${legacy}`);
    expect(old.status).toBe(200);
    expect(old.body.region).toBe('us');
  });

  test('a sign-in at the wrong region is an ordinary invalid_grant: no region of another\'s users is disclosed', async () => {
    const res = await api(us).post('/oauth2/token').type('form').send({ grant_type: 'password', client_id: CLIENT_ID, username: 'eu-anna', password: 'eu-anna-password-1' });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_grant');
    expect(JSON.stringify(res.body)).not.toMatch(/eu\b|region/);
  });

  test('/v1/session and the discovery document say where a mailbox lives', async () => {
    const { access_token } = await signIn(us, 'us-anna');
    const session = await api(us).get('/v1/session').set('Authorization', `Bearer ${access_token}`);
    expect(session.body).toMatchObject({ region: 'us', regionBaseUrl: DIRECTORY.us });
    expectToMatchSpec(session, 'get', '/v1/session');
    const discovery = await api(eu).get('/.well-known/openid-configuration');
    expect(discovery.body).toMatchObject({ issuer: DIRECTORY.eu, pigeon_region: 'eu', pigeon_regions: DIRECTORY });
    expectToMatchSpec(discovery, 'get', '/.well-known/openid-configuration');
  });
});

describe('configuration', () => {
  test('bad PIGEON_REGION and PIGEON_REGIONS values stop start-up naming the variable', () => {
    const load = (env: Record<string, string>) => () => loadConfig({ PIGEON_DATA_DIR: '/nonexistent', ...env });
    expect(load({ PIGEON_REGION: 'EU West' })).toThrow(/PIGEON_REGION: expected 1 to 32 of a-z 0-9 -/);
    expect(load({ PIGEON_REGIONS: 'eu' })).toThrow(/PIGEON_REGIONS: expected name=https:\/\/base-url/);
    expect(load({ PIGEON_REGIONS: 'eu=http://eu.test' })).toThrow(/PIGEON_REGIONS: region eu: expected an https:\/\/ base URL/);
    expect(load({ PIGEON_REGIONS: 'eu=https://a.test,eu=https://b.test' })).toThrow(/listed twice/);
    expect(load({ PIGEON_REGIONS: 'Eu=https://a.test' })).toThrow(ConfigError);
    expect(load({ PIGEON_REGIONS: 'eu=https://user:pw@a.test' })).toThrow(/without credentials/);
    expect(loadConfig({ PIGEON_DATA_DIR: '/nonexistent' }).region).toBe('default');
  });
});

describe('a store of another region', () => {
  let dir: string;
  let saved: NodeJS.ProcessEnv;
  beforeEach(() => {
    dir = tempDir('pigeon-region-store-');
    saved = process.env;
  });
  afterEach(() => {
    process.env = saved;
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const admin = async (env: Record<string, string>, ...argv: string[]) => {
    process.env = { PIGEON_DATA_DIR: dir, PIGEON_REGIONS: REGIONS_ENV, ...env };
    const out: string[] = [];
    const err: string[] = [];
    const code = await runAdmin(argv, (l) => out.push(l), (l) => err.push(l));
    return { code, out: out.join('\n'), err: err.join('\n') };
  };

  test('the check names both regions and the fix', async () => {
    await expect(checkStoreRegion(eu.store, 'us')).rejects.toThrow(WrongRegionStore);
    await expect(checkStoreRegion(eu.store, 'us')).rejects.toThrow(/serves region us .* holds 1 tenant\(s\) of region eu .*PIGEON_REGION=eu/);
    await expect(checkStoreRegion(eu.store, 'eu')).resolves.toBeUndefined();
  });

  test('the server refuses to start on it, and says why', async () => {
    const store = openSqliteStore(path.join(dir, 'pigeon.db'));
    await store.tenants.create('Europe', Date.now(), 'eu');
    await store.close();
    await expect(startServer({ PIGEON_DATA_DIR: dir, PIGEON_REGION: 'us', PIGEON_REGIONS: REGIONS_ENV })).rejects.toThrow(
      /exited with 1 before ready: pigeon: failed to start: this node serves region us \(PIGEON_REGION\) but its store holds 1 tenant\(s\) of region eu/,
    );
  }, 60_000);

  test('admin CLI: tenant create in this region, refused for another (with its base URL); tenant list', async () => {
    expect((await admin({ PIGEON_REGION: 'eu' }, 'tenant', 'create', '--name', 'Acme EU')).out).toMatch(/^created tenant Acme EU \(\S+\) in region eu$/);
    await expect(admin({ PIGEON_REGION: 'eu' }, 'tenant', 'create', '--name', 'Acme US', '--region', 'us')).rejects.toThrow(
      `refused: this store is region eu's (PIGEON_REGION), not us's: run it against region us's store (${DIRECTORY.us})`,
    );
    await expect(admin({ PIGEON_REGION: 'eu' }, 'tenant', 'create', '--name', 'Acme Mars', '--region', 'mars')).rejects.toThrow(/PIGEON_REGIONS does not list it/);
    const listed = (await admin({ PIGEON_REGION: 'eu' }, 'tenant', 'list')).out.split('\n').map((l) => l.split('\t').slice(1, 3));
    expect(listed).toEqual([['Acme EU', 'eu']]);
    // A CLI configured for another region changes nothing in this store.
    await expect(admin({ PIGEON_REGION: 'us' }, 'add-user', '--username', 'sam', '--password', 'sam-password-1')).rejects.toThrow(WrongRegionStore);
    const tenantId = (await admin({ PIGEON_REGION: 'eu' }, 'tenant', 'list')).out.split('\t')[0]!;
    expect((await admin({ PIGEON_REGION: 'eu' }, 'add-user', '--username', 'sam', '--password', 'sam-password-1', '--tenant', tenantId)).code).toBe(0);
  });

  test('region adopt relabels a store created before regions, audited; only from default', async () => {
    expect((await admin({}, 'add-user', '--username', 'old', '--password', 'old-password-1')).code).toBe(0);
    const before = openSqliteStore(path.join(dir, 'pigeon.db'));
    const [tenant] = await before.tenants.list();
    expect(tenant!.region).toBe('default');
    await before.close();
    await expect(admin({ PIGEON_REGION: 'eu' }, 'list-users')).rejects.toThrow(/region adopt eu/);
    await expect(admin({ PIGEON_REGION: 'us' }, 'region', 'adopt', 'eu')).rejects.toThrow(/needs PIGEON_REGION=eu/);
    const adopted = await admin({ PIGEON_REGION: 'eu' }, 'region', 'adopt', 'eu');
    expect(adopted.out).toMatch(/1 tenant\(s\) adopted into region eu$/);
    expect((await admin({ PIGEON_REGION: 'eu' }, 'list-users')).code).toBe(0);
    const after = openSqliteStore(path.join(dir, 'pigeon.db'));
    try {
      expect((await after.tenants.get(tenant!.id))!.region).toBe('eu');
      expect((await after.audit.list(tenant!.id, { limit: 10 })).map((e) => [e.action, e.details])).toEqual([['tenant.regionAdopt', { from: 'default', to: 'eu' }]]);
    } finally {
      await after.close();
    }
    // Now an eu store: adopting it for another region is refused.
    await expect(admin({ PIGEON_REGION: 'us' }, 'region', 'adopt', 'us')).rejects.toThrow(/only tenants of region default are adopted/);
  });
});
