/**
 * The PostgreSQL side of `--store pg`: a database of the run's own on the server `--pg-url` (or BENCH_POSTGRES_URL)
 * names, created empty and dropped at the end, and what PostgreSQL itself can tell about a stretch of requests —
 * the CPU its backends for that database spent (from /proc, when the server runs on this machine), the
 * transactions it committed, and the WAL it wrote and flushed.
 *
 * PostgreSQL's cumulative statistics lag: a busy backend reports its counts at most once a second, an idle one
 * within 10 s (STATS_SETTLE_MS), so commit and WAL counts of a stretch are read after that wait. The /proc CPU
 * times are current.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { Client } from 'pg';

export const NO_POSTGRES_URL =
  '--store pg needs a PostgreSQL server: pass --pg-url postgres://user:password@host:port/postgres or set ' +
  'BENCH_POSTGRES_URL, naming a role that may create databases (the bench creates its own pigeon_bench_<random> ' +
  'and drops it at the end).';

/** `url` naming another database on the same server, as the same role. */
export function databaseUrl(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}

export async function withClient<T>(url: string, fn: (c: Client) => Promise<T>): Promise<T> {
  const client = new Client({ connectionString: url, application_name: 'pigeon bench' });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** How long after its last statement a backend's counts are surely in pg_stat_* (PGSTAT_IDLE_INTERVAL + 1 s). */
export const STATS_SETTLE_MS = 11_000;

export interface BenchDatabase {
  name: string;
  url: string;
  /** The server's URL (the administrative connection the database was created on). */
  serverUrl: string;
  drop(): Promise<void>;
}

/** Creates `pigeon_bench_<random>` on the server (a connection there is tried first, so a bad URL fails early). */
export async function createBenchDatabase(serverUrl: string): Promise<BenchDatabase> {
  const name = `pigeon_bench_${crypto.randomBytes(5).toString('hex')}`;
  try {
    await withClient(serverUrl, (c) => c.query(`CREATE DATABASE ${name}`));
  } catch (err) {
    throw new Error(`cannot create a database on the --pg-url server: ${(err as Error).message}\n${NO_POSTGRES_URL}`);
  }
  let dropped = false;
  return {
    name,
    url: databaseUrl(serverUrl, name),
    serverUrl,
    async drop() {
      if (dropped) return;
      dropped = true;
      await withClient(serverUrl, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

/** CPU milliseconds (user + system) of one process so far, from /proc; undefined when it cannot be read. */
function processCpuMs(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return undefined;
  }
}

/** What PostgreSQL has done for one database so far (cumulative counters; compare two readings). */
export interface PgReading {
  /** Connections to the database (other than the meter's). */
  connections: number;
  /** Backend process id → its CPU ms so far (only backends this machine's /proc shows). */
  backends: Map<number, number>;
  xactCommit: number;
  xactRollback: number;
  /** Commits in every other database of the server (other users of a shared server; the meter's own reads too). */
  otherCommits: number;
  /** Server-wide (every database): WAL flushes to disk, and bytes of WAL written. */
  walSyncs: number;
  walBytes: number;
}

export interface PgMeter {
  read(): Promise<PgReading>;
  /** Connections to the database opened at `since` or later (and still open). */
  connectedSince(since: Date): Promise<number>;
  close(): Promise<void>;
}

/** Counters of one database, read over a connection of the meter's own (which does not count itself). */
export async function pgMeter(db: BenchDatabase): Promise<PgMeter> {
  const client = new Client({ connectionString: db.serverUrl, application_name: 'pigeon bench meter' });
  await client.connect();
  const hasStatWal = (await client.query(`SELECT to_regclass('pg_catalog.pg_stat_wal') IS NOT NULL AS has`)).rows[0]?.has === true;
  return {
    async read() {
      // Statistics are cached per transaction; outside one, each statement sees fresh ones.
      await client.query('SELECT pg_stat_clear_snapshot()');
      const pids = await client.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, [db.name]);
      const backends = new Map<number, number>();
      for (const { pid } of pids.rows) {
        const ms = processCpuMs(pid);
        if (ms !== undefined) backends.set(pid, ms);
      }
      const d = (
        await client.query<{ c: string; r: string; o: string }>(
          `SELECT sum(xact_commit) FILTER (WHERE datname = $1) AS c, sum(xact_rollback) FILTER (WHERE datname = $1) AS r,
             sum(xact_commit) FILTER (WHERE datname IS DISTINCT FROM $1) AS o FROM pg_stat_database`,
          [db.name],
        )
      ).rows[0];
      const w = hasStatWal ? (await client.query<{ s: string; b: string }>(`SELECT wal_sync AS s, wal_bytes AS b FROM pg_stat_wal`)).rows[0] : undefined;
      return { connections: pids.rows.length, backends, xactCommit: Number(d?.c ?? 0), xactRollback: Number(d?.r ?? 0), otherCommits: Number(d?.o ?? 0), walSyncs: Number(w?.s ?? NaN), walBytes: Number(w?.b ?? NaN) };
    },
    async connectedSince(since) {
      const r = await client.query<{ n: string }>(`SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND backend_start >= $2`, [db.name, since]);
      return Number(r.rows[0]?.n ?? 0);
    },
    close: () => client.end(),
  };
}

export interface PgDelta {
  /** CPU ms of the database's backends between the readings (a backend that ended meanwhile takes its time with it). */
  backendCpuMs: number;
  backends: number;
  commits: number;
  rollbacks: number;
  otherCommits: number;
  walSyncs: number;
  walBytes: number;
}

export function pgDelta(before: PgReading, after: PgReading): PgDelta {
  let cpu = 0;
  for (const [pid, ms] of after.backends) cpu += ms - (before.backends.get(pid) ?? 0);
  return {
    backendCpuMs: cpu,
    backends: after.backends.size,
    commits: after.xactCommit - before.xactCommit,
    rollbacks: after.xactRollback - before.xactRollback,
    otherCommits: after.otherCommits - before.otherCommits,
    walSyncs: after.walSyncs - before.walSyncs,
    walBytes: after.walBytes - before.walBytes,
  };
}

/** What the server's durability settings are (recorded with the figures). */
export async function pgSettings(url: string): Promise<Record<string, string>> {
  return withClient(url, async (c) => {
    const r = await c.query<{ name: string; setting: string }>(
      `SELECT name, setting FROM pg_settings WHERE name IN ('server_version', 'synchronous_commit', 'fsync', 'wal_sync_method', 'commit_delay', 'shared_buffers', 'max_connections', 'shared_preload_libraries')`,
    );
    return Object.fromEntries(r.rows.map((row) => [row.name, row.setting]));
  });
}
