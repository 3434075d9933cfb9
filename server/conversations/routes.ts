/**
 * Conversation routes (Organize by Thread): a folder's conversation sync and conversation-wide actions. Validation
 * happens here; the sync engine and the service own the rules. Both work on the mailbox `mailboxOf(call)` names (the
 * caller's own or a shared one), never on the caller's id directly.
 */
import { z } from 'zod';
import type { Route } from '../http/table';
import { mailboxOf } from '../http/mailbox';
import { parse } from '../http/validate';
import type { MailService } from '../mail/service';
import { DEFAULT_MAX_CHANGES, MAX_CHANGES } from '../sync/itemSync';
import { CONVERSATION_ACTIONS, type ConversationService } from './service';
import { conversationPageJson, type createConversationSync } from './sync';

const flag = z.enum(['1', '0', 'true', 'false']).transform((v) => v === '1' || v === 'true');

const ConversationSyncQuery = z.object({
  token: z.string().min(1).max(2048).optional(),
  maxChanges: z.coerce.number().int().min(1).max(MAX_CHANGES).optional(),
  loadMore: flag.optional(),
});

const folderId = z.string().min(1).max(64);
const ConversationActionBody = z.strictObject({
  action: z.enum(CONVERSATION_ACTIONS),
  folderId: folderId.optional(),
  destinationFolderId: folderId.optional(),
});

export function conversationRoutes(d: {
  conversations: ConversationService;
  syncConversations: ReturnType<typeof createConversationSync>;
  mail: MailService;
}): Route[] {
  return [
    {
      method: 'GET',
      path: '/v1/folders/:folderId/conversations/sync',
      handler: async (call) => {
        const q = parse(ConversationSyncQuery, call.query, 'query');
        const userId = mailboxOf(call);
        const folder = await d.mail.folder(userId, call.params.folderId!);
        const page = await d.syncConversations({
          userId,
          device: call.device,
          folder,
          token: q.token,
          maxChanges: q.maxChanges ?? DEFAULT_MAX_CHANGES,
          loadMore: q.loadMore ?? false,
        });
        return { json: conversationPageJson(page) }; // `body: page` would serialise every entry a second time
      },
    },
    {
      method: 'POST',
      path: '/v1/conversations/:conversationId/actions',
      idempotent: true,
      handler: async (call) => {
        const body = parse(ConversationActionBody, call.body);
        return { body: await d.conversations.act(mailboxOf(call), call.params.conversationId!, body) };
      },
    },
  ];
}
