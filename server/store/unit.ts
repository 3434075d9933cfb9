/**
 * Units of work: one body of domain logic that both backends run as one transaction.
 *
 * A unit is a generator function over `TxStore`: each store step is `yield* tx.group.method(...)`, which evaluates
 * to the method's result. The backend decides what a step does:
 * - SQLite answers every step synchronously (its steps return without yielding), so `run` executes the whole unit
 *   inside one `BEGIN IMMEDIATE … COMMIT` on the event loop, with nothing else interleaved — the same as the
 *   synchronous transactions this contract replaced, at the cost of a generator per step.
 * - PostgreSQL's steps yield the promise of their query; `run` awaits it on the unit's own connection and resumes
 *   the unit with the rows. Everything between two steps is the unit's own computation.
 * The rule that makes this safe: a unit only computes and calls `tx` (no other I/O, no await, no clock — pass `now`
 * in), and it may run more than once (PostgreSQL retries a serialization failure), so it has no side effects outside
 * the store. A thrown error rolls the transaction back and reaches the caller of `run` unchanged.
 *
 * Outside a unit, `store.group.method(...)` returns a promise and is a transaction of its own.
 */
import type { Step, StoreMethods, TxStore } from './types';

export type { Step, TxStore, Unit, Store, AsyncMethods } from './types';

type Fn = (...args: never[]) => unknown;

/** A step that is already answered: how a synchronous backend, or a unit's helper, returns a value. */
// eslint-disable-next-line require-yield
export function* done<T>(value: T): Step<T> {
  return value;
}

/**
 * Drives a unit whose steps never yield (SQLite's) to its end, synchronously. A yield is a programming error: a
 * unit awaited something other than its store.
 */
export function runSync<T>(step: Step<T>): T {
  const r = step.next();
  if (!r.done) {
    step.return(undefined as never);
    throw new Error('A unit of work yielded on a synchronous store: units must not await anything but their steps.');
  }
  return r.value;
}

/** Drives a unit whose steps yield promises, resuming it with each answer (or throwing the rejection into it). */
export async function runAsync<T>(step: Step<T>): Promise<T> {
  let r = step.next();
  while (!r.done) {
    let answer: unknown;
    try {
      answer = await r.value;
    } catch (err) {
      r = step.throw(err);
      continue;
    }
    r = step.next(answer);
  }
  return r.value;
}

const GROUPS = [
  'tenants',
  'users',
  'refreshTokens',
  'devices',
  'deviceAccess',
  'audit',
  'mailboxes',
  'folders',
  'items',
  'sync',
  'blobs',
  'search',
  'outbox',
  'idempotency',
  'identityRecords',
  'mfa',
  'access',
  'protection',
  'directory',
  'mailboxSettings',
  'autoReplies',
  'sharedMailboxes',
  'conversations',
  'diagnostics',
  'push',
  'webRefresh',
] as const satisfies ReadonlyArray<keyof StoreMethods>;

// Every group is listed: a group added to StoreMethods and not here fails to compile.
type Missing = Exclude<keyof StoreMethods, (typeof GROUPS)[number]>;
const allGroups: [Missing] extends [never] ? true : Missing = true;
void allGroups;

export const STORE_GROUPS: ReadonlyArray<keyof StoreMethods> = GROUPS;

/** `methods` with each function of each group replaced by `wrap(group, name, fn)`. */
export function mapMethods<Out>(
  methods: StoreMethods,
  wrap: (group: keyof StoreMethods, name: string, fn: Fn) => unknown,
): Out {
  const out: Record<string, Record<string, unknown>> = {};
  for (const g of GROUPS) {
    const group = methods[g] as unknown as Record<string, Fn>;
    const mapped: Record<string, unknown> = {};
    for (const name of Object.keys(group)) mapped[name] = wrap(g, name, group[name]!.bind(group));
    out[g] = mapped;
  }
  return out as Out;
}

/** A synchronous backend's methods as unit steps (each returns at once, without yielding). */
export function stepsOf(methods: StoreMethods): TxStore {
  return mapMethods<TxStore>(methods, (_g, _n, fn) =>
    // eslint-disable-next-line require-yield
    function* (...args: never[]) {
      return fn(...args);
    },
  );
}
