-- 0017: the calendar reminder on the device's screen, per event. (PostgreSQL: 0019_shown_reminders.sql.)
--
-- push_reminders keeps one row per event: its next reminder. When a recurring event's reminder fired, the row moved
-- on to the next occurrence and forgot the one just shown, so a change to the event while that occurrence was still
-- on (moved, cancelled, deleted) sent no cancellation. The shown_* columns keep the last reminder that went out and
-- when its occurrence ends (the end as it was when it fired, so a deleted event's is known too); all three are NULL
-- when nothing is shown. Rows written before this migration have none: a change owes nothing for them.
ALTER TABLE push_reminders ADD COLUMN shown_start INTEGER;
ALTER TABLE push_reminders ADD COLUMN shown_due_at INTEGER;
ALTER TABLE push_reminders ADD COLUMN shown_until INTEGER;
