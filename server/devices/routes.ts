/**
 * The user's device API: register the calling device, list one's own devices, remove one, acknowledge a wipe.
 */
import { z } from 'zod';
import { errors } from '../errors';
import type { Route } from '../http/table';
import { parse, text } from '../http/validate';
import type { DeviceService } from './service';

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

export function deviceRoutes(devices: DeviceService): Route[] {
  return [
    {
      method: 'GET',
      path: '/v1/devices',
      handler: async (call) => {
        const own = await devices.listOwn(call.auth.userId);
        return { body: { devices: await devices.views(own, call.auth.tenantId) } };
      },
    },
    {
      method: 'POST',
      path: '/v1/devices',
      handler: async (call) => {
        const auth = call.auth;
        const deviceId = call.deviceIdHeader;
        if (!deviceId) {
          throw errors.invalidRequest('X-Device-Id is required to register a device.', [{ field: 'X-Device-Id', message: 'required' }]);
        }
        const body = parse(Registration, call.body);
        const user = call.user;
        const { headers } = call;
        const { device, created } = await devices.register(user, deviceId, {
          friendlyName: body.friendlyName ?? null,
          deviceType: body.deviceType ?? headerText(headers['x-device-type'], 100),
          deviceModel: body.deviceModel ?? headerText(headers['x-device-model'], 100),
          deviceOS: body.deviceOS ?? headerText(headers['x-device-os'], 100),
          clientType: body.clientType ?? null,
          clientVersion: body.clientVersion ?? null,
          userAgent: headerText(headers['user-agent'], 300),
          capabilities: [...new Set(body.capabilities ?? [])],
        });
        return { status: created ? 201 : 200, body: await devices.view(device, auth.tenantId) };
      },
    },
    {
      method: 'POST',
      path: '/v1/devices/current/wipe-ack',
      handler: async (call) => {
        const { status } = parse(WipeAck, call.body);
        return { body: await devices.view(await devices.acknowledgeWipe(call.device, status), call.auth.tenantId) };
      },
    },
    {
      method: 'DELETE',
      path: '/v1/devices/:deviceId',
      handler: async (call) => {
        await devices.removeOwn(call.auth.userId, call.params.deviceId!);
        return {};
      },
    },
  ];
}
