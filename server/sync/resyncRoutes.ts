/**
 * POST /v1/folders/:folderId/items/resync — the resync that keeps the app's cache (server/sync/resync.ts): the app
 * sends what it holds of the folder, the answer is the difference to the folder's window and a fresh item-sync token.
 * It changes nothing, so it takes no Idempotency-Key: a lost answer is asked for again.
 */
import { z } from 'zod';
import type { Call, Route } from '../http/table';
import { mailboxOf } from '../http/mailbox';
import { parse } from '../http/validate';
import type { MailService } from '../mail/service';
import type { ProtectionService } from '../protection/service';
import { readerOf } from '../protection/reader';
import type { SyncRouteDeps } from './routes';
import { MAX_HELD, type createResync } from './resync';

/** Ids and change keys are short opaque strings (16 and ~10 characters today); 64 leaves room, as elsewhere. */
const MAX_ID_LENGTH = 64;
const MAX_BODY_BYTES = 64 * 1024;

/**
 * The route's own body limit, whatever PIGEON_MAX_REQUEST_BYTES says (its floor is 1 KiB): a full window's resync is
 * ~45 KB today (16-character ids, short change keys), and MAX_HELD entries with 64-character ids and keys ~160 KB.
 */
export const RESYNC_BODY_LIMIT = 512 * 1024;

const Held = z.strictObject({
  id: z.string().min(1).max(MAX_ID_LENGTH),
  changeKey: z.string().min(1).max(MAX_ID_LENGTH).optional(),
});

const ResyncBody = z.strictObject({
  held: z.array(Held).max(MAX_HELD, `at most ${MAX_HELD} entries: a folder's window is at most 1000 items`),
  loadMore: z.boolean().optional(),
  bodyBytes: z.number().int().min(0).max(MAX_BODY_BYTES).optional(),
});

export function resyncRoutes(d: {
  mail: MailService;
  resync: ReturnType<typeof createResync>;
  protection?: ProtectionService;
  onItemsSynced?: SyncRouteDeps['onItemsSynced'];
}): Route[] {
  const { protection } = d;
  return [
    {
      method: 'POST',
      path: '/v1/folders/:folderId/items/resync',
      bodyLimit: RESYNC_BODY_LIMIT,
      handler: async (call: Call) => {
        const body = parse(ResyncBody, call.body);
        const userId = mailboxOf(call);
        const folder = await d.mail.folder(userId, call.params.folderId!);
        const device = call.device;
        const bodyBytes = body.bodyBytes ?? 0;
        const answer = await d.resync({ userId, device, folder, held: body.held, loadMore: body.loadMore ?? false, bodyBytes });
        if (protection) {
          // Both lists carry full views here (item sync's `updated` are patches): each shown as this device may see it.
          const reader = readerOf(call);
          answer.created = await protection.overlayViews(answer.created, reader, { maxBytes: body.bodyBytes, wanted: bodyBytes > 0 });
          answer.updated = await protection.overlayViews(answer.updated, reader, { wanted: false });
        }
        // Push learns how far the device synced, as after item sync.
        d.onItemsSynced?.(device, folder.id, answer.token, userId);
        return { body: answer };
      },
    },
  ];
}
