/**
 * A mailbox on a real SQLite file with the real sync services, and a replica that applies pages exactly as an app
 * must (created = upsert, updated = merge into a held item, removed = drop), checking the protocol's promises on
 * every page. Used by the convergence property and the named failure-mode tests.
 */
import fs from 'node:fs';
import path from 'node:path';
import { openSqliteStore, type SqliteStore } from '../../server/store/sqlite';
import { ManualClock } from '../../server/clock';
import { createTokenCodec } from '../../server/sync/tokens';
import { createItemSync, type ItemSyncPage, type WindowSizes } from '../../server/sync/itemSync';
import { createFolderSync } from '../../server/sync/folderSync';
import { createMailService } from '../../server/mail/service';
import { itemView, type ItemView } from '../../server/views';
import type { DeviceRecord, Folder, Item, NewItem, User } from '../../server/store/types';
import { tempDir } from './testApp';

export const SMALL_WINDOW: WindowSizes = { initial: 5, step: 5, max: 10 };
export const TRIM_AFTER_MS = 3600_000;

const DESCRIPTION = { friendlyName: null, deviceType: null, deviceModel: null, deviceOS: null, clientType: null, clientVersion: null, userAgent: null, capabilities: [] };

export class SyncWorld {
  readonly secret = Buffer.alloc(32, 7);
  readonly codec = createTokenCodec(this.secret);
  readonly syncItems: ReturnType<typeof createItemSync>;
  readonly syncFolders: ReturnType<typeof createFolderSync>;
  readonly mail: ReturnType<typeof createMailService>;
  private seq = 0;

  /** A world over a new file in a temporary folder, or over `file` (alice is created unless she is there). */
  static async open(window: WindowSizes = SMALL_WINDOW, file?: string): Promise<SyncWorld> {
    const dir = tempDir('pigeon-sync-');
    const store = openSqliteStore(file ?? path.join(dir, 'p.db'));
    const clock = new ManualClock(Date.UTC(2026, 0, 1));
    let user = await store.users.byUsername('alice');
    if (!user) {
      const tenant = await store.tenants.create('T', clock.now());
      user = await store.users.create({ tenantId: tenant.id, username: 'alice', email: 'a@x', displayName: 'A', role: 'user', passwordHash: null }, clock.now());
      await store.mailboxes.create(user.id, clock.now());
    }
    return new SyncWorld(dir, store, clock, user, window);
  }

  private constructor(
    readonly dir: string,
    readonly store: SqliteStore,
    readonly clock: ManualClock,
    readonly user: User,
    readonly window: WindowSizes,
  ) {
    this.syncItems = createItemSync({ store: this.store, clock: this.clock, codec: this.codec, trimAfterMs: TRIM_AFTER_MS, window });
    this.syncFolders = createFolderSync({ store: this.store, codec: this.codec });
    this.mail = createMailService({ store: this.store, clock: this.clock });
  }

  async folder(kind: Folder['kind']): Promise<Folder> {
    return (await this.store.folders.byKind(this.user.id, kind))!;
  }

  async device(name = 'device-a-0000000000'): Promise<DeviceRecord> {
    return (await this.store.devices.byUserAndDeviceId(this.user.id, name)) ?? (await this.store.devices.create(this.user.id, name, DESCRIPTION, this.clock.now()));
  }

  deliver(folderId: string, receivedAt: number, opts: { isRead?: boolean; subject?: string } = {}): Promise<Item> {
    return this.store.items.create(this.newItem(folderId, receivedAt, opts), this.clock.now());
  }

  /** What `deliver` stores, for a unit of work that delivers several messages in one transaction. */
  newItem(folderId: string, receivedAt: number, opts: { isRead?: boolean; subject?: string } = {}): NewItem {
    return { userId: this.user.id, folderId, type: 'email', receivedAt, subject: opts.subject ?? `message ${++this.seq}`, isRead: opts.isRead ?? false, from: { name: 'S', address: 's@x' }, preview: 'hello' };
  }

  /** What a brand-new device's initial sync must hold: the window, straight from the table. */
  async expectedWindow(folderId: string, size: number): Promise<Map<string, ItemView>> {
    const rows = this.store.db
      .prepare('SELECT id FROM items WHERE folder_id = ? ORDER BY received_at DESC, id DESC LIMIT ?')
      .all(folderId, size) as { id: string }[];
    const items = await this.store.items.byIds(this.user.id, rows.map((r) => r.id));
    return new Map(items.map((i) => [i.id, itemView(i)]));
  }

  async close() {
    await this.store.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export class ProtocolViolation extends Error {}

/** An app's copy of one folder. */
export class Replica {
  items = new Map<string, ItemView>();
  token: string | undefined;
  pages = 0;

  constructor(
    readonly world: SyncWorld,
    readonly folderId: string,
    readonly device: DeviceRecord,
  ) {}

  /** Applies one page; checks what the protocol promises about it. */
  async apply(page: ItemSyncPage, before: string | undefined) {
    if (page.moreAvailable && page.token === before) throw new ProtocolViolation('moreAvailable with a token that did not advance');
    const windowNow = await this.world.expectedWindow(this.folderId, page.window.size);
    for (const r of page.removed) {
      if (windowNow.has(r.id)) throw new ProtocolViolation(`removed (${r.reason}) names ${r.id}, which is inside the window`);
    }
    for (const u of page.updated) {
      if (!this.items.has(u.id)) throw new ProtocolViolation(`updated names ${u.id}, which the device does not hold`);
    }
    const seen = new Set<string>();
    for (const e of [...page.created, ...page.updated, ...page.removed]) {
      if (seen.has(e.id)) throw new ProtocolViolation(`${e.id} appears twice in one page`);
      seen.add(e.id);
    }
    for (const r of page.removed) this.items.delete(r.id);
    for (const c of page.created) this.items.set(c.id, c);
    for (const u of page.updated) this.items.set(u.id, { ...this.items.get(u.id)!, ...u });
    this.token = page.token;
    this.pages++;
  }

  /** One request; returns the page (applied unless `lose`: a lost response leaves the token where it was). */
  async step(opts: { maxChanges?: number; loadMore?: boolean; lose?: boolean } = {}): Promise<ItemSyncPage> {
    const folder = (await this.world.store.folders.byId(this.world.user.id, this.folderId))!;
    const page = await this.world.syncItems({
      userId: this.world.user.id,
      device: (await this.world.store.devices.byId(this.device.id))!,
      folder,
      token: this.token,
      maxChanges: opts.maxChanges ?? 100,
      loadMore: opts.loadMore ?? false,
      bodyBytes: 0,
    });
    if (!opts.lose) await this.apply(page, this.token);
    return page;
  }

  /** Syncs until moreAvailable is false; returns the last page. */
  async syncToEnd(maxChanges = 100, loadMore = false): Promise<ItemSyncPage> {
    let page = await this.step({ maxChanges, loadMore });
    for (let guard = 0; page.moreAvailable; guard++) {
      if (guard > 10_000) throw new ProtocolViolation('sync did not terminate');
      page = await this.step({ maxChanges });
    }
    return page;
  }
}
