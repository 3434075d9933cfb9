/**
 * App protection policies (issue 16), pure logic: no store, no clock, no HTTP. Apps fetch the policy that applies to
 * them (`GET /v1/policy`), enforce it on the device (PIN, copy/save restrictions, notification content) and check in
 * (`POST /v1/policy/check-in`); the server judges each check-in and each resource call against the policy and the
 * app's recorded state (`AppProtectionState` of the store). Callers pass the time (`now`, ms since the epoch), so
 * tests drive the clock with plain numbers.
 *
 * Semantics:
 *
 * - **Which policy.** The first policy in list order whose `apps` include the calling client id (or are `"all"`)
 *   and whose `groups`, when given, share a group with the user (`policyFor`). No match: no policy (the app runs
 *   unrestricted, and the conditional-access control `appProtectionPolicy` is not satisfied).
 * - **ETag.** A policy's ETag is the SHA-256 of its canonical JSON (object keys sorted at every level), so the same
 *   policy always has the same ETag, on every process, whatever order its JSON was written in. Pass the parsed
 *   policy (defaults filled in) so an omitted default and the written-out default agree.
 * - **Versions** are dotted numerics ("13", "4.2", "4.2.10", at most four parts) compared part by part as numbers,
 *   missing parts counting as 0: 1.10 > 1.9, "4.2" == "4.2.0". Anything else is not a version: `compareVersions`
 *   throws `InvalidVersionError` rather than guess (the schemas reject such strings before they get here).
 * - **Check-in** (`judgeCheckIn`): a pending selective wipe stays pending whatever the app reports (only the app's
 *   acknowledgement ends it); reported violations, or PIN failures at or over `maxPinAttempts`, request a selective
 *   wipe; an app (or OS) below the policy's minimum gets `upgradeRequired`; otherwise `ok`, with whether the app's
 *   copy of the policy is stale and when it must check in next. Every check-in is recorded, refused or not: it is
 *   the app's last contact, and the offline clock measures contact.
 * - **Resource calls** (`standing`): a pending selective wipe, or no contact for longer than `offlineWipeAfterDays`,
 *   means selective wipe; an app below a minimum means upgrade; no check-in for longer than
 *   `offlineGracePeriodMinutes` (or none at all) means access is blocked until the app checks in. The policy fetch
 *   and the check-in themselves must stay reachable in every one of these states (the caller exempts them), or an
 *   app could never recover.
 */
import crypto from 'node:crypto';
import { z } from 'zod';
import type { FieldError } from '../errors';
import type { AppProtectionState } from '../store/types';
import { PLATFORMS, type Platform } from './policies';

// ---------------------------------------------------------------------------------------------------------------
// Vocabulary and types

export const NOTIFICATION_CONTENT = ['full', 'senderOnly', 'none'] as const;
export type NotificationContent = (typeof NOTIFICATION_CONTENT)[number];

/** Bounds of the policy's numeric settings (inclusive). */
export const APP_PROTECTION_LIMITS = {
  offlineGracePeriodMinutes: { min: 1, max: 43_200 }, // 30 days
  offlineWipeAfterDays: { min: 1, max: 365 },
  maxPinAttempts: { min: 1, max: 100 },
  checkInIntervalMinutes: { min: 5, max: 1_440, default: 30 },
} as const;

export interface AppProtectionPolicy {
  id: string;
  name: string;
  /** Client ids (registered OAuth clients) the policy targets, or every app. */
  apps: 'all' | string[];
  /** Groups whose members it covers; absent: everyone. */
  groups?: string[];
  pinRequired: boolean;
  minAppVersion?: string;
  /** Minimum OS version per platform; a platform not listed has no minimum. */
  minOsVersion?: Partial<Record<Platform, string>>;
  blockCopyToUnmanagedApps: boolean;
  blockSaveAs: boolean;
  notificationContent: NotificationContent;
  /** Access is blocked after this long without a check-in (until the app checks in). */
  offlineGracePeriodMinutes: number;
  /** A selective wipe is requested after this long without a check-in. Always longer than the grace period. */
  offlineWipeAfterDays: number;
  /** Reported PIN failures at or over this request a selective wipe; absent: no limit. */
  maxPinAttempts?: number;
  /** How often the app is told to check in. Never longer than the grace period. */
  checkInIntervalMinutes: number;
}

