/**
 * The app's side of app protection: `GET /v1/policy` (its policy, with an ETag), `POST /v1/policy/check-in` and
 * `POST /v1/policy/selective-wipe-ack`. The device gate and the conditional-access check run before these as before
 * every `/v1` call; the check lets these three through whatever the app's standing (service.ts ALWAYS_OPEN), since
 * they are how an app comes back into line.
 */
import type { Clock } from '../clock';
import { errors } from '../errors';
import type { Route } from '../http/table';
import { parse } from '../http/validate';
import type { DeviceSignals } from '../devices/signals';
import type { Store } from '../store/types';
import { acknowledgeSelectiveWipe, checkInSchema, judgeCheckIn, policyEtag } from './appProtection';
import { platformOf, type AccessService } from './service';

export interface AppPolicyRouteDeps {
  access: AccessService;
  store: Store;
  clock: Clock;
  signals: DeviceSignals;
}

/** `If-None-Match` lists (or `*`) the current tag: the app's copy is current. */
function matches(header: string | string[] | undefined, etag: string): boolean {
  if (typeof header !== 'string') return false;
  return header.trim() === '*' || header.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
}

export function appPolicyRoutes(d: AppPolicyRouteDeps): Route[] {
  return [
    {
      method: 'GET',
      path: '/v1/policy',
      handler: async (call) => {
        const { policy, etag } = await d.access.policyOf(call.auth);
        const headers = { ETag: etag, 'Cache-Control': 'no-cache' };
        if (matches(call.headers['if-none-match'], etag)) return { status: 304, headers };
        return { headers, body: { policy, etag } };
      },
    },
    {
      method: 'POST',
      path: '/v1/policy/check-in',
      handler: async (call) => {
        const body = parse(checkInSchema, call.body);
        const device = call.device;
        const { auth } = call;
        const { policy } = await d.access.policyOf(auth);
        const now = d.clock.now();
        if (!policy) return { body: { status: 'ok', policyEtag: policyEtag(null), policyChanged: false, nextCheckInBefore: null } };
        const previous = await d.store.access.appState(auth.tenantId, auth.userId, device.deviceId);
        const { state, outcome } = judgeCheckIn(policy, previous, body, {
          tenantId: auth.tenantId,
          userId: auth.userId,
          deviceId: device.deviceId,
          now,
          platform: platformOf(device.deviceOS, device.deviceType, device.userAgent),
        });
        const wipeStarts = outcome.kind === 'selectiveWipe' && previous?.selectiveWipe !== 'pending';
        await d.store.run(function* (tx) {
          yield* tx.access.putAppState(state);
          if (wipeStarts) {
            yield* tx.audit.append({ tenantId: auth.tenantId, at: now, actorId: null, actorName: 'system', action: 'appProtection.selectiveWipe', targetType: 'device', targetId: device.deviceId, details: { userId: auth.userId, reason: outcome.reason } });
          }
        });
        if (outcome.kind === 'upgradeRequired') throw errors.appUpgradeRequired(outcome.minimumVersion, outcome.currentVersion, outcome.which);
        if (outcome.kind === 'selectiveWipe') {
          if (wipeStarts) d.signals.recheck({ tenantId: auth.tenantId, userId: auth.userId, deviceId: device.deviceId });
          throw errors.selectiveWipeRequested(outcome.reason);
        }
        return { body: { status: 'ok', policyEtag: policyEtag(policy), policyChanged: outcome.policyChanged, nextCheckInBefore: outcome.nextCheckInBefore } };
      },
    },
    {
      method: 'POST',
      path: '/v1/policy/selective-wipe-ack',
      handler: async (call) => {
        const { auth, device } = call;
        const state = await d.store.access.appState(auth.tenantId, auth.userId, device.deviceId);
        if (!state || state.selectiveWipe !== 'pending') throw errors.invalidRequest('No selective wipe is pending for this app.');
        const now = d.clock.now();
        await d.store.run(function* (tx) {
          yield* tx.access.putAppState(acknowledgeSelectiveWipe(state, now));
          // The account's data is gone from the app; so is its sign-in: the app signs in again to use the account.
          yield* tx.refreshTokens.revokeFamily(auth.sessionId, 'selective wipe acknowledged', now);
          yield* tx.identityRecords.revokeByGrantId(auth.sessionId);
          yield* tx.audit.append({ tenantId: auth.tenantId, at: now, actorId: null, actorName: 'system', action: 'appProtection.selectiveWipeAck', targetType: 'device', targetId: device.deviceId, details: { userId: auth.userId, reason: state.selectiveWipeReason } });
        });
        return { status: 204 };
      },
    },
  ];
}

