/**
 * Resync that keeps the app's cache (issue 19; protocol.md §5).
 *
 * After a 410 (tokenExpired, mailboxReset, deviceReset, viewChanged) — or at any time — an app need not drop a folder
 * and download its whole window again: it sends what it holds of the folder (ids, with the change key of each copy)
 * and the server answers only the difference to the folder's current window:
 *
 *   created    window items the app does not hold, newest first (full view, and body as item sync's bodyBytes does);
 *   updated    held items still in the window whose change key differs or was not given: the FULL view, since after
 *              a reset the app's copy may be stale in any field (not just the fields an item-sync patch carries);
 *   removed    held ids not in the window: `deleted` when the mailbox has no such item (an id of another user's
 *              item included: never another user's data, not even whether it exists), `moved` when it is in another
 *              folder, `evicted` when it is in this folder but below the window;
 *   unchanged  how many held items are in the window with the change key the app gave.
 *
 * and a fresh token: exactly the position an initial sync (with loadMore: one that extended the window once) would
 * end at — held set = the window as of the mailbox's modseq — so the next poll is an ordinary incremental item sync.
 *
 * One answer, no paging: the window is at most 1,000 items (PROTOCOL_WINDOW.max), and `held` at most MAX_HELD ids, so
 * the answer is bounded by both. Calendar and contacts folders have no window (every item, as item sync): there the
 * answer holds every item the app lacks, which for an app that kept its cache is the few that changed.
 *
 * Everything is read in one unit of work (one transaction, one snapshot): the window, the held items' whereabouts,
 * the counts and the modseq of the token all describe the same state. Nothing is written: a resync changes nothing
 * (so it needs no Idempotency-Key, and a lost answer is simply asked again).
 *
 * Change keys are compared as the app gives them. They name a version within one history of the mailbox: a change
 * key is the modseq that stamped the version, and a mailbox restored from a backup stamps those modseqs again, so
 * after a restore (mailboxReset) a key the app holds may name another version of the same item. Keys unique across
 * epochs would close that; they are the store's to make.
 */
import type { Clock } from '../clock';
import { errors } from '../errors';
import type { DeviceRecord, Folder, Item, SortKey, Step, Store, TxStore } from '../store/types';
import { MAX_KEY, MIN_KEY, nextWindow, type ItemToken, type TokenCodec } from './tokens';
import { PROTOCOL_WINDOW, UNWINDOWED, type RemovedEntry, type WindowSizes } from './itemSync';
import { emailBody, itemView, type ItemView } from '../views';

/** At most this many held entries per request: a whole extended window (PROTOCOL_WINDOW.max). */
export const MAX_HELD = 1000;


/** `range`'s limit for a folder without a window: every item (both backends read it as a plain LIMIT). */
const EVERY_ITEM = Number.MAX_SAFE_INTEGER;

export interface HeldEntry {
  id: string;
  /** The change key of the app's copy; without one the copy is sent again in full (`updated`) when in the window. */
  changeKey?: string;
}

export interface ResyncRequest {
  userId: string;
  device: DeviceRecord;
  folder: Folder;
  held: HeldEntry[];
  loadMore: boolean;
  bodyBytes: number;
}

export interface ResyncAnswer {
  token: string;
  /** Always false: the answer is complete (see the module comment). */
  moreAvailable: false;
  window: { size: number; max: number | null; itemsInFolder: number; hasOlder: boolean };
  created: ItemView[];
  updated: ItemView[];
  removed: RemovedEntry[];
  unchanged: number;
}

export function createResync(deps: { store: Store; clock: Clock; codec: TokenCodec; window?: WindowSizes }) {
  const { store, clock, codec } = deps;
  const W = deps.window ?? PROTOCOL_WINDOW;

  function* withBody(tx: TxStore, view: ItemView, item: Item, bodyBytes: number): Step<ItemView> {
    if (bodyBytes <= 0 || item.type !== 'email') return view;
    return { ...view, body: emailBody(yield* tx.items.body(item.userId, item.id), undefined, bodyBytes) };
  }

  return async function resync(req: ResyncRequest): Promise<ResyncAnswer> {
    if (req.held.length > MAX_HELD) {
      throw errors.invalidRequest(`At most ${MAX_HELD} held items per resync (a folder's window is at most ${W.max}).`);
    }
    const now = clock.now();
    const { userId, device } = req;
    // The app's copy of each id; a repeated id counts once (its first entry).
    const held = new Map<string, string | undefined>();
    for (const h of req.held) if (!held.has(h.id)) held.set(h.id, h.changeKey);

    return store.run(function* (tx) {
      const mailbox = yield* tx.mailboxes.get(userId);
      if (!mailbox) throw errors.notFound('No mailbox.');
      // The folder again, inside the unit: its counts must be of the same snapshot as the window.
      const folder = yield* tx.folders.byId(userId, req.folder.id);
      if (!folder) throw errors.folderNotFound(); // deleted since the caller read it

      // The window an initial sync would end at: the `size` newest items, from the window's lower boundary up.
      const windowed = !UNWINDOWED.has(folder.kind);
      // (An initial sync's window is the initial size, extended once by loadMore.)
      const { size, extendedAt } = windowed ? nextWindow({ s: W.initial, x: 0 }, req.loadMore, now, W, Infinity) : { size: 0, extendedAt: 0 };
      const lower: SortKey =
        windowed && folder.totalCount > size ? ((yield* tx.sync.boundary(userId, folder.id, size)) ?? MIN_KEY) : MIN_KEY;
      const inWindow = yield* tx.sync.range(userId, folder.id, lower, MAX_KEY, 'desc', windowed ? size : EVERY_ITEM);

      const created: ItemView[] = [];
      const updated: ItemView[] = [];
      let unchanged = 0;
      const windowIds = new Set<string>();
      for (const item of inWindow) {
        windowIds.add(item.id);
        if (!held.has(item.id)) created.push(yield* withBody(tx, itemView(item), item, req.bodyBytes));
        else if (held.get(item.id) === item.changeKey) unchanged++;
        else updated.push(itemView(item));
      }

      // Held ids outside the window: where are they now? `byIds` reads this mailbox's items only, so another
      // user's id is simply not found: `deleted`, exactly as an id that exists nowhere.
      const outside = [...held.keys()].filter((id) => !windowIds.has(id));
      const found = new Map((outside.length ? yield* tx.items.byIds(userId, outside) : []).map((i) => [i.id, i]));
      const removed: RemovedEntry[] = outside.map((id) => {
        const item = found.get(id);
        return { id, reason: item === undefined ? 'deleted' : item.folderId !== folder.id ? 'moved' : 'evicted' };
      });

      const token: ItemToken = {
        k: 'i', u: userId, d: device.id, di: device.deviceId, f: folder.id, e: mailbox.epoch, de: device.epoch,
        m: mailbox.highestModseq, l: [lower.receivedAt, lower.id], s: size, x: extendedAt, z: 1, h: mailbox.highestModseq,
      };
      return {
        token: codec.encode(token),
        moreAvailable: false as const,
        window: {
          size: windowed ? size : folder.totalCount,
          max: windowed ? W.max : null,
          itemsInFolder: folder.totalCount,
          hasOlder: windowed && folder.totalCount > size,
        },
        created,
        updated,
        removed,
        unchanged,
      };
    });
  };
}
