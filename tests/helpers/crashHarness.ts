/**
 * Crash safety against the real server process (issue 8). Each cycle: workers make acknowledged writes with unique
 * ids (LMTP deliveries, flag and category changes, moves, batches, folder creations) while a reader keeps a replica
 * of several folders in sync; the process is killed with SIGKILL at a random moment with writes in flight; the store
 * is checked (SQLite: `PRAGMA integrity_check` of the file; PostgreSQL: the mailbox invariants a torn write would
 * break, `checkDatabase`); the server is restarted and must hold every acknowledged write, and every sync token
 * issued before the kill must either bring its replica to exactly what a fresh sync holds or answer 410.
 *
 * On PostgreSQL (`databaseUrl`) a cycle's fault may instead be the database going away under a running server
 * (`fault: 'dropConnections'`): new connections are refused for a moment and every connection the server holds is
 * terminated (pg_terminate_backend) with writes in flight. Each request caught by it must be answered 503 (LMTP: a
 * 4xx reply), never a 2xx for a write that did not commit and never anything else; the server must not exit, and
 * must serve again once connections are allowed — then the same checks as after a restart.
 *
 * "Acknowledged" is what a client may rely on: a 2xx response read in full, or LMTP's 250 for the recipient. A write
 * in flight at the kill (sent, no answer) may or may not have happened, but a batch happens entirely or not at all,
 * and a client's retry of it (same opIds) or an MTA's redelivery (same Message-ID) leaves exactly one effect.
 */
import https from 'node:https';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { performance } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import nodemailer from 'nodemailer';
import { Client as PgClient } from 'pg';
import { startServer, type RunningServer } from './server';
import { openSqliteStore } from '../../server/store/sqlite';
import { openPostgresStore } from '../../server/store/postgres';
import { createUserAdmin } from '../../server/admin/users';
import { systemClock } from '../../server/clock';
import type { NewItem, Store } from '../../server/store/types';
import { postgresServerUrl, withClient } from './postgres';

export const ALICE = { username: 'alice', password: 'crash-password-0001', email: 'alice@example.com' };
const DEVICE_ID = 'crash-harness-device-0001';

/** Limits that would answer 429/503 to a test driving one device as fast as it can (the overload tests cover them). */
export const UNLIMITED_ENV = { PIGEON_DEVICE_RATE_LIMIT: '0', PIGEON_SHED_LAG_MS: '0', PIGEON_TOKEN_REQUESTS_PER_IP: '1000000' };

export interface Reply {
  status: number;
  body: any;
  headers: Record<string, string | string[] | undefined>;
}

/** A keep-alive HTTPS client with its own connections, so concurrent workers do not queue behind each other. */
export class Client {
  private readonly agent: https.Agent;
  constructor(
    readonly port: number,
    cert: string,
    sockets = 1,
  ) {
    this.agent = new https.Agent({ keepAlive: true, maxSockets: sockets, ca: cert, servername: 'localhost' });
  }

  request(method: string, p: string, headers: Record<string, string> = {}, body?: string | object): Promise<Reply> {
    const text = body === undefined || typeof body === 'string' ? body : JSON.stringify(body);
    const all = { ...headers, ...(text !== undefined && typeof body === 'object' ? { 'content-type': 'application/json' } : {}) };
    return new Promise((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port: this.port, method, path: p, headers: all, agent: this.agent }, (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (data += c));
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode!, body: data ? JSON.parse(data) : undefined, headers: res.headers });
          } catch (err) {
            reject(err);
          }
        });
        res.on('error', reject);
      });
      req.once('error', reject);
      req.end(text);
    });
  }

  close() {
    this.agent.destroy();
  }
}

/** The store the server under test keeps its data in: the SQLite file in `dataDir`, or PostgreSQL at `databaseUrl`. */
export function openCrashStore(dataDir: string, databaseUrl?: string): Promise<Store> {
  return databaseUrl ? openPostgresStore(databaseUrl, { poolSize: 2 }) : Promise.resolve(openSqliteStore(path.join(dataDir, 'pigeon.db')));
}

/** The server's environment for that store (the data directory still holds its development certificate). */
export function crashServerEnv(dataDir: string, databaseUrl?: string): Record<string, string> {
  return { PIGEON_DATA_DIR: dataDir, ...(databaseUrl ? { PIGEON_DATABASE_URL: databaseUrl } : {}), ...UNLIMITED_ENV };
}

