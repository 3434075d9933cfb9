-- 0007: the built-in identity provider (server/identity/). oidc-provider's records — browser sessions, interactions,
-- authorization and device codes, grants, refresh tokens — as JSON payloads under (model, id), findable by the
-- session `uid`, the device flow's `user_code` and the `grant_id` that revocation names. Times in ms; a record past
-- `expires_at` is gone for the provider and deleted by the history purge. One row per record, written by whichever
-- worker or node handled the request, so a code issued on one is redeemed on another.
-- And TOTP multi-factor: a user's sealed secret (AES-GCM under a key derived from the server secret), the last time
-- step used (a code is good once), and the recovery codes' HMACs.
-- (PostgreSQL: 0009_identity_provider.sql, the same change.)
CREATE TABLE identity_records (
  model TEXT NOT NULL,
  id TEXT NOT NULL,
  payload TEXT NOT NULL,
  grant_id TEXT,
  user_code TEXT,
  uid TEXT,
  expires_at INTEGER,
  consumed_at INTEGER,
  PRIMARY KEY (model, id)
);
CREATE INDEX identity_records_grant ON identity_records (grant_id) WHERE grant_id IS NOT NULL;
CREATE UNIQUE INDEX identity_records_user_code ON identity_records (model, user_code) WHERE user_code IS NOT NULL;
CREATE UNIQUE INDEX identity_records_uid ON identity_records (model, uid) WHERE uid IS NOT NULL;
CREATE INDEX identity_records_expiry ON identity_records (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE user_mfa (
  user_id TEXT NOT NULL PRIMARY KEY,
  sealed_secret TEXT NOT NULL,
  enrolled_at INTEGER NOT NULL,
  last_step INTEGER
);

CREATE TABLE mfa_recovery_codes (
  user_id TEXT NOT NULL,
  code_hash TEXT NOT NULL,
  used_at INTEGER,
  PRIMARY KEY (user_id, code_hash)
) WITHOUT ROWID;
