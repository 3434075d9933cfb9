/**
 * `POST /v1/ping`: the long-poll fallback for apps that cannot hold a stream (protocol.md §8). It answers
 * `{"changed": [ids]}` at once when a named folder changed since the device's last sync of it, else as soon as one
 * changes, else `{"changed": []}` at the heartbeat (or when the access token expires first: the next ping then
 * gets its 401 and the app refreshes).
 */
import type { NextFunction, Response } from 'express';
import type { CommittedChange, Folder } from '../store/types';
import { recheck, type Caller, type Channel, type EndReason, type PushContext } from './channels';

export class PingWait implements Channel {
  readonly kind = 'ping';
  private timer?: NodeJS.Timeout;
  private unsubscribe?: () => void;
  private done = false;

  constructor(
    private readonly ctx: PushContext,
    readonly caller: Caller,
    private readonly folders: Folder[],
    private readonly res: Response,
    private readonly next: NextFunction,
  ) {}

  /** Registers (may throw 429/503 before anything is written), then answers now or waits. */
  start(heartbeatSeconds: number): void {
    const { ctx, caller, res } = this;
    ctx.registry.open(this);
    res.once('close', () => this.end('clientGone'));
    const already = this.folders.filter((f) => {
      const synced = ctx.watermarks.get(caller.recordId, f.id);
      // No note (this process never saw the device sync the folder, e.g. after a restart): say it changed.
      return synced === undefined || f.contentModseq > synced;
    });
    if (already.length) return this.answer(already.map((f) => f.id));

    const watched = new Set(this.folders.map((f) => f.id));
    this.unsubscribe = ctx.bus.subscribe(caller.userId, (change: CommittedChange) => {
      const hits = change.folderIds.filter((id) => watched.has(id));
      if (hits.length) this.answer(hits);
    });
    const untilExpiry = caller.expiresAt - ctx.clock.now();
    this.timer = setTimeout(() => this.answer([]), Math.max(0, Math.min(heartbeatSeconds * 1000, untilExpiry)));
    this.timer.unref();
  }

  /** Answers (once), after checking the device may still be told anything. */
  private answer(changed: string[]): void {
    if (this.done) return;
    const denied = recheck(this.ctx, this.caller);
    if (denied) return this.fail(denied);
    this.finish();
    this.res.setHeader('Cache-Control', 'no-store');
    this.res.status(200).json({ changed });
  }

  /** Ends with the gate's answer (403 deviceBlocked, wipeRequested, ...), so the app learns why at once. */
  private fail(err: Error): void {
    this.finish();
    this.next(err);
  }

  private finish(): void {
    this.done = true;
    clearTimeout(this.timer);
    this.unsubscribe?.();
    this.ctx.registry.release(this);
  }

  end(reason: EndReason): void {
    if (this.done) return;
    if (reason === 'clientGone') return this.finish();
    if (reason === 'cut' || reason === 'revoked') {
      const denied = recheck(this.ctx, this.caller);
      if (denied) return this.fail(denied);
    }
    // Replaced by a newer ping or stream, or shutting down: an empty answer, so the app simply polls again.
    this.finish();
    this.res.setHeader('Cache-Control', 'no-store');
    this.res.status(200).json({ changed: [] });
  }
}
