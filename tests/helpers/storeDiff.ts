/**
 * "Nothing changed" as a check on the SQLite file itself, not on what the API chooses to report: a snapshot is a
 * fingerprint of every row of every table (mailboxes' highest_modseq, items, folders, devices, tokens, audit,
 * idempotency, blobs, the search index's own tables...), and a diff names the rows that were added, removed or
 * changed between two snapshots.
 *
 * The fingerprint is built by SQLite (`quote()` of every column, concatenated per table), so a snapshot of a test
 * store costs a few milliseconds and can be taken around every request of a property.
 *
 * Ignored on purpose: the devices' last-seen times. They are buffered in memory and written by a timer (and by an
 * admin's device lookup), not by the request that saw the device, so they may move between two snapshots without
 * any request having changed anything.
 */
import crypto from 'node:crypto';
import type { Statement } from 'better-sqlite3';
import type { Db } from '../../server/store/sqlite/db';

/** Columns left out of every fingerprint, per table. */
export const IGNORED_COLUMNS: Record<string, string[]> = {
  devices: ['last_sync_attempt_time', 'last_success_sync_time'],
};

export interface Snapshot {
  /** table → hash of all its rows (in rowid order) */
  tables: Map<string, string>;
  /** table → row key → the row's quoted text; filled only when taken with `rows: true` */
  rows?: Map<string, Map<string, string>>;
}

export interface TableDiff {
  table: string;
  added: string[];
  removed: string[];
  changed: string[];
}

interface TableShape {
  name: string;
  /** All rows as `key:row` lines in one text (key: rowid or primary key; row: every kept column, quoted). */
  fingerprint: Statement;
  /** The same, one result row per table row. */
  rows: Statement;
}

const shapes = new WeakMap<Db, TableShape[]>();

const ident = (name: string) => `"${name.replace(/"/g, '""')}"`;

/** Every real table (virtual tables are covered by their shadow tables) with how to render its rows. */
function tablesOf(db: Db): TableShape[] {
  let known = shapes.get(db);
  if (known) return known;
  const tables = db
    .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    .all() as Array<{ name: string; sql: string | null }>;
  known = tables
    .filter((t) => !/^CREATE VIRTUAL TABLE/i.test(t.sql ?? ''))
    .map((t) => {
      const columns = db.prepare(`SELECT name, pk FROM pragma_table_info(?)`).all(t.name) as Array<{ name: string; pk: number }>;
      const kept = columns.filter((c) => !(IGNORED_COLUMNS[t.name] ?? []).includes(c.name));
      const withoutRowid = /WITHOUT\s+ROWID/i.test(t.sql ?? '');
      const pk = columns.filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk);
      const row = kept.map((c) => `quote(${ident(c.name)})`).join(` || ',' || `) || `''`;
      const key = withoutRowid ? pk.map((c) => `quote(${ident(c.name)})`).join(` || ',' || `) : 'rowid';
      const rows = `SELECT ${key} AS k, ${row} AS r FROM ${ident(t.name)} ORDER BY 1`;
      return {
        name: t.name,
        fingerprint: db.prepare(`SELECT group_concat(k || ':' || r, char(10)) AS text FROM (${rows})`),
        rows: db.prepare(rows),
      };
    });
  shapes.set(db, known);
  return known;
}

/** A fingerprint of the whole store; with `rows`, also every row's text (for a diff that names rows). */
export function snapshot(db: Db, options: { rows?: boolean } = {}): Snapshot {
  const tables = new Map<string, string>();
  const rows = options.rows ? new Map<string, Map<string, string>>() : undefined;
  for (const t of tablesOf(db)) {
    if (rows) {
      const all = t.rows.all() as Array<{ k: unknown; r: string }>;
      rows.set(t.name, new Map(all.map((x) => [String(x.k), x.r])));
      tables.set(t.name, hash(all.map((x) => `${String(x.k)}:${x.r}`).join('\n')));
    } else {
      const { text } = t.fingerprint.get() as { text: string | null };
      tables.set(t.name, hash(text ?? ''));
    }
  }
  return { tables, rows };
}

function hash(text: string): string {
  return crypto.createHash('sha1').update(text).digest('hex');
}

/** The tables whose fingerprints differ (cheap: works on snapshots taken without rows). */
export function changedTables(before: Snapshot, after: Snapshot): string[] {
  const names = new Set([...before.tables.keys(), ...after.tables.keys()]);
  return [...names].filter((n) => before.tables.get(n) !== after.tables.get(n)).sort();
}

/** Row by row, what differs (both snapshots must have been taken with `rows: true`). */
export function diffRows(before: Snapshot, after: Snapshot): TableDiff[] {
  if (!before.rows || !after.rows) throw new Error('diffRows needs snapshots taken with { rows: true }');
  const out: TableDiff[] = [];
  for (const table of changedTables(before, after)) {
    const a = before.rows.get(table) ?? new Map<string, string>();
    const b = after.rows.get(table) ?? new Map<string, string>();
    const d: TableDiff = {
      table,
      added: [...b.keys()].filter((k) => !a.has(k)).map((k) => b.get(k)!),
      removed: [...a.keys()].filter((k) => !b.has(k)).map((k) => a.get(k)!),
      changed: [...b.keys()].filter((k) => a.has(k) && a.get(k) !== b.get(k)).map((k) => b.get(k)!),
    };
    if (d.added.length + d.removed.length + d.changed.length) out.push(d);
  }
  return out;
}

/** A one-line account of a diff, for assertion messages. */
export function describeDiff(diff: TableDiff[]): string {
  return diff.map((d) => `${d.table}: +${d.added.length} -${d.removed.length} ~${d.changed.length}`).join('; ') || 'no change';
}

