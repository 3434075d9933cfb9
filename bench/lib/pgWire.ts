/**
 * A counting proxy between a Pigeon process and PostgreSQL, to say where PostgreSQL's share of a request goes:
 * statements, round trips, BEGIN/COMMIT, and the time each round trip took from the moment its last message passed
 * the proxy to the moment PostgreSQL's ReadyForQuery came back (the query's execution plus one loopback hop).
 *
 * It reads the wire protocol (v3) as it forwards it, never changing a byte: on the frontend side Query ('Q'), Parse
 * ('P': names a prepared statement's text), Bind ('B': which statement runs), Execute ('E') and Sync ('S'); on the
 * backend side ReadyForQuery ('Z': a round trip is over), NotificationResponse ('A': the commit feed) and
 * ErrorResponse ('E'). node-postgres sends each query as one round trip (Parse/Bind/Describe/Execute/Sync, or one
 * simple Query) and never pipelines, so a round trip is one statement and its time belongs to that statement.
 *
 * The proxy adds a hop of its own to every round trip, so the figures measured through it are for counting; the
 * timed figures are measured on a direct connection.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';

/** What a statement does, from its text. */
export type StatementKind = 'BEGIN' | 'COMMIT' | 'ROLLBACK' | 'mailbox lock' | 'NOTIFY' | 'SELECT' | 'INSERT' | 'UPDATE' | 'DELETE' | 'other';

export function kindOf(text: string): StatementKind {
  const t = text.trimStart();
  const word = /^[A-Za-z]+/.exec(t)?.[0]?.toUpperCase() ?? '';
  if (word === 'BEGIN' || word === 'START') return 'BEGIN';
  if (word === 'COMMIT' || word === 'END') return 'COMMIT';
  if (word === 'ROLLBACK') return 'ROLLBACK';
  if (word === 'SELECT' && /pg_notify\(/.test(t)) return 'NOTIFY';
  if (word === 'SELECT' && /FOR (NO KEY )?UPDATE\s*$/i.test(t) && /FROM mailboxes/i.test(t)) return 'mailbox lock';
  if (word === 'SELECT' || word === 'INSERT' || word === 'UPDATE' || word === 'DELETE') return word;
  // A statement with a CTE does what its first data-changing clause does (`WITH logged AS (INSERT …) UPDATE …`).
  if (word === 'WITH') return (/\b(INSERT|UPDATE|DELETE)\b/i.exec(t)?.[1]?.toUpperCase() as StatementKind | undefined) ?? 'SELECT';
  return 'other';
}

export interface StatementStats {
  count: number;
  /** Sum of the round-trip times, ms. */
  ms: number;
}

export interface WireCounts {
  roundTrips: number;
  /** Sum of every round trip's time, ms (overlapping ones on several connections add up). */
  ms: number;
  byKind: Partial<Record<StatementKind, StatementStats>>;
  /** Per statement text (whitespace folded), for the detail of a request. */
  byText: Record<string, StatementStats>;
  notifications: number;
  errors: number;
  connections: number;
}

const emptyCounts = (): WireCounts => ({ roundTrips: 0, ms: 0, byKind: {}, byText: {}, notifications: 0, errors: 0, connections: 0 });

/** `after` minus `before`, for counting what one stretch of requests did. */
export function countsSince(before: WireCounts, after: WireCounts): WireCounts {
  const minus = (a: Record<string, StatementStats>, b: Record<string, StatementStats>) => {
    const out: Record<string, StatementStats> = {};
    for (const [k, v] of Object.entries(a)) {
      const d = { count: v.count - (b[k]?.count ?? 0), ms: v.ms - (b[k]?.ms ?? 0) };
      if (d.count > 0) out[k] = d;
    }
    return out;
  };
  return {
    roundTrips: after.roundTrips - before.roundTrips,
    ms: after.ms - before.ms,
    byKind: minus(after.byKind as Record<string, StatementStats>, before.byKind as Record<string, StatementStats>),
    byText: minus(after.byText, before.byText),
    notifications: after.notifications - before.notifications,
    errors: after.errors - before.errors,
    connections: after.connections - before.connections,
  };
}

const clone = (c: WireCounts): WireCounts => JSON.parse(JSON.stringify(c)) as WireCounts;

export interface WireProxy {
  /** `url` with its host and port replaced by the proxy's. */
  url: string;
  /** A copy of the counts so far. */
  counts(): WireCounts;
  close(): Promise<void>;
}

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;

/** Splits a stream into protocol messages: the untyped startup ones first, then type byte + length + body. */
class Splitter {
  private buf: Buffer = Buffer.alloc(0);
  /** Untyped messages still expected (the startup packet, preceded by an SSL or GSS request when one is sent). */
  untyped: number;
  /** Single bytes still expected (the backend's answer to an SSL or GSS request). */
  singleBytes = 0;

  constructor(untyped: number) {
    this.untyped = untyped;
  }

  push(chunk: Buffer, each: (type: string, body: Buffer) => void): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      if (this.singleBytes > 0) {
        if (this.buf.length < 1) return;
        each(`single:${String.fromCharCode(this.buf[0]!)}`, Buffer.alloc(0));
        this.buf = this.buf.subarray(1);
        this.singleBytes--;
        continue;
      }
      if (this.untyped > 0) {
        if (this.buf.length < 4) return;
        const len = this.buf.readInt32BE(0);
        if (this.buf.length < len) return;
        each('startup', this.buf.subarray(4, len));
        this.buf = this.buf.subarray(len);
        this.untyped--;
        continue;
      }
      if (this.buf.length < 5) return;
      const len = this.buf.readInt32BE(1);
      if (this.buf.length < 1 + len) return;
      each(String.fromCharCode(this.buf[0]!), this.buf.subarray(5, 1 + len));
      this.buf = this.buf.subarray(1 + len);
    }
  }
}

