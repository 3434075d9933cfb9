/**
 * The store contract, conversations (issue 19, Organize by Thread), the same on every backend: each folder's
 * conversation rows, kept current by the store itself (triggers on `items`) through create, update, move and delete
 * — the aggregate (latest message, counts, attachments, importance, participants) and the modseq stamp of every
 * change (a delete's tombstone carries that delete's modseq), also checked after every step of a seeded random
 * history against an aggregate computed here; tombstones and revival; folder deletion; messages
 * without a conversation id; the window reads (boundary, range, count, get: live rows only, ties broken by
 * conversation id) and the history read (changedSince, tombstones too, modseq order); the conversation's item ids;
 * ignored conversations; the tombstone purges; and the migration's backfill of mail stored before it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import Database from 'better-sqlite3';
import { Client } from 'pg';
import type { ConversationKey, ConversationRecord, EmailAddress, Item, NewAttachment, Store } from '../../../server/store/types';
import { openSqliteStore } from '../../../server/store/sqlite';
import { migrate as migrateSqlite, MIGRATIONS_DIR as SQLITE_MIGRATIONS_DIR } from '../../../server/store/sqlite/db';
import { openPostgresStore } from '../../../server/store/postgres';
import { migrate as migratePostgres, MIGRATIONS_DIR as POSTGRES_MIGRATIONS_DIR } from '../../../server/store/postgres/migrate';
import { freshDatabase } from '../../helpers/postgres';
import { STORE_BACKENDS } from '../../helpers/storeBackends';
import { DAY, MINUTE, NOW, eachBackend, email, highestModseq, newMailbox, unique } from './fixtures';

/** Below and above every conversation key. */
const LOWEST: ConversationKey = { latestReceivedAt: 0, conversationId: '' };
const HIGHEST: ConversationKey = { latestReceivedAt: 8.64e15, conversationId: '' };

const person = (name: string, address = `${name.toLowerCase()}@example.test`): EmailAddress => ({ name, address });
const attachment = (isInline: boolean): NewAttachment => ({
  name: isInline ? 'logo.png' : 'report.pdf',
  contentType: isInline ? 'image/png' : 'application/pdf',
  isInline,
  contentId: isInline ? 'logo@x' : null,
  content: crypto.randomBytes(64),
});

/** The folder's row for the conversation, tombstone or not (get answers live rows only). */
async function row(store: Store, userId: string, folderId: string, conversationId: string): Promise<ConversationRecord | undefined> {
  return (await store.conversations.changedSince(userId, folderId, 0, -1)).find((c) => c.conversationId === conversationId);
}

/** A small deterministic generator (mulberry32), so a failing sequence of changes can be replayed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const newerFirst = (a: Item, b: Item) => b.receivedAt - a.receivedAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);

/** What the store should hold for `items` (one folder's): the contract's aggregate, computed here, newest first. */
function aggregate(items: Item[]): Array<Omit<ConversationRecord, 'userId' | 'folderId' | 'modseq'>> {
  const groups = new Map<string, Item[]>();
  for (const i of items.filter((i) => i.type === 'email')) {
    const key = i.conversationId ?? i.id;
    groups.set(key, [...(groups.get(key) ?? []), i]);
  }
  const rows = [...groups.entries()].map(([conversationId, list]) => {
    const newest = [...list].sort(newerFirst);
    const participants: EmailAddress[] = [];
    for (const i of newest) {
      if (i.from && !participants.some((p) => p.address.toLowerCase() === i.from!.address.toLowerCase())) participants.push(i.from);
    }
    return {
      conversationId,
      latestReceivedAt: newest[0]!.receivedAt,
      latestItemId: newest[0]!.id,
      messageCount: list.length,
      unreadCount: list.filter((i) => !i.isRead).length,
      flaggedCount: list.filter((i) => i.isFlagged).length,
      hasAttachments: list.some((i) => i.hasAttachments),
      importance: list.some((i) => i.importance === 'high') ? 'high' : list.every((i) => i.importance === 'low') ? 'low' : 'normal',
      participants: participants.slice(0, 10),
    } as const;
  });
  return rows.sort((a, b) => b.latestReceivedAt - a.latestReceivedAt || (a.conversationId < b.conversationId ? 1 : -1));
}

const keyOf = (c: ConversationRecord): ConversationKey => ({ latestReceivedAt: c.latestReceivedAt, conversationId: c.conversationId });

