-- 0001: the foundation schema. Never edit this file once landed; add 0002_*.sql instead.
-- Times are integer milliseconds since the epoch (UTC). Ids are opaque random text (see server/ids.ts); ordering
-- never relies on them except as the tie-breaker of a sort key.

CREATE TABLE tenants (
  id          TEXT PRIMARY KEY,
  name        TEXT NOT NULL,
  created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE users (
  id              TEXT PRIMARY KEY,
  tenant_id       TEXT NOT NULL REFERENCES tenants(id),
  username        TEXT NOT NULL COLLATE NOCASE UNIQUE,
  email           TEXT NOT NULL,
  display_name    TEXT NOT NULL,
  role            TEXT NOT NULL CHECK (role IN ('user', 'admin')),
  password_hash   TEXT,                       -- scrypt, self-describing string; NULL = no password sign-in
  -- Bumped by a password change or "revoke sessions": access tokens carry it (`sv`) and die when it moves.
  session_version INTEGER NOT NULL DEFAULT 0,
  disabled        INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX users_tenant ON users (tenant_id);

-- One mailbox per user. `highest_modseq` is the per-mailbox change counter: every change takes the next value in
-- the same transaction, so modseqs are unique and strictly increasing within a mailbox. `epoch` changes when the
-- mailbox's sync state is reset (or a backup is restored under a new epoch): tokens carry it and die with it.
CREATE TABLE mailboxes (
  user_id         TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
  highest_modseq  INTEGER NOT NULL DEFAULT 0,
  -- Change-log rows up to this modseq have been purged (history horizon): older sync tokens answer 410.
  purged_modseq   INTEGER NOT NULL DEFAULT 0,
  epoch           TEXT NOT NULL,
  created_at      INTEGER NOT NULL
) STRICT;

CREATE TABLE devices (
  id                      TEXT PRIMARY KEY,   -- the record id (a device id alone is not unique across users)
  user_id                 TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  device_id               TEXT NOT NULL,      -- the app-generated X-Device-Id
  friendly_name           TEXT,
  device_type             TEXT,
  device_model            TEXT,
  device_os               TEXT,
  client_type             TEXT,
  client_version          TEXT,
  user_agent              TEXT,
  capabilities            TEXT NOT NULL DEFAULT '[]',  -- JSON array of strings
  admin_decision          TEXT CHECK (admin_decision IN ('allowed', 'blocked', 'quarantined')),
  wipe_state              TEXT NOT NULL DEFAULT 'none'
                          CHECK (wipe_state IN ('none', 'pending', 'acknowledged', 'failed')),
  wipe_requested_at       INTEGER,
  wipe_requested_by       TEXT,
  wipe_acknowledged_at    INTEGER,
  epoch                   INTEGER NOT NULL DEFAULT 0,   -- bumped by an admin "resync": the device's tokens die
  first_sync_time         INTEGER NOT NULL,
  last_sync_attempt_time  INTEGER,
  last_success_sync_time  INTEGER,
  created_at              INTEGER NOT NULL,
  updated_at              INTEGER NOT NULL,
  UNIQUE (user_id, device_id)
) STRICT;

-- Refresh tokens: only a hash is stored. A family is one sign-in; every rotation adds a row to it, and presenting a
-- rotated member revokes the whole family (reuse detection).
CREATE TABLE refresh_tokens (
  id           TEXT PRIMARY KEY,
  family_id    TEXT NOT NULL,
  user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  device_id    TEXT,              -- the X-Device-Id the family is bound to, if any
  client_id    TEXT NOT NULL,
  scope        TEXT NOT NULL,
  token_hash   BLOB NOT NULL UNIQUE,
  created_at   INTEGER NOT NULL,
  expires_at   INTEGER NOT NULL,  -- sliding: each rotation issues a successor valid for the full lifetime
  rotated_at   INTEGER,           -- set when this token was exchanged for `replaced_by`
  replaced_by  TEXT,
  revoked_at   INTEGER,
  revoked_reason TEXT
) STRICT;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id, revoked_at);

CREATE TABLE folders (
  id            TEXT PRIMARY KEY,
  user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  parent_id     TEXT REFERENCES folders(id),
  display_name  TEXT NOT NULL,
  kind          TEXT NOT NULL CHECK (kind IN ('inbox', 'drafts', 'sentItems', 'deletedItems', 'junkEmail',
                                              'archive', 'outbox', 'calendar', 'contacts', 'mail')),
  total_count   INTEGER NOT NULL DEFAULT 0,
  unread_count  INTEGER NOT NULL DEFAULT 0,
  modseq        INTEGER NOT NULL,   -- last hierarchy-visible change (name, parent, counts)
  created_modseq INTEGER NOT NULL,  -- when it was created: hierarchy sync tells created from updated
  -- Last change to the folder's items (arrival, edit, move in or out, delete): a sync poll whose token is at or
  -- past it has nothing to replay, which makes the no-change poll one row read.
  content_modseq INTEGER NOT NULL DEFAULT 0,
  created_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX folders_user ON folders (user_id, modseq);
-- At most one well-known folder of each kind per mailbox.
CREATE UNIQUE INDEX folders_well_known ON folders (user_id, kind) WHERE kind <> 'mail';

-- Content-addressed blobs (raw messages, attachments): id = sha256 hex of the bytes.
CREATE TABLE blobs (
  id          TEXT PRIMARY KEY,
  size        INTEGER NOT NULL,
  data        BLOB NOT NULL,
  created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE items (
  id                   TEXT PRIMARY KEY,
  user_id              TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  folder_id            TEXT NOT NULL REFERENCES folders(id),
  type                 TEXT NOT NULL CHECK (type IN ('email', 'event', 'contact')),
  received_at          INTEGER NOT NULL,  -- sort key with id: the window is the newest (received_at, id)
  modseq               INTEGER NOT NULL,  -- last change to this item
  placed_modseq        INTEGER NOT NULL,  -- when it entered its current folder (created or moved in)
  change_key           TEXT NOT NULL,
  is_read              INTEGER NOT NULL DEFAULT 0 CHECK (is_read IN (0, 1)),
  is_flagged           INTEGER NOT NULL DEFAULT 0 CHECK (is_flagged IN (0, 1)),
  importance           TEXT NOT NULL DEFAULT 'normal' CHECK (importance IN ('low', 'normal', 'high')),
  categories           TEXT NOT NULL DEFAULT '[]',
  inference            TEXT NOT NULL DEFAULT 'focused' CHECK (inference IN ('focused', 'other')),
  subject              TEXT NOT NULL DEFAULT '',
  from_json            TEXT,              -- {name, address}
  to_json              TEXT NOT NULL DEFAULT '[]',
  cc_json              TEXT NOT NULL DEFAULT '[]',
  reply_to_json        TEXT NOT NULL DEFAULT '[]',
  sent_at              INTEGER,
  preview              TEXT NOT NULL DEFAULT '',
  has_attachments      INTEGER NOT NULL DEFAULT 0,
  body_size            INTEGER NOT NULL DEFAULT 0,
  conversation_id      TEXT,
  internet_message_id  TEXT,
  mime_blob_id         TEXT REFERENCES blobs(id),
  body_text            TEXT,
  body_html            TEXT,
  attachments_json     TEXT NOT NULL DEFAULT '[]',  -- the attachment list as sync shows it (one read per page)
  data_json            TEXT NOT NULL DEFAULT '{}',  -- type-specific fields of events and contacts
  created_at           INTEGER NOT NULL
) STRICT;
CREATE INDEX items_window ON items (folder_id, received_at DESC, id DESC);
CREATE INDEX items_folder_modseq ON items (folder_id, modseq);
CREATE INDEX items_user_modseq ON items (user_id, modseq);
CREATE INDEX items_message_id ON items (user_id, internet_message_id);
CREATE INDEX items_conversation ON items (user_id, conversation_id);

CREATE TABLE attachments (
  id            TEXT NOT NULL,
  item_id       TEXT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
  blob_id       TEXT NOT NULL REFERENCES blobs(id),
  name          TEXT NOT NULL,
  content_type  TEXT NOT NULL,
  size          INTEGER NOT NULL,
  is_inline     INTEGER NOT NULL DEFAULT 0,
  content_id    TEXT,
  position      INTEGER NOT NULL,
  PRIMARY KEY (item_id, id)
) STRICT, WITHOUT ROWID;

-- The change log: one row per change, one modseq per row (unique within the mailbox). It is the history that
-- incremental sync reads and where tombstones live: a deleted or moved-away item leaves its row here with the
-- folder it left and its sort key, so a device can be told about it only when it could hold it. Rows older than
-- the history horizon are purged; tokens older than the horizon get 410.
CREATE TABLE changes (
  user_id         TEXT NOT NULL,
  modseq          INTEGER NOT NULL,
  at              INTEGER NOT NULL,
  object_type     TEXT NOT NULL CHECK (object_type IN ('item', 'folder')),
  object_id       TEXT NOT NULL,
  op              TEXT NOT NULL CHECK (op IN ('created', 'updated', 'moved', 'deleted')),
  folder_id       TEXT,      -- the folder the change happened in (for a move: the destination)
  from_folder_id  TEXT,      -- for a move: the folder the item left
  received_at     INTEGER,   -- the item's sort key, kept for tombstones
  PRIMARY KEY (user_id, modseq)
) STRICT, WITHOUT ROWID;
CREATE INDEX changes_folder ON changes (folder_id, modseq);
CREATE INDEX changes_from_folder ON changes (from_folder_id, modseq) WHERE from_folder_id IS NOT NULL;
CREATE INDEX changes_at ON changes (at);
