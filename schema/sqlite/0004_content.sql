-- 0004: content. Blobs move into fixed-size chunks (so downloads stream and ranges seek without reading a whole
-- blob), blobs are reference-counted by triggers (so every delete path, cascades included, frees what it no longer
-- needs, in the same transaction), full-text search (FTS5), the send outbox, and what recipient lookup and
-- subject threading need. Never edit this file once landed.

-- Content-addressed chunks: blob id = sha256 of the whole content, chunk `seq` from 0, each chunk at most 256 KiB
-- (server/store/sqlite/blobs.ts). A rowid table on purpose: SQLite advises against WITHOUT ROWID for large rows.
CREATE TABLE blob_chunks (
  blob_id  TEXT NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
  seq      INTEGER NOT NULL,
  data     BLOB NOT NULL,
  UNIQUE (blob_id, seq)
) STRICT;

-- Blobs stored before this migration become one chunk each (the demo's are small; chunking only matters for reads).
INSERT INTO blob_chunks (blob_id, seq, data) SELECT id, 0, data FROM blobs;
ALTER TABLE blobs DROP COLUMN data;

-- How many rows point at the blob (items.mime_blob_id, attachments.blob_id, outbox.blob_id). The triggers below
-- keep it; a blob whose count reaches zero is deleted with its chunks in the same transaction.
ALTER TABLE blobs ADD COLUMN ref_count INTEGER NOT NULL DEFAULT 0;
UPDATE blobs SET ref_count =
    (SELECT count(*) FROM items WHERE mime_blob_id = blobs.id)
  + (SELECT count(*) FROM attachments WHERE blob_id = blobs.id);
DELETE FROM blobs WHERE ref_count = 0;

CREATE TRIGGER blobs_release AFTER UPDATE OF ref_count ON blobs WHEN NEW.ref_count <= 0
BEGIN
  DELETE FROM blobs WHERE id = NEW.id;
END;

CREATE TRIGGER items_blob_ref AFTER INSERT ON items WHEN NEW.mime_blob_id IS NOT NULL
BEGIN
  UPDATE blobs SET ref_count = ref_count + 1 WHERE id = NEW.mime_blob_id;
END;
CREATE TRIGGER items_blob_unref AFTER DELETE ON items WHEN OLD.mime_blob_id IS NOT NULL
BEGIN
  UPDATE blobs SET ref_count = ref_count - 1 WHERE id = OLD.mime_blob_id;
END;
CREATE TRIGGER attachments_blob_ref AFTER INSERT ON attachments
BEGIN
  UPDATE blobs SET ref_count = ref_count + 1 WHERE id = NEW.blob_id;
END;
CREATE TRIGGER attachments_blob_unref AFTER DELETE ON attachments
BEGIN
  UPDATE blobs SET ref_count = ref_count - 1 WHERE id = OLD.blob_id;
END;

-- Full-text search. `search_docs` gives every indexed item a stable integer key (an explicit INTEGER PRIMARY KEY
-- survives VACUUM; the rowid of `items`, keyed by text id, does not). The FTS table is contentless (the text lives
-- in `items` already) with contentless_delete so a row can be removed by key. `owner` holds the user id, so a
-- search is an index intersection with the caller's mailbox, not a filter over everyone's matches.
CREATE TABLE search_docs (
  doc_id   INTEGER PRIMARY KEY,
  item_id  TEXT NOT NULL UNIQUE,
  user_id  TEXT NOT NULL
) STRICT;
CREATE VIRTUAL TABLE items_fts USING fts5(
  owner, subject, sender, recipients, body,
  content = '', contentless_delete = 1, tokenize = 'unicode61 remove_diacritics 2'
);
-- Deletion (direct or by cascade from a folder or a user) removes the index entry in the same transaction;
-- insertion is done by the store, which derives the text (an HTML-only body is indexed as its text).
CREATE TRIGGER items_search_unindex AFTER DELETE ON items
BEGIN
  DELETE FROM items_fts WHERE rowid = (SELECT doc_id FROM search_docs WHERE item_id = OLD.id);
  DELETE FROM search_docs WHERE item_id = OLD.id;
END;

-- Subject threading: the normalised subject of a message that carried no thread headers, and the lookup of an
-- earlier message with the same one.
ALTER TABLE items ADD COLUMN thread_subject TEXT;
CREATE INDEX items_thread_subject ON items (user_id, thread_subject, received_at) WHERE thread_subject IS NOT NULL;
-- Duplicate detection of a message without a Message-ID: the same bytes in the same folder.
CREATE INDEX items_folder_mime ON items (folder_id, mime_blob_id) WHERE mime_blob_id IS NOT NULL;
-- Local delivery resolves recipients by address.
CREATE INDEX users_email ON users (email COLLATE NOCASE);

-- The outbox: one row per message that still has remote recipients to relay. Kept until relayed or given up (then
-- a non-delivery report goes to the sender); survives restarts because it is the store, not memory.
CREATE TABLE outbox (
  id               TEXT PRIMARY KEY,
  user_id          TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  blob_id          TEXT NOT NULL REFERENCES blobs(id),
  mail_from        TEXT NOT NULL,
  recipients       TEXT NOT NULL,              -- JSON array of addresses still to relay
  state            TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'failed')),
  attempts         INTEGER NOT NULL DEFAULT 0,
  next_attempt_at  INTEGER NOT NULL,
  last_error       TEXT,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE TRIGGER outbox_blob_ref AFTER INSERT ON outbox
BEGIN
  UPDATE blobs SET ref_count = ref_count + 1 WHERE id = NEW.blob_id;
END;
CREATE TRIGGER outbox_blob_unref AFTER DELETE ON outbox
BEGIN
  UPDATE blobs SET ref_count = ref_count - 1 WHERE id = OLD.blob_id;
END;

-- Messages already in the store become searchable.
INSERT INTO search_docs (item_id, user_id) SELECT id, user_id FROM items;
INSERT INTO items_fts (rowid, owner, subject, sender, recipients, body)
  SELECT d.doc_id, i.user_id, i.subject,
         coalesce(json_extract(i.from_json, '$.name') || ' ' || json_extract(i.from_json, '$.address'), ''),
         (SELECT group_concat(coalesce(json_extract(value, '$.name'), '') || ' ' || json_extract(value, '$.address'), ' ')
            FROM json_each(i.to_json)),
         coalesce(i.body_text, i.preview)
  FROM search_docs d JOIN items i ON i.id = d.item_id;
