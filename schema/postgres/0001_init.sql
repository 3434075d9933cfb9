-- 0001: the foundation schema, as schema/sqlite/0001_init.sql in PostgreSQL's types and keyed for locality
-- (README.md: every primary key starts with the table's distribution key). Never edit this file once landed; add a
-- new file instead, under the same name in both folders.
-- Times are BIGINT milliseconds since the epoch (UTC); ids are opaque random text. Every text column is COLLATE "C":
-- SQLite compares text bytewise, ids break the ties of sort keys, and both backends must order alike.

-- SQLite's NOCASE: folds ASCII letters only, whatever the database's locale (usernames and addresses).
CREATE FUNCTION nocase(t TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$ SELECT translate(t, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') $$;

-- Global.
CREATE TABLE tenants (
  id          TEXT COLLATE "C" PRIMARY KEY,
  name        TEXT COLLATE "C" NOT NULL,
  created_at  BIGINT NOT NULL
);

-- Tenant data.
CREATE TABLE users (
  tenant_id       TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
  id              TEXT COLLATE "C" NOT NULL,
  username        TEXT COLLATE "C" NOT NULL,
  email           TEXT COLLATE "C" NOT NULL,
  display_name    TEXT COLLATE "C" NOT NULL,
  role            TEXT COLLATE "C" NOT NULL CHECK (role IN ('user', 'admin')),
  password_hash   TEXT COLLATE "C",              -- scrypt, self-describing string; NULL = no password sign-in
  -- Bumped by a password change or "revoke sessions": access tokens carry it (`sv`) and die when it moves.
  session_version INTEGER NOT NULL DEFAULT 0,
  disabled        BOOLEAN NOT NULL DEFAULT false,
  created_at      BIGINT NOT NULL,
  updated_at      BIGINT NOT NULL,
  PRIMARY KEY (tenant_id, id)
);
-- Sign-in and token checks know the user id only.
CREATE INDEX users_id ON users (id);
-- Usernames are unique across tenants (a sign-in names no tenant): a global unique index (README.md).
CREATE UNIQUE INDEX users_username ON users (nocase(username));

-- Mailbox data. One mailbox per user. `highest_modseq` is the per-mailbox change counter: every change takes the next
-- value in the same transaction by updating this row, whose lock orders the mailbox's writers (server/store/postgres/
-- mail.ts). `epoch` changes when the mailbox's sync state is reset: tokens carry it and die with it. No foreign key
-- to users: a mailbox is distributed by its own user id, users by tenant (README.md).
CREATE TABLE mailboxes (
  user_id         TEXT COLLATE "C" PRIMARY KEY,
  highest_modseq  BIGINT NOT NULL DEFAULT 0,
  -- Change-log rows up to this modseq have been purged (history horizon): older sync tokens answer 410.
  purged_modseq   BIGINT NOT NULL DEFAULT 0,
  epoch           TEXT COLLATE "C" NOT NULL,
  created_at      BIGINT NOT NULL
);

-- A user's devices and sign-ins are keyed by the user (the mailbox's key), but a user may have them before a mailbox,
-- so they reference nothing.
CREATE TABLE devices (
  user_id                 TEXT COLLATE "C" NOT NULL,
  id                      TEXT COLLATE "C" NOT NULL,   -- the record id (a device id alone is not unique across users)
  device_id               TEXT COLLATE "C" NOT NULL,   -- the app-generated X-Device-Id
  friendly_name           TEXT COLLATE "C",
  device_type             TEXT COLLATE "C",
  device_model            TEXT COLLATE "C",
  device_os               TEXT COLLATE "C",
  client_type             TEXT COLLATE "C",
  client_version          TEXT COLLATE "C",
  user_agent              TEXT COLLATE "C",
  capabilities            JSONB NOT NULL DEFAULT '[]',  -- array of strings
  admin_decision          TEXT COLLATE "C" CHECK (admin_decision IN ('allowed', 'blocked', 'quarantined')),
  wipe_state              TEXT COLLATE "C" NOT NULL DEFAULT 'none'
                          CHECK (wipe_state IN ('none', 'pending', 'acknowledged', 'failed')),
  wipe_requested_at       BIGINT,
  wipe_requested_by       TEXT COLLATE "C",
  wipe_acknowledged_at    BIGINT,
  epoch                   INTEGER NOT NULL DEFAULT 0,   -- bumped by an admin "resync": the device's tokens die
  first_sync_time         BIGINT NOT NULL,
  last_sync_attempt_time  BIGINT,
  last_success_sync_time  BIGINT,
  created_at              BIGINT NOT NULL,
  updated_at              BIGINT NOT NULL,
  PRIMARY KEY (user_id, id),
  UNIQUE (user_id, device_id)
);
CREATE INDEX devices_id ON devices (id);

-- Refresh tokens: only a hash is stored. A family is one sign-in; every rotation adds a row to it, and presenting a
-- rotated member revokes the whole family (reuse detection).
CREATE TABLE refresh_tokens (
  user_id        TEXT COLLATE "C" NOT NULL,
  id             TEXT COLLATE "C" NOT NULL,
  family_id      TEXT COLLATE "C" NOT NULL,
  device_id      TEXT COLLATE "C",            -- the X-Device-Id the family is bound to, if any
  client_id      TEXT COLLATE "C" NOT NULL,
  scope          TEXT COLLATE "C" NOT NULL,
  token_hash     BYTEA NOT NULL,
  created_at     BIGINT NOT NULL,
  expires_at     BIGINT NOT NULL,             -- sliding: each rotation issues a successor valid for the full lifetime
  rotated_at     BIGINT,                      -- set when this token was exchanged for `replaced_by`
  replaced_by    TEXT COLLATE "C",
  revoked_at     BIGINT,
  revoked_reason TEXT COLLATE "C",
  PRIMARY KEY (user_id, id)
);
CREATE INDEX refresh_tokens_id ON refresh_tokens (id);
-- A presented token names no user: its hash finds it, and must find one row (a global unique index, README.md).
CREATE UNIQUE INDEX refresh_tokens_hash ON refresh_tokens (token_hash);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

CREATE TABLE folders (
  user_id        TEXT COLLATE "C" NOT NULL REFERENCES mailboxes (user_id),
  id             TEXT COLLATE "C" NOT NULL,
  parent_id      TEXT COLLATE "C",
  display_name   TEXT COLLATE "C" NOT NULL,
  kind           TEXT COLLATE "C" NOT NULL CHECK (kind IN ('inbox', 'drafts', 'sentItems', 'deletedItems', 'junkEmail',
                                                           'archive', 'outbox', 'calendar', 'contacts', 'mail')),
  total_count    INTEGER NOT NULL DEFAULT 0,
  unread_count   INTEGER NOT NULL DEFAULT 0,
  modseq         BIGINT NOT NULL,   -- last hierarchy-visible change (name, parent, counts)
  created_modseq BIGINT NOT NULL,   -- when it was created: hierarchy sync tells created from updated
  -- Last change to the folder's items (arrival, edit, move in or out, delete): a sync poll whose token is at or past
  -- it has nothing to replay, which makes the no-change poll one row read.
  content_modseq BIGINT NOT NULL DEFAULT 0,
  created_at     BIGINT NOT NULL,
  PRIMARY KEY (user_id, id),
  FOREIGN KEY (user_id, parent_id) REFERENCES folders (user_id, id)
);
CREATE INDEX folders_user ON folders (user_id, modseq, id);
-- At most one well-known folder of each kind per mailbox.
CREATE UNIQUE INDEX folders_well_known ON folders (user_id, kind) WHERE kind <> 'mail';

-- Content-addressed blobs of one user (raw messages, attachments): id = sha256 hex of the bytes. The bytes arrive in
-- 0004 (blob_chunks). A user may store one before having a mailbox: no foreign key to mailboxes.
CREATE TABLE blobs (
  user_id     TEXT COLLATE "C" NOT NULL,
  id          TEXT COLLATE "C" NOT NULL,
  size        BIGINT NOT NULL,
  created_at  BIGINT NOT NULL,
  PRIMARY KEY (user_id, id)
);

CREATE TABLE items (
  user_id              TEXT COLLATE "C" NOT NULL,
  id                   TEXT COLLATE "C" NOT NULL,
  folder_id            TEXT COLLATE "C" NOT NULL,
  type                 TEXT COLLATE "C" NOT NULL CHECK (type IN ('email', 'event', 'contact')),
  received_at          BIGINT NOT NULL,   -- sort key with id: the window is the newest (received_at, id)
  modseq               BIGINT NOT NULL,   -- last change to this item
  placed_modseq        BIGINT NOT NULL,   -- when it entered its current folder (created or moved in)
  change_key           TEXT COLLATE "C" NOT NULL,
  is_read              BOOLEAN NOT NULL DEFAULT false,
  is_flagged           BOOLEAN NOT NULL DEFAULT false,
  importance           TEXT COLLATE "C" NOT NULL DEFAULT 'normal' CHECK (importance IN ('low', 'normal', 'high')),
  categories           JSONB NOT NULL DEFAULT '[]',
  inference            TEXT COLLATE "C" NOT NULL DEFAULT 'focused' CHECK (inference IN ('focused', 'other')),
  subject              TEXT COLLATE "C" NOT NULL DEFAULT '',
  from_json            JSONB,             -- {name, address}
  to_json              JSONB NOT NULL DEFAULT '[]',
  cc_json              JSONB NOT NULL DEFAULT '[]',
  reply_to_json        JSONB NOT NULL DEFAULT '[]',
  sent_at              BIGINT,
  preview              TEXT COLLATE "C" NOT NULL DEFAULT '',
  has_attachments      BOOLEAN NOT NULL DEFAULT false,
  body_size            BIGINT NOT NULL DEFAULT 0,
  conversation_id      TEXT COLLATE "C",
  internet_message_id  TEXT COLLATE "C",
  mime_blob_id         TEXT COLLATE "C",
  body_text            TEXT COLLATE "C",
  body_html            TEXT COLLATE "C",
  attachments_json     JSONB NOT NULL DEFAULT '[]',  -- the attachment list as sync shows it (one read per page)
  data_json            JSONB NOT NULL DEFAULT '{}',  -- type-specific fields of events and contacts
  created_at           BIGINT NOT NULL,
  PRIMARY KEY (user_id, id),
  FOREIGN KEY (user_id, folder_id) REFERENCES folders (user_id, id),
  FOREIGN KEY (user_id, mime_blob_id) REFERENCES blobs (user_id, id)
);
CREATE INDEX items_window ON items (user_id, folder_id, received_at DESC, id DESC);
CREATE INDEX items_folder_modseq ON items (user_id, folder_id, modseq);
CREATE INDEX items_user_modseq ON items (user_id, modseq);
CREATE INDEX items_message_id ON items (user_id, internet_message_id);
CREATE INDEX items_conversation ON items (user_id, conversation_id);

CREATE TABLE attachments (
  user_id       TEXT COLLATE "C" NOT NULL,
  item_id       TEXT COLLATE "C" NOT NULL,
  id            TEXT COLLATE "C" NOT NULL,
  blob_id       TEXT COLLATE "C" NOT NULL,
  name          TEXT COLLATE "C" NOT NULL,
  content_type  TEXT COLLATE "C" NOT NULL,
  size          BIGINT NOT NULL,
  is_inline     BOOLEAN NOT NULL DEFAULT false,
  content_id    TEXT COLLATE "C",
  position      INTEGER NOT NULL,
  PRIMARY KEY (user_id, item_id, id),
  FOREIGN KEY (user_id, item_id) REFERENCES items (user_id, id) ON DELETE CASCADE,
  FOREIGN KEY (user_id, blob_id) REFERENCES blobs (user_id, id)
);

-- The change log: one row per change, one modseq per row (unique within the mailbox). It is the history that
-- incremental sync reads and where tombstones live: a deleted or moved-away item leaves its row here with the folder
-- it left and its sort key, so a device can be told about it only when it could hold it. Rows older than the history
-- horizon are purged; tokens older than the horizon get 410.
CREATE TABLE changes (
  user_id         TEXT COLLATE "C" NOT NULL REFERENCES mailboxes (user_id),
  modseq          BIGINT NOT NULL,
  at              BIGINT NOT NULL,
  object_type     TEXT COLLATE "C" NOT NULL CHECK (object_type IN ('item', 'folder')),
  object_id       TEXT COLLATE "C" NOT NULL,
  op              TEXT COLLATE "C" NOT NULL CHECK (op IN ('created', 'updated', 'moved', 'deleted')),
  folder_id       TEXT COLLATE "C",      -- the folder the change happened in (for a move: the destination)
  from_folder_id  TEXT COLLATE "C",      -- for a move: the folder the item left
  received_at     BIGINT,                -- the item's sort key, kept for tombstones
  PRIMARY KEY (user_id, modseq)
);
CREATE INDEX changes_folder ON changes (user_id, folder_id, modseq);
CREATE INDEX changes_from_folder ON changes (user_id, from_folder_id, modseq) WHERE from_folder_id IS NOT NULL;
-- The history purge runs over every mailbox by age (maintenance, not a hot path).
CREATE INDEX changes_at ON changes (at);
