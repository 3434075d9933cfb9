/**
 * Contacts as real data (issue 18): items of type `contact` in a contacts folder, created, replaced and given a photo
 * through their own API, imported from and exported to vCard (./vcard.ts). The item's subject is the display name,
 * its body text the notes, its data a ContactData, and its photo the attachment named CONTACT_PHOTO_NAME.
 *
 * Every lookup is by (user, id), so another user's contact or folder is not found, exactly as an id that exists
 * nowhere; an item that is not a contact is not found as a contact either. Each change is one unit of work (the
 * check of the change key and the write in one transaction), and the store logs it in the folder's history, so
 * item sync reports creates and edits like any other change.
 */
import crypto from 'node:crypto';
import { Readable } from 'node:stream';
import { ApiError, errors } from '../errors';
import type { Clock } from '../clock';
import { CONTACT_PHOTO_NAME, type ContactData, type PhoneType } from '../calendar/model';
import type { Folder, Item, NewAttachment, SortKey, Step, Store, TxStore } from '../store/types';
import { itemView, type ItemView } from '../views';
import { readVCards, toVCards, type ContactPhoto } from './vcard';

/** What the API edits of a contact: everything but its UID, which Pigeon keeps stable across edits and exports. */
export interface ContactFields {
  displayName: string;
  notes: string | null;
  data: Omit<ContactData, 'uid'>;
}

export interface ImportResult {
  /** Cards created or updated. */
  imported: number;
  /** Cards left out, by their 0-based position in the file, with the reason. */
  skipped: Array<{ index: number; reason: string }>;
}

/** Items read per store call when a whole folder is listed. */
const PAGE = 500;
const LOWEST: SortKey = { receivedAt: Number.MIN_SAFE_INTEGER, id: '' };
const HIGHEST: SortKey = { receivedAt: Number.MAX_SAFE_INTEGER, id: '' };

const contactNotFound = () => errors.itemNotFound('No such contact.');

const photoAttachment = (photo: ContactPhoto): NewAttachment => ({
  name: CONTACT_PHOTO_NAME,
  contentType: photo.contentType,
  isInline: false,
  contentId: null,
  content: photo.content,
});

const strings = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : null);
const list = (v: unknown): Array<Record<string, unknown>> => (Array.isArray(v) ? v.filter((x): x is Record<string, unknown> => typeof x === 'object' && x !== null) : []);
const PHONE_TYPES = new Set<PhoneType>(['mobile', 'business', 'home', 'other']);

/**
 * A contact's UID: its own, or — for a contact stored before contacts had UIDs (the demo seed's) — one derived from
 * its item id, so every export names it the same and importing that export again updates it instead of copying it.
 */
