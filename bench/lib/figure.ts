/**
 * A figure: one measured quantity of one scenario, Pigeon's value next to the ceiling's from the same run, and
 * their ratio. Also the shared context every scenario gets, and the common "record Pigeon's answer, let the
 * ceiling replay it, measure both" step.
 */
import type { Ceiling } from './ceiling';
import { expectStatus, type Exchange, type Recorded, type Target } from './http';
import { sideBySide, type LoadRequest, type Plan, type Side } from './load';
import type { Summary } from './stats';

export interface Figure {
  /** Stable key across runs (what --compare matches on). */
  id: string;
  scenario: number;
  label: string;
  unit: 'ms' | 'req/s' | 'msg/s' | 'MiB' | 'ratio';
  better: 'higher' | 'lower';
  pigeon?: Summary;
  ceiling?: Summary;
  /** pigeon / ceiling, of the medians. */
  ratio?: number;
  target?: { text: string; value: number; met: boolean };
  /** Secondary facts: response bytes, how the change was made, ... */
  notes?: Record<string, string | number>;
  /** Why the figure could not be measured in this run. */
  skipped?: string;
}

export interface BenchContext {
  quick: boolean;
  latency: Plan;
  throughput: Plan;
  ceiling: Ceiling;
  log(line: string): void;
  cpuProfDir?: string;
}

export function ratioOf(f: Pick<Figure, 'pigeon' | 'ceiling'>): number | undefined {
  return f.pigeon && f.ceiling && f.ceiling.median > 0 ? f.pigeon.median / f.ceiling.median : undefined;
}

export const asLoadRequest = (x: Exchange): LoadRequest => ({ method: x.method as LoadRequest['method'], path: x.path, headers: x.headers, body: x.body });

export type FigureDef = Pick<Figure, 'id' | 'scenario' | 'label'> & {
  status?: number;
  check?: (r: Recorded) => void;
  notes?: (r: Recorded) => Figure['notes'];
  /** What the load generator sends to Pigeon, when not `x` itself (the ceiling always gets `x`). */
  requests?: LoadRequest[];
};

/**
 * Sends each `x` to its Pigeon once (it must answer `status`), teaches the ceiling that answer, then measures every
 * Pigeon and the ceiling side by side (see sideBySide): one figure per item.
 */
export async function httpFigures(ctx: BenchContext, kind: 'latency' | 'throughput', items: Array<{ pigeon: Target; x: Exchange; def: FigureDef }>): Promise<Figure[]> {
  const recorded: Recorded[] = [];
  for (const { pigeon, x, def } of items) {
    const r = await expectStatus(pigeon, x, def.status ?? 200);
    def.check?.(r);
    await ctx.ceiling.replay(x, r);
    recorded.push(r);
  }
  ctx.log(`  ${items.map((i) => i.def.label).join(' | ')} ...`);
  const sides: Side[] = items.flatMap(({ pigeon, x, def }) => [
    { name: `pigeon: ${def.label}`, target: pigeon, requests: def.requests ?? [asLoadRequest(x)] },
    { name: `ceiling: ${def.label}`, target: ctx.ceiling, requests: [asLoadRequest(x)] },
  ]);
  const summaries = await sideBySide(sides, kind === 'latency' ? ctx.latency : ctx.throughput, kind);
  return items.map(({ def }, i) => {
    const figure: Figure = {
      id: def.id,
      scenario: def.scenario,
      label: def.label,
      unit: kind === 'latency' ? 'ms' : 'req/s',
      better: kind === 'latency' ? 'lower' : 'higher',
      pigeon: summaries[2 * i],
      ceiling: summaries[2 * i + 1],
      notes: { responseBytes: recorded[i]!.body.length, ...def.notes?.(recorded[i]!) },
    };
    figure.ratio = ratioOf(figure);
    return figure;
  });
}

export async function httpFigure(ctx: BenchContext, pigeon: Target, x: Exchange, def: FigureDef & { kind: 'latency' | 'throughput' }): Promise<Figure> {
  return (await httpFigures(ctx, def.kind, [{ pigeon, x, def }]))[0]!;
}
