/**
 * Diagnostics over HTTP (issue 20), in process over a real SQLite file: an upload answers an incident id; the secrets
 * seeded in the bundle are nowhere in what is stored (the zip, the database file); the server attaches the device's
 * record and its own log lines about that device (not another's); users see their own incidents only, admins their
 * tenant's only (another's is 404 exactly as none), with the zip to download; retention on the injected clock purges
 * incidents and releases their blobs; hostile bundles are refused with nothing stored; uploads are rate-limited.
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { Readable } from 'node:stream';
import request from 'supertest';
import yazl from 'yazl';
import { buildTestApp, signIn, asCaller, type TestContext } from '../helpers/testApp';
import { readBundle } from '../../server/diagnostics/bundle';
import { DIAGNOSTICS_UPLOADS_PER_HOUR } from '../../server/diagnostics/service';
import { parseDiagnosticsArgs, runDiagnosticsCommand } from '../../server/cli/diagnostics';
import { UserAdminError } from '../../server/admin/users';

let ctx: TestContext;
const PW = 'password-for-diagnostics-tests';
let serial = 0;
const newDeviceId = (tag: string) => `${tag}-${String(++serial).padStart(4, '0')}-abcdefghijkl`;

interface Session {
  access: string;
  deviceId: string;
  id: string;
}

let otherTenantId: string;

beforeAll(async () => {
  ctx = await buildTestApp();
  for (const [username, role] of [['alice', 'user'], ['bob', 'user'], ['root', 'admin']] as const) {
    await ctx.users.addUser({ username, password: PW, role });
  }
  otherTenantId = (await ctx.store.tenants.create('elsewhere', ctx.clock.now())).id;
  await ctx.users.addUser({ username: 'root2', password: PW, role: 'admin', tenantId: otherTenantId });
});
afterAll(() => ctx.close());

const as = (s: { access: string; deviceId?: string }) => asCaller(ctx, s);

/** A signed-in, registered device of `username`. */
async function registered(username: string): Promise<Session> {
  const deviceId = newDeviceId(username);
  const t = await signIn(ctx, username, PW, { device_id: deviceId });
  const res = await as({ access: t.access_token, deviceId }).post('/v1/devices', { friendlyName: `${username}'s phone`, deviceModel: 'Pixel 9', clientType: 'PigeonMail', clientVersion: '2.1' });
  expect(res.status).toBe(201);
  return { access: t.access_token, deviceId, id: res.body.id as string };
}

async function adminOf(username: string) {
  const t = await signIn(ctx, username, PW, { device_id: newDeviceId(username) });
  return as({ access: t.access_token });
}

const upload = (s: Session, body: Buffer, type = 'application/gzip') =>
  request(ctx.app).post('/v1/diagnostics').set('Authorization', `Bearer ${s.access}`).set('X-Device-Id', s.deviceId).set('Content-Type', type).send(body);

function zipOf(files: Record<string, string | Buffer>): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const zip = new yazl.ZipFile();
    for (const [name, content] of Object.entries(files)) zip.addBuffer(Buffer.isBuffer(content) ? content : Buffer.from(content), name);
    zip.end();
    const chunks: Buffer[] = [];
    zip.outputStream.on('data', (c: Buffer) => chunks.push(c));
    zip.outputStream.on('error', reject);
    zip.outputStream.on('end', () => resolve(Buffer.concat(chunks)));
  });
}

/** The entries of a stored zip, by name. */
async function entriesOf(zip: Buffer): Promise<Map<string, string>> {
  const read = await readBundle(Readable.from([zip]), 'application/zip');
  return new Map(read.entries.map((e) => [e.name, e.text]));
}

/** The bytes of the SQLite file and its WAL, where everything the store wrote is. */
function databaseBytes(): Buffer {
  const file = path.join(ctx.dir, 'pigeon.db');
  return Buffer.concat([file, `${file}-wal`].filter((f) => fs.existsSync(f)).map((f) => fs.readFileSync(f)));
}

