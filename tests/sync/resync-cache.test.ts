/**
 * The resync that keeps the app's cache (server/sync/resync.ts), as a property on both store backends: after any
 * history of changes interleaved with partial syncs, perhaps a finished sync, and more changes while the device is
 * away, a device that resyncs from its replica — its ids and change keys,
 * with part of its cache lost, some keys missing or wrong, ids of another user's mail and ids that exist nowhere
 * thrown in, repeated entries, after a mailbox reset or a device reset (410) or none — holds exactly what a brand-new
 * device's full sync holds (every entry, every field), at exactly the position that sync ends at; and an incremental
 * sync from the resync's token, after more changes, still converges. Runs: RESYNC_RUNS on each backend (default 100).
 */
import crypto from 'node:crypto';
import fc from 'fast-check';
import { SyncWorld, Replica, SMALL_WINDOW, TRIM_AFTER_MS, WorldStore, contactContent, eventContent } from '../helpers/syncWorld';
import { STORE_BACKENDS } from '../helpers/storeBackends';
import { ApiError } from '../../server/errors';
import type { HeldEntry } from '../../server/sync/resync';
import type { ItemView } from '../../server/views';

const RUNS = Number(process.env.RESYNC_RUNS ?? 100);

type Change =
  | { t: 'deliver'; folder: number; age: number; read: boolean }
  | { t: 'flag' | 'read' | 'unread' | 'categorize' | 'trash' | 'purge'; item: number }
  | { t: 'move'; item: number; folder: number }
  | { t: 'moveOut'; item: number; folder: number }
  | { t: 'advance'; ms: number }
  | { t: 'burst'; folder: number; item: number };
type Op = Change | { t: 'sync'; pages: number; maxChanges: number; loadMore: boolean };

const change: fc.Arbitrary<Change> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ t: fc.constant('deliver' as const), folder: fc.nat(2), age: fc.nat(40), read: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constantFrom('flag' as const, 'read' as const, 'unread' as const, 'categorize' as const), item: fc.nat(60) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constantFrom('trash' as const, 'purge' as const), item: fc.nat(60) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('move' as const), item: fc.nat(60), folder: fc.nat(2) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('moveOut' as const), item: fc.nat(60), folder: fc.integer({ min: 1, max: 2 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('advance' as const), ms: fc.constantFrom(60_000, TRIM_AFTER_MS + 1) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('burst' as const), folder: fc.nat(2), item: fc.nat(60) }) },
);
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: change },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('sync' as const), pages: fc.integer({ min: 1, max: 4 }), maxChanges: fc.integer({ min: 1, max: 12 }), loadMore: fc.boolean() }) },
);

/** What happened to the app's cache and what it sends (indices pick entries of the replica, by id order). */
interface Cache {
  /** The device finished its sync before going away (else it holds whatever its last page left it with). */
  settled: boolean;
  /** What changed while it was away. */
  away: Change[];
  reset: 'none' | 'mailbox' | 'device';
  drop: number[];
  noKey: number[];
  wrongKey: number[];
  repeat: number[];
  foreign: number;
  unknown: number;
  reverse: boolean;
  loadMore: boolean;
}
const cache: fc.Arbitrary<Cache> = fc.record({
  settled: fc.boolean(),
  away: fc.array(change, { maxLength: 12 }),
  reset: fc.constantFrom('none' as const, 'mailbox' as const, 'device' as const),
  drop: fc.array(fc.nat(20), { maxLength: 4 }),
  noKey: fc.array(fc.nat(20), { maxLength: 3 }),
  wrongKey: fc.array(fc.nat(20), { maxLength: 3 }),
  repeat: fc.array(fc.nat(20), { maxLength: 3 }),
  foreign: fc.nat(3),
  unknown: fc.nat(3),
  reverse: fc.boolean(),
  loadMore: fc.boolean(),
});

/** A token's position: everything but who holds it (a brand-new device is another device record). */
function position(token: string) {
  const { d: _d, di: _di, de: _de, ...rest } = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
  return rest;
}

const sorted = (m: Map<string, ItemView>) => [...m.entries()].sort(([x], [y]) => (x < y ? -1 : 1));

