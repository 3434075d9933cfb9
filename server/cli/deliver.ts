/**
 * Deliver one message over LMTP, as an MTA would: `npm run deliver -- --to alice@example.com [--to ...] [--from x]
 * [--host H --port P] [file.eml]` (standard input without a file). Host and port default to the server's
 * PIGEON_LMTP_HOST and PIGEON_LMTP_PORT. Prints one line per recipient: `delivered`, `duplicate` (the mailbox
 * already had this message, nothing new was stored) or the server's refusal.
 *
 * Exit status, as sendmail-style delivery agents use it: 0 when every recipient took the message (a duplicate
 * counts: the mailbox has it), 75 (EX_TEMPFAIL) when one was deferred (retrying later may work), 1 when one was
 * refused for good, 2 for bad usage or when the server cannot be reached.
 *
 * It speaks LMTP itself (RFC 2033: one reply per recipient after the message) instead of through nodemailer, whose
 * LMTP mode keeps only the last reply's text, so a duplicate could not be told from a delivery.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { loadConfig, ConfigError } from '../config';

const USAGE = 'usage: npm run deliver -- --to ADDRESS [--to ADDRESS ...] [--from ADDRESS] [--host HOST] [--port PORT] [FILE.eml]';
const EX_TEMPFAIL = 75;
const TIMEOUT_MS = 5 * 60_000;

export interface Reply {
  code: number;
  /** The whole reply, continuation lines joined with newlines. */
  text: string;
}

async function readInput(file: string | undefined): Promise<Buffer> {
  if (file) return fs.readFileSync(file);
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function fail(message: string): never {
  process.stderr.write(`deliver: ${message}\n`);
  process.exit(2);
}

/** A line-based LMTP client connection: `reply()` waits for the next complete (possibly multi-line) reply. */
class Connection {
  private buffered = '';
  private lines: string[] = [];
  private replies: Reply[] = [];
  private waiting: { resolve: (r: Reply) => void; reject: (e: Error) => void } | undefined;
  private closed: Error | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('latin1');
    socket.setTimeout(TIMEOUT_MS, () => socket.destroy(new Error(`no answer from the server in ${TIMEOUT_MS / 1000} s`)));
    socket.on('data', (chunk: string) => this.receive(chunk));
    socket.on('error', (err) => this.end(err));
    socket.on('close', () => this.end(new Error('the server closed the connection')));
  }

  static open(host: string, port: number): Promise<Connection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port });
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new Connection(socket));
      });
      socket.once('error', reject);
    });
  }

  private receive(chunk: string): void {
    this.buffered += chunk;
    let nl: number;
    while ((nl = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, nl).replace(/\r$/, '');
      this.buffered = this.buffered.slice(nl + 1);
      this.lines.push(line);
      // `250-...` continues a reply; `250 ...` (or a bare code) ends it.
      if (/^\d{3}(?: |$)/.test(line)) {
        const text = this.lines.map((l) => l.slice(4)).join('\n');
        this.lines = [];
        this.replies.push({ code: Number(line.slice(0, 3)), text: `${line.slice(0, 3)} ${text}`.trimEnd() });
      }
    }
    this.flush();
  }

  private flush(): void {
    if (!this.waiting) return;
    const next = this.replies.shift();
    if (next) {
      const { resolve } = this.waiting;
      this.waiting = undefined;
      resolve(next);
    } else if (this.closed) {
      const { reject } = this.waiting;
      this.waiting = undefined;
      reject(this.closed);
    }
  }

  private end(err: Error): void {
    this.closed ??= err;
    this.flush();
  }

  reply(): Promise<Reply> {
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.flush();
    });
  }

  async command(line: string): Promise<Reply> {
    this.socket.write(`${line}\r\n`);
    return this.reply();
  }

  write(data: Buffer): void {
    this.socket.write(data);
  }

  /** QUIT, then wait (briefly) for the server to close, so the session ends cleanly before the process exits. */
  quit(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.socket.destroy();
        resolve();
      }, 2000);
      this.socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.socket.end('QUIT\r\n');
    });
  }
}

