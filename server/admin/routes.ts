/**
 * The admin API (`/admin/v1`, admins only): the device inventory and its actions, access rules, the organisation
 * default, and the audit log. Every change is audited; every lookup is confined to the admin's own tenant.
 */
import { Router, type Request } from 'express';
import { z } from 'zod';
import { errors } from '../errors';
import { route } from '../http/routes';
import { jsonBody } from '../http/body';
import { parse, text } from '../http/validate';
import { DEVICE_RULE_FIELDS, type Store } from '../store/types';
import type { Actor, AdminAction, DeviceService } from '../devices/service';
import type { Clock } from '../clock';

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

export function adminRoutes(store: Store, devices: DeviceService, clock: Clock, limits: { maxRequestBytes: number; maxJsonDepth: number }): Router {
  const router = Router();
  const json = jsonBody(limits.maxRequestBytes, limits.maxJsonDepth);

  const actor = (req: Request): Actor => {
    const auth = req.auth!;
    const user = store.users.byId(auth.userId);
    return { id: auth.userId, name: user?.username ?? auth.userId, tenantId: auth.tenantId };
  };

  route(router, '/admin/v1/devices', {
    get: (req, res) => {
      const q = parse(InventoryQuery, req.query, 'query');
      res.json({ devices: devices.inventory(actor(req), q) });
    },
  });

  route(router, '/admin/v1/devices/:id', {
    get: (req, res) => void res.json(devices.adminDevice(actor(req), String(req.params.id))),
    delete: (req, res) => {
      devices.removeByAdmin(actor(req), String(req.params.id));
      res.status(204).end();
    },
  });

  route(router, '/admin/v1/devices/:id/:action', {
    post: (req, res) => {
      const action = String(req.params.action);
      if (!(ACTIONS as readonly string[]).includes(action)) throw errors.notFound(`No device action "${action.slice(0, 40)}".`);
      res.json(devices.act(actor(req), String(req.params.id), action as AdminAction));
    },
  });

  route(router, '/admin/v1/device-access-rules', {
    get: (req, res) => void res.json({ rules: store.deviceAccess.rules(req.auth!.tenantId) }),
    post: [
      ...json,
      (req, res) => {
        const body = parse(Rule, req.body);
        const a = actor(req);
        const rule = store.transaction(() => {
          const created = store.deviceAccess.createRule(a.tenantId, { ...body, description: body.description ?? '' }, clock.now());
          devices.audit(a, 'rule.create', 'deviceAccessRule', created.id, { ...body });
          return created;
        });
        res.status(201).json(rule);
      },
    ],
  });

  route(router, '/admin/v1/device-access-rules/:id', {
    get: (req, res) => {
      const rule = store.deviceAccess.rule(req.auth!.tenantId, String(req.params.id));
      if (!rule) throw errors.notFound('No such rule.');
      res.json(rule);
    },
    put: [
      ...json,
      (req, res) => {
        const body = parse(Rule, req.body);
        const a = actor(req);
        const rule = store.transaction(() => {
          const updated = store.deviceAccess.updateRule(a.tenantId, String(req.params.id), { ...body, description: body.description ?? '' }, clock.now());
          if (!updated) throw errors.notFound('No such rule.');
          devices.audit(a, 'rule.update', 'deviceAccessRule', updated.id, { ...body });
          return updated;
        });
        res.json(rule);
      },
    ],
    delete: (req, res) => {
      const a = actor(req);
      store.transaction(() => {
        if (!store.deviceAccess.deleteRule(a.tenantId, String(req.params.id))) throw errors.notFound('No such rule.');
        devices.audit(a, 'rule.delete', 'deviceAccessRule', String(req.params.id));
      });
      res.status(204).end();
    },
  });

  route(router, '/admin/v1/device-access-default', {
    get: (req, res) => void res.json({ accessState: store.deviceAccess.defaultState(req.auth!.tenantId) }),
    put: [
      ...json,
      (req, res) => {
        const { accessState } = parse(Default, req.body);
        const a = actor(req);
        store.transaction(() => {
          store.deviceAccess.setDefaultState(a.tenantId, accessState, clock.now());
          devices.audit(a, 'default.set', 'tenant', a.tenantId, { accessState });
        });
        res.json({ accessState });
      },
    ],
  });

  route(router, '/admin/v1/audit', {
    get: (req, res) => {
      const q = parse(AuditQuery, req.query, 'query');
      const entries = store.audit.list(req.auth!.tenantId, { limit: q.limit ?? 100, beforeSeq: q.before });
      res.json({
        entries: entries.map((e) => ({ ...e, at: new Date(e.at).toISOString() })),
        next: entries.length === (q.limit ?? 100) ? entries[entries.length - 1]!.seq : null,
      });
    },
  });

  return router;
}
