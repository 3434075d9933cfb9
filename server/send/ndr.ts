/**
 * Non-delivery reports (RFC 3464): what the sender finds in their Inbox when a recipient cannot be reached: no relay
 * for remote recipients, a relay's permanent refusal, or a message the relay never accepted in time. The report is a
 * `multipart/report; report-type=delivery-status` from MAILER-DAEMON with three parts: a human-readable text naming
 * each failed recipient and why, the machine-readable `message/delivery-status`, and the original's headers
 * (`text/rfc822-headers`). It answers the original (In-Reply-To/References), so it joins that conversation.
 */
import MimeNode from 'nodemailer/lib/mime-node';
import { parseMessage } from '../content/mime';
import type { EmailAddress } from '../store/types';
import { headerBlock, newMessageId } from './compose';

export interface DeliveryFailure {
  address: string;
  /** RFC 3463 enhanced status, e.g. `5.4.4`; a 4.x.x status with a failure means the server gave up retrying. */
  status: string;
  /** Why, in words, for the human-readable part. */
  reason: string;
  /** The relay's own answer (`550 5.1.1 no such user`), when it gave one. */
  smtpResponse?: string;
}

export interface NdrInput {
  hostname: string;
  sender: EmailAddress;
  /** The message as it was sent (only its headers are used). */
  original: Buffer;
  /** When the server accepted the original. */
  arrivedAt: number;
  /** The relay that answered, for `Remote-MTA`. */
  remoteMta?: string;
  failures: DeliveryFailure[];
  now: number;
}

/** RFC 5322 date-time in UTC (`toUTCString` says `GMT`, an obsolete zone). */
function rfc5322Date(at: number): string {
  return new Date(at).toUTCString().replace(/GMT$/, '+0000');
}

/** DSN fields are US-ASCII text lines: anything a remote server said is flattened to printable ASCII. */
function dsnText(value: string): string {
  return value.replace(/[^\x20-\x7e]+/g, ' ').trim().slice(0, 900);
}

function deliveryStatus(input: NdrInput): string {
  const message = [`Reporting-MTA: dns; ${input.hostname}`, `Arrival-Date: ${rfc5322Date(input.arrivedAt)}`];
  const recipients = input.failures.map((f) => {
    const fields = [`Final-Recipient: rfc822; ${dsnText(f.address)}`, 'Action: failed', `Status: ${f.status}`];
    if (input.remoteMta && f.smtpResponse) fields.push(`Remote-MTA: dns; ${dsnText(input.remoteMta)}`);
    if (f.smtpResponse) fields.push(`Diagnostic-Code: smtp; ${dsnText(f.smtpResponse)}`);
    fields.push(`Last-Attempt-Date: ${rfc5322Date(input.now)}`);
    return fields.join('\r\n');
  });
  return [message.join('\r\n'), ...recipients].join('\r\n\r\n') + '\r\n';
}

function humanText(input: NdrInput, subject: string, messageId: string | null): string {
  const lines = [
    `This is the mail system at ${input.hostname}.`,
    '',
    `Your message could not be delivered to ${input.failures.length === 1 ? 'this recipient' : 'these recipients'}:`,
    '',
    ...input.failures.map((f) => `  ${f.address}: ${f.reason}${f.smtpResponse ? ` (the relay answered: ${f.smtpResponse})` : ''}`),
    '',
    `Subject: ${subject}`,
  ];
  if (messageId) lines.push(`Message-ID: ${messageId}`);
  lines.push('', 'The headers of your message are attached.');
  return lines.join('\n') + '\n';
}

export async function buildNdr(input: NdrInput): Promise<Buffer> {
  const headers = headerBlock(input.original);
  // Only the header block is parsed: the subject and Message-ID decoded the way the rest of the server reads them.
  const original = await parseMessage(Buffer.concat([headers, Buffer.from('\r\n')]));
  const root = new MimeNode('multipart/report; report-type=delivery-status', {
    hostname: input.hostname,
    disableFileAccess: true,
    disableUrlAccess: true,
    newline: 'win',
  });
  root.setHeader({
    From: { name: 'Mail Delivery System', address: `MAILER-DAEMON@${input.hostname}` },
    To: { name: input.sender.name, address: input.sender.address },
    Subject: `Undeliverable: ${original.subject}`,
    Date: new Date(input.now),
    'Message-ID': newMessageId(input.hostname),
    // RFC 3834: an automatic answer, so no one auto-replies to it.
    'Auto-Submitted': 'auto-replied',
  });
  if (original.internetMessageId) {
    root.setHeader('In-Reply-To', original.internetMessageId);
    root.setHeader('References', original.internetMessageId);
  }
  root.createChild('text/plain; charset=utf-8').setContent(humanText(input, original.subject, original.internetMessageId));
  root.createChild('message/delivery-status').setContent(deliveryStatus(input));
  // As a string, so MimeNode can see it is plain ASCII and leave it 7bit (readable in the raw report).
  root.createChild('text/rfc822-headers').setContent(headers.toString('utf8'));
  return root.build();
}
