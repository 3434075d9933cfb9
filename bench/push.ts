/**
 * Push figures for the real server process over HTTPS on loopback (`npx tsx bench/push.ts`):
 *   - the server's RSS (VmRSS) with 0, 1,000 and 5,000 idle SSE streams;
 *   - CPU per idle stream per hour (utime + stime of the server over an idle interval, heartbeats included);
 *   - change→event latency p50/p99 under 50 changes/s for 20 s, with all 5,000 streams open.
 *
 * The mailbox world (2,500 users × 2 registered devices, one message in each of the first 100 inboxes) is made in
 * the store before start-up, and access tokens are minted with the server's own key (no 2,500 password grants).
 * A "change" is another device marking a message read or unread over HTTPS (there is no delivery endpoint yet);
 * latency runs from sending that request to the event arriving on the first device's stream, so it includes the
 * production coalescing window (1 s): the figure an app sees.
 *
 * Bounded: at most 5,000 streams, 20 s of load, 60 s of idle (PUSH_BENCH_IDLE_SECONDS to change), loopback only.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { openSqliteStore } from '../server/store/sqlite';
import { loadConfig } from '../server/config';
import { loadKeys } from '../server/auth/keys';
import { createAccessTokens } from '../server/auth/accessTokens';
import { systemClock } from '../server/clock';
import { startServer, type RunningServer } from '../tests/helpers/server';
import { tempDir } from '../tests/helpers/testApp';

const USERS = 2500;
const STEPS = [1000, 5000];
const CHANGERS = 100; // users whose messages are toggled; each changes every 2 s at 50 changes/s in total
const RATE = 50;
const LOAD_SECONDS = 20;
const IDLE_SECONDS = Math.min(600, Number(process.env.PUSH_BENCH_IDLE_SECONDS ?? 60));
const ISSUER = 'https://pigeon-bench.invalid';
const DESCRIPTION = { friendlyName: null, deviceType: null, deviceModel: null, deviceOS: null, clientType: null, clientVersion: null, userAgent: null, capabilities: [] };

interface BenchUser {
  id: string;
  token: string;
  devices: [string, string];
  messageId?: string;
  inboxId: string;
}

async function world(dataDir: string): Promise<BenchUser[]> {
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  const now = Date.now();
  const seeded: Array<Omit<BenchUser, 'token'> & { tenantId: string; sv: number }> = [];
  store.transaction(() => {
    const tenant = store.tenants.create('Bench', now);
    for (let i = 0; i < USERS; i++) {
      const user = store.users.create({ tenantId: tenant.id, username: `u${i}`, email: `u${i}@x`, displayName: `U${i}`, role: 'user', passwordHash: null }, now);
      store.mailboxes.create(user.id, now);
      const inboxId = store.folders.byKind(user.id, 'inbox')!.id;
      const devices = [0, 1].map((d) => store.devices.create(user.id, `bench-u${i}-d${d}-0123456789`, DESCRIPTION, now).deviceId) as [string, string];
      const messageId = i < CHANGERS
        ? store.items.create({ userId: user.id, folderId: inboxId, type: 'email', receivedAt: now, subject: 'bench', from: { name: 'B', address: 'b@x' }, preview: 'x' }, now).id
        : undefined;
      seeded.push({ id: user.id, tenantId: tenant.id, sv: user.sessionVersion, devices, inboxId, messageId });
    }
  });
  store.close();
  const keys = await loadKeys(loadConfig({ PIGEON_DATA_DIR: dataDir }));
  const tokens = createAccessTokens({ keys, clock: systemClock, issuer: ISSUER, audience: 'pigeon-api', ttlSeconds: 7200 });
  return Promise.all(
    seeded.map(async (u) => ({
      id: u.id,
      devices: u.devices,
      inboxId: u.inboxId,
      messageId: u.messageId,
      token: await tokens.issue({ sub: u.id, tid: u.tenantId, scope: 'mail', sv: u.sv, sid: crypto.randomUUID(), role: 'user' }),
    })),
  );
}

/** VmRSS of a process, in MiB. */
const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // the command name may contain spaces
  return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ is 100 on Linux
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

interface Stream {
  user: number;
  closed: boolean;
  /** Arrival times of `changed` events (latency streams only). */
  onEvent?: (at: number) => void;
}

function openStream(server: RunningServer, u: BenchUser, userIndex: number, device: 0 | 1): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const s: Stream = { user: userIndex, closed: false };
    const req = https.get(
      { host: '127.0.0.1', port: server.port, path: '/v1/events', ca: server.cert, servername: 'localhost', agent: false, headers: { authorization: `Bearer ${u.token}`, 'x-device-id': u.devices[device] } },
      (res) => {
        if (res.statusCode !== 200) return reject(new Error(`stream: ${res.statusCode}`));
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          if (s.onEvent && chunk.includes('event: changed')) s.onEvent(performance.now());
        });
        res.on('close', () => (s.closed = true));
        resolve(s);
      },
    );
    req.once('error', reject);
  });
}

/** Opens streams `from`..`to` (device 0 then device 1 of each user), 50 handshakes at a time. */
async function openMany(server: RunningServer, users: BenchUser[], streams: Stream[], to: number) {
  const want: Array<[number, 0 | 1]> = [];
  for (let n = streams.length; n < to; n++) want.push([n % USERS, n < USERS ? 0 : 1]);
  for (let i = 0; i < want.length; i += 50) {
    streams.push(...(await Promise.all(want.slice(i, i + 50).map(([u, d]) => openStream(server, users[u]!, u, d)))));
  }
}

