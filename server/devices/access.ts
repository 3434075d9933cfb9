/**
 * Effective access state of a device (protocol.md §3): a per-device admin decision beats the organisation's access
 * rules, which beat the organisation default. Pure functions, evaluated on every request, so a rule change applies
 * to the very next call.
 */
import type { AccessState, DeviceAccessRule, DeviceRecord, DeviceRuleField } from '../store/types';

export type AccessStateReason = 'individual' | 'rule' | 'default';

export interface EffectiveAccess {
  state: AccessState;
  reason: AccessStateReason;
  ruleId?: string;
}

const RESTRICTIVENESS: Record<AccessState, number> = { allowed: 0, quarantined: 1, blocked: 2 };

function fieldValue(device: Pick<DeviceRecord, DeviceRuleField>, field: DeviceRuleField): string | null {
  return device[field];
}

export function ruleMatches(rule: DeviceAccessRule, device: Pick<DeviceRecord, DeviceRuleField>): boolean {
  const value = fieldValue(device, rule.field);
  if (value === null) return false;
  const a = value.toLowerCase();
  const b = rule.value.toLowerCase();
  return rule.match === 'exact' ? a === b : a.startsWith(b);
}

/**
 * The rule that decides, when several match: an exact match beats a prefix match (it says more about the device),
 * and among equals the most restrictive state wins, so adding an allow rule can never loosen a block by accident.
 */
export function decidingRule(rules: DeviceAccessRule[], device: Pick<DeviceRecord, DeviceRuleField>): DeviceAccessRule | undefined {
  let best: DeviceAccessRule | undefined;
  for (const rule of rules) {
    if (!ruleMatches(rule, device)) continue;
    if (
      !best ||
      (rule.match === 'exact' && best.match === 'prefix') ||
      (rule.match === best.match && RESTRICTIVENESS[rule.accessState] > RESTRICTIVENESS[best.accessState])
    ) {
      best = rule;
    }
  }
  return best;
}

export function effectiveAccess(
  device: Pick<DeviceRecord, DeviceRuleField | 'adminDecision'>,
  rules: DeviceAccessRule[],
  defaultState: AccessState,
): EffectiveAccess {
  if (device.adminDecision) return { state: device.adminDecision, reason: 'individual' };
  const rule = decidingRule(rules, device);
  if (rule) return { state: rule.accessState, reason: 'rule', ruleId: rule.id };
  return { state: defaultState, reason: 'default' };
}
