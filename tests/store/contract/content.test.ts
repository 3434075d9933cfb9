/**
 * The store contract, content: blobs, full-text search, the outbox and idempotency records.
 */
import crypto from 'node:crypto';
import type { Store } from '../../../server/store/types';
import { openTestStore, STORE_BACKENDS } from '../../helpers/storeBackends';
import { DAY, HOUR, NOW, eachBackend, email, expectBytes, expectRefusal, newMailbox, newUser, unique } from './fixtures';

eachBackend('blobs', (t) => {
  test('put stores bytes once per content; size and read answer them, in any range', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const bytes = crypto.randomBytes(600 * 1024); // more than two of SQLite's 256 KiB chunks
    const id = await store.blobs.put(user.id, bytes, NOW);
    expect(await store.blobs.put(user.id, Buffer.from(bytes), NOW + 1)).toBe(id);
    expect(await store.blobs.put(user.id, crypto.randomBytes(10), NOW)).not.toBe(id);
    expect(await store.blobs.size(user.id, id)).toBe(bytes.length);
    expectBytes(await store.blobs.read(user.id, id, 0, bytes.length), bytes);
    for (const [start, end] of [[0, 1], [1000, 2000], [262_100, 262_200], [200_000, 600_000], [bytes.length - 1, bytes.length]] as const) {
      expectBytes(await store.blobs.read(user.id, id, start, end), bytes.subarray(start, end));
    }
    expect(await store.blobs.read(user.id, id, 500, 500)).toHaveLength(0);
    expect(await store.blobs.size(user.id, 'no-such-blob')).toBeUndefined();
  });

  test('an empty blob has size 0', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const id = await store.blobs.put(user.id, Buffer.alloc(0), NOW);
    expect(await store.blobs.size(user.id, id)).toBe(0);
    expect(await store.blobs.read(user.id, id, 0, 0)).toHaveLength(0);
  });

  test('a message\'s blob lives while an item refers to it, and goes with the last one', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const mime = Buffer.from(`Subject: ${unique('s')}\r\n\r\nbody`);
    const first = await store.items.create(email(user.id, inbox.id, { mime }), NOW);
    const second = await store.items.create(email(user.id, inbox.id, { mime }), NOW);
    expect(second.mimeBlobId).toBe(first.mimeBlobId);
    await store.items.delete(user.id, first.id, NOW);
    expect(await store.blobs.size(user.id, first.mimeBlobId!)).toBe(mime.length);
    await store.items.delete(user.id, second.id, NOW);
    expect(await store.blobs.size(user.id, first.mimeBlobId!)).toBeUndefined();
  });
});