let freshDevices = 0;
/** A brand-new device's full sync of `folderId` (loadMore on its first request, as `loadMore` says). */
async function freshSync(w: SyncWorld, folderId: string, loadMore: boolean) {
  const fresh = new Replica(w, folderId, await w.device(`device-fresh-${String(++freshDevices).padStart(8, '0')}`));
  const last = await fresh.syncToEnd(7, loadMore);
  await w.store.devices.delete(fresh.device.id);
  return { items: fresh.items, last };
}

async function apply(w: SyncWorld, folders: () => string[], c: Change, base: { t: number }) {
  const pick = async (n: number) => {
    const ids = await w.itemIds('created');
    return ids.length ? ids[n % ids.length] : undefined;
  };
  switch (c.t) {
    case 'deliver':
      base.t += 1000;
      await w.deliver(folders()[c.folder]!, base.t - c.age * 7_000, { isRead: c.read });
      break;
    case 'flag':
    case 'read':
    case 'unread':
    case 'categorize': {
      const id = await pick(c.item);
      if (!id) break;
      const patch = c.t === 'flag' ? { isFlagged: true } : c.t === 'read' ? { isRead: true } : c.t === 'unread' ? { isRead: false } : { categories: [`c${c.item % 3}`] };
      await w.mail.update(w.user.id, id, patch);
      break;
    }
    case 'trash':
    case 'purge': {
      const id = await pick(c.item);
      if (id) await w.mail.delete(w.user.id, id, c.t === 'purge');
      break;
    }
    case 'move': {
      const id = await pick(c.item);
      if (id) await w.mail.move(w.user.id, id, folders()[c.folder]!);
      break;
    }
    case 'moveOut': {
      // Out of the synced folder (the inbox), so a held item is often the one that leaves.
      const ids = await w.folderItemIds(folders()[0]!);
      if (ids.length) await w.mail.move(w.user.id, ids[c.item % ids.length]!, folders()[c.folder]!);
      break;
    }
    case 'advance':
      w.clock.advance(c.ms);
      break;
    case 'burst': {
      base.t += 1000;
      const first = w.newItem(folders()[c.folder]!, base.t);
      const second = w.newItem(folders()[c.folder]!, base.t - c.item * 500);
      const other = await pick(c.item);
      const now = w.clock.now();
      await w.store.run(function* (tx) {
        const x = yield* tx.items.create(first, now);
        yield* tx.items.create(second, now);
        yield* tx.items.update(w.user.id, x.id, { isFlagged: true }, now);
        if (other) yield* tx.items.update(w.user.id, other, { categories: ['burst'] }, now);
      });
      break;
    }
  }
}

/** The replica loses entries (`drop`), and the list it sends: keys missing or wrong, repeats, foreign and unknown ids. */
function damage(a: Replica, c: Cache, foreignIds: string[]): { held: HeldEntry[]; foreign: string[]; unknown: string[] } {
  const ids = [...a.items.keys()].sort();
  for (const i of c.drop) if (ids.length) a.items.delete(ids[i % ids.length]!);
  let held = a.held().sort((x, y) => (x.id < y.id ? -1 : 1));
  const at = (i: number) => held[i % held.length]!;
  if (held.length) {
    for (const i of c.noKey) at(i).changeKey = undefined;
    for (const i of c.wrongKey) at(i).changeKey = 'not-a-change-key';
    // A repeated id counts once, as first given: the repeat's key is a wrong one, which must not matter.
    for (const i of c.repeat) held.push({ id: at(i).id, changeKey: 'repeat-of-an-entry' });
  }
  const foreign = foreignIds.slice(0, c.foreign);
  const unknown = Array.from({ length: c.unknown }, () => crypto.randomBytes(12).toString('base64url'));
  held = [...held, ...foreign.map((id) => ({ id, changeKey: '1' })), ...unknown.map((id) => ({ id }))];
  if (c.reverse) held.reverse();
  return { held, foreign, unknown };
}

