/**
 * Conditional access, device compliance, app protection and the sign-in log in SQLite
 * (schema/sqlite/0008_access.sql). The row mappers are shared with the PostgreSQL store, whose lists come back as
 * JSONB values rather than JSON text (`JsonColumn`).
 */
import type { Invalidate, Sql } from './devices';
import { jsonText, type JsonColumn } from '../rows';
import type {
  AccessConfigRecord,
  AppProtectionState,
  ComplianceState,
  DeviceCompliance,
  SelectiveWipeState,
  SignInLogEntry,
  SignInLogFilter,
  StoreMethods,
  UserRisk,
} from '../types';

type Row = Record<string, unknown>;

const str = (v: unknown) => (v as string | null | undefined) ?? null;
const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));

/** Risk's history keeps this many distinct values of each kind, the most recently seen. */
export const HISTORY_LIMIT = 1000;

/** The columns `signInHistory` collects, and the answer's field for each. */
export const HISTORY_COLUMNS = [
  ['device_id', 'deviceIds'],
  ['client_id', 'clientIds'],
  ['ip', 'ips'],
] as const;

/** No cursor: before every entry (an `at` no sign-in has, and `id` compared only at that `at`). */
export const NO_CURSOR = { at: Number.MAX_SAFE_INTEGER, id: '' };

export const toAccessConfig = (r: Row): AccessConfigRecord => ({
  tenantId: r.tenant_id as string,
  version: Number(r.version),
  doc: r.doc as string,
  updatedAt: Number(r.updated_at),
});

export const toCompliance = (r: Row, json: JsonColumn): DeviceCompliance => ({
  tenantId: r.tenant_id as string,
  userId: r.user_id as string,
  deviceId: r.device_id as string,
  state: r.state as ComplianceState,
  reasons: json(r.reasons) as string[],
  expiresAt: num(r.expires_at),
  partner: r.partner as string,
  noncompliantSince: num(r.noncompliant_since),
  updatedAt: Number(r.updated_at),
});

export const toAppState = (r: Row, json: JsonColumn): AppProtectionState => ({
  tenantId: r.tenant_id as string,
  userId: r.user_id as string,
  deviceId: r.device_id as string,
  policyId: str(r.policy_id),
  policyEtag: str(r.policy_etag),
  appVersion: str(r.app_version),
  osVersion: str(r.os_version),
  lastCheckInAt: num(r.last_check_in_at),
  pinFailures: Number(r.pin_failures),
  violations: json(r.violations) as string[],
  selectiveWipe: r.selective_wipe as SelectiveWipeState,
  selectiveWipeReason: str(r.selective_wipe_reason),
  selectiveWipeRequestedAt: num(r.selective_wipe_requested_at),
  selectiveWipeAcknowledgedAt: num(r.selective_wipe_acknowledged_at),
  updatedAt: Number(r.updated_at),
});

export const toSignIn = (r: Row, json: JsonColumn): SignInLogEntry => ({
  id: r.id as string,
  tenantId: r.tenant_id as string,
  userId: r.user_id as string,
  at: Number(r.at),
  kind: r.kind as SignInLogEntry['kind'],
  clientId: str(r.client_id),
  deviceId: str(r.device_id),
  ip: str(r.ip),
  sessionId: str(r.session_id),
  authMethods: json(r.auth_methods) as string[],
  riskLevel: r.risk_level as SignInLogEntry['riskLevel'],
  riskScore: Number(r.risk_score),
  riskSignals: json(r.risk_signals) as SignInLogEntry['riskSignals'],
  policyResults: json(r.policy_results) as unknown[],
  decision: r.decision as SignInLogEntry['decision'],
  reason: str(r.reason),
});

export const toUserRisk = (r: Row): UserRisk => ({
  userId: r.user_id as string,
  state: r.state as UserRisk['state'],
  at: Number(r.at),
  by: r.decided_by as string,
});

/** The column values of a compliance record, in the order of the INSERTs' column lists (lists as JSON text). */
export const complianceParams = (c: DeviceCompliance, json: (v: unknown) => string) => [
  c.tenantId, c.userId, c.deviceId, c.state, json(c.reasons), c.expiresAt, c.partner, c.noncompliantSince, c.updatedAt,
];

export const appStateParams = (s: AppProtectionState, json: (v: unknown) => string) => [
  s.tenantId, s.userId, s.deviceId, s.policyId, s.policyEtag, s.appVersion, s.osVersion, s.lastCheckInAt, s.pinFailures,
  json(s.violations), s.selectiveWipe, s.selectiveWipeReason, s.selectiveWipeRequestedAt, s.selectiveWipeAcknowledgedAt,
  s.updatedAt,
];