/** Creates alice with a seeded inbox and, per worker, two folders with a few items only that worker touches. */
export async function seedCrashStore(dataDir: string, workers: number, inboxItems: number, itemsPerWorker: number, databaseUrl?: string) {
  const store = await openCrashStore(dataDir, databaseUrl);
  const user = await createUserAdmin(store, systemClock).addUser({ ...ALICE, role: 'user' });
  const inbox = (await store.folders.byKind(user.id, 'inbox'))!;
  const now = Date.now();
  const item = (folderId: string, receivedAt: number, subject: string): NewItem =>
    ({ userId: user.id, folderId, type: 'email', receivedAt, subject, from: { name: 'Seed', address: 'seed@example.org' }, preview: subject });
  const seeded = Array.from({ length: inboxItems }, (_, i) => item(inbox.id, now - 86_400_000 - i * 60_000, `seeded ${i}`));
  await store.run(function* (tx) {
    for (const s of seeded) yield* tx.items.create(s, now);
  });
  const owned = await store.run(function* (tx) {
    const out: Array<{ folders: [string, string]; items: string[] }> = [];
    for (let w = 0; w < workers; w++) {
      const a = yield* tx.folders.create(user.id, { displayName: `worker ${w} A`, parentId: null }, now);
      const b = yield* tx.folders.create(user.id, { displayName: `worker ${w} B`, parentId: null }, now);
      const items: string[] = [];
      for (let i = 0; i < itemsPerWorker; i++) items.push((yield* tx.items.create(item(a.id, now - i * 1000, `worker ${w} item ${i}`), now)).id);
      out.push({ folders: [a.id, b.id], items });
    }
    return out;
  });
  await store.close();
  return { inbox: inbox.id, owned };
}

/** What a worker's write may change about one of its items. */
interface ItemState {
  folderId: string;
  tag: string | null;
  flagged: boolean;
}
const stateOf = (view: any, folderId: string): ItemState => ({ folderId, tag: view.categories?.[0] ?? null, flagged: view.isFlagged });

interface Change {
  id: string;
  before: ItemState;
  after: ItemState;
}
type Write =
  | { kind: 'lmtp'; messageId: string; raw: string }
  | { kind: 'patch' | 'move'; changes: Change[] }
  | { kind: 'batch'; changes: Change[]; operations: object[] }
  | { kind: 'folder'; name: string };

/** A replica as an app keeps it: the last final token and the items (or folders) held. */
interface Replica {
  token?: string;
  held: Map<string, any>;
}
const copy = (r: Replica): Replica => ({ token: r.token, held: new Map(r.held) });

export interface CrashOptions {
  cycles: number;
  workers: number;
  windowMs: [number, number];
  /**
   * Writes each cycle must have acknowledged before its fault (waited for past the window, at most 20 s more): the
   * floor is then the cycle's own doing, not the machine's speed under whatever else it runs.
   */
  minAckedPerCycle?: number;
  inboxItems?: number;
  itemsPerWorker?: number;
  dataDir: string;
  /** PostgreSQL: the (fresh) database the server keeps everything in; unset: the SQLite file in `dataDir`. */
  databaseUrl?: string;
  /**
   * What ends each cycle's writes: `kill` (SIGKILL, then a restart), or, on PostgreSQL, `dropConnections` (the
   * database refuses connections for `outageMs` and terminates the server's, which keeps running).
   */
  fault?: 'kill' | 'dropConnections';
  outageMs?: [number, number];
  log?: (line: string) => void;
}

export interface CrashReport {
  cycles: number;
  acked: Record<Write['kind'], number>;
  ackedTotal: number;
  /** Writes sent and unanswered when the process was killed (with dropped connections: answered 503 or 4xx). */
  inFlightAtKill: number;
  /** Of those, how many had taken effect (seen after the restart). */
  inFlightApplied: number;
  /** Acknowledged writes missing or wrong after a restart (must be empty). */
  lost: string[];
  /** Anything else that broke a promise: integrity, sync convergence, atomicity, idempotent replays. */
  problems: string[];
  tokensChecked: number;
  tokens410: number;
  /** Milliseconds from spawn to `ready` for each restart after a kill (dropped connections: from connections allowed again to the first answer that needed the store). */
  restartMs: number[];
  /** Dropped connections: requests answered 503 (LMTP: 4xx) in all. */
  unavailable: number;
}

