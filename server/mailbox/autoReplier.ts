/**
 * Sends the automatic replies delivery claimed (server/mailbox/rules.ts). A claim is written in the transaction that
 * stores the message, so a reply owed is never lost with a crash; this worker sends each one once: it reads the
 * pending claims, composes the reply from the settings as they are now (replies turned off meanwhile are skipped),
 * sends it through the send service (local delivery, or the outbox and the relay) and marks the claim done.
 *
 * A reply is sent at least once: a crash between the send and the mark resends it on the next pass (the recipient
 * may then see it twice; the alternative, marking first, could lose it).
 */
import type { Clock } from '../clock';
import type { Logger } from 'pino';
import type { SendService } from '../send/service';
import type { AutoReplyRecord, Store } from '../store/types';
import { autoRepliesActive, parseSettings } from './settings';
import { autoReplyText, composeAutoReply } from './autoReply';
import { senderFacts } from './rules';

const BATCH = 50;

export interface AutoReplierDeps {
  store: Store;
  clock: Clock;
  send: Pick<SendService, 'sendAutomatic'>;
  log: Logger;
  hostname: string;
}

export function createAutoReplier(deps: AutoReplierDeps) {
  const { store, clock, log } = deps;
  let running: Promise<number> | undefined;
  let again = false;
  let timer: NodeJS.Timeout | undefined;
  let leading = false;

  async function replyTo(claim: AutoReplyRecord): Promise<'sent' | 'skipped'> {
    const [owner, item, record] = await Promise.all([store.users.byId(claim.userId), store.items.byId(claim.userId, claim.itemId), store.mailboxSettings.get(claim.userId)]);
    if (!owner || !item || !item.from) return 'skipped';
    const settings = parseSettings(record?.doc);
    const now = clock.now();
    // Turned off, rescheduled or reworded since the message arrived: that period is over, its claims lapse.
    if (!autoRepliesActive(settings.automaticReplies, now) || settings.autoReplyPeriod !== claim.period) return 'skipped';
    const from = item.from.address;
    const facts = await store.run((tx) => senderFacts(tx, owner, from));
    const text = autoReplyText(settings.automaticReplies, { internal: facts.colleague, senderIsContact: facts.contact });
    if (text === null) return 'skipped';
    const thread = item.internetMessageId ? [item.internetMessageId] : [];
    const reply = await composeAutoReply({
      mailbox: { name: owner.displayName, address: owner.email },
      to: item.from,
      subject: item.subject,
      inReplyTo: item.internetMessageId,
      references: thread,
      text,
      hostname: deps.hostname,
      now,
    });
    const outcome = await deps.send.sendAutomatic(owner.id, reply.raw, item.from.address);
    log.info({ userId: owner.id, claim: claim.id, outcome }, 'automatic reply');
    return outcome === 'dropped' ? 'skipped' : 'sent';
  }

  /** One pass over the pending claims; answers how many were finished. */
  async function pass(): Promise<number> {
    let finished = 0;
    for (;;) {
      const claims = await store.autoReplies.pending(BATCH);
      if (claims.length === 0) return finished;
      for (const claim of claims) {
        let state: 'sent' | 'skipped';
        try {
          state = await replyTo(claim);
        } catch (err) {
          // A reply that cannot be made (a store hiccup, a message gone) is skipped rather than retried forever.
          log.warn({ err, claim: claim.id }, 'automatic reply failed');
          state = 'skipped';
        }
        await store.autoReplies.finish(claim.id, state, clock.now());
        finished++;
      }
      if (claims.length < BATCH) return finished;
    }
  }

  /** Runs a pass now, or once more after the running one (claims committed meanwhile are not missed). */
  function drain(): Promise<number> {
    if (running) {
      again = true;
      return running;
    }
    running = pass().finally(() => {
      running = undefined;
      if (again) {
        again = false;
        void drain();
      }
    });
    return running;
  }

  return {
    drain,
    /**
     * Only the process that runs the server's once-per-server jobs sends replies (main.ts `lead`): two workers
     * passing over the same claims could both send one. Kicks elsewhere do nothing; the leader's timer finds them.
     */
    lead(): void {
      leading = true;
    },
    /** A pass soon (after the delivery that claimed has committed), in the leading process. */
    kick(): void {
      if (!leading) return;
      timer ??= setTimeout(() => {
        timer = undefined;
        drain().catch((err: unknown) => log.error({ err }, 'automatic replies pass failed'));
      }, 50);
      timer.unref?.();
    },
    stop(): void {
      if (timer) clearTimeout(timer);
      timer = undefined;
    },
  };
}

export type AutoReplier = ReturnType<typeof createAutoReplier>;
