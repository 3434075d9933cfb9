/**
 * Conditional access: the policy engine, pure logic (no store, no clock, no HTTP). Callers build a sign-in context
 * (who, which app, which platform, from where, at what risk, which controls are already satisfied) and ask the
 * compiled policy set for a decision.
 *
 * A policy is "if these assignments match, then this outcome". Semantics, modelled on Microsoft Entra conditional
 * access:
 *
 * - **Applicability.** A policy applies to a sign-in when every condition it configures matches; a condition it
 *   leaves out matches everything. Users (and groups) must be included and not excluded; likewise client apps,
 *   device platforms and named locations; `signInRisk`, when present, lists the risk levels it covers (a sign-in at
 *   risk `none` never matches it). **Exclusions beat inclusions** in every dimension, so an admin can always carve a
 *   break-glass account out of an "all users" policy.
 * - **Locations.** `any` is every sign-in (also one whose IP could not be parsed); `trusted` is any named location
 *   marked trusted; otherwise a named location's id. An IP that is not a valid address is in no named location
 *   (so "everywhere except trusted" still catches it: fail closed). IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`,
 *   what a dual-stack socket reports) match IPv4 ranges.
 * - **States.** `on` policies decide. `reportOnly` policies are evaluated and their would-be result reported
 *   (`reportOnly*` results), but never change the decision: that is what makes a report-only rollout safe. `off`
 *   policies are not evaluated; they appear in the results as `notApplied` / `policyOff` so a What If view lists them.
 * - **Decision.** Every applicable `on` policy must be satisfied. A `block` outcome wins over everything. A `grant`
 *   outcome is satisfied when all (`and`) or at least one (`or`) of its controls are. No applicable policy → allow.
 * - **'needs' vs 'block'.** A failing grant the user can fix by completing an interactive control (today: MFA) gives
 *   `needs` with `missingControls` (e.g. `['mfa']`): prompt, then evaluate again. A failing grant that only a device
 *   or app change could fix (compliant device, approved client app, app protection policy) gives `block` with the
 *   policies and unmet controls in `blockReasons`; `missingControls` is then empty, so a caller never prompts for MFA
 *   only to refuse afterwards. An `or` grant that lists MFA is fixable by MFA even if its other controls are unmet;
 *   an `and` grant is fixable only if MFA is all it lacks.
 *
 * Cost: `compilePolicies` validates the set and turns every named location into a `net.BlockList` (and all trusted
 * ones into one more) once; users, groups, apps and platforms become Sets. An evaluation is then one pass over the
 * policies with Set look-ups; the IP is parsed once (only if some applicable policy names a location) and each
 * referenced location costs at most one BlockList check, memoised for the evaluation.
 * Compile when the policy set changes, not per sign-in; `evaluate()` (compile + evaluate) is for one-off use.
 */
import net from 'node:net';
import { z } from 'zod';
import type { FieldError } from '../errors';

// ---------------------------------------------------------------------------------------------------------------
// Vocabulary

export const POLICY_STATES = ['on', 'off', 'reportOnly'] as const;
export type PolicyState = (typeof POLICY_STATES)[number];

export const PLATFORMS = ['ios', 'android', 'windows', 'macos', 'linux', 'web', 'other'] as const;
export type Platform = (typeof PLATFORMS)[number];

export const RISK_LEVELS = ['low', 'medium', 'high'] as const;
export type RiskLevel = (typeof RISK_LEVELS)[number];
/** A sign-in's risk: a policy's `signInRisk` lists only real levels, so `none` never matches one. */
export type SignInRisk = 'none' | RiskLevel;

export const GRANT_CONTROLS = ['mfa', 'approvedClientApp', 'compliantDevice', 'appProtectionPolicy'] as const;
export type GrantControl = (typeof GRANT_CONTROLS)[number];

/** Controls a user can satisfy during the sign-in itself; the others need a different device or app. */
export const INTERACTIVE_CONTROLS = ['mfa'] as const satisfies readonly GrantControl[];
export type InteractiveControl = (typeof INTERACTIVE_CONTROLS)[number];

/** Special location references: every sign-in, or any named location marked trusted. */
export const ANY_LOCATION = 'any';
export const TRUSTED_LOCATIONS = 'trusted';

// ---------------------------------------------------------------------------------------------------------------
// Types

export interface Subjects {
  users?: string[];
  groups?: string[];
}

