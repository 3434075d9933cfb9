/**
 * The conditional-access policy engine (server/access/policies.ts): which policies apply to a sign-in, what each
 * one's result is and the final decision; schema validation of policies and named locations; properties that a
 * report-only rollout and turning a policy off are safe.
 */
import fc from 'fast-check';
import {
  compilePolicies,
  evaluate,
  GRANT_CONTROLS,
  namedLocationSchema,
  PLATFORMS,
  policySchema,
  PolicyConfigError,
  policySetSchema,
  signInContextSchema,
  type Decision,
  type GrantControl,
  type NamedLocation,
  type Policy,
  type PolicyAssignments,
  type PolicyOutcome,
  type SignInContext,
} from '../../server/access/policies';

const RUNS = Number(process.env.CONDITIONAL_ACCESS_RUNS ?? 300);

const LOCATIONS: NamedLocation[] = [
  { id: 'hq', name: 'Head office', trusted: true, ranges: ['203.0.113.0/24', '2001:db8:1::/48'] },
  { id: 'branch', name: 'Branch (IPv6 only)', trusted: false, ranges: ['2001:db8:2::/48'] },
  { id: 'cafe', name: 'Cafe', trusted: false, ranges: ['198.51.100.0/24'] },
];

const IP = {
  nowhere: '192.0.2.10',
  hq4: '203.0.113.7',
  hq4mapped: '::ffff:203.0.113.7',
  hq6: '2001:db8:1::42',
  branch6: '2001:db8:2:abcd::1',
  other6: '2001:db8:3::1',
  cafe: '198.51.100.200',
  garbage: 'not-an-ip',
};

const context = (over: Partial<SignInContext> = {}): SignInContext => ({
  userId: 'alice',
  groups: ['staff'],
  clientApp: 'pigeon-mail',
  approvedClientApp: false,
  platform: 'ios',
  ip: IP.nowhere,
  risk: 'none',
  satisfied: { mfa: false, compliantDevice: false, appProtectionPolicy: false },
  ...over,
});

const policy = (over: Omit<Partial<Policy>, 'assignments'> & { assignments?: Partial<PolicyAssignments> } = {}): Policy => ({
  id: over.id ?? 'p1',
  name: over.name ?? 'A policy',
  state: over.state ?? 'on',
  assignments: { users: { include: 'all' }, ...over.assignments },
  outcome: over.outcome ?? { block: true },
});

const grant = (controls: GrantControl[], operator: 'and' | 'or' = 'and'): PolicyOutcome => ({ grant: { controls, operator } });

/** The context with one control satisfied or not. */
function withControl(ctx: SignInContext, control: GrantControl, met: boolean): SignInContext {
  if (control === 'approvedClientApp') return { ...ctx, approvedClientApp: met };
  return { ...ctx, satisfied: { ...ctx.satisfied, [control]: met } };
}
const allMet = (ctx: SignInContext) => GRANT_CONTROLS.reduce((c, control) => withControl(c, control, true), ctx);

