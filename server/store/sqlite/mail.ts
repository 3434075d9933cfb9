/**
 * Mailboxes, folders and items in SQLite, and the reads incremental sync is made of.
 *
 * The invariant every write here keeps: a change takes the mailbox's next modseq, logs one `changes` row with it,
 * and moves the affected folders' counters (`modseq` when counts or names change, `content_modseq` for any change to
 * their items), all in the caller's transaction. Sync derives everything from that committed state.
 */
import crypto from 'node:crypto';
import { newId } from '../../ids';
import type { Sql } from './devices';
import { putBlob } from './content';
import { attachmentSummaries } from '../rows';
import { htmlToPlain } from '../../content/text';
import {
  WELL_KNOWN_FOLDERS,
  type AttachmentRecord,
  type EmailAddress,
  type Folder,
  type FolderChange,
  type FolderKind,
  type Item,
  type ItemContent,
  type ItemPatch,
  type Mailbox,
  type NewAttachment,
  type NewItem,
  type SortKey,
  type StoreMethods,
} from '../types';

type Row = Record<string, unknown>;

/** Every item column but the bodies: sync pages never need them, and they are most of a row's bytes. */
const ITEM_COLUMNS = `id, user_id, folder_id, type, received_at, modseq, placed_modseq, change_key, is_read, is_flagged,
  importance, categories, inference, subject, from_json, to_json, cc_json, reply_to_json, sent_at, preview,
  has_attachments, body_size, conversation_id, internet_message_id, mime_blob_id, attachments_json, data_json, created_at`;

/**
 * Item rows are read as arrays (better-sqlite3's `raw` mode) and mapped by position: building a 28-key row object
 * per row cost more than reading the row (bench, scenario 2: half the store time of a 500-item page). These are the
 * positions in ITEM_COLUMNS; the check below stops the module from loading if the two ever disagree.
 */
const C = {
  id: 0, user_id: 1, folder_id: 2, type: 3, received_at: 4, modseq: 5, placed_modseq: 6, change_key: 7, is_read: 8, is_flagged: 9,
  importance: 10, categories: 11, inference: 12, subject: 13, from_json: 14, to_json: 15, cc_json: 16, reply_to_json: 17, sent_at: 18, preview: 19,
  has_attachments: 20, body_size: 21, conversation_id: 22, internet_message_id: 23, mime_blob_id: 24, attachments_json: 25, data_json: 26, created_at: 27,
} as const;
if (ITEM_COLUMNS.split(',').map((c) => c.trim()).join() !== Object.keys(C).join()) throw new Error('ITEM_COLUMNS and its positions disagree');
type ItemValues = unknown[];

/** Most list columns hold an empty list: no parser needed for those. */
const parseJson = (text: unknown) => (text === '[]' ? [] : text === '{}' ? {} : JSON.parse(text as string));

/** At most `max` characters, never splitting a surrogate pair. */
function truncateChars(text: string, max: number): string {
  if (text.length <= max) return text;
  const cut = text.slice(0, max);
  return /[\uD800-\uDBFF]$/.test(cut) ? cut.slice(0, -1) : cut;
}


/**
 * The sort key an item's tombstone (deleted, moved out) is logged with: item sync tells a device of it only when the
 * device holds keys at or above it. Mail keeps its key for life, so its own key names exactly the devices that can
 * hold it. An event's or a contact's key moves with its content (`items.replace`: an event sorts by its start), so a
 * device part-way through its first sync of the folder may hold it under a key it no longer has: its tombstone is
 * logged above every key and reaches every device syncing the folder (one that never held it ignores the removal,
 * as the protocol allows).
 */
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

