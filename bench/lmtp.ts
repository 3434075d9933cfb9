/**
 * LMTP delivery throughput on this machine: the real server (synchronous=FULL, its default) on a temporary data
 * dir; N messages of 10 KB (default 2,000) delivered to one mailbox over 4 LMTP connections, one message at a time
 * per connection (nodemailer's pooled LMTP transport). Prints messages/s and the per-message latency (from
 * sendMail to the 250) p50/p99, the CPU time the server process and this client spent per message (the server's from
 * /proc, where there is one) and the load average before and after: the machine is shared, and on two cores the
 * client's own CPU counts against the server's. Then checks that every message is in the store.
 * `npm run bench:lmtp [-- N]`.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import nodemailer from 'nodemailer';
import { openSqliteStore } from '../server/store/sqlite';
import { createUserAdmin } from '../server/admin/users';
import { systemClock } from '../server/clock';
import { startServer } from '../tests/helpers/server';
import { tempDir } from '../tests/helpers/testApp';

const TOTAL = Number(process.argv[2]) > 0 ? Number(process.argv[2]) : 2_000;
const CONNECTIONS = 4;
const MESSAGE_BYTES = 10 * 1024;

const LINE = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incid.\r\n';

function message(i: number): string {
  const head = [
    'From: Bench Sender <sender@example.org>',
    'To: Bench <bench@example.com>',
    `Subject: Bench message ${i}`,
    `Message-ID: <bench-${i}-${process.pid}@example.org>`,
    `Date: ${new Date().toUTCString()}`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    '',
    '',
  ].join('\r\n');
  return head + LINE.repeat(Math.ceil((MESSAGE_BYTES - head.length) / LINE.length)).slice(0, MESSAGE_BYTES - head.length);
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
const load = () => os.loadavg().map((l) => l.toFixed(2)).join(' / ');

/** User + system CPU milliseconds of a process so far (Linux /proc), or undefined elsewhere. */
function processCpuMs(pid: number | undefined): number | undefined {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime + stime, in clock ticks of 1/100 s
  } catch {
    return undefined;
  }
}

async function main() {
  const dataDir = tempDir('pigeon-bench-lmtp-');
  const seed = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  await createUserAdmin(seed, systemClock).addUser({ username: 'bench', password: 'bench-password-1', role: 'user', email: 'bench@example.com' });
  await seed.close();
  const server = await startServer({ PIGEON_DATA_DIR: dataDir });
  try {
    const transport = nodemailer.createTransport({
      lmtp: true,
      host: '127.0.0.1',
      port: server.lmtpPort!,
      ignoreTLS: true,
      pool: true,
      maxConnections: CONNECTIONS,
      maxMessages: Infinity,
    });
    const latencies: number[] = [];
    let next = 0;
    let refused = 0;
    // One sender per connection: each waits for its 250 before sending the next message.
    const sender = async () => {
      while (next < TOTAL) {
        const raw = message(next++);
        const t0 = performance.now();
        const info = await transport.sendMail({ envelope: { from: 'sender@example.org', to: ['bench@example.com'] }, raw });
        latencies.push(performance.now() - t0);
        if (info.accepted.length !== 1) refused++;
      }
    };
    const loadBefore = load();
    const serverCpu = processCpuMs(server.proc.pid);
    const clientCpu = process.cpuUsage();
    const start = performance.now();
    await Promise.all(Array.from({ length: CONNECTIONS }, sender));
    const seconds = (performance.now() - start) / 1000;
    const serverMs = serverCpu === undefined ? undefined : processCpuMs(server.proc.pid)! - serverCpu;
    const client = process.cpuUsage(clientCpu);
    transport.close();

    latencies.sort((a, b) => a - b);
    console.log(
      `${TOTAL} messages of ${MESSAGE_BYTES / 1024} KB over ${CONNECTIONS} LMTP connections: ${Math.round(TOTAL / seconds)} msg/s ` +
        `(${seconds.toFixed(1)} s) | latency p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms` +
        (refused ? ` | ${refused} refused` : ''),
    );
    console.log(
      `CPU per message: server ${serverMs === undefined ? 'n/a' : `${(serverMs / TOTAL).toFixed(2)} ms`}, client ${((client.user + client.system) / 1000 / TOTAL).toFixed(2)} ms` +
        ` | load average before ${loadBefore}, after ${load()} (${os.availableParallelism()} cores)`,
    );
  } finally {
    await server.stop();
  }
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  const stored = (store.db.prepare('SELECT count(*) AS n FROM items').get() as { n: number }).n;
  await store.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
  console.log(`stored: ${stored} of ${TOTAL}`);
  if (stored !== TOTAL) process.exit(1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
