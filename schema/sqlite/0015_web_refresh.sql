-- 0015: web-session refreshes shared by every process (PostgreSQL: 0017_web_refresh.sql, the same change). Times in ms.
--
-- The web pages' session cookie holds a rotating refresh token, and the identity platform treats a used one presented
-- again as theft (the whole sign-in ends). Requests carrying the same expiring cookie may reach different worker
-- processes (or nodes) at once: one row per refresh token being refreshed makes exactly one of them refresh it, and
-- lets the others, and any request still carrying the old cookie for a short while, use its result
-- (server/web/sessions.ts).
--
-- `key`: SHA-256 of the old refresh token (base64url), never the token. `result`: NULL while the refresh runs; the
-- new session sealed with the web sessions' key (a JWE: no token in plain text here); '' when the refresh failed or
-- the new session was since signed out. `successor`: SHA-256 of the new session's refresh token, so signing out finds
-- the row that would hand that session to an old cookie (and, as it is the key of the row its own refresh makes, the
-- rows of older cookies that refreshed into the ones before). `expires_at`: while running, the end of the claim's lease
-- (after it another process may take the refresh over: its holder died); once done, the end of the remembered result.
-- A row past `expires_at` is as good as absent, and is purged.
CREATE TABLE web_refreshes (
  key         TEXT PRIMARY KEY,
  claimed_at  INTEGER NOT NULL,
  result      TEXT,
  successor   TEXT,
  expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX web_refreshes_successor ON web_refreshes (successor) WHERE successor IS NOT NULL;
CREATE INDEX web_refreshes_expiry ON web_refreshes (expires_at);
