/**
 * Automatic replies (out of office) as RFC 3834 wants them: whether a delivered message may be answered at all, which
 * text the sender gets, and the reply itself. Delivery asks `autoReplyRefusal` first, then `autoReplyText` (which
 * also says "nothing to send" for an audience the user left out), claims the sender for the current period (store
 * `autoReplies.claim`: one reply per sender per period) and queues `composeAutoReply`'s bytes through the outbox.
 */
import type { EmailAddress } from '../store/types';
import { composeMessage, replyReferences } from '../send/compose';
import type { AutomaticReplies } from './settings';

/** Why a message gets no automatic reply. */
export type AutoReplyRefusal =
  /** No From address to answer. */
  | 'noSender'
  /** `Auto-Submitted` other than `no`, `X-Autoreply`/`X-Autorespond`, or `Precedence: auto_reply`: a machine wrote it. */
  | 'autoSubmitted'
  /** `Precedence: bulk`, `list` or `junk`. */
  | 'precedence'
  /** `List-Id`, `List-Unsubscribe` or `List-Post`: it came through a mailing list. */
  | 'mailingList'
  /** `X-Auto-Response-Suppress` asks for no out-of-office or automatic replies (Exchange). */
  | 'suppressed'
  /** `Return-Path: <>`: a bounce or report, whose answer would have nowhere to go. */
  | 'nullReturnPath'
  /** The sender is the mailbox itself. */
  | 'fromSelf'
  /** The sender (or the return path) is a system address: mailer-daemon, a list's owner or request address, noreply… */
  | 'systemSender'
  /** The mailbox is in neither To nor Cc (a Bcc, an alias or a list copy). */
  | 'notAddressed';

export interface AutoReplyCheck {
  headers: Record<string, string>;
  from: EmailAddress | null;
  to: EmailAddress[];
  cc: EmailAddress[];
  mailboxAddress: string;
}

const lower = (s: string): string => s.trim().toLowerCase();

/** The first token of a header value (`auto-replied; owner-email=...` → `auto-replied`), lower-cased. */
const firstToken = (value: string | undefined): string | undefined => (value === undefined ? undefined : lower(value.split(';')[0]!));

/** The address in `Return-Path: <a@b>` (empty for the null path `<>`), or undefined when there is no header. */
function returnPathAddress(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const bracketed = /<([^>]*)>/.exec(value);
  return lower(bracketed ? bracketed[1]! : value);
}

/**
 * RFC 3834 §2 and common practice: addresses that stand for software, not a person, so an answer would go unread or
 * start a loop. A list's administrative addresses are `owner-x`, `x-owner`, `x-request` and `x-bounces` (Mailman,
 * Majordomo, LISTSERV).
 */
export function isSystemAddress(address: string): boolean {
  const at = address.lastIndexOf('@');
  const local = lower(at < 0 ? address : address.slice(0, at)).replace(/\+.*$/, '');
  const compact = local.replace(/[-_.]/g, '');
  if (['mailerdaemon', 'postmaster', 'listserv', 'majordomo', 'noreply', 'donotreply', 'dontreply', 'bounce', 'bounces'].includes(compact)) {
    return true;
  }
  return (
    local.startsWith('owner-') ||
    /-(request|owner|bounces?)$/.test(local) ||
    /^(no-?reply|do-?not-?reply|bounces?)[-_.]/.test(local)
  );
}

