/**
 * A mailbox with the real sync services over a real store (SQLite or PostgreSQL), and a replica that applies pages
 * exactly as an app must (created = upsert, updated = merge into a held item, removed = drop), checking the
 * protocol's promises on every page. Used by the convergence property and the named failure-mode tests.
 *
 * A world is one user's mailbox. Worlds may share a store (`WorldStore`): a property opens one store per test file
 * and gives each run a fresh tenant, user and mailbox in it (creating a PostgreSQL database per run would cost more
 * than the run). Everything a world checks is scoped to its own user, so the other runs' data never matters.
 */
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { Pool } from 'pg';
import { openSqliteStore, type SqliteStore } from '../../server/store/sqlite';
import { openPostgresStore } from '../../server/store/postgres';
import { ManualClock } from '../../server/clock';
import { createTokenCodec } from '../../server/sync/tokens';
import { createItemSync, type ItemSyncPage, type WindowSizes } from '../../server/sync/itemSync';
import { createFolderSync } from '../../server/sync/folderSync';
import { createResync, type HeldEntry, type ResyncAnswer } from '../../server/sync/resync';
import { createMailService } from '../../server/mail/service';
import { itemView, type ItemView } from '../../server/views';
import type { DeviceRecord, Folder, Item, ItemContent, NewItem, Store, User } from '../../server/store/types';
import { CONTACT_PHOTO_NAME, type Attendee, type ContactData, type EventData, type ResponseStatus, type ShowAs } from '../../server/calendar/model';
import { freshDatabase, type FreshDatabase } from './postgres';
import type { StoreBackend } from './storeBackends';
import { tempDir } from './testApp';
import { createConversationSync, type ConversationSyncPage } from '../../server/conversations/sync';
import type { ConversationView } from '../../server/conversations/view';

export const SMALL_WINDOW: WindowSizes = { initial: 5, step: 5, max: 10 };
export const TRIM_AFTER_MS = 3600_000;

const DESCRIPTION = { friendlyName: null, deviceType: null, deviceModel: null, deviceOS: null, clientType: null, clientVersion: null, userAgent: null, capabilities: [] };

/**
 * Reads straight from the tables, each backend in its own SQL (the two schemas have the same tables and columns):
 * the oracle a world checks the engine against, so it must not go through the store's own sync queries. Every read
 * names the user, so a store shared by many worlds answers for one mailbox only.
 */
export interface TablePeek {
  /** The user's item ids: by creation (ties by id), by last change (newest first), or by id. */
  itemIds(userId: string, order: 'created' | 'lastChanged' | 'id'): Promise<string[]>;
  /** The ids of the folder's `size` newest items (received_at, id), newest first: what a window of `size` holds. */
  window(userId: string, folderId: string, size: number): Promise<string[]>;
  /** The folder's items counted now (what its incrementally maintained counters must equal). */
  recount(userId: string, folderId: string): Promise<{ total: number; unread: number }>;
  /** The user's change-log rows and how many distinct modseqs they carry. */
  changeStamps(userId: string): Promise<{ rows: number; modseqs: number }>;
  close(): Promise<void>;
}

const ORDER = { created: 'created_at, id', lastChanged: 'modseq DESC', id: 'id' } as const;

function sqlitePeek(store: SqliteStore): TablePeek {
  const db = store.db;
  return {
    async itemIds(userId, order) {
      return (db.prepare(`SELECT id FROM items WHERE user_id = ? ORDER BY ${ORDER[order]}`).all(userId) as { id: string }[]).map((r) => r.id);
    },
    async window(userId, folderId, size) {
      const rows = db
        .prepare('SELECT id FROM items WHERE user_id = ? AND folder_id = ? ORDER BY received_at DESC, id DESC LIMIT ?')
        .all(userId, folderId, size) as { id: string }[];
      return rows.map((r) => r.id);
    },
    async recount(userId, folderId) {
      return db
        .prepare('SELECT count(*) AS total, coalesce(sum(is_read = 0), 0) AS unread FROM items WHERE user_id = ? AND folder_id = ?')
        .get(userId, folderId) as { total: number; unread: number };
    },
    async changeStamps(userId) {
      return db.prepare('SELECT count(*) AS rows, count(DISTINCT modseq) AS modseqs FROM changes WHERE user_id = ?').get(userId) as { rows: number; modseqs: number };
    },
    async close() {},
  };
}

