-- 0018: each device names its tenant, and the admin inventory's indexes start with it. (PostgreSQL:
-- 0020_device_tenant.sql.)
--
-- The inventory (server/store/inventory.ts) filtered on the owner's tenant through users, and 0016's indexes on
-- (key, id) held every tenant's devices: a small tenant's page walked other tenants' rows until it had found a page
-- of its own (or the index's end), so its cost grew with the whole database. With the tenant on the device, each
-- order is a walk of (tenant_id, key, id) that starts and stays in the tenant's own range.
--
-- A copy of users.tenant_id, which never changes (no statement updates it; a tenant move makes new users at the
-- target), so it is written once, when the device is made. NOT NULL DEFAULT '' because SQLite adds a NOT NULL
-- column only with a default; '' is no tenant's id, and the trigger below refuses it (and any tenant but the owner's)
-- on insert, so a write that forgets the column fails instead of hiding the device from every inventory. Rows whose
-- user is gone (none: devices cascade with their user) would keep '' and stay in no tenant's inventory, as before.
ALTER TABLE devices ADD COLUMN tenant_id TEXT NOT NULL DEFAULT '';
UPDATE devices SET tenant_id = coalesce((SELECT u.tenant_id FROM users u WHERE u.id = devices.user_id), '');
CREATE TRIGGER devices_tenant_is_owners BEFORE INSERT ON devices
  WHEN NEW.tenant_id IS NOT (SELECT u.tenant_id FROM users u WHERE u.id = NEW.user_id)
BEGIN
  SELECT RAISE(ABORT, 'devices.tenant_id must be the owner''s tenant');
END;

-- 0016's indexes served nothing but the inventory's pages (no other statement on devices orders or ranges by these
-- keys): replaced, under the same names, by the tenant's own ranges.
DROP INDEX devices_inventory_last_sync;
DROP INDEX devices_inventory_first_sync;
DROP INDEX devices_inventory_name;
DROP INDEX devices_inventory_model;
DROP INDEX devices_inventory_client;
CREATE INDEX devices_inventory_last_sync ON devices (tenant_id, last_success_sync_time, id);
CREATE INDEX devices_inventory_first_sync ON devices (tenant_id, first_sync_time, id);
CREATE INDEX devices_inventory_name ON devices (tenant_id, friendly_name_sort, id);
CREATE INDEX devices_inventory_model ON devices (tenant_id, device_model_sort, id);
CREATE INDEX devices_inventory_client ON devices (tenant_id, client_type_sort, id);
