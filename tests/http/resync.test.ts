/**
 * POST /v1/folders/{id}/items/resync over HTTP (server/sync/resyncRoutes.ts): what the body may be, another user's
 * ids, the folders without a window, protected mail shown as the device may see it, and a token the next item sync
 * continues from.
 */
import request from 'supertest';
import { buildTestApp, signIn, asCaller, type TestContext } from '../helpers/testApp';
import { MAX_HELD } from '../../server/sync/resync';

let ctx: TestContext;
const PW = 'password-for-resync-tests';
const SECRET = 'RESYNC-SECRET-4711 quarterly numbers';
let serial = 0;

interface Device {
  access: string;
  deviceId: string;
}
const as = (d: Device) => asCaller(ctx, d);

async function device(username: string, capabilities: string[] = []): Promise<Device> {
  const deviceId = `${username}-resync-${String(++serial).padStart(4, '0')}-abcdefgh`;
  const t = await signIn(ctx, username, PW, { device_id: deviceId });
  const d = { access: t.access_token, deviceId };
  const res = await as(d).post('/v1/devices', { friendlyName: `${username}'s phone`, capabilities });
  expect(res.status).toBe(201);
  return d;
}

const userId = async (username: string) => (await ctx.store.users.byUsername(username))!.id;
const folder = async (username: string, kind: 'inbox' | 'calendar' | 'contacts' | 'archive') => (await ctx.store.folders.byKind(await userId(username), kind))!;
const resyncPath = (folderId: string) => `/v1/folders/${folderId}/items/resync`;
const syncPath = (folderId: string, token?: string) => `/v1/folders/${folderId}/items/sync${token ? `?token=${encodeURIComponent(token)}` : ''}`;

async function deliver(username: string, subject: string, at = ctx.clock.now()) {
  const owner = await userId(username);
  return ctx.store.items.create(
    { userId: owner, folderId: (await folder(username, 'inbox')).id, type: 'email', receivedAt: at, subject, bodyText: `Body of ${subject}`, from: { name: 'S', address: 's@example.test' } },
    ctx.clock.now(),
  );
}

/** Everything a brand-new device's sync of the folder holds, by id. */
async function fullSync(d: Device, folderId: string): Promise<Map<string, Record<string, unknown>>> {
  const held = new Map<string, Record<string, unknown>>();
  let token: string | undefined;
  for (;;) {
    const page = await as(d).get(syncPath(folderId, token));
    expect(page.status).toBe(200);
    for (const c of page.body.created) held.set(c.id, c);
    token = page.body.token;
    if (!page.body.moreAvailable) return held;
  }
}

beforeAll(async () => {
  ctx = await buildTestApp({ accessTokenTtl: 30 * 86_400 });
  for (const username of ['alice', 'bob']) await ctx.users.addUser({ username, password: PW, role: 'user', email: `${username}@example.test` });
  for (let i = 0; i < 8; i++) await deliver('alice', `alice ${i}`, ctx.clock.now() - (8 - i) * 60_000);
  await deliver('bob', 'bob 0');
}, 60_000);
afterAll(() => ctx.close());

