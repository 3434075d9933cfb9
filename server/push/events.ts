/**
 * `GET /v1/events`: one Server-Sent Events stream per device and mailbox (protocol.md §8).
 *
 * An event says *that* folders changed, never what: `event: changed` with the changed folders' unread counts (the
 * badge) and whether the hierarchy moved; the app then syncs. The first change after a quiet spell is sent at
 * once; changes after it are gathered until `coalesceMs` after the previous event and sent as one, so a burst (a
 * batch, a thread of deliveries) costs the app one sync, not many. Counts are read from the folder rows when the
 * event is written — after the commits it covers — so they are exact.
 *
 * `id:` is the watched mailbox's highest modseq when the event was written (a shared mailbox's stream: that
 * mailbox's own sequence): it only grows, and a reconnect that sends it
 * back as `Last-Event-ID` learns at once what changed meanwhile. On connect the stream also sends a bare `id:`
 * (no data: EventSource dispatches nothing but remembers it), so even a stream that never saw an event can resume.
 *
 * The stream's bytes are a Readable (`body`) that the route hands to the adapter, which pipes it to the client: each
 * event is pushed as it happens (the stream is never compressed, so nothing holds it back). Ending the channel ends
 * the Readable, and so the response; a client that goes away destroys it, which ends the channel.
 */
import { Readable } from 'node:stream';
import type { CommittedChange, Folder } from '../store/types';
import type { ApiError } from '../errors';
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

/**
 * What changed in a mailbox (its user id) after `since` (a modseq), or null when that cannot be told (then the app
 * must check everything).
 */
export async function changedSince(ctx: PushContext, userId: string, since: number): Promise<{ folders: Folder[]; hierarchyChanged: boolean } | null> {
  const mailbox = await ctx.store.mailboxes.get(userId);
  // From the future (a restored backup) or older than the tombstones kept: the history cannot answer.
  if (!mailbox || since > mailbox.highestModseq || since < mailbox.purgedModseq) return null;
  const folders = (await ctx.store.folders.listByUser(userId)).filter((f) => Math.max(f.modseq, f.contentModseq) > since);
  // A folder's `modseq` moves on create, rename and move but also on count changes, which the rows cannot tell
  // apart afterwards: over-report (one cheap hierarchy sync) rather than miss a rename.
  const hierarchyChanged = folders.some((f) => f.modseq > since) || (await ctx.store.folders.deletedSince(userId, since, 1)).length > 0;
  return { folders, hierarchyChanged };
}

export class EventStream implements Channel {
  readonly kind = 'stream';
  /** The stream's bytes, for the adapter to pipe to the client. */
  readonly body: Readable;
  private readonly pending = new Set<string>();
  private pendingHierarchy = false;
  private pendingModseq = 0;
  /** A change arrived that no event has covered yet. */
  private changeDue = false;
  /**
   * The catch-up or an event is being read and written: a change meanwhile waits for the next event, so events go
   * out one at a time and in order (the reads await the store).
   */
  private busy = false;
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

  /**
   * Registers (rejects with 429/503 before anything is written), then starts the stream: the catch-up is in its
   * bytes when this resolves. A store failure during the catch-up ends the stream and rejects (nothing was sent).
   */
  async start(lastEventId: string | undefined): Promise<void> {
    const { ctx, caller } = this;
    ctx.registry.open(this);
    // Subscribed before the catch-up reads: a commit while they run is heard (and perhaps seen by them too: at worst
    // one event too many, never one too few). Its event waits until the catch-up is written.
    this.unsubscribe = ctx.bus.subscribe(caller.mailboxId, (change) => this.onChange(change));
    this.busy = true;
    try {
      await this.catchUp(lastEventId);
    } catch (err) {
      this.end('failed');
      throw err;
    }
    this.busy = false;
    if (this.ended) return; // cut, replaced or shut down meanwhile

    this.heartbeat = setInterval(() => void this.beat(), ctx.options.heartbeatMs);
    this.heartbeat.unref();
    // The stream ends with the token that opened it; the app reconnects with a fresh one.
    this.expiry = setTimeout(() => this.end('expired'), Math.max(0, caller.expiresAt - ctx.clock.now()));
    this.expiry.unref();
    this.scheduleFlush();
  }

