/**
 * Users as the admin API manages them (`/admin/v1/users`, server/admin/usersRoutes.ts): the CLI's rules
 * (server/admin/users.ts: the username pattern, the password policy, a password change ending every session), each
 * change audited in the unit that makes it, every lookup confined to the admin's own tenant (another tenant's user
 * is simply not found). An admin cannot disable, reset or revoke their own account here: the admin center must not
 * lock its only admin out by a slip (they change their own password and sign out as any user does).
 */
import crypto from 'node:crypto';
import { errors } from '../errors';
import type { Clock } from '../clock';
import type { Role, Step, Store, TxStore, User } from '../store/types';
import type { Actor, DeviceService } from '../devices/service';
import { createUserAdmin, UserAdminError } from './users';

export interface NewUserRequest {
  username: string;
  email?: string;
  displayName?: string;
  role: Role;
  /** The initial password; left out, the account has none until an admin resets it. */
  password?: string;
}

export interface UserPage {
  q?: string;
  limit?: number;
  cursor?: string;
}

/** A user as the admin API shows it: never its password hash or session version. */
export function userView(u: User) {
  return {
    id: u.id,
    username: u.username,
    email: u.email,
    displayName: u.displayName,
    role: u.role,
    disabled: u.disabled,
    hasPassword: u.passwordHash !== null,
    createdAt: new Date(u.createdAt).toISOString(),
    updatedAt: new Date(u.updatedAt).toISOString(),
  };
}

const notFound = () => errors.notFound('No such user.');
/** The CLI's messages become 400s (a bad username, a weak password, a username taken). */
const asInvalid = (err: unknown, field: string): never => {
  if (err instanceof UserAdminError) throw errors.invalidRequest(err.message, [{ field, message: err.message }]);
  throw err;
};

/** A generated one-time password: 120 random bits, 20 characters (shown to the admin once, never stored clear). */
export const generatePassword = () => crypto.randomBytes(15).toString('base64url');

