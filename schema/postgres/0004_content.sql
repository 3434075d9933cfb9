-- 0004: content, as schema/sqlite/0004_content.sql: blobs in fixed-size chunks (downloads stream, ranges seek
-- without reading a whole blob), blobs reference-counted by triggers (every delete path, cascades included, frees
-- what it no longer needs, in the same transaction), full-text search, the send outbox, and what recipient lookup
-- and subject threading need. The PostgreSQL schema was born after this file: there is no older data to convert.

-- Chunk `seq` from 0, each at most 256 KiB (server/store/postgres/content.ts).
CREATE TABLE blob_chunks (
  user_id  TEXT COLLATE "C" NOT NULL,
  blob_id  TEXT COLLATE "C" NOT NULL,
  seq      INTEGER NOT NULL,
  data     BYTEA NOT NULL,
  PRIMARY KEY (user_id, blob_id, seq),
  FOREIGN KEY (user_id, blob_id) REFERENCES blobs (user_id, id) ON DELETE CASCADE
);

-- How many rows point at the blob (items.mime_blob_id, attachments.blob_id, outbox.blob_id). The triggers below keep
-- it; a blob whose count reaches zero is deleted with its chunks in the same transaction.
ALTER TABLE blobs ADD COLUMN ref_count INTEGER NOT NULL DEFAULT 0;

CREATE FUNCTION blob_ref(owner TEXT, blob TEXT, delta INTEGER) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  remaining INTEGER;
BEGIN
  UPDATE blobs SET ref_count = ref_count + delta WHERE user_id = owner AND id = blob RETURNING ref_count INTO remaining;
  IF remaining <= 0 THEN
    DELETE FROM blobs WHERE user_id = owner AND id = blob;
  END IF;
END $$;

CREATE FUNCTION items_blob_ref() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' AND NEW.mime_blob_id IS NOT NULL THEN
    PERFORM blob_ref(NEW.user_id, NEW.mime_blob_id, 1);
  ELSIF TG_OP = 'DELETE' AND OLD.mime_blob_id IS NOT NULL THEN
    PERFORM blob_ref(OLD.user_id, OLD.mime_blob_id, -1);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER items_blob_ref AFTER INSERT OR DELETE ON items FOR EACH ROW EXECUTE FUNCTION items_blob_ref();

-- attachments.blob_id and outbox.blob_id: never NULL.
CREATE FUNCTION blob_id_ref() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    PERFORM blob_ref(NEW.user_id, NEW.blob_id, 1);
  ELSE
    PERFORM blob_ref(OLD.user_id, OLD.blob_id, -1);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER attachments_blob_ref AFTER INSERT OR DELETE ON attachments FOR EACH ROW EXECUTE FUNCTION blob_id_ref();

-- Full-text search: one document per indexed item, deleted with it (direct or by cascade). The store writes the
-- tsvector itself (server/store/postgres/search.ts): the words as SQLite's unicode61 tokenizer cuts them, weighted
-- by field (subject A, sender B, recipients C, body D), plus one lexeme naming the owner, so a search is a GIN index
-- intersection with the caller's mailbox rather than a filter over everyone's matches.
CREATE TABLE search_docs (
  user_id   TEXT COLLATE "C" NOT NULL,
  item_id   TEXT COLLATE "C" NOT NULL,
  document  TSVECTOR NOT NULL,
  PRIMARY KEY (user_id, item_id),
  FOREIGN KEY (user_id, item_id) REFERENCES items (user_id, id) ON DELETE CASCADE
);
CREATE INDEX search_docs_document ON search_docs USING gin (document);

-- Subject threading: the normalised subject of a message that carried no thread headers, and the lookup of an
-- earlier message with the same one.
ALTER TABLE items ADD COLUMN thread_subject TEXT COLLATE "C";
CREATE INDEX items_thread_subject ON items (user_id, thread_subject, received_at) WHERE thread_subject IS NOT NULL;
-- Duplicate detection of a message without a Message-ID: the same bytes in the same folder.
CREATE INDEX items_folder_mime ON items (user_id, folder_id, mime_blob_id) WHERE mime_blob_id IS NOT NULL;
-- Local delivery resolves recipients by address.
CREATE INDEX users_email ON users (nocase(email));

-- The outbox: one row per message that still has remote recipients to relay. Kept until relayed or given up (then a
-- non-delivery report goes to the sender); survives restarts because it is the store, not memory.
CREATE TABLE outbox (
  user_id          TEXT COLLATE "C" NOT NULL,
  id               TEXT COLLATE "C" NOT NULL,
  blob_id          TEXT COLLATE "C" NOT NULL,
  mail_from        TEXT COLLATE "C" NOT NULL,
  recipients       JSONB NOT NULL,              -- array of addresses still to relay
  state            TEXT COLLATE "C" NOT NULL CHECK (state IN ('queued', 'sent', 'failed')),
  attempts         INTEGER NOT NULL DEFAULT 0,
  next_attempt_at  BIGINT NOT NULL,
  last_error       TEXT COLLATE "C",
  created_at       BIGINT NOT NULL,
  updated_at       BIGINT NOT NULL,
  PRIMARY KEY (user_id, id),
  FOREIGN KEY (user_id, blob_id) REFERENCES blobs (user_id, id)
);
-- The relay works on entries by id and by due time, across mailboxes.
CREATE INDEX outbox_id ON outbox (id);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE TRIGGER outbox_blob_ref AFTER INSERT OR DELETE ON outbox FOR EACH ROW EXECUTE FUNCTION blob_id_ref();
