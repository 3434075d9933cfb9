/**
 * Sign-in risk (server/access/risk.ts): each signal and its documented weight, the score cap and level thresholds,
 * network comparison by /24 and /48 (IPv4-mapped addresses as IPv4), the administrator's confirm/dismiss, and the
 * property that one more signal never lowers the level.
 */
import fc from 'fast-check';
import {
  assessSignInRisk,
  effectiveRisk,
  networkOf,
  RISK_LEVEL_THRESHOLDS,
  RISK_WEIGHTS,
  riskLevelOf,
  type SignInRiskInput,
} from '../../server/access/risk';
import type { SignInRisk } from '../../server/access/policies';
import type { UserRisk } from '../../server/store/types';

const RUNS = Number(process.env.RISK_RUNS ?? 300);

const HISTORY = {
  deviceIds: ['dev-home', 'dev-phone'],
  clientIds: ['com.example.mail', 'web'],
  ips: ['198.51.100.23', '2001:db8:aaaa:1::5', '::ffff:203.0.113.9'],
};

/** A familiar sign-in: known device, client and network, no failures. */
function input(over: Partial<SignInRiskInput> = {}): SignInRiskInput {
  return {
    history: HISTORY,
    failuresLast15Min: 0,
    deviceId: 'dev-phone',
    clientId: 'com.example.mail',
    ip: '198.51.100.200',
    firstSignIn: false,
    ...over,
  };
}

describe('documented weights', () => {
  test('RISK_WEIGHTS and thresholds are the ones the design documents', () => {
    expect(RISK_WEIGHTS).toEqual({
      failedAttemptBurst: [
        { atLeast: 10, weight: 60 },
        { atLeast: 5, weight: 40 },
      ],
      newDevice: 20,
      newNetwork: 20,
      unfamiliarClient: 15,
    });
    expect(RISK_LEVEL_THRESHOLDS).toEqual({ high: 60, medium: 35, low: 15 });
  });

  test.each([
    [0, 'none'],
    [14, 'none'],
    [15, 'low'],
    [34, 'low'],
    [35, 'medium'],
    [59, 'medium'],
    [60, 'high'],
    [100, 'high'],
  ] as Array<[number, SignInRisk]>)('score %d is %s', (score, level) => {
    expect(riskLevelOf(score)).toBe(level);
  });
});

describe('assessSignInRisk', () => {
  const cases: Array<[string, Partial<SignInRiskInput>, SignInRisk, number, string[]]> = [
    ['familiar everything', {}, 'none', 0, []],
    ['4 failures: no burst', { failuresLast15Min: 4 }, 'none', 0, []],
    ['5 failures', { failuresLast15Min: 5 }, 'medium', 40, ['failedAttemptBurst']],
    ['9 failures', { failuresLast15Min: 9 }, 'medium', 40, ['failedAttemptBurst']],
    ['10 failures', { failuresLast15Min: 10 }, 'high', 60, ['failedAttemptBurst']],
    ['a new device', { deviceId: 'dev-new' }, 'low', 20, ['newDevice']],
    ['an unfamiliar client', { clientId: 'com.other.app' }, 'low', 15, ['unfamiliarClient']],
    ['a new IPv4 /24', { ip: '198.51.101.23' }, 'low', 20, ['newNetwork']],
    ['same IPv4 /24, other host', { ip: '198.51.100.1' }, 'none', 0, []],
    ['same /48, other IPv6 subnet', { ip: '2001:db8:aaaa:ffff::1' }, 'none', 0, []],
    ['same /48 written in full', { ip: '2001:0db8:aaaa:0000:0000:0000:0000:0001' }, 'none', 0, []],
    ['a new IPv6 /48', { ip: '2001:db8:aaab::5' }, 'low', 20, ['newNetwork']],
    ['an IPv4-mapped address of a known /24', { ip: '::ffff:198.51.100.7' }, 'none', 0, []],
    ['the plain IPv4 of a /24 seen mapped', { ip: '203.0.113.77' }, 'none', 0, []],
    ['an IPv4-mapped address in hex', { ip: '::ffff:cb00:7101' }, 'none', 0, []],
    ['IPv6 sharing the bits of a known IPv4 is still new', { ip: '::c633:6417' }, 'low', 20, ['newNetwork']],
    ['device and network new', { deviceId: 'x', ip: '192.0.2.1' }, 'medium', 40, ['newDevice', 'newNetwork']],
    ['device, network and client new', { deviceId: 'x', ip: '192.0.2.1', clientId: 'y' }, 'medium', 55, ['newDevice', 'newNetwork', 'unfamiliarClient']],
    ['a burst and a new device', { failuresLast15Min: 5, deviceId: 'x' }, 'high', 60, ['failedAttemptBurst', 'newDevice']],
    ['everything at once is capped at 100', { deviceId: 'x', ip: '192.0.2.1', clientId: 'y', failuresLast15Min: 50 }, 'high', 100, ['failedAttemptBurst', 'newDevice', 'newNetwork', 'unfamiliarClient']],
    ['first sign-in: no history signals', { firstSignIn: true, deviceId: 'x', ip: '192.0.2.1', clientId: 'y' }, 'none', 0, []],
    ['first sign-in still counts failures', { firstSignIn: true, failuresLast15Min: 6, deviceId: 'x' }, 'medium', 40, ['failedAttemptBurst']],
    ['unknown device, client and address: no signal', { deviceId: null, clientId: null, ip: null }, 'none', 0, []],
    ['an address that does not parse: no signal', { ip: 'not-an-ip' }, 'none', 0, []],
    ['empty history: everything new', { history: { deviceIds: [], clientIds: [], ips: [] } }, 'medium', 55, ['newDevice', 'newNetwork', 'unfamiliarClient']],
  ];

  test.each(cases)('%s', (_label, over, level, score, signals) => {
    const result = assessSignInRisk(input(over));
    expect(result.level).toBe(level);
    expect(result.score).toBe(score);
    expect(result.signals.map((s) => s.signal)).toEqual(signals);
    const weights = result.signals.map((s) => s.weight);
    expect(Math.min(100, weights.reduce((a, b) => a + b, 0))).toBe(score);
  });

  test('history addresses that do not parse are ignored, not matched', () => {
    const result = assessSignInRisk(input({ history: { ...HISTORY, ips: ['garbage', ''] }, ip: '198.51.100.23' }));
    expect(result.signals).toEqual([{ signal: 'newNetwork', weight: 20 }]);
  });
});

