-- 0009: information protection: tenant protection keys, the tenant's protection document, and the S/MIME
-- certificates users publish in the directory (server/protection/). (PostgreSQL: 0011_protection.sql, the same
-- change.) Times in ms.
--
-- protection_keys: a tenant's RSA keys, each as its self-signed certificate and its PKCS#8 private key sealed with
-- the server secret (never in the clear). Protected content is encrypted to the newest unretired key; a rotation
-- retires the others and keeps them, since everything protected before it must stay readable. Read whole per tenant,
-- newest first. At most one key of a tenant is unretired (the partial unique index): a rotation retires the others
-- and inserts the new one in one transaction, so the active key is never ambiguous.
--
-- protection_config: a tenant's protection document (templates, labels, label policy, partners, delivery rules) as
-- one JSON document under a version, changed by compare-and-set on the version as `access_config` is, so two admins
-- editing at once cannot lose each other's change and readers compile a document once per version. Kept as the exact
-- text that was stored.
--
-- user_certificates: S/MIME certificates users published so that senders can encrypt to them. Looked up by address
-- within a tenant (a sender knows the recipient's address, not the user) and listed per user, newest first. A user
-- publishes a certificate (by the SHA-256 of its DER, lower-case hex) once.
--
-- No foreign keys: like `access_config` and `audit_log`, these rows name tenants and users that exist when written.
CREATE TABLE protection_keys (
  id                  TEXT PRIMARY KEY,
  tenant_id           TEXT NOT NULL,
  certificate_pem     TEXT NOT NULL,
  sealed_private_key  TEXT NOT NULL,
  created_at          INTEGER NOT NULL,
  retired_at          INTEGER             -- NULL: the tenant's active key
) STRICT;
-- A tenant's keys, newest first.
CREATE INDEX protection_keys_tenant ON protection_keys (tenant_id, created_at, id);
-- One active key per tenant.
CREATE UNIQUE INDEX protection_keys_active ON protection_keys (tenant_id) WHERE retired_at IS NULL;

CREATE TABLE protection_config (
  tenant_id   TEXT PRIMARY KEY,
  version     INTEGER NOT NULL CHECK (version > 0),
  doc         TEXT NOT NULL,
  updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE user_certificates (
  id               TEXT PRIMARY KEY,
  tenant_id        TEXT NOT NULL,
  user_id          TEXT NOT NULL,
  email            TEXT NOT NULL,      -- lower case, as the certificate names it
  certificate_pem  TEXT NOT NULL,
  -- Checked, because the duplicate rule compares it as text: an upper-case spelling would slip past it.
  fingerprint      TEXT NOT NULL CHECK (length(fingerprint) = 64 AND fingerprint NOT GLOB '*[^0-9a-f]*'),
  not_before       INTEGER NOT NULL,
  not_after        INTEGER NOT NULL,
  created_at       INTEGER NOT NULL
) STRICT;
-- A user publishes a certificate once.
CREATE UNIQUE INDEX user_certificates_fingerprint ON user_certificates (user_id, fingerprint);
-- A user's certificates, newest first.
CREATE INDEX user_certificates_user ON user_certificates (user_id, created_at, id);
-- The directory lookup: an address's certificates in a tenant, newest first.
CREATE INDEX user_certificates_email ON user_certificates (tenant_id, email, created_at, id);
