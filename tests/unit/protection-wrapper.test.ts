import crypto from 'node:crypto';
import { simpleParser } from 'mailparser';
import { CmsError, createProtectionKey, decryptWith, encryptFor, signContent, verifySignedContent, type KeyMaterial } from '../../server/protection/cms';
import {
  buildProtectedMessage,
  contentDigest,
  findProtectedParts,
  LICENCE_CONTENT_TYPE,
  licenceJson,
  parseLicence,
  PROTECTED_CONTENT_TYPE,
  PROTECTION_HEADER,
  type Licence,
} from '../../server/protection/wrapper';
import { opensslWorkspace } from '../helpers/openssl';

const ws = opensslWorkspace();
afterAll(() => ws.dispose());

const CRLF = '\r\n';
const longLabel = `MSIP_Label_${'1'.repeat(8)}-aaaa-bbbb-cccc-${'d'.repeat(12)}_Enabled=true; MSIP_Label_${'1'.repeat(8)}-aaaa-bbbb-cccc-${'d'.repeat(12)}_SiteId=${'e'.repeat(8)}-ffff-0000-1111-${'2'.repeat(12)}; MSIP_Label_${'1'.repeat(8)}-aaaa-bbbb-cccc-${'d'.repeat(12)}_Method=Standard`;

/** The inner message: every copied field (some folded, one RFC 2047), and fields that must not be copied. */
const innerHeaders = [
  'Received: from relay.example.org by mx.example.com; Mon, 2 Mar 2026 09:00:00 +0000',
  'DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s1; b=AAAA',
  'From: "Ada Lovelace" <Ada@Example.org>',
  'Sender: assistant@example.org',
  'To: Bob <bob@example.com>,',
  '  carol@example.com',
  'Cc: dave@example.com',
  'Bcc: eve@example.com',
  'Reply-To: replies@example.org',
  'Subject: Quarterly numbers for the board, which are confidential and must not',
  '\tleave the company under any circumstances',
  'Date: Mon, 2 Mar 2026 10:00:00 +0100',
  'Message-ID: <inner.1@example.org>',
  'In-Reply-To: <parent@example.org>',
  'References: <root@example.org>',
  ' <parent@example.org>',
  'Importance: high',
  'X-Priority: 1',
  `msip_labels: ${longLabel}`,
  'X-Pigeon-Protection: v0-forged',
  'X-Secret-Header: do not copy me',
  'MIME-Version: 1.0',
  'Content-Type: text/plain; charset=utf-8',
];
const inner = Buffer.from(`${innerHeaders.join(CRLF)}${CRLF}${CRLF}The real body.${CRLF}`, 'utf8');
const placeholder = 'This message is protected. Open it in an app that supports rights-protected mail — Grüße.\nSecond line, long enough to need a soft line break in quoted-printable encoding, which is seventy-six characters.';
const envelope = crypto.randomBytes(1500);
const licenceBytes = crypto.randomBytes(700);

/** Header fields of a raw message, unfolded (test's own reading: drop CRLF before white space). */
function headerFields(raw: Buffer): Array<[string, string]> {
  const text = raw.toString('latin1');
  const end = text.search(/\r?\n\r?\n/);
  return text
    .slice(0, end)
    .replace(/\r?\n(?=[ \t])/g, '')
    .split(/\r?\n/)
    .map((line) => {
      const colon = line.indexOf(':');
      return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()] as [string, string];
    });
}

const valuesOf = (fields: Array<[string, string]>, name: string) => fields.filter(([n]) => n === name).map(([, v]) => v);

