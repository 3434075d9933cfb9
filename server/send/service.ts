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
import type { Clock } from '../clock';
import type { Config } from '../config';
import { ApiError, errors } from '../errors';
import type { Delivery, DeliveryTarget, PreparedMessage } from '../mail/delivery';
import type { Store, User } from '../store/types';
import { composeMessage, headerBlock, referencesOf, replyReferences, type OutgoingMessage, type Recipient } from './compose';
import { buildNdr } from './ndr';

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

  /** In-Reply-To and References of a reply to one of the sender's items. */
  async function threadOf(userId: string, itemId: string): Promise<OutgoingMessage['thread']> {
    const parent = await store.items.byId(userId, itemId);
    if (!parent || parent.type !== 'email') throw errors.itemNotFound('inReplyTo names no message of yours.');
    if (!parent.internetMessageId) return undefined; // nothing to thread on: the reply starts its own conversation
    const size = parent.mimeBlobId ? (await store.blobs.size(userId, parent.mimeBlobId)) ?? 0 : 0;
    const headers = parent.mimeBlobId ? headerBlock(await store.blobs.read(userId, parent.mimeBlobId, 0, Math.min(size, 64 * 1024))) : Buffer.alloc(0);
    return { inReplyTo: parent.internetMessageId, references: replyReferences(referencesOf(headers), parent.internetMessageId) };
  }

  /** Every distinct address (case-insensitive), split into local users and remote addresses. */
  async function classify(request: SendRequest) {
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

  async function send(userId: string, request: SendRequest): Promise<SendResult> {
    // What the attachments alone take in the message (base64 in 76-character lines): when that is already over the
    // limit, the answer is known without composing (which costs several copies of the message in memory).
    const atLeast = request.attachments.reduce((sum, a) => sum + base64Lines(a.content.length), 0);
    if (atLeast > config.maxMessageBytes) throw tooLarge(atLeast, config.maxMessageBytes);
    const sender = await store.users.byId(userId);
    if (!sender) throw errors.notFound('No such user.');
    const thread = request.inReplyTo ? await threadOf(userId, request.inReplyTo) : undefined;
    const now = clock.now();
    const composed = await composeMessage(
      { ...request, from: { name: sender.displayName, address: sender.email }, thread },
      config.mailHostname,
      now,
    );
    if (composed.withBcc.length > config.maxMessageBytes) throw tooLarge(composed.withBcc.length, config.maxMessageBytes);

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
    return {
      id: sentId,
      internetMessageId: composed.internetMessageId,
      localRecipients: [...local.keys()],
      queuedRecipients: queued,
      rejectedRecipients: rejected,
    };
  }

  return { send };
}

export type SendService = ReturnType<typeof createSendService>;
