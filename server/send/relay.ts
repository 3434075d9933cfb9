/**
 * The relay worker: hands queued outbox entries to the smarthost (PIGEON_SMTP_RELAY_URL) over SMTP.
 *
 * - A pass takes the due entries (`store.outbox.due`) oldest first and sends each one's stored bytes with its own
 *   envelope. Only one pass runs at a time (a kick during a pass runs one more pass after it), so an entry is never
 *   being sent twice at once.
 * - Relay accepted → the entry is `sent`. A recipient refused permanently (5xx) → a non-delivery report for it. A
 *   temporary failure (no connection, timeouts, 4xx, authentication or TLS trouble) → retried after
 *   `outboxRetryBase · 2^(attempts-1)`, at most an hour; once `outboxGiveUpAfter` has passed since the send, the
 *   entry is `failed` and the sender gets a non-delivery report.
 * - At least once, not exactly once: an entry is marked only after the relay accepted it, so a crash (or a store
 *   failure) between the relay's 250 and the mark sends it again on the next pass. Losing mail is worse than a rare
 *   duplicate, which the recipient's server usually drops by Message-ID anyway.
 * - Woken by a timer (unref'd, armed for the next due entry, at least once a minute) and by a kick after each send
 *   that queued mail. Finished entries are purged after seven days by the same passes.
 */
import nodemailer from 'nodemailer';
import type { Logger } from 'pino';
import type { Clock } from '../clock';
import type { Config } from '../config';
import type { Delivery } from '../mail/delivery';
import type { OutboxEntry, Store } from '../store/types';
import { buildNdr, type DeliveryFailure } from './ndr';
import { NO_RELAY_REASON } from './service';

export interface RelayDeps {
  store: Store;
  clock: Clock;
  delivery: Delivery;
  log: Logger;
  config: Pick<Config, 'smtpRelayUrl' | 'mailHostname' | 'outboxRetryBase' | 'outboxGiveUpAfter'>;
}

export interface PassSummary {
  sent: number;
  retrying: number;
  failed: number;
}

const BATCH = 20;
const IDLE_WAKE_MS = 60_000;
const MIN_WAKE_MS = 1000;
const HOLD_AFTER_ERROR_MS = 60_000;
const MAX_RETRY_DELAY_MS = 3600_000;
const FINISHED_KEPT_MS = 7 * 86400_000;
const PURGE_EVERY_MS = 3600_000;

interface SmtpError extends Error {
  code?: string;
  responseCode?: number;
  response?: string;
  recipient?: string;
  rejectedErrors?: SmtpError[];
}

