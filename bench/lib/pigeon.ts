/**
 * Pigeon as the benchmark runs it: the real server process (`server/main.ts` through tsx, as `npm start` does) on a
 * data dir of the runner's choosing, real HTTPS with a development certificate, the real SQLite file.
 *
 * Its JSON log goes straight to a file: parsing a hundred thousand request lines in the runner would steal CPU
 * from the server being measured (both share the machine). The runner only looks for the `ready` and
 * `lmtp listening` lines.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { devCertificate, ROOT } from '../../tests/helpers/server';
import type { Target } from './http';

/**
 * Settings that keep the measurement about the work itself: the per-device rate limit and the load shedder would
 * answer 429/503 to a load generator hammering from one device (they are measured by the overload tests, not
 * here); token-endpoint limits would stop the refresh scenario; the window trim runs after 1 s so scenario 4 can
 * measure it without waiting a day. Everything else is the production default, log level included.
 */
export const BENCH_ENV: Record<string, string> = {
  PIGEON_HOST: '127.0.0.1',
  PIGEON_PORT: '0',
  PIGEON_DEMO: 'false',
  PIGEON_PASSWORD_GRANT: 'true', // the benchmark signs in with the development grant
  PIGEON_LOG_LEVEL: 'info',
  PIGEON_DEVICE_RATE_LIMIT: '0',
  PIGEON_SHED_LAG_MS: '0',
  PIGEON_TOKEN_REQUESTS_PER_IP: '1000000',
  PIGEON_LOGIN_FAILURES_PER_USER: '10000',
  PIGEON_LOGIN_FAILURES_PER_USER_GLOBAL: '10000',
  PIGEON_METRICS_PORT: '0',
  PIGEON_WINDOW_TRIM_AFTER: '1',
  PIGEON_LMTP_PORT: '0',
  PIGEON_ACCESS_TOKEN_TTL: '2h',
};

/**
 * Settings taken from the runner's environment: `PIGEON_FAST_LANE=false npm run bench` measures without the fast
 * lane, `PIGEON_WORKERS=1` (or 2, ...) with that many server processes (unset: the production default, one per core),
 * `PIGEON_DATABASE_POOL_SIZE` with that many PostgreSQL connections per process (`--store pg`).
 * Only those that are set are passed: an older checkout (`--baseline`) refuses a setting it does not know.
 */
function passedThrough(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of ['PIGEON_FAST_LANE', 'PIGEON_WORKERS', 'PIGEON_DATABASE_POOL_SIZE']) {
    const v = process.env[name];
    if (v !== undefined) out[name] = v;
  }
  return out;
}

export interface Pigeon extends Target {
  proc: ChildProcess;
  dataDir: string;
  logFile: string;
  /** The LMTP port from the `lmtp listening` line, when the server has an LMTP listener. */
  lmtpPort?: number;
  /** The server's own figure: milliseconds from process start to `ready` (performance.now() in the process). */
  readyMs: number;
  /** Milliseconds from spawn to the runner seeing `ready`. */
  wallReadyMs: number;
  certFile: string;
  keyFile: string;
  stop(): Promise<void>;
}

interface LogLine {
  msg?: string;
  port?: number;
  readyMs?: number;
}

/** Lines of interest from the log file, read from `offset` on. */
function scan(file: string, from: number): { lines: LogLine[]; offset: number } {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    if (size <= from) return { lines: [], offset: from };
    const buf = Buffer.alloc(size - from);
    fs.readSync(fd, buf, 0, buf.length, from);
    const text = buf.toString('utf8');
    const end = text.lastIndexOf('\n') + 1; // a line still being written is read next time
    const lines: LogLine[] = [];
    for (const line of text.slice(0, end).split('\n')) {
      if (!line.includes('"ready"') && !line.includes('lmtp listening')) continue;
      try {
        lines.push(JSON.parse(line) as LogLine);
      } catch {
        /* not a log line */
      }
    }
    return { lines, offset: from + Buffer.byteLength(text.slice(0, end)) };
  } finally {
    fs.closeSync(fd);
  }
}

export interface StartOptions {
  env?: Record<string, string>;
  timeoutMs?: number;
  /** Run with --cpu-prof, writing the profile here at exit. */
  cpuProfDir?: string;
  /** Another checkout of Pigeon to run (to measure two versions side by side); this one when not given. */
  root?: string;
  /**
   * Keep the store in this PostgreSQL database (PIGEON_DATABASE_URL) instead of the SQLite file in the data dir, which
   * then holds only the keys and the certificate. A checkout that does not know the setting is refused.
   */
  databaseUrl?: string;
}

/**
 * The settings a checkout knows (the `env: 'PIGEON_…'` names of its server/config.ts): an older checkout refuses
 * settings added since, so a baseline is given only the ones it has.
 */
