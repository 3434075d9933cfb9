/**
 * The protected-message wrapper: the MIME message a rights-protected message travels and rests as, and its use
 * licence. Layout and rules: schema/protection-format.md.
 *
 * The outer message carries the inner message's addressing and threading headers (so lists, threads and replies
 * work without opening anything), a placeholder text for software that knows nothing of protection, the inner
 * RFC 5322 message as CMS EnvelopedData (`message.p7m`) and the licence as CMS SignedData (`licence.p7s`).
 */
import crypto from 'node:crypto';
import { encode as qpEncode, wrap as qpWrap } from 'nodemailer/lib/qp';
import { z } from 'zod';
import { RIGHTS, type Right } from './rights';
import { CmsError } from './cms';

/** Attachment "message.p7m": EnvelopedData DER of the inner RFC 5322 message. */
export const PROTECTED_CONTENT_TYPE = 'application/x-pigeon-protected';
/** Attachment "licence.p7s": SignedData DER of the licence JSON. */
export const LICENCE_CONTENT_TYPE = 'application/x-pigeon-licence';
/** Value `v1` on the outer message. */
export const PROTECTION_HEADER = 'X-Pigeon-Protection';

const PROTECTION_VERSION = 'v1';
const PROTECTED_FILENAME = 'message.p7m';
const LICENCE_FILENAME = 'licence.p7s';

export interface Licence {
  v: 1;
  issuer: { tenantId: string; name: string };
  /** The sender's address, lower case; the owner holds every right. */
  owner: string;
  template: { id: string; name: string };
  /** What everyone else the message reaches may do. */
  rights: Right[];
  /** ISO 8601. */
  issuedAt: string;
  /** ISO 8601; after it nobody may open the content. */
  expiresAt: string | null;
  /** base64url SHA-256 of the EnvelopedData DER: binds licence to content. */
  contentDigest: string;
  /** The inner message's Message-ID, `<...>`. */
  messageId: string | null;
}

// ---------------------------------------------------------------------------------------------------------------
// The licence

/** A licence is a few hundred bytes; anything far larger is not one (and is not worth parsing). */
const MAX_LICENCE_BYTES = 64 * 1024;

const instant = z.iso.datetime({ offset: true });
const LicenceSchema = z
  .strictObject({
    v: z.literal(1),
    issuer: z.strictObject({ tenantId: z.string().min(1).max(256), name: z.string().max(1024) }),
    owner: z
      .string()
      .max(320)
      .refine((a) => /^[^\s@<>]+@[^\s@<>]+$/.test(a) && a === a.toLowerCase(), 'owner must be a lower-case address'),
    template: z.strictObject({ id: z.string().min(1).max(256), name: z.string().max(1024) }),
    rights: z.array(z.enum(RIGHTS)).refine((r) => new Set(r).size === r.length, 'rights must not repeat'),
    issuedAt: instant,
    expiresAt: instant.nullable(),
    // 32 bytes of SHA-256 are 43 base64url characters without padding.
    contentDigest: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
    messageId: z.string().max(998).regex(/^<[^<>\s]+>$/).nullable(),
  })
  .refine((l) => l.expiresAt === null || Date.parse(l.expiresAt) > Date.parse(l.issuedAt), 'expiresAt must be after issuedAt');

function validLicence(value: unknown): Licence {
  const parsed = LicenceSchema.safeParse(value);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new CmsError(`licence: ${first ? `${first.path.join('.') || '(root)'}: ${first.message}` : 'invalid'}`);
  }
  return parsed.data;
}

/** A licence from its JSON bytes (UTF-8, no BOM); CmsError for anything that is not exactly a licence. */
export function parseLicence(json: Buffer): Licence {
  if (!(json instanceof Uint8Array) || json.length > MAX_LICENCE_BYTES) throw new CmsError('licence: not a licence');
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(json));
  } catch {
    throw new CmsError('licence: not UTF-8 JSON');
  }
  return validLicence(value);
}

/**
 * The canonical JSON bytes of a licence: UTF-8, no whitespace, members in the order of the `Licence` interface
 * (nested ones too), rights in the catalogue's order (RIGHTS). Throws CmsError for what parseLicence would refuse.
 */
