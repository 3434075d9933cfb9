-- 0010: the directory (GAL): what an administrator says of each user (title, department, office, phones, manager,
-- hidden), who each user writes to (frequent contacts), and the index people search reads (server/directory/,
-- server/store/sqlite/directory.ts). (PostgreSQL: 0012_directory.sql, the same change.) Times in ms.
--
-- directory_entries: a user's directory facts, keyed by tenant and user; a user without a row has none and is not
-- hidden. `manager_id` names a user of the same tenant; the manager relation never forms a cycle (the service
-- refuses a change that would make one, checking the chain in the same transaction as the write). Direct reports
-- are read by (tenant, manager).
--
-- directory_frequent: how many messages a user sent to an address and when last (lower-cased address; the name it
-- was last written with, if any), so people search ranks those the user writes to first and finds the addresses
-- outside the tenant they wrote to. The store keeps a user's most recent 500 addresses.
--
-- directory_terms, directory_people, directory_pending: people search's index, derived from `users`. A term is a
-- folded (lower case, accents removed) name word, the whole name, the address or a part of its local part; search
-- is a range scan of the terms starting with the query (`kind` 0: name, 1: address), so it costs what it finds,
-- never a scan of the tenant. `directory_people` keeps each user's folded sort name and lower-cased address (the
-- join to frequent contacts). Folding needs Unicode rules SQL does not have, so the store computes terms; the
-- triggers below only queue every user that was created, renamed, readdressed, moved or deleted in
-- `directory_pending`, and a search first indexes its tenant's queue (taking the entries out as it reads them, so a
-- change committed meanwhile queues the user again). Whatever writes `users` (any code path, another process),
-- search stays right.
--
-- The secondary indexes lead with what they look up (manager, user, address) and end with the tenant: only the
-- primary keys start with `tenant_id`, so no index but a primary key can serve a condition on the tenant alone. A
-- planner whose statistics are stale (a tenant that just got thousands of users) takes "the tenant's rows" for a
-- handful and may pick any index that starts with the tenant for a lookup by key, reading the whole tenant per row.
--
-- No foreign keys: like `audit_log` and `user_certificates`, these rows name tenants and users that exist when
-- written; a deleted user's entry is ignored (every read joins `users`).
CREATE TABLE directory_entries (
  tenant_id   TEXT NOT NULL,
  user_id     TEXT NOT NULL,
  title       TEXT,
  department  TEXT,
  office      TEXT,
  phone       TEXT,                  -- business phone
  mobile      TEXT,
  manager_id  TEXT CHECK (manager_id IS NULL OR manager_id <> user_id),
  hidden      INTEGER NOT NULL DEFAULT 0 CHECK (hidden IN (0, 1)),
  updated_at  INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, user_id)
) STRICT, WITHOUT ROWID;
-- A manager's direct reports.
CREATE INDEX directory_entries_manager ON directory_entries (manager_id, tenant_id) WHERE manager_id IS NOT NULL;

CREATE TABLE directory_frequent (
  tenant_id     TEXT NOT NULL,
  user_id       TEXT NOT NULL,
  address       TEXT NOT NULL,         -- lower case
  name          TEXT,
  sent_count    INTEGER NOT NULL CHECK (sent_count > 0),
  last_sent_at  INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, user_id, address)
) STRICT, WITHOUT ROWID;

CREATE TABLE directory_terms (
  tenant_id  TEXT NOT NULL,
  kind       INTEGER NOT NULL CHECK (kind IN (0, 1)),   -- 0: a name term, 1: an address term
  term       TEXT NOT NULL,
  user_id    TEXT NOT NULL,
  PRIMARY KEY (tenant_id, kind, term, user_id)
) STRICT, WITHOUT ROWID;
-- Re-indexing a user replaces their terms.
CREATE INDEX directory_terms_user ON directory_terms (user_id, tenant_id);

CREATE TABLE directory_people (
  tenant_id  TEXT NOT NULL,
  user_id    TEXT NOT NULL,
  sort_name  TEXT NOT NULL,            -- the folded display name: search's alphabetical order
  address    TEXT NOT NULL,            -- lower case, as frequent contacts keep it
  PRIMARY KEY (tenant_id, user_id)
) STRICT, WITHOUT ROWID;
-- Which frequent contacts are users of the tenant (the others are external).
CREATE INDEX directory_people_address ON directory_people (address, tenant_id);

CREATE TABLE directory_pending (
  tenant_id  TEXT NOT NULL,
  user_id    TEXT NOT NULL,
  PRIMARY KEY (tenant_id, user_id)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER users_directory_insert AFTER INSERT ON users BEGIN
  INSERT INTO directory_pending (tenant_id, user_id) VALUES (NEW.tenant_id, NEW.id) ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER users_directory_update AFTER UPDATE OF display_name, email, tenant_id ON users BEGIN
  INSERT INTO directory_pending (tenant_id, user_id) VALUES (NEW.tenant_id, NEW.id) ON CONFLICT DO NOTHING;
  -- A user moved to another tenant leaves the old tenant's index.
  INSERT INTO directory_pending (tenant_id, user_id) SELECT OLD.tenant_id, OLD.id WHERE OLD.tenant_id <> NEW.tenant_id
    ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER users_directory_delete AFTER DELETE ON users BEGIN
  INSERT INTO directory_pending (tenant_id, user_id) VALUES (OLD.tenant_id, OLD.id) ON CONFLICT DO NOTHING;
END;

-- Every user there is, indexed by the first search of their tenant.
INSERT INTO directory_pending (tenant_id, user_id) SELECT tenant_id, id FROM users WHERE true;