async function main() {
  const dataDir = tempDir('pigeon-bench-push-');
  const t0 = performance.now();
  const users = await world(dataDir);
  console.log(`world: ${USERS} users, ${USERS * 2} devices in ${Math.round(performance.now() - t0)} ms`);
  const server = await startServer({ PIGEON_DATA_DIR: dataDir, PIGEON_ISSUER: ISSUER, PIGEON_ACCESS_TOKEN_TTL: '2h' }, 120_000);
  const pid = server.proc.pid!;
  const report: Record<string, unknown> = {};
  try {
    await sleep(3000);
    report.rssIdleServerMiB = rssMiB(pid);
    const streams: Stream[] = [];
    for (const n of STEPS) {
      const t = performance.now();
      await openMany(server, users, streams, n);
      const openMs = performance.now() - t;
      await sleep(5000);
      report[`rssWith${n}StreamsMiB`] = rssMiB(pid);
      console.log(`${n} streams open in ${Math.round(openMs)} ms; server RSS ${rssMiB(pid).toFixed(1)} MiB`);
    }
    const n = streams.length;
    report.rssPerStreamKiB = (((report[`rssWith${n}StreamsMiB`] as number) - (report.rssWith1000StreamsMiB as number)) * 1024) / (n - 1000);

    // Idle: heartbeats (every 25 s, each with its re-check of the device) and nothing else.
    const c0 = cpuSeconds(pid);
    const w0 = performance.now();
    await sleep(IDLE_SECONDS * 1000);
    const cpu = cpuSeconds(pid) - c0;
    const hours = (performance.now() - w0) / 3_600_000;
    report.idleCpuSeconds = cpu;
    report.cpuMsPerIdleStreamPerHour = (cpu * 1000) / n / hours;
    report.cpuShareOfOneCoreIdle = cpu / (hours * 3600);
    console.log(`idle ${IDLE_SECONDS} s with ${n} streams: ${cpu.toFixed(2)} CPU s → ${(report.cpuMsPerIdleStreamPerHour as number).toFixed(1)} ms CPU per stream per hour`);

    // Load: 50 changes/s for 20 s from each changer's second device; latency on its first device's stream.
    const latencies: number[] = [];
    const waiting = new Map<number, number[]>(); // user → send times not yet seen in an event
    for (const [i, s] of streams.entries()) {
      if (s.user < CHANGERS && i < USERS) {
        s.onEvent = (at) => {
          for (const sent of waiting.get(s.user) ?? []) latencies.push(at - sent);
          waiting.set(s.user, []);
        };
      }
    }
    const agent = new https.Agent({ keepAlive: true, maxSockets: 32 });
    const read = new Map<number, boolean>();
    const patch = (u: number) =>
      new Promise<number>((resolve, reject) => {
        const user = users[u]!;
        const isRead = !(read.get(u) ?? false);
        read.set(u, isRead);
        const body = JSON.stringify({ isRead });
        const req = https.request(
          { host: '127.0.0.1', port: server.port, method: 'PATCH', path: `/v1/items/${user.messageId}`, ca: server.cert, servername: 'localhost', agent,
            headers: { authorization: `Bearer ${user.token}`, 'x-device-id': user.devices[1], 'content-type': 'application/json', 'content-length': String(body.length) } },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode!));
          },
        );
        req.once('error', reject);
        req.end(body);
      });
    const pending: Array<Promise<number>> = [];
    const total = RATE * LOAD_SECONDS;
    const start = performance.now();
    const cpuLoad0 = cpuSeconds(pid);
    for (let k = 0; k < total; k++) {
      const due = start + (k * 1000) / RATE;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      const u = k % CHANGERS;
      waiting.set(u, [...(waiting.get(u) ?? []), performance.now()]);
      pending.push(patch(u));
    }
    const statuses = await Promise.all(pending);
    await sleep(2500); // the last window closes
    report.loadCpuShareOfOneCore = (cpuSeconds(pid) - cpuLoad0) / ((performance.now() - start) / 1000);
    agent.destroy();
    const failed = statuses.filter((s) => s !== 200).length;
    const missed = [...waiting.values()].reduce((a, w) => a + w.length, 0);
    report.changes = total;
    report.changesFailed = failed;
    report.changesWithoutEvent = missed;
    report.latencyP50Ms = pct(latencies, 50);
    report.latencyP99Ms = pct(latencies, 99);
    report.latencyMaxMs = Math.max(...latencies);
    report.streamsDropped = streams.filter((s) => s.closed).length;
    console.log(`load: ${total} changes at ${RATE}/s → event latency p50 ${pct(latencies, 50).toFixed(0)} ms, p99 ${pct(latencies, 99).toFixed(0)} ms (coalescing window 1000 ms); ${missed} without event, ${failed} failed`);

    // Shutdown with every stream open: the drain must not wait for them.
    const k0 = Date.now();
    server.proc.kill('SIGTERM');
    const exit = await server.exited;
    report.shutdownMsWith5000Streams = exit.at - k0;
  } finally {
    await server.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
  for (const [k, v] of Object.entries(report)) report[k] = typeof v === 'number' ? Math.round(v * 100) / 100 : v;
  console.log(JSON.stringify(report, null, 2));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
