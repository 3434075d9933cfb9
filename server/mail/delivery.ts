/**
 * The one way a message enters a mailbox: LMTP, the import CLI, the admin API and local delivery of sent mail all
 * come through here, so they agree on parsing, threading, duplicate detection and the change log (one `created`
 * entry per stored copy).
 *
 * Two steps, because a store transaction must never span an `await`: `prepare` parses the bytes (asynchronous,
 * no store access), `deliver` writes every recipient's copy in one synchronous transaction. When `deliver` returns,
 * the copies are committed with synchronous=FULL: that is the moment LMTP may answer 250.
 *
 * Duplicate rule (documented in the README): a message is a duplicate when the target folder already holds an item
 * with the same Message-ID (or, for a message without one, the same bytes) that was stored within the duplicate
 * window; live delivery uses PIGEON_DUPLICATE_WINDOW, an import looks at any age. A duplicate is acknowledged but
 * not stored again.
 *
 * Threading rule: a message joins the conversation of any message of the mailbox it names in References or
 * In-Reply-To; failing that, a message with thread headers gets the conversation of its thread's root Message-ID;
 * a message without thread headers whose subject is a reply or forward ("Re: x") joins the newest conversation
 * with the same normalised subject received within PIGEON_THREAD_SUBJECT_WINDOW; anything else starts its own.
 * The id is stored with the item, so moves never change it.
 */
import crypto from 'node:crypto';
import type { Clock } from '../clock';
import { errors } from '../errors';
import { computeConversationId, normalizeSubject, parseMessage, type ParsedMessage } from '../content/mime';
import type { Folder, FolderKind, NewItem, Store, User } from '../store/types';

/** Most messages one group commit takes (a bound on how long one transaction holds the write lock). */
const MAX_GROUP = 64;

export interface PreparedMessage {
  raw: Buffer;
  parsed: ParsedMessage;
  sha256: string;
}

export interface DeliveryTarget {
  userId: string;
  /** A folder id of that user; the user's Inbox when absent. */
  folderId?: string;
  /** A well-known folder kind, when no folder id is given (Sent Items for the sender's copy). */
  folderKind?: FolderKind;
}

export interface DeliveryOptions {
  /** When the message arrived; the clock's now by default (an import passes the Date header). */
  receivedAt?: number;
  /** `live`: duplicates within PIGEON_DUPLICATE_WINDOW; `import`: any age. */
  duplicates: 'live' | 'import';
  isRead?: boolean;
}

export interface DeliveryResult {
  userId: string;
  folderId: string;
  /** `stored`: a new item; `duplicate`: the folder already had this message (itemId is the existing one). */
  status: 'stored' | 'duplicate';
  itemId: string;
}

export interface DeliveryDeps {
  store: Store;
  clock: Clock;
  /** Seconds: a second copy of one Message-ID within this time is a duplicate (live delivery). */
  duplicateWindowSeconds: number;
  /** Seconds: how far back subject threading looks. */
  threadSubjectWindowSeconds: number;
}

/** Whether the subject carries a reply or forward prefix (only such messages are threaded by subject). */
function isReplySubject(subject: string): boolean {
  return normalizeSubject(subject) !== subject.normalize('NFC').replace(/\s+/g, ' ').trim().toLowerCase();
}

/** The email fields of an item built from a parsed message (no owner, folder, or conversation yet). */
export function emailFields(raw: Buffer, parsed: ParsedMessage): Omit<NewItem, 'userId' | 'folderId' | 'receivedAt'> {
  return {
    type: 'email',
    subject: parsed.subject,
    importance: parsed.importance,
    from: parsed.from,
    to: parsed.to,
    cc: parsed.cc,
    replyTo: parsed.replyTo,
    sentAt: parsed.sentAt,
    preview: parsed.preview,
    bodyText: parsed.bodyText,
    bodyHtml: parsed.bodyHtml,
    internetMessageId: parsed.internetMessageId,
    mime: raw,
    attachments: parsed.attachments,
  };
}