/** What an app reports at `POST /v1/policy/check-in` (see `checkInSchema`). */
export interface CheckIn {
  appVersion: string;
  osVersion: string;
  /** The ETag of the policy the app is enforcing; null when it has not fetched one yet. */
  policyEtag: string | null;
  pinSet: boolean;
  pinFailures: number;
  /** What the app found wrong with its environment, e.g. `jailbroken`, `debuggerAttached`. */
  violations: string[];
}

export interface CheckInContext {
  tenantId: string;
  userId: string;
  deviceId: string;
  now: number;
  /** The device's platform: picks the policy's `minOsVersion` entry. */
  platform: Platform;
}

export interface UpgradeRequired {
  kind: 'upgradeRequired';
  /** Whether the app or the operating system is too old. */
  which: 'app' | 'os';
  minimumVersion: string;
  currentVersion: string;
}

export interface SelectiveWipeRequested {
  kind: 'selectiveWipe';
  /** `<cause>: <details>`, cause one of `SelectiveWipeCause` (a client may match the prefix). */
  reason: string;
}

/** What starts a selective wipe: the prefix of its `reason`. */
export type SelectiveWipeCause = 'violations' | 'maxPinAttempts' | 'offline';

export interface CheckInOk {
  kind: 'ok';
  /** The current policy's ETag (what the response reports as `policyEtag`). */
  policyEtag: string;
  /** The app checked in with another ETag: it must fetch the policy again. */
  policyChanged: boolean;
  /** The time (ms) before which the app must check in next. */
  nextCheckInBefore: number;
}

export type CheckInOutcome = CheckInOk | UpgradeRequired | SelectiveWipeRequested;

export interface CheckInJudgement {
  /** The state to store (always: a refused check-in is still a check-in). */
  state: AppProtectionState;
  outcome: CheckInOutcome;
}

export type CheckInRequiredReason =
  /** The app has never checked in (and, when `firstSeenAt` was given, its grace period from then is over). */
  | 'noCheckIn'
  /** Its last check-in is older than the policy's offline grace period. */
  | 'gracePeriodExceeded'
  /** It acknowledged a selective wipe and has not checked in since. */
  | 'afterSelectiveWipe';

export type Standing =
  | { kind: 'ok' }
  | UpgradeRequired
  | (SelectiveWipeRequested & {
      /**
       * True when this call is what requests the wipe (the offline period just ran out): the caller stores
       * `requestSelectiveWipe(state, reason, ...)` and ends the app's streams. False: the wipe was already pending.
       */
      newlyRequested: boolean;
    })
  | { kind: 'checkInRequired'; reason: CheckInRequiredReason };

export interface StandingOptions {
  /**
   * The version the app registered with its device (free text). Used only until the app has checked in; a check-in
   * reports the version more recently, and preferring a stale registration would refuse an app that has upgraded
   * and passed its check-in. Text that is not a dotted numeric version counts as unknown (not judged).
   */
  clientVersion?: string | null;
  /** When the device was first seen (e.g. registered): an app that never checked in gets its grace period from
   *  here. Absent: an app that never checked in must check in before anything else. */
  firstSeenAt?: number | null;
  /** The device's platform: with the state's last reported OS version, checks `minOsVersion`. */
  platform?: Platform;
}

/** A version string that is not a dotted numeric version. */
export class InvalidVersionError extends Error {
  constructor(readonly version: string) {
    super(`"${version}" is not a version (expected dotted numbers such as 13, 4.2 or 4.2.10)`);
    this.name = 'InvalidVersionError';
  }
}

