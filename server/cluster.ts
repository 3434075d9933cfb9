/**
 * Workers (PIGEON_WORKERS > 1): the primary process and the IPC between it and its workers.
 *
 * The primary serves no request. It prepares what must happen once (migrations, the demo tenant, generated keys and
 * certificate: main.ts, before it forks), forks the workers — each one runs today's whole server, HTTPS with the
 * fast lane and LMTP, on listening sockets node:cluster shares between them — and then:
 * - relays what the workers must learn from each other: commits (push's change feed), device cuts, push channel
 *   opens and releases, ping watermarks (push/clusterBus.ts says why each);
 * - keeps the counts of the token endpoint's rate limits (login failure budgets, requests per address), so N
 *   workers never mean N times the guessing budget (`IpcRateLimitStore` asks it for each count);
 * - names one worker the leader, which runs what must run once: the relay (outbox), the inactivity purge, the
 *   history purge. Last-seen flushing stays in every worker (each flushes its own buffer). A new leader is named
 *   when the leader dies;
 * - serves the metrics listener: a scrape asks every worker for its registry and sums them (with the primary's own);
 * - restarts a worker that dies unexpectedly, after a back-off that grows while workers keep dying young;
 * - logs `ready` once every worker is listening, and on SIGTERM/SIGINT tells every worker to drain, waits for them
 *   (at most PIGEON_SHUTDOWN_TIMEOUT plus a margin, then kills what is left) and exits 0.
 *
 * Per worker, and so N times over with N workers: the per-device request rate (http/overload.ts: a token bucket on
 * every request, where an IPC round trip would cost more than the request; a device's connection stays on one
 * worker, so one connection still meets the limit), the load shedder (each process's own event loop) and the hot
 * cache (which sees the other workers' commits through SQLite's data_version).
 *
 * With PostgreSQL (PIGEON_DATABASE_URL) each worker is a node of its own, like the servers on other machines that
 * share the database: commits reach it from the database's feed (so the primary does not relay them), the token
 * endpoint counts in the database (`DatabaseRateLimitStore`, so all nodes count together), and the leader's jobs run
 * under the store's `exclusive`, so the leaders of all the nodes take turns. Device cuts, push channels and
 * watermarks still travel through the primary, between the workers of one node.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import { AggregatorRegistry, Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { MemoryStore, type ClientRateLimitInfo, type Options as RateLimitOptions, type Store as RateLimitStore } from 'express-rate-limit';
import type { SharedCounters } from './store/postgres';
import type { ClusterLink, ClusterMessage } from './push/clusterBus';
import { ChannelBook } from './push/clusterBus';

/** How long a worker waits for the primary's answer (a rate-limit count) before the request fails. */
const REQUEST_TIMEOUT_MS = 5_000;
/** How long a scrape waits for a worker's metrics; one that does not answer in time is left out of that scrape. */
const METRICS_TIMEOUT_MS = 3_000;
/** Restart back-off: the first restart waits this long, each further one of a worker that died young doubles it. */
const RESTART_FIRST_MS = 250;
const RESTART_MAX_MS = 30_000;
/** A worker that lived this long resets the back-off. */
const RESTART_RESET_AFTER_MS = 60_000;
/**
 * The workers' own drain is bounded by PIGEON_SHUTDOWN_TIMEOUT; this much more covers their final steps (the relay's
 * abort, the last-seen flush, the 2 s log flush). deploy/pigeon.service stops after 40 s: 30 s + 5 s fits.
 */
export const SHUTDOWN_MARGIN_MS = 5_000;

/** The number of workers PIGEON_WORKERS asks for: 0 means one per available core. */
export function workerCount(setting: number, cores: number): number {
  return setting > 0 ? setting : Math.max(1, cores);
}

function isMessage(m: unknown): m is ClusterMessage {
  return typeof m === 'object' && m !== null && typeof (m as { pigeon?: unknown }).pigeon === 'string';
}

// ---------------------------------------------------------------------------------------------------------------
// Worker side

export interface WorkerLink extends ClusterLink {
  /** cluster.worker.id: 1, 2, ... (a restarted worker gets a new one). */
  readonly id: number;
  /** Sends and waits for the primary's reply (`{pigeon: 'reply', id}`), at most `timeoutMs`. */
  request(message: ClusterMessage, timeoutMs?: number): Promise<ClusterMessage>;
}

