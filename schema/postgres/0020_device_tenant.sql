-- 0020: each device names its tenant, and the admin inventory's indexes start with it, as
-- schema/sqlite/0018_device_tenant.sql (which says why).
--
-- NOT NULL and no default here: PostgreSQL adds the column empty, fills it and then sets NOT NULL, so an insert that
-- forgets it fails (SQLite's default exists only to add the column; a trigger does this check there). Devices whose
-- user is gone (none that the server made: users are never deleted) get '', no tenant's id, and stay in no tenant's
-- inventory, as they were.
--
-- Locality (README.md): devices stay keyed and distributed by user_id; tenant_id is a plain column of theirs and
-- these are secondary indexes, so a tenant's inventory page would visit every shard of the tenant's devices on Citus,
-- as it would with any order that is not by user.
ALTER TABLE devices ADD COLUMN tenant_id TEXT COLLATE "C";
UPDATE devices d SET tenant_id = u.tenant_id FROM users u WHERE u.id = d.user_id;
UPDATE devices SET tenant_id = '' WHERE tenant_id IS NULL;
ALTER TABLE devices ALTER COLUMN tenant_id SET NOT NULL;

-- 0018's indexes served nothing but the inventory's pages: replaced, under the same names, by the tenant's ranges.
DROP INDEX devices_inventory_last_sync;
DROP INDEX devices_inventory_first_sync;
DROP INDEX devices_inventory_name;
DROP INDEX devices_inventory_model;
DROP INDEX devices_inventory_client;
CREATE INDEX devices_inventory_last_sync ON devices (tenant_id, last_success_sync_time, id);
CREATE INDEX devices_inventory_first_sync ON devices (tenant_id, first_sync_time, id);
CREATE INDEX devices_inventory_name ON devices (tenant_id, lower(friendly_name), id);
CREATE INDEX devices_inventory_model ON devices (tenant_id, lower(device_model), id);
CREATE INDEX devices_inventory_client ON devices (tenant_id, lower(client_type), id);
