-- 0012: conversations (Organize by Thread): each folder's conversations as rows the store keeps current by itself,
-- and the conversations a user ignores. (PostgreSQL: 0014_conversations.sql, the same change.) Times in ms.
--
-- conversations: one row per (folder, conversation): the aggregate of the folder's mail whose conversation id is the
-- row's (a message without a conversation id is a conversation of its own, named by its item id: the key is
-- coalesce(conversation_id, id)). Events and contacts never count. The triggers below bring the affected row up to
-- date whenever a message arrives, leaves (deleted, moved out), moves in or changes, so every writer of `items` keeps
-- it right without knowing of it. Each change stamps the row with the mailbox modseq of that change: the item's new
-- modseq for an insert or an update, and for a delete the mailbox's highest modseq, which the store takes before it
-- deletes (server/store/sqlite/mail.ts) — so a conversation sync token at M sees every change after M. A row whose
-- last message left stays as a tombstone (message_count 0, its latest_* as they were) until the history horizon
-- passes it (the trigger on mailboxes.purged_modseq below), so sync can tell a device it is gone; a message
-- arriving in it revives it. A folder's rows go with the folder.
--
-- A delivery moves the row on from what it was (below); a recompute reads only the conversation's messages in that
-- folder, through items_folder_conversation (an index on the key expression, newest first, mail only): never a scan
-- of the folder. A rowid table, not WITHOUT ROWID: with up to ten participants a row is larger than SQLite
-- advises for WITHOUT ROWID.
--
-- ignored_conversations: "ignore conversation" — future messages of these conversations go to Deleted Items.
CREATE TABLE conversations (
  folder_id           TEXT NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
  conversation_id     TEXT NOT NULL,
  user_id             TEXT NOT NULL,
  latest_received_at  INTEGER NOT NULL,
  latest_item_id      TEXT NOT NULL,
  message_count       INTEGER NOT NULL,
  unread_count        INTEGER NOT NULL,
  flagged_count       INTEGER NOT NULL,
  has_attachments     INTEGER NOT NULL CHECK (has_attachments IN (0, 1)),
  importance          TEXT NOT NULL CHECK (importance IN ('low', 'normal', 'high')),
  participants        TEXT NOT NULL DEFAULT '[]',   -- JSON array of {name, address}, newest sender first, at most 10
  modseq              INTEGER NOT NULL,
  PRIMARY KEY (folder_id, conversation_id)
) STRICT;
-- Conversation sync's history: the folder's rows changed after a modseq, in modseq order (ties by conversation id).
CREATE INDEX conversations_modseq ON conversations (folder_id, modseq, conversation_id);
-- The conversation window (boundary, range, count): live rows, newest first.
CREATE INDEX conversations_window ON conversations (folder_id, latest_received_at DESC, conversation_id DESC)
  WHERE message_count > 0;
-- The purge of tombstones behind the history horizon, per mailbox.
CREATE INDEX conversations_tombstones ON conversations (user_id, modseq) WHERE message_count = 0;

CREATE TABLE ignored_conversations (
  user_id          TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  conversation_id  TEXT NOT NULL,
  created_at       INTEGER NOT NULL,
  PRIMARY KEY (user_id, conversation_id)
) STRICT, WITHOUT ROWID;

-- A folder's mail of one conversation, newest first: the triggers' recompute and `conversations.itemIds` in a folder.
CREATE INDEX items_folder_conversation ON items (folder_id, coalesce(conversation_id, id), received_at DESC, id DESC)
  WHERE type = 'email';

