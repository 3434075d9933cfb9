/**
 * Conversations over HTTP (Organize by Thread): POST /v1/conversations/{id}/actions — every action, its scope with
 * and without folderId (mailbox-wide leaves Deleted Items alone), all-or-nothing, 404s (unknown, another user's,
 * unknown folders), validation and idempotent replays — and GET /v1/folders/{id}/conversations/sync at its edges.
 */
import request from 'supertest';
import { buildTestApp, signIn, type TestContext } from '../helpers/testApp';
import type { Folder, Item, NewItem, User } from '../../server/store/types';
import { MAX_ACTION_MESSAGES } from '../../server/conversations/service';

let ctx: TestContext;
const PW = 'password-for-tests';
let alice: User;
let bob: User;
let aliceDevice: Record<string, string>;
let bobDevice: Record<string, string>;
let seq = 0;

beforeAll(async () => {
  ctx = await buildTestApp();
  await ctx.users.addUser({ username: 'alice', password: PW, role: 'user' });
  await ctx.users.addUser({ username: 'bob', password: PW, role: 'user' });
  alice = (await ctx.store.users.byUsername('alice'))!;
  bob = (await ctx.store.users.byUsername('bob'))!;
  aliceDevice = await device('alice', 'conv-device-alice-0001');
  bobDevice = await device('bob', 'conv-device-bob-000001');
});
afterAll(() => ctx.close());

async function device(username: string, deviceId: string) {
  const t = await signIn(ctx, username, PW, { device_id: deviceId });
  const h = { Authorization: `Bearer ${t.access_token}`, 'X-Device-Id': deviceId };
  const reg = await request(ctx.app).post('/v1/devices').set(h).send({});
  expect([200, 201]).toContain(reg.status);
  return h;
}

const folder = async (user: User, kind: Folder['kind']) => (await ctx.store.folders.byKind(user.id, kind))!;

function message(user: User, folderId: string, conversationId: string, extra: Partial<NewItem> = {}): NewItem {
  seq++;
  return {
    userId: user.id,
    folderId,
    type: 'email',
    receivedAt: ctx.clock.now() + seq * 1000,
    subject: `Re: thread ${conversationId}`,
    from: { name: 'Sender', address: 'sender@example.test' },
    preview: `message ${seq}`,
    conversationId,
    ...extra,
  };
}

/** A conversation of `user` with a message in each of `kinds` (a kind twice: two there). */
async function conversation(user: User, kinds: Folder['kind'][], extra: Partial<NewItem> = {}) {
  const id = `conv-${++seq}-${user.username}`;
  const items: Item[] = [];
  for (const kind of kinds) items.push(await ctx.store.items.create(message(user, (await folder(user, kind)).id, id, extra), ctx.clock.now()));
  return { id, items };
}

const actions = (conversationId: string) => `/v1/conversations/${encodeURIComponent(conversationId)}/actions`;
const act = (conversationId: string, body: object, h = aliceDevice) => request(ctx.app).post(actions(conversationId)).set(h).send(body);
const reread = async (user: User, items: Item[]) => Promise.all(items.map(async (i) => ctx.store.items.byId(user.id, i.id)));
const sortIds = (ids: string[]) => [...ids].sort();

