/**
 * From a raw RFC 5322 message to the fields of an email item. mailparser does the MIME work (transfer encodings,
 * charsets, RFC 2047 words, address lists); this module decides what Pigeon keeps of it, and how a message finds its
 * conversation. Everything here is a pure function of the bytes: no clock, no randomness, no module state, so the
 * same message always yields the same item (a re-import or a second server agrees).
 */
import crypto from 'node:crypto';
import { simpleParser, type AddressObject, type EmailAddress as ParsedAddress, type ParsedMail } from 'mailparser';
import type { EmailAddress, NewAttachment, NewItem } from '../store/types';
import { htmlToPlain } from './text';

export { htmlToPlain };

export type Importance = 'low' | 'normal' | 'high';

/** The email fields of a `NewItem` (the caller adds owner, folder and receivedAt), plus what threading needs. */
export interface ParsedMessage
  extends Required<
    Pick<
      NewItem,
      'subject' | 'from' | 'to' | 'cc' | 'replyTo' | 'sentAt' | 'internetMessageId' | 'bodyText' | 'bodyHtml' | 'preview'
    >
  > {
  attachments: NewAttachment[];
  importance: Importance;
  /** Message-IDs of the References header, oldest first, each in `<id>` form. */
  references: string[];
  /** The first Message-ID of In-Reply-To, in `<id>` form. */
  inReplyTo: string | null;
  /**
   * The headers mailbox rules read (MAILBOX_RULE_HEADERS: list, bulk and automation markers), lower-cased names, the
   * first occurrence's unfolded text; absent when the message has none.
   */
  headers: Record<string, string>;
}

/** Headers Focused Inbox, junk filtering and automatic replies (RFC 3834) look at. */
export const MAILBOX_RULE_HEADERS = [
  'list-id',
  'list-unsubscribe',
  'list-post',
  'precedence',
  'auto-submitted',
  'x-auto-response-suppress',
  'x-autoreply',
  'x-autorespond',
  'return-path',
  'sender',
  'feedback-id',
  'x-campaign',
  'x-mailer',
] as const;

/** The rule headers of a parsed message, as raw text (mailparser's structured values turned back into strings). */
function ruleHeaders(lines: ReadonlyArray<{ key: string; line: string }>): Record<string, string> {
  const wanted = new Set<string>(MAILBOX_RULE_HEADERS);
  const out: Record<string, string> = {};
  for (const { key, line } of lines) {
    const name = key.toLowerCase();
    if (!wanted.has(name) || name in out) continue;
    const colon = line.indexOf(':');
    out[name] = line.slice(colon + 1).replace(/\r?\n[ \t]+/g, ' ').trim().slice(0, 2048);
  }
  return out;
}

export const PREVIEW_LENGTH = 256;

export async function parseMessage(raw: Buffer): Promise<ParsedMessage> {
  const mail = await simpleParser(raw, {
    // cid: links stay as they are: clients resolve them against the attachment list. The default rewrites them into
    // data: URIs, which copies every inline image into the HTML body (and into body sizes and sync pages).
    keepCidLinks: true,
    // No generated text from HTML and no generated HTML from text: bodyText/bodyHtml must say which parts the
    // message really has. The preview of an HTML-only message is derived below instead.
    skipHtmlToText: true,
    skipTextToHtml: true,
    skipTextLinks: true,
  });

  const bodyHtml = typeof mail.html === 'string' ? mail.html : null;
  // With skipHtmlToText mailparser reports an HTML-only message as text '' rather than no text.
  const bodyText = typeof mail.text === 'string' && !(bodyHtml !== null && mail.text === '') ? mail.text : null;
  const messageIds = (value: unknown): string[] => (typeof value === 'string' ? extractMessageIds(value) : []);
  const references = (Array.isArray(mail.references) ? mail.references : mail.references ? [mail.references] : []).flatMap(
    messageIds,
  );

  return {
    subject: mail.subject ?? '',
    from: addresses(mail.from)[0] ?? null,
    to: addresses(mail.to),
    cc: addresses(mail.cc),
    replyTo: addresses(mail.replyTo),
    sentAt: headerDate(mail),
    internetMessageId: messageIds(mail.messageId)[0] ?? null,
    bodyText,
    bodyHtml,
    preview: makePreview(bodyText !== null && bodyText.trim() !== '' ? bodyText : htmlToPlain(bodyHtml ?? '')),
    attachments: mail.attachments.map(
      (a): NewAttachment => ({
        name: a.filename || 'attachment',
        contentType: a.contentType || 'application/octet-stream',
        // An image the HTML shows in place is not something the user "attached": hasAttachments ignores it.
        isInline: a.contentDisposition === 'inline' || (a.related === true && Boolean(a.cid || a.contentId)),
        contentId: stripAngles(a.cid || a.contentId || '') || null,
        content: a.content,
      }),
    ),
    importance: importanceOf(mail),
    references,
    inReplyTo: messageIds(mail.inReplyTo)[0] ?? null,
    headers: ruleHeaders(mail.headerLines ?? []),
  };
}

