/**
 * Entry point: read config, open and migrate the store, seed the demo tenant when empty, start HTTPS (and the LMTP
 * and metrics listeners), drain on SIGTERM/SIGINT. Run with `npm start`.
 *
 * PIGEON_WORKERS=1 runs all of it in this one process. Above 1 (0, the default: one per available core) this process
 * becomes the cluster's primary (server/cluster.ts): it migrates, seeds and makes the keys once, forks the workers —
 * each runs `serve` below over the same store and the shared listening sockets — serves the metrics listener with
 * every worker's sums, and logs `ready` once every worker is listening.
 *
 * The store is the embedded SQLite file, or PostgreSQL when PIGEON_DATABASE_URL is set (server/database.ts): then
 * any number of servers ("nodes", behind a load balancer) may share the database, and each worker process is a node
 * of its own. What must happen once across all of them — the purges, the outbox relay — runs under the store's
 * `exclusive` (an advisory lock), the keys are kept in the database, the token endpoint counts there, and every node
 * hears every other's commits (push events, hot-cache invalidations) from the database's feed.
 */
import cluster from 'node:cluster';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { loadConfig, ConfigError, redactedConfig, issuerOf, type Config } from './config';
import { createLogger, drainLogs, writeStderr } from './logger';
import { loadKeys } from './auth/keys';
import { loadCertificate } from './tls';
import { createApp } from './app';
import { listenHttps } from './httpsServer';
import { withFastLane } from './http/fastLane';
import { systemClock } from './clock';
import { JOBS, nodeName, openConfiguredStore, storeLocation, usesPostgres, type ConfiguredStore } from './database';
import { LAST_SEEN_FLUSH_MS } from './devices/service';
import { seedDemo } from './demo/seed';
import { startLmtp } from './lmtp/server';
import { startMetricsServer } from './http/metricsServer';
import { DeviceSignals, type DeviceCut } from './devices/signals';
import { createPushCluster, processPush } from './push/clusterBus';
import { DatabaseRateLimitStore, IpcRateLimitStore, startPrimary, workerCount, workerLink, type WorkerLink } from './cluster';
import type { AppCluster } from './app';
import { checkStoreRegion, WrongRegionStore } from './regions';

/** The last log lines get this long to reach a slow output before exit; a stuck one (stalled pipe) is given up. */
const FINAL_LOG_FLUSH_MS = 2_000;
/**
 * With PostgreSQL, how often each node offers to run a relay pass (one node at a time runs it); a pass a node could
 * not take right after queueing mail is offered again this much later.
 */
const RELAY_TURN_MS = 5_000;
const RELAY_RETRY_MS = 1_000;