describe('buildProtectedMessage', () => {
  let outer: Buffer;
  beforeAll(async () => {
    outer = await buildProtectedMessage({ inner, envelope, licence: licenceBytes, placeholderText: placeholder });
  });

  it('parses with mailparser: the placeholder text and the two parts with their types, names and bytes', async () => {
    const parsed = await simpleParser(outer);
    expect(parsed.text?.replace(/\r\n/g, '\n').trimEnd()).toBe(placeholder);
    expect(parsed.attachments.map((a) => [a.contentType, a.filename])).toEqual([
      [PROTECTED_CONTENT_TYPE, 'message.p7m'],
      [LICENCE_CONTENT_TYPE, 'licence.p7s'],
    ]);
    expect(parsed.attachments[0]!.content.equals(envelope)).toBe(true);
    expect(parsed.attachments[1]!.content.equals(licenceBytes)).toBe(true);
    const parts = findProtectedParts(parsed.attachments);
    expect(parts?.envelope.equals(envelope)).toBe(true);
    expect(parts?.licence.equals(licenceBytes)).toBe(true);
  });

  it('copies the listed fields with their unfolded values verbatim, and no other field of the inner message', () => {
    const innerFields = headerFields(inner);
    const outerFields = headerFields(outer);
    const copied = ['from', 'sender', 'to', 'cc', 'bcc', 'reply-to', 'subject', 'date', 'message-id', 'in-reply-to', 'references', 'importance', 'x-priority', 'msip_labels'];
    for (const name of copied) {
      expect(valuesOf(innerFields, name)).toHaveLength(1);
      expect(valuesOf(outerFields, name)).toEqual(valuesOf(innerFields, name));
    }
    expect(valuesOf(outerFields, 'subject')).toEqual(['Quarterly numbers for the board, which are confidential and must not\tleave the company under any circumstances']);
    expect(valuesOf(outerFields, 'x-pigeon-protection')).toEqual(['v1']);
    expect(valuesOf(outerFields, 'mime-version')).toEqual(['1.0']);
    expect(valuesOf(outerFields, 'content-type')).toHaveLength(1);
    expect(valuesOf(outerFields, 'content-type')[0]).toMatch(/^multipart\/mixed; boundary="[^"]+"$/);
    expect(outerFields.map(([n]) => n).sort()).toEqual([...copied, 'x-pigeon-protection', 'mime-version', 'content-type'].sort());
    expect(outer.toString('latin1')).not.toContain('The real body');
  });

  it('folds long fields at white space to lines of at most 78 characters where it can, with CRLF line ends throughout', () => {
    const text = outer.toString('latin1');
    const head = text.slice(0, text.indexOf('\r\n\r\n'));
    for (const line of head.split('\r\n')) {
      // A longer line is one word that has no white space to fold at (here: one label of the msip_labels list).
      const words = line.replace(/^[^ \t:]+: /, '').trim();
      if (line.length > 78) expect(words).not.toMatch(/[ \t]/);
    }
    expect(head.split('\r\n').filter((l) => l.length > 78)).toHaveLength(1);
    expect(head).toMatch(/\r\nmsip_labels: [^\r]+\r\n [^\r]+/); // the label list needed folding
    expect(text.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
  });

  it('reads back through mailparser as the inner message is read', async () => {
    const [fromOuter, fromInner] = await Promise.all([simpleParser(outer), simpleParser(inner)]);
    expect(fromOuter.subject).toBe(fromInner.subject);
    expect(fromOuter.from?.value).toEqual([{ address: 'Ada@Example.org', name: 'Ada Lovelace' }]);
    expect(fromOuter.to).toEqual(fromInner.to);
    expect(fromOuter.cc).toEqual(fromInner.cc);
    expect(fromOuter.replyTo).toEqual(fromInner.replyTo);
    expect(fromOuter.messageId).toBe('<inner.1@example.org>');
    expect(fromOuter.inReplyTo).toBe('<parent@example.org>');
    expect(fromOuter.references).toEqual(['<root@example.org>', '<parent@example.org>']);
    expect(fromOuter.date?.toISOString()).toBe('2026-03-02T09:00:00.000Z');
    // mailparser folds Importance and X-Priority into its `priority` header.
    expect(fromOuter.headers.get('priority')).toBe('high');
    expect(fromOuter.headerLines.map((h) => h.key)).toEqual(expect.arrayContaining(['importance', 'x-priority', 'msip_labels']));
    expect(fromOuter.headers.get(PROTECTION_HEADER.toLowerCase())).toBe('v1');
  });

  it('keeps an RFC 2047 subject encoded as it was (and mailparser decodes it), and raw UTF-8 bytes as they were', async () => {
    const encodedWords = '=?UTF-8?B?R2VoZWltOiBaYWhsZW4gZsO8ciBkZW4gVm9yc3RhbmQ=?= =?UTF-8?Q?_=E2=80=94_bitte_nicht_weiterleiten?=';
    const message = Buffer.from(`From: a@example.org\nSubject: ${encodedWords}\nX-Other: Grüße\nTo: Jürgen <j@example.org>\n\nbody\n`, 'utf8');
    const built = await buildProtectedMessage({ inner: message, envelope, licence: licenceBytes, placeholderText: 'p' });
    const fields = headerFields(built);
    expect(valuesOf(fields, 'subject')).toEqual([encodedWords]);
    expect(valuesOf(fields, 'x-other')).toEqual([]);
    expect(built.includes(Buffer.from('To: Jürgen <j@example.org>', 'utf8'))).toBe(true);
    const parsed = await simpleParser(built);
    expect(parsed.subject).toBe('Geheim: Zahlen für den Vorstand — bitte nicht weiterleiten');
    expect(findProtectedParts(parsed.attachments)?.envelope.equals(envelope)).toBe(true);
  });

  it('writes every placeholder line break as CRLF (no bare CR or LF in the output)', async () => {
    const built = await buildProtectedMessage({ inner, envelope, licence: licenceBytes, placeholderText: 'one\rtwo\nthree\r\nfour' });
    expect(built.toString('latin1').replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
    expect((await simpleParser(built)).text?.trimEnd().split(/\r?\n/)).toEqual(['one', 'two', 'three', 'four']);
  });

  it('reads the header of a message with LF line ends and of one with no body', async () => {
    for (const message of ['Subject: only headers\nFrom: a@example.org', 'Subject: lf\n  folded\nFrom: a@example.org\n\nbody']) {
      const built = await buildProtectedMessage({ inner: Buffer.from(message), envelope, licence: licenceBytes, placeholderText: 'p' });
      const fields = headerFields(built);
      expect(valuesOf(fields, 'from')).toEqual(['a@example.org']);
      expect(valuesOf(fields, 'subject')[0]).toMatch(/^(only headers|lf  folded)$/);
    }
  });
});

describe('findProtectedParts', () => {
  it('is undefined for an ordinary message with attachments', async () => {
    const ordinary = [
      'From: a@example.org',
      'Subject: ordinary',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="b"',
      '',
      '--b',
      'Content-Type: text/plain',
      '',
      'hello',
      '--b',
      'Content-Type: application/pkcs7-mime; name="smime.p7m"',
      'Content-Disposition: attachment; filename="smime.p7m"',
      'Content-Transfer-Encoding: base64',
      '',
      'AAECAw==',
      '--b--',
      '',
    ].join(CRLF);
    const parsed = await simpleParser(Buffer.from(ordinary));
    expect(parsed.attachments).toHaveLength(1);
    expect(findProtectedParts(parsed.attachments)).toBeUndefined();
    expect(findProtectedParts([])).toBeUndefined();
  });

  it('is undefined unless there is exactly one part of each type', () => {
    const e = { contentType: PROTECTED_CONTENT_TYPE, content: Buffer.from('e') };
    const l = { contentType: LICENCE_CONTENT_TYPE, content: Buffer.from('l') };
    expect(findProtectedParts([e])).toBeUndefined();
    expect(findProtectedParts([l])).toBeUndefined();
    expect(findProtectedParts([e, l, e])).toBeUndefined();
    expect(findProtectedParts([e, l, l])).toBeUndefined();
    expect(findProtectedParts([l, { contentType: 'Application/X-Pigeon-Protected; name="message.p7m"', content: Buffer.from('E') }])).toEqual({
      envelope: Buffer.from('E'),
      licence: Buffer.from('l'),
    });
  });
});

const validLicence = (): Licence => ({
  v: 1,
  issuer: { tenantId: 'tenant-1', name: 'Acme' },
  owner: 'ada@example.org',
  template: { id: 'do-not-forward', name: 'Do Not Forward' },
  rights: ['view', 'reply', 'replyAll'],
  issuedAt: '2026-03-02T09:00:00.000Z',
  expiresAt: '2026-04-01T00:00:00Z',
  contentDigest: contentDigest(Buffer.from('envelope')),
  messageId: '<inner.1@example.org>',
});

describe('licences', () => {
  it('round-trips through canonical JSON: fixed member order, no white space, rights in catalogue order', () => {
    const licence = { ...validLicence(), rights: ['replyAll', 'view', 'reply'] as Licence['rights'] };
    const json = licenceJson(licence);
    expect(json.toString('utf8')).toBe(
      '{"v":1,"issuer":{"tenantId":"tenant-1","name":"Acme"},"owner":"ada@example.org","template":{"id":"do-not-forward","name":"Do Not Forward"},' +
        `"rights":["view","reply","replyAll"],"issuedAt":"2026-03-02T09:00:00.000Z","expiresAt":"2026-04-01T00:00:00Z","contentDigest":"${validLicence().contentDigest}","messageId":"<inner.1@example.org>"}`,
    );
    expect(licenceJson(validLicence()).equals(json)).toBe(true);
    expect(parseLicence(json)).toEqual(validLicence());
    const noExpiry = { ...validLicence(), expiresAt: null, messageId: null, rights: [] };
    expect(parseLicence(licenceJson(noExpiry))).toEqual(noExpiry);
  });

  it('accepts another writer’s member order and white space', () => {
    const reordered = JSON.stringify(Object.fromEntries(Object.entries(validLicence()).reverse()), null, 2);
    expect(parseLicence(Buffer.from(reordered))).toEqual(validLicence());
  });

  it('refuses extra, missing and malformed fields with CmsError', () => {
    const variants: Array<Record<string, unknown>> = [
      { ...validLicence(), extra: true },
      { ...validLicence(), issuer: { tenantId: 't', name: 'n', extra: 1 } },
      { ...validLicence(), template: { id: 'x' } },
      (({ owner: _owner, ...rest }) => rest)(validLicence()),
      (({ expiresAt: _expiresAt, ...rest }) => rest)(validLicence()),
      { ...validLicence(), rights: ['view', 'share'] },
      { ...validLicence(), rights: ['view', 'view'] },
      { ...validLicence(), v: 2 },
      { ...validLicence(), owner: 'Ada@example.org' },
      { ...validLicence(), owner: 'not an address' },
      { ...validLicence(), issuedAt: '2 March 2026' },
      { ...validLicence(), expiresAt: '2026-03-01T00:00:00Z' },
      { ...validLicence(), contentDigest: crypto.createHash('sha256').update('x').digest('base64') },
      { ...validLicence(), contentDigest: 'abc' },
      { ...validLicence(), messageId: 'inner.1@example.org' },
      { ...validLicence(), issuer: { tenantId: '', name: 'n' } },
    ];
    for (const variant of variants) {
      expect(() => parseLicence(Buffer.from(JSON.stringify(variant)))).toThrow(CmsError);
      expect(() => licenceJson(variant as unknown as Licence)).toThrow(CmsError);
    }
    for (const bytes of [Buffer.from('not json'), Buffer.from('[]'), Buffer.from('null'), Buffer.from([0xff, 0xfe]), Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), licenceJson(validLicence())])]) {
      expect(() => parseLicence(bytes)).toThrow(CmsError);
    }
  });

  it('contentDigest is the base64url SHA-256 of the envelope, and any change to the envelope changes it', () => {
    const digest = contentDigest(envelope);
    expect(digest).toBe(crypto.createHash('sha256').update(envelope).digest('base64url'));
    expect(digest).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const changed = Buffer.from(envelope);
    changed[700] = changed[700]! ^ 0x80;
    expect(contentDigest(changed)).not.toBe(digest);
  });
});

