/**
 * Crash safety (issue 8). The harness (tests/helpers/crashHarness.ts) kills the real server with SIGKILL at random
 * moments while workers make acknowledged writes, checks the file with `PRAGMA integrity_check`, restarts it, and
 * requires every acknowledged write, every pre-crash sync token (200 converging to a fresh sync, or 410) and exactly
 * one effect for each retried in-flight write. CI: CRASH_CYCLES=30; deep tier: CRASH_CYCLES=100 with more workers,
 * at least 5,000 acknowledged writes.
 *
 * And the durability setting behind it: every SQLite connection the running server holds reads synchronous=FULL,
 * and (where strace is installed) each acknowledged write costs the process at least one fsync.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { runCrashCycles, seedCrashStore, Client, ALICE, UNLIMITED_ENV } from '../helpers/crashHarness';
import { startServer } from '../helpers/server';
import { buildTestApp, tempDir } from '../helpers/testApp';

const CYCLES = Number(process.env.CRASH_CYCLES ?? 30);
const DEEP = CYCLES >= 100;
const WORKERS = Number(process.env.CRASH_WORKERS ?? (DEEP ? 6 : 4));

test(`${CYCLES} kill -9 cycles under acknowledged writes lose nothing`, async () => {
  const dataDir = tempDir('pigeon-crash-');
  try {
    const report = await runCrashCycles({ cycles: CYCLES, workers: WORKERS, windowMs: [100, DEEP ? 1500 : 800], dataDir, log: process.env.CRASH_VERBOSE ? console.log : undefined });
    const restart = [...report.restartMs].sort((a, b) => a - b);
    console.log(
      `crash: ${report.cycles} cycles, ${report.ackedTotal} acknowledged writes (${Object.entries(report.acked).map(([k, n]) => `${k} ${n}`).join(', ')}), ` +
        `${report.lost.length} lost, ${report.inFlightAtKill} in flight at the kill (${report.inFlightApplied} had taken effect), ` +
        `${report.tokensChecked} pre-crash tokens checked (${report.tokens410} answered 410), restart median ${Math.round(restart[restart.length >> 1]!)} ms, ` +
        `max ${Math.round(restart.at(-1)!)} ms`,
    );
    const short = (lines: string[]) => lines.map((l) => (l.length > 400 ? `${l.slice(0, 400)}…` : l));
    expect(short(report.problems)).toEqual([]);
    expect(short(report.lost)).toEqual([]);
    expect(report.cycles).toBe(CYCLES);
    // Writes really were in flight when the kills landed, and every kind was acknowledged many times.
    expect(report.inFlightAtKill).toBeGreaterThanOrEqual(CYCLES);
    for (const n of Object.values(report.acked)) expect(n).toBeGreaterThan(0);
    expect(report.ackedTotal).toBeGreaterThanOrEqual(DEEP ? 5000 : CYCLES * 10);
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}, DEEP ? 1_800_000 : 180_000);

describe('synchronous=FULL', () => {
  test('every connection of an app built by createApp reads FULL after writes', async () => {
    const ctx = await buildTestApp();
    try {
      await ctx.users.addUser({ username: 'alice', password: ALICE.password, role: 'user' });
      const pragmas = await ctx.store.connectionPragmas();
      expect(pragmas.length).toBeGreaterThan(0);
      for (const p of pragmas) expect(p).toMatchObject({ journalMode: 'wal', synchronous: 2 });
    } finally {
      await ctx.close();
    }
  });

  test('the running server holds one connection to the file, and each acknowledged write is fsynced', async () => {
    const dataDir = tempDir('pigeon-fsync-');
    const seed = await seedCrashStore(dataDir, 1, 0, 1);
    const server = await startServer({ PIGEON_DATA_DIR: dataDir, ...UNLIMITED_ENV });
    const client = new Client(server.port, server.cert);
    try {
      // Connections = descriptors open on the database file itself (the -wal and -shm files are per connection too).
      const db = path.join(dataDir, 'pigeon.db');
      const open = fs.readdirSync(`/proc/${server.proc.pid}/fd`).filter((fd) => {
        try {
          return fs.readlinkSync(`/proc/${server.proc.pid}/fd/${fd}`) === db;
        } catch {
          return false;
        }
      });
      // The store reports the pragmas of its connections (one, tested above and in tests/store); the process must
      // not have opened another behind its back.
      expect(open).toHaveLength(1);

      const form = new URLSearchParams({ grant_type: 'password', client_id: 'pigeon-app', username: ALICE.username, password: ALICE.password, device_id: 'fsync-device-000001' });
      const token = await client.request('POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, form.toString());
      const h = { authorization: `Bearer ${token.body.access_token}`, 'x-device-id': 'fsync-device-000001' };
      expect((await client.request('POST', '/v1/devices', h, {})).status).toBe(201);
      const item = seed.owned[0]!.items[0]!;

      const strace = spawnSync('strace', ['-V']).error === undefined;
      if (!strace) return void console.warn('strace not installed: the fsync count is skipped (apt-get install strace)');
      const out = path.join(dataDir, 'strace.out');
      const tracer = spawn('strace', ['-f', '-e', 'trace=fsync,fdatasync', '-o', out, '-p', String(server.proc.pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
      await new Promise<void>((resolve) => tracer.stderr!.on('data', (c: Buffer) => c.toString().includes('attached') && resolve()));
      await new Promise((r) => setTimeout(r, 200)); // strace names every thread before it traces them all
      const N = 40;
      for (let i = 0; i < N; i++) expect((await client.request('PATCH', `/v1/items/${item}`, h, { isFlagged: i % 2 === 0 })).status).toBe(200);
      tracer.kill('SIGINT');
      await new Promise((r) => tracer.once('exit', r));
      const calls = fs.readFileSync(out, 'utf8').split('\n').filter((l) => /\b(fsync|fdatasync)\(/.test(l)).length;
      console.log(`fsync: ${calls} fsync/fdatasync calls for ${N} acknowledged PATCHes`);
      // synchronous=NORMAL would sync only at checkpoints (a handful); FULL syncs the WAL at every commit.
      expect(calls).toBeGreaterThanOrEqual(N);
    } finally {
      client.close();
      await server.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 60_000);
});
