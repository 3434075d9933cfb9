/**
 * The LMTP listener (RFC 2033) an MTA such as Postfix delivers into, built on smtp-server in LMTP mode over the one
 * delivery path. Like Dovecot's LMTP it is meant for loopback: no AUTH, no STARTTLS.
 *
 * Reply rules:
 * - RCPT TO an address no enabled local user has: `550 5.1.1`, and nothing is stored for it.
 * - A message over PIGEON_MAX_MESSAGE_BYTES (declared with SIZE or counted while streaming): `552 5.3.4`.
 * - After DATA, one reply per accepted recipient, sent only once `delivery.deliverGrouped` has committed every copy
 *   in one transaction: `250` (also for a duplicate, which is not stored again), `451 4.3.0` when the store failed,
 *   `452 4.3.1` when it is out of space, `554 5.6.0` when the message cannot be parsed at all.
 */
import { StoreFull } from '../store/errors';
import { performance } from 'node:perf_hooks';
import { SMTPServer, type SMTPServerAddress, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server';
import type { Logger } from 'pino';
import type { Clock } from '../clock';
import type { Config } from '../config';
import type { Delivery, DeliveryResult, DeliveryTarget, PreparedMessage } from '../mail/delivery';
import type { User } from '../store/types';
import { feedDataWithoutCopies, resumeWithoutLosingTheNext } from './parser';
import { traceHeaders } from './trace';

/** Postfix delivers with up to 20 parallel connections by default; a few more leave room for a second client. */
export const LMTP_MAX_CONNECTIONS = 32;

export interface LmtpDeps {
  config: Pick<Config, 'lmtpHost' | 'lmtpPort' | 'mailHostname' | 'maxMessageBytes'>;
  delivery: Delivery;
  clock: Clock;
  log: Logger;
  /**
   * Tenants' delivery rules of information protection (server/protection/service.ts `protectOnDelivery`): the
   * protected copy each recipient gets instead of the message, by user id (none: everyone gets the message).
   */
  protectOnDelivery?: (message: PreparedMessage, recipients: User[], mailFrom: string) => Promise<Map<string, PreparedMessage>>;
}

export interface LmtpHandle {
  port: number;
  /** Refuses new transactions, lets deliveries in progress commit and answer (up to `deadlineMs`), then disconnects. */
  close(deadlineMs: number): Promise<{ forced: boolean }>;
}

/** An smtp-server reply. The text starts with its enhanced status code (RFC 3463), which `withOwnStatusCodes` keeps. */
function reply(code: number, text: string): Error & { responseCode: number } {
  return Object.assign(new Error(text), { responseCode: code });
}

const ENHANCED_CODE = /^([245])\.\d{1,3}\.\d{1,3} /;

/**
 * smtp-server derives the enhanced status code from the reply code alone (452 always becomes 4.2.2, "mailbox
 * full"), so a full disk could not answer 4.3.1. Replies whose text already starts with a code of the same class are
 * sent as they are; every other reply keeps the library's code.
 */
function withOwnStatusCodes(connection: { send(code: number, data?: string | string[] | null, context?: string | false): void }) {
  const send = connection.send.bind(connection);
  connection.send = (code, data, context) => {
    const own = typeof data === 'string' ? ENHANCED_CODE.exec(data) : null;
    send(code, data, own && own[1] === String(code)[0] ? false : context);
  };
}

async function readMessage(stream: SMTPServerDataStream, limit: number): Promise<Buffer | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    // Past the limit the rest is only drained: the reply will be 552 and memory stays bounded.
    if (stream.sizeExceeded || size + chunk.length > limit) {
      size = limit + 1;
      continue;
    }
    chunks.push(chunk);
    size += chunk.length;
  }
  return stream.sizeExceeded || size > limit ? null : Buffer.concat(chunks, size);
}

/**
 * Runs an smtp-server handler callback on the next turn of the event loop instead of synchronously.
 *
 * smtp-server's `continue()` lost the continuation of a message pipelined behind another when the next transaction
 * ran synchronously up to its final dot (see `resumeWithoutLosingTheNext` in ./parser): with MAIL and RCPT answered
 * synchronously, three back-to-back transactions got two answered, and with two, QUIT went unanswered. The library's
 * default handlers answer with setImmediate, which is why it did not stall on its own. Deferring RCPT (and MAIL)
 * keeps that chain asynchronous whatever the parser's internals: no transaction reaches DATA without an accepted RCPT
 * after the previous one ended.
 */
