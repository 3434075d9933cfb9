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
 *
 * With PIGEON_CLIENT_CERT_TRUST_FILE, each process also serves certificate sign-in on a second HTTPS listener
 * (PIGEON_CERT_SIGNIN_PORT, shared between the workers like the main one), which asks browsers for a client
 * certificate; its trust is reloaded on SIGHUP (the primary passes it on to the workers) and when one of its files
 * changes (README, "Certificate sign-in").
 */
import cluster from 'node:cluster';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Server as TlsServer, TLSSocket, TlsOptions } from 'node:tls';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { loadConfig, ConfigError, redactedConfig, issuerOf, type Config } from './config';
import { createLogger, drainLogs, writeStderr } from './logger';
import { loadKeys } from './auth/keys';
import { loadCertificate, TLS_PROFILE } from './tls';
import { createApp } from './app';
import { buildPushGateways, loadVapidKeys } from './push/background/gateways';
import { DeviceLogRing } from './diagnostics/deviceLog';
import { listenHttps, type HttpsHandle } from './httpsServer';
import { withFastLane } from './http/fastLane';
import { systemClock } from './clock';
import { JOBS, nodeName, openConfiguredStore, storeLocation, usesPostgres, type ConfiguredStore } from './database';
import { LAST_SEEN_FLUSH_MS } from './devices/service';
import { seedDemo } from './demo/seed';
import { startLmtp } from './lmtp/server';
import { startMetricsServer } from './http/metricsServer';
import { DeviceSignals, type AccessRecheck, type DeviceCut } from './devices/signals';
import { createPushCluster, processPush } from './push/clusterBus';
import { DatabaseRateLimitStore, IpcRateLimitStore, startPrimary, workerCount, workerLink, type WorkerLink } from './cluster';
import type { AppCluster } from './app';
import { checkStoreRegion, regionsOf, WrongRegionStore } from './regions';
import { checkExternalIssuerTenants, loadExternalIssuers, type ExternalIssuer } from './auth/externalIssuers';
import { ClientCertTrustError, certificateListenerOptions, loadClientCertTrust, staleCrls, type ClientCertTrust } from './identity/clientCert';

/** The last log lines get this long to reach a slow output before exit; a stuck one (stalled pipe) is given up. */
const FINAL_LOG_FLUSH_MS = 2_000;
/**
 * With PostgreSQL, how often each node offers to run a relay pass (one node at a time runs it); a pass a node could
 * not take right after queueing mail is offered again this much later.
 */
const RELAY_TURN_MS = 5_000;
const RELAY_RETRY_MS = 1_000;
/** How often the certificate trust's files are looked at for changes (a stat each), and stale CRLs looked for. */
const CERT_TRUST_CHECK_MS = 60_000;
/** A CRL this close to its nextUpdate is warned about: after it, OpenSSL refuses every certificate of its CA. */
const CRL_WARNING_MS = 24 * 3600_000;

/**
 * The client certificate trust file, checked against the store: a tenant id it names that the store does not have
 * (a typo, say) would refuse every certificate of that CA as naming no user, which is better said at once.
 */
async function loadCertificateTrust(file: string, knownTenant: (id: string) => Promise<boolean>): Promise<ClientCertTrust> {
  const trust = loadClientCertTrust(file);
  const unknown: string[] = [];
  for (const tenant of trust.tenants) if (!(await knownTenant(tenant))) unknown.push(tenant);
  if (unknown.length) {
    throw new ClientCertTrustError(`${file}: no tenant ${unknown.map((t) => `"${t}"`).join(', ')} in the store (npm run admin -- tenant list)`);
  }
  return trust;
}

const tenantIn = (store: ConfiguredStore) => async (id: string) => (await store.tenants.get(id)) !== undefined;

/**
 * Certificate sign-in's trust, reloadable: on SIGHUP and when one of its files changes, the trust file is read again
 * and the listener's TLS context rebuilt with the new CAs and CRLs (setSecureContext: new connections only; idle
 * kept-alive ones are closed so they reconnect under the new one). A file that does not load keeps the previous
 * trust (logged). Each connection is answered with the trust its handshake was verified under.
 */
class CertificateTrust {
  private trust: ClientCertTrust;
  private loadedFrom: string;
  private lastTried: string;
  private readonly bySocket = new WeakMap<TLSSocket, ClientCertTrust>();
  private readonly warned = new Set<string>();
  private server: TlsServer | undefined;
  private baseTls: TlsOptions = {};
  private timer: NodeJS.Timeout | undefined;
  /** Reloads one after the other, so the last one asked for is the one in force. */
  private reloading: Promise<void> = Promise.resolve();