const count = (table: string) => (ctx.store.db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;

// Seeded secrets: a password, a refresh token, a bearer JWT and an API key header, as an app might log them.
const SECRETS = {
  password: 'Hunter2-Correct-Horse-Battery-77',
  refresh: 'prt_0f9e8d7c6b5a.Zm9vYmFyYmF6cXV4cXV1eA',
  jwt: 'eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTc5OTk5OTk5OX0.c2lnbmF0dXJlLW9mLXRoZS10b2tlbi0xMjM0NTY',
  apiKey: 'k3y-9a8b7c6d5e4f3a2b1c0d',
};
const APP_LOG = [
  '2026-12-07T09:00:00Z INFO sync started folder=inbox',
  `2026-12-07T09:00:01Z DEBUG POST /oauth2/token grant_type=password&username=alice&password=${SECRETS.password}`,
  `2026-12-07T09:00:02Z DEBUG token response {"refresh_token":"${SECRETS.refresh}","expires_in":900}`,
  `2026-12-07T09:00:03Z DEBUG GET /v1/folders/sync Authorization: Bearer ${SECRETS.jwt}`,
  `2026-12-07T09:00:04Z DEBUG X-Api-Key: ${SECRETS.apiKey}`,
  '2026-12-07T09:00:05Z ERROR sync failed: socket hang up',
].join('\n');

describe('upload', () => {
  test('answers an incident id; the stored zip holds the scrubbed log, device.json and this device\'s server.log', async () => {
    const alice = await registered('alice');
    const other = await registered('alice'); // the same user's second device: its lines are not this one's
    expect((await as(alice).get('/v1/diagnostics')).status).toBe(200);
    expect((await as(other).get('/v1/devices')).status).toBe(200);

    const res = await upload(alice, zlib.gzipSync(APP_LOG));
    expect(res.status).toBe(201);
    expect(res.body.incidentId).toMatch(/^PGN-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$/);
    expect(res.body).toMatchObject({ entries: 3, skipped: [] });
    expect(res.body.redactions).toBeGreaterThanOrEqual(4);
    expect(Date.parse(res.body.expiresAt) - Date.parse(res.body.createdAt)).toBe(ctx.config.diagnosticsRetention * 1000);

    const root = await adminOf('root');
    const download = await root.get(`/admin/v1/diagnostics/${res.body.incidentId}/bundle`).buffer(true).parse((r, done) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => done(null, Buffer.concat(chunks)));
    });
    expect(download.status).toBe(200);
    expect(download.headers['content-type']).toBe('application/zip');
    expect(download.headers['content-disposition']).toBe(`attachment; filename="${res.body.incidentId}.zip"`);
    const zip = download.body as Buffer;
    expect(zip.subarray(0, 2).toString('latin1')).toBe('PK');
    const entries = await entriesOf(zip);
    expect([...entries.keys()].sort()).toEqual(['app.log', 'device.json', 'server.log']);

    const appLog = entries.get('app.log')!;
    expect(appLog).toContain('sync failed: socket hang up');
    expect(appLog).toContain('[REDACTED]');
    const everything = [...entries.values()].join('\n');
    for (const secret of Object.values(SECRETS)) expect(everything).not.toContain(secret);

    const device = JSON.parse(entries.get('device.json')!);
    expect(device).toMatchObject({ id: alice.id, deviceId: alice.deviceId, friendlyName: "alice's phone", deviceModel: 'Pixel 9', accessState: expect.any(String) });

    const serverLog = entries.get('server.log')!.trim().split('\n').map((l) => JSON.parse(l));
    expect(serverLog.length).toBeGreaterThan(0);
    expect(serverLog.every((l) => l.device === alice.deviceId)).toBe(true);
    expect(serverLog.some((l) => l.path === '/v1/diagnostics' && l.method === 'GET')).toBe(true);
    expect(entries.get('server.log')).not.toContain(other.deviceId);

    // Nowhere in the database either: not in the zip blob's chunks, not in any row, not in the WAL.
    const db = databaseBytes();
    for (const secret of Object.values(SECRETS)) expect(db.includes(Buffer.from(secret))).toBe(false);
    // And the check can fail: what was stored in clear is found.
    expect(db.includes(Buffer.from(alice.deviceId))).toBe(true);
  });

  test('a zip with several files is taken; an app file named as a server attachment is kept under app/', async () => {
    const s = await registered('alice');
    const zip = await zipOf({ 'logs/main.log': 'started\n', 'server.log': 'the app\'s own server log\n', 'shot.png': Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2]) });
    const res = await upload(s, zip, 'application/zip');
    expect(res.status).toBe(201);
    expect(res.body.skipped).toEqual([{ name: 'shot.png', reason: 'binary' }]);
    const found = await ctx.built.diagnostics.download({ id: null, name: 'test', tenantId: (await ctx.store.users.byUsername('alice'))!.tenantId }, res.body.incidentId);
    const entries = await entriesOf(found!.zip);
    expect([...entries.keys()].sort()).toEqual(['app/server.log', 'device.json', 'logs/main.log', 'server.log']);
    expect(entries.get('app/server.log')).toBe("the app's own server log\n");
  });
});

