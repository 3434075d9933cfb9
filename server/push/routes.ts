/**
 * The push routes: `GET /v1/events` (SSE) and `POST /v1/ping` (long-poll). Both sit behind authentication and the
 * device gate like every `/v1` route; validation happens here, the channels own the rest. Both act on a mailbox:
 * with `X-Mailbox` they watch a shared mailbox the caller is a full-access member of (the table resolves it, and
 * answers 404 mailboxNotFound for anyone else, before the handler runs).
 */
import { z } from 'zod';
import { errors } from '../errors';
import type { Call, Route } from '../http/table';
import { mailboxOf } from '../http/mailbox';
import { parse } from '../http/validate';
import type { Caller, PushContext } from './channels';
import { EventStream, SSE_HEADERS } from './events';
import { PingWait, watchedFolders } from './ping';

/** Exchange ActiveSync's default cap on folders in one Ping. */
export const MAX_PING_FOLDERS = 300;

const Ping = z.strictObject({
  folderIds: z.array(z.string().min(1).max(64)).min(1).max(MAX_PING_FOLDERS),
  heartbeatSeconds: z.number().int(),
});

function callerOf(call: Call): Caller {
  const auth = call.auth;
  const device = call.device;
  return {
    userId: auth.userId,
    mailboxId: mailboxOf(call),
    tenantId: auth.tenantId,
    deviceId: device.deviceId,
    recordId: device.id,
    expiresAt: auth.expiresAt,
    sessionVersion: call.user.sessionVersion,
    auth,
    ip: call.ip,
  };
}

export function pushRoutes(ctx: PushContext): Route[] {
  return [
    {
      method: 'GET',
      path: '/v1/events',
      mailbox: true,
      handler: async (call) => {
        // What a stream would answer, without opening one (HEAD must not take the device's channel).
        if (call.method === 'HEAD') return { status: 200, headers: SSE_HEADERS };
        const lastEventId = call.headers['last-event-id'];
        const events = new EventStream(ctx, callerOf(call), call.requestId);
        await events.start(typeof lastEventId === 'string' ? lastEventId : undefined);
        return { status: 200, headers: SSE_HEADERS, stream: events.body };
      },
    },
    {
      method: 'POST',
      path: '/v1/ping',
      mailbox: true,
      handler: async (call) => {
        const body = parse(Ping, call.body);
        const [lo, hi] = ctx.options.pingSeconds;
        if (body.heartbeatSeconds < lo || body.heartbeatSeconds > hi) {
          throw errors.invalidRequest(`heartbeatSeconds must be between ${lo} and ${hi} seconds.`, [
            { field: 'heartbeatSeconds', message: `must be between ${lo} and ${hi}` },
          ]);
        }
        const caller = callerOf(call);
        const folders = await watchedFolders(ctx, caller.mailboxId, body.folderIds);
        const changed = await new PingWait(ctx, caller, folders).start(body.heartbeatSeconds, call.signal);
        return { status: 200, headers: { 'Cache-Control': 'no-store' }, body: { changed } };
      },
    },
  ];
}