describe('scope', () => {
  test('without folderId: every message of the conversation except those in Deleted Items', async () => {
    const c = await conversation(alice, ['inbox', 'inbox', 'sentItems', 'deletedItems']);
    const res = await act(c.id, { action: 'markRead' });
    expect(res.status).toBe(200);
    expect(res.body.conversationId).toBe(c.id);
    expect(sortIds(res.body.affected)).toEqual(sortIds(c.items.slice(0, 3).map((i) => i.id)));
    expect((await reread(alice, c.items)).map((i) => i!.isRead)).toEqual([true, true, true, false]);
  });

  test('with folderId: only the conversation\'s messages in that folder', async () => {
    const c = await conversation(alice, ['inbox', 'inbox', 'sentItems', 'deletedItems']);
    const res = await act(c.id, { action: 'flag', folderId: (await folder(alice, 'inbox')).id });
    expect(res.status).toBe(200);
    expect(sortIds(res.body.affected)).toEqual(sortIds(c.items.slice(0, 2).map((i) => i.id)));
    expect((await reread(alice, c.items)).map((i) => i!.isFlagged)).toEqual([true, true, false, false]);
    // Deleted Items may be named as the scope: then only its messages.
    const trash = await act(c.id, { action: 'flag', folderId: (await folder(alice, 'deletedItems')).id });
    expect(trash.body.affected).toEqual([c.items[3]!.id]);
  });

  test('a conversation whose messages are all in Deleted Items: mailbox-wide there is nothing to do', async () => {
    const c = await conversation(alice, ['deletedItems']);
    const res = await act(c.id, { action: 'markRead' });
    expect(res.status).toBe(200);
    expect(res.body.affected).toEqual([]);
    expect((await reread(alice, c.items))[0]!.isRead).toBe(false);
  });

  test('a message without a conversation id is the conversation named by its item id', async () => {
    const inbox = await folder(alice, 'inbox');
    const lone = await ctx.store.items.create({ ...message(alice, inbox.id, 'x'), conversationId: null }, ctx.clock.now());
    const res = await act(lone.id, { action: 'flag' });
    expect(res.status).toBe(200);
    expect(res.body.affected).toEqual([lone.id]);
    expect((await ctx.store.items.byId(alice.id, lone.id))!.isFlagged).toBe(true);
  });
});