export interface PolicyAssignments {
  users: { include: 'all' | Subjects; exclude?: Subjects };
  clientApps?: { include: 'all' | string[]; exclude?: string[] };
  platforms?: { include: 'all' | Platform[]; exclude?: Platform[] };
  /** Entries are named location ids, `any` (include only) or `trusted`. */
  locations?: { include: string[]; exclude?: string[] };
  signInRisk?: RiskLevel[];
}

export type PolicyOutcome =
  | { block: true }
  | { grant: { controls: GrantControl[]; operator: 'and' | 'or' } };

export interface Policy {
  id: string;
  name: string;
  state: PolicyState;
  assignments: PolicyAssignments;
  outcome: PolicyOutcome;
}

export interface NamedLocation {
  id: string;
  name: string;
  trusted: boolean;
  /** IPv4 or IPv6 CIDR ranges, e.g. `203.0.113.0/24`, `2001:db8::/32`. */
  ranges: string[];
}

export interface SignInContext {
  userId: string;
  groups: readonly string[];
  /** The OAuth client id of the app signing in. */
  clientApp: string;
  /** Whether that client is on the approved-client-app list (decided by the caller, not self-declared). */
  approvedClientApp: boolean;
  platform: Platform;
  ip: string;
  risk: SignInRisk;
  satisfied: { mfa: boolean; compliantDevice: boolean; appProtectionPolicy: boolean };
}

export type Decision = 'allow' | 'block' | 'needs';

export type NotAppliedReason =
  | 'policyOff'
  | 'userNotIncluded'
  | 'userExcluded'
  | 'clientAppNotIncluded'
  | 'clientAppExcluded'
  | 'platformNotIncluded'
  | 'platformExcluded'
  | 'locationNotIncluded'
  | 'locationExcluded'
  | 'signInRiskNotIncluded';

export type PolicyResultKind =
  | 'notApplied'
  | 'success'
  | 'failure'
  | 'reportOnlySuccess'
  | 'reportOnlyFailure'
  | 'reportOnlyNotApplied';

export interface PolicyResult {
  policyId: string;
  state: PolicyState;
  applied: boolean;
  notAppliedBecause?: NotAppliedReason;
  result: PolicyResultKind;
  /** A failing grant's unmet controls (for `or`: all of them, any one would do). Absent for a block outcome. */
  unmetControls?: GrantControl[];
}

export type BlockReason =
  | { policyId: string; reason: 'blockPolicy' }
  | { policyId: string; reason: 'unmetControls'; unmetControls: GrantControl[] };

export interface Evaluation {
  decision: Decision;
  /** For `needs`: the interactive controls to complete before evaluating again. Empty otherwise. */
  missingControls: InteractiveControl[];
  /** For `block`: each `on` policy that cannot be satisfied interactively, and why. Empty otherwise. */
  blockReasons: BlockReason[];
  /** One entry per policy, in the order given (report-only and off ones included). */
  results: PolicyResult[];
}

export interface PolicyEvaluator {
  evaluate(context: SignInContext): Evaluation;
  readonly policies: readonly Policy[];
  readonly locations: readonly NamedLocation[];
}

/** A policy set that does not validate (bad fields, duplicate ids, a reference to a missing location). */
export class PolicyConfigError extends Error {
  constructor(readonly issues: FieldError[]) {
    super(`conditional access policies are not valid: ${issues.map((i) => `${i.field}: ${i.message}`).join('; ')}`);
    this.name = 'PolicyConfigError';
  }
}

// ---------------------------------------------------------------------------------------------------------------
// CIDR parsing: node's BlockList does the address work; this only splits "address/prefix" and words the errors.

export type IpFamily = 'ipv4' | 'ipv6';
export interface Cidr {
  address: string;
  prefix: number;
  family: IpFamily;
}

/** The parsed range, or a sentence saying what is wrong with it. */
export function parseCidr(range: string): Cidr | string {
  const slash = range.indexOf('/');
  if (slash < 0 || slash !== range.lastIndexOf('/')) {
    return `"${range}" is not in CIDR notation (an address and a prefix length, such as 203.0.113.0/24 or 2001:db8::/32)`;
  }
  const address = range.slice(0, slash);
  const prefixText = range.slice(slash + 1);
  if (address.includes('%')) return `"${range}" carries a zone index; ranges must not`;
  const version = net.isIP(address);
  if (version === 0) return `"${address}" in "${range}" is not an IPv4 or IPv6 address`;
  const family: IpFamily = version === 4 ? 'ipv4' : 'ipv6';
  const max = version === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) {
    return `"${range}" has prefix length "${prefixText}"; an ${family === 'ipv4' ? 'IPv4' : 'IPv6'} prefix is 0 to ${max}`;
  }
  const cidr: Cidr = { address, prefix: Number(prefixText), family };
  try {
    new net.BlockList().addSubnet(cidr.address, cidr.prefix, cidr.family);
  } catch (error) {
    return `"${range}" is not a valid range: ${(error as Error).message}`;
  }
  return cidr;
}

