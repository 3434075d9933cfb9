/**
 * Import (server/mail/import.ts): the streaming mbox reader, the fixture imported through the one delivery path
 * (threads, attachments, encodings, `>From ` lines, the change log), a second import that stores nothing, messages
 * that fail alone, the admin CLI (in-process, and once as its own process), and POST /admin/v1/users/{id}/messages.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import path from 'node:path';
import request from 'supertest';
import { openSqliteStore, type SqliteStore } from '../../server/store/sqlite';
import { mboxMessageStream, mboxMessages } from '../../server/content/mbox';
import { createDelivery, type Delivery } from '../../server/mail/delivery';
import { createImporter, emlDirectorySource, mboxFileSource, type ImportCounts } from '../../server/mail/import';
import { errors } from '../../server/errors';
import { ManualClock } from '../../server/clock';
import { runAdmin } from '../../server/cli/admin';
import type { Item, User } from '../../server/store/types';
import { FROM_LINE, PDF_BYTES, PNG_BYTES, QUOTED_FROM_LINE, SAMPLE_MBOX, sampleMbox, sampleMessages, sampleRaw } from '../../fixtures/import/generate';
import { buildTestApp, signIn, tempDir, type TestContext } from '../helpers/testApp';
import { expectToMatchSpec } from '../helpers/openapi';

const ROOT = path.resolve(__dirname, '../..');
const SAMPLES = sampleMessages();

async function collect(source: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const m of source) out.push(m);
  return out;
}

/** A minimal message with a unique Message-ID. */
const tiny = (n: number, extra = '') =>
  Buffer.from(`From: a@remote.test\r\nTo: b@example.test\r\nSubject: Note ${n}${extra}\r\nMessage-ID: <note-${n}@remote.test>\r\nDate: Tue, 01 Sep 2026 10:00:00 +0000\r\n\r\nBody ${n}\r\n`);

describe('mbox reading', () => {
  test('the committed fixture is what its generator writes', () => {
    expect(fs.readFileSync(SAMPLE_MBOX).equals(sampleMbox())).toBe(true);
  });

  test('the streaming reader splits exactly like the in-memory one, whatever the chunk size', async () => {
    const file = fs.readFileSync(SAMPLE_MBOX);
    const whole = mboxMessages(file);
    // The reader gives back each message as it was written, `>From ` un-quoted.
    expect(whole.map((m) => m.toString('utf8'))).toEqual(SAMPLES.map((s) => sampleRaw(s).toString('utf8')));
    for (const size of [1, 7, 61, 4096, file.length]) {
      const chunks = Array.from({ length: Math.ceil(file.length / size) }, (_, i) => file.subarray(i * size, (i + 1) * size));
      const streamed = await collect(mboxMessageStream(Readable.from(chunks)));
      expect({ size, equal: streamed.length === whole.length && streamed.every((m, i) => m.equals(whole[i]!)) }).toEqual({ size, equal: true });
    }
    // CRLF files, and a last line without its newline, too.
    const crlf = Buffer.from('From x\r\nA: 1\r\n\r\nbody\r\n>From y\r\nFrom z\r\nB: 2\r\n\r\nlast', 'latin1');
    expect((await collect(mboxMessageStream(Readable.from([crlf.subarray(0, 7), crlf.subarray(7)])))).map(String)).toEqual(mboxMessages(crlf).map(String));
    expect(mboxMessages(crlf).map(String)).toEqual(['A: 1\r\n\r\nbody\r\nFrom y\r\n', 'B: 2\r\n\r\nlast\r\n']);
  });

  test('a file that is not an mbox is refused, not read as nothing', async () => {
    await expect(collect(mboxMessageStream(Readable.from([Buffer.from('Subject: hi\n\nbody\n')])))).rejects.toThrow(/not an mbox/);
  });
});

