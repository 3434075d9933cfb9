/**
 * The admin API of conditional access (`/admin/v1`, admins only, the admin's own tenant): policies, named
 * locations, groups, app protection policies, approved client apps, What If, the sign-in log and users' risk.
 * Entries are validated here by their own schema (precise field errors), then as a whole document (references).
 * Every answer about the document carries `ETag: "<version>"`; a change may send `If-Match` with it (412 when the
 * document moved meanwhile), and a change without one is retried on top of whatever landed first.
 */
import { z } from 'zod';
import { errors } from '../errors';
import type { Call, Route } from '../http/table';
import { parse, text } from '../http/validate';
import type { AdminService } from '../admin/service';
import { groupSchema } from './config';
import { identifier, namedLocationSchema, policySchema, PLATFORMS, RISK_LEVELS } from './policies';
import { appProtectionPolicySchema } from './appProtection';
import { COLLECTIONS, type AccessAdmin, type Collection } from './admin';
import type { AccessService } from './service';

const SCHEMAS: Record<Collection, z.ZodType<{ id: string }>> = {
  policies: policySchema,
  namedLocations: namedLocationSchema,
  groups: groupSchema,
  appProtectionPolicies: appProtectionPolicySchema as z.ZodType<{ id: string }>,
};

const PATHS: Array<[Collection, string, string]> = [
  ['policies', '/admin/v1/conditional-access/policies', 'policies'],
  ['namedLocations', '/admin/v1/named-locations', 'namedLocations'],
  ['groups', '/admin/v1/groups', 'groups'],
  ['appProtectionPolicies', '/admin/v1/app-protection-policies', 'appProtectionPolicies'],
];

const ApprovedApps = z.strictObject({ clientIds: z.array(text(200).pipe(z.string().min(1))).max(500) });

// Strings that reach store look-ups are `text` (no control characters: a NUL is not text to PostgreSQL).
const WhatIf = z.strictObject({
  userId: text(200).pipe(z.string().min(1)),
  clientId: text(200).pipe(z.string().min(1)),
  platform: z.enum(PLATFORMS),
  ip: z.string().refine((s) => /^[0-9a-fA-F:.]{2,45}$/.test(s), 'must be an IPv4 or IPv6 address'),
  deviceId: text(64).pipe(z.string().min(1)).optional(),
  risk: z.enum(['none', ...RISK_LEVELS]).optional(),
  mfa: z.boolean().optional(),
  compliantDevice: z.boolean().optional(),
  appProtectionPolicy: z.boolean().optional(),
});

const cursorPattern = /^(\d{1,15})\.([A-Za-z0-9_-]{1,64})$/;
const SignInQuery = z.strictObject({
  userId: text(200).pipe(z.string().min(1)).optional(),
  decision: z.enum(['allow', 'block', 'needs', 'failure']).optional(),
  clientId: text(200).pipe(z.string().min(1)).optional(),
  deviceId: text(64).pipe(z.string().min(1)).optional(),
  since: z.coerce.number().int().min(0).optional(),
  limit: z.coerce.number().int().min(1).max(500).optional(),
  cursor: z.string().regex(cursorPattern, 'must be a cursor from an earlier page').optional(),
});

const Risk = z.strictObject({ action: z.enum(['confirm', 'dismiss']) });

export const etagOf = (version: number) => `"${version}"`;

/** The longest If-Match the document allows (its schema's maxLength), as for an item's change key. */
const MAX_IF_MATCH = 64;

/**
 * `If-Match: "<version>"`; `*` or none: no precondition. Any other tag names no version there has ever been, so it
 * can only fail (412), as RFC 9110 has it for a tag that does not match; one longer than the document allows is
 * refused as malformed (400), as `PATCH /v1/items/{itemId}` refuses one.
 */
export function ifMatch(call: Call): number | undefined {
  const header = call.headers['if-match'];
  if (header === undefined || header === '*') return undefined;
  if (typeof header !== 'string' || header.length > MAX_IF_MATCH) {
    throw errors.invalidRequest(`If-Match must be at most ${MAX_IF_MATCH} characters.`, [{ field: 'If-Match', message: `must be at most ${MAX_IF_MATCH} characters` }]);
  }
  const m = /^\s*(?:W\/)?"(\d{1,12})"\s*$/.exec(header);
  return m ? Number(m[1]) : -1;
}

