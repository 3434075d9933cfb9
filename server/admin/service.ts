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
  /** Appends one audit entry (the device service's, so every admin change is audited the same way). */
  audit: DeviceService['audit'];
}

/** A rule as an admin sends it: the description may be left out (stored as ''). */
export type RuleRequest = Omit<DeviceAccessRuleInput, 'description'> & { description?: string };

const ruleNotFound = () => errors.notFound('No such rule.');

export function createAdminService({ store, clock, audit }: AdminServiceDeps) {
  return {
    /** The acting admin, named for the audit log by their username (their id when the account is gone). */
    actor(auth: { userId: string; tenantId: string }): Actor {
      const user = store.users.byId(auth.userId);
      return { id: auth.userId, name: user?.username ?? auth.userId, tenantId: auth.tenantId };
    },

    rules(tenantId: string): DeviceAccessRule[] {
      return store.deviceAccess.rules(tenantId);
    },

    rule(tenantId: string, id: string): DeviceAccessRule {
      const rule = store.deviceAccess.rule(tenantId, id);
      if (!rule) throw ruleNotFound();
      return rule;
    },

    createRule(actor: Actor, input: RuleRequest): DeviceAccessRule {
      return store.transaction(() => {
        const created = store.deviceAccess.createRule(actor.tenantId, { ...input, description: input.description ?? '' }, clock.now());
        audit(actor, 'rule.create', 'deviceAccessRule', created.id, { ...input });
        return created;
      });
    },

    updateRule(actor: Actor, id: string, input: RuleRequest): DeviceAccessRule {
      return store.transaction(() => {
        const updated = store.deviceAccess.updateRule(actor.tenantId, id, { ...input, description: input.description ?? '' }, clock.now());
        if (!updated) throw ruleNotFound();
        audit(actor, 'rule.update', 'deviceAccessRule', updated.id, { ...input });
        return updated;
      });
    },

    deleteRule(actor: Actor, id: string): void {
      store.transaction(() => {
        if (!store.deviceAccess.deleteRule(actor.tenantId, id)) throw ruleNotFound();
        audit(actor, 'rule.delete', 'deviceAccessRule', id);
      });
    },

    defaultState(tenantId: string): AccessState {
      return store.deviceAccess.defaultState(tenantId);
    },

    setDefaultState(actor: Actor, accessState: AccessState): void {
      store.transaction(() => {
        store.deviceAccess.setDefaultState(actor.tenantId, accessState, clock.now());
        audit(actor, 'default.set', 'tenant', actor.tenantId, { accessState });
      });
    },

    /** One page of the tenant's audit log, newest first; `next` is the `before` of the following page (or null). */
    auditLog(tenantId: string, page: { limit?: number; before?: number }) {
      const limit = page.limit ?? 100;
      const entries = store.audit.list(tenantId, { limit, beforeSeq: page.before });
      return {
        entries: entries.map((e) => ({ ...e, at: new Date(e.at).toISOString() })),
        next: entries.length === limit ? entries[entries.length - 1]!.seq : null,
      };
    },
  };
}

export type AdminService = ReturnType<typeof createAdminService>;
