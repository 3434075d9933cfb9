/**
 * How the LMTP listener reads its input.
 * - Clients that write whole transactions back to back without waiting for replies (issue 12, defect 7). Such a
 *   client is outside RFC 2920's rules (DATA must be the last command of a group), but every command it sent must
 *   still be answered, in order, and every message it sent stored: MAIL 250, RCPT 250 per recipient, DATA 354, one
 *   250 per recipient after the final dot, and 221 for QUIT.
 * - The parser repairs of server/lmtp/parser.ts, on smtp-server's parser alone: `continue()` keeps a continuation
 *   saved while it runs (the library's loses it), and the copy-free data phase reads what the library reads: for
 *   every way the input is cut into chunks, the same message bytes, byte count and commands after the final dot,
 *   with no per-chunk copy.
 */
import net from 'node:net';
import { SMTPStream } from 'smtp-server/lib/smtp-stream';
import { buildTestApp, type TestContext } from '../helpers/testApp';
import { createLogger } from '../../server/logger';
import { startLmtp, type LmtpHandle } from '../../server/lmtp/server';
import { feedDataWithoutCopies, resumeWithoutLosingTheNext } from '../../server/lmtp/parser';

let ctx: TestContext;
let lmtp: LmtpHandle;

beforeAll(async () => {
  ctx = await buildTestApp({ mailHostname: 'mx.pigeon.test' });
  for (const name of ['alice', 'bob', 'carol']) {
    await ctx.users.addUser({ username: name, password: `${name}-password-1`, role: 'user', email: `${name}@example.com` });
  }
  const log = createLogger({ logLevel: 'error', logPretty: false }, { write: () => {} });
  lmtp = await startLmtp({ config: { ...ctx.config, lmtpHost: '127.0.0.1', lmtpPort: 0 }, delivery: ctx.built.delivery, clock: ctx.clock, log });
});
afterAll(async () => {
  await lmtp?.close(1000);
  await ctx?.close();
});

