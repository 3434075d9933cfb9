/**
 * Shared mailboxes over HTTP against a real SQLite file (README, "Shared mailboxes"): an admin creates one and names
 * its members; a member sees it as a second mailbox root with its own folders, tokens and window (`X-Mailbox`); a
 * non-member is answered exactly as for a mailbox that exists nowhere; membership changes take effect on the next
 * call; send-as and send-on-behalf; nobody signs in as the mailbox; X-Mailbox is refused where it means nothing.
 */
import request from 'supertest';
import { simpleParser } from 'mailparser';
import { buildTestApp, passwordGrant, signIn, type TestContext } from '../helpers/testApp';

const PW = 'shared-mailbox-password-1';
let ctx: TestContext;
const ids: Record<string, string> = {};
const heads: Record<string, Record<string, string>> = {};
let shared: { id: string; email: string };

async function device(user: string): Promise<Record<string, string>> {
  const deviceId = `shared-${user}-0001-abcdefgh`;
  const t = await signIn(ctx, user, PW, { device_id: deviceId });
  const headers = { Authorization: `Bearer ${t.access_token}`, 'X-Device-Id': deviceId };
  const reg = await request(ctx.app).post('/v1/devices').set(headers).send({ friendlyName: user });
  expect(reg.status).toBe(201);
  return headers;
}

const inShared = (user: string) => ({ ...heads[user]!, 'X-Mailbox': shared.email });
const admin = () => heads.admin!;

async function deliverTo(userId: string, subject: string) {
  const raw = Buffer.from(`From: Customer <customer@outside.example>\r\nTo: support@shared.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@outside.example>\r\n\r\nPlease help.\r\n`);
  const [r] = await ctx.built.delivery.deliver(await ctx.built.delivery.prepare(raw), [{ userId }], { duplicates: 'live' });
  return r!.itemId;
}

beforeAll(async () => {
  ctx = await buildTestApp({ mailHostname: 'mail.shared.test' });
  for (const [user, role] of [['admin', 'admin'], ['alice', 'user'], ['bob', 'user'], ['mallory', 'user']] as const) {
    ids[user] = (await ctx.users.addUser({ username: user, password: PW, role, email: `${user}@shared.test`, displayName: `${user} Shared` })).id;
    heads[user] = await device(user);
  }
  const created = await request(ctx.app).post('/admin/v1/shared-mailboxes').set(admin()).send({ email: 'support@shared.test', displayName: 'Support' });
  expect(created.status).toBe(201);
  expect(created.body).toMatchObject({ email: 'support@shared.test', displayName: 'Support', members: [] });
  shared = created.body;
  const alice = await request(ctx.app).put(`/admin/v1/shared-mailboxes/${shared.id}/members/${ids.alice}`).set(admin()).send({ fullAccess: true, sendAs: true });
  expect(alice.status).toBe(200);
  const bob = await request(ctx.app).put(`/admin/v1/shared-mailboxes/${shared.id}/members/${ids.bob}`).set(admin()).send({ fullAccess: true, sendOnBehalf: true });
  expect(bob.body.members.map((m: { email: string }) => m.email).sort()).toEqual(['alice@shared.test', 'bob@shared.test']);
});
afterAll(() => ctx.close());

test('a member lists the shared mailbox beside their own', async () => {
  const res = await request(ctx.app).get('/v1/mailboxes').set(heads.alice!);
  expect(res.status).toBe(200);
  expect(res.body.mailboxes).toEqual([
    expect.objectContaining({ id: ids.alice, shared: false }),
    expect.objectContaining({ id: shared.id, email: 'support@shared.test', shared: true, fullAccess: true, sendAs: true, sendOnBehalf: false }),
  ]);
  const mallory = await request(ctx.app).get('/v1/mailboxes').set(heads.mallory!);
  expect(mallory.body.mailboxes.map((m: { id: string }) => m.id)).toEqual([ids.mallory]);
});

