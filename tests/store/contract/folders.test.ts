/**
 * The store contract, mailboxes and folders: the well-known folders, the modseq every hierarchy change takes, the
 * hierarchy-sync reads (changedSince, deletedSince, hierarchyState, hierarchyPoll) and the change-log purge.
 */
import { WELL_KNOWN_FOLDERS } from '../../../server/store/types';
import { openTestStore, STORE_BACKENDS } from '../../helpers/storeBackends';
import { HOUR, LOWEST, NOW, eachBackend, email, expectRefusal, folderRecord, highestModseq, newMailbox, newUser, recordCommits } from './fixtures';

eachBackend('mailboxes', (t) => {
  test('create makes the mailbox and its well-known folders, one modseq each, in order', async () => {
    const { store } = t();
    const user = await newUser(store);
    const mailbox = await store.mailboxes.create(user.id, NOW);
    expect(mailbox).toEqual({ userId: user.id, highestModseq: WELL_KNOWN_FOLDERS.length, purgedModseq: 0, epoch: expect.any(String) });
    expect(mailbox.epoch).not.toBe('');
    expect(await store.mailboxes.get(user.id)).toEqual(mailbox);
    const folders = await store.folders.listByUser(user.id);
    expect(folders.map((f) => ({ kind: f.kind, displayName: f.displayName }))).toEqual(WELL_KNOWN_FOLDERS.map((w) => ({ kind: w.kind, displayName: w.displayName })));
    expect(folders.map((f) => f.createdModseq)).toEqual(WELL_KNOWN_FOLDERS.map((_, i) => i + 1));
    for (const f of folders) {
      expect(f).toMatchObject({ userId: user.id, parentId: null, totalCount: 0, unreadCount: 0, modseq: f.createdModseq, contentModseq: 0, createdAt: NOW });
    }
    expect(new Set(folders.map((f) => f.id)).size).toBe(folders.length);
  });

  test('a second mailbox for the same user is refused and changes nothing', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const before = await store.mailboxes.get(user.id);
    await expectRefusal(store.mailboxes.create(user.id, NOW + 1));
    expect(await store.mailboxes.get(user.id)).toEqual(before);
    expect(await store.folders.listByUser(user.id)).toHaveLength(WELL_KNOWN_FOLDERS.length);
  });

  test('get is undefined for a user without a mailbox', async () => {
    const { store } = t();
    const user = await newUser(store);
    expect(await store.mailboxes.get(user.id)).toBeUndefined();
    expect(await store.folders.listByUser(user.id)).toEqual([]);
  });

  test('resetEpoch gives the mailbox a new epoch and changes nothing else', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const before = (await store.mailboxes.get(user.id))!;
    const hierarchy = await store.folders.hierarchyState(user.id);
    const after = await store.mailboxes.resetEpoch(user.id);
    expect(after).toEqual({ ...before, epoch: expect.any(String) });
    expect(after.epoch).not.toBe(before.epoch);
    expect(await store.mailboxes.get(user.id)).toEqual(after);
    expect(await store.folders.hierarchyState(user.id)).toBe(hierarchy);
  });
});