/** The same reads on a connection of their own (ids are `COLLATE "C"`: the same bytewise order as SQLite's). */
function postgresPeek(url: string): TablePeek {
  const pool = new Pool({ connectionString: url, max: 1 });
  const ids = async (text: string, values: unknown[]) => (await pool.query<{ id: string }>(text, values)).rows.map((r) => r.id);
  return {
    itemIds: (userId, order) => ids(`SELECT id FROM items WHERE user_id = $1 ORDER BY ${ORDER[order]}`, [userId]),
    window: (userId, folderId, size) =>
      ids('SELECT id FROM items WHERE user_id = $1 AND folder_id = $2 ORDER BY received_at DESC, id DESC LIMIT $3', [userId, folderId, size]),
    async recount(userId, folderId) {
      const r = await pool.query<{ total: number; unread: number }>(
        'SELECT count(*)::int AS total, (count(*) FILTER (WHERE NOT is_read))::int AS unread FROM items WHERE user_id = $1 AND folder_id = $2',
        [userId, folderId],
      );
      return r.rows[0]!;
    },
    async changeStamps(userId) {
      const r = await pool.query<{ rows: number; modseqs: number }>(
        'SELECT count(*)::int AS rows, count(DISTINCT modseq)::int AS modseqs FROM changes WHERE user_id = $1',
        [userId],
      );
      return r.rows[0]!;
    },
    close: () => pool.end(),
  };
}

/** A store worlds live in, with its table reads; closing it deletes its data (unless it was opened over a file). */
export class WorldStore {
  private constructor(
    readonly backend: StoreBackend,
    readonly store: Store,
    readonly peek: TablePeek,
    /** SQLite: the file. */
    readonly file: string | undefined,
    /** PostgreSQL: the database. */
    readonly database: FreshDatabase | undefined,
    private readonly cleanUp: () => Promise<void>,
  ) {}

  /** A new, empty store: a file in a temporary folder, or a fresh database on TEST_POSTGRES_URL's server. */
  static async open(backend: StoreBackend): Promise<WorldStore> {
    if (backend === 'sqlite') {
      const dir = tempDir('pigeon-sync-');
      return WorldStore.overFile(path.join(dir, 'p.db'), () => fs.rmSync(dir, { recursive: true, force: true }));
    }
    return WorldStore.overDatabase(await freshDatabase('pigeon_sync'));
  }

  /** The SQLite store over `file` (left in place when closed, unless `remove` is given). */
  static overFile(file: string, remove?: () => void): WorldStore {
    const store = openSqliteStore(file);
    return new WorldStore('sqlite', store, sqlitePeek(store), file, undefined, async () => {
      await store.close();
      remove?.();
    });
  }

  /** The PostgreSQL store over `database` (fresh or restored), which is dropped when the store closes. */
  static async overDatabase(database: FreshDatabase): Promise<WorldStore> {
    try {
      const store = await openPostgresStore(database.url);
      const peek = postgresPeek(database.url);
      return new WorldStore('postgres', store, peek, undefined, database, async () => {
        try {
          await peek.close();
          await store.close();
        } finally {
          await database.drop();
        }
      });
    } catch (err) {
      await database.drop();
      throw err;
    }
  }

  /** The SQLite store with its raw handle, for the SQLite-only tests (query plans, the file's own write counters). */
  get sqlite(): SqliteStore {
    if (this.backend !== 'sqlite') throw new Error(`a SQLite-only check was run on the ${this.backend} store`);
    return this.store as SqliteStore;
  }

  close(): Promise<void> {
    return this.cleanUp();
  }
}

export interface WorldOptions {
  /** A store of its own on this backend (default sqlite), closed and deleted with the world; the world is alice. */
  backend?: StoreBackend;
  /** A shared store: the world is a fresh tenant, user and mailbox in it, and closing the world leaves the store open. */
  on?: WorldStore;
  /** A store that already holds alice (a restored backup): the world is her, and the store closes with the world. */
  restored?: WorldStore;
  window?: WindowSizes;
}

