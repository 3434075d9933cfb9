/**
 * Information protection as the rest of Pigeon uses it (README, "Information protection"):
 * - delivery asks `inspect` what a message is (protected wrapper, S/MIME, sensitivity label) and stores the
 *   placeholder and the public facts it answers, never protected text;
 * - sync, item reads, search and item changes ask `overlayViews` to show each device what it may see;
 * - content asks `attachment` for a protected message's attachment, under the licence's rights;
 * - send asks `prepareSend` which label and protection an outgoing message gets and whether the rights of the
 *   protected mail it answers or attaches allow it, then `protect` to wrap it.
 */
import type { Logger } from 'pino';
import type { Clock } from '../clock';
import { errors } from '../errors';
import type { Item, Store, User } from '../store/types';
import type { PreparedMessage } from '../mail/delivery';
import type { BodyType, ItemView } from '../views';
import type { Reply } from '../http/table';
import { Readable } from 'node:stream';
import { cleanFilename, dispositionHeader, saneContentType } from '../content/download';
import { encryptFor, signContent, CmsError } from './cms';
import type { Template } from './config';
import { createKeyring } from './keyring';
import { decideSendLabel, formatMsipLabels, messageLabel, tenantSiteId, applyContentMarking } from './labels';
import { createProtectedReader, descriptorOf, type Reader } from './reader';
import { holds, rightForAnswer, type Right } from './rights';
import { createMessageInspector, headerValue, PLACEHOLDER_TEXT, type SmimeInspector } from './inspect';
import { buildProtectedMessage, contentDigest, licenceJson, type Licence } from './wrapper';
import crypto from 'node:crypto';


/** How an outgoing message is protected: a template's rights and expiry, named in the licence. */
export interface ProtectionGrant {
  template: { id: string; name: string };
  rights: Right[];
  expiresAt: number | null;
}

export interface SendPlan {
  /** Extra headers for the composed message (msip_labels). */
  headers: Record<string, string>;
  /** The body with the label's content marking applied. */
  body: { contentType: 'text' | 'html'; content: string };
  /** Set when the message must go out protected. */
  protection: ProtectionGrant | null;
  /** Protected items attached as message/rfc822 (already rights-checked): their decrypted messages. */
  attachments: Array<{ name: string; contentType: string; content: Buffer; isInline: boolean; contentId: string | null }>;
}


const lower = (s: string) => s.trim().toLowerCase();


export interface ProtectionDeps {
  store: Store;
  clock: Clock;
  log: Logger;
  serverSecret: Buffer;
  smime: SmimeInspector;
  /** Parses (and inspects) a message for delivery: `delivery.prepare`, given once delivery exists. */
  prepare: (raw: Buffer) => Promise<PreparedMessage>;
}

