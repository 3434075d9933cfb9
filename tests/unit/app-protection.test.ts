/**
 * App protection policies (server/access/appProtection.ts): the policy schema and its messages, version
 * comparison, the policy ETag, which policy applies, check-in judgements, and the standing of an app over time
 * (offline grace, offline wipe, pending and acknowledged wipes). The clock is a plain number passed in.
 */
import fc from 'fast-check';
import {
  acknowledgeSelectiveWipe,
  AppProtectionConfigError,
  appProtectionPolicySchema,
  canonicalJson,
  checkInSchema,
  compareVersions,
  InvalidVersionError,
  judgeCheckIn,
  parseAppProtectionPolicies,
  policyEtag,
  policyFor,
  requestSelectiveWipe,
  satisfiesAppProtection,
  standing,
  type AppProtectionPolicy,
  type CheckIn,
  type CheckInContext,
} from '../../server/access/appProtection';
import type { AppProtectionState } from '../../server/store/types';

const RUNS = Number(process.env.APP_PROTECTION_RUNS ?? 300);
const MINUTE = 60_000;
const DAY = 1_440 * MINUTE;
const T0 = Date.UTC(2026, 2, 1, 9);

/** A parsed policy (defaults filled in) with these changes. */
function policy(over: Partial<AppProtectionPolicy> = {}): AppProtectionPolicy {
  return appProtectionPolicySchema.parse({
    id: 'corp-mobile',
    name: 'Corporate mobile apps',
    apps: ['com.example.mail'],
    pinRequired: true,
    minAppVersion: '4.2.0',
    minOsVersion: { ios: '17.0', android: '13' },
    blockCopyToUnmanagedApps: true,
    blockSaveAs: true,
    notificationContent: 'senderOnly',
    offlineGracePeriodMinutes: 720,
    offlineWipeAfterDays: 90,
    maxPinAttempts: 10,
    ...over,
  });
}

const CTX: CheckInContext = { tenantId: 't1', userId: 'alice', deviceId: 'dev-1', now: T0, platform: 'ios' };
const at = (now: number): CheckInContext => ({ ...CTX, now });

function checkIn(p: AppProtectionPolicy | null, over: Partial<CheckIn> = {}): CheckIn {
  return { appVersion: '4.3.1', osVersion: '17.4', policyEtag: policyEtag(p), pinSet: true, pinFailures: 0, violations: [], ...over };
}

/** The state after one good check-in at `now`. */
function checkedIn(p: AppProtectionPolicy, now = T0, over: Partial<CheckIn> = {}): AppProtectionState {
  const { state, outcome } = judgeCheckIn(p, undefined, checkIn(p, over), at(now));
  expect(outcome.kind).toBe('ok');
  return state;
}

// ---------------------------------------------------------------------------------------------------------------

