/**
 * The drain of background push: claims due deliveries with a lease, sends them through the gateways and acts on
 * each outcome. Several drainers (processes) may run at once: a claim is exclusive, and a claim whose holder died
 * lapses with its lease, after which the delivery is claimed and sent again with the same id (the gateway's
 * message id: apns-id, and the payload's `id`), so a resend is recognisable.
 *
 * Per claimed delivery: the owner's sign-in state and the device are checked (a disabled user, a signed-out
 * session version or a device no longer reachable: dropped, with the device's queue); then the rate limits (a
 * device's token bucket, the process's per-second bucket: over either, the delivery goes back to the queue for when
 * a token will be there, which lets newer messages with the same collapse key replace it meanwhile); then the send:
 * - sent → completed, the channel's success noted;
 * - gone → the channel deleted (its deliveries with it);
 * - retry → back to the queue after a backoff with jitter (a Retry-After wins when longer), or dropped after
 *   maxAttempts; the channel's failure noted, and a channel failing maxChannelFailures times in a row is deleted;
 * - rejected → dropped, the channel's failure noted.
 * A delivery deferred by the rate limits gets its attempt back (`release(..., deferred)`); limits are sized so that
 * this is rare. With `shared` limits (several drainers: PostgreSQL) the buckets are not used: each claim takes its
 * sends from the windows every drainer shares, in the claiming unit itself (see SharedLimits, `withinLimits`), and
 * what gets none is released there for its window's end; a delivery is then rate-limited before it is held at all.
 *
 * Cost under load (bench/push.ts): a committed SQLite transaction is the expensive part (it blocks the event loop),
 * so the drain commits as few as it can:
 * - pipelined: up to `concurrency` deliveries are held at once (a slot is held from the claim until the delivery's
 *   result is committed); whenever results are recorded and slots free, the drain claims as many as are free (one
 *   claim for all of them, inside the unit that records the results: one commit records and refills) instead of
 *   waiting for a whole batch's slowest send. A claim that finds less than it asked for ends the claiming (nothing
 *   more is due): the drain then waits for what it holds and returns, so a pass does not starve the composer;
 * - results are recorded in batches: what a delivery's result writes (complete / release / deleteChannel together
 *   with noteResult) is one unit of steps, and the results that come in within FLUSH_WINDOW_MS of each other (or
 *   FLUSH_MAX of them, or every held slot waiting on its result) are committed in ONE store.run unit (when that
 *   unit fails, each result is tried in a unit of its own, so one bad result does not sink the others). A result not
 *   yet committed when the process dies is just a claim whose lease lapses: the delivery is sent again with the
 *   same id, as for a crash mid-send. Because a slot stays held until its result is committed, what can be sent
 *   twice after a crash is still at most `concurrency` deliveries. `drainDue` resolves only once every result is
 *   committed, so a pass (and `stop()`, which waits for the pass) never leaves results behind.
 * - a success's noteResult (failures = 0, lastSuccessAt = now) is written only when it changes something that
 *   matters: the channel had failures (as claimed, or a failure this drain recorded since), or its lastSuccessAt is
 *   unknown or older than SUCCESS_NOTE_MS (a minute). Otherwise it is skipped, so lastSuccessAt is "the last
 *   success, to within a minute" — nothing needs it more precise (it is only shown: the channel view of
 *   GET /v1/push/channels). Whether a success is worth noting is judged from the channel as claimed and what this
 *   drain itself committed since (a memo per channel), so a failure it recorded after the claim is still reset.
 */
import type { Logger } from 'pino';
import { Counter, Histogram, type Registry } from 'prom-client';
import type { Clock } from '../../clock';
import type { ClaimedPushDelivery, PushChannelRecord, Step, Store, TxStore, User } from '../../store/types';
import type { Gateway, PushKind, PushMessage, PushTarget, SendOutcome } from '../gateways/types';
import { backoffMs, DeviceBuckets, SharedLimits, type TokenBucket } from './limits';
import type { BackgroundPushOptions, BackgroundPushPolicy } from './types';

export type DrainOutcome = 'sent' | 'gone' | 'retried' | 'dropped' | 'deferred';

