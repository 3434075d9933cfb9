-- 0010: conditional access, device compliance, app protection and the sign-in log (SQLite: 0008_access.sql, which
-- says what each table holds).
--
-- Keying (README.md): `access_config`, `device_compliance`, `app_protection_state` and `sign_in_log` are tenant data,
-- their primary keys start with `tenant_id`; `user_risk` is keyed by the user, like `user_mfa`. The sign-in log's
-- per-user reads (risk's history, the failed-password count) and its lookup by session name no tenant: secondary
-- indexes here, multi-shard reads on Citus, like `users.byId`.
--
-- The configuration document is TEXT, not JSONB: it is answered exactly as it was stored (JSONB would reorder its
-- keys and drop its spacing), and only the application reads inside it. The lists are JSONB, as elsewhere.
CREATE TABLE access_config (
  tenant_id   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  version     INTEGER NOT NULL CHECK (version > 0),
  doc         TEXT COLLATE "C" NOT NULL,
  updated_at  BIGINT NOT NULL
);

CREATE TABLE device_compliance (
  tenant_id           TEXT COLLATE "C" NOT NULL,
  user_id             TEXT COLLATE "C" NOT NULL,
  device_id           TEXT COLLATE "C" NOT NULL,
  state               TEXT COLLATE "C" NOT NULL CHECK (state IN ('compliant', 'noncompliant', 'unknown')),
  reasons             JSONB NOT NULL DEFAULT '[]',  -- array of strings
  expires_at          BIGINT,
  partner             TEXT COLLATE "C" NOT NULL,
  noncompliant_since  BIGINT,
  updated_at          BIGINT NOT NULL,
  PRIMARY KEY (tenant_id, user_id, device_id)
);

CREATE TABLE app_protection_state (
  tenant_id                       TEXT COLLATE "C" NOT NULL,
  user_id                         TEXT COLLATE "C" NOT NULL,
  device_id                       TEXT COLLATE "C" NOT NULL,
  policy_id                       TEXT COLLATE "C",
  policy_etag                     TEXT COLLATE "C",
  app_version                     TEXT COLLATE "C",
  os_version                      TEXT COLLATE "C",
  last_check_in_at                BIGINT,
  pin_failures                    INTEGER NOT NULL DEFAULT 0,
  violations                      JSONB NOT NULL DEFAULT '[]',  -- array of strings
  selective_wipe                  TEXT COLLATE "C" NOT NULL DEFAULT 'none'
                                  CHECK (selective_wipe IN ('none', 'pending', 'acknowledged')),
  selective_wipe_reason           TEXT COLLATE "C",
  selective_wipe_requested_at     BIGINT,
  selective_wipe_acknowledged_at  BIGINT,
  updated_at                      BIGINT NOT NULL,
  PRIMARY KEY (tenant_id, user_id, device_id)
);
-- The offline sweep: a tenant's installations without a wipe, oldest check-in first.
CREATE INDEX app_protection_state_stale ON app_protection_state (tenant_id, last_check_in_at) WHERE selective_wipe = 'none';

CREATE TABLE sign_in_log (
  tenant_id       TEXT COLLATE "C" NOT NULL,
  id              TEXT COLLATE "C" NOT NULL,
  user_id         TEXT COLLATE "C" NOT NULL,
  at              BIGINT NOT NULL,
  kind            TEXT COLLATE "C" NOT NULL CHECK (kind IN ('interactive', 'refresh', 'password', 'failure')),
  client_id       TEXT COLLATE "C",
  device_id       TEXT COLLATE "C",
  ip              TEXT COLLATE "C",
  session_id      TEXT COLLATE "C",
  auth_methods    JSONB NOT NULL DEFAULT '[]',  -- array of OIDC amr values (pwd, otp, mfa, ...)
  risk_level      TEXT COLLATE "C" NOT NULL CHECK (risk_level IN ('none', 'low', 'medium', 'high')),
  risk_score      INTEGER NOT NULL,
  risk_signals    JSONB NOT NULL DEFAULT '[]',  -- array of {signal, weight}
  policy_results  JSONB NOT NULL DEFAULT '[]',  -- array of policy results
  decision        TEXT COLLATE "C" NOT NULL CHECK (decision IN ('allow', 'block', 'needs', 'failure')),
  reason          TEXT COLLATE "C",
  PRIMARY KEY (tenant_id, id)
);
-- The admin's log, newest first, paged by (at, id).
CREATE INDEX sign_in_log_tenant ON sign_in_log (tenant_id, at, id);
-- One user's entries: the admin's log filtered by user, risk's history and the failed-password count.
CREATE INDEX sign_in_log_user ON sign_in_log (user_id, at, id);
-- The entry that started or renewed a session (the newest).
CREATE INDEX sign_in_log_session ON sign_in_log (session_id, at) WHERE session_id IS NOT NULL;
-- The purge of old entries, across tenants.
CREATE INDEX sign_in_log_at ON sign_in_log (at);

CREATE TABLE user_risk (
  user_id     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  state       TEXT COLLATE "C" NOT NULL CHECK (state IN ('confirmed', 'dismissed')),
  at          BIGINT NOT NULL,
  decided_by  TEXT COLLATE "C" NOT NULL
);
