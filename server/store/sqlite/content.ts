/**
 * Blobs, full-text search and the outbox in SQLite (schema/sqlite/0004_content.sql).
 *
 * Blobs live in the database, cut into 256 KiB chunks, rather than as files beside it: a message, its attachments
 * and its change-log entry commit in one transaction with one fsync (files would need their own fsyncs and a
 * sweeper for the ones a failed transaction leaves behind), a backup is one `VACUUM INTO`, and a range request reads
 * only the chunks it covers. bench/blobstore.ts measured the alternative; the figures are in the README.
 */
import crypto from 'node:crypto';
import { newId } from '../../ids';
import type { Sql } from './devices';
import type { OutboxEntry, SearchHit, StoreMethods } from '../types';

export const BLOB_CHUNK_BYTES = 256 * 1024;

type Row = Record<string, unknown>;

export function sha256Hex(bytes: Buffer): string {
  return crypto.createHash('sha256').update(bytes).digest('hex');
}

/** Stores `bytes` once per content (the id is its SHA-256) and returns the id; the caller's row holds the reference. */
export function putBlob(sql: Sql, bytes: Buffer, now: number): string {
  const id = sha256Hex(bytes);
  const inserted = sql('INSERT INTO blobs (id, size, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING').run(
    id,
    bytes.length,
    now,
  );
  if (inserted.changes === 1) {
    const chunk = sql('INSERT INTO blob_chunks (blob_id, seq, data) VALUES (?, ?, ?)');
    for (let seq = 0, at = 0; at < bytes.length || seq === 0; seq++, at += BLOB_CHUNK_BYTES) {
      chunk.run(id, seq, bytes.subarray(at, Math.min(at + BLOB_CHUNK_BYTES, bytes.length)));
    }
  }
  return id;
}

/**
 * An FTS5 query from plain words: each word becomes a quoted string (so no word can be FTS syntax), all words must
 * match, and the last one matches as a prefix (search as you type). Every match is limited to the owner's rows.
 */
function ftsQuery(userId: string, terms: string[]): string {
  const quote = (s: string) => `"${s.replace(/"/g, '""')}"`;
  const words = terms.map((t, i) => (i === terms.length - 1 ? `${quote(t)}*` : quote(t)));
  return `owner : ${quote(userId)} AND {subject sender recipients body} : (${words.join(' AND ')})`;
}

