/**
 * The directory (GAL, issue 18): people of a tenant with what an administrator says of them (title, department,
 * office, phones, manager, hidden), people search ranked by whom the caller writes to, and the org chart.
 *
 * Rules kept here, for the API (server/directory/routes.ts) and the CLI (server/cli/directory.ts) alike:
 * - everything is confined to one tenant: another tenant's user is not found, and cannot be a manager;
 * - the manager relation never forms a cycle: a change is written and the new chain read back in one unit of work,
 *   and a chain that comes back to the user rolls the change back (the store orders a tenant's manager changes, so
 *   two changes cannot each pass alone and make a cycle together);
 * - an import is one unit of work: every problem of the file is reported by line, and nothing is changed unless the
 *   whole file is good;
 * - a hidden user is left out of search, of other people's org charts, and `person` answers not found.
 * Changes are audited in the same transaction (`directory.update`, `directory.import`).
 */
import type { Clock } from '../clock';
import type { Actor } from '../devices/service';
import type { DirectoryEntry, DirectoryPerson, EmailAddress, PeopleMatch, Step, Store, TxStore, User } from '../store/types';

/** No such user in the caller's tenant (or one hidden from the directory). */
export class DirectoryNotFound extends Error {
  override name = 'DirectoryNotFound';
}

export interface DirectoryProblem {
  /** What is wrong: a field (`managerId`) or a line of an import (`line 3`). */
  field: string;
  message: string;
}

/** A change the directory refuses (a bad value, a manager of another tenant, a cycle, a bad import line). */
export class DirectoryRefused extends Error {
  override name = 'DirectoryRefused';
  constructor(
    message: string,
    readonly problems: DirectoryProblem[],
  ) {
    super(message);
  }
}

/** The free-text facts of an entry, in the import's column order. */
export const DIRECTORY_FIELDS = ['title', 'department', 'office', 'phone', 'mobile'] as const;
export type DirectoryField = (typeof DIRECTORY_FIELDS)[number];
export const MAX_FIELD_LENGTH = 128;
export const DEFAULT_SEARCH_LIMIT = 10;
export const MAX_SEARCH_LIMIT = 50;
/** An import reports at most this many problems (the first ones, by line). */
const MAX_PROBLEMS = 50;
/** Addresses counted per message sent (a message to a huge list says little about whom one writes to). */
const MAX_COUNTED_RECIPIENTS = 100;

/** A change of an entry: each field given replaces the stored one (null or '' clears it); the others stay. */
export type EntryChange = Partial<Record<DirectoryField, string | null>> & {
  managerId?: string | null;
  hiddenFromDirectory?: boolean;
};

/** A person as apps see them. */
export interface PersonView {
  id: string;
  displayName: string;
  email: string;
  title: string | null;
  department: string | null;
  office: string | null;
  phone: string | null;
  mobile: string | null;
  managerId: string | null;
}

/** One people-search result: a user of the tenant (`id`) or an address outside it the caller wrote to (`external`). */
export interface PeopleResultView extends Omit<PersonView, 'id' | 'managerId'> {
  id: string | null;
  isFrequent: boolean;
  external: boolean;
}

export interface OrganizationView {
  person: PersonView;
  /** The person's manager, their manager, … up to the top. */
  managers: PersonView[];
  directReports: PersonView[];
  /** The other direct reports of the person's manager (none when the person has no manager). */
  colleagues: PersonView[];
}

/** An entry as administrators see it. */
export interface EntryView {
  userId: string;
  title: string | null;
  department: string | null;
  office: string | null;
  phone: string | null;
  mobile: string | null;
  managerId: string | null;
  hiddenFromDirectory: boolean;
  /** Null when nothing was ever set. */
  updatedAt: string | null;
}

const blankEntry = (tenantId: string, userId: string): DirectoryEntry => ({
  tenantId,
  userId,
  title: null,
  department: null,
  office: null,
  phone: null,
  mobile: null,
  managerId: null,
  hiddenFromDirectory: false,
  updatedAt: 0,
});

