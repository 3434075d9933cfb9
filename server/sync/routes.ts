/**
 * Sync and app-change routes (protocol.md §4–§6): hierarchy sync and folder operations, per-folder item sync, item
 * changes and batches. Validation happens here; the services own the rules.
 */
import { Router, type Request } from 'express';
import { z } from 'zod';
import { ApiError, errors } from '../errors';
import type { Clock } from '../clock';
import { route } from '../http/routes';
import { jsonBody } from '../http/body';
import { parse, text } from '../http/validate';
import { idempotent, requestHash, IDEMPOTENCY_TTL_MS } from '../http/idempotency';
import { callingDevice } from '../devices/gate';
import type { DeviceRecord, Store } from '../store/types';
import type { MailService } from '../mail/service';
import { DEFAULT_MAX_CHANGES, MAX_CHANGES, pageJson, type createItemSync } from './itemSync';
import type { createFolderSync } from './folderSync';
import { readItem } from '../content/routes';

const flag = z.enum(['1', '0', 'true', 'false']).transform((v) => v === '1' || v === 'true');

const FolderSyncQuery = z.object({
  token: z.string().min(1).max(2048).optional(),
  maxChanges: z.coerce.number().int().min(1).max(MAX_CHANGES).optional(),
});

const ItemSyncQuery = FolderSyncQuery.extend({
  loadMore: flag.optional(),
  bodyBytes: z.coerce.number().int().min(0).max(64 * 1024).optional(),
});

const folderName = text(255).pipe(z.string().trim().min(1, 'must not be empty'));
const FolderCreate = z.strictObject({ displayName: folderName, parentId: z.string().max(64).nullable().optional() });
const FolderUpdate = z
  .strictObject({ displayName: folderName.optional(), parentId: z.string().max(64).nullable().optional() })
  .refine((v) => v.displayName !== undefined || v.parentId !== undefined, 'give displayName or parentId');

const Patch = {
  isRead: z.boolean().optional(),
  isFlagged: z.boolean().optional(),
  categories: z.array(text(100).pipe(z.string().min(1))).max(50).optional(),
  inferenceClassification: z.enum(['focused', 'other']).optional(),
};
const ItemPatch = z.strictObject(Patch);
const Move = z.strictObject({ destinationFolderId: z.string().min(1).max(64) });

const opId = z.string().min(1).max(200);
const id = z.string().min(1).max(64);
const Operation = z.discriminatedUnion('op', [
  z.strictObject({ opId, op: z.literal('update'), id, ifMatch: z.string().max(64).optional(), ...Patch }),
  z.strictObject({ opId, op: z.literal('move'), id, destinationFolderId: z.string().min(1).max(64) }),
  z.strictObject({ opId, op: z.literal('delete'), id, permanent: z.boolean().optional() }),
]);
const Batch = z.strictObject({ operations: z.array(z.unknown()).min(1).max(500) });

export interface SyncRouteDeps {
  store: Store;
  clock: Clock;
  mail: MailService;
  syncItems: ReturnType<typeof createItemSync>;
  syncFolders: ReturnType<typeof createFolderSync>;
  limits: { maxRequestBytes: number; maxJsonDepth: number };
  /** Told of every item-sync token issued (push keeps each device's last-synced modseq per folder, for ping). */
  onItemsSynced?: (device: DeviceRecord, folderId: string, token: string) => void;
}

const userOf = (req: Request) => req.auth!.userId;

/** Renders an error as a batch entry's `problem`, the same members problem+json has. */
function problemOf(err: ApiError, requestId: string) {
  return { type: `urn:pigeon:problem:${err.code}`, title: err.title, status: err.status, detail: err.message, code: err.code, requestId, ...err.extra };
}

