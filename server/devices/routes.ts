/**
 * The user's device API: register the calling device, list one's own devices, remove one, acknowledge a wipe.
 */
import { Router } from 'express';
import { z } from 'zod';
import { errors } from '../errors';
import { route } from '../http/routes';
import { jsonBody } from '../http/body';
import { parse, text } from '../http/validate';
import type { Store } from '../store/types';
import type { DeviceService } from './service';
import { callingDevice } from './gate';

const Registration = z.strictObject({
  friendlyName: text(200).optional(),
  deviceType: text(100).optional(),
  deviceModel: text(100).optional(),
  deviceOS: text(100).optional(),
  clientType: text(100).optional(),
  clientVersion: text(50).optional(),
  capabilities: z.array(z.string().regex(/^[A-Za-z0-9._-]{1,40}$/, 'must be a short token')).max(32).optional(),
});

const WipeAck = z.strictObject({ status: z.enum(['ok', 'failed']) });

/** Descriptive headers fill what the body leaves out (protocol.md §3). */
function headerText(value: string | string[] | undefined, max: number): string | null {
  if (typeof value !== 'string' || value === '') return null;
  return value.slice(0, max).replace(/[\u0000-\u001f\u007f]/g, '');
}

export function deviceRoutes(store: Store, devices: DeviceService, limits: { maxRequestBytes: number; maxJsonDepth: number }): Router {
  const router = Router();
  const json = jsonBody(limits.maxRequestBytes, limits.maxJsonDepth);

  route(router, '/v1/devices', {
    get: (req, res) => {
      const auth = req.auth!;
      res.json({ devices: devices.listOwn(auth.userId).map((d) => devices.view(d, auth.tenantId)) });
    },
    post: [
      ...json,
      (req, res) => {
        const auth = req.auth!;
        if (!req.deviceIdHeader) {
          throw errors.invalidRequest('X-Device-Id is required to register a device.', [{ field: 'X-Device-Id', message: 'required' }]);
        }
        const body = parse(Registration, req.body);
        const user = store.users.byId(auth.userId);
        if (!user) throw errors.unauthorized('The account no longer exists.');
        const { device, created } = devices.register(user, req.deviceIdHeader, {
          friendlyName: body.friendlyName ?? null,
          deviceType: body.deviceType ?? headerText(req.headers['x-device-type'], 100),
          deviceModel: body.deviceModel ?? headerText(req.headers['x-device-model'], 100),
          deviceOS: body.deviceOS ?? headerText(req.headers['x-device-os'], 100),
          clientType: body.clientType ?? null,
          clientVersion: body.clientVersion ?? null,
          userAgent: headerText(req.headers['user-agent'], 300),
          capabilities: [...new Set(body.capabilities ?? [])],
        });
        res.status(created ? 201 : 200).json(devices.view(device, auth.tenantId));
      },
    ],
  });

  route(router, '/v1/devices/current/wipe-ack', {
    post: [
      ...json,
      (req, res) => {
        const { status } = parse(WipeAck, req.body);
        const device = devices.acknowledgeWipe(callingDevice(req), status);
        res.json(devices.view(device, req.auth!.tenantId));
      },
    ],
  });

  route(router, '/v1/devices/:deviceId', {
    delete: (req, res) => {
      devices.removeOwn(req.auth!.userId, String(req.params.deviceId));
      res.status(204).end();
    },
  });

  return router;
}
