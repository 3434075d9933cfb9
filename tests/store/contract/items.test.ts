/**
 * The store contract, items and the sync reads: what an item keeps, the modseq and folder counters every change
 * moves, the lookups delivery uses (duplicates, threading), and the history incremental sync replays.
 */
import crypto from 'node:crypto';
import type { Item, ItemContent, NewAttachment, NewItem, Store } from '../../../server/store/types';
import { DAY, HIGHEST, LOWEST, NOW, eachBackend, email, expectBytes, expectRefusal, folderRecord, highestModseq, newMailbox, recordCommits, sha256, sorted, unique } from './fixtures';

eachBackend('items', (t) => {
  test('create answers the item with its defaults, stamped with the next modseq; byId reads the same', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const before = await highestModseq(store, user.id);
    const item = await store.items.create(email(user.id, inbox.id, { subject: 'Hello', receivedAt: NOW - 5 }), NOW + 1);
    expect(item).toEqual({
      id: expect.any(String),
      userId: user.id,
      folderId: inbox.id,
      type: 'email',
      receivedAt: NOW - 5,
      modseq: before + 1,
      placedModseq: before + 1,
      changeKey: expect.any(String),
      isRead: false,
      isFlagged: false,
      importance: 'normal',
      categories: [],
      inferenceClassification: 'focused',
      subject: 'Hello',
      from: null,
      to: [],
      cc: [],
      replyTo: [],
      sentAt: null,
      preview: '',
      hasAttachments: false,
      bodySize: 0,
      conversationId: null,
      internetMessageId: null,
      mimeBlobId: null,
      attachments: [],
      data: {},
      createdAt: NOW + 1,
    } satisfies Item);
    expect(await store.items.byId(user.id, item.id)).toEqual(item);
    expect(await highestModseq(store, user.id)).toBe(before + 1);
    expect(folderRecord(await store.folders.byId(user.id, inbox.id))).toEqual({
      ...folderRecord(inbox),
      totalCount: 1,
      unreadCount: 1,
      modseq: item.modseq,
      contentModseq: item.modseq,
    });
  });

  test('create keeps every field it is given', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const fields = {
      isRead: true,
      isFlagged: true,
      importance: 'high' as const,
      categories: ['Red', 'Blue category'],
      inferenceClassification: 'other' as const,
      from: { name: 'Zoë Ünicode', address: 'zoe@example.test' },
      to: [{ name: 'A', address: 'a@example.test' }, { name: '', address: 'b@example.test' }],
      cc: [{ name: 'C', address: 'c@example.test' }],
      replyTo: [{ name: 'R', address: 'r@example.test' }],
      sentAt: NOW - 1000,
      preview: 'A preview — with “quotes”',
      bodyText: 'plain',
      bodyHtml: '<p>é</p>',
      conversationId: unique('conv'),
      internetMessageId: `<${unique('m')}@example.test>`,
    };
    const item = await store.items.create(email(user.id, inbox.id, fields), NOW);
    const { bodyText: _t, bodyHtml: _h, ...kept } = fields;
    expect(item).toMatchObject({ ...kept, bodySize: Buffer.byteLength('<p>é</p>'), hasAttachments: false });
    expect(await store.items.byId(user.id, item.id)).toEqual(item);
    expect(await store.items.body(user.id, item.id)).toEqual({ text: 'plain', html: '<p>é</p>' });
    expect(await store.folders.byId(user.id, inbox.id)).toMatchObject({ totalCount: 1, unreadCount: 0 });
  });

  test('the preview keeps at most 256 characters and never half a surrogate pair; the body size is in bytes', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const long = await store.items.create(email(user.id, inbox.id, { preview: 'x'.repeat(300), bodyText: 'ü'.repeat(10) }), NOW);
    expect(long.preview).toBe('x'.repeat(256));
    expect(long.bodySize).toBe(20);
    const emoji = await store.items.create(email(user.id, inbox.id, { preview: `${'a'.repeat(255)}😀b` }), NOW);
    expect(emoji.preview).toBe('a'.repeat(255));
  });

  test('events and contacts are never unread and keep their data', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const calendar = (await store.folders.byKind(user.id, 'calendar'))!;
    const data = { start: '2026-01-02T10:00:00Z', attendees: [{ name: 'A' }], allDay: false };
    const event = await store.items.create({ ...email(user.id, calendar.id), type: 'event', isRead: false, data }, NOW);
    expect(event).toMatchObject({ type: 'event', isRead: true, data });
    expect(await store.folders.byId(user.id, calendar.id)).toMatchObject({ totalCount: 1, unreadCount: 0 });
    // Marking it read or unread is no change at all.
    expect(await store.items.update(user.id, event.id, { isRead: false }, NOW + 1)).toEqual(event);
    expect(await highestModseq(store, user.id)).toBe(event.modseq);
  });

  test('the raw message and attachments are stored as blobs and listed in order', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const mime = Buffer.from(`Subject: x\r\nMessage-ID: <${unique('m')}>\r\n\r\nhello`);
    const attachments: NewAttachment[] = [
      { name: 'logo.png', contentType: 'image/png', isInline: true, contentId: 'logo@x', content: crypto.randomBytes(300) },
      { name: 'report.pdf', contentType: 'application/pdf', isInline: false, contentId: null, content: crypto.randomBytes(70_000) },
    ];
    const item = await store.items.create(email(user.id, inbox.id, { mime, attachments }), NOW);
    expect(item.hasAttachments).toBe(true);
    expect(item.mimeBlobId).toEqual(expect.any(String));
    expect(await store.blobs.size(user.id, item.mimeBlobId!)).toBe(mime.length);
    expectBytes(await store.blobs.read(user.id, item.mimeBlobId!, 0, mime.length), mime);
    const listed = await store.items.attachments(user.id, item.id);
    expect(listed.map(({ blobId: _b, ...summary }) => summary)).toEqual(item.attachments);
    expect(item.attachments).toEqual(
      attachments.map((a) => ({ id: expect.any(String), name: a.name, contentType: a.contentType, size: a.content.length, isInline: a.isInline, contentId: a.contentId })),
    );
    expect(new Set(item.attachments.map((a) => a.id)).size).toBe(2);
    for (const [i, a] of listed.entries()) {
      expectBytes(await store.blobs.read(user.id, a.blobId, 0, a.size), attachments[i]!.content);
    }
    // Inline parts alone are not "attachments" to show.
    const inlineOnly = await store.items.create(email(user.id, inbox.id, { attachments: [attachments[0]!] }), NOW);
    expect(inlineOnly.hasAttachments).toBe(false);
    expect(await store.items.attachments(user.id, (await store.items.create(email(user.id, inbox.id), NOW)).id)).toEqual([]);
  });

  test('an item is refused into another user\'s folder or a folder that does not exist, changing nothing', async () => {
    const { store } = t();
    const alice = await newMailbox(store);
    const bob = await newMailbox(store);
    const before = [await highestModseq(store, alice.user.id), await highestModseq(store, bob.user.id)];
    const commits = recordCommits(store);
    try {
      await expectRefusal(store.items.create(email(alice.user.id, bob.inbox.id), NOW));
      await expectRefusal(store.items.create(email(alice.user.id, 'no-such-folder'), NOW));
      expect([await highestModseq(store, alice.user.id), await highestModseq(store, bob.user.id)]).toEqual(before);
      expect(await store.folders.byId(bob.user.id, bob.inbox.id)).toMatchObject({ totalCount: 0 });
      expect(commits.changes).toEqual([]);
    } finally {
      commits.stop();
    }
  });

  test('reads answer only the owner\'s items: byId, byIds, body, attachments', async () => {
    const { store } = t();
    const alice = await newMailbox(store);
    const bob = await newMailbox(store);
    const a1 = await store.items.create(email(alice.user.id, alice.inbox.id, { bodyText: 'secret' }), NOW);
    const a2 = await store.items.create(email(alice.user.id, alice.archive.id), NOW);
    const b1 = await store.items.create(email(bob.user.id, bob.inbox.id), NOW);
    expect(await store.items.byId(bob.user.id, a1.id)).toBeUndefined();
    expect(await store.items.body(bob.user.id, a1.id)).toBeUndefined();
    expect(await store.items.body(alice.user.id, 'no-such-item')).toBeUndefined();
    expect(await store.items.body(alice.user.id, a2.id)).toEqual({ text: null, html: null });
    const mine = await store.items.byIds(alice.user.id, [a2.id, b1.id, 'no-such-item', a1.id]);
    expect(sorted(mine, (i) => i.id)).toEqual(sorted([a1, a2], (i) => i.id));
    expect(await store.items.byIds(alice.user.id, [])).toEqual([]);
  });

  test('findDuplicate finds the same message in a folder by Message-ID, or by its bytes without one', async () => {
    const { store } = t();
    const { user, inbox, archive } = await newMailbox(store);
    const messageId = `<${unique('dup')}@example.test>`;
    const withId = await store.items.create(email(user.id, inbox.id, { internetMessageId: messageId }), NOW);
    const mime = Buffer.from(`Subject: no id ${unique('x')}\r\n\r\nbody`);
    const withoutId = await store.items.create(email(user.id, inbox.id, { mime }), NOW);
    const byId = (folderId: string, createdSince: number) =>
      store.items.findDuplicate(user.id, folderId, { internetMessageId: messageId, mimeSha256: 'unused' }, createdSince);
    expect(await byId(inbox.id, NOW)).toBe(withId.id);
    expect(await byId(inbox.id, NOW + 1)).toBeUndefined(); // only items created since count
    expect(await byId(archive.id, 0)).toBeUndefined();
    const byBytes = (bytes: Buffer) => store.items.findDuplicate(user.id, inbox.id, { internetMessageId: null, mimeSha256: sha256(bytes) }, 0);
    expect(await byBytes(mime)).toBe(withoutId.id);
    expect(await byBytes(Buffer.from('other bytes'))).toBeUndefined();
    await store.items.move(user.id, withoutId.id, archive.id, NOW);
    expect(await byBytes(mime)).toBeUndefined();
  });

  test('conversationByMessageIds answers the conversation of the newest item with one of the Message-IDs', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const other = await newMailbox(store);
    const [m1, m2, m3] = [unique('<m1'), unique('<m2'), unique('<m3')];
    await store.items.create(email(user.id, inbox.id, { internetMessageId: m1, conversationId: 'c-old', receivedAt: NOW }), NOW);
    await store.items.create(email(user.id, inbox.id, { internetMessageId: m2, conversationId: 'c-new', receivedAt: NOW + 10 }), NOW);
    await store.items.create(email(user.id, inbox.id, { internetMessageId: m3, conversationId: null, receivedAt: NOW + 20 }), NOW);
    expect(await store.items.conversationByMessageIds(user.id, [m1])).toBe('c-old');
    expect(await store.items.conversationByMessageIds(user.id, [m1, m2])).toBe('c-new');
    expect(await store.items.conversationByMessageIds(user.id, [m1, m3])).toBe('c-old'); // one without a conversation does not count
    expect(await store.items.conversationByMessageIds(user.id, [m3])).toBeUndefined();
    expect(await store.items.conversationByMessageIds(user.id, [])).toBeUndefined();
    expect(await store.items.conversationByMessageIds(other.user.id, [m1, m2])).toBeUndefined();
  });

  test('conversationBySubject answers the conversation of the newest item with the thread subject in the window', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const subject = unique('meeting notes');
    await store.items.create(email(user.id, inbox.id, { threadSubject: subject, conversationId: 'c1', receivedAt: NOW + 100 }), NOW);
    await store.items.create(email(user.id, inbox.id, { threadSubject: subject, conversationId: 'c2', receivedAt: NOW + 200 }), NOW);
    expect(await store.items.conversationBySubject(user.id, subject, NOW, NOW + 300)).toBe('c2');
    expect(await store.items.conversationBySubject(user.id, subject, NOW + 100, NOW + 199)).toBe('c1');
    expect(await store.items.conversationBySubject(user.id, subject, NOW + 200, NOW + 200)).toBe('c2'); // both ends count
    expect(await store.items.conversationBySubject(user.id, subject, NOW + 201, NOW + 999)).toBeUndefined();
    expect(await store.items.conversationBySubject(user.id, `${subject}x`, NOW, NOW + 300)).toBeUndefined();
    expect(await store.items.conversationBySubject((await newMailbox(store)).user.id, subject, NOW, NOW + 300)).toBeUndefined();
  });

  test('update applies the patch with a new modseq and change key, and moves the unread count', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const item = await store.items.create(email(user.id, inbox.id), NOW);
    const read = await store.items.update(user.id, item.id, { isRead: true }, NOW + 1);
    expect(read).toEqual({ ...item, isRead: true, modseq: item.modseq + 1, changeKey: expect.any(String) });
    expect(read.changeKey).not.toBe(item.changeKey);
    expect(read.placedModseq).toBe(item.placedModseq);
    expect(await store.items.byId(user.id, item.id)).toEqual(read);
    expect(await store.folders.byId(user.id, inbox.id)).toMatchObject({ totalCount: 1, unreadCount: 0, modseq: read.modseq, contentModseq: read.modseq });
    const tagged = await store.items.update(user.id, item.id, { isFlagged: true, categories: ['x'], inferenceClassification: 'other' }, NOW + 2);
    expect(tagged).toMatchObject({ isRead: true, isFlagged: true, categories: ['x'], inferenceClassification: 'other', modseq: read.modseq + 1 });
    // Counts did not move: the folder's hierarchy modseq stays, its content modseq moves.
    expect(await store.folders.byId(user.id, inbox.id)).toMatchObject({ unreadCount: 0, modseq: read.modseq, contentModseq: tagged.modseq });
  });

  test('an update that changes nothing takes no modseq and announces nothing', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const item = await store.items.create(email(user.id, inbox.id, { categories: ['a', 'b'], isFlagged: true }), NOW);
    const commits = recordCommits(store);
    try {
      expect(await store.items.update(user.id, item.id, { categories: ['a', 'b'], isFlagged: true, isRead: false }, NOW + 1)).toEqual(item);
      expect(await store.items.update(user.id, item.id, {}, NOW + 1)).toEqual(item);
      expect(await highestModseq(store, user.id)).toBe(item.modseq);
      expect(commits.changes).toEqual([]);
      // Order matters in categories: another order is a change.
      expect((await store.items.update(user.id, item.id, { categories: ['b', 'a'] }, NOW + 2)).modseq).toBe(item.modseq + 1);
    } finally {
      commits.stop();
    }
  });

  test('move files the item in another folder with a new modseq, moving both folders\' counts', async () => {
    const { store } = t();
    const { user, inbox, archive } = await newMailbox(store);
    const item = await store.items.create(email(user.id, inbox.id), NOW);
    const moved = await store.items.move(user.id, item.id, archive.id, NOW + 1);
    expect(moved).toEqual({ ...item, folderId: archive.id, modseq: item.modseq + 1, placedModseq: item.modseq + 1, changeKey: expect.any(String) });
    expect(moved.changeKey).not.toBe(item.changeKey);
    expect(await store.folders.byId(user.id, inbox.id)).toMatchObject({ totalCount: 0, unreadCount: 0, modseq: moved.modseq });
    expect(await store.folders.byId(user.id, archive.id)).toMatchObject({ totalCount: 1, unreadCount: 1, modseq: moved.modseq });
    // Into the folder it is already in: no change.
    expect(await store.items.move(user.id, item.id, archive.id, NOW + 2)).toEqual(moved);
    expect(await highestModseq(store, user.id)).toBe(moved.modseq);
  });

  test('delete removes the item with a new modseq and moves its folder\'s counts', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const unread = await store.items.create(email(user.id, inbox.id), NOW);
    const read = await store.items.create(email(user.id, inbox.id, { isRead: true }), NOW);
    await store.items.delete(user.id, unread.id, NOW + 1);
    expect(await store.items.byId(user.id, unread.id)).toBeUndefined();
    expect(await highestModseq(store, user.id)).toBe(read.modseq + 1);
    expect(await store.folders.byId(user.id, inbox.id)).toMatchObject({ totalCount: 1, unreadCount: 0, modseq: read.modseq + 1 });
    await store.items.delete(user.id, read.id, NOW + 2);
    expect(await store.folders.byId(user.id, inbox.id)).toMatchObject({ totalCount: 0, unreadCount: 0 });
  });

  test('update, move and delete of an item that is not the user\'s are refused and change nothing', async () => {
    const { store } = t();
    const alice = await newMailbox(store);
    const bob = await newMailbox(store);
    const theirs = await store.items.create(email(bob.user.id, bob.inbox.id), NOW);
    const before = await highestModseq(store, alice.user.id);
    await expectRefusal(store.items.update(alice.user.id, 'no-such-item', { isRead: true }, NOW));
    await expectRefusal(store.items.move(alice.user.id, 'no-such-item', alice.archive.id, NOW));
    await expectRefusal(store.items.delete(alice.user.id, 'no-such-item', NOW));
    await expectRefusal(store.items.update(alice.user.id, theirs.id, { isRead: true }, NOW));
    await expectRefusal(store.items.delete(alice.user.id, theirs.id, NOW));
    expect(await highestModseq(store, alice.user.id)).toBe(before);
    expect(await store.items.byId(bob.user.id, theirs.id)).toEqual(theirs);
  });
});