export function licenceJson(licence: Licence): Buffer {
  const l = validLicence(licence);
  const canonical: Licence = {
    v: l.v,
    issuer: { tenantId: l.issuer.tenantId, name: l.issuer.name },
    owner: l.owner,
    template: { id: l.template.id, name: l.template.name },
    rights: RIGHTS.filter((r) => l.rights.includes(r)),
    issuedAt: l.issuedAt,
    expiresAt: l.expiresAt,
    contentDigest: l.contentDigest,
    messageId: l.messageId,
  };
  return Buffer.from(JSON.stringify(canonical), 'utf8');
}

/** base64url (no padding) SHA-256 of the EnvelopedData DER: what a licence's contentDigest must equal. */
export function contentDigest(envelope: Buffer): string {
  return crypto.createHash('sha256').update(envelope).digest('base64url');
}

// ---------------------------------------------------------------------------------------------------------------
// The outer message

/** The inner header fields the outer message repeats, in the spelling it writes them with. */
const COPIED_FIELDS = [
  'From',
  'Sender',
  'To',
  'Cc',
  'Bcc',
  'Reply-To',
  'Subject',
  'Date',
  'Message-ID',
  'In-Reply-To',
  'References',
  'Importance',
  'X-Priority',
  'msip_labels',
];
const COPIED_BY_LOWER_NAME = new Map(COPIED_FIELDS.map((name) => [name.toLowerCase(), name]));

/** RFC 5322 §2.1.1: lines SHOULD be at most 78 characters (MUST at most 998). */
const FOLD_AT = 78;
const BASE64_LINE = 76;
const QP_LINE = 76;

/** The header section of a message (latin1, so every byte maps to one character and survives the round trip). */
function headerSection(message: Buffer): string {
  const text = message.toString('latin1');
  if (text.startsWith('\r\n') || text.startsWith('\n')) return ''; // no header fields at all
  const ends = [text.indexOf('\r\n\r\n'), text.indexOf('\n\n')].filter((i) => i >= 0);
  return ends.length ? text.slice(0, Math.min(...ends)) : text;
}

/** Header fields, unfolded (RFC 5322 §2.2.3: a line break followed by white space is removed, the space stays). */
function unfoldedFields(section: string): Array<{ name: string; value: string }> {
  const fields: Array<{ name: string; value: string }> = [];
  for (const line of section.split(/\r?\n/)) {
    const last = fields[fields.length - 1];
    if (/^[ \t]/.test(line)) {
      if (last) last.value += line;
      continue;
    }
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon) : '';
    // RFC 5322 §3.6.8 field names; anything else (mbox "From " lines, garbage) is not a field.
    if (!/^[\x21-\x39\x3b-\x7e]+$/.test(name)) {
      fields.push({ name: '', value: '' }); // keeps a following continuation line from joining an earlier field
      continue;
    }
    fields.push({ name, value: line.slice(colon + 1) });
  }
  return fields.filter((f) => f.name !== '');
}

/**
 * Folds a header line at its own white space (a CRLF inserted before a space or tab), so unfolding gives back the
 * same value: at most FOLD_AT characters a line where the value allows it, never a line of white space only
 * (RFC 5322 §3.2.2). A long run without white space (an encoded word, a Message-ID) stays whole.
 */
function folded(line: string): string {
  const isWsp = (c: string | undefined) => c === ' ' || c === '\t';
  const lines: string[] = [];
  let rest = line;
  while (rest.length > FOLD_AT) {
    // The first line keeps the field name and the colon's own space; every line keeps something besides space.
    const min = lines.length === 0 ? line.indexOf(':') + 2 : 1;
    const fits = (i: number) => isWsp(rest[i]) && rest.slice(0, i).trim() !== '';
    let at = -1;
    for (let i = FOLD_AT; i >= min && at < 0; i--) if (fits(i)) at = i;
    for (let i = FOLD_AT + 1; i < rest.length && at < 0; i++) if (fits(i)) at = i;
    if (at < 0) break;
    lines.push(rest.slice(0, at));
    rest = rest.slice(at);
  }
  lines.push(rest);
  return lines.join('\r\n');
}

