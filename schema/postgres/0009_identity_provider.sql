-- 0009: the built-in identity provider's records and TOTP multi-factor (SQLite: 0007_identity_provider.sql, which
-- says what each holds). `identity_records` is a global table: its records (browser sessions, interactions, codes)
-- exist before anyone has signed in, so they name no mailbox; on Citus, a table of the coordinator's own, like
-- `rate_limits`. The MFA tables are keyed by the user, like `refresh_tokens`.
CREATE TABLE identity_records (
  model TEXT COLLATE "C" NOT NULL,
  id TEXT COLLATE "C" NOT NULL,
  payload JSONB NOT NULL,
  grant_id TEXT COLLATE "C",
  user_code TEXT COLLATE "C",
  uid TEXT COLLATE "C",
  expires_at BIGINT,
  consumed_at BIGINT,
  PRIMARY KEY (model, id)
);
CREATE INDEX identity_records_grant ON identity_records (grant_id) WHERE grant_id IS NOT NULL;
CREATE UNIQUE INDEX identity_records_user_code ON identity_records (model, user_code) WHERE user_code IS NOT NULL;
CREATE UNIQUE INDEX identity_records_uid ON identity_records (model, uid) WHERE uid IS NOT NULL;
CREATE INDEX identity_records_expiry ON identity_records (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE user_mfa (
  user_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  sealed_secret TEXT COLLATE "C" NOT NULL,
  enrolled_at BIGINT NOT NULL,
  last_step BIGINT
);

CREATE TABLE mfa_recovery_codes (
  user_id TEXT COLLATE "C" NOT NULL,
  code_hash TEXT COLLATE "C" NOT NULL,
  used_at BIGINT,
  PRIMARY KEY (user_id, code_hash)
);