export function accessAdminRoutes(d: { admin: AdminService; accessAdmin: AccessAdmin; access: AccessService }): Route[] {
  const { admin, accessAdmin } = d;
  const actor = (call: Call) => admin.actor(call.auth);
  const routes: Route[] = [];
  for (const [kind, path, listName] of PATHS) {
    const schema = SCHEMAS[kind];
    routes.push(
      {
        method: 'GET',
        path,
        handler: async (call) => {
          const { items, version } = await accessAdmin.list(await actor(call), kind);
          return { headers: { ETag: etagOf(version) }, body: { [listName]: items } };
        },
      },
      {
        method: 'POST',
        path,
        handler: async (call) => {
          const body = parse(schema, call.body);
          const { item, version } = await accessAdmin.create(await actor(call), kind, body, ifMatch(call));
          return { status: 201, headers: { ETag: etagOf(version), Location: `${path}/${encodeURIComponent(item.id)}` }, body: item };
        },
      },
      {
        method: 'GET',
        path: `${path}/:id`,
        handler: async (call) => {
          const { item, version } = await accessAdmin.get(await actor(call), kind, call.params.id!);
          return { headers: { ETag: etagOf(version) }, body: item };
        },
      },
      {
        method: 'PUT',
        path: `${path}/:id`,
        handler: async (call) => {
          // A path id no entry could have (too long, control characters) names nothing: 404 like any unknown id,
          // not a 400 about the body it was copied into.
          if (!identifier.safeParse(call.params.id).success) throw errors.notFound(`No ${COLLECTIONS[kind].what} has that id.`);
          const raw = call.body && typeof call.body === 'object' && !Array.isArray(call.body) ? { id: call.params.id, ...(call.body as object) } : call.body;
          const body = parse(schema, raw);
          const { item, version } = await accessAdmin.replace(await actor(call), kind, call.params.id!, body, ifMatch(call));
          return { headers: { ETag: etagOf(version) }, body: item };
        },
      },
      {
        method: 'DELETE',
        path: `${path}/:id`,
        handler: async (call) => {
          const { version } = await accessAdmin.remove(await actor(call), kind, call.params.id!, ifMatch(call));
          return { status: 204, headers: { ETag: etagOf(version) } };
        },
      },
    );
  }
  routes.push(
    {
      method: 'GET',
      path: '/admin/v1/approved-client-apps',
      handler: async (call) => {
        const { clientIds, version } = await accessAdmin.approvedClientApps(await actor(call));
        return { headers: { ETag: etagOf(version) }, body: { clientIds } };
      },
    },
    {
      method: 'PUT',
      path: '/admin/v1/approved-client-apps',
      handler: async (call) => {
        const body = parse(ApprovedApps, call.body);
        const { clientIds, version } = await accessAdmin.setApprovedClientApps(await actor(call), body.clientIds, ifMatch(call));
        return { headers: { ETag: etagOf(version) }, body: { clientIds } };
      },
    },
    {
      method: 'POST',
      path: '/admin/v1/conditional-access/what-if',
      handler: async (call) => {
        const input = parse(WhatIf, call.body);
        return { body: await d.access.whatIf(call.auth.tenantId, input) };
      },
    },
    {
      method: 'GET',
      path: '/admin/v1/sign-ins',
      handler: async (call) => {
        const q = parse(SignInQuery, call.query, 'query');
        const limit = q.limit ?? 100;
        const cursor = q.cursor ? cursorPattern.exec(q.cursor)! : undefined;
        const entries = await accessAdmin.signIns(await actor(call), {
          userId: q.userId,
          decision: q.decision,
          clientId: q.clientId,
          deviceId: q.deviceId,
          since: q.since,
          before: cursor ? { at: Number(cursor[1]), id: cursor[2]! } : undefined,
          limit: limit + 1,
        });
        const page = entries.slice(0, limit);
        const last = page[page.length - 1];
        return {
          body: {
            signIns: page.map((e) => ({ ...e, at: new Date(e.at).toISOString() })),
            ...(entries.length > limit && last ? { next: `${last.at}.${last.id}` } : {}),
          },
        };
      },
    },
    {
      method: 'POST',
      path: '/admin/v1/users/:id/risk',
      handler: async (call) => {
        const { action } = parse(Risk, call.body);
        const risk = await accessAdmin.setUserRisk(await actor(call), call.params.id!, action);
        return { body: { ...risk, at: new Date(risk.at).toISOString() } };
      },
    },
  );
  return routes;
}
