-- 0006: a tenant belongs to a region (README, "Regions"): every row of its data lives in that region's store, and a
-- node serves one region (PIGEON_REGION). Tenants created before regions are in `default`; a node configured for
-- another region refuses such a store until `npm run admin -- region adopt <name>` relabels it.
-- (PostgreSQL: 0008_tenant_region.sql, the same change; its 0006 and 0007 are its own.)
ALTER TABLE tenants ADD COLUMN region TEXT NOT NULL DEFAULT 'default';
