/**
 * vCard in and out (RFC 6350 vCard 4.0; RFC 2426 vCard 3.0 and the vCard 2.1 Outlook still writes), read and
 * written by ical.js. What Pigeon keeps of a card is a ContactData (server/calendar/model.ts), the display name, the
 * notes and the photo.
 *
 * ical.js parses each card's properties, parameters, escapes and structured values. Around it, this module only
 * frames and cleans what real exports contain and ical.js would refuse or misread:
 * - the text is cut into cards first (BEGIN:VCARD … END:VCARD) and each card parsed on its own: ical.js gives up on
 *   a whole file at the first bad line, and it keeps the first card's version for every later card, so one 3.0 card
 *   would make a following 4.0 card read as 3.0;
 * - vCard 2.1 writes parameters bare (`TEL;WORK;VOICE:`), which ical.js refuses: they become `TYPE=WORK;TYPE=VOICE`
 *   (and a bare QUOTED-PRINTABLE / BASE64 an ENCODING);
 * - quoted-printable values (2.1, and 3.0 as some exporters write it) end lines with a soft break `=` that is not
 *   folding: those lines are joined before ical.js sees them, and the values decoded (in their CHARSET) after;
 * - VERSION is moved first, where RFC 6350 wants it, since that is where ical.js looks to tell 4.0 from 3.0.
 *
 * Photos are kept only when they are in the card (a data: URI, or base64 with ENCODING=b): a URL is never fetched
 * (it would let anyone who hands us a card make the server request any address).
 */
import crypto from 'node:crypto';
import { TextDecoder } from 'node:util';
import ICAL from '../calendar/icalLib';
import type { ContactData, PhoneType } from '../calendar/model';

/** A card that cannot become a contact, or text that cannot be read at all; the message is meant for a 400. */
export class VCardInputError extends Error {
  override name = 'VCardInputError';
}

export const MAX_VCARD_TEXT_BYTES = 5 * 1024 * 1024;
export const MAX_VCARDS = 10_000;
export const MAX_PHOTO_BYTES = 1024 * 1024;

/** The bounds of a contact's fields, the same for the API and for imported cards (server/contacts/service.ts). */
export const CONTACT_LIMITS = {
  displayName: 255,
  name: 255,
  organisation: 255,
  notes: 64 * 1024,
  address: 254,
  phone: 64,
  addressPart: 255,
  street: 1000,
  emails: 100,
  phones: 100,
  addresses: 50,
} as const;

export interface ContactPhoto {
  contentType: string;
  content: Buffer;
}

/** One card as Pigeon keeps it: the item's subject (display name), body text (notes), data and photo. */
export interface VCardContact {
  displayName: string;
  notes: string | null;
  data: ContactData;
  photo: ContactPhoto | null;
}

/** One card of a file, in file order (`index` is its 0-based position among the file's cards). */
export type VCardEntry = { index: number; contact: VCardContact } | { index: number; error: string };

const PRODID = '-//Pigeon//Pigeon Contacts//EN';