describe('assignments: which sign-ins a policy covers', () => {
  // Each row: a block policy with these assignments, a sign-in, and whether it applies (else the reason it does not).
  const cases: Array<[string, Partial<PolicyAssignments>, Partial<SignInContext>, string | true]> = [
    // users and groups
    ['all users', {}, {}, true],
    ['a listed user', { users: { include: { users: ['alice'] } } }, {}, true],
    ['a user not listed', { users: { include: { users: ['alice'] } } }, { userId: 'bob' }, 'userNotIncluded'],
    ['a member of a listed group', { users: { include: { groups: ['staff'] } } }, {}, true],
    ['not a member of a listed group', { users: { include: { groups: ['staff'] } } }, { groups: ['contractors'] }, 'userNotIncluded'],
    ['all users, this one excluded', { users: { include: 'all', exclude: { users: ['alice'] } } }, {}, 'userExcluded'],
    ['included by user id, excluded by group', { users: { include: { users: ['alice'] }, exclude: { groups: ['breakglass'] } } }, { groups: ['staff', 'breakglass'] }, 'userExcluded'],
    ['included by group, excluded by user id', { users: { include: { groups: ['staff'] }, exclude: { users: ['alice'] } } }, {}, 'userExcluded'],
    ['excluded group the user is not in', { users: { include: 'all', exclude: { groups: ['breakglass'] } } }, {}, true],
    // client apps
    ['a listed client app', { clientApps: { include: ['pigeon-mail'] } }, {}, true],
    ['a client app not listed', { clientApps: { include: ['pigeon-mail'] } }, { clientApp: 'other-mail' }, 'clientAppNotIncluded'],
    ['all apps, this one excluded', { clientApps: { include: 'all', exclude: ['legacy-mail'] } }, { clientApp: 'legacy-mail' }, 'clientAppExcluded'],
    ['listed and excluded app', { clientApps: { include: ['legacy-mail'], exclude: ['legacy-mail'] } }, { clientApp: 'legacy-mail' }, 'clientAppExcluded'],
    // platforms
    ['a listed platform', { platforms: { include: ['ios', 'android'] } }, { platform: 'android' }, true],
    ['a platform not listed', { platforms: { include: ['ios', 'android'] } }, { platform: 'windows' }, 'platformNotIncluded'],
    ['all platforms, this one excluded', { platforms: { include: 'all', exclude: ['web'] } }, { platform: 'web' }, 'platformExcluded'],
    ['all platforms, another excluded', { platforms: { include: 'all', exclude: ['web'] } }, { platform: 'other' }, true],
    // locations
    ['any location', { locations: { include: ['any'] } }, {}, true],
    ['any location, even an unparseable IP', { locations: { include: ['any'] } }, { ip: IP.garbage }, true],
    ['everywhere but trusted, from trusted IPv4', { locations: { include: ['any'], exclude: ['trusted'] } }, { ip: IP.hq4 }, 'locationExcluded'],
    ['everywhere but trusted, from trusted IPv6', { locations: { include: ['any'], exclude: ['trusted'] } }, { ip: IP.hq6 }, 'locationExcluded'],
    ['everywhere but trusted, from an IPv4-mapped trusted address', { locations: { include: ['any'], exclude: ['trusted'] } }, { ip: IP.hq4mapped }, 'locationExcluded'],
    ['everywhere but trusted, from an untrusted IPv6 location', { locations: { include: ['any'], exclude: ['trusted'] } }, { ip: IP.branch6 }, true],
    ['everywhere but trusted, from an unparseable IP (fail closed)', { locations: { include: ['any'], exclude: ['trusted'] } }, { ip: IP.garbage }, true],
    ['a named IPv6 location, inside', { locations: { include: ['branch'] } }, { ip: IP.branch6 }, true],
    ['a named IPv6 location, next door', { locations: { include: ['branch'] } }, { ip: IP.other6 }, 'locationNotIncluded'],
    ['a named IPv4 location, inside', { locations: { include: ['cafe'] } }, { ip: IP.cafe }, true],
    ['a named location, unparseable IP', { locations: { include: ['cafe'] } }, { ip: IP.garbage }, 'locationNotIncluded'],
    ['trusted locations, from outside', { locations: { include: ['trusted'] } }, { ip: IP.nowhere }, 'locationNotIncluded'],
    ['trusted locations, from an untrusted named one', { locations: { include: ['trusted'] } }, { ip: IP.cafe }, 'locationNotIncluded'],
    ['a named location excluded by id', { locations: { include: ['any'], exclude: ['cafe'] } }, { ip: IP.cafe }, 'locationExcluded'],
    // sign-in risk
    ['risk high, policy for medium and high', { signInRisk: ['medium', 'high'] }, { risk: 'high' }, true],
    ['risk low, policy for medium and high', { signInRisk: ['medium', 'high'] }, { risk: 'low' }, 'signInRiskNotIncluded'],
    ['no risk, policy for low', { signInRisk: ['low'] }, { risk: 'none' }, 'signInRiskNotIncluded'],
    // every dimension at once
    [
      'all conditions match',
      { users: { include: { groups: ['staff'] } }, clientApps: { include: ['pigeon-mail'] }, platforms: { include: ['ios'] }, locations: { include: ['branch'] }, signInRisk: ['medium'] },
      { ip: IP.branch6, risk: 'medium' },
      true,
    ],
    [
      'all conditions but the platform match',
      { users: { include: { groups: ['staff'] } }, clientApps: { include: ['pigeon-mail'] }, platforms: { include: ['android'] }, locations: { include: ['branch'] }, signInRisk: ['medium'] },
      { ip: IP.branch6, risk: 'medium' },
      'platformNotIncluded',
    ],
  ];

  test.each(cases)('%s', (_label, assignments, over, expected) => {
    const outcome = evaluate([policy({ assignments })], LOCATIONS, context(over));
    const [result] = outcome.results;
    if (expected === true) {
      expect(result).toEqual({ policyId: 'p1', state: 'on', applied: true, result: 'failure' });
      expect(outcome.decision).toBe('block');
    } else {
      expect(result).toEqual({ policyId: 'p1', state: 'on', applied: false, notAppliedBecause: expected, result: 'notApplied' });
      expect(outcome.decision).toBe('allow');
    }
  });
});

