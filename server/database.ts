/**
 * The store the configuration names: PostgreSQL when PIGEON_DATABASE_URL is set (every node and worker process a
 * node of its own, with its own pool and feed connection), the embedded SQLite file in the data directory otherwise.
 * The server (main.ts) and the admin CLI open it here, so both always work on the same data.
 */
import crypto from 'node:crypto';
import os from 'node:os';
import type { Logger } from 'pino';
import { redactUrl, type Config } from './config';
import { databaseFile } from './paths';
import { openSqliteStore, type SqliteStore } from './store/sqlite';
import { openPostgresStore, type PostgresStore } from './store/postgres';

export type ConfiguredStore = SqliteStore | PostgresStore;

/** The jobs that run on one node at a time (the store's `exclusive`), by the server and the admin CLI alike. */
export const JOBS = { demoSeed: 'demo-seed', devicePurge: 'device-purge', historyPurge: 'history-purge', relay: 'outbox-relay', autoReplies: 'auto-replies' } as const;

export function usesPostgres(config: Pick<Config, 'databaseUrl'>): boolean {
  return config.databaseUrl !== '';
}

/** Where the data is, as it may be logged (a URL's password masked). */
export function storeLocation(config: Pick<Config, 'databaseUrl' | 'dataDir'>): string {
  return usesPostgres(config) ? redactUrl(config.databaseUrl) : databaseFile(config);
}

/**
 * This process's name among the nodes sharing the database: PIGEON_NODE_ID (or the host name and process id), `role`
 * (`w2`: the node's second worker, `primary`, `admin`: each process has a store, and so a feed name, of its own) and
 * random characters. The random part is not optional: a node ignores the feed's messages that carry its own name, so
 * two processes given one name by mistake (a copied configuration, containers that are all pid 1) would miss each
 * other's commits — stale push and a stale hot cache — without a word.
 */
export function nodeName(config: Pick<Config, 'nodeId'>, role?: string): string {
  const base = config.nodeId || `${os.hostname()}-${process.pid}`;
  return [base, role, crypto.randomBytes(3).toString('hex')].filter(Boolean).join('-');
}

export interface OpenOptions {
  log?: Logger;
  /** The node's name in the commit feed (PostgreSQL); `nodeName(config)` when not given. */
  nodeId?: string;
  /** PostgreSQL connections; PIGEON_DATABASE_POOL_SIZE when not given. */
  poolSize?: number;
}

/** Opens (and migrates) the configured store. */
export async function openConfiguredStore(config: Config, options: OpenOptions = {}): Promise<ConfiguredStore> {
  if (!usesPostgres(config)) return openSqliteStore(databaseFile(config));
  return openPostgresStore(config.databaseUrl, {
    poolSize: options.poolSize ?? config.databasePoolSize,
    nodeId: options.nodeId ?? nodeName(config),
    log: options.log,
  });
}
