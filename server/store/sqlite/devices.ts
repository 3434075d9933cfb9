/**
 * Devices, device access rules, tenant settings and the audit log: the SQLite half of protocol.md §3.
 */
import type { Statement } from 'better-sqlite3';
import { newId } from '../../ids';
import {
  DEFAULT_VIEW_SETTINGS,
  type AccessState,
  type Invalidation,
  type AuditEntry,
  type DeviceAccessRule,
  type DeviceDescription,
  type DeviceRecord,
  type StoreMethods,
  type ViewSettings,
  type WipeState,
} from '../types';
import { INVENTORY_COLUMNS, toAudit, toDevice, toInventoryRow, toRule, jsonText } from '../rows';
import { SQLITE_INVENTORY, inventoryCountSql, inventoryPageSql } from '../inventory';

type Row = Record<string, unknown>;
export type Sql = (text: string) => Statement;
/** Told of every write to a record the hot cache keeps; the store announces it once the transaction commits. */
export type Invalidate = (change: Invalidation) => void;

const descriptionParams = (d: DeviceDescription) => [
  d.friendlyName,
  d.deviceType,
  d.deviceModel,
  d.deviceOS,
  d.clientType,
  d.clientVersion,
  d.userAgent,
  JSON.stringify(d.capabilities),
];

const toDeviceRow = (r: Row): DeviceRecord => toDevice(r, jsonText);

/** The stored view setting `name` as rows.ts `readViewSettings` reads it (its default unless a boolean), as 1 or 0. */
const storedFlag = (name: keyof ViewSettings) =>
  `CASE WHEN NOT json_valid(view_settings) THEN ${+DEFAULT_VIEW_SETTINGS[name]}
     WHEN json_type(view_settings, '$.${name}') = 'true' THEN 1
     WHEN json_type(view_settings, '$.${name}') = 'false' THEN 0
     ELSE ${+DEFAULT_VIEW_SETTINGS[name]} END`;
/** Whether the settings being written (@focusedInbox, @threaded) differ from the stored ones as they read. */
const VIEW_CHANGED = `(${storedFlag('focusedInbox')} <> @focusedInbox OR ${storedFlag('threaded')} <> @threaded)`;
const toAuditRow = (r: Row): AuditEntry => toAudit(r, jsonText);

