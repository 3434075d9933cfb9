/**
 * The wire shapes of folders and items (protocol.md §4, §5), shared by every domain that answers with them (sync,
 * content, mail changes, search). One place, so sync pages, item reads and conflict answers always agree field for
 * field — the convergence invariant compares exactly these objects.
 */
import type { Folder, Item } from './store/types';
import { sanitizeEmailHtml, sanitizedHtmlPrefix } from './content/sanitize';
import { htmlToPlain } from './content/text';

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export function folderView(f: Folder) {
  return { id: f.id, parentId: f.parentId, displayName: f.displayName, kind: f.kind, totalCount: f.totalCount, unreadCount: f.unreadCount };
}

export type ItemView = Record<string, unknown> & { id: string };

/** Fields common to every type: what an app may change, and the change key that names the version. */
function common(item: Item) {
  return {
    id: item.id,
    folderId: item.folderId,
    type: item.type,
    receivedAt: iso(item.receivedAt),
    categories: item.categories,
    changeKey: item.changeKey,
  };
}

export function itemView(item: Item): ItemView {
  switch (item.type) {
    case 'email': {
      // Spelled out, not `...common(item)`: V8 builds a spread followed by this many properties on a slow path,
      // ~20× slower, and this runs for every item of every sync page (bench, scenario 2).
      const view: ItemView = {
        id: item.id,
        folderId: item.folderId,
        type: item.type,
        receivedAt: iso(item.receivedAt),
        categories: item.categories,
        changeKey: item.changeKey,
        conversationId: item.conversationId,
        internetMessageId: item.internetMessageId,
        subject: item.subject,
        from: item.from,
        to: item.to,
        cc: item.cc,
        replyTo: item.replyTo,
        sentAt: iso(item.sentAt),
        preview: item.preview,
        isRead: item.isRead,
        isFlagged: item.isFlagged,
        importance: item.importance,
        inferenceClassification: item.inferenceClassification,
        hasAttachments: item.hasAttachments,
        attachments: item.attachments,
        bodySize: item.bodySize,
      };
      // What delivery found (server/protection/): only on the messages that have it, so plain mail pays nothing.
      // `protection` marks a view the protection service must still open for its reader (it adds `rights`).
      const data = item.data;
      if (data.protection !== undefined) view.protection = data.protection;
      if (data.label !== undefined) view.sensitivityLabel = data.label;
      if (data.smime !== undefined) view.smime = data.smime;
      return view;
    }
    case 'event':
      return {
        ...common(item),
        subject: item.subject,
        start: item.data.start ?? null,
        end: item.data.end ?? null,
        timeZone: item.data.timeZone ?? null,
        location: item.data.location ?? null,
        organizer: item.data.organizer ?? null,
        attendees: item.data.attendees ?? [],
        isAllDay: item.data.isAllDay ?? false,
        isCancelled: item.data.isCancelled ?? false,
        isFlagged: item.isFlagged,
      };
    case 'contact':
      return {
        ...common(item),
        displayName: item.subject,
        givenName: item.data.givenName ?? null,
        surname: item.data.surname ?? null,
        emailAddresses: item.data.emailAddresses ?? [],
        phones: item.data.phones ?? [],
        company: item.data.company ?? null,
        jobTitle: item.data.jobTitle ?? null,
        isFlagged: item.isFlagged,
      };
  }
}

/** An `updated` entry: the id and every property an app can change (a superset of what changed). */
export function itemPatchView(item: Item): ItemView {
  const patch: ItemView = { id: item.id, isFlagged: item.isFlagged, categories: item.categories, changeKey: item.changeKey };
  if (item.type === 'email') {
    patch.isRead = item.isRead;
    patch.inferenceClassification = item.inferenceClassification;
  }
  return patch;
}

/** At most `maxBytes` of UTF-8, cut on a character boundary. */
export function truncateUtf8(text: string, maxBytes: number): { content: string; truncated: boolean } {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= maxBytes) return { content: text, truncated: false };
  let end = maxBytes;
  // Step back over continuation bytes (10xxxxxx) so no character is split.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return { content: bytes.subarray(0, end).toString('utf8'), truncated: true };
}

export type BodyType = 'text' | 'html';
export interface ItemBody {
  contentType: BodyType;
  content: string;
  truncated: boolean;
}

/**
 * The body an app may show: HTML (sanitised, see server/content/sanitize.ts) when the message has HTML and the app
 * does not prefer text, else the text part (derived from the HTML for an HTML-only message). With `maxBytes` the
 * content is cut to at most that many bytes of UTF-8 — after sanitising, so what is cut is what is shown.
 */
export function emailBody(body: { text: string | null; html: string | null } | undefined, prefer?: BodyType, maxBytes?: number): ItemBody {
  const html = body?.html ?? null;
  if (html !== null && prefer !== 'text') {
    if (maxBytes === undefined) return { contentType: 'html', content: sanitizeEmailHtml(html), truncated: false };
    return { contentType: 'html', ...sanitizedHtmlPrefix(html, maxBytes) };
  }
  const text = body?.text ?? (html !== null ? htmlToPlain(html) : '');
  if (maxBytes === undefined) return { contentType: 'text', content: text, truncated: false };
  return { contentType: 'text', ...truncateUtf8(text, maxBytes) };
}
