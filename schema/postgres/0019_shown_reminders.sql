-- 0019: the calendar reminder on the device's screen, per event, as schema/sqlite/0017_shown_reminders.sql (which
-- says why).
ALTER TABLE push_reminders ADD COLUMN shown_start BIGINT;
ALTER TABLE push_reminders ADD COLUMN shown_due_at BIGINT;
ALTER TABLE push_reminders ADD COLUMN shown_until BIGINT;
