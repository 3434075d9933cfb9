/**
 * Conversation-wide actions (Organize by Thread): mark read or unread, flag, move, delete, ignore — each applied to
 * every message of the conversation in scope, in ONE unit of work made of the mail service's own item steps
 * (server/mail/service.ts), so an action is all or nothing and each message changes exactly as the item routes
 * would change it (change log, counters, conversation rows, push).
 *
 * Scope (Outlook's behaviour): with `folderId`, the conversation's messages in that folder; without, all its
 * messages in the mailbox except those in Deleted Items — for delete and ignore too, so deleting a conversation
 * mailbox-wide never purges what is already in Deleted Items (a `delete` scoped to Deleted Items does).
 *
 * Not found: a conversation with no message in the named folder, or (mailbox-wide) with no message anywhere in the
 * mailbox, is 404 `conversationNotFound` — another user's conversation id is exactly that. A conversation whose
 * messages are all in Deleted Items is known but has nothing in the mailbox-wide scope: the action succeeds and
 * changes nothing (a retried delete answers 200 with nothing affected; ignore still records the ignore). `unignore`
 * knows a conversation by its ignore too (its messages may all be gone).
 *
 * Size: at most MAX_ACTION_MESSAGES messages per action; a larger scope is refused whole (400), never half done —
 * the app acts one folder at a time, or on the messages in batches (POST /v1/batch).
 *
 * Only messages count: a message without a conversation id is the conversation named by its item id, so an event's
 * or a contact's item id must not name one (they are filtered out, and a conversation of none is not found).
 */
import type { Clock } from '../clock';
import { errors } from '../errors';
import type { MailService } from '../mail/service';
import type { Folder, Item, ItemPatch, Step, Store, TxStore } from '../store/types';

export const CONVERSATION_ACTIONS = ['markRead', 'markUnread', 'flag', 'unflag', 'move', 'delete', 'ignore', 'unignore'] as const;
export type ConversationAction = (typeof CONVERSATION_ACTIONS)[number];

/** The most messages one action changes (one transaction). */
export const MAX_ACTION_MESSAGES = 1000;

export interface ConversationActionInput {
  action: ConversationAction;
  /** Limits the action to the conversation's messages in this folder. */
  folderId?: string;
  /** `move` only: where the messages go (a mail folder of the mailbox). */
  destinationFolderId?: string;
}

export interface ConversationActionResult {
  conversationId: string;
  /** The ids of the messages the action changed (moved, deleted, or whose flag it set); newest first. */
  affected: string[];
}

/** The flag patches, and the state that makes a message need no change. */
const PATCHES: Partial<Record<ConversationAction, { patch: ItemPatch; done: (i: Item) => boolean }>> = {
  markRead: { patch: { isRead: true }, done: (i) => i.isRead },
  markUnread: { patch: { isRead: false }, done: (i) => !i.isRead },
  flag: { patch: { isFlagged: true }, done: (i) => i.isFlagged },
  unflag: { patch: { isFlagged: false }, done: (i) => !i.isFlagged },
};

const isMailFolder = (f: Folder) => f.kind !== 'calendar' && f.kind !== 'contacts';

const tooLarge = () =>
  errors.invalidRequest(
    `This conversation has more than ${MAX_ACTION_MESSAGES} messages in scope; act on it one folder at a time (folderId), or on its messages in batches (POST /v1/batch).`,
  );

/** Conversation ids are short derived strings; anything longer names nothing (and is not looked up). */
const MAX_CONVERSATION_ID_LENGTH = 255;

/** The conversation's messages in scope, and whether the mailbox has any message of it at all. */
interface Scope {
  messages: Item[];
  known: boolean;
}