describe('the request body', () => {
  let d: Device;
  let inboxId: string;
  beforeAll(async () => {
    d = await device('alice');
    inboxId = (await folder('alice', 'inbox')).id;
  });

  test.each([
    ['no held list', {}, 'held'],
    ['held that is not a list', { held: 'abc' }, 'held'],
    ['an entry without an id', { held: [{ changeKey: '1' }] }, 'held.0.id'],
    ['an empty id', { held: [{ id: '' }] }, 'held.0.id'],
    ['an id too long', { held: [{ id: 'x'.repeat(65) }] }, 'held.0.id'],
    ['a member an entry does not have', { held: [{ id: 'abc', extra: 1 }] }, 'held.0'],
    ['a member the body does not have', { held: [], token: 'abc' }, '(root)'],
    ['loadMore that is not a boolean', { held: [], loadMore: 'yes' }, 'loadMore'],
    ['bodyBytes over 64 KiB', { held: [], bodyBytes: 65537 }, 'bodyBytes'],
    ['negative bodyBytes', { held: [], bodyBytes: -1 }, 'bodyBytes'],
  ])('%s is a 400 naming the field', async (_what, body, field) => {
    const res = await as(d).post(resyncPath(inboxId), body);
    expect(res.status).toBe(400);
    expect(res.body.code).toBe('invalidRequest');
    expect(res.body.errors.map((e: { field: string }) => e.field)).toContain(field);
  });

  test(`more than ${MAX_HELD} held entries is a clear 400; exactly ${MAX_HELD} is answered`, async () => {
    const entries = (n: number) => Array.from({ length: n }, (_x, i) => ({ id: `unknown-${String(i).padStart(6, '0')}`, changeKey: String(i) }));
    const over = await as(d).post(resyncPath(inboxId), { held: entries(MAX_HELD + 1) });
    expect(over.status).toBe(400);
    expect(over.body.errors).toEqual([{ field: 'held', message: expect.stringContaining(`at most ${MAX_HELD}`) }]);
    const full = await as(d).post(resyncPath(inboxId), { held: entries(MAX_HELD) });
    expect(full.status).toBe(200);
    expect(full.body.removed).toHaveLength(MAX_HELD);
    expect(full.body.created).toHaveLength(8);
  });

  test('a folder the user does not have is a 404; a body that is not JSON is a 415', async () => {
    const bobInbox = (await folder('bob', 'inbox')).id;
    expect((await as(d).post(resyncPath(bobInbox), { held: [] })).body).toMatchObject({ status: 404, code: 'folderNotFound' });
    const text = await request(ctx.app).post(resyncPath(inboxId)).set('Authorization', `Bearer ${d.access}`).set('X-Device-Id', d.deviceId).set('Content-Type', 'text/plain').send('held');
    expect(text.status).toBe(415);
  });
});

test("another user's ids are simply deleted; nothing of theirs is answered", async () => {
  const d = await device('alice');
  const inboxId = (await folder('alice', 'inbox')).id;
  const bobsItem = (await ctx.store.folders.byKind(await userId('bob'), 'inbox'))!;
  const [bobs] = await ctx.store.sync.range(await userId('bob'), bobsItem.id, { receivedAt: -1, id: '' }, { receivedAt: Number.MAX_SAFE_INTEGER, id: '' }, 'desc', 1);
  const res = await as(d).post(resyncPath(inboxId), { held: [{ id: bobs!.id, changeKey: bobs!.changeKey }, { id: 'no-such-item-anywhere' }] });
  expect(res.status).toBe(200);
  expect(res.body.removed).toEqual([
    { id: bobs!.id, reason: 'deleted' },
    { id: 'no-such-item-anywhere', reason: 'deleted' },
  ]);
  expect(JSON.stringify(res.body)).not.toContain('bob 0');
  expect(res.body.unchanged).toBe(0);
});

test('the answer is the difference, and its token is where the next item sync continues', async () => {
  const d = await device('alice');
  const inboxId = (await folder('alice', 'inbox')).id;
  const archiveId = (await folder('alice', 'archive')).id;
  const before = await fullSync(d, inboxId);
  const [first, second, third] = [...before.values()];

  // Changes while the device's token is lost (say, a 410): a flag, a move out, a new message.
  await as(d).patch(`/v1/items/${first!.id}`, { isFlagged: true }).expect(200);
  await as(d).post(`/v1/items/${second!.id}/move`, { destinationFolderId: archiveId }).expect(200);
  const added = await deliver('alice', 'arrived meanwhile');

  const held = [...before.values()].map((v) => ({ id: v.id, changeKey: v.changeKey }));
  held.push({ id: third!.id, changeKey: 'a repeat counts once' }); // the first entry of an id is the one that counts
  const res = await as(d).post(resyncPath(inboxId), { held, bodyBytes: 64 });
  expect(res.status).toBe(200);
  expect(res.body.moreAvailable).toBe(false);
  expect(res.body.created.map((c: { id: string }) => c.id)).toEqual([added.id]);
  expect(res.body.created[0].body).toEqual({ contentType: 'text', content: 'Body of arrived meanwhile', truncated: false });
  expect(res.body.updated).toEqual([expect.objectContaining({ id: first!.id, isFlagged: true, subject: first!.subject, from: first!.from })]);
  expect(res.body.removed).toEqual([{ id: second!.id, reason: 'moved' }]);
  expect(res.body.unchanged).toBe(before.size - 2);
  expect(res.body.window).toMatchObject({ itemsInFolder: before.size, hasOlder: false, max: 1000 });

  // The token is an ordinary position: a poll returns nothing, a new message arrives as it would after any sync.
  const poll = await as(d).get(syncPath(inboxId, res.body.token));
  expect(poll.status).toBe(200);
  expect([poll.body.created, poll.body.updated, poll.body.removed, poll.body.moreAvailable]).toEqual([[], [], [], false]);
  const later = await deliver('alice', 'arrived later');
  const next = await as(d).get(syncPath(inboxId, poll.body.token));
  expect(next.body.created.map((c: { id: string }) => c.id)).toEqual([later.id]);
});

