/**
 * The wire shape of a conversation as one folder holds it (Organize by Thread): the folder's conversation row
 * (server/store/types.ts ConversationRecord) with what an app shows of its latest message. One function, so sync
 * pages and anything else answering conversations agree field for field — the conversation convergence property
 * compares exactly these objects.
 */
import type { ConversationRecord, EmailAddress, Item } from '../store/types';

export interface ConversationView {
  /** The conversation id (a message without one is a conversation of its own, named by its item id). */
  id: string;
  folderId: string;
  /** Of the latest message in the folder. */
  subject: string;
  preview: string;
  from: EmailAddress | null;
  /** Distinct senders, newest message first, at most 10. */
  participants: EmailAddress[];
  latestReceivedAt: string;
  latestItemId: string;
  messageCount: number;
  unreadCount: number;
  flaggedCount: number;
  hasAttachments: boolean;
  importance: 'low' | 'normal' | 'high';
  inferenceClassification: 'focused' | 'other';
  /** Opaque; changes whenever anything about the conversation in this folder does. */
  changeKey: string;
}

/**
 * The row's modseq names its version: every change to one of the folder's messages of the conversation stamps the
 * row (store contract), so the modseq moves exactly when the row or its latest message can have changed. Base 36
 * and prefixed, so an app does not take it for a count.
 */
export const conversationChangeKey = (modseq: number): string => `c${modseq.toString(36)}`;

/**
 * `latest`: the item `record.latestItemId` names, read in the same snapshot. Missing only if the store broke its own
 * contract; the conversation is still shown, from its counts, rather than failing a whole sync page.
 */
export function conversationView(record: ConversationRecord, latest: Item | undefined): ConversationView {
  return {
    id: record.conversationId,
    folderId: record.folderId,
    subject: latest?.subject ?? '',
    preview: latest?.preview ?? '',
    from: latest?.from ?? null,
    participants: record.participants,
    latestReceivedAt: new Date(record.latestReceivedAt).toISOString(),
    latestItemId: record.latestItemId,
    messageCount: record.messageCount,
    unreadCount: record.unreadCount,
    flaggedCount: record.flaggedCount,
    hasAttachments: record.hasAttachments,
    importance: record.importance,
    inferenceClassification: latest?.inferenceClassification ?? 'focused',
    changeKey: conversationChangeKey(record.modseq),
  };
}
