/**
 * Sensitivity labels on mail: reading and writing Microsoft's `msip_labels` header, the label policy applied to a
 * send, and content marking.
 *
 * The header (as Microsoft Purview writes it) is a `;`-separated list of `MSIP_Label_<label GUID>_<Attribute>=<value>`
 * pieces, values unquoted, attributes in any order, usually folded over many lines (a fold may fall inside a value:
 * `Name=Internal Use\r\n Only`). A message that crossed tenants carries one label per tenant. Attributes: Enabled
 * (true/false), SetDate (ISO 8601), Method (Standard = default or automatic, Privileged = chosen by the user), Name,
 * SiteId (the tenant's GUID), ActionId (a GUID new at every change) and ContentBits (a bitmask of the marking
 * applied: header 1, footer 2, watermark 4, encryption 8).
 */
import crypto from 'node:crypto';
import { errors } from '../errors';
import type { CompiledProtection, LabelPolicy, SensitivityLabel } from './config';

export interface HeaderLabel {
  id: string;
  name: string | null;
  enabled: boolean;
  setDate: string | null;
  method: string | null;
  siteId: string | null;
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** One piece: the label GUID, the attribute, the value (which may itself contain `=`). */
const PIECE = /^MSIP_Label_([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})_([A-Za-z]+)=(.*)$/is;

/**
 * Every label in an msip_labels header value (unfolded or folded); never throws: unreadable pieces are skipped.
 * Attribute names are matched case-insensitively (some gateways lower-case them) and the first occurrence of an
 * attribute wins. A label is reported only if it has an `Enabled` attribute: that key is what identifies a
 * classification (Microsoft's metadata documentation says DLP products check for it), so stray pieces without it
 * are not a label. The value is expected decoded (as mailparser or a header lookup gives it), not RFC 2047-encoded.
 */
export function parseMsipLabels(value: string): HeaderLabel[] {
  if (typeof value !== 'string') return [];
  // RFC 5322 unfolding: a line break followed by white space is removed, the white space kept.
  const unfolded = value.replace(/\r?\n(?=[ \t])/g, '').replace(/[\r\n]+/g, ' ');
  const found = new Map<string, Map<string, string>>();
  for (const raw of unfolded.split(';')) {
    const match = PIECE.exec(raw.trim());
    if (!match) continue;
    const id = match[1]!.toLowerCase();
    const attribute = match[2]!.toLowerCase();
    const attributes = found.get(id) ?? new Map<string, string>();
    found.set(id, attributes);
    if (!attributes.has(attribute)) attributes.set(attribute, match[3]!.trim());
  }
  const labels: HeaderLabel[] = [];
  for (const [id, attributes] of found) {
    const enabled = attributes.get('enabled');
    if (enabled === undefined) continue;
    const text = (name: string) => attributes.get(name) || null;
    labels.push({
      id,
      name: text('name'),
      enabled: enabled.toLowerCase() === 'true',
      setDate: text('setdate'),
      method: text('method'),
      siteId: text('siteid')?.toLowerCase() ?? null,
    });
  }
  return labels;
}

/** The label a message carries: the first enabled one. */
export function messageLabel(value: string | undefined): HeaderLabel | undefined {
  if (value === undefined) return undefined;
  return parseMsipLabels(value).find((l) => l.enabled);
}

/** 2026-11-02T10:15:00Z: Microsoft's SetDate, to the second. */
const setDate = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

/**
 * One header value for a label, fields in Microsoft's order (Enabled, SetDate, Method, Name, SiteId, ActionId,
 * ContentBits), separated by `; ` so a mail composer can fold the line between pieces. Throws (a programming
 * error, not a client's) on a value the header cannot carry: a label id, site id or action id that is no GUID, a
 * name with `;` or a line break, a content-bits value that is no bitmask, a time that is no time.
 */
export function formatMsipLabels(
  label: { id: string; name: string },
  opts: { siteId: string; setAt: number; method: 'Standard' | 'Privileged'; actionId: string; contentBits: number },
): string {
  for (const [what, guid] of [['label id', label.id], ['site id', opts.siteId], ['action id', opts.actionId]] as const) {
    if (!GUID.test(guid)) throw new RangeError(`msip_labels: the ${what} "${guid}" is not a GUID`);
  }
  if (/[;\r\n]/.test(label.name) || label.name.trim() === '') throw new RangeError('msip_labels: a label name must be non-empty and free of ";" and line breaks');
  if (!Number.isInteger(opts.contentBits) || opts.contentBits < 0 || opts.contentBits > 0xff) throw new RangeError('msip_labels: contentBits must be a small bitmask');
  if (!Number.isFinite(opts.setAt)) throw new RangeError('msip_labels: setAt must be a time');
  if (opts.method !== 'Standard' && opts.method !== 'Privileged') throw new RangeError('msip_labels: method must be Standard or Privileged');
  const prefix = `MSIP_Label_${label.id.toLowerCase()}_`;
  const pieces: Array<[string, string]> = [
    ['Enabled', 'true'],
    ['SetDate', setDate(opts.setAt)],
    ['Method', opts.method],
    ['Name', label.name.trim()],
    ['SiteId', opts.siteId.toLowerCase()],
    ['ActionId', opts.actionId.toLowerCase()],
    ['ContentBits', String(opts.contentBits)],
  ];
  return pieces.map(([attribute, value]) => `${prefix}${attribute}=${value}`).join('; ');
}

/**
 * The namespace of Pigeon's tenant site ids (a fixed random UUID: ids made in it never collide with name-based ids
 * of any other namespace).
 */
const SITE_ID_NAMESPACE = '23920914-a33c-4778-8434-175684ef34c8';

/**
 * The tenant's `SiteId`: a name-based UUID (version 5, SHA-1; RFC 9562 §5.5) of the tenant id, so every node
 * writes the same GUID for a tenant without storing one.
 */
export function tenantSiteId(tenantId: string): string {
  const namespace = Buffer.from(SITE_ID_NAMESPACE.replace(/-/g, ''), 'hex');
  const hash = crypto.createHash('sha1').update(namespace).update(tenantId, 'utf8').digest();
  const bytes = hash.subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x50; // version 5
  bytes[8] = (bytes[8]! & 0x3f) | 0x80; // the RFC variant
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * The label policy applied to a send. The label is the requested one; when the request does not mention a label
 * (`undefined`), a reply or forward keeps the label of the message it answers (as Outlook does, so answering a
 * labelled message is never a silent downgrade) if the catalogue knows it, and anything else gets the policy's
 * default. `null` asks for no label.
 * - Mandatory labelling: no label at all → labelRequired 'mandatory'.
 * - A label of lower priority than the answered message's (or none, where it had one) is a downgrade; under
 *   justifyDowngrade it needs a non-blank justification → labelRequired 'justificationRequired'. An answered
 *   message's label the catalogue does not know (another tenant's, or one since deleted) cannot be compared and
 *   never makes a downgrade.
 * - An unknown requested id → invalidRequest on the field `label`.
 * Returns the label to write (or null) and, for a downgrade, the label it lowered from (for the audit log).
 */
export function decideSendLabel(input: {
  policy: LabelPolicy;
  catalogue: CompiledProtection;
  requested: string | null | undefined;
  justification: string | null | undefined;
  originalLabelId: string | null;
}): { label: SensitivityLabel | null; downgradedFrom: SensitivityLabel | null } {
  const { policy, catalogue } = input;
  const original = input.originalLabelId ? (catalogue.label(input.originalLabelId) ?? null) : null;

  let label: SensitivityLabel | null;
  if (typeof input.requested === 'string') {
    const found = GUID.test(input.requested) ? catalogue.label(input.requested) : undefined;
    if (!found) throw errors.invalidRequest('No sensitivity label has this id.', [{ field: 'label', message: 'unknown label' }]);
    label = found;
  } else if (input.requested === null) {
    label = null;
  } else {
    label = original ?? (policy.defaultLabel ? (catalogue.label(policy.defaultLabel) ?? null) : null);
  }

  if (label === null && policy.mandatory) {
    throw errors.labelRequired('This organisation requires a sensitivity label on every message; choose one.', 'mandatory');
  }

  const downgrade = original !== null && (label === null || label.priority < original.priority);
  if (downgrade && policy.justifyDowngrade && !input.justification?.trim()) {
    throw errors.labelRequired(
      `The message answered is labelled "${original.name}"; a lower label (or none) needs a justification.`,
      'justificationRequired',
    );
  }
  return { label, downgradedFrom: downgrade ? original : null };
}

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/**
 * Content marking: the label's header text above and footer text below the body, in the body's own type: an HTML
 * body gets each as an escaped `<p>` (inside `<body>` when the body is a whole document), a text body a line of its
 * own (with the body's own line ending). Unchanged when the label has no marking.
 */
export function applyContentMarking(
  body: { contentType: 'text' | 'html'; content: string },
  marking: SensitivityLabel['marking'],
): { contentType: 'text' | 'html'; content: string } {
  const { header, footer } = marking;
  if (!header && !footer) return body;
  if (body.contentType === 'text') {
    const eol = body.content.includes('\r\n') ? '\r\n' : '\n';
    let content = body.content;
    if (header) content = `${header}${eol}${eol}${content}`;
    if (footer) content = `${content}${content.endsWith(eol) || content === '' ? '' : eol}${eol}${footer}${eol}`;
    return { contentType: 'text', content };
  }
  let content = body.content;
  if (header) {
    const p = `<p>${escapeHtml(header)}</p>`;
    const open = /<body\b[^>]*>/i.exec(content);
    content = open ? content.slice(0, open.index + open[0].length) + p + content.slice(open.index + open[0].length) : p + content;
  }
  if (footer) {
    const p = `<p>${escapeHtml(footer)}</p>`;
    const closes = [...content.matchAll(/<\/body\s*>/gi)];
    const close = closes.at(-1)?.index;
    content = close !== undefined ? content.slice(0, close) + p + content.slice(close) : content + p;
  }
  return { contentType: 'html', content };
}