eachBackend('search', (t) => {
  const setUp = async (store: Store) => {
    const { user, inbox, archive } = await newMailbox(store);
    const add = (fields: Parameters<typeof email>[2]) => store.items.create(email(user.id, inbox.id, fields), NOW);
    const inSubject = await add({ subject: 'Quarterly budget review', bodyText: 'numbers attached' });
    const inBody = await add({ subject: 'Lunch', bodyText: 'the budget for lunch is small' });
    const byPrefix = await add({ subject: 'Budgeting tips', bodyText: 'save' });
    const bySender = await add({ subject: 'Hello', from: { name: 'Zelda Quince', address: 'zq@example.test' } });
    const byRecipient = await add({ subject: 'Hi', to: [{ name: 'Yorick Plumtree', address: 'yp@example.test' }] });
    const byHtml = await add({ subject: 'Html', bodyHtml: '<p>A <b>kumquat</b> festival</p>' });
    const calendar = (await store.folders.byKind(user.id, 'calendar'))!;
    await store.items.create({ ...email(user.id, calendar.id, { subject: 'budget meeting' }), type: 'event' }, NOW);
    const stranger = await newMailbox(store);
    await store.items.create(email(stranger.user.id, stranger.inbox.id, { subject: 'budget budget budget' }), NOW);
    return { user, inbox, archive, inSubject, inBody, byPrefix, bySender, byRecipient, byHtml };
  };
  const ids = (hits: Array<{ itemId: string }>) => hits.map((h) => h.itemId);

  test('finds the user\'s emails with every term, the last as a prefix, best first; never events or other mailboxes', async () => {
    const { store } = t();
    const s = await setUp(store);
    const hits = await store.search.query(s.user.id, ['budget'], { limit: 10 });
    expect(ids(hits).sort()).toEqual([s.inSubject.id, s.inBody.id, s.byPrefix.id].sort());
    for (let i = 1; i < hits.length; i++) expect(hits[i - 1]!.score).toBeGreaterThanOrEqual(hits[i]!.score);
    expect(ids(hits).indexOf(s.inSubject.id)).toBeLessThan(ids(hits).indexOf(s.inBody.id)); // the subject weighs more
    expect(ids(await store.search.query(s.user.id, ['quarterly', 'budget'], { limit: 10 }))).toEqual([s.inSubject.id]);
    expect(ids(await store.search.query(s.user.id, ['budg'], { limit: 10 })).sort()).toEqual([s.inSubject.id, s.inBody.id, s.byPrefix.id].sort());
    expect(await store.search.query(s.user.id, ['budg', 'review'], { limit: 10 })).toEqual([]); // only the last term is a prefix
    expect(ids(await store.search.query(s.user.id, ['quince'], { limit: 10 }))).toEqual([s.bySender.id]);
    expect(ids(await store.search.query(s.user.id, ['plumtree'], { limit: 10 }))).toEqual([s.byRecipient.id]);
    expect(ids(await store.search.query(s.user.id, ['kumquat'], { limit: 10 }))).toEqual([s.byHtml.id]);
    expect(await store.search.query(s.user.id, ['meeting'], { limit: 10 })).toEqual([]);
  });

  test('limit, the folder filter, moves and deletes', async () => {
    const { store } = t();
    const s = await setUp(store);
    const best = await store.search.query(s.user.id, ['budget'], { limit: 1 });
    expect(best).toHaveLength(1);
    expect(best[0]!.itemId).toBe((await store.search.query(s.user.id, ['budget'], { limit: 10 }))[0]!.itemId);
    await store.items.move(s.user.id, s.inSubject.id, s.archive.id, NOW);
    expect(ids(await store.search.query(s.user.id, ['budget'], { folderId: s.archive.id, limit: 10 }))).toEqual([s.inSubject.id]);
    expect(ids(await store.search.query(s.user.id, ['budget'], { folderId: s.inbox.id, limit: 10 })).sort()).toEqual([s.inBody.id, s.byPrefix.id].sort());
    await store.items.delete(s.user.id, s.inBody.id, NOW);
    expect(ids(await store.search.query(s.user.id, ['budget'], { limit: 10 })).sort()).toEqual([s.inSubject.id, s.byPrefix.id].sort());
  });

  test('no terms find nothing, and no term is query syntax', async () => {
    const { store } = t();
    const s = await setUp(store);
    expect(await store.search.query(s.user.id, [], { limit: 10 })).toEqual([]);
    for (const terms of [['"budget'], ['budget', 'OR'], ['*'], ['(x'], ['NEAR', 'budget'], ["o'brien"], ['a:b'], ['-budget'], ['budget&']]) {
      const hits = await store.search.query(s.user.id, terms, { limit: 10 });
      expect(Array.isArray(hits)).toBe(true);
    }
    expect(await store.search.query(s.user.id, ['budget', 'OR', 'lunch'], { limit: 10 })).toEqual([]);
  });
});

/** A queued entry for a message of its own. */
async function enqueueFor(store: Store, userId: string, now: number, recipients = ['x@remote.test']) {
  const blobId = await store.blobs.put(userId, Buffer.from(`message ${unique('m')}`), now);
  return store.outbox.enqueue({ userId, blobId, mailFrom: 'me@example.test', recipients }, now);
}

eachBackend('outbox', (t) => {

  test('enqueue answers a queued entry due now; byId and list read it', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const { user: other } = await newMailbox(store);
    const blobId = await store.blobs.put(user.id, Buffer.from('composed'), NOW);
    const entry = await store.outbox.enqueue({ userId: user.id, blobId, mailFrom: 'me@example.test', recipients: ['a@remote.test', 'b@remote.test'] }, NOW);
    expect(entry).toEqual({
      id: expect.any(String),
      userId: user.id,
      blobId,
      mailFrom: 'me@example.test',
      recipients: ['a@remote.test', 'b@remote.test'],
      state: 'queued',
      attempts: 0,
      nextAttemptAt: NOW,
      lastError: null,
      createdAt: NOW,
      updatedAt: NOW,
    });
    expect(await store.outbox.byId(entry.id)).toEqual(entry);
    expect(await store.outbox.byId('no-such-entry')).toBeUndefined();
    const later = await enqueueFor(store, user.id, NOW + 1);
    await enqueueFor(store, other.id, NOW);
    expect(await store.outbox.list(user.id)).toEqual([entry, later]);
  });

  test('update changes the fields it is given and keeps the others; an unknown entry is refused', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const entry = await enqueueFor(store, user.id, NOW, ['a@remote.test', 'b@remote.test']);
    const retried = await store.outbox.update(entry.id, { recipients: ['b@remote.test'], attempts: 1, nextAttemptAt: NOW + HOUR, lastError: '451 try later' }, NOW + 5);
    expect(retried).toEqual({ ...entry, recipients: ['b@remote.test'], attempts: 1, nextAttemptAt: NOW + HOUR, lastError: '451 try later', updatedAt: NOW + 5 });
    expect(await store.outbox.byId(entry.id)).toEqual(retried);
    const sent = await store.outbox.update(entry.id, { state: 'sent', lastError: null }, NOW + 6);
    expect(sent).toEqual({ ...retried, state: 'sent', lastError: null, updatedAt: NOW + 6 });
    await expectRefusal(store.outbox.update('no-such-entry', { state: 'failed' }, NOW));
  });
});