eachBackend('items.replace', (t) => {
  /** A photo as a contact carries it: random bytes, so no other test's blob is the same. */
  const photo = (bytes: Buffer = crypto.randomBytes(2_000)): NewAttachment => ({ name: 'contact-photo', contentType: 'image/jpeg', isInline: false, contentId: null, content: bytes });

  async function calendarOf(store: Store, userId: string) {
    return (await store.folders.byKind(userId, 'calendar'))!;
  }

  test('replaces an event\'s subject, body, sort time and data with a new modseq and change key, keeping the rest', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const calendar = await calendarOf(store, user.id);
    const event = await store.items.create(
      {
        ...email(user.id, calendar.id),
        type: 'event',
        isFlagged: true,
        categories: ['Blue'],
        bodyText: 'old agenda',
        bodyHtml: '<p>old agenda</p>',
        data: { uid: 'u1', start: '2026-01-02T10:00:00Z', location: 'Room 1', sequence: 0 },
      },
      NOW,
    );
    const content: ItemContent = {
      subject: 'Planning — revised',
      bodyText: 'new agenda: ü',
      receivedAt: NOW + 3_600_000,
      data: { uid: 'u1', start: '2026-01-02T11:00:00Z', sequence: 1, attendees: [{ name: 'Zoë', address: 'z@example.test' }] },
    };
    const replaced = await store.items.replace(user.id, event.id, content, NOW + 5);
    expect(replaced).toEqual({
      ...event,
      subject: content.subject,
      receivedAt: content.receivedAt,
      data: content.data, // the whole record: `location` is gone, not merged
      bodySize: Buffer.byteLength('new agenda: ü'),
      modseq: event.modseq + 1,
      // A new sort key places it anew in its folder's order: sync sends it as `created` (an upsert), because a
      // device still paging down the folder may never have received it where it was.
      placedModseq: event.modseq + 1,
      changeKey: expect.any(String),
    } satisfies Item);
    expect(replaced.changeKey).not.toBe(event.changeKey);
    expect(await store.items.byId(user.id, event.id)).toEqual(replaced);
    // The body is the new text alone: the old HTML does not outlive the edit.
    expect(await store.items.body(user.id, event.id)).toEqual({ text: 'new agenda: ü', html: null });
    expect(await highestModseq(store, user.id)).toBe(replaced.modseq);
  });

  test('logs the change in the item\'s folder, moves its content modseq (not its counts) and announces it', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const contacts = (await store.folders.byKind(user.id, 'contacts'))!;
    const contact = await store.items.create({ ...email(user.id, contacts.id), type: 'contact', subject: 'Ann Example', data: { givenName: 'Ann' } }, NOW);
    const folderBefore = (await store.folders.byId(user.id, contacts.id))!;
    const commits = recordCommits(store);
    let replaced: Item;
    try {
      replaced = await store.items.replace(user.id, contact.id, { subject: 'Ann Other', bodyText: null, receivedAt: contact.receivedAt, data: { givenName: 'Ann', surname: 'Other' } }, NOW + 1);
      expect(commits.of(user.id)).toEqual([{ userId: user.id, modseq: replaced.modseq, folderIds: [contacts.id], hierarchyChanged: false }]);
    } finally {
      commits.stop();
    }
    expect(await store.sync.changes(user.id, contacts.id, contact.modseq, LOWEST, 100)).toEqual([{ modseq: replaced.modseq, objectId: contact.id, kind: 'item' }]);
    expect(folderRecord(await store.folders.byId(user.id, contacts.id))).toEqual({ ...folderRecord(folderBefore), contentModseq: replaced.modseq });
    expect(replaced).toMatchObject({ subject: 'Ann Other', data: { givenName: 'Ann', surname: 'Other' }, bodySize: 0, isRead: true });
    // The same sort key: edited where it was, not placed anew (a device holding it gets an `updated`).
    expect(replaced.placedModseq).toBe(contact.placedModseq);
  });

  test('attachments: kept when not given, replaced by the given ones (the old blobs released), removed by none', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const contacts = (await store.folders.byKind(user.id, 'contacts'))!;
    const first = photo();
    const contact = await store.items.create({ ...email(user.id, contacts.id), type: 'contact', attachments: [first], data: {} }, NOW);
    const [oldRecord] = await store.items.attachments(user.id, contact.id);
    const base = { subject: contact.subject, bodyText: null, receivedAt: contact.receivedAt, data: {} };

    const kept = await store.items.replace(user.id, contact.id, base, NOW + 1);
    expect(kept.attachments).toEqual(contact.attachments);
    expect(kept.hasAttachments).toBe(true);
    expect(await store.items.attachments(user.id, contact.id)).toEqual([oldRecord]);

    const second = photo();
    const swapped = await store.items.replace(user.id, contact.id, { ...base, attachments: [second] }, NOW + 2);
    expect(swapped.attachments).toEqual([{ id: expect.any(String), name: 'contact-photo', contentType: 'image/jpeg', size: second.content.length, isInline: false, contentId: null }]);
    const [newRecord] = await store.items.attachments(user.id, contact.id);
    expect(await store.items.attachments(user.id, contact.id)).toEqual([{ ...swapped.attachments[0], blobId: newRecord!.blobId }]);
    expectBytes(await store.blobs.read(user.id, newRecord!.blobId, 0, newRecord!.size), second.content);
    // Nothing refers to the first photo any more: its blob went with its row.
    expect(await store.blobs.size(user.id, oldRecord!.blobId)).toBeUndefined();

    // The same bytes again: the blob the old row held is the new row's, and still readable.
    const again = await store.items.replace(user.id, contact.id, { ...base, attachments: [photo(second.content)] }, NOW + 3);
    const [againRecord] = await store.items.attachments(user.id, contact.id);
    expect(againRecord!.blobId).toBe(newRecord!.blobId);
    expectBytes(await store.blobs.read(user.id, againRecord!.blobId, 0, againRecord!.size), second.content);
    expect(again.attachments).toHaveLength(1);

    const none = await store.items.replace(user.id, contact.id, { ...base, attachments: [] }, NOW + 4);
    expect([none.attachments, none.hasAttachments]).toEqual([[], false]);
    expect(await store.items.attachments(user.id, contact.id)).toEqual([]);
    expect(await store.blobs.size(user.id, newRecord!.blobId)).toBeUndefined();
  });

  test('search covers after an edit what it covered before: a replaced event is still no search hit', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const calendar = await calendarOf(store, user.id);
    const word = unique('offsite').replace('-', '');
    const event = await store.items.create({ ...email(user.id, calendar.id), type: 'event', data: {} }, NOW);
    const mail = await store.items.create(email(user.id, inbox.id, { subject: `${word} invitation` }), NOW);
    await store.items.replace(user.id, event.id, { subject: `${word} planning`, bodyText: `${word} agenda`, receivedAt: NOW, data: {} }, NOW + 1);
    expect((await store.search.query(user.id, [word], { limit: 10 })).map((h) => h.itemId)).toEqual([mail.id]);
  });

  test('an unknown item, another user\'s, or an email is refused, changing nothing', async () => {
    const { store } = t();
    const alice = await newMailbox(store);
    const bob = await newMailbox(store);
    const bobsCalendar = await calendarOf(store, bob.user.id);
    const theirs = await store.items.create({ ...email(bob.user.id, bobsCalendar.id), type: 'event', data: { uid: 'x' } }, NOW);
    const mail = await store.items.create(email(alice.user.id, alice.inbox.id, { bodyText: 'as delivered' }), NOW);
    const before = await highestModseq(store, alice.user.id);
    const content: ItemContent = { subject: 'edited', bodyText: 'edited', receivedAt: NOW, data: {}, attachments: [photo()] };
    const commits = recordCommits(store);
    try {
      await expectRefusal(store.items.replace(alice.user.id, 'no-such-item', content, NOW + 1));
      await expectRefusal(store.items.replace(alice.user.id, theirs.id, content, NOW + 1));
      await expectRefusal(store.items.replace(alice.user.id, mail.id, content, NOW + 1));
      expect(commits.changes).toEqual([]);
    } finally {
      commits.stop();
    }
    expect(await highestModseq(store, alice.user.id)).toBe(before);
    expect(await store.items.byId(bob.user.id, theirs.id)).toEqual(theirs);
    expect(await store.items.byId(alice.user.id, mail.id)).toEqual(mail);
    expect(await store.items.body(alice.user.id, mail.id)).toEqual({ text: 'as delivered', html: null });
    expect(await store.items.attachments(alice.user.id, mail.id)).toEqual([]);
  });

  test('the tombstone of an event or a contact reaches every device; mail\'s only devices holding its key', async () => {
    const { store } = t();
    const { user, inbox, archive } = await newMailbox(store);
    const calendar = await calendarOf(store, user.id);
    const contacts = (await store.folders.byKind(user.id, 'contacts'))!;
    const event = await store.items.create({ ...email(user.id, calendar.id), type: 'event', receivedAt: NOW + DAY, data: {} }, NOW);
    const contact = await store.items.create({ ...email(user.id, contacts.id), type: 'contact', receivedAt: NOW, data: {} }, NOW);
    const mail = await store.items.create(email(user.id, inbox.id, { receivedAt: NOW }), NOW);
    // The event moves a day earlier (its start), then goes. A device still paging down the calendar may hold it from
    // its old key, above where it sorts now: the tombstone must reach a device whose bound is there, or above.
    await store.items.replace(user.id, event.id, { subject: 'earlier', bodyText: null, receivedAt: NOW - DAY, data: {} }, NOW);
    const start = await highestModseq(store, user.id);
    await store.items.delete(user.id, event.id, NOW);
    await store.items.move(user.id, contact.id, archive.id, NOW);
    await store.items.delete(user.id, mail.id, NOW);
    expect(await store.sync.changes(user.id, calendar.id, start, { receivedAt: NOW + DAY, id: event.id }, 100)).toEqual([{ modseq: start + 1, objectId: event.id, kind: 'deleted' }]);
    expect(await store.sync.changes(user.id, contacts.id, start, HIGHEST, 100)).toEqual([{ modseq: start + 2, objectId: contact.id, kind: 'movedOut' }]);
    // Mail keeps its key for life: its tombstone is for devices holding that key, and not for one whose bound is above.
    expect(await store.sync.changes(user.id, inbox.id, start, { receivedAt: NOW + 1, id: '' }, 100)).toEqual([]);
    expect(await store.sync.changes(user.id, inbox.id, start, LOWEST, 100)).toEqual([{ modseq: start + 3, objectId: mail.id, kind: 'deleted' }]);
  });

  test('in a unit of work: replace and then flag in one transaction, each change its own modseq', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const calendar = await calendarOf(store, user.id);
    const event = await store.items.create({ ...email(user.id, calendar.id), type: 'event', data: { uid: 'unit' } }, NOW);
    const done = await store.run(function* (tx) {
      const replaced = yield* tx.items.replace(user.id, event.id, { subject: 'in a unit', bodyText: null, receivedAt: NOW, data: { uid: 'unit', sequence: 1 } }, NOW + 1);
      const flagged = yield* tx.items.update(user.id, event.id, { isFlagged: true }, NOW + 1);
      return { replaced, flagged };
    });
    expect(done.replaced.modseq).toBe(event.modseq + 1);
    expect(done.flagged).toEqual({ ...done.replaced, isFlagged: true, modseq: event.modseq + 2, changeKey: expect.any(String) });
    expect(await store.items.byId(user.id, event.id)).toEqual(done.flagged);
  });
});

