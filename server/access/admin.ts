/**
 * What administrators change in conditional access: the tenant's document (policies, named locations, groups,
 * approved client apps, app protection policies) one entry at a time, users' risk, and what they read: the sign-in
 * log. Every change is a compare-and-set on the document's version with its audit entry in the same transaction,
 * then a re-check of the tenant's live channels, so a policy switched on ends the access it forbids within seconds.
 */
import type { Clock } from '../clock';
import { errors } from '../errors';
import type { Actor } from '../devices/service';
import type { DeviceSignals } from '../devices/signals';
import type { SignInLogEntry, SignInLogFilter, Store, UserRisk } from '../store/types';
import { compileAccessConfig, EMPTY_CONFIG, type AccessConfig } from './config';

/** The kinds of entries the document holds as lists of objects with an `id`. */
export const COLLECTIONS = {
  policies: { action: 'accessPolicy', what: 'conditional-access policy' },
  namedLocations: { action: 'namedLocation', what: 'named location' },
  groups: { action: 'group', what: 'group' },
  appProtectionPolicies: { action: 'appProtectionPolicy', what: 'app protection policy' },
} as const;
export type Collection = keyof typeof COLLECTIONS;
type Entry = { id: string };

const MAX_ATTEMPTS = 5;

export function createAccessAdmin(deps: { store: Store; clock: Clock; signals: DeviceSignals }) {
  const { store, clock } = deps;

  async function current(tenantId: string): Promise<{ config: AccessConfig; version: number }> {
    const record = await store.access.config(tenantId);
    if (!record) return { config: EMPTY_CONFIG, version: 0 };
    return { config: compileAccessConfig(JSON.parse(record.doc), record.version).config, version: record.version };
  }

  /**
   * Applies `change` to the current document and stores it if it validates, retrying when another change landed
   * first. `expectedVersion` (an If-Match) makes a lost race a 412 instead of a retry.
   */
  async function update(
    actor: Actor,
    audit: { action: string; targetType: string; targetId: string | null; details?: Record<string, unknown> },
    change: (config: AccessConfig) => AccessConfig,
    expectedVersion?: number,
  ): Promise<{ config: AccessConfig; version: number }> {
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
      const { config, version } = await current(actor.tenantId);
      if (expectedVersion !== undefined && expectedVersion !== version) {
        throw errors.conflict(`The access configuration changed (version ${version}, not ${expectedVersion}); read it again.`);
      }
      const next = change(structuredClone(config));
      const compiled = compileAccessConfig(next, version + 1); // 400 with field errors when it does not validate
      const now = clock.now();
      const stored = await store.run(function* (tx) {
        const put = yield* tx.access.putConfig(actor.tenantId, JSON.stringify(compiled.config), version, now);
        if (put) {
          yield* tx.audit.append({ tenantId: actor.tenantId, at: now, actorId: actor.id, actorName: actor.name, action: audit.action, targetType: audit.targetType, targetId: audit.targetId, details: { version: put.version, ...audit.details } });
        }
        return put;
      });
      if (stored) {
        deps.signals.recheck({ tenantId: actor.tenantId, policyChanged: audit.targetType === 'appProtectionPolicy' });
        return { config: compiled.config, version: stored.version };
      }
      if (expectedVersion !== undefined) throw errors.conflict('The access configuration changed meanwhile; read it again.');
    }
    throw errors.unavailable('The access configuration is changing too often right now; try again shortly.', 1);
  }

  const listOf = (config: AccessConfig, kind: Collection) => config[kind] as unknown as Entry[];

  return {
    current,

    async list(actor: Actor, kind: Collection) {
      const { config, version } = await current(actor.tenantId);
      return { items: listOf(config, kind), version };
    },

    async get(actor: Actor, kind: Collection, id: string) {
      const { config, version } = await current(actor.tenantId);
      const item = listOf(config, kind).find((e) => e.id === id);
      if (!item) throw errors.notFound(`No ${COLLECTIONS[kind].what} has the id "${id}".`);
      return { item, version };
    },

    async create(actor: Actor, kind: Collection, body: Entry, expectedVersion?: number) {
      const result = await update(
        actor,
        { action: `${COLLECTIONS[kind].action}.create`, targetType: COLLECTIONS[kind].action, targetId: body.id },
        (config) => {
          const list = listOf(config, kind);
          if (list.some((e) => e.id === body.id)) {
            throw errors.invalidRequest(`A ${COLLECTIONS[kind].what} with the id "${body.id}" exists already.`, [{ field: 'id', message: 'already used' }]);
          }
          list.push(body);
          return config;
        },
        expectedVersion,
      );
      return { item: listOf(result.config, kind).find((e) => e.id === body.id)!, version: result.version };
    },

    async replace(actor: Actor, kind: Collection, id: string, body: Entry, expectedVersion?: number) {
      if (body.id !== id) throw errors.invalidRequest('The id in the body must match the one in the path.', [{ field: 'id', message: `must be "${id}"` }]);
      const result = await update(
        actor,
        { action: `${COLLECTIONS[kind].action}.update`, targetType: COLLECTIONS[kind].action, targetId: id },
        (config) => {
          const list = listOf(config, kind);
          const at = list.findIndex((e) => e.id === id);
          if (at < 0) throw errors.notFound(`No ${COLLECTIONS[kind].what} has the id "${id}".`);
          list[at] = body;
          return config;
        },
        expectedVersion,
      );
      return { item: listOf(result.config, kind).find((e) => e.id === id)!, version: result.version };
    },

    async remove(actor: Actor, kind: Collection, id: string, expectedVersion?: number) {
      const result = await update(
        actor,
        { action: `${COLLECTIONS[kind].action}.delete`, targetType: COLLECTIONS[kind].action, targetId: id },
        (config) => {
          const list = listOf(config, kind);
          const at = list.findIndex((e) => e.id === id);
          if (at < 0) throw errors.notFound(`No ${COLLECTIONS[kind].what} has the id "${id}".`);
          list.splice(at, 1);
          return config;
        },
        expectedVersion,
      );
      return { version: result.version };
    },

    async approvedClientApps(actor: Actor) {
      const { config, version } = await current(actor.tenantId);
      return { clientIds: config.approvedClientApps, version };
    },

    async setApprovedClientApps(actor: Actor, clientIds: string[], expectedVersion?: number) {
      const result = await update(
        actor,
        { action: 'approvedClientApps.update', targetType: 'approvedClientApps', targetId: null, details: { clientIds } },
        (config) => ({ ...config, approvedClientApps: [...new Set(clientIds)] }),
        expectedVersion,
      );
      return { clientIds: result.config.approvedClientApps, version: result.version };
    },

    async signIns(actor: Actor, filter: Omit<SignInLogFilter, 'tenantId'>): Promise<SignInLogEntry[]> {
      return store.access.signIns({ ...filter, tenantId: actor.tenantId });
    },

    /** An admin's word on a user's risk; audited, and the user's channels are judged again at once. */
    async setUserRisk(actor: Actor, userId: string, action: 'confirm' | 'dismiss'): Promise<UserRisk> {
      const user = await store.users.byId(userId);
      if (!user || user.tenantId !== actor.tenantId) throw errors.notFound('No such user.');
      const now = clock.now();
      const risk: UserRisk = { userId, state: action === 'confirm' ? 'confirmed' : 'dismissed', at: now, by: actor.name };
      await store.run(function* (tx) {
        yield* tx.access.setUserRisk(risk);
        yield* tx.audit.append({ tenantId: actor.tenantId, at: now, actorId: actor.id, actorName: actor.name, action: `userRisk.${action}`, targetType: 'user', targetId: userId, details: {} });
      });
      deps.signals.recheck({ tenantId: actor.tenantId, userId });
      return risk;
    },
  };
}

export type AccessAdmin = ReturnType<typeof createAccessAdmin>;
