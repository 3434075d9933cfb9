-- 0014: conversations (Organize by Thread), as schema/sqlite/0012_conversations.sql (which says what the rows mean)
-- in PostgreSQL's types, keyed by the mailbox (README.md). Never edit this file once landed.
--
-- conversations: one row per (mailbox, folder, conversation), kept current by the statement triggers on `items`
-- below: a statement of one message takes SQLite's fast paths (a delivery of the newest message, a read or flag
-- change); otherwise each of the statement's affected conversations (from its transition tables) is recomputed once,
-- so deleting a folder's thousand messages recomputes each of its conversations once, not once per message. The
-- stamps are SQLite's: an insert or an update stamps the item's new modseq; a delete the mailbox's highest modseq,
-- which the store takes before it deletes (server/store/postgres/mail.ts `items.delete`). A folder's rows go with
-- the folder.
--
-- ignored_conversations: mailbox data like the rest, so it references the mailbox, not `users` (tenant data).
CREATE TABLE conversations (
  user_id             TEXT COLLATE "C" NOT NULL,
  folder_id           TEXT COLLATE "C" NOT NULL,
  conversation_id     TEXT COLLATE "C" NOT NULL,
  latest_received_at  BIGINT NOT NULL,
  latest_item_id      TEXT COLLATE "C" NOT NULL,
  message_count       INTEGER NOT NULL,
  unread_count        INTEGER NOT NULL,
  flagged_count       INTEGER NOT NULL,
  has_attachments     BOOLEAN NOT NULL,
  importance          TEXT COLLATE "C" NOT NULL CHECK (importance IN ('low', 'normal', 'high')),
  participants        JSONB NOT NULL DEFAULT '[]',   -- array of {name, address}, newest sender first, at most 10
  modseq              BIGINT NOT NULL,
  PRIMARY KEY (user_id, folder_id, conversation_id),
  FOREIGN KEY (user_id, folder_id) REFERENCES folders (user_id, id) ON DELETE CASCADE
);
CREATE INDEX conversations_modseq ON conversations (user_id, folder_id, modseq, conversation_id);
CREATE INDEX conversations_window ON conversations (user_id, folder_id, latest_received_at DESC, conversation_id DESC)
  WHERE message_count > 0;
CREATE INDEX conversations_tombstones ON conversations (user_id, modseq) WHERE message_count = 0;

CREATE TABLE ignored_conversations (
  user_id          TEXT COLLATE "C" NOT NULL REFERENCES mailboxes (user_id) ON DELETE CASCADE,
  conversation_id  TEXT COLLATE "C" NOT NULL,
  created_at       BIGINT NOT NULL,
  PRIMARY KEY (user_id, conversation_id)
);

-- A folder's mail of one conversation, newest first: the recompute and `conversations.itemIds` in a folder.
CREATE INDEX items_folder_conversation ON items (user_id, folder_id, (coalesce(conversation_id, id)), received_at DESC, id DESC)
  WHERE type = 'email';

-- A conversation to recompute, and the modseq to stamp it with.
CREATE TYPE conversation_key AS (
  user_id          TEXT COLLATE "C",
  folder_id        TEXT COLLATE "C",
  conversation_id  TEXT COLLATE "C",
  modseq           BIGINT
);