export function uidOf(item: Item): string {
  const own = strings(item.data.uid);
  if (own) return own;
  const h = crypto.createHash('sha256').update(`pigeon-contact:${item.id}`).digest('hex');
  return `urn:uuid:${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** The item's data as a ContactData, whatever older data lacks filled with empty values. */
export function contactDataOf(item: Item): ContactData {
  const d = item.data;
  return {
    uid: uidOf(item),
    givenName: strings(d.givenName),
    surname: strings(d.surname),
    emailAddresses: list(d.emailAddresses)
      .filter((e) => typeof e.address === 'string')
      .map((e) => ({ name: typeof e.name === 'string' ? e.name : item.subject, address: e.address as string })),
    phones: list(d.phones)
      .filter((p) => typeof p.number === 'string')
      .map((p) => ({ type: PHONE_TYPES.has(p.type as PhoneType) ? (p.type as PhoneType) : 'other', number: p.number as string })),
    company: strings(d.company),
    jobTitle: strings(d.jobTitle),
    department: strings(d.department),
    addresses: list(d.addresses).map((a) => ({
      type: a.type === 'home' || a.type === 'business' ? a.type : 'other',
      street: typeof a.street === 'string' ? a.street : '',
      city: typeof a.city === 'string' ? a.city : '',
      region: typeof a.region === 'string' ? a.region : '',
      postalCode: typeof a.postalCode === 'string' ? a.postalCode : '',
      country: typeof a.country === 'string' ? a.country : '',
    })),
    birthday: strings(d.birthday),
  };
}

/** The folder found (the user's contacts folder, or the one named) if contacts may live there; else 404 or 400. */
function checkedFolder(folder: Folder | undefined): Folder {
  // Another user's folder was looked up under this user's id: not found, exactly as an id that exists nowhere.
  if (!folder) throw errors.folderNotFound();
  if (folder.kind !== 'contacts') throw errors.invalidRequest('Contacts live in a contacts folder.', [{ field: 'folderId', message: 'not a contacts folder' }]);
  return folder;
}

function* contactsFolder(tx: TxStore, userId: string, folderId: string | undefined): Step<Folder> {
  return checkedFolder(folderId === undefined ? yield* tx.folders.byKind(userId, 'contacts') : yield* tx.folders.byId(userId, folderId));
}

function* ownContact(tx: TxStore, userId: string, id: string): Step<Item> {
  const item = yield* tx.items.byId(userId, id);
  if (!item || item.type !== 'contact') throw contactNotFound();
  return item;
}

/** `ifMatch`: the change key the app last saw; a newer server version wins and is returned with the 412. */
function checkVersion(current: Item, ifMatch: string | undefined): void {
  // `*` matches any current version (RFC 9110 §13.1.1): the contact only has to exist.
  if (ifMatch !== undefined && ifMatch !== '*' && ifMatch !== current.changeKey) {
    throw new ApiError(412, 'conflict', "The contact changed since that version; the server's version is attached.", { item: itemView(current) });
  }
}

/** Every item of a folder, newest first, a page per step (each page ends where the next starts, exclusive). */
function* folderItems(tx: TxStore, userId: string, folderId: string): Step<Item[]> {
  const items: Item[] = [];
  for (let upper = HIGHEST; ; ) {
    const page = yield* tx.sync.range(userId, folderId, LOWEST, upper, 'desc', PAGE);
    items.push(...page);
    if (page.length < PAGE) return items;
    const last = page[page.length - 1]!;
    upper = { receivedAt: last.receivedAt, id: last.id };
  }
}

export function createContactService(deps: { store: Store; clock: Clock }) {
  const { store, clock } = deps;

  /** A contact's vCard: its fields, its notes (the body text) and its photo's bytes; null once it is deleted. */
  async function vcardOf(item: Item): Promise<string | null> {
    const body = await store.items.body(item.userId, item.id);
    if (!body) return null;
    const photoRecord = (await store.items.attachments(item.userId, item.id)).find((a) => a.name === CONTACT_PHOTO_NAME);
    const photo = photoRecord ? { contentType: photoRecord.contentType, content: await store.blobs.read(item.userId, photoRecord.blobId, 0, photoRecord.size) } : null;
    return toVCards([{ displayName: item.subject, notes: body.text, data: contactDataOf(item), photo }]);
  }

  return {
    /** A new contact in the user's contacts folder (or the contacts folder named). */
    create(userId: string, fields: ContactFields, folderId?: string): Promise<ItemView> {
      const now = clock.now();
      const uid = `urn:uuid:${crypto.randomUUID()}`;
      return store.run(function* (tx) {
        const folder = yield* contactsFolder(tx, userId, folderId);
        const created = yield* tx.items.create(
          {
            userId,
            folderId: folder.id,
            type: 'contact',
            // Sorted by when they were added, as the demo seed sorts its contacts by their place in the file.
            receivedAt: now,
            subject: fields.displayName,
            isRead: true, // contacts are never "unread": that would give the folder an unread count
            bodyText: fields.notes,
            data: { uid, ...fields.data },
          },
          now,
        );
        return itemView(created);
      });
    },

    /** The whole contact replaced (its UID, sort time and photo kept); `ifMatch` as for any item change. */
    replace(userId: string, itemId: string, fields: ContactFields, ifMatch?: string, folderId?: string): Promise<ItemView> {
      const now = clock.now();
      return store.run(function* (tx) {
        const current = yield* ownContact(tx, userId, itemId);
        checkVersion(current, ifMatch);
        if (folderId !== undefined && folderId !== current.folderId) {
          throw errors.invalidRequest('A contact moves to another folder with POST /v1/items/{itemId}/move.', [{ field: 'folderId', message: 'not the contact\'s folder' }]);
        }
        const data: ContactData = { uid: uidOf(current), ...fields.data };
        return itemView(yield* tx.items.replace(userId, itemId, { subject: fields.displayName, bodyText: fields.notes, receivedAt: current.receivedAt, data: { ...data } }, now));
      });
    },

    /** Sets (or with null removes) the contact's photo; everything else stays as it is. */
    setPhoto(userId: string, itemId: string, photo: ContactPhoto | null): Promise<ItemView> {
      const now = clock.now();
      return store.run(function* (tx) {
        const current = yield* ownContact(tx, userId, itemId);
        // Removing a photo the contact does not have changes nothing (and so does not bump its version).
        if (!photo && !current.attachments.some((a) => a.name === CONTACT_PHOTO_NAME)) return itemView(current);
        const body = yield* tx.items.body(userId, itemId);
        const content = { subject: current.subject, bodyText: body?.text ?? null, receivedAt: current.receivedAt, data: current.data, attachments: photo ? [photoAttachment(photo)] : [] };
        return itemView(yield* tx.items.replace(userId, itemId, content, now));
      });
    },

    /**
     * The cards of a vCard file into a contacts folder, in one unit of work: a card whose UID a contact of the folder
     * has updates that contact (its photo only when the card carries one: a photo the card merely links to is never
     * fetched, and must not wipe the one the contact has), any other card is a new contact, and a card that cannot be
     * a contact is skipped with its reason. Throws VCardInputError for text that cannot be read at all.
     */
    importVCards(userId: string, text: string, folderId?: string): Promise<ImportResult> {
      const entries = readVCards(text); // parsed before the transaction: a unit of work does nothing but the store's
      const now = clock.now();
      return store.run(function* (tx) {
        const folder = yield* contactsFolder(tx, userId, folderId);
        const byUid = new Map<string, Item>();
        for (const item of yield* folderItems(tx, userId, folder.id)) if (item.type === 'contact') byUid.set(uidOf(item), item);
        const result: ImportResult = { imported: 0, skipped: [] };
        for (const entry of entries) {
          if ('error' in entry) {
            result.skipped.push({ index: entry.index, reason: entry.error });
            continue;
          }
          const { contact } = entry;
          const existing = byUid.get(contact.data.uid);
          const attachments = contact.photo ? [photoAttachment(contact.photo)] : undefined;
          const saved = existing
            ? yield* tx.items.replace(
                userId,
                existing.id,
                { subject: contact.displayName, bodyText: contact.notes, receivedAt: existing.receivedAt, data: { ...contact.data }, ...(attachments ? { attachments } : {}) },
                now,
              )
            : yield* tx.items.create(
                {
                  userId,
                  folderId: folder.id,
                  type: 'contact',
                  // A millisecond apart in file order, ending now: the file's order is the folder's.
                  receivedAt: now - (entries.length - 1 - entry.index),
                  subject: contact.displayName,
                  isRead: true,
                  bodyText: contact.notes,
                  data: { ...contact.data },
                  attachments: attachments ?? [],
                },
                now,
              );
          byUid.set(contact.data.uid, saved); // a later card with the same UID updates this one
          result.imported++;
        }
        return result;
      });
    },

    /**
     * The folder's contacts as vCard 4.0, oldest first, streamed a contact at a time (a folder of photos would not
     * fit in memory at once). The folder is checked before the stream starts, so a bad id is still a clean 404.
     * The list is read a page at a time and each contact's notes and photo as it is written: a contact changed
     * during a long export shows as it was when it was written.
     */
    async exportVCards(userId: string, folderId?: string): Promise<{ folder: Folder; stream: Readable }> {
      // A plain read, not a unit of work: an export writes nothing.
      const folder = checkedFolder(folderId === undefined ? await store.folders.byKind(userId, 'contacts') : await store.folders.byId(userId, folderId));
      async function* cards(): AsyncGenerator<string> {
        // Pages newest first, each ending just before the last one's oldest (an exclusive bound, exact in any
        // collation), then turned around.
        const items: Item[] = [];
        for (let upper = HIGHEST; ; ) {
          const page = await store.sync.range(userId, folder.id, LOWEST, upper, 'desc', PAGE);
          items.push(...page.filter((i) => i.type === 'contact'));
          if (page.length < PAGE) break;
          const last = page[page.length - 1]!;
          upper = { receivedAt: last.receivedAt, id: last.id };
        }
        for (const item of items.reverse()) {
          const card = await vcardOf(item);
          if (card !== null) yield card; // deleted while the export ran
        }
      }
      return { folder, stream: Readable.from(cards()) };
    },
  };
}

export type ContactService = ReturnType<typeof createContactService>;
