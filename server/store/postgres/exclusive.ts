/**
 * Jobs that must run on one node at a time across every node sharing the database (the purges, the outbox relay):
 * `exclusive(task, fn)` runs `fn` while holding a session-level advisory lock named after the task.
 *
 * The locks live on one connection of their own, opened when first needed: a pooled connection would be busy for
 * as long as a job runs (a relay pass waits for the smarthost), and a lock must outlive no transaction. A node that
 * dies loses its locks with its session, so another node takes the job over at its next turn. If that session
 * breaks while a job runs, its locks are gone too: the job finishes here while another node may start it, which is
 * logged (the jobs tolerate it: the purges delete what is already gone, the relay sends at least once).
 *
 * Advisory locks are re-entrant within a session, so this node's own overlap (a timer's pass while a kick's runs) is
 * refused here, before the database is asked.
 */
import crypto from 'node:crypto';
import { Client, type ClientConfig } from 'pg';
import type { Logger } from 'pino';
import type { Exclusive } from '../types';

/**
 * The advisory lock key of `task`: 64 bits of a hash of the name, as a decimal string (a BIGINT parameter). Another
 * connection that takes the same key keeps every node from running the task (tests, an operator pausing a job).
 */
export function exclusiveLockKey(task: string): string {
  return crypto.createHash('sha256').update(`pigeon exclusive ${task}`).digest().readBigInt64BE(0).toString();
}

export interface ExclusiveRunner {
  exclusive<T>(task: string, fn: () => Promise<T>, options?: { wait?: boolean }): Promise<Exclusive<T>>;
  close(): Promise<void>;
}

export function exclusiveRunner(config: ClientConfig, fail: (err: unknown) => never, log?: Logger): ExclusiveRunner {
  let current: Client | undefined;
  let opening: Promise<Client> | undefined;
  let closed = false;
  /** Tasks this node runs now: each settles when its run ends. */
  const running = new Map<string, Promise<void>>();

  const lost = (client: Client, err?: Error) => {
    if (client !== current || closed) return;
    current = undefined;
    if (running.size) log?.warn({ err, tasks: [...running.keys()] }, 'the PostgreSQL session holding cluster-wide jobs was lost while they ran');
    client.end().catch(() => undefined);
  };

  const connect = async (): Promise<Client> => {
    const client = new Client(config);
    client.on('error', (err) => lost(client, err));
    client.on('end', () => lost(client));
    try {
      await client.connect();
      // A waiting lock is waited for as long as it takes (the store's lock_timeout is for row locks).
      await client.query(`SELECT set_config('lock_timeout', '0', false)`);
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
    if (closed) {
      await client.end().catch(() => undefined);
      throw new Error('the store is closed');
    }
    return (current = client);
  };

  const session = (): Promise<Client> => {
    if (current) return Promise.resolve(current);
    opening ??= connect().finally(() => (opening = undefined));
    return opening;
  };

  async function exclusive<T>(task: string, fn: () => Promise<T>, options: { wait?: boolean } = {}): Promise<Exclusive<T>> {
    if (closed) throw new Error('the store is closed');
    for (let mine = running.get(task); mine; mine = running.get(task)) {
      if (!options.wait) return { ran: false };
      await mine;
    }
    // Claimed before the first await, so this node's next call for the task waits or gives up above.
    let done!: () => void;
    running.set(task, new Promise<void>((resolve) => (done = resolve)));
    try {
      const key = exclusiveLockKey(task);
      const client = await session().catch(fail);
      if (options.wait) await client.query('SELECT pg_advisory_lock($1::bigint)', [key]).catch(fail);
      else {
        const r = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS locked', [key]).catch(fail);
        if (!r.rows[0]?.locked) return { ran: false };
      }
      try {
        return { ran: true, value: await fn() };
      } finally {
        // A session that broke meanwhile holds nothing any more (the next call opens another).
        if (client === current) {
          await client.query('SELECT pg_advisory_unlock($1::bigint)', [key]).catch((err: unknown) => log?.warn({ err, task }, 'a cluster-wide job lock could not be released'));
        }
      }
    } finally {
      running.delete(task);
      done();
    }
  }

  return {
    exclusive,
    /** Ends the session (and with it any lock still held: the caller lets its jobs finish first). */
    async close() {
      closed = true;
      const client = current ?? (await opening?.catch(() => undefined));
      current = undefined;
      await client?.end().catch(() => undefined);
    },
  };
}