/** The message as DATA sends it: CRLF line ends, lines starting with a dot doubled, ended by `.` on its own line. */
export function dotStuffed(raw: Buffer): Buffer {
  let text = raw.toString('latin1').replace(/\r?\n|\r/g, '\r\n');
  if (!text.endsWith('\r\n')) text += '\r\n';
  return Buffer.from(`${text.replace(/^\./gm, '..')}.\r\n`, 'latin1');
}

/** What one recipient's reply to the message means, as printed. */
export function outcome(reply: Reply): string {
  if (reply.code >= 200 && reply.code < 300) return /duplicate/i.test(reply.text) ? 'duplicate' : 'delivered';
  return reply.text;
}

/**
 * One LMTP transaction: a reply for every recipient, in the order given. A recipient refused at RCPT keeps that
 * refusal; a refusal of the sender or of DATA applies to every recipient still in the transaction.
 */
export async function deliver(options: { host: string; port: number; from: string; to: string[]; raw: Buffer }): Promise<Reply[]> {
  const conn = await Connection.open(options.host, options.port);
  try {
    const greeting = await conn.reply();
    if (greeting.code !== 220) return options.to.map(() => greeting);
    const lhlo = await conn.command(`LHLO ${os.hostname() || 'localhost'}`);
    if (lhlo.code !== 250) return options.to.map(() => lhlo);
    const extensions = new Set(lhlo.text.split('\n').slice(1).map((l) => l.split(' ')[0]!.toUpperCase()));
    const nonAscii = [options.from, ...options.to].some((a) => /[^\x00-\x7f]/.test(a));
    const params = [
      extensions.has('8BITMIME') && options.raw.some((b) => b > 0x7f) ? ' BODY=8BITMIME' : '',
      extensions.has('SMTPUTF8') && nonAscii ? ' SMTPUTF8' : '',
    ].join('');
    const mail = await conn.command(`MAIL FROM:<${options.from}>${params}`);
    if (mail.code >= 300) return options.to.map(() => mail);
    const replies: Reply[] = [];
    for (const address of options.to) replies.push(await conn.command(`RCPT TO:<${address}>`));
    const accepted = replies.flatMap((r, i) => (r.code >= 200 && r.code < 300 ? [i] : []));
    if (accepted.length === 0) return replies;
    const data = await conn.command('DATA');
    if (data.code !== 354) {
      for (const i of accepted) replies[i] = data;
      return replies;
    }
    conn.write(dotStuffed(options.raw));
    for (const i of accepted) replies[i] = await conn.reply();
    return replies;
  } finally {
    await conn.quit();
  }
}

async function main(): Promise<void> {
  let args;
  try {
    args = parseArgs({
      allowPositionals: true,
      options: {
        to: { type: 'string', multiple: true },
        from: { type: 'string', default: '' },
        host: { type: 'string' },
        port: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    fail(`${(err as Error).message}\n${USAGE}`);
  }
  const { values, positionals } = args;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const recipients = values.to ?? [];
  if (recipients.length === 0 || positionals.length > 1) fail(USAGE);
  const bad = [values.from, ...recipients].find((a) => /[<>\s]/.test(a));
  if (bad !== undefined) fail(`not a plain address: ${JSON.stringify(bad)}`);
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) fail(`bad configuration: ${err.message}`);
    throw err;
  }
  const port = values.port === undefined ? config.lmtpPort : Number(values.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`--port must be a port number (got ${values.port ?? port})`);
  const raw = await readInput(positionals[0]);
  if (raw.length === 0) fail('the message is empty');

  const host = values.host ?? config.lmtpHost;
  let replies: Reply[];
  try {
    replies = await deliver({ host, port, from: values.from, to: recipients, raw });
  } catch (err) {
    fail(`${host}:${port}: ${(err as Error).message}`);
  }
  recipients.forEach((recipient, i) => process.stdout.write(`${recipient}: ${outcome(replies[i]!)}\n`));
  const refused = replies.filter((r) => r.code >= 300);
  const temporary = refused.some((r) => r.code < 500);
  process.exit(refused.length === 0 ? 0 : temporary ? EX_TEMPFAIL : 1);
}

if (require.main === module) main().catch((err) => fail(err instanceof Error ? err.message : String(err)));
