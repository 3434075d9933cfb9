/**
 * A tenant's protection document: custom protection templates, the sensitivity label catalogue and its policy,
 * partner organisations whose protection keys we trust, and delivery rules that protect mail as it passes. One
 * validated document with one version, like the access configuration (server/access/config.ts), and for the same
 * reasons: labels name templates and rules name labels and templates, so they are validated together and an admin's
 * change never leaves a reference dangling.
 *
 * Two phases: zod checks every field (shape, lengths, formats, certificates), then the cross-references are checked
 * on the typed result (ids unique, every reference resolves). Both report `{field, message}` entries with dotted
 * paths (`labels.2.colour`), the form every other 400 of the API uses.
 */
import { X509Certificate } from 'node:crypto';
import { domainToASCII } from 'node:url';
import { z } from 'zod';
import { errors, type FieldError } from '../errors';
import { fieldErrors, identifier } from '../access/policies';
import { RIGHTS, type Right } from './rights';

// ---------------------------------------------------------------------------------------------------------------
// Types (what callers read; the schemas below are checked against them)

export interface Template {
  id: string;
  name: string;
  description: string;
  rights: Right[];
  expiry: { days: number } | { at: string /* ISO */ } | null;
  builtIn: boolean;
}

export interface SensitivityLabel {
  id: string /* GUID, lower case */;
  name: string;
  priority: number /* higher = more sensitive */;
  colour: string /* #RRGGBB */;
  tooltip: string;
  protectionTemplate: string | null /* template id */;
  marking: { header: string | null; footer: string | null };
  /**
   * Whether a background notification of a message with this label may show its sender and subject (README,
   * "Background push"). Absent: yes when the label applies no protection template, no when it does
   * (`labelAllowsPreview`).
   */
  notificationPreview?: boolean;
}

export interface LabelPolicy {
  defaultLabel: string | null;
  mandatory: boolean;
  justifyDowngrade: boolean;
}

export interface Partner {
  id: string;
  name: string;
  domains: string[] /* lower case */;
  certificates: string[] /* PEM, their protection keys */;
}

export interface DeliveryRule {
  id: string;
  description: string;
  template: string;
  when: { senderDomains?: string[]; recipientAddresses?: string[]; subjectContains?: string[]; labelIds?: string[]; fromOutside?: boolean };
}

export interface ProtectionDocument {
  templates: Template[] /* custom only; builtIn false */;
  labels: SensitivityLabel[];
  labelPolicy: LabelPolicy;
  partners: Partner[];
  deliveryRules: DeliveryRule[];
}

// ---------------------------------------------------------------------------------------------------------------
// Built-ins

const deepFreeze = <T>(value: T): T => {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
};

/**
 * The templates every tenant has, named after Microsoft Purview's defaults so admins and users recognise them.
 * Their ids are reserved: a custom template may not take one (a licence names its template by id, and a message
 * protected with "Do Not Forward" must never come to mean something else).
 */
export const BUILT_IN_TEMPLATES: readonly Template[] = deepFreeze([
  {
    id: 'do-not-forward',
    name: 'Do Not Forward',
    description: 'Recipients can read the message and reply to it, but cannot forward, print, copy or export it.',
    rights: ['view', 'reply', 'replyAll'],
    expiry: null,
    builtIn: true,
  },
  {
    id: 'encrypt-only',
    name: 'Encrypt Only',
    description: 'The message is encrypted; recipients can do anything with it once they have opened it.',
    rights: [...RIGHTS],
    expiry: null,
    builtIn: true,
  },
  {
    id: 'confidential-view-only',
    name: 'Confidential - View Only',
    description: 'Recipients can read the message and nothing else.',
    rights: ['view'],
    expiry: null,
    builtIn: true,
  },
] satisfies Template[]);

const BUILT_IN_IDS = new Set(BUILT_IN_TEMPLATES.map((t) => t.id));

