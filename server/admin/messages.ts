/**
 * `POST /admin/v1/users/{id}/messages` (admins only): imports one raw RFC 5322 message into a user's mailbox, through
 * the same import rules as the CLI (server/mail/import.ts) and so the same delivery path as LMTP. The message is
 * dated by its Date header, and sending it again is harmless: a message the folder already holds (same Message-ID,
 * or same bytes without one) answers 200 `duplicate` and stores nothing. A stored message is audited.
 */
import express, { Router, type Request } from 'express';
import { z } from 'zod';
import { errors } from '../errors';
import { route } from '../http/routes';
import { parse } from '../http/validate';
import type { Clock } from '../clock';
import type { Store } from '../store/types';
import type { Importer } from '../mail/import';

const ImportQuery = z.strictObject({ folderId: z.string().min(1).max(64).optional() });

export function adminMessageRoutes(deps: { store: Store; clock: Clock; importer: Importer; maxMessageBytes: number }): Router {
  const { store, clock, importer } = deps;
  const router = Router();
  // The bytes as they came: a message is not text in any one charset, and its hash decides duplicates.
  const rawBody = express.raw({ type: () => true, limit: deps.maxMessageBytes });

  route(router, '/admin/v1/users/:id/messages', {
    post: [
      (req, _res, next) => {
        // The header itself, not req.is(): that answers "no type" for a request without a body, which is a 400 here.
        const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
        if (type !== 'message/rfc822') throw errors.unsupportedMediaType('message/rfc822');
        next();
      },
      rawBody,
      async (req: Request, res) => {
        const query = parse(ImportQuery, req.query, 'query');
        const admin = req.auth!;
        const user = store.users.byId(String(req.params.id));
        // Another tenant's user is no more visible to this admin than a user who does not exist.
        if (!user || user.tenantId !== admin.tenantId) throw errors.notFound('No such user.');
        const target = importer.resolveTarget(user, query.folderId);
        const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
        const message = await importer.prepare(raw);

        const result = store.transaction(() => {
          const delivered = importer.deliver(target, message);
          if (delivered.status === 'stored') {
            store.audit.append({
              tenantId: admin.tenantId,
              at: clock.now(),
              actorId: admin.userId,
              actorName: store.users.byId(admin.userId)?.username ?? admin.userId,
              action: 'message.import',
              targetType: 'user',
              targetId: user.id,
              details: { itemId: delivered.itemId, folderId: delivered.folderId, internetMessageId: message.parsed.internetMessageId },
            });
          }
          return delivered;
        });
        res.status(result.status === 'stored' ? 201 : 200).json({ id: result.itemId, status: result.status, folderId: result.folderId });
      },
    ],
  });

  return router;
}
