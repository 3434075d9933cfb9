-- 0007 (PostgreSQL only): the token endpoint's rate-limit counts (per client address, failed password grants per
-- user), shared by every node so that N nodes never mean N times the guessing budget. One row per limiter and key
-- for the current window: an increment after `reset_at` starts a new window. Rows of ended windows are deleted by
-- the history purge. A global table: its keys are addresses and usernames, not mailboxes.
CREATE TABLE rate_limits (
  name TEXT COLLATE "C" NOT NULL,
  key TEXT COLLATE "C" NOT NULL,
  hits INTEGER NOT NULL,
  reset_at BIGINT NOT NULL,
  PRIMARY KEY (name, key)
);