/** The gateway target of a channel. */
export function targetOf(channel: Pick<PushChannelRecord, 'kind' | 'address' | 'keys'>): PushTarget {
  switch (channel.kind) {
    case 'webpush':
      return { kind: 'webpush', endpoint: channel.address, p256dh: channel.keys.p256dh, auth: channel.keys.auth };
    case 'apns':
      return {
        kind: 'apns',
        token: channel.address,
        topic: channel.keys.topic,
        environment: channel.keys.environment === 'sandbox' ? 'sandbox' : 'production',
      };
    case 'fcm':
      return { kind: 'fcm', token: channel.address };
  }
}

export interface DrainMetrics {
  latency: Histogram<'kind' | 'type'>;
  outcomes: Counter<'outcome' | 'kind' | 'type'>;
}

function metric<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

export function drainMetrics(registry: Registry | undefined): DrainMetrics | undefined {
  if (!registry) return undefined;
  return {
    latency: metric(registry, 'pigeon_push_delivery_seconds', () =>
      new Histogram({
        name: 'pigeon_push_delivery_seconds',
        help: 'Background push: from the commit (or the reminder due time) to the gateway accepting the message.',
        labelNames: ['kind', 'type'] as const,
        buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
        registers: [registry],
      }),
    ),
    outcomes: metric(registry, 'pigeon_push_deliveries_total', () =>
      new Counter({
        name: 'pigeon_push_deliveries_total',
        help: 'Background push deliveries by outcome (sent, gone, retried, dropped, deferred), gateway kind and message type.',
        labelNames: ['outcome', 'kind', 'type'] as const,
        registers: [registry],
      }),
    ),
  };
}


/** Results committed together: those that come in within this many ms of the first, ... */
export const FLUSH_WINDOW_MS = 5;
/** ... or this many (whichever comes first). */
export const FLUSH_MAX = 32;
/** A success is written to its channel when its lastSuccessAt is older than this (or it had failures). */
export const SUCCESS_NOTE_MS = 60_000;

export interface DrainDeps {
  store: Store;
  clock: Clock;
  log: Logger;
  gateways: Partial<Record<PushKind, Gateway>>;
  policy: BackgroundPushPolicy;
  options: BackgroundPushOptions;
  deviceBuckets: DeviceBuckets;
  globalBucket: TokenBucket;
  /** Limits every drainer shares (in the store); when set, the two buckets above are not used. */
  shared?: SharedLimits;
  metrics?: DrainMetrics;
  random?: () => number;
  /** Aborted on stop: sends in flight are given up (their leases cover them). */
  signal?: AbortSignal;
}

/** Per claim: what the owner and the device are like now (one look each). */
interface BatchLookups {
  users: Map<string, Promise<User | undefined>>;
  reachable: Map<string, Promise<boolean>>;
}

/**
 * A delivery's result, to be recorded: `write` is what it changes in the store (run inside a unit, with the other
 * results of its flush), `after` what follows once that committed (logs, the channel memo).
 */
export interface DeliveryResult {
  outcome: DrainOutcome;
  write?: (tx: TxStore) => Step<unknown>;
  after?: () => void;
}

/** What this drain itself last committed about a channel (so a skipped success note stays right). */
interface ChannelNote {
  /** The last success written (ms), or null. */
  okAt: number | null;
  /** A failure was written after it: the next success must be written (it resets `failures`). */
  failed: boolean;
}

const MEMO_LIMIT = 10_000;
/** A user's and a device's state, looked at for one claim, serve the next claims of the same drain this long. */
const LOOKUP_REUSE_MS = 1000;

/** What a claiming unit answers: how many the claim found, those with a send granted, those released for later. */
interface Claim {
  found: number;
  granted: ClaimedPushDelivery[];
  held: ClaimedPushDelivery[];
}

