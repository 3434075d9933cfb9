/**
 * `npm run deliver` (server/cli/deliver.ts) against an LMTP listener over a real store: the sample message the
 * README delivers, a second delivery of it reported as `duplicate` (nothing new stored), one line and one exit
 * status per recipient, and the message's bytes arriving intact (line ends, leading dots).
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import fs from 'node:fs';
import { ROOT } from '../helpers/server';
import { buildTestApp, type TestContext } from '../helpers/testApp';
import { createLogger } from '../../server/logger';
import { startLmtp, type LmtpHandle } from '../../server/lmtp/server';
import { deliver, dotStuffed } from '../../server/cli/deliver';

const SAMPLE = path.join(ROOT, 'fixtures/mail/sample.eml');

let ctx: TestContext;
let lmtp: LmtpHandle;

beforeAll(async () => {
  ctx = await buildTestApp();
  // The sample is addressed to the demo tenant's alice, as in the README.
  await ctx.users.addUser({ username: 'alice', password: 'alice-password-1', role: 'user', email: 'alice@demo.pigeon.test' });
  await ctx.users.addUser({ username: 'bob', password: 'bob-password-1', role: 'user', email: 'bob@demo.pigeon.test' });
  const log = createLogger({ logLevel: 'silent', logPretty: false });
  lmtp = await startLmtp({ config: { ...ctx.config, lmtpHost: '127.0.0.1', lmtpPort: 0 }, delivery: ctx.built.delivery, clock: ctx.clock, log });
});
afterAll(async () => {
  await lmtp?.close(1000);
  await ctx?.close();
});

/** The CLI as its own process (asynchronously: the LMTP server answering it runs in this one). */
function cli(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'server/cli/deliver.ts', ...args], { cwd: ROOT, env: { PATH: process.env.PATH } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    child.once('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const count = (messageId: string) =>
  (ctx.store.db.prepare('SELECT count(*) AS n FROM items WHERE internet_message_id = ?').get(messageId) as { n: number }).n;

test('the shipped sample is delivered, then reported as a duplicate the second time, with nothing new stored', async () => {
  const args = ['--to', 'alice@demo.pigeon.test', '--from', 'someone@example.org', '--port', String(lmtp.port), SAMPLE];
  const first = await cli(...args);
  expect(first).toEqual({ status: 0, stdout: 'alice@demo.pigeon.test: delivered\n', stderr: '' });
  expect(count('<sample-1@example.org>')).toBe(1);

  const second = await cli(...args);
  expect(second).toEqual({ status: 0, stdout: 'alice@demo.pigeon.test: duplicate\n', stderr: '' });
  expect(count('<sample-1@example.org>')).toBe(1);
}, 30_000);

test('one line per recipient in the order given: new, duplicate and refused; exit 1 for the refusal', async () => {
  const raw = fs.readFileSync(SAMPLE, 'utf8').replace('<sample-1@example.org>', '<sample-2@example.org>');
  const file = path.join(ctx.dir, 'two.eml');
  fs.writeFileSync(file, raw);
  // alice gets it first on her own, so the mixed delivery is a duplicate for her and new for bob.
  expect((await cli('--to', 'alice@demo.pigeon.test', '--port', String(lmtp.port), file)).status).toBe(0);
  const run = await cli('--to', 'bob@demo.pigeon.test', '--to', 'nobody@demo.pigeon.test', '--to', 'alice@demo.pigeon.test', '--port', String(lmtp.port), file);
  expect(run.stdout.split('\n').filter(Boolean)).toEqual([
    'bob@demo.pigeon.test: delivered',
    'nobody@demo.pigeon.test: 550 5.1.1 <nobody@demo.pigeon.test>: user unknown',
    'alice@demo.pigeon.test: duplicate',
  ]);
  expect(run.status).toBe(1);
  expect(count('<sample-2@example.org>')).toBe(2);
}, 30_000);

test('--help prints the usage and exits 0; no recipient is a usage error (2)', async () => {
  const help = await cli('--help');
  expect(help.status).toBe(0);
  expect(help.stdout).toMatch(/^usage: npm run deliver -- --to ADDRESS/);
  const none = await cli(SAMPLE);
  expect(none.status).toBe(2);
  expect(none.stderr).toMatch(/usage:/);
}, 30_000);

test('the stored message has the bytes sent: LF or CRLF line ends, lines that start with a dot', async () => {
  expect(dotStuffed(Buffer.from('a\n.b\n.\nc')).toString()).toBe('a\r\n..b\r\n..\r\nc\r\n.\r\n');
  const body = ['From: x@example.org', 'To: bob@demo.pigeon.test', 'Subject: dots', 'Message-ID: <dots-1@example.org>', '', '.starts with a dot', '.', '..two', 'end', ''];
  const [reply] = await deliver({ host: '127.0.0.1', port: lmtp.port, from: 'x@example.org', to: ['bob@demo.pigeon.test'], raw: Buffer.from(body.join('\n')) });
  expect(reply!.code).toBe(250);
  const row = ctx.store.db.prepare("SELECT user_id AS userId, mime_blob_id AS blob FROM items WHERE internet_message_id = '<dots-1@example.org>'").get() as { userId: string; blob: string };
  const stored = (await ctx.store.blobs.read(row.userId, row.blob, 0, (await ctx.store.blobs.size(row.userId, row.blob))!)).toString('utf8');
  expect(stored.endsWith(body.join('\r\n'))).toBe(true);
});
