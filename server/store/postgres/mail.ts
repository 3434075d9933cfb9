/**
 * Mailboxes, folders and items in PostgreSQL, and the reads incremental sync is made of (the SQLite store's mail.ts
 * is the specification: the same rows, the same modseqs, the same change log).
 *
 * The invariant every write here keeps: a change takes the mailbox's next modseq, logs one `changes` row with it, and
 * moves the affected folders' counters (`modseq` when counts or names change, `content_modseq` for any change to
 * their items), all in the caller's transaction.
 *
 * Modseqs are allocated by `UPDATE mailboxes SET highest_modseq = highest_modseq + 1 … RETURNING highest_modseq`
 * inside the transaction. The update locks the mailbox's row until commit or rollback, so a mailbox's writers run one
 * after another: the second waits at its update and then reads the first one's committed value (READ COMMITTED
 * re-reads a row it waited for). Modseqs of a mailbox therefore commit in increasing order, and a reader never sees
 * modseq N+1 while N is still uncommitted — there is no gap a device's sync token could step over and never see
 * filled. A write that reads before it writes (an item's current state, a folder tree) takes the same lock first
 * (tx.ts, `lockMailbox`), as SQLite's BEGIN IMMEDIATE makes it the only writer before its first read.
 */
import crypto from 'node:crypto';
import { newId } from '../../ids';
import {
  WELL_KNOWN_FOLDERS,
  type AttachmentRecord,
  type Folder,
  type FolderChange,
  type FolderKind,
  type Item,
  type ItemContent,
  type ItemPatch,
  type Mailbox,
  type NewAttachment,
  type NewItem,
  type TxStore,
} from '../types';
import { putBlob } from './content';
import { attachmentSummaries } from '../rows';
import { searchDocument } from './search';
import { json, limitParam, lockMailbox, readLock, rows, rowCount, type Row, type Tx } from './tx';

/** Every item column but the bodies: sync pages never need them, and they are most of a row's bytes. */
const ITEM_COLUMNS = `id, user_id, folder_id, type, received_at, modseq, placed_modseq, change_key, is_read, is_flagged,
  importance, categories, inference, subject, from_json, to_json, cc_json, reply_to_json, sent_at, preview,
  has_attachments, body_size, conversation_id, internet_message_id, mime_blob_id, attachments_json, data_json, created_at`;

/** At most `max` characters, never splitting a surrogate pair. */
function truncateChars(text: string, max: number): string {
  if (text.length <= max) return text;
  const cut = text.slice(0, max);
  return /[\uD800-\uDBFF]$/.test(cut) ? cut.slice(0, -1) : cut;
}

/** The sort key an item's tombstone (deleted, moved out) is logged with: SQLite's mail.ts says why. */
const tombstoneKey = (item: Pick<Item, 'type' | 'receivedAt'>): number => (item.type === 'email' ? item.receivedAt : Number.MAX_SAFE_INTEGER);

function toFolder(r: Row): Folder {
  return {
    id: r.id as string,
    userId: r.user_id as string,
    parentId: (r.parent_id as string | null) ?? null,
    displayName: r.display_name as string,
    kind: r.kind as FolderKind,
    totalCount: r.total_count as number,
    unreadCount: r.unread_count as number,
    modseq: r.modseq as number,
    createdModseq: r.created_modseq as number,
    contentModseq: r.content_modseq as number,
    createdAt: r.created_at as number,
  };
}

/** JSONB gives objects back with its own key order: attachment summaries get SQLite's (the order they were written). */
const toAttachmentSummary = (a: Record<string, unknown>): Item['attachments'][number] => ({
  id: a.id as string,
  name: a.name as string,
  contentType: a.contentType as string,
  size: a.size as number,
  isInline: a.isInline as boolean,
  contentId: (a.contentId as string | null) ?? null,
});


function toItem(r: Row): Item {
  return {
    id: r.id as string,
    userId: r.user_id as string,
    folderId: r.folder_id as string,
    type: r.type as Item['type'],
    receivedAt: r.received_at as number,
    modseq: r.modseq as number,
    placedModseq: r.placed_modseq as number,
    changeKey: r.change_key as string,
    isRead: r.is_read as boolean,
    isFlagged: r.is_flagged as boolean,
    importance: r.importance as Item['importance'],
    categories: r.categories as string[],
    inferenceClassification: r.inference as Item['inferenceClassification'],
    subject: r.subject as string,
    from: (r.from_json as Item['from']) ?? null,
    to: r.to_json as Item['to'],
    cc: r.cc_json as Item['cc'],
    replyTo: r.reply_to_json as Item['replyTo'],
    sentAt: (r.sent_at as number | null) ?? null,
    preview: r.preview as string,
    hasAttachments: r.has_attachments as boolean,
    bodySize: r.body_size as number,
    conversationId: (r.conversation_id as string | null) ?? null,
    internetMessageId: (r.internet_message_id as string | null) ?? null,
    mimeBlobId: (r.mime_blob_id as string | null) ?? null,
    attachments: (r.attachments_json as Array<Record<string, unknown>>).map(toAttachmentSummary),
    data: r.data_json as Record<string, unknown>,
    createdAt: r.created_at as number,
  };
}

