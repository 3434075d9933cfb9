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

/** The fields a rule may match on (the route validates against them). */
export { DEVICE_RULE_FIELDS } from '../store/types';

export interface AdminServiceDeps {
  store: Store;
  clock: Clock;
  /** Appends one audit entry inside a unit (the device service's, so every admin change is audited the same way). */
  audit: DeviceService['audit'];
}

/** A rule as an admin sends it: the description may be left out (stored as ''). */
export type RuleRequest = Omit<DeviceAccessRuleInput, 'description'> & { description?: string };

const ruleNotFound = () => errors.notFound('No such rule.');

export function createAdminService({ store, clock, audit }: AdminServiceDeps) {
  return {
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
    async auditLog(tenantId: string, page: { limit?: number; before?: number }) {
      const limit = page.limit ?? 100;
      const entries = await store.audit.list(tenantId, { limit, beforeSeq: page.before });
      return {
        entries: entries.map((e) => ({ ...e, at: new Date(e.at).toISOString() })),
        next: entries.length === limit ? entries[entries.length - 1]!.seq : null,
      };
    },
  };
}

export type AdminService = ReturnType<typeof createAdminService>;
