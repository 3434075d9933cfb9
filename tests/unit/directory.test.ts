/**
 * The directory's own rules (issue 18), on a SQLite store of its own:
 * - folding and terms: what "case- and accent-insensitive prefix of a name word, the name or the address" means;
 * - ranking: frequent contacts (count, then latest), then exact word, name prefix, address, then alphabetically;
 * - the search statements are index range scans and key lookups, never a scan of a table (the query plan);
 * - manager changes: another tenant's user, oneself and cycles are refused, nothing written, nothing audited;
 * - the CSV import: RFC 4180 syntax, every bad line named, all or nothing, a file that fixes a cycle it also makes
 *   elsewhere is judged as a whole;
 * - the CLI (`directory set`, `directory import`) over a store, with the same rules.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ManualClock } from '../../server/clock';
import { UserAdminError } from '../../server/admin/users';
import { openSqliteStore, type SqliteStore } from '../../server/store/sqlite';
import type { DirectoryEntry, FrequentContact, PeopleMatch, User } from '../../server/store/types';
import {
  addressTerms,
  comparePeople,
  directorySql,
  fold,
  nameTerms,
  probeParams,
  searchProbe,
} from '../../server/store/sqlite/directory';
import {
  DirectoryNotFound,
  DirectoryRefused,
  createDirectoryService,
  parseCsv,
  parseDirectoryCsv,
  type DirectoryService,
} from '../../server/directory/service';
import { parseDirectoryArgs, runDirectoryCommand } from '../../server/cli/directory';

const NOW = Date.UTC(2026, 0, 1);

describe('folding and terms', () => {
  test('fold: lower case, no accents, special letters spelt out', () => {
    expect(fold('Zoë ÅNGSTRÖM')).toBe('zoe angstrom');
    expect(fold('İstanbul Łódź Straße Ærø Œuvre')).toBe('istanbul lodz strasse aero oeuvre');
    expect(fold('ﬁne Ｆｕｌｌ')).toBe('fine full');
  });

  test('name terms: the whole name, each word without punctuation, and the parts of joined words', () => {
    expect(nameTerms("Jean-Luc O'Brien")).toEqual(['jeanluc obrien', 'jeanluc', 'obrien', 'jean', 'luc', 'o', 'brien']);
    expect(nameTerms('  Ann   Smith ')).toEqual(['ann smith', 'ann', 'smith']);
    expect(nameTerms('')).toEqual([]);
  });

  test('address terms: the whole address and the parts of a local part that has several', () => {
    expect(addressTerms(' John.Smith+news@Example.test ')).toEqual(['john.smith+news@example.test', 'john', 'smith', 'news']);
    expect(addressTerms('ann@example.test')).toEqual(['ann@example.test']);
  });

  test('a query is probed as a name (punctuation dropped) and, without spaces, as an address', () => {
    expect(searchProbe('Zoë Å')).toEqual({ name: 'zoe a', address: null });
    expect(searchProbe("O'B")).toEqual({ name: 'ob', address: "o'b" });
    expect(searchProbe('ann@ex')).toEqual({ name: 'annex', address: 'ann@ex' });
    expect(searchProbe('@')).toEqual({ name: null, address: '@' });
    expect(searchProbe('  ')).toEqual({ name: null, address: null });
    // The range is exactly the terms that start with the probe.
    const { name, nameEnd } = probeParams(searchProbe('ann'));
    for (const term of ['ann', 'anna', 'ann smith', 'annzzzz', 'ann\u{10FFFD}']) expect(term >= name && term < nameEnd).toBe(true);
    for (const term of ['an', 'anm', 'ano', 'bob']) expect(term >= name && term < nameEnd).toBe(false);
  });
});

describe('ranking', () => {
  const user = (displayName: string, email: string, id: string): User => ({
    id, tenantId: 't', username: id, email, displayName, role: 'user', passwordHash: null, sessionVersion: 0, disabled: false, createdAt: NOW, updatedAt: NOW,
  });
  const freq = (address: string, count: number, lastSentAt: number): FrequentContact => ({ address, name: null, count, lastSentAt });
  const u = (name: string, match: PeopleMatch['match'], frequent: FrequentContact | null = null, id = name): PeopleMatch => ({
    kind: 'user', person: { user: user(name, `${id}@example.test`, id), entry: null }, match, frequent,
  });
  const ext = (address: string, count: number, lastSentAt: number, match: PeopleMatch['match'] = 'email'): PeopleMatch => ({
    kind: 'external', contact: freq(address, count, lastSentAt), match,
  });
  const label = (m: PeopleMatch) => (m.kind === 'user' ? m.person.user.displayName : m.contact.address);

  test('frequent first by count then latest, then exact word, name prefix, address, then alphabetically (accents folded)', () => {
    const list = [
      u('Zed Email', 'email'),
      u('Bob Prefix', 'name'),
      u('Ánn Exact', 'exactName'),
      u('Ann Exact', 'exactName', null, 'ann2'),
      u('Amy Prefix', 'name'),
      ext('x@outside.test', 1, NOW + 5),
      u('Often', 'email', freq('often@example.test', 7, NOW)),
      u('Recent', 'name', freq('recent@example.test', 1, NOW + 9)),
      ext('y@outside.test', 7, NOW + 1),
    ];
    const shuffled = [...list].reverse();
    expect(shuffled.sort(comparePeople).map(label)).toEqual([
      'y@outside.test', 'Often', 'Recent', 'x@outside.test', 'Ann Exact', 'Ánn Exact', 'Amy Prefix', 'Bob Prefix', 'Zed Email',
    ]);
  });
});

/** A SQLite store in a directory of its own, with a tenant, and a way to make users. */
function scratch() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-directory-unit-'));
  const store: SqliteStore = openSqliteStore(path.join(dir, 'pigeon.db'));
  const clock = new ManualClock(NOW);
  const directory: DirectoryService = createDirectoryService({ store, clock });
  let n = 0;
  const userIn = (tenantId: string, username: string, displayName = username): Promise<User> =>
    store.users.create({ tenantId, username, email: `${username}@example.test`, displayName, role: 'user', passwordHash: null }, NOW + n++);
  return {
    dir,
    store,
    clock,
    directory,
    userIn,
    async close() {
      await store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('the search statements use indexes only', () => {
  let s: ReturnType<typeof scratch>;
  beforeAll(async () => {
    s = scratch();
    const tenant = await s.store.tenants.create('plan', NOW);
    const caller = await s.userIn(tenant.id, 'caller');
    // Enough rows that the planner has something to choose between.
    s.store.sqlite.transaction(() => {
      for (let i = 0; i < 2000; i++) s.store.sqlite.users.create({ tenantId: tenant.id, username: `u${i}`, email: `u${i}@example.test`, displayName: `User Number ${i}`, role: 'user', passwordHash: null }, NOW);
    });
    await s.store.directory.search(tenant.id, caller.id, 'user', 10);
    s.store.db.exec('ANALYZE');
  });
  afterAll(() => s.close());

  const plan = (text: string, params: Record<string, unknown>) =>
    (s.store.db.prepare(`EXPLAIN QUERY PLAN ${text}`).all(params) as Array<{ detail: string }>).map((r) => r.detail);
  /**
   * A SCAN of a table or its alias, through an index or not (a scan of a CTE's own rows is fine: they are what the
   * range scans found).
   */
  const tableScans = (lines: string[]) => lines.filter((l) => /\bSCAN (directory_\w+|users|[upefq])\b/.test(l));
  /**
   * A search on the tenant alone, or the tenant and an open range of another column: every row of the tenant (only
   * the queue of users to index may be read so).
   */
  const tenantScans = (lines: string[]) => lines.filter((l) => /\(tenant_id=\?(?: AND \w+[<>]\?)?\)/.test(l) && !/\bSEARCH q\b/.test(l));

  const DIRECTORY_SQL = directorySql('sqlite');
  test.each([
    ['search', DIRECTORY_SQL.search, { tenant: 't', caller: 'c', limit: 10, ...probeParams(searchProbe('ann')) }],
    ['frequentOutside', DIRECTORY_SQL.frequentOutside, { tenant: 't', caller: 'c' }],
    ['managers', DIRECTORY_SQL.managers, { tenant: 't', user: 'u' }],
    ['reports', DIRECTORY_SQL.reports, { tenant: 't', manager: 'm' }],
    ['person', DIRECTORY_SQL.person, { tenant: 't', user: 'u' }],
    ['pending', DIRECTORY_SQL.pending, { tenant: 't' }],
  ] as const)('%s', (_name, text, params) => {
    const lines = plan(text, params);
    expect(lines.some((l) => /SEARCH/.test(l))).toBe(true);
    expect({ scans: [...tableScans(lines), ...tenantScans(lines)], plan: lines }).toEqual({ scans: [], plan: lines });
  });
});

describe('directory service: entries and managers', () => {
  let s: ReturnType<typeof scratch>;
  let tenantId: string;
  let otherTenantId: string;
  const admin = () => ({ id: 'admin-id', name: 'root', tenantId });
  beforeEach(async () => {
    s = scratch();
    tenantId = (await s.store.tenants.create('acme', NOW)).id;
    otherTenantId = (await s.store.tenants.create('other', NOW)).id;
  });
  afterEach(() => s.close());

  const refusalOf = async (p: Promise<unknown>): Promise<DirectoryRefused> => {
    const err = await p.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(DirectoryRefused);
    return err as DirectoryRefused;
  };
  const audits = async (action: string) => (await s.store.audit.list(tenantId, { limit: 100 })).filter((e) => e.action === action);

  test('a change sets the fields given, clears those given empty, keeps the rest, and is audited', async () => {
    const ann = await s.userIn(tenantId, 'ann', 'Ann');
    const first = await s.directory.update(admin(), ann.id, { title: '  Engineer ', department: 'R&D', phone: '+1 555' });
    expect(first).toEqual({ userId: ann.id, title: 'Engineer', department: 'R&D', office: null, phone: '+1 555', mobile: null, managerId: null, hiddenFromDirectory: false, updatedAt: new Date(NOW).toISOString() });
    s.clock.advance(60_000);
    const second = await s.directory.update(admin(), ann.id, { department: '', hiddenFromDirectory: true });
    expect(second).toMatchObject({ title: 'Engineer', department: null, phone: '+1 555', hiddenFromDirectory: true, updatedAt: new Date(NOW + 60_000).toISOString() });
    expect((await audits('directory.update')).map((e) => ({ actor: e.actorName, target: e.targetId, fields: e.details.fields }))).toEqual([
      { actor: 'root', target: ann.id, fields: ['department', 'hiddenFromDirectory'] },
      { actor: 'root', target: ann.id, fields: ['title', 'department', 'phone'] },
    ]);
    await expect(s.directory.person(tenantId, ann.id)).rejects.toBeInstanceOf(DirectoryNotFound);
    expect(await s.directory.entry(tenantId, ann.id)).toEqual(second);
  });

  test('values too long or with control characters are refused, naming the field', async () => {
    const ann = await s.userIn(tenantId, 'ann');
    const err = await refusalOf(s.directory.update(admin(), ann.id, { title: 'x'.repeat(129), office: 'a\u0007b' }));
    expect(err.problems).toEqual([
      { field: 'title', message: 'must be at most 128 characters' },
      { field: 'office', message: 'must not contain control characters' },
    ]);
    expect(await s.store.directory.entry(tenantId, ann.id)).toBeUndefined();
  });

  test("a user of another tenant is not found, and cannot be a manager; nobody manages themselves", async () => {
    const ann = await s.userIn(tenantId, 'ann');
    const stranger = await s.userIn(otherTenantId, 'stranger');
    await expect(s.directory.update(admin(), stranger.id, { title: 'x' })).rejects.toBeInstanceOf(DirectoryNotFound);
    expect((await refusalOf(s.directory.update(admin(), ann.id, { managerId: stranger.id }))).problems).toEqual([{ field: 'managerId', message: `no user ${stranger.id} in this tenant` }]);
    expect((await refusalOf(s.directory.update(admin(), ann.id, { managerId: ann.id }))).problems).toEqual([{ field: 'managerId', message: 'a user cannot be their own manager' }]);
    expect((await refusalOf(s.directory.update(admin(), ann.id, { managerId: 'nobody' }))).message).toBe('managerId: no user nobody in this tenant');
    await expect(s.directory.person(tenantId, stranger.id)).rejects.toBeInstanceOf(DirectoryNotFound);
    await expect(s.directory.organization(tenantId, stranger.id)).rejects.toBeInstanceOf(DirectoryNotFound);
    expect(await audits('directory.update')).toEqual([]);
  });

  test('a change that would make a cycle is refused with the cycle named, and nothing changes', async () => {
    const [a, b, c] = [await s.userIn(tenantId, 'a'), await s.userIn(tenantId, 'b'), await s.userIn(tenantId, 'c')];
    await s.directory.update(admin(), a.id, { managerId: b.id });
    await s.directory.update(admin(), b.id, { managerId: c.id });
    const err = await refusalOf(s.directory.update(admin(), c.id, { managerId: a.id, title: 'Boss' }));
    expect(err.message).toBe('managerId: the manager change would make a cycle: c → a → b → c');
    expect(await s.store.directory.entry(tenantId, c.id)).toBeUndefined();
    expect(await audits('directory.update')).toHaveLength(2);
    // Clearing a manager is always fine, and then the other change is too.
    await s.directory.update(admin(), a.id, { managerId: null });
    expect((await s.directory.update(admin(), c.id, { managerId: a.id })).managerId).toBe(a.id);
  });

  test('the org chart: managers to the top, reports and colleagues, hidden people left out', async () => {
    const names = ['ceo', 'vp', 'me', 'peer', 'hiddenpeer', 'report'];
    const u: Record<string, User> = {};
    for (const n of names) u[n] = await s.userIn(tenantId, n, n.toUpperCase());
    await s.directory.update(admin(), u.vp!.id, { managerId: u.ceo!.id });
    for (const n of ['me', 'peer', 'hiddenpeer']) await s.directory.update(admin(), u[n]!.id, { managerId: u.vp!.id });
    await s.directory.update(admin(), u.hiddenpeer!.id, { hiddenFromDirectory: true });
    await s.directory.update(admin(), u.report!.id, { managerId: u.me!.id, title: 'Intern' });
    const org = await s.directory.organization(tenantId, u.me!.id);
    const ids = (list: Array<{ id: string }>) => list.map((p) => p.id);
    expect(org.person).toEqual({ id: u.me!.id, displayName: 'ME', email: 'me@example.test', title: null, department: null, office: null, phone: null, mobile: null, managerId: u.vp!.id });
    expect(ids(org.managers)).toEqual([u.vp!.id, u.ceo!.id]);
    expect(org.directReports).toEqual([{ id: u.report!.id, displayName: 'REPORT', email: 'report@example.test', title: 'Intern', department: null, office: null, phone: null, mobile: null, managerId: u.me!.id }]);
    expect(ids(org.colleagues)).toEqual([u.peer!.id]);
    const top = await s.directory.organization(tenantId, u.ceo!.id);
    expect({ managers: top.managers, colleagues: top.colleagues, reports: ids(top.directReports) }).toEqual({ managers: [], colleagues: [], reports: [u.vp!.id] });
  });

  test('recordSent: the user\'s own address and malformed ones are ignored, names are kept', async () => {
    const ann = await s.userIn(tenantId, 'ann');
    await s.directory.recordSent(ann.id, ['ANN@example.test', 'not an address', 'bob@example.test', { name: 'Carla C', address: 'carla@outside.test' }], NOW);
    expect(await s.store.directory.frequent(tenantId, ann.id)).toEqual([
      { address: 'bob@example.test', name: null, count: 1, lastSentAt: NOW },
      { address: 'carla@outside.test', name: 'Carla C', count: 1, lastSentAt: NOW },
    ]);
    await s.directory.recordSent('no-such-user', ['bob@example.test']);
    const found = await s.directory.search({ userId: ann.id, tenantId }, 'carl');
    expect(found).toEqual([{ id: null, displayName: 'Carla C', email: 'carla@outside.test', title: null, department: null, office: null, phone: null, mobile: null, isFrequent: true, external: true }]);
  });
});

describe('CSV', () => {
  test('RFC 4180: quoted commas, doubled quotes, line breaks in quotes, CRLF, a BOM, blank lines', () => {
    const text = '\uFEFFa,"b,1","say ""hi"""\r\n\r\n"multi\nline",x,\n last , ,"" \n';
    // The last line's closing quote is followed by a space: refused (below). Without it:
    const good = text.replace('"" \n', '""\n');
    expect(parseCsv(good)).toEqual({
      records: [
        { line: 1, fields: ['a', 'b,1', 'say "hi"'] },
        { line: 3, fields: ['multi\nline', 'x', ''] },
        { line: 5, fields: [' last ', ' ', ''] },
      ],
    });
    expect(parseCsv(text).problem).toEqual({ field: 'line 5', message: 'a closing quote must end its field' });
    expect(parseCsv('a,b\nc,"never closed\nmore').problem).toEqual({ field: 'line 2', message: 'a quoted field is never closed' });
    expect(parseCsv('a,b\nc,d"e').problem?.field).toBe('line 2');
  });

  test('directory rows: a header is skipped; every bad line is named', () => {
    const good = parseDirectoryCsv('username,title,department,office,phone,mobile,manager\nann,Engineer,,HQ,,,bob\n');
    expect(good).toEqual({
      problems: [],
      rows: [{ line: 2, username: 'ann', fields: { title: 'Engineer', department: null, office: 'HQ', phone: null, mobile: null }, manager: 'bob' }],
    });
    const bad = parseDirectoryCsv(`ann,Engineer,,HQ,,\n,a,b,c,d,e,f\nbob,${'x'.repeat(200)},,,,,\ncarl,ok,,,,,\n`);
    expect(bad.problems).toEqual([
      { field: 'line 1', message: 'expected 7 columns (username,title,department,office,phone,mobile,manager), found 6' },
      { field: 'line 2', message: 'username is empty' },
      { field: 'line 3', message: 'title must be at most 128 characters' },
    ]);
    expect(parseDirectoryCsv('username,title,department,office,phone,mobile,manager\n').problems).toEqual([{ field: 'line 1', message: 'the file has no rows' }]);
  });
});

describe('directory service: CSV import', () => {
  let s: ReturnType<typeof scratch>;
  let tenantId: string;
  const admin = () => ({ id: 'admin-id', name: 'root', tenantId });
  const entryOf = (userId: string) => s.store.directory.entry(tenantId, userId);
  beforeEach(async () => {
    s = scratch();
    tenantId = (await s.store.tenants.create('acme', NOW)).id;
  });
  afterEach(() => s.close());

  test('sets each line\'s facts and manager (named later in the file too), keeps hidden, audits once', async () => {
    const ann = await s.userIn(tenantId, 'ann');
    const bob = await s.userIn(tenantId, 'Bob');
    await s.directory.update(admin(), ann.id, { hiddenFromDirectory: true, office: 'old office' });
    const result = await s.directory.importCsv(admin(), 'username,title,department,office,phone,mobile,manager\nANN,Engineer,R&D,,+1,+2,bob\nbob,"Head, R&D",R&D,HQ,,,\n');
    expect(result).toEqual({ imported: 2 });
    expect(await entryOf(ann.id)).toEqual({ tenantId, userId: ann.id, title: 'Engineer', department: 'R&D', office: null, phone: '+1', mobile: '+2', managerId: bob.id, hiddenFromDirectory: true, updatedAt: NOW } satisfies DirectoryEntry);
    expect(await entryOf(bob.id)).toMatchObject({ title: 'Head, R&D', office: 'HQ', managerId: null });
    const audit = (await s.store.audit.list(tenantId, { limit: 10 })).filter((e) => e.action === 'directory.import');
    expect(audit.map((e) => e.details)).toEqual([{ rows: 2 }]);
  });

  test('unknown users and managers, repeated users, oneself as manager: every line named, nothing changed', async () => {
    const ann = await s.userIn(tenantId, 'ann');
    await s.userIn(tenantId, 'bob');
    const elsewhere = (await s.store.tenants.create('elsewhere', NOW)).id;
    await s.userIn(elsewhere, 'stranger');
    const csv = ['ann,Lead,,,,,bob', 'zed,x,,,,,', 'bob,x,,,,,stranger', 'Ann,again,,,,,', 'bob2,,,,,,', 'ann2,,,,,,ann2'].join('\n');
    await s.userIn(tenantId, 'ann2');
    const err = await s.directory.importCsv(admin(), csv).then(() => undefined, (e: unknown) => e as DirectoryRefused);
    expect(err).toBeInstanceOf(DirectoryRefused);
    expect(err!.problems).toEqual([
      { field: 'line 2', message: 'no user "zed" in this tenant' },
      { field: 'line 3', message: 'manager: no user "stranger" in this tenant' },
      { field: 'line 4', message: 'Ann is listed twice (first on line 1)' },
      { field: 'line 5', message: 'no user "bob2" in this tenant' },
      { field: 'line 6', message: 'ann2 cannot be their own manager' },
    ]);
    expect(err!.message).toBe('line 2: no user "zed" in this tenant (and 4 more problems)');
    expect(await entryOf(ann.id)).toBeUndefined();
    expect((await s.store.audit.list(tenantId, { limit: 10 })).filter((e) => e.action === 'directory.import')).toEqual([]);
  });

  test('a file is judged as a whole: a cycle it makes is refused by line, one it breaks is fine', async () => {
    const [a, b, c] = [await s.userIn(tenantId, 'a'), await s.userIn(tenantId, 'b'), await s.userIn(tenantId, 'c')];
    await s.directory.update(admin(), b.id, { managerId: a.id });
    // a → c → b → a: a cycle through the existing b → a.
    const err = await s.directory.importCsv(admin(), 'a,,,,,,c\nc,,,,,,b\n').then(() => undefined, (e: unknown) => e as DirectoryRefused);
    expect(err?.problems[0]).toEqual({ field: 'line 1', message: 'the manager change would make a cycle: a → c → b → a' });
    expect(await entryOf(a.id)).toBeUndefined();
    expect(await entryOf(c.id)).toBeUndefined();
    // The same lines with b's manager cleared in the same file: no cycle remains.
    expect(await s.directory.importCsv(admin(), 'a,,,,,,c\nc,,,,,,b\nb,,,,,,\n')).toEqual({ imported: 3 });
    expect((await s.store.directory.managers(tenantId, a.id)).map((p) => p.user.username)).toEqual(['c', 'b']);
  });
});

describe('the directory CLI', () => {
  let s: ReturnType<typeof scratch>;
  let out: string[];
  let err: string[];
  const io = () => ({ out: (l: string) => void out.push(l), err: (l: string) => void err.push(l), clock: s.clock });
  beforeEach(() => {
    s = scratch();
    out = [];
    err = [];
  });
  afterEach(() => s.close());

  test('arguments: usage mistakes are UserAdminErrors before any store is opened', () => {
    expect(parseDirectoryArgs(['set', '--user', 'ann', '--title', 'Lead', '--no-manager', '--hidden'])).toEqual({ action: 'set', user: 'ann', fields: { title: 'Lead' }, manager: null, hidden: true });
    expect(parseDirectoryArgs(['import', '--csv', 'f.csv'])).toEqual({ action: 'import', csv: 'f.csv' });
    for (const bad of [['set'], ['set', '--user', 'ann'], ['import'], ['import', '--csv', 'f', '--title', 'x'], ['frob'], ['set', '--user', 'a', '--hidden', '--visible'], ['set', '--user', 'a', '--manager', 'b', '--no-manager']]) {
      expect(() => parseDirectoryArgs(bad)).toThrow(UserAdminError);
    }
    expect(() => parseDirectoryArgs(['set', '--user', 'a', '--bogus'])).toThrow();
  });

  test('set and import over the store, with the same rules and exit statuses', async () => {
    const tenantId = (await s.store.tenants.create('acme', NOW)).id;
    const ann = await s.userIn(tenantId, 'ann');
    const bob = await s.userIn(tenantId, 'bob');
    expect(await runDirectoryCommand(s.store, parseDirectoryArgs(['set', '--user', 'ann', '--title', 'Lead', '--manager', 'bob']), io())).toBe(0);
    expect(out).toEqual([`directory entry of ann (${ann.id}) set: title=Lead department= office= phone= mobile= manager=${bob.id} hidden=false`]);
    expect(await runDirectoryCommand(s.store, parseDirectoryArgs(['set', '--user', 'bob', '--manager', 'ann']), io())).toBe(2);
    expect(err.join('\n')).toContain('managerId: the manager change would make a cycle: bob → ann → bob');
    expect(await runDirectoryCommand(s.store, parseDirectoryArgs(['set', '--user', 'nobody', '--title', 'x']), io())).toBe(2);
    const csv = path.join(s.dir, 'people.csv');
    fs.writeFileSync(csv, 'username,title,department,office,phone,mobile,manager\nbob,CEO,,,,,\nann,Lead,Eng,,,,bob\nghost,,,,,,\n');
    err = [];
    expect(await runDirectoryCommand(s.store, parseDirectoryArgs(['import', '--csv', csv]), io())).toBe(2);
    expect(err).toEqual([`pigeon admin: ${csv}: refused, nothing changed:`, '  line 4: no user "ghost" in this tenant']);
    expect((await s.store.directory.entry(tenantId, bob.id))?.title ?? null).toBeNull();
    fs.writeFileSync(csv, 'bob,CEO,,,,,\nann,Lead,Eng,,,,bob\n');
    expect(await runDirectoryCommand(s.store, parseDirectoryArgs(['import', '--csv', csv]), io())).toBe(0);
    expect(out[out.length - 1]).toBe(`imported 2 directory entries into tenant ${tenantId}`);
    expect(await s.store.directory.entry(tenantId, bob.id)).toMatchObject({ title: 'CEO' });
    expect(await runDirectoryCommand(s.store, parseDirectoryArgs(['import', '--csv', path.join(s.dir, 'missing.csv')]), io())).toBe(2);
    // Several tenants: the import must be told which.
    await s.store.tenants.create('second', NOW);
    await expect(runDirectoryCommand(s.store, parseDirectoryArgs(['import', '--csv', csv]), io())).rejects.toThrow(UserAdminError);
    expect(await runDirectoryCommand(s.store, parseDirectoryArgs(['import', '--csv', csv, '--tenant', tenantId]), io())).toBe(0);
    // The CLI's changes are audited by `system`.
    const actors = (await s.store.audit.list(tenantId, { limit: 20 })).map((e) => `${e.action} ${e.actorName}`);
    expect(actors).toEqual(['directory.import system', 'directory.import system', 'directory.update system']);
  });
});