test('after a 410 the app resyncs with its cache instead of downloading the window again', async () => {
  const d = await device('alice');
  const inboxId = (await folder('alice', 'inbox')).id;
  const first = await as(d).get(syncPath(inboxId));
  const held = (first.body.created as Array<{ id: string; changeKey: string }>).map((c) => ({ id: c.id, changeKey: c.changeKey }));
  const record = (await ctx.store.devices.byUserAndDeviceId(await userId('alice'), d.deviceId))!;
  await ctx.store.devices.bumpEpoch(record.id, ctx.clock.now());
  const gone = await as(d).get(syncPath(inboxId, first.body.token));
  expect(gone.status).toBe(410);

  const res = await as(d).post(resyncPath(inboxId), { held });
  expect(res.status).toBe(200);
  expect([res.body.created, res.body.updated, res.body.removed, res.body.unchanged]).toEqual([[], [], [], held.length]);
  expect((await as(d).get(syncPath(inboxId, res.body.token))).status).toBe(200);
});

test('calendar and contacts folders are answered whole (no window), with loadMore or not', async () => {
  const d = await device('alice');
  for (const kind of ['calendar', 'contacts'] as const) {
    const f = await folder('alice', kind);
    const res = await as(d).post(resyncPath(f.id), { held: [], loadMore: true });
    expect(res.status).toBe(200);
    expect(res.body.window).toEqual({ size: f.totalCount, max: null, itemsInFolder: f.totalCount, hasOlder: false });
    expect((await as(d).get(syncPath(f.id, res.body.token))).status).toBe(200);
  }
});

test('protected mail in created and updated is opened for a device that may read it, and only for it', async () => {
  const sender = await device('bob');
  const sent = await as(sender).post('/v1/messages/send', {
    to: [{ address: 'alice@example.test' }],
    subject: 'Protected numbers',
    body: { contentType: 'text', content: SECRET },
    protection: { template: 'do-not-forward' },
  });
  expect(sent.status).toBeLessThan(300);
  const inboxId = (await folder('alice', 'inbox')).id;
  const capable = await device('alice', ['rightsManagement']);
  const plain = await device('alice');
  const find = (list: Array<Record<string, any>>) => list.find((v) => v.subject === 'Protected numbers');

  // Not held: `created`, with its body when asked.
  const opened = await as(capable).post(resyncPath(inboxId), { held: [], bodyBytes: 1024 });
  expect(find(opened.body.created)?.body?.content).toContain(SECRET);
  expect(find(opened.body.created)?.rights).toBeDefined();
  const closed = await as(plain).post(resyncPath(inboxId), { held: [], bodyBytes: 1024 });
  expect(find(closed.body.created)).toBeDefined();
  expect(JSON.stringify(closed.body)).not.toContain('RESYNC-SECRET');

  // Held with a stale key: `updated`, the full view, opened the same way.
  const id = find(opened.body.created)!.id as string;
  const stale = await as(capable).post(resyncPath(inboxId), { held: [{ id, changeKey: 'stale' }] });
  expect(stale.body.updated).toEqual([expect.objectContaining({ id, preview: expect.stringContaining('RESYNC-SECRET'), rights: expect.anything() })]);
  const stalePlain = await as(plain).post(resyncPath(inboxId), { held: [{ id, changeKey: 'stale' }] });
  expect(stalePlain.body.updated).toEqual([expect.objectContaining({ id })]);
  expect(JSON.stringify(stalePlain.body)).not.toContain('RESYNC-SECRET');
});