// ---------------------------------------------------------------------------------------------------------------
// Schemas

const MAX_LIST = 10_000;
export const identifier = z
  .string()
  .min(1, 'must not be empty')
  .max(200, 'must be at most 200 characters')
  .refine((s) => !/[\u0000-\u001f\u007f]/.test(s), 'must not contain control characters');
const name = identifier;
const idList = z.array(identifier).max(MAX_LIST, `must list at most ${MAX_LIST} entries`);

/**
 * `"all"` or `schema`. zod reports a failed union as a bare "Invalid input", so the error names what was expected,
 * or, for a value that was meant as the list/object, that branch's own first problem.
 */
function allOr<T extends z.ZodType>(schema: T, what: string) {
  return z.union([z.literal('all'), schema], {
    error: (issue) => {
      if (typeof issue.input === 'string') return `must be "all" or ${what}`;
      const inner = schema.safeParse(issue.input).error?.issues[0];
      if (!inner || typeof issue.input !== 'object' || issue.input === null) return `must be "all" or ${what}`;
      if (!inner.path.length) return inner.message;
      const where = inner.path.join('.');
      return `${typeof inner.path[0] === 'number' ? `item ${where}` : where}: ${inner.message}`;
    },
  });
}

const subjectsSchema = z.strictObject({ users: idList.optional(), groups: idList.optional() });
const includedSubjects = subjectsSchema.refine(
  (s) => (s.users?.length ?? 0) + (s.groups?.length ?? 0) > 0,
  'must name at least one user or group (or be "all")',
);

const platform = z.enum(PLATFORMS, { error: `must be one of ${PLATFORMS.join(', ')}` });
const riskLevel = z.enum(RISK_LEVELS, { error: `must be one of ${RISK_LEVELS.join(', ')}` });
const grantControl = z.enum(GRANT_CONTROLS, { error: `must be one of ${GRANT_CONTROLS.join(', ')}` });

const noRepeats = <T>(list: readonly T[]) => new Set(list).size === list.length;

const assignmentsSchema = z.strictObject({
  users: z.strictObject({
    include: allOr(includedSubjects, 'an object with users and/or groups'),
    exclude: subjectsSchema.optional(),
  }),
  clientApps: z
    .strictObject({
      include: allOr(idList.min(1, 'must list at least one client app (or be "all")'), 'a list of client app ids'),
      exclude: idList.optional(),
    })
    .optional(),
  platforms: z
    .strictObject({
      include: allOr(z.array(platform).min(1, 'must list at least one platform (or be "all")'), `a list of platforms (${PLATFORMS.join(', ')})`),
      exclude: z.array(platform).optional(),
    })
    .optional(),
  locations: z
    .strictObject({
      include: idList.min(1, `must list at least one location ("${ANY_LOCATION}", "${TRUSTED_LOCATIONS}" or a named location id)`),
      exclude: z
        .array(identifier.refine((s) => s !== ANY_LOCATION, `"${ANY_LOCATION}" cannot be excluded (the policy would never apply; turn it off instead)`))
        .optional(),
    })
    .optional(),
  signInRisk: z
    .array(riskLevel)
    .min(1, 'must list at least one risk level, or be left out')
    .refine(noRepeats, 'must not repeat a level')
    .optional(),
});

const outcomeSchema = z
  .strictObject({
    block: z.literal(true, { error: 'must be true (a policy that does not block grants: use "grant")' }).optional(),
    grant: z
      .strictObject({
        controls: z.array(grantControl).min(1, 'must list at least one control').refine(noRepeats, 'must not repeat a control'),
        operator: z.enum(['and', 'or'], { error: 'must be "and" (all controls) or "or" (any one)' }),
      })
      .optional(),
  })
  .refine((o) => (o.block === undefined) !== (o.grant === undefined), 'must be exactly one of {block: true} or {grant: {controls, operator}}')
  .transform((o): PolicyOutcome => (o.grant ? { grant: o.grant } : { block: true }));

export const policySchema = z.strictObject({
  id: identifier,
  name,
  state: z.enum(POLICY_STATES, { error: `must be one of ${POLICY_STATES.join(', ')}` }),
  assignments: assignmentsSchema,
  outcome: outcomeSchema,
});

