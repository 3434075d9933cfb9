/**
 * The one way a message enters a mailbox: LMTP, the import CLI, the admin API and local delivery of sent mail all
 * come through here, so they agree on parsing, threading, duplicate detection and the change log (one `created`
 * entry per stored copy).
 *
 * Two steps, because a unit of work must never await anything but its store: `prepare` parses the bytes
 * (asynchronous, no store access), `deliver` writes every recipient's copy in one unit of work (`deliverIn` is the
 * same as steps of a caller's unit). When `deliver` resolves, the copies are committed (on SQLite with
 * synchronous=FULL): that is the moment LMTP may answer 250.
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
import type { Folder, FolderKind, NewItem, Step, Store, TxStore, User } from '../store/types';

/** Most messages one group commit takes (a bound on how long one transaction holds the write lock). */
const MAX_GROUP = 64;

export interface PreparedMessage {
  raw: Buffer;
  parsed: ParsedMessage;
  sha256: string;
  /** What inspection found (protection, S/MIME, label): stored as the item's `data`. */
  data?: Record<string, unknown>;
}

/**
 * Looks at a parsed message before it is stored (server/protection/service.ts `inspect`): may replace what is kept
 * of it (a protected message keeps a placeholder, never its text) and names facts to store with the item.
 */
export type MessageInspector = (raw: Buffer, parsed: ParsedMessage) => Promise<{ parsed: ParsedMessage; data: Record<string, unknown> }>;

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
  inspect?: MessageInspector;
  /**
   * Runs in the unit of work that stores a copy, before it is stored (server/calendar/service.ts applies a meeting
   * message to the recipient's calendar there); what it answers is added to the copy's `data`. Not for the sender's
   * Sent Items copy, nor for imports (old invitations must not rewrite today's calendar).
   */
  beforeStore?: (tx: TxStore, userId: string, message: PreparedMessage, now: number) => Step<Record<string, unknown> | undefined>;
  /**
   * The recipient's mailbox rules (server/mailbox/rules.ts), for live delivery into the Inbox (not the sender's own
   * copy, not imports): may send the copy to another well-known folder (Junk Email, Deleted Items) and classify it
   * (Focused Inbox); `afterStore` runs once the copy is stored (an automatic reply is owed), in the same unit.
   */
  rules?: {
    route: (tx: TxStore, userId: string, message: PreparedMessage, conversationId: string, now: number) => Step<InboxDecision>;
    /** Answers whether it owes the sender an automatic reply (one was claimed). */
    afterStore: (tx: TxStore, userId: string, message: PreparedMessage, itemId: string, decision: InboxDecision, now: number) => Step<boolean>;
  };
}

/** What the mailbox rules decided for a message arriving in the Inbox. */
export interface InboxDecision {
  /** Another well-known folder than the Inbox (junk, an ignored conversation). */
  folderKind?: 'junkEmail' | 'deletedItems';
  inferenceClassification: 'focused' | 'other';
  /** Why, for the item's data and the logs (`focused:person`, `junk:blocked`, …). */
  reasons: string[];
}

/** Whether the subject carries a reply or forward prefix (only such messages are threaded by subject). */
function isReplySubject(subject: string): boolean {
  return normalizeSubject(subject) !== subject.normalize('NFC').replace(/\s+/g, ' ').trim().toLowerCase();
}

