/**
 * LMTP delivery. Against the real process (nodemailer's LMTP transport as the MTA, items checked by sync over
 * HTTPS): fields of a delivered message, unknown and mixed recipients with per-recipient replies, duplicates, the
 * 250 only after commit (kill -9 right after it, restart, the item is there) and the size limit. In process, with a
 * delivery path made to fail: the 451/452/554 replies, the trace headers, and a shutdown that lets a delivery under
 * way finish.
 */
import https from 'node:https';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { spawnSync } from 'node:child_process';
import { ROOT, startServer, type RunningServer } from '../helpers/server';
import { buildTestApp, tempDir, type TestContext } from '../helpers/testApp';
import { openSqliteStore } from '../../server/store/sqlite';
import { createUserAdmin } from '../../server/admin/users';
import { systemClock } from '../../server/clock';
import { createLogger } from '../../server/logger';
import { startLmtp, type LmtpHandle } from '../../server/lmtp/server';
import type { Delivery } from '../../server/mail/delivery';
import { StoreFull } from '../../server/store/errors';

const PASSWORDS = { alice: 'alice-password-1', bob: 'bob-password-1' };

async function seedUsers(dir: string) {
  const store = openSqliteStore(path.join(dir, 'pigeon.db'));
  const users = createUserAdmin(store, systemClock);
  await users.addUser({ username: 'alice', password: PASSWORDS.alice, role: 'user', email: 'alice@example.com' });
  await users.addUser({ username: 'bob', password: PASSWORDS.bob, role: 'user', email: 'bob@example.com' });
  await store.close();
}

function send(port: number, to: string[], raw: string | Buffer) {
  const transport = nodemailer.createTransport({ lmtp: true, host: '127.0.0.1', port, ignoreTLS: true });
  return transport.sendMail({ envelope: { from: 'sender@example.org', to }, raw }).finally(() => transport.close());
}

/** A raw LMTP session: the greeting, then one (possibly multi-line) reply per command. */
async function chat(port: number, commands: string[]): Promise<string[]> {
  const socket = net.connect(port, '127.0.0.1');
  let buffer = '';
  let wake = () => {};
  socket.setEncoding('utf8').on('data', (chunk: string) => {
    buffer += chunk;
    wake();
  });
  const nextReply = () =>
    new Promise<string>((resolve) => {
      const check = () => {
        const end = /^\d{3} .*\r\n/m.exec(buffer);
        if (!end) return void (wake = check);
        const cut = end.index + end[0].length;
        resolve(buffer.slice(0, cut));
        buffer = buffer.slice(cut);
      };
      check();
    });
  const replies = [await nextReply()];
  for (const command of commands) {
    socket.write(`${command}\r\n`);
    replies.push(await nextReply());
  }
  socket.end('QUIT\r\n');
  return replies;
}

/** A message with a fresh Message-ID; with `attachment`, a multipart/mixed one carrying a small PDF. */
function message(subject: string, opts: { attachment?: boolean; id?: string } = {}) {
  const id = opts.id ?? `<${Date.now()}.${Math.random().toString(36).slice(2)}@example.org>`;
  const head = [`From: Sender Name <sender@example.org>`, 'To: Alice <alice@example.com>', `Subject: ${subject}`, `Message-ID: ${id}`, 'Date: Sun, 29 Nov 2026 07:00:00 +0000', 'MIME-Version: 1.0'];
  const text = 'Hello Alice, the quarterly figures are attached.';
  if (!opts.attachment) return { id, raw: [...head, 'Content-Type: text/plain; charset=utf-8', '', text, ''].join('\r\n') };
  const pdf = Buffer.from('%PDF-1.4 pretend report\n').toString('base64');
  const body = ['Content-Type: multipart/mixed; boundary="b1"', '', '--b1', 'Content-Type: text/plain; charset=utf-8', '', text,
    '--b1', 'Content-Type: application/pdf; name="report.pdf"', 'Content-Disposition: attachment; filename="report.pdf"',
    'Content-Transfer-Encoding: base64', '', pdf, '--b1--', ''];
  return { id, raw: [...head, ...body].join('\r\n') };
}

