/**
 * Meetings over mail, the envelope (iMIP, RFC 6047): the message an iTIP object travels in, and the iTIP part of a
 * message that arrives. nodemailer's MailComposer builds the MIME tree (its `icalEvent` option is exactly the
 * layout Google Calendar and Exchange send: multipart/alternative with text/plain and text/calendar; method=…,
 * plus the same object as an application/ics attachment for clients that only look at attachments).
 */
import MailComposer from 'nodemailer/lib/mail-composer';
import { newMessageId } from '../send/compose';
import type { ItipMethod } from './ical';

/** The message cannot be built as asked (its METHOD parameter would contradict the iCalendar object). */
export class ImipError extends Error {
  override name = 'ImipError';
}

const ITIP_METHODS: ReadonlySet<string> = new Set<ItipMethod>(['PUBLISH', 'REQUEST', 'REPLY', 'ADD', 'CANCEL', 'REFRESH', 'COUNTER', 'DECLINECOUNTER']);

/** Media types calendar parts arrive as: text/calendar (RFC 6047), application/ics (Outlook's and Google's attachment). */
const CALENDAR_TYPES: ReadonlySet<string> = new Set(['text/calendar', 'application/ics']);

/**
 * The METHOD of the first VCALENDAR of iCalendar text, or undefined. Read from the content lines themselves (no
 * full parse: a message's part is only looked at here, parseICalendar reads it after) and only at the VCALENDAR
 * level, so a METHOD-like line inside a component or a description never counts.
 */
function methodOf(text: string): ItipMethod | undefined {
  const lines = text.replace(/^\uFEFF/, '').replace(/\r?\n[ \t]/g, '').split(/\r?\n/);
  let depth = 0;
  for (const line of lines) {
    const name = /^([A-Za-z0-9-]+)[;:]/.exec(line)?.[1]?.toUpperCase();
    const value = line.slice(line.indexOf(':') + 1).trim().toUpperCase();
    if (name === 'BEGIN') {
      if (depth === 0 && value !== 'VCALENDAR') return undefined;
      depth++;
    } else if (name === 'END') {
      depth--;
      if (depth <= 0) return undefined;
    } else if (name === 'METHOD' && depth === 1) {
      return ITIP_METHODS.has(value) ? (value as ItipMethod) : undefined;
    }
  }
  return undefined;
}

/**
 * An iMIP message (RFC 6047 §2): multipart/alternative with a text/plain summary and the iCalendar object as
 * text/calendar; method=<METHOD>; charset=UTF-8 (and the object again as an invite.ics attachment), From the sender,
 * To the recipients, Subject, Message-ID `<…@hostname>`, Date. Answers the bytes and the Message-ID.
 */
export async function buildImipMessage(input: {
  from: { name: string; address: string };
  to: Array<{ name: string; address: string }>;
  subject: string;
  text: string;
  ical: string;
  method: ItipMethod;
  hostname: string;
  now: number;
}): Promise<{ raw: Buffer; messageId: string }> {
  // RFC 6047 §2.4: the Content-Type's method parameter MUST be the object's METHOD.
  const inside = methodOf(input.ical);
  if (inside !== input.method) throw new ImipError(`The iCalendar object's METHOD is ${inside ?? 'missing'}, not ${input.method}.`);
  const messageId = newMessageId(input.hostname);
  const composer = new MailComposer({
    from: { name: input.from.name, address: input.from.address },
    to: input.to.map((p) => ({ name: p.name, address: p.address })),
    subject: input.subject,
    text: input.text,
    icalEvent: { method: input.method, content: input.ical },
    messageId,
    date: new Date(input.now),
    // Content only ever comes from the caller: never let a value be read as a file path or a URL to fetch.
    disableFileAccess: true,
    disableUrlAccess: true,
    newline: 'win',
  });
  const raw = await composer.compile().build();
  return { raw, messageId };
}

/**
 * The iTIP part of a parsed message (mailparser's attachment list: text/calendar parts, also application/ics as
 * Outlook and Google attach them; the first with a METHOD): its METHOD and text, or undefined. Calendar data is
 * UTF-8 (RFC 5545 §3.1.4); a byte-order mark is dropped.
 */
export function meetingPart(attachments: Array<{ contentType: string; content: Buffer }>): { method: ItipMethod; text: string } | undefined {
  for (const part of attachments) {
    const type = (part.contentType.split(';')[0] ?? '').trim().toLowerCase();
    if (!CALENDAR_TYPES.has(type)) continue;
    const text = part.content.toString('utf8').replace(/^\uFEFF/, '');
    const method = methodOf(text);
    if (method) return { method, text };
  }
  return undefined;
}
