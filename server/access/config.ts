/**
 * A tenant's access configuration — conditional-access policies, named locations, groups, approved client apps and
 * app protection policies — as one validated document with one version (store `access.config`).
 *
 * One document rather than a table per kind: every policy may name locations and groups, so they are validated
 * together (a policy never refers to a location that is gone), compiled together once per version, and changed by a
 * compare-and-set on that version, which is also the ETag admins see. A tenant's document is small (limits below).
 */
import { z } from 'zod';
import { errors } from '../errors';
import { PolicyConfigError, compilePolicies, fieldErrors, identifier, namedLocationSchema, policySchema, type PolicyEvaluator } from './policies';
import { appProtectionPolicySchema, type AppProtectionPolicy } from './appProtection';

export const MAX_POLICIES = 200;
export const MAX_LOCATIONS = 200;
export const MAX_GROUPS = 500;
export const MAX_GROUP_MEMBERS = 10_000;
export const MAX_APP_POLICIES = 100;

export const groupSchema = z.strictObject({
  id: identifier,
  name: identifier,
  members: z.array(identifier).max(MAX_GROUP_MEMBERS, `must list at most ${MAX_GROUP_MEMBERS} members`),
});
export type Group = z.infer<typeof groupSchema>;

export const accessConfigSchema = z.strictObject({
  policies: z.array(policySchema).max(MAX_POLICIES, `at most ${MAX_POLICIES} policies`).default([]),
  namedLocations: z.array(namedLocationSchema).max(MAX_LOCATIONS, `at most ${MAX_LOCATIONS} named locations`).default([]),
  groups: z.array(groupSchema).max(MAX_GROUPS, `at most ${MAX_GROUPS} groups`).default([]),
  approvedClientApps: z.array(identifier).max(500, 'at most 500 client ids').default([]),
  appProtectionPolicies: z.array(appProtectionPolicySchema).max(MAX_APP_POLICIES, `at most ${MAX_APP_POLICIES} app protection policies`).default([]),
});
export type AccessConfig = z.output<typeof accessConfigSchema>;

export const EMPTY_CONFIG: AccessConfig = Object.freeze({ policies: [], namedLocations: [], groups: [], approvedClientApps: [], appProtectionPolicies: [] });

/** A document compiled for evaluation: what every sign-in and every call of the tenant reads. */
export interface CompiledAccessConfig {
  readonly version: number;
  readonly config: AccessConfig;
  readonly evaluator: PolicyEvaluator;
  /** No policy is `on` or `reportOnly` and no app protection policy exists: nothing to evaluate on a call. */
  readonly inert: boolean;
  /** Whether any policy is `on` (report-only ones never change a decision). */
  readonly enforcing: boolean;
  groupsOf(userId: string): readonly string[];
  approved(clientId: string): boolean;
  appPolicies: readonly AppProtectionPolicy[];
}

function uniqueIds(kind: string, list: ReadonlyArray<{ id: string }>, field: string): void {
  const seen = new Set<string>();
  list.forEach((entry, i) => {
    if (seen.has(entry.id)) throw errors.invalidRequest(`Two ${kind} have the id "${entry.id}".`, [{ field: `${field}.${i}.id`, message: 'duplicate id' }]);
    seen.add(entry.id);
  });
}

/**
 * Validates and compiles a document: zod for every field, then the cross-references (a policy's locations exist,
 * ids are unique). Throws 400 invalidRequest with the field errors, so an admin's bad change never lands.
 */
export function compileAccessConfig(doc: unknown, version: number): CompiledAccessConfig {
  const parsed = accessConfigSchema.safeParse(doc);
  if (!parsed.success) throw errors.invalidRequest('The access configuration is not valid.', fieldErrors(parsed.error));
  const config = parsed.data;
  uniqueIds('groups', config.groups, 'groups');
  uniqueIds('app protection policies', config.appProtectionPolicies, 'appProtectionPolicies');
  let evaluator: PolicyEvaluator;
  try {
    evaluator = compilePolicies(config.policies, config.namedLocations);
  } catch (err) {
    if (err instanceof PolicyConfigError) {
      // The policy set's own paths say `locations`; the document calls them `namedLocations`.
      throw errors.invalidRequest('The conditional-access policies are not valid.', err.issues.map((i) => ({ ...i, field: i.field.replace(/^locations\b/, 'namedLocations') })));
    }
    throw err;
  }
  const membership = new Map<string, string[]>();
  for (const group of config.groups) {
    for (const member of group.members) {
      const list = membership.get(member) ?? [];
      list.push(group.id);
      membership.set(member, list);
    }
  }
  const approved = new Set(config.approvedClientApps);
  const active = config.policies.filter((p) => p.state !== 'off');
  return Object.freeze({
    version,
    config,
    evaluator,
    inert: active.length === 0 && config.appProtectionPolicies.length === 0,
    enforcing: active.some((p) => p.state === 'on'),
    groupsOf: (userId: string) => membership.get(userId) ?? [],
    approved: (clientId: string) => approved.has(clientId),
    appPolicies: config.appProtectionPolicies,
  });
}