/** The email fields of an item built from a parsed message (no owner, folder, or conversation yet). */
export function emailFields(raw: Buffer, parsed: ParsedMessage, data?: Record<string, unknown>): Omit<NewItem, 'userId' | 'folderId' | 'receivedAt'> {
  return {
    ...(data && Object.keys(data).length ? { data } : {}),
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
    const sha256 = crypto.createHash('sha256').update(raw).digest('hex');
    if (!deps.inspect) return { raw, parsed, sha256 };
    const inspected = await deps.inspect(raw, parsed);
    return { raw, parsed: inspected.parsed, sha256, data: inspected.data };
  }

  function* conversationFor(tx: TxStore, userId: string, parsed: ParsedMessage, receivedAt: number): Step<{ id: string; threadSubject: string | null }> {
    const named = [...parsed.references, ...(parsed.inReplyTo ? [parsed.inReplyTo] : [])];
    if (named.length > 0) {
      return { id: (yield* tx.items.conversationByMessageIds(userId, named)) ?? computeConversationId(parsed), threadSubject: null };
    }
    const threadSubject = normalizeSubject(parsed.subject);
    if (threadSubject && isReplySubject(parsed.subject)) {
      const from = receivedAt - deps.threadSubjectWindowSeconds * 1000;
      const found = yield* tx.items.conversationBySubject(userId, threadSubject, from, receivedAt);
      if (found) return { id: found, threadSubject };
    }
    // Replies that arrived before this message already carry the conversation of its Message-ID.
    const own = parsed.internetMessageId ? yield* tx.items.conversationByMessageIds(userId, [parsed.internetMessageId]) : undefined;
    return { id: own ?? computeConversationId(parsed), threadSubject: threadSubject || null };
  }

  function* targetFolder(tx: TxStore, target: DeliveryTarget): Step<Folder> {
    const folder = target.folderId
      ? yield* tx.folders.byId(target.userId, target.folderId)
      : yield* tx.folders.byKind(target.userId, target.folderKind ?? 'inbox');
    if (!folder) throw errors.invalidRequest('The target folder does not exist.', [{ field: 'folderId', message: 'not found' }]);
    if (folder.kind === 'calendar' || folder.kind === 'contacts') {
      throw errors.invalidRequest('Messages can only be delivered into mail folders.', [{ field: 'folderId', message: 'not a mail folder' }]);
    }
    return folder;
  }

  /**
   * Stores one copy per target, as steps of the caller's unit of work (a send stores its copies, its outbox entry
   * and its bounce in one transaction). `now` is the delivery time.
   */
  function* deliverIn(tx: TxStore, message: PreparedMessage, targets: DeliveryTarget[], options: DeliveryOptions, now: number): Step<DeliveryResult[]> {
    const receivedAt = options.receivedAt ?? now;
    const since = options.duplicates === 'import' ? 0 : now - deps.duplicateWindowSeconds * 1000;
    const key = { internetMessageId: message.parsed.internetMessageId, mimeSha256: message.sha256 };
    const results: DeliveryResult[] = [];
    for (const target of targets) {
      const inbox = yield* targetFolder(tx, target);
      const live = target.folderKind !== 'sentItems' && options.duplicates === 'live';
      const conversation = yield* conversationFor(tx, target.userId, message.parsed, receivedAt);
      // Mailbox rules judge mail arriving in the Inbox; a copy an app or an admin put in a folder stays there. They
      // decide first, so the duplicate check looks where the copy would go (a second copy of junk is still one).
      const decision = live && deps.rules && inbox.kind === 'inbox' ? yield* deps.rules.route(tx, target.userId, message, conversation.id, now) : undefined;
      const folder = decision?.folderKind ? ((yield* tx.folders.byKind(target.userId, decision.folderKind)) ?? inbox) : inbox;
      const existing = yield* tx.items.findDuplicate(target.userId, folder.id, key, since);
      if (existing) {
        results.push({ userId: target.userId, folderId: folder.id, status: 'duplicate', itemId: existing });
        continue;
      }
      const extra = live && deps.beforeStore ? yield* deps.beforeStore(tx, target.userId, message, now) : undefined;
      const item = yield* tx.items.create(
        {
          ...emailFields(message.raw, message.parsed, extra ? { ...message.data, ...extra } : message.data),
          userId: target.userId,
          folderId: folder.id,
          receivedAt,
          isRead: options.isRead ?? false,
          ...(decision ? { inferenceClassification: decision.inferenceClassification } : {}),
          conversationId: conversation.id,
          threadSubject: conversation.threadSubject,
        },
        now,
      );
      if (decision) yield* deps.rules!.afterStore(tx, target.userId, message, item.id, decision, now);
      results.push({ userId: target.userId, folderId: folder.id, status: 'stored', itemId: item.id });
    }
    return results;
  }

  /** Stores one copy per target in one transaction; resolves once it is committed. */
  function deliver(message: PreparedMessage, targets: DeliveryTarget[], options: DeliveryOptions): Promise<DeliveryResult[]> {
    const now = clock.now();
    return store.run((tx) => deliverIn(tx, message, targets, options, now));
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
  async function flush(): Promise<void> {
    flushScheduled = false;
    const group = queue.splice(0, MAX_GROUP);
    if (queue.length) scheduleFlush();
    let results: DeliveryResult[][] | undefined;
    if (group.length > 1) {
      const now = clock.now();
      try {
        results = await store.run(function* (tx) {
          const all: DeliveryResult[][] = [];
          for (const entry of group) all.push(yield* deliverIn(tx, ...entry.args, now));
          return all;
        });
      } catch {
        results = undefined; // retried one by one below
      }
    }
    for (const [i, entry] of group.entries()) {
      if (results) {
        entry.resolve(results[i]!);
        continue;
      }
      try {
        entry.resolve(await deliver(...entry.args));
      } catch (err) {
        entry.reject(err);
      }
    }
  }
  function scheduleFlush(): void {
    if (flushScheduled) return;
    flushScheduled = true;
    setImmediate(() => void flush());
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
  async function resolveRecipient(address: string): Promise<User[]> {
    const exact = await store.users.byEmail(address.trim());
    const found = exact.length ? exact : await store.users.byEmail(address.trim().replace(/\+[^@]*@/, '@'));
    const enabled = found.filter((u) => !u.disabled);
    const mailboxes = await Promise.all(enabled.map((u) => store.mailboxes.get(u.id)));
    return enabled.filter((_u, i) => mailboxes[i] !== undefined);
  }

  return { prepare, deliver, deliverIn, deliverGrouped, resolveRecipient };
}

export type Delivery = ReturnType<typeof createDelivery>;