describe('lookup', () => {
  let alice: Session;
  let bob: Session;
  let incidentId: string;
  beforeAll(async () => {
    alice = await registered('alice');
    bob = await registered('bob');
    const res = await upload(alice, zlib.gzipSync('hello from alice\n'));
    expect(res.status).toBe(201);
    incidentId = res.body.incidentId;
  });

  test('the user sees their own incidents, newest first, and each by id (leniently typed)', async () => {
    ctx.clock.advance(1); // newest first is by creation time
    const second = (await upload(alice, zlib.gzipSync('again\n'))).body.incidentId as string;
    const list = await as(alice).get('/v1/diagnostics');
    expect(list.status).toBe(200);
    const ids = list.body.incidents.map((i: { incidentId: string }) => i.incidentId);
    expect(ids.indexOf(second)).toBeLessThan(ids.indexOf(incidentId));
    const one = await as(alice).get(`/v1/diagnostics/${incidentId.toLowerCase().replace(/-/g, '')}`);
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({ incidentId, deviceId: alice.deviceId, entries: 3 });
  });

  test("another user's incident is 404 exactly like one that does not exist", async () => {
    const theirs = await as(bob).get(`/v1/diagnostics/${incidentId}`);
    const none = await as(bob).get('/v1/diagnostics/PGN-0000-0000');
    const malformed = await as(bob).get('/v1/diagnostics/not-an-id');
    expect(theirs.status).toBe(404);
    for (const other of [none, malformed]) {
      expect(other.status).toBe(404);
      expect(other.body.code).toBe(theirs.body.code);
      expect(other.body.detail).toBe(theirs.body.detail);
    }
    expect((await as(bob).get('/v1/diagnostics')).body.incidents.map((i: { incidentId: string }) => i.incidentId)).not.toContain(incidentId);
  });

  test("the tenant's admin sees it (audited); another tenant's admin gets 404 as for none", async () => {
    const root = await adminOf('root');
    const res = await root.get(`/admin/v1/diagnostics/${incidentId}`);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ incidentId, username: 'alice', deviceId: alice.deviceId, deviceRecordId: alice.id });
    const tenantId = (await ctx.store.users.byUsername('alice'))!.tenantId;
    const audit = await ctx.store.audit.list(tenantId, { limit: 20 });
    expect(audit.some((e) => e.action === 'diagnostics.view' && e.targetId === incidentId)).toBe(true);

    const root2 = await adminOf('root2');
    const foreign = await root2.get(`/admin/v1/diagnostics/${incidentId}`);
    const none = await root2.get('/admin/v1/diagnostics/PGN-0000-0000');
    expect(foreign.status).toBe(404);
    expect(none.status).toBe(404);
    const { requestId: _a, ...foreignProblem } = foreign.body;
    const { requestId: _b, ...noneProblem } = none.body;
    expect(foreignProblem).toEqual(noneProblem);
    expect((await root2.get(`/admin/v1/diagnostics/${incidentId}/bundle`)).status).toBe(404);
    expect((await ctx.store.audit.list(otherTenantId, { limit: 20 })).some((e) => e.targetId === incidentId)).toBe(false);
  });

  test('a user token is not enough for the admin API', async () => {
    expect((await as(alice).get(`/admin/v1/diagnostics/${incidentId}`)).status).toBe(403);
  });

  test('the CLI shows and downloads it by a typed id', async () => {
    const lines: string[] = [];
    const errs: string[] = [];
    const io = { out: (l: string) => lines.push(l), err: (l: string) => errs.push(l), clock: ctx.clock, retentionSeconds: ctx.config.diagnosticsRetention };
    expect(await runDiagnosticsCommand(ctx.store, { action: 'show', id: incidentId.toLowerCase() }, io)).toBe(0);
    expect(lines.join('\n')).toContain(incidentId);
    expect(lines.join('\n')).toContain('alice');
    const file = path.join(ctx.dir, 'incident.zip');
    expect(await runDiagnosticsCommand(ctx.store, { action: 'download', id: incidentId, file }, io)).toBe(0);
    expect((await entriesOf(fs.readFileSync(file))).get('app.log')).toBe('hello from alice\n');
    // Never over an existing file.
    expect(await runDiagnosticsCommand(ctx.store, { action: 'download', id: incidentId, file }, io)).toBe(2);
    expect(await runDiagnosticsCommand(ctx.store, { action: 'show', id: 'PGN-0000-0000' }, io)).toBe(2);
    expect(errs.join('\n')).toContain('no incident');
    // Nothing has expired: the purge deletes nothing, and says so.
    expect(await runDiagnosticsCommand(ctx.store, { action: 'purge' }, io)).toBe(0);
    expect(lines.at(-1)).toBe('0 expired incident(s) purged');
    expect((await ctx.store.diagnostics.byId((await ctx.store.users.byUsername('alice'))!.tenantId, incidentId))?.id).toBe(incidentId);
  });

  test('the CLI refuses malformed commands before opening anything', () => {
    expect(parseDiagnosticsArgs(['show', 'PGN-1234-5678'])).toEqual({ action: 'show', id: 'PGN-1234-5678' });
    for (const bad of [[], ['show'], ['download', 'PGN-1234-5678'], ['purge', 'now'], ['delete', 'x']]) {
      expect(() => parseDiagnosticsArgs(bad)).toThrow(UserAdminError);
    }
  });
});