export function createUserManagement(deps: { store: Store; clock: Clock; audit: DeviceService['audit'] }) {
  const { store, clock, audit } = deps;
  const cli = createUserAdmin(store, clock);

  async function inTenant(actor: Actor, id: string): Promise<User> {
    const user = await store.users.byId(id);
    if (!user || user.tenantId !== actor.tenantId) throw notFound();
    return user;
  }

  /** The same check inside a unit: the change is decided on the row as it is in that transaction. */
  function* inTenantIn(tx: TxStore, actor: Actor, id: string): Step<User> {
    const user = yield* tx.users.byId(id);
    if (!user || user.tenantId !== actor.tenantId) throw notFound();
    return user;
  }

  async function notSelf(actor: Actor, id: string, what: string): Promise<User> {
    const user = await inTenant(actor, id);
    if (user.id === actor.id) throw errors.invalidRequest(`An administrator cannot ${what} their own account here.`);
    return user;
  }

  const detailsOf = (u: User) => ({ username: u.username });

  return {
    /** The tenant's users by username, `q` a case-insensitive substring of username, address or display name. */
    async list(actor: Actor, page: UserPage) {
      let users = (await store.users.list()).filter((u) => u.tenantId === actor.tenantId);
      if (page.q) {
        const needle = page.q.toLowerCase();
        users = users.filter((u) => [u.username, u.email, u.displayName].some((f) => f.toLowerCase().includes(needle)));
      }
      users.sort((a, b) => (a.username < b.username ? -1 : a.username > b.username ? 1 : a.id < b.id ? -1 : 1));
      const total = users.length;
      if (page.cursor !== undefined) {
        const after = Buffer.from(page.cursor, 'base64url').toString('utf8');
        if (!after || page.cursor.length > 400) throw errors.invalidRequest('cursor is not one this list answered.', [{ field: 'cursor', message: 'not a cursor of this list' }]);
        users = users.filter((u) => u.username > after);
      }
      const shown = page.limit === undefined ? users : users.slice(0, page.limit);
      const last = shown[shown.length - 1];
      const nextCursor = page.limit !== undefined && users.length > page.limit && last ? Buffer.from(last.username).toString('base64url') : null;
      return { users: shown.map(userView), total, nextCursor };
    },

    async get(actor: Actor, id: string) {
      const user = await inTenant(actor, id);
      const mfa = await store.mfa.get(user.id);
      return {
        ...userView(user),
        mfa: mfa ? { enrolled: true, enrolledAt: new Date(mfa.enrolledAt).toISOString(), recoveryCodesLeft: mfa.recoveryCodesLeft } : { enrolled: false, enrolledAt: null, recoveryCodesLeft: 0 },
      };
    },

    async create(actor: Actor, input: NewUserRequest) {
      const user = await cli
        .addUser(
          { username: input.username, password: input.password ?? null, role: input.role, displayName: input.displayName, email: input.email, tenantId: actor.tenantId },
          { inUnit: (tx, made, now) => audit(tx, actor, now, 'user.create', 'user', made.id, { username: made.username, role: made.role, password: input.password !== undefined }) },
        )
        .catch((err: unknown) => asInvalid(err, /password/.test(String((err as Error)?.message)) ? 'password' : 'username'));
      return userView(user);
    },

    async setDisabled(actor: Actor, id: string, disabled: boolean) {
      if (disabled) await notSelf(actor, id, 'disable');
      const now = clock.now();
      const updated = await store.run(function* (tx) {
        const user = yield* inTenantIn(tx, actor, id);
        yield* tx.users.setDisabled(user.id, disabled, now);
        // A disabled account's sessions end too: enabling it again does not bring them back.
        const revoked = disabled ? yield* cli.revokeSessionsIn(tx, user.id, 'disabled by admin', now) : 0;
        yield* audit(tx, actor, now, disabled ? 'user.disable' : 'user.enable', 'user', user.id, { ...detailsOf(user), revoked });
        return (yield* tx.users.byId(user.id))!;
      });
      return userView(updated);
    },

    /** Sets `password` (the policy checked) or a generated one, answered once; every session of the user ends. */
    async resetPassword(actor: Actor, id: string, given: string | undefined) {
      const user = await notSelf(actor, id, 'reset the password of');
      const password = given ?? generatePassword();
      const { revoked } = await cli
        .setPasswordOf(user.id, password, (tx, now) => audit(tx, actor, now, 'user.resetPassword', 'user', user.id, { ...detailsOf(user), generated: given === undefined }))
        .catch((err: unknown) => asInvalid(err, 'password'));
      return given === undefined ? { revokedSessions: revoked, password } : { revokedSessions: revoked };
    },

    async revokeSessions(actor: Actor, id: string) {
      await notSelf(actor, id, 'revoke the sessions of');
      const now = clock.now();
      const revoked = await store.run(function* (tx) {
        const user = yield* inTenantIn(tx, actor, id);
        const n = yield* cli.revokeSessionsIn(tx, user.id, 'revoked by admin', now);
        yield* audit(tx, actor, now, 'user.revokeSessions', 'user', user.id, { ...detailsOf(user), revoked: n });
        return n;
      });
      return { revokedSessions: revoked };
    },

    /** Removes the user's MFA enrolment and recovery codes: their next sign-in enrols again where MFA is required. */
    async resetMfa(actor: Actor, id: string) {
      await notSelf(actor, id, 'reset the MFA of');
      const now = clock.now();
      const removed = await store.run(function* (tx) {
        const user = yield* inTenantIn(tx, actor, id);
        const had = yield* tx.mfa.remove(user.id);
        yield* audit(tx, actor, now, 'user.resetMfa', 'user', user.id, { ...detailsOf(user), enrolled: had });
        return had;
      });
      return { removed };
    },
  };
}

export type UserManagement = ReturnType<typeof createUserManagement>;
