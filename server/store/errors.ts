/**
 * The store's failures, named for what the caller should do rather than for the backend's code: no `SQLITE_*` or
 * PostgreSQL SQLSTATE leaves server/store. The HTTP layer maps them once (http/problem.ts), LMTP in its replies.
 */

/** The store cannot take the write: the disk (or the database's tablespace) is full. HTTP 507, LMTP 452. */
export class StoreFull extends Error {
  override readonly name = 'StoreFull';
  constructor(message = 'The store is full.', options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The store could not get its lock (or serialise the transaction) in time; retrying shortly may work. HTTP 503. */
export class StoreBusy extends Error {
  override readonly name = 'StoreBusy';
  constructor(message = 'The store is busy; retry shortly.', options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The store cannot be reached (a database connection refused or lost). HTTP 503, LMTP 451. */
export class StoreUnavailable extends Error {
  override readonly name = 'StoreUnavailable';
  constructor(message = 'The store is unavailable.', options?: { cause?: unknown }) {
    super(message, options);
  }
}

export type StoreError = StoreFull | StoreBusy | StoreUnavailable;

export const isStoreError = (err: unknown): err is StoreError =>
  err instanceof StoreFull || err instanceof StoreBusy || err instanceof StoreUnavailable;
