/**
 * `npm run bench`: the benchmark suite (BENCHMARKS.md explains the method and holds the latest figures).
 *
 * Every figure is measured on Pigeon and on a ceiling in the same run — a bare HTTPS listener, same TLS and
 * keep-alive settings, answering with the exact bytes Pigeon answered — and reported as pigeon / ceiling, because
 * shared machines drift and only a ratio measured side by side survives that.
 *
 *   npm run bench                         the full suite (10K and 1M mailboxes); writes BENCHMARKS.md and bench/results.json
 *   npm run bench -- --quick              10K only, fewer and shorter rounds; writes nothing into the repository
 *   npm run bench -- --compare old.json   also prints the change of each figure against an earlier run
 *   npm run bench -- --compare old.json --results new.json    compares two runs without measuring
 *   npm run bench -- --only 1,5           some scenarios only (development)
 *   npm run bench -- --profile            runs Pigeon with --cpu-prof and prints where its CPU went
 *   npm run bench -- --baseline ../old    another checkout side by side with this one (request-path figures only)
 *   npm run bench -- --store pg --pg-url postgres://…/postgres     Pigeon on PostgreSQL (a database of its own, dropped
 *                                         at the end; or set BENCH_POSTGRES_URL), and where PostgreSQL's time goes
 *   npm run bench -- --store both …       the same figures on SQLite and PostgreSQL side by side, in the same rounds
 *                                         (--only picks scenarios there too: 1 2 3 5 6 7, and 9 for where the time goes)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { startCeiling, type Ceiling } from './lib/ceiling';
import { signIn } from './lib/client';
import type { BenchContext, Figure } from './lib/figure';
import { describeMachine } from './lib/machine';
import { BENCH_USER, cachedMailbox, workingCopy } from './lib/mailbox';
import { BENCH_ENV, startPigeon, type Pigeon } from './lib/pigeon';
import { profilesIn, summarize } from './lib/profile';
import { comparison, table, writeMarkdown, type Results } from './lib/report';
import { authFigures } from './scenarios/auth';
import { baselineFigures } from './scenarios/baseline';
import { coldStartFigure } from './scenarios/coldStart';
import { ingestFigure } from './scenarios/ingest';
import { pgCost, type PgCost } from './scenarios/pgCost';
import { pushFigures } from './scenarios/push';
import { STORE_NAMES, storeFigures, type StoreName } from './scenarios/stores';
import { buildPostgresMailbox } from './lib/mailbox';
import { createBenchDatabase, NO_POSTGRES_URL, pgMeter, pgSettings } from './lib/postgres';
import { costTable, sideBySideTable, statementDetail } from './lib/storeReport';
import { incrementalFigures, initialWindowFigures, pollFigures, windowFigures, type Mailbox } from './scenarios/sync';

const ROOT = path.resolve(__dirname, '..');
const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    compare: { type: 'string' },
    results: { type: 'string' },
    json: { type: 'string' },
    only: { type: 'string' },
    profile: { type: 'boolean', default: false },
    baseline: { type: 'string' },
    store: { type: 'string', default: 'sqlite' },
    'pg-url': { type: 'string' },
  },
});

const PREAMBLE = `# Benchmarks

Figures of \`npm run bench\` (bench/run.ts): each one Pigeon's and a ceiling's measured in the same run, and their ratio.`;

/** The issue's targets, checked here and never as timed assertions in the test suite. */
function applyTargets(figures: Figure[]): void {
  const byId = new Map(figures.map((f) => [f.id, f]));
  const set = (id: string, text: (f: Figure) => string, value: (f: Figure) => number | undefined, ok: (v: number) => boolean) => {
    const f = byId.get(id);
    if (!f || f.skipped) return;
    const v = value(f);
    if (v !== undefined && Number.isFinite(v)) f.target = { text: text(f), value: v, met: ok(v) };
  };
  const pct = (v: number | undefined) => `${Math.round((v ?? NaN) * 100)} %`;
  set('poll.throughput.10K', (f) => `≥ 60 % of the ceiling's requests/s — measured ${pct(f.ratio)}`, (f) => f.ratio, (v) => v >= 0.6);
  for (const id of ['initial.gzip', 'initial.identity']) {
    set(id, (f) => `≤ 2× the ceiling's time for the same bytes — measured ${f.ratio?.toFixed(2)}×`, (f) => f.ratio, (v) => v <= 2);
  }
  const small = byId.get('incremental.10K');
  const large = byId.get('incremental.1M');
  if (small?.pigeon && large?.pigeon) {
    const cross: Figure = {
      id: 'incremental.sizeRatio',
      scenario: 3,
      label: 'incremental sync, 1M ÷ 10K mailbox',
      unit: 'ratio',
      better: 'lower',
      pigeon: { median: large.pigeon.median / small.pigeon.median, rounds: [] },
    };
    figures.splice(figures.indexOf(large) + 1, 0, cross);
    byId.set(cross.id, cross);
    set(cross.id, (f) => `1M within 1.2× of 10K — measured ${f.pigeon!.median.toFixed(2)}×`, (f) => f.pigeon!.median, (v) => v <= 1.2);
  }
  set('ingest.lmtp', (f) => `≥ 500 messages/s — measured ${Math.round(f.pigeon!.median)} (${pct(f.ratio)} of the ceiling)`, (f) => f.pigeon?.median, (v) => v >= 500);
  set('push.rss', (f) => `< 500 MiB — measured ${Math.round(f.pigeon!.median)} MiB (${f.ratio?.toFixed(2)}× the ceiling)`, (f) => f.pigeon?.median, (v) => v < 500);
  set('push.latency', (f) => `p99 < 1 s — measured ${Math.round(f.pigeon!.p99!)} ms (ceiling ${Math.round(f.ceiling?.p99 ?? NaN)} ms)`, (f) => f.pigeon?.p99, (v) => v < 1000);
}