  /** Throws ClientCertTrustError: start-up fails with its message. */
  static async load(file: string, log: Logger, knownTenant: (id: string) => Promise<boolean>): Promise<CertificateTrust> {
    return new CertificateTrust(file, log, knownTenant, await loadCertificateTrust(file, knownTenant));
  }

  private constructor(
    private readonly file: string,
    private readonly log: Logger,
    private readonly knownTenant: (id: string) => Promise<boolean>,
    trust: ClientCertTrust,
  ) {
    this.trust = trust;
    this.loadedFrom = this.lastTried = this.filesState(this.trust);
    this.warnStale();
  }

  current(): ClientCertTrust {
    return this.trust;
  }

  trustFor(socket: TLSSocket): ClientCertTrust {
    return this.bySocket.get(socket) ?? this.trust;
  }

  /** From now on the listener's context follows the trust; `baseTls` is the rest of its TLS options. */
  attach(server: TlsServer, baseTls: TlsOptions): void {
    this.server = server;
    this.baseTls = baseTls;
    server.on('secureConnection', (socket: TLSSocket) => this.bySocket.set(socket, this.trust));
    this.timer = setInterval(() => {
      const state = this.filesState(this.trust);
      if (state !== this.loadedFrom && state !== this.lastTried) void this.reload('files changed');
      this.warnStale();
    }, CERT_TRUST_CHECK_MS);
    this.timer.unref();
  }

  reload(why: string): Promise<void> {
    this.reloading = this.reloading.then(() => this.reloadNow(why));
    return this.reloading;
  }

