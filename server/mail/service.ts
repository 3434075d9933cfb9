/**
 * Changes made by the app (protocol.md §4 folder operations, §6 item operations). Every lookup is by (user, id),
 * so another user's ids are simply not found; every change goes through the store, which stamps it in the change
 * log in the same transaction.
 *
 * Each operation is a unit of work (server/store/unit.ts): its checks and its change run in one transaction, so
 * nothing can slip in between the check and the write. A batch (./batch.ts) runs the item operations' `steps`, many
 * in the batch's one transaction.
 */
import { ApiError, errors } from '../errors';
import type { Clock } from '../clock';
import type { Folder, Item, ItemPatch, Step, Store, TxStore } from '../store/types';
import { folderView, itemView, type ItemView } from '../views';

const folderProtected = () => new ApiError(409, 'folderProtected', 'Well-known folders cannot be renamed, moved or deleted.');

/** Which folders an item of each type may live in. */
function accepts(folder: Folder, item: Item): boolean {
  if (item.type === 'event') return folder.kind === 'calendar';
  if (item.type === 'contact') return folder.kind === 'contacts';
  return folder.kind !== 'calendar' && folder.kind !== 'contacts';
}

function* ownItem(tx: TxStore, userId: string, id: string): Step<Item> {
  const found = yield* tx.items.byId(userId, id);
  if (!found) throw errors.itemNotFound();
  return found;
}

function* ownFolder(tx: TxStore, userId: string, id: string): Step<Folder> {
  const found = yield* tx.folders.byId(userId, id);
  if (!found) throw errors.folderNotFound();
  return found;
}

function* checkParent(tx: TxStore, userId: string, parentId: string | null, moving?: Folder): Step<void> {
  if (parentId === null) return;
  const parent = yield* tx.folders.byId(userId, parentId);
  if (!parent) throw errors.invalidRequest('The parent folder does not exist.', [{ field: 'parentId', message: 'not found' }]);
  if (parent.kind === 'calendar' || parent.kind === 'contacts') {
    throw errors.invalidRequest('Mail folders cannot be created under calendar or contacts.', [{ field: 'parentId', message: 'not a mail folder' }]);
  }
  // A folder cannot move under itself or its own descendants.
  for (let p: Folder | undefined = parent; moving && p; p = p.parentId ? yield* tx.folders.byId(userId, p.parentId) : undefined) {
    if (p.id === moving.id) throw errors.invalidRequest('A folder cannot be moved under itself.', [{ field: 'parentId', message: 'cycle' }]);
  }
}

function* checkSiblingName(tx: TxStore, userId: string, parentId: string | null, name: string, except?: string): Step<void> {
  const clash = (yield* tx.folders.listByUser(userId)).some(
    (f) => f.parentId === parentId && f.id !== except && f.displayName.toLowerCase() === name.toLowerCase(),
  );
  if (clash) throw errors.invalidRequest('A folder with this name already exists here.', [{ field: 'displayName', message: 'duplicate' }]);
}

/** `ifMatch`: the change key the app last saw; a newer server version wins and is returned with the 412. */
function* updateItemIn(tx: TxStore, userId: string, id: string, patch: ItemPatch, ifMatch: string | undefined, now: number): Step<ItemView> {
  const current = yield* ownItem(tx, userId, id);
  // `*` matches any current version (RFC 9110 §13.1.1): the item only has to exist.
  if (ifMatch !== undefined && ifMatch !== '*' && ifMatch !== current.changeKey) {
    throw new ApiError(412, 'conflict', 'The item changed since that version; the server\'s version is attached.', { item: itemView(current) });
  }
  if (current.type !== 'email' && (patch.isRead !== undefined || patch.inferenceClassification !== undefined)) {
    throw errors.invalidRequest('Only mail has isRead and inferenceClassification.');
  }
  return itemView(yield* tx.items.update(userId, id, patch, now));
}