function toItem(v: ItemValues): Item {
  return {
    id: v[C.id] as string,
    userId: v[C.user_id] as string,
    folderId: v[C.folder_id] as string,
    type: v[C.type] as Item['type'],
    receivedAt: v[C.received_at] as number,
    modseq: v[C.modseq] as number,
    placedModseq: v[C.placed_modseq] as number,
    changeKey: v[C.change_key] as string,
    isRead: v[C.is_read] === 1,
    isFlagged: v[C.is_flagged] === 1,
    importance: v[C.importance] as Item['importance'],
    categories: parseJson(v[C.categories]),
    inferenceClassification: v[C.inference] as Item['inferenceClassification'],
    subject: v[C.subject] as string,
    from: v[C.from_json] ? JSON.parse(v[C.from_json] as string) : null,
    to: parseJson(v[C.to_json]),
    cc: parseJson(v[C.cc_json]),
    replyTo: parseJson(v[C.reply_to_json]),
    sentAt: (v[C.sent_at] as number | null) ?? null,
    preview: v[C.preview] as string,
    hasAttachments: v[C.has_attachments] === 1,
    bodySize: v[C.body_size] as number,
    conversationId: (v[C.conversation_id] as string | null) ?? null,
    internetMessageId: (v[C.internet_message_id] as string | null) ?? null,
    mimeBlobId: (v[C.mime_blob_id] as string | null) ?? null,
    attachments: parseJson(v[C.attachments_json]),
    data: parseJson(v[C.data_json]),
    createdAt: v[C.created_at] as number,
  };
}

/** Told of every change as it is made, so the store can announce it once the transaction commits. */
export type ChangeRecorder = (userId: string, modseq: number, folderIds: Array<string | null>, hierarchy: boolean) => void;

