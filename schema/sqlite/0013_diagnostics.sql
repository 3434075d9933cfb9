-- 0013: diagnostics incidents (issue 20). (PostgreSQL: 0015_diagnostics.sql, the same change.) Times in ms.
--
-- One row per log bundle an app uploaded (POST /v1/diagnostics): its incident id (`PGN-XXXX-XXXX`, what the user
-- reads to support: server/diagnostics/incidentId.ts), whose it is, and the stored zip — scrubbed, with the server's
-- own attachments — as a blob of the user's, held by the row like an outbox entry holds its message: the triggers
-- below count the reference, so purging the row (retention) or deleting the user frees the blob in the same
-- transaction. `device_record_id` is the device record as it was at upload, kept as a plain value (no foreign key):
-- the partnership may be purged long before the incident, whose zip holds the record as it was (device.json).
CREATE TABLE diagnostic_incidents (
  id                TEXT PRIMARY KEY,
  tenant_id         TEXT NOT NULL,
  user_id           TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  device_record_id  TEXT,
  device_id         TEXT NOT NULL,
  blob_id           TEXT NOT NULL REFERENCES blobs(id),
  size              INTEGER NOT NULL,
  entries           INTEGER NOT NULL,
  redactions        INTEGER NOT NULL,
  created_at        INTEGER NOT NULL,
  expires_at        INTEGER NOT NULL
) STRICT;
-- A user's incidents, newest first; the retention purge, oldest expiry first. (An admin's lookup is by id, the
-- primary key, and checks the tenant on the row.)
CREATE INDEX diagnostic_incidents_user ON diagnostic_incidents (user_id, created_at DESC, id DESC);
CREATE INDEX diagnostic_incidents_expiry ON diagnostic_incidents (expires_at);
CREATE TRIGGER diagnostic_incidents_blob_ref AFTER INSERT ON diagnostic_incidents
BEGIN
  UPDATE blobs SET ref_count = ref_count + 1 WHERE id = NEW.blob_id;
END;
CREATE TRIGGER diagnostic_incidents_blob_unref AFTER DELETE ON diagnostic_incidents
BEGIN
  UPDATE blobs SET ref_count = ref_count - 1 WHERE id = OLD.blob_id;
END;
