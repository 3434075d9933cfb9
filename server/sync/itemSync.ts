/**
 * Per-folder item sync (protocol.md §5).
 *
 * A token names a held set: "every item of folder F with sort key ≥ L, with its values as of modseq M" (plus the
 * window size S). Each request moves that set toward the folder's current window W' = the S' newest items:
 *
 *   Phase A — replay: the folder's history after M among keys ≥ L, in modseq order. An item in F now is `updated`
 *     when the device already held it (it was placed in F at or before M) and `created` otherwise; an item that left
 *     F is `removed` (`deleted` / `moved`) unless it is back in F (then its newer entry follows). Below L nothing is
 *     sent: the device never held it — a mass delete far below the window costs the device nothing.
 *   Phase B — re-window: once the history is drained, L moves to W's boundary L': items in [L, L') are `evicted`
 *     oldest first, items in [L', L) are `created` newest first.
 *
 * Every page ends at a position that is again exactly such a held set, so a page's token is a complete description
 * of the device: a lost response is retried with the previous token, and nothing is stored per device. All reads run
 * in one unit of work (one transaction, one snapshot), so a page never mixes two states. A poll whose folder has not
 * changed since M reads nothing beyond the folder's own read (its row, its mailbox and the hierarchy state: one
 * statement, one snapshot) and writes nothing.
 */
import type { Clock } from '../clock';
import { errors } from '../errors';
import type { DeviceRecord, Folder, Item, Mailbox, SortKey, Step, Store, TxStore } from '../store/types';
import { MAX_KEY, MIN_KEY, checkPosition, compareKeys, nextWindow, type ItemToken, type TokenCodec, type WindowSizes } from './tokens';
import { emailBody, itemPatchView, itemView, type ItemView } from '../views';

export const DEFAULT_WINDOW = 500;
export const WINDOW_STEP = 500;
export const MAX_WINDOW = 1000;
export const DEFAULT_MAX_CHANGES = 100;
export const MAX_CHANGES = 512;
/** A page also ends once its entries add up to about this many bytes of JSON. */
export const PAGE_BYTE_BUDGET = 512 * 1024;

/** Folders without a window: every item, paged (calendars and contacts). */
export const UNWINDOWED: ReadonlySet<string> = new Set(['calendar', 'contacts']);

export interface ItemSyncRequest {
  userId: string;
  device: DeviceRecord;
  folder: Folder;
  token?: string;
  maxChanges: number;
  loadMore: boolean;
  bodyBytes: number;
}

export interface RemovedEntry {
  id: string;
  reason: 'deleted' | 'moved' | 'evicted';
}

export interface ItemSyncPage {
  token: string;
  moreAvailable: boolean;
  hierarchyState: string;
  window: { size: number; max: number | null; itemsInFolder: number; hasOlder: boolean };
  created: ItemView[];
  updated: ItemView[];
  removed: RemovedEntry[];
}

const keyOf = (item: Pick<Item, 'receivedAt' | 'id'>): SortKey => ({ receivedAt: item.receivedAt, id: item.id });

/**
 * Each entry's JSON, made once while the page is measured against its byte budget and reused by `pageJson`, so a
 * 500-item page is not serialised twice (bench, scenario 2).
 */
const serialized = new WeakMap<object, string>();

/** The page as JSON — exactly `JSON.stringify(page)`, built from the entries' JSON already made. */
export function pageJson(page: ItemSyncPage): string {
  const list = (entries: object[]) => `[${entries.map((e) => serialized.get(e) ?? JSON.stringify(e)).join(',')}]`;
  return (
    `{"token":${JSON.stringify(page.token)},"moreAvailable":${page.moreAvailable},"hierarchyState":${JSON.stringify(page.hierarchyState)},` +
    `"window":${JSON.stringify(page.window)},"created":${list(page.created)},"updated":${list(page.updated)},"removed":${list(page.removed)}}`
  );
}

/** Every member equal: encoding `a` would give the text `b` came from. */
function samePosition(a: ItemToken, b: ItemToken): boolean {
  return (
    a.u === b.u && a.d === b.d && a.di === b.di && a.f === b.f && a.e === b.e && a.de === b.de && a.m === b.m &&
    a.l[0] === b.l[0] && a.l[1] === b.l[1] && a.s === b.s && a.x === b.x && a.z === b.z && a.h === b.h && a.k === b.k
  );
}

export type { WindowSizes } from './tokens';

export const PROTOCOL_WINDOW: WindowSizes = { initial: DEFAULT_WINDOW, step: WINDOW_STEP, max: MAX_WINDOW };

/** Where the device stands and what this answer works toward: the token checked against the mailbox. */
interface Position {
  pos: ItemToken;
  initial: boolean;
  windowed: boolean;
  /** The window size this answer works toward, and when it was extended (0: not extended). */
  size: number;
  extendedAt: number;
  /**
   * "Placed at or before this" = the device holds it (when its key is ≥ the lower bound). Mid-replay that is where
   * the replay started, not where the last page stopped (see ItemToken.h).
   */
  heldAt: number;
  /** Nothing to replay or re-window: the answer is the position itself, at the mailbox's modseq. */
  quiet: boolean;
}

