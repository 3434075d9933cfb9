/**
 * The device gate on every `/v1` route: `X-Device-Id` well-formed, matching the token's bound device, registered
 * for this user, and in a state that allows the call. Registration (`POST /v1/devices`) and `GET /v1/session` pass without
 * a registered device (an app must be able to register, and to ask who it is); the wipe acknowledgement passes
 * with a pending wipe (it is how the device confirms it).
 */
import type { Request, RequestHandler } from 'express';
import { errors } from '../errors';
import type { DeviceRecord } from '../store/types';
import { DEVICE_ID_PATTERN, type DeviceService } from './service';

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** The calling device's record, once the gate has passed it. */
      device?: DeviceRecord;
      /** The calling device's id from `X-Device-Id`, when present and well-formed. */
      deviceIdHeader?: string;
    }
  }
}

const UNGATED = new Set(['POST /devices', 'GET /session', 'HEAD /session']);
const WIPE_ACK = 'POST /devices/current/wipe-ack';

/**
 * Reads `X-Device-Id` and settles which device the call is made for: the header when present (it must be
 * well-formed, and match the device the token is bound to), else the token's bound device. A device-bound token is
 * therefore judged by its device's state whether or not the app sends the header.
 */
function callingDeviceId(req: Request): string | undefined {
  const auth = req.auth!;
  const header = req.headers['x-device-id'];
  if (header !== undefined) {
    if (typeof header !== 'string' || !DEVICE_ID_PATTERN.test(header)) {
      throw errors.invalidRequest('X-Device-Id must be 16 to 64 characters of A-Z, a-z, 0-9, _ and -.', [
        { field: 'X-Device-Id', message: 'malformed' },
      ]);
    }
    // A token bound to one device is not usable from another.
    if (auth.boundDeviceId !== undefined && auth.boundDeviceId !== header) {
      throw errors.unauthorized('The access token is bound to another device.');
    }
    req.deviceIdHeader = header;
  }
  auth.deviceId = req.deviceIdHeader ?? auth.boundDeviceId;
  return auth.deviceId;
}

export function deviceGate(devices: DeviceService): RequestHandler {
  return (req, res, next) => {
    const auth = req.auth!;
    const key = `${req.method} ${req.path.replace(/\/+$/, '') || '/'}`;
    const deviceId = callingDeviceId(req);
    if (UNGATED.has(key)) {
      // Registration and session need no registered device; but a registered one is still held to its state on
      // the session call (a pending wipe must reach the device on every /v1 call). Registration decides for itself.
      if (key !== 'POST /devices' && deviceId !== undefined) {
        req.device = devices.gateIfRegistered(auth.userId, auth.tenantId, deviceId);
      }
      return next();
    }
    if (deviceId === undefined) throw errors.deviceNotRegistered();
    const device = devices.gate(auth.userId, auth.tenantId, deviceId, { allowPendingWipe: key === WIPE_ACK });
    req.device = device;
    res.once('finish', () => devices.touch(device, res.statusCode < 400));
    next();
  };
}

/**
 * The same rule on `/admin`: an administrator's token bound to a device (or a call naming its device) is refused
 * while that device is blocked, quarantined, wiped or has a wipe pending. Admin tools need no registered device.
 */
export function adminDeviceGate(devices: DeviceService): RequestHandler {
  return (req, _res, next) => {
    const auth = req.auth!;
    const deviceId = callingDeviceId(req);
    if (deviceId !== undefined) req.device = devices.gateIfRegistered(auth.userId, auth.tenantId, deviceId);
    next();
  };
}

export function callingDevice(req: Request): DeviceRecord {
  if (!req.device) throw errors.deviceNotRegistered();
  return req.device;
}