export function syncRoutes(d: SyncRouteDeps): Router {
  const router = Router();
  const json = jsonBody(d.limits.maxRequestBytes, d.limits.maxJsonDepth);
  const idem = idempotent(d.store, d.clock);

  route(router, '/v1/folders/sync', {
    get: (req, res) => {
      const q = parse(FolderSyncQuery, req.query, 'query');
      res.json(d.syncFolders({ userId: userOf(req), device: callingDevice(req), token: q.token, maxChanges: q.maxChanges ?? DEFAULT_MAX_CHANGES }));
    },
  });

  route(router, '/v1/folders', {
    post: [
      ...json,
      idem,
      (req, res) => {
        const body = parse(FolderCreate, req.body);
        res.status(201).json(d.mail.createFolder(userOf(req), { displayName: body.displayName, parentId: body.parentId ?? null }));
      },
    ],
  });

  route(router, '/v1/folders/:folderId', {
    patch: [
      ...json,
      idem,
      (req, res) => void res.json(d.mail.updateFolder(userOf(req), String(req.params.folderId), parse(FolderUpdate, req.body))),
    ],
    delete: [
      idem,
      (req, res) => {
        d.mail.deleteFolder(userOf(req), String(req.params.folderId));
        res.status(204).end();
      },
    ],
  });

  route(router, '/v1/folders/:folderId/items/sync', {
    get: (req, res) => {
      const q = parse(ItemSyncQuery, req.query, 'query');
      const folder = d.store.folders.byId(userOf(req), String(req.params.folderId));
      if (!folder) throw new ApiError(404, 'folderNotFound', 'No such folder.');
      const device = callingDevice(req);
      const page = d.syncItems({
        userId: userOf(req),
        device,
        folder,
        token: q.token,
        maxChanges: q.maxChanges ?? DEFAULT_MAX_CHANGES,
        loadMore: q.loadMore ?? false,
        bodyBytes: q.bodyBytes ?? 0,
      });
      d.onItemsSynced?.(device, folder.id, page.token); // in memory only: a sync still writes nothing
      res.type('json').send(pageJson(page)); // res.json(page) would serialise every entry a second time
    },
  });

  route(router, '/v1/items/:itemId', {
    get: readItem(d.store),
    patch: [
      ...json,
      idem,
      (req, res) => {
        const patch = parse(ItemPatch, req.body);
        const ifMatch = req.headers['if-match'];
        if (ifMatch !== undefined && (typeof ifMatch !== 'string' || ifMatch.length > 64)) throw errors.invalidRequest('If-Match must be one change key.');
        res.json(d.mail.update(userOf(req), String(req.params.itemId), patch, ifMatch?.replace(/^W\//, '').replace(/^"(.*)"$/, '$1')));
      },
    ],
    delete: [
      idem,
      (req, res) => {
        const permanent = parse(z.object({ permanent: flag.optional() }), req.query, 'query').permanent ?? false;
        const result = d.mail.delete(userOf(req), String(req.params.itemId), permanent);
        if (result.item) res.json(result.item);
        else res.status(204).end();
      },
    ],
  });

  route(router, '/v1/items/:itemId/move', {
    post: [
      ...json,
      idem,
      (req, res) => void res.json(d.mail.move(userOf(req), String(req.params.itemId), parse(Move, req.body).destinationFolderId)),
    ],
  });

  route(router, '/v1/batch', {
    post: [
      ...json,
      idem,
      (req, res) => {
        const { operations } = parse(Batch, req.body);
        const userId = userOf(req);
        // One transaction for the whole batch: one fsync instead of up to 500. Each operation's own failure is its
        // answer (HTTP 200 overall); only an unexpected error aborts and rolls back the batch.
        const results = d.store.transaction(() =>
          operations.map((raw, index) => {
            const rawOpId = (raw as { opId?: unknown } | null)?.opId;
            const label = typeof rawOpId === 'string' ? rawOpId : `#${index}`;
            try {
              const op = parse(Operation, raw, `operation ${label}`);
              // A space cannot occur in an Idempotency-Key header, so batch opIds never collide with header keys.
              const key = `batch op ${op.opId}`;
              const hash = requestHash([op]);
              const prior = d.store.idempotency.get(userId, key);
              if (prior && d.clock.now() - prior.createdAt < IDEMPOTENCY_TTL_MS) {
                if (prior.requestHash !== hash) throw errors.invalidRequest(`opId ${op.opId} was already used for a different operation.`);
                return { ...(JSON.parse(prior.body) as object), replayed: true };
              }
              let result: { opId: string; status: number; item?: unknown };
              if (op.op === 'update') {
                const { opId: _o, op: _p, id: itemId, ifMatch, ...patch } = op;
                result = { opId: op.opId, status: 200, item: d.mail.update(userId, itemId, patch, ifMatch) };
              } else if (op.op === 'move') {
                result = { opId: op.opId, status: 200, item: d.mail.move(userId, op.id, op.destinationFolderId) };
              } else {
                const r = d.mail.delete(userId, op.id, op.permanent ?? false);
                result = r.item ? { opId: op.opId, status: 200, item: r.item } : { opId: op.opId, status: 204 };
              }
              d.store.idempotency.put(userId, key, { requestHash: hash, status: result.status, body: JSON.stringify(result), createdAt: d.clock.now() });
              return result;
            } catch (err) {
              if (err instanceof ApiError) return { opId: label, status: err.status, problem: problemOf(err, req.id) };
              throw err;
            }
          }),
        );
        res.json({ results });
      },
    ],
  });

  return router;
}