export function createDelivery(deps: DeliveryDeps) {
  const { store, clock } = deps;

  async function prepare(raw: Buffer): Promise<PreparedMessage> {
    let parsed: ParsedMessage;
    try {
      parsed = await parseMessage(raw);
    } catch (err) {
      throw errors.invalidRequest(`The message cannot be parsed as MIME: ${(err as Error).message}`);
    }
    return { raw, parsed, sha256: crypto.createHash('sha256').update(raw).digest('hex') };
  }

  function conversationFor(userId: string, parsed: ParsedMessage, receivedAt: number): { id: string; threadSubject: string | null } {
    const named = [...parsed.references, ...(parsed.inReplyTo ? [parsed.inReplyTo] : [])];
    if (named.length > 0) {
      return { id: store.items.conversationByMessageIds(userId, named) ?? computeConversationId(parsed), threadSubject: null };
    }
    const threadSubject = normalizeSubject(parsed.subject);
    if (threadSubject && isReplySubject(parsed.subject)) {
      const from = receivedAt - deps.threadSubjectWindowSeconds * 1000;
      const found = store.items.conversationBySubject(userId, threadSubject, from, receivedAt);
      if (found) return { id: found, threadSubject };
    }
    // Replies that arrived before this message already carry the conversation of its Message-ID.
    const own = parsed.internetMessageId ? store.items.conversationByMessageIds(userId, [parsed.internetMessageId]) : undefined;
    return { id: own ?? computeConversationId(parsed), threadSubject: threadSubject || null };
  }

  function targetFolder(target: DeliveryTarget): Folder {
    const folder = target.folderId
      ? store.folders.byId(target.userId, target.folderId)
      : store.folders.byKind(target.userId, target.folderKind ?? 'inbox');
    if (!folder) throw errors.invalidRequest('The target folder does not exist.', [{ field: 'folderId', message: 'not found' }]);
    if (folder.kind === 'calendar' || folder.kind === 'contacts') {
      throw errors.invalidRequest('Messages can only be delivered into mail folders.', [{ field: 'folderId', message: 'not a mail folder' }]);
    }
    return folder;
  }

  /** Stores one copy per target in one transaction; returns once it is committed. */
  function deliver(message: PreparedMessage, targets: DeliveryTarget[], options: DeliveryOptions): DeliveryResult[] {
    const now = clock.now();
    const receivedAt = options.receivedAt ?? now;
    const since = options.duplicates === 'import' ? 0 : now - deps.duplicateWindowSeconds * 1000;
    const key = { internetMessageId: message.parsed.internetMessageId, mimeSha256: message.sha256 };
    return store.transaction(() =>
      targets.map((target): DeliveryResult => {
        const folder = targetFolder(target);
        const existing = store.items.findDuplicate(folder.id, key, since);
        if (existing) return { userId: target.userId, folderId: folder.id, status: 'duplicate', itemId: existing };
        const conversation = conversationFor(target.userId, message.parsed, receivedAt);
        const item = store.items.create(
          {
            ...emailFields(message.raw, message.parsed),
            userId: target.userId,
            folderId: folder.id,
            receivedAt,
            isRead: options.isRead ?? false,
            conversationId: conversation.id,
            threadSubject: conversation.threadSubject,
          },
          now,
        );
        return { userId: target.userId, folderId: folder.id, status: 'stored', itemId: item.id };
      }),
    );
  }

  /**
   * Group commit for concurrent live deliveries (LMTP): messages handed in within the same turn of the event loop
   * commit together, one transaction and so one fsync for all of them, and each caller's promise settles only after
   * that commit. Under synchronous=FULL the fsync is most of a delivery's cost (about 7 ms of 8 for a 10 KB message
   * here), so N connections delivering at once pay it about once instead of N times. If the group fails, each
   * message is retried alone, so one bad message never takes the others' acknowledgements with it.
   */
  const queue: Array<{ args: Parameters<typeof deliver>; resolve: (r: DeliveryResult[]) => void; reject: (e: unknown) => void }> = [];
  let flushScheduled = false;
  function flush(): void {
    flushScheduled = false;
    const group = queue.splice(0, MAX_GROUP);
    if (queue.length) scheduleFlush();
    let results: DeliveryResult[][] | undefined;
    if (group.length > 1) {
      try {
        results = store.transaction(() => group.map((entry) => deliver(...entry.args)));
      } catch {
        results = undefined; // retried one by one below
      }
    }
    group.forEach((entry, i) => {
      if (results) return entry.resolve(results[i]!);
      try {
        entry.resolve(deliver(...entry.args));
      } catch (err) {
        entry.reject(err);
      }
    });
  }
  function scheduleFlush(): void {
    if (flushScheduled) return;
    flushScheduled = true;
    setImmediate(flush);
  }
  function deliverGrouped(...args: Parameters<typeof deliver>): Promise<DeliveryResult[]> {
    return new Promise((resolve, reject) => {
      queue.push({ args, resolve, reject });
      scheduleFlush();
    });
  }

  /**
   * The local users an address delivers to: the users with that address, else (plus addressing) the users with the
   * address minus its `+tag`. Disabled users receive nothing (an MTA should bounce rather than fill a closed box).
   */
  function resolveRecipient(address: string): User[] {
    const exact = store.users.byEmail(address.trim());
    const found = exact.length ? exact : store.users.byEmail(address.trim().replace(/\+[^@]*@/, '@'));
    return found.filter((u) => !u.disabled && store.mailboxes.get(u.id));
  }

  return { prepare, deliver, deliverGrouped, resolveRecipient };
}

export type Delivery = ReturnType<typeof createDelivery>;