export function createDrain(deps: DrainDeps) {
  const { store, clock, log, options, shared } = deps;
  const random = deps.random ?? Math.random;
  const memo = new Map<string, ChannelNote>();

  function userOf(lookups: BatchLookups, userId: string) {
    let user = lookups.users.get(userId);
    if (!user) lookups.users.set(userId, (user = store.users.byId(userId)));
    return user;
  }

  function reachable(lookups: BatchLookups, user: User, channel: PushChannelRecord) {
    const key = `${user.id}\u0000${channel.deviceId}`;
    let answer = lookups.reachable.get(key);
    if (!answer) lookups.reachable.set(key, (answer = deps.policy.deviceReachable(user.id, user.tenantId, channel.deviceId)));
    return answer;
  }

  function remember(channelId: string, note: ChannelNote) {
    if (memo.size >= MEMO_LIMIT && !memo.has(channelId)) {
      // Only an optimisation (and a guard for failures written after a claim): forget the plain successes.
      for (const [id, n] of memo) if (!n.failed) memo.delete(id);
      if (memo.size >= MEMO_LIMIT) memo.clear();
    }
    memo.set(channelId, note);
  }

  /** Whether a success at `now` has to be written to the channel (see the file's comment). */
  function successWorthNoting(channel: PushChannelRecord, now: number): boolean {
    const note = memo.get(channel.id);
    if (channel.failures > 0 || note?.failed) return true;
    const okAt = Math.max(channel.lastSuccessAt ?? -Infinity, note?.okAt ?? -Infinity);
    return !Number.isFinite(okAt) || now - okAt >= SUCCESS_NOTE_MS;
  }

  /**
   * Checks, rate-limits and sends one claimed delivery; answers its result to record (nothing is written here).
   * Throws on a store error or a stop: the delivery is then not recorded and its lease brings it back. `rated` is
   * called once the delivery took its rate-limit tokens or will not take any (the caller counts what is claimed and
   * not yet rated against the global bucket).
   */
  async function deliver(claimed: ClaimedPushDelivery, lookups: BatchLookups, rated: () => void = () => undefined): Promise<DeliveryResult> {
    const { delivery, channel } = claimed;
    const facts = { deliveryId: delivery.id, channelId: channel.id, kind: channel.kind, userId: delivery.userId, collapseKey: delivery.collapseKey, attempts: delivery.attempts };
    const drop = (reason: string): DeliveryResult => ({
      outcome: 'dropped',
      *write(tx) {
        yield* tx.push.complete(delivery.userId, delivery.id);
      },
      after: () => log.info({ ...facts, reason }, 'background push dropped'),
    });
    const failed = (): DeliveryResult | undefined =>
      channel.failures + 1 >= options.maxChannelFailures
        ? {
            outcome: 'gone',
            *write(tx) {
              yield* tx.push.deleteChannel(delivery.userId, channel.id);
            },
            after: () => {
              memo.delete(channel.id);
              log.info({ ...facts, failures: channel.failures + 1 }, 'background push channel failing: removed');
            },
          }
        : undefined;
    /** `result` with the channel's failure noted first. */
    const withFailure = (result: DeliveryResult, now: number): DeliveryResult => ({
      outcome: result.outcome,
      *write(tx) {
        yield* tx.push.noteResult(delivery.userId, channel.id, false, now);
        if (result.write) yield* result.write(tx);
      },
      after: () => {
        if (result.outcome !== 'gone') remember(channel.id, { okAt: memo.get(channel.id)?.okAt ?? null, failed: true });
        result.after?.();
      },
    });

    const user = await userOf(lookups, delivery.userId);
    if (!user || user.disabled || user.sessionVersion !== channel.sessionVersion) {
      rated();
      return drop('user signed out or disabled');
    }
    if (!(await reachable(lookups, user, channel))) {
      rated();
      let more = 0;
      return {
        outcome: 'dropped',
        *write(tx) {
          yield* tx.push.complete(delivery.userId, delivery.id);
          more = yield* tx.push.dropDeliveriesOfDevice(delivery.userId, channel.deviceRecordId);
        },
        after: () => log.info({ ...facts, reason: 'device not reachable', alsoDropped: more }, 'background push dropped'),
      };
    }
    const gateway = deps.gateways[channel.kind];
    if (!gateway) {
      rated();
      return drop('no gateway for the kind');
    }

    // Rate limits: over either, back to the queue for when a token will be there (shared: granted at the claim).
    const now = clock.now();
    const deferred = (waitMs: number, which: string): DeliveryResult => ({
      outcome: 'deferred',
      *write(tx) {
        yield* tx.push.release(delivery.userId, delivery.id, now + waitMs, true);
      },
      after: () => log.debug({ ...facts, waitMs }, `background push deferred (${which} rate limit)`),
    });
    const deviceWait = shared ? 0 : deps.deviceBuckets.take(channel.deviceRecordId, now);
    if (deviceWait > 0) {
      rated();
      return deferred(deviceWait, 'device');
    }
    const globalWait = shared ? 0 : deps.globalBucket.take(now);
    rated();
    if (globalWait > 0) {
      deps.deviceBuckets.giveBack(channel.deviceRecordId);
      return deferred(globalWait, 'global');
    }

    const message = { ...(delivery.message as unknown as Omit<PushMessage, 'id'>), id: delivery.id } as PushMessage;
    let outcome: SendOutcome;
    try {
      outcome = await gateway.send(targetOf(channel), message, deps.signal);
    } catch (err) {
      if (deps.signal?.aborted) throw err; // stopping: the lease covers it
      outcome = { status: 'retry' };
      log.warn({ ...facts, err }, 'background push gateway threw');
    }
    const after = clock.now();
    switch (outcome.status) {
      case 'sent': {
        deps.metrics?.latency.observe({ kind: channel.kind, type: message.type }, Math.max(0, after - delivery.originAt) / 1000);
        const note = successWorthNoting(channel, after);
        return {
          outcome: 'sent',
          *write(tx) {
            yield* tx.push.complete(delivery.userId, delivery.id);
            if (note) yield* tx.push.noteResult(delivery.userId, channel.id, true, after);
          },
          after: () => {
            if (note) remember(channel.id, { okAt: after, failed: false });
            log.debug({ ...facts, latencyMs: after - delivery.originAt, noted: note }, 'background push sent');
          },
        };
      }
      case 'gone':
        return {
          outcome: 'gone',
          *write(tx) {
            yield* tx.push.deleteChannel(delivery.userId, channel.id);
          },
          after: () => {
            memo.delete(channel.id);
            log.info({ ...facts, deviceId: channel.deviceId }, 'background push channel gone: removed');
          },
        };
      case 'retry': {
        const gone = failed();
        if (gone) return withFailure(gone, after);
        if (delivery.attempts >= options.maxAttempts) return withFailure(drop('too many attempts'), after);
        const wait = backoffMs(delivery.attempts, options, outcome.afterMs, random);
        return withFailure(
          {
            outcome: 'retried',
            *write(tx) {
              yield* tx.push.release(delivery.userId, delivery.id, after + wait);
            },
            after: () => log.debug({ ...facts, waitMs: wait, afterMs: outcome.afterMs }, 'background push retried later'),
          },
          after,
        );
      }
      case 'rejected': {
        const gone = failed();
        if (gone) return withFailure(gone, after);
        return withFailure(drop(`rejected: ${outcome.reason}`), after);
      }
    }
  }

  /**
   * The shared limits' part of a claiming unit: the claimed deliveries take their sends, per device (the keys sorted,
   * so two drainers lock the windows' rows in one order), then over all for those the devices allowed. What gets
   * none goes back to the queue for its window's end, its attempt given back; a short global grant marks the window
   * spent. Without shared limits, everything claimed is granted (the buckets judge it later).
   */
  function* withinLimits(tx: TxStore, claimed: ClaimedPushDelivery[], now: number): Step<Claim> {
    if (!shared || claimed.length === 0) return { found: claimed.length, granted: claimed, held: [] };
    const perDevice = new Map<string, number>();
    for (const c of claimed) perDevice.set(c.channel.deviceRecordId, (perDevice.get(c.channel.deviceRecordId) ?? 0) + 1);
    const devices = [...perDevice.keys()].sort();
    const deviceGrants = yield* tx.push.takeSendBudget(
      devices.map((d) => ({ key: SharedLimits.deviceKey(d), want: perDevice.get(d)! })),
      shared.perDevicePerMinute,
      SharedLimits.DEVICE_WINDOW_MS,
      now,
    );
    const left = new Map(devices.map((d, i) => [d, { ...deviceGrants[i]! }]));
    const allowed: ClaimedPushDelivery[] = [];
    const held: Array<{ claimed: ClaimedPushDelivery; until: number }> = [];
    for (const c of claimed) {
      const grant = left.get(c.channel.deviceRecordId)!;
      if (grant.granted > 0) {
        grant.granted -= 1;
        allowed.push(c);
      } else held.push({ claimed: c, until: grant.resetAt });
    }
    let granted = allowed;
    if (allowed.length > 0) {
      const [global] = yield* tx.push.takeSendBudget([{ key: SharedLimits.GLOBAL_KEY, want: allowed.length }], shared.perSecond, SharedLimits.GLOBAL_WINDOW_MS, now);
      if (global!.granted < allowed.length) {
        shared.spent(global!.resetAt);
        granted = allowed.slice(0, global!.granted);
        for (const c of allowed.slice(global!.granted)) held.push({ claimed: c, until: global!.resetAt });
      }
    }
    for (const h of held) yield* tx.push.release(h.claimed.delivery.userId, h.claimed.delivery.id, h.until, true);
    return { found: claimed.length, granted, held: held.map((h) => h.claimed) };
  }

  function* claimStep(tx: TxStore, now: number, limit: number): Step<Claim> {
    return yield* withinLimits(tx, yield* tx.push.claim(now, limit, options.leaseMs), now);
  }

  /**
   * Commits these results: one unit for all, which then claims the next deliveries when `next` asks (the slots the
   * results free, so one commit both records and refills). When that unit fails: one unit per result, without the
   * claim (so one bad result sinks only itself). `recorded[i]` is undefined for a result that could not be
   * committed: its lease brings the delivery back.
   */
  async function record(
    batch: Array<{ claimed: ClaimedPushDelivery; result: DeliveryResult }>,
    next?: { now: number; limit: number },
  ): Promise<{ recorded: Array<DeliveryResult | undefined>; claimed?: Claim }> {
    const writes = batch.filter((b) => b.result.write);
    try {
      let claimed: Claim | undefined;
      if (writes.length > 0 || next) {
        claimed = await store.run(function* (tx) {
          for (const b of writes) yield* b.result.write!(tx);
          return next ? yield* claimStep(tx, next.now, next.limit) : undefined;
        });
      }
      return { recorded: batch.map((b) => b.result), claimed };
    } catch (err) {
      if (writes.length <= 1) {
        log.warn({ err, deliveryId: writes[0]?.claimed.delivery.id }, 'background push delivery failed');
        return { recorded: batch.map((b) => (b.result.write ? undefined : b.result)) };
      }
      log.warn({ err, results: writes.length }, 'background push: recording a batch of results failed; recording them one by one');
    }
    const recorded: Array<DeliveryResult | undefined> = [];
    for (const b of batch) {
      if (!b.result.write) {
        recorded.push(b.result);
        continue;
      }
      try {
        await store.run(function* (tx) {
          yield* b.result.write!(tx);
        });
        recorded.push(b.result);
      } catch (err) {
        log.warn({ err, deliveryId: b.claimed.delivery.id }, 'background push delivery failed');
        recorded.push(undefined);
      }
    }
    return { recorded };
  }

  /**
   * Claims and sends what is due, pipelined (see the file's comment): at most `concurrency` deliveries held at once
   * and no more claimed than the global bucket allows, claiming again as results are recorded and slots free (in
   * the recording unit itself), until a claim finds less than it asked for (nothing more is due), the global bucket
   * is empty, or `maxClaimed` deliveries were claimed. Resolves once every result is committed; answers the
   * outcomes.
   */
  async function drainDue(maxClaimed = 50 * Math.max(1, options.concurrency)): Promise<DrainOutcome[]> {
    const outcomes: DrainOutcome[] = [];
    const concurrency = Math.max(1, options.concurrency);
    const flushMax = Math.max(1, Math.min(FLUSH_MAX, concurrency));
    /** Slots held: claimed and not yet recorded (in flight, or waiting in `pending`). */
    let held = 0;
    /** Claimed and not yet past the rate limits (their tokens are not taken yet: not to be counted as available). */
    let unrated = 0;
    let claimedTotal = 0;
    let exhausted = false;
    /** A claim is under way (the loop's own, or a flush's): no other claim counts the same free slots meanwhile. */
    let claiming = false;
    const pending: Array<{ claimed: ClaimedPushDelivery; result: DeliveryResult }> = [];
    let flushTimer: NodeJS.Timeout | undefined;
    let flushing: Promise<void> | undefined;
    let wake: (() => void) | undefined;
    const signal = () => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    // The owner's and the device's state, looked at once per claim, reused by the next claims for up to a second.
    let lookups: BatchLookups = { users: new Map(), reachable: new Map() };
    let lookupsAt = clock.now();
    const freshLookups = (now: number) => {
      if (now - lookupsAt >= LOOKUP_REUSE_MS || lookups.users.size > 1000) {
        lookups = { users: new Map(), reachable: new Map() };
        lookupsAt = now;
      }
      return lookups;
    };

    /** How many to claim now, with `freed` slots about to be freed. */
    function room(now: number, freed = 0): number {
      if (deps.signal?.aborted || exhausted || claiming || claimedTotal >= maxClaimed) return 0;
      // Shared limits are taken at the claim: nothing to count here but whether the global window is spent.
      const budget = shared ? (shared.open(now) ? Infinity : 0) : deps.globalBucket.available(now) - unrated;
      return Math.max(0, Math.min(concurrency - held + freed, budget, maxClaimed - claimedTotal));
    }

    function took(claim: Claim, limit: number, now: number) {
      claimedTotal += claim.found;
      if (claim.found < limit) exhausted = true;
      // Released in the claiming unit (committed by now): counted, never held.
      for (const c of claim.held) countOutcome(c, 'deferred');
      const l = freshLookups(now);
      for (const c of claim.granted) start(c, l);
    }

    function countOutcome(claimed: ClaimedPushDelivery, outcome: DrainOutcome) {
      outcomes.push(outcome);
      const type = String((claimed.delivery.message as { type?: unknown }).type ?? 'unknown');
      deps.metrics?.outcomes.inc({ outcome, kind: claimed.channel.kind, type });
    }

    async function flushNow(): Promise<void> {
      if (flushTimer) clearTimeout(flushTimer);
      flushTimer = undefined;
      while (flushing) await flushing; // one flush at a time (a PostgreSQL unit awaits)
      if (pending.length === 0) return;
      const batch = pending.splice(0);
      flushing = (async () => {
        const now = clock.now();
        const limit = room(now, batch.length);
        if (limit > 0) claiming = true;
        let freed = false;
        try {
          const { recorded, claimed } = await record(batch, limit > 0 ? { now, limit } : undefined);
          recorded.forEach((result, i) => {
            if (!result) return;
            try {
              result.after?.();
            } catch (err) {
              log.warn({ err }, 'background push: after recording a result');
            }
            countOutcome(batch[i]!.claimed, result.outcome);
          });
          held -= batch.length;
          freed = true;
          claiming = false;
          if (claimed) took(claimed, limit, now);
        } catch (err) {
          log.warn({ err }, 'background push: recording results failed');
        } finally {
          if (!freed) held -= batch.length;
          if (limit > 0) claiming = false;
          flushing = undefined;
          signal();
        }
      })();
      await flushing;
    }

    function scheduleFlush() {
      // Nothing left in flight to wait for, or enough waiting: now; else within the window.
      if (pending.length >= flushMax || pending.length >= held) {
        void flushNow();
      } else if (!flushTimer) {
        flushTimer = setTimeout(() => void flushNow(), FLUSH_WINDOW_MS);
      }
    }

    function settledWithout() {
      // Not recorded (a store error or a stop): the lease brings it back; the slot is free now.
      held -= 1;
      if (pending.length > 0 && pending.length >= held) void flushNow();
      signal();
    }

    function start(claimed: ClaimedPushDelivery, l: BatchLookups) {
      held += 1;
      unrated += 1;
      let rated = false;
      const onRated = () => {
        if (!rated) (rated = true), (unrated -= 1);
      };
      deliver(claimed, l, onRated).then(
        (result) => {
          onRated();
          pending.push({ claimed, result });
          scheduleFlush();
        },
        (err: unknown) => {
          onRated();
          if (!deps.signal?.aborted) log.warn({ err, deliveryId: claimed.delivery.id }, 'background push delivery failed');
          settledWithout();
        },
      );
    }

    for (;;) {
      const now = clock.now();
      const limit = flushing ? 0 : room(now);
      if (limit > 0) {
        claiming = true;
        let claimed: Claim = { found: 0, granted: [], held: [] };
        try {
          // Shared limits: the claim and its grants in one unit; else the claim alone (its own transaction).
          claimed = shared
            ? await store.run((tx) => claimStep(tx, now, limit))
            : await store.push.claim(now, limit, options.leaseMs).then((c) => ({ found: c.length, granted: c, held: [] }));
        } catch (err) {
          log.warn({ err }, 'background push claim failed');
        } finally {
          claiming = false;
        }
        took(claimed, limit, now);
        continue;
      }
      // Nothing to claim now: wait for slots to free (a flush claims into them itself), or end when nothing is held.
      if (held === 0 && !flushing) break;
      await new Promise<void>((resolve) => (wake = resolve));
    }
    if (flushTimer || pending.length > 0) await flushNow();
    while (flushing) await flushing;
    return outcomes;
  }

  return { drainDue, deliver };
}
