-- 0017: web-session refreshes shared by every node, as schema/sqlite/0015_web_refresh.sql (which says what the table
-- holds). A global table (schema/postgres/README.md): a row names a refresh token's hash, no mailbox or tenant, and
-- lives for seconds. A claim is one INSERT … ON CONFLICT, so of two nodes claiming at once exactly one wins.
CREATE TABLE web_refreshes (
  key         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  claimed_at  BIGINT NOT NULL,
  result      TEXT COLLATE "C",
  successor   TEXT COLLATE "C",
  expires_at  BIGINT NOT NULL
);
CREATE INDEX web_refreshes_successor ON web_refreshes (successor) WHERE successor IS NOT NULL;
CREATE INDEX web_refreshes_expiry ON web_refreshes (expires_at);
