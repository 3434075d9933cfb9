-- 0014: background push (issue 20). (PostgreSQL: 0016_background_push.sql, the same change.) Times in ms.
--
-- push_channels: where a device can be woken while the app is suspended — a Web Push subscription, an APNs device
-- token or an FCM registration token — registered by the app (POST /v1/push/channels). `(kind, address)` names it
-- at the gateway; the store keeps it unique by replacing an older row in the unit that registers (a token moved to
-- another account must stop getting the first one's mail).
CREATE TABLE push_channels (
  id                TEXT PRIMARY KEY,
  tenant_id         TEXT NOT NULL,
  user_id           TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  device_record_id  TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
  device_id         TEXT NOT NULL,
  client_id         TEXT NOT NULL,
  session_version   INTEGER NOT NULL,
  kind              TEXT NOT NULL CHECK (kind IN ('webpush', 'apns', 'fcm')),
  address           TEXT NOT NULL,
  keys_json         TEXT NOT NULL DEFAULT '{}',
  events_json       TEXT NOT NULL DEFAULT '[]',
  created_at        INTEGER NOT NULL,
  updated_at        INTEGER NOT NULL,
  last_success_at   INTEGER,
  failures          INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE UNIQUE INDEX push_channels_address ON push_channels (kind, address);
CREATE INDEX push_channels_user ON push_channels (user_id, created_at);
CREATE INDEX push_channels_device ON push_channels (device_record_id);

-- push_outbox: mailboxes that changed since background push last looked, written by the committing transaction
-- itself (only for users with a channel), so a crash right after a commit loses nothing. One row per user: later
-- commits widen its modseq span; the composer takes rows and queues deliveries in one transaction.
CREATE TABLE push_outbox (
  user_id      TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
  from_modseq  INTEGER NOT NULL,
  to_modseq    INTEGER NOT NULL,
  created_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX push_outbox_age ON push_outbox (created_at);

-- push_deliveries: one message for one channel. Unique per (channel, collapse key): a newer message replaces a
-- queued one (coalescing). `sending` rows carry a lease; a crash leaves them to be claimed again when it lapses, with
-- the same id (the gateway's message id), so a resend is recognisable.
CREATE TABLE push_deliveries (
  id            TEXT PRIMARY KEY,
  user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  channel_id    TEXT NOT NULL REFERENCES push_channels(id) ON DELETE CASCADE,
  collapse_key  TEXT NOT NULL,
  message_json  TEXT NOT NULL,
  state         TEXT NOT NULL CHECK (state IN ('queued', 'sending')),
  attempts      INTEGER NOT NULL DEFAULT 0,
  not_before    INTEGER NOT NULL,
  lease_until   INTEGER,
  origin_at     INTEGER NOT NULL,
  created_at    INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX push_deliveries_collapse ON push_deliveries (channel_id, collapse_key);
-- The claim: due rows, soonest first (a lapsed lease is found by not_before, which a claim sets to the lease's end).
CREATE INDEX push_deliveries_due ON push_deliveries (not_before);

-- push_reminders: each event's next reminder (one row per event), and whether it went out.
CREATE TABLE push_reminders (
  user_id           TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  item_id           TEXT NOT NULL,
  occurrence_start  INTEGER NOT NULL,
  due_at            INTEGER NOT NULL,
  sent_at           INTEGER,
  PRIMARY KEY (user_id, item_id)
) STRICT;
CREATE INDEX push_reminders_due ON push_reminders (due_at) WHERE sent_at IS NULL;
