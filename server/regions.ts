/**
 * Regions (README, "Regions"): a tenant lives in one region, each region has a store of its own, and a node serves
 * the one region PIGEON_REGION names. What crosses regions is only the public directory (PIGEON_REGIONS): a request
 * for a mailbox of another region is answered with that region's base URL (421 wrongRegion), never proxied.
 *
 * This module holds what the server and the admin CLI share: the directory, the start-up check that the store is
 * this region's, the relabelling of a store created before regions, and the reading of a token's claimed region.
 */
import { regionDirectory, type Config } from './config';
import { DEFAULT_REGION, type Store, type Tenant } from './store/types';

export interface Regions {
  /** The region this node serves. */
  region: string;
  /** Its base URL (the directory's entry, else the issuer). */
  baseUrl: string;
  /** Every region this node knows of, name → base URL, its own included: the only thing about other regions it tells. */
  directory: Readonly<Record<string, string>>;
}

export function regionsOf(config: Config): Regions {
  const directory = Object.freeze(regionDirectory(config));
  return { region: config.region, baseUrl: directory[config.region]!, directory };
}

/** A store holding a tenant of another region than the node's: the node (or CLI) must not touch it. */
export class WrongRegionStore extends Error {
  constructor(
    readonly region: string,
    readonly foreign: Tenant[],
  ) {
    const regions = [...new Set(foreign.map((t) => t.region))].sort();
    const example = foreign[0]!;
    const fromDefault = regions.length === 1 && regions[0] === DEFAULT_REGION;
    super(
      `this node serves region ${region} (PIGEON_REGION) but its store holds ${foreign.length} tenant(s) of region ` +
        `${regions.join(', ')} (e.g. ${JSON.stringify(example.name)}, ${example.id}). Point PIGEON_DATABASE_URL or ` +
        `PIGEON_DATA_DIR at region ${region}'s store, or set PIGEON_REGION=${regions[0]}` +
        (fromDefault
          ? `; a store created before regions is made region ${region}'s once with \`npm run admin -- region adopt ${region}\`.`
          : '.'),
    );
    this.name = 'WrongRegionStore';
  }
}

/**
 * Refuses (WrongRegionStore) a store holding any tenant of another region, so that a node pointed at the wrong store
 * can never write one region's data into another's. Run before anything else uses the store.
 */
export async function checkStoreRegion(store: Pick<Store, 'tenants'>, region: string): Promise<void> {
  const foreign = (await store.tenants.list()).filter((t) => t.region !== region);
  if (foreign.length) throw new WrongRegionStore(region, foreign);
}

export class RegionAdoptError extends Error {}

/**
 * `region adopt <name>`: relabels every tenant of a store created before regions (region `default`) as `region`'s,
 * each with an entry in its audit log, in one unit. Refused when the store holds a tenant of a third region: only
 * `default` is ever relabelled (moving a tenant between regions is an export and an import, not a label).
 */
export async function adoptRegion(store: Store, region: string, now: number): Promise<Tenant[]> {
  if (region === DEFAULT_REGION) throw new RegionAdoptError(`region ${DEFAULT_REGION} needs no adopting`);
  return store.run(function* (tx) {
    const tenants = yield* tx.tenants.list();
    const others = tenants.filter((t) => t.region !== DEFAULT_REGION && t.region !== region);
    if (others.length) {
      throw new RegionAdoptError(
        `refused: the store holds tenant(s) of region ${[...new Set(others.map((t) => t.region))].join(', ')}; ` +
          `only tenants of region ${DEFAULT_REGION} are adopted`,
      );
    }
    const adopted: Tenant[] = [];
    for (const tenant of tenants.filter((t) => t.region === DEFAULT_REGION)) {
      yield* tx.tenants.setRegion(tenant.id, region);
      yield* tx.audit.append({
        tenantId: tenant.id,
        at: now,
        actorId: null,
        actorName: 'system',
        action: 'tenant.regionAdopt',
        targetType: 'tenant',
        targetId: tenant.id,
        details: { from: DEFAULT_REGION, to: region },
      });
      adopted.push({ ...tenant, region });
    }
    return adopted;
  });
}

/**
 * The `rgn` claim of an access token, read WITHOUT verifying it: only to pick which answer a token this node cannot
 * verify gets (another region's node may sign with other keys). It decides nothing but which public directory entry
 * to show; undefined when the token is not a JWT or names no region.
 */
export function claimedRegion(token: string): string | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[1]!.length > 4096) return undefined;
  try {
    const payload: unknown = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
    const rgn = (payload as { rgn?: unknown } | null)?.rgn;
    return typeof rgn === 'string' ? rgn : undefined;
  } catch {
    return undefined;
  }
}
