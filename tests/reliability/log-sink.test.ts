/**
 * A log output that fails or stalls (issue 12, defect 4) never blocks the event loop, never kills the process and
 * never holds up SIGTERM. The real server process, with its stdout on
 *  - /dev/full (every write fails with ENOSPC),
 *  - a file on a tiny tmpfs that fills, with the store on the same filesystem (when this machine lets the test mount
 *    one: root and `mount -t tmpfs`), then gets space back,
 *  - a pipe whose reader stopped reading, and a pipe whose reader has gone (EPIPE),
 * answers /healthz and authenticated calls promptly, stays up, counts what it could not write in
 * `pigeon_log_lines_dropped_total` (read from the metrics listener, issue 12 defect 6) and exits 0 within a few
 * seconds of SIGTERM. Writes to the full store answer 507; once space returns, writes and logging resume without a
 * restart and the log says how many lines were lost.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { ROOT, devCertificate, serverEnv, storeWithUser } from '../helpers/server';
import { tempDir } from '../helpers/testApp';

const PASSWORD = 'log-sink-password-1';
/** A request slower than this counts as not answered: a blocked event loop never answers at all. */
const CALL_TIMEOUT_MS = 4_000;
/** SIGTERM to exit, with nothing in flight: the drain is immediate, so this bounds the final log flush. */
const EXIT_WITHIN_MS = 5_000;

let template: string;
const cleanup: Array<() => void> = [];

beforeAll(async () => {
  // One store with alice in it, copied for each server (hashing her password once).
  template = tempDir('pigeon-logsink-template-');
  await storeWithUser(template, 'alice', PASSWORD);
});
afterAll(() => {
  for (const undo of cleanup.reverse()) undo();
  fs.rmSync(template, { recursive: true, force: true });
});

interface Server {
  proc: ChildProcess;
  port: number;
  metricsPort: number;
  cert: string;
  /** Keep-alive connections for the bulk requests (a TLS handshake each would dominate the run time). */
  agent: https.Agent;
  /** Requests made to the API port: each is one `request` log line. */
  calls: number;
  /** The slowest answer from the API port. */
  slowestMs: number;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
}

