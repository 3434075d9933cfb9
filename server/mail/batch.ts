/**
 * `POST /v1/batch` (protocol.md §6): up to 500 item operations (update, move, delete) in one call. Each operation
 * is checked and answered on its own — its failure is its entry's `problem`, never the batch's — and each `opId`
 * is an idempotency key of its own, kept by the one implementation (http/idempotency.ts).
 */
import { z } from 'zod';
import { ApiError, errors } from '../errors';
import type { Clock } from '../clock';
import { createIdempotency, requestHash } from '../http/idempotency';
import { parse, text } from '../http/validate';
import type { Store } from '../store/types';
import type { MailService } from './service';

/** The fields an app may change on an item: `PATCH /v1/items/{id}` and a batch's `update` take the same. */
export const ITEM_PATCH_FIELDS = {
  isRead: z.boolean().optional(),
  isFlagged: z.boolean().optional(),
  categories: z.array(text(100).pipe(z.string().min(1))).max(50).optional(),
  inferenceClassification: z.enum(['focused', 'other']).optional(),
};

const opId = z.string().min(1).max(200);
const id = z.string().min(1).max(64);
const Operation = z.discriminatedUnion('op', [
  z.strictObject({ opId, op: z.literal('update'), id, ifMatch: z.string().max(64).optional(), ...ITEM_PATCH_FIELDS }),
  z.strictObject({ opId, op: z.literal('move'), id, destinationFolderId: z.string().min(1).max(64) }),
  z.strictObject({ opId, op: z.literal('delete'), id, permanent: z.boolean().optional() }),
]);

/** The most operations one batch may carry (advertised by the session call as `maxBatchOperations`). */
export const MAX_BATCH_OPERATIONS = 500;

export type BatchResult =
  | { opId: string; status: number; item?: unknown; replayed?: true }
  | { opId: string; status: number; problem: Record<string, unknown> };

/** Renders an error as a batch entry's `problem`, the same members problem+json has. */
function problemOf(err: ApiError, requestId: string) {
  return { type: `urn:pigeon:problem:${err.code}`, title: err.title, status: err.status, detail: err.message, code: err.code, requestId, ...err.extra };
}

export function createBatch(deps: { store: Store; clock: Clock; mail: MailService }) {
  const { store, mail } = deps;
  const idempotency = createIdempotency(store, deps.clock);

  /** One operation, already checked: its answer, which is what its opId keeps. */
  function run(userId: string, op: z.infer<typeof Operation>): { opId: string; status: number; item?: unknown } {
    if (op.op === 'update') {
      const { opId: _o, op: _p, id: itemId, ifMatch, ...patch } = op;
      return { opId: op.opId, status: 200, item: mail.update(userId, itemId, patch, ifMatch) };
    }
    if (op.op === 'move') return { opId: op.opId, status: 200, item: mail.move(userId, op.id, op.destinationFolderId) };
    const r = mail.delete(userId, op.id, op.permanent ?? false);
    return r.item ? { opId: op.opId, status: 200, item: r.item } : { opId: op.opId, status: 204 };
  }

  /**
   * Runs the operations in order, in one transaction for the whole batch: one fsync instead of up to 500. Each
   * operation's own failure is its answer (HTTP 200 overall); only an unexpected error aborts and rolls back the
   * batch. `requestId` goes into each problem, as it does into a problem+json.
   */
  return function runBatch(userId: string, operations: readonly unknown[], requestId: string): { results: BatchResult[] } {
    const results = store.transaction(() =>
      operations.map((raw, index): BatchResult => {
        const rawOpId = (raw as { opId?: unknown } | null)?.opId;
        const label = typeof rawOpId === 'string' ? rawOpId : `#${index}`;
        try {
          const op = parse(Operation, raw, `operation ${label}`);
          // A space cannot occur in an Idempotency-Key header, so batch opIds never collide with header keys.
          const key = `batch op ${op.opId}`;
          const hash = requestHash([op]);
          const prior = idempotency.replay(userId, key, hash, () =>
            errors.invalidRequest(`opId ${op.opId} was already used for a different operation.`),
          );
          if (prior) return { ...(JSON.parse(prior.body) as { opId: string; status: number }), replayed: true };
          const result = run(userId, op);
          idempotency.remember(userId, key, hash, result.status, JSON.stringify(result));
          return result;
        } catch (err) {
          if (err instanceof ApiError) return { opId: label, status: err.status, problem: problemOf(err, requestId) };
          throw err;
        }
      }),
    );
    return { results };
  };
}

export type RunBatch = ReturnType<typeof createBatch>;
