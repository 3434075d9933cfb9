/**
 * The identity provider's records and TOTP enrolments in SQLite (schema/sqlite/0007_identity_provider.sql).
 */
import type { Sql } from './devices';
import type { IdentityRecord, MfaEnrollment, StoreMethods } from '../types';

type Row = Record<string, unknown>;

const toRecord = (r: Row): IdentityRecord => ({
  model: r.model as string,
  id: r.id as string,
  payload: JSON.parse(r.payload as string) as Record<string, unknown>,
  grantId: (r.grant_id as string | null) ?? null,
  userCode: (r.user_code as string | null) ?? null,
  uid: (r.uid as string | null) ?? null,
  expiresAt: (r.expires_at as number | null) ?? null,
  consumedAt: (r.consumed_at as number | null) ?? null,
});

export function identityRepositories(sql: Sql): Pick<StoreMethods, 'identityRecords' | 'mfa'> {
  return {
    identityRecords: {
      upsert(r) {
        sql(
          `INSERT INTO identity_records (model, id, payload, grant_id, user_code, uid, expires_at, consumed_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id,
             user_code = excluded.user_code, uid = excluded.uid, expires_at = excluded.expires_at, consumed_at = excluded.consumed_at`,
        ).run(r.model, r.id, JSON.stringify(r.payload), r.grantId, r.userCode, r.uid, r.expiresAt, r.consumedAt);
      },
      find(model, id) {
        const r = sql('SELECT * FROM identity_records WHERE model = ? AND id = ?').get(model, id) as Row | undefined;
        return r && toRecord(r);
      },
      findByUid(model, uid) {
        const r = sql('SELECT * FROM identity_records WHERE model = ? AND uid = ?').get(model, uid) as Row | undefined;
        return r && toRecord(r);
      },
      findByUserCode(model, userCode) {
        const r = sql('SELECT * FROM identity_records WHERE model = ? AND user_code = ?').get(model, userCode) as Row | undefined;
        return r && toRecord(r);
      },
      consume(model, id, now) {
        sql('UPDATE identity_records SET consumed_at = ? WHERE model = ? AND id = ? AND consumed_at IS NULL').run(now, model, id);
      },
      destroy(model, id) {
        sql('DELETE FROM identity_records WHERE model = ? AND id = ?').run(model, id);
      },
      revokeByGrantId(grantId) {
        return sql('DELETE FROM identity_records WHERE grant_id = ?').run(grantId).changes;
      },
      purgeExpired(now, limit) {
        return sql(
          `DELETE FROM identity_records WHERE rowid IN
             (SELECT rowid FROM identity_records WHERE expires_at IS NOT NULL AND expires_at < ? LIMIT ?)`,
        ).run(now, limit).changes;
      },
    },

    mfa: {
      get(userId) {
        const r = sql(
          `SELECT m.*, (SELECT count(*) FROM mfa_recovery_codes c WHERE c.user_id = m.user_id AND c.used_at IS NULL) AS left_codes
           FROM user_mfa m WHERE m.user_id = ?`,
        ).get(userId) as Row | undefined;
        return r && toEnrollment(r);
      },
      enroll(userId, sealedSecret, hashes, now) {
        sql('DELETE FROM mfa_recovery_codes WHERE user_id = ?').run(userId);
        sql(
          `INSERT INTO user_mfa (user_id, sealed_secret, enrolled_at, last_step) VALUES (?, ?, ?, NULL)
           ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret, enrolled_at = excluded.enrolled_at, last_step = NULL`,
        ).run(userId, sealedSecret, now);
        const insert = sql('INSERT INTO mfa_recovery_codes (user_id, code_hash) VALUES (?, ?) ON CONFLICT DO NOTHING');
        for (const hash of hashes) insert.run(userId, hash);
      },
      useStep(userId, step) {
        return sql('UPDATE user_mfa SET last_step = ? WHERE user_id = ? AND (last_step IS NULL OR last_step < ?)').run(step, userId, step).changes === 1;
      },
      useRecoveryCode(userId, codeHash, now) {
        return sql('UPDATE mfa_recovery_codes SET used_at = ? WHERE user_id = ? AND code_hash = ? AND used_at IS NULL').run(now, userId, codeHash).changes === 1;
      },
      remove(userId) {
        sql('DELETE FROM mfa_recovery_codes WHERE user_id = ?').run(userId);
        return sql('DELETE FROM user_mfa WHERE user_id = ?').run(userId).changes === 1;
      },
    },
  };
}

export const toEnrollment = (r: Row): MfaEnrollment => ({
  userId: r.user_id as string,
  sealedSecret: r.sealed_secret as string,
  enrolledAt: Number(r.enrolled_at),
  lastStep: r.last_step === null || r.last_step === undefined ? null : Number(r.last_step),
  recoveryCodesLeft: Number(r.left_codes),
});
