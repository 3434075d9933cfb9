/**
 * "My devices" API for the web page (and anyone signed in): the caller's own devices with their last sync, a wipe
 * of a lost one and removal of an old one. Devices are named by their record id (`id` of the view), as in the admin
 * API; another user's id is simply not found (404), never forbidden, so ids of others' devices cannot be probed.
 * Served under /account/v1, which accepts the web session cookie (web/cookieAuth.ts) or a bearer token, and needs
 * no registered device: this is the user's control panel, not an app's sync.
 */
import { z } from 'zod';
import { errors } from '../errors';
import type { Route } from '../http/table';
import { parse, text } from '../http/validate';
import type { DeviceService } from '../devices/service';
import type { DeviceRecord } from '../store/types';

/** The name a person knows the device by: what the page shows and the wipe confirmation must repeat. */
export const deviceName = (d: Pick<DeviceRecord, 'friendlyName' | 'deviceModel' | 'deviceId'>) => d.friendlyName || d.deviceModel || d.deviceId;

const WipeConfirmation = z.strictObject({ confirm: text(200) });

export function accountRoutes(devices: DeviceService): Route[] {
  const own = async (userId: string, id: string) => {
    const device = (await devices.listOwn(userId)).find((d) => d.id === id);
    if (!device) throw errors.notFound('No such device.');
    return device;
  };
  return [
    {
      method: 'GET',
      path: '/account/v1/devices',
      handler: async (call) => {
        await devices.flushLastSeen(); // the user sees the sync their phone made a moment ago
        const list = await devices.views(await devices.listOwn(call.auth.userId), call.auth.tenantId);
        return { body: { devices: list.map((v) => ({ ...v, name: deviceName(v) })) } };
      },
    },
    {
      method: 'POST',
      path: '/account/v1/devices/:id/wipe',
      handler: async (call) => {
        const { confirm } = parse(WipeConfirmation, call.body);
        const device = await own(call.auth.userId, call.params.id!);
        // The confirmation names the device: a wipe meant for another of one's devices is never carried out.
        if (confirm !== deviceName(device)) throw errors.invalidRequest('The confirmation does not name this device.', [{ field: 'confirm', message: 'must be the device name' }]);
        return { body: await devices.wipeOwn(call.user, device.id) };
      },
    },
    {
      method: 'DELETE',
      path: '/account/v1/devices/:id',
      handler: async (call) => {
        const device = await own(call.auth.userId, call.params.id!);
        await devices.removeOwn(call.auth.userId, device.deviceId);
        return {};
      },
    },
  ];
}