/**
 * The conversation a message belongs to: the thread's root Message-ID (first of References, else In-Reply-To, else
 * its own id), hashed so the id is opaque, fixed-size and the same on every import. Hashing the root rather than the
 * parent makes every reply, however deep, land with its root even when intermediate messages are missing. With no
 * Message-ID at all, the normalised subject is the only thread evidence left.
 */
export function computeConversationId(
  parsed: Pick<ParsedMessage, 'references' | 'inReplyTo' | 'internetMessageId' | 'subject'>,
): string {
  const root = parsed.references[0] ?? parsed.inReplyTo ?? parsed.internetMessageId;
  const key = root ? `mid:${root}` : `subject:${normalizeSubject(parsed.subject)}`;
  return crypto.createHash('sha256').update(key, 'utf8').digest('hex').slice(0, 24);
}

/** `Re: AW: Fwd:  Hello   World` → `hello world`: reply and forward prefixes (any language we know, repeated). */
export function normalizeSubject(subject: string): string {
  let s = subject.normalize('NFC').replace(/\s+/g, ' ').trim();
  // Prefixes: Re, Fwd/Fw, AW/WG (German), Rép/TR (French), SV/VS (Nordic), RE[2] counters, and fullwidth colons.
  const prefix = /^(?:re|fwd?|aw|wg|r[ée]p|tr|sv|vs|antw)(?:\s*\[\d+\]|\s*\(\d+\))?\s*[:：]\s*/i;
  for (let m = prefix.exec(s); m; m = prefix.exec(s)) s = s.slice(m[0].length);
  return s.toLowerCase().trim();
}

/** `Importance` wins over `X-Priority` when both exist; mailparser folds both into one `priority` value. */
function importanceOf(mail: ParsedMail): Importance {
  const lines = mail.headerLines ?? [];
  const raw = (key: string): string | undefined => {
    const found = lines.find((l) => l.key === key);
    return found ? found.line.slice(found.line.indexOf(':') + 1).trim().toLowerCase() : undefined;
  };
  const importance = raw('importance');
  if (importance === 'high' || importance === 'low' || importance === 'normal') return importance;
  const xPriority = raw('x-priority') ?? raw('x-msmail-priority') ?? raw('priority');
  if (xPriority === undefined) return 'normal';
  const n = parseInt(xPriority, 10);
  if (!Number.isNaN(n)) return n < 3 ? 'high' : n > 3 ? 'low' : 'normal';
  if (/^(high|urgent)/.test(xPriority)) return 'high';
  if (/^(low|non-urgent)/.test(xPriority)) return 'low';
  return 'normal';
}

/**
 * The Date header in ms, or null when it is missing or unreadable. Read from the raw header line because mailparser
 * substitutes the current time for an unparsable date, which would make the result depend on when it ran.
 */
function headerDate(mail: ParsedMail): number | null {
  const line = (mail.headerLines ?? []).find((l) => l.key === 'date');
  if (!line) return null;
  const value = line.line.slice(line.line.indexOf(':') + 1).replace(/\s+/g, ' ').trim();
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

/** Address headers as a flat list: groups (`Team: a@x, b@y;`) contribute their members; entries without an address are dropped. */
function addresses(value: AddressObject | AddressObject[] | undefined): EmailAddress[] {
  const out: EmailAddress[] = [];
  const visit = (a: ParsedAddress): void => {
    if (a.group) a.group.forEach(visit);
    else if (a.address) out.push({ name: a.name ?? '', address: a.address });
  };
  for (const obj of Array.isArray(value) ? value : value ? [value] : []) obj.value.forEach(visit);
  return out;
}

/** Every `<id>` in a header value (In-Reply-To may carry several, or comments); a bare id gets its brackets back. */
function extractMessageIds(value: string): string[] {
  const found = value.match(/<[^<>\s]+>/g);
  if (found) return found;
  const bare = value.trim();
  return bare && !/\s/.test(bare) ? [`<${bare}>`] : [];
}

function stripAngles(value: string): string {
  return value.trim().replace(/^<+/, '').replace(/>+$/, '');
}

/**
 * Whitespace collapsed, at most PREVIEW_LENGTH UTF-16 units (the protocol's "≤256 chars" and what the store keeps),
 * never ending in half of a surrogate pair: a lone surrogate is not valid UTF-8 and would be mangled on the way out.
 */
export function makePreview(text: string): string {
  const collapsed = text.replace(/\s+/g, ' ').trim();
  if (collapsed.length <= PREVIEW_LENGTH) return collapsed;
  let end = PREVIEW_LENGTH;
  const last = collapsed.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end -= 1;
  return collapsed.slice(0, end);
}