/** The image types a photo may have, told by their first bytes (what a client calls it is not trusted). */
export function imageTypeOf(bytes: Buffer): 'image/jpeg' | 'image/png' | 'image/gif' | 'image/webp' | null {
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'image/jpeg';
  if (bytes.length >= 8 && bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return 'image/png';
  if (bytes.length >= 6 && /^GIF8[79]a$/.test(bytes.subarray(0, 6).toString('latin1'))) return 'image/gif';
  if (bytes.length >= 12 && bytes.subarray(0, 4).toString('latin1') === 'RIFF' && bytes.subarray(8, 12).toString('latin1') === 'WEBP') return 'image/webp';
  return null;
}

/**
 * A birthday as the model keeps it: `YYYY-MM-DD`, or `--MM-DD` without a year (RFC 6350's reduced form; Apple
 * writes a missing year as 1604). Null for anything that is not a real calendar date.
 */
export function normaliseBirthday(value: string): string | null {
  const text = value.trim();
  const full = /^(\d{4})-?(\d{2})-?(\d{2})(?:T.*)?$/.exec(text);
  const reduced = /^--(\d{2})-?(\d{2})$/.exec(text);
  const parts = full ?? reduced;
  if (!parts) return null;
  const year = full ? Number(full[1]) : null;
  const month = Number(parts[full ? 2 : 1]);
  const day = Number(parts[full ? 3 : 2]);
  const noYear = year === null || year === 1604 || year === 0;
  // A leap year stands in for a missing one, so 29 February stays a birthday.
  const check = new Date(Date.UTC(2000, month - 1, day));
  if (!noYear) check.setUTCFullYear(year, month - 1, day);
  if (check.getUTCMonth() !== month - 1 || check.getUTCDate() !== day) return null;
  const mmdd = `${String(month).padStart(2, '0')}-${String(day).padStart(2, '0')}`;
  return noYear ? `--${mmdd}` : `${String(year).padStart(4, '0')}-${mmdd}`;
}

// Reading.

/** A property as ical.js gives it (jCard): name, parameters, value type, values. */
type JCardProperty = [string, Record<string, string | string[]>, string, ...unknown[]];

const BEGIN = /^BEGIN:VCARD$/i;
const END = /^END:VCARD$/i;

/** The cards of the text, each as its own physical lines (BEGIN and END left out), or why one is unreadable. */
function frameCards(text: string): Array<{ lines: string[] } | { error: string }> {
  const cards: Array<{ lines: string[] } | { error: string }> = [];
  let current: string[] | null = null;
  let depth = 0;
  for (const line of text.replace(/^\uFEFF/, '').split(/\r\n|\r|\n/)) {
    // Trailing blanks only: a line that starts with a blank continues the one before (a folded `END:VCARD` inside a
    // long note is text, not the end of the card).
    const trimmed = line.trimEnd();
    if (current === null) {
      if (BEGIN.test(trimmed)) {
        if (cards.length >= MAX_VCARDS) throw new VCardInputError(`The text holds more than ${MAX_VCARDS} vCards.`);
        current = [];
        depth = 1;
      }
      // Anything between cards (blank lines, a stray header) is not part of any card.
      continue;
    }
    // A 2.1 AGENT may embed a whole card: it stays inside its parent.
    if (BEGIN.test(trimmed)) depth++;
    else if (END.test(trimmed) && --depth === 0) {
      cards.push({ lines: current });
      current = null;
      continue;
    }
    current.push(line);
  }
  if (current !== null) cards.push({ error: 'The card is not closed with END:VCARD.' });
  if (cards.length === 0) throw new VCardInputError('The text holds no vCard (BEGIN:VCARD … END:VCARD).');
  return cards;
}

/** The parameter part of a content line (before the first `:` outside double quotes), or undefined. */
function splitHead(line: string): { head: string; value: string } | undefined {
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '"') quoted = !quoted;
    else if (c === ':' && !quoted) return { head: line.slice(0, i), value: line.slice(i + 1) };
  }
  return undefined;
}

const isQuotedPrintable = (head: string) => /;(?:ENCODING=)?QUOTED-PRINTABLE(?=;|$)/i.test(head);

/**
 * Logical lines of one card: folded lines unfolded (RFC 6350 §3.2), quoted-printable soft breaks joined, blank lines
 * (2.1 ends a base64 photo with one) dropped.
 */
function logicalLines(physical: string[]): string[] {
  const lines: string[] = [];
  let qpOpen = false; // the last line is quoted-printable and ended with a soft break
  for (const line of physical) {
    const last = lines.length - 1;
    if (qpOpen && last >= 0) {
      lines[last] = lines[last]!.slice(0, -1) + line;
    } else if ((line.startsWith(' ') || line.startsWith('\t')) && last >= 0) {
      lines[last] += line.slice(1);
    } else if (line.trim() === '') {
      continue;
    } else {
      lines.push(line);
    }
    const current = lines[lines.length - 1]!;
    const head = splitHead(current)?.head;
    qpOpen = head !== undefined && isQuotedPrintable(head) && current.endsWith('=');
  }
  return lines;
}