test('a second mailbox root: its own folders, items, tokens and window', async () => {
  const itemId = await deliverTo(shared.id, 'Order 1001 is late');
  const hierarchy = await request(ctx.app).get('/v1/folders/sync').set(inShared('alice'));
  expect(hierarchy.status).toBe(200);
  const inbox = hierarchy.body.created.find((f: { kind: string }) => f.kind === 'inbox');
  const ownInbox = (await ctx.store.folders.byKind(ids.alice!, 'inbox'))!;
  expect(inbox.id).not.toBe(ownInbox.id);
  const items = await request(ctx.app).get(`/v1/folders/${inbox.id}/items/sync`).set(inShared('alice'));
  expect(items.status).toBe(200);
  expect(items.body.created.map((i: { id: string }) => i.id)).toEqual([itemId]);
  expect(items.body.window).toMatchObject({ size: 500, max: 1000 });
  // The shared folder is not Alice's own: without X-Mailbox it does not exist; a shared token in her own mailbox is invalid.
  expect((await request(ctx.app).get(`/v1/folders/${inbox.id}/items/sync`).set(heads.alice!)).status).toBe(404);
  const own = await request(ctx.app).get(`/v1/folders/${ownInbox.id}/items/sync`).query({ token: items.body.token }).set(heads.alice!);
  expect(own.status).toBe(400);
  // The token keeps working in the shared mailbox; a change there shows up as a change.
  await request(ctx.app).patch(`/v1/items/${itemId}`).set(inShared('bob')).send({ isRead: true }).expect(200);
  const next = await request(ctx.app).get(`/v1/folders/${inbox.id}/items/sync`).query({ token: items.body.token }).set(inShared('alice'));
  expect(next.status).toBe(200);
  expect(next.body.updated).toEqual([expect.objectContaining({ id: itemId, isRead: true })]);
  // Read and search in the shared mailbox.
  expect((await request(ctx.app).get(`/v1/items/${itemId}`).set(inShared('alice'))).status).toBe(200);
  expect((await request(ctx.app).get(`/v1/items/${itemId}`).set(heads.alice!)).status).toBe(404);
});

test('a non-member, an unknown mailbox and a plain user\'s address are answered alike: 404 mailboxNotFound', async () => {
  const answers = [];
  for (const named of [shared.email, shared.id, 'nobody@shared.test', 'bob@shared.test', ids.bob!]) {
    const res = await request(ctx.app).get('/v1/folders/sync').set({ ...heads.mallory!, 'X-Mailbox': named });
    answers.push([res.status, res.body.code, res.body.detail]);
  }
  expect(new Set(answers.map((a) => JSON.stringify(a))).size).toBe(1);
  expect(answers[0]).toEqual([404, 'mailboxNotFound', expect.any(String)]);
  // Writes too: nothing happens.
  const before = (await ctx.store.folders.listByUser(shared.id)).length;
  const res = await request(ctx.app).post('/v1/folders').set({ ...heads.mallory!, 'X-Mailbox': shared.email }).send({ displayName: 'Mallory was here' });
  expect(res.status).toBe(404);
  expect((await ctx.store.folders.listByUser(shared.id)).length).toBe(before);
});

test('membership changes take effect on the next call', async () => {
  expect((await request(ctx.app).get('/v1/folders/sync').set({ ...heads.mallory!, 'X-Mailbox': shared.email })).status).toBe(404);
  await request(ctx.app).put(`/admin/v1/shared-mailboxes/${shared.id}/members/${ids.mallory}`).set(admin()).send({ fullAccess: true }).expect(200);
  expect((await request(ctx.app).get('/v1/folders/sync').set({ ...heads.mallory!, 'X-Mailbox': shared.email })).status).toBe(200);
  await request(ctx.app).delete(`/admin/v1/shared-mailboxes/${shared.id}/members/${ids.mallory}`).set(admin()).expect(200);
  expect((await request(ctx.app).get('/v1/folders/sync').set({ ...heads.mallory!, 'X-Mailbox': shared.email })).status).toBe(404);
});