describe.each(STORE_BACKENDS)('%s store: mailboxes.purgeHistory', (backend) => {
  // A store of its own: the purge is over every mailbox of the store.
  test('deletes the change log before a time, raises purgedModseq to the newest purged modseq, and answers how many', async () => {
    const t = await openTestStore(backend, { name: 'purge' });
    try {
      const { store } = t;
      const a = await newMailbox(store, {}, NOW);
      const b = await newMailbox(store, {}, NOW);
      const old = NOW + HOUR;
      const kept = await store.items.create(email(a.user.id, a.inbox.id, { receivedAt: NOW + 1 }), old);
      const gone = await store.items.create(email(a.user.id, a.inbox.id, { receivedAt: NOW + 2 }), old);
      await store.items.delete(a.user.id, gone.id, old);
      const purgedAt = await highestModseq(store, a.user.id);
      const late = await store.items.create(email(a.user.id, a.inbox.id, { receivedAt: NOW + 3 }), NOW + 3 * HOUR);
      await store.items.delete(a.user.id, late.id, NOW + 3 * HOUR);
      const c = await newMailbox(store, {}, NOW + 3 * HOUR);

      // Before NOW + 2h: both mailboxes' folder creations and a's three older item changes.
      expect(await store.mailboxes.purgeHistory(NOW + 2 * HOUR)).toBe(2 * WELL_KNOWN_FOLDERS.length + 3);
      expect(await store.mailboxes.get(a.user.id)).toMatchObject({ purgedModseq: purgedAt, highestModseq: purgedAt + 2 });
      expect(await store.mailboxes.get(b.user.id)).toMatchObject({ purgedModseq: WELL_KNOWN_FOLDERS.length });
      expect(await store.mailboxes.get(c.user.id)).toMatchObject({ purgedModseq: 0 });
      // The purged tombstone is gone from sync; the later one and the live item are still there.
      const changes = await store.sync.changes(a.user.id, a.inbox.id, 0, LOWEST, 100);
      expect(changes.map((x) => [x.objectId, x.kind])).toEqual([
        [kept.id, 'item'],
        [late.id, 'deleted'],
      ]);
      expect(await store.mailboxes.purgeHistory(NOW + 2 * HOUR)).toBe(0);
      expect(await store.mailboxes.get(a.user.id)).toMatchObject({ purgedModseq: purgedAt });
    } finally {
      await t.close();
    }
  });
});

