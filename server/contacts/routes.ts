/**
 * The contacts API (issue 18). Routes:
 * - POST   /v1/contacts                     a new contact (JSON) → 201 item view; Idempotency-Key applies
 * - POST   /v1/contacts/import?folderId=    a vCard file (text/vcard) → 200 {imported, skipped: [{index, reason}]}
 * - GET    /v1/contacts/export.vcf?folderId= the folder's contacts as vCard 4.0 (a download)
 * - PUT    /v1/contacts/:itemId             the whole contact replaced (JSON; If-Match: <changeKey>) → 200 item view
 * - PUT    /v1/contacts/:itemId/photo       the photo (image/jpeg, png, gif or webp, ≤ 1 MiB) → 200 item view
 * - DELETE /v1/contacts/:itemId/photo       the photo removed → 200 item view
 * A contact is deleted, moved, flagged and read like any item (/v1/items/:itemId); its photo downloads as the item's
 * attachment (GET /v1/items/:itemId/attachments/:attachmentId).
 *
 * The literal paths (`import`, `export.vcf`) are declared before `/v1/contacts/:itemId`: Express tries paths in
 * table order, and the parameter path would otherwise take them (and answer 405).
 */
import { TextDecoder } from 'node:util';
import express from 'express';
import { z } from 'zod';
import { errors } from '../errors';
import type { Call, Route } from '../http/table';
import { parse, text } from '../http/validate';
import { cleanFilename, dispositionHeader } from '../content/download';
import { CONTACT_LIMITS, MAX_PHOTO_BYTES, MAX_VCARD_TEXT_BYTES, VCardInputError, imageTypeOf, normaliseBirthday } from './vcard';
import type { ContactFields, ContactService } from './service';
import { mailboxOf } from '../http/mailbox';

const PHOTO_TYPES = ['image/jpeg', 'image/png', 'image/gif', 'image/webp'];

/** One line of text, trimmed; empty means "none". */
const line = (max: number) => text(max).transform((s) => s.trim());
const optionalLine = (max: number) =>
  line(max)
    .nullable()
    .optional()
    .transform((s) => (s ? s : null));
/** Several lines (notes, a street): line breaks and tabs allowed, other control characters not. */
const lines = (max: number) =>
  z
    .string()
    .max(max)
    .refine((s) => !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(s), 'must not contain control characters other than line breaks and tabs')
    .transform((s) => s.replace(/\r\n?/g, '\n').trim());

const address = z
  .string()
  .max(CONTACT_LIMITS.address)
  .regex(/^[^\s@<>()",;:]+@[^\s@<>()",;:]+$/, 'must be an email address');

const Email = z.strictObject({ name: line(CONTACT_LIMITS.displayName).optional(), address });
const Phone = z.strictObject({
  type: z.enum(['mobile', 'business', 'home', 'other']).default('other'),
  number: line(CONTACT_LIMITS.phone).pipe(z.string().min(1, 'must not be empty')),
});
const PostalAddress = z
  .strictObject({
    type: z.enum(['home', 'business', 'other']).default('other'),
    street: lines(CONTACT_LIMITS.street).default(''),
    city: line(CONTACT_LIMITS.addressPart).default(''),
    region: line(CONTACT_LIMITS.addressPart).default(''),
    postalCode: line(CONTACT_LIMITS.addressPart).default(''),
    country: line(CONTACT_LIMITS.addressPart).default(''),
  })
  .refine((a) => a.street || a.city || a.region || a.postalCode || a.country, 'give at least one part of the address');

const Birthday = z
  .string()
  .max(10)
  .refine((s) => /^(\d{4}|-)-\d{2}-\d{2}$/.test(s) && normaliseBirthday(s) !== null, 'must be a date: YYYY-MM-DD, or --MM-DD without a year');

const ContactBody = z
  .strictObject({
    displayName: line(CONTACT_LIMITS.displayName).pipe(z.string().min(1, 'must not be empty')),
    givenName: optionalLine(CONTACT_LIMITS.name),
    surname: optionalLine(CONTACT_LIMITS.name),
    emailAddresses: z.array(Email).max(CONTACT_LIMITS.emails).default([]),
    phones: z.array(Phone).max(CONTACT_LIMITS.phones).default([]),
    company: optionalLine(CONTACT_LIMITS.organisation),
    jobTitle: optionalLine(CONTACT_LIMITS.organisation),
    department: optionalLine(CONTACT_LIMITS.organisation),
    addresses: z.array(PostalAddress).max(CONTACT_LIMITS.addresses).default([]),
    birthday: Birthday.nullable().optional(),
    notes: lines(CONTACT_LIMITS.notes).nullable().optional(),
    folderId: z.string().min(1).max(64).optional(),
  })
  .superRefine((v, ctx) => {
    const seen = new Set<string>();
    v.emailAddresses.forEach((e, i) => {
      const key = e.address.toLowerCase();
      if (seen.has(key)) ctx.addIssue({ code: 'custom', path: ['emailAddresses', i, 'address'], message: 'listed twice' });
      seen.add(key);
    });
  });

const FolderQuery = z.strictObject({ folderId: z.string().min(1).max(64).optional() });