/** What a page sends, and where it leaves the device. */
interface PageEntries {
  created: ItemView[];
  updated: ItemView[];
  removed: RemovedEntry[];
  modseq: number;
  lower: SortKey;
  more: boolean;
  replayUnfinished: boolean;
}

export function createItemSync(deps: {
  store: Store;
  clock: Clock;
  codec: TokenCodec;
  trimAfterMs: number;
  /** The protocol's 500 / +500 / 1000; tests use small windows to exercise every edge with few items. */
  window?: WindowSizes;
}) {
  const { store, clock, codec } = deps;
  const W = deps.window ?? PROTOCOL_WINDOW;

  function* withBody(tx: TxStore, view: ItemView, item: Item, bodyBytes: number): Step<ItemView> {
    if (bodyBytes <= 0 || item.type !== 'email') return view;
    return { ...view, body: emailBody(yield* tx.items.body(item.userId, item.id), undefined, bodyBytes) };
  }

  /** The position `req` claims (`claimed`: its decoded token, none for an initial sync), checked against `mailbox`. */
  function position(req: ItemSyncRequest, claimed: ItemToken | undefined, mailbox: Mailbox, now: number): Position {
    const { userId, device, folder } = req;
    const windowed = !UNWINDOWED.has(folder.kind);

    // The position the device claims, checked against what this mailbox can still serve.
    let pos: ItemToken;
    const initial = claimed === undefined;
    if (claimed !== undefined) {
      pos = claimed;
      checkPosition(pos, mailbox, device);
    } else {
      pos = {
        k: 'i', u: userId, d: device.id, di: device.deviceId, f: folder.id, e: mailbox.epoch, de: device.epoch,
        m: mailbox.highestModseq, l: [MAX_KEY.receivedAt, MAX_KEY.id], s: windowed ? W.initial : 0, x: 0, z: 0, h: mailbox.highestModseq,
      };
    }

    // The window this response works toward: extended by loadMore, trimmed back once extended for too long.
    const { size, extendedAt } = windowed ? nextWindow(pos, req.loadMore, now, W, deps.trimAfterMs) : { size: pos.s, extendedAt: pos.x };

    const heldAt = pos.h ?? pos.m;
    if (heldAt > pos.m) throw errors.invalidToken();
    const quiet = !initial && folder.contentModseq <= pos.m && size === pos.s && pos.z === 1;
    return { pos, initial, windowed, size, extendedAt, heldAt, quiet };
  }

  /** The page that leaves the device at `entries`, with its token. */
  function finish(req: ItemSyncRequest, mailbox: Mailbox, p: Position, entries: PageEntries, hierarchyState: string): ItemSyncPage {
    const { userId, device, folder } = req;
    const { modseq, lower, more } = entries;
    const token: ItemToken = {
      k: 'i', u: userId, d: device.id, di: device.deviceId, f: folder.id, e: mailbox.epoch, de: device.epoch,
      m: modseq, l: [lower.receivedAt, lower.id], s: p.size, x: p.extendedAt, z: more ? 0 : 1, h: entries.replayUnfinished ? p.heldAt : modseq,
    };
    return {
      // Nothing moved (the usual poll): the position is the one presented, so is its text — no new MAC.
      token: req.token !== undefined && samePosition(token, p.pos) ? req.token : codec.encode(token),
      moreAvailable: more,
      hierarchyState,
      window: {
        size: p.windowed ? p.size : folder.totalCount,
        max: p.windowed ? W.max : null,
        itemsInFolder: folder.totalCount,
        hasOlder: p.windowed && folder.totalCount > p.size,
      },
      created: entries.created,
      updated: entries.updated,
      removed: entries.removed,
    };
  }

  /** A quiet position's page: nothing sent, the position moved to the mailbox's modseq. Reads nothing. */
  const quietEntries = (p: Position, mailbox: Mailbox): PageEntries => ({
    created: [],
    updated: [],
    removed: [],
    modseq: mailbox.highestModseq,
    lower: { receivedAt: p.pos.l[0], id: p.pos.l[1] },
    more: false,
    replayUnfinished: false,
  });

  /** The entries of the page for `req` at `p`: the history replay, then the re-window (steps of one unit). */
  function* pageEntries(tx: TxStore, req: ItemSyncRequest, mailbox: Mailbox, p: Position): Step<PageEntries> {
    const { userId, folder } = req;
    const { pos, heldAt, size } = p;
    if (p.quiet) return quietEntries(p, mailbox);

    const created: ItemView[] = [];
    const updated: ItemView[] = [];
    const removed: RemovedEntry[] = [];
    let bytes = 0;
    const room = () => req.maxChanges - created.length - updated.length - removed.length;
    const full = () => room() <= 0 || bytes >= PAGE_BYTE_BUDGET;
    const add = (list: object[], entry: object) => {
      list.push(entry);
      const json = JSON.stringify(entry);
      serialized.set(entry, json);
      bytes += json.length;
    };

    const removedIds = new Set<string>();
    let lower: SortKey = { receivedAt: pos.l[0], id: pos.l[1] };
    let modseq = pos.m;
    let more = false;
    let replayUnfinished = false;

    if (!p.initial) {
      // Phase A: replay the folder's history after M, in modseq order.
      let cursor = pos.m;
      scan: for (;;) {
        const batch = yield* tx.sync.changes(userId, folder.id, cursor, lower, req.maxChanges + 1);
        if (batch.length === 0) break;
        const present = new Map((yield* tx.items.byIds(userId, [...new Set(batch.map((c) => c.objectId))])).map((i) => [i.id, i]));
        for (const change of batch) {
          if (full()) {
            more = true;
            break scan;
          }
          cursor = change.modseq;
          const item = present.get(change.objectId);
          const inFolder = item !== undefined && item.folderId === folder.id;
          if (change.kind === 'item') {
            if (!inFolder || item.modseq !== change.modseq) continue; // superseded by a later entry
            if (item.placedModseq <= heldAt) add(updated, itemPatchView(item));
            else add(created, yield* withBody(tx, itemView(item), item, req.bodyBytes));
          } else if (!inFolder && !removedIds.has(change.objectId)) {
            // Gone from the folder. (Back in it? Then its own later entry carries it: no removal for a held item.)
            removedIds.add(change.objectId);
            add(removed, { id: change.objectId, reason: change.kind === 'deleted' ? 'deleted' : 'moved' });
          }
        }
        if (batch.length <= req.maxChanges) break;
      }
      modseq = more ? cursor : mailbox.highestModseq;
      replayUnfinished = more;
    } else {
      modseq = mailbox.highestModseq;
    }

    // Phase B: move the lower bound to the window's boundary.
    if (!more) {
      const target: SortKey = p.windowed && folder.totalCount > size ? (yield* tx.sync.boundary(userId, folder.id, size)) ?? MIN_KEY : MIN_KEY;
      if (compareKeys(lower, target) < 0) {
        // Each row evicts (one entry of room) or replaces a `created`/`updated` entry of this page (net zero). So
        // room + created + updated rows either fill the page or drain the range, and one more shows which: "not
        // more" then really means drained.
        const out = yield* tx.sync.range(userId, folder.id, lower, target, 'asc', Math.max(room(), 0) + 1 + created.length + updated.length);
        for (const item of out) {
          if (full()) {
            more = true;
            lower = keyOf(item);
            break;
          }
          // Already in this page from phase A (an old message arriving as the window fills, or a held item moved
          // out and back)? The eviction replaces that entry, so the id appears once. Even a `created` turns into
          // `evicted`, not into nothing: the device may have held the item before (it left and came back).
          const createdAt = created.findIndex((c) => c.id === item.id);
          if (createdAt >= 0) created.splice(createdAt, 1);
          const updatedAt = updated.findIndex((u) => u.id === item.id);
          if (updatedAt >= 0) updated.splice(updatedAt, 1);
          add(removed, { id: item.id, reason: 'evicted' });
        }
        if (!more) lower = target;
      } else if (compareKeys(target, lower) < 0) {
        const into = yield* tx.sync.range(userId, folder.id, target, lower, 'desc', Math.max(room(), 0) + 1);
        for (const item of into) {
          if (full()) {
            more = true;
            break;
          }
          add(created, yield* withBody(tx, itemView(item), item, req.bodyBytes));
          lower = keyOf(item);
        }
        if (!more) lower = target;
      }
    }
    return { created, updated, removed, modseq, lower, more, replayUnfinished };
  }

  return async function syncItems(req: ItemSyncRequest): Promise<ItemSyncPage> {
    const now = clock.now();
    const { userId, device, folder } = req;
    const claimed = req.token === undefined ? undefined : codec.decode(req.token, 'i', { userId, deviceRecordId: device.id, deviceId: device.deviceId, folderId: folder.id });
    // The usual poll: the folder's read (folders.byId) carried its mailbox and hierarchy state, one statement, and
    // nothing changed since the token — answered from that read, without a transaction or another statement.
    const state = folder.mailboxState;
    if (state && claimed !== undefined) {
      const p = position(req, claimed, state.mailbox, now);
      if (p.quiet) return finish(req, state.mailbox, p, quietEntries(p, state.mailbox), state.hierarchyState);
    }
    // Everything else reads in one unit of work: one snapshot, so a page never mixes two states.
    return store.run(function* (tx) {
      const mailbox = yield* tx.mailboxes.get(userId);
      if (!mailbox) throw errors.notFound('No mailbox.');
      const p = position(req, claimed, mailbox, now);
      const entries = yield* pageEntries(tx, req, mailbox, p);
      return finish(req, mailbox, p, entries, yield* tx.folders.hierarchyState(userId));
    });
  };
}
