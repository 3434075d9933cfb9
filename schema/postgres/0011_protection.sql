-- 0011: information protection: tenant protection keys, the tenant's protection document and users' published
-- S/MIME certificates (SQLite: 0009_protection.sql, which says what each table holds).
--
-- Keying (README.md): all three are tenant data, their primary keys start with `tenant_id`. The directory lookup of
-- certificates names the tenant and the address, so it touches one shard; a user's own list and the withdrawal of a
-- certificate name only the user: a secondary index here, a multi-shard read on Citus, like `sign_in_log`'s per-user
-- reads (neither is on a per-message path). The duplicate rule's unique index leads with `tenant_id` (a user belongs
-- to one tenant, so it is the same rule as SQLite's (user_id, fingerprint)).
--
-- The configuration document is TEXT, not JSONB, as in `access_config`: it is answered exactly as it was stored.
CREATE TABLE protection_keys (
  tenant_id           TEXT COLLATE "C" NOT NULL,
  id                  TEXT COLLATE "C" NOT NULL,
  certificate_pem     TEXT COLLATE "C" NOT NULL,
  sealed_private_key  TEXT COLLATE "C" NOT NULL,
  created_at          BIGINT NOT NULL,
  retired_at          BIGINT,             -- NULL: the tenant's active key
  PRIMARY KEY (tenant_id, id)
);
-- A tenant's keys, newest first.
CREATE INDEX protection_keys_tenant ON protection_keys (tenant_id, created_at, id);
-- One active key per tenant.
CREATE UNIQUE INDEX protection_keys_active ON protection_keys (tenant_id) WHERE retired_at IS NULL;

CREATE TABLE protection_config (
  tenant_id   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  version     INTEGER NOT NULL CHECK (version > 0),
  doc         TEXT COLLATE "C" NOT NULL,
  updated_at  BIGINT NOT NULL
);

CREATE TABLE user_certificates (
  tenant_id        TEXT COLLATE "C" NOT NULL,
  id               TEXT COLLATE "C" NOT NULL,
  user_id          TEXT COLLATE "C" NOT NULL,
  email            TEXT COLLATE "C" NOT NULL,      -- lower case, as the certificate names it
  certificate_pem  TEXT COLLATE "C" NOT NULL,
  -- Checked, because the duplicate rule compares it as text: an upper-case spelling would slip past it.
  fingerprint      TEXT COLLATE "C" NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
  not_before       BIGINT NOT NULL,
  not_after        BIGINT NOT NULL,
  created_at       BIGINT NOT NULL,
  PRIMARY KEY (tenant_id, id)
);
-- A user publishes a certificate once.
CREATE UNIQUE INDEX user_certificates_fingerprint ON user_certificates (tenant_id, user_id, fingerprint);
-- A user's certificates, newest first; the withdrawal of one.
CREATE INDEX user_certificates_user ON user_certificates (user_id, created_at, id);
-- The directory lookup: an address's certificates in a tenant, newest first.
CREATE INDEX user_certificates_email ON user_certificates (tenant_id, email, created_at, id);
