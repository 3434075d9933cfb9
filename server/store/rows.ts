/**
 * Rows of the account and device tables as domain records, for both backends: their columns have the same names and types,
 * except that SQLite keeps JSON as text and PostgreSQL as JSONB (already parsed), which `json` settles.
 */
import {
  DEFAULT_VIEW_SETTINGS,
  type AccessState,
  type AuditEntry,
  type DeviceAccessRule,
  type DeviceInventoryRow,
  type DeviceRecord,
  type DeviceResetReason,
  type Item,
  type NewAttachment,
  type RefreshTokenRecord,
  type User,
  type ViewSettings,
  type WipeState,
} from './types';

type Row = Record<string, unknown>;
/** A JSON column's value as read: parsed text (SQLite) or the value itself (PostgreSQL's JSONB). */
export type JsonColumn = (value: unknown) => unknown;
export const jsonText: JsonColumn = (value) => JSON.parse(value as string);
export const jsonValue: JsonColumn = (value) => value;

const str = (v: unknown) => (v as string | null) ?? null;
const num = (v: unknown) => (v as number | null) ?? null;

/** The columns of a DeviceInventoryRow (`d`: devices, `u`: users), for both backends' `devices.inventoryRows`. */
export const INVENTORY_COLUMNS =
  'd.id, d.user_id, d.device_id, d.friendly_name, d.device_type, d.device_model, d.device_os, d.client_type, d.user_agent, ' +
  'd.admin_decision, d.wipe_state, d.first_sync_time, d.last_success_sync_time, u.username';

export function toInventoryRow(r: Row): DeviceInventoryRow {
  return {
    id: r.id as string,
    userId: r.user_id as string,
    deviceId: r.device_id as string,
    friendlyName: str(r.friendly_name),
    deviceType: str(r.device_type),
    deviceModel: str(r.device_model),
    deviceOS: str(r.device_os),
    clientType: str(r.client_type),
    userAgent: str(r.user_agent),
    adminDecision: str(r.admin_decision) as AccessState | null,
    wipeState: r.wipe_state as WipeState,
    firstSyncTime: r.first_sync_time as number,
    lastSuccessSyncTime: num(r.last_success_sync_time),
    username: r.username as string,
  };
}

export function toDevice(r: Row, json: JsonColumn): DeviceRecord {
  return {
    id: r.id as string,
    userId: r.user_id as string,
    deviceId: r.device_id as string,
    friendlyName: str(r.friendly_name),
    deviceType: str(r.device_type),
    deviceModel: str(r.device_model),
    deviceOS: str(r.device_os),
    clientType: str(r.client_type),
    clientVersion: str(r.client_version),
    userAgent: str(r.user_agent),
    capabilities: json(r.capabilities) as string[],
    adminDecision: str(r.admin_decision) as AccessState | null,
    wipeState: r.wipe_state as WipeState,
    wipeRequestedAt: num(r.wipe_requested_at),
    wipeRequestedBy: str(r.wipe_requested_by),
    wipeAcknowledgedAt: num(r.wipe_acknowledged_at),
    epoch: r.epoch as number,
    resetReason: str(r.reset_reason) as DeviceResetReason | null,
    viewSettings: readViewSettings(r.view_settings, json),
    firstSyncTime: r.first_sync_time as number,
    lastSyncAttemptTime: num(r.last_sync_attempt_time),
    lastSuccessSyncTime: num(r.last_success_sync_time),
    createdAt: r.created_at as number,
    updatedAt: r.updated_at as number,
  };
}

/**
 * A device's stored view settings, read leniently: a member that is missing or not a boolean (a row written before
 * the member existed, or damaged) reads as its default, and so does a column that is no JSON object at all.
 */
export function readViewSettings(value: unknown, json: JsonColumn): ViewSettings {
  let stored: unknown;
  try {
    stored = value === null || value === undefined ? undefined : json(value);
  } catch {
    stored = undefined; // not JSON: every member its default
  }
  const members = typeof stored === 'object' && stored !== null && !Array.isArray(stored) ? (stored as Record<string, unknown>) : {};
  const flag = (name: keyof ViewSettings) => (typeof members[name] === 'boolean' ? (members[name] as boolean) : DEFAULT_VIEW_SETTINGS[name]);
  return { focusedInbox: flag('focusedInbox'), threaded: flag('threaded') };
}

export function toRule(r: Row): DeviceAccessRule {
  return {
    id: r.id as string,
    tenantId: r.tenant_id as string,
    field: r.field as DeviceAccessRule['field'],
    match: r.match as DeviceAccessRule['match'],
    value: r.value as string,
    accessState: r.access_state as AccessState,
    description: r.description as string,
    createdAt: r.created_at as number,
    updatedAt: r.updated_at as number,
  };
}

export function toAudit(r: Row, json: JsonColumn): AuditEntry {
  return {
    seq: r.seq as number,
    tenantId: r.tenant_id as string,
    at: r.at as number,
    actorId: str(r.actor_id),
    actorName: r.actor_name as string,
    action: r.action as string,
    targetType: r.target_type as string,
    targetId: str(r.target_id),
    details: json(r.details) as Record<string, unknown>,
  };
}

/** A user row; `disabled` is 0/1 in SQLite and a boolean in PostgreSQL. */
export const toUser = (r: Row): User => ({
  id: r.id as string,
  tenantId: r.tenant_id as string,
  username: r.username as string,
  email: r.email as string,
  displayName: r.display_name as string,
  role: r.role as User['role'],
  passwordHash: (r.password_hash as string | null) ?? null,
  sessionVersion: r.session_version as number,
  disabled: r.disabled === true || r.disabled === 1,
  createdAt: r.created_at as number,
  updatedAt: r.updated_at as number,
});

export const toRefresh = (r: Row): RefreshTokenRecord => ({
  id: r.id as string,
  familyId: r.family_id as string,
  userId: r.user_id as string,
  deviceId: (r.device_id as string | null) ?? null,
  clientId: r.client_id as string,
  scope: r.scope as string,
  tokenHash: r.token_hash as Buffer,
  createdAt: r.created_at as number,
  expiresAt: r.expires_at as number,
  rotatedAt: (r.rotated_at as number | null) ?? null,
  replacedBy: (r.replaced_by as string | null) ?? null,
  revokedAt: (r.revoked_at as number | null) ?? null,
  revokedReason: (r.revoked_reason as string | null) ?? null,
});

/** What sync shows of attachments (`attachments_json`), numbered in order: `att1`, `att2`, … (both backends). */
export function attachmentSummaries(attachments: NewAttachment[]): Item['attachments'] {
  return attachments.map((a, i) => ({
    id: `att${i + 1}`,
    name: a.name,
    contentType: a.contentType,
    size: a.content.length,
    isInline: a.isInline,
    contentId: a.contentId,
  }));
}