eachBackend('conversations', (t) => {
  test('create: the aggregate of the folder\'s mail of the conversation, stamped with the newest change', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const conversationId = unique('conv');
    const first = await store.items.create(
      email(user.id, inbox.id, { conversationId, receivedAt: NOW, from: person('Ann'), importance: 'low', isRead: true }),
      NOW,
    );
    expect(await store.conversations.get(user.id, inbox.id, conversationId)).toEqual({
      userId: user.id,
      folderId: inbox.id,
      conversationId,
      latestReceivedAt: NOW,
      latestItemId: first.id,
      messageCount: 1,
      unreadCount: 0,
      flaggedCount: 0,
      hasAttachments: false,
      importance: 'low',
      participants: [person('Ann')],
      modseq: first.modseq,
    } satisfies ConversationRecord);

    const second = await store.items.create(
      email(user.id, inbox.id, { conversationId, receivedAt: NOW + MINUTE, from: person('Bob'), isFlagged: true, attachments: [attachment(false)] }),
      NOW,
    );
    // Older than the newest: not the latest, but counted; the same sender as the first in another case counts once,
    // with the name and spelling of their newest message.
    const third = await store.items.create(
      email(user.id, inbox.id, { conversationId, receivedAt: NOW - MINUTE, from: person('ANN again', 'ANN@example.test'), importance: 'high' }),
      NOW,
    );
    // Neither an event in the folder with the conversation's id nor the same conversation in another folder counts.
    await store.items.create({ ...email(user.id, inbox.id, { conversationId, receivedAt: NOW + DAY }), type: 'event' }, NOW);
    const elsewhere = await store.folders.create(user.id, { displayName: unique('folder'), parentId: null }, NOW);
    await store.items.create(email(user.id, elsewhere.id, { conversationId, receivedAt: NOW + DAY, from: person('Zed') }), NOW);

    expect(await store.conversations.get(user.id, inbox.id, conversationId)).toEqual({
      userId: user.id,
      folderId: inbox.id,
      conversationId,
      latestReceivedAt: NOW + MINUTE,
      latestItemId: second.id,
      messageCount: 3,
      unreadCount: 2,
      flaggedCount: 1,
      hasAttachments: true,
      importance: 'high',
      participants: [person('Bob'), person('Ann')],
      modseq: third.modseq,
    } satisfies ConversationRecord);
    expect(await store.conversations.get(user.id, elsewhere.id, conversationId)).toMatchObject({ messageCount: 1, participants: [person('Zed')] });
  });

  test('the rows always equal the aggregate of the folder\'s mail, and every change stamps its rows (random changes)', async () => {
    const { store } = t();
    const { user, inbox, archive } = await newMailbox(store);
    const folders = [inbox.id, archive.id];
    const random = seeded(19);
    const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
    // Mostly one conversation, so its participants overflow ten; another one, and messages without a conversation.
    const [busy, quiet] = [unique('busy'), unique('quiet')];
    const conversations = [null, busy, busy, busy, quiet];
    // Twenty senders, some of them also written in upper case: more than ten distinct ones per conversation.
    const senders = Array.from({ length: 20 }, (_, i) => person(`P${i}`));
    const spellings = [...senders, ...senders.slice(0, 4).map((p) => ({ name: `${p.name} (caps)`, address: p.address.toUpperCase() }))];
    const live = new Map<string, Item>();

    /**
     * After a change: the row of each conversation it touched (in each folder) is the aggregate of that folder's mail of
     * it, or a tombstone when none is left, and carries the change's modseq.
     */
    const expectStamped = async (keys: Array<{ folderId: string; conversationId: string }>) => {
      const highest = await highestModseq(store, user.id);
      for (const k of keys) {
        const found = await row(store, user.id, k.folderId, k.conversationId);
        const [expected] = aggregate([...live.values()].filter((i) => i.folderId === k.folderId && (i.conversationId ?? i.id) === k.conversationId));
        const { modseq, userId: _u, folderId: _f, ...aggregated } = found!;
        expect({ modseq, aggregated: expected ? aggregated : aggregated.messageCount }).toEqual({ modseq: highest, aggregated: expected ?? 0 });
      }
    };
    const keyOfItem = (i: Item) => ({ folderId: i.folderId, conversationId: i.conversationId ?? i.id });

    for (let step = 0; step < 250; step++) {
      const existing = [...live.values()];
      const action = existing.length < 5 ? 0 : random();
      if (action < 0.6) {
        const item = await store.items.create(
          email(user.id, pick(folders), {
            conversationId: pick(conversations),
            // Mostly newer than what came before (deliveries), sometimes older (imports), often at the same time.
            receivedAt: NOW + Math.floor((step + random() * 12) / 3) * MINUTE,
            from: random() < 0.1 ? null : pick(spellings),
            importance: pick(['low', 'normal', 'high'] as const),
            isRead: random() < 0.5,
            isFlagged: random() < 0.3,
            attachments: random() < 0.2 ? [attachment(random() < 0.5)] : [],
          }),
          NOW,
        );
        live.set(item.id, item);
        await expectStamped([keyOfItem(item)]);
      } else if (action < 0.8) {
        const before = pick(existing);
        const after = await store.items.update(user.id, before.id, { isRead: random() < 0.5, isFlagged: random() < 0.5 }, NOW);
        live.set(after.id, after);
        if (after.modseq !== before.modseq) await expectStamped([keyOfItem(after)]);
      } else if (action < 0.9) {
        const before = pick(existing);
        const after = await store.items.move(user.id, before.id, folders.find((f) => f !== before.folderId)!, NOW);
        live.set(after.id, after);
        await expectStamped([keyOfItem(before), keyOfItem(after)]);
      } else {
        const gone = pick(existing);
        await store.items.delete(user.id, gone.id, NOW);
        live.delete(gone.id);
        await expectStamped([keyOfItem(gone)]);
      }
    }

    for (const folderId of folders) {
      const expected = aggregate([...live.values()].filter((i) => i.folderId === folderId));
      const actual = await store.conversations.range(user.id, folderId, LOWEST, HIGHEST, 'desc', 1000);
      expect(actual.map(({ modseq: _m, ...rest }) => rest)).toEqual(expected.map((e) => ({ userId: user.id, folderId, ...e })));
      expect(await store.conversations.count(user.id, folderId)).toBe(expected.length);
      // Every other row of the folder is a tombstone of a conversation it no longer has a message of.
      const tombstones = (await store.conversations.changedSince(user.id, folderId, 0, -1)).filter((c) => c.messageCount === 0);
      expect(tombstones.length + expected.length).toBe((await store.conversations.changedSince(user.id, folderId, 0, -1)).length);
      for (const c of tombstones) expect(expected.map((e) => e.conversationId)).not.toContain(c.conversationId);
    }
  });

  test('importance: high when any message is, low only when every message is, else normal', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const importanceAfter = async (...levels: Array<'low' | 'normal' | 'high'>) => {
      const conversationId = unique('conv');
      for (const importance of levels) await store.items.create(email(user.id, inbox.id, { conversationId, importance }), NOW);
      return (await store.conversations.get(user.id, inbox.id, conversationId))!.importance;
    };
    expect(await importanceAfter('low', 'low')).toBe('low');
    expect(await importanceAfter('low', 'normal')).toBe('normal');
    expect(await importanceAfter('low', 'high', 'normal')).toBe('high');
    expect(await importanceAfter('normal')).toBe('normal');
  });

  test('participants: distinct senders by address whatever its case, newest message first, at most ten', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const conversationId = unique('conv');
    const senders = Array.from({ length: 12 }, (_, i) => person(`Sender${String(i).padStart(2, '0')}`));
    for (const [i, from] of senders.entries()) {
      await store.items.create(email(user.id, inbox.id, { conversationId, receivedAt: NOW + i * MINUTE, from }), NOW);
    }
    // Sender03 writes again, newest of all, with the address in upper case; a message without a sender adds no one.
    await store.items.create(email(user.id, inbox.id, { conversationId, receivedAt: NOW + DAY, from: person('S3', 'SENDER03@EXAMPLE.TEST') }), NOW);
    await store.items.create(email(user.id, inbox.id, { conversationId, receivedAt: NOW + 2 * DAY, from: null }), NOW);
    const { participants, messageCount } = (await store.conversations.get(user.id, inbox.id, conversationId))!;
    expect(messageCount).toBe(14);
    expect(participants).toEqual([
      person('S3', 'SENDER03@EXAMPLE.TEST'),
      ...[11, 10, 9, 8, 7, 6, 5, 4, 2].map((i) => senders[i]!),
    ]);
  });

  test('update: read and flag changes move the counts, and every change stamps the row with its modseq', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const conversationId = unique('conv');
    const a = await store.items.create(email(user.id, inbox.id, { conversationId, receivedAt: NOW }), NOW);
    const b = await store.items.create(email(user.id, inbox.id, { conversationId, receivedAt: NOW + 1 }), NOW);
    expect(await store.conversations.get(user.id, inbox.id, conversationId)).toMatchObject({ unreadCount: 2, flaggedCount: 0, modseq: b.modseq });

    const read = await store.items.update(user.id, a.id, { isRead: true }, NOW);
    expect(await store.conversations.get(user.id, inbox.id, conversationId)).toMatchObject({ unreadCount: 1, flaggedCount: 0, modseq: read.modseq });
    const flagged = await store.items.update(user.id, b.id, { isFlagged: true, isRead: true }, NOW);
    expect(await store.conversations.get(user.id, inbox.id, conversationId)).toMatchObject({ unreadCount: 0, flaggedCount: 1, modseq: flagged.modseq });
    // A change the aggregate does not show (categories) still stamps the row: the conversation's message changed.
    const categorised = await store.items.update(user.id, a.id, { categories: ['Blue'] }, NOW);
    expect((await store.conversations.get(user.id, inbox.id, conversationId))!.modseq).toBe(categorised.modseq);
    // An update that changes nothing takes no modseq and leaves the row as it was.
    const before = await store.conversations.get(user.id, inbox.id, conversationId);
    await store.items.update(user.id, a.id, { isRead: true }, NOW);
    expect(await store.conversations.get(user.id, inbox.id, conversationId)).toEqual(before);
    expect(before!.modseq).toBe(await highestModseq(store, user.id));
  });

  test('move: both folders\' rows change, each stamped with the move\'s modseq; the last message out leaves a tombstone', async () => {
    const { store } = t();
    const { user, inbox, archive } = await newMailbox(store);
    const conversationId = unique('conv');
    const a = await store.items.create(email(user.id, inbox.id, { conversationId, receivedAt: NOW, from: person('Ann') }), NOW);
    const b = await store.items.create(email(user.id, inbox.id, { conversationId, receivedAt: NOW + 1, from: person('Bob'), isFlagged: true }), NOW);

    const moved = await store.items.move(user.id, b.id, archive.id, NOW);
    expect(await store.conversations.get(user.id, inbox.id, conversationId)).toMatchObject({
      latestItemId: a.id,
      latestReceivedAt: NOW,
      messageCount: 1,
      flaggedCount: 0,
      participants: [person('Ann')],
      modseq: moved.modseq,
    });
    expect(await store.conversations.get(user.id, archive.id, conversationId)).toMatchObject({
      latestItemId: b.id,
      messageCount: 1,
      unreadCount: 1,
      flaggedCount: 1,
      participants: [person('Bob')],
      modseq: moved.modseq,
    });

    const last = await store.items.move(user.id, a.id, archive.id, NOW);
    expect(await store.conversations.get(user.id, inbox.id, conversationId)).toBeUndefined();
    // The tombstone keeps its latest message as it was, with no message counted.
    expect(await row(store, user.id, inbox.id, conversationId)).toMatchObject({
      latestItemId: a.id,
      latestReceivedAt: NOW,
      messageCount: 0,
      unreadCount: 0,
      flaggedCount: 0,
      modseq: last.modseq,
    });
    expect(await store.conversations.get(user.id, archive.id, conversationId)).toMatchObject({ messageCount: 2, latestItemId: b.id, modseq: last.modseq });
    expect(await store.conversations.count(user.id, inbox.id)).toBe(0);
  });

  test('delete: the tombstone carries that delete\'s modseq; a message arriving again revives the row', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const conversationId = unique('conv');
    const a = await store.items.create(email(user.id, inbox.id, { conversationId, receivedAt: NOW, from: person('Ann') }), NOW);
    const b = await store.items.create(email(user.id, inbox.id, { conversationId, receivedAt: NOW + 1, from: person('Bob') }), NOW);
    await store.items.create(email(user.id, inbox.id, { receivedAt: NOW - DAY }), NOW); // another conversation

    await store.items.delete(user.id, b.id, NOW);
    const afterFirst = await highestModseq(store, user.id);
    expect(await store.conversations.get(user.id, inbox.id, conversationId)).toMatchObject({
      latestItemId: a.id,
      messageCount: 1,
      participants: [person('Ann')],
      modseq: afterFirst,
    });
    expect(afterFirst).toBeGreaterThan(b.modseq);

    await store.items.delete(user.id, a.id, NOW);
    const afterLast = await highestModseq(store, user.id);
    expect(afterLast).toBeGreaterThan(afterFirst);
    expect(await store.conversations.get(user.id, inbox.id, conversationId)).toBeUndefined();
    expect(await row(store, user.id, inbox.id, conversationId)).toMatchObject({
      latestItemId: a.id,
      latestReceivedAt: NOW,
      messageCount: 0,
      modseq: afterLast,
    });
    // The history after the first delete names the tombstone; the window reads do not.
    expect((await store.conversations.changedSince(user.id, inbox.id, afterFirst, 10)).map((c) => [c.conversationId, c.messageCount])).toEqual([
      [conversationId, 0],
    ]);
    expect(await store.conversations.count(user.id, inbox.id)).toBe(1);
    expect((await store.conversations.range(user.id, inbox.id, LOWEST, HIGHEST, 'desc', 10)).map((c) => c.conversationId)).not.toContain(conversationId);

    const back = await store.items.create(email(user.id, inbox.id, { conversationId, receivedAt: NOW - MINUTE, from: person('Cy') }), NOW);
    expect(await store.conversations.get(user.id, inbox.id, conversationId)).toMatchObject({
      latestItemId: back.id,
      latestReceivedAt: NOW - MINUTE,
      messageCount: 1,
      unreadCount: 1,
      participants: [person('Cy')],
      modseq: back.modseq,
    });
    expect(await store.conversations.count(user.id, inbox.id)).toBe(2);
  });

  test('a folder\'s deletion takes its conversations with it; the same conversation elsewhere stays', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const parent = await store.folders.create(user.id, { displayName: unique('parent'), parentId: null }, NOW);
    const child = await store.folders.create(user.id, { displayName: unique('child'), parentId: parent.id }, NOW);
    const shared = unique('conv');
    for (const folderId of [parent.id, child.id, inbox.id]) {
      await store.items.create(email(user.id, folderId, { conversationId: shared }), NOW);
      await store.items.create(email(user.id, folderId, { conversationId: unique('conv') }), NOW);
    }
    const inboxRow = await store.conversations.get(user.id, inbox.id, shared);
    expect(await store.conversations.count(user.id, parent.id)).toBe(2);

    await store.folders.delete(user.id, parent.id, NOW);
    for (const folderId of [parent.id, child.id]) {
      expect(await store.conversations.changedSince(user.id, folderId, 0, -1)).toEqual([]);
      expect(await store.conversations.count(user.id, folderId)).toBe(0);
      expect(await store.conversations.boundary(user.id, folderId, 1)).toBeUndefined();
    }
    expect(await store.conversations.get(user.id, inbox.id, shared)).toEqual(inboxRow);
  });

  test('a message without a conversation id is a conversation of its own, named by its item id', async () => {
    const { store } = t();
    const { user, inbox, archive } = await newMailbox(store);
    const lone = await store.items.create(email(user.id, inbox.id, { conversationId: null, from: person('Lone') }), NOW);
    expect(await store.conversations.get(user.id, inbox.id, lone.id)).toMatchObject({
      conversationId: lone.id,
      latestItemId: lone.id,
      messageCount: 1,
      participants: [person('Lone')],
      modseq: lone.modseq,
    });
    expect(await store.conversations.itemIds(user.id, lone.id, 10)).toEqual([lone.id]);
    expect(await store.conversations.itemIds(user.id, lone.id, 10, inbox.id)).toEqual([lone.id]);
    const moved = await store.items.move(user.id, lone.id, archive.id, NOW);
    expect(await row(store, user.id, inbox.id, lone.id)).toMatchObject({ messageCount: 0, modseq: moved.modseq });
    expect(await store.conversations.get(user.id, archive.id, lone.id)).toMatchObject({ messageCount: 1, modseq: moved.modseq });
    expect(await store.conversations.itemIds(user.id, lone.id, 10, inbox.id)).toEqual([]);
    expect(await store.conversations.itemIds(user.id, lone.id, 10, archive.id)).toEqual([lone.id]);
  });

  test('boundary, range and count read the live conversations newest first, ties broken by conversation id', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    // Five conversations: three share their latest time (ordered by id), one is older, one newer; plus a tombstone.
    const ids = ['c-a', 'c-b', 'c-c', 'c-old', 'c-new'].map((p) => `${p}-${unique('x')}`);
    const times = [NOW, NOW, NOW, NOW - DAY, NOW + DAY];
    for (const [i, conversationId] of ids.entries()) {
      await store.items.create(email(user.id, inbox.id, { conversationId, receivedAt: times[i]! }), NOW);
      // An older message in the conversation never moves its key.
      await store.items.create(email(user.id, inbox.id, { conversationId, receivedAt: times[i]! - 5 * DAY }), NOW);
    }
    const gone = await store.items.create(email(user.id, inbox.id, { conversationId: unique('c-gone'), receivedAt: NOW + 2 * DAY }), NOW);
    await store.items.delete(user.id, gone.id, NOW);

    const newestFirst = [ids[4]!, ...[ids[0]!, ids[1]!, ids[2]!].sort().reverse(), ids[3]!];
    expect(await store.conversations.count(user.id, inbox.id)).toBe(5);
    const all = await store.conversations.range(user.id, inbox.id, LOWEST, HIGHEST, 'desc', 100);
    expect(all.map((c) => c.conversationId)).toEqual(newestFirst);
    expect(all.every((c) => c.messageCount === 2)).toBe(true);
    expect((await store.conversations.range(user.id, inbox.id, LOWEST, HIGHEST, 'asc', 100)).map((c) => c.conversationId)).toEqual(
      [...newestFirst].reverse(),
    );
    expect((await store.conversations.range(user.id, inbox.id, LOWEST, HIGHEST, 'desc', 2)).map((c) => c.conversationId)).toEqual(newestFirst.slice(0, 2));

    for (let size = 1; size <= 5; size++) {
      expect(await store.conversations.boundary(user.id, inbox.id, size)).toEqual(keyOf(all[size - 1]!));
    }
    expect(await store.conversations.boundary(user.id, inbox.id, 6)).toBeUndefined();

    // from ≤ key < to: the boundary of 4 up to (excluding) the boundary of 2.
    const from = (await store.conversations.boundary(user.id, inbox.id, 4))!;
    const to = (await store.conversations.boundary(user.id, inbox.id, 2))!;
    expect((await store.conversations.range(user.id, inbox.id, from, to, 'asc', 10)).map((c) => c.conversationId)).toEqual([newestFirst[3], newestFirst[2]]);
    expect((await store.conversations.range(user.id, inbox.id, from, to, 'desc', 10)).map((c) => c.conversationId)).toEqual([newestFirst[2], newestFirst[3]]);
    expect(await store.conversations.range(user.id, inbox.id, to, to, 'desc', 10)).toEqual([]);
  });

  test('changedSince lists the folder\'s rows after a modseq in modseq order, tombstones too, up to the limit', async () => {
    const { store } = t();
    const { user, inbox, archive } = await newMailbox(store);
    const start = await highestModseq(store, user.id);
    const [x, y, z] = [unique('x'), unique('y'), unique('z')];
    const x1 = await store.items.create(email(user.id, inbox.id, { conversationId: x }), NOW);
    const y1 = await store.items.create(email(user.id, inbox.id, { conversationId: y }), NOW);
    await store.items.create(email(user.id, inbox.id, { conversationId: z }), NOW);
    await store.items.update(user.id, x1.id, { isRead: true }, NOW); // x is now the most recently changed
    await store.items.create(email(user.id, archive.id, { conversationId: y }), NOW); // another folder: not listed here
    await store.items.delete(user.id, y1.id, NOW); // y: a tombstone

    const changes = await store.conversations.changedSince(user.id, inbox.id, start, 100);
    expect(changes.map((c) => [c.conversationId, c.messageCount])).toEqual([
      [z, 1],
      [x, 1],
      [y, 0],
    ]);
    const modseqs = changes.map((c) => c.modseq);
    expect(modseqs).toEqual([...modseqs].sort((a, b) => a - b));
    expect(new Set(modseqs).size).toBe(3);
    expect(modseqs[2]).toBe(await highestModseq(store, user.id));
    expect((await store.conversations.changedSince(user.id, inbox.id, start, 2)).map((c) => c.conversationId)).toEqual([z, x]);
    expect((await store.conversations.changedSince(user.id, inbox.id, modseqs[0]!, 100)).map((c) => c.conversationId)).toEqual([x, y]);
    expect(await store.conversations.changedSince(user.id, inbox.id, modseqs[2]!, 100)).toEqual([]);
  });

  test('itemIds: the user\'s messages of the conversation, newest first, in one folder when named, up to the limit', async () => {
    const { store } = t();
    const { user, inbox, archive } = await newMailbox(store);
    const other = await newMailbox(store);
    const conversationId = unique('conv');
    const a = await store.items.create(email(user.id, inbox.id, { conversationId, receivedAt: NOW }), NOW);
    const b = await store.items.create(email(user.id, archive.id, { conversationId, receivedAt: NOW + 2 }), NOW);
    const c = await store.items.create(email(user.id, inbox.id, { conversationId, receivedAt: NOW + 1 }), NOW);
    await store.items.create(email(user.id, inbox.id, { conversationId: unique('conv'), receivedAt: NOW + 3 }), NOW);
    await store.items.create(email(other.user.id, other.inbox.id, { conversationId, receivedAt: NOW + 4 }), NOW);
    expect(await store.conversations.itemIds(user.id, conversationId, 10)).toEqual([b.id, c.id, a.id]);
    expect(await store.conversations.itemIds(user.id, conversationId, 2)).toEqual([b.id, c.id]);
    expect(await store.conversations.itemIds(user.id, conversationId, 10, inbox.id)).toEqual([c.id, a.id]);
    expect(await store.conversations.itemIds(user.id, conversationId, 10, archive.id)).toEqual([b.id]);
    // Another user's conversation of the same id, or a folder of theirs, answers none of this user's messages.
    expect(await store.conversations.itemIds(other.user.id, conversationId, 10, inbox.id)).toEqual([]);
    expect(await store.conversations.itemIds(user.id, unique('none'), 10)).toEqual([]);
  });

  test('get answers the user\'s own live rows only', async () => {
    const { store } = t();
    const alice = await newMailbox(store);
    const bob = await newMailbox(store);
    const conversationId = unique('conv');
    await store.items.create(email(alice.user.id, alice.inbox.id, { conversationId }), NOW);
    expect(await store.conversations.get(alice.user.id, alice.inbox.id, conversationId)).toBeDefined();
    expect(await store.conversations.get(bob.user.id, alice.inbox.id, conversationId)).toBeUndefined();
    expect(await store.conversations.get(alice.user.id, alice.archive.id, conversationId)).toBeUndefined();
  });

  test('ignore, isIgnored and unignore, per user', async () => {
    const { store } = t();
    const alice = await newMailbox(store);
    const bob = await newMailbox(store);
    const conversationId = unique('conv');
    expect(await store.conversations.isIgnored(alice.user.id, conversationId)).toBe(false);
    await store.conversations.ignore(alice.user.id, conversationId, NOW);
    await store.conversations.ignore(alice.user.id, conversationId, NOW + 1); // twice is once
    expect(await store.conversations.isIgnored(alice.user.id, conversationId)).toBe(true);
    expect(await store.conversations.isIgnored(bob.user.id, conversationId)).toBe(false);
    expect(await store.conversations.unignore(bob.user.id, conversationId)).toBe(false);
    expect(await store.conversations.unignore(alice.user.id, conversationId)).toBe(true);
    expect(await store.conversations.unignore(alice.user.id, conversationId)).toBe(false);
    expect(await store.conversations.isIgnored(alice.user.id, conversationId)).toBe(false);
  });

  test('reads run as steps of a unit of work too', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const conversationId = unique('conv');
    const item = await store.items.create(email(user.id, inbox.id, { conversationId }), NOW);
    const seen = await store.run(function* (tx) {
      yield* tx.conversations.ignore(user.id, conversationId, NOW);
      return {
        row: yield* tx.conversations.get(user.id, inbox.id, conversationId),
        count: yield* tx.conversations.count(user.id, inbox.id),
        ids: yield* tx.conversations.itemIds(user.id, conversationId, 5, inbox.id),
        ignored: yield* tx.conversations.isIgnored(user.id, conversationId),
      };
    });
    expect(seen).toEqual({ row: expect.objectContaining({ latestItemId: item.id }), count: 1, ids: [item.id], ignored: true });
  });

  test('purgeTombstones deletes the user\'s tombstones below a modseq; the history purge drops those behind its horizon', async () => {
    const { store } = t();
    // Its own times, long before every other test's: the history purge below reaches this mailbox only.
    const T0 = NOW - 1000 * DAY;
    const { user, inbox } = await newMailbox(store, {}, T0);
    const [early, late, live] = [unique('early'), unique('late'), unique('live')];
    const e = await store.items.create(email(user.id, inbox.id, { conversationId: early }), T0);
    const l = await store.items.create(email(user.id, inbox.id, { conversationId: late }), T0);
    await store.items.create(email(user.id, inbox.id, { conversationId: live }), T0);
    await store.items.delete(user.id, e.id, T0);
    const earlyModseq = await highestModseq(store, user.id);
    await store.items.delete(user.id, l.id, T0 + 2 * DAY);
    const other = await newMailbox(store, {}, T0);
    const o = await store.items.create(email(other.user.id, other.inbox.id, { conversationId: early }), T0);
    await store.items.delete(other.user.id, o.id, T0);

    expect(await store.conversations.purgeTombstones(user.id, earlyModseq)).toBe(0); // below, not at
    expect(await store.conversations.purgeTombstones(user.id, earlyModseq + 1)).toBe(1);
    expect(await row(store, user.id, inbox.id, early)).toBeUndefined();
    expect(await row(store, user.id, inbox.id, late)).toMatchObject({ messageCount: 0 });
    expect(await row(store, other.user.id, other.inbox.id, early)).toMatchObject({ messageCount: 0 });

    // The history up to T0 + 1 day goes: the mailbox's horizon passes every change but the late delete.
    await store.mailboxes.purgeHistory(T0 + DAY);
    const horizon = (await store.mailboxes.get(user.id))!.purgedModseq;
    expect(horizon).toBeGreaterThanOrEqual(earlyModseq);
    expect((await row(store, user.id, inbox.id, late))!.modseq).toBeGreaterThan(horizon);
    expect(await row(store, user.id, inbox.id, late)).toMatchObject({ messageCount: 0 });
    expect(await row(store, other.user.id, other.inbox.id, early)).toBeUndefined();
    expect(await store.conversations.get(user.id, inbox.id, live)).toMatchObject({ messageCount: 1 });
    await store.mailboxes.purgeHistory(T0 + 3 * DAY);
    expect(await row(store, user.id, inbox.id, late)).toBeUndefined();
    expect(await store.conversations.get(user.id, inbox.id, live)).toMatchObject({ messageCount: 1 });
  });
});

