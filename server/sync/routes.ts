/**
 * Sync and app-change routes (protocol.md §4–§6): hierarchy sync and folder operations, per-folder item sync, item
 * changes and batches. Validation happens here; the services own the rules.
 */
import { z } from 'zod';
import { ApiError, errors } from '../errors';
import type { Call, Route } from '../http/table';
import { parse, text } from '../http/validate';
import type { DeviceRecord } from '../store/types';
import type { MailService } from '../mail/service';
import { ITEM_PATCH_FIELDS, MAX_BATCH_OPERATIONS, type RunBatch } from '../mail/batch';
import { DEFAULT_MAX_CHANGES, MAX_CHANGES, pageJson, type createItemSync } from './itemSync';
import type { createFolderSync } from './folderSync';
import { readItem } from '../content/routes';
import type { ContentService } from '../content/service';
import type { ProtectionService } from '../protection/service';
import { readerOf } from '../protection/reader';
import type { ItemView } from '../views';
import { mailboxOf } from '../http/mailbox';

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

const ItemPatch = z.strictObject(ITEM_PATCH_FIELDS);
const Move = z.strictObject({ destinationFolderId: z.string().min(1).max(64) });
const BatchRequest = z.strictObject({ operations: z.array(z.unknown()).min(1).max(MAX_BATCH_OPERATIONS) });

export interface SyncRouteDeps {
  mail: MailService;
  batch: RunBatch;
  content: ContentService;
  syncItems: ReturnType<typeof createItemSync>;
  syncFolders: ReturnType<typeof createFolderSync>;
  /** Opens protected mail for devices that may read it (server/protection/); items are shown as stored without it. */
  protection?: ProtectionService;
  /**
   * Told of every item-sync token issued (push keeps each device's last-synced modseq per folder, for ping), with the
   * mailbox it is bound to: the caller's own or a shared one (which a ping with X-Mailbox watches).
   */
  onItemsSynced?: (device: DeviceRecord, folderId: string, token: string, mailboxId: string) => void;
}

export function syncRoutes(d: SyncRouteDeps): Route[] {
  const { protection } = d;
  /** An item answer as the calling device may see it (protected mail opened or not). */
  const shown = async (call: Call, view: ItemView): Promise<ItemView> => (protection ? protection.overlay(view, readerOf(call)) : view);
  /** `present` of a route answering one item (http/table.ts: applied after an idempotent answer is kept). */
  const presentItem = protection ? (call: Call, body: unknown) => shown(call, body as ItemView) : undefined;
  /** `present` of the batch: each operation's item, and the server's version a conflict attaches. */
  const presentBatch = protection
    ? async (call: Call, body: unknown) => {
        const answer = body as Awaited<ReturnType<RunBatch>>;
        const reader = readerOf(call);
        for (const r of answer.results) {
          if ('item' in r && r.item) r.item = await protection.overlay(r.item as ItemView, reader);
          else if ('problem' in r && r.problem.item) r.problem.item = await protection.overlay(r.problem.item as ItemView, reader);
        }
        return answer;
      }
    : undefined;
  return [
    {
      method: 'GET',
      path: '/v1/folders/sync',
      handler: async (call) => {
        const q = parse(FolderSyncQuery, call.query, 'query');
        return { body: await d.syncFolders({ userId: mailboxOf(call), device: call.device, token: q.token, maxChanges: q.maxChanges ?? DEFAULT_MAX_CHANGES }) };
      },
    },
    {
      method: 'POST',
      path: '/v1/folders',
      idempotent: true,
      handler: async (call) => {
        const body = parse(FolderCreate, call.body);
        return { status: 201, body: await d.mail.createFolder(mailboxOf(call), { displayName: body.displayName, parentId: body.parentId ?? null }) };
      },
    },
    {
      method: 'PATCH',
      path: '/v1/folders/:folderId',
      idempotent: true,
      handler: async (call) => ({ body: await d.mail.updateFolder(mailboxOf(call), call.params.folderId!, parse(FolderUpdate, call.body)) }),
    },
    {
      method: 'DELETE',
      path: '/v1/folders/:folderId',
      idempotent: true,
      handler: async (call) => {
        await d.mail.deleteFolder(mailboxOf(call), call.params.folderId!);
        return {};
      },
    },
    {
      method: 'GET',
      path: '/v1/folders/:folderId/items/sync',
      handler: async (call) => {
        const q = parse(ItemSyncQuery, call.query, 'query');
        const userId = mailboxOf(call);
        const folder = await d.mail.folder(userId, call.params.folderId!);
        const device = call.device;
        const page = await d.syncItems({
          userId,
          device,
          folder,
          token: q.token,
          maxChanges: q.maxChanges ?? DEFAULT_MAX_CHANGES,
          loadMore: q.loadMore ?? false,
          bodyBytes: q.bodyBytes ?? 0,
        });
        if (protection) page.created = await protection.overlayViews(page.created, readerOf(call), { maxBytes: q.bodyBytes, wanted: (q.bodyBytes ?? 0) > 0 });
        // In memory only: a sync still writes nothing.
        d.onItemsSynced?.(device, folder.id, page.token, userId);
        return { json: pageJson(page) }; // `body: page` would serialise every entry a second time
      },
    },
    // GET is content's (server/content/routes.ts); a path's methods are declared in one table, for the 405s.
    { method: 'GET', path: '/v1/items/:itemId', handler: readItem(d.content) },
    {
      method: 'PATCH',
      path: '/v1/items/:itemId',
      idempotent: true,
      present: presentItem,
      handler: async (call) => {
        const patch = parse(ItemPatch, call.body);
        const ifMatch = call.headers['if-match'];
        if (ifMatch !== undefined && (typeof ifMatch !== 'string' || ifMatch.length > 64)) throw errors.invalidRequest('If-Match must be one change key.');
        try {
          return { body: await d.mail.update(mailboxOf(call), call.params.itemId!, patch, ifMatch?.replace(/^W\//, '').replace(/^"(.*)"$/, '$1')) };
        } catch (err) {
          // A conflict attaches the server's version: shown as this device may see it, like any other answer.
          if (err instanceof ApiError && err.extra.item) err.extra.item = await shown(call, err.extra.item as ItemView);
          throw err;
        }
      },
    },
    {
      method: 'DELETE',
      path: '/v1/items/:itemId',
      idempotent: true,
      present: presentItem,
      handler: async (call) => {
        const permanent = parse(z.object({ permanent: flag.optional() }), call.query, 'query').permanent ?? false;
        const result = await d.mail.delete(mailboxOf(call), call.params.itemId!, permanent);
        return result.item ? { body: result.item } : {};
      },
    },
    {
      method: 'POST',
      path: '/v1/items/:itemId/move',
      idempotent: true,
      handler: async (call) => ({ body: await d.mail.move(mailboxOf(call), call.params.itemId!, parse(Move, call.body).destinationFolderId) }),
      present: presentItem,
    },
    {
      method: 'POST',
      path: '/v1/batch',
      idempotent: true,
      present: presentBatch,
      handler: async (call) => {
        const { operations } = parse(BatchRequest, call.body);
        return { body: await d.batch(mailboxOf(call), operations, call.requestId) };
      },
    },
  ];
}