describe('retention', () => {
  test('past the retention the purge deletes the incident and releases its blob', async () => {
    const s = await registered('bob');
    const res = await upload(s, zlib.gzipSync(`retention test ${Math.random()}\n`));
    expect(res.status).toBe(201);
    const bob = (await ctx.store.users.byUsername('bob'))!;
    const incident = (await ctx.store.diagnostics.byId(bob.tenantId, res.body.incidentId))!;
    expect(await ctx.store.blobs.size(bob.id, incident.blobId)).toBe(incident.size);

    // (A month on, the test's access token has long expired: the service answers for the user.)
    ctx.clock.advance(ctx.config.diagnosticsRetention * 1000 - 1000);
    expect(await ctx.built.diagnostics.purgeExpired()).toBe(0);
    expect(await ctx.built.diagnostics.own(bob, incident.id)).toMatchObject({ incidentId: incident.id });

    ctx.clock.advance(2000);
    expect(await ctx.built.diagnostics.purgeExpired()).toBeGreaterThanOrEqual(1);
    expect(await ctx.built.diagnostics.own(bob, incident.id)).toBeUndefined();
    expect(await ctx.store.diagnostics.byId(bob.tenantId, incident.id)).toBeUndefined();
    expect(await ctx.store.blobs.size(bob.id, incident.blobId)).toBeUndefined();
  });
});

