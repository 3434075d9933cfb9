/**
 * User administration shared by the admin CLI (and later the admin API): adding users, setting passwords and
 * revoking sessions. A password change always revokes every session, so a leaked password stops working everywhere.
 */
import type { Clock } from '../clock';
import type { Role, Store, User } from '../store/types';
import { hashPassword, passwordProblem } from '../auth/passwords';

export class UserAdminError extends Error {}

export function createUserAdmin(store: Store, clock: Clock) {
  function find(username: string): User {
    const user = store.users.byUsername(username);
    if (!user) throw new UserAdminError(`no user named ${JSON.stringify(username)}`);
    return user;
  }

  /** Ends every refresh token and, through the session version, every access token of the user. */
  function revokeSessions(userId: string, reason: string): number {
    return store.transaction(() => {
      const n = store.refreshTokens.revokeAllForUser(userId, reason, clock.now());
      store.users.bumpSessionVersion(userId, clock.now());
      return n;
    });
  }

  return {
    revokeSessions,

    async addUser(input: { username: string; password: string; role: Role; displayName?: string; email?: string; tenantId?: string }): Promise<User> {
      if (!/^[A-Za-z0-9._@+-]{1,128}$/.test(input.username)) {
        throw new UserAdminError('username must be 1 to 128 characters of letters, digits and . _ @ + -');
      }
      const problem = passwordProblem(input.password);
      if (problem) throw new UserAdminError(`password ${problem}`);
      if (store.users.byUsername(input.username)) throw new UserAdminError(`user ${input.username} already exists`);
      const passwordHash = await hashPassword(input.password);
      return store.transaction(() => {
        const now = clock.now();
        const tenantId = input.tenantId ?? store.users.list()[0]?.tenantId ?? store.tenants.create('Default', now).id;
        const user = store.users.create(
          {
            tenantId,
            username: input.username,
            email: input.email ?? (input.username.includes('@') ? input.username : `${input.username}@localhost`),
            displayName: input.displayName ?? input.username,
            role: input.role,
            passwordHash,
          },
          now,
        );
        store.mailboxes.create(user.id, now);
        return user;
      });
    },

    async setPassword(username: string, password: string): Promise<{ revoked: number }> {
      const user = find(username);
      const problem = passwordProblem(password);
      if (problem) throw new UserAdminError(`password ${problem}`);
      const hash = await hashPassword(password);
      return store.transaction(() => {
        store.users.setPassword(user.id, hash, clock.now());
        return { revoked: revokeSessions(user.id, 'password changed') };
      });
    },

    revokeSessionsOf(username: string): number {
      return revokeSessions(find(username).id, 'revoked by admin');
    },

    list(): User[] {
      return store.users.list();
    },
  };
}