async function run(stores: WorldStore, foreignIds: string[], initial: number, before: Op[], c: Cache, after: Op[], finalMaxChanges: number) {
  const w = await SyncWorld.open({ on: stores, window: SMALL_WINDOW });
  try {
    const inbox = await w.folder('inbox');
    const trash = await w.folder('deletedItems');
    const projects = await w.mail.createFolder(w.user.id, { displayName: 'Projects', parentId: null });
    const folders = () => [inbox.id, projects.id, trash.id];
    const a = new Replica(w, inbox.id, await w.device('device-a-0000000000'));
    const base = { t: w.clock.now() };
    for (let i = 0; i < initial; i++) await w.deliver(i % 4 === 3 ? projects.id : inbox.id, (base.t += 1000) - (i % 5) * 3000, { isRead: i % 2 === 0 });

    const play = async (ops: Op[]) => {
      for (const o of ops) {
        if (o.t !== 'sync') await apply(w, folders, o, base);
        else {
          for (let i = 0; i < o.pages; i++) {
            const page = await a.step({ maxChanges: o.maxChanges, loadMore: o.loadMore && i === 0 });
            if (!page.moreAvailable) break;
          }
        }
      }
    };
    // The device syncs (perhaps only part of the way: any replica is a fair cache), while changes happen.
    await play(before);
    if (c.settled) await a.syncToEnd(7);
    await play(c.away);

    if (c.reset !== 'none') {
      if (c.reset === 'mailbox') await w.store.mailboxes.resetEpoch(w.user.id);
      else await w.store.devices.bumpEpoch(a.device.id, w.clock.now());
      if (a.token !== undefined) {
        const refused = await a.step().then(
          () => undefined,
          (err: unknown) => err,
        );
        expect(refused).toBeInstanceOf(ApiError);
        expect((refused as ApiError).status).toBe(410);
      }
    }

    const { held, foreign, unknown } = damage(a, c, foreignIds);
    const answer = await a.resync({ held, loadMore: c.loadMore });
    for (const id of [...foreign, ...unknown]) expect(answer.removed).toContainEqual({ id, reason: 'deleted' });

    // The replica now equals the window, field for field, and a brand-new device's full sync — at its position.
    expect(sorted(a.items)).toEqual(sorted(await w.expectedWindow(inbox.id, answer.window.size)));
    const fresh = await freshSync(w, inbox.id, c.loadMore);
    expect(sorted(a.items)).toEqual(sorted(fresh.items));
    expect(position(answer.token)).toEqual(position(fresh.last.token));
    expect(answer.window).toEqual(fresh.last.window);

    // Resyncing again at once costs nothing: everything held is unchanged.
    const again = await a.resync({ loadMore: c.loadMore });
    expect([again.created, again.updated, again.removed, again.unchanged]).toEqual([[], [], [], a.items.size]);

    // The token is an ordinary position: after more changes, incremental sync from it converges.
    await play(after);
    const last = await a.syncToEnd(finalMaxChanges);
    expect(sorted(a.items)).toEqual(sorted(await w.expectedWindow(inbox.id, last.window.size)));
    expect(sorted((await freshSync(w, inbox.id, false)).items)).toEqual(sorted(await w.expectedWindow(inbox.id, SMALL_WINDOW.initial)));
    const poll = await a.step({ maxChanges: finalMaxChanges });
    expect([poll.created, poll.updated, poll.removed, poll.moreAvailable]).toEqual([[], [], [], false]);
  } finally {
    await w.close();
  }
}

/** The property's own bound: PostgreSQL's runs take longer than jest's default 5 s allows. */
const TIMEOUT_MS = Math.max(180_000, RUNS * 1_500);

