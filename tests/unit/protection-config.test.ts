/**
 * The tenant protection document: validation (field errors that name the field), built-in templates, and the
 * compiled look-ups (templates, labels, partners, delivery rules, expiry). Partner certificates are made by the
 * `openssl` command line, not by our code.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ApiError } from '../../server/errors';
import {
  BUILT_IN_TEMPLATES,
  EMPTY_PROTECTION_DOCUMENT,
  compileProtection,
  labelAllowsPreview,
  parseProtectionDocument,
  type ProtectionDocument,
} from '../../server/protection/config';
import { RIGHTS } from '../../server/protection/rights';

const PUBLIC = '1b7c3a52-0f4e-4d8a-9c21-6e5f4a3b2c10';
const INTERNAL = '2c8d4b63-1a5f-4e9b-8d32-7f6a5b4c3d21';
const SECRET = '3d9e5c74-2b6a-4fac-9e43-8a7b6c5d4e32';

let dir: string;
let rsaCert: string;
let rsaCert2: string;
let ecCert: string;
let rsaKey: string;

function openssl(args: string[]): string {
  const run = spawnSync('openssl', args, { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${run.stderr}`);
  return run.stdout;
}

function makeCert(name: string, keyArgs: string[]): string {
  const cert = path.join(dir, `${name}.pem`);
  openssl(['req', '-x509', ...keyArgs, '-nodes', '-keyout', path.join(dir, `${name}.key`), '-out', cert, '-subj', `/CN=${name}`, '-days', '2']);
  return fs.readFileSync(cert, 'utf8');
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-protection-config-'));
  rsaCert = makeCert('partner-a', ['-newkey', 'rsa:2048']);
  rsaCert2 = makeCert('partner-b', ['-newkey', 'rsa:2048']);
  ecCert = makeCert('partner-ec', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1']);
  rsaKey = fs.readFileSync(path.join(dir, 'partner-a.key'), 'utf8');
});

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A document with one of everything, as an admin would send it (so every test can break one thing). */
function sample(): any {
  return {
    templates: [{ id: 'legal-hold', name: 'Legal hold', description: 'Read only, for 30 days', rights: ['view', 'reply'], expiry: { days: 30 } }],
    labels: [
      { id: SECRET.toUpperCase(), name: 'Highly Confidential', priority: 30, colour: '#C00000', protectionTemplate: 'do-not-forward', marking: { header: 'HIGHLY CONFIDENTIAL', footer: null } },
      { id: PUBLIC, name: 'Public', priority: 0, colour: '#00a000' },
      { id: INTERNAL, name: 'Internal', priority: 10, colour: '#0000FF', tooltip: 'Staff only', protectionTemplate: 'legal-hold', marking: { header: '', footer: 'Internal use' } },
    ],
    labelPolicy: { defaultLabel: INTERNAL, mandatory: true, justifyDowngrade: true },
    partners: [{ id: 'fabrikam', name: 'Fabrikam', domains: ['Fabrikam.EXAMPLE', 'fabrikam-mail.example.'], certificates: [rsaCert] }],
    deliveryRules: [
      { id: 'board', description: 'Board mail', template: 'confidential-view-only', when: { subjectContains: ['Board Minutes'] } },
      { id: 'secret-out', template: 'do-not-forward', when: { labelIds: [SECRET], fromOutside: false } },
      { id: 'ceo', template: 'encrypt-only', when: { recipientAddresses: ['CEO@Contoso.example'], senderDomains: ['fabrikam.example'] } },
    ],
  };
}

/** The field errors of the 400 the input is refused with. */
function refusal(input: unknown): Array<{ field: string; message: string }> {
  try {
    parseProtectionDocument(input);
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(400);
    expect((err as ApiError).code).toBe('invalidRequest');
    return ((err as ApiError).extra.errors as Array<{ field: string; message: string }>) ?? [];
  }
  throw new Error('the document was accepted');
}

const fields = (input: unknown) => refusal(input).map((e) => e.field);