/** This worker's link to the primary (process.send / process 'message'). */
export function workerLink(): WorkerLink {
  if (!cluster.isWorker || !process.send) throw new Error('workerLink() outside a cluster worker');
  const handlers = new Map<string, Array<(m: ClusterMessage) => void>>();
  const pending = new Map<number, { resolve: (m: ClusterMessage) => void; reject: (err: Error) => void; timer: NodeJS.Timeout }>();
  let next = 0;
  const send = (message: ClusterMessage) => {
    if (!process.connected) return;
    try {
      process.send!(message, undefined, {}, () => undefined); // a failure (channel closing) is not worth a crash
    } catch {
      /* the channel is gone: the primary is going away, and so are we */
    }
  };
  process.on('message', (m: unknown) => {
    if (!isMessage(m)) return;
    if (m.pigeon === 'reply') {
      const p = pending.get(Number(m.id));
      if (!p) return;
      pending.delete(Number(m.id));
      clearTimeout(p.timer);
      return p.resolve(m);
    }
    for (const fn of handlers.get(m.pigeon) ?? []) fn(m);
  });
  return {
    id: cluster.worker!.id,
    send,
    on(type, fn) {
      const list = handlers.get(type) ?? [];
      list.push(fn);
      handlers.set(type, list);
    },
    request(message, timeoutMs = REQUEST_TIMEOUT_MS) {
      const id = ++next;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`no answer from the primary to ${message.pigeon} in ${timeoutMs} ms`));
        }, timeoutMs);
        timer.unref();
        pending.set(id, { resolve, reject, timer });
        send({ ...message, id });
      });
    },
  };
}

/**
 * An express-rate-limit store whose counts live in the primary (one count per key for every worker together).
 * Each call is one IPC round trip; only the token endpoint uses it.
 */
export class IpcRateLimitStore implements RateLimitStore {
  /** Counts are shared by every worker: a key counted here is counted everywhere. */
  readonly localKeys = false;
  private windowMs = 60_000;

  constructor(
    private readonly link: WorkerLink,
    readonly prefix: string,
  ) {}

  init(options: RateLimitOptions): void {
    this.windowMs = options.windowMs;
  }

  private async ask(op: 'get' | 'increment' | 'decrement' | 'resetKey', key: string): Promise<ClientRateLimitInfo | undefined> {
    const reply = await this.link.request({ pigeon: 'rl', op, name: this.prefix, windowMs: this.windowMs, key });
    if (typeof reply.error === 'string') throw new Error(reply.error);
    return typeof reply.hits === 'number' ? { totalHits: reply.hits, resetTime: typeof reply.reset === 'number' ? new Date(reply.reset) : undefined } : undefined;
  }

  get(key: string) {
    return this.ask('get', key);
  }

  async increment(key: string): Promise<ClientRateLimitInfo> {
    return (await this.ask('increment', key)) ?? { totalHits: 1, resetTime: undefined };
  }

  async decrement(key: string): Promise<void> {
    await this.ask('decrement', key);
  }

  async resetKey(key: string): Promise<void> {
    await this.ask('resetKey', key);
  }
}

/**
 * An express-rate-limit store whose counts are rows in the shared database (PostgreSQL: `SharedCounters`), so every
 * node, and every worker of each, counts together. Each call is one statement; only the token endpoint uses it.
 */
export class DatabaseRateLimitStore implements RateLimitStore {
  /** Counts are shared by every node: a key counted here is counted everywhere. */
  readonly localKeys = false;
  private windowMs = 60_000;

  constructor(
    private readonly counters: SharedCounters,
    readonly prefix: string,
  ) {}

  init(options: RateLimitOptions): void {
    this.windowMs = options.windowMs;
  }

  async get(key: string): Promise<ClientRateLimitInfo | undefined> {
    const count = await this.counters.get(this.prefix, key);
    return count && { totalHits: count.hits, resetTime: new Date(count.resetAt) };
  }

  async increment(key: string): Promise<ClientRateLimitInfo> {
    const count = await this.counters.increment(this.prefix, key, this.windowMs);
    return { totalHits: count.hits, resetTime: new Date(count.resetAt) };
  }

  async decrement(key: string): Promise<void> {
    await this.counters.decrement(this.prefix, key);
  }