describe('actions', () => {
  test('markRead and markUnread change only what needs changing; a repeat affects nothing', async () => {
    const c = await conversation(alice, ['inbox', 'inbox']);
    await ctx.store.items.update(alice.id, c.items[0]!.id, { isRead: true }, ctx.clock.now());
    const read = await act(c.id, { action: 'markRead' });
    expect(read.body.affected).toEqual([c.items[1]!.id]);
    expect((await act(c.id, { action: 'markRead' })).body.affected).toEqual([]);
    const unread = await act(c.id, { action: 'markUnread' });
    expect(sortIds(unread.body.affected)).toEqual(sortIds(c.items.map((i) => i.id)));
    expect((await reread(alice, c.items)).map((i) => i!.isRead)).toEqual([false, false]);
  });

  test('flag and unflag', async () => {
    const c = await conversation(alice, ['inbox', 'archive']);
    expect(sortIds((await act(c.id, { action: 'flag' })).body.affected)).toEqual(sortIds(c.items.map((i) => i.id)));
    expect((await reread(alice, c.items)).map((i) => i!.isFlagged)).toEqual([true, true]);
    expect(sortIds((await act(c.id, { action: 'unflag' })).body.affected)).toEqual(sortIds(c.items.map((i) => i.id)));
    expect((await reread(alice, c.items)).map((i) => i!.isFlagged)).toEqual([false, false]);
  });

  test('move: the messages in scope go to the destination; those already there and in Deleted Items stay', async () => {
    const c = await conversation(alice, ['inbox', 'sentItems', 'archive', 'deletedItems']);
    const archive = await folder(alice, 'archive');
    const res = await act(c.id, { action: 'move', destinationFolderId: archive.id });
    expect(res.status).toBe(200);
    expect(sortIds(res.body.affected)).toEqual(sortIds([c.items[0]!.id, c.items[1]!.id]));
    const after = await reread(alice, c.items);
    expect(after.map((i) => i!.folderId)).toEqual([archive.id, archive.id, archive.id, (await folder(alice, 'deletedItems')).id]);
  });

  test('move with folderId moves only that folder\'s messages', async () => {
    const c = await conversation(alice, ['inbox', 'sentItems']);
    const projects = await ctx.store.folders.create(alice.id, { displayName: `Projects ${++seq}`, parentId: null }, ctx.clock.now());
    const res = await act(c.id, { action: 'move', folderId: (await folder(alice, 'inbox')).id, destinationFolderId: projects.id });
    expect(res.body.affected).toEqual([c.items[0]!.id]);
    expect((await reread(alice, c.items)).map((i) => i!.folderId)).toEqual([projects.id, (await folder(alice, 'sentItems')).id]);
  });

  test('move needs a destination of the user\'s, a mail folder; other actions take none', async () => {
    const c = await conversation(alice, ['inbox']);
    expect((await act(c.id, { action: 'move' })).body).toMatchObject({ code: 'invalidRequest' });
    expect((await act(c.id, { action: 'markRead', destinationFolderId: (await folder(alice, 'archive')).id })).body).toMatchObject({ code: 'invalidRequest' });
    expect((await act(c.id, { action: 'move', destinationFolderId: 'no-such-folder' })).body).toMatchObject({ code: 'folderNotFound' });
    expect((await act(c.id, { action: 'move', destinationFolderId: (await folder(bob, 'archive')).id })).body).toMatchObject({ code: 'folderNotFound' });
    const calendar = await act(c.id, { action: 'move', destinationFolderId: (await folder(alice, 'calendar')).id });
    expect(calendar.status).toBe(400);
    expect((await reread(alice, c.items))[0]!.folderId).toBe((await folder(alice, 'inbox')).id);
  });

  test('delete: to Deleted Items mailbox-wide; scoped to Deleted Items, for good', async () => {
    const c = await conversation(alice, ['inbox', 'sentItems', 'deletedItems']);
    const trash = await folder(alice, 'deletedItems');
    const res = await act(c.id, { action: 'delete' });
    expect(sortIds(res.body.affected)).toEqual(sortIds([c.items[0]!.id, c.items[1]!.id]));
    expect((await reread(alice, c.items)).map((i) => i!.folderId)).toEqual([trash.id, trash.id, trash.id]);
    // Again mailbox-wide: everything is in Deleted Items now, nothing to do (a retried delete is harmless).
    expect((await act(c.id, { action: 'delete' })).body.affected).toEqual([]);
    const purge = await act(c.id, { action: 'delete', folderId: trash.id });
    expect(sortIds(purge.body.affected)).toEqual(sortIds(c.items.map((i) => i.id)));
    expect(await reread(alice, c.items)).toEqual([undefined, undefined, undefined]);
    // Now it is gone from the mailbox: unknown.
    expect((await act(c.id, { action: 'delete' })).body).toMatchObject({ code: 'conversationNotFound' });
  });

  test('ignore deletes the conversation and records the ignore; unignore lifts it and moves nothing back', async () => {
    const c = await conversation(alice, ['inbox', 'inbox']);
    const trash = await folder(alice, 'deletedItems');
    const res = await act(c.id, { action: 'ignore' });
    expect(res.status).toBe(200);
    expect(sortIds(res.body.affected)).toEqual(sortIds(c.items.map((i) => i.id)));
    expect(await ctx.store.conversations.isIgnored(alice.id, c.id)).toBe(true);
    expect((await reread(alice, c.items)).map((i) => i!.folderId)).toEqual([trash.id, trash.id]);
    // Ignored and everything in Deleted Items: unignore still knows it.
    const un = await act(c.id, { action: 'unignore' });
    expect(un.status).toBe(200);
    expect(un.body).toEqual({ conversationId: c.id, affected: [] });
    expect(await ctx.store.conversations.isIgnored(alice.id, c.id)).toBe(false);
    expect((await reread(alice, c.items)).map((i) => i!.folderId)).toEqual([trash.id, trash.id]);
    expect((await act(c.id, { action: 'unignore', folderId: trash.id })).status).toBe(400);
  });

  test('an action is all or nothing, and refuses more than the limit of messages whole', async () => {
    const inbox = await folder(alice, 'inbox');
    const id = `conv-huge-${++seq}`;
    const now = ctx.clock.now();
    const many = Array.from({ length: MAX_ACTION_MESSAGES + 1 }, () => message(alice, inbox.id, id));
    await ctx.store.run(function* (tx) {
      for (const m of many) yield* tx.items.create(m, now);
    });
    const before = (await ctx.store.mailboxes.get(alice.id))!.highestModseq;
    const res = await act(id, { action: 'markRead' });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ code: 'invalidRequest' });
    expect(res.body.detail).toContain(String(MAX_ACTION_MESSAGES));
    expect((await ctx.store.mailboxes.get(alice.id))!.highestModseq).toBe(before);
    // One fewer in scope (the surplus in Deleted Items) is served, in one transaction.
    const [newest] = await ctx.store.conversations.itemIds(alice.id, id, 1);
    await ctx.store.items.move(alice.id, newest!, (await folder(alice, 'deletedItems')).id, ctx.clock.now());
    const ok = await act(id, { action: 'markRead' });
    expect(ok.status).toBe(200);
    expect(ok.body.affected).toHaveLength(MAX_ACTION_MESSAGES);
  });
});