export const EMPTY_PROTECTION_DOCUMENT: ProtectionDocument = deepFreeze({
  templates: [],
  labels: [],
  labelPolicy: { defaultLabel: null, mandatory: false, justifyDowngrade: false },
  partners: [],
  deliveryRules: [],
});

// ---------------------------------------------------------------------------------------------------------------
// Limits (a tenant's document is read on every send and delivery, so it stays small)

export const MAX_TEMPLATES = 100;
export const MAX_LABELS = 200;
export const MAX_PARTNERS = 200;
export const MAX_PARTNER_DOMAINS = 100;
/** Enough for a partner's current key and a few retired ones during a rotation. */
export const MAX_PARTNER_CERTIFICATES = 10;
export const MAX_CERTIFICATE_PEM = 16_384;
export const MAX_DELIVERY_RULES = 200;
export const MAX_RULE_ENTRIES = 500;
export const MAX_DESCRIPTION = 1_000;
export const MAX_MARKING = 1_024;
/** Ten years: a longer expiry is no expiry in practice, and is more likely a typo. */
export const MAX_EXPIRY_DAYS = 3_650;

// ---------------------------------------------------------------------------------------------------------------
// Schemas

const CONTROL = /[\u0000-\u001f\u007f]/;
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const HOSTNAME_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

const text = (max: number) =>
  z
    .string({ error: 'must be a string' })
    .max(max, `must be at most ${max} characters`)
    .refine((s) => !CONTROL.test(s), 'must not contain control characters');

const noRepeats = <T>(list: readonly T[]) => new Set(list).size === list.length;

/** A label id as Microsoft writes it (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`), kept in lower case. */
export const labelIdSchema = z
  .string({ error: 'must be a GUID' })
  .regex(GUID, 'must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)')
  .transform((s) => s.toLowerCase());

/** A domain in lower-case ASCII (an internationalised name is turned into its punycode form), no trailing dot. */
export function normaliseDomain(input: string): string | null {
  const ascii = domainToASCII(input.trim().replace(/\.$/, ''));
  if (!ascii || ascii.length > 253) return null;
  const labels = ascii.split('.');
  if (labels.length < 2 || !labels.every((l) => HOSTNAME_LABEL.test(l))) return null;
  return ascii;
}

const domainSchema = z.string({ error: 'must be a domain name' }).transform((s, ctx) => {
  const domain = normaliseDomain(s);
  if (domain) return domain;
  ctx.issues.push({ code: 'custom', message: 'must be a domain name such as example.com', input: s });
  return z.NEVER;
});

/** `local@domain`, kept in lower case (mail systems treat addresses case-insensitively in practice). */
export function normaliseAddress(input: string): string | null {
  const trimmed = input.trim();
  const at = trimmed.lastIndexOf('@');
  if (at < 1 || trimmed.length > 320) return null;
  const local = trimmed.slice(0, at);
  if (/[\s<>@]/.test(local) || CONTROL.test(local)) return null;
  const domain = normaliseDomain(trimmed.slice(at + 1));
  return domain ? `${local.toLowerCase()}@${domain}` : null;
}

const addressSchema = z.string({ error: 'must be an email address' }).transform((s, ctx) => {
  const address = normaliseAddress(s);
  if (address) return address;
  ctx.issues.push({ code: 'custom', message: 'must be an email address such as someone@example.com', input: s });
  return z.NEVER;
});

const CERTIFICATE_PEM = /^-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----$/;

/**
 * One X.509 certificate in PEM, with an RSA key (protection keys transport content keys with RSAES-OAEP), returned
 * in node's canonical PEM so the same certificate always reads the same whoever pasted it.
 */
