/**
 * Diagnostics incidents in PostgreSQL (schema/postgres/0015_diagnostics.sql; the SQLite store's diagnostics.ts is the
 * specification, and its row mapper is used here). Incidents are mailbox data keyed by user; the blob the row
 * references is counted by 0004's `blob_id_ref` trigger, so the purge releases what it deletes in its transaction.
 * An incident is written once and never changed, so no read takes the mailbox lock.
 */
import type { TxStore } from '../types';
import { INCIDENT_COLUMNS, incidentParams, toIncident } from '../sqlite/diagnostics';
import { limitParam, lockMailbox, rowCount, rows, type Tx } from './tx';

export function diagnosticsSteps(tx: Tx): Pick<TxStore, 'diagnostics'> {
  return {
    diagnostics: {
      *create(incident) {
        // As blobs.put: the mailbox's lock orders this reference after the blob's insert and before any release.
        yield* lockMailbox(tx, incident.userId);
        yield* rows(
          tx,
          `INSERT INTO diagnostic_incidents (${INCIDENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
          incidentParams(incident),
        );
        return { ...incident };
      },
      *byId(tenantId, id) {
        const [r] = yield* rows(tx, `SELECT ${INCIDENT_COLUMNS} FROM diagnostic_incidents WHERE tenant_id = $1 AND id = $2`, [tenantId, id]);
        return r && toIncident(r);
      },
      *listByUser(userId, limit) {
        return (
          yield* rows(
            tx,
            `SELECT ${INCIDENT_COLUMNS} FROM diagnostic_incidents WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2`,
            [userId, limitParam(limit)],
          )
        ).map(toIncident);
      },
      *purgeExpired(now, limit) {
        return yield* rowCount(
          tx,
          `DELETE FROM diagnostic_incidents WHERE (user_id, id) IN
             (SELECT user_id, id FROM diagnostic_incidents WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)`,
          [now, limitParam(limit)],
        );
      },
    },
  };
}