export const personView = (p: DirectoryPerson): PersonView => ({
  id: p.user.id,
  displayName: p.user.displayName,
  email: p.user.email,
  title: p.entry?.title ?? null,
  department: p.entry?.department ?? null,
  office: p.entry?.office ?? null,
  phone: p.entry?.phone ?? null,
  mobile: p.entry?.mobile ?? null,
  managerId: p.entry?.managerId ?? null,
});

export function resultView(m: PeopleMatch): PeopleResultView {
  if (m.kind === 'external') {
    const { address, name } = m.contact;
    return { id: null, displayName: name ?? address, email: address, title: null, department: null, office: null, phone: null, mobile: null, isFrequent: true, external: true };
  }
  const { managerId: _managerId, ...person } = personView(m.person);
  return { ...person, isFrequent: m.frequent !== null, external: false };
}

export const entryView = (userId: string, e: DirectoryEntry | null): EntryView => ({
  userId,
  title: e?.title ?? null,
  department: e?.department ?? null,
  office: e?.office ?? null,
  phone: e?.phone ?? null,
  mobile: e?.mobile ?? null,
  managerId: e?.managerId ?? null,
  hiddenFromDirectory: e?.hiddenFromDirectory ?? false,
  updatedAt: e && e.updatedAt ? new Date(e.updatedAt).toISOString() : null,
});

const isHidden = (p: DirectoryPerson) => p.entry?.hiddenFromDirectory === true;

/** A free-text fact as stored: trimmed, '' as null; or what is wrong with it. */
export function cleanField(value: string | null | undefined): { value: string | null } | { problem: string } {
  if (value === null || value === undefined) return { value: null };
  const trimmed = value.trim();
  if (/[\u0000-\u001f\u007f]/.test(trimmed)) return { problem: 'must not contain control characters' };
  if (trimmed.length > MAX_FIELD_LENGTH) return { problem: `must be at most ${MAX_FIELD_LENGTH} characters` };
  return { value: trimmed || null };
}

