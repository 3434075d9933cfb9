/**
 * The content layer on a real SQLite file: chunked blobs and their reference counts, full-text search limited to
 * its owner, the 0003 → 0004 migration of existing blobs, and the delivery path's duplicate and threading rules.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { openSqliteStore, type SqliteStore } from '../../server/store/sqlite';
import { migrate } from '../../server/store/sqlite/db';
import { BLOB_CHUNK_BYTES } from '../../server/store/sqlite/content';
import { createDelivery } from '../../server/mail/delivery';
import { ManualClock } from '../../server/clock';
import { tempDir } from '../helpers/testApp';

let dir: string;
let store: SqliteStore;
const clock = new ManualClock(Date.UTC(2026, 5, 1));
beforeEach(() => {
  dir = tempDir('pigeon-content-');
  store = openSqliteStore(path.join(dir, 'p.db'));
});
afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function user(name: string) {
  const tenant = await store.tenants.create('T', clock.now());
  const u = await store.users.create(
    { tenantId: tenant.id, username: name, email: `${name}@example.test`, displayName: name, role: 'user', passwordHash: null },
    clock.now(),
  );
  await store.mailboxes.create(u.id, clock.now());
  return u;
}

function message(opts: { id?: string; subject?: string; body?: string; refs?: string; attachment?: Buffer; from?: string }): Buffer {
  const head = [
    `From: ${opts.from ?? 'Bob Sender <bob@remote.test>'}`,
    'To: someone@example.test',
    `Subject: ${opts.subject ?? 'Hello'}`,
    'Date: Mon, 01 Jun 2026 10:00:00 +0000',
    ...(opts.id ? [`Message-ID: ${opts.id}`] : []),
    ...(opts.refs ? [`References: ${opts.refs}`, `In-Reply-To: ${opts.refs.split(' ').pop()}`] : []),
    'MIME-Version: 1.0',
  ];
  if (!opts.attachment) return Buffer.from([...head, 'Content-Type: text/plain; charset=utf-8', '', opts.body ?? 'Body text', ''].join('\r\n'));
  return Buffer.from(
    [
      ...head,
      'Content-Type: multipart/mixed; boundary="b1"',
      '',
      '--b1',
      'Content-Type: text/plain; charset=utf-8',
      '',
      opts.body ?? 'See attached',
      '--b1',
      'Content-Type: application/octet-stream',
      'Content-Disposition: attachment; filename="data.bin"',
      'Content-Transfer-Encoding: base64',
      '',
      opts.attachment.toString('base64').replace(/.{76}/g, '$&\r\n'),
      '--b1--',
      '',
    ].join('\r\n'),
  );
}

const delivery = () => createDelivery({ store, clock, duplicateWindowSeconds: 3600, threadSubjectWindowSeconds: 7 * 86400 });
const blobCount = () => (store.db.prepare('SELECT count(*) AS n FROM blobs').get() as { n: number }).n;
const chunkCount = () => (store.db.prepare('SELECT count(*) AS n FROM blob_chunks').get() as { n: number }).n;

test('a blob larger than a chunk is stored in chunks and read back exactly, in any range', async () => {
  const owner = await user('alice');
  const bytes = Buffer.alloc(BLOB_CHUNK_BYTES * 2 + 1234);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + (i >> 9)) & 0xff;
  const id = await store.blobs.put(owner.id, bytes, clock.now());
  expect(await store.blobs.size(owner.id, id)).toBe(bytes.length);
  expect(chunkCount()).toBe(3);
  for (const [a, b] of [
    [0, bytes.length],
    [0, 1],
    [BLOB_CHUNK_BYTES - 3, BLOB_CHUNK_BYTES + 3],
    [bytes.length - 10, bytes.length],
    [BLOB_CHUNK_BYTES, BLOB_CHUNK_BYTES * 2],
  ] as const) {
    expect((await store.blobs.read(owner.id, id, a, b)).equals(bytes.subarray(a, b))).toBe(true);
  }
});

test('blobs are shared by content and freed when the last item referring to them is deleted', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  const d = delivery();
  const prepared = await d.prepare(message({ id: '<shared@x>', attachment: Buffer.alloc(300_000, 1) }));
  const results = await d.deliver(prepared, [{ userId: alice.id }, { userId: bob.id }], { duplicates: 'live' });
  expect(results.map((r) => r.status)).toEqual(['stored', 'stored']);
  // One raw message and one attachment, each stored once although two mailboxes hold them.
  expect(blobCount()).toBe(2);
  await store.items.delete(alice.id, results[0]!.itemId, clock.now());
  expect(blobCount()).toBe(2);
  await store.items.delete(bob.id, results[1]!.itemId, clock.now());
  expect(blobCount()).toBe(0);
  expect(chunkCount()).toBe(0);
});

test('deleting a folder (a cascade) releases the blobs of its items and their search entries', async () => {
  const alice = await user('alice');
  const folder = await store.folders.create(alice.id, { displayName: 'Projects', parentId: null }, clock.now());
  const d = delivery();
  await d.deliver(await d.prepare(message({ id: '<p1@x>', subject: 'Quarterly zebra report', attachment: Buffer.alloc(10, 2) })), [{ userId: alice.id, folderId: folder.id }], {
    duplicates: 'live',
  });
  expect(await store.search.query(alice.id, ['zebra'], { limit: 10 })).toHaveLength(1);
  await store.folders.delete(alice.id, folder.id, clock.now());
  expect(blobCount()).toBe(0);
  expect(await store.search.query(alice.id, ['zebra'], { limit: 10 })).toHaveLength(0);
  expect((store.db.prepare('SELECT count(*) AS n FROM search_docs').get() as { n: number }).n).toBe(0);
});

test('search matches subject, sender and body, ranks subject first, and never crosses mailboxes', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  const d = delivery();
  const put = async (userId: string, m: Parameters<typeof message>[0]) =>
    (await d.deliver(await d.prepare(message(m)), [{ userId }], { duplicates: 'live' }))[0]!.itemId;
  const inSubject = await put(alice.id, { id: '<1@x>', subject: 'Budget for the aquarium', body: 'numbers inside' });
  const inBody = await put(alice.id, { id: '<2@x>', subject: 'Misc', body: 'we talked about the aquarium once' });
  const bobs = await put(bob.id, { id: '<3@x>', subject: 'Aquarium secrets', body: 'bob only' });
  await put(alice.id, { id: '<4@x>', subject: 'From Carol', from: 'Carol Quincy <carol@remote.test>' });

  const hits = (await store.search.query(alice.id, ['aquarium'], { limit: 10 })).map((h) => h.itemId);
  expect(hits).toEqual([inSubject, inBody]);
  expect(hits).not.toContain(bobs);
  expect(await store.search.query(alice.id, ['quincy'], { limit: 10 })).toHaveLength(1);
  expect(await store.search.query(alice.id, ['aqua'], { limit: 10 })).toHaveLength(2); // the last word is a prefix
  // Words that look like FTS syntax are just words.
  expect(await store.search.query(alice.id, ['owner', ':', 'NEAR(', '"', '*', 'OR'], { limit: 10 })).toEqual([]);
  expect((await store.search.query(bob.id, ['aquarium'], { limit: 10 })).map((h) => h.itemId)).toEqual([bobs]);
});

test('a second live delivery of one Message-ID to one folder within the window is a duplicate; after it, a new copy', async () => {
  const alice = await user('alice');
  const d = delivery();
  const m = await d.prepare(message({ id: '<dup@x>' }));
  const first = (await d.deliver(m, [{ userId: alice.id }], { duplicates: 'live' }))[0]!;
  const again = (await d.deliver(m, [{ userId: alice.id }], { duplicates: 'live' }))[0]!;
  expect(again).toEqual({ ...first, status: 'duplicate' });
  clock.advance(3601_000);
  expect((await d.deliver(m, [{ userId: alice.id }], { duplicates: 'live' }))[0]!.status).toBe('stored');
  // An import looks at any age, and a message without a Message-ID is matched by its bytes.
  expect((await d.deliver(m, [{ userId: alice.id }], { duplicates: 'import' }))[0]!.status).toBe('duplicate');
  const anonymous = await d.prepare(message({ subject: 'no id' }));
  expect((await d.deliver(anonymous, [{ userId: alice.id }], { duplicates: 'import' }))[0]!.status).toBe('stored');
  expect((await d.deliver(anonymous, [{ userId: alice.id }], { duplicates: 'import' }))[0]!.status).toBe('duplicate');
});

test('threading: replies join their root, a late root joins its replies, a bare "Re:" joins by subject', async () => {
  const alice = await user('alice');
  const d = delivery();
  const put = async (m: Parameters<typeof message>[0]) => {
    const r = (await d.deliver(await d.prepare(message(m)), [{ userId: alice.id }], { duplicates: 'live' }))[0]!;
    return (await store.items.byId(alice.id, r.itemId))!.conversationId;
  };
  // The reply arrives first, naming only its parent (a message we never saw).
  const reply = await put({ id: '<r1@x>', subject: 'Re: Plans', refs: '<root@x>' });
  const root = await put({ id: '<root@x>', subject: 'Plans' });
  expect(root).toBe(reply);
  // A deeper reply naming only its direct parent joins through the stored parent.
  const deeper = await put({ id: '<r2@x>', subject: 'Re: Re: Plans', refs: '<r1@x>' });
  expect(deeper).toBe(root);
  // No thread headers, reply prefix: joined by subject. Same subject without a prefix: its own conversation.
  expect(await put({ id: '<r3@x>', subject: 'RE: plans' })).toBe(root);
  expect(await put({ id: '<other@x>', subject: 'Plans' })).not.toBe(root);
  // Outside the subject window: a new conversation.
  clock.advance(8 * 86400_000);
  expect(await put({ id: '<r4@x>', subject: 'Re: Plans' })).not.toBe(root);
});

test('migration 0004 moves blobs stored inline into chunks and counts their references', () => {
  const file = path.join(dir, 'old.db');
  const db = new Database(file);
  const only = path.join(dir, 'migrations-0003');
  fs.mkdirSync(only);
  const all = path.resolve(__dirname, '../../schema/sqlite');
  for (const f of fs.readdirSync(all).filter((f) => f < '0004')) fs.copyFileSync(path.join(all, f), path.join(only, f));
  migrate(db, only);
  db.exec(`INSERT INTO tenants VALUES ('t', 'T', 0);
    INSERT INTO users (id, tenant_id, username, email, display_name, role, created_at, updated_at) VALUES ('u', 't', 'a', 'a@x', 'A', 'user', 0, 0);
    INSERT INTO mailboxes (user_id, epoch, created_at) VALUES ('u', 'e', 0);
    INSERT INTO folders (id, user_id, parent_id, display_name, kind, modseq, created_modseq, content_modseq, created_at) VALUES ('f', 'u', NULL, 'Inbox', 'inbox', 1, 1, 1, 0);
    INSERT INTO blobs (id, size, data, created_at) VALUES ('b1', 3, x'414243', 0), ('orphan', 1, x'00', 0);
    INSERT INTO items (id, user_id, folder_id, type, received_at, modseq, placed_modseq, change_key, subject, mime_blob_id, body_text, created_at)
      VALUES ('i', 'u', 'f', 'email', 0, 1, 1, '1', 'Old zeppelin', 'b1', 'old body', 0);`);
  migrate(db);
  expect(db.prepare('SELECT id, size, ref_count FROM blobs').all()).toEqual([{ id: 'b1', size: 3, ref_count: 1 }]);
  expect((db.prepare("SELECT data FROM blob_chunks WHERE blob_id = 'b1'").get() as { data: Buffer }).data.toString()).toBe('ABC');
  expect(db.prepare("SELECT d.item_id FROM items_fts JOIN search_docs d ON d.doc_id = items_fts.rowid WHERE items_fts MATCH 'zeppelin'").all()).toEqual([
    { item_id: 'i' },
  ]);
  db.close();
});

test('grouped deliveries in one turn commit once; a bad one in the group fails alone', async () => {
  const alice = await user('alice');
  const d = delivery();
  const commits: number[] = [];
  const off = store.onCommit((changes) => commits.push(changes.length));
  const messages = await Promise.all([1, 2, 3, 4, 5].map((i) => d.prepare(message({ id: `<group${i}@x>`, subject: `g${i}` }))));
  const results = await Promise.all(messages.map((m) => d.deliverGrouped(m, [{ userId: alice.id }], { duplicates: 'live' })));
  expect(results.map((r) => r[0]!.status)).toEqual(['stored', 'stored', 'stored', 'stored', 'stored']);
  expect(commits).toEqual([1]); // one commit (one mailbox changed) for five messages

  commits.length = 0;
  const more = await Promise.all([6, 7].map((i) => d.prepare(message({ id: `<group${i}@x>` }))));
  const outcomes = await Promise.allSettled([
    d.deliverGrouped(more[0]!, [{ userId: alice.id }], { duplicates: 'live' }),
    d.deliverGrouped(more[1]!, [{ userId: alice.id, folderId: 'no-such-folder' }], { duplicates: 'live' }),
  ]);
  off();
  expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected']);
  expect(await store.items.findDuplicate(alice.id, (await store.folders.byKind(alice.id, 'inbox'))!.id, { internetMessageId: '<group6@x>', mimeSha256: '' }, 0)).toBeDefined();
});
