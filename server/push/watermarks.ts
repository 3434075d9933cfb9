/**
 * How far each device has synced each folder, kept in memory for `POST /v1/ping`.
 *
 * Sync tokens are self-contained (the server keeps no per-device sync state), so to answer "changed since this
 * device's last sync of the folder" the ping needs a note of the last position the device was handed. The item-sync
 * route records the modseq of every token it issues. Nothing is persisted: after a restart there is no note, and a
 * ping then answers at once that the folder changed — one extra sync per device, never a missed change.
 */
export class SyncWatermarks {
  /** device record id → folder id → modseq of the last item-sync token issued. */
  private readonly byDevice = new Map<string, Map<string, number>>();

  record(deviceRecordId: string, folderId: string, modseq: number): void {
    let folders = this.byDevice.get(deviceRecordId);
    if (!folders) this.byDevice.set(deviceRecordId, (folders = new Map()));
    folders.set(folderId, modseq);
  }

  /** The modseq the device last synced the folder to, or undefined when this process has not seen it sync. */
  get(deviceRecordId: string, folderId: string): number | undefined {
    return this.byDevice.get(deviceRecordId)?.get(folderId);
  }

  /** Drops a device's notes when its partnership ends (removed, purged, wiped), so the map does not grow forever. */
  forget(deviceRecordId: string): void {
    this.byDevice.delete(deviceRecordId);
  }

  get devices(): number {
    return this.byDevice.size;
  }
}