describe('hostile bundles: refused, nothing stored', () => {
  const stored = () => ({ incidents: count('diagnostic_incidents'), blobs: count('blobs') });

  test.each([
    ['a gzip bomb → 413', () => zlib.gzipSync(Buffer.alloc(40 * 1024 * 1024)), 'application/gzip', 413, 'compressionRatio'],
    ['a zip bomb → 413', () => zipOf({ 'a.log': Buffer.alloc(20 * 1024 * 1024, 0x61) }), 'application/zip', 413, 'compressionRatio'],
    ['a corrupt gzip → 400', () => Buffer.concat([zlib.gzipSync('fine').subarray(0, 12), Buffer.from('garbage garbage garbage')]), 'application/gzip', 400, 'corrupt'],
    ['a zip sent as gzip → 400', () => zipOf({ 'a.log': 'x' }), 'application/gzip', 400, 'corrupt'],
  ] as const)('%s', async (_name, make, type, status, reason) => {
    const s = await registered('alice');
    const before = stored();
    const res = await upload(s, await make(), type);
    expect(res.status).toBe(status);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(res.body.reason).toBe(reason);
    expect(stored()).toEqual(before);
  });

  test('over the compressed cap → 413 before anything is read', async () => {
    const s = await registered('alice');
    const before = stored();
    const res = await upload(s, Buffer.alloc(ctx.built.diagnostics.limits.maxCompressedBytes + 1, 1));
    expect(res.status).toBe(413);
    expect(stored()).toEqual(before);
  });

  test('a type other than gzip or zip → 415', async () => {
    const s = await registered('alice');
    const before = stored();
    for (const type of ['text/plain', 'application/x-tar', 'application/json']) {
      const res = await upload(s, Buffer.from('{"a":1}'), type);
      expect(res.status).toBe(415);
      expect(res.body.code).toBe('unsupportedMediaType');
    }
    expect(stored()).toEqual(before);
  });

  test('an unregistered device cannot upload', async () => {
    const deviceId = newDeviceId('alice');
    const t = await signIn(ctx, 'alice', PW, { device_id: deviceId });
    const res = await request(ctx.app).post('/v1/diagnostics').set('Authorization', `Bearer ${t.access_token}`).set('X-Device-Id', deviceId).set('Content-Type', 'application/gzip').send(zlib.gzipSync('x'));
    expect(res.status).toBe(403);
    expect(res.body.code).toBe('deviceNotRegistered');
  });
});

describe('rate limit', () => {
  test(`${DIAGNOSTICS_UPLOADS_PER_HOUR} bundles per device per hour (refused ones too), then 429 with Retry-After; another device is not limited`, async () => {
    const s = await registered('bob');
    // What the HTTP layer refuses before reading a bundle does not count; a corrupt bundle does.
    for (let i = 0; i < 2 * DIAGNOSTICS_UPLOADS_PER_HOUR; i++) expect((await upload(s, Buffer.from('x'), 'text/plain')).status).toBe(415);
    expect((await upload(s, Buffer.from('not gzip at all, not at all'))).status).toBe(400);
    for (let i = 1; i < DIAGNOSTICS_UPLOADS_PER_HOUR; i++) expect((await upload(s, zlib.gzipSync(`upload ${i}\n`))).status).toBe(201);
    const refused = await upload(s, zlib.gzipSync('one more\n'));
    expect(refused.status).toBe(429);
    expect(refused.body.code).toBe('rateLimited');
    const retryAfter = Number(refused.headers['retry-after']);
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(3600);
    expect((await upload(await registered('bob'), zlib.gzipSync('other device\n'))).status).toBe(201);
    // An hour later the device may upload again.
    ctx.clock.advance(retryAfter * 1000);
    expect((await upload(s, zlib.gzipSync('later\n'))).status).toBe(201);
  });
});
