/**
 * Information protection in PostgreSQL (the SQLite store's protection.ts is the specification, and its row mappers
 * are used here; schema/postgres/0011_protection.sql). Nothing of this group is cached: writes announce nothing.
 */
import type { TxStore } from '../types';
import {
  CERTIFICATE_COLUMNS,
  KEY_COLUMNS,
  NEWEST_FIRST,
  certificateParams,
  keyParams,
  toProtectionConfig,
  toProtectionKey,
  toUserCertificate,
} from '../sqlite/protection';
import { exclusiveLockKey } from './exclusive';
import { rowCount, rows, type Tx } from './tx';

/** `$1, $2, …`: one for each of `columns`. */
const placeholders = (columns: string) => columns.split(',').map((_, i) => `$${i + 1}`).join(', ');

/** The transaction lock that orders a tenant's rotations (held until commit). */
const rotationLockKey = (tenantId: string) => exclusiveLockKey(`protection key ${tenantId}`);

export function protectionSteps(tx: Tx): Pick<TxStore, 'protection'> {
  return {
    protection: {
      *keys(tenantId) {
        const found = yield* rows(tx, `SELECT * FROM protection_keys WHERE tenant_id = $1 ${NEWEST_FIRST}`, [tenantId]);
        return found.map(toProtectionKey);
      },
      *rotateKey(key) {
        // Two rotations at once (two nodes giving a tenant its first key, say) would each retire what they saw and
        // insert: under READ COMMITTED neither sees the other's new key, and the second insert would break the
        // one-active-key index. Taken in turn, the second retires the first's key, and both keys are kept.
        yield* rows(tx, 'SELECT pg_advisory_xact_lock($1::bigint)', [rotationLockKey(key.tenantId)]);
        yield* rowCount(tx, 'UPDATE protection_keys SET retired_at = $1 WHERE tenant_id = $2 AND retired_at IS NULL', [
          key.createdAt,
          key.tenantId,
        ]);
        yield* rowCount(tx, `INSERT INTO protection_keys (${KEY_COLUMNS}) VALUES (${placeholders(KEY_COLUMNS)})`, keyParams(key));
      },

      *config(tenantId) {
        const [r] = yield* rows(tx, 'SELECT * FROM protection_config WHERE tenant_id = $1', [tenantId]);
        return r && toProtectionConfig(r);
      },
      *putConfig(tenantId, doc, expectedVersion, now) {
        // As access.putConfig: under READ COMMITTED a concurrent writer of the row is waited for, and the version is
        // then compared with what it committed, so of two changes from one version one wins.
        const [r] =
          expectedVersion === 0
            ? yield* rows(
                tx,
                `INSERT INTO protection_config (tenant_id, version, doc, updated_at) VALUES ($1, 1, $2, $3)
                 ON CONFLICT (tenant_id) DO NOTHING RETURNING *`,
                [tenantId, doc, now],
              )
            : yield* rows(
                tx,
                `UPDATE protection_config SET version = version + 1, doc = $1, updated_at = $2
                 WHERE tenant_id = $3 AND version = $4 RETURNING *`,
                [doc, now, tenantId, expectedVersion],
              );
        return r && toProtectionConfig(r);
      },

      *certificates(userId) {
        const found = yield* rows(tx, `SELECT * FROM user_certificates WHERE user_id = $1 ${NEWEST_FIRST}`, [userId]);
        return found.map(toUserCertificate);
      },
      *certificatesByEmail(tenantId, email) {
        const found = yield* rows(tx, `SELECT * FROM user_certificates WHERE tenant_id = $1 AND email = $2 ${NEWEST_FIRST}`, [
          tenantId,
          email,
        ]);
        return found.map(toUserCertificate);
      },
      *addCertificate(cert) {
        // Only the duplicate rule is absorbed: a repeated record id is a bug and still throws.
        const added = yield* rowCount(
          tx,
          `INSERT INTO user_certificates (${CERTIFICATE_COLUMNS}) VALUES (${placeholders(CERTIFICATE_COLUMNS)})
           ON CONFLICT (tenant_id, user_id, fingerprint) DO NOTHING`,
          certificateParams(cert),
        );
        return added === 1;
      },
      *removeCertificate(userId, id) {
        return (yield* rowCount(tx, 'DELETE FROM user_certificates WHERE user_id = $1 AND id = $2', [userId, id])) === 1;
      },
    },
  };
}