const certificateSchema = z
  .string({ error: 'must be a PEM certificate' })
  .max(MAX_CERTIFICATE_PEM, `must be at most ${MAX_CERTIFICATE_PEM} characters`)
  .transform((s, ctx) => {
    const fail = (message: string) => {
      ctx.issues.push({ code: 'custom', message, input: s });
      return z.NEVER;
    };
    const pem = s.trim();
    // Only a lone certificate block: a pasted private key (or a chain) must not slip into a document admins share.
    if (!CERTIFICATE_PEM.test(pem)) return fail('must be exactly one PEM certificate (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)');
    let certificate: X509Certificate;
    try {
      certificate = new X509Certificate(pem);
    } catch {
      return fail('is not a readable X.509 certificate');
    }
    if (certificate.publicKey.asymmetricKeyType !== 'rsa') return fail('must carry an RSA key (protection keys are RSA)');
    return certificate.toString();
  });

const expirySchema = z
  .strictObject({
    days: z
      .number({ error: 'must be a number of days' })
      .int('must be a whole number of days')
      .min(1, 'must be at least 1')
      .max(MAX_EXPIRY_DAYS, `must be at most ${MAX_EXPIRY_DAYS}`)
      .optional(),
    at: z.iso
      .datetime({ offset: true, error: 'must be an ISO 8601 date and time with a time zone, e.g. 2027-01-31T00:00:00Z' })
      .optional(),
  })
  .refine((e) => (e.days === undefined) !== (e.at === undefined), 'must be exactly one of {days} or {at}, or null for no expiry')
  .transform((e): { days: number } | { at: string } => (e.days !== undefined ? { days: e.days } : { at: e.at! }))
  .nullable();

const rightSchema = z.enum(RIGHTS, { error: `must be one of ${RIGHTS.join(', ')}` });

const templateSchema = z.strictObject({
  id: identifier,
  name: identifier,
  description: text(MAX_DESCRIPTION).default(''),
  rights: z
    .array(rightSchema)
    .min(1, 'must list at least one right')
    .refine(noRepeats, 'must not repeat a right')
    .refine((r) => r.length === 0 || r.includes('view'), 'must include view (without it no recipient could open the message)'),
  expiry: expirySchema.default(null),
  // Accepted so an admin can send back what they read; only the server's own templates are built in.
  builtIn: z.literal(false, { error: 'must be false (built-in templates cannot be defined or redefined)' }).default(false),
});

/** A marking line: trimmed; empty means none. */
const markingText = text(MAX_MARKING)
  .transform((s) => s.trim() || null)
  .nullable()
  .default(null);

