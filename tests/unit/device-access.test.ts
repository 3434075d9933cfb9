import { decidingRule, effectiveAccess } from '../../server/devices/access';
import type { DeviceAccessRule } from '../../server/store/types';

const rule = (over: Partial<DeviceAccessRule>): DeviceAccessRule => ({
  id: over.id ?? 'r', tenantId: 't', field: 'deviceModel', match: 'exact', value: 'x', accessState: 'allowed', description: '', createdAt: 0, updatedAt: 0, ...over,
});
const device = { deviceType: 'Phone', deviceModel: 'Pixel 10 Pro', deviceOS: 'Android 17', userAgent: 'PigeonMail/2.1', clientType: 'PigeonMail', adminDecision: null };

test('no rule: the organisation default, reason default', () => {
  expect(effectiveAccess(device, [], 'quarantined')).toEqual({ state: 'quarantined', reason: 'default' });
});

test('prefix and exact matching are case-insensitive; null fields never match', () => {
  expect(decidingRule([rule({ match: 'prefix', value: 'pixel' })], device)?.id).toBe('r');
  expect(decidingRule([rule({ match: 'exact', value: 'pixel 10 pro' })], device)?.id).toBe('r');
  expect(decidingRule([rule({ match: 'exact', value: 'Pixel 10' })], device)).toBeUndefined();
  expect(decidingRule([rule({ field: 'deviceOS', match: 'prefix', value: '' })], { ...device, deviceOS: null })).toBeUndefined();
});

test('exact beats prefix; among equals the most restrictive wins', () => {
  const rules = [
    rule({ id: 'allow-prefix', match: 'prefix', value: 'Pixel', accessState: 'allowed' }),
    rule({ id: 'block-prefix', field: 'userAgent', match: 'prefix', value: 'PigeonMail/2', accessState: 'blocked' }),
    rule({ id: 'quarantine-prefix', field: 'deviceOS', match: 'prefix', value: 'Android', accessState: 'quarantined' }),
  ];
  expect(decidingRule(rules, device)?.id).toBe('block-prefix');
  const withExact = [...rules, rule({ id: 'allow-exact', value: 'Pixel 10 Pro', accessState: 'allowed' })];
  expect(effectiveAccess(device, withExact, 'blocked')).toEqual({ state: 'allowed', reason: 'rule', ruleId: 'allow-exact' });
});

test('an individual decision beats every rule', () => {
  const rules = [rule({ value: 'Pixel 10 Pro', accessState: 'allowed' })];
  expect(effectiveAccess({ ...device, adminDecision: 'blocked' }, rules, 'allowed')).toEqual({ state: 'blocked', reason: 'individual' });
});
