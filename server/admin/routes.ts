/**
 * The admin API (`/admin/v1`, admins only): the device inventory and its actions, access rules, the organisation
 * default, and the audit log. Validation here; the rules, their audit entries and the tenant confinement live in
 * the services (./service, ../devices/service).
 */
import { z } from 'zod';
import { errors } from '../errors';
import type { Route } from '../http/table';
import { parse, text } from '../http/validate';
import type { AdminAction, DeviceService } from '../devices/service';
import { DEVICE_RULE_FIELDS, type AdminService } from './service';

const ACCESS_STATES = ['allowed', 'blocked', 'quarantined'] as const;
const ACTIONS = ['allow', 'block', 'quarantine', 'release', 'wipe', 'resync'] as const;

const single = z.string().max(200).optional();
const InventoryQuery = z.strictObject({
  user: single,
  clientType: single,
  deviceModel: single,
  accessState: z.enum(ACCESS_STATES).optional(),
});

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
});

export function adminRoutes(admin: AdminService, devices: DeviceService): Route[] {
  return [
    {
      method: 'GET',
      path: '/admin/v1/devices',
      handler: async (call) => {
        const q = parse(InventoryQuery, call.query, 'query');
        return { body: { devices: await devices.inventory(await admin.actor(call.auth), q) } };
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
