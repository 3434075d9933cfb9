/**
 * Conversations (Organize by Thread) in PostgreSQL (schema/postgres/0014_conversations.sql; the SQLite store's
 * conversations.ts is the specification, and its row mapper is used here). The rows are written by the migration's
 * statement triggers on `items`, so nothing here writes a conversation but `purgeTombstones`. Every read names the
 * mailbox (the distribution key) and, in a unit of work, takes its lock as the other mailbox reads do (tx.ts).
 */
import type { TxStore } from '../types';
import { CONVERSATION_COLUMNS, toConversation } from '../sqlite/conversations';
import { limitParam, readLock, rowCount, rows, type Tx } from './tx';

export function conversationSteps(tx: Tx): Pick<TxStore, 'conversations'> {
  return {
    conversations: {
      *changedSince(userId, folderId, after, limit) {
        yield* readLock(tx, userId);
        return (
          yield* rows(
            tx,
            `SELECT ${CONVERSATION_COLUMNS} FROM conversations WHERE user_id = $1 AND folder_id = $2 AND modseq > $3
             ORDER BY modseq, conversation_id LIMIT $4`,
            [userId, folderId, after, limitParam(limit)],
          )
        ).map(toConversation);
      },
      *boundary(userId, folderId, size) {
        yield* readLock(tx, userId);
        const [r] = yield* rows(
          tx,
          `SELECT latest_received_at, conversation_id FROM conversations WHERE user_id = $1 AND folder_id = $2 AND message_count > 0
           ORDER BY latest_received_at DESC, conversation_id DESC LIMIT 1 OFFSET $3`,
          [userId, folderId, Math.max(size - 1, 0)],
        );
        return r && { latestReceivedAt: r.latest_received_at as number, conversationId: r.conversation_id as string };
      },
      *range(userId, folderId, from, to, order, limit) {
        yield* readLock(tx, userId);
        const direction = order === 'asc' ? '' : ' DESC';
        return (
          yield* rows(
            tx,
            `SELECT ${CONVERSATION_COLUMNS} FROM conversations
             WHERE user_id = $1 AND folder_id = $2 AND message_count > 0
               AND (latest_received_at, conversation_id) >= ($3, $4) AND (latest_received_at, conversation_id) < ($5, $6)
             ORDER BY latest_received_at${direction}, conversation_id${direction} LIMIT $7`,
            [userId, folderId, from.latestReceivedAt, from.conversationId, to.latestReceivedAt, to.conversationId, limitParam(limit)],
          )
        ).map(toConversation);
      },
      *get(userId, folderId, conversationId) {
        yield* readLock(tx, userId);
        const [r] = yield* rows(
          tx,
          `SELECT ${CONVERSATION_COLUMNS} FROM conversations
           WHERE user_id = $1 AND folder_id = $2 AND conversation_id = $3 AND message_count > 0`,
          [userId, folderId, conversationId],
        );
        return r && toConversation(r);
      },
      *count(userId, folderId) {
        yield* readLock(tx, userId);
        const [r] = yield* rows<{ n: string }>(
          tx,
          'SELECT count(*) AS n FROM conversations WHERE user_id = $1 AND folder_id = $2 AND message_count > 0',
          [userId, folderId],
        );
        return Number(r!.n);
      },
      *itemIds(userId, conversationId, limit, folderId) {
        yield* readLock(tx, userId);
        const found =
          folderId !== undefined
            ? yield* rows<{ id: string }>(
                tx,
                `SELECT id FROM items
                 WHERE user_id = $1 AND folder_id = $2 AND coalesce(conversation_id, id) = $3 AND type = 'email'
                 ORDER BY received_at DESC, id DESC LIMIT $4`,
                [userId, folderId, conversationId, limitParam(limit)],
              )
            : yield* rows<{ id: string }>(
                tx,
                `SELECT id FROM (
                   SELECT id, received_at FROM items WHERE user_id = $1 AND conversation_id = $2 AND type = 'email'
                   UNION ALL
                   SELECT id, received_at FROM items WHERE user_id = $1 AND id = $2 AND conversation_id IS NULL AND type = 'email'
                 ) AS messages
                 ORDER BY received_at DESC, id DESC LIMIT $3`,
                [userId, conversationId, limitParam(limit)],
              );
        return found.map((r) => r.id);
      },
      *ignore(userId, conversationId, now) {
        yield* rowCount(
          tx,
          'INSERT INTO ignored_conversations (user_id, conversation_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
          [userId, conversationId, now],
        );
      },
      *unignore(userId, conversationId) {
        return (yield* rowCount(tx, 'DELETE FROM ignored_conversations WHERE user_id = $1 AND conversation_id = $2', [userId, conversationId])) === 1;
      },
      *isIgnored(userId, conversationId) {
        yield* readLock(tx, userId);
        return (yield* rows(tx, 'SELECT 1 FROM ignored_conversations WHERE user_id = $1 AND conversation_id = $2', [userId, conversationId])).length > 0;
      },
      *purgeTombstones(userId, belowModseq) {
        return yield* rowCount(tx, 'DELETE FROM conversations WHERE user_id = $1 AND message_count = 0 AND modseq < $2', [userId, belowModseq]);
      },
    },
  };
}
