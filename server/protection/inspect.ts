/**
 * Delivery's question of every message, before it is stored: what is it? (mail/delivery.ts `inspect`.)
 * - A protected wrapper (wrapper.ts) is stored with a placeholder as its body and preview and no attachments: the
 *   wrapper's parts stay in the raw message blob, encrypted, and nothing decrypted is ever written. Its licence's
 *   public facts (issuer, owner, template, expiry) are read without verifying (trust is the reader's tenant's
 *   question, asked when it is opened) and kept as `data.protection`.
 * - An S/MIME message is stored intact; its signature status is kept as `data.smime`.
 * - A sensitivity label header (`msip_labels`) is kept as `data.label`.
 * Needs no tenant and no key, so every delivery path (LMTP, import, the admin CLI, sent mail) uses the same one.
 * Never throws for what a message contains.
 */
import type { Clock } from '../clock';
import type { ParsedMessage } from '../content/mime';
import { headerBlock } from '../send/compose';
import { signedContentUnverified } from './cms';
import { messageLabel } from './labels';
import type { ProtectionDescriptor } from './reader';
import type { createSmimeInspector } from './smime';
import { findProtectedParts, parseLicence } from './wrapper';

export type SmimeInspector = ReturnType<typeof createSmimeInspector>;

/** What a reader without the content sees, in the stored item (body and preview). */
export const PLACEHOLDER_TEXT =
  'This message is protected with rights management. Open it in an app that supports rights management (one that registers the rightsManagement capability) to read it.';

/** The value of one top-level header field (unfolded), or undefined. */
export function headerValue(raw: Buffer, name: string): string | undefined {
  const unfolded = headerBlock(raw).toString('latin1').replace(/\r?\n[ \t]+/g, ' ');
  const match = new RegExp(`^${name}:[ \\t]*(.*)$`, 'im').exec(unfolded);
  return match?.[1]?.trim();
}

/** The descriptor of a wrapper whose licence cannot even be parsed: protected, and unreadable for everyone. */
const UNREADABLE: ProtectionDescriptor = { issuer: { tenantId: '', name: '' }, owner: '', template: { id: '', name: '' }, issuedAt: '', expiresAt: null };

export function createMessageInspector(deps: { smime: SmimeInspector; clock: Clock; warn: (facts: Record<string, unknown>, message: string) => void }) {
  return async function inspect(raw: Buffer, parsed: ParsedMessage): Promise<{ parsed: ParsedMessage; data: Record<string, unknown> }> {
    const data: Record<string, unknown> = {};
    const label = messageLabel(headerValue(raw, 'msip_labels'));
    if (label) data.label = { id: label.id, name: label.name };
    const parts = findProtectedParts(parsed.attachments);
    if (parts) {
      let descriptor = UNREADABLE;
      try {
        const licence = parseLicence(signedContentUnverified(parts.licence));
        descriptor = { issuer: licence.issuer, owner: licence.owner, template: licence.template, issuedAt: licence.issuedAt, expiresAt: licence.expiresAt };
      } catch (err) {
        deps.warn({ messageId: parsed.internetMessageId, reason: (err as Error).message }, 'protected message with an unreadable licence');
      }
      data.protection = descriptor;
      return {
        parsed: { ...parsed, bodyText: PLACEHOLDER_TEXT, bodyHtml: null, preview: PLACEHOLDER_TEXT.slice(0, 256), attachments: [] },
        data,
      };
    }
    const smime = await deps.smime.inspect(raw, deps.clock.now());
    if (smime) data.smime = smime;
    return { parsed, data };
  };
}
