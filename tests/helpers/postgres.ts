/**
 * A database of its own for each PostgreSQL test, on the server TEST_POSTGRES_URL names (tests/run.js starts a
 * throwaway one when the variable is unset), created empty and dropped afterwards. A missing server is a failure with
 * a message saying what to do, never a skipped test.
 */
import crypto from 'node:crypto';
import { Client } from 'pg';

export const NO_POSTGRES =
  'TEST_POSTGRES_URL is not set, so the PostgreSQL tests have no server. Run the tests with `npm test` or ' +
  '`node tests/run.js`, which start a throwaway PostgreSQL when one is installed (`apt-get install postgresql`), ' +
  'or set TEST_POSTGRES_URL to the URL of a role that may create databases.';

/** The server's URL (a role that may create and drop databases); throws the message above when unset. */
export function postgresServerUrl(): string {
  const url = process.env.TEST_POSTGRES_URL;
  if (!url) throw new Error(NO_POSTGRES);
  return url;
}

/** `url` naming another database on the same server, as the same role. */
export function databaseUrl(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}

/** Runs `fn` on a connection of its own to `url`, closed afterwards. */
export async function withClient<T>(url: string, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export interface FreshDatabase {
  /** The new database's URL. */
  url: string;
  /** The database's name. */
  name: string;
  /** Drops the database, ending any connection still open to it. */
  drop(): Promise<void>;
}

/** Creates an empty database with a unique name (`prefix` then random characters) on TEST_POSTGRES_URL's server. */
export async function freshDatabase(prefix = 'pigeon_test'): Promise<FreshDatabase> {
  const server = postgresServerUrl();
  if (!/^[a-z_][a-z0-9_]*$/.test(prefix)) throw new Error(`database prefix ${JSON.stringify(prefix)}: lower-case letters, digits and _ only`);
  const name = `${prefix}_${crypto.randomBytes(6).toString('hex')}`;
  // The name is checked above, so it may be spelled into the statement (CREATE DATABASE takes no parameters).
  await withClient(server, (c) => c.query(`CREATE DATABASE ${name}`));
  let dropped = false;
  return {
    url: databaseUrl(server, name),
    name,
    async drop() {
      if (dropped) return;
      dropped = true;
      await withClient(server, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}
