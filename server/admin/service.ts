/**
 * The admin API's own rules (server/admin/routes.ts serves them): who the acting admin is, the tenant's device
 * access rules and its default state — every change audited in the same transaction as the change itself — and
 * the audit log as the API shows it. Every lookup is confined to the admin's own tenant: another tenant's rule is
 * simply not found.
 */
import { errors } from '../errors';
import type { Clock } from '../clock';
import type { AccessState, DeviceAccessRule, DeviceAccessRuleInput, Store } from '../store/types';
import type { Actor, DeviceService } from '../devices/service';
import type { Regions } from '../regions';
import { createUserManagement } from './userManagement';

/** The fields a rule may match on (the route validates against them). */
export { DEVICE_RULE_FIELDS } from '../store/types';

export interface AdminServiceDeps {
  store: Store;
  clock: Clock;
  /** Appends one audit entry inside a unit (the device service's, so every admin change is audited the same way). */
  audit: DeviceService['audit'];
  /** The node's regions (server/regions.ts), for `GET /admin/v1/regions`; without them only the tenant's own is told. */
  regions?: Regions;
}

/** A rule as an admin sends it: the description may be left out (stored as ''). */
export type RuleRequest = Omit<DeviceAccessRuleInput, 'description'> & { description?: string };

const ruleNotFound = () => errors.notFound('No such rule.');

export function createAdminService({ store, clock, audit, regions }: AdminServiceDeps) {
  return {
    /** Users of the admin's tenant (server/admin/userManagement.ts). */
    users: createUserManagement({ store, clock, audit }),

    /** The admin's own tenant. */
    async tenant(tenantId: string) {
      const t = await store.tenants.get(tenantId);
      if (!t) throw errors.notFound('No such tenant.');
      return { id: t.id, name: t.name, region: t.region, createdAt: new Date(t.createdAt).toISOString() };
    },

    /**
     * The regions this node knows of (its directory) and which one serves the tenant. Read-only: moving a tenant
     * between regions is the CLI's export and import (files, two stores, the node secrets), and `region adopt`
     * relabels every tenant of the store, so neither is a tenant admin's to trigger over HTTP.
     */
    async regions(tenantId: string) {
      const t = await store.tenants.get(tenantId);
      const own = t?.region ?? regions?.region ?? '';
      const directory = regions?.directory ?? { [own]: null };
      return {
        tenantRegion: own,
        nodeRegion: regions?.region ?? own,
        regions: Object.entries(directory)
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
          .map(([name, baseUrl]) => ({ name, baseUrl: baseUrl ?? null, tenant: name === own, node: name === (regions?.region ?? own) })),
      };
    },

    /** The acting admin, named for the audit log by their username (their id when the account is gone). */
    async actor(auth: { userId: string; tenantId: string }): Promise<Actor> {
      const user = await store.users.byId(auth.userId);
      return { id: auth.userId, name: user?.username ?? auth.userId, tenantId: auth.tenantId };
    },

    rules(tenantId: string): Promise<DeviceAccessRule[]> {
      return store.deviceAccess.rules(tenantId);
    },

    async rule(tenantId: string, id: string): Promise<DeviceAccessRule> {
      const rule = await store.deviceAccess.rule(tenantId, id);
      if (!rule) throw ruleNotFound();
      return rule;
    },

    createRule(actor: Actor, input: RuleRequest): Promise<DeviceAccessRule> {
      const now = clock.now();
      return store.run(function* (tx) {
        const created = yield* tx.deviceAccess.createRule(actor.tenantId, { ...input, description: input.description ?? '' }, now);
        yield* audit(tx, actor, now, 'rule.create', 'deviceAccessRule', created.id, { ...input });
        return created;
      });
    },

    updateRule(actor: Actor, id: string, input: RuleRequest): Promise<DeviceAccessRule> {
      const now = clock.now();
      return store.run(function* (tx) {
        const updated = yield* tx.deviceAccess.updateRule(actor.tenantId, id, { ...input, description: input.description ?? '' }, now);
        if (!updated) throw ruleNotFound();
        yield* audit(tx, actor, now, 'rule.update', 'deviceAccessRule', updated.id, { ...input });
        return updated;
      });
    },

    async deleteRule(actor: Actor, id: string): Promise<void> {
      const now = clock.now();
      await store.run(function* (tx) {
        if (!(yield* tx.deviceAccess.deleteRule(actor.tenantId, id))) throw ruleNotFound();
        yield* audit(tx, actor, now, 'rule.delete', 'deviceAccessRule', id);
      });
    },

    defaultState(tenantId: string): Promise<AccessState> {
      return store.deviceAccess.defaultState(tenantId);
    },

    async setDefaultState(actor: Actor, accessState: AccessState): Promise<void> {
      const now = clock.now();
      await store.run(function* (tx) {
        yield* tx.deviceAccess.setDefaultState(actor.tenantId, accessState, now);
        yield* audit(tx, actor, now, 'default.set', 'tenant', actor.tenantId, { accessState });
      });
    },

    /** One page of the tenant's audit log, newest first; `next` is the `before` of the following page (or null). */
    async auditLog(tenantId: string, page: { limit?: number; before?: number; cursor?: string }) {
      const limit = page.limit ?? 100;
      // `cursor` is `nextCursor` of the page before (the same position as `before`/`next`, as a string).
      let before = page.before;
      if (page.cursor !== undefined) {
        if (!/^[1-9][0-9]{0,15}$/.test(page.cursor)) throw errors.invalidRequest('cursor is not one this log answered.', [{ field: 'cursor', message: 'not a cursor of this log' }]);
        before = Number(page.cursor);
      }
      const entries = await store.audit.list(tenantId, { limit, beforeSeq: before });
      const next = entries.length === limit ? entries[entries.length - 1]!.seq : null;
      return {
        entries: entries.map((e) => ({ ...e, at: new Date(e.at).toISOString() })),
        next,
        nextCursor: next === null ? null : String(next),
      };
    },
  };
}

export type AdminService = ReturnType<typeof createAdminService>;