/** The checked body as the service takes it (an address without a name is shown with the contact's). */
function fieldsOf(body: z.infer<typeof ContactBody>): ContactFields {
  return {
    displayName: body.displayName,
    notes: body.notes ? body.notes : null,
    data: {
      givenName: body.givenName,
      surname: body.surname,
      emailAddresses: body.emailAddresses.map((e) => ({ name: e.name || body.displayName, address: e.address })),
      phones: body.phones,
      company: body.company,
      jobTitle: body.jobTitle,
      department: body.department,
      addresses: body.addresses,
      birthday: body.birthday ? normaliseBirthday(body.birthday) : null,
    },
  };
}

/** `If-Match` as a change key (quotes and a weak prefix dropped), as PATCH /v1/items/:itemId reads it. */
function ifMatchOf(call: Call): string | undefined {
  const header = call.headers['if-match'];
  if (header === undefined) return undefined;
  if (typeof header !== 'string' || header.length > 64) throw errors.invalidRequest('If-Match must be one change key.', [{ field: 'If-Match', message: 'one change key' }]);
  return header.replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

/** The request body as text in its declared charset (UTF-8 when it names none); bytes that are not that charset are a 400. */
function bodyText(call: Call): string {
  const body = call.body;
  if (!Buffer.isBuffer(body)) return '';
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)"?/i.exec(String(call.headers['content-type'] ?? ''))?.[1] ?? 'utf-8';
  let decoder: TextDecoder;
  try {
    decoder = new TextDecoder(charset, { fatal: true });
  } catch {
    throw errors.invalidRequest(`The charset ${charset} is not one Pigeon reads.`, [{ field: 'Content-Type', message: 'unknown charset' }]);
  }
  try {
    return decoder.decode(body);
  } catch {
    throw errors.invalidRequest(`The vCard text is not valid ${charset}.`, [{ field: 'body', message: `not valid ${charset}` }]);
  }
}

/** The uploaded photo: one of the image types by its own bytes (the declared type is only a first filter). */
function photoOf(call: Call) {
  const given = String(call.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (!PHOTO_TYPES.includes(given)) throw errors.unsupportedMediaType('image/jpeg, image/png, image/gif or image/webp');
  const body = call.body;
  if (!Buffer.isBuffer(body) || body.length === 0) throw errors.invalidRequest('The request body holds no image.', [{ field: 'body', message: 'empty' }]);
  const contentType = imageTypeOf(body);
  if (!contentType) throw errors.invalidRequest('The photo is not a JPEG, PNG, GIF or WebP image.', [{ field: 'body', message: 'not a JPEG, PNG, GIF or WebP image' }]);
  return { contentType, content: body };
}

export function contactRoutes(contacts: ContactService): Route[] {
  return [
    {
      method: 'POST',
      path: '/v1/contacts',
      idempotent: true,
      handler: async (call) => {
        const body = parse(ContactBody, call.body);
        const view = await contacts.create(mailboxOf(call), fieldsOf(body), body.folderId);
        return { status: 201, headers: { Location: `/v1/items/${view.id}` }, body: view };
      },
    },
    {
      method: 'POST',
      path: '/v1/contacts/import',
      body: { raw: 'text/vcard' },
      bodyLimit: MAX_VCARD_TEXT_BYTES,
      idempotent: true,
      handler: async (call) => {
        const { folderId } = parse(FolderQuery, call.query, 'query');
        try {
          return { body: await contacts.importVCards(mailboxOf(call), bodyText(call), folderId) };
        } catch (err) {
          if (err instanceof VCardInputError) throw errors.invalidRequest(err.message, [{ field: 'body', message: err.message }]);
          throw err;
        }
      },
    },
    {
      method: 'GET',
      path: '/v1/contacts/export.vcf',
      handler: async (call) => {
        const { folderId } = parse(FolderQuery, call.query, 'query');
        const { folder, stream } = await contacts.exportVCards(mailboxOf(call), folderId);
        return {
          headers: {
            'Content-Type': 'text/vcard; charset=utf-8',
            'Content-Disposition': dispositionHeader(`${cleanFilename(folder.displayName, 'contacts')}.vcf`, 'attachment'),
            'Cache-Control': 'private, no-store',
          },
          stream,
        };
      },
    },
    {
      method: 'PUT',
      path: '/v1/contacts/:itemId',
      idempotent: true,
      handler: async (call) => {
        const body = parse(ContactBody, call.body);
        return { body: await contacts.replace(mailboxOf(call), call.params.itemId!, fieldsOf(body), ifMatchOf(call), body.folderId) };
      },
    },
    {
      method: 'PUT',
      path: '/v1/contacts/:itemId/photo',
      // The table takes one raw media type; a photo may be any of four, so the bytes are read here (a type outside
      // the four leaves the body unread, and the handler answers 415). Over 1 MiB is a 413 from the parser.
      body: 'none',
      before: [express.raw({ type: PHOTO_TYPES, limit: MAX_PHOTO_BYTES })],
      handler: async (call) => ({ body: await contacts.setPhoto(mailboxOf(call), call.params.itemId!, photoOf(call)) }),
    },
    {
      method: 'DELETE',
      path: '/v1/contacts/:itemId/photo',
      idempotent: true,
      handler: async (call) => ({ body: await contacts.setPhoto(mailboxOf(call), call.params.itemId!, null) }),
    },
  ];
}

