/**
 * `--baseline <checkout>`: another checkout of Pigeon (an older commit in a git worktree, say) measured side by side
 * with this one — same mailbox copies, same ceiling, rounds visiting both in turn — so a change is measured within
 * the same minutes instead of across two runs on a machine whose load moves. The request paths of scenarios 1, 2,
 * 4 and 5 that a change to the request path shows in.
 */
import fs from 'node:fs';
import { startCeiling } from '../lib/ceiling';
import { signIn, syncPath, syncToEnd, type SignedIn } from '../lib/client';
import { httpFigures, type BenchContext, type Figure } from '../lib/figure';
import type { Exchange } from '../lib/http';
import { BENCH_USER, workingCopy } from '../lib/mailbox';
import { startPigeon, type Pigeon } from '../lib/pigeon';

interface Side {
  name: 'baseline' | 'this checkout';
  pigeon: Pigeon;
  app: SignedIn;
  token: string;
}

export async function baselineFigures(ctx: Omit<BenchContext, 'ceiling'>, mailboxFile: string, baselineRoot: string): Promise<Figure[]> {
  const dirs = [workingCopy(mailboxFile), workingCopy(mailboxFile)];
  const pigeons: Pigeon[] = [];
  try {
    pigeons.push(await startPigeon(dirs[0]!, { root: baselineRoot }), await startPigeon(dirs[1]!));
    const ceiling = await startCeiling(pigeons[1]!);
    try {
      const c: BenchContext = { ...ctx, ceiling };
      const sides: Side[] = [];
      for (const [i, name] of (['baseline', 'this checkout'] as const).entries()) {
        const pigeon = pigeons[i]!;
        const app = await signIn(pigeon, BENCH_USER, 'bench-app-device-00001');
        sides.push({ name, pigeon, app, token: (await syncToEnd(pigeon, app)).token });
      }
      const both = (scenario: number, id: string, label: string, x: (s: Side) => Exchange) =>
        sides.map((s) => ({ pigeon: s.pigeon, x: x(s), def: { id: s.name === 'baseline' ? `${id}.baseline` : id, scenario, label: `${label} — ${s.name}` } }));
      const poll = (s: Side): Exchange => ({ method: 'GET', path: syncPath(s.app, { token: s.token }), headers: s.app.headers });
      const session = (s: Side): Exchange => ({ method: 'GET', path: '/v1/session', headers: s.app.headers });
      const initial = (gzip: boolean) => (s: Side): Exchange => ({ method: 'GET', path: syncPath(s.app, { maxChanges: 512 }), headers: { ...s.app.headers, ...(gzip ? { 'accept-encoding': 'gzip' } : {}) } });
      const more = (s: Side): Exchange => ({ method: 'GET', path: syncPath(s.app, { token: s.token, loadMore: true, maxChanges: 512 }), headers: s.app.headers });
      return [
        ...(await httpFigures(c, 'latency', both(1, 'poll.latency.10K', 'no-change poll, latency', poll))),
        ...(await httpFigures(c, 'throughput', both(1, 'poll.throughput.10K', 'no-change poll, 16 connections', poll))),
        ...(await httpFigures(c, 'latency', both(2, 'initial.gzip', 'initial 500-item window, gzip on', initial(true)))),
        ...(await httpFigures(c, 'latency', both(2, 'initial.identity', 'initial 500-item window, gzip off', initial(false)))),
        ...(await httpFigures(c, 'latency', both(4, 'window.loadMore', 'load more, 500 → 1000', more))),
        ...(await httpFigures(c, 'latency', both(5, 'auth.session.latency', 'GET /v1/session, latency', session))),
        ...(await httpFigures(c, 'throughput', both(5, 'auth.session.throughput', 'GET /v1/session, 16 connections', session))),
      ];
    } finally {
      await ceiling.stop();
    }
  } finally {
    for (const p of pigeons) await p.stop();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  }
}