function readResults(file: string): Results {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as Results;
}

async function main(): Promise<void> {
  if (args.compare && args.results) {
    console.log(comparison(readResults(args.compare), readResults(args.results)));
    return;
  }
  const t0 = performance.now();
  const startedAt = new Date().toISOString();
  const quick = args.quick!;
  const only = args.only ? new Set(args.only.split(',').map(Number)) : undefined;
  const wants = (n: number) => !only || only.has(n);
  const machine = describeMachine();
  const log = (line: string) => console.log(line);
  const cpuProfDir = args.profile ? fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-bench-prof-')) : undefined;
  const printed = new Set<string>();
  const profiled = (since: number) => {
    if (!cpuProfDir) return;
    for (const f of profilesIn(cpuProfDir, since).filter((f) => !printed.has(f))) {
      printed.add(f);
      log(`\n${summarize(f)}\n(full profile: ${f})\n`);
    }
  };
  log(`Pigeon benchmark suite${quick ? ' (quick)' : ''} on ${machine.cpuModel}, ${machine.cores} cores, Node ${machine.node}`);

  const plans = quick
    ? { latency: { rounds: 2, warmupSeconds: 1, seconds: 2, connections: 1 }, throughput: { rounds: 2, warmupSeconds: 1, seconds: 3, connections: 16 } }
    : { latency: { rounds: 3, warmupSeconds: 1, seconds: 3, connections: 1 }, throughput: { rounds: 3, warmupSeconds: 2, seconds: 5, connections: 16 } };
  const figures: Figure[] = [];
  if (!['sqlite', 'pg', 'both'].includes(args.store!)) throw new Error(`--store ${args.store}: sqlite, pg or both`);
  if (args.store !== 'sqlite') {
    if (args.baseline) throw new Error('--store and --baseline cannot be combined');
    return storeRun({ quick, plans, log, cpuProfDir, wants, startedAt, t0, machine });
  }
  const small = await cachedMailbox(10_000, log);
  if (args.baseline) {
    log(`\nside by side with the checkout in ${args.baseline}`);
    const pairs = await baselineFigures({ quick, ...plans, log }, small.file, path.resolve(args.baseline));
    log(`\n${table(pairs)}\n`);
    const baseline = pairs.filter((f) => f.id.endsWith('.baseline')).map((f) => ({ ...f, id: f.id.replace(/\.baseline$/, '') }));
    log(`change against the baseline (same minutes, same ceiling):\n${comparison({ figures: baseline }, { figures: pairs.filter((f) => !f.id.endsWith('.baseline')) })}`);
    return;
  }
  const large = quick || !(wants(1) || wants(3) || wants(8)) ? undefined : await cachedMailbox(1_000_000, log);

  const started: Pigeon[] = [];
  const workDirs: string[] = [];
  const startOn = async (dataDir: string) => {
    const p = await startPigeon(dataDir, { cpuProfDir });
    started.push(p);
    return p;
  };
  const stop = async (p: Pigeon, since: number) => {
    await p.stop();
    profiled(since);
  };
  let ceiling: Ceiling | undefined;
  try {
    // The 10,000-item mailbox: everything but push. The 1,000,000-item one joins for scenarios 1 and 3, measured
    // side by side with the 10K figures; scenario 3 changes the mailboxes, so it comes after the others, and 6
    // (ingest, which adds thousands of messages) last.
    log('\n10,000-item mailbox');
    const since = Date.now();
    const dir10k = workingCopy(small.file);
    workDirs.push(dir10k);
    const p10k = await startOn(dir10k);
    ceiling = await startCeiling(p10k);
    const ctx: BenchContext = { quick, ...plans, ceiling, log, cpuProfDir };
    const boxes: Mailbox[] = [{ size: '10K', pigeon: p10k, app: await signIn(p10k, BENCH_USER, 'bench-app-device-00001') }];
    if (wants(5)) figures.push(...(await authFigures(ctx, p10k, boxes[0]!.app)));
    if (wants(2)) figures.push(...(await initialWindowFigures(ctx, p10k, boxes[0]!.app)));
    if (wants(4)) figures.push(...(await windowFigures(ctx, p10k, boxes[0]!.app)));

    let p1m: Pigeon | undefined;
    if (large) {
      log('\n1,000,000-item mailbox');
      const dir1m = workingCopy(large.file);
      workDirs.push(dir1m);
      if (wants(8)) figures.push(await coldStartFigure(ctx, dir1m, '1M'));
      if (wants(1) || wants(3)) {
        p1m = await startOn(dir1m);
        boxes.push({ size: '1M', pigeon: p1m, app: await signIn(p1m, BENCH_USER, 'bench-app-device-00001') });
      }
    }
    if (wants(1)) figures.push(...(await pollFigures(ctx, boxes)));
    if (wants(3)) figures.push(...(await incrementalFigures(ctx, boxes)));
    if (p1m) await stop(p1m, since);
    if (wants(6)) figures.push(await ingestFigure(ctx, p10k, BENCH_USER.email));
    await stop(p10k, since);
    await ceiling.stop();

    if (wants(7)) {
      log('\npush');
      const pushSince = Date.now();
      figures.push(...(await pushFigures(ctx)));
      profiled(pushSince);
    }
  } finally {
    for (const p of started) await p.stop();
    await ceiling?.stop();
    for (const d of workDirs) fs.rmSync(d, { recursive: true, force: true });
  }

  figures.sort((a, b) => a.scenario - b.scenario);
  applyTargets(figures);
  const argv = process.argv.slice(2);
  const results: Results = {
    version: 1,
    startedAt,
    durationSeconds: (performance.now() - t0) / 1000,
    command: `npm run bench${argv.length ? ` -- ${argv.join(' ')}` : ''}`,
    quick,
    machine,
    settings: { env: BENCH_ENV, plans, mailboxBuildSeconds: { '10K': small.buildMs / 1000, '1M': large ? large.buildMs / 1000 : null } },
    figures,
  };
  log(`\n${table(figures)}\n`);
  const complete = !quick && !only;
  const jsonFile = args.json ?? (complete ? path.join(ROOT, 'bench', 'results.json') : path.join(os.tmpdir(), `pigeon-bench-${startedAt.replace(/[:.]/g, '-')}.json`));
  fs.writeFileSync(jsonFile, `${JSON.stringify(results, null, 2)}\n`);
  log(`results: ${path.relative(process.cwd(), jsonFile).startsWith('..') ? jsonFile : path.relative(process.cwd(), jsonFile)}`);
  if (complete) {
    writeMarkdown(path.join(ROOT, 'BENCHMARKS.md'), results, PREAMBLE);
    log('BENCHMARKS.md updated');
  }
  if (args.compare) log(`\nchange against ${args.compare}:\n${comparison(readResults(args.compare), results)}`);
  log(`done in ${Math.round(results.durationSeconds)} s`);
}