function* moveItemIn(tx: TxStore, userId: string, id: string, destinationFolderId: string, now: number): Step<ItemView> {
  const current = yield* ownItem(tx, userId, id);
  const destination = yield* tx.folders.byId(userId, destinationFolderId);
  if (!destination) throw errors.folderNotFound();
  if (!accepts(destination, current)) {
    throw errors.invalidRequest(`An item of type ${current.type} cannot be moved to a ${destination.kind} folder.`, [
      { field: 'destinationFolderId', message: 'wrong folder type' },
    ]);
  }
  return itemView(yield* tx.items.move(userId, id, destination.id, now));
}

export interface DeleteResult {
  deleted: 'permanently' | 'toDeletedItems';
  item?: ItemView;
}

/** To Deleted Items; for good when already there, when asked, or for events and contacts. */
function* deleteItemIn(tx: TxStore, userId: string, id: string, permanent: boolean, now: number): Step<DeleteResult> {
  const current = yield* ownItem(tx, userId, id);
  const trash = yield* tx.folders.byKind(userId, 'deletedItems');
  if (permanent || current.type !== 'email' || !trash || current.folderId === trash.id) {
    yield* tx.items.delete(userId, id, now);
    return { deleted: 'permanently' };
  }
  return { deleted: 'toDeletedItems', item: itemView(yield* tx.items.move(userId, id, trash.id, now)) };
}

export function createMailService(deps: { store: Store; clock: Clock }) {
  const { store, clock } = deps;

  return {
    /** The item operations as steps of a caller's unit of work (a batch runs many in one transaction). */
    steps: { update: updateItemIn, move: moveItemIn, delete: deleteItemIn },

    /** One of the user's folders; another user's folder, like one that does not exist, is 404 folderNotFound. */
    async folder(userId: string, id: string): Promise<Folder> {
      const found = await store.folders.byId(userId, id);
      if (!found) throw errors.folderNotFound();
      return found;
    },

    createFolder(userId: string, input: { displayName: string; parentId: string | null }) {
      const now = clock.now();
      return store.run(function* (tx) {
        yield* checkParent(tx, userId, input.parentId);
        yield* checkSiblingName(tx, userId, input.parentId, input.displayName);
        return folderView(yield* tx.folders.create(userId, input, now));
      });
    },

    updateFolder(userId: string, id: string, input: { displayName?: string; parentId?: string | null }) {
      const now = clock.now();
      return store.run(function* (tx) {
        const current = yield* ownFolder(tx, userId, id);
        if (current.kind !== 'mail') throw folderProtected();
        const parentId = input.parentId !== undefined ? input.parentId : current.parentId;
        if (input.parentId !== undefined) yield* checkParent(tx, userId, input.parentId, current);
        yield* checkSiblingName(tx, userId, parentId, input.displayName ?? current.displayName, current.id);
        return folderView(yield* tx.folders.update(userId, id, input, now));
      });
    },

    deleteFolder(userId: string, id: string) {
      const now = clock.now();
      return store.run(function* (tx) {
        if ((yield* ownFolder(tx, userId, id)).kind !== 'mail') throw folderProtected();
        return yield* tx.folders.delete(userId, id, now);
      });
    },

    /** `ifMatch`: the change key the app last saw; a newer server version wins and is returned with the 412. */
    update(userId: string, id: string, patch: ItemPatch, ifMatch?: string): Promise<ItemView> {
      const now = clock.now();
      return store.run((tx) => updateItemIn(tx, userId, id, patch, ifMatch, now));
    },

    move(userId: string, id: string, destinationFolderId: string): Promise<ItemView> {
      const now = clock.now();
      return store.run((tx) => moveItemIn(tx, userId, id, destinationFolderId, now));
    },

    /** To Deleted Items; for good when already there, when asked, or for events and contacts. */
    delete(userId: string, id: string, permanent: boolean): Promise<DeleteResult> {
      const now = clock.now();
      return store.run((tx) => deleteItemIn(tx, userId, id, permanent, now));
    },
  };
}

export type MailService = ReturnType<typeof createMailService>;
