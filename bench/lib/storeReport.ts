/**
 * The tables of `--store`: the figures of every backend side by side (one row per figure, a column per backend),
 * and where PostgreSQL's share of each kind of request goes (scenarios/pgCost.ts). Markdown, which reads as well in a
 * terminal as in BENCHMARKS.md.
 */
import type { PgCost } from '../scenarios/pgCost';
import type { Figure } from './figure';
import { sig3, type Summary } from './stats';

const fmt = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '–' : sig3(x).toLocaleString('en'));

function value(s: Summary | undefined, unit: string): string {
  if (!s) return '–';
  let text = `${fmt(s.median)} ${unit}`;
  if (s.p99 !== undefined) text += ` (p95 ${fmt(s.p95)}, p99 ${fmt(s.p99)})`;
  if (s.latency) text += ` (p99 ${fmt(s.latency.p99)} ms)`;
  return text;
}

const row = (cells: string[]) => `| ${cells.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`;
const head = (cells: string[]) => [row(cells), `|${cells.map(() => '---').join('|')}|`];

/** One row per figure; `stores` in column order (`sqlite`, `pg`), the ratio of the last to the first when both ran. */
export function sideBySideTable(figures: Figure[], stores: Array<{ key: string; name: string }>): string {
  const base = (f: Figure) => f.id.replace(new RegExp(`\\.(${stores.map((s) => s.key).join('|')})$`), '');
  const groups = new Map<string, Map<string, Figure>>();
  for (const f of figures) {
    const store = stores.find((s) => f.id.endsWith(`.${s.key}`));
    if (!store) continue;
    const g = groups.get(base(f)) ?? new Map<string, Figure>();
    g.set(store.key, f);
    groups.set(base(f), g);
  }
  const both = stores.length > 1;
  const cols = [
    'figure',
    ...stores.map((s) => s.name),
    ...(both ? [`${stores.at(-1)!.name} ÷ ${stores[0]!.name}`] : []),
    'ceiling',
    ...stores.map((s) => `Pigeon CPU/op, ${s.name}`),
    'PostgreSQL backends CPU/op',
  ];
  const lines = head(cols);
  for (const g of groups.values()) {
    const any = [...g.values()][0]!;
    const label = any.label.replace(/ — [^—]+$/, '');
    const bytes = any.notes?.responseBytes;
    const first = g.get(stores[0]!.key)?.pigeon?.median;
    const last = g.get(stores.at(-1)!.key)?.pigeon?.median;
    const ceiling = [...g.values()].find((f) => f.ceiling)?.ceiling;
    const pg = g.get('pg')?.pigeon?.dbCpuMsPerOp;
    lines.push(
      row([
        typeof bytes === 'number' ? `${label} (${bytes.toLocaleString('en')} B)` : label,
        ...stores.map((s) => (g.get(s.key)?.skipped ? `skipped — ${g.get(s.key)!.skipped}` : value(g.get(s.key)?.pigeon, any.unit))),
        ...(both ? [first && last ? `${fmt(last / first)}×` : '–'] : []),
        ceiling ? `${fmt(ceiling.median)} ${any.unit}` : '–',
        ...stores.map((s) => (g.get(s.key)?.pigeon?.cpuMsPerOp === undefined ? '–' : `${fmt(g.get(s.key)!.pigeon!.cpuMsPerOp)} ms`)),
        pg === undefined ? '–' : `${fmt(pg)} ms`,
      ]),
    );
  }
  return lines.join('\n');
}

/** Per request: statements and round trips, time waiting on them, commits and WAL flushes, CPU on both sides. */
export function costTable(cost: PgCost): string {
  const hop = Math.max(0, cost.roundTripMs.proxied - cost.roundTripMs.direct);
  const k = (c: PgCost['costs'][number], ...kinds: string[]) => kinds.reduce((a, kind) => a + (c.byKind[kind as keyof typeof c.byKind]?.count ?? 0), 0);
  const lines = head([
    'request',
    'round trips',
    'BEGIN / COMMIT',
    'mailbox locks',
    'reads',
    'writes',
    'NOTIFY',
    'other',
    'in PostgreSQL, ms (less the proxy hop)',
    'client saw, ms',
    'transactions',
    'WAL fsyncs',
    'WAL bytes',
    'Pigeon CPU, ms',
    'backends CPU, ms',
  ]);
  for (const c of [cost.idle, ...cost.costs]) {
    lines.push(
      row([
        c.label,
        fmt(c.roundTrips),
        `${fmt(k(c, 'BEGIN'))} / ${fmt(k(c, 'COMMIT'))}`,
        fmt(k(c, 'mailbox lock')),
        fmt(k(c, 'SELECT')),
        fmt(k(c, 'INSERT', 'UPDATE', 'DELETE')),
        fmt(k(c, 'NOTIFY')),
        fmt(k(c, 'other', 'ROLLBACK')),
        `${fmt(c.pgMs)} (${fmt(Math.max(0, c.pgMs - c.roundTrips * hop))})`,
        fmt(c.clientMs),
        fmt(c.commits),
        fmt(c.walSyncs),
        fmt(c.walBytes),
        fmt(c.nodeCpuMs),
        fmt(c.pgCpuMs),
      ]),
    );
  }
  const other = [cost.idle, ...cost.costs].filter((c) => c.otherCommits > 0);
  const notes = [
    '',
    `Per request, means over ${cost.costs.map((c) => `${c.requests} ${c.label}`).join(', ')}; one Pigeon process. A round trip on one connection ` +
      `(\`SELECT $1\`) takes ${fmt(cost.roundTripMs.direct)} ms direct and ${fmt(cost.roundTripMs.proxied)} ms through the counting proxy, whose hop ` +
      `is taken out in brackets; a NOTIFY reaches another connection's LISTEN in ${fmt(cost.notifyMs)} ms (the commit feed's hop between nodes). ` +
      'Transactions (read-only ones and single statements included) from pg_stat_database, WAL from pg_stat_wal ' +
      '(server-wide). The first row is what the server does unasked in that time (its timers), for scale.',
  ];
  if (other.length) {
    notes.push(
      `Transactions in the server's other databases meanwhile (the meter's own reads are some of them): ${other.map((c) => `${c.otherCommits} during ${c.label}`).join(', ')}; ` +
        'WAL written for others is in the WAL columns.',
    );
  }
  return [...lines, ...notes].join('\n');
}

/** The statements of each kind of request, most time first. */
export function statementDetail(cost: PgCost, top = 8): string {
  const out: string[] = [];
  for (const c of cost.costs) {
    out.push(`${c.label} (statements per request × ms each, most time first):`);
    for (const s of c.statements.slice(0, top)) out.push(`  ${fmt(s.count).padStart(5)} × ${fmt(s.ms / Math.max(s.count, 1e-9)).padStart(6)} ms  ${s.text.slice(0, 110)}`);
  }
  return out.join('\n');
}
