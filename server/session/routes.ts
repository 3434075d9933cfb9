/**
 * `GET /v1/session` (protocol.md §10): who the caller is and the limits the server enforces, so an app never has
 * to hard-code them.
 */
import { Router } from 'express';
import type { Config } from '../config';
import { route } from '../http/routes';
import { errors } from '../errors';
import type { Store } from '../store/types';
import type { DeviceService } from '../devices/service';

export const WINDOW = { defaultWindow: 500, maxWindow: 1000, maxChangesPerPage: 512 } as const;

export function sessionLimits(config: Config) {
  return {
    maxChangesPerPage: WINDOW.maxChangesPerPage,
    defaultWindow: WINDOW.defaultWindow,
    maxWindow: WINDOW.maxWindow,
    changeHistoryDays: Math.floor(config.changeHistory / 86400),
    maxBatchOperations: 500,
    maxRequestBytes: config.maxRequestBytes,
    pingSeconds: [60, 1740],
  };
}

export function sessionRoutes(store: Store, config: Config, devices: DeviceService): Router {
  const router = Router();
  const limits = sessionLimits(config);
  route(router, '/v1/session', {
    get: (req, res) => {
      const auth = req.auth!;
      const user = store.users.byId(auth.userId);
      if (!user) throw errors.unauthorized('The account no longer exists.');
      res.json({
        user: {
          id: user.id,
          tenantId: user.tenantId,
          username: user.username,
          displayName: user.displayName,
          email: user.email,
          role: user.role,
        },
        // The calling device's record when X-Device-Id names a registered one; null before registration.
        device: (() => {
          const d = req.deviceIdHeader ? store.devices.byUserAndDeviceId(user.id, req.deviceIdHeader) : undefined;
          return d ? devices.view(d, user.tenantId) : null;
        })(),
        scopes: auth.scopes,
        accessTokenExpiresAt: new Date(auth.expiresAt).toISOString(),
        limits,
      });
    },
  });
  return router;
}
