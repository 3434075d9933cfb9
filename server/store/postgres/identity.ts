/**
 * The identity provider's records and TOTP enrolments in PostgreSQL (the SQLite store's identity.ts is the
 * specification; schema/postgres/0009_identity_provider.sql).
 */
import type { IdentityRecord, TxStore } from '../types';
import { toEnrollment } from '../sqlite/identity';
import { rowCount, rows, type Row, type Tx } from './tx';

const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

const toRecord = (r: Row): IdentityRecord => ({
  model: r.model as string,
  id: r.id as string,
  payload: r.payload as Record<string, unknown>,
  grantId: (r.grant_id as string | null) ?? null,
  userCode: (r.user_code as string | null) ?? null,
  uid: (r.uid as string | null) ?? null,
  expiresAt: num(r.expires_at),
  consumedAt: num(r.consumed_at),
});

export function identitySteps(tx: Tx): Pick<TxStore, 'identityRecords' | 'mfa'> {
  return {
    identityRecords: {
      *upsert(r) {
        yield* rows(
          tx,
          `INSERT INTO identity_records (model, id, payload, grant_id, user_code, uid, expires_at, consumed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id,
             user_code = excluded.user_code, uid = excluded.uid, expires_at = excluded.expires_at, consumed_at = excluded.consumed_at`,
          [r.model, r.id, JSON.stringify(r.payload), r.grantId, r.userCode, r.uid, r.expiresAt, r.consumedAt],
        );
      },
      *find(model, id) {
        const [r] = yield* rows(tx, 'SELECT * FROM identity_records WHERE model = $1 AND id = $2', [model, id]);
        return r && toRecord(r);
      },
      *findByUid(model, uid) {
        const [r] = yield* rows(tx, 'SELECT * FROM identity_records WHERE model = $1 AND uid = $2', [model, uid]);
        return r && toRecord(r);
      },
      *findByUserCode(model, userCode) {
        const [r] = yield* rows(tx, 'SELECT * FROM identity_records WHERE model = $1 AND user_code = $2', [model, userCode]);
        return r && toRecord(r);
      },
      *consume(model, id, now) {
        yield* rows(tx, 'UPDATE identity_records SET consumed_at = $1 WHERE model = $2 AND id = $3 AND consumed_at IS NULL', [now, model, id]);
      },
      *destroy(model, id) {
        yield* rows(tx, 'DELETE FROM identity_records WHERE model = $1 AND id = $2', [model, id]);
      },
      *revokeByGrantId(grantId) {
        return yield* rowCount(tx, 'DELETE FROM identity_records WHERE grant_id = $1', [grantId]);
      },
      *purgeExpired(now, limit) {
        return yield* rowCount(
          tx,
          `DELETE FROM identity_records WHERE (model, id) IN
             (SELECT model, id FROM identity_records WHERE expires_at IS NOT NULL AND expires_at < $1 LIMIT $2)`,
          [now, limit],
        );
      },
    },

    mfa: {
      *get(userId) {
        const [r] = yield* rows(
          tx,
          `SELECT m.*, (SELECT count(*) FROM mfa_recovery_codes c WHERE c.user_id = m.user_id AND c.used_at IS NULL) AS left_codes
           FROM user_mfa m WHERE m.user_id = $1`,
          [userId],
        );
        return r && toEnrollment(r);
      },
      *enroll(userId, sealedSecret, hashes, now) {
        yield* rows(tx, 'DELETE FROM mfa_recovery_codes WHERE user_id = $1', [userId]);
        yield* rows(
          tx,
          `INSERT INTO user_mfa (user_id, sealed_secret, enrolled_at, last_step) VALUES ($1, $2, $3, NULL)
           ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret, enrolled_at = excluded.enrolled_at, last_step = NULL`,
          [userId, sealedSecret, now],
        );
        if (hashes.length) {
          yield* rows(tx, 'INSERT INTO mfa_recovery_codes (user_id, code_hash) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING', [userId, hashes]);
        }
      },
      *useStep(userId, step) {
        return (yield* rowCount(tx, 'UPDATE user_mfa SET last_step = $1 WHERE user_id = $2 AND (last_step IS NULL OR last_step < $1)', [step, userId])) === 1;
      },
      *useRecoveryCode(userId, codeHash, now) {
        return (
          (yield* rowCount(tx, 'UPDATE mfa_recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL', [now, userId, codeHash])) === 1
        );
      },
      *remove(userId) {
        yield* rows(tx, 'DELETE FROM mfa_recovery_codes WHERE user_id = $1', [userId]);
        return (yield* rowCount(tx, 'DELETE FROM user_mfa WHERE user_id = $1', [userId])) === 1;
      },
    },
  };
}