/** The smarthost's `host:port` for logs and reports: never the URL itself, which may carry a password. */
export function relayName(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || (u.protocol === 'smtps:' ? '465' : '587')}`;
}

function checkRelayUrl(url: string): void {
  let ok = false;
  try {
    const u = new URL(url);
    ok = (u.protocol === 'smtp:' || u.protocol === 'smtps:') && u.hostname !== '';
  } catch {
    ok = false;
  }
  // The value is a secret (it may hold a password): say what is wrong without echoing it.
  if (!ok) throw new Error('PIGEON_SMTP_RELAY_URL must look like smtp://[user:pass@]host[:port] or smtps://...');
}

/** A refusal that will not change on retry: a 5xx answer to the envelope or the message itself. */
function isPermanent(err: SmtpError): boolean {
  const code = err.responseCode ?? 0;
  return code >= 500 && code < 600 && (err.code === 'EENVELOPE' || err.code === 'EMESSAGE');
}

/** `550 5.1.1 no such user` → `5.1.1`; a bare 5xx → `5.0.0`. */
function enhancedStatus(response: string | undefined, fallback: string): string {
  return /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(response ?? '')?.[1] ?? fallback;
}

export function createRelay(deps: RelayDeps) {
  const { store, clock, delivery, log, config } = deps;
  if (config.smtpRelayUrl) checkRelayUrl(config.smtpRelayUrl);
  const remoteMta = config.smtpRelayUrl ? relayName(config.smtpRelayUrl) : undefined;
  const transport = config.smtpRelayUrl
    ? nodemailer.createTransport({
        url: config.smtpRelayUrl,
        name: config.mailHostname, // EHLO
        connectionTimeout: 30_000,
        greetingTimeout: 30_000,
        socketTimeout: 120_000,
        logger: false,
      })
    : undefined;

  let started = false;
  let stopping = false;
  let timer: NodeJS.Timeout | undefined;
  let current: Promise<PassSummary> | undefined;
  let next: Promise<PassSummary> | undefined;
  let lastPurge = 0;
  /** Entries whose last pass failed inside the server, and when they may be tried again. */
  const held = new Map<string, number>();
  const abort = new AbortController();

  async function readMessage(entry: OutboxEntry): Promise<Buffer> {
    const size = await store.blobs.size(entry.userId, entry.blobId);
    if (size === undefined) throw new Error(`outbox entry ${entry.id} has no message blob`);
    return store.blobs.read(entry.userId, entry.blobId, 0, size);
  }

  /** Which recipients went, which failed for good, which wait for another try. */
  async function attempt(entry: OutboxEntry, raw: Buffer) {
    const permanent: DeliveryFailure[] = [];
    const temporary: string[] = [];
    let accepted = 0;
    let lastError: string | null = null;
    if (!transport) {
      // Queued while a relay was configured, and the server restarted without one: bounce rather than wait forever.
      for (const address of entry.recipients) permanent.push({ address, status: '5.4.4', reason: NO_RELAY_REASON });
      return { permanent, temporary, accepted, lastError: 'no relay configured' };
    }
    const refused = (errs: SmtpError[]) => {
      for (const e of errs) {
        const address = e.recipient ?? '';
        if (isPermanent(e)) {
          permanent.push({ address, status: enhancedStatus(e.response, '5.0.0'), reason: 'The relay refused this recipient.', smtpResponse: e.response });
        } else temporary.push(address);
        lastError = e.response ?? e.message;
      }
    };
    try {
      const info = await transport.sendMail({ envelope: { from: entry.mailFrom, to: entry.recipients }, raw, signal: abort.signal });
      accepted = info.accepted.length;
      refused(((info as { rejectedErrors?: SmtpError[] }).rejectedErrors ?? []) as SmtpError[]);
    } catch (e) {
      const err = e as SmtpError;
      lastError = err.response ?? err.message;
      if (err.rejectedErrors?.length) refused(err.rejectedErrors);
      else if (isPermanent(err)) {
        for (const address of entry.recipients) {
          permanent.push({ address, status: enhancedStatus(err.response, '5.0.0'), reason: 'The relay refused the message.', smtpResponse: err.response });
        }
      } else temporary.push(...entry.recipients);
    }
    return { permanent, temporary, accepted, lastError };
  }

  /** The prepared non-delivery report for the entry's sender, or undefined (logged) when none can be made. */
  async function reportFor(entry: OutboxEntry, raw: Buffer, failures: DeliveryFailure[], now: number) {
    const sender = await store.users.byId(entry.userId);
    if (!sender) return undefined;
    try {
      const ndr = await buildNdr({
        hostname: config.mailHostname,
        sender: { name: sender.displayName, address: sender.email },
        original: raw,
        arrivedAt: entry.createdAt,
        remoteMta,
        failures,
        now,
      });
      return await delivery.prepare(ndr);
    } catch (err) {
      log.error({ err, outboxId: entry.id }, 'non-delivery report not built');
      return undefined;
    }
  }

  /**
   * One entry: read it, send it, then record the outcome (and any non-delivery report) in one unit of work. The SMTP
   * session runs between store calls, never inside a unit: a unit holds its transaction (SQLite's write lock) open.
   */
  async function relayEntry(entry: OutboxEntry, summary: PassSummary): Promise<void> {
    const raw = await readMessage(entry);
    const outcome = await attempt(entry, raw);
    const now = clock.now();
    const giveUpAt = entry.createdAt + config.outboxGiveUpAfter * 1000;
    const failures = [...outcome.permanent];
    let fields: Parameters<Store['outbox']['update']>[1];
    if (outcome.temporary.length && now < giveUpAt) {
      const attempts = entry.attempts + 1;
      const delay = Math.min(config.outboxRetryBase * 1000 * 2 ** (attempts - 1), MAX_RETRY_DELAY_MS);
      // The last try falls on the give-up time rather than after it.
      fields = { recipients: outcome.temporary, attempts, nextAttemptAt: Math.min(now + delay, giveUpAt), lastError: outcome.lastError };
      summary.retrying++;
    } else {
      const hours = Math.round(config.outboxGiveUpAfter / 360) / 10;
      for (const address of outcome.temporary) {
        failures.push({ address, status: '4.4.7', reason: `The relay did not accept the message within ${hours} h.` });
      }
      const delivered = outcome.accepted > 0;
      // A finished entry keeps only the addresses that failed (a sent one keeps none).
      fields = {
        recipients: delivered ? [] : failures.map((f) => f.address),
        attempts: entry.attempts + 1,
        state: delivered ? 'sent' : 'failed',
        lastError: outcome.lastError,
      };
      if (delivered) summary.sent++;
      else summary.failed++;
    }
    const ndr = failures.length ? await reportFor(entry, raw, failures, now) : undefined;
    const deliveredAt = clock.now();
    try {
      await store.run(function* (tx) {
        yield* tx.outbox.update(entry.id, fields, now);
        if (ndr) yield* delivery.deliverIn(tx, ndr, [{ userId: entry.userId, folderKind: 'inbox' }], { duplicates: 'live' }, deliveredAt);
      });
    } catch (err) {
      // A report that cannot be stored must not keep the entry due: it would go to the relay again and again.
      if (!ndr) throw err;
      log.error({ err, outboxId: entry.id }, 'non-delivery report not stored');
      await store.outbox.update(entry.id, fields, now);
    }
    log.info(
      { outboxId: entry.id, relay: remoteMta, accepted: outcome.accepted, refused: outcome.permanent.length, deferred: outcome.temporary.length, state: fields.state ?? 'queued', error: outcome.lastError ?? undefined },
      'outbox relay attempt',
    );
  }

  async function pass(): Promise<PassSummary> {
    const summary: PassSummary = { sent: 0, retrying: 0, failed: 0 };
    const seen = new Set<string>();
    try {
      for (;;) {
        const now = clock.now();
        const batch = (await store.outbox.due(now, BATCH)).filter((e) => !seen.has(e.id) && (held.get(e.id) ?? 0) <= now);
        if (batch.length === 0 || stopping) break;
        for (const entry of batch) {
          if (stopping) break;
          seen.add(entry.id);
          try {
            await relayEntry(entry, summary);
          } catch (err) {
            // Left queued (at least once, see above), but held back a while: when the store cannot record the
            // outcome (a full disk), an entry that stays due must not be handed to the relay on every pass.
            log.error({ err, outboxId: entry.id }, 'outbox relay failed');
            held.set(entry.id, clock.now() + HOLD_AFTER_ERROR_MS);
          }
        }
      }
      const now = clock.now();
      for (const [id, until] of held) if (until <= now) held.delete(id);
      if (now - lastPurge >= PURGE_EVERY_MS) {
        lastPurge = now;
        const purged = await store.outbox.purge(now - FINISHED_KEPT_MS);
        if (purged) log.info({ purged }, 'finished outbox entries purged');
      }
    } catch (err) {
      log.error({ err }, 'outbox pass failed');
    }
    return summary;
  }

  /** Sets the timer for the next due entry (at the latest IDLE_WAKE_MS from now). The last arm to finish wins. */
  async function arm(): Promise<void> {
    if (!started || stopping) return;
    let delay = IDLE_WAKE_MS;
    try {
      const due = await store.outbox.nextDueAt();
      if (due !== undefined) delay = Math.max(MIN_WAKE_MS, Math.min(due - clock.now(), IDLE_WAKE_MS));
    } catch (err) {
      log.error({ err }, 'outbox schedule failed');
    }
    if (!started || stopping) return; // stopped while the store answered
    clearTimeout(timer);
    timer = setTimeout(() => void runOnce(), delay);
    timer.unref();
  }

  /** Runs a pass now, or, when one is running, one more right after it (coalesced); resolves when that pass ends. */
  function runOnce(): Promise<PassSummary> {
    if (current) {
      next ??= current.then(() => {
        next = undefined;
        return runOnce();
      });
      return next;
    }
    current = pass().finally(() => {
      current = undefined;
      void arm();
    });
    return current;
  }

  return {
    runOnce,
    /** After a send queued mail. Does nothing until `start()` (tests drive passes with `runOnce`). */
    kick(): void {
      if (started && !stopping) void runOnce();
    },
    /** Starts the timer and a first pass (mail left queued by an earlier run goes out now). */
    start(): void {
      if (started) return;
      started = true;
      if (remoteMta) log.info({ relay: remoteMta }, 'outbox relay started');
      void runOnce();
    },
    /**
     * Stops picking entries and waits for the entry in flight; after `timeoutMs` its SMTP session is aborted (the
     * entry stays queued and goes out after the next start).
     */
    async stop(timeoutMs = 30_000): Promise<void> {
      stopping = true;
      clearTimeout(timer);
      const inFlight = next ?? current;
      if (inFlight) {
        let waited: NodeJS.Timeout | undefined;
        const timedOut = new Promise<'timeout'>((resolve) => (waited = setTimeout(() => resolve('timeout'), timeoutMs)));
        if ((await Promise.race([inFlight, timedOut])) === 'timeout') {
          abort.abort();
          await inFlight;
        }
        clearTimeout(waited);
      }
      transport?.close();
    },
  };
}

export type Relay = ReturnType<typeof createRelay>;
