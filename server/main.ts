/**
 * Entry point: read config, open and migrate the store, seed the demo tenant when empty, start HTTPS (and the LMTP
 * and metrics listeners), drain on SIGTERM/SIGINT. Run with `npm start`.
 *
 * PIGEON_WORKERS=1 runs all of it in this one process. Above 1 (0, the default: one per available core) this process
 * becomes the cluster's primary (server/cluster.ts): it migrates, seeds and makes the keys once, forks the workers —
 * each runs `serve` below over the same SQLite file and the shared listening sockets — serves the metrics listener
 * with every worker's sums, and logs `ready` once every worker is listening.
 */
import cluster from 'node:cluster';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { loadConfig, ConfigError, redactedConfig, issuerOf, type Config } from './config';
import { createLogger, drainLogs, writeStderr } from './logger';
import { openSqliteStore } from './store/sqlite';
import { loadKeys } from './auth/keys';
import { loadCertificate } from './tls';
import { createApp } from './app';
import { listenHttps } from './httpsServer';
import { withFastLane } from './http/fastLane';
import { systemClock } from './clock';
import { databaseFile } from './paths';
import { LAST_SEEN_FLUSH_MS } from './devices/service';
import { seedDemo } from './demo/seed';
import { startLmtp } from './lmtp/server';
import { startMetricsServer } from './http/metricsServer';
import { DeviceSignals, type DeviceCut } from './devices/signals';
import { createPushCluster } from './push/clusterBus';
import { IpcRateLimitStore, startPrimary, workerCount, workerLink, type WorkerLink } from './cluster';
import type { AppCluster } from './app';

/** The last log lines get this long to reach a slow output before exit; a stuck one (stalled pipe) is given up. */
const FINAL_LOG_FLUSH_MS = 2_000;

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

/** Opens and migrates the store and seeds the demo tenant when it is empty (once: the primary does it for its workers). */
async function openStore(config: Config, log: Logger) {
  const store = openSqliteStore(databaseFile(config));
  if (store.migrations.applied.length) log.info({ applied: store.migrations.applied }, 'migrations applied');
  const seeded = config.demo && (await store.users.count()) === 0;
  if (seeded) {
    const t0 = performance.now();
    const result = await seedDemo(store, { clock: systemClock, log: (msg: string, extra?: object) => log.info(extra ?? {}, msg) });
    log.info({ messages: result.messages, ms: Math.round(performance.now() - t0) }, 'demo tenant seeded');
  }
  return store;
}

/** The primary of PIGEON_WORKERS processes: prepares once, forks, relays, aggregates metrics, drains them all. */
async function runPrimary(config: Config, workers: number): Promise<void> {
  const log = createLogger(config);
  log.info({ config: redactedConfig(config), workers }, 'starting');
  // Once, before any worker opens the file: migrations, the demo tenant, generated keys and certificate.
  await (await openStore(config, log)).close();
  await loadKeys(config);
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
 * commits, device cuts, push channels, watermarks and the token endpoint's counts are shared through the primary,
 * the relay and the purges run only in the worker the primary names leader, and the primary serves metrics and
 * logs `ready`.
 */
async function serve(config: Config, link: WorkerLink | undefined): Promise<void> {
  const log = link ? createLogger(config).child({ worker: link.id }) : createLogger(config);
  if (!link) log.info({ config: redactedConfig(config) }, 'starting');

  const store = link ? openSqliteStore(databaseFile(config)) : await openStore(config, log);
  const keys = await loadKeys(config);
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
      push: createPushCluster(link, log),
      rateLimitStore: (name) => new IpcRateLimitStore(link, name),
      outboxQueued: () => {
        if (!leading) link.send({ pigeon: 'kick' });
      },
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

  // What runs once per server: in the one process, or in the leader among the workers.
  let purge: NodeJS.Timeout | undefined;
  let history: NodeJS.Timeout | undefined;
  const lead = () => {
    // Inactive partnerships end on a timer inside the server (also `npm run admin -- purge-devices`).
    purge = setInterval(() => {
      inBackground(async () => {
        try {
          const purged = await devices.purgeInactive();
          if (purged.length) log.info({ purged: purged.map((d) => ({ id: d.id, userId: d.userId })) }, 'inactive devices purged');
        } catch (err) {
          log.error({ err }, 'device purge failed');
        }
      });
    }, config.devicePurgeInterval * 1000);
    purge.unref();
    // Tombstones older than the history horizon go (their tokens then answer 410 tokenExpired), and so do
    // idempotency records older than a day.
    history = setInterval(() => {
      inBackground(async () => {
        try {
          const now = Date.now();
          const tombstones = await store.mailboxes.purgeHistory(now - config.changeHistory * 1000);
          const replays = await store.idempotency.purge(now - 24 * 3600_000);
          if (tombstones || replays) log.info({ tombstones, replays }, 'history purged');
        } catch (err) {
          log.error({ err }, 'history purge failed');
        }
      });
    }, config.historyPurgeInterval * 1000);
    history.unref();
    // The relay worker's first pass sends what an earlier run left queued.
    relay.start();
  };
  if (link) {
    link.on('lead', () => {
      if (leading || stop === undefined) return;
      leading = true;
      lead();
    });
    link.on('kick', () => relay.kick());
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
  writeStderr(`pigeon: failed to start: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  await drainLogs(FINAL_LOG_FLUSH_MS);
  process.exit(1);
});
