/**
 * User administration shared by the admin CLI (and later the admin API): adding users, setting passwords and
 * revoking sessions. A password change always revokes every session, so a leaked password stops working everywhere.
 */
import type { Clock } from '../clock';
import type { Role, Step, Store, TxStore, User } from '../store/types';
import { hashPassword, passwordProblem } from '../identity/passwords';

export class UserAdminError extends Error {}

export function createUserAdmin(store: Store, clock: Clock, options: { region?: string } = {}) {
  async function find(username: string): Promise<User> {
    const user = await store.users.byUsername(username);
    if (!user) throw new UserAdminError(`no user named ${JSON.stringify(username)}`);
    return user;
  }

  /** Ends every refresh token and, through the session version, every access token of the user (inside a unit). */
  function* revokeSessionsIn(tx: TxStore, userId: string, reason: string, now: number): Step<number> {
    const n = yield* tx.refreshTokens.revokeAllForUser(userId, reason, now);
    yield* tx.users.bumpSessionVersion(userId, now);
    return n;
  }

  function revokeSessions(userId: string, reason: string): Promise<number> {
    const now = clock.now();
    return store.run((tx) => revokeSessionsIn(tx, userId, reason, now));
  }

  /** Sets the user's password (the policy checked) and ends every session of theirs, in one unit with `inUnit`. */
  async function setPasswordOf(userId: string, password: string, inUnit?: (tx: TxStore, now: number) => Step<void>): Promise<{ revoked: number }> {
    const problem = passwordProblem(password);
    if (problem) throw new UserAdminError(`password ${problem}`);
    const hash = await hashPassword(password);
    const now = clock.now();
    return store.run(function* (tx) {
      yield* tx.users.setPassword(userId, hash, now);
      const revoked = yield* revokeSessionsIn(tx, userId, 'password changed', now);
      if (inUnit) yield* inUnit(tx, now);
      return { revoked };
    });
  }

  return {
    revokeSessions,
    revokeSessionsIn,

    /**
     * `password: null` (the admin API's "no password yet") makes an account that cannot sign in with a password
     * until one is set. `inUnit` runs in the unit that creates the user (the admin API's audit entry).
     */
    async addUser(
      input: { username: string; password: string | null; role: Role; displayName?: string; email?: string; tenantId?: string },
      o: { inUnit?: (tx: TxStore, user: User, now: number) => Step<void> } = {},
    ): Promise<User> {
      if (!/^[A-Za-z0-9._@+-]{1,128}$/.test(input.username)) {
        throw new UserAdminError('username must be 1 to 128 characters of letters, digits and . _ @ + -');
      }
      const problem = input.password === null ? undefined : passwordProblem(input.password);
      if (problem) throw new UserAdminError(`password ${problem}`);
      if (await store.users.byUsername(input.username)) throw new UserAdminError(`user ${input.username} already exists`);
      const passwordHash = input.password === null ? null : await hashPassword(input.password);
      const now = clock.now();
      return store.run(function* (tx) {
        if (input.tenantId !== undefined && !(yield* tx.tenants.get(input.tenantId))) {
          throw new UserAdminError(`no tenant ${JSON.stringify(input.tenantId)} (see tenant list)`);
        }
        // The first user of an empty store founds its tenant, in the region this store serves.
        const tenantId =
          input.tenantId ?? (yield* tx.users.list())[0]?.tenantId ?? (yield* tx.tenants.create('Default', now, options.region)).id;
        const user = yield* tx.users.create(
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
        yield* tx.mailboxes.create(user.id, now);
        if (o.inUnit) yield* o.inUnit(tx, user, now);
        return user;
      });
    },

    async setPassword(username: string, password: string): Promise<{ revoked: number }> {
      return setPasswordOf((await find(username)).id, password);
    },

    setPasswordOf,

    async revokeSessionsOf(username: string): Promise<number> {
      return revokeSessions((await find(username)).id, 'revoked by admin');
    },

    list(): Promise<User[]> {
      return store.users.list();
    },
  };
}
