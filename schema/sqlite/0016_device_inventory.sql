-- 0016: the admin inventory's orders as index walks. (PostgreSQL: 0018_device_inventory.sql, the same change.)
--
-- GET /admin/v1/devices pages in SQL (server/store/inventory.ts): each order on a devices column is a walk of one
-- of these indexes, (key, id), forwards or backwards, that starts at the cursor and stops after a page. Text keys
-- are folded as the query folds them (lower(): ASCII letters only, without ICU), in virtual columns (computed when
-- read, stored only in the index) because SQLite starts a range at a row value such as (key, id) > (?, ?) only on
-- columns, not on an index's expressions. The owner's username (sort=user) is another table's and still sorts the
-- tenant's devices; so do the orders by access state, which is computed, not stored.
ALTER TABLE devices ADD COLUMN friendly_name_sort TEXT GENERATED ALWAYS AS (lower(friendly_name)) VIRTUAL;
ALTER TABLE devices ADD COLUMN device_model_sort TEXT GENERATED ALWAYS AS (lower(device_model)) VIRTUAL;
ALTER TABLE devices ADD COLUMN client_type_sort TEXT GENERATED ALWAYS AS (lower(client_type)) VIRTUAL;
CREATE INDEX devices_inventory_last_sync ON devices (last_success_sync_time, id);
CREATE INDEX devices_inventory_first_sync ON devices (first_sync_time, id);
CREATE INDEX devices_inventory_name ON devices (friendly_name_sort, id);
CREATE INDEX devices_inventory_model ON devices (device_model_sort, id);
CREATE INDEX devices_inventory_client ON devices (client_type_sort, id);
