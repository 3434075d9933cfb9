/**
 * Conversations (Organize by Thread) in SQLite: the reads of each folder's conversation rows and the ignored
 * conversations (schema/sqlite/0012_conversations.sql). The rows themselves are written by the migration's triggers
 * on `items` — every writer of items keeps them current without knowing of them — so nothing here writes a
 * conversation but `purgeTombstones`. The row mapper and column list are shared with the PostgreSQL store.
 *
 * The folder-scoped reads name the folder only, as the sync reads do (mail.ts): folder ids are unique on their own
 * and the caller has checked the folder is the user's, and a `user_id` condition would cost a table lookup per row
 * of what are otherwise covering scans of the window index. Nothing here is cached: writes announce nothing.
 */
import type { Sql } from './devices';
import type { ConversationRecord, EmailAddress, StoreMethods } from '../types';

type Row = Record<string, unknown>;

export const CONVERSATION_COLUMNS = `user_id, folder_id, conversation_id, latest_received_at, latest_item_id, message_count,
  unread_count, flagged_count, has_attachments, importance, participants, modseq`;

/** SQLite keeps the participants as JSON text, PostgreSQL as JSONB (parsed, with its own key order). */
function toParticipants(value: unknown): EmailAddress[] {
  const list = (typeof value === 'string' ? JSON.parse(value) : value) as Array<Record<string, unknown>>;
  return list.map((p) => ({ name: (p.name as string | null) ?? '', address: p.address as string }));
}

export const toConversation = (r: Row): ConversationRecord => ({
  userId: r.user_id as string,
  folderId: r.folder_id as string,
  conversationId: r.conversation_id as string,
  latestReceivedAt: Number(r.latest_received_at),
  latestItemId: r.latest_item_id as string,
  messageCount: Number(r.message_count),
  unreadCount: Number(r.unread_count),
  flaggedCount: Number(r.flagged_count),
  hasAttachments: r.has_attachments === true || r.has_attachments === 1,
  importance: r.importance as ConversationRecord['importance'],
  participants: toParticipants(r.participants),
  modseq: Number(r.modseq),
});

export function conversationRepositories(sql: Sql): Pick<StoreMethods, 'conversations'> {
  return {
    conversations: {
      changedSince(_userId, folderId, after, limit) {
        return (
          sql(
            `SELECT ${CONVERSATION_COLUMNS} FROM conversations WHERE folder_id = ? AND modseq > ?
             ORDER BY modseq, conversation_id LIMIT ?`,
          ).all(folderId, after, limit) as Row[]
        ).map(toConversation);
      },
      boundary(_userId, folderId, size) {
        // The predicate repeats the partial index's, so the planner can use it.
        const r = sql(
          `SELECT latest_received_at, conversation_id FROM conversations WHERE folder_id = ? AND message_count > 0
           ORDER BY latest_received_at DESC, conversation_id DESC LIMIT 1 OFFSET ?`,
        ).get(folderId, Math.max(size - 1, 0)) as Row | undefined;
        return r && { latestReceivedAt: r.latest_received_at as number, conversationId: r.conversation_id as string };
      },
      range(_userId, folderId, from, to, order, limit) {
        const direction = order === 'asc' ? '' : ' DESC';
        return (
          sql(
            `SELECT ${CONVERSATION_COLUMNS} FROM conversations
             WHERE folder_id = ? AND message_count > 0
               AND (latest_received_at, conversation_id) >= (?, ?) AND (latest_received_at, conversation_id) < (?, ?)
             ORDER BY latest_received_at${direction}, conversation_id${direction} LIMIT ?`,
          ).all(folderId, from.latestReceivedAt, from.conversationId, to.latestReceivedAt, to.conversationId, limit) as Row[]
        ).map(toConversation);
      },
      get(userId, folderId, conversationId) {
        const r = sql(
          `SELECT ${CONVERSATION_COLUMNS} FROM conversations
           WHERE folder_id = ? AND conversation_id = ? AND user_id = ? AND message_count > 0`,
        ).get(folderId, conversationId, userId) as Row | undefined;
        return r && toConversation(r);
      },
      count(_userId, folderId) {
        return (sql('SELECT count(*) AS n FROM conversations WHERE folder_id = ? AND message_count > 0').get(folderId) as { n: number }).n;
      },
      itemIds(userId, conversationId, limit, folderId) {
        if (folderId !== undefined) {
          // items_folder_conversation: the conversation's range in the folder, already newest first.
          return sql(
            `SELECT id FROM items
             WHERE folder_id = ? AND coalesce(conversation_id, id) = ? AND type = 'email' AND +user_id = ?
             ORDER BY received_at DESC, id DESC LIMIT ?`,
          )
            .pluck()
            .all(folderId, conversationId, userId, limit) as string[];
        }
        // Across folders: the messages carrying the id (items_conversation), and the message named by it that carries
        // none (the primary key).
        return sql(
          `SELECT id FROM (
             SELECT id, received_at FROM items WHERE user_id = @u AND conversation_id = @c AND type = 'email'
             UNION ALL
             SELECT id, received_at FROM items WHERE id = @c AND +user_id = @u AND conversation_id IS NULL AND type = 'email')
           ORDER BY received_at DESC, id DESC LIMIT @n`,
        )
          .pluck()
          .all({ u: userId, c: conversationId, n: limit }) as string[];
      },
      ignore(userId, conversationId, now) {
        sql('INSERT INTO ignored_conversations (user_id, conversation_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING').run(
          userId,
          conversationId,
          now,
        );
      },
      unignore(userId, conversationId) {
        return sql('DELETE FROM ignored_conversations WHERE user_id = ? AND conversation_id = ?').run(userId, conversationId).changes === 1;
      },
      isIgnored(userId, conversationId) {
        return sql('SELECT 1 FROM ignored_conversations WHERE user_id = ? AND conversation_id = ?').get(userId, conversationId) !== undefined;
      },
      purgeTombstones(userId, belowModseq) {
        return sql('DELETE FROM conversations WHERE user_id = ? AND message_count = 0 AND modseq < ?').run(userId, belowModseq).changes;
      },
    },
  };
}