/**
 * `--store pg|both`: the store figures (scenarios/stores.ts) and, on PostgreSQL, where its time goes
 * (scenarios/pgCost.ts), in a database of the run's own. Prints the tables and writes the JSON (to the temp dir
 * unless --json); BENCHMARKS.md is written by hand from them.
 */
async function storeRun(run: {
  quick: boolean;
  plans: { latency: BenchContext['latency']; throughput: BenchContext['throughput'] };
  log: (line: string) => void;
  cpuProfDir?: string;
  wants: (n: number) => boolean;
  startedAt: string;
  t0: number;
  machine: ReturnType<typeof describeMachine>;
}): Promise<void> {
  const { quick, plans, log, wants } = run;
  const stores: StoreName[] = args.store === 'both' ? ['sqlite', 'pg'] : ['pg'];
  const serverUrl = args['pg-url'] ?? process.env.BENCH_POSTGRES_URL;
  if (!serverUrl) throw new Error(NO_POSTGRES_URL);
  const small = stores.includes('sqlite') ? await cachedMailbox(10_000, log) : undefined;
  const db = await createBenchDatabase(serverUrl);
  let meter: Awaited<ReturnType<typeof pgMeter>> | undefined;
  let figures: Figure[] = [];
  let cost: PgCost | undefined;
  let settings: Record<string, string> = {};
  try {
    settings = await pgSettings(serverUrl);
    log(`\nPostgreSQL ${settings.server_version}: database ${db.name}; synchronous_commit=${settings.synchronous_commit}, fsync=${settings.fsync}, wal_sync_method=${settings.wal_sync_method}`);
    meter = await pgMeter(db);
    await buildPostgresMailbox(db.url, 10_000, log);
    log(`\n${stores.map((s) => STORE_NAMES[s]).join(' and ')}, 10,000-item mailbox`);
    figures = await storeFigures({ quick, ...plans, log, cpuProfDir: run.cpuProfDir }, { stores, sqliteMailbox: small?.file, pg: { db, meter }, cpuProfDir: run.cpuProfDir, wants });
    if (wants(9)) {
      log("\nwhere PostgreSQL's time goes (one process, through a counting proxy)");
      cost = await pgCost(log, db, meter, quick);
    }
  } finally {
    await meter?.close();
    await db.drop();
  }
  figures.sort((a, b) => a.scenario - b.scenario);
  const columns = stores.map((key) => ({ key, name: STORE_NAMES[key] }));
  log(`\n${table(figures)}\n`);
  log(`${sideBySideTable(figures, columns)}\n`);
  if (cost) log(`${costTable(cost)}\n\n${statementDetail(cost)}\n`);
  if (run.cpuProfDir) for (const f of profilesIn(run.cpuProfDir, 0)) log(`\n${summarize(f)}\n(full profile: ${f})\n`);
  const argv = process.argv.slice(2);
  const results: Results & { pgCost?: PgCost } = {
    version: 1,
    startedAt: run.startedAt,
    durationSeconds: (performance.now() - run.t0) / 1000,
    command: `npm run bench -- ${argv.map((a) => a.replace(/\/\/[^@/]*@/, '//…@')).join(' ')}`,
    quick,
    machine: run.machine,
    settings: { env: BENCH_ENV, plans, stores, postgres: settings, loadAverageAtEnd: os.loadavg().map((l) => Math.round(l * 100) / 100) },
    figures,
    pgCost: cost,
  };
  const jsonFile = args.json ?? path.join(os.tmpdir(), `pigeon-bench-store-${run.startedAt.replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(jsonFile, `${JSON.stringify(results, null, 2)}\n`);
  log(`results: ${jsonFile}`);
  log(`load average at start ${run.machine.loadAverage.join(' / ')}, at end ${os.loadavg().map((l) => l.toFixed(2)).join(' / ')}`);
  log(`done in ${Math.round(results.durationSeconds)} s`);
}

let finished = false;
// A promise nothing will ever settle would otherwise end the run silently, with status 0 and no figures.
process.on('beforeExit', () => {
  if (finished) return;
  console.error('bench: the run stopped waiting for something that can no longer happen (a bug in the suite)');
  process.exitCode = 1;
});
main()
  .then(() => (finished = true))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
