/**
 * Conditional access at work: the one evaluator that decides at every token issuance and refresh (the identity
 * provider, the password grant) and again on every `/v1` call (the device gate, both lanes), fed with what Pigeon
 * knows of the sign-in — who, which app, which device, from where, how they proved it, how risky it looked — and of
 * the device now: what its MDM says (compliance), how its app stands with its app protection policy.
 *
 * Why on every call and not only at issuance: an access token lives an hour, and "a device turns noncompliant, a
 * policy changes, risk rises" must end access within seconds (continuous evaluation). The inputs are read through
 * the hot cache (store/cached.ts), the compiled policies are kept per document version, and a tenant without
 * policies (the default) returns before any of it — so the poll path pays one cached read.
 */
import type { Logger } from 'pino';
import type { Clock } from '../clock';
import type { AuthContext } from '../auth/authenticate';
import { ApiError, errors } from '../errors';
import { newId } from '../ids';
import type { DeviceRecord, DeviceCompliance, SignInKind, SignInLogEntry, Store, User } from '../store/types';
import type { DeviceSignals } from '../devices/signals';
import { compileAccessConfig, type AccessConfig, type CompiledAccessConfig } from './config';
import type { Evaluation, Platform, SignInContext, SignInRisk } from './policies';
import { policyFor, policyEtag, requestSelectiveWipe as markWipe, satisfiesAppProtection, standing, type AppProtectionPolicy } from './appProtection';
import { assessSignInRisk, effectiveRisk } from './risk';

/** Failed passwords are counted over this window for the burst signal (README, "Sign-in risk"). */
const FAILURE_WINDOW_MS = 15 * 60_000;
/** How far back "seen before" looks for devices, networks and apps. */
const HISTORY_MS = 90 * 86400_000;

export interface AccessServiceDeps {
  store: Store;
  clock: Clock;
  log: Logger;
  signals: DeviceSignals;
  /** How long a device that turned noncompliant keeps access (PIGEON_COMPLIANCE_GRACE). */
  complianceGraceMs: number;
}

/** What the evaluator needs of a sign-in, whether it is happening now or an access token carries it. */
export interface SignInFacts {
  clientId: string;
  authMethods: readonly string[];
  risk: SignInRisk;
  /** When the sign-in happened (an admin's dismissal clears the risk of sign-ins before it). */
  at: number;
}

export interface SignInAttempt {
  user: User;
  clientId: string;
  deviceId: string | null;
  ip: string | null;
  authMethods: readonly string[];
  kind: Exclude<SignInKind, 'failure'>;
  sessionId: string | null;
  /** `User-Agent` of the sign-in, for the platform when the device has not registered yet. */
  userAgent?: string;
}

export interface SignInVerdict {
  evaluation: Evaluation;
  entry: SignInLogEntry;
}

export interface WhatIfInput {
  userId: string;
  clientId: string;
  platform: Platform;
  ip: string;
  deviceId?: string;
  risk?: SignInRisk;
  mfa?: boolean;
  compliantDevice?: boolean;
  appProtectionPolicy?: boolean;
}

/** Routes an app must reach whatever its standing: fetch the policy, check in, confirm a wipe. */
const ALWAYS_OPEN = new Set(['GET /policy', 'POST /policy/check-in', 'POST /policy/selective-wipe-ack', 'POST /devices/current/wipe-ack']);
const POLICY_ROUTES = new Set(['GET /policy', 'POST /policy/check-in', 'POST /policy/selective-wipe-ack']);

/**
 * The platform a device reports, from the free text it registered (or the sign-in's User-Agent). iPadOS reports
 * "Mac OS X" in browsers, so iOS is looked for first.
 */
export function platformOf(...texts: Array<string | null | undefined>): Platform {
  const t = texts.filter(Boolean).join(' ').toLowerCase();
  if (!t) return 'other';
  if (/\b(ios|iphone|ipad|ipados)\b/.test(t)) return 'ios';
  if (/android/.test(t)) return 'android';
  if (/windows/.test(t)) return 'windows';
  if (/\b(macos|mac os|macintosh|os x)\b/.test(t)) return 'macos';
  if (/linux|ubuntu|debian|fedora/.test(t)) return 'linux';
  if (/mozilla|chrome|safari|firefox|browser|web/.test(t)) return 'web';
  return 'other';
}

