/**
 * Blobs, full-text search and the outbox in PostgreSQL (the SQLite store's content.ts is the specification).
 *
 * Blobs live in the database as on SQLite, cut into 256 KiB chunks (BYTEA rows keyed by mailbox, blob and chunk
 * number): a message, its attachments and its change-log entry commit in one transaction, and a range request reads
 * only the chunks it covers. They are content-addressed per mailbox (the rows carry the mailbox's key, README.md), so
 * the same attachment in two mailboxes is stored twice.
 */
import crypto from 'node:crypto';
import { newId } from '../../ids';
import type { OutboxEntry, SearchHit, TxStore } from '../types';
import { RANK_WEIGHTS, searchQuery } from './search';
import { json, limitParam, lockMailbox, readLock, rows, rowCount, type Row, type Tx } from './tx';

export const BLOB_CHUNK_BYTES = 256 * 1024;

export function sha256Hex(bytes: Buffer): string {
  return crypto.createHash('sha256').update(bytes).digest('hex');
}

/**
 * Stores `bytes` once per content in `userId`'s mailbox (the id is its SHA-256) and returns the id; the caller's row
 * holds the reference. One statement: the blob row, and its chunks cut by the server from the one parameter (sent in
 * binary), only when the row is new.
 */
export function* putBlob(tx: Tx, userId: string, bytes: Buffer, now: number) {
  const id = sha256Hex(bytes);
  yield* rows(
    tx,
    `WITH blob AS (
       INSERT INTO blobs (user_id, id, size, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, id) DO NOTHING RETURNING id)
     INSERT INTO blob_chunks (user_id, blob_id, seq, data)
     SELECT $1, blob.id, seq, substring($5::bytea FROM seq * ${BLOB_CHUNK_BYTES} + 1 FOR ${BLOB_CHUNK_BYTES})
     FROM blob, generate_series(0, greatest((($3::bigint + ${BLOB_CHUNK_BYTES - 1}) / ${BLOB_CHUNK_BYTES})::int - 1, 0)) AS seq`,
    [userId, id, bytes.length, now, bytes],
  );
  return id;
}

const toOutbox = (r: Row): OutboxEntry => ({
  id: r.id as string,
  userId: r.user_id as string,
  blobId: r.blob_id as string,
  mailFrom: r.mail_from as string,
  recipients: r.recipients as string[],
  state: r.state as OutboxEntry['state'],
  attempts: r.attempts as number,
  nextAttemptAt: r.next_attempt_at as number,
  lastError: (r.last_error as string | null) ?? null,
  createdAt: r.created_at as number,
  updatedAt: r.updated_at as number,
});

