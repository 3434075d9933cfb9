/**
 * A full disk (issue 8): the store file may not grow (`PRAGMA max_page_count`, which surfaces exactly as a full disk
 * does: SQLITE_FULL, field-notes.md, which the store reports as StoreFull). Writes answer 507 insufficientStorage with a problem body and change nothing,
 * reads keep working, the file stays intact, and writes resume without a restart once space returns.
 */
import request from 'supertest';
import { buildTestApp, signIn, type TestContext } from '../helpers/testApp';
import { StoreFull } from '../../server/store/errors';

let ctx: TestContext;
const PW = 'password-for-tests';
let h: Record<string, string>;

beforeAll(async () => {
  ctx = await buildTestApp();
  await ctx.users.addUser({ username: 'alice', password: PW, role: 'user' });
  const t = await signIn(ctx, 'alice', PW, { device_id: 'disk-full-device-0001' });
  h = { Authorization: `Bearer ${t.access_token}`, 'X-Device-Id': 'disk-full-device-0001' };
  await request(ctx.app).post('/v1/devices').set(h).send({}).expect(201);
});
afterAll(() => ctx.close());

const pageCount = () => ctx.store.db.pragma('page_count', { simple: true }) as number;
/** Leaves no free page: the next write that needs one fails as on a full disk. */
const fillDisk = () => {
  ctx.store.db.pragma('wal_checkpoint(TRUNCATE)');
  ctx.store.db.pragma(`max_page_count = ${pageCount()}`);
};
const freeDisk = () => ctx.store.db.pragma('max_page_count = 1073741823');
/** Real mail: a few KiB of text each, so a write needs new pages. */
const bulky = (n: number) => `${'lorem ipsum dolor sit amet '.repeat(200)} #${n}`;

test('writes answer 507 and change nothing; reads work; writes resume once space returns', async () => {
  const alice = (await ctx.store.users.byUsername('alice'))!;
  const inbox = (await ctx.store.folders.byKind(alice.id, 'inbox'))!;
  const items = [];
  for (let i = 0; i < 20; i++) {
    items.push(
      await ctx.store.items.create(
        { userId: alice.id, folderId: inbox.id, type: 'email', receivedAt: ctx.clock.now() + i, subject: `m${i}`, bodyText: bulky(i) },
        ctx.clock.now(),
      ),
    );
  }
  const sync = await request(ctx.app).get(`/v1/folders/${inbox.id}/items/sync`).set(h).expect(200);
  const modseqBefore = (await ctx.store.mailboxes.get(alice.id))!.highestModseq;

  fillDisk();
  try {
    // Enough writes of different kinds that some need a page: each either succeeds or is a clean 507.
    const outcomes: number[] = [];
    for (let i = 0; i < 40; i++) {
      const res = await request(ctx.app)
        .post('/v1/folders')
        .set(h)
        .send({ displayName: `Folder ${i} ${'x'.repeat(200)}`, parentId: null });
      outcomes.push(res.status);
      if (res.status === 507) {
        expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
        expect(res.body).toMatchObject({ status: 507, code: 'insufficientStorage' });
        expect(res.body.requestId).toEqual(expect.any(String));
      } else {
        expect(res.status).toBe(201);
      }
    }
    expect(outcomes).toContain(507);
    const created = outcomes.filter((s) => s === 201).length;

    // A delivery fails as a whole (the LMTP listener turns this into 452): no half-stored message.
    await expect(
      ctx.store.items.create(
        { userId: alice.id, folderId: inbox.id, type: 'email', receivedAt: ctx.clock.now(), subject: 'too much', bodyText: bulky(999).repeat(20) },
        ctx.clock.now(),
      ),
    ).rejects.toBeInstanceOf(StoreFull);
    expect(await ctx.store.items.byIds(alice.id, items.map((i) => i.id))).toHaveLength(20);

    // Reads keep working: the session, the hierarchy, an incremental sync (which now reports only the folders made).
    await request(ctx.app).get('/v1/session').set(h).expect(200);
    const folders = await request(ctx.app).get('/v1/folders/sync').set(h).expect(200);
    expect(folders.body.created.filter((f: { displayName: string }) => f.displayName.startsWith('Folder '))).toHaveLength(created);
    const again = await request(ctx.app).get(`/v1/folders/${inbox.id}/items/sync?token=${encodeURIComponent(sync.body.token)}`).set(h);
    expect(again.status).toBe(200);
    expect(again.body.created).toEqual([]);
    // Every failed write left no trace: the mailbox counter moved only for the folders that were made.
    expect((await ctx.store.mailboxes.get(alice.id))!.highestModseq).toBe(modseqBefore + created);
    expect(ctx.store.db.pragma('integrity_check', { simple: true })).toBe('ok');
  } finally {
    freeDisk();
  }

  // Space is back: the same process writes again, no restart.
  const patch = await request(ctx.app).patch(`/v1/items/${items[0]!.id}`).set(h).send({ isFlagged: true });
  expect(patch.status).toBe(200);
  await request(ctx.app).post('/v1/folders').set(h).send({ displayName: 'After the storm', parentId: null }).expect(201);
  expect(ctx.store.db.pragma('integrity_check', { simple: true })).toBe('ok');
});
