/**
 * Deliver one message over LMTP, as an MTA would: `npm run deliver -- --to alice@example.com [--to ...] [--from x]
 * [--host H --port P] [file.eml]` (standard input without a file). Host and port default to the server's
 * PIGEON_LMTP_HOST and PIGEON_LMTP_PORT. Prints one line per recipient with the server's answer.
 *
 * Exit status, as sendmail-style delivery agents use it: 0 when every recipient took the message, 75 (EX_TEMPFAIL)
 * when one was deferred (retrying later may work), 1 when one was refused for good, 2 for bad usage or when the
 * server cannot be reached.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import nodemailer from 'nodemailer';
import { loadConfig, ConfigError } from '../config';

const USAGE = 'usage: npm run deliver -- --to ADDRESS [--to ADDRESS ...] [--from ADDRESS] [--host HOST] [--port PORT] [FILE.eml]';
const EX_TEMPFAIL = 75;

interface Refusal {
  recipient?: string;
  response?: string;
  responseCode?: number;
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

async function main(): Promise<void> {
  let args;
  try {
    args = parseArgs({
      allowPositionals: true,
      options: { to: { type: 'string', multiple: true }, from: { type: 'string', default: '' }, host: { type: 'string' }, port: { type: 'string' } },
    });
  } catch (err) {
    fail(`${(err as Error).message}\n${USAGE}`);
  }
  const { values, positionals } = args;
  const recipients = values.to ?? [];
  if (recipients.length === 0 || positionals.length > 1) fail(USAGE);
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

  const transport = nodemailer.createTransport({ lmtp: true, host: values.host ?? config.lmtpHost, port, secure: false, ignoreTLS: true });
  let accepted: string[] = [];
  let refusals: Refusal[] = [];
  try {
    const info = await transport.sendMail({ envelope: { from: values.from, to: recipients }, raw });
    accepted = info.accepted.map(String);
    refusals = (info as { rejectedErrors?: Refusal[] }).rejectedErrors ?? [];
  } catch (err) {
    const e = err as Error & { code?: string; response?: string; rejectedErrors?: Refusal[] };
    // Every recipient refused (or the sender): the error lists them; anything else means no transaction happened.
    if (e.code !== 'EENVELOPE' && e.code !== 'EMESSAGE') fail(`${e.message}${e.response ? ` (${e.response})` : ''}`);
    refusals = e.rejectedErrors?.length ? e.rejectedErrors : recipients.map((recipient) => ({ recipient, response: e.response }));
  } finally {
    transport.close();
  }

  for (const recipient of accepted) process.stdout.write(`${recipient}: delivered\n`);
  for (const r of refusals) process.stdout.write(`${r.recipient ?? '?'}: ${r.response ?? 'refused'}\n`);
  const temporary = refusals.some((r) => (r.responseCode ?? Number(r.response?.slice(0, 3))) < 500);
  process.exit(refusals.length === 0 ? 0 : temporary ? EX_TEMPFAIL : 1);
}

main().catch((err) => fail(err instanceof Error ? err.message : String(err)));
