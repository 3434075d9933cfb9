/**
 * The hook the push module uses to close a device's live channels the moment its access ends (blocked,
 * quarantined, wipe requested or acknowledged, removed). Listeners must not throw.
 *
 * One process by default. With workers (server/cluster.ts) a cut made in one process must close the device's
 * channels in every other: `relay` (given at construction) carries each local cut out, and the cuts that come in
 * from other processes are handed to `deliver`, which tells the listeners here without carrying them out again.
 */
export type CutReason = 'blocked' | 'quarantined' | 'wipeRequested' | 'wiped' | 'removed' | 'purged';

export interface DeviceCut {
  userId: string;
  deviceId: string;
  recordId: string;
  reason: CutReason;
}

/**
 * Something conditional access reads changed (a policy, a device's compliance or app standing, a user's risk): the
 * live channels in scope are judged again now, and end with the reason when access is gone. `policyChanged`: the
 * tenant's app protection policies changed, and every app still connected is told to fetch its policy again.
 */
export interface AccessRecheck {
  tenantId: string;
  userId?: string;
  deviceId?: string;
  policyChanged?: boolean;
}

export interface DeviceSignalsOptions {
  /** Carries a cut made here to the other processes (called after the local listeners; must not throw). */
  relay?: (cut: DeviceCut) => void;
  /** Carries a re-check asked for here to the other processes. */
  relayRecheck?: (recheck: AccessRecheck) => void;
}

export class DeviceSignals {
  private readonly listeners = new Set<(cut: DeviceCut) => void>();
  private readonly recheckListeners = new Set<(recheck: AccessRecheck) => void>();
  private readonly relay?: (cut: DeviceCut) => void;
  private readonly relayRecheck?: (recheck: AccessRecheck) => void;

  constructor(options: DeviceSignalsOptions = {}) {
    this.relay = options.relay;
    this.relayRecheck = options.relayRecheck;
  }

  onRecheck(listener: (recheck: AccessRecheck) => void): () => void {
    this.recheckListeners.add(listener);
    return () => this.recheckListeners.delete(listener);
  }

  /** A re-check asked for in this process: its listeners, then the other processes. */
  recheck(event: AccessRecheck): void {
    this.deliverRecheck(event);
    this.relayRecheck?.(event);
  }

  /** A re-check asked for in another process. */
  deliverRecheck(event: AccessRecheck): void {
    for (const listener of this.recheckListeners) listener(event);
  }

  onCut(listener: (cut: DeviceCut) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** A cut made in this process: its listeners, then the other processes. */
  cut(event: DeviceCut): void {
    this.deliver(event);
    this.relay?.(event);
  }

  /** A cut made in another process: this process's listeners only. */
  deliver(event: DeviceCut): void {
    for (const listener of this.listeners) listener(event);
  }
}
