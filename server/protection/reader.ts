/**
 * Opening protected mail for one reader, on the server (the way Exchange serves rights-managed mail to Outlook
 * mobile): only a device that registered the `rightsManagement` capability is given the content, and only while the
 * use licence is genuine, trusted, bound to this content and not expired. Everyone else gets the placeholder the
 * item was stored with. Nothing decrypted is written anywhere: the stored item holds the placeholder, the wrapper's
 * ciphertext stays in the raw message blob, and opened content lives only in a small, short-lived memory cache.
 *
 * A message that cannot be opened (tampered licence or content, a key that is gone, an issuer this tenant does not
 * trust) is shown as unreadable and logged; it never causes a 5xx.
 */
import type { Logger } from 'pino';
import type { Clock } from '../clock';
import { parseMessage, type ParsedMessage } from '../content/mime';
import type { Item, Store } from '../store/types';
import type { Call } from '../http/table';
import { emailBody, type BodyType, type ItemView } from '../views';
import { CmsError, decryptWith, verifySignedContent } from './cms';
import type { Keyring } from './keyring';
import { RIGHTS, type Right } from './rights';
import { contentDigest, findProtectedParts, parseLicence, type Licence } from './wrapper';

/** The device capability that stands for "this app honours usage rights" (protocol: device registration). */
export const RIGHTS_MANAGEMENT = 'rightsManagement';

/** What delivery records of a protected message (item.data.protection): the licence's public facts, unverified. */
export interface ProtectionDescriptor {
  issuer: { tenantId: string; name: string };
  owner: string;
  template: { id: string; name: string };
  issuedAt: string;
  expiresAt: string | null;
}

export type ProtectionState = 'readable' | 'capabilityRequired' | 'expired' | 'unreadable';

export interface Reader {
  userId: string;
  tenantId: string;
  /** The reader's own address (lower case): the licence's owner holds every right. */
  address: string;
  /** The device registered the rightsManagement capability. */
  capable: boolean;
}

export interface Opening {
  state: ProtectionState;
  /** Why it is not readable, in words (logged and shown to the app). */
  reason: string | null;
  /** The reader's rights (empty unless readable). */
  rights: Right[];
  licence: Licence | null;
  content: ParsedMessage | null;
  /** The inner RFC 5322 message (forwarding attaches it). */
  inner: Buffer | null;
}

/** Opened messages kept in memory: enough for a page of a busy folder, short enough that nothing lingers. */
const CACHE_ENTRIES = 256;
const CACHE_MS = 60_000;

/** The reader a call stands for: its user, and whether its device registered the rightsManagement capability. */
export function readerOf(call: Pick<Call, 'user' | 'deviceIfRegistered'>): Reader {
  const user = call.user;
  return {
    userId: user.id,
    tenantId: user.tenantId,
    address: user.email.trim().toLowerCase(),
    capable: call.deviceIfRegistered?.capabilities.includes(RIGHTS_MANAGEMENT) ?? false,
  };
}

export const descriptorOf = (item: Item): ProtectionDescriptor | undefined =>
  item.type === 'email' ? (item.data.protection as ProtectionDescriptor | undefined) : undefined;