const labelSchema = z.strictObject({
  id: labelIdSchema,
  // The name travels unquoted in the msip_labels header, where `;` separates the pieces.
  name: identifier
    .refine((s) => !s.includes(';'), 'must not contain ";"')
    .refine((s) => s.trim() === s, 'must not start or end with spaces'),
  priority: z.number({ error: 'must be a number' }).int('must be a whole number').min(0, 'must be at least 0').max(9_999, 'must be at most 9999'),
  colour: z.string({ error: 'must be a colour' }).regex(/^#[0-9a-fA-F]{6}$/, 'must be a colour as #RRGGBB'),
  tooltip: text(MAX_DESCRIPTION).default(''),
  protectionTemplate: identifier.nullable().default(null),
  marking: z.strictObject({ header: markingText, footer: markingText }).default({ header: null, footer: null }),
  notificationPreview: z.boolean({ error: 'must be true or false' }).optional(),
});

const labelPolicySchema = z
  .strictObject({
    defaultLabel: labelIdSchema.nullable().default(null),
    mandatory: z.boolean({ error: 'must be true or false' }).default(false),
    justifyDowngrade: z.boolean({ error: 'must be true or false' }).default(false),
  })
  .default({ defaultLabel: null, mandatory: false, justifyDowngrade: false });

const partnerSchema = z.strictObject({
  id: identifier,
  name: identifier,
  domains: z
    .array(domainSchema)
    .min(1, 'must list at least one domain')
    .max(MAX_PARTNER_DOMAINS, `must list at most ${MAX_PARTNER_DOMAINS} domains`),
  certificates: z
    .array(certificateSchema)
    .min(1, 'must list at least one certificate (the partner\'s protection key)')
    .max(MAX_PARTNER_CERTIFICATES, `must list at most ${MAX_PARTNER_CERTIFICATES} certificates`),
});

const ruleList = <T extends z.ZodType>(entry: T, what: string) =>
  z
    .array(entry)
    .min(1, `must list at least one ${what}, or be left out`)
    .max(MAX_RULE_ENTRIES, `must list at most ${MAX_RULE_ENTRIES} entries`)
    .optional();

const deliveryRuleSchema = z.strictObject({
  id: identifier,
  description: text(MAX_DESCRIPTION).default(''),
  template: identifier,
  when: z.strictObject({
    senderDomains: ruleList(domainSchema, 'domain'),
    recipientAddresses: ruleList(addressSchema, 'address'),
    subjectContains: ruleList(
      text(200).refine((s) => s.trim().length > 0, 'must not be empty'),
      'word or phrase',
    ),
    labelIds: ruleList(labelIdSchema, 'label id'),
    fromOutside: z.boolean({ error: 'must be true or false' }).optional(),
  }),
});

export const protectionDocumentSchema = z.strictObject({
  templates: z.array(templateSchema).max(MAX_TEMPLATES, `at most ${MAX_TEMPLATES} templates`).default([]),
  labels: z.array(labelSchema).max(MAX_LABELS, `at most ${MAX_LABELS} labels`).default([]),
  labelPolicy: labelPolicySchema,
  partners: z.array(partnerSchema).max(MAX_PARTNERS, `at most ${MAX_PARTNERS} partners`).default([]),
  deliveryRules: z.array(deliveryRuleSchema).max(MAX_DELIVERY_RULES, `at most ${MAX_DELIVERY_RULES} delivery rules`).default([]),
});

// The hand-written types above are what callers read; this stops compiling if the schemas drift from them.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const schemasMatchTypes: [
  z.output<typeof templateSchema> extends Template ? true : false,
  Same<z.output<typeof labelSchema>, SensitivityLabel>,
  Same<z.output<typeof labelPolicySchema>, LabelPolicy>,
  Same<z.output<typeof partnerSchema>, Partner>,
  Same<z.output<typeof deliveryRuleSchema>, DeliveryRule>,
] = [true, true, true, true, true];
void schemasMatchTypes;

// ---------------------------------------------------------------------------------------------------------------
// Cross-references