describe('outcomes: block, and grant with each control', () => {
  test.each(GRANT_CONTROLS.flatMap((c) => [[c, true], [c, false]] as const))('grant requiring %s, satisfied: %s', (control, met) => {
    const ctx = withControl(context(), control, met);
    const outcome = evaluate([policy({ outcome: grant([control]) })], LOCATIONS, ctx);
    if (met) {
      expect(outcome).toEqual({ decision: 'allow', missingControls: [], blockReasons: [], results: [{ policyId: 'p1', state: 'on', applied: true, result: 'success' }] });
    } else {
      expect(outcome.results).toEqual([{ policyId: 'p1', state: 'on', applied: true, result: 'failure', unmetControls: [control] }]);
      if (control === 'mfa') {
        expect(outcome).toMatchObject({ decision: 'needs', missingControls: ['mfa'], blockReasons: [] });
      } else {
        expect(outcome).toMatchObject({ decision: 'block', missingControls: [], blockReasons: [{ policyId: 'p1', reason: 'unmetControls', unmetControls: [control] }] });
      }
    }
  });

  // [controls, operator, which are met, decision, unmet controls of the policy, missingControls]
  const grants: Array<[GrantControl[], 'and' | 'or', GrantControl[], Decision, GrantControl[] | undefined, string[]]> = [
    [['mfa', 'compliantDevice'], 'and', ['mfa', 'compliantDevice'], 'allow', undefined, []],
    [['mfa', 'compliantDevice'], 'and', ['compliantDevice'], 'needs', ['mfa'], ['mfa']],
    [['mfa', 'compliantDevice'], 'and', ['mfa'], 'block', ['compliantDevice'], []],
    [['mfa', 'compliantDevice'], 'and', [], 'block', ['mfa', 'compliantDevice'], []],
    [['mfa', 'compliantDevice'], 'or', [], 'needs', ['mfa', 'compliantDevice'], ['mfa']],
    [['mfa', 'compliantDevice'], 'or', ['compliantDevice'], 'allow', undefined, []],
    [['mfa', 'compliantDevice'], 'or', ['mfa'], 'allow', undefined, []],
    [['approvedClientApp', 'appProtectionPolicy'], 'or', [], 'block', ['approvedClientApp', 'appProtectionPolicy'], []],
    [['approvedClientApp', 'appProtectionPolicy'], 'or', ['appProtectionPolicy'], 'allow', undefined, []],
    [['approvedClientApp', 'appProtectionPolicy'], 'and', ['appProtectionPolicy'], 'block', ['approvedClientApp'], []],
    [['mfa', 'approvedClientApp', 'compliantDevice', 'appProtectionPolicy'], 'and', ['approvedClientApp', 'compliantDevice', 'appProtectionPolicy'], 'needs', ['mfa'], ['mfa']],
  ];
  test.each(grants)('grant %j (%s) with %j met → %s', (controls, operator, met, decision, unmet, missing) => {
    const ctx = met.reduce((c, control) => withControl(c, control, true), context());
    const outcome = evaluate([policy({ outcome: grant(controls, operator) })], LOCATIONS, ctx);
    expect(outcome.decision).toBe(decision);
    expect(outcome.results[0]?.unmetControls).toEqual(unmet);
    expect(outcome.results[0]?.result).toBe(unmet ? 'failure' : 'success');
    expect(outcome.missingControls).toEqual(missing);
  });

  test('a block policy blocks even with every control satisfied', () => {
    const outcome = evaluate([policy({ outcome: { block: true } })], LOCATIONS, allMet(context()));
    expect(outcome).toEqual({
      decision: 'block',
      missingControls: [],
      blockReasons: [{ policyId: 'p1', reason: 'blockPolicy' }],
      results: [{ policyId: 'p1', state: 'on', applied: true, result: 'failure' }],
    });
  });

  test('block wins over a satisfied grant and over one needing MFA; no MFA prompt then', () => {
    const policies = [
      policy({ id: 'needs-mfa', outcome: grant(['mfa']) }),
      policy({ id: 'device-ok', outcome: grant(['compliantDevice']) }),
      policy({ id: 'blocker', outcome: { block: true }, assignments: { platforms: { include: ['ios'] } } }),
    ];
    const outcome = evaluate(policies, LOCATIONS, withControl(context(), 'compliantDevice', true));
    expect(outcome.decision).toBe('block');
    expect(outcome.missingControls).toEqual([]);
    expect(outcome.blockReasons).toEqual([{ policyId: 'blocker', reason: 'blockPolicy' }]);
    expect(outcome.results.map((r) => r.result)).toEqual(['failure', 'success', 'failure']);
  });

  test('every applicable policy must be satisfied: one unmet device control blocks despite others passing', () => {
    const policies = [policy({ id: 'mfa', outcome: grant(['mfa']) }), policy({ id: 'device', outcome: grant(['compliantDevice']) })];
    const outcome = evaluate(policies, LOCATIONS, withControl(context(), 'mfa', true));
    expect(outcome.decision).toBe('block');
    expect(outcome.blockReasons).toEqual([{ policyId: 'device', reason: 'unmetControls', unmetControls: ['compliantDevice'] }]);
  });

  test('several policies needing MFA: needs, MFA listed once; once done, allow', () => {
    const policies = [policy({ id: 'a', outcome: grant(['mfa']) }), policy({ id: 'b', outcome: grant(['mfa', 'compliantDevice'], 'or') })];
    const first = evaluate(policies, LOCATIONS, context());
    expect(first).toMatchObject({ decision: 'needs', missingControls: ['mfa'], blockReasons: [] });
    expect(evaluate(policies, LOCATIONS, withControl(context(), 'mfa', true)).decision).toBe('allow');
  });

  test('no policies, or none that applies: allow', () => {
    expect(evaluate([], LOCATIONS, context())).toEqual({ decision: 'allow', missingControls: [], blockReasons: [], results: [] });
    const elsewhere = policy({ assignments: { users: { include: { users: ['bob'] } } } });
    expect(evaluate([elsewhere], LOCATIONS, context()).decision).toBe('allow');
  });

  test('risk-based MFA: a high-risk sign-in needs MFA, a low-risk one does not', () => {
    const riskPolicy = [policy({ assignments: { signInRisk: ['high'] }, outcome: grant(['mfa']) })];
    expect(evaluate(riskPolicy, LOCATIONS, context({ risk: 'high' })).decision).toBe('needs');
    expect(evaluate(riskPolicy, LOCATIONS, context({ risk: 'low' })).decision).toBe('allow');
  });
});