/**
 * The backfill: a store migrated up to just before the conversations migration, with mail written by raw SQL as the
 * older code wrote it, then opened by the current code (which applies the rest): one row per (folder, conversation),
 * stamped with the newest modseq of its messages, and kept current from then on.
 */
interface OldStore {
  /** Inserts the fixture rows (tenant, user, mailbox, two folders, the items) as the schema before the migration holds them. */
  insert(rows: OldRows): Promise<void>;
  /** Opens the current store over the data (applying the remaining migrations). */
  open(): Promise<Store>;
  close(): Promise<void>;
}

interface OldItem {
  id: string;
  folderId: string;
  type: 'email' | 'event';
  receivedAt: number;
  modseq: number;
  isRead: boolean;
  isFlagged: boolean;
  importance: 'low' | 'normal' | 'high';
  from: EmailAddress | null;
  conversationId: string | null;
  hasAttachments: boolean;
}

interface OldRows {
  userId: string;
  folders: string[];
  highestModseq: number;
  items: OldItem[];
}

/** The migrations of `dir` that come before `first`, copied to a directory of their own. */
function migrationsBefore(dir: string, first: string): string {
  const only = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-conversations-migrations-'));
  for (const f of fs.readdirSync(dir).filter((f) => /^\d{4}_.*\.sql$/.test(f) && f < first)) fs.copyFileSync(path.join(dir, f), path.join(only, f));
  return only;
}

