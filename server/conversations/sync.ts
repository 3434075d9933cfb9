/**
 * Per-folder conversation sync (Organize by Thread): the stateless, windowed design of item sync
 * (server/sync/itemSync.ts) over the folder's conversation rows (ConversationRecord) instead of its items.
 *
 * A token names a held set: "every live conversation of folder F whose key (latest message time, conversation id)
 * is ≥ L, with its values as of modseq M" (plus the window size S). What differs from items: a conversation's key
 * CHANGES when its messages change (a reply makes it the newest), so for a conversation touched after M the server
 * cannot tell whether the device held it. The design stays exact by never needing to know:
 *
 *   Phase A — replay: the folder's conversation rows changed after M, in modseq order (each row once, at its latest
 *     change). A live row with key ≥ L is sent whole in `updated`: an upsert, which an app that did not hold it adds.
 *     Any other row (a tombstone, or a key that fell below L) is `removed` — `deleted` for a tombstone, `evicted`
 *     otherwise — which costs an app that did not hold it nothing.
 *   Phase B — re-window: once the history is drained, L moves to the S-th newest conversation's key L': live rows in
 *     [L, L') are `evicted` (replacing an upsert of this page), rows in [L', L) are `created`, newest first
 *     (replacing a removal of this page). A conversation untouched since M kept its key, so "held ⇔ key ≥ L" is exact
 *     for it; a touched one was upserted or removed in phase A already.
 *
 * Mid-replay the position (C, L) means: every conversation whose row's modseq is ≤ C is held exactly when it is
 * live with key ≥ L, with its current values; rows stamped after C are replayed later and overwrite whatever the
 * device has. So every page's token is again an exact position: a lost response is retried with the previous token,
 * nothing is stored per device, and all reads of a page run in one unit of work (one snapshot).
 *
 * The replay pages by modseq alone: the store stamps at most one conversation row of a folder per modseq (each
 * change is one message's, and a move stamps two rows of two folders), so a page never ends inside a modseq.
 *
 * A poll whose folder has not changed since M (its `contentModseq`, which every change to one of its messages moves)
 * and whose window needs nothing (z = 1, same size) reads nothing beyond the folder's own read and answers the token
 * it was given. The token carries the folder's conversation count (`n`) for that answer's `window`.
 */
import type { Clock } from '../clock';
import { errors } from '../errors';
import type { ConversationKey, ConversationRecord, DeviceRecord, Folder, Item, Mailbox, SortKey, Step, Store, TxStore } from '../store/types';
import { MAX_KEY, MIN_KEY, checkPosition, compareKeys, nextWindow, type ConversationToken, type TokenCodec } from '../sync/tokens';
import { PAGE_BYTE_BUDGET, PROTOCOL_WINDOW, type WindowSizes } from '../sync/itemSync';
import { conversationView, type ConversationView } from './view';

export interface ConversationSyncRequest {
  /** The mailbox's user id (the caller's own or a shared mailbox's). */
  userId: string;
  device: DeviceRecord;
  folder: Folder;
  token?: string;
  maxChanges: number;
  loadMore: boolean;
}

export interface ConversationRemoved {
  id: string;
  /** `deleted`: no message of the conversation is left in the folder; `evicted`: it fell out of the window. */
  reason: 'deleted' | 'evicted';
}

export interface ConversationSyncPage {
  token: string;
  moreAvailable: boolean;
  window: { size: number; max: number; conversationsInFolder: number; hasOlder: boolean };
  /** Conversations the window pulled in (the device did not hold them). */
  created: ConversationView[];
  /** Conversations that changed: whole views, applied as upserts (an app that did not hold one adds it). */
  updated: ConversationView[];
  removed: ConversationRemoved[];
}

/** The position a conversation token carries (its `n`: what a no-change poll answers in `window` without a read). */
type Position = ConversationToken;

/** The conversation keys as the token codec's sort keys (same order: time, then id, bytewise). */
const asSortKey = (k: ConversationKey): SortKey => ({ receivedAt: k.latestReceivedAt, id: k.conversationId });
const asConversationKey = (k: SortKey): ConversationKey => ({ latestReceivedAt: k.receivedAt, conversationId: k.id });
const keyOf = (r: ConversationRecord): SortKey => ({ receivedAt: r.latestReceivedAt, id: r.conversationId });

/** Each entry's JSON, made once while the page is measured against its byte budget and reused by `conversationPageJson`. */
const serialized = new WeakMap<object, string>();

/** The page as JSON — exactly `JSON.stringify(page)`, built from the entries' JSON already made. */
export function conversationPageJson(page: ConversationSyncPage): string {
  const list = (entries: object[]) => `[${entries.map((e) => serialized.get(e) ?? JSON.stringify(e)).join(',')}]`;
  return (
    `{"token":${JSON.stringify(page.token)},"moreAvailable":${page.moreAvailable},"window":${JSON.stringify(page.window)},` +
    `"created":${list(page.created)},"updated":${list(page.updated)},"removed":${list(page.removed)}}`
  );
}

