/**
 * The hot statements of sync must never read a whole table: a poll, a page or a hierarchy sync has to cost what it
 * returns (plus the history since the token), not what the mailbox holds. `EXPLAIN QUERY PLAN` on a real store with
 * data (several thousand items, moves, deletes, folder tombstones, and a second user), both as the server runs it
 * (no statistics: nothing runs ANALYZE) and after ANALYZE (should someone add `PRAGMA optimize`).
 *
 * The SQL is copied from server/store/sqlite/mail.ts and MUST BE KEPT IN STEP with it; the first test fails when a
 * copy no longer appears verbatim (whitespace aside) in that file, so an edited statement cannot escape this check.
 *
 * What a plan may contain — every line must match one of its statement's allowed patterns, and each required pattern
 * must match some line (so "SEARCH by some index" that does not bound the read, as below for items.byIds, fails):
 *   - `SEARCH <table> USING [COVERING] INDEX <the index named> (<the constraints named>)` or `USING PRIMARY KEY`:
 *     an index range bounded by the statement's own keys. Never `SCAN <table>` (a full table scan) nor
 *     `SCAN <table> USING [COVERING] INDEX` (a full index scan: the same cost in a different order).
 *   - Compound-query structure: `MERGE (UNION ALL)`, `LEFT`, `RIGHT` (sync.changes merges three index ranges that are
 *     each already in modseq order, so `LIMIT` stops after n rows).
 *   - `LIST SUBQUERY n`, `SCAN json_each VIRTUAL TABLE INDEX …` and `CREATE BLOOM FILTER` for items.byIds: the
 *     table-valued function is the list of ids asked for (a page's worth), so scanning it is the point.
 *   - `SCALAR SUBQUERY n` (evaluated once, not per row) for the one-statement reads of a no-change poll: folders.byId
 *     reads its mailbox by primary key and the hierarchy state over the user's folders in folders_user (a range bounded
 *     by the user's folder count, as below); folders.hierarchyPoll stops changedSince's and deletedSince's ranges at
 *     their first row.
 *   - `USE TEMP B-TREE FOR LAST TERM OF ORDER BY` for folders.changedSince only: it orders ties of one modseq by id
 *     among the user's folders changed since the cursor — a handful of rows, bounded by the user's folder count.
 *   - No `USE TEMP B-TREE` anywhere else. For sync.changes in particular a sort over the merged union would read and
 *     sort the whole history since the token before applying LIMIT (a device back after weeks would pay it on every
 *     page); the merge avoids that, and this test keeps it that way. For sync.range the index gives both orders.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SyncWorld } from '../helpers/syncWorld';
import type { SortKey } from '../../server/store/types';

// ---- Copied from server/store/sqlite/mail.ts (keep in step; checked below) -------------------------------------
const ITEM_COLUMNS = `id, user_id, folder_id, type, received_at, modseq, placed_modseq, change_key, is_read, is_flagged,
  importance, categories, inference, subject, from_json, to_json, cc_json, reply_to_json, sent_at, preview,
  has_attachments, body_size, conversation_id, internet_message_id, mime_blob_id, attachments_json, data_json, created_at`;

const SQL = {
  'sync.changes': `SELECT modseq, object_id, kind FROM (
             SELECT modseq, id AS object_id, 'item' AS kind FROM items
               WHERE folder_id = @f AND modseq > @m AND (received_at, id) >= (@r, @i)
             UNION ALL
             SELECT modseq, object_id, 'deleted' FROM changes
               WHERE folder_id = @f AND modseq > @m AND op = 'deleted' AND object_type = 'item'
                 AND (received_at, object_id) >= (@r, @i)
             UNION ALL
             SELECT modseq, object_id, 'movedOut' FROM changes
               WHERE from_folder_id = @f AND modseq > @m AND (received_at, object_id) >= (@r, @i))
           ORDER BY modseq LIMIT @n`,
  'sync.boundary': 'SELECT received_at, id FROM items WHERE folder_id = ? ORDER BY received_at DESC, id DESC LIMIT 1 OFFSET ?',
  'sync.range asc': `SELECT \${ITEM_COLUMNS} FROM items WHERE folder_id = ? AND (received_at, id) >= (?, ?) AND (received_at, id) < (?, ?)
             ORDER BY received_at, id LIMIT ?`,
  'sync.range desc': `SELECT \${ITEM_COLUMNS} FROM items WHERE folder_id = ? AND (received_at, id) >= (?, ?) AND (received_at, id) < (?, ?)
             ORDER BY received_at DESC, id DESC LIMIT ?`,
  'folders.changedSince': `SELECT * FROM folders WHERE user_id = ? AND (modseq, id) > (?, ?) ORDER BY modseq, id LIMIT ?`,
  'folders.deletedSince': `SELECT modseq, object_id FROM changes
           WHERE user_id = ? AND modseq > ? AND object_type = 'folder' AND op = 'deleted' ORDER BY modseq LIMIT ?`,
  'items.byIds': `SELECT \${ITEM_COLUMNS} FROM items WHERE id IN (SELECT value FROM json_each(?)) AND +user_id = ?`,
  'mailboxes.get': 'SELECT * FROM mailboxes WHERE user_id = ?',
  // The one read of a no-change item-sync poll: the folder row with its mailbox and the hierarchy state.
  'folders.byId': `SELECT *,
         (SELECT highest_modseq FROM mailboxes WHERE user_id = @u) AS mailbox_highest_modseq,
         (SELECT purged_modseq FROM mailboxes WHERE user_id = @u) AS mailbox_purged_modseq,
         (SELECT epoch FROM mailboxes WHERE user_id = @u) AS mailbox_epoch,
         (SELECT coalesce(max(modseq), 0) || '.' || count(*) FROM folders WHERE user_id = @u) AS hierarchy_state
       FROM folders WHERE id = @id AND user_id = @u`,
  // The one read of a no-change folder-sync poll.
  'folders.hierarchyPoll': `SELECT user_id, highest_modseq, purged_modseq, epoch,
           EXISTS (SELECT 1 FROM folders WHERE user_id = @u AND (modseq, id) > (@m, @c))
           OR EXISTS (SELECT 1 FROM changes WHERE user_id = @u AND modseq > @m AND object_type = 'folder' AND op = 'deleted') AS changed
         FROM mailboxes WHERE user_id = @u`,
} as const;
// -----------------------------------------------------------------------------------------------------------------

type Name = keyof typeof SQL;
const runnable = (name: Name) => SQL[name].replace('${ITEM_COLUMNS}', ITEM_COLUMNS);
const squash = (text: string) => text.replace(/\s+/g, ' ').trim();

/** Allowed and required plan lines per statement (see the header for why each is allowed). */
const RULES: Record<Name, { required: RegExp[]; allowed: RegExp[] }> = {
  'sync.changes': {
    required: [
      /^SEARCH items USING INDEX items_folder_modseq \(folder_id=\? AND modseq>\?\)$/,
      /^SEARCH changes USING INDEX changes_folder \(folder_id=\? AND modseq>\?\)$/,
      /^SEARCH changes USING INDEX changes_from_folder \(from_folder_id=\? AND modseq>\?\)$/,
      /^MERGE \(UNION ALL\)$/,
    ],
    allowed: [/^SEARCH (items|changes) USING INDEX \w+ \((from_)?folder_id=\? AND modseq>\?\)$/, /^MERGE \(UNION ALL\)$/, /^(LEFT|RIGHT)$/],
  },
  'sync.boundary': {
    required: [/^SEARCH items USING COVERING INDEX items_window \(folder_id=\?\)$/],
    allowed: [/^SEARCH items USING COVERING INDEX items_window \(folder_id=\?\)$/],
  },
  'sync.range asc': {
    required: [/^SEARCH items USING INDEX items_window \(folder_id=\? AND \(received_at,id\)>\(\?,\?\) AND \(received_at,id\)<\(\?,\?\)\)$/],
    allowed: [/^SEARCH items USING INDEX items_window \(folder_id=\? AND \(received_at,id\)>\(\?,\?\) AND \(received_at,id\)<\(\?,\?\)\)$/],
  },
  'sync.range desc': {
    required: [/^SEARCH items USING INDEX items_window \(folder_id=\? AND \(received_at,id\)>\(\?,\?\) AND \(received_at,id\)<\(\?,\?\)\)$/],
    allowed: [/^SEARCH items USING INDEX items_window \(folder_id=\? AND \(received_at,id\)>\(\?,\?\) AND \(received_at,id\)<\(\?,\?\)\)$/],
  },
  'folders.changedSince': {
    required: [/^SEARCH folders USING INDEX folders_user \(user_id=\? AND modseq>\?\)$/],
    allowed: [/^SEARCH folders USING INDEX folders_user \(user_id=\? AND modseq>\?\)$/, /^USE TEMP B-TREE FOR LAST TERM OF ORDER BY$/],
  },
  'folders.deletedSince': {
    required: [/^SEARCH changes USING PRIMARY KEY \(user_id=\? AND modseq>\?\)$/],
    allowed: [/^SEARCH changes USING PRIMARY KEY \(user_id=\? AND modseq>\?\)$/],
  },
  'items.byIds': {
    // One primary-key probe per id asked for. "SEARCH items USING INDEX <any> (user_id=?)" would read every item of
    // the user (the whole mailbox) and filter: an index search in name, a scan in cost.
    required: [/^SEARCH items USING (INDEX sqlite_autoindex_items_1|PRIMARY KEY) \(id=\?\)$/],
    allowed: [
      /^SEARCH items USING (INDEX sqlite_autoindex_items_1|PRIMARY KEY) \(id=\?\)$/,
      /^LIST SUBQUERY \d+$/,
      /^SCAN json_each VIRTUAL TABLE INDEX \d+:/,
      /^CREATE BLOOM FILTER$/,
    ],
  },
  'mailboxes.get': {
    required: [/^SEARCH mailboxes USING (INDEX sqlite_autoindex_mailboxes_1|PRIMARY KEY) \(user_id=\?\)$/],
    allowed: [/^SEARCH mailboxes USING (INDEX sqlite_autoindex_mailboxes_1|PRIMARY KEY) \(user_id=\?\)$/],
  },
  'folders.byId': {
    required: [
      /^SEARCH folders USING (INDEX sqlite_autoindex_folders_1|PRIMARY KEY) \(id=\?\)$/,
      /^SEARCH mailboxes USING (INDEX sqlite_autoindex_mailboxes_1|PRIMARY KEY) \(user_id=\?\)$/,
      /^SEARCH folders USING COVERING INDEX folders_user \(user_id=\?\)$/,
    ],
    allowed: [
      /^SEARCH folders USING (INDEX sqlite_autoindex_folders_1|PRIMARY KEY) \(id=\?\)$/,
      /^SEARCH mailboxes USING (INDEX sqlite_autoindex_mailboxes_1|PRIMARY KEY) \(user_id=\?\)$/,
      /^SEARCH folders USING COVERING INDEX folders_user \(user_id=\?\)$/,
      /^SCALAR SUBQUERY \d+$/,
    ],
  },
  'folders.hierarchyPoll': {
    required: [
      /^SEARCH mailboxes USING (INDEX sqlite_autoindex_mailboxes_1|PRIMARY KEY) \(user_id=\?\)$/,
      /^SEARCH folders USING INDEX folders_user \(user_id=\? AND modseq>\?\)$/,
      /^SEARCH changes USING PRIMARY KEY \(user_id=\? AND modseq>\?\)$/,
    ],
    allowed: [
      /^SEARCH mailboxes USING (INDEX sqlite_autoindex_mailboxes_1|PRIMARY KEY) \(user_id=\?\)$/,
      /^SEARCH folders USING INDEX folders_user \(user_id=\? AND modseq>\?\)$/,
      /^SEARCH changes USING PRIMARY KEY \(user_id=\? AND modseq>\?\)$/,
      /^SCALAR SUBQUERY \d+$/,
    ],
  },
};

