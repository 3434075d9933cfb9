/**
 * Devices, device access rules, tenant settings and the audit log in PostgreSQL (the SQLite store's devices.ts is
 * the specification).
 */
import { newId } from '../../ids';
import {
  DEFAULT_VIEW_SETTINGS,
  type AccessState,
  type AuditEntry,
  type DeviceAccessRule,
  type DeviceDescription,
  type DeviceRecord,
  type TxStore,
  type ViewSettings,
  type WipeState,
} from '../types';
import { INVENTORY_COLUMNS, toAudit, toDevice, toInventoryRow, toRule, jsonValue } from '../rows';
import { POSTGRES_INVENTORY, inventoryCountSql, inventoryPageSql, numbered } from '../inventory';
import { json, limitParam, readLock, rows, rowCount, type Row, type Tx } from './tx';

const descriptionParams = (d: DeviceDescription) => [
  d.friendlyName,
  d.deviceType,
  d.deviceModel,
  d.deviceOS,
  d.clientType,
  d.clientVersion,
  d.userAgent,
  json(d.capabilities),
];

const toDeviceRow = (r: Row): DeviceRecord => toDevice(r, jsonValue);
const toAuditRow = (r: Row): AuditEntry => toAudit(r, jsonValue);

/** The stored view setting `name` as rows.ts `readViewSettings` reads it: its default unless a boolean. */
const storedFlag = (name: keyof ViewSettings) =>
  `CASE WHEN jsonb_typeof(view_settings -> '${name}') = 'boolean' THEN (view_settings ->> '${name}')::boolean
     ELSE ${DEFAULT_VIEW_SETTINGS[name]} END`;
/** Whether the settings being written ($2 focusedInbox, $3 threaded) differ from the stored ones as they read. */
const VIEW_CHANGED = `(${storedFlag('focusedInbox')} IS DISTINCT FROM $2::boolean OR ${storedFlag('threaded')} IS DISTINCT FROM $3::boolean)`;