describe('networkOf', () => {
  test.each([
    ['192.0.2.77', '4:192.0.2'],
    ['::ffff:192.0.2.1', '4:192.0.2'],
    ['::FFFF:c000:0201', '4:192.0.2'],
    ['2001:db8:1:2::1', '6:2001:db8:1'],
    ['2001:0db8:0001:ffff::', '6:2001:db8:1'],
    ['fe80::1%eth0', '6:fe80:0:0'],
    ['64:ff9b::192.0.2.1', '6:64:ff9b:0'],
    ['1::2:3:4:5:6:7', '6:1:0:2'],
    ['::', '6:0:0:0'],
    ['1.2.3', undefined],
    ['', undefined],
  ])('%s → %s', (ip, network) => {
    expect(networkOf(ip)).toBe(network);
  });
});

describe('property: adding a signal never lowers the level', () => {
  const RANK: Record<SignInRisk, number> = { none: 0, low: 1, medium: 2, high: 3 };
  const id = fc.constantFrom('a', 'b', 'c', 'd');
  const ip = fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4().map((v4) => `::ffff:${v4}`));
  const inputArb = fc.record({
    history: fc.record({ deviceIds: fc.array(id), clientIds: fc.array(id), ips: fc.array(ip, { maxLength: 5 }) }),
    failuresLast15Min: fc.nat({ max: 20 }),
    deviceId: fc.option(id),
    clientId: fc.option(id),
    ip: fc.option(ip),
    firstSignIn: fc.boolean(),
  });

  test('forgetting history, more failures, or leaving first-sign-in', () => {
    fc.assert(
      fc.property(inputArb, fc.nat({ max: 20 }), fc.constantFrom('deviceIds', 'clientIds', 'ips', 'failures', 'notFirst'), (base, more, change) => {
        const before = assessSignInRisk(base);
        const changed: SignInRiskInput =
          change === 'failures'
            ? { ...base, failuresLast15Min: base.failuresLast15Min + more }
            : change === 'notFirst'
              ? { ...base, firstSignIn: false }
              : { ...base, history: { ...base.history, [change]: [] } };
        const after = assessSignInRisk(changed);
        expect(RANK[after.level]).toBeGreaterThanOrEqual(RANK[before.level]);
        expect(after.score).toBeGreaterThanOrEqual(before.score);
        // Every signal that fired before still fires (the change only adds).
        for (const s of before.signals) expect(after.signals.map((x) => x.signal)).toContain(s.signal);
      }),
      { numRuns: RUNS },
    );
  });
});

describe('effectiveRisk', () => {
  const confirmed: UserRisk = { userId: 'alice', state: 'confirmed', at: 1_000, by: 'admin' };
  const dismissed: UserRisk = { userId: 'alice', state: 'dismissed', at: 1_000, by: 'admin' };
  test.each([
    ['no admin word', { level: 'medium', at: 500 }, undefined, 'medium'],
    ['confirmed: high, even for a quiet sign-in', { level: 'none', at: 500 }, confirmed, 'high'],
    ['confirmed: high, also after the confirmation', { level: 'low', at: 5_000 }, confirmed, 'high'],
    ['dismissed after the sign-in: none', { level: 'high', at: 999 }, dismissed, 'none'],
    ['dismissed before the sign-in: computed again', { level: 'high', at: 1_001 }, dismissed, 'high'],
    ['dismissed at the same instant: computed', { level: 'medium', at: 1_000 }, dismissed, 'medium'],
  ] as Array<[string, { level: SignInRisk; at: number }, UserRisk | undefined, SignInRisk]>)('%s', (_label, computed, userRisk, expected) => {
    expect(effectiveRisk(computed, userRisk)).toBe(expected);
  });
});
