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
 * A delivery deferred by the rate limits spends an attempt (the store counts attempts at claim); limits are sized
 * so that this is rare.
 */
import type { Logger } from 'pino';
import { Counter, Histogram, type Registry } from 'prom-client';
import type { Clock } from '../../clock';
import type { ClaimedPushDelivery, PushChannelRecord, Store, User } from '../../store/types';
import type { Gateway, PushKind, PushMessage, PushTarget, SendOutcome } from '../gateways/types';
import { backoffMs, DeviceBuckets, type TokenBucket } from './limits';
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

export interface DrainDeps {
  store: Store;
  clock: Clock;
  log: Logger;
  gateways: Partial<Record<PushKind, Gateway>>;
  policy: BackgroundPushPolicy;
  options: BackgroundPushOptions;
  deviceBuckets: DeviceBuckets;
  globalBucket: TokenBucket;
  metrics?: DrainMetrics;
  random?: () => number;
  /** Aborted on stop: sends in flight are given up (their leases cover them). */
  signal?: AbortSignal;
}

/** Per batch: what the owner and the device are like now (one look each). */
interface BatchLookups {
  users: Map<string, Promise<User | undefined>>;
  reachable: Map<string, Promise<boolean>>;
}

export function createDrain(deps: DrainDeps) {
  const { store, clock, log, options } = deps;
  const random = deps.random ?? Math.random;

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

  async function deliver(claimed: ClaimedPushDelivery, lookups: BatchLookups): Promise<DrainOutcome> {
    const { delivery, channel } = claimed;
    const facts = { deliveryId: delivery.id, channelId: channel.id, kind: channel.kind, userId: delivery.userId, collapseKey: delivery.collapseKey, attempts: delivery.attempts };
    const drop = async (reason: string): Promise<DrainOutcome> => {
      await store.push.complete(delivery.userId, delivery.id);
      log.info({ ...facts, reason }, 'background push dropped');
      return 'dropped';
    };

    const user = await userOf(lookups, delivery.userId);
    if (!user || user.disabled || user.sessionVersion !== channel.sessionVersion) return drop('user signed out or disabled');
    if (!(await reachable(lookups, user, channel))) {
      await store.push.complete(delivery.userId, delivery.id);
      const more = await store.push.dropDeliveriesOfDevice(delivery.userId, channel.deviceRecordId);
      log.info({ ...facts, reason: 'device not reachable', alsoDropped: more }, 'background push dropped');
      return 'dropped';
    }
    const gateway = deps.gateways[channel.kind];
    if (!gateway) return drop('no gateway for the kind');

    // Rate limits: over either, back to the queue for when a token will be there.
    const now = clock.now();
    const deviceWait = deps.deviceBuckets.take(channel.deviceRecordId, now);
    if (deviceWait > 0) {
      await store.push.release(delivery.userId, delivery.id, now + deviceWait, true);
      log.debug({ ...facts, waitMs: deviceWait }, 'background push deferred (device rate limit)');
      return 'deferred';
    }
    const globalWait = deps.globalBucket.take(now);
    if (globalWait > 0) {
      deps.deviceBuckets.giveBack(channel.deviceRecordId);
      await store.push.release(delivery.userId, delivery.id, now + globalWait, true);
      log.debug({ ...facts, waitMs: globalWait }, 'background push deferred (global rate limit)');
      return 'deferred';
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
        await store.push.complete(delivery.userId, delivery.id);
        await store.push.noteResult(delivery.userId, channel.id, true, after);
        deps.metrics?.latency.observe({ kind: channel.kind, type: message.type }, Math.max(0, after - delivery.originAt) / 1000);
        log.debug({ ...facts, latencyMs: after - delivery.originAt }, 'background push sent');
        return 'sent';
      }
      case 'gone': {
        await store.push.deleteChannel(delivery.userId, channel.id);
        log.info({ ...facts, deviceId: channel.deviceId }, 'background push channel gone: removed');
        return 'gone';
      }
      case 'retry': {
        await store.push.noteResult(delivery.userId, channel.id, false, after);
        if (channel.failures + 1 >= options.maxChannelFailures) {
          await store.push.deleteChannel(delivery.userId, channel.id);
          log.info({ ...facts, failures: channel.failures + 1 }, 'background push channel failing: removed');
          return 'gone';
        }
        if (delivery.attempts >= options.maxAttempts) return drop('too many attempts');
        const wait = backoffMs(delivery.attempts, options, outcome.afterMs, random);
        await store.push.release(delivery.userId, delivery.id, after + wait);
        log.debug({ ...facts, waitMs: wait, afterMs: outcome.afterMs }, 'background push retried later');
        return 'retried';
      }
      case 'rejected': {
        await store.push.noteResult(delivery.userId, channel.id, false, after);
        if (channel.failures + 1 >= options.maxChannelFailures) {
          await store.push.deleteChannel(delivery.userId, channel.id);
          log.info({ ...facts, failures: channel.failures + 1 }, 'background push channel failing: removed');
          return 'gone';
        }
        return drop(`rejected: ${outcome.reason}`);
      }
    }
  }

  /**
   * Claims and sends what is due, batch after batch (each at most `concurrency` sends at once, and no more than the
   * global bucket allows), until nothing is due or `maxBatches` ran. Answers the outcomes.
   */
  async function drainDue(maxBatches = 50): Promise<DrainOutcome[]> {
    const outcomes: DrainOutcome[] = [];
    for (let batch = 0; batch < maxBatches; batch++) {
      if (deps.signal?.aborted) break;
      const now = clock.now();
      const room = Math.min(options.concurrency, deps.globalBucket.available(now));
      if (room <= 0) break;
      const claimed = await store.push.claim(now, room, options.leaseMs);
      if (claimed.length === 0) break;
      const lookups: BatchLookups = { users: new Map(), reachable: new Map() };
      const results = await Promise.allSettled(claimed.map((c) => deliver(c, lookups)));
      results.forEach((result, i) => {
        const { delivery, channel } = claimed[i]!;
        const type = String((delivery.message as { type?: unknown }).type ?? 'unknown');
        if (result.status === 'rejected') {
          // A store error or a stop: the lease brings the delivery back.
          if (!deps.signal?.aborted) log.warn({ err: result.reason, deliveryId: delivery.id }, 'background push delivery failed');
          return;
        }
        outcomes.push(result.value);
        deps.metrics?.outcomes.inc({ outcome: result.value, kind: channel.kind, type });
      });
      if (claimed.length < room) break;
    }
    return outcomes;
  }

  return { drainDue, deliver };
}
