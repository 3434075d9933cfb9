/**
 * The wire shapes of folders and items (protocol.md §4, §5), shared by every domain that answers with them (sync,
 * content, mail changes, search). One place, so sync pages, item reads and conflict answers always agree field for
 * field — the convergence invariant compares exactly these objects.
 */
import type { Folder, Item } from './store/types';
import { CONTACT_PHOTO_NAME } from './calendar/model';
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
      // A meeting message (server/calendar/service.ts): what it did to this mailbox's calendar.
      if (data.meeting !== undefined) view.meeting = data.meeting;
      return view;
    }
    case 'event': {
      // `data` is an EventData (server/calendar/model.ts); the demo's seeded events lack the newer fields, which
      // read as an event without them would be: no recurrence, no exceptions, busy, the owner's own.
      const data = item.data;
      return {
        ...common(item),
        subject: item.subject,
        uid: data.uid ?? null,
        // The organiser's revision (iCalendar SEQUENCE): an app shows "updated" when it grows.
        sequence: data.sequence ?? 0,
        start: data.start ?? null,
        end: data.end ?? null,
        timeZone: data.timeZone ?? null,
        location: data.location ?? null,
        organizer: data.organizer ?? null,
        attendees: data.attendees ?? [],
        isAllDay: data.isAllDay ?? false,
        isCancelled: data.isCancelled ?? false,
        recurrence: data.recurrence ?? null,
        exceptions: data.exceptions ?? [],
        reminderMinutesBeforeStart: data.reminderMinutesBeforeStart ?? null,
        showAs: data.showAs ?? 'busy',
        responseStatus: data.responseStatus ?? 'organizer',
        isFlagged: item.isFlagged,
      };
    }
    case 'contact': {
      const data = item.data;
      return {
        ...common(item),
        displayName: item.subject,
        uid: data.uid ?? null,
        givenName: data.givenName ?? null,
        surname: data.surname ?? null,
        emailAddresses: data.emailAddresses ?? [],
        phones: data.phones ?? [],
        company: data.company ?? null,
        jobTitle: data.jobTitle ?? null,
        department: data.department ?? null,
        addresses: data.addresses ?? [],
        birthday: data.birthday ?? null,
        // The photo's attachment id: its bytes come on demand (GET /v1/items/{id}/attachments/{attachmentId}).
        photo: item.attachments.find((a) => a.name === CONTACT_PHOTO_NAME)?.id ?? null,
        isFlagged: item.isFlagged,
      };
    }
  }
}

/**
 * An `updated` entry: the id and at least every property that can have changed. For mail that is what an app can
 * change (flags, categories, read state); an event's or a contact's content is edited as a whole (items.replace), so
 * their entry is the whole view.
 */
export function itemPatchView(item: Item): ItemView {
  if (item.type !== 'email') return itemView(item);
  return {
    id: item.id,
    isFlagged: item.isFlagged,
    categories: item.categories,
    changeKey: item.changeKey,
    isRead: item.isRead,
    inferenceClassification: item.inferenceClassification,
  };
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