async function oldStore(backend: (typeof STORE_BACKENDS)[number]): Promise<OldStore> {
  const opened: Store[] = [];
  if (backend === 'sqlite') {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-conversations-backfill-'));
    const file = path.join(dir, 'pigeon.db');
    const only = migrationsBefore(SQLITE_MIGRATIONS_DIR, '0012_conversations.sql');
    const db = new Database(file);
    migrateSqlite(db, only);
    return {
      async insert(r) {
        db.prepare(`INSERT INTO tenants (id, name, created_at) VALUES ('t', 'T', 0)`).run();
        db.prepare(`INSERT INTO users (id, tenant_id, username, email, display_name, role, created_at, updated_at)
          VALUES (?, 't', ?, 'old@example.test', 'Old', 'user', 0, 0)`).run(r.userId, unique('old'));
        db.prepare(`INSERT INTO mailboxes (user_id, highest_modseq, epoch, created_at) VALUES (?, ?, 'e', 0)`).run(r.userId, r.highestModseq);
        for (const [i, f] of r.folders.entries()) {
          db.prepare(`INSERT INTO folders (id, user_id, parent_id, display_name, kind, modseq, created_modseq, created_at)
            VALUES (?, ?, NULL, ?, ?, 1, 1, 0)`).run(f, r.userId, `Folder ${i}`, i === 0 ? 'inbox' : 'mail');
        }
        for (const i of r.items) {
          db.prepare(`INSERT INTO items (id, user_id, folder_id, type, received_at, modseq, placed_modseq, change_key, is_read,
              is_flagged, importance, from_json, conversation_id, has_attachments, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)`).run(
            i.id, r.userId, i.folderId, i.type, i.receivedAt, i.modseq, i.modseq, String(i.modseq), i.isRead ? 1 : 0,
            i.isFlagged ? 1 : 0, i.importance, i.from ? JSON.stringify(i.from) : null, i.conversationId, i.hasAttachments ? 1 : 0,
          );
        }
      },
      async open() {
        db.close();
        const store = openSqliteStore(file);
        opened.push(store);
        return store;
      },
      async close() {
        if (db.open) db.close();
        for (const s of opened) await s.close();
        fs.rmSync(dir, { recursive: true, force: true });
        fs.rmSync(only, { recursive: true, force: true });
      },
    };
  }
  const database = await freshDatabase('pigeon_conversations_backfill');
  const only = migrationsBefore(POSTGRES_MIGRATIONS_DIR, '0014_conversations.sql');
  const client = new Client({ connectionString: database.url });
  await client.connect();
  await migratePostgres(client, only);
  return {
    async insert(r) {
      await client.query(`INSERT INTO tenants (id, name, created_at) VALUES ('t', 'T', 0)`);
      await client.query(
        `INSERT INTO users (tenant_id, id, username, email, display_name, role, created_at, updated_at)
         VALUES ('t', $1, $2, 'old@example.test', 'Old', 'user', 0, 0)`,
        [r.userId, unique('old')],
      );
      await client.query(`INSERT INTO mailboxes (user_id, highest_modseq, epoch, created_at) VALUES ($1, $2, 'e', 0)`, [r.userId, r.highestModseq]);
      for (const [i, f] of r.folders.entries()) {
        await client.query(
          `INSERT INTO folders (user_id, id, parent_id, display_name, kind, modseq, created_modseq, created_at)
           VALUES ($1, $2, NULL, $3, $4, 1, 1, 0)`,
          [r.userId, f, `Folder ${i}`, i === 0 ? 'inbox' : 'mail'],
        );
      }
      for (const i of r.items) {
        await client.query(
          `INSERT INTO items (user_id, id, folder_id, type, received_at, modseq, placed_modseq, change_key, is_read,
             is_flagged, importance, from_json, conversation_id, has_attachments, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10, $11, $12, $13, 0)`,
          [r.userId, i.id, i.folderId, i.type, i.receivedAt, i.modseq, String(i.modseq), i.isRead, i.isFlagged, i.importance,
            i.from ? JSON.stringify(i.from) : null, i.conversationId, i.hasAttachments],
        );
      }
    },
    async open() {
      const store = await openPostgresStore(database.url);
      opened.push(store);
      return store;
    },
    async close() {
      await client.end().catch(() => undefined);
      for (const s of opened) await s.close();
      await database.drop();
      fs.rmSync(only, { recursive: true, force: true });
    },
  };
}