/** Whether a compliance statement lets the device count as compliant now (README, "Device compliance"). */
export function countsAsCompliant(record: DeviceCompliance | undefined, now: number, graceMs: number): boolean {
  if (!record) return false;
  if (record.expiresAt !== null && record.expiresAt <= now) return false; // lapsed: unknown
  if (record.state === 'compliant') return true;
  // A device that just turned noncompliant keeps access for the grace period, so the user can fix it first.
  return record.state === 'noncompliant' && record.noncompliantSince !== null && now - record.noncompliantSince < graceMs;
}




export function createAccessService(deps: AccessServiceDeps) {
  const { store, clock, log } = deps;
  const compiled = new Map<string, CompiledAccessConfig>();

  /** The tenant's document, compiled once per version (a bad stored one is logged and treated as empty). */
  async function configOf(tenantId: string): Promise<CompiledAccessConfig> {
    const record = await store.access.config(tenantId);
    const version = record?.version ?? 0;
    const hit = compiled.get(tenantId);
    if (hit && hit.version === version) return hit;
    let next: CompiledAccessConfig;
    try {
      next = compileAccessConfig(record ? JSON.parse(record.doc) : {}, version);
    } catch (err) {
      // Only a document that validated is ever stored; this is a downgrade or a hand edit. Fail closed for
      // enforcement would lock every user out: log loudly and evaluate nothing until an admin fixes it.
      log.error({ err, tenantId, version }, 'stored access configuration does not compile; evaluating none');
      next = compileAccessConfig({}, version);
    }
    compiled.set(tenantId, next);
    return next;
  }

  /** The risk level that applies to a sign-in of `at` now: an admin's confirmation or dismissal beats the computed one. */
  async function riskNow(userId: string, computed: SignInRisk, at: number): Promise<SignInRisk> {
    const word = await store.access.userRisk(userId);
    return effectiveRisk({ level: computed, at }, word);
  }

  async function facts(auth: AuthContext): Promise<SignInFacts> {
    const entry = await store.access.signInOfSession(auth.sessionId);
    if (entry) {
      return { clientId: entry.clientId ?? auth.clientId ?? 'unknown', authMethods: entry.authMethods, risk: entry.riskLevel, at: entry.at };
    }
    // A token whose sign-in Pigeon did not see (an external issuer's): what the token itself says.
    return { clientId: auth.clientId ?? 'unknown', authMethods: auth.authMethods ?? [], risk: 'none', at: 0 };
  }

  async function context(
    cfg: CompiledAccessConfig,
    input: { userId: string; tenantId: string; clientId: string; deviceId: string | null; ip: string | null; platform: Platform; authMethods: readonly string[]; risk: SignInRisk; device?: DeviceRecord; appPolicy?: AppProtectionPolicy; forceAppProtection?: boolean },
  ): Promise<SignInContext> {
    const now = clock.now();
    const compliance = input.deviceId ? await store.access.compliance(input.tenantId, input.userId, input.deviceId) : undefined;
    let appProtected = Boolean(input.forceAppProtection);
    if (!appProtected && input.appPolicy && input.deviceId) {
      const state = await store.access.appState(input.tenantId, input.userId, input.deviceId);
      appProtected = satisfiesAppProtection(input.appPolicy, state, now, { platform: input.platform });
    }
    return {
      userId: input.userId,
      groups: cfg.groupsOf(input.userId),
      clientApp: input.clientId,
      approvedClientApp: cfg.approved(input.clientId),
      platform: input.platform,
      // The evaluator matches locations by address; a sign-in without one (a CLI on a socket) is "::" — no range.
      ip: input.ip ?? '::',
      risk: input.risk,
      satisfied: {
        mfa: input.authMethods.includes('mfa'),
        compliantDevice: countsAsCompliant(compliance, now, deps.complianceGraceMs),
        appProtectionPolicy: appProtected,
      },
    };
  }

  /** The refusal an evaluation that is not `allow` turns into on a call. */
  function refusal(evaluation: Evaluation): ApiError {
    const policies = [...new Set(evaluation.blockReasons.map((r) => r.policyId))];
    if (evaluation.decision === 'needs') {
      return errors.accessBlocked('Conditional access requires multi-factor authentication for this app: sign in again.', {
        controls: [...evaluation.missingControls],
        policies: evaluation.results.filter((r) => r.state === 'on' && r.result === 'failure').map((r) => r.policyId),
        interactionRequired: true,
      });
    }
    const controls = [...new Set(evaluation.blockReasons.flatMap((r) => (r.reason === 'blockPolicy' ? ['block'] : r.unmetControls)))];
    return errors.accessBlocked(`${describe(controls)} (Policy: ${policies.join(', ')}.)`, { controls, policies, interactionRequired: false });
  }

  return {
    configOf,
    platformOf,

    /**
     * A sign-in or refresh about to get tokens: evaluates, logs the attempt (with every policy's result, report-only
     * ones included) and answers the verdict. The caller refuses on `block` and asks for the missing controls on
     * `needs`; nothing is issued here.
     */
    async evaluateSignIn(attempt: SignInAttempt, opts: { logAllowed?: boolean } = {}): Promise<SignInVerdict> {
      const { user } = attempt;
      const now = clock.now();
      const cfg = await configOf(user.tenantId);
      const device = attempt.deviceId ? await store.devices.byUserAndDeviceId(user.id, attempt.deviceId) : undefined;
      let computed: { level: SignInRisk; score: number; signals: Array<{ signal: string; weight: number }> };
      let riskAt = now;
      const earlier = attempt.kind === 'refresh' && attempt.sessionId ? await store.access.signInOfSession(attempt.sessionId) : undefined;
      if (earlier) {
        // A refresh carries the risk of the sign-in it renews; it is not a new sign-in.
        computed = { level: earlier.riskLevel, score: earlier.riskScore, signals: earlier.riskSignals };
        riskAt = earlier.at;
      } else {
        const history = await store.access.signInHistory(user.id, now - HISTORY_MS);
        const assessed = assessSignInRisk({
          history,
          failuresLast15Min: await store.access.failuresSince(user.id, now - FAILURE_WINDOW_MS),
          deviceId: attempt.deviceId,
          clientId: attempt.clientId,
          ip: attempt.ip,
          firstSignIn: history.deviceIds.length === 0 && history.clientIds.length === 0 && history.ips.length === 0,
        });
        computed = { level: assessed.level, score: assessed.score, signals: assessed.signals };
      }
      const risk = await riskNow(user.id, computed.level, riskAt);
      const appPolicy = policyFor(cfg.appPolicies, { clientId: attempt.clientId, groups: cfg.groupsOf(user.id) });
      const ctx = await context(cfg, {
        userId: user.id,
        tenantId: user.tenantId,
        clientId: attempt.clientId,
        deviceId: attempt.deviceId,
        ip: attempt.ip,
        platform: platformOf(device?.deviceOS, device?.deviceType, device?.userAgent ?? attempt.userAgent),
        authMethods: attempt.authMethods,
        risk,
        device,
        appPolicy,
        // At issuance the app cannot have checked in yet for a new sign-in: the policy is enforced on its calls.
        forceAppProtection: Boolean(appPolicy),
      });
      const evaluation = cfg.evaluator.evaluate(ctx);
      const entry: SignInLogEntry = {
        id: newId(),
        tenantId: user.tenantId,
        userId: user.id,
        at: now,
        kind: attempt.kind,
        clientId: attempt.clientId,
        deviceId: attempt.deviceId,
        ip: attempt.ip,
        sessionId: evaluation.decision === 'allow' ? attempt.sessionId : null,
        authMethods: [...attempt.authMethods],
        riskLevel: computed.level,
        riskScore: computed.score,
        riskSignals: computed.signals,
        policyResults: evaluation.results,
        decision: evaluation.decision,
        reason: evaluation.decision === 'allow' ? null : refusal(evaluation).message,
      };
      // A preview (the sign-in page, before the token exchange judges again) logs only what it refuses.
      if (evaluation.decision !== 'allow' || opts.logAllowed !== false) await store.access.logSignIn(entry);
      return { evaluation, entry };
    },

    /** A wrong password (or code): the burst signal counts these. */
    async recordFailure(user: User, input: { clientId: string | null; deviceId: string | null; ip: string | null; authMethods?: string[] }): Promise<void> {
      await store.access.logSignIn({
        id: newId(),
        tenantId: user.tenantId,
        userId: user.id,
        at: clock.now(),
        kind: 'failure',
        clientId: input.clientId,
        deviceId: input.deviceId,
        ip: input.ip,
        sessionId: null,
        authMethods: input.authMethods ?? [],
        riskLevel: 'none',
        riskScore: 0,
        riskSignals: [],
        policyResults: [],
        decision: 'failure',
        reason: 'wrong password or code',
      });
    },

    refusal,

    /**
     * The `/v1` check after the device gate: app protection (upgrade, check-in, selective wipe), then the
     * conditional-access policies with what is true now. Throws the refusal; returns when the call may go on.
     */
    async checkCall(input: { auth: AuthContext; device: DeviceRecord | undefined; method: string; path: string; ip: string | undefined }): Promise<void> {
      const { auth, device } = input;
      const cfg = await configOf(auth.tenantId);
      if (cfg.inert) return;
      const key = `${input.method === 'HEAD' ? 'GET' : input.method} ${input.path.replace(/\/+$/, '') || '/'}`;
      if (key === 'POST /devices/current/wipe-ack') return; // a full wipe's confirmation always gets through
      const f = await facts(auth);
      const now = clock.now();
      const deviceId = device?.deviceId ?? auth.deviceId ?? null;
      const appPolicy = policyFor(cfg.appPolicies, { clientId: f.clientId, groups: cfg.groupsOf(auth.userId) });
      const policyRoute = POLICY_ROUTES.has(key);
      if (appPolicy && device && !ALWAYS_OPEN.has(key)) {
        const state = await store.access.appState(auth.tenantId, auth.userId, device.deviceId);
        const verdict = standing(appPolicy, state, now, { clientVersion: device.clientVersion, firstSeenAt: device.createdAt, platform: platformOf(device.deviceOS, device.deviceType, device.userAgent) });
        if (verdict.kind === 'upgradeRequired') throw errors.appUpgradeRequired(verdict.minimumVersion, verdict.currentVersion, verdict.which);
        if (verdict.kind === 'selectiveWipe') {
          if (verdict.newlyRequested) await requestSelectiveWipe(auth, device.deviceId, verdict.reason, state);
          throw errors.selectiveWipeRequested(verdict.reason);
        }
        if (verdict.kind === 'checkInRequired') {
          throw errors.accessBlocked('The app protection policy requires this app to check in (POST /v1/policy/check-in) before it syncs.', {
            controls: ['appProtectionPolicy'],
            policies: [appPolicy.id],
            interactionRequired: false,
          });
        }
      }
      if (!cfg.evaluator.policies.some((p) => p.state === 'on')) return; // report-only policies are logged at sign-in
      const risk = await riskNow(auth.userId, f.risk, f.at);
      const ctx = await context(cfg, {
        userId: auth.userId,
        tenantId: auth.tenantId,
        clientId: f.clientId,
        deviceId,
        ip: input.ip ?? null,
        platform: platformOf(device?.deviceOS, device?.deviceType, device?.userAgent),
        authMethods: f.authMethods,
        risk,
        device,
        appPolicy,
        // The policy routes are how an app comes to satisfy its policy: they must not need it already. Nor may
        // registering the device, for an app a policy targets: the check-in needs a registered device.
        forceAppProtection: (policyRoute || key === 'POST /devices') && appPolicy !== undefined,
      });
      const evaluation = cfg.evaluator.evaluate(ctx);
      if (evaluation.decision !== 'allow') throw refusal(evaluation);
    },

    /** What a sign-in with these facts would get, without signing in and without logging (What If). */
    async whatIf(tenantId: string, input: WhatIfInput): Promise<Evaluation & { groups: readonly string[]; approvedClientApp: boolean }> {
      const user = await store.users.byId(input.userId);
      if (!user || user.tenantId !== tenantId) throw errors.invalidRequest('No such user in this organisation.', [{ field: 'userId', message: 'unknown user' }]);
      const cfg = await configOf(tenantId);
      const now = clock.now();
      const compliance = input.deviceId ? await store.access.compliance(tenantId, user.id, input.deviceId) : undefined;
      const appPolicy = policyFor(cfg.appPolicies, { clientId: input.clientId, groups: cfg.groupsOf(user.id) });
      const ctx: SignInContext = {
        userId: user.id,
        groups: cfg.groupsOf(user.id),
        clientApp: input.clientId,
        approvedClientApp: cfg.approved(input.clientId),
        platform: input.platform,
        ip: input.ip,
        risk: input.risk ?? (await riskNow(user.id, 'none', now)),
        satisfied: {
          mfa: input.mfa ?? false,
          compliantDevice: input.compliantDevice ?? countsAsCompliant(compliance, now, deps.complianceGraceMs),
          // As at a real sign-in: an app a policy covers satisfies the control there (its calls are then held to it).
          appProtectionPolicy: input.appProtectionPolicy ?? Boolean(appPolicy),
        },
      };
      const evaluation = cfg.evaluator.evaluate(ctx);
      return { ...evaluation, groups: ctx.groups, approvedClientApp: ctx.approvedClientApp };
    },

    /** The app protection policy of the calling app, with its ETag (null: none applies). */
    async policyOf(auth: AuthContext): Promise<{ policy: AppProtectionPolicy | null; etag: string }> {
      const cfg = await configOf(auth.tenantId);
      const f = await facts(auth);
      const policy = policyFor(cfg.appPolicies, { clientId: f.clientId, groups: cfg.groupsOf(auth.userId) });
      return { policy: policy ?? null, etag: policyEtag(policy ?? null) };
    },

    /**
     * What a notification may show for this app of this user (the app protection policy's `notificationContent`;
     * 'full' when no policy applies): background push asks it per channel, with the app the channel registered.
     */
    async notificationContentFor(tenantId: string, userId: string, clientId: string): Promise<AppProtectionPolicy['notificationContent']> {
      const cfg = await configOf(tenantId);
      return policyFor(cfg.appPolicies, { clientId, groups: cfg.groupsOf(userId) })?.notificationContent ?? 'full';
    },

    facts,
    requestSelectiveWipe,
  };

  async function requestSelectiveWipe(auth: Pick<AuthContext, 'tenantId' | 'userId'>, deviceId: string, reason: string, state: Awaited<ReturnType<Store['access']['appState']>>): Promise<void> {
    const now = clock.now();
    await store.run(function* (tx) {
      yield* tx.access.putAppState(markWipe(state, reason, { tenantId: auth.tenantId, userId: auth.userId, deviceId }, now));
      yield* tx.audit.append({ tenantId: auth.tenantId, at: now, actorId: null, actorName: 'system', action: 'appProtection.selectiveWipe', targetType: 'device', targetId: deviceId, details: { userId: auth.userId, reason } });
    });
    log.info({ userId: auth.userId, deviceId, reason }, 'selective wipe requested');
    deps.signals.recheck({ tenantId: auth.tenantId, userId: auth.userId, deviceId });
  }
}


const CONTROL_WORDS: Record<string, string> = {
  block: 'a policy blocks this sign-in',
  mfa: 'multi-factor authentication',
  approvedClientApp: 'an approved client app',
  compliantDevice: 'a device your organisation reports compliant',
  appProtectionPolicy: 'an app protection policy',
};

function describe(controls: string[]): string {
  if (controls.includes('block')) return 'Conditional access blocks access from this app, device or location.';
  return `Conditional access requires ${controls.map((c) => CONTROL_WORDS[c] ?? c).join(' or ')}.`;
}

export type AccessService = ReturnType<typeof createAccessService>;
export type { AccessConfig };