/** A list of app protection policies that does not validate. */
export class AppProtectionConfigError extends Error {
  constructor(readonly issues: FieldError[]) {
    super(`app protection policies are not valid: ${issues.map((i) => `${i.field}: ${i.message}`).join('; ')}`);
    this.name = 'AppProtectionConfigError';
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Versions

/** Up to four numeric parts; nine digits each keeps every part an exact JS number. */
const VERSION_PATTERN = /^\d{1,9}(?:\.\d{1,9}){0,3}$/;
const VERSION_MESSAGE = 'must be a version of dotted numbers such as 13, 4.2 or 4.2.10 (at most four parts)';

export function isVersion(text: string): boolean {
  return VERSION_PATTERN.test(text);
}

function versionParts(text: string): number[] {
  if (!isVersion(text)) throw new InvalidVersionError(text);
  return text.split('.').map(Number);
}

/**
 * -1 when `a` is older than `b`, 0 when they are the same version, 1 when newer. Parts compare as numbers
 * (1.10 > 1.9) and missing parts count as 0 ("4.2" == "4.2.0"). Throws `InvalidVersionError` for a string that is
 * not a dotted numeric version: a minimum-version gate must not guess what "4.2-beta" means.
 */
export function compareVersions(a: string, b: string): -1 | 0 | 1 {
  const pa = versionParts(a);
  const pb = versionParts(b);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? 0;
    const y = pb[i] ?? 0;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// Schemas

const identifier = z
  .string({ error: 'must be a string' })
  .min(1, 'must not be empty')
  .max(200, 'must be at most 200 characters')
  .refine((s) => !/[\u0000-\u001f\u007f]/.test(s), 'must not contain control characters');
const idList = z.array(identifier, { error: 'must be a list' }).max(10_000, 'must list at most 10000 entries');
const noRepeats = <T>(list: readonly T[]) => new Set(list).size === list.length;
const flag = z.boolean({ error: 'must be true or false' });
const version = z.string({ error: 'must be a string' }).regex(VERSION_PATTERN, VERSION_MESSAGE);

function wholeNumber(bounds: { min: number; max: number }, unit: string) {
  return z
    .number({ error: 'must be a number' })
    .int('must be a whole number')
    .min(bounds.min, `must be at least ${bounds.min} ${unit}`)
    .max(bounds.max, `must be at most ${bounds.max} ${unit}`);
}

const L = APP_PROTECTION_LIMITS;
const MINUTE_MS = 60_000;
const DAY_MINUTES = 1_440;
const DAY_MS = DAY_MINUTES * MINUTE_MS;

const appList = idList.min(1, 'must list at least one client id (or be "all")').refine(noRepeats, 'must not repeat a client id');

export const appProtectionPolicySchema = z
  .strictObject({
    id: identifier,
    name: identifier,
    apps: z.union([z.literal('all'), appList], {
      // zod words a failed union as a bare "Invalid input": name what was expected, or the list's own problem.
      error: (issue) => {
        const inner = Array.isArray(issue.input) ? appList.safeParse(issue.input).error?.issues[0] : undefined;
        if (!inner) return 'must be "all" or a list of client ids';
        return inner.path.length ? `item ${inner.path.join('.')}: ${inner.message}` : inner.message;
      },
    }),
    groups: idList.min(1, 'must list at least one group, or be left out (everyone)').refine(noRepeats, 'must not repeat a group').optional(),
    pinRequired: flag,
    minAppVersion: version.optional(),
    minOsVersion: z
      .partialRecord(z.enum(PLATFORMS), version, {
        error: (issue) => {
          // A partial record over an enum refuses other keys as `unrecognized_keys`, which zod's issue type for
          // records does not list; the default message would not say which keys are allowed.
          const { code, keys } = issue as { code: string; keys?: string[] };
          if (code === 'unrecognized_keys' && keys) {
            return `${keys.map((k) => `"${k}"`).join(', ')} ${keys.length === 1 ? 'is not a platform' : 'are not platforms'} (platforms: ${PLATFORMS.join(', ')})`;
          }
          return code === 'invalid_type' ? 'must be an object of platform → minimum version, e.g. {"ios": "17.0"}' : undefined;
        },
      })
      .optional(),
    blockCopyToUnmanagedApps: flag,
    blockSaveAs: flag,
    notificationContent: z.enum(NOTIFICATION_CONTENT, { error: `must be one of ${NOTIFICATION_CONTENT.join(', ')}` }),
    offlineGracePeriodMinutes: wholeNumber(L.offlineGracePeriodMinutes, 'minutes'),
    offlineWipeAfterDays: wholeNumber(L.offlineWipeAfterDays, 'days'),
    maxPinAttempts: wholeNumber(L.maxPinAttempts, 'attempts').optional(),
    checkInIntervalMinutes: wholeNumber(L.checkInIntervalMinutes, 'minutes').default(L.checkInIntervalMinutes.default),
  })
  .check((ctx) => {
    const p = ctx.value;
    if (p.offlineWipeAfterDays * DAY_MINUTES <= p.offlineGracePeriodMinutes) {
      ctx.issues.push({
        code: 'custom',
        path: ['offlineWipeAfterDays'],
        input: p.offlineWipeAfterDays,
        message: `must be a longer period than offlineGracePeriodMinutes (${p.offlineGracePeriodMinutes} minutes): access is blocked before data is wiped`,
      });
    }
    if (p.checkInIntervalMinutes > p.offlineGracePeriodMinutes) {
      ctx.issues.push({
        code: 'custom',
        path: ['checkInIntervalMinutes'],
        input: p.checkInIntervalMinutes,
        message: `must not be longer than offlineGracePeriodMinutes (${p.offlineGracePeriodMinutes}; the default interval is ${L.checkInIntervalMinutes.default}): an app checking in on schedule would be blocked between check-ins`,
      });
    }
    if (p.maxPinAttempts !== undefined && !p.pinRequired) {
      ctx.issues.push({
        code: 'custom',
        path: ['maxPinAttempts'],
        input: p.maxPinAttempts,
        message: 'needs pinRequired: true (there are no PIN attempts without a PIN)',
      });
    }
  });

/** A tenant's app protection policies: each valid, ids unique (list order is precedence). */
export const appProtectionPoliciesSchema = z.array(appProtectionPolicySchema, { error: 'must be a list' }).check((ctx) => {
  const seen = new Set<string>();
  ctx.value.forEach((p, i) => {
    if (seen.has(p.id)) {
      ctx.issues.push({ code: 'custom', path: [i, 'id'], input: p.id, message: `app protection policy id "${p.id}" is used more than once` });
    }
    seen.add(p.id);
  });
});

/** The body of `POST /v1/policy/check-in`. `pinFailures` defaults to 0 and `violations` to none. */
export const checkInSchema = z.strictObject({
  appVersion: version,
  osVersion: version,
  // Stored with the app's state: no control characters (a NUL is not text to PostgreSQL), as for every identifier.
  policyEtag: z
    .string({ error: 'must be the ETag from GET /v1/policy, or null' })
    .max(200, 'must be at most 200 characters')
    .refine((s) => !/[\u0000-\u001f\u007f]/.test(s), 'must not contain control characters')
    .nullable(),
  pinSet: flag,
  pinFailures: z.number({ error: 'must be a number' }).int('must be a whole number').min(0, 'must not be negative').max(1_000_000, 'must be at most 1000000').default(0),
  violations: z
    .array(z.string({ error: 'must be a string' }).regex(/^[A-Za-z0-9._:-]{1,64}$/, 'must be a short token (letters, digits, . _ : -)'), { error: 'must be a list' })
    .max(50, 'must list at most 50 violations')
    .default([]),
});

// The hand-written types above are what callers read; these stop compiling if the schemas drift from them.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const schemasMatchTypes: [Same<z.output<typeof appProtectionPolicySchema>, AppProtectionPolicy>, Same<z.output<typeof checkInSchema>, CheckIn>] = [
  true,
  true,
];
void schemasMatchTypes;

/** Validates and fills defaults; throws `AppProtectionConfigError` listing every problem. */
export function parseAppProtectionPolicies(input: unknown): AppProtectionPolicy[] {
  const parsed = appProtectionPoliciesSchema.safeParse(input);
  if (parsed.success) return parsed.data;
  throw new AppProtectionConfigError(
    parsed.error.issues.map((i) => ({ field: i.path.length ? i.path.join('.') : '(root)', message: i.message })),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// ETag and selection

/** JSON with object keys sorted at every level and `undefined` members left out (as JSON.stringify does). */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.keys(value)
      .sort()
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * The policy's strong ETag: `"` + base64url(SHA-256(canonical JSON)) + `"`. `null` (no policy applies) has one too,
 * so `GET /v1/policy` can answer 304 either way.
 */
export function policyEtag(policy: AppProtectionPolicy | null): string {
  return `"${crypto.createHash('sha256').update(canonicalJson(policy)).digest('base64url')}"`;
}

/** The policy that applies to this app and user: the first in list order that targets both; undefined if none. */
export function policyFor(
  policies: readonly AppProtectionPolicy[],
  who: { clientId: string; groups: readonly string[] },
): AppProtectionPolicy | undefined {
  return policies.find(
    (p) => (p.apps === 'all' || p.apps.includes(who.clientId)) && (p.groups === undefined || p.groups.some((g) => who.groups.includes(g))),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Check-in and standing

/** The first minimum the given versions fall short of (app before OS), or undefined. Unknown versions pass. */
function versionShortfall(
  policy: AppProtectionPolicy,
  appVersion: string | null,
  platform: Platform | undefined,
  osVersion: string | null,
): UpgradeRequired | undefined {
  if (policy.minAppVersion !== undefined && appVersion !== null && compareVersions(appVersion, policy.minAppVersion) < 0) {
    return { kind: 'upgradeRequired', which: 'app', minimumVersion: policy.minAppVersion, currentVersion: appVersion };
  }
  const minOs = platform === undefined ? undefined : policy.minOsVersion?.[platform];
  if (minOs !== undefined && osVersion !== null && compareVersions(osVersion, minOs) < 0) {
    return { kind: 'upgradeRequired', which: 'os', minimumVersion: minOs, currentVersion: osVersion };
  }
  return undefined;
}

/** Why this check-in requests a selective wipe (every cause found, `; `-separated), or undefined. */
function wipeReasonOf(policy: AppProtectionPolicy, checkIn: CheckIn): string | undefined {
  const reasons: string[] = [];
  if (checkIn.violations.length > 0) reasons.push(`violations: ${[...new Set(checkIn.violations)].join(', ')}`);
  if (policy.maxPinAttempts !== undefined && checkIn.pinFailures >= policy.maxPinAttempts) {
    reasons.push(`maxPinAttempts: ${checkIn.pinFailures} failed PIN attempts reported (the policy allows ${policy.maxPinAttempts - 1})`);
  }
  return reasons.length ? reasons.join('; ') : undefined;
}

function freshState(ids: { tenantId: string; userId: string; deviceId: string }, now: number): AppProtectionState {
  return {
    tenantId: ids.tenantId,
    userId: ids.userId,
    deviceId: ids.deviceId,
    policyId: null,
    policyEtag: null,
    appVersion: null,
    osVersion: null,
    lastCheckInAt: null,
    pinFailures: 0,
    violations: [],
    selectiveWipe: 'none',
    selectiveWipeReason: null,
    selectiveWipeRequestedAt: null,
    selectiveWipeAcknowledgedAt: null,
    updatedAt: now,
  };
}

/**
 * The state with a selective wipe pending for `reason` (creating the state when the app has none yet). A wipe
 * already pending is kept as it was (its first reason and time are what the app is acting on).
 */
export function requestSelectiveWipe(
  previous: AppProtectionState | undefined,
  reason: string,
  ids: { tenantId: string; userId: string; deviceId: string },
  now: number,
): AppProtectionState {
  const state = previous ?? freshState(ids, now);
  if (state.selectiveWipe === 'pending') return state;
  return {
    ...state,
    selectiveWipe: 'pending',
    selectiveWipeReason: reason,
    selectiveWipeRequestedAt: now,
    selectiveWipeAcknowledgedAt: null,
    updatedAt: now,
  };
}

/**
 * The app removed the account's data: the pending wipe is over. The app must check in again before it gets any
 * data (`standing` answers `checkInRequired` until then). Answers `state` itself, unchanged, when no wipe is
 * pending (a repeated acknowledgement: nothing to store).
 */
export function acknowledgeSelectiveWipe(state: AppProtectionState, now: number): AppProtectionState {
  if (state.selectiveWipe !== 'pending') return state;
  return { ...state, selectiveWipe: 'acknowledged', selectiveWipeAcknowledgedAt: now, updatedAt: now };
}

/**
 * Judges a check-in. `policy` is the one that applies now (`policyFor`), null when none does: then the check-in is
 * recorded and answered `ok` (only a wipe already pending still stands), since there is nothing to enforce.
 * Precedence: pending wipe, then a new wipe (violations, PIN failures), then upgrade, then ok. The returned state
 * records what the app reported (including the ETag it is enforcing, which `satisfiesAppProtection` compares).
 */
export function judgeCheckIn(
  policy: AppProtectionPolicy | null | undefined,
  previous: AppProtectionState | undefined,
  checkIn: CheckIn,
  ctx: CheckInContext,
): CheckInJudgement {
  const { now } = ctx;
  const recorded: AppProtectionState = {
    ...(previous ?? freshState(ctx, now)),
    policyId: policy?.id ?? null,
    policyEtag: checkIn.policyEtag,
    appVersion: checkIn.appVersion,
    osVersion: checkIn.osVersion,
    lastCheckInAt: now,
    pinFailures: checkIn.pinFailures,
    violations: [...checkIn.violations],
    updatedAt: now,
  };

  if (recorded.selectiveWipe === 'pending') {
    return { state: recorded, outcome: { kind: 'selectiveWipe', reason: recorded.selectiveWipeReason ?? 'selective wipe pending' } };
  }
  const current = policyEtag(policy ?? null);
  const interval = (policy?.checkInIntervalMinutes ?? L.checkInIntervalMinutes.default) * MINUTE_MS;
  const ok: CheckInOk = { kind: 'ok', policyEtag: current, policyChanged: checkIn.policyEtag !== current, nextCheckInBefore: now + interval };
  if (!policy) return { state: recorded, outcome: ok };

  const wipeReason = wipeReasonOf(policy, checkIn);
  if (wipeReason !== undefined) {
    return { state: requestSelectiveWipe(recorded, wipeReason, ctx, now), outcome: { kind: 'selectiveWipe', reason: wipeReason } };
  }
  const upgrade = versionShortfall(policy, checkIn.appVersion, ctx.platform, checkIn.osVersion);
  if (upgrade) return { state: recorded, outcome: upgrade };
  return { state: recorded, outcome: ok };
}

/**
 * What a resource call from this app gets. Not for `GET /v1/policy`, the check-in or the wipe acknowledgement: the
 * caller lets those through in every state, since they are how an app gets out of each one.
 *
 * Precedence: a pending wipe; no policy → ok; offline longer than `offlineWipeAfterDays` → wipe (newly requested:
 * the caller stores it); below a minimum version → upgrade; a wipe acknowledged and no check-in since, no check-in
 * at all, or the last one older than `offlineGracePeriodMinutes` → checkInRequired; else ok. Time without contact
 * counts from the last check-in, or for an app that never checked in from `opts.firstSeenAt`. Limits are exclusive:
 * exactly the grace period after a check-in is still ok.
 */
export function standing(
  policy: AppProtectionPolicy | null | undefined,
  state: AppProtectionState | undefined,
  now: number,
  opts: StandingOptions = {},
): Standing {
  if (state?.selectiveWipe === 'pending') {
    return { kind: 'selectiveWipe', reason: state.selectiveWipeReason ?? 'selective wipe pending', newlyRequested: false };
  }
  if (!policy) return { kind: 'ok' };

  const last = state?.lastCheckInAt ?? null;
  const ackAt = state?.selectiveWipe === 'acknowledged' ? state.selectiveWipeAcknowledgedAt : null;
  // After a wipe the data is gone: the offline clock stops (no second wipe) and only a new check-in restores access.
  const wipedSinceCheckIn = ackAt !== null && (last === null || last < ackAt);
  const since = wipedSinceCheckIn ? null : (last ?? opts.firstSeenAt ?? null);

  if (since !== null && now - since > policy.offlineWipeAfterDays * DAY_MS) {
    return {
      kind: 'selectiveWipe',
      reason: `offline: no check-in for more than ${policy.offlineWipeAfterDays} days`,
      newlyRequested: true,
    };
  }

  const checkedIn = last !== null && state?.appVersion != null;
  const registered = opts.clientVersion != null && isVersion(opts.clientVersion) ? opts.clientVersion : null;
  const upgrade = versionShortfall(policy, checkedIn ? state!.appVersion : registered, opts.platform, state?.osVersion ?? null);
  if (upgrade) return upgrade;

  if (wipedSinceCheckIn) return { kind: 'checkInRequired', reason: 'afterSelectiveWipe' };
  if (since === null) return { kind: 'checkInRequired', reason: 'noCheckIn' };
  if (now - since > policy.offlineGracePeriodMinutes * MINUTE_MS) {
    return { kind: 'checkInRequired', reason: last === null ? 'noCheckIn' : 'gracePeriodExceeded' };
  }
  return { kind: 'ok' };
}

/**
 * The conditional-access grant control `appProtectionPolicy`: a policy applies (`policy` is what `policyFor`
 * answers), the app has checked in against that policy's current ETag (so it enforces this version of it), and its
 * standing is `ok` (within the grace period, no pending wipe, versions at the minimums; a registration grace from
 * `firstSeenAt` does not count, only a real check-in). `opts.platform` adds the OS minimum to the check.
 */
export function satisfiesAppProtection(
  policy: AppProtectionPolicy | null | undefined,
  state: AppProtectionState | undefined,
  now: number,
  opts: { platform?: Platform } = {},
): boolean {
  if (!policy || !state || state.lastCheckInAt === null) return false;
  if (state.policyId !== policy.id || state.policyEtag !== policyEtag(policy)) return false;
  return standing(policy, state, now, { platform: opts.platform }).kind === 'ok';
}
