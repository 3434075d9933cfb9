/**
 * `POST /admin/v1/users/{id}/messages` (admins only): imports one raw RFC 5322 message into a user's mailbox, through
 * the same import rules as the CLI (server/mail/import.ts) and so the same delivery path as LMTP. The message is
 * dated by its Date header, and sending it again is harmless: a message the folder already holds (same Message-ID,
 * or same bytes without one) answers 200 `duplicate` and stores nothing. A stored message is audited.
 */
import { z } from 'zod';
import type { Route } from '../http/table';
import { parse } from '../http/validate';
import type { Importer } from '../mail/import';

const ImportQuery = z.strictObject({ folderId: z.string().min(1).max(64).optional() });

export function adminMessageRoutes(deps: { importer: Importer; maxMessageBytes: number }): Route[] {
  const { importer } = deps;
  return [
    {
      method: 'POST',
      path: '/admin/v1/users/:id/messages',
      // The bytes as they came: a message is not text in any one charset, and its hash decides duplicates.
      body: { raw: 'message/rfc822' },
      bodyLimit: deps.maxMessageBytes,
      handler: async (call) => {
        const query = parse(ImportQuery, call.query, 'query');
        const raw = Buffer.isBuffer(call.body) ? call.body : Buffer.alloc(0);
        const result = await importer.importForAdmin(call.auth, call.params.id!, raw, query.folderId);
        return { status: result.status === 'stored' ? 201 : 200, body: { id: result.itemId, status: result.status, folderId: result.folderId } };
      },
    },
  ];
}