/** Why NOT to answer this message automatically, or null when an automatic reply may go out. */
export function autoReplyRefusal(input: AutoReplyCheck): AutoReplyRefusal | null {
  const { headers } = input;
  const sender = input.from?.address ? lower(input.from.address) : '';
  if (!sender) return 'noSender';

  // §2: MUST NOT answer a message whose Auto-Submitted is anything but "no" (another responder, a bounce, a robot).
  const autoSubmitted = firstToken(headers['auto-submitted']);
  const precedence = firstToken(headers['precedence']);
  if ((autoSubmitted !== undefined && autoSubmitted !== '' && autoSubmitted !== 'no') || 'x-autoreply' in headers || 'x-autorespond' in headers || precedence === 'auto_reply') {
    return 'autoSubmitted';
  }
  // §2: SHOULD NOT answer list or bulk mail; Precedence is the old convention for both.
  if (precedence === 'bulk' || precedence === 'list' || precedence === 'junk') return 'precedence';
  if ('list-id' in headers || 'list-unsubscribe' in headers || 'list-post' in headers) return 'mailingList';
  // Exchange's way of saying "do not answer this": All, or OOF / AutoReply among the listed kinds.
  const suppress = (headers['x-auto-response-suppress'] ?? '').split(/[,\s]+/).map(lower);
  if (suppress.some((k) => k === 'all' || k === 'oof' || k === 'autoreply')) return 'suppressed';

  const returnPath = returnPathAddress(headers['return-path']);
  if (returnPath === '') return 'nullReturnPath';
  const mailbox = lower(input.mailboxAddress);
  if (sender === mailbox) return 'fromSelf';
  if (isSystemAddress(sender) || (returnPath !== undefined && isSystemAddress(returnPath))) return 'systemSender';
  // §2: a personal responder answers only mail that names the user: not Bcc copies, aliases or list expansions.
  const named = [...input.to, ...input.cc].some((a) => lower(a.address) === mailbox);
  if (!named) return 'notAddressed';
  return null;
}

/**
 * The text this sender gets, or null for none: senders of the tenant get the internal reply; others get the external
 * one when the audience is everyone, or only contacts and the sender is one. An empty (blank) text sends nothing.
 */
export function autoReplyText(a: AutomaticReplies, audience: { internal: boolean; senderIsContact: boolean }): string | null {
  const nonEmpty = (text: string): string | null => (text.trim() === '' ? null : text);
  if (audience.internal) return nonEmpty(a.internalReply);
  if (a.externalAudience === 'all' || (a.externalAudience === 'contactsOnly' && audience.senderIsContact)) return nonEmpty(a.externalReply);
  return null;
}

export const AUTO_REPLY_SUBJECT_PREFIX = 'Automatic reply:';

/** "Automatic reply: <subject>", without stacking the prefix on a subject that already has it. */
export function autoReplySubject(original: string): string {
  const subject = original.replace(/\s+/g, ' ').trim();
  if (subject === '') return AUTO_REPLY_SUBJECT_PREFIX.slice(0, -1);
  if (subject.toLowerCase().startsWith(AUTO_REPLY_SUBJECT_PREFIX.toLowerCase())) return subject;
  return `${AUTO_REPLY_SUBJECT_PREFIX} ${subject}`;
}

export interface AutoReplyInput {
  mailbox: EmailAddress;
  /** The sender of the original. */
  to: EmailAddress;
  /** The original's subject. */
  subject: string;
  /** The original's Message-ID (`<id>`), which the reply answers. */
  inReplyTo: string | null;
  /** The original's References; the reply's are these plus the original's Message-ID. */
  references: string[];
  text: string;
  hostname: string;
  now: number;
}

/**
 * The reply as RFC 5322 bytes (through the project's composer, so it is built like every other sent message): From
 * the mailbox to the sender, threaded under the original, marked `Auto-Submitted: auto-replied` (RFC 3834 §5, so other
 * responders do not answer it) and `X-Auto-Response-Suppress: All` (Exchange's equivalent), with a fresh Message-ID.
 */
export async function composeAutoReply(input: AutoReplyInput): Promise<{ raw: Buffer; internetMessageId: string }> {
  const headers: Record<string, string> = { 'Auto-Submitted': 'auto-replied', 'X-Auto-Response-Suppress': 'All' };
  // Without the original's id there is no parent to name; its References still place the reply in the thread.
  if (!input.inReplyTo && input.references.length) headers['References'] = input.references.join(' ');
  const composed = await composeMessage(
    {
      from: input.mailbox,
      to: [{ name: input.to.name, address: input.to.address }],
      cc: [],
      bcc: [],
      subject: autoReplySubject(input.subject),
      body: { contentType: 'text', content: input.text },
      attachments: [],
      importance: 'normal',
      ...(input.inReplyTo ? { thread: { inReplyTo: input.inReplyTo, references: replyReferences(input.references, input.inReplyTo) } } : {}),
      headers,
    },
    input.hostname,
    input.now,
  );
  return { raw: composed.withoutBcc, internetMessageId: composed.internetMessageId };
}