const cstring = (b: Buffer, from: number): [string, number] => {
  const end = b.indexOf(0, from);
  return [b.toString('utf8', from, end), end + 1];
};

/** Starts the proxy in front of the server `url` names; connect through `proxy.url`. */
export async function startWireProxy(url: string): Promise<WireProxy> {
  const target = new URL(url);
  const host = target.hostname || '127.0.0.1';
  const port = Number(target.port || 5432);
  const totals = emptyCounts();
  const add = (kind: StatementKind, text: string, ms: number) => {
    const k = (totals.byKind[kind] ??= { count: 0, ms: 0 });
    k.count++;
    k.ms += ms;
    const key = text.replace(/\s+/g, ' ').trim().slice(0, 160);
    const t = (totals.byText[key] ??= { count: 0, ms: 0 });
    t.count++;
    t.ms += ms;
  };
  const sockets = new Set<net.Socket>();

  const server = net.createServer((client) => {
    totals.connections++;
    const upstream = net.connect({ host, port });
    sockets.add(client).add(upstream);
    const statements = new Map<string, string>();
    let bound = '';
    /** Statements sent and not yet answered by ReadyForQuery, in order, with when their round trip began. */
    const inFlight: Array<{ at: number; text: string }> = [];
    let batch: string | undefined;
    let passthrough = false; // an encrypted session cannot be read: it is only forwarded
    const front = new Splitter(1);
    const back = new Splitter(0);

    client.on('data', (chunk: Buffer) => {
      const at = performance.now();
      if (!passthrough) {
        front.push(chunk, (type, body) => {
          if (type === 'startup') {
            const code = body.readInt32BE(0);
            if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
              front.untyped++;
              back.singleBytes++;
            }
          } else if (type === 'Q') {
            const text = cstring(body, 0)[0];
            inFlight.push({ at, text });
          } else if (type === 'P') {
            const [name, next] = cstring(body, 0);
            statements.set(name, cstring(body, next)[0]);
          } else if (type === 'B') {
            const [, next] = cstring(body, 0);
            bound = statements.get(cstring(body, next)[0]) ?? '';
          } else if (type === 'E') {
            batch = bound;
          } else if (type === 'S') {
            inFlight.push({ at, text: batch ?? '(sync)' });
            batch = undefined;
          }
        });
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      const at = performance.now();
      if (!passthrough) {
        back.push(chunk, (type) => {
          if (type === 'single:S' || type === 'single:G') passthrough = true;
          else if (type === 'Z') {
            const done = inFlight.shift();
            if (!done) return; // the end of start-up, not a query
            totals.roundTrips++;
            totals.ms += at - done.at;
            add(kindOf(done.text), done.text, at - done.at);
          } else if (type === 'A') totals.notifications++;
          else if (type === 'E') totals.errors++;
        });
      }
      client.write(chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxied = new URL(url);
  proxied.hostname = '127.0.0.1';
  proxied.port = String((server.address() as net.AddressInfo).port);
  proxied.searchParams.delete('host'); // a host given as a parameter (a socket directory) would bypass the proxy
  return {
    url: proxied.toString(),
    counts: () => clone(totals),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
