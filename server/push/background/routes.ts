/**
 * The background push API (issue 20; channelService.ts checks and keeps the channels):
 * - `GET /v1/push/config` — what this server can deliver through: the Web Push application server key (VAPID
 *   public key) an app subscribes with, whether APNs (and which environments) and FCM (which project) are
 *   configured; null for a gateway that is not.
 * - `POST /v1/push/channels` — the calling registered device registers a Web Push subscription, an APNs device
 *   token or an FCM registration token: 201 with the channel; 200 when the device registered the same address
 *   before (a refresh: new keys, events, the current sign-in's app and session); 400 with every bad field, and for
 *   a kind the server cannot deliver through (its gateway is not configured: the field error names `kind`).
 * - `GET /v1/push/channels` — the calling device's channels.
 * - `DELETE /v1/push/channels/{channelId}` — 204; another device's or user's channel is 404, as one that exists
 *   nowhere.
 */
import type { Route } from '../../http/table';
import type { AuthContext } from '../../auth/authenticate';
import type { ChannelService } from './channelService';
import type { PushConfigView } from './gateways';

export interface BackgroundPushRouteDeps {
  channels: ChannelService;
  config: PushConfigView;
  /** The app (OAuth client) of the caller's sign-in: the channel is judged by that app's protection policy. */
  clientIdOf(auth: AuthContext): Promise<string>;
}

export function backgroundPushRoutes(d: BackgroundPushRouteDeps): Route[] {
  return [
    {
      method: 'GET',
      path: '/v1/push/config',
      handler: () => ({ headers: { 'Cache-Control': 'no-store' }, body: d.config }),
    },
    {
      method: 'POST',
      path: '/v1/push/channels',
      handler: async (call) => {
        const device = call.device;
        const registration = d.channels.parse(call.body);
        const { created, channel } = await d.channels.register(call.user, device, await d.clientIdOf(call.auth), registration);
        return { status: created ? 201 : 200, body: channel };
      },
    },
    {
      method: 'GET',
      path: '/v1/push/channels',
      handler: async (call) => ({ body: { channels: await d.channels.list(call.user, call.device) } }),
    },
    {
      method: 'DELETE',
      path: '/v1/push/channels/:channelId',
      handler: async (call) => {
        await d.channels.remove(call.user, call.device, call.params.channelId!);
        return { status: 204 };
      },
    },
  ];
}
