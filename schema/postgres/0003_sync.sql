-- 0003: idempotent replays of mutating calls (protocol.md §6: `Idempotency-Key`, and batch `opId`s). Mailbox data
-- (no foreign key: keyed by the user, who may have no mailbox).
-- The first result is kept for 24 h; a replay with the same key returns it and changes nothing.
CREATE TABLE idempotency (
  user_id       TEXT COLLATE "C" NOT NULL,
  key           TEXT COLLATE "C" NOT NULL,
  request_hash  TEXT COLLATE "C" NOT NULL,   -- a replay must be the same request; the same key with another is a 400
  status        INTEGER NOT NULL,
  body          TEXT COLLATE "C" NOT NULL,
  created_at    BIGINT NOT NULL,
  PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_created ON idempotency (created_at);