export function contentRepositories(sql: Sql): Pick<StoreMethods, 'blobs' | 'search' | 'outbox'> {
  const toOutbox = (r: Row): OutboxEntry => ({
    id: r.id as string,
    userId: r.user_id as string,
    blobId: r.blob_id as string,
    mailFrom: r.mail_from as string,
    recipients: JSON.parse(r.recipients as string),
    state: r.state as OutboxEntry['state'],
    attempts: r.attempts as number,
    nextAttemptAt: r.next_attempt_at as number,
    lastError: (r.last_error as string | null) ?? null,
    createdAt: r.created_at as number,
    updatedAt: r.updated_at as number,
  });

  const blobs: StoreMethods['blobs'] = {
    size(_userId, id) {
      const r = sql('SELECT size FROM blobs WHERE id = ?').get(id) as { size: number } | undefined;
      return r?.size;
    },
    read(_userId, id, start, end) {
      if (end <= start) return Buffer.alloc(0);
      const first = Math.floor(start / BLOB_CHUNK_BYTES);
      const last = Math.floor((end - 1) / BLOB_CHUNK_BYTES);
      const rows = sql('SELECT seq, data FROM blob_chunks WHERE blob_id = ? AND seq BETWEEN ? AND ? ORDER BY seq').all(
        id,
        first,
        last,
      ) as { seq: number; data: Buffer }[];
      if (rows.length !== last - first + 1) throw new Error(`blob ${id} is missing chunks ${first}..${last}`);
      const whole = rows.length === 1 ? rows[0]!.data : Buffer.concat(rows.map((r) => r.data));
      const offset = start - first * BLOB_CHUNK_BYTES;
      return whole.subarray(offset, offset + (end - start));
    },
    put(_userId, bytes, now) {
      return putBlob(sql, bytes, now);
    },
  };

  const search: StoreMethods['search'] = {
    query(userId, terms, options): SearchHit[] {
      if (terms.length === 0) return [];
      // bm25 weights: owner 0, subject 10, sender 5, recipients 2, body 1. The joins re-check the owner: the `owner`
      // column narrows the search, those lines are what keep another mailbox out.
      if (!options.folderId) {
        // Rank inside the full-text index and join only the best rows: joining every match before sorting cost 4×
        // on a word found in most of a 100,000-message mailbox (bench/search.ts).
        const rows = sql(
          `SELECT d.item_id AS id, top.score AS score
           FROM (SELECT rowid, bm25(items_fts, 0.0, 10.0, 5.0, 2.0, 1.0) AS score FROM items_fts
                 WHERE items_fts MATCH ? ORDER BY score LIMIT ?) AS top
           JOIN search_docs d ON d.doc_id = top.rowid JOIN items i ON i.id = d.item_id
           WHERE d.user_id = ? AND i.user_id = ?
           ORDER BY top.score, i.received_at DESC`,
        ).all(ftsQuery(userId, terms), options.limit, userId, userId) as { id: string; score: number }[];
        return rows.map((r) => ({ itemId: r.id, score: -r.score }));
      }
      const rows = sql(
        `SELECT d.item_id AS id, bm25(items_fts, 0.0, 10.0, 5.0, 2.0, 1.0) AS score
         FROM items_fts JOIN search_docs d ON d.doc_id = items_fts.rowid JOIN items i ON i.id = d.item_id
         WHERE items_fts MATCH ? AND d.user_id = ? AND i.user_id = ? AND i.folder_id = ?
         ORDER BY score, i.received_at DESC LIMIT ?`,
      ).all(ftsQuery(userId, terms), userId, userId, options.folderId, options.limit) as { id: string; score: number }[];
      return rows.map((r) => ({ itemId: r.id, score: -r.score }));
    },
  };

  const outbox: StoreMethods['outbox'] = {
    enqueue(entry, now) {
      const id = newId();
      sql(
        `INSERT INTO outbox (id, user_id, blob_id, mail_from, recipients, state, next_attempt_at, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)`,
      ).run(id, entry.userId, entry.blobId, entry.mailFrom, JSON.stringify(entry.recipients), now, now, now);
      return outbox.byId(id)!;
    },
    byId(id) {
      const r = sql('SELECT * FROM outbox WHERE id = ?').get(id) as Row | undefined;
      return r && toOutbox(r);
    },
    due(now, limit) {
      return (
        sql(`SELECT * FROM outbox WHERE state = 'queued' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?`).all(
          now,
          limit,
        ) as Row[]
      ).map(toOutbox);
    },
    nextDueAt() {
      const r = sql(`SELECT min(next_attempt_at) AS t FROM outbox WHERE state = 'queued'`).get() as { t: number | null };
      return r.t ?? undefined;
    },
    update(id, fields, now) {
      const current = outbox.byId(id);
      if (!current) throw new Error(`no outbox entry ${id}`);
      const next = { ...current, ...fields };
      sql(
        `UPDATE outbox SET recipients = ?, state = ?, attempts = ?, next_attempt_at = ?, last_error = ?, updated_at = ?
         WHERE id = ?`,
      ).run(JSON.stringify(next.recipients), next.state, next.attempts, next.nextAttemptAt, next.lastError, now, id);
      return outbox.byId(id)!;
    },
    list(userId) {
      return (sql('SELECT * FROM outbox WHERE user_id = ? ORDER BY created_at').all(userId) as Row[]).map(toOutbox);
    },
    purge(before) {
      return sql(`DELETE FROM outbox WHERE state <> 'queued' AND updated_at < ?`).run(before).changes;
    },
  };

  return { blobs, search, outbox };
}
