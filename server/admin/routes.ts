/**
 * The admin API (`/admin/v1`, admins only): the device inventory and its actions, access rules, the organisation
 * default, and the audit log. Validation here; the rules, their audit entries and the tenant confinement live in
 * the services (./service, ../devices/service).
 */
import crypto from 'node:crypto';
import { z } from 'zod';
import { errors } from '../errors';
import type { Route } from '../http/table';
import { parse, text } from '../http/validate';
import { DEVICE_SORT_KEYS, type AdminAction, type DeviceService } from '../devices/service';
import { DEVICE_RULE_FIELDS, type AdminService } from './service';
import { adminUserRoutes } from './usersRoutes';

const ACCESS_STATES = ['allowed', 'blocked', 'quarantined'] as const;
const ACTIONS = ['allow', 'block', 'quarantine', 'release', 'wipe', 'resync'] as const;

const single = z.string().max(200).optional();
const InventoryQuery = z.strictObject({
  user: single,
  clientType: single,
  deviceModel: single,
  accessState: z.enum(ACCESS_STATES).optional(),
  // Paging (the admin center): without `limit`, every device as before.
  limit: z.coerce.number().int().min(1).max(500).optional(),
  cursor: z.string().min(1).max(1000).optional(),
  sort: z.enum([...DEVICE_SORT_KEYS, ...DEVICE_SORT_KEYS.map((k) => `-${k}` as const)]).optional(),
  q: z.string().max(200).optional(),
});

/** A strong validator of a JSON answer: the hash of its bytes. */
const etagOf = (json: string) => `"${crypto.createHash('sha256').update(json).digest('base64url').slice(0, 32)}"`;

/** Whether If-None-Match names this ETag (or is `*`); weak comparison, as RFC 9110 asks for If-None-Match. */
function matches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return header.split(',').some((t) => {
    const tag = t.trim().replace(/^W\//, '');
    return tag === '*' || tag === etag;
  });
}

const Rule = z.strictObject({
  field: z.enum(DEVICE_RULE_FIELDS),
  match: z.enum(['exact', 'prefix']),
  value: text(200).pipe(z.string().min(1)),
  accessState: z.enum(ACCESS_STATES),
  description: text(500).optional(),
});

const Default = z.strictObject({ accessState: z.enum(ACCESS_STATES) });

const AuditQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(500).optional(),
  before: z.coerce.number().int().min(1).optional(),
  cursor: z.string().min(1).max(20).optional(),
});

export function adminRoutes(admin: AdminService, devices: DeviceService): Route[] {
  return [
    // GET|POST /admin/v1/users, GET /admin/v1/users/:id, POST /admin/v1/users/:id/{disable,enable,reset-password,
    // revoke-sessions,reset-mfa}, GET /admin/v1/tenant, GET /admin/v1/regions (./usersRoutes.ts)
    ...adminUserRoutes(admin),
    {
      method: 'GET',
      path: '/admin/v1/devices',
      handler: async (call) => {
        const q = parse(InventoryQuery, call.query, 'query');
        // The page polls this list: an unchanged answer is a 304 without a body.
        const json = JSON.stringify(await devices.inventoryPage(await admin.actor(call.auth), q));
        const etag = etagOf(json);
        const headers = { ETag: etag, 'Cache-Control': 'private, no-cache' };
        if (matches(call.headers['if-none-match'], etag)) return { status: 304, headers };
        return { headers, json };
      },
    },
    {
      method: 'GET',
      path: '/admin/v1/devices/:id',
      handler: async (call) => ({ body: await devices.adminDevice(await admin.actor(call.auth), call.params.id!) }),
    },
    {
      method: 'DELETE',
      path: '/admin/v1/devices/:id',
      handler: async (call) => {
        await devices.removeByAdmin(await admin.actor(call.auth), call.params.id!);
        return {};
      },
    },
    {
      method: 'POST',
      path: '/admin/v1/devices/:id/:action',
      body: 'none', // an action takes no body (one sent is not read)
      handler: async (call) => {
        const action = call.params.action!;
        if (!(ACTIONS as readonly string[]).includes(action)) throw errors.notFound(`No device action "${action.slice(0, 40)}".`);
        return { body: await devices.act(await admin.actor(call.auth), call.params.id!, action as AdminAction) };
      },
    },
    {
      method: 'GET',
      path: '/admin/v1/device-access-rules',
      handler: async (call) => ({ body: { rules: await admin.rules(call.auth.tenantId) } }),
    },
    {
      method: 'POST',
      path: '/admin/v1/device-access-rules',
      handler: async (call) => {
        const body = parse(Rule, call.body);
        return { status: 201, body: await admin.createRule(await admin.actor(call.auth), body) };
      },
    },
    {
      method: 'GET',
      path: '/admin/v1/device-access-rules/:id',
      handler: async (call) => ({ body: await admin.rule(call.auth.tenantId, call.params.id!) }),
    },
    {
      method: 'PUT',
      path: '/admin/v1/device-access-rules/:id',
      handler: async (call) => {
        const body = parse(Rule, call.body);
        return { body: await admin.updateRule(await admin.actor(call.auth), call.params.id!, body) };
      },
    },
    {
      method: 'DELETE',
      path: '/admin/v1/device-access-rules/:id',
      handler: async (call) => {
        await admin.deleteRule(await admin.actor(call.auth), call.params.id!);
        return {};
      },
    },
    {
      method: 'GET',
      path: '/admin/v1/device-access-default',
      handler: async (call) => ({ body: { accessState: await admin.defaultState(call.auth.tenantId) } }),
    },
    {
      method: 'PUT',
      path: '/admin/v1/device-access-default',
      handler: async (call) => {
        const { accessState } = parse(Default, call.body);
        await admin.setDefaultState(await admin.actor(call.auth), accessState);
        return { body: { accessState } };
      },
    },
    {
      method: 'GET',
      path: '/admin/v1/audit',
      handler: async (call) => ({ body: await admin.auditLog(call.auth.tenantId, parse(AuditQuery, call.query, 'query')) }),
    },
  ];
}
