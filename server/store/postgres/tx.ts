/**
 * What every PostgreSQL step is written against: one transaction's connection, and what the transaction collects
 * for the store to announce after it commits.
 *
 * A step is a generator that yields the promise of its query and is resumed with the result (server/store/unit.ts):
 *
 *   *byId(userId, id) {
 *     const [r] = yield* rows<Row>(tx, 'SELECT … WHERE user_id = $1 AND id = $2', [userId, id]);
 *     return r && toItem(r);
 *   }
 *
 * Steps yield only their queries (through `rows`, `rowCount` and `lockMailbox`), so every method is written once and
 * runs the same in a unit of work, in a transaction of its own, or as a lone read on any pooled connection.
 */
import type { QueryResult } from 'pg';
import type { Invalidation, Step } from '../types';

export type Row = Record<string, unknown>;

/** Told of every change as it is made, so the store can announce it once the transaction commits. */
export type ChangeRecorder = (userId: string, modseq: number, folderIds: Array<string | null>, hierarchy: boolean) => void;
/** Told of every write to a record the hot cache keeps; the store announces it once the transaction commits. */
export type Invalidate = (change: Invalidation) => void;

export interface Tx {
  /** Sends one statement (a prepared one, named after its text) on the transaction's connection. */
  query(text: string, values: readonly unknown[]): Promise<QueryResult>;
  /**
   * True in a unit of work (`store.run`): its reads of a mailbox's data take the mailbox's lock too, because the
   * unit may write after deciding on what it read (mail.ts, `lockMailbox`).
   */
  readonly unit: boolean;
  /** Mailboxes whose row this transaction has locked (it holds the lock until it ends). */
  readonly locked: Set<string>;
  readonly record: ChangeRecorder;
  readonly invalidate: Invalidate;
}

/** One statement; its rows. */
export function* rows<R = Row>(tx: Tx, text: string, values: readonly unknown[] = []): Step<R[]> {
  const r = (yield tx.query(text, values)) as QueryResult;
  return r.rows as R[];
}

/** One statement; how many rows it wrote (or read). */
export function* rowCount(tx: Tx, text: string, values: readonly unknown[] = []): Step<number> {
  const r = (yield tx.query(text, values)) as QueryResult;
  return r.rowCount ?? 0;
}

/**
 * A value for a JSONB parameter. PostgreSQL text and JSONB cannot hold U+0000 (SQLite can): it becomes U+FFFD, as in
 * every other text parameter (see `textParam`).
 */
export const json = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) => (typeof v === 'string' && v.includes('\0') ? v.replace(/\0/g, '\uFFFD') : v));

/** A parameter PostgreSQL accepts: U+0000, which no PostgreSQL text can hold, becomes U+FFFD (in arrays too). */
export const textParam = (v: unknown): unknown =>
  typeof v === 'string' ? (v.includes('\0') ? v.replace(/\0/g, '\uFFFD') : v) : Array.isArray(v) ? v.map(textParam) : v;

/** SQLite reads a negative LIMIT as "no limit"; PostgreSQL refuses one, and reads NULL that way. */
export const limitParam = (n: number): number | null => (n < 0 ? null : n);

/** The mailbox lock (mail.ts): once per transaction and mailbox. */
export const LOCK_MAILBOX = 'SELECT 1 FROM mailboxes WHERE user_id = $1 FOR NO KEY UPDATE';

/**
 * Takes `userId`'s mailbox lock unless this transaction holds it. Every change to a mailbox updates its row
 * (`nextModseq`), so holding the row's lock from the first step keeps every other writer of the mailbox out until
 * commit: what SQLite's BEGIN IMMEDIATE gives a whole transaction, here per mailbox. Taken by writes that read before
 * they write (the decision must still hold when they write) and, in a unit of work, by every read of the mailbox's
 * data (the unit may write on what it read, and its reads then see one state: no writer of the mailbox commits
 * between them). A user without a mailbox has nothing to lock; FOR NO KEY UPDATE leaves foreign-key checks free.
 */
export function* lockMailbox(tx: Tx, userId: string): Step<void> {
  if (tx.locked.has(userId)) return;
  yield tx.query(LOCK_MAILBOX, [userId]);
  tx.locked.add(userId);
}

/** A read of a mailbox's data: locks in a unit of work (see `lockMailbox`), not alone. */
export function* readLock(tx: Tx, userId: string): Step<void> {
  if (tx.unit) yield* lockMailbox(tx, userId);
}
