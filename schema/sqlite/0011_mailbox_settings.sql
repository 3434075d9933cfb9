-- 0011: mailbox views (issue 19): a mailbox's settings document, the automatic replies owed and sent, shared
-- mailboxes and their members, per-device view settings with the reason of a device's last reset, and the lookups
-- Focused Inbox makes at delivery (mail from a sender, a sender among the user's contacts).
-- (PostgreSQL: 0013_mailbox_settings.sql, the same change.) Times in ms.
--
-- mailbox_settings: one JSON document per mailbox (server/mailbox/settings.ts owns its shape), changed by
-- compare-and-set on the version as `access_config` is, so two changes from one version cannot lose each other.
-- Kept as the exact text that was stored.
--
-- auto_replies: one automatic reply owed or sent per (mailbox, period, sender): the unique key is the rule "one
-- reply per sender per period", so a claim is one INSERT that either wins or finds the sender answered. The relay
-- reads the pending ones oldest first (partial index); finished ones are purged by age (partial index).
--
-- shared_mailboxes: users (with their mailboxes) that are shared mailboxes, with their tenant (copied from the user
-- row at creation: listing a tenant's shared mailboxes is then one range). shared_mailbox_members: who may open
-- each and with which rights; looked up by mailbox (the primary key) and by member (which shared mailboxes a user
-- sees). A member belongs to the mailbox's tenant (the store checks it when it writes a membership).
--
-- devices.view_settings: what the app shows (Focused Inbox, conversations) as a JSON object; read leniently (a member
-- missing reads as its default). devices.reset_reason: why the epoch last moved (`viewChanged`: a soft reset; NULL:
-- a reset of the device's sync state).
--
-- items_sender: `items.fromSender` is a range of this index (the user, the sender's address folded as lower()
-- folds it, newest first), over mail only. items_contacts: `items.hasContactAddress` reads the user's contacts only.
CREATE TABLE mailbox_settings (
  user_id     TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
  version     INTEGER NOT NULL CHECK (version > 0),
  doc         TEXT NOT NULL,
  updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE auto_replies (
  id          TEXT PRIMARY KEY,
  user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  period      TEXT NOT NULL,
  sender      TEXT NOT NULL,               -- lower case
  item_id     TEXT NOT NULL,               -- the message answered (no reference: it may be deleted meanwhile)
  state       TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'skipped')),
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  UNIQUE (user_id, period, sender)
) STRICT;
CREATE INDEX auto_replies_pending ON auto_replies (state, created_at, id) WHERE state = 'pending';
CREATE INDEX auto_replies_finished ON auto_replies (updated_at) WHERE state <> 'pending';

CREATE TABLE shared_mailboxes (
  user_id     TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
  tenant_id   TEXT NOT NULL,
  created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX shared_mailboxes_tenant ON shared_mailboxes (tenant_id);

CREATE TABLE shared_mailbox_members (
  mailbox_id      TEXT NOT NULL REFERENCES shared_mailboxes(user_id) ON DELETE CASCADE,
  member_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  full_access     INTEGER NOT NULL CHECK (full_access IN (0, 1)),
  send_as         INTEGER NOT NULL CHECK (send_as IN (0, 1)),
  send_on_behalf  INTEGER NOT NULL CHECK (send_on_behalf IN (0, 1)),
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL,
  PRIMARY KEY (mailbox_id, member_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX shared_mailbox_members_member ON shared_mailbox_members (member_id);

ALTER TABLE devices ADD COLUMN view_settings TEXT NOT NULL DEFAULT '{"focusedInbox":true,"threaded":false}';
ALTER TABLE devices ADD COLUMN reset_reason TEXT;

CREATE INDEX items_sender ON items (user_id, lower(json_extract(from_json, '$.address')), received_at DESC, id DESC)
  WHERE type = 'email';
CREATE INDEX items_contacts ON items (user_id) WHERE type = 'contact';
