/**
 * The hook the push module uses to close a device's live channels the moment its access ends (blocked,
 * quarantined, wipe requested or acknowledged, removed). In-process; listeners must not throw.
 */
export type CutReason = 'blocked' | 'quarantined' | 'wipeRequested' | 'wiped' | 'removed' | 'purged';

export interface DeviceCut {
  userId: string;
  deviceId: string;
  recordId: string;
  reason: CutReason;
}

export class DeviceSignals {
  private readonly listeners = new Set<(cut: DeviceCut) => void>();

  onCut(listener: (cut: DeviceCut) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  cut(event: DeviceCut): void {
    for (const listener of this.listeners) listener(event);
  }
}