export class SyncWorld {
  readonly secret = Buffer.alloc(32, 7);
  readonly codec = createTokenCodec(this.secret);
  readonly syncItems: ReturnType<typeof createItemSync>;
  readonly syncFolders: ReturnType<typeof createFolderSync>;
  /** The resync that keeps the app's cache (server/sync/resync.ts), with the world's window. */
  readonly resync: ReturnType<typeof createResync>;
  readonly mail: ReturnType<typeof createMailService>;
  readonly store: Store;
  private seq = 0;
  private closed = false;

  /** A world (see WorldOptions); by default alice in a SQLite store of her own. */
  static async open(options: WorldOptions = {}): Promise<SyncWorld> {
    const own = options.on ? undefined : (options.restored ?? (await WorldStore.open(options.backend ?? 'sqlite')));
    const host = options.on ?? own!;
    try {
      const clock = new ManualClock(Date.UTC(2026, 0, 1));
      // Sharing a store, every world is a user of its own: a unique name, in a tenant of its own.
      const username = own ? 'alice' : `alice-${crypto.randomBytes(6).toString('hex')}`;
      let user = await host.store.users.byUsername(username);
      if (!user) {
        const tenant = await host.store.tenants.create('T', clock.now());
        user = await host.store.users.create({ tenantId: tenant.id, username, email: `${username}@x`, displayName: 'A', role: 'user', passwordHash: null }, clock.now());
        await host.store.mailboxes.create(user.id, clock.now());
      }
      return new SyncWorld(host, own !== undefined, clock, user, options.window ?? SMALL_WINDOW);
    } catch (err) {
      await own?.close();
      throw err;
    }
  }

  private constructor(
    readonly host: WorldStore,
    private readonly ownsStore: boolean,
    readonly clock: ManualClock,
    readonly user: User,
    readonly window: WindowSizes,
  ) {
    this.store = host.store;
    this.syncItems = createItemSync({ store: this.store, clock: this.clock, codec: this.codec, trimAfterMs: TRIM_AFTER_MS, window });
    this.syncFolders = createFolderSync({ store: this.store, codec: this.codec });
    this.resync = createResync({ store: this.store, clock: this.clock, codec: this.codec, window });
    this.mail = createMailService({ store: this.store, clock: this.clock });
  }

  get backend(): StoreBackend {
    return this.host.backend;
  }