function later<A extends unknown[]>(callback: (...args: A) => void): (...args: A) => void {
  return (...args) => void setImmediate(() => callback(...args));
}

function storeFailure(err: unknown) {
  return err instanceof StoreFull
    ? reply(452, '4.3.1 Insufficient system storage, try again later')
    : reply(451, '4.3.0 Local error in processing, try again later');
}

export async function startLmtp(deps: LmtpDeps): Promise<LmtpHandle> {
  const { config, delivery, clock, log } = deps;
  /** Who each accepted RCPT TO resolved to, so DATA delivers to exactly the users RCPT accepted. */
  const resolved = new WeakMap<SMTPServerAddress, User[]>();
  const inFlight = new Set<Promise<void>>();
  let stopping = false;
  let transactions = 0;

  /**
   * Delivery when a tenant's rule protects some recipients' copies: each distinct message (the original and each
   * protected variant) is delivered to its own recipients, and the results are put back in recipient order.
   */
  async function deliverVariants(original: PreparedMessage, variants: Map<string, PreparedMessage>, users: User[], targets: DeliveryTarget[]): Promise<DeliveryResult[]> {
    const groups = new Map<PreparedMessage, number[]>();
    users.forEach((u, i) => {
      const message = variants.get(u.id) ?? original;
      const group = groups.get(message);
      if (group) group.push(i);
      else groups.set(message, [i]);
    });
    const results: DeliveryResult[] = new Array(users.length);
    await Promise.all(
      [...groups].map(async ([message, indices]) => {
        const delivered = await delivery.deliverGrouped(message, indices.map((i) => targets[i]!), { duplicates: 'live' });
        indices.forEach((target, k) => (results[target] = delivered[k]!));
      }),
    );
    return results;
  }

  async function receive(stream: SMTPServerDataStream, session: SMTPServerSession, started: number) {
    const rcpts = session.envelope.rcptTo;
    const summary: Record<string, unknown> = { lmtp: session.id, recipients: rcpts.length };
    const finish = (outcome: string, extra: Record<string, unknown> = {}) =>
      log.info({ ...summary, ...extra, outcome, ms: Math.round(performance.now() - started) }, 'lmtp delivery');

    let raw: Buffer | null;
    try {
      raw = await readMessage(stream, config.maxMessageBytes);
    } catch (err) {
      // The client went away mid-message: nobody is left to answer, and nothing was stored.
      finish('aborted', { error: (err as Error).message });
      throw reply(451, '4.3.0 Message not received in full');
    }
    summary.bytes = stream.byteLength;
    if (!raw) {
      finish('tooLarge');
      throw reply(552, `5.3.4 Message exceeds the size limit of ${config.maxMessageBytes} bytes`);
    }

    const trace = traceHeaders({
      mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
      recipients: rcpts.map((r) => r.address),
      clientName: session.hostNameAppearsAs || '',
      clientAddress: session.remoteAddress,
      hostname: config.mailHostname,
      transactionId: `${session.id}.${++transactions}`,
      at: new Date(clock.now()),
    });
    let prepared;
    try {
      prepared = await delivery.prepare(Buffer.concat([trace, raw]));
    } catch (err) {
      finish('unparsable', { error: (err as Error).message });
      throw reply(554, '5.6.0 The message cannot be parsed as MIME');
    }
    summary.messageId = prepared.parsed.internetMessageId;

    // Each recipient's copies, in order, so the results map back to its reply.
    const owners = await Promise.all(rcpts.map((r) => resolved.get(r) ?? delivery.resolveRecipient(r.address)));
    const users = owners.flat();
    const targets: DeliveryTarget[] = users.map((u) => ({ userId: u.id }));
    let results: DeliveryResult[];
    try {
      const mailFrom = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
      const variants = deps.protectOnDelivery ? await deps.protectOnDelivery(prepared, users, mailFrom) : undefined;
      results = variants?.size ? await deliverVariants(prepared, variants, users, targets) : await delivery.deliverGrouped(prepared, targets, { duplicates: 'live' });
    } catch (err) {
      const failure = storeFailure(err);
      log.error({ ...summary, err }, 'lmtp delivery failed');
      finish(failure.responseCode === 452 ? 'storageFull' : 'deferred');
      return rcpts.map(() => failure);
    }

    let next = 0;
    let stored = 0;
    let duplicates = 0;
    const replies = rcpts.map((rcpt, i) => {
      const mine = results.slice(next, next + owners[i]!.length);
      next += owners[i]!.length;
      // RCPT accepted only addresses with users; should none be known now, refuse rather than answer 250 for nobody.
      if (mine.length === 0) return reply(550, `5.1.1 <${rcpt.address}>: user unknown`);
      if (mine.some((r) => r.status === 'stored')) {
        stored++;
        return `2.0.0 <${rcpt.address}> delivered`;
      }
      duplicates++;
      return `2.0.0 <${rcpt.address}> already delivered (duplicate), not stored again`;
    });
    finish(stored + duplicates === rcpts.length ? (stored ? 'stored' : 'duplicate') : 'partial', { stored, duplicates });
    return replies;
  }

  const smtp = new SMTPServer({
    lmtp: true,
    name: config.mailHostname,
    banner: 'Pigeon',
    disabledCommands: ['AUTH', 'STARTTLS'],
    hideENHANCEDSTATUSCODES: false,
    size: config.maxMessageBytes,
    rejectOversized: true,
    maxClients: LMTP_MAX_CONNECTIONS,
    // The client is the local MTA: a PTR lookup would only add latency to every connection.
    disableReverseLookup: true,
    logger: false,

    onConnect(session, callback) {
      for (const connection of smtp.connections) {
        if (connection.session !== session) continue;
        withOwnStatusCodes(connection);
        resumeWithoutLosingTheNext(connection._parser);
        feedDataWithoutCopies(connection._parser);
      }
      callback();
    },
    // MAIL and RCPT answer on a later turn of the event loop, never from inside the handler call: see `later`.
    onMailFrom(_address, _session, done) {
      later(done)(stopping ? reply(421, '4.3.2 Service shutting down, try again later') : null);
    },
    onRcptTo(address, _session, done) {
      const callback = later(done);
      if (stopping) return callback(reply(421, '4.3.2 Service shutting down, try again later'));
      delivery.resolveRecipient(address.address).then(
        (users: User[]) => {
          if (users.length === 0) return callback(reply(550, `5.1.1 <${address.address}>: user unknown`));
          resolved.set(address, users);
          callback();
        },
        (err: unknown) => {
          log.error({ err }, 'lmtp recipient lookup failed');
          callback(storeFailure(err));
        },
      );
    },
    onData(stream, session, callback) {
      if (stopping) {
        // Only deliveries already under way when the shutdown began are waited for.
        return callback(reply(421, '4.3.2 Service shutting down, try again later'));
      }
      const job = receive(stream, session, performance.now()).then(
        (replies) => callback(null, replies),
        (err: Error) => callback(err),
      );
      inFlight.add(job);
      void job.finally(() => inFlight.delete(job));
    },
  });
  smtp.on('error', (err: Error & { code?: string }) => log.warn({ err: { message: err.message, code: err.code } }, 'lmtp connection error'));

  await new Promise<void>((resolve, reject) => {
    smtp.server.once('error', reject);
    smtp.listen(config.lmtpPort, config.lmtpHost, () => {
      smtp.server.off('error', reject);
      resolve();
    });
  });
  const address = smtp.server.address();
  const port = typeof address === 'object' && address ? address.port : config.lmtpPort;

  async function shutdown(deadlineMs: number) {
    stopping = true;
    smtp.server.close();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), deadlineMs)));
    const forced = await Promise.race([Promise.allSettled([...inFlight]).then(() => false), timedOut]);
    clearTimeout(timer);
    for (const connection of smtp.connections) {
      connection.send(421, '4.3.2 Service shutting down');
      connection.close();
    }
    return { forced };
  }
  let closed: Promise<{ forced: boolean }> | undefined;
  return { port, close: (deadlineMs) => (closed ??= shutdown(deadlineMs)) };
}
