-- 0018: the admin inventory's orders as index walks, as schema/sqlite/0016_device_inventory.sql (which says why).
-- Text keys are folded with lower(), which on these COLLATE "C" columns folds ASCII letters only, whatever the
-- database's locale: what SQLite's lower() and nocase() do. Not nocase() itself: its translate() costs ten times
-- lower()'s per row, and a search (q) folds every device of the tenant. No virtual columns as in SQLite: PostgreSQL
-- starts a range at a row value such as (lower(friendly_name), id) > ($1, $2) on an index's expressions too.
CREATE INDEX devices_inventory_last_sync ON devices (last_success_sync_time, id);
CREATE INDEX devices_inventory_first_sync ON devices (first_sync_time, id);
CREATE INDEX devices_inventory_name ON devices (lower(friendly_name), id);
CREATE INDEX devices_inventory_model ON devices (lower(device_model), id);
CREATE INDEX devices_inventory_client ON devices (lower(client_type), id);