export async function runCrashCycles(opts: CrashOptions): Promise<CrashReport> {
  const fault = opts.fault ?? 'kill';
  if (fault === 'dropConnections' && !opts.databaseUrl) throw new Error('dropConnections: a PostgreSQL fault (set databaseUrl)');
  const seed = await seedCrashStore(opts.dataDir, opts.workers, opts.inboxItems ?? 300, opts.itemsPerWorker ?? 8, opts.databaseUrl);
  const log = opts.log ?? (() => undefined);
  const env = crashServerEnv(opts.dataDir, opts.databaseUrl);
  const report: CrashReport = {
    cycles: 0, acked: { lmtp: 0, patch: 0, move: 0, batch: 0, folder: 0 }, ackedTotal: 0, inFlightAtKill: 0, inFlightApplied: 0,
    lost: [], problems: [], tokensChecked: 0, tokens410: 0, restartMs: [], unavailable: 0,
  };
  const syncedFolders = [seed.inbox, ...seed.owned.flatMap((o) => o.folders)];
  const states = new Map<string, ItemState>();
  for (const o of seed.owned) for (const id of o.items) states.set(id, { folderId: o.folders[0], tag: null, flagged: false });
  const ackedMessageIds: string[] = [];
  const ackedFolders = new Map<string, string>();

  let server = await startServer(env);
  let client = new Client(server.port, server.cert, opts.workers + 2);
  const form = (fields: Record<string, string>) => new URLSearchParams({ client_id: 'pigeon-app', device_id: DEVICE_ID, ...fields }).toString();
  const formHeaders = { 'content-type': 'application/x-www-form-urlencoded' };
  const signIn = await client.request('POST', '/oauth2/token', formHeaders, form({ grant_type: 'password', username: ALICE.username, password: ALICE.password }));
  if (signIn.status !== 200) throw new Error(`sign-in failed: ${signIn.status}`);
  let refreshToken: string = signIn.body.refresh_token;
  let headers: Record<string, string> = { authorization: `Bearer ${signIn.body.access_token}`, 'x-device-id': DEVICE_ID };
  const registered = await client.request('POST', '/v1/devices', headers, { friendlyName: 'crash harness' });
  if (registered.status !== 201) throw new Error(`device registration failed: ${registered.status}`);

  // ---- sync, as an app does it ----
  const FOLDERS = 'folders';
  const syncPath = (key: string) => (key === FOLDERS ? '/v1/folders/sync' : `/v1/folders/${key}/items/sync`);
  /** Applies pages from the replica's token until moreAvailable:false; a 410 is returned as such. */
  async function sync(c: Client, key: string, start: Replica, maxChanges = 512): Promise<Replica | { gone: string }> {
    const r = copy(start);
    for (let pages = 0; ; pages++) {
      if (pages > 200) throw new Error(`sync of ${key} did not finish in 200 pages`);
      const q = new URLSearchParams({ maxChanges: String(maxChanges), ...(r.token ? { token: r.token } : {}) });
      const res = await c.request('GET', `${syncPath(key)}?${q}`, headers);
      if (res.status === 410) return { gone: String(res.body?.reason) };
      if (res.status !== 200) throw new Refused(res.status, `sync of ${key} answered ${res.status}: ${JSON.stringify(res.body)}`);
      const page = res.body;
      if (key === FOLDERS) {
        for (const id of page.deleted) r.held.delete(id);
      } else {
        for (const gone of page.removed) r.held.delete(gone.id);
      }
      for (const item of page.created) r.held.set(item.id, item);
      for (const item of page.updated) r.held.set(item.id, { ...r.held.get(item.id), ...item });
      r.token = page.token;
      if (!page.moreAvailable) return r;
    }
  }
  const fresh = async (key: string) => {
    const r = await sync(client, key, { held: new Map() });
    if ('gone' in r) throw new Error(`a sync from no token answered 410 ${r.gone}`);
    return r;
  };
  const difference = (label: string, got: Map<string, any>, want: Map<string, any>): string | undefined => {
    for (const [id, v] of want) if (!isDeepStrictEqual(got.get(id), v)) return `${label}: ${id} is ${JSON.stringify(got.get(id))}, a fresh sync has ${JSON.stringify(v)}`;
    for (const id of got.keys()) if (!want.has(id)) return `${label}: holds ${id}, which a fresh sync does not`;
    return undefined;
  };

  const replicas = new Map<string, Replica>();
  for (const key of [FOLDERS, ...syncedFolders]) replicas.set(key, await fresh(key));

  for (let cycle = 1; cycle <= opts.cycles; cycle++) {
    // The newest refresh token was acknowledged before the last kill: it must still work (no reuse detection).
    const refreshed = await client.request('POST', '/oauth2/token', formHeaders, form({ grant_type: 'refresh_token', refresh_token: refreshToken }));
    if (refreshed.status !== 200) throw new Error(`cycle ${cycle}: the acknowledged refresh token was refused (${refreshed.status} ${JSON.stringify(refreshed.body)})`);
    refreshToken = refreshed.body.refresh_token;
    headers = { ...headers, authorization: `Bearer ${refreshed.body.access_token}` };
    const before = new Map([...replicas].map(([k, r]) => [k, copy(r)]));

    // ---- writes until the fault ----
    let stopping = false;
    /** Set as the fault begins: from then on a write may fail (after a kill, in any way; dropped connections: 503). */
    let faulted = false;
    const pending: Array<Write | undefined> = [];
    const lastAckedBatch: Array<object[] | undefined> = [];
    const workerClients = seed.owned.map(() => new Client(server.port, server.cert));
    const readerClient = new Client(server.port, server.cert);
    let seq = 0;
    const lmtpPort = server.lmtpPort!;

    async function attempt(w: number, write: Write): Promise<void> {
      const c = workerClients[w]!;
      pending[w] = write;
      if (write.kind === 'lmtp') {
        const info = await deliver(lmtpPort, write.raw).catch((err: { responseCode?: number; message: string }) => {
          throw new Refused(err.responseCode ?? 0, `LMTP answered ${err.responseCode ?? 'nothing'}: ${err.message}`);
        });
        if (!info.accepted.includes(ALICE.email) || !/^250 /.test(info.response)) throw new Refused(Number(/^\d{3}/.exec(info.response)?.[0] ?? 0), `LMTP answered ${info.response}`);
        ackedMessageIds.push(write.messageId);
      } else if (write.kind === 'folder') {
        const res = await c.request('POST', '/v1/folders', headers, { displayName: write.name, parentId: null });
        if (res.status !== 201 || res.body.displayName !== write.name) throw new Refused(res.status, `folder create answered ${res.status}`);
        ackedFolders.set(res.body.id, write.name);
      } else {
        const res =
          write.kind === 'batch'
            ? await c.request('POST', '/v1/batch', headers, { operations: write.operations })
            : write.kind === 'move'
              ? await c.request('POST', `/v1/items/${write.changes[0]!.id}/move`, headers, { destinationFolderId: write.changes[0]!.after.folderId })
              : await c.request('PATCH', `/v1/items/${write.changes[0]!.id}`, headers, { isFlagged: write.changes[0]!.after.flagged, categories: [write.changes[0]!.after.tag] });
        if (res.status !== 200) throw new Refused(res.status, `${write.kind} answered ${res.status}: ${JSON.stringify(res.body)}`);
        const views = write.kind === 'batch' ? res.body.results.map((r: any) => (r.status === 200 ? r.item : r)) : [res.body];
        write.changes.forEach((ch, i) => {
          if (!isDeepStrictEqual(stateOf(views[i], views[i].folderId ?? ch.after.folderId), ch.after)) throw new Error(`${write.kind} answered ${JSON.stringify(views[i])}, not ${JSON.stringify(ch.after)}`);
          states.set(ch.id, ch.after);
        });
        if (write.kind === 'batch') lastAckedBatch[w] = write.operations;
      }
      pending[w] = undefined;
      report.acked[write.kind]++;
      report.ackedTotal++;
    }

    function nextWrite(w: number): Write {
      const n = ++seq;
      const unique = `c${cycle}-w${w}-${n}`;
      const mine = seed.owned[w]!;
      const pick = (count: number) => [...mine.items].sort(() => Math.random() - 0.5).slice(0, count);
      const tagged = (id: string): Change => {
        const s = states.get(id)!;
        return { id, before: s, after: { ...s, tag: `tag-${unique}`, flagged: !s.flagged } };
      };
      const moved = (id: string): Change => {
        const s = states.get(id)!;
        return { id, before: s, after: { ...s, folderId: s.folderId === mine.folders[0] ? mine.folders[1] : mine.folders[0] } };
      };
      const roll = Math.random();
      if (roll < 0.3) {
        const messageId = `<${unique}.${Date.now()}@crash.example>`;
        return { kind: 'lmtp', messageId, raw: rawMessage(messageId, `crash ${unique}`) };
      }
      if (roll < 0.6) return { kind: 'patch', changes: [tagged(pick(1)[0]!)] };
      if (roll < 0.8) return { kind: 'move', changes: [moved(pick(1)[0]!)] };
      if (roll < 0.93) {
        const changes = pick(2 + Math.floor(Math.random() * 3)).map((id, i) => (i % 2 ? moved(id) : tagged(id)));
        const operations = changes.map((ch, i) =>
          ch.before.folderId !== ch.after.folderId
            ? { opId: `${unique}-${i}`, op: 'move', id: ch.id, destinationFolderId: ch.after.folderId }
            : { opId: `${unique}-${i}`, op: 'update', id: ch.id, isFlagged: ch.after.flagged, categories: [ch.after.tag] },
        );
        return { kind: 'batch', changes, operations };
      }
      return { kind: 'folder', name: `crash folder ${unique}` };
    }

    /**
     * A failure after the fault began: after a kill, any (the write is in flight); with dropped connections, only
     * "unavailable" (HTTP 503, LMTP 4xx: the client retries later), counted. Before the fault, any failure is a finding.
     */
    const failedAtFault = (who: string, err: unknown) => {
      const message = (err as Error).message;
      if (!faulted) return void report.problems.push(`cycle ${cycle} ${who}: ${message}`);
      if (fault === 'kill') return;
      if (isUnavailable(err)) return void report.unavailable++;
      report.problems.push(`cycle ${cycle} ${who}, with the database connections dropped: ${message} (expected 503, or LMTP 4xx)`);
    };

    async function worker(w: number) {
      while (!stopping) {
        const write = nextWrite(w);
        try {
          await attempt(w, write);
        } catch (err) {
          // After the fault an unanswered (or refused) write is "in flight": it may or may not have taken effect.
          failedAtFault(`worker ${w}`, err);
          return;
        }
      }
    }

    /** Keeps the replicas current in small pages, so tokens issued moments before the kill are checked too. */
    async function reader() {
      const keys = [...replicas.keys()];
      for (let i = 0; !stopping; i++) {
        const key = keys[i % keys.length]!;
        try {
          const r = await sync(readerClient, key, replicas.get(key)!, 20);
          if ('gone' in r) throw new Error(`410 ${r.gone} while the server was up`);
          replicas.set(key, r); // answered in full: a token the server issued, even if the kill follows at once
        } catch (err) {
          failedAtFault('reader', err);
          return;
        }
      }
    }

    const ackedBefore = report.ackedTotal;
    const running = [...seed.owned.map((_, w) => worker(w)), reader()];
    const windowMs = opts.windowMs[0] + Math.random() * (opts.windowMs[1] - opts.windowMs[0]);
    await new Promise((r) => setTimeout(r, windowMs));
    const floorBy = performance.now() + 20_000;
    while (report.ackedTotal - ackedBefore < (opts.minAckedPerCycle ?? 0) && performance.now() < floorBy) await new Promise((r) => setTimeout(r, 10));
    if (fault === 'kill') {
      stopping = faulted = true;
      server.proc.kill('SIGKILL');
      await Promise.all(running);
      if ((await server.exited).signal !== 'SIGKILL') report.problems.push(`cycle ${cycle}: the server had exited before the kill`);
    } else {
      // The writes go on through the outage: each worker stops at its first refused write.
      faulted = true;
      const url = opts.databaseUrl!;
      const [low, high] = opts.outageMs ?? [300, 1500];
      await refuseConnections(url, true);
      const terminated = await terminateConnections(url);
      await new Promise((r) => setTimeout(r, low + Math.random() * (high - low)));
      await refuseConnections(url, false);
      stopping = true;
      const unanswered = await deadline(Promise.all(running), 30_000);
      if (unanswered) throw new Error(`cycle ${cycle}: requests still unanswered 30 s after the database connections were dropped`);
      if (terminated === 0) report.problems.push(`cycle ${cycle}: the server held no connection to the database to terminate`);
      if (server.proc.exitCode !== null || server.proc.signalCode !== null) {
        throw new Error(`cycle ${cycle}: the server exited when its database connections were dropped: ${server.stderr.join('').slice(-2000)}`);
      }
    }
    for (const c of [...workerClients, readerClient, client]) c.close();
    if (fault === 'kill') await server.stop();
    const inFlight = pending.filter((p): p is Write => p !== undefined);
    report.inFlightAtKill += inFlight.length;

    // ---- the store, before anything touches it again ----
    const integrity = opts.databaseUrl ? await checkDatabase(opts.databaseUrl) : checkFile(path.join(opts.dataDir, 'pigeon.db'));
    if (integrity !== 'ok') report.problems.push(`cycle ${cycle}: ${opts.databaseUrl ? 'checkDatabase' : 'integrity_check'}: ${integrity}`);

    // ---- restart (dropped connections: the same server, once it answers from the store again) ----
    const t0 = performance.now();
    if (fault === 'kill') server = await startServer(env);
    client = new Client(server.port, server.cert, opts.workers + 2);
    if (fault === 'dropConnections') await servingAgain(client, headers, cycle);
    report.restartMs.push(performance.now() - t0);
    const verifyStart = performance.now();

    // ---- tokens issued before the kill: the cycle-start ones and the reader's latest ----
    const now = new Map(await Promise.all([...replicas.keys()].map(async (key) => [key, await fresh(key)] as const)));
    const checks: Array<[string, string, Replica]> = [
      ...[...before].map(([key, r]): [string, string, Replica] => ['cycle-start', key, r]),
      ...[...replicas].map(([key, r]): [string, string, Replica] => ['latest', key, r]),
    ];
    await Promise.all(
      checks.map(async ([label, key, r]) => {
        report.tokensChecked++;
        const synced = await sync(client, key, r);
        if ('gone' in synced) return void report.tokens410++;
        const diff = difference(`cycle ${cycle} ${label} token of ${key === FOLDERS ? 'the hierarchy' : key}`, synced.held, now.get(key)!.held);
        if (diff) report.problems.push(diff);
      }),
    );

    // ---- every acknowledged write is there ----
    const inbox = now.get(seed.inbox)!.held;
    const copies = (messageId: string) => [...inbox.values()].filter((i) => i.internetMessageId === messageId).length;
    for (const id of ackedMessageIds.filter((m) => m.includes(`<c${cycle}-`))) if (copies(id) !== 1) report.lost.push(`cycle ${cycle}: LMTP ${id} acknowledged, ${copies(id)} copies after restart`);
    const folders = now.get(FOLDERS)!.held;
    for (const [id, name] of ackedFolders) if (folders.get(id)?.displayName !== name) report.lost.push(`cycle ${cycle}: folder ${name} acknowledged, missing after restart`);
    const actual = new Map<string, ItemState>();
    for (const o of seed.owned) for (const f of o.folders) for (const [id, v] of now.get(f)!.held) actual.set(id, stateOf(v, f));
    const inFlightChanges = new Map(inFlight.flatMap((w) => ('changes' in w ? w.changes : [])).map((ch) => [ch.id, ch]));
    for (const [id, acked] of states) {
      const got = actual.get(id);
      const ch = inFlightChanges.get(id);
      if (isDeepStrictEqual(got, acked) || (ch && isDeepStrictEqual(got, ch.after))) continue;
      report.lost.push(`cycle ${cycle}: item ${id} acknowledged as ${JSON.stringify(acked)}, is ${JSON.stringify(got)} after restart`);
    }

    // ---- writes in flight: all or nothing, and a retry has exactly one effect ----
    const retries = inFlight.map(async (write) => {
      if (write.kind === 'lmtp') {
        const was = copies(write.messageId);
        if (was > 1) report.problems.push(`cycle ${cycle}: in-flight LMTP ${write.messageId} stored ${was} times`);
        report.inFlightApplied += was;
        const info = await deliver(server.lmtpPort!, write.raw);
        if (!/^250 /.test(info.response)) report.problems.push(`cycle ${cycle}: redelivery of ${write.messageId} answered ${info.response}`);
        ackedMessageIds.push(write.messageId); // the final check requires exactly one copy
      } else if (write.kind === 'folder') {
        report.inFlightApplied += [...folders.values()].some((f) => f.displayName === write.name) ? 1 : 0;
      } else {
        const applied = write.changes.map((ch) => isDeepStrictEqual(actual.get(ch.id), ch.after));
        if (applied.some((a) => a !== applied[0])) report.problems.push(`cycle ${cycle}: ${write.kind} in flight was applied in part: ${JSON.stringify(applied)}`);
        report.inFlightApplied += applied[0] ? 1 : 0;
        for (const ch of write.changes) states.set(ch.id, applied[0] ? ch.after : ch.before);
        if (write.kind !== 'batch') return;
        // The app retries the batch with the same opIds: answered from the record if it committed, applied if not.
        const retry = await client.request('POST', '/v1/batch', headers, { operations: write.operations });
        const replayed = retry.body?.results?.map((r: any) => r.replayed === true);
        if (retry.status !== 200 || replayed.some((r: boolean) => r !== applied[0])) {
          report.problems.push(`cycle ${cycle}: retried batch (applied before: ${applied[0]}) answered ${retry.status} replayed=${JSON.stringify(replayed)}`);
        }
        for (const ch of write.changes) states.set(ch.id, ch.after);
      }
    });
    // An acknowledged batch replayed after the crash is answered from its record and changes nothing.
    const replays = lastAckedBatch.map(async (operations) => {
      if (!operations) return;
      const replay = await client.request('POST', '/v1/batch', headers, { operations });
      if (replay.status !== 200 || !replay.body.results.every((r: any) => r.replayed === true)) {
        report.problems.push(`cycle ${cycle}: acknowledged batch replayed after restart was applied again: ${JSON.stringify(replay.body).slice(0, 300)}`);
      }
    });
    await Promise.all([...retries, ...replays]);
    // The live replicas catch up with the retries (the next cycle checks these tokens against a fresh sync).
    await Promise.all(
      [...replicas.keys()].map(async (key) => {
        const r = await sync(client, key, replicas.get(key)!);
        if ('gone' in r) report.tokens410++;
        replicas.set(key, 'gone' in r ? await fresh(key) : r);
      }),
    );
    for (const key of syncedFolders.filter((k) => k !== seed.inbox)) {
      for (const [id, v] of replicas.get(key)!.held) {
        if (!isDeepStrictEqual(stateOf(v, key), states.get(id))) report.problems.push(`cycle ${cycle}: item ${id} is ${JSON.stringify(stateOf(v, key))} after the retries, expected ${JSON.stringify(states.get(id))}`);
      }
    }
    report.cycles = cycle;
    log(`cycle ${cycle}: window ${Math.round(windowMs)} ms, ${report.ackedTotal} acked so far, ${inFlight.length} in flight at the ${fault === 'kill' ? 'kill' : 'fault'}, ${fault === 'kill' ? 'restart' : 'serving again after'} ${Math.round(report.restartMs.at(-1)!)} ms, checks ${Math.round(performance.now() - verifyStart)} ms`);
  }

  client.close();
  await server.stop();
  // Across all cycles, straight from the store: every acknowledged message once, every acknowledged folder there.
  const copies = await messageCopies(opts.dataDir, opts.databaseUrl);
  for (const id of ackedMessageIds) {
    const n = copies.get(id) ?? 0;
    if (n !== 1) report.lost.push(`LMTP ${id}: ${n} copies at the end`);
  }
  const store = await openCrashStore(opts.dataDir, opts.databaseUrl);
  try {
    const user = (await store.users.byUsername(ALICE.username))!;
    for (const [id, name] of ackedFolders) if ((await store.folders.byId(user.id, id))?.displayName !== name) report.lost.push(`folder ${name} missing at the end`);
  } finally {
    await store.close();
  }
  return report;
}

