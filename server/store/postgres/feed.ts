/**
 * The commit feed between nodes: what each transaction changed (mailbox commits, cache invalidations) goes to every
 * other node sharing the database by NOTIFY on one channel.
 *
 * The writer sends its notifications inside the transaction (`SELECT pg_notify(…)` just before COMMIT): PostgreSQL
 * delivers them only if and when it commits, in commit order, never for a rollback. Each node keeps one connection
 * LISTENing; a notification from another node is handed to the store's own `onCommit`/`onInvalidate` listeners and
 * counted (`dataVersion`). A lost connection is reconnected with backoff, and since what was sent meanwhile is gone,
 * the node then treats everything as changed (`all`).
 */
import { Client, type ClientConfig } from 'pg';
import type { Logger } from 'pino';
import type { CommittedChange, Invalidation } from '../types';

export const FEED_CHANNEL = 'pigeon_feed';

/** Sends every payload of a transaction in one statement. */
export const NOTIFY = `SELECT pg_notify('${FEED_CHANNEL}', payload) FROM unnest($1::text[]) AS payload`;

/** PostgreSQL refuses a payload of 8000 bytes or more (default build). */
const MAX_PAYLOAD_BYTES = 7900;
/** A transaction that would need more notifications than this sends one `all` instead. */
const MAX_NOTIFICATIONS = 64;

export interface FeedMessage {
  /** The node that committed: a node ignores its own (it announced them at commit). */
  node: string;
  commits?: CommittedChange[];
  invalidations?: Invalidation[];
  /** Too much to tell: everything may have changed. */
  all?: true;
}

const bytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value), 'utf8');

/**
 * The notifications that tell other nodes about one transaction, each under the size limit: commits and invalidations
 * packed in order, a commit with too many folders for one payload split into several for the same mailbox and modseq.
 */
export function feedPayloads(node: string, commits: CommittedChange[], invalidations: Invalidation[]): string[] {
  if (commits.length === 0 && invalidations.length === 0) return [];
  const base = bytes({ node, commits: [], invalidations: [] });
  const room = MAX_PAYLOAD_BYTES - base;
  // Commits small enough to travel alone (a folder list too long for one payload is cut into pieces).
  const pieces: CommittedChange[] = [];
  for (const c of commits) {
    if (bytes(c) + 1 <= room) {
      pieces.push(c);
      continue;
    }
    let piece: CommittedChange = { ...c, folderIds: [] };
    for (const folderId of c.folderIds) {
      if (piece.folderIds.length && bytes(piece) + bytes(folderId) + 2 > room) {
        pieces.push(piece);
        piece = { ...c, folderIds: [] };
      }
      piece.folderIds.push(folderId);
    }
    pieces.push(piece);
  }
  const payloads: string[] = [];
  let message: FeedMessage & { commits: CommittedChange[]; invalidations: Invalidation[] } = { node, commits: [], invalidations: [] };
  let size = base;
  const add = (list: 'commits' | 'invalidations', entry: CommittedChange | Invalidation) => {
    const more = bytes(entry) + 1;
    if (size + more > MAX_PAYLOAD_BYTES && size > base) {
      payloads.push(JSON.stringify(message));
      message = { node, commits: [], invalidations: [] };
      size = base;
    }
    (message[list] as Array<typeof entry>).push(entry);
    size += more;
  };
  for (const i of invalidations) add('invalidations', i);
  for (const c of pieces) add('commits', c);
  payloads.push(JSON.stringify(message));
  return payloads.length > MAX_NOTIFICATIONS ? [JSON.stringify({ node, all: true } satisfies FeedMessage)] : payloads;
}

/** A payload as received; a malformed one reads as `all` (something changed, and no one can say what). */
export function parseFeedMessage(payload: string | undefined): FeedMessage {
  try {
    const m = JSON.parse(payload ?? '') as FeedMessage;
    if (m && typeof m.node === 'string') return m;
  } catch {
    // fall through
  }
  return { node: '', all: true };
}

export interface FeedListener {
  close(): Promise<void>;
}

/**
 * Keeps one connection LISTENing on the feed channel and hands every payload to `received`. Resolves once the first
 * LISTEN is in place (so no commit made after the store opened is missed); after a connection was lost and is back,
 * calls `reconnected` (whatever was sent meanwhile is lost).
 */
export async function listenToFeed(
  config: ClientConfig,
  handlers: { received(payload: string | undefined): void; reconnected(): void },
  log?: Logger,
): Promise<FeedListener> {
  let current: Client | undefined;
  let closed = false;
  let failures = 0;
  let timer: NodeJS.Timeout | undefined;

  const connect = async (): Promise<void> => {
    const client = new Client(config);
    client.on('notification', (n) => {
      if (n.channel === FEED_CHANNEL && client === current) handlers.received(n.payload);
    });
    client.on('error', (err) => lost(client, err));
    client.on('end', () => lost(client));
    try {
      await client.connect();
      await client.query(`LISTEN ${FEED_CHANNEL}`);
    } catch (err) {
      client.removeAllListeners('end');
      await client.end().catch(() => undefined);
      throw err;
    }
    if (closed) {
      await client.end().catch(() => undefined);
      return;
    }
    current = client;
  };

  const lost = (client: Client, err?: Error) => {
    if (client !== current || closed) return;
    current = undefined;
    log?.warn({ err }, 'the PostgreSQL feed connection was lost; reconnecting');
    client.end().catch(() => undefined);
    retry();
  };

  const retry = () => {
    const delay = Math.min(10_000, 100 * 2 ** failures) * (0.5 + Math.random() / 2);
    failures++;
    timer = setTimeout(() => {
      timer = undefined;
      connect().then(
        () => {
          if (closed) return;
          failures = 0;
          log?.info('the PostgreSQL feed connection is back');
          handlers.reconnected();
        },
        (err: unknown) => {
          if (closed) return;
          log?.warn({ err }, 'the PostgreSQL feed connection could not be made; retrying');
          retry();
        },
      );
    }, delay);
    timer.unref();
  };

  await connect();
  return {
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      const client = current;
      current = undefined;
      if (client) await client.end().catch(() => undefined);
    },
  };
}