export function deviceSteps(tx: Tx): Pick<TxStore, 'devices' | 'deviceAccess' | 'audit'> {
  /** Runs a write by record id that answers `RETURNING user_id, device_id`, and reports the device it changed. */
  const deviceWrite = function* (text: string, values: unknown[]) {
    for (const r of yield* rows<{ user_id: string; device_id: string }>(tx, text, values)) {
      tx.invalidate({ kind: 'device', userId: r.user_id, deviceId: r.device_id });
    }
  };
  const tenantWrite = (tenantId: string) => tx.invalidate({ kind: 'tenantAccess', tenantId });

  const devices: TxStore['devices'] = {
    *byId(id) {
      // In a unit of work the record is locked until commit: the unit decides on its state (a wipe pending, say)
      // and then writes, as it would alone on SQLite.
      const [r] = yield* rows(tx, tx.unit ? 'SELECT * FROM devices WHERE id = $1 FOR NO KEY UPDATE' : 'SELECT * FROM devices WHERE id = $1', [id]);
      return r && toDeviceRow(r);
    },
    *byUserAndDeviceId(userId, deviceId) {
      yield* readLock(tx, userId);
      const [r] = yield* rows(tx, 'SELECT * FROM devices WHERE user_id = $1 AND device_id = $2', [userId, deviceId]);
      return r && toDeviceRow(r);
    },
    *listByUser(userId) {
      yield* readLock(tx, userId);
      return (yield* rows(tx, 'SELECT * FROM devices WHERE user_id = $1 ORDER BY first_sync_time, id', [userId])).map(toDeviceRow);
    },
    *countByUser(userId) {
      yield* readLock(tx, userId);
      const [r] = yield* rows<{ n: number }>(tx, 'SELECT count(*) AS n FROM devices WHERE user_id = $1', [userId]);
      return r!.n;
    },
    *list(filter) {
      const found = yield* rows(
        tx,
        `SELECT d.*, u.username FROM devices d JOIN users u ON u.id = d.user_id
         WHERE u.tenant_id = $1
           AND ($2::text IS NULL OR d.user_id = $2)
           AND ($3::text IS NULL OR d.client_type = $3)
           AND ($4::text IS NULL OR d.device_model = $4)
         ORDER BY nocase(u.username), d.first_sync_time, d.id`,
        [filter.tenantId, filter.userId ?? null, filter.clientType ?? null, filter.deviceModel ?? null],
      );
      return found.map((r) => ({ ...toDeviceRow(r), username: r.username as string }));
    },
    *inventoryRows(filter) {
      const found = yield* rows(
        tx,
        `SELECT ${INVENTORY_COLUMNS} FROM devices d JOIN users u ON u.id = d.user_id
         WHERE u.tenant_id = $1
           AND ($2::text IS NULL OR d.user_id = $2)
           AND ($3::text IS NULL OR d.client_type = $3)
           AND ($4::text IS NULL OR d.device_model = $4)`,
        [filter.tenantId, filter.userId ?? null, filter.clientType ?? null, filter.deviceModel ?? null],
      );
      return found.map(toInventoryRow);
    },
    *inventoryPage(filter, sort, after, limit) {
      const q = inventoryPageSql(POSTGRES_INVENTORY, INVENTORY_COLUMNS, filter, sort, after, limit);
      return (yield* rows(tx, numbered(q.text), q.params)).map(toInventoryRow);
    },
    *inventoryCount(filter) {
      const q = inventoryCountSql(POSTGRES_INVENTORY, filter);
      const [r] = yield* rows<{ n: string | number }>(tx, numbered(q.text), q.params);
      return Number(r!.n);
    },
    *create(userId, deviceId, d, now) {
      // The owner's tenant, copied for the inventory's indexes (schema/postgres/0020_device_tenant.sql); a user's
      // tenant never changes. Read by a statement of its own, not a subquery of the insert, so that the insert
      // stays a statement on one user's rows (schema/postgres/README.md, data locality). No user: NULL, refused.
      const [owner] = yield* rows<{ tenant_id: string }>(tx, 'SELECT tenant_id FROM users WHERE id = $1', [userId]);
      const [r] = yield* rows(
        tx,
        `INSERT INTO devices (user_id, id, device_id, friendly_name, device_type, device_model, device_os, client_type,
           client_version, user_agent, capabilities, first_sync_time, last_sync_attempt_time, created_at, updated_at,
           tenant_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $12, $12, $13) RETURNING *`,
        [userId, newId(), deviceId, ...descriptionParams(d), now, owner?.tenant_id ?? null],
      );
      tx.invalidate({ kind: 'device', userId, deviceId });
      return toDeviceRow(r!);
    },
    *updateDescription(id, d, now) {
      yield* deviceWrite(
        `UPDATE devices SET friendly_name = $1, device_type = $2, device_model = $3, device_os = $4, client_type = $5,
           client_version = $6, user_agent = $7, capabilities = $8, updated_at = $9 WHERE id = $10 RETURNING user_id, device_id`,
        [...descriptionParams(d), now, id],
      );
    },
    *setAdminDecision(id, decision, now) {
      yield* deviceWrite('UPDATE devices SET admin_decision = $1, updated_at = $2 WHERE id = $3 RETURNING user_id, device_id', [decision, now, id]);
    },
    *setWipe(id, state, f, now) {
      yield* deviceWrite(
        `UPDATE devices SET wipe_state = $1,
           wipe_requested_at = coalesce($2, wipe_requested_at), wipe_requested_by = coalesce($3, wipe_requested_by),
           wipe_acknowledged_at = coalesce($4, wipe_acknowledged_at), updated_at = $5 WHERE id = $6 RETURNING user_id, device_id`,
        [state, f.requestedAt ?? null, f.requestedBy ?? null, f.acknowledgedAt ?? null, now, id],
      );
    },
    *bumpEpoch(id, now) {
      yield* deviceWrite('UPDATE devices SET epoch = epoch + 1, reset_reason = NULL, updated_at = $1 WHERE id = $2 RETURNING user_id, device_id', [now, id]);
    },
    *setViewSettings(id, settings, now) {
      // One statement, as SQLite's: the row is locked by the update, and every SET expression reads it as it was.
      const [r] = yield* rows(
        tx,
        `UPDATE devices SET
           epoch = epoch + CASE WHEN ${VIEW_CHANGED} THEN 1 ELSE 0 END,
           reset_reason = CASE WHEN ${VIEW_CHANGED} THEN 'viewChanged' ELSE reset_reason END,
           updated_at = CASE WHEN ${VIEW_CHANGED} THEN $4::bigint ELSE updated_at END,
           view_settings = $5::jsonb
         WHERE id = $1 RETURNING *`,
        [id, settings.focusedInbox, settings.threaded, now, json({ focusedInbox: settings.focusedInbox, threaded: settings.threaded })],
      );
      if (!r) return undefined;
      tx.invalidate({ kind: 'device', userId: r.user_id as string, deviceId: r.device_id as string });
      return toDeviceRow(r);
    },
    // Last-seen times are not part of any access decision, but the record the gate hands on is shown (views), so it
    // is reported like every other write: the cache stays equal to the row.
    *touch(id, attemptAt, successAt) {
      yield* deviceWrite(
        `UPDATE devices SET last_sync_attempt_time = $1, last_success_sync_time = coalesce($2, last_success_sync_time)
         WHERE id = $3 RETURNING user_id, device_id`,
        [attemptAt, successAt, id],
      );
    },
    *delete(id) {
      yield* deviceWrite('DELETE FROM devices WHERE id = $1 RETURNING user_id, device_id', [id]);
    },
    *inactiveSince(cutoff) {
      return (
        yield* rows(tx, `SELECT * FROM devices WHERE coalesce(last_sync_attempt_time, first_sync_time) < $1 AND wipe_state <> 'pending'`, [cutoff])
      ).map(toDeviceRow);
    },
  };

  const deviceAccess: TxStore['deviceAccess'] = {
    *rules(tenantId) {
      return (yield* rows(tx, 'SELECT * FROM device_access_rules WHERE tenant_id = $1 ORDER BY created_at, id', [tenantId])).map(toRule);
    },
    *rule(tenantId, id) {
      const [r] = yield* rows(tx, 'SELECT * FROM device_access_rules WHERE tenant_id = $1 AND id = $2', [tenantId, id]);
      return r && toRule(r);
    },
    *createRule(tenantId, input, now) {
      const [r] = yield* rows(
        tx,
        `INSERT INTO device_access_rules (tenant_id, id, field, match, value, access_state, description, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING *`,
        [tenantId, newId(), input.field, input.match, input.value, input.accessState, input.description, now],
      );
      tenantWrite(tenantId);
      return toRule(r!);
    },
    *updateRule(tenantId, id, input, now) {
      const [r] = yield* rows(
        tx,
        `UPDATE device_access_rules SET field = $1, match = $2, value = $3, access_state = $4, description = $5, updated_at = $6
         WHERE tenant_id = $7 AND id = $8 RETURNING *`,
        [input.field, input.match, input.value, input.accessState, input.description, now, tenantId, id],
      );
      if (!r) return undefined;
      tenantWrite(tenantId);
      return toRule(r);
    },
    *deleteRule(tenantId, id) {
      const deleted = (yield* rowCount(tx, 'DELETE FROM device_access_rules WHERE tenant_id = $1 AND id = $2', [tenantId, id])) === 1;
      if (deleted) tenantWrite(tenantId);
      return deleted;
    },
    *defaultState(tenantId) {
      const [r] = yield* rows<{ s: AccessState }>(tx, 'SELECT default_device_access_state AS s FROM tenant_settings WHERE tenant_id = $1', [tenantId]);
      return r?.s ?? 'allowed';
    },
    *setDefaultState(tenantId, state, now) {
      yield* rows(
        tx,
        `INSERT INTO tenant_settings (tenant_id, default_device_access_state, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id) DO UPDATE SET default_device_access_state = excluded.default_device_access_state,
           updated_at = excluded.updated_at`,
        [tenantId, state, now],
      );
      tenantWrite(tenantId);
    },
  };

  const audit: TxStore['audit'] = {
    *append(e) {
      const [r] = yield* rows(
        tx,
        `INSERT INTO audit_log (tenant_id, at, actor_id, actor_name, action, target_type, target_id, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *`,
        [e.tenantId, e.at, e.actorId, e.actorName, e.action, e.targetType, e.targetId, json(e.details)],
      );
      return toAuditRow(r!);
    },
    *list(tenantId, { limit, beforeSeq }) {
      return (
        yield* rows(tx, 'SELECT * FROM audit_log WHERE tenant_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3', [
          tenantId,
          beforeSeq ?? Number.MAX_SAFE_INTEGER,
          limitParam(limit),
        ])
      ).map(toAuditRow);
    },
  };

  return { devices, deviceAccess, audit };
}