test('send-as: From is the shared mailbox; send-on-behalf: Sender is the member; the copy is in the shared Sent Items', async () => {
  const asAlice = await request(ctx.app)
    .post('/v1/messages/send')
    .set(inShared('alice'))
    .send({ to: [{ address: 'mallory@shared.test' }], subject: 'Your order', body: { contentType: 'text', content: 'It ships today.' } });
  expect(asAlice.status).toBe(202);
  const asBob = await request(ctx.app)
    .post('/v1/messages/send')
    .set(inShared('bob'))
    .send({ to: [{ address: 'mallory@shared.test' }], subject: 'Your refund', body: { contentType: 'text', content: 'Refunded.' } });
  expect(asBob.status).toBe(202);
  const headersOf = async (internetMessageId: string) => {
    const inbox = (await ctx.store.folders.byKind(ids.mallory!, 'inbox'))!;
    const sync = await request(ctx.app).get(`/v1/folders/${inbox.id}/items/sync`).set(heads.mallory!);
    const got = sync.body.created.find((i: { internetMessageId: string }) => i.internetMessageId === internetMessageId);
    const mime = await request(ctx.app).get(`/v1/items/${got.id}/mime`).set(heads.mallory!).buffer(true).parse((res, cb) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => cb(null, Buffer.concat(chunks)));
    });
    return simpleParser(mime.body as Buffer);
  };
  const a = await headersOf(asAlice.body.internetMessageId);
  expect(a.from?.value[0]?.address).toBe('support@shared.test');
  expect(a.headers.get('sender')).toBeUndefined();
  const b = await headersOf(asBob.body.internetMessageId);
  expect(b.from?.value[0]?.address).toBe('support@shared.test');
  expect((b.headers.get('sender') as { value: Array<{ address: string }> }).value[0]!.address).toBe('bob@shared.test');
  const sent = (await ctx.store.folders.byKind(shared.id, 'sentItems'))!;
  expect(sent.totalCount).toBe(2);
  expect((await ctx.store.folders.byKind(ids.alice!, 'sentItems'))!.totalCount).toBe(0);
});

test('a member with full access only cannot send from it (403), and nothing is sent', async () => {
  await request(ctx.app).put(`/admin/v1/shared-mailboxes/${shared.id}/members/${ids.mallory}`).set(admin()).send({ fullAccess: true }).expect(200);
  const res = await request(ctx.app)
    .post('/v1/messages/send')
    .set({ ...heads.mallory!, 'X-Mailbox': shared.email })
    .send({ to: [{ address: 'alice@shared.test' }], subject: 'Not allowed', body: { contentType: 'text', content: 'x' } });
  expect(res.status).toBe(403);
  expect((await ctx.store.folders.byKind(shared.id, 'sentItems'))!.totalCount).toBe(2);
  await request(ctx.app).delete(`/admin/v1/shared-mailboxes/${shared.id}/members/${ids.mallory}`).set(admin()).expect(200);
});

test('nobody signs in as the shared mailbox; X-Mailbox is refused where it means nothing; bad values are 400', async () => {
  const user = (await ctx.store.users.byId(shared.id))!;
  expect(user.passwordHash).toBeNull();
  expect((await passwordGrant(ctx, user.username, 'anything-at-all-1')).status).toBe(400);
  expect((await passwordGrant(ctx, 'support@shared.test', 'anything-at-all-1')).status).toBe(400);
  const devices = await request(ctx.app).get('/v1/devices').set(inShared('alice'));
  expect(devices.status).toBe(400);
  expect(devices.body.code).toBe('invalidRequest');
  expect((await request(ctx.app).get('/v1/folders/sync').set({ ...heads.alice!, 'X-Mailbox': ' ' })).status).toBe(400);
});

test('admin: other tenants\' shared mailboxes are not found; a member must be of the tenant; bad bodies are 400', async () => {
  const other = await ctx.store.tenants.create('Other', ctx.clock.now());
  const stranger = await ctx.store.users.create({ tenantId: other.id, username: 'stranger', email: 'stranger@other.test', displayName: 'S', role: 'user', passwordHash: null }, ctx.clock.now());
  expect((await request(ctx.app).put(`/admin/v1/shared-mailboxes/${shared.id}/members/${stranger.id}`).set(admin()).send({ fullAccess: true })).status).toBe(404);
  expect((await request(ctx.app).put(`/admin/v1/shared-mailboxes/${shared.id}/members/${ids.alice}`).set(admin()).send({ fullAccess: false, sendAs: true })).status).toBe(400);
  expect((await request(ctx.app).post('/admin/v1/shared-mailboxes').set(admin()).send({ email: 'support@shared.test', displayName: 'Again' })).status).toBe(400);
  expect((await request(ctx.app).post('/admin/v1/shared-mailboxes').set(admin()).send({ email: 'not an address', displayName: 'X' })).status).toBe(400);
  expect((await request(ctx.app).get('/admin/v1/shared-mailboxes/nope').set(admin())).status).toBe(404);
  expect((await request(ctx.app).get('/admin/v1/shared-mailboxes').set(heads.alice!)).status).toBe(403);
  const list = await request(ctx.app).get('/admin/v1/shared-mailboxes').set(admin());
  expect(list.body.sharedMailboxes.map((s: { email: string }) => s.email)).toEqual(['support@shared.test']);
});
