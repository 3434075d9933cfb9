/**
 * Focused Inbox: at delivery, a message goes to Focused (people and conversations) or Other (bulk, lists,
 * notifications). The decision is a pure function of signals delivery already has (the sender, the rule headers of
 * `ParsedMessage.headers`, the recipients, and what the directory, the contacts and Sent Items say about the sender);
 * there is no per-user model to train, so a second server or a re-import decides the same. The first rule that
 * applies decides:
 *
 *  1. `override`: the user's own "always move to Focused/Other" for this sender wins over everything: it is the only
 *     signal that is the user's own decision.
 *  2. `automated`: `Auto-Submitted` other than `no` (RFC 3834 §5), `X-Autoreply`/`X-Autorespond`,
 *     `Precedence: auto_reply`, or a null `Return-Path: <>` (a bounce or report): no person wrote this, even when it
 *     comes from a colleague's address (an out-of-office reply) → Other.
 *  3. `bulk`: `Precedence: bulk` or `junk`, `Feedback-ID` (bulk senders' feedback-loop id) or `X-Campaign`: the
 *     message went to a mass list, whoever the sender is (a known company's newsletter) → Other.
 *  4. `notification`: a sender local part no person reads or writes from: noreply / no-reply / do-not-reply,
 *     notifications, notify, alerts, newsletter(s), news, marketing, mailer-daemon, postmaster, bounces… → Other,
 *     also when the user once wrote to that address (replying to a CI mail does not make the CI a person).
 *  5. `self`: the mailbox's own address (a note to self, a copy of one's own message) → Focused.
 *  6. `colleague`, `contact`, `correspondent`: a user of the mailbox's tenant, someone in the user's contacts, or
 *     someone the user has written or replied to → Focused, even through a mailing list or without the user in To
 *     (a colleague's post to the team list, a contact's introduction with the user in Cc): who wrote it matters more
 *     than how it travelled. Only the machine evidence of rules 2–4 outranks a known person.
 *  7. `list`: `List-Id`, `List-Post`, `List-Unsubscribe` (RFC 2369/2919) or `Precedence: list` from anyone else:
 *     mail to a list the user is on, not to the user → Other.
 *  8. `role`: a role account of an unknown sender (info, support, billing, orders, bookings, helpdesk, hr, events…,
 *     after RFC 2142's role mailboxes): a department or a system speaking, not a person → Other. Weaker than rule 4:
 *     the user's own correspondence with billing@ is a conversation and stays Focused (rule 6).
 *  9. `person`: anyone else who put the mailbox in To wrote to the user personally (a stranger's question included)
 *     → Focused.
 * 10. `indirect`: otherwise the mailbox is only in Cc, or not named at all (Bcc, undisclosed recipients, an alias):
 *     a copy for information from someone the user does not know → Other.
 *
 * Subjects and bodies are not read: words like "invoice" or "unsubscribe" appear in personal mail too, and a rule on
 * them would be language-bound. The `subject` signal is kept for callers' logs and later rules.
 */
import type { EmailAddress } from '../store/types';

export interface FocusedSignals {
  from: EmailAddress | null;
  /** `ParsedMessage.headers`: the rule headers, lower-cased names. */
  headers: Record<string, string>;
  subject: string;
  mailboxAddress: string;
  to: EmailAddress[];
  cc: EmailAddress[];
  /** A user of the mailbox's tenant. */
  senderIsColleague: boolean;
  senderIsContact: boolean;
  /** The user has written to or replied to the sender. */
  userWroteToSender: boolean;
  /** The user's override for this sender (settings `focusedOverrides`). */
  override?: 'focused' | 'other';
}

export type FocusedReason =
  | 'override'
  | 'automated'
  | 'bulk'
  | 'notification'
  | 'self'
  | 'colleague'
  | 'contact'
  | 'correspondent'
  | 'list'
  | 'role'
  | 'person'
  | 'indirect';

export type FocusedClassification = 'focused' | 'other';

export interface FocusedDecision {
  classification: FocusedClassification;
  reason: FocusedReason;
}

