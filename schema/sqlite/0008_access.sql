-- 0008: conditional access, device compliance, app protection and the sign-in log (server/access/).
-- (PostgreSQL: 0010_access.sql, the same change.) Times in ms.
--
-- access_config: a tenant's whole access configuration (policies, named locations, groups, approved client apps,
-- app protection policies) as one JSON document under a version. A change is a compare-and-set on the version, so
-- two admins editing at once cannot lose each other's change, and the evaluator compiles a document once per version.
--
-- device_compliance: what an MDM partner last said of one device of one user, kept even before the app registers
-- the device (so no reference to `devices`). `noncompliant_since` survives repeated noncompliant reports: the grace
-- period counts from the first one.
--
-- app_protection_state: an app installation's check-ins against its app protection policy and any selective wipe.
-- The offline sweep looks for installations that stopped checking in and have no wipe yet, per tenant.
--
-- sign_in_log: every sign-in, refused sign-in and failed password, with its risk and each policy's result. Read
-- newest first per tenant (paged by (at, id)), per user for risk's history and failure bursts, and by the session
-- a sign-in started. Append-only; old entries are purged in batches by age.
--
-- user_risk: an administrator's word on a user's risk (confirmed, dismissed), one per user.
--
-- No foreign keys: like `audit_log`, these rows name tenants, users and devices that exist when written, and a
-- record may outlive a device record (compliance before registration, the log after a device is removed).
CREATE TABLE access_config (
  tenant_id   TEXT PRIMARY KEY,
  version     INTEGER NOT NULL CHECK (version > 0),
  doc         TEXT NOT NULL,
  updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE device_compliance (
  tenant_id           TEXT NOT NULL,
  user_id             TEXT NOT NULL,
  device_id           TEXT NOT NULL,
  state               TEXT NOT NULL CHECK (state IN ('compliant', 'noncompliant', 'unknown')),
  reasons             TEXT NOT NULL DEFAULT '[]',  -- JSON array of strings
  expires_at          INTEGER,
  partner             TEXT NOT NULL,
  noncompliant_since  INTEGER,
  updated_at          INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, user_id, device_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE app_protection_state (
  tenant_id                       TEXT NOT NULL,
  user_id                         TEXT NOT NULL,
  device_id                       TEXT NOT NULL,
  policy_id                       TEXT,
  policy_etag                     TEXT,
  app_version                     TEXT,
  os_version                      TEXT,
  last_check_in_at                INTEGER,
  pin_failures                    INTEGER NOT NULL DEFAULT 0,
  violations                      TEXT NOT NULL DEFAULT '[]',  -- JSON array of strings
  selective_wipe                  TEXT NOT NULL DEFAULT 'none' CHECK (selective_wipe IN ('none', 'pending', 'acknowledged')),
  selective_wipe_reason           TEXT,
  selective_wipe_requested_at     INTEGER,
  selective_wipe_acknowledged_at  INTEGER,
  updated_at                      INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, user_id, device_id)
) STRICT, WITHOUT ROWID;
-- The offline sweep: a tenant's installations without a wipe, oldest check-in first.
CREATE INDEX app_protection_state_stale ON app_protection_state (tenant_id, last_check_in_at) WHERE selective_wipe = 'none';

CREATE TABLE sign_in_log (
  id              TEXT PRIMARY KEY,
  tenant_id       TEXT NOT NULL,
  user_id         TEXT NOT NULL,
  at              INTEGER NOT NULL,
  kind            TEXT NOT NULL CHECK (kind IN ('interactive', 'refresh', 'password', 'failure')),
  client_id       TEXT,
  device_id       TEXT,
  ip              TEXT,
  session_id      TEXT,
  auth_methods    TEXT NOT NULL DEFAULT '[]',  -- JSON array of OIDC amr values (pwd, otp, mfa, ...)
  risk_level      TEXT NOT NULL CHECK (risk_level IN ('none', 'low', 'medium', 'high')),
  risk_score      INTEGER NOT NULL,
  risk_signals    TEXT NOT NULL DEFAULT '[]',  -- JSON array of {signal, weight}
  policy_results  TEXT NOT NULL DEFAULT '[]',  -- JSON array of policy results
  decision        TEXT NOT NULL CHECK (decision IN ('allow', 'block', 'needs', 'failure')),
  reason          TEXT
) STRICT;
-- The admin's log, newest first, paged by (at, id).
CREATE INDEX sign_in_log_tenant ON sign_in_log (tenant_id, at, id);
-- One user's entries: the admin's log filtered by user, risk's history and the failed-password count.
CREATE INDEX sign_in_log_user ON sign_in_log (user_id, at, id);
-- The entry that started or renewed a session (the newest).
CREATE INDEX sign_in_log_session ON sign_in_log (session_id, at) WHERE session_id IS NOT NULL;
-- The purge of old entries, across tenants.
CREATE INDEX sign_in_log_at ON sign_in_log (at);

CREATE TABLE user_risk (
  user_id     TEXT PRIMARY KEY,
  state       TEXT NOT NULL CHECK (state IN ('confirmed', 'dismissed')),
  at          INTEGER NOT NULL,
  decided_by  TEXT NOT NULL
) STRICT;
