/**
 * Changes made by the app (protocol.md §4 folder operations, §6 item operations). Every lookup is by (user, id),
 * so another user's ids are simply not found; every change goes through the store, which stamps it in the change
 * log in the same transaction.
 */
import { ApiError, errors } from '../errors';
import type { Clock } from '../clock';
import type { Folder, Item, ItemPatch, Store } from '../store/types';
import { folderView, itemView } from '../views';

const folderProtected = () => new ApiError(409, 'folderProtected', 'Well-known folders cannot be renamed, moved or deleted.');

/** Which folders an item of each type may live in. */
function accepts(folder: Folder, item: Item): boolean {
  if (item.type === 'event') return folder.kind === 'calendar';
  if (item.type === 'contact') return folder.kind === 'contacts';
  return folder.kind !== 'calendar' && folder.kind !== 'contacts';
}

export function createMailService(deps: { store: Store; clock: Clock }) {
  const { store, clock } = deps;

  const item = (userId: string, id: string) => {
    const found = store.items.byId(userId, id);
    if (!found) throw errors.itemNotFound();
    return found;
  };
  const folder = (userId: string, id: string) => {
    const found = store.folders.byId(userId, id);
    if (!found) throw errors.folderNotFound();
    return found;
  };

  function checkParent(userId: string, parentId: string | null, moving?: Folder): void {
    if (parentId === null) return;
    const parent = store.folders.byId(userId, parentId);
    if (!parent) throw errors.invalidRequest('The parent folder does not exist.', [{ field: 'parentId', message: 'not found' }]);
    if (parent.kind === 'calendar' || parent.kind === 'contacts') {
      throw errors.invalidRequest('Mail folders cannot be created under calendar or contacts.', [{ field: 'parentId', message: 'not a mail folder' }]);
    }
    // A folder cannot move under itself or its own descendants.
    for (let p: Folder | undefined = parent; moving && p; p = p.parentId ? store.folders.byId(userId, p.parentId) : undefined) {
      if (p.id === moving.id) throw errors.invalidRequest('A folder cannot be moved under itself.', [{ field: 'parentId', message: 'cycle' }]);
    }
  }

  function checkSiblingName(userId: string, parentId: string | null, name: string, except?: string): void {
    const clash = store.folders
      .listByUser(userId)
      .some((f) => f.parentId === parentId && f.id !== except && f.displayName.toLowerCase() === name.toLowerCase());
    if (clash) throw errors.invalidRequest('A folder with this name already exists here.', [{ field: 'displayName', message: 'duplicate' }]);
  }

  return {
    /** One of the user's folders; another user's folder, like one that does not exist, is 404 folderNotFound. */
    folder,

    createFolder(userId: string, input: { displayName: string; parentId: string | null }) {
      return store.transaction(() => {
        checkParent(userId, input.parentId);
        checkSiblingName(userId, input.parentId, input.displayName);
        return folderView(store.folders.create(userId, input, clock.now()));
      });
    },

    updateFolder(userId: string, id: string, input: { displayName?: string; parentId?: string | null }) {
      return store.transaction(() => {
        const current = folder(userId, id);
        if (current.kind !== 'mail') throw folderProtected();
        const parentId = input.parentId !== undefined ? input.parentId : current.parentId;
        if (input.parentId !== undefined) checkParent(userId, input.parentId, current);
        checkSiblingName(userId, parentId, input.displayName ?? current.displayName, current.id);
        return folderView(store.folders.update(userId, id, input, clock.now()));
      });
    },

    deleteFolder(userId: string, id: string) {
      return store.transaction(() => {
        if (folder(userId, id).kind !== 'mail') throw folderProtected();
        return store.folders.delete(userId, id, clock.now());
      });
    },

    /** `ifMatch`: the change key the app last saw; a newer server version wins and is returned with the 412. */
    update(userId: string, id: string, patch: ItemPatch, ifMatch?: string) {
      return store.transaction(() => {
        const current = item(userId, id);
        // `*` matches any current version (RFC 9110 §13.1.1): the item only has to exist.
        if (ifMatch !== undefined && ifMatch !== '*' && ifMatch !== current.changeKey) {
          throw new ApiError(412, 'conflict', 'The item changed since that version; the server\'s version is attached.', { item: itemView(current) });
        }
        if (current.type !== 'email' && (patch.isRead !== undefined || patch.inferenceClassification !== undefined)) {
          throw errors.invalidRequest('Only mail has isRead and inferenceClassification.');
        }
        return itemView(store.items.update(userId, id, patch, clock.now()));
      });
    },

    move(userId: string, id: string, destinationFolderId: string) {
      return store.transaction(() => {
        const current = item(userId, id);
        const destination = store.folders.byId(userId, destinationFolderId);
        if (!destination) throw errors.folderNotFound();
        if (!accepts(destination, current)) {
          throw errors.invalidRequest(`An item of type ${current.type} cannot be moved to a ${destination.kind} folder.`, [
            { field: 'destinationFolderId', message: 'wrong folder type' },
          ]);
        }
        return itemView(store.items.move(userId, id, destination.id, clock.now()));
      });
    },

    /** To Deleted Items; for good when already there, when asked, or for events and contacts. */
    delete(userId: string, id: string, permanent: boolean): { deleted: 'permanently' | 'toDeletedItems'; item?: ReturnType<typeof itemView> } {
      return store.transaction(() => {
        const current = item(userId, id);
        const trash = store.folders.byKind(userId, 'deletedItems');
        if (permanent || current.type !== 'email' || !trash || current.folderId === trash.id) {
          store.items.delete(userId, id, clock.now());
          return { deleted: 'permanently' as const };
        }
        return { deleted: 'toDeletedItems' as const, item: itemView(store.items.move(userId, id, trash.id, clock.now())) };
      });
    },
  };
}

export type MailService = ReturnType<typeof createMailService>;
