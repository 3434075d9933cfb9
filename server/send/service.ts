/**
 * Sending (protocol.md §6): compose, then store everything the send means in ONE unit of work (one transaction):
 * the sender's Sent Items copy, every local recipient's Inbox copy (through `delivery`, the one delivery path), and
 * either an outbox entry for the remote recipients (a relay is configured) or a non-delivery report for them in the
 * sender's Inbox (none is). Either all of it happens or none of it: a failed send leaves no half-sent message behind.
 *
 * An address is local when `delivery.resolveRecipient` finds a user for it; every other address is remote. Parsing
 * is asynchronous and a unit of work awaits nothing but its store, so every message is composed and prepared first.
 */
import crypto from 'node:crypto';
import { simpleParser, type AddressObject } from 'mailparser';
import type { Clock } from '../clock';
import type { Config } from '../config';
import { ApiError, errors } from '../errors';
import type { Delivery, DeliveryTarget, PreparedMessage } from '../mail/delivery';
import type { Item, Store, User } from '../store/types';
import { composeMessage, headerBlock, referencesOf, replyReferences, type OutgoingMessage, type Recipient } from './compose';
import { buildNdr } from './ndr';
import type { ProtectionService } from '../protection/service';
import type { Reader } from '../protection/reader';

export interface SendRequest {
  to: Recipient[];
  cc: Recipient[];
  bcc: Recipient[];
  subject: string;
  body: { contentType: 'text' | 'html'; content: string };
  attachments: Array<{ name: string; contentType: string; content: Buffer; isInline: boolean; contentId: string | null }>;
  importance: 'low' | 'normal' | 'high';
  /** An item id of the sender's: the message this one answers. */
  inReplyTo?: string;
  /** Item ids of the sender's messages to attach whole (message/rfc822): forwarding, or a reply with the original. */
  attachItems?: string[];
  /** Protect the message with this template of the tenant (information protection). */
  protection?: { template: string };
  /** A sensitivity label id of the tenant's catalogue; null: explicitly none (the label policy decides if allowed). */
  label?: string | null;
  /** Why the label is lower than the answered message's (the label policy may require it). */
  labelJustification?: string;
  /**
   * Sent from a shared mailbox by a member with send-on-behalf (not send-as): the member, named in `Sender` (RFC 5322
   * §3.6.2), so recipients see "member on behalf of mailbox".
   */
  onBehalfOf?: { name: string; address: string };
}

export interface SendResult {
  /** The Sent Items copy. */
  id: string;
  internetMessageId: string;
  /** Delivered into a local mailbox's Inbox. */
  localRecipients: string[];
  /** Waiting in the outbox for the relay. */
  queuedRecipients: string[];
  /** Bounced at once (no relay); the sender has a non-delivery report for them. */
  rejectedRecipients: string[];
}

export interface SendDeps {
  store: Store;
  clock: Clock;
  delivery: Delivery;
  config: Pick<Config, 'mailHostname' | 'maxMessageBytes' | 'smtpRelayUrl'>;
  /** Called after a unit of work that queued mail committed (the relay worker starts a pass). */
  onQueued: () => void;
  /** Labels, protection and the rights of protected originals (server/protection/); plain sending without it. */
  protection?: ProtectionService;
  /** Told whom a user wrote to, after the send committed (the directory ranks them first in people search). */
  onSent?: (userId: string, recipients: Array<{ name: string; address: string }>, now: number) => Promise<void>;
}

/** Recipients of a message the app built itself: the JSON send's limit. */
const MAX_RAW_RECIPIENTS = 500;

/** The message without its top-level Bcc field (folded continuation lines included); the body is untouched. */
export function withoutBccHeader(raw: Buffer): Buffer {
  const head = headerBlock(raw);
  const text = head.toString('latin1');
  const kept = text.replace(/^bcc:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*\r?\n/gim, '');
  if (kept.length === text.length) return raw;
  return Buffer.concat([Buffer.from(kept, 'latin1'), raw.subarray(head.length)]);
}

export const NO_RELAY_REASON = 'This server has no mail relay for addresses outside it, and no local mailbox has this address.';