const toMailbox = (r: Row): Mailbox => ({
  userId: r.user_id as string,
  highestModseq: r.highest_modseq as number,
  purgedModseq: r.purged_modseq as number,
  epoch: r.epoch as string,
});

/** A folder counter move: the folder, and how its total and unread counts change. */
type Touch = [folderId: string, dTotal: number, dUnread: number];

export function mailSteps(tx: Tx): Pick<TxStore, 'mailboxes' | 'folders' | 'items' | 'sync' | 'idempotency'> {
  /** Takes the mailbox's next `count` modseqs (see the module comment); answers the last. Locks the mailbox. */
  const nextModseqs = function* (userId: string, count: number, noMailbox = () => new Error(`no mailbox for user ${userId}`)) {
    const [r] = yield* rows<{ highest_modseq: number }>(
      tx,
      'UPDATE mailboxes SET highest_modseq = highest_modseq + $2 WHERE user_id = $1 RETURNING highest_modseq',
      [userId, count],
    );
    if (!r) throw noMailbox();
    tx.locked.add(userId);
    return r.highest_modseq;
  };
  const nextModseq = (userId: string) => nextModseqs(userId, 1);

  /** Logs a folder's change (created, updated, deleted) and announces it as a hierarchy change. */
  const logFolder = function* (userId: string, modseq: number, at: number, folderId: string, op: 'created' | 'updated' | 'deleted', parentId: string | null) {
    yield* rows(
      tx,
      `INSERT INTO changes (user_id, modseq, at, object_type, object_id, op, folder_id) VALUES ($1, $2, $3, 'folder', $4, $5, $6)`,
      [userId, modseq, at, folderId, op, parentId],
    );
    tx.record(userId, modseq, [folderId], true);
  };

  /**
   * Logs an item's change and moves its folders' counters, in one statement. Counts are part of the hierarchy (a
   * folder whose counts move takes the modseq); contents are not (only `content_modseq` moves).
   */
  const logItem = function* (
    userId: string,
    modseq: number,
    at: number,
    itemId: string,
    op: 'created' | 'updated' | 'moved' | 'deleted',
    folderId: string,
    fromFolderId: string | null,
    receivedAt: number,
    touches: Touch[],
  ) {
    yield* rows(
      tx,
      `WITH logged AS (
         INSERT INTO changes (user_id, modseq, at, object_type, object_id, op, folder_id, from_folder_id, received_at)
         VALUES ($1, $2, $3, 'item', $4, $5, $6, $7, $8))
       UPDATE folders f SET total_count = f.total_count + t.d_total, unread_count = f.unread_count + t.d_unread,
         modseq = CASE WHEN t.d_total <> 0 OR t.d_unread <> 0 THEN $2 ELSE f.modseq END, content_modseq = $2
       FROM unnest($9::text[], $10::int[], $11::int[]) AS t(id, d_total, d_unread)
       WHERE f.user_id = $1 AND f.id = t.id`,
      [userId, modseq, at, itemId, op, folderId, fromFolderId, receivedAt, touches.map((t) => t[0]), touches.map((t) => t[1]), touches.map((t) => t[2])],
    );
    tx.record(userId, modseq, [folderId, fromFolderId], false);
  };

  /** Stores the attachments' bytes and rows for item `itemId`, as `summaries` (attachmentSummaries) names them. */
  const insertAttachments = function* (userId: string, itemId: string, attachments: NewAttachment[], summaries: Item['attachments'], now: number) {
    if (attachments.length === 0) return;
    const blobIds: string[] = [];
    for (const a of attachments) blobIds.push(yield* putBlob(tx, userId, a.content, now));
    yield* rows(
      tx,
      `INSERT INTO attachments (user_id, item_id, id, blob_id, name, content_type, size, is_inline, content_id, position)
       SELECT $1, $2, a.id, a.blob_id, a.name, a.content_type, a.size, a.is_inline, a.content_id, a.position
       FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::boolean[], $9::text[], $10::int[])
         AS a(id, blob_id, name, content_type, size, is_inline, content_id, position)`,
      [
        userId,
        itemId,
        summaries.map((s) => s.id),
        blobIds,
        attachments.map((a) => a.name),
        attachments.map((a) => a.contentType),
        attachments.map((a) => a.content.length),
        attachments.map((a) => a.isInline),
        attachments.map((a) => a.contentId),
        attachments.map((_a, i) => i),
      ],
    );
  };

  /** The item as stored, without its bodies. */
  const itemRow = function* (userId: string, id: string) {
    const [r] = yield* rows(tx, `SELECT ${ITEM_COLUMNS} FROM items WHERE user_id = $1 AND id = $2`, [userId, id]);
    return r;
  };

  const mailboxes: TxStore['mailboxes'] = {
    *create(userId, now) {
      // SQLite's foreign key refuses a mailbox for no user; here the user row is another table's (README.md).
      if ((yield* rows(tx, 'SELECT 1 FROM users WHERE id = $1', [userId])).length === 0) {
        throw new Error(`no user ${userId} to create a mailbox for`);
      }
      // A new mailbox's modseqs are 1…n, one per well-known folder, as taking them one by one would give.
      const epoch = crypto.randomBytes(8).toString('hex');
      const ids = WELL_KNOWN_FOLDERS.map(() => newId());
      const modseqs = WELL_KNOWN_FOLDERS.map((_f, i) => i + 1);
      const [r] = yield* rows(
        tx,
        `INSERT INTO mailboxes (user_id, highest_modseq, epoch, created_at) VALUES ($1, $2, $3, $4)
         RETURNING user_id, highest_modseq, purged_modseq, epoch`,
        [userId, modseqs.length, epoch, now],
      );
      tx.locked.add(userId); // a row this transaction inserted is its own until commit
      yield* rows(
        tx,
        `WITH made AS (
           INSERT INTO folders (user_id, id, parent_id, display_name, kind, modseq, created_modseq, created_at)
           SELECT $1, f.id, NULL, f.name, f.kind, f.modseq, f.modseq, $2
           FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[]) AS f(id, name, kind, modseq))
         INSERT INTO changes (user_id, modseq, at, object_type, object_id, op, folder_id)
         SELECT $1, modseq, $2, 'folder', id, 'created', NULL FROM unnest($3::text[], $6::bigint[]) AS c(id, modseq)`,
        [userId, now, ids, WELL_KNOWN_FOLDERS.map((f) => f.displayName), WELL_KNOWN_FOLDERS.map((f) => f.kind), modseqs],
      );
      ids.forEach((id, i) => tx.record(userId, modseqs[i]!, [id], true));
      return toMailbox(r!);
    },
    *get(userId) {
      // In a unit of work the read is the lock (tx.ts): one statement for both.
      const locking = tx.unit && !tx.locked.has(userId);
      const [r] = yield* rows(
        tx,
        `SELECT user_id, highest_modseq, purged_modseq, epoch FROM mailboxes WHERE user_id = $1${locking ? ' FOR NO KEY UPDATE' : ''}`,
        [userId],
      );
      if (locking) tx.locked.add(userId);
      return r && toMailbox(r);
    },
    *resetEpoch(userId) {
      const [r] = yield* rows(
        tx,
        'UPDATE mailboxes SET epoch = $1 WHERE user_id = $2 RETURNING user_id, highest_modseq, purged_modseq, epoch',
        [crypto.randomBytes(8).toString('hex'), userId],
      );
      if (r) tx.locked.add(userId);
      return (r && toMailbox(r)) as Mailbox;
    },
    *purgeHistory(before) {
      // Remember, per mailbox, the newest modseq that goes: tokens at or below it can no longer be served. The
      // delete then removes only rows at or below it, so nothing logged meanwhile goes unremembered.
      yield* rows(
        tx,
        `UPDATE mailboxes m SET purged_modseq = greatest(m.purged_modseq, c.newest)
         FROM (SELECT user_id, max(modseq) AS newest FROM changes WHERE at < $1 GROUP BY user_id) AS c
         WHERE m.user_id = c.user_id`,
        [before],
      );
      return yield* rowCount(
        tx,
        `DELETE FROM changes c USING mailboxes m WHERE c.at < $1 AND m.user_id = c.user_id AND c.modseq <= m.purged_modseq`,
        [before],
      );
    },
  };

  const folders: TxStore['folders'] = {
    *listByUser(userId) {
      yield* readLock(tx, userId);
      return (yield* rows(tx, 'SELECT * FROM folders WHERE user_id = $1 ORDER BY created_modseq, id', [userId])).map(toFolder);
    },
    *byId(userId, id) {
      yield* readLock(tx, userId);
      // The folder row with its mailbox and the hierarchy state (as `hierarchyState` spells it) in one statement: a
      // no-change item-sync poll reads nothing else (server/sync/itemSync.ts).
      const [r] = yield* rows(
        tx,
        `SELECT f.*, m.highest_modseq AS mailbox_highest_modseq, m.purged_modseq AS mailbox_purged_modseq,
           m.epoch AS mailbox_epoch,
           (SELECT coalesce(max(h.modseq), 0) || '.' || count(*) FROM folders h WHERE h.user_id = $1) AS hierarchy_state
         FROM folders f LEFT JOIN mailboxes m ON m.user_id = f.user_id
         WHERE f.user_id = $1 AND f.id = $2`,
        [userId, id],
      );
      if (!r) return undefined;
      const folder = toFolder(r);
      if (r.mailbox_epoch !== null) {
        folder.mailboxState = {
          mailbox: { userId, highestModseq: r.mailbox_highest_modseq as number, purgedModseq: r.mailbox_purged_modseq as number, epoch: r.mailbox_epoch as string },
          hierarchyState: r.hierarchy_state as string,
        };
      }
      return folder;
    },
    *byKind(userId, kind) {
      yield* readLock(tx, userId);
      const [r] = yield* rows(tx, 'SELECT * FROM folders WHERE user_id = $1 AND kind = $2 ORDER BY created_modseq LIMIT 1', [userId, kind]);
      return r && toFolder(r);
    },
    *create(userId, input, now) {
      const modseq = yield* nextModseq(userId);
      const id = newId();
      yield* rows(
        tx,
        `INSERT INTO folders (user_id, id, parent_id, display_name, kind, modseq, created_modseq, created_at)
         VALUES ($1, $2, $3, $4, 'mail', $5, $5, $6)`,
        [userId, id, input.parentId, input.displayName, modseq, now],
      );
      yield* logFolder(userId, modseq, now, id, 'created', input.parentId);
      return (yield* folders.byId(userId, id))!;
    },
    *update(userId, id, input, now) {
      const modseq = yield* nextModseq(userId);
      yield* rows(
        tx,
        `UPDATE folders SET display_name = coalesce($1, display_name),
           parent_id = CASE WHEN $2::boolean THEN $3 ELSE parent_id END, modseq = $4 WHERE user_id = $5 AND id = $6`,
        [input.displayName ?? null, input.parentId !== undefined, input.parentId ?? null, modseq, userId, id],
      );
      yield* logFolder(userId, modseq, now, id, 'updated', input.parentId ?? null);
      return (yield* folders.byId(userId, id))!;
    },
    *delete(userId, id, now) {
      yield* lockMailbox(tx, userId);
      // The folder and every descendant, deepest first, so no child outlives its parent.
      const tree = yield* rows<{ id: string }>(
        tx,
        `WITH RECURSIVE tree(id, depth) AS (
           SELECT id, 0 FROM folders WHERE user_id = $1 AND id = $2
           UNION ALL SELECT f.id, t.depth + 1 FROM folders f JOIN tree t ON f.user_id = $1 AND f.parent_id = t.id)
         SELECT id FROM tree ORDER BY depth DESC, id`,
        [userId, id],
      );
      let itemCount = 0;
      for (const { id: folderId } of tree) {
        // Each item leaves its tombstone with a modseq of its own (oldest change first), then the folder its own.
        const gone = yield* rows<{ id: string; received_at: number; modseq: number; type: Item['type'] }>(
          tx,
          'DELETE FROM items WHERE user_id = $1 AND folder_id = $2 RETURNING id, received_at, modseq, type',
          [userId, folderId],
        );
        gone.sort((a, b) => a.modseq - b.modseq);
        const last = yield* nextModseqs(userId, gone.length + 1);
        const first = last - gone.length;
        if (gone.length) {
          yield* rows(
            tx,
            `INSERT INTO changes (user_id, modseq, at, object_type, object_id, op, folder_id, received_at)
             SELECT $1, c.modseq, $2, 'item', c.id, 'deleted', $3, c.received_at
             FROM unnest($4::text[], $5::bigint[], $6::bigint[]) AS c(id, modseq, received_at)`,
            [userId, now, folderId, gone.map((g) => g.id), gone.map((_g, i) => first + i), gone.map((g) => tombstoneKey({ type: g.type, receivedAt: g.received_at }))],
          );
          gone.forEach((_g, i) => tx.record(userId, first + i, [folderId], false));
        }
        itemCount += gone.length;
        yield* rows(tx, 'DELETE FROM folders WHERE user_id = $1 AND id = $2', [userId, folderId]);
        yield* logFolder(userId, last, now, folderId, 'deleted', null);
      }
      return { folders: tree.length, items: itemCount };
    },
    *changedSince(userId, after, limit) {
      yield* readLock(tx, userId);
      return (
        yield* rows(tx, 'SELECT * FROM folders WHERE user_id = $1 AND (modseq, id) > ($2, $3) ORDER BY modseq, id LIMIT $4', [
          userId,
          after.modseq,
          after.id,
          limitParam(limit),
        ])
      ).map(toFolder);
    },
    *deletedSince(userId, afterModseq, limit) {
      yield* readLock(tx, userId);
      return (
        yield* rows<{ modseq: number; object_id: string }>(
          tx,
          `SELECT modseq, object_id FROM changes
           WHERE user_id = $1 AND modseq > $2 AND object_type = 'folder' AND op = 'deleted' ORDER BY modseq LIMIT $3`,
          [userId, afterModseq, limitParam(limit)],
        )
      ).map((r) => ({ modseq: r.modseq, id: r.object_id }));
    },
    *hierarchyState(userId) {
      yield* readLock(tx, userId);
      // Any change to a folder raises the newest folder modseq, except a deletion, which lowers the count; a deletion
      // followed by a creation raises the modseq again. So the pair moves on every hierarchy change.
      const [r] = yield* rows<{ m: number; n: number }>(tx, 'SELECT coalesce(max(modseq), 0) AS m, count(*) AS n FROM folders WHERE user_id = $1', [userId]);
      return `${r!.m}.${r!.n}`;
    },
    *hierarchyPoll(userId, after) {
      yield* readLock(tx, userId);
      // The two EXISTS are changedSince's and deletedSince's ranges, stopped at their first row.
      const [r] = yield* rows(
        tx,
        `SELECT user_id, highest_modseq, purged_modseq, epoch,
           EXISTS (SELECT 1 FROM folders WHERE user_id = $1 AND (modseq, id) > ($2, $3))
           OR EXISTS (SELECT 1 FROM changes WHERE user_id = $1 AND modseq > $2 AND object_type = 'folder' AND op = 'deleted') AS changed
         FROM mailboxes WHERE user_id = $1`,
        [userId, after.modseq, after.id],
      );
      return r && { mailbox: toMailbox(r), changed: r.changed as boolean };
    },
  };

  const items: TxStore['items'] = {
    *create(item: NewItem, now) {
      // The modseq first: it locks the mailbox, so the folder checked below is still there at commit (a user without
      // a mailbox owns no folder).
      const notOwned = () => new Error('folder does not belong to the item owner');
      const modseq = yield* nextModseqs(item.userId, 1, notOwned);
      if ((yield* rows(tx, 'SELECT 1 FROM folders WHERE user_id = $1 AND id = $2', [item.userId, item.folderId])).length === 0) {
        throw notOwned();
      }
      const id = newId();
      const mimeBlobId = item.mime ? yield* putBlob(tx, item.userId, item.mime, now) : null;
      const attachments = item.attachments ?? [];
      // Only mail is ever unread: events and contacts never count towards a folder's unread badge.
      const isRead = item.type === 'email' ? (item.isRead ?? false) : true;
      const bodySize = Buffer.byteLength(item.bodyHtml ?? item.bodyText ?? '', 'utf8');
      const summaries = attachmentSummaries(attachments);
      const [r] = yield* rows(
        tx,
        `INSERT INTO items (user_id, id, folder_id, type, received_at, modseq, placed_modseq, change_key, is_read,
           is_flagged, importance, categories, inference, subject, from_json, to_json, cc_json, reply_to_json, sent_at,
           preview, has_attachments, body_size, conversation_id, internet_message_id, mime_blob_id, body_text,
           body_html, attachments_json, data_json, created_at, thread_subject)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22,
           $23, $24, $25, $26, $27, $28, $29, $30)
         RETURNING ${ITEM_COLUMNS}`,
        [
          item.userId,
          id,
          item.folderId,
          item.type,
          item.receivedAt,
          modseq,
          String(modseq),
          isRead,
          item.isFlagged ?? false,
          item.importance ?? 'normal',
          json(item.categories ?? []),
          item.inferenceClassification ?? 'focused',
          item.subject,
          item.from ? json(item.from) : null,
          json(item.to ?? []),
          json(item.cc ?? []),
          json(item.replyTo ?? []),
          item.sentAt ?? null,
          truncateChars(item.preview ?? '', 256),
          attachments.some((a) => !a.isInline),
          bodySize,
          item.conversationId ?? null,
          item.internetMessageId ?? null,
          mimeBlobId,
          item.bodyText ?? null,
          item.bodyHtml ?? null,
          json(summaries),
          json(item.data ?? {}),
          now,
          item.threadSubject ?? null,
        ],
      );
      yield* insertAttachments(item.userId, id, attachments, summaries, now);
      if (item.type === 'email') {
        yield* rows(tx, 'INSERT INTO search_docs (user_id, item_id, document) VALUES ($1, $2, $3::tsvector)', [item.userId, id, searchDocument(item)]);
      }
      yield* logItem(item.userId, modseq, now, id, 'created', item.folderId, null, item.receivedAt, [[item.folderId, 1, isRead ? 0 : 1]]);
      return toItem(r!);
    },
    *byId(userId, id) {
      yield* readLock(tx, userId);
      const r = yield* itemRow(userId, id);
      return r && toItem(r);
    },
    *byIds(userId, ids) {
      if (ids.length === 0) return [];
      yield* readLock(tx, userId);
      // In id order, as SQLite answers (it probes the primary key with the ids sorted).
      return (yield* rows(tx, `SELECT ${ITEM_COLUMNS} FROM items WHERE user_id = $1 AND id = ANY($2::text[]) ORDER BY id`, [userId, ids])).map(toItem);
    },
    *body(userId, id) {
      yield* readLock(tx, userId);
      const [r] = yield* rows(tx, 'SELECT body_text, body_html FROM items WHERE user_id = $1 AND id = $2', [userId, id]);
      return r && { text: (r.body_text as string | null) ?? null, html: (r.body_html as string | null) ?? null };
    },
    *attachments(userId, itemId) {
      yield* readLock(tx, userId);
      return (yield* rows(tx, 'SELECT * FROM attachments WHERE user_id = $1 AND item_id = $2 ORDER BY position', [userId, itemId])).map(
        (r): AttachmentRecord => ({
          id: r.id as string,
          blobId: r.blob_id as string,
          name: r.name as string,
          contentType: r.content_type as string,
          size: r.size as number,
          isInline: r.is_inline as boolean,
          contentId: (r.content_id as string | null) ?? null,
        }),
      );
    },
    *findDuplicate(userId, folderId, key, createdSince) {
      yield* readLock(tx, userId);
      const [r] = key.internetMessageId
        ? yield* rows<{ id: string }>(
            tx,
            'SELECT id FROM items WHERE user_id = $1 AND internet_message_id = $2 AND folder_id = $3 AND created_at >= $4 LIMIT 1',
            [userId, key.internetMessageId, folderId, createdSince],
          )
        : yield* rows<{ id: string }>(
            tx,
            'SELECT id FROM items WHERE user_id = $1 AND folder_id = $2 AND mime_blob_id = $3 AND created_at >= $4 LIMIT 1',
            [userId, folderId, key.mimeSha256, createdSince],
          );
      return r?.id;
    },
    *conversationByMessageIds(userId, messageIds) {
      if (messageIds.length === 0) return undefined;
      yield* readLock(tx, userId);
      const [r] = yield* rows<{ conversation_id: string }>(
        tx,
        `SELECT conversation_id FROM items
         WHERE user_id = $1 AND internet_message_id = ANY($2::text[]) AND conversation_id IS NOT NULL
         ORDER BY received_at DESC LIMIT 1`,
        [userId, messageIds],
      );
      return r?.conversation_id;
    },
    *conversationBySubject(userId, threadSubject, from, to) {
      yield* readLock(tx, userId);
      const [r] = yield* rows<{ conversation_id: string }>(
        tx,
        `SELECT conversation_id FROM items
         WHERE user_id = $1 AND thread_subject = $2 AND received_at BETWEEN $3 AND $4 AND conversation_id IS NOT NULL
         ORDER BY received_at DESC LIMIT 1`,
        [userId, threadSubject, from, to],
      );
      return r?.conversation_id;
    },
    *update(userId, id, patch: ItemPatch, now) {
      yield* lockMailbox(tx, userId);
      const row = yield* itemRow(userId, id);
      if (!row) throw new Error('no such item');
      const current = toItem(row);
      const next = {
        isRead: current.type === 'email' ? (patch.isRead ?? current.isRead) : current.isRead,
        isFlagged: patch.isFlagged ?? current.isFlagged,
        categories: patch.categories ?? current.categories,
        inference: patch.inferenceClassification ?? current.inferenceClassification,
      };
      const unchanged =
        next.isRead === current.isRead &&
        next.isFlagged === current.isFlagged &&
        next.inference === current.inferenceClassification &&
        JSON.stringify(next.categories) === JSON.stringify(current.categories);
      if (unchanged) return current; // nothing to sync: no modseq, no write
      const modseq = yield* nextModseq(userId);
      const [r] = yield* rows(
        tx,
        `UPDATE items SET is_read = $1, is_flagged = $2, categories = $3, inference = $4, modseq = $5, change_key = $6
         WHERE user_id = $7 AND id = $8 RETURNING ${ITEM_COLUMNS}`,
        [next.isRead, next.isFlagged, json(next.categories), next.inference, modseq, String(modseq), userId, id],
      );
      yield* logItem(userId, modseq, now, id, 'updated', current.folderId, null, current.receivedAt, [
        [current.folderId, 0, current.isRead === next.isRead ? 0 : next.isRead ? -1 : 1],
      ]);
      return toItem(r!);
    },
    *replace(userId, id, content: ItemContent, now) {
      yield* lockMailbox(tx, userId);
      const row = yield* itemRow(userId, id);
      if (!row) throw new Error('no such item');
      const current = toItem(row);
      // Mail is what was delivered and is never rewritten: only events and contacts have content an app edits.
      if (current.type === 'email') throw new Error('no such item: replace edits events and contacts only');
      const modseq = yield* nextModseq(userId);
      let summaries = current.attachments;
      if (content.attachments) {
        // The old rows go first: a blob the new set shares with the old may then be released (its count reaching
        // zero) and is stored again by putBlob; the other order would leave the new row pointing at a deleted blob.
        yield* rows(tx, 'DELETE FROM attachments WHERE user_id = $1 AND item_id = $2', [userId, id]);
        summaries = attachmentSummaries(content.attachments);
        yield* insertAttachments(userId, id, content.attachments, summaries, now);
      }
      // A new sort key places the item anew in its folder's order (SQLite's `items.replace` says why).
      const placedModseq = content.receivedAt === current.receivedAt ? current.placedModseq : modseq;
      // The body is now exactly `bodyText`: an HTML body an import may have stored would otherwise outlive the edit.
      const [r] = yield* rows(
        tx,
        `UPDATE items SET subject = $1, body_text = $2, body_html = NULL, body_size = $3, received_at = $4, data_json = $5,
           attachments_json = $6, has_attachments = $7, modseq = $8, placed_modseq = $9, change_key = $10
         WHERE user_id = $11 AND id = $12 RETURNING ${ITEM_COLUMNS}`,
        [
          content.subject,
          content.bodyText,
          Buffer.byteLength(content.bodyText ?? '', 'utf8'),
          content.receivedAt,
          json(content.data),
          json(summaries),
          summaries.some((a) => !a.isInline),
          modseq,
          placedModseq,
          String(modseq),
          userId,
          id,
        ],
      );
      // An indexed item's document follows its text; an unindexed one (search finds no events or contacts: create
      // indexes mail only) stays so, as an edit must not change what search covers. No row, no write.
      yield* rows(tx, 'UPDATE search_docs SET document = $3::tsvector WHERE user_id = $1 AND item_id = $2', [
        userId,
        id,
        searchDocument({ userId, folderId: current.folderId, type: current.type, receivedAt: content.receivedAt, subject: content.subject, from: current.from, to: current.to, cc: current.cc, bodyText: content.bodyText, bodyHtml: null }),
      ]);
      yield* logItem(userId, modseq, now, id, 'updated', current.folderId, null, content.receivedAt, [[current.folderId, 0, 0]]);
      return toItem(r!);
    },
    *move(userId, id, folderId, now) {
      yield* lockMailbox(tx, userId);
      const row = yield* itemRow(userId, id);
      if (!row) throw new Error('no such item');
      const current = toItem(row);
      if (current.folderId === folderId) return current;
      const modseq = yield* nextModseq(userId);
      const [r] = yield* rows(
        tx,
        `UPDATE items SET folder_id = $1, modseq = $2, placed_modseq = $2, change_key = $3 WHERE user_id = $4 AND id = $5
         RETURNING ${ITEM_COLUMNS}`,
        [folderId, modseq, String(modseq), userId, id],
      );
      const unread = current.isRead ? 0 : 1;
      yield* logItem(userId, modseq, now, id, 'moved', folderId, current.folderId, tombstoneKey(current), [
        [current.folderId, -1, -unread],
        [folderId, 1, unread],
      ]);
      return toItem(r!);
    },
    *delete(userId, id, now) {
      yield* lockMailbox(tx, userId);
      const row = yield* itemRow(userId, id);
      if (!row) throw new Error('no such item');
      const current = toItem(row);
      const modseq = yield* nextModseq(userId);
      yield* rows(tx, 'DELETE FROM items WHERE user_id = $1 AND id = $2', [userId, id]);
      yield* logItem(userId, modseq, now, id, 'deleted', current.folderId, null, tombstoneKey(current), [[current.folderId, -1, current.isRead ? 0 : -1]]);
    },
    *fromSender(userId, address, limit, folderIds) {
      yield* readLock(tx, userId);
      // A range of items_sender (schema/postgres/0013): the query repeats its expression and its `type = 'email'`.
      // nocase() folds ASCII letters only, as SQLite's lower() does, so both backends match the same addresses.
      return (
        yield* rows(
          tx,
          `SELECT ${ITEM_COLUMNS} FROM items
           WHERE user_id = $1 AND nocase(from_json ->> 'address') = nocase($2::text) AND type = 'email'
             AND ($3::text[] IS NULL OR folder_id = ANY($3::text[]))
           ORDER BY received_at DESC, id DESC LIMIT $4`,
          [userId, address, folderIds ?? null, limitParam(limit)],
        )
      ).map(toItem);
    },
    *hasContactAddress(userId, address) {
      yield* readLock(tx, userId);
      // The user's contacts only (items_contacts), each of the contact's addresses (ContactData `emailAddresses`)
      // compared; a contact whose `emailAddresses` is no list has none.
      const found = yield* rows(
        tx,
        `SELECT 1 FROM items
         WHERE user_id = $1 AND type = 'contact'
           AND EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(data_json -> 'emailAddresses') = 'array'
                                                               THEN data_json -> 'emailAddresses' ELSE '[]'::jsonb END) AS e
                       WHERE nocase(CASE WHEN jsonb_typeof(e) = 'object' THEN e ->> 'address' END) = nocase($2::text))
         LIMIT 1`,
        [userId, address],
      );
      return found.length > 0;
    },
  };

  const sync: TxStore['sync'] = {
    *changes(userId, folderId, after, lower, limit): Generator<Promise<unknown>, FolderChange[], unknown> {
      yield* readLock(tx, userId);
      // Three index range scans merged in modseq order: items in the folder now, and items that left it (deleted,
      // moved out). Anything below the device's window is filtered out in SQL.
      return (
        yield* rows(
          tx,
          `SELECT modseq, object_id, kind FROM (
             SELECT modseq, id AS object_id, 'item' AS kind FROM items
               WHERE user_id = $1 AND folder_id = $2 AND modseq > $3 AND (received_at, id) >= ($4, $5)
             UNION ALL
             SELECT modseq, object_id, 'deleted' FROM changes
               WHERE user_id = $1 AND folder_id = $2 AND modseq > $3 AND op = 'deleted' AND object_type = 'item'
                 AND (received_at, object_id) >= ($4, $5)
             UNION ALL
             SELECT modseq, object_id, 'movedOut' FROM changes
               WHERE user_id = $1 AND from_folder_id = $2 AND modseq > $3 AND (received_at, object_id) >= ($4, $5)) AS history
           ORDER BY modseq LIMIT $6`,
          [userId, folderId, after, lower.receivedAt, lower.id, limitParam(limit)],
        )
      ).map((r) => ({ modseq: r.modseq as number, objectId: r.object_id as string, kind: r.kind as FolderChange['kind'] }));
    },
    *boundary(userId, folderId, size) {
      yield* readLock(tx, userId);
      const [r] = yield* rows(
        tx,
        'SELECT received_at, id FROM items WHERE user_id = $1 AND folder_id = $2 ORDER BY received_at DESC, id DESC LIMIT 1 OFFSET $3',
        [userId, folderId, Math.max(size - 1, 0)],
      );
      return r && { receivedAt: r.received_at as number, id: r.id as string };
    },
    *range(userId, folderId, from, to, order, limit) {
      yield* readLock(tx, userId);
      const text =
        order === 'asc'
          ? `SELECT ${ITEM_COLUMNS} FROM items WHERE user_id = $1 AND folder_id = $2 AND (received_at, id) >= ($3, $4)
               AND (received_at, id) < ($5, $6) ORDER BY received_at, id LIMIT $7`
          : `SELECT ${ITEM_COLUMNS} FROM items WHERE user_id = $1 AND folder_id = $2 AND (received_at, id) >= ($3, $4)
               AND (received_at, id) < ($5, $6) ORDER BY received_at DESC, id DESC LIMIT $7`;
      return (yield* rows(tx, text, [userId, folderId, from.receivedAt, from.id, to.receivedAt, to.id, limitParam(limit)])).map(toItem);
    },
  };

  const idempotency: TxStore['idempotency'] = {
    *get(userId, key) {
      yield* readLock(tx, userId);
      const [r] = yield* rows(tx, 'SELECT * FROM idempotency WHERE user_id = $1 AND key = $2', [userId, key]);
      return (
        r && {
          requestHash: r.request_hash as string,
          status: r.status as number,
          body: r.body as string,
          createdAt: r.created_at as number,
        }
      );
    },
    *put(userId, key, v) {
      yield* rows(
        tx,
        `INSERT INTO idempotency (user_id, key, request_hash, status, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (user_id, key) DO UPDATE SET request_hash = excluded.request_hash, status = excluded.status,
           body = excluded.body, created_at = excluded.created_at`,
        [userId, key, v.requestHash, v.status, v.body, v.createdAt],
      );
    },
    *purge(before) {
      return yield* rowCount(tx, 'DELETE FROM idempotency WHERE created_at < $1', [before]);
    },
  };

  return { mailboxes, folders, items, sync, idempotency };
}
