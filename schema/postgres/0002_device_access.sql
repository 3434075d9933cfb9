-- 0002: device access rules, the organisation default, and the admin audit log (protocol.md §3). Tenant data.

-- Rules match one descriptive field of a device, exactly or by prefix. When several match, an exact match beats a
-- prefix match, and among equals the most restrictive state wins (blocked > quarantined > allowed).
CREATE TABLE device_access_rules (
  tenant_id    TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  id           TEXT COLLATE "C" NOT NULL,
  field        TEXT COLLATE "C" NOT NULL CHECK (field IN ('deviceType', 'deviceModel', 'deviceOS', 'userAgent', 'clientType')),
  match        TEXT COLLATE "C" NOT NULL CHECK (match IN ('exact', 'prefix')),
  value        TEXT COLLATE "C" NOT NULL,
  access_state TEXT COLLATE "C" NOT NULL CHECK (access_state IN ('allowed', 'blocked', 'quarantined')),
  description  TEXT COLLATE "C" NOT NULL DEFAULT '',
  created_at   BIGINT NOT NULL,
  updated_at   BIGINT NOT NULL,
  PRIMARY KEY (tenant_id, id)
);

CREATE TABLE tenant_settings (
  tenant_id                   TEXT COLLATE "C" PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
  default_device_access_state TEXT COLLATE "C" NOT NULL DEFAULT 'allowed'
                              CHECK (default_device_access_state IN ('allowed', 'blocked', 'quarantined')),
  updated_at                  BIGINT NOT NULL
);

-- Every admin action: who, what, when, on which device (or rule, or user). Append-only. `seq` comes from one sequence
-- for all tenants (as SQLite's AUTOINCREMENT): increasing, not gapless.
CREATE TABLE audit_log (
  tenant_id    TEXT COLLATE "C" NOT NULL,
  seq          BIGINT GENERATED ALWAYS AS IDENTITY,
  at           BIGINT NOT NULL,
  actor_id     TEXT COLLATE "C",        -- the admin user; NULL for the server itself (e.g. the inactivity purge)
  actor_name   TEXT COLLATE "C" NOT NULL,
  action       TEXT COLLATE "C" NOT NULL,
  target_type  TEXT COLLATE "C" NOT NULL,
  target_id    TEXT COLLATE "C",
  details      JSONB NOT NULL DEFAULT '{}',
  PRIMARY KEY (tenant_id, seq)
);

-- The inactivity purge looks devices up by last activity.
CREATE INDEX devices_last_seen ON devices (last_sync_attempt_time);