export function mailRepositories(
  sql: Sql,
  transaction: <T>(fn: () => T) => T,
  record: ChangeRecorder,
): Pick<StoreMethods, 'mailboxes' | 'folders' | 'items' | 'sync' | 'idempotency'> {
  /** Takes the mailbox's next modseq: unique and strictly increasing, in the caller's transaction. */
  const nextModseq = (userId: string): number => {
    const r = sql('UPDATE mailboxes SET highest_modseq = highest_modseq + 1 WHERE user_id = ? RETURNING highest_modseq').get(
      userId,
    ) as { highest_modseq: number } | undefined;
    if (!r) throw new Error(`no mailbox for user ${userId}`);
    return r.highest_modseq;
  };

  const log = (
    userId: string,
    modseq: number,
    at: number,
    objectType: 'item' | 'folder',
    objectId: string,
    op: 'created' | 'updated' | 'moved' | 'deleted',
    folderId: string | null,
    fromFolderId: string | null = null,
    receivedAt: number | null = null,
  ) => {
    sql(
      `INSERT INTO changes (user_id, modseq, at, object_type, object_id, op, folder_id, from_folder_id, received_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(userId, modseq, at, objectType, objectId, op, folderId, fromFolderId, receivedAt);
    if (objectType === 'item') record(userId, modseq, [folderId, fromFolderId], false);
    else record(userId, modseq, [objectId], true);
  };

  /** Moves a folder's counters for a change to its items. Counts are part of the hierarchy; contents are not. */
  const touchFolder = (folderId: string, modseq: number, dTotal: number, dUnread: number) => {
    if (dTotal !== 0 || dUnread !== 0) {
      sql(
        `UPDATE folders SET total_count = total_count + ?, unread_count = unread_count + ?, modseq = ?, content_modseq = ?
         WHERE id = ?`,
      ).run(dTotal, dUnread, modseq, modseq, folderId);
    } else {
      sql('UPDATE folders SET content_modseq = ? WHERE id = ?').run(modseq, folderId);
    }
  };

  /** The text an item is found by, under the search document `docId`. */
  type Searchable = Pick<NewItem, 'userId' | 'subject' | 'from' | 'to' | 'cc' | 'bodyText' | 'bodyHtml'>;
  const writeSearchText = (docId: number, item: Searchable) => {
    const people = (list: EmailAddress[] | undefined) => (list ?? []).map((a) => `${a.name} ${a.address}`).join(' ');
    sql('INSERT INTO items_fts (rowid, owner, subject, sender, recipients, body) VALUES (?, ?, ?, ?, ?, ?)').run(
      docId,
      item.userId,
      item.subject,
      item.from ? `${item.from.name} ${item.from.address}` : '',
      `${people(item.to)} ${people(item.cc)}`,
      item.bodyText ?? htmlToPlain(item.bodyHtml ?? ''),
    );
  };

  /** Makes the item findable by search, in the caller's transaction (deletion is a trigger: cascades included). */
  const indexForSearch = (id: string, item: NewItem) => {
    const doc = sql('INSERT INTO search_docs (item_id, user_id) VALUES (?, ?) RETURNING doc_id').get(id, item.userId) as {
      doc_id: number;
    };
    writeSearchText(doc.doc_id, item);
  };

  /**
   * Brings an indexed item's entry up to date with its new text. An item search does not index (create indexes
   * mail only: search finds no events or contacts) stays unindexed: an edit must not change what search covers.
   */
  const reindexForSearch = (id: string, item: Searchable) => {
    const doc = sql('SELECT doc_id FROM search_docs WHERE item_id = ?').get(id) as { doc_id: number } | undefined;
    if (!doc) return;
    sql('DELETE FROM items_fts WHERE rowid = ?').run(doc.doc_id);
    writeSearchText(doc.doc_id, item);
  };

  /** Stores the attachments' bytes and rows for item `itemId`, as `summaries` (attachmentSummaries) names them. */
  const insertAttachments = (itemId: string, attachments: NewAttachment[], summaries: Item['attachments'], now: number) => {
    attachments.forEach((a, position) => {
      const blobId = putBlob(sql, a.content, now);
      sql(
        `INSERT INTO attachments (id, item_id, blob_id, name, content_type, size, is_inline, content_id, position)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(summaries[position]!.id, itemId, blobId, a.name, a.contentType, a.content.length, a.isInline ? 1 : 0, a.contentId, position);
    });
  };

  const toMailbox = (r: Row): Mailbox => ({
    userId: r.user_id as string,
    highestModseq: r.highest_modseq as number,
    purgedModseq: r.purged_modseq as number,
    epoch: r.epoch as string,
  });
  /**
   * The folder row with its mailbox and the hierarchy state (as `hierarchyState` spells it) in the same statement: a
   * no-change item-sync poll reads nothing else (server/sync/itemSync.ts). Primary-key probes, and a covering range
   * over the user's folders in folders_user (tests/sync/query-plans.test.ts). Scalar subqueries rather than a join:
   * with statistics (ANALYZE) and few mailboxes, SQLite chose to scan mailboxes for the join.
   */
  const folderRow = (userId: string, id: string) =>
    sql(
      `SELECT *,
         (SELECT highest_modseq FROM mailboxes WHERE user_id = @u) AS mailbox_highest_modseq,
         (SELECT purged_modseq FROM mailboxes WHERE user_id = @u) AS mailbox_purged_modseq,
         (SELECT epoch FROM mailboxes WHERE user_id = @u) AS mailbox_epoch,
         (SELECT coalesce(max(modseq), 0) || '.' || count(*) FROM folders WHERE user_id = @u) AS hierarchy_state
       FROM folders WHERE id = @id AND user_id = @u`,
    ).get({ id, u: userId }) as Row | undefined;
  /** A statement over ITEM_COLUMNS, answering value arrays for `toItem`. */
  const itemSql = (text: string) => sql(text).raw(true);
  const itemRow = (userId: string, id: string) =>
    itemSql(`SELECT ${ITEM_COLUMNS} FROM items WHERE id = ? AND user_id = ?`).get(id, userId) as ItemValues | undefined;

  const mailboxes: StoreMethods['mailboxes'] = {
    create(userId, now) {
      return transaction(() => {
        const epoch = crypto.randomBytes(8).toString('hex');
        sql('INSERT INTO mailboxes (user_id, highest_modseq, epoch, created_at) VALUES (?, 0, ?, ?)').run(userId, epoch, now);
        for (const f of WELL_KNOWN_FOLDERS) {
          const modseq = nextModseq(userId);
          const id = newId();
          sql(
            `INSERT INTO folders (id, user_id, parent_id, display_name, kind, modseq, created_modseq, created_at)
             VALUES (?, ?, NULL, ?, ?, ?, ?, ?)`,
          ).run(id, userId, f.displayName, f.kind, modseq, modseq, now);
          log(userId, modseq, now, 'folder', id, 'created', null);
        }
        return mailboxes.get(userId)!;
      });
    },
    get(userId) {
      const r = sql('SELECT * FROM mailboxes WHERE user_id = ?').get(userId) as Row | undefined;
      return r && toMailbox(r);
    },
    resetEpoch(userId): Mailbox {
      sql('UPDATE mailboxes SET epoch = ? WHERE user_id = ?').run(crypto.randomBytes(8).toString('hex'), userId);
      return mailboxes.get(userId)!;
    },
    purgeHistory(before) {
      return transaction(() => {
        // Remember, per mailbox, the newest modseq that goes: tokens at or below it can no longer be served.
        sql(
          `UPDATE mailboxes SET purged_modseq = max(purged_modseq,
             (SELECT max(modseq) FROM changes c WHERE c.user_id = mailboxes.user_id AND c.at < ?))
           WHERE EXISTS (SELECT 1 FROM changes c WHERE c.user_id = mailboxes.user_id AND c.at < ?)`,
        ).run(before, before);
        return sql('DELETE FROM changes WHERE at < ?').run(before).changes;
      });
    },
  };

  const folders: StoreMethods['folders'] = {
    listByUser(userId) {
      return (sql('SELECT * FROM folders WHERE user_id = ? ORDER BY created_modseq, id').all(userId) as Row[]).map(toFolder);
    },
    byId(userId, id) {
      const r = folderRow(userId, id);
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
    byKind(userId, kind) {
      const r = sql('SELECT * FROM folders WHERE user_id = ? AND kind = ? ORDER BY created_modseq LIMIT 1').get(userId, kind) as
        | Row
        | undefined;
      return r && toFolder(r);
    },
    create(userId, input, now) {
      return transaction(() => {
        const modseq = nextModseq(userId);
        const id = newId();
        sql(
          `INSERT INTO folders (id, user_id, parent_id, display_name, kind, modseq, created_modseq, created_at)
           VALUES (?, ?, ?, ?, 'mail', ?, ?, ?)`,
        ).run(id, userId, input.parentId, input.displayName, modseq, modseq, now);
        log(userId, modseq, now, 'folder', id, 'created', input.parentId);
        return folders.byId(userId, id)!;
      });
    },
    update(userId, id, input, now) {
      return transaction(() => {
        const modseq = nextModseq(userId);
        sql(
          `UPDATE folders SET display_name = coalesce(?, display_name),
             parent_id = CASE WHEN ? THEN ? ELSE parent_id END, modseq = ? WHERE id = ? AND user_id = ?`,
        ).run(input.displayName ?? null, input.parentId !== undefined ? 1 : 0, input.parentId ?? null, modseq, id, userId);
        log(userId, modseq, now, 'folder', id, 'updated', input.parentId ?? null);
        return folders.byId(userId, id)!;
      });
    },
    delete(userId, id, now) {
      return transaction(() => {
        // The folder and every descendant, deepest first, so no child outlives its parent.
        const ids = (
          sql(
            `WITH RECURSIVE tree(id, depth) AS (
               SELECT id, 0 FROM folders WHERE id = ? AND user_id = ?
               UNION ALL SELECT f.id, t.depth + 1 FROM folders f JOIN tree t ON f.parent_id = t.id)
             SELECT id FROM tree ORDER BY depth DESC`,
          ).all(id, userId) as { id: string }[]
        ).map((r) => r.id);
        let itemCount = 0;
        for (const folderId of ids) {
          const rows = sql('SELECT id, received_at, type FROM items WHERE folder_id = ?').all(folderId) as { id: string; received_at: number; type: Item['type'] }[];
          for (const r of rows) {
            log(userId, nextModseq(userId), now, 'item', r.id, 'deleted', folderId, null, tombstoneKey({ type: r.type, receivedAt: r.received_at }));
          }
          sql('DELETE FROM items WHERE folder_id = ?').run(folderId);
          itemCount += rows.length;
          const modseq = nextModseq(userId);
          sql('DELETE FROM folders WHERE id = ?').run(folderId);
          log(userId, modseq, now, 'folder', folderId, 'deleted', null);
        }
        return { folders: ids.length, items: itemCount };
      });
    },
    changedSince(userId, after, limit) {
      return (
        sql(
          `SELECT * FROM folders WHERE user_id = ? AND (modseq, id) > (?, ?) ORDER BY modseq, id LIMIT ?`,
        ).all(userId, after.modseq, after.id, limit) as Row[]
      ).map(toFolder);
    },
    deletedSince(userId, afterModseq, limit) {
      return (
        sql(
          `SELECT modseq, object_id FROM changes
           WHERE user_id = ? AND modseq > ? AND object_type = 'folder' AND op = 'deleted' ORDER BY modseq LIMIT ?`,
        ).all(userId, afterModseq, limit) as { modseq: number; object_id: string }[]
      ).map((r) => ({ modseq: r.modseq, id: r.object_id }));
    },
    hierarchyState(userId) {
      // Any change to a folder raises the newest folder modseq, except a deletion, which lowers the count; a deletion
      // followed by a creation raises the modseq again. So the pair moves on every hierarchy change.
      const r = sql('SELECT coalesce(max(modseq), 0) AS m, count(*) AS n FROM folders WHERE user_id = ?').get(userId) as { m: number; n: number };
      return `${r.m}.${r.n}`;
    },
    hierarchyPoll(userId, after) {
      // The two EXISTS are changedSince's and deletedSince's ranges, stopped at their first row.
      const r = sql(
        `SELECT user_id, highest_modseq, purged_modseq, epoch,
           EXISTS (SELECT 1 FROM folders WHERE user_id = @u AND (modseq, id) > (@m, @c))
           OR EXISTS (SELECT 1 FROM changes WHERE user_id = @u AND modseq > @m AND object_type = 'folder' AND op = 'deleted') AS changed
         FROM mailboxes WHERE user_id = @u`,
      ).get({ u: userId, m: after.modseq, c: after.id }) as Row | undefined;
      return r && { mailbox: toMailbox(r), changed: r.changed === 1 };
    },
  };

  const items: StoreMethods['items'] = {
    create(item: NewItem, now) {
      return transaction(() => {
        const folder = sql('SELECT user_id FROM folders WHERE id = ?').get(item.folderId) as Row | undefined;
        if (!folder || folder.user_id !== item.userId) throw new Error('folder does not belong to the item owner');
        const modseq = nextModseq(item.userId);
        const id = newId();
        const mimeBlobId = item.mime ? putBlob(sql, item.mime, now) : null;
        const attachments = item.attachments ?? [];
        // Only mail is ever unread: events and contacts never count towards a folder's unread badge.
        const isRead = item.type === 'email' ? (item.isRead ?? false) : true;
        const bodySize = Buffer.byteLength(item.bodyHtml ?? item.bodyText ?? '', 'utf8');
        const summaries = attachmentSummaries(attachments);
        sql(
          `INSERT INTO items (id, user_id, folder_id, type, received_at, modseq, placed_modseq, change_key, is_read,
             is_flagged, importance, categories, inference, subject, from_json, to_json, cc_json, reply_to_json, sent_at,
             preview, has_attachments, body_size, conversation_id, internet_message_id, mime_blob_id, body_text,
             body_html, attachments_json, data_json, created_at, thread_subject)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(
          id,
          item.userId,
          item.folderId,
          item.type,
          item.receivedAt,
          modseq,
          modseq,
          String(modseq),
          isRead ? 1 : 0,
          item.isFlagged ? 1 : 0,
          item.importance ?? 'normal',
          JSON.stringify(item.categories ?? []),
          item.inferenceClassification ?? 'focused',
          item.subject,
          item.from ? JSON.stringify(item.from) : null,
          JSON.stringify(item.to ?? []),
          JSON.stringify(item.cc ?? []),
          JSON.stringify(item.replyTo ?? []),
          item.sentAt ?? null,
          truncateChars(item.preview ?? '', 256),
          attachments.some((a) => !a.isInline) ? 1 : 0,
          bodySize,
          item.conversationId ?? null,
          item.internetMessageId ?? null,
          mimeBlobId,
          item.bodyText ?? null,
          item.bodyHtml ?? null,
          JSON.stringify(summaries),
          JSON.stringify(item.data ?? {}),
          now,
          item.threadSubject ?? null,
        );
        insertAttachments(id, attachments, summaries, now);
        if (item.type === 'email') indexForSearch(id, item);
        log(item.userId, modseq, now, 'item', id, 'created', item.folderId, null, item.receivedAt);
        touchFolder(item.folderId, modseq, 1, isRead ? 0 : 1);
        return items.byId(item.userId, id)!;
      });
    },
    byId(userId, id) {
      const r = itemRow(userId, id);
      return r && toItem(r);
    },
    byIds(userId, ids) {
      if (ids.length === 0) return [];
      // json_each keeps this one prepared statement whatever the number of ids. The unary `+` keeps the planner
      // off the (user_id, ...) indexes, which without statistics it prefers, reading every item of the user.
      return (
        itemSql(`SELECT ${ITEM_COLUMNS} FROM items WHERE id IN (SELECT value FROM json_each(?)) AND +user_id = ?`).all(
          JSON.stringify(ids),
          userId,
        ) as ItemValues[]
      ).map(toItem);
    },
    body(userId, id) {
      const r = sql('SELECT body_text, body_html FROM items WHERE id = ? AND user_id = ?').get(id, userId) as Row | undefined;
      return r && { text: (r.body_text as string | null) ?? null, html: (r.body_html as string | null) ?? null };
    },
    attachments(_userId, itemId): AttachmentRecord[] {
      return (sql('SELECT * FROM attachments WHERE item_id = ? ORDER BY position').all(itemId) as Row[]).map((r) => ({
        id: r.id as string,
        blobId: r.blob_id as string,
        name: r.name as string,
        contentType: r.content_type as string,
        size: r.size as number,
        isInline: r.is_inline === 1,
        contentId: (r.content_id as string | null) ?? null,
      }));
    },
    findDuplicate(_userId, folderId, key, createdSince) {
      const r = (
        key.internetMessageId
          ? sql(
              `SELECT i.id FROM items i JOIN folders f ON f.id = i.folder_id
               WHERE i.user_id = f.user_id AND i.internet_message_id = ? AND i.folder_id = ? AND i.created_at >= ? LIMIT 1`,
            ).get(key.internetMessageId, folderId, createdSince)
          : sql('SELECT id FROM items WHERE folder_id = ? AND mime_blob_id = ? AND created_at >= ? LIMIT 1').get(
              folderId,
              key.mimeSha256,
              createdSince,
            )
      ) as { id: string } | undefined;
      return r?.id;
    },
    conversationByMessageIds(userId, messageIds) {
      if (messageIds.length === 0) return undefined;
      // The unary `+` keeps the planner on items_message_id: without statistics (a store filled since it was opened)
      // it chose items_conversation and scanned the whole mailbox once per delivered message.
      const r = sql(
        `SELECT conversation_id FROM items
         WHERE user_id = ? AND internet_message_id IN (SELECT value FROM json_each(?)) AND +conversation_id IS NOT NULL
         ORDER BY received_at DESC LIMIT 1`,
      ).get(userId, JSON.stringify(messageIds)) as { conversation_id: string } | undefined;
      return r?.conversation_id;
    },
    conversationBySubject(userId, threadSubject, from, to) {
      const r = sql(
        `SELECT conversation_id FROM items
         WHERE user_id = ? AND thread_subject = ? AND received_at BETWEEN ? AND ? AND +conversation_id IS NOT NULL
         ORDER BY received_at DESC LIMIT 1`,
      ).get(userId, threadSubject, from, to) as { conversation_id: string } | undefined;
      return r?.conversation_id;
    },
    update(userId, id, patch: ItemPatch, now) {
      return transaction(() => {
        const current = items.byId(userId, id);
        if (!current) throw new Error('no such item');
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
        const modseq = nextModseq(userId);
        sql(
          `UPDATE items SET is_read = ?, is_flagged = ?, categories = ?, inference = ?, modseq = ?, change_key = ?
           WHERE id = ?`,
        ).run(next.isRead ? 1 : 0, next.isFlagged ? 1 : 0, JSON.stringify(next.categories), next.inference, modseq, String(modseq), id);
        log(userId, modseq, now, 'item', id, 'updated', current.folderId, null, current.receivedAt);
        touchFolder(current.folderId, modseq, 0, current.isRead === next.isRead ? 0 : next.isRead ? -1 : 1);
        return items.byId(userId, id)!;
      });
    },
    replace(userId, id, content: ItemContent, now) {
      return transaction(() => {
        const current = items.byId(userId, id);
        if (!current) throw new Error('no such item');
        // Mail is what was delivered and is never rewritten: only events and contacts have content an app edits.
        if (current.type === 'email') throw new Error('no such item: replace edits events and contacts only');
        const modseq = nextModseq(userId);
        let summaries = current.attachments;
        if (content.attachments) {
          // The old rows go first: a blob the new set shares with the old may then be released (its count reaching
          // zero) and is stored again by putBlob; the other order would leave the new row pointing at a deleted blob.
          sql('DELETE FROM attachments WHERE item_id = ?').run(id);
          summaries = attachmentSummaries(content.attachments);
          insertAttachments(id, content.attachments, summaries, now);
        }
        // A new sort key (`received_at`) places the item anew in its folder's order. A device holds a folder's items
        // from its sort-key bound up (part-way through its first sync of the folder, paging down from the newest),
        // so an item whose key crossed that bound may be one it never received: placed anew, sync sends it as
        // `created` (an upsert), not as an `updated` of an item the device does not hold; one whose key fell below
        // the bound comes again, whole, when the paging reaches it (events and contacts live only in calendar and
        // contacts folders, which have no window: paging runs to the oldest item), or, deleted before that, reaches
        // the device as a tombstone (tombstoneKey). An edit that keeps the key is an `updated`, as a flag is.
        const placedModseq = content.receivedAt === current.receivedAt ? current.placedModseq : modseq;
        // The body is now exactly `bodyText`: an HTML body an import may have stored would otherwise outlive the edit.
        sql(
          `UPDATE items SET subject = ?, body_text = ?, body_html = NULL, body_size = ?, received_at = ?, data_json = ?,
             attachments_json = ?, has_attachments = ?, modseq = ?, placed_modseq = ?, change_key = ?
           WHERE id = ?`,
        ).run(
          content.subject,
          content.bodyText,
          Buffer.byteLength(content.bodyText ?? '', 'utf8'),
          content.receivedAt,
          JSON.stringify(content.data),
          JSON.stringify(summaries),
          summaries.some((a) => !a.isInline) ? 1 : 0,
          modseq,
          placedModseq,
          String(modseq),
          id,
        );
        reindexForSearch(id, { userId, subject: content.subject, from: current.from, to: current.to, cc: current.cc, bodyText: content.bodyText, bodyHtml: null });
        log(userId, modseq, now, 'item', id, 'updated', current.folderId, null, content.receivedAt);
        touchFolder(current.folderId, modseq, 0, 0);
        return items.byId(userId, id)!;
      });
    },
    move(userId, id, folderId, now) {
      return transaction(() => {
        const current = items.byId(userId, id);
        if (!current) throw new Error('no such item');
        if (current.folderId === folderId) return current;
        const modseq = nextModseq(userId);
        sql('UPDATE items SET folder_id = ?, modseq = ?, placed_modseq = ?, change_key = ? WHERE id = ?').run(
          folderId,
          modseq,
          modseq,
          String(modseq),
          id,
        );
        log(userId, modseq, now, 'item', id, 'moved', folderId, current.folderId, tombstoneKey(current));
        const unread = current.isRead ? 0 : 1;
        touchFolder(current.folderId, modseq, -1, -unread);
        touchFolder(folderId, modseq, 1, unread);
        return items.byId(userId, id)!;
      });
    },
    delete(userId, id, now) {
      transaction(() => {
        const current = items.byId(userId, id);
        if (!current) throw new Error('no such item');
        const modseq = nextModseq(userId);
        sql('DELETE FROM items WHERE id = ?').run(id);
        log(userId, modseq, now, 'item', id, 'deleted', current.folderId, null, tombstoneKey(current));
        touchFolder(current.folderId, modseq, -1, current.isRead ? 0 : -1);
      });
    },
    fromSender(userId, address, limit, folderIds) {
      // A range of items_sender (schema/sqlite/0011), newest first: the query repeats its expression and its
      // `type = 'email'`, and INDEXED BY holds the planner to it (a folder list could tempt it to items_window).
      // Both sides are folded by SQLite's lower(), which folds ASCII letters only, as PostgreSQL's nocase() does.
      return (
        itemSql(
          `SELECT ${ITEM_COLUMNS} FROM items INDEXED BY items_sender
           WHERE user_id = @u AND lower(json_extract(from_json, '$.address')) = lower(@a) AND type = 'email'
             AND (@folders IS NULL OR folder_id IN (SELECT value FROM json_each(@folders)))
           ORDER BY received_at DESC, id DESC LIMIT @n`,
        ).all({ u: userId, a: address, folders: folderIds ? JSON.stringify(folderIds) : null, n: limit }) as ItemValues[]
      ).map(toItem);
    },
    hasContactAddress(userId, address) {
      // The user's contacts only (items_contacts). The LIKE on the data's text is a cheap prefilter (the address as
      // JSON writes it; LIKE ignores ASCII case); the exact test compares each of the contact's addresses
      // (ContactData `emailAddresses`); a contact whose `emailAddresses` is no list has none.
      const needle = JSON.stringify(address).slice(1, -1).replace(/[\\%_]/g, (c) => `\\${c}`);
      const r = sql(
        `SELECT 1 FROM items INDEXED BY items_contacts
         WHERE user_id = @u AND type = 'contact' AND data_json LIKE @like ESCAPE '\\'
           AND json_type(data_json, '$.emailAddresses') = 'array'
           AND EXISTS (SELECT 1 FROM json_each(data_json, '$.emailAddresses') e
                       WHERE CASE WHEN e.type = 'object' THEN lower(json_extract(e.value, '$.address')) END = lower(@a))
         LIMIT 1`,
      ).get({ u: userId, a: address, like: `%${needle}%` });
      return r !== undefined;
    },
  };

  const sync: StoreMethods['sync'] = {
    changes(_userId, folderId, after, lower, limit): FolderChange[] {
      // Three index range scans merged in modseq order: items in the folder now, and items that left it
      // (deleted, moved out). Anything below the device's window is filtered out in SQL.
      return (
        sql(
          `SELECT modseq, object_id, kind FROM (
             SELECT modseq, id AS object_id, 'item' AS kind FROM items
               WHERE folder_id = @f AND modseq > @m AND (received_at, id) >= (@r, @i)
             UNION ALL
             SELECT modseq, object_id, 'deleted' FROM changes
               WHERE folder_id = @f AND modseq > @m AND op = 'deleted' AND object_type = 'item'
                 AND (received_at, object_id) >= (@r, @i)
             UNION ALL
             SELECT modseq, object_id, 'movedOut' FROM changes
               WHERE from_folder_id = @f AND modseq > @m AND (received_at, object_id) >= (@r, @i))
           ORDER BY modseq LIMIT @n`,
        ).all({ f: folderId, m: after, r: lower.receivedAt, i: lower.id, n: limit }) as Row[]
      ).map((r) => ({ modseq: r.modseq as number, objectId: r.object_id as string, kind: r.kind as FolderChange['kind'] }));
    },
    boundary(_userId, folderId, size) {
      const r = sql(
        'SELECT received_at, id FROM items WHERE folder_id = ? ORDER BY received_at DESC, id DESC LIMIT 1 OFFSET ?',
      ).get(folderId, size - 1) as Row | undefined;
      return r && { receivedAt: r.received_at as number, id: r.id as string };
    },
    range(_userId, folderId, from, to, order, limit) {
      const text =
        order === 'asc'
          ? `SELECT ${ITEM_COLUMNS} FROM items WHERE folder_id = ? AND (received_at, id) >= (?, ?) AND (received_at, id) < (?, ?)
             ORDER BY received_at, id LIMIT ?`
          : `SELECT ${ITEM_COLUMNS} FROM items WHERE folder_id = ? AND (received_at, id) >= (?, ?) AND (received_at, id) < (?, ?)
             ORDER BY received_at DESC, id DESC LIMIT ?`;
      return (itemSql(text).all(folderId, from.receivedAt, from.id, to.receivedAt, to.id, limit) as ItemValues[]).map(toItem);
    },
  };

  const idempotency: StoreMethods['idempotency'] = {
    get(userId, key) {
      const r = sql('SELECT * FROM idempotency WHERE user_id = ? AND key = ?').get(userId, key) as Row | undefined;
      return (
        r && {
          requestHash: r.request_hash as string,
          status: r.status as number,
          body: r.body as string,
          createdAt: r.created_at as number,
        }
      );
    },
    put(userId, key, v) {
      sql(
        `INSERT INTO idempotency (user_id, key, request_hash, status, body, created_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (user_id, key) DO UPDATE SET request_hash = excluded.request_hash, status = excluded.status,
           body = excluded.body, created_at = excluded.created_at`,
      ).run(userId, key, v.requestHash, v.status, v.body, v.createdAt);
    },
    purge(before) {
      return sql('DELETE FROM idempotency WHERE created_at < ?').run(before).changes;
    },
  };

  return { mailboxes, folders, items, sync, idempotency };
}