describe('not found', () => {
  test('an unknown conversation is 404 conversationNotFound, and so is another user\'s', async () => {
    expect((await act('no-such-conversation', { action: 'markRead' })).status).toBe(404);
    expect((await act('no-such-conversation', { action: 'unignore' })).body).toMatchObject({ code: 'conversationNotFound' });
    const theirs = await conversation(bob, ['inbox']);
    for (const body of [{ action: 'markRead' }, { action: 'delete' }, { action: 'ignore' }, { action: 'unignore' }, { action: 'flag', folderId: (await folder(alice, 'inbox')).id }]) {
      const res = await act(theirs.id, body);
      expect([res.status, res.body.code]).toEqual([404, 'conversationNotFound']);
    }
    expect((await reread(bob, theirs.items))[0]).toMatchObject({ isRead: false, isFlagged: false, folderId: (await folder(bob, 'inbox')).id });
    expect(await ctx.store.conversations.isIgnored(alice.id, theirs.id)).toBe(false);
    // An id far too long to be one names nothing either.
    expect((await act('x'.repeat(5000), { action: 'markRead' })).body).toMatchObject({ code: 'conversationNotFound' });
  });

  test('a conversation with no message in the named folder is 404; an unknown or foreign folder is folderNotFound', async () => {
    const c = await conversation(alice, ['inbox']);
    expect((await act(c.id, { action: 'markRead', folderId: (await folder(alice, 'archive')).id })).body).toMatchObject({ code: 'conversationNotFound' });
    expect((await act(c.id, { action: 'markRead', folderId: 'no-such-folder' })).body).toMatchObject({ code: 'folderNotFound' });
    expect((await act(c.id, { action: 'markRead', folderId: (await folder(bob, 'inbox')).id })).body).toMatchObject({ code: 'folderNotFound' });
  });

  test('an event\'s item id names no conversation', async () => {
    const calendar = await folder(alice, 'calendar');
    const event = await ctx.store.items.create({ userId: alice.id, folderId: calendar.id, type: 'event', receivedAt: ctx.clock.now(), subject: 'Meeting' }, ctx.clock.now());
    expect((await act(event.id, { action: 'delete' })).body).toMatchObject({ code: 'conversationNotFound' });
    expect(await ctx.store.items.byId(alice.id, event.id)).toBeDefined();
  });
});

describe('requests', () => {
  test('the body is strict: unknown actions and members are 400', async () => {
    const c = await conversation(alice, ['inbox']);
    expect((await act(c.id, { action: 'archive' })).status).toBe(400);
    expect((await act(c.id, { action: 'markRead', extra: 1 })).status).toBe(400);
    expect((await act(c.id, {})).status).toBe(400);
    expect((await reread(alice, c.items))[0]!.isRead).toBe(false);
  });

  test('an Idempotency-Key replays the first answer and changes nothing more', async () => {
    const c = await conversation(alice, ['inbox', 'inbox']);
    const first = await act(c.id, { action: 'delete' }).set('Idempotency-Key', `conv-del-${seq}`);
    expect(first.status).toBe(200);
    const modseq = (await ctx.store.mailboxes.get(alice.id))!.highestModseq;
    const replay = await act(c.id, { action: 'delete' }).set('Idempotency-Key', `conv-del-${seq}`);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toEqual(first.body);
    expect((await ctx.store.mailboxes.get(alice.id))!.highestModseq).toBe(modseq);
    // Not deleted for good by the replay.
    expect((await reread(alice, c.items)).every((i) => i?.folderId !== undefined)).toBe(true);
  });
});

