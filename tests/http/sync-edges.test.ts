/**
 * Sync edges over HTTP: a device's tokens after its partnership ends, hierarchyState on folder deletion, batch
 * opIds apart from Idempotency-Keys, `If-Match: *`, and an idempotent replay that changes nothing.
 */
import request from 'supertest';
import { buildTestApp, signIn, type TestContext } from '../helpers/testApp';

let ctx: TestContext;
const PW = 'password-for-tests';

beforeAll(async () => {
  ctx = await buildTestApp();
  await ctx.users.addUser({ username: 'alice', password: PW, role: 'user' });
});
afterAll(() => ctx.close());

async function device(deviceId: string) {
  const t = await signIn(ctx, 'alice', PW, { device_id: deviceId });
  const h = { Authorization: `Bearer ${t.access_token}`, 'X-Device-Id': deviceId };
  const reg = await request(ctx.app).post('/v1/devices').set(h).send({});
  expect([200, 201]).toContain(reg.status);
  return h;
}

const alice = async () => (await ctx.store.users.byUsername('alice'))!;
const inbox = async () => (await ctx.store.folders.byKind((await alice()).id, 'inbox'))!;
const deliver = async (subject: string) =>
  ctx.store.items.create({ userId: (await alice()).id, folderId: (await inbox()).id, type: 'email', receivedAt: ctx.clock.now(), subject }, ctx.clock.now());

test('a token of a removed-and-re-registered device is 410 deviceReset; another device\'s token is 400', async () => {
  await deliver('one');
  const a = await device('edge-device-a-000001');
  const b = await device('edge-device-b-000001');
  const path = `/v1/folders/${(await inbox()).id}/items/sync`;
  const tokenA = (await request(ctx.app).get(path).set(a)).body.token;
  const folderToken = (await request(ctx.app).get('/v1/folders/sync').set(a)).body.token;

  expect((await request(ctx.app).get(`${path}?token=${encodeURIComponent(tokenA)}`).set(b)).body.code).toBe('invalidToken');

  await request(ctx.app).delete('/v1/devices/edge-device-a-000001').set(b).expect(204);
  const again = await device('edge-device-a-000001');
  const res = await request(ctx.app).get(`${path}?token=${encodeURIComponent(tokenA)}`).set(again);
  expect(res.status).toBe(410);
  expect(res.body).toMatchObject({ code: 'resyncRequired', reason: 'deviceReset' });
  const folders = await request(ctx.app).get(`/v1/folders/sync?token=${encodeURIComponent(folderToken)}`).set(again);
  expect(folders.body).toMatchObject({ code: 'resyncRequired', reason: 'deviceReset' });
});

test('hierarchyState moves when a folder is deleted, and stays put when nothing changed', async () => {
  const h = await device('edge-device-c-000001');
  const a = await request(ctx.app).post('/v1/folders').set(h).send({ displayName: 'A' });
  await request(ctx.app).post('/v1/folders').set(h).send({ displayName: 'B' }).expect(201);
  const state = async () => (await request(ctx.app).get(`/v1/folders/${(await inbox()).id}/items/sync`).set(h)).body.hierarchyState;
  const before = await state();
  expect(await state()).toBe(before);
  await request(ctx.app).delete(`/v1/folders/${a.body.id}`).set(h).expect(204);
  expect(await state()).not.toBe(before);
});

test('batch opIds and Idempotency-Keys live apart', async () => {
  const h = await device('edge-device-d-000001');
  const item = await deliver('two');
  await request(ctx.app).patch(`/v1/items/${item.id}`).set(h).set('Idempotency-Key', 'op:x').send({ isFlagged: true }).expect(200);
  const batch = await request(ctx.app).post('/v1/batch').set(h).send({ operations: [{ opId: 'x', op: 'update', id: item.id, isRead: true }] });
  expect(batch.body.results).toEqual([expect.objectContaining({ opId: 'x', status: 200 })]);
  expect((await ctx.store.items.byId((await alice()).id, item.id))!.isRead).toBe(true);
});

test('If-Match: * matches any version; a stale change key is 412 with the server\'s item', async () => {
  const h = await device('edge-device-e-000001');
  const item = await deliver('three');
  expect((await request(ctx.app).patch(`/v1/items/${item.id}`).set(h).set('If-Match', '*').send({ isFlagged: true })).status).toBe(200);
  const stale = await request(ctx.app).patch(`/v1/items/${item.id}`).set(h).set('If-Match', item.changeKey).send({ isRead: true });
  expect(stale.status).toBe(412);
  expect(stale.body).toMatchObject({ code: 'conflict', item: { id: item.id, isFlagged: true, isRead: false } });
  expect((await ctx.store.items.byId((await alice()).id, item.id))!.isRead).toBe(false);
});

test('an idempotent replay returns the first answer and changes nothing', async () => {
  const h = await device('edge-device-f-000001');
  const item = await deliver('four');
  const trash = (await ctx.store.folders.byKind((await alice()).id, 'deletedItems'))!;
  const first = await request(ctx.app).delete(`/v1/items/${item.id}`).set(h).set('Idempotency-Key', 'del-1');
  expect(first.body.folderId).toBe(trash.id);
  const modseq = (await ctx.store.mailboxes.get((await alice()).id))!.highestModseq;
  const replay = await request(ctx.app).delete(`/v1/items/${item.id}`).set(h).set('Idempotency-Key', 'del-1');
  expect(replay.headers['idempotent-replayed']).toBe('true');
  expect(replay.body).toEqual(first.body);
  expect((await ctx.store.mailboxes.get((await alice()).id))!.highestModseq).toBe(modseq);
  expect((await ctx.store.items.byId((await alice()).id, item.id))!.folderId).toBe(trash.id); // not deleted for good by the replay
});