describe('LMTP into the running server', () => {
  let server: RunningServer;
  let dataDir: string;

  function call(method: string, p: string, headers: Record<string, string> = {}, body?: string) {
    return new Promise<{ status: number; body: any }>((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port: server.port, method, path: p, headers, ca: server.cert, servername: 'localhost', agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode!, body: text ? JSON.parse(text) : undefined }));
      });
      req.once('error', reject);
      req.end(body);
    });
  }

  /** A registered device of the user, and that user's inbox id. */
  async function device(user: keyof typeof PASSWORDS) {
    const deviceId = `e2e-lmtp-${user}-${Math.random().toString(36).slice(2, 12)}`;
    const form = `grant_type=password&client_id=pigeon-app&username=${user}&password=${PASSWORDS[user]}&device_id=${deviceId}`;
    const token = await call('POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, form);
    expect(token.status).toBe(200);
    const headers = { authorization: `Bearer ${token.body.access_token}`, 'x-device-id': deviceId };
    expect((await call('POST', '/v1/devices', { ...headers, 'content-type': 'application/json' }, '{"friendlyName":"e2e"}')).status).toBe(201);
    const folders = await call('GET', '/v1/folders/sync', headers);
    const inbox = folders.body.created.find((f: { kind: string }) => f.kind === 'inbox').id as string;
    return { headers, inbox };
  }

  /** Every item of the inbox, by a fresh initial sync. */
  async function inboxItems(user: keyof typeof PASSWORDS): Promise<any[]> {
    const { headers, inbox } = await device(user);
    const res = await call('GET', `/v1/folders/${inbox}/items/sync?maxChanges=500`, headers);
    expect(res.status).toBe(200);
    return res.body.created;
  }
  const withId = (items: any[], id: string) => items.filter((i) => i.internetMessageId === id);

  beforeAll(async () => {
    dataDir = tempDir('pigeon-e2e-lmtp-');
    await seedUsers(dataDir);
    server = await startServer({ PIGEON_DATA_DIR: dataDir, PIGEON_MAIL_HOSTNAME: 'mx.pigeon.test' });
  });
  afterAll(async () => {
    await server?.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a message delivered by an LMTP client is in the next sync with its fields', async () => {
    expect(server.lmtpPort).toEqual(expect.any(Number));
    const before = Date.now();
    const m = message('Quarterly figures', { attachment: true });
    const info = await send(server.lmtpPort!, ['alice@example.com'], m.raw);
    expect(info.accepted).toEqual(['alice@example.com']);
    expect(info.response).toMatch(/^250 2\.0\.0 <alice@example\.com> delivered/);

    const [item] = withId(await inboxItems('alice'), m.id);
    expect(item).toMatchObject({
      type: 'email',
      subject: 'Quarterly figures',
      from: { name: 'Sender Name', address: 'sender@example.org' },
      to: [{ name: 'Alice', address: 'alice@example.com' }],
      internetMessageId: m.id,
      hasAttachments: true,
      isRead: false,
    });
    expect(item.preview).toContain('the quarterly figures are attached');
    expect(item.attachments).toEqual([expect.objectContaining({ name: 'report.pdf', contentType: 'application/pdf', isInline: false })]);
    expect(item.conversationId).toEqual(expect.any(String));
    const received = Date.parse(item.receivedAt);
    expect(received).toBeGreaterThanOrEqual(before - 1000);
    expect(received).toBeLessThanOrEqual(Date.now());

    // The delivery is logged with its size and outcome, never its contents.
    const logged = server.logs.find((l) => l.msg === 'lmtp delivery' && l.messageId === m.id);
    expect(logged).toMatchObject({ outcome: 'stored', recipients: 1, stored: 1, bytes: expect.any(Number), ms: expect.any(Number) });
    expect(JSON.stringify(server.logs)).not.toContain('Quarterly figures');
  });

  test('an unknown recipient is refused with 550 5.1.1 and nothing is stored', async () => {
    const m = message('For nobody');
    const refused = await send(server.lmtpPort!, ['nobody@example.com'], m.raw).catch((err) => err);
    expect(refused.code).toBe('EENVELOPE');
    expect(refused.rejectedErrors.map((e: { response: string }) => e.response)).toEqual(['550 5.1.1 <nobody@example.com>: user unknown']);
    expect(withId(await inboxItems('alice'), m.id)).toHaveLength(0);
    expect(withId(await inboxItems('bob'), m.id)).toHaveLength(0);
    expect(server.logs.some((l) => l.messageId === m.id)).toBe(false);
  });

  test('several recipients: one copy per mailbox and one reply per recipient', async () => {
    const m = message('To the team');
    const info = await send(server.lmtpPort!, ['alice@example.com', 'nobody@example.com', 'bob+lists@example.com'], m.raw);
    expect(info.accepted).toEqual(['alice@example.com', 'bob+lists@example.com']);
    expect(info.rejected).toEqual(['nobody@example.com']);
    expect((info as any).rejectedErrors[0].response).toBe('550 5.1.1 <nobody@example.com>: user unknown');
    expect(withId(await inboxItems('alice'), m.id)).toHaveLength(1);
    expect(withId(await inboxItems('bob'), m.id)).toHaveLength(1);
    expect(server.logs.find((l) => l.messageId === m.id)).toMatchObject({ recipients: 2, stored: 2, outcome: 'stored' });
  });

  test('the same Message-ID delivered again is acknowledged as a duplicate and not stored twice', async () => {
    const m = message('Sent twice');
    expect((await send(server.lmtpPort!, ['alice@example.com'], m.raw)).response).toMatch(/^250 .* delivered$/);
    const again = await send(server.lmtpPort!, ['alice@example.com'], m.raw);
    expect(again.accepted).toEqual(['alice@example.com']);
    expect(again.response).toMatch(/^250 2\.0\.0 .*duplicate/);
    expect(withId(await inboxItems('alice'), m.id)).toHaveLength(1);
  });

  test('npm run deliver: one line per recipient, exit 1 when one was refused', async () => {
    const dir = tempDir('pigeon-e2e-deliver-');
    const m = message('Through the deliver script');
    fs.writeFileSync(path.join(dir, 'message.eml'), m.raw);
    const run = spawnSync(
      process.execPath,
      ['--import', 'tsx', 'server/cli/deliver.ts', '--to', 'bob@example.com', '--to', 'nobody@example.com', '--from', 'sender@example.org', '--port', String(server.lmtpPort), path.join(dir, 'message.eml')],
      { cwd: ROOT, env: { PATH: process.env.PATH }, encoding: 'utf8', timeout: 30_000 },
    );
    fs.rmSync(dir, { recursive: true, force: true });
    expect(run.stdout.split('\n').filter(Boolean)).toEqual(['bob@example.com: delivered', 'nobody@example.com: 550 5.1.1 <nobody@example.com>: user unknown']);
    expect(run.status).toBe(1);
    expect(withId(await inboxItems('bob'), m.id)).toHaveLength(1);
  });

  test('the 250 comes after the commit: killed right after it and restarted, the server has the message; then the size limit', async () => {
    const m = message('Survives a crash');
    const info = await send(server.lmtpPort!, ['alice@example.com'], m.raw);
    expect(info.accepted).toEqual(['alice@example.com']);
    server.proc.kill('SIGKILL');
    expect((await server.exited).signal).toBe('SIGKILL');
    await server.stop();

    // The restart also has a small message size limit, for the over-size cases below.
    server = await startServer({ PIGEON_DATA_DIR: dataDir, PIGEON_MAX_MESSAGE_BYTES: '4096' });
    expect(withId(await inboxItems('alice'), m.id)).toHaveLength(1);

    const big = message(`Too big ${'x'.repeat(8000)}`);
    const streamed = await send(server.lmtpPort!, ['alice@example.com', 'bob@example.com'], big.raw);
    expect(streamed.accepted).toEqual([]);
    expect((streamed as any).rejectedErrors.map((e: { response: string }) => e.response.slice(0, 9))).toEqual(['552 5.3.4', '552 5.3.4']);
    const declared = await chat(server.lmtpPort!, ['LHLO client.example.org', 'MAIL FROM:<sender@example.org> SIZE=10000']);
    expect(declared[1]).toMatch(/^250[ -]SIZE 4096\r$/m);
    expect(declared[2]).toMatch(/^552 5\.3\.4 /);
    expect(withId(await inboxItems('alice'), big.id)).toHaveLength(0);
  }, 60_000);
});