const cidrSchema = z.string().check((ctx) => {
  const parsed = parseCidr(ctx.value);
  if (typeof parsed === 'string') ctx.issues.push({ code: 'custom', message: parsed, input: ctx.value });
});

export const namedLocationSchema = z.strictObject({
  id: identifier.refine(
    (s) => s !== ANY_LOCATION && s !== TRUSTED_LOCATIONS,
    `must not be "${ANY_LOCATION}" or "${TRUSTED_LOCATIONS}" (those name every location and the trusted ones)`,
  ),
  name,
  trusted: z.boolean({ error: 'must be true or false' }),
  ranges: z.array(cidrSchema).min(1, 'must list at least one CIDR range').max(MAX_LIST, `must list at most ${MAX_LIST} ranges`),
});

/** Policies and the named locations they refer to, validated together (ids unique, every reference resolves). */
export const policySetSchema = z
  .strictObject({ policies: z.array(policySchema), locations: z.array(namedLocationSchema) })
  .check((ctx) => {
    const { policies, locations } = ctx.value;
    const duplicate = (path: (string | number)[], what: string, id: string) =>
      ctx.issues.push({ code: 'custom', message: `${what} id "${id}" is used more than once`, path, input: id });
    const policyIds = new Set<string>();
    policies.forEach((p, i) => {
      if (policyIds.has(p.id)) duplicate(['policies', i, 'id'], 'policy', p.id);
      policyIds.add(p.id);
    });
    const locationIds = new Set<string>();
    locations.forEach((l, i) => {
      if (locationIds.has(l.id)) duplicate(['locations', i, 'id'], 'location', l.id);
      locationIds.add(l.id);
    });
    policies.forEach((p, i) => {
      for (const side of ['include', 'exclude'] as const) {
        (p.assignments.locations?.[side] ?? []).forEach((ref, j) => {
          if (ref === ANY_LOCATION || ref === TRUSTED_LOCATIONS || locationIds.has(ref)) return;
          ctx.issues.push({
            code: 'custom',
            message: `no named location has id "${ref}"`,
            path: ['policies', i, 'assignments', 'locations', side, j],
            input: ref,
          });
        });
      }
    });
  });

export const signInContextSchema = z.strictObject({
  userId: identifier,
  groups: idList,
  clientApp: identifier,
  approvedClientApp: z.boolean(),
  platform,
  ip: z.string().refine((s) => net.isIP(s) !== 0, 'must be an IPv4 or IPv6 address'),
  risk: z.enum(['none', ...RISK_LEVELS]),
  satisfied: z.strictObject({ mfa: z.boolean(), compliantDevice: z.boolean(), appProtectionPolicy: z.boolean() }),
});

// The hand-written types above are what callers read; these lines stop compiling if the schemas drift from them
// (a field added, removed or retyped; only an extra optional field on one side would slip through).
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const schemasMatchTypes: [
  Same<z.output<typeof policySchema>, Policy>,
  Same<z.output<typeof namedLocationSchema>, NamedLocation>,
  z.output<typeof signInContextSchema> extends SignInContext ? true : false,
] = [true, true, true];
void schemasMatchTypes;

/** zod issues as `{field, message}` (the shape of a 400 invalidRequest's `errors`). */
export function fieldErrors(error: z.ZodError): FieldError[] {
  return error.issues.map((i) => ({ field: i.path.length ? i.path.join('.') : '(root)', message: i.message }));
}

// ---------------------------------------------------------------------------------------------------------------
// Compilation

/** "Does this sign-in's IP fall in the list?", memoised for one evaluation. */
type InList = (list: net.BlockList) => boolean;

interface LocationRefs {
  any: boolean;
  lists: net.BlockList[];
}

interface CompiledPolicy {
  policy: Policy;
  allUsers: boolean;
  includeUsers: ReadonlySet<string>;
  includeGroups: ReadonlySet<string>;
  excludeUsers: ReadonlySet<string>;
  excludeGroups: ReadonlySet<string>;
  clientApps?: { include: ReadonlySet<string> | 'all'; exclude: ReadonlySet<string> };
  platforms?: { include: ReadonlySet<Platform> | 'all'; exclude: ReadonlySet<Platform> };
  locations?: { include: LocationRefs; exclude: LocationRefs };
  risk?: ReadonlySet<SignInRisk>;
}