-- Recomputes each key's row from the folder's mail of that conversation (index range scans over that conversation
-- only): an existing row is updated (to a tombstone when no message is left, its latest_* kept); a missing one is
-- inserted when the conversation has a message. Keys are distinct.
CREATE FUNCTION conversations_refresh(keys conversation_key[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  WITH k AS (SELECT * FROM unnest(keys)),
  a AS (
    SELECT k.user_id, k.folder_id, k.conversation_id, k.modseq, s.message_count, s.unread_count, s.flagged_count,
      s.has_attachments, s.importance, l.received_at AS latest_received_at, l.id AS latest_item_id, p.participants
    FROM k
    CROSS JOIN LATERAL (
      SELECT count(*) AS message_count, count(*) FILTER (WHERE NOT i.is_read) AS unread_count,
        count(*) FILTER (WHERE i.is_flagged) AS flagged_count, coalesce(bool_or(i.has_attachments), false) AS has_attachments,
        CASE WHEN bool_or(i.importance = 'high') THEN 'high'
             WHEN bool_and(i.importance = 'low') THEN 'low'
             ELSE 'normal' END AS importance
      FROM items i
      WHERE i.user_id = k.user_id AND i.folder_id = k.folder_id AND coalesce(i.conversation_id, i.id) = k.conversation_id
        AND i.type = 'email') AS s
    LEFT JOIN LATERAL (
      SELECT i.received_at, i.id FROM items i
      WHERE i.user_id = k.user_id AND i.folder_id = k.folder_id AND coalesce(i.conversation_id, i.id) = k.conversation_id
        AND i.type = 'email'
      ORDER BY i.received_at DESC, i.id DESC LIMIT 1) AS l ON true
    CROSS JOIN LATERAL (
      SELECT coalesce(jsonb_agg(jsonb_build_object('name', d.name, 'address', d.address) ORDER BY d.received_at DESC, d.id DESC), '[]') AS participants
      FROM (
        SELECT * FROM (
          SELECT DISTINCT ON (nocase(i.from_json->>'address')) coalesce(i.from_json->>'name', '') AS name,
            i.from_json->>'address' AS address, i.received_at, i.id
          FROM items i
          WHERE i.user_id = k.user_id AND i.folder_id = k.folder_id AND coalesce(i.conversation_id, i.id) = k.conversation_id
            AND i.type = 'email' AND i.from_json->>'address' IS NOT NULL
          ORDER BY nocase(i.from_json->>'address'), i.received_at DESC, i.id DESC) AS senders
        ORDER BY received_at DESC, id DESC LIMIT 10) AS d) AS p
  ),
  updated AS (
    UPDATE conversations c SET
      latest_received_at = coalesce(a.latest_received_at, c.latest_received_at),
      latest_item_id = coalesce(a.latest_item_id, c.latest_item_id),
      message_count = a.message_count, unread_count = a.unread_count, flagged_count = a.flagged_count,
      has_attachments = a.has_attachments, importance = a.importance, participants = a.participants, modseq = a.modseq
    FROM a
    WHERE c.user_id = a.user_id AND c.folder_id = a.folder_id AND c.conversation_id = a.conversation_id
    RETURNING c.user_id, c.folder_id, c.conversation_id
  )
  INSERT INTO conversations (user_id, folder_id, conversation_id, latest_received_at, latest_item_id, message_count,
    unread_count, flagged_count, has_attachments, importance, participants, modseq)
  SELECT a.user_id, a.folder_id, a.conversation_id, a.latest_received_at, a.latest_item_id, a.message_count,
    a.unread_count, a.flagged_count, a.has_attachments, a.importance, a.participants, a.modseq
  FROM a
  WHERE a.message_count > 0
    AND NOT EXISTS (SELECT 1 FROM updated u WHERE u.user_id = a.user_id AND u.folder_id = a.folder_id AND u.conversation_id = a.conversation_id);
END $$;

-- A statement of one message (every store write is one) takes the fast path where SQLite's trigger does: the message
-- alone when the folder has no message of its conversation (no row, or a tombstone it revives), the row moved on by
-- it when it is the newest; anything else recomputes.
CREATE FUNCTION items_conversations_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  keys conversation_key[];
  added record;
BEGIN
  IF (SELECT count(*) FROM new_items WHERE type = 'email') = 1 THEN
    SELECT * INTO added FROM new_items WHERE type = 'email';
    INSERT INTO conversations AS c (user_id, folder_id, conversation_id, latest_received_at, latest_item_id, message_count,
      unread_count, flagged_count, has_attachments, importance, participants, modseq)
    VALUES (added.user_id, added.folder_id, coalesce(added.conversation_id, added.id), added.received_at, added.id, 1,
      CASE WHEN added.is_read THEN 0 ELSE 1 END, CASE WHEN added.is_flagged THEN 1 ELSE 0 END, added.has_attachments, added.importance,
      CASE WHEN added.from_json->>'address' IS NULL THEN '[]'::jsonb
           ELSE jsonb_build_array(jsonb_build_object('name', coalesce(added.from_json->>'name', ''), 'address', added.from_json->>'address')) END,
      added.modseq)
    ON CONFLICT (user_id, folder_id, conversation_id) DO UPDATE SET
      latest_received_at = EXCLUDED.latest_received_at,
      latest_item_id = EXCLUDED.latest_item_id,
      message_count = c.message_count + 1,
      unread_count = c.unread_count + EXCLUDED.unread_count,
      flagged_count = c.flagged_count + EXCLUDED.flagged_count,
      has_attachments = c.has_attachments OR EXCLUDED.has_attachments,
      importance = CASE WHEN c.message_count = 0 THEN EXCLUDED.importance
                        WHEN c.importance = 'high' OR EXCLUDED.importance = 'high' THEN 'high'
                        WHEN c.importance = 'low' AND EXCLUDED.importance = 'low' THEN 'low'
                        ELSE 'normal' END,
      participants = CASE WHEN c.message_count = 0 THEN EXCLUDED.participants ELSE (
        SELECT coalesce(jsonb_agg(m.p ORDER BY m.position), '[]') FROM (
          SELECT u.p, u.position FROM (
            SELECT e.p, 0::bigint AS position FROM jsonb_array_elements(EXCLUDED.participants) AS e(p)
            UNION ALL
            SELECT e.p, e.position FROM jsonb_array_elements(c.participants) WITH ORDINALITY AS e(p, position)
            WHERE nocase(e.p->>'address') NOT IN (SELECT nocase(x.q->>'address') FROM jsonb_array_elements(EXCLUDED.participants) AS x(q))
          ) AS u
          ORDER BY u.position LIMIT 10) AS m) END,
      modseq = EXCLUDED.modseq
    WHERE c.message_count = 0 OR (EXCLUDED.latest_received_at, EXCLUDED.latest_item_id) > (c.latest_received_at, c.latest_item_id);
    IF FOUND THEN RETURN NULL; END IF;
  END IF;
  SELECT array_agg(ROW(user_id, folder_id, conversation_id, modseq)::conversation_key) INTO keys
  FROM (SELECT user_id, folder_id, coalesce(conversation_id, id) AS conversation_id, max(modseq) AS modseq
        FROM new_items WHERE type = 'email' GROUP BY 1, 2, 3) AS changed;
  IF keys IS NOT NULL THEN PERFORM conversations_refresh(keys); END IF;
  RETURN NULL;
END $$;

-- Stamped with the mailbox's highest modseq (taken by the delete before it deleted). A mailbox already gone leaves
-- nothing to stamp.
CREATE FUNCTION items_conversations_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  keys conversation_key[];
BEGIN
  SELECT array_agg(ROW(k.user_id, k.folder_id, k.conversation_id, m.highest_modseq)::conversation_key) INTO keys
  FROM (SELECT DISTINCT user_id, folder_id, coalesce(conversation_id, id) AS conversation_id FROM old_items WHERE type = 'email') AS k
  JOIN mailboxes m ON m.user_id = k.user_id;
  IF keys IS NOT NULL THEN PERFORM conversations_refresh(keys); END IF;
  RETURN NULL;
END $$;

-- Transition tables rule out a column list on an UPDATE trigger: this one compares the columns the aggregate reads
-- (and the modseq, which every change moves) itself. A statement of one message that changed its read or flag state
-- only moves the counts (SQLite's fast path); otherwise a message that changed folder (or conversation) is
-- recomputed on both sides, each stamped with its new modseq.
CREATE FUNCTION items_conversations_updated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  keys conversation_key[];
  was record;
  now_is record;
BEGIN
  IF (SELECT count(*) FROM new_items) = 1 THEN
    SELECT * INTO was FROM old_items;
    SELECT * INTO now_is FROM new_items;
    IF was.type = 'email' AND now_is.type = 'email' AND was.folder_id = now_is.folder_id
       AND coalesce(was.conversation_id, was.id) = coalesce(now_is.conversation_id, now_is.id) AND was.received_at = now_is.received_at
       AND was.importance = now_is.importance AND was.has_attachments = now_is.has_attachments AND was.from_json IS NOT DISTINCT FROM now_is.from_json THEN
      IF (was.is_read, was.is_flagged, was.modseq) IS DISTINCT FROM (now_is.is_read, now_is.is_flagged, now_is.modseq) THEN
        UPDATE conversations SET
          unread_count = unread_count + (CASE WHEN now_is.is_read THEN 0 ELSE 1 END) - (CASE WHEN was.is_read THEN 0 ELSE 1 END),
          flagged_count = flagged_count + (CASE WHEN now_is.is_flagged THEN 1 ELSE 0 END) - (CASE WHEN was.is_flagged THEN 1 ELSE 0 END),
          modseq = now_is.modseq
        WHERE user_id = now_is.user_id AND folder_id = now_is.folder_id AND conversation_id = coalesce(now_is.conversation_id, now_is.id);
      END IF;
      RETURN NULL;
    END IF;
  END IF;
  SELECT array_agg(ROW(user_id, folder_id, conversation_id, modseq)::conversation_key) INTO keys
  FROM (
    SELECT user_id, folder_id, conversation_id, max(modseq) AS modseq
    FROM (
      SELECT side.user_id, side.folder_id, side.conversation_id, n.modseq
      FROM old_items o
      JOIN new_items n ON n.user_id = o.user_id AND n.id = o.id
      CROSS JOIN LATERAL (VALUES
        (n.user_id, n.folder_id, coalesce(n.conversation_id, n.id), n.type = 'email'),
        (o.user_id, o.folder_id, coalesce(o.conversation_id, o.id), o.type = 'email')) AS side(user_id, folder_id, conversation_id, counts)
      WHERE side.counts
        AND (o.folder_id, o.type, o.is_read, o.is_flagged, o.received_at, o.conversation_id, o.importance, o.has_attachments, o.modseq, o.from_json)
            IS DISTINCT FROM
            (n.folder_id, n.type, n.is_read, n.is_flagged, n.received_at, n.conversation_id, n.importance, n.has_attachments, n.modseq, n.from_json)
    ) AS sides
    GROUP BY 1, 2, 3
  ) AS changed;
  IF keys IS NOT NULL THEN PERFORM conversations_refresh(keys); END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER items_conversations_insert AFTER INSERT ON items REFERENCING NEW TABLE AS new_items
  FOR EACH STATEMENT EXECUTE FUNCTION items_conversations_inserted();
CREATE TRIGGER items_conversations_delete AFTER DELETE ON items REFERENCING OLD TABLE AS old_items
  FOR EACH STATEMENT EXECUTE FUNCTION items_conversations_deleted();
CREATE TRIGGER items_conversations_update AFTER UPDATE ON items REFERENCING OLD TABLE AS old_items NEW TABLE AS new_items
  FOR EACH STATEMENT EXECUTE FUNCTION items_conversations_updated();

-- Tombstones behind the history horizon go with it (SQLite's 0012 says why).
CREATE FUNCTION mailboxes_conversation_horizon() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM conversations WHERE user_id = NEW.user_id AND message_count = 0 AND modseq <= NEW.purged_modseq;
  RETURN NULL;
END $$;
CREATE TRIGGER mailboxes_conversation_horizon AFTER UPDATE OF purged_modseq ON mailboxes
  FOR EACH ROW WHEN (NEW.purged_modseq > OLD.purged_modseq) EXECUTE FUNCTION mailboxes_conversation_horizon();

-- The mail already in the store: one row per (mailbox, folder, conversation), stamped with the newest modseq of its
-- messages.
INSERT INTO conversations (user_id, folder_id, conversation_id, latest_received_at, latest_item_id, message_count,
  unread_count, flagged_count, has_attachments, importance, participants, modseq)
SELECT g.user_id, g.folder_id, g.conversation_id, l.received_at, l.id, g.message_count, g.unread_count, g.flagged_count,
  g.has_attachments, g.importance, p.participants, g.modseq
FROM (
  SELECT user_id, folder_id, coalesce(conversation_id, id) AS conversation_id, count(*) AS message_count,
    count(*) FILTER (WHERE NOT is_read) AS unread_count, count(*) FILTER (WHERE is_flagged) AS flagged_count,
    bool_or(has_attachments) AS has_attachments,
    CASE WHEN bool_or(importance = 'high') THEN 'high' WHEN bool_and(importance = 'low') THEN 'low' ELSE 'normal' END AS importance,
    max(modseq) AS modseq
  FROM items WHERE type = 'email'
  GROUP BY user_id, folder_id, coalesce(conversation_id, id)) AS g
CROSS JOIN LATERAL (
  SELECT i.received_at, i.id FROM items i
  WHERE i.user_id = g.user_id AND i.folder_id = g.folder_id AND coalesce(i.conversation_id, i.id) = g.conversation_id
    AND i.type = 'email'
  ORDER BY i.received_at DESC, i.id DESC LIMIT 1) AS l
CROSS JOIN LATERAL (
  SELECT coalesce(jsonb_agg(jsonb_build_object('name', d.name, 'address', d.address) ORDER BY d.received_at DESC, d.id DESC), '[]') AS participants
  FROM (
    SELECT * FROM (
      SELECT DISTINCT ON (nocase(i.from_json->>'address')) coalesce(i.from_json->>'name', '') AS name,
        i.from_json->>'address' AS address, i.received_at, i.id
      FROM items i
      WHERE i.user_id = g.user_id AND i.folder_id = g.folder_id AND coalesce(i.conversation_id, i.id) = g.conversation_id
        AND i.type = 'email' AND i.from_json->>'address' IS NOT NULL
      ORDER BY nocase(i.from_json->>'address'), i.received_at DESC, i.id DESC) AS senders
    ORDER BY received_at DESC, id DESC LIMIT 10) AS d) AS p;
