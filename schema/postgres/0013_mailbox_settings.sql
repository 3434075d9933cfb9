-- 0013: mailbox views (issue 19): a mailbox's settings document, the automatic replies owed and sent, shared
-- mailboxes and their members, per-device view settings with the reason of a device's last reset, and the lookups
-- Focused Inbox makes at delivery (SQLite: 0011_mailbox_settings.sql, which says what each table holds).
--
-- Keying (README.md): `mailbox_settings` and `auto_replies` are mailbox data (keyed by `user_id`, referencing
-- nothing, as `mailboxes` does); the relay's read of every mailbox's pending replies and a reply's lookup by id are
-- secondary indexes (multi-shard on Citus, like `outbox`'s, off the per-message path). `shared_mailboxes` and
-- `shared_mailbox_members` are tenant data (keyed by `tenant_id`): a membership joins a mailbox and a member of one
-- tenant, which the foreign keys hold here (both carry the tenant). The lookups by mailbox or member id alone are
-- secondary indexes.
--
-- The settings document is TEXT, not JSONB, as in `access_config`: it is answered exactly as it was stored.
-- devices.view_settings is JSONB (read leniently: a member missing reads as its default).
--
-- items_sender folds the address with nocase() (ASCII only, as SQLite's lower()), so both backends match alike.
CREATE TABLE mailbox_settings (
  user_id     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  version     INTEGER NOT NULL CHECK (version > 0),
  doc         TEXT COLLATE "C" NOT NULL,
  updated_at  BIGINT NOT NULL
);

CREATE TABLE auto_replies (
  user_id     TEXT COLLATE "C" NOT NULL,
  id          TEXT COLLATE "C" NOT NULL,
  period      TEXT COLLATE "C" NOT NULL,
  sender      TEXT COLLATE "C" NOT NULL,   -- lower case
  item_id     TEXT COLLATE "C" NOT NULL,   -- the message answered (no reference: it may be deleted meanwhile)
  state       TEXT COLLATE "C" NOT NULL CHECK (state IN ('pending', 'sent', 'skipped')),
  created_at  BIGINT NOT NULL,
  updated_at  BIGINT NOT NULL,
  PRIMARY KEY (user_id, id),
  UNIQUE (user_id, period, sender)
);
CREATE INDEX auto_replies_id ON auto_replies (id);
CREATE INDEX auto_replies_pending ON auto_replies (state, created_at, id) WHERE state = 'pending';
CREATE INDEX auto_replies_finished ON auto_replies (updated_at) WHERE state <> 'pending';

CREATE TABLE shared_mailboxes (
  tenant_id   TEXT COLLATE "C" NOT NULL,
  user_id     TEXT COLLATE "C" NOT NULL,
  created_at  BIGINT NOT NULL,
  PRIMARY KEY (tenant_id, user_id),
  FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX shared_mailboxes_user ON shared_mailboxes (user_id);

CREATE TABLE shared_mailbox_members (
  tenant_id       TEXT COLLATE "C" NOT NULL,
  mailbox_id      TEXT COLLATE "C" NOT NULL,
  member_id       TEXT COLLATE "C" NOT NULL,
  full_access     BOOLEAN NOT NULL,
  send_as         BOOLEAN NOT NULL,
  send_on_behalf  BOOLEAN NOT NULL,
  created_at      BIGINT NOT NULL,
  updated_at      BIGINT NOT NULL,
  PRIMARY KEY (tenant_id, mailbox_id, member_id),
  FOREIGN KEY (tenant_id, mailbox_id) REFERENCES shared_mailboxes (tenant_id, user_id) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, member_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX shared_mailbox_members_mailbox ON shared_mailbox_members (mailbox_id, member_id);
CREATE INDEX shared_mailbox_members_member ON shared_mailbox_members (member_id);

ALTER TABLE devices ADD COLUMN view_settings JSONB NOT NULL DEFAULT '{"focusedInbox":true,"threaded":false}';
ALTER TABLE devices ADD COLUMN reset_reason TEXT COLLATE "C";

CREATE INDEX items_sender ON items (user_id, nocase(from_json ->> 'address'), received_at DESC, id DESC) WHERE type = 'email';
CREATE INDEX items_contacts ON items (user_id) WHERE type = 'contact';