export const signInParams = (e: SignInLogEntry, json: (v: unknown) => string) => [
  e.id, e.tenantId, e.userId, e.at, e.kind, e.clientId, e.deviceId, e.ip, e.sessionId, json(e.authMethods), e.riskLevel, e.riskScore,
  json(e.riskSignals), json(e.policyResults), e.decision, e.reason,
];

export const COMPLIANCE_COLUMNS = 'tenant_id, user_id, device_id, state, reasons, expires_at, partner, noncompliant_since, updated_at';
export const APP_STATE_COLUMNS = `tenant_id, user_id, device_id, policy_id, policy_etag, app_version, os_version, last_check_in_at,
  pin_failures, violations, selective_wipe, selective_wipe_reason, selective_wipe_requested_at, selective_wipe_acknowledged_at,
  updated_at`;
export const SIGN_IN_COLUMNS = `id, tenant_id, user_id, at, kind, client_id, device_id, ip, session_id, auth_methods, risk_level,
  risk_score,
  risk_signals, policy_results, decision, reason`;

/** How many columns a column list names (for its placeholders). */
export const columnCount = (columns: string) => columns.split(',').length;
const marks = (columns: string) => Array.from({ length: columnCount(columns) }, () => '?').join(', ');

/** `SET col = excluded.col` for every column but the key: an upsert that replaces the whole record. */
export const replaceAll = (columns: string, key: string[]) =>
  columns
    .split(',')
    .map((c) => c.trim())
    .filter((c) => !key.includes(c))
    .map((c) => `${c} = excluded.${c}`)
    .join(', ');

/**
 * The optional conditions of `signIns` that the filter names, each as (SQL with a placeholder made by `param`,
 * value): only those go into the statement, so each combination gets a plan of its own that uses its index.
 */
export function signInConditions(filter: SignInLogFilter, param: (value: unknown) => string): string[] {
  const where = [`tenant_id = ${param(filter.tenantId)}`];
  if (filter.userId !== undefined) where.push(`user_id = ${param(filter.userId)}`);
  if (filter.decision !== undefined) where.push(`decision = ${param(filter.decision)}`);
  if (filter.clientId !== undefined) where.push(`client_id = ${param(filter.clientId)}`);
  if (filter.deviceId !== undefined) where.push(`device_id = ${param(filter.deviceId)}`);
  if (filter.since !== undefined) where.push(`at >= ${param(filter.since)}`);
  const before = filter.before ?? NO_CURSOR;
  where.push(`(at, id) < (${param(before.at)}, ${param(before.id)})`);
  return where;
}

const sameKey = 'tenant_id = ? AND user_id = ? AND device_id = ?';

/**
 * Writes announce what the hot cache (store/cached.ts) and push's re-checks must hear: the tenant's document
 * (`tenantAccess`), a device's compliance or app standing (`device`), a user's risk (`user`), a session's newest
 * sign-in (`signIn`). PostgreSQL's change feed carries the same to other nodes.
 */