/** Every problem that needs the whole document: duplicates and references that do not resolve. */
function crossReferenceErrors(doc: ProtectionDocument): FieldError[] {
  const problems: FieldError[] = [];
  const at = (field: string, message: string) => problems.push({ field, message });

  /** Flags the second and later entries whose key was seen before (keys compared as given). */
  const unique = <T>(list: readonly T[], key: (entry: T) => string, field: (i: number) => string, message: (k: string) => string) => {
    const seen = new Set<string>();
    list.forEach((entry, i) => {
      const k = key(entry);
      if (seen.has(k)) at(field(i), message(k));
      seen.add(k);
    });
  };

  doc.templates.forEach((t, i) => {
    if (BUILT_IN_IDS.has(t.id.toLowerCase())) at(`templates.${i}.id`, `"${t.id}" is a built-in template's id; choose another`);
  });
  unique(doc.templates, (t) => t.id, (i) => `templates.${i}.id`, (id) => `template id "${id}" is used more than once`);
  // Users pick templates by name: two with one name (a built-in's included) could not be told apart.
  const builtInNames = new Set(BUILT_IN_TEMPLATES.map((t) => t.name.toLowerCase()));
  doc.templates.forEach((t, i) => {
    if (builtInNames.has(t.name.toLowerCase())) at(`templates.${i}.name`, `"${t.name}" is a built-in template's name; choose another`);
  });
  unique(doc.templates, (t) => t.name.toLowerCase(), (i) => `templates.${i}.name`, () => 'another template has this name');
  const templateIds = new Set([...BUILT_IN_IDS, ...doc.templates.map((t) => t.id)]);

  unique(doc.labels, (l) => l.id, (i) => `labels.${i}.id`, (id) => `label id "${id}" is used more than once`);
  unique(doc.labels, (l) => l.name.toLowerCase(), (i) => `labels.${i}.name`, () => 'another label has this name');
  // Priorities order labels for the downgrade check; a tie would make "lower" undecidable.
  unique(doc.labels, (l) => String(l.priority), (i) => `labels.${i}.priority`, (p) => `another label has priority ${p}`);
  doc.labels.forEach((l, i) => {
    if (l.protectionTemplate !== null && !templateIds.has(l.protectionTemplate)) {
      at(`labels.${i}.protectionTemplate`, `no template has id "${l.protectionTemplate}"`);
    }
  });
  const labelIds = new Set(doc.labels.map((l) => l.id));
  if (doc.labelPolicy.defaultLabel !== null && !labelIds.has(doc.labelPolicy.defaultLabel)) {
    at('labelPolicy.defaultLabel', `no label has id "${doc.labelPolicy.defaultLabel}"`);
  }
  if (doc.labelPolicy.mandatory && doc.labels.length === 0) {
    at('labelPolicy.mandatory', 'labelling cannot be mandatory without any label (every send would be refused)');
  }

  unique(doc.partners, (p) => p.id, (i) => `partners.${i}.id`, (id) => `partner id "${id}" is used more than once`);
  // A domain belongs to one partner, or partnerFor() would depend on the order of the list.
  const domainOwner = new Map<string, string>();
  doc.partners.forEach((p, i) => {
    p.domains.forEach((d, j) => {
      const owner = domainOwner.get(d);
      if (owner !== undefined) at(`partners.${i}.domains.${j}`, owner === p.id ? `"${d}" is listed twice` : `"${d}" already belongs to partner "${owner}"`);
      else domainOwner.set(d, p.id);
    });
  });

  unique(doc.deliveryRules, (r) => r.id, (i) => `deliveryRules.${i}.id`, (id) => `delivery rule id "${id}" is used more than once`);
  doc.deliveryRules.forEach((r, i) => {
    if (!templateIds.has(r.template)) at(`deliveryRules.${i}.template`, `no template has id "${r.template}"`);
    (r.when.labelIds ?? []).forEach((id, j) => {
      if (!labelIds.has(id)) at(`deliveryRules.${i}.when.labelIds.${j}`, `no label has id "${id}"`);
    });
  });
  return problems;
}

/**
 * Validates an admin's document (unknown keys refused; ids unique; templates may not reuse a built-in id; label
 * template references and policy defaultLabel must exist; rule templates must exist; certificates must parse as
 * X.509 PEM; colours #RRGGBB; length limits everywhere). Throws errors.invalidRequest with field errors.
 */
export function parseProtectionDocument(input: unknown): ProtectionDocument {
  const parsed = protectionDocumentSchema.safeParse(input);
  if (!parsed.success) throw errors.invalidRequest('The protection document is not valid.', fieldErrors(parsed.error));
  const doc: ProtectionDocument = parsed.data;
  const problems = crossReferenceErrors(doc);
  if (problems.length) throw errors.invalidRequest('The protection document is not valid.', problems);
  return doc;
}

/**
 * Whether a notification of a message with this label may show its sender and subject: the label's
 * `notificationPreview`, by default yes without a protection template and no with one.
 */
export function labelAllowsPreview(label: Pick<SensitivityLabel, 'notificationPreview' | 'protectionTemplate'>): boolean {
  return label.notificationPreview ?? label.protectionTemplate === null;
}

// ---------------------------------------------------------------------------------------------------------------
// Compiled form

