/**
 * The device gate on every `/v1` route: `X-Device-Id` well-formed, matching the token's bound device, registered
 * for this user, and in a state that allows the call. Registration (`POST /v1/devices`) and `GET /v1/session` pass without
 * a registered device (an app must be able to register, and to ask who it is); the wipe acknowledgement passes
 * with a pending wipe (it is how the device confirms it).
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { RequestHandler } from 'express';
import type { AuthContext } from '../auth/authenticate';
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

const callKey = (method: string, path: string) => `${method} ${path.replace(/\/+$/, '') || '/'}`;

/**
 * Whether the gate admits calls of `method` on `path` (below `/v1`) without a registered device: registration and
 * the session call. Such calls do not count as the device's last-seen syncs.
 */
export function admitsWithoutDevice(method: string, path: string): boolean {
  return UNGATED.has(callKey(method, path));
}

/**
 * Conditional access and app protection on a call the gate admitted (server/access/service.ts `checkCall`): throws
 * the refusal. `ip` is read only when a policy needs it.
 */
export type AccessCheck = (input: { auth: AuthContext; device: DeviceRecord | undefined; method: string; path: string; ip: string | undefined }) => Promise<void>;

export interface GateAccess {
  check: AccessCheck;
  ip(): string | undefined;
}

/** What the gate settled for one call: the device it is made for (when registered) and a well-formed header. */
export interface GateVerdict {
  device?: DeviceRecord;
  deviceIdHeader?: string;
}

/**
 * Reads `X-Device-Id` and settles which device the call is made for: the header when present (it must be
 * well-formed, and match the device the token is bound to), else the token's bound device. A device-bound token is
 * therefore judged by its device's state whether or not the app sends the header.
 */
function callingDeviceId(auth: AuthContext, headers: IncomingHttpHeaders, verdict: GateVerdict): string | undefined {
  const header = headers['x-device-id'];
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
    verdict.deviceIdHeader = header;
  }
  auth.deviceId = verdict.deviceIdHeader ?? auth.boundDeviceId;
  return auth.deviceId;
}

/**
 * The `/v1` gate for one call, free of any HTTP framework (the Express chain and the fast lane run the same code).
 * `path` is below `/v1` (`/folders/sync`). Rejects with the device's refusal; resolves with the admitted device
 * otherwise.
 */
export async function gateCall(devices: DeviceService, method: string, path: string, headers: IncomingHttpHeaders, auth: AuthContext, access?: GateAccess): Promise<GateVerdict> {
  const verdict = await deviceVerdict(devices, method, path, headers, auth);
  // After the device's own state: a blocked or wiped device is told that first, whatever the policies say.
  if (access) await access.check({ auth, device: verdict.device, method, path, ip: access.ip() });
  return verdict;
}

async function deviceVerdict(devices: DeviceService, method: string, path: string, headers: IncomingHttpHeaders, auth: AuthContext): Promise<GateVerdict> {
  const verdict: GateVerdict = {};
  const key = callKey(method, path);
  const deviceId = callingDeviceId(auth, headers, verdict);
  if (UNGATED.has(key)) {
    // Registration and session need no registered device; but a registered one is still held to its state on
    // the session call (a pending wipe must reach the device on every /v1 call). Registration decides for itself.
    if (key !== 'POST /devices' && deviceId !== undefined) {
      verdict.device = await devices.gateIfRegistered(auth.userId, auth.tenantId, deviceId);
    }
    return verdict;
  }
  if (deviceId === undefined) throw errors.deviceNotRegistered();
  verdict.device = await devices.gate(auth.userId, auth.tenantId, deviceId, { allowPendingWipe: key === WIPE_ACK });
  return verdict;
}

export function deviceGate(devices: DeviceService, check?: AccessCheck): RequestHandler {
  return async (req, res, next) => {
    const verdict = await gateCall(devices, req.method, req.path, req.headers, req.auth!, check && { check, ip: () => req.ip });
    req.deviceIdHeader = verdict.deviceIdHeader;
    req.device = verdict.device;
    const { device } = verdict;
    // Last-seen times: gated calls only (the session call and registration are not syncs).
    if (device && !admitsWithoutDevice(req.method, req.path)) {
      res.once('finish', () => devices.touch(device, res.statusCode < 400));
    }
    next();
  };
}

/**
 * The same rule on `/admin`: an administrator's token bound to a device (or a call naming its device) is refused
 * while that device is blocked, quarantined, wiped or has a wipe pending. Admin tools need no registered device.
 */
export function adminDeviceGate(devices: DeviceService): RequestHandler {
  return async (req, _res, next) => {
    const auth = req.auth!;
    const verdict: GateVerdict = {};
    const deviceId = callingDeviceId(auth, req.headers, verdict);
    req.deviceIdHeader = verdict.deviceIdHeader;
    if (deviceId !== undefined) req.device = await devices.gateIfRegistered(auth.userId, auth.tenantId, deviceId);
    next();
  };
}