export function createProtectionService(deps: ProtectionDeps) {
  const { store, clock, log } = deps;
  const keyring = createKeyring({ store, clock, serverSecret: deps.serverSecret });
  const reader = createProtectedReader({ store, clock, log, keyring });
  const inspect = createMessageInspector({ smime: deps.smime, clock, warn: (facts, message) => log.warn(facts, message) });

  /**
   * Views as `who` may see them: views of protected mail (they carry `protection`) are opened for a capable device
   * and get the protection facts and rights; all others are returned untouched (and nothing is read for them).
   */
  async function overlayViews(views: ItemView[], who: Reader, body?: { type?: BodyType; maxBytes?: number; wanted: boolean }): Promise<ItemView[]> {
    const marked = views.filter((v) => v.protection !== undefined);
    if (marked.length === 0) return views;
    const items = new Map((await store.items.byIds(who.userId, marked.map((v) => v.id))).map((i) => [i.id, i]));
    return Promise.all(
      views.map((v) => {
        const item = v.protection !== undefined ? items.get(v.id) : undefined;
        return item ? reader.overlay(v, item, who, body) : v;
      }),
    );
  }

  const overlay = async (view: ItemView, who: Reader, body?: { type?: BodyType; maxBytes?: number; wanted: boolean }) => (await overlayViews([view], who, body))[0]!;

  /**
   * A protected message's attachment (`protected-<n>`): inline parts (pictures the body shows) need the view right,
   * anything saved as a file needs export. Undefined when the item is not protected (the caller serves its own).
   */
  async function attachment(item: Item, attachmentId: string, who: Reader): Promise<Reply | undefined> {
    if (!descriptorOf(item)) return undefined;
    const opening = await reader.open(item, who);
    const match = /^protected-(\d{1,4})$/.exec(attachmentId);
    if (!match) throw errors.notFound('No such attachment.');
    if (opening.state !== 'readable' || !opening.content) {
      throw errors.rightsDenied('view', `The protected message cannot be opened here: ${opening.reason ?? opening.state}.`);
    }
    const part = opening.content.attachments[Number(match[1])];
    if (!part) throw errors.notFound('No such attachment.');
    const needed: Right = part.isInline ? 'view' : 'export';
    if (!holds(opening.rights, needed)) throw errors.rightsDenied(needed, `The licence of this message does not let you save its attachments (${needed}).`);
    return {
      headers: {
        'Content-Type': saneContentType(part.contentType),
        'Content-Length': String(part.content.length),
        'Content-Disposition': dispositionHeader(cleanFilename(part.name, 'attachment'), 'attachment'),
        // Opened protected content is never kept by caches on the way, and travels as it is (no gzip), as downloads do.
        'Cache-Control': 'private, no-store, no-transform',
      },
      stream: Readable.from([part.content]),
    };
  }

  /** The grant of a template of the tenant, from now. */
  function grantOf(template: Template, expiresAt: number | null): ProtectionGrant {
    return { template: { id: template.id, name: template.name }, rights: [...template.rights], expiresAt };
  }

  /** The grant a message answering or quoting protected mail inherits: the original licence's template and rights. */
  const inherited = (licence: Licence): ProtectionGrant => ({
    template: licence.template,
    rights: [...licence.rights],
    expiresAt: licence.expiresAt === null ? null : Date.parse(licence.expiresAt),
  });

  /**
   * Label, marking and protection of an outgoing message, and the rights check of the protected mail it answers
   * (`parent`) or attaches (`attach`). Throws 400 for an unknown template or label, labelRequired under the label
   * policy, rightsDenied when a licence does not allow what the message does.
   */
  async function prepareSend(input: {
    sender: User;
    reader: Reader;
    recipients: string[];
    body: { contentType: 'text' | 'html'; content: string };
    protection?: { template: string };
    label?: string | null;
    labelJustification?: string;
    parent?: Item;
    attach: Item[];
  }): Promise<SendPlan> {
    const who = input.reader;
    const doc = await keyring.document(input.sender.tenantId);
    let protection: ProtectionGrant | null = null;
    const attachments: SendPlan['attachments'] = [];

    const openForUse = async (item: Item, right: Right) => {
      const opening = await reader.open(item, who);
      if (opening.state !== 'readable' || !opening.licence || !opening.inner) {
        throw errors.rightsDenied(right, `The protected message cannot be used here: ${opening.reason ?? opening.state}.`);
      }
      if (!holds(opening.rights, right)) throw errors.rightsDenied(right, `The licence of the original message does not grant ${right}.`);
      return opening;
    };
    if (input.parent && descriptorOf(input.parent)) {
      const p = input.parent;
      const right = rightForAnswer(
        { from: p.from?.address ?? null, replyTo: p.replyTo.map((a) => a.address), to: p.to.map((a) => a.address), cc: p.cc.map((a) => a.address) },
        input.recipients,
        who.address,
      );
      protection = inherited((await openForUse(p, right)).licence!);
    }
    for (const item of input.attach) {
      if (descriptorOf(item)) {
        // Attaching the whole original hands its content to whoever receives this: that is forwarding.
        const opening = await openForUse(item, 'forward');
        protection ??= inherited(opening.licence!);
        attachments.push({ name: `${cleanFilename(item.subject || 'message', 'message')}.eml`, contentType: 'message/rfc822', content: opening.inner!, isInline: false, contentId: null });
      } else {
        const size = item.mimeBlobId ? (await store.blobs.size(item.userId, item.mimeBlobId)) ?? 0 : 0;
        if (!item.mimeBlobId || size === 0) throw errors.invalidRequest('That item has no message to attach.', [{ field: 'attachItems', message: 'not a message' }]);
        const raw = await store.blobs.read(item.userId, item.mimeBlobId, 0, size);
        attachments.push({ name: `${cleanFilename(item.subject || 'message', 'message')}.eml`, contentType: 'message/rfc822', content: raw, isInline: false, contentId: null });
      }
    }

    const originalLabelId = input.parent?.type === 'email' ? ((input.parent.data.label as { id?: string } | undefined)?.id ?? null) : null;
    const decision = decideSendLabel({ policy: doc.doc.labelPolicy, catalogue: doc, requested: input.label, justification: input.labelJustification, originalLabelId });
    const headers: Record<string, string> = {};
    let body = input.body;
    const now = clock.now();
    if (decision.label) {
      headers.msip_labels = formatMsipLabels(decision.label, {
        siteId: tenantSiteId(input.sender.tenantId),
        setAt: now,
        method: decision.downgradedFrom ? 'Privileged' : 'Standard',
        actionId: crypto.randomUUID(),
        contentBits: decision.label.marking.header || decision.label.marking.footer ? 3 : 0,
      });
      body = applyContentMarking(body, decision.label.marking);
      if (decision.downgradedFrom) {
        log.info({ userId: input.sender.id, from: decision.downgradedFrom.id, to: decision.label.id, justification: input.labelJustification }, 'sensitivity label lowered');
      }
      if (!protection && decision.label.protectionTemplate) {
        const template = doc.template(decision.label.protectionTemplate);
        if (template) protection = grantOf(template, doc.expiresAt(template, now));
      }
    }
    if (input.protection) {
      const template = doc.template(input.protection.template);
      if (!template) throw errors.invalidRequest('No such protection template.', [{ field: 'protection.template', message: 'unknown template' }]);
      // An explicit template never loosens what an answered or attached original demands.
      if (!protection) protection = grantOf(template, doc.expiresAt(template, now));
    }
    return { headers, body, protection, attachments };
  }

  /**
   * The wrapper of `inner` for the sender's tenant: encrypted for the tenant's active key and for the protection key
   * of every partner tenant among the recipients, with a licence signed by the active key.
   */
  async function protect(input: { tenantId: string; owner: string; inner: Buffer; grant: ProtectionGrant; recipients: string[]; messageId: string | null }): Promise<Buffer> {
    const [key, doc, tenant] = await Promise.all([keyring.activeKey(input.tenantId), keyring.document(input.tenantId), store.tenants.get(input.tenantId)]);
    const partnerCerts = new Set<string>();
    for (const address of input.recipients) for (const cert of doc.partnerFor(address)?.certificates ?? []) partnerCerts.add(cert);
    const envelope = await encryptFor(input.inner, [key.certificatePem, ...partnerCerts]);
    const now = clock.now();
    const licence: Licence = {
      v: 1,
      issuer: { tenantId: input.tenantId, name: tenant?.name ?? input.tenantId },
      owner: lower(input.owner),
      template: input.grant.template,
      rights: input.grant.rights,
      issuedAt: new Date(now).toISOString(),
      expiresAt: input.grant.expiresAt === null ? null : new Date(input.grant.expiresAt).toISOString(),
      contentDigest: contentDigest(envelope),
      messageId: input.messageId,
    };
    const signed = await signContent(licenceJson(licence), key, now);
    return buildProtectedMessage({ inner: input.inner, envelope, licence: signed, placeholderText: PLACEHOLDER_TEXT });
  }

  /**
   * A message the app built itself (raw MIME) under the label policy: when labelling is mandatory it must carry a
   * label of the tenant's catalogue in its msip_labels header.
   */
  async function requireLabel(tenantId: string, raw: Buffer): Promise<void> {
    const doc = await keyring.document(tenantId);
    if (!doc.doc.labelPolicy.mandatory || doc.labels().length === 0) return;
    const label = messageLabel(headerValue(raw, 'msip_labels'));
    if (!label || !doc.label(label.id)) {
      throw errors.labelRequired('This organisation requires a sensitivity label of its catalogue on every message (msip_labels header).', 'mandatory');
    }
  }

  /**
   * Tenants' delivery rules: for each recipient whose tenant has a rule matching this message, a protected copy
   * (one per tenant and template) to store instead; recipients without a match are absent from the answer. Mail
   * already protected, or S/MIME encrypted (the server cannot read it), is left as it is. The licence's owner is the
   * sender (they wrote it); the copy is encrypted for the recipient's tenant only.
   */
  async function protectOnDelivery(message: PreparedMessage, recipients: User[], mailFrom: string): Promise<Map<string, PreparedMessage>> {
    const out = new Map<string, PreparedMessage>();
    if (message.data?.protection || (message.data?.smime as { kind?: string } | undefined)?.kind === 'encrypted') return out;
    const sender = lower(message.parsed.from?.address ?? mailFrom);
    const labelId = (message.data?.label as { id?: string } | undefined)?.id ?? null;
    const byTenant = new Map<string, User[]>();
    for (const user of recipients) byTenant.set(user.tenantId, [...(byTenant.get(user.tenantId) ?? []), user]);
    const senderUsers = sender ? await store.users.byEmail(sender) : [];
    for (const [tenantId, users] of byTenant) {
      const doc = await keyring.document(tenantId);
      if (doc.doc.deliveryRules.length === 0) continue;
      const fromOutside = !senderUsers.some((u) => u.tenantId === tenantId);
      const copies = new Map<string, Promise<PreparedMessage>>();
      for (const user of users) {
        const rule = doc.deliveryRuleFor({ sender, recipient: lower(user.email), subject: message.parsed.subject, labelId, fromOutside });
        const template = rule ? doc.template(rule.template) : undefined;
        if (!template) continue;
        let copy = copies.get(template.id);
        if (!copy) {
          const grant = grantOf(template, doc.expiresAt(template, clock.now()));
          copy = protect({ tenantId, owner: sender || 'postmaster', inner: message.raw, grant, recipients: [], messageId: message.parsed.internetMessageId }).then((wrapped) =>
            deps.prepare(wrapped),
          );
          copies.set(template.id, copy);
        }
        out.set(user.id, await copy);
      }
    }
    return out;
  }

  /** The tenant's templates, labels and label policy, as apps show them. */
  async function catalogue(tenantId: string) {
    const doc = await keyring.document(tenantId);
    return {
      templates: doc.templates().map((t) => ({ id: t.id, name: t.name, description: t.description, rights: t.rights, expiry: t.expiry, builtIn: t.builtIn })),
      labels: doc.labels(),
      labelPolicy: doc.doc.labelPolicy,
    };
  }

  return { inspect, requireLabel, protectOnDelivery, overlay, overlayViews, attachment, prepareSend, protect, catalogue, keyring, open: reader.open };
}

export { CmsError };
export type ProtectionService = ReturnType<typeof createProtectionService>;