export function createConversationService(deps: { store: Store; clock: Clock; mail: MailService }) {
  const { store, clock, mail } = deps;

  /** The user's messages (never events or contacts) among `ids`, in the order of `ids`. */
  function* messagesOf(tx: TxStore, userId: string, ids: string[]): Step<Item[]> {
    if (ids.length === 0) return [];
    const byId = new Map((yield* tx.items.byIds(userId, ids)).map((i) => [i.id, i]));
    return ids.map((id) => byId.get(id)).filter((i): i is Item => i !== undefined && i.type === 'email');
  }

  function* inFolder(tx: TxStore, userId: string, conversationId: string, folderId: string): Step<Scope> {
    const folder = yield* tx.folders.byId(userId, folderId);
    if (!folder) throw errors.folderNotFound();
    if (!isMailFolder(folder)) {
      throw errors.invalidRequest('Conversations are for mail folders; this folder holds no mail.', [{ field: 'folderId', message: 'not a mail folder' }]);
    }
    const ids = yield* tx.conversations.itemIds(userId, conversationId, MAX_ACTION_MESSAGES + 1, folder.id);
    if (ids.length > MAX_ACTION_MESSAGES) throw tooLarge();
    const messages = (yield* messagesOf(tx, userId, ids)).filter((i) => i.folderId === folder.id);
    return { messages, known: messages.length > 0 };
  }

  function* mailboxWide(tx: TxStore, userId: string, conversationId: string): Step<Scope> {
    const trash = yield* tx.folders.byKind(userId, 'deletedItems');
    const ids = yield* tx.conversations.itemIds(userId, conversationId, MAX_ACTION_MESSAGES + 1);
    const all = yield* messagesOf(tx, userId, ids);
    if (ids.length <= MAX_ACTION_MESSAGES) return { messages: all.filter((i) => i.folderId !== trash?.id), known: all.length > 0 };
    // More than the limit in the whole mailbox: count the scope exactly, folder by folder (Deleted Items left out),
    // so a long conversation whose surplus is in Deleted Items is still served. Rare, and bounded by the limit.
    const scoped: string[] = [];
    for (const folder of yield* tx.folders.listByUser(userId)) {
      if (folder.id === trash?.id || !isMailFolder(folder)) continue;
      scoped.push(...(yield* tx.conversations.itemIds(userId, conversationId, MAX_ACTION_MESSAGES + 1 - scoped.length, folder.id)));
      if (scoped.length > MAX_ACTION_MESSAGES) throw tooLarge();
    }
    const messages = yield* messagesOf(tx, userId, scoped);
    messages.sort((a, b) => (a.receivedAt !== b.receivedAt ? b.receivedAt - a.receivedAt : a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
    return { messages, known: true };
  }

  return {
    /** Applies `input.action` to the conversation's messages in scope; all or nothing. */
    async act(userId: string, conversationId: string, input: ConversationActionInput): Promise<ConversationActionResult> {
      const { action } = input;
      if ((action === 'move') !== (input.destinationFolderId !== undefined)) {
        throw errors.invalidRequest(
          action === 'move' ? 'move needs destinationFolderId.' : `${action} takes no destinationFolderId.`,
          [{ field: 'destinationFolderId', message: action === 'move' ? 'required' : 'only for move' }],
        );
      }
      if (action === 'unignore' && input.folderId !== undefined) {
        throw errors.invalidRequest('unignore applies to the whole conversation; it takes no folderId.', [{ field: 'folderId', message: 'not for unignore' }]);
      }
      if (conversationId.length === 0 || conversationId.length > MAX_CONVERSATION_ID_LENGTH) throw errors.conversationNotFound();
      const now = clock.now();

      return store.run(function* (tx): Step<ConversationActionResult> {
        const answer = (affected: string[]): ConversationActionResult => ({ conversationId, affected });

        if (action === 'unignore') {
          const ignored = yield* tx.conversations.isIgnored(userId, conversationId);
          if (!ignored && (yield* messagesOf(tx, userId, yield* tx.conversations.itemIds(userId, conversationId, 1))).length === 0) {
            throw errors.conversationNotFound();
          }
          if (ignored) yield* tx.conversations.unignore(userId, conversationId);
          return answer([]); // nothing moves back: the messages stay where they are
        }

        const scope = input.folderId !== undefined ? yield* inFolder(tx, userId, conversationId, input.folderId) : yield* mailboxWide(tx, userId, conversationId);
        if (!scope.known) throw errors.conversationNotFound();

        const flags = PATCHES[action];
        if (flags) {
          const targets = scope.messages.filter((i) => !flags.done(i));
          for (const item of targets) yield* mail.steps.update(tx, userId, item.id, flags.patch, undefined, now);
          return answer(targets.map((i) => i.id));
        }

        if (action === 'move') {
          const destination = yield* tx.folders.byId(userId, input.destinationFolderId!);
          if (!destination) throw errors.folderNotFound();
          if (!isMailFolder(destination)) {
            throw errors.invalidRequest('Messages can only be moved to mail folders.', [{ field: 'destinationFolderId', message: 'not a mail folder' }]);
          }
          const targets = scope.messages.filter((i) => i.folderId !== destination.id);
          for (const item of targets) yield* mail.steps.move(tx, userId, item.id, destination.id, now);
          return answer(targets.map((i) => i.id));
        }

        // delete, ignore: to Deleted Items (for good when already there). Ignoring also sends the conversation's
        // future messages to Deleted Items (delivery reads the ignore).
        if (action === 'ignore') yield* tx.conversations.ignore(userId, conversationId, now);
        for (const item of scope.messages) yield* mail.steps.delete(tx, userId, item.id, false, now);
        return answer(scope.messages.map((i) => i.id));
      });
    },
  };
}

export type ConversationService = ReturnType<typeof createConversationService>;