describe('built-in templates', () => {
  test('the three defaults with their rights and no expiry', () => {
    const byId = Object.fromEntries(BUILT_IN_TEMPLATES.map((t) => [t.id, t]));
    expect(Object.keys(byId)).toEqual(['do-not-forward', 'encrypt-only', 'confidential-view-only']);
    expect(byId['do-not-forward']!.rights).toEqual(['view', 'reply', 'replyAll']);
    expect([...byId['encrypt-only']!.rights].sort()).toEqual([...RIGHTS].sort());
    expect(byId['confidential-view-only']!.rights).toEqual(['view']);
    for (const t of BUILT_IN_TEMPLATES) {
      expect(t.expiry).toBeNull();
      expect(t.builtIn).toBe(true);
    }
    expect(Object.isFrozen(BUILT_IN_TEMPLATES[0]!.rights)).toBe(true);
  });

  test('templates() lists built-ins then custom ones, template() finds both', () => {
    const c = compileProtection(parseProtectionDocument(sample()));
    expect(c.templates().map((t) => t.id)).toEqual(['do-not-forward', 'encrypt-only', 'confidential-view-only', 'legal-hold']);
    expect(c.template('legal-hold')).toMatchObject({ builtIn: false, rights: ['view', 'reply'] });
    expect(c.template('encrypt-only')?.builtIn).toBe(true);
    expect(c.template('nope')).toBeUndefined();
  });

  test('a custom template cannot take a built-in id (in any case) or claim to be built in', () => {
    const doc = sample();
    doc.templates.push({ id: 'do-not-forward', name: 'Mine', rights: ['view'] });
    doc.templates.push({ id: 'Encrypt-Only', name: 'Mine too', rights: ['view'] });
    const errs = refusal(doc);
    expect(errs).toEqual(
      expect.arrayContaining([
        { field: 'templates.1.id', message: expect.stringContaining('built-in') },
        { field: 'templates.2.id', message: expect.stringContaining('built-in') },
      ]),
    );
    const claimed = sample();
    claimed.templates[0].builtIn = true;
    expect(fields(claimed)).toEqual(['templates.0.builtIn']);
    // What an admin read back (builtIn: false) is accepted as it is.
    const readBack = sample();
    readBack.templates[0].builtIn = false;
    expect(parseProtectionDocument(readBack).templates[0]!.builtIn).toBe(false);
  });

  test('a custom template cannot take a built-in name either', () => {
    const doc = sample();
    doc.templates[0].name = 'do not forward';
    expect(fields(doc)).toEqual(['templates.0.name']);
  });
});

