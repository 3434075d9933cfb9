-- 0016: background push, as schema/sqlite/0014_background_push.sql (which says what each table holds). Mailbox data,
-- keyed by `user_id` (schema/postgres/README.md). `(kind, address)` of a channel is kept unique by the store in the
-- unit that registers, through the plain index below (a unique index on it alone would span distribution keys).
-- A claim of the delivery queue scans `push_deliveries_due` across mailboxes with FOR UPDATE SKIP LOCKED, so
-- several drainers (the nodes' leaders) never claim the same message.
CREATE TABLE push_channels (
  user_id           TEXT COLLATE "C" NOT NULL,
  id                TEXT COLLATE "C" NOT NULL,
  tenant_id         TEXT COLLATE "C" NOT NULL,
  device_record_id  TEXT COLLATE "C" NOT NULL,
  device_id         TEXT COLLATE "C" NOT NULL,
  client_id         TEXT COLLATE "C" NOT NULL,
  session_version   INTEGER NOT NULL,
  kind              TEXT COLLATE "C" NOT NULL CHECK (kind IN ('webpush', 'apns', 'fcm')),
  address           TEXT COLLATE "C" NOT NULL,
  keys              JSONB NOT NULL DEFAULT '{}',
  events            JSONB NOT NULL DEFAULT '[]',
  created_at        BIGINT NOT NULL,
  updated_at        BIGINT NOT NULL,
  last_success_at   BIGINT,
  failures          INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (user_id, id),
  FOREIGN KEY (user_id, device_record_id) REFERENCES devices (user_id, id) ON DELETE CASCADE
);
CREATE INDEX push_channels_address ON push_channels (kind, address);
CREATE INDEX push_channels_user ON push_channels (user_id, created_at);
CREATE INDEX push_channels_device ON push_channels (user_id, device_record_id);

CREATE TABLE push_outbox (
  user_id      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  from_modseq  BIGINT NOT NULL,
  to_modseq    BIGINT NOT NULL,
  created_at   BIGINT NOT NULL
);
CREATE INDEX push_outbox_age ON push_outbox (created_at);

CREATE TABLE push_deliveries (
  user_id       TEXT COLLATE "C" NOT NULL,
  id            TEXT COLLATE "C" NOT NULL,
  channel_id    TEXT COLLATE "C" NOT NULL,
  collapse_key  TEXT COLLATE "C" NOT NULL,
  message       JSONB NOT NULL,
  state         TEXT COLLATE "C" NOT NULL CHECK (state IN ('queued', 'sending')),
  attempts      INTEGER NOT NULL DEFAULT 0,
  not_before    BIGINT NOT NULL,
  lease_until   BIGINT,
  origin_at     BIGINT NOT NULL,
  created_at    BIGINT NOT NULL,
  PRIMARY KEY (user_id, id),
  FOREIGN KEY (user_id, channel_id) REFERENCES push_channels (user_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX push_deliveries_collapse ON push_deliveries (user_id, channel_id, collapse_key);
CREATE INDEX push_deliveries_due ON push_deliveries (not_before);

CREATE TABLE push_reminders (
  user_id           TEXT COLLATE "C" NOT NULL,
  item_id           TEXT COLLATE "C" NOT NULL,
  occurrence_start  BIGINT NOT NULL,
  due_at            BIGINT NOT NULL,
  sent_at           BIGINT,
  PRIMARY KEY (user_id, item_id)
);
CREATE INDEX push_reminders_due ON push_reminders (due_at) WHERE sent_at IS NULL;