function knownSettings(root: string): (name: string) => boolean {
  const source = fs.readFileSync(path.join(root, 'server', 'config.ts'), 'utf8');
  const names = new Set([...source.matchAll(/env: '(PIGEON_[A-Z0-9_]+)'/g)].map((m) => m[1]!));
  return (name) => !name.startsWith('PIGEON_') || names.has(name);
}

export async function startPigeon(dataDir: string, opts: StartOptions = {}): Promise<Pigeon> {
  const known = knownSettings(opts.root ?? ROOT);
  // Dropped like any unknown setting, it would leave the server on SQLite, measured as if it were PostgreSQL.
  if (opts.databaseUrl && !known('PIGEON_DATABASE_URL')) throw new Error(`the checkout in ${opts.root ?? ROOT} has no PIGEON_DATABASE_URL: it cannot run on PostgreSQL`);
  const { certFile, keyFile, cert } = await devCertificate(dataDir);
  const logFile = path.join(dataDir, `pigeon-${Date.now()}.log`);
  const out = fs.openSync(logFile, 'a');
  const execArgv = opts.cpuProfDir ? [`--cpu-prof`, `--cpu-prof-dir=${opts.cpuProfDir}`] : [];
  const t0 = performance.now();
  const proc = spawn(process.execPath, [...execArgv, '--import', 'tsx', 'server/main.ts'], {
    cwd: opts.root ?? ROOT,
    env: Object.fromEntries(
      Object.entries({
        PATH: process.env.PATH, HOME: process.env.HOME, ...BENCH_ENV, ...passedThrough(), PIGEON_DATA_DIR: dataDir, PIGEON_TLS_CERT: certFile, PIGEON_TLS_KEY: keyFile,
        ...(opts.databaseUrl ? { PIGEON_DATABASE_URL: opts.databaseUrl } : {}),
        ...opts.env,
      }).filter(([name]) => known(name)),
    ),
    stdio: ['ignore', out, out],
  });
  fs.closeSync(out);
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  let exitCode: number | null | undefined;
  void exited.then((c) => (exitCode = c));

  const deadline = t0 + (opts.timeoutMs ?? 120_000);
  let offset = 0;
  let lmtpPort: number | undefined;
  let ready: LogLine | undefined;
  while (!ready) {
    if (exitCode !== undefined) throw new Error(`pigeon exited with ${exitCode} before ready:\n${fs.readFileSync(logFile, 'utf8').slice(-2000)}`);
    if (performance.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`pigeon not ready in ${opts.timeoutMs ?? 120_000} ms`);
    }
    const r = scan(logFile, offset);
    offset = r.offset;
    for (const line of r.lines) {
      if (line.msg === 'lmtp listening' && typeof line.port === 'number') lmtpPort = line.port;
      if (line.msg === 'ready') ready = line;
    }
    if (!ready) await new Promise((res) => setTimeout(res, 5));
  }
  const wallReadyMs = performance.now() - t0;

  return {
    proc,
    pid: proc.pid,
    port: ready.port!,
    cert,
    certFile,
    keyFile,
    dataDir,
    logFile,
    lmtpPort,
    readyMs: ready.readyMs ?? wallReadyMs,
    wallReadyMs,
    async stop() {
      if (exitCode === undefined) {
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}

/** A process and its descendants (with workers, the server is a primary and its children), from /proc. */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry));
      children.set(ppid, list);
    } catch {
      /* gone meanwhile */
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(pid);
  return out;
}

/** One /proc file of a process that may have gone meanwhile ('' then). */
function procFile(pid: number, name: string): string {
  try {
    return fs.readFileSync(`/proc/${pid}/${name}`, 'utf8');
  } catch {
    return '';
  }
}

/**
 * CPU time (user + system) a process and its descendants (workers) have used so far, in milliseconds. A worker that
 * exits between two readings takes its time with it: the server's workers live as long as it does.
 */
export function cpuMs(pid: number): number {
  let total = 0;
  for (const p of processTree(pid)) {
    const stat = procFile(p, 'stat');
    if (!stat) continue;
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // the command name may contain spaces
    total += ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime + stime in USER_HZ (100 on Linux)
  }
  return total;
}

/** Resident set size of a process and its descendants (workers), in MiB (VmRSS: what the machine actually holds). */
export function rssMiB(pid: number): number {
  let kB = 0;
  let found = false;
  for (const p of processTree(pid)) {
    const m = /VmRSS:\s+(\d+) kB/.exec(procFile(p, 'status'));
    if (m) {
      kB += Number(m[1]);
      found = true;
    }
  }
  return found ? kB / 1024 : NaN;
}