describe('a whole protected message, end to end', () => {
  let key: KeyMaterial;
  beforeAll(async () => {
    key = await createProtectionKey({ tenantName: 'Acme', now: Date.now() });
  });

  it('builds from an inner message, parses back, verifies, binds and decrypts; openssl opens the extracted parts', async () => {
    const env = await encryptFor(inner, [key.certificatePem]);
    const licence: Licence = { ...validLicence(), contentDigest: contentDigest(env), expiresAt: null };
    const signedLicence = await signContent(licenceJson(licence), key, Date.now());
    const outer = await buildProtectedMessage({ inner, envelope: env, licence: signedLicence, placeholderText: placeholder });

    const parts = findProtectedParts((await simpleParser(outer)).attachments);
    expect(parts).toBeDefined();
    const verified = await verifySignedContent(parts!.licence, [key.certificatePem]);
    const readLicence = parseLicence(verified.content);
    expect(readLicence).toEqual(licence);
    expect(contentDigest(parts!.envelope)).toBe(readLicence.contentDigest);
    expect((await decryptWith(parts!.envelope, [key])).equals(inner)).toBe(true);

    ws.write('e2e.crt', key.certificatePem);
    ws.write('e2e.key', key.privateKeyPem);
    ws.write('e2e-envelope.der', parts!.envelope);
    ws.write('e2e-licence.der', parts!.licence);
    const opened = ws.run(['cms', '-decrypt', '-binary', '-inform', 'DER', '-in', 'e2e-envelope.der', '-recip', 'e2e.crt', '-inkey', 'e2e.key']);
    expect(opened.equals(inner)).toBe(true);
    const licenceText = ws.run(['cms', '-verify', '-binary', '-inform', 'DER', '-in', 'e2e-licence.der', '-CAfile', 'e2e.crt']);
    expect(JSON.parse(licenceText.toString('utf8'))).toEqual(licence);
  });
});
