/**
 * node-postgres failures as the store's own (server/store/errors.ts): no pg error object leaves server/store.
 */
import { DatabaseError } from 'pg';
import { StoreBusy, StoreFull, StoreUnavailable, isStoreError } from '../errors';

/** Serialization failure and deadlock: the transaction lost a race, and running it again may well succeed. */
const RETRYABLE = new Set(['40001', '40P01']);

/** Socket-level failures (no SQLSTATE): the server cannot be reached. */
const NETWORK = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/** node-postgres's own messages for a connection that ended or never came (they carry no code). */
const LOST = /Connection terminated|not queryable|Client was closed|Cannot use a pool after calling end|timeout expired|ended unexpectedly/i;

const codeOf = (err: unknown): string | undefined => {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
};

/** The store's error for `err`; anything that is not PostgreSQL's (a unit's own error) is returned unchanged. */
export function storeError(err: unknown): unknown {
  if (isStoreError(err)) return err;
  const code = codeOf(err);
  if (err instanceof DatabaseError) {
    // The messages name no SQLSTATE (callers act on the class); the cause keeps PostgreSQL's own report.
    if (code === '53100' || code === '53200') return new StoreFull('The database is full.', { cause: err });
    if (code === '55P03' || code === '57014') return new StoreBusy('The database is busy: a lock or a statement took too long; retry shortly.', { cause: err });
    if (code && RETRYABLE.has(code)) return new StoreBusy('The database is busy: the transaction kept losing races; retry shortly.', { cause: err });
    // 55000 "object not in prerequisite state": what a database that is not accepting connections (being dropped,
    // or set ALLOW_CONNECTIONS false) answers a new connection.
    if (code && (code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03' || code === '53300' || code === '3D000' || code.startsWith('28') || (code === '55000' && /not currently accepting connections/i.test(err.message)))) {
      return new StoreUnavailable(`The database is unavailable: ${err.message}.`, { cause: err });
    }
    return new Error(`PostgreSQL: ${err.message}`, { cause: err });
  }
  if (code && NETWORK.has(code)) return new StoreUnavailable(`The database cannot be reached (${code}).`, { cause: err });
  if (err instanceof Error) {
    // A pool that waited too long for a free connection is busy; a connection that ended has lost the server.
    if (/timeout exceeded when trying to connect/i.test(err.message)) return new StoreBusy('No database connection came free in time.', { cause: err });
    if (LOST.test(err.message)) return new StoreUnavailable(`The database connection was lost: ${err.message}`, { cause: err });
  }
  return err;
}

/** True for the failure `storeError` made of a serialization failure or a deadlock: the unit may run again. */
export function isRetryable(err: unknown): boolean {
  if (!(err instanceof StoreBusy)) return false;
  const code = codeOf(err.cause);
  return code !== undefined && RETRYABLE.has(code);
}

/** True when the connection that failed cannot be trusted again (it goes back to the pool destroyed). */
export function isConnectionLost(err: unknown): boolean {
  return err instanceof StoreUnavailable;
}
