/**
 * `GET /v1/session` (protocol.md §10): who the caller is and the limits the server enforces, so an app never has
 * to hard-code them.
 */
import type { Config } from '../config';
import type { Route } from '../http/table';
import { errors } from '../errors';
import { DEFAULT_WINDOW, MAX_CHANGES, MAX_WINDOW } from '../sync/itemSync';
import { DEFAULT_PUSH_OPTIONS } from '../push/channels';
import { sendBodyLimit } from '../send/routes';
import type { DeviceService } from '../devices/service';
import type { Regions } from '../regions';


export function sessionLimits(config: Config) {
  return {
    // The very constants that enforce these limits, so what the session advertises cannot drift from them.
    maxChangesPerPage: MAX_CHANGES,
    defaultWindow: DEFAULT_WINDOW,
    maxWindow: MAX_WINDOW,
    changeHistoryDays: Math.floor(config.changeHistory / 86400),
    maxBatchOperations: 500,
    maxRequestBytes: config.maxRequestBytes,
    // Mail has limits of its own: a message (LMTP, import, send) and the send call's JSON body (base64 attachments).
    maxMessageBytes: config.maxMessageBytes,
    maxSendRequestBytes: sendBodyLimit(config.maxMessageBytes),
    pingSeconds: [...DEFAULT_PUSH_OPTIONS.pingSeconds],
  };
}

export function sessionRoutes(config: Config, regions: Regions, devices: DeviceService): Route[] {
  const limits = sessionLimits(config);
  return [
    {
      method: 'GET',
      path: '/v1/session',
      handler: async (call) => {
        const auth = call.auth;
        const user = call.user;
        const device = call.deviceIfRegistered;
        return {
          body: {
            user: {
              id: user.id,
              tenantId: user.tenantId,
              username: user.username,
              displayName: user.displayName,
              email: user.email,
              role: user.role,
            },
            // The calling device's record (named by X-Device-Id, or the device the token is bound to) once the gate
            // has found it registered; null before registration.
            device: device ? await devices.view(device, user.tenantId) : null,
            scopes: auth.scopes,
            accessTokenExpiresAt: new Date(auth.expiresAt).toISOString(),
            // Where this mailbox lives (README, "Regions"): an app keeps using this base URL for it.
            region: regions.region,
            regionBaseUrl: regions.baseUrl,
            limits,
          },
        };
      },
    },
  ];
}