export function accessRepositories(sql: Sql, invalidate: Invalidate): Pick<StoreMethods, 'access'> {
  const json = (v: unknown) => JSON.stringify(v);
  return {
    access: {
      config(tenantId) {
        const r = sql('SELECT * FROM access_config WHERE tenant_id = ?').get(tenantId) as Row | undefined;
        return r && toAccessConfig(r);
      },
      putConfig(tenantId, doc, expectedVersion, now) {
        const r =
          expectedVersion === 0
            ? sql(
                `INSERT INTO access_config (tenant_id, version, doc, updated_at) VALUES (?, 1, ?, ?)
                 ON CONFLICT (tenant_id) DO NOTHING RETURNING *`,
              ).get(tenantId, doc, now)
            : sql(
                `UPDATE access_config SET version = version + 1, doc = ?, updated_at = ?
                 WHERE tenant_id = ? AND version = ? RETURNING *`,
              ).get(doc, now, tenantId, expectedVersion);
        if (r !== undefined) invalidate({ kind: 'tenantAccess', tenantId });
        return r === undefined ? undefined : toAccessConfig(r as Row);
      },

      compliance(tenantId, userId, deviceId) {
        const r = sql(`SELECT * FROM device_compliance WHERE ${sameKey}`).get(tenantId, userId, deviceId) as Row | undefined;
        return r && toCompliance(r, jsonText);
      },
      setCompliance(record) {
        sql(
          `INSERT INTO device_compliance (${COMPLIANCE_COLUMNS}) VALUES (${marks(COMPLIANCE_COLUMNS)})
           ON CONFLICT (tenant_id, user_id, device_id) DO UPDATE SET ${replaceAll(COMPLIANCE_COLUMNS, ['tenant_id', 'user_id', 'device_id'])}`,
        ).run(...complianceParams(record, json));
        invalidate({ kind: 'device', userId: record.userId, deviceId: record.deviceId });
      },

      appState(tenantId, userId, deviceId) {
        const r = sql(`SELECT * FROM app_protection_state WHERE ${sameKey}`).get(tenantId, userId, deviceId) as Row | undefined;
        return r && toAppState(r, jsonText);
      },
      putAppState(state) {
        sql(
          `INSERT INTO app_protection_state (${APP_STATE_COLUMNS}) VALUES (${marks(APP_STATE_COLUMNS)})
           ON CONFLICT (tenant_id, user_id, device_id) DO UPDATE SET ${replaceAll(APP_STATE_COLUMNS, ['tenant_id', 'user_id', 'device_id'])}`,
        ).run(...appStateParams(state, json));
        invalidate({ kind: 'device', userId: state.userId, deviceId: state.deviceId });
      },
      staleAppStates(tenantId, before, limit) {
        // The predicate repeats the partial index's, so the planner can use it.
        const found = sql(
          `SELECT * FROM app_protection_state
           WHERE tenant_id = ? AND selective_wipe = 'none' AND last_check_in_at < ?
           ORDER BY last_check_in_at, user_id, device_id LIMIT ?`,
        ).all(tenantId, before, limit) as Row[];
        return found.map((r) => toAppState(r, jsonText));
      },

      logSignIn(entry) {
        sql(`INSERT INTO sign_in_log (${SIGN_IN_COLUMNS}) VALUES (${marks(SIGN_IN_COLUMNS)})`).run(
          ...signInParams(entry, json),
        );
        if (entry.sessionId !== null) invalidate({ kind: 'signIn', familyId: entry.sessionId });
      },
      signIns(filter) {
        const values: unknown[] = [];
        const where = signInConditions(filter, (v) => (values.push(v), '?'));
        const found = sql(`SELECT * FROM sign_in_log WHERE ${where.join(' AND ')} ORDER BY at DESC, id DESC LIMIT ?`).all(
          ...values,
          filter.limit,
        ) as Row[];
        return found.map((r) => toSignIn(r, jsonText));
      },
      signInOfSession(sessionId) {
        const r = sql('SELECT * FROM sign_in_log WHERE session_id = ? ORDER BY at DESC, id DESC LIMIT 1').get(sessionId) as Row | undefined;
        return r && toSignIn(r, jsonText);
      },
      signInHistory(userId, since) {
        const history = { deviceIds: [] as string[], clientIds: [] as string[], ips: [] as string[] };
        for (const [column, field] of HISTORY_COLUMNS) {
          history[field] = sql(
            `SELECT ${column} FROM sign_in_log
             WHERE user_id = ? AND at >= ? AND decision = 'allow' AND ${column} IS NOT NULL
             GROUP BY ${column} ORDER BY max(at) DESC, ${column} LIMIT ${HISTORY_LIMIT}`,
          )
            .pluck()
            .all(userId, since) as string[];
        }
        return history;
      },
      failuresSince(userId, since) {
        return sql(`SELECT count(*) FROM sign_in_log WHERE user_id = ? AND at >= ? AND decision = 'failure'`).pluck().get(userId, since) as number;
      },

      userRisk(userId) {
        const r = sql('SELECT * FROM user_risk WHERE user_id = ?').get(userId) as Row | undefined;
        return r && toUserRisk(r);
      },
      setUserRisk(risk) {
        sql(
          `INSERT INTO user_risk (user_id, state, at, decided_by) VALUES (?, ?, ?, ?)
           ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, at = excluded.at, decided_by = excluded.decided_by`,
        ).run(risk.userId, risk.state, risk.at, risk.by);
        invalidate({ kind: 'user', userId: risk.userId });
      },

      purgeSignIns(before, limit) {
        return sql('DELETE FROM sign_in_log WHERE rowid IN (SELECT rowid FROM sign_in_log WHERE at < ? ORDER BY at LIMIT ?)').run(before, limit).changes;
      },
    },
  };
}
