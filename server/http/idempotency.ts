/**
 * `Idempotency-Key` on mutating calls (protocol.md §6): the first successful answer is kept for 24 h, and a replay
 * with the same key returns it byte for byte (with `Idempotent-Replayed: true`) and changes nothing. The same key
 * with a different request is a client bug and answers 400. Keys are per user.
 */
import crypto from 'node:crypto';
import { errors } from '../errors';
import type { Clock } from '../clock';
import type { IdempotentResult, Step, Store, TxStore } from '../store/types';

export const IDEMPOTENCY_TTL_MS = 24 * 3600_000;
const KEY_PATTERN = /^[\x21-\x7e]{1,200}$/;

export function requestHash(parts: unknown[]): string {
  return crypto.createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}

/** A kept answer: its status and its JSON text ('' for an empty answer). */
export interface KeptAnswer {
  status: number;
  body: string;
}

const reusedKey = () =>
  errors.invalidRequest('This Idempotency-Key was already used for a different request.', [{ field: 'Idempotency-Key', message: 'reused' }]);

/** The answer a kept result gives at `now`: none once it expired; the same key with another request (`hash`) throws. */
function keptAnswer(prior: IdempotentResult | undefined, hash: string, now: number, reused: () => Error): KeptAnswer | undefined {
  if (!prior || now - prior.createdAt >= IDEMPOTENCY_TTL_MS) return undefined;
  if (prior.requestHash !== hash) throw reused();
  return { status: prior.status, body: prior.body };
}

/** `replay` inside a unit of work (a batch checks and keeps each operation's answer in the batch's transaction). */
export function* replayIn(tx: TxStore, userId: string, key: string, hash: string, now: number, reused: () => Error = reusedKey): Step<KeptAnswer | undefined> {
  return keptAnswer(yield* tx.idempotency.get(userId, key), hash, now, reused);
}

/** `remember` inside a unit of work. */
export function* rememberIn(tx: TxStore, userId: string, key: string, hash: string, status: number, body: string, now: number): Step<void> {
  yield* tx.idempotency.put(userId, key, { requestHash: hash, status, body, createdAt: now });
}

/**
 * The one implementation of idempotent replays, for single calls (the route table, http/table.ts) and for the
 * operations of a batch (each `opId` is a key of its own: `replayIn`, `rememberIn`). Keys are per user and kept for
 * IDEMPOTENCY_TTL_MS.
 */
export function createIdempotency(store: Store, clock: Clock) {
  return {
    /** The header's key, checked; undefined when the request sent none. */
    keyOf(header: string | string[] | undefined): string | undefined {
      if (header === undefined) return undefined;
      if (typeof header !== 'string' || !KEY_PATTERN.test(header)) {
        throw errors.invalidRequest('Idempotency-Key must be 1 to 200 visible ASCII characters.', [{ field: 'Idempotency-Key', message: 'malformed' }]);
      }
      return header;
    },
    /** The answer kept for this key, if any; the same key with a different request (`hash`) is a client bug: 400. */
    async replay(userId: string, key: string, hash: string): Promise<KeptAnswer | undefined> {
      return keptAnswer(await store.idempotency.get(userId, key), hash, clock.now(), reusedKey);
    },
    async remember(userId: string, key: string, hash: string, status: number, body: string): Promise<void> {
      await store.idempotency.put(userId, key, { requestHash: hash, status, body, createdAt: clock.now() });
    },
  };
}

export type Idempotency = ReturnType<typeof createIdempotency>;
