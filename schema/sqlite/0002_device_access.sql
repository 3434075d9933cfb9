-- 0002: device access rules, the organisation default, and the admin audit log (protocol.md §3).

-- Rules match one descriptive field of a device, exactly or by prefix. When several match, an exact match beats a
-- prefix match, and among equals the most restrictive state wins (blocked > quarantined > allowed).
CREATE TABLE device_access_rules (
  id           TEXT PRIMARY KEY,
  tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  field        TEXT NOT NULL CHECK (field IN ('deviceType', 'deviceModel', 'deviceOS', 'userAgent', 'clientType')),
  match        TEXT NOT NULL CHECK (match IN ('exact', 'prefix')),
  value        TEXT NOT NULL,
  access_state TEXT NOT NULL CHECK (access_state IN ('allowed', 'blocked', 'quarantined')),
  description  TEXT NOT NULL DEFAULT '',
  created_at   INTEGER NOT NULL,
  updated_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX device_access_rules_tenant ON device_access_rules (tenant_id);

CREATE TABLE tenant_settings (
  tenant_id                   TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
  default_device_access_state TEXT NOT NULL DEFAULT 'allowed'
                              CHECK (default_device_access_state IN ('allowed', 'blocked', 'quarantined')),
  updated_at                  INTEGER NOT NULL
) STRICT;

-- Every admin action: who, what, when, on which device (or rule, or user). Append-only.
CREATE TABLE audit_log (
  seq          INTEGER PRIMARY KEY AUTOINCREMENT,
  tenant_id    TEXT NOT NULL,
  at           INTEGER NOT NULL,
  actor_id     TEXT,            -- the admin user; NULL for the server itself (e.g. the inactivity purge)
  actor_name   TEXT NOT NULL,
  action       TEXT NOT NULL,
  target_type  TEXT NOT NULL,
  target_id    TEXT,
  details      TEXT NOT NULL DEFAULT '{}'
) STRICT;
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, seq);

-- The inactivity purge looks devices up by last activity.
CREATE INDEX devices_last_seen ON devices (last_sync_attempt_time);