function blockListOf(ranges: readonly string[]): net.BlockList {
  const list = new net.BlockList();
  for (const range of ranges) {
    const cidr = parseCidr(range);
    // Unreachable after validation; kept so a future caller that skips it fails loudly, not silently open.
    if (typeof cidr === 'string') throw new PolicyConfigError([{ field: 'ranges', message: cidr }]);
    list.addSubnet(cidr.address, cidr.prefix, cidr.family);
  }
  return list;
}

function compileOne(policy: Policy, byId: ReadonlyMap<string, net.BlockList>, trusted: net.BlockList): CompiledPolicy {
  const { users, clientApps, platforms, locations, signInRisk } = policy.assignments;
  const refs = (entries: readonly string[] = []): LocationRefs => ({
    any: entries.includes(ANY_LOCATION),
    lists: entries
      .filter((e) => e !== ANY_LOCATION)
      .map((e) => (e === TRUSTED_LOCATIONS ? trusted : byId.get(e)))
      .filter((l): l is net.BlockList => l !== undefined),
  });
  return {
    policy,
    allUsers: users.include === 'all',
    includeUsers: new Set(users.include === 'all' ? [] : users.include.users),
    includeGroups: new Set(users.include === 'all' ? [] : users.include.groups),
    excludeUsers: new Set(users.exclude?.users),
    excludeGroups: new Set(users.exclude?.groups),
    clientApps: clientApps && {
      include: clientApps.include === 'all' ? 'all' : new Set(clientApps.include),
      exclude: new Set(clientApps.exclude),
    },
    platforms: platforms && {
      include: platforms.include === 'all' ? 'all' : new Set(platforms.include),
      exclude: new Set(platforms.exclude),
    },
    locations: locations && { include: refs(locations.include), exclude: refs(locations.exclude) },
    risk: signInRisk && new Set<SignInRisk>(signInRisk),
  };
}

const inAny = (groups: readonly string[], set: ReadonlySet<string>) => set.size > 0 && groups.some((g) => set.has(g));
const inRefs = (refs: LocationRefs, inList: InList) => refs.any || refs.lists.some(inList);

/** Why the policy does not apply to this sign-in, or undefined when it does. Exclusion is checked after inclusion
 *  and overrides it: an included-and-excluded sign-in is not covered. */
function whyNotApplied(p: CompiledPolicy, ctx: SignInContext, inList: InList): NotAppliedReason | undefined {
  const included = p.allUsers || p.includeUsers.has(ctx.userId) || inAny(ctx.groups, p.includeGroups);
  if (!included) return 'userNotIncluded';
  if (p.excludeUsers.has(ctx.userId) || inAny(ctx.groups, p.excludeGroups)) return 'userExcluded';
  if (p.clientApps) {
    if (p.clientApps.include !== 'all' && !p.clientApps.include.has(ctx.clientApp)) return 'clientAppNotIncluded';
    if (p.clientApps.exclude.has(ctx.clientApp)) return 'clientAppExcluded';
  }
  if (p.platforms) {
    if (p.platforms.include !== 'all' && !p.platforms.include.has(ctx.platform)) return 'platformNotIncluded';
    if (p.platforms.exclude.has(ctx.platform)) return 'platformExcluded';
  }
  if (p.locations) {
    if (!inRefs(p.locations.include, inList)) return 'locationNotIncluded';
    if (inRefs(p.locations.exclude, inList)) return 'locationExcluded';
  }
  if (p.risk && !p.risk.has(ctx.risk)) return 'signInRiskNotIncluded';
  return undefined;
}

function controlSatisfied(control: GrantControl, ctx: SignInContext): boolean {
  switch (control) {
    case 'mfa':
      return ctx.satisfied.mfa;
    case 'approvedClientApp':
      return ctx.approvedClientApp;
    case 'compliantDevice':
      return ctx.satisfied.compliantDevice;
    case 'appProtectionPolicy':
      return ctx.satisfied.appProtectionPolicy;
  }
}

const isInteractive = (c: GrantControl): c is InteractiveControl => (INTERACTIVE_CONTROLS as readonly string[]).includes(c);

/** A grant's unmet controls: empty when satisfied; for `or`, every control when none is met. */
function unmetControls(grant: { controls: GrantControl[]; operator: 'and' | 'or' }, ctx: SignInContext): GrantControl[] {
  const unmet = grant.controls.filter((c) => !controlSatisfied(c, ctx));
  if (grant.operator === 'or' && unmet.length < grant.controls.length) return [];
  return unmet;
}