  private async beat(): Promise<void> {
    const denied = await recheck(this.ctx, this.caller);
    if (denied) return this.end('revoked', denied);
    this.write(': hb\n\n');
  }

  /** Last-Event-ID: one event at once naming what changed since, or (when unknown) everything. */
  private async catchUp(lastEventId: string | undefined): Promise<void> {
    const { ctx, caller } = this;
    const highest = (await ctx.store.mailboxes.get(caller.mailboxId))?.highestModseq ?? 0;
    if (lastEventId === undefined) return this.write(`id: ${highest}\n\n`);
    const since = /^\d{1,15}$/.test(lastEventId.trim()) ? Number(lastEventId.trim()) : NaN;
    const changed = Number.isFinite(since) ? await changedSince(ctx, caller.mailboxId, since) : null;
    if (changed && changed.folders.length === 0 && !changed.hierarchyChanged) return this.write(`id: ${highest}\n\n`);
    const folders = changed ? changed.folders : await ctx.store.folders.listByUser(caller.mailboxId);
    this.send(highest, { folders: counts(folders), hierarchyChanged: changed ? changed.hierarchyChanged : true });
  }

  private onChange(change: CommittedChange): void {
    for (const id of change.folderIds) this.pending.add(id);
    this.pendingHierarchy ||= change.hierarchyChanged;
    this.pendingModseq = Math.max(this.pendingModseq, change.modseq);
    this.changeDue = true;
    this.scheduleFlush();
  }

  /** Sets the timer of the next event when a change awaits one and no event is already due or being written. */
  private scheduleFlush(): void {
    // An event already due or under way: this change rides along with it, or with the one after it.
    if (!this.changeDue || this.flushTimer || this.busy || this.ended) return;
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
    // The changes heard so far are this event's; one heard while it is read goes into the next.
    const ids = [...this.pending];
    const hierarchyChanged = this.pendingHierarchy;
    const modseq = this.pendingModseq;
    this.pending.clear();
    this.pendingHierarchy = false;
    this.changeDue = false;
    this.busy = true;
    this.writeChanged(ids, hierarchyChanged, modseq).then(
      () => {
        this.busy = false;
        this.scheduleFlush();
      },
      (err: unknown) => {
        // The store could not answer: end the stream (the app reconnects and catches up) rather than go quiet.
        this.ctx.log.error({ err, userId: this.caller.userId }, 'push event failed');
        this.busy = false;
        this.end('failed');
      },
    );
  }

  private async writeChanged(ids: string[], hierarchyChanged: boolean, modseq: number): Promise<void> {
    const { ctx, caller } = this;
    const denied = await recheck(ctx, caller);
    if (denied) return this.end('revoked', denied);
    // The mailbox before the folders: the folders read then show at least what the event's id claims.
    const highest = Math.max((await ctx.store.mailboxes.get(caller.mailboxId))?.highestModseq ?? 0, modseq);
    const found = await Promise.all(ids.map((id) => ctx.store.folders.byId(caller.mailboxId, id)));
    const folders: Folder[] = [];
    for (const folder of found) {
      if (folder) folders.push(folder);
      else hierarchyChanged = true; // deleted meanwhile: it has no count, the hierarchy sync reports it
    }
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

  /** An event that is not a change (`policyChanged`); it carries no id, so Last-Event-ID is unaffected. */
  notify(event: string, data: Record<string, unknown>): void {
    this.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  end(reason: EndReason, problem?: ApiError): void {
    if (this.ended) return;
    // Why access ended, before the stream does: the app reacts (signs in again, updates, wipes) without polling.
    if (problem && reason === 'revoked') {
      this.write(`event: accessEnded\ndata: ${JSON.stringify({ status: problem.status, code: problem.code, detail: problem.message, ...problem.extra })}\n\n`);
    }
    this.ended = true;
    clearTimeout(this.flushTimer);
    clearInterval(this.heartbeat);
    clearTimeout(this.expiry);
    this.unsubscribe?.();
    this.ctx.registry.release(this);
    this.ctx.log.debug({ userId: this.caller.userId, mailboxId: this.caller.mailboxId, device: this.caller.deviceId, reason, requestId: this.requestId }, 'event stream ended');
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