eachBackend('sender lookups', (t) => {
  test('fromSender answers the user\'s mail from the address (any case), newest first, ties by id, up to the limit', async () => {
    const { store } = t();
    const { user, inbox, archive } = await newMailbox(store);
    const other = await newMailbox(store);
    const ann = { name: 'Ann', address: 'Ann.Lee@Example.TEST' };
    const from = (fields: Partial<NewItem>) => store.items.create(email(user.id, inbox.id, { from: ann, ...fields }), NOW);
    const oldest = await from({ receivedAt: NOW - 3 * DAY });
    const tiedA = await from({ receivedAt: NOW - DAY });
    const tiedB = await from({ receivedAt: NOW - DAY });
    const archived = await store.items.create(email(user.id, archive.id, { from: { name: 'Ann', address: 'ann.lee@example.test' }, receivedAt: NOW }), NOW);
    // Not hers: another sender, a message without a sender, an event naming her, another user's mail from her.
    await from({ from: { name: 'Bob', address: 'bob@example.test' }, receivedAt: NOW + 1 });
    await from({ from: null, receivedAt: NOW + 2 });
    const calendar = (await store.folders.byKind(user.id, 'calendar'))!;
    await store.items.create({ ...email(user.id, calendar.id, { from: ann }), type: 'event', data: {} }, NOW);
    await store.items.create(email(other.user.id, other.inbox.id, { from: ann }), NOW);

    const [tieFirst, tieSecond] = [tiedA, tiedB].sort((x, y) => (x.id > y.id ? -1 : 1));
    const expected = [archived, tieFirst!, tieSecond!, oldest];
    expect(await store.items.fromSender(user.id, 'ann.lee@example.test', 10)).toEqual(expected);
    expect(await store.items.fromSender(user.id, 'ANN.LEE@EXAMPLE.TEST', 10)).toEqual(expected);
    expect(await store.items.fromSender(user.id, 'ann.lee@example.test', 2)).toEqual(expected.slice(0, 2));
    expect(await store.items.fromSender(user.id, 'ann@example.test', 10)).toEqual([]);
    expect(await store.items.fromSender(other.user.id, 'ann.lee@example.test', 10)).toHaveLength(1);
  });

  test('fromSender with folderIds answers mail in those folders only; a moved message follows its folder', async () => {
    const { store } = t();
    const { user, inbox, archive } = await newMailbox(store);
    const junk = (await store.folders.byKind(user.id, 'junkEmail'))!;
    const sender = { name: 'Carl', address: 'carl@example.test' };
    const inInbox = await store.items.create(email(user.id, inbox.id, { from: sender, receivedAt: NOW - 2 }), NOW);
    const inArchive = await store.items.create(email(user.id, archive.id, { from: sender, receivedAt: NOW - 1 }), NOW);
    const moved = await store.items.create(email(user.id, inbox.id, { from: sender, receivedAt: NOW }), NOW);
    const nowInJunk = await store.items.move(user.id, moved.id, junk.id, NOW + 1);
    const ids = (items: Array<{ id: string }>) => items.map((i) => i.id);
    expect(ids(await store.items.fromSender(user.id, sender.address, 10, [inbox.id]))).toEqual([inInbox.id]);
    expect(ids(await store.items.fromSender(user.id, sender.address, 10, [inbox.id, archive.id]))).toEqual([inArchive.id, inInbox.id]);
    expect(await store.items.fromSender(user.id, sender.address, 10, [junk.id])).toEqual([nowInJunk]);
    expect(await store.items.fromSender(user.id, sender.address, 10, [])).toEqual([]);
    expect(ids(await store.items.fromSender(user.id, sender.address, 10))).toEqual([nowInJunk.id, inArchive.id, inInbox.id]);
  });

  test('hasContactAddress: one of the user\'s contacts has the address, compared without case', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const other = await newMailbox(store);
    const contacts = (await store.folders.byKind(user.id, 'contacts'))!;
    const contact = (userId: string, folderId: string, data: Record<string, unknown>) =>
      store.items.create({ ...email(userId, folderId), type: 'contact', data }, NOW);
    await contact(user.id, contacts.id, {
      uid: unique('uid'),
      emailAddresses: [
        { name: 'Dana', address: 'dana@example.test' },
        { name: 'Dana', address: 'Dana.Work@Example.TEST' },
      ],
    });
    // Addresses with LIKE's and JSON's special characters are found exactly, and do not match others.
    await contact(user.id, contacts.id, { uid: unique('uid'), emailAddresses: [{ name: 'Odd', address: 'o_d%d"q\\uote@example.test' }] });
    // Not contacts of the user's: an email from the address, another user's contact, a contact naming the address
    // elsewhere than its addresses, a contact whose addresses are no list.
    await store.items.create(email(user.id, inbox.id, { from: { name: 'Eve', address: 'eve@example.test' } }), NOW);
    await contact(other.user.id, (await store.folders.byKind(other.user.id, 'contacts'))!.id, { emailAddresses: [{ name: 'Fay', address: 'fay@example.test' }] });
    await contact(user.id, contacts.id, { company: 'gus@example.test', emailAddresses: [] });
    await contact(user.id, contacts.id, { emailAddresses: { work: { address: 'hal@example.test' } } });
    await contact(user.id, contacts.id, { emailAddresses: ['ivy@example.test'] });

    for (const address of ['dana@example.test', 'DANA@example.test', 'dana.work@example.test', 'o_d%d"q\\uote@example.test', 'O_D%D"Q\\UOTE@EXAMPLE.TEST']) {
      expect({ address, found: await store.items.hasContactAddress(user.id, address) }).toEqual({ address, found: true });
    }
    for (const address of ['dana', 'ana@example.test', 'oxdxd"q\\uote@example.test', 'o_d%d', 'eve@example.test', 'fay@example.test', 'gus@example.test', 'hal@example.test', 'ivy@example.test']) {
      expect({ address, found: await store.items.hasContactAddress(user.id, address) }).toEqual({ address, found: false });
    }
    expect(await store.items.hasContactAddress(other.user.id, 'fay@example.test')).toBe(true);
    expect(await store.items.hasContactAddress(other.user.id, 'dana@example.test')).toBe(false);
  });
});

