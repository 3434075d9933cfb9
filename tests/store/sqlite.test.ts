/**
 * The SQLite store on a real file: migrations from empty, reopening after a restart, durability pragmas on every
 * connection, and the change counter's guarantees the sync engine will rely on.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { openSqliteStore } from '../../server/store/sqlite';
import { migrate, MIGRATIONS_DIR } from '../../server/store/sqlite/db';
import { tempDir } from '../helpers/testApp';

let dir: string;
beforeEach(() => (dir = tempDir('pigeon-store-')));
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const NOW = Date.UTC(2026, 0, 1);

async function seedUser(store: ReturnType<typeof openSqliteStore>) {
  const tenant = await store.tenants.create('T', NOW);
  const user = await store.users.create({ tenantId: tenant.id, username: 'alice', email: 'a@x', displayName: 'A', role: 'user', passwordHash: null }, NOW);
  await store.mailboxes.create(user.id, NOW);
  return user;
}

test('migrations apply to an empty file and record every file in schema/sqlite', async () => {
  const store = openSqliteStore(path.join(dir, 'p.db'));
  const files = fs.readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql')).sort();
  expect(store.migrations.applied).toEqual(files);
  const tables = (store.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((r) => r.name);
  for (const t of ['tenants', 'users', 'mailboxes', 'devices', 'refresh_tokens', 'folders', 'items', 'blobs', 'attachments', 'changes']) {
    expect(tables).toContain(t);
  }
  await store.close();
  // Reopening applies nothing again.
  const again = openSqliteStore(path.join(dir, 'p.db'));
  expect(again.migrations.applied).toEqual([]);
  await again.close();
});

test('a landed migration that was edited is refused', () => {
  const migrations = path.join(dir, 'migrations');
  fs.mkdirSync(migrations);
  fs.writeFileSync(path.join(migrations, '0001_a.sql'), 'CREATE TABLE a (x INTEGER);');
  const db = new Database(path.join(dir, 'm.db'));
  expect(migrate(db, migrations).applied).toEqual(['0001_a.sql']);
  fs.writeFileSync(path.join(migrations, '0001_a.sql'), 'CREATE TABLE a (x INTEGER, y INTEGER);');
  expect(() => migrate(db, migrations)).toThrow(/0001_a.sql was edited/);
  db.close();
});

test('the store reopens after a restart with the same data', async () => {
  const file = path.join(dir, 'p.db');
  const store = openSqliteStore(file);
  const user = await seedUser(store);
  const inbox = (await store.folders.byKind(user.id, 'inbox'))!;
  const item = await store.items.create({ userId: user.id, folderId: inbox.id, type: 'email', receivedAt: NOW, subject: 'Grüße', mime: Buffer.from('Subject: x\r\n\r\nhi') }, NOW);
  await store.close();
  const reopened = openSqliteStore(file);
  expect((await reopened.users.byUsername('ALICE'))?.id).toBe(user.id);
  expect(await reopened.items.byId(user.id, item.id)).toEqual(item);
  expect(await reopened.folders.byKind(user.id, 'inbox')).toMatchObject({ totalCount: 1, unreadCount: 1 });
  await reopened.close();
});

test('PRAGMA synchronous reads 2 (FULL) after writes, and after a reopen, on every connection', async () => {
  const file = path.join(dir, 'p.db');
  const store = openSqliteStore(file);
  await seedUser(store);
  for (const p of await store.connectionPragmas()) {
    expect(p).toEqual({ journalMode: 'wal', synchronous: 2, foreignKeys: 1, busyTimeout: 5000 });
  }
  await store.close();
  const reopened = openSqliteStore(file);
  await reopened.tenants.create('again', NOW);
  expect((await reopened.connectionPragmas()).map((p) => p.synchronous)).toEqual([2]);
  await reopened.close();
  // The trap this guards against: a plain better-sqlite3 connection under WAL reads 1 (NORMAL) after a write.
  const plain = new Database(file);
  plain.prepare('INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)').run('t-plain', 'x', NOW);
  expect(plain.pragma('synchronous', { simple: true })).toBe(1);
  plain.close();
});

test('every change takes its own strictly increasing modseq and is logged in the same transaction', async () => {
  const store = openSqliteStore(path.join(dir, 'p.db'));
  const user = await seedUser(store);
  const inbox = (await store.folders.byKind(user.id, 'inbox'))!;
  const created = await store.run(function* (tx) {
    const items = [];
    for (const i of [1, 2, 3]) items.push(yield* tx.items.create({ userId: user.id, folderId: inbox.id, type: 'email', receivedAt: NOW + i, subject: `m${i}` }, NOW));
    return items;
  });
  const modseqs = created.map((i) => i.modseq);
  expect(new Set(modseqs).size).toBe(3);
  expect([...modseqs].sort((a, b) => a - b)).toEqual(modseqs);
  const logged = store.db.prepare("SELECT modseq, object_id, op, folder_id, received_at FROM changes WHERE object_type = 'item' ORDER BY modseq").all();
  expect(logged).toEqual(created.map((i) => ({ modseq: i.modseq, object_id: i.id, op: 'created', folder_id: inbox.id, received_at: i.receivedAt })));
  expect((await store.mailboxes.get(user.id))!.highestModseq).toBe(modseqs[2]);
  // A failed unit leaves neither the item nor its modseq behind.
  const before = (await store.mailboxes.get(user.id))!.highestModseq;
  await expect(
    store.run(function* (tx) {
      yield* tx.items.create({ userId: user.id, folderId: inbox.id, type: 'email', receivedAt: NOW, subject: 'lost' }, NOW);
      throw new Error('abort');
    }),
  ).rejects.toThrow('abort');
  expect((await store.mailboxes.get(user.id))!.highestModseq).toBe(before);
  await store.close();
});

test('an item cannot be filed into another user\'s folder', async () => {
  const store = openSqliteStore(path.join(dir, 'p.db'));
  const alice = await seedUser(store);
  const bob = await store.users.create({ tenantId: alice.tenantId, username: 'bob', email: 'b@x', displayName: 'B', role: 'user', passwordHash: null }, NOW);
  await store.mailboxes.create(bob.id, NOW);
  const bobInbox = (await store.folders.byKind(bob.id, 'inbox'))!;
  await expect(store.items.create({ userId: alice.id, folderId: bobInbox.id, type: 'email', receivedAt: NOW, subject: 'x' }, NOW)).rejects.toThrow();
  expect((await store.folders.byKind(bob.id, 'inbox'))!.totalCount).toBe(0);
  await store.close();
});

test('onCommit announces each mailbox change after the commit, once per transaction, never for a rollback', async () => {
  const store = openSqliteStore(path.join(dir, 'p.db'));
  const user = await seedUser(store);
  const inbox = (await store.folders.byKind(user.id, 'inbox'))!;
  const archive = (await store.folders.byKind(user.id, 'archive'))!;
  const seen: Array<{ changes: unknown; committed: boolean }> = [];
  store.onCommit((changes) => seen.push({ changes, committed: !store.db.inTransaction }));
  const item = await store.run(function* (tx) {
    const a = yield* tx.items.create({ userId: user.id, folderId: inbox.id, type: 'email', receivedAt: NOW, subject: 'a' }, NOW);
    yield* tx.items.create({ userId: user.id, folderId: inbox.id, type: 'email', receivedAt: NOW, subject: 'b' }, NOW);
    expect(seen).toHaveLength(0); // not before the commit
    return a;
  });
  expect(seen).toEqual([{ changes: [{ userId: user.id, modseq: (await store.mailboxes.get(user.id))!.highestModseq, folderIds: [inbox.id], hierarchyChanged: false }], committed: true }]);
  await store.items.move(user.id, item.id, archive.id, NOW);
  expect((seen[1]!.changes as Array<{ folderIds: string[] }>)[0]!.folderIds.sort()).toEqual([inbox.id, archive.id].sort());
  await expect(store.run(function* (tx) {
    yield* tx.items.update(user.id, item.id, { isFlagged: true }, NOW);
    throw new Error('rollback');
  })).rejects.toThrow('rollback');
  expect(seen).toHaveLength(2);
  await store.close();
});