/** The copied header lines of the inner message, in its order, values unfolded and otherwise verbatim. */
function copiedHeaders(inner: Buffer): string[] {
  const lines: string[] = [];
  for (const { name, value } of unfoldedFields(headerSection(inner))) {
    const spelling = COPIED_BY_LOWER_NAME.get(name.toLowerCase());
    if (!spelling) continue;
    const trimmed = value.replace(/^[ \t]+|[ \t]+$/g, '');
    // A bare CR or a NUL would break the outer message's syntax; such a field is malformed and not repeated.
    if (/[\r\n\0]/.test(trimmed)) continue;
    lines.push(folded(trimmed ? `${spelling}: ${trimmed}` : `${spelling}:`));
  }
  return lines;
}

function base64Lines(data: Buffer): string {
  return (data.toString('base64').match(new RegExp(`.{1,${BASE64_LINE}}`, 'g')) ?? []).join('\r\n');
}

function attachmentPart(contentType: string, filename: string, data: Buffer): string {
  return [
    `Content-Type: ${contentType}; name="${filename}"`,
    `Content-Disposition: attachment; filename="${filename}"`,
    'Content-Transfer-Encoding: base64',
    '',
    base64Lines(data),
  ].join('\r\n');
}

/**
 * The outer message (CRLF line ends): the inner message's From, Sender, To, Cc, Bcc, Reply-To, Subject, Date,
 * Message-ID, In-Reply-To, References, Importance, X-Priority and msip_labels, `X-Pigeon-Protection: v1`,
 * MIME-Version, and a multipart/mixed body of the placeholder text (UTF-8, quoted-printable), `message.p7m` and
 * `licence.p7s` (base64).
 */
export async function buildProtectedMessage(input: {
  inner: Buffer;
  envelope: Buffer;
  licence: Buffer;
  placeholderText: string;
}): Promise<Buffer> {
  const { inner, envelope, licence, placeholderText } = input;
  // "=_" cannot occur in quoted-printable or base64 text, so no part can contain a line that looks like the boundary.
  const boundary = `=_pigeon_protected_${crypto.randomBytes(16).toString('hex')}`;
  // Every line break becomes CRLF: quoted-printable keeps CR and LF literal, and a bare one would not be a line end.
  const placeholder = qpWrap(qpEncode(Buffer.from(placeholderText.replace(/\r\n|\r|\n/g, '\r\n'), 'utf8')), QP_LINE);
  const head = [
    ...copiedHeaders(inner),
    `${PROTECTION_HEADER}: ${PROTECTION_VERSION}`,
    'MIME-Version: 1.0',
    folded(`Content-Type: multipart/mixed; boundary="${boundary}"`),
  ];
  const parts = [
    ['Content-Type: text/plain; charset=utf-8', 'Content-Transfer-Encoding: quoted-printable', '', placeholder].join('\r\n'),
    attachmentPart(PROTECTED_CONTENT_TYPE, PROTECTED_FILENAME, envelope),
    attachmentPart(LICENCE_CONTENT_TYPE, LICENCE_FILENAME, licence),
  ];
  const body = parts.map((p) => `--${boundary}\r\n${p}\r\n`).join('') + `--${boundary}--\r\n`;
  return Buffer.from(`${head.join('\r\n')}\r\n\r\n${body}`, 'latin1');
}

/**
 * The envelope and licence of a wrapper among a parsed message's attachments, or undefined unless there is exactly
 * one of each (two candidates for either would leave it to chance which one is opened).
 */
export function findProtectedParts(
  attachments: Array<{ contentType: string; content: Buffer }>,
): { envelope: Buffer; licence: Buffer } | undefined {
  const mediaType = (contentType: unknown) => (typeof contentType === 'string' ? contentType.split(';')[0]!.trim().toLowerCase() : '');
  const ofType = (type: string) => attachments.filter((a) => mediaType(a.contentType) === type);
  const envelopes = ofType(PROTECTED_CONTENT_TYPE);
  const licences = ofType(LICENCE_CONTENT_TYPE);
  if (envelopes.length !== 1 || licences.length !== 1) return undefined;
  return { envelope: envelopes[0]!.content, licence: licences[0]!.content };
}