-- How the triggers keep a row: a message arriving as the newest of its conversation (a delivery), or in a conversation
-- the folder has no message of, and a change of its read or flag state only (the common edits) move the row from
-- what it was, reading no other message. Anything else — a message that leaves (deleted, moved out), arrives older
-- than the conversation's newest (an import), or changes what the aggregate is made of otherwise — recomputes the
-- row from the folder's messages of that conversation, three reads over the key's range of items_folder_conversation:
--   the counts (one pass over the conversation's messages in the folder),
--   the newest message (the first entry of the range),
--   the participants (distinct senders by lower-cased address, each with its newest message, newest first, ten).
-- SQLite has no procedures, so the recompute is spelled out in each trigger that needs it.

-- The new message alone when the folder has no message of its conversation (no row, or a tombstone: it revives);
-- moved on by it when it is the newest (its sender first in the participants, their earlier place dropped); else
-- left for the recompute after it (which is what `latest_item_id <> NEW.id` tells).
CREATE TRIGGER items_conversation_insert AFTER INSERT ON items WHEN NEW.type = 'email'
BEGIN
  INSERT INTO conversations (folder_id, conversation_id, user_id, latest_received_at, latest_item_id, message_count,
    unread_count, flagged_count, has_attachments, importance, participants, modseq)
  VALUES (NEW.folder_id, coalesce(NEW.conversation_id, NEW.id), NEW.user_id, NEW.received_at, NEW.id, 1, NEW.is_read = 0,
    NEW.is_flagged <> 0, NEW.has_attachments <> 0, NEW.importance,
    CASE WHEN json_extract(NEW.from_json, '$.address') IS NULL THEN '[]'
         ELSE json_array(json_object('name', coalesce(json_extract(NEW.from_json, '$.name'), ''),
                                     'address', json_extract(NEW.from_json, '$.address'))) END,
    NEW.modseq)
  ON CONFLICT (folder_id, conversation_id) DO UPDATE SET
    latest_received_at = excluded.latest_received_at,
    latest_item_id = excluded.latest_item_id,
    message_count = message_count + 1,
    unread_count = unread_count + excluded.unread_count,
    flagged_count = flagged_count + excluded.flagged_count,
    has_attachments = max(has_attachments, excluded.has_attachments),
    importance = CASE WHEN message_count = 0 THEN excluded.importance
                      WHEN importance = 'high' OR excluded.importance = 'high' THEN 'high'
                      WHEN importance = 'low' AND excluded.importance = 'low' THEN 'low'
                      ELSE 'normal' END,
    participants = CASE WHEN message_count = 0 THEN excluded.participants ELSE (
      SELECT json_group_array(json(p.value) ORDER BY p.position) FROM (
        SELECT -1 AS position, value FROM json_each(excluded.participants)
        UNION ALL
        SELECT key, value FROM json_each(conversations.participants)
        WHERE lower(json_extract(value, '$.address')) NOT IN
          (SELECT lower(json_extract(value, '$.address')) FROM json_each(excluded.participants))
        ORDER BY position LIMIT 10) AS p) END,
    modseq = excluded.modseq
  WHERE message_count = 0 OR (excluded.latest_received_at, excluded.latest_item_id) > (latest_received_at, latest_item_id);

  UPDATE conversations SET
    (message_count, unread_count, flagged_count, has_attachments, importance) = (
      SELECT count(*), count(*) FILTER (WHERE is_read = 0), count(*) FILTER (WHERE is_flagged = 1),
        count(*) FILTER (WHERE has_attachments <> 0) > 0,
        CASE WHEN count(*) FILTER (WHERE importance = 'high') > 0 THEN 'high'
             WHEN count(*) > 0 AND count(*) FILTER (WHERE importance = 'low') = count(*) THEN 'low'
             ELSE 'normal' END
      FROM items
      WHERE folder_id = NEW.folder_id AND coalesce(conversation_id, id) = coalesce(NEW.conversation_id, NEW.id) AND type = 'email'),
    (latest_received_at, latest_item_id) = (
      SELECT coalesce(max(received_at), conversations.latest_received_at), coalesce(max(id), conversations.latest_item_id) FROM (
        SELECT received_at, id FROM items
        WHERE folder_id = NEW.folder_id AND coalesce(conversation_id, id) = coalesce(NEW.conversation_id, NEW.id) AND type = 'email'
        ORDER BY received_at DESC, id DESC LIMIT 1)),
    participants = (SELECT json_group_array(json_object('name', p.name, 'address', p.address) ORDER BY p.received_at DESC, p.id DESC)
     FROM (SELECT name, address, received_at, id FROM (
             SELECT coalesce(json_extract(from_json, '$.name'), '') AS name, json_extract(from_json, '$.address') AS address,
               received_at, id,
               row_number() OVER (PARTITION BY lower(json_extract(from_json, '$.address')) ORDER BY received_at DESC, id DESC) AS rank
             FROM items
             WHERE folder_id = NEW.folder_id AND coalesce(conversation_id, id) = coalesce(NEW.conversation_id, NEW.id)
               AND type = 'email' AND json_extract(from_json, '$.address') IS NOT NULL)
           WHERE rank = 1 ORDER BY received_at DESC, id DESC LIMIT 10) AS p),
    modseq = NEW.modseq
  WHERE folder_id = NEW.folder_id AND conversation_id = coalesce(NEW.conversation_id, NEW.id)
    AND latest_item_id <> NEW.id;
END;

-- A delete is stamped with the mailbox's highest modseq: the store took the delete's own modseq before deleting.
-- (A mailbox deleted with its user leaves no row to stamp: then the row is going too, and keeps its modseq.)
CREATE TRIGGER items_conversation_delete AFTER DELETE ON items WHEN OLD.type = 'email'
BEGIN
  UPDATE conversations SET
    (message_count, unread_count, flagged_count, has_attachments, importance) = (
      SELECT count(*), count(*) FILTER (WHERE is_read = 0), count(*) FILTER (WHERE is_flagged = 1),
        count(*) FILTER (WHERE has_attachments <> 0) > 0,
        CASE WHEN count(*) FILTER (WHERE importance = 'high') > 0 THEN 'high'
             WHEN count(*) > 0 AND count(*) FILTER (WHERE importance = 'low') = count(*) THEN 'low'
             ELSE 'normal' END
      FROM items
      WHERE folder_id = OLD.folder_id AND coalesce(conversation_id, id) = coalesce(OLD.conversation_id, OLD.id) AND type = 'email'),
    (latest_received_at, latest_item_id) = (
      SELECT coalesce(max(received_at), conversations.latest_received_at), coalesce(max(id), conversations.latest_item_id) FROM (
        SELECT received_at, id FROM items
        WHERE folder_id = OLD.folder_id AND coalesce(conversation_id, id) = coalesce(OLD.conversation_id, OLD.id) AND type = 'email'
        ORDER BY received_at DESC, id DESC LIMIT 1)),
    participants = (SELECT json_group_array(json_object('name', p.name, 'address', p.address) ORDER BY p.received_at DESC, p.id DESC)
     FROM (SELECT name, address, received_at, id FROM (
             SELECT coalesce(json_extract(from_json, '$.name'), '') AS name, json_extract(from_json, '$.address') AS address,
               received_at, id,
               row_number() OVER (PARTITION BY lower(json_extract(from_json, '$.address')) ORDER BY received_at DESC, id DESC) AS rank
             FROM items
             WHERE folder_id = OLD.folder_id AND coalesce(conversation_id, id) = coalesce(OLD.conversation_id, OLD.id)
               AND type = 'email' AND json_extract(from_json, '$.address') IS NOT NULL)
           WHERE rank = 1 ORDER BY received_at DESC, id DESC LIMIT 10) AS p),
    modseq = coalesce((SELECT highest_modseq FROM mailboxes WHERE user_id = OLD.user_id), modseq)
  WHERE folder_id = OLD.folder_id AND conversation_id = coalesce(OLD.conversation_id, OLD.id);
END;

-- An update of the read or flag state only (the same conversation, folder, time, sender, importance, attachments)
-- moves the counts; every update stamps the row with the item's new modseq.
CREATE TRIGGER items_conversation_update_state
AFTER UPDATE OF folder_id, type, is_read, is_flagged, received_at, conversation_id, importance, from_json, has_attachments, modseq
ON items
WHEN OLD.type = 'email' AND NEW.type = 'email' AND OLD.folder_id = NEW.folder_id
  AND coalesce(OLD.conversation_id, OLD.id) = coalesce(NEW.conversation_id, NEW.id) AND OLD.received_at = NEW.received_at
  AND OLD.importance = NEW.importance AND OLD.has_attachments = NEW.has_attachments AND OLD.from_json IS NEW.from_json
BEGIN
  UPDATE conversations SET
    unread_count = unread_count + (NEW.is_read = 0) - (OLD.is_read = 0),
    flagged_count = flagged_count + (NEW.is_flagged <> 0) - (OLD.is_flagged <> 0),
    modseq = NEW.modseq
  WHERE folder_id = NEW.folder_id AND conversation_id = coalesce(NEW.conversation_id, NEW.id);
END;

-- Any other update recomputes: a message that changed folder (or conversation) on both sides, the row it left and
-- then the row it is in now, each stamped with its new modseq.
CREATE TRIGGER items_conversation_update
AFTER UPDATE OF folder_id, type, is_read, is_flagged, received_at, conversation_id, importance, from_json, has_attachments, modseq
ON items
WHEN (OLD.type = 'email' OR NEW.type = 'email') AND NOT (
  OLD.type = 'email' AND NEW.type = 'email' AND OLD.folder_id = NEW.folder_id
  AND coalesce(OLD.conversation_id, OLD.id) = coalesce(NEW.conversation_id, NEW.id) AND OLD.received_at = NEW.received_at
  AND OLD.importance = NEW.importance AND OLD.has_attachments = NEW.has_attachments AND OLD.from_json IS NEW.from_json)
BEGIN
  UPDATE conversations SET
    (message_count, unread_count, flagged_count, has_attachments, importance) = (
      SELECT count(*), count(*) FILTER (WHERE is_read = 0), count(*) FILTER (WHERE is_flagged = 1),
        count(*) FILTER (WHERE has_attachments <> 0) > 0,
        CASE WHEN count(*) FILTER (WHERE importance = 'high') > 0 THEN 'high'
             WHEN count(*) > 0 AND count(*) FILTER (WHERE importance = 'low') = count(*) THEN 'low'
             ELSE 'normal' END
      FROM items
      WHERE folder_id = OLD.folder_id AND coalesce(conversation_id, id) = coalesce(OLD.conversation_id, OLD.id) AND type = 'email'),
    (latest_received_at, latest_item_id) = (
      SELECT coalesce(max(received_at), conversations.latest_received_at), coalesce(max(id), conversations.latest_item_id) FROM (
        SELECT received_at, id FROM items
        WHERE folder_id = OLD.folder_id AND coalesce(conversation_id, id) = coalesce(OLD.conversation_id, OLD.id) AND type = 'email'
        ORDER BY received_at DESC, id DESC LIMIT 1)),
    participants = (SELECT json_group_array(json_object('name', p.name, 'address', p.address) ORDER BY p.received_at DESC, p.id DESC)
     FROM (SELECT name, address, received_at, id FROM (
             SELECT coalesce(json_extract(from_json, '$.name'), '') AS name, json_extract(from_json, '$.address') AS address,
               received_at, id,
               row_number() OVER (PARTITION BY lower(json_extract(from_json, '$.address')) ORDER BY received_at DESC, id DESC) AS rank
             FROM items
             WHERE folder_id = OLD.folder_id AND coalesce(conversation_id, id) = coalesce(OLD.conversation_id, OLD.id)
               AND type = 'email' AND json_extract(from_json, '$.address') IS NOT NULL)
           WHERE rank = 1 ORDER BY received_at DESC, id DESC LIMIT 10) AS p),
    modseq = NEW.modseq
  WHERE folder_id = OLD.folder_id AND conversation_id = coalesce(OLD.conversation_id, OLD.id)
    AND OLD.type = 'email'
    AND (NEW.type <> 'email' OR OLD.folder_id <> NEW.folder_id OR coalesce(OLD.conversation_id, OLD.id) <> coalesce(NEW.conversation_id, NEW.id));

  INSERT INTO conversations (folder_id, conversation_id, user_id, latest_received_at, latest_item_id, message_count,
    unread_count, flagged_count, has_attachments, importance, participants, modseq)
  SELECT NEW.folder_id, coalesce(NEW.conversation_id, NEW.id), NEW.user_id, l.received_at, l.id, a.n, a.unread,
    a.flagged, a.attachments, a.importance,
    (SELECT json_group_array(json_object('name', p.name, 'address', p.address) ORDER BY p.received_at DESC, p.id DESC)
     FROM (SELECT name, address, received_at, id FROM (
             SELECT coalesce(json_extract(from_json, '$.name'), '') AS name, json_extract(from_json, '$.address') AS address,
               received_at, id,
               row_number() OVER (PARTITION BY lower(json_extract(from_json, '$.address')) ORDER BY received_at DESC, id DESC) AS rank
             FROM items
             WHERE folder_id = NEW.folder_id AND coalesce(conversation_id, id) = coalesce(NEW.conversation_id, NEW.id)
               AND type = 'email' AND json_extract(from_json, '$.address') IS NOT NULL)
           WHERE rank = 1 ORDER BY received_at DESC, id DESC LIMIT 10) AS p),
    NEW.modseq
  FROM (SELECT count(*) AS n, count(*) FILTER (WHERE is_read = 0) AS unread, count(*) FILTER (WHERE is_flagged = 1) AS flagged,
          count(*) FILTER (WHERE has_attachments <> 0) > 0 AS attachments,
          CASE WHEN count(*) FILTER (WHERE importance = 'high') > 0 THEN 'high'
               WHEN count(*) > 0 AND count(*) FILTER (WHERE importance = 'low') = count(*) THEN 'low'
               ELSE 'normal' END AS importance
        FROM items
        WHERE folder_id = NEW.folder_id AND coalesce(conversation_id, id) = coalesce(NEW.conversation_id, NEW.id) AND type = 'email') AS a,
       (SELECT received_at, id FROM items
        WHERE folder_id = NEW.folder_id AND coalesce(conversation_id, id) = coalesce(NEW.conversation_id, NEW.id) AND type = 'email'
        ORDER BY received_at DESC, id DESC LIMIT 1) AS l
  WHERE NEW.type = 'email'
  ON CONFLICT (folder_id, conversation_id) DO UPDATE SET
    latest_received_at = excluded.latest_received_at, latest_item_id = excluded.latest_item_id,
    message_count = excluded.message_count, unread_count = excluded.unread_count, flagged_count = excluded.flagged_count,
    has_attachments = excluded.has_attachments, importance = excluded.importance, participants = excluded.participants,
    modseq = excluded.modseq;
END;

-- Tombstones behind the history horizon go with it: a token at or below `purged_modseq` answers 410, so no sync
-- can still need to be told of a conversation that left at or before it (mailboxes.purgeHistory moves it).
CREATE TRIGGER mailboxes_conversation_horizon AFTER UPDATE OF purged_modseq ON mailboxes
WHEN NEW.purged_modseq > OLD.purged_modseq
BEGIN
  DELETE FROM conversations WHERE user_id = NEW.user_id AND message_count = 0 AND modseq <= NEW.purged_modseq;
END;

-- The mail already in the store: one row per (folder, conversation), stamped with the newest modseq of its messages.
INSERT INTO conversations (folder_id, conversation_id, user_id, latest_received_at, latest_item_id, message_count,
  unread_count, flagged_count, has_attachments, importance, participants, modseq)
SELECT g.folder_id, g.conversation_id, g.user_id,
  (SELECT received_at FROM items
   WHERE folder_id = g.folder_id AND coalesce(conversation_id, id) = g.conversation_id AND type = 'email'
   ORDER BY received_at DESC, id DESC LIMIT 1),
  (SELECT id FROM items
   WHERE folder_id = g.folder_id AND coalesce(conversation_id, id) = g.conversation_id AND type = 'email'
   ORDER BY received_at DESC, id DESC LIMIT 1),
  g.n, g.unread, g.flagged, g.attachments, g.importance,
  (SELECT json_group_array(json_object('name', p.name, 'address', p.address) ORDER BY p.received_at DESC, p.id DESC)
   FROM (SELECT name, address, received_at, id FROM (
           SELECT coalesce(json_extract(from_json, '$.name'), '') AS name, json_extract(from_json, '$.address') AS address,
             received_at, id,
             row_number() OVER (PARTITION BY lower(json_extract(from_json, '$.address')) ORDER BY received_at DESC, id DESC) AS rank
           FROM items
           WHERE folder_id = g.folder_id AND coalesce(conversation_id, id) = g.conversation_id
             AND type = 'email' AND json_extract(from_json, '$.address') IS NOT NULL)
         WHERE rank = 1 ORDER BY received_at DESC, id DESC LIMIT 10) AS p),
  g.modseq
FROM (SELECT folder_id, coalesce(conversation_id, id) AS conversation_id, min(user_id) AS user_id, count(*) AS n,
        count(*) FILTER (WHERE is_read = 0) AS unread, count(*) FILTER (WHERE is_flagged = 1) AS flagged,
        count(*) FILTER (WHERE has_attachments <> 0) > 0 AS attachments,
        CASE WHEN count(*) FILTER (WHERE importance = 'high') > 0 THEN 'high'
             WHEN count(*) FILTER (WHERE importance = 'low') = count(*) THEN 'low'
             ELSE 'normal' END AS importance,
        max(modseq) AS modseq
      FROM items WHERE type = 'email'
      GROUP BY folder_id, coalesce(conversation_id, id)) AS g;