/**
 * The IP membership test for one evaluation. The address is parsed once (a `SocketAddress`, built only if some
 * policy asks about a named location) and each distinct list is checked at most once, however many policies ask:
 * checking a parsed address is several times cheaper than handing BlockList the string each time.
 */
function ipMatcher(ip: string): InList {
  let address: net.SocketAddress | null | undefined;
  const seen = new Map<net.BlockList, boolean>();
  return (list) => {
    if (address === undefined) address = socketAddress(ip);
    if (address === null) return false;
    let hit = seen.get(list);
    if (hit === undefined) {
      hit = list.check(address);
      seen.set(list, hit);
    }
    return hit;
  };
}

/** The parsed address, or null for a string that is not an IP address (it is then in no named location). */
function socketAddress(ip: string): net.SocketAddress | null {
  const version = net.isIP(ip);
  if (version === 0) return null;
  return new net.SocketAddress({ address: ip, family: version === 4 ? 'ipv4' : 'ipv6' });
}

function evaluateCompiled(compiled: readonly CompiledPolicy[], ctx: SignInContext): Evaluation {
  const inList = ipMatcher(ctx.ip);
  const results: PolicyResult[] = [];
  const blockReasons: BlockReason[] = [];
  const missing = new Set<InteractiveControl>();
  let blocked = false;

  for (const p of compiled) {
    const { id: policyId, state, outcome } = p.policy;
    if (state === 'off') {
      results.push({ policyId, state, applied: false, notAppliedBecause: 'policyOff', result: 'notApplied' });
      continue;
    }
    const reportOnly = state === 'reportOnly';
    const reason = whyNotApplied(p, ctx, inList);
    if (reason) {
      results.push({ policyId, state, applied: false, notAppliedBecause: reason, result: reportOnly ? 'reportOnlyNotApplied' : 'notApplied' });
      continue;
    }
    if ('block' in outcome) {
      results.push({ policyId, state, applied: true, result: reportOnly ? 'reportOnlyFailure' : 'failure' });
      if (!reportOnly) {
        blocked = true;
        blockReasons.push({ policyId, reason: 'blockPolicy' });
      }
      continue;
    }
    const unmet = unmetControls(outcome.grant, ctx);
    if (unmet.length === 0) {
      results.push({ policyId, state, applied: true, result: reportOnly ? 'reportOnlySuccess' : 'success' });
      continue;
    }
    results.push({ policyId, state, applied: true, result: reportOnly ? 'reportOnlyFailure' : 'failure', unmetControls: unmet });
    if (reportOnly) continue;
    // Fixable in the sign-in: an `and` grant lacking only interactive controls, an `or` grant offering one.
    const fixable = outcome.grant.operator === 'and' ? unmet.every(isInteractive) : unmet.some(isInteractive);
    if (fixable) {
      for (const c of unmet) if (isInteractive(c)) missing.add(c);
    } else {
      blocked = true;
      blockReasons.push({ policyId, reason: 'unmetControls', unmetControls: unmet });
    }
  }

  if (blocked) return { decision: 'block', missingControls: [], blockReasons, results };
  if (missing.size > 0) {
    const missingControls = INTERACTIVE_CONTROLS.filter((c) => missing.has(c));
    return { decision: 'needs', missingControls, blockReasons: [], results };
  }
  return { decision: 'allow', missingControls: [], blockReasons: [], results };
}

/**
 * Validates the policy set (throws `PolicyConfigError` listing every problem) and precompiles it: named locations
 * into BlockLists, subject lists into Sets. Call it when policies or locations change; `evaluate` is then cheap.
 */
export function compilePolicies(policies: readonly Policy[], locations: readonly NamedLocation[]): PolicyEvaluator {
  const parsed = policySetSchema.safeParse({ policies, locations });
  if (!parsed.success) throw new PolicyConfigError(fieldErrors(parsed.error));
  const set = parsed.data;
  const byId = new Map(set.locations.map((l) => [l.id, blockListOf(l.ranges)] as const));
  const trusted = blockListOf(set.locations.filter((l) => l.trusted).flatMap((l) => l.ranges));
  const compiled = set.policies.map((p) => compileOne(p, byId, trusted));
  return {
    evaluate: (context) => evaluateCompiled(compiled, context),
    policies: set.policies,
    locations: set.locations,
  };
}

/** One-off evaluation (compiles every time: use `compilePolicies` for anything on a hot path). */
export function evaluate(policies: readonly Policy[], locations: readonly NamedLocation[], context: SignInContext): Evaluation {
  return compilePolicies(policies, locations).evaluate(context);
}