/** Every member equal: encoding `a` would give the text `b` came from. */
function samePosition(a: Position, b: Position): boolean {
  return (
    a.u === b.u && a.d === b.d && a.di === b.di && a.f === b.f && a.e === b.e && a.de === b.de && a.m === b.m &&
    a.l[0] === b.l[0] && a.l[1] === b.l[1] && a.s === b.s && a.x === b.x && a.z === b.z && a.n === b.n
  );
}

/** Folders that hold no mail have no conversations. */
const NOT_MAIL = new Set<Folder['kind']>(['calendar', 'contacts']);

/** Where the device stands and what this answer works toward. */
interface Standing {
  pos: Position;
  initial: boolean;
  size: number;
  extendedAt: number;
  /** Nothing to replay or re-window: the answer is the position itself, at the mailbox's modseq. */
  quiet: boolean;
}

interface PageEntries {
  created: ConversationView[];
  updated: ConversationView[];
  removed: ConversationRemoved[];
  modseq: number;
  lower: SortKey;
  more: boolean;
  count: number;
}

export function createConversationSync(deps: {
  store: Store;
  clock: Clock;
  codec: TokenCodec;
  trimAfterMs: number;
  /** The protocol's 500 / +500 / 1000 conversations; tests use small windows to reach every edge with few messages. */
  window?: WindowSizes;
}) {
  const { store, clock, codec } = deps;
  const W = deps.window ?? PROTOCOL_WINDOW;

  /** The position `req` claims (`claimed`: its decoded token, none for an initial sync), checked against `mailbox`. */
  function standing(req: ConversationSyncRequest, claimed: Position | undefined, mailbox: Mailbox, now: number): Standing {
    const { userId, device, folder } = req;
    let pos: Position;
    const initial = claimed === undefined;
    if (claimed !== undefined) {
      pos = claimed;
      checkPosition(pos, mailbox, device);
      // Only this module makes these; a token without the count is not one of its own.
      if (typeof pos.n !== 'number') throw errors.invalidToken();
    } else {
      pos = {
        k: 'c', u: userId, d: device.id, di: device.deviceId, f: folder.id, e: mailbox.epoch, de: device.epoch,
        m: mailbox.highestModseq, l: [MAX_KEY.receivedAt, MAX_KEY.id], s: W.initial, x: 0, z: 0, n: 0,
      };
    }

    // The window this answer works toward: extended by loadMore, trimmed back once extended for too long.
    const { size, extendedAt } = nextWindow(pos, req.loadMore, now, W, deps.trimAfterMs);
    const quiet = !initial && folder.contentModseq <= pos.m && size === pos.s && pos.z === 1;
    return { pos, initial, size, extendedAt, quiet };
  }

  function finish(req: ConversationSyncRequest, mailbox: Mailbox, s: Standing, entries: PageEntries): ConversationSyncPage {
    const { userId, device, folder } = req;
    const token: Position = {
      k: 'c', u: userId, d: device.id, di: device.deviceId, f: folder.id, e: mailbox.epoch, de: device.epoch,
      m: entries.modseq, l: [entries.lower.receivedAt, entries.lower.id], s: s.size, x: s.extendedAt, z: entries.more ? 0 : 1,
      n: entries.count,
    };
    return {
      // Nothing moved (the usual poll): the position is the one presented, so is its text — no new MAC.
      token: req.token !== undefined && samePosition(token, s.pos) ? req.token : codec.encode(token),
      moreAvailable: entries.more,
      window: { size: s.size, max: W.max, conversationsInFolder: entries.count, hasOlder: entries.count > s.size },
      created: entries.created,
      updated: entries.updated,
      removed: entries.removed,
    };
  }

  /** A quiet position's page: nothing sent, the position moved to the mailbox's modseq. Reads nothing. */
  const quietEntries = (s: Standing, mailbox: Mailbox): PageEntries => ({
    created: [],
    updated: [],
    removed: [],
    modseq: mailbox.highestModseq,
    lower: { receivedAt: s.pos.l[0], id: s.pos.l[1] },
    more: false,
    count: s.pos.n,
  });

  /** The latest messages of `rows`, read in one statement. */
  function* latestOf(tx: TxStore, userId: string, rows: ConversationRecord[]): Step<Map<string, Item>> {
    if (rows.length === 0) return new Map();
    return new Map((yield* tx.items.byIds(userId, rows.map((r) => r.latestItemId))).map((i) => [i.id, i]));
  }

  function* pageEntries(tx: TxStore, req: ConversationSyncRequest, mailbox: Mailbox, s: Standing): Step<PageEntries> {
    const { userId, folder } = req;
    const { pos, size } = s;

    // Upserts by conversation id (which list each went to), removals by id: one entry per conversation per page.
    const upserts = new Map<string, { view: ConversationView; list: 'created' | 'updated' }>();
    const removed = new Map<string, ConversationRemoved>();
    let bytes = 0;
    const room = () => req.maxChanges - upserts.size - removed.size;
    const full = () => room() <= 0 || bytes >= PAGE_BYTE_BUDGET;
    const measure = (entry: object) => {
      const json = JSON.stringify(entry);
      serialized.set(entry, json);
      bytes += json.length;
    };
    const upsert = (row: ConversationRecord, latest: Map<string, Item>, list: 'created' | 'updated') => {
      const view = conversationView(row, latest.get(row.latestItemId));
      measure(view);
      upserts.set(row.conversationId, { view, list });
    };
    const remove = (id: string, reason: ConversationRemoved['reason']) => {
      const entry = { id, reason };
      measure(entry);
      removed.set(id, entry);
    };

    let lower: SortKey = { receivedAt: pos.l[0], id: pos.l[1] };
    let modseq = mailbox.highestModseq;
    let more = false;

    if (!s.initial) {
      // Phase A: the rows changed after M, in modseq order.
      let cursor = pos.m;
      const held = (row: ConversationRecord) => row.messageCount > 0 && compareKeys(keyOf(row), lower) >= 0;
      scan: for (;;) {
        const batch = yield* tx.conversations.changedSince(userId, folder.id, cursor, req.maxChanges + 1);
        const latest = yield* latestOf(tx, userId, batch.filter(held));
        for (const row of batch) {
          if (full()) {
            more = true;
            break scan;
          }
          cursor = row.modseq;
          if (held(row)) upsert(row, latest, 'updated');
          else remove(row.conversationId, row.messageCount === 0 ? 'deleted' : 'evicted');
        }
        if (batch.length <= req.maxChanges) break;
      }
      if (more) modseq = cursor;
    }

    const count = yield* tx.conversations.count(userId, folder.id);

    // Phase B: move the lower bound to the window's boundary.
    if (!more) {
      const boundary = count > size ? yield* tx.conversations.boundary(userId, folder.id, size) : undefined;
      const target: SortKey = boundary ? asSortKey(boundary) : MIN_KEY;
      if (compareKeys(lower, target) < 0) {
        // Each row evicts (one entry of room) or replaces an upsert of this page (net zero): room + upserts + 1 rows
        // either fill the page or drain the range, so "not more" really means drained.
        const out = yield* tx.conversations.range(userId, folder.id, asConversationKey(lower), asConversationKey(target), 'asc', Math.max(room(), 0) + 1 + upserts.size);
        for (const row of out) {
          if (full()) {
            more = true;
            lower = keyOf(row);
            break;
          }
          upserts.delete(row.conversationId);
          remove(row.conversationId, 'evicted');
        }
        if (!more) lower = target;
      } else if (compareKeys(target, lower) < 0) {
        // Each row is created (one entry of room) or replaces a removal of this page (net zero), as above.
        const into = yield* tx.conversations.range(userId, folder.id, asConversationKey(target), asConversationKey(lower), 'desc', Math.max(room(), 0) + 1 + removed.size);
        const latest = yield* latestOf(tx, userId, into);
        for (const row of into) {
          if (full()) {
            more = true;
            break;
          }
          // Upserted on this page already? Its key is ≥ L then, so not in this range; kept as a guard all the same.
          if (!upserts.has(row.conversationId)) {
            // Removed by the replay (its key had fallen below L) and now pulled back in: one entry, the creation.
            removed.delete(row.conversationId);
            upsert(row, latest, 'created');
          }
          lower = keyOf(row);
        }
        if (!more) lower = target;
      }
    }

    const created: ConversationView[] = [];
    const updated: ConversationView[] = [];
    for (const { view, list } of upserts.values()) (list === 'created' ? created : updated).push(view);
    return { created, updated, removed: [...removed.values()], modseq, lower, more, count };
  }

  return async function syncConversations(req: ConversationSyncRequest): Promise<ConversationSyncPage> {
    const now = clock.now();
    const { userId, device, folder } = req;
    if (NOT_MAIL.has(folder.kind)) {
      throw errors.invalidRequest('Conversations are for mail folders; this folder holds no mail.', [{ field: 'folderId', message: 'not a mail folder' }]);
    }
    const claimed =
      req.token === undefined
        ? undefined
        : (codec.decode(req.token, 'c', { userId, deviceRecordId: device.id, deviceId: device.deviceId, folderId: folder.id }) as Position);
    // The usual poll: the folder's read (folders.byId) carried its mailbox state, and nothing changed since the
    // token — answered from that read, without a transaction or another statement.
    const state = folder.mailboxState;
    if (state && claimed !== undefined) {
      const s = standing(req, claimed, state.mailbox, now);
      if (s.quiet) return finish(req, state.mailbox, s, quietEntries(s, state.mailbox));
    }
    // Everything else reads in one unit of work: one snapshot, so a page never mixes two states.
    return store.run(function* (tx) {
      const mailbox = yield* tx.mailboxes.get(userId);
      if (!mailbox) throw errors.notFound('No mailbox.');
      const s = standing(req, claimed, mailbox, now);
      const entries = s.quiet ? quietEntries(s, mailbox) : yield* pageEntries(tx, req, mailbox, s);
      return finish(req, mailbox, s, entries);
    });
  };
}
