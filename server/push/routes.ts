/**
 * The push routes: `GET /v1/events` (SSE) and `POST /v1/ping` (long-poll). Both sit behind authentication and the
 * device gate like every `/v1` route; validation happens here, the channels own the rest.
 */
import { Router, type Request } from 'express';
import { z } from 'zod';
import { ApiError, errors } from '../errors';
import { route } from '../http/routes';
import { jsonBody } from '../http/body';
import { parse } from '../http/validate';
import { callingDevice } from '../devices/gate';
import type { Folder } from '../store/types';
import type { Caller, PushContext } from './channels';
import { EventStream, SSE_HEADERS } from './events';
import { PingWait } from './ping';

/** Exchange ActiveSync's default cap on folders in one Ping. */
export const MAX_PING_FOLDERS = 300;

const Ping = z.strictObject({
  folderIds: z.array(z.string().min(1).max(64)).min(1).max(MAX_PING_FOLDERS),
  heartbeatSeconds: z.number().int(),
});

function callerOf(ctx: PushContext, req: Request): Caller {
  const auth = req.auth!;
  const device = callingDevice(req);
  const user = ctx.store.users.byId(auth.userId);
  if (!user) throw errors.unauthorized('The access token has been revoked.');
  return {
    userId: auth.userId,
    tenantId: auth.tenantId,
    deviceId: device.deviceId,
    recordId: device.id,
    expiresAt: auth.expiresAt,
    sessionVersion: user.sessionVersion,
  };
}

export function pushRoutes(ctx: PushContext, limits: { maxRequestBytes: number; maxJsonDepth: number }): Router {
  const router = Router();

  route(router, '/v1/events', {
    get: (req, res) => {
      if (req.method === 'HEAD') {
        // What a stream would answer, without opening one (HEAD must not take the device's channel).
        for (const [name, value] of Object.entries(SSE_HEADERS)) res.setHeader(name, value);
        res.status(200).end();
        return;
      }
      const lastEventId = req.headers['last-event-id'];
      new EventStream(ctx, callerOf(ctx, req), req, res).start(typeof lastEventId === 'string' ? lastEventId : undefined);
    },
  });

  route(router, '/v1/ping', {
    post: [
      ...jsonBody(limits.maxRequestBytes, limits.maxJsonDepth),
      (req, res, next) => {
        const body = parse(Ping, req.body);
        const [lo, hi] = ctx.options.pingSeconds;
        if (body.heartbeatSeconds < lo || body.heartbeatSeconds > hi) {
          throw errors.invalidRequest(`heartbeatSeconds must be between ${lo} and ${hi} seconds.`, [
            { field: 'heartbeatSeconds', message: `must be between ${lo} and ${hi}` },
          ]);
        }
        const caller = callerOf(ctx, req);
        const folders: Folder[] = [];
        for (const id of new Set(body.folderIds)) {
          const folder = ctx.store.folders.byId(caller.userId, id);
          // Another user's folder id is not found either.
          if (!folder) throw new ApiError(404, 'folderNotFound', `No such folder: ${id}.`);
          folders.push(folder);
        }
        new PingWait(ctx, caller, folders, res, next).start(body.heartbeatSeconds);
      },
    ],
  });

  return router;
}
