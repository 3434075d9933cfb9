/**
 * `GET /v1/events`: one Server-Sent Events stream per device (protocol.md §8).
 *
 * An event says *that* folders changed, never what: `event: changed` with the changed folders' unread counts (the
 * badge) and whether the hierarchy moved; the app then syncs. The first change after a quiet spell is sent at
 * once; changes after it are gathered until `coalesceMs` after the previous event and sent as one, so a burst (a
 * batch, a thread of deliveries) costs the app one sync, not many. Counts are read from the folder rows when the
 * event is written — after the commits it covers — so they are exact.
 *
 * `id:` is the mailbox's highest modseq when the event was written: it only grows, and a reconnect that sends it
 * back as `Last-Event-ID` learns at once what changed meanwhile. On connect the stream also sends a bare `id:`
 * (no data: EventSource dispatches nothing but remembers it), so even a stream that never saw an event can resume.
 *
 * The stream's bytes are a Readable (`body`) that the route hands to the adapter, which pipes it to the client: each
 * event is pushed as it happens (the stream is never compressed, so nothing holds it back). Ending the channel ends
 * the Readable, and so the response; a client that goes away destroys it, which ends the channel.
 */
import { Readable } from 'node:stream';
import type { CommittedChange, Folder } from '../store/types';
import { recheck, type Caller, type Channel, type EndReason, type PushContext } from './channels';

/**
 * A client that stops reading would make us buffer forever; beyond this (in the Readable, once the response's own
 * buffer is full) it is dropped (it reconnects).
 */
const MAX_BUFFERED_BYTES = 64 * 1024;

export const SSE_HEADERS = {
  'Content-Type': 'text/event-stream',
  'Cache-Control': 'no-store',
  // nginx (and proxies that copy it) would otherwise buffer the stream and hold events back.
  'X-Accel-Buffering': 'no',
};

export interface ChangedEvent {
  folders: Record<string, { unreadCount: number }>;
  hierarchyChanged: boolean;
}

/** What changed after `since` (a modseq), or null when that cannot be told (then the app must check everything). */
export function changedSince(ctx: PushContext, userId: string, since: number): { folders: Folder[]; hierarchyChanged: boolean } | null {
  const mailbox = ctx.store.mailboxes.get(userId);
  // From the future (a restored backup) or older than the tombstones kept: the history cannot answer.
  if (!mailbox || since > mailbox.highestModseq || since < mailbox.purgedModseq) return null;
  const folders = ctx.store.folders.listByUser(userId).filter((f) => Math.max(f.modseq, f.contentModseq) > since);
  // A folder's `modseq` moves on create, rename and move but also on count changes, which the rows cannot tell
  // apart afterwards: over-report (one cheap hierarchy sync) rather than miss a rename.
  const hierarchyChanged = folders.some((f) => f.modseq > since) || ctx.store.folders.deletedSince(userId, since, 1).length > 0;
  return { folders, hierarchyChanged };
}

export class EventStream implements Channel {
  readonly kind = 'stream';
  /** The stream's bytes, for the adapter to pipe to the client. */
  readonly body: Readable;
  private readonly pending = new Set<string>();
  private pendingHierarchy = false;
  private pendingModseq = 0;
  private lastId = 0;
  private flushTimer?: NodeJS.Timeout;
  /** Wall time of the last `changed` event (0: none yet), for the throttle in onChange. */
  private lastSentAt = 0;
  private heartbeat?: NodeJS.Timeout;
  private expiry?: NodeJS.Timeout;
  private unsubscribe?: () => void;
  private ended = false;

  constructor(
    private readonly ctx: PushContext,
    readonly caller: Caller,
    private readonly requestId: string,
  ) {
    this.body = new Readable({
      read() {}, // events are pushed as they happen
      // Destroyed by the adapter's pipeline when the client goes away (or by us for a slow consumer).
      destroy: (err, callback) => {
        this.end('clientGone');
        callback(err);
      },
    });
  }