function walkthrough(base: string, certFile: string | undefined, demo: boolean, metrics: string | undefined): string {
  const cacert = certFile ? `--cacert ${path.relative(process.cwd(), certFile)} ` : '';
  const lines = [`Pigeon is listening on ${base}`];
  if (metrics) lines.push(`Prometheus metrics: ${metrics}`);
  if (demo) {
    lines.push(
      '',
      'Try it (demo user alice):',
      `  TOKEN=$(curl -s ${cacert}${base}/oauth2/token -d grant_type=password -d client_id=pigeon-app \\`,
      `      -d username=alice -d password=alice-demo-pass | node -pe 'JSON.parse(require("fs").readFileSync(0)).access_token')`,
      `  curl -s ${cacert}-H "Authorization: Bearer $TOKEN" ${base}/v1/session`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      writeStderr(`pigeon: bad configuration: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  if (cluster.isWorker) return serve(config, workerLink());
  const workers = workerCount(config.workers, os.availableParallelism());
  if (workers > 1) return runPrimary(config, workers);
  return serve(config, undefined);
}

/**
 * Opens (and migrates) the store and refuses it when it holds a tenant of another region than PIGEON_REGION: a node
 * pointed at the wrong store must never write one region's data into another's (README, "Regions").
 */
async function openRegionStore(config: Config, log: Logger, nodeId: string): Promise<ConfiguredStore> {
  const store = await openConfiguredStore(config, { log, nodeId });
  try {
    await checkStoreRegion(store, config.region);
  } catch (err) {
    await store.close().catch(() => undefined);
    throw err;
  }
  return store;
}

/**
 * Opens and migrates the store, checks its region and seeds the demo tenant (in this region) when it is empty (once:
 * the primary does it for its workers; with PostgreSQL, the first of the nodes starting together, the others
 * waiting for it).
 */
async function openStore(config: Config, log: Logger, nodeId: string): Promise<ConfiguredStore> {
  const store = await openConfiguredStore(config, { log, nodeId });
  try {
    if (store.migrations.applied.length) log.info({ applied: store.migrations.applied }, 'migrations applied');
    await checkStoreRegion(store, config.region);
    if (config.demo) {
      await store.exclusive(
        JOBS.demoSeed,
        async () => {
          if ((await store.users.count()) !== 0) return;
          const t0 = performance.now();
          const result = await seedDemo(store, { clock: systemClock, region: config.region, log: (msg: string, extra?: object) => log.info(extra ?? {}, msg) });
          log.info({ messages: result.messages, ms: Math.round(performance.now() - t0) }, 'demo tenant seeded');
        },
        { wait: true },
      );
    }
  } catch (err) {
    await store.close().catch(() => undefined);
    throw err;
  }
  return store;
}

/** The key material: files (configured, or generated in the data directory), or, with PostgreSQL, the database's. */
function keysFor(config: Config, store: ConfiguredStore) {
  return loadKeys(config, store.backend === 'postgres' ? store.secrets : undefined);
}

/** The primary of PIGEON_WORKERS processes: prepares once, forks, relays, aggregates metrics, drains them all. */
async function runPrimary(config: Config, workers: number): Promise<void> {
  const log = createLogger(config);
  log.info({ config: redactedConfig(config), store: storeLocation(config), workers }, 'starting');
  // Once, before any worker opens the store: migrations, the demo tenant, generated keys and certificate.
  const store = await openStore(config, log, nodeName(config, 'primary'));
  try {
    await keysFor(config, store);
  } finally {
    await store.close();
  }
  const tls = await loadCertificate(config);
  if (tls.generated) log.warn({ certFile: tls.certFile }, 'generated a self-signed development certificate');

  let markReady: (ports: { port: number; lmtpPort?: number }) => void = () => undefined;
  const ready = new Promise<{ port: number; lmtpPort?: number }>((resolve) => (markReady = resolve));
  let metricsServer: Awaited<ReturnType<typeof startMetricsServer>> | undefined;
  const primary = startPrimary({
    workers,
    log,
    shutdownTimeoutMs: config.shutdownTimeout * 1000,
    onReady: (ports) => markReady(ports),
    async onExit(code) {
      await metricsServer?.close();
      if (code === 0) log.info({ workers: 0 }, 'stopped');
      else writeStderr('pigeon: failed to start: a worker exited during start-up (see the log)\n');
      await drainLogs(FINAL_LOG_FLUSH_MS);
      process.exit(code);
    },
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'draining');
    primary.stop(signal);
  };
  // Installed at once: a signal during start-up still reaches the workers (their default action, or their drain).
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  // Metrics have their own plain-HTTP listener (loopback by default), never the API port: here, summing the workers.
  metricsServer = config.metricsEnabled
    ? await startMetricsServer({ host: config.metricsHost, port: config.metricsPort, token: config.metricsToken, registry: primary.metrics })
    : undefined;
  if (metricsServer) {
    log.info({ host: config.metricsHost, port: metricsServer.port, bearerRequired: Boolean(config.metricsToken) }, 'metrics listening');
    if (!config.metricsToken && !isLoopback(config.metricsHost)) {
      log.warn({ host: config.metricsHost }, 'metrics listener is not on loopback and has no PIGEON_METRICS_TOKEN: anyone who can reach it can scrape it');
    }
  }
  const { port } = await ready;
  const base = config.issuer || `https://${config.host}:${port}`;
  const metricsUrl = metricsServer ? `http://${urlHost(config.metricsHost)}:${metricsServer.port}/metrics` : undefined;
  log.info({ url: base, issuer: issuerOf(config), port, metricsPort: metricsServer?.port, workers, readyMs: Math.round(performance.now()) }, 'ready');
  writeStderr(`\n${walkthrough(base, config.tlsCert ? undefined : tls.certFile, config.demo, metricsUrl)}\n\n`);
}

/**
 * The server: the whole of it in one process (`link` undefined), or one worker of several (server/cluster.ts): then
 * device cuts, push channels, watermarks, the token endpoint's counts (SQLite) and commits (SQLite) are shared
 * through the primary, the relay and the purges run only in the worker the primary names leader, and the primary
 * serves metrics and logs `ready`. With PostgreSQL every process is a node: commits reach it from the database, the
 * token endpoint counts in the database, and the leaders of all the nodes take turns at the relay and the purges.
 */
async function serve(config: Config, link: WorkerLink | undefined): Promise<void> {
  const nodeId = nodeName(config, link ? `w${link.id}` : undefined);
  const processLog = link ? createLogger(config).child({ worker: link.id }) : createLogger(config);
  // Sharing a database, the logs of many nodes end up together: each line names its node.
  const log = usesPostgres(config) ? processLog.child({ node: nodeId }) : processLog;
  if (!link) log.info({ config: redactedConfig(config), store: storeLocation(config) }, 'starting');

  const store = link ? await openRegionStore(config, log, nodeId) : await openStore(config, log, nodeId);
  const postgres = store.backend === 'postgres' ? store : undefined;
  if (postgres) log.info('sharing the database with the other nodes');
  if (!link) log.info({ region: config.region }, 'serving region');
  const keys = await keysFor(config, store);
  const tls = await loadCertificate(config);
  if (tls.generated) log.warn({ certFile: tls.certFile }, 'generated a self-signed development certificate');

  let leading = !link; // one process runs the relay and the purges itself; a worker when named leader
  let stop: ((signal: string) => Promise<void>) | undefined;
  let drainAsked: string | undefined;
  let deviceSignals: DeviceSignals | undefined;
  let shared: AppCluster | undefined;
  if (link) {
    const signals = new DeviceSignals({ relay: (cut) => link.send({ pigeon: 'cut', cut }) });
    link.on('cut', (m) => signals.deliver(m.cut as DeviceCut));
    link.on('drain', (m) => (stop ? void stop(String(m.signal)) : (drainAsked = String(m.signal))));
    deviceSignals = signals;
    shared = {
      push: createPushCluster(link, log, { commitsFromStore: Boolean(postgres) }),
      rateLimitStore: postgres ? (name) => new DatabaseRateLimitStore(postgres.counters, name) : (name) => new IpcRateLimitStore(link, name),
      outboxQueued: () => {
        if (postgres) relayTurn();
        else if (!leading) link.send({ pigeon: 'kick' });
      },
    };
  } else if (postgres) {
    // One process, one node of several: only the token endpoint's counts are shared (in the database).
    shared = {
      push: processPush(log),
      rateLimitStore: (name) => new DatabaseRateLimitStore(postgres.counters, name),
      outboxQueued: () => relayTurn(),
    };
  }
  const { app, fastLane, devices, push, lag, deviceLimit, delivery, relay, metrics } = createApp({ config, store, keys, clock: systemClock, log, deviceSignals, cluster: shared });
  // Buckets of devices that went quiet are forgotten, so the limiter's memory follows active devices only.
  const buckets = setInterval(() => deviceLimit.sweep(), 60_000);
  buckets.unref();
  // The timers' store work under way, which the drain lets finish before the store closes.
  const background = new Set<Promise<void>>();
  const inBackground = (work: () => Promise<void>) => {
    const running = work().finally(() => background.delete(running));
    background.add(running);
  };
  // Every process flushes its own buffer of last-seen times.
  const lastSeen = setInterval(() => {
    inBackground(() => devices.flushLastSeen().then(
      () => undefined,
      (err: unknown) => log.error({ err }, 'last-seen flush failed'),
    ));
  }, LAST_SEEN_FLUSH_MS);
  lastSeen.unref();

  // With PostgreSQL, a relay pass runs on whichever node offers first, and on one node at a time: offered by the
  // leader's timer, and at once by the process that queued mail (offered again soon when another node's pass held it,
  // since that pass may have looked at the queue just before the new mail).
  let relayStopping = false;
  let relayRetry: NodeJS.Timeout | undefined;
  function relayTurn(): void {
    if (!postgres || relayStopping) return;
    inBackground(async () => {
      try {
        const turn = await store.exclusive(JOBS.relay, () => relay.runOnce());
        if (!turn.ran && !relayRetry && !relayStopping) {
          relayRetry = setTimeout(() => {
            relayRetry = undefined;
            relayTurn();
          }, RELAY_RETRY_MS);
          relayRetry.unref();
        }
      } catch (err) {
        log.error({ err }, 'outbox relay turn failed');
      }
    });
  }

  /** Runs a job on a timer, on one node at a time (with SQLite, this process is the only one that runs jobs). */
  const everyInterval = (job: string, seconds: number, run: () => Promise<void>) => {
    const timer = setInterval(() => {
      inBackground(async () => {
        try {
          await store.exclusive(job, run);
        } catch (err) {
          log.error({ err, job }, `${job.replace(/-/g, ' ')} failed`);
        }
      });
    }, seconds * 1000);
    timer.unref();
    return timer;
  };

  // What runs once per server: in the one process, or in the leader among the workers; with PostgreSQL, the leaders
  // of every node take turns (each job on one node at a time).
  let purge: NodeJS.Timeout | undefined;
  let history: NodeJS.Timeout | undefined;
  let relayTimer: NodeJS.Timeout | undefined;
  const lead = () => {
    // Inactive partnerships end on a timer inside the server (also `npm run admin -- purge-devices`).
    purge = everyInterval(JOBS.devicePurge, config.devicePurgeInterval, async () => {
      const purged = await devices.purgeInactive();
      if (purged.length) log.info({ purged: purged.map((d) => ({ id: d.id, userId: d.userId })) }, 'inactive devices purged');
    });
    // Tombstones older than the history horizon go (their tokens then answer 410 tokenExpired), and so do
    // idempotency records older than a day (and, with PostgreSQL, the rate-limit counts of ended windows).
    history = everyInterval(JOBS.historyPurge, config.historyPurgeInterval, async () => {
      const now = Date.now();
      const tombstones = await store.mailboxes.purgeHistory(now - config.changeHistory * 1000);
      const replays = await store.idempotency.purge(now - 24 * 3600_000);
      const counts = postgres ? await postgres.counters.sweep() : 0;
      if (tombstones || replays) log.info({ tombstones, replays }, 'history purged');
      if (counts) log.debug({ counts }, 'ended rate-limit windows purged');
    });
    if (postgres) {
      // The first turn sends what an earlier run left queued; then every few seconds, whichever node is free.
      log.info({ everyMs: RELAY_TURN_MS }, 'outbox relay takes turns with the other nodes');
      relayTurn();
      relayTimer = setInterval(relayTurn, RELAY_TURN_MS);
      relayTimer.unref();
    } else {
      // The relay worker's first pass sends what an earlier run left queued.
      relay.start();
    }
  };
  if (link) {
    link.on('lead', () => {
      if (leading || stop === undefined) return;
      leading = true;
      lead();
    });
    link.on('kick', () => (postgres ? relayTurn() : relay.kick()));
    // A scrape of the primary's metrics listener asks every worker for its registry.
    link.on('metrics?', (m) => {
      metrics.registry.getMetricsAsJSON().then(
        (json) => link.send({ pigeon: 'metrics', id: m.id, json }),
        (err: unknown) => log.error({ err }, 'metrics could not be collected'),
      );
    });
    // Handlers in place: from now on the primary relays to this worker (and sends what it holds of the others).
    link.send({ pigeon: 'hello' });
  }

  // Before HTTPS, so the `ready` line means every listener is up (tests read the LMTP and metrics ports from the log).
  const lmtp = config.lmtpEnabled ? await startLmtp({ config, delivery, clock: systemClock, log }) : undefined;
  if (lmtp) log.info({ host: config.lmtpHost, port: lmtp.port }, 'lmtp listening');
  // Metrics have their own plain-HTTP listener (loopback by default), never the API port (workers: the primary's).
  const metricsServer = config.metricsEnabled && !link
    ? await startMetricsServer({ host: config.metricsHost, port: config.metricsPort, token: config.metricsToken, registry: metrics.registry })
    : undefined;
  if (metricsServer) {
    log.info({ host: config.metricsHost, port: metricsServer.port, bearerRequired: Boolean(config.metricsToken) }, 'metrics listening');
    if (!config.metricsToken && !isLoopback(config.metricsHost)) {
      log.warn({ host: config.metricsHost }, 'metrics listener is not on loopback and has no PIGEON_METRICS_TOKEN: anyone who can reach it can scrape it');
    }
  }
  // The fast lane takes the hot reads it is sure of (PIGEON_FAST_LANE); Express serves everything else.
  const https = await listenHttps(withFastLane(app, fastLane), tls, config);
  const base = config.issuer || `https://${config.host}:${https.port}`;
  const metricsUrl = metricsServer ? `http://${urlHost(config.metricsHost)}:${metricsServer.port}/metrics` : undefined;
  if (leading) lead();
  let stopping = false;
  stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'draining');
    clearInterval(purge);
    clearInterval(lastSeen);
    clearInterval(history);
    clearInterval(buckets);
    clearInterval(relayTimer);
    clearTimeout(relayRetry);
    relayStopping = true;
    lag.stop();
    // Event streams and waiting pings never finish on their own: end them first (pings answer `{"changed":[]}`),
    // or the drain would wait the whole shutdown timeout for them.
    // The relay takes no new entries; the one in flight finishes (or is aborted at the timeout) before the store closes.
    const relayStopped = relay.stop(config.shutdownTimeout * 1000);
    const channels = push.close();
    if (channels) log.info({ channels }, 'push channels closed');
    // LMTP deliveries under way commit and get their replies before the store closes.
    const [{ forced }, lmtpClosed] = await Promise.all([https.drain(config.shutdownTimeout * 1000), lmtp?.close(config.shutdownTimeout * 1000)]);
    if (lmtpClosed?.forced) log.warn('lmtp deliveries still running at the shutdown timeout');
    await Promise.all([relayStopped, metricsServer?.close()]);
    // A purge or flush the timers started finishes first: the store must not close under it.
    await Promise.all(background);
    try {
      await devices.flushLastSeen();
    } catch (err) {
      log.error({ err }, 'last-seen flush failed'); // e.g. a full disk: the store still closes cleanly
    }
    await store.close();
    log.info({ forced }, 'stopped');
    // The log output may be slow, stalled or gone: the last lines get a bounded wait, never an unbounded one.
    await drainLogs(FINAL_LOG_FLUSH_MS);
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop?.('SIGTERM'));
  process.on('SIGINT', () => void stop?.('SIGINT'));
  if (link) {
    // The primary logs `ready` once every worker is listening; a drain asked while this one was starting runs now.
    log.info({ port: https.port }, 'worker listening');
    link.send({ pigeon: 'listening', port: https.port, lmtpPort: lmtp?.port });
    if (drainAsked !== undefined) void stop(drainAsked);
    return;
  }
  // Only now `ready`: whoever waits for it (a supervisor, a test) may signal at once, and must reach a handler, not
  // the default action (which would kill the process without draining).
  log.info(
    { url: base, issuer: issuerOf(config), port: https.port, metricsPort: metricsServer?.port, readyMs: Math.round(performance.now()) },
    'ready',
  );
  writeStderr(`\n${walkthrough(base, config.tlsCert ? undefined : tls.certFile, config.demo, metricsUrl)}\n\n`);
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

main().catch(async (err) => {
  // A store of another region is a configuration mistake, told in full by its message: no stack trace.
  const told = err instanceof WrongRegionStore ? err.message : err instanceof Error ? err.stack ?? err.message : String(err);
  writeStderr(`pigeon: failed to start: ${told}\n`);
  await drainLogs(FINAL_LOG_FLUSH_MS);
  process.exit(1);
});