describe('states: report-only and off', () => {
  test('a report-only block that applies is reported as a failure but does not block', () => {
    const outcome = evaluate([policy({ state: 'reportOnly', outcome: { block: true } })], LOCATIONS, context());
    expect(outcome).toEqual({
      decision: 'allow',
      missingControls: [],
      blockReasons: [],
      results: [{ policyId: 'p1', state: 'reportOnly', applied: true, result: 'reportOnlyFailure' }],
    });
  });

  test('a report-only grant reports success, failure with unmet controls, or not applied; the decision follows on policies only', () => {
    const policies = [
      policy({ id: 'ro-mfa', state: 'reportOnly', outcome: grant(['mfa']) }),
      policy({ id: 'ro-device', state: 'reportOnly', outcome: grant(['compliantDevice']) }),
      policy({ id: 'ro-android', state: 'reportOnly', assignments: { platforms: { include: ['android'] } } }),
      policy({ id: 'on-mfa', outcome: grant(['mfa']) }),
    ];
    const outcome = evaluate(policies, LOCATIONS, withControl(context(), 'mfa', true));
    expect(outcome.decision).toBe('allow');
    expect(outcome.results).toEqual([
      { policyId: 'ro-mfa', state: 'reportOnly', applied: true, result: 'reportOnlySuccess' },
      { policyId: 'ro-device', state: 'reportOnly', applied: true, result: 'reportOnlyFailure', unmetControls: ['compliantDevice'] },
      { policyId: 'ro-android', state: 'reportOnly', applied: false, notAppliedBecause: 'platformNotIncluded', result: 'reportOnlyNotApplied' },
      { policyId: 'on-mfa', state: 'on', applied: true, result: 'success' },
    ]);
  });

  test('an off policy is listed but not evaluated', () => {
    const outcome = evaluate([policy({ state: 'off', outcome: { block: true } })], LOCATIONS, context());
    expect(outcome.decision).toBe('allow');
    expect(outcome.results).toEqual([{ policyId: 'p1', state: 'off', applied: false, notAppliedBecause: 'policyOff', result: 'notApplied' }]);
  });
});