describe('appProtectionPolicySchema', () => {
  test('a full policy parses; checkInIntervalMinutes defaults to 30', () => {
    const p = policy();
    expect(p.checkInIntervalMinutes).toBe(30);
    expect(p.minOsVersion).toEqual({ ios: '17.0', android: '13' });
    expect(appProtectionPolicySchema.parse({ ...p, apps: 'all', groups: ['sales'] }).apps).toBe('all');
  });

  const base = { ...policy() } as Record<string, unknown>;
  const cases: Array<[string, Record<string, unknown>, string, RegExp]> = [
    ['apps empty', { apps: [] }, 'apps', /at least one client id \(or be "all"\)/],
    ['apps a word', { apps: 'some' }, 'apps', /must be "all" or a list of client ids/],
    ['apps repeated', { apps: ['a', 'a'] }, 'apps', /must not repeat/],
    ['groups empty', { groups: [] }, 'groups', /at least one group, or be left out/],
    ['pinRequired not a boolean', { pinRequired: 'yes' }, 'pinRequired', /must be true or false/],
    ['minAppVersion with a suffix', { minAppVersion: '4.2-beta' }, 'minAppVersion', /dotted numbers/],
    ['minAppVersion with five parts', { minAppVersion: '1.2.3.4.5' }, 'minAppVersion', /at most four parts/],
    ['minOsVersion for no platform', { minOsVersion: { symbian: '9' } }, 'minOsVersion', /"symbian" is not a platform \(platforms: ios, android/],
    ['minOsVersion bad version', { minOsVersion: { android: 'thirteen' } }, 'minOsVersion.android', /dotted numbers/],
    ['minOsVersion a string', { minOsVersion: '17' }, 'minOsVersion', /platform → minimum version/],
    ['notificationContent unknown', { notificationContent: 'some' }, 'notificationContent', /must be one of full, senderOnly, none/],
    ['grace 0', { offlineGracePeriodMinutes: 0 }, 'offlineGracePeriodMinutes', /at least 1 minutes/],
    ['grace over 30 days', { offlineGracePeriodMinutes: 43_201 }, 'offlineGracePeriodMinutes', /at most 43200 minutes/],
    ['grace fractional', { offlineGracePeriodMinutes: 1.5 }, 'offlineGracePeriodMinutes', /whole number/],
    ['wipe 0 days', { offlineWipeAfterDays: 0 }, 'offlineWipeAfterDays', /at least 1 days/],
    ['wipe over a year', { offlineWipeAfterDays: 366 }, 'offlineWipeAfterDays', /at most 365 days/],
    ['wipe not after grace', { offlineGracePeriodMinutes: 2_880, offlineWipeAfterDays: 2 }, 'offlineWipeAfterDays', /longer period than offlineGracePeriodMinutes \(2880 minutes\)/],
    ['maxPinAttempts 0', { maxPinAttempts: 0 }, 'maxPinAttempts', /at least 1 attempts/],
    ['maxPinAttempts 101', { maxPinAttempts: 101 }, 'maxPinAttempts', /at most 100 attempts/],
    ['maxPinAttempts without a PIN', { pinRequired: false, maxPinAttempts: 5 }, 'maxPinAttempts', /needs pinRequired: true/],
    ['check-in every 4 minutes', { checkInIntervalMinutes: 4 }, 'checkInIntervalMinutes', /at least 5 minutes/],
    ['check-in daily+1', { checkInIntervalMinutes: 1_441 }, 'checkInIntervalMinutes', /at most 1440 minutes/],
    ['default interval longer than grace', { offlineGracePeriodMinutes: 20, checkInIntervalMinutes: undefined }, 'checkInIntervalMinutes', /must not be longer than offlineGracePeriodMinutes \(20; the default interval is 30\)/],
    ['an unknown field', { pinLength: 6 }, '', /Unrecognized key: "pinLength"/],
  ];
  test.each(cases)('%s', (_label, over, field, message) => {
    const result = appProtectionPolicySchema.safeParse({ ...base, ...over });
    expect(result.success).toBe(false);
    const issues = result.error!.issues.map((i) => ({ field: i.path.join('.'), message: i.message }));
    expect(issues).toContainEqual({ field, message: expect.stringMatching(message) });
  });

  test('the wipe period just past the grace period is accepted (boundary)', () => {
    expect(appProtectionPolicySchema.safeParse({ ...base, offlineGracePeriodMinutes: 1_439, offlineWipeAfterDays: 1 }).success).toBe(true);
    expect(appProtectionPolicySchema.safeParse({ ...base, offlineGracePeriodMinutes: 1_440, offlineWipeAfterDays: 1 }).success).toBe(false);
  });

  test('a policy list must not repeat an id; parseAppProtectionPolicies lists every problem', () => {
    let thrown: unknown;
    try {
      parseAppProtectionPolicies([policy(), { ...policy(), name: 'again' }, { ...policy({ id: 'x' }), apps: [] }]);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(AppProtectionConfigError);
    expect((thrown as AppProtectionConfigError).issues).toEqual([
      { field: '2.apps', message: 'must list at least one client id (or be "all")' },
      { field: '1.id', message: 'app protection policy id "corp-mobile" is used more than once' },
    ]);
    expect(() => parseAppProtectionPolicies([policy(), { ...policy(), name: 'again' }])).toThrow(/1\.id: app protection policy id "corp-mobile" is used more than once/);
    expect(parseAppProtectionPolicies([policy(), policy({ id: 'other' })]).map((p) => p.id)).toEqual(['corp-mobile', 'other']);
  });
});

describe('checkInSchema', () => {
  test('fills pinFailures and violations; accepts a null ETag', () => {
    expect(checkInSchema.parse({ appVersion: '4.3', osVersion: '17.4.1', policyEtag: null, pinSet: false })).toEqual({
      appVersion: '4.3',
      osVersion: '17.4.1',
      policyEtag: null,
      pinSet: false,
      pinFailures: 0,
      violations: [],
    });
  });
  const good = { appVersion: '4.3', osVersion: '17.4', policyEtag: '"x"', pinSet: true, pinFailures: 0, violations: [] };
  const cases: Array<[Record<string, unknown>, string, RegExp]> = [
    [{ appVersion: 'latest' }, 'appVersion', /dotted numbers/],
    [{ osVersion: undefined }, 'osVersion', /must be a string/],
    [{ pinFailures: -1 }, 'pinFailures', /must not be negative/],
    [{ pinFailures: 2.5 }, 'pinFailures', /whole number/],
    [{ violations: ['jail broken'] }, 'violations.0', /short token/],
    [{ pinSet: 1 }, 'pinSet', /true or false/],
    [{ policyEtag: 5 }, 'policyEtag', /ETag from GET \/v1\/policy, or null/],
  ];
  test.each(cases)('%j is refused', (over, field, message) => {
    const result = checkInSchema.safeParse({ ...good, ...over });
    expect(result.success).toBe(false);
    expect(result.error!.issues.map((i) => ({ field: i.path.join('.'), message: i.message }))).toContainEqual({ field, message: expect.stringMatching(message) });
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('compareVersions', () => {
  const table: Array<[string, string, -1 | 0 | 1]> = [
    ['1.10', '1.9', 1],
    ['1.9', '1.10', -1],
    ['4.2', '4.2.0', 0],
    ['4.2.0.0', '4.2', 0],
    ['4.2.10', '4.2.9', 1],
    ['4.10.0', '4.9.99', 1],
    ['13', '13.0.1', -1],
    ['017', '17', 0],
    ['10.0.22631.3296', '10.0.22631', 1],
    ['0', '0.0.0.1', -1],
    ['999999999', '1000', 1],
  ];
  test.each(table)('%s vs %s → %d', (a, b, expected) => {
    expect(compareVersions(a, b)).toBe(expected);
  });

  test.each(['', '4.2-beta', 'v4', '4..2', '.4', '4.', '1.2.3.4.5', '1234567890', ' 4.2'])('%j is not a version: throws', (bad) => {
    expect(() => compareVersions(bad, '1')).toThrow(InvalidVersionError);
    expect(() => compareVersions('1', bad)).toThrow(/is not a version/);
  });

  const versionArb = fc.array(fc.nat({ max: 30 }), { minLength: 1, maxLength: 4 }).map((parts) => parts.join('.'));
  test('antisymmetric, reflexive and transitive (property)', () => {
    fc.assert(
      fc.property(versionArb, versionArb, versionArb, (a, b, c) => {
        expect(compareVersions(a, a)).toBe(0);
        expect(compareVersions(a, b)).toBe(-compareVersions(b, a) || 0);
        if (compareVersions(a, b) <= 0 && compareVersions(b, c) <= 0) expect(compareVersions(a, c)).toBeLessThanOrEqual(0);
        // Trailing zeros never change a version.
        expect(compareVersions(`${a}`, a.split('.').length < 4 ? `${a}.0` : a)).toBe(0);
      }),
      { numRuns: RUNS },
    );
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('policyEtag', () => {
  test('a quoted strong ETag, the same for the same policy written in any key order', () => {
    const p = policy();
    const reversed = Object.fromEntries(Object.entries(p).reverse()) as AppProtectionPolicy;
    const osReversed = { ...p, minOsVersion: { android: '13', ios: '17.0' } };
    expect(policyEtag(p)).toMatch(/^"[A-Za-z0-9_-]{43}"$/);
    expect(policyEtag(reversed)).toBe(policyEtag(p));
    expect(policyEtag(osReversed)).toBe(policyEtag(p));
    expect(policyEtag(JSON.parse(JSON.stringify(p)))).toBe(policyEtag(p));
    expect(canonicalJson({ b: 1, a: { d: [2, { f: 1, e: 0 }], c: undefined } })).toBe('{"a":{"d":[2,{"e":0,"f":1}]},"b":1}');
  });

  test('no policy has an ETag too, distinct from every policy', () => {
    expect(policyEtag(null)).toMatch(/^".+"$/);
    expect(policyEtag(null)).not.toBe(policyEtag(policy()));
  });

  test('changes when any field changes', () => {
    const p = policy();
    const changed: AppProtectionPolicy[] = [
      { ...p, id: 'other' },
      { ...p, name: 'Other' },
      { ...p, apps: 'all' },
      { ...p, apps: ['com.example.mail', 'com.example.cal'] },
      { ...p, groups: ['sales'] },
      { ...p, pinRequired: false },
      { ...p, minAppVersion: '4.2.1' },
      { ...p, minAppVersion: undefined },
      { ...p, minOsVersion: { ios: '17.0' } },
      { ...p, minOsVersion: { ios: '17.1', android: '13' } },
      { ...p, blockCopyToUnmanagedApps: false },
      { ...p, blockSaveAs: false },
      { ...p, notificationContent: 'none' },
      { ...p, offlineGracePeriodMinutes: 721 },
      { ...p, offlineWipeAfterDays: 91 },
      { ...p, maxPinAttempts: 9 },
      { ...p, checkInIntervalMinutes: 31 },
    ];
    const etags = new Set([policyEtag(p), ...changed.map(policyEtag)]);
    expect(etags.size).toBe(changed.length + 1);
  });
});

describe('policyFor', () => {
  const mailOnly = policy({ id: 'mail', apps: ['com.example.mail'] });
  const salesAll = policy({ id: 'sales-all', apps: 'all', groups: ['sales'] });
  const everyone = policy({ id: 'everyone', apps: 'all' });
  const list = [mailOnly, salesAll, everyone];

  test.each([
    ['the first listed match wins', list, 'com.example.mail', ['sales'], 'mail'],
    ['an app not listed falls to "all"', list, 'com.example.cal', ['sales'], 'sales-all'],
    ['a group policy skips non-members', list, 'com.example.cal', ['finance'], 'everyone'],
    ['no groups at all', list, 'com.example.cal', [], 'everyone'],
    ['order decides, not specificity', [everyone, mailOnly], 'com.example.mail', [], 'everyone'],
    ['nothing matches', [mailOnly, salesAll], 'com.example.cal', ['finance'], undefined],
    ['no policies', [], 'com.example.mail', ['sales'], undefined],
  ] as Array<[string, AppProtectionPolicy[], string, string[], string | undefined]>)('%s', (_label, policies, clientId, groups, expected) => {
    expect(policyFor(policies, { clientId, groups })?.id).toBe(expected);
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('judgeCheckIn', () => {
  const p = policy();

  test('a good first check-in: ok, current ETag, next check-in within the interval, state recorded', () => {
    const { state, outcome } = judgeCheckIn(p, undefined, checkIn(p, { pinFailures: 2 }), CTX);
    expect(outcome).toEqual({ kind: 'ok', policyEtag: policyEtag(p), policyChanged: false, nextCheckInBefore: T0 + 30 * MINUTE });
    expect(state).toEqual({
      tenantId: 't1',
      userId: 'alice',
      deviceId: 'dev-1',
      policyId: 'corp-mobile',
      policyEtag: policyEtag(p),
      appVersion: '4.3.1',
      osVersion: '17.4',
      lastCheckInAt: T0,
      pinFailures: 2,
      violations: [],
      selectiveWipe: 'none',
      selectiveWipeReason: null,
      selectiveWipeRequestedAt: null,
      selectiveWipeAcknowledgedAt: null,
      updatedAt: T0,
    });
  });

  test('an app holding an old ETag (or none) is told the policy changed', () => {
    const old = policy({ minAppVersion: '4.0' });
    const { outcome } = judgeCheckIn(p, undefined, checkIn(old), CTX);
    expect(outcome).toMatchObject({ kind: 'ok', policyChanged: true, policyEtag: policyEtag(p) });
    expect(judgeCheckIn(p, undefined, checkIn(p, { policyEtag: null }), CTX).outcome).toMatchObject({ kind: 'ok', policyChanged: true });
  });

  test('the interval follows the policy', () => {
    const hourly = policy({ checkInIntervalMinutes: 60 });
    expect(judgeCheckIn(hourly, undefined, checkIn(hourly), at(T0 + 5)).outcome).toMatchObject({ nextCheckInBefore: T0 + 5 + 60 * MINUTE });
  });

  test.each([
    ['app below minimum', { appVersion: '4.1.9' }, { which: 'app', minimumVersion: '4.2.0', currentVersion: '4.1.9' }],
    ['app 4.2 equals 4.2.0', { appVersion: '4.2' }, null],
    ['app 4.10 is above 4.2.0', { appVersion: '4.10' }, null],
    ['iOS below 17.0', { osVersion: '16.7.8' }, { which: 'os', minimumVersion: '17.0', currentVersion: '16.7.8' }],
    ['both too old: the app first', { appVersion: '3', osVersion: '16' }, { which: 'app', minimumVersion: '4.2.0', currentVersion: '3' }],
  ] as Array<[string, Partial<CheckIn>, object | null]>)('%s', (_label, over, upgrade) => {
    const { state, outcome } = judgeCheckIn(p, undefined, checkIn(p, over), CTX);
    if (upgrade) expect(outcome).toEqual({ kind: 'upgradeRequired', ...upgrade });
    else expect(outcome.kind).toBe('ok');
    expect(state.lastCheckInAt).toBe(T0); // a refused check-in is still contact
    expect(state.selectiveWipe).toBe('none');
  });

  test('the OS minimum is per platform: an Android 12 device on a policy without an Android minimum passes', () => {
    const iosOnly = policy({ minOsVersion: { ios: '17.0' } });
    expect(judgeCheckIn(iosOnly, undefined, checkIn(iosOnly, { osVersion: '12' }), { ...CTX, platform: 'android' }).outcome.kind).toBe('ok');
    expect(judgeCheckIn(p, undefined, checkIn(p, { osVersion: '12' }), { ...CTX, platform: 'android' }).outcome).toMatchObject({
      kind: 'upgradeRequired',
      which: 'os',
      minimumVersion: '13',
    });
  });

  test('PIN failures at the maximum request a selective wipe; one under does not', () => {
    expect(judgeCheckIn(p, undefined, checkIn(p, { pinFailures: 9 }), CTX).outcome.kind).toBe('ok');
    const { state, outcome } = judgeCheckIn(p, undefined, checkIn(p, { pinFailures: 10 }), CTX);
    expect(outcome).toEqual({ kind: 'selectiveWipe', reason: expect.stringMatching(/^maxPinAttempts: 10 failed PIN attempts/) });
    expect(state).toMatchObject({ selectiveWipe: 'pending', selectiveWipeRequestedAt: T0, selectiveWipeReason: (outcome as { reason: string }).reason });
    expect(judgeCheckIn(policy({ maxPinAttempts: undefined }), undefined, checkIn(p, { pinFailures: 1_000 }), CTX).outcome.kind).toBe('ok');
  });

  test('reported violations request a selective wipe naming them (before any upgrade)', () => {
    const { outcome } = judgeCheckIn(p, undefined, checkIn(p, { violations: ['jailbroken', 'debuggerAttached'], appVersion: '1.0' }), CTX);
    expect(outcome).toEqual({ kind: 'selectiveWipe', reason: 'violations: jailbroken, debuggerAttached' });
    const both = judgeCheckIn(p, undefined, checkIn(p, { violations: ['rooted'], pinFailures: 12 }), CTX).outcome;
    expect(both).toMatchObject({ kind: 'selectiveWipe', reason: expect.stringMatching(/^violations: rooted; maxPinAttempts: 12/) });
  });

  test('a pending wipe stays pending whatever a later check-in reports', () => {
    const wiped = judgeCheckIn(p, undefined, checkIn(p, { violations: ['jailbroken'] }), CTX).state;
    const later = judgeCheckIn(p, wiped, checkIn(p), at(T0 + 5 * MINUTE));
    expect(later.outcome).toEqual({ kind: 'selectiveWipe', reason: 'violations: jailbroken' });
    expect(later.state).toMatchObject({ selectiveWipe: 'pending', selectiveWipeRequestedAt: T0, lastCheckInAt: T0 + 5 * MINUTE, violations: [] });
    // Even when no policy applies any more.
    expect(judgeCheckIn(null, later.state, checkIn(null), at(T0 + 10 * MINUTE)).outcome.kind).toBe('selectiveWipe');
  });

  test('after the acknowledgement a clean check-in is ok again', () => {
    const wiped = judgeCheckIn(p, undefined, checkIn(p, { pinFailures: 10 }), CTX).state;
    const acked = acknowledgeSelectiveWipe(wiped, T0 + MINUTE);
    expect(acked).toMatchObject({ selectiveWipe: 'acknowledged', selectiveWipeAcknowledgedAt: T0 + MINUTE, updatedAt: T0 + MINUTE });
    const again = judgeCheckIn(p, acked, checkIn(p), at(T0 + 2 * MINUTE));
    expect(again.outcome.kind).toBe('ok');
    expect(again.state.selectiveWipe).toBe('acknowledged');
  });

  test('no policy: recorded and ok, no PIN or violation rules, default interval', () => {
    const { state, outcome } = judgeCheckIn(null, undefined, checkIn(null, { violations: ['jailbroken'], appVersion: '0.1' }), CTX);
    expect(outcome).toEqual({ kind: 'ok', policyEtag: policyEtag(null), policyChanged: false, nextCheckInBefore: T0 + 30 * MINUTE });
    expect(state).toMatchObject({ policyId: null, lastCheckInAt: T0, violations: ['jailbroken'] });
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('standing of resource calls over time', () => {
  const p = policy(); // grace 12 h, wipe after 90 days

  test('the offline timeline: ok → checkInRequired after the grace period → selectiveWipe after the wipe period', () => {
    const state = checkedIn(p);
    expect(standing(p, state, T0)).toEqual({ kind: 'ok' });
    expect(standing(p, state, T0 + 720 * MINUTE)).toEqual({ kind: 'ok' }); // exactly the grace period: still ok
    expect(standing(p, state, T0 + 720 * MINUTE + 1)).toEqual({ kind: 'checkInRequired', reason: 'gracePeriodExceeded' });
    expect(standing(p, state, T0 + 90 * DAY)).toEqual({ kind: 'checkInRequired', reason: 'gracePeriodExceeded' });
    expect(standing(p, state, T0 + 90 * DAY + 1)).toEqual({
      kind: 'selectiveWipe',
      reason: 'offline: no check-in for more than 90 days',
      newlyRequested: true,
    });
  });

  test('a check-in resets the clock', () => {
    const first = checkedIn(p);
    const second = judgeCheckIn(p, first, checkIn(p), at(T0 + 700 * MINUTE)).state;
    expect(standing(p, second, T0 + 1_000 * MINUTE)).toEqual({ kind: 'ok' });
    expect(standing(p, second, T0 + 1_421 * MINUTE)).toEqual({ kind: 'checkInRequired', reason: 'gracePeriodExceeded' });
  });

  test('an offline wipe, once stored, is pending (not new) and survives a check-in until acknowledged', () => {
    const state = checkedIn(p);
    const late = T0 + 91 * DAY;
    const verdict = standing(p, state, late);
    expect(verdict).toMatchObject({ kind: 'selectiveWipe', newlyRequested: true });
    const stored = requestSelectiveWipe(state, (verdict as { reason: string }).reason, CTX, late);
    expect(standing(p, stored, late + 1)).toEqual({ kind: 'selectiveWipe', reason: 'offline: no check-in for more than 90 days', newlyRequested: false });
    const checkIn2 = judgeCheckIn(p, stored, checkIn(p), at(late + 2));
    expect(checkIn2.outcome.kind).toBe('selectiveWipe');
    expect(standing(p, checkIn2.state, late + 3)).toMatchObject({ kind: 'selectiveWipe', newlyRequested: false });
  });

  test('acknowledging ends the wipe; access needs a new check-in, and there is no second offline wipe', () => {
    const stored = requestSelectiveWipe(checkedIn(p), 'offline: no check-in for more than 90 days', CTX, T0 + 91 * DAY);
    const acked = acknowledgeSelectiveWipe(stored, T0 + 92 * DAY);
    expect(standing(p, acked, T0 + 92 * DAY + 1)).toEqual({ kind: 'checkInRequired', reason: 'afterSelectiveWipe' });
    expect(standing(p, acked, T0 + 400 * DAY)).toEqual({ kind: 'checkInRequired', reason: 'afterSelectiveWipe' });
    const back = judgeCheckIn(p, acked, checkIn(p), at(T0 + 93 * DAY)).state;
    expect(standing(p, back, T0 + 93 * DAY + MINUTE)).toEqual({ kind: 'ok' });
  });

  test('acknowledging when nothing is pending changes nothing', () => {
    const state = checkedIn(p);
    expect(acknowledgeSelectiveWipe(state, T0 + 1)).toBe(state);
  });

  test('requestSelectiveWipe keeps the first reason of a wipe already pending; creates a state when there is none', () => {
    const first = requestSelectiveWipe(undefined, 'violations: rooted', CTX, T0);
    expect(first).toMatchObject({ tenantId: 't1', userId: 'alice', deviceId: 'dev-1', selectiveWipe: 'pending', selectiveWipeReason: 'violations: rooted', lastCheckInAt: null });
    expect(requestSelectiveWipe(first, 'offline', CTX, T0 + 1)).toBe(first);
  });

  test('an app that never checked in: blocked at once, or after a grace from firstSeenAt', () => {
    expect(standing(p, undefined, T0)).toEqual({ kind: 'checkInRequired', reason: 'noCheckIn' });
    expect(standing(p, undefined, T0 + 720 * MINUTE, { firstSeenAt: T0 })).toEqual({ kind: 'ok' });
    expect(standing(p, undefined, T0 + 720 * MINUTE + 1, { firstSeenAt: T0 })).toEqual({ kind: 'checkInRequired', reason: 'noCheckIn' });
    expect(standing(p, undefined, T0 + 90 * DAY + 1, { firstSeenAt: T0 })).toMatchObject({ kind: 'selectiveWipe', newlyRequested: true });
  });

  test('minimum app version: the last check-in counts, else the registered version (when it is a version)', () => {
    const fresh = checkedIn(p); // checked in with 4.3.1
    expect(standing(p, fresh, T0 + 1, { clientVersion: '3.0' })).toEqual({ kind: 'ok' });
    const old = judgeCheckIn(p, undefined, checkIn(p, { appVersion: '4.1' }), CTX).state;
    expect(standing(p, old, T0 + 1, { clientVersion: '9.0' })).toEqual({ kind: 'upgradeRequired', which: 'app', minimumVersion: '4.2.0', currentVersion: '4.1' });
    // Never checked in, within the registration grace:
    const opts = { firstSeenAt: T0 };
    expect(standing(p, undefined, T0 + 1, { ...opts, clientVersion: '4.1.2' })).toEqual({ kind: 'upgradeRequired', which: 'app', minimumVersion: '4.2.0', currentVersion: '4.1.2' });
    expect(standing(p, undefined, T0 + 1, { ...opts, clientVersion: '4.2' })).toEqual({ kind: 'ok' });
    expect(standing(p, undefined, T0 + 1, { ...opts, clientVersion: 'Pigeon (beta)' })).toEqual({ kind: 'ok' });
    expect(standing(p, undefined, T0 + 1, { ...opts, clientVersion: null })).toEqual({ kind: 'ok' });
    // Upgrade is reported before "check in" (the check-in would only say the same).
    expect(standing(p, old, T0 + 2 * DAY)).toMatchObject({ kind: 'upgradeRequired' });
  });

  test('minimum OS version: checked with the platform given', () => {
    const android12 = judgeCheckIn(policy({ minOsVersion: { ios: '17.0' } }), undefined, checkIn(p, { osVersion: '12' }), { ...CTX, platform: 'android' }).state;
    expect(standing(p, android12, T0 + 1)).toEqual({ kind: 'ok' });
    expect(standing(p, android12, T0 + 1, { platform: 'android' })).toEqual({ kind: 'upgradeRequired', which: 'os', minimumVersion: '13', currentVersion: '12' });
  });

  test('no policy: ok, except a pending wipe', () => {
    expect(standing(null, undefined, T0)).toEqual({ kind: 'ok' });
    expect(standing(undefined, checkedIn(p), T0 + 400 * DAY)).toEqual({ kind: 'ok' });
    expect(standing(null, requestSelectiveWipe(undefined, 'violations: rooted', CTX, T0), T0)).toMatchObject({ kind: 'selectiveWipe', newlyRequested: false });
  });

  test('property: with one check-in and nothing else, the verdict only worsens as time passes', () => {
    const rank = { ok: 0, checkInRequired: 1, selectiveWipe: 2 } as Record<string, number>;
    fc.assert(
      fc.property(
        fc.integer({ min: 5, max: 43_200 }), // at least the 5-minute check-in interval
        fc.integer({ min: 1, max: 365 }),
        fc.nat({ max: 400 * DAY }),
        fc.nat({ max: 400 * DAY }),
        (graceMinutes, wipeDays, d1, d2) => {
          fc.pre(wipeDays * 1_440 > graceMinutes);
          const q = policy({ offlineGracePeriodMinutes: graceMinutes, offlineWipeAfterDays: wipeDays, checkInIntervalMinutes: 5 });
          const state = checkedIn(q);
          const [early, late] = d1 <= d2 ? [d1, d2] : [d2, d1];
          const a = standing(q, state, T0 + early).kind;
          const b = standing(q, state, T0 + late).kind;
          expect(rank[a]).toBeLessThanOrEqual(rank[b]!);
          expect(a).toBe(early <= graceMinutes * MINUTE ? 'ok' : early <= wipeDays * DAY ? 'checkInRequired' : 'selectiveWipe');
        },
      ),
      { numRuns: RUNS },
    );
  });
});

describe('satisfiesAppProtection (the conditional-access control)', () => {
  const p = policy();

  test('met after a check-in against the current ETag, within the grace period', () => {
    const state = checkedIn(p);
    expect(satisfiesAppProtection(p, state, T0 + 720 * MINUTE)).toBe(true);
    expect(satisfiesAppProtection(p, state, T0 + 720 * MINUTE + 1)).toBe(false);
  });

  test('not met: no policy, no state, an old ETag, another policy, a pending wipe, a version below minimum', () => {
    const state = checkedIn(p);
    expect(satisfiesAppProtection(null, state, T0)).toBe(false);
    expect(satisfiesAppProtection(p, undefined, T0)).toBe(false);
    const changed = policy({ blockSaveAs: false });
    expect(satisfiesAppProtection(changed, state, T0)).toBe(false);
    expect(satisfiesAppProtection(changed, checkedIn(changed), T0)).toBe(true);
    const otherId = policy({ id: 'other' });
    expect(satisfiesAppProtection(otherId, { ...state, policyEtag: policyEtag(otherId) }, T0)).toBe(false);
    expect(satisfiesAppProtection(p, requestSelectiveWipe(state, 'violations: rooted', CTX, T0), T0)).toBe(false);
    const old = judgeCheckIn(p, undefined, checkIn(p, { appVersion: '4.0' }), CTX).state;
    expect(satisfiesAppProtection(p, old, T0)).toBe(false);
    const oldOs = judgeCheckIn(p, undefined, checkIn(p, { osVersion: '16' }), CTX).state;
    expect(satisfiesAppProtection(p, oldOs, T0)).toBe(true); // the OS is judged only with a platform
    expect(satisfiesAppProtection(p, oldOs, T0, { platform: 'ios' })).toBe(false);
  });

  test('a registration grace does not satisfy the control: only a real check-in does', () => {
    expect(satisfiesAppProtection(p, undefined, T0)).toBe(false);
    const acked = acknowledgeSelectiveWipe(requestSelectiveWipe(checkedIn(p), 'violations: rooted', CTX, T0), T0 + 1);
    expect(satisfiesAppProtection(p, acked, T0 + 2)).toBe(false);
  });
});
