-- 0012: the directory (GAL): users' directory facts, frequent contacts and people search's index (SQLite:
-- 0010_directory.sql, which says what each table holds and why the index is queued by a trigger).
--
-- Keying (README.md): all five tables are tenant data, their primary keys start with `tenant_id`, and every read
-- names the tenant: a search, an org chart and a user's frequent contacts each stay on one shard. The secondary
-- indexes (not unique) end with the tenant instead, so that only a primary key serves the tenant alone (the SQLite
-- migration says why). No foreign keys
-- (the rows name users that exist when written; every read joins `users` on (tenant_id, id), its primary key).
CREATE TABLE directory_entries (
  tenant_id   TEXT COLLATE "C" NOT NULL,
  user_id     TEXT COLLATE "C" NOT NULL,
  title       TEXT COLLATE "C",
  department  TEXT COLLATE "C",
  office      TEXT COLLATE "C",
  phone       TEXT COLLATE "C",          -- business phone
  mobile      TEXT COLLATE "C",
  manager_id  TEXT COLLATE "C" CHECK (manager_id IS NULL OR manager_id <> user_id),
  hidden      BOOLEAN NOT NULL DEFAULT false,
  updated_at  BIGINT NOT NULL,
  PRIMARY KEY (tenant_id, user_id)
);
-- A manager's direct reports.
CREATE INDEX directory_entries_manager ON directory_entries (manager_id, tenant_id) WHERE manager_id IS NOT NULL;

CREATE TABLE directory_frequent (
  tenant_id     TEXT COLLATE "C" NOT NULL,
  user_id       TEXT COLLATE "C" NOT NULL,
  address       TEXT COLLATE "C" NOT NULL,   -- lower case
  name          TEXT COLLATE "C",
  sent_count    BIGINT NOT NULL CHECK (sent_count > 0),
  last_sent_at  BIGINT NOT NULL,
  PRIMARY KEY (tenant_id, user_id, address)
);

CREATE TABLE directory_terms (
  tenant_id  TEXT COLLATE "C" NOT NULL,
  kind       SMALLINT NOT NULL CHECK (kind IN (0, 1)),   -- 0: a name term, 1: an address term
  term       TEXT COLLATE "C" NOT NULL,
  user_id    TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (tenant_id, kind, term, user_id)
);
-- Re-indexing a user replaces their terms.
CREATE INDEX directory_terms_user ON directory_terms (user_id, tenant_id);

CREATE TABLE directory_people (
  tenant_id  TEXT COLLATE "C" NOT NULL,
  user_id    TEXT COLLATE "C" NOT NULL,
  sort_name  TEXT COLLATE "C" NOT NULL,     -- the folded display name: search's alphabetical order
  address    TEXT COLLATE "C" NOT NULL,     -- lower case, as frequent contacts keep it
  PRIMARY KEY (tenant_id, user_id)
);
-- Which frequent contacts are users of the tenant (the others are external).
CREATE INDEX directory_people_address ON directory_people (address, tenant_id);

CREATE TABLE directory_pending (
  tenant_id  TEXT COLLATE "C" NOT NULL,
  user_id    TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (tenant_id, user_id)
);

-- Queues a created, renamed, readdressed, moved or deleted user for re-indexing (a moved user in both tenants).
CREATE FUNCTION directory_queue_user() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'DELETE' THEN
    INSERT INTO directory_pending (tenant_id, user_id) VALUES (NEW.tenant_id, NEW.id) ON CONFLICT DO NOTHING;
  END IF;
  IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.tenant_id IS DISTINCT FROM NEW.tenant_id) THEN
    INSERT INTO directory_pending (tenant_id, user_id) VALUES (OLD.tenant_id, OLD.id) ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER users_directory_queue AFTER INSERT OR DELETE OR UPDATE OF display_name, email, tenant_id ON users
  FOR EACH ROW EXECUTE FUNCTION directory_queue_user();

-- Every user there is, indexed by the first search of their tenant.
INSERT INTO directory_pending (tenant_id, user_id) SELECT tenant_id, id FROM users;