export function createProtectedReader(deps: { store: Store; clock: Clock; log: Logger; keyring: Keyring }) {
  const { store, clock, log, keyring } = deps;
  const cache = new Map<string, { at: number; licence: Licence; inner: Buffer; content: ParsedMessage; signer: string }>();

  const unreadable = (reason: string, licence: Licence | null = null): Opening => ({ state: 'unreadable', reason, rights: [], licence, content: null, inner: null });

  /** The certificates whose licences the tenant trusts now: its own keys' and its partners'. */
  async function trustedIssuers(tenantId: string) {
    const [keys, doc] = await Promise.all([keyring.keys(tenantId), keyring.document(tenantId)]);
    return { keys, certificates: [...keys.map((k) => k.certificatePem), ...doc.trustedPartnerCertificates()] };
  }

  /** Licence and content of a wrapper, for a tenant (its own keys, and the partners it trusts to issue licences). */
  async function decrypt(tenantId: string, raw: Buffer): Promise<{ licence: Licence; inner: Buffer; content: ParsedMessage; signer: string }> {
    const parsed = await parseMessage(raw);
    const parts = findProtectedParts(parsed.attachments);
    if (!parts) throw new CmsError('the message has no protected content and licence');
    const { keys, certificates } = await trustedIssuers(tenantId);
    const { content: licenceBytes, signerCertificatePem } = await verifySignedContent(parts.licence, certificates);
    const licence = parseLicence(licenceBytes);
    // Checked before decrypting: CBC cannot tell changed ciphertext, and only the signed digest binds the content.
    if (licence.contentDigest !== contentDigest(parts.envelope)) throw new CmsError('the licence was issued for other content');
    const inner = await decryptWith(parts.envelope, keys);
    return { licence, inner, content: await parseMessage(inner), signer: signerCertificatePem };
  }

  /** The item's protected content as `reader` may see it. */
  async function open(item: Item, reader: Reader): Promise<Opening> {
    if (!reader.capable) {
      return { state: 'capabilityRequired', reason: 'This app did not register the rightsManagement capability.', rights: [], licence: null, content: null, inner: null };
    }
    if (item.mimeBlobId === null) return unreadable('the message has no stored content');
    const now = clock.now();
    const key = `${reader.tenantId}\u0000${item.userId}\u0000${item.mimeBlobId}`;
    let entry = cache.get(key);
    // Remembered content is served only while its licence's signer is still trusted: removing a partner (or
    // anything else that ends trust) takes effect on the next open, not when the memory runs out.
    if (entry && (now - entry.at > CACHE_MS || !(await trustedIssuers(reader.tenantId)).certificates.includes(entry.signer))) {
      cache.delete(key);
      entry = undefined;
    }
    if (!entry) {
      try {
        const size = (await store.blobs.size(item.userId, item.mimeBlobId)) ?? 0;
        const raw = await store.blobs.read(item.userId, item.mimeBlobId, 0, size);
        entry = { at: now, ...(await decrypt(reader.tenantId, raw)) };
      } catch (err) {
        const reason = err instanceof CmsError ? err.message : `the content cannot be read (${String((err as Error)?.message ?? err)})`;
        log.warn({ itemId: item.id, userId: item.userId, tenantId: reader.tenantId, reason }, 'protected message unreadable');
        return unreadable(reason);
      }
      cache.set(key, entry);
      if (cache.size > CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
    }
    const { licence } = entry;
    // Expiry binds the owner too: "after expiry nobody gets the content".
    if (licence.expiresAt !== null && Date.parse(licence.expiresAt) <= now) {
      return { state: 'expired', reason: `The licence expired at ${licence.expiresAt}.`, rights: [], licence, content: null, inner: null };
    }
    const rights = licence.owner === reader.address ? [...RIGHTS] : [...licence.rights];
    if (!rights.includes('view')) return { state: 'unreadable', reason: 'The licence does not grant the view right.', rights: [], licence, content: null, inner: null };
    return { state: 'readable', reason: null, rights, licence, content: entry.content, inner: entry.inner };
  }

  /** The attachments of opened content as item views list them (ids are the part's position: stable per message). */
  function attachmentViews(content: ParsedMessage) {
    return content.attachments.map((a, i) => ({
      id: `protected-${i}`,
      name: a.name,
      contentType: a.contentType,
      size: a.content.length,
      isInline: a.isInline,
      contentId: a.contentId,
    }));
  }

  /**
   * `view` (an item view of `item`, as views.ts made it from the stored placeholder) for `reader`: the protection
   * facts and rights for everyone, and for a reader who may open it the real preview, attachments, body size and,
   * when asked, body. A view that is not of protected mail is returned as it is.
   */
  async function overlay(view: ItemView, item: Item, reader: Reader, body?: { type?: BodyType; maxBytes?: number; wanted: boolean }): Promise<ItemView> {
    const descriptor = descriptorOf(item);
    if (!descriptor) return view;
    const opening = await open(item, reader);
    const out: ItemView = { ...view, protection: { ...descriptor, state: opening.state, reason: opening.reason }, rights: opening.rights };
    const content = opening.content;
    if (!content) return out;
    const bodyText = content.bodyText ?? null;
    const bodyHtml = content.bodyHtml ?? null;
    const attachments = attachmentViews(content);
    out.preview = content.preview;
    out.attachments = attachments;
    out.hasAttachments = attachments.some((a) => !a.isInline);
    out.bodySize = Buffer.byteLength(bodyHtml ?? bodyText ?? '', 'utf8');
    if (body?.wanted) out.body = emailBody({ text: bodyText, html: bodyHtml }, body.type, body.maxBytes);
    return out;
  }

  return { open, overlay };
}

export type ProtectedReader = ReturnType<typeof createProtectedReader>;