function tooLarge(size: number, limit: number): ApiError {
  return new ApiError(413, 'payloadTooLarge', `The message would be ${size} bytes; the largest this server sends is ${limit} bytes.`);
}

/** Bytes of `n` bytes as MIME base64: 4 per 3, in lines of 76 characters plus CRLF. */
function base64Lines(n: number): number {
  const chars = Math.ceil(n / 3) * 4;
  return chars + Math.ceil(chars / 76) * 2;
}

export function createSendService(deps: SendDeps) {
  const { store, clock, delivery, config } = deps;
  const relayConfigured = config.smtpRelayUrl !== '';

  /** One of the sender's messages, named by a request field. */
  async function ownMessage(userId: string, itemId: string, field: string): Promise<Item> {
    const item = await store.items.byId(userId, itemId);
    if (!item || item.type !== 'email') throw errors.itemNotFound(`${field} names no message of yours.`);
    return item;
  }

  /** In-Reply-To and References of a reply to `parent`. */
  async function threadOf(parent: Item): Promise<OutgoingMessage['thread']> {
    if (!parent.internetMessageId) return undefined; // nothing to thread on: the reply starts its own conversation
    const userId = parent.userId;
    const size = parent.mimeBlobId ? (await store.blobs.size(userId, parent.mimeBlobId)) ?? 0 : 0;
    const headers = parent.mimeBlobId ? headerBlock(await store.blobs.read(userId, parent.mimeBlobId, 0, Math.min(size, 64 * 1024))) : Buffer.alloc(0);
    return { inReplyTo: parent.internetMessageId, references: replyReferences(referencesOf(headers), parent.internetMessageId) };
  }

  /** Every distinct address (case-insensitive), split into local users and remote addresses. */
  async function classify(request: Pick<SendRequest, 'to' | 'cc' | 'bcc'>) {
    const seen = new Set<string>();
    const addresses: string[] = [];
    for (const { address } of [...request.to, ...request.cc, ...request.bcc]) {
      const key = address.toLowerCase();
      if (seen.has(key)) continue;
      seen.add(key);
      addresses.push(address);
    }
    // Looked up together: independent reads, which a store with a connection pool answers side by side.
    const found = await Promise.all(addresses.map((address) => delivery.resolveRecipient(address)));
    const local = new Map<string, User[]>();
    const remote: string[] = [];
    addresses.forEach((address, i) => {
      const users = found[i]!;
      if (users.length) local.set(address, users);
      else remote.push(address);
    });
    return { local, remote };
  }

  async function send(userId: string, request: SendRequest, reader?: Reader): Promise<SendResult> {
    // What the attachments alone take in the message (base64 in 76-character lines): when that is already over the
    // limit, the answer is known without composing (which costs several copies of the message in memory).
    const atLeast = request.attachments.reduce((sum, a) => sum + base64Lines(a.content.length), 0);
    if (atLeast > config.maxMessageBytes) throw tooLarge(atLeast, config.maxMessageBytes);
    const sender = await store.users.byId(userId);
    if (!sender) throw errors.notFound('No such user.');
    const parent = request.inReplyTo ? await ownMessage(userId, request.inReplyTo, 'inReplyTo') : undefined;
    const attach = await Promise.all((request.attachItems ?? []).map((id) => ownMessage(userId, id, 'attachItems')));
    const recipients = [...request.to, ...request.cc, ...request.bcc].map((r) => r.address);
    const plan = deps.protection
      ? await deps.protection.prepareSend({
          sender,
          reader: reader ?? { userId, tenantId: sender.tenantId, address: sender.email.toLowerCase(), capable: false },
          recipients,
          body: request.body,
          protection: request.protection,
          label: request.label,
          labelJustification: request.labelJustification,
          parent,
          attach,
        })
      : undefined;
    if (!plan && (request.protection || request.label || attach.length)) {
      throw errors.invalidRequest('This server does not offer information protection.', [{ field: 'protection', message: 'not available' }]);
    }
    const thread = parent ? await threadOf(parent) : undefined;
    const now = clock.now();
    const composed = await composeMessage(
      {
        ...request,
        body: plan?.body ?? request.body,
        attachments: [...request.attachments, ...(plan?.attachments ?? [])],
        headers: plan?.headers,
        from: { name: sender.displayName, address: sender.email },
        ...(request.onBehalfOf ? { sender: request.onBehalfOf } : {}),
        thread,
      },
      config.mailHostname,
      now,
    );
    let { withBcc, withoutBcc } = composed;
    if (plan?.protection) {
      // Both renderings are wrapped: Sent Items keeps the Bcc header, and nobody's copy holds the text in the clear.
      const grant = plan.protection;
      const wrap = (inner: Buffer) =>
        deps.protection!.protect({ tenantId: sender.tenantId, owner: sender.email, inner, grant, recipients, messageId: composed.internetMessageId });
      [withBcc, withoutBcc] = await Promise.all([wrap(withBcc), wrap(withoutBcc)]);
    }
    if (withBcc.length > config.maxMessageBytes) throw tooLarge(withBcc.length, config.maxMessageBytes);
    return commit(sender, { internetMessageId: composed.internetMessageId, withBcc, withoutBcc }, request);
  }

  /**
   * An S/MIME (or any) message the app built itself: sent as it is, and stored as it is in Sent Items. Its From must
   * be the sender's own address and it must carry a Message-ID; the recipients are its To, Cc and Bcc; the Bcc
   * header is removed from the recipients' copy only (outside any signed part, so signatures stay valid).
   */
  async function sendMime(userId: string, raw: Buffer, options: { checkLabel?: boolean; onBehalfOf?: string } = {}): Promise<SendResult> {
    const sender = await store.users.byId(userId);
    if (!sender) throw errors.notFound('No such user.');
    const head = headerBlock(raw);
    const parsedHead = await simpleParser(head, { skipHtmlToText: true, skipTextToHtml: true, skipTextLinks: true });
    const list = (v: AddressObject | AddressObject[] | undefined): Recipient[] =>
      (Array.isArray(v) ? v : v ? [v] : []).flatMap((o) => o.value).flatMap(function flat(a): Recipient[] {
        return a.group ? a.group.flatMap(flat) : a.address ? [{ address: a.address, name: a.name }] : [];
      });
    const from = list(parsedHead.from)[0];
    if (!from) throw errors.invalidRequest('The message has no From address.', [{ field: 'From', message: 'required' }]);
    if (from.address.toLowerCase() !== sender.email.toLowerCase()) {
      throw errors.forbidden(`The message's From must be your own address (${sender.email}).`);
    }
    if (options.onBehalfOf !== undefined) {
      // A member with send-on-behalf only: the message must say so itself (its bytes are sent as they are).
      const named = list(parsedHead.headers.get('sender') as AddressObject | undefined)[0];
      if (named?.address.toLowerCase() !== options.onBehalfOf.toLowerCase()) {
        throw errors.forbidden(`You may send from this mailbox only on behalf of it: the message's Sender must be your own address (${options.onBehalfOf}).`);
      }
    }
    const messageId = typeof parsedHead.messageId === 'string' ? parsedHead.messageId.trim() : '';
    if (!/^<[^<>\s]+>$/.test(messageId)) throw errors.invalidRequest('The message needs a Message-ID header.', [{ field: 'Message-ID', message: 'required' }]);
    const request = { to: list(parsedHead.to), cc: list(parsedHead.cc), bcc: list(parsedHead.bcc) };
    const count = request.to.length + request.cc.length + request.bcc.length;
    if (count === 0) throw errors.invalidRequest('The message names no recipient in To, Cc or Bcc.', [{ field: 'To', message: 'required' }]);
    if (count > MAX_RAW_RECIPIENTS) throw errors.invalidRequest(`At most ${MAX_RAW_RECIPIENTS} recipients in all.`, [{ field: 'To', message: 'too many' }]);
    // Pigeon's own meeting mail (server/calendar/) is not the user's message to label.
    if (deps.protection && options.checkLabel !== false) await deps.protection.requireLabel(sender.tenantId, raw);
    return commit(sender, { internetMessageId: messageId, withBcc: raw, withoutBcc: withoutBccHeader(raw) }, request);
  }

  /**
   * Stores what a send means in one unit of work (see the module comment) and answers where each recipient went.
   */
  async function commit(sender: User, composed: { internetMessageId: string; withBcc: Buffer; withoutBcc: Buffer }, request: Pick<SendRequest, 'to' | 'cc' | 'bcc'>): Promise<SendResult> {
    const userId = sender.id;
    const now = clock.now();
    const { local, remote } = await classify(request);
    const queued = relayConfigured ? remote : [];
    const rejected = relayConfigured ? [] : remote;
    const [recipientCopy, bounce] = await Promise.all([
      delivery.prepare(composed.withoutBcc),
      rejected.length
        ? buildNdr({
            hostname: config.mailHostname,
            sender: { name: sender.displayName, address: sender.email },
            original: composed.withoutBcc,
            arrivedAt: now,
            failures: rejected.map((address) => ({ address, status: '5.4.4', reason: NO_RELAY_REASON })),
            now,
          }).then((ndr) => delivery.prepare(ndr))
        : undefined,
    ]);
    // The two renderings differ only in the Bcc header, which no item field holds: parse once, store each one's bytes.
    const sentCopy: PreparedMessage = {
      ...recipientCopy,
      raw: composed.withBcc,
      sha256: crypto.createHash('sha256').update(composed.withBcc).digest('hex'),
    };
    // One copy per local user, however many of the message's addresses reach them.
    const targets = new Map<string, DeliveryTarget>();
    for (const users of local.values()) for (const u of users) targets.set(u.id, { userId: u.id, folderKind: 'inbox' });

    const deliveredAt = clock.now();
    const sentId = await store.run(function* (tx) {
      const [sent] = yield* delivery.deliverIn(tx, sentCopy, [{ userId, folderKind: 'sentItems' }], { duplicates: 'live', isRead: true }, deliveredAt);
      if (targets.size) yield* delivery.deliverIn(tx, recipientCopy, [...targets.values()], { duplicates: 'live' }, deliveredAt);
      if (queued.length) {
        const blobId = yield* tx.blobs.put(userId, composed.withoutBcc, now);
        yield* tx.outbox.enqueue({ userId, blobId, mailFrom: sender.email, recipients: queued }, now);
      }
      if (bounce) yield* delivery.deliverIn(tx, bounce, [{ userId, folderKind: 'inbox' }], { duplicates: 'live' }, deliveredAt);
      return sent!.itemId;
    });
    if (queued.length) deps.onQueued();
    if (deps.onSent) {
      // Ranking only: a failure here must not turn a committed send into an error.
      const recipients = [...request.to, ...request.cc, ...request.bcc].map((r) => ({ name: r.name ?? '', address: r.address }));
      await deps.onSent(userId, recipients, now).catch(() => undefined);
    }
    return {
      id: sentId,
      internetMessageId: composed.internetMessageId,
      localRecipients: [...local.keys()],
      queuedRecipients: queued,
      rejectedRecipients: rejected,
    };
  }

  /**
   * A message the server sends for a user by itself (an automatic reply): to one address, no Sent Items copy and no
   * bounce (an automatic message must never start a loop of them, RFC 3834 §3.1.7). A local recipient gets it in the
   * Inbox now; a remote one through the outbox when a relay is configured; without a relay it is dropped.
   */
  async function sendAutomatic(userId: string, raw: Buffer, recipient: string): Promise<'delivered' | 'queued' | 'dropped'> {
    const sender = await store.users.byId(userId);
    if (!sender) throw errors.notFound('No such user.');
    const { local } = await classify({ to: [{ address: recipient }], cc: [], bcc: [] });
    const users = [...local.values()].flat();
    const now = clock.now();
    if (users.length) {
      const prepared = await delivery.prepare(raw);
      await store.run((tx) => delivery.deliverIn(tx, prepared, users.map((u) => ({ userId: u.id, folderKind: 'inbox' as const })), { duplicates: 'live' }, now));
      return 'delivered';
    }
    if (!relayConfigured) return 'dropped';
    await store.run(function* (tx) {
      const blobId = yield* tx.blobs.put(userId, raw, now);
      yield* tx.outbox.enqueue({ userId, blobId, mailFrom: sender.email, recipients: [recipient] }, now);
    });
    deps.onQueued();
    return 'queued';
  }

  return { send, sendMime, sendAutomatic };
}

export type SendService = ReturnType<typeof createSendService>;