/** The final line of every reply the server sent (the code and the start of its text), until it closed or went quiet. */
async function burst(greeting: string[], payload: string, quietMs = 3000): Promise<string[]> {
  const socket = net.connect(lmtp.port, '127.0.0.1');
  let text = '';
  const finals = () => text.split('\r\n').filter((line) => /^\d{3} /.test(line));
  let wake = () => {};
  socket.setEncoding('latin1').on('data', (chunk: string) => {
    text += chunk;
    wake();
  });
  const until = (count: number) =>
    new Promise<void>((resolve) => {
      const check = () => (finals().length >= count ? resolve() : void (wake = check));
      check();
    });
  await until(1); // the greeting
  for (const line of greeting) {
    const had = finals().length;
    socket.write(`${line}\r\n`);
    await until(had + 1);
  }
  // Everything else in one write; then wait for the server to close (after 221) or to stay quiet for quietMs.
  socket.write(payload);
  await new Promise<void>((resolve) => {
    let timer = setTimeout(resolve, quietMs);
    socket.on('data', () => {
      clearTimeout(timer);
      timer = setTimeout(resolve, quietMs);
    });
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  socket.destroy();
  return finals().slice(1 + greeting.length).map((line) => line.slice(0, 3));
}

function transaction(tag: string, to: string[]) {
  const id = `<${tag}.${Date.now()}.${Math.random().toString(36).slice(2)}@example.org>`;
  const body = ['From: <sender@example.org>', `To: ${to.map((a) => `<${a}>`).join(', ')}`, `Subject: pipelined ${tag}`, `Message-ID: ${id}`, '', `message ${tag}`, ''].join('\r\n');
  const text = ['MAIL FROM:<sender@example.org>', ...to.map((a) => `RCPT TO:<${a}>`), 'DATA', `${body}.`, ''].join('\r\n');
  const replies = ['250', ...to.map(() => '250'), '354', ...to.map(() => '250')];
  return { id, text, replies };
}

const stored = (id: string) => (ctx.store.db.prepare('SELECT count(*) AS n FROM items WHERE internet_message_id = ?').get(id) as { n: number }).n;

test.each([
  ['three transactions and QUIT', 3, ['alice@example.com']],
  ['two transactions and QUIT', 2, ['alice@example.com']],
  ['three transactions with three recipients each, and QUIT', 3, ['alice@example.com', 'bob@example.com', 'carol@example.com']],
] as const)('%s in one write: every command is answered and every message stored', async (_label, count, to) => {
  const transactions = Array.from({ length: count }, (_, i) => transaction(`t${i + 1}`, [...to]));
  const replies = await burst(['LHLO mta.example.org'], `${transactions.map((t) => t.text).join('')}QUIT\r\n`);
  expect(replies).toEqual([...transactions.flatMap((t) => t.replies), '221']);
  for (const t of transactions) expect(stored(t.id)).toBe(to.length);
});

test('LHLO, three transactions and QUIT all in the one write', async () => {
  const transactions = Array.from({ length: 3 }, (_, i) => transaction(`lhlo${i + 1}`, ['alice@example.com', 'bob@example.com']));
  const replies = await burst([], `LHLO mta.example.org\r\n${transactions.map((t) => t.text).join('')}QUIT\r\n`);
  expect(replies).toEqual(['250', ...transactions.flatMap((t) => t.replies), '221']);
  for (const t of transactions) expect(stored(t.id)).toBe(2);
});

describe("smtp-server's parser with handlers that answer synchronously", () => {
  /** Three messages and QUIT in one chunk; every command answered at once, `continue()` once each message is read. */
  async function commandsSeen(repaired: boolean): Promise<string[]> {
    const parser = new SMTPStream();
    if (repaired) resumeWithoutLosingTheNext(parser);
    const seen: string[] = [];
    parser.oncommand = (line: Buffer, next?: () => void) => {
      const command = line.toString('latin1');
      seen.push(command);
      if (command === 'DATA') {
        const stream = parser.startDataMode(1 << 20);
        stream.resume();
        stream.once('end', () => setImmediate(() => parser.continue()));
      }
      next?.();
    };
    const message = (n: number) => `MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nSubject: ${n}\r\n\r\nbody ${n}\r\n.\r\n`;
    parser.write(Buffer.from(`${message(1)}${message(2)}${message(3)}QUIT\r\n`));
    await new Promise((resolve) => setTimeout(resolve, 200));
    return seen;
  }
  const all = [...Array.from({ length: 3 }, () => ['MAIL FROM:<a@example.org>', 'RCPT TO:<b@example.com>', 'DATA']).flat(), 'QUIT'];

  test('the library alone stops after the second message (the stall of issue 12, defect 7)', async () => {
    expect(await commandsSeen(false)).toEqual(all.slice(0, 6));
  });
  test('repaired, every command is read', async () => {
    expect(await commandsSeen(true)).toEqual(all);
  });
});

describe('the copy-free data phase reads exactly what smtp-server reads', () => {
  /** Feeds `chunks` to a parser in DATA mode; returns the message, its counted size and the commands after it. */
  async function parse(chunks: Buffer[], copyFree: boolean, maxBytes = 1 << 20) {
    const parser = new SMTPStream();
    if (copyFree) feedDataWithoutCopies(parser);
    const commands: string[] = [];
    parser.oncommand = (line: Buffer, next?: () => void) => {
      commands.push(line.toString('latin1'));
      next?.();
    };
    const stream = parser.startDataMode(maxBytes);
    const parts: Buffer[] = [];
    stream.on('data', (part: Buffer) => parts.push(Buffer.from(part)));
    const ended = new Promise<void>((resolve) => stream.once('end', resolve));
    void ended.then(() => parser.continue());
    for (const chunk of chunks) parser.write(chunk);
    await ended;
    await new Promise<void>((resolve) => parser.end(resolve));
    return { message: Buffer.concat(parts).toString('latin1'), bytes: stream.byteLength, exceeded: stream.sizeExceeded, commands };
  }

  const filler = 'x'.repeat(37);
  // Dot-stuffed transmissions (and a few that are not stuffed as they should be), each ending in the final dot and
  // followed by pipelined commands.
  const TRANSMISSIONS = [
    `Subject: dots\r\n\r\n..leading dot\r\n${filler}\r\n...two\r\n..\r\nend\r\n.\r\nQUIT\r\n`,
    `..first line is a dot line\r\n${filler}.\r\n.${filler}\r\n\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n`,
    `.\r\nNOOP\r\n`,
    `..\r\n.\r\nRSET\r\n`,
    `${filler}\n.\n${filler}\r\n.\n\r\n.x\r\n..\r\n.\r\nQUIT`,
    `${filler}${filler}\r\n\r\n\r\n.\r\n.\r\nDATA\r\n`,
    `a\r\n..\r\n...\r\n....\r\n${filler}\r\n.\r\n`,
  ];

  /** A small seeded generator, so a failure names a reproducible cut. */
  function random(seed: number) {
    return () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  }
  function cut(text: string, at: number[]): Buffer[] {
    const bytes = Buffer.from(text, 'latin1');
    const points = [0, ...at.sort((a, b) => a - b), bytes.length];
    return points.slice(1).map((end, i) => bytes.subarray(points[i], end)).filter((b) => b.length > 0);
  }

  test.each(TRANSMISSIONS.map((t, i) => [i, t] as const))('transmission %i, cut at every byte and at random', async (_i, text) => {
    const cuts: number[][] = [[]];
    for (let at = 1; at < text.length; at++) cuts.push([at]);
    const next = random(text.length);
    for (let n = 0; n < 150; n++) cuts.push(Array.from({ length: 2 + Math.floor(next() * 6) }, () => 1 + Math.floor(next() * (text.length - 1))));
    for (const at of cuts) {
      const chunks = cut(text, at);
      const [mine, library] = [await parse(chunks, true), await parse(chunks, false)];
      if (JSON.stringify(mine) !== JSON.stringify(library)) throw new Error(`cut at ${JSON.stringify(at)}: ${JSON.stringify(mine)} != ${JSON.stringify(library)}`);
    }
    // The size limit counts the same bytes.
    const tight = await parse(cut(text, [7, 19]), true, 20);
    expect(tight).toEqual(await parse(cut(text, [7, 19]), false, 20));
  });

  test('a large message in 64 KiB chunks is passed on without copying each chunk', async () => {
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const chunks = [...Array.from({ length: 32 }, () => chunk), Buffer.from('\r\n.\r\nQUIT\r\n')];
    const concat = jest.spyOn(Buffer, 'concat');
    try {
      const mine = await parse(chunks, true, 64 * 1024);
      const copiesMine = concat.mock.calls.length;
      concat.mockClear();
      const library = await parse(chunks, false, 64 * 1024);
      const copiesLibrary = concat.mock.calls.length;
      expect(mine).toEqual(library);
      expect(mine.exceeded).toBe(true);
      // parse() itself joins the parts once; the library copies every chunk after the first.
      expect(copiesMine).toBe(1);
      expect(copiesLibrary).toBeGreaterThanOrEqual(32);
    } finally {
      concat.mockRestore();
    }
  });
});
