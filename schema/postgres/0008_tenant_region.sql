-- 0008: a tenant belongs to a region (README, "Regions"): every row of its data lives in that region's store, and a
-- node serves one region (PIGEON_REGION). Tenants created before regions are in `default`; a node configured for
-- another region refuses such a store until `npm run admin -- region adopt <name>` relabels it.
-- (SQLite: 0006_tenant_region.sql, the same change; this store's 0006 and 0007 have no SQLite counterpart.)
ALTER TABLE tenants ADD COLUMN region TEXT COLLATE "C" NOT NULL DEFAULT 'default';
