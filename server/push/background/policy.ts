/**
 * What background push asks of the rest of the server about a channel's owner (BackgroundPushPolicy, types.ts):
 * - how much a notification may show: the app protection policy that applies to the app that registered the
 *   channel (its `notificationContent`; 'full' when no policy applies) — server/access/service.ts;
 * - whether a sensitivity label lets a message show its sender and subject: the label's `notificationPreview` in the
 *   tenant's protection document (by default: yes without a protection template, no with one); a label the
 *   catalogue does not know (another organisation's, or one since removed) shows nothing;
 * - whether the device may still be reached: the device gate every /v1 call passes (blocked, quarantined, wipe
 *   requested or done, removed: no).
 */
import { ApiError } from '../../errors';
import type { AccessService } from '../../access/service';
import type { DeviceService } from '../../devices/service';
import type { ProtectionService } from '../../protection/service';
import { labelAllowsPreview } from '../../protection/config';
import type { BackgroundPushPolicy } from './types';

export interface PolicyDeps {
  access: Pick<AccessService, 'notificationContentFor'>;
  protection: Pick<ProtectionService, 'keyring'>;
  devices: Pick<DeviceService, 'gate'>;
}

export function createBackgroundPushPolicy(deps: PolicyDeps): BackgroundPushPolicy {
  return {
    notificationContent: (tenantId, userId, clientId) => deps.access.notificationContentFor(tenantId, userId, clientId),

    async labelAllowsPreview(tenantId, labelId) {
      const label = (await deps.protection.keyring.document(tenantId)).label(labelId);
      return label !== undefined && labelAllowsPreview(label);
    },

    async deviceReachable(userId, tenantId, deviceId) {
      try {
        await deps.devices.gate(userId, tenantId, deviceId);
        return true;
      } catch (err) {
        // The gate's refusals (not registered, blocked, quarantined, wiped): not reachable. A store failure is not an
        // answer: it propagates, and the drain tries again later.
        if (err instanceof ApiError) return false;
        throw err;
      }
    },
  };
}
