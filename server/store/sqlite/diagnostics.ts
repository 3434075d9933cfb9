/**
 * Diagnostics incidents in SQLite (schema/sqlite/0013_diagnostics.sql). The row holds its zip blob referenced through
 * the migration's triggers, so `purgeExpired` frees the blobs of what it deletes in the same statement's transaction.
 * The row mapper and column list are shared with the PostgreSQL store. Nothing here is cached: writes announce nothing.
 */
import type { Sql } from './devices';
import type { DiagnosticIncident, StoreMethods } from '../types';

type Row = Record<string, unknown>;

export const INCIDENT_COLUMNS = 'id, tenant_id, user_id, device_record_id, device_id, blob_id, size, entries, redactions, created_at, expires_at';

export const toIncident = (r: Row): DiagnosticIncident => ({
  id: r.id as string,
  tenantId: r.tenant_id as string,
  userId: r.user_id as string,
  deviceRecordId: (r.device_record_id as string | null) ?? null,
  deviceId: r.device_id as string,
  blobId: r.blob_id as string,
  size: Number(r.size),
  entries: Number(r.entries),
  redactions: Number(r.redactions),
  createdAt: Number(r.created_at),
  expiresAt: Number(r.expires_at),
});

/** The incident's columns as statement parameters, in INCIDENT_COLUMNS order. */
export const incidentParams = (i: DiagnosticIncident): unknown[] => [
  i.id,
  i.tenantId,
  i.userId,
  i.deviceRecordId,
  i.deviceId,
  i.blobId,
  i.size,
  i.entries,
  i.redactions,
  i.createdAt,
  i.expiresAt,
];

export function diagnosticsRepositories(sql: Sql): Pick<StoreMethods, 'diagnostics'> {
  return {
    diagnostics: {
      create(incident) {
        sql(`INSERT INTO diagnostic_incidents (${INCIDENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`).run(...incidentParams(incident));
        return { ...incident };
      },
      byId(tenantId, id) {
        const r = sql(`SELECT ${INCIDENT_COLUMNS} FROM diagnostic_incidents WHERE id = ? AND tenant_id = ?`).get(id, tenantId) as Row | undefined;
        return r && toIncident(r);
      },
      listByUser(userId, limit) {
        return (
          sql(`SELECT ${INCIDENT_COLUMNS} FROM diagnostic_incidents WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?`).all(userId, limit) as Row[]
        ).map(toIncident);
      },
      purgeExpired(now, limit) {
        return sql(
          `DELETE FROM diagnostic_incidents WHERE rowid IN
             (SELECT rowid FROM diagnostic_incidents WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)`,
        ).run(now, limit).changes;
      },
    },
  };
}
