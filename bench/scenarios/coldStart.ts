/**
 * Scenario 8: cold start to ready on the 1,000,000-item store — process start to the `ready` log line (the HTTPS
 * and LMTP listeners up, the store open and migrated). The ceiling is the bare listener's process reaching
 * `listening` with the same loader (tsx). "Cold" is the process, not the disk: the file is in the page cache, as
 * after any restart of a running machine.
 */
import { startCeiling } from '../lib/ceiling';
import type { BenchContext, Figure } from '../lib/figure';
import { startPigeon, type Pigeon } from '../lib/pigeon';
import { roundSummary } from '../lib/stats';

export async function coldStartFigure(ctx: BenchContext, dataDir: string, size: string): Promise<Figure> {
  const figure: Figure = { id: `coldStart.${size}`, scenario: 8, label: `cold start to ready, ${size} store`, unit: 'ms', better: 'lower' };
  ctx.log(`  ${figure.label} ...`);
  const p: number[] = [];
  const c: number[] = [];
  let tls: Pigeon | undefined;
  for (let i = 0; i <= ctx.latency.rounds; i++) {
    const pigeon = await startPigeon(dataDir);
    await pigeon.stop();
    tls = pigeon;
    const ceiling = await startCeiling(pigeon);
    await ceiling.stop();
    if (i === 0) continue; // warm-up: the first start also creates the keys and warms the page cache
    p.push(pigeon.readyMs);
    c.push(ceiling.readyMs);
  }
  figure.pigeon = roundSummary(p);
  figure.ceiling = roundSummary(c);
  figure.ratio = figure.pigeon.median / figure.ceiling.median;
  figure.notes = { measuredBy: 'performance.now() in the process at ready', pigeonWallMs: Math.round(tls!.wallReadyMs) };
  return figure;
}
