-- 0006 (PostgreSQL only): the key material every node of one database shares, when no key files are configured
-- (PIGEON_SIGNING_KEY_FILE, PIGEON_SECRET_FILE): the Ed25519 key that signs access tokens (PKCS#8 PEM) and the
-- server secret that keys HMACs (hex). The first node to start creates each under an advisory lock; the others read
-- it, so a token issued by one node is accepted by every other. A global table: a handful of rows, read at start.
-- Whoever can read this table can forge tokens: grant it to the server's role only, and protect backups like keys.
CREATE TABLE node_secrets (
  name TEXT COLLATE "C" PRIMARY KEY,
  value TEXT COLLATE "C" NOT NULL,
  created_at BIGINT NOT NULL
);
