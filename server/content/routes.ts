/**
 * Content on demand (protocol.md §7): the full item with its body, an attachment's bytes, and the raw message.
 * Sync pages never carry attachment bytes; an app fetches them here when the user opens one.
 */
import { Router, type Request, type RequestHandler } from 'express';
import type { Logger } from 'pino';
import { z } from 'zod';
import { ApiError, errors } from '../errors';
import { route } from '../http/routes';
import { parse } from '../http/validate';
import type { Item, Store } from '../store/types';
import { emailBody, itemView } from '../sync/views';
import { cleanFilename, noneMatchHits, saneContentType, sendDownload } from './download';

const flag = z.enum(['1', '0', 'true', 'false']).transform((v) => v === '1' || v === 'true');
const ItemQuery = z.object({ bodyType: z.enum(['text', 'html']).optional() });
const AttachmentQuery = z.object({ inline: flag.optional() });

/** Only raster images may be shown in place: SVG can carry script, and nothing else needs a browser to render it. */
const INLINE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/bmp', 'image/avif']);

const userOf = (req: Request) => req.auth!.userId;

function ownItem(store: Store, req: Request): Item {
  const item = store.items.byId(userOf(req), String(req.params.itemId));
  if (!item) throw new ApiError(404, 'itemNotFound', 'No such item.');
  return item;
}

/**
 * `GET /v1/items/{itemId}`: the item as sync sends it, plus `body`. Declared with the item's other methods in
 * server/sync/routes.ts (one route() per path keeps the 405s right). A message's content never changes after
 * delivery and the change key moves with everything else (flags, categories, moves), so the quoted change key is a
 * sound ETag for the whole answer, and it doubles as `If-Match` for PATCH.
 */
export function readItem(store: Store): RequestHandler {
  return (req, res) => {
    const { bodyType } = parse(ItemQuery, req.query, 'query');
    const item = ownItem(store, req);
    const etag = `"${item.changeKey}"`;
    res.setHeader('ETag', etag);
    res.setHeader('Cache-Control', 'private, no-cache');
    if (noneMatchHits(req.headers['if-none-match'], etag)) {
      res.status(304).end();
      return;
    }
    const view = itemView(item);
    if (item.type === 'email') view.body = emailBody(store.items.body(item.userId, item.id), bodyType);
    res.json(view);
  };
}

/** A file name from the subject: what a user would recognise in a downloads folder. */
function messageFilename(subject: string): string {
  const stem = Array.from(cleanFilename(subject.replace(/[:*?"<>|]/g, '_'), 'message')).slice(0, 100).join('').trim();
  return `${stem || 'message'}.eml`;
}

export function contentRoutes(d: { store: Store; log: Logger }): Router {
  const router = Router();

  route(router, '/v1/items/:itemId/attachments/:attachmentId', {
    get: (req, res) => {
      const { inline } = parse(AttachmentQuery, req.query, 'query');
      const item = ownItem(d.store, req);
      const attachment = d.store.items.attachments(item.id).find((a) => a.id === String(req.params.attachmentId));
      if (!attachment) throw errors.notFound('No such attachment.');
      const contentType = saneContentType(attachment.contentType);
      sendDownload(d.store, d.log, req, res, {
        blobId: attachment.blobId,
        size: attachment.size,
        contentType,
        filename: cleanFilename(attachment.name, 'attachment'),
        disposition: inline && INLINE_TYPES.has(contentType) ? 'inline' : 'attachment',
      });
    },
  });

  route(router, '/v1/items/:itemId/mime', {
    get: (req, res) => {
      const item = ownItem(d.store, req);
      const size = item.mimeBlobId === null ? undefined : d.store.blobs.size(item.mimeBlobId);
      if (item.mimeBlobId === null || size === undefined) throw errors.notFound('This item has no raw message.');
      sendDownload(d.store, d.log, req, res, {
        blobId: item.mimeBlobId,
        size,
        contentType: 'message/rfc822',
        filename: messageFilename(item.subject),
        disposition: 'attachment',
      });
    },
  });

  return router;
}
