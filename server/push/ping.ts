/**
 * `POST /v1/ping`: the long-poll fallback for apps that cannot hold a stream (protocol.md §8). It answers
 * `{"changed": [ids]}` at once when a named folder changed since the device's last sync of it, else as soon as one
 * changes, else `{"changed": []}` at the heartbeat (or when the access token expires first: the next ping then
 * gets its 401 and the app refreshes).
 *
 * A wait is a promise: it resolves with the changed folder ids, or rejects with the gate's error when the device
 * may no longer be told anything. The route turns that into the answer; nothing here writes a response.
 */
import type { CommittedChange, Folder } from '../store/types';
import { errors } from '../errors';
import { recheck, type Caller, type Channel, type EndReason, type PushContext } from './channels';

export class PingWait implements Channel {
  readonly kind = 'ping';
  private timer?: NodeJS.Timeout;
  private unsubscribe?: () => void;
  private signal?: AbortSignal;
  private done = false;
  /** The folders to answer with, gathered while the re-check before the answer runs (undefined: no answer under way). */
  private answering?: Set<string>;
  private resolve!: (changed: string[]) => void;
  private reject!: (err: Error) => void;
  private readonly answered = new Promise<string[]>((resolve, reject) => {
    this.resolve = resolve;
    this.reject = reject;
  });

  constructor(
    private readonly ctx: PushContext,
    readonly caller: Caller,
    private readonly folders: Folder[],
  ) {}

  /**
   * Registers (throws 429/503 at once, before any answer), then waits: the promise settles when a watched folder
   * changes, at the heartbeat, when the channel ends, or (with `[]`, which nobody reads) when `signal` aborts.
   */
  start(heartbeatSeconds: number, signal: AbortSignal): Promise<string[]> {
    const { ctx, caller } = this;
    ctx.registry.open(this);
    if (signal.aborted) {
      this.end('clientGone');
      return this.answered;
    }
    this.signal = signal;
    signal.addEventListener('abort', this.onAbort, { once: true });
    const already = this.folders.filter((f) => {
      const synced = ctx.watermarks.get(caller.recordId, f.id);
      // No note (this process never saw the device sync the folder, e.g. after a restart): say it changed.
      return synced === undefined || f.contentModseq > synced;
    });
    if (already.length) {
      this.answer(already.map((f) => f.id));
      return this.answered;
    }

    const watched = new Set(this.folders.map((f) => f.id));
    this.unsubscribe = ctx.bus.subscribe(caller.mailboxId, (change: CommittedChange) => {
      const hits = change.folderIds.filter((id) => watched.has(id));
      if (hits.length) this.answer(hits);
    });
    const untilExpiry = caller.expiresAt - ctx.clock.now();
    this.timer = setTimeout(() => this.answer([]), Math.max(0, Math.min(heartbeatSeconds * 1000, untilExpiry)));
    this.timer.unref();
    return this.answered;
  }

  private readonly onAbort = () => this.end('clientGone');

  /**
   * Answers (once), after checking the device may still be told anything. Folders that change while the check runs
   * join the answer.
   */
  private answer(changed: string[]): void {
    if (this.done) return;
    if (this.answering) {
      for (const id of changed) this.answering.add(id);
      return;
    }
    const answering = (this.answering = new Set(changed));
    void recheck(this.ctx, this.caller).then((denied) => {
      if (this.done) return; // ended meanwhile: the ending answered
      if (denied) return this.fail(denied);
      this.finish();
      this.resolve([...answering]);
    });
  }

  /** Ends with the gate's answer (403 deviceBlocked, wipeRequested, ...), so the app learns why at once. */
  private fail(err: Error): void {
    this.finish();
    this.reject(err);
  }

  private finish(): void {
    this.done = true;
    clearTimeout(this.timer);
    this.unsubscribe?.();
    this.signal?.removeEventListener('abort', this.onAbort);
    this.ctx.registry.release(this);
  }

  end(reason: EndReason): void {
    if (this.done) return;
    // The wait and its channel slot end now, whatever the answer.
    this.finish();
    if (reason === 'cut' || reason === 'revoked') {
      // The gate's answer (403 deviceBlocked, wipeRequested, ...), once the re-check has it; none: an empty answer.
      void recheck(this.ctx, this.caller).then((denied) => (denied ? this.reject(denied) : this.resolve([])));
      return;
    }
    // Replaced by a newer ping or stream, or shutting down: an empty answer, so the app simply polls again. (The
    // client gone: the same, written nowhere.)
    this.resolve([]);
  }
}

/**
 * The folders a ping watches, each once, in the watched mailbox; a folder of another mailbox (another user's, or the
 * caller's own in a shared mailbox's ping) is not found either (404 folderNotFound).
 */
export async function watchedFolders(ctx: PushContext, mailboxId: string, ids: readonly string[]): Promise<Folder[]> {
  const unique = [...new Set(ids)];
  const folders = await Promise.all(unique.map((id) => ctx.store.folders.byId(mailboxId, id)));
  return folders.map((folder, i) => {
    if (!folder) throw errors.folderNotFound(`No such folder: ${unique[i]}.`);
    return folder;
  });
}