/** Never allowed, whatever the statement: a full scan of a table or of one of its indexes. */
const FULL_SCAN = /^SCAN (items|changes|folders|mailboxes)\b/;

let w: SyncWorld;
let params: Record<Name, unknown[]>;

beforeAll(async () => {
  w = await SyncWorld.open();
  const alice = w.user.id;
  const inbox = (await w.folder('inbox')).id;
  const archive = (await w.folder('archive')).id;
  const start = w.clock.now();
  const projects = (await w.mail.createFolder(alice, { displayName: 'Projects', parentId: null })).id;
  const folders = [inbox, inbox, inbox, archive, projects];
  const newItems = Array.from({ length: 5000 }, (_, i) => w.newItem(folders[i % folders.length]!, start + i * 1000 - (i % 7) * 3000));
  // One unit of work of the store's own steps, for speed (the services' checks add nothing to the data's shape).
  const ids = await w.store.run(function* (tx) {
    const made: string[] = [];
    for (const item of newItems) made.push((yield* tx.items.create(item, start)).id);
    for (let i = 0; i < 300; i++) yield* tx.items.move(alice, made[i * 3]!, i % 2 ? archive : projects, start);
    for (let i = 0; i < 300; i++) yield* tx.items.delete(alice, made[i * 3 + 1]!, start);
    for (let i = 0; i < 300; i++) yield* tx.items.update(alice, made[i * 3 + 2]!, { isFlagged: true }, start);
    for (let i = 0; i < 5; i++) yield* tx.folders.delete(alice, (yield* tx.folders.create(alice, { displayName: `Tmp ${i}`, parentId: null }, start)).id, start);
    // A second user, so user_id is not the only value in the table.
    const bob = yield* tx.users.create({ tenantId: w.user.tenantId, username: 'bob', email: 'b@x', displayName: 'B', role: 'user', passwordHash: null }, start);
    yield* tx.mailboxes.create(bob.id, start);
    const bobInbox = (yield* tx.folders.byKind(bob.id, 'inbox'))!.id;
    for (let i = 0; i < 2000; i++) yield* tx.items.create({ userId: bob.id, folderId: bobInbox, type: 'email', receivedAt: start + i * 1000, subject: 'b' }, start);
    return made;
  });

  const keyAt = async (offset: number): Promise<SortKey> => (await w.store.sync.boundary(alice, inbox, offset + 1))!;
  const mid = Math.floor((await w.store.mailboxes.get(alice))!.highestModseq / 2);
  const lower = await keyAt(500);
  const upper = await keyAt(100);
  params = {
    'sync.changes': [{ f: inbox, m: mid, r: lower.receivedAt, i: lower.id, n: 101 }],
    'sync.boundary': [inbox, 499],
    'sync.range asc': [inbox, lower.receivedAt, lower.id, upper.receivedAt, upper.id, 101],
    'sync.range desc': [inbox, lower.receivedAt, lower.id, upper.receivedAt, upper.id, 101],
    'folders.changedSince': [alice, mid, '', 101],
    'folders.deletedSince': [alice, mid, 101],
    'items.byIds': [JSON.stringify(ids.slice(2000, 2101)), alice],
    'mailboxes.get': [alice],
    'folders.byId': [{ id: inbox, u: alice }],
    'folders.hierarchyPoll': [{ u: alice, m: mid, c: '' }],
  };
});
afterAll(() => w.close());