  private async reloadNow(why: string): Promise<void> {
    this.lastTried = this.filesState(this.trust);
    let next: ClientCertTrust;
    try {
      next = await loadCertificateTrust(this.file, this.knownTenant);
    } catch (err) {
      this.log.error({ why, file: this.file, problem: (err as Error).message }, 'client certificate trust not reloaded: the previous one stays in force');
      return;
    }
    this.server?.setSecureContext({ ...this.baseTls, ...certificateListenerOptions(next) });
    this.trust = next;
    this.loadedFrom = this.lastTried = this.filesState(next);
    (this.server as { closeIdleConnections?: () => void } | undefined)?.closeIdleConnections?.();
    this.log.info({ why, tenants: next.tenants, cas: next.cas.length, crls: next.crls.length }, 'client certificate trust reloaded');
    this.warnStale();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** The trust file's and the files it names' sizes and times: a change in any of them means a reload. */
  private filesState(trust: ClientCertTrust): string {
    const files = [this.file, ...new Set([...trust.cas.map((ca) => ca.file), ...trust.crls.map((crl) => crl.file)])];
    return files
      .map((f) => {
        try {
          const st = fs.statSync(f);
          return `${f}:${st.size}:${st.mtimeMs}:${st.ino}`;
        } catch {
          return `${f}:missing`;
        }
      })
      .join('|');
  }

  /** Once per CRL: soon stale (warning), stale (error: its CA's users are refused until a new one is loaded). */
  private warnStale(): void {
    const now = Date.now();
    for (const crl of staleCrls(this.trust, new Date(now + CRL_WARNING_MS))) {
      const expired = crl.nextUpdate!.getTime() <= now;
      const key = `${crl.file}|${crl.thisUpdate.toISOString()}|${expired}`;
      if (this.warned.has(key)) continue;
      this.warned.add(key);
      const fields = { tenant: crl.tenantId, crlFile: crl.file, nextUpdate: crl.nextUpdate!.toISOString() };
      if (expired) this.log.error(fields, "client certificate CRL is past its nextUpdate: its CA's certificates are refused until a fresh CRL is loaded");
      else this.log.warn(fields, 'client certificate CRL reaches its nextUpdate soon: publish a fresh one (certificates of its CA are refused after it)');
    }
  }
}

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
    // The generated VAPID pair too (background push), so the workers all read the same one.
    if (config.pushEnabled) await loadVapidKeys(config, store.backend === 'postgres' ? store.secrets : undefined);
    // The external issuers' file and tenants, checked once here too: a bad one stops the start before any fork.
    const pigeonIssuers = [issuerOf(config), ...Object.values(regionsOf(config).directory)];
    const externalIssuers = loadExternalIssuers(config.externalIssuersFile, pigeonIssuers);
    await checkExternalIssuerTenants(store, externalIssuers);
    if (externalIssuers.length) log.info({ issuers: trustedIssuersForLog(externalIssuers) }, 'external issuers trusted');
    // So is the client certificate trust file.
    if (config.clientCertTrustFile) await loadCertificateTrust(config.clientCertTrustFile, tenantIn(store));
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
  // Each worker serves certificate sign-in with its own TLS context: a reload is theirs to do.
  if (config.clientCertTrustFile) {
    process.on('SIGHUP', () => {
      log.info({ signal: 'SIGHUP' }, 'reloading the client certificate trust in the workers');
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGHUP');
    });
  }

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
  // This process's log lines about each device over the last hour, for diagnostics uploads (each worker its own).
  const deviceLog = new DeviceLogRing();
  const processLog = link ? createLogger(config, undefined, { deviceLog }).child({ worker: link.id }) : createLogger(config, undefined, { deviceLog });
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
    // Re-checks ride on the primary's relay of cuts (a `cut` message is passed to every other worker as it is).
    const signals = new DeviceSignals({
      relay: (cut) => link.send({ pigeon: 'cut', cut }),
      relayRecheck: (recheck) => link.send({ pigeon: 'cut', recheck }),
    });
    link.on('cut', (m) => (m.recheck ? signals.deliverRecheck(m.recheck as AccessRecheck) : signals.deliver(m.cut as DeviceCut)));
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
  // Certificate sign-in: its trust now (a bad file stops the start), its listener next to the main one below.
  // SIGHUP's handler first: its default action ends the process, and the primary may pass one on while this starts.
  let reloadable: CertificateTrust | undefined;
  if (config.clientCertTrustFile) process.on('SIGHUP', () => void reloadable?.reload('SIGHUP'));
  const certificateTrust = config.clientCertTrustFile ? await CertificateTrust.load(config.clientCertTrustFile, log, tenantIn(store)) : undefined;
  reloadable = certificateTrust;
  let certificateHttps: HttpsHandle | undefined;
  const certificateSignIn = certificateTrust && {
    trustFor: (socket: TLSSocket) => certificateTrust.trustFor(socket),
    port: () => certificateHttps?.port ?? config.certSignInPort,
  };
  // Background push's gateways, with the VAPID pair every process (and, with PostgreSQL, every node) shares.
  const pushGateways = buildPushGateways(config, { vapid: config.pushEnabled ? await loadVapidKeys(config, postgres?.secrets) : undefined });
  const { app, certificateApp, fastLane, devices, push, lag, deviceLimit, delivery, relay, metrics, externalIssuers, protection, autoReplier, diagnostics, backgroundPush } = createApp({
    config,
    store,
    keys,
    clock: systemClock,
    log,
    deviceSignals,
    cluster: shared,
    certificateSignIn,
    deviceLog,
    backgroundPush: { gateways: pushGateways },
  });
  // createApp refused a bad external issuers file; that each one's tenant exists needs the store (README,
  // "External identity providers").
  await checkExternalIssuerTenants(store, externalIssuers);
  if (externalIssuers.length && !link) log.info({ issuers: trustedIssuersForLog(externalIssuers) }, 'external issuers trusted');
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
  let autoReplies: NodeJS.Timeout | undefined;
  let unkickBackgroundPush: (() => void) | undefined;
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
      // The identity provider's expired records (codes, interactions, sessions, ended grants), a batch at a time.
      let identity = 0;
      for (let n = -1; n !== 0 && identity < 100_000; identity += n) n = await store.identityRecords.purgeExpired(now, 1000);
      if (identity) log.info({ identity }, 'expired identity records purged');
      // The sign-in log past its retention (PIGEON_SIGN_IN_LOG_RETENTION), a batch at a time.
      let signIns = 0;
      for (let n = -1; n !== 0 && signIns < 100_000; signIns += n) n = await store.access.purgeSignIns(now - config.signInLogRetention * 1000, 1000);
      if (signIns) log.info({ signIns }, 'old sign-in log entries purged');
      // Diagnostics incidents past PIGEON_DIAGNOSTICS_RETENTION, with their zips.
      const incidents = await diagnostics.purgeExpired(now);
      if (incidents) log.info({ incidents }, 'expired diagnostics incidents purged');
      if (tombstones || replays) log.info({ tombstones, replays }, 'history purged');
      if (counts) log.debug({ counts }, 'ended rate-limit windows purged');
    });
    // Automatic replies claimed by deliveries (server/mailbox/autoReplier.ts): kicked after each claim in this
    // process, and every 30 s for claims made by other workers or left by a crash.
    autoReplier.lead();
    autoReplier.kick();
    autoReplies = everyInterval(JOBS.autoReplies, 30, async () => void (await autoReplier.drain()));
    // Background push (server/push/background/): the composer, reminder clock and drain run here, woken at once by
    // this process's commits and polling for what other processes (workers, nodes, the admin CLI) committed. Its
    // first pass sends what an earlier run left queued (a send cut short by a crash goes again, with the same id).
    if (config.pushEnabled) {
      backgroundPush.start();
      unkickBackgroundPush = store.onCommit(() => backgroundPush.kick());
    }
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
  const lmtp = config.lmtpEnabled ? await startLmtp({ config, delivery, clock: systemClock, log, protectOnDelivery: protection.protectOnDelivery }) : undefined;
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
  if (certificateTrust && certificateApp) {
    certificateHttps = await listenHttps(certificateApp, tls, { ...config, port: config.certSignInPort }, certificateListenerOptions(certificateTrust.current()));
    certificateTrust.attach(certificateHttps.server, { ...TLS_PROFILE, cert: tls.cert, key: tls.key });
    const trust = certificateTrust.current();
    log.info({ host: config.host, port: certificateHttps.port, tenants: trust.tenants, crls: trust.crls.length }, 'certificate sign-in listening');
  }
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
    clearInterval(autoReplies);
    autoReplier.stop();
    clearTimeout(relayRetry);
    relayStopping = true;
    certificateTrust?.stop();
    lag.stop();
    // Event streams and waiting pings never finish on their own: end them first (pings answer `{"changed":[]}`),
    // or the drain would wait the whole shutdown timeout for them.
    // The relay takes no new entries; the one in flight finishes (or is aborted at the timeout) before the store closes.
    const relayStopped = relay.stop(config.shutdownTimeout * 1000);
    // Background push takes no new work; the sends in flight finish (a lease covers one cut short) before the store closes.
    unkickBackgroundPush?.();
    const backgroundPushStopped = backgroundPush.stop().then(() => pushGateways.close());
    const channels = push.close();
    if (channels) log.info({ channels }, 'push channels closed');
    // LMTP deliveries under way commit and get their replies before the store closes.
    const [{ forced }, lmtpClosed, certificateDrained] = await Promise.all([
      https.drain(config.shutdownTimeout * 1000),
      lmtp?.close(config.shutdownTimeout * 1000),
      certificateHttps?.drain(config.shutdownTimeout * 1000),
    ]);
    if (lmtpClosed?.forced) log.warn('lmtp deliveries still running at the shutdown timeout');
    if (certificateDrained?.forced) log.warn('certificate sign-in requests still running at the shutdown timeout');
    await Promise.all([relayStopped, backgroundPushStopped, metricsServer?.close()]);
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
    { url: base, issuer: issuerOf(config), port: https.port, metricsPort: metricsServer?.port, certificateSignInPort: certificateHttps?.port, readyMs: Math.round(performance.now()) },
    'ready',
  );
  writeStderr(`\n${walkthrough(base, config.tlsCert ? undefined : tls.certFile, config.demo, metricsUrl)}\n\n`);
}

/** What the start-up log says of each trusted external issuer. */
function trustedIssuersForLog(issuers: readonly ExternalIssuer[]) {
  return issuers.map((i) => ({ issuer: i.issuer, tenant: i.tenant, justInTime: i.justInTime }));
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

main().catch(async (err) => {
  if (err instanceof ConfigError || err instanceof ClientCertTrustError) {
    // Found after loading (the external issuers file, the client certificate trust file, say): the same answer as a
    // bad setting at start.
    const setting = err instanceof ClientCertTrustError ? 'PIGEON_CLIENT_CERT_TRUST_FILE: ' : '';
    writeStderr(`pigeon: bad configuration: ${setting}${err.message}\n`);
    await drainLogs(FINAL_LOG_FLUSH_MS);
    process.exit(2);
  }
  // A store of another region is a configuration mistake, told in full by its message: no stack trace.
  const told = err instanceof WrongRegionStore ? err.message : err instanceof Error ? err.stack ?? err.message : String(err);
  writeStderr(`pigeon: failed to start: ${told}\n`);
  await drainLogs(FINAL_LOG_FLUSH_MS);
  process.exit(1);
});