export function contentSteps(tx: Tx): Pick<TxStore, 'blobs' | 'search' | 'outbox'> {
  const blobs: TxStore['blobs'] = {
    *size(userId, id) {
      yield* readLock(tx, userId);
      const [r] = yield* rows<{ size: number }>(tx, 'SELECT size FROM blobs WHERE user_id = $1 AND id = $2', [userId, id]);
      return r?.size;
    },
    *read(userId, id, start, end) {
      if (end <= start) return Buffer.alloc(0);
      yield* readLock(tx, userId);
      const first = Math.floor(start / BLOB_CHUNK_BYTES);
      const last = Math.floor((end - 1) / BLOB_CHUNK_BYTES);
      const chunks = yield* rows<{ seq: number; data: Buffer }>(
        tx,
        'SELECT seq, data FROM blob_chunks WHERE user_id = $1 AND blob_id = $2 AND seq BETWEEN $3 AND $4 ORDER BY seq',
        [userId, id, first, last],
      );
      if (chunks.length !== last - first + 1) throw new Error(`blob ${id} is missing chunks ${first}..${last}`);
      const whole = chunks.length === 1 ? chunks[0]!.data : Buffer.concat(chunks.map((r) => r.data));
      const offset = start - first * BLOB_CHUNK_BYTES;
      return whole.subarray(offset, offset + (end - start));
    },
    *put(userId, bytes, now) {
      // A lone put may race a delete that releases the same content: the mailbox's lock orders them (as SQLite's
      // single writer does), so the blob the caller is handed exists when its reference is written.
      yield* lockMailbox(tx, userId);
      return yield* putBlob(tx, userId, bytes, now);
    },
  };

  const search: TxStore['search'] = {
    *query(userId, terms, options): Generator<Promise<unknown>, SearchHit[], unknown> {
      if (terms.length === 0) return [];
      const q = searchQuery(userId, terms);
      if (!q) return [];
      yield* readLock(tx, userId);
      // The owner's lexeme is part of the match, so the GIN index intersects with the caller's documents; the join
      // on the primary key re-checks the owner and gives the folder and the tie-break (newest first).
      const found = yield* rows<{ id: string; score: number }>(
        tx,
        `SELECT d.item_id AS id, ts_rank('${RANK_WEIGHTS}', d.document, $3::tsquery, 1) AS score
         FROM search_docs d JOIN items i ON i.user_id = d.user_id AND i.id = d.item_id
         WHERE d.user_id = $1 AND d.document @@ $2::tsquery AND ($4::text IS NULL OR i.folder_id = $4)
         ORDER BY score DESC, i.received_at DESC, i.id LIMIT $5`,
        [userId, q.match, q.rank, options.folderId ?? null, limitParam(options.limit)],
      );
      return found.map((r) => ({ itemId: r.id, score: r.score }));
    },
  };

  const outbox: TxStore['outbox'] = {
    *enqueue(entry, now) {
      const [r] = yield* rows(
        tx,
        `INSERT INTO outbox (user_id, id, blob_id, mail_from, recipients, state, next_attempt_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'queued', $6, $6, $6) RETURNING *`,
        [entry.userId, newId(), entry.blobId, entry.mailFrom, json(entry.recipients), now],
      );
      return toOutbox(r!);
    },
    *byId(id) {
      const [r] = yield* rows(tx, 'SELECT * FROM outbox WHERE id = $1', [id]);
      return r && toOutbox(r);
    },
    *due(now, limit) {
      return (
        yield* rows(tx, `SELECT * FROM outbox WHERE state = 'queued' AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2`, [
          now,
          limitParam(limit),
        ])
      ).map(toOutbox);
    },
    *nextDueAt() {
      const [r] = yield* rows<{ t: number | null }>(tx, `SELECT min(next_attempt_at) AS t FROM outbox WHERE state = 'queued'`);
      return r?.t ?? undefined;
    },
    *update(id, fields, now) {
      // Read and write under the row's lock: the fields not given keep the values of the row being replaced.
      const [row] = yield* rows(tx, 'SELECT * FROM outbox WHERE id = $1 FOR NO KEY UPDATE', [id]);
      if (!row) throw new Error(`no outbox entry ${id}`);
      const next = { ...toOutbox(row), ...fields };
      const [r] = yield* rows(
        tx,
        `UPDATE outbox SET recipients = $1, state = $2, attempts = $3, next_attempt_at = $4, last_error = $5, updated_at = $6
         WHERE user_id = $7 AND id = $8 RETURNING *`,
        [json(next.recipients), next.state, next.attempts, next.nextAttemptAt, next.lastError, now, next.userId, id],
      );
      return toOutbox(r!);
    },
    *list(userId) {
      yield* readLock(tx, userId);
      return (yield* rows(tx, 'SELECT * FROM outbox WHERE user_id = $1 ORDER BY created_at, id', [userId])).map(toOutbox);
    },
    *purge(before) {
      return yield* rowCount(tx, `DELETE FROM outbox WHERE state <> 'queued' AND updated_at < $1`, [before]);
    },
  };

  return { blobs, search, outbox };
}