/** A request refused by the server: its HTTP status (or LMTP reply code). */
class Refused extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** "Try again later": HTTP 503, or an LMTP 4xx reply (the MTA keeps the message and retries). */
const isUnavailable = (err: unknown) => err instanceof Refused && (err.status === 503 || (err.status >= 400 && err.status < 500 && err.message.startsWith('LMTP')));

/** Resolves true when `promise` has not settled within `ms`. */
async function deadline(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), ms)));
  try {
    return await Promise.race([promise.then(() => false), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls a request that needs the store (a hierarchy sync from scratch) until it answers 200: at most 20 s. */
async function servingAgain(client: Client, headers: Record<string, string>, cycle: number) {
  const until = performance.now() + 20_000;
  for (;;) {
    const res = await client.request('GET', '/v1/folders/sync?maxChanges=1', headers).catch((err: Error) => ({ status: 0, body: err.message }));
    if (res.status === 200) return;
    if (res.status !== 503) throw new Error(`cycle ${cycle}: after the database came back, a hierarchy sync answered ${res.status}: ${JSON.stringify(res.body)}`);
    if (performance.now() > until) throw new Error(`cycle ${cycle}: the server still answers 503 20 s after the database accepts connections again`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The database's name in `url`. */
const databaseName = (url: string) => decodeURIComponent(new URL(url).pathname.slice(1));

/**
 * Makes the database refuse (or accept again) every new connection, superusers' too (ALLOW_CONNECTIONS), from an
 * administrator's connection to the server's maintenance database.
 */
async function refuseConnections(url: string, refuse: boolean) {
  const name = databaseName(url).replace(/"/g, '""');
  await withClient(postgresServerUrl(), (c) => c.query(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS ${refuse ? 'false' : 'true'}`));
}

/** Terminates every connection to the database (the server's pool, its feed and its lock connections); how many. */
async function terminateConnections(url: string): Promise<number> {
  return withClient(postgresServerUrl(), async (c) => {
    const r = await c.query<{ ok: boolean }>('SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [
      databaseName(url),
    ]);
    return r.rows.filter((row) => row.ok).length;
  });
}

/** How many items carry each Message-ID, counted in the store's own tables. */
async function messageCopies(dataDir: string, databaseUrl?: string): Promise<Map<string, number>> {
  const sql = 'SELECT internet_message_id AS id, count(*) AS n FROM items WHERE internet_message_id IS NOT NULL GROUP BY internet_message_id';
  let rows: Array<{ id: string; n: number | string }>;
  if (databaseUrl) {
    rows = await withClient(databaseUrl, async (c) => (await c.query<{ id: string; n: string }>(sql)).rows);
  } else {
    const db = new Database(path.join(dataDir, 'pigeon.db'), { readonly: true, fileMustExist: true });
    try {
      rows = db.prepare(sql).all() as Array<{ id: string; n: number }>;
    } finally {
      db.close();
    }
  }
  return new Map(rows.map((r) => [r.id, Number(r.n)]));
}

/**
 * PostgreSQL's counterpart of the file check after a crash. The database itself needs none (its WAL replays every
 * committed transaction and nothing else), so what is checked is what a write torn across transactions would break:
 * every folder's counters equal a recount of its items, nothing carries a modseq above its mailbox's, and every item's
 * modseq has its change-log row. 'ok', or what is wrong.
 */
export async function checkDatabase(url: string): Promise<string> {
  const problems: string[] = [];
  await withClient(url, async (c: PgClient) => {
    const counters = await c.query(
      `SELECT f.id, f.total_count, f.unread_count, count(i.id)::int AS total, (count(i.id) FILTER (WHERE NOT i.is_read))::int AS unread
       FROM folders f LEFT JOIN items i ON i.user_id = f.user_id AND i.folder_id = f.id
       GROUP BY f.user_id, f.id HAVING f.total_count <> count(i.id) OR f.unread_count <> count(i.id) FILTER (WHERE NOT i.is_read)`,
    );
    for (const r of counters.rows) problems.push(`folder ${r.id} counts ${r.total_count}/${r.unread_count} (total/unread), holds ${r.total}/${r.unread}`);
    const ahead = await c.query<{ what: string; n: number }>(
      `SELECT 'items' AS what, count(*)::int AS n FROM items i JOIN mailboxes m USING (user_id) WHERE i.modseq > m.highest_modseq
       UNION ALL SELECT 'changes', count(*)::int FROM changes c JOIN mailboxes m USING (user_id) WHERE c.modseq > m.highest_modseq
       UNION ALL SELECT 'folders', count(*)::int FROM folders f JOIN mailboxes m USING (user_id) WHERE greatest(f.modseq, f.content_modseq) > m.highest_modseq`,
    );
    for (const r of ahead.rows) if (r.n > 0) problems.push(`${r.n} ${r.what} rows carry a modseq above their mailbox's`);
    const unlogged = await c.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM items i JOIN mailboxes m USING (user_id)
       WHERE i.modseq > m.purged_modseq AND NOT EXISTS (SELECT 1 FROM changes c WHERE c.user_id = i.user_id AND c.modseq = i.modseq)`,
    );
    if (unlogged.rows[0]!.n > 0) problems.push(`${unlogged.rows[0]!.n} items whose last change has no change-log row`);
  });
  return problems.length ? problems.join('; ') : 'ok';
}

/** `PRAGMA integrity_check` (and foreign keys) on a read-only connection, which leaves the WAL for the server to recover. */
export function checkFile(file: string): string {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const rows = db.pragma('integrity_check') as Array<{ integrity_check: string }>;
    const result = rows.map((r) => r.integrity_check).join('; ');
    const orphans = db.pragma('foreign_key_check') as unknown[];
    return orphans.length ? `${result}; ${orphans.length} foreign key violations` : result;
  } finally {
    db.close();
  }
}

export function rawMessage(messageId: string, subject: string): string {
  return [`From: Sender <sender@example.org>`, `To: Alice <${ALICE.email}>`, `Subject: ${subject}`, `Message-ID: ${messageId}`,
    `Date: ${new Date().toUTCString()}`, 'MIME-Version: 1.0', 'Content-Type: text/plain; charset=utf-8', '', `Body of ${subject}.`, ''].join('\r\n');
}

/** One LMTP delivery to alice, as an MTA makes it. */
export function deliver(port: number, raw: string) {
  const transport = nodemailer.createTransport({ lmtp: true, host: '127.0.0.1', port, ignoreTLS: true });
  return transport.sendMail({ envelope: { from: 'sender@example.org', to: [ALICE.email] }, raw }).finally(() => transport.close());
}