describe.each(STORE_BACKENDS)('%s', (backend) => {
  let stores: WorldStore;
  let foreignIds: string[];
  beforeAll(async () => {
    stores = await WorldStore.open(backend);
    // Another user of the same store: ids of real items that are not the resyncing user's.
    const mallory = await SyncWorld.open({ on: stores });
    const box = await mallory.folder('inbox');
    foreignIds = [];
    for (let i = 0; i < 3; i++) foreignIds.push((await mallory.deliver(box.id, mallory.clock.now() + i * 1000)).id);
  });
  afterAll(() => stores?.close());

  test(`a cache-keeping resync equals a brand-new device's full sync (${RUNS} runs)`, async () => {
    const started = Date.now();
    await fc.assert(
      fc.asyncProperty(
        fc.nat(25),
        fc.array(op, { minLength: 0, maxLength: 30 }),
        cache,
        fc.array(op, { minLength: 0, maxLength: 20 }),
        fc.integer({ min: 1, max: 20 }),
        (initial, before, c, after, finalMaxChanges) => run(stores, foreignIds, initial, before, c, after, finalMaxChanges),
      ),
      { numRuns: RUNS },
    );
    console.log(`resync property on ${backend}: ${RUNS} runs in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }, TIMEOUT_MS);

  test('a resync after a mailbox reset and a device reset: only the difference, and the next sync is incremental', async () => {
    const w = await SyncWorld.open({ on: stores, window: SMALL_WINDOW });
    try {
      const inbox = await w.folder('inbox');
      for (let i = 0; i < 12; i++) await w.deliver(inbox.id, w.clock.now() + i * 1000);
      const a = new Replica(w, inbox.id, await w.device());
      await a.syncToEnd(3);
      const [newest, second] = await w.folderItemIds(inbox.id);
      await w.mail.update(w.user.id, second!, { isFlagged: true });
      await w.store.mailboxes.resetEpoch(w.user.id);
      await w.store.devices.bumpEpoch(a.device.id, w.clock.now());
      await expect(a.step()).rejects.toMatchObject({ status: 410 });

      const answer = await a.resync();
      expect(answer.created).toEqual([]);
      expect(answer.updated.map((u) => [u.id, u.isFlagged])).toEqual([[second, true]]);
      expect(answer.removed).toEqual([]);
      expect(answer.unchanged).toBe(SMALL_WINDOW.initial - 1);

      // The next poll is an ordinary incremental sync under the new epochs: one new message, nothing else.
      const fresh = await w.deliver(inbox.id, w.clock.now() + 60_000);
      const page = await a.step();
      expect(page.created.map((c) => c.id)).toEqual([fresh.id]);
      expect(page.removed).toHaveLength(1); // the window's oldest, evicted
      expect(a.items.has(newest!)).toBe(true);
    } finally {
      await w.close();
    }
  });

  test('calendar and contacts have no window: every item, and the position an initial sync ends at', async () => {
    const w = await SyncWorld.open({ on: stores, window: SMALL_WINDOW });
    try {
      for (const kind of ['calendar', 'contacts'] as const) {
        const folder = await w.folder(kind);
        const type = kind === 'calendar' ? 'event' : 'contact';
        const content = (i: number) => (kind === 'calendar' ? eventContent(`uid-${i}`, i, Date.UTC(2026, 1, 1) + i * 3600_000) : contactContent(`uid-${i}`, i, w.clock.now() + i));
        const ids: string[] = [];
        // More than the largest window: an unwindowed folder is synced whole.
        for (let i = 0; i < SMALL_WINDOW.max + 3; i++) ids.push((await w.store.items.create(w.newCalendarItem(type, folder.id, content(i)), w.clock.now())).id);
        const a = new Replica(w, folder.id, await w.device());
        await a.syncToEnd(4);
        await w.store.items.replace(w.user.id, ids[0]!, content(100), w.clock.now());
        await w.store.items.delete(w.user.id, ids[1]!, w.clock.now());
        const added = await w.store.items.create(w.newCalendarItem(type, folder.id, content(101)), w.clock.now());

        const answer = await a.resync({ loadMore: true });
        expect(answer.created.map((x) => x.id)).toEqual([added.id]);
        expect(answer.updated.map((x) => x.id)).toEqual([ids[0]]);
        expect(answer.removed).toEqual([{ id: ids[1], reason: 'deleted' }]);
        expect(answer.window).toEqual({ size: SMALL_WINDOW.max + 3, max: null, itemsInFolder: SMALL_WINDOW.max + 3, hasOlder: false });
        const fresh = await freshSync(w, folder.id, true);
        expect(sorted(a.items)).toEqual(sorted(fresh.items));
        expect(position(answer.token)).toEqual(position(fresh.last.token));
      }
    } finally {
      await w.close();
    }
  });
});