describe('LMTP failure replies and shutdown (in process)', () => {
  let ctx: TestContext;
  let lmtp: LmtpHandle;
  let failure: 'none' | 'full' | 'broken' | 'unparsable' | 'slow' = 'none';
  const logLines: string[] = [];
  /** Called when a slow parse begins: the message is in and its delivery is under way. */
  let parsing: (() => void) | undefined;

  beforeAll(async () => {
    ctx = await buildTestApp({ mailHostname: 'mx.pigeon.test' });
    await ctx.users.addUser({ username: 'alice', password: PASSWORDS.alice, role: 'user', email: 'alice@example.com' });
    await ctx.users.addUser({ username: 'bob', password: PASSWORDS.bob, role: 'user', email: 'bob@example.com' });
    const real = ctx.built.delivery;
    // The real delivery path, made to fail the way a full disk, a broken store or unparsable bytes would.
    const delivery: Delivery = {
      ...real,
      async prepare(raw) {
        if (failure === 'unparsable') throw new Error('cannot parse');
        if (failure === 'slow') {
          parsing?.();
          await new Promise((r) => setTimeout(r, 400));
        }
        return real.prepare(raw);
      },
      async deliverGrouped(prepared, targets, options) {
        if (failure === 'full') throw new StoreFull();
        if (failure === 'broken') throw new Error('disk I/O error');
        return real.deliverGrouped(prepared, targets, options);
      },
    };
    const log = createLogger({ logLevel: 'info', logPretty: false }, { write: (line: string) => void logLines.push(line) });
    lmtp = await startLmtp({ config: { ...ctx.config, lmtpHost: '127.0.0.1', lmtpPort: 0 }, delivery, clock: ctx.clock, log });
  });
  afterAll(async () => {
    await lmtp?.close(1000);
    await ctx?.close();
  });

  const itemCount = () => (ctx.store.db.prepare('SELECT count(*) AS n FROM items').get() as { n: number }).n;
  const replies = (info: any) => [...info.accepted.map(() => info.response.slice(0, 9)), ...(info.rejectedErrors ?? []).map((e: any) => e.response.slice(0, 9))];

  test.each([
    ['a full disk', 'full', '452 4.3.1'],
    ['a store error', 'broken', '451 4.3.0'],
    ['an unparsable message', 'unparsable', '554 5.6.0'],
  ] as const)('%s is answered for every recipient (%s → %s) and stores nothing', async (_label, mode, expected) => {
    failure = mode;
    const before = itemCount();
    const info = await send(lmtp.port, ['alice@example.com', 'bob@example.com'], message(`failing ${mode}`).raw);
    failure = 'none';
    expect(info.accepted).toEqual([]);
    expect(replies(info)).toEqual([expected, expected]);
    expect(itemCount()).toBe(before);
  });

  test('Return-Path and Received are prepended to the stored message', async () => {
    const m = message('Traced');
    await send(lmtp.port, ['alice@example.com'], m.raw);
    const both = message('Traced for two');
    await send(lmtp.port, ['alice@example.com', 'bob@example.com'], both.raw);
    const mimeOf = async (id: string) => {
      const row = ctx.store.db.prepare('SELECT user_id AS userId, mime_blob_id AS blob FROM items WHERE internet_message_id = ? LIMIT 1').get(id) as { userId: string; blob: string };
      return (await ctx.store.blobs.read(row.userId, row.blob, 0, (await ctx.store.blobs.size(row.userId, row.blob))!)).toString('utf8');
    };
    const single = await mimeOf(m.id);
    expect(single.startsWith('Return-Path: <sender@example.org>\r\nReceived: from ')).toBe(true);
    expect(single).toMatch(/^Received: from [^\r\n]+ \(\[127\.0\.0\.1\]\)\r\n\tby mx\.pigeon\.test \(Pigeon\) with LMTP id \S+\r\n\tfor <alice@example\.com>; \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n/m);
    expect(single).toContain(m.raw);
    const multi = await mimeOf(both.id);
    expect(multi).toMatch(/with LMTP id \S+; \w{3}, /);
    expect(multi).not.toContain('\tfor <');
  });

  test('close lets a delivery under way commit and answer, then refuses new transactions', async () => {
    failure = 'slow';
    const m = message('In flight at shutdown');
    const started = new Promise<void>((resolve) => (parsing = resolve));
    const pending = send(lmtp.port, ['alice@example.com'], m.raw);
    await started;
    const closing = lmtp.close(5000);
    const info = await pending;
    expect(info.response).toMatch(/^250 /);
    expect(await closing).toEqual({ forced: false });
    failure = 'none';
    expect(ctx.store.db.prepare('SELECT count(*) AS n FROM items WHERE internet_message_id = ?').get(m.id)).toEqual({ n: 1 });
    await expect(new Promise((resolve, reject) => net.connect(lmtp.port, '127.0.0.1').once('connect', resolve).once('error', reject))).rejects.toThrow(/ECONNREFUSED/);
  });
});
