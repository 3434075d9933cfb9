-- 0003: idempotent replays of mutating calls (protocol.md §6: `Idempotency-Key`, and batch `opId`s).
-- The first result is kept for 24 h; a replay with the same key returns it and changes nothing.
CREATE TABLE idempotency (
  user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  key           TEXT NOT NULL,
  request_hash  TEXT NOT NULL,   -- a replay must be the same request; the same key with another request is a 400
  status        INTEGER NOT NULL,
  body          TEXT NOT NULL,
  created_at    INTEGER NOT NULL,
  PRIMARY KEY (user_id, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX idempotency_created ON idempotency (created_at);
