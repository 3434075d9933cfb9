/** Order statistics over samples (milliseconds, requests per second, ...). */

export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  // Nearest rank: the smallest sample with at least p % of the samples at or below it.
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export const median = (samples: number[]) => percentile(samples, 50);

export interface Summary {
  median: number;
  p95?: number;
  p99?: number;
  /** The figure of each measured round (the spread shows how noisy the machine was). */
  rounds: number[];
  samples?: number;
  /** CPU time the serving process spent per request (or message), median round: what the operator pays. */
  cpuMsPerOp?: number;
  /** CPU time PostgreSQL's backends spent per request, median round (`--store pg`). */
  dbCpuMsPerOp?: number;
  /** For a throughput figure: the latencies seen under that load. */
  latency?: Summary;
}

/** Latency: median and tail over every sample of every round, plus each round's median. */
export function latencySummary(rounds: number[][]): Summary {
  const all = rounds.flat();
  return {
    median: median(all),
    p95: percentile(all, 95),
    p99: percentile(all, 99),
    rounds: rounds.map(median),
    samples: all.length,
  };
}

/** A rate or a size measured once per round: the median round. */
export function roundSummary(values: number[]): Summary {
  return { median: median(values), rounds: values };
}

/** Rounds a figure to three significant digits for display and JSON (more would be noise). */
export function sig3(x: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const d = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(x))));
  return Number(x.toFixed(Math.min(d, 6)));
}
