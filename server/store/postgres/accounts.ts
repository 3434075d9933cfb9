/**
 * Tenants, users and refresh tokens in PostgreSQL (the SQLite store's index.ts is the specification).
 */
import { toRefresh, toUser } from '../rows';
import { newId } from '../../ids';
import { DEFAULT_REGION, type NewRefreshToken, type NewUser, type RefreshTokenRecord, type Tenant, type TxStore, type User } from '../types';
import { rowCount, rows, type Row, type Tx } from './tx';

const toTenant = (r: Row): Tenant => ({ id: r.id as string, name: r.name as string, region: r.region as string, createdAt: r.created_at as number });

const USER_COLUMNS = 'id, tenant_id, username, email, display_name, role, password_hash, session_version, disabled, created_at, updated_at';

export function accountSteps(tx: Tx): Pick<TxStore, 'tenants' | 'users' | 'refreshTokens'> {
  /** Reports the sign-ins a refresh-token write changed (its `RETURNING family_id` rows); answers how many rows. */
  const changedSignIns = (changed: Array<{ family_id: string }>): number => {
    for (const familyId of new Set(changed.map((r) => r.family_id))) tx.invalidate({ kind: 'signIn', familyId });
    return changed.length;
  };
  const userWrite = function* (id: string, text: string, values: unknown[]) {
    yield* rows(tx, text, values);
    tx.invalidate({ kind: 'user', userId: id });
  };

  const refreshTokens: TxStore['refreshTokens'] = {
    *insert(t: NewRefreshToken) {
      yield* rows(
        tx,
        `INSERT INTO refresh_tokens (user_id, id, family_id, device_id, client_id, scope, token_hash, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
        [t.userId, t.id, t.familyId, t.deviceId, t.clientId, t.scope, t.tokenHash, t.createdAt, t.expiresAt],
      );
      tx.invalidate({ kind: 'signIn', familyId: t.familyId });
    },
    *byHash(hash) {
      const [r] = yield* rows(tx, 'SELECT * FROM refresh_tokens WHERE token_hash = $1', [hash]);
      return r && toRefresh(r);
    },
    *byId(id) {
      const [r] = yield* rows(tx, 'SELECT * FROM refresh_tokens WHERE id = $1', [id]);
      return r && toRefresh(r);
    },
    *markRotated(id, replacedBy, now) {
      const changed = yield* rows<{ family_id: string }>(
        tx,
        `UPDATE refresh_tokens SET rotated_at = $1, replaced_by = $2 WHERE id = $3 AND rotated_at IS NULL AND revoked_at IS NULL
         RETURNING family_id`,
        [now, replacedBy, id],
      );
      return changedSignIns(changed) === 1;
    },
    *revokeFamily(familyId, reason, now) {
      return changedSignIns(
        yield* rows(
          tx,
          'UPDATE refresh_tokens SET revoked_at = $1, revoked_reason = $2 WHERE family_id = $3 AND revoked_at IS NULL RETURNING family_id',
          [now, reason, familyId],
        ),
      );
    },
    *extend(familyId, expiresAt) {
      const changed = yield* rows<{ family_id: string }>(
        tx,
        `UPDATE refresh_tokens SET expires_at = $1
         WHERE family_id = $2 AND revoked_at IS NULL AND rotated_at IS NULL AND expires_at < $1 RETURNING family_id`,
        [expiresAt, familyId],
      );
      return changedSignIns(changed) > 0;
    },
    *revokeAllForUser(userId, reason, now) {
      return changedSignIns(
        yield* rows(
          tx,
          'UPDATE refresh_tokens SET revoked_at = $1, revoked_reason = $2 WHERE user_id = $3 AND revoked_at IS NULL RETURNING family_id',
          [now, reason, userId],
        ),
      );
    },
    *revokeForDevice(userId, deviceId, reason, now) {
      // Whole families: a sign-in bound to the device on a later refresh still has older, unbound rows. A family
      // belongs to one user, so the outer statement stays in the user's rows too.
      return changedSignIns(
        yield* rows(
          tx,
          `UPDATE refresh_tokens SET revoked_at = $1, revoked_reason = $2
           WHERE user_id = $3 AND revoked_at IS NULL AND family_id IN
             (SELECT family_id FROM refresh_tokens WHERE user_id = $3 AND device_id = $4)
           RETURNING family_id`,
          [now, reason, userId, deviceId],
        ),
      );
    },
    *liveHead(userId, familyId, now) {
      const head = yield* refreshTokens.head(userId, familyId);
      return head && head.expiresAt > now ? head : undefined;
    },
    *head(userId, familyId) {
      // The predicate repeats the partial index's (refresh_tokens_live_head), so the planner uses it.
      const [r] = yield* rows<{ device_id: string | null; expires_at: number }>(
        tx,
        `SELECT device_id, expires_at FROM refresh_tokens
         WHERE user_id = $1 AND family_id = $2 AND revoked_at IS NULL AND rotated_at IS NULL`,
        [userId, familyId],
      );
      return r && { deviceId: r.device_id, expiresAt: r.expires_at };
    },
  };

  return {
    tenants: {
      *create(name, now, region = DEFAULT_REGION) {
        const tenant: Tenant = { id: newId(), name, region, createdAt: now };
        yield* rows(tx, 'INSERT INTO tenants (id, name, region, created_at) VALUES ($1, $2, $3, $4)', [tenant.id, name, region, now]);
        tx.invalidate({ kind: 'tenantAccess', tenantId: tenant.id });
        return tenant;
      },
      *get(id) {
        const [r] = yield* rows(tx, 'SELECT * FROM tenants WHERE id = $1', [id]);
        return r && toTenant(r);
      },
      *list() {
        return (yield* rows(tx, 'SELECT * FROM tenants ORDER BY created_at, id')).map(toTenant);
      },
      *setRegion(id, region) {
        const changed = (yield* rowCount(tx, 'UPDATE tenants SET region = $1 WHERE id = $2', [region, id])) === 1;
        if (changed) tx.invalidate({ kind: 'tenantAccess', tenantId: id });
        return changed;
      },
    },

    users: {
      *create(u: NewUser, now) {
        const [r] = yield* rows(
          tx,
          `INSERT INTO users (tenant_id, id, username, email, display_name, role, password_hash, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING ${USER_COLUMNS}`,
          [u.tenantId, newId(), u.username, u.email, u.displayName, u.role, u.passwordHash, now],
        );
        const user = toUser(r!);
        tx.invalidate({ kind: 'user', userId: user.id });
        return user;
      },
      *byId(id) {
        const [r] = yield* rows(tx, `SELECT ${USER_COLUMNS} FROM users WHERE id = $1`, [id]);
        return r && toUser(r);
      },
      *byUsername(username) {
        // SQLite's username column is COLLATE NOCASE: so is the match (users_username).
        const [r] = yield* rows(tx, `SELECT ${USER_COLUMNS} FROM users WHERE nocase(username) = nocase($1)`, [username]);
        return r && toUser(r);
      },
      *byEmail(email) {
        return (yield* rows(tx, `SELECT ${USER_COLUMNS} FROM users WHERE nocase(email) = nocase($1) ORDER BY created_at, id`, [email])).map(toUser);
      },
      *list() {
        // ORDER BY a NOCASE column sorts case-insensitively on SQLite.
        return (yield* rows(tx, `SELECT ${USER_COLUMNS} FROM users ORDER BY nocase(username)`)).map(toUser);
      },
      *count() {
        const [r] = yield* rows<{ n: number }>(tx, 'SELECT count(*) AS n FROM users');
        return r!.n;
      },
      *setPassword(id, passwordHash, now) {
        yield* userWrite(id, 'UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3', [passwordHash, now, id]);
      },
      *bumpSessionVersion(id, now) {
        yield* userWrite(id, 'UPDATE users SET session_version = session_version + 1, updated_at = $1 WHERE id = $2', [now, id]);
      },
      *setDisabled(id, disabled, now) {
        yield* userWrite(id, 'UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3', [disabled, now, id]);
      },
    },

    refreshTokens,
  };
}
