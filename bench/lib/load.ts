/**
 * Load generation with autocannon (the field's Node load generator), run in the runner's process against either
 * Pigeon or the ceiling. Per-request latencies come from autocannon's own `response` events, which carry the
 * hrtime duration in fractional milliseconds (its summary histogram rounds to whole milliseconds, too coarse for a
 * 1 ms poll).
 *
 * A figure is measured as: a warm-up run on each side, then rounds that alternate Pigeon and ceiling, so a burst
 * of activity from something else on the machine lands on both sides rather than on one.
 */
import autocannon from 'autocannon';
import type { Target } from './http';
import { cpuMs } from './pigeon';
import { pgDelta } from './postgres';
import { latencySummary, median, roundSummary, type Summary } from './stats';

export type LoadRequest = autocannon.Request;

export interface RunOptions {
  connections: number;
  seconds: number;
}

export interface RunResult {
  latencies: number[];
  /** 2xx responses per second over the run. */
  rps: number;
  ok: number;
  failed: number;
  /** Status codes that were not 2xx, with counts (a figure built on errors is refused). */
  statuses: Record<string, number>;
  /** The server's CPU milliseconds per 2xx response during the run (when its pid is known). */
  cpuMsPerOp?: number;
  /** The CPU milliseconds of the database's PostgreSQL backends per 2xx response (when there is a database). */
  dbCpuMsPerOp?: number;
}

export async function run(target: Target, requests: LoadRequest[], opts: RunOptions): Promise<RunResult> {
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  const options = {
    url: `https://127.0.0.1:${target.port}`,
    connections: opts.connections,
    duration: opts.seconds,
    requests,
    servername: 'localhost',
    tlsOptions: { ca: target.cert },
  } as autocannon.Options;
  const cpu0 = target.pid ? cpuMs(target.pid) : 0;
  const db0 = await target.pg?.read();
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(options, (err, r) => (err ? reject(err) : resolve(r)));
    instance.on('response', (_client, status, _bytes, ms) => {
      if (status >= 200 && status < 300) latencies.push(ms);
      else statuses[status] = (statuses[status] ?? 0) + 1;
    });
  });
  const cpuMsPerOp = target.pid && result['2xx'] ? (cpuMs(target.pid) - cpu0) / result['2xx'] : undefined;
  const dbCpuMsPerOp = db0 && result['2xx'] ? pgDelta(db0, await target.pg!.read()).backendCpuMs / result['2xx'] : undefined;
  const failed = result.non2xx + result.errors + result.timeouts;
  return { latencies, rps: result['2xx'] / result.duration, ok: result['2xx'], failed, statuses, cpuMsPerOp, dbCpuMsPerOp };
}

export interface Plan {
  rounds: number;
  warmupSeconds: number;
  seconds: number;
  connections: number;
}

export interface Side {
  /** For error messages. */
  name: string;
  target: Target;
  requests: LoadRequest[];
}

function check(side: string, r: RunResult): void {
  if (r.ok === 0 || r.failed > r.ok / 100) {
    throw new Error(`${side}: ${r.ok} ok, ${r.failed} failed (${JSON.stringify(r.statuses)}): a figure built on errors would mean nothing`);
  }
}

/**
 * Measures several sides in rounds that visit each side in turn (Pigeon, its ceiling, another Pigeon, ...), each
 * side's warm-up first, so figures that are compared with each other are measured over the same minutes.
 * `kind` picks what a round's figure is: latencies of one connection, or requests per second of several.
 */
export async function sideBySide(sides: Side[], plan: Plan, kind: 'latency' | 'throughput'): Promise<Summary[]> {
  const opts = { connections: plan.connections, seconds: plan.seconds };
  if (plan.warmupSeconds > 0) for (const s of sides) await run(s.target, s.requests, { ...opts, seconds: plan.warmupSeconds });
  const results: RunResult[][] = sides.map(() => []);
  for (let i = 0; i < plan.rounds; i++) {
    for (const [k, s] of sides.entries()) {
      const r = await run(s.target, s.requests, opts);
      check(s.name, r);
      results[k]!.push(r);
    }
  }
  const cpu = (rs: RunResult[]) => {
    const known = rs.map((r) => r.cpuMsPerOp).filter((x): x is number => x !== undefined);
    const db = rs.map((r) => r.dbCpuMsPerOp).filter((x): x is number => x !== undefined);
    return { ...(known.length ? { cpuMsPerOp: median(known) } : {}), ...(db.length ? { dbCpuMsPerOp: median(db) } : {}) };
  };
  return results.map((rs) =>
    kind === 'latency'
      ? { ...latencySummary(rs.map((r) => r.latencies)), ...cpu(rs) }
      : // Requests per second, with the latency the connections saw meanwhile.
        { ...roundSummary(rs.map((r) => r.rps)), ...cpu(rs), latency: latencySummary(rs.map((r) => r.latencies)) },
  );
}