function plan(name: Name): string[] {
  const rows = w.sqlite.db.prepare(`EXPLAIN QUERY PLAN ${runnable(name)}`).all(...params[name]) as { detail: string }[];
  return rows.map((r) => r.detail);
}

/** What is wrong with a plan, as a list (empty when it is fine); the plan itself goes in the assertion message. */
function problems(name: Name, lines: string[]): string[] {
  const { required, allowed } = RULES[name];
  return [
    ...lines.filter((l) => FULL_SCAN.test(l)).map((l) => `full scan: ${l}`),
    ...lines.filter((l) => !FULL_SCAN.test(l) && !allowed.some((a) => a.test(l))).map((l) => `not allowed here: ${l}`),
    ...required.filter((r) => !lines.some((l) => r.test(l))).map((r) => `missing: ${r.source}`),
  ];
}

test('the copied statements are still the ones in server/store/sqlite/mail.ts', () => {
  const source = squash(fs.readFileSync(path.join(__dirname, '../../server/store/sqlite/mail.ts'), 'utf8'));
  const missing = [['ITEM_COLUMNS', ITEM_COLUMNS] as const, ...Object.entries(SQL)].filter(([, text]) => !source.includes(squash(text))).map(([n]) => n);
  expect({ outOfStep: missing }).toEqual({ outOfStep: [] });
});

