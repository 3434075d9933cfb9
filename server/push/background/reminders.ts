/**
 * The reminder clock of background push: fires the calendar reminders that are due (composing their alerts in the
 * same unit that marks them sent and schedules a recurring event's next one: compose.ts, fireRemindersUnit), and
 * keeps a timer for the soonest reminder it knows of, so a reminder goes out at its time even when the poll is
 * slow. The store has no "next due" query, so the soonest time is what this process saw put (compose, firing); a
 * reminder put by another process is found by the periodic look (at least every `pollMs × REMINDER_POLL_FACTOR`).
 * Time comes from the injected clock: tests move it and run a pass.
 */
import type { Clock } from '../../clock';
import type { Store } from '../../store/types';
import { fireRemindersUnit, PolicyAnswers, runWithPolicy, type ComposeContext } from './compose';
import type { BackgroundPushOptions, BackgroundPushPolicy } from './types';

/** Reminders fired per unit. */
const FIRE_BATCH = 100;
/** Units per pass (a pass then yields to the drain; the rest fire on the next). */
const FIRE_UNITS = 20;
/** Sent reminders are forgotten a day after their occurrence started, and not before it ended (a cancellation is
 *  owed until then). */
const PURGE_AFTER_MS = 86_400_000;
const PURGE_EVERY_MS = 3_600_000;
/** The reminder timer looks at least this many polls apart even when it knows of no reminder. */
export const REMINDER_POLL_FACTOR = 20;

export interface ReminderClockDeps {
  store: Store;
  clock: Clock;
  policy: BackgroundPushPolicy;
  options: BackgroundPushOptions;
  kinds: ReadonlySet<string>;
}

export function createReminderClock(deps: ReminderClockDeps) {
  const { store, clock } = deps;
  let soonest: number | undefined;
  let lastPurge = -Infinity;
  let timer: NodeJS.Timeout | undefined;

  /** A reminder is due at `at` (ms): the timer fires for it. */
  function note(at: number | undefined): void {
    if (at !== undefined && (soonest === undefined || at < soonest)) soonest = at;
  }

  /** Fires what is due now; answers how many reminders it handled. */
  async function fireDue(): Promise<number> {
    let fired = 0;
    for (let unit = 0; unit < FIRE_UNITS; unit++) {
      const now = clock.now();
      if (soonest !== undefined && soonest <= now) soonest = undefined;
      const answers = new PolicyAnswers(deps.policy);
      const ctx: ComposeContext = { now, options: deps.options, answers, kinds: deps.kinds };
      const result = await runWithPolicy(() => store.run(fireRemindersUnit(ctx, FIRE_BATCH)), answers);
      fired += result.composed;
      note(result.nextReminderAt);
      if (result.composed < FIRE_BATCH) break;
    }
    const now = clock.now();
    if (now - lastPurge >= PURGE_EVERY_MS) {
      lastPurge = now;
      await store.push.purgeReminders(now - PURGE_AFTER_MS, now);
    }
    return fired;
  }

  /** Arms the timer for the soonest known reminder (or the periodic look), calling `wake` then. */
  function arm(wake: () => void): void {
    if (timer) clearTimeout(timer);
    const longest = deps.options.pollMs * REMINDER_POLL_FACTOR;
    const delay = soonest === undefined ? longest : Math.min(longest, Math.max(0, soonest - clock.now()));
    timer = setTimeout(() => {
      timer = undefined;
      wake();
    }, delay);
    timer.unref?.();
  }

  function disarm(): void {
    if (timer) clearTimeout(timer);
    timer = undefined;
  }

  return { note, fireDue, arm, disarm, soonest: () => soonest };
}
