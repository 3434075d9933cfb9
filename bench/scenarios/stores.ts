/**
 * `--store pg` and `--store both`: Pigeon on PostgreSQL (and on SQLite beside it, in the same run) — the request
 * paths where the store is most of the work, each on the same 10,000-item mailbox (the same rows from the same
 * seeded generator on both backends), with the same ceiling, in rounds that visit every side in turn as --baseline
 * does:
 *   1. the no-change poll: latency, and requests/s at 16 connections;
 *   2. the initial 500-item window (gzip on);
 *   3. incremental sync after 100 changes (made by another store on the same data: a second SQLite connection, or
 *      on PostgreSQL a third node whose commit feed tells the server);
 *   5. GET /v1/session (token and device gate: the part of every request before its own work);
 *   6. LMTP ingest;
 *   7. delivery → event latency, and on PostgreSQL across two server processes (push.ts, storePushFigures).
 * Each HTTP figure also carries the CPU per request of the server's processes and, on PostgreSQL, of the database's
 * backends (pgCost.ts then counts statements and round trips per request).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openSqliteStore } from '../../server/store/sqlite';
import { openPostgresStore } from '../../server/store/postgres';
import type { Store } from '../../server/store/types';
import { startCeiling, type Ceiling } from '../lib/ceiling';
import { signIn, syncPath, syncToEnd, type SignedIn } from '../lib/client';
import { httpFigures, type BenchContext, type Figure } from '../lib/figure';
import type { Exchange } from '../lib/http';
import { BENCH_USER, workingCopy } from '../lib/mailbox';
import { startPigeon, type Pigeon } from '../lib/pigeon';
import type { BenchDatabase, PgMeter } from '../lib/postgres';
import { ingestFigures } from './ingest';
import { storePushFigures } from './push';
import { incrementalFigures } from './sync';

export type StoreName = 'sqlite' | 'pg';
export const STORE_NAMES: Record<StoreName, string> = { sqlite: 'SQLite', pg: 'PostgreSQL' };

/** Where each backend's data is: the SQLite mailbox file to copy, the PostgreSQL database already holding it. */
export interface StoreSetup {
  stores: StoreName[];
  sqliteMailbox?: string;
  pg?: { db: BenchDatabase; meter: PgMeter };
  cpuProfDir?: string;
  wants: (scenario: number) => boolean;
}

interface Side {
  store: StoreName;
  pigeon: Pigeon;
  app: SignedIn;
  token: string;
  openStore(): Promise<Store>;
}

/** Starts Pigeon on one backend: on PostgreSQL it must be seen connected, or the checkout ignored the URL. */
export async function startOn(store: StoreName, dataDir: string, setup: Pick<StoreSetup, 'pg' | 'cpuProfDir'>, env: Record<string, string> = {}): Promise<Pigeon> {
  if (store === 'sqlite') return startPigeon(dataDir, { env, cpuProfDir: setup.cpuProfDir });
  const { db, meter } = setup.pg!;
  const since = new Date();
  const pigeon = await startPigeon(dataDir, { env, cpuProfDir: setup.cpuProfDir, databaseUrl: db.url });
  if ((await meter.connectedSince(since)) === 0) {
    await pigeon.stop();
    throw new Error('Pigeon started with PIGEON_DATABASE_URL but opened no connection to the database: this checkout does not run on PostgreSQL yet');
  }
  return Object.assign(pigeon, { pg: meter });
}

export async function storeFigures(ctx: Omit<BenchContext, 'ceiling'>, setup: StoreSetup): Promise<Figure[]> {
  const dirs: string[] = [];
  const pigeons: Pigeon[] = [];
  let ceiling: Ceiling | undefined;
  const figures: Figure[] = [];
  const openStoreOf = (store: StoreName, dataDir: string) => async (): Promise<Store> =>
    store === 'sqlite' ? openSqliteStore(path.join(dataDir, 'pigeon.db')) : openPostgresStore(setup.pg!.db.url, { poolSize: 2 });
  try {
    const sides: Side[] = [];
    for (const store of setup.stores) {
      const dir = store === 'sqlite' ? workingCopy(setup.sqliteMailbox!) : fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-bench-pg-'));
      dirs.push(dir);
      const pigeon = await startOn(store, dir, setup);
      pigeons.push(pigeon);
      const app = await signIn(pigeon, BENCH_USER, 'bench-app-device-00001');
      sides.push({ store, pigeon, app, token: (await syncToEnd(pigeon, app)).token, openStore: openStoreOf(store, dir) });
      ctx.log(`  ${STORE_NAMES[store]}: ready in ${Math.round(pigeon.readyMs)} ms`);
    }
    ceiling = await startCeiling(pigeons[0]!);
    const c: BenchContext = { ...ctx, ceiling };
    const each = (scenario: number, id: string, label: string, x: (s: Side) => Exchange) =>
      sides.map((s) => ({ pigeon: s.pigeon, x: x(s), def: { id: `${id}.${s.store}`, scenario, label: `${label} — ${STORE_NAMES[s.store]}` } }));
    const poll = (s: Side): Exchange => ({ method: 'GET', path: syncPath(s.app, { token: s.token }), headers: s.app.headers });
    const initial = (s: Side): Exchange => ({ method: 'GET', path: syncPath(s.app, { maxChanges: 512 }), headers: { ...s.app.headers, 'accept-encoding': 'gzip' } });
    const session = (s: Side): Exchange => ({ method: 'GET', path: '/v1/session', headers: s.app.headers });

    if (setup.wants(1)) {
      figures.push(...(await httpFigures(c, 'latency', each(1, 'poll.latency.10K', 'no-change poll, latency', poll))));
      figures.push(...(await httpFigures(c, 'throughput', each(1, 'poll.throughput.10K', 'no-change poll, 16 connections', poll))));
    }
    if (setup.wants(2)) figures.push(...(await httpFigures(c, 'latency', each(2, 'initial.gzip', 'initial 500-item window, gzip on', initial))));
    if (setup.wants(5)) figures.push(...(await httpFigures(c, 'latency', each(5, 'auth.session.latency', 'GET /v1/session, latency', session))));
    if (setup.wants(3)) {
      const boxes = sides.map((s) => ({ size: '10K', pigeon: s.pigeon, app: s.app, openStore: s.openStore, idSuffix: `.${s.store}`, labelSuffix: ` — ${STORE_NAMES[s.store]}` }));
      figures.push(...(await incrementalFigures(c, boxes)));
    }
    if (setup.wants(6)) {
      const servers = sides.map((s) => ({ server: s.pigeon, id: `ingest.lmtp.${s.store}`, label: `LMTP ingest, 10 KB messages, 4 connections — ${STORE_NAMES[s.store]}` }));
      figures.push(...(await ingestFigures(c, servers, BENCH_USER.email)));
    }
  } finally {
    for (const p of pigeons) await p.stop();
    await ceiling?.stop();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  }

  if (setup.wants(7)) {
    ctx.log('\npush');
    for (const store of setup.stores) {
      figures.push(
        ...(await storePushFigures(ctx, {
          store,
          name: STORE_NAMES[store],
          nodes: store === 'pg' ? 2 : 1,
          open: (dataDir) => openStoreOf(store, dataDir)(),
          start: (dataDir, env) => startOn(store, dataDir, setup, env),
        })),
      );
    }
  }
  return figures;
}
