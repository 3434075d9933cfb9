/**
 * Conditional access, device compliance, app protection and the sign-in log in PostgreSQL (the SQLite store's
 * access.ts is the specification, and its row mappers are used here; schema/postgres/0010_access.sql).
 */
import type { TxStore } from '../types';
import { jsonValue } from '../rows';
import {
  APP_STATE_COLUMNS,
  COMPLIANCE_COLUMNS,
  HISTORY_COLUMNS,
  HISTORY_LIMIT,
  SIGN_IN_COLUMNS,
  appStateParams,
  columnCount,
  complianceParams,
  replaceAll,
  signInConditions,
  signInParams,
  toAccessConfig,
  toAppState,
  toCompliance,
  toSignIn,
  toUserRisk,
} from '../sqlite/access';
import { json, limitParam, rowCount, rows, type Tx } from './tx';

/** `$1, $2, …`: one for each of `columns`. */
const placeholders = (columns: string) => Array.from({ length: columnCount(columns) }, (_, i) => `$${i + 1}`).join(', ');

const sameKey = 'tenant_id = $1 AND user_id = $2 AND device_id = $3';

/** One statement for the three lists of risk's history, so it can run as a lone read. */
const HISTORY = `SELECT ${HISTORY_COLUMNS.map(
  ([column, field]) =>
    `ARRAY(SELECT ${column} FROM sign_in_log
       WHERE user_id = $1 AND at >= $2 AND decision = 'allow' AND ${column} IS NOT NULL
       GROUP BY ${column} ORDER BY max(at) DESC, ${column} LIMIT ${HISTORY_LIMIT}) AS "${field}"`,
).join(',\n  ')}`;

export function accessSteps(tx: Tx): Pick<TxStore, 'access'> {
  return {
    access: {
      *config(tenantId) {
        const [r] = yield* rows(tx, 'SELECT * FROM access_config WHERE tenant_id = $1', [tenantId]);
        return r && toAccessConfig(r);
      },
      *putConfig(tenantId, doc, expectedVersion, now) {
        // Under READ COMMITTED a concurrent writer of the row is waited for, and the version is then compared with
        // what it committed: of two changes from one version, one wins and the other answers undefined.
        const [r] =
          expectedVersion === 0
            ? yield* rows(
                tx,
                `INSERT INTO access_config (tenant_id, version, doc, updated_at) VALUES ($1, 1, $2, $3)
                 ON CONFLICT (tenant_id) DO NOTHING RETURNING *`,
                [tenantId, doc, now],
              )
            : yield* rows(
                tx,
                `UPDATE access_config SET version = version + 1, doc = $1, updated_at = $2
                 WHERE tenant_id = $3 AND version = $4 RETURNING *`,
                [doc, now, tenantId, expectedVersion],
              );
        if (r) tx.invalidate({ kind: 'tenantAccess', tenantId });
        return r && toAccessConfig(r);
      },

      *compliance(tenantId, userId, deviceId) {
        const [r] = yield* rows(tx, `SELECT * FROM device_compliance WHERE ${sameKey}`, [tenantId, userId, deviceId]);
        return r && toCompliance(r, jsonValue);
      },
      *setCompliance(record) {
        yield* rows(
          tx,
          `INSERT INTO device_compliance (${COMPLIANCE_COLUMNS}) VALUES (${placeholders(COMPLIANCE_COLUMNS)})
           ON CONFLICT (tenant_id, user_id, device_id) DO UPDATE SET ${replaceAll(COMPLIANCE_COLUMNS, ['tenant_id', 'user_id', 'device_id'])}`,
          complianceParams(record, json),
        );
        tx.invalidate({ kind: 'device', userId: record.userId, deviceId: record.deviceId });
      },

      *appState(tenantId, userId, deviceId) {
        const [r] = yield* rows(tx, `SELECT * FROM app_protection_state WHERE ${sameKey}`, [tenantId, userId, deviceId]);
        return r && toAppState(r, jsonValue);
      },
      *putAppState(state) {
        yield* rows(
          tx,
          `INSERT INTO app_protection_state (${APP_STATE_COLUMNS}) VALUES (${placeholders(APP_STATE_COLUMNS)})
           ON CONFLICT (tenant_id, user_id, device_id) DO UPDATE SET ${replaceAll(APP_STATE_COLUMNS, ['tenant_id', 'user_id', 'device_id'])}`,
          appStateParams(state, json),
        );
        tx.invalidate({ kind: 'device', userId: state.userId, deviceId: state.deviceId });
      },
      *staleAppStates(tenantId, before, limit) {
        // The predicate repeats the partial index's, so the planner can use it.
        const found = yield* rows(
          tx,
          `SELECT * FROM app_protection_state
           WHERE tenant_id = $1 AND selective_wipe = 'none' AND last_check_in_at < $2
           ORDER BY last_check_in_at, user_id, device_id LIMIT $3`,
          [tenantId, before, limitParam(limit)],
        );
        return found.map((r) => toAppState(r, jsonValue));
      },

      *logSignIn(entry) {
        yield* rows(tx, `INSERT INTO sign_in_log (${SIGN_IN_COLUMNS}) VALUES (${placeholders(SIGN_IN_COLUMNS)})`, signInParams(entry, json));
        if (entry.sessionId !== null) tx.invalidate({ kind: 'signIn', familyId: entry.sessionId });
      },
      *signIns(filter) {
        const values: unknown[] = [];
        const where = signInConditions(filter, (v) => `$${values.push(v)}`);
        values.push(limitParam(filter.limit));
        const found = yield* rows(
          tx,
          `SELECT * FROM sign_in_log WHERE ${where.join(' AND ')} ORDER BY at DESC, id DESC LIMIT $${values.length}`,
          values,
        );
        return found.map((r) => toSignIn(r, jsonValue));
      },
      *signInOfSession(sessionId) {
        const [r] = yield* rows(tx, 'SELECT * FROM sign_in_log WHERE session_id = $1 ORDER BY at DESC, id DESC LIMIT 1', [sessionId]);
        return r && toSignIn(r, jsonValue);
      },
      *signInHistory(userId, since) {
        const [r] = yield* rows<{ deviceIds: string[]; clientIds: string[]; ips: string[] }>(tx, HISTORY, [userId, since]);
        return { deviceIds: r!.deviceIds, clientIds: r!.clientIds, ips: r!.ips };
      },
      *failuresSince(userId, since) {
        const [r] = yield* rows<{ n: number }>(
          tx,
          `SELECT count(*) AS n FROM sign_in_log WHERE user_id = $1 AND at >= $2 AND decision = 'failure'`,
          [userId, since],
        );
        return Number(r!.n);
      },

      *userRisk(userId) {
        const [r] = yield* rows(tx, 'SELECT * FROM user_risk WHERE user_id = $1', [userId]);
        return r && toUserRisk(r);
      },
      *setUserRisk(risk) {
        yield* rows(
          tx,
          `INSERT INTO user_risk (user_id, state, at, decided_by) VALUES ($1, $2, $3, $4)
           ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, at = excluded.at, decided_by = excluded.decided_by`,
          [risk.userId, risk.state, risk.at, risk.by],
        );
        tx.invalidate({ kind: 'user', userId: risk.userId });
      },

      *purgeSignIns(before, limit) {
        return yield* rowCount(
          tx,
          `DELETE FROM sign_in_log WHERE (tenant_id, id) IN
             (SELECT tenant_id, id FROM sign_in_log WHERE at < $1 ORDER BY at LIMIT $2)`,
          [before, limitParam(limit)],
        );
      },
    },
  };
}