/** The message of a refusal: the first problem, and how many more there are. */
function refusal(problems: DirectoryProblem[]): DirectoryRefused {
  const [first] = problems;
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''})` : '';
  return new DirectoryRefused(`${first!.field}: ${first!.message}${more}`, problems.slice(0, MAX_PROBLEMS));
}

// The import file: RFC 4180 CSV (quoted fields may hold commas, quotes as "" and line breaks).

export interface CsvRecord {
  /** The line the record starts on (1-based). */
  line: number;
  fields: string[];
}

/** The records of a CSV text, blank lines skipped; or the first syntax problem. */
export function parseCsv(text: string): { records: CsvRecord[]; problem?: DirectoryProblem } {
  const records: CsvRecord[] = [];
  const input = text.startsWith('\uFEFF') ? text.slice(1) : text;
  let line = 1;
  let recordLine = 1;
  let fields: string[] = [];
  let field = '';
  let i = 0;
  const endRecord = () => {
    fields.push(field);
    if (!(fields.length === 1 && fields[0] === '')) records.push({ line: recordLine, fields });
    fields = [];
    field = '';
  };
  const newline = () => {
    // \r\n, \n and a lone \r each end one line.
    if (input[i] === '\r' && input[i + 1] === '\n') i++;
    i++;
    line++;
  };
  while (i < input.length) {
    const c = input[i]!;
    if (c === '"' && field === '') {
      const startLine = line;
      i++;
      for (;;) {
        if (i >= input.length) return { records, problem: { field: `line ${startLine}`, message: 'a quoted field is never closed' } };
        const q = input[i]!;
        if (q === '"') {
          if (input[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        if (q === '\r' || q === '\n') {
          field += q === '\r' && input[i + 1] === '\n' ? '\r\n' : q;
          newline();
          continue;
        }
        field += q;
        i++;
      }
      const next = input[i];
      if (next !== undefined && next !== ',' && next !== '\r' && next !== '\n') {
        return { records, problem: { field: `line ${line}`, message: 'a closing quote must end its field' } };
      }
      continue;
    }
    if (c === '"') return { records, problem: { field: `line ${line}`, message: 'a quote inside an unquoted field (quote the whole field and double the quote)' } };
    if (c === ',') {
      fields.push(field);
      field = '';
      i++;
      continue;
    }
    if (c === '\r' || c === '\n') {
      endRecord();
      newline();
      recordLine = line;
      continue;
    }
    field += c;
    i++;
  }
  if (field !== '' || fields.length) endRecord();
  return { records };
}

/** One line of a directory import. */
export interface DirectoryCsvRow {
  line: number;
  username: string;
  fields: Record<DirectoryField, string | null>;
  /** The manager's username; null: no manager. */
  manager: string | null;
}

/** The columns of an import, in order (a first line naming them is a header and is skipped). */
export const CSV_COLUMNS = ['username', ...DIRECTORY_FIELDS, 'manager'] as const;

/** The rows of an import file, or every problem of its lines (syntax, column count, values). */
export function parseDirectoryCsv(text: string): { rows: DirectoryCsvRow[]; problems: DirectoryProblem[] } {
  const { records, problem } = parseCsv(text);
  if (problem) return { rows: [], problems: [problem] };
  const body = records[0]?.fields[0]?.trim().toLowerCase() === 'username' ? records.slice(1) : records;
  const rows: DirectoryCsvRow[] = [];
  const problems: DirectoryProblem[] = [];
  for (const { line, fields } of body) {
    const at = `line ${line}`;
    if (fields.length !== CSV_COLUMNS.length) {
      problems.push({ field: at, message: `expected ${CSV_COLUMNS.length} columns (${CSV_COLUMNS.join(',')}), found ${fields.length}` });
      continue;
    }
    const cleaned: Partial<Record<DirectoryField, string | null>> = {};
    let bad = false;
    for (const [index, name] of DIRECTORY_FIELDS.entries()) {
      const c = cleanField(fields[index + 1]);
      if ('problem' in c) {
        problems.push({ field: at, message: `${name} ${c.problem}` });
        bad = true;
      } else {
        cleaned[name] = c.value;
      }
    }
    const username = fields[0]!.trim();
    if (!username) {
      problems.push({ field: at, message: 'username is empty' });
      continue;
    }
    if (!bad) rows.push({ line, username, fields: cleaned as Record<DirectoryField, string | null>, manager: fields[6]!.trim() || null });
  }
  if (!problems.length && !rows.length) problems.push({ field: 'line 1', message: 'the file has no rows' });
  return { rows, problems };
}

export interface DirectoryServiceDeps {
  store: Store;
  clock: Clock;
}

export function createDirectoryService({ store, clock }: DirectoryServiceDeps) {
  /** Refuses (rolling the unit back) when the user's new manager chain comes back to the user. */
  function* refuseCycle(tx: TxStore, tenantId: string, user: User, field: string): Step<void> {
    const chain = yield* tx.directory.managers(tenantId, user.id);
    if (chain[chain.length - 1]?.user.id !== user.id) return;
    const path = [user, ...chain.map((p) => p.user)].map((u) => u.username).join(' → ');
    throw refusal([{ field, message: `the manager change would make a cycle: ${path}` }]);
  }

  /** The manager named by id, when it is a user of the tenant other than the user. */
  function* managerOf(tx: TxStore, tenantId: string, userId: string, managerId: string): Step<DirectoryProblem | undefined> {
    if (managerId === userId) return { field: 'managerId', message: 'a user cannot be their own manager' };
    const manager = yield* tx.users.byId(managerId);
    if (!manager || manager.tenantId !== tenantId) return { field: 'managerId', message: `no user ${managerId} in this tenant` };
    return undefined;
  }

  function* audit(tx: TxStore, actor: Actor, now: number, action: string, targetType: string, targetId: string | null, details: Record<string, unknown>): Step<void> {
    yield* tx.audit.append({ tenantId: actor.tenantId, at: now, actorId: actor.id, actorName: actor.name, action, targetType, targetId, details });
  }

  async function visiblePerson(tenantId: string, userId: string): Promise<DirectoryPerson> {
    const person = await store.directory.person(tenantId, userId);
    if (!person || isHidden(person)) throw new DirectoryNotFound('No such person.');
    return person;
  }

  return {
    /**
     * People search for the caller: at most `limit` (1 to 50, default 10) people of the caller's tenant and external
     * addresses the caller wrote to, best first (protocol of `GET /v1/people`).
     */
    async search(caller: { userId: string; tenantId: string }, q: string, limit = DEFAULT_SEARCH_LIMIT): Promise<PeopleResultView[]> {
      const bounded = Math.max(1, Math.min(MAX_SEARCH_LIMIT, Math.floor(limit)));
      const found = await store.directory.search(caller.tenantId, caller.userId, q, bounded);
      return found.map(resultView);
    },

    /** A person of the tenant; DirectoryNotFound for another tenant's user, a hidden one, or none. */
    async person(tenantId: string, userId: string): Promise<PersonView> {
      return personView(await visiblePerson(tenantId, userId));
    },

    /** The person with their managers up to the top, their direct reports and their colleagues (hidden ones left out). */
    async organization(tenantId: string, userId: string): Promise<OrganizationView> {
      const person = await visiblePerson(tenantId, userId);
      const managerId = person.entry?.managerId ?? null;
      const [managers, reports, peers] = await Promise.all([
        store.directory.managers(tenantId, userId),
        store.directory.reports(tenantId, userId),
        managerId ? store.directory.reports(tenantId, managerId) : Promise.resolve([]),
      ]);
      const shown = (list: DirectoryPerson[]) => list.filter((p) => !isHidden(p) && p.user.id !== userId).map(personView);
      return { person: personView(person), managers: shown(managers), directReports: shown(reports), colleagues: shown(peers) };
    },

    /** The user's entry as administrators see it; DirectoryNotFound for a user of another tenant. */
    async entry(tenantId: string, userId: string): Promise<EntryView> {
      const person = await store.directory.person(tenantId, userId);
      if (!person) throw new DirectoryNotFound(`No user ${userId} in this tenant.`);
      return entryView(userId, person.entry);
    },

    /**
     * Changes a user's entry (an administrator of the user's tenant, or the CLI as `system`), audited as
     * `directory.update`. DirectoryRefused for a bad value, a manager outside the tenant, or a cycle.
     */
    async update(actor: Actor, userId: string, change: EntryChange): Promise<EntryView> {
      const problems: DirectoryProblem[] = [];
      const cleaned: Partial<Record<DirectoryField, string | null>> = {};
      for (const name of DIRECTORY_FIELDS) {
        if (!Object.hasOwn(change, name)) continue;
        const c = cleanField(change[name]);
        if ('problem' in c) problems.push({ field: name, message: c.problem });
        else cleaned[name] = c.value;
      }
      if (problems.length) throw refusal(problems);
      const now = clock.now();
      return store.run(function* (tx) {
        const target = yield* tx.directory.person(actor.tenantId, userId);
        if (!target) throw new DirectoryNotFound(`No user ${userId} in this tenant.`);
        const managerId = change.managerId === undefined ? undefined : change.managerId || null;
        if (managerId) {
          const problem = yield* managerOf(tx, actor.tenantId, userId, managerId);
          if (problem) throw refusal([problem]);
        }
        const current = target.entry ?? blankEntry(actor.tenantId, userId);
        const next: DirectoryEntry = {
          ...current,
          ...cleaned,
          ...(managerId === undefined ? {} : { managerId }),
          ...(change.hiddenFromDirectory === undefined ? {} : { hiddenFromDirectory: change.hiddenFromDirectory }),
          updatedAt: now,
        };
        yield* tx.directory.putEntry(next);
        if (managerId) yield* refuseCycle(tx, actor.tenantId, target.user, 'managerId');
        const changed = Object.keys(change).filter((k) => Object.hasOwn(change, k) && (change as Record<string, unknown>)[k] !== undefined);
        yield* audit(tx, actor, now, 'directory.update', 'user', userId, { fields: changed, managerId: next.managerId, hiddenFromDirectory: next.hiddenFromDirectory });
        return entryView(userId, next);
      });
    },

    /**
     * Imports a CSV file (CSV_COLUMNS) into the actor's tenant as one unit of work, audited as `directory.import`:
     * each listed user's title, department, office, phones and manager become the line's (an empty field clears
     * it; whether the user is hidden is kept). DirectoryRefused naming every bad line (at most 50), nothing changed.
     */
    async importCsv(actor: Actor, csv: string): Promise<{ imported: number }> {
      const parsed = parseDirectoryCsv(csv);
      if (parsed.problems.length) throw refusal(parsed.problems);
      const now = clock.now();
      return store.run(function* (tx) {
        const problems: DirectoryProblem[] = [];
        const users = new Map<string, User | undefined>();
        function* userNamed(username: string): Step<User | undefined> {
          const key = username.toLowerCase();
          if (!users.has(key)) {
            const found = yield* tx.users.byUsername(username);
            users.set(key, found && found.tenantId === actor.tenantId ? found : undefined);
          }
          return users.get(key);
        }
        const firstLine = new Map<string, number>();
        const resolved: Array<{ row: DirectoryCsvRow; user: User; manager: User | null }> = [];
        for (const row of parsed.rows) {
          const at = `line ${row.line}`;
          const key = row.username.toLowerCase();
          const earlier = firstLine.get(key);
          if (earlier !== undefined) {
            problems.push({ field: at, message: `${row.username} is listed twice (first on line ${earlier})` });
            continue;
          }
          firstLine.set(key, row.line);
          const user = yield* userNamed(row.username);
          const manager = row.manager === null ? null : yield* userNamed(row.manager);
          if (!user) problems.push({ field: at, message: `no user "${row.username}" in this tenant` });
          if (row.manager !== null && !manager) problems.push({ field: at, message: `manager: no user "${row.manager}" in this tenant` });
          if (user && manager && user.id === manager.id) problems.push({ field: at, message: `${row.username} cannot be their own manager` });
          if (user && (row.manager === null || (manager && manager.id !== user.id))) resolved.push({ row, user, manager: manager ?? null });
        }
        if (problems.length) throw refusal(problems);
        for (const { row, user, manager } of resolved) {
          const current = (yield* tx.directory.entry(actor.tenantId, user.id)) ?? blankEntry(actor.tenantId, user.id);
          yield* tx.directory.putEntry({ ...current, ...row.fields, managerId: manager?.id ?? null, updatedAt: now });
        }
        // Checked once every line is written: the file as a whole must leave no cycle (a line may fix another's).
        for (const { row, user, manager } of resolved) {
          if (!manager) continue;
          try {
            yield* refuseCycle(tx, actor.tenantId, user, `line ${row.line}`);
          } catch (err) {
            if (!(err instanceof DirectoryRefused)) throw err;
            problems.push(...err.problems);
            if (problems.length >= MAX_PROBLEMS) break;
          }
        }
        if (problems.length) throw refusal(problems);
        yield* audit(tx, actor, now, 'directory.import', 'tenant', actor.tenantId, { rows: resolved.length });
        return { imported: resolved.length };
      });
    },

    /**
     * Counts a message the user sent to `addresses` (the send path calls this once per message): they rank first in
     * the user's people search from now on, and those outside the tenant become searchable for the user. Malformed
     * addresses and the user's own are ignored; only the first 100 count.
     */
    async recordSent(userId: string, addresses: ReadonlyArray<string | EmailAddress>, now: number = clock.now()): Promise<void> {
      const user = await store.users.byId(userId);
      if (!user) return;
      const own = user.email.trim().toLowerCase();
      const contacts = addresses
        .map((a) => (typeof a === 'string' ? { address: a, name: null } : { address: a.address, name: a.name?.trim() || null }))
        .filter((c) => /^[^\s@]+@[^\s@]+$/.test(c.address.trim()) && c.address.trim().toLowerCase() !== own)
        .slice(0, MAX_COUNTED_RECIPIENTS);
      if (!contacts.length) return;
      await store.directory.recordSent(user.tenantId, userId, contacts, now);
    },
  };
}

export type DirectoryService = ReturnType<typeof createDirectoryService>;
