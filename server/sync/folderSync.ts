/**
 * Hierarchy sync (protocol.md §4): folders changed after the token's cursor, in (modseq, id) order, and folder
 * tombstones. The cursor carries the id as well as the modseq because one change can move several folders at once
 * (a move changes the counts of both folders under one modseq): paging by modseq alone would skip the second
 * (the cyrus-imapd paging bug).
 */
import { errors } from '../errors';
import type { DeviceRecord, Mailbox, Store } from '../store/types';
import { checkPosition, type HierarchyToken, type TokenCodec } from './tokens';
import { folderView } from '../views';

/** Sorts after every id (ids are base64url): "everything at this modseq has been sent". */
const END_OF_MODSEQ = '~';

export interface FolderSyncPage {
  token: string;
  moreAvailable: boolean;
  created: ReturnType<typeof folderView>[];
  updated: ReturnType<typeof folderView>[];
  deleted: string[];
}

export function createFolderSync(deps: { store: Store; codec: TokenCodec }) {
  const { store, codec } = deps;
  type Request = { userId: string; device: DeviceRecord; token?: string; maxChanges: number };

  /** The token's cursor, checked against what this mailbox can still serve; none for an initial sync. */
  function cursor(req: Request, token: HierarchyToken | undefined, mailbox: Mailbox): { m: number; c: string } {
    if (!token) return { m: 0, c: '' };
    checkPosition(token, mailbox, req.device);
    return { m: token.m, c: token.c };
  }

  /** The token after a page that ends at `m` (`c`: the last folder sent at m, or END_OF_MODSEQ when m is done). */
  const next = (req: Request, mailbox: Mailbox, m: number, c: string): string =>
    codec.encode({ k: 'h', u: req.userId, d: req.device.id, di: req.device.deviceId, e: mailbox.epoch, de: req.device.epoch, m, c });

  return async function syncFolders(req: Request): Promise<FolderSyncPage> {
    const token = req.token === undefined ? undefined : codec.decode(req.token, 'h', { userId: req.userId, deviceRecordId: req.device.id, deviceId: req.device.deviceId });
    if (token) {
      // The usual poll: one statement says nothing changed after the cursor, and gives the mailbox to check it with.
      const poll = await store.folders.hierarchyPoll(req.userId, { modseq: token.m, id: token.c });
      if (!poll) throw errors.notFound('No mailbox.');
      cursor(req, token, poll.mailbox);
      if (!poll.changed) {
        // Nothing moved at all: the position is the one presented, and so is its text (no new MAC).
        const same = token.m === poll.mailbox.highestModseq && token.c === END_OF_MODSEQ;
        const text = same ? req.token! : next(req, poll.mailbox, poll.mailbox.highestModseq, END_OF_MODSEQ);
        return { token: text, moreAvailable: false, created: [], updated: [], deleted: [] };
      }
    }
    // Everything else reads in one unit of work: one snapshot, so a page never mixes two states.
    return store.run(function* (tx) {
      const mailbox = yield* tx.mailboxes.get(req.userId);
      if (!mailbox) throw errors.notFound('No mailbox.');
      const { m, c } = cursor(req, token, mailbox);
      const initial = token === undefined;
      const heldAt = m;
      const limit = req.maxChanges;
      const changed = yield* tx.folders.changedSince(req.userId, { modseq: m, id: c }, limit + 1);
      // A folder created and deleted after the cursor was never seen; on an initial sync no tombstone matters.
      const gone = initial ? [] : yield* tx.folders.deletedSince(req.userId, m, limit + 1);
      const entries = [
        ...changed.map((f) => ({ modseq: f.modseq, id: f.id, folder: f })),
        ...gone.map((g) => ({ modseq: g.modseq, id: g.id, folder: undefined })),
      ].sort((a, b) => a.modseq - b.modseq || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      const page = entries.slice(0, limit);
      const more = entries.length > limit;
      const created: FolderSyncPage['created'] = [];
      const updated: FolderSyncPage['updated'] = [];
      const deleted: string[] = [];
      for (const e of page) {
        if (!e.folder) deleted.push(e.id);
        else if (e.folder.createdModseq > heldAt) created.push(folderView(e.folder));
        else updated.push(folderView(e.folder));
      }
      const last = page[page.length - 1];
      return {
        token: more ? next(req, mailbox, last!.modseq, last!.id) : next(req, mailbox, mailbox.highestModseq, END_OF_MODSEQ),
        moreAvailable: more,
        created,
        updated,
        deleted,
      };
    });
  };
}