  /** Registers (may throw 429/503 before anything is written), then starts the stream. */
  start(lastEventId: string | undefined): void {
    const { ctx, caller } = this;
    ctx.registry.open(this);
    // Everything from here runs in one tick: no commit can slip between the catch-up read and the subscription.
    this.unsubscribe = ctx.bus.subscribe(caller.userId, (change) => this.onChange(change));
    this.catchUp(lastEventId);

    this.heartbeat = setInterval(() => {
      const denied = recheck(ctx, caller);
      if (denied) return this.end('revoked');
      this.write(': hb\n\n');
    }, ctx.options.heartbeatMs);
    this.heartbeat.unref();
    // The stream ends with the token that opened it; the app reconnects with a fresh one.
    this.expiry = setTimeout(() => this.end('expired'), Math.max(0, caller.expiresAt - ctx.clock.now()));
    this.expiry.unref();
  }

  /** Last-Event-ID: one event at once naming what changed since, or (when unknown) everything. */
  private catchUp(lastEventId: string | undefined): void {
    const { ctx, caller } = this;
    const highest = ctx.store.mailboxes.get(caller.userId)?.highestModseq ?? 0;
    if (lastEventId === undefined) return this.write(`id: ${highest}\n\n`);
    const since = /^\d{1,15}$/.test(lastEventId.trim()) ? Number(lastEventId.trim()) : NaN;
    const changed = Number.isFinite(since) ? changedSince(ctx, caller.userId, since) : null;
    if (changed && changed.folders.length === 0 && !changed.hierarchyChanged) return this.write(`id: ${highest}\n\n`);
    const folders = changed ? changed.folders : ctx.store.folders.listByUser(caller.userId);
    this.send(highest, { folders: counts(folders), hierarchyChanged: changed ? changed.hierarchyChanged : true });
  }

  private onChange(change: CommittedChange): void {
    for (const id of change.folderIds) this.pending.add(id);
    this.pendingHierarchy ||= change.hierarchyChanged;
    this.pendingModseq = Math.max(this.pendingModseq, change.modseq);
    if (this.flushTimer) return; // an event is already due: this change rides along
    // Throttle, not debounce: the first change after a quiet spell goes out at once (after the commits of this turn
    // of the event loop, so one burst is one event); later ones wait until `coalesceMs` after the last event. Apps
    // hear of new mail in milliseconds and still sync at most about once a second under a stream of changes.
    const wait = Math.max(0, this.lastSentAt + this.ctx.options.coalesceMs - Date.now());
    this.flushTimer = setTimeout(() => this.flush(), wait);
    this.flushTimer.unref();
  }

  private flush(): void {
    this.flushTimer = undefined;
    if (this.ended) return;
    const { ctx, caller } = this;
    if (recheck(ctx, caller)) return this.end('revoked');
    const folders: Folder[] = [];
    let hierarchyChanged = this.pendingHierarchy;
    for (const id of this.pending) {
      const folder = ctx.store.folders.byId(caller.userId, id);
      if (folder) folders.push(folder);
      else hierarchyChanged = true; // deleted meanwhile: it has no count, the hierarchy sync reports it
    }
    const highest = Math.max(ctx.store.mailboxes.get(caller.userId)?.highestModseq ?? 0, this.pendingModseq);
    this.pending.clear();
    this.pendingHierarchy = false;
    this.lastSentAt = Date.now();
    this.send(highest, { folders: counts(folders), hierarchyChanged });
  }

  private send(id: number, event: ChangedEvent): void {
    this.lastId = Math.max(this.lastId, id); // ids never go back, even if a store answered oddly
    this.write(`id: ${this.lastId}\nevent: changed\ndata: ${JSON.stringify(event)}\n\n`);
  }

  private write(text: string): void {
    if (this.ended) return;
    if (this.body.readableLength > MAX_BUFFERED_BYTES) return this.end('slowConsumer');
    this.body.push(text);
  }

  end(reason: EndReason): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.flushTimer);
    clearInterval(this.heartbeat);
    clearTimeout(this.expiry);
    this.unsubscribe?.();
    this.ctx.registry.release(this);
    this.ctx.log.debug({ userId: this.caller.userId, device: this.caller.deviceId, reason, requestId: this.requestId }, 'event stream ended');
    // A slow consumer is cut off (its backlog is dropped); otherwise the response ends after what was pushed.
    if (reason === 'slowConsumer') this.body.destroy();
    else if (reason !== 'clientGone') this.body.push(null);
  }
}

function counts(folders: Folder[]): ChangedEvent['folders'] {
  const out: ChangedEvent['folders'] = {};
  for (const f of folders) out[f.id] = { unreadCount: f.unreadCount };
  return out;
}
