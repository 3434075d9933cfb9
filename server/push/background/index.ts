/**
 * Background push (server/push/background/types.ts says what each piece does): the composer, the reminder clock
 * and the drain behind one `BackgroundPush`.
 *
 * Passes: one pass composes (outbox entries, batch after batch), fires due reminders and drains what is due. Passes
 * never overlap: `kick()` (a commit here) queues a pass unless one is already waiting — so at most one runs and one
 * waits, however many commits kick —, the poll kicks every `pollMs` (work other processes wrote), and the reminder
 * timer kicks at the soonest reminder's due time. `runOnce()` queues a pass of its own and resolves with its report.
 * `stop()` stops the timers, lets the pass in flight finish (its sends complete or are covered by their leases) and
 * resolves after it. A pass's drain resolves only once every result it has is committed (drain.ts batches them
 * over a few ms), so stop() leaves no result unrecorded; a result lost to a crash is a lapsed lease (sent again,
 * same id).
 */
import { setMaxListeners } from 'node:events';
import { systemClock } from '../../clock';
import { composeUnit, PolicyAnswers, runWithPolicy, type ComposeContext } from './compose';
import { createDrain, drainMetrics } from './drain';
import { DeviceBuckets, perSecondBucket, SharedLimits } from './limits';
import { createReminderClock } from './reminders';
import { DEFAULT_BACKGROUND_PUSH_OPTIONS, type BackgroundPush, type BackgroundPushDeps, type BackgroundPushOptions, type PassReport } from './types';

export * from './types';
export { targetOf } from './drain';

/** Outbox entries per composing unit, and units per pass. */
const COMPOSE_BATCH = 50;
const COMPOSE_UNITS = 40;

const emptyReport = (): PassReport => ({ composed: 0, sent: 0, retried: 0, gone: 0, dropped: 0 });

export function createBackgroundPush(deps: BackgroundPushDeps): BackgroundPush {
  const options: BackgroundPushOptions = { ...DEFAULT_BACKGROUND_PUSH_OPTIONS, ...deps.options };
  const clock = deps.clock ?? systemClock;
  const { store, log } = deps;
  const kinds = new Set(Object.entries(deps.gateways).filter(([, g]) => g).map(([k]) => k));
  const stopping = new AbortController();
  // Every send in flight listens to it.
  setMaxListeners(options.concurrency + 16, stopping.signal);
  const reminders = createReminderClock({ store, clock, policy: deps.policy, options, kinds });
  const drain = createDrain({
    store,
    clock,
    log,
    gateways: deps.gateways,
    policy: deps.policy,
    options,
    deviceBuckets: new DeviceBuckets(options.perDevicePerMinute),
    globalBucket: perSecondBucket(options.globalPerSecond, clock.now()),
    // PostgreSQL: every node's leader drains the one queue, so the limits are windows in the database all of them
    // share. SQLite: only the leader of the one server on the file drains, so its own buckets are the whole limit.
    shared: store.backend === 'postgres' ? new SharedLimits(options.globalPerSecond, options.perDevicePerMinute) : undefined,
    metrics: drainMetrics(deps.metrics),
    signal: stopping.signal,
  });

  async function compose(): Promise<number> {
    let composed = 0;
    for (let unit = 0; unit < COMPOSE_UNITS; unit++) {
      const answers = new PolicyAnswers(deps.policy);
      const ctx: ComposeContext = { now: clock.now(), options, answers, kinds };
      const result = await runWithPolicy(() => store.run(composeUnit({ ...ctx, now: clock.now() }, COMPOSE_BATCH)), answers);
      composed += result.composed;
      reminders.note(result.nextReminderAt);
      if (result.composed > 0) log.debug({ entries: result.composed, queued: result.queued }, 'background push composed');
      if (result.composed < COMPOSE_BATCH) break;
    }
    return composed;
  }

  async function pass(): Promise<PassReport> {
    const report = emptyReport();
    report.composed += await compose();
    report.composed += await reminders.fireDue();
    for (const outcome of await drain.drainDue()) {
      if (outcome === 'sent') report.sent += 1;
      else if (outcome === 'retried') report.retried += 1;
      else if (outcome === 'gone') report.gone += 1;
      else if (outcome === 'dropped') report.dropped += 1;
    }
    return report;
  }

  let tail: Promise<unknown> = Promise.resolve();
  let waiting = false;
  let started = false;
  let stopped = false;
  let poll: NodeJS.Timeout | undefined;

  function queuePass(fromKick: boolean): Promise<PassReport> {
    const run = tail.then(async () => {
      if (fromKick) waiting = false;
      if (fromKick && stopped) return emptyReport();
      try {
        return await pass();
      } finally {
        if (started && !stopped) reminders.arm(kick);
      }
    });
    tail = run.catch((err: unknown) => log.error({ err }, 'background push pass failed'));
    return run;
  }

  function kick(): void {
    if (stopped || waiting) return;
    waiting = true;
    void queuePass(true).catch(() => undefined);
  }

  return {
    start() {
      if (started || stopped) return;
      started = true;
      poll = setInterval(kick, options.pollMs);
      poll.unref?.();
      reminders.arm(kick);
      kick();
    },
    kick,
    runOnce() {
      return queuePass(false);
    },
    async stop() {
      stopped = true;
      if (poll) clearInterval(poll);
      poll = undefined;
      reminders.disarm();
      await tail;
      stopping.abort(new Error('background push stopped'));
    },
  };
}