export function deviceRepositories(sql: Sql, invalidate: Invalidate): Pick<StoreMethods, 'devices' | 'deviceAccess' | 'audit'> {
  /** Runs a write by record id that answers `RETURNING user_id, device_id`, and reports the device it changed. */
  const deviceWrite = (text: string, ...params: unknown[]) => {
    for (const r of sql(text).all(...params) as { user_id: string; device_id: string }[]) {
      invalidate({ kind: 'device', userId: r.user_id, deviceId: r.device_id });
    }
  };
  const tenantWrite = (tenantId: string) => invalidate({ kind: 'tenantAccess', tenantId });

  const devices: StoreMethods['devices'] = {
    byId(id) {
      const r = sql('SELECT * FROM devices WHERE id = ?').get(id) as Row | undefined;
      return r && toDeviceRow(r);
    },
    byUserAndDeviceId(userId, deviceId) {
      const r = sql('SELECT * FROM devices WHERE user_id = ? AND device_id = ?').get(userId, deviceId) as Row | undefined;
      return r && toDeviceRow(r);
    },
    listByUser(userId) {
      return (sql('SELECT * FROM devices WHERE user_id = ? ORDER BY first_sync_time, id').all(userId) as Row[]).map(toDeviceRow);
    },
    countByUser(userId) {
      return (sql('SELECT count(*) AS n FROM devices WHERE user_id = ?').get(userId) as { n: number }).n;
    },
    list(filter) {
      const rows = sql(
        `SELECT d.*, u.username FROM devices d JOIN users u ON u.id = d.user_id
         WHERE u.tenant_id = @tenantId
           AND (@userId IS NULL OR d.user_id = @userId)
           AND (@clientType IS NULL OR d.client_type = @clientType)
           AND (@deviceModel IS NULL OR d.device_model = @deviceModel)
         ORDER BY u.username, d.first_sync_time, d.id`,
      ).all({
        tenantId: filter.tenantId,
        userId: filter.userId ?? null,
        clientType: filter.clientType ?? null,
        deviceModel: filter.deviceModel ?? null,
      }) as Row[];
      return rows.map((r) => ({ ...toDeviceRow(r), username: r.username as string }));
    },
    inventoryRows(filter) {
      const rows = sql(
        `SELECT ${INVENTORY_COLUMNS} FROM devices d JOIN users u ON u.id = d.user_id
         WHERE u.tenant_id = @tenantId
           AND (@userId IS NULL OR d.user_id = @userId)
           AND (@clientType IS NULL OR d.client_type = @clientType)
           AND (@deviceModel IS NULL OR d.device_model = @deviceModel)`,
      ).all({
        tenantId: filter.tenantId,
        userId: filter.userId ?? null,
        clientType: filter.clientType ?? null,
        deviceModel: filter.deviceModel ?? null,
      }) as Row[];
      return rows.map(toInventoryRow);
    },
    inventoryPage(filter, sort, after, limit) {
      const q = inventoryPageSql(SQLITE_INVENTORY, INVENTORY_COLUMNS, filter, sort, after, limit);
      return (sql(q.text).all(...q.params) as Row[]).map(toInventoryRow);
    },
    inventoryCount(filter) {
      const q = inventoryCountSql(SQLITE_INVENTORY, filter);
      return (sql(q.text).get(...q.params) as { n: number }).n;
    },
    create(userId, deviceId, d, now) {
      const id = newId();
      // The owner's tenant, copied for the inventory's indexes (schema/sqlite/0018_device_tenant.sql); a user's
      // tenant never changes. No user: NULL, refused like the missing user itself.
      sql(
        `INSERT INTO devices (id, user_id, device_id, friendly_name, device_type, device_model, device_os, client_type,
           client_version, user_agent, capabilities, first_sync_time, last_sync_attempt_time, created_at, updated_at,
           tenant_id)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT tenant_id FROM users WHERE id = ?))`,
      ).run(id, userId, deviceId, ...descriptionParams(d), now, now, now, now, userId);
      invalidate({ kind: 'device', userId, deviceId });
      return devices.byId(id)!;
    },
    updateDescription(id, d, now) {
      deviceWrite(
        `UPDATE devices SET friendly_name = ?, device_type = ?, device_model = ?, device_os = ?, client_type = ?,
           client_version = ?, user_agent = ?, capabilities = ?, updated_at = ? WHERE id = ? RETURNING user_id, device_id`,
        ...descriptionParams(d), now, id,
      );
    },
    setAdminDecision(id, decision, now) {
      deviceWrite('UPDATE devices SET admin_decision = ?, updated_at = ? WHERE id = ? RETURNING user_id, device_id', decision, now, id);
    },
    setWipe(id, state, f, now) {
      deviceWrite(
        `UPDATE devices SET wipe_state = ?,
           wipe_requested_at = coalesce(?, wipe_requested_at), wipe_requested_by = coalesce(?, wipe_requested_by),
           wipe_acknowledged_at = coalesce(?, wipe_acknowledged_at), updated_at = ? WHERE id = ? RETURNING user_id, device_id`,
        state, f.requestedAt ?? null, f.requestedBy ?? null, f.acknowledgedAt ?? null, now, id,
      );
    },
    bumpEpoch(id, now) {
      deviceWrite('UPDATE devices SET epoch = epoch + 1, reset_reason = NULL, updated_at = ? WHERE id = ? RETURNING user_id, device_id', now, id);
    },
    setViewSettings(id, settings, now) {
      // One statement: the comparison with the stored settings and the soft reset it may cause cannot be split by
      // another writer. Every SET expression reads the row as it was before the update.
      const r = sql(
        `UPDATE devices SET
           epoch = epoch + CASE WHEN ${VIEW_CHANGED} THEN 1 ELSE 0 END,
           reset_reason = CASE WHEN ${VIEW_CHANGED} THEN 'viewChanged' ELSE reset_reason END,
           updated_at = CASE WHEN ${VIEW_CHANGED} THEN @now ELSE updated_at END,
           view_settings = @settings
         WHERE id = @id RETURNING *`,
      ).get({
        id,
        now,
        focusedInbox: settings.focusedInbox ? 1 : 0,
        threaded: settings.threaded ? 1 : 0,
        settings: JSON.stringify({ focusedInbox: settings.focusedInbox, threaded: settings.threaded }),
      }) as Row | undefined;
      if (!r) return undefined;
      invalidate({ kind: 'device', userId: r.user_id as string, deviceId: r.device_id as string });
      return toDeviceRow(r);
    },
    // Last-seen times are not part of any access decision, but the record the gate hands on is shown (views), so it
    // is reported like every other write: the cache stays equal to the row. It costs one re-read per device per flush.
    touch(id, attemptAt, successAt) {
      deviceWrite(
        `UPDATE devices SET last_sync_attempt_time = ?, last_success_sync_time = coalesce(?, last_success_sync_time)
         WHERE id = ? RETURNING user_id, device_id`,
        attemptAt, successAt, id,
      );
    },
    delete(id) {
      deviceWrite('DELETE FROM devices WHERE id = ? RETURNING user_id, device_id', id);
    },
    inactiveSince(cutoff) {
      return (
        sql(
          `SELECT * FROM devices WHERE coalesce(last_sync_attempt_time, first_sync_time) < ? AND wipe_state <> 'pending'`,
        ).all(cutoff) as Row[]
      ).map(toDeviceRow);
    },
  };

  const deviceAccess: StoreMethods['deviceAccess'] = {
    rules(tenantId) {
      return (sql('SELECT * FROM device_access_rules WHERE tenant_id = ? ORDER BY created_at, id').all(tenantId) as Row[]).map(toRule);
    },
    rule(tenantId, id) {
      const r = sql('SELECT * FROM device_access_rules WHERE tenant_id = ? AND id = ?').get(tenantId, id) as Row | undefined;
      return r && toRule(r);
    },
    createRule(tenantId, input, now) {
      const id = newId();
      sql(
        `INSERT INTO device_access_rules (id, tenant_id, field, match, value, access_state, description, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(id, tenantId, input.field, input.match, input.value, input.accessState, input.description, now, now);
      tenantWrite(tenantId);
      return deviceAccess.rule(tenantId, id)!;
    },
    updateRule(tenantId, id, input, now) {
      const res = sql(
        `UPDATE device_access_rules SET field = ?, match = ?, value = ?, access_state = ?, description = ?, updated_at = ?
         WHERE tenant_id = ? AND id = ?`,
      ).run(input.field, input.match, input.value, input.accessState, input.description, now, tenantId, id);
      if (!res.changes) return undefined;
      tenantWrite(tenantId);
      return deviceAccess.rule(tenantId, id);
    },
    deleteRule(tenantId, id) {
      const deleted = sql('DELETE FROM device_access_rules WHERE tenant_id = ? AND id = ?').run(tenantId, id).changes === 1;
      if (deleted) tenantWrite(tenantId);
      return deleted;
    },
    defaultState(tenantId) {
      const r = sql('SELECT default_device_access_state AS s FROM tenant_settings WHERE tenant_id = ?').get(tenantId) as
        | { s: AccessState }
        | undefined;
      return r?.s ?? 'allowed';
    },
    setDefaultState(tenantId, state, now) {
      sql(
        `INSERT INTO tenant_settings (tenant_id, default_device_access_state, updated_at) VALUES (?, ?, ?)
         ON CONFLICT (tenant_id) DO UPDATE SET default_device_access_state = excluded.default_device_access_state,
           updated_at = excluded.updated_at`,
      ).run(tenantId, state, now);
      tenantWrite(tenantId);
    },
  };

  const audit: StoreMethods['audit'] = {
    append(e) {
      const r = sql(
        `INSERT INTO audit_log (tenant_id, at, actor_id, actor_name, action, target_type, target_id, details)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *`,
      ).get(e.tenantId, e.at, e.actorId, e.actorName, e.action, e.targetType, e.targetId, JSON.stringify(e.details)) as Row;
      return toAuditRow(r);
    },
    list(tenantId, { limit, beforeSeq }) {
      return (
        sql('SELECT * FROM audit_log WHERE tenant_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?').all(
          tenantId,
          beforeSeq ?? Number.MAX_SAFE_INTEGER,
          limit,
        ) as Row[]
      ).map(toAuditRow);
    },
  };

  return { devices, deviceAccess, audit };
}
