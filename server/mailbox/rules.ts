/**
 * The recipient's mailbox rules, run by delivery (server/mail/delivery.ts `rules`) in the unit of work that stores a
 * message arriving in the Inbox, in this order:
 *
 * 1. Junk: a sender on the blocked list (and not on the safe list: junk.ts) goes to Junk Email.
 * 2. Ignored conversations: a message of a conversation the user ignored goes to Deleted Items.
 * 3. Focused Inbox: focused or other, from what the server knows of the sender (focused.ts): a person of the tenant,
 *    one of the user's contacts, someone the user wrote to, list and bulk headers, automated senders, and the user's
 *    own per-sender overrides.
 * 4. Automatic replies: when they are on, a sender that may be answered (RFC 3834: never lists, bulk or automated
 *    mail; autoReply.ts) and that the audience setting allows is owed one reply per period — claimed here, in the
 *    same transaction as the message, and sent after the commit by the automatic replier (autoReplier.ts).
 *
 * Everything is read through the unit's `tx`, so the decision and the stored copy are one snapshot.
 */
import { newId } from '../ids';
import type { InboxDecision, PreparedMessage } from '../mail/delivery';
import type { Step, TxStore, User } from '../store/types';
import { autoRepliesActive, parseSettings, type MailboxSettings } from './settings';
import { classifyFocused } from './focused';
import { junkVerdict, senderKey } from './junk';
import { autoReplyRefusal, autoReplyText } from './autoReply';

/** The facts about a sender that Focused Inbox and automatic replies both need. */
export interface SenderFacts {
  colleague: boolean;
  contact: boolean;
  wroteTo: boolean;
}

export function* senderFacts(tx: TxStore, owner: User, address: string | null): Step<SenderFacts> {
  if (!address) return { colleague: false, contact: false, wroteTo: false };
  const key = senderKey(address);
  const colleague = (yield* tx.users.byEmail(key)).some((u) => u.tenantId === owner.tenantId && u.id !== owner.id);
  const contact = yield* tx.items.hasContactAddress(owner.id, key);
  const wroteTo = (yield* tx.directory.frequent(owner.tenantId, owner.id)).some((f) => f.address.toLowerCase() === key);
  return { colleague, contact, wroteTo };
}

/** Per-unit memo of the settings and the owner, so the two hooks of one copy read them once. */
interface Judged {
  owner: User;
  settings: MailboxSettings;
  facts: SenderFacts;
}

export function createMailboxRules() {
  const judged = new WeakMap<PreparedMessage, Map<string, Judged>>();

  function* route(tx: TxStore, userId: string, message: PreparedMessage, conversationId: string): Step<InboxDecision> {
    const owner = yield* tx.users.byId(userId);
    const from = message.parsed.from?.address ?? null;
    const settings = parseSettings((yield* tx.mailboxSettings.get(userId))?.doc);
    const facts = owner ? yield* senderFacts(tx, owner, from) : { colleague: false, contact: false, wroteTo: false };
    if (owner) {
      const memo = judged.get(message) ?? new Map<string, Judged>();
      memo.set(userId, { owner, settings, facts });
      judged.set(message, memo);
    }
    const reasons: string[] = [];
    let folderKind: InboxDecision['folderKind'];
    const verdict = junkVerdict(settings.junk, from);
    if (verdict === 'blocked') {
      folderKind = 'junkEmail';
      reasons.push('junk:blocked');
    } else if (yield* tx.conversations.isIgnored(userId, conversationId)) {
      folderKind = 'deletedItems';
      reasons.push('conversation:ignored');
    }
    const override = from ? settings.focusedOverrides.find((o) => o.sender === senderKey(from))?.classification : undefined;
    const focused = classifyFocused({
      from: message.parsed.from,
      headers: message.parsed.headers,
      subject: message.parsed.subject,
      mailboxAddress: owner?.email ?? '',
      to: message.parsed.to,
      cc: message.parsed.cc,
      senderIsColleague: facts.colleague,
      senderIsContact: facts.contact || verdict === 'safe',
      userWroteToSender: facts.wroteTo,
      ...(override ? { override } : {}),
    });
    reasons.push(`focused:${focused.reason}`);
    return { ...(folderKind ? { folderKind } : {}), inferenceClassification: focused.classification, reasons };
  }

  /** Claims the automatic reply the message is owed, if any; answers whether one was claimed. */
  function* afterStore(tx: TxStore, userId: string, message: PreparedMessage, itemId: string, decision: InboxDecision, now: number): Step<boolean> {
    const memo = judged.get(message)?.get(userId);
    if (!memo || decision.folderKind === 'junkEmail') return false; // nobody answers junk
    const { owner, settings, facts } = memo;
    const replies = settings.automaticReplies;
    if (!autoRepliesActive(replies, now)) return false;
    const parsed = message.parsed;
    const refusal = autoReplyRefusal({ headers: parsed.headers, from: parsed.from, to: parsed.to, cc: parsed.cc, mailboxAddress: owner.email });
    if (refusal !== null || !parsed.from) return false;
    if (autoReplyText(replies, { internal: facts.colleague, senderIsContact: facts.contact }) === null) return false;
    return yield* tx.autoReplies.claim({ id: newId(), userId, period: settings.autoReplyPeriod, sender: senderKey(parsed.from.address), itemId }, now);
  }

  return { route, afterStore };
}

export type MailboxRules = ReturnType<typeof createMailboxRules>;
