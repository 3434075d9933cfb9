/**
 * Hierarchy sync (protocol.md §4): folders changed after the token's cursor, in (modseq, id) order, and folder
 * tombstones. The cursor carries the id as well as the modseq because one change can move several folders at once
 * (a move changes the counts of both folders under one modseq): paging by modseq alone would skip the second
 * (the cyrus-imapd paging bug).
 */
import { errors } from '../errors';
import type { DeviceRecord, Store } from '../store/types';
import { resyncRequired, type HierarchyToken, type TokenCodec } from './tokens';
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
  return function syncFolders(req: { userId: string; device: DeviceRecord; token?: string; maxChanges: number }): FolderSyncPage {
    return store.transaction(() => {
      const mailbox = store.mailboxes.get(req.userId);
      if (!mailbox) throw errors.notFound('No mailbox.');
      let m = 0;
      let c = '';
      const initial = req.token === undefined;
      if (req.token !== undefined) {
        const t = codec.decode(req.token, 'h', { userId: req.userId, deviceRecordId: req.device.id, deviceId: req.device.deviceId });
        if (t.e !== mailbox.epoch) throw resyncRequired('mailboxReset');
        if (t.de !== req.device.epoch) throw resyncRequired('deviceReset');
        if (t.m > mailbox.highestModseq) throw resyncRequired('mailboxReset');
        if (t.m < mailbox.purgedModseq) throw resyncRequired('tokenExpired');
        m = t.m;
        c = t.c;
      }
      const heldAt = m;
      const limit = req.maxChanges;
      const changed = store.folders.changedSince(req.userId, { modseq: m, id: c }, limit + 1);
      // A folder created and deleted after the cursor was never seen; on an initial sync no tombstone matters.
      const gone = initial ? [] : store.folders.deletedSince(req.userId, m, limit + 1);
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
      const token: HierarchyToken = {
        k: 'h', u: req.userId, d: req.device.id, di: req.device.deviceId, e: mailbox.epoch, de: req.device.epoch,
        m: more ? last!.modseq : mailbox.highestModseq,
        c: more ? last!.id : END_OF_MODSEQ,
      };
      return { token: codec.encode(token), moreAvailable: more, created, updated, deleted };
    });
  };
}