describe('validation', () => {
  const good = policy({ outcome: grant(['mfa']) });
  const policyCases: Array<[string, unknown, string, RegExp]> = [
    ['unknown state', { ...good, state: 'enabled' }, 'state', /one of on, off, reportOnly/],
    ['users include neither all nor an object', { ...good, assignments: { users: { include: 'everyone' } } }, 'assignments.users.include', /"all" or/],
    ['users include naming nobody', { ...good, assignments: { users: { include: { users: [], groups: [] } } } }, 'assignments.users.include', /at least one user or group/],
    ['unknown platform', { ...good, assignments: { users: { include: 'all' }, platforms: { include: ['ios', 'symbian'] } } }, 'assignments.platforms.include', /item 1: must be one of ios/],
    ['empty client app list', { ...good, assignments: { users: { include: 'all' }, clientApps: { include: [] } } }, 'assignments.clientApps.include', /at least one client app/],
    ['excluding any location', { ...good, assignments: { users: { include: 'all' }, locations: { include: ['any'], exclude: ['any'] } } }, 'assignments.locations.exclude.0', /cannot be excluded/],
    ['unknown risk level', { ...good, assignments: { users: { include: 'all' }, signInRisk: ['extreme'] } }, 'assignments.signInRisk.0', /one of low, medium, high/],
    ['unknown control', { ...good, outcome: grant(['sms' as GrantControl]) }, 'outcome.grant.controls.0', /one of mfa, approvedClientApp/],
    ['repeated control', { ...good, outcome: grant(['mfa', 'mfa']) }, 'outcome.grant.controls', /must not repeat/],
    ['bad operator', { ...good, outcome: { grant: { controls: ['mfa'], operator: 'xor' } } }, 'outcome.grant.operator', /"and".*"or"/],
    ['block and grant at once', { ...good, outcome: { block: true, grant: { controls: ['mfa'], operator: 'and' } } }, 'outcome', /exactly one of/],
    ['block: false', { ...good, outcome: { block: false } }, 'outcome.block', /must be true/],
    ['an unknown field', { ...good, priority: 1 }, '(root)', /priority/],
    ['an empty id', { ...good, id: '' }, 'id', /must not be empty/],
  ];
  test.each(policyCases)('policy rejected: %s', (_label, input, field, message) => {
    const result = policySchema.safeParse(input);
    expect(result.success).toBe(false);
    const issues = result.error!.issues.map((i) => ({ field: i.path.length ? i.path.join('.') : '(root)', message: i.message }));
    expect(issues).toContainEqual({ field, message: expect.stringMatching(message) });
  });

  const location = LOCATIONS[0]!;
  const locationCases: Array<[string, unknown, string, RegExp]> = [
    ['a bare address', { ...location, ranges: ['203.0.113.7'] }, 'ranges.0', /not in CIDR notation/],
    ['an IPv4 prefix over 32', { ...location, ranges: ['10.0.0.0/33'] }, 'ranges.0', /IPv4 prefix is 0 to 32/],
    ['an IPv6 prefix over 128', { ...location, ranges: ['2001:db8::/129'] }, 'ranges.0', /IPv6 prefix is 0 to 128/],
    ['an address out of range', { ...location, ranges: ['300.1.1.1/8'] }, 'ranges.0', /not an IPv4 or IPv6 address/],
    ['a malformed IPv6 address', { ...location, ranges: ['2001:db8:::1/64'] }, 'ranges.0', /not an IPv4 or IPv6 address/],
    ['a zone index', { ...location, ranges: ['fe80::%eth0/64'] }, 'ranges.0', /zone index/],
    ['two slashes', { ...location, ranges: ['10.0.0.0/8/8'] }, 'ranges.0', /not in CIDR notation/],
    ['a non-numeric prefix', { ...location, ranges: ['10.0.0.0/x'] }, 'ranges.0', /prefix length "x"/],
    ['no ranges', { ...location, ranges: [] }, 'ranges', /at least one CIDR range/],
    ['a reserved id', { ...location, id: 'trusted' }, 'id', /must not be "any" or "trusted"/],
  ];
  test.each(locationCases)('named location rejected: %s', (_label, input, field, message) => {
    const result = namedLocationSchema.safeParse(input);
    expect(result.success).toBe(false);
    expect(result.error!.issues.map((i) => ({ field: i.path.join('.'), message: i.message }))).toContainEqual({ field, message: expect.stringMatching(message) });
  });

  test('valid policies and locations (IPv4, IPv6, /0) pass the schemas', () => {
    expect(namedLocationSchema.safeParse({ id: 'w', name: 'World', trusted: false, ranges: ['0.0.0.0/0', '::/0', '2001:db8::/32'] }).success).toBe(true);
    expect(policySchema.parse(good)).toEqual(good);
    expect(policySetSchema.safeParse({ policies: [good], locations: LOCATIONS }).success).toBe(true);
  });

  test('the policy set: duplicate ids and references to missing locations are refused by compilePolicies', () => {
    const refersToNowhere = policy({ id: 'p2', assignments: { locations: { include: ['nowhere'], exclude: ['trusted'] } } });
    let thrown: unknown;
    try {
      compilePolicies([good, good, refersToNowhere], [...LOCATIONS, LOCATIONS[1]!]);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(PolicyConfigError);
    expect((thrown as PolicyConfigError).issues).toEqual([
      { field: 'policies.1.id', message: 'policy id "p1" is used more than once' },
      { field: 'locations.3.id', message: 'location id "branch" is used more than once' },
      { field: 'policies.2.assignments.locations.include.0', message: 'no named location has id "nowhere"' },
    ]);
  });

  test('compilePolicies refuses an invalid range even when the caller skipped the schema', () => {
    expect(() => compilePolicies([good], [{ id: 'x', name: 'X', trusted: true, ranges: ['10.0.0.0/99'] }])).toThrow(/locations\.0\.ranges\.0: .*IPv4 prefix is 0 to 32/);
  });

  test('the sign-in context schema refuses an IP that is not one', () => {
    expect(signInContextSchema.safeParse(context()).success).toBe(true);
    expect(signInContextSchema.safeParse(context({ ip: IP.hq6 })).success).toBe(true);
    const bad = signInContextSchema.safeParse(context({ ip: '203.0.113.0/24' }));
    expect(bad.error?.issues.map((i) => i.path.join('.'))).toEqual(['ip']);
  });
});

describe('properties', () => {
  const USERS = ['alice', 'bob', 'carol'];
  const GROUPS = ['staff', 'admins', 'breakglass'];
  const APPS = ['pigeon-mail', 'other-mail', 'legacy-mail'];
  const IPS = Object.values(IP);

  const subjects = fc
    .record({ users: fc.subarray(USERS), groups: fc.subarray(GROUPS) })
    .filter((s) => s.users.length + s.groups.length > 0);
  const allOr = <T>(value: fc.Arbitrary<T>) => fc.oneof(fc.constant('all' as const), value);
  const locationRef = fc.constantFrom('any', 'trusted', ...LOCATIONS.map((l) => l.id));

  const assignmentsArb: fc.Arbitrary<PolicyAssignments> = fc.record(
    {
      users: fc.record({ include: allOr(subjects), exclude: fc.record({ users: fc.subarray(USERS), groups: fc.subarray(GROUPS) }) }, { requiredKeys: ['include'] }),
      clientApps: fc.record({ include: allOr(fc.subarray(APPS, { minLength: 1 })), exclude: fc.subarray(APPS) }, { requiredKeys: ['include'] }),
      platforms: fc.record({ include: allOr(fc.subarray([...PLATFORMS], { minLength: 1 })), exclude: fc.subarray([...PLATFORMS]) }, { requiredKeys: ['include'] }),
      locations: fc.record(
        { include: fc.uniqueArray(locationRef, { minLength: 1, maxLength: 3 }), exclude: fc.uniqueArray(locationRef.filter((r) => r !== 'any'), { maxLength: 2 }) },
        { requiredKeys: ['include'] },
      ),
      signInRisk: fc.subarray(['low', 'medium', 'high'] as const, { minLength: 1 }).map((l) => [...l]),
    },
    { requiredKeys: ['users'] },
  );
  const outcomeArb: fc.Arbitrary<PolicyOutcome> = fc.oneof(
    { weight: 1, arbitrary: fc.constant({ block: true as const }) },
    { weight: 4, arbitrary: fc.record({ controls: fc.subarray([...GRANT_CONTROLS], { minLength: 1 }), operator: fc.constantFrom('and' as const, 'or' as const) }).map((g) => ({ grant: g })) },
  );
  const policiesArb = fc
    .array(fc.record({ state: fc.constantFrom('on' as const, 'off' as const, 'reportOnly' as const), assignments: assignmentsArb, outcome: outcomeArb }), { maxLength: 8 })
    .map((list) => list.map((p, i): Policy => ({ id: `p${i}`, name: `Policy ${i}`, ...p })));
  const contextArb: fc.Arbitrary<SignInContext> = fc.record({
    userId: fc.constantFrom(...USERS),
    groups: fc.subarray(GROUPS),
    clientApp: fc.constantFrom(...APPS),
    approvedClientApp: fc.boolean(),
    platform: fc.constantFrom(...PLATFORMS),
    ip: fc.constantFrom(...IPS),
    risk: fc.constantFrom('none' as const, 'low' as const, 'medium' as const, 'high' as const),
    satisfied: fc.record({ mfa: fc.boolean(), compliantDevice: fc.boolean(), appProtectionPolicy: fc.boolean() }),
  });

  const RANK: Record<Decision, number> = { allow: 0, needs: 1, block: 2 };
  const decisionOf = (policies: Policy[], ctx: SignInContext) => {
    const { decision, missingControls, blockReasons } = compilePolicies(policies, LOCATIONS).evaluate(ctx);
    return { decision, missingControls, blockReasons };
  };

  test('report-only policies never change the decision (and each gets a report-only result)', () => {
    fc.assert(
      fc.property(policiesArb, contextArb, (policies, ctx) => {
        const full = compilePolicies(policies, LOCATIONS).evaluate(ctx);
        const without = decisionOf(policies.filter((p) => p.state !== 'reportOnly'), ctx);
        expect({ decision: full.decision, missingControls: full.missingControls, blockReasons: full.blockReasons }).toEqual(without);
        policies.forEach((p, i) => {
          if (p.state === 'reportOnly') expect(full.results[i]?.result).toMatch(/^reportOnly/);
        });
      }),
      { numRuns: RUNS },
    );
  });

  test('turning a policy from on to off never makes the decision stricter (an allow never becomes a block)', () => {
    fc.assert(
      fc.property(policiesArb, contextArb, fc.nat(), (policies, ctx, pick) => {
        const on = policies.map((p, i) => (p.state === 'on' ? i : -1)).filter((i) => i >= 0);
        fc.pre(on.length > 0);
        const flipped = on[pick % on.length]!;
        const before = decisionOf(policies, ctx).decision;
        const after = decisionOf(policies.map((p, i) => (i === flipped ? { ...p, state: 'off' as const } : p)), ctx).decision;
        expect(RANK[after]).toBeLessThanOrEqual(RANK[before]);
      }),
      { numRuns: RUNS },
    );
  });

  test('excluding the signing-in user takes any policy off them, whatever includes them', () => {
    fc.assert(
      fc.property(policiesArb, contextArb, fc.boolean(), (policies, ctx, byGroup) => {
        fc.pre(policies.length > 0 && (!byGroup || ctx.groups.length > 0));
        const excluded = policies.map((p): Policy => {
          const exclude = byGroup ? { groups: [ctx.groups[0]!] } : { users: [ctx.userId] };
          return { ...p, assignments: { ...p.assignments, users: { include: p.assignments.users.include, exclude } } };
        });
        const outcome = compilePolicies(excluded, LOCATIONS).evaluate(ctx);
        expect(outcome.decision).toBe('allow');
        for (const r of outcome.results) expect(r.applied).toBe(false);
      }),
      { numRuns: RUNS },
    );
  });
});

test('cost: 10,000 evaluations over 50 policies (printed, not asserted)', () => {
  const [policies] = fc.sample(
    fc.array(
      fc.record({
        users: fc.constantFrom<PolicyAssignments['users']>({ include: 'all' }, { include: { groups: ['staff'] } }, { include: 'all', exclude: { users: ['u7'] } }),
        locations: fc.constantFrom<PolicyAssignments['locations']>(undefined, { include: ['any'], exclude: ['trusted'] }, { include: ['branch', 'cafe'] }),
        platforms: fc.constantFrom<PolicyAssignments['platforms']>(undefined, { include: ['ios', 'android'] }, { include: 'all', exclude: ['web'] }),
        outcome: fc.constantFrom<PolicyOutcome>(grant(['mfa']), grant(['compliantDevice', 'appProtectionPolicy'], 'or'), { block: true }),
        state: fc.constantFrom('on' as const, 'reportOnly' as const),
      }),
      { minLength: 50, maxLength: 50 },
    ),
    { numRuns: 1, seed: 16 },
  );
  const set = policies!.map((p, i): Policy => ({
    id: `p${i}`,
    name: `Policy ${i}`,
    state: p.state,
    // Block policies cover one user only, so grants decide for the others and all three decisions occur.
    assignments: {
      users: 'block' in p.outcome ? { include: { users: ['u9'] } } : p.users,
      ...(p.locations && { locations: p.locations }),
      ...(p.platforms && { platforms: p.platforms }),
    },
    outcome: p.outcome,
  }));
  const contexts = fc.sample(
    fc.record({
      userId: fc.constantFrom('u1', 'u7', 'u9'),
      groups: fc.subarray(['staff', 'admins']),
      clientApp: fc.constant('pigeon-mail'),
      approvedClientApp: fc.boolean(),
      platform: fc.constantFrom(...PLATFORMS),
      ip: fc.constantFrom(...Object.values(IP)),
      risk: fc.constantFrom('none' as const, 'high' as const),
      satisfied: fc.record({ mfa: fc.boolean(), compliantDevice: fc.boolean(), appProtectionPolicy: fc.boolean() }),
    }),
    { numRuns: 10_000, seed: 16 },
  );

  const compileStart = performance.now();
  const evaluator = compilePolicies(set, LOCATIONS);
  const compileMs = performance.now() - compileStart;

  const counts: Record<Decision, number> = { allow: 0, needs: 0, block: 0 };
  const start = performance.now();
  for (const ctx of contexts) counts[evaluator.evaluate(ctx).decision] += 1;
  const totalMs = performance.now() - start;

  const oneOffStart = performance.now();
  for (const ctx of contexts.slice(0, 200)) evaluate(set, LOCATIONS, ctx);
  const oneOffMs = (performance.now() - oneOffStart) / 200;

  console.log(
    `conditional access: compile ${compileMs.toFixed(2)} ms; 10,000 evaluations over 50 policies in ${totalMs.toFixed(1)} ms ` +
      `(${((totalMs * 1000) / contexts.length).toFixed(1)} µs each); one-off evaluate() with compile ${(oneOffMs * 1000).toFixed(0)} µs; decisions ${JSON.stringify(counts)}`,
  );
  expect(counts.allow + counts.needs + counts.block).toBe(10_000);
  expect(Object.values(counts).filter((n) => n > 0).length).toBeGreaterThan(1);
});