describe('parseProtectionDocument', () => {
  test('the empty object is the empty document', () => {
    expect(parseProtectionDocument({})).toEqual(EMPTY_PROTECTION_DOCUMENT);
    expect(compileProtection(EMPTY_PROTECTION_DOCUMENT).templates()).toHaveLength(BUILT_IN_TEMPLATES.length);
  });

  test('a full document is accepted, normalised and given its defaults', () => {
    const doc = parseProtectionDocument(sample());
    expect(doc.labels[0]!.id).toBe(SECRET); // lower-cased
    expect(doc.labels[1]).toEqual({ id: PUBLIC, name: 'Public', priority: 0, colour: '#00a000', tooltip: '', protectionTemplate: null, marking: { header: null, footer: null } });
    expect(doc.labels[2]!.marking).toEqual({ header: null, footer: 'Internal use' }); // empty marking is none
    expect(doc.templates[0]).toEqual({ id: 'legal-hold', name: 'Legal hold', description: 'Read only, for 30 days', rights: ['view', 'reply'], expiry: { days: 30 }, builtIn: false });
    expect(doc.partners[0]!.domains).toEqual(['fabrikam.example', 'fabrikam-mail.example']);
    expect(doc.deliveryRules[2]!.when.recipientAddresses).toEqual(['ceo@contoso.example']);
    expect(doc.deliveryRules[1]!.description).toBe('');
    // Parsing what was parsed gives the same document (what the store holds can be sent back by an admin).
    expect(parseProtectionDocument(JSON.parse(JSON.stringify(doc)))).toEqual(doc);
  });

  test('field errors name the field, with dotted paths', () => {
    const doc = sample();
    doc.labels[2].colour = 'blue';
    doc.templates[0].rights = ['view', 'delete'];
    doc.labels[0].priority = -1;
    doc.partners[0].domains[1] = 'not a domain';
    doc.deliveryRules[2].when.recipientAddresses = ['nobody'];
    const errs = refusal(doc);
    expect(errs.map((e) => e.field).sort()).toEqual(
      ['deliveryRules.2.when.recipientAddresses.0', 'labels.0.priority', 'labels.2.colour', 'partners.0.domains.1', 'templates.0.rights.1'].sort(),
    );
    expect(errs.find((e) => e.field === 'labels.2.colour')!.message).toMatch(/#RRGGBB/);
    expect(errs.find((e) => e.field === 'templates.0.rights.1')!.message).toMatch(/view, reply/);
  });

  test('unknown keys are refused wherever they are', () => {
    expect(fields({ ...sample(), extra: 1 })).toEqual(['(root)']);
    const doc = sample();
    doc.labels[1].color = '#FFFFFF';
    doc.labelPolicy.required = true;
    doc.deliveryRules[0].when.bodyContains = ['x'];
    expect(fields(doc).sort()).toEqual(['deliveryRules.0.when', 'labelPolicy', 'labels.1'].sort());
  });

  test('expiry: days, a fixed date with a zone, or null; nothing else', () => {
    const ok = sample();
    ok.templates[0].expiry = { at: '2027-01-31T00:00:00Z' };
    expect(parseProtectionDocument(ok).templates[0]!.expiry).toEqual({ at: '2027-01-31T00:00:00Z' });
    ok.templates[0].expiry = null;
    expect(parseProtectionDocument(ok).templates[0]!.expiry).toBeNull();
    for (const [expiry, field] of [
      [{ days: 0 }, 'templates.0.expiry.days'],
      [{ days: 1.5 }, 'templates.0.expiry.days'],
      [{ days: 100_000 }, 'templates.0.expiry.days'],
      [{ at: '2027-01-31' }, 'templates.0.expiry.at'],
      [{ at: '2027-01-31T00:00:00' }, 'templates.0.expiry.at'],
      [{ days: 3, at: '2027-01-31T00:00:00Z' }, 'templates.0.expiry'],
      [{}, 'templates.0.expiry'],
    ] as const) {
      const doc = sample();
      doc.templates[0].expiry = expiry;
      expect([JSON.stringify(expiry), fields(doc)]).toEqual([JSON.stringify(expiry), [field]]);
    }
  });

  test('rights: known, not repeated, and including view', () => {
    for (const rights of [[], ['view', 'view'], ['reply'], 'view']) {
      const doc = sample();
      doc.templates[0].rights = rights;
      expect(fields(doc)).toEqual(['templates.0.rights']);
    }
  });

  test('references must resolve', () => {
    const doc = sample();
    doc.labels[0].protectionTemplate = 'gone';
    doc.labelPolicy.defaultLabel = '4e0f6d85-3c7b-4abd-8f54-9b8c7d6e5f43';
    doc.deliveryRules[0].template = 'missing';
    doc.deliveryRules[1].when.labelIds = [SECRET, '5f1a7e96-4d8c-4bce-9a65-ac9d8e7f6a54'];
    expect(fields(doc).sort()).toEqual(
      ['deliveryRules.0.template', 'deliveryRules.1.when.labelIds.1', 'labelPolicy.defaultLabel', 'labels.0.protectionTemplate'].sort(),
    );
  });

  test('ids, label names and priorities are unique; a domain belongs to one partner', () => {
    const doc = sample();
    doc.templates.push({ ...doc.templates[0], name: 'Another' });
    doc.labels.push({ id: PUBLIC.toUpperCase(), name: 'public', priority: 10, colour: '#000000' });
    doc.partners.push({ id: 'fabrikam', name: 'Fabrikam 2', domains: ['fabrikam.example'], certificates: [rsaCert2] });
    doc.deliveryRules.push({ id: 'board', template: 'encrypt-only', when: {} });
    expect(fields(doc).sort()).toEqual(
      ['deliveryRules.3.id', 'labels.3.id', 'labels.3.name', 'labels.3.priority', 'partners.1.domains.0', 'partners.1.id', 'templates.1.id'].sort(),
    );
  });

  test('mandatory labelling needs a label to choose from', () => {
    expect(fields({ labelPolicy: { mandatory: true } })).toEqual(['labelPolicy.mandatory']);
  });

  test('notificationPreview: optional, a boolean, kept as given; by default yes without protection, no with it', () => {
    const doc = sample();
    doc.labels[1].notificationPreview = 'yes';
    expect(fields(doc)).toEqual(['labels.1.notificationPreview']);
    doc.labels[0].notificationPreview = true; // protected (do-not-forward), previews allowed anyway
    doc.labels[1].notificationPreview = false; // unprotected, previews refused
    const parsed = parseProtectionDocument(doc);
    expect(parsed.labels.map((l) => l.notificationPreview)).toEqual([true, false, undefined]);
    expect(parsed.labels.map(labelAllowsPreview)).toEqual([true, false, false]); // the third protects (legal-hold)
    const defaults = parseProtectionDocument(sample());
    expect(defaults.labels.map((l) => 'notificationPreview' in l)).toEqual([false, false, false]);
    expect(defaults.labels.map(labelAllowsPreview)).toEqual([false, true, false]);
    expect(parseProtectionDocument(JSON.parse(JSON.stringify(parsed)))).toEqual(parsed);
  });

  test('label names cannot carry what breaks the msip_labels header', () => {
    const doc = sample();
    doc.labels[1].name = 'Public; Enabled=false';
    expect(fields(doc)).toEqual(['labels.1.name']);
    doc.labels[1].name = ' Public';
    expect(fields(doc)).toEqual(['labels.1.name']);
  });

  test('lengths are bounded', () => {
    const long = sample();
    long.labels[0].name = 'x'.repeat(201);
    long.labels[1].tooltip = 'x'.repeat(1001);
    long.labels[2].marking.footer = 'x'.repeat(1025);
    long.templates[0].description = 'x'.repeat(1001);
    long.deliveryRules[0].when.subjectContains = ['x'.repeat(201)];
    expect(fields(long).sort()).toEqual(
      ['deliveryRules.0.when.subjectContains.0', 'labels.0.name', 'labels.1.tooltip', 'labels.2.marking.footer', 'templates.0.description'].sort(),
    );
    const many = sample();
    many.templates = Array.from({ length: 101 }, (_, i) => ({ id: `t${i}`, name: `T${i}`, rights: ['view'] }));
    expect(fields(many)).toEqual(['templates']);
    const controls = sample();
    controls.labels[0].marking.header = 'line one\nline two';
    expect(fields(controls)).toEqual(['labels.0.marking.header']);
  });

  test('rule condition lists are never empty', () => {
    const doc = sample();
    doc.deliveryRules[0].when.subjectContains = [];
    doc.deliveryRules[1].when.labelIds = [];
    expect(fields(doc).sort()).toEqual(['deliveryRules.0.when.subjectContains', 'deliveryRules.1.when.labelIds']);
  });
});

describe('partner certificates', () => {
  test('an RSA certificate made by openssl is accepted and kept as the same certificate', () => {
    const doc = parseProtectionDocument(sample());
    const kept = doc.partners[0]!.certificates[0]!;
    expect(kept).toMatch(/^-----BEGIN CERTIFICATE-----\n/);
    // openssl reads what we kept as the very certificate it made.
    const der = (pem: string) => {
      const file = path.join(dir, `check-${Math.random().toString(36).slice(2)}.pem`);
      fs.writeFileSync(file, pem);
      return spawnSync('openssl', ['x509', '-in', file, '-outform', 'DER']).stdout;
    };
    expect(der(kept).length).toBeGreaterThan(100);
    expect(der(kept).equals(der(rsaCert))).toBe(true);
    // Pasted with CRLF line ends and surrounding space, it is the same certificate.
    const crlf = sample();
    crlf.partners[0].certificates = [`\n  ${rsaCert.replace(/\n/g, '\r\n')}  `];
    expect(parseProtectionDocument(crlf).partners[0]!.certificates).toEqual([kept]);
  });

  test.each([
    ['garbage', () => 'not a certificate'],
    ['a corrupted body', () => rsaCert.replace(/^(-----BEGIN CERTIFICATE-----\n)(.{20})/, '$1AAAAAAAAAAAAAAAAAAAA')],
    ['an EC key', () => ecCert],
    ['a private key', () => rsaKey],
    ['a certificate followed by its key', () => rsaCert + rsaKey],
    ['two certificates in one entry', () => rsaCert + rsaCert2],
    ['too long', () => rsaCert + ' '.repeat(20_000)],
  ])('%s is refused on its own field', (_, certificate) => {
    const doc = sample();
    doc.partners[0].certificates = [rsaCert2, certificate()];
    expect(fields(doc)).toEqual(['partners.0.certificates.1']);
  });

  test('a partner without a certificate or a domain is refused', () => {
    const doc = sample();
    doc.partners[0].certificates = [];
    doc.partners[0].domains = [];
    expect(fields(doc).sort()).toEqual(['partners.0.certificates', 'partners.0.domains']);
  });
});

describe('compiled look-ups', () => {
  let doc: ProtectionDocument;
  beforeAll(() => {
    const input = sample();
    input.partners.push({ id: 'northwind', name: 'Northwind', domains: ['northwind.example', 'bücher.example'], certificates: [rsaCert2, rsaCert] });
    doc = parseProtectionDocument(input);
  });

  test('labels() by priority ascending; label() by id in any case', () => {
    const c = compileProtection(doc);
    expect(c.labels().map((l) => l.name)).toEqual(['Public', 'Internal', 'Highly Confidential']);
    expect(c.label(SECRET.toUpperCase())?.name).toBe('Highly Confidential');
    expect(c.label('6a2b8fa7-5e9d-4cdf-8b76-bdae9f8a7b65')).toBeUndefined();
    // The caller's copy is its own.
    c.labels().pop();
    expect(c.labels()).toHaveLength(3);
  });

  test('partnerFor matches the address domain exactly, in any case, never a subdomain', () => {
    const c = compileProtection(doc);
    expect(c.partnerFor('alice@fabrikam.example')?.id).toBe('fabrikam');
    expect(c.partnerFor('Alice@FABRIKAM.Example')?.id).toBe('fabrikam');
    expect(c.partnerFor('bob@fabrikam-mail.example')?.id).toBe('fabrikam');
    expect(c.partnerFor('carol@northwind.example')?.id).toBe('northwind');
    expect(c.partnerFor('dave@xn--bcher-kva.example')?.id).toBe('northwind'); // bücher.example in punycode
    expect(c.partnerFor('dave@bücher.example')?.id).toBe('northwind');
    expect(c.partnerFor('eve@mail.fabrikam.example')).toBeUndefined();
    expect(c.partnerFor('eve@notfabrikam.example')).toBeUndefined();
    expect(c.partnerFor('eve@example')).toBeUndefined();
    expect(c.partnerFor('fabrikam.example')).toBeUndefined();
  });

  test('trustedPartnerCertificates lists every partner certificate once', () => {
    const c = compileProtection(doc);
    const certs = c.trustedPartnerCertificates();
    expect(certs).toHaveLength(2);
    expect(new Set(certs)).toEqual(new Set([...doc.partners[0]!.certificates, ...doc.partners[1]!.certificates]));
    expect(compileProtection(EMPTY_PROTECTION_DOCUMENT).trustedPartnerCertificates()).toEqual([]);
  });

  test('deliveryRuleFor: every condition of a rule must hold, and the first matching rule wins', () => {
    const c = compileProtection(doc);
    const base = { sender: 'someone@contoso.example', recipient: 'x@contoso.example', subject: 'Hello', labelId: null, fromOutside: true };
    expect(c.deliveryRuleFor(base)).toBeUndefined();
    expect(c.deliveryRuleFor({ ...base, subject: 'Re: board minutes for March' })?.id).toBe('board');
    // labelIds + fromOutside: the label alone is not enough.
    expect(c.deliveryRuleFor({ ...base, labelId: SECRET })).toBeUndefined();
    expect(c.deliveryRuleFor({ ...base, labelId: SECRET.toUpperCase(), fromOutside: false })?.id).toBe('secret-out');
    // Both the first and the second rule match: the first one is the answer.
    expect(c.deliveryRuleFor({ ...base, labelId: SECRET, fromOutside: false, subject: 'BOARD MINUTES' })?.id).toBe('board');
    // recipientAddresses AND senderDomains (exact domain, not a subdomain).
    expect(c.deliveryRuleFor({ ...base, recipient: 'CEO@contoso.example' })).toBeUndefined();
    expect(c.deliveryRuleFor({ ...base, recipient: 'CEO@contoso.example', sender: 'x@fabrikam.example' })?.id).toBe('ceo');
    expect(c.deliveryRuleFor({ ...base, recipient: 'ceo@contoso.example', sender: 'x@eu.fabrikam.example' })).toBeUndefined();
  });

  test('a rule without conditions matches everything, in its place in the order', () => {
    const input = sample();
    input.deliveryRules.splice(1, 0, { id: 'all', template: 'encrypt-only', when: {} });
    const c = compileProtection(parseProtectionDocument(input));
    const facts = { sender: 'a@b.example', recipient: 'c@d.example', subject: 'board minutes', labelId: null, fromOutside: false };
    expect(c.deliveryRuleFor(facts)?.id).toBe('board');
    expect(c.deliveryRuleFor({ ...facts, subject: 'lunch' })?.id).toBe('all');
  });

  test('expiresAt: days from now, a fixed date as it is, or none', () => {
    const c = compileProtection(doc);
    const now = Date.UTC(2026, 10, 2, 10, 15);
    expect(c.expiresAt(c.template('legal-hold')!, now)).toBe(now + 30 * 86_400_000);
    expect(c.expiresAt(c.template('do-not-forward')!, now)).toBeNull();
    const fixed = { ...c.template('legal-hold')!, expiry: { at: '2027-01-31T12:00:00+01:00' } };
    expect(c.expiresAt(fixed, now)).toBe(Date.UTC(2027, 0, 31, 11, 0));
    // The same for any `now`: the date is the date.
    expect(c.expiresAt(fixed, now + 86_400_000)).toBe(Date.UTC(2027, 0, 31, 11, 0));
  });
});
