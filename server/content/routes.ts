/**
 * Content on demand (protocol.md §7): the full item with its body, an attachment's bytes, and the raw message.
 * Sync pages never carry attachment bytes; an app fetches them here when the user opens one.
 */
import { z } from 'zod';
import type { Handler, Route } from '../http/table';
import { parse } from '../http/validate';
import { noneMatchHits } from './download';
import type { ContentService } from './service';
import { descriptorOf, readerOf } from '../protection/reader';
import { mailboxOf } from '../http/mailbox';

const flag = z.enum(['1', '0', 'true', 'false']).transform((v) => v === '1' || v === 'true');
const ItemQuery = z.object({ bodyType: z.enum(['text', 'html']).optional() });
const AttachmentQuery = z.object({ inline: flag.optional() });

/**
 * `GET /v1/items/{itemId}`: the item as sync sends it, plus `body`. Declared with the item's other methods in
 * server/sync/routes.ts (one table serves a path, so its 405s are right). A message's content never changes after
 * delivery and the change key moves with everything else (flags, categories, moves), so the quoted change key is a
 * sound ETag for the whole answer, and it doubles as `If-Match` for PATCH.
 */
export function readItem(content: ContentService): Handler {
  return async (call) => {
    const { bodyType } = parse(ItemQuery, call.query, 'query');
    const item = await content.ownItem(mailboxOf(call), call.params.itemId!);
    const etag = `"${item.changeKey}"`;
    // Protected mail is answered per reader and per moment (its licence expires): never from a cache, never 304.
    const isProtected = descriptorOf(item) !== undefined;
    const headers = { ETag: etag, 'Cache-Control': isProtected ? 'private, no-store' : 'private, no-cache' };
    if (!isProtected && noneMatchHits(call.headers['if-none-match'], etag)) return { status: 304, headers };
    return { headers, body: await content.withBody(item, bodyType, readerOf(call)) };
  };
}

export function contentRoutes(content: ContentService): Route[] {
  return [
    {
      method: 'GET',
      path: '/v1/items/:itemId/attachments/:attachmentId',
      handler: (call) => {
        const { inline } = parse(AttachmentQuery, call.query, 'query');
        return content.attachment(mailboxOf(call), call.params.itemId!, call.params.attachmentId!, call.headers, inline ?? false, readerOf(call));
      },
    },
    {
      method: 'GET',
      path: '/v1/items/:itemId/mime',
      handler: (call) => content.mime(mailboxOf(call), call.params.itemId!, call.headers),
    },
  ];
}
