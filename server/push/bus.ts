/**
 * The event bus between the store's change feed and the live push channels.
 *
 * Routes and channels only ever see this interface, so a multi-node bus (PostgreSQL LISTEN/NOTIFY, Redis pub/sub,
 * NATS) can replace the in-process one without touching them: such a bus would `publish` to the broker from the
 * commit hook and call subscribers when the broker delivers, on every node. Messages stay tiny (ids and numbers,
 * never content), and a lost one costs at most one late sync, because every event only says "something changed".
 */
import type { Logger } from 'pino';
import type { CommittedChange, Store } from '../store/types';

export type ChangeListener = (change: CommittedChange) => void;

export interface EventBus {
  /** Announces one committed change of one mailbox. Must only be called after the commit. */
  publish(change: CommittedChange): void;
  /** Calls `fn` for every change of this user's mailbox published from now on; returns the unsubscribe function. */
  subscribe(userId: string, fn: ChangeListener): () => void;
}

/** One process: subscribers per user in a map, called synchronously in publishing order. */
export class InProcessBus implements EventBus {
  private readonly byUser = new Map<string, Set<ChangeListener>>();

  constructor(private readonly log?: Logger) {}

  publish(change: CommittedChange): void {
    const listeners = this.byUser.get(change.userId);
    if (!listeners) return;
    // A copy: a listener may unsubscribe itself (a ping that answers) while we iterate.
    for (const fn of [...listeners]) {
      // Publishing runs inside the store's commit hook, which must never throw: one broken channel must not break
      // the request that committed, nor the other channels.
      try {
        fn(change);
      } catch (err) {
        this.log?.error({ err, userId: change.userId }, 'push listener failed');
      }
    }
  }

  subscribe(userId: string, fn: ChangeListener): () => void {
    let listeners = this.byUser.get(userId);
    if (!listeners) this.byUser.set(userId, (listeners = new Set()));
    listeners.add(fn);
    return () => {
      const set = this.byUser.get(userId);
      if (!set) return;
      set.delete(fn);
      if (set.size === 0) this.byUser.delete(userId); // no empty sets left behind by users who went away
    };
  }

  /** Users with at least one subscriber (for metrics and tests). */
  get users(): number {
    return this.byUser.size;
  }
}

/**
 * Feeds a bus from the store's commit hook: the only publisher. `onCommit` runs after the transaction committed and
 * never for a rollback, so a subscriber that reads the store on an event sees the change. Returns the unsubscribe.
 */
export function feedFromStore(store: Store, bus: EventBus): () => void {
  return store.onCommit((changes) => {
    for (const change of changes) bus.publish(change);
  });
}
