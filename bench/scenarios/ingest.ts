/**
 * Scenario 6: LMTP ingest rate — 10 KB messages over 4 LMTP connections (nodemailer's LMTP transport, pooled), each
 * message parsed, stored and committed with synchronous=FULL (PostgreSQL: synchronous_commit=on) before its 250.
 * The ceiling is the same smtp-server library reading each message and dropping it: the protocol's own cost on this
 * machine.
 */
import crypto from 'node:crypto';
import { performance } from 'node:perf_hooks';
import nodemailer from 'nodemailer';
import type { BenchContext, Figure } from '../lib/figure';
import { cpuMs } from '../lib/pigeon';
import { pgDelta, type PgMeter } from '../lib/postgres';
import { median, roundSummary } from '../lib/stats';

const MESSAGE_BYTES = 10 * 1024;
const CONNECTIONS = 4;

/** A plain 10 KB message with its own Message-ID (so none is dropped as a duplicate). */
export function message(to: string, n: number): Buffer {
  const head = [
    'From: Bench Sender <sender@example.org>',
    `To: <${to}>`,
    `Subject: ingest ${n}`,
    `Date: ${new Date().toUTCString()}`,
    `Message-ID: <ingest-${n}-${crypto.randomUUID()}@bench.example>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    '',
    '',
  ].join('\r\n');
  const line = 'The quick brown fox jumps over the lazy dog, and the benchmark counts every message.\r\n';
  return Buffer.from(head + line.repeat(Math.ceil((MESSAGE_BYTES - head.length) / line.length))).subarray(0, MESSAGE_BYTES);
}

/** Delivers messages over a pool of `CONNECTIONS` for `seconds`, keeping every connection busy; messages/s. */
export async function ingest(
  port: number,
  to: string,
  seconds: number,
  counter = { n: 0 },
  pid?: number,
  pg?: PgMeter,
): Promise<{ rate: number; failed: number; cpuMsPerOp?: number; dbCpuMsPerOp?: number }> {
  const cpu0 = pid ? cpuMs(pid) : 0;
  const db0 = await pg?.read();
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port, lmtp: true, pool: true, maxConnections: CONNECTIONS, maxMessages: Infinity, ignoreTLS: true, secure: false });
  const end = performance.now() + seconds * 1000;
  let delivered = 0;
  let failed = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (performance.now() < end) {
      const info = await transport.sendMail({ envelope: { from: 'sender@example.org', to: [to] }, raw: message(to, counter.n++) }).catch(() => undefined);
      if (info && info.accepted.length === 1) delivered++;
      else failed++;
    }
  };
  // Two messages queued per connection, so a connection never waits on the runner between transactions.
  await Promise.all(Array.from({ length: CONNECTIONS * 2 }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  transport.close();
  const dbCpuMsPerOp = db0 && delivered ? pgDelta(db0, await pg!.read()).backendCpuMs / delivered : undefined;
  return { rate: delivered / elapsed, failed, cpuMsPerOp: pid && delivered ? (cpuMs(pid) - cpu0) / delivered : undefined, dbCpuMsPerOp };
}

type IngestServer = { lmtpPort?: number; pid?: number; pg?: PgMeter };

export async function ingestFigure(ctx: BenchContext, server: IngestServer, to: string): Promise<Figure> {
  return (await ingestFigures(ctx, [{ server, id: 'ingest.lmtp', label: 'LMTP ingest, 10 KB messages, 4 connections' }], to))[0]!;
}

/**
 * One figure per server, measured side by side: each round visits every server and the ceiling after each, so the
 * servers' figures (`--store both`) come from the same minutes.
 */
export async function ingestFigures(ctx: BenchContext, servers: Array<{ server: IngestServer; id: string; label: string }>, to: string): Promise<Figure[]> {
  const figures = servers.map(({ id, label }): Figure => ({ id, scenario: 6, label, unit: 'msg/s', better: 'higher' }));
  const live = servers.map((s, i) => ({ ...s.server, figure: figures[i]! })).filter((s) => s.lmtpPort);
  for (const f of figures) if (!live.some((s) => s.figure === f)) f.skipped = 'not available: the server logged no LMTP port';
  if (!live.length) return figures;
  ctx.log(`  ${live.map((s) => s.figure.label).join(' | ')} ...`);
  const seconds = ctx.quick ? 3 : 5;
  const counter = { n: 0 };
  for (const s of live) await ingest(s.lmtpPort!, to, 1, counter); // warm-up
  await ingest(ctx.ceiling.lmtpPort, to, 1, counter);
  type Round = Awaited<ReturnType<typeof ingest>>;
  const p: Round[][] = live.map(() => []);
  const c: Round[][] = live.map(() => []);
  for (let i = 0; i < ctx.latency.rounds; i++) {
    for (const [k, s] of live.entries()) {
      p[k]!.push(await ingest(s.lmtpPort!, to, seconds, counter, s.pid, s.pg));
      c[k]!.push(await ingest(ctx.ceiling.lmtpPort, to, seconds, counter, ctx.ceiling.pid));
    }
  }
  const failed = [...p, ...c].flat().reduce((a, r) => a + r.failed, 0);
  if (failed > 0) throw new Error(`LMTP ingest: ${failed} messages were not accepted`);
  const summary = (rs: Round[], pg?: PgMeter) => ({
    ...roundSummary(rs.map((r) => r.rate)),
    cpuMsPerOp: median(rs.map((r) => r.cpuMsPerOp ?? NaN)),
    ...(pg ? { dbCpuMsPerOp: median(rs.map((r) => r.dbCpuMsPerOp ?? NaN)) } : {}),
  });
  for (const [k, s] of live.entries()) {
    const figure = s.figure;
    figure.pigeon = summary(p[k]!, s.pg);
    figure.ceiling = summary(c[k]!);
    figure.ratio = figure.pigeon.median / figure.ceiling.median;
    figure.notes = { messageBytes: MESSAGE_BYTES, connections: CONNECTIONS, messagesSent: counter.n };
  }
  return figures;
}