describe.each(STORE_BACKENDS)('%s store: the conversations migration fills in the mail stored before it', (backend) => {
  let old: OldStore | undefined;
  afterAll(async () => {
    await old?.close();
  });

  test('one row per (folder, conversation), stamped with the newest modseq of its messages, kept current after', async () => {
    old = await oldStore(backend);
    const userId = unique('u');
    const [inbox, archive] = [unique('f-inbox'), unique('f-archive')];
    const item = (id: string, fields: Partial<OldItem>): OldItem => ({
      id,
      folderId: inbox,
      type: 'email',
      receivedAt: NOW,
      modseq: 1,
      isRead: false,
      isFlagged: false,
      importance: 'normal',
      from: null,
      conversationId: 'conv-1',
      hasAttachments: false,
      ...fields,
    });
    await old.insert({
      userId,
      folders: [inbox, archive],
      highestModseq: 20,
      items: [
        // conv-1 in the inbox: three messages (two at the same time: the greater id is the latest), one sender twice.
        item('i-1', { receivedAt: NOW, modseq: 5, from: person('Ann'), isRead: true, importance: 'low' }),
        item('i-3', { receivedAt: NOW + 10, modseq: 3, from: person('Bob'), isFlagged: true, hasAttachments: true, importance: 'low' }),
        item('i-2', { receivedAt: NOW + 10, modseq: 9, from: person('ANN', 'ANN@example.test'), importance: 'low' }),
        // conv-1 in the archive: its own row.
        item('i-4', { folderId: archive, receivedAt: NOW - DAY, modseq: 7, importance: 'high' }),
        // No conversation id: a conversation named by the item.
        item('i-5', { conversationId: null, receivedAt: NOW - 1, modseq: 11, from: person('Solo') }),
        // An event never counts.
        item('e-1', { type: 'event', conversationId: 'conv-1', receivedAt: NOW + DAY, modseq: 12, isRead: true }),
      ],
    });
    const store = await old.open();

    expect(await store.conversations.changedSince(userId, inbox, 0, -1)).toEqual([
      {
        userId,
        folderId: inbox,
        conversationId: 'conv-1',
        latestReceivedAt: NOW + 10,
        latestItemId: 'i-3',
        messageCount: 3,
        unreadCount: 2,
        flaggedCount: 1,
        hasAttachments: true,
        importance: 'low',
        participants: [person('Bob'), person('ANN', 'ANN@example.test')],
        modseq: 9,
      },
      {
        userId,
        folderId: inbox,
        conversationId: 'i-5',
        latestReceivedAt: NOW - 1,
        latestItemId: 'i-5',
        messageCount: 1,
        unreadCount: 1,
        flaggedCount: 0,
        hasAttachments: false,
        importance: 'normal',
        participants: [person('Solo')],
        modseq: 11,
      },
    ] satisfies ConversationRecord[]);
    expect(await store.conversations.changedSince(userId, archive, 0, -1)).toEqual([
      expect.objectContaining({ conversationId: 'conv-1', latestItemId: 'i-4', messageCount: 1, importance: 'high', participants: [], modseq: 7 }),
    ]);

    // The triggers run on the migrated data: a new message joins conv-1, a deletion updates it.
    const added = await store.items.create(email(userId, inbox, { conversationId: 'conv-1', receivedAt: NOW + 20, from: person('Cy') }), NOW);
    expect(await store.conversations.get(userId, inbox, 'conv-1')).toMatchObject({
      latestItemId: added.id,
      messageCount: 4,
      participants: [person('Cy'), person('Bob'), person('ANN', 'ANN@example.test')],
      modseq: 21,
    });
    await store.items.delete(userId, 'i-3', NOW);
    expect(await store.conversations.get(userId, inbox, 'conv-1')).toMatchObject({ messageCount: 3, flaggedCount: 0, hasAttachments: false, modseq: 22 });
  });
});