function freshDataDir(parent?: string): string {
  const dir = parent ? path.join(parent, 'data') : tempDir('pigeon-logsink-');
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(path.join(template, 'pigeon.db'), path.join(dir, 'pigeon.db'));
  if (!parent) cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Starts the real server with its stdout on `stdout` (a file descriptor, or 'pipe' for the test to read). The API
 * and metrics ports come from the `ready` log line when stdout is a pipe, from the stderr walkthrough otherwise.
 */
async function startServer(dataDir: string, stdout: number | 'pipe', env: Record<string, string> = {}): Promise<Server> {
  const tls = await devCertificate(dataDir);
  const { cert } = tls;
  const proc = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], {
    cwd: ROOT,
    env: serverEnv(dataDir, tls, { PIGEON_SHUTDOWN_TIMEOUT: '20s', ...env }),
    stdio: ['ignore', stdout, 'pipe'],
  });
  cleanup.push(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  let err = '';
  let out = '';
  proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const started = Date.now();
  for (;;) {
    if (stdout === 'pipe') {
      const ready = out.split('\n').find((l) => l.includes('"msg":"ready"'));
      if (ready) {
        const line = JSON.parse(ready);
        // From here on the test decides what the reader does: stop reading, or go away.
        proc.stdout!.removeAllListeners('data');
        proc.stdout!.pause();
        return { proc, port: line.port, metricsPort: line.metricsPort, cert, agent: keepAlive(), calls: 0, slowestMs: 0, stderr: () => err, exited };
      }
    } else {
      const api = /listening on https:\/\/127\.0\.0\.1:(\d+)/.exec(err);
      if (api) {
        const metrics = /http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(err);
        return { proc, port: Number(api[1]), metricsPort: Number(metrics?.[1]), cert, agent: keepAlive(), calls: 0, slowestMs: 0, stderr: () => err, exited };
      }
    }
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`server exited before ready: ${err}`);
    if (Date.now() - started > 60_000) throw new Error(`server not ready: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function keepAlive(): https.Agent {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 10 });
  cleanup.push(() => agent.destroy());
  return agent;
}

/** One request (on its own connection unless `reuse`); rejects when no answer comes within CALL_TIMEOUT_MS. */
function call(
  s: Server,
  method: string,
  p: string,
  headers: Record<string, string> = {},
  body?: string,
  reuse = false,
): Promise<{ status: number; body: any; ms: number }> {
  const t0 = Date.now();
  s.calls++;
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port: s.port, method, path: p, headers, ca: s.cert, servername: 'localhost', agent: reuse ? s.agent : false, timeout: CALL_TIMEOUT_MS },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            /* not JSON */
          }
          const ms = Date.now() - t0;
          s.slowestMs = Math.max(s.slowestMs, ms);
          resolve({ status: res.statusCode!, body: parsed, ms });
        });
      },
    );
    req.once('timeout', () => req.destroy(new Error(`${method} ${p.slice(0, 40)}: no answer in ${CALL_TIMEOUT_MS} ms`)));
    req.once('error', reject);
    req.end(body);
  });
}

async function signIn(s: Server, deviceId: string): Promise<Record<string, string>> {
  const form = new URLSearchParams({ grant_type: 'password', client_id: 'pigeon-app', username: 'alice', password: PASSWORD, device_id: deviceId });
  const token = await call(s, 'POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, form.toString());
  expect(token.status).toBe(200);
  const headers = { authorization: `Bearer ${token.body.access_token}`, 'x-device-id': deviceId };
  const device = await call(s, 'POST', '/v1/devices', { ...headers, 'content-type': 'application/json' }, JSON.stringify({ friendlyName: 'log sink' }));
  expect([200, 201]).toContain(device.status);
  return headers;
}

/** Health and authenticated reads all answered, none slow enough to mean a blocked event loop. */
async function stillServing(s: Server, headers: Record<string, string>, rounds = 5) {
  for (let i = 0; i < rounds; i++) {
    expect((await call(s, 'GET', '/healthz')).status).toBe(200);
    expect((await call(s, 'GET', '/v1/session', headers)).status).toBe(200);
    expect((await call(s, 'GET', '/v1/folders/sync', headers)).status).toBe(200);
  }
}

/** Requests whose log lines are large (the path is logged): `n` lines of about `kib` KiB each. */
async function bigLogLines(s: Server, n: number, kib: number) {
  const p = `/${'x'.repeat(kib * 1024)}`;
  for (let i = 0; i < n; i += 10) {
    const batch = await Promise.all(Array.from({ length: Math.min(10, n - i) }, () => call(s, 'GET', p, {}, undefined, true)));
    for (const r of batch) expect(r.status).toBe(404);
  }
}

const METRICS_TOKEN = 'log-sink-metrics-token-0123456789';

/** A scrape of the metrics listener (with the bearer, which only the token-guarded server asks for). */
function metric(s: Server, name: string, authorization = `Bearer ${METRICS_TOKEN}`): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: s.metricsPort, path: '/metrics', headers: { authorization }, timeout: CALL_TIMEOUT_MS }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => {
        const m = new RegExp(`^${name} (\\d+(?:\\.\\d+)?)$`, 'm').exec(text);
        if (!m) reject(new Error(`${name} not in the metrics (status ${res.statusCode})`));
        else resolve(Number(m[1]));
      });
    });
    req.once('timeout', () => req.destroy(new Error('metrics: no answer')));
    req.once('error', reject);
  });
}

/** Polls a metric until `ok` holds (lines are dropped when a write fails, and failed writes are retried ≤ 1 s apart). */
async function eventually(s: Server, name: string, ok: (v: number) => boolean, withinMs = 3_000): Promise<number> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const v = await metric(s, name);
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** SIGTERM: exit 0 within EXIT_WITHIN_MS. Logs the figures RELIABILITY.md quotes. */
async function sigtermExitsPromptly(s: Server, label: string) {
  expect(s.proc.exitCode).toBeNull(); // still alive: no crash from the log output
  const dropped = await metric(s, 'pigeon_log_lines_dropped_total');
  s.agent.destroy();
  const t0 = Date.now();
  s.proc.kill('SIGTERM');
  const exit = await Promise.race([s.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), EXIT_WITHIN_MS).unref())]);
  if (!exit) throw new Error(`still running ${EXIT_WITHIN_MS} ms after SIGTERM`);
  expect(exit).toMatchObject({ code: 0, signal: null });
  const ms = exit.at - t0;
  console.log(`log sink, ${label}: ${s.calls} requests all answered (slowest ${s.slowestMs} ms), ${dropped} lines dropped, exit 0 ${ms} ms after SIGTERM`);
  return ms;
}

const said = (s: Server) => s.stderr().match(/dropping log lines/g)?.length ?? 0;

test('stdout on /dev/full (every write ENOSPC): keeps answering, stays up, counts the dropped lines, says so once', async () => {
  const full = fs.openSync('/dev/full', 'w');
  const s = await startServer(freshDataDir(), full);
  fs.closeSync(full);
  const headers = await signIn(s, 'logsink-full-0001');
  await stillServing(s, headers, 10);
  await bigLogLines(s, 20, 4);
  await new Promise((r) => setTimeout(r, 300)); // the old sink died of its 'error' event some time after the fact
  await stillServing(s, headers, 2);
  // Every line is lost, each one counted: at least one per request made.
  expect(await eventually(s, 'pigeon_log_lines_dropped_total', (v) => v >= s.calls)).toBeGreaterThanOrEqual(s.calls);
  expect(said(s)).toBe(1);
  expect(s.stderr()).toMatch(/ENOSPC/);
  await sigtermExitsPromptly(s, '/dev/full');
});

/** A tmpfs of its own (root only): the filesystem that fills under both the log and the store. */
function mountTmpfs(sizeKiB: number): string | undefined {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return undefined;
  const dir = tempDir('pigeon-logsink-fs-');
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeKiB}k`, 'pigeon-logsink', dir], { encoding: 'utf8' });
  if (r.status !== 0) {
    fs.rmSync(dir, { recursive: true, force: true });
    return undefined;
  }
  cleanup.push(() => {
    spawnSync('umount', ['-l', dir]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** Fills the filesystem to the last byte; returns the filler's path (delete it to give the space back). */
function fill(dir: string): string {
  const filler = path.join(dir, 'filler');
  const fd = fs.openSync(filler, 'w');
  try {
    for (let size = 64 * 1024; size >= 1; ) {
      try {
        fs.writeSync(fd, Buffer.alloc(size, 1));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
        size = Math.floor(size / 2);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return filler;
}

/** Lines the log itself says it lost (the warning written first when the output works again). */
const reported = (lines: Array<Record<string, unknown>>) =>
  lines.filter((l) => l.msg === 'log lines dropped').reduce((sum, l) => sum + (l.dropped as number), 0);
/** A request logged after the last such warning: logging has resumed. */
const healthAfterNotice = (lines: Array<Record<string, unknown>>) => {
  const last = lines.map((l) => l.msg).lastIndexOf('log lines dropped');
  return last >= 0 && lines.slice(last + 1).some((l) => l.msg === 'request' && l.path === '/healthz');
};

const tmpfs = mountTmpfs(8 * 1024);
(tmpfs ? test : test.skip)(
  'a filesystem that fills under the log and the store: reads answer, writes 507, lines are dropped; space back: writes and logging resume',
  async () => {
    const dir = tmpfs!;
    const logFile = path.join(dir, 'pigeon.log');
    const out = fs.openSync(logFile, 'a');
    const s = await startServer(freshDataDir(dir), out);
    fs.closeSync(out);
    const headers = await signIn(s, 'logsink-tmpfs-0001');
    const filler = fill(dir);
    const sizeWhenFull = fs.statSync(logFile).size;
    const callsWhenFull = s.calls;

    await stillServing(s, headers, 5);
    const writes: number[] = [];
    for (let i = 0; i < 12; i++) {
      const r = await call(s, 'POST', '/v1/folders', { ...headers, 'content-type': 'application/json' }, JSON.stringify({ displayName: `Full ${i} ${'x'.repeat(200)}`, parentId: null }));
      writes.push(r.status);
      if (r.status === 507) expect(r.body).toMatchObject({ status: 507, code: 'insufficientStorage' });
    }
    expect(writes).toContain(507);
    expect(writes.filter((w) => w !== 507 && w !== 201)).toEqual([]);
    await bigLogLines(s, 10, 4);
    // Every request line since the disk filled is lost, except the few that fit the slack of the log file's last
    // page (tmpfs allocates whole pages).
    const slack = () => fs.readFileSync(logFile, 'utf8').slice(sizeWhenFull).split('\n').length - 1;
    const lost = () => s.calls - callsWhenFull - slack();
    expect(await eventually(s, 'pigeon_log_lines_dropped_total', (v) => v >= lost())).toBeGreaterThanOrEqual(lost());
    expect(fs.statSync(logFile).size - sizeWhenFull).toBeLessThan(8192);
    expect(said(s)).toBe(1);

    // Space comes back: the same process writes and logs again, and the log says how much it lost.
    const droppedWhileFull = await metric(s, 'pigeon_log_lines_dropped_total');
    fs.unlinkSync(filler);
    const after = await call(s, 'POST', '/v1/folders', { ...headers, 'content-type': 'application/json' }, JSON.stringify({ displayName: 'After the storm', parentId: null }));
    expect(after.status).toBe(201);
    const deadline = Date.now() + 5_000;
    let resumed: Array<Record<string, unknown>> = [];
    while (Date.now() < deadline) {
      await call(s, 'GET', '/healthz');
      resumed = fs
        .readFileSync(logFile, 'utf8')
        .slice(sizeWhenFull)
        .split('\n')
        .flatMap((l) => {
          try {
            return [JSON.parse(l)];
          } catch {
            return [];
          }
        });
      if (reported(resumed) >= droppedWhileFull && healthAfterNotice(resumed)) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(resumed.find((l) => l.msg === 'log lines dropped')).toMatchObject({ level: 40, reason: 'ENOSPC', dropped: expect.any(Number) });
    expect(reported(resumed)).toBeGreaterThanOrEqual(droppedWhileFull);
    expect(healthAfterNotice(resumed)).toBe(true);
    await sigtermExitsPromptly(s, 'tmpfs full then freed');
    expect(fs.readFileSync(logFile, 'utf8')).toContain('"msg":"stopped"');
  },
);

test('stdout on a pipe whose reader stopped reading: requests answered, lines held then dropped, SIGTERM exits in seconds', async () => {
  const s = await startServer(freshDataDir(), 'pipe');
  const headers = await signIn(s, 'logsink-stall-0001');
  // About 1.8 MiB of log: more than the pipe and the sink's queue hold together.
  await bigLogLines(s, 150, 12);
  await stillServing(s, headers, 3);
  expect(await metric(s, 'pigeon_log_lines_dropped_total')).toBeGreaterThan(0);
  expect(await metric(s, 'pigeon_log_queue_bytes')).toBeGreaterThan(0); // still holding lines for the reader
  expect(said(s)).toBe(1);
  const ms = await sigtermExitsPromptly(s, 'stalled pipe');
  expect(ms).toBeLessThan(EXIT_WITHIN_MS);
});

test('stdout on a pipe whose reader has gone (EPIPE): requests answered, no crash, SIGTERM exits in seconds', async () => {
  const s = await startServer(freshDataDir(), 'pipe', { PIGEON_METRICS_TOKEN: METRICS_TOKEN });
  s.proc.stdout!.destroy(); // the reader goes away: the server's next write gets EPIPE
  await expect(metric(s, 'pigeon_log_lines_dropped_total', 'Bearer not-the-token')).rejects.toThrow(/status 401/);
  const headers = await signIn(s, 'logsink-gone-0001');
  await stillServing(s, headers, 5);
  expect((await call(s, 'GET', '/metrics')).status).toBe(404); // metrics live on their own listener only
  await bigLogLines(s, 20, 4);
  await new Promise((r) => setTimeout(r, 300));
  await stillServing(s, headers, 2);
  expect(await eventually(s, 'pigeon_log_lines_dropped_total', (v) => v >= s.calls)).toBeGreaterThanOrEqual(s.calls);
  await sigtermExitsPromptly(s, 'pipe reader gone');
});