export interface CompiledProtection {
  doc: ProtectionDocument;
  templates(): Template[]; // built-ins then custom
  template(id: string): Template | undefined;
  label(id: string): SensitivityLabel | undefined;
  labels(): SensitivityLabel[]; // by priority ascending
  /** Expiry of content protected now with the template (ms), or null. */
  expiresAt(template: Template, now: number): number | null;
  /** Partner whose domains include the address's domain (subdomains do not count). */
  partnerFor(address: string): Partner | undefined;
  /** Every partner certificate (licences signed by these are trusted). */
  trustedPartnerCertificates(): string[];
  /** First delivery rule that matches, or undefined. */
  deliveryRuleFor(facts: { sender: string; recipient: string; subject: string; labelId: string | null; fromOutside: boolean }): DeliveryRule | undefined;
}

const DAY_MS = 86_400_000;

/** The domain of an address (`a@b`), normalised like the document's domains, or null. */
function domainOf(address: string): string | null {
  const at = address.lastIndexOf('@');
  return at < 0 ? null : normaliseDomain(address.slice(at + 1));
}

/**
 * Look-ups over a document parseProtectionDocument accepted (or one read back from the store, which only ever holds
 * such documents). Compile once per version of the document, not per message.
 */
export function compileProtection(doc: ProtectionDocument): CompiledProtection {
  const allTemplates = [...BUILT_IN_TEMPLATES, ...doc.templates];
  const templatesById = new Map(allTemplates.map((t) => [t.id, t]));
  const labelsById = new Map(doc.labels.map((l) => [l.id.toLowerCase(), l]));
  const labelsByPriority = [...doc.labels].sort((a, b) => a.priority - b.priority);
  const partnerByDomain = new Map<string, Partner>();
  for (const partner of doc.partners) {
    for (const domain of partner.domains) if (!partnerByDomain.has(domain)) partnerByDomain.set(domain, partner);
  }
  const partnerCertificates = [...new Set(doc.partners.flatMap((p) => p.certificates))];
  const rules = doc.deliveryRules.map((rule) => ({
    rule,
    senderDomains: rule.when.senderDomains && new Set(rule.when.senderDomains),
    recipients: rule.when.recipientAddresses && new Set(rule.when.recipientAddresses),
    subjectWords: rule.when.subjectContains?.map((s) => s.trim().toLowerCase()),
    labelIds: rule.when.labelIds && new Set(rule.when.labelIds.map((id) => id.toLowerCase())),
  }));

  return Object.freeze({
    doc,
    templates: () => [...allTemplates],
    template: (id: string) => templatesById.get(id),
    label: (id: string) => labelsById.get(id.toLowerCase()),
    labels: () => [...labelsByPriority],
    expiresAt(template: Template, now: number): number | null {
      if (template.expiry === null) return null;
      if ('days' in template.expiry) return now + template.expiry.days * DAY_MS;
      const at = Date.parse(template.expiry.at);
      // A fixed date already past is returned as it is: the content is expired from the start, which is what the
      // admin configured; the caller decides whether to refuse the send.
      return Number.isNaN(at) ? null : at;
    },
    partnerFor(address: string): Partner | undefined {
      const domain = domainOf(address);
      return domain === null ? undefined : partnerByDomain.get(domain);
    },
    trustedPartnerCertificates: () => [...partnerCertificates],
    deliveryRuleFor(facts: { sender: string; recipient: string; subject: string; labelId: string | null; fromOutside: boolean }): DeliveryRule | undefined {
      const senderDomain = domainOf(facts.sender);
      const recipient = normaliseAddress(facts.recipient);
      const subject = facts.subject.toLowerCase();
      const labelId = facts.labelId?.toLowerCase() ?? null;
      // Every condition a rule sets must hold; within one list, any entry will do. Rules are tried in order.
      const found = rules.find(
        (r) =>
          (!r.senderDomains || (senderDomain !== null && r.senderDomains.has(senderDomain))) &&
          (!r.recipients || (recipient !== null && r.recipients.has(recipient))) &&
          (!r.subjectWords || r.subjectWords.some((w) => subject.includes(w))) &&
          (!r.labelIds || (labelId !== null && r.labelIds.has(labelId))) &&
          (r.rule.when.fromOutside === undefined || r.rule.when.fromOutside === facts.fromOutside),
      );
      return found?.rule;
    },
  });
}