/** Local parts (or their first word) that only machines send from. */
const MACHINE_LOCAL_PARTS = new Set([
  'noreply',
  'donotreply',
  'dontreply',
  'notification',
  'notifications',
  'notify',
  'alert',
  'alerts',
  'newsletter',
  'newsletters',
  'news',
  'digest',
  'marketing',
  'promotions',
  'mailerdaemon',
  'postmaster',
  'bounce',
  'bounces',
  'mailer',
  'automated',
]);

/** Role mailboxes (RFC 2142 and the usual departmental ones): a team or a system, rarely one person. */
const ROLE_LOCAL_PARTS = new Set([
  'info',
  'hello',
  'contact',
  'office',
  'team',
  'support',
  'help',
  'helpdesk',
  'service',
  'customerservice',
  'care',
  'sales',
  'billing',
  'invoice',
  'invoices',
  'accounts',
  'payments',
  'receipts',
  'orders',
  'order',
  'bookings',
  'booking',
  'reservations',
  'tickets',
  'events',
  'hr',
  'jobs',
  'careers',
  'webmaster',
  'hostmaster',
  'abuse',
  'security',
  'feedback',
]);

/** The local part of an address, lower-cased, without a `+tag`. */
function localPart(address: string): string {
  const at = address.lastIndexOf('@');
  return (at < 0 ? address : address.slice(0, at)).trim().toLowerCase().replace(/\+.*$/, '');
}

/**
 * Whether a local part names one of `names`: as a whole with separators dropped (`no-reply`, `do_not_reply`,
 * `mailer-daemon`) or by its first word (`noreply-billing`, `notifications.eu`, `bounces-123`).
 */
function localPartIn(local: string, names: ReadonlySet<string>): boolean {
  if (names.has(local.replace(/[-_.]/g, ''))) return true;
  const first = local.split(/[-_.]/)[0] ?? '';
  return names.has(first) || names.has(first.replace(/\d+$/, ''));
}

export function isMachineSender(address: string): boolean {
  return localPartIn(localPart(address), MACHINE_LOCAL_PARTS);
}

export function isRoleSender(address: string): boolean {
  return localPartIn(localPart(address), ROLE_LOCAL_PARTS);
}

/** A header's first token, lower-cased (`auto-replied; owner-email=...` → `auto-replied`). */
function token(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  return value.split(';')[0]!.trim().toLowerCase();
}

const sameAddress = (a: string, b: string): boolean => a.trim().toLowerCase() === b.trim().toLowerCase();

/** Which of the automation, bulk and list markers the headers carry. */
export function headerEvidence(headers: Record<string, string>): { automated: boolean; bulk: boolean; list: boolean } {
  const autoSubmitted = token(headers['auto-submitted']);
  const precedence = token(headers['precedence']);
  const returnPath = headers['return-path']?.trim();
  return {
    automated:
      (autoSubmitted !== undefined && autoSubmitted !== '' && autoSubmitted !== 'no') ||
      'x-autoreply' in headers ||
      'x-autorespond' in headers ||
      precedence === 'auto_reply' ||
      returnPath === '<>',
    bulk: precedence === 'bulk' || precedence === 'junk' || 'feedback-id' in headers || 'x-campaign' in headers,
    list: 'list-id' in headers || 'list-post' in headers || 'list-unsubscribe' in headers || precedence === 'list',
  };
}

export function classifyFocused(s: FocusedSignals): FocusedDecision {
  const decide = (classification: FocusedClassification, reason: FocusedReason): FocusedDecision => ({ classification, reason });
  if (s.override) return decide(s.override, 'override');

  const evidence = headerEvidence(s.headers);
  const sender = s.from?.address ?? '';
  if (evidence.automated) return decide('other', 'automated');
  if (evidence.bulk) return decide('other', 'bulk');
  if (sender && isMachineSender(sender)) return decide('other', 'notification');

  if (sender && sameAddress(sender, s.mailboxAddress)) return decide('focused', 'self');
  if (s.senderIsColleague) return decide('focused', 'colleague');
  if (s.senderIsContact) return decide('focused', 'contact');
  if (s.userWroteToSender) return decide('focused', 'correspondent');

  if (evidence.list) return decide('other', 'list');
  if (sender && isRoleSender(sender)) return decide('other', 'role');
  if (s.to.some((a) => sameAddress(a.address, s.mailboxAddress))) return decide('focused', 'person');
  return decide('other', 'indirect');
}
