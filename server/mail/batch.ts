/**
 * `POST /v1/batch` (protocol.md §6): up to 500 item operations (update, move, delete) in one call. Each operation
 * is checked and answered on its own — its failure is its entry's `problem`, never the batch's — and each `opId`
 * is an idempotency key of its own, kept by the one implementation (http/idempotency.ts).
 */
import { z } from 'zod';
import { ApiError, errors } from '../errors';
import type { Clock } from '../clock';
import { rememberIn, replayIn, requestHash } from '../http/idempotency';
import { parse, text } from '../http/validate';
import type { Step, Store, TxStore } from '../store/types';
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
  const { store, clock } = deps;
  const { update, move, delete: deleteItem } = deps.mail.steps;

  /** One operation, already checked: its answer, which is what its opId keeps. */
  function* runOperation(tx: TxStore, userId: string, op: z.infer<typeof Operation>, now: number): Step<{ opId: string; status: number; item?: unknown }> {
    if (op.op === 'update') {
      const { opId: _o, op: _p, id: itemId, ifMatch, ...patch } = op;
      return { opId: op.opId, status: 200, item: yield* update(tx, userId, itemId, patch, ifMatch, now) };
    }
    if (op.op === 'move') return { opId: op.opId, status: 200, item: yield* move(tx, userId, op.id, op.destinationFolderId, now) };
    const r = yield* deleteItem(tx, userId, op.id, op.permanent ?? false, now);
    return r.item ? { opId: op.opId, status: 200, item: r.item } : { opId: op.opId, status: 204 };
  }

  /**
   * Runs the operations in order, in one unit of work for the whole batch: one transaction, one fsync instead of up
   * to 500. Each operation's own failure is its answer (HTTP 200 overall); only an unexpected error aborts and rolls
   * back the batch. An operation fails in its checks, before it writes anything, so a failed one leaves nothing
   * behind for the others to commit. `requestId` goes into each problem, as it does into a problem+json.
   */
  return async function runBatch(userId: string, operations: readonly unknown[], requestId: string): Promise<{ results: BatchResult[] }> {
    const now = clock.now();
    const results = await store.run(function* (tx) {
      const answers: BatchResult[] = [];
      for (const [index, raw] of operations.entries()) {
        const rawOpId = (raw as { opId?: unknown } | null)?.opId;
        const label = typeof rawOpId === 'string' ? rawOpId : `#${index}`;
        try {
          const op = parse(Operation, raw, `operation ${label}`);
          // A space cannot occur in an Idempotency-Key header, so batch opIds never collide with header keys.
          const key = `batch op ${op.opId}`;
          const hash = requestHash([op]);
          const prior = yield* replayIn(tx, userId, key, hash, now, () =>
            errors.invalidRequest(`opId ${op.opId} was already used for a different operation.`),
          );
          if (prior) {
            answers.push({ ...(JSON.parse(prior.body) as { opId: string; status: number }), replayed: true });
            continue;
          }
          const result = yield* runOperation(tx, userId, op, now);
          yield* rememberIn(tx, userId, key, hash, result.status, JSON.stringify(result), now);
          answers.push(result);
        } catch (err) {
          if (!(err instanceof ApiError)) throw err;
          answers.push({ opId: label, status: err.status, problem: problemOf(err, requestId) });
        }
      }
      return answers;
    });
    return { results };
  };
}

export type RunBatch = ReturnType<typeof createBatch>;
