/**
 * Content on demand (protocol.md §7) over the store: one user's item with its whole body, and an attachment's or
 * the raw message's bytes as a download. Another user's item is simply not found.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { errors } from '../errors';
import type { Reply } from '../http/table';
import type { Item, Store } from '../store/types';
import { emailBody, itemView, type ItemView } from '../views';
import { cleanFilename, downloadReply, saneContentType } from './download';
import type { ProtectionService } from '../protection/service';
import type { Reader } from '../protection/reader';

/** Only raster images may be shown in place: SVG can carry script, and nothing else needs a browser to render it. */
const INLINE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/bmp', 'image/avif']);

/** A file name from the subject: what a user would recognise in a downloads folder. */
function messageFilename(subject: string): string {
  const stem = Array.from(cleanFilename(subject.replace(/[:*?"<>|]/g, '_'), 'message')).slice(0, 100).join('').trim();
  return `${stem || 'message'}.eml`;
}

/** `protection`: protected mail is opened for capable readers (server/protection/); without it, items are shown as stored. */
export function createContentService(store: Store, protection?: ProtectionService) {
  async function ownItem(userId: string, itemId: string): Promise<Item> {
    const item = await store.items.byId(userId, itemId);
    if (!item) throw errors.itemNotFound();
    return item;
  }

  return {
    ownItem,

    /** The item as sync sends it, plus its whole body (a message's) in the asked-for type. */
    async withBody(item: Item, bodyType: 'text' | 'html' | undefined, reader?: Reader): Promise<ItemView> {
      const view = itemView(item);
      if (item.type === 'email') view.body = emailBody(await store.items.body(item.userId, item.id), bodyType);
      return protection && reader ? protection.overlay(view, reader, { type: bodyType, wanted: true }) : view;
    },

    /** An attachment's bytes; `inline` is honoured for raster images only. */
    async attachment(userId: string, itemId: string, attachmentId: string, headers: IncomingHttpHeaders, inline: boolean, reader?: Reader): Promise<Reply> {
      const item = await ownItem(userId, itemId);
      // A protected message's attachments exist only inside its encrypted content, under its licence's rights.
      const opened = protection && reader ? await protection.attachment(item, attachmentId, reader) : undefined;
      if (opened) return opened;
      const attachment = (await store.items.attachments(userId, item.id)).find((a) => a.id === attachmentId);
      if (!attachment) throw errors.notFound('No such attachment.');
      const contentType = saneContentType(attachment.contentType);
      return downloadReply(store.blobs, headers, {
        userId,
        blobId: attachment.blobId,
        size: attachment.size,
        contentType,
        filename: cleanFilename(attachment.name, 'attachment'),
        disposition: inline && INLINE_TYPES.has(contentType) ? 'inline' : 'attachment',
      });
    },

    /** The raw message as it arrived, named after its subject. */
    async mime(userId: string, itemId: string, headers: IncomingHttpHeaders): Promise<Reply> {
      const item = await ownItem(userId, itemId);
      const size = item.mimeBlobId === null ? undefined : await store.blobs.size(userId, item.mimeBlobId);
      if (item.mimeBlobId === null || size === undefined) throw errors.notFound('This item has no raw message.');
      return downloadReply(store.blobs, headers, {
        userId,
        blobId: item.mimeBlobId,
        size,
        contentType: 'message/rfc822',
        filename: messageFilename(item.subject),
        disposition: 'attachment',
      });
    },
  };
}

export type ContentService = ReturnType<typeof createContentService>;
