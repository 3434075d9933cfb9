/**
 * A send request becomes RFC 5322 bytes through nodemailer's MailComposer. One MIME tree is rendered twice: the
 * sender's Sent Items copy keeps the Bcc header (the sender must still see whom they blind-copied), the copy for the
 * recipients (local inboxes and the relay) never has it, or every recipient would learn who else got the message.
 */
import crypto from 'node:crypto';
import MailComposer, { type MailComposerAttachment, type MailComposerOptions } from 'nodemailer/lib/mail-composer';
import { htmlToPlain } from '../content/text';
import type { EmailAddress } from '../store/types';

export interface Recipient {
  name?: string;
  address: string;
}

export interface OutgoingAttachment {
  name: string;
  contentType: string;
  content: Buffer;
  isInline: boolean;
  contentId: string | null;
}

export interface OutgoingMessage {
  from: EmailAddress;
  to: Recipient[];
  cc: Recipient[];
  bcc: Recipient[];
  subject: string;
  body: { contentType: 'text' | 'html'; content: string };
  attachments: OutgoingAttachment[];
  importance: 'low' | 'normal' | 'high';
  /** The parent's Message-ID and the References chain to carry, for a reply. */
  thread?: { inReplyTo: string; references: string[] };
  /** Further header fields (a sensitivity label's `msip_labels`). */
  headers?: Record<string, string>;
  /** `Sender` (RFC 5322 §3.6.2): who sent it for `from` (a member sending on behalf of a shared mailbox). */
  sender?: EmailAddress;
}

export interface ComposedMessage {
  internetMessageId: string;
  /** The Sent Items copy. */
  withBcc: Buffer;
  /** What recipients get. */
  withoutBcc: Buffer;
}

/** `<random@hostname>`: 128 random bits in base64url, all of it atext (RFC 5322 §3.6.4). */
export function newMessageId(hostname: string): string {
  return `<${crypto.randomBytes(16).toString('base64url')}@${hostname}>`;
}

/** What MUAs read for importance: Outlook's `Importance`, and `X-Priority` for everyone else. */
const IMPORTANCE_HEADERS: Record<OutgoingMessage['importance'], Record<string, string>> = {
  high: { Importance: 'high', 'X-Priority': '1 (Highest)' },
  normal: {},
  low: { Importance: 'low', 'X-Priority': '5 (Lowest)' },
};

const addressList = (list: Recipient[]) => list.map((r) => ({ name: r.name ?? '', address: r.address }));

export async function composeMessage(message: OutgoingMessage, hostname: string, now: number): Promise<ComposedMessage> {
  const internetMessageId = newMessageId(hostname);
  const options: MailComposerOptions = {
    from: { name: message.from.name, address: message.from.address },
    subject: message.subject,
    messageId: internetMessageId,
    date: new Date(now),
    headers: { ...IMPORTANCE_HEADERS[message.importance], ...message.headers },
    // Content only ever comes from the request: never let a value be read as a file path or a URL to fetch.
    disableFileAccess: true,
    disableUrlAccess: true,
    // SMTP wants CRLF everywhere; a text body typed with bare LFs is converted.
    newline: 'win',
  };
  if (message.sender) options.sender = { name: message.sender.name, address: message.sender.address };
  if (message.to.length) options.to = addressList(message.to);
  if (message.cc.length) options.cc = addressList(message.cc);
  if (message.bcc.length) options.bcc = addressList(message.bcc);
  if (message.thread) {
    options.inReplyTo = message.thread.inReplyTo;
    options.references = message.thread.references;
  }
  if (message.body.contentType === 'html') {
    options.html = message.body.content;
    // A plain alternative for text-only readers, previews and filters.
    options.text = htmlToPlain(message.body.content);
  } else {
    options.text = message.body.content;
  }
  if (message.attachments.length) {
    options.attachments = message.attachments.map(
      (a): MailComposerAttachment => ({
        filename: a.name,
        contentType: a.contentType,
        content: a.content,
        contentDisposition: a.isInline ? 'inline' : 'attachment',
        ...(a.contentId ? { cid: a.contentId } : {}),
      }),
    );
  }
  const root = new MailComposer(options).compile();
  root.keepBcc = true;
  const withBcc = await root.build();
  root.keepBcc = false;
  const withoutBcc = await root.build();
  return { internetMessageId, withBcc, withoutBcc };
}

/** The header block of a message (through the empty line that ends it), at most `max` bytes. */
export function headerBlock(raw: Buffer, max = 64 * 1024): Buffer {
  const head = raw.subarray(0, max);
  const crlf = head.indexOf('\r\n\r\n');
  if (crlf >= 0) return head.subarray(0, crlf + 2);
  const lf = head.indexOf('\n\n');
  return lf >= 0 ? head.subarray(0, lf + 1) : head;
}

/** Message-IDs of the References header of a header block, oldest first. */
export function referencesOf(headers: Buffer): string[] {
  const unfolded = headers.toString('latin1').replace(/\r?\n[ \t]+/g, ' ');
  const line = /^references:(.*)$/im.exec(unfolded)?.[1] ?? '';
  return line.match(/<[^<>\s]+>/g) ?? [];
}

/** How many Message-IDs a reply's References carries: the thread's root and the newest ones (RFC 5322 §3.6.4). */
const MAX_REFERENCES = 20;

/** The References of a reply to a message with `parentId` and `parentReferences`. */
export function replyReferences(parentReferences: string[], parentId: string): string[] {
  const chain = [...parentReferences.filter((id) => id !== parentId), parentId];
  return chain.length <= MAX_REFERENCES ? chain : [chain[0]!, ...chain.slice(chain.length - (MAX_REFERENCES - 1))];
}
