/**
 * Information protection in SQLite: tenant protection keys, the tenant's protection document and users' published
 * S/MIME certificates (schema/sqlite/0009_protection.sql). The row mappers and column lists are shared with the
 * PostgreSQL store.
 *
 * Nothing here is kept by the hot cache, so writes announce no invalidation: the keyring reads the key list from the
 * store on every use and compiles the document once per version.
 */
import type { Sql } from './devices';
import type { ProtectionConfigRecord, ProtectionKeyRecord, StoreMethods, UserCertificate } from '../types';

type Row = Record<string, unknown>;

export const toProtectionKey = (r: Row): ProtectionKeyRecord => ({
  id: r.id as string,
  tenantId: r.tenant_id as string,
  certificatePem: r.certificate_pem as string,
  sealedPrivateKey: r.sealed_private_key as string,
  createdAt: Number(r.created_at),
  retiredAt: r.retired_at === null || r.retired_at === undefined ? null : Number(r.retired_at),
});

export const toProtectionConfig = (r: Row): ProtectionConfigRecord => ({
  tenantId: r.tenant_id as string,
  version: Number(r.version),
  doc: r.doc as string,
  updatedAt: Number(r.updated_at),
});

export const toUserCertificate = (r: Row): UserCertificate => ({
  id: r.id as string,
  tenantId: r.tenant_id as string,
  userId: r.user_id as string,
  email: r.email as string,
  certificatePem: r.certificate_pem as string,
  fingerprint: r.fingerprint as string,
  notBefore: Number(r.not_before),
  notAfter: Number(r.not_after),
  createdAt: Number(r.created_at),
});

/** A new key is always written unretired (`rotateKey` makes it the active one, whatever `retiredAt` it came with). */
export const KEY_COLUMNS = 'id, tenant_id, certificate_pem, sealed_private_key, created_at, retired_at';
export const keyParams = (k: ProtectionKeyRecord) => [k.id, k.tenantId, k.certificatePem, k.sealedPrivateKey, k.createdAt, null];

export const CERTIFICATE_COLUMNS = 'id, tenant_id, user_id, email, certificate_pem, fingerprint, not_before, not_after, created_at';
export const certificateParams = (c: UserCertificate) => [
  c.id, c.tenantId, c.userId, c.email, c.certificatePem, c.fingerprint, c.notBefore, c.notAfter, c.createdAt,
];

/** Newest first; equal times by id, so both backends answer one order. */
export const NEWEST_FIRST = 'ORDER BY created_at DESC, id DESC';

const marks = (columns: string) => columns.split(',').map(() => '?').join(', ');

export function protectionRepositories(sql: Sql, transaction: <T>(fn: () => T) => T): Pick<StoreMethods, 'protection'> {
  return {
    protection: {
      keys(tenantId) {
        return (sql(`SELECT * FROM protection_keys WHERE tenant_id = ? ${NEWEST_FIRST}`).all(tenantId) as Row[]).map(toProtectionKey);
      },
      rotateKey(key) {
        // One transaction (joining the caller's if there is one): the tenant is never seen with no active key or
        // two, and a failed insert (a repeated id) leaves the old key active.
        transaction(() => {
          sql('UPDATE protection_keys SET retired_at = ? WHERE tenant_id = ? AND retired_at IS NULL').run(key.createdAt, key.tenantId);
          sql(`INSERT INTO protection_keys (${KEY_COLUMNS}) VALUES (${marks(KEY_COLUMNS)})`).run(...keyParams(key));
        });
      },

      config(tenantId) {
        const r = sql('SELECT * FROM protection_config WHERE tenant_id = ?').get(tenantId) as Row | undefined;
        return r && toProtectionConfig(r);
      },
      putConfig(tenantId, doc, expectedVersion, now) {
        const r =
          expectedVersion === 0
            ? sql(
                `INSERT INTO protection_config (tenant_id, version, doc, updated_at) VALUES (?, 1, ?, ?)
                 ON CONFLICT (tenant_id) DO NOTHING RETURNING *`,
              ).get(tenantId, doc, now)
            : sql(
                `UPDATE protection_config SET version = version + 1, doc = ?, updated_at = ?
                 WHERE tenant_id = ? AND version = ? RETURNING *`,
              ).get(doc, now, tenantId, expectedVersion);
        return r === undefined ? undefined : toProtectionConfig(r as Row);
      },

      certificates(userId) {
        return (sql(`SELECT * FROM user_certificates WHERE user_id = ? ${NEWEST_FIRST}`).all(userId) as Row[]).map(toUserCertificate);
      },
      certificatesByEmail(tenantId, email) {
        return (
          sql(`SELECT * FROM user_certificates WHERE tenant_id = ? AND email = ? ${NEWEST_FIRST}`).all(tenantId, email) as Row[]
        ).map(toUserCertificate);
      },
      addCertificate(cert) {
        // Only the duplicate rule is absorbed: a repeated record id is a bug and still throws.
        return (
          sql(
            `INSERT INTO user_certificates (${CERTIFICATE_COLUMNS}) VALUES (${marks(CERTIFICATE_COLUMNS)})
             ON CONFLICT (user_id, fingerprint) DO NOTHING`,
          ).run(...certificateParams(cert)).changes === 1
        );
      },
      removeCertificate(userId, id) {
        return sql('DELETE FROM user_certificates WHERE user_id = ? AND id = ?').run(userId, id).changes === 1;
      },
    },
  };
}