describe('conversation sync', () => {
  const sync = (folderId: string, query = '', h = aliceDevice) => request(ctx.app).get(`/v1/folders/${folderId}/conversations/sync${query}`).set(h);

  test('a folder\'s conversations, then a poll that answers its own token; a change shows as an upsert', async () => {
    const projects = await ctx.store.folders.create(alice.id, { displayName: `Sync ${++seq}`, parentId: null }, ctx.clock.now());
    const id = `conv-sync-${seq}`;
    const first = await ctx.store.items.create(message(alice, projects.id, id, { subject: 'Plans' }), ctx.clock.now());
    const second = await ctx.store.items.create(message(alice, projects.id, id, { subject: 'Re: Plans', from: { name: 'Cy', address: 'cy@example.test' } }), ctx.clock.now());
    const initial = await sync(projects.id);
    expect(initial.status).toBe(200);
    expect(initial.body).toMatchObject({ moreAvailable: false, window: { size: 500, max: 1000, conversationsInFolder: 1, hasOlder: false }, updated: [], removed: [] });
    expect(initial.body.created).toEqual([
      expect.objectContaining({ id, folderId: projects.id, subject: 'Re: Plans', latestItemId: second.id, messageCount: 2, unreadCount: 2, from: { name: 'Cy', address: 'cy@example.test' } }),
    ]);
    const token = initial.body.token as string;
    const poll = await sync(projects.id, `?token=${encodeURIComponent(token)}`);
    expect(poll.body).toMatchObject({ token, created: [], updated: [], removed: [], moreAvailable: false });

    await ctx.store.items.update(alice.id, first.id, { isRead: true }, ctx.clock.now());
    const changed = await sync(projects.id, `?token=${encodeURIComponent(token)}`);
    expect(changed.body.updated).toEqual([expect.objectContaining({ id, unreadCount: 1 })]);
    expect(changed.body.updated[0].changeKey).not.toBe(initial.body.created[0].changeKey);

    await act(id, { action: 'delete', folderId: projects.id });
    const gone = await sync(projects.id, `?token=${encodeURIComponent(changed.body.token)}`);
    expect(gone.body.removed).toEqual([{ id, reason: 'deleted' }]);
  });

  test('calendar and contacts folders have no conversations; another user\'s folder is not found', async () => {
    expect((await sync((await folder(alice, 'calendar')).id)).body).toMatchObject({ code: 'invalidRequest' });
    expect((await sync((await folder(alice, 'contacts')).id)).status).toBe(400);
    expect((await sync((await folder(bob, 'inbox')).id)).body).toMatchObject({ code: 'folderNotFound' });
  });

  test('a token of another folder, device or kind is 400 invalidToken', async () => {
    const inbox = await folder(alice, 'inbox');
    const archive = await folder(alice, 'archive');
    const token = (await sync(inbox.id)).body.token as string;
    expect((await sync(archive.id, `?token=${encodeURIComponent(token)}`)).body).toMatchObject({ code: 'invalidToken' });
    const itemToken = (await request(ctx.app).get(`/v1/folders/${inbox.id}/items/sync`).set(aliceDevice)).body.token as string;
    expect((await sync(inbox.id, `?token=${encodeURIComponent(itemToken)}`)).body).toMatchObject({ code: 'invalidToken' });
    expect((await sync((await folder(bob, 'inbox')).id, `?token=${encodeURIComponent(token)}`, bobDevice)).body).toMatchObject({ code: 'invalidToken' });
    expect((await sync(inbox.id, '?maxChanges=0')).status).toBe(400);
  });
});