describe('importing through the delivery path', () => {
  let dir: string;
  let store: SqliteStore;
  let delivery: Delivery;
  let alice: User;
  // After the fixture's dates: an import dates each message by its Date header, not by the clock.
  const clock = new ManualClock(Date.UTC(2026, 10, 1));

  beforeEach(async () => {
    dir = tempDir('pigeon-import-');
    store = openSqliteStore(path.join(dir, 'p.db'));
    const tenant = await store.tenants.create('T', clock.now());
    alice = await store.users.create({ tenantId: tenant.id, username: 'alice', email: 'alice@example.test', displayName: 'Alice', role: 'user', passwordHash: null }, clock.now());
    await store.mailboxes.create(alice.id, clock.now());
    delivery = createDelivery({ store, clock, duplicateWindowSeconds: 86400, threadSubjectWindowSeconds: 7 * 86400 });
  });
  afterEach(async () => {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const importer = (d: Delivery = delivery) => createImporter({ store, clock, delivery: d, maxMessageBytes: 64 * 1024 });
  const inbox = async () => (await store.folders.byKind(alice.id, 'inbox'))!;
  const modseq = async () => (await store.mailboxes.get(alice.id))!.highestModseq;
  const createdEntries = async () => store.sync.changes(alice.id, (await inbox()).id, 0, { receivedAt: -1, id: '' }, 10_000);
  async function inboxItems(): Promise<Item[]> {
    const ids = (await store.sync.range(alice.id, (await inbox()).id, { receivedAt: -1, id: '' }, { receivedAt: Number.MAX_SAFE_INTEGER, id: '' }, 'asc', 10_000)).map((i) => i.id);
    return store.items.byIds(alice.id, ids);
  }

  test('the fixture: every message stored once, dated by its Date header, threaded, with its attachments', async () => {
    const before = await modseq();
    const progress: ImportCounts[] = [];
    const report = await importer().importAll(await importer().resolveTarget(alice), mboxFileSource(SAMPLE_MBOX), { onProgress: (c) => progress.push(c) });
    expect(report).toEqual({ stored: SAMPLES.length, duplicates: 0, failed: [] });
    expect(progress[progress.length - 1]).toEqual({ processed: SAMPLES.length, stored: SAMPLES.length, duplicates: 0, failed: 0 });

    const items = await inboxItems();
    expect(items).toHaveLength(SAMPLES.length);
    expect((await inbox()).totalCount).toBe(SAMPLES.length);
    // One change-log entry, and one modseq, per stored message.
    expect((await modseq()) - before).toBe(SAMPLES.length);
    expect((await createdEntries()).map((c) => c.kind)).toEqual(Array(SAMPLES.length).fill('item'));

    const bySubject = (s: string) => {
      const found = items.filter((i) => i.subject === s);
      expect({ s, n: found.length }).toEqual({ s, n: 1 });
      return found[0]!;
    };
    expect(items.map((i) => i.receivedAt).sort()).toEqual(SAMPLES.map((s) => Date.parse(s.at)).sort());

    // Threads: In-Reply-To only; References only (three messages); subject only ("RE:" with no thread headers).
    const offsite = [bySubject('Quarterly planning offsite'), bySubject('Re: Quarterly planning offsite')];
    const budget = items.filter((i) => /Budget review draft$/.test(i.subject));
    const lunch = [bySubject('Lunch on Friday?'), bySubject('RE: Lunch on Friday?')];
    expect(budget).toHaveLength(3);
    for (const thread of [offsite, budget, lunch]) expect(new Set(thread.map((i) => i.conversationId)).size).toBe(1);
    const threads = [offsite[0]!.conversationId, budget[0]!.conversationId, lunch[0]!.conversationId];
    expect(new Set(threads).size).toBe(3);
    // Everything else is a conversation of its own.
    expect(new Set(items.map((i) => i.conversationId)).size).toBe(SAMPLES.length - 1 - 2 - 1);

    const contract = bySubject('Signed service agreement');
    expect(contract.hasAttachments).toBe(true);
    const [pdf] = await store.items.attachments(alice.id, contract.id);
    expect(pdf).toMatchObject({ name: 'service-agreement-signed.pdf', contentType: 'application/pdf', isInline: false, size: PDF_BYTES.length });
    expect((await store.blobs.read(alice.id, pdf!.blobId, 0, pdf!.size)).equals(PDF_BYTES)).toBe(true);

    const logo = bySubject('Our new logo');
    const [png] = await store.items.attachments(alice.id, logo.id);
    expect(png).toMatchObject({ contentType: 'image/png', isInline: true, contentId: 'logo@vendor.test', size: PNG_BYTES.length });
    expect((await store.blobs.read(alice.id, png!.blobId, 0, png!.size)).equals(PNG_BYTES)).toBe(true);
    expect(logo.hasAttachments).toBe(false); // an image shown in place is not an attachment to the reader
    expect((await store.items.body(alice.id, logo.id))!.html).toContain('cid:logo@vendor.test');

    const cruise = bySubject('Invitation: autumn harbour cruise');
    expect(await store.items.body(alice.id, cruise.id)).toEqual({ text: null, html: expect.stringContaining('sunset cruise') });
    expect(cruise.preview).toContain('Autumn harbour cruise');

    const gruesse = bySubject('Grüße aus München und Köln');
    expect(gruesse.from).toEqual({ name: 'Jürgen Müller', address: 'juergen@partner.test' });

    expect(bySubject('Maintenance window tonight').internetMessageId).toBeNull();

    const brochure = (await store.items.body(alice.id, bySubject('Print run for the brochure').id))!.text!;
    expect(brochure.split(/\r?\n/)).toEqual(expect.arrayContaining([FROM_LINE, QUOTED_FROM_LINE]));

    // The stored MIME is the message's own bytes.
    const mime = contract.mimeBlobId!;
    const written = SAMPLES.find((s) => s.lines.includes('Subject: Signed service agreement'))!;
    expect((await store.blobs.read(alice.id, mime, 0, (await store.blobs.size(alice.id, mime))!)).equals(sampleRaw(written))).toBe(true);
  });

  test('importing the same file again stores nothing: every message is a duplicate, no change is logged', async () => {
    const target = await importer().resolveTarget(alice);
    await importer().importAll(target, mboxFileSource(SAMPLE_MBOX));
    const count = (await inboxItems()).length;
    const before = await modseq();
    const again = await importer().importAll(target, mboxFileSource(SAMPLE_MBOX), { batchSize: 5 });
    expect(again).toEqual({ stored: 0, duplicates: SAMPLES.length, failed: [] });
    expect(await inboxItems()).toHaveLength(count);
    expect(await modseq()).toBe(before);
    expect(await createdEntries()).toHaveLength(SAMPLES.length);
  });

  test('a message that cannot be imported fails alone; the rest of its batch is stored', async () => {
    // A delivery that refuses one message from inside the unit of work: the whole batch rolls back, then is retried
    // one message at a time.
    const picky: Delivery = {
      ...delivery,
      *deliverIn(tx, m, t, o, now) {
        if (m.parsed.subject.includes('poison')) throw errors.invalidRequest('refused by the test');
        return yield* delivery.deliverIn(tx, m, t, o, now);
      },
    };
    const source = [tiny(1), Buffer.alloc(64 * 1024 + 1, 'x'), tiny(2, ' poison'), Buffer.alloc(0), tiny(3), tiny(1)];
    const before = await modseq();
    const report = await importer(picky).importAll(await importer().resolveTarget(alice), Readable.from(source));
    expect(report).toEqual({
      stored: 2,
      duplicates: 1,
      failed: [
        { index: 1, reason: expect.stringMatching(/exceeds 65536 bytes/) },
        { index: 2, reason: 'refused by the test' },
        { index: 3, reason: expect.stringMatching(/empty/) },
      ],
    });
    // Exactly the two stored messages left a trace: nothing of the rolled-back batch remains.
    expect((await modseq()) - before).toBe(2);
    expect((await inboxItems()).map((i) => i.subject).sort()).toEqual(['Note 1', 'Note 3']);
  });

  test('a store failure ends the import instead of being reported per message', async () => {
    // eslint-disable-next-line require-yield
    const broken: Delivery = { ...delivery, *deliverIn() { throw new Error('disk on fire'); } };
    await expect(importer(broken).importAll(await importer().resolveTarget(alice), Readable.from([tiny(1)]))).rejects.toThrow('disk on fire');
  });

  test('a directory of .eml files is read in name order; other files are ignored; --folder picks the folder', async () => {
    const emlDir = path.join(dir, 'eml');
    fs.mkdirSync(emlDir);
    fs.writeFileSync(path.join(emlDir, '10.eml'), tiny(10));
    fs.writeFileSync(path.join(emlDir, '02.eml'), Buffer.alloc(0));
    fs.writeFileSync(path.join(emlDir, '01.EML'), tiny(1));
    fs.writeFileSync(path.join(emlDir, 'notes.txt'), 'not mail');
    fs.mkdirSync(path.join(emlDir, 'sub.eml'));
    const source = emlDirectorySource(emlDir);
    expect(source.count).toBe(3);
    const target = await importer().resolveTarget(alice, 'archive');
    const report = await importer().importAll(target, source.messages);
    expect(report).toEqual({ stored: 2, duplicates: 0, failed: [{ index: 1, reason: expect.stringMatching(/empty/) }] });
    expect((await store.folders.byKind(alice.id, 'archive'))!.totalCount).toBe(2);
    expect((await inbox()).totalCount).toBe(0);

    await expect(importer().resolveTarget(alice, 'no-such-folder')).rejects.toThrow(/No such folder/);
    await expect(importer().resolveTarget(alice, 'calendar')).rejects.toThrow(/mail folders/);
  });
});

describe('admin CLI import', () => {
  let dir: string;
  let saved: NodeJS.ProcessEnv;
  beforeEach(async () => {
    dir = tempDir('pigeon-import-cli-');
    saved = process.env;
    process.env = { PIGEON_DATA_DIR: dir };
    const store = openSqliteStore(path.join(dir, 'pigeon.db'));
    const tenant = await store.tenants.create('T', Date.now());
    const erin = await store.users.create({ tenantId: tenant.id, username: 'erin', email: 'erin@example.test', displayName: 'Erin', role: 'user', passwordHash: null }, Date.now());
    await store.mailboxes.create(erin.id, Date.now());
    await store.close();
  });
  afterEach(() => {
    process.env = saved;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const countIn = async (kind: 'inbox' | 'archive') => {
    const store = openSqliteStore(path.join(dir, 'pigeon.db'));
    try {
      return (await store.folders.byKind((await store.users.byUsername('erin'))!.id, kind))!.totalCount;
    } finally {
      await store.close();
    }
  };

  async function admin(...argv: string[]) {
    const out: string[] = [];
    const code = await runAdmin(argv, (l) => out.push(l));
    return { code, out: out.join('\n') };
  }

  test('its own process: imports the fixture with a summary, then finds only duplicates', async () => {
    const run = () =>
      spawnSync(process.execPath, ['--import', 'tsx', 'server/cli/admin.ts', 'import', '--user', 'erin', '--mbox', SAMPLE_MBOX], {
        cwd: ROOT,
        env: { PATH: process.env.PATH, HOME: saved.HOME, PIGEON_DATA_DIR: dir },
        encoding: 'utf8',
        timeout: 60_000,
      });
    const first = run();
    expect({ status: first.status, stderr: first.stderr }).toEqual({ status: 0, stderr: '' });
    expect(first.stdout).toMatch(new RegExp(`^imported into erin/Inbox: ${SAMPLES.length} stored, 0 duplicates, 0 failed \\(${SAMPLES.length} messages in [\\d.]+ s\\)\\n$`));
    const second = run();
    expect(second.status).toBe(0);
    expect(second.stdout).toContain(`0 stored, ${SAMPLES.length} duplicates, 0 failed`);
    expect(await countIn('inbox')).toBe(SAMPLES.length);
  }, 60_000);

  test('a failed message: exit 1 with the message listed; unknown user or folder: exit 2; bad arguments: usage', async () => {
    const emlDir = path.join(dir, 'eml');
    fs.mkdirSync(emlDir);
    fs.writeFileSync(path.join(emlDir, 'a.eml'), tiny(1));
    fs.writeFileSync(path.join(emlDir, 'b.eml'), '');
    const failed = await admin('import', '--user', 'erin@example.test', '--eml', emlDir, '--folder', 'archive');
    expect(failed.code).toBe(1);
    expect(failed.out).toMatch(/^message #2 failed: The message is empty\.\nimported into erin\/Archive: 1 stored, 0 duplicates, 1 failed/);
    expect(await countIn('archive')).toBe(1);

    expect((await admin('import', '--user', 'ghost', '--eml', emlDir)).code).toBe(2);
    expect((await admin('import', '--user', 'erin', '--eml', emlDir, '--folder', 'nope')).code).toBe(2);
    await expect(admin('import', '--user', 'erin')).rejects.toThrow(/exactly one of --mbox/);
    await expect(admin('import', '--user', 'erin', '--mbox', path.join(dir, 'missing.mbox'))).rejects.toThrow(/no such file/);
    fs.writeFileSync(path.join(dir, 'plain.txt'), 'Subject: not an mbox\n');
    expect((await admin('import', '--user', 'erin', '--mbox', path.join(dir, 'plain.txt'))).code).toBe(1);
    expect(await countIn('inbox')).toBe(0);
  });
});

describe('POST /admin/v1/users/{id}/messages', () => {
  let ctx: TestContext;
  let admin: Record<string, string>;
  let user: Record<string, string>;
  const PW = 'import-password-1';
  const LIMIT = 8 * 1024;

  beforeAll(async () => {
    ctx = await buildTestApp({ maxMessageBytes: LIMIT });
    await ctx.users.addUser({ username: 'root', password: PW, role: 'admin' });
    await ctx.users.addUser({ username: 'alice', password: PW, role: 'user' });
    await ctx.users.addUser({ username: 'bob', password: PW, role: 'user' });
    admin = { Authorization: `Bearer ${(await signIn(ctx, 'root', PW)).access_token}` };
    user = { Authorization: `Bearer ${(await signIn(ctx, 'alice', PW)).access_token}` };
  });
  afterAll(() => ctx.close());

  const ids = new Map<string, string>();
  beforeAll(async () => {
    for (const name of ['alice', 'bob']) ids.set(name, (await ctx.store.users.byUsername(name))!.id);
  });
  const idOf = (name: string) => ids.get(name)!;
  const url = (name: string, query = '') => `/admin/v1/users/${idOf(name)}/messages${query}`;
  const post = (path: string, body: Buffer, type = 'message/rfc822', headers = admin) =>
    request(ctx.app).post(path).set(headers).set('Content-Type', type).send(body);
  const TEMPLATE = '/admin/v1/users/{id}/messages';

  test('201 stored (dated by its Date header, audited), then 200 duplicate with the same id', async () => {
    const raw = sampleRaw(SAMPLES[0]!);
    const first = await post(url('alice'), raw);
    expect(first.status).toBe(201);
    expectToMatchSpec(first, 'post', TEMPLATE);
    const inbox = (await ctx.store.folders.byKind(idOf('alice'), 'inbox'))!;
    expect(first.body).toEqual({ id: expect.any(String), status: 'stored', folderId: inbox.id });
    const item = (await ctx.store.items.byId(idOf('alice'), first.body.id))!;
    expect(item).toMatchObject({ subject: 'Quarterly planning offsite', receivedAt: Date.parse(SAMPLES[0]!.at) });
    const audit = await ctx.store.audit.list((await ctx.store.users.byUsername('root'))!.tenantId, { limit: 5 });
    expect(audit[0]).toMatchObject({ action: 'message.import', targetType: 'user', targetId: idOf('alice'), details: { itemId: first.body.id } });

    const again = await post(url('alice'), raw);
    expect(again.status).toBe(200);
    expectToMatchSpec(again, 'post', TEMPLATE);
    expect(again.body).toEqual({ id: first.body.id, status: 'duplicate', folderId: inbox.id });
    expect((await ctx.store.folders.byId(idOf('alice'), inbox.id))!.totalCount).toBe(1);
  });

  test('?folderId= picks the folder; another user\'s folder is 404 folderNotFound', async () => {
    const archive = (await ctx.store.folders.byKind(idOf('alice'), 'archive'))!;
    const res = await post(url('alice', `?folderId=${archive.id}`), tiny(42));
    expect(res.status).toBe(201);
    expect(res.body.folderId).toBe(archive.id);
    const bobsInbox = (await ctx.store.folders.byKind(idOf('bob'), 'inbox'))!;
    const wrong = await post(url('alice', `?folderId=${bobsInbox.id}`), tiny(43));
    expect(wrong.status).toBe(404);
    expect(wrong.body.code).toBe('folderNotFound');
    expectToMatchSpec(wrong, 'post', TEMPLATE);
    expect((await ctx.store.folders.byId(idOf('bob'), bobsInbox.id))!.totalCount).toBe(0);
  });

  test('415 for another type, 413 beyond PIGEON_MAX_MESSAGE_BYTES, 400 when empty or with unknown parameters, 404 for an unknown user, 403 for a non-admin, 401 without a token', async () => {
    const count = async () => (await ctx.store.folders.byKind(idOf('alice'), 'inbox'))!.totalCount;
    const before = await count();
    const cases: Array<[number, string, request.Test]> = [
      [415, 'unsupportedMediaType', post(url('alice'), tiny(50), 'text/plain')],
      [413, 'payloadTooLarge', post(url('alice'), Buffer.concat([tiny(51), Buffer.alloc(LIMIT, 'x')]))],
      [400, 'invalidRequest', post(url('alice'), Buffer.alloc(0))],
      [400, 'invalidRequest', post(url('alice', '?folder=inbox'), tiny(52))],
      [404, 'notFound', post('/admin/v1/users/no-such-user/messages', tiny(53))],
      [403, 'forbidden', post(url('alice'), tiny(54), 'message/rfc822', user)],
      [401, 'unauthorized', post(url('alice'), tiny(55), 'message/rfc822', {})],
    ];
    for (const [status, code, pending] of cases) {
      const res = await pending;
      expect({ status: res.status, code: res.body.code }).toEqual({ status, code });
      expectToMatchSpec(res, 'post', TEMPLATE);
    }
    expect(await count()).toBe(before);
  });
});