describe.each(STORE_BACKENDS)('%s store: outbox.due, nextDueAt and purge', (backend) => {
  // A store of its own: these read every mailbox's entries.
  test('due answers queued entries whose time has come, oldest first; nextDueAt the earliest; purge finished ones', async () => {
    const t = await openTestStore(backend, { name: 'outbox' });
    try {
      const { store } = t;
      const { user } = await newMailbox(store);
      const { user: other } = await newMailbox(store);
      expect(await store.outbox.nextDueAt()).toBeUndefined();
      expect(await store.outbox.due(NOW + 365 * DAY, 10)).toEqual([]);
      const later = await enqueueFor(store, user.id, NOW + 20 * DAY);
      const soon = await enqueueFor(store, other.id, NOW + 10 * DAY);
      const done = await enqueueFor(store, user.id, NOW + 5 * DAY);
      await store.outbox.update(done.id, { state: 'sent' }, NOW + 5 * DAY);
      const failed = await enqueueFor(store, user.id, NOW + 6 * DAY);
      await store.outbox.update(failed.id, { state: 'failed' }, NOW + 30 * DAY);
      const due = async (now: number, limit: number) => (await store.outbox.due(now, limit)).map((e) => e.id);
      expect(await due(NOW + 10 * DAY - 1, 10)).toEqual([]);
      expect(await due(NOW + 10 * DAY, 10)).toEqual([soon.id]);
      expect(await due(NOW + 25 * DAY, 10)).toEqual([soon.id, later.id]);
      expect(await due(NOW + 25 * DAY, 1)).toEqual([soon.id]);
      expect((await store.outbox.due(NOW + 10 * DAY, 10))[0]).toEqual(soon);
      expect(await store.outbox.nextDueAt()).toBe(NOW + 10 * DAY);
      // A retry later moves it.
      await store.outbox.update(soon.id, { nextAttemptAt: NOW + 40 * DAY, attempts: 1 }, NOW + 11 * DAY);
      expect(await store.outbox.nextDueAt()).toBe(NOW + 20 * DAY);
      expect(await due(NOW + 25 * DAY, 10)).toEqual([later.id]);
      // Finished entries last updated before the cutoff go; queued ones stay whatever their age.
      expect(await store.outbox.purge(NOW + 10 * DAY)).toBe(1);
      expect(await store.outbox.byId(done.id)).toBeUndefined();
      expect(await store.outbox.byId(failed.id)).toBeDefined();
      expect(await store.outbox.purge(NOW + 31 * DAY)).toBe(1);
      expect(await store.outbox.byId(failed.id)).toBeUndefined();
      expect(await store.outbox.purge(NOW + 365 * DAY)).toBe(0);
      expect((await store.outbox.list(user.id)).map((e) => e.id)).toEqual([later.id]);
      await store.outbox.update(later.id, { state: 'sent' }, NOW + 21 * DAY);
      await store.outbox.update(soon.id, { state: 'failed' }, NOW + 21 * DAY);
      expect(await store.outbox.nextDueAt()).toBeUndefined();
    } finally {
      await t.close();
    }
  });
});

eachBackend('idempotency records', (t) => {
  const result = (n: number) => ({ requestHash: `hash-${n}`, status: 200 + n, body: JSON.stringify({ n, text: 'é' }), createdAt: NOW + n });

  test('put stores a result per user and key; get reads it; put again replaces it', async () => {
    const { store } = t();
    const user = await newUser(store);
    const other = await newUser(store);
    await store.idempotency.put(user.id, 'key-1', result(1));
    expect(await store.idempotency.get(user.id, 'key-1')).toEqual(result(1));
    expect(await store.idempotency.get(other.id, 'key-1')).toBeUndefined();
    expect(await store.idempotency.get(user.id, 'key-2')).toBeUndefined();
    await store.idempotency.put(other.id, 'key-1', result(2));
    await store.idempotency.put(user.id, 'key-1', result(3));
    expect(await store.idempotency.get(user.id, 'key-1')).toEqual(result(3));
    expect(await store.idempotency.get(other.id, 'key-1')).toEqual(result(2));
  });

  test('purge deletes the records created before a time and answers how many', async () => {
    const { store } = t();
    const user = await newUser(store);
    // Older than anything the other test stored (createdAt NOW + n).
    await store.idempotency.put(user.id, 'old-1', { ...result(0), createdAt: NOW - 2 * DAY });
    await store.idempotency.put(user.id, 'old-2', { ...result(0), createdAt: NOW - DAY - 1 });
    await store.idempotency.put(user.id, 'new', { ...result(0), createdAt: NOW - DAY });
    expect(await store.idempotency.purge(NOW - DAY)).toBe(2);
    expect(await store.idempotency.get(user.id, 'old-1')).toBeUndefined();
    expect(await store.idempotency.get(user.id, 'old-2')).toBeUndefined();
    expect(await store.idempotency.get(user.id, 'new')).toBeDefined();
    expect(await store.idempotency.purge(NOW - DAY)).toBe(0);
  });
});