eachBackend('folders', (t) => {
  test('create answers a mail folder stamped with the mailbox\'s next modseq; byId reads it', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const before = await highestModseq(store, user.id);
    const folder = await store.folders.create(user.id, { displayName: 'Projects', parentId: null }, NOW + 5);
    expect(folderRecord(folder)).toEqual({
      id: expect.any(String),
      userId: user.id,
      parentId: null,
      displayName: 'Projects',
      kind: 'mail',
      totalCount: 0,
      unreadCount: 0,
      modseq: before + 1,
      createdModseq: before + 1,
      contentModseq: 0,
      createdAt: NOW + 5,
    });
    expect(await highestModseq(store, user.id)).toBe(before + 1);
    expect(folderRecord(await store.folders.byId(user.id, folder.id))).toEqual(folderRecord(folder));
    const child = await store.folders.create(user.id, { displayName: 'Q3', parentId: folder.id }, NOW + 6);
    expect(child).toMatchObject({ parentId: folder.id, createdModseq: before + 2 });
    expect((await store.folders.listByUser(user.id)).slice(-2).map((f) => f.id)).toEqual([folder.id, child.id]);
  });

  test('byId answers only the owner\'s folder; any mailbox state it carries is the mailbox\'s own', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const other = await newMailbox(store);
    expect(await store.folders.byId(other.user.id, inbox.id)).toBeUndefined();
    expect(await store.folders.byId(user.id, 'no-such-folder')).toBeUndefined();
    const read = await store.folders.byId(user.id, inbox.id);
    expect(folderRecord(read)).toEqual(folderRecord(inbox));
    if (read?.mailboxState) {
      expect(read.mailboxState).toEqual({ mailbox: await store.mailboxes.get(user.id), hierarchyState: await store.folders.hierarchyState(user.id) });
    }
  });

  test('byKind answers the well-known folder of a kind, and the first-made folder for `mail`', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    for (const w of WELL_KNOWN_FOLDERS) expect(await store.folders.byKind(user.id, w.kind)).toMatchObject({ kind: w.kind, displayName: w.displayName });
    expect(await store.folders.byKind(user.id, 'mail')).toBeUndefined();
    const first = await store.folders.create(user.id, { displayName: 'B', parentId: null }, NOW);
    await store.folders.create(user.id, { displayName: 'A', parentId: null }, NOW);
    expect(folderRecord(await store.folders.byKind(user.id, 'mail'))).toEqual(folderRecord(first));
  });

  test('update renames and moves with a new modseq, keeping what it is not given', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const parent = await store.folders.create(user.id, { displayName: 'Parent', parentId: null }, NOW);
    const folder = await store.folders.create(user.id, { displayName: 'Old', parentId: null }, NOW);
    const renamed = await store.folders.update(user.id, folder.id, { displayName: 'New' }, NOW + 1);
    expect(folderRecord(renamed)).toEqual({ ...folderRecord(folder), displayName: 'New', modseq: await highestModseq(store, user.id) });
    const moved = await store.folders.update(user.id, folder.id, { parentId: parent.id }, NOW + 2);
    expect(folderRecord(moved)).toEqual({ ...folderRecord(renamed), parentId: parent.id, modseq: renamed.modseq + 1 });
    const both = await store.folders.update(user.id, folder.id, { displayName: 'Top', parentId: null }, NOW + 3);
    expect(folderRecord(both)).toEqual({ ...folderRecord(moved), displayName: 'Top', parentId: null, modseq: moved.modseq + 1 });
    expect(folderRecord(await store.folders.byId(user.id, folder.id))).toEqual(folderRecord(both));
  });

  test('delete removes the folder, its subfolders and their items, deepest first, each with its tombstone', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const top = await store.folders.create(user.id, { displayName: 'Top', parentId: null }, NOW);
    const sub = await store.folders.create(user.id, { displayName: 'Sub', parentId: top.id }, NOW);
    const items = [
      await store.items.create(email(user.id, top.id), NOW),
      await store.items.create(email(user.id, sub.id), NOW),
      await store.items.create(email(user.id, sub.id), NOW),
    ];
    const kept = await store.items.create(email(user.id, inbox.id), NOW);
    const before = await highestModseq(store, user.id);
    expect(await store.folders.delete(user.id, top.id, NOW + 1)).toEqual({ folders: 2, items: 3 });
    expect(await store.folders.byId(user.id, top.id)).toBeUndefined();
    expect(await store.folders.byId(user.id, sub.id)).toBeUndefined();
    expect((await store.folders.listByUser(user.id)).map((f) => f.id)).not.toEqual(expect.arrayContaining([top.id]));
    for (const item of items) expect(await store.items.byId(user.id, item.id)).toBeUndefined();
    expect(await store.items.byId(user.id, kept.id)).toEqual(kept);
    // One modseq per item and per folder.
    expect(await highestModseq(store, user.id)).toBe(before + 5);
    const tombstones = await store.folders.deletedSince(user.id, before, 10);
    expect(tombstones.map((x) => x.id)).toEqual([sub.id, top.id]);
    expect(tombstones[1]!.modseq).toBe(before + 5);
    expect(tombstones[0]!.modseq).toBeLessThan(tombstones[1]!.modseq);
  });

  test('changedSince answers folders changed after a (modseq, id) cursor, in that order, a page at a time', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const everything = await store.folders.changedSince(user.id, { modseq: 0, id: '' }, 1000);
    const start = { modseq: everything[everything.length - 1]!.modseq, id: everything[everything.length - 1]!.id };
    const a = await store.folders.create(user.id, { displayName: 'A', parentId: null }, NOW);
    const b = await store.folders.create(user.id, { displayName: 'B', parentId: null }, NOW);
    const a2 = await store.folders.update(user.id, a.id, { displayName: 'A2' }, NOW);
    expect((await store.folders.changedSince(user.id, start, 10)).map(folderRecord)).toEqual([folderRecord(b), folderRecord(a2)]);
    expect((await store.folders.changedSince(user.id, start, 1)).map((f) => f.id)).toEqual([b.id]);
    expect((await store.folders.changedSince(user.id, { modseq: b.modseq, id: b.id }, 10)).map((f) => f.id)).toEqual([a.id]);
    expect(await store.folders.changedSince(user.id, { modseq: a2.modseq, id: a2.id }, 10)).toEqual([]);
    // All of them from the beginning: the well-known folders first.
    expect(await store.folders.changedSince(user.id, { modseq: 0, id: '' }, 100)).toHaveLength(WELL_KNOWN_FOLDERS.length + 2);
  });

  test('deletedSince answers folder tombstones after a modseq, in order, a page at a time', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const start = await highestModseq(store, user.id);
    const x = await store.folders.create(user.id, { displayName: 'X', parentId: null }, NOW);
    const y = await store.folders.create(user.id, { displayName: 'Y', parentId: null }, NOW);
    await store.folders.delete(user.id, y.id, NOW);
    await store.folders.delete(user.id, x.id, NOW);
    const all = await store.folders.deletedSince(user.id, start, 10);
    expect(all).toEqual([
      { modseq: start + 3, id: y.id },
      { modseq: start + 4, id: x.id },
    ]);
    expect(await store.folders.deletedSince(user.id, start, 1)).toEqual(all.slice(0, 1));
    expect(await store.folders.deletedSince(user.id, start + 3, 10)).toEqual(all.slice(1));
  });

  test('hierarchyState moves with every hierarchy change (counts included), and not with other changes', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const states = [await store.folders.hierarchyState(user.id)];
    const moved = async () => {
      const s = await store.folders.hierarchyState(user.id);
      const isNew = !states.includes(s);
      states.push(s);
      return isNew;
    };
    const folder = await store.folders.create(user.id, { displayName: 'F', parentId: null }, NOW);
    expect(await moved()).toBe(true);
    await store.folders.update(user.id, folder.id, { displayName: 'G' }, NOW);
    expect(await moved()).toBe(true);
    const item = await store.items.create(email(user.id, inbox.id), NOW); // inbox counts change
    expect(await moved()).toBe(true);
    await store.items.update(user.id, item.id, { isFlagged: true }, NOW); // counts unchanged
    expect(await moved()).toBe(false);
    await store.mailboxes.resetEpoch(user.id);
    expect(await moved()).toBe(false);
    await store.items.update(user.id, item.id, { isRead: true }, NOW); // unread count changes
    expect(await moved()).toBe(true);
    await store.folders.delete(user.id, folder.id, NOW);
    expect(await moved()).toBe(true);
    await store.folders.create(user.id, { displayName: 'F', parentId: null }, NOW); // same count as before the delete
    expect(await moved()).toBe(true);
  });

  test('hierarchyPoll answers the mailbox and whether any folder changed or went after the cursor', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    expect(await store.folders.hierarchyPoll((await newUser(store)).id, { modseq: 0, id: '' })).toBeUndefined();
    const cursor = async () => {
      const all = await store.folders.changedSince(user.id, { modseq: 0, id: '' }, 1000);
      const last = all[all.length - 1]!;
      return { modseq: last.modseq, id: last.id };
    };
    let at = await cursor();
    expect(await store.folders.hierarchyPoll(user.id, at)).toEqual({ mailbox: await store.mailboxes.get(user.id), changed: false });
    expect(await store.folders.hierarchyPoll(user.id, { modseq: at.modseq - 1, id: '' })).toMatchObject({ changed: true });
    const folder = await store.folders.create(user.id, { displayName: 'F', parentId: null }, NOW);
    expect(await store.folders.hierarchyPoll(user.id, at)).toMatchObject({ changed: true });
    at = await cursor();
    expect(await store.folders.hierarchyPoll(user.id, at)).toMatchObject({ changed: false });
    await store.folders.delete(user.id, folder.id, NOW); // only a tombstone is newer than the cursor now
    expect(await store.folders.hierarchyPoll(user.id, at)).toEqual({ mailbox: await store.mailboxes.get(user.id), changed: true });
  });

  test('a folder write for a user without a mailbox is refused', async () => {
    const { store } = t();
    const user = await newUser(store);
    const commits = recordCommits(store);
    try {
      await expectRefusal(store.folders.create(user.id, { displayName: 'X', parentId: null }, NOW));
      expect(await store.folders.listByUser(user.id)).toEqual([]);
      expect(commits.changes).toEqual([]);
    } finally {
      commits.stop();
    }
  });
});