eachBackend('sync reads', (t) => {
  test('changes replays a folder\'s history after a modseq: items now in it, deleted, and moved out', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const f = await store.folders.create(user.id, { displayName: 'F', parentId: null }, NOW);
    const start = await highestModseq(store, user.id);
    const a = await store.items.create(email(user.id, f.id, { receivedAt: NOW + 1 }), NOW);
    const b = await store.items.create(email(user.id, f.id, { receivedAt: NOW + 2 }), NOW);
    const c = await store.items.create(email(user.id, f.id, { receivedAt: NOW + 3 }), NOW);
    const d = await store.items.create(email(user.id, inbox.id, { receivedAt: NOW + 4 }), NOW);
    const a2 = await store.items.update(user.id, a.id, { isFlagged: true }, NOW);
    const b2 = await store.items.move(user.id, b.id, inbox.id, NOW);
    await store.items.delete(user.id, c.id, NOW);
    const cDeleted = await highestModseq(store, user.id);
    const d2 = await store.items.move(user.id, d.id, f.id, NOW);
    const inF = await store.sync.changes(user.id, f.id, start, LOWEST, 100);
    expect(inF).toEqual([
      { modseq: a2.modseq, objectId: a.id, kind: 'item' },
      { modseq: b2.modseq, objectId: b.id, kind: 'movedOut' },
      { modseq: cDeleted, objectId: c.id, kind: 'deleted' },
      { modseq: d2.modseq, objectId: d.id, kind: 'item' },
    ]);
    expect(await store.sync.changes(user.id, inbox.id, start, LOWEST, 100)).toEqual([
      { modseq: b2.modseq, objectId: b.id, kind: 'item' },
      { modseq: d2.modseq, objectId: d.id, kind: 'movedOut' },
    ]);
    // After a cursor, a page at a time.
    expect(await store.sync.changes(user.id, f.id, a2.modseq, LOWEST, 100)).toEqual(inF.slice(1));
    expect(await store.sync.changes(user.id, f.id, start, LOWEST, 2)).toEqual(inF.slice(0, 2));
    expect(await store.sync.changes(user.id, f.id, d2.modseq, LOWEST, 100)).toEqual([]);
    // Only what is at or above the window's lower sort key (tombstones and moves too).
    expect(await store.sync.changes(user.id, f.id, start, { receivedAt: NOW + 2, id: '' }, 100)).toEqual(inF.slice(1));
    expect(await store.sync.changes(user.id, f.id, start, { receivedAt: NOW + 3, id: c.id }, 100)).toEqual(inF.slice(2));
    expect(await store.sync.changes(user.id, f.id, start, { receivedAt: NOW + 3, id: `${c.id}~` }, 100)).toEqual(inF.slice(3));
  });

  test('boundary answers the sort key of the n-th newest item, ties broken by id', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const items = [];
    for (const at of [NOW + 1, NOW + 3, NOW + 3, NOW + 2]) items.push(await store.items.create(email(user.id, inbox.id, { receivedAt: at }), NOW));
    const newestFirst = [...items].sort((x, y) => y.receivedAt - x.receivedAt || (x.id < y.id ? 1 : -1));
    for (let n = 1; n <= 4; n++) {
      expect(await store.sync.boundary(user.id, inbox.id, n)).toEqual({ receivedAt: newestFirst[n - 1]!.receivedAt, id: newestFirst[n - 1]!.id });
    }
    expect(await store.sync.boundary(user.id, inbox.id, 5)).toBeUndefined();
  });

  test('range answers the items with from ≤ key < to, either way, up to a limit', async () => {
    const { store } = t();
    const { user, inbox, archive } = await newMailbox(store);
    const items = [];
    for (let i = 0; i < 5; i++) items.push(await store.items.create(email(user.id, inbox.id, { receivedAt: NOW + i }), NOW));
    await store.items.create(email(user.id, archive.id, { receivedAt: NOW + 2 }), NOW);
    const key = (i: Item) => ({ receivedAt: i.receivedAt, id: i.id });
    expect(await store.sync.range(user.id, inbox.id, LOWEST, HIGHEST, 'asc', 100)).toEqual(items);
    expect(await store.sync.range(user.id, inbox.id, key(items[1]!), key(items[4]!), 'asc', 100)).toEqual(items.slice(1, 4));
    expect(await store.sync.range(user.id, inbox.id, key(items[1]!), key(items[4]!), 'desc', 100)).toEqual(items.slice(1, 4).reverse());
    expect(await store.sync.range(user.id, inbox.id, key(items[1]!), key(items[4]!), 'desc', 2)).toEqual([items[3], items[2]]);
    expect(await store.sync.range(user.id, inbox.id, key(items[1]!), key(items[1]!), 'asc', 100)).toEqual([]);
  });
});