  /** The SQLite store with its raw handle (throws on PostgreSQL): for the SQLite-only checks. */
  get sqlite(): SqliteStore {
    return this.host.sqlite;
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

  /** An event or a contact with `content` (see eventContent, contactContent), as the calendar and contacts store them. */
  newCalendarItem(type: 'event' | 'contact', folderId: string, content: ItemContent): NewItem {
    const { attachments, ...rest } = content;
    return { userId: this.user.id, folderId, type, isRead: true, ...rest, ...(attachments ? { attachments } : {}) };
  }

  /** The folder's item ids straight from the table, newest first: what a test picks the item it changes from. */
  folderItemIds(folderId: string): Promise<string[]> {
    return this.host.peek.window(this.user.id, folderId, 1_000_000);
  }

  /** This user's item ids, straight from the table (see TablePeek.itemIds). */
  itemIds(order: 'created' | 'lastChanged' | 'id'): Promise<string[]> {
    return this.host.peek.itemIds(this.user.id, order);
  }

  /** The folder's items counted straight from the table. */
  recount(folderId: string): Promise<{ total: number; unread: number }> {
    return this.host.peek.recount(this.user.id, folderId);
  }

  /** What a brand-new device's initial sync must hold: the window, straight from the table. */
  async expectedWindow(folderId: string, size: number): Promise<Map<string, ItemView>> {
    const ids = await this.host.peek.window(this.user.id, folderId, size);
    const items = await this.store.items.byIds(this.user.id, ids);
    return new Map(items.map((i) => [i.id, itemView(i)]));
  }

  /** Closes the world (once; again does nothing): its own store is closed and deleted, a shared one stays open. */
  async close() {
    if (this.closed) return;
    this.closed = true;
    if (this.ownsStore) await this.host.close();
  }
}

const ZONES = ['Europe/Berlin', 'America/New_York', 'UTC', 'Asia/Kolkata'];
const SHOW_AS: ShowAs[] = ['busy', 'free', 'tentative', 'oof', 'workingElsewhere'];
const ANSWERS: ResponseStatus[] = ['needsAction', 'accepted', 'tentative', 'declined', 'delegated'];
const HOUR_MS = 3600_000;
const DAY_MS = 24 * HOUR_MS;
const isoDate = (ms: number) => new Date(ms).toISOString().slice(0, 10);
const isoInstant = (ms: number) => new Date(ms).toISOString();

/**
 * The content of an event (ItemContent with a whole EventData), one of many shapes chosen by `variant`: timed or
 * all-day, one-off or recurring (EXDATE, a moved occurrence), with or without organiser, attendees, reminder, body.
 * The same arguments give the same content, so a property's counterexample replays exactly.
 */
export function eventContent(uid: string, variant: number, startMs: number): ItemContent {
  const isAllDay = variant % 7 === 0;
  const start = isAllDay ? Math.floor(startMs / DAY_MS) * DAY_MS : startMs;
  const end = isAllDay ? start + DAY_MS : start + (1 + (variant % 3)) * HOUR_MS / 2;
  const at = isAllDay ? isoDate : isoInstant;
  const recurring = variant % 3 === 0;
  const organizer = variant % 2 === 0 ? { name: 'Alice', address: 'alice@example.test' } : { name: 'Bob', address: 'bob@example.test' };
  const attendees: Attendee[] = Array.from({ length: variant % 4 }, (_x, i) => ({
    name: `Guest ${i}`,
    address: `guest${i}@example.test`,
    type: i === 2 ? 'optional' : 'required',
    status: ANSWERS[(variant + i) % ANSWERS.length]!,
    respondedAt: (variant + i) % 2 === 0 ? null : isoInstant(startMs - DAY_MS),
  }));
  const data: EventData = {
    uid,
    sequence: variant % 10,
    start: at(start),
    end: at(end),
    timeZone: ZONES[variant % ZONES.length]!,
    isAllDay,
    location: variant % 2 === 0 ? `Room ${variant % 9}` : null,
    organizer,
    attendees,
    reminderMinutesBeforeStart: variant % 4 === 1 ? null : 15 * (variant % 4),
    recurrence: recurring ? { rrule: `FREQ=WEEKLY;COUNT=${2 + (variant % 5)}`, exdates: variant % 2 === 0 ? [] : [at(start + 7 * DAY_MS)], rdates: [] } : null,
    exceptions:
      recurring && variant % 4 === 0
        ? [{ recurrenceId: at(start + 14 * DAY_MS), start: at(start + 14 * DAY_MS + HOUR_MS), end: at(end + 14 * DAY_MS + HOUR_MS), subject: 'Moved', location: null, isCancelled: false }]
        : [],
    showAs: SHOW_AS[variant % SHOW_AS.length]!,
    isCancelled: variant % 11 === 0,
    responseStatus: organizer.address === 'alice@example.test' ? 'organizer' : ANSWERS[variant % ANSWERS.length]!,
    lastItipStamp: organizer.address === 'alice@example.test' ? null : isoInstant(startMs - HOUR_MS),
  };
  return { subject: `Event ${variant} — ü`, bodyText: variant % 3 === 1 ? null : `Agenda ${variant}`, receivedAt: start, data: data as unknown as Record<string, unknown> };
}

/**
 * The content of a contact (ItemContent with a whole ContactData), shaped by `variant`. `photo`: undefined keeps the
 * photo it has (no `attachments`), null removes it, bytes make it the contact's photo.
 */
export function contactContent(uid: string, variant: number, receivedAt: number, photo?: Buffer | null): ItemContent {
  const data: ContactData = {
    uid,
    givenName: variant % 5 === 0 ? null : `Given${variant % 13}`,
    surname: `Surname${variant % 17}`,
    emailAddresses: Array.from({ length: variant % 3 }, (_x, i) => ({ name: `Contact ${variant}`, address: `c${variant}.${i}@example.test` })),
    phones: variant % 2 === 0 ? [{ type: 'mobile', number: `+49 170 ${variant}` }] : [],
    company: variant % 3 === 0 ? null : 'Example Corp',
    jobTitle: variant % 4 === 0 ? 'Engineer' : null,
    department: variant % 6 === 0 ? 'R&D' : null,
    addresses: variant % 5 === 1 ? [{ type: 'business', street: `Main St ${variant}`, city: 'Berlin', region: '', postalCode: '10115', country: 'DE' }] : [],
    birthday: variant % 7 === 0 ? '1990-02-28' : null,
  };
  const content: ItemContent = { subject: `Contact ${variant}`, bodyText: variant % 2 === 0 ? null : `Notes ${variant}`, receivedAt, data: data as unknown as Record<string, unknown> };
  if (photo !== undefined) {
    content.attachments = photo === null ? [] : [{ name: CONTACT_PHOTO_NAME, contentType: 'image/png', isInline: false, contentId: null, content: photo }];
  }
  return content;
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

  /** What the app holds, as a resync sends it: every id with the change key of its copy. */
  held(): HeldEntry[] {
    return [...this.items.values()].map((v) => ({ id: v.id, changeKey: v.changeKey as string }));
  }

  /**
   * A resync that keeps the cache: sends `held` (default: everything the replica holds), applies the answer and
   * checks what the protocol promises about it. The replica must hold nothing it does not send — an app that keeps
   * an id out of `held` has dropped it — so ids sent but not held (foreign, unknown) are the only extras.
   */
  async resync(opts: { held?: HeldEntry[]; loadMore?: boolean; bodyBytes?: number } = {}): Promise<ResyncAnswer> {
    const held = opts.held ?? this.held();
    const sending = new Set(held.map((h) => h.id));
    for (const id of this.items.keys()) {
      if (!sending.has(id)) throw new Error(`test bug: the replica holds ${id} but does not send it`);
    }
    const folder = (await this.world.store.folders.byId(this.world.user.id, this.folderId))!;
    const answer = await this.world.resync({
      userId: this.world.user.id,
      device: (await this.world.store.devices.byId(this.device.id))!,
      folder,
      held,
      loadMore: opts.loadMore ?? false,
      bodyBytes: opts.bodyBytes ?? 0,
    });
    await this.applyResync(answer, held);
    return answer;
  }

  /** Applies a resync answer to what was sent as `held`; checks its promises against the tables. */
  async applyResync(answer: ResyncAnswer, held: HeldEntry[]) {
    if (answer.moreAvailable !== false) throw new ProtocolViolation('a resync answer has moreAvailable');
    const sent = new Map<string, string | undefined>();
    for (const h of held) if (!sent.has(h.id)) sent.set(h.id, h.changeKey);
    const windowNow = await this.world.expectedWindow(this.folderId, answer.window.size);
    const seen = new Set<string>();
    for (const e of [...answer.created, ...answer.updated, ...answer.removed]) {
      if (seen.has(e.id)) throw new ProtocolViolation(`${e.id} appears twice in one resync answer`);
      seen.add(e.id);
    }
    for (const c of answer.created) {
      if (sent.has(c.id)) throw new ProtocolViolation(`created names ${c.id}, which the app sent as held`);
    }
    for (const u of answer.updated) {
      if (!sent.has(u.id)) throw new ProtocolViolation(`updated names ${u.id}, which the app did not send`);
      if (sent.get(u.id) !== undefined && sent.get(u.id) === u.changeKey) throw new ProtocolViolation(`updated names ${u.id}, whose change key the app has`);
    }
    // Newest first, as an initial sync sends them.
    const keys = answer.created.map((c) => [Date.parse(c.receivedAt as string), c.id] as const);
    for (let i = 1; i < keys.length; i++) {
      const [a, b] = [keys[i - 1]!, keys[i]!];
      if (a[0] < b[0] || (a[0] === b[0] && a[1] < b[1])) throw new ProtocolViolation('created is not newest first');
    }
    // Every removal's reason, from the tables: no such item of this user, in another folder, or below the window.
    const mine = new Set(await this.world.itemIds('id'));
    const inFolder = new Set(await this.world.folderItemIds(this.folderId));
    for (const r of answer.removed) {
      if (!sent.has(r.id)) throw new ProtocolViolation(`removed names ${r.id}, which the app did not send`);
      if (windowNow.has(r.id)) throw new ProtocolViolation(`removed (${r.reason}) names ${r.id}, which is inside the window`);
      const reason = !mine.has(r.id) ? 'deleted' : inFolder.has(r.id) ? 'evicted' : 'moved';
      if (r.reason !== reason) throw new ProtocolViolation(`removed names ${r.id} as ${r.reason}, not ${reason}`);
    }
    if (answer.updated.length + answer.removed.length + answer.unchanged !== sent.size) {
      throw new ProtocolViolation(`${sent.size} ids sent, but ${answer.updated.length} updated + ${answer.removed.length} removed + ${answer.unchanged} unchanged`);
    }
    for (const r of answer.removed) this.items.delete(r.id);
    for (const c of answer.created) this.items.set(c.id, c);
    // Replaced, not merged: a resync's `updated` is the whole view, and a field it lacked would show as a difference.
    for (const u of answer.updated) this.items.set(u.id, u);
    this.token = answer.token;
    this.pages++;
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

// Conversations (Organize by Thread): the conversation-sync engine over a world, an oracle computed from the items
// (never from the store's conversation rows), and an app's copy of one folder's conversation list.

const conversationSyncs = new WeakMap<SyncWorld, ReturnType<typeof createConversationSync>>();

/** The world's conversation-sync engine (same codec, clock and window as its item sync). */
export function conversationSyncOf(world: SyncWorld): ReturnType<typeof createConversationSync> {
  let sync = conversationSyncs.get(world);
  if (!sync) {
    sync = createConversationSync({ store: world.store, clock: world.clock, codec: world.codec, trimAfterMs: TRIM_AFTER_MS, window: world.window });
    conversationSyncs.set(world, sync);
  }
  return sync;
}

/** What a conversation view must say, worked out from the folder's messages alone. */
export type ExpectedConversation = Omit<ConversationView, 'participants' | 'changeKey'> & { senders: string[] };

/**
 * The folder's `size` newest conversations (by latest message, then conversation id, bytewise), newest first,
 * computed from the user's items as the tables hold them: a message without a conversation id is a conversation
 * of its own, named by its item id. The oracle the conversation rows (kept by the store's triggers) are checked
 * against.
 */
export async function expectedConversations(world: SyncWorld, folderId: string, size: number): Promise<Map<string, ExpectedConversation>> {
  const ids = await world.itemIds('id');
  const items = (await world.store.items.byIds(world.user.id, ids)).filter((i) => i.folderId === folderId && i.type === 'email');
  const groups = new Map<string, Item[]>();
  for (const i of items) {
    const id = i.conversationId ?? i.id;
    groups.set(id, [...(groups.get(id) ?? []), i]);
  }
  const newestFirst = (a: { receivedAt: number; id: string }, b: { receivedAt: number; id: string }) =>
    a.receivedAt !== b.receivedAt ? b.receivedAt - a.receivedAt : a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
  const all = [...groups.entries()].map(([id, messages]): ExpectedConversation => {
    messages.sort(newestFirst);
    const latest = messages[0]!;
    const importance = messages.some((m) => m.importance === 'high') ? 'high' : messages.every((m) => m.importance === 'low') ? 'low' : 'normal';
    return {
      id,
      folderId,
      subject: latest.subject,
      preview: latest.preview,
      from: latest.from,
      senders: [...new Set(messages.map((m) => m.from?.address).filter((a): a is string => !!a))].sort(),
      latestReceivedAt: new Date(latest.receivedAt).toISOString(),
      latestItemId: latest.id,
      messageCount: messages.length,
      unreadCount: messages.filter((m) => !m.isRead).length,
      flaggedCount: messages.filter((m) => m.isFlagged).length,
      hasAttachments: messages.some((m) => m.hasAttachments),
      importance,
      inferenceClassification: latest.inferenceClassification,
    };
  });
  all.sort((a, b) => newestFirst({ receivedAt: Date.parse(a.latestReceivedAt), id: a.id }, { receivedAt: Date.parse(b.latestReceivedAt), id: b.id }));
  return new Map(all.slice(0, size).map((c) => [c.id, c]));
}

/** A view as the oracle states it: participants as the set of their addresses, no change key. */
export function comparableConversation(v: ConversationView): ExpectedConversation {
  const { participants, changeKey: _changeKey, ...rest } = v;
  return { ...rest, senders: [...new Set(participants.map((p) => p.address))].sort() };
}

/** An app's copy of one folder's conversation list: created and updated are upserts by id, removed are deletes. */
export class ConversationReplica {
  conversations = new Map<string, ConversationView>();
  token: string | undefined;
  pages = 0;

  constructor(
    readonly world: SyncWorld,
    readonly folderId: string,
    readonly device: DeviceRecord,
  ) {}

  /**
   * Applies one page; checks what the protocol promises about it: one entry per conversation, a token that moves
   * when more is available, created newest first, and — on a page that ends the sync — exactly the window as the
   * oracle computes it from the items (ids and every field it can state).
   */
  async apply(page: ConversationSyncPage, before: string | undefined) {
    if (page.moreAvailable && page.token === before) throw new ProtocolViolation('moreAvailable with a token that did not advance');
    const seen = new Set<string>();
    for (const e of [...page.created, ...page.updated, ...page.removed]) {
      if (seen.has(e.id)) throw new ProtocolViolation(`conversation ${e.id} appears twice in one page`);
      seen.add(e.id);
    }
    for (let i = 1; i < page.created.length; i++) {
      const [a, b] = [page.created[i - 1]!, page.created[i]!];
      const [ta, tb] = [Date.parse(a.latestReceivedAt), Date.parse(b.latestReceivedAt)];
      if (ta < tb || (ta === tb && a.id < b.id)) throw new ProtocolViolation('created is not newest first');
    }
    for (const r of page.removed) this.conversations.delete(r.id);
    for (const c of [...page.created, ...page.updated]) this.conversations.set(c.id, c);
    this.token = page.token;
    this.pages++;
    if (!page.moreAvailable) {
      const expected = await expectedConversations(this.world, this.folderId, page.window.size);
      const held = new Map([...this.conversations.values()].map((v) => [v.id, comparableConversation(v)]));
      if (!isDeepStrictEqual(sortedEntries(held), sortedEntries(expected))) {
        throw new ProtocolViolation(
          `after a complete sync the replica is not the window:\nheld     ${JSON.stringify(sortedEntries(held))}\nexpected ${JSON.stringify(sortedEntries(expected))}`,
        );
      }
      if (page.window.conversationsInFolder !== (await expectedConversations(this.world, this.folderId, Number.MAX_SAFE_INTEGER)).size) {
        throw new ProtocolViolation(`window.conversationsInFolder is ${page.window.conversationsInFolder}`);
      }
    }
  }

  /** One request; returns the page (applied unless `lose`: a lost response leaves the token where it was). */
  async step(opts: { maxChanges?: number; loadMore?: boolean; lose?: boolean } = {}): Promise<ConversationSyncPage> {
    const folder = (await this.world.store.folders.byId(this.world.user.id, this.folderId))!;
    const page = await conversationSyncOf(this.world)({
      userId: this.world.user.id,
      device: (await this.world.store.devices.byId(this.device.id))!,
      folder,
      token: this.token,
      maxChanges: opts.maxChanges ?? 100,
      loadMore: opts.loadMore ?? false,
    });
    if (!opts.lose) await this.apply(page, this.token);
    return page;
  }

  /** Syncs until moreAvailable is false; returns the last page. */
  async syncToEnd(maxChanges = 100, loadMore = false): Promise<ConversationSyncPage> {
    let page = await this.step({ maxChanges, loadMore });
    for (let guard = 0; page.moreAvailable; guard++) {
      if (guard > 10_000) throw new ProtocolViolation('conversation sync did not terminate');
      page = await this.step({ maxChanges });
    }
    return page;
  }
}

const sortedEntries = <T>(m: Map<string, T>) => [...m.entries()].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