test('the data set is big enough for a bad plan to matter', () => {
  const n = (sql: string) => (w.sqlite.db.prepare(sql).get() as { n: number }).n;
  expect(n('SELECT count(*) AS n FROM items')).toBeGreaterThan(6000);
  expect(n('SELECT count(*) AS n FROM changes')).toBeGreaterThan(7000);
  expect(n("SELECT count(*) AS n FROM changes WHERE object_type = 'folder' AND op = 'deleted'")).toBeGreaterThanOrEqual(5);
});

// Every statement runs for real too, so a plan is never checked for SQL that does not execute.
test('each statement executes with its parameters', () => {
  for (const name of Object.keys(SQL) as Name[]) {
    expect(() => w.sqlite.db.prepare(runnable(name)).all(...params[name])).not.toThrow();
  }
});

const HEALTHY: Name[] = ['sync.changes', 'sync.boundary', 'sync.range asc', 'sync.range desc', 'folders.changedSince', 'folders.deletedSince', 'mailboxes.get', 'folders.byId', 'folders.hierarchyPoll'];

describe.each([
  ['as the server runs (no statistics)', false],
  ['after ANALYZE', true],
])('query plans %s', (_label, analyze) => {
  beforeAll(() => {
    if (analyze) w.sqlite.db.exec('ANALYZE');
  });

  test.each(HEALTHY)('%s reads only an index range', (name) => {
    const lines = plan(name);
    expect({ statement: name, plan: lines, problems: problems(name, lines) }).toEqual({ statement: name, plan: lines, problems: [] });
  });

  // items.byIds is checked on its own: without statistics SQLite once planned `SEARCH items USING INDEX
  // items_conversation (user_id=?)` — every item of the user, then a bloom filter on the ids — instead of one
  // primary-key probe per id (~3.6 ms per call at 20,000 items vs ~0.8 ms), and phase A calls it on every page.
  // mail.ts's `+user_id` keeps user_id out of index selection; this test keeps it that way with and without ANALYZE.
  test('items.byIds probes the primary key once per id', () => {
    const name: Name = 'items.byIds';
    const lines = plan(name);
    expect({ statement: name, plan: lines, problems: problems(name, lines) }).toEqual({ statement: name, plan: lines, problems: [] });
  });
});
