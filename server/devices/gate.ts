/**
 * The device gate on every `/v1` route: `X-Device-Id` well-formed, matching the token's `did`, registered for this
 * user, and in a state that allows the call. Registration (`POST /v1/devices`) and `GET /v1/session` pass without
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

export function deviceGate(devices: DeviceService): RequestHandler {
  return (req, res, next) => {
    const auth = req.auth!;
    const header = req.headers['x-device-id'];
    const key = `${req.method} ${req.path.replace(/\/+$/, '') || '/'}`;
    if (header !== undefined) {
      if (typeof header !== 'string' || !DEVICE_ID_PATTERN.test(header)) {
        throw errors.invalidRequest('X-Device-Id must be 16 to 64 characters of A-Z, a-z, 0-9, _ and -.', [
          { field: 'X-Device-Id', message: 'malformed' },
        ]);
      }
      // A token bound to one device is not usable from another.
      if (auth.deviceId !== undefined && auth.deviceId !== header) {
        throw errors.unauthorized('The access token is bound to another device.');
      }
      req.deviceIdHeader = header;
      auth.deviceId = header;
    }
    if (UNGATED.has(key)) {
      // Registration and session need no registered device; but a registered one is still held to its state on
      // the session call (a pending wipe must reach the device on every /v1 call). Registration decides for itself.
      if (key !== 'POST /devices' && req.deviceIdHeader !== undefined) {
        req.device = devices.gateIfRegistered(auth.userId, auth.tenantId, req.deviceIdHeader);
      }
      return next();
    }
    if (req.deviceIdHeader === undefined) throw errors.deviceNotRegistered();
    const device = devices.gate(auth.userId, auth.tenantId, req.deviceIdHeader, { allowPendingWipe: key === WIPE_ACK });
    req.device = device;
    res.once('finish', () => devices.touch(device, res.statusCode < 400));
    next();
  };
}

export function callingDevice(req: Request): DeviceRecord {
  if (!req.device) throw errors.deviceNotRegistered();
  return req.device;
}
