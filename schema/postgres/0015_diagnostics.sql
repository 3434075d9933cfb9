-- 0015: diagnostics incidents, as schema/sqlite/0013_diagnostics.sql (which says what the table holds). Mailbox data,
-- keyed by `user_id` like the outbox (schema/postgres/README.md): the zip is a blob of the user's, referenced through
-- (user_id, blob_id) and counted by 0004's `blob_id_ref` trigger function, so deleting the row (retention) releases
-- the blob in the same transaction. The incident id is unique among the tenant's incidents by the service's check
-- in the unit that inserts it (a unique index on it alone would span distribution keys); 40 random bits make even
-- that check almost never matter.
CREATE TABLE diagnostic_incidents (
  user_id           TEXT COLLATE "C" NOT NULL,
  id                TEXT COLLATE "C" NOT NULL,
  tenant_id         TEXT COLLATE "C" NOT NULL,
  device_record_id  TEXT COLLATE "C",
  device_id         TEXT COLLATE "C" NOT NULL,
  blob_id           TEXT COLLATE "C" NOT NULL,
  size              BIGINT NOT NULL,
  entries           INTEGER NOT NULL,
  redactions        INTEGER NOT NULL,
  created_at        BIGINT NOT NULL,
  expires_at        BIGINT NOT NULL,
  PRIMARY KEY (user_id, id),
  FOREIGN KEY (user_id, blob_id) REFERENCES blobs (user_id, id)
);
-- A user's incidents, newest first (the primary key's prefix serves nothing in that order); an admin's lookup by
-- tenant and id, across mailboxes; the retention purge, oldest expiry first.
CREATE INDEX diagnostic_incidents_user ON diagnostic_incidents (user_id, created_at DESC, id DESC);
CREATE INDEX diagnostic_incidents_tenant ON diagnostic_incidents (tenant_id, id);
CREATE INDEX diagnostic_incidents_expiry ON diagnostic_incidents (expires_at);
CREATE TRIGGER diagnostic_incidents_blob_ref AFTER INSERT OR DELETE ON diagnostic_incidents FOR EACH ROW EXECUTE FUNCTION blob_id_ref();