  async resetKey(key: string): Promise<void> {
    await this.counters.reset(this.prefix, key);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Primary side

/** The rate-limit counts the primary keeps for the workers: one express-rate-limit MemoryStore per limiter. */
export class RateLimitCounts {
  private readonly stores = new Map<string, MemoryStore>();

  async apply(m: ClusterMessage): Promise<{ hits?: number; reset?: number }> {
    const name = String(m.name);
    let store = this.stores.get(name);
    if (!store) {
      store = new MemoryStore();
      store.init({ windowMs: Number(m.windowMs) || 60_000 } as RateLimitOptions);
      this.stores.set(name, store);
    }
    const key = String(m.key);
    let info: ClientRateLimitInfo | undefined;
    switch (m.op) {
      case 'get':
        info = await store.get(key);
        break;
      case 'increment':
        info = await store.increment(key);
        break;
      case 'decrement':
        await store.decrement(key);
        break;
      case 'resetKey':
        await store.resetKey(key);
        break;
      default:
        throw new Error(`unknown rate-limit operation ${String(m.op)}`);
    }
    return info ? { hits: info.totalHits, reset: info.resetTime?.getTime() } : {};
  }

  shutdown(): void {
    for (const store of this.stores.values()) store.shutdown();
  }
}

interface WorkerState {
  worker: Worker;
  startedAt: number;
  /** Said hello: its handlers are in place, so relayed messages reach it. */
  hello: boolean;
  listening: boolean;
  ports?: { port: number; lmtpPort?: number };
}

export interface PrimaryOptions {
  workers: number;
  log: Logger;
  shutdownTimeoutMs: number;
  /** Called once, when every worker of the first generation is listening (main.ts logs `ready`). */
  onReady(ports: { port: number; lmtpPort?: number }): void;
  /** Called when shutdown is complete (every worker gone) or startup failed; main.ts exits with `code`. */
  onExit(code: number): Promise<void> | void;
}

export interface Primary {
  /** For the metrics listener: the primary's own metrics and every worker's, summed. */
  metrics: { metrics(): Promise<string>; contentType: string };
  /** SIGTERM/SIGINT: every worker drains; `onExit(0)` once they are gone. */
  stop(signal: string): void;
  /** Live workers (for tests). */
  readonly size: number;
}

export function startPrimary(o: PrimaryOptions): Primary {
  const { log } = o;
  const states = new Map<number, WorkerState>();
  const book = new ChannelBook();
  const limits = new RateLimitCounts();
  const scrapes = new Map<number, { resolve: (json: unknown) => void }>();
  let scrapeSeq = 0;
  let leader: number | undefined;
  let ready = false;
  let stopping = false;
  let failed = false;
  let restartDelay = RESTART_FIRST_MS;
  const restartTimers = new Set<NodeJS.Timeout>();

  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  new Gauge({
    name: 'pigeon_workers',
    help: 'Worker processes listening (PIGEON_WORKERS).',
    registers: [registry],
    collect() {
      this.set([...states.values()].filter((s) => s.listening).length);
    },
  });
  const restarts = new Counter({ name: 'pigeon_worker_restarts_total', help: 'Workers restarted after they exited unexpectedly.', registers: [registry] });

  const post = (state: WorkerState | undefined, message: ClusterMessage) => {
    if (!state || !state.worker.isConnected()) return;
    try {
      state.worker.send(message, undefined, () => undefined);
    } catch {
      /* exiting: its exit event follows */
    }
  };
  /** To every worker but `from` that said hello (the others are still starting and will ask for a snapshot). */
  const relay = (from: number, message: ClusterMessage) => {
    for (const [id, state] of states) if (id !== from && state.hello) post(state, message);
  };

  const elect = () => {
    if (stopping || (leader !== undefined && states.has(leader))) return;
    leader = undefined;
    const candidate = [...states.entries()].filter(([, s]) => s.listening).sort(([a], [b]) => a - b)[0];
    if (!candidate) return;
    leader = candidate[0];
    post(candidate[1], { pigeon: 'lead' });
    log.info({ leader }, 'leader elected (relay, purges)');
  };

  const fork = () => {
    const worker = cluster.fork();
    states.set(worker.id, { worker, startedAt: Date.now(), hello: false, listening: false });
  };

  cluster.on('message', (worker, m: unknown) => {
    if (!isMessage(m)) return;
    const state = states.get(worker.id);
    if (!state) return;
    switch (m.pigeon) {
      case 'hello':
        state.hello = true;
        post(state, { pigeon: 'ch-snap', entries: book.entries(worker.id) });
        break;
      case 'listening': {
        state.listening = true;
        state.ports = { port: Number(m.port), lmtpPort: typeof m.lmtpPort === 'number' ? m.lmtpPort : undefined };
        if (stopping) {
          post(state, { pigeon: 'drain', signal: 'shutdown' });
          break;
        }
        elect();
        const all = [...states.values()];
        if (!ready && all.length === o.workers && all.every((s) => s.listening)) {
          ready = true;
          o.onReady(state.ports);
        }
        break;
      }
      case 'change':
      case 'cut':
      case 'wm':
        relay(worker.id, m);
        break;
      case 'ch+': {
        const older = book.open(worker.id, String(m.u), String(m.r), Number(m.id));
        if (older) post(states.get(older.worker), { pigeon: 'ch-end', r: m.r, id: older.id });
        relay(worker.id, { pigeon: 'ch+', w: worker.id, u: m.u, r: m.r, id: m.id });
        break;
      }
      case 'ch-':
        book.release(worker.id, String(m.r), Number(m.id));
        relay(worker.id, { pigeon: 'ch-', w: worker.id, r: m.r, id: m.id });
        break;
      case 'kick':
        if (leader !== undefined && leader !== worker.id) post(states.get(leader), { pigeon: 'kick' });
        break;
      case 'rl':
        limits.apply(m).then(
          (r) => post(state, { pigeon: 'reply', id: m.id, ...r }),
          (err: Error) => post(state, { pigeon: 'reply', id: m.id, error: err.message }),
        );
        break;
      case 'metrics': {
        const s = scrapes.get(Number(m.id));
        if (s) s.resolve(m.json);
        break;
      }
    }
  });

  let exitTimer: NodeJS.Timeout | undefined;
  let finished = false;
  const finish = async (code: number) => {
    if (finished) return;
    finished = true;
    clearTimeout(exitTimer);
    limits.shutdown();
    await o.onExit(code);
  };

  cluster.on('exit', (worker, code, signal) => {
    const state = states.get(worker.id);
    states.delete(worker.id);
    book.gone(worker.id);
    relay(worker.id, { pigeon: 'ch-gone', w: worker.id });
    if (leader === worker.id) leader = undefined;
    if (stopping) {
      if (states.size === 0) void finish(failed ? 1 : 0);
      return;
    }
    if (!ready) {
      // A worker that cannot start (a port taken, a bad certificate) would fail again: give up, as one process would.
      log.error({ workerId: worker.id, code, signal }, 'a worker exited during start-up');
      stopping = true;
      failed = true;
      for (const s of states.values()) s.worker.process.kill('SIGKILL');
      if (states.size === 0) void finish(1);
      return;
    }
    const lived = Date.now() - (state?.startedAt ?? 0);
    if (lived >= RESTART_RESET_AFTER_MS) restartDelay = RESTART_FIRST_MS;
    const delay = restartDelay;
    restartDelay = Math.min(RESTART_MAX_MS, restartDelay * 2);
    log.error({ workerId: worker.id, code, signal, livedMs: lived, restartInMs: delay }, 'worker exited unexpectedly; restarting');
    restarts.inc();
    elect();
    const timer = setTimeout(() => {
      restartTimers.delete(timer);
      if (!stopping) fork();
    }, delay);
    restartTimers.add(timer);
  });

  for (let i = 0; i < o.workers; i++) fork();

  const scrapeWorker = (state: WorkerState) =>
    new Promise<unknown>((resolve) => {
      const id = ++scrapeSeq;
      const timer = setTimeout(() => {
        scrapes.delete(id);
        resolve(undefined);
      }, METRICS_TIMEOUT_MS);
      scrapes.set(id, {
        resolve: (json) => {
          clearTimeout(timer);
          scrapes.delete(id);
          resolve(json);
        },
      });
      post(state, { pigeon: 'metrics?', id });
    });

  return {
    metrics: {
      contentType: registry.contentType,
      async metrics() {
        const own = await registry.getMetricsAsJSON();
        const theirs = await Promise.all([...states.values()].filter((s) => s.listening).map(scrapeWorker));
        const parts = [own, ...theirs.filter((j): j is typeof own => Array.isArray(j))];
        return AggregatorRegistry.aggregate(parts).metrics();
      },
    },
    stop(signal) {
      if (stopping) return;
      stopping = true;
      for (const timer of restartTimers) clearTimeout(timer);
      restartTimers.clear();
      for (const state of states.values()) {
        // A worker still starting has no handler yet: the signal's default action ends it (it serves nothing yet).
        if (state.hello) post(state, { pigeon: 'drain', signal });
        else state.worker.process.kill('SIGTERM');
      }
      if (states.size === 0) return void finish(0);
      exitTimer = setTimeout(() => {
        const left = [...states.keys()];
        log.warn({ workerIds: left }, 'workers still running at the shutdown deadline: killed');
        for (const state of states.values()) state.worker.process.kill('SIGKILL');
      }, o.shutdownTimeoutMs + SHUTDOWN_MARGIN_MS);
    },
    get size() {
      return states.size;
    },
  };
}