/** `a;b="x;y";c` → a, b="x;y", c: semicolons inside double quotes separate nothing. */
function splitParameters(head: string): string[] {
  const parts: string[] = [];
  let quoted = false;
  let start = 0;
  for (let i = 0; i < head.length; i++) {
    if (head[i] === '"') quoted = !quoted;
    else if (head[i] === ';' && !quoted) {
      parts.push(head.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(head.slice(start));
  return parts;
}

/** `TEL;WORK;VOICE:…` (2.1) → `TEL;TYPE=WORK;TYPE=VOICE:…`; a bare encoding becomes ENCODING=. */
function nameParameters(line: string): string {
  const split = splitHead(line);
  if (!split || !split.head.includes(';')) return line;
  const [name, ...params] = splitParameters(split.head);
  const named = params.map((p) => {
    if (p.includes('=') || p === '') return p;
    return /^(quoted-printable|base64|b|8bit|7bit)$/i.test(p) ? `ENCODING=${p}` : `TYPE=${p}`;
  });
  return `${[name, ...named].join(';')}:${split.value}`;
}

/** The card's text as ical.js should read it: logical lines, parameters named, VERSION first. */
function cleanCard(physical: string[]): string {
  const lines = logicalLines(physical).map(nameParameters);
  const version = lines.findIndex((l) => /^VERSION:/i.test(l));
  if (version > 0) lines.unshift(...lines.splice(version, 1));
  return ['BEGIN:VCARD', ...lines, 'END:VCARD'].join('\r\n');
}

/** Quoted-printable bytes (`=C3=BC`) back to text in the property's charset (UTF-8 when it names none). */
function decodeQuotedPrintable(value: string, charset: string | undefined): string {
  const bytes: Buffer[] = [];
  let literal = '';
  for (let i = 0; i < value.length; i++) {
    const hex = value.slice(i + 1, i + 3);
    if (value[i] === '=' && /^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(Buffer.from(literal, 'utf8'), Buffer.from([parseInt(hex, 16)]));
      literal = '';
      i += 2;
    } else {
      literal += value[i];
    }
  }
  bytes.push(Buffer.from(literal, 'utf8'));
  let decoder: TextDecoder;
  try {
    decoder = new TextDecoder(charset ?? 'utf-8');
  } catch {
    decoder = new TextDecoder('utf-8'); // a charset Node does not know: UTF-8 is the likeliest
  }
  return decoder.decode(Buffer.concat(bytes));
}

const mapStrings = (value: unknown, fn: (s: string) => string): unknown =>
  typeof value === 'string' ? fn(value) : Array.isArray(value) ? value.map((v) => mapStrings(v, fn)) : value;

/** Parameter values, lower-cased, as one list (`TYPE=a,b;TYPE=c` → a, b, c). */
function paramList(p: JCardProperty, name: string): string[] {
  const raw = p[1][name];
  const list = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
  return list.flatMap((v) => String(v).split(',')).map((v) => v.trim().toLowerCase());
}

const param = (p: JCardProperty, name: string): string | undefined => {
  const raw = p[1][name];
  return Array.isArray(raw) ? raw[0] : raw;
};

/** A value as text: several values (ical.js splits on unescaped commas) joined back with the comma they were split on. */
const textOf = (value: unknown): string => (Array.isArray(value) ? value.map(textOf).join(',') : typeof value === 'string' ? value : value == null ? '' : String(value));

/** The components of a structured value (N, ADR, ORG); a value without `;` is one component. */
const partsOf = (p: JCardProperty): string[] => (Array.isArray(p[3]) ? (p[3] as unknown[]).map(textOf) : [textOf(p.slice(3))]);

/** One line: control characters (newlines included) become spaces. */
const singleLine = (s: string) => s.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
/** Several lines (notes, street): line ends made `\n`, other control characters (tabs aside) removed. */
const multiLine = (s: string) => s.replace(/\r\n?/g, '\n').replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '').trim();
const orNull = (s: string) => (s === '' ? null : s);

function limit(value: string, max: number, what: string): string {
  if (value.length > max) throw new VCardInputError(`${what} is longer than ${max} characters.`);
  return value;
}

function phoneType(types: string[]): PhoneType {
  if (types.includes('cell') || types.includes('mobile') || types.includes('iphone')) return 'mobile';
  if (types.includes('work')) return 'business';
  if (types.includes('home')) return 'home';
  return 'other';
}

const addressType = (types: string[]): ContactData['addresses'][number]['type'] => (types.includes('home') ? 'home' : types.includes('work') ? 'business' : 'other');

/** The photo in the card, if it carries one Pigeon keeps: its bytes in the card, a known image type, ≤ 1 MiB. */
function photoOf(p: JCardProperty | undefined): ContactPhoto | null {
  if (!p) return null;
  const value = textOf(p.slice(3)).trim();
  let base64: string;
  const dataUri = /^data:([^,]*?)(;base64)?,(.*)$/is.exec(value);
  if (dataUri) {
    if (!dataUri[2]) return null; // percent-encoded image data: not what any address book writes
    base64 = dataUri[3]!;
  } else if (['b', 'base64'].includes((param(p, 'encoding') ?? '').toLowerCase()) || p[2] === 'binary') {
    // 3.0 ENCODING=b (or a 3.0 value of the default binary type). A URL here is not base64 and is never fetched.
    if (/^[a-z][a-z0-9+.-]*:/i.test(value)) return null;
    base64 = value;
  } else {
    return null; // a URL (4.0 uri value, or 3.0 VALUE=uri): never fetched
  }
  base64 = base64.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(base64)) return null;
  if (Math.floor((base64.length * 3) / 4) > MAX_PHOTO_BYTES + 2) throw new VCardInputError(`The photo is larger than ${MAX_PHOTO_BYTES} bytes.`);
  const content = Buffer.from(base64, 'base64');
  if (content.length > MAX_PHOTO_BYTES) throw new VCardInputError(`The photo is larger than ${MAX_PHOTO_BYTES} bytes.`);
  const contentType = imageTypeOf(content);
  // Not JPEG, PNG, GIF or WebP (an SVG could carry script): the contact is kept without it.
  return contentType ? { contentType, content } : null;
}

/** A UID for a card without one: derived from the card's text, so importing the same file again finds the same contacts. */
function uidFromContent(cardText: string): string {
  const h = crypto.createHash('sha256').update(cardText).digest('hex');
  // Shaped as a name-based UUID (version 5 and RFC 4122 variant bits), which address books accept everywhere.
  const variant = ((parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  return `urn:uuid:${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** One card (already cleaned) to a contact; throws VCardInputError with the reason when it cannot be one. */
function readCard(cardText: string): VCardContact {
  let jcard: unknown;
  try {
    jcard = ICAL.parse(cardText);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new VCardInputError(`The card cannot be read: ${message.length > 200 ? `${message.slice(0, 200)}…` : message}`);
  }
  if (!Array.isArray(jcard) || jcard[0] !== 'vcard' || !Array.isArray(jcard[1])) throw new VCardInputError('The card cannot be read.');
  const properties = (jcard[1] as JCardProperty[]).map((p): JCardProperty => {
    if ((param(p, 'encoding') ?? '').toLowerCase() !== 'quoted-printable') return p;
    const charset = param(p, 'charset');
    return [p[0], p[1], p[2], ...(mapStrings(p.slice(3), (s) => decodeQuotedPrintable(s, charset)) as unknown[])];
  });
  const all = (name: string) => properties.filter((p) => p[0] === name);
  const first = (name: string) => all(name)[0];
  const firstText = (name: string) => {
    const p = first(name);
    return p ? singleLine(textOf(p.slice(3))) : '';
  };

  const kind = (firstText('kind') || firstText('x-addressbookserver-kind')).toLowerCase();
  if (kind === 'group' || kind === 'org' || kind === 'location') throw new VCardInputError(`The card is a ${kind} (KIND:${kind}), not a person.`);

  const n = first('n');
  const [surname = '', givenName = '', middle = '', prefix = '', suffix = ''] = n ? partsOf(n).map(singleLine) : [];
  const org = first('org');
  const [company = '', ...units] = org ? partsOf(org).map(singleLine) : [];
  const department = units.filter(Boolean).join(', ');

  const emailAddresses: Array<{ address: string }> = [];
  const seen = new Set<string>();
  for (const p of all('email')) {
    const address = singleLine(textOf(p.slice(3))).replace(/^mailto:/i, '');
    // Not an address (a typo in someone's address book): left out rather than stored as one.
    if (!/^[^\s@]+@[^\s@]+$/.test(address) || seen.has(address.toLowerCase())) continue;
    seen.add(address.toLowerCase());
    emailAddresses.push({ address: limit(address, CONTACT_LIMITS.address, 'An EMAIL') });
  }

  const phones: ContactData['phones'] = [];
  for (const p of all('tel')) {
    const number = singleLine(textOf(p.slice(3)))
      .replace(/^tel:/i, '')
      .replace(/;ext=/i, ' ext. ');
    if (number !== '') phones.push({ type: phoneType(paramList(p, 'type')), number: limit(number, CONTACT_LIMITS.phone, 'A TEL') });
  }

  const addresses: ContactData['addresses'] = [];
  for (const p of all('adr')) {
    // ADR: post office box; extended address; street; locality; region; postal code; country.
    const [box = '', extended = '', street = '', city = '', region = '', postalCode = '', country = ''] = partsOf(p);
    const streetLines = [box, extended, street].map(multiLine).filter(Boolean).join('\n');
    const entry = {
      type: addressType(paramList(p, 'type')),
      street: limit(streetLines, CONTACT_LIMITS.street, 'An ADR street'),
      city: limit(singleLine(city), CONTACT_LIMITS.addressPart, 'An ADR locality'),
      region: limit(singleLine(region), CONTACT_LIMITS.addressPart, 'An ADR region'),
      postalCode: limit(singleLine(postalCode), CONTACT_LIMITS.addressPart, 'An ADR postal code'),
      country: limit(singleLine(country), CONTACT_LIMITS.addressPart, 'An ADR country'),
    };
    if (entry.street || entry.city || entry.region || entry.postalCode || entry.country) addresses.push(entry);
  }
  if (emailAddresses.length > CONTACT_LIMITS.emails) throw new VCardInputError(`The card has more than ${CONTACT_LIMITS.emails} EMAIL addresses.`);
  if (phones.length > CONTACT_LIMITS.phones) throw new VCardInputError(`The card has more than ${CONTACT_LIMITS.phones} TEL numbers.`);
  if (addresses.length > CONTACT_LIMITS.addresses) throw new VCardInputError(`The card has more than ${CONTACT_LIMITS.addresses} ADR addresses.`);

  const displayName =
    firstText('fn') ||
    [prefix, givenName, middle, surname, suffix].filter(Boolean).join(' ') ||
    company ||
    (emailAddresses[0]?.address ?? '');
  if (displayName === '') throw new VCardInputError('The card has no name: no FN, N, ORG or EMAIL.');

  const note = first('note');
  const notes = note ? orNull(multiLine(textOf(note.slice(3)))) : null;
  const bday = first('bday');
  const uid = firstText('uid') || uidFromContent(cardText);

  return {
    displayName: limit(displayName, CONTACT_LIMITS.displayName, 'FN'),
    notes: notes === null ? null : limit(notes, CONTACT_LIMITS.notes, 'NOTE'),
    data: {
      uid: limit(uid, CONTACT_LIMITS.name, 'UID'),
      givenName: orNull(limit(givenName, CONTACT_LIMITS.name, 'The given name (N)')),
      surname: orNull(limit(surname, CONTACT_LIMITS.name, 'The family name (N)')),
      // A card has no name per address: each is shown with the contact's own.
      emailAddresses: emailAddresses.map((e) => ({ name: displayName, address: e.address })),
      phones,
      company: orNull(limit(company, CONTACT_LIMITS.organisation, 'ORG')),
      jobTitle: orNull(limit(firstText('title') || firstText('role'), CONTACT_LIMITS.organisation, 'TITLE')),
      department: orNull(limit(department, CONTACT_LIMITS.organisation, 'The ORG unit')),
      addresses,
      birthday: bday ? normaliseBirthday(textOf(bday.slice(3))) : null,
    },
    photo: photoOf(first('photo')),
  };
}

/**
 * Every card of the text, each read on its own: a contact, or the reason it cannot be one. Throws VCardInputError
 * only for the text as a whole: over MAX_VCARD_TEXT_BYTES, over MAX_VCARDS cards, or no card at all.
 */
export function readVCards(text: string): VCardEntry[] {
  if (Buffer.byteLength(text, 'utf8') > MAX_VCARD_TEXT_BYTES) throw new VCardInputError(`The vCard text is larger than ${MAX_VCARD_TEXT_BYTES} bytes.`);
  return frameCards(text).map((framed, index) => {
    if ('error' in framed) return { index, error: framed.error };
    try {
      return { index, contact: readCard(cleanCard(framed.lines)) };
    } catch (err) {
      if (err instanceof VCardInputError) return { index, error: err.message };
      throw err;
    }
  });
}

/**
 * Every vCard in the text (3.0 and 4.0, and 2.1, as Apple, Google and Outlook export them). Throws VCardInputError
 * for the first card that cannot be a contact (naming it); `readVCards` reads past bad cards instead.
 */
export function parseVCards(text: string): VCardContact[] {
  return readVCards(text).map((entry) => {
    if ('error' in entry) throw new VCardInputError(`Card ${entry.index + 1}: ${entry.error}`);
    return entry.contact;
  });
}

// Writing.

const TEL_TYPES: Record<PhoneType, string | null> = { mobile: 'cell', business: 'work', home: 'home', other: null };
const ADR_TYPES = { home: 'home', business: 'work', other: null } as const;

/** One contact's card; ical.js writes each property (escapes, structured values, `19800412` / `--0412` birthdays). */
function cardOf(contact: { displayName: string; notes: string | null; data: ContactData; photo?: ContactPhoto | null }): string {
  const { data } = contact;
  const card = new ICAL.Component('vcard');
  const add = (name: string, value: unknown, params: Record<string, string> = {}, type?: string) => {
    const property = new ICAL.Property(name, card);
    card.addProperty(property);
    if (type) property.resetType(type); // before the value: ical.js drops a value whose type is changed
    for (const [key, v] of Object.entries(params)) property.setParameter(key, v);
    property.setValue(value);
  };
  add('version', '4.0');
  add('prodid', PRODID, {}, 'unknown'); // not in ical.js's vCard 4 set: written as is, without VALUE=
  add('uid', data.uid);
  add('fn', contact.displayName);
  if (data.surname || data.givenName) add('n', [data.surname ?? '', data.givenName ?? '', '', '', '']);
  if (data.company || data.department) add('org', data.department ? [data.company ?? '', data.department] : [data.company ?? '']);
  if (data.jobTitle) add('title', data.jobTitle);
  for (const e of data.emailAddresses) add('email', e.address);
  // Free-form numbers as users type them are text, not tel: URIs (RFC 6350 §6.4.1 allows VALUE=text).
  for (const p of data.phones) add('tel', p.number, TEL_TYPES[p.type] ? { type: TEL_TYPES[p.type]! } : {}, 'text');
  for (const a of data.addresses) {
    add('adr', ['', '', a.street, a.city, a.region, a.postalCode, a.country], ADR_TYPES[a.type] ? { type: ADR_TYPES[a.type]! } : {});
  }
  if (data.birthday) add('bday', data.birthday);
  if (contact.notes) add('note', contact.notes);
  const lines = card.getAllProperties().map((p) => p.toICALString()); // unfolded: folded below
  // ical.js escapes the comma of a data: URI (`base64\,`), which address books then cannot read; RFC 6350's own
  // example (§6.2.4) writes it bare, so the PHOTO line is written here.
  if (contact.photo) lines.push(`PHOTO:data:${contact.photo.contentType};base64,${contact.photo.content.toString('base64')}`);
  return ['BEGIN:VCARD', ...lines, 'END:VCARD'].map(fold).join('\r\n') + '\r\n';
}

/**
 * A content line folded so that no line is longer than 75 octets with its leading space (RFC 6350 §3.2), never
 * inside a character. ical.js's own folding puts 75 octets after the space: 76, over the limit.
 */
function fold(line: string): string {
  // ASCII (every photo, most lines): octets are characters, so the line is cut by length.
  if (/^[\x00-\x7f]*$/.test(line)) {
    const parts = [line.slice(0, 75)];
    for (let at = 75; at < line.length; at += 74) parts.push(` ${line.slice(at, at + 74)}`);
    return parts.join('\r\n');
  }
  const out: string[] = [];
  let current = '';
  let octets = 0;
  for (const char of line) {
    const size = Buffer.byteLength(char, 'utf8');
    if (octets + size > 75) {
      out.push(current);
      current = ' ';
      octets = 1;
    }
    current += char;
    octets += size;
  }
  out.push(current);
  return out.join('\r\n');
}

/** vCard 4.0 text (CRLF, folded at 75 octets) for contacts; photos inline as data: URIs when given. */
export function toVCards(contacts: Array<{ displayName: string; notes: string | null; data: ContactData; photo?: ContactPhoto | null }>): string {
  return contacts.map(cardOf).join('');
}
